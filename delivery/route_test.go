package delivery_test

import (
	"errors"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/outboundmail/outbound/delivery"
	"github.com/outboundmail/outbound/delivery/deliverytest"
)

// TestRoute_MXOrder: lower preference first, equal preferences shuffled
// with the Deliverer's source (RFC 5321 §5.1).
func TestRoute_MXOrder(t *testing.T) {
	seen := map[string]int{}
	for seed := range uint64(40) {
		d, dns, fn := testDeliverer(t, "")
		d.Rand = rand.NewPCG(seed, 1)
		d.MaxAddresses = 10
		dns.mx["example.com"] = []*net.MX{{Host: "b.example.com.", Pref: 20}, {Host: "a1.example.com.", Pref: 10}, {Host: "a2.example.com.", Pref: 10}}
		dns.ip = map[string][]net.IPAddr{"a1.example.com": ips("192.0.2.1"), "a2.example.com": ips("192.0.2.2"), "b.example.com": ips("192.0.2.3", "2001:db8::3")}
		rep := deliver(t, d, "example.com", message(testBody, "a@example.com"))
		checkResults(t, rep, want{T, delivery.StageConnect, 0})
		dials := fn.Dials()
		if len(dials) != 4 || dials[2] != "192.0.2.3:25" || dials[3] != "[2001:db8::3]:25" {
			t.Fatalf("seed %d: dials %q", seed, dials)
		}
		seen[strings.Join(dials[:2], " ")]++
	}
	if len(seen) != 2 {
		t.Errorf("equal-preference orders seen: %v, want both", seen)
	}
}

func TestRoute_DNSOutcomes(t *testing.T) {
	tests := []struct {
		name   string
		mx     []*net.MX
		mxErr  error
		want   want
		enh    delivery.EnhancedCode
		is     error
		down   bool
		dialed bool
	}{
		{"null MX", []*net.MX{{Host: ".", Pref: 0}}, nil, want{P, delivery.StageResolve, 556}, delivery.EnhancedCode{5, 1, 10}, delivery.ErrNullMX, false, false},
		{"NXDOMAIN", nil, nil, want{P, delivery.StageResolve, 550}, delivery.EnhancedCode{5, 1, 2}, delivery.ErrNoSuchDomain, false, false},
		{"temporary DNS failure", nil, tempDNSError("example.com"), want{T, delivery.StageResolve, 451}, delivery.EnhancedCode{4, 4, 3}, nil, true, false},
		{"MX host without address", []*net.MX{{Host: "gone.example.com.", Pref: 5}}, nil, want{T, delivery.StageResolve, 451}, delivery.EnhancedCode{4, 4, 3}, nil, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, dns, fn := testDeliverer(t, "")
			delete(dns.mx, "example.com")
			if tt.mx != nil {
				dns.mx["example.com"] = tt.mx
			}
			if tt.mxErr != nil {
				dns.mxErr = map[string]error{"example.com": tt.mxErr}
			}
			// The domain's own address exists only for the MX-present case,
			// where it must not be used (RFC 5321 §5.1).
			if tt.mx != nil {
				dns.ip["example.com"] = ips("192.0.2.99")
			}
			rep := deliver(t, d, "example.com", message(testBody, "a@example.com", "b@example.com"))
			checkResults(t, rep, tt.want, tt.want)
			if e := rep.Results[0].Reply.Enhanced; e != tt.enh {
				t.Errorf("enhanced = %v, want %v", e, tt.enh)
			}
			if tt.is != nil && !errors.Is(rep.Results[0].Err, tt.is) {
				t.Errorf("err = %v, want %v", rep.Results[0].Err, tt.is)
			}
			if rep.DestinationUnavailable != tt.down {
				t.Errorf("DestinationUnavailable = %v", rep.DestinationUnavailable)
			}
			if slices.Contains(dns.lookups, "A example.com") && tt.mx != nil {
				t.Errorf("fell back to the domain's address: %q", dns.lookups)
			}
			if len(fn.Dials()) != 0 {
				t.Errorf("dialled %q", fn.Dials())
			}
		})
	}
}

// TestRoute_ImplicitMX: no MX records, so the domain's own address.
func TestRoute_ImplicitMX(t *testing.T) {
	srv := deliverytest.NewServer(t, nil)
	d, dns, fn := testDeliverer(t, "")
	delete(dns.mx, "example.com")
	dns.ip["example.com"] = ips("192.0.2.7")
	fn.routes["192.0.2.7:25"] = srv.Addr
	rep := deliver(t, d, "example.com", message(testBody, "a@example.com"))
	checkResults(t, rep, want{D, delivery.StageEndData, 250})
	if h := rep.Results[0].Host; h != "example.com[192.0.2.7]:25" {
		t.Errorf("host = %q", h)
	}
}

// TestRoute_AddressLiteral: "user@[192.0.2.9]" goes to that address, with
// no DNS at all (RFC 5321 §4.1.3), on MXPort.
func TestRoute_AddressLiteral(t *testing.T) {
	srv := deliverytest.NewServer(t, nil)
	d, dns, fn := testDeliverer(t, "")
	d.MXPort = 2525
	fn.routes["192.0.2.9:2525"] = srv.Addr
	dest := d.Destination("a@[192.0.2.9]")
	if dest != "[192.0.2.9]" {
		t.Fatalf("Destination = %q", dest)
	}
	rep := deliver(t, d, dest, message(testBody, "a@[192.0.2.9]"))
	checkResults(t, rep, want{D, delivery.StageEndData, 250})
	if len(dns.lookups) != 0 {
		t.Errorf("DNS lookups %q", dns.lookups)
	}
}

// TestRoute_MaxAddresses: at most MaxAddresses connection attempts, and
// never fewer than two.
func TestRoute_MaxAddresses(t *testing.T) {
	for _, tt := range []struct{ max, dials int }{{0, 5}, {1, 2}, {3, 3}} {
		d, dns, fn := testDeliverer(t, "")
		d.MaxAddresses = tt.max
		var mxs []*net.MX
		for i := range 7 {
			h := string(rune('a'+i)) + ".example.com"
			mxs = append(mxs, &net.MX{Host: h, Pref: uint16(i)})
			dns.ip[h] = ips("192.0.2." + string(rune('1'+i)))
		}
		dns.mx["example.com"] = mxs
		rep := deliver(t, d, "example.com", message(testBody, "a@example.com"))
		checkResults(t, rep, want{T, delivery.StageConnect, 0})
		if got := len(fn.Dials()); got != tt.dials {
			t.Errorf("MaxAddresses %d: %d dials, want %d", tt.max, got, tt.dials)
		}
		if !rep.DestinationUnavailable || rep.DestinationStage != delivery.StageConnect {
			t.Errorf("destination verdict: %v %s", rep.DestinationUnavailable, rep.DestinationStage)
		}
		var ne *net.OpError
		if !errors.As(rep.DestinationErr, &ne) {
			t.Errorf("DestinationErr = %v, want a *net.OpError inside", rep.DestinationErr)
		}
	}
}

// TestRoute_NextHost: a host that fails at connection level (5xx greeting,
// 4xx EHLO, refused) is skipped, and the recipient is not bounced for it
// (Postfix smtp_skip_5xx_greeting; RELIABILITY §7 item 16).
func TestRoute_NextHost(t *testing.T) {
	bad554 := deliverytest.NewRawServer(t, func(c *deliverytest.RawConn) {
		c.Reply("554 5.7.1 go away")
		c.Expect("QUIT")
	})
	badEHLO := deliverytest.NewRawServer(t, func(c *deliverytest.RawConn) {
		c.Greet()
		c.Expect("EHLO")
		c.Reply("421 4.3.2 not now")
	})
	good := deliverytest.NewServer(t, nil)
	d, dns, fn := testDeliverer(t, "")
	dns.mx["example.com"] = []*net.MX{{Host: "a.example.com", Pref: 1}, {Host: "b.example.com", Pref: 2}, {Host: "c.example.com", Pref: 3}, {Host: "d.example.com", Pref: 4}}
	dns.ip = map[string][]net.IPAddr{"a.example.com": ips("192.0.2.1"), "b.example.com": ips("192.0.2.2"), "c.example.com": ips("192.0.2.3"), "d.example.com": ips("192.0.2.4")}
	fn.routes["192.0.2.1:25"] = bad554.Addr()
	fn.routes["192.0.2.2:25"] = badEHLO.Addr()
	// 192.0.2.3 refuses the connection.
	fn.routes["192.0.2.4:25"] = good.Addr
	rep := deliver(t, d, "example.com", message(testBody, "a@example.com"))
	checkResults(t, rep, want{D, delivery.StageEndData, 250})
	if h := rep.Results[0].Host; h != "d.example.com[192.0.2.4]:25" {
		t.Errorf("host = %q", h)
	}
	if rep.DestinationUnavailable {
		t.Error("destination unavailable after a delivery")
	}
}

// TestRoute_AllHostsRefuse: when every host fails at the connection level,
// the recipients are deferred and the destination is unavailable, with the
// last host's reply.
func TestRoute_AllHostsRefuse(t *testing.T) {
	srv := deliverytest.NewRawServer(t, func(c *deliverytest.RawConn) {
		c.Reply("554-5.3.2 this host", "554 5.3.2 does not take mail")
		c.Expect("QUIT")
	})
	d, _, _ := testDeliverer(t, srv.Addr())
	rep := deliver(t, d, "example.com", message(testBody, "a@example.com"))
	checkResults(t, rep, want{T, delivery.StageGreeting, 554})
	r := rep.Results[0].Reply
	if r.Enhanced != (delivery.EnhancedCode{5, 3, 2}) || r.Text != "this host\ndoes not take mail" {
		t.Errorf("reply = %#v", r)
	}
	if !rep.DestinationUnavailable || rep.DestinationStage != delivery.StageGreeting || rep.DestinationReply.Code != 554 {
		t.Errorf("destination verdict %v %s %q", rep.DestinationUnavailable, rep.DestinationStage, rep.DestinationReply)
	}
	de := asError(t, rep.DestinationErr)
	if de.Host != "mx1.example.com[192.0.2.1]:25" || de.Reply.Code != 554 {
		t.Errorf("DestinationErr = %+v", de)
	}
}

// TestRoute_Relay: with a Relay, every recipient has the relay as its
// destination, and no MX is looked up.
func TestRoute_Relay(t *testing.T) {
	srv := deliverytest.NewServer(t, nil)
	d, dns, fn := testDeliverer(t, "")
	d.Relay = "smtp.example.net:587"
	d.TLS = delivery.TLSDisabled
	dns.ip["smtp.example.net"] = ips("192.0.2.50")
	fn.routes["192.0.2.50:587"] = srv.Addr
	dest := d.Destination("a@example.com")
	if dest != "[smtp.example.net]:587" || d.Destination("b@other.example") != dest {
		t.Fatalf("Destination = %q", dest)
	}
	rep := deliver(t, d, dest, message(testBody, "a@example.com", "b@other.example"))
	checkResults(t, rep, want{D, delivery.StageEndData, 250}, want{D, delivery.StageEndData, 250})
	if !slices.Equal(dns.lookups, []string{"A smtp.example.net"}) {
		t.Errorf("lookups = %q", dns.lookups)
	}
}
