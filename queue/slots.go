package queue

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"
)

// SlotStore is implemented by stores shared by several processes that can
// hold a per-destination limit for all of them together: leases on the
// numbered connection slots of a destination (the PostgreSQL store). When
// Config.Store implements it, Run holds a slot for the length of every
// attempt, so that Config.MaxConnsPerDestination and
// Config.DestinationRate bound the whole cluster, not each process. The
// embedded store, used by one process, does not need it: the scheduler's
// own limits are exact there.
//
// A SlotStore should also implement Waker and wake schedulers when a slot
// is released; otherwise a scheduler waiting for a slot polls.
type SlotStore interface {
	// AcquireSlot leases one of p.Max slots of p.Destination until p.Until.
	// It never waits: when all of them are leased beyond p.Now it returns
	// a *NoSlotError (errors.Is(err, ErrNoSlot)).
	AcquireSlot(ctx context.Context, p SlotParams) (*Slot, error)
	// RenewSlot extends the lease of slot to until, or returns ErrSlotLost
	// when the slot is no longer the caller's.
	RenewSlot(ctx context.Context, slot *Slot, until time.Time) error
	// ReleaseSlot ends the lease of slot at until: the caller's now frees it
	// at once, a later time keeps it busy until then (rate limiting). It
	// returns ErrSlotLost when the slot is no longer the caller's.
	ReleaseSlot(ctx context.Context, slot *Slot, until time.Time) error
}

// SlotParams are the arguments of SlotStore.AcquireSlot.
type SlotParams struct {
	Destination string    // the destination to connect to, as in Recipient.Destination
	Owner       string    // the node or worker taking the slot, recorded for operators
	Max         int       // the cluster-wide limit: slots 0 to Max-1 may be taken
	Now         time.Time // the caller's clock: slots leased until Now or earlier are free
	Until       time.Time // when the lease ends unless renewed; after Now
}

// Slot is a lease on one of the numbered connection slots of a destination.
type Slot struct {
	Destination string
	Number      int   // 0 to Max-1
	Token       int64 // fencing token: unique per acquisition
	Owner       string
	Until       time.Time
}

var (
	// ErrNoSlot is matched (errors.Is) by the *NoSlotError of
	// SlotStore.AcquireSlot when all of a destination's slots are leased.
	ErrNoSlot = errors.New("queue: no free connection slot")
	// ErrSlotLost is returned by SlotStore.RenewSlot and ReleaseSlot when
	// the slot lease is no longer the caller's (it expired and was acquired
	// again).
	ErrSlotLost = errors.New("queue: connection slot lease lost")
)

// NoSlotError is returned by SlotStore.AcquireSlot when all the slots of a
// destination below Max are leased.
type NoSlotError struct {
	Destination string
	// FreeAt is when the first of those leases ends unless it is released
	// sooner; zero when the store cannot tell.
	FreeAt time.Time
}

// Error returns "queue: no free connection slot for Destination".
func (e *NoSlotError) Error() string {
	return ErrNoSlot.Error() + " for " + e.Destination
}

// Is reports whether target is ErrNoSlot.
func (e *NoSlotError) Is(target error) bool { return target == ErrNoSlot }

const (
	// slotTerm is how long a connection slot is leased at a time. It is
	// renewed every half term while the attempt runs, so a node that dies
	// holding slots frees them within slotTerm, not at the end of its
	// recipient leases (Config.LeaseFor).
	slotTerm = 2 * time.Minute
	// slotRetry is how long a destination waits for a slot when the store
	// cannot say when one frees up, or failed; a Waker's wakeup ends the
	// wait sooner.
	slotRetry = 5 * time.Second
)

// noSlot is the result of an attempt that found no free connection slot
// and did not start: its lease goes back to its destination's queue.
type noSlot struct {
	lease *Lease
	retry time.Time // when to try again unless a wakeup comes first
	seq   uint64    // slotState.wakeups when the attempt was dispatched
}

// slotState is what one run needs for cluster-wide slots.
type slotState struct {
	// wakeups counts the store's wakeups. A slot released elsewhere wakes
	// us; an attempt that found no slot and saw no wakeup since its
	// dispatch may wait, otherwise the slot it wanted may be free already.
	wakeups  uint64
	stopping bool // Run is shutting down: leases without a slot go back to the store
}

// startAttempt returns the function that runs lease l in its goroutine:
// the attempt itself, inside a connection slot when the store has slots.
// max is the destination's current limit (1 during slow start), so that
// a destination no process has reached yet sees one connection from the
// whole cluster.
func (r *runner) startAttempt(l *Lease, healthy bool, max int) func(freeDest func()) attemptResult {
	ss, ok := r.q.cfg.Store.(SlotStore)
	if !ok {
		return func(freeDest func()) attemptResult {
			return r.q.attempt(r.attemptCtx, l, healthy, &r.gate, freeDest)
		}
	}
	seq := r.slots.wakeups
	return func(freeDest func()) attemptResult {
		return r.q.slotAttempt(r.attemptCtx, ss, l, healthy, max, seq, &r.gate, freeDest)
	}
}

// slotAttempt holds a connection slot of l's destination for the length of
// the attempt. Without a free slot nothing happens: the lease waits in the
// scheduler, it is not an attempt and says nothing about the destination.
func (q *Queue) slotAttempt(ctx context.Context, ss SlotStore, l *Lease, healthy bool, max int, seq uint64, g *gate, freeDest func()) attemptResult {
	now := q.cfg.Clock.Now()
	if now.After(q.cfg.Schedule.Expiry(l.Message.Arrived).Add(expiryGrace)) {
		return q.attempt(ctx, l, healthy, g, freeDest) // expired without contacting anyone
	}
	dest := q.routeOf(l, leased(l)).dest // where the recipients go now (route.go)
	log := q.leaseLog(l, dest)
	until := earliest(now.Add(slotTerm), l.Until)
	slot, err := ss.AcquireSlot(ctx, SlotParams{Destination: dest, Owner: q.cfg.Owner, Max: max, Now: now, Until: until})
	if err != nil {
		w := &noSlot{lease: l, seq: seq}
		var ns *NoSlotError
		if errors.As(err, &ns) {
			w.retry = ns.FreeAt
		} else {
			log.LogAttrs(ctx, slog.LevelError, "cannot acquire a connection slot", slog.Any("error", err))
		}
		if !w.retry.After(now) {
			w.retry = now.Add(slotRetry)
		}
		w.retry = earliest(w.retry, now.Add(q.cfg.PollInterval))
		return attemptResult{dest: dest, noSlot: w}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	if until.Before(l.Until) {
		wg.Go(func() { q.renewSlot(ctx, ss, slot, l.Until, stop, log) })
	}
	var busyUntil time.Time // zero: the slot is free when released
	released := false
	release := func() {
		if !released {
			released = true
			close(stop)
			wg.Wait()
			q.releaseSlot(ss, slot, busyUntil, log)
		}
	}
	// Deferred, so that a panicking Deliverer does not keep the slot.
	defer release()

	// Another process may have found the destination unavailable, or
	// claimed its probe, after this lease was claimed: its verdict is in
	// the store before it gives its slot back (Finish comes first). A
	// lease routed elsewhere since it was queued is checked by attempt.
	if dest == l.Destination {
		if st, err := q.cfg.Store.Destination(ctx, dest); err == nil && closedElsewhere(st, l, now) {
			// Due at once: Claim holds them back until the destination's
			// NextAllowed, which a successful probe may bring forward.
			q.release(l, leased(l), now, log)
			return attemptResult{dest: dest, unavailable: true, nextAllowed: now}
		}
	}

	rateBusy := func() {
		if rate := q.cfg.DestinationRate; rate > 0 {
			// Max slots, each busy for Max/rate after it was taken, allow
			// rate attempts per second in bursts of Max, cluster-wide.
			busyUntil = now.Add(time.Duration(float64(q.cfg.MaxConnsPerDestination) / rate * float64(time.Second)))
		}
	}
	res := q.attempt(ctx, l, healthy, g, func() {
		// Done with the destination, which was reachable: its slot is
		// free before the outcome is recorded, like the runner's own.
		rateBusy()
		release()
		freeDest()
	})
	if res.attempted && !released {
		rateBusy()
	}
	return res
}

// closedElsewhere reports whether st forbids contacting l's destination at
// now: NextAllowed moved past now after the claim, and not by the claim of
// l itself as the destination's probe (Claim marks a probe by moving
// NextAllowed to exactly the end of its lease).
func closedElsewhere(st *DestinationStatus, l *Lease, now time.Time) bool {
	if st == nil || !st.NextAllowed.After(now) {
		return false
	}
	return st.ConsecutiveFailures == 0 || !st.NextAllowed.Equal(l.Until)
}

// renewSlot extends slot every half term until end, or until stop.
func (q *Queue) renewSlot(ctx context.Context, ss SlotStore, slot *Slot, end time.Time, stop <-chan struct{}, log *slog.Logger) {
	for {
		select {
		case <-stop:
			return
		case <-q.cfg.Clock.After(slotTerm / 2):
		}
		until := earliest(q.cfg.Clock.Now().Add(slotTerm), end)
		err := ss.RenewSlot(ctx, slot, until)
		switch {
		case errors.Is(err, ErrSlotLost):
			// Paused past the lease: another process may be connecting
			// too. Nothing to undo; the attempt is nearly over anyway.
			log.LogAttrs(ctx, slog.LevelWarn, "connection slot lost during the attempt", slog.Int("slot", slot.Number))
			return
		case err != nil:
			log.LogAttrs(ctx, slog.LevelError, "cannot renew connection slot", slog.Any("error", err))
		case !until.Before(end):
			return
		}
	}
}

// releaseSlot gives slot back, busy until busyUntil if that is later than
// now.
func (q *Queue) releaseSlot(ss SlotStore, slot *Slot, busyUntil time.Time, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), finishTimeout)
	defer cancel()
	until := q.cfg.Clock.Now()
	if busyUntil.After(until) {
		until = busyUntil
	}
	if err := ss.ReleaseSlot(ctx, slot, until); err != nil {
		level := slog.LevelError
		if errors.Is(err, ErrSlotLost) {
			level = slog.LevelWarn
		}
		log.LogAttrs(ctx, level, "cannot release connection slot", slog.Int("slot", slot.Number), slog.Any("error", err))
	}
}

// slotDone accounts for the slot side of a finished goroutine of d. It
// reports true when the attempt found no slot: its lease is back in d's
// queue (or, while Run stops, given back to the store), waiting until a
// wakeup or the time a slot should free up.
func (r *runner) slotDone(d *destState, res attemptResult) bool {
	w := res.noSlot
	if w == nil {
		if res.slot {
			d.slotWait = time.Time{} // one of ours is free: try again at once
		}
		return false
	}
	if r.slots.stopping {
		l := w.lease
		r.spawn(d.name, false, func(func()) attemptResult {
			r.q.release(l, leased(l), r.q.cfg.Clock.Now(), r.q.leaseLog(l, d.name))
			return attemptResult{}
		})
		return true
	}
	d.queue = append([]*Lease{w.lease}, d.queue...)
	r.waiting++
	d.slotWait = w.retry
	if w.seq != r.slots.wakeups {
		d.slotWait = time.Time{}
	}
	if r.q.cfg.DestinationRate > 0 {
		d.tokens = min(d.tokens+1, float64(r.q.cfg.MaxConnsPerDestination)) // its token was not used
	}
	return true
}

// slotWakeup ends every wait for a slot: the store says something changed,
// perhaps a slot was released.
func (r *runner) slotWakeup() {
	r.slots.wakeups++
	waited := false
	for _, d := range r.dests {
		if !d.slotWait.IsZero() {
			d.slotWait, waited = time.Time{}, true
		}
	}
	if waited {
		r.dispatch(r.q.cfg.Clock.Now())
	}
}

// nextSlotRetry is when a destination waiting for a slot tries again, or
// zero.
func (r *runner) nextSlotRetry(now time.Time) time.Time {
	var at time.Time
	for _, d := range r.dests {
		if len(d.queue) > 0 && d.slotWait.After(now) {
			at = earliest(at, d.slotWait)
		}
	}
	return at
}
