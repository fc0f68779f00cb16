package main

import (
	"bufio"
	"context"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/outboundmail/outbound/delivery/deliverytest"
)

// startRun runs `outbound run` in-process on c's spool until the test
// ends, and returns once it serves its control socket.
func startRun(t *testing.T, c *cli, args ...string) {
	t.Helper()
	pr, pw := io.Pipe()
	env := map[string]string{"OUTBOUND_SPOOL": c.spool}
	for k, v := range c.env {
		env[k] = v
	}
	a := &app{stdin: strings.NewReader(""), stdout: io.Discard, stderr: pw, getenv: func(k string) string { return env[k] }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	go func() {
		code := a.main(ctx, "outbound", append([]string{"run"}, args...))
		pw.Close()
		done <- code
	}()
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		signalled := false
		for sc.Scan() {
			if !signalled && strings.Contains(sc.Text(), "queue running") {
				close(ready)
				signalled = true
			}
		}
		if !signalled {
			close(ready)
		}
	}()
	<-ready
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("run exited %d", code)
		}
		if _, err := os.Stat(c.spool + "/control.sock"); err == nil {
			t.Error("control socket left behind")
		}
	})
}

// TestControlSocket: while `outbound run` holds the spool, send, queue,
// show, hold and delete reach it through its control socket.
func TestControlSocket(t *testing.T) {
	srv := deliverytest.NewServer(t, &deliverytest.Script{
		Rcpt: deliverytest.RejectRcpt(451, smtp.EnhancedCode{4, 7, 1}, "try later", "slow@example.com"),
	})
	c := newCLI(t)
	c.env["OUTBOUND_RELAY"] = srv.Addr
	c.env["OUTBOUND_TLS"] = "disabled"
	startRun(t, c, "--startup-ramp", "-1s")

	// Delivered by the running queue, not by send.
	code, _, errOut := c.run("outbound", tMessage, "send", "-t")
	if code != 0 {
		t.Fatalf("send: exit %d: %s", code, errOut)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := srv.WaitMessages(ctx, 1); err != nil {
		t.Fatal(err)
	}
	// Deferred by the server: stays in the queue, visible and manageable
	// through the socket.
	_, out, errOut := c.run("outbound", "Subject: s\n\nx\n", "send", "-f", "a@example.org", "slow@example.com")
	id := strings.TrimSpace(out)
	if id == "" {
		t.Fatalf("send: %s", errOut)
	}
	find := func() *jsonMessage {
		for _, m := range c.queue() {
			if m.ID == id {
				return &m
			}
		}
		return nil
	}
	if m := find(); m == nil || (m.Recipients[0].State != "queued" && m.Recipients[0].State != "deferred") {
		t.Fatalf("queue entry for %s = %+v, want it waiting", id, m)
	}
	if code, out, _ := c.run("outbound", "", "show", id); code != 0 || !strings.Contains(out, "Subject: s") {
		t.Errorf("show through the socket: exit %d\n%s", code, out)
	}
	if code, _, errOut := c.run("outbound", "", "hold", id); code != 0 {
		t.Errorf("hold: %s", errOut)
	}
	if m := find(); m == nil || m.Recipients[0].State != "held" {
		t.Errorf("after hold: %+v", m)
	}
	if code, _, errOut := c.run("outbound", "", "delete", id); code != 0 {
		t.Errorf("delete: %s", errOut)
	}
	if code, _, errOut := c.run("outbound", "", "show", id); code != exitFailure || !strings.Contains(errOut, "no such message") {
		t.Errorf("show after delete: exit %d %q", code, errOut)
	}
	if code, _, errOut := c.run("outbound", "Subject: x\n\nnul\x00\n", "send", "-f", "a@example.org", "b@example.com"); code != exitDataErr || !strings.Contains(errOut, "nothing queued") {
		t.Errorf("refused message through the socket: exit %d %q", code, errOut)
	}
}
