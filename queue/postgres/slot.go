package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outboundmail/outbound/queue"
)

var (
	// ErrNoSlot is matched (errors.Is) by the *queue.NoSlotError that
	// AcquireSlot returns when all of a destination's slots are leased.
	// It is queue.ErrNoSlot.
	ErrNoSlot = queue.ErrNoSlot
	// ErrSlotLost is returned by RenewSlot and ReleaseSlot when the slot
	// lease is no longer the caller's (it expired and was acquired again).
	// It is queue.ErrSlotLost.
	ErrSlotLost = queue.ErrSlotLost
)

// The store's slots are the ones the scheduler uses: Queue.Run holds one
// for every attempt.
var _ queue.SlotStore = (*Store)(nil)

// slotFreeAt is when the first busy slot below the limit frees up, and
// how many slot rows below the limit exist. It is read only when
// AcquireSlot finds no free slot, so it is expanded then.
const slotFreeAt = `
SELECT min(until) FILTER (WHERE until > $3), count(*) FROM {schema}.destination_slot
WHERE destination = $1 AND slot < $2`

// maxSlots bounds SlotParams.Max: slot rows are created up to it.
const maxSlots = 10000

// SlotParams are the arguments of AcquireSlot: queue.SlotParams, with Max
// from 1 to 10000.
type SlotParams = queue.SlotParams

// Slot is a lease on one of the numbered connection slots of a destination.
type Slot = queue.Slot

// AcquireSlot leases one of the Max connection slots of a destination, for
// a per-destination limit on concurrent connections that holds across the
// whole cluster. When all Max slots are leased until after p.Now it returns
// a *queue.NoSlotError (errors.Is ErrNoSlot) saying when the first of them
// ends; it never waits.
//
// A scheduler acquires a slot before connecting and releases it when the
// SMTP session ends. Sessions longer than the lease call RenewSlot; a node
// that dies holding a slot loses it when the lease ends, so Until should be
// a little longer than the longest expected session step (a few minutes).
//
// A rate limit works the same way: to allow N connections per period P, use
// Max = N and release each slot with ReleaseSlot(ctx, slot, acquiredAt+P),
// so that a slot is not reused before P has passed since it was taken.
//
// Lowering Max takes effect as leases on the higher slots end. Slots are rows
// of destination_slot, leased with FOR UPDATE SKIP LOCKED by one statement,
// its own transaction; no session lock pins a connection. The rows of a
// destination are created the first time an acquisition finds fewer than
// Max of them, not on every call. Slot changes commit without waiting for
// the disk (see the queries).
func (s *Store) AcquireSlot(ctx context.Context, p SlotParams) (*Slot, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	if p.Max < 1 || p.Max > maxSlots {
		return nil, fmt.Errorf("postgres: acquire slot: Max %d out of range 1..%d", p.Max, maxSlots)
	}
	if !p.Until.After(p.Now) {
		return nil, fmt.Errorf("postgres: acquire slot: Until %v not after Now %v", p.Until, p.Now)
	}
	slot := &Slot{Destination: p.Destination, Owner: p.Owner, Until: p.Until.Truncate(time.Microsecond)}
	for created := false; ; created = true {
		err := s.pool.QueryRow(ctx, s.q.acquireSlot, p.Destination, p.Max, p.Owner, p.Now, slot.Until).
			Scan(&slot.Number, &slot.Token, nil)
		if err == nil {
			return slot, nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return nil, s.fail("acquire slot", err)
		}
		ns, rows := s.noSlot(ctx, p)
		if rows >= p.Max || created {
			return nil, ns
		}
		// Some of the Max slots have no row yet. Rows another transaction
		// is creating are invisible until it commits; the INSERT waits for
		// it, so the second try sees them.
		if _, err := s.pool.Exec(ctx, s.q.createSlots, p.Destination, p.Max); err != nil {
			return nil, s.fail("acquire slot: create slots", err)
		}
	}
}

// RenewSlot extends the lease of slot to until, or returns ErrSlotLost.
func (s *Store) RenewSlot(ctx context.Context, slot *Slot, until time.Time) error {
	if err := s.check(); err != nil {
		return err
	}
	until = until.Truncate(time.Microsecond)
	tag, err := s.pool.Exec(ctx, s.q.renewSlot, slot.Destination, slot.Number, slot.Token, until)
	if err != nil {
		return s.fail("renew slot", err)
	}
	if tag.RowsAffected() == 0 {
		return ErrSlotLost
	}
	slot.Until = until
	return nil
}

// ReleaseSlot ends the lease of slot at until: the caller's now frees the
// slot at once, a later time keeps it busy until then (rate limiting). It
// wakes listening workers after its commit (see Wakeups), and returns
// ErrSlotLost if the slot was acquired by someone else in the meantime.
func (s *Store) ReleaseSlot(ctx context.Context, slot *Slot, until time.Time) error {
	if err := s.check(); err != nil {
		return err
	}
	tag, err := s.pool.Exec(ctx, s.q.releaseSlot, slot.Destination, slot.Number, slot.Token, until)
	if err != nil {
		return s.fail("release slot", err)
	}
	if tag.RowsAffected() == 0 {
		return ErrSlotLost
	}
	s.wakeWorkers()
	return nil
}

// SlotsInUse returns how many slots of a destination are leased beyond now.
func (s *Store) SlotsInUse(ctx context.Context, destination string, now time.Time) (int, error) {
	if err := s.check(); err != nil {
		return 0, err
	}
	var n int
	if err := s.pool.QueryRow(ctx, s.q.countSlots, destination, now).Scan(&n); err != nil {
		return 0, s.fail("slots in use", err)
	}
	return n, nil
}

// noSlot returns the error of an AcquireSlot that found no free slot, with
// the time the first busy one frees up when that can be read, and how many
// slot rows below p.Max exist (p.Max if that cannot be read). A slot locked
// by a concurrent AcquireSlot that has not committed yet is not counted as
// busy: its holder wakes the workers when it releases it.
func (s *Store) noSlot(ctx context.Context, p SlotParams) (*queue.NoSlotError, int) {
	e := &queue.NoSlotError{Destination: p.Destination}
	var at *time.Time
	rows := p.Max
	q := expand(slotFreeAt, pgx.Identifier{s.schema}.Sanitize())
	if err := s.pool.QueryRow(ctx, q, p.Destination, p.Max, p.Now).Scan(&at, &rows); err != nil {
		return e, p.Max
	}
	if at != nil {
		e.FreeAt = *at
	}
	return e, rows
}
