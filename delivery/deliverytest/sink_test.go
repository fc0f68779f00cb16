package deliverytest

import (
	"bufio"
	"net"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"
)

func TestSinkCountsSessionsAndMessages(t *testing.T) {
	s := StartSink(t)
	c := dial(t, s.Addr())
	for range 2 {
		if err := send(c, "a@example.org", []string{"b@example.com"}, "Subject: x\r\n\r\nhi\r\n"); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitCounters(t.Context(), 1, 2); err != nil {
		t.Fatal(err)
	}
	if sess, mesg := s.Counters(); sess != 1 || mesg != 2 {
		t.Errorf("Counters = %d, %d; want 1, 2", sess, mesg)
	}
}

func TestSinkSoftRejectRcpt(t *testing.T) {
	s := StartSink(t, "-r", "RCPT", "-b", "451 4.7.1 Try again later")
	c := dial(t, s.Addr())
	if ok, _ := c.Extension("PIPELINING"); ok {
		t.Error("PIPELINING advertised; -r should suppress it")
	}
	if err := c.Mail("a@example.org", nil); err != nil {
		t.Fatal(err)
	}
	wantSMTPError(t, c.Rcpt("b@example.com", nil), 451, smtp.EnhancedCode{4, 7, 1})
}

func TestSinkGreeting421(t *testing.T) {
	s := StartSink(t, "-Q", "CONNECT")
	c, err := smtp.Dial(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = c.Hello("client.example")
	wantSMTPError(t, err, 421, smtp.EnhancedCode{4, 0, 0})
	if err := s.WaitCounters(t.Context(), 1, 0); err != nil {
		t.Fatal(err)
	}
}

func TestSinkFlagsAndClose(t *testing.T) {
	s := StartSink(t, "-h", "sink.example")
	conn, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	conn.Close()
	if err != nil || !strings.HasPrefix(line, "220 sink.example ") {
		t.Errorf("greeting %q, %v; want the -h name", line, err)
	}
	s.Close()
	s.Close()
	if conn, err := net.Dial("tcp", s.Addr()); err == nil {
		conn.Close()
		t.Error("still accepting connections after Close")
	}
}
