package queue_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/outboundmail/outbound/backoff"
	"github.com/outboundmail/outbound/delivery"
	"github.com/outboundmail/outbound/delivery/dsn"
	"github.com/outboundmail/outbound/queue"
)

// bundle is one simulated queue: a store, a scripted network and the queue.
type bundle struct {
	t     *testing.T
	dir   string
	store queue.Store
	net   *simNet
	cfg   queue.Config
	q     *queue.Queue
	// sender is the server of the senders' domain (app.test); it keeps what
	// it receives, notifications included.
	sender *simServer
}

// setup builds a bundle inside a synctest bubble. cfg's Store, Deliverer,
// Observer and Clock (unless set) are filled in.
func setup(t *testing.T, cfg queue.Config) *bundle {
	b := &bundle{t: t, dir: spoolDir(t, true), cfg: cfg}
	b.net = newSimNet(time.Now)
	b.sender = b.net.add("app.test", &simServer{keep: true})
	b.open()
	return b
}

// open (re)opens the store and makes a new queue on it, as a restarted
// process would.
func (b *bundle) open() {
	b.store = openStore(b.t, b.dir)
	b.cfg.Store = b.store
	b.cfg.Deliverer = b.net
	if b.cfg.Observer == nil {
		b.cfg.Observer = b.net
	}
	if b.cfg.Clock == nil {
		b.cfg.Clock = backoff.System{} // virtual time inside the bubble
	}
	b.q = newQueue(b.t, b.cfg)
}

// restart closes the store and opens it again with a new queue.
func (b *bundle) restart() {
	if err := b.store.Close(); err != nil {
		b.t.Fatal(err)
	}
	b.open()
}

// dsns returns the notifications the sender's server received, parsed.
func (b *bundle) dsns() []*dsn.Report {
	b.net.mu.Lock()
	defer b.net.mu.Unlock()
	var out []*dsn.Report
	for _, m := range b.sender.received {
		if m.from != "" {
			continue
		}
		r, err := dsn.Parse(bytes.NewReader(m.data))
		if err != nil {
			b.t.Fatalf("cannot parse notification: %v\n%s", err, m.data)
		}
		out = append(out, r)
	}
	return out
}

func TestRun_DeliversAndForgets(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := setup(t, queue.Config{})
		b.net.add("example.com", &simServer{})
		id := enqueue(t, b.q, "app@app.test", "a@example.com", "b@example.com", "c@Example.COM")
		runFor(t, b.q, time.Second)
		if got := b.net.connections("example.com"); got != 1 {
			t.Errorf("connections = %d, want 1: three recipients at one destination share a transaction (RFC 5321 §4.5.4.1)", got)
		}
		for _, r := range []string{"a@example.com", "b@example.com", "c@Example.COM"} {
			if n := len(b.net.outcomes(r, queue.EventDelivered)); n != 1 {
				t.Errorf("%s: %d delivered events, want 1", r, n)
			}
		}
		if _, err := b.store.Get(context.Background(), id); !errors.Is(err, queue.ErrNotFound) {
			t.Errorf("Get after delivery: %v, want ErrNotFound (a message whose recipients are final is removed)", err)
		}
	})
}

func TestRun_DefersOnSchedule(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := setup(t, queue.Config{})
		b.net.add("example.com", &simServer{rcpt: always(451, delivery.EnhancedCode{4, 3, 0}, "try later")})
		id := enqueue(t, b.q, "app@app.test", "a@example.com")
		stop := running(t, b.q)
		defer stop()
		time.Sleep(time.Second)
		m, err := b.store.Get(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		r := m.Recipients[0]
		if r.State != queue.Deferred || r.Attempts != 1 || r.LastResult == nil || r.LastResult.Reply.Code != 451 {
			t.Fatalf("after one attempt: %+v", r)
		}
		want, _ := backoff.Schedule{}.Next(queue.ScheduleState(m, &r))
		if !r.NextAttempt.Equal(want) {
			t.Fatalf("NextAttempt = %v, want %v from the schedule", r.NextAttempt, want)
		}
		if d := r.NextAttempt.Sub(r.LastAttempt); d < 5*time.Minute || d >= 5*time.Minute*11/10 {
			t.Fatalf("first retry after %v, want 5m plus at most 10%% jitter", d)
		}
		time.Sleep(time.Until(want) - time.Millisecond)
		if n := len(b.net.attempts("a@example.com")); n != 1 {
			t.Fatalf("%d attempts before the next attempt time, want 1", n)
		}
		time.Sleep(time.Second)
		if got := b.net.attempts("a@example.com"); len(got) != 2 || !got[1].Equal(want) {
			t.Fatalf("attempts %v, want the second exactly at %v", got, want)
		}
	})
}

// Two retries due 400µs apart: the second starts on time, not when a
// minimum wait of the scheduler loop ends.
func TestRun_RetriesCloseTogetherOnTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := setup(t, queue.Config{Schedule: backoff.Schedule{Jitter: -1}})
		b.net.add("example.com", &simServer{rcpt: always(451, delivery.EnhancedCode{4, 3, 0}, "try later")})
		stop := running(t, b.q)
		defer stop()
		enqueue(t, b.q, "app@app.test", "a@example.com")
		time.Sleep(400 * time.Microsecond)
		enqueue(t, b.q, "app@app.test", "b@example.com")
		time.Sleep(6 * time.Minute)
		for _, rcpt := range []string{"a@example.com", "b@example.com"} {
			got := b.net.attempts(rcpt)
			if len(got) != 2 || got[1].Sub(got[0]) != 5*time.Minute {
				t.Errorf("%s attempted at %v, want twice, 5m apart", rcpt, got)
			}
		}
	})
}

func TestRun_BounceQueuesOneDSN(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := setup(t, queue.Config{})
		b.net.add("example.com", &simServer{rcpt: func(now time.Time, from, to string) delivery.Reply {
			if strings.HasPrefix(to, "ok") {
				return delivery.Reply{Code: 250, Text: "ok"}
			}
			return delivery.Reply{Code: 550, Enhanced: delivery.EnhancedCode{5, 1, 1}, Text: "<" + to + ">: no such user"}
		}})
		enqueue(t, b.q, "app@app.test", "ok@example.com", "gone1@example.com", "gone2@example.com")
		runFor(t, b.q, time.Second)
		reports := b.dsns()
		if len(reports) != 1 {
			t.Fatalf("%d notifications, want one covering both failed recipients", len(reports))
		}
		r := reports[0]
		if len(r.Recipients) != 2 {
			t.Fatalf("notification covers %d recipients, want 2: %+v", len(r.Recipients), r.Recipients)
		}
		for _, rc := range r.Recipients {
			if rc.Action != dsn.Failed || rc.Status != "5.1.1" || !strings.HasPrefix(rc.FinalRecipient, "gone") {
				t.Errorf("recipient block %+v", rc)
			}
		}
		if r.To != "app@app.test" {
			t.Errorf("notification To = %q", r.To)
		}
	})
}

func TestRun_NoDSNWhenNotWanted(t *testing.T) {
	for _, tc := range []struct {
		name   string
		from   string
		notify []string
	}{
		{"NullSender", "", nil},
		{"NotifyNever", "app@app.test", []string{"NEVER"}},
		{"NotifySuccessOnly", "app@app.test", []string{"SUCCESS"}},
		{"NotifyDelayOnly", "app@app.test", []string{"DELAY"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := setup(t, queue.Config{})
				b.net.add("example.com", &simServer{rcpt: always(550, delivery.EnhancedCode{5, 1, 1}, "no such user")})
				_, err := b.q.Enqueue(context.Background(), queue.Envelope{From: tc.from, To: []string{"gone@example.com"}, Notify: tc.notify},
					strings.NewReader(testBody("app@app.test", "gone@example.com", "x")))
				if err != nil {
					t.Fatal(err)
				}
				runFor(t, b.q, time.Second)
				if got := b.net.outcomes("gone@example.com", queue.EventBounced); len(got) != 1 || got[0].dsn != "" {
					t.Fatalf("bounce events %+v, want one without a DSN", got)
				}
				if n := len(all(t, b.store)); n != 0 {
					t.Fatalf("%d messages left in the queue, want none (no notification)", n)
				}
			})
		})
	}
}

func TestRun_GreylistRetriesAfterWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := setup(t, queue.Config{})
		b.net.add("example.com", &simServer{rcpt: greylister(2 * time.Minute)})
		enqueue(t, b.q, "app@app.test", "a@example.com")
		start := time.Now()
		runFor(t, b.q, time.Hour)
		got := b.net.attempts("a@example.com")
		if len(got) != 2 {
			t.Fatalf("attempts at %v, want two", got)
		}
		// Just after the stated window (2m + 30s margin), well before the
		// schedule's 5-minute minimum.
		if d := got[1].Sub(start); d != 2*time.Minute+30*time.Second {
			t.Fatalf("greylisted recipient retried after %v, want 2m30s", d)
		}
		if n := len(b.net.outcomes("a@example.com", queue.EventDelivered)); n != 1 {
			t.Fatalf("%d deliveries", n)
		}
	})
}

// A notification that bounces produces no notification of its own (RFC
// 5321 §4.5.5): the loop ends there.
func TestRun_NoDSNAboutADSN(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := setup(t, queue.Config{})
		b.sender.rcpt = always(550, delivery.EnhancedCode{5, 1, 1}, "sender mailbox gone")
		b.net.add("example.com", &simServer{rcpt: always(550, delivery.EnhancedCode{5, 1, 1}, "no such user")})
		enqueue(t, b.q, "app@app.test", "gone@example.com")
		runFor(t, b.q, time.Hour)
		if e := b.net.outcomes("gone@example.com", queue.EventBounced); len(e) != 1 || e[0].dsn == "" {
			t.Fatalf("original: %+v, want one bounce with a notification", e)
		}
		if e := b.net.outcomes("app@app.test", queue.EventBounced); len(e) != 1 || e[0].dsn != "" {
			t.Fatalf("notification: %+v, want it bounced once, without a notification", e)
		}
		if n := len(all(t, b.store)); n != 0 {
			t.Fatalf("%d messages left", n)
		}
	})
}
