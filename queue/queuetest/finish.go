package queuetest

import (
	"bytes"
	"errors"
	"time"

	"github.com/outboundmail/outbound/queue"
)

func finishTests() []subtest {
	return []subtest{
		{"Deferred", testFinishDeferred},
		{"DeliveredAndDeferred", testFinishDeliveredAndDeferred},
		{"AllFinalRemovesMessage", testFinishAllFinalRemoves},
		{"UnnamedRecipientsKeepClaim", testFinishUnnamedKeepClaim},
		{"FlagsNeverCleared", testFinishFlagsSticky},
		{"StaleToken", testFinishStaleToken},
		{"ReclaimedLeaseLost", testFinishReclaimed},
		{"ExpiredButNotReclaimed", testFinishExpiredNotReclaimed},
		{"DestinationStatus", testFinishDestinationStatus},
		{"OtherDestinations", testFinishOtherDestinations},
		{"Notifications", testFinishNotifications},
		{"FailingNotificationIsAtomic", testFinishNotificationAtomic},
	}
}

func testFinishDeferred(e *env) {
	e.add(msg("m01", rcpt("a@one.example", "one.example")))
	l := e.claimOne(t0)
	res := outcome(queue.Deferred, t0.Add(time.Minute))
	e.finish(queue.FinishParams{Lease: l, Now: t0.Add(time.Minute), Recipients: []queue.RecipientUpdate{
		{Address: "a@one.example", State: queue.Deferred, NextAttempt: t0.Add(time.Hour), Result: res},
	}})
	r := recipient(e.t, e.get("m01"), "a@one.example")
	if r.State != queue.Deferred || r.Attempts != 1 {
		e.t.Fatalf("after Finish(Deferred): %+v", r)
	}
	sameTime(e.t, "NextAttempt", r.NextAttempt, t0.Add(time.Hour))
	sameTime(e.t, "LastAttempt", r.LastAttempt, t0)
	equalMessage(e.t, "LastResult", &queue.Message{Recipients: []queue.Recipient{{LastResult: r.LastResult}}},
		&queue.Message{Recipients: []queue.Recipient{{LastResult: res}}})
	// The deferral, not the (longer) lease, decides: never earlier, exactly on time.
	e.noClaim(t0.Add(time.Hour - ms))
	l2 := e.claimOne(t0.Add(time.Hour))
	if r := recipient(e.t, l2.Message, "a@one.example"); r.Attempts != 2 || r.State != queue.Deferred {
		e.t.Fatalf("second claim: %+v", r)
	}
}

func testFinishDeliveredAndDeferred(e *env) {
	e.add(msg("m01", rcpt("a@one.example", "one.example"), rcpt("b@one.example", "one.example")))
	l := e.claimOne(t0)
	e.finish(queue.FinishParams{Lease: l, Now: t0, Recipients: []queue.RecipientUpdate{
		{Address: "a@one.example", State: queue.Delivered, Result: outcome(queue.Delivered, t0)},
		{Address: "b@one.example", State: queue.Deferred, NextAttempt: t0.Add(time.Hour), Result: outcome(queue.Deferred, t0)},
	}})
	m := e.get("m01")
	if r := recipient(e.t, m, "a@one.example"); r.State != queue.Delivered || r.LastResult == nil || r.LastResult.Reply.Code != 250 {
		e.t.Fatalf("a after Finish: %+v", r)
	}
	l2 := e.claimOne(t0.Add(time.Hour))
	e.wantKeys([]*queue.Lease{l2}, "{m01@one.example[b@one.example]}")
}

func testFinishAllFinalRemoves(e *env) {
	e.add(msg("m01", rcpt("a@one.example", "one.example"), rcpt("b@two.example", "two.example"), rcpt("c@two.example", "two.example")))
	e.enqueue(msg("m02", rcpt("d@one.example", "one.example")), bodyFor("m02", 300<<10))
	ls := e.claim(t0, 10)
	for _, l := range ls {
		switch {
		case l.Message.ID == "m02":
			e.finishAll(l, t0, queue.Failed, time.Time{})
		case l.Destination == "one.example":
			e.finishAll(l, t0, queue.Delivered, time.Time{})
		default:
			e.get("m01") // still there: b and c are not final yet
			e.finish(queue.FinishParams{Lease: l, Now: t0, Recipients: []queue.RecipientUpdate{
				{Address: "b@two.example", State: queue.Failed, Result: outcome(queue.Failed, t0)},
				{Address: "c@two.example", State: queue.Expired, Result: outcome(queue.Deferred, t0)},
			}})
		}
	}
	if len(ls) != 3 {
		e.t.Fatalf("claimed %s", leaseKeys(ls))
	}
	e.gone("m01")
	e.gone("m02")
	if ms, err := e.s.List(e.ctx, queue.ListParams{}); err != nil || len(ms) != 0 {
		e.t.Fatalf("List = %d messages, %v; want none", len(ms), err)
	}
	if _, ok := e.nextDue(t0); ok {
		e.t.Fatal("NextDue reports work after every recipient is final")
	}
	e.noClaim(t0.Add(1000 * time.Hour))
}

func testFinishUnnamedKeepClaim(e *env) {
	e.add(msg("m01", rcpt("a@one.example", "one.example"), rcpt("b@one.example", "one.example")))
	l := e.claimOne(t0)
	e.finish(queue.FinishParams{Lease: l, Now: t0.Add(time.Minute), Recipients: []queue.RecipientUpdate{
		{Address: "a@one.example", State: queue.Delivered, Result: outcome(queue.Delivered, t0)},
	}})
	r := recipient(e.t, e.get("m01"), "b@one.example")
	if r.State != queue.Queued || r.Attempts != 1 || r.LastResult != nil {
		e.t.Fatalf("unnamed recipient after Finish: %+v", r)
	}
	sameTime(e.t, "unnamed NextAttempt", r.NextAttempt, t0.Add(leaseFor))
	e.noClaim(t0.Add(leaseFor - ms))
	l2 := e.claimOne(t0.Add(leaseFor))
	e.wantKeys([]*queue.Lease{l2}, "{m01@one.example[b@one.example]}")
}

func testFinishFlagsSticky(e *env) {
	e.add(msg("m01", rcpt("a@one.example", "one.example")))
	l := e.claimOne(t0)
	e.finish(queue.FinishParams{Lease: l, Now: t0, Recipients: []queue.RecipientUpdate{
		{Address: "a@one.example", State: queue.Deferred, NextAttempt: t0.Add(time.Hour), Result: outcome(queue.Deferred, t0), PossibleDuplicate: true, DelayWarned: true},
	}})
	if r := recipient(e.t, e.get("m01"), "a@one.example"); !r.PossibleDuplicate || !r.DelayWarned {
		e.t.Fatalf("flags not set: %+v", r)
	}
	l = e.claimOne(t0.Add(time.Hour))
	e.finish(queue.FinishParams{Lease: l, Now: t0.Add(time.Hour), Recipients: []queue.RecipientUpdate{
		{Address: "a@one.example", State: queue.Deferred, NextAttempt: t0.Add(3 * time.Hour), Result: outcome(queue.Deferred, t0)},
	}})
	if r := recipient(e.t, e.get("m01"), "a@one.example"); !r.PossibleDuplicate || !r.DelayWarned {
		e.t.Fatalf("flags cleared by a later Finish: %+v", r)
	}
}

func deferredUpdate(l *queue.Lease, now, next time.Time) queue.FinishParams {
	p := queue.FinishParams{Lease: l, Now: now}
	for _, a := range l.Recipients {
		p.Recipients = append(p.Recipients, queue.RecipientUpdate{Address: a, State: queue.Deferred, NextAttempt: next, Result: outcome(queue.Deferred, now)})
	}
	return p
}

func (e *env) wantLost(p queue.FinishParams, what string) {
	e.t.Helper()
	if err := e.s.Finish(e.ctx, p); !errors.Is(err, queue.ErrLeaseLost) {
		e.t.Fatalf("Finish with %s = %v, want ErrLeaseLost", what, err)
	}
}

func testFinishStaleToken(e *env) {
	e.add(msg("m01", rcpt("a@one.example", "one.example")))
	l := e.claimOne(t0)
	before := e.get("m01")
	forged := *l
	forged.Token = l.Token + 7919
	e.wantLost(deferredUpdate(&forged, t0, t0.Add(time.Hour)), "a token that was never issued")
	equalMessage(e.t, "message after a rejected Finish", e.get("m01"), before)
	e.finish(deferredUpdate(l, t0, t0.Add(time.Hour)))
	// A lease ends with its Finish: a second Finish is stale.
	e.wantLost(deferredUpdate(l, t0, t0.Add(time.Minute)), "a lease already finished")
	sameTime(e.t, "NextAttempt", recipient(e.t, e.get("m01"), "a@one.example").NextAttempt, t0.Add(time.Hour))
}

func testFinishReclaimed(e *env) {
	e.add(msg("m01", rcpt("a@one.example", "one.example")))
	l1 := e.claimOne(t0)
	l2 := e.claimOne(l1.Until) // l1's worker is presumed dead
	e.wantLost(deferredUpdate(l1, l1.Until, l1.Until.Add(time.Minute)), "a lease that expired and was claimed again")
	r := recipient(e.t, e.get("m01"), "a@one.example")
	if r.Attempts != 2 || r.State != queue.Queued {
		e.t.Fatalf("zombie Finish changed state: %+v", r)
	}
	sameTime(e.t, "NextAttempt after zombie Finish", r.NextAttempt, l2.Until)
	e.finishAll(l2, l2.Until, queue.Delivered, time.Time{})
	e.gone("m01")
}

func testFinishExpiredNotReclaimed(e *env) {
	e.add(msg("m01", rcpt("a@one.example", "one.example")))
	l := e.claimOne(t0)
	// A slow worker's lease ran out but nobody claimed the work again: its
	// result is still the newest and is recorded.
	late := l.Until.Add(time.Hour)
	e.finish(deferredUpdate(l, late, late.Add(time.Hour)))
	r := recipient(e.t, e.get("m01"), "a@one.example")
	if r.State != queue.Deferred {
		e.t.Fatalf("late Finish not recorded: %+v", r)
	}
	sameTime(e.t, "NextAttempt", r.NextAttempt, late.Add(time.Hour))
}

func testFinishDestinationStatus(e *env) {
	e.add(msg("m01", rcpt("a@one.example", "one.example")))
	e.add(msg("m02", rcpt("b@one.example", "one.example")))
	e.add(msg("m03", rcpt("c@two.example", "two.example")))
	ls := e.claim(t0, 10)
	if len(ls) != 3 {
		e.t.Fatalf("claimed %s", leaseKeys(ls))
	}
	down := queue.DestinationStatus{
		Name: "one.example", NextAllowed: t0.Add(30 * time.Minute), ConsecutiveFailures: 1,
		FirstFailure: t0, LastFailure: t0, LastResult: outcome(queue.Deferred, t0),
	}
	for _, l := range ls {
		p := deferredUpdate(l, t0, t0.Add(5*time.Minute))
		switch l.Message.ID {
		case "m01":
			p.Destination = &down
		case "m02":
			p.Destination = nil // keeps the status another lease wrote
		}
		e.finish(p)
	}
	equalDest(e.t, "Destination(one.example)", e.destination("one.example"), &down)
	if d := e.destination("two.example"); !d.NextAllowed.IsZero() || d.ConsecutiveFailures != 0 {
		e.t.Fatalf("Destination(two.example) = %+v, want zero status", *d)
	}
	// The destination status holds back every message to it.
	ls = e.claim(t0.Add(5*time.Minute), 10)
	e.wantKeys(ls, "{m03@two.example[c@two.example]}")
	e.finishAll(ls[0], t0.Add(5*time.Minute), queue.Delivered, time.Time{})
	e.noClaim(t0.Add(30*time.Minute - ms))
	// Upsert: a later Finish replaces the status.
	l := e.claimOne(t0.Add(30 * time.Minute)) // one lease: the destination is probed
	up := queue.DestinationStatus{Name: "one.example", LastResult: outcome(queue.Delivered, t0.Add(30*time.Minute))}
	p := deferredUpdate(l, t0.Add(30*time.Minute), t0.Add(time.Hour))
	p.Destination = &up
	e.finish(p)
	equalDest(e.t, "Destination(one.example) after a second Finish", e.destination("one.example"), &up)
}

// testFinishOtherDestinations: FinishParams.Destinations replace the
// statuses of the destinations they name, in the same atomic step as the
// rest of Finish (a lost lease writes none of them).
func testFinishOtherDestinations(e *env) {
	e.add(msg("m01", rcpt("a@one.example", "one.example")))
	e.add(msg("m02", rcpt("b@one.example", "one.example")))
	e.add(msg("m03", rcpt("c@relay.example", "relay.example")))
	e.add(msg("m04", rcpt("d@two.example", "two.example")))
	ls := e.claim(t0, 10)
	if len(ls) != 4 {
		e.t.Fatalf("claimed %s", leaseKeys(ls))
	}
	byID := map[queue.ID]*queue.Lease{}
	for _, l := range ls {
		byID[l.Message.ID] = l
	}
	down := queue.DestinationStatus{
		Name: "relay.example", NextAllowed: t0.Add(30 * time.Minute), ConsecutiveFailures: 1,
		FirstFailure: t0, LastFailure: t0, LastResult: outcome(queue.Deferred, t0),
	}
	also := queue.DestinationStatus{Name: "two.example", NextAllowed: t0.Add(time.Hour), ConsecutiveFailures: 4,
		FirstFailure: t0.Add(-time.Hour), LastFailure: t0}

	// A lost lease changes no status.
	forged := *byID["m01"]
	forged.Token += 7919
	p := deferredUpdate(&forged, t0, t0.Add(5*time.Minute))
	p.Destinations = []queue.DestinationStatus{down}
	e.wantLost(p, "a token that was never issued")
	if d := e.destination("relay.example"); d.ConsecutiveFailures != 0 {
		e.t.Fatalf("a lost Finish wrote a destination status: %+v", *d)
	}

	p = deferredUpdate(byID["m01"], t0, t0.Add(5*time.Minute))
	p.Destinations = []queue.DestinationStatus{down, also}
	e.finish(p)
	equalDest(e.t, "Destination(relay.example)", e.destination("relay.example"), &down)
	equalDest(e.t, "Destination(two.example)", e.destination("two.example"), &also)
	if d := e.destination("one.example"); d.ConsecutiveFailures != 0 || !d.NextAllowed.IsZero() {
		e.t.Fatalf("Destination(one.example) = %+v, want the lease's own destination untouched", *d)
	}
	// Both the lease's own destination and another one in one Finish.
	own := queue.DestinationStatus{Name: "one.example", NextAllowed: t0.Add(time.Minute), ConsecutiveFailures: 1,
		FirstFailure: t0, LastFailure: t0}
	cleared := queue.DestinationStatus{Name: "relay.example"}
	p = deferredUpdate(byID["m02"], t0, t0.Add(5*time.Minute))
	p.Destination, p.Destinations = &own, []queue.DestinationStatus{cleared}
	e.finish(p)
	equalDest(e.t, "Destination(one.example)", e.destination("one.example"), &own)
	equalDest(e.t, "Destination(relay.example) cleared", e.destination("relay.example"), &cleared)
	// The statuses hold back the mail stored under those destinations.
	e.finishAll(byID["m03"], t0, queue.Deferred, t0.Add(time.Minute))
	e.finishAll(byID["m04"], t0, queue.Deferred, t0.Add(time.Minute))
	ls = e.claim(t0.Add(time.Minute), 10)
	e.wantKeys(ls, "{m03@relay.example[c@relay.example]}")
}

func testFinishNotifications(e *env) {
	e.add(msg("m01", rcpt("a@one.example", "one.example")))
	l := e.claimOne(t0)
	dsn := msg("d01", rcpt("sender@example.org", "example.org"))
	dsn.From = ""
	dsn.Arrived = t0.Add(time.Minute)
	dsn.IdempotencyKey = "dsn:m01:a@one.example"
	dsnBody := bodyFor("d01", 70<<10)
	p := queue.FinishParams{Lease: l, Now: t0.Add(time.Minute),
		Recipients:    []queue.RecipientUpdate{{Address: "a@one.example", State: queue.Failed, Result: outcome(queue.Failed, t0)}},
		Notifications: []queue.EnqueueParams{{Message: dsn, Body: bytes.NewReader(dsnBody)}},
	}
	e.finish(p)
	e.gone("m01")
	want := *dsn
	want.Size = int64(len(dsnBody))
	equalMessage(e.t, "notification", e.get("d01"), &want)
	if !bytes.Equal(e.body("d01"), dsnBody) {
		e.t.Fatal("notification body differs")
	}
	l = e.claimOne(t0.Add(time.Minute))
	e.wantKeys([]*queue.Lease{l}, "{d01@example.org[sender@example.org]}")
}

func testFinishNotificationAtomic(e *env) {
	e.add(msg("m01", rcpt("a@one.example", "one.example")))
	l := e.claimOne(t0)
	before := e.get("m01")
	errBody := errors.New("disk of the DSN composer failed")
	p := queue.FinishParams{Lease: l, Now: t0.Add(time.Minute),
		Recipients: []queue.RecipientUpdate{{Address: "a@one.example", State: queue.Failed, Result: outcome(queue.Failed, t0)}},
		Destination: &queue.DestinationStatus{Name: "one.example", ConsecutiveFailures: 9,
			NextAllowed: t0.Add(time.Hour)},
		Notifications: []queue.EnqueueParams{
			{Message: msg("d01", rcpt("x@example.org", "example.org")), Body: bytes.NewReader([]byte("fine\r\n"))},
			{Message: msg("d02", rcpt("y@example.org", "example.org")), Body: &errReader{n: 100 << 10, err: errBody}},
		},
	}
	if err := e.s.Finish(e.ctx, p); !errors.Is(err, errBody) {
		e.t.Fatalf("Finish with a failing notification body = %v, want the body error", err)
	}
	equalMessage(e.t, "message after failed Finish", e.get("m01"), before)
	e.gone("d01")
	e.gone("d02")
	if d := e.destination("one.example"); d.ConsecutiveFailures != 0 {
		e.t.Fatalf("destination status written by a failed Finish: %+v", *d)
	}
	// Nothing happened, so the lease is still current.
	p.Notifications = p.Notifications[:1]
	p.Notifications[0].Body = bytes.NewReader([]byte("fine\r\n"))
	e.finish(p)
	e.gone("m01")
	e.get("d01")
}
