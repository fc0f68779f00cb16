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
// octets, and a final CR LF. Input that is already canonical is read
// straight into the caller's slice and returned without a copy; the rest
// passes through a buffer no larger than 64 KiB or the caller's slice,
// whatever the size of the message. A Reader is not safe for concurrent use.
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
	// noDirect is set once the input proved not to be canonical (LF line
	// endings, say): the rest is then likely the same, and goes straight
	// to transform instead of being read into p and moved to buf.
	noDirect bool
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
	if !r.noDirect && r.ipend >= r.npend && r.r == r.w && !r.cr && r.err == nil && r.srcErr == nil {
		if n := r.readDirect(p); n > 0 {
			return n, nil
		}
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

// readDirect is the fast path for input that is already canonical, the
// common case: it reads straight into p and returns the prefix that needs no
// change, without copying it. A trailing CR is held back in r.cr, and
// anything after the first octet that needs work is moved to the buffer for
// transform. It returns 0 when nothing could be returned as it is.
func (r *Reader) readDirect(p []byte) int {
	var n int
	var err error
	for range 100 {
		if n, err = r.src.Read(p); n > 0 || err != nil {
			break
		}
	}
	if n == 0 && err == nil {
		err = io.ErrNoProgress
	}
	r.srcErr = err
	k, trailingCR := r.scanCanonical(p[:n])
	used := k
	if trailingCR {
		r.cr = true
		used++
	}
	r.in += int64(used)
	if rest := p[used:n]; len(rest) > 0 {
		r.noDirect = true
		if len(r.buf) < len(rest) {
			r.buf = make([]byte, max(minReadBuf, len(rest)))
		}
		r.r, r.w = 0, copy(r.buf, rest)
	}
	r.size += int64(k)
	return k
}

// scanCanonical returns the length of the prefix of b that is canonical as
// it stands, updating the line state for it. It stops before a bare LF, a
// stray CR, a NUL or a line that becomes too long, and reports a CR that
// ends b, whose LF (if any) is still to come.
func (r *Reader) scanCanonical(b []byte) (k int, trailingCR bool) {
	i := 0
	for i < len(b) {
		seg := b[i:min(len(b), i+MaxLineLength+1-r.lineLen)]
		j := indexSpecial(seg)
		if r.lineLen+j > MaxLineLength {
			return i, false // transform reports it
		}
		if !r.high && hasHigh(seg[:j]) {
			r.high = true
		}
		if j == len(seg) {
			r.lineLen += j
			i += j
			continue
		}
		switch {
		case seg[j] == '\r' && i+j+1 < len(b) && b[i+j+1] == '\n':
			r.lineLen = 0
			r.line++
			i += j + 2
		case seg[j] == '\r' && i+j+1 == len(b):
			r.lineLen += j
			return i + j, true
		default: // bare LF, stray CR or NUL: transform's job
			r.lineLen += j
			return i + j, false
		}
	}
	return i, false
}

// fill reads more input into the empty buffer.
func (r *Reader) fill() {
	switch {
	case r.buf == nil:
		r.buf = make([]byte, minReadBuf)
	case r.w == len(r.buf) && len(r.buf) < maxReadBuf:
		r.buf = make([]byte, min(4*len(r.buf), maxReadBuf))
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
