package embedded

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/outboundmail/outbound/queue/internal/spool"
	bolt "go.etcd.io/bbolt"
)

// A body is either inline (in the ibody bucket) or a file
// bodies/<first two hex digits>/<32 hex digits>. A file is written, fsynced
// and its directory fsynced before the transaction that references it
// commits, so a committed message never points at a missing or partial file.
// A file that no committed record references is garbage: left by a crash
// between file and commit, or between commit and unlink.

// body is a body written to stable storage (or held for an inline write)
// but not yet referenced by a committed record.
type body struct {
	inline []byte // kind bodyInline
	file   string // kind bodyFile
	size   int64
	crc    uint32
}

func (b *body) kind() bodyKind {
	if b.file != "" {
		return bodyFile
	}
	return bodyInline
}

func (s *Store) bodyPath(name string) string {
	return filepath.Join(s.bodies, name[:2], name)
}

// readBody reads r to the end. A body up to the inline limit stays in
// memory; a larger one is streamed to a new durable file. On error nothing
// is left behind.
func (s *Store) readBody(r io.Reader) (*body, error) {
	if r == nil {
		r = bytes.NewReader(nil)
	}
	limit := max(s.inlineLimit, 0)
	buf, err := spool.ReadUpTo(r, make([]byte, 0, headSize(r, limit+1)), limit+1)
	if err != nil {
		return nil, fmt.Errorf("embedded: reading body: %w", err)
	}
	if len(buf) <= limit && s.inlineLimit >= 0 {
		return &body{inline: buf, size: int64(len(buf)), crc: crc32.Checksum(buf, castagnoli)}, nil
	}
	return s.writeBodyFile(buf, r, crc32.New(castagnoli))
}

// minHead is the buffer for the start of a body of unknown size: most
// bodies are a few kilobytes, and zeroing a buffer for the whole inline
// limit costs more than the body.
const minHead = 4 << 10

// headSize returns the capacity to read the first n octets of r into. A
// reader that knows what is left (*bytes.Reader, *bytes.Buffer,
// *strings.Reader, as the queue hands its in-memory bodies) gets exactly
// that plus the octet that detects the end; spool.ReadUpTo grows a buffer that
// turns out too small, so the hint never changes what is read.
func headSize(r io.Reader, n int) int {
	if l, ok := r.(interface{ Len() int }); ok && l.Len() >= 0 {
		return min(l.Len()+1, n)
	}
	return min(n, minHead)
}

func newBodyName() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (s *Store) writeBodyFile(head []byte, r io.Reader, crc hash.Hash32) (b *body, err error) {
	name := newBodyName()
	dir, err := s.bodyDir(name)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, name)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("embedded: creating body file: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(path)
		}
	}()
	n, err := copyBody(f, io.MultiReader(bytes.NewReader(head), r), crc)
	if err != nil {
		return nil, err
	}
	if err := s.syncFile(f); err != nil {
		s.c.setFailed(err)
		return nil, &FailedError{Err: fmt.Errorf("fsync of body file: %w", err)}
	}
	if err := f.Close(); err != nil {
		s.c.setFailed(err)
		return nil, &FailedError{Err: fmt.Errorf("closing body file: %w", err)}
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		s.c.setFailed(err)
		return nil, &FailedError{Err: fmt.Errorf("fsync of body directory: %w", err)}
	}
	return &body{file: name, size: n, crc: crc.Sum32()}, nil
}

// copyBufs holds copyBody's buffers: nothing keeps one after the copy (an
// io.Reader must not retain the slice it reads into).
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// copyBody copies r to f and into crc, telling the caller's read errors
// from the store's write errors.
func copyBody(f *os.File, r io.Reader, crc hash.Hash32) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	var n int64
	for {
		k, rerr := r.Read(buf)
		if k > 0 {
			crc.Write(buf[:k])
			if _, err := f.Write(buf[:k]); err != nil {
				return n, fmt.Errorf("embedded: writing body file: %w", err)
			}
			n += int64(k)
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, fmt.Errorf("embedded: reading body: %w", rerr)
		}
	}
}

// discard removes the file of a body that was never committed.
func (s *Store) discard(b *body) {
	if b != nil && b.file != "" {
		os.Remove(s.bodyPath(b.file))
	}
}

// prepareBodies creates the bodies directory; its subdirectories are made
// when first needed.
func (s *Store) prepareBodies() error {
	return mkdirDurable(s.bodies)
}

// bodyDir returns the directory of a new body file, creating it durably if
// needed.
func (s *Store) bodyDir(name string) (string, error) {
	dir := filepath.Join(s.bodies, name[:2])
	err := os.Mkdir(dir, 0o700)
	switch {
	case err == nil:
		return dir, syncDir(s.bodies)
	case errors.Is(err, fs.ErrExist):
		return dir, nil
	}
	return "", fmt.Errorf("embedded: %w", err)
}

// collectGarbage removes body files that no record references. It runs in
// Open before any write, so no file can be in the middle of an Enqueue.
func (s *Store) collectGarbage() error {
	dirs, err := os.ReadDir(s.bodies)
	if err != nil {
		return fmt.Errorf("embedded: %w", err)
	}
	for _, d := range dirs {
		dir := filepath.Join(s.bodies, d.Name())
		ents, err := os.ReadDir(dir)
		if err != nil {
			return fmt.Errorf("embedded: %w", err)
		}
		var orphans []string
		err = s.db.View(func(tx *bolt.Tx) error {
			files := tx.Bucket(bucketFiles)
			for _, e := range ents {
				if files.Get([]byte(e.Name())) == nil {
					orphans = append(orphans, e.Name())
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, name := range orphans {
			if err := os.Remove(filepath.Join(dir, name)); err != nil {
				return fmt.Errorf("embedded: removing orphan body: %w", err)
			}
		}
	}
	return nil
}

// mkdirDurable creates dir (and parents) and makes the new entry durable.
func mkdirDurable(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("embedded: %w", err)
	}
	return syncDir(filepath.Dir(filepath.Clean(dir)))
}

// syncDir fsyncs a directory so that entries created in it survive a power
// loss (what sendmail's RequiresDirFsync is for).
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("embedded: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("embedded: fsync of %s: %w", dir, err)
	}
	return nil
}
