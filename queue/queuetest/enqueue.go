package queuetest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/outboundmail/outbound/queue"
)

func enqueueTests() []subtest {
	return []subtest{
		{"RoundTrip", testEnqueueRoundTrip},
		{"NoAliasing", testEnqueueNoAliasing},
		{"BodySizes", testEnqueueBodySizes},
		{"FailingBodyStoresNothing", testEnqueueFailingBody},
		{"IdempotencyKey", testEnqueueIdempotencyKey},
		{"NotFound", testNotFound},
	}
}

// fullMessage returns a message with every field set.
func fullMessage(id string) *queue.Message {
	return &queue.Message{
		ID:   queue.ID(id),
		From: "bounce+x@sender.example",
		Recipients: []queue.Recipient{
			{
				Address: "a@one.example", Destination: "one.example", State: queue.Queued,
				NextAttempt: t0.Add(123456 * time.Microsecond),
				Notify:      []string{"SUCCESS", "FAILURE", "DELAY"}, ORCPT: "rfc822;a@one.example",
			},
			{Address: "b@two.example", Destination: "two.example", State: queue.Queued, NextAttempt: t0.Add(time.Hour), Notify: []string{"NEVER"}},
			{Address: "c@one.example", Destination: "one.example", State: queue.Queued, NextAttempt: t0},
		},
		Arrived:        t0.Add(-time.Hour + 7*time.Microsecond),
		IdempotencyKey: "key-" + id,
		EightBit:       true,
		Return:         "HDRS",
		EnvelopeID:     "envid+2Bx",
		RequireTLS:     true,
	}
}

func testEnqueueRoundTrip(e *env) {
	m := fullMessage("m01")
	body := []byte("From: a\r\nSubject: round trip\r\n\r\n\x00\xff\xfe binary \r\n.\r\n..\r\nend\r\n")
	if id := e.enqueue(m, body); id != "m01" {
		e.t.Fatalf("Enqueue returned %q, want m01", id)
	}
	want := fullMessage("m01")
	want.Size = int64(len(body))
	equalMessage(e.t, "Get after Enqueue", e.get("m01"), want)
	if got := e.body("m01"); !bytes.Equal(got, body) {
		e.t.Fatalf("OpenBody = %q, want %q", got, body)
	}
	// A second message keeps its own body and envelope.
	m2 := msg("m02", rcpt("x@three.example", "three.example"))
	m2.From = ""
	e.enqueue(m2, []byte("second\r\n"))
	if got := e.body("m02"); string(got) != "second\r\n" {
		e.t.Fatalf("OpenBody(m02) = %q", got)
	}
	if got := e.get("m02"); got.From != "" || got.Size != 8 || len(got.Recipients) != 1 {
		e.t.Fatalf("Get(m02) = %s", dump(got))
	}
	equalMessage(e.t, "Get(m01) after another Enqueue", e.get("m01"), want)
}

// testEnqueueNoAliasing checks that the store keeps its own copy: changing
// the caller's message after Enqueue, or a message returned by Get, changes
// nothing stored.
func testEnqueueNoAliasing(e *env) {
	m := fullMessage("m01")
	e.enqueue(m, []byte("body\r\n"))
	m.Recipients[0].Address = "changed@example"
	m.Recipients[0].Notify[0] = "CHANGED"
	m.From = "changed@example"
	got := e.get("m01")
	want := fullMessage("m01")
	want.Size = 6
	equalMessage(e.t, "Get after changing the enqueued message", got, want)
	got.Recipients[1].State = queue.Delivered
	got.Recipients[0].Notify[1] = "CHANGED"
	equalMessage(e.t, "Get after changing a returned message", e.get("m01"), want)
}

func testEnqueueBodySizes(e *env) {
	sizes := []int{0, 1, 2 << 10, 64<<10 - 1, 64<<10 + 1, 1<<20 + 3, 5 << 20}
	for i, n := range sizes {
		id := fmt.Sprintf("m%02d", i)
		body := bodyFor(id, n)
		// A reader that returns short reads exercises the streaming path.
		e.enqueueFrom(msg(id, rcpt("r@size.example", "size.example")), io.MultiReader(bytes.NewReader(body[:n/3]), bytes.NewReader(body[n/3:])))
		if got := e.get(queue.ID(id)).Size; got != int64(n) {
			e.t.Fatalf("Size of %d-octet body = %d", n, got)
		}
	}
	for i, n := range sizes {
		id := fmt.Sprintf("m%02d", i)
		if got := e.body(queue.ID(id)); !bytes.Equal(got, bodyFor(id, n)) {
			e.t.Fatalf("body of %d octets came back as %d octets, different", n, len(got))
		}
	}
}

func testEnqueueFailingBody(e *env) {
	errBody := errors.New("client went away")
	for _, n := range []int{0, 10 << 10, 300 << 10} {
		m := msg("m01", rcpt("a@one.example", "one.example"))
		m.IdempotencyKey = "k1"
		_, err := e.s.Enqueue(e.ctx, queue.EnqueueParams{Message: m, Body: &errReader{n: n, err: errBody}})
		if !errors.Is(err, errBody) {
			e.t.Fatalf("Enqueue with a body failing after %d octets = %v, want an error wrapping the read error", n, err)
		}
		e.gone("m01")
		if ms, err := e.s.List(e.ctx, queue.ListParams{}); err != nil || len(ms) != 0 {
			e.t.Fatalf("List after failed Enqueue = %d messages, %v; want none", len(ms), err)
		}
		if _, ok := e.nextDue(t0); ok {
			e.t.Fatalf("NextDue after failed Enqueue reports work")
		}
		e.noClaim(t0.Add(time.Hour))
	}
	// Neither the ID nor the idempotency key was taken.
	m := msg("m01", rcpt("a@one.example", "one.example"))
	m.IdempotencyKey = "k1"
	if id := e.enqueue(m, []byte("ok\r\n")); id != "m01" {
		e.t.Fatalf("Enqueue after failures returned %q", id)
	}
	if got := e.body("m01"); string(got) != "ok\r\n" {
		e.t.Fatalf("body = %q", got)
	}
}

func testEnqueueIdempotencyKey(e *env) {
	a := msg("m01", rcpt("a@one.example", "one.example"))
	a.IdempotencyKey = "order-17"
	e.enqueue(a, []byte("first\r\n"))

	b := msg("m02", rcpt("b@two.example", "two.example"))
	b.IdempotencyKey = "order-17"
	if id := e.enqueue(b, []byte("second\r\n")); id != "m01" {
		e.t.Fatalf("second Enqueue with the same key returned %q, want m01", id)
	}
	e.gone("m02")
	if got := e.body("m01"); string(got) != "first\r\n" {
		e.t.Fatalf("body of m01 = %q after a duplicate Enqueue", got)
	}
	if got := e.get("m01"); got.Recipients[0].Address != "a@one.example" {
		e.t.Fatalf("m01 changed by a duplicate Enqueue: %s", dump(got))
	}

	c := msg("m03", rcpt("c@one.example", "one.example"))
	c.IdempotencyKey = "order-18"
	if id := e.enqueue(c, []byte("third\r\n")); id != "m03" {
		e.t.Fatalf("Enqueue with another key returned %q", id)
	}

	// The key is only remembered while its message is in the store.
	if err := e.s.Delete(e.ctx, "m01"); err != nil {
		e.t.Fatal(err)
	}
	d := msg("m04", rcpt("d@one.example", "one.example"))
	d.IdempotencyKey = "order-17"
	if id := e.enqueue(d, []byte("fourth\r\n")); id != "m04" {
		e.t.Fatalf("Enqueue with the key of a deleted message returned %q, want m04", id)
	}
	// So is the key of a message that finished.
	ls := e.claim(t0, 10)
	e.wantKeys(ls, "{m03@one.example[c@one.example] m04@one.example[d@one.example]}")
	for _, l := range ls {
		e.finishAll(l, t0, queue.Delivered, time.Time{})
	}
	f := msg("m05", rcpt("f@one.example", "one.example"))
	f.IdempotencyKey = "order-18"
	if id := e.enqueue(f, []byte("fifth\r\n")); id != "m05" {
		e.t.Fatalf("Enqueue with the key of a finished message returned %q, want m05", id)
	}
}

func testNotFound(e *env) {
	e.add(msg("m01", rcpt("a@one.example", "one.example")))
	e.gone("m02")
	for name, err := range map[string]error{
		"Hold":    e.s.Hold(e.ctx, "m02"),
		"Release": e.s.Release(e.ctx, "m02", t0),
		"Retry":   e.s.Retry(e.ctx, "m02", t0),
		"Delete":  e.s.Delete(e.ctx, "m02"),
	} {
		if !errors.Is(err, queue.ErrNotFound) {
			e.t.Errorf("%s of an unknown ID = %v, want ErrNotFound", name, err)
		}
	}
	d := e.destination("never.example")
	if !d.NextAllowed.IsZero() || d.ConsecutiveFailures != 0 || !d.FirstFailure.IsZero() || d.LastResult != nil {
		e.t.Fatalf("Destination of an unknown name = %+v, want the zero status", *d)
	}
}
