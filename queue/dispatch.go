package queue

import (
	"context"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"
)

// gate is the run's shared list of destinations in backoff, written by the
// attempt that judged a destination unavailable before it records the
// verdict, and read by every attempt just before it contacts its
// destination: an attempt claimed before the verdict but started after it
// is given back instead of contacting the destination.
type gate struct {
	mu    sync.Mutex
	until map[string]time.Time
}

// block closes dest from now until t.
func (g *gate) block(dest string, now, t time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.until == nil {
		g.until = map[string]time.Time{}
	}
	if len(g.until) >= gatePurge {
		for d, u := range g.until {
			if !now.Before(u) {
				delete(g.until, d)
			}
		}
	}
	g.until[dest] = t
}

// gatePurge is the size at which block drops expired entries.
const gatePurge = 1024

// open reopens dest, after an attempt reached it.
func (g *gate) open(dest string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.until, dest)
}

// closedUntil reports whether dest is closed at now, and until when.
func (g *gate) closedUntil(dest string, now time.Time) (time.Time, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	t, ok := g.until[dest]
	if ok && !now.Before(t) {
		delete(g.until, dest) // expired: forget it
		return time.Time{}, false
	}
	return t, ok
}

// destState is what one run knows about a destination it has work for.
// The store's DestinationStatus is the shared, durable memory; this is the
// local politeness on top of it: concurrency, slow start and rate.
type destState struct {
	name    string
	running int      // attempts in flight
	queue   []*Lease // claimed, waiting for a slot or a token
	// reached is set when an attempt reached the destination during this
	// run. Until then (and again after it is judged unavailable) at most one
	// attempt runs: a dead destination sees one connection, not
	// MaxConnsPerDestination.
	reached bool
	// Token bucket for Config.DestinationRate.
	tokens float64
	filled time.Time
	// slotWait: no attempt starts before it, for want of a cluster-wide
	// connection slot (slots.go).
	slotWait time.Time
}

// add takes a claimed lease: it waits in its destination's queue until
// dispatch starts it. Its destination is where its recipients go now,
// normally l.Destination (route.go).
func (r *runner) add(l *Lease) {
	name := r.q.routeOf(l, leased(l)).dest
	d := r.dests[name]
	if d == nil {
		d = &destState{name: name, tokens: float64(r.q.cfg.MaxConnsPerDestination)}
		r.dests[name] = d
	}
	d.queue = append(d.queue, l)
	r.waiting++
}

// dispatch starts every waiting lease that its destination's limits allow.
func (r *runner) dispatch(now time.Time) {
	capacity := r.capacity(now)
	for _, d := range r.dests {
		for len(d.queue) > 0 && d.running < r.limit(d) && r.running < capacity && !d.slotWait.After(now) {
			l := d.queue[0]
			if r.stale(l, now) {
				// It waited too long for a slot: give it back, due
				// now, rather than race the end of its lease.
				d.queue = d.queue[1:]
				r.waiting--
				r.spawn(d.name, false, func(func()) attemptResult {
					r.q.release(l, leased(l), now, r.q.leaseLog(l, d.name))
					return attemptResult{}
				})
				continue
			}
			if !r.take(d, now) {
				break
			}
			d.queue = d.queue[1:]
			r.waiting--
			d.running++
			r.spawn(d.name, true, r.startAttempt(l, d.reached, r.limit(d)))
		}
		r.forget(d, now)
	}
}

// spawn runs f in a goroutine that reports on r.done, as a result of
// destination dest (the key of its destState). A panic (a broken
// Deliverer, a poison message) is logged and reported as a result without
// an outcome: the lease then ends on its own, so the recipients wait
// LeaseFor before the next attempt instead of crashing the application.
//
// An attempt (slot set) holds one of the Workers and one of its
// destination's connections. It may call the function f is given once it
// is done with the destination and only records the outcome: the
// destination's connection then takes the next lease at once, while the
// worker stays taken until the outcome is recorded, so that no more than
// Workers attempts are ever unrecorded (a crash repeats at most those).
func (r *runner) spawn(dest string, slot bool, f func(freeDest func()) attemptResult) {
	r.tasks++
	if slot {
		r.running++
	}
	go func() {
		destHeld := slot
		freeDest := func() {
			if destHeld {
				destHeld = false
				r.done <- attemptResult{dest: dest, destFreed: true, attempted: true}
			}
		}
		res := attemptResult{dest: dest, slot: slot}
		defer func() {
			if p := recover(); p != nil {
				r.q.log.LogAttrs(context.Background(), slog.LevelError, "attempt panicked; its recipients wait for the lease to end",
					slog.String("destination", dest), slog.Any("panic", p), slog.String("stack", string(debug.Stack())))
			}
			res.dest, res.slot, res.destFreed = dest, slot, slot && !destHeld
			r.done <- res
		}()
		res = f(freeDest)
	}()
}

// finished accounts for a goroutine's result.
func (r *runner) finished(res attemptResult) {
	if res.destFreed && !res.slot {
		// An attempt in flight is done with its destination (spawn).
		if d := r.dests[res.dest]; d != nil {
			d.running--
			d.reached = true
			d.slotWait = time.Time{} // one of ours is free: try again at once
		}
		r.dispatch(r.q.cfg.Clock.Now())
		return
	}
	r.tasks--
	r.stats.add(res.stats)
	if res.slot {
		r.running--
	}
	d := r.dests[res.dest]
	if d == nil {
		r.dispatch(r.q.cfg.Clock.Now())
		return
	}
	if res.slot && !res.destFreed {
		d.running--
	}
	if r.slotDone(d, res) {
		r.dispatch(r.q.cfg.Clock.Now())
		return
	}
	switch {
	case res.unavailable:
		// RFC 5321 §4.5.4.1: "The sender MUST delay retrying a
		// particular destination after one attempt has failed." Nothing
		// waiting for it may start; they wait for its backoff.
		d.reached = false
		r.releaseWaitingUntil(d, res.nextAllowed)
	case res.attempted:
		d.reached = true
	}
	r.dispatch(r.q.cfg.Clock.Now())
}

// limit is how many attempts may run at d.
func (r *runner) limit(d *destState) int {
	if !d.reached {
		return 1
	}
	return r.q.cfg.MaxConnsPerDestination
}

// stale reports whether a waiting lease no longer has time for an attempt:
// less than half a lease between now and the attempt deadline.
func (r *runner) stale(l *Lease, now time.Time) bool {
	deadline := l.Until.Add(-r.q.cfg.LeaseFor / 10)
	return deadline.Sub(now) < r.q.cfg.LeaseFor/2
}

// take consumes a rate token of d, if Config.DestinationRate allows one now.
func (r *runner) take(d *destState, now time.Time) bool {
	rate := r.q.cfg.DestinationRate
	if rate <= 0 {
		return true
	}
	burst := float64(r.q.cfg.MaxConnsPerDestination)
	if !d.filled.IsZero() {
		d.tokens = min(burst, d.tokens+now.Sub(d.filled).Seconds()*rate)
	}
	d.filled = now
	if d.tokens < 1 {
		return false
	}
	d.tokens--
	return true
}

// nextDispatch is when a waiting lease blocked only by the rate limit may
// start, or zero. While every worker is busy nothing can start before an
// attempt ends, which wakes the loop anyway: the token times, long past,
// would only make it spin.
func (r *runner) nextDispatch(now time.Time) time.Time {
	rate := r.q.cfg.DestinationRate
	if rate <= 0 || r.running >= r.capacity(now) {
		return time.Time{}
	}
	var at time.Time
	for _, d := range r.dests {
		if len(d.queue) == 0 || d.running >= r.limit(d) || d.slotWait.After(now) {
			continue
		}
		missing := 1 - d.tokens
		t := d.filled.Add(time.Duration(missing / rate * float64(time.Second)))
		at = earliest(at, t)
	}
	return at
}

// releaseWaitingUntil gives back the leases waiting for d, due when d's
// backoff ends: they were never attempted.
func (r *runner) releaseWaitingUntil(d *destState, until time.Time) {
	for _, l := range d.queue {
		r.spawn(d.name, false, func(func()) attemptResult {
			r.q.release(l, leased(l), until, r.q.leaseLog(l, d.name))
			return attemptResult{}
		})
	}
	r.waiting -= len(d.queue)
	if n := len(d.queue); n > 0 {
		r.q.log.LogAttrs(context.Background(), slog.LevelInfo, "destination unavailable: returned waiting work",
			slog.String("destination", d.name), slog.Int("leases", n), slog.Time("until", until))
	}
	d.queue = nil
}

// releaseWaiting gives back the leases waiting for d, due now.
func (r *runner) releaseWaiting(d *destState, now time.Time) {
	r.releaseWaitingUntil(d, now)
}

// forget drops the state of an idle destination, so that memory follows
// the work in flight, not every destination ever seen. A later attempt
// starts with slow start again.
func (r *runner) forget(d *destState, now time.Time) {
	if d.running > 0 || len(d.queue) > 0 {
		return
	}
	if rate := r.q.cfg.DestinationRate; rate > 0 && !d.filled.IsZero() &&
		d.tokens+now.Sub(d.filled).Seconds()*rate < float64(r.q.cfg.MaxConnsPerDestination) {
		return // its bucket is not full again yet
	}
	delete(r.dests, d.name)
}
