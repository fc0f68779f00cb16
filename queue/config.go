package queue

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/outboundmail/outbound/backoff"
	"github.com/outboundmail/outbound/delivery"
	"github.com/outboundmail/outbound/delivery/rfc5321"
)

// Deliverer is what the queue needs from the delivery engine:
// *delivery.Deliverer satisfies it. Deliver makes one attempt and reports
// per recipient; it must never retry in-process (the queue decides when).
type Deliverer interface {
	// Destination returns the key recipients are grouped by: all recipients
	// of a message with the same destination go in one transaction, and
	// per-destination limits and backoff apply to it.
	Destination(recipient string) string
	// Deliver makes one attempt to deliver msg to destination. A non-nil
	// error with a nil Report means no attempt was made.
	Deliver(ctx context.Context, destination string, msg *delivery.Message) (*delivery.Report, error)
}

var _ Deliverer = (*delivery.Deliverer)(nil)

// Config configures a [Queue]. Only Store and Deliverer are required; every
// other field has a working zero value, stated in its comment.
type Config struct {
	// Store keeps messages and their state. Required. The queue does not
	// close it.
	Store Store
	// Deliverer makes delivery attempts. Required; normally a
	// *delivery.Deliverer. The queue does not close it.
	Deliverer Deliverer

	// Schedule decides when a deferred recipient is tried again, when it
	// expires and when its sender gets a delay warning. The zero value is
	// backoff's default: 5m doubling to 1h, give up after 5 days, warn
	// after 4h.
	Schedule backoff.Schedule
	// DestinationSchedule is the backoff of a destination judged unavailable
	// (no connection, 421 greeting …): no message is sent there until it
	// expires, then one probe. Only its MinBackoff, MaxBackoff, Multiplier
	// and Jitter are used; zero fields take Schedule's values.
	DestinationSchedule backoff.Schedule
	// Clock is the time source; nil means backoff.System{}. Tests pass a
	// fake clock.
	Clock backoff.Clock

	// Workers is the maximum number of attempts in flight at once, and so
	// of connections in use; 0 means 16.
	Workers int
	// MaxConnsPerDestination is the maximum number of attempts in flight to
	// one destination; 0 means 4. A destination starts at one until an
	// attempt has reached it (slow start), so a dead destination sees one
	// connection, not MaxConnsPerDestination. With a Store that implements
	// SlotStore (PostgreSQL), the limit holds for all the processes sharing
	// the store together; connections the Deliverer keeps idle for reuse
	// are not counted.
	MaxConnsPerDestination int
	// DestinationRate is how many attempts may start per second at one
	// destination, with bursts of MaxConnsPerDestination (sendmail's
	// ConnectionRateThrottle, applied per destination). Every attempt may
	// open a connection, unless the Deliverer reuses an idle one, so this
	// bounds new connections per second. 0 means no limit. With a
	// SlotStore it holds cluster-wide too, as a sliding window: each of the
	// MaxConnsPerDestination slots stays busy for
	// MaxConnsPerDestination/DestinationRate seconds after it was taken.
	DestinationRate float64

	// LeaseFor is how long a claimed attempt may take, and how long its
	// recipients wait after a crash mid-attempt; 0 means 30m. It must be at
	// least Schedule's MinBackoff, so that a crash never shortens a
	// deferral. Each attempt is given a deadline a tenth of LeaseFor before
	// its lease ends.
	LeaseFor time.Duration
	// PollInterval bounds how long Run sleeps without asking the store for
	// due work, for work added by other processes; 0 means 1m.
	PollInterval time.Duration
	// StartupRamp spreads the start of Run: the number of attempts allowed in
	// flight grows from 1 to Workers over this period, so a restart after an
	// outage is not a burst at every destination at once; 0 means 30s,
	// negative means no ramp.
	StartupRamp time.Duration
	// ShutdownTimeout is how long Run lets attempts in flight finish after
	// its context is cancelled before it cancels them too; 0 means 30s.
	ShutdownTimeout time.Duration

	// Hostname names this system in notifications (Reporting-MTA, and the
	// From: MAILER-DAEMON@Hostname); "" means os.Hostname().
	Hostname string
	// Owner identifies this queue on its leases (PostgreSQL stores shared by
	// several processes show it); "" means hostname, process ID and a random
	// suffix.
	Owner string
	// MaxMessageSize is the largest body Enqueue accepts, in octets after
	// canonicalisation; 0 means 64 MiB, negative means no limit.
	MaxMessageSize int64
	// MaxReturnSize is the largest original message a failure notification
	// returns whole when the sender asked for RET=FULL; larger ones return
	// headers only. 0 means 1 MiB.
	MaxReturnSize int64

	// Logger receives structured logs; nil means none.
	Logger *slog.Logger
	// Observer receives an Event for every attempt and recipient outcome;
	// nil means none.
	Observer Observer
}

// ConfigError reports a Config field that New refuses.
type ConfigError struct {
	Field  string // "Store", "LeaseFor", "Schedule" …
	Reason string
	Err    error // the cause, e.g. a *backoff.InvalidScheduleError
}

// Error returns "queue: Config.Field: Reason".
func (e *ConfigError) Error() string {
	s := "queue: Config." + e.Field + ": " + e.Reason
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the cause.
func (e *ConfigError) Unwrap() error { return e.Err }

const (
	defaultWorkers         = 16
	defaultConnsPerDest    = 4
	defaultLeaseFor        = 30 * time.Minute
	defaultPollInterval    = time.Minute
	defaultStartupRamp     = 30 * time.Second
	defaultShutdownTimeout = 30 * time.Second
	defaultMaxMessageSize  = 64 << 20
	defaultMaxReturnSize   = 1 << 20
)

// MinRetryDelay is the shortest wait after a temporary failure, whatever
// the schedule or a server ("try again in 5 seconds") says: a recipient is
// never tried again, and a destination judged unavailable never contacted
// again, sooner than this after the attempt.
const MinRetryDelay = time.Minute

// withDefaults returns c with zero fields replaced by their defaults, or a
// *ConfigError.
func (c Config) withDefaults() (Config, error) {
	if c.Store == nil {
		return c, &ConfigError{Field: "Store", Reason: "required"}
	}
	if c.Deliverer == nil {
		return c, &ConfigError{Field: "Deliverer", Reason: "required"}
	}
	if err := c.Schedule.Validate(); err != nil {
		return c, &ConfigError{Field: "Schedule", Reason: "invalid", Err: err}
	}
	if err := c.DestinationSchedule.Validate(); err != nil {
		return c, &ConfigError{Field: "DestinationSchedule", Reason: "invalid", Err: err}
	}
	ds := &c.DestinationSchedule
	if ds.MinBackoff == 0 {
		ds.MinBackoff = c.Schedule.MinBackoff
	}
	if ds.MaxBackoff == 0 {
		ds.MaxBackoff = c.Schedule.MaxBackoff
	}
	if ds.Multiplier == 0 {
		ds.Multiplier = c.Schedule.Multiplier
	}
	if ds.Jitter == 0 {
		ds.Jitter = c.Schedule.Jitter
	}
	if c.Clock == nil {
		c.Clock = backoff.System{}
	}
	for _, f := range []struct {
		name string
		v    int
		def  int
		p    *int
	}{
		{"Workers", c.Workers, defaultWorkers, &c.Workers},
		{"MaxConnsPerDestination", c.MaxConnsPerDestination, defaultConnsPerDest, &c.MaxConnsPerDestination},
	} {
		switch {
		case f.v < 0:
			return c, &ConfigError{Field: f.name, Reason: "must not be negative"}
		case f.v == 0:
			*f.p = f.def
		}
	}
	if c.DestinationRate < 0 || c.DestinationRate != c.DestinationRate {
		return c, &ConfigError{Field: "DestinationRate", Reason: "must be a positive number of attempts per second, or 0 for no limit"}
	}
	if c.LeaseFor < 0 {
		return c, &ConfigError{Field: "LeaseFor", Reason: "must not be negative"}
	}
	if c.LeaseFor == 0 {
		c.LeaseFor = defaultLeaseFor
	}
	if minBackoff := c.Schedule.Interval(1); c.LeaseFor < minBackoff {
		return c, &ConfigError{Field: "LeaseFor", Reason: fmt.Sprintf("%v is shorter than the schedule's minimum backoff %v: a crash mid-attempt would retry early", c.LeaseFor, minBackoff)}
	}
	durations := []struct {
		name string
		p    *time.Duration
		def  time.Duration
	}{
		{"PollInterval", &c.PollInterval, defaultPollInterval},
		{"ShutdownTimeout", &c.ShutdownTimeout, defaultShutdownTimeout},
	}
	for _, d := range durations {
		if *d.p < 0 {
			return c, &ConfigError{Field: d.name, Reason: "must not be negative"}
		}
		if *d.p == 0 {
			*d.p = d.def
		}
	}
	if c.StartupRamp == 0 {
		c.StartupRamp = defaultStartupRamp
	}
	if c.MaxMessageSize == 0 {
		c.MaxMessageSize = defaultMaxMessageSize
	}
	if c.MaxReturnSize <= 0 {
		c.MaxReturnSize = defaultMaxReturnSize
	}
	if c.Hostname == "" {
		h, err := os.Hostname()
		if err != nil || rfc5321.CheckDomain(h) != nil {
			h = "localhost"
		}
		c.Hostname = h
	} else if err := rfc5321.CheckDomain(c.Hostname); err != nil {
		return c, &ConfigError{Field: "Hostname", Reason: "not a domain name", Err: err}
	}
	if c.Owner == "" {
		var b [4]byte
		_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24)
		c.Owner = fmt.Sprintf("%s:%d:%s", c.Hostname, os.Getpid(), hex.EncodeToString(b[:]))
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Observer == nil {
		c.Observer = Observers(nil)
	}
	return c, nil
}

// ErrRunning is returned by Run and RunOnce when the queue is already
// running: one scheduler per Queue (several Queues, in one process or
// many, may share a Store).
var ErrRunning = errors.New("queue: Run is already running")
