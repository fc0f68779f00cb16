package deliverytest

import (
	"context"
	"fmt"
	"sync"
)

// notifier guards a server's recorded state and wakes waiters on each change,
// so that tests wait on a channel instead of sleeping and polling.
type notifier struct {
	mu      sync.Mutex
	changed chan struct{} // closed and replaced by every update; nil until first use
}

// update runs f under the lock and wakes the waiters.
func (n *notifier) update(f func()) {
	n.mu.Lock()
	defer n.mu.Unlock()
	f()
	if n.changed != nil {
		close(n.changed)
		n.changed = nil
	}
}

// wait calls cond under the lock until it returns true or ctx ends.
func (n *notifier) wait(ctx context.Context, what string, cond func() bool) error {
	for {
		n.mu.Lock()
		ok := cond()
		if n.changed == nil {
			n.changed = make(chan struct{})
		}
		ch := n.changed
		n.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("deliverytest: waiting for %s: %w", what, ctx.Err())
		}
	}
}
