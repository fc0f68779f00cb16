// Package embedded is outbound's default queue.Store: a local directory,
// no setup, one process.
//
//	s, err := embedded.Open("/var/spool/outbound", nil)
//
// # The promise
//
// When Enqueue returns nil, the message is on stable storage: its body, the
// body's directory entry and the database record that references both have
// been fsynced, in that order. A crash or power loss at any later moment
// keeps the message and its exact body. When Enqueue returns an error, or
// does not return because the process died, the message may or may not be
// stored; enqueueing it again with the same Message.IdempotencyKey stores it
// at most once.
//
// Every other write (Claim, Finish, Hold, …) is likewise durable when it
// returns. In particular Claim records the attempt and pushes NextAttempt to
// the lease end before it returns, so a process that dies during delivery
// retries no sooner than the lease allows, never at once after a restart.
//
// If an fsync or a commit ever fails, the store refuses every further write
// with *FailedError: after a failed fsync the kernel may have dropped the
// dirty pages, and a retried fsync can succeed without them. Reads go on
// working. Closing and reopening the store recovers from the last durable
// state.
//
// # Crash windows
//
// A crash
//   - while a body file is written, or after it is durable but before the
//     commit: the message was not acknowledged; the file is garbage and Open
//     removes it.
//   - after the commit that acknowledges a message: nothing is lost.
//   - after Claim returned: the recipients are due again at the lease end
//     (their persisted NextAttempt), not before.
//   - between a server's reply and Finish: the result is not recorded and the
//     recipient is attempted again after the lease (at-least-once; the
//     queue keeps this window short).
//   - after the commit that finishes or deletes a message but before its
//     body file is unlinked: the file is garbage and Open removes it.
//
// A torn or damaged record or body is detected by its CRC-32C (bbolt
// checksums only its own meta pages): Get reports *CorruptError, Claim moves
// a corrupt record to the "corrupt" bucket instead of delivering it, and the
// body reader returns *CorruptError in place of io.EOF at the end of a
// damaged body, so the delivery engine never takes it as complete and never
// sends the final dot.
//
// # Layout
//
//	dir/queue.db         bbolt database (exclusive flock: one process)
//	dir/bodies/00 … ff/  bodies larger than Options.InlineBodyLimit, one file each
//
// Buckets of queue.db, all maintained in the same transaction:
//
//	msg      ID → message record (envelope, recipients, per-recipient lease token, body CRC)
//	ibody    ID → inline body
//	files    body file name → ID (what Open's garbage collection keeps)
//	idem     idempotency key → ID
//	dest     destination → status and its ddue time
//	rdue     (destination, NextAttempt, ID) for every waiting group: the per-destination due index
//	ddue     (max(earliest rdue time, NextAllowed), destination): the destination-level due index
//	arr      (Arrived, ID) for messages with waiting recipients, for expiry
//	corrupt  quarantined records, for inspection
//	meta     format version and the lease token sequence
//
// Claim reads ddue up to Now, then merges the eligible destinations' rdue
// entries by time, so the entries it reads grow with the leases it returns
// and the destinations it may contact, not with the queue: mail waiting for
// later, or for a destination in backoff, is never read. (What it writes
// does grow slowly with the queue: bbolt copies each leaf page it changes,
// and in a large tree the leases' entries share fewer leaves.) With
// ExpireArrivedBefore set, Claim also reads the arr entries older than that
// limit, which the queue keeps few by expiring them. NextDue is the first
// ddue entry. List scans the messages. Open reads neither messages nor
// indexes; it only lists bodies/ to remove orphan files.
//
// Memory: messages are decoded one at a time and never cached, so the Go
// heap does not grow with the queue. The process RSS does include the
// database pages the kernel has mapped for bbolt's reads; they are clean
// file pages the kernel reclaims under pressure, and a restarted process
// maps only what it touches.
//
// Records are a compact hand-written binary format (uvarints and
// length-prefixed strings) with a version byte and a CRC-32C trailer.
//
// Writes go through a group committer: all the writes waiting while one
// commit syncs are committed together by the next, so concurrent producers
// share fsyncs and a lone producer waits for one commit only.
package embedded
