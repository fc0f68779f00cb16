package embedded

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/outboundmail/outbound/queue"
)

// Options configure a Store. The zero value (or nil) is ready to use.
type Options struct {
	// InlineBodyLimit is the largest body, in octets, kept inside the
	// database; larger bodies are streamed to their own files. Inline bodies
	// cost no file creation and no extra fsync, which is what makes small
	// messages fast. 0 means 32 KiB; a negative value puts every body in a
	// file.
	InlineBodyLimit int

	// LockTimeout is how long Open waits for the lock held by another process
	// using the same directory before it fails with *LockedError. 0 means
	// 1 second.
	LockTimeout time.Duration
}

const (
	defaultInlineLimit = 32 << 10
	defaultLockTimeout = time.Second
	maxKeyLen          = 4096 // bound on IDs, idempotency keys and destinations (bbolt keys are ≤ 32 KiB)
	dbName             = "queue.db"
	bodiesDir          = "bodies"
)

// Store is the embedded queue.Store. It is safe for concurrent use by many
// goroutines of one process; a second process opening the same directory gets
// *LockedError.
type Store struct {
	dir         string
	bodies      string
	inlineLimit int
	db          *bolt.DB
	c           *committer

	// syncFile makes a body file durable; tests replace it to inject fsync
	// failures. It is a field, not a package variable, so stores are
	// independent.
	syncFile func(*os.File) error

	// claimScans counts the index entries Claim has read, for the test
	// that Claim's cost does not grow with the queue.
	claimScans atomic.Int64

	mu     sync.RWMutex // held for reading by every operation, for writing by Close
	closed bool
}

var _ queue.Store = (*Store)(nil)

// LockedError is returned by Open when another process holds the store.
type LockedError struct {
	Path string
}

// Error names the locked database file.
func (e *LockedError) Error() string {
	return "embedded: " + e.Path + " is locked by another process (the embedded store is single-process)"
}

// FailedError is returned by every write after a write could not be made
// durable (an fsync or commit failed). The store refuses further writes
// because retrying a failed fsync can report success without the data
// (PostgreSQL's "fsyncgate", 2018); reads still work. Close and Open the
// store again to recover from the last durable state.
type FailedError struct {
	Err error
}

// Error says that writes are refused, and why.
func (e *FailedError) Error() string {
	return "embedded: store failed, writes refused: " + e.Err.Error()
}

// Unwrap returns the underlying I/O error.
func (e *FailedError) Unwrap() error { return e.Err }

// CorruptError reports a message whose stored record or body fails its
// checksum or framing. Claim moves such a record to the corrupt bucket
// instead of delivering it.
type CorruptError struct {
	ID  queue.ID
	Err error
}

// Error names the message and what is wrong with it.
func (e *CorruptError) Error() string {
	return fmt.Sprintf("embedded: message %s is corrupt: %v", e.ID, e.Err)
}

// Unwrap returns the decoding error.
func (e *CorruptError) Unwrap() error { return e.Err }

// Open opens the store in dir, creating the directory and an empty store if
// needed. Only one process may have a directory open at a time. Open removes
// body files left behind by a crash (written but never committed, or
// unreferenced but not yet deleted); it does not read the messages.
func Open(dir string, opts *Options) (*Store, error) {
	if opts == nil {
		opts = &Options{}
	}
	s := &Store{
		dir:         dir,
		bodies:      filepath.Join(dir, bodiesDir),
		inlineLimit: opts.InlineBodyLimit,
		syncFile:    (*os.File).Sync,
	}
	if s.inlineLimit == 0 {
		s.inlineLimit = defaultInlineLimit
	}
	timeout := opts.LockTimeout
	if timeout <= 0 {
		timeout = defaultLockTimeout
	}
	if err := mkdirDurable(dir); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, dbName)
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:      timeout,
		FreelistType: bolt.FreelistMapType, // the array freelist degrades with fragmentation
	})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, &LockedError{Path: path}
	}
	if err != nil {
		return nil, fmt.Errorf("embedded: opening %s: %w", path, err)
	}
	s.db = db
	// bbolt does not make the directory entry of a new database durable.
	if err := syncDir(dir); err != nil {
		db.Close()
		return nil, err
	}
	if err := s.init(); err != nil {
		db.Close()
		return nil, err
	}
	s.c = newCommitter(db)
	return s, nil
}

func (s *Store) init() error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		for _, name := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		switch v := meta.Get(keyFormat); {
		case v == nil:
			return meta.Put(keyFormat, []byte{formatVersion})
		case len(v) != 1 || v[0] != formatVersion:
			return fmt.Errorf("embedded: %s has on-disk format %v; this version reads format %d", s.dir, v, formatVersion)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("embedded: initialising %s: %w", s.dir, err)
	}
	if err := s.prepareBodies(); err != nil {
		return err
	}
	return s.collectGarbage()
}

// Close waits for operations in progress, then releases the database and
// its lock. Later calls return queue.ErrClosed. Body readers returned by
// OpenBody stay readable.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return queue.ErrClosed
	}
	s.closed = true
	s.c.stop()
	return s.db.Close()
}

// begin is called at the start of every operation; the returned function
// ends it.
func (s *Store) begin() (func(), error) {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return nil, queue.ErrClosed
	}
	return s.mu.RUnlock, nil
}

// write runs fn through the group committer, then removes the body files it
// made unreferenced. A crash before the removal leaves them to the next
// Open's garbage collection.
func (s *Store) write(fn writeFn) error {
	unlink, err := s.c.write(fn)
	for _, name := range unlink {
		os.Remove(s.bodyPath(name))
	}
	return err
}

func (s *Store) view(fn func(b *btx) error) error {
	return s.db.View(func(tx *bolt.Tx) error { return fn(newBTx(tx)) })
}

func checkCtx(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("embedded: %w", err)
	}
	return nil
}
