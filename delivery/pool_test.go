package delivery_test

import (
	"sync"
	"testing"
	"time"

	"github.com/outboundmail/outbound/delivery"
	"github.com/outboundmail/outbound/delivery/deliverytest"
)

// TestPool_Reuse: consecutive attempts to a destination share a
// connection; after a success the next MAIL follows directly.
func TestPool_Reuse(t *testing.T) {
	srv := deliverytest.NewServer(t, nil)
	d, _, fn := testDeliverer(t, srv.Addr)
	for range 3 {
		rep := deliver(t, d, "example.com", message(testBody, "a@example.com"))
		checkResults(t, rep, want{D, delivery.StageEndData, 250})
	}
	if srv.Sessions() != 1 || len(srv.Messages()) != 3 || len(fn.Dials()) != 1 {
		t.Errorf("%d sessions, %d messages, %d dials", srv.Sessions(), len(srv.Messages()), len(fn.Dials()))
	}
}

func TestPool_Limits(t *testing.T) {
	tests := []struct {
		name     string
		set      func(*delivery.Deliverer)
		sessions int
	}{
		{"MaxMessagesPerConn", func(d *delivery.Deliverer) { d.MaxMessagesPerConn = 2 }, 2},
		{"no reuse by MaxMessagesPerConn", func(d *delivery.Deliverer) { d.MaxMessagesPerConn = 1 }, 3},
		{"expired", func(d *delivery.Deliverer) { d.IdleTimeout = time.Nanosecond }, 3},
		{"no idle", func(d *delivery.Deliverer) { d.MaxIdlePerDestination = -1 }, 3},
		{"no reuse by IdleTimeout", func(d *delivery.Deliverer) { d.IdleTimeout = -1 }, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := deliverytest.NewServer(t, nil)
			d, _, _ := testDeliverer(t, srv.Addr)
			tt.set(d)
			for range 3 {
				rep := deliver(t, d, "example.com", message(testBody, "a@example.com"))
				checkResults(t, rep, want{D, delivery.StageEndData, 250})
			}
			if srv.Sessions() != tt.sessions {
				t.Errorf("sessions = %d, want %d", srv.Sessions(), tt.sessions)
			}
		})
	}
}

// TestPool_DeadIdleConnection: a server that closed an idle connection
// (silently, or with a 421) costs a reconnect within the same attempt, not
// a deferral: no reply to this message was seen.
func TestPool_DeadIdleConnection(t *testing.T) {
	for _, farewell := range []string{"", "421 4.4.2 idle too long"} {
		srv := deliverytest.NewRawServer(t, func(c *deliverytest.RawConn) {
			if c.Session() > 1 {
				rawScript{}.serve(c)
				return
			}
			c.Greet()
			c.HandleEHLO()
			c.HandleEHLO()
			for _, cmd := range []string{"MAIL", "RCPT"} {
				c.Expect(cmd)
				c.Reply("250 ok")
			}
			c.Expect("DATA")
			c.Reply("354 go")
			readWireData(c)
			c.Reply("250 ok")
			if farewell != "" {
				c.Reply(farewell)
			}
		})
		d, _, _ := testDeliverer(t, srv.Addr())
		for i := range 2 {
			rep := deliver(t, d, "example.com", message(testBody, "a@example.com"))
			checkResults(t, rep, want{D, delivery.StageEndData, 250})
			if rep.DestinationUnavailable {
				t.Errorf("%q, attempt %d: destination unavailable", farewell, i)
			}
		}
		if srv.Sessions() != 2 {
			t.Errorf("%q: sessions = %d, want 2", farewell, srv.Sessions())
		}
	}
}

// TestPool_Close: Close says QUIT on idle connections.
func TestPool_Close(t *testing.T) {
	quit := make(chan struct{})
	srv := rawServer(t, rawScript{quit: quit})
	d, _, _ := testDeliverer(t, srv.Addr())
	deliver(t, d, "example.com", message(testBody, "a@example.com"))
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-quit:
	case <-testCtx(t).Done():
		t.Fatal("no QUIT after Close")
	}
}

// TestPool_MaxConnsPerDestination: concurrent attempts share at most
// MaxConnsPerDestination connections; the others wait for one.
func TestPool_MaxConnsPerDestination(t *testing.T) {
	srv := deliverytest.NewServer(t, nil)
	d, _, _ := testDeliverer(t, srv.Addr)
	d.MaxConnsPerDestination, d.MaxIdlePerDestination = 3, 3
	var wg sync.WaitGroup
	for range 24 {
		wg.Go(func() {
			rep, err := d.Deliver(testCtx(t), "example.com", message(testBody, "a@example.com"))
			if err != nil || rep.Results[0].Class != delivery.Delivered {
				t.Errorf("Deliver: %v, %+v", err, rep)
			}
		})
	}
	wg.Wait()
	if s := srv.Sessions(); s > 3 || len(srv.Messages()) != 24 {
		t.Errorf("%d sessions (limit 3), %d messages", s, len(srv.Messages()))
	}
}
