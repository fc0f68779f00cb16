package delivery

import (
	"context"
	crand "crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/outboundmail/outbound/delivery/rfc5321"
)

// Deliverer makes SMTP delivery attempts: one call to Deliver is one attempt
// to one destination. Its exported fields are its configuration; set them
// before the first call and do not change them afterwards. The zero value
// delivers to MX hosts on port 25 with opportunistic STARTTLS. A Deliverer
// keeps idle connections for reuse, like http.Transport, and is safe for
// concurrent use. It must not be copied after first use.
type Deliverer struct {
	// Hostname is the name sent with EHLO. It should be this host's fully
	// qualified name, the one its address resolves back to; many receivers
	// check. "" means os.Hostname().
	Hostname string

	// Resolver looks up MX and address records. nil means
	// net.DefaultResolver. [NewResolver] returns one that asks a given DNS
	// server.
	Resolver Resolver

	// DialContext opens TCP connections. nil means a net.Dialer. It is
	// called with "tcp" and "ip:port"; Timeouts.Connect bounds the call.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)

	// MXPort is the port MX hosts are contacted on. 0 means 25.
	MXPort int

	// Relay, if set, sends all mail through this smarthost, "host:port"
	// (a missing port means 25), instead of looking up MX records: the
	// host's address records are used, as for Postfix's "[host]:port".
	// Every recipient then has the same destination, "[host]:port".
	Relay string

	// RelayImplicitTLS makes the connection to Relay start with TLS (RFC
	// 8314 §3) instead of STARTTLS. Port 465 implies it.
	RelayImplicitTLS bool

	// Auth, if set, authenticates to the server with SASL PLAIN (or LOGIN
	// when PLAIN is not offered) after TLS. Credentials are never sent over
	// a connection without TLS unless the server is on the loopback
	// interface, and never logged.
	Auth *Auth

	// TLS is the STARTTLS policy. The zero value, TLSDefault, means
	// TLSOpportunistic for MX delivery and TLSRequired with a Relay.
	TLS TLSPolicy

	// TLSConfig is the base TLS configuration (root CAs, client
	// certificates, minimum version). nil means the defaults. ServerName is
	// set to the MX or relay host name when empty.
	TLSConfig *tls.Config

	// Timeouts bound each step of an attempt (RFC 5321 §4.5.3.2).
	Timeouts Timeouts

	// MaxAddresses is how many addresses (over all MX hosts) one attempt
	// tries when connections fail at the connection level: refused, timed
	// out, a 4xx or 5xx greeting, EHLO or STARTTLS failure. 0 means 5;
	// values below 2 mean 2 (RFC 5321 §5.1: "SHOULD try at least two").
	MaxAddresses int

	// ReplyLimits caps the size of server replies.
	ReplyLimits ReplyLimits

	// NoPipelining turns RFC 2920 pipelining off, for servers that
	// advertise PIPELINING and break when a client uses it.
	NoPipelining bool

	// MaxConnsPerDestination limits the connections open at once to one
	// destination, busy and idle together; Deliver waits for one to free up
	// (or for its ctx). 0 means 10; negative means no limit.
	MaxConnsPerDestination int
	// MaxMessagesPerConn is how many mail transactions one connection
	// carries before it is closed. 0 means 100; 1 or a negative value
	// disables reuse.
	MaxMessagesPerConn int
	// IdleTimeout is how long an idle connection is kept for reuse. 0 means
	// 10 seconds; negative disables reuse.
	IdleTimeout time.Duration
	// MaxIdlePerDestination is how many idle connections are kept per
	// destination. 0 means 2; negative disables reuse.
	MaxIdlePerDestination int

	// Rand is the source of randomness for shuffling MX hosts of equal
	// preference. nil means a source seeded from crypto/rand. It is used
	// under a lock, so any rand.Source will do.
	Rand rand.Source

	// Logger receives a line per connection and per transaction. nil means
	// no logging. Message content and credentials are never logged.
	Logger *slog.Logger

	initOnce sync.Once
	hostname string // validated EHLO name
	initErr  error
	randMu   sync.Mutex
	rng      rand.Source
	pool     pool
	bufs     sync.Pool // *[]byte for copying message data
}

// Auth holds credentials for SMTP AUTH (RFC 4954) to a relay. Its String
// and LogValue methods hide the password.
type Auth struct {
	Username string
	Password string
}

// String returns the username and a placeholder for the password.
func (a Auth) String() string { return a.Username + ":REDACTED" }

// LogValue hides the password from slog.
func (a Auth) LogValue() slog.Value { return slog.StringValue(a.String()) }

// Timeouts bound the steps of an attempt. A zero field means the RFC 5321
// §4.5.3.2 minimum, given with each field. Each covers a whole reply, not
// one line of it. The ctx given to Deliver bounds them all.
type Timeouts struct {
	Connect  time.Duration // TCP connect: 30s
	Greeting time.Duration // the 220 banner: 5m
	EHLO     time.Duration // EHLO (and HELO, RSET, AUTH): 5m
	STARTTLS time.Duration // STARTTLS and the TLS handshake: 5m
	Mail     time.Duration // MAIL FROM: 5m
	Rcpt     time.Duration // each RCPT TO: 5m
	Data     time.Duration // DATA, up to the 354: 2m
	Block    time.Duration // each write of message data: 3m
	EndData  time.Duration // the reply to the final dot: 10m
}

func (t Timeouts) withDefaults() Timeouts {
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&t.Connect, 30*time.Second)
	def(&t.Greeting, 5*time.Minute)
	def(&t.EHLO, 5*time.Minute)
	def(&t.STARTTLS, 5*time.Minute)
	def(&t.Mail, 5*time.Minute)
	def(&t.Rcpt, 5*time.Minute)
	def(&t.Data, 2*time.Minute)
	def(&t.Block, 3*time.Minute)
	def(&t.EndData, 10*time.Minute)
	return t
}

func (d *Deliverer) init() {
	d.initOnce.Do(func() {
		d.rng = d.Rand
		if d.rng == nil {
			var seed [16]byte
			_, _ = crand.Read(seed[:])
			d.rng = rand.NewPCG(binary.LittleEndian.Uint64(seed[:8]), binary.LittleEndian.Uint64(seed[8:]))
		}
		name := d.Hostname
		if name == "" {
			h, err := os.Hostname()
			if err != nil {
				d.initErr = fmt.Errorf("delivery: Hostname not set and os.Hostname failed: %w", err)
				return
			}
			name = h
		}
		if err := rfc5321.CheckDomain(name); err != nil || strings.ContainsAny(name, "\r\n ") {
			d.initErr = &MessageError{Reason: fmt.Sprintf("Hostname %q is not a valid EHLO name", name)}
			return
		}
		d.hostname = name
	})
}

// Destination returns the key recipients are grouped by: the lower-cased
// domain of recipient for MX delivery, or "[host]:port" when Relay is set.
// Recipients with the same destination can share one Deliver call.
func (d *Deliverer) Destination(recipient string) string {
	if d.Relay != "" {
		return d.relayKey()
	}
	return rfc5321.Domain(recipient)
}

// Deliver makes exactly one attempt to deliver msg to destination, which
// must be Destination of every valid recipient. It never retries: replies,
// 4xx and 5xx included, come back as one Result per recipient in the
// Report, classified as in the package documentation, and the caller
// decides when to try again.
//
// A non-nil error, a [*MessageError] or ctx's error, means no attempt was
// made; the caller should treat it as temporary for every recipient.
// Recipients with invalid addresses or DSN parameters get a permanent
// Result instead, so that they are not retried forever.
//
// msg.Body is read at most once, and only after the server accepted at
// least one recipient. It is read again only if it is an io.Seeker and a
// second transaction is needed (a 452 "too many recipients").
func (d *Deliverer) Deliver(ctx context.Context, destination string, msg *Message) (*Report, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	d.init()
	if d.initErr != nil {
		return nil, d.initErr
	}
	if err := d.checkCall(destination, msg); err != nil {
		return nil, err
	}
	a := &attempt{
		d:    d,
		ctx:  ctx,
		dest: destination,
		msg:  msg,
		t:    d.Timeouts.withDefaults(),
		log:  d.logger().With("destination", destination),
		rep: &Report{
			Destination: destination,
			Results:     make([]Result, len(msg.Recipients)),
		},
	}
	for i, r := range msg.Recipients {
		a.rep.Results[i].Recipient = r.Address
	}
	pending := a.validate()
	if len(pending) > 0 {
		a.run(pending)
	}
	return a.rep, nil
}

// Close closes the idle connections, with a QUIT. Deliver may still be
// called afterwards; it opens new connections.
func (d *Deliverer) Close() error {
	d.pool.closeIdle()
	return nil
}

// checkCall rejects calls that are the caller's mistake, not the message's.
func (d *Deliverer) checkCall(dest string, msg *Message) error {
	switch {
	case msg == nil:
		return &MessageError{Reason: "nil message"}
	case len(msg.Recipients) == 0:
		return &MessageError{Reason: "no recipients"}
	case msg.Body == nil:
		return &MessageError{Reason: "nil body"}
	case dest == "":
		return &MessageError{Reason: "empty destination"}
	case msg.Size < 0:
		return &MessageError{Reason: "negative size"}
	}
	for _, r := range msg.Recipients {
		if rfc5321.CheckMailbox(r.Address) != nil {
			continue // a permanent Result, from validate
		}
		if got := d.Destination(r.Address); got != dest {
			return &MessageError{Reason: fmt.Sprintf("recipient %q belongs to destination %q, not %q", r.Address, got, dest)}
		}
	}
	return nil
}

func (d *Deliverer) logger() *slog.Logger {
	if d.Logger != nil {
		return d.Logger
	}
	return slog.New(slog.DiscardHandler)
}

func (d *Deliverer) resolver() Resolver {
	if d.Resolver != nil {
		return d.Resolver
	}
	return net.DefaultResolver
}

func (d *Deliverer) dial(ctx context.Context, addr string) (net.Conn, error) {
	if d.DialContext != nil {
		return d.DialContext(ctx, "tcp", addr)
	}
	var nd net.Dialer
	return nd.DialContext(ctx, "tcp", addr)
}

// policy is the effective TLS policy.
func (d *Deliverer) policy() TLSPolicy {
	if d.TLS != TLSDefault {
		return d.TLS
	}
	if d.Relay != "" {
		return TLSRequired
	}
	return TLSOpportunistic
}

// implicitTLS reports whether connections start with TLS (relay only).
func (d *Deliverer) implicitTLS() bool {
	if d.Relay == "" {
		return false
	}
	_, port := d.relay()
	return d.RelayImplicitTLS || port == 465
}

func (d *Deliverer) maxAddresses() int {
	switch {
	case d.MaxAddresses == 0:
		return 5
	case d.MaxAddresses < 2:
		return 2
	}
	return d.MaxAddresses
}

// poolLimits returns the connection reuse limits with defaults applied.
func (d *Deliverer) poolLimits() poolLimits {
	l := poolLimits{
		maxConns: d.MaxConnsPerDestination,
		maxMsgs:  d.MaxMessagesPerConn,
		idle:     d.IdleTimeout,
		maxIdle:  d.MaxIdlePerDestination,
	}
	if l.maxConns == 0 {
		l.maxConns = 10
	}
	if l.maxMsgs == 0 {
		l.maxMsgs = 100
	}
	if l.idle == 0 {
		l.idle = 10 * time.Second
	}
	if l.maxIdle == 0 {
		l.maxIdle = 2
	}
	return l
}
