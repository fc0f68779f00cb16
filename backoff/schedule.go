package backoff

import (
	"math"
	"time"

	cenkalti "github.com/cenkalti/backoff/v4"
)

// Defaults used for the zero value of each Schedule field.
const (
	// DefaultMinBackoff is Postfix's minimal_backoff_time (300s).
	DefaultMinBackoff = 5 * time.Minute
	// DefaultMaxBackoff caps the interval at one hour: Postfix's
	// maximal_backoff_time is 4000s, and RFC 5321 §4.5.4.1 suggests backing
	// off "to one every two or three hours" only after the first hour. One
	// hour keeps a destination that recovers from waiting long.
	DefaultMaxBackoff = time.Hour
	// DefaultMultiplier doubles the interval after each failure, as Postfix
	// does (its next delay is the message age, clamped).
	DefaultMultiplier = 2.0
	// DefaultJitter adds up to 10% to every interval so that messages that
	// failed together do not come back together.
	DefaultJitter = 0.1
	// DefaultMaxLifetime is RFC 5321 §4.5.4.1's "at least 4-5 days" and
	// Postfix's maximal_queue_lifetime (5d).
	DefaultMaxLifetime = 5 * 24 * time.Hour
	// DefaultDelayWarning is sendmail's Timeout.queuewarn (4h): the age at
	// which the sender is told that the message is delayed (RFC 3464 "delayed").
	DefaultDelayWarning = 4 * time.Hour
)

// maxReplay bounds the work of one Interval call: the replay stops as soon as
// the interval reaches MaxBackoff or stops growing, and never runs more than
// maxReplay steps. With a multiplier so close to 1 that MaxBackoff is not
// reached within maxReplay attempts, the interval stays at the value it had
// at attempt maxReplay (Warnings reports it).
const maxReplay = 4096

// Schedule computes retry times from persisted State. The zero value is a
// ready-to-use schedule with the documented defaults; a Schedule is a small
// value that is safe to copy and to use from many goroutines.
//
// Fields that [Schedule.Validate] rejects are replaced by their defaults in
// every computation, so a bad configuration can never make Next retry early
// or never.
type Schedule struct {
	// MinBackoff is the delay after the first failed attempt, and the
	// smallest delay ever returned; 0 means 5m (Postfix minimal_backoff_time 300s).
	MinBackoff time.Duration
	// MaxBackoff caps the un-jittered interval; 0 means 1h (Postfix
	// maximal_backoff_time 4000s; RFC 5321 §4.5.4.1). A MaxBackoff below
	// MinBackoff is ignored: MinBackoff wins.
	MaxBackoff time.Duration
	// Multiplier is the growth of the interval per attempt; 0 means 2
	// (Postfix doubles). 1 gives a constant interval.
	Multiplier float64
	// Jitter is the fraction of the interval ADDED (never subtracted); 0
	// means 0.1; negative means none. At most 1.
	Jitter float64
	// MaxLifetime is how long after arrival the message is given up on (and
	// bounced); 0 means 5 days (RFC 5321 §4.5.4.1, Postfix maximal_queue_lifetime).
	MaxLifetime time.Duration
	// DelayWarning is the age at which a delay DSN is sent; 0 means 4h
	// (sendmail Timeout.queuewarn); negative disables.
	DelayWarning time.Duration
}

// State is what a store persists per recipient (or per destination). It is
// all Next needs, so a restart resumes the schedule exactly where it was.
type State struct {
	// Attempts counts the attempts started so far, including the one that
	// just failed (>= 1 when calling Next; smaller values count as 1).
	Attempts int
	// Arrived is when the message was queued (for a destination: when its
	// current run of failures began). The lifetime is measured from it.
	Arrived time.Time
	// LastAttempt is when the latest attempt started.
	LastAttempt time.Time
	// Seed keys the jitter (for example a hash of message ID and recipient):
	// the same Seed and Attempts always give the same jitter.
	Seed uint64
}

// Next reports when the next attempt may start: LastAttempt +
// Interval(Attempts) × (1 + jitter), with jitter in [0, Jitter) derived from
// (Seed, Attempts).
//
// When that time falls after the expiry (Arrived + MaxLifetime), one final
// attempt is scheduled at exactly the expiry, so that the whole lifetime is
// used and the recipient expires on time. If the expiry is less than
// MinBackoff after LastAttempt, that attempt was already the final one (an
// attempt is never started sooner than MinBackoff after the previous one).
//
// ok is false when the recipient has expired and must be bounced: the
// latest attempt started at or after the expiry, or within MinBackoff of it.
// at is then the expiry.
func (s Schedule) Next(st State) (at time.Time, ok bool) {
	c := s.effective()
	exp := st.Arrived.Add(c.lifetime)
	if !st.LastAttempt.Before(exp) || exp.Sub(st.LastAttempt) < c.min {
		return exp, false
	}
	n := max(st.Attempts, 1)
	iv := c.interval(n)
	at = st.LastAttempt.Add(addJitter(iv, c.jitter, st.Seed, n))
	if at.After(exp) {
		at = exp
	}
	return at, true
}

// Interval returns the un-jittered delay after attempts failed attempts:
// MinBackoff × Multiplier^(attempts-1), capped at MaxBackoff and never below
// MinBackoff. attempts below 1 count as 1.
func (s Schedule) Interval(attempts int) time.Duration {
	return s.effective().interval(max(attempts, 1))
}

// Expiry returns arrived + MaxLifetime: the time after which no attempt is
// started and the recipient is bounced.
func (s Schedule) Expiry(arrived time.Time) time.Time {
	return arrived.Add(s.effective().lifetime)
}

// DelayWarningAt returns when a delay DSN should be sent for a message that
// arrived at arrived. ok is false when warnings are disabled (DelayWarning <
// 0) or would come no earlier than the expiry, when the message bounces
// instead.
func (s Schedule) DelayWarningAt(arrived time.Time) (at time.Time, ok bool) {
	c := s.effective()
	if c.warn < 0 || c.warn >= c.lifetime {
		return time.Time{}, false
	}
	return arrived.Add(c.warn), true
}

// config is a Schedule with defaults applied and invalid fields replaced.
type config struct {
	min, max, lifetime, warn time.Duration
	mult, jitter             float64
}

// effective applies the defaults: zero fields and fields Validate rejects
// take their default value.
func (s Schedule) effective() config {
	c := config{
		min:      s.MinBackoff,
		max:      s.MaxBackoff,
		mult:     s.Multiplier,
		jitter:   s.Jitter,
		lifetime: s.MaxLifetime,
		warn:     s.DelayWarning,
	}
	if c.min <= 0 {
		c.min = DefaultMinBackoff
	}
	if c.max <= 0 {
		c.max = DefaultMaxBackoff
	}
	c.max = max(c.max, c.min) // MinBackoff wins over a smaller MaxBackoff.
	if c.mult == 0 || !validMultiplier(c.mult) {
		c.mult = DefaultMultiplier
	}
	switch {
	case c.jitter == 0 || math.IsNaN(c.jitter) || c.jitter > 1:
		c.jitter = DefaultJitter
	case c.jitter < 0:
		c.jitter = 0
	}
	if c.lifetime <= 0 {
		c.lifetime = DefaultMaxLifetime
	}
	if c.warn == 0 {
		c.warn = DefaultDelayWarning
	}
	return c
}

func validMultiplier(m float64) bool {
	return m >= 1 && m <= maxMultiplier && !math.IsNaN(m)
}

// maxMultiplier is the largest growth factor Validate accepts.
const maxMultiplier = 100

// interval replays an ExponentialBackOff for n attempts (n >= 1).
func (c config) interval(n int) time.Duration {
	iv, _ := c.replay(n)
	return iv
}

// replay returns the interval after n attempts and whether the replay was
// cut short by maxReplay before the interval stopped growing.
func (c config) replay(n int) (time.Duration, bool) {
	b := c.exponential()
	var d, prev time.Duration
	for i := 1; i <= n; i++ {
		d = b.NextBackOff()
		if d >= c.max || (i > 1 && d == prev) {
			break // capped or stuck: every later interval is the same
		}
		if i == maxReplay {
			return max(d, c.min), i < n
		}
		prev = d
	}
	return max(d, c.min), false
}

// exponential builds the cenkalti ExponentialBackOff used as a pure interval
// generator. Every field is set: without Stop it returns 0 (retry now) after
// MaxElapsedTime, and a nil Clock panics in Reset. MaxElapsedTime 0 and the
// fixed clock make it ignore wall time; the lifetime is enforced from the
// persisted arrival time instead. RandomizationFactor 0: the jitter is added
// here, deterministically, and only ever upwards.
func (c config) exponential() *cenkalti.ExponentialBackOff {
	b := &cenkalti.ExponentialBackOff{
		InitialInterval:     c.min,
		RandomizationFactor: 0,
		Multiplier:          c.mult,
		MaxInterval:         c.max,
		MaxElapsedTime:      0,
		Stop:                cenkalti.Stop,
		Clock:               fixedClock{},
	}
	b.Reset()
	return b
}

// fixedClock is the cenkalti Clock of a replay: time does not pass.
type fixedClock struct{}

func (fixedClock) Now() time.Time { return time.Time{} }

// addJitter returns iv + iv×j×f, with f in [0, 1) derived from (seed, n), so
// the result is in [iv, iv×(1+j)).
func addJitter(iv time.Duration, j float64, seed uint64, n int) time.Duration {
	if j <= 0 {
		return iv
	}
	extra := math.Floor(float64(iv) * j * unitFloat(seed, n))
	if limit := float64(math.MaxInt64 - iv); extra > limit {
		extra = limit // saturate instead of overflowing
	}
	return iv + time.Duration(extra)
}

// unitFloat maps (seed, n) to [0, 1) with the splitmix64 finaliser.
func unitFloat(seed uint64, n int) float64 {
	z := seed + uint64(n)*0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	z ^= z >> 31
	return float64(z>>11) / (1 << 53)
}
