package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/outboundmail/outbound/delivery/deliverytest"
	"github.com/outboundmail/outbound/delivery/dsn"
)

// End-to-end tests: the outbound binary, built once, against Postfix's
// smtp-sink, an SMTP server nobody here wrote. They skip when smtp-sink is
// not installed (apt-get install postfix; .ci/run does it).

// e2eMessage is a complete message (nothing for send to add), with lines
// that need care on the wire: a leading dot, a lone dot (-i), a long line.
func e2eMessage(i int) string {
	return fmt.Sprintf("From: Alice <alice@example.org>\nTo: bob@[127.0.0.1]\nSubject: e2e %d\nDate: Mon, 02 Jan 2006 15:04:05 -0700\nMessage-ID: <e2e-%d@example.org>\n\nline one\n.\n..two dots\n%s\nend\n",
		i, i, strings.Repeat("x", 990))
}

func TestE2E(t *testing.T) {
	var b builder
	dir := t.TempDir() // outlives the subtests
	bin := func(t *testing.T) string { return b.get(t, dir) }
	t.Run("SinkDelivered", func(t *testing.T) { testSinkDelivered(t, bin) })
	t.Run("SinkDeferred", func(t *testing.T) { testSinkDeferred(t, bin) })
	t.Run("SinkBounced", func(t *testing.T) { testSinkBounced(t, bin) })
	t.Run("SinkLostAfterDot", func(t *testing.T) { testSinkLostAfterDot(t, bin) })
	t.Run("SIGTERM", func(t *testing.T) { testSigterm(t, bin) })
	t.Run("Postfix", func(t *testing.T) { testPostfixRelay(t, bin) })
	t.Run("Kill", func(t *testing.T) { testKill(t, bin) })
}

// testSinkDelivered sends N messages, each with its immediate attempt, and
// checks that smtp-sink received each once, byte for byte.
func testSinkDelivered(t *testing.T, bin func(*testing.T) string) {
	const n = 20
	dump := sinkDumpDir(t)
	sink := deliverytest.StartSink(t, "-d", dump+"/%Y%m%d%H%M%S.")
	path := bin(t)
	ob := newBinary(t, path, sink.Addr())
	for i := range n {
		code, out, errOut := ob.run(t, e2eMessage(i), "send", "-t", "-i")
		if code != 0 || !strings.Contains(errOut, "delivered") {
			t.Fatalf("send %d: exit %d, %q %q", i, code, out, errOut)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := sink.WaitCounters(ctx, 0, n); err != nil {
		t.Fatal(err)
	}
	if _, mesg := sink.Counters(); mesg != n {
		t.Errorf("smtp-sink counted %d messages, want %d", mesg, n)
	}
	got := make(map[string]string)
	for _, d := range readDumps(t, dump) {
		if _, dup := got[d.messageID]; dup {
			t.Errorf("%s received twice", d.messageID)
		}
		got[d.messageID] = d.content
	}
	for i := range n {
		id := fmt.Sprintf("<e2e-%d@example.org>", i)
		if got[id] != e2eMessage(i) {
			t.Errorf("%s arrived as\n%q\nwant\n%q", id, got[id], e2eMessage(i))
		}
	}
	if q := ob.queue(t); len(q) != 0 {
		t.Errorf("queue not empty: %+v", q)
	}
}

// testSinkDeferred: every RCPT gets 451. The message is deferred by the
// minimum backoff, and a queue run right after makes no second attempt.
func testSinkDeferred(t *testing.T, bin func(*testing.T) string) {
	sink := deliverytest.StartSink(t, "-r", "RCPT", "-b", "451 4.7.1 Try again later")
	ob := newBinary(t, bin(t), sink.Addr(), "OUTBOUND_MIN_BACKOFF=10m")
	code, _, errOut := ob.run(t, e2eMessage(1), "send", "-t", "-i")
	if code != 0 || !strings.Contains(errOut, "deferred") {
		t.Fatalf("send: exit %d, %q", code, errOut)
	}
	q := ob.queue(t)
	if len(q) != 1 || len(q[0].Recipients) != 1 {
		t.Fatalf("queue = %+v, want the one message", q)
	}
	r := q[0].Recipients[0]
	if r.State != "deferred" || r.Attempts != 1 || r.LastReply != "451 4.7.1 Try again later" {
		t.Errorf("recipient = %+v, want deferred after 1 attempt with the sink's 451", r)
	}
	if r.NextAttempt == nil || r.LastAttempt == nil || r.NextAttempt.Sub(*r.LastAttempt) < 10*time.Minute {
		t.Errorf("next attempt %v after last attempt %v: sooner than the 10m minimum backoff", r.NextAttempt, r.LastAttempt)
	}
	// A queue run now finds nothing due.
	if out := ob.mustRun(t, "", "run", "--once"); !strings.HasPrefix(out, "attempts 0,") {
		t.Errorf("run --once: %q, want no attempt", out)
	}
	probeSink(t, sink.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := sink.WaitCounters(ctx, 2, 0); err != nil {
		t.Fatal(err)
	}
	if sess, mesg := sink.Counters(); sess != 2 || mesg != 0 {
		t.Errorf("smtp-sink saw %d sessions and %d messages; want 2 and 0 (send's attempt and the probe)", sess, mesg)
	}
}

// testSinkBounced: every RCPT gets 550. The recipient fails and a
// notification to the sender is queued; it stays queued, since the
// sender's domain cannot be resolved here.
func testSinkBounced(t *testing.T, bin func(*testing.T) string) {
	sink := deliverytest.StartSink(t, "-f", "RCPT", "-B", "550 5.1.1 No such user")
	ob := newBinary(t, bin(t), sink.Addr())
	code, out, errOut := ob.run(t, e2eMessage(1), "send", "-t", "-i")
	if code != 0 || !strings.Contains(errOut, "failed permanently, notification") {
		t.Fatalf("send: exit %d, %q", code, errOut)
	}
	id := strings.TrimSpace(out)
	q := ob.queue(t)
	if len(q) != 1 || q[0].ID == id || q[0].Sender != "" || len(q[0].Recipients) != 1 || q[0].Recipients[0].Address != "alice@example.org" {
		t.Fatalf("queue = %+v, want only a notification from <> to alice@example.org", q)
	}
	show := ob.mustRun(t, "", "show", q[0].ID)
	content := show[strings.Index(show, "--- content ---\n")+len("--- content ---\n"):]
	rep, err := dsn.Parse(strings.NewReader(content))
	if err != nil {
		t.Fatalf("notification does not parse: %v\n%s", err, content)
	}
	if len(rep.Recipients) != 1 {
		t.Fatalf("notification about %d recipients, want 1", len(rep.Recipients))
	}
	r := rep.Recipients[0]
	if r.FinalRecipient != "bob@[127.0.0.1]" || r.Action != dsn.Failed || r.Status != "5.1.1" || !strings.Contains(r.DiagnosticCode, "550 5.1.1 No such user") {
		t.Errorf("notification recipient = %+v", r)
	}
	if !strings.Contains(content, "Message-ID: <e2e-1@example.org>") {
		t.Error("notification does not return the original header")
	}
}

// testSinkLostAfterDot: smtp-sink drops the connection after the final
// dot, without a reply. The message may have arrived, so it is deferred
// and flagged as a possible duplicate.
func testSinkLostAfterDot(t *testing.T, bin func(*testing.T) string) {
	sink := deliverytest.StartSink(t, "-q", ".")
	ob := newBinary(t, bin(t), sink.Addr())
	code, _, errOut := ob.run(t, e2eMessage(1), "send", "-t", "-i")
	if code != 0 || !strings.Contains(errOut, "may arrive twice") {
		t.Fatalf("send: exit %d, %q", code, errOut)
	}
	q := ob.queue(t)
	if len(q) != 1 {
		t.Fatalf("queue = %+v", q)
	}
	r := q[0].Recipients[0]
	if r.State != "deferred" || !r.PossibleDuplicate {
		t.Errorf("recipient = %+v, want deferred and flagged possible_duplicate", r)
	}
	if _, out, _ := ob.run(t, "", "queue"); !strings.Contains(out, "may have been delivered already") {
		t.Errorf("queue listing does not flag the possible duplicate:\n%s", out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := sink.WaitCounters(ctx, 1, 1); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains([]byte(errOut), []byte(q[0].ID)) {
		t.Errorf("send's report does not name the message: %q", errOut)
	}
}

// testSigterm: `outbound run` stops on SIGTERM with status 0, after serving
// operator commands on its control socket, and removes the socket.
func testSigterm(t *testing.T, bin func(*testing.T) string) {
	sink := deliverytest.StartSink(t)
	ob := newBinary(t, bin(t), sink.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := ob.cmd(ctx, "", "run")
	stderr, err := c.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(stderr)
	for lines.Scan() && !strings.Contains(lines.Text(), "queue running") {
	}
	// The running queue takes the message over its socket and delivers it.
	if code, _, errOut := ob.run(t, e2eMessage(1), "send", "-t", "-i"); code != 0 {
		t.Fatalf("send to the running queue: exit %d %s", code, errOut)
	}
	if err := sink.WaitCounters(ctx, 0, 1); err != nil {
		t.Fatal(err)
	}
	c.Process.Signal(syscall.SIGTERM)
	var rest strings.Builder
	for lines.Scan() {
		rest.WriteString(lines.Text() + "\n")
	}
	if err := c.Wait(); err != nil {
		t.Errorf("run after SIGTERM: %v\n%s", err, rest.String())
	}
	if !strings.Contains(rest.String(), "queue stopped") {
		t.Errorf("no orderly stop in the log:\n%s", rest.String())
	}
	if _, err := os.Stat(filepath.Join(ob.spool, "control.sock")); err == nil {
		t.Error("control socket left behind")
	}
}
