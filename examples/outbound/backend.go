package main

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/outboundmail/outbound/queue"
)

// backend is what the operator commands (send, queue, show, hold, …) need
// from a queue. It is the queue itself when this process can open the
// store, or the running `outbound run` that holds the embedded spool,
// reached through its control socket.
type backend interface {
	Enqueue(ctx context.Context, env queue.Envelope, body io.Reader) (queue.ID, error)
	List(ctx context.Context, p queue.ListParams) ([]*queue.Message, error)
	Get(ctx context.Context, id queue.ID) (*queue.Message, error)
	OpenBody(ctx context.Context, id queue.ID) (io.ReadCloser, error)
	Hold(ctx context.Context, id queue.ID) error
	Release(ctx context.Context, id queue.ID) error
	Delete(ctx context.Context, id queue.ID) error
	Retry(ctx context.Context, id queue.ID) error
	Close() error
}

// local is a backend on a store this process opened.
type local struct{ s *session }

func (l local) Enqueue(ctx context.Context, env queue.Envelope, body io.Reader) (queue.ID, error) {
	return l.s.q.Enqueue(ctx, env, body)
}
func (l local) List(ctx context.Context, p queue.ListParams) ([]*queue.Message, error) {
	return l.s.store.List(ctx, p)
}
func (l local) Get(ctx context.Context, id queue.ID) (*queue.Message, error) {
	return l.s.store.Get(ctx, id)
}
func (l local) OpenBody(ctx context.Context, id queue.ID) (io.ReadCloser, error) {
	return l.s.store.OpenBody(ctx, id)
}
func (l local) Hold(ctx context.Context, id queue.ID) error    { return l.s.q.Hold(ctx, id) }
func (l local) Release(ctx context.Context, id queue.ID) error { return l.s.q.Release(ctx, id) }
func (l local) Delete(ctx context.Context, id queue.ID) error  { return l.s.q.Delete(ctx, id) }
func (l local) Retry(ctx context.Context, id queue.ID) error   { return l.s.q.Retry(ctx, id) }
func (l local) Close() error                                   { return l.s.Close() }

// controlSocket is the path of the control socket of the embedded spool.
func (g *globals) controlSocket() string { return filepath.Join(g.Spool, "control.sock") }

// connect opens the queue for an operator command: directly, or through
// the control socket of the `outbound run` that holds the spool.
func (a *app) connect(ctx context.Context) (backend, error) {
	if r := a.running(ctx); r != nil {
		return r, nil
	}
	s, err := a.open(ctx, nil)
	if err != nil {
		return nil, err
	}
	return local{s}, nil
}

// running returns the running queue of the embedded spool, or nil when no
// `outbound run` answers on its control socket.
func (a *app) running(ctx context.Context) *remote {
	if a.g.Store != "" {
		return nil // PostgreSQL is shared: every process opens it itself
	}
	sock := a.g.controlSocket()
	if _, err := os.Stat(sock); err != nil {
		return nil
	}
	d := net.Dialer{Timeout: time.Second}
	c, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		return nil // stale: its server is gone
	}
	c.Close()
	return newRemote(sock)
}
