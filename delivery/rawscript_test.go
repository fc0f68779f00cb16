package delivery_test

import (
	"bytes"
	"io"
	"strings"
	"testing"

	"github.com/outboundmail/outbound/delivery/deliverytest"
)

// rawScript answers one raw session like a plain server, with hooks for
// the parts a test scripts. A hook returns the reply lines to send, or nil
// for the plain answer.
type rawScript struct {
	exts []string // EHLO keywords
	// mail, rcpt and dot may script MAIL, each RCPT (n counts the RCPTs of
	// the transaction from 1) and the reply to the final dot.
	mail func(line string) []string
	rcpt func(n int, line string) []string
	dot  func(data []byte) []string
	// afterData, when set, takes over after the 354 instead of reading the
	// data (to stall or drop in the middle); the session then ends.
	afterData func(c *deliverytest.RawConn)
	// wire receives the exact octets of each message's data, dot-stuffing
	// and final ".\r\n" included.
	wire chan<- []byte
	// quit, when set, is closed when the client sends QUIT.
	quit chan<- struct{}
}

func (s rawScript) serve(c *deliverytest.RawConn) {
	if c.Greet() != nil {
		return
	}
	rcpts := 0
	for {
		line, err := c.ReadLine()
		if err != nil {
			return
		}
		verb, _, _ := strings.Cut(strings.ToUpper(line), " ")
		var reply []string
		switch verb {
		case "EHLO":
			reply = append([]string{"250-localhost"}, prefixed("250-", s.exts)...)
			reply[len(reply)-1] = "250 " + reply[len(reply)-1][4:]
		case "MAIL":
			rcpts = 0
			if s.mail != nil {
				reply = s.mail(line)
			}
		case "RCPT":
			rcpts++
			if s.rcpt != nil {
				reply = s.rcpt(rcpts, line)
			}
		case "DATA":
			c.Reply("354 go ahead")
			if s.afterData != nil {
				s.afterData(c)
				return
			}
			data, err := readWireData(c)
			if err != nil {
				return // the client aborted DATA; tests check what arrived
			}
			if s.wire != nil {
				s.wire <- data
			}
			if s.dot != nil {
				reply = s.dot(data)
			}
		case "RSET", "NOOP":
		case "QUIT":
			if s.quit != nil {
				close(s.quit)
			}
			c.Reply("221 bye")
			return
		default:
			reply = []string{"502 5.5.1 not implemented"}
		}
		if reply == nil {
			reply = []string{"250 2.0.0 ok"}
		}
		if len(reply) > 0 && c.Reply(reply...) != nil {
			return
		}
	}
}

func prefixed(p string, ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = p + s
	}
	return out
}

// readWireData reads DATA octets exactly as sent, up to and including the
// CRLF.CRLF that ends them. It reads the connection directly: the client
// sent nothing after DATA before the 354, so RawConn has nothing buffered.
func readWireData(c *deliverytest.RawConn) ([]byte, error) {
	var buf bytes.Buffer
	b := make([]byte, 32<<10)
	for {
		n, err := c.Raw().Read(b)
		buf.Write(b[:n])
		d := buf.Bytes()
		if bytes.Equal(d, []byte(".\r\n")) || bytes.HasSuffix(d, []byte("\r\n.\r\n")) {
			return d, nil
		}
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return d, err
		}
	}
}

// rawServer starts a raw server whose sessions all follow s.
func rawServer(t *testing.T, s rawScript) *deliverytest.RawServer {
	return deliverytest.NewRawServer(t, func(c *deliverytest.RawConn) { s.serve(c) })
}

// lazyBody yields n octets of 78-octet lines without holding them.
type lazyBody struct{ n, off int64 }

const lazyLine = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n"

func (b *lazyBody) Read(p []byte) (int, error) {
	if b.off >= b.n {
		return 0, io.EOF
	}
	if rest := b.n - b.off; int64(len(p)) > rest {
		p = p[:rest]
	}
	n := 0
	for n < len(p) {
		n += copy(p[n:], lazyLine[(b.off+int64(n))%int64(len(lazyLine)):])
	}
	b.off += int64(n)
	return n, nil
}
