package dsn

import (
	"bytes"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/outboundmail/outbound/delivery/rfc5321"
)

func originalReader(s string) io.Reader {
	if s == "-" {
		return nil
	}
	return strings.NewReader(s)
}

// compose runs Compose and checks the invariants every output must keep:
// CR LF only, no line over 998 octets (it passes rfc5321.Reader unchanged).
func compose(t *testing.T, r *Report, original io.Reader) []byte {
	t.Helper()
	var out bytes.Buffer
	if err := Compose(&out, r, original); err != nil {
		t.Fatalf("Compose: %v", err)
	}
	canon, err := io.ReadAll(rfc5321.NewReader(bytes.NewReader(out.Bytes())))
	if err != nil {
		t.Fatalf("output refused by rfc5321.Reader: %v", err)
	}
	if !bytes.Equal(canon, out.Bytes()) {
		t.Fatalf("rfc5321.Reader changed the output")
	}
	return out.Bytes()
}

func TestComposeParseRoundTrip(t *testing.T) {
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			out := compose(t, tc.report, originalReader(tc.original))
			got, err := Parse(bytes.NewReader(out))
			if err != nil {
				t.Fatal(err)
			}
			want := expectedParse(t, tc.report, tc.original != "-")
			checkReport(t, got, want)
		})
	}
}

// expectedParse is what Parse should return for a report Compose wrote:
// the normalised values, with defaults filled in.
func expectedParse(t *testing.T, r *Report, hasOriginal bool) *Report {
	t.Helper()
	n, err := normalise(r)
	if err != nil {
		t.Fatal(err)
	}
	want := *r
	want.MessageID = n.messageID
	want.Recipients = n.rcpts
	want.Return = ""
	if hasOriginal {
		want.Return = "HDRS"
		if strings.EqualFold(r.Return, "FULL") {
			want.Return = "FULL"
		}
	}
	return &want
}

func checkReport(t *testing.T, got, want *Report) {
	t.Helper()
	if got.ReportingMTA != want.ReportingMTA || got.From != want.From || got.To != want.To ||
		got.MessageID != want.MessageID || !got.Date.Equal(want.Date) || got.EnvelopeID != want.EnvelopeID ||
		!got.ArrivalDate.Equal(want.ArrivalDate) || got.Return != want.Return {
		t.Errorf("per-message fields:\n got %+v\nwant %+v", got, want)
	}
	if len(got.Recipients) != len(want.Recipients) {
		t.Fatalf("%d recipients, want %d", len(got.Recipients), len(want.Recipients))
	}
	for i, g := range got.Recipients {
		w := want.Recipients[i]
		if !g.LastAttemptDate.Equal(w.LastAttemptDate) || !g.WillRetryUntil.Equal(w.WillRetryUntil) {
			t.Errorf("recipient %d dates: got %v %v, want %v %v", i, g.LastAttemptDate, g.WillRetryUntil, w.LastAttemptDate, w.WillRetryUntil)
		}
		g.LastAttemptDate, g.WillRetryUntil, w.LastAttemptDate, w.WillRetryUntil = time.Time{}, time.Time{}, time.Time{}, time.Time{}
		if g != w {
			t.Errorf("recipient %d:\n got %+v\nwant %+v", i, g, w)
		}
	}
}

func TestComposeDerivesStatus(t *testing.T) {
	for _, tc := range []struct {
		rc   Recipient
		want string
	}{
		{Recipient{Action: Failed, DiagnosticCode: "smtp; 550 no such user"}, "5.0.0"},
		{Recipient{Action: Failed, DiagnosticCode: "smtp; 451 try later"}, "4.0.0"}, // expired after 4xx
		{Recipient{Action: Delayed, DiagnosticCode: "smtp; 421-too busy"}, "4.0.0"},
		{Recipient{Action: Delayed}, "4.0.0"},
		{Recipient{Action: Failed, DiagnosticCode: "X-Outbound; connection refused"}, "5.0.0"},
		{Recipient{Action: Delivered, DiagnosticCode: "smtp; 250 ok"}, "2.0.0"},
		{Recipient{Action: Relayed}, "2.0.0"},
	} {
		tc.rc.FinalRecipient = "bob@example.com"
		got, err := Parse(bytes.NewReader(compose(t, baseReport("", tc.rc), nil)))
		if err != nil {
			t.Fatal(err)
		}
		if s := got.Recipients[0].Status; s != tc.want {
			t.Errorf("%+v: Status %q, want %q", tc.rc, s, tc.want)
		}
	}
}

// TestComposeHostileRemoteText covers RELIABILITY.md §7 item 28 for text a
// remote server controls: CR LF injection must not create header fields,
// MIME parts or over-long lines.
func TestComposeHostileRemoteText(t *testing.T) {
	rc := Recipient{
		FinalRecipient: "bob@example.com",
		Action:         Failed,
		RemoteMTA:      "dns; evil.example\r\nX-Injected: remote-mta",
		DiagnosticCode: "smtp; 550 no\r\nX-Injected: diag\n\rAction: delivered\r\n\r\nFinal-Recipient: rfc822; mallory@example.com\r\n" +
			"--=_x\r\n\x00\x7f\u0085\u2028 é " + strings.Repeat("B", 3000) + " " + strings.Repeat("C ", 3000),
	}
	out := compose(t, baseReport("HDRS", rc), strings.NewReader("Subject: x\r\n\r\n"))
	for line := range strings.SplitSeq(string(out), "\r\n") {
		if strings.HasPrefix(line, "X-Injected") || strings.HasPrefix(line, "Final-Recipient: rfc822; mallory") || strings.HasPrefix(line, "--=_x") {
			t.Errorf("injected line %q", line)
		}
		if len(line) > 998 {
			t.Errorf("line of %d octets", len(line))
		}
	}
	for _, c := range out {
		if c >= 0x80 || (c < ' ' && c != '\r' && c != '\n') {
			t.Fatalf("octet %#x in the output of an ASCII report", c)
		}
	}
	got, err := Parse(bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Recipients) != 1 || got.Recipients[0].Action != Failed || got.Recipients[0].FinalRecipient != "bob@example.com" {
		t.Fatalf("recipients %+v", got.Recipients)
	}
	d := got.Recipients[0].DiagnosticCode
	if !strings.HasPrefix(d, "smtp; 550 no X-Injected: diag Action: delivered Final-Recipient:") || !strings.HasSuffix(d, "...") || len(d) > maxDiagnostic+20 {
		t.Errorf("Diagnostic-Code %.120q… (%d octets)", d, len(d))
	}
	if m := got.Recipients[0].RemoteMTA; m != "dns; evil.example X-Injected: remote-mta" {
		t.Errorf("Remote-MTA %q", m)
	}
}

func TestComposeRefusesInvalidReport(t *testing.T) {
	for _, tc := range []struct {
		field string
		edit  func(r *Report)
	}{
		{"To", func(r *Report) { r.To = "" }},
		{"To", func(r *Report) { r.To = "alice@example.org>\r\nBcc: x@y" }},
		{"From", func(r *Report) { r.From = "MAILER-DAEMON" }},
		{"ReportingMTA", func(r *Report) { r.ReportingMTA = "mta\r\nX: y" }},
		{"ReportingMTA", func(r *Report) { r.ReportingMTA = "[192.0.2.1]" }},
		{"MessageID", func(r *Report) { r.MessageID = "<no-at-sign>" }},
		{"MessageID", func(r *Report) { r.MessageID = "<a@b>\r\nBcc: x@y" }},
		{"Date", func(r *Report) { r.Date = time.Time{} }},
		{"EnvelopeID", func(r *Report) { r.EnvelopeID = "id\r\nX: y" }},
		{"Return", func(r *Report) { r.Return = "BODY" }},
		{"Recipients", func(r *Report) { r.Recipients = nil }},
		{"Recipients[0].FinalRecipient", func(r *Report) { r.Recipients[0].FinalRecipient = "a@b> NOTIFY=NEVER" }},
		{"Recipients[0].OriginalRecipient", func(r *Report) { r.Recipients[0].OriginalRecipient = "rfc822;x@y\r\nAction: delivered" }},
		{"Recipients[0].OriginalRecipient", func(r *Report) { r.Recipients[0].OriginalRecipient = "no-type" }},
		{"Recipients[0].Action", func(r *Report) { r.Recipients[0].Action = "bounced" }},
		{"Recipients[0].Status", func(r *Report) { r.Recipients[0].Status = "550" }},
		{"Recipients[0].Status", func(r *Report) { r.Recipients[0].Status = "3.1.1" }},
		{"Recipients[0].Status", func(r *Report) { r.Recipients[0].Status = "5.1.1\r\nX: y" }},
	} {
		r := baseReport("FULL", bob)
		tc.edit(r)
		var out bytes.Buffer
		err := Compose(&out, r, strings.NewReader(originalMessage))
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("%s: error %v, want *FieldError for it", tc.field, err)
		}
		if out.Len() != 0 {
			t.Errorf("%s: %d octets written before the error", tc.field, out.Len())
		}
		if err != nil && strings.ContainsAny(err.Error(), "\r\n") {
			t.Errorf("error text not log-safe: %q", err)
		}
	}
}

// TestComposeReturnedPart covers RET=HDRS against RET=FULL, the 7bit/8bit
// label, and that HDRS never reads past the header.
func TestComposeReturnedPart(t *testing.T) {
	big := "Subject: big\r\n\r\n" + strings.Repeat(strings.Repeat("x", 70)+"\r\n", 2000)
	for _, tc := range []struct {
		name, ret, original string
		contains, absent    []string
	}{
		{"hdrs", "HDRS", originalMessage,
			[]string{"Content-Type: text/rfc822-headers\r\n", "Subject: Quarterly figures\r\nMessage-ID: <orig-1@example.org>\r\n\r\n--"},
			[]string{"Hello Bob", "Content-Transfer-Encoding: 8bit"}},
		{"full", "full", originalMessage,
			[]string{"Content-Type: message/rfc822\r\n", "\r\nHello Bob,\r\n.\r\nthe figures are attached.\r\n\r\n--"},
			[]string{"text/rfc822-headers", "Content-Transfer-Encoding: 8bit"}},
		{"full 8bit", "FULL", "Subject: caf\xc3\xa9\r\n\r\nna\xc3\xafve\r\n",
			[]string{"Content-Type: message/rfc822\r\nContent-Description: Original message\r\nContent-Transfer-Encoding: 8bit\r\n"}, nil},
		{"full big", "FULL", big,
			[]string{"Content-Transfer-Encoding: 8bit\r\n", strings.Repeat("x", 70) + "\r\n\r\n--"}, nil},
		{"hdrs no body", "HDRS", "Subject: only a header\n",
			[]string{"Subject: only a header\r\n\r\n--"}, []string{"Content-Transfer-Encoding: 8bit"}},
		{"empty original", "HDRS", "", []string{"Content-Type: text/rfc822-headers\r\n"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := string(compose(t, baseReport(tc.ret, bob), strings.NewReader(tc.original)))
			for _, s := range tc.contains {
				if !strings.Contains(out, s) {
					t.Errorf("output lacks %q", s)
				}
			}
			for _, s := range tc.absent {
				if strings.Contains(out, s) {
					t.Errorf("output has %q", s)
				}
			}
		})
	}

	// HDRS stops at the empty line: a body that fails to read is not touched.
	src := io.MultiReader(strings.NewReader("Subject: x\r\n\r\n"), iotest.ErrReader(errors.New("body must not be read")))
	compose(t, baseReport("HDRS", bob), src)
}

func TestComposeOriginalErrors(t *testing.T) {
	var out bytes.Buffer
	err := Compose(&out, baseReport("FULL", bob), strings.NewReader("Subject: x\r\n\r\nnul\x00here\r\n"))
	var de *rfc5321.DataError
	if !errors.As(err, &de) || !errors.Is(err, rfc5321.ErrNUL) {
		t.Errorf("NUL in original: %v, want *rfc5321.DataError", err)
	}
	boom := errors.New("disk error")
	err = Compose(&out, baseReport("FULL", bob), io.MultiReader(strings.NewReader(strings.Repeat("a\r\n", 40000)), iotest.ErrReader(boom)))
	if !errors.Is(err, boom) {
		t.Errorf("read error: %v", err)
	}
	err = Compose(failingWriter{}, baseReport("FULL", bob), strings.NewReader(originalMessage))
	if !errors.Is(err, errWrite) {
		t.Errorf("write error: %v", err)
	}
}

var errWrite = errors.New("write failed")

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errWrite }

// TestComposeStreamsOriginal returns a 20 MB original and checks that the
// heap did not grow with it.
func TestComposeStreamsOriginal(t *testing.T) {
	if testing.Short() {
		t.Skip("streams 20 MB")
	}
	const size = 20 << 20
	line := strings.Repeat("y", 76) + "\r\n"
	src := io.MultiReader(strings.NewReader("Subject: big\r\n\r\n"), &repeatReader{s: line, left: size})
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	var n countWriter
	if err := Compose(&n, baseReport("FULL", bob), src); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if n < size {
		t.Fatalf("wrote %d octets", n)
	}
	if grown := after.TotalAlloc - before.TotalAlloc; grown > 4<<20 {
		t.Errorf("allocated %d bytes to return %d", grown, size)
	}
}

type countWriter int64

func (c *countWriter) Write(p []byte) (int, error) { *c += countWriter(len(p)); return len(p), nil }

type repeatReader struct {
	s    string
	left int
	off  int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && r.left > 0 {
		c := copy(p[n:min(len(p), n+r.left)], r.s[r.off:])
		r.off = (r.off + c) % len(r.s)
		n += c
		r.left -= c
	}
	return n, nil
}

// TestComposeWillRetryUntilOnlyWhenDelayed: RFC 3464 §2.3.8 defines
// Will-Retry-Until for delayed recipients only.
func TestComposeWillRetryUntilOnlyWhenDelayed(t *testing.T) {
	failed := bob
	failed.WillRetryUntil = t0.Add(time.Hour)
	out := string(compose(t, baseReport("", failed, carol), nil))
	if n := strings.Count(out, "Will-Retry-Until:"); n != 1 {
		t.Errorf("%d Will-Retry-Until fields, want 1 (carol's)", n)
	}
	if !strings.Contains(out, "Subject: Undelivered Mail Returned to Sender\r\n") {
		t.Error("a failure and a delay must be reported as a failure")
	}
	out = string(compose(t, baseReport("", carol), nil))
	unwrapped := strings.ReplaceAll(out, "\r\n", " ")
	if !strings.Contains(out, "Subject: Delayed Mail (still being retried)\r\n") || !strings.Contains(unwrapped, "It will stop at Tue, 01 Dec 2026 08:00:00 +0100.") {
		t.Errorf("delay report:\n%s", out)
	}
}
