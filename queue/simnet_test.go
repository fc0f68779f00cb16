package queue_test

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/outboundmail/outbound/delivery"
	"github.com/outboundmail/outbound/delivery/rfc5321"
	"github.com/outboundmail/outbound/queue"
)

// simNet is a scripted network for deterministic simulations: a queue's
// Deliverer whose servers answer as a function of virtual time. Its map of
// domains to servers is the fake resolver: an unknown domain does not exist
// (NXDOMAIN, a permanent failure at the resolve stage). It records every
// contact and checks the deferral properties while the simulation runs, so
// that a violation names the moment it happened.
type simNet struct {
	now func() time.Time

	mu         sync.Mutex
	servers    map[string]*simServer
	contacts   []contact
	byRcpt     map[string][]rcptEvent // per recipient address, in order
	violations []string
}

// simServer is one destination's behaviour and what it saw.
type simServer struct {
	// greeting, if set and returning a reply, makes the whole destination
	// unavailable at that moment: the attempt ends at the greeting (421,
	// connection refused …) and every recipient is temporary.
	greeting func(now time.Time) *delivery.Reply
	// rcpt answers one RCPT; nil accepts everything.
	rcpt func(now time.Time, from, to string) delivery.Reply
	// hang, if set, is called before answering; it blocks to model a
	// server that stalls (or a worker that dies mid-attempt).
	hang func(ctx context.Context, rcpts []string)

	// keep makes the server record the messages it accepts.
	keep bool

	connections int
	inflight    int
	maxInflight int
	received    []received // when keep is set
	failing     bool       // the queue judged it unavailable …
	nextAllowed time.Time  // … until then
	delivered   map[string]int
}

// received is a message a server accepted.
type received struct {
	from string
	to   []string
	data []byte
}

// contact is one Deliver call.
type contact struct {
	seq         int
	at          time.Time
	dest        string
	rcpts       []string
	unavailable bool
}

// rcptEvent is an attempt of one recipient, or an outcome the queue
// recorded for it.
type rcptEvent struct {
	at      time.Time
	attempt bool   // a contact; else an outcome event from the queue
	dest    string // the destination
	// For attempts:
	reply   delivery.Reply // what the server said
	class   delivery.Class // and how it was classified
	from    string         // the envelope sender
	unavail bool           // the destination was judged unavailable
	// For outcomes:
	kind    queue.EventKind
	next    time.Time // EventDeferred: the next attempt
	msg     queue.ID
	dsn     queue.ID
	result  *queue.Outcome
	arrived time.Time
}

func newSimNet(now func() time.Time) *simNet {
	return &simNet{now: now, servers: map[string]*simServer{}, byRcpt: map[string][]rcptEvent{}}
}

// add registers a server for domain and returns it.
func (n *simNet) add(domain string, s *simServer) *simServer {
	n.mu.Lock()
	defer n.mu.Unlock()
	s.delivered = map[string]int{}
	n.servers[domain] = s
	return s
}

// Destination implements queue.Deliverer: recipients are grouped by domain.
func (n *simNet) Destination(rcpt string) string { return rfc5321.Domain(rcpt) }

// Deliver implements queue.Deliverer with one scripted attempt.
func (n *simNet) Deliver(ctx context.Context, dest string, msg *delivery.Message) (*delivery.Report, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	now := n.now()
	rep := &delivery.Report{Destination: dest}
	var addrs []string
	for _, r := range msg.Recipients {
		addrs = append(addrs, r.Address)
	}

	n.mu.Lock()
	s := n.servers[dest]
	if s == nil {
		n.mu.Unlock()
		for _, a := range addrs {
			rep.Results = append(rep.Results, delivery.Result{Recipient: a, Class: delivery.Permanent, Stage: delivery.StageResolve,
				Reply: delivery.Reply{Code: 550, Enhanced: delivery.EnhancedCode{5, 1, 2}, Text: "domain " + dest + " not found"}})
		}
		return rep, nil
	}
	s.connections++
	if s.failing && now.Before(s.nextAllowed) {
		n.violate("%v: %s contacted while in backoff until %v", now, dest, s.nextAllowed)
	}
	if s.failing && s.inflight > 0 {
		n.violate("%v: %s contacted by %d attempts at once while it is being probed", now, dest, s.inflight+1)
	}
	s.inflight++
	s.maxInflight = max(s.maxInflight, s.inflight)
	c := contact{seq: len(n.contacts), at: now, dest: dest, rcpts: addrs}
	n.mu.Unlock()

	if s.hang != nil {
		s.hang(ctx, addrs)
	}

	n.mu.Lock()
	defer n.mu.Unlock()
	s.inflight--
	if err := ctx.Err(); err != nil {
		// Cancelled mid-transaction: the connection is closed, every
		// recipient is temporary, as the real deliverer reports it.
		for _, a := range addrs {
			rep.Results = append(rep.Results, delivery.Result{Recipient: a, Class: delivery.Temporary, Stage: delivery.StageRCPT, Err: err})
			n.byRcpt[a] = append(n.byRcpt[a], rcptEvent{at: now, attempt: true, class: delivery.Temporary, dest: dest, from: msg.From})
		}
		n.contacts = append(n.contacts, c)
		return rep, nil
	}
	if s.greeting != nil {
		if r := s.greeting(now); r != nil {
			rep.DestinationUnavailable, rep.DestinationReply, rep.DestinationStage = true, *r, delivery.StageGreeting
			for _, a := range addrs {
				rep.Results = append(rep.Results, delivery.Result{Recipient: a, Class: delivery.Temporary, Reply: *r, Stage: delivery.StageGreeting, Host: "mx." + dest + "[192.0.2.1]:25"})
			}
		}
	}
	accepted := 0
	if !rep.DestinationUnavailable {
		for _, a := range addrs {
			reply := delivery.Reply{Code: 250, Enhanced: delivery.EnhancedCode{2, 1, 5}, Text: "ok"}
			if s.rcpt != nil {
				reply = s.rcpt(now, msg.From, a)
			}
			res := delivery.Result{Recipient: a, Reply: reply, Stage: delivery.StageRCPT, Host: "mx." + dest + "[192.0.2.1]:25"}
			switch reply.Code / 100 {
			case 2:
				res.Class, res.Stage = delivery.Delivered, delivery.StageEndData
				accepted++
			case 5:
				res.Class = delivery.Permanent
			default:
				res.Class = delivery.Temporary
			}
			rep.Results = append(rep.Results, res)
		}
	}
	if accepted > 0 {
		// The body is read only after a recipient was accepted, as the
		// real deliverer does.
		data, err := io.ReadAll(msg.Body)
		if err != nil {
			return nil, err
		}
		if s.keep {
			var to []string
			for _, res := range rep.Results {
				if res.Class == delivery.Delivered {
					to = append(to, res.Recipient)
				}
			}
			s.received = append(s.received, received{from: msg.From, to: to, data: data})
		}
	}
	c.unavailable = rep.DestinationUnavailable
	n.contacts = append(n.contacts, c)
	for _, res := range rep.Results {
		if res.Class == delivery.Delivered {
			s.delivered[res.Recipient]++
		}
		n.byRcpt[res.Recipient] = append(n.byRcpt[res.Recipient], rcptEvent{at: now, attempt: true, reply: res.Reply,
			class: res.Class, dest: dest, from: msg.From, unavail: rep.DestinationUnavailable})
	}
	return rep, nil
}

// Observe implements queue.Observer: it learns the queue's verdicts about
// destinations (to check that none is contacted during its backoff) and
// records every recipient outcome.
func (n *simNet) Observe(e queue.Event) {
	n.mu.Lock()
	defer n.mu.Unlock()
	switch e.Kind {
	case queue.EventAttemptFinished:
		if s := n.servers[e.Destination]; s != nil {
			s.failing = e.DestinationUnavailable
			s.nextAllowed = e.NextAttempt
		}
	case queue.EventDelivered, queue.EventDeferred, queue.EventBounced, queue.EventExpired, queue.EventDelayWarning:
		n.byRcpt[e.Recipient] = append(n.byRcpt[e.Recipient], rcptEvent{at: e.Time, kind: e.Kind, next: e.NextAttempt,
			msg: e.Message, dsn: e.DSN, result: e.Result, arrived: e.Arrived, dest: e.Destination})
	}
}

func (n *simNet) violate(format string, a ...any) {
	if len(n.violations) < 20 {
		n.violations = append(n.violations, fmt.Sprintf(format, a...))
	}
}

// checkDeferrals checks property 1 for every recipient: after a deferral,
// no attempt before the recorded NextAttempt, and never within a minute of
// the previous attempt.
func (n *simNet) checkDeferrals() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var bad []string
	for rcpt, evs := range n.byRcpt {
		if strings.HasSuffix(rcpt, "@app.test") {
			continue // the senders: many notifications share the address
		}
		var notBefore, last time.Time
		for _, e := range evs {
			switch {
			case e.attempt:
				if e.at.Before(notBefore) {
					bad = append(bad, fmt.Sprintf("%s attempted at %v, before its next attempt %v", rcpt, e.at, notBefore))
				}
				if !last.IsZero() && e.at.Sub(last) < time.Minute {
					bad = append(bad, fmt.Sprintf("%s attempted at %v, %v after the previous attempt", rcpt, e.at, e.at.Sub(last)))
				}
				last = e.at
			case e.kind == queue.EventDeferred:
				notBefore = e.next
			}
		}
	}
	sort.Strings(bad)
	return append(bad, n.violations...)
}

// attempts returns the attempt times of rcpt.
func (n *simNet) attempts(rcpt string) []time.Time {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []time.Time
	for _, e := range n.byRcpt[rcpt] {
		if e.attempt {
			out = append(out, e.at)
		}
	}
	return out
}

// outcomes returns the outcome events of rcpt of the given kind.
func (n *simNet) outcomes(rcpt string, kind queue.EventKind) []rcptEvent {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []rcptEvent
	for _, e := range n.byRcpt[rcpt] {
		if !e.attempt && e.kind == kind {
			out = append(out, e)
		}
	}
	return out
}

// connections returns how many times dest was contacted.
func (n *simNet) connections(dest string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.servers[dest].connections
}

// always answers every RCPT with reply.
func always(code int, enh delivery.EnhancedCode, text string) func(time.Time, string, string) delivery.Reply {
	return func(time.Time, string, string) delivery.Reply {
		return delivery.Reply{Code: code, Enhanced: enh, Text: text}
	}
}

// greylister models a greylisting server (postgrey and the like): the first
// attempt of a (sender, recipient) pair starts its window; attempts within
// it get a 450 that states the window; later attempts are accepted.
func greylister(window time.Duration) func(time.Time, string, string) delivery.Reply {
	return greylisterText(window, "<%s>: Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/help/example.com.html; try again in %d seconds")
}

// greylisterText is greylister with its own reply text: a format with the
// recipient (%s) and the rest of the window in seconds (%d), as
// milter-greylist states it, or a fixed text that states no window.
func greylisterText(window time.Duration, text string) func(time.Time, string, string) delivery.Reply {
	var mu sync.Mutex
	first := map[string]time.Time{}
	return func(now time.Time, from, to string) delivery.Reply {
		mu.Lock()
		defer mu.Unlock()
		k := from + "\x00" + to
		t, seen := first[k]
		if !seen {
			first[k], t = now, now
		}
		if now.Sub(t) < window {
			say := text
			if strings.Contains(text, "%") {
				say = fmt.Sprintf(text, to, int((window - now.Sub(t)).Seconds()))
			}
			return delivery.Reply{Code: 450, Enhanced: delivery.EnhancedCode{4, 2, 0}, Text: say}
		}
		return delivery.Reply{Code: 250, Enhanced: delivery.EnhancedCode{2, 1, 5}, Text: "ok"}
	}
}

// unavailable makes a destination unavailable at the greeting while down
// says so.
func unavailable(down func(time.Time) bool, reply delivery.Reply) func(time.Time) *delivery.Reply {
	return func(now time.Time) *delivery.Reply {
		if down(now) {
			return &reply
		}
		return nil
	}
}

var reply421 = delivery.Reply{Code: 421, Enhanced: delivery.EnhancedCode{4, 3, 2}, Text: "mx.example closing connection: too busy"}

// rcptName returns the address of recipient i at domain.
func rcptName(i int, domain string) string {
	return "u" + strconv.Itoa(i) + "@" + domain
}

func join(ss []string) string { return strings.Join(ss, "\n") }
