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
// lets the next transaction that executes a statement run to its end on the
// server (a COMMIT, or a statement that is a transaction by itself), and
// then drops the client's connection instead of passing on the server's
// answer: the client cannot know whether its commit happened.
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

// relay copies messages between client and server (PostgreSQL protocol:
// the client's startup packet has no type byte; every other message is a
// type byte, an int32 length and a body). Once the armed proxy has seen
// this client execute something (Execute, or a simple Query), the server's
// next ReadyForQuery that reports no transaction open ('I') means the
// transaction has ended there, committed: that answer is dropped, and both
// connections with it.
func (c *commitCutter) relay(client, server net.Conn) {
	defer client.Close()
	defer server.Close()
	var executing atomic.Bool // this client's transaction is the one to cut
	go func() {
		defer client.Close()
		defer server.Close()
		for {
			head, body, err := readMessage(server)
			if err != nil {
				return
			}
			if head[0] == 'Z' && bytes.Equal(body, []byte{'I'}) && executing.Load() {
				c.cut.Add(1)
				return // the answer is never relayed
			}
			if _, err := client.Write(append(head[:], body...)); err != nil {
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
		head, body, err := readMessage(client)
		if err != nil {
			return
		}
		if (head[0] == 'E' || head[0] == 'Q') && c.armed.CompareAndSwap(true, false) {
			executing.Store(true)
		}
		if _, err := server.Write(append(head[:], body...)); err != nil {
			return
		}
	}
}

// readMessage reads one typed protocol message.
func readMessage(r io.Reader) (head [5]byte, body []byte, err error) {
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return head, nil, err
	}
	body = make([]byte, binary.BigEndian.Uint32(head[1:])-4)
	_, err = io.ReadFull(r, body)
	return head, body, err
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
