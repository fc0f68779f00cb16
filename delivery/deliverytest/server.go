package deliverytest

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"

	"github.com/emersion/go-smtp"
)

// Server is a go-smtp server on 127.0.0.1 answering as its [Script] says.
// It records every connection, envelope command and accepted message. Its
// methods are safe for concurrent use.
type Server struct {
	// Addr is the address to dial, "127.0.0.1:port".
	Addr string

	tb        testing.TB
	script    Script
	smtp      *smtp.Server
	ln        net.Listener
	serveDone chan struct{}

	notifier // guards the fields below
	closed   bool
	sessions int
	open     map[*countedConn]struct{}
	messages []Received
	commands []Command
	grey     map[[2]string]int
}

// Received is a message the server accepted with a 250 after the final dot.
type Received struct {
	Session     int    // 1-based number of the connection it came on
	Helo        string // the EHLO or HELO argument
	TLS         bool   // it came after STARTTLS
	AuthUser    string // the user of a successful AUTH, or ""
	From        string // reverse-path, "" for the null sender
	MailOptions smtp.MailOptions
	To          []string           // accepted recipients, in RCPT order
	RcptOptions []smtp.RcptOptions // parallel to To
	// Data is the message as received: dot-unstuffed, otherwise exactly the
	// bytes the client sent before CRLF.CRLF, including the final CRLF.
	Data []byte
}

// Command is one envelope command the server answered, in the order seen.
// RCPTs that go-smtp answers itself (MaxRecipients, malformed parameters)
// are not recorded.
type Command struct {
	Session int    // 1-based number of the connection
	Verb    string // "MAIL", "RCPT" or "DATA" (DATA: the message reached its final dot)
	Arg     string // the address of MAIL or RCPT; "" for the null sender and for DATA
	Code    int    // the reply code sent; 0 when the server dropped the connection instead
}

// String formats c as "MAIL <a@example.org> 250", "RCPT <b@example.com> 450"
// or "DATA 250".
func (c Command) String() string {
	if c.Verb == "DATA" {
		return "DATA " + strconv.Itoa(c.Code)
	}
	return c.Verb + " <" + c.Arg + "> " + strconv.Itoa(c.Code)
}

// NewServer starts a go-smtp server on 127.0.0.1 with an ephemeral port,
// answering as script says (nil accepts everything). It is closed by
// tb.Cleanup, or earlier by [Server.Close].
func NewServer(tb testing.TB, script *Script) *Server {
	tb.Helper()
	var sc Script
	if script != nil {
		sc = *script
	}
	if sc.Domain == "" {
		sc.Domain = "localhost"
	}
	if sc.ImplicitTLS && sc.TLSConfig == nil {
		tb.Fatal("deliverytest: Script.ImplicitTLS needs a TLSConfig")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("deliverytest: listen: %v", err)
	}
	s := &Server{
		Addr:      ln.Addr().String(),
		tb:        tb,
		script:    sc,
		ln:        ln,
		serveDone: make(chan struct{}),
		open:      make(map[*countedConn]struct{}),
		grey:      make(map[[2]string]int),
	}
	srv := smtp.NewServer(smtp.BackendFunc(s.newSession))
	srv.Domain = sc.Domain
	srv.TLSConfig = sc.TLSConfig
	srv.EnableDSN = sc.EnableDSN
	srv.EnableSMTPUTF8 = sc.EnableSMTPUTF8
	srv.EnableREQUIRETLS = sc.EnableREQUIRETLS
	srv.MaxMessageBytes = sc.MaxMessageBytes
	srv.MaxRecipients = sc.MaxRecipients
	srv.AllowInsecureAuth = !sc.AuthRequiresTLS
	srv.Debug = sc.Debug
	srv.ErrorLog = serverLog{s}
	s.smtp = srv
	go func() {
		defer close(s.serveDone)
		var l net.Listener = &countingListener{ln, s}
		if sc.ImplicitTLS {
			l = tls.NewListener(l, sc.TLSConfig)
		}
		if err := srv.Serve(l); err != nil {
			s.logf("deliverytest: serve: %v", err)
		}
	}()
	tb.Cleanup(s.Close)
	return s
}

// Close stops the server: it closes the listener and every open connection,
// without replies. Hooks still blocked keep their goroutine until they
// return. Close may be called more than once.
func (s *Server) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	conns := make([]net.Conn, 0, len(s.open))
	for c := range s.open {
		conns = append(conns, c.Conn)
	}
	s.mu.Unlock()
	s.smtp.Close()
	s.ln.Close() // in case Serve had not registered it yet
	for _, c := range conns {
		c.Close()
	}
	<-s.serveDone
}

// Messages returns the messages accepted so far, in order of acceptance.
func (s *Server) Messages() []Received {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Received(nil), s.messages...)
}

// Commands returns the MAIL, RCPT and DATA commands answered so far.
func (s *Server) Commands() []Command {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Command(nil), s.commands...)
}

// Sessions returns the number of connections accepted so far.
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions
}

// WaitMessages waits until at least n messages have been accepted and
// returns them all, or returns ctx's error with what it was waiting for.
func (s *Server) WaitMessages(ctx context.Context, n int) ([]Received, error) {
	var msgs []Received
	err := s.wait(ctx, fmt.Sprintf("%d messages", n), func() bool {
		msgs = append([]Received(nil), s.messages...)
		return len(msgs) >= n
	})
	return msgs, err
}

// WaitCommands waits until at least n commands have been answered and
// returns them all, or returns ctx's error.
func (s *Server) WaitCommands(ctx context.Context, n int) ([]Command, error) {
	var cmds []Command
	err := s.wait(ctx, fmt.Sprintf("%d commands", n), func() bool {
		cmds = append([]Command(nil), s.commands...)
		return len(cmds) >= n
	})
	return cmds, err
}

// WaitSessions waits until at least n connections have been accepted.
func (s *Server) WaitSessions(ctx context.Context, n int) error {
	return s.wait(ctx, fmt.Sprintf("%d sessions", n), func() bool { return s.sessions >= n })
}

// WaitIdle waits until every connection accepted so far has been closed, by
// either side. Use it to check that a client hung up (after QUIT, or after a
// 421) before asserting on what the server saw.
func (s *Server) WaitIdle(ctx context.Context) error {
	return s.wait(ctx, "all connections closed", func() bool { return len(s.open) == 0 })
}

// logf logs through tb unless the server is closed, so that a late
// connection goroutine never logs after the test has ended.
func (s *Server) logf(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.tb.Logf(format, args...)
	}
}

// serverLog is go-smtp's ErrorLog, sent to the test log.
type serverLog struct{ s *Server }

func (l serverLog) Printf(format string, v ...any) { l.s.logf("smtp server: "+format, v...) }
func (l serverLog) Println(v ...any)               { l.s.logf("smtp server: %s", fmt.Sprint(v...)) }

// countingListener numbers and tracks accepted connections.
type countingListener struct {
	net.Listener
	s *Server
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	cc := &countedConn{Conn: c, s: l.s}
	l.s.update(func() {
		l.s.sessions++
		cc.n = l.s.sessions
		l.s.open[cc] = struct{}{}
	})
	return cc, nil
}

// countedConn removes itself from the open set when closed.
type countedConn struct {
	net.Conn
	s    *Server
	n    int
	once sync.Once
}

func (c *countedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.s.update(func() { delete(c.s.open, c) }) })
	return err
}
