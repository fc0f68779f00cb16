package deliverytest

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/textproto"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// dial connects a go-smtp client and says EHLO.
func dial(t *testing.T, addr string) *smtp.Client {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Hello("client.example"); err != nil {
		t.Fatalf("EHLO: %v", err)
	}
	return c
}

// send runs one transaction and returns the error of the first step that
// failed.
func send(c *smtp.Client, from string, to []string, body string) error {
	if err := c.Mail(from, nil); err != nil {
		return err
	}
	for _, rcpt := range to {
		if err := c.Rcpt(rcpt, nil); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := io.WriteString(w, body); err != nil {
		return err
	}
	return w.Close()
}

// wantSMTPError checks that err is an *smtp.SMTPError with code and enh.
func wantSMTPError(t *testing.T, err error, code int, enh smtp.EnhancedCode) {
	t.Helper()
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		t.Fatalf("got error %v, want SMTP error %d", err, code)
	}
	if se.Code != code || se.EnhancedCode != enh {
		t.Fatalf("got %d %v %q, want %d %v", se.Code, se.EnhancedCode, se.Message, code, enh)
	}
}

func commandStrings(cmds []Command) []string {
	var s []string
	for _, c := range cmds {
		s = append(s, c.String())
	}
	return s
}

func TestServerAcceptsAndRecordsExactBytes(t *testing.T) {
	s := NewServer(t, nil)
	conn, err := net.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tc := textproto.NewConn(conn)
	steps := []struct {
		send string
		code int
	}{
		{"", 220},
		{"EHLO client.example", 250},
		{"MAIL FROM:<a@example.org>", 250},
		{"RCPT TO:<b@example.com>", 250},
		{"RCPT TO:<c@example.com>", 250},
		{"DATA", 354},
		// Bare LF, bare CR and a dot-stuffed line must reach Data as sent,
		// the stuffing dot removed.
		{"Subject: x\r\n\r\nbare\nlf\rcr\r\n..dot\r\n.", 250},
		{"QUIT", 221},
	}
	for _, st := range steps {
		if st.send != "" {
			if err := tc.PrintfLine("%s", st.send); err != nil {
				t.Fatal(err)
			}
		}
		if _, _, err := tc.ReadResponse(st.code); err != nil {
			t.Fatalf("after %q: %v", st.send, err)
		}
	}
	msgs, err := s.WaitMessages(t.Context(), 1)
	if err != nil {
		t.Fatal(err)
	}
	m := msgs[0]
	if want := "Subject: x\r\n\r\nbare\nlf\rcr\r\n.dot\r\n"; string(m.Data) != want {
		t.Errorf("Data = %q, want %q", m.Data, want)
	}
	if m.From != "a@example.org" || !slices.Equal(m.To, []string{"b@example.com", "c@example.com"}) ||
		m.Helo != "client.example" || m.Session != 1 || m.TLS || len(m.RcptOptions) != 2 {
		t.Errorf("envelope = %+v", m)
	}
	want := []string{"MAIL <a@example.org> 250", "RCPT <b@example.com> 250", "RCPT <c@example.com> 250", "DATA 250"}
	if got := commandStrings(s.Commands()); !slices.Equal(got, want) {
		t.Errorf("Commands = %q, want %q", got, want)
	}
	if err := s.WaitIdle(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := s.Sessions(); n != 1 {
		t.Errorf("Sessions = %d, want 1", n)
	}
}

func TestServerRejectHelpers(t *testing.T) {
	s := NewServer(t, &Script{
		Mail: func(from string, _ *smtp.MailOptions) error {
			if from == "spammer@example.org" {
				return &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "no"}
			}
			return nil
		},
		Rcpt: RejectRcpt(550, smtp.EnhancedCode{5, 1, 1}, "No such user", "gone@example.com"),
	})
	c := dial(t, s.Addr)
	wantSMTPError(t, send(c, "spammer@example.org", nil, ""), 553, smtp.EnhancedCode{5, 7, 1})
	if err := c.Mail("a@example.org", nil); err != nil {
		t.Fatal(err)
	}
	wantSMTPError(t, c.Rcpt("gone@example.com", nil), 550, smtp.EnhancedCode{5, 1, 1})
	if err := c.Rcpt("here@example.com", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Reset(); err != nil {
		t.Fatal(err)
	}
	want := []string{"MAIL <spammer@example.org> 553", "MAIL <a@example.org> 250",
		"RCPT <gone@example.com> 550", "RCPT <here@example.com> 250"}
	if got := commandStrings(s.Commands()); !slices.Equal(got, want) {
		t.Errorf("Commands = %q, want %q", got, want)
	}
	if len(s.Messages()) != 0 {
		t.Errorf("Messages = %v, want none", s.Messages())
	}

	s2 := NewServer(t, &Script{Data: RejectData(554, smtp.EnhancedCode{5, 6, 0}, "content rejected")})
	wantSMTPError(t, send(dial(t, s2.Addr), "a@example.org", []string{"b@example.com"}, "x\r\n"), 554, smtp.EnhancedCode{5, 6, 0})
	s3 := NewServer(t, &Script{Mail: RejectMail(451, smtp.EnhancedCode{4, 3, 0}, "busy")})
	wantSMTPError(t, dial(t, s3.Addr).Mail("a@example.org", nil), 451, smtp.EnhancedCode{4, 3, 0})
}

func TestServerGreylist(t *testing.T) {
	s := NewServer(t, &Script{Greylist: 1})
	to := []string{"b@example.com"}
	wantSMTPError(t, send(dial(t, s.Addr), "a@example.org", to, "x\r\n"), 450, smtp.EnhancedCode{4, 2, 0})
	// Another sender is a different triplet, so it is greylisted too.
	wantSMTPError(t, send(dial(t, s.Addr), "z@example.org", to, "x\r\n"), 450, smtp.EnhancedCode{4, 2, 0})
	if err := send(dial(t, s.Addr), "a@example.org", to, "x\r\n"); err != nil {
		t.Fatalf("second attempt: %v", err)
	}
	if n := len(s.Messages()); n != 1 {
		t.Errorf("%d messages, want 1", n)
	}
	if n := s.Sessions(); n != 3 {
		t.Errorf("Sessions = %d, want 3", n)
	}
}

func TestServer421ClosesConnection(t *testing.T) {
	s := NewServer(t, &Script{
		Rcpt: RejectRcpt(421, smtp.EnhancedCode{4, 3, 2}, "shutting down"),
	})
	c := dial(t, s.Addr)
	if err := c.Mail("a@example.org", nil); err != nil {
		t.Fatal(err)
	}
	wantSMTPError(t, c.Rcpt("b@example.com", nil), 421, smtp.EnhancedCode{4, 3, 2})
	if err := s.WaitIdle(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := c.Noop(); err == nil {
		t.Error("NOOP after 421 succeeded; the connection should be closed")
	}
}

func TestServerDropAfterDot(t *testing.T) {
	s := NewServer(t, &Script{Data: func(string, []string, []byte) error { return ErrDrop }})
	err := send(dial(t, s.Addr), "a@example.org", []string{"b@example.com"}, "x\r\n")
	var se *smtp.SMTPError
	if err == nil || errors.As(err, &se) {
		t.Fatalf("got %v, want a transport error (no reply)", err)
	}
	if got := commandStrings(s.Commands()); !slices.Equal(got[2:], []string{"DATA 0"}) {
		t.Errorf("Commands = %q", got)
	}
	if len(s.Messages()) != 0 {
		t.Error("a dropped message was recorded as accepted")
	}
}

func TestServerStartTLSAndAuth(t *testing.T) {
	cfg, roots := TLSConfig(t)
	s := NewServer(t, &Script{
		TLSConfig: cfg, EnableREQUIRETLS: true,
		AuthUser: "u", AuthPassword: "p", AuthRequiresTLS: true,
	})
	if ok, _ := dial(t, s.Addr).Extension("AUTH"); ok {
		t.Error("AUTH offered before STARTTLS despite AuthRequiresTLS")
	}
	c, err := smtp.DialStartTLS(s.Addr, &tls.Config{RootCAs: roots, ServerName: "localhost"})
	if err != nil {
		t.Fatalf("STARTTLS: %v", err)
	}
	defer c.Close()
	if ok, _ := c.Extension("REQUIRETLS"); !ok {
		t.Error("REQUIRETLS not offered after STARTTLS")
	}
	wantSMTPError(t, c.Auth(sasl.NewPlainClient("", "u", "wrong")), 535, smtp.EnhancedCode{5, 7, 8})
	if err := c.Auth(sasl.NewPlainClient("", "u", "p")); err != nil {
		t.Fatalf("AUTH: %v", err)
	}
	if err := send(c, "a@example.org", []string{"b@example.com"}, "x\r\n"); err != nil {
		t.Fatal(err)
	}
	m := s.Messages()[0]
	if !m.TLS || m.AuthUser != "u" {
		t.Errorf("TLS = %v, AuthUser = %q; want true, u", m.TLS, m.AuthUser)
	}
}

func TestServerImplicitTLS(t *testing.T) {
	cfg, roots := TLSConfig(t)
	s := NewServer(t, &Script{TLSConfig: cfg, ImplicitTLS: true})
	c, err := smtp.DialTLS(s.Addr, &tls.Config{RootCAs: roots, ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if ok, _ := c.Extension("STARTTLS"); ok {
		t.Error("STARTTLS offered inside implicit TLS")
	}
	if err := send(c, "a@example.org", []string{"b@example.com"}, "x\r\n"); err != nil {
		t.Fatal(err)
	}
	if m := s.Messages(); len(m) != 1 || !m[0].TLS || m[0].Session != 1 {
		t.Errorf("messages %+v, want one over TLS on session 1", m)
	}
}

func TestServerLimitsAndDSN(t *testing.T) {
	s := NewServer(t, &Script{MaxMessageBytes: 10, MaxRecipients: 1, EnableDSN: true})
	c := dial(t, s.Addr)
	if size, ok := c.MaxMessageSize(); !ok || size != 10 {
		t.Errorf("SIZE = %d, %v; want 10", size, ok)
	}
	err := c.Mail("a@example.org", &smtp.MailOptions{Return: smtp.DSNReturnHeaders, EnvelopeID: "id1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("b@example.com", &smtp.RcptOptions{Notify: []smtp.DSNNotify{smtp.DSNNotifyFailure}}); err != nil {
		t.Fatal(err)
	}
	wantSMTPError(t, c.Rcpt("c@example.com", nil), 452, smtp.EnhancedCode{4, 5, 3})
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, "0123456789abcdef\r\n")
	wantSMTPError(t, w.Close(), 552, smtp.EnhancedCode{5, 3, 4})

	if err := send(c, "a@example.org", []string{"b@example.com"}, "ok\r\n"); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("a@example.org", &smtp.MailOptions{Return: smtp.DSNReturnHeaders, EnvelopeID: "id1"}); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("b@example.com", &smtp.RcptOptions{Notify: []smtp.DSNNotify{smtp.DSNNotifyFailure}}); err != nil {
		t.Fatal(err)
	}
	w, _ = c.Data()
	io.WriteString(w, "ok\r\n")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	msgs := s.Messages()
	if len(msgs) != 2 {
		t.Fatalf("%d messages, want 2", len(msgs))
	}
	m := msgs[1]
	if m.MailOptions.Return != smtp.DSNReturnHeaders || m.MailOptions.EnvelopeID != "id1" ||
		!slices.Equal(m.RcptOptions[0].Notify, []smtp.DSNNotify{smtp.DSNNotifyFailure}) {
		t.Errorf("DSN parameters not recorded: %+v %+v", m.MailOptions, m.RcptOptions)
	}
	if msgs[0].MailOptions.EnvelopeID != "" {
		t.Errorf("options leaked between transactions: %+v", msgs[0].MailOptions)
	}
}

func TestServerHelloHook(t *testing.T) {
	s := NewServer(t, &Script{Hello: func(domain string) error {
		if domain == "bad.example" {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "go away"}
		}
		return nil
	}})
	c, err := smtp.Dial(s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	wantSMTPError(t, c.Hello("bad.example"), 550, smtp.EnhancedCode{5, 7, 1})
}

func TestServerStallAndConcurrentClients(t *testing.T) {
	entered := make(chan struct{}, 4)
	release := make(chan struct{})
	s := NewServer(t, &Script{Data: func(string, []string, []byte) error {
		entered <- struct{}{}
		<-release
		return nil
	}})
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			c, err := smtp.Dial(s.Addr)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			errs <- send(c, "a@example.org", []string{"b@example.com"}, "x\r\n")
		})
	}
	for range 4 {
		<-entered // all four clients are now waiting for the reply to their dot
	}
	if n := len(s.Messages()); n != 0 {
		t.Fatalf("%d messages recorded while stalled", n)
	}
	close(release)
	if _, err := s.WaitMessages(t.Context(), 4); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if n := s.Sessions(); n != 4 {
		t.Errorf("Sessions = %d, want 4", n)
	}
}

func TestServerWaitHonoursContext(t *testing.T) {
	s := NewServer(t, nil)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := s.WaitMessages(ctx, 1); !errors.Is(err, context.Canceled) {
		t.Errorf("WaitMessages = %v, want context.Canceled", err)
	}
	if err := s.WaitSessions(ctx, 1); !errors.Is(err, context.Canceled) {
		t.Errorf("WaitSessions = %v, want context.Canceled", err)
	}
}

func TestServerCloseEndsConnections(t *testing.T) {
	s := NewServer(t, nil)
	conn, err := net.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	if line, _ := r.ReadString('\n'); !strings.HasPrefix(line, "220 localhost ") {
		t.Fatalf("greeting %q", line)
	}
	s.Close()
	s.Close()
	if _, err := r.ReadString('\n'); err == nil {
		t.Error("connection still open after Close")
	}
	if _, err := net.Dial("tcp", s.Addr); err == nil {
		t.Error("still listening after Close")
	}
}

func TestFailFirst(t *testing.T) {
	e := errors.New("x")
	f := FailFirst(2, e)
	got := []error{f(), f(), f(), f()}
	if !slices.Equal(got, []error{e, e, nil, nil}) {
		t.Errorf("FailFirst(2) = %v", got)
	}
}
