package queue

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
)

// renewals is a SlotStore that records renewals; only RenewSlot is used.
type renewals struct {
	until chan time.Time
	lost  bool
}

func (s *renewals) AcquireSlot(context.Context, SlotParams) (*Slot, error) {
	return nil, errors.New("not used")
}

func (s *renewals) RenewSlot(_ context.Context, slot *Slot, until time.Time) error {
	s.until <- until
	if s.lost {
		return ErrSlotLost
	}
	slot.Until = until
	return nil
}

func (s *renewals) ReleaseSlot(context.Context, *Slot, time.Time) error { return nil }

// renewOnce waits until the renewal loop sleeps, moves the clock by half a
// slot term, and returns the renewal that follows.
func renewOnce(t *testing.T, clock *clockwork.FakeClock, ss *renewals) time.Time {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := clock.BlockUntilContext(ctx, 1); err != nil {
		t.Fatal("the renewal loop does not wait:", err)
	}
	clock.Advance(slotTerm / 2)
	select {
	case u := <-ss.until:
		return u
	case <-ctx.Done():
		t.Fatal("no renewal after half a term")
		panic("unreachable")
	}
}

// A slot is renewed every half term by a full term, never past the end of
// the recipients' lease, and the loop ends there, on ErrSlotLost, or when
// the attempt stops it.
func TestRenewSlot(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := clockwork.NewFakeClockAt(t0)
	q := &Queue{cfg: Config{Clock: clock}, log: slog.New(slog.DiscardHandler)}
	ctx := context.Background()

	t.Run("UntilTheLeaseEnds", func(t *testing.T) {
		ss := &renewals{until: make(chan time.Time, 1)}
		start := clock.Now()
		end := start.Add(slotTerm + slotTerm/2 + slotTerm/4)
		slot := &Slot{Until: start.Add(slotTerm)}
		done := make(chan struct{})
		go func() { q.renewSlot(ctx, ss, slot, end, make(chan struct{}), q.log); close(done) }()
		if u, want := renewOnce(t, clock, ss), start.Add(slotTerm/2+slotTerm); !u.Equal(want) {
			t.Fatalf("first renewal until %v, want %v", u.Sub(start), want.Sub(start))
		}
		if u := renewOnce(t, clock, ss); !u.Equal(end) {
			t.Fatalf("second renewal until %v, want the end of the lease %v", u.Sub(start), end.Sub(start))
		}
		<-done
		if !slot.Until.Equal(end) {
			t.Errorf("slot until %v, want %v", slot.Until.Sub(start), end.Sub(start))
		}
	})
	t.Run("Lost", func(t *testing.T) {
		ss := &renewals{until: make(chan time.Time, 1), lost: true}
		done := make(chan struct{})
		go func() {
			q.renewSlot(ctx, ss, &Slot{}, clock.Now().Add(time.Hour), make(chan struct{}), q.log)
			close(done)
		}()
		renewOnce(t, clock, ss)
		<-done // no second renewal of a slot someone else holds
	})
	t.Run("Stopped", func(t *testing.T) {
		ss := &renewals{until: make(chan time.Time, 1)}
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() { q.renewSlot(ctx, ss, &Slot{}, clock.Now().Add(time.Hour), stop, q.log); close(done) }()
		close(stop)
		<-done
		if len(ss.until) != 0 {
			t.Error("renewed after stop")
		}
	})
}
