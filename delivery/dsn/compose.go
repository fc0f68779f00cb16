package dsn

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"mime/quotedprintable"
	"strings"

	"github.com/emersion/go-message/textproto"

	"github.com/outboundmail/outbound/delivery/rfc5321"
)

// peekLimit is how much of the original Compose holds to decide whether the
// returned part is 7bit; beyond it the part is labelled 8bit.
const peekLimit = 64 << 10

// Compose writes the notification described by r to w, as an RFC 6522
// multipart/report of type delivery-status, with CR LF line endings.
//
// original is the original message as queued. Compose streams it into the
// third part: all of it when r.Return is "FULL", its header only otherwise;
// a nil original omits the third part. The original goes through
// [rfc5321.Reader], so it is canonicalised on the way. The returned part is
// labelled 8bit when the original has octets above 127, or when it is longer
// than 64 KiB and so cannot be checked before its part header is written
// (RFC 2045 §6.2 allows 8bit for 7-bit data; the reverse is forbidden).
//
// Compose returns a [*FieldError], with nothing written, when r is invalid.
// Any other error comes from w or from reading original (for example a
// [*rfc5321.DataError] for an original with a NUL); the output is then
// incomplete and must be discarded. Composing again with a nil original is
// the usual fallback.
func Compose(w io.Writer, r *Report, original io.Reader) error {
	n, err := normalise(r)
	if err != nil {
		return err
	}
	full := strings.EqualFold(r.Return, "FULL")
	ret := ""
	if original != nil {
		ret = "HDRS"
		if full {
			ret = "FULL"
		}
	}
	// go-message's textproto writers copy bytes as they are. Its message
	// writers would re-wrap 7bit/8bit parts at 998 octets behind our back
	// and cost an allocation per line; every line here is already short.
	bw := bufio.NewWriter(w)
	mw := textproto.NewMultipartWriter(bw) // crypto/rand boundary: the original is arbitrary data
	if err := textproto.WriteHeader(bw, topHeader(n, mw.Boundary())); err != nil {
		return err
	}
	if err := writeHuman(mw, n, ret); err != nil {
		return err
	}
	if err := writeStatus(mw, n); err != nil {
		return err
	}
	if original != nil {
		if err := writeOriginal(mw, n.global, full, original); err != nil {
			return err
		}
	}
	if err := mw.Close(); err != nil {
		return err
	}
	return bw.Flush()
}

// header builds a go-message header from complete "Key: value" lines. The
// header stores fields in reverse and canonicalises keys ("Remote-Mta"), so
// the lines are added last to first with AddRaw, which keeps their spelling.
func header(fields ...string) textproto.Header {
	var h textproto.Header
	for i := len(fields) - 1; i >= 0; i-- {
		h.AddRaw([]byte(fields[i]))
	}
	return h
}

func field(key, value string) string {
	var b strings.Builder
	writeField(&b, key, value)
	return b.String()
}

func topHeader(n *normalised, boundary string) textproto.Header {
	return header(
		field("From", "Mail Delivery System <"+n.From+">"),
		field("To", "<"+n.To+">"),
		field("Subject", subject(n.rcpts)),
		field("Date", formatDate(n.Date)),
		field("Message-ID", "<"+n.messageID+">"),
		// RFC 3834 §5: an automatic response; RFC 3464 §2 and RFC 5321
		// §4.5.5: sent with the null reverse-path by the caller.
		field("Auto-Submitted", "auto-replied"),
		field("MIME-Version", "1.0"),
		field("Content-Type", `multipart/report; report-type=delivery-status; boundary="`+boundary+`"`),
	)
}

func writeHuman(mw *textproto.MultipartWriter, n *normalised, ret string) error {
	text := humanText(n, ret)
	cte := "7bit"
	if rfc5321.NeedsSMTPUTF8(text) {
		cte = "quoted-printable" // keeps the part 7-bit for non-ASCII addresses
	}
	pw, err := mw.CreatePart(header(
		field("Content-Type", "text/plain; charset=utf-8"),
		field("Content-Description", "Notification"),
		field("Content-Transfer-Encoding", cte),
	))
	if err != nil {
		return err
	}
	if cte == "7bit" {
		_, err = io.WriteString(pw, text)
		return err
	}
	qw := quotedprintable.NewWriter(pw)
	if _, err := io.WriteString(qw, text); err != nil {
		return err
	}
	return qw.Close()
}

// writeStatus writes the message/delivery-status part: the per-message
// fields, then a block per recipient, each block ended by an empty line
// (RFC 3464 §2.1), in the field order of RFC 3464 §2.2 and §2.3.
func writeStatus(mw *textproto.MultipartWriter, n *normalised) error {
	ct, cte := "message/delivery-status", []string{}
	if n.global {
		ct = "message/global-delivery-status" // RFC 6533 §6.2
		cte = append(cte, field("Content-Transfer-Encoding", "8bit"))
	}
	pw, err := mw.CreatePart(header(append([]string{
		field("Content-Type", ct),
		field("Content-Description", "Delivery report"),
	}, cte...)...))
	if err != nil {
		return err
	}
	var b strings.Builder
	writeField(&b, "Reporting-MTA", "dns; "+n.ReportingMTA)
	if n.EnvelopeID != "" {
		writeField(&b, "Original-Envelope-Id", n.EnvelopeID)
	}
	if !n.ArrivalDate.IsZero() {
		writeField(&b, "Arrival-Date", formatDate(n.ArrivalDate))
	}
	for _, rc := range n.rcpts {
		b.WriteString("\r\n")
		if rc.OriginalRecipient != "" {
			writeField(&b, "Original-Recipient", rc.OriginalRecipient)
		}
		writeField(&b, "Final-Recipient", addressType(rc.FinalRecipient)+"; "+rc.FinalRecipient)
		writeField(&b, "Action", string(rc.Action))
		writeField(&b, "Status", rc.Status)
		if rc.RemoteMTA != "" {
			writeField(&b, "Remote-MTA", rc.RemoteMTA)
		}
		if rc.DiagnosticCode != "" {
			writeField(&b, "Diagnostic-Code", rc.DiagnosticCode)
		}
		if !rc.LastAttemptDate.IsZero() {
			writeField(&b, "Last-Attempt-Date", formatDate(rc.LastAttemptDate))
		}
		if !rc.WillRetryUntil.IsZero() {
			writeField(&b, "Will-Retry-Until", formatDate(rc.WillRetryUntil))
		}
	}
	_, err = io.WriteString(pw, b.String())
	return err
}

// writeOriginal streams the original, or its header, into the third part.
// It holds up to peekLimit octets first, to label a short original exactly.
func writeOriginal(mw *textproto.MultipartWriter, global, full bool, original io.Reader) error {
	br := bufio.NewReaderSize(rfc5321.NewReader(original), 4096) // lines are ≤ 1000 octets
	var head bytes.Buffer
	complete, err := copyLines(&head, br, !full, peekLimit)
	if err != nil {
		return fmt.Errorf("dsn: reading the original message: %w", err)
	}
	ct, desc := "message/rfc822", "Original message"
	if !full {
		ct, desc = "text/rfc822-headers", "Original message header"
	}
	if global {
		// RFC 6533 §6.3, §6.4: the original has UTF-8 header fields.
		ct = map[bool]string{true: "message/global", false: "message/global-headers"}[full]
	}
	fields := []string{field("Content-Type", ct), field("Content-Description", desc)}
	if !complete || rfc5321.NeedsSMTPUTF8(head.String()) {
		fields = append(fields, field("Content-Transfer-Encoding", "8bit"))
	}
	pw, err := mw.CreatePart(header(fields...))
	if err != nil {
		return err
	}
	if _, err := pw.Write(head.Bytes()); err != nil {
		return err
	}
	if !complete {
		if _, err := copyLines(pw, br, !full, -1); err != nil {
			return fmt.Errorf("dsn: reading the original message: %w", err)
		}
	}
	return nil
}

// copyLines copies canonical lines from br to w until EOF or, when
// headerOnly, the empty line that ends the header (not copied). With limit
// ≥ 0 it stops once limit octets are copied; complete reports whether the
// end was reached.
func copyLines(w io.Writer, br *bufio.Reader, headerOnly bool, limit int) (complete bool, err error) {
	copied := 0
	for limit < 0 || copied < limit {
		line, err := br.ReadSlice('\n')
		if headerOnly && len(line) == 2 && line[0] == '\r' {
			return true, nil
		}
		if len(line) > 0 {
			if _, werr := w.Write(line); werr != nil {
				return false, werr
			}
			copied += len(line)
		}
		if err == io.EOF {
			return true, nil
		}
		if err != nil {
			return false, err
		}
	}
	return false, nil
}
