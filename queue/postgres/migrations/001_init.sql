-- 001_init: the outbound queue. {schema} is replaced by the quoted schema
-- name the store was opened with.

-- One row per queued message: the envelope. Recipients and the body hang off
-- it and go away with it (ON DELETE CASCADE).
CREATE TABLE {schema}.message (
    id              text COLLATE "C" PRIMARY KEY, -- byte order, like Go's string comparison (List is ordered by ID)
    sender          text NOT NULL,                -- envelope sender; '' is the null sender <>
    arrived         timestamptz NOT NULL,
    size            bigint NOT NULL,              -- octets in message_chunk
    idempotency_key text UNIQUE,                  -- NULL when the caller gave none
    eight_bit       boolean NOT NULL,
    ret             text NOT NULL,                -- RFC 3461 RET
    envelope_id     text NOT NULL,                -- RFC 3461 ENVID
    require_tls     boolean NOT NULL              -- RFC 8689
);

-- The body, in chunks of about 256 KiB so that it streams both ways and never
-- sits whole in memory. Mail is mostly already compressed or base64, and the
-- chunks are read in order, so TOAST compression is skipped (EXTERNAL).
CREATE TABLE {schema}.message_chunk (
    message_id text COLLATE "C" NOT NULL REFERENCES {schema}.message ON DELETE CASCADE,
    seq        integer NOT NULL,
    data       bytea NOT NULL,
    PRIMARY KEY (message_id, seq)
);
ALTER TABLE {schema}.message_chunk ALTER COLUMN data SET STORAGE EXTERNAL;

-- One row per envelope recipient: its delivery state and, while a worker
-- holds it, its lease. lease_token is the fencing token: Finish only touches
-- rows that still carry the token of the caller's lease.
CREATE TABLE {schema}.recipient (
    message_id         text COLLATE "C" NOT NULL REFERENCES {schema}.message ON DELETE CASCADE,
    idx                integer NOT NULL, -- position in the envelope
    address            text NOT NULL,
    destination        text NOT NULL,
    notify             text[],           -- RFC 3461 NOTIFY; NULL when unset
    orcpt              text NOT NULL,    -- RFC 3461 ORCPT; '' when unset
    state              text NOT NULL
        CHECK (state IN ('queued', 'deferred', 'delivered', 'failed', 'expired', 'held')),
    attempts           integer NOT NULL,
    next_attempt       timestamptz NOT NULL,
    last_attempt       timestamptz,
    last_result        jsonb,
    delay_warned       boolean NOT NULL,
    possible_duplicate boolean NOT NULL,
    lease_token        bigint,
    lease_owner        text,
    lease_until        timestamptz,
    PRIMARY KEY (message_id, idx)
);

-- One row per (message, destination): the unit Claim leases, one SMTP
-- transaction's worth of recipients. next_attempt is the earliest time one of
-- its waiting recipients is due (after its lease, if any), NULL when none is
-- waiting; every statement that changes those recipients recomputes it.
CREATE TABLE {schema}.delivery (
    message_id   text COLLATE "C" NOT NULL REFERENCES {schema}.message ON DELETE CASCADE,
    destination  text NOT NULL,
    arrived      timestamptz NOT NULL, -- the message's, for expiry while the destination is blocked
    next_attempt timestamptz,
    PRIMARY KEY (message_id, destination)
);
-- Claim walks destinations and takes the oldest due pairs of each: an index
-- range per destination, so blocked destinations cost nothing however much
-- mail waits for them.
CREATE INDEX delivery_due ON {schema}.delivery (destination, next_attempt)
    WHERE next_attempt IS NOT NULL;
-- Old waiting mail at blocked destinations, to expire it on time.
CREATE INDEX delivery_arrived ON {schema}.delivery (arrived)
    WHERE next_attempt IS NOT NULL;

-- What the cluster knows about each destination (RFC 5321 §4.5.4.1). A row
-- exists for every destination that has had mail; a zero row (next_allowed
-- NULL, no failures) means "never failed".
CREATE TABLE {schema}.destination (
    name                 text PRIMARY KEY,
    next_allowed         timestamptz,
    consecutive_failures integer NOT NULL DEFAULT 0,
    first_failure        timestamptz,
    last_failure         timestamptz,
    last_result          jsonb
);

-- Leases on numbered connection slots: a destination allowed N concurrent
-- connections cluster-wide has slots 0..N-1; a node holds one per connection.
CREATE TABLE {schema}.destination_slot (
    destination text NOT NULL,
    slot        integer NOT NULL,
    token       bigint,
    owner       text,
    until       timestamptz, -- free when NULL or not after the caller's now
    PRIMARY KEY (destination, slot)
);

-- Fencing tokens for recipient leases and slot leases: unique per claim.
CREATE SEQUENCE {schema}.lease_token;
