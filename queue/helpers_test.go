package queue_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outboundmail/outbound/queue"
	"github.com/outboundmail/outbound/queue/embedded"
)

var simSeed = flag.Uint64("sim.seed", 0, "seed of the simulation tests; 0 picks one (printed on failure)")

// seedFor returns the simulation seed and arranges for it to be printed if
// the test fails, so that the run can be reproduced.
func seedFor(t *testing.T) uint64 {
	s := *simSeed
	if s == 0 {
		s = uint64(time.Now().UnixNano())
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("simulation seed %d: rerun with go test -run '^%s$' ./queue -sim.seed=%d", s, t.Name(), s)
		}
	})
	return s
}

// spoolDir returns a directory for a store that is removed after the test.
// Simulations put it in memory (/dev/shm) when they can: they test the
// scheduler, not fsync, and run thousands of commits.
func spoolDir(t testing.TB, inMemory bool) string {
	if inMemory {
		if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
			d, err := os.MkdirTemp("/dev/shm", "outbound-queue-test-")
			if err == nil {
				t.Cleanup(func() { os.RemoveAll(d) })
				return d
			}
		}
	}
	return t.TempDir()
}

// openStore opens the embedded store in dir, closed when the test ends.
func openStore(t testing.TB, dir string) *embedded.Store {
	t.Helper()
	s, err := embedded.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// newQueue returns a queue on cfg, failing the test on error.
func newQueue(t testing.TB, cfg queue.Config) *queue.Queue {
	t.Helper()
	if cfg.Hostname == "" {
		cfg.Hostname = "mta.test"
	}
	q, err := queue.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// testBody returns a small message from sender to rcpt.
func testBody(from, to, subject string) string {
	return "From: <" + from + ">\r\nTo: <" + to + ">\r\nSubject: " + subject +
		"\r\nMessage-ID: <" + subject + "@app.test>\r\nDate: Sat, 01 Jan 2000 00:00:00 +0000\r\n\r\nHello.\r\n"
}

// enqueue adds a message or fails the test.
func enqueue(t testing.TB, q *queue.Queue, from string, to ...string) queue.ID {
	t.Helper()
	id, err := q.Enqueue(context.Background(), queue.Envelope{From: from, To: to}, strings.NewReader(testBody(from, to[0], "test")))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// enqueueMany adds n messages, one recipient each (rcpt(i)), from 16
// goroutines so that the store commits them in groups.
func enqueueMany(t testing.TB, q *queue.Queue, n int, from string, rcpt func(i int) string) []queue.ID {
	t.Helper()
	ids := make([]queue.ID, n)
	errs := make(chan error, 16)
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for i := w; i < n; i += 16 {
				id, err := q.Enqueue(context.Background(), queue.Envelope{From: from, To: []string{rcpt(i)}},
					strings.NewReader(testBody(from, rcpt(i), fmt.Sprintf("m%d", i))))
				if err != nil {
					errs <- err
					return
				}
				ids[i] = id
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return ids
}

// running runs q.Run in the background until stop is called; stop waits for
// Run to return and fails the test if it returned an error.
func running(t testing.TB, q *queue.Queue) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- q.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
}

// runFor runs q for d of (virtual) time.
func runFor(t testing.TB, q *queue.Queue, d time.Duration) {
	stop := running(t, q)
	time.Sleep(d)
	stop()
}

// waiting returns the messages of s that still have a waiting recipient.
func waiting(t testing.TB, s queue.Store) []*queue.Message {
	t.Helper()
	ms, err := s.List(context.Background(), queue.ListParams{States: []queue.RecipientState{queue.Queued, queue.Deferred, queue.Held}})
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

// all returns every message in s.
func all(t testing.TB, s queue.Store) []*queue.Message {
	t.Helper()
	ms, err := s.List(context.Background(), queue.ListParams{})
	if err != nil {
		t.Fatal(err)
	}
	return ms
}
