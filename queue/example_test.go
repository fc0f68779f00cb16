package queue_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"strings"

	"github.com/emersion/go-smtp"

	"github.com/outboundmail/outbound/delivery"
	"github.com/outboundmail/outbound/queue"
	"github.com/outboundmail/outbound/queue/embedded"
)

// An application queues a message durably and runs one pass of the queue,
// which delivers it through a smarthost (here an SMTP server on loopback).
func Example() {
	relay := startExampleRelay()
	defer relay.Close()

	dir, _ := os.MkdirTemp("", "outbound-example-")
	defer os.RemoveAll(dir)
	store, _ := embedded.Open(dir, nil)
	defer store.Close()
	q, _ := queue.New(queue.Config{Store: store, Deliverer: &delivery.Deliverer{Relay: relay.Addr, TLS: delivery.TLSDisabled}})

	ctx := context.Background()
	_, err := q.Enqueue(ctx, queue.Envelope{From: "app@example.org", To: []string{"bob@example.com"}},
		strings.NewReader("Subject: Hello\r\n\r\nHi Bob.\r\n"))
	stats, _ := q.RunOnce(ctx)
	fmt.Println(err, stats.Delivered)
	// Output: <nil> 1
}

// A service runs the queue until it is told to stop, then shuts down
// gracefully: attempts in flight finish, nothing is lost.
func ExampleQueue_Run() {
	store, err := embedded.Open("/var/spool/myapp-outbound", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	d := &delivery.Deliverer{Hostname: "mail.example.org"} // direct MX delivery
	defer d.Close()
	q, err := queue.New(queue.Config{Store: store, Deliverer: d})
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := q.Run(ctx); err != nil {
		log.Fatal(err)
	}
}

// exampleRelay is an SMTP server on loopback that accepts every message.
type exampleRelay struct {
	*smtp.Server
	Addr string
}

func startExampleRelay() *exampleRelay {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	s := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return acceptAll{}, nil }))
	s.Domain = "relay.example"
	go s.Serve(ln)
	return &exampleRelay{Server: s, Addr: ln.Addr().String()}
}

type acceptAll struct{}

func (acceptAll) Mail(string, *smtp.MailOptions) error { return nil }
func (acceptAll) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (acceptAll) Data(r io.Reader) error               { _, err := io.Copy(io.Discard, r); return err }
func (acceptAll) Reset()                               {}
func (acceptAll) Logout() error                        { return nil }
