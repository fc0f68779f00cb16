package queuetest

import (
	"fmt"
	"time"

	"github.com/outboundmail/outbound/queue"
)

func probeTests() []subtest {
	return []subtest{
		{"OneLeaseForFailingDestination", testProbeOneLease},
		{"HealthyDestinationNotLimited", testProbeHealthyNotLimited},
		{"SuccessOpensDestination", testProbeSuccessOpens},
	}
}

// failing is the status of a destination whose last two attempts failed and
// which may be contacted again from t0.
func failing(name string) queue.DestinationStatus {
	return queue.DestinationStatus{
		Name:                name,
		NextAllowed:         t0,
		ConsecutiveFailures: 2,
		FirstFailure:        t0.Add(-time.Hour),
		LastFailure:         t0.Add(-30 * time.Minute),
		LastResult:          outcome(queue.Deferred, t0.Add(-30*time.Minute)),
	}
}

func addMany(e *env, n int, dest string) {
	for i := 1; i <= n; i++ {
		e.add(msg(fmt.Sprintf("%s-%02d", dest[:4], i), rcpt(fmt.Sprintf("r%d@%s", i, dest), dest)))
	}
}

func countDest(ls []*queue.Lease, dest string) int {
	n := 0
	for _, l := range ls {
		if l.Destination == dest {
			n++
		}
	}
	return n
}

func testProbeOneLease(e *env) {
	e.setDestination(failing("flaky.example"))
	addMany(e, 3, "flaky.example")
	addMany(e, 2, "good.example")

	now := t0.Add(time.Minute)
	ls := e.claim(now, 10)
	if n := countDest(ls, "flaky.example"); n != 1 {
		e.t.Fatalf("claim returned %d leases for a failing destination, want one probe: %s", n, leaseKeys(ls))
	}
	if n := countDest(ls, "good.example"); n != 2 {
		e.t.Fatalf("claim returned %d leases for a healthy destination, want 2: %s", n, leaseKeys(ls))
	}
	for _, l := range ls {
		if l.Destination == "good.example" {
			e.finishAll(l, now, queue.Delivered, time.Time{})
		}
	}
	// The probe holds the destination: nobody else contacts it until the
	// probe finishes or its lease ends.
	sameTime(e.t, "NextAllowed after probe", e.destination("flaky.example").NextAllowed, now.Add(leaseFor))
	if d := e.destination("flaky.example"); d.ConsecutiveFailures != 2 {
		e.t.Fatalf("ConsecutiveFailures changed by Claim: %+v", *d)
	}
	e.noClaim(now)
	e.noClaim(now.Add(leaseFor - ms))
	if at, ok := e.nextDue(now); !ok || !at.Equal(now.Add(leaseFor)) {
		e.t.Fatalf("NextDue = %s, %t; want the end of the probe", at, ok)
	}

	// The prober died. At the end of its lease there is again exactly one
	// probe, though all three messages are now due.
	ls = e.claim(now.Add(leaseFor), 10)
	if n := countDest(ls, "flaky.example"); n != 1 || len(ls) != 1 {
		e.t.Fatalf("second probe: %s, want one lease", leaseKeys(ls))
	}
}

func testProbeHealthyNotLimited(e *env) {
	e.setDestination(queue.DestinationStatus{Name: "good.example", LastResult: outcome(queue.Delivered, t0.Add(-time.Hour))})
	addMany(e, 3, "good.example")
	ls := e.claim(t0, 10)
	if n := countDest(ls, "good.example"); n != 3 {
		e.t.Fatalf("healthy destination: %s, want 3 leases", leaseKeys(ls))
	}
}

func testProbeSuccessOpens(e *env) {
	e.setDestination(failing("flaky.example"))
	addMany(e, 3, "flaky.example")
	l := e.claimOne(t0)
	ok := queue.DestinationStatus{Name: "flaky.example", LastResult: outcome(queue.Delivered, t0.Add(time.Minute))}
	up := queue.RecipientUpdate{Address: l.Recipients[0], State: queue.Delivered, Result: outcome(queue.Delivered, t0.Add(time.Minute))}
	e.finish(queue.FinishParams{Lease: l, Now: t0.Add(time.Minute), Recipients: []queue.RecipientUpdate{up}, Destination: &ok})
	equalDest(e.t, "Destination after successful probe", e.destination("flaky.example"), &ok)
	ls := e.claim(t0.Add(time.Minute), 10)
	if n := countDest(ls, "flaky.example"); n != 2 {
		e.t.Fatalf("after a successful probe: %s, want the 2 remaining messages", leaseKeys(ls))
	}
}
