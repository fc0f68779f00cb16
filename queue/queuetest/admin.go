package queuetest

import (
	"errors"
	"time"

	"github.com/outboundmail/outbound/queue"
)

func holdTests() []subtest {
	return []subtest{
		{"FreezesWaitingRecipients", testHoldFreezes},
		{"EndsLease", testHoldEndsLease},
		{"Release", testHoldRelease},
		{"ReleaseWithoutHold", testReleaseNotHeld},
	}
}

func retryTests() []subtest {
	return []subtest{
		{"FlushesDeferred", testRetryFlushes},
		{"LeavesHeldAndFinal", testRetryLeavesHeldAndFinal},
	}
}

func deleteTests() []subtest {
	return []subtest{
		{"RemovesEverything", testDeleteRemoves},
	}
}

// mixed enqueues m01 with a delivered recipient a@one, a deferred b@two (due
// t0+2h, one attempt) and a queued c@three (due t0+3h, never attempted).
func mixed(e *env) {
	e.add(msg("m01",
		rcpt("a@one.example", "one.example"),
		rcpt("b@two.example", "two.example"),
		at(rcpt("c@three.example", "three.example"), t0.Add(3*time.Hour)),
	))
	for _, l := range e.claim(t0, 10) {
		if l.Destination == "one.example" {
			e.finishAll(l, t0, queue.Delivered, time.Time{})
		} else {
			e.finishAll(l, t0, queue.Deferred, t0.Add(2*time.Hour))
		}
	}
}

func testHoldFreezes(e *env) {
	mixed(e)
	before := e.get("m01")
	if err := e.s.Hold(e.ctx, "m01"); err != nil {
		e.t.Fatal(err)
	}
	want := before
	want.Recipients[1].State = queue.Held
	want.Recipients[2].State = queue.Held
	equalMessage(e.t, "Get after Hold", e.get("m01"), want)
	e.noClaim(t0.Add(1000 * time.Hour))
	if _, ok := e.nextDue(t0); ok {
		e.t.Fatal("NextDue reports a held message as waiting")
	}
	// Holding again changes nothing.
	if err := e.s.Hold(e.ctx, "m01"); err != nil {
		e.t.Fatal(err)
	}
	equalMessage(e.t, "Get after a second Hold", e.get("m01"), want)
}

func testHoldEndsLease(e *env) {
	e.add(msg("m01", rcpt("a@one.example", "one.example")))
	l := e.claimOne(t0)
	if err := e.s.Hold(e.ctx, "m01"); err != nil {
		e.t.Fatal(err)
	}
	e.wantLost(deferredUpdate(l, t0, t0.Add(time.Hour)), "a lease on a message held since")
	if r := recipient(e.t, e.get("m01"), "a@one.example"); r.State != queue.Held {
		e.t.Fatalf("after Hold and a stale Finish: %+v", r)
	}
	// Release does not revive the old lease.
	if err := e.s.Release(e.ctx, "m01", t0.Add(time.Minute)); err != nil {
		e.t.Fatal(err)
	}
	e.wantLost(deferredUpdate(l, t0, t0.Add(time.Hour)), "a lease on a message held and released since")
}

func testHoldRelease(e *env) {
	mixed(e)
	if err := e.s.Hold(e.ctx, "m01"); err != nil {
		e.t.Fatal(err)
	}
	now := t0.Add(5 * time.Hour)
	if err := e.s.Release(e.ctx, "m01", now); err != nil {
		e.t.Fatal(err)
	}
	m := e.get("m01")
	if r := recipient(e.t, m, "a@one.example"); r.State != queue.Delivered {
		e.t.Fatalf("Release changed a final recipient: %+v", r)
	}
	b, c := recipient(e.t, m, "b@two.example"), recipient(e.t, m, "c@three.example")
	if b.State != queue.Deferred || c.State != queue.Queued {
		e.t.Fatalf("after Release: b %v (want deferred: attempted), c %v (want queued: never attempted)", b.State, c.State)
	}
	sameTime(e.t, "b.NextAttempt", b.NextAttempt, now)
	sameTime(e.t, "c.NextAttempt", c.NextAttempt, now)
	if b.Attempts != 1 || c.Attempts != 0 {
		e.t.Fatalf("Release changed attempts: b %d, c %d", b.Attempts, c.Attempts)
	}
	e.noClaim(now.Add(-ms))
	e.wantKeys(e.claim(now, 10), "{m01@three.example[c@three.example] m01@two.example[b@two.example]}")
}

func testReleaseNotHeld(e *env) {
	mixed(e)
	before := e.get("m01")
	if err := e.s.Release(e.ctx, "m01", t0.Add(time.Minute)); err != nil {
		e.t.Fatal(err)
	}
	equalMessage(e.t, "Release of a message that is not held", e.get("m01"), before)
}

func testRetryFlushes(e *env) {
	e.add(msg("m01", rcpt("a@down.example", "down.example")))
	l := e.claimOne(t0)
	p := deferredUpdate(l, t0, t0.Add(2*time.Hour))
	p.Destination = &queue.DestinationStatus{Name: "down.example", NextAllowed: t0.Add(2 * time.Hour), ConsecutiveFailures: 1, FirstFailure: t0, LastFailure: t0}
	e.finish(p)
	now := t0.Add(20 * time.Minute)
	e.noClaim(now)
	if err := e.s.Retry(e.ctx, "m01", now); err != nil {
		e.t.Fatal(err)
	}
	r := recipient(e.t, e.get("m01"), "a@down.example")
	sameTime(e.t, "NextAttempt after Retry", r.NextAttempt, now)
	if r.State != queue.Deferred || r.Attempts != 1 {
		e.t.Fatalf("Retry changed more than the time: %+v", r)
	}
	if d := e.destination("down.example"); d.NextAllowed.After(now) {
		e.t.Fatalf("Retry left the destination in backoff: %+v", *d)
	}
	e.wantKeys(e.claim(now, 10), "{m01@down.example[a@down.example]}")
}

func testRetryLeavesHeldAndFinal(e *env) {
	mixed(e)
	e.add(msg("m02", at(rcpt("d@four.example", "four.example"), t0.Add(time.Hour))))
	if err := e.s.Hold(e.ctx, "m01"); err != nil {
		e.t.Fatal(err)
	}
	before := e.get("m01")
	if err := e.s.Retry(e.ctx, "m01", t0.Add(time.Minute)); err != nil {
		e.t.Fatal(err)
	}
	equalMessage(e.t, "Retry of a held message", e.get("m01"), before)
	// Retry of one message leaves the others alone.
	sameTime(e.t, "m02 NextAttempt", e.get("m02").Recipients[0].NextAttempt, t0.Add(time.Hour))
	e.noClaim(t0.Add(time.Minute))
}

func testDeleteRemoves(e *env) {
	e.enqueue(msg("m01", rcpt("a@one.example", "one.example"), rcpt("b@two.example", "two.example")), bodyFor("m01", 200<<10))
	e.add(msg("m02", at(rcpt("c@one.example", "one.example"), t0.Add(time.Hour))))
	ls := e.claim(t0, 10)
	if len(ls) != 2 {
		e.t.Fatalf("claimed %s", leaseKeys(ls))
	}
	if err := e.s.Delete(e.ctx, "m01"); err != nil {
		e.t.Fatal(err)
	}
	e.gone("m01")
	e.wantLost(deferredUpdate(ls[0], t0, t0.Add(time.Hour)), "a lease on a deleted message")
	e.noClaim(t0.Add(leaseFor))
	if err := e.s.Delete(e.ctx, "m01"); !errors.Is(err, queue.ErrNotFound) {
		e.t.Fatalf("second Delete = %v, want ErrNotFound", err)
	}
	ms, err := e.s.List(e.ctx, queue.ListParams{})
	if err != nil || len(ms) != 1 || ms[0].ID != "m02" {
		e.t.Fatalf("List after Delete = %d messages, %v; want only m02", len(ms), err)
	}
	if at, ok := e.nextDue(t0); !ok || !at.Equal(t0.Add(time.Hour)) {
		e.t.Fatalf("NextDue after Delete = %s, %t; want m02's time", at, ok)
	}
}
