package embedded

import (
	"bytes"
	"container/heap"
	"context"
	"errors"
	"time"

	"github.com/outboundmail/outbound/queue"
)

// Claim leases due work; see queue.Store. It reads only the destinations
// that may be contacted now (the ddue index up to Now) and, for each, the
// due entries it takes (rdue): a destination in backoff with 10,000 due
// recipients costs nothing, and a queue of a million messages waiting for
// later costs nothing either. Destinations are merged by their earliest due
// entry so the oldest work goes first across all of them. An excluded
// destination costs one map lookup. Restricted to one message
// (ClaimParams.Message), it reads that message and its destinations only.
func (s *Store) Claim(ctx context.Context, p queue.ClaimParams) ([]*queue.Lease, error) {
	end, err := s.begin()
	if err != nil {
		return nil, err
	}
	defer end()
	if err := checkCtx(ctx); err != nil {
		return nil, err
	}
	if p.LeaseFor <= 0 {
		return nil, &InvalidError{Op: "Claim", Reason: "LeaseFor must be positive"}
	}
	var (
		leases []*queue.Lease
		scans  int
	)
	err = s.write(func(b *btx) (bool, error) {
		leases = nil
		picks, repairs, arrRepairs := b.selectDue(p)
		scans = b.scanned
		changed := false
		for _, k := range repairs {
			if err := b.repair(k); err != nil {
				return false, err
			}
		}
		for _, k := range arrRepairs {
			b.dirty = true
			if err := b.arr.Delete(k); err != nil {
				return false, err
			}
		}
		for _, pk := range picks {
			l, err := b.lease(p, pk)
			if err != nil {
				return false, err
			}
			if l != nil {
				leases = append(leases, l)
				changed = true
			}
		}
		return changed || b.dirty, nil
	})
	s.claimScans.Add(int64(scans))
	if err != nil {
		return nil, err
	}
	return leases, nil
}

// pick is one (message, destination) group chosen by selectDue.
type pick struct {
	id     queue.ID
	dest   string
	rdue   []byte // the index entry that chose it; nil for the expiry path
	probe  bool   // the destination is failing: move its NextAllowed
	expiry bool   // chosen because the message is older than ExpireArrivedBefore
}

// dueHead is the first unvisited due entry of one destination.
type dueHead struct {
	key   []byte
	t     int64
	id    string
	dest  string
	probe bool
}

type dueHeap []*dueHead

func (h dueHeap) Len() int { return len(h) }
func (h dueHeap) Less(i, j int) bool {
	if h[i].t != h[j].t {
		return h[i].t < h[j].t
	}
	if h[i].id != h[j].id {
		return h[i].id < h[j].id
	}
	return h[i].dest < h[j].dest
}
func (h dueHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *dueHeap) Push(x any)   { *h = append(*h, x.(*dueHead)) }
func (h *dueHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// selectDue chooses up to Limit groups without writing (bbolt cursors must
// not see writes). repairs and arrRepairs are rdue and arr keys that point
// at nothing.
func (b *btx) selectDue(p queue.ClaimParams) (picks []pick, repairs, arrRepairs [][]byte) {
	limit := max(p.Limit, 1)
	now := nanos(p.Now)
	excluded := make(map[string]bool, len(p.ExcludeDestinations))
	for _, d := range p.ExcludeDestinations {
		excluded[d] = true
	}
	seen := map[[2]string]bool{}
	add := func(pk pick) {
		k := [2]string{string(pk.id), pk.dest}
		if !seen[k] {
			seen[k] = true
			picks = append(picks, pk)
		}
	}
	if p.Message != "" {
		return b.selectMessage(p, excluded), nil, nil
	}

	// Messages past their lifetime go first and ignore destination backoff
	// and exclusions: they are about to be expired, not delivered.
	if !p.ExpireArrivedBefore.IsZero() {
		before := nanos(p.ExpireArrivedBefore)
		c := b.arr.Cursor()
		for k, _ := c.First(); k != nil && len(picks) < limit; k, _ = c.Next() {
			b.scanned++
			if len(k) < timeLen || readTime(k) >= before {
				break
			}
			id := queue.ID(k[timeLen:])
			r, err := b.loadMsg(id)
			if r == nil && err == nil {
				arrRepairs = append(arrRepairs, bytes.Clone(k)) // its message was quarantined
			}
			if r == nil || err != nil {
				continue // a corrupt record is quarantined when met through rdue
			}
			for _, rc := range r.msg.Recipients {
				if waiting(rc.State) && nanos(rc.NextAttempt) <= now && len(picks) < limit {
					add(pick{id: id, dest: rc.Destination, expiry: true})
				}
			}
		}
	}

	h := dueHeap{}
	c := b.ddue.Cursor()
	rc := b.rdue.Cursor()
	for k, _ := c.First(); k != nil && len(picks) < limit; k, _ = c.Next() {
		b.scanned++
		if len(k) < timeLen || readTime(k) > now {
			break
		}
		dest := string(k[timeLen:])
		if excluded[dest] {
			continue
		}
		probe := false
		if v := b.dest.Get([]byte(dest)); v != nil {
			d, err := decodeDest(v) // a corrupt one is healed when written
			probe = err == nil && d.st.ConsecutiveFailures > 0
		}
		if hd := b.dueAt(rc, destPrefix(dest), nil, now); hd != nil {
			hd.dest, hd.probe = dest, probe
			h = append(h, hd)
		}
	}
	heap.Init(&h)
	for h.Len() > 0 && len(picks) < limit {
		hd := h[0]
		id := queue.ID(hd.id)
		if v := b.msg.Get([]byte(id)); v == nil {
			repairs = append(repairs, hd.key)
		} else if !seen[[2]string{hd.id, hd.dest}] {
			add(pick{id: id, dest: hd.dest, rdue: hd.key, probe: hd.probe})
			if hd.probe {
				heap.Pop(&h) // one probe per failing destination
				continue
			}
		}
		if next := b.dueAt(rc, destPrefix(hd.dest), hd.key, now); next != nil {
			next.dest, next.probe = hd.dest, hd.probe
			h[0] = next
			heap.Fix(&h, 0)
		} else {
			heap.Pop(&h)
		}
	}
	return picks, repairs, arrRepairs
}

// selectMessage is selectDue restricted to one message: its record alone
// is read, and the status of each destination it has due recipients at.
// A corrupt record is left to the index walk, which quarantines it.
func (b *btx) selectMessage(p queue.ClaimParams, excluded map[string]bool) (picks []pick) {
	r, err := b.loadMsg(p.Message)
	if r == nil || err != nil {
		return nil
	}
	now, limit := nanos(p.Now), max(p.Limit, 1)
	expiring := !p.ExpireArrivedBefore.IsZero() && r.msg.Arrived.Before(p.ExpireArrivedBefore)
	done := map[string]bool{}
	for _, rc := range r.msg.Recipients {
		if len(picks) == limit {
			break
		}
		if !waiting(rc.State) || nanos(rc.NextAttempt) > now || done[rc.Destination] {
			continue
		}
		done[rc.Destination] = true
		pk := pick{id: p.Message, dest: rc.Destination, expiry: expiring}
		if !expiring {
			if excluded[rc.Destination] {
				continue
			}
			if v := b.dest.Get([]byte(rc.Destination)); v != nil {
				d, err := decodeDest(v) // a corrupt one is healed when written
				if err == nil && nanos(d.st.NextAllowed) > now {
					continue
				}
				pk.probe = err == nil && d.st.ConsecutiveFailures > 0
			}
		}
		picks = append(picks, pk)
	}
	return picks
}

// dueAt returns the first rdue entry of prefix after the key after (or the
// first of all when after is nil) that is due at now, or nil.
func (b *btx) dueAt(c interface {
	Seek([]byte) ([]byte, []byte)
	Next() ([]byte, []byte)
}, prefix, after []byte, now int64) *dueHead {
	var k []byte
	if after == nil {
		k, _ = c.Seek(prefix)
	} else if k, _ = c.Seek(after); bytes.Equal(k, after) {
		k, _ = c.Next()
	}
	b.scanned++
	if k == nil || !bytes.HasPrefix(k, prefix) || len(k) < len(prefix)+timeLen {
		return nil
	}
	t := readTime(k[len(prefix):])
	if t > now {
		return nil
	}
	return &dueHead{key: bytes.Clone(k), t: t, id: string(k[len(prefix)+timeLen:])}
}

// repair deletes an rdue entry whose message is gone and refiles its
// destination.
func (b *btx) repair(k []byte) error {
	b.dirty = true
	dest, _, _, ok := parseRDue(k)
	if err := b.rdue.Delete(k); err != nil || !ok {
		return err
	}
	return b.refreshDest(dest)
}

// lease claims the due recipients of one pick. It returns nil if, on a
// closer look, none is due (the index entry was stale and is repaired) or the
// record is corrupt (it is quarantined).
func (b *btx) lease(p queue.ClaimParams, pk pick) (*queue.Lease, error) {
	old, err := b.loadMsg(pk.id)
	var ce *CorruptError
	if errors.As(err, &ce) {
		if pk.rdue != nil {
			if err := b.repair(pk.rdue); err != nil {
				return nil, err
			}
		}
		return nil, b.quarantine(pk.id)
	}
	if err != nil || old == nil {
		return nil, err
	}
	now := nanos(p.Now)
	until := p.Now.Add(p.LeaseFor)
	r := cloneRecord(old)
	l := &queue.Lease{Destination: pk.dest, Owner: p.Owner, Until: until}
	for i := range r.msg.Recipients {
		rc := &r.msg.Recipients[i]
		if rc.Destination != pk.dest || !waiting(rc.State) || nanos(rc.NextAttempt) > now {
			continue
		}
		if l.Token == 0 {
			seq, err := b.meta.NextSequence()
			if err != nil {
				return nil, err
			}
			l.Token = int64(seq)
		}
		// Written before any network I/O: a worker that dies mid-attempt
		// leaves the recipient due no sooner than the lease's end.
		rc.Attempts++
		rc.LastAttempt = p.Now
		rc.NextAttempt = until
		r.tokens[i] = l.Token
		l.Recipients = append(l.Recipients, rc.Address)
	}
	if l.Token == 0 {
		if pk.rdue != nil {
			return nil, b.repair(pk.rdue)
		}
		return nil, nil
	}
	if err := b.putMessage(old, r); err != nil {
		return nil, err
	}
	if pk.probe {
		d, err := b.loadDest(pk.dest)
		if err != nil {
			return nil, err
		}
		st := queue.DestinationStatus{}
		if d != nil {
			st = d.st
		}
		st.NextAllowed = until
		if err := b.setStatus(pk.dest, st); err != nil {
			return nil, err
		}
	}
	l.Message = cloneMessage(&r.msg)
	return l, nil
}

func cloneRecord(r *msgRecord) *msgRecord {
	c := *r
	c.msg = *cloneMessage(&r.msg)
	c.tokens = append([]int64(nil), r.tokens...)
	return &c
}

// NextDue returns the earliest time Claim could return work: the first entry
// of the ddue index, which files every destination with waiting recipients
// under max(its earliest NextAttempt, its NextAllowed). Leased recipients
// are included through their claim-time NextAttempt, which is the lease end.
func (s *Store) NextDue(ctx context.Context, now time.Time) (time.Time, bool, error) {
	end, err := s.begin()
	if err != nil {
		return time.Time{}, false, err
	}
	defer end()
	var (
		at time.Time
		ok bool
	)
	err = s.view(func(b *btx) error {
		k, _ := b.ddue.Cursor().First()
		if len(k) >= timeLen {
			at, ok = time.Unix(0, readTime(k)).UTC(), true
		}
		return nil
	})
	return at, ok, err
}
