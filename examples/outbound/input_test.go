package main

import (
	"bufio"
	"bytes"
	"io"
	"strings"
	"testing"
)

func TestDotReader(t *testing.T) {
	long := strings.Repeat("x", 64<<10) // exactly the reader's buffer
	for _, tc := range []struct{ name, in, want string }{
		{"lone dot ends", "a\n.\nb\n", "a\n"},
		{"CRLF lone dot ends", "a\r\n.\r\nb\r\n", "a\r\n"},
		{"dot at EOF ends", "a\n.", "a\n"},
		{"first line", ".\nrest\n", ""},
		{"two dots stay", "..\n", "..\n"},
		{"dot and space stay", ". \n.x\n", ". \n.x\n"},
		{"no terminator", "a\nb", "a\nb"},
		{"dot in a long line", long + ".\nafter\n", long + ".\nafter\n"},
		{"dot after a long line", long + "\n.\nafter\n", long + "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := io.ReadAll(newDotReader(strings.NewReader(tc.in)))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Errorf("got %q, want %q", trim(string(got)), trim(tc.want))
			}
		})
	}
}

func trim(s string) string {
	if len(s) > 80 {
		return s[:40] + "…" + s[len(s)-40:]
	}
	return s
}

func TestReadHeader(t *testing.T) {
	in := "To: a@example.com,\r\n  b@example.com\r\nBcc: secret@example.com\r\nSubject: x\r\n\r\nbody\r\n"
	br := bufio.NewReader(strings.NewReader(in))
	h, err := readHeader(br)
	if err != nil {
		t.Fatal(err)
	}
	if len(h.fields) != 3 || string(h.sep) != "\r\n" {
		t.Fatalf("fields %d, sep %q; want 3, CRLF", len(h.fields), h.sep)
	}
	rest, _ := io.ReadAll(br)
	if got := string(h.bytes()) + string(rest); got != in {
		t.Errorf("header and rest = %q, want the input", got)
	}
	addrs, err := h.addresses("To", "Cc", "Bcc")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(addrs, " ") != "a@example.com b@example.com secret@example.com" {
		t.Errorf("addresses = %v", addrs)
	}
	stripped := string(h.without("bcc").bytes())
	if strings.Contains(stripped, "secret") || !strings.HasPrefix(stripped, "To: a@example.com,\r\n  b@example.com\r\nSubject: x\r\n\r\n") {
		t.Errorf("without Bcc = %q", stripped)
	}
}

func TestReadHeaderEnds(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		fields   int
		sep      string
	}{
		{"body line without a blank", "Subject: x\nno colon here\n", 1, ""},
		{"no header at all", "hello world\n", 0, ""},
		{"LF blank line", "A: 1\n\nbody", 1, "\n"},
		{"EOF in header", "A: 1\n B", 1, ""},
		{"empty input", "", 0, ""},
		{"colon first", ": x\n", 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			br := bufio.NewReader(strings.NewReader(tc.in))
			h, err := readHeader(br)
			if err != nil {
				t.Fatal(err)
			}
			if len(h.fields) != tc.fields || string(h.sep) != tc.sep {
				t.Errorf("fields %d, sep %q; want %d, %q", len(h.fields), h.sep, tc.fields, tc.sep)
			}
			rest, _ := io.ReadAll(br)
			if got := string(h.bytes()) + string(rest); got != tc.in {
				t.Errorf("header and rest = %q, want the input", got)
			}
		})
	}
}

func TestReadHeaderTooLarge(t *testing.T) {
	in := "X: " + strings.Repeat("a", maxHeaderBytes) + "\n\nbody"
	_, err := readHeader(bufio.NewReader(strings.NewReader(in)))
	var he *HeaderError
	if !errorsAs(err, &he) {
		t.Fatalf("err = %v, want *HeaderError", err)
	}
}

func TestAddressesGroupsAndErrors(t *testing.T) {
	h, _ := readHeader(bufio.NewReader(strings.NewReader("To: undisclosed-recipients:;\nCc: Team: x@example.com, y@example.com;\n\n")))
	got, err := h.addresses("To", "Cc")
	if err != nil || strings.Join(got, ",") != "x@example.com,y@example.com" {
		t.Errorf("addresses = %v, %v", got, err)
	}
	h, _ = readHeader(bufio.NewReader(strings.NewReader("To: <broken\n\n")))
	if _, err := h.addresses("To"); err == nil {
		t.Error("malformed To: accepted")
	}
}

// FuzzDotReader checks that the message read is always a prefix of the
// input, that it ends only at a lone-dot line, and that input without one
// passes unchanged.
func FuzzDotReader(f *testing.F) {
	f.Add("a\n.\nb")
	f.Add("..\r\n.\r\n")
	f.Add(". \n.")
	f.Fuzz(func(t *testing.T, in string) {
		got, err := io.ReadAll(newDotReader(strings.NewReader(in)))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(in, string(got)) {
			t.Fatalf("output %q is not a prefix of the input", got)
		}
		if len(got) < len(in) {
			// What follows must be a lone-dot line at a line start.
			if len(got) > 0 && got[len(got)-1] != '\n' {
				t.Fatalf("stopped in the middle of a line: %q", got)
			}
			next := in[len(got):]
			if i := strings.IndexByte(next, '\n'); i >= 0 {
				next = next[:i+1]
			}
			if !isLoneDot([]byte(next)) {
				t.Fatalf("stopped before %q, not a lone dot", next)
			}
		}
	})
}

// FuzzReadHeader checks that reading a header loses and invents nothing.
func FuzzReadHeader(f *testing.F) {
	f.Add("To: a@example.com\r\n\r\nbody")
	f.Add("A: 1\n b\n\tc\nnot a field\n")
	f.Add("\r\n")
	f.Fuzz(func(t *testing.T, in string) {
		br := bufio.NewReader(strings.NewReader(in))
		h, err := readHeader(br)
		if err != nil {
			var he *HeaderError
			if !errorsAs(err, &he) {
				t.Fatalf("unexpected error type %T: %v", err, err)
			}
			return
		}
		rest, _ := io.ReadAll(br)
		if got := string(h.bytes()) + string(rest); got != in {
			t.Fatalf("header and rest = %q, want %q", got, in)
		}
		h.addresses("To", "Cc", "Bcc") // must not panic
		if bytes.Contains(h.without("bcc").bytes(), []byte("\nBcc:")) {
			t.Fatal("Bcc field left after without")
		}
	})
}
