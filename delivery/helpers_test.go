package delivery_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outboundmail/outbound/delivery"
)

// fakeDNS is a Resolver answering from maps, with *net.DNSError errors as
// net.Resolver returns them.
type fakeDNS struct {
	mx    map[string][]*net.MX
	mxErr map[string]error
	ip    map[string][]net.IPAddr
	ipErr map[string]error

	mu      sync.Mutex
	lookups []string // "MX name" / "A name", in order
}

func (f *fakeDNS) LookupMX(_ context.Context, name string) ([]*net.MX, error) {
	f.record("MX " + name)
	if err := f.mxErr[name]; err != nil {
		return nil, err
	}
	if mx, ok := f.mx[name]; ok {
		return mx, nil
	}
	return nil, notFound(name)
}

func (f *fakeDNS) LookupIPAddr(_ context.Context, host string) ([]net.IPAddr, error) {
	f.record("A " + host)
	if err := f.ipErr[host]; err != nil {
		return nil, err
	}
	if ips, ok := f.ip[host]; ok {
		return ips, nil
	}
	return nil, notFound(host)
}

func (f *fakeDNS) record(s string) {
	f.mu.Lock()
	f.lookups = append(f.lookups, s)
	f.mu.Unlock()
}

func notFound(name string) error {
	return &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func tempDNSError(name string) error {
	return &net.DNSError{Err: "server misbehaving", Name: name, IsTemporary: true}
}

func ips(addrs ...string) []net.IPAddr {
	var out []net.IPAddr
	for _, a := range addrs {
		out = append(out, net.IPAddr{IP: net.ParseIP(a)})
	}
	return out
}

// fakeNet maps the addresses the engine dials ("192.0.2.1:25") to real
// listeners on 127.0.0.1, and records the dial order. An address not in
// the map is dialled at a closed port: a real "connection refused".
type fakeNet struct {
	routes map[string]string
	closed string

	mu    sync.Mutex
	dials []string
}

func newFakeNet(t *testing.T) *fakeNet {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	return &fakeNet{routes: map[string]string{}, closed: closed}
}

func (n *fakeNet) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	n.mu.Lock()
	n.dials = append(n.dials, addr)
	to, ok := n.routes[addr]
	n.mu.Unlock()
	if !ok {
		to = n.closed
	}
	var d net.Dialer
	return d.DialContext(ctx, network, to)
}

func (n *fakeNet) Dials() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.dials...)
}

// testDeliverer returns a Deliverer for MX delivery of example.com to the
// server at addr, through 192.0.2.1, with timeouts short enough that a
// hang fails the test quickly.
func testDeliverer(t *testing.T, addr string) (*delivery.Deliverer, *fakeDNS, *fakeNet) {
	t.Helper()
	dns := &fakeDNS{
		mx: map[string][]*net.MX{"example.com": {{Host: "mx1.example.com.", Pref: 10}}},
		ip: map[string][]net.IPAddr{"mx1.example.com": ips("192.0.2.1")},
	}
	fn := newFakeNet(t)
	fn.routes["192.0.2.1:25"] = addr
	d := &delivery.Deliverer{
		Hostname:    "client.example.org",
		Resolver:    dns,
		DialContext: fn.DialContext,
		Timeouts:    shortTimeouts(10 * time.Second),
	}
	t.Cleanup(func() { d.Close() })
	return d, dns, fn
}

func shortTimeouts(d time.Duration) delivery.Timeouts {
	return delivery.Timeouts{
		Connect: d, Greeting: d, EHLO: d, STARTTLS: d, Mail: d, Rcpt: d, Data: d, Block: d, EndData: d,
	}
}

// testCtx bounds a test against hangs; nothing is timed with it.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func message(body string, rcpts ...string) *delivery.Message {
	m := &delivery.Message{From: "sender@example.org", Body: strings.NewReader(body), Size: int64(len(body))}
	for _, r := range rcpts {
		m.Recipients = append(m.Recipients, delivery.Recipient{Address: r})
	}
	return m
}

const testBody = "From: sender@example.org\r\nTo: rcpt@example.com\r\nSubject: test\r\n\r\nHello.\r\n"

// deliver runs one attempt and fails the test on a Go error.
func deliver(t *testing.T, d *delivery.Deliverer, dest string, msg *delivery.Message) *delivery.Report {
	t.Helper()
	rep, err := d.Deliver(testCtx(t), dest, msg)
	if err != nil {
		t.Fatalf("Deliver: %v", err)
	}
	if len(rep.Results) != len(msg.Recipients) {
		t.Fatalf("got %d results for %d recipients", len(rep.Results), len(msg.Recipients))
	}
	return rep
}

// want describes the expected Result of one recipient.
type want struct {
	class delivery.Class
	stage delivery.Stage
	code  int
}

func checkResults(t *testing.T, rep *delivery.Report, wants ...want) {
	t.Helper()
	for i, w := range wants {
		r := rep.Results[i]
		if r.Class != w.class || r.Stage != w.stage || r.Reply.Code != w.code {
			t.Errorf("result %d (%s): got %s at %q, reply %q, err %v; want %s at %q, code %d",
				i, r.Recipient, r.Class, r.Stage, r.Reply, r.Err, w.class, w.stage, w.code)
		}
	}
}

// asError returns the *delivery.Error in err, failing the test if absent.
func asError(t *testing.T, err error) *delivery.Error {
	t.Helper()
	var de *delivery.Error
	if !errors.As(err, &de) {
		t.Fatalf("error %v (%T) is not a *delivery.Error", err, err)
	}
	return de
}

func (w want) String() string { return fmt.Sprintf("%s/%s/%d", w.class, w.stage, w.code) }
