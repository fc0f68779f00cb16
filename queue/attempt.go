package queue

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/outboundmail/outbound/backoff"
	"github.com/outboundmail/outbound/delivery"
	"github.com/outboundmail/outbound/delivery/reason"
)

// expiryGrace is how late the final attempt at a recipient's expiry may
// start. A lease claimed later than that after the expiry (the destination
// was in backoff, or the queue was not running) is expired without
// contacting anyone.
const expiryGrace = time.Minute

// finishTimeout bounds the store calls that record an outcome, which must
// happen even while Run shuts down.
const finishTimeout = time.Minute

// attemptResult is what one lease's goroutine reports to the scheduler loop.
type attemptResult struct {
	dest string
	// attempted is set when the destination was contacted (Deliver ran).
	attempted bool
	// unavailable is set when the destination was put in backoff, until
	// nextAllowed.
	unavailable bool
	nextAllowed time.Time
	// dueHint is the earliest time a recipient of the lease may be due
	// again (zero when none is waiting any more).
	dueHint time.Time
	// notified is set when notifications were queued: new work is due now.
	notified bool
	stats    Stats
	// slot is set for attempt goroutines (which hold one of the
	// destination's running slots), not for releases.
	slot bool
	// noSlot is set when the store's connection slots were all taken, so
	// no attempt was made (slots.go).
	noSlot *noSlot
	// destFreed is set when the attempt gave its destination's connection
	// back before recording its outcome (spawn): alone on the early report,
	// with slot on the final one.
	destFreed bool
}

// attempt runs one lease to the end: Deliver, then record every outcome
// with Finish. It contacts the destination the recipients go to now
// (route.go). healthy says that an attempt reached that destination
// earlier in this run, so its status needs no reset. reached is called
// between the two when Deliver reached the destination and did not find
// it unavailable: its connection is back in the Deliverer's pool for the
// next attempt, which need not wait for this one's commit.
func (q *Queue) attempt(ctx context.Context, l *Lease, healthy bool, g *gate, reached func()) attemptResult {
	msg := l.Message
	start := q.cfg.Clock.Now()
	all := leased(l)
	rt := q.routeOf(l, all)
	dest, rcpts, moved := rt.dest, rt.now, rt.dest != l.Destination
	res := attemptResult{dest: dest}
	log := q.leaseLog(l, dest)

	if start.After(q.cfg.Schedule.Expiry(msg.Arrived).Add(expiryGrace)) {
		return q.expireUnattempted(l, all, start, log)
	}

	if until, closed := g.closedUntil(dest, start); closed {
		// Judged unavailable while this lease waited: RFC 5321 §4.5.4.1,
		// wait for the destination's backoff.
		q.release(l, all, until, log)
		return res
	}
	if moved {
		// Claim checked the backoff of the stored destination, not of
		// this one.
		if st, err := q.cfg.Store.Destination(ctx, dest); err == nil && st.NextAllowed.After(start) {
			q.release(l, all, st.NextAllowed, log)
			return res
		}
		log.LogAttrs(ctx, slog.LevelDebug, "routed elsewhere since queued", slog.String("queued_for", l.Destination))
	}
	body, err := q.cfg.Store.OpenBody(ctx, msg.ID)
	if err != nil {
		// Deleted by an operator (the lease is lost anyway) or a store
		// failure: the claim-time NextAttempt (start+LeaseFor) stands.
		log.LogAttrs(ctx, slog.LevelError, "cannot open body", slog.Any("error", err))
		q.release(l, nil, time.Time{}, log)
		return res
	}
	dm := &delivery.Message{
		From:       msg.From,
		Body:       body,
		Size:       msg.Size,
		EightBit:   msg.EightBit,
		Return:     msg.Return,
		EnvelopeID: msg.EnvelopeID,
		RequireTLS: msg.RequireTLS,
	}
	for _, r := range rcpts {
		dm.Recipients = append(dm.Recipients, delivery.Recipient{Address: r.Address, Notify: r.Notify, ORCPT: r.ORCPT})
	}
	ev := Event{Kind: EventAttemptStarted, Time: start, Message: msg.ID, Arrived: msg.Arrived,
		Destination: dest, Recipients: len(rcpts)}
	q.cfg.Observer.Observe(ev)
	ev.Kind = EventAttemptFinished
	defer func() { q.cfg.Observer.Observe(ev) }() // whatever happens next

	// The attempt must end before the lease does, or another worker could
	// claim the same recipients while this one still talks to the server.
	dctx, cancel := context.WithDeadline(ctx, l.Until.Add(-q.cfg.LeaseFor/10))
	rep, derr := q.cfg.Deliverer.Deliver(dctx, dest, dm)
	cancel()
	body.Close()
	now := q.cfg.Clock.Now()
	res.attempted = rep != nil
	if rep != nil && !rep.DestinationUnavailable {
		g.open(dest)
		reached()
	}
	ev.Time, ev.Duration = now, now.Sub(start)

	fctx, fcancel := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
	defer fcancel()
	if rep == nil {
		if derr == nil {
			derr = errors.New("deliverer returned neither report nor error")
		}
		if ctx.Err() != nil {
			// Shutting down before the attempt began: not an attempt.
			q.release(l, all, now, log)
			return res
		}
		// No attempt was made, for a local reason: retry on the
		// schedule, like any temporary failure, never at once.
		rep = &delivery.Report{Destination: dest}
		for _, r := range rcpts {
			rep.Results = append(rep.Results, delivery.Result{Recipient: r.Address, Class: delivery.Temporary, Err: derr})
		}
	}

	plan := q.plan(msg, rcpts, rep, start, now)
	fp := FinishParams{Lease: l, Now: now, Recipients: plan.updates}
	if moved {
		fp.Destination = q.staleStatus(fctx, l)
	}
	if rep.DestinationUnavailable {
		st := q.destinationFailed(fctx, dest, rep, now)
		g.block(dest, now, st.NextAllowed)
		recordStatus(&fp, st)
		res.unavailable, res.nextAllowed = true, st.NextAllowed
		if moved {
			// Claim waits for the backoff of the stored destination,
			// not of this one: the recipients wait for it themselves.
			for i := range plan.updates {
				if u := &plan.updates[i]; u.State == Deferred && u.NextAttempt.Before(st.NextAllowed) {
					u.NextAttempt = st.NextAllowed
				}
			}
		}
	} else if res.attempted && !healthy {
		// The gate was opened above, before the connection was freed.
		recordStatus(&fp, q.destinationReached(fctx, dest, now))
	}
	for _, r := range rt.later {
		// Routed elsewhere than the others: due at once, for an attempt
		// of their own.
		fp.Recipients = append(fp.Recipients, RecipientUpdate{Address: r.Address, State: Deferred, NextAttempt: now})
	}
	ids := q.notifications(fctx, msg, plan, now, &fp, log)

	ev.DestinationUnavailable, ev.Result, ev.NextAttempt = rep.DestinationUnavailable, destOutcome(rep, now), res.nextAllowed
	err = q.cfg.Store.Finish(fctx, fp)
	res.stats.Attempts = 1
	if err != nil {
		level := slog.LevelError
		if errors.Is(err, ErrLeaseLost) {
			level = slog.LevelWarn // an operator changed the message, or the lease ran out
		}
		log.LogAttrs(fctx, level, "cannot record attempt; recipients wait for the lease to end", slog.Any("error", err))
		return res
	}
	res.notified = len(fp.Notifications) > 0
	for i, u := range plan.updates {
		q.report(msg, dest, rcpts[i], u, plan.items[i], ids, now, log)
		res.stats.count(u.State)
		if u.State == Deferred && (res.dueHint.IsZero() || u.NextAttempt.Before(res.dueHint)) {
			res.dueHint = u.NextAttempt
		}
	}
	if res.unavailable && !res.dueHint.IsZero() && res.dueHint.Before(res.nextAllowed) {
		res.dueHint = res.nextAllowed
	}
	if len(rt.later) > 0 || opens(&fp) {
		res.dueHint = now // more may be due at once
	}
	return res
}

// leaseLog returns the logger for the work of lease l at destination dest:
// every record names the message and the destination, once.
func (q *Queue) leaseLog(l *Lease, dest string) *slog.Logger {
	return q.log.With(slog.String("id", string(l.Message.ID)), slog.String("destination", dest))
}

// plan is the decision for every leased recipient after an attempt.
type plan struct {
	updates []RecipientUpdate // in the order of the lease's recipients
	items   []dsnItem         // the notification owed for each, if any
}

// plan decides each recipient's new state from the report.
func (q *Queue) plan(msg *Message, rcpts []*Recipient, rep *delivery.Report, start, now time.Time) plan {
	results := make(map[string]*delivery.Result, len(rep.Results))
	for i := range rep.Results {
		results[rep.Results[i].Recipient] = &rep.Results[i]
	}
	p := plan{updates: make([]RecipientUpdate, len(rcpts)), items: make([]dsnItem, len(rcpts))}
	for i, r := range rcpts {
		res := results[r.Address]
		if res == nil {
			// Not reported: unknown, so temporary, never dropped.
			res = &delivery.Result{Recipient: r.Address, Class: delivery.Temporary, Err: errors.New("no result reported for recipient")}
		}
		out := outcome(res, now)
		u := RecipientUpdate{Address: r.Address, Result: out, PossibleDuplicate: res.PossibleDuplicate}
		switch res.Class {
		case delivery.Delivered:
			u.State = Delivered
		case delivery.Permanent:
			u.State = Failed
			p.items[i] = dsnItem{action: actionFailed}
		default:
			st := ScheduleState(msg, r)
			if r.LastAttempt.IsZero() {
				st.LastAttempt = start
			}
			normal, ok := q.cfg.Schedule.Next(st)
			if !ok {
				u.State = Expired
				p.items[i] = dsnItem{action: actionExpired}
				break
			}
			// Greylisting and "try again in N" replies: just after the
			// stated window, never later than the normal schedule and
			// never sooner than a minute after the reply.
			next := reason.Classify(res.Reply).RetryAt(now, normal)
			if floor := now.Add(MinRetryDelay); next.Before(floor) {
				next = floor
			}
			u.State, u.NextAttempt = Deferred, next
			if q.delayWarningDue(msg, r, now) {
				u.DelayWarned = true
				p.items[i] = dsnItem{action: actionDelayed}
			}
		}
		p.items[i].rcpt, p.items[i].out = r, out
		p.updates[i] = u
	}
	return p
}

// ScheduleState returns the backoff state from which the queue computes
// recipient r's next attempt: its attempts, the message's arrival, its last
// attempt and a jitter seed derived from the message ID and the address, so
// that Config.Schedule.Next(ScheduleState(m, r)) is the time the queue would
// choose after a failure of r's latest attempt (before any reason-aware
// adjustment). Tools use it to show a recipient's future attempts.
func ScheduleState(m *Message, r *Recipient) backoff.State {
	return backoff.State{Attempts: r.Attempts, Arrived: m.Arrived, LastAttempt: r.LastAttempt, Seed: seed(string(m.ID), r.Address)}
}

// delayWarningDue reports whether a deferred recipient's sender should now
// be told that delivery is delayed.
func (q *Queue) delayWarningDue(msg *Message, r *Recipient, now time.Time) bool {
	if r.DelayWarned || msg.From == "" || !notifyAllows(r.Notify, "DELAY") {
		return false
	}
	at, ok := q.cfg.Schedule.DelayWarningAt(msg.Arrived)
	return ok && !now.Before(at)
}

// expireUnattempted bounces a lease whose recipients are past their expiry
// without contacting the destination (it was in backoff, or the queue was
// not running when the final attempt was due).
func (q *Queue) expireUnattempted(l *Lease, rcpts []*Recipient, now time.Time, log *slog.Logger) attemptResult {
	res := attemptResult{dest: l.Destination}
	ctx, cancel := context.WithTimeout(context.Background(), finishTimeout)
	defer cancel()
	var p plan
	for _, r := range rcpts {
		p.updates = append(p.updates, RecipientUpdate{Address: r.Address, State: Expired})
		p.items = append(p.items, dsnItem{rcpt: r, out: r.LastResult, action: actionExpired})
	}
	fp := FinishParams{Lease: l, Now: now, Recipients: p.updates, Destination: q.unprobe(ctx, l, now)}
	ids := q.notifications(ctx, l.Message, p, now, &fp, log)
	if err := q.cfg.Store.Finish(ctx, fp); err != nil {
		log.LogAttrs(ctx, slog.LevelError, "cannot record expiry", slog.Any("error", err))
		return res
	}
	res.notified = len(fp.Notifications) > 0
	for i, u := range p.updates {
		q.report(l.Message, l.Destination, rcpts[i], u, p.items[i], ids, now, log)
		res.stats.count(Expired)
	}
	return res
}

// release ends a lease whose attempt did not happen. With rcpts, they are
// due again at now (they were due when claimed, and nothing was tried);
// without, they keep the claim-time NextAttempt.
func (q *Queue) release(l *Lease, rcpts []*Recipient, now time.Time, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), finishTimeout)
	defer cancel()
	if now.IsZero() {
		now = q.cfg.Clock.Now()
	}
	fp := FinishParams{Lease: l, Now: now, Destination: q.unprobe(ctx, l, now)}
	for _, r := range rcpts {
		fp.Recipients = append(fp.Recipients, RecipientUpdate{Address: r.Address, State: Deferred, NextAttempt: now})
	}
	if err := q.cfg.Store.Finish(ctx, fp); err != nil && !errors.Is(err, ErrLeaseLost) {
		log.LogAttrs(ctx, slog.LevelError, "cannot release lease", slog.Any("error", err))
	}
}

// unprobe returns the status that gives back the probe of a failing
// destination when the lease that held it ends without contacting the
// destination, so that the next probe need not wait for the lease to run
// out; nil when the lease held no probe. Claim marks a probe by moving
// NextAllowed to exactly the end of the lease.
func (q *Queue) unprobe(ctx context.Context, l *Lease, now time.Time) *DestinationStatus {
	st, err := q.cfg.Store.Destination(ctx, l.Destination)
	if err != nil || st == nil || st.ConsecutiveFailures == 0 || !st.NextAllowed.Equal(l.Until) {
		return nil
	}
	back := *st
	back.NextAllowed = now
	return &back
}

// destinationFailed returns the new status of a destination judged
// unavailable: one more consecutive failure, and no contact until its own
// backoff (Config.DestinationSchedule) has passed.
func (q *Queue) destinationFailed(ctx context.Context, name string, rep *delivery.Report, now time.Time) *DestinationStatus {
	prev, err := q.cfg.Store.Destination(ctx, name)
	if err != nil || prev == nil {
		prev = &DestinationStatus{}
	}
	n := prev.ConsecutiveFailures + 1
	first := prev.FirstFailure
	if prev.ConsecutiveFailures == 0 || first.IsZero() {
		first = now
	}
	// The lifetime plays no part for a destination: measure from now.
	next, ok := q.cfg.DestinationSchedule.Next(backoff.State{Attempts: n, Arrived: now, LastAttempt: now, Seed: seed(name)})
	if !ok || next.Before(now.Add(MinRetryDelay)) {
		next = now.Add(max(q.cfg.DestinationSchedule.Interval(n), MinRetryDelay))
	}
	return &DestinationStatus{
		Name:                name,
		NextAllowed:         next,
		ConsecutiveFailures: n,
		FirstFailure:        first,
		LastFailure:         now,
		LastResult:          destOutcome(rep, now),
	}
}

// destinationReached returns a cleared status when the destination had
// failures recorded, or nil when there is nothing to change.
func (q *Queue) destinationReached(ctx context.Context, name string, now time.Time) *DestinationStatus {
	prev, err := q.cfg.Store.Destination(ctx, name)
	if err != nil || prev == nil || prev.ConsecutiveFailures == 0 {
		return nil
	}
	return &DestinationStatus{Name: name}
}

// leased returns the message's recipients that the lease covers, in the
// lease's order.
func leased(l *Lease) []*Recipient {
	out := make([]*Recipient, 0, len(l.Recipients))
	for _, a := range l.Recipients {
		for i := range l.Message.Recipients {
			if l.Message.Recipients[i].Address == a {
				out = append(out, &l.Message.Recipients[i])
				break
			}
		}
	}
	return out
}

// outcome converts a delivery result for the store.
func outcome(r *delivery.Result, now time.Time) *Outcome {
	o := &Outcome{Class: r.Class, Reply: r.Reply, Stage: r.Stage, Host: r.Host, At: now}
	if r.Err != nil {
		o.Error = r.Err.Error()
	}
	return o
}

// destOutcome describes why a destination was judged unavailable, or nil.
func destOutcome(rep *delivery.Report, now time.Time) *Outcome {
	if !rep.DestinationUnavailable {
		return nil
	}
	o := &Outcome{Class: delivery.Temporary, Reply: rep.DestinationReply, Stage: rep.DestinationStage, At: now}
	if rep.DestinationErr != nil {
		o.Error = rep.DestinationErr.Error()
	}
	return o
}

// notifyAllows reports whether a NOTIFY list asks for (or, unset, defaults
// to) notifications of the given kind. RFC 3461 §4.1: without NOTIFY, the
// default is FAILURE, and DELAY at the MTA's discretion; outbound sends both.
func notifyAllows(notify []string, kind string) bool {
	if notify == nil {
		return kind == "FAILURE" || kind == "DELAY"
	}
	for _, n := range notify {
		if n == kind {
			return true
		}
	}
	return false
}
