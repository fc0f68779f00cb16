package backoff

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"
)

// InvalidScheduleError reports a Schedule field whose value makes no sense.
// Validate returns one per bad field (joined with errors.Join); find them
// with errors.As.
type InvalidScheduleError struct {
	Field  string // "MinBackoff", "Multiplier", …
	Value  string // the offending value, formatted
	Reason string // what is wrong with it
}

// Error returns "backoff: Schedule.Field = Value: Reason".
func (e *InvalidScheduleError) Error() string {
	return "backoff: Schedule." + e.Field + " = " + e.Value + ": " + e.Reason
}

// Validate reports nonsense in s as *InvalidScheduleError values: negative
// durations (other than DelayWarning, where negative disables), a Multiplier
// below 1, above 100 or NaN, a Jitter above 1 or NaN. It returns nil for the
// zero Schedule. Questionable but legal settings are reported by Warnings.
func (s Schedule) Validate() error {
	var errs []error
	bad := func(field, value, reason string) {
		errs = append(errs, &InvalidScheduleError{Field: field, Value: value, Reason: reason})
	}
	if s.MinBackoff < 0 {
		bad("MinBackoff", s.MinBackoff.String(), "must not be negative")
	}
	if s.MaxBackoff < 0 {
		bad("MaxBackoff", s.MaxBackoff.String(), "must not be negative")
	}
	if s.Multiplier != 0 && !validMultiplier(s.Multiplier) {
		bad("Multiplier", formatFloat(s.Multiplier), "must be between 1 and "+strconv.Itoa(maxMultiplier))
	}
	if math.IsNaN(s.Jitter) || s.Jitter > 1 {
		bad("Jitter", formatFloat(s.Jitter), "must be at most 1 (a fraction of the interval)")
	}
	if s.MaxLifetime < 0 {
		bad("MaxLifetime", s.MaxLifetime.String(), "must not be negative")
	}
	return errors.Join(errs...)
}

func formatFloat(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

// Warnings lists legal settings that are probably mistakes, each as one
// sentence: a lifetime under the 4 days RFC 5321 §4.5.4.1 asks for, a
// MaxBackoff below MinBackoff, a first retry sooner than a minute, retries
// rarer than once a day, a delay warning that can never be sent, an interval
// that stops growing before MaxBackoff. Fields that fail Validate are
// reported there, not here. The zero Schedule has no warnings.
func (s Schedule) Warnings() []string {
	c := s.effective()
	var w []string
	if c.lifetime < 4*24*time.Hour {
		w = append(w, fmt.Sprintf("MaxLifetime %v gives up before the 4-5 days RFC 5321 §4.5.4.1 asks for", c.lifetime))
	}
	if s.MaxBackoff > 0 && s.MaxBackoff < c.min {
		w = append(w, fmt.Sprintf("MaxBackoff %v is below MinBackoff %v; every interval is %v", s.MaxBackoff, c.min, c.min))
	}
	if c.min < time.Minute {
		w = append(w, fmt.Sprintf("MinBackoff %v retries a failing destination sooner than once a minute (RFC 5321 §4.5.4.1: \"at least 30 minutes\" unless the reason is known)", c.min))
	}
	if c.max > 24*time.Hour {
		w = append(w, fmt.Sprintf("MaxBackoff %v retries less than once a day (RFC 5321 §4.5.4.1 suggests every two or three hours)", c.max))
	}
	if c.lifetime <= c.min {
		w = append(w, fmt.Sprintf("MaxLifetime %v is not longer than MinBackoff %v: a message gets a single attempt", c.lifetime, c.min))
	}
	if s.DelayWarning >= 0 && c.warn >= c.lifetime {
		w = append(w, fmt.Sprintf("DelayWarning %v is not before MaxLifetime %v: no delay DSN is ever sent", c.warn, c.lifetime))
	}
	if _, cut := c.replay(maxReplay + 1); cut {
		w = append(w, fmt.Sprintf("Multiplier %v is so close to 1 that the interval stops growing at %v, below MaxBackoff %v", c.mult, c.interval(maxReplay), c.max))
	}
	if steps := s.Timeline(); len(steps) == maxTimeline && steps[len(steps)-1].Offset < c.lifetime {
		w = append(w, fmt.Sprintf("more than %d attempts before the give-up; Timeline is truncated", maxTimeline))
	}
	return w
}

// maxTimeline bounds the length of a Timeline.
const maxTimeline = 10000

// Step is one attempt of a Timeline: attempt number Attempt (1-based) starts
// Offset after the message arrived.
type Step struct {
	Attempt int
	Offset  time.Duration
}

// String formats the step as "#3 +15m0s".
func (st Step) String() string {
	return "#" + strconv.Itoa(st.Attempt) + " +" + st.Offset.String()
}

// Timeline returns every attempt the schedule makes when every attempt fails,
// without jitter: attempt 1 at Offset 0, then one Step per retry computed by
// Next. The last Step is the final attempt; when it fails the recipient is
// given up on (bounced), so the last Offset is the give-up point. With the
// final-attempt rule of Next it equals MaxLifetime, unless the previous
// attempt was within MinBackoff of it. Timelines longer than 10000 steps are
// truncated (Warnings says so).
func (s Schedule) Timeline() []Step {
	s.Jitter = -1
	t0 := time.Unix(0, 0).UTC()
	st := State{Attempts: 1, Arrived: t0, LastAttempt: t0}
	steps := []Step{{Attempt: 1, Offset: 0}}
	for len(steps) < maxTimeline {
		at, ok := s.Next(st)
		if !ok {
			break
		}
		st.Attempts++
		st.LastAttempt = at
		steps = append(steps, Step{Attempt: st.Attempts, Offset: at.Sub(t0)})
	}
	return steps
}
