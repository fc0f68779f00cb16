package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outboundmail/outbound/delivery/deliverytest"
	"github.com/outboundmail/outbound/delivery/rfc5321"
)

// TestMain lets the test binary play the scale-child process that runScale
// starts through os.Executable.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == scaleChildCommand {
		if err := run(context.Background(), os.Args[1:], os.Stdout, os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(101-i)*time.Millisecond) // unsorted on purpose
	}
	for _, tt := range []struct {
		p    float64
		want time.Duration
	}{{50, 50 * time.Millisecond}, {99, 99 * time.Millisecond}, {100, 100 * time.Millisecond}, {0.5, time.Millisecond}} {
		if got := percentile(d, tt.p); got != tt.want {
			t.Errorf("percentile(%v) = %v, want %v", tt.p, got, tt.want)
		}
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("percentile of nothing = %v", got)
	}
	if d[0] != 100*time.Millisecond {
		t.Error("percentile sorted its argument")
	}
}

func TestParseStat(t *testing.T) {
	// A command name with spaces and parentheses, as a process may choose.
	line := "4242 (a) b (c)) S 17 4242 4242 0 -1 4194560 100 0 0 0 250 50 7 3 20 0 1 0 100 1000 10\n"
	st, err := parseStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	want := procStat{pid: 4242, ppid: 17, cpu: 3 * time.Second, childCPU: 100 * time.Millisecond}
	if st != want {
		t.Errorf("parseStat = %+v, want %+v", st, want)
	}
	for _, bad := range []string{"", "12 (x", "12 (x) S 1 2", "x (y) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14"} {
		if _, err := parseStat([]byte(bad)); err == nil {
			t.Errorf("parseStat(%q) accepted", bad)
		}
	}
}

func TestSampleTreeSelf(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	// /proc counts CPU in clock ticks (10 ms): spend at least one first,
	// or a test run that starts with this one may see none yet.
	u := sampleTree(os.Getpid(), true)
	for deadline := time.Now().Add(10 * time.Second); u.CPU <= 0 && time.Now().Before(deadline); {
		spin := time.Now().Add(20 * time.Millisecond)
		for time.Now().Before(spin) {
		}
		u = sampleTree(os.Getpid(), true)
	}
	if u.Procs < 1 || u.CPU <= 0 || u.PSS <= 0 {
		t.Errorf("sampleTree(self) = %+v, want this process with some CPU and memory", u)
	}
	if m := selfMem(); m.Peak < m.Anon || m.RSS <= 0 {
		t.Errorf("selfMem = %+v", m)
	}
}

func TestMakeBody(t *testing.T) {
	for _, size := range []int{0, 1, 2, 77, 78, 79, 2048} {
		b := makeBody(size)
		_, payload, ok := bytes.Cut(b, []byte("\r\n\r\n"))
		if !ok {
			t.Fatalf("size %d: no header/body separator", size)
		}
		if size > 1 && len(payload) != size {
			t.Errorf("size %d: payload of %d octets", size, len(payload))
		}
		if err := checkCRLF(b); err != nil {
			t.Errorf("size %d: %v", size, err)
		}
	}
}

// checkCRLF runs a body through the same reader the delivery engine uses.
func checkCRLF(b []byte) error {
	var out bytes.Buffer
	_, err := out.ReadFrom(rfc5321.NewReader(bytes.NewReader(b)))
	if err == nil && !bytes.Equal(out.Bytes(), b) {
		err = fmt.Errorf("body changed by canonicalisation")
	}
	return err
}

// results parses the RESULT lines of out into one map per line.
func results(t *testing.T, out string) []map[string]string {
	t.Helper()
	var rs []map[string]string
	for line := range strings.Lines(out) {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "RESULT ")
		if !ok {
			continue
		}
		r := map[string]string{}
		for kv := range strings.FieldsSeq(rest) {
			k, v, _ := strings.Cut(kv, "=")
			r[k] = v
		}
		rs = append(rs, r)
	}
	return rs
}

func positive(t *testing.T, r map[string]string, keys ...string) {
	t.Helper()
	for _, k := range keys {
		if v, err := strconv.ParseFloat(r[k], 64); err != nil || v <= 0 {
			t.Errorf("%s %s = %q, want a positive number", r["phase"]+r["scale"], k, r[k])
		}
	}
}

// TestSend runs the three phases against smtp-sink and checks that every
// message arrived once per delivering phase.
func TestSend(t *testing.T) {
	sink := deliverytest.StartSink(t)
	var out bytes.Buffer
	c := &sendConfig{addr: sink.Addr(), store: "embedded", n: 300, size: 2048, producers: 4, workers: 8, conns: 4,
		perConn: 100, phases: "enqueue,drain,e2e", timeout: time.Minute}
	if err := runSend(t.Context(), c, &out); err != nil {
		t.Fatal(err)
	}
	rs := results(t, out.String())
	if len(rs) != 3 {
		t.Fatalf("want 3 RESULT lines:\n%s", out.String())
	}
	positive(t, rs[0], "enqueue_per_s", "cpu_s", "peak_rss_mb")
	positive(t, rs[1], "delivered_per_s")
	positive(t, rs[2], "enqueue_per_s", "delivered_per_s", "p50_ms", "p99_ms")
	if rs[1]["attempts"] != "300" || rs[2]["attempts"] != "300" {
		t.Errorf("attempts: drain %s, e2e %s, want 300 each", rs[1]["attempts"], rs[2]["attempts"])
	}
	// Every message arrived, and no more than once per delivering phase.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := sink.WaitCounters(ctx, 0, 600); err != nil {
		t.Fatal(err)
	}
	if _, msgs := sink.Counters(); msgs != 600 {
		t.Errorf("smtp-sink counted %d messages, want 600", msgs)
	}
}

func TestSendRefusesBadFlags(t *testing.T) {
	for _, c := range []*sendConfig{
		{store: "embedded", n: 1, producers: 1, workers: 1, conns: 1, phases: "e2e"},
		{addr: "x:1", store: "sqlite", n: 1, producers: 1, workers: 1, conns: 1, phases: "e2e"},
		{addr: "x:1", store: "embedded", n: 1, producers: 1, workers: 1, conns: 1, phases: "drain"},
		{addr: "x:1", store: "embedded", n: 1, producers: 1, workers: 1, conns: 1, phases: "warmup"},
		{addr: "x:1", store: "embedded", n: 0, producers: 1, workers: 1, conns: 1, phases: "e2e"},
	} {
		if err := c.check(); err == nil {
			t.Errorf("check accepted %+v", c)
		}
	}
}

// TestScale seeds a small store and measures restarts in child processes.
func TestScale(t *testing.T) {
	sink := deliverytest.StartSink(t)
	var out, errOut bytes.Buffer
	c := &scaleConfig{addr: sink.Addr(), dir: t.TempDir(), queued: 500, due: 10, dests: 7, size: 512, producers: 8,
		rounds: 2, workers: 4, cold: true}
	if err := runScale(t.Context(), c, &out, &errOut); err != nil {
		t.Fatalf("%v\n%s", err, errOut.String())
	}
	rs := results(t, out.String())
	if len(rs) != 1+2*2+2 {
		t.Fatalf("want seed, 4 restarts and 2 medians:\n%s", out.String())
	}
	positive(t, rs[0], "seed_per_s", "disk_mb")
	for _, r := range rs[1:5] {
		positive(t, r, "first_delivery_ms", "run_ms", "cpu_ms", "peak_rss_mb")
		if r["delivered"] != "10" {
			t.Errorf("restart delivered %s, want 10", r["delivered"])
		}
	}
	// A second run reuses the seeded store.
	c.reuse, c.rounds = true, 1
	errOut.Reset()
	if err := runScale(t.Context(), c, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(errOut.String(), "reusing") {
		t.Errorf("-reuse seeded again: %s", errOut.String())
	}
}

func TestTree(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel() // one sample at the start, one at the end
	var out bytes.Buffer
	if err := runTree(ctx, os.Getpid(), &out); err != nil {
		t.Fatal(err)
	}
	rs := results(t, out.String())
	if len(rs) != 1 {
		t.Fatalf("output: %s", out.String())
	}
	positive(t, rs[0], "tree_peak_pss_mb", "tree_procs")
	if err := runTree(ctx, 1<<30, &out); err == nil {
		t.Error("runTree of a missing process succeeded")
	}
}

// TestSendStopsAtFirstDeferral: a phase whose messages are deferred cannot
// finish (they wait minutes), so it fails at once with the server's reply.
func TestSendStopsAtFirstDeferral(t *testing.T) {
	sink := deliverytest.StartSink(t, "-r", "RCPT", "-b", "451 4.7.1 Try again later")
	c := &sendConfig{addr: sink.Addr(), store: "embedded", n: 50, size: 100, producers: 2, workers: 2, conns: 1,
		perConn: 100, phases: "e2e", timeout: time.Minute}
	err := runSend(t.Context(), c, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "451") {
		t.Fatalf("runSend = %v, want the 451 deferral", err)
	}
}
