package queue_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/outboundmail/outbound/delivery"
	"github.com/outboundmail/outbound/queue"
)

// TestQueue_Attempt: Attempt makes the due attempts of one message at once,
// however much older mail is due, and nothing else.
func TestQueue_Attempt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := setup(t, queue.Config{})
		old := b.net.add("old.example", &simServer{})
		b.net.add("example.com", &simServer{})
		b.net.add("slow.example", &simServer{rcpt: always(451, delivery.EnhancedCode{4, 3, 0}, "try later")})
		enqueueMany(t, b.q, 20, "app@app.test", func(i int) string { return rcptName(i, "old.example") })
		time.Sleep(time.Minute)
		id := enqueue(t, b.q, "app@app.test", "x@example.com", "y@nowhere.example", "z@slow.example")

		st, err := b.q.Attempt(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if want := (queue.Stats{Attempts: 3, Delivered: 1, Deferred: 1, Bounced: 1}); st != want {
			t.Fatalf("Attempt = %+v, want %+v", st, want)
		}
		if old.connections != 0 {
			t.Fatalf("old.example contacted %d times: Attempt took other work", old.connections)
		}
		if len(b.dsns()) != 0 || len(waiting(t, b.store)) != 20+2 {
			t.Fatalf("the bounce's notification was sent, or other work changed: %d waiting", len(waiting(t, b.store)))
		}
		// z is deferred: nothing is due, nothing is attempted.
		if st, err := b.q.Attempt(context.Background(), id); err != nil || st != (queue.Stats{}) {
			t.Fatalf("second Attempt = %+v, %v; want nothing done", st, err)
		}
		if got := len(b.net.attempts("z@slow.example")); got != 1 {
			t.Fatalf("z attempted %d times, want once", got)
		}
		if _, err := b.q.Attempt(context.Background(), "no-such-id"); !errors.Is(err, queue.ErrNotFound) {
			t.Fatalf("Attempt of an unknown ID: %v, want ErrNotFound", err)
		}
		stop := running(t, b.q)
		synctest.Wait() // Run has started
		if _, err := b.q.Attempt(context.Background(), id); !errors.Is(err, queue.ErrRunning) {
			t.Fatalf("Attempt while Run runs: %v, want ErrRunning", err)
		}
		stop()
	})
}
