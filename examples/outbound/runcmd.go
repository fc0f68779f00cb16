package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"time"

	"github.com/outboundmail/outbound/queue"
)

type runOptions struct {
	once  bool // one pass over what is due now
	drain bool // run until nothing is left waiting
}

func runFlags(fs *flag.FlagSet) func(ctx context.Context, a *app, args []string) error {
	var o runOptions
	fs.BoolVar(&o.once, "once", false, "one pass over what is due now, then exit")
	fs.BoolVar(&o.drain, "drain", false, "run until the queue is empty (retries included), then exit")
	return func(ctx context.Context, a *app, args []string) error {
		if len(args) > 0 {
			return usagef("run takes no arguments")
		}
		if o.once && o.drain {
			return usagef("run: --once and --drain exclude each other")
		}
		return a.run(ctx, o)
	}
}

// logObserver writes one log line per recipient outcome, like Postfix's
// mail log, and tells drain (when not nil) that an attempt finished.
type logObserver struct {
	log      *slog.Logger
	finished chan<- struct{}
}

func (o *logObserver) Observe(e queue.Event) {
	attrs := []slog.Attr{slog.String("id", string(e.Message))}
	if e.Recipient != "" {
		attrs = append(attrs, slog.String("to", e.Recipient))
	}
	if e.Result != nil {
		attrs = append(attrs, slog.String("result", outcomeText(e.Result)))
	}
	level := slog.LevelInfo
	switch e.Kind {
	case queue.EventAttemptStarted:
		return
	case queue.EventAttemptFinished:
		if o.finished != nil {
			select {
			case o.finished <- struct{}{}:
			default:
			}
		}
		if !e.DestinationUnavailable {
			return
		}
		level = slog.LevelWarn
		attrs = append(attrs, slog.String("destination", e.Destination), slog.Time("next_allowed", e.NextAttempt))
	case queue.EventDeferred:
		attrs = append(attrs, slog.Int("attempts", e.Attempts), slog.Time("next_attempt", e.NextAttempt))
	case queue.EventBounced, queue.EventExpired, queue.EventDelayWarning:
		if e.DSN != "" {
			attrs = append(attrs, slog.String("dsn", string(e.DSN)))
		}
	case queue.EventPossibleDuplicate:
		level = slog.LevelWarn
	}
	o.log.LogAttrs(context.Background(), level, e.Kind.String(), attrs...)
}

// run delivers the queue until ctx ends (SIGINT, SIGTERM), for one pass, or
// until the queue is empty.
func (a *app) run(ctx context.Context, o runOptions) error {
	a.defaultLogLevel = "info"
	finished := make(chan struct{}, 1)
	obs := &logObserver{finished: finished}
	s, err := a.open(ctx, obs)
	if err != nil {
		return tempFail(err)
	}
	defer s.Close()
	obs.log = s.log
	if a.g.Store == "" {
		// Other commands cannot open the spool while this process holds
		// it: they reach the queue through this socket instead.
		stop, err := serveControl(a.g.controlSocket(), local{s}, s.log)
		if err != nil {
			s.log.Warn("operator commands cannot reach this queue while it runs", "error", err)
		} else {
			defer stop()
		}
	}
	if o.once {
		st, err := s.q.RunOnce(ctx)
		fmt.Fprintf(a.stdout, "attempts %d, delivered %d, deferred %d, bounced %d, expired %d\n",
			st.Attempts, st.Delivered, st.Deferred, st.Bounced, st.Expired)
		return err
	}
	if o.drain {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		go drainWatch(ctx, s.store, finished, cancel, s.log)
	}
	s.log.Info("queue running", "owner", s.q.Owner())
	err = s.q.Run(ctx)
	s.log.Info("queue stopped")
	return err
}

// drainWatch cancels the run once the store has nothing waiting: checked at
// the start and after every attempt.
func drainWatch(ctx context.Context, st queue.Store, finished <-chan struct{}, stop context.CancelFunc, log *slog.Logger) {
	for {
		_, ok, err := st.NextDue(ctx, time.Now())
		if err == nil && !ok {
			log.Info("queue empty, stopping")
			stop()
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-finished:
		}
	}
}
