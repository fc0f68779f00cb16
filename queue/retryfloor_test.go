package queue_test

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/outboundmail/outbound/backoff"
	"github.com/outboundmail/outbound/queue"
)

// TestRun_MinRetryDelay: a server asking for a retry in five seconds, with
// a schedule whose first wait is ten, gets the retry MinRetryDelay later.
func TestRun_MinRetryDelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := setup(t, queue.Config{Schedule: backoff.Schedule{MinBackoff: 10 * time.Second}, LeaseFor: time.Hour})
		b.net.add("example.com", &simServer{rcpt: greylister(5 * time.Second)})
		enqueue(t, b.q, "app@app.test", "a@example.com")
		runFor(t, b.q, time.Hour)
		got := b.net.attempts("a@example.com")
		if len(got) != 2 {
			t.Fatalf("attempts at %v, want two", got)
		}
		if d := got[1].Sub(got[0]); d != queue.MinRetryDelay {
			t.Fatalf("retried %v after a reply asking for 5s, want MinRetryDelay (%v)", d, queue.MinRetryDelay)
		}
	})
}
