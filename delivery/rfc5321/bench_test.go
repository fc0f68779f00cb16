package rfc5321

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

// message returns about size octets of mail-like text: 76-octet lines ending
// in eol.
func message(size int, eol string) []byte {
	line := "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tem" + eol
	return []byte(strings.Repeat(line, size/len(line)+1)[:size])
}

func benchmarkReader(b *testing.B, data []byte, reuse bool) {
	src := bytes.NewReader(data)
	buf := make([]byte, 32<<10)
	r := NewReader(src)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		src.Reset(data)
		if reuse {
			r.Reset(src)
		} else {
			r = NewReader(src)
		}
		for {
			_, err := r.Read(buf)
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkReader measures canonical (CR LF) input, the common case on the
// enqueue path, with a new Reader per message and with one reused through
// Reset, and LF input, which Reader must rewrite.
func BenchmarkReader(b *testing.B) {
	for _, size := range []struct {
		name string
		n    int
	}{{"2KB", 2 << 10}, {"1MB", 1 << 20}} {
		b.Run(size.name+"/crlf", func(b *testing.B) { benchmarkReader(b, message(size.n, "\r\n"), false) })
		b.Run(size.name+"/crlf/reset", func(b *testing.B) { benchmarkReader(b, message(size.n, "\r\n"), true) })
		b.Run(size.name+"/lf", func(b *testing.B) { benchmarkReader(b, message(size.n, "\n"), false) })
	}
}
