package main

import (
	"time"
)

// fastClock is a backoff.Clock that runs speed times faster than the wall
// clock, from the moment it is made. The demo uses it to compress a retry
// schedule whose floors (a minute after a temporary failure, at least)
// are sized for real mail: the queue sees minutes pass while the viewer
// waits seconds. Everything the queue decides is exactly what it would
// decide in real time.
type fastClock struct {
	start time.Time // wall clock at creation; its monotonic reading is used
	speed float64
}

func newFastClock(speed float64) *fastClock {
	return &fastClock{start: time.Now(), speed: speed}
}

// Now returns the simulated time.
func (c *fastClock) Now() time.Time {
	return c.start.Add(time.Duration(float64(time.Since(c.start)) * c.speed))
}

// After fires once d of simulated time has passed, with the simulated time.
func (c *fastClock) After(d time.Duration) <-chan time.Time {
	ch := make(chan time.Time, 1)
	time.AfterFunc(time.Duration(float64(d)/c.speed), func() { ch <- c.Now() })
	return ch
}

// Elapsed returns the simulated time since the clock started.
func (c *fastClock) Elapsed() time.Duration { return c.Now().Sub(c.start) }
