package queue_test

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/outboundmail/outbound/delivery"
	"github.com/outboundmail/outbound/queue"
)

// keyLog is a slog.Handler that keeps, for every record, its message and
// the keys of all its attributes, those added with Logger.With included.
type keyLog struct {
	mu      *sync.Mutex
	records *[]logRecord
	with    []string
}

type logRecord struct {
	msg  string
	keys []string
	vals map[string]string
}

func newKeyLog() keyLog { return keyLog{mu: new(sync.Mutex), records: new([]logRecord)} }

func (h keyLog) Enabled(context.Context, slog.Level) bool { return true }

func (h keyLog) Handle(_ context.Context, r slog.Record) error {
	rec := logRecord{msg: r.Message, keys: slices.Clone(h.with), vals: map[string]string{}}
	r.Attrs(func(a slog.Attr) bool {
		rec.keys = append(rec.keys, a.Key)
		rec.vals[a.Key] = a.Value.String()
		return true
	})
	h.mu.Lock()
	defer h.mu.Unlock()
	*h.records = append(*h.records, rec)
	return nil
}

func (h keyLog) WithAttrs(as []slog.Attr) slog.Handler {
	c := h
	c.with = slices.Clone(h.with)
	for _, a := range as {
		c.with = append(c.with, a.Key)
	}
	return c
}

func (h keyLog) WithGroup(string) slog.Handler { return h }

// TestRun_LogAttributesOnce: every log record of the scheduler names each
// attribute once (a logger's With and the record's own attributes used to
// both add the message ID and the destination).
func TestRun_LogAttributesOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newKeyLog()
		b := setup(t, queue.Config{Logger: slog.New(h)})
		b.net.add("example.com", &simServer{rcpt: func(_ time.Time, _, to string) delivery.Reply {
			switch {
			case strings.HasPrefix(to, "ok"):
				return delivery.Reply{Code: 250, Text: "ok"}
			case strings.HasPrefix(to, "later"):
				return delivery.Reply{Code: 451, Enhanced: delivery.EnhancedCode{4, 3, 0}, Text: "try later"}
			}
			return delivery.Reply{Code: 550, Enhanced: delivery.EnhancedCode{5, 1, 1}, Text: "no such user"}
		}})
		enqueue(t, b.q, "app@app.test", "ok@example.com", "later@example.com", "gone@example.com")
		runFor(t, b.q, time.Second)

		h.mu.Lock()
		defer h.mu.Unlock()
		seen := map[string]bool{}
		for _, r := range *h.records {
			seen[r.msg] = true
			for i, k := range r.keys {
				if slices.Index(r.keys, k) != i {
					t.Errorf("record %q names %q twice: %v", r.msg, k, r.keys)
				}
			}
		}
		for _, msg := range []string{"delivered", "deferred", "failed"} {
			if !seen[msg] {
				t.Fatalf("no %q record among %v", msg, *h.records)
			}
		}
		for _, r := range *h.records {
			if r.msg == "delivered" && r.vals["to"] == "ok@example.com" &&
				(!slices.Contains(r.keys, "id") || !slices.Contains(r.keys, "destination")) {
				t.Errorf("delivered record has keys %v; want id and destination too", r.keys)
			}
		}
	})
}
