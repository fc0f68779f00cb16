package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// demoServer is the demo's receiving MTA on loopback: a go-smtp server
// that greylists the first attempt of every (sender, recipient) pair,
// refuses one mailbox with 550 5.1.1, and keeps what it accepts.
type demoServer struct {
	srv     *smtp.Server
	ln      net.Listener
	clock   *fastClock
	unknown string        // the mailbox that does not exist
	window  time.Duration // greylisting window, on the demo clock

	mu       sync.Mutex
	seen     map[string]time.Time // greylisting: first attempt per sender and recipient
	received []demoMessage
}

// demoMessage is one message the server accepted.
type demoMessage struct {
	From string
	To   []string
	Data []byte
}

func startDemoServer(clock *fastClock, unknown string) (*demoServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &demoServer{ln: ln, clock: clock, unknown: unknown, window: 5 * time.Second, seen: make(map[string]time.Time)}
	s.srv = smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		return &demoSession{s: s}, nil
	}))
	s.srv.Domain = "mx.demo.example"
	s.srv.ReadTimeout = time.Minute
	s.srv.WriteTimeout = time.Minute
	s.srv.MaxMessageBytes = 10 << 20
	go s.srv.Serve(ln)
	return s, nil
}

// Addr returns "127.0.0.1:port".
func (s *demoServer) Addr() string { return s.ln.Addr().String() }

// Close stops the server and its connections.
func (s *demoServer) Close() error { return s.srv.Close() }

// Received returns the messages accepted so far.
func (s *demoServer) Received() []demoMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]demoMessage(nil), s.received...)
}

// rcpt decides a RCPT: unknown mailbox, greylisted, or accepted.
func (s *demoServer) rcpt(from, to string) error {
	if strings.EqualFold(to, s.unknown) {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: fmt.Sprintf("<%s>: no such user here", to)}
	}
	key := strings.ToLower(from + "\x00" + to)
	now := s.clock.Now()
	s.mu.Lock()
	first, ok := s.seen[key]
	if !ok {
		s.seen[key] = now
		first = now
	}
	s.mu.Unlock()
	if now.Sub(first) < s.window {
		return &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 2, 0}, Message: "greylisted, try again in 5 seconds"}
	}
	return nil
}

type demoSession struct {
	s    *demoServer
	from string
	to   []string
}

func (d *demoSession) Reset()        { d.from, d.to = "", nil }
func (d *demoSession) Logout() error { return nil }

func (d *demoSession) Mail(from string, _ *smtp.MailOptions) error {
	d.from, d.to = from, nil
	return nil
}

func (d *demoSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if err := d.s.rcpt(d.from, to); err != nil {
		return err
	}
	d.to = append(d.to, to)
	return nil
}

func (d *demoSession) Data(r io.Reader) error {
	b, err := io.ReadAll(io.LimitReader(r, 10<<20))
	if err != nil {
		return err
	}
	if len(d.to) == 0 {
		return errors.New("no recipients")
	}
	d.s.mu.Lock()
	d.s.received = append(d.s.received, demoMessage{From: d.from, To: append([]string(nil), d.to...), Data: b})
	d.s.mu.Unlock()
	return nil
}
