package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outboundmail/outbound/delivery/deliverytest"
)

// TestPostgresStore runs the commands with --store postgres://… (the URL
// from OUTBOUND_TEST_POSTGRES, as .ci/run sets it) in a fresh schema.
func TestPostgresStore(t *testing.T) {
	url := os.Getenv("OUTBOUND_TEST_POSTGRES")
	if url == "" {
		t.Skip("OUTBOUND_TEST_POSTGRES is not set (e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable); skipping")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Skipf("PostgreSQL unreachable: %v", err)
	}
	defer conn.Close(context.Background())
	var b [6]byte
	rand.Read(b[:])
	schema := "outbound_cli_test_" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		conn.Exec(context.Background(), "DROP SCHEMA "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
	})

	srv := deliverytest.NewServer(t, nil)
	c := newCLI(t)
	c.env["OUTBOUND_STORE"] = url
	c.env["OUTBOUND_STORE_SCHEMA"] = schema
	c.env["OUTBOUND_RELAY"] = srv.Addr
	c.env["OUTBOUND_TLS"] = "disabled"
	for range 2 {
		if code, _, errOut := c.run("outbound", tMessage, "send", "--queue-only", "-t"); code != 0 {
			t.Fatalf("send: exit %d: %s", code, errOut)
		}
	}
	if q := c.queue(); len(q) != 2 || len(q[0].Recipients) != 3 {
		t.Fatalf("queue = %+v, want 2 messages of 3 recipients", q)
	}
	if code, _, errOut := c.run("outbound", "", "run", "--drain", "--startup-ramp", "-1s"); code != 0 {
		t.Fatalf("run --drain: exit %d: %s", code, errOut)
	}
	rcpts := 0
	for _, m := range srv.Messages() {
		rcpts += len(m.To)
	}
	if rcpts != 6 {
		t.Errorf("server received %d recipients, want 6", rcpts)
	}
	if q := c.queue(); len(q) != 0 {
		t.Errorf("queue after drain: %+v", q)
	}
	if _, err := os.Stat(c.spool); err == nil {
		t.Error("the embedded spool was created although --store names PostgreSQL")
	}
	if code, _, errOut := c.run("outbound", "", "queue", "--store", "mysql://x"); code != exitConfig || !strings.Contains(errOut, "postgres://") {
		t.Errorf("--store mysql://: exit %d %q", code, errOut)
	}
}
