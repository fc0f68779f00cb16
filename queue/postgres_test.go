package queue_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jonboulle/clockwork"

	"github.com/outboundmail/outbound/delivery"
	"github.com/outboundmail/outbound/queue"
	"github.com/outboundmail/outbound/queue/postgres"
)

// pgStore opens a PostgreSQL store in a fresh schema, dropped at the end,
// or skips the test when no database is configured or reachable.
func pgStore(t *testing.T) *postgres.Store {
	conn := os.Getenv("OUTBOUND_TEST_POSTGRES")
	if conn == "" {
		t.Skip("OUTBOUND_TEST_POSTGRES is not set (e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable); skipping")
	}
	ctx := context.Background()
	c, err := pgx.Connect(ctx, conn)
	if err != nil {
		t.Skipf("PostgreSQL at OUTBOUND_TEST_POSTGRES is unreachable (%v); skipping", err)
	}
	var b [6]byte
	rand.Read(b[:])
	schema := "outbound_queue_test_" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		c.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
		c.Close(context.Background())
	})
	s, err := postgres.Open(ctx, conn, &postgres.Options{Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// Two schedulers (two processes, as far as the store can tell) share one
// PostgreSQL store: every recipient is attempted once per due time, by one
// of them, and a deferral made by one holds for the other.
func TestPostgres_TwoQueuesShareAStore(t *testing.T) {
	s := pgStore(t)
	clock := clockwork.NewFakeClockAt(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	net := newSimNet(clock.Now)
	net.add("ok.example", &simServer{})
	net.add("busy.example", &simServer{rcpt: always(451, delivery.EnhancedCode{4, 3, 0}, "busy")})
	net.add("app.test", &simServer{})
	var qs []*queue.Queue
	for _, owner := range []string{"node-a", "node-b"} {
		qs = append(qs, newQueue(t, queue.Config{Store: s, Deliverer: net, Observer: net, Clock: clock, Owner: owner, StartupRamp: -1, Workers: 8}))
	}
	enqueueMany(t, qs[0], 200, "app@app.test", func(i int) string {
		if i%4 == 0 {
			return rcptName(i, "busy.example")
		}
		return rcptName(i, "ok.example")
	})
	pass := func() queue.Stats {
		var mu sync.Mutex
		var total queue.Stats
		var wg sync.WaitGroup
		for _, q := range qs {
			wg.Go(func() {
				st, err := q.RunOnce(context.Background())
				if err != nil {
					t.Error(err)
				}
				mu.Lock()
				defer mu.Unlock()
				total.Attempts += st.Attempts
				total.Delivered += st.Delivered
				total.Deferred += st.Deferred
			})
		}
		wg.Wait()
		return total
	}
	if st := pass(); st.Attempts != 200 || st.Delivered != 150 || st.Deferred != 50 {
		t.Fatalf("first pass of both nodes: %+v, want each of 200 messages attempted once", st)
	}
	clock.Advance(4 * time.Minute)
	if st := pass(); st.Attempts != 0 {
		t.Fatalf("pass at +4m: %+v, want nothing due", st)
	}
	clock.Advance(2 * time.Minute)
	if st := pass(); st.Attempts != 50 || st.Deferred != 50 {
		t.Fatalf("pass at +6m: %+v, want the 50 deferred recipients once each", st)
	}
	for i := 0; i < 200; i++ {
		d := "ok.example"
		if i%4 == 0 {
			d = "busy.example"
		}
		if n := len(net.attempts(rcptName(i, d))); (d == "ok.example" && n != 1) || (d == "busy.example" && n != 2) {
			t.Fatalf("%s attempted %d times", rcptName(i, d), n)
		}
	}
}
