package rfc5321

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// MaxLineLength is the longest line [Reader] passes, in octets, not counting
// the CR LF that ends it (RFC 5322 §2.1.1; RFC 5321 §4.5.3.1.6 allows 1000
// with the CR LF).
const MaxLineLength = 998

// The reasons a [Reader] refuses data, for use with errors.Is.
var (
	ErrNUL         = errors.New("NUL octet in message data")
	ErrLineTooLong = fmt.Errorf("line longer than %d octets", MaxLineLength)
)

// DataError reports message data that [Reader] refuses. Data already read
// from the Reader is then incomplete and must be discarded.
type DataError struct {
	Line   int    // 1-based line number, counting canonical (CR LF) lines
	Offset int64  // 0-based offset of the offending octet in the input
	Reason string // what is wrong, e.g. "NUL octet in message data"
	Err    error  // ErrNUL or ErrLineTooLong
}

// Error returns e.g. "rfc5321: message data line 3 (offset 1041): NUL octet
// in message data".
func (e *DataError) Error() string {
	return fmt.Sprintf("rfc5321: message data line %d (offset %d): %s", e.Line, e.Offset, e.Reason)
}

// Unwrap returns Err, so errors.Is(err, ErrLineTooLong) works.
func (e *DataError) Unwrap() error { return e.Err }

// The input buffer starts small, because most messages are a few kilobytes
// and allocating (and zeroing) a large buffer would cost more than reading
// them, and grows while reads fill it, so that large messages are read in
// chunks big enough to amortise each call. Memory stays constant.
const (
	minReadBuf = 4 << 10
	maxReadBuf = 64 << 10
)

// Reader canonicalises message data as described in the package
// documentation: it reads from an underlying reader and yields data whose
// only line ending is CR LF, with no NUL, no line over [MaxLineLength]
// octets, and a final CR LF. It holds at most a fixed-size buffer, whatever
// the size of the message. A Reader is not safe for concurrent use.
type Reader struct {
	src    io.Reader
	buf    []byte // input buffer; unread input is buf[r:w]
	r, w   int
	srcErr error // error returned by src, acted on once buf is drained
	err    error // sticky error returned to the caller: io.EOF, a *DataError, or srcErr

	pend    [3]byte // output owed to the caller (an LF split from its CR, or the final " \r\n")
	npend   int
	ipend   int
	cr      bool  // the last input octet was a CR whose fate depends on the next one
	lineLen int   // octets in the current output line, without its CR LF
	line    int   // 1-based number of the current line
	in      int64 // input octets consumed
	size    int64 // octets returned to the caller
	high    bool  // an octet > 127 was seen
}

// NewReader returns a Reader that canonicalises the data read from r.
func NewReader(r io.Reader) *Reader {
	return &Reader{src: r, line: 1}
}

// Reset discards the Reader's state and makes it read from src, keeping its
// buffer: reusing one Reader per goroutine saves an allocation per message.
func (r *Reader) Reset(src io.Reader) {
	*r = Reader{src: src, line: 1, buf: r.buf}
}

// Size returns the number of octets returned by Read so far. Once Read has
// returned io.EOF, it is the size of the canonical message.
func (r *Reader) Size() int64 { return r.size }

// EightBit reports whether an octet above 127 has been seen so far. Once Read
// has returned io.EOF, it says whether the message needs 8BITMIME.
func (r *Reader) EightBit() bool { return r.high }

// Read reads canonical data into p. It returns a [*DataError] when the input
// cannot be made canonical, io.EOF after the last octet, and any other error
// from the underlying reader as it is. Errors are sticky.
func (r *Reader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n := 0
	for n < len(p) {
		if r.ipend < r.npend {
			c := copy(p[n:], r.pend[r.ipend:r.npend])
			r.ipend += c
			n += c
			continue
		}
		if r.err != nil {
			break
		}
		if r.r == r.w {
			if r.srcErr != nil {
				r.finish()
				continue
			}
			if n > 0 {
				break // do not block for more while holding data
			}
			r.fill()
			continue
		}
		n += r.transform(p[n:])
	}
	r.size += int64(n)
	if n > 0 && r.ipend >= r.npend && r.err == io.EOF {
		return n, nil // report EOF on the next call, as most readers do
	}
	if r.ipend < r.npend {
		return n, nil
	}
	return n, r.err
}

// fill reads more input into the empty buffer.
func (r *Reader) fill() {
	switch {
	case r.buf == nil:
		r.buf = make([]byte, minReadBuf)
	case r.w == len(r.buf) && len(r.buf) < maxReadBuf:
		r.buf = make([]byte, 4*len(r.buf))
	}
	r.r, r.w = 0, 0
	for range 100 {
		n, err := r.src.Read(r.buf)
		r.w = n
		if err != nil {
			r.srcErr = err
			return
		}
		if n > 0 {
			return
		}
	}
	r.srcErr = io.ErrNoProgress
}

// finish acts on the underlying reader's error once all input is processed.
// At io.EOF, a pending stray CR becomes a space and an unterminated last line
// gets its CR LF.
func (r *Reader) finish() {
	if !errors.Is(r.srcErr, io.EOF) {
		r.err = r.srcErr
		return
	}
	r.err = io.EOF
	r.npend, r.ipend = 0, 0
	if r.cr {
		r.cr = false
		if !r.grow(1, r.in-1) {
			return
		}
		r.pend[r.npend] = ' '
		r.npend++
	}
	if r.lineLen > 0 {
		r.pend[r.npend] = '\r'
		r.pend[r.npend+1] = '\n'
		r.npend += 2
		r.lineLen = 0
	}
}

// grow adds k octets to the current line, or records ErrLineTooLong; at is
// the input offset of the octet that made the line too long.
func (r *Reader) grow(k int, at int64) bool {
	if r.lineLen+k > MaxLineLength {
		r.fail(ErrLineTooLong, at)
		return false
	}
	r.lineLen += k
	return true
}

func (r *Reader) fail(err error, at int64) {
	r.err = &DataError{Line: r.line, Offset: at, Reason: err.Error(), Err: err}
}

// transform moves canonicalised input from the buffer into out, until one of
// them is exhausted or an error is recorded, and returns the octets written.
func (r *Reader) transform(out []byte) int {
	in := r.buf[r.r:r.w]
	i, o := 0, 0
	for i < len(in) && o < len(out) && r.err == nil {
		if r.cr {
			r.cr = false
			if in[i] == '\n' {
				i++
				o += r.endLine(out[o:])
				continue
			}
			// A stray CR: replace it with a space, then look at in[i] afresh.
			if !r.grow(1, r.in+int64(i)-1) {
				break
			}
			out[o] = ' '
			o++
			continue
		}

		// Fast path: copy up to the next CR, LF or NUL, never looking past
		// the octet that would make the line too long.
		seg := in[i:min(len(in), i+len(out)-o, i+MaxLineLength+1-r.lineLen)]
		k := indexSpecial(seg)
		long := r.lineLen+k > MaxLineLength
		if long {
			k--
		}
		copy(out[o:], seg[:k])
		if !r.high && hasHigh(seg[:k]) {
			r.high = true
		}
		r.lineLen += k
		i += k
		o += k
		switch {
		case long:
			r.fail(ErrLineTooLong, r.in+int64(i))
		case k == len(seg):
			// More of the same line follows in the next segment.
		case seg[k] == '\r':
			i++
			if i < len(in) && in[i] == '\n' && o < len(out) {
				i++ // CR LF, the usual case, without a trip round the loop
				o += r.endLine(out[o:])
				break
			}
			r.cr = true
		case seg[k] == '\n':
			i++
			o += r.endLine(out[o:])
		default: // NUL
			r.fail(ErrNUL, r.in+int64(i))
		}
	}
	r.r += i
	r.in += int64(i)
	return o
}

// endLine writes CR LF to out (which has room for at least one octet),
// keeping the LF for later if it does not fit.
func (r *Reader) endLine(out []byte) int {
	r.lineLen = 0
	r.line++
	out[0] = '\r'
	if len(out) > 1 {
		out[1] = '\n'
		return 2
	}
	r.pend[0] = '\n'
	r.npend, r.ipend = 1, 0
	return 1
}

// indexSpecial returns the index of the first CR, LF or NUL in b, or len(b).
// Three SIMD-accelerated scans, each stopping at the previous hit, are much
// faster than a byte loop for typical lines.
func indexSpecial(b []byte) int {
	end := len(b)
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		end = i
	}
	if i := bytes.IndexByte(b[:end], '\r'); i >= 0 {
		end = i
	}
	if i := bytes.IndexByte(b[:end], 0); i >= 0 {
		end = i
	}
	return end
}

// hasHigh reports whether b contains an octet above 127, eight at a time.
func hasHigh(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b)&0x8080808080808080 != 0 {
			return true
		}
		b = b[8:]
	}
	for _, c := range b {
		if c >= 0x80 {
			return true
		}
	}
	return false
}
