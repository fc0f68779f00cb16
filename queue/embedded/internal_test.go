package embedded

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/outboundmail/outbound/queue"
)

var t0 = time.Date(2031, 3, 4, 5, 6, 7, 0, time.UTC)

func openT(t *testing.T, dir string, opts *Options) *Store {
	t.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func testMsg(id string, next time.Time, dests ...string) *queue.Message {
	return benchMsg(id, next, dests...)
}

// bulkLoad inserts messages with a 100-octet inline body directly, many per
// transaction, through the same insert (and index code) Enqueue uses. It
// builds large queues in seconds; Enqueue's durability is tested elsewhere.
func bulkLoad(tb testing.TB, s *Store, msgs []*queue.Message) {
	tb.Helper()
	bd := bytes.Repeat([]byte("x"), 100)
	b := &body{inline: bd, size: int64(len(bd)), crc: crc32.Checksum(bd, castagnoli)}
	for len(msgs) > 0 {
		chunk := msgs[:min(len(msgs), 20000)]
		msgs = msgs[len(chunk):]
		err := s.db.Update(func(tx *bolt.Tx) error {
			bt := newBTx(tx)
			for _, m := range chunk {
				if err := bt.insert(m, b); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			tb.Fatal(err)
		}
	}
}

func TestLockedBySecondOpen(t *testing.T) {
	dir := t.TempDir()
	openT(t, dir, nil)
	start := time.Now()
	_, err := Open(dir, &Options{LockTimeout: 50 * time.Millisecond})
	var le *LockedError
	if !errors.As(err, &le) || le.Path != filepath.Join(dir, dbName) {
		t.Fatalf("second Open = %v, want *LockedError for %s", err, filepath.Join(dir, dbName))
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("second Open took %s; it must fail fast", d)
	}
}

// TestFsyncFailureRefusesWrites injects an fsync error on a body file: the
// Enqueue fails, and so does every later write, because a retried fsync
// proves nothing. A fresh Open starts from the last durable state.
func TestFsyncFailureRefusesWrites(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, nil)
	ctx := t.Context()
	if _, err := s.Enqueue(ctx, queue.EnqueueParams{Message: testMsg("m01", t0, "a.example"), Body: bytes.NewReader([]byte("before\r\n"))}); err != nil {
		t.Fatal(err)
	}
	s.syncFile = func(*os.File) error { return syscall.EIO }
	_, err := s.Enqueue(ctx, queue.EnqueueParams{Message: testMsg("m02", t0, "a.example"), Body: bytes.NewReader(make([]byte, 100<<10))})
	var fe *FailedError
	if !errors.As(err, &fe) || !errors.Is(err, syscall.EIO) {
		t.Fatalf("Enqueue with failing fsync = %v, want *FailedError wrapping EIO", err)
	}
	s.syncFile = (*os.File).Sync
	_, err = s.Enqueue(ctx, queue.EnqueueParams{Message: testMsg("m03", t0, "a.example"), Body: bytes.NewReader([]byte("small\r\n"))})
	if !errors.As(err, &fe) {
		t.Fatalf("Enqueue after a failed fsync = %v, want *FailedError", err)
	}
	if _, err := s.Claim(ctx, queue.ClaimParams{Now: t0, LeaseFor: time.Minute}); !errors.As(err, &fe) {
		t.Fatalf("Claim after a failed fsync = %v, want *FailedError", err)
	}
	if err := s.Hold(ctx, "m01"); !errors.As(err, &fe) {
		t.Fatalf("Hold after a failed fsync = %v, want *FailedError", err)
	}
	if _, err := s.Get(ctx, "m01"); err != nil {
		t.Fatalf("Get after a failed fsync: %v (reads must go on)", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, dir, nil)
	for _, id := range []queue.ID{"m02", "m03"} {
		if _, err := s.Get(ctx, id); !errors.Is(err, queue.ErrNotFound) {
			t.Fatalf("Get(%s) after reopen = %v, want ErrNotFound", id, err)
		}
	}
	if n := countBodyFiles(t, s); n != 0 {
		t.Fatalf("%d body files left behind", n)
	}
	if _, err := s.Enqueue(ctx, queue.EnqueueParams{Message: testMsg("m04", t0, "a.example"), Body: bytes.NewReader(make([]byte, 100<<10))}); err != nil {
		t.Fatalf("Enqueue after reopen: %v", err)
	}
}

func countBodyFiles(t *testing.T, s *Store) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(s.bodies, func(_ string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestOpenRemovesOrphans leaves the two kinds of garbage a crash can leave
// (a body written but never committed, one unreferenced but not unlinked)
// and checks that Open removes them and nothing else.
func TestOpenRemovesOrphans(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, nil)
	ctx := t.Context()
	big := bytes.Repeat([]byte("0123456789\r\n"), 10<<10)
	for _, id := range []string{"m01", "m02"} {
		if _, err := s.Enqueue(ctx, queue.EnqueueParams{Message: testMsg(id, t0, "a.example"), Body: bytes.NewReader(big)}); err != nil {
			t.Fatal(err)
		}
	}
	// Uncommitted: a file no record names.
	stray, err := s.writeBodyFile(nil, bytes.NewReader(big), crc32.New(castagnoli))
	if err != nil {
		t.Fatal(err)
	}
	// Committed removal, file not yet unlinked: drop m02's record by hand.
	var m02file string
	err = s.db.Update(func(tx *bolt.Tx) error {
		b := newBTx(tx)
		r, err := b.loadMsg("m02")
		if err != nil {
			return err
		}
		m02file = r.file
		return b.removeMessage(r)
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openT(t, dir, nil)
	for _, name := range []string{stray.file, m02file} {
		if _, err := os.Stat(s.bodyPath(name)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("orphan %s still there after Open (%v)", name, err)
		}
	}
	if n := countBodyFiles(t, s); n != 1 {
		t.Fatalf("%d body files after Open, want only m01's", n)
	}
	rc, err := s.OpenBody(ctx, "m01")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("m01's body after garbage collection: %d octets, %v", len(got), err)
	}
}

// TestDamagedBodyDetected damages body files and an inline body: reading
// fails with *CorruptError before the body could be taken as complete.
func TestDamagedBodyDetected(t *testing.T) {
	s := openT(t, t.TempDir(), nil)
	ctx := t.Context()
	big := bytes.Repeat([]byte("abcdefghij"), 20<<10)
	for _, id := range []string{"flip", "short", "long", "inline"} {
		b := big
		if id == "inline" {
			b = big[:1000]
		}
		if _, err := s.Enqueue(ctx, queue.EnqueueParams{Message: testMsg(id, t0, "a.example"), Body: bytes.NewReader(b)}); err != nil {
			t.Fatal(err)
		}
	}
	damage := func(id string, f func(path string) error) {
		t.Helper()
		var r *msgRecord
		s.view(func(b *btx) error { r, _ = b.loadMsg(queue.ID(id)); return nil })
		if err := f(s.bodyPath(r.file)); err != nil {
			t.Fatal(err)
		}
	}
	damage("flip", func(p string) error {
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = f.WriteAt([]byte("X"), 12345)
		return err
	})
	damage("short", func(p string) error { return os.Truncate(p, 5000) })
	damage("long", func(p string) error {
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = f.Write([]byte("trailing garbage"))
		return err
	})
	err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketBody).Put([]byte("inline"), bytes.Repeat([]byte("z"), 1000))
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"flip", "short", "long", "inline"} {
		rc, err := s.OpenBody(ctx, queue.ID(id))
		if err != nil {
			t.Fatalf("OpenBody(%s): %v", id, err)
		}
		_, err = io.ReadAll(rc)
		rc.Close()
		var ce *CorruptError
		if !errors.As(err, &ce) || ce.ID != queue.ID(id) {
			t.Errorf("reading damaged body %s = %v, want *CorruptError", id, err)
		}
	}
}

// TestCorruptRecordQuarantined damages a message record: Get reports it,
// Claim moves it aside instead of delivering it and goes on with the rest.
func TestCorruptRecordQuarantined(t *testing.T) {
	s := openT(t, t.TempDir(), nil)
	ctx := t.Context()
	for _, id := range []string{"m01", "m02"} {
		m := testMsg(id, t0, "a.example", "b.example")
		m.IdempotencyKey, m.Arrived = "key-"+id, t0.Add(-10*24*time.Hour)
		if _, err := s.Enqueue(ctx, queue.EnqueueParams{Message: m, Body: bytes.NewReader([]byte("x\r\n"))}); err != nil {
			t.Fatal(err)
		}
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMsg)
		v := bytes.Clone(b.Get([]byte("m01")))
		v[len(v)/2] ^= 0x40
		return b.Put([]byte("m01"), v)
	})
	if err != nil {
		t.Fatal(err)
	}
	var ce *CorruptError
	if _, err := s.Get(ctx, "m01"); !errors.As(err, &ce) {
		t.Fatalf("Get of a damaged record = %v, want *CorruptError", err)
	}
	ls, err := s.Claim(ctx, queue.ClaimParams{Now: t0, LeaseFor: time.Minute, Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range ls {
		if l.Message.ID != "m02" {
			t.Fatalf("Claim returned a lease on %s", l.Message.ID)
		}
	}
	if len(ls) == 0 {
		t.Fatal("Claim returned nothing; m02 is due")
	}
	if _, err := s.Get(ctx, "m01"); !errors.Is(err, queue.ErrNotFound) {
		t.Fatalf("Get after quarantine = %v, want ErrNotFound", err)
	}
	var kept []byte
	s.view(func(b *btx) error { kept = bytes.Clone(b.corrupt.Get([]byte("msg/m01"))); return nil })
	if kept == nil {
		t.Fatal("damaged record not kept in the corrupt bucket")
	}
	// Later claims, through the due index and the arrival index, find
	// nothing dangling.
	p := queue.ClaimParams{Now: t0.Add(time.Hour), LeaseFor: time.Minute, Limit: 10, ExpireArrivedBefore: t0}
	if ls, err := s.Claim(ctx, p); err != nil || len(ls) != 2 {
		t.Fatalf("later Claim = %d leases, %v; want m02's two", len(ls), err)
	}
	var arr int
	s.view(func(b *btx) error { arr = b.arr.Stats().KeyN; return nil })
	if arr != 1 {
		t.Fatalf("arrival index has %d entries, want only m02's", arr)
	}
	// The quarantined message's idempotency key is free again.
	m := testMsg("m03", t0, "a.example")
	m.IdempotencyKey = "key-m01"
	if id, err := s.Enqueue(ctx, queue.EnqueueParams{Message: m, Body: bytes.NewReader(nil)}); err != nil || id != "m03" {
		t.Fatalf("Enqueue with the quarantined message's key = %q, %v; want m03", id, err)
	}
}

func TestInvalidArguments(t *testing.T) {
	s := openT(t, t.TempDir(), nil)
	ctx := t.Context()
	body := func() io.Reader { return bytes.NewReader([]byte("x\r\n")) }
	final := testMsg("m09", t0, "a.example")
	final.Recipients[0].State = queue.Delivered
	var ie *InvalidError
	for name, m := range map[string]*queue.Message{
		"nil":           nil,
		"empty ID":      testMsg("", t0, "a.example"),
		"no recipients": testMsg("m01", t0),
		"no destination": func() *queue.Message {
			m := testMsg("m02", t0, "a.example")
			m.Recipients[0].Destination = ""
			return m
		}(),
		"final recipient": final,
	} {
		if _, err := s.Enqueue(ctx, queue.EnqueueParams{Message: m, Body: body()}); !errors.As(err, &ie) {
			t.Errorf("Enqueue(%s) = %v, want *InvalidError", name, err)
		}
	}
	if _, err := s.Enqueue(ctx, queue.EnqueueParams{Message: testMsg("m03", t0, "a.example"), Body: body()}); err != nil {
		t.Fatal(err)
	}
	var de *DuplicateIDError
	if _, err := s.Enqueue(ctx, queue.EnqueueParams{Message: testMsg("m03", t0, "b.example"), Body: body()}); !errors.As(err, &de) {
		t.Fatalf("Enqueue of a duplicate ID = %v, want *DuplicateIDError", err)
	}
	if _, err := s.Claim(ctx, queue.ClaimParams{Now: t0}); !errors.As(err, &ie) {
		t.Fatalf("Claim without LeaseFor = %v, want *InvalidError", err)
	}
	ls, err := s.Claim(ctx, queue.ClaimParams{Now: t0, LeaseFor: time.Minute})
	if err != nil || len(ls) != 1 {
		t.Fatalf("Claim = %d, %v", len(ls), err)
	}
	bad := []queue.RecipientUpdate{{Address: ls[0].Recipients[0], State: queue.Held}}
	if err := s.Finish(ctx, queue.FinishParams{Lease: ls[0], Now: t0, Recipients: bad}); !errors.As(err, &ie) {
		t.Fatalf("Finish to Held = %v, want *InvalidError", err)
	}
	stranger := []queue.RecipientUpdate{{Address: "other@a.example", State: queue.Delivered}}
	if err := s.Finish(ctx, queue.FinishParams{Lease: ls[0], Now: t0, Recipients: stranger}); !errors.As(err, &ie) {
		t.Fatalf("Finish of a recipient outside the lease = %v, want *InvalidError", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.Enqueue(cctx, queue.EnqueueParams{Message: testMsg("m04", t0, "a.example"), Body: body()}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Enqueue with a cancelled context = %v", err)
	}
}

// TestClaimCostIndependentOfBacklog checks the index design by counting the
// index entries Claim reads: 20,000 messages waiting for later and 10,000
// due at a destination in backoff must not be read to find 100 due ones.
func TestClaimCostIndependentOfBacklog(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds a 30,000-message queue")
	}
	s := openT(t, t.TempDir(), nil)
	ctx := t.Context()
	var msgs []*queue.Message
	for i := range 20000 {
		msgs = append(msgs, testMsg(fmt.Sprintf("later-%06d", i), t0.Add(24*time.Hour), fmt.Sprintf("d%03d.example", i%500)))
	}
	for i := range 10000 {
		msgs = append(msgs, testMsg(fmt.Sprintf("down-%06d", i), t0.Add(-time.Hour), "down.example"))
	}
	for i := range 100 {
		msgs = append(msgs, testMsg(fmt.Sprintf("due-%06d", i), t0.Add(-time.Minute), fmt.Sprintf("d%03d.example", i)))
	}
	bulkLoad(t, s, msgs)
	err := s.write(func(b *btx) (bool, error) {
		return true, b.setStatus("down.example", queue.DestinationStatus{NextAllowed: t0.Add(time.Hour), ConsecutiveFailures: 5})
	})
	if err != nil {
		t.Fatal(err)
	}
	before := s.claimScans.Load()
	ls, err := s.Claim(ctx, queue.ClaimParams{Now: t0, LeaseFor: time.Minute, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	scans := s.claimScans.Load() - before
	if len(ls) != 100 {
		t.Fatalf("claimed %d, want the 100 due", len(ls))
	}
	// Per lease: one ddue entry for its destination, the rdue entry and the
	// look past it; plus the first ddue entry beyond now.
	if scans > 3*100+10 {
		t.Fatalf("Claim read %d index entries for 100 leases", scans)
	}
	t.Logf("Claim of 100 leases read %d index entries with 30,000 messages queued", scans)
	if at, ok, _ := s.NextDue(ctx, t0); !ok || !at.Equal(t0.Add(time.Minute)) {
		t.Fatalf("NextDue = %s, %t; want the end of the leases", at, ok)
	}
}
