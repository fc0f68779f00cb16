package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/outboundmail/outbound/queue"
)

// Enqueue durably stores a new message, its body and its recipients in one
// transaction, and then wakes listening workers (see Wakeups). A message
// without an idempotency key whose body fits in one chunk (most of them)
// is stored by one statement, a transaction by itself: one round trip.
//
// If the COMMIT fails in a way that leaves its outcome unknown (the
// connection broke), Enqueue looks for the message by ID before reporting
// the error, so that a commit that did happen is reported as success. A
// caller that retries after an error should set Message.IdempotencyKey.
func (s *Store) Enqueue(ctx context.Context, p queue.EnqueueParams) (queue.ID, error) {
	if err := s.check(); err != nil {
		return "", err
	}
	body, err := s.openChunks(p)
	if err != nil {
		return "", err
	}
	defer s.putChunkBuffer(body.buf)
	m := p.Message
	if oneStatement(m, body) {
		args, err := storeArgs(m, body)
		if err != nil {
			return "", err
		}
		if _, err := s.pool.Exec(ctx, s.q.storeMessage, args...); err != nil {
			// A server error means the statement, and with it the
			// transaction, failed; a broken connection leaves the
			// outcome unknown.
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) || !s.committed(ctx, m.ID) {
				return "", s.fail("enqueue "+string(m.ID), err)
			}
		}
		s.wakeWorkers()
		return m.ID, nil
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return "", s.fail("enqueue", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // no-op after Commit
	id, inserted, err := s.enqueue(ctx, tx, m, body, false)
	if err != nil {
		return "", err
	}
	if err := tx.Commit(ctx); err != nil {
		if !inserted || !s.committed(ctx, id) {
			return "", s.fail("enqueue "+string(id)+": commit", err)
		}
	}
	if inserted {
		s.wakeWorkers()
	}
	return id, nil
}

// committed reports whether message id exists, asked on a fresh connection
// after a failed COMMIT.
func (s *Store) committed(ctx context.Context, id queue.ID) bool {
	var ok bool
	err := s.pool.QueryRow(context.WithoutCancel(ctx), s.q.messageExists, string(id)).Scan(&ok)
	return err == nil && ok
}

// EnqueueTx stores a message inside the caller's transaction: the message
// exists if and only if tx commits, and workers are woken only then
// (NOTIFY is transactional). The work happens under a savepoint, so a
// failure (a body that cannot be read, a duplicate ID) leaves tx as it was
// and usable. tx must be on the database the store was opened on; the
// store's schema is named explicitly, so tx's search_path does not matter.
//
// With an IdempotencyKey that another open transaction has just used,
// EnqueueTx waits for that transaction to end.
func (s *Store) EnqueueTx(ctx context.Context, tx pgx.Tx, p queue.EnqueueParams) (queue.ID, error) {
	if err := s.check(); err != nil {
		return "", err
	}
	body, err := s.openChunks(p)
	if err != nil {
		return "", err
	}
	defer s.putChunkBuffer(body.buf)
	sp, err := tx.Begin(ctx) // SAVEPOINT
	if err != nil {
		return "", s.fail("enqueue", err)
	}
	id, _, err := s.enqueue(ctx, sp, p.Message, body, true)
	if err != nil {
		if rerr := sp.Rollback(ctx); rerr != nil {
			return "", errors.Join(err, s.fail("enqueue: rollback to savepoint", rerr))
		}
		return "", err
	}
	if err := sp.Commit(ctx); err != nil { // RELEASE SAVEPOINT
		return "", s.fail("enqueue", err)
	}
	return id, nil
}

// openChunks checks p and reads the first chunk of its body, before
// anything is written: most bodies fit in it, so their size is known for
// the INSERT. The caller gives the buffer back with putChunkBuffer.
func (s *Store) openChunks(p queue.EnqueueParams) (*chunkSource, error) {
	m := p.Message
	if m == nil || m.ID == "" {
		return nil, errors.New("postgres: enqueue: message without ID")
	}
	if p.Body == nil {
		return nil, fmt.Errorf("postgres: enqueue %s: nil body", m.ID)
	}
	body := &chunkSource{id: string(m.ID), r: p.Body, buf: s.chunkBuffer(p.Body)}
	if !body.Next() && body.err != nil {
		s.putChunkBuffer(body.buf)
		return nil, fmt.Errorf("postgres: enqueue %s: reading body: %w", m.ID, body.err)
	}
	return body, nil
}

// oneStatement reports whether m can be stored by storeMessage alone: no
// idempotency key to look up first, and a body read to its end in its
// first chunk, so no COPY.
func oneStatement(m *queue.Message, body *chunkSource) bool {
	return m.IdempotencyKey == "" && body.done
}

// storeArgs returns the arguments of storeMessage for m, whose whole body
// is body's first chunk (see oneStatement).
func storeArgs(m *queue.Message, body *chunkSource) ([]any, error) {
	var data []byte // nil: NULL, no chunk
	if len(body.data) > 0 {
		data = body.data
	}
	args := []any{string(m.ID), m.From, m.Arrived, int64(len(body.data)),
		m.EightBit, m.Return, m.EnvelopeID, m.RequireTLS, data}
	return appendRecipientArgs(args, m)
}

// queueMessage adds storeMessage for m to b (see oneStatement).
func (s *Store) queueMessage(b *pgx.Batch, m *queue.Message, body *chunkSource) error {
	args, err := storeArgs(m, body)
	if err != nil {
		return err
	}
	b.Queue(s.q.storeMessage, args...)
	return nil
}

// enqueue does the work of Enqueue inside tx, with a NOTIFY in tx if
// notify is set; body has its first chunk read. inserted is false when an
// existing message with the same idempotency key was found instead.
func (s *Store) enqueue(ctx context.Context, tx txConn, m *queue.Message, body *chunkSource, notify bool) (id queue.ID, inserted bool, err error) {
	if oneStatement(m, body) {
		b := new(pgx.Batch)
		if err := s.queueMessage(b, m, body); err != nil {
			return "", false, err
		}
		if notify {
			b.Queue(s.q.notifyWork, s.channel)
		}
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return "", false, s.fail("enqueue "+string(m.ID), err)
		}
		return m.ID, true, nil
	}
	size := int64(len(body.data))
	var got string
	err = tx.QueryRow(ctx, s.q.insertMessage, string(m.ID), m.From, m.Arrived, size,
		nullString(m.IdempotencyKey), m.EightBit, m.Return, m.EnvelopeID, m.RequireTLS).Scan(&got)
	if errors.Is(err, pgx.ErrNoRows) { // idempotency key already used
		if err := tx.QueryRow(ctx, s.q.selectIDByIdempotencyKey, m.IdempotencyKey).Scan(&got); err != nil {
			return "", false, s.fail("enqueue "+string(m.ID), err)
		}
		return queue.ID(got), false, nil
	}
	if err != nil {
		return "", false, s.fail("enqueue "+string(m.ID), err)
	}

	copied := !body.done && len(body.data) > 0
	if copied {
		// More than one chunk: stream them all with COPY, one chunk in
		// memory at a time.
		body.replay = true
		_, err := tx.CopyFrom(ctx, pgx.Identifier{s.schema, "message_chunk"},
			[]string{"message_id", "seq", "data"}, body)
		if body.err != nil {
			return "", false, fmt.Errorf("postgres: enqueue %s: reading body: %w", m.ID, body.err)
		}
		if err != nil {
			return "", false, s.fail("enqueue "+string(m.ID)+": body", err)
		}
		size = body.size
	}

	b := new(pgx.Batch)
	switch {
	case copied:
		b.Queue(s.q.setMessageSize, string(m.ID), size)
	case len(body.data) > 0:
		b.Queue(s.q.insertChunk, string(m.ID), 0, body.data)
	}
	args, err := appendRecipientArgs([]any{string(m.ID), m.Arrived}, m)
	if err != nil {
		return "", false, err
	}
	b.Queue(s.q.insertRecipients, args...)
	if notify {
		b.Queue(s.q.notifyWork, s.channel)
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return "", false, s.fail("enqueue "+string(m.ID), err)
	}
	return m.ID, true, nil
}

// lener is a reader that knows how many octets are left, such as the
// *bytes.Reader the queue passes for bodies it holds in memory.
type lener interface{ Len() int }

// chunkBuffer returns the buffer to read body into: exactly large enough
// (plus the octet that proves the end) when body knows its length and fits
// in one chunk, else a chunk-sized buffer from the store's pool. A fresh
// 256 KiB buffer per Enqueue was most of the enqueue path's allocation.
func (s *Store) chunkBuffer(body io.Reader) []byte {
	if l, ok := body.(lener); ok && l.Len() < s.chunkSize {
		return make([]byte, l.Len()+1)
	}
	if b, ok := s.chunks.Get().(*[]byte); ok {
		return *b
	}
	return make([]byte, s.chunkSize)
}

// putChunkBuffer returns a chunk-sized buffer to the pool once nothing
// refers to it any more (pgx has encoded every row it held).
func (s *Store) putChunkBuffer(b []byte) {
	if len(b) == s.chunkSize {
		s.chunks.Put(&b)
	}
}

// appendRecipientArgs appends to args the arrays of storeRecipients for
// m: one element per recipient, then the message's pairs, each due when
// its earliest waiting recipient is.
func appendRecipientArgs(args []any, m *queue.Message) ([]any, error) {
	n := len(m.Recipients)
	var (
		addresses, dests, orcpts, states = make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		notify, results                  = make([]*string, n), make([]*string, n)
		attempts                         = make([]int32, n)
		next, last                       = make([]time.Time, n), make([]*time.Time, n)
		warned, dup                      = make([]bool, n), make([]bool, n)

		pairDests []string
		pairDue   []*time.Time // nil: no recipient waits there
		pairIndex = make(map[string]int)
	)
	for i := range m.Recipients {
		r := &m.Recipients[i]
		result, err := encodeOutcome(r.LastResult)
		if err != nil {
			return nil, fmt.Errorf("postgres: enqueue %s: %w", m.ID, err)
		}
		if result != nil {
			results[i] = new(string)
			*results[i] = string(result)
		}
		if r.Notify != nil {
			b, err := json.Marshal(r.Notify)
			if err != nil {
				return nil, fmt.Errorf("postgres: enqueue %s: %w", m.ID, err)
			}
			notify[i] = new(string)
			*notify[i] = string(b)
		}
		if !r.LastAttempt.IsZero() {
			last[i] = &r.LastAttempt
		}
		addresses[i], dests[i], orcpts[i], states[i] = r.Address, r.Destination, r.ORCPT, r.State.String()
		attempts[i], next[i], warned[i], dup[i] = int32(r.Attempts), r.NextAttempt, r.DelayWarned, r.PossibleDuplicate

		j, ok := pairIndex[r.Destination]
		if !ok {
			j = len(pairDests)
			pairIndex[r.Destination] = j
			pairDests, pairDue = append(pairDests, r.Destination), append(pairDue, nil)
		}
		if r.State == queue.Queued || r.State == queue.Deferred {
			if pairDue[j] == nil || r.NextAttempt.Before(*pairDue[j]) {
				pairDue[j] = &r.NextAttempt
			}
		}
	}
	return append(args, addresses, dests, notify, orcpts, states, attempts, next, last, results, warned, dup,
		pairDests, pairDue), nil
}

// chunkSource reads a body in chunks of len(buf) octets; it is the
// pgx.CopyFromSource of message_chunk rows. The first chunk is read before
// COPY starts (replay makes Next return it once more).
type chunkSource struct {
	id     string
	r      io.Reader
	buf    []byte
	data   []byte // the current chunk
	seq    int    // chunks read so far
	size   int64  // octets read so far
	done   bool   // r reached EOF
	replay bool   // return data again on the next call to Next
	err    error  // from r
}

// Next reads the next chunk. A short final chunk is normal; a body whose
// length is a multiple of the chunk size ends with an empty read, which is
// not a chunk.
func (c *chunkSource) Next() bool {
	if c.replay {
		c.replay = false
		return true
	}
	if c.done || c.err != nil {
		return false
	}
	n, err := io.ReadFull(c.r, c.buf)
	switch {
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		c.done = true
	case err != nil:
		c.err = err
		return false
	}
	if n == 0 {
		return false
	}
	c.data = c.buf[:n]
	c.seq++
	c.size += int64(n)
	return true
}

// Values returns the current row; pgx encodes it before calling Next again,
// so buf can be reused.
func (c *chunkSource) Values() ([]any, error) { return []any{c.id, c.seq - 1, c.data}, nil }

// Err returns the error from reading the body.
func (c *chunkSource) Err() error { return c.err }
