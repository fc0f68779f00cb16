package rfc5321

import (
	"fmt"
	"net/netip"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Size limits of RFC 5321 §4.5.3.1, in octets.
const (
	MaxLocalPartLength = 64  // §4.5.3.1.1
	MaxDomainLength    = 255 // §4.5.3.1.2
	MaxPathLength      = 256 // §4.5.3.1.3, including "<" and ">"
	maxLabelLength     = 63  // RFC 1035 §2.3.4
)

// AddressError reports an address that is not an acceptable RFC 5321 Mailbox
// (or domain). Reason says what is wrong in plain words.
type AddressError struct {
	Address string // the address as given
	Reason  string // e.g. "local part longer than 64 octets"
}

// Error returns `rfc5321: invalid address "…": reason`. The address is
// quoted with Go escapes, so CR, LF and other controls cannot reach a log
// line raw, and a very long address is shortened.
func (e *AddressError) Error() string {
	a := e.Address
	if len(a) > MaxPathLength+8 {
		a = a[:MaxPathLength] + "…"
	}
	return fmt.Sprintf("rfc5321: invalid address %q: %s", a, e.Reason)
}

// CheckMailbox reports whether addr is an RFC 5321 §4.1.2 Mailbox, written
// without angle brackets: Local-part "@" ( Domain / address-literal ), with
// the RFC 6531 extension to UTF-8. It returns nil or an [*AddressError].
func CheckMailbox(addr string) error {
	if reason := checkMailbox(addr); reason != "" {
		return &AddressError{Address: addr, Reason: reason}
	}
	return nil
}

// CheckReversePath is [CheckMailbox] for a MAIL FROM reverse-path, where the
// empty string (the null path "<>", used by notifications) is also valid.
func CheckReversePath(addr string) error {
	if addr == "" {
		return nil
	}
	return CheckMailbox(addr)
}

// CheckDomain reports whether name is an RFC 5321 Domain or address literal,
// the forms an EHLO argument may take (§4.1.1.1). It returns nil or an
// [*AddressError].
func CheckDomain(name string) error {
	if reason := checkDomain(name); reason != "" {
		return &AddressError{Address: name, Reason: reason}
	}
	return nil
}

// Domain returns the lower-cased domain part of addr, the part after its last
// "@", for grouping recipients by destination. It returns "" when addr has no
// "@". It does not validate addr.
func Domain(addr string) string {
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return ""
	}
	return strings.ToLower(addr[at+1:])
}

// NeedsSMTPUTF8 reports whether addr contains non-ASCII octets, in its local
// part or its domain, so that it may only be sent to a server that offers
// SMTPUTF8 (RFC 6531 §3.4).
func NeedsSMTPUTF8(addr string) bool {
	for i := 0; i < len(addr); i++ {
		if addr[i] >= utf8.RuneSelf {
			return true
		}
	}
	return false
}

// checkMailbox returns "" for a valid mailbox, else the reason it is not.
func checkMailbox(addr string) string {
	switch {
	case addr == "":
		return "empty address"
	case len(addr)+2 > MaxPathLength:
		return fmt.Sprintf("path longer than %d octets", MaxPathLength)
	case !utf8.ValidString(addr):
		return "invalid UTF-8"
	}
	if reason := checkForbidden(addr); reason != "" {
		return reason
	}
	// The domain cannot contain "@"; a quoted local part can.
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return `no "@"`
	}
	if reason := checkLocalPart(addr[:at]); reason != "" {
		return reason
	}
	return checkDomain(addr[at+1:])
}

// checkForbidden finds what no part of an address may hold, so that the
// most dangerous problem is the one reported: control characters (CR, LF,
// NUL…) and angle brackets. The grammar allows "<" and ">" inside a quoted
// local part, but a receiver that looks for the first ">" would then read the
// rest as ESMTP parameters, so they are refused everywhere.
func checkForbidden(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c == 0x7f {
			return describeChar(rune(c), "address")
		}
	}
	if i := strings.IndexAny(s, "<>"); i >= 0 {
		return describeChar(rune(s[i]), "address")
	}
	return ""
}

// checkLocalPart checks Local-part = Dot-string / Quoted-string.
func checkLocalPart(local string) string {
	switch {
	case local == "":
		return "empty local part"
	case len(local) > MaxLocalPartLength:
		return fmt.Sprintf("local part longer than %d octets", MaxLocalPartLength)
	case local[0] == '"':
		return checkQuotedString(local)
	}
	return checkDotString(local)
}

// checkDotString checks Dot-string = Atom *("." Atom), Atom = 1*atext, with
// RFC 6531's UTF8-non-ascii added to atext.
func checkDotString(s string) string {
	if s[0] == '.' {
		return "local part starts with a dot"
	}
	if s[len(s)-1] == '.' {
		return "local part ends with a dot"
	}
	prevDot := false
	for _, r := range s {
		switch {
		case r == '.':
			if prevDot {
				return "consecutive dots in local part"
			}
			prevDot = true
			continue
		case r < utf8.RuneSelf:
			if !isAtext(byte(r)) {
				return describeChar(r, "local part")
			}
		case !allowedNonASCII(r):
			return describeChar(r, "local part")
		}
		prevDot = false
	}
	return ""
}

// checkQuotedString checks Quoted-string = DQUOTE *QcontentSMTP DQUOTE, where
// qtextSMTP is %d32-33 / %d35-91 / %d93-126 (plus UTF8-non-ascii) and
// quoted-pairSMTP is "\" followed by %d32-126: no control character may be
// quoted, not even escaped.
func checkQuotedString(s string) string {
	if len(s) < 2 || s[len(s)-1] != '"' {
		return "unterminated quoted local part"
	}
	body := s[1 : len(s)-1]
	if body == "" {
		// The grammar allows `""@example.com`, but no real mailbox has an
		// empty name and receivers disagree about it.
		return "empty quoted local part"
	}
	escaped := false
	for _, r := range body {
		switch {
		case escaped:
			if r < ' ' || r > '~' {
				return describeChar(r, "quoted local part")
			}
			escaped = false
		case r == '\\':
			escaped = true
		case r == '"':
			return "unescaped quote inside quoted local part"
		case r < utf8.RuneSelf:
			if r < ' ' || r > '~' {
				return describeChar(r, "quoted local part")
			}
		case !allowedNonASCII(r):
			return describeChar(r, "quoted local part")
		}
	}
	if escaped {
		return "unterminated quoted local part"
	}
	return ""
}

// checkDomain checks Domain / address-literal.
func checkDomain(d string) string {
	switch {
	case d == "":
		return "empty domain"
	case len(d) > MaxDomainLength:
		return fmt.Sprintf("domain longer than %d octets", MaxDomainLength)
	case !utf8.ValidString(d):
		return "invalid UTF-8"
	}
	if reason := checkForbidden(d); reason != "" {
		return reason
	}
	switch {
	case d[0] == '[':
		return checkAddressLiteral(d)
	case d[0] == '.':
		return "domain starts with a dot"
	case d[len(d)-1] == '.':
		return "domain ends with a dot"
	}
	var last string
	for label := range strings.SplitSeq(d, ".") {
		if reason := checkLabel(label); reason != "" {
			return reason
		}
		last = label
	}
	// RFC 3696 §2: a top-level domain is never all-numeric, and a "domain"
	// like 192.0.2.1 is an IP address that lacks its brackets.
	if strings.Trim(last, "0123456789") == "" {
		return "numeric top-level domain (use an address literal such as [192.0.2.1])"
	}
	return ""
}

// checkLabel checks sub-domain = Let-dig [Ldh-str], with RFC 6531 U-labels.
func checkLabel(label string) string {
	switch {
	case label == "":
		return "consecutive dots in domain"
	case len(label) > maxLabelLength:
		return fmt.Sprintf("domain label longer than %d octets", maxLabelLength)
	case label[0] == '-' || label[len(label)-1] == '-':
		return "domain label starts or ends with a hyphen"
	}
	for _, r := range label {
		switch {
		case r == '-', r >= '0' && r <= '9', r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
		case r >= utf8.RuneSelf && (unicode.IsLetter(r) || unicode.IsMark(r) || unicode.IsNumber(r)):
			// A U-label. Dot look-alikes such as U+3002, which IDNA maps
			// to ".", are not letters and are refused.
		default:
			return describeChar(r, "domain")
		}
	}
	return ""
}

// checkAddressLiteral checks "[" ( IPv4-address-literal /
// IPv6-address-literal ) "]". General-address-literal has no standardised
// tag besides IPv6, so it is refused.
func checkAddressLiteral(d string) string {
	if len(d) < 2 || d[len(d)-1] != ']' {
		return "unterminated address literal"
	}
	inner := d[1 : len(d)-1]
	if len(inner) >= 5 && strings.EqualFold(inner[:5], "IPv6:") {
		ip, err := netip.ParseAddr(inner[5:])
		if err != nil || !ip.Is6() || ip.Zone() != "" {
			return "invalid IPv6 address literal"
		}
		return ""
	}
	if strings.ContainsRune(inner, ':') {
		return "unsupported address literal tag"
	}
	ip, err := netip.ParseAddr(inner)
	if err != nil || !ip.Is4() {
		return "invalid IPv4 address literal"
	}
	return ""
}

// isAtext reports whether c is RFC 5322 atext: ALPHA / DIGIT and
// !#$%&'*+-/=?^_`{|}~.
func isAtext(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}

// allowedNonASCII reports whether a non-ASCII rune may appear in a local part.
// RFC 6531 allows any UTF8-non-ascii; we refuse the ones that are invisible or
// that some software treats as white space or line breaks (C1 controls such
// as U+0085, U+2028, NBSP, bidi overrides, unassigned code points).
func allowedNonASCII(r rune) bool {
	return unicode.IsGraphic(r) && !unicode.IsSpace(r)
}

// describeChar says which character is not allowed where, in a log-safe way.
func describeChar(r rune, where string) string {
	switch r {
	case ' ':
		return "space in " + where
	case '\r', '\n':
		return "line break (CR or LF) in " + where
	case 0:
		return "NUL in " + where
	case '<', '>':
		return fmt.Sprintf("angle bracket %q in %s", r, where)
	}
	if unicode.IsControl(r) {
		return fmt.Sprintf("control character %U in %s", r, where)
	}
	return fmt.Sprintf("character %q not allowed in %s", r, where)
}
