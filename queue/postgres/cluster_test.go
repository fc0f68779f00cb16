package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/outboundmail/outbound/delivery"
	"github.com/outboundmail/outbound/queue"
)

// t0 is the base time of these tests: whole seconds, far from the present,
// so a store that read the clock would fail visibly.
var t0 = time.Date(2032, time.July, 1, 8, 0, 0, 0, time.UTC)

const leaseFor = 10 * time.Minute

// testMessage returns a message that arrived at t0 with one queued
// recipient per address ("user@domain", destination = domain), due at t0.
func testMessage(id string, addrs ...string) *queue.Message {
	m := &queue.Message{ID: queue.ID(id), From: "app@example.org", Arrived: t0}
	for _, a := range addrs {
		_, dom, _ := bytes.Cut([]byte(a), []byte("@"))
		m.Recipients = append(m.Recipients, queue.Recipient{
			Address: a, Destination: string(dom), State: queue.Queued, NextAttempt: t0,
		})
	}
	return m
}

func mustEnqueue(t testing.TB, s *Store, m *queue.Message) {
	t.Helper()
	body := []byte("Subject: " + string(m.ID) + "\r\n\r\nhello\r\n")
	if _, err := s.Enqueue(context.Background(), queue.EnqueueParams{Message: m, Body: bytes.NewReader(body)}); err != nil {
		t.Fatalf("Enqueue(%s): %v", m.ID, err)
	}
}

func mustClaim(t testing.TB, s *Store, now time.Time, owner string, limit int) []*queue.Lease {
	t.Helper()
	ls, err := s.Claim(context.Background(), queue.ClaimParams{Now: now, Owner: owner, LeaseFor: leaseFor, Limit: limit})
	if err != nil {
		t.Fatalf("Claim: %v", err)
	}
	return ls
}

// deliverAll is the FinishParams of a lease whose recipients were all
// delivered at now.
func deliverAll(l *queue.Lease, now time.Time) queue.FinishParams {
	p := queue.FinishParams{Lease: l, Now: now}
	for _, a := range l.Recipients {
		p.Recipients = append(p.Recipients, queue.RecipientUpdate{
			Address: a, State: queue.Delivered,
			Result: &queue.Outcome{Class: delivery.Delivered, Reply: delivery.Reply{Code: 250, Text: "ok"}, At: now},
		})
	}
	return p
}

// nodes opens n stores on one schema, each with its own pool: separate
// workers as separate processes would have.
func nodes(t *testing.T, n int) []*Store {
	t.Helper()
	schema := newSchema(t)
	ss := make([]*Store, n)
	for i := range ss {
		ss[i] = openSchema(t, schema, nil)
	}
	return ss
}

// TestCluster_NoDoubleClaim has workers on three stores claim and finish
// concurrently at one instant (no lease can expire): every recipient is
// leased exactly once, and every message ends delivered and removed.
func TestCluster_NoDoubleClaim(t *testing.T) {
	t.Parallel()
	ss := nodes(t, 3)
	const n = 90
	for i := range n {
		mustEnqueue(t, ss[i%3], testMessage(fmt.Sprintf("m%03d", i),
			"a@one.example", "b@two.example", "c@two.example", fmt.Sprintf("d%d@three.example", i)))
	}
	var (
		mu   sync.Mutex
		seen = map[string]int{}
		wg   sync.WaitGroup
		errs = make(chan error, 9)
	)
	for w := range 9 {
		s := ss[w%3]
		wg.Go(func() {
			for {
				ls, err := s.Claim(context.Background(), queue.ClaimParams{Now: t0, Owner: fmt.Sprint("w", w), LeaseFor: leaseFor, Limit: 1 + w%5})
				if err != nil {
					errs <- err
					return
				}
				if len(ls) == 0 {
					return
				}
				for _, l := range ls {
					mu.Lock()
					for _, a := range l.Recipients {
						seen[string(l.Message.ID)+"/"+a]++
					}
					mu.Unlock()
					if err := s.Finish(context.Background(), deliverAll(l, t0)); err != nil {
						errs <- fmt.Errorf("Finish(%s): %w", l.Message.ID, err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if len(seen) != 4*n {
		t.Fatalf("claimed %d distinct recipients, want %d", len(seen), 4*n)
	}
	for k, c := range seen {
		if c != 1 {
			t.Fatalf("%s leased %d times", k, c)
		}
	}
	msgs, err := ss[0].List(context.Background(), queue.ListParams{})
	if err != nil || len(msgs) != 0 {
		t.Fatalf("List after delivering everything = %d messages, %v; want none", len(msgs), err)
	}
}

// TestCluster_PausedWorkerFenced: a worker paused past its lease (as under
// SIGSTOP) finds its recipients claimed by another node; its late Finish is
// rejected and changes nothing, and the attempt count shows both attempts.
func TestCluster_PausedWorkerFenced(t *testing.T) {
	t.Parallel()
	ss := nodes(t, 2)
	ctx := context.Background()
	mustEnqueue(t, ss[0], testMessage("m1", "a@slow.example", "b@slow.example"))

	zombie := mustClaim(t, ss[0], t0, "node-a", 10)
	if len(zombie) != 1 {
		t.Fatalf("first claim: %d leases, want 1", len(zombie))
	}
	// Expiry never makes work due early: not before the lease ends…
	if ls := mustClaim(t, ss[1], t0.Add(leaseFor-time.Millisecond), "node-b", 10); len(ls) != 0 {
		t.Fatalf("claimed %d leases before the lease ended", len(ls))
	}
	if at, ok, err := ss[1].NextDue(ctx, t0); err != nil || !ok || !at.Equal(t0.Add(leaseFor)) {
		t.Fatalf("NextDue = %v, %v, %v; want the end of the lease %v", at, ok, err, t0.Add(leaseFor))
	}
	// …and exactly when it ends.
	later := t0.Add(leaseFor)
	fresh := mustClaim(t, ss[1], later, "node-b", 10)
	if len(fresh) != 1 || fresh[0].Token == zombie[0].Token {
		t.Fatalf("second claim = %d leases (token %v), want one with a new token", len(fresh), fresh)
	}

	deferred := queue.FinishParams{Lease: zombie[0], Now: later.Add(time.Minute)}
	for _, a := range zombie[0].Recipients {
		deferred.Recipients = append(deferred.Recipients, queue.RecipientUpdate{Address: a, State: queue.Failed})
	}
	if err := ss[0].Finish(ctx, deferred); !errors.Is(err, queue.ErrLeaseLost) {
		t.Fatalf("zombie Finish = %v, want ErrLeaseLost", err)
	}
	m, err := ss[1].Get(ctx, "m1")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range m.Recipients {
		if r.State != queue.Queued || r.Attempts != 2 || !r.LastAttempt.Equal(later) {
			t.Fatalf("after the zombie's Finish: %+v; want queued, 2 attempts, last at %v", r, later)
		}
	}
	if err := ss[1].Finish(ctx, deliverAll(fresh[0], later)); err != nil {
		t.Fatalf("current Finish: %v", err)
	}
	if _, err := ss[0].Get(ctx, "m1"); !errors.Is(err, queue.ErrNotFound) {
		t.Fatalf("Get after delivery = %v, want ErrNotFound", err)
	}
}

// TestCluster_DeferralShared: a 421 recorded by one node keeps every node
// away from the destination until NextAllowed, while other destinations
// flow.
func TestCluster_DeferralShared(t *testing.T) {
	t.Parallel()
	ss := nodes(t, 3)
	ctx := context.Background()
	for i := range 4 {
		mustEnqueue(t, ss[0], testMessage(fmt.Sprint("busy", i), fmt.Sprintf("u%d@busy.example", i)))
	}
	mustEnqueue(t, ss[0], testMessage("calm", "u@calm.example"))

	ls := mustClaim(t, ss[0], t0, "node-0", 1)
	if len(ls) != 1 || ls[0].Destination != "busy.example" {
		t.Fatalf("first claim = %v, want the oldest busy.example message", ls)
	}
	reopen := t0.Add(30 * time.Minute)
	reply := delivery.Reply{Code: 421, Enhanced: delivery.EnhancedCode{4, 7, 0}, Text: "too many connections"}
	res := &queue.Outcome{Class: delivery.Temporary, Reply: reply, Stage: delivery.StageGreeting, At: t0}
	err := ss[0].Finish(ctx, queue.FinishParams{
		Lease: ls[0], Now: t0,
		Recipients:  []queue.RecipientUpdate{{Address: ls[0].Recipients[0], State: queue.Deferred, NextAttempt: reopen, Result: res}},
		Destination: &queue.DestinationStatus{NextAllowed: reopen, ConsecutiveFailures: 1, FirstFailure: t0, LastFailure: t0, LastResult: res},
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range ss {
		for _, l := range mustClaim(t, s, t0.Add(time.Minute), fmt.Sprint("node-", i), 10) {
			if l.Destination != "calm.example" {
				t.Fatalf("node %d claimed %s at a deferred destination", i, l.Message.ID)
			}
			if err := s.Finish(ctx, deliverAll(l, t0.Add(time.Minute))); err != nil {
				t.Fatal(err)
			}
		}
		st, err := s.Destination(ctx, "busy.example")
		if err != nil || !st.NextAllowed.Equal(reopen) || st.LastResult.Reply.Code != 421 {
			t.Fatalf("node %d sees status %+v, %v", i, st, err)
		}
	}
	if at, ok, _ := ss[2].NextDue(ctx, t0); !ok || !at.Equal(reopen) {
		t.Fatalf("NextDue = %v, %v; want %v", at, ok, reopen)
	}
	// When it reopens, one node probes it (failures > 0); the others wait.
	probes := 0
	for i, s := range ss {
		for _, l := range mustClaim(t, s, reopen, fmt.Sprint("node-", i), 10) {
			if l.Destination == "busy.example" {
				probes++
			}
		}
	}
	if probes != 1 {
		t.Fatalf("after reopening: %d leases at busy.example, want one probe", probes)
	}
}

// TestCluster_OneProbe races claimers on several nodes for a failing
// destination: the cluster makes exactly one probe.
func TestCluster_OneProbe(t *testing.T) {
	t.Parallel()
	ss := nodes(t, 3)
	ctx := context.Background()
	for i := range 10 {
		mustEnqueue(t, ss[0], testMessage(fmt.Sprint("f", i), fmt.Sprintf("u%d@flaky.example", i)))
	}
	// Make it failing: one attempt that ended in a timeout.
	ls := mustClaim(t, ss[0], t0, "setup", 1)
	res := &queue.Outcome{Class: delivery.Temporary, Stage: delivery.StageConnect, Error: "timeout", At: t0}
	next := t0.Add(5 * time.Minute)
	err := ss[0].Finish(ctx, queue.FinishParams{
		Lease: ls[0], Now: t0,
		Recipients:  []queue.RecipientUpdate{{Address: ls[0].Recipients[0], State: queue.Deferred, NextAttempt: next, Result: res}},
		Destination: &queue.DestinationStatus{NextAllowed: next, ConsecutiveFailures: 1, FirstFailure: t0, LastFailure: t0, LastResult: res},
	})
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		total int
		wg    sync.WaitGroup
	)
	for w := range 9 {
		wg.Go(func() {
			l, err := ss[w%3].Claim(ctx, queue.ClaimParams{Now: next, Owner: fmt.Sprint("w", w), LeaseFor: leaseFor, Limit: 5})
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			total += len(l)
			mu.Unlock()
		})
	}
	wg.Wait()
	if total != 1 {
		t.Fatalf("racing claimers got %d leases for a failing destination, want exactly one probe", total)
	}
	st, err := ss[1].Destination(ctx, "flaky.example")
	if err != nil || !st.NextAllowed.Equal(next.Add(leaseFor)) {
		t.Fatalf("probe did not hold the destination until the end of its lease: %+v, %v", st, err)
	}
}
