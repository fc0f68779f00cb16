package delivery

import (
	"fmt"
	"io"
	"strconv"
)

// Class says what to do with a recipient after an attempt.
type Class int

const (
	// Temporary means "defer and try again later, on the schedule". It is the
	// zero value: an outcome nobody classified is retried, never dropped.
	Temporary Class = iota
	// Permanent means "stop and tell the sender" (a DSN).
	Permanent
	// Delivered means the server accepted responsibility for the recipient
	// (2xx to the final dot, RFC 5321 §4.2.5).
	Delivered
)

// String returns "temporary", "permanent" or "delivered".
func (c Class) String() string {
	switch c {
	case Temporary:
		return "temporary"
	case Permanent:
		return "permanent"
	case Delivered:
		return "delivered"
	}
	return "Class(" + strconv.Itoa(int(c)) + ")"
}

// Stage names the step of an SMTP attempt at which a reply or error arrived.
// Classification depends on it: a 5xx to EHLO or STARTTLS is a destination
// problem, a 5xx to RCPT is the recipient's.
type Stage string

// The stages of one attempt, in order.
const (
	StageResolve  Stage = "resolve"  // MX and address lookup
	StageConnect  Stage = "connect"  // TCP (and implicit TLS) connection
	StageGreeting Stage = "greeting" // the server's 220 banner
	StageEHLO     Stage = "EHLO"     // EHLO / HELO
	StageSTARTTLS Stage = "STARTTLS" // STARTTLS command and TLS handshake
	StageAUTH     Stage = "AUTH"     // SMTP AUTH to a smarthost
	StageMAIL     Stage = "MAIL"     // MAIL FROM
	StageRCPT     Stage = "RCPT"     // RCPT TO
	StageDATA     Stage = "DATA"     // DATA command, up to the 354
	StageBody     Stage = "body"     // streaming the message
	StageEndData  Stage = "end of data"
)

// EnhancedCode is an RFC 3463 enhanced status code, class.subject.detail.
// The zero value means the server sent none.
type EnhancedCode [3]int

// IsZero reports whether no enhanced code was given.
func (e EnhancedCode) IsZero() bool { return e == EnhancedCode{} }

// String returns "4.7.1", or "" for the zero value.
func (e EnhancedCode) String() string {
	if e.IsZero() {
		return ""
	}
	return fmt.Sprintf("%d.%d.%d", e[0], e[1], e[2])
}

// Reply is one SMTP reply as the server sent it, or as the engine synthesised
// it for a local decision (then Code is a standard code such as 556 for a
// null MX, and Text says what happened).
type Reply struct {
	Code     int          // 250, 451, 550 …; 0 when there was no reply at all
	Enhanced EnhancedCode // 4.7.1; zero when absent
	Text     string       // the text after the codes; lines joined with "\n"
}

// String formats the reply as it appeared on the wire, e.g. "451 4.7.1 try later".
func (r Reply) String() string {
	if r.Code == 0 {
		return r.Text
	}
	s := strconv.Itoa(r.Code)
	if !r.Enhanced.IsZero() {
		s += " " + r.Enhanced.String()
	}
	if r.Text != "" {
		s += " " + r.Text
	}
	return s
}

// Recipient is one envelope recipient with its RFC 3461 DSN parameters.
type Recipient struct {
	Address string   // mailbox, without angle brackets
	Notify  []string // NOTIFY values: "NEVER" or any of "SUCCESS", "FAILURE", "DELAY"; nil means unset
	ORCPT   string   // original recipient, "rfc822;addr"; "" means unset
}

// Message is what one Deliver call sends: one envelope whose recipients share
// a destination, and a body that is streamed once.
type Message struct {
	From       string      // reverse-path; "" is the null sender <>
	Recipients []Recipient // at least one
	// Body is the message (header and body), with CRLF line endings. It is
	// read at most once, only after the server accepted at least one RCPT,
	// and never held whole in memory.
	Body       io.Reader
	Size       int64  // octets of Body; 0 means unknown (no SIZE= sent)
	EightBit   bool   // the body contains octets > 127 (needs 8BITMIME)
	Return     string // RET: "FULL", "HDRS" or ""
	EnvelopeID string // ENVID; "" means unset
	RequireTLS bool   // REQUIRETLS (RFC 8689)
}

// Result is the outcome of one attempt for one recipient.
type Result struct {
	Recipient string
	Class     Class
	Reply     Reply  // the reply that decided Class; Code 0 when Err decided it
	Stage     Stage  // where Reply or Err arrived
	Host      string // the host that answered, "mx.example.com[192.0.2.1]:25"
	Err       error  // transport or local error, if any
	// PossibleDuplicate is set when the connection was lost after the final
	// dot and before the reply: the server may have accepted the message
	// (RFC 1047), so a retry may deliver it twice.
	PossibleDuplicate bool
}

// Report is what one attempt produced: a Result per recipient, in the order
// of Message.Recipients, and a verdict about the destination as a whole.
type Report struct {
	Destination string   // the key the attempt was made for (domain or relay)
	Results     []Result // one per recipient
	// DestinationUnavailable is set when the destination as a whole should be
	// left alone until its own backoff expires: no address accepted a
	// connection, the greeting was 4xx/421, a 421 arrived at any stage, or
	// TLS failed under a required policy (RFC 5321 §4.5.4.1).
	DestinationUnavailable bool
	// DestinationReply and DestinationStage describe what made the destination
	// unavailable, when it is.
	DestinationReply Reply
	DestinationStage Stage
	DestinationErr   error
	// TLS and Extensions describe the session that carried the last mail
	// transaction: how it was protected, and the EHLO keywords its server
	// offered after TLS (e.g. "DSN", "SIZE 10240000"). Without DSN, NOTIFY
	// and RET were not passed on (RFC 3461 §4.2: a "relayed" DSN may be due).
	TLS        TLSState
	Extensions []string
}
