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
