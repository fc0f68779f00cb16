package embedded

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
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

// Benchmarks. Each states the command that produced the reported figures.

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
//
//	go test -run='^$' -bench=Enqueue -benchtime=3000x ./queue/embedded
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
//
//	go test -run='^$' -bench=ClaimFinish -benchtime=5000x ./queue/embedded
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

// BenchmarkQueued enqueues b.N messages of 2 KB (inline bodies) with 32
// producers and reports what each costs while queued: octets on disk, Go
// heap and process RSS growth per message, and the time to reopen the
// store. Run it with the queue size as the count:
//
//	go test -run='^$' -bench=Queued -benchtime=100000x ./queue/embedded
func BenchmarkQueued(b *testing.B) {
	dir := b.TempDir()
	s, err := Open(dir, nil)
	if err != nil {
		b.Fatal(err)
	}
	heap0, rss0 := heapInUse(), rss()
	b.ResetTimer()
	enqueueN(b, s, b.N, 2<<10, 32, "m")
	b.StopTimer()
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
	n := float64(b.N)
	b.ReportMetric(float64(disk)/n, "disk-B/msg")
	b.ReportMetric(float64(heap1-heap0)/n, "heap-B/msg")
	b.ReportMetric(float64(rss1-rss0)/n, "rss-B/msg")
	b.ReportMetric(float64(opened.Microseconds())/1000, "open-ms")
}

func heapInUse() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapInuse)
}

// rss returns the resident set size of this process, or 0.
func rss() int64 { return procStatus("VmRSS:") }

// procStatus returns a size field of /proc/self/status in octets, or 0.
func procStatus(field string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, field); ok {
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

// BenchmarkClaimWithBacklog measures one Claim of 100 leases (ns/op) with
// a backlog of messages waiting for later plus 10,000 due recipients at a
// destination in backoff, none of which Claim may read. It also starts a
// fresh process on the store, as after a restart, and reports that
// process's Open time, its peak RSS over Open and 10 claims, and the
// database size. The 1,000,000 case (about a minute to build) is skipped
// with -short.
//
//	go test -run='^$' -bench=ClaimWithBacklog -benchtime=20x ./queue/embedded
func BenchmarkClaimWithBacklog(b *testing.B) {
	for _, backlog := range []int{0, 100_000, 1_000_000} {
		b.Run(fmt.Sprintf("queued=%d", backlog), func(b *testing.B) {
			if backlog > 100_000 && testing.Short() {
				b.Skip("-short")
			}
			dir := b.TempDir()
			s, err := Open(dir, nil)
			if err != nil {
				b.Fatal(err)
			}
			msgs := make([]*queue.Message, 0, backlog+10_000+100*(b.N+10))
			for i := range backlog {
				msgs = append(msgs, benchMsg(fmt.Sprintf("later-%09d", i), benchT0.Add(24*time.Hour), fmt.Sprintf("d%04d.example", i%5000)))
			}
			for i := range 10_000 {
				msgs = append(msgs, benchMsg(fmt.Sprintf("down-%09d", i), benchT0.Add(-time.Hour), "down.example"))
			}
			for i := range 100 * (b.N + 10) {
				msgs = append(msgs, benchMsg(fmt.Sprintf("due-%09d", i), benchT0.Add(-time.Minute), fmt.Sprintf("d%04d.example", i%5000)))
			}
			bulkLoad(b, s, msgs)
			msgs = nil
			err = s.write(func(bt *btx) (bool, error) {
				return true, bt.setStatus("down.example", queue.DestinationStatus{NextAllowed: benchT0.Add(time.Hour), ConsecutiveFailures: 3})
			})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			b.ResetTimer()
			for range b.N {
				ls, err := s.Claim(ctx, queue.ClaimParams{Now: benchT0, LeaseFor: time.Hour, Limit: 100})
				if err != nil || len(ls) != 100 {
					b.Fatalf("Claim = %d leases, %v", len(ls), err)
				}
			}
			b.StopTimer()
			if err := s.Close(); err != nil {
				b.Fatal(err)
			}
			openMS, rssMB := restartChild(b, dir)
			b.ReportMetric(openMS, "restart-open-ms")
			b.ReportMetric(rssMB, "restart-peak-rss-MB")
			b.ReportMetric(float64(dirSize(b, dir))/(1<<20), "disk-MB")
		})
	}
}

const envRestartDir = "EMBEDDED_RESTART_DIR"

// TestRestartChild is the process restartChild starts; it does nothing in a
// normal test run. It opens the store, claims 10 times 100 leases and
// prints the Open time and its peak RSS.
func TestRestartChild(t *testing.T) {
	dir := os.Getenv(envRestartDir)
	if dir == "" {
		t.Skip("helper process for BenchmarkClaimWithBacklog")
	}
	start := time.Now()
	s, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	opened := time.Since(start)
	for range 10 {
		if _, err := s.Claim(context.Background(), queue.ClaimParams{Now: benchT0, LeaseFor: time.Hour, Limit: 100}); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	fmt.Printf("restart %d %d\n", opened.Microseconds(), procStatus("VmHWM:"))
}

func restartChild(b *testing.B, dir string) (openMS, rssMB float64) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestRestartChild$")
	cmd.Env = append(os.Environ(), envRestartDir+"="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		b.Fatalf("restart child: %v\n%s", err, out)
	}
	var us, hwm int64
	for line := range strings.Lines(string(out)) {
		if _, err := fmt.Sscanf(line, "restart %d %d", &us, &hwm); err == nil {
			return float64(us) / 1000, float64(hwm) / (1 << 20)
		}
	}
	b.Fatalf("restart child said:\n%s", out)
	return 0, 0
}
