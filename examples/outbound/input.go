package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"strings"
)

// dotReader reads a message from sendmail-style input: everything up to a
// line that holds a single "." (sendmail without -i/-oi), or up to EOF. The
// terminating line and anything after it are not part of the message, and
// no other line is changed: sendmail's input is not dot-stuffed.
type dotReader struct {
	r       *bufio.Reader
	pending []byte // read but not yet returned
	midLine bool   // the next piece continues a line: it cannot be the dot
	err     error  // sticky: io.EOF after the dot or at the end of input
}

func newDotReader(r io.Reader) *dotReader {
	return &dotReader{r: bufio.NewReaderSize(r, 64<<10)}
}

func (d *dotReader) Read(p []byte) (int, error) {
	for len(d.pending) == 0 {
		if d.err != nil {
			return 0, d.err
		}
		// ReadSlice keeps memory bounded: a line longer than the buffer
		// comes in pieces, and only a piece that starts a line can be
		// the lone dot.
		piece, err := d.r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			err = nil
		}
		if !d.midLine && isLoneDot(piece) && (err == nil || errors.Is(err, io.EOF)) {
			d.err = io.EOF
			return 0, io.EOF
		}
		d.pending = append(d.pending[:0], piece...)
		d.midLine = len(piece) > 0 && piece[len(piece)-1] != '\n'
		d.err = err
	}
	n := copy(p, d.pending)
	d.pending = d.pending[n:]
	return n, nil
}

func isLoneDot(line []byte) bool {
	line = bytes.TrimSuffix(line, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	return len(line) == 1 && line[0] == '.'
}

// maxHeaderBytes bounds the header section read into memory.
const maxHeaderBytes = 1 << 20

// headerField is one field of a message header, as it appeared in the input.
type headerField struct {
	name string // as written, e.g. "Subject"
	raw  []byte // the whole field: name, colon, value, continuation lines, line endings
}

// value returns the unfolded value, without the name and the colon.
func (f headerField) value() string {
	v := string(f.raw[len(f.name)+1:])
	v = strings.ReplaceAll(v, "\r\n", "")
	v = strings.ReplaceAll(v, "\n", "")
	return strings.TrimSpace(v)
}

// header is the header section of a message read from the input.
type header struct {
	fields []headerField
	// sep is the blank line that ended the header, as written ("\r\n" or
	// "\n"); empty when the header ended at a line that is not a field, or
	// at EOF.
	sep []byte
}

// get returns the fields named name (case-insensitive).
func (h *header) get(name string) []headerField {
	var out []headerField
	for _, f := range h.fields {
		if strings.EqualFold(f.name, name) {
			out = append(out, f)
		}
	}
	return out
}

// HeaderError reports a header the send command cannot use.
type HeaderError struct {
	Field  string // the field, or "" for the header as a whole
	Reason string
}

// Error returns e.g. `message header: To: missing "@"`.
func (e *HeaderError) Error() string {
	if e.Field == "" {
		return "message header: " + e.Reason
	}
	return "message header: " + e.Field + ": " + e.Reason
}

// readHeader reads the header section of a message (RFC 5322 §2.2) from r.
// It stops at the blank line that ends it (consumed, kept in sep), or at the
// first line that is neither a field nor a continuation (left in r: it starts
// the body, as Postfix treats it). Every byte it consumed is in the result,
// so writing the fields and sep back gives the input unchanged.
func readHeader(r *bufio.Reader) (*header, error) {
	h := &header{}
	total := 0
	for {
		peek, err := r.Peek(1)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return h, nil
			}
			return nil, err
		}
		if (peek[0] == ' ' || peek[0] == '\t') && len(h.fields) > 0 {
			line, err := readLine(r, maxHeaderBytes-total)
			if err != nil {
				return nil, err
			}
			total += len(line)
			last := &h.fields[len(h.fields)-1]
			last.raw = append(last.raw, line...)
			continue
		}
		if peek[0] == '\r' || peek[0] == '\n' {
			two, _ := r.Peek(2)
			if peek[0] == '\n' || (len(two) == 2 && two[1] == '\n') {
				h.sep, _ = readLine(r, 2)
				return h, nil
			}
		}
		name, ok := fieldName(r)
		if !ok {
			return h, nil
		}
		line, err := readLine(r, maxHeaderBytes-total)
		if err != nil {
			return nil, err
		}
		total += len(line)
		h.fields = append(h.fields, headerField{name: name, raw: line})
	}
}

// fieldName returns the name of the field starting at r without consuming
// anything, or ok false when the line does not start a field: RFC 5322 §3.6.8,
// printable US-ASCII except ":", then ":".
func fieldName(r *bufio.Reader) (string, bool) {
	for n := 1; n <= 1000; n++ {
		b, err := r.Peek(n)
		if err != nil || len(b) < n {
			return "", false
		}
		c := b[n-1]
		if c == ':' {
			return string(b[:n-1]), n > 1
		}
		if c < 33 || c > 126 {
			return "", false
		}
	}
	return "", false
}

// readLine reads one line with its ending (or up to EOF), refusing lines
// that would take the header over its size limit.
func readLine(r *bufio.Reader, limit int) ([]byte, error) {
	var line []byte
	for {
		piece, err := r.ReadSlice('\n')
		line = append(line, piece...)
		if len(line) > limit {
			return nil, &HeaderError{Reason: fmt.Sprintf("header section larger than %d octets", maxHeaderBytes)}
		}
		switch {
		case err == nil:
			return line, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			return line, nil
		default:
			return nil, err
		}
	}
}

// addresses returns the addresses in the fields named names (To, Cc, Bcc),
// in order, as RFC 5322 address lists; groups contribute their members.
func (h *header) addresses(names ...string) ([]string, error) {
	var out []string
	for _, f := range h.fields {
		for _, n := range names {
			if !strings.EqualFold(f.name, n) {
				continue
			}
			v := f.value()
			if v == "" || isEmptyGroup(v) {
				continue
			}
			list, err := mail.ParseAddressList(v)
			if err != nil {
				return nil, &HeaderError{Field: f.name, Reason: err.Error()}
			}
			for _, a := range list {
				out = append(out, a.Address)
			}
		}
	}
	return out, nil
}

// isEmptyGroup reports a group with no members, "undisclosed-recipients:;",
// which net/mail refuses.
func isEmptyGroup(v string) bool {
	i := strings.IndexByte(v, ':')
	return i > 0 && strings.TrimSpace(v[i+1:]) == ";"
}

// without returns the header minus the fields named name.
func (h *header) without(name string) *header {
	out := &header{sep: h.sep}
	for _, f := range h.fields {
		if !strings.EqualFold(f.name, name) {
			out.fields = append(out.fields, f)
		}
	}
	return out
}

// bytes returns the header as it will be sent: the fields, then the
// separator. A header that ended without a blank line (at a body line or
// EOF) gets none added: the body follows directly, as it did.
func (h *header) bytes() []byte {
	var b bytes.Buffer
	for _, f := range h.fields {
		b.Write(f.raw)
	}
	b.Write(h.sep)
	return b.Bytes()
}
