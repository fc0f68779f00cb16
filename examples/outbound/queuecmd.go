package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/outboundmail/outbound/queue"
)

func queueFlags(fs *flag.FlagSet) func(ctx context.Context, a *app, args []string) error {
	asJSON := fs.Bool("json", false, "print one JSON array, for scripts")
	return func(ctx context.Context, a *app, args []string) error {
		if len(args) > 0 {
			return usagef("queue takes no arguments")
		}
		return a.listQueue(ctx, *asJSON)
	}
}

// jsonMessage is one element of `queue --json`.
type jsonMessage struct {
	ID         string          `json:"id"`
	Sender     string          `json:"sender"` // "" for the null sender (notifications)
	Size       int64           `json:"size"`
	Arrived    time.Time       `json:"arrived"`
	Recipients []jsonRecipient `json:"recipients"`
}

type jsonRecipient struct {
	Address     string     `json:"address"`
	State       string     `json:"state"` // queued, deferred, delivered, failed, expired, held
	Attempts    int        `json:"attempts"`
	NextAttempt *time.Time `json:"next_attempt"` // null when no attempt is planned
	LastAttempt *time.Time `json:"last_attempt"` // null before the first
	LastReply   string     `json:"last_reply"`   // e.g. "451 4.7.1 try later"; "" when none
	LastError   string     `json:"last_error,omitempty"`
	// PossibleDuplicate: a connection was lost after the message was sent
	// (RFC 1047), so the recipient may receive it twice.
	PossibleDuplicate bool `json:"possible_duplicate,omitempty"`
}

func toJSON(m *queue.Message) jsonMessage {
	out := jsonMessage{ID: string(m.ID), Sender: m.From, Size: m.Size, Arrived: m.Arrived.UTC(), Recipients: []jsonRecipient{}}
	for _, r := range m.Recipients {
		jr := jsonRecipient{Address: r.Address, State: r.State.String(), Attempts: r.Attempts, PossibleDuplicate: r.PossibleDuplicate}
		if waiting(r.State) {
			t := r.NextAttempt.UTC()
			jr.NextAttempt = &t
		}
		if !r.LastAttempt.IsZero() {
			t := r.LastAttempt.UTC()
			jr.LastAttempt = &t
		}
		if o := r.LastResult; o != nil {
			if o.Reply.Code != 0 {
				jr.LastReply = o.Reply.String()
			}
			jr.LastError = o.Error
		}
		out.Recipients = append(out.Recipients, jr)
	}
	return out
}

// waiting reports states that have a next attempt.
func waiting(s queue.RecipientState) bool {
	return s == queue.Queued || s == queue.Deferred
}

// eachMessage calls fn for every queued message in ID order, a page at a
// time, so that a large queue is never held in memory.
func eachMessage(ctx context.Context, st backend, p queue.ListParams, fn func(*queue.Message) error) error {
	p.Limit = 500
	for {
		page, err := st.List(ctx, p)
		if err != nil {
			return err
		}
		for _, m := range page {
			if err := fn(m); err != nil {
				return err
			}
		}
		if len(page) < p.Limit {
			return nil
		}
		p.AfterID = page[len(page)-1].ID
	}
}

// listQueue prints the queue like mailq, or as JSON.
func (a *app) listQueue(ctx context.Context, asJSON bool) error {
	b, err := a.connect(ctx)
	if err != nil {
		return tempFail(err)
	}
	defer b.Close()
	if asJSON {
		return writeJSONQueue(ctx, a.stdout, b)
	}
	now := time.Now()
	var msgs, rcpts int
	var size int64
	err = eachMessage(ctx, b, queue.ListParams{}, func(m *queue.Message) error {
		if msgs == 0 {
			fmt.Fprintf(a.stdout, "%-26s %8s %6s  %s\n", "ID", "Size", "Age", "Sender")
		}
		msgs++
		size += m.Size
		writeMessageSummary(a.stdout, m, now)
		for _, r := range m.Recipients {
			if !r.State.Final() {
				rcpts++
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if msgs == 0 {
		fmt.Fprintln(a.stdout, "Mail queue is empty")
		return nil
	}
	fmt.Fprintf(a.stdout, "-- %s in %d message%s, %d recipient%s waiting\n", fmtSize(size), msgs, plural(msgs), rcpts, plural(rcpts))
	return nil
}

func writeJSONQueue(ctx context.Context, w io.Writer, st backend) error {
	io.WriteString(w, "[")
	first := true
	err := eachMessage(ctx, st, queue.ListParams{}, func(m *queue.Message) error {
		b, err := json.Marshal(toJSON(m))
		if err != nil {
			return err
		}
		if !first {
			io.WriteString(w, ",")
		}
		first = false
		io.WriteString(w, "\n")
		_, err = w.Write(b)
		return err
	})
	io.WriteString(w, "\n]\n")
	return err
}

// writeMessageSummary writes one message in the mailq-like listing.
func writeMessageSummary(w io.Writer, m *queue.Message, now time.Time) {
	sender := m.From
	if sender == "" {
		sender = "<> (notification)"
	}
	fmt.Fprintf(w, "%-26s %8d %6s  %s\n", m.ID, m.Size, fmtAge(now.Sub(m.Arrived)), sender)
	for _, r := range m.Recipients {
		fmt.Fprintf(w, "    %-9s %s", r.State, r.Address)
		if r.Attempts > 0 {
			fmt.Fprintf(w, "  attempts %d", r.Attempts)
		}
		if waiting(r.State) {
			if d := r.NextAttempt.Sub(now); d > 0 {
				fmt.Fprintf(w, ", next in %s", fmtAge(d))
			} else {
				fmt.Fprint(w, ", due now")
			}
		}
		if r.PossibleDuplicate {
			fmt.Fprint(w, ", may have been delivered already")
		}
		fmt.Fprintln(w)
		if r.LastResult != nil {
			fmt.Fprintf(w, "              %s\n", outcomeText(r.LastResult))
		}
	}
}

// outcomeText formats what an attempt said: the reply (or error), and
// where it came from.
func outcomeText(o *queue.Outcome) string {
	var b strings.Builder
	switch {
	case o.Reply.Code != 0:
		b.WriteString(o.Reply.String())
	case o.Error != "":
		b.WriteString(o.Error)
	default:
		b.WriteString(o.Class.String())
	}
	var where []string
	if o.Stage != "" {
		where = append(where, "at "+string(o.Stage))
	}
	if o.Host != "" {
		where = append(where, "from "+o.Host)
	}
	if len(where) > 0 && o.Reply.Code != 0 {
		b.WriteString(" (" + strings.Join(where, " ") + ")")
	}
	return strings.ReplaceAll(b.String(), "\n", " / ")
}

func showFlags(fs *flag.FlagSet) func(ctx context.Context, a *app, args []string) error {
	asJSON := fs.Bool("json", false, "print the envelope and state as JSON, without the content")
	return func(ctx context.Context, a *app, args []string) error {
		if len(args) != 1 {
			return usagef("show takes one message ID")
		}
		return a.show(ctx, queue.ID(args[0]), *asJSON)
	}
}

// show prints one message: envelope and state, then its content.
func (a *app) show(ctx context.Context, id queue.ID, asJSON bool) error {
	b, err := a.connect(ctx)
	if err != nil {
		return tempFail(err)
	}
	defer b.Close()
	m, err := b.Get(ctx, id)
	if err != nil {
		return notFound(id, err)
	}
	if asJSON {
		enc := json.NewEncoder(a.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(toJSON(m))
	}
	now := time.Now()
	fmt.Fprintf(a.stdout, "ID:       %s\nSender:   <%s>\nArrived:  %s (%s ago)\nSize:     %d\n",
		m.ID, m.From, m.Arrived.Local().Format(time.DateTime), fmtAge(now.Sub(m.Arrived)), m.Size)
	if m.EnvelopeID != "" {
		fmt.Fprintf(a.stdout, "ENVID:    %s\n", m.EnvelopeID)
	}
	if m.Return != "" {
		fmt.Fprintf(a.stdout, "RET:      %s\n", m.Return)
	}
	for _, r := range m.Recipients {
		fmt.Fprintf(a.stdout, "Recipient: <%s> %s, %d attempt%s", r.Address, r.State, r.Attempts, plural(r.Attempts))
		if !r.LastAttempt.IsZero() {
			fmt.Fprintf(a.stdout, ", last %s", r.LastAttempt.Local().Format(time.DateTime))
		}
		if waiting(r.State) {
			fmt.Fprintf(a.stdout, ", next %s", r.NextAttempt.Local().Format(time.DateTime))
		}
		fmt.Fprintln(a.stdout)
		if r.LastResult != nil {
			fmt.Fprintf(a.stdout, "           %s\n", outcomeText(r.LastResult))
		}
	}
	fmt.Fprintln(a.stdout, "--- content ---")
	body, err := b.OpenBody(ctx, id)
	if err != nil {
		return notFound(id, err)
	}
	defer body.Close()
	_, err = io.Copy(a.stdout, body)
	return err
}

func notFound(id queue.ID, err error) error {
	if errors.Is(err, queue.ErrNotFound) {
		return fmt.Errorf("%s: no such message in the queue", id)
	}
	return err
}

func adminFlags(name string) func(fs *flag.FlagSet) func(ctx context.Context, a *app, args []string) error {
	return func(fs *flag.FlagSet) func(ctx context.Context, a *app, args []string) error {
		return func(ctx context.Context, a *app, args []string) error {
			if len(args) == 0 {
				return usagef("%s needs at least one message ID", name)
			}
			return a.admin(ctx, name, args)
		}
	}
}

// admin applies hold, release, delete or retry to each message, and
// reports each failure; it fails if any did.
func (a *app) admin(ctx context.Context, op string, ids []string) error {
	b, err := a.connect(ctx)
	if err != nil {
		return tempFail(err)
	}
	defer b.Close()
	fn := map[string]func(context.Context, queue.ID) error{
		"hold": b.Hold, "release": b.Release, "delete": b.Delete, "retry": b.Retry,
	}[op]
	var errs []error
	for _, id := range ids {
		if err := fn(ctx, queue.ID(id)); err != nil {
			errs = append(errs, notFound(queue.ID(id), err))
			continue
		}
		fmt.Fprintf(a.stdout, "%s: %s\n", id, pastTense(op))
	}
	return errors.Join(errs...)
}

func pastTense(op string) string {
	return map[string]string{"hold": "held", "release": "released", "delete": "deleted", "retry": "due now"}[op]
}

func retryFlags(fs *flag.FlagSet) func(ctx context.Context, a *app, args []string) error {
	all := fs.Bool("all", false, "every waiting message")
	return func(ctx context.Context, a *app, args []string) error {
		switch {
		case *all && len(args) > 0:
			return usagef("retry: give message IDs or --all, not both")
		case *all:
			return a.retryAll(ctx)
		case len(args) == 0:
			return usagef("retry needs message IDs or --all")
		}
		return a.admin(ctx, "retry", args)
	}
}

// retryAll makes every waiting message due now: the operator's flush,
// after fixing whatever made a destination fail.
func (a *app) retryAll(ctx context.Context) error {
	b, err := a.connect(ctx)
	if err != nil {
		return tempFail(err)
	}
	defer b.Close()
	var ids []queue.ID
	err = eachMessage(ctx, b, queue.ListParams{States: []queue.RecipientState{queue.Queued, queue.Deferred}}, func(m *queue.Message) error {
		ids = append(ids, m.ID)
		return nil
	})
	if err != nil {
		return err
	}
	n := 0
	for _, id := range ids {
		switch err := b.Retry(ctx, id); {
		case errors.Is(err, queue.ErrNotFound):
			// delivered meanwhile
		case err != nil:
			return err
		default:
			n++
		}
	}
	fmt.Fprintf(a.stdout, "%d message%s due now\n", n, plural(n))
	return nil
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// fmtAge formats a duration the way people read ages: "42s", "5m", "3h12m",
// "2d4h".
func fmtAge(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Round(time.Second)/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
	}
	return fmt.Sprintf("%dd%dh", int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour))
}

func fmtSize(n int64) string {
	switch {
	case n < 1<<10:
		return fmt.Sprintf("%d bytes", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}
