// Package queuetest is the conformance suite for implementations of
// [queue.Store]. It states the Store contract in executable form: every
// store (the embedded one, the PostgreSQL one, a third party's) runs it from
// its own tests, the way river's riverdrivertest exercises every driver.
//
//	func TestConformance(t *testing.T) {
//		queuetest.Run(t, func(t *testing.T) queue.Store {
//			s, err := mystore.Open(t.TempDir())
//			if err != nil {
//				t.Fatal(err)
//			}
//			t.Cleanup(func() { s.Close() })
//			return s
//		})
//	}
//
// Time in the suite never comes from the clock: every subtest starts from a
// fixed base time and advances it by hand, so lease expiry, deferral and
// destination backoff are checked at their exact boundaries. All times used
// are whole microseconds (PostgreSQL's resolution) and are compared with
// time.Time.Equal, so a store may return them in any location.
//
// Message IDs in the suite are short lower-case ASCII strings of equal length,
// so that "ordered by ID" means the same under byte order and under any SQL
// collation.
//
// Where the Store documentation leaves a detail open, the suite settles it
// as follows, and every store must agree:
//   - Recipients come back in the order they were enqueued.
//   - A recipient is due at exactly its NextAttempt, and a lease ends at
//     exactly Until: Claim at that instant returns it, a millisecond earlier
//     does not.
//   - Claim does not change a recipient's State; it changes Attempts,
//     LastAttempt and NextAttempt only.
//   - A lease stays current until its Finish, a Hold or Delete of its
//     message, or a new claim of its recipients. An expired lease that
//     nobody claimed again can still be finished; a finished lease cannot.
//   - Finish of a deleted message returns ErrLeaseLost.
//   - Release sets State Deferred if the recipient was ever attempted,
//     Queued otherwise, with NextAttempt = now.
//   - Retry leaves Held and final recipients alone and leaves every
//     destination it clears with NextAllowed not after now.
//   - An idempotency key is free again once its message is gone (finished
//     or deleted).
//   - A Finish whose notification body fails to read changes nothing, and
//     the lease stays current.
package queuetest

import (
	"testing"

	"github.com/outboundmail/outbound/queue"
)

// Opener opens a store on storage prepared by the caller of [RunReopen]. Each
// call returns a new handle on the same data; the suite closes every store it
// opens before opening the next.
type Opener func() (queue.Store, error)

type subtest struct {
	name string
	fn   func(e *env)
}

type group struct {
	name  string
	tests []subtest
}

// groups lists the subtests of Run, in the order they run.
func groups() []group {
	return []group{
		{"Enqueue", enqueueTests()},
		{"Claim", claimTests()},
		{"Probe", probeTests()},
		{"Finish", finishTests()},
		{"Hold", holdTests()},
		{"Retry", retryTests()},
		{"Delete", deleteTests()},
		{"List", listTests()},
		{"NextDue", nextDueTests()},
		{"Concurrent", concurrentTests()},
		{"Closed", closedTests()},
	}
}

// Run runs the conformance suite against stores made by newStore. newStore
// is called once per subtest and must return a fresh, empty store; it should
// arrange for the store to be closed with t.Cleanup, ignoring the ErrClosed
// of a store the suite already closed. Subtests are named like
// "Claim/SkipsLeased" and run in parallel with each other.
func Run(t *testing.T, newStore func(t *testing.T) queue.Store) {
	t.Helper()
	for _, g := range groups() {
		t.Run(g.name, func(t *testing.T) {
			for _, st := range g.tests {
				t.Run(st.name, func(t *testing.T) {
					t.Parallel()
					st.fn(newEnv(t, newStore(t)))
				})
			}
		})
	}
}

// RunReopen runs the subtests that close a store and open it again on the
// same storage ("Reopen/KeepsDeferral", …), for stores that persist.
// newStorage is called once per subtest; it prepares fresh, empty storage (a
// temporary directory, a new database schema) and returns an Opener for it.
// Stores that pass RunReopen should also pass Run.
func RunReopen(t *testing.T, newStorage func(t *testing.T) Opener) {
	t.Helper()
	t.Run("Reopen", func(t *testing.T) {
		for _, st := range reopenTests() {
			t.Run(st.name, func(t *testing.T) {
				t.Parallel()
				st.fn(t, newReopener(t, newStorage(t)))
			})
		}
	})
}
