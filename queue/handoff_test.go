package queue_test

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/outboundmail/outbound/queue"
)

// stuckFinish is a store whose Finish calls wait until release is closed,
// as a Finish waits for a slow commit.
type stuckFinish struct {
	queue.Store
	release chan struct{}

	mu       sync.Mutex
	finishes int // Finish calls begun
}

func (s *stuckFinish) Finish(ctx context.Context, p queue.FinishParams) error {
	s.mu.Lock()
	s.finishes++
	s.mu.Unlock()
	select {
	case <-s.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return s.Store.Finish(ctx, p)
}

func (s *stuckFinish) begun() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.finishes
}

// TestRun_ConnectionFreeWhileRecording: an attempt that is done with its
// destination gives the destination's connection to the next lease while
// it waits for its outcome to be recorded, but keeps its worker: no more
// than Workers attempts are ever unrecorded, and never more than
// MaxConnsPerDestination talk to the destination.
func TestRun_ConnectionFreeWhileRecording(t *testing.T) {
	for _, workers := range []int{1, 3} {
		synctest.Test(t, func(t *testing.T) {
			b := setup(t, queue.Config{Workers: workers, MaxConnsPerDestination: 1, StartupRamp: -1})
			srv := b.net.add("a.example", &simServer{})
			s := &stuckFinish{Store: b.store, release: make(chan struct{})}
			cfg := b.cfg
			cfg.Store = s
			q := newQueue(t, cfg)
			const n = 5
			enqueueMany(t, q, n, "app@app.test", func(i int) string { return rcptName(i, "a.example") })

			stop := running(t, q)
			defer stop()
			synctest.Wait() // every attempt that may start has reached Finish
			if got := s.begun(); got != workers {
				t.Errorf("Workers %d: %d attempts delivered and waiting to be recorded, want %d", workers, got, workers)
			}

			close(s.release)
			time.Sleep(time.Second)
			for i := range n {
				if got := len(b.net.outcomes(rcptName(i, "a.example"), queue.EventDelivered)); got != 1 {
					t.Errorf("Workers %d: %s: %d deliveries, want 1", workers, rcptName(i, "a.example"), got)
				}
			}
			b.net.mu.Lock()
			defer b.net.mu.Unlock()
			if srv.maxInflight != 1 {
				t.Errorf("Workers %d: %d attempts at a.example at once, want MaxConnsPerDestination 1", workers, srv.maxInflight)
			}
		})
	}
}
