package postgres

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outboundmail/outbound/queue"
)

// BenchmarkEnqueue measures durable enqueues (each commit waits for the
// WAL flush) of a 2 KB message with one recipient, from 1 and 4 concurrent
// callers.
func BenchmarkEnqueue(b *testing.B) {
	body := bytes.Repeat([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd\r\n"), 32) // 2048 octets
	for _, workers := range []int{1, 4} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			s := newTestStore(b)
			ctx := context.Background()
			var next atomic.Int64
			b.SetBytes(int64(len(body)))
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for range workers {
				wg.Go(func() {
					for {
						i := next.Add(1)
						if i > int64(b.N) {
							return
						}
						m := testMessage(fmt.Sprintf("e%09d", i), fmt.Sprintf("u%d@d%d.example", i, i%10))
						if _, err := s.Enqueue(ctx, queue.EnqueueParams{Message: m, Body: bytes.NewReader(body)}); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msg/s")
		})
	}
}

// BenchmarkClaimFinish measures the claim → finish cycle (lease written and
// committed, then the outcome recorded and the message removed) with 1 and
// 4 workers over a queue spread across 10 destinations, claiming 1 or 16
// leases at a time.
func BenchmarkClaimFinish(b *testing.B) {
	for _, workers := range []int{1, 4} {
		for _, limit := range []int{1, 16} {
			b.Run(fmt.Sprintf("workers=%d/limit=%d", workers, limit), func(b *testing.B) {
				s := newTestStore(b)
				ctx := context.Background()
				for d := range 10 {
					n := b.N / 10
					if d < b.N%10 {
						n++
					}
					fillQueue(b, s, fmt.Sprintf("d%d.example", d), fmt.Sprintf("m%d-", d), n)
				}
				for _, table := range []string{"delivery", "recipient", "message"} {
					if _, err := s.Pool().Exec(ctx, "ANALYZE "+pgx.Identifier{s.schema, table}.Sanitize()); err != nil {
						b.Fatal(err)
					}
				}
				var done atomic.Int64
				b.ResetTimer()
				start := time.Now()
				var wg sync.WaitGroup
				for w := range workers {
					wg.Go(func() {
						for {
							ls, err := s.Claim(ctx, queue.ClaimParams{Now: t0, Owner: fmt.Sprint("w", w), LeaseFor: leaseFor, Limit: limit})
							if err != nil {
								b.Error(err)
								return
							}
							if len(ls) == 0 {
								return
							}
							for _, l := range ls {
								if err := s.Finish(ctx, deliverAll(l, t0)); err != nil {
									b.Error(err)
									return
								}
								done.Add(1)
							}
						}
					})
				}
				wg.Wait()
				b.StopTimer()
				if got := done.Load(); got != int64(b.N) {
					b.Fatalf("finished %d of %d messages", got, b.N)
				}
				b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msg/s")
			})
		}
	}
}

// BenchmarkClaim measures one Claim of 100 leases from a backlog of 100,000
// due messages spread over 10 destinations, with the tables analyzed and as
// a fresh store has them (never analyzed: the planner guesses). Each claim
// runs one lease term after the previous one, so the leases it wrote have
// ended and the backlog stays 100,000 deep. Metric leases/s.
//
//	go test -run='^$' -bench=Claim/ ./queue/postgres
func BenchmarkClaim(b *testing.B) {
	const (
		backlog = 100_000
		dests   = 10
		limit   = 100
	)
	for _, analyzed := range []bool{false, true} {
		b.Run(fmt.Sprintf("backlog=%d/limit=%d/analyzed=%t", backlog, limit, analyzed), func(b *testing.B) {
			s := newTestStore(b)
			ctx := context.Background()
			for d := range dests {
				fillQueue(b, s, fmt.Sprintf("d%d.example", d), fmt.Sprintf("m%d-", d), backlog/dests)
			}
			if analyzed {
				for _, table := range []string{"delivery", "recipient", "message", "destination"} {
					if _, err := s.Pool().Exec(ctx, "ANALYZE "+pgx.Identifier{s.schema, table}.Sanitize()); err != nil {
						b.Fatal(err)
					}
				}
			}
			leased := 0
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				now := t0.Add(time.Duration(i) * (leaseFor + time.Second))
				ls, err := s.Claim(ctx, queue.ClaimParams{Now: now, Owner: "w", LeaseFor: leaseFor, Limit: limit})
				if err != nil {
					b.Fatal(err)
				}
				if len(ls) != limit {
					b.Fatalf("claim %d: %d leases, want %d", i, len(ls), limit)
				}
				leased += len(ls)
			}
			b.ReportMetric(float64(leased)/b.Elapsed().Seconds(), "leases/s")
		})
	}
}
