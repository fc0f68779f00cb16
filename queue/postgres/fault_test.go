package postgres

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/outboundmail/outbound/queue"
)

// commitCutter is a TCP proxy in front of PostgreSQL that, once armed,
// lets the next COMMIT reach the server, waits for the server's answer (so
// the transaction is committed), and then drops the client's connection
// without passing the answer on: the client cannot know whether its commit
// happened.
type commitCutter struct {
	ln     net.Listener
	target string
	armed  atomic.Bool
	cut    atomic.Int32 // commits cut so far
	wg     sync.WaitGroup
}

func newCommitCutter(t *testing.T, target string) *commitCutter {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &commitCutter{ln: ln, target: target}
	c.wg.Go(c.accept)
	t.Cleanup(func() { ln.Close(); c.wg.Wait() })
	return c
}

func (c *commitCutter) accept() {
	for {
		client, err := c.ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", c.target)
		if err != nil {
			client.Close()
			continue
		}
		c.wg.Go(func() { c.relay(client, server) })
	}
}

// relay copies server → client as is and client → server message by
// message (PostgreSQL frontend protocol: a startup packet without a type
// byte, then type byte + int32 length + body).
func (c *commitCutter) relay(client, server net.Conn) {
	defer client.Close()
	defer server.Close()
	var (
		mu     sync.Mutex // guards cutting against the server → client copy
		cutNow bool
		answer = make(chan struct{}, 1)
	)
	go func() {
		buf := make([]byte, 32<<10)
		for {
			n, err := server.Read(buf)
			mu.Lock()
			if cutNow {
				answer <- struct{}{}
				mu.Unlock()
				return
			}
			mu.Unlock()
			if n > 0 {
				if _, werr := client.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				client.Close()
				return
			}
		}
	}()
	var length [4]byte
	if _, err := io.ReadFull(client, length[:]); err != nil {
		return
	}
	startup := make([]byte, binary.BigEndian.Uint32(length[:])-4)
	if _, err := io.ReadFull(client, startup); err != nil {
		return
	}
	if _, err := server.Write(append(length[:], startup...)); err != nil {
		return
	}
	for {
		var head [5]byte
		if _, err := io.ReadFull(client, head[:]); err != nil {
			return
		}
		body := make([]byte, binary.BigEndian.Uint32(head[1:])-4)
		if _, err := io.ReadFull(client, body); err != nil {
			return
		}
		isCommit := head[0] == 'Q' && bytes.EqualFold(bytes.TrimRight(body, "\x00"), []byte("commit"))
		if isCommit && c.armed.CompareAndSwap(true, false) {
			mu.Lock()
			cutNow = true
			mu.Unlock()
			if _, err := server.Write(append(head[:], body...)); err != nil {
				return
			}
			<-answer // the server has committed and answered
			c.cut.Add(1)
			return // closes both connections; the answer is never relayed
		}
		if _, err := server.Write(append(head[:], body...)); err != nil {
			return
		}
	}
}

// TestEnqueue_CommitOutcomeUnknown: when the connection breaks after the
// server committed but before the client heard so, Enqueue looks again and
// reports the message as stored, and nothing is stored twice.
func TestEnqueue_CommitOutcomeUnknown(t *testing.T) {
	t.Parallel()
	conn := needDB(t)
	u, err := url.Parse(conn)
	if err != nil {
		t.Skipf("%s is not a URL; this test needs one to put a proxy in front", testEnv)
	}
	proxy := newCommitCutter(t, u.Host)
	u.Host = proxy.ln.Addr().String()
	schema := newSchema(t)
	s, err := openSmall(u.String(), &Options{Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()

	proxy.armed.Store(true)
	m := testMessage("unknown-1", "a@x.example")
	id, err := s.Enqueue(ctx, queue.EnqueueParams{Message: m, Body: bytes.NewReader([]byte("hi\r\n"))})
	if proxy.cut.Load() != 1 {
		t.Fatal("the proxy did not cut a commit")
	}
	if err != nil || id != "unknown-1" {
		t.Fatalf("Enqueue after a lost commit answer = %q, %v; want the ID and no error", id, err)
	}
	msgs, err := s.List(ctx, queue.ListParams{})
	if err != nil || len(msgs) != 1 {
		t.Fatalf("List = %d messages, %v; want exactly 1", len(msgs), err)
	}
}

// TestRetryable: transactions are rerun after deadlocks and serialization
// failures only; other errors, including a failed COMMIT, are returned.
func TestRetryable(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&pgconn.PgError{Code: "40P01"}, true},
		{fmt.Errorf("claim: %w", &pgconn.PgError{Code: "40001"}), true},
		{&pgconn.PgError{Code: "23505"}, false},
		{&pgconn.PgError{Code: "57014"}, false}, // statement timeout: the caller's limit
		{errors.New("some error"), false},
		{io.ErrUnexpectedEOF, false},
	} {
		if got := retryable(tc.err); got != tc.want {
			t.Errorf("retryable(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
