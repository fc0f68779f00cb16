package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/outboundmail/outbound/delivery/deliverytest"
	"github.com/outboundmail/outbound/queue"
)

// cli runs commands in-process against one spool, as a shell would run the
// binary, with a fixed environment.
type cli struct {
	t     *testing.T
	spool string
	env   map[string]string
}

func newCLI(t *testing.T) *cli {
	return &cli{t: t, spool: filepath.Join(t.TempDir(), "spool"), env: map[string]string{"HOME": t.TempDir(), "USER": "tester"}}
}

// run runs `name args...` with stdin and returns the exit status, stdout
// and stderr. The spool is passed through the environment, as an
// administrator would set it once.
func (c *cli) run(name, stdin string, args ...string) (int, string, string) {
	c.t.Helper()
	var out, errOut bytes.Buffer
	env := map[string]string{"OUTBOUND_SPOOL": c.spool}
	for k, v := range c.env {
		env[k] = v
	}
	a := &app{stdin: strings.NewReader(stdin), stdout: &out, stderr: &errOut, getenv: func(k string) string { return env[k] }}
	code := a.main(context.Background(), name, args)
	return code, out.String(), errOut.String()
}

func (c *cli) queue() []jsonMessage {
	c.t.Helper()
	code, out, errOut := c.run("outbound", "", "queue", "--json")
	if code != 0 {
		c.t.Fatalf("queue --json: exit %d: %s", code, errOut)
	}
	var msgs []jsonMessage
	if err := json.Unmarshal([]byte(out), &msgs); err != nil {
		c.t.Fatalf("queue --json output %q: %v", out, err)
	}
	return msgs
}

const tMessage = "From: Alice <alice@example.org>\nTo: bob@example.com\nCc: carol@example.net\nBcc: dave@example.com\nSubject: test\n\nline one\n.\n..two dots\n"

func TestSendQueueOnly(t *testing.T) {
	c := newCLI(t)
	code, out, errOut := c.run("outbound", tMessage, "send", "--queue-only", "-t", "-oi", "erin@example.org")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	id := strings.TrimSpace(out)
	msgs := c.queue()
	if len(msgs) != 1 || msgs[0].ID != id {
		t.Fatalf("queue = %+v, want one message %s", msgs, id)
	}
	m := msgs[0]
	if m.Sender != "alice@example.org" {
		t.Errorf("sender = %q, want the From: address", m.Sender)
	}
	var rcpts []string
	for _, r := range m.Recipients {
		rcpts = append(rcpts, r.Address)
		if r.State != "queued" || r.Attempts != 0 || r.NextAttempt == nil || r.LastAttempt != nil || r.LastReply != "" {
			t.Errorf("recipient %+v: want queued, no attempt yet", r)
		}
	}
	if got := strings.Join(rcpts, " "); got != "erin@example.org bob@example.com carol@example.net dave@example.com" {
		t.Errorf("recipients = %s", got)
	}
	code, out, errOut = c.run("outbound", "", "show", id)
	if code != 0 {
		t.Fatalf("show: exit %d: %s", code, errOut)
	}
	content := out[strings.Index(out, "--- content ---\n")+16:]
	if strings.Contains(content, "Bcc") || strings.Contains(content, "dave@") {
		t.Errorf("Bcc: left in the message:\n%s", content)
	}
	for _, want := range []string{"Date: ", "Message-ID: <", "\r\n\r\nline one\r\n.\r\n..two dots\r\n"} {
		if !strings.Contains(content, want) {
			t.Errorf("content lacks %q:\n%q", want, content)
		}
	}
	if strings.Count(content, "From:") != 1 {
		t.Errorf("From: added although present:\n%s", content)
	}
}

func TestSendDotEndsInput(t *testing.T) {
	c := newCLI(t)
	code, out, errOut := c.run("outbound", "Subject: x\n\nkept\n.\ndropped\n", "send", "--queue-only", "-f", "a@example.org", "b@example.com")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	_, show, _ := c.run("outbound", "", "show", strings.TrimSpace(out))
	if !strings.Contains(show, "kept") || strings.Contains(show, "dropped") {
		t.Errorf("a lone dot must end the input without -i:\n%s", show)
	}
}

func TestSendRefused(t *testing.T) {
	for _, tc := range []struct {
		name  string
		stdin string
		args  []string
		code  int
		msg   string
	}{
		{"no recipients", "Subject: x\n\nhi\n", nil, exitUsage, "no recipients"},
		{"-t without recipients", "Subject: x\n\nhi\n", []string{"-t"}, exitDataErr, "no recipients in the To, Cc or Bcc fields"},
		{"empty input", "", []string{"b@example.com"}, exitNoInput, "no message on standard input"},
		{"NUL in body", "Subject: x\n\nnul \x00 here\n", []string{"b@example.com"}, exitDataErr, "nothing queued"},
		{"line too long", "Subject: x\n\n" + strings.Repeat("y", 1200) + "\n", []string{"b@example.com"}, exitDataErr, "nothing queued"},
		{"bad recipient", "Subject: x\n\nhi\n", []string{"not an address"}, exitDataErr, "nothing queued"},
		{"bad To: with -t", "To: <broken\n\nhi\n", []string{"-t"}, exitDataErr, "message header: To"},
		{"bad flag", "", []string{"--no-such-flag"}, exitUsage, "flag provided but not defined"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCLI(t)
			args := append([]string{"send", "--queue-only", "-f", "a@example.org"}, tc.args...)
			code, out, errOut := c.run("outbound", tc.stdin, args...)
			if code != tc.code || !strings.Contains(errOut, tc.msg) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, errOut, tc.code, tc.msg)
			}
			if out != "" {
				t.Errorf("stdout %q: no ID may be printed", out)
			}
			if _, err := os.Stat(c.spool); err == nil {
				if msgs := c.queue(); len(msgs) != 0 {
					t.Errorf("queue after a refusal: %+v", msgs)
				}
			}
		})
	}
}

func TestSendmailAndMailqNames(t *testing.T) {
	c := newCLI(t)
	code, out, errOut := c.run("sendmail", tMessage, "-t", "-i", "-odq")
	if code != 0 {
		t.Fatalf("sendmail -t -i: exit %d: %s", code, errOut)
	}
	id := strings.TrimSpace(out)
	for _, inv := range [][]string{{"mailq"}, {"sendmail", "-bp"}} {
		code, out, errOut = c.run(inv[0], "", inv[1:]...)
		if code != 0 || !strings.Contains(out, id) || !strings.Contains(out, "bob@example.com") {
			t.Errorf("%v: exit %d, output %q %q; want the queued message", inv, code, out, errOut)
		}
	}
}

func TestEnvironmentAndFlags(t *testing.T) {
	c := newCLI(t)
	c.env["OUTBOUND_MIN_BACKOFF"] = "20m"
	c.env["OUTBOUND_MAX_LIFETIME"] = "2d"
	code, out, errOut := c.run("outbound", "", "schedule")
	if code != 0 || !strings.Contains(out, "first retry after 20m0s") || !strings.Contains(out, "give up after 2d") {
		t.Errorf("schedule from the environment: exit %d\n%s", code, out)
	}
	if !strings.Contains(errOut, "4-5 days") {
		t.Errorf("no warning about a lifetime under 4 days: %q", errOut)
	}
	// A flag beats the environment, before or after the command.
	for _, args := range [][]string{{"--min-backoff", "7m", "schedule"}, {"schedule", "--min-backoff", "7m"}} {
		if _, out, _ := c.run("outbound", "", args...); !strings.Contains(out, "first retry after 7m0s") {
			t.Errorf("%v: flag did not win over OUTBOUND_MIN_BACKOFF:\n%s", args, out)
		}
	}
	c.env["OUTBOUND_MIN_BACKOFF"] = "soon"
	if code, _, errOut := c.run("outbound", "", "schedule"); code != exitConfig || !strings.Contains(errOut, "OUTBOUND_MIN_BACKOFF") {
		t.Errorf("bad environment value: exit %d, %q", code, errOut)
	}
}

// TestScheduleNotesRetryFloor: a schedule retrying sooner than the queue
// ever does is shown with the queue's floor, queue.MinRetryDelay.
func TestScheduleNotesRetryFloor(t *testing.T) {
	c := newCLI(t)
	code, _, errOut := c.run("outbound", "", "--min-backoff", "20s", "schedule")
	want := "the queue waits at least " + queue.MinRetryDelay.String()
	if code != 0 || !strings.Contains(errOut, want) {
		t.Errorf("schedule with a 20s first retry: exit %d, stderr %q; want a note %q", code, errOut, want)
	}
	if _, _, errOut := c.run("outbound", "", "--min-backoff", "5m", "schedule"); strings.Contains(errOut, "waits at least") {
		t.Errorf("schedule with a 5m first retry notes the floor: %q", errOut)
	}
}

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"90s": 90 * time.Second, "5d": 120 * time.Hour, "4d12h": 108 * time.Hour, "-1h": -time.Hour, "1d30m": 24*time.Hour + 30*time.Minute,
	} {
		if got, err := parseDuration(in); err != nil || got != want {
			t.Errorf("parseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "d", "5", "xd", "1d-1h", "soon"} {
		if _, err := parseDuration(in); err == nil {
			t.Errorf("parseDuration(%q) succeeded", in)
		}
	}
}

func TestPassword(t *testing.T) {
	file := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(file, []byte("s3cret\n"), 0o600)
	for _, tc := range []struct {
		env     map[string]string
		want    string
		wantErr bool
	}{
		{map[string]string{envPassword: "direct"}, "direct", false},
		{map[string]string{envPasswordFile: file}, "s3cret", false},
		{map[string]string{envPasswordFile: filepath.Join(t.TempDir(), "missing")}, "", true},
		{nil, "", true},
	} {
		got, err := password(func(k string) string { return tc.env[k] })
		if got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("password(%v) = %q, %v", tc.env, got, err)
		}
	}
}

func TestAdminCommands(t *testing.T) {
	c := newCLI(t)
	_, out, _ := c.run("outbound", tMessage, "send", "--queue-only", "-t")
	id := strings.TrimSpace(out)
	steps := []struct {
		args  []string
		state string
	}{
		{[]string{"hold", id}, "held"},
		{[]string{"release", id}, "queued"},
		{[]string{"retry", "--all"}, "queued"},
	}
	for _, st := range steps {
		if code, _, errOut := c.run("outbound", "", st.args...); code != 0 {
			t.Fatalf("%v: exit %d: %s", st.args, code, errOut)
		}
		if m := c.queue(); len(m) != 1 || m[0].Recipients[0].State != st.state {
			t.Errorf("after %v: %+v, want state %s", st.args, m, st.state)
		}
	}
	if code, _, errOut := c.run("outbound", "", "delete", id, "06nosuchid"); code != exitFailure || !strings.Contains(errOut, "06nosuchid: no such message") {
		t.Errorf("delete with an unknown ID: exit %d, %q", code, errOut)
	}
	if m := c.queue(); len(m) != 0 {
		t.Errorf("queue after delete: %+v", m)
	}
}

// TestSendAttemptsOnce checks the immediate attempt of send: one recipient
// delivered, one refused with 550 (a notification to the sender is queued),
// and the report on stderr.
func TestSendAttemptsOnce(t *testing.T) {
	srv := deliverytest.NewServer(t, &deliverytest.Script{
		Rcpt: deliverytest.RejectRcpt(550, smtp.EnhancedCode{5, 1, 1}, "no such user", "carol@example.net"),
	})
	c := newCLI(t)
	msg := "From: alice@example.org\r\nTo: bob@example.com\r\nSubject: s\r\nDate: Mon, 02 Jan 2006 15:04:05 -0700\r\nMessage-ID: <1@example.org>\r\n\r\nbody\r\n"
	code, out, errOut := c.run("outbound", msg, "send", "--relay", srv.Addr, "--tls", "disabled", "-f", "alice@example.org", "bob@example.com", "carol@example.net")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	id := strings.TrimSpace(out)
	if !strings.Contains(errOut, "<bob@example.com> delivered") || !strings.Contains(errOut, "<carol@example.net> failed permanently, notification") {
		t.Errorf("report = %q", errOut)
	}
	got := srv.Messages()
	if len(got) == 0 || string(got[0].Data) != msg || strings.Join(got[0].To, ",") != "bob@example.com" {
		t.Fatalf("server received %+v, want the message byte for byte for bob", got)
	}
	// The message is gone from the queue; the notification to alice is
	// queued, for `run`: send attempts its own message only.
	msgs := c.queue()
	if len(msgs) != 1 || msgs[0].ID == id || msgs[0].Sender != "" || msgs[0].Recipients[0].Address != "alice@example.org" || len(got) != 1 {
		t.Errorf("queue = %+v, server got %d messages; want the notification to alice queued", msgs, len(got))
	}
}

// TestSendLeavesOtherMail: the immediate attempt of send is for its own
// message; mail queued earlier waits for `run`.
func TestSendLeavesOtherMail(t *testing.T) {
	srv := deliverytest.NewServer(t, nil)
	c := newCLI(t)
	if code, _, errOut := c.run("outbound", tMessage, "send", "--queue-only", "-t"); code != 0 {
		t.Fatalf("send --queue-only: %s", errOut)
	}
	msg := "From: alice@example.org\r\nTo: bob@example.com\r\nSubject: s\r\n\r\nbody\r\n"
	code, out, errOut := c.run("outbound", msg, "send", "--relay", srv.Addr, "--tls", "disabled", "-f", "alice@example.org", "bob@example.com")
	if code != 0 || !strings.Contains(errOut, "<bob@example.com> delivered") {
		t.Fatalf("send: exit %d: %s", code, errOut)
	}
	if got := srv.Messages(); len(got) != 1 || !strings.Contains(string(got[0].Data), "Subject: s") {
		t.Fatalf("server received %d messages, want only the one sent", len(got))
	}
	if msgs := c.queue(); len(msgs) != 1 || msgs[0].ID == strings.TrimSpace(out) {
		t.Fatalf("queue = %+v, want the earlier message still queued", msgs)
	}
}

// TestRunDrain queues messages without attempts, then `run --drain`
// delivers them all and returns.
func TestRunDrain(t *testing.T) {
	srv := deliverytest.NewServer(t, nil)
	c := newCLI(t)
	for range 3 {
		if code, _, errOut := c.run("outbound", tMessage, "send", "--queue-only", "-t"); code != 0 {
			t.Fatalf("send: %s", errOut)
		}
	}
	code, _, errOut := c.run("outbound", "", "run", "--drain", "--relay", srv.Addr, "--tls", "opportunistic", "--startup-ramp", "-1s")
	if code != 0 {
		t.Fatalf("run --drain: exit %d: %s", code, errOut)
	}
	// The messages were queued for MX delivery (one transaction per
	// domain) and go out through the relay given to run.
	rcpts := 0
	for _, m := range srv.Messages() {
		rcpts += len(m.To)
	}
	if rcpts != 9 {
		t.Errorf("server received %d recipients, want 3 messages × 3", rcpts)
	}
	if m := c.queue(); len(m) != 0 {
		t.Errorf("queue after drain: %+v", m)
	}
	if !strings.Contains(errOut, "msg=delivered") || !strings.Contains(errOut, "queue empty") {
		t.Errorf("run log lacks deliveries: %s", errOut)
	}
}

func TestSendmailArgs(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"-t -i", "-t -i"},
		{"-fcron@example.org -FCronDaemon -i -B8BITMIME -oem", "-f cron@example.org -F CronDaemon -i -B 8BITMIME"},
		{"-oi -odq -f a@example.org rcpt@example.com -x", "-oi -odq -f a@example.org rcpt@example.com -x"},
		{"-q15m", "-q"},
		{"-bp", "-bp"},
		{"-v -Am -h 3 -Nfailure,delay -Rhdrs -Venv1 --queue-only b@example.com", "-N failure,delay -R hdrs -V env1 --queue-only b@example.com"},
		{"-- -f", "-- -f"},
		{"-h", "-h"},
	} {
		if got := strings.Join(sendmailArgs(strings.Fields(tc.in)), " "); got != tc.want {
			t.Errorf("sendmailArgs(%s) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

// TestSendmailGluedValues is PHP's mail() and cron: values glued to their
// letters, DSN options passed through to the queue.
func TestSendmailGluedValues(t *testing.T) {
	c := newCLI(t)
	code, out, errOut := c.run("sendmail", "Subject: x\n\nhi\n", "-fcron@example.org", "-FCron Daemon", "-oi", "-oem", "-odq", "-Nfailure", "-Venv-7", "b@example.com")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	_, show, _ := c.run("outbound", "", "show", strings.TrimSpace(out))
	for _, want := range []string{"Sender:   <cron@example.org>", "ENVID:    env-7", "From: \"Cron Daemon\" <cron@example.org>"} {
		if !strings.Contains(show, want) {
			t.Errorf("show lacks %q:\n%s", want, show)
		}
	}
}
