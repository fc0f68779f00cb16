package dsn

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/quotedprintable"
	"net/mail"
	"strings"
	"time"

	"github.com/emersion/go-message/textproto"
)

// ParseError reports input that Parse cannot read as a delivery status
// notification.
type ParseError struct {
	Reason string
	Err    error // the underlying error, if any
}

// Error returns "dsn: " followed by the reason and the underlying error.
func (e *ParseError) Error() string {
	if e.Err != nil {
		return "dsn: " + e.Reason + ": " + e.Err.Error()
	}
	return "dsn: " + e.Reason
}

// Unwrap returns Err.
func (e *ParseError) Unwrap() error { return e.Err }

// errTooLarge is returned when a report is bigger than Parse will read.
var errTooLarge = errors.New("too large")

// Parse limits: what Parse reads before the returned message, and the size
// of the delivery-status part, are bounded so hostile input cannot exhaust
// memory.
const (
	maxParsed = 8 << 20
	maxStatus = 1 << 20
)

// Parse reads a delivery status notification (RFC 3464 in an RFC 6522
// multipart/report, or the RFC 6533 global forms) and returns its report.
// Report.Return is "FULL" when the original is returned whole, "HDRS" for
// its header, "" for neither; the original itself is not read. Address
// types are removed from Final-Recipient and Reporting-MTA, and kept in the
// other fields, as Compose expects them. Parse returns a [*ParseError] for
// input it cannot read.
func Parse(rd io.Reader) (*Report, error) {
	br := bufio.NewReader(&capReader{r: rd, left: maxParsed})
	h, err := textproto.ReadHeader(br)
	if err != nil {
		return nil, &ParseError{Reason: "reading the header", Err: err}
	}
	mt, params, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil || mt != "multipart/report" || !strings.EqualFold(params["report-type"], "delivery-status") && !strings.EqualFold(params["report-type"], "global-delivery-status") {
		return nil, &ParseError{Reason: fmt.Sprintf("not a multipart/report of type delivery-status: %q", h.Get("Content-Type"))}
	}
	if params["boundary"] == "" {
		return nil, &ParseError{Reason: "multipart/report without a boundary"}
	}
	r := &Report{
		From:      angleAddr(h.Get("From")),
		To:        angleAddr(h.Get("To")),
		MessageID: strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(h.Get("Message-Id")), "<"), ">"),
	}
	if d := h.Get("Date"); d != "" {
		if r.Date, err = mail.ParseDate(d); err != nil {
			return nil, &ParseError{Reason: "bad Date", Err: err}
		}
	}
	mr := textproto.NewMultipartReader(br, params["boundary"])
	found := false
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, &ParseError{Reason: "reading a MIME part", Err: err}
		}
		pt, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
		switch {
		case !found && (pt == "message/delivery-status" || pt == "message/global-delivery-status"):
			if err := parseStatus(r, p.Header.Get("Content-Transfer-Encoding"), p); err != nil {
				return nil, err
			}
			found = true
		case found && (pt == "message/rfc822" || pt == "message/global"):
			r.Return = "FULL"
		case found && (pt == "text/rfc822-headers" || pt == "message/global-headers"):
			r.Return = "HDRS"
		}
		if r.Return != "" {
			break // the original is not needed: do not read it
		}
	}
	if !found {
		return nil, &ParseError{Reason: "no delivery-status part"}
	}
	return r, nil
}

// parseStatus reads the blocks of a delivery-status part into r.
func parseStatus(r *Report, cte string, body io.Reader) error {
	switch strings.ToLower(strings.TrimSpace(cte)) {
	case "base64":
		body = base64.NewDecoder(base64.StdEncoding, body)
	case "quoted-printable":
		body = quotedprintable.NewReader(body)
	}
	data, err := io.ReadAll(io.LimitReader(body, maxStatus+1))
	if err != nil {
		return &ParseError{Reason: "reading the delivery-status part", Err: err}
	}
	if len(data) > maxStatus {
		return &ParseError{Reason: "delivery-status part", Err: errTooLarge}
	}
	br := bufio.NewReader(bytes.NewReader(data))
	for block := 0; ; block++ {
		// Blocks are separated by one empty line; tolerate more.
		for {
			b, err := br.Peek(1)
			if err != nil || (b[0] != '\r' && b[0] != '\n') {
				break
			}
			br.ReadByte()
		}
		if _, err := br.Peek(1); err != nil {
			break
		}
		h, err := textproto.ReadHeader(br)
		if err != nil && err != io.EOF {
			return &ParseError{Reason: fmt.Sprintf("delivery-status block %d", block+1), Err: err}
		}
		if block == 0 {
			if err := parseMessageFields(r, h); err != nil {
				return err
			}
			continue
		}
		rc, err := parseRecipient(h)
		if err != nil {
			return err
		}
		r.Recipients = append(r.Recipients, rc)
	}
	if len(r.Recipients) == 0 {
		return &ParseError{Reason: "delivery-status part without recipients"}
	}
	return nil
}

func parseMessageFields(r *Report, h textproto.Header) error {
	mta := h.Get("Reporting-Mta")
	if mta == "" {
		return &ParseError{Reason: "no Reporting-MTA"}
	}
	r.ReportingMTA = untyped(mta)
	r.EnvelopeID = h.Get("Original-Envelope-Id")
	var err error
	r.ArrivalDate, err = parseDate(h, "Arrival-Date")
	return err
}

func parseRecipient(h textproto.Header) (Recipient, error) {
	rc := Recipient{
		FinalRecipient:    untyped(h.Get("Final-Recipient")),
		OriginalRecipient: h.Get("Original-Recipient"),
		Action:            Action(strings.ToLower(firstWord(h.Get("Action")))),
		Status:            firstWord(h.Get("Status")),
		RemoteMTA:         h.Get("Remote-Mta"),
		DiagnosticCode:    h.Get("Diagnostic-Code"),
	}
	switch {
	case rc.FinalRecipient == "":
		return rc, &ParseError{Reason: "recipient block without Final-Recipient"}
	case !rc.Action.valid():
		return rc, &ParseError{Reason: fmt.Sprintf("recipient %q: bad Action %q", rc.FinalRecipient, rc.Action)}
	case !validStatus(rc.Status):
		return rc, &ParseError{Reason: fmt.Sprintf("recipient %q: bad Status %q", rc.FinalRecipient, rc.Status)}
	}
	var err error
	if rc.LastAttemptDate, err = parseDate(h, "Last-Attempt-Date"); err != nil {
		return rc, err
	}
	rc.WillRetryUntil, err = parseDate(h, "Will-Retry-Until")
	return rc, err
}

func parseDate(h textproto.Header, key string) (time.Time, error) {
	v := h.Get(key)
	if v == "" {
		return time.Time{}, nil
	}
	t, err := mail.ParseDate(v)
	if err != nil {
		return t, &ParseError{Reason: "bad " + key, Err: err}
	}
	return t, nil
}

func firstWord(s string) string {
	if f := strings.Fields(s); len(f) > 0 {
		return f[0]
	}
	return ""
}

// angleAddr returns the address of a From or To header value: what RFC
// 5322 parsing finds, else what is inside the last <…>, else the trimmed
// value.
func angleAddr(v string) string {
	if a, err := mail.ParseAddress(v); err == nil {
		return a.Address
	}
	if i := strings.LastIndexByte(v, '<'); i >= 0 {
		if j := strings.IndexByte(v[i:], '>'); j > 0 {
			return v[i+1 : i+j]
		}
	}
	return strings.TrimSpace(v)
}

// capReader reads at most left octets from r, then fails with errTooLarge,
// so a report with an endless header or first part cannot exhaust memory.
type capReader struct {
	r    io.Reader
	left int64
}

func (c *capReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, errTooLarge
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, err
}
