package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboundmail/outbound/queue"
)

// pair is a (message, destination) pair: what one lease covers.
type pair struct {
	message     string
	destination string
}

// candidate is a row of claimCandidates.
type candidate struct {
	pair
	nextAttempt time.Time
	probe       bool
}

// Claim leases due work; see queue.Store.Claim for the contract. It
//
//  1. picks candidate (message, destination) pairs without locking, walking
//     the destinations that may be contacted and are not excluded (index
//     range per destination: a blocked destination costs one probe however
//     much mail waits for it); when there are none, that one query is all
//     Claim costs;
//
// and then, in one short transaction,
//
//  2. locks them with FOR UPDATE SKIP LOCKED, so that concurrent claimers on
//     any node skip each other's pairs instead of waiting or double-leasing;
//  3. locks the destinations it probes (SKIP LOCKED again: one winner);
//  4. writes the lease on every due recipient of each pair (fresh fencing
//     token, owner, Attempts+1, LastAttempt and NextAttempt = Now+LeaseFor)
//     and moves probed destinations' NextAllowed to the end of the lease;
//
// and commits before returning, so all of it is durable before any SMTP
// traffic. Claim never waits for another transaction's locks. Under
// contention it may return fewer leases than Limit while more are due
// (others hold them); when every candidate it read was held by others, it
// reads further down the queue before giving up.
func (s *Store) Claim(ctx context.Context, p queue.ClaimParams) ([]*queue.Lease, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	if p.LeaseFor <= 0 {
		return nil, fmt.Errorf("postgres: claim: LeaseFor %v is not positive", p.LeaseFor)
	}
	limit := max(p.Limit, 1)
	until := p.Now.Add(p.LeaseFor).Truncate(time.Microsecond) // as stored
	var leases []*queue.Lease
	err := s.pipeTx(ctx, 3, func(c *pgxpool.Conn) error {
		var err error
		leases, err = s.claim(ctx, c, p, limit, until)
		return err
	})
	if err != nil {
		return nil, s.fail("claim", err)
	}
	return leases, nil
}

// claim is one attempt at Claim on c, which begins a transaction once it
// has candidates to lock (see pipeTx).
func (s *Store) claim(ctx context.Context, c *pgxpool.Conn, p queue.ClaimParams, limit int, until time.Time) ([]*queue.Lease, error) {
	locked, tids, probing, err := s.lockDue(ctx, c, p, limit)
	if err != nil || len(locked) == 0 {
		return nil, err
	}

	msgs, dests := columns(locked, func(pr pair) pair { return pr })
	rows, err := c.Query(ctx, s.q.claimRecipients, msgs, dests, p.Now, until, p.Owner)
	if err != nil {
		return nil, err
	}
	type leased struct {
		pair
		idx     int
		address string
		token   int64
	}
	got, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (leased, error) {
		var l leased
		err := row.Scan(&l.message, &l.destination, &l.idx, &l.address, &l.token)
		return l, err
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(got, func(a, b leased) int { return a.idx - b.idx })
	byPair := make(map[pair]*queue.Lease, len(locked))
	var probed, ids []string
	for _, l := range got {
		lease := byPair[l.pair]
		if lease == nil {
			lease = &queue.Lease{Destination: l.destination, Owner: p.Owner, Token: l.token, Until: until}
			byPair[l.pair] = lease
			if probing[l.destination] {
				probed = append(probed, l.destination)
			}
			ids = append(ids, l.message)
		}
		lease.Recipients = append(lease.Recipients, l.address)
	}

	var loaded []*queue.Message
	b := new(pgx.Batch)
	lockedTIDs := make([]pgtype.TID, len(locked))
	for i, pr := range locked {
		lockedTIDs[i] = tids[pr]
	}
	b.Queue(s.q.refreshDeliveries, lockedTIDs)
	if len(probed) > 0 {
		b.Queue(s.q.startProbes, probed, until)
	}
	queueLoad(b, &s.q, ids, &loaded)
	if err := c.SendBatch(ctx, b).Close(); err != nil {
		return nil, err
	}
	byID := make(map[string]*queue.Message, len(loaded))
	for _, m := range loaded {
		byID[string(m.ID)] = m
	}
	leases := make([]*queue.Lease, 0, len(byPair))
	for _, pr := range locked { // keep the oldest-first order
		if lease := byPair[pr]; lease != nil {
			lease.Message = byID[pr.message]
			leases = append(leases, lease)
		}
	}
	return leases, nil
}

// lockDue chooses and locks up to limit due pairs, oldest first, and the
// destinations among them it probes; tids are the locked pairs' ctids.
// Candidates are read without locks, before the transaction begins: when
// there are none, no transaction is begun. When all of them turn out to be
// locked by concurrent claimers, it looks further down the queue (up to
// three times, each four times deeper), so that a busy cluster does not
// leave a claimer empty-handed while work is due.
func (s *Store) lockDue(ctx context.Context, c *pgxpool.Conn, p queue.ClaimParams, limit int) (locked []pair, tids map[pair]pgtype.TID, probing map[string]bool, err error) {
	fetch := 2*limit + 8
	excluded := p.ExcludeDestinations
	if excluded == nil {
		excluded = []string{} // NULL would exclude everything
	}
	begun := false
	for round := 1; ; round++ {
		var rows pgx.Rows
		if p.Message != "" {
			rows, err = c.Query(ctx, s.q.claimMessageCandidates, p.Now, fetch, nullTime(p.ExpireArrivedBefore), excluded, string(p.Message))
		} else {
			rows, err = c.Query(ctx, s.q.claimCandidates, p.Now, fetch, nullTime(p.ExpireArrivedBefore), excluded)
		}
		if err != nil {
			return nil, nil, nil, err
		}
		cands, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (candidate, error) {
			var c candidate
			err := row.Scan(&c.message, &c.destination, &c.nextAttempt, &c.probe)
			return c, err
		})
		if err != nil || len(cands) == 0 {
			return nil, nil, nil, err
		}
		msgs, dests := columns(cands, func(c candidate) pair { return c.pair })
		b := new(pgx.Batch)
		if !begun {
			b = beginBatch()
			begun = true
		}
		locked, tids = nil, make(map[pair]pgtype.TID)
		b.Queue(s.q.lockDeliveries, msgs, dests, p.Now, limit).Query(func(rows pgx.Rows) error {
			var pr pair
			var tid pgtype.TID
			_, err := pgx.ForEachRow(rows, []any{&pr.message, &pr.destination, &tid}, func() error {
				locked = append(locked, pr)
				tids[pr] = tid
				return nil
			})
			return err
		})
		if err := c.SendBatch(ctx, b).Close(); err != nil {
			return nil, nil, nil, err
		}
		probing, err := s.lockProbes(ctx, c, p.Now, cands, &locked)
		if err != nil {
			return nil, nil, nil, err
		}
		if len(locked) > 0 || len(cands) < fetch || round == 3 {
			return locked, tids, probing, nil
		}
		fetch *= 4
	}
}

// lockProbes locks the status rows of the failing destinations among
// locked, and drops from locked the pairs at failing destinations another
// claimer is probing. It returns the destinations this claim probes.
func (s *Store) lockProbes(ctx context.Context, c *pgxpool.Conn, now time.Time, cands []candidate, locked *[]pair) (map[string]bool, error) {
	probing := make(map[string]bool) // failing destination → this claim won its probe
	for _, c := range cands {
		if c.probe {
			probing[c.destination] = false
		}
	}
	var names []string
	for _, pr := range *locked {
		if _, ok := probing[pr.destination]; ok {
			names = append(names, pr.destination)
		}
	}
	if len(names) == 0 {
		return probing, nil
	}
	rows, err := c.Query(ctx, s.q.lockProbes, names, now)
	if err != nil {
		return nil, err
	}
	won, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	for _, name := range won {
		probing[name] = true
	}
	*locked = slices.DeleteFunc(*locked, func(pr pair) bool {
		won, probe := probing[pr.destination]
		return probe && !won
	})
	return probing, nil
}

// columns splits pairs into the two arrays unnest($1, $2) takes.
func columns[T any](xs []T, f func(T) pair) (msgs, dests []string) {
	msgs, dests = make([]string, len(xs)), make([]string, len(xs))
	for i, x := range xs {
		pr := f(x)
		msgs[i], dests[i] = pr.message, pr.destination
	}
	return msgs, dests
}

// Finish records the outcome of a leased attempt; see queue.Store.Finish.
//
// Fencing: the lease is current only while every recipient it covers still
// carries its token (and owner). A re-claim after expiry writes a new token;
// Hold and Delete remove it. A worker paused past its lease therefore gets
// queue.ErrLeaseLost and changes nothing. A lease that expired but was not
// claimed again is still current: the attempt it covered is recorded.
//
// If a notification's body cannot be rewound (it is not an io.Seeker),
// Finish does not rerun its transaction after a deadlock; it returns the
// error instead. If the connection breaks during COMMIT, the outcome is
// unknown and Finish returns the error; calling it again returns
// queue.ErrLeaseLost if the first call took effect.
func (s *Store) Finish(ctx context.Context, p queue.FinishParams) error {
	if err := s.check(); err != nil {
		return err
	}
	if p.Lease == nil || p.Lease.Message == nil {
		return errors.New("postgres: finish: no lease")
	}
	results := make([][]byte, len(p.Recipients))
	for i, u := range p.Recipients {
		switch u.State {
		case queue.Deferred, queue.Delivered, queue.Failed, queue.Expired:
		default:
			return fmt.Errorf("postgres: finish: recipient %s: state %v is not an outcome", u.Address, u.State)
		}
		var err error
		if results[i], err = encodeOutcome(u.Result); err != nil {
			return fmt.Errorf("postgres: finish: %w", err)
		}
	}
	// Destination rows in name order, so that two Finishes never lock the
	// same two rows in opposite orders.
	var dests [][]any
	addDest := func(name string, d *queue.DestinationStatus) error {
		if name == "" {
			return errors.New("postgres: finish: destination status without a name")
		}
		result, err := encodeOutcome(d.LastResult)
		if err != nil {
			return fmt.Errorf("postgres: finish: %w", err)
		}
		dests = append(dests, []any{name, nullTime(d.NextAllowed), d.ConsecutiveFailures,
			nullTime(d.FirstFailure), nullTime(d.LastFailure), result})
		return nil
	}
	if d := p.Destination; d != nil {
		if err := addDest(p.Lease.Destination, d); err != nil {
			return err
		}
	}
	for i := range p.Destinations {
		if err := addDest(p.Destinations[i].Name, &p.Destinations[i]); err != nil {
			return err
		}
	}
	slices.SortStableFunc(dests, func(a, b []any) int { return strings.Compare(a[0].(string), b[0].(string)) })
	if err := checkNamed(p.Recipients, p.Lease); err != nil {
		return err
	}
	rewind, attempts := rewinder(p.Notifications), 3
	if rewind == nil {
		attempts = 1
	}
	var err error
	for attempt := 1; ; attempt++ {
		if rewind != nil {
			if err = rewind(); err != nil {
				break
			}
		}
		err = s.finish(ctx, p, results, dests)
		var ce *commitError
		if err == nil || errors.As(err, &ce) || attempt >= attempts || !retryable(err) || ctx.Err() != nil {
			break
		}
	}
	if errors.Is(err, queue.ErrLeaseLost) {
		return queue.ErrLeaseLost
	}
	if err != nil {
		return s.fail("finish", err)
	}
	if len(p.Notifications) > 0 {
		s.wakeWorkers()
	}
	return nil
}

// finish is one attempt at Finish. It takes locks in the order of doc.go:
// message, delivery, recipients, then (new rows for notifications and) the
// destinations, by name. The statements, the fencing check among them, go
// in one batch, which the server runs as one transaction (committed at the
// batch's end, unless a statement fails): one round trip. The check fails
// its statement when the lease is lost, so nothing after it takes effect.
// Only notifications too large for one statement (COPY, or an idempotency
// key) need an explicit transaction and more round trips.
func (s *Store) finish(ctx context.Context, p queue.FinishParams, results [][]byte, dests [][]any) error {
	l := p.Lease
	id := string(l.Message.ID)
	if len(l.Recipients) == 0 {
		return queue.ErrLeaseLost // nothing it could still cover
	}
	type notification struct {
		m    *queue.Message
		body *chunkSource
	}
	var small, large []notification // large: those that need round trips of their own
	for _, np := range p.Notifications {
		body, err := s.openChunks(np)
		if err != nil {
			return err
		}
		defer s.putChunkBuffer(body.buf)
		if oneStatement(np.Message, body) {
			small = append(small, notification{np.Message, body})
		} else {
			large = append(large, notification{np.Message, body})
		}
	}

	b := new(pgx.Batch)
	if len(large) > 0 {
		b = beginBatch()
	}
	lost := false
	b.Queue(s.q.lockMessage, id)
	b.Queue(s.q.lockDelivery, id, l.Destination)
	b.Queue(s.q.fenceLease, id, l.Token, l.Owner, len(l.Recipients)).QueryRow(func(row pgx.Row) error {
		err := row.Scan(nil)
		var pgErr *pgconn.PgError
		lost = errors.As(err, &pgErr) && pgErr.Code == "22P02" // the cast in fenceLease
		return err
	})
	final := true // the message may have no waiting recipient left
	for i, u := range p.Recipients {
		b.Queue(s.q.finishRecipient, id, l.Token, u.Address, u.State.String(), u.NextAttempt, results[i],
			u.PossibleDuplicate, u.DelayWarned)
		if u.State == queue.Deferred {
			final = false
		}
	}
	if !namesAll(p.Recipients, l.Recipients) {
		b.Queue(s.q.endLease, id, l.Token)
	}
	b.Queue(s.q.finishPair, id, l.Destination, final)
	for _, nt := range small {
		if err := s.queueMessage(b, nt.m, nt.body); err != nil {
			return err
		}
	}
	// The destination rows last: they are the ones other transactions
	// contend for, so they are held for the shortest time.
	queueDests := func(b *pgx.Batch) {
		for _, dest := range dests {
			b.Queue(s.q.insertDestination, dest[0])
			b.Queue(s.q.updateDestination, dest...)
		}
	}
	if len(large) == 0 {
		queueDests(b)
		err := s.pool.SendBatch(ctx, b).Close()
		if lost {
			return queue.ErrLeaseLost // deleted, held, or claimed again
		}
		return err
	}
	return s.pipeTx(ctx, 1, func(c *pgxpool.Conn) error {
		err := c.SendBatch(ctx, b).Close()
		if lost {
			return queue.ErrLeaseLost
		}
		if err != nil {
			return err
		}
		for _, nt := range large {
			if _, _, err := s.enqueue(ctx, c, nt.m, nt.body, false); err != nil {
				return err
			}
		}
		b := new(pgx.Batch)
		queueDests(b)
		return c.SendBatch(ctx, b).Close()
	})
}

// checkNamed checks that every recipient Finish names is covered by the
// lease, once: with the lease current, each then updates exactly its row.
func checkNamed(updates []queue.RecipientUpdate, l *queue.Lease) error {
	leased := make(map[string]bool, len(l.Recipients)) // true: not named yet
	for _, a := range l.Recipients {
		leased[a] = true
	}
	for _, u := range updates {
		if !leased[u.Address] {
			return fmt.Errorf("postgres: finish: recipient %s is not in lease %d, or named twice", u.Address, l.Token)
		}
		leased[u.Address] = false
	}
	return nil
}

// namesAll reports whether the updates name every address of leased, so
// that no lease is left for endLease to end.
func namesAll(updates []queue.RecipientUpdate, leased []string) bool {
	if len(updates) < len(leased) {
		return false
	}
	named := make(map[string]bool, len(updates))
	for _, u := range updates {
		named[u.Address] = true
	}
	for _, a := range leased {
		if !named[a] {
			return false
		}
	}
	return true
}

// rewinder returns a function that seeks every notification body back to
// where it started, or nil if some body cannot seek.
func rewinder(ns []queue.EnqueueParams) func() error {
	type start struct {
		s   io.Seeker
		off int64
	}
	var starts []start
	for _, n := range ns {
		sk, ok := n.Body.(io.Seeker)
		if !ok {
			return nil
		}
		off, err := sk.Seek(0, io.SeekCurrent)
		if err != nil {
			return nil
		}
		starts = append(starts, start{sk, off})
	}
	return func() error {
		for _, st := range starts {
			if _, err := st.s.Seek(st.off, io.SeekStart); err != nil {
				return err
			}
		}
		return nil
	}
}

// NextDue returns the earliest time at which Claim could return work: the
// earliest due pair at each destination, but not before the destination may
// be contacted. It costs one index probe per destination.
func (s *Store) NextDue(ctx context.Context, now time.Time) (time.Time, bool, error) {
	if err := s.check(); err != nil {
		return time.Time{}, false, err
	}
	var at *time.Time
	if err := s.pool.QueryRow(ctx, s.q.nextDue).Scan(&at); err != nil {
		return time.Time{}, false, s.fail("next due", err)
	}
	if at == nil {
		return time.Time{}, false, nil
	}
	return at.UTC(), true, nil
}
