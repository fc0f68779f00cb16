package embedded

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outboundmail/outbound/queue"
)

// Benchmarks. Figures reported in the package's final report come from
//
//	go test -run='^$' -bench=. -benchtime=2000x ./queue/embedded
//
// (see each benchmark for the metric it reports).

var benchT0 = time.Date(2031, 3, 4, 5, 6, 7, 0, time.UTC)

func benchMsg(id string, next time.Time, dests ...string) *queue.Message {
	m := &queue.Message{ID: queue.ID(id), From: "sender@example.org", Arrived: benchT0}
	for i, d := range dests {
		m.Recipients = append(m.Recipients, queue.Recipient{
			Address: fmt.Sprintf("r%d@%s", i, d), Destination: d, State: queue.Queued, NextAttempt: next,
		})
	}
	return m
}

func benchOpen(b *testing.B) *Store {
	b.Helper()
	s, err := Open(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

// enqueueN enqueues n messages with bodies of size octets from producers
// goroutines, each message to one of 50 destinations.
func enqueueN(tb testing.TB, s *Store, n, size, producers int, prefix string) {
	body := bytes.Repeat([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd\r\n"), size/64+1)[:size]
	var next atomic.Int64
	var wg sync.WaitGroup
	for range producers {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > int64(n) {
					return
				}
				m := benchMsg(fmt.Sprintf("%s%09d", prefix, i), benchT0, fmt.Sprintf("d%02d.example", i%50))
				if _, err := s.Enqueue(context.Background(), queue.EnqueueParams{Message: m, Body: bytes.NewReader(body)}); err != nil {
					tb.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// BenchmarkEnqueue measures durable enqueues: every Enqueue returns only
// after its body and record are fsynced. Metric msg/s.
func BenchmarkEnqueue(b *testing.B) {
	for _, size := range []int{2 << 10, 1 << 20} {
		for _, producers := range []int{1, 32} {
			name := fmt.Sprintf("body=%dKB/producers=%d", size>>10, producers)
			b.Run(name, func(b *testing.B) {
				s := benchOpen(b)
				b.SetBytes(int64(size))
				b.ResetTimer()
				enqueueN(b, s, b.N, size, producers, "m")
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
			})
		}
	}
}

// BenchmarkClaimFinish measures leases claimed and finished (delivered) per
// second, by 1 and 8 workers, from a queue of b.N due messages over 50
// destinations. Claim takes up to 16 leases. Metric leases/s.
func BenchmarkClaimFinish(b *testing.B) {
	for _, workers := range []int{1, 8} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			s := benchOpen(b)
			enqueueN(b, s, b.N, 2<<10, 32, "m")
			ctx := context.Background()
			b.ResetTimer()
			var done atomic.Int64
			var wg sync.WaitGroup
			for w := range workers {
				wg.Go(func() {
					for done.Load() < int64(b.N) {
						ls, err := s.Claim(ctx, queue.ClaimParams{Now: benchT0, Owner: strconv.Itoa(w), LeaseFor: time.Hour, Limit: 16})
						if err != nil {
							b.Error(err)
							return
						}
						if len(ls) == 0 {
							return
						}
						for _, l := range ls {
							up := queue.RecipientUpdate{Address: l.Recipients[0], State: queue.Delivered}
							if err := s.Finish(ctx, queue.FinishParams{Lease: l, Now: benchT0, Recipients: []queue.RecipientUpdate{up}}); err != nil {
								b.Error(err)
								return
							}
							done.Add(1)
						}
					}
				})
			}
			wg.Wait()
			if done.Load() != int64(b.N) {
				b.Fatalf("finished %d of %d", done.Load(), b.N)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "leases/s")
		})
	}
}

// BenchmarkQueued100k enqueues 100,000 messages of 2 KB (inline bodies) and
// reports what each costs while queued: octets on disk, Go heap and process
// RSS per message, and the time to reopen the store. Run with -benchtime=1x.
func BenchmarkQueued100k(b *testing.B) {
	const n = 100_000
	for range b.N {
		dir := b.TempDir()
		s, err := Open(dir, nil)
		if err != nil {
			b.Fatal(err)
		}
		heap0, rss0 := heapInUse(), rss()
		enqueueN(b, s, n, 2<<10, 32, "m")
		heap1, rss1 := heapInUse(), rss()
		disk := dirSize(b, dir)
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		s, err = Open(dir, nil)
		if err != nil {
			b.Fatal(err)
		}
		opened := time.Since(start)
		s.Close()
		b.ReportMetric(float64(disk)/n, "disk-B/msg")
		b.ReportMetric(float64(heap1-heap0)/n, "heap-B/msg")
		b.ReportMetric(float64(rss1-rss0)/n, "rss-B/msg")
		b.ReportMetric(float64(opened.Microseconds())/1000, "open-ms")
	}
}

func heapInUse() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapInuse)
}

// rss returns the resident set size of this process from /proc, or 0.
func rss() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func dirSize(tb testing.TB, dir string) int64 {
	var n int64
	err := filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return err
	})
	if err != nil {
		tb.Fatal(err)
	}
	return n
}
