package queue_test

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/outboundmail/outbound/queue"
)

// stuckClaims is a store whose Claims after the first wait until release
// is closed, as a Claim waits for a slow commit.
type stuckClaims struct {
	queue.Store
	release chan struct{}

	mu     sync.Mutex
	claims int
}

func (s *stuckClaims) Claim(ctx context.Context, p queue.ClaimParams) ([]*queue.Lease, error) {
	s.mu.Lock()
	s.claims++
	n := s.claims
	s.mu.Unlock()
	if n > 1 {
		select {
		case <-s.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return s.Store.Claim(ctx, p)
}

// TestRun_StartsLeasesWhileClaiming: leases already claimed start on the
// slots attempts free while the next Claim waits for the store; a Claim
// does not stop the scheduler.
func TestRun_StartsLeasesWhileClaiming(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := setup(t, queue.Config{Workers: 4, MaxConnsPerDestination: 4, StartupRamp: -1})
		b.net.add("a.example", &simServer{})
		s := &stuckClaims{Store: b.store, release: make(chan struct{})}
		cfg := b.cfg
		cfg.Store = s
		q := newQueue(t, cfg)
		const n = 12 // more than the 2×Workers leases the first claim takes
		enqueueMany(t, q, n, "app@app.test", func(i int) string { return rcptName(i, "a.example") })

		stop := running(t, q)
		defer stop()
		synctest.Wait() // the second claim waits; everything else is done
		delivered := 0
		for i := range n {
			delivered += len(b.net.outcomes(rcptName(i, "a.example"), queue.EventDelivered))
		}
		s.mu.Lock()
		claims := s.claims
		s.mu.Unlock()
		if claims != 2 {
			t.Fatalf("%d claims, want 2 (the second one stuck)", claims)
		}
		if delivered != 2*4 {
			t.Fatalf("%d delivered while the second claim waits, want all 8 leases of the first", delivered)
		}

		close(s.release)
		time.Sleep(time.Second)
		for i := range n {
			if got := len(b.net.outcomes(rcptName(i, "a.example"), queue.EventDelivered)); got != 1 {
				t.Errorf("%s: %d deliveries, want 1", rcptName(i, "a.example"), got)
			}
		}
	})
}
