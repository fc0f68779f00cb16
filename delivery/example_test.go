package delivery_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/outboundmail/outbound/delivery"
)

// One attempt to a local server, used as a relay: one recipient is
// delivered, the other refused for good. The Report says what to do with
// each; Deliver itself never retries.
func ExampleDeliverer_Deliver() {
	addr, stop := startExampleServer()
	defer stop()

	d := &delivery.Deliverer{
		Hostname: "client.example.org", // this host's name, sent with EHLO
		Relay:    addr,                 // a smarthost; without it, MX records are used
		TLS:      delivery.TLSDisabled, // the example server has no certificate
	}
	defer d.Close()

	msg := &delivery.Message{
		From: "sender@example.org",
		Recipients: []delivery.Recipient{
			{Address: "someone@example.com"},
			{Address: "nobody@example.com"},
		},
		Body: strings.NewReader("From: sender@example.org\r\nSubject: hello\r\n\r\nHello.\r\n"),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rep, err := d.Deliver(ctx, d.Destination("someone@example.com"), msg)
	if err != nil {
		log.Fatal(err) // no attempt was made
	}
	for _, r := range rep.Results {
		fmt.Printf("%s: %s at %s (%s)\n", r.Recipient, r.Class, r.Stage, r.Reply)
	}
	// Output:
	// someone@example.com: delivered at end of data (250 2.0.0 OK: queued)
	// nobody@example.com: permanent at RCPT (550 5.1.1 no such user)
}

// MX delivery through a particular DNS server, with explicit timeouts and
// connection reuse limits.
func ExampleNewResolver() {
	d := &delivery.Deliverer{
		Hostname: "mail.example.org",
		Resolver: delivery.NewResolver("127.0.0.1:53"),
		Timeouts: delivery.Timeouts{Connect: 10 * time.Second}, // others: RFC 5321 minimums
		// Keep at most two connections per destination, each for 50 messages.
		MaxConnsPerDestination: 2,
		MaxMessagesPerConn:     50,
	}
	defer d.Close()
	fmt.Println(d.Destination("Someone@Example.COM"))
	// Output: example.com
}

// startExampleServer runs a go-smtp server on 127.0.0.1 that accepts every
// recipient but nobody@example.com.
func startExampleServer() (addr string, stop func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return exampleSession{}, nil }))
	srv.Domain = "localhost"
	go srv.Serve(ln)
	return ln.Addr().String(), func() { srv.Close() }
}

type exampleSession struct{}

func (exampleSession) Mail(string, *smtp.MailOptions) error { return nil }
func (exampleSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if to == "nobody@example.com" {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
	}
	return nil
}
func (exampleSession) Data(r io.Reader) error { _, err := io.Copy(io.Discard, r); return err }
func (exampleSession) Reset()                 {}
func (exampleSession) Logout() error          { return nil }
