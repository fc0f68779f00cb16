//go:build !race

package delivery_test

// raceEnabled lets slow, data-heavy tests use less data under -race.
const raceEnabled = false
