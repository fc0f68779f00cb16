//go:build race

package queue_test

// raceEnabled shrinks the simulations under the race detector, which makes
// them several times slower.
const raceEnabled = true
