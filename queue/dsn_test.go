package queue_test

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/outboundmail/outbound/backoff"
	"github.com/outboundmail/outbound/delivery"
	"github.com/outboundmail/outbound/delivery/dsn"
	"github.com/outboundmail/outbound/queue"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/dsn")

// The notifications the scheduler queues, as the sender's server receives
// them, compared with golden files (go test ./queue -run TestDSN -update
// rewrites them) and parsed back.
func TestDSN_Golden(t *testing.T) {
	const original = "From: App <app@app.test>\r\nTo: <gone1@example.com>\r\nSubject: Your order\r\n" +
		"Message-ID: <order-17@app.test>\r\nDate: Sat, 01 Jan 2000 00:00:00 +0000\r\n\r\nThank you for your order.\r\n"
	rejecting := &simServer{rcpt: func(now time.Time, from, to string) delivery.Reply {
		switch {
		case strings.HasPrefix(to, "gone1"):
			return delivery.Reply{Code: 550, Enhanced: delivery.EnhancedCode{5, 1, 1}, Text: "<" + to + ">: Recipient address rejected: User unknown\nin virtual mailbox table"}
		case strings.HasPrefix(to, "gone2"):
			return delivery.Reply{Code: 554, Text: "rejected by policy"}
		}
		return delivery.Reply{Code: 250, Text: "ok"}
	}}
	busy := &simServer{rcpt: always(451, delivery.EnhancedCode{4, 2, 1}, "mailbox busy, try again later")}
	for _, tc := range []struct {
		name   string
		cfg    queue.Config
		server *simServer
		env    queue.Envelope
		runFor time.Duration
		want   []dsn.Action // per notification, in order
	}{
		{"failed", queue.Config{}, rejecting, queue.Envelope{
			From: "app@app.test", To: []string{"ok@example.com", "gone2@example.com"}, EnvelopeID: "order-17",
			Recipients: []delivery.Recipient{{Address: "gone1@example.com", ORCPT: "rfc822;gone1@old.example"}},
		}, time.Second, []dsn.Action{dsn.Failed}},
		{"failed-ret-full", queue.Config{}, rejecting, queue.Envelope{
			From: "app@app.test", To: []string{"gone1@example.com"}, Return: "FULL",
		}, time.Second, []dsn.Action{dsn.Failed}},
		{"delayed-then-expired", queue.Config{Schedule: backoff.Schedule{MaxLifetime: 8 * time.Hour, DelayWarning: 2 * time.Hour, Jitter: -1}}, busy,
			queue.Envelope{From: "app@app.test", To: []string{"busy@example.com"}},
			9 * time.Hour, []dsn.Action{dsn.Delayed, dsn.Failed}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := setup(t, tc.cfg)
				b.net.add("example.com", tc.server)
				if _, err := b.q.Enqueue(context.Background(), tc.env, strings.NewReader(original)); err != nil {
					t.Fatal(err)
				}
				runFor(t, b.q, tc.runFor)
				got := b.notifications()
				if len(got) != len(tc.want) {
					t.Fatalf("%d notifications, want %d", len(got), len(tc.want))
				}
				for i, data := range got {
					golden(t, filepath.Join("testdata", "dsn", tc.name+"-"+string(rune('1'+i))+".eml"), normaliseDSN(t, data))
					r, err := dsn.Parse(bytes.NewReader(data))
					if err != nil {
						t.Fatalf("parse back: %v", err)
					}
					for _, rc := range r.Recipients {
						if rc.Action != tc.want[i] {
							t.Fatalf("notification %d: action %q, want %q", i+1, rc.Action, tc.want[i])
						}
					}
					if r.To != "app@app.test" || r.ReportingMTA != "mta.test" || r.EnvelopeID != tc.env.EnvelopeID {
						t.Fatalf("parsed back: %+v", r)
					}
				}
			})
		})
	}
}

// notifications returns the messages from <> that the sender's server
// received, in order.
func (b *bundle) notifications() [][]byte {
	b.net.mu.Lock()
	defer b.net.mu.Unlock()
	var out [][]byte
	for _, m := range b.sender.received {
		if m.from == "" {
			out = append(out, m.data)
		}
	}
	return out
}

// normaliseDSN replaces what differs between runs: the multipart boundary
// (random) and queue IDs (random suffix).
func normaliseDSN(t *testing.T, data []byte) []byte {
	t.Helper()
	m := regexp.MustCompile(`boundary="([^"]+)"`).FindSubmatch(data)
	if m == nil {
		t.Fatalf("no boundary in\n%s", data)
	}
	data = bytes.ReplaceAll(data, m[1], []byte("BOUNDARY"))
	return regexp.MustCompile(`\b[0-9a-v]{24}\b`).ReplaceAll(data, []byte("QUEUEID"))
}

// golden compares got with the file at path, or rewrites it with -update.
func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s differs (run with -update to accept):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}
