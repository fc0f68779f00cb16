package queue

import (
	"strconv"
	"time"
)

// EventKind says what an [Event] reports.
type EventKind uint8

// The kinds of events. Attempt events are per lease (one message, one
// destination); the others are per recipient.
const (
	// EventAttemptStarted: a delivery attempt (one SMTP transaction for the
	// recipients of one message at one destination) is about to start.
	EventAttemptStarted EventKind = iota + 1
	// EventAttemptFinished: the attempt ended; Duration and
	// DestinationUnavailable are set.
	EventAttemptFinished
	// EventDelivered: a server accepted the recipient.
	EventDelivered
	// EventDeferred: a temporary failure; the recipient waits until
	// NextAttempt.
	EventDeferred
	// EventBounced: a permanent failure; DSN names the notification queued,
	// if any.
	EventBounced
	// EventExpired: the recipient outlived the schedule's MaxLifetime; DSN
	// names the notification queued, if any.
	EventExpired
	// EventPossibleDuplicate: the connection was lost after the final dot, so
	// the server may already have the message (RFC 1047). It accompanies the
	// recipient's EventDeferred.
	EventPossibleDuplicate
	// EventDelayWarning: a delay notification ("delayed", RFC 3464) was queued
	// for the recipient; it accompanies its EventDeferred.
	EventDelayWarning
)

var eventNames = [...]string{
	EventAttemptStarted:    "attempt-started",
	EventAttemptFinished:   "attempt-finished",
	EventDelivered:         "delivered",
	EventDeferred:          "deferred",
	EventBounced:           "bounced",
	EventExpired:           "expired",
	EventPossibleDuplicate: "possible-duplicate",
	EventDelayWarning:      "delay-warning",
}

// String returns the kind's name, e.g. "deferred".
func (k EventKind) String() string {
	if int(k) < len(eventNames) && eventNames[k] != "" {
		return eventNames[k]
	}
	return "EventKind(" + strconv.Itoa(int(k)) + ")"
}

// Event is one thing the scheduler did. Fields that do not apply to the Kind
// are zero.
type Event struct {
	Kind        EventKind
	Time        time.Time // the queue's clock when it happened
	Message     ID
	Arrived     time.Time // when the message was enqueued
	Destination string
	// Recipient is the address, for per-recipient kinds.
	Recipient string
	// Recipients counts the recipients of an attempt, for attempt kinds.
	Recipients int
	// Attempts is the number of attempts the recipient has had, this one
	// included.
	Attempts int
	// Result is what the attempt said about the recipient (or, for
	// EventAttemptFinished on an unavailable destination, about the
	// destination); nil when no attempt was made (expiry while the
	// destination was in backoff).
	Result *Outcome
	// NextAttempt is when a deferred recipient may be tried again, or, on
	// EventAttemptFinished with DestinationUnavailable, when the destination
	// may be contacted again.
	NextAttempt time.Time
	// Duration is how long an attempt took (EventAttemptFinished).
	Duration time.Duration
	// DestinationUnavailable is set on EventAttemptFinished when the
	// destination as a whole was judged unavailable and put in backoff.
	DestinationUnavailable bool
	// DSN is the ID of the notification queued for this recipient
	// (EventBounced, EventExpired, EventDelayWarning), "" if none: the
	// sender was <> or NOTIFY excluded it.
	DSN ID
}

// Observer receives the scheduler's events. Observe is called from the
// scheduler's goroutines, possibly concurrently, after the outcome is on
// stable storage; it must be quick and must not call back into the Queue.
type Observer interface {
	Observe(e Event)
}

// ObserverFunc adapts a function to [Observer].
type ObserverFunc func(e Event)

// Observe calls f(e).
func (f ObserverFunc) Observe(e Event) { f(e) }

// Observers fans events out to several observers, in order.
type Observers []Observer

// Observe passes e to every observer in o.
func (o Observers) Observe(e Event) {
	for _, x := range o {
		x.Observe(e)
	}
}
