package embedded

import (
	"context"
	"time"

	"github.com/outboundmail/outbound/queue"
)

// change loads message id, lets f modify a copy, and stores the copy if f
// reports a change. The outcome (ErrNotFound, a *CorruptError) is found
// before any write.
func (s *Store) change(ctx context.Context, id queue.ID, f func(b *btx, r *msgRecord) (bool, error)) error {
	end, err := s.begin()
	if err != nil {
		return err
	}
	defer end()
	if err := checkCtx(ctx); err != nil {
		return err
	}
	var outcome error
	err = s.write(func(b *btx) (bool, error) {
		outcome = nil
		old, err := b.loadMsg(id)
		if err == nil && old == nil {
			err = queue.ErrNotFound
		}
		if err != nil {
			outcome = err
			return false, nil
		}
		r := cloneRecord(old)
		changed, err := f(b, r)
		if err != nil || !changed {
			return false, err
		}
		return true, b.putMessage(old, r)
	})
	if err != nil {
		return err
	}
	return outcome
}

// Hold freezes the waiting recipients of a message and ends its leases; see
// queue.Store.
func (s *Store) Hold(ctx context.Context, id queue.ID) error {
	return s.change(ctx, id, func(b *btx, r *msgRecord) (bool, error) {
		changed := false
		for i := range r.msg.Recipients {
			rc := &r.msg.Recipients[i]
			if r.tokens[i] != 0 {
				r.tokens[i], changed = 0, true
			}
			if waiting(rc.State) {
				rc.State, changed = queue.Held, true
			}
		}
		return changed, nil
	})
}

// Release makes held recipients wait again, due at now; see queue.Store.
func (s *Store) Release(ctx context.Context, id queue.ID, now time.Time) error {
	return s.change(ctx, id, func(b *btx, r *msgRecord) (bool, error) {
		changed := false
		for i := range r.msg.Recipients {
			rc := &r.msg.Recipients[i]
			if rc.State != queue.Held {
				continue
			}
			rc.State = queue.Deferred
			if rc.Attempts == 0 {
				rc.State = queue.Queued
			}
			rc.NextAttempt, r.tokens[i], changed = now, 0, true
		}
		return changed, nil
	})
}

// Retry makes the waiting recipients of a message due at now and clears the
// backoff of their destinations; see queue.Store. A recipient whose lease is
// still running is left alone: its attempt is under way, and making it due
// would let a second worker deliver it concurrently.
func (s *Store) Retry(ctx context.Context, id queue.ID, now time.Time) error {
	return s.change(ctx, id, func(b *btx, r *msgRecord) (bool, error) {
		changed := false
		dests := map[string]bool{}
		for i := range r.msg.Recipients {
			rc := &r.msg.Recipients[i]
			if !waiting(rc.State) || (r.tokens[i] != 0 && rc.NextAttempt.After(now)) {
				continue
			}
			rc.NextAttempt, r.tokens[i], changed = now, 0, true
			dests[rc.Destination] = true
		}
		for dest := range dests {
			d, err := b.loadDest(dest)
			if err != nil {
				return false, err
			}
			if d != nil && d.st.NextAllowed.After(now) {
				st := d.st
				st.NextAllowed = time.Time{}
				if err := b.setStatus(dest, st); err != nil {
					return false, err
				}
			}
		}
		return changed, nil
	})
}

// Delete removes a message and its body; see queue.Store. A corrupt record
// can be deleted too.
func (s *Store) Delete(ctx context.Context, id queue.ID) error {
	end, err := s.begin()
	if err != nil {
		return err
	}
	defer end()
	if err := checkCtx(ctx); err != nil {
		return err
	}
	var outcome error
	err = s.write(func(b *btx) (bool, error) {
		outcome = nil
		r, err := b.loadMsg(id)
		if err != nil {
			// Move the damaged record aside; its body stays for inspection.
			return true, b.quarantine(id)
		}
		if r == nil {
			outcome = queue.ErrNotFound
			return false, nil
		}
		return true, b.removeMessage(r)
	})
	if err != nil {
		return err
	}
	return outcome
}
