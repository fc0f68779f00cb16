// Package postgres is a queue.Store on PostgreSQL (through
// github.com/jackc/pgx/v5): many workers on many machines share one queue
// and one view of every destination, so that politeness holds for the
// cluster as a whole. Three nodes do not contact a deferring server three
// times as often: a 421 recorded by one node blocks that destination for
// all of them, and connection limits are leases on shared slot rows.
// PostgreSQL is the only coordinator; there is no leader and no session
// lock.
//
// # Opening and migrations
//
// [Open] (own pool) and [New] (the caller's pool) apply the embedded,
// versioned migrations (migrations/NNN_name.sql) the schema lacks before
// returning, in one transaction under an advisory lock, so nodes may start
// together. Options.Schema names the schema (default "outbound"); every
// statement names it explicitly, so a connection's search_path never
// matters. There is no separate migrate call.
//
// # Tables
//
//   - message: the envelope, one row per message.
//   - message_chunk: the body in rows of Options.ChunkSize octets (256 KiB),
//     written with COPY while the body is read and read back one chunk per
//     query, so neither direction holds a body in memory or keeps a
//     transaction open while it is sent.
//   - recipient: per-recipient state, with its lease (token, owner, until).
//   - delivery: one row per (message, destination), the unit a lease covers,
//     with the time its earliest waiting recipient is due. It is what Claim
//     scans (partial indexes on due rows only).
//   - destination: the shared status of each destination (NextAllowed,
//     failures, last result).
//   - destination_slot: leases on numbered connection slots.
//
// # Leases and fencing
//
// Claim reads candidates, then works in one short transaction that commits
// before any SMTP traffic: it locks due (message, destination) pairs with
// FOR UPDATE SKIP LOCKED and writes on every due recipient a fresh fencing
// token from a
// sequence, the owner, Attempts+1, LastAttempt = Now and NextAttempt =
// Now+LeaseFor, which is also when the lease ends. A worker that dies
// therefore leaves its recipients due at the end of the lease: the correct
// backoff time, never "now". Claim's cost grows with the number of
// destinations and leases, not with the queue: it reads one index range per
// destination that may be contacted, so mail piling up at a blocked
// destination is never scanned. Its other statements read pairs and
// recipients through primary keys, so that their plans do not depend on
// table statistics, which a new store lacks.
//
// Finish is fenced: it changes nothing and returns queue.ErrLeaseLost unless
// every recipient of the lease still carries the lease's token and owner. A
// worker paused past its lease, whose recipients were claimed again, cannot
// overwrite the newer state. Hold and Delete end leases the same way.
//
// # Round trips
//
// The common operations cost one round trip each: Enqueue of a message
// whose body fits in one chunk is one statement; Finish is one batch that
// the server runs as one transaction (its fencing check fails the batch
// when the lease is lost); AcquireSlot, ReleaseSlot, Destination and the
// opening of a body are one statement each. Claim costs one when nothing is
// due.
//
// A destination that is failing (ConsecutiveFailures > 0) is probed by one
// worker of the whole cluster at a time: the claimer that locks its status
// row (SKIP LOCKED) gets one lease and moves NextAllowed to the end of that
// lease.
//
// # Connection slots and rate limits
//
// [Store.AcquireSlot] leases one of Max numbered slots of a destination
// until a given time; [Store.RenewSlot] extends it and [Store.ReleaseSlot]
// ends it, now or later (a later end turns slots into a rate limit: N slots
// each held for a period allow N connections per period). Slot leases are
// fenced by token like recipient leases, and a crashed node's slots free
// themselves when their lease ends.
//
// The store is a queue.SlotStore, so queue.Queue.Run uses the slots by
// itself: every attempt holds one, Max is Config.MaxConnsPerDestination (1
// while the node has not reached the destination yet, so an unknown or
// failing destination gets one connection from the whole cluster), and with
// Config.DestinationRate each slot stays busy for MaxConnsPerDestination /
// DestinationRate seconds after it was taken. A 421 seen by one node is in
// the destination row before that node releases its slot, and the next
// holder reads it before connecting.
//
// # Wakeups
//
// Enqueue, ReleaseSlot, Release, Retry and Finish with notifications are
// followed by a NOTIFY, sent after their commit by a notifier goroutine in
// a transaction of its own that does not wait for the disk: a NOTIFY inside
// a transaction serialises the commits of all notifying transactions,
// which would defeat group commit. The caller does not wait for it, and
// commits made while one is under way, or within 5 ms of the last, share
// the next one: every commit is followed by a NOTIFY sent after it, but
// under load one NOTIFY wakes the cluster's workers for many commits.
// Close sends the one still owed. EnqueueTx sends it inside the caller's
// transaction, so that it is delivered only if that commits.
// [Store.Wakeups] starts a listener on a dedicated connection that
// reconnects with backoff and wakes the consumer after every reconnection,
// since notifications are lost while disconnected (and when a process dies
// between a commit and its NOTIFY). Consumers therefore still poll
// (NextDue).
//
// # Transactional enqueue
//
// [Store.EnqueueTx] queues a message in the caller's pgx.Tx: the mail
// exists if and only if that transaction commits.
//
// # Time
//
// The store never reads the clock for a decision: every time comes from the
// caller (Now in the params), the same way in SQL. Times are stored with
// PostgreSQL's microsecond resolution.
//
// # Lock order
//
// Changes to an existing message take row locks in one order: message,
// then its delivery rows, then its recipients, then destination rows.
// Claim takes no message lock and never waits (SKIP LOCKED everywhere), so
// it cannot deadlock with anything; transactions that PostgreSQL still
// aborts for a deadlock or serialization failure are run again.
package postgres
