package delivery

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Resolver is the part of *net.Resolver the engine uses. Tests and
// applications with their own DNS (a validating resolver, a cache) plug in
// here. Errors should be *net.DNSError, so that "no such host"
// (IsNotFound) can be told from a failure that may pass (anything else).
type Resolver interface {
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
}

var _ Resolver = (*net.Resolver)(nil)

// NewResolver returns a *net.Resolver that sends every query to the DNS
// server at addr ("127.0.0.1:5353", "[2001:db8::53]:53") instead of the
// servers in /etc/resolv.conf, using Go's own resolver.
func NewResolver(addr string) *net.Resolver {
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
}

// mxHost is one host to try, in order.
type mxHost struct {
	name string     // MX target, relay host or the domain itself (implicit MX)
	pref uint16     // MX preference
	ip   netip.Addr // set when the host is an address literal; no lookup then
}

// route is where a destination's mail goes.
type route struct {
	hosts    []mxHost
	port     int
	implicit bool // no MX records: the domain itself is the host (RFC 5321 §5.1)
}

// routeError is a resolution failure that decides every recipient.
type routeError struct {
	reply Reply // synthesised: 556 5.1.10, 550 5.1.2 or 451 4.4.3
	err   error
}

// resolve finds the hosts for destination: the relay, an address literal,
// or the MX records of a domain, sorted by preference with equal
// preferences shuffled (RFC 5321 §5.1).
func (d *Deliverer) resolve(ctx context.Context, dest string) (*route, *routeError) {
	if d.Relay != "" {
		host, port := d.relay()
		h := mxHost{name: host}
		if ip, err := netip.ParseAddr(host); err == nil {
			h.ip = ip
		}
		return &route{hosts: []mxHost{h}, port: port}, nil
	}
	port := d.MXPort
	if port <= 0 {
		port = 25
	}
	if strings.HasPrefix(dest, "[") && strings.HasSuffix(dest, "]") {
		// An address literal, RFC 5321 §4.1.3: no DNS at all.
		lit := strings.TrimPrefix(dest[1:len(dest)-1], "ipv6:")
		ip, err := netip.ParseAddr(lit)
		if err != nil {
			return nil, &routeError{
				reply: Reply{Code: 550, Enhanced: EnhancedCode{5, 1, 2}, Text: "invalid address literal " + dest},
				err:   err,
			}
		}
		return &route{hosts: []mxHost{{name: ip.String(), ip: ip}}, port: port}, nil
	}

	mxs, err := d.resolver().LookupMX(ctx, dest)
	var dnsErr *net.DNSError
	switch {
	case err == nil || len(mxs) > 0:
		// Go returns the valid records alongside an error for malformed
		// ones; the valid ones are still the domain's MX set.
	case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		// No MX records (NXDOMAIN or NODATA): the implicit MX, the domain
		// itself with preference 0. Whether the domain exists at all shows
		// when its addresses are looked up.
		return &route{hosts: []mxHost{{name: dest}}, port: port, implicit: true}, nil
	default:
		return nil, &routeError{
			reply: Reply{Code: 451, Enhanced: EnhancedCode{4, 4, 3}, Text: "MX lookup for " + dest + " failed: " + dnsText(err)},
			err:   err,
		}
	}

	if len(mxs) == 1 && (mxs[0].Host == "." || mxs[0].Host == "") {
		// RFC 7505 §3: a single MX with the root as target says the domain
		// accepts no mail; §4.1: fail at once with 556 5.1.10.
		return nil, &routeError{
			reply: Reply{Code: 556, Enhanced: EnhancedCode{5, 1, 10}, Text: dest + " does not accept mail (null MX)"},
			err:   ErrNullMX,
		}
	}
	hosts := make([]mxHost, 0, len(mxs))
	for _, mx := range mxs {
		name := strings.TrimSuffix(mx.Host, ".")
		if name == "" {
			// A null MX among others is a misconfiguration (RFC 7505 §3):
			// the other records are used and the root is skipped.
			continue
		}
		h := mxHost{name: strings.ToLower(name), pref: mx.Pref}
		if ip, err := netip.ParseAddr(name); err == nil {
			h.ip = ip
		}
		hosts = append(hosts, h)
	}
	if len(hosts) == 0 {
		// MX records exist but none is usable: §5.1 forbids falling back
		// to the domain's own addresses.
		return nil, &routeError{
			reply: Reply{Code: 451, Enhanced: EnhancedCode{4, 4, 3}, Text: "no usable MX host for " + dest},
			err:   ErrNoAddress,
		}
	}
	d.orderMX(hosts)
	return &route{hosts: hosts, port: port}, nil
}

// orderMX sorts by preference and shuffles hosts of equal preference, with
// the Deliverer's own random source (RFC 5321 §5.1: "MUST be randomized").
func (d *Deliverer) orderMX(hosts []mxHost) {
	slices.SortStableFunc(hosts, func(a, b mxHost) int { return int(a.pref) - int(b.pref) })
	d.randMu.Lock()
	defer d.randMu.Unlock()
	for i := 0; i < len(hosts); {
		j := i
		for j < len(hosts) && hosts[j].pref == hosts[i].pref {
			j++
		}
		group := hosts[i:j]
		for k := len(group) - 1; k > 0; k-- {
			m := int(d.rng.Uint64() % uint64(k+1))
			group[k], group[m] = group[m], group[k]
		}
		i = j
	}
}

// lookupHost returns the addresses of h, in the resolver's order (RFC 5321
// §5.1: "in the order presented"). notFound is set when the name does not
// exist or has no address records.
func (d *Deliverer) lookupHost(ctx context.Context, h mxHost) (ips []netip.Addr, notFound bool, err error) {
	if h.ip.IsValid() {
		return []netip.Addr{h.ip}, false, nil
	}
	addrs, err := d.resolver().LookupIPAddr(ctx, h.name)
	if err != nil {
		var dnsErr *net.DNSError
		return nil, errors.As(err, &dnsErr) && dnsErr.IsNotFound, err
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			ips = append(ips, ip.Unmap())
		}
	}
	if len(ips) == 0 {
		return nil, true, fmt.Errorf("%s: %w", h.name, ErrNoAddress)
	}
	return ips, false, nil
}

// relay splits Relay into host and port; a missing port means 25, as for
// Postfix's relayhost.
func (d *Deliverer) relay() (string, int) {
	host, portStr, err := net.SplitHostPort(d.Relay)
	if err != nil {
		return strings.Trim(d.Relay, "[]"), 25
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port <= 0 || port > 65535 {
		port = 25
	}
	return host, port
}

// relayKey is the destination of every recipient when a relay is used,
// written as Postfix writes a relay that gets no MX lookup.
func (d *Deliverer) relayKey() string {
	host, port := d.relay()
	return "[" + host + "]:" + strconv.Itoa(port)
}

// dnsText is a DNS error without Go's "lookup x on 127.0.0.53:53:" prefix
// noise when it is a *net.DNSError.
func dnsText(err error) string {
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		s := dnsErr.Err
		if dnsErr.IsTimeout {
			s += " (timeout)"
		}
		return s
	}
	return err.Error()
}
