package dsn

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/outboundmail/outbound/delivery/rfc5321"
)

// FuzzParse checks that Parse never panics, returns only *ParseError, and
// that whatever it accepts is well formed.
func FuzzParse(f *testing.F) {
	for _, tc := range goldenCases {
		var b bytes.Buffer
		if err := Compose(&b, tc.report, originalReader(tc.original)); err != nil {
			f.Fatal(err)
		}
		f.Add(b.Bytes())
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		r, err := Parse(bytes.NewReader(in))
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v (%T), want *ParseError", err, err)
			}
			return
		}
		if len(r.Recipients) == 0 {
			t.Fatal("accepted a report without recipients")
		}
		for _, rc := range r.Recipients {
			if !rc.Action.valid() || !validStatus(rc.Status) || rc.FinalRecipient == "" {
				t.Fatalf("accepted %+v", rc)
			}
		}
	})
}

// FuzzCompose feeds hostile remote text and originals to Compose: the output
// must stay canonical, parse back to the one recipient, and carry the
// sanitised text.
func FuzzCompose(f *testing.F) {
	f.Add("smtp; 550 5.1.1 no such user", "dns; mx.example.com", []byte(originalMessage), true)
	f.Add("550 no\r\nX-Injected: yes\r\n\r\n--b", "evil\r\n.\r\n", []byte("a\r.\rb"), false)
	f.Fuzz(func(t *testing.T, diag, remote string, original []byte, full bool) {
		ret := "HDRS"
		if full {
			ret = "FULL"
		}
		rc := Recipient{FinalRecipient: "bob@example.com", Action: Failed, DiagnosticCode: diag, RemoteMTA: remote}
		var out bytes.Buffer
		err := Compose(&out, baseReport(ret, rc), bytes.NewReader(original))
		var de *rfc5321.DataError
		if errors.As(err, &de) {
			return // an original that rfc5321.Reader refuses (NUL, long line)
		}
		if err != nil {
			t.Fatal(err)
		}
		canon, err := io.ReadAll(rfc5321.NewReader(bytes.NewReader(out.Bytes())))
		if err != nil || !bytes.Equal(canon, out.Bytes()) {
			t.Fatalf("output not canonical: %v", err)
		}
		got, err := Parse(bytes.NewReader(out.Bytes()))
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Recipients) != 1 {
			t.Fatalf("%d recipients", len(got.Recipients))
		}
		g := got.Recipients[0]
		if want := typed(sanitize(diag, maxDiagnostic), "smtp"); g.DiagnosticCode != want {
			t.Fatalf("Diagnostic-Code %q, want %q", g.DiagnosticCode, want)
		}
		if want := typed(sanitize(remote, maxRemoteMTA), "dns"); g.RemoteMTA != want {
			t.Fatalf("Remote-MTA %q, want %q", g.RemoteMTA, want)
		}
		if g.Action != Failed || strings.Contains(g.DiagnosticCode, "\r") {
			t.Fatalf("recipient %+v", g)
		}
	})
}
