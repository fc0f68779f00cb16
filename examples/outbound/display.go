package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"

	"github.com/outboundmail/outbound/queue"
)

// progress follows the queue's events for the demo and shows them: a live
// table redrawn in place on a terminal, or one plain line per event
// otherwise (a pipe, a log file, a test).
type progress struct {
	w     io.Writer
	tty   bool
	width int // terminal columns; lines are cut to fit so redraws stay aligned
	clock *fastClock

	mu     sync.Mutex
	rows   []*row
	byKey  map[string]*row
	lines  []string // plain mode: event lines not yet written
	drawn  int      // tty mode: lines of the last frame
	tally  demoTally
	doneCh chan struct{}
	closed bool
}

// row is one recipient of one message.
type row struct {
	id, rcpt, label string
	state           string // queued, sending, deferred, delivered, bounced, expired
	attempts        int
	reply           string
	next            time.Time
}

// demoTally counts outcomes.
type demoTally struct {
	Delivered, Deferrals, Bounced, Expired, PossibleDuplicates int
	DSNs                                                       int // notifications queued
}

// newProgress returns a display for w; it redraws in place when w is a
// terminal.
func newProgress(w io.Writer, clock *fastClock) *progress {
	p := &progress{w: w, clock: clock, byKey: make(map[string]*row), doneCh: make(chan struct{})}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.tty = true
		p.width = 100
		if cols, _, err := term.GetSize(int(f.Fd())); err == nil && cols > 20 {
			p.width = cols
		}
	}
	return p
}

// add registers a recipient before its message is queued.
func (p *progress) add(id queue.ID, rcpt, label string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := &row{id: string(id), rcpt: rcpt, label: label, state: "queued"}
	p.rows = append(p.rows, r)
	p.byKey[string(id)+"\x00"+rcpt] = r
	p.logf("%s  %-24s queued     %s", shortID(id), rcpt, label)
}

// Observe implements queue.Observer.
func (p *progress) Observe(e queue.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if e.Kind == queue.EventAttemptStarted {
		for _, r := range p.rows {
			if r.id == string(e.Message) && (r.state == "queued" || r.state == "deferred") {
				r.state = "sending"
			}
		}
		return
	}
	r := p.byKey[string(e.Message)+"\x00"+e.Recipient]
	if r == nil {
		return
	}
	r.attempts = e.Attempts
	if e.Result != nil {
		r.reply = replyText(e.Result)
	}
	switch e.Kind {
	case queue.EventDeferred:
		p.tally.Deferrals++
		r.state, r.next = "deferred", e.NextAttempt
		p.logf("%s  %-24s deferred   %s; next attempt in %s", shortID(e.Message), r.rcpt, r.reply, roundSec(e.NextAttempt.Sub(e.Time)))
	case queue.EventDelivered:
		p.tally.Delivered++
		r.state = "delivered"
		p.logf("%s  %-24s delivered  %s (attempt %d)", shortID(e.Message), r.rcpt, r.reply, e.Attempts)
	case queue.EventBounced, queue.EventExpired:
		if e.Kind == queue.EventBounced {
			p.tally.Bounced++
			r.state = "bounced"
		} else {
			p.tally.Expired++
			r.state = "expired"
		}
		p.logf("%s  %-24s %-10s %s", shortID(e.Message), r.rcpt, r.state, r.reply)
		if e.DSN != "" {
			p.tally.DSNs++
			// The notification goes back to the sender: follow it too.
			m := p.senderOf(e.Message)
			n := &row{id: string(e.DSN), rcpt: m, label: "failure notice about " + shortID(e.Message), state: "queued"}
			p.rows = append(p.rows, n)
			p.byKey[string(e.DSN)+"\x00"+m] = n
			p.logf("%s  %-24s queued     %s", shortID(e.DSN), m, n.label)
		}
	case queue.EventPossibleDuplicate:
		p.tally.PossibleDuplicates++
	default:
		return
	}
	p.checkDone()
}

// senderOf returns the sender of a demo message, the recipient of its
// notifications. Every demo message has the same one.
func (p *progress) senderOf(queue.ID) string { return demoSender }

func (p *progress) checkDone() {
	for _, r := range p.rows {
		switch r.state {
		case "delivered", "bounced", "expired":
		default:
			return
		}
	}
	if !p.closed {
		p.closed = true
		close(p.doneCh)
	}
}

// done is closed when every recipient, notifications included, is final.
func (p *progress) done() <-chan struct{} { return p.doneCh }

// logf records an event line (plain mode), stamped with the demo clock.
func (p *progress) logf(format string, args ...any) {
	if p.tty {
		return
	}
	p.lines = append(p.lines, fmt.Sprintf("[+%6s] ", roundSec(p.clock.Elapsed()))+fmt.Sprintf(format, args...))
}

// render writes what changed: pending lines, or a fresh frame on a terminal.
func (p *progress) render() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.tty {
		for _, l := range p.lines {
			fmt.Fprintln(p.w, l)
		}
		p.lines = p.lines[:0]
		return
	}
	var b strings.Builder
	if p.drawn > 0 {
		fmt.Fprintf(&b, "\x1b[%dA\x1b[J", p.drawn) // back to the top of the last frame, clear below
	}
	now := p.clock.Now()
	lines := []string{fmt.Sprintf("demo clock +%s", roundSec(p.clock.Elapsed()))}
	for _, r := range p.rows {
		status := r.state
		switch r.state {
		case "deferred":
			status = fmt.Sprintf("deferred, retry in %s", roundSec(max(0, r.next.Sub(now))))
		case "sending":
			status = "sending…"
		}
		line := fmt.Sprintf("  %s  %-24s %-26s %s", shortID(queue.ID(r.id)), r.rcpt, status, r.reply)
		lines = append(lines, colour(r.state, cut(line, p.width-1)))
	}
	for _, l := range lines {
		b.WriteString(l)
		b.WriteString("\n")
	}
	p.drawn = len(lines)
	io.WriteString(p.w, b.String())
}

// colour wraps a table line in the ANSI colour of its state.
func colour(state, s string) string {
	code := map[string]string{"delivered": "32", "deferred": "33", "bounced": "31", "expired": "31", "sending": "36"}[state]
	if code == "" {
		return s
	}
	return "\x1b[" + code + "m" + s + "\x1b[0m"
}

func cut(s string, n int) string {
	r := []rune(s)
	if n > 0 && len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

func shortID(id queue.ID) string {
	if len(id) > 10 {
		return string(id[len(id)-10:])
	}
	return string(id)
}

func roundSec(d time.Duration) time.Duration { return d.Round(time.Second) }

// replyText is the server's reply, or the local error, on one line.
func replyText(o *queue.Outcome) string {
	if o.Reply.Code != 0 {
		return strings.ReplaceAll(o.Reply.String(), "\n", " / ")
	}
	return o.Error
}
