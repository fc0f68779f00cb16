package queue_test

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/outboundmail/outbound/delivery/rfc5321"
	"github.com/outboundmail/outbound/queue"
)

// viaRelay routes every recipient but the senders (app.test) through one
// destination of the simulated network, as a *delivery.Deliverer with
// Relay set does.
type viaRelay struct {
	*simNet
	relay string
}

func (v viaRelay) Destination(rcpt string) string {
	if d := rfc5321.Domain(rcpt); d == "app.test" {
		return d
	}
	return v.relay
}

// withDeliverer returns a new queue on b's store that routes with d, as a
// restart with other settings would.
func (b *bundle) withDeliverer(d queue.Deliverer) *queue.Queue {
	cfg := b.cfg
	cfg.Deliverer = d
	return newQueue(b.t, cfg)
}

// delivered returns how many times rcpt was delivered, and the last time.
func (b *bundle) delivered(rcpt string) (int, time.Time) {
	evs := b.net.outcomes(rcpt, queue.EventDelivered)
	if len(evs) == 0 {
		return 0, time.Time{}
	}
	return len(evs), evs[len(evs)-1].at
}

// TestRun_RoutedToRelayAfterQueueing: mail queued for MX delivery, at
// destinations in backoff, goes out through a relay configured later, and
// the stale backoff of the old destinations does not hold it back one
// probe at a time.
func TestRun_RoutedToRelayAfterQueueing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := setup(t, queue.Config{StartupRamp: -1})
		one := b.net.add("one.example", &simServer{greeting: unavailable(func(time.Time) bool { return true }, reply421)})
		two := b.net.add("two.example", &simServer{greeting: unavailable(func(time.Time) bool { return true }, reply421)})
		relay := b.net.add("relay.test", &simServer{})
		enqueue(t, b.q, "app@app.test", "a@one.example", "b@two.example")
		runFor(t, b.q, time.Second)
		st, err := b.store.Destination(context.Background(), "one.example")
		if err != nil || st.ConsecutiveFailures != 1 {
			t.Fatalf("one.example after a 421: %+v, %v; want one failure on record", st, err)
		}
		backoffEnd := st.NextAllowed
		for _, r := range []string{"c@one.example", "d@one.example", "e@one.example"} {
			enqueue(t, b.q, "app@app.test", r)
		}
		before := one.connections + two.connections

		q := b.withDeliverer(viaRelay{b.net, "relay.test"})
		runFor(t, q, time.Hour)
		for _, r := range []string{"a@one.example", "b@two.example", "c@one.example", "d@one.example", "e@one.example"} {
			n, at := b.delivered(r)
			if n != 1 {
				t.Fatalf("%s delivered %d times, want once (through the relay)", r, n)
			}
			// The stored destination's backoff still applies (Claim
			// knows no better), but once: the first lease through the
			// relay clears it, instead of one probe per lease.
			if r[0] >= 'c' && (at.Before(backoffEnd) || at.After(backoffEnd.Add(time.Second))) {
				t.Errorf("%s delivered at %v, want just after one.example's backoff ended at %v", r, at, backoffEnd)
			}
		}
		if one.connections+two.connections != before {
			t.Errorf("the old destinations were contacted %d times after the routing change", one.connections+two.connections-before)
		}
		if relay.connections != 5 {
			t.Errorf("relay contacted %d times, want 5 (one per message and stored destination)", relay.connections)
		}
		for _, name := range []string{"one.example", "two.example", "relay.test"} {
			st, err := b.store.Destination(context.Background(), name)
			if err != nil || st.ConsecutiveFailures != 0 || !st.NextAllowed.IsZero() {
				t.Errorf("%s: %+v, %v; want a clear status", name, st, err)
			}
		}
		if bad := b.net.checkDeferrals(); len(bad) > 0 {
			t.Fatalf("violations:\n%s", join(bad))
		}
	})
}

// TestRun_RoutedFromRelayAfterQueueing: a message queued for a relay, with
// recipients at two domains (one transaction), is split by domain when the
// relay is dropped: one transaction per domain, nothing to the relay.
func TestRun_RoutedFromRelayAfterQueueing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := setup(t, queue.Config{StartupRamp: -1})
		relay := b.net.add("relay.test", &simServer{})
		one := b.net.add("one.example", &simServer{})
		two := b.net.add("two.example", &simServer{})
		queued := b.withDeliverer(viaRelay{b.net, "relay.test"})
		id := enqueue(t, queued, "app@app.test", "a@one.example", "b@two.example", "c@one.example")
		m, err := b.store.Get(context.Background(), id)
		if err != nil || m.Recipients[1].Destination != "relay.test" {
			t.Fatalf("queued %+v, %v; want every recipient at relay.test", m, err)
		}

		runFor(t, b.q, time.Minute)
		for _, r := range []string{"a@one.example", "b@two.example", "c@one.example"} {
			if n, _ := b.delivered(r); n != 1 {
				t.Fatalf("%s delivered %d times, want once", r, n)
			}
		}
		if relay.connections != 0 || one.connections != 1 || two.connections != 1 {
			t.Fatalf("connections: relay %d, one.example %d, two.example %d; want 0, 1, 1",
				relay.connections, one.connections, two.connections)
		}
		if got := one.delivered["a@one.example"] + one.delivered["c@one.example"] + two.delivered["b@two.example"]; got != 3 {
			t.Fatalf("the domains' servers accepted %d recipients, want 3", got)
		}
		if bad := b.net.checkDeferrals(); len(bad) > 0 {
			t.Fatalf("violations:\n%s", join(bad))
		}
	})
}

// TestRun_RoutedToUnavailableRelay: the relay a changed route leads to is
// judged unavailable under its own name, and the other mail routed there
// waits for its backoff instead of contacting it.
func TestRun_RoutedToUnavailableRelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := setup(t, queue.Config{StartupRamp: -1})
		relay := b.net.add("relay.test", &simServer{greeting: unavailable(func(time.Time) bool { return true }, reply421)})
		for _, r := range []string{"a@one.example", "b@two.example", "c@one.example"} {
			enqueue(t, b.q, "app@app.test", r)
		}
		q := b.withDeliverer(viaRelay{b.net, "relay.test"})
		runFor(t, q, time.Minute)
		if relay.connections != 1 {
			t.Fatalf("relay contacted %d times, want once: then it is in backoff", relay.connections)
		}
		st, err := b.store.Destination(context.Background(), "relay.test")
		if err != nil || st.ConsecutiveFailures != 1 || st.LastResult == nil || st.LastResult.Reply.Code != 421 {
			t.Fatalf("relay.test: %+v, %v; want its failure recorded under its own name", st, err)
		}
		for _, name := range []string{"one.example", "two.example"} {
			st, err := b.store.Destination(context.Background(), name)
			if err != nil || st.ConsecutiveFailures != 0 {
				t.Errorf("%s: %+v, %v; want no failure: it was never contacted", name, st, err)
			}
		}
		for _, m := range waiting(t, b.store) {
			for _, r := range m.Recipients {
				if r.State == queue.Deferred && r.NextAttempt.Before(st.NextAllowed) {
					t.Errorf("%s due at %v, before the relay's backoff ends at %v", r.Address, r.NextAttempt, st.NextAllowed)
				}
			}
		}
		if bad := b.net.checkDeferrals(); len(bad) > 0 {
			t.Fatalf("violations:\n%s", join(bad))
		}
	})
}
