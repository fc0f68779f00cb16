package embedded

import (
	"context"
	"fmt"

	"github.com/outboundmail/outbound/queue"
)

// Finish records the outcome of a leased attempt; see queue.Store. The
// recipient updates, the destination status and the notifications are one
// transaction. Notification bodies are written before it (files fsynced),
// so a failure reading one leaves nothing changed and the lease current.
func (s *Store) Finish(ctx context.Context, p queue.FinishParams) error {
	end, err := s.begin()
	if err != nil {
		return err
	}
	defer end()
	if err := checkCtx(ctx); err != nil {
		return err
	}
	if p.Lease == nil || p.Lease.Message == nil {
		return &InvalidError{Op: "Finish", Reason: "no lease"}
	}
	for _, u := range p.Recipients {
		switch u.State {
		case queue.Deferred, queue.Delivered, queue.Failed, queue.Expired:
		default:
			return &InvalidError{Op: "Finish", Reason: fmt.Sprintf("recipient %q finished in state %v", u.Address, u.State)}
		}
	}
	for _, n := range p.Notifications {
		if err := validateMessage("Finish", n.Message); err != nil {
			return err
		}
	}
	for _, st := range p.Destinations {
		if st.Name == "" {
			return &InvalidError{Op: "Finish", Reason: "destination status without a name"}
		}
	}
	if err := s.c.failure(); err != nil {
		return err
	}
	bodies := make([]*body, 0, len(p.Notifications))
	discardAll := func() {
		for _, b := range bodies {
			s.discard(b)
		}
	}
	for _, n := range p.Notifications {
		b, err := s.readBody(n.Body)
		if err != nil {
			discardAll()
			return fmt.Errorf("embedded: notification %s: %w", n.Message.ID, err)
		}
		bodies = append(bodies, b)
	}
	var (
		outcome error
		used    []bool // which notification bodies a record now references
	)
	err = s.write(func(b *btx) (bool, error) {
		outcome, used = nil, make([]bool, len(bodies))
		plan, err := b.checkFinish(p, used)
		if err != nil {
			outcome = err // found before any write: nothing changed
			return false, nil
		}
		return true, b.applyFinish(p, plan, bodies, used)
	})
	if err == nil {
		err = outcome
	}
	for i, bd := range bodies {
		if err != nil || !used[i] {
			s.discard(bd)
		}
	}
	return err
}

// finishPlan is what checkFinish found: the current record and, per leased
// address, the indexes of its recipients.
type finishPlan struct {
	old  *msgRecord
	held map[string][]int
}

// checkFinish checks the lease, the updates and the notifications without
// writing. used[i] reports whether notification i is to be inserted.
func (b *btx) checkFinish(p queue.FinishParams, used []bool) (*finishPlan, error) {
	l := p.Lease
	old, err := b.loadMsg(l.Message.ID)
	if err != nil {
		return nil, err
	}
	if old == nil || l.Token <= 0 {
		return nil, queue.ErrLeaseLost // deleted since the claim, or never issued
	}
	// The lease is current while every recipient it covers still carries its
	// token: Finish, Hold, Delete and a new claim all replace the token.
	held := map[string][]int{}
	for i, rc := range old.msg.Recipients {
		if rc.Destination == l.Destination && old.tokens[i] == l.Token {
			held[rc.Address] = append(held[rc.Address], i)
		}
	}
	for _, a := range l.Recipients {
		if len(held[a]) == 0 {
			return nil, queue.ErrLeaseLost
		}
	}
	for _, u := range p.Recipients {
		if len(held[u.Address]) == 0 {
			return nil, &InvalidError{Op: "Finish", Reason: fmt.Sprintf("recipient %q is not in the lease", u.Address)}
		}
	}
	seenID := map[queue.ID]bool{}
	for i, n := range p.Notifications {
		existing, err := b.check(n.Message)
		if err != nil {
			return nil, err
		}
		if seenID[n.Message.ID] {
			return nil, &DuplicateIDError{ID: n.Message.ID}
		}
		seenID[n.Message.ID] = true
		used[i] = existing == ""
	}
	return &finishPlan{old: old, held: held}, nil
}

// applyFinish writes what checkFinish allowed.
func (b *btx) applyFinish(p queue.FinishParams, plan *finishPlan, bodies []*body, used []bool) error {
	old, held := plan.old, plan.held
	r := cloneRecord(old)
	for _, u := range p.Recipients {
		for _, i := range held[u.Address] {
			rc := &r.msg.Recipients[i]
			rc.State = u.State
			if u.State == queue.Deferred {
				rc.NextAttempt = u.NextAttempt
			}
			if u.Result != nil {
				o := *u.Result
				rc.LastResult = &o
			}
			rc.PossibleDuplicate = rc.PossibleDuplicate || u.PossibleDuplicate
			rc.DelayWarned = rc.DelayWarned || u.DelayWarned
		}
	}
	for _, is := range held {
		for _, i := range is {
			r.tokens[i] = 0 // the lease ends, for named and unnamed recipients alike
		}
	}
	var err error
	if allFinal(r) {
		err = b.removeMessage(old)
	} else {
		err = b.putMessage(old, r)
	}
	if err != nil {
		return err
	}
	if p.Destination != nil {
		if err := b.setStatus(p.Lease.Destination, *p.Destination); err != nil {
			return err
		}
	}
	for _, st := range p.Destinations {
		if err := b.setStatus(st.Name, st); err != nil {
			return err
		}
	}
	for i, n := range p.Notifications {
		if !used[i] {
			continue // its idempotency key is taken: that notification exists
		}
		// Two notifications with one key: the first wins, like two Enqueues.
		if existing, _ := b.check(n.Message); existing != "" {
			used[i] = false
			continue
		}
		if err := b.insert(n.Message, bodies[i]); err != nil {
			return err
		}
	}
	return nil
}

func allFinal(r *msgRecord) bool {
	for _, rc := range r.msg.Recipients {
		if !rc.State.Final() {
			return false
		}
	}
	return true
}
