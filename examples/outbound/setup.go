package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/outboundmail/outbound/backoff"
	"github.com/outboundmail/outbound/delivery"
	"github.com/outboundmail/outbound/queue"
	"github.com/outboundmail/outbound/queue/embedded"
	"github.com/outboundmail/outbound/queue/postgres"
)

// app is one invocation of the program: its streams, its environment and
// the global settings. Nothing in this package is global state, so commands
// run the same in tests as from a shell.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	g              globals
	// defaultLogLevel applies when --log-level is not given: "info" for
	// run, whose log is its output, "warn" for the others.
	defaultLogLevel string
}

// schedule returns the retry schedule the global flags describe.
func (g *globals) schedule() backoff.Schedule {
	return backoff.Schedule{
		MinBackoff:   g.MinBackoff,
		MaxBackoff:   g.MaxBackoff,
		MaxLifetime:  g.MaxLifetime,
		DelayWarning: g.DelayWarning,
	}
}

// logger returns the logger for stderr that --log-level and --log-format ask for.
func (a *app) logger() (*slog.Logger, error) {
	var level slog.Level
	name := a.g.LogLevel
	if name == "" {
		name = a.defaultLogLevel
	}
	if err := level.UnmarshalText([]byte(name)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", a.g.LogLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch a.g.LogFormat {
	case "text":
		return slog.New(slog.NewTextHandler(a.stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(a.stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", a.g.LogFormat)
}

// tlsPolicy maps --tls to the library's policy.
func tlsPolicy(s string) (delivery.TLSPolicy, error) {
	switch s {
	case "":
		return delivery.TLSDefault, nil
	case "disabled":
		return delivery.TLSDisabled, nil
	case "opportunistic":
		return delivery.TLSOpportunistic, nil
	case "required":
		return delivery.TLSRequired, nil
	}
	return 0, fmt.Errorf("--tls %q: want disabled, opportunistic or required", s)
}

// deliverer builds the SMTP engine from the global flags.
func (a *app) deliverer(log *slog.Logger) (*delivery.Deliverer, error) {
	pol, err := tlsPolicy(a.g.TLS)
	if err != nil {
		return nil, err
	}
	if a.g.MXPort < 1 || a.g.MXPort > 65535 {
		return nil, fmt.Errorf("--mx-port %d: not a TCP port", a.g.MXPort)
	}
	d := &delivery.Deliverer{
		Hostname: a.g.HELO,
		MXPort:   a.g.MXPort,
		Relay:    a.g.Relay,
		TLS:      pol,
		Logger:   log,
	}
	if a.g.Resolver != "" {
		d.Resolver = delivery.NewResolver(a.g.Resolver)
	}
	if a.g.AuthUser != "" {
		if a.g.Relay == "" {
			return nil, errors.New("--auth-user needs --relay: credentials are only sent to a smarthost")
		}
		pw, err := password(a.getenv)
		if err != nil {
			return nil, err
		}
		d.Auth = &delivery.Auth{Username: a.g.AuthUser, Password: pw}
	}
	return d, nil
}

// StoreBusyError reports an embedded spool held by another process, normally
// a running `outbound run`.
type StoreBusyError struct {
	Dir string
	Err error
}

// Error explains what to do about it.
func (e *StoreBusyError) Error() string {
	return fmt.Sprintf("spool %s is in use by another outbound process (is `outbound run` running? stop it, or share a queue between processes with --store postgres://…)", e.Dir)
}

// Unwrap returns the store's error.
func (e *StoreBusyError) Unwrap() error { return e.Err }

// openStore opens the store the global flags name.
func (a *app) openStore(ctx context.Context, log *slog.Logger) (queue.Store, error) {
	if a.g.Store != "" {
		if !strings.HasPrefix(a.g.Store, "postgres://") && !strings.HasPrefix(a.g.Store, "postgresql://") {
			return nil, &exitError{code: exitConfig, err: fmt.Errorf("--store: want a postgres:// URL (leave it empty for the embedded spool)")}
		}
		return postgres.Open(ctx, a.g.Store, &postgres.Options{Schema: a.g.StoreSchema, Logger: log})
	}
	// The spool holds other people's mail: only its owner may read it.
	if err := os.MkdirAll(a.g.Spool, 0o700); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	s, err := embedded.Open(a.g.Spool, nil)
	if le := (*embedded.LockedError)(nil); errors.As(err, &le) {
		return nil, &StoreBusyError{Dir: a.g.Spool, Err: err}
	}
	return s, err
}

// session is an open store with a queue on it.
type session struct {
	q     *queue.Queue
	store queue.Store
	d     *delivery.Deliverer
	log   *slog.Logger
}

// Close closes the deliverer's idle connections and the store.
func (s *session) Close() error {
	s.d.Close()
	return s.store.Close()
}

// open builds the whole stack: store, deliverer and queue. obs may be nil.
func (a *app) open(ctx context.Context, obs queue.Observer) (*session, error) {
	s, err := a.openConfig(ctx, obs)
	var ce *queue.ConfigError
	var se *backoff.InvalidScheduleError
	if errors.As(err, &ce) || errors.As(err, &se) {
		err = &exitError{code: exitConfig, err: err}
	}
	return s, err
}

func (a *app) openConfig(ctx context.Context, obs queue.Observer) (*session, error) {
	log, err := a.logger()
	if err != nil {
		return nil, &exitError{code: exitConfig, err: err}
	}
	sched := a.g.schedule()
	if err := sched.Validate(); err != nil {
		return nil, err
	}
	d, err := a.deliverer(log)
	if err != nil {
		return nil, &exitError{code: exitConfig, err: err}
	}
	if a.g.Concurrency < 1 {
		return nil, &exitError{code: exitConfig, err: fmt.Errorf("--concurrency %d: want at least 1", a.g.Concurrency)}
	}
	lease := a.g.LeaseFor
	if lease == 0 {
		lease = max(30*time.Minute, sched.Interval(1))
	}
	store, err := a.openStore(ctx, log)
	if err != nil {
		return nil, err
	}
	q, err := queue.New(queue.Config{
		Store:       store,
		Deliverer:   d,
		Schedule:    sched,
		Workers:     a.g.Concurrency,
		LeaseFor:    lease,
		StartupRamp: a.g.StartupRamp,
		Hostname:    a.g.HELO,
		Logger:      log,
		Observer:    obs,
	})
	if err != nil {
		store.Close()
		return nil, err
	}
	return &session{q: q, store: store, d: d, log: log}, nil
}
