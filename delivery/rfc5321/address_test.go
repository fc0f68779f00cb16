package rfc5321

import (
	"errors"
	"strings"
	"testing"
)

func TestCheckMailboxValid(t *testing.T) {
	valid := []string{
		"user@example.com",
		"first.last@example.com",
		"x@y",
		"a+tag@sub.example.co.uk",
		"!#$%&'*+-/=?^_`{|}~@example.com",
		`"john doe"@example.com`,
		`"a\"b"@example.com`,
		`"a@b"@example.com`,
		`"a\\b"@example.com`,
		"user@[192.0.2.1]",
		"user@[IPv6:2001:db8::1]",
		"user@[ipv6:::ffff:192.0.2.1]",
		"postmaster@xn--bcher-kva.example",
		"1234@123.example",
		"user@a-b.example",
		strings.Repeat("l", 64) + "@example.com",
		"x@" + strings.Repeat(strings.Repeat("d", 62)+".", 3) + strings.Repeat("t", 63), // 254 octets: path 256
		// RFC 6531: UTF-8 local part and U-label domain.
		"δοκιμή@παράδειγμα.δοκιμή",
		"用户@例子.广告",
		"jörg@bücher.example",
	}
	for _, a := range valid {
		if err := CheckMailbox(a); err != nil {
			t.Errorf("CheckMailbox(%q) = %v, want nil", a, err)
		}
	}
}

// TestCheckMailboxInvalid covers RELIABILITY.md §7 items 26 and 27, and the
// other refusals of the package documentation.
func TestCheckMailboxInvalid(t *testing.T) {
	invalid := []struct {
		addr, reason string
	}{
		// 26: command injection with CR/LF.
		{"x@y>\r\nRCPT TO:<evil@z>", "line break"},
		{"x@y\r\nDATA", "line break"},
		{"x@y\n", "line break"},
		{"x\r@y", "line break"},
		{"\"x\r\"@y", "line break"},
		{"\"x\\\r\"@y", "line break"},
		// 27: ESMTP parameter injection, spaces, NUL, sizes.
		{"a@b> NOTIFY=NEVER", "angle bracket"},
		{"a@b NOTIFY=NEVER", "space in domain"},
		{"a@b>", "angle bracket"},
		{"<a@b>", "angle bracket"},
		{`"a> NOTIFY=NEVER"@b`, "angle bracket"},
		{"a b@example.com", "space in local part"},
		{"a@exa mple.com", "space in domain"},
		{"a\x00@example.com", "NUL"},
		{"a@example.com\x00", "NUL"},
		{"a\t@example.com", "control character U+0009"},
		{"a\x7f@example.com", "control character U+007F"},
		{strings.Repeat("l", 65) + "@example.com", "local part longer than 64"},
		{"xy@" + strings.Repeat(strings.Repeat("d", 62)+".", 3) + strings.Repeat("t", 63), "path longer than 256"},
		{"x@" + strings.Repeat("d", 64) + ".example", "label longer than 63"},
		// Empty parts and dots.
		{"", "empty address"},
		{"user", `no "@"`},
		{"@example.com", "empty local part"},
		{"user@", "empty domain"},
		{`""@example.com`, "empty quoted"},
		{".user@example.com", "starts with a dot"},
		{"user.@example.com", "ends with a dot"},
		{"us..er@example.com", "consecutive dots in local"},
		{"user@.example.com", "domain starts with a dot"},
		{"user@example.com.", "domain ends with a dot"},
		{"user@example..com", "consecutive dots in domain"},
		{"user@-example.com", "hyphen"},
		{"user@example-.com", "hyphen"},
		{"user@exa_mple.com", `'_' not allowed in domain`},
		{"a@b@example.com", `'@' not allowed in local part`},
		{"a(comment)@example.com", `'(' not allowed`},
		{"user@192.0.2.1", "numeric top-level domain"},
		// Quoting.
		{`"unterminated@example.com`, "unterminated quoted"},
		{`"a"b"@example.com`, "unescaped quote"},
		{`"a\"@example.com`, "unterminated quoted"},
		{`a"b@example.com`, `'"' not allowed`},
		// Address literals.
		{"user@[192.0.2.1", "unterminated address literal"},
		{"user@[300.0.2.1]", "invalid IPv4"},
		{"user@[01.2.3.4]", "invalid IPv4"},
		{"user@[2001:db8::1]", "unsupported address literal"},
		{"user@[IPv6:192.0.2.1]", "invalid IPv6"},
		{"user@[IPv6:fe80::1%eth0]", "invalid IPv6"},
		{"user@[x-tag:foo]", "unsupported address literal"},
		// UTF-8 that is invalid or invisible.
		{"a\xff@example.com", "invalid UTF-8"},
		{"a\u0085@example.com", "control character"},
		{"a\u2028@example.com", "not allowed in local part"},
		{"a\u00a0b@example.com", "not allowed in local part"},
		{"a\u202eb@example.com", "not allowed in local part"},
		{"user@example\u3002com", "not allowed in domain"},
	}
	for _, tt := range invalid {
		err := CheckMailbox(tt.addr)
		var ae *AddressError
		if !errors.As(err, &ae) {
			t.Errorf("CheckMailbox(%q) = %v, want *AddressError", tt.addr, err)
			continue
		}
		if ae.Address != tt.addr || !strings.Contains(ae.Reason, tt.reason) {
			t.Errorf("CheckMailbox(%q): reason %q, want it to mention %q", tt.addr, ae.Reason, tt.reason)
		}
		if msg := err.Error(); strings.ContainsAny(msg, "\r\n\x00") || !strings.HasPrefix(msg, "rfc5321: invalid address ") {
			t.Errorf("Error() = %q: must be log-safe and prefixed", msg)
		}
	}
}

func TestAddressErrorShortensLongInput(t *testing.T) {
	err := CheckMailbox(strings.Repeat("a", 100000) + "@example.com")
	if err == nil || len(err.Error()) > 400 {
		t.Fatalf("error %d octets long", len(err.Error()))
	}
}

func TestCheckReversePath(t *testing.T) {
	if err := CheckReversePath(""); err != nil {
		t.Errorf("null path: %v", err)
	}
	if err := CheckReversePath("bounce@example.com"); err != nil {
		t.Error(err)
	}
	if err := CheckReversePath("<>"); err == nil {
		t.Error(`"<>" accepted: the null path is the empty string`)
	}
	if err := CheckReversePath("a@b> SIZE=1"); err == nil {
		t.Error("injection accepted as reverse-path")
	}
}

// TestCheckDomain covers the EHLO name of §7 item 29.
func TestCheckDomain(t *testing.T) {
	for _, ok := range []string{"mail.example.com", "localhost", "[192.0.2.7]", "[IPv6:::1]"} {
		if err := CheckDomain(ok); err != nil {
			t.Errorf("CheckDomain(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "mail.example.com\r\nMAIL FROM:<x@y>", "a b", "host_name", "example.com.", "[1.2.3]", strings.Repeat("a.", 128) + "com"} {
		var ae *AddressError
		if err := CheckDomain(bad); !errors.As(err, &ae) {
			t.Errorf("CheckDomain(%q) = %v, want *AddressError", bad, err)
		}
	}
}

func TestDomain(t *testing.T) {
	for _, tt := range []struct{ addr, want string }{
		{"User@Example.COM", "example.com"},
		{`"a@b"@Example.org`, "example.org"},
		{"x@[IPv6:2001:DB8::1]", "[ipv6:2001:db8::1]"},
		{"jörg@BÜCHER.example", "bücher.example"},
		{"nodomain", ""},
		{"", ""},
		{"trailing@", ""},
	} {
		if got := Domain(tt.addr); got != tt.want {
			t.Errorf("Domain(%q) = %q, want %q", tt.addr, got, tt.want)
		}
	}
}

// TestNeedsSMTPUTF8 covers the address side of §7 item 25.
func TestNeedsSMTPUTF8(t *testing.T) {
	for _, tt := range []struct {
		addr string
		want bool
	}{
		{"user@example.com", false},
		{"user@xn--bcher-kva.example", false},
		{"jörg@example.com", true},
		{"user@bücher.example", true},
		{"", false},
	} {
		if got := NeedsSMTPUTF8(tt.addr); got != tt.want {
			t.Errorf("NeedsSMTPUTF8(%q) = %v, want %v", tt.addr, got, tt.want)
		}
	}
}
