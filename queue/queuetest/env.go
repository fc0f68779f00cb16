package queuetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/outboundmail/outbound/delivery"
	"github.com/outboundmail/outbound/queue"
)

// t0 is the base time of every subtest. It is whole seconds, in UTC, and far
// from the present so that a store which reads the clock fails visibly.
var t0 = time.Date(2031, time.March, 4, 5, 6, 7, 0, time.UTC)

// leaseFor is the lease length used by the suite's claims.
const leaseFor = 10 * time.Minute

// ms is the smallest step the suite uses to probe a boundary ("just before").
const ms = time.Millisecond

// env is one subtest's store and helpers. Its methods fail the test on an
// unexpected error.
type env struct {
	t   *testing.T
	s   queue.Store
	ctx context.Context
}

func newEnv(t *testing.T, s queue.Store) *env {
	return &env{t: t, s: s, ctx: t.Context()}
}

// rcpt returns a recipient at dest, queued and due at t0.
func rcpt(addr, dest string) queue.Recipient {
	return queue.Recipient{Address: addr, Destination: dest, State: queue.Queued, NextAttempt: t0}
}

// msg returns a message that arrived at t0 with the given recipients.
func msg(id string, rs ...queue.Recipient) *queue.Message {
	return &queue.Message{ID: queue.ID(id), From: "sender@example.org", Arrived: t0, Recipients: rs}
}

// at returns a copy of r due at tm.
func at(r queue.Recipient, tm time.Time) queue.Recipient {
	r.NextAttempt = tm
	return r
}

// bodyFor returns a deterministic body of n octets for id.
func bodyFor(id string, n int) []byte {
	var seed [32]byte
	copy(seed[:], id)
	b := make([]byte, n)
	r := rand.NewChaCha8(seed)
	_, _ = r.Read(b)
	return b
}

func (e *env) enqueue(m *queue.Message, body []byte) queue.ID {
	e.t.Helper()
	return e.enqueueFrom(m, bytes.NewReader(body))
}

func (e *env) enqueueFrom(m *queue.Message, body io.Reader) queue.ID {
	e.t.Helper()
	id, err := e.s.Enqueue(e.ctx, queue.EnqueueParams{Message: m, Body: body})
	if err != nil {
		e.t.Fatalf("Enqueue(%s): %v", m.ID, err)
	}
	return id
}

// add enqueues m with a small body and checks that its own ID comes back.
func (e *env) add(m *queue.Message) {
	e.t.Helper()
	if id := e.enqueue(m, []byte("Subject: "+string(m.ID)+"\r\n\r\nhello\r\n")); id != m.ID {
		e.t.Fatalf("Enqueue(%s) returned ID %q", m.ID, id)
	}
}

func (e *env) get(id queue.ID) *queue.Message {
	e.t.Helper()
	m, err := e.s.Get(e.ctx, id)
	if err != nil {
		e.t.Fatalf("Get(%s): %v", id, err)
	}
	return m
}

func (e *env) gone(id queue.ID) {
	e.t.Helper()
	if _, err := e.s.Get(e.ctx, id); !errors.Is(err, queue.ErrNotFound) {
		e.t.Fatalf("Get(%s) = %v, want ErrNotFound", id, err)
	}
	if rc, err := e.s.OpenBody(e.ctx, id); !errors.Is(err, queue.ErrNotFound) {
		if rc != nil {
			rc.Close()
		}
		e.t.Fatalf("OpenBody(%s) = %v, want ErrNotFound", id, err)
	}
}

func (e *env) body(id queue.ID) []byte {
	e.t.Helper()
	rc, err := e.s.OpenBody(e.ctx, id)
	if err != nil {
		e.t.Fatalf("OpenBody(%s): %v", id, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		e.t.Fatalf("reading body of %s: %v", id, err)
	}
	return b
}

func (e *env) claimParams(p queue.ClaimParams) []*queue.Lease {
	e.t.Helper()
	if p.Owner == "" {
		p.Owner = "worker-1"
	}
	if p.LeaseFor == 0 {
		p.LeaseFor = leaseFor
	}
	ls, err := e.s.Claim(e.ctx, p)
	if err != nil {
		e.t.Fatalf("Claim(now=%s): %v", p.Now.Format(time.RFC3339Nano), err)
	}
	return ls
}

func (e *env) claim(now time.Time, limit int) []*queue.Lease {
	e.t.Helper()
	return e.claimParams(queue.ClaimParams{Now: now, Limit: limit})
}

// claimOne claims at now and requires exactly one lease.
func (e *env) claimOne(now time.Time) *queue.Lease {
	e.t.Helper()
	ls := e.claim(now, 100)
	if len(ls) != 1 {
		e.t.Fatalf("Claim(now=t0%+v) = %s, want exactly one lease", now.Sub(t0), leaseKeys(ls))
	}
	return ls[0]
}

// noClaim requires that Claim at now returns nothing.
func (e *env) noClaim(now time.Time) {
	e.t.Helper()
	if ls := e.claim(now, 100); len(ls) != 0 {
		e.t.Fatalf("Claim(now=t0%+v) = %s, want nothing", now.Sub(t0), leaseKeys(ls))
	}
}

func (e *env) finish(p queue.FinishParams) {
	e.t.Helper()
	if err := e.s.Finish(e.ctx, p); err != nil {
		e.t.Fatalf("Finish(%s): %v", leaseKey(p.Lease), err)
	}
}

// finishAll finishes every recipient of l with state st (next is used for
// Deferred).
func (e *env) finishAll(l *queue.Lease, now time.Time, st queue.RecipientState, next time.Time) {
	e.t.Helper()
	p := queue.FinishParams{Lease: l, Now: now}
	for _, a := range l.Recipients {
		p.Recipients = append(p.Recipients, queue.RecipientUpdate{Address: a, State: st, NextAttempt: next, Result: outcome(st, now)})
	}
	e.finish(p)
}

func (e *env) destination(name string) *queue.DestinationStatus {
	e.t.Helper()
	d, err := e.s.Destination(e.ctx, name)
	if err != nil {
		e.t.Fatalf("Destination(%s): %v", name, err)
	}
	if d == nil {
		e.t.Fatalf("Destination(%s) = nil, nil", name)
	}
	return d
}

// setDestination stores st as the status of st.Name, the way a worker does:
// through Finish of a lease on a throw-away message (which is then gone).
// The message is claimed at t0-24h so it never interferes with the subtest.
func (e *env) setDestination(st queue.DestinationStatus) {
	e.t.Helper()
	setupAt := t0.Add(-24 * time.Hour)
	id := "zz-setup-" + st.Name
	e.add(msg(id, at(rcpt("setup@"+st.Name, st.Name), setupAt.Add(-time.Hour))))
	ls := e.claimParams(queue.ClaimParams{Now: setupAt, Limit: 100, ExpireArrivedBefore: t0.Add(time.Hour)})
	for _, l := range ls {
		if string(l.Message.ID) != id {
			e.t.Fatalf("setDestination: claim returned unrelated lease %s", leaseKey(l))
		}
		up := queue.RecipientUpdate{Address: l.Recipients[0], State: queue.Delivered, Result: outcome(queue.Delivered, setupAt)}
		e.finish(queue.FinishParams{Lease: l, Now: setupAt, Recipients: []queue.RecipientUpdate{up}, Destination: &st})
	}
	if len(ls) != 1 {
		e.t.Fatalf("setDestination(%s): claimed %s", st.Name, leaseKeys(ls))
	}
	e.gone(queue.ID(id))
}

func (e *env) nextDue(now time.Time) (time.Time, bool) {
	e.t.Helper()
	tm, ok, err := e.s.NextDue(e.ctx, now)
	if err != nil {
		e.t.Fatalf("NextDue: %v", err)
	}
	return tm, ok
}

// outcome returns a plausible attempt result for state st.
func outcome(st queue.RecipientState, now time.Time) *queue.Outcome {
	o := &queue.Outcome{
		Stage: delivery.StageRCPT,
		Host:  "mx1.example.net[192.0.2.25]:25",
		At:    now,
	}
	switch st {
	case queue.Delivered:
		o.Class, o.Stage = delivery.Delivered, delivery.StageEndData
		o.Reply = delivery.Reply{Code: 250, Enhanced: delivery.EnhancedCode{2, 0, 0}, Text: "ok queued as 1234"}
	case queue.Failed:
		o.Class = delivery.Permanent
		o.Reply = delivery.Reply{Code: 550, Enhanced: delivery.EnhancedCode{5, 1, 1}, Text: "no such user"}
	default:
		o.Class = delivery.Temporary
		o.Reply = delivery.Reply{Code: 451, Enhanced: delivery.EnhancedCode{4, 7, 1}, Text: "greylisted\nplease retry"}
		o.Error = "server said 451"
	}
	return o
}

// leaseKey describes a lease as "id@dest[a,b]".
func leaseKey(l *queue.Lease) string {
	if l == nil || l.Message == nil {
		return "<nil lease>"
	}
	rs := slices.Clone(l.Recipients)
	sort.Strings(rs)
	return fmt.Sprintf("%s@%s[%s]", l.Message.ID, l.Destination, strings.Join(rs, ","))
}

func leaseKeys(ls []*queue.Lease) string {
	ks := make([]string, len(ls))
	for i, l := range ls {
		ks[i] = leaseKey(l)
	}
	return "{" + strings.Join(ks, " ") + "}"
}

// sortedKeys returns the keys of ls sorted, for order-independent checks.
func sortedKeys(ls []*queue.Lease) string {
	ks := make([]string, len(ls))
	for i, l := range ls {
		ks[i] = leaseKey(l)
	}
	sort.Strings(ks)
	return "{" + strings.Join(ks, " ") + "}"
}

func (e *env) wantKeys(ls []*queue.Lease, want string) {
	e.t.Helper()
	if got := sortedKeys(ls); got != want {
		e.t.Fatalf("leases = %s, want %s", got, want)
	}
}

// recipient returns the recipient addr of m.
func recipient(t *testing.T, m *queue.Message, addr string) queue.Recipient {
	t.Helper()
	for _, r := range m.Recipients {
		if r.Address == addr {
			return r
		}
	}
	t.Fatalf("message %s has no recipient %s", m.ID, addr)
	return queue.Recipient{}
}

// normalize returns a deep copy of m with every time in UTC and empty slices
// as nil, so that reflect.DeepEqual compares meaning, not representation.
func normalize(m *queue.Message) *queue.Message {
	if m == nil {
		return nil
	}
	c := *m
	c.Arrived = c.Arrived.UTC()
	c.Recipients = nil
	for _, r := range m.Recipients {
		r.NextAttempt = r.NextAttempt.UTC()
		r.LastAttempt = r.LastAttempt.UTC()
		r.LastResult = normalizeOutcome(r.LastResult)
		if len(r.Notify) == 0 {
			r.Notify = nil
		} else {
			r.Notify = slices.Clone(r.Notify)
		}
		c.Recipients = append(c.Recipients, r)
	}
	return &c
}

func normalizeOutcome(o *queue.Outcome) *queue.Outcome {
	if o == nil {
		return nil
	}
	c := *o
	c.At = c.At.UTC()
	return &c
}

func normalizeDest(d *queue.DestinationStatus) *queue.DestinationStatus {
	c := *d
	c.NextAllowed = c.NextAllowed.UTC()
	c.FirstFailure = c.FirstFailure.UTC()
	c.LastFailure = c.LastFailure.UTC()
	c.LastResult = normalizeOutcome(c.LastResult)
	return &c
}

func equalMessage(t *testing.T, what string, got, want *queue.Message) {
	t.Helper()
	g, w := normalize(got), normalize(want)
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("%s:\n got %s\nwant %s", what, dump(g), dump(w))
	}
}

func equalDest(t *testing.T, what string, got, want *queue.DestinationStatus) {
	t.Helper()
	g, w := normalizeDest(got), normalizeDest(want)
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("%s:\n got %+v (last %+v)\nwant %+v (last %+v)", what, *g, g.LastResult, *w, w.LastResult)
	}
}

func dump(m *queue.Message) string {
	if m == nil {
		return "<nil>"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "{ID:%s From:%q Arrived:%s Size:%d Key:%q 8bit:%t Ret:%q Envid:%q ReqTLS:%t",
		m.ID, m.From, m.Arrived.Format(time.RFC3339Nano), m.Size, m.IdempotencyKey, m.EightBit, m.Return, m.EnvelopeID, m.RequireTLS)
	for _, r := range m.Recipients {
		fmt.Fprintf(&b, "\n   %+v", r)
		if r.LastResult != nil {
			fmt.Fprintf(&b, " result=%+v", *r.LastResult)
		}
	}
	return b.String() + "}"
}

func sameTime(t *testing.T, what string, got, want time.Time) {
	t.Helper()
	if !got.Equal(want) {
		t.Fatalf("%s = %s, want %s", what, got.UTC().Format(time.RFC3339Nano), want.UTC().Format(time.RFC3339Nano))
	}
}

// errReader returns n octets of data and then err.
type errReader struct {
	n   int
	err error
}

func (r *errReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, r.err
	}
	k := min(len(p), r.n)
	for i := range p[:k] {
		p[i] = 'x'
	}
	r.n -= k
	return k, nil
}
