// Package dsn writes and reads delivery status notifications: the RFC 3464
// reports an MTA sends back to a message's envelope sender when delivery
// failed, is delayed, or (on request) succeeded.
//
// [Compose] writes one multipart/report (RFC 6522) with three parts: a
// plain-language explanation, the machine-readable message/delivery-status
// fields (one per-message block, then one block per recipient), and the
// original message (RET=FULL) or only its header (otherwise), streamed and
// never held in memory. When an address is non-ASCII, the report uses the
// RFC 6533 types (message/global-delivery-status, message/global,
// message/global-headers).
//
// Everything the report repeats from a remote server (reply text, host names)
// is reduced to printable ASCII on one line before it is written, so a
// hostile server cannot inject fields, headers or MIME boundaries. Everything
// from the application (addresses, Message-ID, ENVID) is validated, and
// Compose writes nothing when it is invalid. The output has CR LF line endings
// only and no line over 998 octets: it passes through
// [github.com/outboundmail/outbound/delivery/rfc5321.Reader] unchanged.
//
// A notification is sent with the null reverse-path (MAIL FROM:<>), to the
// original envelope sender, and a notification is never sent about a
// notification (RFC 3461 §6.2, RFC 5321 §4.5.5): Compose refuses an empty To.
// The report carries Auto-Submitted: auto-replied (RFC 3834 §5).
//
// [Parse] reads a notification back, for tests and for applications that
// receive them. It stops after the delivery-status part and the header of the
// returned message, so a large returned message is never read.
package dsn
