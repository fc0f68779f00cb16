package dsn

import (
	"bytes"
	"flag"
	"mime"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files testdata/*.eml")

// t0 is the fixed time of the test reports.
var t0 = time.Date(2026, 11, 27, 10, 0, 0, 0, time.FixedZone("", 3600))

// baseReport returns a valid report with fixed Date and Message-ID and the
// given recipients.
func baseReport(ret string, rcpts ...Recipient) *Report {
	return &Report{
		ReportingMTA: "mta.example.net",
		From:         "MAILER-DAEMON@mta.example.net",
		To:           "alice@example.org",
		MessageID:    "<20261127100000.dsn1@mta.example.net>",
		Date:         t0,
		EnvelopeID:   "QQ314159",
		ArrivalDate:  t0.Add(-26 * time.Hour),
		Return:       ret,
		Recipients:   rcpts,
	}
}

const originalMessage = "Received: from app by mta.example.net\r\n" +
	"From: Alice <alice@example.org>\r\n" +
	"To: bob@example.com\r\n" +
	"Subject: Quarterly figures\r\n" +
	"Message-ID: <orig-1@example.org>\r\n" +
	"\r\n" +
	"Hello Bob,\n" +
	".\n" +
	"the figures are attached.\n"

var bob = Recipient{
	FinalRecipient:    "bob@example.com",
	OriginalRecipient: "rfc822;bob@example.com",
	Action:            Failed,
	Status:            "5.1.1",
	RemoteMTA:         "dns; mx1.example.com",
	DiagnosticCode:    "smtp; 550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown in virtual mailbox table",
	LastAttemptDate:   t0.Add(-2 * time.Minute),
}

var carol = Recipient{
	FinalRecipient:  "carol@example.com",
	Action:          Delayed,
	RemoteMTA:       "mx2.example.com",
	DiagnosticCode:  "451 Greylisted, please try again in 300 seconds",
	LastAttemptDate: t0.Add(-5 * time.Minute),
	WillRetryUntil:  t0.Add(94 * time.Hour),
}

var dave = Recipient{
	FinalRecipient:  "rfc822;dave@example.com",
	Action:          Delivered,
	Status:          "2.0.0",
	RemoteMTA:       "dns; mx1.example.com",
	DiagnosticCode:  "smtp; 250 2.0.0 Ok: queued as 4XyZ",
	LastAttemptDate: t0.Add(-time.Minute),
}

// goldenCases are the reports whose exact output is kept in testdata.
var goldenCases = []struct {
	name     string
	report   *Report
	original string // "-" for none
}{
	{"failed_hdrs", baseReport("HDRS", bob), originalMessage},
	{"delayed_no_original", baseReport("", carol), "-"},
	{"multi_full", baseReport("FULL", bob, carol, dave), originalMessage},
	{"utf8_global", func() *Report {
		r := baseReport("HDRS", Recipient{FinalRecipient: "jörg@bücher.example", Action: Failed, Status: "5.6.7",
			RemoteMTA: "dns; mx.bücher.example", DiagnosticCode: "smtp; 553 5.6.7 Grüße: SMTPUTF8 not supported"})
		r.To = "józef@example.org"
		return r
	}(), "From: józef@example.org\r\nSubject: Grüße\r\n\r\nbody\r\n"},
	{"hostile_diagnostic", baseReport("HDRS", Recipient{
		FinalRecipient: "bob@example.com",
		Action:         Failed,
		RemoteMTA:      "dns; evil.example\r\nX-Injected: header",
		DiagnosticCode: "smtp; 550 no\r\n\r\n--=_boundary\r\nContent-Type: text/html\r\n\r\n<script>\x00\x1b[31m\u2028" + strings.Repeat("A", 1500),
	}), "Subject: x\r\n\r\n"},
}

// normaliseBoundary replaces the random boundary with a fixed one.
func normaliseBoundary(t *testing.T, out []byte) []byte {
	t.Helper()
	if _, err := Parse(bytes.NewReader(out)); err != nil {
		t.Fatalf("Parse of own output: %v", err)
	}
	i := bytes.Index(out, []byte(`boundary="`))
	if i < 0 {
		t.Fatal("no boundary")
	}
	rest := out[i+len(`boundary="`):]
	b := rest[:bytes.IndexByte(rest, '"')]
	if _, params, err := mime.ParseMediaType("multipart/report; boundary=\"" + string(b) + "\""); err != nil || params["boundary"] != string(b) {
		t.Fatalf("boundary %q does not parse", b)
	}
	return bytes.ReplaceAll(out, b, []byte("=_BOUNDARY"))
}

func TestComposeGolden(t *testing.T) {
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			if err := Compose(&out, tc.report, originalReader(tc.original)); err != nil {
				t.Fatal(err)
			}
			got := normaliseBoundary(t, out.Bytes())
			path := filepath.Join("testdata", tc.name+".eml")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("output differs from %s (go test -update rewrites it):\n%s", path, got)
			}
		})
	}
}
