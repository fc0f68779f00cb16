package rfc5321

import (
	"strings"
	"testing"
)

// FuzzCheckMailbox checks that whatever CheckMailbox accepts is safe to put
// between the angle brackets of a MAIL or RCPT command.
func FuzzCheckMailbox(f *testing.F) {
	f.Add("user@example.com")
	f.Add("a@b> NOTIFY=NEVER")
	f.Fuzz(func(t *testing.T, addr string) {
		err := CheckMailbox(addr)
		if (CheckReversePath(addr) == nil) != (err == nil) && addr != "" {
			t.Fatalf("CheckReversePath and CheckMailbox disagree on %q", addr)
		}
		if err != nil {
			if strings.ContainsAny(err.Error(), "\r\n\x00") {
				t.Fatalf("error text not log-safe: %q", err.Error())
			}
			return
		}
		if len(addr)+2 > MaxPathLength {
			t.Fatalf("accepted %d octets", len(addr))
		}
		for i := 0; i < len(addr); i++ {
			if c := addr[i]; c < ' ' || c == 0x7f || c == '<' || c == '>' {
				t.Fatalf("accepted %q with %q", addr, c)
			}
		}
		at := strings.LastIndexByte(addr, '@')
		if !strings.HasPrefix(addr, `"`) && strings.ContainsRune(addr, ' ') {
			t.Fatalf("accepted a space outside quotes: %q", addr)
		}
		if strings.ContainsRune(addr[at+1:], ' ') {
			t.Fatalf("accepted a space in the domain: %q", addr)
		}
		if Domain(addr) == "" || CheckDomain(addr[at+1:]) != nil {
			t.Fatalf("accepted %q but its domain is not valid", addr)
		}
		// A naive receiver splitting "RCPT TO:<addr> PARAMS" at the first
		// ">" must see exactly addr.
		cmd := "RCPT TO:<" + addr + ">"
		if i := strings.IndexByte(cmd, '>'); i != len(cmd)-1 {
			t.Fatalf("%q ends the path early", cmd)
		}
	})
}

// FuzzReader compares Reader, fed and drained in chunks of a fuzzed size,
// with the one-octet-at-a-time oracle, and checks the output invariants.
func FuzzReader(f *testing.F) {
	f.Add([]byte("a\n.\nb"), uint8(1))
	f.Add([]byte("a\r.\rb\r\n"), uint8(3))
	f.Fuzz(func(t *testing.T, in []byte, chunk uint8) {
		checkAgainstOracle(t, in, 1+int(chunk))
	})
}
