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
