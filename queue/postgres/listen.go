package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
)

// Reconnection delays of the listener: the first retry is immediate, then
// the delay doubles up to the maximum.
const (
	listenRetryMin = time.Second
	listenRetryMax = 30 * time.Second
)

// notifyGap is the least time between two NOTIFYs of one store. Commits
// during the gap share the NOTIFY that follows it: under load, one wakeup
// of every worker of the cluster stands for many enqueues and slot
// releases, instead of one each, and an idle store still notifies at once.
const notifyGap = 5 * time.Millisecond

// notifyTimeout bounds one NOTIFY, so that a hung server connection cannot
// stop the notifier (a lost wakeup costs a poll interval, no more).
const notifyTimeout = 10 * time.Second

// Wakeups returns a channel that receives a value when work may have become
// due on any node: a message was enqueued (after its transaction commits),
// released or retried, a connection slot was released, or a Finish queued
// notifications. It also receives
// one each time the listener has (re)connected, because notifications sent
// while it was disconnected are lost. Values coalesce: one receive may stand
// for many events.
//
// The first call starts the listener: one dedicated connection (outside the
// pool) in LISTEN, reconnecting with backoff paced by Options.Clock. It
// stops at Close. Wakeups are a latency optimisation only: a worker must
// still poll, sleeping until NextDue or a poll interval, whichever is
// sooner, and claim when it wakes for either reason.
func (s *Store) Wakeups() <-chan struct{} {
	s.listenOnce.Do(func() {
		ctx, cancel := context.WithCancel(context.Background())
		s.stop = cancel
		go s.listen(ctx)
	})
	return s.wake
}

// signal wakes the consumer without blocking.
func (s *Store) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// listen runs the LISTEN connection until ctx ends.
func (s *Store) listen(ctx context.Context) {
	defer close(s.stopped)
	cfg := s.pool.Config().ConnConfig.Copy()
	cfg.RuntimeParams["application_name"] = "outbound listener " + s.schema
	delay := time.Duration(0)
	for {
		err := s.session(ctx, cfg)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			delay = 0 // it was connected: reconnect at once
		}
		s.logger.Warn("outbound: postgres listener disconnected", "schema", s.schema, "err", err, "retry_in", delay)
		if delay > 0 {
			select {
			case <-ctx.Done():
				return
			case <-s.clock.After(delay):
			}
		}
		delay = min(max(2*delay, listenRetryMin), listenRetryMax)
	}
}

// session connects, listens, wakes the consumer (to rescan what
// it may have missed), and forwards notifications until the connection or
// ctx fails. It returns nil if it had been connected and listening.
func (s *Store) session(ctx context.Context, cfg *pgx.ConnConfig) error {
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		conn.Close(closeCtx) //nolint:errcheck // the connection is dropped either way
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{s.channel}.Sanitize()); err != nil {
		return err
	}
	s.signal()
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return nil
		}
		s.signal()
	}
}

// notifier sends the NOTIFYs that wakeWorkers asks for, each in a
// transaction of its own that does not wait for the disk, after the
// commits that asked (see the wakeWorkers query). A request that arrives
// while a NOTIFY is under way is served by the next one, which starts after
// the request, so every commit is followed by a NOTIFY sent after it; at
// most one is under way at a time, and they are notifyGap apart. At Close
// it sends the one still owed and exits.
func (s *Store) notifier() {
	defer close(s.notifyDone)
	gap := time.NewTimer(0)
	defer gap.Stop()
	for {
		select {
		case <-s.notifyReq:
		case <-s.notifyStop:
			select {
			case <-s.notifyReq:
				s.notify()
			default:
			}
			return
		}
		s.notify()
		gap.Reset(notifyGap)
		select {
		case <-gap.C:
		case <-s.notifyStop:
		}
	}
}

// notify sends one NOTIFY. A failure only costs latency, so it is logged,
// not returned.
func (s *Store) notify() {
	ctx, cancel := context.WithTimeout(context.Background(), notifyTimeout)
	defer cancel()
	if _, err := s.pool.Exec(ctx, s.q.wakeWorkers); err != nil {
		s.logger.Warn("outbound: postgres NOTIFY failed", "schema", s.schema, "err", err)
	}
}
