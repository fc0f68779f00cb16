package deliverytest

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-smtp"
)

// errorsTB records Errorf calls instead of failing the test, to check that a
// helper reports a failure.
type errorsTB struct {
	testing.TB
	mu   sync.Mutex
	errs []string
}

func (tb *errorsTB) Errorf(format string, args ...any) {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	tb.errs = append(tb.errs, format)
}

func (tb *errorsTB) count() int {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return len(tb.errs)
}

func TestRawMultilineGreetingNoExtensionsServe(t *testing.T) {
	s := NewRawServer(t, func(c *RawConn) {
		c.Reply("220-localhost first line", "220-second line", "220 third line")
		if !c.HandleEHLO() {
			return
		}
		if err := c.Serve(); err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	c := dial(t, s.Addr())
	for _, ext := range []string{"8BITMIME", "PIPELINING", "SIZE", "ENHANCEDSTATUSCODES"} {
		if ok, _ := c.Extension(ext); ok {
			t.Errorf("%s advertised", ext)
		}
	}
	if err := send(c, "a@example.org", []string{"b@example.com"}, "Subject: x\r\n\r\n.hi\r\n"); err != nil {
		t.Fatal(err)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
	msgs, err := s.WaitMessages(t.Context(), 1)
	if err != nil {
		t.Fatal(err)
	}
	m := msgs[0]
	if m.From != "a@example.org" || !slices.Equal(m.To, []string{"b@example.com"}) ||
		string(m.Data) != "Subject: x\r\n\r\n.hi\r\n" || m.Helo != "client.example" || m.Session != 1 {
		t.Errorf("got %+v", m)
	}
	if err := s.WaitHandled(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
}

func TestRawGreeting421(t *testing.T) {
	s := NewRawServer(t, func(c *RawConn) {
		c.Reply("421 4.3.2 too busy, go away")
	})
	c, err := smtp.Dial(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	wantSMTPError(t, c.Hello("client.example"), 421, smtp.EnhancedCode{4, 3, 2})
}

func TestRawDropAfterDot(t *testing.T) {
	data := make(chan []byte, 1)
	s := NewRawServer(t, func(c *RawConn) {
		c.Greet()
		c.HandleEHLO("8BITMIME")
		for _, cmd := range []string{"MAIL FROM:<a@example.org>", "RCPT TO:<b@example.com>"} {
			if _, ok := c.Expect(cmd); !ok {
				return
			}
			c.Reply("250 ok")
		}
		c.Expect("DATA")
		c.Reply("354 go on")
		d, err := c.ReadData()
		if err != nil {
			t.Errorf("ReadData: %v", err)
		}
		data <- d
		// Returning closes the connection: no reply to the dot.
	})
	err := send(dial(t, s.Addr()), "a@example.org", []string{"b@example.com"}, "x\r\n")
	var se *smtp.SMTPError
	if err == nil || errors.As(err, &se) {
		t.Fatalf("got %v, want a transport error", err)
	}
	if got := <-data; string(got) != "x\r\n" {
		t.Errorf("data = %q", got)
	}
}

func TestRawBlockReleasedByClose(t *testing.T) {
	blocked := make(chan bool, 1)
	never := make(chan struct{})
	s := NewRawServer(t, func(c *RawConn) {
		c.Greet()
		blocked <- c.Block(never)
	})
	conn, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if line, _ := bufio.NewReader(conn).ReadString('\n'); line != "220 localhost ESMTP deliverytest\r\n" {
		t.Fatalf("greeting %q", line)
	}
	s.Close() // must not hang on the blocked handler
	if <-blocked {
		t.Error("Block reported a release, want false on Close")
	}
	if n := s.Sessions(); n != 1 {
		t.Errorf("Sessions = %d, want 1", n)
	}
}

func TestRawStartTLS(t *testing.T) {
	cfg, roots := TLSConfig(t)
	s := NewRawServer(t, func(c *RawConn) {
		c.Greet()
		c.HandleEHLO("STARTTLS")
		c.Expect("STARTTLS")
		c.Reply("220 2.0.0 go ahead")
		if err := c.StartTLS(cfg); err != nil {
			t.Errorf("StartTLS: %v", err)
			return
		}
		c.Serve("ENHANCEDSTATUSCODES")
	})
	c, err := smtp.DialStartTLS(s.Addr(), &tls.Config{RootCAs: roots, ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := send(c, "a@example.org", []string{"b@example.com"}, "x\r\n"); err != nil {
		t.Fatal(err)
	}
	if m := s.Messages(); len(m) != 1 || !m[0].TLS {
		t.Errorf("messages %+v, want one over TLS", m)
	}
}

func TestRawStartTLSRefusesPipelinedPlaintext(t *testing.T) {
	cfg, _ := TLSConfig(t)
	errc := make(chan error, 1)
	s := NewRawServer(t, func(c *RawConn) {
		c.Expect("STARTTLS")
		c.Reply("220 go ahead")
		errc <- c.StartTLS(cfg)
	})
	conn, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "STARTTLS\r\nRSET\r\n") // injected command in one segment
	if err := <-errc; err == nil || !strings.Contains(err.Error(), "after STARTTLS") {
		t.Errorf("StartTLS = %v, want the injection reported", err)
	}
}

func TestRawExpectReportsMismatch(t *testing.T) {
	tb := &errorsTB{TB: t}
	s := NewRawServer(tb, func(c *RawConn) {
		if line, ok := c.Expect("MAIL"); ok || line != "RCPT TO:<x@example.com>" {
			t.Errorf("Expect = %q, %v", line, ok)
		}
	})
	conn, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "RCPT TO:<x@example.com>\r\n")
	if err := s.WaitHandled(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	if n := tb.count(); n != 1 {
		t.Errorf("%d errors reported, want 1", n)
	}
}

func TestRawServeReportsUnofferedPipelining(t *testing.T) {
	tb := &errorsTB{TB: t}
	s := NewRawServer(tb, func(c *RawConn) {
		c.Greet()
		c.Serve("8BITMIME")
	})
	conn, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	r.ReadString('\n') // greeting
	io.WriteString(conn, "EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nQUIT\r\n")
	io.Copy(io.Discard, r)
	if err := s.WaitHandled(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	if n := tb.count(); n == 0 {
		t.Error("pipelined commands without PIPELINING were not reported")
	}
}

func TestReadData(t *testing.T) {
	tests := []struct{ wire, want string }{
		{".\r\n", ""},
		{"a\r\n.\r\n", "a\r\n"},
		{"..a\r\n..\r\n.\r\n", ".a\r\n.\r\n"},
		{"a\n.\nb\r\n.\r\n", "a\n.\nb\r\n"},    // LF.LF does not end the data
		{"a\r\n.x\r\n.\r\n", "a\r\nx\r\n"},     // a lone leading dot is removed
		{"a\r.\r\n\r\n.\r\n", "a\r.\r\n\r\n"},  // bare CR does not start a line
		{"\r\r\n.\r\n", "\r\r\n"},              // CR CR LF ends a line
		{"a\r\n.\rb\r\n.\r\n", "a\r\n\rb\r\n"}, // dot, CR, not LF
	}
	for _, tt := range tests {
		c := &RawConn{r: bufio.NewReader(strings.NewReader(tt.wire + "NEXT"))}
		got, err := c.ReadData()
		if err != nil || string(got) != tt.want {
			t.Errorf("ReadData(%q) = %q, %v; want %q", tt.wire, got, err, tt.want)
		}
		if rest, _ := io.ReadAll(c.r); string(rest) != "NEXT" {
			t.Errorf("ReadData(%q) left %q, want NEXT", tt.wire, rest)
		}
	}
	c := &RawConn{r: bufio.NewReader(strings.NewReader("a\r\n.."))}
	if _, err := c.ReadData(); err != io.ErrUnexpectedEOF {
		t.Errorf("truncated data: err = %v, want io.ErrUnexpectedEOF", err)
	}
}

// stuff dot-stuffs data (RFC 5321 §4.5.2) and appends the terminator.
func stuff(data []byte) []byte {
	var b bytes.Buffer
	bol := true
	for i, ch := range data {
		if bol && ch == '.' {
			b.WriteByte('.')
		}
		b.WriteByte(ch)
		bol = ch == '\n' && i > 0 && data[i-1] == '\r'
	}
	if len(data) > 0 && !bytes.HasSuffix(data, []byte("\r\n")) {
		b.WriteString("\r\n")
	}
	b.WriteString(".\r\n")
	return b.Bytes()
}

func FuzzReadData(f *testing.F) {
	for _, s := range []string{"", "a\r\n", ".\r\n", "..\r\n.x\r\n", "a\n.\nb", "\r\r\n.\r", "x"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// Any input: no panic, and no more bytes consumed than given.
		c := &RawConn{r: bufio.NewReader(bytes.NewReader(data))}
		c.ReadData()

		// Round trip: what a correct client stuffs comes back unchanged.
		want := data
		if len(data) > 0 && !bytes.HasSuffix(data, []byte("\r\n")) {
			want = append(slices.Clone(data), '\r', '\n')
		}
		c = &RawConn{r: bufio.NewReader(bytes.NewReader(stuff(data)))}
		got, err := c.ReadData()
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("ReadData(stuff(%q)) = %q, %v; want %q", data, got, err, want)
		}
	})
}
