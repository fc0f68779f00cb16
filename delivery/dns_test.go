package delivery_test

import (
	"encoding/binary"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outboundmail/outbound/delivery"
	"github.com/outboundmail/outbound/delivery/deliverytest"
)

// dnsServer is a minimal authoritative DNS server on 127.0.0.1 (UDP),
// enough for Go's resolver to ask MX, A and AAAA questions: it checks that
// NewResolver's answers become the *net.DNSError kinds the engine relies
// on (NXDOMAIN and NODATA are "not found", SERVFAIL is temporary).
type dnsServer struct {
	mx       map[string][]string // name → "pref host" records; host "." for a null MX
	a        map[string]string   // name → IPv4 address
	servfail map[string]bool     // names answered with SERVFAIL
	zone     string              // names under it exist; others are NXDOMAIN
}

const (
	typeA    = 1
	typeMX   = 15
	typeAAAA = 28
)

func (s *dnsServer) start(t *testing.T) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, addr, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if resp := s.answer(buf[:n]); resp != nil {
				pc.WriteTo(resp, addr)
			}
		}
	}()
	return pc.LocalAddr().String()
}

// answer builds the response to one query, or nil for garbage.
func (s *dnsServer) answer(q []byte) []byte {
	if len(q) < 12 {
		return nil
	}
	var labels []string
	i := 12
	for i < len(q) && q[i] != 0 {
		l := int(q[i])
		if i+1+l > len(q) {
			return nil
		}
		labels = append(labels, string(q[i+1:i+1+l]))
		i += 1 + l
	}
	if i+5 > len(q) {
		return nil
	}
	question := q[12 : i+5]
	qtype := binary.BigEndian.Uint16(q[i+1:])
	name := strings.ToLower(strings.Join(labels, "."))

	rcode := 0
	var answers [][]byte
	switch {
	case s.servfail[name]:
		rcode = 2
	case name != s.zone && !strings.HasSuffix(name, "."+s.zone):
		rcode = 3 // NXDOMAIN
	case qtype == typeMX:
		for _, rec := range s.mx[name] {
			pref, host, _ := strings.Cut(rec, " ")
			p, _ := strconv.Atoi(pref)
			answers = append(answers, rr(typeMX, binary.BigEndian.AppendUint16(nil, uint16(p)), encodeName(host)))
		}
	case qtype == typeA && s.a[name] != "":
		answers = append(answers, rr(typeA, net.ParseIP(s.a[name]).To4()))
	}
	resp := binary.BigEndian.AppendUint16(nil, binary.BigEndian.Uint16(q))
	flags := uint16(0x8000|0x0400|0x0080) | binary.BigEndian.Uint16(q[2:])&0x0100 | uint16(rcode)
	resp = binary.BigEndian.AppendUint16(resp, flags)
	for _, c := range []int{1, len(answers), 0, 0} {
		resp = binary.BigEndian.AppendUint16(resp, uint16(c))
	}
	resp = append(resp, question...)
	for _, a := range answers {
		resp = append(resp, a...)
	}
	return resp
}

// rr is a resource record for the question's name (a pointer to offset 12).
func rr(typ uint16, rdata ...[]byte) []byte {
	var data []byte
	for _, d := range rdata {
		data = append(data, d...)
	}
	b := []byte{0xc0, 12}
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint16(b, 1) // IN
	b = binary.BigEndian.AppendUint32(b, 60)
	b = binary.BigEndian.AppendUint16(b, uint16(len(data)))
	return append(b, data...)
}

func encodeName(name string) []byte {
	var b []byte
	for _, l := range strings.Split(strings.TrimSuffix(name, "."), ".") {
		if l != "" {
			b = append(append(b, byte(len(l))), l...)
		}
	}
	return append(b, 0)
}

// TestNewResolver: MX delivery through a real DNS server with NewResolver,
// Go's resolver and the default dialer, to MXPort on 127.0.0.1.
func TestNewResolver(t *testing.T) {
	srv := deliverytest.NewServer(t, nil)
	_, port, _ := net.SplitHostPort(srv.Addr)
	dns := &dnsServer{
		zone: "example.test",
		mx: map[string][]string{
			"example.test":      {"20 down.example.test.", "10 mx.example.test."},
			"null.example.test": {"0 ."},
		},
		a: map[string]string{
			"mx.example.test":       "127.0.0.1",
			"down.example.test":     "127.0.0.2",
			"implicit.example.test": "127.0.0.1",
		},
		servfail: map[string]bool{"broken.example.test": true},
	}
	d := &delivery.Deliverer{
		Hostname: "client.example.org",
		Resolver: delivery.NewResolver(dns.start(t)),
		MXPort:   func() int { p, _ := strconv.Atoi(port); return p }(),
		Timeouts: shortTimeouts(10 * time.Second),
	}
	defer d.Close()
	tests := []struct {
		domain string
		want   want
		is     error
	}{
		{"example.test", want{D, delivery.StageEndData, 250}, nil},
		{"implicit.example.test", want{D, delivery.StageEndData, 250}, nil}, // NODATA for MX
		{"null.example.test", want{P, delivery.StageResolve, 556}, delivery.ErrNullMX},
		{"nowhere.invalid", want{P, delivery.StageResolve, 550}, delivery.ErrNoSuchDomain}, // NXDOMAIN
		{"broken.example.test", want{T, delivery.StageResolve, 451}, nil},                  // SERVFAIL
	}
	for _, tt := range tests {
		rcpt := "a@" + tt.domain
		rep := deliver(t, d, d.Destination(rcpt), message(testBody, rcpt))
		checkResults(t, rep, tt.want)
		if tt.is != nil && !errors.Is(rep.Results[0].Err, tt.is) {
			t.Errorf("%s: err = %v, want %v", tt.domain, rep.Results[0].Err, tt.is)
		}
		if tt.want.class == D && rep.Results[0].Host != "mx.example.test[127.0.0.1]:"+port &&
			rep.Results[0].Host != "implicit.example.test[127.0.0.1]:"+port {
			t.Errorf("%s: host %q", tt.domain, rep.Results[0].Host)
		}
	}
}
