package deliverytest

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
)

// maxLine bounds ReadLine, so that a client bug cannot exhaust memory.
const maxLine = 1 << 20

// RawServer is a TCP server on 127.0.0.1 whose every connection is handled by
// a test-supplied function speaking SMTP line by line through a [RawConn]. Use
// it for peers go-smtp's server cannot imitate. Its methods are safe for
// concurrent use.
type RawServer struct {
	tb     testing.TB
	ln     net.Listener
	handle func(*RawConn)
	done   chan struct{} // closed by Close
	wg     sync.WaitGroup

	notifier // guards the fields below
	closed   bool
	sessions int
	finished int
	conns    map[*RawConn]struct{}
	messages []Received
}

// NewRawServer starts a server on 127.0.0.1 with an ephemeral port that runs
// handle in a new goroutine for each connection, and closes the connection
// when handle returns. It is closed by tb.Cleanup, or earlier by
// [RawServer.Close].
//
// handle may report failures with tb.Errorf (never tb.Fatal, which must run
// on the test's goroutine). When it needs to stall, it should wait with
// [RawConn.Block] or on [RawConn.Done], so that closing the server ends it.
func NewRawServer(tb testing.TB, handle func(c *RawConn)) *RawServer {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("deliverytest: listen: %v", err)
	}
	s := &RawServer{
		tb:     tb,
		ln:     ln,
		handle: handle,
		done:   make(chan struct{}),
		conns:  make(map[*RawConn]struct{}),
	}
	s.wg.Add(1)
	go s.serve()
	tb.Cleanup(s.Close)
	return s
}

func (s *RawServer) serve() {
	defer s.wg.Done()
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			return // closed; loopback Accept has no temporary errors worth retrying
		}
		c := &RawConn{tb: s.tb, s: s, conn: nc, r: bufio.NewReader(nc)}
		ok := true
		s.update(func() {
			if s.closed {
				ok = false
				return
			}
			s.sessions++
			c.n = s.sessions
			s.conns[c] = struct{}{}
			s.wg.Add(1)
		})
		if !ok {
			nc.Close()
			return
		}
		go func() {
			defer s.wg.Done()
			defer s.update(func() {
				delete(s.conns, c)
				s.finished++
			})
			defer c.Close()
			s.handle(c)
		}()
	}
}

// Addr returns the address to dial, "127.0.0.1:port".
func (s *RawServer) Addr() string { return s.ln.Addr().String() }

// Sessions returns the number of connections accepted so far.
func (s *RawServer) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions
}

// Messages returns the messages received so far by [RawConn.Serve].
func (s *RawServer) Messages() []Received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Received(nil), s.messages...)
}

// WaitSessions waits until at least n connections have been accepted.
func (s *RawServer) WaitSessions(ctx context.Context, n int) error {
	return s.wait(ctx, fmt.Sprintf("%d sessions", n), func() bool { return s.sessions >= n })
}

// WaitHandled waits until the handler has returned for at least n
// connections. After it returns, whatever those handlers recorded or
// reported is visible to the caller.
func (s *RawServer) WaitHandled(ctx context.Context, n int) error {
	return s.wait(ctx, fmt.Sprintf("%d handled sessions", n), func() bool { return s.finished >= n })
}

// WaitMessages waits until [RawConn.Serve] has received at least n messages
// and returns them all, or returns ctx's error.
func (s *RawServer) WaitMessages(ctx context.Context, n int) ([]Received, error) {
	var msgs []Received
	err := s.wait(ctx, fmt.Sprintf("%d messages", n), func() bool {
		msgs = append([]Received(nil), s.messages...)
		return len(msgs) >= n
	})
	return msgs, err
}

// Close stops accepting, closes every connection, releases handlers
// waiting in [RawConn.Block], and waits for all handlers to return. It may be
// called more than once.
func (s *RawServer) Close() {
	var conns []*RawConn
	s.update(func() {
		if s.closed {
			return
		}
		s.closed = true
		close(s.done)
		for c := range s.conns {
			conns = append(conns, c)
		}
	})
	s.ln.Close()
	for _, c := range conns {
		c.Close()
	}
	s.wg.Wait()
}

// RawConn is one connection to a [RawServer], seen from the server side.
// Its methods are meant for the handler's goroutine, except Close.
type RawConn struct {
	tb   testing.TB
	s    *RawServer
	n    int
	helo string

	mu   sync.Mutex // guards conn against Close from another goroutine
	conn net.Conn
	r    *bufio.Reader
}

// Session returns the 1-based number of this connection on its server.
func (c *RawConn) Session() int { return c.n }

// Raw returns the connection, a *tls.Conn after [RawConn.StartTLS]. Write to
// it to send bytes that are not whole lines.
func (c *RawConn) Raw() net.Conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conn
}

// Close closes the connection. It is safe to call from any goroutine and
// more than once.
func (c *RawConn) Close() error { return c.Raw().Close() }

// Done returns a channel closed when the server is closing.
func (c *RawConn) Done() <-chan struct{} { return c.s.done }

// Block waits until release is closed (or receives) and reports true, or
// until the server is closing and reports false. Handlers stall with it:
//
//	c.Expect("DATA") // then never answer until the test says so
//	c.Block(release)
func (c *RawConn) Block(release <-chan struct{}) bool {
	select {
	case <-release:
		return true
	case <-c.s.done:
		return false
	}
}

// Reply writes each line followed by CRLF, all in one write. Lines are sent
// as given, so a test can send multi-line replies with the code on every
// line, replies without a code, or garbage.
func (c *RawConn) Reply(lines ...string) error {
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l)
		b.WriteString("\r\n")
	}
	_, err := io.WriteString(c.Raw(), b.String())
	return err
}

// ReadLine reads one line and returns it without its line ending (CRLF or
// bare LF). It returns io.EOF when the client closed the connection cleanly.
func (c *RawConn) ReadLine() (string, error) {
	var line []byte
	for {
		chunk, err := c.r.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > maxLine {
			return "", fmt.Errorf("deliverytest: line longer than %d bytes", maxLine)
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			if err == io.EOF && len(line) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return "", err
		}
		line = line[:len(line)-1]
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		return string(line), nil
	}
}

// Expect reads a line and checks that it starts with prefix, ignoring case
// (e.g. "MAIL FROM:<a@example.org>" or just "RCPT"). On a mismatch or a read
// error it reports the failure with tb.Errorf and returns ok false; a read
// error caused by closing the server is not reported.
func (c *RawConn) Expect(prefix string) (line string, ok bool) {
	c.tb.Helper()
	line, err := c.ReadLine()
	if err != nil {
		select {
		case <-c.s.done:
			return "", false // the test closed the server; not the client's fault
		default:
		}
		c.tb.Errorf("deliverytest: session %d: want %q, got error %v", c.n, prefix, err)
		return "", false
	}
	if len(line) < len(prefix) || !strings.EqualFold(line[:len(prefix)], prefix) {
		c.tb.Errorf("deliverytest: session %d: want %q, got %q", c.n, prefix, line)
		return line, false
	}
	return line, true
}

// ReadData reads a message after the 354 reply, up to and excluding the
// CRLF.CRLF terminator, in the form [Received].Data has: a leading dot
// removed from each line that has one (RFC 5321 §4.5.2), all other bytes as
// sent, bare LF and CR included, and the final CRLF kept. Only CRLF.CRLF
// ends it (RFC 5321 §4.1.1.4), not LF.LF.
func (c *RawConn) ReadData() ([]byte, error) {
	var out []byte
	// bol: at the beginning of a line (after CRLF, or at the start).
	// dot: bol was followed by a dot that is held back.
	bol, dot, cr := true, false, false
	for {
		b, err := c.r.ReadByte()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return out, err
		}
		switch {
		case dot && cr && b == '\n':
			return out, nil // ".\r\n" at the beginning of a line
		case dot && !cr && b == '\r':
			cr = true
			continue
		case dot:
			// A stuffed dot: drop it and keep what follows.
			if cr {
				out = append(out, '\r')
			}
			dot, cr, bol = false, false, false
		case bol && b == '.':
			dot = true
			continue
		}
		out = append(out, b)
		bol = b == '\n' && len(out) >= 2 && out[len(out)-2] == '\r'
	}
}

// StartTLS upgrades the connection with cfg (see [TLSConfig]) after the
// handler has replied 220 to STARTTLS. It fails, without a handshake, if the
// client had already sent bytes after its STARTTLS command: RFC 3207 §5 says
// a client must wait for the reply, and a server must not treat such bytes as
// part of the TLS session (the "STARTTLS command injection" flaw).
func (c *RawConn) StartTLS(cfg *tls.Config) error {
	if n := c.r.Buffered(); n > 0 {
		return fmt.Errorf("deliverytest: client sent %d bytes after STARTTLS before the handshake", n)
	}
	c.mu.Lock()
	tc := tls.Server(c.conn, cfg)
	c.conn = tc
	c.mu.Unlock()
	if err := tc.Handshake(); err != nil {
		return err
	}
	c.r = bufio.NewReader(tc)
	return nil
}

// TLS reports whether [RawConn.StartTLS] has succeeded on this connection.
func (c *RawConn) TLS() bool {
	_, ok := c.Raw().(*tls.Conn)
	return ok
}
