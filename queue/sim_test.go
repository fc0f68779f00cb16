package queue_test

// Deterministic simulations of the deferral guarantee. Each runs the real
// scheduler on the real embedded store inside a testing/synctest bubble, so
// time is virtual: days pass in seconds, and time only moves when every
// goroutine waits. The network is scripted (simnet_test.go). Seeds are
// printed on failure; -sim.seed reproduces a run.

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"testing/synctest"
	"time"

	"github.com/outboundmail/outbound/backoff"
	"github.com/outboundmail/outbound/delivery"
	"github.com/outboundmail/outbound/queue"
)

// Property 3: the connections a down destination sees do not depend on how
// many messages wait for it.
func TestSim_DownDestinationConnectionsIndependentOfQueue(t *testing.T) {
	if testing.Short() {
		t.Skip("enqueues 10,000 messages")
	}
	conns := map[int]int{}
	for _, n := range []int{1, 10000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := setup(t, queue.Config{})
				b.net.add("down.example", &simServer{greeting: unavailable(func(time.Time) bool { return true }, reply421)})
				enqueueMany(t, b.q, n, "app@app.test", func(i int) string { return rcptName(i, "down.example") })
				runFor(t, b.q, 24*time.Hour)
				if bad := b.net.checkDeferrals(); len(bad) > 0 {
					t.Fatalf("deferral violations:\n%s", join(bad))
				}
				conns[n] = b.net.connections("down.example")
				t.Logf("%d messages queued for a destination that greets with 421 for 24 virtual hours: %d connections", n, conns[n])
			})
		})
	}
	if t.Failed() {
		return
	}
	// The default destination backoff (5m doubling to 1h) allows 27 probes
	// in 24 hours; a single message waits for its own schedule too.
	if conns[10000] > conns[1]+2 || conns[10000] > 30 {
		t.Fatalf("connections: %d with 10,000 messages, %d with one: the queue length leaks into the connection count", conns[10000], conns[1])
	}
}

// Property 4: a recipient that always gets 451 is attempted exactly on the
// documented schedule, warned about once after DelayWarning, and expires
// exactly at MaxLifetime with one notification.
func TestSim_AlwaysTemporaryFollowsSchedule(t *testing.T) {
	for _, tc := range []struct {
		name  string
		sched backoff.Schedule
	}{
		{"NoJitter", backoff.Schedule{Jitter: -1}},
		{"Default", backoff.Schedule{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seed := seedFor(t)
			synctest.Test(t, func(t *testing.T) { simAlwaysTemporary(t, seed, tc.sched) })
		})
	}
}

func simAlwaysTemporary(t *testing.T, seed uint64, sched backoff.Schedule) {
	rng := rand.New(rand.NewPCG(seed, 4))
	b := setup(t, queue.Config{Schedule: sched})
	b.net.add("busy.example", &simServer{rcpt: always(451, delivery.EnhancedCode{4, 3, 0}, "mailbox busy, try again later")})
	stop := running(t, b.q)
	n := 60
	if raceEnabled {
		n = 12
	}
	for i := range n {
		// Messages arrive over the first hour, at whole seconds.
		time.Sleep(time.Duration(rng.IntN(60)) * time.Second)
		enqueue(t, b.q, "app@app.test", rcptName(i, "busy.example"))
	}
	time.Sleep(sched.Expiry(time.Time{}).Sub(time.Time{}) + 2*time.Hour)
	stop()
	if bad := b.net.checkDeferrals(); len(bad) > 0 {
		t.Fatalf("deferral violations:\n%s", join(bad))
	}
	total := 0
	for i := range n {
		rcpt := rcptName(i, "busy.example")
		exp := b.net.outcomes(rcpt, queue.EventExpired)
		if len(exp) != 1 {
			t.Fatalf("%s: %d expiry events, want 1", rcpt, len(exp))
		}
		want := expectedAttempts(sched, exp[0].msg, rcpt, exp[0].arrived)
		got := b.net.attempts(rcpt)
		if !equalTimes(got, want) {
			t.Fatalf("%s attempted at\n%v\nwant the schedule\n%v", rcpt, offsets(got, exp[0].arrived), offsets(want, exp[0].arrived))
		}
		// It expires when its final attempt fails: at MaxLifetime, or
		// (Schedule.Next) earlier when jitter left less than MinBackoff
		// between the last attempt and MaxLifetime.
		if final := want[len(want)-1]; !exp[0].at.Equal(final) || final.After(sched.Expiry(exp[0].arrived)) {
			t.Fatalf("%s expired at +%v, want +%v, the final attempt", rcpt, exp[0].at.Sub(exp[0].arrived), final.Sub(exp[0].arrived))
		}
		if w := b.net.outcomes(rcpt, queue.EventDelayWarning); len(w) != 1 {
			t.Fatalf("%s: %d delay warnings, want 1", rcpt, len(w))
		} else if at, _ := sched.DelayWarningAt(exp[0].arrived); w[0].at.Before(at) {
			t.Fatalf("%s: delay warning at +%v, before +%v", rcpt, w[0].at.Sub(exp[0].arrived), at.Sub(exp[0].arrived))
		}
		total += len(got)
	}
	checkExpiryDSNs(t, b, n, sched)
	t.Logf("always-451 RCPT, %d recipients over %v: %.1f attempts per recipient (schedule Timeline: %d steps)",
		n, sched.Expiry(time.Time{}).Sub(time.Time{}), float64(total)/float64(n), len(sched.Timeline()))
}

// expectedAttempts computes a recipient's attempt times from the schedule
// alone: arrival, then Next after each failure, with the queue's jitter
// seed, until Next says it expired.
func expectedAttempts(s backoff.Schedule, id queue.ID, rcpt string, arrived time.Time) []time.Time {
	st := queue.ScheduleState(&queue.Message{ID: id, Arrived: arrived}, &queue.Recipient{Address: rcpt})
	out := []time.Time{arrived}
	for {
		st.Attempts, st.LastAttempt = len(out), out[len(out)-1]
		at, ok := s.Next(st)
		if !ok {
			return out
		}
		out = append(out, at)
	}
}

// checkExpiryDSNs checks that every message got one delay warning and one
// failure notification, with Will-Retry-Until from the real schedule.
func checkExpiryDSNs(t *testing.T, b *bundle, n int, sched backoff.Schedule) {
	t.Helper()
	delayed, failed := 0, 0
	for _, r := range b.dsns() {
		if len(r.Recipients) != 1 {
			t.Fatalf("notification with %d recipients", len(r.Recipients))
		}
		rc := r.Recipients[0]
		switch rc.Action {
		case "delayed":
			delayed++
			if want := sched.Expiry(r.ArrivalDate); !rc.WillRetryUntil.Equal(want) {
				t.Fatalf("Will-Retry-Until %v, want the expiry %v", rc.WillRetryUntil, want)
			}
		case "failed":
			failed++
			if rc.Status != "4.3.0" || rc.DiagnosticCode == "" {
				t.Fatalf("expiry notification: status %q, diagnostic %q", rc.Status, rc.DiagnosticCode)
			}
		}
	}
	if delayed != n || failed != n {
		t.Fatalf("%d delay and %d failure notifications for %d messages, want one of each per message", delayed, failed, n)
	}
}

func equalTimes(a, b []time.Time) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Equal(b[i]) {
			return false
		}
	}
	return true
}

func offsets(ts []time.Time, from time.Time) []time.Duration {
	out := make([]time.Duration, len(ts))
	for i, t := range ts {
		out[i] = t.Sub(from)
	}
	return out
}

// Property 2: a destination judged unavailable is not contacted for any
// message until its backoff expires; then one probe goes first.
func TestSim_UnavailableDestinationWaitsForBackoff(t *testing.T) {
	seed := seedFor(t)
	synctest.Test(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(seed, 2))
		start := time.Now()
		up := start.Add(3 * time.Hour)
		b := setup(t, queue.Config{})
		b.net.add("flaky.example", &simServer{greeting: unavailable(func(now time.Time) bool { return now.Before(up) }, reply421)})
		stop := running(t, b.q)
		const n = 500
		for i := range n {
			// Messages keep arriving during the outage.
			time.Sleep(time.Duration(rng.IntN(28)) * time.Second)
			enqueue(t, b.q, "app@app.test", rcptName(i, "flaky.example"))
		}
		time.Sleep(time.Until(up.Add(2 * time.Hour)))
		stop()
		if bad := b.net.checkDeferrals(); len(bad) > 0 {
			t.Fatalf("violations:\n%s", join(bad))
		}
		b.net.mu.Lock()
		defer b.net.mu.Unlock()
		var probe time.Time
		down := 0
		for _, c := range b.net.contacts {
			if c.at.Before(up) {
				down++
				if len(c.rcpts) != 1 {
					t.Errorf("contact at %v carried %d messages' recipients", c.at, len(c.rcpts))
				}
			} else if probe.IsZero() {
				probe = c.at
			}
		}
		if s := b.net.servers["flaky.example"]; len(s.delivered) != n {
			t.Fatalf("%d of %d recipients delivered after the destination came back", len(s.delivered), n)
		}
		// 5m, 10m, 20m, 40m, then hourly (+ jitter): at most 7 windows in 3h.
		if down > 8 {
			t.Fatalf("%d connections during a 3-hour outage with %d messages waiting", down, n)
		}
		t.Logf("%d messages, 3-hour outage: %d connections during it; first contact after it at +%v", n, down, probe.Sub(up))
	})
}

// Property 1: a recipient that got a temporary failure is not attempted
// before its next-attempt time: not in the same run, not after a restart,
// not after a crash mid-attempt. A mixed workload (greylisting, throttling,
// outages, rejections) runs for five virtual days with restarts.
func TestSim_NoEarlyRetry(t *testing.T) {
	seed := seedFor(t)
	synctest.Test(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(seed, 1))
		b := setup(t, queue.Config{})
		domains := mixedNetwork(b.net, rng, time.Now())
		n := 1000
		if raceEnabled {
			n = 200
		}
		stop := running(t, b.q)
		for i := range n {
			time.Sleep(time.Duration(rng.IntN(4)) * time.Second)
			d := domains[rng.IntN(len(domains))]
			to := []string{rcptName(i, d)}
			if rng.IntN(4) == 0 {
				to = append(to, rcptName(i, domains[rng.IntN(len(domains))]), rcptName(n+i, d))
			}
			enqueue(t, b.q, "app@app.test", to...)
		}
		for range 3 {
			time.Sleep(time.Duration(6+rng.IntN(30)) * time.Hour)
			stop()
			b.restart()
			stop = running(t, b.q)
		}
		time.Sleep(6 * 24 * time.Hour)
		stop()
		if bad := b.net.checkDeferrals(); len(bad) > 0 {
			t.Fatalf("violations:\n%s", join(bad))
		}
		if left := waiting(t, b.store); len(left) != 0 {
			t.Fatalf("%d messages still waiting after six days", len(left))
		}
		counts := map[queue.EventKind]int{}
		b.net.mu.Lock()
		for rcpt, evs := range b.net.byRcpt {
			final := 0
			for _, e := range evs {
				switch e.kind {
				case queue.EventDelivered, queue.EventBounced, queue.EventExpired:
					final++
					counts[e.kind]++
				}
			}
			if final != 1 && rcpt != "app@app.test" {
				t.Errorf("%s: %d final outcomes", rcpt, final)
			}
		}
		b.net.mu.Unlock()
		t.Logf("%d messages over 5 days with 3 restarts: %d delivered, %d bounced, %d expired recipients; %d notifications",
			n, counts[queue.EventDelivered]-len(b.dsns()), counts[queue.EventBounced], counts[queue.EventExpired], len(b.dsns()))
	})
}

// mixedNetwork adds destinations with varied behaviour and returns their
// names.
func mixedNetwork(n *simNet, rng *rand.Rand, start time.Time) []string {
	var names []string
	add := func(name string, s *simServer) {
		n.add(name, s)
		names = append(names, name)
	}
	add("ok.example", &simServer{})
	add("grey1.example", &simServer{rcpt: greylister(time.Minute)})
	add("grey5.example", &simServer{rcpt: greylister(5 * time.Minute)})
	add("grey30.example", &simServer{rcpt: greylister(30 * time.Minute)})
	add("full.example", &simServer{rcpt: always(452, delivery.EnhancedCode{4, 2, 2}, "mailbox full")})
	add("gone.example", &simServer{rcpt: always(550, delivery.EnhancedCode{5, 1, 1}, "no such user")})
	for i := range 4 {
		from := start.Add(time.Duration(rng.IntN(48)) * time.Hour)
		to := from.Add(time.Duration(1+rng.IntN(20)) * time.Hour)
		add(fmt.Sprintf("outage%d.example", i), &simServer{greeting: unavailable(func(now time.Time) bool {
			return !now.Before(from) && now.Before(to)
		}, reply421)})
	}
	var flakyMu = make(chan struct{}, 1)
	flaky := rand.New(rand.NewPCG(rng.Uint64(), 3))
	add("flaky.example", &simServer{rcpt: func(now time.Time, from, to string) delivery.Reply {
		flakyMu <- struct{}{}
		defer func() { <-flakyMu }()
		if flaky.IntN(3) == 0 {
			return delivery.Reply{Code: 250, Text: "ok"}
		}
		return delivery.Reply{Code: 451, Enhanced: delivery.EnhancedCode{4, 7, 1}, Text: "rate limited, try again in 10 minutes"}
	}})
	return names
}

// Reason-aware retry: the time from a greylisting reply to delivery, when
// the server states its window and when it does not.
func TestSim_GreylistToDelivery(t *testing.T) {
	type result struct{ stated, unstated time.Duration }
	results := map[time.Duration]*result{}
	windows := []time.Duration{time.Minute, 2 * time.Minute, 5 * time.Minute, 15 * time.Minute, time.Hour}
	for _, w := range windows {
		results[w] = &result{}
		for _, stated := range []bool{true, false} {
			text := "Greylisted, please try again later"
			if stated {
				text = "<%s>: Greylisting in action, please come back in %d seconds"
			}
			synctest.Test(t, func(t *testing.T) {
				b := setup(t, queue.Config{Schedule: backoff.Schedule{Jitter: -1}})
				b.net.add("grey.example", &simServer{rcpt: greylisterText(w, text)})
				start := time.Now()
				enqueue(t, b.q, "app@app.test", "a@grey.example")
				runFor(t, b.q, 3*time.Hour)
				d := b.net.outcomes("a@grey.example", queue.EventDelivered)
				if len(d) != 1 {
					t.Fatalf("window %v: not delivered", w)
				}
				if stated {
					results[w].stated = d[0].at.Sub(start)
				} else {
					results[w].unstated = d[0].at.Sub(start)
				}
			})
		}
	}
	for _, w := range windows {
		r := results[w]
		t.Logf("greylist window %-6v: delivered after %-8v when the reply states it, %v when it does not", w, r.stated, r.unstated)
		if r.stated < w || r.stated > r.unstated {
			t.Errorf("window %v: delivered after %v with the stated window, %v without", w, r.stated, r.unstated)
		}
		if w <= 4*time.Minute && r.stated != w+30*time.Second {
			t.Errorf("window %v: delivered after %v, want just after the window (%v)", w, r.stated, w+30*time.Second)
		}
	}
}
