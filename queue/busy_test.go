package queue_test

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/outboundmail/outbound/queue"
)

// TestRun_BacklogDoesNotBlockOtherDestinations: a backlog at a destination
// whose attempts hang (it has reached its connection limit) must not hold
// back younger mail for another destination.
func TestRun_BacklogDoesNotBlockOtherDestinations(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := setup(t, queue.Config{Workers: 4, MaxConnsPerDestination: 2, StartupRamp: -1})
		release := make(chan struct{})
		slow := b.net.add("slow.example", &simServer{hang: func(ctx context.Context, _ []string) {
			select {
			case <-release:
			case <-ctx.Done():
			}
		}})
		b.net.add("fast.example", &simServer{})
		const n = 40 // ten times the leases the scheduler holds at once
		enqueueMany(t, b.q, n, "app@app.test", func(i int) string { return rcptName(i, "slow.example") })
		time.Sleep(time.Second) // the other message is younger than the whole backlog
		enqueue(t, b.q, "app@app.test", "a@fast.example")

		stop := running(t, b.q)
		defer stop()
		synctest.Wait() // every goroutine is blocked: the slow attempt hangs
		if got := len(b.net.outcomes("a@fast.example", queue.EventDelivered)); got != 1 {
			t.Fatalf("fast.example: %d deliveries while slow.example's backlog hangs, want 1", got)
		}
		if got := b.net.connections("slow.example"); got != 1 {
			t.Fatalf("slow.example: %d connections before any reached it, want 1 (slow start)", got)
		}

		close(release)
		time.Sleep(time.Minute)
		for i := range n {
			if got := len(b.net.outcomes(rcptName(i, "slow.example"), queue.EventDelivered)); got != 1 {
				t.Errorf("%s: %d deliveries, want 1", rcptName(i, "slow.example"), got)
			}
		}
		b.net.mu.Lock()
		defer b.net.mu.Unlock()
		if slow.maxInflight > 2 {
			t.Errorf("slow.example: %d attempts in flight at once, want at most MaxConnsPerDestination 2", slow.maxInflight)
		}
	})
}
