package delivery

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/emersion/go-smtp"
)

// session is one SMTP connection, ready for mail transactions. It is used
// by one goroutine at a time: the attempt that took it from the pool.
type session struct {
	dest     string
	host     string // "mx.example.com[192.0.2.1]:25", for Results and logs
	loopback bool
	raw      net.Conn // the TCP connection under any TLS; closing it stops everything
	wc       *wireConn
	c        *smtp.Client
	tls      TLSState
	ext      []string // EHLO keywords after TLS, for Report.Extensions

	transactions int  // mail transactions finished on this connection
	broken       bool // closed, or in a state that must not be reused
	// fromPool is set when the session came from the idle pool and has not
	// yet answered MAIL in this attempt: if it fails before that, the
	// server most likely closed it while idle, and the attempt takes a
	// fresh connection instead.
	fromPool bool
	// needHello is set after go-smtp's Reset, which forgets the EHLO: the
	// next transaction sends it explicitly, so that a failure is reported
	// at the EHLO stage and not mistaken for a reply to MAIL.
	needHello bool

	stop      func() bool // unregisters the ctx watcher of the current attempt
	idleSince time.Time
	idleTimer *time.Timer
}

// bind ties the session to an attempt's ctx: the connection is closed when
// ctx is done, which unblocks any read or write (go-smtp takes no
// context), and every deadline is clamped to ctx's deadline.
func (s *session) bind(ctx context.Context) {
	s.stop = context.AfterFunc(ctx, func() { s.raw.Close() })
	dl, _ := ctx.Deadline()
	s.wc.ctxDeadline = dl
}

// unbind undoes bind. It reports false when ctx already closed the
// connection.
func (s *session) unbind() bool {
	ok := true
	if s.stop != nil {
		ok = s.stop()
		s.stop = nil
	}
	s.wc.ctxDeadline = time.Time{}
	if !ok {
		s.broken = true
	}
	return ok
}

// close drops the connection without a word: after a 421, a network error,
// a protocol error, or to abort DATA without the final dot.
func (s *session) close() {
	s.broken = true
	s.raw.Close()
}

// quit ends a healthy connection politely. It does not wait for the 221:
// nothing depends on it, and a server that does not read must not make
// Close block.
func (s *session) quit() {
	if !s.broken {
		s.wc.Conn.SetWriteDeadline(time.Now().Add(time.Second))
		fmt.Fprint(s.wc.Conn, "QUIT\r\n")
	}
	s.close()
}

// deadline returns now+d, clamped to the attempt's deadline.
func (s *session) deadline(d time.Duration) time.Time {
	return s.wc.clamp(time.Now().Add(d))
}

// wireConn is the net.Conn go-smtp's client talks through. It exists to
// cover the client's gaps (DEPENDENCIES A4, A5):
//
//   - Read first replays pre, the synthetic greeting that lets
//     smtp.NewClient start on a connection whose real greeting, EHLO and
//     STARTTLS the engine already handled;
//   - Read enforces ReplyLimits on every reply (go-smtp caps only the line
//     length), counting from the last command written;
//   - while block is set (message data), every Write re-arms the write
//     deadline, because go-smtp sets no deadline while the body is written
//     (RFC 5321 §4.5.3.2: a timeout per data block);
//   - deadlines go-smtp sets are clamped to the attempt's ctx deadline;
//   - the first write error is kept, to tell "the final dot was sent and
//     the reply lost" (a possible duplicate, RFC 1047) from "the data never
//     made it".
type wireConn struct {
	net.Conn
	pre         []byte
	lim         ReplyLimits
	ctxDeadline time.Time
	block       time.Duration
	writeErr    error

	// The reply being read: octets and lines so far, the current line's
	// length and first octets, the code, whether the current line is the
	// last one and whether the last one has ended.
	replyBytes, replyLines, lineBytes int
	head                              [3]byte
	replyCode                         int
	lastLine, replyDone               bool

	pending     []byte // octets check produced beyond what Read could return
	pendingErr  error
	unsolicited []byte // octets that came after the end of a reply
}

// desynced reports whether the server sent something nobody asked for: the
// connection must not carry another command.
func (c *wireConn) desynced() bool { return len(c.unsolicited) > 0 }

func (c *wireConn) Read(p []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(p, c.pre)
		c.pre = c.pre[n:]
		return n, nil
	}
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		if len(c.pending) == 0 {
			return n, c.pendingErr
		}
		return n, nil
	}
	if c.replyDone {
		return 0, &ProtocolError{Reason: "read past the end of a reply"}
	}
	n, err := c.Conn.Read(p)
	out, extra, perr := c.check(p[:n])
	if perr != nil {
		return 0, perr
	}
	if len(extra) > 0 && len(c.unsolicited) < c.lim.MaxLineBytes {
		c.unsolicited = append(c.unsolicited, extra...)
	}
	if len(out) > len(p) {
		// check inserted octets: hand out the rest on the next Read.
		k := copy(p, out)
		c.pending, c.pendingErr = append(c.pending[:0], out[k:]...), err
		return k, nil
	}
	return copy(p, out), err
}

// check follows the reply being read, octet by octet, and fails as soon as
// it breaks RFC 5321 §4.2 or the limits. go-smtp's reader (net/textproto)
// appends a continuation line with another code to the text and keeps
// reading until a well-formed last line comes, which may be never; here it
// is a protocol error at once.
//
// It returns the octets of the reply, and apart the ones after its last
// line: nothing was asked for them, so the next Write fails (the two sides
// are out of step), but the reply itself stands: a 250 to the final dot
// followed at once by a 421 still means "delivered".
//
// A line that is a bare code ("250" CR LF), which RFC 5321 allows and
// net/textproto refuses, gets a space after the code: out is then a new
// slice, one octet longer per such line.
func (c *wireConn) check(b []byte) (out, extra []byte, err error) {
	inserted := false
	for i, o := range b {
		if c.replyDone {
			if !inserted {
				out = b[:i]
			}
			return out, b[i:], nil
		}
		c.replyBytes++
		c.lineBytes++
		if c.lineBytes > c.lim.MaxLineBytes {
			return nil, nil, &ProtocolError{Reason: fmt.Sprintf("reply line longer than %d octets", c.lim.MaxLineBytes)}
		}
		if c.replyBytes > c.lim.MaxBytes {
			return nil, nil, &ProtocolError{Reason: fmt.Sprintf("reply longer than %d octets", c.lim.MaxBytes)}
		}
		eol := o == '\r' || o == '\n'
		switch {
		case c.lineBytes < 4 && eol:
			return nil, nil, &ProtocolError{Reason: "malformed reply code", Line: string(c.head[:c.lineBytes-1])}
		case c.lineBytes < 4:
			c.head[c.lineBytes-1] = o
		case c.lineBytes == 4:
			head := string(c.head[:3]) + string(o)
			if eol {
				head = head[:3]
				if !inserted {
					out = append(make([]byte, 0, len(b)+4), b[:i]...)
					inserted = true
				}
				out = append(out, ' ')
			}
			if err := c.checkHead(head); err != nil {
				return nil, nil, err
			}
		}
		if inserted {
			out = append(out, o)
		}
		if o == '\n' {
			c.replyLines++
			if c.replyLines > c.lim.MaxLines {
				return nil, nil, &ProtocolError{Reason: fmt.Sprintf("reply has more than %d lines", c.lim.MaxLines)}
			}
			c.lineBytes = 0
			c.replyDone = c.lastLine
		}
	}
	if !inserted {
		out = b
	}
	return out, nil, nil
}

// checkHead checks the start of a reply line, "ddd-", "ddd " or "ddd":
// a valid code, the same as the first line's.
func (c *wireConn) checkHead(head string) error {
	code, last, _, err := parseReplyLine(head)
	if err != nil {
		return err
	}
	if c.replyLines > 0 && code != c.replyCode {
		return &ProtocolError{Reason: fmt.Sprintf("continuation of a %d reply with code %d", c.replyCode, code), Line: head}
	}
	c.replyCode, c.lastLine = code, last
	return nil
}

func (c *wireConn) Write(p []byte) (int, error) {
	if c.desynced() {
		return 0, &ProtocolError{Reason: "unsolicited data from the server", Line: shorten(string(c.unsolicited)), Err: ErrUnexpectedData}
	}
	// No pipelining: whatever is read after a command is its reply.
	c.replyBytes, c.replyLines, c.lineBytes = 0, 0, 0
	c.replyDone, c.lastLine = false, false
	if c.block > 0 {
		c.Conn.SetWriteDeadline(c.clamp(time.Now().Add(c.block)))
	}
	n, err := c.Conn.Write(p)
	if err != nil && c.writeErr == nil {
		c.writeErr = err
	}
	return n, err
}

func (c *wireConn) SetDeadline(t time.Time) error      { return c.Conn.SetDeadline(c.clamp(t)) }
func (c *wireConn) SetReadDeadline(t time.Time) error  { return c.Conn.SetReadDeadline(c.clamp(t)) }
func (c *wireConn) SetWriteDeadline(t time.Time) error { return c.Conn.SetWriteDeadline(c.clamp(t)) }

// clamp returns the earlier of t and the attempt's deadline; a zero t (no
// deadline) becomes the attempt's deadline.
func (c *wireConn) clamp(t time.Time) time.Time {
	if !c.ctxDeadline.IsZero() && (t.IsZero() || t.After(c.ctxDeadline)) {
		return c.ctxDeadline
	}
	return t
}
