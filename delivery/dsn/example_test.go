package dsn_test

import (
	"bytes"
	"fmt"
	"strings"
	"time"

	"github.com/outboundmail/outbound/delivery/dsn"
)

func ExampleCompose() {
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	report := &dsn.Report{
		ReportingMTA: "mta.example.net",
		From:         "MAILER-DAEMON@mta.example.net",
		To:           "alice@example.org", // the original envelope sender
		MessageID:    "<dsn-42@mta.example.net>",
		Date:         now,
		ArrivalDate:  now.Add(-time.Hour),
		Return:       "HDRS",
		Recipients: []dsn.Recipient{{
			FinalRecipient: "bob@example.com",
			Action:         dsn.Failed,
			Status:         "5.1.1",
			RemoteMTA:      "dns; mx.example.com",
			DiagnosticCode: "smtp; 550 5.1.1 no such user",
		}},
	}
	original := strings.NewReader("From: alice@example.org\nSubject: hello\n\nHi Bob!\n")

	var out bytes.Buffer // the caller enqueues this with MAIL FROM:<>
	if err := dsn.Compose(&out, report, original); err != nil {
		fmt.Println(err)
		return
	}
	// A few lines of each part: the header, the explanation, the
	// delivery-status fields, and the returned header of the original.
	for line := range strings.SplitSeq(out.String(), "\r\n") {
		if strings.HasPrefix(line, "Subject:") || strings.HasPrefix(line, "Auto-Submitted:") ||
			strings.HasPrefix(line, "Content-Type: message/") || strings.HasPrefix(line, "Action:") ||
			strings.HasPrefix(line, "Diagnostic-Code:") || strings.Contains(line, "does not exist") {
			fmt.Println(line)
		}
	}
	// Output:
	// Subject: Undelivered Mail Returned to Sender
	// Auto-Submitted: auto-replied
	//     Status: permanent failure: the mailbox does not exist (5.1.1)
	// Content-Type: message/delivery-status
	// Action: failed
	// Diagnostic-Code: smtp; 550 5.1.1 no such user
	// Subject: hello
}

func ExampleParse() {
	msg := "From: MAILER-DAEMON@mx.example.com\r\n" +
		"To: alice@example.org\r\n" +
		"Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n" +
		"\r\n" +
		"--b\r\n" +
		"Content-Type: text/plain\r\n" +
		"\r\n" +
		"Your message was delayed.\r\n" +
		"--b\r\n" +
		"Content-Type: message/delivery-status\r\n" +
		"\r\n" +
		"Reporting-MTA: dns; mx.example.com\r\n" +
		"\r\n" +
		"Final-Recipient: rfc822; bob@example.com\r\n" +
		"Action: delayed\r\n" +
		"Status: 4.4.1\r\n" +
		"Will-Retry-Until: Tue, 01 Dec 2026 10:00:00 +0000\r\n" +
		"--b--\r\n"
	r, err := dsn.Parse(strings.NewReader(msg))
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, rc := range r.Recipients {
		fmt.Println(rc.FinalRecipient, rc.Action, rc.Status, rc.WillRetryUntil.Format(time.DateOnly))
	}
	// Output:
	// bob@example.com delayed 4.4.1 2026-12-01
}
