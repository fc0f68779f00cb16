package postgres

import (
	"fmt"
	"strings"
)

// The SQL of the store, one statement per constant, grouped by table.
// {schema} stands for the quoted schema name (see expand). Every time that
// drives a decision is a parameter (the caller's Now), never now(): a cluster
// with a fake clock in tests, or with skewed database and worker clocks, must
// agree with the caller's view of time.

// Migrations.
const (
	// schemaExists and migrationTableExists let Open skip DDL (and the
	// privileges it needs) on a schema that is already set up.
	schemaExists = `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`

	migrationTableExists = `SELECT to_regclass($1) IS NOT NULL`

	createSchema = `CREATE SCHEMA IF NOT EXISTS {schema}`

	createMigrationTable = `
CREATE TABLE IF NOT EXISTS {schema}.schema_migration (
    version    integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now() -- a record for humans, never a decision
)`

	// lockMigrations serialises migrations of one schema across processes;
	// the lock ends with the transaction, so it pins no pooled connection.
	lockMigrations = `SELECT pg_advisory_xact_lock(hashtext('outbound migrate ' || $1))`

	selectMigrations = `SELECT version FROM {schema}.schema_migration`

	insertMigration = `INSERT INTO {schema}.schema_migration (version) VALUES ($1)`
)

// message and message_chunk.
const (
	// insertMessage returns no row when a message with the same idempotency
	// key exists; it waits for a concurrent insert of that key to commit or
	// roll back first, so two racing enqueues store one message.
	insertMessage = `
INSERT INTO {schema}.message
    (id, sender, arrived, size, idempotency_key, eight_bit, ret, envelope_id, require_tls)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING id`

	selectIDByIdempotencyKey = `SELECT id FROM {schema}.message WHERE idempotency_key = $1`

	setMessageSize = `UPDATE {schema}.message SET size = $2 WHERE id = $1`

	insertChunk = `INSERT INTO {schema}.message_chunk (message_id, seq, data) VALUES ($1, $2, $3)`

	selectChunk = `SELECT data FROM {schema}.message_chunk WHERE message_id = $1 AND seq = $2`

	// selectMessageFirstChunk reads a message's size and its first chunk
	// (NULL for an empty body).
	selectMessageFirstChunk = `
SELECT m.size, (SELECT c.data FROM {schema}.message_chunk c WHERE c.message_id = m.id AND c.seq = 0)
FROM {schema}.message m
WHERE m.id = $1`

	messageExists = `SELECT EXISTS (SELECT 1 FROM {schema}.message WHERE id = $1)`

	// lockMessage is the first lock of every change to an existing message
	// (Finish, Hold, Release, Retry): see "Lock order" in doc.go.
	lockMessage = `SELECT id FROM {schema}.message WHERE id = $1 FOR UPDATE`

	selectMessages = `
SELECT id, sender, arrived, size, idempotency_key, eight_bit, ret, envelope_id, require_tls
FROM {schema}.message
WHERE id = ANY($1)
ORDER BY id`

	// listMessages filters with optional parameters: NULL disables a filter.
	listMessages = `
SELECT m.id, m.sender, m.arrived, m.size, m.idempotency_key, m.eight_bit, m.ret, m.envelope_id, m.require_tls
FROM {schema}.message m
WHERE ($1::text IS NULL OR m.id > $1)
  AND ($2::timestamptz IS NULL OR m.arrived < $2)
  AND ($3::text[] IS NULL OR EXISTS (
        SELECT 1 FROM {schema}.recipient r WHERE r.message_id = m.id AND r.state = ANY($3)))
  AND ($4::text IS NULL OR EXISTS (
        SELECT 1 FROM {schema}.recipient r WHERE r.message_id = m.id AND r.destination = $4))
ORDER BY m.id
LIMIT $5`

	deleteMessage = `DELETE FROM {schema}.message WHERE id = $1`

	// wakeWorkers is notifyWork on its own after a commit, a transaction of
	// one statement that does not wait for the WAL flush (set_config lasts
	// until its commit): NOTIFY serialises the commits of all notifying
	// transactions (a database-wide lock held through the flush), so a
	// NOTIFY inside every enqueue would defeat group commit. Losing a
	// wakeup in a crash is harmless: workers also poll. {channel} is the
	// quoted channel name.
	wakeWorkers = `SELECT pg_notify({channel}, ''), set_config('synchronous_commit', 'off', true)`

	// notifyWork wakes listeners (Store.Wakeups) on every node. Inside a
	// transaction it is delivered only if and when that commits.
	notifyWork = `SELECT pg_notify($1, '')`
)

// storeRecipients is the part of a statement that inserts the recipients
// of message {id} from the arrays {r0}..{r10} (one element per recipient,
// in envelope order; notify and last_result as JSON text) and then, as the
// statement's last part, its (message, destination) pairs from {d0} (the
// destinations) and {d1} (when the earliest waiting recipient of each is
// due, NULL when none waits), with the message's arrival {arrived}. One
// statement for any number of recipients; the foreign keys are checked at
// its end, so the message row may come from the same statement.
const storeRecipients = `
recipients AS (
    INSERT INTO {schema}.recipient
        (message_id, idx, address, destination, notify, orcpt, state, attempts,
         next_attempt, last_attempt, last_result, delay_warned, possible_duplicate)
    SELECT {id}, u.n - 1, u.address, u.destination,
           CASE WHEN u.notify IS NOT NULL THEN ARRAY(
               SELECT x.e FROM jsonb_array_elements_text(u.notify::jsonb) WITH ORDINALITY AS x (e, i)
               ORDER BY x.i) END,
           u.orcpt, u.state, u.attempts, u.next_attempt, u.last_attempt, u.last_result::jsonb,
           u.delay_warned, u.possible_duplicate
    FROM unnest({r0}::text[], {r1}::text[], {r2}::text[], {r3}::text[], {r4}::text[], {r5}::int[],
                {r6}::timestamptz[], {r7}::timestamptz[], {r8}::text[], {r9}::bool[], {r10}::bool[])
         WITH ORDINALITY AS u (address, destination, notify, orcpt, state, attempts,
                               next_attempt, last_attempt, last_result, delay_warned, possible_duplicate, n)
)
INSERT INTO {schema}.delivery (message_id, destination, arrived, next_attempt)
SELECT {id}, d.destination, {arrived}, d.next_attempt
FROM unnest({d0}::text[], {d1}::timestamptz[]) AS d (destination, next_attempt)`

// params returns the replacer of storeRecipients' placeholders with
// parameters: {id} and {arrived} by the given ones, the arrays from $first
// on.
func params(id, arrived string, first int) *strings.Replacer {
	pairs := []string{"{id}", id, "{arrived}", arrived}
	for i := range 11 {
		pairs = append(pairs, fmt.Sprintf("{r%d}", i), fmt.Sprintf("$%d", first+i))
	}
	pairs = append(pairs, "{d0}", fmt.Sprintf("$%d", first+11), "{d1}", fmt.Sprintf("$%d", first+12))
	return strings.NewReplacer(pairs...)
}

// Stored by one statement each.
var (
	// storeMessage stores a whole message that has no idempotency key and
	// at most one chunk ($9, NULL for an empty body): the message row, the
	// chunk, the recipients ($10..$20) and the pairs ($21, $22). Being one
	// statement, it is a transaction by itself.
	storeMessage = `
WITH message AS (
    INSERT INTO {schema}.message
        (id, sender, arrived, size, eight_bit, ret, envelope_id, require_tls)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
), chunk AS (
    INSERT INTO {schema}.message_chunk (message_id, seq, data)
    SELECT $1, 0, $9::bytea WHERE $9::bytea IS NOT NULL
),` + params("$1", "$3", 10).Replace(storeRecipients)

	// insertRecipients stores the recipients ($3..$13) and pairs ($14, $15)
	// of message $1 that arrived at $2, whose row exists.
	insertRecipients = `
WITH` + params("$1", "$2", 3).Replace(storeRecipients)
)

// recipient.
const (
	// selectRecipients reads the recipients of the messages $1 (which may
	// name one twice) message by message through the primary key (OFFSET 0 keeps the planner from
	// turning it into a scan of the table, which it would when the table
	// has no statistics yet).
	selectRecipients = `
SELECT r.message_id, r.address, r.destination, r.notify, r.orcpt, r.state, r.attempts,
       r.next_attempt, r.last_attempt, r.last_result, r.delay_warned, r.possible_duplicate
FROM (SELECT DISTINCT unnest($1::text[])) AS m (id)
CROSS JOIN LATERAL (
    SELECT * FROM {schema}.recipient r WHERE r.message_id = m.id OFFSET 0
) r
ORDER BY r.message_id, r.idx`

	// claimRecipients leases the due recipients of each locked (message,
	// destination) pair: one fresh fencing token per pair, the attempt
	// counted, and next_attempt pushed to the end of the lease, all before
	// the worker opens a connection. If the worker dies, the recipients are
	// due again at the end of the lease, never at once.
	//
	// The recipients are found pair by pair through the primary key (a
	// LATERAL subquery that OFFSET 0 keeps from being flattened into a
	// join) and updated by ctid, whatever the planner believes about the
	// table: a fresh or bloated table without statistics would otherwise
	// get a sequential scan joined to every pair. The ctids are stable:
	// every change to these recipients locks their pair first, as Claim
	// has.
	claimRecipients = `
WITH lease AS MATERIALIZED (
    SELECT g.message_id, g.destination, nextval('{schema}.lease_token') AS token
    FROM unnest($1::text[], $2::text[]) AS g (message_id, destination)
), due AS MATERIALIZED (
    SELECT d.tid, lease.token
    FROM lease
    CROSS JOIN LATERAL (
        SELECT r.ctid AS tid
        FROM {schema}.recipient r
        WHERE r.message_id = lease.message_id
          AND r.destination = lease.destination
          AND r.state IN ('queued', 'deferred')
          AND r.next_attempt <= $3
          AND (r.lease_until IS NULL OR r.lease_until <= $3)
        OFFSET 0
    ) d
)
UPDATE {schema}.recipient r
SET attempts = r.attempts + 1,
    last_attempt = $3,
    next_attempt = $4,
    lease_token = due.token,
    lease_owner = $5,
    lease_until = $4
FROM due
WHERE r.ctid = due.tid
RETURNING r.message_id, r.destination, r.idx, r.address, due.token`

	// fenceLease is Finish's fencing check: the lease ($2, $3) is current
	// only if all $4 recipients it covers still carry its token. When it is
	// not, the statement fails (the cast of 'lease lost' to integer, error
	// 22P02, evaluated only then), which ends the transaction it is part
	// of: nothing after it in Finish's batch takes effect.
	fenceLease = `
SELECT (CASE WHEN count(*) = $4 THEN '0' ELSE 'lease lost' END)::int
FROM {schema}.recipient
WHERE message_id = $1 AND lease_token = $2 AND lease_owner = $3`

	// finishRecipient records one outcome and ends that recipient's lease.
	// The flags are sticky: they are set, never cleared.
	finishRecipient = `
UPDATE {schema}.recipient
SET state = $4,
    next_attempt = $5,
    last_result = $6,
    possible_duplicate = possible_duplicate OR $7,
    delay_warned = delay_warned OR $8,
    lease_token = NULL, lease_owner = NULL, lease_until = NULL
WHERE message_id = $1 AND lease_token = $2 AND address = $3`

	// endLease releases the leased recipients Finish did not name: they keep
	// their state and claim-time next_attempt (the end of the lease).
	endLease = `
UPDATE {schema}.recipient
SET lease_token = NULL, lease_owner = NULL, lease_until = NULL
WHERE message_id = $1 AND lease_token = $2`

	// holdRecipients freezes the waiting recipients; their leases end, so a
	// worker holding one gets ErrLeaseLost from Finish.
	holdRecipients = `
UPDATE {schema}.recipient
SET state = 'held', lease_token = NULL, lease_owner = NULL, lease_until = NULL
WHERE message_id = $1 AND state IN ('queued', 'deferred')`

	releaseRecipients = `
UPDATE {schema}.recipient
SET state = CASE WHEN attempts > 0 THEN 'deferred' ELSE 'queued' END,
    next_attempt = $2
WHERE message_id = $1 AND state = 'held'`

	// retryRecipients makes waiting recipients due at $2. A recipient
	// under a live lease is left alone (its worker's Finish still counts);
	// an expired lease ends.
	retryRecipients = `
UPDATE {schema}.recipient
SET next_attempt = $2, lease_token = NULL, lease_owner = NULL, lease_until = NULL
WHERE message_id = $1
  AND state IN ('queued', 'deferred')
  AND NOT (lease_token IS NOT NULL AND lease_until > $2)
RETURNING destination`
)

// delivery.
const (
	// lockDeliveries locks up to $4 of the candidate pairs that are still
	// due, in the order of the arrays (oldest first), skipping those
	// another transaction holds: concurrent claimers never wait for each
	// other and never lease the same recipient twice. Each pair is read
	// through the primary key by a LATERAL subquery that locks it; the
	// nested loop over unnest keeps the arrays' order, and LIMIT stops it
	// after $4 rows, so no more than $4 pairs are locked. It returns their
	// ctids, stable while they are locked, for refreshDeliveries.
	lockDeliveries = `
SELECT dl.message_id, dl.destination, dl.ctid
FROM unnest($1::text[], $2::text[]) AS c (message_id, destination)
CROSS JOIN LATERAL (
    SELECT dl.message_id, dl.destination, dl.ctid
    FROM {schema}.delivery dl
    WHERE dl.message_id = c.message_id
      AND dl.destination = c.destination
      AND dl.next_attempt <= $3
    FOR UPDATE SKIP LOCKED
) dl
LIMIT $4`

	// lockMessageDeliveries locks all pairs of a message, in a fixed order,
	// before an operator action changes its recipients (see "Lock order").
	lockMessageDeliveries = `
SELECT destination FROM {schema}.delivery
WHERE message_id = $1
ORDER BY destination
FOR UPDATE`

	lockDelivery = `
SELECT destination FROM {schema}.delivery
WHERE message_id = $1 AND destination = $2
FOR UPDATE`

	// setPairNextAttempt sets the next_attempt of pair dl from its waiting
	// recipients: a leased recipient is due when both its next_attempt and
	// its lease have passed; a pair with none waiting gets NULL.
	setPairNextAttempt = `SET next_attempt = (
    SELECT min(GREATEST(r.next_attempt, r.lease_until))
    FROM {schema}.recipient r
    WHERE r.message_id = dl.message_id
      AND r.destination = dl.destination
      AND r.state IN ('queued', 'deferred'))
`

	// refreshDeliveries recomputes next_attempt of the pairs with ctids $1
	// (locked by this transaction, see lockDeliveries).
	refreshDeliveries = `
UPDATE {schema}.delivery dl
` + setPairNextAttempt + `WHERE dl.ctid = ANY ($1::tid[])`

	// finishPair ends Finish: it deletes message $1 once no recipient can
	// change any more (only tried when $3: no recipient was just deferred),
	// its chunks, recipients and pairs with it (CASCADE); otherwise it
	// recomputes pair ($1, $2) like refreshDeliveries. The cascade runs at the
	// end of the statement, after the UPDATE, which then has nothing to do.
	finishPair = `
WITH gone AS (
    DELETE FROM {schema}.message m
    WHERE $3 AND m.id = $1
      AND NOT EXISTS (
            SELECT 1 FROM {schema}.recipient r
            WHERE r.message_id = m.id AND r.state NOT IN ('delivered', 'failed', 'expired'))
    RETURNING m.id
)
UPDATE {schema}.delivery dl
` + setPairNextAttempt + `WHERE dl.message_id = $1 AND dl.destination = $2
  AND NOT EXISTS (SELECT 1 FROM gone)`

	// refreshMessageDeliveries is refreshDeliveries for every pair of one
	// message.
	refreshMessageDeliveries = `
UPDATE {schema}.delivery dl
` + setPairNextAttempt + `WHERE dl.message_id = $1`

	// claimCandidates picks the oldest due (message, destination) pairs,
	// without locking. The recursive part is a loose index scan: one index
	// descent per destination that has waiting mail, however much waits.
	// For each such destination that may be contacted it takes up to $2
	// pairs (one while the destination is probed after failures). Pairs
	// whose message arrived before $3 are due wherever they wait, even at a
	// blocked destination, so that they can be expired on time; they are
	// never probes. Destinations in $4 are skipped (but not for expiry)
	// during the destination walk, before any of their pairs is read. The
	// cost grows with destinations and leases, never with the length of the
	// queue.
	claimCandidates = `
WITH RECURSIVE waiting (destination) AS (
    SELECT min(destination) FROM {schema}.delivery WHERE next_attempt IS NOT NULL
    UNION ALL
    SELECT (SELECT min(dl.destination) FROM {schema}.delivery dl
            WHERE dl.next_attempt IS NOT NULL AND dl.destination > w.destination)
    FROM waiting w
    WHERE w.destination IS NOT NULL
), contactable AS (
    SELECT c.message_id, c.destination, c.next_attempt, coalesce(d.consecutive_failures, 0) > 0 AS probe
    FROM waiting w
    LEFT JOIN {schema}.destination d ON d.name = w.destination
    CROSS JOIN LATERAL (
        SELECT dl.message_id, dl.destination, dl.next_attempt
        FROM {schema}.delivery dl
        WHERE dl.destination = w.destination AND dl.next_attempt <= $1
        ORDER BY dl.next_attempt
        LIMIT CASE WHEN d.consecutive_failures > 0 THEN 1 ELSE $2 END
    ) c
    WHERE (d.next_allowed IS NULL OR d.next_allowed <= $1)
      AND w.destination <> ALL ($4::text[])
), expiring AS (
    SELECT dl.message_id, dl.destination, dl.next_attempt, false AS probe
    FROM {schema}.delivery dl
    WHERE dl.arrived < $3 AND dl.next_attempt <= $1
    ORDER BY dl.arrived
    LIMIT $2
)
SELECT message_id, destination, min(next_attempt) AS next_attempt, bool_or(probe) AS probe
FROM (SELECT * FROM contactable UNION ALL SELECT * FROM expiring) AS c
GROUP BY message_id, destination
ORDER BY next_attempt, message_id, destination
LIMIT $2`

	// claimMessageCandidates is claimCandidates restricted to the pairs of
	// message $5, read through the delivery primary key.
	claimMessageCandidates = `
SELECT dl.message_id, dl.destination, dl.next_attempt,
       coalesce(d.consecutive_failures, 0) > 0 AND NOT dl.arrived < coalesce($3::timestamptz, '-infinity') AS probe
FROM {schema}.delivery dl
LEFT JOIN {schema}.destination d ON d.name = dl.destination
WHERE dl.message_id = $5 AND dl.next_attempt <= $1
  AND (dl.arrived < $3::timestamptz
       OR ((d.next_allowed IS NULL OR d.next_allowed <= $1) AND dl.destination <> ALL ($4::text[])))
ORDER BY dl.next_attempt, dl.destination
LIMIT $2`

	// nextDue is the earliest time a pair becomes due at a destination that
	// may then be contacted, walking destinations like claimCandidates.
	nextDue = `
WITH RECURSIVE waiting (destination) AS (
    SELECT min(destination) FROM {schema}.delivery WHERE next_attempt IS NOT NULL
    UNION ALL
    SELECT (SELECT min(dl.destination) FROM {schema}.delivery dl
            WHERE dl.next_attempt IS NOT NULL AND dl.destination > w.destination)
    FROM waiting w
    WHERE w.destination IS NOT NULL
)
SELECT min(GREATEST(c.next_attempt, d.next_allowed))
FROM waiting w
LEFT JOIN {schema}.destination d ON d.name = w.destination
CROSS JOIN LATERAL (
    SELECT dl.next_attempt
    FROM {schema}.delivery dl
    WHERE dl.destination = w.destination AND dl.next_attempt IS NOT NULL
    ORDER BY dl.next_attempt
    LIMIT 1
) c`
)

// destination.
const (
	insertDestination = `INSERT INTO {schema}.destination (name) VALUES ($1) ON CONFLICT (name) DO NOTHING`

	selectDestination = `
SELECT next_allowed, consecutive_failures, first_failure, last_failure, last_result
FROM {schema}.destination
WHERE name = $1`

	// updateDestination replaces a status, and leaves the row alone (no
	// write, no lock) when nothing changes, as after most successes.
	updateDestination = `
UPDATE {schema}.destination
SET next_allowed = $2, consecutive_failures = $3, first_failure = $4, last_failure = $5, last_result = $6
WHERE name = $1
  AND (next_allowed, consecutive_failures, first_failure, last_failure, last_result)
      IS DISTINCT FROM ($2, $3, $4, $5, $6::jsonb)`

	// lockProbes locks the destinations Claim wants to probe if they are
	// still failing and allowed, skipping rows another transaction holds:
	// of several claimers, exactly one wins each probe.
	lockProbes = `
SELECT name FROM {schema}.destination
WHERE name = ANY($1)
  AND consecutive_failures > 0
  AND (next_allowed IS NULL OR next_allowed <= $2)
ORDER BY name
FOR UPDATE SKIP LOCKED`

	// startProbes keeps every other worker away from a probed destination
	// until the probe's lease ends or its Finish records a new status.
	startProbes = `UPDATE {schema}.destination SET next_allowed = $2 WHERE name = ANY($1)`

	// clearBackoff is the operator's flush: the destinations may be
	// contacted at $2. Their failure count stays, so a failing destination
	// is still probed by one worker first.
	clearBackoff = `
UPDATE {schema}.destination
SET next_allowed = NULL
WHERE name = ANY($1) AND next_allowed > $2`
)

// destination_slot.
//
// Slot statements commit without waiting for the WAL to reach the disk:
// each is a transaction of its own, and set_config(..., true) in RETURNING,
// evaluated for every row written, turns synchronous_commit off until its
// commit. Slot leases must be visible to other nodes at once, which an
// asynchronous commit is, but need not survive a crash of the database
// server: one lost there frees a slot early or holds it until its term
// ends, for one session. This spares every attempt two waits for the disk,
// and the BEGIN, SET LOCAL and COMMIT statements around each.
const (
	// createSlots makes sure slots 0..$2-1 of a destination exist.
	createSlots = `
INSERT INTO {schema}.destination_slot (destination, slot)
SELECT $1, n FROM generate_series(0, $2 - 1) AS n
ON CONFLICT (destination, slot) DO NOTHING
RETURNING set_config('synchronous_commit', 'off', true)`

	// acquireSlot leases the lowest free slot below the limit.
	acquireSlot = `
UPDATE {schema}.destination_slot s
SET token = nextval('{schema}.lease_token'), owner = $3, until = $5
FROM (
    SELECT destination, slot FROM {schema}.destination_slot
    WHERE destination = $1 AND slot < $2 AND (until IS NULL OR until <= $4)
    ORDER BY slot
    LIMIT 1
    FOR UPDATE SKIP LOCKED
) free
WHERE s.destination = free.destination AND s.slot = free.slot
RETURNING s.slot, s.token, set_config('synchronous_commit', 'off', true)`

	// renewSlot extends a slot lease, fenced by its token.
	renewSlot = `
UPDATE {schema}.destination_slot SET until = $4
WHERE destination = $1 AND slot = $2 AND token = $3
RETURNING set_config('synchronous_commit', 'off', true)`

	// releaseSlot ends a slot lease at $4, fenced by its token.
	releaseSlot = `
UPDATE {schema}.destination_slot SET until = $4, owner = NULL, token = NULL
WHERE destination = $1 AND slot = $2 AND token = $3
RETURNING set_config('synchronous_commit', 'off', true)`

	countSlots = `
SELECT count(*) FROM {schema}.destination_slot
WHERE destination = $1 AND until > $2`
)

// expand returns q with {schema} replaced by the quoted schema name.
func expand(q, schema string) string { return strings.ReplaceAll(q, "{schema}", schema) }

// quoteLiteral returns s as an SQL string literal.
func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// queries holds the statements with the schema filled in, built once per store.
type queries struct {
	wakeWorkers              string
	createSchema             string
	createMigrationTable     string
	lockMigrations           string
	selectMigrations         string
	insertMigration          string
	insertMessage            string
	storeMessage             string
	insertRecipients         string
	selectIDByIdempotencyKey string
	setMessageSize           string
	insertChunk              string
	selectChunk              string
	selectMessageFirstChunk  string
	messageExists            string
	lockMessage              string
	selectMessages           string
	listMessages             string
	deleteMessage            string
	notifyWork               string
	selectRecipients         string
	claimRecipients          string
	fenceLease               string
	finishRecipient          string
	endLease                 string
	holdRecipients           string
	releaseRecipients        string
	retryRecipients          string
	lockDeliveries           string
	lockMessageDeliveries    string
	lockDelivery             string
	refreshDeliveries        string
	finishPair               string
	refreshMessageDeliveries string
	claimCandidates          string
	claimMessageCandidates   string
	nextDue                  string
	insertDestination        string
	selectDestination        string
	updateDestination        string
	lockProbes               string
	startProbes              string
	clearBackoff             string
	createSlots              string
	acquireSlot              string
	renewSlot                string
	releaseSlot              string
	countSlots               string
}

func newQueries(schema, channel string) queries {
	return queries{
		wakeWorkers:              strings.ReplaceAll(wakeWorkers, "{channel}", quoteLiteral(channel)),
		createSchema:             expand(createSchema, schema),
		createMigrationTable:     expand(createMigrationTable, schema),
		lockMigrations:           expand(lockMigrations, schema),
		selectMigrations:         expand(selectMigrations, schema),
		insertMigration:          expand(insertMigration, schema),
		insertMessage:            expand(insertMessage, schema),
		storeMessage:             expand(storeMessage, schema),
		insertRecipients:         expand(insertRecipients, schema),
		selectIDByIdempotencyKey: expand(selectIDByIdempotencyKey, schema),
		setMessageSize:           expand(setMessageSize, schema),
		insertChunk:              expand(insertChunk, schema),
		selectChunk:              expand(selectChunk, schema),
		selectMessageFirstChunk:  expand(selectMessageFirstChunk, schema),
		messageExists:            expand(messageExists, schema),
		lockMessage:              expand(lockMessage, schema),
		selectMessages:           expand(selectMessages, schema),
		listMessages:             expand(listMessages, schema),
		deleteMessage:            expand(deleteMessage, schema),
		notifyWork:               expand(notifyWork, schema),
		selectRecipients:         expand(selectRecipients, schema),
		claimRecipients:          expand(claimRecipients, schema),
		fenceLease:               expand(fenceLease, schema),
		finishRecipient:          expand(finishRecipient, schema),
		endLease:                 expand(endLease, schema),
		holdRecipients:           expand(holdRecipients, schema),
		releaseRecipients:        expand(releaseRecipients, schema),
		retryRecipients:          expand(retryRecipients, schema),
		lockDeliveries:           expand(lockDeliveries, schema),
		lockMessageDeliveries:    expand(lockMessageDeliveries, schema),
		lockDelivery:             expand(lockDelivery, schema),
		refreshDeliveries:        expand(refreshDeliveries, schema),
		finishPair:               expand(finishPair, schema),
		refreshMessageDeliveries: expand(refreshMessageDeliveries, schema),
		claimCandidates:          expand(claimCandidates, schema),
		claimMessageCandidates:   expand(claimMessageCandidates, schema),
		nextDue:                  expand(nextDue, schema),
		insertDestination:        expand(insertDestination, schema),
		selectDestination:        expand(selectDestination, schema),
		updateDestination:        expand(updateDestination, schema),
		lockProbes:               expand(lockProbes, schema),
		startProbes:              expand(startProbes, schema),
		clearBackoff:             expand(clearBackoff, schema),
		createSlots:              expand(createSlots, schema),
		acquireSlot:              expand(acquireSlot, schema),
		renewSlot:                expand(renewSlot, schema),
		releaseSlot:              expand(releaseSlot, schema),
		countSlots:               expand(countSlots, schema),
	}
}
