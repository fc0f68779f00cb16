package queuetest

import (
	"strings"
	"time"

	"github.com/outboundmail/outbound/queue"
)

func listTests() []subtest {
	return []subtest{
		{"Filters", testListFilters},
		{"Paging", testListPaging},
	}
}

func nextDueTests() []subtest {
	return []subtest{
		{"Empty", testNextDueEmpty},
		{"EarliestNextAttempt", testNextDueEarliest},
		{"DueNow", testNextDueNow},
		{"DestinationBackoff", testNextDueDestinationBackoff},
		{"Lease", testNextDueLease},
	}
}

// listFixture enqueues:
//
//	m01 a@one queued, arrived t0-3h
//	m02 b@two deferred (one attempt), arrived t0-2h
//	m03 c@one held, arrived t0-1h
//	m04 d@one queued + e@two queued, arrived t0
func listFixture(e *env) {
	arrive := func(m *queue.Message, d time.Duration) *queue.Message {
		m.Arrived = t0.Add(d)
		return m
	}
	e.add(arrive(msg("m04", at(rcpt("d@one.example", "one.example"), t0.Add(time.Hour)), at(rcpt("e@two.example", "two.example"), t0.Add(time.Hour))), 0))
	e.add(arrive(msg("m02", rcpt("b@two.example", "two.example")), -2*time.Hour))
	e.add(arrive(msg("m01", at(rcpt("a@one.example", "one.example"), t0.Add(time.Hour))), -3*time.Hour))
	e.add(arrive(msg("m03", at(rcpt("c@one.example", "one.example"), t0.Add(time.Hour))), -1*time.Hour))
	e.finishAll(e.claimOne(t0), t0, queue.Deferred, t0.Add(2*time.Hour))
	if err := e.s.Hold(e.ctx, "m03"); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) list(p queue.ListParams) string {
	e.t.Helper()
	ms, err := e.s.List(e.ctx, p)
	if err != nil {
		e.t.Fatalf("List(%+v): %v", p, err)
	}
	ids := make([]string, len(ms))
	for i, m := range ms {
		ids[i] = string(m.ID)
		if len(m.Recipients) == 0 {
			e.t.Fatalf("List returned %s without recipients", m.ID)
		}
		equalMessage(e.t, "List entry", m, e.get(m.ID))
	}
	return strings.Join(ids, " ")
}

func testListFilters(e *env) {
	listFixture(e)
	for _, c := range []struct {
		name string
		p    queue.ListParams
		want string
	}{
		{"all", queue.ListParams{}, "m01 m02 m03 m04"},
		{"held", queue.ListParams{States: []queue.RecipientState{queue.Held}}, "m03"},
		{"deferred", queue.ListParams{States: []queue.RecipientState{queue.Deferred}}, "m02"},
		{"queued or held", queue.ListParams{States: []queue.RecipientState{queue.Queued, queue.Held}}, "m01 m03 m04"},
		{"delivered", queue.ListParams{States: []queue.RecipientState{queue.Delivered}}, ""},
		{"destination two", queue.ListParams{Destination: "two.example"}, "m02 m04"},
		{"destination one", queue.ListParams{Destination: "one.example"}, "m01 m03 m04"},
		{"unknown destination", queue.ListParams{Destination: "none.example"}, ""},
		{"arrived before t0-90m", queue.ListParams{ArrivedBefore: t0.Add(-90 * time.Minute)}, "m01 m02"},
		{"arrived before t0-3h (strict)", queue.ListParams{ArrivedBefore: t0.Add(-3 * time.Hour)}, ""},
		{"after m02", queue.ListParams{AfterID: "m02"}, "m03 m04"},
		{"limit 2", queue.ListParams{Limit: 2}, "m01 m02"},
		{"combined", queue.ListParams{Destination: "one.example", States: []queue.RecipientState{queue.Queued}, AfterID: "m01", Limit: 5}, "m04"},
		{"combined age", queue.ListParams{Destination: "two.example", ArrivedBefore: t0}, "m02"},
	} {
		if got := e.list(c.p); got != c.want {
			e.t.Errorf("List %s = %q, want %q", c.name, got, c.want)
		}
	}
}

func testListPaging(e *env) {
	listFixture(e)
	var pages []string
	after := queue.ID("")
	for range 10 {
		ms, err := e.s.List(e.ctx, queue.ListParams{AfterID: after, Limit: 3, Destination: "one.example"})
		if err != nil {
			e.t.Fatal(err)
		}
		if len(ms) == 0 {
			break
		}
		var ids []string
		for _, m := range ms {
			ids = append(ids, string(m.ID))
		}
		pages = append(pages, strings.Join(ids, ","))
		after = ms[len(ms)-1].ID
	}
	if got := strings.Join(pages, " | "); got != "m01,m03,m04" {
		e.t.Fatalf("pages = %q", got)
	}
}

func testNextDueEmpty(e *env) {
	if _, ok := e.nextDue(t0); ok {
		e.t.Fatal("NextDue on an empty store reports work")
	}
	mixed(e)
	if err := e.s.Hold(e.ctx, "m01"); err != nil {
		e.t.Fatal(err)
	}
	if _, ok := e.nextDue(t0); ok {
		e.t.Fatal("NextDue counts held or final recipients as waiting")
	}
}

func testNextDueEarliest(e *env) {
	e.add(msg("m01", at(rcpt("a@one.example", "one.example"), t0.Add(3*time.Hour))))
	e.add(msg("m02", at(rcpt("b@two.example", "two.example"), t0.Add(2*time.Hour)), at(rcpt("c@one.example", "one.example"), t0.Add(90*time.Minute))))
	e.add(msg("m03", at(rcpt("d@three.example", "three.example"), t0.Add(4*time.Hour))))
	tm, ok := e.nextDue(t0)
	if !ok {
		e.t.Fatal("NextDue reports nothing waiting")
	}
	sameTime(e.t, "NextDue", tm, t0.Add(90*time.Minute))
	e.noClaim(tm.Add(-ms))
	l := e.claimOne(tm)
	tm, _ = e.nextDue(t0.Add(90 * time.Minute))
	sameTime(e.t, "NextDue after claiming the earliest", tm, l.Until) // before b's t0+2h
	e.finishAll(l, l.Until, queue.Delivered, time.Time{})
	tm, _ = e.nextDue(l.Until)
	sameTime(e.t, "NextDue after finishing the earliest", tm, t0.Add(2*time.Hour))
}

func testNextDueNow(e *env) {
	e.add(msg("m01", at(rcpt("a@one.example", "one.example"), t0.Add(-time.Hour))))
	now := t0.Add(time.Minute)
	tm, ok := e.nextDue(now)
	if !ok || tm.After(now) {
		e.t.Fatalf("NextDue = %s, %t; want a time not after now", tm, ok)
	}
}

func testNextDueDestinationBackoff(e *env) {
	e.setDestination(queue.DestinationStatus{Name: "down.example", NextAllowed: t0.Add(2 * time.Hour), ConsecutiveFailures: 1})
	e.add(msg("m01", rcpt("a@down.example", "down.example")))
	e.add(msg("m02", at(rcpt("b@up.example", "up.example"), t0.Add(3*time.Hour))))
	tm, ok := e.nextDue(t0)
	if !ok {
		e.t.Fatal("NextDue reports nothing waiting")
	}
	sameTime(e.t, "NextDue with the destination in backoff", tm, t0.Add(2*time.Hour))
}

func testNextDueLease(e *env) {
	e.add(msg("m01", rcpt("a@one.example", "one.example")))
	l := e.claimOne(t0)
	tm, ok := e.nextDue(t0)
	if !ok {
		e.t.Fatal("NextDue forgets a leased recipient")
	}
	sameTime(e.t, "NextDue while leased", tm, l.Until)
}
