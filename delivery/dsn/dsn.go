package dsn

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/outboundmail/outbound/delivery/rfc5321"
)

// Action is the RFC 3464 §2.3.3 Action field: what happened to a recipient.
type Action string

// The actions of RFC 3464 §2.3.3.
const (
	Failed    Action = "failed"    // delivery failed and will not be retried
	Delayed   Action = "delayed"   // not delivered yet, still being retried
	Delivered Action = "delivered" // delivered to the recipient's mailbox
	Relayed   Action = "relayed"   // handed to a system that sends no DSNs
	Expanded  Action = "expanded"  // delivered and forwarded to several addresses
)

func (a Action) valid() bool {
	switch a {
	case Failed, Delayed, Delivered, Relayed, Expanded:
		return true
	}
	return false
}

// Recipient is one per-recipient block of a report (RFC 3464 §2.3).
type Recipient struct {
	// FinalRecipient is the recipient's address. Compose adds the address
	// type ("rfc822;", or "utf-8;" for a non-ASCII address, RFC 6533 §3)
	// and accepts an address that already carries one; Parse returns the
	// bare address.
	FinalRecipient string
	// OriginalRecipient is the ORCPT parameter as given, e.g.
	// "rfc822;x@example.com"; "" omits the field.
	OriginalRecipient string
	Action            Action
	// Status is the RFC 3463 enhanced status code, e.g. "5.1.1". When it
	// is "", Compose derives "5.0.0", "4.0.0" or "2.0.0" from the reply
	// code in DiagnosticCode, or else from Action.
	Status string
	// RemoteMTA names the server that answered, "dns; mx.example.com";
	// "dns; " is added when no type is given; "" omits the field.
	RemoteMTA string
	// DiagnosticCode is the server's reply, "smtp; 550 5.1.1 no such user";
	// "smtp; " is added when no type is given; "" omits the field.
	// Long values are folded; text after 4096 octets is cut.
	DiagnosticCode  string
	LastAttemptDate time.Time // zero omits the field
	WillRetryUntil  time.Time // written for Delayed only; zero omits it
}

// Report is one delivery status notification.
type Report struct {
	ReportingMTA string    // our host name, written as "dns; host"
	From         string    // the From address of the notification, e.g. "MAILER-DAEMON@host"
	To           string    // the original envelope sender; the notification goes there
	MessageID    string    // Message-ID of the notification, with or without <>; the caller supplies it so a retried composition is identical
	Date         time.Time // Date of the notification
	EnvelopeID   string    // the original ENVID (RFC 3461 §4.4); "" omits Original-Envelope-Id
	ArrivalDate  time.Time // when the original arrived; zero omits Arrival-Date
	// Return selects the third part: "FULL" returns the whole original as
	// message/rfc822, anything else only its header as text/rfc822-headers
	// (RFC 3461 §4.3). Parse sets "FULL", "HDRS", or "" when the report has
	// no third part.
	Return     string
	Recipients []Recipient // at least one
}

// FieldError reports a Report that Compose refuses to write. Nothing has
// been written when it is returned.
type FieldError struct {
	Field  string // e.g. "To" or "Recipients[1].Status"
	Value  string
	Reason string
}

// Error returns e.g. `dsn: invalid To "": the null sender gets no notifications`.
func (e *FieldError) Error() string {
	v := e.Value
	if len(v) > 256 {
		v = v[:256] + "…"
	}
	return fmt.Sprintf("dsn: invalid %s %q: %s", e.Field, v, e.Reason)
}

// Limits on what is copied from remote servers into a report.
const (
	maxDiagnostic = 4096 // octets of Diagnostic-Code text
	maxRemoteMTA  = 512
)

// normalised is a Report checked and prepared for writing.
type normalised struct {
	*Report
	messageID string // without angle brackets
	rcpts     []Recipient
	global    bool // an address is non-ASCII: RFC 6533 types
}

// normalise validates r and returns the values Compose writes.
func normalise(r *Report) (*normalised, error) {
	n := &normalised{Report: r}
	bad := func(field, value, reason string) error {
		return &FieldError{Field: field, Value: value, Reason: reason}
	}
	if err := rfc5321.CheckDomain(r.ReportingMTA); err != nil || strings.HasPrefix(r.ReportingMTA, "[") {
		return nil, bad("ReportingMTA", r.ReportingMTA, "not a host name")
	}
	if err := rfc5321.CheckMailbox(r.From); err != nil {
		return nil, bad("From", r.From, reasonOf(err))
	}
	if r.To == "" {
		return nil, bad("To", r.To, "the null sender gets no notifications (RFC 3461 §6.2)")
	}
	if err := rfc5321.CheckMailbox(r.To); err != nil {
		return nil, bad("To", r.To, reasonOf(err))
	}
	n.messageID = strings.TrimSuffix(strings.TrimPrefix(r.MessageID, "<"), ">")
	if !validMessageID(n.messageID) {
		return nil, bad("MessageID", r.MessageID, `want id-left "@" id-right in printable ASCII`)
	}
	if r.Date.IsZero() {
		return nil, bad("Date", "", "zero time")
	}
	if r.EnvelopeID != "" && !printableASCII(r.EnvelopeID, 100) {
		return nil, bad("EnvelopeID", r.EnvelopeID, "want at most 100 printable ASCII characters (RFC 3461 §4.4)")
	}
	if r.Return != "" && !strings.EqualFold(r.Return, "FULL") && !strings.EqualFold(r.Return, "HDRS") {
		return nil, bad("Return", r.Return, `want "FULL", "HDRS" or ""`)
	}
	if len(r.Recipients) == 0 {
		return nil, bad("Recipients", "", "no recipients")
	}
	n.global = rfc5321.NeedsSMTPUTF8(r.To) || rfc5321.NeedsSMTPUTF8(r.From)
	for i, rc := range r.Recipients {
		field := func(name string) string { return fmt.Sprintf("Recipients[%d].%s", i, name) }
		rc.FinalRecipient = stripAddressType(rc.FinalRecipient)
		if err := rfc5321.CheckMailbox(rc.FinalRecipient); err != nil {
			return nil, bad(field("FinalRecipient"), rc.FinalRecipient, reasonOf(err))
		}
		if o := rc.OriginalRecipient; o != "" && (!strings.Contains(o, ";") || !printableUTF8(o, rfc5321.MaxPathLength+32)) {
			return nil, bad(field("OriginalRecipient"), o, `want "type;address" without control characters`)
		}
		if !rc.Action.valid() {
			return nil, bad(field("Action"), string(rc.Action), "not an RFC 3464 action")
		}
		if rc.Status == "" {
			rc.Status = deriveStatus(rc.DiagnosticCode, rc.Action)
		} else if !validStatus(rc.Status) {
			return nil, bad(field("Status"), rc.Status, "not an RFC 3463 status code")
		}
		rc.RemoteMTA = typed(sanitize(rc.RemoteMTA, maxRemoteMTA), "dns")
		rc.DiagnosticCode = typed(sanitize(rc.DiagnosticCode, maxDiagnostic), "smtp")
		if rc.Action != Delayed {
			rc.WillRetryUntil = time.Time{}
		}
		if rfc5321.NeedsSMTPUTF8(rc.FinalRecipient) || rfc5321.NeedsSMTPUTF8(rc.OriginalRecipient) {
			n.global = true
		}
		n.rcpts = append(n.rcpts, rc)
	}
	return n, nil
}

func reasonOf(err error) string {
	var ae *rfc5321.AddressError
	if errors.As(err, &ae) {
		return ae.Reason
	}
	return err.Error()
}

// stripAddressType removes an "rfc822;" or "utf-8;" address type.
func stripAddressType(a string) string {
	for _, t := range []string{"rfc822;", "utf-8;"} {
		if len(a) >= len(t) && strings.EqualFold(a[:len(t)], t) {
			return strings.TrimSpace(a[len(t):])
		}
	}
	return a
}

// addressType returns the RFC 3464 / RFC 6533 address type for addr.
func addressType(addr string) string {
	if rfc5321.NeedsSMTPUTF8(addr) {
		return "utf-8"
	}
	return "rfc822"
}

// typed returns "" for "", v when it has a "type;" prefix, else def + "; " + v.
func typed(v, def string) string {
	if v == "" {
		return ""
	}
	if i := strings.IndexByte(v, ';'); i > 0 && isAtom(v[:i]) {
		return v
	}
	return def + "; " + v
}

func isAtom(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return s != ""
}

// validStatus checks class "." subject "." detail (RFC 3463 §2): class 2, 4
// or 5, subject and detail of 1 to 3 digits.
func validStatus(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 3 || (parts[0] != "2" && parts[0] != "4" && parts[0] != "5") {
		return false
	}
	for _, p := range parts[1:] {
		if len(p) < 1 || len(p) > 3 || strings.Trim(p, "0123456789") != "" {
			return false
		}
	}
	return true
}

// deriveStatus gives the RFC 3463 §3.1 "X.0.0" status for a reply without
// an enhanced code: the class is the first digit of the reply code, or
// follows from the action when there was no reply.
func deriveStatus(diag string, a Action) string {
	if _, text, ok := strings.Cut(diag, ";"); ok {
		text = strings.TrimSpace(text)
		if len(text) >= 3 && strings.Trim(text[:3], "0123456789") == "" && (len(text) == 3 || text[3] == ' ' || text[3] == '-') {
			switch text[0] {
			case '2', '4', '5':
				return text[:1] + ".0.0"
			}
		}
	}
	switch a {
	case Failed:
		return "5.0.0"
	case Delayed:
		return "4.0.0"
	}
	return "2.0.0"
}

// validMessageID checks a msg-id without its angle brackets (RFC 5322
// §3.6.4), in the simple dot-atom form every MTA generates.
func validMessageID(id string) bool {
	left, right, ok := strings.Cut(id, "@")
	if !ok || left == "" || right == "" || strings.ContainsAny(id[len(left)+1:], "@") {
		return false
	}
	return printableASCII(id, 250) && !strings.ContainsAny(id, "<>\"\\()[],;: ")
}

// printableASCII reports whether s is 1 to max octets of %d33-126.
func printableASCII(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// printableUTF8 reports whether s is valid UTF-8 of at most max octets with
// no control characters.
func printableUTF8(s string, max int) bool {
	if len(s) > max || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < ' ' || r == 0x7f || (r >= 0x80 && r <= 0x9f) || r == '\uFFFD' || r == '\u2028' || r == '\u2029' {
			return false
		}
	}
	return true
}

// maxWord is the longest run of non-space octets sanitize lets through, so
// that a field can always be folded at a space within 998 octets.
const maxWord = 900

// sanitize makes remote text safe to write: every control character (CR,
// LF, NUL, TAB …) becomes a space, every non-ASCII character a "?", runs of
// spaces become one, a space is put into any word longer than maxWord, and
// the result is cut to max octets.
func sanitize(s string, max int) string {
	var b strings.Builder
	word := -1 // length of the current word; -1 drops leading spaces
	for _, r := range s {
		switch {
		case r < ' ' || r == 0x7f:
			r = ' '
		case r > '~':
			r = '?'
		}
		if b.Len() >= max {
			b.WriteString("...")
			break
		}
		switch {
		case r != ' ' && word >= maxWord:
			b.WriteByte(' ')
			word = 0
		case r == ' ' && word <= 0:
			continue
		}
		if r == ' ' {
			word = 0
		} else {
			word++
		}
		b.WriteByte(byte(r))
	}
	return strings.TrimRight(b.String(), " ")
}
