package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkSlotAcquireRelease measures the slot overhead of one attempt on
// the PostgreSQL store (AcquireSlot, then ReleaseSlot with its NOTIFY), from
// 1 and 4 concurrent workers on one destination with 4 slots. Metric
// attempts/s.
//
//	go test -run='^$' -bench=SlotAcquireRelease ./queue/postgres
func BenchmarkSlotAcquireRelease(b *testing.B) {
	for _, workers := range []int{1, 4} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			s := newTestStore(b)
			ctx := context.Background()
			var next, noSlot atomic.Int64
			b.ResetTimer()
			var wg sync.WaitGroup
			for w := range workers {
				wg.Go(func() {
					for next.Add(1) <= int64(b.N) {
						slot, err := s.AcquireSlot(ctx, SlotParams{Destination: "mx.example", Owner: fmt.Sprint("w", w), Max: 4, Now: t0, Until: t0.Add(time.Minute)})
						if errors.Is(err, ErrNoSlot) {
							noSlot.Add(1)
							continue
						}
						if err != nil {
							b.Error(err)
							return
						}
						if err := s.ReleaseSlot(ctx, slot, t0); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "attempts/s")
			b.ReportMetric(float64(noSlot.Load())/float64(b.N), "noslot/op")
		})
	}
}
