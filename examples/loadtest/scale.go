package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/outboundmail/outbound/delivery"
	"github.com/outboundmail/outbound/queue"
	"github.com/outboundmail/outbound/queue/embedded"
)

// scaleChildCommand is the hidden command runScale starts for each
// restart: a fresh process that opens the store and runs the queue once.
const scaleChildCommand = "scale-child"

// scaleConfig is the scale command's workload.
type scaleConfig struct {
	addr      string
	dir       string
	queued    int
	due       int
	dests     int
	size      int
	producers int
	rounds    int
	workers   int
	reuse     bool
	cold      bool
	profile   string
	t0        int64 // scale-child: the parent's clock just before exec, in Unix nanoseconds
}

func (c *scaleConfig) flags(fs *flag.FlagSet) {
	fs.StringVar(&c.addr, "addr", "", "SMTP `host:port` the due messages are relayed to (required)")
	fs.StringVar(&c.dir, "dir", "", "`directory` for the two stores (default: a temporary directory, removed)")
	fs.IntVar(&c.queued, "queued", 1_000_000, "deferred `messages` in the large store")
	fs.IntVar(&c.due, "due", 100, "`messages` due in each run")
	fs.IntVar(&c.dests, "dests", 1000, "destinations the deferred messages wait for")
	fs.IntVar(&c.size, "size", 2048, "payload `octets` per message (after a header of about 200)")
	fs.IntVar(&c.producers, "producers", 128, "goroutines seeding the store (they share group commits)")
	fs.IntVar(&c.rounds, "rounds", 3, "restarts measured per store")
	fs.IntVar(&c.workers, "workers", 16, "queue Config.Workers and connections to the relay")
	fs.BoolVar(&c.reuse, "reuse", false, "with -dir: keep a store seeded by an earlier run with the same -queued")
	fs.BoolVar(&c.cold, "cold", true, "evict queue.db from the page cache (fadvise DONTNEED) before each restart")
	fs.StringVar(&c.profile, "cpuprofile", "", "write a CPU profile of each restart to `prefix`-STORE-ROUND.pprof")
	fs.Int64Var(&c.t0, "t0", 0, "internal: exec time of a "+scaleChildCommand)
}

// runScale seeds the large store, then alternates restarts of the large
// and the small store, each with c.due messages due.
func runScale(ctx context.Context, c *scaleConfig, stdout, stderr io.Writer) error {
	if c.addr == "" {
		return errors.New("-addr is required")
	}
	if c.queued < 1 || c.due < 1 || c.dests < 1 || c.producers < 1 || c.rounds < 1 {
		return errors.New("-queued, -due, -dests, -producers and -rounds must be positive")
	}
	base := c.dir
	if base == "" {
		d, err := os.MkdirTemp("", "loadtest-scale-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		base = d
	}
	big, small := filepath.Join(base, "big"), filepath.Join(base, "small")
	marker := filepath.Join(base, "seeded")
	// The due messages go to c.addr: a refused connection would put that
	// destination in backoff in the store, and the next runs would find
	// nothing due.
	conn, err := net.DialTimeout("tcp", c.addr, 5*time.Second)
	if err != nil {
		return fmt.Errorf("no SMTP server at -addr: %w", err)
	}
	conn.Close()
	if c.reuse && reusable(ctx, marker, big, c.queued, stderr) {
		fmt.Fprintf(stderr, "reusing the %d messages seeded in %s\n", c.queued, big)
	} else {
		for _, d := range []string{big, small, marker} {
			if err := os.RemoveAll(d); err != nil {
				return err
			}
		}
		r, err := seed(ctx, c, big, stderr)
		if err != nil {
			return fmt.Errorf("seeding: %w", err)
		}
		r.write(stdout)
		if err := os.WriteFile(marker, []byte(strconv.Itoa(c.queued)+"\n"), 0o644); err != nil {
			return err
		}
	}
	if err := os.RemoveAll(small); err != nil {
		return err
	}
	rows := map[string][]*childResult{}
	for round := range c.rounds {
		order := []string{big, small}
		if round%2 == 1 {
			order = []string{small, big}
		}
		for _, dir := range order {
			name := filepath.Base(dir)
			if err := addDue(ctx, c, dir, fmt.Sprintf("due-%d-", round)); err != nil {
				return fmt.Errorf("%s: adding due messages: %w", name, err)
			}
			cr, err := restart(ctx, c, dir, round)
			if err != nil {
				return fmt.Errorf("%s: restart: %w", name, err)
			}
			cr.r.set("round", round+1)
			cr.r.write(stdout)
			rows[name] = append(rows[name], cr)
		}
	}
	for _, name := range []string{"big", "small"} {
		r := newResult()
		r.set("scale", "median")
		r.set("store", name)
		for _, k := range []string{"open_ms", "first_delivery_ms", "run_ms", "cpu_ms", "peak_rss_mb", "anon_mb", "file_mb", "minflt", "majflt"} {
			r.set(k, medianField(rows[name], k))
		}
		r.write(stdout)
	}
	return nil
}

// reusable reports whether dir holds the c.queued messages an earlier run
// seeded, none of them due for the next 10 minutes.
func reusable(ctx context.Context, marker, dir string, queued int, stderr io.Writer) bool {
	if b, err := os.ReadFile(marker); err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(queued) {
		return false
	}
	s, err := embedded.Open(dir, nil)
	if err != nil {
		return false
	}
	defer s.Close()
	at, ok, err := s.NextDue(ctx, time.Now())
	if err != nil || !ok || time.Until(at) < 10*time.Minute {
		fmt.Fprintf(stderr, "the seeded store has work due at %v (%v): seeding again\n", at.Round(time.Second), err)
		return false
	}
	return true
}

// seed fills dir with c.queued messages in the state a 451 leaves them: one
// attempt made, next attempt 1–2 hours later, spread over c.dests
// destinations. It writes through Store.Enqueue from c.producers goroutines,
// whose writes the store's group commit batches into few fsyncs; going
// through the scheduler instead would cost a real delivery attempt each.
func seed(ctx context.Context, c *scaleConfig, dir string, stderr io.Writer) (*result, error) {
	resetPeakRSS()
	cpu0 := selfCPU()
	start := time.Now()
	s, err := embedded.Open(dir, nil)
	if err != nil {
		return nil, err
	}
	body := makeBody(c.size)
	now := time.Now()
	reply := delivery.Reply{Code: 451, Enhanced: delivery.EnhancedCode{4, 7, 1}, Text: "Try again later"}
	var next atomic.Int64
	errc := make(chan error, c.producers)
	var wg sync.WaitGroup
	for range c.producers {
		wg.Go(func() {
			for {
				i := int(next.Add(1))
				if i > c.queued {
					return
				}
				if i%100_000 == 0 {
					fmt.Fprintf(stderr, "seeded %d in %v\n", i, time.Since(start).Round(time.Second))
				}
				d := fmt.Sprintf("d%04d.example", i%c.dests)
				tried := now.Add(-time.Minute)
				m := &queue.Message{
					ID:      queue.ID(fmt.Sprintf("backlog-%09d", i)),
					From:    "app@example.org",
					Arrived: tried,
					Recipients: []queue.Recipient{{
						Address: fmt.Sprintf("u%d@%s", i, d), Destination: d,
						State: queue.Deferred, Attempts: 1, LastAttempt: tried,
						NextAttempt: now.Add(time.Hour + time.Duration(i%3600)*time.Second),
						LastResult:  &queue.Outcome{Class: delivery.Temporary, Reply: reply, Stage: delivery.StageRCPT, Host: "mx." + d + "[192.0.2.1]:25", At: tried},
					}},
				}
				if _, err := s.Enqueue(ctx, queue.EnqueueParams{Message: m, Body: bytes.NewReader(body)}); err != nil {
					errc <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		s.Close()
		return nil, err
	}
	took := time.Since(start)
	mem := selfMem()
	if err := s.Close(); err != nil {
		return nil, err
	}
	r := newResult()
	r.set("scale", "seed")
	r.set("queued", c.queued)
	r.set("producers", c.producers)
	r.set("seed_s", fmt.Sprintf("%.1f", took.Seconds()))
	r.set("seed_per_s", rate(c.queued, took))
	r.set("cpu_s", fmt.Sprintf("%.1f", (selfCPU()-cpu0).Seconds()))
	r.set("peak_rss_mb", mb(mem.Peak))
	r.set("anon_mb", mb(mem.Anon))
	r.set("file_mb", mb(mem.File))
	r.set("disk_mb", mb(dirSize(dir)))
	return r, nil
}

// relayDeliverer is the deliverer of the scale runs; addDue uses its
// Destination so that the due messages are routed as the queue would.
func relayDeliverer(c *scaleConfig) *delivery.Deliverer {
	return &delivery.Deliverer{
		Hostname: "loadtest.example", Relay: c.addr, TLS: delivery.TLSDisabled,
		MaxConnsPerDestination: c.workers, MaxIdlePerDestination: c.workers,
	}
}

// addDue enqueues c.due messages due now into the store at dir, through
// the queue as an application would.
func addDue(ctx context.Context, c *scaleConfig, dir, prefix string) error {
	s, err := embedded.Open(dir, nil)
	if err != nil {
		return err
	}
	defer s.Close()
	q, err := queue.New(queue.Config{Store: s, Deliverer: relayDeliverer(c), Hostname: "loadtest.example"})
	if err != nil {
		return err
	}
	body := makeBody(c.size)
	for i := range c.due {
		env := queue.Envelope{From: "app@example.org", To: []string{fmt.Sprintf("%s%d@example.com", prefix, i)}}
		if _, err := q.Enqueue(ctx, env, bytes.NewReader(body)); err != nil {
			return err
		}
	}
	return s.Close()
}

// childResult is what one restart measured.
type childResult struct {
	r    *result
	vals map[string]float64
}

// restart runs a scale-child on dir and adds the child's rusage (peak RSS
// and CPU as the kernel counted them) to what it printed.
func restart(ctx context.Context, c *scaleConfig, dir string, round int) (*childResult, error) {
	if c.cold {
		if err := evict(filepath.Join(dir, "queue.db")); err != nil {
			return nil, err
		}
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, exe, scaleChildCommand, "-addr", c.addr, "-dir", dir,
		"-due", strconv.Itoa(c.due), "-workers", strconv.Itoa(c.workers), "-t0", strconv.FormatInt(time.Now().UnixNano(), 10))
	if c.profile != "" {
		cmd.Args = append(cmd.Args, "-cpuprofile", fmt.Sprintf("%s-%s-%d.pprof", c.profile, filepath.Base(dir), round+1))
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%v\n%s", err, out.String())
	}
	cr := &childResult{r: newResult(), vals: map[string]float64{}}
	line, ok := strings.CutPrefix(strings.TrimSpace(lastLine(out.String(), "RESULT ")), "RESULT ")
	if !ok {
		return nil, fmt.Errorf("child printed no RESULT:\n%s", out.String())
	}
	cr.r.set("scale", "restart")
	cr.r.set("store", filepath.Base(dir))
	for kv := range strings.FieldsSeq(line) {
		k, v, _ := strings.Cut(kv, "=")
		cr.r.set(k, v)
		cr.vals[k], _ = strconv.ParseFloat(v, 64)
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		cr.r.set("cpu_ms", cpu)
		cr.vals["cpu_ms"] = cpu.Seconds() * 1000
		cr.r.set("minflt", ru.Minflt)
		cr.vals["minflt"] = float64(ru.Minflt)
		cr.r.set("majflt", ru.Majflt)
		cr.vals["majflt"] = float64(ru.Majflt)
	}
	return cr, nil
}

func lastLine(s, prefix string) string {
	var last string
	for l := range strings.Lines(s) {
		if strings.HasPrefix(l, prefix) {
			last = l
		}
	}
	return last
}

func medianField(rows []*childResult, k string) string {
	var v []float64
	for _, r := range rows {
		v = append(v, r.vals[k])
	}
	if len(v) == 0 {
		return "0"
	}
	slices.Sort(v)
	return strconv.FormatFloat(v[len(v)/2], 'f', 1, 64)
}

// evict drops a file's pages from the page cache, as after a reboot, without
// touching the rest of the cache (which other processes use).
func evict(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
}

// runScaleChild is one restart: open the store, run the queue once over
// what is due, and report the times from exec, CPU and memory.
func runScaleChild(ctx context.Context, c *scaleConfig, out io.Writer) error {
	t0 := time.Unix(0, c.t0)
	start := time.Now()
	stopProfile, err := startProfiling(c.profile, pprof.StartCPUProfile, pprof.StopCPUProfile)
	if err != nil {
		return err
	}
	defer stopProfile()
	es, err := embedded.Open(c.dir, nil)
	if err != nil {
		return err
	}
	defer es.Close()
	opened := time.Now()
	s := newTimedStore(es)
	d := relayDeliverer(c)
	defer d.Close()
	var first atomic.Int64
	q, err := queue.New(queue.Config{
		Store: s, Deliverer: d, Workers: c.workers, MaxConnsPerDestination: c.workers,
		StartupRamp: -1, Hostname: "loadtest.example",
		Observer: queue.ObserverFunc(func(e queue.Event) {
			if e.Kind == queue.EventDelivered {
				first.CompareAndSwap(0, time.Now().UnixNano())
			}
		}),
	})
	if err != nil {
		return err
	}
	st, err := q.RunOnce(ctx)
	if err != nil {
		return err
	}
	ran := time.Now()
	if st.Delivered != c.due {
		// A store whose relay destination is in backoff (an earlier run
		// found no server) has nothing due: seed it again.
		return fmt.Errorf("RunOnce delivered %d of %d due (%+v)", st.Delivered, c.due, st)
	}
	mem := selfMem()
	r := newResult()
	r.set("exec_ms", start.Sub(t0))
	r.set("open_ms", opened.Sub(start))
	r.set("first_delivery_ms", time.Unix(0, first.Load()).Sub(t0))
	r.set("run_ms", ran.Sub(opened))
	r.set("delivered", st.Delivered)
	r.set("peak_rss_mb", mb(mem.Peak))
	r.set("anon_mb", mb(mem.Anon))
	r.set("file_mb", mb(mem.File))
	s.report(r)
	r.write(out)
	return nil
}

// dirSize is the total size of the regular files under dir.
func dirSize(dir string) int64 {
	var n int64
	_ = filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return nil
	})
	return n
}

// timedStore wraps a store to time the calls a run makes, so that the cost
// of a run can be split between the store and the rest (SMTP, scheduling).
// The embedded store has no optional interfaces (queue.Waker) to hide.
type timedStore struct {
	queue.Store
	mu    sync.Mutex
	calls map[string]int
	spent map[string]time.Duration
}

func newTimedStore(s queue.Store) *timedStore {
	return &timedStore{Store: s, calls: map[string]int{}, spent: map[string]time.Duration{}}
}

func (t *timedStore) record(op string, start time.Time) {
	d := time.Since(start)
	t.mu.Lock()
	t.calls[op]++
	t.spent[op] += d
	t.mu.Unlock()
}

func (t *timedStore) Claim(ctx context.Context, p queue.ClaimParams) ([]*queue.Lease, error) {
	defer t.record("claim", time.Now())
	return t.Store.Claim(ctx, p)
}

func (t *timedStore) Finish(ctx context.Context, p queue.FinishParams) error {
	defer t.record("finish", time.Now())
	return t.Store.Finish(ctx, p)
}

func (t *timedStore) NextDue(ctx context.Context, now time.Time) (time.Time, bool, error) {
	defer t.record("nextdue", time.Now())
	return t.Store.NextDue(ctx, now)
}

// report adds, per operation, the number of calls and the total time in
// them (concurrent calls overlap: Finish from several workers).
func (t *timedStore) report(r *result) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, op := range []string{"claim", "finish", "nextdue"} {
		r.set(op+"_calls", t.calls[op])
		r.set(op+"_ms", t.spent[op])
	}
}
