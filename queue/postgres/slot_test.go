package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

func slotParams(owner string, max int, now time.Time) SlotParams {
	return SlotParams{Destination: "mx.example", Owner: owner, Max: max, Now: now, Until: now.Add(5 * time.Minute)}
}

// TestSlot_LimitAcrossNodes: nodes racing for a destination's slots get
// exactly Max of them between them.
func TestSlot_LimitAcrossNodes(t *testing.T) {
	t.Parallel()
	ss := nodes(t, 3)
	ctx := context.Background()
	const max = 4
	var (
		mu  sync.Mutex
		got = map[int]int64{}
		wg  sync.WaitGroup
	)
	for w := range 12 {
		wg.Go(func() {
			slot, err := ss[w%3].AcquireSlot(ctx, slotParams(fmt.Sprint("w", w), max, t0))
			if errors.Is(err, ErrNoSlot) {
				return
			}
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if _, dup := got[slot.Number]; dup {
				t.Errorf("slot %d acquired twice", slot.Number)
			}
			got[slot.Number] = slot.Token
		})
	}
	wg.Wait()
	if len(got) != max {
		t.Fatalf("%d slots acquired, want %d", len(got), max)
	}
	if n, err := ss[0].SlotsInUse(ctx, "mx.example", t0); err != nil || n != max {
		t.Fatalf("SlotsInUse = %d, %v; want %d", n, err, max)
	}
}

// TestSlot_Lifecycle covers release, expiry, renewal, fencing and the
// rate-limiting use of a delayed release.
func TestSlot_Lifecycle(t *testing.T) {
	t.Parallel()
	ss := nodes(t, 2)
	a, b := ss[0], ss[1]
	ctx := context.Background()

	s1, err := a.AcquireSlot(ctx, slotParams("a", 1, t0))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.AcquireSlot(ctx, slotParams("b", 1, t0.Add(time.Minute))); !errors.Is(err, ErrNoSlot) {
		t.Fatalf("second acquire = %v, want ErrNoSlot", err)
	}
	// Renewed, it outlives its first term.
	if err := a.RenewSlot(ctx, s1, t0.Add(10*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.AcquireSlot(ctx, slotParams("b", 1, t0.Add(6*time.Minute))); !errors.Is(err, ErrNoSlot) {
		t.Fatalf("acquire during renewed lease = %v, want ErrNoSlot", err)
	}
	// A dead holder's slot frees itself when the lease ends.
	s2, err := b.AcquireSlot(ctx, slotParams("b", 1, t0.Add(10*time.Minute)))
	if err != nil {
		t.Fatalf("acquire after expiry: %v", err)
	}
	if s2.Token == s1.Token {
		t.Fatal("token reused")
	}
	// The old holder is fenced.
	if err := a.RenewSlot(ctx, s1, t0.Add(20*time.Minute)); !errors.Is(err, ErrSlotLost) {
		t.Fatalf("stale renew = %v, want ErrSlotLost", err)
	}
	if err := a.ReleaseSlot(ctx, s1, t0.Add(11*time.Minute)); !errors.Is(err, ErrSlotLost) {
		t.Fatalf("stale release = %v, want ErrSlotLost", err)
	}
	// Released for rate limiting: busy until the end of its period.
	periodEnd := t0.Add(11 * time.Minute)
	if err := b.ReleaseSlot(ctx, s2, periodEnd); err != nil {
		t.Fatal(err)
	}
	if err := b.ReleaseSlot(ctx, s2, periodEnd); !errors.Is(err, ErrSlotLost) {
		t.Fatalf("second release = %v, want ErrSlotLost", err)
	}
	if _, err := a.AcquireSlot(ctx, slotParams("a", 1, periodEnd.Add(-time.Millisecond))); !errors.Is(err, ErrNoSlot) {
		t.Fatalf("acquire inside the period = %v, want ErrNoSlot", err)
	}
	if _, err := a.AcquireSlot(ctx, slotParams("a", 1, periodEnd)); err != nil {
		t.Fatalf("acquire at the end of the period: %v", err)
	}
	// Raising Max opens new slots at once.
	s3, err := b.AcquireSlot(ctx, slotParams("b", 2, periodEnd))
	if err != nil || s3.Number != 1 {
		t.Fatalf("acquire with Max 2 = %+v, %v; want slot 1", s3, err)
	}
}

func TestSlot_BadParams(t *testing.T) {
	t.Parallel()
	s := newTestStore(t)
	ctx := context.Background()
	for _, p := range []SlotParams{
		slotParams("a", 0, t0),
		slotParams("a", maxSlots+1, t0),
		{Destination: "mx.example", Max: 1, Now: t0, Until: t0},
	} {
		if _, err := s.AcquireSlot(ctx, p); err == nil || errors.Is(err, ErrNoSlot) {
			t.Errorf("AcquireSlot(%+v) = %v, want a parameter error", p, err)
		}
	}
}
