package queue_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/outboundmail/outbound/backoff"
	"github.com/outboundmail/outbound/delivery"
	"github.com/outboundmail/outbound/queue"
)

// hangFirst returns a hang hook that blocks the first attempt until release
// is closed or the attempt's ctx ends.
func hangFirst(release <-chan struct{}) func(context.Context, []string) {
	var first atomic.Bool
	return func(ctx context.Context, _ []string) {
		if first.CompareAndSwap(false, true) {
			select {
			case <-ctx.Done():
			case <-release:
			}
		}
	}
}

func get(t *testing.T, s queue.Store, id queue.ID) *queue.Message {
	t.Helper()
	m, err := s.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// A crash mid-attempt (nothing recorded after the claim) leaves the
// recipient due when its lease ends, LeaseFor after the claim: never at
// restart.
func TestRun_CrashMidAttemptWaitsForLease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := setup(t, queue.Config{})
		release := make(chan struct{})
		b.net.add("example.com", &simServer{hang: hangFirst(release)})
		id := enqueue(t, b.q, "app@app.test", "a@example.com")
		claimed := time.Now()

		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- b.q.Run(ctx) }()
		time.Sleep(time.Second) // the attempt hangs
		b.store.Close()         // the process dies: nothing more reaches the disk
		cancel()
		close(release)
		if err := <-done; err != nil && !errors.Is(err, queue.ErrClosed) {
			t.Fatalf("Run: %v", err)
		}

		b.open() // restart
		m := get(t, b.store, id)
		if r := m.Recipients[0]; r.Attempts != 1 || !r.NextAttempt.Equal(claimed.Add(30*time.Minute)) {
			t.Fatalf("after the crash: %+v, want 1 attempt and NextAttempt at the end of the lease", r)
		}
		runFor(t, b.q, 2*time.Hour)
		got := b.net.attempts("a@example.com")
		if len(got) != 2 || got[1].Sub(claimed) != 30*time.Minute {
			t.Fatalf("attempts at %v, want the retry exactly when the 30m lease ended", offsets(got, claimed))
		}
	})
}

// Cancelling Run stops claims, gives back leases not started (due at once:
// they were never tried) and lets the attempt in flight finish.
func TestRun_GracefulShutdown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := setup(t, queue.Config{StartupRamp: -1})
		release := make(chan struct{})
		b.net.add("example.com", &simServer{hang: hangFirst(release)})
		id1 := enqueue(t, b.q, "app@app.test", "a@example.com")
		id2 := enqueue(t, b.q, "app@app.test", "b@example.com")

		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- b.q.Run(ctx) }()
		time.Sleep(time.Second) // a's attempt hangs; b waits (slow start: one at a time)
		stopped := time.Now()
		cancel()
		time.Sleep(10 * time.Second) // within ShutdownTimeout
		close(release)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		// Both were claimed; the slow start let one start.
		ids := map[string]queue.ID{"a@example.com": id1, "b@example.com": id2}
		started, waited := "a@example.com", "b@example.com"
		if len(b.net.attempts(started)) == 0 {
			started, waited = waited, started
		}
		if _, err := b.store.Get(context.Background(), ids[started]); !errors.Is(err, queue.ErrNotFound) {
			t.Fatalf("the attempt in flight did not finish: %v", err)
		}
		r := get(t, b.store, ids[waited]).Recipients[0]
		if r.State != queue.Deferred || !r.NextAttempt.Equal(stopped) || len(b.net.attempts(waited)) != 0 {
			t.Fatalf("the waiting lease: %+v, want given back, due when Run stopped, never attempted", r)
		}
	})
}

// An attempt still running after ShutdownTimeout is cancelled; it counts as
// an attempt and follows the schedule.
func TestRun_ShutdownTimeoutCancelsAttempt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := setup(t, queue.Config{ShutdownTimeout: 5 * time.Second})
		b.net.add("example.com", &simServer{hang: hangFirst(nil)})
		id := enqueue(t, b.q, "app@app.test", "a@example.com")
		runFor(t, b.q, time.Second)
		r := get(t, b.store, id).Recipients[0]
		if r.State != queue.Deferred || r.Attempts != 1 || r.NextAttempt.Sub(r.LastAttempt) < 5*time.Minute {
			t.Fatalf("cancelled attempt: %+v, want deferred on the schedule", r)
		}
	})
}

// A restarted queue keeps every deferral: nothing is retried at startup.
func TestRun_RestartKeepsDeferral(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := setup(t, queue.Config{})
		b.net.add("example.com", &simServer{rcpt: always(451, delivery.EnhancedCode{4, 3, 0}, "later")})
		enqueue(t, b.q, "app@app.test", "a@example.com")
		runFor(t, b.q, time.Minute)
		b.restart()
		runFor(t, b.q, time.Minute)
		b.restart()
		runFor(t, b.q, time.Hour)
		got := b.net.attempts("a@example.com")
		if len(got) < 2 || got[1].Sub(got[0]) < 5*time.Minute {
			t.Fatalf("attempts at %v", got)
		}
		if bad := b.net.checkDeferrals(); len(bad) > 0 {
			t.Fatal(join(bad))
		}
	})
}

// After a restart, attempts in flight ramp up from one to Workers over
// StartupRamp, instead of a burst at every destination at once.
func TestRun_StartupRamp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := setup(t, queue.Config{Workers: 16, StartupRamp: 30 * time.Second})
		release := make(chan struct{})
		hang := func(ctx context.Context, _ []string) {
			select {
			case <-ctx.Done():
			case <-release:
			}
		}
		for i := range 40 {
			d := rcptName(i, "d.example")[1:] // "0@d.example" → a domain per message
			d = strings.ReplaceAll(strings.ReplaceAll(d, "@", "-"), ".", "-") + ".example"
			b.net.add(d, &simServer{hang: hang})
			enqueue(t, b.q, "app@app.test", "x@"+d)
		}
		inflight := func() int {
			synctest.Wait()
			b.net.mu.Lock()
			defer b.net.mu.Unlock()
			n := 0
			for _, s := range b.net.servers {
				n += s.inflight
			}
			return n
		}
		start := time.Now()
		stop := running(t, b.q)
		for _, step := range []struct {
			at   time.Duration
			want int
		}{{0, 1}, {time.Second, 1}, {2 * time.Second, 2}, {15 * time.Second, 8}, {30 * time.Second, 16}, {time.Minute, 16}} {
			time.Sleep(step.at - time.Since(start))
			if got := inflight(); got != step.want {
				t.Errorf("+%v: %d attempts in flight, want %d", step.at, got, step.want)
			}
		}
		close(release)
		stop()
	})
}

// A destination starts with one attempt at a time; once one reached it, up
// to MaxConnsPerDestination run at once.
func TestRun_PerDestinationConcurrency(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := setup(t, queue.Config{Workers: 16, MaxConnsPerDestination: 3, StartupRamp: -1})
		release := make(chan struct{})
		var mu sync.Mutex
		calls := 0
		s := b.net.add("example.com", &simServer{hang: func(ctx context.Context, _ []string) {
			mu.Lock()
			calls++
			first := calls == 1
			mu.Unlock()
			if !first {
				time.Sleep(time.Second)
				return
			}
			select {
			case <-ctx.Done():
			case <-release:
			}
		}})
		for i := range 30 {
			enqueue(t, b.q, "app@app.test", rcptName(i, "example.com"))
		}
		stop := running(t, b.q)
		time.Sleep(time.Second)
		synctest.Wait()
		b.net.mu.Lock()
		slow := s.maxInflight
		b.net.mu.Unlock()
		close(release)
		time.Sleep(time.Minute)
		stop()
		b.net.mu.Lock()
		defer b.net.mu.Unlock()
		if slow != 1 || s.maxInflight != 3 || len(s.delivered) != 30 {
			t.Fatalf("in flight before the first attempt ended: %d (want 1); after: at most %d (want 3); delivered %d of 30",
				slow, s.maxInflight, len(s.delivered))
		}
	})
}

// DestinationRate spaces attempt starts at one destination.
func TestRun_DestinationRate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := setup(t, queue.Config{Workers: 8, MaxConnsPerDestination: 2, DestinationRate: 0.5, StartupRamp: -1})
		b.net.add("example.com", &simServer{})
		for i := range 10 {
			enqueue(t, b.q, "app@app.test", rcptName(i, "example.com"))
		}
		start := time.Now()
		runFor(t, b.q, time.Minute)
		b.net.mu.Lock()
		defer b.net.mu.Unlock()
		if len(b.net.contacts) != 10 {
			t.Fatalf("%d contacts, want 10", len(b.net.contacts))
		}
		for i, c := range b.net.contacts {
			// A burst of 2, then one every 2 seconds.
			if max := 2 + 0.5*c.at.Sub(start).Seconds(); float64(i+1) > max {
				t.Fatalf("contact %d at +%v: more than the rate allows", i+1, c.at.Sub(start))
			}
		}
	})
}

// With DestinationRate and every worker busy, a lease waiting for a
// worker wakes the scheduler only when an attempt ends, not every
// millisecond.
func TestRun_DestinationRateNoBusyWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		clock := &countingClock{}
		b := setup(t, queue.Config{Workers: 1, DestinationRate: 1, StartupRamp: -1, Clock: clock})
		b.net.add("slow.example", &simServer{hang: func(ctx context.Context, _ []string) {
			select {
			case <-time.After(time.Minute):
			case <-ctx.Done():
			}
		}})
		b.net.add("other.example", &simServer{})
		stop := running(t, b.q)
		enqueue(t, b.q, "app@app.test", "a@slow.example")
		time.Sleep(time.Second) // its attempt holds the only worker
		enqueue(t, b.q, "app@app.test", "b@other.example")
		time.Sleep(2 * time.Minute)
		stop()
		if n := len(b.net.attempts("b@other.example")); n != 1 {
			t.Fatalf("b@other.example attempted %d times, want once", n)
		}
		if n := clock.waits.Load(); n > 20 {
			t.Fatalf("the scheduler set %d timers while its only worker was busy for a minute", n)
		}
	})
}

// countingClock is the system clock (virtual in a synctest bubble) that
// counts the timers set.
type countingClock struct {
	backoff.System
	waits atomic.Int64
}

func (c *countingClock) After(d time.Duration) <-chan time.Time {
	c.waits.Add(1)
	return c.System.After(d)
}

// A message that outlives its lifetime while its destination is in backoff
// is expired without contacting the destination, with one notification.
func TestRun_ExpiresWhileDestinationDown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sched := backoff.Schedule{MaxLifetime: 6 * time.Hour, DelayWarning: -1}
		b := setup(t, queue.Config{Schedule: sched})
		b.net.add("down.example", &simServer{greeting: unavailable(func(time.Time) bool { return true }, reply421)})
		for i := range 20 {
			enqueue(t, b.q, "app@app.test", rcptName(i, "down.example"))
		}
		start := time.Now()
		runFor(t, b.q, 8*time.Hour)
		if left := waiting(t, b.store); len(left) != 0 {
			t.Fatalf("%d messages left", len(left))
		}
		for i := range 20 {
			e := b.net.outcomes(rcptName(i, "down.example"), queue.EventExpired)
			if len(e) != 1 || e[0].dsn == "" {
				t.Fatalf("%s: expiry events %+v", rcptName(i, "down.example"), e)
			}
			if late := e[0].at.Sub(start.Add(6 * time.Hour)); late < 0 || late > 2*time.Minute {
				t.Fatalf("expired at +%v", e[0].at.Sub(start))
			}
		}
		if n := len(b.dsns()); n != 20 {
			t.Fatalf("%d notifications, want 20", n)
		}
		if bad := b.net.checkDeferrals(); len(bad) > 0 {
			t.Fatal(join(bad))
		}
		b.net.mu.Lock()
		defer b.net.mu.Unlock()
		if c := b.net.servers["down.example"].connections; c > 10 {
			t.Fatalf("%d connections to a down destination in 8 hours", c)
		}
	})
}

func TestRunOnce_Stats(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := setup(t, queue.Config{})
		b.net.add("ok.example", &simServer{})
		b.net.add("later.example", &simServer{rcpt: always(451, delivery.EnhancedCode{}, "later")})
		b.net.add("gone.example", &simServer{rcpt: always(550, delivery.EnhancedCode{5, 1, 1}, "gone")})
		enqueue(t, b.q, "app@app.test", "a@ok.example", "b@later.example", "c@gone.example")
		st, err := b.q.RunOnce(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		// Three attempts, then the notification about c, queued in the
		// same pass and delivered to app.test.
		want := queue.Stats{Attempts: 4, Delivered: 2, Deferred: 1, Bounced: 1}
		if st != want {
			t.Fatalf("RunOnce = %+v, want %+v", st, want)
		}
		if st, err := b.q.RunOnce(context.Background()); err != nil || st != (queue.Stats{}) {
			t.Fatalf("second RunOnce = %+v, %v; want nothing due", st, err)
		}
	})
}

func TestRun_AlreadyRunning(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := setup(t, queue.Config{})
		stop := running(t, b.q)
		defer stop()
		synctest.Wait()
		if _, err := b.q.RunOnce(context.Background()); !errors.Is(err, queue.ErrRunning) {
			t.Fatalf("second run: %v, want ErrRunning", err)
		}
	})
}

func TestNew_Config(t *testing.T) {
	s := openStore(t, t.TempDir())
	n := newSimNet(time.Now)
	for _, tc := range []struct {
		name  string
		cfg   queue.Config
		field string
	}{
		{"NoStore", queue.Config{Deliverer: n}, "Store"},
		{"NoDeliverer", queue.Config{Store: s}, "Deliverer"},
		{"LeaseShorterThanBackoff", queue.Config{Store: s, Deliverer: n, LeaseFor: time.Minute}, "LeaseFor"},
		{"LeaseShorterThanCustomBackoff", queue.Config{Store: s, Deliverer: n, LeaseFor: 30 * time.Minute,
			Schedule: backoff.Schedule{MinBackoff: time.Hour}}, "LeaseFor"},
		{"BadSchedule", queue.Config{Store: s, Deliverer: n, Schedule: backoff.Schedule{Multiplier: 0.5}}, "Schedule"},
		{"NegativeWorkers", queue.Config{Store: s, Deliverer: n, Workers: -1}, "Workers"},
		{"NegativeRate", queue.Config{Store: s, Deliverer: n, DestinationRate: -1}, "DestinationRate"},
		{"BadHostname", queue.Config{Store: s, Deliverer: n, Hostname: "mta.test\r\nBcc: x"}, "Hostname"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := queue.New(tc.cfg)
			var ce *queue.ConfigError
			if !errors.As(err, &ce) || ce.Field != tc.field {
				t.Fatalf("New: %v, want a *ConfigError for %s", err, tc.field)
			}
		})
	}
	if _, err := queue.New(queue.Config{Store: s, Deliverer: n}); err != nil {
		t.Fatalf("New with only Store and Deliverer: %v", err)
	}
}

// A Deliverer that panics on a message (a poison message) does not take the
// application down; the message's attempts stay spaced by the lease.
func TestRun_PanickingDelivererIsContained(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := setup(t, queue.Config{})
		var calls atomic.Int32
		b.net.add("example.com", &simServer{hang: func(context.Context, []string) {
			if calls.Add(1) <= 3 {
				panic("poison message")
			}
		}})
		enqueue(t, b.q, "app@app.test", "a@example.com")
		enqueue(t, b.q, "app@app.test", "b@other.example")
		b.net.add("other.example", &simServer{})
		start := time.Now()
		runFor(t, b.q, 3*time.Hour)
		if n := len(b.net.outcomes("b@other.example", queue.EventDelivered)); n != 1 {
			t.Fatalf("other message: %d deliveries, want 1", n)
		}
		if n := len(b.net.outcomes("a@example.com", queue.EventDelivered)); n != 1 || calls.Load() != 4 {
			t.Fatalf("poison message: %d deliveries after %d calls, want delivered at the 4th", n, calls.Load())
		}
		got := b.net.attempts("a@example.com")
		if len(got) != 1 || got[0].Sub(start) != 90*time.Minute {
			t.Fatalf("recorded attempts at %v, want the 4th, three 30m leases after the start", offsets(got, start))
		}
	})
}
