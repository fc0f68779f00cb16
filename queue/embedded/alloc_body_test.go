package embedded

import (
	"bytes"
	"hash/crc32"
	"io"
	"os"
	"runtime"
	"testing"
	"testing/iotest"
)

// lenReader reports a Len unrelated to what it holds: readBody may size its
// buffer from Len, never trust it.
type lenReader struct {
	io.Reader
	n int
}

func (r lenReader) Len() int { return r.n }

// TestReadBody_ReaderKinds reads bodies around the inline limit through
// readers that tell their length, lie about it or tell nothing, and checks
// where each body goes (inline up to the limit, a file above), its size,
// CRC and octets.
func TestReadBody_ReaderKinds(t *testing.T) {
	const limit = 32 << 10
	s := openT(t, t.TempDir(), &Options{InlineBodyLimit: limit})
	readers := map[string]func([]byte) io.Reader{
		"bytes.Reader":  func(b []byte) io.Reader { return bytes.NewReader(b) },
		"bytes.Buffer":  func(b []byte) io.Reader { return bytes.NewBuffer(b) },
		"half reads":    func(b []byte) io.Reader { return iotest.HalfReader(bytes.NewReader(b)) },
		"Len too small": func(b []byte) io.Reader { return lenReader{bytes.NewReader(b), 0} },
		"Len too large": func(b []byte) io.Reader { return lenReader{bytes.NewReader(b), 1 << 20} },
	}
	for _, size := range []int{0, 1, 2 << 10, 4<<10 + 1, limit - 1, limit, limit + 1, 300 << 10} {
		data := bytes.Repeat([]byte("0123456789abcdef"), size/16+1)[:size]
		for name, newReader := range readers {
			b, err := s.readBody(newReader(data))
			if err != nil {
				t.Fatalf("size %d, %s: %v", size, name, err)
			}
			var got []byte
			if b.kind() == bodyInline {
				got = b.inline
			} else if got, err = os.ReadFile(s.bodyPath(b.file)); err != nil {
				t.Fatal(err)
			}
			s.discard(b)
			if wantInline := size <= limit; (b.kind() == bodyInline) != wantInline {
				t.Errorf("size %d, %s: inline %t, want %t", size, name, b.kind() == bodyInline, wantInline)
			}
			if !bytes.Equal(got, data) || b.size != int64(size) || b.crc != crc32.Checksum(data, castagnoli) {
				t.Errorf("size %d, %s: read %d octets (size %d, crc %08x), want %d (crc %08x)",
					size, name, len(got), b.size, b.crc, size, crc32.Checksum(data, castagnoli))
			}
		}
	}
}

// TestReadBody_SmallBodyAllocatesItsSize checks that a 2 KB body costs
// about its own size, not a buffer for the whole inline limit (32 KiB):
// exactly its size handed over as a *bytes.Reader, as the queue does, and
// the first growth step (4 KiB) from a reader that does not tell its size.
func TestReadBody_SmallBodyAllocatesItsSize(t *testing.T) {
	s := openT(t, t.TempDir(), nil)
	data := bytes.Repeat([]byte("0123456789abcdef"), 128)
	for _, c := range []struct {
		name   string
		reader func(*bytes.Reader) io.Reader
		max    uint64
	}{
		{"bytes.Reader", func(r *bytes.Reader) io.Reader { return r }, 2 * uint64(len(data))},
		{"unknown size", func(r *bytes.Reader) io.Reader { return struct{ io.Reader }{r} }, 2 * minHead},
	} {
		r := bytes.NewReader(data)
		const runs = 100
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for range runs {
			r.Reset(data)
			if _, err := s.readBody(c.reader(r)); err != nil {
				t.Fatal(err)
			}
		}
		runtime.ReadMemStats(&after)
		if per := (after.TotalAlloc - before.TotalAlloc) / runs; per > c.max {
			t.Errorf("%s: readBody of %d octets allocates %d octets, want at most %d", c.name, len(data), per, c.max)
		}
	}
}
