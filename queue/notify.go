package queue

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/outboundmail/outbound/delivery/dsn"
)

// The RFC 3464 §2.3.3 actions the scheduler reports.
const (
	actionFailed  = "failed"
	actionExpired = "expired" // reported as "failed", with status 4.4.7 when the server gave none
	actionDelayed = "delayed"
)

// dsnItem is one recipient's line in a notification.
type dsnItem struct {
	rcpt   *Recipient
	out    *Outcome // what the last attempt said; nil if none
	action string   // "" when no notification is owed for this recipient
}

// notifications builds the one DSN that an attempt owes the sender — for
// every recipient that failed, expired or is now delayed, whose NOTIFY asks
// for it — and adds it to fp, so that the store queues it in the same
// atomic step as the outcome (a crash cannot produce zero or two). It
// returns the DSN's ID per recipient address. There is never a DSN for a
// message whose sender is <> (RFC 5321 §4.5.5: no notification about a
// notification).
func (q *Queue) notifications(ctx context.Context, msg *Message, p plan, now time.Time, fp *FinishParams, log *slog.Logger) map[string]ID {
	if msg.From == "" {
		return nil
	}
	var items []dsnItem
	for _, it := range p.items {
		if it.action == "" {
			continue
		}
		kind := "FAILURE"
		if it.action == actionDelayed {
			kind = "DELAY"
		}
		if notifyAllows(it.rcpt.Notify, kind) {
			items = append(items, it)
		}
	}
	if len(items) == 0 {
		return nil
	}
	n, err := q.composeDSN(ctx, msg, items, now)
	if err != nil {
		// Never lose the outcome over its notification: record it
		// without one, loudly.
		log.LogAttrs(ctx, slog.LevelError, "cannot compose delivery status notification", slog.Any("error", err))
		return nil
	}
	fp.Notifications = append(fp.Notifications, *n)
	ids := make(map[string]ID, len(items))
	for _, it := range items {
		ids[it.rcpt.Address] = n.Message.ID
	}
	return ids
}

// composeDSN builds the notification message: from <> to the envelope
// sender, an RFC 3464 multipart/report returning the original message or
// its header (RET, capped by Config.MaxReturnSize).
func (q *Queue) composeDSN(ctx context.Context, msg *Message, items []dsnItem, now time.Time) (*EnqueueParams, error) {
	id := newID(now)
	ret := msg.Return
	if ret == "FULL" && msg.Size > q.cfg.MaxReturnSize {
		ret = "HDRS"
	}
	if ret == "" {
		ret = "HDRS" // RFC 3461 §4.3 leaves it to the MTA; headers keep notifications small
	}
	rep := &dsn.Report{
		ReportingMTA: q.cfg.Hostname,
		From:         "MAILER-DAEMON@" + q.cfg.Hostname,
		To:           msg.From,
		MessageID:    "<" + string(id) + "@" + q.cfg.Hostname + ">",
		Date:         now,
		EnvelopeID:   msg.EnvelopeID,
		ArrivalDate:  msg.Arrived,
		Return:       ret,
	}
	for _, it := range items {
		rep.Recipients = append(rep.Recipients, q.dsnRecipient(msg, it))
	}
	var buf bytes.Buffer
	err := q.composeWithOriginal(ctx, &buf, rep, msg.ID)
	if err != nil {
		// Try once more without the original: a notification without
		// the returned message is better than none.
		buf.Reset()
		rep.Return = "HDRS"
		if err2 := dsn.Compose(&buf, rep, strings.NewReader("")); err2 != nil {
			return nil, fmt.Errorf("%w (and without the original: %v)", err, err2)
		}
	}
	eight := false
	for _, c := range buf.Bytes() {
		if c >= 0x80 {
			eight = true
			break
		}
	}
	n := &Message{
		ID:       id,
		From:     "",
		Arrived:  now,
		EightBit: eight,
		Recipients: []Recipient{{
			Address:     msg.From,
			Destination: q.cfg.Deliverer.Destination(msg.From),
			State:       Queued,
			NextAttempt: now,
		}},
	}
	return &EnqueueParams{Message: n, Body: bytes.NewReader(buf.Bytes())}, nil
}

func (q *Queue) composeWithOriginal(ctx context.Context, w io.Writer, rep *dsn.Report, id ID) error {
	body, err := q.cfg.Store.OpenBody(ctx, id)
	if err != nil {
		return fmt.Errorf("open original: %w", err)
	}
	defer body.Close()
	return dsn.Compose(w, rep, body)
}

// dsnRecipient is one per-recipient block of the notification.
func (q *Queue) dsnRecipient(msg *Message, it dsnItem) dsn.Recipient {
	r := dsn.Recipient{
		FinalRecipient:    it.rcpt.Address,
		OriginalRecipient: it.rcpt.ORCPT,
		LastAttemptDate:   it.rcpt.LastAttempt,
	}
	out := it.out
	if out == nil {
		out = it.rcpt.LastResult
	}
	switch it.action {
	case actionFailed:
		r.Action, r.Status = dsn.Failed, status(out, "5.0.0")
	case actionExpired:
		// RFC 3463 4.4.7: delivery time expired. The last reply's
		// detail, when there is one, says more.
		r.Action, r.Status = dsn.Failed, status(out, "4.4.7")
	case actionDelayed:
		r.Action, r.Status = dsn.Delayed, status(out, "4.0.0")
		r.WillRetryUntil = q.cfg.Schedule.Expiry(msg.Arrived)
	}
	if out != nil {
		if host := hostName(out.Host); host != "" {
			r.RemoteMTA = "dns; " + host
		}
		if out.Reply.Code != 0 {
			r.DiagnosticCode = "smtp; " + oneLine(out.Reply.String())
		} else if out.Error != "" {
			r.DiagnosticCode = "X-Outbound; " + oneLine(out.Error)
		}
	}
	return r
}

// status returns the enhanced status code of an outcome, derived from its
// basic code when the server sent none (RFC 3463 §3.1: class from the
// first digit), or def.
func status(out *Outcome, def string) string {
	if out == nil {
		return def
	}
	if !out.Reply.Enhanced.IsZero() {
		return out.Reply.Enhanced.String()
	}
	switch c := out.Reply.Code / 100; {
	case c == 4 && def[0] == '4', c == 5 && def[0] == '5':
		return def
	case c == 4:
		return "4.0.0"
	case c == 5:
		return "5.0.0"
	}
	return def
}

// hostName returns the host name of "mx.example.com[192.0.2.1]:25".
func hostName(h string) string {
	if i := strings.IndexByte(h, '['); i > 0 {
		return h[:i]
	}
	if i := strings.LastIndexByte(h, ':'); i > 0 && !strings.Contains(h[:i], ":") {
		return h[:i]
	}
	return h
}

// oneLine joins a multi-line reply for a DSN field.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// report logs and emits the events for one recipient's recorded outcome.
// log is the lease's logger (leaseLog): it names the message and the
// destination already.
func (q *Queue) report(msg *Message, dest string, r *Recipient, u RecipientUpdate, it dsnItem, dsns map[string]ID, now time.Time, log *slog.Logger) {
	ev := Event{Time: now, Message: msg.ID, Arrived: msg.Arrived, Destination: dest, Recipient: r.Address,
		Attempts: r.Attempts, Result: u.Result, NextAttempt: u.NextAttempt, DSN: dsns[r.Address]}
	attrs := []slog.Attr{slog.String("to", r.Address), slog.Int("attempts", r.Attempts)}
	if u.Result != nil {
		attrs = append(attrs, slog.String("reply", replyText(u.Result)))
	}
	level := slog.LevelInfo
	switch u.State {
	case Delivered:
		ev.Kind = EventDelivered
		attrs = append(attrs, slog.Duration("delay", now.Sub(msg.Arrived)))
	case Deferred:
		ev.Kind = EventDeferred
		attrs = append(attrs, slog.Time("next", u.NextAttempt))
	case Failed:
		ev.Kind, level = EventBounced, slog.LevelWarn
	case Expired:
		ev.Kind, level = EventExpired, slog.LevelWarn
	}
	if ev.DSN != "" {
		attrs = append(attrs, slog.String("dsn", string(ev.DSN)))
	}
	log.LogAttrs(context.Background(), level, u.State.String(), attrs...)
	if u.State == Deferred {
		ev.DSN = "" // the delay warning has its own event
	}
	q.cfg.Observer.Observe(ev)
	if u.PossibleDuplicate {
		ev.Kind = EventPossibleDuplicate
		q.cfg.Observer.Observe(ev)
	}
	if it.action == actionDelayed && dsns[r.Address] != "" {
		ev.Kind, ev.DSN = EventDelayWarning, dsns[r.Address]
		q.cfg.Observer.Observe(ev)
	}
}

// replyText is what a log line says about an outcome.
func replyText(o *Outcome) string {
	s := o.Reply.String()
	if o.Error != "" {
		if s != "" {
			s += "; "
		}
		s += o.Error
	}
	if o.Stage != "" {
		s = string(o.Stage) + ": " + s
	}
	return s
}

// Stats counts what Run or RunOnce did, per recipient outcome.
type Stats struct {
	Attempts  int // delivery attempts, each one transaction with one destination
	Delivered int
	Deferred  int
	Bounced   int
	Expired   int
}

func (s *Stats) count(st RecipientState) {
	switch st {
	case Delivered:
		s.Delivered++
	case Deferred:
		s.Deferred++
	case Failed:
		s.Bounced++
	case Expired:
		s.Expired++
	}
}

func (s *Stats) add(o Stats) {
	s.Attempts += o.Attempts
	s.Delivered += o.Delivered
	s.Deferred += o.Deferred
	s.Bounced += o.Bounced
	s.Expired += o.Expired
}
