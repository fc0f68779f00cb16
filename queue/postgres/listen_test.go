package postgres

import (
	"context"
	"testing"
	"time"
)

// waitWake waits for a wakeup. The bound only keeps a broken listener from
// hanging the test binary; a working one answers in milliseconds.
func waitWake(t *testing.T, wake <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-wake:
	case <-time.After(30 * time.Second):
		t.Fatalf("no wakeup %s", what)
	}
}

// TestWakeups_OtherNode: an enqueue on one node wakes the listener of
// another.
func TestWakeups_OtherNode(t *testing.T) {
	t.Parallel()
	ss := nodes(t, 2)
	wake := ss[0].Wakeups()
	waitWake(t, wake, "after connecting")
	mustEnqueue(t, ss[1], testMessage("m1", "a@x.example"))
	waitWake(t, wake, "after an enqueue on another node")
}

// TestWakeups_Reconnect: when the listener's connection is killed, it
// reconnects and wakes the consumer, which must rescan because
// notifications sent in between are lost.
func TestWakeups_Reconnect(t *testing.T) {
	t.Parallel()
	s := newTestStore(t)
	ctx := context.Background()
	wake := s.Wakeups()
	waitWake(t, wake, "after connecting")

	var killed int
	err := s.Pool().QueryRow(ctx, `
SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE application_name = $1`, "outbound listener "+s.schema).Scan(&killed)
	if err != nil || killed != 1 {
		t.Fatalf("terminated %d listener backends, %v; want 1", killed, err)
	}
	waitWake(t, wake, "after reconnecting")

	// And it listens again.
	mustEnqueue(t, s, testMessage("m1", "a@x.example"))
	waitWake(t, wake, "after an enqueue on the new connection")
}

// TestWakeups_CloseStopsListener: Close waits for the listener to exit.
func TestWakeups_CloseStopsListener(t *testing.T) {
	t.Parallel()
	s := newTestStore(t)
	waitWake(t, s.Wakeups(), "after connecting")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.stopped:
	default:
		t.Fatal("Close returned while the listener was still running")
	}
}
