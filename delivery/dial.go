package delivery

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// hostFailure is why one host (or all of them) could not be used.
type hostFailure struct {
	stage Stage
	host  string
	reply Reply
	err   error
	// permanent is set only when the domain does not exist (implicit MX
	// with no address records): every recipient fails for good.
	permanent bool
	// plainRetry asks for one more connection to the same address without
	// STARTTLS: an opportunistic TLS handshake failed.
	plainRetry bool
}

// connect opens a session to the first host of rt that works, trying at most
// MaxAddresses addresses (RFC 5321 §5.1), and returns the last failure when
// none does.
func (a *attempt) connect(rt *route) (*session, *hostFailure) {
	max := a.d.maxAddresses()
	tried := 0
	var last *hostFailure
	for _, h := range rt.hosts {
		if tried >= max || a.ctx.Err() != nil {
			break
		}
		ips, notFound, err := a.d.lookupHost(a.ctx, h)
		if err != nil {
			if rt.implicit && notFound {
				// RFC 5321 §5.1: no MX and no address: the domain does not
				// exist for mail. This is the only DNS answer that bounces.
				return nil, &hostFailure{
					stage:     StageResolve,
					reply:     Reply{Code: 550, Enhanced: EnhancedCode{5, 1, 2}, Text: "domain " + a.dest + " not found"},
					err:       fmt.Errorf("%w: %s", ErrNoSuchDomain, dnsText(err)),
					permanent: true,
				}
			}
			last = &hostFailure{
				stage: StageResolve,
				host:  h.name,
				reply: Reply{Code: 451, Enhanced: EnhancedCode{4, 4, 3}, Text: "address lookup for " + h.name + " failed: " + dnsText(err)},
				err:   err,
			}
			a.log.Debug("smtp host lookup failed", "host", h.name, "err", err)
			continue
		}
		for _, ip := range ips {
			if tried >= max || a.ctx.Err() != nil {
				break
			}
			tried++
			s, f := a.handshake(h, ip, rt.port, "")
			if f != nil && f.plainRetry && a.ctx.Err() == nil {
				a.log.Warn("smtp TLS handshake failed, retrying without STARTTLS", "host", f.host, "err", f.err)
				s, f = a.handshake(h, ip, rt.port, "TLS handshake failed: "+f.err.Error())
			}
			if f == nil {
				return s, nil
			}
			a.log.Info("smtp host failed", "host", f.host, "stage", f.stage, "reply", f.reply.String(), "err", f.err)
			last = f
		}
	}
	if last == nil {
		last = &hostFailure{stage: StageResolve, err: ErrNoAddress}
	}
	if err := a.ctx.Err(); err != nil && last.reply.Code == 0 {
		last.err = fmt.Errorf("%w (%w)", err, last.err)
	}
	return nil, last
}

// handshake connects to one address and brings the session to the point
// where a mail transaction can start: greeting, EHLO, STARTTLS as the
// policy says, EHLO again over TLS, AUTH. The steps before TLS are done
// here, with ReadReply and its limits, because go-smtp's client cannot do
// opportunistic STARTTLS nor send our EHLO name before it (DEPENDENCIES
// A5.1). Then the connection is handed to smtp.NewClient with a synthetic
// greeting, and go-smtp's Hello sends the EHLO whose answer counts: RFC
// 3207 §4.2 says everything learned before TLS is to be discarded.
//
// fallback, when not empty, means "do not use STARTTLS; record this
// reason": the retry after an opportunistic handshake failure.
func (a *attempt) handshake(h mxHost, ip netip.Addr, port int, fallback string) (*session, *hostFailure) {
	d, t := a.d, a.t
	label := fmt.Sprintf("%s[%s]:%d", h.name, ip, port)
	if h.ip.IsValid() {
		label = fmt.Sprintf("[%s]:%d", ip, port)
	}
	fail := func(stage Stage, r Reply, err error) *hostFailure {
		return &hostFailure{stage: stage, host: label, reply: r, err: err}
	}

	dctx, cancel := context.WithTimeout(a.ctx, t.Connect)
	raw, err := d.dial(dctx, netip.AddrPortFrom(ip, uint16(port)).String())
	cancel()
	if err != nil {
		return nil, fail(StageConnect, Reply{}, err)
	}
	s := &session{
		dest:     a.dest,
		host:     label,
		loopback: ip.IsLoopback(),
		raw:      raw,
		wc:       &wireConn{Conn: raw, lim: d.ReplyLimits.withDefaults()},
	}
	s.tls.Fallback = fallback
	s.bind(a.ctx)
	ok := false
	defer func() {
		if !ok {
			s.unbind()
			s.close()
		}
	}()

	policy := d.policy()
	var conn net.Conn = raw
	if d.implicitTLS() {
		p := policy
		if p != TLSRequired {
			p = TLSOpportunistic
		}
		cfg := d.tlsClientConfig(h.name, p)
		tc := tls.Client(raw, cfg)
		raw.SetDeadline(s.deadline(t.STARTTLS))
		if err := tc.HandshakeContext(a.ctx); err != nil {
			return nil, fail(StageConnect, Reply{}, fmt.Errorf("TLS handshake: %w", err))
		}
		s.tls = tlsState(tc.ConnectionState(), cfg)
		conn = tc
		s.wc.Conn = tc // for quit
	}

	br := bufio.NewReader(conn)
	r, err := s.command(conn, br, "", t.Greeting)
	if err != nil {
		return nil, fail(StageGreeting, Reply{}, err)
	}
	if r.Code != 220 {
		// RFC 5321 §3.1: after a 554 greeting the client should QUIT.
		s.quit()
		return nil, fail(StageGreeting, r, nil)
	}

	if !s.tls.Encrypted && policy != TLSDisabled && fallback == "" {
		r, err = s.command(conn, br, "EHLO "+d.hostname, t.EHLO)
		if err != nil {
			return nil, fail(StageEHLO, Reply{}, err)
		}
		offered := false
		switch {
		case r.Code == 250:
			offered = hasKeyword(r.Text, "STARTTLS")
		case r.Code == 500 || r.Code == 502:
			// No EHLO: go-smtp falls back to HELO below; no STARTTLS.
		default:
			return nil, fail(StageEHLO, r, nil)
		}
		switch {
		case offered:
			tc, f := a.startTLS(s, conn, br, h.name, policy, fail)
			if f != nil {
				return nil, f
			}
			if tc != nil {
				conn = tc
				s.wc.Conn = tc
			}
		case policy == TLSRequired:
			return nil, fail(StageSTARTTLS, Reply{}, fmt.Errorf("%w: STARTTLS not offered", ErrTLSUnavailable))
		}
	}

	// Hand over to go-smtp. Nothing may be buffered: command checked that.
	conn.SetDeadline(time.Time{})
	s.wc.Conn = conn
	s.wc.pre = []byte("220 greeting already read\r\n")
	s.c = smtp.NewClient(s.wc)
	s.c.CommandTimeout = t.EHLO
	if err := s.c.Hello(d.hostname); err != nil {
		r, _ := asReply(err)
		if r.Code != 0 {
			err = nil
		}
		return nil, fail(StageEHLO, r, err)
	}
	s.ext = extensions(s.c)
	if d.Auth != nil {
		if f := a.auth(s, fail); f != nil {
			return nil, f
		}
	}
	ok = true
	a.log.Debug("smtp connected", "host", label, "tls", s.tls.String())
	return s, nil
}

// startTLS sends STARTTLS and performs the handshake. It returns a nil
// conn and no failure when the session is to continue in clear text.
func (a *attempt) startTLS(s *session, conn net.Conn, br *bufio.Reader, host string, policy TLSPolicy,
	fail func(Stage, Reply, error) *hostFailure) (net.Conn, *hostFailure) {
	r, err := s.command(conn, br, "STARTTLS", a.t.STARTTLS)
	if err != nil {
		if errors.Is(err, ErrUnexpectedData) {
			// RFC 3207 §4.2 / CVE-2011-0411: bytes that came with the 220
			// must not be read as replies after the handshake.
			err = ErrSTARTTLSInjection
		}
		return nil, fail(StageSTARTTLS, Reply{}, err)
	}
	if r.Code != 220 {
		if policy == TLSRequired {
			return nil, fail(StageSTARTTLS, r, ErrTLSUnavailable)
		}
		// The server is still in a sane state after refusing STARTTLS
		// (mox#365: this is no verdict on the recipients).
		s.tls.Fallback = "STARTTLS refused: " + r.String()
		return nil, nil
	}
	cfg := a.d.tlsClientConfig(host, policy)
	tc := tls.Client(conn, cfg)
	conn.SetDeadline(s.deadline(a.t.STARTTLS))
	if err := tc.HandshakeContext(a.ctx); err != nil {
		f := fail(StageSTARTTLS, Reply{}, fmt.Errorf("TLS handshake: %w", err))
		f.plainRetry = policy == TLSOpportunistic
		return nil, f
	}
	s.tls = tlsState(tc.ConnectionState(), cfg)
	return tc, nil
}

// command sends line (none for the greeting) and reads the reply, the
// whole of it within timeout. A reply followed by more data is a protocol
// violation: nothing was asked for it.
func (s *session) command(conn net.Conn, br *bufio.Reader, line string, timeout time.Duration) (Reply, error) {
	conn.SetDeadline(s.deadline(timeout))
	if line != "" {
		if _, err := conn.Write([]byte(line + "\r\n")); err != nil {
			return Reply{}, err
		}
	}
	r, err := ReadReply(br, s.wc.lim)
	if err != nil {
		return Reply{}, err
	}
	if br.Buffered() > 0 {
		return r, &ProtocolError{Reason: "data after the end of a reply", Line: shorten(r.String()), Err: ErrUnexpectedData}
	}
	return r, nil
}

// auth authenticates with the configured credentials, refusing to send
// them in clear text except over loopback (RELIABILITY §5.4; Go's
// CVE-2017-15042).
func (a *attempt) auth(s *session, fail func(Stage, Reply, error) *hostFailure) *hostFailure {
	if !s.tls.Encrypted && !s.loopback {
		return fail(StageAUTH, Reply{}, ErrAuthWithoutTLS)
	}
	var mech sasl.Client
	switch {
	case s.c.SupportsAuth("PLAIN"):
		mech = sasl.NewPlainClient("", a.d.Auth.Username, a.d.Auth.Password)
	case s.c.SupportsAuth("LOGIN"):
		mech = sasl.NewLoginClient(a.d.Auth.Username, a.d.Auth.Password)
	default:
		return fail(StageAUTH, Reply{}, ErrAuthUnavailable)
	}
	s.c.CommandTimeout = a.t.EHLO
	if err := s.c.Auth(mech); err != nil {
		if r, ok := asReply(err); ok {
			return fail(StageAUTH, r, nil)
		}
		return fail(StageAUTH, Reply{}, err)
	}
	return nil
}

// hasKeyword reports whether an EHLO reply text (first line: the server's
// name) lists keyword, case-insensitively (RFC 5321 §2.4).
func hasKeyword(text, keyword string) bool {
	lines := strings.Split(text, "\n")
	for _, l := range lines[1:] {
		k, _, _ := strings.Cut(l, " ")
		if strings.EqualFold(k, keyword) {
			return true
		}
	}
	return false
}

// asReply converts a go-smtp error carrying a server reply into a Reply,
// re-parsing the enhanced code that go-smtp misses when it is not on the
// first line (DEPENDENCIES A2).
func asReply(err error) (Reply, bool) {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return replyFromText(se.Code, se.Message, EnhancedCode(se.EnhancedCode)), true
	}
	return Reply{}, false
}
