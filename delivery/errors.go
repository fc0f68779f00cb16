package delivery

import (
	"errors"
	"fmt"
	"strconv"
)

// Error describes a failure at one stage of an attempt with one host. It is
// what [Result.Err] and [Report.DestinationErr] hold when a Go error, rather
// than a server reply alone, decided the outcome. Use errors.As to get it and
// errors.Is to test for the sentinels below or for the cause, such as
// os.ErrDeadlineExceeded or context.Canceled.
type Error struct {
	Stage Stage  // where it happened
	Host  string // "mx.example.com[192.0.2.1]:25"; "" before any host was chosen
	Reply Reply  // the server's reply, if one arrived; zero otherwise
	Err   error  // the cause: a network error, a *ProtocolError, a sentinel…
}

// Error returns e.g. "delivery: STARTTLS with mx.example.com[192.0.2.1]:25:
// server does not offer STARTTLS".
func (e *Error) Error() string {
	s := "delivery: " + string(e.Stage)
	if e.Host != "" {
		s += " with " + e.Host
	}
	if e.Reply.Code != 0 {
		s += ": " + strconv.Quote(e.Reply.String())
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// ProtocolError reports a reply that does not follow RFC 5321 §4.2: a bad
// code, a continuation line with a different code, or a reply longer than
// the [ReplyLimits]. The connection is closed and the outcome is temporary,
// as for any reply the engine cannot trust.
type ProtocolError struct {
	Reason string // what is wrong, e.g. "reply has more than 100 lines"
	Line   string // the offending line, shortened; "" when not about one line
	Err    error  // a sentinel such as ErrUnexpectedData, or nil
}

// Error returns e.g. `smtp protocol error: malformed reply code: "25O ok"`.
func (e *ProtocolError) Error() string {
	if e.Line == "" {
		return "smtp protocol error: " + e.Reason
	}
	return fmt.Sprintf("smtp protocol error: %s: %q", e.Reason, e.Line)
}

// Unwrap returns Err.
func (e *ProtocolError) Unwrap() error { return e.Err }

// MessageError is returned by [Deliverer.Deliver] when the call itself is
// malformed (no recipients, no body, a recipient for another destination,
// an invalid Hostname). No attempt was made.
type MessageError struct {
	Reason string
}

// Error returns "delivery: invalid message: " followed by the reason.
func (e *MessageError) Error() string { return "delivery: invalid message: " + e.Reason }

// Causes reported inside an [*Error]. They say why the engine decided
// without, or in spite of, a server reply.
var (
	// ErrNullMX: the domain publishes a null MX (RFC 7505): it accepts no mail.
	ErrNullMX = errors.New("domain does not accept mail (null MX)")
	// ErrNoSuchDomain: the domain has neither MX nor address records.
	ErrNoSuchDomain = errors.New("domain not found")
	// ErrNoAddress: no MX host or relay had a usable address.
	ErrNoAddress = errors.New("no usable address")
	// ErrTLSUnavailable: TLS is required but the server does not offer
	// STARTTLS, or refused it.
	ErrTLSUnavailable = errors.New("TLS required but not available")
	// ErrSTARTTLSInjection: the server sent data after its 220 to STARTTLS and
	// before the TLS handshake; it could be an attacker's forged replies
	// (RFC 3207 §6, CVE-2011-0411's client-side twin).
	ErrSTARTTLSInjection = errors.New("data received between STARTTLS and the TLS handshake")
	// ErrAuthUnavailable: credentials are configured but the server offers
	// no AUTH mechanism the engine can use (PLAIN or LOGIN).
	ErrAuthUnavailable = errors.New("server offers no usable AUTH mechanism")
	// ErrAuthWithoutTLS: credentials would travel in clear text to a host
	// that is not on the loopback interface; they were not sent.
	ErrAuthWithoutTLS = errors.New("refusing to send credentials without TLS")
	// ErrBodyNotRewindable: a 452 left recipients for another transaction,
	// but the message body was already read and is not an io.Seeker.
	ErrBodyNotRewindable = errors.New("message body already read and cannot be rewound")
	// ErrNotAttempted: the connection closed before this recipient's
	// transaction (left over by a 452) could start.
	ErrNotAttempted = errors.New("not attempted: the connection closed first")
	// ErrUnexpectedData: the server sent data nobody asked for, after a
	// complete reply (an out-of-step or pipelining server).
	ErrUnexpectedData = errors.New("unexpected data after a reply")
)
