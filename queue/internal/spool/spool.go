// Package spool holds the buffer reading shared by the queue and its
// stores: reading the start of a message body into memory, sized from what
// the reader can tell about its length.
package spool

import (
	"io"
	"slices"
)

// ReadUpTo appends from r to buf until buf holds n octets or r ends (io.EOF
// is not an error). A full buffer doubles, or grows to n if that is less
// than doubling again, so a buffer sized from a good length hint is never
// reallocated and a wrong hint only costs growth.
func ReadUpTo(r io.Reader, buf []byte, n int) ([]byte, error) {
	for len(buf) < n {
		if len(buf) == cap(buf) {
			grow := max(cap(buf), 512)
			if rest := n - len(buf); rest <= 2*grow {
				grow = rest
			}
			buf = slices.Grow(buf, grow)
		}
		k, err := r.Read(buf[len(buf):min(cap(buf), n)])
		buf = buf[:len(buf)+k]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
	return buf, nil
}
