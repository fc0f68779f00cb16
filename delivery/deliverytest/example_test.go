package deliverytest_test

import (
	"strings"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/outboundmail/outbound/delivery/deliverytest"
)

// A test scripts a server that rejects one recipient, sends through it, and
// checks what the server saw. The example is compiled but not run, since
// NewServer needs the test's *testing.T; the same steps run in this
// package's tests.
func ExampleNewServer() {
	var t *testing.T // the *testing.T of the test function

	s := deliverytest.NewServer(t, &deliverytest.Script{
		Rcpt: deliverytest.RejectRcpt(550, smtp.EnhancedCode{5, 1, 1}, "No such user", "gone@example.com"),
	})
	err := smtp.SendMail(s.Addr, nil, "a@example.org",
		[]string{"b@example.com", "gone@example.com"}, strings.NewReader("Subject: hi\r\n\r\nhi\r\n"))
	t.Logf("client saw: %v", err) // SMTP error 550: No such user

	for _, c := range s.Commands() {
		t.Log(c) // MAIL <a@example.org> 250, RCPT <b@example.com> 250, RCPT <gone@example.com> 550
	}
	if msgs := s.Messages(); len(msgs) != 0 {
		t.Errorf("accepted %d messages, want 0 (go-smtp's SendMail stops at the first refusal)", len(msgs))
	}
}

// A test waits for the client, running in another goroutine, to deliver two
// messages; it never sleeps.
func ExampleServer_WaitMessages() {
	var t *testing.T // the *testing.T of the test function

	s := deliverytest.NewServer(t, &deliverytest.Script{Greylist: 1})
	go func() {
		for range 3 {
			// The first attempt is greylisted (450 4.2.0); the retries pass.
			smtp.SendMail(s.Addr, nil, "a@example.org", []string{"b@example.com"}, strings.NewReader("x\r\n"))
		}
	}()
	msgs, err := s.WaitMessages(t.Context(), 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d messages over %d connections", len(msgs), s.Sessions())
}

// A raw server greets with a multi-line 421 reply, something go-smtp's
// server cannot send, and checks that the client hangs up without a command.
func ExampleNewRawServer() {
	var t *testing.T // the *testing.T of the test function

	s := deliverytest.NewRawServer(t, func(c *deliverytest.RawConn) {
		c.Reply("421-mx.example.com is overloaded", "421 4.3.2 try again later")
		if line, err := c.ReadLine(); err == nil && !strings.EqualFold(line, "QUIT") {
			t.Errorf("client sent %q after a 421 greeting", line)
		}
	})
	// ... run the client against s.Addr() ...
	if err := s.WaitHandled(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
}

// A handler stalls after the final dot until the test releases it, to
// exercise the client's timeout for the reply to DATA without sleeping.
func ExampleRawConn_Block() {
	var t *testing.T // the *testing.T of the test function

	release := make(chan struct{})
	s := deliverytest.NewRawServer(t, func(c *deliverytest.RawConn) {
		c.Greet()
		c.HandleEHLO("8BITMIME", "ENHANCEDSTATUSCODES")
		c.Expect("MAIL FROM:")
		c.Reply("250 2.1.0 ok")
		c.Expect("RCPT TO:")
		c.Reply("250 2.1.5 ok")
		c.Expect("DATA")
		c.Reply("354 go ahead")
		c.ReadData()
		if c.Block(release) { // no reply until the test closes release
			c.Reply("250 2.0.0 queued")
		}
	})
	_ = s.Addr() // ... run the client with a fake clock, advance it past the timeout ...
	close(release)
}

// smtp-sink, started with a soft rejection of every RCPT, counts the
// sessions and messages it saw.
func ExampleStartSink() {
	var t *testing.T // the *testing.T of the test function

	sink := deliverytest.StartSink(t, "-r", "RCPT", "-b", "451 4.7.1 Try again later")
	err := smtp.SendMail(sink.Addr(), nil, "a@example.org", []string{"b@example.com"}, strings.NewReader("x\r\n"))
	t.Log(err) // SMTP error 451: 4.7.1 Try again later
	if err := sink.WaitCounters(t.Context(), 1, 0); err != nil {
		t.Fatal(err)
	}
	sessions, messages := sink.Counters()
	t.Logf("%d sessions, %d messages", sessions, messages)
}
