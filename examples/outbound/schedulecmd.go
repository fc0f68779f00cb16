package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/outboundmail/outbound/backoff"
	"github.com/outboundmail/outbound/queue"
)

func scheduleFlags(fs *flag.FlagSet) func(ctx context.Context, a *app, args []string) error {
	full := fs.Bool("full", false, "list every attempt instead of eliding the regular middle")
	return func(ctx context.Context, a *app, args []string) error {
		if len(args) > 0 {
			return usagef("schedule takes no arguments")
		}
		return a.schedule(*full)
	}
}

// schedule prints when a message whose every attempt fails is tried, when
// its sender hears about the delay, and when it is given up; warnings about
// the settings go to stderr.
func (a *app) schedule(full bool) error {
	s := a.g.schedule()
	if err := s.Validate(); err != nil {
		return &exitError{code: exitConfig, err: err}
	}
	steps := s.Timeline()
	fmt.Fprintf(a.stdout, "retry schedule: first retry after %v, interval ×%v up to %v (plus up to %.0f%% jitter), give up after %s\n",
		s.Interval(1), multiplier(s), s.Interval(1<<20), 100*jitter(s), fmtOffset(lifetime(s)))
	writeTimeline(a.stdout, steps, full)
	arrived := time.Time{}
	if at, ok := s.DelayWarningAt(arrived); ok {
		fmt.Fprintf(a.stdout, "delay notice to the sender at +%s\n", fmtOffset(at.Sub(arrived)))
	} else {
		fmt.Fprintln(a.stdout, "no delay notice")
	}
	last := steps[len(steps)-1]
	fmt.Fprintf(a.stdout, "gives up (failure notice to the sender) after attempt #%d at +%s\n", last.Attempt, fmtOffset(last.Offset))
	for _, w := range s.Warnings() {
		fmt.Fprintf(a.stderr, "warning: %s\n", w)
	}
	if s.Interval(1) < queue.MinRetryDelay {
		fmt.Fprintf(a.stderr, "note: the queue waits at least %v after a temporary failure, whatever the schedule says\n", queue.MinRetryDelay)
	}
	return nil
}

func multiplier(s backoff.Schedule) float64 {
	if s.Multiplier == 0 {
		return backoff.DefaultMultiplier
	}
	return s.Multiplier
}

func jitter(s backoff.Schedule) float64 {
	switch {
	case s.Jitter == 0:
		return backoff.DefaultJitter
	case s.Jitter < 0:
		return 0
	}
	return s.Jitter
}

func lifetime(s backoff.Schedule) time.Duration {
	if s.MaxLifetime == 0 {
		return backoff.DefaultMaxLifetime
	}
	return s.MaxLifetime
}

// writeTimeline lists the attempts; a long run of equal intervals in the
// middle is shown as one line, unless full.
func writeTimeline(w io.Writer, steps []backoff.Step, full bool) {
	const head, tail = 8, 3
	for i, st := range steps {
		if !full && i == head && len(steps) > head+tail+1 {
			gap := steps[len(steps)-tail-1].Offset - steps[len(steps)-tail-2].Offset
			fmt.Fprintf(w, "  … %d more attempts, about every %v …\n", len(steps)-head-tail, gap)
		}
		if !full && i >= head && i < len(steps)-tail {
			continue
		}
		gap := ""
		if i > 0 {
			gap = "  (+" + (st.Offset - steps[i-1].Offset).String() + ")"
		}
		fmt.Fprintf(w, "  #%-4d +%s%s\n", st.Attempt, fmtOffset(st.Offset), gap)
	}
}

// fmtOffset formats an offset from arrival with days, e.g. "4d23h".
func fmtOffset(d time.Duration) string {
	if d < 24*time.Hour {
		return d.String()
	}
	days := d / (24 * time.Hour)
	rest := d % (24 * time.Hour)
	if rest == 0 {
		return fmt.Sprintf("%dd", days)
	}
	return fmt.Sprintf("%dd%v", days, rest)
}
