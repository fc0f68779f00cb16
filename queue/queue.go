package queue

import (
	"context"
	"hash/fnv"
	"log/slog"
	"sync/atomic"
	"time"
)

// Queue is the outbound mail queue: applications Enqueue messages and Run
// delivers them, deferring temporary failures on the schedule and bouncing
// permanent ones. Create one with [New]. A Queue is safe for concurrent use;
// Run (or RunOnce) may run once at a time.
type Queue struct {
	cfg Config
	log *slog.Logger

	lifetime time.Duration // cfg.Schedule's MaxLifetime, with its default
	wake     chan struct{} // poked when work may have become due
	running  atomic.Bool
	closed   atomic.Bool
}

// New returns a Queue for cfg, or a *ConfigError.
func New(cfg Config) (*Queue, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	var t0 time.Time
	q := &Queue{
		cfg:      c,
		log:      c.Logger,
		lifetime: c.Schedule.Expiry(t0).Sub(t0),
		wake:     make(chan struct{}, 1),
	}
	return q, nil
}

// Store returns the queue's store, for operator tools (List, Get, Hold …).
func (q *Queue) Store() Store { return q.cfg.Store }

// Owner returns the identity the queue writes on its leases.
func (q *Queue) Owner() string { return q.cfg.Owner }

// Hold freezes every waiting recipient of message id until Release.
func (q *Queue) Hold(ctx context.Context, id ID) error {
	return q.cfg.Store.Hold(ctx, id)
}

// Release returns the held recipients of message id to the queue, due now.
func (q *Queue) Release(ctx context.Context, id ID) error {
	err := q.cfg.Store.Release(ctx, id, q.cfg.Clock.Now())
	q.poke()
	return err
}

// Retry makes every waiting recipient of message id due now and clears the
// backoff of their destinations (the operator's flush).
func (q *Queue) Retry(ctx context.Context, id ID) error {
	err := q.cfg.Store.Retry(ctx, id, q.cfg.Clock.Now())
	q.poke()
	return err
}

// Delete removes message id without notifying its sender.
func (q *Queue) Delete(ctx context.Context, id ID) error {
	return q.cfg.Store.Delete(ctx, id)
}

// Close makes later Enqueue calls return ErrClosed. It does not stop Run
// (cancel its context) and does not close the Store or the Deliverer.
func (q *Queue) Close() error {
	q.closed.Store(true)
	return nil
}

// poke tells a running scheduler that work may be due.
func (q *Queue) poke() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// seed keys the deterministic jitter of one recipient's schedule: the same
// message and recipient always get the same jitter, across restarts.
func seed(parts ...string) uint64 {
	h := fnv.New64a()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return h.Sum64()
}
