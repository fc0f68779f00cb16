package queue_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/outboundmail/outbound/queue"
	"github.com/outboundmail/outbound/queue/postgres"
)

// slotSpy is a real PostgreSQL store whose AcquireSlot, ReleaseSlot and
// Finish calls a test can see, and which can run what another node does
// just before the next AcquireSlot.
type slotSpy struct {
	*postgres.Store
	mu       sync.Mutex
	before   func() // run once, before the next AcquireSlot
	acquired chan error
	released chan error
	finished chan error
}

func newSlotSpy(s *postgres.Store) *slotSpy {
	return &slotSpy{Store: s, acquired: make(chan error, 100), released: make(chan error, 100), finished: make(chan error, 100)}
}

func (s *slotSpy) AcquireSlot(ctx context.Context, p queue.SlotParams) (*queue.Slot, error) {
	s.mu.Lock()
	f := s.before
	s.before = nil
	s.mu.Unlock()
	if f != nil {
		f()
	}
	slot, err := s.Store.AcquireSlot(ctx, p)
	s.acquired <- err
	return slot, err
}

func (s *slotSpy) ReleaseSlot(ctx context.Context, slot *queue.Slot, until time.Time) error {
	err := s.Store.ReleaseSlot(ctx, slot, until)
	s.released <- err
	return err
}

func (s *slotSpy) Finish(ctx context.Context, p queue.FinishParams) error {
	err := s.Store.Finish(ctx, p)
	s.finished <- err
	return err
}

var _ queue.SlotStore = (*slotSpy)(nil)

// recv receives from ch, with a generous deadline as a guard against hangs.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(30 * time.Second):
		t.Fatalf("no %s after 30s", what)
		panic("unreachable")
	}
}

// events returns an observer that sends the events of kind on a channel.
func events(kind queue.EventKind) (queue.Observer, <-chan queue.Event) {
	ch := make(chan queue.Event, 100)
	return queue.ObserverFunc(func(e queue.Event) {
		if e.Kind == kind {
			ch <- e
		}
	}), ch
}

var slotT0 = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

// With every connection slot of a destination held by another node, the
// queue does not contact it and records nothing against it: the work waits.
// The other node's release wakes it (the fake clock never moves, so it is
// not a poll), and each recipient is then delivered by its first attempt.
func TestSlots_WaitForAFreeSlot(t *testing.T) {
	s := pgStore(t)
	spy := newSlotSpy(s)
	ctx := context.Background()
	clock := clockwork.NewFakeClockAt(slotT0)
	net := newSimNet(clock.Now)
	net.add("ok.example", &simServer{})
	obs, delivered := events(queue.EventDelivered)
	q := newQueue(t, queue.Config{Store: spy, Deliverer: net, Observer: queue.Observers{net, obs}, Clock: clock,
		StartupRamp: -1, Workers: 2, MaxConnsPerDestination: 1})

	other, err := s.AcquireSlot(ctx, queue.SlotParams{Destination: "ok.example", Owner: "other-node", Max: 1, Now: slotT0, Until: slotT0.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	enqueueMany(t, q, 3, "app@app.test", func(i int) string { return rcptName(i, "ok.example") })
	t.Cleanup(running(t, q))

	if err := recv(t, spy.acquired, "AcquireSlot"); !errors.Is(err, queue.ErrNoSlot) {
		t.Fatalf("AcquireSlot with the only slot taken = %v, want ErrNoSlot", err)
	}
	var ns *queue.NoSlotError
	if err := acquireAsThirdNode(t, s, slotT0); !errors.As(err, &ns) || !ns.FreeAt.Equal(slotT0.Add(time.Hour)) {
		t.Fatalf("AcquireSlot error = %#v, want a NoSlotError free at %v", err, slotT0.Add(time.Hour))
	}
	if n := net.connections("ok.example"); n != 0 {
		t.Fatalf("%d connections while another node held the only slot", n)
	}
	if err := s.ReleaseSlot(ctx, other, slotT0); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		recv(t, delivered, "delivery after the slot was released")
	}
	// An attempt gives its slot back after it recorded the delivery.
	for range 3 {
		if err := recv(t, spy.released, "ReleaseSlot after a delivery"); err != nil {
			t.Errorf("ReleaseSlot: %v", err)
		}
	}
	for i := range 3 {
		r := rcptName(i, "ok.example")
		if a, d := net.attempts(r), net.outcomes(r, queue.EventDeferred); len(a) != 1 || len(d) != 0 {
			t.Errorf("%s: %d attempts, %d deferrals; want 1 attempt, no deferral (waiting for a slot is not a failure)", r, len(a), len(d))
		}
	}
	if st, err := s.Destination(ctx, "ok.example"); err != nil || st.ConsecutiveFailures != 0 {
		t.Errorf("destination status %+v, %v; want no failure", st, err)
	}
	if n, err := s.SlotsInUse(ctx, "ok.example", slotT0); err != nil || n != 0 {
		t.Errorf("%d slots in use after the deliveries (%v), want 0: every attempt gives its slot back", n, err)
	}
}

// acquireAsThirdNode asks for the destination's only slot as a third node would, to
// read the error the store gives while it is taken.
func acquireAsThirdNode(t *testing.T, s *postgres.Store, now time.Time) error {
	t.Helper()
	_, err := s.AcquireSlot(context.Background(), queue.SlotParams{Destination: "ok.example", Owner: "third-node", Max: 1, Now: now, Until: now.Add(time.Minute)})
	return err
}

// Another node finds the destination unavailable after this queue claimed
// its leases and before it connects: holding the slot, the queue reads the
// shared status and gives its leases back untouched, without contacting the
// destination and without counting a failure of its own.
func TestSlots_VerdictOfAnotherNode(t *testing.T) {
	s := pgStore(t)
	spy := newSlotSpy(s)
	ctx := context.Background()
	clock := clockwork.NewFakeClockAt(slotT0)
	net := newSimNet(clock.Now)
	net.add("down.example", &simServer{}) // it would accept: any contact fails the test
	obs, started := events(queue.EventAttemptStarted)
	q := newQueue(t, queue.Config{Store: spy, Deliverer: net, Observer: queue.Observers{net, obs}, Clock: clock,
		StartupRamp: -1, Workers: 1})
	ids := enqueueMany(t, q, 3, "app@app.test", func(i int) string { return rcptName(i, "down.example") })

	nextAllowed := slotT0.Add(10 * time.Minute)
	otherID := make(chan queue.ID, 1)
	spy.before = func() {
		ls, err := s.Claim(ctx, queue.ClaimParams{Now: slotT0, Owner: "other-node", LeaseFor: 30 * time.Minute, Limit: 5})
		if err != nil || len(ls) != 1 {
			t.Errorf("the other node's claim = %d leases, %v; want the one message this queue left", len(ls), err)
			otherID <- ""
			return
		}
		l := ls[0]
		fp := queue.FinishParams{Lease: l, Now: slotT0, Destination: &queue.DestinationStatus{
			Name: "down.example", NextAllowed: nextAllowed, ConsecutiveFailures: 1, FirstFailure: slotT0, LastFailure: slotT0}}
		for _, a := range l.Recipients {
			fp.Recipients = append(fp.Recipients, queue.RecipientUpdate{Address: a, State: queue.Deferred, NextAttempt: slotT0.Add(5 * time.Minute)})
		}
		if err := s.Finish(ctx, fp); err != nil {
			t.Error(err)
		}
		otherID <- l.Message.ID
	}
	t.Cleanup(running(t, q))

	other := recv(t, otherID, "claim by the other node")
	for range 2 {
		if err := recv(t, spy.finished, "release of a lease"); err != nil {
			t.Fatalf("release: %v", err)
		}
	}
	if n := net.connections("down.example"); n != 0 || len(started) != 0 {
		t.Errorf("%d connections, %d attempts started; want none after another node's verdict", n, len(started))
	}
	st, err := s.Destination(ctx, "down.example")
	if err != nil || st.ConsecutiveFailures != 1 || !st.NextAllowed.Equal(nextAllowed) {
		t.Errorf("destination status %+v, %v; want the other node's verdict unchanged", st, err)
	}
	for _, id := range ids {
		if id == other {
			continue
		}
		m := get(t, s, id)
		r := m.Recipients[0]
		// Due at once; Claim holds it back until the destination's
		// NextAllowed (or a successful probe).
		if r.State != queue.Deferred || !r.NextAttempt.Equal(slotT0) || r.LastResult != nil || r.Attempts != 1 {
			t.Errorf("%s after the release: %+v; want Deferred, due at %v, no result, the claim's attempt only", id, r, slotT0)
		}
	}
}

// With DestinationRate, the slot an attempt took stays busy for
// MaxConnsPerDestination/DestinationRate after it was taken, for every
// node: here 2 slots, each reusable after 2/(1/60s) = 2 minutes, allow at
// most 2 attempts in any 2 minutes across the cluster.
func TestSlots_RateKeepsTheSlotBusy(t *testing.T) {
	s := pgStore(t)
	ctx := context.Background()
	clock := clockwork.NewFakeClockAt(slotT0)
	net := newSimNet(clock.Now)
	net.add("ok.example", &simServer{})
	q := newQueue(t, queue.Config{Store: s, Deliverer: net, Observer: net, Clock: clock, StartupRamp: -1,
		MaxConnsPerDestination: 2, DestinationRate: 1.0 / 60})
	enqueue(t, q, "app@app.test", "a@ok.example")
	if st, err := q.RunOnce(ctx); err != nil || st.Delivered != 1 {
		t.Fatalf("RunOnce = %+v, %v; want 1 delivered", st, err)
	}
	period := 2 * time.Minute
	for _, c := range []struct {
		at   time.Time
		want int
	}{{slotT0, 1}, {slotT0.Add(period - time.Microsecond), 1}, {slotT0.Add(period), 0}} {
		if n, err := s.SlotsInUse(ctx, "ok.example", c.at); err != nil || n != c.want {
			t.Errorf("slots in use at %v = %d, %v; want %d", c.at.Sub(slotT0), n, err, c.want)
		}
	}
	// Another node in slow start (one slot) must wait for it.
	_, err := s.AcquireSlot(ctx, queue.SlotParams{Destination: "ok.example", Owner: "other-node", Max: 1, Now: slotT0.Add(time.Minute), Until: slotT0.Add(time.Hour)})
	var ns *queue.NoSlotError
	if !errors.As(err, &ns) || !ns.FreeAt.Equal(slotT0.Add(period)) {
		t.Errorf("other node's AcquireSlot = %v, want a NoSlotError free at +%v", err, period)
	}
}
