package postgres_test

import (
	"context"
	"errors"
	"log"
	"strings"
	"time"

	"github.com/outboundmail/outbound/queue"
	"github.com/outboundmail/outbound/queue/postgres"
)

// Open a store shared by every node of a cluster. The schema is created and
// migrated on the first Open; later Opens (other nodes, restarts) find it
// up to date.
func ExampleOpen() {
	ctx := context.Background()
	store, err := postgres.Open(ctx, "postgres://mailer@db.internal:5432/app?pool_max_conns=8", &postgres.Options{
		Schema: "outbound", // the default
	})
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()

	// store is a queue.Store: give it to the queue as its storage.
	var _ queue.Store = store
}

// Queue a confirmation mail in the same transaction as the order it
// confirms: if the transaction rolls back, there is no mail either.
func ExampleStore_EnqueueTx() {
	ctx := context.Background()
	store, err := postgres.Open(ctx, "postgres://mailer@db.internal:5432/app", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()

	tx, err := store.Pool().Begin(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // no-op after Commit
	if _, err := tx.Exec(ctx, "INSERT INTO orders (id, customer) VALUES ($1, $2)", 42, "ann@example.com"); err != nil {
		log.Fatal(err)
	}
	now := time.Now()
	msg := &queue.Message{
		ID:      "order-42-confirmation",
		From:    "shop@example.org",
		Arrived: now,
		Recipients: []queue.Recipient{{
			Address: "ann@example.com", Destination: "example.com",
			State: queue.Queued, NextAttempt: now,
		}},
	}
	body := strings.NewReader("From: shop@example.org\r\nTo: ann@example.com\r\nSubject: Order 42\r\n\r\nThanks!\r\n")
	if _, err := store.EnqueueTx(ctx, tx, queue.EnqueueParams{Message: msg, Body: body}); err != nil {
		log.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		log.Fatal(err) // neither the order nor the mail exists
	}
}

// A worker loop: claim whenever woken by another node or when the next
// piece of work is due, and poll anyway, since wakeups can be lost.
func ExampleStore_Wakeups() {
	ctx := context.Background()
	store, err := postgres.Open(ctx, "postgres://mailer@db.internal:5432/app", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()

	const poll = 5 * time.Second
	wake := store.Wakeups()
	for ctx.Err() == nil {
		now := time.Now()
		leases, err := store.Claim(ctx, queue.ClaimParams{Now: now, Owner: "node-1", LeaseFor: 5 * time.Minute, Limit: 16})
		if err != nil {
			log.Print(err)
		}
		for range leases {
			// deliver, then store.Finish(...)
		}
		if len(leases) > 0 {
			continue
		}
		wait := poll
		if at, ok, err := store.NextDue(ctx, now); err == nil && ok && at.Sub(now) < wait {
			wait = max(at.Sub(now), 0)
		}
		select {
		case <-wake:
		case <-time.After(wait):
		}
	}
}

// Hold a cluster-wide connection slot for the length of an SMTP session:
// at most 3 connections to the destination from all nodes together.
func ExampleStore_AcquireSlot() {
	ctx := context.Background()
	store, err := postgres.Open(ctx, "postgres://mailer@db.internal:5432/app", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()

	now := time.Now()
	slot, err := store.AcquireSlot(ctx, postgres.SlotParams{
		Destination: "example.com", Owner: "node-1", Max: 3,
		Now: now, Until: now.Add(10 * time.Minute),
	})
	if errors.Is(err, postgres.ErrNoSlot) {
		return // all 3 in use somewhere in the cluster: try this destination later
	}
	if err != nil {
		log.Fatal(err)
	}
	// … the SMTP session; RenewSlot if it runs long …
	if err := store.ReleaseSlot(ctx, slot, time.Now()); err != nil {
		log.Print(err)
	}
}
