package queue_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/jonboulle/clockwork"

	"github.com/outboundmail/outbound/delivery"
	"github.com/outboundmail/outbound/delivery/deliverytest"
	"github.com/outboundmail/outbound/queue"
)

// fakeDNS is the resolver of the end-to-end tests: each domain has one MX
// host, mx.<domain>, on its own loopback address 127.0.0.N; dial sends
// connections for 127.0.0.N:25 to the test server registered for N.
type fakeDNS struct {
	ips   map[string]string // domain → 127.0.0.N
	addrs map[string]string // "127.0.0.N:25" → the server's real address
}

func newFakeDNS() *fakeDNS {
	return &fakeDNS{ips: map[string]string{}, addrs: map[string]string{}}
}

// route makes domain's MX the server listening at addr.
func (d *fakeDNS) route(domain, addr string) {
	ip := fmt.Sprintf("127.0.0.%d", len(d.ips)+2)
	d.ips[domain] = ip
	d.addrs[ip+":25"] = addr
}

func (d *fakeDNS) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	name = strings.TrimSuffix(name, ".")
	if _, ok := d.ips[name]; !ok {
		return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
	}
	return []*net.MX{{Host: "mx." + name + ".", Pref: 10}}, nil
}

func (d *fakeDNS) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	ip, ok := d.ips[strings.TrimPrefix(strings.TrimSuffix(host, "."), "mx.")]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return []net.IPAddr{{IP: net.ParseIP(ip)}}, nil
}

func (d *fakeDNS) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	real, ok := d.addrs[addr]
	if !ok {
		return nil, &net.OpError{Op: "dial", Net: network, Err: fmt.Errorf("connection refused (no test server at %s)", addr)}
	}
	var nd net.Dialer
	return nd.DialContext(ctx, network, real)
}

// The scheduler with the real delivery engine against real SMTP servers on
// loopback, on a fake clock: a greylisting server, a server that rejects one
// recipient, one that greets with 421, and the sender's own server, which
// receives the bounce.
func TestSMTP_EndToEnd(t *testing.T) {
	dns := newFakeDNS()
	grey := deliverytest.NewServer(t, &deliverytest.Script{Greylist: 1})
	mixed := deliverytest.NewServer(t, &deliverytest.Script{Rcpt: deliverytest.RejectRcpt(550, smtp.EnhancedCode{5, 1, 1}, "No such user", "gone@mixed.test")})
	down := deliverytest.NewRawServer(t, func(c *deliverytest.RawConn) { c.Reply("421 4.3.2 mx.down.test too busy, try later") })
	sender := deliverytest.NewServer(t, nil)
	dns.route("grey.test", grey.Addr)
	dns.route("mixed.test", mixed.Addr)
	dns.route("down.test", down.Addr())
	dns.route("app.test", sender.Addr)

	clock := clockwork.NewFakeClockAt(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	d := &delivery.Deliverer{Hostname: "client.test", Resolver: dns, DialContext: dns.dial}
	defer d.Close()
	store := openStore(t, t.TempDir())
	q := newQueue(t, queue.Config{Store: store, Deliverer: d, Clock: clock, StartupRamp: -1})
	ctx := context.Background()
	_, err := q.Enqueue(ctx, queue.Envelope{From: "app@app.test", To: []string{"a@grey.test", "b@mixed.test", "gone@mixed.test", "c@down.test"}},
		strings.NewReader(testBody("app@app.test", "a@grey.test", "e2e")))
	if err != nil {
		t.Fatal(err)
	}

	st, err := q.RunOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// grey: deferred; mixed: b delivered, gone bounced; down: deferred;
	// then the bounce, delivered to app.test with MAIL FROM:<>.
	if want := (queue.Stats{Attempts: 4, Delivered: 2, Deferred: 2, Bounced: 1}); st != want {
		t.Fatalf("first pass: %+v, want %+v", st, want)
	}
	if msgs := sender.Messages(); len(msgs) != 1 || msgs[0].From != "" || !strings.Contains(string(msgs[0].Data), "gone@mixed.test") {
		t.Fatalf("sender's server got %+v, want one notification from <> about gone@mixed.test", msgs)
	}

	// Four minutes later nothing is due: no server sees a connection.
	clock.Advance(4 * time.Minute)
	if st, err := q.RunOnce(ctx); err != nil || st.Attempts != 0 {
		t.Fatalf("pass at +4m: %+v, %v; want no attempt before the 5-minute minimum", st, err)
	}
	if n := grey.Sessions(); n != 1 {
		t.Fatalf("greylisting server saw %d connections, want 1", n)
	}

	// After the minimum backoff (+ at most 10% jitter) the greylisted
	// recipient is delivered, and the down destination gets one probe.
	clock.Advance(2 * time.Minute)
	st, err = q.RunOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Delivered != 1 || st.Deferred != 1 || len(grey.Messages()) != 1 || down.Sessions() != 2 {
		t.Fatalf("pass at +6m: %+v; grey got %d messages, down saw %d connections", st, len(grey.Messages()), down.Sessions())
	}
}

// Property 3 over real TCP: a destination whose greeting is 421 sees about
// as many connections in 24 hours with 1,000 messages waiting as with one.
// The queue runs one pass per virtual minute on a fake clock; the server
// counts the connections it accepted.
func TestSMTP_DownDestinationConnections(t *testing.T) {
	if testing.Short() {
		t.Skip("1,440 queue passes against a real server")
	}
	big := 1000
	if raceEnabled {
		big = 200
	}
	conns := map[int]int{}
	for _, n := range []int{1, big} {
		down := deliverytest.NewRawServer(t, func(c *deliverytest.RawConn) { c.Reply("421 4.3.2 mx.down.test too busy, try later") })
		dns := newFakeDNS()
		dns.route("down.test", down.Addr())
		clock := clockwork.NewFakeClockAt(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
		d := &delivery.Deliverer{Hostname: "client.test", Resolver: dns, DialContext: dns.dial}
		q := newQueue(t, queue.Config{Store: openStore(t, spoolDir(t, true)), Deliverer: d, Clock: clock, StartupRamp: -1})
		enqueueMany(t, q, n, "app@app.test", func(i int) string { return rcptName(i, "down.test") })
		for range 24 * 60 {
			if _, err := q.RunOnce(context.Background()); err != nil {
				t.Fatal(err)
			}
			clock.Advance(time.Minute)
		}
		d.Close()
		conns[n] = down.Sessions()
		t.Logf("%d messages for a destination greeting with 421, 24 virtual hours: %d connections", n, conns[n])
	}
	if conns[big] > conns[1]+2 {
		t.Fatalf("%d connections with %d messages, %d with one", conns[big], big, conns[1])
	}
}
