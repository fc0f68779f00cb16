package embedded

import (
	"bytes"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/outboundmail/outbound/queue"
)

// btx is a bbolt transaction with the store's buckets at hand. Write
// transactions also collect the body files to remove once they commit.
type btx struct {
	tx                                                  *bolt.Tx
	meta, msg, body, files, idem, dest, rdue, ddue, arr *bolt.Bucket
	corrupt                                             *bolt.Bucket
	unlink                                              []string
	scanned                                             int  // index entries read by Claim (see Store.claimScans)
	dirty                                               bool // a repair or quarantine was written
}

func newBTx(tx *bolt.Tx) *btx {
	return &btx{
		tx: tx, meta: tx.Bucket(bucketMeta), msg: tx.Bucket(bucketMsg), body: tx.Bucket(bucketBody),
		files: tx.Bucket(bucketFiles), idem: tx.Bucket(bucketIdem), dest: tx.Bucket(bucketDest),
		rdue: tx.Bucket(bucketRDue), ddue: tx.Bucket(bucketDDue), arr: tx.Bucket(bucketArr),
		corrupt: tx.Bucket(bucketCorrupt),
	}
}

var empty = []byte{}

func waiting(s queue.RecipientState) bool { return s == queue.Queued || s == queue.Deferred }

// loadMsg returns the record of id, nil if there is none, or a
// *CorruptError.
func (b *btx) loadMsg(id queue.ID) (*msgRecord, error) {
	v := b.msg.Get([]byte(id))
	if v == nil {
		return nil, nil
	}
	r, err := decodeMsg(v)
	if err != nil {
		return nil, &CorruptError{ID: id, Err: err}
	}
	return r, nil
}

// quarantine moves the raw record of id to the corrupt bucket, where an
// operator can inspect it, and out of the queue. Index entries that still
// point at id are dropped when Claim next meets them.
func (b *btx) quarantine(id queue.ID) error {
	v := b.msg.Get([]byte(id))
	if v == nil {
		return nil
	}
	b.dirty = true
	if err := b.corrupt.Put([]byte("msg/"+string(id)), bytes.Clone(v)); err != nil {
		return err
	}
	return b.msg.Delete([]byte(id))
}

// msgKeys are the index entries a message record implies.
type msgKeys struct {
	rdue map[string]string // rdue key → destination
	arr  string            // "" when no recipient is waiting
}

func keysOf(r *msgRecord) msgKeys {
	k := msgKeys{rdue: map[string]string{}}
	if r == nil {
		return k
	}
	id := string(r.msg.ID)
	for _, rc := range r.msg.Recipients {
		if waiting(rc.State) {
			k.rdue[string(rdueKey(rc.Destination, nanos(rc.NextAttempt), id))] = rc.Destination
			k.arr = string(arrKey(r.msg.Arrived, id))
		}
	}
	return k
}

// putMessage replaces the record old of a message with new (either may be
// nil: insert, delete) and brings every index up to date in the same
// transaction. Indexes are diffed, so a claim that changes one recipient
// touches one rdue entry.
func (b *btx) putMessage(old, new *msgRecord) error {
	ok, nk := keysOf(old), keysOf(new)
	touched := map[string]bool{}
	for k, dest := range ok.rdue {
		if _, keep := nk.rdue[k]; !keep {
			if err := b.rdue.Delete([]byte(k)); err != nil {
				return err
			}
			touched[dest] = true
		}
	}
	for k, dest := range nk.rdue {
		if _, had := ok.rdue[k]; !had {
			if err := b.rdue.Put([]byte(k), empty); err != nil {
				return err
			}
			touched[dest] = true
		}
	}
	if ok.arr != nk.arr {
		if ok.arr != "" {
			if err := b.arr.Delete([]byte(ok.arr)); err != nil {
				return err
			}
		}
		if nk.arr != "" {
			if err := b.arr.Put([]byte(nk.arr), empty); err != nil {
				return err
			}
		}
	}
	var err error
	if new != nil {
		err = b.msg.Put([]byte(new.msg.ID), encodeMsg(new))
	} else if old != nil {
		err = b.msg.Delete([]byte(old.msg.ID))
	}
	if err != nil {
		return err
	}
	for dest := range touched {
		if err := b.refreshDest(dest); err != nil {
			return err
		}
	}
	return nil
}

// removeMessage deletes a message, its indexes, its idempotency key and its
// inline body; a body file is removed after the transaction commits.
func (b *btx) removeMessage(r *msgRecord) error {
	if err := b.putMessage(r, nil); err != nil {
		return err
	}
	id := []byte(r.msg.ID)
	if k := r.msg.IdempotencyKey; k != "" && bytes.Equal(b.idem.Get([]byte(k)), id) {
		if err := b.idem.Delete([]byte(k)); err != nil {
			return err
		}
	}
	switch r.kind {
	case bodyInline:
		return b.body.Delete(id)
	default:
		b.unlink = append(b.unlink, r.file)
		return b.files.Delete([]byte(r.file))
	}
}

// loadDest returns the record of a destination, or nil if it has none. A
// corrupt record is quarantined and replaced by the zero status, after
// removing whatever ddue entries the destination had: losing a backoff is
// better than losing the destination's mail.
func (b *btx) loadDest(dest string) (*destRecord, error) {
	v := b.dest.Get([]byte(dest))
	if v == nil {
		return nil, nil
	}
	r, err := decodeDest(v)
	if err == nil {
		return r, nil
	}
	if !b.tx.Writable() {
		return nil, fmt.Errorf("embedded: destination %q: %w", dest, err)
	}
	b.dirty = true
	if err := b.corrupt.Put([]byte("dest/"+dest), bytes.Clone(v)); err != nil {
		return nil, err
	}
	if err := b.dest.Delete([]byte(dest)); err != nil {
		return nil, err
	}
	var stale [][]byte
	c := b.ddue.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		if string(k[timeLen:]) == dest {
			stale = append(stale, bytes.Clone(k))
		}
	}
	for _, k := range stale {
		if err := b.ddue.Delete(k); err != nil {
			return nil, err
		}
	}
	return nil, nil
}

func zeroStatus(st *queue.DestinationStatus) bool {
	return st.NextAllowed.IsZero() && st.ConsecutiveFailures == 0 && st.FirstFailure.IsZero() &&
		st.LastFailure.IsZero() && st.LastResult == nil
}

// setStatus replaces the status of dest and refiles it in ddue.
func (b *btx) setStatus(dest string, st queue.DestinationStatus) error {
	r, err := b.loadDest(dest)
	if err != nil {
		return err
	}
	if r == nil {
		r = &destRecord{}
	}
	st.Name = ""
	r.st = st
	return b.saveDest(dest, r)
}

// refreshDest recomputes the ddue entry of dest from its earliest rdue entry
// and its NextAllowed.
func (b *btx) refreshDest(dest string) error {
	r, err := b.loadDest(dest)
	if err != nil {
		return err
	}
	if r == nil {
		r = &destRecord{}
	}
	return b.saveDest(dest, r)
}

func (b *btx) saveDest(dest string, r *destRecord) error {
	p := destPrefix(dest)
	k, _ := b.rdue.Cursor().Seek(p)
	has := k != nil && bytes.HasPrefix(k, p) && len(k) >= len(p)+timeLen
	var due int64
	if has {
		due = max(readTime(k[len(p):]), nanos(r.st.NextAllowed))
	}
	if r.hasDue && (!has || r.due != due) {
		if err := b.ddue.Delete(ddueKey(r.due, dest)); err != nil {
			return err
		}
	}
	if has && (!r.hasDue || r.due != due) {
		if err := b.ddue.Put(ddueKey(due, dest), empty); err != nil {
			return err
		}
	}
	r.hasDue, r.due = has, due
	if !has && zeroStatus(&r.st) {
		return b.dest.Delete([]byte(dest))
	}
	v := encodeDest(r)
	if bytes.Equal(b.dest.Get([]byte(dest)), v) {
		return nil // most enqueues leave a destination as it was: no page to write
	}
	return b.dest.Put([]byte(dest), v)
}
