package rfc5321

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/textproto"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"
)

// readAll drains r and returns what it produced and the first non-EOF error.
func readAll(r io.Reader) ([]byte, error) {
	b, err := io.ReadAll(r)
	return b, err
}

// onWire returns what net/textproto's DotWriter (the DATA writer of net/smtp
// and go-smtp) puts on the wire for canonical data.
func onWire(t *testing.T, data []byte) string {
	t.Helper()
	var wire bytes.Buffer
	tw := textproto.NewWriter(bufio.NewWriter(&wire))
	dw := tw.DotWriter()
	if _, err := dw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := dw.Close(); err != nil {
		t.Fatal(err)
	}
	return wire.String()
}

// TestReaderCanonical covers RELIABILITY.md §7 items 21–23: exact output
// bytes, and exact wire bytes after the standard DotWriter.
func TestReaderCanonical(t *testing.T) {
	tests := []struct {
		name, in, out, wire string
	}{
		// 21: LF-dot-LF is made CRLF and then dot-stuffed, one terminator.
		{"lf dot lf", "a\n.\nb", "a\r\n.\r\nb\r\n", "a\r\n..\r\nb\r\n.\r\n"},
		{"crlf unchanged", "a\r\nb\r\n", "a\r\nb\r\n", "a\r\nb\r\n.\r\n"},
		// 22: smuggling shapes; a stray CR becomes a space and ends no line.
		{"cr dot cr", "a\r.\rb", "a . b\r\n", "a . b\r\n.\r\n"},
		{"crlf dot cr crlf", "a\r\n.\r\r\nb", "a\r\n. \r\nb\r\n", "a\r\n.. \r\nb\r\n.\r\n"},
		{"lf dot crlf", "a\n.\r\nb", "a\r\n.\r\nb\r\n", "a\r\n..\r\nb\r\n.\r\n"},
		{"cr cr lf", "a\r\r\nb", "a \r\nb\r\n", "a \r\nb\r\n.\r\n"},
		{"lone trailing cr", "a\r", "a \r\n", "a \r\n.\r\n"},
		{"only cr", "\r", " \r\n", " \r\n.\r\n"},
		{"cr before lf-dot-lf", "x\r\n.\r\n\r.\n", "x\r\n.\r\n .\r\n", "x\r\n..\r\n .\r\n.\r\n"},
		{"mixed endings", "h: v\nh2: v\r\n\r\nbody\rmore\n", "h: v\r\nh2: v\r\n\r\nbody more\r\n", "h: v\r\nh2: v\r\n\r\nbody more\r\n.\r\n"},
		// 23: leading dots, ".", empty, no final newline.
		{"leading dot", ".hidden\r\n", ".hidden\r\n", "..hidden\r\n.\r\n"},
		{"message is a dot", ".", ".\r\n", "..\r\n.\r\n"},
		// DotWriter sends an empty message as one empty line.
		{"empty", "", "", "\r\n.\r\n"},
		{"no final crlf", "last line", "last line\r\n", "last line\r\n.\r\n"},
		{"only lf", "\n", "\r\n", "\r\n.\r\n"},
		{"blank lines kept", "\n\n\r\n", "\r\n\r\n\r\n", "\r\n\r\n\r\n.\r\n"},
		{"8-bit passes", "caf\xc3\xa9\n", "caf\xc3\xa9\r\n", "caf\xc3\xa9\r\n.\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewReader(strings.NewReader(tt.in))
			got, err := readAll(r)
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			if string(got) != tt.out {
				t.Errorf("output %q, want %q", got, tt.out)
			}
			if r.Size() != int64(len(tt.out)) {
				t.Errorf("Size() = %d, want %d", r.Size(), len(tt.out))
			}
			if w := onWire(t, got); w != tt.wire {
				t.Errorf("wire %q, want %q", w, tt.wire)
			}
		})
	}
}

// TestReaderRefuses covers §7 item 24 (long lines) and NUL octets.
func TestReaderRefuses(t *testing.T) {
	x998 := strings.Repeat("x", MaxLineLength)
	tests := []struct {
		name         string
		in           string
		err          error
		line         int
		offset       int64
		producedLast string // the tail of what was produced before the error
	}{
		{"999 octets", x998 + "y\r\n", ErrLineTooLong, 1, 998, "xxx"},
		{"999 no ending", x998 + "y", ErrLineTooLong, 1, 998, "xxx"},
		{"long second line", "ok\n" + x998 + "yz\n", ErrLineTooLong, 2, 3 + 998, "xxx"},
		{"stray cr makes 999", x998 + "\ry\r\n", ErrLineTooLong, 1, 998, "xxx"},
		{"stray cr at eof makes 999", x998 + "\r", ErrLineTooLong, 1, 998, "xxx"},
		{"nul", "a\r\nb\x00c\r\n", ErrNUL, 2, 4, "a\r\nb"},
		{"nul first", "\x00", ErrNUL, 1, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewReader(strings.NewReader(tt.in))
			got, err := readAll(r)
			var de *DataError
			if !errors.As(err, &de) {
				t.Fatalf("error %v (%T), want *DataError", err, err)
			}
			if !errors.Is(err, tt.err) || de.Line != tt.line || de.Offset != tt.offset {
				t.Errorf("got %+v, want Err=%v Line=%d Offset=%d", de, tt.err, tt.line, tt.offset)
			}
			if !strings.HasSuffix(string(got), tt.producedLast) || strings.Contains(string(got), "y") {
				t.Errorf("produced %q before the error", got)
			}
			// Sticky: the same error again, and no more data.
			if n, err2 := r.Read(make([]byte, 10)); n != 0 || err2 != err {
				t.Errorf("second Read = %d, %v; want 0, %v", n, err2, err)
			}
			if want := fmt.Sprintf("line %d (offset %d)", tt.line, tt.offset); !strings.Contains(err.Error(), want) {
				t.Errorf("Error() = %q, does not say %q", err.Error(), want)
			}
		})
	}
}

func TestReaderLineLimitExact(t *testing.T) {
	x998 := strings.Repeat("x", MaxLineLength)
	for _, in := range []string{x998, x998 + "\n", x998 + "\r\n", x998 + "\r\n" + x998} {
		got, err := readAll(NewReader(strings.NewReader(in)))
		if err != nil {
			t.Fatalf("%d octets: %v", len(in), err)
		}
		if want := canonicalise(t, []byte(in)); !bytes.Equal(got, want) {
			t.Fatalf("got %d octets, want %d", len(got), len(want))
		}
	}
}

// TestReaderEightBit covers the body side of §7 item 25.
func TestReaderEightBit(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want bool
	}{
		{"plain ascii\r\n", false},
		{"", false},
		{"\x7f DEL is 7-bit\r\n", false},
		{"Gr\xc3\xbc\xc3\x9fe\r\n", true},
		{strings.Repeat("a", 900) + "\xff", true},
		{strings.Repeat("a\r\n", 5000) + "\x80\r\n", true},
	} {
		r := NewReader(strings.NewReader(tt.in))
		if _, err := readAll(r); err != nil {
			t.Fatal(err)
		}
		if r.EightBit() != tt.want {
			t.Errorf("EightBit() for %.20q = %v, want %v", tt.in, r.EightBit(), tt.want)
		}
	}
}

// TestReaderStreaming reads with tiny input and output chunks: lines and CR LF
// pairs split across reads must give the same bytes.
func TestReaderStreaming(t *testing.T) {
	in := "one\r\ntwo\nthree\r.\rfour\r\r\n" + strings.Repeat("z", MaxLineLength) + "\r\n.end\r"
	want := canonicalise(t, []byte(in))
	wraps := map[string]func(io.Reader) io.Reader{
		"plain":      func(r io.Reader) io.Reader { return r },
		"onebyte":    iotest.OneByteReader,
		"half":       iotest.HalfReader,
		"dataerr":    iotest.DataErrReader,
		"zero reads": func(r io.Reader) io.Reader { return &zeroThenData{r: r} },
	}
	for srcName, srcWrap := range wraps {
		for outName, outWrap := range wraps {
			r := outWrap(NewReader(srcWrap(strings.NewReader(in))))
			got, err := readAll(r)
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("src %s, out %s: %q, %v; want %q", srcName, outName, got, err, want)
			}
		}
	}
	if err := iotest.TestReader(NewReader(strings.NewReader(in)), want); err != nil {
		t.Error(err)
	}
}

// zeroThenData returns (0, nil) a few times before each read, which io.Reader
// allows and a naive loop would spin on.
func TestReaderReset(t *testing.T) {
	r := NewReader(strings.NewReader("a\r\nb\x00c\n" + strings.Repeat("x", 100000)))
	if _, err := readAll(r); !errors.Is(err, ErrNUL) {
		t.Fatalf("first message: %v", err)
	}
	for _, in := range []string{"second\nmessage\r", "third\r\n", ""} {
		r.Reset(strings.NewReader(in))
		got, err := readAll(r)
		if want := canonicalise(t, []byte(in)); err != nil || !bytes.Equal(got, want) || r.Size() != int64(len(want)) || r.EightBit() {
			t.Errorf("after Reset: %q, %v, Size %d; want %q", got, err, r.Size(), want)
		}
	}
}

type zeroThenData struct {
	r io.Reader
	n int
}

func (z *zeroThenData) Read(p []byte) (int, error) {
	z.n++
	if z.n%4 != 0 {
		return 0, nil
	}
	return z.r.Read(p)
}

type neverReader struct{}

func (neverReader) Read([]byte) (int, error) { return 0, nil }

func TestReaderSourceError(t *testing.T) {
	boom := errors.New("disk on fire")
	r := NewReader(io.MultiReader(strings.NewReader("partial line"), iotest.ErrReader(boom)))
	got, err := readAll(r)
	if err != boom {
		t.Fatalf("error %v, want the source's error", err)
	}
	if string(got) != "partial line" {
		t.Errorf("got %q: no CR LF may be invented after a failed read", got)
	}
	if _, err := NewReader(neverReader{}).Read(make([]byte, 8)); err != io.ErrNoProgress {
		t.Errorf("endless empty reads: %v, want io.ErrNoProgress", err)
	}
	if n, err := NewReader(strings.NewReader("x")).Read(nil); n != 0 || err != nil {
		t.Errorf("Read(nil) = %d, %v", n, err)
	}
}

// TestReaderProperties checks, on random inputs built from the troublesome
// octets, that the output never holds a CR without LF, an LF without CR, or a
// line over 998 octets, and that it equals a simple byte-by-byte oracle.
func TestReaderProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte("ab.\r\n \x80")
	for i := range 3000 {
		in := make([]byte, rng.IntN(3000))
		for j := range in {
			in[j] = alphabet[rng.IntN(len(alphabet))]
		}
		if i%7 == 0 && len(in) > 0 {
			in[rng.IntN(len(in))] = 0
		}
		chunk := 1 + rng.IntN(64)
		checkAgainstOracle(t, in, chunk)
	}
}

// checkAgainstOracle runs Reader on in, reading chunk octets at a time, and
// compares output and error with canonicalise.
func checkAgainstOracle(t *testing.T, in []byte, chunk int) {
	t.Helper()
	want, wantErr := oracle(in)
	r := NewReader(iotest.HalfReader(bytes.NewReader(in)))
	var got []byte
	var err error
	buf := make([]byte, chunk)
	for {
		var n int
		n, err = r.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			break
		}
	}
	if err == io.EOF {
		err = nil
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("input %q (chunk %d):\n got %q\nwant %q", in, chunk, got, want)
	}
	var de *DataError
	switch {
	case wantErr == nil && err != nil:
		t.Fatalf("input %q: unexpected error %v", in, err)
	case wantErr != nil && (!errors.As(err, &de) || *de != *wantErr):
		t.Fatalf("input %q: error %v, want %v", in, err, wantErr)
	}
	if err == nil {
		checkCanonical(t, got)
		if r.Size() != int64(len(got)) || r.EightBit() != hasHighSlow(in) {
			t.Fatalf("input %q: Size %d EightBit %v", in, r.Size(), r.EightBit())
		}
	}
}

func hasHighSlow(b []byte) bool {
	for _, c := range b {
		if c > 127 {
			return true
		}
	}
	return false
}

// checkCanonical asserts the output invariants.
func checkCanonical(t *testing.T, b []byte) {
	t.Helper()
	if len(b) > 0 && !bytes.HasSuffix(b, []byte("\r\n")) {
		t.Fatalf("output does not end in CRLF: %q", b)
	}
	for i, c := range b {
		switch c {
		case '\r':
			if i+1 >= len(b) || b[i+1] != '\n' {
				t.Fatalf("bare CR at %d in %q", i, b)
			}
		case '\n':
			if i == 0 || b[i-1] != '\r' {
				t.Fatalf("bare LF at %d in %q", i, b)
			}
		case 0:
			t.Fatalf("NUL at %d", i)
		}
	}
	for line := range bytes.SplitSeq(b, []byte("\r\n")) {
		if len(line) > MaxLineLength {
			t.Fatalf("line of %d octets", len(line))
		}
	}
}

// oracle is the package documentation's rules, one octet at a time.
func oracle(in []byte) ([]byte, *DataError) {
	var out []byte
	lineLen, line := 0, 1
	for i := 0; i < len(in); i++ {
		c := in[i]
		switch {
		case c == '\r' && i+1 < len(in) && in[i+1] == '\n':
			i++
			fallthrough
		case c == '\n':
			out = append(out, '\r', '\n')
			lineLen = 0
			line++
			continue
		case c == 0:
			return out, &DataError{Line: line, Offset: int64(i), Reason: ErrNUL.Error(), Err: ErrNUL}
		case c == '\r':
			c = ' '
		}
		if lineLen == MaxLineLength {
			return out, &DataError{Line: line, Offset: int64(i), Reason: ErrLineTooLong.Error(), Err: ErrLineTooLong}
		}
		out = append(out, c)
		lineLen++
	}
	if lineLen > 0 {
		out = append(out, '\r', '\n')
	}
	return out, nil
}

func canonicalise(t *testing.T, in []byte) []byte {
	t.Helper()
	out, err := oracle(in)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestReaderConstantMemory streams 50 MB and checks that the heap did not
// grow with it.
func TestReaderConstantMemory(t *testing.T) {
	const size = 50 << 20
	if testing.Short() {
		t.Skip("streams 50 MB")
	}
	src := &lineSource{left: size, line: []byte(strings.Repeat("0123456789", 7) + "\n")}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	r := NewReader(src)
	n, err := io.Copy(io.Discard, r)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if n < size || r.Size() != n {
		t.Fatalf("copied %d octets, Size %d, want > %d", n, r.Size(), size)
	}
	if grown := after.TotalAlloc - before.TotalAlloc; grown > 1<<20 {
		t.Errorf("allocated %d bytes to stream %d", grown, n)
	}
}

// lineSource yields the same LF-terminated line until left octets are given.
type lineSource struct {
	left int
	line []byte
	off  int
}

func (s *lineSource) Read(p []byte) (int, error) {
	if s.left <= 0 {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && s.left > 0 {
		c := copy(p[n:min(len(p), n+s.left)], s.line[s.off:])
		s.off = (s.off + c) % len(s.line)
		n += c
		s.left -= c
	}
	return n, nil
}
