package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/outboundmail/outbound/delivery/dsn"
)

// TestDemo runs the demo as `outbound demo | cat` would (plain output) on a
// faster clock, and checks the story it tells: every first attempt
// greylisted, every mailbox but one delivered on the retry, one bounce,
// and its notification delivered back to the sender.
func TestDemo(t *testing.T) {
	var out bytes.Buffer
	a := &app{stdout: &out, stderr: &out, getenv: func(string) string { return "" }}
	res, err := a.demo(context.Background(), demoOptions{speed: 60, timeout: 25 * time.Second})
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	if res.Messages != 4 || res.Recipients != 5 {
		t.Errorf("messages, recipients = %d, %d; want 4, 5", res.Messages, res.Recipients)
	}
	// Four recipients and the notification to the sender were each
	// greylisted once, then delivered.
	if res.Delivered != 5 || res.Deferrals != 5 || res.Bounced != 1 || res.DSNs != 1 || res.Expired != 0 {
		t.Errorf("tally = %+v; want 5 delivered, 5 deferrals, 1 bounced, 1 DSN", res.demoTally)
	}
	if len(res.Received) != 5 {
		t.Errorf("server received %d messages, want 5", len(res.Received))
	}
	for _, m := range res.Received {
		for _, to := range m.To {
			if to == demoUnknown {
				t.Errorf("server accepted a message for %s", demoUnknown)
			}
		}
	}
	if res.DSN == nil {
		t.Fatalf("no notification reached the server\n%s", out.String())
	}
	rep, err := dsn.Parse(bytes.NewReader(res.DSN))
	if err != nil {
		t.Fatalf("notification does not parse: %v", err)
	}
	if len(rep.Recipients) != 1 {
		t.Fatalf("notification has %d recipients, want 1", len(rep.Recipients))
	}
	r := rep.Recipients[0]
	if r.FinalRecipient != demoUnknown || r.Action != dsn.Failed || r.Status != "5.1.1" {
		t.Errorf("notification recipient = %s %s %s; want %s failed 5.1.1", r.FinalRecipient, r.Action, r.Status, demoUnknown)
	}
	if !strings.Contains(r.DiagnosticCode, "550 5.1.1") {
		t.Errorf("Diagnostic-Code = %q, want the server's 550 5.1.1", r.DiagnosticCode)
	}
	text := out.String()
	for _, want := range []string{
		"deferred   450 4.2.0 greylisted, try again in 5 seconds; next attempt in 1m0s",
		"bounced    550 5.1.1 <nobody@example.net>: no such user here",
		"Final-Recipient: rfc822; nobody@example.net",
		"Summary: 4 messages to 5 recipients: 4 delivered, 1 bounced (1 failure notice, delivered to the sender), 5 deferrals on the way.",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q\n%s", want, text)
		}
	}
	if strings.Contains(text, "\x1b[") {
		t.Error("plain output contains terminal escape sequences")
	}
	// The wait after greylisting is the queue's minimum (1m of demo time),
	// never shorter: the story takes at least that long on the demo clock.
	if res.Simulated < time.Minute {
		t.Errorf("demo took %v on its clock; the retry cannot come before 1m", res.Simulated)
	}
}
