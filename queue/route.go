package queue

import "context"

// Routing changes. A recipient's Destination is fixed when it is queued
// (the Deliverer's answer then), and the store groups, limits and backs off
// by it. After a routing change (MX delivery to or from a relay, another
// relay) that key is stale, and a Deliverer such as *delivery.Deliverer
// refuses recipients of another destination: every attempt would fail
// until the mail expired. So the scheduler routes each lease again when it
// takes it, asking Deliverer.Destination for every leased recipient, and
// keys everything it does with the answer: its per-destination limits,
// slow start and connection slots, the destination it contacts, the
// events and what it records about that destination.
//
// What Finish records then: the status of the destination contacted goes
// in FinishParams.Destinations (it is not Lease.Destination), and the
// status of the stored key is cleared through FinishParams.Destination:
// that key says nothing about where the mail goes now, and Claim would
// otherwise hold the mail stored under it to that key's backoff, one probe
// at a time. Only Claim's view stays keyed by the stored destination: its
// exclusions and backoff apply to the stored key, so a moved backlog may
// be claimed while the destination it now goes to is busy.

// route is where the recipients of a lease go now.
type route struct {
	dest  string       // where this attempt goes: the current destination of the first leased recipient
	now   []*Recipient // the leased recipients that go to dest, in lease order
	later []*Recipient // those that go elsewhere: given back due at once, for attempts of their own
}

// routeOf asks the Deliverer where each of rcpts, the leased recipients of
// l, goes now. Normally that is l.Destination for all of them.
func (q *Queue) routeOf(l *Lease, rcpts []*Recipient) route {
	rt := route{dest: l.Destination}
	for i, r := range rcpts {
		d := q.cfg.Deliverer.Destination(r.Address)
		if i == 0 {
			rt.dest = d
		}
		if d == rt.dest {
			rt.now = append(rt.now, r)
		} else {
			rt.later = append(rt.later, r)
		}
	}
	return rt
}

// recordStatus puts st, the new status of the destination an attempt
// contacted, in fp: as the status of the lease's destination, or of
// another one when the recipients were routed elsewhere. A nil st changes
// nothing.
func recordStatus(fp *FinishParams, st *DestinationStatus) {
	switch {
	case st == nil:
	case st.Name == fp.Lease.Destination:
		fp.Destination = st
	default:
		fp.Destinations = append(fp.Destinations, *st)
	}
}

// staleStatus returns a cleared status for l.Destination, for a lease
// whose recipients go elsewhere now, when that destination has a backoff
// or failures on record; nil otherwise.
func (q *Queue) staleStatus(ctx context.Context, l *Lease) *DestinationStatus {
	st, err := q.cfg.Store.Destination(ctx, l.Destination)
	if err != nil || st == nil || (st.ConsecutiveFailures == 0 && st.NextAllowed.IsZero()) {
		return nil
	}
	return &DestinationStatus{Name: l.Destination}
}

// opens reports whether fp clears a destination's backoff or failures (a
// probe reached it, or a stale key was cleared): mail held back by it is
// due at once.
func opens(fp *FinishParams) bool {
	if d := fp.Destination; d != nil && d.ConsecutiveFailures == 0 && d.NextAllowed.IsZero() {
		return true
	}
	for _, d := range fp.Destinations {
		if d.ConsecutiveFailures == 0 && d.NextAllowed.IsZero() {
			return true
		}
	}
	return false
}
