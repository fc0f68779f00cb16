// Package rfc5321 checks what an application hands to outbound before any of
// it reaches a queue or a socket: envelope addresses against the RFC 5321
// grammar, and message data against the line rules of RFC 5321 and RFC 5322.
//
// It is a leaf package (standard library only), used at enqueue time and
// again by the delivery engine as a last line of defence.
//
// # Addresses
//
// [CheckMailbox] accepts exactly an RFC 5321 §4.1.2 Mailbox, written without
// angle brackets: a Dot-string or Quoted-string local part, "@", and a domain
// of LDH labels or an address literal ("[192.0.2.1]", "[IPv6:2001:db8::1]").
// It enforces the §4.5.3.1 size limits (local part 64 octets, domain 255,
// path 256 including the angle brackets) and refuses anything that could
// change the meaning of a MAIL or RCPT command: CR, LF, NUL and other control
// characters, spaces outside quotes, "<" and ">", and so ESMTP parameter
// injection such as "a@b> NOTIFY=NEVER" (golang/go#66146). UTF-8 is allowed
// (RFC 6531); [NeedsSMTPUTF8] tells the caller that the server must then
// offer SMTPUTF8. Non-ASCII domain labels are checked for letters, marks and
// digits only; full IDNA2008 validation is left to DNS.
//
// # Message data
//
// [Reader] turns what an application wrote into canonical message data and
// refuses what cannot be made safe. The rules, in order of precedence:
//
//   - CR LF is a line ending and passes unchanged.
//   - A bare LF (the usual Unix line ending) becomes CR LF.
//   - A stray CR, one not followed by LF, becomes a single space, as Postfix
//     3.9's cleanup_replace_stray_cr_lf does. A lone CR is how SMTP smuggling
//     (CVE-2023-51764 and relatives) hides an end-of-data marker such as
//     "<CR>.<CR>" from one server and shows it to the next, and Go's
//     net/textproto DotWriter relays it untouched. A stray CR does not end a
//     line.
//   - A NUL octet is refused with a [*DataError]: RFC 5321 §4.5.2 allows no
//     NUL in text, and receivers treat it inconsistently.
//   - A line longer than 998 octets, not counting its CR LF, is refused with a
//     [*DataError] (RFC 5322 §2.1.1, RFC 5321 §4.5.3.1.6). Re-encoding is the
//     application's job: outbound never rewrites a body it may have signed.
//   - Data that does not end in CR LF gets a final CR LF. Empty data stays
//     empty.
//   - Octets above 127 pass unchanged and are reported by [Reader.EightBit]:
//     such a message needs 8BITMIME (RFC 6152) at the server.
//
// The output is message content, not the DATA wire form: dot-stuffing (RFC
// 5321 §4.5.2) is the job of the writer that sends it, and is correct once the
// data has only CR LF line endings. Reader works in constant memory whatever
// the message size, and a line may span any number of reads.
package rfc5321
