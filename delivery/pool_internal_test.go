package delivery

import (
	"bufio"
	"context"
	"errors"
	"net"
	"testing"
	"testing/synctest"
	"time"
)

// pipeSession returns a session over an in-memory pipe, and a channel
// that receives each line written to the other end.
func pipeSession(t *testing.T, dest string) (*session, <-chan string) {
	client, server := net.Pipe()
	t.Cleanup(func() { client.Close(); server.Close() })
	lines := make(chan string, 4)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(server)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	return &session{dest: dest, raw: client, wc: &wireConn{Conn: client}}, lines
}

var testLimits = poolLimits{maxConns: 1, maxMsgs: 10, idle: 10 * time.Second, maxIdle: 1}

// TestPool_WaitsForSlot: at the limit, get waits for a put (which hands
// over the idle session) or for its ctx.
func TestPool_WaitsForSlot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var p pool
		ctx := t.Context()
		if s, err := p.get(ctx, "d", testLimits, true); s != nil || err != nil {
			t.Fatalf("first get = %v, %v; want a reserved slot", s, err)
		}
		got := make(chan *session)
		go func() {
			s, err := p.get(ctx, "d", testLimits, true)
			if err != nil {
				t.Error(err)
			}
			got <- s
		}()
		synctest.Wait()
		select {
		case <-got:
			t.Fatal("second get did not wait")
		default:
		}
		s, _ := pipeSession(t, "d")
		p.put(s, testLimits)
		if g := <-got; g != s {
			t.Fatalf("waiter got %v, want the idle session", g)
		}

		// At the limit again: a waiter gives up with its ctx.
		cctx, cancel := context.WithCancel(ctx)
		errc := make(chan error)
		go func() {
			_, err := p.get(cctx, "d", testLimits, true)
			errc <- err
		}()
		synctest.Wait()
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v", err)
		}
		p.mu.Lock()
		waiters := len(p.dests["d"].waiters)
		p.mu.Unlock()
		if waiters != 0 {
			t.Errorf("%d waiters left", waiters)
		}
	})
}

// TestPool_IdleExpiry: an idle session is closed, with QUIT, when its
// IdleTimeout passes, and its slot is free again.
func TestPool_IdleExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var p pool
		if _, err := p.get(t.Context(), "d", testLimits, true); err != nil {
			t.Fatal(err)
		}
		s, lines := pipeSession(t, "d")
		p.put(s, testLimits)
		if p.idleCount("d") != 1 {
			t.Fatal("session not kept")
		}
		<-time.After(testLimits.idle + time.Second) // fake time: the bubble's clock
		synctest.Wait()
		if n := p.idleCount("d"); n != 0 {
			t.Errorf("%d idle after the timeout", n)
		}
		if l := <-lines; l != "QUIT" {
			t.Errorf("got %q, want QUIT", l)
		}
		if s2, err := p.get(t.Context(), "d", testLimits, true); s2 != nil || err != nil {
			t.Errorf("get after expiry = %v, %v; want a new slot", s2, err)
		}
	})
}

// TestPool_NotKept: broken, worn out or desynced sessions are closed, and
// free their slot.
func TestPool_NotKept(t *testing.T) {
	for name, spoil := range map[string]func(*session){
		"broken":    func(s *session) { s.broken = true },
		"worn out":  func(s *session) { s.transactions = testLimits.maxMsgs },
		"desynced":  func(s *session) { s.wc.unsolicited = []byte("250 extra\r\n") },
		"kept (ok)": func(*session) {},
	} {
		var p pool
		p.get(t.Context(), "d", testLimits, true)
		s, _ := pipeSession(t, "d")
		spoil(s)
		p.put(s, testLimits)
		want := 0
		if name == "kept (ok)" {
			want = 1
		}
		if n := p.idleCount("d"); n != want {
			t.Errorf("%s: %d idle, want %d", name, n, want)
		}
		p.closeIdle()
		p.mu.Lock()
		if len(p.dests) != 0 {
			t.Errorf("%s: entries left: %v", name, p.dests)
		}
		p.mu.Unlock()
	}
}
