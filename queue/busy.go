package queue

import "time"

// Claims are oldest first across destinations, so without care a backlog
// at one destination would fill every claim while that destination's
// limits let only a few of its leases start: later mail for every other
// destination would wait until the backlog drained (head-of-line
// blocking). The runner therefore leaves out of its claims the
// destinations that already hold a full round of waiting leases
// (ClaimParams.ExcludeDestinations), and does not let leases parked at
// their destination's own limits use up the claim budget.

// busy reports whether d already holds a full round of waiting leases: as
// many as may run there at once. More of its work would only wait.
func (r *runner) busy(d *destState) bool {
	return len(d.queue) >= r.limit(d)
}

// exclusions returns the busy destinations, for ClaimParams.
func (r *runner) exclusions() []string {
	var out []string
	for name, d := range r.dests {
		if r.busy(d) {
			out = append(out, name)
		}
	}
	return out
}

// unexcluded reports whether a destination left out of the last claim
// could take work now: then a claim may find more, though the last one
// came back short.
func (r *runner) unexcluded() bool {
	for _, name := range r.excluded {
		if d := r.dests[name]; d == nil || !r.busy(d) {
			return true
		}
	}
	return false
}

// parked counts the waiting leases held back by their destination's own
// limits (its attempts in flight, its rate, a wait for one of its
// cluster-wide connection slots), not by a lack of workers.
// They do not count against the claim budget, up to a bound (see
// claimable), so that work for other destinations is still claimed.
func (r *runner) parked(now time.Time) int {
	n := 0
	for _, d := range r.dests {
		if len(d.queue) > 0 && (d.running >= r.limit(d) || !r.hasToken(d, now) || d.slotWait.After(now)) {
			n += len(d.queue)
		}
	}
	return n
}

// hasToken reports whether Config.DestinationRate lets an attempt start at
// d now, without taking the token.
func (r *runner) hasToken(d *destState, now time.Time) bool {
	rate := r.q.cfg.DestinationRate
	if rate <= 0 || d.filled.IsZero() {
		return true
	}
	burst := float64(r.q.cfg.MaxConnsPerDestination)
	return min(burst, d.tokens+now.Sub(d.filled).Seconds()*rate) >= 1
}
