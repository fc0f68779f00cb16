package embedded

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"slices"

	"github.com/outboundmail/outbound/queue"
)

// Get returns a message and its recipients' state; see queue.Store.
func (s *Store) Get(ctx context.Context, id queue.ID) (*queue.Message, error) {
	end, err := s.begin()
	if err != nil {
		return nil, err
	}
	defer end()
	var m *queue.Message
	err = s.view(func(b *btx) error {
		r, err := b.loadMsg(id)
		if err != nil {
			return err
		}
		if r == nil {
			return queue.ErrNotFound
		}
		m = &r.msg
		return nil
	})
	return m, err
}

// OpenBody streams the body of a message; see queue.Store. The reader
// checks the body's length and CRC-32C as it goes and returns a
// *CorruptError instead of io.EOF if they do not match, so a damaged body is
// never passed on as complete: the delivery engine sees a read error before
// it would send the final dot.
func (s *Store) OpenBody(ctx context.Context, id queue.ID) (io.ReadCloser, error) {
	end, err := s.begin()
	if err != nil {
		return nil, err
	}
	defer end()
	var (
		r      *msgRecord
		inline []byte
	)
	err = s.view(func(b *btx) error {
		var err error
		if r, err = b.loadMsg(id); err != nil {
			return err
		}
		if r == nil {
			return queue.ErrNotFound
		}
		if r.kind == bodyInline {
			inline = bytes.Clone(b.body.Get([]byte(id)))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var src io.ReadCloser
	if r.kind == bodyInline {
		src = io.NopCloser(bytes.NewReader(inline))
	} else {
		f, err := os.Open(s.bodyPath(r.file))
		if errors.Is(err, fs.ErrNotExist) {
			// Finished or deleted since we read the record; otherwise the
			// file was lost, which the checked reader would report anyway.
			gone := false
			s.view(func(b *btx) error { gone = b.msg.Get([]byte(id)) == nil; return nil })
			if gone {
				return nil, queue.ErrNotFound
			}
			return nil, &CorruptError{ID: id, Err: fmt.Errorf("body file %s is missing", r.file)}
		}
		if err != nil {
			return nil, fmt.Errorf("embedded: opening body of %s: %w", id, err)
		}
		src = f
	}
	return &checkedBody{rc: src, id: id, want: r.msg.Size, crc: crc32.New(castagnoli), sum: r.bodyCRC}, nil
}

// checkedBody verifies length and checksum of a body while it is read.
type checkedBody struct {
	rc   io.ReadCloser
	id   queue.ID
	want int64
	n    int64
	crc  hash.Hash32
	sum  uint32
}

func (c *checkedBody) Read(p []byte) (int, error) {
	k, err := c.rc.Read(p)
	c.n += int64(k)
	c.crc.Write(p[:k])
	if c.n > c.want {
		return k, &CorruptError{ID: c.id, Err: fmt.Errorf("body longer than its %d octets", c.want)}
	}
	if err == io.EOF && (c.n != c.want || c.crc.Sum32() != c.sum) {
		return k, &CorruptError{ID: c.id, Err: fmt.Errorf("body of %d octets (want %d) or checksum mismatch", c.n, c.want)}
	}
	return k, err
}

func (c *checkedBody) Close() error { return c.rc.Close() }

// List returns messages matching p in ID order; see queue.Store. It scans
// the messages from AfterID, decoding one at a time, until Limit match: it is
// meant for operators, and keeps no index that every Enqueue would pay for.
func (s *Store) List(ctx context.Context, p queue.ListParams) ([]*queue.Message, error) {
	end, err := s.begin()
	if err != nil {
		return nil, err
	}
	defer end()
	var out []*queue.Message
	match := func(r *msgRecord) bool {
		if !p.ArrivedBefore.IsZero() && !r.msg.Arrived.Before(p.ArrivedBefore) {
			return false
		}
		okState, okDest := len(p.States) == 0, p.Destination == ""
		for _, rc := range r.msg.Recipients {
			okState = okState || slices.Contains(p.States, rc.State)
			okDest = okDest || rc.Destination == p.Destination
		}
		return okState && okDest
	}
	err = s.view(func(b *btx) error {
		c := b.msg.Cursor()
		start := []byte(p.AfterID)
		k, v := c.Seek(start)
		if p.AfterID != "" && bytes.Equal(k, start) {
			k, v = c.Next()
		}
		for ; k != nil; k, v = c.Next() {
			if p.Limit > 0 && len(out) >= p.Limit {
				break
			}
			if err := checkCtx(ctx); err != nil {
				return err
			}
			r, err := decodeMsg(v)
			if err != nil {
				return &CorruptError{ID: queue.ID(k), Err: err}
			}
			if match(r) {
				out = append(out, &r.msg)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Destination returns the status of a destination; see queue.Store.
func (s *Store) Destination(ctx context.Context, name string) (*queue.DestinationStatus, error) {
	end, err := s.begin()
	if err != nil {
		return nil, err
	}
	defer end()
	st := &queue.DestinationStatus{}
	err = s.view(func(b *btx) error {
		d, err := b.loadDest(name)
		if d != nil {
			*st = d.st
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	st.Name = name
	return st, nil
}
