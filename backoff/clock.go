package backoff

import "time"

// Clock is the time source of everything in outbound that reads the time or
// waits. Production code uses [System]; tests use a fake clock (for example
// *clockwork.FakeClock from github.com/jonboulle/clockwork, which satisfies
// Clock) so that "retry after 5 minutes" and "give up after 5 days" run in
// milliseconds without sleeping.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// After returns a channel that receives the time once d has elapsed.
	After(d time.Duration) <-chan time.Time
}

// System is the Clock of the operating system. Its zero value is ready to use.
type System struct{}

// Now returns time.Now().
func (System) Now() time.Time { return time.Now() }

// After returns time.After(d).
func (System) After(d time.Duration) <-chan time.Time { return time.After(d) }

var _ Clock = System{}
