package queue

import (
	"context"
	"errors"
	"log/slog"
	"time"
)

// Run delivers queued messages until ctx is cancelled: it claims due work
// in next-attempt order (never scanning the queue), hands it to the
// Deliverer within the configured limits, and records every outcome. It
// sleeps until the store says the next recipient is due, Enqueue adds work,
// or Config.PollInterval passes.
//
// When ctx is cancelled, Run stops claiming, returns the leases it had not
// started yet, lets attempts in flight finish for up to
// Config.ShutdownTimeout (then cancels them; their outcome is still
// recorded), and returns nil. Nothing is lost and nothing becomes due
// early: a recipient whose attempt was cut short waits for its schedule, or
// for its lease to end.
//
// Store errors are logged and retried with backoff; Run returns an error
// only when the store is closed, or when Run is already running.
func (q *Queue) Run(ctx context.Context) error {
	_, err := q.run(ctx, false, "")
	return err
}

// RunOnce makes one pass over the work that is due now, as the `run
// --once` of a command-line tool: it claims and delivers until nothing is
// due, waits for the attempts to finish, and returns what happened. Work
// that becomes due during the pass (notifications it queued) is included;
// retries scheduled for later are not. Cancelling ctx stops it as it stops
// Run.
func (q *Queue) RunOnce(ctx context.Context) (Stats, error) {
	return q.run(ctx, true, "")
}

// Attempt makes the attempts of message id that are due now, as RunOnce
// would (within the same limits, destination backoff and probes), and
// returns what happened once they have finished: the immediate attempt of
// a command-line `send`. No other work is taken, not even the
// notifications the attempts queue (Run delivers them). A recipient
// deferred to later, or at a destination in backoff, is left alone. It
// returns ErrNotFound for an unknown id, and ErrRunning while Run or
// RunOnce runs (Retry then has the running scheduler attempt it).
// Cancelling ctx stops it as it stops Run.
func (q *Queue) Attempt(ctx context.Context, id ID) (Stats, error) {
	if _, err := q.cfg.Store.Get(ctx, id); err != nil {
		return Stats{}, err
	}
	return q.run(ctx, true, id)
}

// Waker is implemented by stores shared by several processes (the
// PostgreSQL store) that can tell a scheduler when another process added
// work. Run then claims at once instead of at its next poll.
type Waker interface {
	// Wakeups returns a channel that receives a value when work may have
	// become due.
	Wakeups() <-chan struct{}
}

// runner is the state of one Run: the scheduler loop owns it alone; attempt
// goroutines report back on done.
type runner struct {
	q     *Queue
	once  bool
	only  ID // when set, the message Attempt claims alone
	start time.Time

	dests   map[string]*destState // destinations with attempts running or waiting
	waiting int                   // leases held but not started
	running int                   // attempts in flight
	tasks   int                   // goroutines that will send on done (attempts and releases)
	done    chan attemptResult
	stats   Stats
	// excluded lists the busy destinations the last claim left out, when
	// it came back short (busy.go).
	excluded []string

	attemptCtx context.Context // cancelled after the shutdown timeout
	gate       gate            // destinations in backoff, for attempts about to start
	slots      slotState       // cluster-wide connection slots (slots.go)
}

func (q *Queue) run(ctx context.Context, once bool, only ID) (Stats, error) {
	if !q.running.CompareAndSwap(false, true) {
		return Stats{}, ErrRunning
	}
	defer q.running.Store(false)
	actx, cancelAttempts := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelAttempts()
	r := &runner{
		q:          q,
		once:       once,
		only:       only,
		start:      q.cfg.Clock.Now(),
		dests:      map[string]*destState{},
		done:       make(chan attemptResult, 2*q.cfg.Workers+1),
		attemptCtx: actx,
	}
	err := r.loop(ctx)
	r.shutdown(cancelAttempts)
	return r.stats, err
}

// claimed is the result of a Claim the loop runs in its own goroutine.
type claimed struct {
	leases   []*Lease
	err      error
	free     int      // the Limit it asked for
	excluded []string // the destinations it left out
}

// loop claims and dispatches until ctx is done (or, once, until nothing is
// due and nothing runs). A Claim waits for a commit of the store; it runs
// beside the loop, which meanwhile goes on starting waiting leases on the
// connections that attempts free. At most one Claim runs at a time.
func (r *runner) loop(ctx context.Context) error {
	q := r.q
	mayBeDue := true      // a claim could return work
	var dueAt time.Time   // when the store said work is next due; zero: unknown
	var retryAt time.Time // after a store error, no claim before this
	failures := 0
	var wakeups <-chan struct{}
	if w, ok := q.cfg.Store.(Waker); ok {
		wakeups = w.Wakeups()
	}
	claims := make(chan claimed, 1)
	claiming := false
	defer func() {
		if claiming {
			// Its leases are ours: shutdown gives them back.
			c := <-claims
			for _, l := range c.leases {
				r.add(l)
			}
		}
	}()
	for ctx.Err() == nil {
		now := q.cfg.Clock.Now()
		if !mayBeDue && r.unexcluded() {
			mayBeDue, r.excluded = true, nil
		}
		free := r.claimable(now)
		if !claiming && free > 0 && mayBeDue && !now.Before(retryAt) {
			excluded := r.exclusions()
			p := ClaimParams{
				Now:                 now,
				Owner:               q.cfg.Owner,
				LeaseFor:            q.cfg.LeaseFor,
				Limit:               free,
				ExpireArrivedBefore: now.Add(-q.lifetime - expiryGrace),
				ExcludeDestinations: excluded,
				Message:             r.only,
			}
			// Wakeups from now on may be for work this claim misses.
			claiming, mayBeDue = true, false
			go func() {
				leases, err := q.cfg.Store.Claim(ctx, p)
				claims <- claimed{leases: leases, err: err, free: free, excluded: excluded}
			}()
		}
		if r.once && !claiming && !mayBeDue && r.tasks == 0 && r.waiting == 0 {
			return nil
		}

		wakeAt := r.nextDispatch(now)
		if !claiming && r.claimable(now) > 0 {
			switch {
			case now.Before(retryAt):
				wakeAt = earliest(wakeAt, retryAt)
			case !r.once && !mayBeDue:
				poll := now.Add(q.cfg.PollInterval)
				if dueAt.IsZero() || dueAt.After(poll) {
					dueAt = poll
				}
				wakeAt = earliest(wakeAt, dueAt)
			}
		}
		wakeAt = earliest(wakeAt, r.nextRamp(now))
		wakeAt = earliest(wakeAt, r.nextSlotRetry(now))
		var timer <-chan time.Time
		if !wakeAt.IsZero() {
			// Wake exactly when the next event is due: a recipient due
			// in 400µs must not start later than its schedule says.
			// A wake time already past gets a short wait instead: a
			// store whose NextDue says "now" while Claim finds nothing
			// must not spin.
			wait := wakeAt.Sub(now)
			if wait <= 0 {
				wait = time.Millisecond
			}
			timer = q.cfg.Clock.After(wait)
		}
		select {
		case <-ctx.Done():
		case c := <-claims:
			claiming = false
			now := q.cfg.Clock.Now()
			switch err := c.err; {
			case err == nil:
				failures = 0
				r.excluded = nil
				if len(c.leases) == c.free {
					mayBeDue = true // probably more
				} else {
					r.excluded = c.excluded
				}
				for _, l := range c.leases {
					r.add(l)
				}
				r.dispatch(now)
				if !mayBeDue && !r.once {
					dueAt = r.nextDue(ctx, now)
					if len(c.excluded) > 0 && !dueAt.After(now) {
						// Likely the excluded backlog: wait for one of
						// those destinations to take work, or the poll.
						dueAt = time.Time{}
					}
				}
			case ctx.Err() != nil:
				continue
			case errors.Is(err, ErrClosed) || r.once:
				mayBeDue = true
				return err
			default:
				mayBeDue = true
				failures++
				wait := min(time.Second<<min(failures, 10), q.cfg.PollInterval)
				retryAt = now.Add(wait)
				q.log.LogAttrs(ctx, slog.LevelError, "claim failed", slog.Any("error", err), slog.Duration("retry_in", wait))
			}
		case res := <-r.done:
			r.finished(res)
			if res.notified {
				mayBeDue = true
			}
			if !res.dueHint.IsZero() && (dueAt.IsZero() || res.dueHint.Before(dueAt)) {
				dueAt = res.dueHint
			}
		case <-q.wake:
			mayBeDue = true
		case <-wakeups:
			mayBeDue = true
			r.slotWakeup()
		case <-timer:
			now = q.cfg.Clock.Now()
			if !dueAt.IsZero() && !now.Before(dueAt) {
				mayBeDue, dueAt = true, time.Time{}
			}
			r.dispatch(now)
		}
	}
	return nil
}

// nextDue asks the store when work is next due; zero when nothing waits or
// the store cannot say (the poll interval then applies).
func (r *runner) nextDue(ctx context.Context, now time.Time) time.Time {
	at, ok, err := r.q.cfg.Store.NextDue(ctx, now)
	if err != nil {
		r.q.log.LogAttrs(ctx, slog.LevelError, "next due failed", slog.Any("error", err))
		return time.Time{}
	}
	if !ok {
		return time.Time{}
	}
	return at
}

// claimable is how many leases the next claim may take: leases are held
// up to twice the capacity (those running, and as many waiting to start),
// and claimed in batches once the waiting ones run low, so that one claim
// (one commit) feeds many attempts. Leases parked at their destination's
// own limits do not count, up to twice the capacity: they must not stop
// the claims of work for other destinations (busy.go).
func (r *runner) claimable(now time.Time) int {
	c := r.capacity(now)
	waiting := r.waiting - min(r.parked(now), 2*c)
	if waiting > c/2 {
		return 0
	}
	return max(2*c-r.tasks-waiting, 0)
}

// capacity is how many attempts may run at now: Workers, ramped up from 1
// over Config.StartupRamp after the run starts.
func (r *runner) capacity(now time.Time) int {
	w, ramp := r.q.cfg.Workers, r.q.cfg.StartupRamp
	el := now.Sub(r.start)
	if ramp <= 0 || el >= ramp || w <= 1 {
		return w
	}
	return 1 + int(int64(w-1)*int64(el)/int64(ramp))
}

// nextRamp is when capacity next grows, or zero.
func (r *runner) nextRamp(now time.Time) time.Time {
	w, ramp := r.q.cfg.Workers, r.q.cfg.StartupRamp
	c := r.capacity(now)
	if c >= w {
		return time.Time{}
	}
	// capacity reaches c+1 once el*(w-1) >= c*ramp.
	el := time.Duration((int64(c)*int64(ramp) + int64(w-2)) / int64(w-1))
	return r.start.Add(el)
}

// shutdown returns the leases not started and waits for attempts in flight,
// cancelling them after the shutdown timeout.
func (r *runner) shutdown(cancelAttempts context.CancelFunc) {
	r.slots.stopping = true
	now := r.q.cfg.Clock.Now()
	for _, d := range r.dests {
		r.releaseWaiting(d, now)
	}
	if r.tasks == 0 {
		return
	}
	deadline := r.q.cfg.Clock.After(r.q.cfg.ShutdownTimeout)
	for r.tasks > 0 {
		select {
		case res := <-r.done:
			r.finished(res)
		case <-deadline:
			r.q.log.LogAttrs(context.Background(), slog.LevelWarn, "shutdown timeout: cancelling attempts in flight", slog.Int("attempts", r.tasks))
			cancelAttempts()
			deadline = nil
		}
	}
}

func earliest(a, b time.Time) time.Time {
	switch {
	case a.IsZero():
		return b
	case b.IsZero() || a.Before(b):
		return a
	}
	return b
}
