package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outboundmail/outbound/queue"
)

// fillQueue adds, with plain SQL for speed, n one-recipient messages due at
// t0 for destination dest.
func fillQueue(t testing.TB, s *Store, dest, prefix string, n int) {
	t.Helper()
	const (
		dests = `INSERT INTO {schema}.destination (name) VALUES ($1::text) ON CONFLICT DO NOTHING`
		msgs  = `
INSERT INTO {schema}.message (id, sender, arrived, size, eight_bit, ret, envelope_id, require_tls)
SELECT $2::text || i, 'app@example.org', $3::timestamptz - i * interval '1 second', 0, false, '', '', false
FROM generate_series(1, $4::int) i, (SELECT $1::text) AS unused`
		rcpts = `
INSERT INTO {schema}.recipient (message_id, idx, address, destination, orcpt, state, attempts,
    next_attempt, delay_warned, possible_duplicate)
SELECT $2::text || i, 0, 'u' || i || '@' || $1::text, $1::text, '', 'queued', 0, $3::timestamptz, false, false
FROM generate_series(1, $4::int) i`
		pairs = `
INSERT INTO {schema}.delivery (message_id, destination, arrived, next_attempt)
SELECT $2::text || i, $1::text, $3::timestamptz - i * interval '1 second', $3::timestamptz
FROM generate_series(1, $4::int) i`
	)
	schema := pgx.Identifier{s.schema}.Sanitize()
	b := new(pgx.Batch)
	b.Queue(expand(dests, schema), dest)
	for _, q := range []string{msgs, rcpts, pairs} {
		b.Queue(expand(q, schema), dest, prefix, t0, n)
	}
	if err := s.Pool().SendBatch(context.Background(), b).Close(); err != nil {
		t.Fatal(err)
	}
}

// planNode is the part of EXPLAIN (ANALYZE, FORMAT JSON) output we read.
type planNode struct {
	NodeType       string     `json:"Node Type"`
	RelationName   string     `json:"Relation Name"`
	IndexName      string     `json:"Index Name"`
	ActualRows     float64    `json:"Actual Rows"`
	ActualLoops    float64    `json:"Actual Loops"`
	RemovedByFiler float64    `json:"Rows Removed by Filter"`
	Plans          []planNode `json:"Plans"`
}

// TestClaim_CostIndependentOfQueue checks with EXPLAIN ANALYZE that Claim
// reads about as many delivery rows as it returns, not the 100,000
// messages waiting for a blocked destination, in both the custom plan and
// the generic plan a prepared statement switches to.
func TestClaim_CostIndependentOfQueue(t *testing.T) {
	if testing.Short() {
		t.Skip("fills a queue of 100,000 messages")
	}
	t.Parallel()
	s := newTestStore(t)
	ctx := context.Background()
	const queued = 100_000
	fillQueue(t, s, "blocked.example", "b", queued)
	for i := range 50 {
		fillQueue(t, s, fmt.Sprintf("open%d.example", i), fmt.Sprintf("o%d-", i), 2)
	}
	q := expand(`UPDATE {schema}.destination SET next_allowed = $1, consecutive_failures = 3 WHERE name = 'blocked.example'`,
		pgx.Identifier{s.schema}.Sanitize())
	if _, err := s.Pool().Exec(ctx, q, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pool().Exec(ctx, "ANALYZE "+pgx.Identifier{s.schema, "delivery"}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	now, limit := t0.Add(time.Minute), 10
	for _, mode := range []string{"force_custom_plan", "force_generic_plan"} {
		for _, expire := range []any{nil, t0.Add(-queued * time.Second)} {
			rows, how := explainCandidates(t, s, mode, now, limit, expire, nil)
			t.Logf("%s, expire %v: %.0f delivery rows read via %s", mode, expire, rows, strings.Join(how, ", "))
			if rows > 500 {
				t.Errorf("%s: claim read %.0f delivery rows for %d leases in a queue of %d", mode, rows, limit, queued)
			}
		}
	}
	ls := mustClaim(t, s, now, "w", limit)
	if len(ls) != limit {
		t.Fatalf("claimed %d leases, want %d", len(ls), limit)
	}
	for _, l := range ls {
		if l.Destination == "blocked.example" {
			t.Fatalf("claimed %s at the blocked destination", l.Message.ID)
		}
	}
	// The five oldest messages at the blocked destination are due for
	// expiry; the 90 open pairs not claimed above are due as usual.
	ls, err := s.Claim(ctx, queue.ClaimParams{Now: now, Owner: "w", LeaseFor: leaseFor, Limit: 1000,
		ExpireArrivedBefore: t0.Add(-(queued - 5) * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	blocked := 0
	for _, l := range ls {
		if l.Destination == "blocked.example" {
			blocked++
		}
	}
	if blocked != 5 || len(ls) != 95 {
		t.Fatalf("claim with expiry: %d leases, %d at the blocked destination; want 95 and 5", len(ls), blocked)
	}
}

// TestClaim_ExcludedCostsNothing checks with EXPLAIN ANALYZE that a
// destination in ClaimParams.ExcludeDestinations costs Claim nothing
// however much mail is due there: the scheduler excludes exactly the
// destinations with the largest backlogs.
func TestClaim_ExcludedCostsNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("fills a queue of 100,000 messages")
	}
	t.Parallel()
	s := newTestStore(t)
	ctx := context.Background()
	const queued = 100_000
	fillQueue(t, s, "busy.example", "b", queued)
	for i := range 50 {
		fillQueue(t, s, fmt.Sprintf("open%d.example", i), fmt.Sprintf("o%d-", i), 2)
	}
	if _, err := s.Pool().Exec(ctx, "ANALYZE "+pgx.Identifier{s.schema, "delivery"}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	now, limit, excluded := t0.Add(time.Minute), 10, []string{"busy.example", "absent.example"}
	for _, mode := range []string{"force_custom_plan", "force_generic_plan"} {
		rows, how := explainCandidates(t, s, mode, now, limit, nil, excluded)
		t.Logf("%s: %.0f delivery rows read via %s", mode, rows, strings.Join(how, ", "))
		if rows > 500 {
			t.Errorf("%s: claim read %.0f delivery rows for %d leases, excluding a destination with %d", mode, rows, limit, queued)
		}
	}
	ls, err := s.Claim(ctx, queue.ClaimParams{Now: now, Owner: "w", LeaseFor: leaseFor, Limit: limit, ExcludeDestinations: excluded})
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != limit {
		t.Fatalf("claimed %d leases, want %d", len(ls), limit)
	}
	for _, l := range ls {
		if l.Destination == "busy.example" {
			t.Fatalf("claimed %s at the excluded destination", l.Message.ID)
		}
	}
}

// explainCandidates runs claimCandidates under EXPLAIN ANALYZE with the
// given plan_cache_mode.
func explainCandidates(t *testing.T, s *Store, mode string, now time.Time, limit int, expire any, excluded []string) (float64, []string) {
	t.Helper()
	ctx := context.Background()
	tx, err := s.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck
	if _, err := tx.Exec(ctx, "SET LOCAL plan_cache_mode = "+mode); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "PREPARE candidates (timestamptz, int, timestamptz, text[]) AS "+s.q.claimCandidates); err != nil {
		t.Fatal(err)
	}
	var out []byte
	// EXPLAIN takes no bind parameters: spell the values out.
	lit := func(v any) string {
		if tm, ok := v.(time.Time); ok {
			return "'" + tm.Format(time.RFC3339Nano) + "'"
		}
		return "NULL"
	}
	explain := fmt.Sprintf("EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE candidates (%s, %d, %s, ARRAY[%s]::text[])",
		lit(now), 2*limit, lit(expire), strings.Join(quoted(excluded), ","))
	err = tx.QueryRow(ctx, explain).Scan(&out)
	if _, derr := tx.Exec(ctx, "DEALLOCATE candidates"); derr != nil && err == nil {
		err = derr
	}
	if err != nil {
		t.Fatal(err)
	}
	var plans []struct {
		Plan planNode `json:"Plan"`
	}
	if err := json.Unmarshal(out, &plans); err != nil || len(plans) != 1 {
		t.Fatalf("EXPLAIN output: %v: %s", err, out)
	}
	return rowsRead(plans[0].Plan, "delivery")
}

// quoted returns each name as an SQL string literal.
func quoted(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = "'" + strings.ReplaceAll(n, "'", "''") + "'"
	}
	return out
}

// rowsRead sums the rows the plan read from table (returned or filtered
// out, over all loops) and says how.
func rowsRead(n planNode, table string) (rows float64, how []string) {
	if n.RelationName == table && n.NodeType != "ModifyTable" {
		rows += (n.ActualRows + n.RemovedByFiler) * n.ActualLoops
		how = append(how, strings.TrimSpace(n.NodeType+" "+n.IndexName))
	}
	for _, c := range n.Plans {
		r, h := rowsRead(c, table)
		rows += r
		how = append(how, h...)
	}
	return rows, how
}

// TestClaim_PlansWithoutStatistics checks with EXPLAIN ANALYZE that the
// statements Claim runs on the pairs it chose read those pairs and their
// recipients through primary keys when the tables have never been
// analyzed (a new store, or autovacuum behind), in both the custom and the
// generic plan: not the 40,000 rows of each table.
func TestClaim_PlansWithoutStatistics(t *testing.T) {
	if testing.Short() {
		t.Skip("fills a queue of 40,000 messages")
	}
	t.Parallel()
	s := newTestStore(t)
	ctx := context.Background()
	const perDest, pairs = 20_000, 100
	fillQueue(t, s, "a.example", "a", perDest)
	fillQueue(t, s, "b.example", "b", perDest)
	var msgs, dests []string
	for i := 1; i <= pairs/2; i++ {
		msgs = append(msgs, fmt.Sprint("a", i), fmt.Sprint("b", i))
		dests = append(dests, "a.example", "b.example")
	}
	arr := func(xs []string, typ string) string {
		return "ARRAY[" + strings.Join(quoted(xs), ",") + "]::" + typ
	}
	now := "'" + t0.Add(time.Minute).Format(time.RFC3339Nano) + "'"
	until := "'" + t0.Add(time.Minute+leaseFor).Format(time.RFC3339Nano) + "'"
	for _, mode := range []string{"force_custom_plan", "force_generic_plan"} {
		tx, err := s.Pool().Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx) //nolint:errcheck // also after Fatal: the locks would keep the schema from being dropped
		explain := func(name, types, sql, args string, tables ...string) {
			t.Helper()
			if _, err := tx.Exec(ctx, "PREPARE "+name+" ("+types+") AS "+sql); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			var out []byte
			err := tx.QueryRow(ctx, "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE "+name+" ("+args+")").Scan(&out)
			if _, derr := tx.Exec(ctx, "DEALLOCATE "+name); derr != nil && err == nil {
				err = derr // prepared statements outlive the transaction
			}
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			var plans []struct {
				Plan planNode `json:"Plan"`
			}
			if err := json.Unmarshal(out, &plans); err != nil || len(plans) != 1 {
				t.Fatalf("%s: EXPLAIN output: %v: %s", name, err, out)
			}
			for _, table := range tables {
				rows, how := rowsRead(plans[0].Plan, table)
				t.Logf("%s, %s: %.0f %s rows read via %s", mode, name, rows, table, strings.Join(how, ", "))
				if rows > 4*pairs {
					t.Errorf("%s: %s read %.0f rows of %s for %d pairs", mode, name, rows, table, pairs)
				}
			}
		}
		if _, err := tx.Exec(ctx, "SET LOCAL plan_cache_mode = "+mode); err != nil {
			t.Fatal(err)
		}
		explain("lock", "text[], text[], timestamptz, int", s.q.lockDeliveries,
			fmt.Sprintf("%s, %s, %s, %d", arr(msgs, "text[]"), arr(dests, "text[]"), now, pairs), "delivery")
		explain("lease", "text[], text[], timestamptz, timestamptz, text", s.q.claimRecipients,
			fmt.Sprintf("%s, %s, %s, %s, 'w'", arr(msgs, "text[]"), arr(dests, "text[]"), now, until), "recipient")
		rows, err := tx.Query(ctx, expand(`SELECT ctid::text FROM {schema}.delivery WHERE message_id = ANY($1)`,
			pgx.Identifier{s.schema}.Sanitize()), msgs)
		if err != nil {
			t.Fatal(err)
		}
		tids, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil || len(tids) != pairs {
			t.Fatalf("ctids of the pairs: %d, %v", len(tids), err)
		}
		explain("refresh", "tid[]", s.q.refreshDeliveries, arr(tids, "tid[]"), "delivery", "recipient")
		explain("load", "text[]", s.q.selectRecipients, arr(msgs, "text[]"), "recipient")
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
	}
}
