package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboundmail/outbound/delivery"
	"github.com/outboundmail/outbound/queue"
	"github.com/outboundmail/outbound/queue/embedded"
	"github.com/outboundmail/outbound/queue/postgres"
)

// sendConfig is the workload of the send command.
type sendConfig struct {
	addr       string // SMTP server every message is relayed to
	store      string // "embedded" or "postgres"
	dir        string // parent of the embedded stores; "" means a temporary directory
	pg         string // PostgreSQL connection string
	n          int    // messages per phase
	size       int    // payload octets after the header, as smtp-source -l
	producers  int    // goroutines calling Enqueue
	workers    int    // queue.Config.Workers
	conns      int    // connections to the relay (queue and deliverer limits)
	perConn    int    // delivery.Deliverer.MaxMessagesPerConn
	phases     string // comma-separated phases
	cpuprofile string
	trace      string
	timeout    time.Duration
}

func (c *sendConfig) flags(fs *flag.FlagSet) {
	fs.StringVar(&c.addr, "addr", "", "SMTP `host:port` to relay every message to (required), e.g. a Postfix smtp-sink")
	fs.StringVar(&c.store, "store", "embedded", "queue store: embedded or postgres")
	fs.StringVar(&c.dir, "dir", "", "`directory` for the embedded stores (default: a temporary directory, removed)")
	fs.StringVar(&c.pg, "pg", "postgres://postgres@127.0.0.1:5432/test?pool_max_conns=16&sslmode=disable",
		"PostgreSQL `connection string` (TLS off: loopback); each phase uses a schema of its own, dropped at the end")
	fs.IntVar(&c.n, "n", 10000, "`messages` per phase")
	fs.IntVar(&c.size, "size", 2048, "payload `octets` per message, after a header of about 200 octets (as smtp-source -l)")
	fs.IntVar(&c.producers, "producers", 16, "concurrent goroutines calling Enqueue")
	fs.IntVar(&c.workers, "workers", 40, "queue Config.Workers (attempts in flight)")
	fs.IntVar(&c.conns, "conns", 20, "connections to the relay: Config.MaxConnsPerDestination and the Deliverer's limits (20: Postfix's default_destination_concurrency_limit)")
	fs.IntVar(&c.perConn, "per-conn", 1000, "Deliverer.MaxMessagesPerConn (transactions per connection)")
	fs.StringVar(&c.phases, "phases", "enqueue,drain,e2e",
		"comma-separated `phases`: enqueue (no delivery running), drain (deliver what enqueue queued), e2e (enqueue while Run delivers)")
	fs.StringVar(&c.cpuprofile, "cpuprofile", "", "write a CPU profile of the phases run to `file` (-phases e2e for the end-to-end run alone)")
	fs.StringVar(&c.trace, "trace", "", "write an execution trace of the phases run to `file` (go tool trace)")
	fs.DurationVar(&c.timeout, "timeout", 5*time.Minute, "give up a phase after this long")
}

func (c *sendConfig) check() error {
	if c.addr == "" {
		return errors.New("-addr is required")
	}
	if c.store != "embedded" && c.store != "postgres" {
		return fmt.Errorf("-store %q: want embedded or postgres", c.store)
	}
	if c.n < 1 || c.size < 0 || c.producers < 1 || c.workers < 1 || c.conns < 1 {
		return errors.New("-n, -producers, -workers and -conns must be positive")
	}
	ps := strings.Split(c.phases, ",")
	for _, p := range ps {
		if p != "enqueue" && p != "drain" && p != "e2e" {
			return fmt.Errorf("-phases: unknown phase %q", p)
		}
	}
	if slices.Contains(ps, "drain") && !slices.Contains(ps, "enqueue") {
		return errors.New("-phases: drain needs enqueue before it")
	}
	return nil
}

// runSend runs the phases and prints one RESULT line per phase.
func runSend(ctx context.Context, c *sendConfig, out io.Writer) error {
	if err := c.check(); err != nil {
		return err
	}
	base := c.dir
	if base == "" && c.store == "embedded" {
		d, err := os.MkdirTemp("", "loadtest-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		base = d
	}
	var pg *pgServer
	if c.store == "postgres" {
		var err error
		if pg, err = findPostgres(ctx, c.pg); err != nil {
			return err
		}
		defer pg.close()
	}
	stopProfile, err := startProfiling(c.cpuprofile, pprof.StartCPUProfile, pprof.StopCPUProfile)
	if err != nil {
		return err
	}
	defer stopProfile()
	stopTrace, err := startProfiling(c.trace, trace.Start, trace.Stop)
	if err != nil {
		return err
	}
	defer stopTrace()
	body := makeBody(c.size)
	var enq *phaseEnv // the enqueue phase's queue, which drain delivers
	defer func() {
		if enq != nil {
			enq.close()
		}
	}()
	for p := range strings.SplitSeq(c.phases, ",") {
		var (
			r   *result
			err error
		)
		switch p {
		case "enqueue":
			if enq, err = newPhaseEnv(ctx, c, base, pg, "enqueue"); err != nil {
				return err
			}
			r, err = enq.enqueuePhase(ctx, body)
		case "drain":
			r, err = enq.drainPhase(ctx)
		case "e2e":
			r, err = e2ePhase(ctx, c, base, pg, body)
		}
		if err != nil {
			return fmt.Errorf("phase %s: %w", p, err)
		}
		r.write(out)
	}
	return nil
}

// startProfiling starts a profiler (start, stop: pprof's CPU profile or the
// execution tracer) writing to the file at path, and returns what stops it;
// an empty path starts nothing.
func startProfiling(path string, start func(io.Writer) error, stop func()) (func(), error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := start(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		stop()
		f.Close()
	}, nil
}

// makeBody returns a message like smtp-source's: a short header and size
// octets of text in lines of at most 78 octets.
func makeBody(size int) []byte {
	var b bytes.Buffer
	b.WriteString("From: <a@example.org>\r\nTo: <b@example.com>\r\nSubject: loadtest\r\n" +
		"Date: Thu, 01 Jan 2026 00:00:00 +0000\r\nMessage-ID: <loadtest@example.org>\r\n\r\n")
	text := strings.Repeat("0123456789", 8)
	k, r := size/78, size%78 // lines of 76 characters and CR LF, and what is left
	if r == 1 && k > 0 {     // no 1-octet line: lengthen the last full one instead
		k--
		r = 79
	}
	for range k {
		b.WriteString(text[:76] + "\r\n")
	}
	if r > 0 {
		b.WriteString(text[:max(r-2, 0)] + "\r\n")
	}
	return b.Bytes()
}

// phaseEnv is a fresh store, a queue and a deliverer for one phase.
type phaseEnv struct {
	c     *sendConfig
	name  string
	pg    *pgServer
	store queue.Store
	drop  func() // removes the store's data
	d     *delivery.Deliverer
	q     *queue.Queue
	obs   *observer
}

func newPhaseEnv(ctx context.Context, c *sendConfig, base string, pg *pgServer, name string) (*phaseEnv, error) {
	e := &phaseEnv{c: c, name: name, pg: pg, obs: newObserver(c.n)}
	switch c.store {
	case "embedded":
		dir := filepath.Join(base, name)
		if err := os.RemoveAll(dir); err != nil {
			return nil, err
		}
		s, err := embedded.Open(dir, nil)
		if err != nil {
			return nil, err
		}
		e.store, e.drop = s, func() { os.RemoveAll(dir) }
	case "postgres":
		schema := fmt.Sprintf("loadtest_%d_%s", os.Getpid(), name)
		if err := pg.dropSchema(ctx, schema); err != nil {
			return nil, err
		}
		s, err := postgres.Open(ctx, c.pg, &postgres.Options{Schema: schema})
		if err != nil {
			return nil, err
		}
		e.store, e.drop = s, func() { _ = pg.dropSchema(context.Background(), schema) }
	}
	e.d = &delivery.Deliverer{
		Hostname:               "loadtest.example",
		Relay:                  c.addr,
		TLS:                    delivery.TLSDisabled,
		MaxConnsPerDestination: c.conns,
		MaxIdlePerDestination:  c.conns,
		MaxMessagesPerConn:     c.perConn,
	}
	q, err := queue.New(queue.Config{
		Store:                  e.store,
		Deliverer:              e.d,
		Workers:                c.workers,
		MaxConnsPerDestination: c.conns,
		StartupRamp:            -1, // measure the steady state, not the ramp after a restart
		Hostname:               "loadtest.example",
		Observer:               e.obs,
	})
	if err != nil {
		e.close()
		return nil, err
	}
	e.q = q
	return e, nil
}

func (e *phaseEnv) close() {
	if e.q != nil {
		e.q.Close()
	}
	e.d.Close()
	e.store.Close()
	e.drop()
}

// usage is what a phase consumed: wall time, this process's CPU and peak
// RSS, and the PostgreSQL server's CPU.
type usage struct {
	start    time.Time
	cpu0     time.Duration
	pgCPU0   time.Duration
	pg       *pgServer
	mem0     runtime.MemStats
	stop     chan struct{}
	peakAnon chan int64 // the largest RssAnon seen, once stop is closed
}

func startUsage(pg *pgServer) *usage {
	resetPeakRSS()
	u := &usage{pg: pg, cpu0: selfCPU(), stop: make(chan struct{}), peakAnon: make(chan int64, 1)}
	runtime.ReadMemStats(&u.mem0)
	// VmHWM counts the database pages bbolt maps (file-backed, reclaimable)
	// with the heap; sample RssAnon for the process's own memory.
	go func() {
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		peak := selfMem().Anon
		for {
			select {
			case <-u.stop:
				u.peakAnon <- max(peak, selfMem().Anon)
				return
			case <-t.C:
				peak = max(peak, selfMem().Anon)
			}
		}
	}()
	if pg != nil {
		u.pgCPU0 = pg.cpu()
	}
	u.start = time.Now()
	return u
}

func (u *usage) report(r *result) {
	r.set("cpu_s", fmt.Sprintf("%.2f", (selfCPU()-u.cpu0).Seconds()))
	close(u.stop)
	m := selfMem()
	r.set("peak_rss_mb", mb(m.Peak))
	r.set("peak_anon_mb", mb(<-u.peakAnon))
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	r.set("alloc_mb", mb(int64(ms.TotalAlloc-u.mem0.TotalAlloc)))
	r.set("gc", ms.NumGC-u.mem0.NumGC)
	if u.pg != nil {
		r.set("pg_cpu_s", fmt.Sprintf("%.2f", (u.pg.cpu()-u.pgCPU0).Seconds()))
	}
}

func (e *phaseEnv) header(phase string) *result {
	r := newResult()
	r.set("phase", phase)
	r.set("store", e.c.store)
	r.set("n", e.c.n)
	r.set("size", e.c.size)
	return r
}

// enqueueAll enqueues c.n messages from c.producers goroutines and returns
// how long it took.
func (e *phaseEnv) enqueueAll(ctx context.Context, body []byte) (time.Duration, error) {
	start := time.Now()
	var next atomic.Int64
	errc := make(chan error, e.c.producers)
	var wg sync.WaitGroup
	for range e.c.producers {
		wg.Go(func() {
			env := queue.Envelope{From: "a@example.org", To: []string{"b@example.com"}}
			for next.Add(1) <= int64(e.c.n) {
				if _, err := e.q.Enqueue(ctx, env, bytes.NewReader(body)); err != nil {
					errc <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	return time.Since(start), <-errc
}

// enqueuePhase measures durable enqueue alone: nothing is being delivered.
func (e *phaseEnv) enqueuePhase(ctx context.Context, body []byte) (*result, error) {
	u := startUsage(e.pg)
	took, err := e.enqueueAll(ctx, body)
	if err != nil {
		return nil, err
	}
	r := e.header("enqueue")
	r.set("producers", e.c.producers)
	r.set("enqueue_per_s", rate(e.c.n, took))
	r.set("wall_s", fmt.Sprintf("%.2f", took.Seconds()))
	u.report(r)
	return r, nil
}

// drainPhase starts Run on the queue the enqueue phase filled and measures
// how fast it empties: the queue → relay rate.
func (e *phaseEnv) drainPhase(ctx context.Context) (*result, error) {
	u := startUsage(e.pg)
	done, err := e.runUntilDone(ctx, nil)
	if err != nil {
		return nil, err
	}
	r := e.header("drain")
	e.setDelivery(r, done.Sub(u.start))
	u.report(r)
	return r, nil
}

// e2ePhase enqueues into a fresh store while Run delivers, and measures
// from the first Enqueue to the last delivery.
func e2ePhase(ctx context.Context, c *sendConfig, base string, pg *pgServer, body []byte) (*result, error) {
	e, err := newPhaseEnv(ctx, c, base, pg, "e2e")
	if err != nil {
		return nil, err
	}
	defer e.close()
	u := startUsage(pg)
	var took time.Duration
	done, err := e.runUntilDone(ctx, func(ctx context.Context) error {
		var err error
		took, err = e.enqueueAll(ctx, body)
		return err
	})
	if err != nil {
		return nil, err
	}
	r := e.header("e2e")
	r.set("producers", c.producers)
	r.set("enqueue_per_s", rate(c.n, took))
	e.setDelivery(r, done.Sub(u.start))
	r.set("p50_ms", e.obs.lat.percentile(50))
	r.set("p99_ms", e.obs.lat.percentile(99))
	r.set("max_ms", e.obs.lat.percentile(100))
	u.report(r)
	return r, nil
}

func (e *phaseEnv) setDelivery(r *result, took time.Duration) {
	r.set("workers", e.c.workers)
	r.set("conns", e.c.conns)
	r.set("delivered_per_s", rate(e.c.n, took))
	r.set("wall_s", fmt.Sprintf("%.2f", took.Seconds()))
	r.set("attempts", e.obs.attempts.Load())
}

// runUntilDone runs the queue, and produce alongside it if not nil, until
// every message is delivered; it returns when the last one was. The first
// deferral or bounce fails the phase: its message would wait minutes.
func (e *phaseEnv) runUntilDone(ctx context.Context, produce func(context.Context) error) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, e.c.timeout)
	defer cancel()
	runCtx, stopRun := context.WithCancel(ctx)
	runErr := make(chan error, 1)
	go func() { runErr <- e.q.Run(runCtx) }()
	defer func() {
		stopRun()
		<-runErr
	}()
	prodErr := make(chan error, 1)
	if produce != nil {
		go func() { prodErr <- produce(ctx) }()
	}
	for {
		select {
		case <-e.obs.failedc:
			// A deferral waits minutes (and may put the relay in backoff):
			// the phase cannot finish, so stop at once.
			return time.Time{}, fmt.Errorf("a message was not delivered: %s", e.obs.firstFailure())
		case <-e.obs.done:
			if f := e.obs.failed.Load(); f > 0 {
				return time.Time{}, fmt.Errorf("%d messages not delivered, first: %s", f, e.obs.firstFailure())
			}
			return e.obs.doneAt, nil
		case err := <-prodErr:
			if err != nil {
				return time.Time{}, err
			}
		case err := <-runErr:
			return time.Time{}, fmt.Errorf("queue.Run returned early: %v", err)
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("%d of %d delivered after %v: %w", e.obs.delivered.Load(), e.c.n, e.c.timeout, ctx.Err())
		}
	}
}

// observer counts outcomes and collects enqueue → delivered latencies.
type observer struct {
	n         int64
	delivered atomic.Int64
	failed    atomic.Int64
	attempts  atomic.Int64
	lat       latencies
	once      sync.Once
	done      chan struct{}
	doneAt    time.Time     // set before done is closed
	failedc   chan struct{} // closed at the first outcome other than delivered
	mu        sync.Mutex
	failure   string
}

func newObserver(n int) *observer {
	return &observer{n: int64(n), done: make(chan struct{}), failedc: make(chan struct{}), lat: latencies{d: make([]time.Duration, 0, n)}}
}

// Observe implements queue.Observer.
func (o *observer) Observe(e queue.Event) {
	var total int64
	switch e.Kind {
	case queue.EventAttemptStarted:
		o.attempts.Add(1)
		return
	case queue.EventDelivered:
		o.lat.add(e.Time.Sub(e.Arrived))
		total = o.delivered.Add(1) + o.failed.Load()
	case queue.EventDeferred, queue.EventBounced, queue.EventExpired:
		o.mu.Lock()
		if o.failure == "" {
			o.failure = fmt.Sprintf("%v %s", e.Kind, describe(e.Result))
			close(o.failedc)
		}
		o.mu.Unlock()
		total = o.failed.Add(1) + o.delivered.Load()
	default:
		return
	}
	if total >= o.n {
		o.once.Do(func() {
			o.doneAt = time.Now()
			close(o.done)
		})
	}
}

func (o *observer) firstFailure() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.failure
}

func describe(r *queue.Outcome) string {
	if r == nil {
		return "(no attempt)"
	}
	if r.Error != "" {
		return r.Error
	}
	return r.Reply.String()
}

// pgServer is the local PostgreSQL server, for its CPU accounting and for
// dropping the phases' schemas.
type pgServer struct {
	pool       *pgxpool.Pool
	postmaster int // 0 when the server is not on this machine's /proc
}

func findPostgres(ctx context.Context, conn string) (*pgServer, error) {
	pool, err := pgxpool.New(ctx, conn)
	if err != nil {
		return nil, err
	}
	s := &pgServer{pool: pool}
	var backend int
	if err := pool.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&backend); err != nil {
		pool.Close()
		return nil, fmt.Errorf("PostgreSQL at %s: %w", conn, err)
	}
	// The backend's parent is the postmaster, which reaps every backend:
	// its children's CPU ends up in its cutime.
	if st, err := readStat(backend); err == nil {
		if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", st.ppid)); strings.TrimSpace(string(comm)) == "postgres" {
			s.postmaster = st.ppid
		}
	}
	return s, nil
}

// cpu returns the CPU used so far by the server and its processes, or 0.
func (s *pgServer) cpu() time.Duration {
	if s == nil || s.postmaster == 0 {
		return 0
	}
	return sampleTree(s.postmaster, false).CPU
}

func (s *pgServer) dropSchema(ctx context.Context, schema string) error {
	_, err := s.pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+schema+" CASCADE")
	return err
}

func (s *pgServer) close() { s.pool.Close() }
