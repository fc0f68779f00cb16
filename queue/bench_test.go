package queue_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/outboundmail/outbound/queue"
)

// BenchmarkRunOnce measures the scheduler's own cost per message: claim,
// an instant scripted delivery, and the durable Finish, on the embedded
// store on disk. b.N messages (one recipient each, 100 destinations) are
// queued first, untimed.
func BenchmarkRunOnce(b *testing.B) {
	for _, workers := range []int{1, 16} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			s := openStore(b, b.TempDir())
			net := newSimNet(time.Now)
			for d := range 100 {
				net.add(fmt.Sprintf("d%d.test", d), &simServer{})
			}
			q := newQueue(b, queue.Config{Store: s, Deliverer: net, Workers: workers, MaxConnsPerDestination: 4, StartupRamp: -1})
			enqueueMany(b, q, b.N, "app@app.test", func(i int) string { return fmt.Sprintf("u%d@d%d.test", i, i%100) })
			b.ResetTimer()
			st, err := q.RunOnce(context.Background())
			if err != nil {
				b.Fatal(err)
			}
			if st.Delivered != b.N {
				b.Fatalf("delivered %d of %d", st.Delivered, b.N)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}
