package queue

import (
	"time"

	"github.com/outboundmail/outbound/delivery"
)

// ID identifies a queued message. IDs are assigned by the queue at enqueue,
// are unique, and sort roughly by arrival time.
type ID string

// RecipientState is where one recipient of a message stands.
type RecipientState uint8

// The recipient states. Queued and Deferred recipients are waiting for an
// attempt; Delivered, Failed and Expired are final; Held waits for an operator.
const (
	Queued    RecipientState = iota // never attempted yet
	Deferred                        // attempted, got a temporary failure, waits for NextAttempt
	Delivered                       // a server accepted it
	Failed                          // permanent failure; a DSN was queued if asked for
	Expired                         // gave up after the maximum lifetime; a DSN was queued if asked for
	Held                            // frozen by an operator until released
)

var stateNames = [...]string{"queued", "deferred", "delivered", "failed", "expired", "held"}

// String returns the lower-case name of the state, e.g. "deferred".
func (s RecipientState) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "unknown"
}

// Final reports whether no further attempt will be made for the recipient.
func (s RecipientState) Final() bool { return s == Delivered || s == Failed || s == Expired }

// Message is a queued message: its envelope, and the delivery state of each
// recipient. The body is stored separately and read with Store.OpenBody.
type Message struct {
	ID             ID
	From           string // envelope sender; "" is the null sender <> (DSNs)
	Recipients     []Recipient
	Arrived        time.Time // when Enqueue accepted it
	Size           int64     // octets of the stored (canonical) body
	IdempotencyKey string    // optional caller key; a second Enqueue with it returns the first ID
	EightBit       bool      // the body has octets > 127 (needs 8BITMIME)
	Return         string    // RFC 3461 RET: "FULL", "HDRS" or ""
	EnvelopeID     string    // RFC 3461 ENVID; "" means unset
	RequireTLS     bool      // RFC 8689 REQUIRETLS
}

// Recipient is one envelope recipient of a queued message and its delivery
// state.
type Recipient struct {
	Address     string   // mailbox, without angle brackets
	Destination string   // the key deliveries and politeness are grouped by (normally the lower-case domain)
	Notify      []string // RFC 3461 NOTIFY: nil (unset), ["NEVER"], or some of SUCCESS, FAILURE, DELAY
	ORCPT       string   // RFC 3461 ORCPT, "rfc822;addr"; "" means unset

	State       RecipientState
	Attempts    int       // attempts started, including one in progress
	NextAttempt time.Time // no attempt starts before this time
	LastAttempt time.Time // when the latest attempt started; zero if none
	LastResult  *Outcome  // what the latest finished attempt said; nil if none
	// DelayWarned is set once a delay DSN has been queued for this recipient.
	DelayWarned bool
	// PossibleDuplicate is set when an attempt lost the connection after the
	// final dot (RFC 1047): the server may already have the message.
	PossibleDuplicate bool
}

// Outcome records what one attempt said about one recipient.
type Outcome struct {
	Class delivery.Class
	Reply delivery.Reply
	Stage delivery.Stage
	Host  string
	Error string // transport or local error text, if any
	At    time.Time
}

// DestinationStatus is the shared memory about one destination: whether it
// may be contacted, and since when it has been failing. RFC 5321 §4.5.4.1: "A
// client SHOULD keep a list of hosts it cannot reach".
type DestinationStatus struct {
	Name                string
	NextAllowed         time.Time // no connection before this time
	ConsecutiveFailures int       // 0 when the last attempt reached the destination
	FirstFailure        time.Time // start of the current run of failures
	LastFailure         time.Time
	LastResult          *Outcome
}
