// Package delivery makes one SMTP delivery attempt and classifies every reply,
// per recipient and per destination.
//
// It never retries in-process and never imports package queue: it reports
// what happened, and the queue decides when to try again.
//
// # One attempt
//
// [Deliverer.Deliver] takes a destination (a domain, or the relay) and a
// [Message] whose recipients all belong to it, and:
//
//  1. checks every address (package rfc5321) and DSN parameter; a bad one
//     fails that recipient permanently without touching the network;
//  2. resolves the destination (RFC 5321 §5.1): MX records sorted by
//     preference, equal preferences shuffled; no MX means the domain itself
//     (implicit MX); a null MX (RFC 7505) fails at once; MX records that
//     exist are never bypassed for the domain's own addresses. With a Relay,
//     its address records instead;
//  3. takes an idle connection to the destination, or connects to the hosts
//     in order, moving on after a connection-level failure (refused, timed
//     out, 4xx or 5xx greeting, EHLO or STARTTLS failure, a 421) for up to
//     MaxAddresses addresses;
//  4. on a new connection: reads the greeting, sends EHLO with Hostname, and
//     runs STARTTLS as the [TLSPolicy] says, then EHLO again over TLS
//     (RFC 3207 §4.2), then AUTH when configured (only over TLS or loopback);
//  5. runs a mail transaction: MAIL with SIZE, SMTPUTF8, REQUIRETLS, RET and
//     ENVID; one RCPT per recipient with NOTIFY and ORCPT when the server
//     offers DSN; DATA and the body, streamed through rfc5321.Reader so that
//     only CR LF line endings reach the wire; the reply to the final dot.
//     Recipients a 452 left over go in another transaction on the same
//     connection, if the body can be rewound (an io.Seeker). When the server
//     offers PIPELINING (RFC 2920) and NoPipelining is false, MAIL, the
//     RCPTs and DATA go in one write and their replies are read in order,
//     each with its own timeout and limits. Every reply means what it means
//     without pipelining; a 354 after a refused MAIL, or with no accepted
//     recipient, closes the connection without a body or a dot;
//  6. hands the connection back for reuse (MaxMessagesPerConn, IdleTimeout,
//     MaxIdlePerDestination), unless it saw a 421 or a non-SMTP error.
//
// The SMTP client is github.com/emersion/go-smtp's, with its gaps covered
// here: the greeting, the first EHLO and STARTTLS are done by this package
// (go-smtp allows neither opportunistic STARTTLS nor a custom EHLO name
// before it); replies are bounded in lines and bytes; the ctx reaches the
// socket (the connection is closed when ctx ends, deadlines are clamped to
// its deadline); every write of message data has its own deadline; the
// enhanced code of multi-line replies is re-parsed; extensions are checked
// before MAIL, since go-smtp would send 8-bit data to a 7-bit server and
// drop DSN parameters silently.
//
// # Classification
//
// Every recipient gets a [Result] with a [Class]. [Classify] is the pure
// rule for server replies; the engine adds the cases without one.
//
//	what happened                              class       RFC
//	2xx to the final dot                       Delivered   5321 §4.2.5
//	4xx to MAIL, RCPT, DATA, final dot         Temporary   5321 §4.2.1
//	5xx to MAIL, DATA, final dot               Permanent   5321 §4.2.1 (MAIL 5xx not cached, §4.5.4.1)
//	5xx to RCPT                                Permanent   that recipient only
//	552 to RCPT                                Temporary   5321 §4.5.3.1.10
//	452 (or bare 552) to RCPT after an OK      (none)      sent in the next transaction, same
//	                                                       connection, this attempt; 5321 §4.5.3.1.10
//	4xx/5xx greeting, EHLO, STARTTLS, AUTH     Temporary   next host; Postfix smtp_skip_5xx_greeting
//	421 at any stage                           Temporary   5321 §3.8; connection closed
//	connect failure, timeout, connection lost  Temporary   5321 §4.5.4.1
//	lost after the final dot, before the reply Temporary + PossibleDuplicate (RFC 1047)
//	malformed or oversized reply               Temporary   5321 §4.2 (protocol error)
//	null MX                                    Permanent   556 5.1.10, RFC 7505 §4.1
//	no MX and no address (NXDOMAIN)            Permanent   550 5.1.2, 5321 §5.1
//	temporary DNS failure                      Temporary   451 4.4.3, 5321 §5.1
//	SIZE above the server's limit              Permanent   552 5.3.4, RFC 1870 §6.1
//	8-bit body, no 8BITMIME                    Permanent   554 5.6.3, RFC 6152 §3
//	non-ASCII address, no SMTPUTF8             Permanent   553 5.6.7, RFC 6531 §3.4
//	REQUIRETLS not offered, or no TLS          Permanent   550 5.7.30, RFC 8689 §4.2.2
//	TLS required and not available             Temporary   never a plaintext fallback
//	body refused by rfc5321.Reader             Permanent   554 5.6.0; DATA aborted without the dot
//	invalid address / DSN parameter            Permanent   553 5.1.3, 553 5.1.7, 501 5.5.4
//	anything else                              Temporary
//
// Local decisions come with a synthesised [Reply] carrying the standard code
// above, so that a DSN can quote it; failures without any reply have Code 0
// and an [*Error] in Result.Err.
//
// [Report.DestinationUnavailable] is set when the destination as a whole
// should be left alone until its own backoff expires: no host could be
// used (all failed at the connection level, or DNS failed temporarily), or
// a 421 arrived at any stage. A 4xx to one RCPT affects only that
// recipient.
//
// # Limits
//
// go-smtp matches EHLO keywords case-sensitively, so an extension a server
// advertises in lower case is treated as absent. PIPELINING is done here,
// outside go-smtp's client, for MAIL, RCPT and DATA only; there is no
// CHUNKING. A new connection without
// TLS sends EHLO twice: once here, to look for STARTTLS, once by go-smtp.
// A message over the SIZE of the first host that answers fails without
// trying other MX hosts, as in Postfix. Non-ASCII domains are passed to the
// resolver as they are (no IDNA conversion).
package delivery
