package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outboundmail/outbound/queue"
	"github.com/outboundmail/outbound/queue/queuetest"
)

// testEnv names the environment variable with the connection string of the
// database the tests use, e.g.
// postgres://postgres@127.0.0.1:5432/test?sslmode=disable.
const testEnv = "OUTBOUND_TEST_POSTGRES"

// testDB returns the connection string of the test database, or skips the
// test when it is unset or the server does not answer. The answer is
// computed once per test binary.
var testDB = sync.OnceValues(func() (string, string) {
	conn := os.Getenv(testEnv)
	if conn == "" {
		return "", testEnv + " is not set (e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable); skipping PostgreSQL tests"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, conn)
	if err != nil {
		return "", "PostgreSQL at " + testEnv + " is unreachable (" + err.Error() + "); skipping"
	}
	c.Close(ctx)
	return conn, ""
})

func needDB(t testing.TB) string {
	t.Helper()
	conn, skip := testDB()
	if skip != "" {
		t.Skip(skip)
	}
	return conn
}

// newSchema returns a fresh schema name, dropped when the test ends.
func newSchema(t testing.TB) string {
	t.Helper()
	conn := needDB(t)
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	schema := "outbound_test_" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, conn)
		if err != nil {
			t.Errorf("dropping schema %s: %v", schema, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP SCHEMA "+pgx.Identifier{schema}.Sanitize()+" CASCADE"); err != nil {
			t.Errorf("dropping schema %s: %v", schema, err)
		}
	})
	return schema
}

// openSchema opens a store on schema with a small pool of its own.
func openSchema(t testing.TB, schema string, opts *Options) *Store {
	t.Helper()
	o := Options{Schema: schema}
	if opts != nil {
		o = *opts
		o.Schema = schema
	}
	s, err := openSmall(needDB(t), &o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil && !errors.Is(err, queue.ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// openSmall is Open with a pool of at most 4 connections, so that parallel
// tests stay within the server's connection limit.
func openSmall(conn string, opts *Options) (*Store, error) {
	ctx := context.Background()
	cfg, err := pgxpool.ParseConfig(conn)
	if err != nil {
		return nil, err
	}
	cfg.MaxConns = 4
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	s, err := New(ctx, pool, opts)
	if err != nil {
		pool.Close()
		return nil, err
	}
	s.ownPool = true
	return s, nil
}

// newTestStore returns a store on a fresh schema of its own.
func newTestStore(t testing.TB) *Store {
	t.Helper()
	return openSchema(t, newSchema(t), nil)
}

func TestConformance(t *testing.T) {
	needDB(t)
	queuetest.Run(t, func(t *testing.T) queue.Store { return newTestStore(t) })
}

func TestConformanceReopen(t *testing.T) {
	conn := needDB(t)
	queuetest.RunReopen(t, func(t *testing.T) queuetest.Opener {
		schema := newSchema(t)
		return func() (queue.Store, error) {
			return openSmall(conn, &Options{Schema: schema})
		}
	})
}

// TestNew_BorrowedPool checks that a store on the caller's pool leaves it
// open at Close, and that Open on an existing schema migrates nothing twice.
func TestNew_BorrowedPool(t *testing.T) {
	schema := newSchema(t)
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, needDB(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	for range 2 {
		s, err := New(ctx, pool, &Options{Schema: schema})
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if _, err := s.Get(ctx, "x"); !errors.Is(err, queue.ErrClosed) {
			t.Fatalf("Get after Close = %v, want ErrClosed", err)
		}
	}
	var n int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{schema, "schema_migration"}.Sanitize()).Scan(&n); err != nil {
		t.Fatalf("pool closed with the store? %v", err)
	}
	if n != 1 {
		t.Fatalf("schema_migration has %d rows, want 1", n)
	}
}

// TestOpen_RuntimeRoleWithoutDDL: a role that may only read and write the
// tables (set up by a migration role) can open an up-to-date schema.
func TestOpen_RuntimeRoleWithoutDDL(t *testing.T) {
	t.Parallel()
	schema := newSchema(t)
	admin := openSchema(t, schema, nil) // migrates
	ctx := context.Background()
	role := schema + "_dml"
	sch, r := pgx.Identifier{schema}.Sanitize(), pgx.Identifier{role}.Sanitize()
	for _, q := range []string{
		"CREATE ROLE " + r + " LOGIN",
		"GRANT USAGE ON SCHEMA " + sch + " TO " + r,
		"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA " + sch + " TO " + r,
		"GRANT USAGE ON ALL SEQUENCES IN SCHEMA " + sch + " TO " + r,
	} {
		if _, err := admin.Pool().Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	t.Cleanup(func() {
		for _, q := range []string{"DROP OWNED BY " + r, "DROP ROLE " + r} {
			if _, err := admin.Pool().Exec(context.Background(), q); err != nil {
				t.Errorf("%s: %v", q, err)
			}
		}
	})
	cfg, err := pgxpool.ParseConfig(needDB(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.User = role
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	s, err := New(ctx, pool, &Options{Schema: schema})
	if err != nil {
		t.Fatalf("New as a DML-only role: %v", err)
	}
	defer s.Close()
	mustEnqueue(t, s, testMessage("m1", "a@x.example"))
	if ls := mustClaim(t, s, t0, "w", 1); len(ls) != 1 {
		t.Fatalf("claimed %d leases as a DML-only role, want 1", len(ls))
	}
}
