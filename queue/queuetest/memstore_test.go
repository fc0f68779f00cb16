package queuetest_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/outboundmail/outbound/queue"
	"github.com/outboundmail/outbound/queue/queuetest"
)

// memStore is the simplest store that meets the contract: everything in
// maps under one mutex, every query a full scan. It checks the suite itself
// and serves as an executable reading of the contract; it is not fast and
// does not persist.
type memStore struct {
	mu     sync.Mutex
	closed bool
	msgs   map[queue.ID]*memMsg
	keys   map[string]queue.ID
	dests  map[string]queue.DestinationStatus
	token  int64
}

type memMsg struct {
	m      *queue.Message
	body   []byte
	tokens []int64 // per recipient: the current lease, 0 when none
}

func newMemStore() *memStore {
	return &memStore{msgs: map[queue.ID]*memMsg{}, keys: map[string]queue.ID{}, dests: map[string]queue.DestinationStatus{}}
}

func cloneMsg(m *queue.Message) *queue.Message {
	c := *m
	c.Recipients = slices.Clone(m.Recipients)
	for i := range c.Recipients {
		r := &c.Recipients[i]
		r.Notify = slices.Clone(r.Notify)
		if r.LastResult != nil {
			o := *r.LastResult
			r.LastResult = &o
		}
	}
	return &c
}

func waiting(s queue.RecipientState) bool { return s == queue.Queued || s == queue.Deferred }

func (s *memStore) Enqueue(ctx context.Context, p queue.EnqueueParams) (queue.ID, error) {
	body, err := io.ReadAll(p.Body)
	if err != nil {
		return "", fmt.Errorf("memstore: reading body: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return "", queue.ErrClosed
	}
	return s.insert(p.Message, body)
}

func (s *memStore) insert(m *queue.Message, body []byte) (queue.ID, error) {
	if id, ok := s.keys[m.IdempotencyKey]; ok && m.IdempotencyKey != "" {
		return id, nil
	}
	if _, ok := s.msgs[m.ID]; ok {
		return "", fmt.Errorf("memstore: duplicate ID %s", m.ID)
	}
	c := cloneMsg(m)
	c.Size = int64(len(body))
	s.msgs[m.ID] = &memMsg{m: c, body: body, tokens: make([]int64, len(c.Recipients))}
	if m.IdempotencyKey != "" {
		s.keys[m.IdempotencyKey] = m.ID
	}
	return m.ID, nil
}

func (s *memStore) remove(id queue.ID) {
	mm := s.msgs[id]
	delete(s.msgs, id)
	if mm.m.IdempotencyKey != "" {
		delete(s.keys, mm.m.IdempotencyKey)
	}
}

type group struct {
	id   queue.ID
	dest string
	at   time.Time
}

func (s *memStore) Claim(ctx context.Context, p queue.ClaimParams) ([]*queue.Lease, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, queue.ErrClosed
	}
	limit := max(p.Limit, 1)
	groups := map[[2]string]*group{}
	for id, mm := range s.msgs {
		if p.Message != "" && id != p.Message {
			continue
		}
		expiring := !p.ExpireArrivedBefore.IsZero() && mm.m.Arrived.Before(p.ExpireArrivedBefore)
		for _, r := range mm.m.Recipients {
			if !waiting(r.State) || r.NextAttempt.After(p.Now) {
				continue
			}
			if (s.dests[r.Destination].NextAllowed.After(p.Now) || slices.Contains(p.ExcludeDestinations, r.Destination)) && !expiring {
				continue
			}
			k := [2]string{string(id), r.Destination}
			if g := groups[k]; g == nil || r.NextAttempt.Before(g.at) {
				groups[k] = &group{id: id, dest: r.Destination, at: r.NextAttempt}
			}
		}
	}
	var gs []*group
	for _, g := range groups {
		gs = append(gs, g)
	}
	sort.Slice(gs, func(i, j int) bool {
		if !gs[i].at.Equal(gs[j].at) {
			return gs[i].at.Before(gs[j].at)
		}
		return gs[i].id < gs[j].id
	})
	var out []*queue.Lease
	probed := map[string]bool{}
	for _, g := range gs {
		if len(out) == limit {
			break
		}
		if probed[g.dest] {
			continue
		}
		d := s.dests[g.dest]
		probe := d.ConsecutiveFailures > 0 && !d.NextAllowed.After(p.Now)
		if probe {
			probed[g.dest] = true
			d.Name = g.dest
			d.NextAllowed = p.Now.Add(p.LeaseFor)
			s.dests[g.dest] = d
		}
		s.token++
		mm := s.msgs[g.id]
		l := &queue.Lease{Destination: g.dest, Owner: p.Owner, Token: s.token, Until: p.Now.Add(p.LeaseFor)}
		for i := range mm.m.Recipients {
			r := &mm.m.Recipients[i]
			if r.Destination == g.dest && waiting(r.State) && !r.NextAttempt.After(p.Now) {
				r.Attempts++
				r.LastAttempt = p.Now
				r.NextAttempt = l.Until
				mm.tokens[i] = l.Token
				l.Recipients = append(l.Recipients, r.Address)
			}
		}
		l.Message = cloneMsg(mm.m)
		out = append(out, l)
	}
	return out, nil
}

func (s *memStore) Finish(ctx context.Context, p queue.FinishParams) error {
	var bodies [][]byte
	for _, n := range p.Notifications {
		b, err := io.ReadAll(n.Body)
		if err != nil {
			return fmt.Errorf("memstore: reading notification: %w", err)
		}
		bodies = append(bodies, b)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return queue.ErrClosed
	}
	mm := s.msgs[p.Lease.Message.ID]
	if mm == nil {
		return queue.ErrLeaseLost
	}
	idx := map[string]int{}
	for i, r := range mm.m.Recipients {
		if r.Destination == p.Lease.Destination {
			idx[r.Address] = i
		}
	}
	for _, a := range p.Lease.Recipients {
		if i, ok := idx[a]; !ok || mm.tokens[i] != p.Lease.Token {
			return queue.ErrLeaseLost
		}
	}
	for _, u := range p.Recipients {
		i, ok := idx[u.Address]
		if !ok || mm.tokens[i] != p.Lease.Token {
			return fmt.Errorf("memstore: %s is not in the lease", u.Address)
		}
		r := &mm.m.Recipients[i]
		r.State = u.State
		if u.State == queue.Deferred {
			r.NextAttempt = u.NextAttempt
		}
		if u.Result != nil {
			o := *u.Result
			r.LastResult = &o
		}
		r.PossibleDuplicate = r.PossibleDuplicate || u.PossibleDuplicate
		r.DelayWarned = r.DelayWarned || u.DelayWarned
	}
	for _, a := range p.Lease.Recipients {
		mm.tokens[idx[a]] = 0
	}
	if p.Destination != nil {
		d := *p.Destination
		d.Name = p.Lease.Destination
		s.dests[d.Name] = d
	}
	for _, d := range p.Destinations {
		s.dests[d.Name] = d
	}
	for i, n := range p.Notifications {
		if _, err := s.insert(n.Message, bodies[i]); err != nil {
			return err // a real store would roll everything back; the suite never gets here
		}
	}
	if !slices.ContainsFunc(mm.m.Recipients, func(r queue.Recipient) bool { return !r.State.Final() }) {
		s.remove(mm.m.ID)
	}
	return nil
}

func (s *memStore) lookup(id queue.ID) (*memMsg, error) {
	if s.closed {
		return nil, queue.ErrClosed
	}
	mm := s.msgs[id]
	if mm == nil {
		return nil, queue.ErrNotFound
	}
	return mm, nil
}

func (s *memStore) Get(ctx context.Context, id queue.ID) (*queue.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	mm, err := s.lookup(id)
	if err != nil {
		return nil, err
	}
	return cloneMsg(mm.m), nil
}

func (s *memStore) OpenBody(ctx context.Context, id queue.ID) (io.ReadCloser, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	mm, err := s.lookup(id)
	if err != nil {
		return nil, err
	}
	return io.NopCloser(bytes.NewReader(mm.body)), nil
}

func (s *memStore) List(ctx context.Context, p queue.ListParams) ([]*queue.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, queue.ErrClosed
	}
	var out []*queue.Message
	for _, mm := range s.msgs {
		m := mm.m
		if (p.AfterID != "" && m.ID <= p.AfterID) || (!p.ArrivedBefore.IsZero() && !m.Arrived.Before(p.ArrivedBefore)) {
			continue
		}
		okState, okDest := len(p.States) == 0, p.Destination == ""
		for _, r := range m.Recipients {
			okState = okState || slices.Contains(p.States, r.State)
			okDest = okDest || r.Destination == p.Destination
		}
		if okState && okDest {
			out = append(out, cloneMsg(m))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	if p.Limit > 0 && len(out) > p.Limit {
		out = out[:p.Limit]
	}
	return out, nil
}

func (s *memStore) NextDue(ctx context.Context, now time.Time) (time.Time, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return time.Time{}, false, queue.ErrClosed
	}
	var best time.Time
	found := false
	for _, mm := range s.msgs {
		for _, r := range mm.m.Recipients {
			if !waiting(r.State) {
				continue
			}
			t := r.NextAttempt
			if na := s.dests[r.Destination].NextAllowed; na.After(t) {
				t = na
			}
			if !found || t.Before(best) {
				best, found = t, true
			}
		}
	}
	return best, found, nil
}

func (s *memStore) Destination(ctx context.Context, name string) (*queue.DestinationStatus, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, queue.ErrClosed
	}
	d := s.dests[name]
	d.Name = name
	return &d, nil
}

// change applies f to every recipient of id under the lock.
func (s *memStore) change(id queue.ID, f func(mm *memMsg, i int, r *queue.Recipient)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	mm, err := s.lookup(id)
	if err != nil {
		return err
	}
	for i := range mm.m.Recipients {
		f(mm, i, &mm.m.Recipients[i])
	}
	return nil
}

func (s *memStore) Hold(ctx context.Context, id queue.ID) error {
	return s.change(id, func(mm *memMsg, i int, r *queue.Recipient) {
		mm.tokens[i] = 0
		if waiting(r.State) {
			r.State = queue.Held
		}
	})
}

func (s *memStore) Release(ctx context.Context, id queue.ID, now time.Time) error {
	return s.change(id, func(mm *memMsg, i int, r *queue.Recipient) {
		if r.State == queue.Held {
			r.State = queue.Deferred
			if r.Attempts == 0 {
				r.State = queue.Queued
			}
			r.NextAttempt = now
		}
	})
}

func (s *memStore) Retry(ctx context.Context, id queue.ID, now time.Time) error {
	return s.change(id, func(mm *memMsg, i int, r *queue.Recipient) {
		if waiting(r.State) && mm.tokens[i] == 0 {
			r.NextAttempt = now
			d := s.dests[r.Destination]
			d.NextAllowed = time.Time{}
			s.dests[r.Destination] = d
		}
	})
}

func (s *memStore) Delete(ctx context.Context, id queue.ID) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.lookup(id); err != nil {
		return err
	}
	s.remove(id)
	return nil
}

func (s *memStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return queue.ErrClosed
	}
	s.closed = true
	return nil
}

var _ queue.Store = (*memStore)(nil)

func TestMemStore(t *testing.T) {
	queuetest.Run(t, func(t *testing.T) queue.Store { return newMemStore() })
}

// TestMemStoreReopen runs the reopen subtests against a memStore that is
// "reopened" by reusing its data under a new handle.
func TestMemStoreReopen(t *testing.T) {
	queuetest.RunReopen(t, func(t *testing.T) queuetest.Opener {
		var cur *memStore
		return func() (queue.Store, error) {
			next := newMemStore()
			if cur != nil {
				cur.mu.Lock()
				next.msgs, next.keys, next.dests, next.token = cur.msgs, cur.keys, cur.dests, cur.token
				cur.mu.Unlock()
			}
			cur = next
			return next, nil
		}
	})
}
