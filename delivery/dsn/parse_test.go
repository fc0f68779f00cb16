package dsn

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"
)

// TestParseForeign reads a report in another MTA's layout: a preamble,
// vendor fields, folded values with tabs, comments after Action and Status,
// an upper-case address type.
func TestParseForeign(t *testing.T) {
	f, err := os.Open("testdata/foreign_postfix_style.eml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := Parse(f)
	if err != nil {
		t.Fatal(err)
	}
	utc := func(s string) time.Time {
		tm, err := time.Parse(time.RFC1123Z, s)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	want := &Report{
		ReportingMTA: "relay.example.net",
		From:         "MAILER-DAEMON@relay.example.net",
		To:           "alice@example.org",
		MessageID:    "20261127100000.4XyZ@relay.example.net",
		Date:         utc("Fri, 27 Nov 2026 10:00:00 +0000"),
		ArrivalDate:  utc("Thu, 26 Nov 2026 09:00:00 +0000"),
		Return:       "FULL",
		Recipients: []Recipient{{
			FinalRecipient:    "bob@example.com",
			OriginalRecipient: "rfc822;bob@example.com",
			Action:            Failed,
			Status:            "5.1.1",
			RemoteMTA:         "dns; mx1.example.com",
			DiagnosticCode:    "smtp; 550 5.1.1 <bob@example.com>: Recipient address rejected: User unknown",
		}, {
			FinalRecipient: "carol@example.com",
			Action:         Delayed,
			Status:         "4.7.1",
			DiagnosticCode: "smtp; 450 4.7.1 try again later",
			WillRetryUntil: utc("Mon, 30 Nov 2026 09:00:00 +0000"),
		}},
	}
	checkReport(t, r, want)
}

func TestParseBase64StatusPart(t *testing.T) {
	status := "Reporting-MTA: dns; mta.example\r\n\r\nFinal-Recipient: rfc822; x@example.com\r\nAction: failed\r\nStatus: 5.0.0\r\n"
	msg := "Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n" +
		"--b\r\nContent-Type: message/delivery-status\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
		base64.StdEncoding.EncodeToString([]byte(status)) + "\r\n--b--\r\n"
	r, err := Parse(strings.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	if r.ReportingMTA != "mta.example" || len(r.Recipients) != 1 || r.Recipients[0].FinalRecipient != "x@example.com" || r.Return != "" {
		t.Errorf("got %+v", r)
	}
}

func TestParseErrors(t *testing.T) {
	head := "Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\n"
	tail := "\r\n--b--\r\n"
	rcpt := "Reporting-MTA: dns; m.example\r\n\r\n"
	for _, tc := range []struct {
		name, in, reason string
	}{
		{"plain message", "Subject: hi\r\n\r\nhello\r\n", "not a multipart/report"},
		{"other report", "Content-Type: multipart/report; report-type=disposition-notification; boundary=b\r\n\r\n", "not a multipart/report"},
		{"no boundary", "Content-Type: multipart/report; report-type=delivery-status\r\n\r\n", "without a boundary"},
		{"bad header", " leading space\r\n\r\n", "reading the header"},
		{"bad date", "Date: yesterday\r\n" + head + rcpt + tail, "bad Date"},
		{"no status part", "Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b--\r\n", "no delivery-status part"},
		{"no reporting mta", head + "Arrival-Date: Thu, 26 Nov 2026 09:00:00 +0000\r\n\r\nFinal-Recipient: rfc822; x@y\r\nAction: failed\r\nStatus: 5.0.0\r\n" + tail, "no Reporting-MTA"},
		{"no recipients", head + rcpt + tail, "without recipients"},
		{"no final recipient", head + rcpt + "Action: failed\r\nStatus: 5.0.0\r\n" + tail, "without Final-Recipient"},
		{"bad action", head + rcpt + "Final-Recipient: rfc822; x@y\r\nAction: bounced\r\nStatus: 5.0.0\r\n" + tail, "bad Action"},
		{"bad status", head + rcpt + "Final-Recipient: rfc822; x@y\r\nAction: failed\r\nStatus: 550\r\n" + tail, "bad Status"},
		{"bad retry date", head + rcpt + "Final-Recipient: rfc822; x@y\r\nAction: delayed\r\nStatus: 4.0.0\r\nWill-Retry-Until: soon\r\n" + tail, "bad Will-Retry-Until"},
		{"huge status part", head + rcpt + strings.Repeat("X-Filler: "+strings.Repeat("f", 80)+"\r\n", 14000) + tail, "delivery-status part: too large"},
		{"endless header", "X: " + strings.Repeat("y", maxParsed+10), "reading the header: too large"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(tc.in))
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v (%T), want *ParseError", err, err)
			}
			if !strings.Contains(err.Error(), tc.reason) {
				t.Errorf("error %q, want it to mention %q", err, tc.reason)
			}
		})
	}
}

// TestParseDoesNotReadOriginal checks that Parse stops at the header of the
// returned message.
func TestParseDoesNotReadOriginal(t *testing.T) {
	out := compose(t, baseReport("FULL", bob), strings.NewReader(originalMessage))
	cut := bytes.Index(out, []byte("Received: from app"))
	if cut < 0 {
		t.Fatal("original not found in output")
	}
	src := io.MultiReader(bytes.NewReader(out[:cut]), &failReader{})
	r, err := Parse(src)
	if err != nil {
		t.Fatal(err)
	}
	if r.Return != "FULL" {
		t.Errorf("Return %q", r.Return)
	}
}

type failReader struct{}

func (failReader) Read([]byte) (int, error) { return 0, errors.New("the returned message was read") }
