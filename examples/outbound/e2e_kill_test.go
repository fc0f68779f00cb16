package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outboundmail/outbound/delivery"
	"github.com/outboundmail/outbound/delivery/deliverytest"
	"github.com/outboundmail/outbound/queue"
	"github.com/outboundmail/outbound/queue/embedded"
)

const (
	killMessages    = 2000
	killTimes       = 20
	killConcurrency = 8
	// killInFlight bounds the messages a kill can leave delivered but not
	// recorded: the queue runs at most MaxConnsPerDestination (default 4)
	// attempts at once at the one destination, and an attempt that is
	// done with it keeps its worker until its outcome is recorded, so
	// those unrecorded attempts are at most Workers (--concurrency).
	killInFlight = killConcurrency
)

// testKill delivers 2,000 messages with `outbound run` to smtp-sink and
// SIGKILLs the process at random moments (after a random number of
// messages, from none to 80) 20 times, restarting it each time, then lets
// a last `run --drain` finish. Every message must arrive, and a message
// may arrive twice only when a killed process had it in flight: sent, and
// the server's reply not yet recorded.
func testKill(t *testing.T, bin func(*testing.T) string) {
	if testing.Short() {
		t.Skip("kill test: 2,000 messages and 20 restarts; skipped with -short")
	}
	dump := sinkDumpDir(t)
	sink := deliverytest.StartSink(t, "-d", dump+"/%Y%m%d%H%M%S.")
	ob := newBinary(t, bin(t), sink.Addr(),
		"OUTBOUND_MIN_BACKOFF=1s", "OUTBOUND_LEASE_FOR=5s", "OUTBOUND_STARTUP_RAMP=-1s",
		"OUTBOUND_CONCURRENCY="+strconv.Itoa(killConcurrency), "OUTBOUND_LOG_LEVEL=warn")
	enqueueKillMessages(t, ob.spool, sink.Addr())

	seed := uint64(time.Now().UnixNano())
	t.Logf("kill test seed %d", seed)
	rnd := rand.New(rand.NewPCG(seed, seed))
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	start := time.Now()
	for gen := 1; gen <= killTimes; gen++ {
		_, base := sink.Counters()
		after := rnd.IntN(81)
		c := ob.cmd(ctx, "", "run", "--helo", fmt.Sprintf("gen-%d.example", gen))
		var errOut bytes.Buffer
		c.Stderr = &errOut
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		err := sink.WaitCounters(ctx, 0, base+after)
		c.Process.Kill() // SIGKILL: no shutdown, no flush
		c.Wait()
		if err != nil {
			t.Fatalf("generation %d: waiting for %d more messages: %v\n%s", gen, after, err, errOut.String())
		}
	}
	_, killed := sink.Counters()
	final := ob.cmd(ctx, "", "run", "--drain", "--helo", fmt.Sprintf("gen-%d.example", killTimes+1))
	if out, err := final.CombinedOutput(); err != nil {
		t.Fatalf("final run --drain: %v\n%s", err, out)
	}
	elapsed := time.Since(start)
	if q := ob.queue(t); len(q) != 0 {
		t.Errorf("queue not empty after the final run: %d messages", len(q))
	}
	checkKillDumps(t, readDumps(t, dump))
	_, total := sink.Counters()
	t.Logf("kill test: %d messages, %d SIGKILLs, %d end-of-data before the last kill, %d in all, %v",
		killMessages, killTimes, killed, total, elapsed.Round(time.Second))
}

// enqueueKillMessages queues the test's messages in the spool, in-process
// (2,000 runs of `send` would test process start-up, not the queue).
func enqueueKillMessages(t *testing.T, spool, sinkAddr string) {
	t.Helper()
	_, port, _ := net.SplitHostPort(sinkAddr)
	p, _ := strconv.Atoi(port)
	store, err := embedded.Open(spool, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	q, err := queue.New(queue.Config{Store: store, Deliverer: &delivery.Deliverer{MXPort: p}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, killMessages)
	work := make(chan int)
	for range 8 {
		wg.Go(func() {
			for i := range work {
				body := fmt.Sprintf("From: alice@example.org\r\nTo: bob@[127.0.0.1]\r\nSubject: kill %d\r\nMessage-ID: <kill-%d@example.org>\r\n\r\nmessage %d\r\n", i, i, i)
				if _, err := q.Enqueue(context.Background(), queue.Envelope{From: "alice@example.org", To: []string{"bob@[127.0.0.1]"}}, strings.NewReader(body)); err != nil {
					errs <- err
				}
			}
		})
	}
	for i := range killMessages {
		work <- i
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// checkKillDumps checks what smtp-sink received: every message at least
// once; every extra copy sent by a process that was then killed (the
// final process, which shut down normally, never sends a message another
// process delivered already unless that one was killed with it in
// flight); no process sends one message twice; and no killed process
// accounts for more duplicates than it could have had attempts in flight.
func checkKillDumps(t *testing.T, dumps []dumped) {
	t.Helper()
	gens := make(map[string][]int) // Message-ID → generation of each copy
	for _, d := range dumps {
		g, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(d.helo, "gen-"), ".example"))
		if err != nil {
			t.Fatalf("dump with EHLO %q", d.helo)
		}
		gens[d.messageID] = append(gens[d.messageID], g)
	}
	missing, dups := 0, 0
	perGen := make(map[int]int) // duplicates blamed on each killed generation
	for i := range killMessages {
		id := fmt.Sprintf("<kill-%d@example.org>", i)
		g := gens[id]
		if len(g) == 0 {
			missing++
			continue
		}
		sort.Ints(g)
		for j := 0; j+1 < len(g); j++ {
			dups++
			switch {
			case g[j] == g[j+1]:
				t.Errorf("%s sent twice by generation %d", id, g[j])
			case g[j] > killTimes:
				t.Errorf("%s: the final, unkilled run sent a copy before another one", id)
			default:
				perGen[g[j]]++
			}
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d messages never arrived", missing, killMessages)
	}
	if len(gens) != killMessages {
		t.Errorf("smtp-sink received %d distinct messages, want %d", len(gens), killMessages)
	}
	most := 0
	for g, n := range perGen {
		most = max(most, n)
		if n > killInFlight {
			t.Errorf("generation %d was killed with %d messages in flight, more than the %d attempts it may run at once", g, n, killInFlight)
		}
	}
	t.Logf("kill test: %d copies received, %d duplicates (%d distinct messages), from %d of %d kills, at most %d per kill", len(dumps), dups, len(gens), len(perGen), killTimes, most)
}
