package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboundmail/outbound/backoff"
	"github.com/outboundmail/outbound/queue"
)

// DefaultSchema is the schema a store uses when Options.Schema is empty.
const DefaultSchema = "outbound"

// DefaultChunkSize is the size of the body chunks a store writes when
// Options.ChunkSize is zero.
const DefaultChunkSize = 256 << 10

// Options configure a Store. The zero value (or a nil *Options) is ready to
// use.
type Options struct {
	// Schema is the PostgreSQL schema that holds the queue's tables; it is
	// created if missing. Empty means DefaultSchema. Several queues (or
	// parallel tests) can share a database, each in its own schema.
	Schema string

	// ChunkSize is how many octets of a body go into one row of
	// message_chunk. 0 means DefaultChunkSize (256 KiB).
	ChunkSize int

	// Clock paces the listener's reconnection attempts (see
	// Store.Wakeups). Nil means backoff.System. No queue decision uses it:
	// those take Now from the caller.
	Clock backoff.Clock

	// Logger receives listener connection errors. Nil means discard.
	Logger *slog.Logger
}

// Store is a queue.Store on PostgreSQL, shared by any number of workers on
// any number of machines. It is safe for concurrent use.
type Store struct {
	pool      *pgxpool.Pool
	ownPool   bool   // Close closes pool
	schema    string // raw name, for pgx.Identifier
	channel   string // LISTEN/NOTIFY channel of this schema
	chunkSize int
	clock     backoff.Clock
	logger    *slog.Logger
	q         queries
	chunks    sync.Pool // *[]byte of chunkSize octets, for Enqueue

	closed atomic.Bool

	notifyOnce sync.Once
	notifyReq  chan struct{} // buffered 1: commits waiting for a NOTIFY
	notifyStop chan struct{} // closed by Close
	notifyDone chan struct{} // closed when the notifier has exited

	listenOnce sync.Once
	wake       chan struct{} // buffered 1: wakeups coalesce
	stop       context.CancelFunc
	stopped    chan struct{} // closed when the listener has exited
}

var _ queue.Store = (*Store)(nil)

// Open connects to PostgreSQL with a pool of its own (connString is a URL
// or keyword/value string as pgxpool.ParseConfig takes, including pool
// settings such as pool_max_conns), applies the schema migrations the
// database lacks, and returns the store. Close closes the pool.
//
// The pool's sessions run with jit off unless connString sets it: the
// store's statements take well under a millisecond, and when the planner
// misjudges a table (a new one without statistics yet) it would spend
// hundreds of milliseconds compiling one of them. A pool given to New is
// best configured the same way.
func Open(ctx context.Context, connString string, opts *Options) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(connString)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	if _, set := cfg.ConnConfig.RuntimeParams["jit"]; !set {
		cfg.ConnConfig.RuntimeParams["jit"] = "off"
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	s, err := New(ctx, pool, opts)
	if err != nil {
		pool.Close()
		return nil, err
	}
	s.ownPool = true
	return s, nil
}

// New returns a store on a pool the caller owns (Close leaves it open),
// after applying the schema migrations the database lacks. Migrations are
// serialised by a transaction-scoped advisory lock, so any number of nodes
// may start at once.
func New(ctx context.Context, pool *pgxpool.Pool, opts *Options) (*Store, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Schema == "" {
		o.Schema = DefaultSchema
	}
	if o.ChunkSize <= 0 {
		o.ChunkSize = DefaultChunkSize
	}
	if o.Clock == nil {
		o.Clock = backoff.System{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	channel := "outbound " + o.Schema
	s := &Store{
		pool:       pool,
		schema:     o.Schema,
		channel:    channel,
		chunkSize:  o.ChunkSize,
		clock:      o.Clock,
		logger:     o.Logger,
		q:          newQueries(pgx.Identifier{o.Schema}.Sanitize(), channel),
		wake:       make(chan struct{}, 1),
		notifyReq:  make(chan struct{}, 1),
		notifyStop: make(chan struct{}),
		notifyDone: make(chan struct{}),
		stopped:    make(chan struct{}),
	}
	if err := s.migrate(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Pool returns the connection pool the store uses, for example to begin
// the transaction given to EnqueueTx.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Close stops the listener and, if Open created the pool, closes it. Calls
// after Close return queue.ErrClosed.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return queue.ErrClosed
	}
	s.listenOnce.Do(func() { close(s.stopped) }) // never started: nothing to stop
	if s.stop != nil {
		s.stop()
	}
	<-s.stopped
	s.notifyOnce.Do(func() { close(s.notifyDone) })
	close(s.notifyStop)
	<-s.notifyDone // it sends a NOTIFY still owed
	if s.ownPool {
		s.pool.Close()
	}
	return nil
}

// check returns queue.ErrClosed after Close.
func (s *Store) check() error {
	if s.closed.Load() {
		return queue.ErrClosed
	}
	return nil
}

// fail wraps a driver error with the operation, or turns it into
// queue.ErrClosed when the store was closed under the call.
func (s *Store) fail(op string, err error) error {
	if s.closed.Load() {
		return queue.ErrClosed
	}
	return fmt.Errorf("postgres: %s: %w", op, err)
}

// inTx runs fn in a transaction and commits. It runs fn again, up to
// attempts times in all, when PostgreSQL aborted the transaction for a deadlock or serialization
// failure, or when the connection failed before anything was sent; fn must
// therefore start from scratch each time. A failed COMMIT is not retried:
// its outcome is unknown.
func (s *Store) inTx(ctx context.Context, attempts int, fn func(pgx.Tx) error) error {
	for attempt := 1; ; attempt++ {
		err := pgx.BeginFunc(ctx, s.pool, fn)
		if err == nil || attempt >= attempts || !retryable(err) || ctx.Err() != nil {
			return err
		}
	}
}

// txConn is what the statements of a transaction run on: a pgx.Tx, or a
// pooled connection inside a transaction that pipeTx began.
type txConn interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
	CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error)
}

// beginBatch returns a batch that opens a transaction: the first batch fn
// sends in pipeTx.
func beginBatch() *pgx.Batch {
	b := new(pgx.Batch)
	b.Queue("BEGIN")
	return b
}

// commitError is a failed COMMIT: the transaction's outcome is unknown.
type commitError struct{ err error }

func (e *commitError) Error() string { return "commit: " + e.err.Error() }
func (e *commitError) Unwrap() error { return e.err }

// pipeTx runs fn in a transaction on one pooled connection and commits,
// like inTx, but without a round trip for BEGIN: fn's first batch comes
// from beginBatch, so that a transaction whose statements fit in one batch
// costs two round trips (the batch, then COMMIT) instead of four. fn may
// read before it begins, and need not begin at all: then there is nothing
// to commit. If fn fails, the transaction is rolled back (a connection that
// cannot do that is closed by the pool). A failed COMMIT is returned as a
// *commitError and never retried.
func (s *Store) pipeTx(ctx context.Context, attempts int, fn func(*pgxpool.Conn) error) error {
	for attempt := 1; ; attempt++ {
		err := s.pipeTxOnce(ctx, fn)
		var ce *commitError
		if err == nil || errors.As(err, &ce) || attempt >= attempts || !retryable(err) || ctx.Err() != nil {
			return err
		}
	}
}

func (s *Store) pipeTxOnce(ctx context.Context, fn func(*pgxpool.Conn) error) error {
	c, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	err = fn(c)
	if c.Conn().PgConn().TxStatus() == 'I' {
		return err // fn began nothing (it failed first, or had nothing to do)
	}
	if err != nil {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		c.Exec(rctx, "ROLLBACK") //nolint:errcheck // if it fails, Release closes the connection
		return err
	}
	tag, err := c.Exec(ctx, "COMMIT")
	if err != nil {
		return &commitError{err}
	}
	if tag.String() == "ROLLBACK" { // the transaction had failed: nothing was committed
		return pgx.ErrTxCommitRollback
	}
	return nil
}

// retryable reports whether a transaction failed in a way that makes
// running it again safe.
func retryable(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code == "40001" || pgErr.Code == "40P01" // serialization_failure, deadlock_detected
	}
	return pgconn.SafeToRetry(err)
}

// Get returns the message with its recipients' current state, or
// queue.ErrNotFound.
func (s *Store) Get(ctx context.Context, id queue.ID) (*queue.Message, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	msgs, err := loadMessages(ctx, s.pool, &s.q, []string{string(id)})
	if err != nil {
		return nil, s.fail("get", err)
	}
	if len(msgs) == 0 {
		return nil, queue.ErrNotFound
	}
	return msgs[0], nil
}

// List returns the messages that match p, ordered by ID.
func (s *Store) List(ctx context.Context, p queue.ListParams) ([]*queue.Message, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	var afterID, dest, limit any
	if p.AfterID != "" {
		afterID = string(p.AfterID)
	}
	if p.Destination != "" {
		dest = p.Destination
	}
	if p.Limit > 0 {
		limit = p.Limit
	}
	var states any
	if len(p.States) > 0 {
		names := make([]string, len(p.States))
		for i, st := range p.States {
			names[i] = st.String()
		}
		states = names
	}
	rows, err := s.pool.Query(ctx, s.q.listMessages, afterID, nullTime(p.ArrivedBefore), states, dest, limit)
	if err != nil {
		return nil, s.fail("list", err)
	}
	msgs, err := pgx.CollectRows(rows, scanMessage)
	if err != nil {
		return nil, s.fail("list", err)
	}
	if err := loadRecipients(ctx, s.pool, &s.q, msgs); err != nil {
		return nil, s.fail("list", err)
	}
	return msgs, nil
}

// Destination returns the shared status of a destination; an unknown one
// has a zero status.
func (s *Store) Destination(ctx context.Context, name string) (*queue.DestinationStatus, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	st := &queue.DestinationStatus{Name: name}
	var nextAllowed, first, last *time.Time
	var result []byte
	err := s.pool.QueryRow(ctx, s.q.selectDestination, name).
		Scan(&nextAllowed, &st.ConsecutiveFailures, &first, &last, &result)
	if errors.Is(err, pgx.ErrNoRows) {
		return st, nil
	}
	if err != nil {
		return nil, s.fail("destination", err)
	}
	st.NextAllowed, st.FirstFailure, st.LastFailure = fromNull(nextAllowed), fromNull(first), fromNull(last)
	if st.LastResult, err = decodeOutcome(result); err != nil {
		return nil, s.fail("destination", err)
	}
	return st, nil
}

// Hold freezes every waiting recipient of a message until Release; leases
// on them end.
func (s *Store) Hold(ctx context.Context, id queue.ID) error {
	return s.operate(ctx, "hold", id, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, s.q.holdRecipients, string(id))
		return err
	}, false)
}

// Release returns held recipients to Deferred (Queued if never attempted),
// due at now.
func (s *Store) Release(ctx context.Context, id queue.ID, now time.Time) error {
	return s.operate(ctx, "release", id, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, s.q.releaseRecipients, string(id), now)
		return err
	}, true)
}

// Retry makes every waiting recipient of a message due at now and lets
// their destinations be contacted at now (their failure count stays, so a
// failing one is still probed first). A recipient under a live lease stays
// leased (its worker's Finish still counts) and is due when the lease ends.
func (s *Store) Retry(ctx context.Context, id queue.ID, now time.Time) error {
	return s.operate(ctx, "retry", id, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, s.q.retryRecipients, string(id), now)
		if err != nil {
			return err
		}
		dests, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, s.q.clearBackoff, dests, now)
		return err
	}, true)
}

// operate runs an operator action on one message under the lock order of
// doc.go (message, then its deliveries, then recipients), recomputes when
// its deliveries are due, and wakes workers after the commit if wake is set.
func (s *Store) operate(ctx context.Context, op string, id queue.ID, change func(pgx.Tx) error, wake bool) error {
	if err := s.check(); err != nil {
		return err
	}
	err := s.inTx(ctx, 3, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, s.q.lockMessage, string(id)).Scan(new(string)); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return queue.ErrNotFound
			}
			return err
		}
		if _, err := tx.Exec(ctx, s.q.lockMessageDeliveries, string(id)); err != nil {
			return err
		}
		if err := change(tx); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, s.q.refreshMessageDeliveries, string(id))
		return err
	})
	if errors.Is(err, queue.ErrNotFound) {
		return err
	}
	if err != nil {
		return s.fail(op, err)
	}
	if wake {
		s.wakeWorkers()
	}
	return nil
}

// wakeWorkers makes sure the listeners of every node are notified after
// a commit the caller has just made; see notifier.
func (s *Store) wakeWorkers() {
	s.notifyOnce.Do(func() { go s.notifier() })
	select {
	case s.notifyReq <- struct{}{}:
	default: // a request is pending: its NOTIFY starts after this commit too
	}
}

// Delete removes a message and its body. No DSN is sent; a worker holding a
// lease on it gets ErrLeaseLost from Finish.
func (s *Store) Delete(ctx context.Context, id queue.ID) error {
	return s.operate(ctx, "delete", id, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, s.q.deleteMessage, string(id))
		return err
	}, false)
}

// OpenBody streams the stored body of a message one chunk at a time, each
// chunk read by its own short query (no transaction stays open while the
// body is sent); the query that finds the message reads the first chunk
// with it, so a body of one chunk costs one round trip. It returns
// queue.ErrNotFound for an unknown message; a message deleted while it is
// read makes Read fail, never end early.
func (s *Store) OpenBody(ctx context.Context, id queue.ID) (io.ReadCloser, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	b := &bodyReader{ctx: ctx, s: s, id: string(id)}
	err := s.pool.QueryRow(ctx, s.q.selectMessageFirstChunk, string(id)).Scan(&b.size, &b.chunk)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, queue.ErrNotFound
	}
	if err != nil {
		return nil, s.fail("open body", err)
	}
	if b.chunk != nil {
		b.seq = 1
	}
	return b, nil
}

// bodyReader reads message_chunk rows in order.
type bodyReader struct {
	ctx    context.Context
	s      *Store
	id     string
	size   int64 // from the message row
	read   int64
	seq    int
	chunk  []byte
	closed bool
}

func (b *bodyReader) Read(p []byte) (int, error) {
	if b.closed {
		return 0, errors.New("postgres: read from closed body")
	}
	for len(b.chunk) == 0 {
		if b.read == b.size {
			return 0, io.EOF
		}
		if err := b.s.check(); err != nil {
			return 0, err
		}
		err := b.s.pool.QueryRow(b.ctx, b.s.q.selectChunk, b.id, b.seq).Scan(&b.chunk)
		if errors.Is(err, pgx.ErrNoRows) {
			return 0, fmt.Errorf("postgres: body of %s: chunk %d missing after %d of %d octets (message deleted?)",
				b.id, b.seq, b.read, b.size)
		}
		if err != nil {
			return 0, b.s.fail("read body", err)
		}
		b.seq++
	}
	n := copy(p, b.chunk)
	b.chunk = b.chunk[n:]
	b.read += int64(n)
	if b.read > b.size {
		return n, fmt.Errorf("postgres: body of %s longer than its recorded size %d", b.id, b.size)
	}
	return n, nil
}

func (b *bodyReader) Close() error {
	b.closed = true
	b.chunk = nil
	return nil
}
