package embedded

import (
	"errors"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Group commit. Every write of the store is a function run by one committer
// goroutine. The committer takes all the functions waiting at that moment
// and runs them in one bbolt transaction, so one commit (two fdatasyncs)
// makes a whole group durable. A lone writer waits for exactly one commit;
// under load, groups grow by themselves while the previous commit syncs.
// bbolt's own Batch does the same but starts groups on a 10 ms timer.
//
// If a function fails, the transaction is rolled back, that function gets its
// error and the others are run again in a new transaction, so functions must
// have no effect outside the transaction: they may run more than once.

const (
	maxGroup  = 1000                 // the most writes committed together
	maxGather = 2 * time.Millisecond // the longest a commit waits for expected writers
)

// writeFn is one write. It reports whether it changed anything; a group in
// which nothing changed is rolled back instead of committed, so that an empty
// Claim costs no fsync.
type writeFn func(b *btx) (changed bool, err error)

type writeReq struct {
	fn   writeFn
	done chan writeResult
}

type writeResult struct {
	unlink []string // body files the write made unreferenced
	err    error
}

type committer struct {
	db   *bolt.DB
	reqs chan writeReq
	wg   sync.WaitGroup

	mu     sync.Mutex
	failed error // the commit error after which no write is accepted
}

func newCommitter(db *bolt.DB) *committer {
	c := &committer{db: db, reqs: make(chan writeReq, maxGroup)}
	c.wg.Go(c.run)
	return c
}

// stop ends the committer after the writes already submitted.
func (c *committer) stop() {
	close(c.reqs)
	c.wg.Wait()
}

// setFailed records the first durability failure.
func (c *committer) setFailed(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failed == nil {
		c.failed = err
	}
}

func (c *committer) failure() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failed != nil {
		return &FailedError{Err: c.failed}
	}
	return nil
}

// write runs fn in a committed transaction and returns the body files it
// made unreferenced, for the caller to remove.
func (c *committer) write(fn writeFn) ([]string, error) {
	if err := c.failure(); err != nil {
		return nil, err
	}
	req := writeReq{fn: fn, done: make(chan writeResult, 1)}
	c.reqs <- req
	res := <-req.done
	return res.unlink, res.err
}

func (c *committer) run() {
	released := 0 // writers the last commit answered; most come straight back
	var lastCommit time.Duration
	for req := range c.reqs {
		group := c.gather([]writeReq{req}, released, min(maxGather, lastCommit/2))
		start := time.Now()
		c.commit(group)
		lastCommit, released = time.Since(start), len(group)
	}
}

// gather adds to group the writes already waiting and then, for at most
// wait, the ones still expected: after a commit answers n writers, they
// typically resubmit within microseconds, while the next commit would
// otherwise start with only the writers that arrived during the last one.
// Waiting for them keeps whole groups together instead of splitting the
// writers into two alternating halves, which doubles throughput under load.
// A lone writer never waits: it is the one expected.
func (c *committer) gather(group []writeReq, expect int, wait time.Duration) []writeReq {
	var timeout <-chan time.Time
	for len(group) < maxGroup {
		select {
		case r, ok := <-c.reqs:
			if !ok {
				return group
			}
			group = append(group, r)
			continue
		default:
		}
		if len(group) >= expect || wait <= 0 {
			return group
		}
		if timeout == nil {
			t := time.NewTimer(wait)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case r, ok := <-c.reqs:
			if !ok {
				return group
			}
			group = append(group, r)
		case <-timeout:
			return group
		}
	}
	return group
}

// errNoChange rolls back a group that changed nothing.
var errNoChange = errors.New("no change")

func (c *committer) commit(group []writeReq) {
	for len(group) > 0 {
		if err := c.failure(); err != nil {
			for _, r := range group {
				r.done <- writeResult{err: err}
			}
			return
		}
		failIdx, unlinks := -1, make([][]string, len(group))
		var fnErr error
		err := c.db.Update(func(tx *bolt.Tx) error {
			changed := false
			for i, r := range group {
				b := newBTx(tx)
				ch, err := safeCall(r.fn, b)
				if err != nil {
					failIdx, fnErr = i, err
					return err
				}
				changed = changed || ch
				unlinks[i] = b.unlink
			}
			if !changed {
				return errNoChange
			}
			return nil
		})
		if failIdx >= 0 {
			group[failIdx].done <- writeResult{err: fnErr}
			group = append(group[:failIdx], group[failIdx+1:]...)
			continue
		}
		if err != nil && !errors.Is(err, errNoChange) {
			// The commit itself failed: pages may or may not be on disk, and
			// a retried fsync can succeed without the data (see package doc).
			// Stop writing; a restart recovers from the last good meta page.
			c.setFailed(err)
			err = &FailedError{Err: err}
		} else {
			err = nil
		}
		for i, r := range group {
			res := writeResult{err: err}
			if err == nil {
				res.unlink = unlinks[i]
			}
			r.done <- res
		}
		return
	}
}

func safeCall(fn writeFn, b *btx) (changed bool, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("embedded: panic in write: %v", p)
		}
	}()
	return fn(b)
}
