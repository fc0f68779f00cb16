package postgres

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/jackc/pgx/v5"

	"github.com/outboundmail/outbound/queue"
)

// appTable creates a table standing for the application's own data.
func appTable(t *testing.T, s *Store) string {
	t.Helper()
	name := pgx.Identifier{s.schema, "app_order"}.Sanitize()
	if _, err := s.Pool().Exec(context.Background(), "CREATE TABLE "+name+" (id int PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	return name
}

func countRows(t *testing.T, s *Store, table string) int {
	t.Helper()
	var n int
	if err := s.Pool().QueryRow(context.Background(), "SELECT count(*) FROM "+pgx.Identifier{s.schema, table}.Sanitize()).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestEnqueueTx_RolledBack: mail queued in a transaction that rolls back
// does not exist, not even partly.
func TestEnqueueTx_RolledBack(t *testing.T) {
	t.Parallel()
	s := newTestStore(t)
	ctx := context.Background()
	orders := appTable(t, s)
	tx, err := s.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO "+orders+" VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	body := strings.NewReader("Subject: order 1\r\n\r\n" + strings.Repeat("x", 3*DefaultChunkSize) + "\r\n")
	if _, err := s.EnqueueTx(ctx, tx, queue.EnqueueParams{Message: testMessage("order-1", "a@shop.example"), Body: body}); err != nil {
		t.Fatalf("EnqueueTx: %v", err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "order-1"); !errors.Is(err, queue.ErrNotFound) {
		t.Fatalf("Get after rollback = %v, want ErrNotFound", err)
	}
	for _, table := range []string{"message", "message_chunk", "recipient", "delivery"} {
		if n := countRows(t, s, table); n != 0 {
			t.Fatalf("%d rows left in %s after rollback", n, table)
		}
	}
	if ls := mustClaim(t, s, t0, "w", 10); len(ls) != 0 {
		t.Fatalf("claimed %d leases after rollback", len(ls))
	}
}

// TestEnqueueTx_Committed: mail queued with the application's data is
// visible and deliverable once the transaction commits, and wakes workers.
func TestEnqueueTx_Committed(t *testing.T) {
	t.Parallel()
	s := newTestStore(t)
	ctx := context.Background()
	orders := appTable(t, s)
	wake := s.Wakeups()
	waitWake(t, wake, "after connecting")

	tx, err := s.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO "+orders+" VALUES (2)"); err != nil {
		t.Fatal(err)
	}
	body := []byte("Subject: order 2\r\n\r\nthanks\r\n")
	id, err := s.EnqueueTx(ctx, tx, queue.EnqueueParams{Message: testMessage("order-2", "a@shop.example"), Body: bytes.NewReader(body)})
	if err != nil || id != "order-2" {
		t.Fatalf("EnqueueTx = %q, %v", id, err)
	}
	// Not visible to others before the commit.
	if _, err := s.Get(ctx, "order-2"); !errors.Is(err, queue.ErrNotFound) {
		t.Fatalf("Get before commit = %v, want ErrNotFound", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	waitWake(t, wake, "after the commit") // NOTIFY is delivered with the commit
	ls := mustClaim(t, s, t0, "w", 10)
	if len(ls) != 1 || ls[0].Message.ID != "order-2" || ls[0].Message.Size != int64(len(body)) {
		t.Fatalf("claim after commit = %v, want order-2", ls)
	}
	if err := s.Finish(ctx, deliverAll(ls[0], t0)); err != nil {
		t.Fatal(err)
	}
}

// TestEnqueueTx_FailureKeepsCallerTx: a body that fails to read aborts only
// the enqueue (a savepoint), so the application's transaction stays usable
// and commits its own data without the message.
func TestEnqueueTx_FailureKeepsCallerTx(t *testing.T) {
	t.Parallel()
	s := newTestStore(t)
	ctx := context.Background()
	orders := appTable(t, s)
	tx, err := s.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck
	if _, err := tx.Exec(ctx, "INSERT INTO "+orders+" VALUES (3)"); err != nil {
		t.Fatal(err)
	}
	broken := errors.New("disk on fire")
	body := io.MultiReader(strings.NewReader(strings.Repeat("y", DefaultChunkSize+10)), iotest.ErrReader(broken))
	_, err = s.EnqueueTx(ctx, tx, queue.EnqueueParams{Message: testMessage("order-3", "a@shop.example"), Body: body})
	if !errors.Is(err, broken) {
		t.Fatalf("EnqueueTx with a failing body = %v, want %v", err, broken)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO "+orders+" VALUES (4)"); err != nil {
		t.Fatalf("caller's transaction unusable after the failed enqueue: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if n := countRows(t, s, "app_order"); n != 2 {
		t.Fatalf("%d orders committed, want 2", n)
	}
	if n := countRows(t, s, "message_chunk"); n != 0 {
		t.Fatalf("%d body chunks left behind", n)
	}
}

// TestBody_Chunked: bodies are stored in ChunkSize rows, including the
// edge sizes, and stream back exactly.
func TestBody_Chunked(t *testing.T) {
	t.Parallel()
	s := openSchema(t, newSchema(t), &Options{ChunkSize: 1000})
	ctx := context.Background()
	for i, size := range []int{0, 1, 999, 1000, 1001, 2000, 123457} {
		id := queue.ID("b" + string(rune('a'+i)))
		body := bytes.Repeat([]byte("0123456789abcdefghijklmnopqrstuvwxyz\r\n"), size/38+1)[:size]
		before := countRows(t, s, "message_chunk")
		if _, err := s.Enqueue(ctx, queue.EnqueueParams{Message: testMessage(string(id), "a@x.example"), Body: iotest.HalfReader(bytes.NewReader(body))}); err != nil {
			t.Fatalf("Enqueue %d octets: %v", size, err)
		}
		if got, want := countRows(t, s, "message_chunk")-before, (size+999)/1000; got != want {
			t.Fatalf("%d octets stored in %d chunks, want %d", size, got, want)
		}
		m, err := s.Get(ctx, id)
		if err != nil || m.Size != int64(size) {
			t.Fatalf("Get: size %v, %v; want %d", m, err, size)
		}
		rc, err := s.OpenBody(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if err := iotest.TestReader(rc, body); err != nil {
			t.Fatalf("body of %d octets: %v", size, err)
		}
		rc.Close()
	}
}

// TestBody_DeletedWhileReading: a reader whose message disappears reports
// an error instead of a short body that looks complete.
func TestBody_DeletedWhileReading(t *testing.T) {
	t.Parallel()
	s := openSchema(t, newSchema(t), &Options{ChunkSize: 100})
	ctx := context.Background()
	body := bytes.Repeat([]byte("z"), 1000)
	if _, err := s.Enqueue(ctx, queue.EnqueueParams{Message: testMessage("gone", "a@x.example"), Body: bytes.NewReader(body)}); err != nil {
		t.Fatal(err)
	}
	rc, err := s.OpenBody(ctx, "gone")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, err := io.ReadFull(rc, make([]byte, 150)); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(rc); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("reading a deleted body: %v, want a missing-chunk error", err)
	}
}
