package postgres

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/outboundmail/outbound/backoff"
	"github.com/outboundmail/outbound/delivery"
	"github.com/outboundmail/outbound/delivery/deliverytest"
	"github.com/outboundmail/outbound/queue"
)

// The cluster politeness tests run each node as a separate process: the
// test binary started again with -test.run=^TestClusterWorker$ and its
// assignment, as JSON, in workerEnv. Each process runs a queue.Queue on its
// own Store (own pool, own listener) over one schema, and delivers to a real
// SMTP server on 127.0.0.1 run by the parent test.
//
// Time: queue.Config refuses retries sooner than a minute, so a schedule of
// destination backoffs (1m, 2m, 4m …) takes minutes of real time. Instead
// every process, and the SMTP server, reads one compressed clock: virtual
// time is t0 + (wall time − Start) × Speed, with Start and Speed in the
// assignment. All processes compute it from the same wall clock, so they
// share one timeline without exchanging anything, and every duration the
// queue waits (backoffs, leases, polls, slot terms) passes Speed times
// faster. Only the order of events matters to the assertions, which count
// connections; processing delays (milliseconds of real time, seconds of
// virtual time) are far below the minute-scale backoffs.
const workerEnv = "OUTBOUND_CLUSTER_WORKER"

// clusterRun is the assignment of the worker processes of one run.
type clusterRun struct {
	Schema   string
	Relay    string        // the SMTP server, 127.0.0.1:port
	Owner    string        // this process's name, set per process
	Start    int64         // Unix nanoseconds when virtual time is t0; workers start Run then
	Speed    float64       // virtual seconds per real second
	RunFor   time.Duration // virtual; 0: until interrupted
	Workers  int           // queue.Config.Workers
	MaxConns int           // queue.Config.MaxConnsPerDestination
}

// workerReport is what a worker process prints when it stops.
type workerReport struct {
	Owner       string
	LateBy      time.Duration // real time between Start and the process being ready, if late
	Attempts    int64
	Delivered   int64
	Unavailable int64 // attempts after which the destination was put in backoff
	Failed      int64 // recipients bounced or expired: none are expected
}

const reportPrefix = "cluster-worker-report "

// scaledClock is the compressed clock shared by the processes of a run.
type scaledClock struct {
	start time.Time // wall time, no monotonic reading: the same in every process
	speed float64
}

func (r clusterRun) clock() scaledClock {
	return scaledClock{start: time.Unix(0, r.Start), speed: r.Speed}
}

// Now returns t0 plus the wall time since start, times speed.
func (c scaledClock) Now() time.Time {
	return t0.Add(time.Duration(float64(time.Since(c.start)) * c.speed))
}

// After fires after d of virtual time.
func (c scaledClock) After(d time.Duration) <-chan time.Time {
	ch := make(chan time.Time, 1)
	time.AfterFunc(time.Duration(float64(d)/c.speed), func() { ch <- c.Now() })
	return ch
}

// config is the queue configuration of every process of a run: a
// destination backoff of 1m, 2m, 4m, 8m, 16m without jitter.
func (r clusterRun) config(store queue.Store, clock backoff.Clock, obs queue.Observer) queue.Config {
	return queue.Config{
		Store: store,
		Deliverer: &delivery.Deliverer{
			Hostname:    r.Owner + ".test",
			Relay:       r.Relay,
			TLS:         delivery.TLSDisabled,
			IdleTimeout: -1, // one connection per attempt: the server counts attempts
		},
		Schedule:               backoff.Schedule{MinBackoff: time.Minute, MaxBackoff: 16 * time.Minute, Jitter: -1},
		Clock:                  clock,
		Workers:                r.Workers,
		MaxConnsPerDestination: r.MaxConns,
		LeaseFor:               10 * time.Minute,
		PollInterval:           time.Minute,
		StartupRamp:            -1,
		ShutdownTimeout:        time.Minute,
		Hostname:               "mta.test",
		Owner:                  r.Owner,
		Observer:               obs,
	}
}

// TestClusterWorker is one node of a cluster politeness test; it only runs
// as a process started by startWorkers.
func TestClusterWorker(t *testing.T) {
	raw := os.Getenv(workerEnv)
	if raw == "" {
		t.Skip("runs only as a worker process started by the TestClusterPoliteness tests")
	}
	var run clusterRun
	if err := json.Unmarshal([]byte(raw), &run); err != nil {
		t.Fatal(err)
	}
	store, err := Open(context.Background(), needDB(t), &Options{Schema: run.Schema})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	clock := run.clock()
	rep := workerReport{Owner: run.Owner}
	var attempts, delivered, unavailable, failed atomic.Int64
	obs := queue.ObserverFunc(func(e queue.Event) {
		switch {
		case e.Kind == queue.EventAttemptStarted:
			attempts.Add(1)
		case e.Kind == queue.EventDelivered:
			delivered.Add(1)
		case e.Kind == queue.EventAttemptFinished && e.DestinationUnavailable:
			unavailable.Add(1)
		case e.Kind == queue.EventBounced || e.Kind == queue.EventExpired:
			failed.Add(1)
		}
	})
	q, err := queue.New(run.config(store, clock, obs))
	if err != nil {
		t.Fatal(err)
	}

	// All processes start together: the race for a fresh destination is
	// part of what is tested.
	if wait := time.Until(time.Unix(0, run.Start)); wait > 0 {
		<-time.After(wait)
	} else {
		rep.LateBy = -wait
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if run.RunFor > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		go func() {
			select {
			case <-clock.After(run.RunFor):
				cancel()
			case <-ctx.Done():
			}
		}()
	}
	if err := q.Run(ctx); err != nil {
		t.Fatal(err)
	}
	rep.Attempts, rep.Delivered, rep.Unavailable, rep.Failed = attempts.Load(), delivered.Load(), unavailable.Load(), failed.Load()
	b, _ := json.Marshal(rep)
	fmt.Printf("%s%s\n", reportPrefix, b)
}

// workers are running worker processes.
type workers struct {
	cmds []*exec.Cmd
	outs []*bytes.Buffer
}

// startWorkers starts n worker processes for run (with Start and Owner
// filled in), enqueues nothing; they start Run at the returned clock's t0.
func startWorkers(t *testing.T, ctx context.Context, run clusterRun, n int) (*workers, scaledClock) {
	t.Helper()
	// Two seconds of real time for the processes to start and open their
	// stores (slow under -race on a busy machine), so that they all begin
	// at t0.
	run.Start = time.Now().Add(2 * time.Second).UnixNano()
	w := &workers{}
	for i := range n {
		run.Owner = fmt.Sprintf("node-%d", i+1)
		spec, err := json.Marshal(run)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestClusterWorker$", "-test.count=1")
		cmd.Env = append(os.Environ(), workerEnv+"="+string(spec))
		out := new(bytes.Buffer)
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		w.cmds, w.outs = append(w.cmds, cmd), append(w.outs, out)
	}
	t.Cleanup(func() {
		for _, c := range w.cmds {
			if c.ProcessState == nil {
				c.Process.Kill()
				c.Wait()
			}
		}
	})
	return w, run.clock()
}

// interrupt asks every worker to stop, as SIGINT would an application.
func (w *workers) interrupt() {
	for _, c := range w.cmds {
		c.Process.Signal(os.Interrupt)
	}
}

// wait waits for every worker to exit and returns their reports.
func (w *workers) wait(t *testing.T) []workerReport {
	t.Helper()
	var reps []workerReport
	for i, c := range w.cmds {
		if err := c.Wait(); err != nil {
			t.Errorf("worker %d: %v\n%s", i+1, err, w.outs[i])
			continue
		}
		sc := bufio.NewScanner(bytes.NewReader(w.outs[i].Bytes()))
		for sc.Scan() {
			if line, ok := strings.CutPrefix(sc.Text(), reportPrefix); ok {
				var r workerReport
				if err := json.Unmarshal([]byte(line), &r); err != nil {
					t.Fatal(err)
				}
				reps = append(reps, r)
				if r.Failed > 0 {
					t.Errorf("worker %s: %d recipients bounced or expired, want none", r.Owner, r.Failed)
				}
			}
		}
	}
	if len(reps) != len(w.cmds) && !t.Failed() {
		t.Fatalf("%d reports from %d workers", len(reps), len(w.cmds))
	}
	return reps
}

// enqueueCluster queues n messages for the run's relay, arrived and due
// at t0, when the workers start.
func enqueueCluster(t *testing.T, run clusterRun, n int) {
	t.Helper()
	store := openSchema(t, run.Schema, nil)
	run.Owner = "enqueuer"
	q, err := queue.New(run.config(store, clockwork.NewFakeClockAt(t0), nil))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range n {
		to := fmt.Sprintf("user%d@example.com", i)
		body := "From: <app@app.test>\r\nTo: <" + to + ">\r\nSubject: m" + fmt.Sprint(i) + "\r\n\r\nHello.\r\n"
		if _, err := q.Enqueue(ctx, queue.Envelope{From: "app@app.test", To: []string{to}}, strings.NewReader(body)); err != nil {
			t.Fatal(err)
		}
	}
}

// connLog records when a server accepted each connection, in virtual time.
type connLog struct {
	mu    sync.Mutex
	clock scaledClock
	at    []time.Time
}

func (l *connLog) add() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.at = append(l.at, l.clock.Now())
}

// deferringRun runs procs worker processes against a server that answers
// every connection with a 421 greeting, for runFor of virtual time, and
// returns the times of the connections it saw and the workers' reports.
func deferringRun(t *testing.T, procs int, runFor time.Duration) ([]time.Time, []workerReport) {
	run := clusterRun{Schema: newSchema(t), Speed: 400, RunFor: runFor, Workers: 4, MaxConns: 4}
	log := &connLog{}
	srv := deliverytest.NewRawServer(t, func(c *deliverytest.RawConn) {
		log.add()
		c.Reply("421 4.3.2 Service not available, closing transmission channel")
	})
	run.Relay = srv.Addr()
	enqueueCluster(t, run, 30)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	log.mu.Lock()
	w, clock := startWorkers(t, ctx, run, procs)
	log.clock = clock
	log.mu.Unlock()
	reps := w.wait(t)
	srv.Close()
	log.mu.Lock()
	defer log.mu.Unlock()
	slices.SortFunc(log.at, func(a, b time.Time) int { return a.Compare(b) })
	return log.at, reps
}

// TestClusterPoliteness_Deferring: three worker processes and one process
// face a destination that answers 421 to every connection, with 30 messages
// waiting for it. Whichever node connects, each connection after the first
// must wait the destination's backoff after the previous one: a 421 seen by
// one node defers the destination for all, the probes after each backoff
// are one for the whole cluster, and slow start (one connection slot for a
// destination no node has reached) holds across processes. So the three
// make no more connections in a window than the schedule allows one sender.
//
// The gaps are the property; the counts follow from them. Counts are not
// compared between the two runs: a run the loaded machine slowed down
// makes fewer connections in the window, which says nothing about the
// other one.
func TestClusterPoliteness_Deferring(t *testing.T) {
	needDB(t)
	if testing.Short() {
		t.Skip("starts worker processes; skipped with -short")
	}
	const (
		// The schedule allows connections at 0, 1, 3, 7, 15 and 31
		// minutes after the first one; processing delays (a millisecond
		// of real time is 0.4s of virtual time) only make them later.
		// The window ends halfway between the fifth and the sixth;
		// running 12 minutes longer leaves room for a slow start.
		runFor = 35 * time.Minute
		window = 23 * time.Minute
	)
	sched := backoff.Schedule{MinBackoff: time.Minute, MaxBackoff: 16 * time.Minute, Jitter: -1}
	// allowed is the most connections the schedule permits in a window
	// that starts with the first one.
	allowed := 1
	for next := sched.Interval(1); next < window; next += sched.Interval(allowed) {
		allowed++
	}
	check := func(name string, at []time.Time, reps []workerReport) {
		t.Helper()
		if len(at) == 0 {
			t.Fatalf("%s: the server saw no connection", name)
		}
		var offsets []string
		n := 0
		for i, a := range at {
			if a.Sub(at[0]) < window {
				n++
			}
			offsets = append(offsets, a.Sub(at[0]).Round(time.Second).String())
			// RFC 5321 §4.5.4.1: after i consecutive failures the
			// destination waits its backoff, whichever node tries next.
			if i > 0 {
				if gap, want := a.Sub(at[i-1]), sched.Interval(i); gap < want {
					t.Errorf("%s: connection %d came %v after the previous one, before the backoff of %v", name, i+1, gap, want)
				}
			}
		}
		t.Logf("%s: %d connections in the first %v (virtual) after the first one, the schedule allows %d; all at %v; reports %+v",
			name, n, window, allowed, offsets, reps)
		if n > allowed {
			t.Errorf("%s made %d connections to the deferring destination in %v, the schedule allows %d", name, n, window, allowed)
		}
	}
	at1, reps1 := deferringRun(t, 1, runFor)
	check("1 worker process", at1, reps1)
	at3, reps3 := deferringRun(t, 3, runFor)
	check("3 worker processes", at3, reps3)
}

// TestClusterPoliteness_ConnLimit: three worker processes deliver to a
// healthy but slow server with MaxConnsPerDestination 2; the server, which
// counts open connections, never has more than 2 at once.
func TestClusterPoliteness_ConnLimit(t *testing.T) {
	needDB(t)
	if testing.Short() {
		t.Skip("starts worker processes; skipped with -short")
	}
	const messages = 40
	run := clusterRun{Schema: newSchema(t), Speed: 60, Workers: 4, MaxConns: 2}
	var (
		clockMu      sync.Mutex
		clock        scaledClock
		active, peak atomic.Int32
		sessions     atomic.Int32
	)
	srv := deliverytest.NewRawServer(t, func(c *deliverytest.RawConn) {
		active.Add(1)
		defer active.Add(-1)
		sessions.Add(1)
		// A slow greeting (3s of virtual time), so that sessions overlap.
		clockMu.Lock()
		slow := clock.After(3 * time.Second)
		clockMu.Unlock()
		select {
		case <-slow:
		case <-c.Done():
			return
		}
		// Count the sessions open once this one has waited: a client
		// closes its connection (after QUIT) before it frees the slot,
		// but this server may see the end of that session a moment after
		// the next one arrives; it has seen it long before 3s of virtual
		// time, while a third connection really open at once lasts that
		// long itself.
		n := active.Load()
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		c.Greet()
		c.Serve("8BITMIME", "ENHANCEDSTATUSCODES")
	})
	run.Relay = srv.Addr()
	enqueueCluster(t, run, messages)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	clockMu.Lock()
	w, clk := startWorkers(t, ctx, run, 3)
	clock = clk
	clockMu.Unlock()
	got, err := srv.WaitMessages(ctx, messages)
	w.interrupt()
	reps := w.wait(t)
	if err != nil {
		t.Fatalf("waiting for %d messages: %v", messages, err)
	}
	byNode := map[string]int{}
	for _, m := range got {
		byNode[m.Helo]++
		if m.From != "app@app.test" {
			t.Errorf("the server received a message from <%s>, want only the queued ones", m.From)
		}
	}
	t.Logf("3 worker processes, MaxConnsPerDestination 2: %d sessions, at most %d open at once; messages per node %v; reports %+v",
		sessions.Load(), peak.Load(), byNode, reps)
	if p := peak.Load(); p > 2 {
		t.Errorf("the server saw %d connections at once, want at most 2", p)
	}
	if n := len(srv.Messages()); n != messages {
		t.Errorf("the server received %d messages, want %d (each once)", n, messages)
	}
	if len(byNode) < 2 {
		t.Errorf("messages came from %v: the test needs several nodes at work", byNode)
	}
}
