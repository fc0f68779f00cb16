package delivery

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"time"
)

// wireConn is the net.Conn go-smtp's client talks through. It exists to
// cover the client's gaps (DEPENDENCIES A4, A5):
//
//   - Read first replays pre, the synthetic greeting that lets
//     smtp.NewClient start on a connection whose real greeting, EHLO and
//     STARTTLS the engine already handled;
//   - Read hands out only whole reply lines that follow RFC 5321 §4.2 and
//     ReplyLimits (see take); go-smtp caps only the line length, and
//     net/textproto returns a line cut short by an error as if it were
//     whole;
//   - a Write may be followed by one reply, a writeGroup of n pipelined
//     commands (RFC 2920) by exactly n: anything after them is unsolicited;
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

	buf     []byte // read buffer
	line    []byte // the line being received, not yet handed out
	ready   []byte // whole, checked lines not yet handed out
	readErr error  // returned once ready is drained; sticky

	// The reply being read, since the last command written.
	replyBytes, replyLines int
	replyCode              int
	headChecked, lastLine  bool // about the current line
	replyDone              bool // its last line has ended
	moreReplies            int  // replies still due after the current one (pipelining)

	// For pipelined transactions, which bypass go-smtp: br reads replies
	// (empty between transactions), bw buffers message data, cmdBuf holds
	// a group of commands.
	br     *bufio.Reader
	bw     *bufio.Writer
	cmdBuf []byte

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
	for len(c.ready) == 0 {
		if c.readErr != nil {
			return 0, c.readErr
		}
		if c.replyDone {
			return 0, &ProtocolError{Reason: "read past the end of a reply"}
		}
		if c.buf == nil {
			c.buf = make([]byte, 4096)
		}
		n, err := c.Conn.Read(c.buf)
		if perr := c.take(c.buf[:n]); perr != nil {
			c.readErr = perr
		} else if err != nil {
			if err == io.EOF && (len(c.line) > 0 || c.replyLines > 0) {
				err = io.ErrUnexpectedEOF
			}
			c.readErr = err
		}
	}
	n := copy(p, c.ready)
	c.ready = c.ready[n:]
	return n, nil
}

// take checks the octets of the reply being read and moves each line to
// ready once it is whole. It fails as soon as the reply breaks RFC 5321
// §4.2 or the limits: go-smtp's reader (net/textproto) appends a
// continuation line with another code to the text and keeps reading until
// a well-formed last line comes, which may be never.
//
// Octets after the last line are kept apart: nothing was asked for them,
// so the next Write fails (the two sides are out of step), but the reply
// itself stands: a 250 to the final dot followed at once by a 421 still
// means "delivered".
//
// A line that is a bare code ("250" CR LF), which RFC 5321 allows and
// net/textproto refuses, gets a space after the code.
func (c *wireConn) take(b []byte) error {
	for i, o := range b {
		if c.replyDone {
			if len(c.unsolicited) < c.lim.MaxLineBytes {
				c.unsolicited = append(c.unsolicited, b[i:min(len(b), i+c.lim.MaxLineBytes)]...)
			}
			return nil
		}
		c.replyBytes++
		if c.replyBytes > c.lim.MaxBytes {
			return &ProtocolError{Reason: fmt.Sprintf("reply longer than %d octets", c.lim.MaxBytes)}
		}
		c.line = append(c.line, o)
		if len(c.line) > c.lim.MaxLineBytes {
			return &ProtocolError{Reason: fmt.Sprintf("reply line longer than %d octets", c.lim.MaxLineBytes), Line: shorten(string(c.line))}
		}
		if len(c.line) == 4 && o != '\r' && o != '\n' {
			if err := c.checkHead(string(c.line)); err != nil {
				return err
			}
		}
		if o != '\n' {
			continue
		}
		content := c.line[:len(c.line)-1]
		if n := len(content); n > 0 && content[n-1] == '\r' {
			content = content[:n-1]
		}
		if !c.headChecked {
			if err := c.checkHead(string(content[:min(len(content), 4)])); err != nil {
				return err
			}
		}
		c.replyLines++
		if c.replyLines > c.lim.MaxLines {
			return &ProtocolError{Reason: fmt.Sprintf("reply has more than %d lines", c.lim.MaxLines)}
		}
		if len(content) == 3 {
			c.ready = append(c.ready, content...)
			c.ready = append(c.ready, ' ')
			c.ready = append(c.ready, c.line[3:]...)
		} else {
			c.ready = append(c.ready, c.line...)
		}
		c.line = c.line[:0]
		c.headChecked = false
		switch {
		case !c.lastLine:
		case c.moreReplies > 0:
			// The next pipelined reply starts: its own limits.
			c.moreReplies--
			c.replyBytes, c.replyLines = 0, 0
		default:
			c.replyDone = true
		}
	}
	return nil
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
	c.replyCode, c.lastLine, c.headChecked = code, last, true
	return nil
}

func (c *wireConn) Write(p []byte) (int, error) { return c.write(p, 1) }

// writeGroup writes p, n pipelined commands, after which exactly n replies
// are due; each is checked against the limits on its own.
func (c *wireConn) writeGroup(p []byte, n int) (int, error) { return c.write(p, n) }

func (c *wireConn) write(p []byte, replies int) (int, error) {
	if c.desynced() {
		err := &ProtocolError{Reason: "unsolicited data from the server", Line: shorten(string(c.unsolicited)), Err: ErrUnexpectedData}
		if c.writeErr == nil {
			c.writeErr = err // nothing was sent: no possible duplicate
		}
		return 0, err
	}
	// Whatever is read after the commands is their replies, in order.
	c.replyBytes, c.replyLines, c.replyDone = 0, 0, false
	c.moreReplies = replies - 1
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
