package delivery_test

import (
	"bytes"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/outboundmail/outbound/delivery"
	"github.com/outboundmail/outbound/delivery/deliverytest"
)

// TestTLS_Opportunistic: STARTTLS with a certificate nobody can verify is
// still used, and recorded as unverified; the EHLO is sent again over TLS
// with our name (RFC 3207 §4.2).
func TestTLS_Opportunistic(t *testing.T) {
	cfg, _ := deliverytest.TLSConfig(t)
	var mu sync.Mutex
	var helos []string
	srv := deliverytest.NewServer(t, &deliverytest.Script{
		TLSConfig: cfg,
		Hello: func(name string) error {
			mu.Lock()
			helos = append(helos, name)
			mu.Unlock()
			return nil
		},
	})
	d, _, _ := testDeliverer(t, srv.Addr)
	rep := deliver(t, d, "example.com", message(testBody, "a@example.com"))
	checkResults(t, rep, want{D, delivery.StageEndData, 250})
	if st := rep.TLS; !st.Encrypted || st.Verified || st.VerifyError == "" || st.ServerName != "mx1.example.com" || st.Version < tls.VersionTLS12 {
		t.Errorf("TLS state = %+v", st)
	}
	if m := srv.Messages()[0]; !m.TLS {
		t.Error("message did not arrive over TLS")
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(helos, []string{"client.example.org", "client.example.org"}) {
		t.Errorf("EHLO names before and after TLS: %q", helos)
	}
}

// TestTLS_Verified: with the right roots and name, the certificate
// verifies, under both policies.
func TestTLS_Verified(t *testing.T) {
	cfg, roots := deliverytest.TLSConfig(t)
	srv := deliverytest.NewServer(t, &deliverytest.Script{TLSConfig: cfg, EnableREQUIRETLS: true})
	for _, policy := range []delivery.TLSPolicy{delivery.TLSOpportunistic, delivery.TLSRequired} {
		d, dns, _ := testDeliverer(t, srv.Addr)
		dns.mx["example.com"] = []*net.MX{{Host: "localhost.", Pref: 10}}
		dns.ip["localhost"] = ips("192.0.2.1")
		d.TLS, d.TLSConfig = policy, &tls.Config{RootCAs: roots}
		msg := message(testBody, "a@example.com")
		msg.RequireTLS = true
		rep := deliver(t, d, "example.com", msg)
		checkResults(t, rep, want{D, delivery.StageEndData, 250})
		if !rep.TLS.Verified || rep.TLS.VerifyError != "" {
			t.Errorf("%s: TLS state = %+v", policy, rep.TLS)
		}
	}
	if m := srv.Messages(); len(m) != 2 || !m[1].MailOptions.RequireTLS {
		t.Errorf("messages = %+v", m)
	}
}

// TestTLS_RequiredFailures: under TLSRequired nothing goes in clear text,
// and failure is temporary for the recipients and the destination
// (RELIABILITY §7 items 30, 33).
func TestTLS_RequiredFailures(t *testing.T) {
	cfg, _ := deliverytest.TLSConfig(t)
	tests := []struct {
		name  string
		start func(t *testing.T) (addr string, sessions func() int)
		is    error
	}{
		{"not offered", func(t *testing.T) (string, func() int) {
			s := deliverytest.NewServer(t, nil)
			return s.Addr, s.Sessions
		}, delivery.ErrTLSUnavailable},
		{"untrusted certificate", func(t *testing.T) (string, func() int) {
			s := deliverytest.NewServer(t, &deliverytest.Script{TLSConfig: cfg})
			return s.Addr, s.Sessions
		}, nil},
		{"refused", func(t *testing.T) (string, func() int) {
			s := deliverytest.NewRawServer(t, func(c *deliverytest.RawConn) {
				c.Greet()
				c.HandleEHLO("STARTTLS")
				c.Expect("STARTTLS")
				c.Reply("454 4.7.0 TLS not available")
				c.Serve()
			})
			return s.Addr(), s.Sessions
		}, delivery.ErrTLSUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, sessions := tt.start(t)
			d, _, _ := testDeliverer(t, addr)
			d.TLS = delivery.TLSRequired
			rep := deliver(t, d, "example.com", message(testBody, "a@example.com"))
			checkResults(t, rep, want{T, delivery.StageSTARTTLS, rep.Results[0].Reply.Code})
			if tt.is != nil && !errors.Is(rep.Results[0].Err, tt.is) {
				t.Errorf("err = %v, want %v", rep.Results[0].Err, tt.is)
			}
			if rep.Results[0].Err == nil || !rep.DestinationUnavailable || rep.DestinationStage != delivery.StageSTARTTLS {
				t.Errorf("result %+v, destination unavailable %v", rep.Results[0], rep.DestinationUnavailable)
			}
			if sessions() != 1 {
				t.Errorf("sessions = %d: a plaintext retry?", sessions())
			}
		})
	}
}

// TestTLS_OpportunisticFallback: a refused STARTTLS continues in clear
// text on the same connection; a failed handshake reconnects once without
// STARTTLS (Postfix "may"); both are recorded.
func TestTLS_OpportunisticFallback(t *testing.T) {
	t.Run("refused", func(t *testing.T) {
		srv := deliverytest.NewRawServer(t, func(c *deliverytest.RawConn) {
			c.Greet()
			c.HandleEHLO("STARTTLS")
			c.Expect("STARTTLS")
			c.Reply("454 4.7.0 TLS not available")
			c.Serve("STARTTLS")
		})
		d, _, _ := testDeliverer(t, srv.Addr())
		rep := deliver(t, d, "example.com", message(testBody, "a@example.com"))
		checkResults(t, rep, want{D, delivery.StageEndData, 250})
		if rep.TLS.Encrypted || !strings.Contains(rep.TLS.Fallback, "454") || srv.Sessions() != 1 {
			t.Errorf("TLS %+v, sessions %d", rep.TLS, srv.Sessions())
		}
	})
	t.Run("handshake failed", func(t *testing.T) {
		srv := deliverytest.NewRawServer(t, func(c *deliverytest.RawConn) {
			if c.Session() > 1 {
				c.Greet()
				c.Serve("STARTTLS") // not used again
				return
			}
			c.Greet()
			c.HandleEHLO("STARTTLS")
			c.Expect("STARTTLS")
			c.Reply("220 go ahead")
			c.Raw().Read(make([]byte, 512)) // the ClientHello
			c.Raw().Write([]byte("this is not a TLS server hello\r\n"))
		})
		d, _, _ := testDeliverer(t, srv.Addr())
		rep := deliver(t, d, "example.com", message(testBody, "a@example.com"))
		checkResults(t, rep, want{D, delivery.StageEndData, 250})
		if rep.TLS.Encrypted || !strings.HasPrefix(rep.TLS.Fallback, "TLS handshake failed") || srv.Sessions() != 2 {
			t.Errorf("TLS %+v, sessions %d", rep.TLS, srv.Sessions())
		}
		if m := srv.Messages(); len(m) != 1 || m[0].TLS {
			t.Errorf("messages = %+v", m)
		}
	})
}

// TestTLS_STARTTLSInjection: replies sent with the 220 to STARTTLS, before
// the handshake, abort the connection (RFC 3207 §4.2; RELIABILITY §7 item
// 31), whatever the policy; no plaintext retry either.
func TestTLS_STARTTLSInjection(t *testing.T) {
	srv := deliverytest.NewRawServer(t, func(c *deliverytest.RawConn) {
		c.Greet()
		c.HandleEHLO("STARTTLS")
		c.Expect("STARTTLS")
		c.Reply("220 go ahead", "250-injected", "250 AUTH PLAIN")
		c.Block(nil)
	})
	d, _, _ := testDeliverer(t, srv.Addr())
	rep := deliver(t, d, "example.com", message(testBody, "a@example.com"))
	checkResults(t, rep, want{T, delivery.StageSTARTTLS, 0})
	if !errors.Is(rep.Results[0].Err, delivery.ErrSTARTTLSInjection) || !rep.DestinationUnavailable || srv.Sessions() != 1 {
		t.Errorf("err %v, unavailable %v, sessions %d", rep.Results[0].Err, rep.DestinationUnavailable, srv.Sessions())
	}
}

// TestTLS_Disabled: no STARTTLS even when offered, and a single EHLO.
func TestTLS_Disabled(t *testing.T) {
	cfg, _ := deliverytest.TLSConfig(t)
	srv := deliverytest.NewServer(t, &deliverytest.Script{TLSConfig: cfg})
	d, _, _ := testDeliverer(t, srv.Addr)
	d.TLS = delivery.TLSDisabled
	rep := deliver(t, d, "example.com", message(testBody, "a@example.com"))
	checkResults(t, rep, want{D, delivery.StageEndData, 250})
	if rep.TLS.Encrypted || srv.Messages()[0].TLS || !slices.Contains(rep.Extensions, "STARTTLS") {
		t.Errorf("TLS %+v, extensions %q", rep.TLS, rep.Extensions)
	}
}

// TestTLS_ImplicitRelay: a relay on port 465 starts with TLS (RFC 8314).
func TestTLS_ImplicitRelay(t *testing.T) {
	cfg, roots := deliverytest.TLSConfig(t)
	srv := deliverytest.NewRawServer(t, func(c *deliverytest.RawConn) {
		if err := c.StartTLS(cfg); err != nil {
			t.Errorf("server handshake: %v", err)
			return
		}
		rawScript{}.serve(c)
	})
	d, dns, fn := testDeliverer(t, "")
	d.Relay, d.TLSConfig = "localhost:465", &tls.Config{RootCAs: roots}
	dns.ip["localhost"] = ips("192.0.2.50")
	fn.routes["192.0.2.50:465"] = srv.Addr()
	rep := deliver(t, d, d.Destination("a@example.com"), message(testBody, "a@example.com"))
	checkResults(t, rep, want{D, delivery.StageEndData, 250})
	if !rep.TLS.Encrypted || !rep.TLS.Verified {
		t.Errorf("TLS %+v", rep.TLS)
	}
}

// TestTLS_Auth: credentials go only over TLS (or loopback), never into the
// logs; a rejected login defers (RELIABILITY §7 items 34, 35).
func TestTLS_Auth(t *testing.T) {
	cfg, roots := deliverytest.TLSConfig(t)
	const pass = "s3cret-Pa55"
	tests := []struct {
		name   string
		script deliverytest.Script
		relay  string // host:port, resolved to 192.0.2.50 unless an IP
		policy delivery.TLSPolicy
		pass   string
		want   want
		is     error
	}{
		{"over TLS", deliverytest.Script{TLSConfig: cfg, AuthUser: "user", AuthPassword: pass, AuthRequiresTLS: true},
			"localhost:587", delivery.TLSDefault, pass, want{D, delivery.StageEndData, 250}, nil},
		{"clear text refused", deliverytest.Script{AuthUser: "user", AuthPassword: pass},
			"smtp.example.net:587", delivery.TLSOpportunistic, pass, want{T, delivery.StageAUTH, 0}, delivery.ErrAuthWithoutTLS},
		{"clear text to loopback", deliverytest.Script{AuthUser: "user", AuthPassword: pass},
			"127.0.0.1:587", delivery.TLSDisabled, pass, want{D, delivery.StageEndData, 250}, nil},
		{"wrong password", deliverytest.Script{TLSConfig: cfg, AuthUser: "user", AuthPassword: pass},
			"localhost:587", delivery.TLSRequired, "wrong", want{T, delivery.StageAUTH, 535}, nil},
		{"no AUTH offered", deliverytest.Script{TLSConfig: cfg},
			"localhost:587", delivery.TLSRequired, pass, want{T, delivery.StageAUTH, 0}, delivery.ErrAuthUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := deliverytest.NewServer(t, &tt.script)
			var logs bytes.Buffer
			d, dns, fn := testDeliverer(t, srv.Addr)
			d.Relay, d.TLS, d.TLSConfig = tt.relay, tt.policy, &tls.Config{RootCAs: roots}
			d.Auth = &delivery.Auth{Username: "user", Password: tt.pass}
			d.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			host, port, _ := net.SplitHostPort(tt.relay)
			dns.ip[host] = ips("192.0.2.50")
			fn.routes["192.0.2.50:"+port] = srv.Addr
			fn.routes["127.0.0.1:"+port] = srv.Addr
			rep := deliver(t, d, d.Destination("a@example.com"), message(testBody, "a@example.com"))
			checkResults(t, rep, tt.want)
			if tt.is != nil && !errors.Is(rep.Results[0].Err, tt.is) {
				t.Errorf("err = %v, want %v", rep.Results[0].Err, tt.is)
			}
			if tt.want.class == D && srv.Messages()[0].AuthUser != "user" {
				t.Errorf("message not authenticated: %+v", srv.Messages()[0])
			}
			if tt.want.class == T && !rep.DestinationUnavailable {
				t.Error("AUTH failure did not make the relay unavailable")
			}
			if strings.Contains(logs.String(), tt.pass) || strings.Contains(d.Auth.String(), tt.pass) {
				t.Errorf("password in logs or String: %s", logs.String())
			}
		})
	}
}
