package embedded_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"strings"
	"time"

	"github.com/outboundmail/outbound/queue"
	"github.com/outboundmail/outbound/queue/embedded"
)

// Example shows the life of a message in the store, as the queue drives it:
// enqueue, claim (which records the attempt before any network I/O), finish.
// Applications normally just open the store and hand it to queue.Config.
func Example() {
	dir, err := os.MkdirTemp("", "outbound-spool")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	s, err := embedded.Open(dir, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	now := time.Date(2031, 3, 4, 12, 0, 0, 0, time.UTC)

	msg := &queue.Message{
		ID:      "0001",
		From:    "app@example.org",
		Arrived: now,
		Recipients: []queue.Recipient{
			{Address: "ann@example.com", Destination: "example.com", NextAttempt: now},
			{Address: "bob@example.net", Destination: "example.net", NextAttempt: now},
		},
	}
	if _, err := s.Enqueue(ctx, queue.EnqueueParams{Message: msg, Body: strings.NewReader("Subject: hi\r\n\r\nhello\r\n")}); err != nil {
		log.Fatal(err)
	}

	leases, err := s.Claim(ctx, queue.ClaimParams{Now: now, Owner: "worker-1", LeaseFor: 10 * time.Minute, Limit: 10})
	if err != nil {
		log.Fatal(err)
	}
	for _, l := range leases {
		body, _ := s.OpenBody(ctx, l.Message.ID)
		b, _ := io.ReadAll(body)
		body.Close()
		fmt.Printf("lease for %s at %s: %d octets\n", l.Recipients, l.Destination, len(b))

		// example.com accepts; example.net greylists until 15 minutes from now.
		up := queue.RecipientUpdate{Address: l.Recipients[0], State: queue.Delivered}
		if l.Destination == "example.net" {
			up = queue.RecipientUpdate{Address: l.Recipients[0], State: queue.Deferred, NextAttempt: now.Add(15 * time.Minute)}
		}
		if err := s.Finish(ctx, queue.FinishParams{Lease: l, Now: now, Recipients: []queue.RecipientUpdate{up}}); err != nil {
			log.Fatal(err)
		}
	}

	next, _, _ := s.NextDue(ctx, now)
	fmt.Println("next attempt due in", next.Sub(now))
	// Output:
	// lease for [ann@example.com] at example.com: 22 octets
	// lease for [bob@example.net] at example.net: 22 octets
	// next attempt due in 15m0s
}

// ExampleOpen_locked shows what a second process gets: the store is
// single-process, and Open fails fast instead of waiting.
func ExampleOpen_locked() {
	dir, err := os.MkdirTemp("", "outbound-spool")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	first, err := embedded.Open(dir, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer first.Close()

	_, err = embedded.Open(dir, &embedded.Options{LockTimeout: 100 * time.Millisecond})
	var locked *embedded.LockedError
	fmt.Println(errors.As(err, &locked))
	// Output: true
}
