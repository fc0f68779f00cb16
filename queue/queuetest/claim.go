package queuetest

import (
	"fmt"
	"time"

	"github.com/outboundmail/outbound/queue"
)

func claimTests() []subtest {
	return []subtest{
		{"Empty", testClaimEmpty},
		{"SkipsNotDue", testClaimSkipsNotDue},
		{"SkipsLeased", testClaimSkipsLeased},
		{"AfterLeaseExpires", testClaimAfterLeaseExpires},
		{"SkipsHeld", testClaimSkipsHeld},
		{"SkipsFinal", testClaimSkipsFinal},
		{"SkipsDestinationInBackoff", testClaimSkipsDestinationInBackoff},
		{"GroupsByDestination", testClaimGroupsByDestination},
		{"PartialGroup", testClaimPartialGroup},
		{"Limit", testClaimLimit},
		{"OldestFirst", testClaimOldestFirst},
		{"WritesAttempt", testClaimWritesAttempt},
		{"ExpireArrivedBefore", testClaimExpireArrivedBefore},
		{"ExcludesDestinations", testClaimExcludesDestinations},
		{"ExcludedProbeNotStarted", testClaimExcludedProbeNotStarted},
		{"ExcludedStillExpire", testClaimExcludedStillExpire},
		{"OneMessage", testClaimOneMessage},
		{"OneMessageProbe", testClaimOneMessageProbe},
	}
}

func testClaimEmpty(e *env) {
	e.noClaim(t0)
	if _, ok := e.nextDue(t0); ok {
		e.t.Fatal("NextDue on an empty store reports work")
	}
}

func testClaimSkipsNotDue(e *env) {
	e.add(msg("m01", at(rcpt("a@one.example", "one.example"), t0.Add(time.Hour))))
	e.noClaim(t0)
	e.noClaim(t0.Add(time.Hour - ms))
	// Due means "NextAttempt is not after Now": the boundary itself is due.
	l := e.claimOne(t0.Add(time.Hour))
	e.wantKeys([]*queue.Lease{l}, "{m01@one.example[a@one.example]}")
}

func testClaimSkipsLeased(e *env) {
	e.add(msg("m01", rcpt("a@one.example", "one.example")))
	e.claimOne(t0)
	e.noClaim(t0)
	e.noClaim(t0.Add(leaseFor - ms))
}

func testClaimAfterLeaseExpires(e *env) {
	e.add(msg("m01", rcpt("a@one.example", "one.example")))
	l1 := e.claimOne(t0)
	sameTime(e.t, "Lease.Until", l1.Until, t0.Add(leaseFor))
	e.noClaim(l1.Until.Add(-ms))
	// The worker died: the recipient is due again exactly when the lease
	// (and the claim-time NextAttempt) ends, never before.
	l2 := e.claimOne(l1.Until)
	if l2.Token == l1.Token {
		e.t.Fatalf("re-claim reused token %d", l1.Token)
	}
	r := recipient(e.t, l2.Message, "a@one.example")
	if r.Attempts != 2 {
		e.t.Fatalf("Attempts after two claims = %d, want 2", r.Attempts)
	}
	sameTime(e.t, "LastAttempt", r.LastAttempt, l1.Until)
	sameTime(e.t, "NextAttempt", r.NextAttempt, l1.Until.Add(leaseFor))
	sameTime(e.t, "second Lease.Until", l2.Until, l1.Until.Add(leaseFor))
}

func testClaimSkipsHeld(e *env) {
	e.add(msg("m01", rcpt("a@one.example", "one.example")))
	e.add(msg("m02", rcpt("b@one.example", "one.example")))
	if err := e.s.Hold(e.ctx, "m01"); err != nil {
		e.t.Fatal(err)
	}
	ls := e.claim(t0.Add(1000*time.Hour), 10)
	e.wantKeys(ls, "{m02@one.example[b@one.example]}")
}

func testClaimSkipsFinal(e *env) {
	e.add(msg("m01", rcpt("a@one.example", "one.example"), rcpt("b@two.example", "two.example")))
	ls := e.claim(t0, 10)
	e.wantKeys(ls, "{m01@one.example[a@one.example] m01@two.example[b@two.example]}")
	for _, l := range ls {
		if l.Destination == "one.example" {
			e.finishAll(l, t0, queue.Delivered, time.Time{})
		} else {
			e.finishAll(l, t0, queue.Deferred, t0.Add(time.Hour))
		}
	}
	e.noClaim(t0.Add(leaseFor))
	e.noClaim(t0.Add(time.Hour - ms))
	ls = e.claim(t0.Add(time.Hour), 10)
	e.wantKeys(ls, "{m01@two.example[b@two.example]}")
}

func testClaimSkipsDestinationInBackoff(e *env) {
	e.setDestination(queue.DestinationStatus{Name: "down.example", NextAllowed: t0.Add(time.Hour)})
	e.add(msg("m01", rcpt("a@down.example", "down.example")))
	e.add(msg("m02", rcpt("b@up.example", "up.example")))
	l := e.claimOne(t0)
	e.wantKeys([]*queue.Lease{l}, "{m02@up.example[b@up.example]}")
	e.finishAll(l, t0, queue.Delivered, time.Time{})
	e.noClaim(t0.Add(time.Hour - ms))
	l = e.claimOne(t0.Add(time.Hour))
	e.wantKeys([]*queue.Lease{l}, "{m01@down.example[a@down.example]}")
}

func testClaimGroupsByDestination(e *env) {
	e.add(msg("m01",
		rcpt("a@one.example", "one.example"),
		rcpt("b@two.example", "two.example"),
		rcpt("c@one.example", "one.example"),
		at(rcpt("d@two.example", "two.example"), t0.Add(time.Hour)),
	))
	ls := e.claimParams(queue.ClaimParams{Now: t0, Limit: 10, Owner: "w7"})
	e.wantKeys(ls, "{m01@one.example[a@one.example,c@one.example] m01@two.example[b@two.example]}")
	if ls[0].Token == ls[1].Token {
		e.t.Fatalf("two leases of one claim share token %d", ls[0].Token)
	}
	for _, l := range ls {
		if l.Owner != "w7" {
			e.t.Errorf("Lease.Owner = %q, want w7", l.Owner)
		}
		sameTime(e.t, "Lease.Until", l.Until, t0.Add(leaseFor))
		if len(l.Message.Recipients) != 4 {
			e.t.Fatalf("Lease.Message has %d recipients, want all 4", len(l.Message.Recipients))
		}
	}
}

func testClaimPartialGroup(e *env) {
	e.add(msg("m01", rcpt("a@one.example", "one.example"), at(rcpt("b@one.example", "one.example"), t0.Add(time.Hour))))
	long := queue.ClaimParams{Now: t0, Limit: 10, LeaseFor: 2 * time.Hour}
	ls := e.claimParams(long)
	e.wantKeys(ls, "{m01@one.example[a@one.example]}")
	l1 := ls[0]
	// b becomes due while a is still leased: a second lease on the same
	// message and destination covers b alone.
	long.Now = t0.Add(time.Hour)
	ls = e.claimParams(long)
	e.wantKeys(ls, "{m01@one.example[b@one.example]}")
	l2 := ls[0]
	if l1.Token == l2.Token {
		e.t.Fatal("both leases have the same token")
	}
	e.finishAll(l2, long.Now, queue.Delivered, time.Time{})
	e.finishAll(l1, long.Now, queue.Delivered, time.Time{})
	e.gone("m01")
}

func testClaimLimit(e *env) {
	for i := 1; i <= 5; i++ {
		e.add(msg(fmt.Sprintf("m%02d", i), at(rcpt("a@one.example", "one.example"), t0.Add(time.Duration(-i)*time.Minute))))
	}
	e.wantKeys(e.claim(t0, 2), "{m04@one.example[a@one.example] m05@one.example[a@one.example]}")
	// Limit 0 means 1.
	e.wantKeys(e.claim(t0, 0), "{m03@one.example[a@one.example]}")
	e.wantKeys(e.claim(t0, 10), "{m01@one.example[a@one.example] m02@one.example[a@one.example]}")
	e.noClaim(t0)
}

func testClaimOldestFirst(e *env) {
	e.add(msg("m01", at(rcpt("a@one.example", "one.example"), t0.Add(-1*time.Minute))))
	e.add(msg("m02", at(rcpt("b@two.example", "two.example"), t0.Add(-3*time.Minute))))
	e.add(msg("m03", at(rcpt("c@one.example", "one.example"), t0.Add(-2*time.Minute))))
	e.add(msg("m04", at(rcpt("d@three.example", "three.example"), t0.Add(-4*time.Minute))))
	// A group's age is that of its oldest due recipient.
	e.add(msg("m05",
		at(rcpt("e@four.example", "four.example"), t0.Add(-90*time.Second)),
		at(rcpt("f@four.example", "four.example"), t0.Add(-150*time.Second)),
	))
	for _, want := range []string{
		"{m04@three.example[d@three.example]}",
		"{m02@two.example[b@two.example]}",
		"{m05@four.example[e@four.example,f@four.example]}",
		"{m03@one.example[c@one.example]}",
		"{m01@one.example[a@one.example]}",
	} {
		e.wantKeys(e.claim(t0, 1), want)
	}
}

func testClaimWritesAttempt(e *env) {
	m := msg("m01", at(rcpt("a@one.example", "one.example"), t0.Add(-time.Hour)), at(rcpt("b@two.example", "two.example"), t0.Add(time.Hour)))
	e.add(m)
	before := e.get("m01")
	now := t0.Add(5 * time.Minute)
	l := e.claimOne(now)

	want := before
	want.Recipients[0].Attempts = 1
	want.Recipients[0].LastAttempt = now
	want.Recipients[0].NextAttempt = now.Add(leaseFor)
	equalMessage(e.t, "Lease.Message", l.Message, want)
	equalMessage(e.t, "Get after Claim", e.get("m01"), want)
	if len(l.Recipients) != 1 || l.Recipients[0] != "a@one.example" || l.Destination != "one.example" {
		e.t.Fatalf("lease = %s", leaseKey(l))
	}
}

func testClaimExpireArrivedBefore(e *env) {
	e.setDestination(queue.DestinationStatus{Name: "down.example", NextAllowed: t0.Add(time.Hour), ConsecutiveFailures: 3, FirstFailure: t0.Add(-6 * 24 * time.Hour)})
	old := msg("m01", rcpt("a@down.example", "down.example"))
	old.Arrived = t0.Add(-6 * 24 * time.Hour)
	young := msg("m02", rcpt("b@down.example", "down.example"))
	young.Arrived = t0.Add(-time.Hour)
	e.add(old)
	e.add(young)
	limit := t0.Add(-5 * 24 * time.Hour)

	e.noClaim(t0)
	ls := e.claimParams(queue.ClaimParams{Now: t0, Limit: 10, ExpireArrivedBefore: limit})
	e.wantKeys(ls, "{m01@down.example[a@down.example]}")
	e.finishAll(ls[0], t0, queue.Expired, time.Time{})
	e.gone("m01")
	ls = e.claimParams(queue.ClaimParams{Now: t0, Limit: 10, ExpireArrivedBefore: limit})
	e.wantKeys(ls, "{}")
}

func testClaimExcludesDestinations(e *env) {
	// The busy destination's backlog is older than the other mail: without
	// the exclusion it would fill the claim.
	for i := 1; i <= 5; i++ {
		e.add(msg(fmt.Sprintf("m%02d", i), at(rcpt(fmt.Sprintf("a%d@busy.example", i), "busy.example"), t0.Add(-time.Hour))))
	}
	e.add(msg("m06", rcpt("b@one.example", "one.example"), rcpt("c@busy.example", "busy.example")))
	e.add(msg("m07", rcpt("d@two.example", "two.example")))
	e.add(msg("m08", rcpt("e@three.example", "three.example")))
	excl := []string{"busy.example", "three.example", "absent.example"}
	ls := e.claimParams(queue.ClaimParams{Now: t0, Limit: 2, ExcludeDestinations: excl})
	e.wantKeys(ls, "{m06@one.example[b@one.example] m07@two.example[d@two.example]}")
	ls = e.claimParams(queue.ClaimParams{Now: t0, Limit: 10, ExcludeDestinations: excl})
	e.wantKeys(ls, "{}")
	// The excluded work is still due, and claimed oldest first once no
	// longer excluded.
	ls = e.claimParams(queue.ClaimParams{Now: t0, Limit: 3, ExcludeDestinations: []string{}})
	e.wantKeys(ls, "{m01@busy.example[a1@busy.example] m02@busy.example[a2@busy.example] m03@busy.example[a3@busy.example]}")
	ls = e.claimParams(queue.ClaimParams{Now: t0, Limit: 10, ExcludeDestinations: []string{"busy.example"}})
	e.wantKeys(ls, "{m08@three.example[e@three.example]}")
	ls = e.claim(t0, 10)
	e.wantKeys(ls, "{m04@busy.example[a4@busy.example] m05@busy.example[a5@busy.example] m06@busy.example[c@busy.example]}")
}

func testClaimExcludedProbeNotStarted(e *env) {
	e.setDestination(failing("flaky.example"))
	addMany(e, 2, "flaky.example")
	now := t0.Add(time.Minute)
	ls := e.claimParams(queue.ClaimParams{Now: now, Limit: 10, ExcludeDestinations: []string{"flaky.example"}})
	e.wantKeys(ls, "{}")
	// No probe was started: the destination may still be contacted now.
	equalDest(e.t, "status after an excluded claim", e.destination("flaky.example"), ptr(failing("flaky.example")))
	if n := countDest(e.claim(now, 10), "flaky.example"); n != 1 {
		e.t.Fatalf("claim without exclusion returned %d leases for the failing destination, want one probe", n)
	}
}

func testClaimExcludedStillExpire(e *env) {
	old := msg("m01", rcpt("a@busy.example", "busy.example"))
	old.Arrived = t0.Add(-6 * 24 * time.Hour)
	e.add(old)
	e.add(msg("m02", rcpt("b@busy.example", "busy.example")))
	// Expiry ignores exclusions as it ignores backoff: the old message is
	// due so that it is expired on time.
	ls := e.claimParams(queue.ClaimParams{Now: t0, Limit: 10, ExpireArrivedBefore: t0.Add(-5 * 24 * time.Hour),
		ExcludeDestinations: []string{"busy.example"}})
	e.wantKeys(ls, "{m01@busy.example[a@busy.example]}")
}

func ptr[T any](v T) *T { return &v }

func testClaimOneMessage(e *env) {
	e.setDestination(queue.DestinationStatus{Name: "down.example", NextAllowed: t0.Add(time.Hour)})
	e.add(msg("m01", at(rcpt("a@one.example", "one.example"), t0.Add(-time.Hour))))
	// b is due before c: Claim orders by NextAttempt only, so with equal
	// times a Limit of 1 could return either.
	e.add(msg("m02",
		at(rcpt("b@one.example", "one.example"), t0.Add(-2*time.Minute)),
		at(rcpt("c@two.example", "two.example"), t0.Add(-time.Minute)),
		rcpt("d@down.example", "down.example"),
		rcpt("e@three.example", "three.example"),
		at(rcpt("f@four.example", "four.example"), t0.Add(time.Minute)),
	))
	only := func(id queue.ID, limit int, excl ...string) []*queue.Lease {
		return e.claimParams(queue.ClaimParams{Now: t0, Limit: limit, Message: id, ExcludeDestinations: excl})
	}
	// Only m02, though m01 is older; not at a destination in backoff,
	// nor an excluded one, nor a recipient not due yet.
	e.wantKeys(only("m02", 1, "three.example"), "{m02@one.example[b@one.example]}")
	e.wantKeys(only("m02", 10, "three.example"), "{m02@two.example[c@two.example]}")
	e.wantKeys(only("m02", 10), "{m02@three.example[e@three.example]}")
	e.wantKeys(only("m02", 10), "{}")
	e.wantKeys(only("m99", 10), "{}") // no such message: nothing, no error
	// The message's expiry overrides the backoff, as without Message.
	ls := e.claimParams(queue.ClaimParams{Now: t0, Limit: 10, Message: "m02", ExpireArrivedBefore: t0.Add(time.Second)})
	e.wantKeys(ls, "{m02@down.example[d@down.example]}")
	e.wantKeys(e.claim(t0, 10), "{m01@one.example[a@one.example]}")
}

func testClaimOneMessageProbe(e *env) {
	e.setDestination(failing("flaky.example"))
	addMany(e, 2, "flaky.example")
	now := t0.Add(time.Minute)
	ls := e.claimParams(queue.ClaimParams{Now: now, Limit: 10, Message: "flak-02"})
	e.wantKeys(ls, "{flak-02@flaky.example[r2@flaky.example]}")
	// It is the destination's probe: nobody else contacts it meanwhile.
	sameTime(e.t, "NextAllowed after the probe", e.destination("flaky.example").NextAllowed, now.Add(leaseFor))
	e.noClaim(now)
}
