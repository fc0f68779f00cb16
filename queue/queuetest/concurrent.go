package queuetest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/outboundmail/outbound/queue"
)

func concurrentTests() []subtest {
	return []subtest{
		{"NoDoubleClaim", testConcurrentNoDoubleClaim},
		{"ClaimFinishWhileEnqueueing", testConcurrentClaimFinishEnqueue},
		{"SameIdempotencyKey", testConcurrentSameKey},
	}
}

func closedTests() []subtest {
	return []subtest{
		{"EveryMethod", testClosed},
	}
}

const workers = 8

// testConcurrentNoDoubleClaim lets workers claim in parallel at one instant:
// every recipient is leased exactly once, since no lease can expire.
func testConcurrentNoDoubleClaim(e *env) {
	const n = 60
	for i := range n {
		e.add(msg(fmt.Sprintf("m%03d", i), rcpt("a@one.example", "one.example"), rcpt("b@two.example", "two.example"), rcpt("c@two.example", "two.example")))
	}
	var (
		mu     sync.Mutex
		seen   = map[string]int{}
		tokens = map[int64]bool{}
		wg     sync.WaitGroup
		errs   = make(chan error, workers)
	)
	for w := range workers {
		wg.Go(func() {
			for {
				ls, err := e.s.Claim(e.ctx, queue.ClaimParams{Now: t0, Owner: fmt.Sprint("w", w), LeaseFor: leaseFor, Limit: 1 + w%4})
				if err != nil {
					errs <- err
					return
				}
				if len(ls) == 0 {
					return
				}
				mu.Lock()
				for _, l := range ls {
					if tokens[l.Token] {
						errs <- fmt.Errorf("token %d issued twice", l.Token)
					}
					tokens[l.Token] = true
					for _, a := range l.Recipients {
						seen[string(l.Message.ID)+"/"+a]++
					}
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		e.t.Fatal(err)
	}
	if len(seen) != 3*n || len(tokens) != 2*n {
		e.t.Fatalf("claimed %d recipients in %d leases, want %d in %d", len(seen), len(tokens), 3*n, 2*n)
	}
	for k, c := range seen {
		if c != 1 {
			e.t.Fatalf("%s leased %d times", k, c)
		}
	}
}

// testConcurrentClaimFinishEnqueue runs producers and workers together; every
// recipient is delivered exactly once and the store ends empty.
func testConcurrentClaimFinishEnqueue(e *env) {
	const producers, perProducer = 4, 15
	var (
		mu        sync.Mutex
		delivered = map[string]int{}
		wg        sync.WaitGroup
		errs      = make(chan error, producers+workers)
	)
	var done sync.WaitGroup
	ready := make(chan struct{}, producers*perProducer)
	for p := range producers {
		done.Go(func() {
			for i := range perProducer {
				id := fmt.Sprintf("p%d-%02d", p, i)
				m := msg(id, rcpt("a@one.example", "one.example"), rcpt("b@two.example", "two.example"))
				if _, err := e.s.Enqueue(e.ctx, queue.EnqueueParams{Message: m, Body: bytes.NewReader(bodyFor(id, 3000))}); err != nil {
					errs <- err
					return
				}
				ready <- struct{}{}
			}
		})
	}
	producing := make(chan struct{})
	go func() { done.Wait(); close(producing) }()
	for w := range workers {
		wg.Go(func() {
			for {
				ls, err := e.s.Claim(e.ctx, queue.ClaimParams{Now: t0, Owner: fmt.Sprint("w", w), LeaseFor: leaseFor, Limit: 3})
				if err != nil {
					errs <- err
					return
				}
				if len(ls) == 0 {
					select {
					case <-ready:
						continue
					case <-producing:
						// Claims after the last Enqueue returned see everything.
						if ls, err = e.s.Claim(e.ctx, queue.ClaimParams{Now: t0, LeaseFor: leaseFor, Limit: 3}); err != nil || len(ls) == 0 {
							if err != nil {
								errs <- err
							}
							return
						}
					}
				}
				for _, l := range ls {
					if err := readAll(e, l.Message.ID); err != nil {
						errs <- err
						return
					}
					p := queue.FinishParams{Lease: l, Now: t0}
					for _, a := range l.Recipients {
						p.Recipients = append(p.Recipients, queue.RecipientUpdate{Address: a, State: queue.Delivered})
					}
					if err := e.s.Finish(e.ctx, p); err != nil {
						errs <- fmt.Errorf("Finish(%s): %w", leaseKey(l), err)
						return
					}
					mu.Lock()
					for _, a := range l.Recipients {
						delivered[string(l.Message.ID)+"/"+a]++
					}
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	done.Wait() // a producer that fails after the workers quit still sends on errs
	close(errs)
	for err := range errs {
		e.t.Fatal(err)
	}
	if len(delivered) != 2*producers*perProducer {
		e.t.Fatalf("delivered %d recipients, want %d", len(delivered), 2*producers*perProducer)
	}
	for k, c := range delivered {
		if c != 1 {
			e.t.Fatalf("%s delivered %d times", k, c)
		}
	}
	if ms, err := e.s.List(e.ctx, queue.ListParams{}); err != nil || len(ms) != 0 {
		e.t.Fatalf("List at the end = %d messages, %v; want none", len(ms), err)
	}
}

func readAll(e *env, id queue.ID) error {
	rc, err := e.s.OpenBody(e.ctx, id)
	if err != nil {
		return fmt.Errorf("OpenBody(%s): %w", id, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return fmt.Errorf("reading %s: %w", id, err)
	}
	if !bytes.Equal(b, bodyFor(string(id), 3000)) {
		return fmt.Errorf("body of %s differs", id)
	}
	return nil
}

func testConcurrentSameKey(e *env) {
	ids := make([]queue.ID, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			m := msg(fmt.Sprintf("m%02d", w), rcpt("a@one.example", "one.example"))
			m.IdempotencyKey = "same"
			id, err := e.s.Enqueue(e.ctx, queue.EnqueueParams{Message: m, Body: bytes.NewReader([]byte("x\r\n"))})
			if err != nil {
				e.t.Error(err)
			}
			ids[w] = id
		})
	}
	wg.Wait()
	for _, id := range ids[1:] {
		if id != ids[0] {
			e.t.Fatalf("concurrent Enqueues with one key returned IDs %q", ids)
		}
	}
	ms, err := e.s.List(e.ctx, queue.ListParams{})
	if err != nil || len(ms) != 1 || ms[0].ID != ids[0] {
		e.t.Fatalf("List = %d messages, %v; want only %s", len(ms), err, ids[0])
	}
}

func testClosed(e *env) {
	e.add(msg("m01", rcpt("a@one.example", "one.example")))
	l := e.claimOne(t0)
	if err := e.s.Close(); err != nil {
		e.t.Fatalf("Close: %v", err)
	}
	ctx := e.ctx
	_, errEnqueue := e.s.Enqueue(ctx, queue.EnqueueParams{Message: msg("m02", rcpt("b@one.example", "one.example")), Body: bytes.NewReader(nil)})
	_, errClaim := e.s.Claim(ctx, queue.ClaimParams{Now: t0, LeaseFor: leaseFor})
	_, errGet := e.s.Get(ctx, "m01")
	_, errList := e.s.List(ctx, queue.ListParams{})
	_, _, errNextDue := e.s.NextDue(ctx, t0)
	_, errDest := e.s.Destination(ctx, "one.example")
	rc, errBody := e.s.OpenBody(ctx, "m01")
	if rc != nil {
		rc.Close()
	}
	for name, err := range map[string]error{
		"Enqueue": errEnqueue, "Claim": errClaim, "Get": errGet, "List": errList,
		"NextDue": errNextDue, "Destination": errDest, "OpenBody": errBody,
		"Finish":  e.s.Finish(ctx, deferredUpdate(l, t0, t0.Add(time.Hour))),
		"Hold":    e.s.Hold(ctx, "m01"),
		"Release": e.s.Release(ctx, "m01", t0),
		"Retry":   e.s.Retry(ctx, "m01", t0),
		"Delete":  e.s.Delete(ctx, "m01"),
	} {
		if !errors.Is(err, queue.ErrClosed) {
			e.t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
}
