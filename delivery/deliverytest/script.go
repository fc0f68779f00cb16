package deliverytest

import (
	"crypto/tls"
	"errors"
	"io"
	"slices"
	"sync/atomic"

	"github.com/emersion/go-smtp"
)

// ErrDrop, returned by a [Script] hook, makes the server close the connection
// without sending any reply. Returned from Data, it models a connection lost
// after the final dot and before the reply: the client cannot know whether the
// message was accepted (RFC 1047). Messages dropped this way are not recorded
// by [Server.Messages].
var ErrDrop = errors.New("deliverytest: drop the connection without a reply")

// Script says how a [Server] answers. The zero value (or a nil *Script)
// accepts everything and offers neither STARTTLS nor AUTH. go-smtp always
// offers PIPELINING, 8BITMIME, ENHANCEDSTATUSCODES, CHUNKING and SIZE, and
// always greets with "220 <Domain> ESMTP Service Ready"; use [NewRawServer]
// for a peer that differs there.
//
// Hooks are called from the goroutine serving each connection, so several may
// run at once: a hook that keeps state must guard it. A hook returns nil to
// accept, an *smtp.SMTPError to send exactly that reply, or [ErrDrop]. A 421
// reply is sent and then the connection is closed, as RFC 5321 §3.8 says a
// server does. Any other error becomes go-smtp's generic reply (451 4.0.0 for
// MAIL and RCPT, 554 5.0.0 for DATA). A hook may block, for example on a
// channel the test closes, to model a server that stalls.
type Script struct {
	// Hello is called at the first EHLO or HELO of a connection and at the
	// first one after STARTTLS, with the client's domain argument. An error
	// rejects that EHLO (go-smtp sends 451 4.0.0 for a plain error).
	Hello func(domain string) error
	// Mail is called for each MAIL FROM; from is "" for the null sender.
	Mail func(from string, opts *smtp.MailOptions) error
	// Rcpt is called for each RCPT TO that passed MaxRecipients and
	// Greylist.
	Rcpt func(to string, opts *smtp.RcptOptions) error
	// Data is called after the final dot with the envelope and the message
	// as go-smtp received it: dot-unstuffed, otherwise byte for byte (bare LF
	// and bare CR are kept).
	Data func(from string, to []string, data []byte) error

	// Greylist, when positive, answers "450 4.2.0" to the first Greylist
	// RCPTs of each (sender, recipient) pair, counted across connections,
	// and hands later ones to Rcpt. It models a greylisting peer.
	Greylist int

	// Domain is the name in the greeting and EHLO reply; "localhost" if empty.
	Domain string
	// TLSConfig enables STARTTLS; see [TLSConfig] for a self-signed one.
	TLSConfig *tls.Config
	// ImplicitTLS makes connections start with a TLS handshake using
	// TLSConfig (RFC 8314 §3, "submissions" on port 465) instead of offering
	// STARTTLS.
	ImplicitTLS bool
	// EnableDSN, EnableSMTPUTF8 and EnableREQUIRETLS advertise the RFC 3461,
	// RFC 6531 and RFC 8689 extensions and accept their parameters (go-smtp
	// advertises REQUIRETLS only after STARTTLS).
	EnableDSN, EnableSMTPUTF8, EnableREQUIRETLS bool
	// MaxMessageBytes, when positive, is advertised as SIZE; larger messages
	// get "552 5.3.4". Zero advertises SIZE without a limit.
	MaxMessageBytes int64
	// MaxRecipients, when positive, is advertised as LIMITS RCPTMAX and
	// further RCPTs in a transaction get "452 4.5.3" (not seen by Rcpt).
	MaxRecipients int
	// AuthUser and AuthPassword, when AuthUser is set, offer AUTH PLAIN and
	// accept only these credentials. AUTH is offered before STARTTLS too,
	// unless AuthRequiresTLS is set.
	AuthUser, AuthPassword string
	AuthRequiresTLS        bool
	// Debug, if set, receives a transcript of every connection. Connections
	// write to it concurrently, so it must be safe for concurrent use.
	Debug io.Writer
}

// RejectMail returns a Mail hook that answers every MAIL FROM with the reply.
func RejectMail(code int, enh smtp.EnhancedCode, text string) func(string, *smtp.MailOptions) error {
	return func(string, *smtp.MailOptions) error {
		return &smtp.SMTPError{Code: code, EnhancedCode: enh, Message: text}
	}
}

// RejectRcpt returns a Rcpt hook that answers the listed recipients with the
// reply and accepts the others; with no addresses it rejects every recipient.
func RejectRcpt(code int, enh smtp.EnhancedCode, text string, addrs ...string) func(string, *smtp.RcptOptions) error {
	return func(to string, _ *smtp.RcptOptions) error {
		if len(addrs) == 0 || slices.Contains(addrs, to) {
			return &smtp.SMTPError{Code: code, EnhancedCode: enh, Message: text}
		}
		return nil
	}
}

// RejectData returns a Data hook that answers every final dot with the reply.
func RejectData(code int, enh smtp.EnhancedCode, text string) func(string, []string, []byte) error {
	return func(string, []string, []byte) error {
		return &smtp.SMTPError{Code: code, EnhancedCode: enh, Message: text}
	}
}

// FailFirst returns a function that returns err for its first n calls and nil
// afterwards; it is safe for concurrent use. Wrap it in a hook to script
// "fail on the first attempt, accept on the retry":
//
//	fail := deliverytest.FailFirst(1, &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"})
//	script := &deliverytest.Script{Data: func(string, []string, []byte) error { return fail() }}
func FailFirst(n int, err error) func() error {
	var calls atomic.Int64
	return func() error {
		if calls.Add(1) <= int64(n) {
			return err
		}
		return nil
	}
}
