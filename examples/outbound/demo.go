package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/outboundmail/outbound/backoff"
	"github.com/outboundmail/outbound/delivery"
	"github.com/outboundmail/outbound/queue"
	"github.com/outboundmail/outbound/queue/embedded"
)

// The demo's cast: every message comes from demoSender; demoUnknown does
// not exist on the receiving server.
const (
	demoSender  = "alice@outbound.example"
	demoUnknown = "nobody@example.net"
)

// demoMessages are what the demo sends.
var demoMessages = []struct {
	to      []string
	subject string
}{
	{[]string{"bob@example.net"}, "Quarterly report"},
	{[]string{"carol@example.net"}, "Lunch on Friday?"},
	{[]string{"dave@example.net", demoUnknown}, "Team update"},
	{[]string{"erin@example.net"}, "Invoice 2024-117"},
}

type demoOptions struct {
	speed   float64       // demo clock speed-up
	timeout time.Duration // real time before giving up
}

func demoFlags(fs *flag.FlagSet) func(ctx context.Context, a *app, args []string) error {
	o := demoOptions{}
	fs.Float64Var(&o.speed, "speed", 10, "how many times faster than real time the demo clock runs")
	fs.DurationVar(&o.timeout, "timeout", 25*time.Second, "give up after this much real time")
	return func(ctx context.Context, a *app, args []string) error {
		if len(args) > 0 {
			return usagef("demo takes no arguments")
		}
		if o.speed < 1 || o.speed > 1000 {
			return usagef("demo: --speed %v: want 1 to 1000", o.speed)
		}
		_, err := a.demo(ctx, o)
		return err
	}
}

// demoResult is what a demo run did, for its summary and its test.
type demoResult struct {
	Messages, Recipients int
	demoTally
	Received  []demoMessage // every message the loopback server accepted
	DSN       []byte        // the failure notice the server received for the sender
	Simulated time.Duration // on the demo clock
	Real      time.Duration
}

// demo runs the whole story on loopback: a greylisting server, a temporary
// spool, a queue on a fast clock; it shows progress, the notification, and
// a summary.
func (a *app) demo(ctx context.Context, o demoOptions) (*demoResult, error) {
	started := time.Now()
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	clock := newFastClock(o.speed)
	srv, err := startDemoServer(clock, demoUnknown)
	if err != nil {
		return nil, &exitError{code: exitUnavailable, err: fmt.Errorf("demo server: %w", err)}
	}
	defer srv.Close()
	spool, err := os.MkdirTemp("", "outbound-demo-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(spool)
	store, err := embedded.Open(spool, nil)
	if err != nil {
		return nil, err
	}
	defer store.Close()

	prog := newProgress(a.stdout, clock)
	// The library's floor after a temporary failure is a minute, and
	// its schedule is meant for real mail: the demo keeps them and runs
	// the clock faster instead.
	sched := backoff.Schedule{MinBackoff: time.Minute, MaxBackoff: 4 * time.Minute, MaxLifetime: time.Hour, DelayWarning: -1}
	d := &delivery.Deliverer{Relay: srv.Addr(), TLS: delivery.TLSDisabled, Hostname: "outbound.example"}
	defer d.Close()
	q, err := queue.New(queue.Config{
		Store: store, Deliverer: d, Schedule: sched, Clock: clock,
		StartupRamp: -1, Hostname: "outbound.example", Observer: prog,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(a.stdout, "outbound demo: SMTP server on %s (greylists first attempts, %s does not exist)\n", srv.Addr(), demoUnknown)
	fmt.Fprintf(a.stdout, "spool %s; schedule: retry after 1m, 2m, 4m; the demo clock runs %v× real time\n\n", spool, o.speed)

	res := &demoResult{Messages: len(demoMessages)}
	for i, m := range demoMessages {
		body := demoBody(i, m.to, m.subject)
		id, err := q.Enqueue(ctx, queue.Envelope{From: demoSender, To: m.to}, strings.NewReader(body))
		if err != nil {
			return nil, err
		}
		for _, r := range m.to {
			prog.add(id, r, m.subject)
			res.Recipients++
		}
	}

	runDone := make(chan error, 1)
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	go func() { runDone <- q.Run(runCtx) }()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
loop:
	for {
		select {
		case <-prog.done():
			break loop
		case err := <-runDone:
			return nil, fmt.Errorf("queue stopped early: %v", err)
		case <-ctx.Done():
			prog.render()
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return nil, fmt.Errorf("demo did not finish within %v", o.timeout)
			}
			return nil, ctx.Err()
		case <-tick.C:
			prog.render()
		}
	}
	prog.render()
	stopRun()
	<-runDone

	prog.mu.Lock()
	res.demoTally = prog.tally
	prog.mu.Unlock()
	res.Received = srv.Received()
	for _, m := range res.Received {
		if m.From == "" {
			res.DSN = m.Data
		}
	}
	res.Simulated, res.Real = clock.Elapsed(), time.Since(started)
	a.demoSummary(res)
	return res, nil
}

// demoBody is a small, well-formed message.
func demoBody(i int, to []string, subject string) string {
	return fmt.Sprintf("From: Alice <%s>\r\nTo: %s\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <demo-%d@outbound.example>\r\n\r\nHello from the outbound demo (message %d).\r\n",
		demoSender, strings.Join(to, ", "), subject, time.Now().Format(time.RFC1123Z), i+1, i+1)
}

func (a *app) demoSummary(r *demoResult) {
	w := a.stdout
	if r.DSN != nil {
		fmt.Fprintf(w, "\nThe failure notice (DSN) the loopback server received for %s:\n", demoSender)
		for _, l := range strings.SplitAfter(strings.ReplaceAll(string(r.DSN), "\r\n", "\n"), "\n") {
			if l != "" {
				fmt.Fprint(w, "  | ", l)
			}
		}
	}
	fmt.Fprintf(w, "\nSummary: %d messages to %d recipients: %d delivered, %d bounced (%d failure notice%s, delivered to the sender), %d deferrals on the way.\n",
		r.Messages, r.Recipients, r.Delivered-r.DSNs, r.Bounced, r.DSNs, plural(r.DSNs), r.Deferrals)
	fmt.Fprintf(w, "Took %s on the demo clock, %.1fs of real time.\n", roundSec(r.Simulated), r.Real.Seconds())
}
