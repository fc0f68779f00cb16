package embedded

import (
	"context"
	"fmt"
	"slices"

	"github.com/outboundmail/outbound/queue"
)

// InvalidError reports arguments the store cannot accept; nothing was
// written.
type InvalidError struct {
	Op     string // "Enqueue", "Finish"
	Reason string
}

// Error returns "embedded: invalid Op: Reason".
func (e *InvalidError) Error() string { return "embedded: invalid " + e.Op + ": " + e.Reason }

// DuplicateIDError is returned by Enqueue for an ID that is already in the
// store (and no matching idempotency key made it a repeat).
type DuplicateIDError struct {
	ID queue.ID
}

// Error names the duplicate ID.
func (e *DuplicateIDError) Error() string {
	return "embedded: message ID " + string(e.ID) + " already in the store"
}

// Enqueue durably stores a new message and its body; see queue.Store. When it
// returns nil, the body (inline, or its file and directory entry) and the
// record that references it have been fsynced.
func (s *Store) Enqueue(ctx context.Context, p queue.EnqueueParams) (queue.ID, error) {
	end, err := s.begin()
	if err != nil {
		return "", err
	}
	defer end()
	if err := checkCtx(ctx); err != nil {
		return "", err
	}
	if err := validateMessage("Enqueue", p.Message); err != nil {
		return "", err
	}
	if err := s.c.failure(); err != nil {
		return "", err
	}
	b, err := s.readBody(p.Body)
	if err != nil {
		return "", err
	}
	// One allocation for what the write shares with this goroutine, rather
	// than one per captured variable.
	w := &enqueueWrite{m: p.Message, b: b}
	err = s.write(w.run)
	if err == nil {
		err = w.rejection
	}
	if err != nil || !w.inserted {
		s.discard(b)
	}
	if err != nil {
		return "", err
	}
	return w.id, nil
}

// enqueueWrite is the transaction of one Enqueue and its outcome.
type enqueueWrite struct {
	m         *queue.Message
	b         *body
	id        queue.ID
	inserted  bool
	rejection error
}

func (w *enqueueWrite) run(bt *btx) (bool, error) {
	w.id, w.inserted, w.rejection = "", false, nil
	existing, err := bt.check(w.m)
	if err != nil || existing != "" {
		w.id, w.rejection = existing, err
		return false, nil
	}
	w.id, w.inserted = w.m.ID, true
	return true, bt.insert(w.m, w.b)
}

func validateMessage(op string, m *queue.Message) error {
	bad := func(format string, a ...any) error {
		return &InvalidError{Op: op, Reason: fmt.Sprintf(format, a...)}
	}
	switch {
	case m == nil:
		return bad("no message")
	case m.ID == "" || len(m.ID) > maxKeyLen:
		return bad("message ID of %d octets", len(m.ID))
	case len(m.IdempotencyKey) > maxKeyLen:
		return bad("idempotency key of %d octets", len(m.IdempotencyKey))
	case len(m.Recipients) == 0:
		return bad("message %s has no recipients", m.ID)
	}
	for _, r := range m.Recipients {
		if r.Destination == "" || len(r.Destination) > maxKeyLen {
			return bad("recipient %q has a destination of %d octets", r.Address, len(r.Destination))
		}
		if r.State.Final() || r.State > queue.Held {
			return bad("recipient %q enqueued in state %v", r.Address, r.State)
		}
	}
	return nil
}

// check reports whether m may be inserted: the ID of the message already
// holding its idempotency key, or a *DuplicateIDError.
func (b *btx) check(m *queue.Message) (queue.ID, error) {
	if m.IdempotencyKey != "" {
		// A key whose message was quarantined is free again.
		if v := b.idem.Get([]byte(m.IdempotencyKey)); v != nil && b.msg.Get(v) != nil {
			return queue.ID(v), nil
		}
	}
	if b.msg.Get([]byte(m.ID)) != nil {
		return "", &DuplicateIDError{ID: m.ID}
	}
	return "", nil
}

// insert stores a message that check accepted, with its written body.
func (b *btx) insert(m *queue.Message, bd *body) error {
	// A shallow copy: the record is only encoded, and nothing here writes to
	// the caller's recipients.
	r := &msgRecord{msg: *m, kind: bd.kind(), file: bd.file, bodyCRC: bd.crc, tokens: make([]int64, len(m.Recipients))}
	r.msg.Size = bd.size
	id := []byte(m.ID)
	if err := b.putMessage(nil, r); err != nil {
		return err
	}
	var err error
	if bd.file != "" {
		err = b.files.Put([]byte(bd.file), id)
	} else {
		err = b.body.Put(id, bd.inline)
	}
	if err != nil {
		return err
	}
	if m.IdempotencyKey != "" {
		return b.idem.Put([]byte(m.IdempotencyKey), id)
	}
	return nil
}

// cloneMessage returns a deep copy of m, so that neither the caller's
// message nor one returned to a caller aliases what the store keeps.
func cloneMessage(m *queue.Message) *queue.Message {
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
