package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboundmail/outbound/queue"
)

// Enqueue durably stores a new message, its body and its recipients in one
// transaction, and then wakes listening workers (see Wakeups). A message
// without an idempotency key whose body fits in one chunk (most of them)
// costs two round trips: every statement from BEGIN on in one pipelined
// batch, then COMMIT.
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
	if oneBatch(m, body) {
		b := beginBatch()
		if err := s.queueMessage(b, m, body); err != nil {
			return "", err
		}
		err := s.pipeTx(ctx, 1, func(c *pgxpool.Conn) error { return c.SendBatch(ctx, b).Close() })
		var ce *commitError
		if err != nil && (!errors.As(err, &ce) || !s.committed(ctx, m.ID)) {
			return "", s.fail("enqueue "+string(m.ID), err)
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

// oneBatch reports whether m can be stored by the statements of
// queueMessage alone: no idempotency key to look up first, and a body read
// to its end in its first chunk, so no COPY.
func oneBatch(m *queue.Message, body *chunkSource) bool {
	return m.IdempotencyKey == "" && body.done
}

// queueMessage adds to b the statements that store m, whose whole body is
// body's first chunk (see oneBatch).
func (s *Store) queueMessage(b *pgx.Batch, m *queue.Message, body *chunkSource) error {
	id := string(m.ID)
	b.Queue(s.q.insertMessageNoKey, id, m.From, m.Arrived, int64(len(body.data)),
		m.EightBit, m.Return, m.EnvelopeID, m.RequireTLS)
	if len(body.data) > 0 {
		b.Queue(s.q.insertChunk, id, 0, body.data)
	}
	return s.queueRecipients(b, m)
}

// enqueue does the work of Enqueue inside tx, with a NOTIFY in tx if
// notify is set; body has its first chunk read. inserted is false when an
// existing message with the same idempotency key was found instead.
func (s *Store) enqueue(ctx context.Context, tx txConn, m *queue.Message, body *chunkSource, notify bool) (id queue.ID, inserted bool, err error) {
	if oneBatch(m, body) {
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
	if err := s.queueRecipients(b, m); err != nil {
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

// queueRecipients adds to b the INSERT of each recipient of m, then that
// of its (message, destination) pairs, each due when its earliest waiting
// recipient is.
func (s *Store) queueRecipients(b *pgx.Batch, m *queue.Message) error {
	var (
		dests []string
		due   []*time.Time // nil: no recipient waits there
	)
	for i, r := range m.Recipients {
		result, err := encodeOutcome(r.LastResult)
		if err != nil {
			return fmt.Errorf("postgres: enqueue %s: %w", m.ID, err)
		}
		b.Queue(s.q.insertRecipient, string(m.ID), i, r.Address, r.Destination, r.Notify, r.ORCPT,
			r.State.String(), r.Attempts, r.NextAttempt, nullTime(r.LastAttempt), result,
			r.DelayWarned, r.PossibleDuplicate)
		j := slices.Index(dests, r.Destination)
		if j < 0 {
			dests, due = append(dests, r.Destination), append(due, nil)
			j = len(dests) - 1
		}
		if r.State == queue.Queued || r.State == queue.Deferred {
			if due[j] == nil || r.NextAttempt.Before(*due[j]) {
				due[j] = &r.NextAttempt
			}
		}
	}
	b.Queue(s.q.insertDeliveries, string(m.ID), m.Arrived, dests, due)
	return nil
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
