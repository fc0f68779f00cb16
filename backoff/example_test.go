package backoff_test

import (
	"fmt"
	"time"

	"github.com/outboundmail/outbound/backoff"
)

// A store persists State per recipient; after each failed attempt the queue
// asks the Schedule when to try again.
func ExampleSchedule_Next() {
	var s backoff.Schedule // the defaults: 5m, doubling, capped at 1h, 5 days
	arrived := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	st := backoff.State{
		Attempts:    3, // the third attempt just failed
		Arrived:     arrived,
		LastAttempt: arrived.Add(15 * time.Minute), // it started at 12:15
		Seed:        0x5eed,                        // e.g. a hash of message ID + recipient
	}
	at, ok := s.Next(st)
	fmt.Println("interval:", s.Interval(st.Attempts))
	fmt.Println("next attempt after 12:35:", ok && !at.Before(arrived.Add(35*time.Minute)))
	fmt.Println("jitter under 10%:", at.Sub(st.LastAttempt) < 22*time.Minute)

	// An attempt at the expiry was the last one: bounce.
	st.LastAttempt = s.Expiry(arrived)
	_, ok = s.Next(st)
	fmt.Println("retry after expiry:", ok)
	// Output:
	// interval: 20m0s
	// next attempt after 12:35: true
	// jitter under 10%: true
	// retry after expiry: false
}

// Timeline shows what a Schedule does when every attempt fails.
func ExampleSchedule_Timeline() {
	steps := backoff.Schedule{}.Timeline()
	for i, st := range steps {
		if i < 7 || i >= len(steps)-3 {
			fmt.Println(st)
		} else if i == 7 {
			fmt.Println("… every hour …")
		}
	}
	w, _ := backoff.Schedule{}.DelayWarningAt(time.Time{})
	fmt.Println("delay DSN at +" + w.Sub(time.Time{}).String())
	// Output:
	// #1 +0s
	// #2 +5m0s
	// #3 +15m0s
	// #4 +35m0s
	// #5 +1h15m0s
	// #6 +2h15m0s
	// #7 +3h15m0s
	// … every hour …
	// #122 +118h15m0s
	// #123 +119h15m0s
	// #124 +120h0m0s
	// delay DSN at +4h0m0s
}

// Warnings explains what is questionable about a configuration.
func ExampleSchedule_Warnings() {
	s := backoff.Schedule{MinBackoff: time.Hour, MaxBackoff: 30 * time.Minute, MaxLifetime: 2 * 24 * time.Hour}
	for _, w := range s.Warnings() {
		fmt.Println(w)
	}
	fmt.Println(backoff.Schedule{Multiplier: 0.5}.Validate())
	// Output:
	// MaxLifetime 48h0m0s gives up before the 4-5 days RFC 5321 §4.5.4.1 asks for
	// MaxBackoff 30m0s is below MinBackoff 1h0m0s; every interval is 1h0m0s
	// backoff: Schedule.Multiplier = 0.5: must be between 1 and 100
}
