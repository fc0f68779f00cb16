package queue

import (
	"context"
	"errors"
	"io"
	"time"
)

// Store persists messages, their bodies, the delivery state of every
// recipient and the status of every destination.
//
// Implementations must be safe for concurrent use. A store shared by several
// processes (PostgreSQL) must give the same guarantees across all of them.
// Stores never read the clock: every call that depends on time is given Now.
//
// The conformance suite in package queuetest states the contract in
// executable form; every implementation runs it.
type Store interface {
	// Enqueue durably stores a new message and its body. When it returns
	// nil, the message survives a crash or power loss. If reading Body fails,
	// nothing is stored and the error is returned (wrapped). If
	// Message.IdempotencyKey is set and a message with that key is still in
	// the store, nothing is stored and the existing ID is returned.
	Enqueue(ctx context.Context, p EnqueueParams) (ID, error)

	// Claim leases due work. A recipient is due when its state is Queued or
	// Deferred, its NextAttempt is not after Now, it is not leased, and its
	// destination's NextAllowed is not after Now. Due recipients are grouped
	// into one Lease per (message, destination), oldest NextAttempt first, at
	// most Limit leases.
	//
	// Before returning, Claim durably records for every leased recipient:
	// Attempts+1, LastAttempt = Now and NextAttempt = Now+LeaseFor; the lease
	// itself ends at Now+LeaseFor. So if the worker dies mid-attempt, the
	// recipient becomes due again no sooner than LeaseFor later — never at
	// once. LeaseFor must therefore be at least the minimum backoff.
	//
	// A destination with ConsecutiveFailures > 0 is probed: Claim returns at
	// most one lease for it and moves its NextAllowed to Now+LeaseFor, so no
	// other worker contacts it until the probe finishes.
	//
	// Recipients at a destination in ExcludeDestinations are not due,
	// unless their message arrived before ExpireArrivedBefore (when not
	// zero): those are due regardless of their destination's NextAllowed and
	// of ExcludeDestinations, so that they can be expired on time while the
	// destination is down or busy.
	//
	// Claim must cost about O(leases returned + destinations), not O(queue);
	// restricted to one Message, about O(its recipients).
	Claim(ctx context.Context, p ClaimParams) ([]*Lease, error)

	// Finish records the outcome of a leased attempt and ends the lease, in
	// one atomic step together with the destination statuses and any
	// notifications (DSNs) to enqueue. It returns ErrLeaseLost if the lease is
	// no longer current (expired and claimed again, or the message was
	// changed by an operator): a stale worker never overwrites newer state.
	// Leased recipients not named in Recipients keep their state and their
	// claim-time NextAttempt. A message whose recipients are all final is
	// removed with its body.
	Finish(ctx context.Context, p FinishParams) error

	// Get returns the message with its recipients' current state, or
	// ErrNotFound.
	Get(ctx context.Context, id ID) (*Message, error)

	// OpenBody streams the stored body of a message, or returns ErrNotFound.
	OpenBody(ctx context.Context, id ID) (io.ReadCloser, error)

	// List returns messages that match p, ordered by ID.
	List(ctx context.Context, p ListParams) ([]*Message, error)

	// NextDue returns the earliest time at which Claim could return work
	// (taking destination status and leases into account), or ok == false
	// when nothing is waiting.
	NextDue(ctx context.Context, now time.Time) (at time.Time, ok bool, err error)

	// Destination returns the status of a destination; an unknown one has a
	// zero status (never failed) and no error.
	Destination(ctx context.Context, name string) (*DestinationStatus, error)

	// Hold freezes every waiting recipient of a message (state Held) until
	// Release. Leases on it end (their Finish returns ErrLeaseLost).
	Hold(ctx context.Context, id ID) error
	// Release returns held recipients to Deferred (or Queued if never
	// attempted), due at now.
	Release(ctx context.Context, id ID, now time.Time) error
	// Retry makes every waiting recipient of a message due at now and clears
	// the backoff of their destinations: the operator's "flush".
	Retry(ctx context.Context, id ID, now time.Time) error
	// Delete removes a message and its body. No DSN is sent.
	Delete(ctx context.Context, id ID) error

	// Close releases the store's resources. Calls after Close return
	// ErrClosed.
	Close() error
}

// EnqueueParams are the arguments of Store.Enqueue.
type EnqueueParams struct {
	// Message is the envelope and initial recipient state (ID, Arrived,
	// each recipient's Destination, State Queued, NextAttempt) as decided by
	// the queue. Size is set by the store from the body it wrote.
	Message *Message
	// Body is the canonical message data (CRLF line endings, checked by the
	// queue). The store streams it to stable storage.
	Body io.Reader
}

// ClaimParams are the arguments of Store.Claim.
type ClaimParams struct {
	Now                 time.Time     // the caller's clock; stores never call time.Now
	Owner               string        // worker identity, recorded on the lease
	LeaseFor            time.Duration // lease length and the earliest retry after a crash
	Limit               int           // maximum number of leases; 0 means 1
	ExpireArrivedBefore time.Time     // see Store.Claim; zero disables
	// ExcludeDestinations lists destinations whose recipients Claim must
	// not lease (expiry aside, see Store.Claim) and whose probe it must not
	// start. A scheduler names the destinations where it already holds as
	// much work as its per-destination limits let it start, so that their
	// backlog does not fill the claim while mail for other destinations
	// waits.
	ExcludeDestinations []string
	// Message, when not empty, restricts the claim to the recipients of
	// this message; every other rule applies. Queue.Attempt uses it to
	// attempt one message at once without taking other work.
	Message ID
}

// Lease is the right to attempt delivery of some recipients of one message at
// one destination, until Until.
type Lease struct {
	Message     *Message  // the message and all its recipients, as stored after the claim
	Destination string    // the destination all leased recipients share
	Recipients  []string  // the addresses this lease covers
	Owner       string    // who holds it
	Token       int64     // fencing token: unique per claim, checked by Finish
	Until       time.Time // when the lease ends
}

// FinishParams are the arguments of Store.Finish.
type FinishParams struct {
	Lease      *Lease
	Now        time.Time
	Recipients []RecipientUpdate
	// Destination, when not nil, replaces the status of Lease.Destination.
	Destination *DestinationStatus
	// Destinations replace the statuses of other destinations, each the
	// one its Name names. The queue records here what it learnt about the
	// destination it contacted when the recipients' route changed since
	// they were queued (their Deliverer.Destination is no longer
	// Lease.Destination).
	Destinations []DestinationStatus
	// Notifications are messages (DSNs) enqueued in the same atomic step.
	Notifications []EnqueueParams
}

// RecipientUpdate is the new state of one leased recipient.
type RecipientUpdate struct {
	Address           string
	State             RecipientState // Deferred, Delivered, Failed or Expired
	NextAttempt       time.Time      // for Deferred: when the next attempt may start
	Result            *Outcome       // what the attempt said
	PossibleDuplicate bool           // sets Recipient.PossibleDuplicate (never clears it)
	DelayWarned       bool           // sets Recipient.DelayWarned (never clears it)
}

// ListParams filter Store.List. Zero fields do not filter.
type ListParams struct {
	States        []RecipientState // messages with at least one recipient in one of these states
	Destination   string           // messages with a recipient at this destination
	ArrivedBefore time.Time        // messages that arrived before this time (older than an age)
	AfterID       ID               // paging: only IDs greater than this
	Limit         int              // 0 means no limit
}

var (
	// ErrNotFound is returned for an ID that is not in the store.
	ErrNotFound = errors.New("queue: message not found")
	// ErrLeaseLost is returned by Finish when the lease is no longer current.
	ErrLeaseLost = errors.New("queue: lease lost")
	// ErrClosed is returned by a store or queue after Close.
	ErrClosed = errors.New("queue: closed")
)
