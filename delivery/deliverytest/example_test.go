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
