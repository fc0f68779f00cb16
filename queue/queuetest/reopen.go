package queuetest

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/outboundmail/outbound/queue"
)

type reopenTest struct {
	name string
	fn   func(t *testing.T, r *reopener)
}

func reopenTests() []reopenTest {
	return []reopenTest{
		{"KeepsEverything", testReopenKeepsEverything},
		{"KeepsDeferral", testReopenKeepsDeferral},
		{"KeepsLeases", testReopenKeepsLeases},
		{"TokensStayUnique", testReopenTokensUnique},
		{"KeepsIdempotencyKeys", testReopenKeepsKeys},
	}
}

// reopener holds the store currently open on one storage.
type reopener struct {
	t    *testing.T
	open Opener
	e    *env
}

func newReopener(t *testing.T, open Opener) *reopener {
	r := &reopener{t: t, open: open}
	r.openStore()
	t.Cleanup(func() {
		if r.e != nil {
			r.e.s.Close()
		}
	})
	return r
}

func (r *reopener) openStore() {
	r.t.Helper()
	s, err := r.open()
	if err != nil {
		r.t.Fatalf("open: %v", err)
	}
	r.e = newEnv(r.t, s)
}

// reopen closes the current store and opens the storage again.
func (r *reopener) reopen() *env {
	r.t.Helper()
	if err := r.e.s.Close(); err != nil {
		r.t.Fatalf("Close: %v", err)
	}
	r.e = nil
	r.openStore()
	return r.e
}

func testReopenKeepsEverything(t *testing.T, r *reopener) {
	e := r.e
	e.enqueue(fullMessage("m01"), []byte("small body\r\n"))
	big := bodyFor("m02", 2<<20)
	e.enqueue(msg("m02", rcpt("x@four.example", "four.example"), at(rcpt("y@five.example", "five.example"), t0.Add(time.Hour))), big)
	e.add(msg("m03", rcpt("z@one.example", "one.example")))
	st := queue.DestinationStatus{Name: "four.example", NextAllowed: t0.Add(45 * time.Minute), ConsecutiveFailures: 3,
		FirstFailure: t0.Add(-2 * time.Hour), LastFailure: t0, LastResult: outcome(queue.Deferred, t0)}
	for _, l := range e.claim(t0, 10) {
		switch l.Destination {
		case "four.example":
			p := deferredUpdate(l, t0, t0.Add(30*time.Minute))
			p.Recipients[0].PossibleDuplicate = true
			p.Destination = &st
			e.finish(p)
		case "one.example":
			if l.Message.ID == "m01" {
				e.finishAll(l, t0, queue.Delivered, time.Time{})
			}
		}
	}
	if err := e.s.Hold(e.ctx, "m03"); err != nil {
		t.Fatal(err)
	}
	want := map[queue.ID]*queue.Message{}
	for _, id := range []queue.ID{"m01", "m02", "m03"} {
		want[id] = e.get(id)
	}
	due, _ := e.nextDue(t0)

	e = r.reopen()
	for id, m := range want {
		equalMessage(t, "Get("+string(id)+") after reopen", e.get(id), m)
	}
	if got := e.body("m01"); string(got) != "small body\r\n" {
		t.Fatalf("body of m01 after reopen = %q", got)
	}
	if !bytes.Equal(e.body("m02"), big) {
		t.Fatal("body of m02 differs after reopen")
	}
	equalDest(t, "Destination after reopen", e.destination("four.example"), &st)
	got, ok := e.nextDue(t0)
	if !ok {
		t.Fatal("NextDue after reopen reports nothing")
	}
	sameTime(t, "NextDue after reopen", got, due)
	if s := e.list(queue.ListParams{States: []queue.RecipientState{queue.Held}}); s != "m03" {
		t.Fatalf("held after reopen = %q", s)
	}
}

func testReopenKeepsDeferral(t *testing.T, r *reopener) {
	e := r.e
	e.add(msg("m01", rcpt("a@one.example", "one.example")))
	e.add(msg("m02", rcpt("b@two.example", "two.example")))
	for _, l := range e.claim(t0, 10) {
		if l.Message.ID == "m01" {
			e.finish(deferredUpdate(l, t0, t0.Add(time.Hour)))
		}
		// m02's worker "crashes": its claim-time NextAttempt must hold.
	}
	e = r.reopen()
	e.noClaim(t0)
	e.noClaim(t0.Add(leaseFor - ms))
	ls := e.claim(t0.Add(leaseFor), 10)
	e.wantKeys(ls, "{m02@two.example[b@two.example]}")
	e.finishAll(ls[0], t0.Add(leaseFor), queue.Delivered, time.Time{})
	e = r.reopen()
	e.noClaim(t0.Add(time.Hour - ms))
	e.wantKeys(e.claim(t0.Add(time.Hour), 10), "{m01@one.example[a@one.example]}")
}

func testReopenKeepsLeases(t *testing.T, r *reopener) {
	e := r.e
	e.add(msg("m01", rcpt("a@one.example", "one.example")))
	l := e.claimOne(t0)
	e = r.reopen()
	e.noClaim(t0)
	// A worker that outlived the store handle (another process, for a
	// shared store) can still report its result.
	e.finish(deferredUpdate(l, t0.Add(time.Minute), t0.Add(2*time.Hour)))
	sameTime(t, "NextAttempt", recipient(t, e.get("m01"), "a@one.example").NextAttempt, t0.Add(2*time.Hour))
}

func testReopenTokensUnique(t *testing.T, r *reopener) {
	e := r.e
	e.add(msg("m01", rcpt("a@one.example", "one.example")))
	l1 := e.claimOne(t0)
	e = r.reopen()
	l2 := e.claimOne(l1.Until)
	if l2.Token == l1.Token {
		t.Fatalf("token %d issued again after reopen", l1.Token)
	}
	if err := e.s.Finish(e.ctx, deferredUpdate(l1, l1.Until, l1.Until.Add(time.Hour))); !errors.Is(err, queue.ErrLeaseLost) {
		t.Fatalf("Finish of a lease from before the reopen, claimed again since = %v, want ErrLeaseLost", err)
	}
	e.finish(deferredUpdate(l2, l2.Until, l2.Until.Add(time.Hour)))
}

func testReopenKeepsKeys(t *testing.T, r *reopener) {
	e := r.e
	m := msg("m01", rcpt("a@one.example", "one.example"))
	m.IdempotencyKey = "k"
	e.enqueue(m, []byte("one\r\n"))
	e = r.reopen()
	m2 := msg("m02", rcpt("a@one.example", "one.example"))
	m2.IdempotencyKey = "k"
	if id := e.enqueue(m2, []byte("two\r\n")); id != "m01" {
		t.Fatalf("Enqueue with a key from before the reopen returned %q, want m01", id)
	}
	e.gone("m02")
}
