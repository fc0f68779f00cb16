package delivery

import (
	"context"
	"slices"
	"sync"
	"time"
)

// poolLimits are Deliverer's reuse settings with defaults applied.
type poolLimits struct {
	maxConns int           // open connections per destination; <= 0: no limit
	maxMsgs  int           // transactions per connection; <= 1: no reuse
	idle     time.Duration // idle lifetime; < 0: no reuse
	maxIdle  int           // idle connections per destination; < 0: no reuse
}

func (l poolLimits) reuse() bool { return l.maxMsgs > 1 && l.idle > 0 && l.maxIdle > 0 }

// pool keeps connections per destination, as http.Transport does per host:
// it counts the open ones against MaxConnsPerDestination, keeps the idle
// ones for reuse, and lets Deliver calls wait for a free one. The zero
// value is ready for use.
type pool struct {
	mu    sync.Mutex
	dests map[string]*destConns
}

type destConns struct {
	open    int        // connections counted against the limit: busy, idle or being dialled
	idle    []*session // most recently used last
	waiters []chan struct{}
}

// get returns an idle session for dest (when idleOK), or nil and a
// reserved slot for a new connection, which the caller must give back with
// release if the connection fails, or with put. It waits while dest is at
// its limit, until ctx is done.
func (p *pool) get(ctx context.Context, dest string, lim poolLimits, idleOK bool) (*session, error) {
	for {
		var stale []*session
		p.mu.Lock()
		dc := p.dest(dest)
		var found *session
		for idleOK && found == nil && len(dc.idle) > 0 {
			s := dc.idle[len(dc.idle)-1]
			dc.idle = dc.idle[:len(dc.idle)-1]
			s.idleTimer.Stop()
			if time.Since(s.idleSince) >= lim.idle {
				dc.open--
				stale = append(stale, s)
				continue
			}
			found = s
		}
		reserved := false
		var wait chan struct{}
		switch {
		case found != nil:
		case lim.maxConns <= 0 || dc.open < lim.maxConns:
			dc.open++
			reserved = true
		default:
			wait = make(chan struct{})
			dc.waiters = append(dc.waiters, wait)
		}
		p.mu.Unlock()
		for _, s := range stale {
			s.quit()
		}
		if found != nil || reserved {
			return found, nil
		}
		select {
		case <-wait:
		case <-ctx.Done():
			p.mu.Lock()
			if i := slices.Index(dc.waiters, wait); i >= 0 {
				dc.waiters = slices.Delete(dc.waiters, i, i+1)
			} else {
				p.wake(dc) // we were woken: pass it on
			}
			p.forget(dest, dc)
			p.mu.Unlock()
			return nil, context.Cause(ctx)
		}
	}
}

// put takes back a session after an attempt: it is kept idle if it is
// healthy and the limits allow, and closed otherwise.
func (p *pool) put(s *session, lim poolLimits) {
	keep := !s.broken && !s.wc.desynced() && lim.reuse() && s.transactions < lim.maxMsgs
	p.mu.Lock()
	dc := p.dest(s.dest)
	if keep && len(dc.idle) < lim.maxIdle {
		s.idleSince = time.Now()
		s.idleTimer = time.AfterFunc(lim.idle, func() { p.expire(s) })
		dc.idle = append(dc.idle, s)
		p.wake(dc)
		p.mu.Unlock()
		return
	}
	dc.open--
	p.wake(dc)
	p.forget(s.dest, dc)
	p.mu.Unlock()
	s.quit()
}

// release gives back a slot reserved by get whose connection failed.
func (p *pool) release(dest string) {
	p.mu.Lock()
	dc := p.dest(dest)
	dc.open--
	p.wake(dc)
	p.forget(dest, dc)
	p.mu.Unlock()
}

// expire closes s if it is still idle when its timer fires.
func (p *pool) expire(s *session) {
	p.mu.Lock()
	dc := p.dest(s.dest)
	i := slices.Index(dc.idle, s)
	if i >= 0 {
		dc.idle = slices.Delete(dc.idle, i, i+1)
		dc.open--
		p.wake(dc)
		p.forget(s.dest, dc)
	}
	p.mu.Unlock()
	if i >= 0 {
		s.quit()
	}
}

// closeIdle closes every idle session.
func (p *pool) closeIdle() {
	var all []*session
	p.mu.Lock()
	for dest, dc := range p.dests {
		for _, s := range dc.idle {
			s.idleTimer.Stop()
			all = append(all, s)
			dc.open--
			p.wake(dc)
		}
		dc.idle = nil
		p.forget(dest, dc)
	}
	p.mu.Unlock()
	for _, s := range all {
		s.quit()
	}
}

// idleCount returns the number of idle sessions for dest.
func (p *pool) idleCount(dest string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if dc := p.dests[dest]; dc != nil {
		return len(dc.idle)
	}
	return 0
}

// dest returns the entry for dest, creating it. p.mu must be held.
func (p *pool) dest(dest string) *destConns {
	if p.dests == nil {
		p.dests = make(map[string]*destConns)
	}
	dc := p.dests[dest]
	if dc == nil {
		dc = &destConns{}
		p.dests[dest] = dc
	}
	return dc
}

// forget drops an unused entry, so that the map does not grow with every
// destination ever seen. p.mu must be held.
func (p *pool) forget(dest string, dc *destConns) {
	if dc.open == 0 && len(dc.waiters) == 0 && len(dc.idle) == 0 {
		delete(p.dests, dest)
	}
}

// wake lets the first waiter for dc try again. p.mu must be held.
func (p *pool) wake(dc *destConns) {
	if len(dc.waiters) > 0 {
		close(dc.waiters[0])
		dc.waiters = dc.waiters[1:]
	}
}
