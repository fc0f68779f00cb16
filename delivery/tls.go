package delivery

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
)

// TLSPolicy says whether a session must be encrypted. It plays the role of
// Postfix's smtp_tls_security_level.
type TLSPolicy int

const (
	// TLSDefault is the zero value: TLSOpportunistic for MX delivery,
	// TLSRequired for a Relay.
	TLSDefault TLSPolicy = iota
	// TLSOpportunistic uses STARTTLS when the server offers it and accepts
	// any certificate (RFC 7435: encryption against passive eavesdroppers;
	// the certificate's validity is recorded in the Report, not enforced).
	// If the server refuses STARTTLS, the session continues in clear text;
	// if the TLS handshake fails, the engine reconnects to the same address
	// once without STARTTLS, as Postfix does at security level "may".
	TLSOpportunistic
	// TLSRequired refuses to send anything without TLS, and the certificate
	// must verify against TLSConfig.RootCAs (or the system roots) for the
	// host name, unless TLSConfig.InsecureSkipVerify is set (Postfix's
	// "encrypt"). A failure is a temporary failure of the host, never a
	// fallback to clear text and never a bounce (RFC 8461 §5, RFC 7672 §2.2
	// take the same line for their policies).
	TLSRequired
	// TLSDisabled never uses STARTTLS. Implicit TLS to a relay on port 465
	// is still used.
	TLSDisabled
)

// String returns "default", "opportunistic", "required" or "disabled".
func (p TLSPolicy) String() string {
	switch p {
	case TLSDefault:
		return "default"
	case TLSOpportunistic:
		return "opportunistic"
	case TLSRequired:
		return "required"
	case TLSDisabled:
		return "disabled"
	}
	return fmt.Sprintf("TLSPolicy(%d)", int(p))
}

// TLSState records how the session that carried a transaction was
// protected. The zero value means clear text.
type TLSState struct {
	Encrypted   bool   // the session ran over TLS (STARTTLS or implicit)
	Version     uint16 // tls.VersionTLS13 …
	CipherSuite uint16
	ServerName  string // the name the certificate was checked against
	// Verified is set when the certificate chain verified for ServerName.
	// Under TLSOpportunistic the session proceeds either way.
	Verified bool
	// VerifyError says why the certificate did not verify, if it did not.
	VerifyError string
	// Fallback is set when TLS was offered but not used under
	// TLSOpportunistic: the reason the session continued in clear text.
	Fallback string
}

// String returns e.g. "TLS1.3 TLS_AES_128_GCM_SHA256 verified" or
// "plaintext".
func (s TLSState) String() string {
	if !s.Encrypted {
		if s.Fallback != "" {
			return "plaintext (" + s.Fallback + ")"
		}
		return "plaintext"
	}
	v := "unverified"
	if s.Verified {
		v = "verified"
	}
	return fmt.Sprintf("%s %s %s", tls.VersionName(s.Version), tls.CipherSuiteName(s.CipherSuite), v)
}

// tlsClientConfig returns the configuration for a handshake with host.
// Under TLSOpportunistic, verification is done after the handshake by
// verifyState, only to record it.
func (d *Deliverer) tlsClientConfig(host string, policy TLSPolicy) *tls.Config {
	var cfg *tls.Config
	if d.TLSConfig != nil {
		cfg = d.TLSConfig.Clone()
	} else {
		cfg = &tls.Config{}
	}
	if cfg.ServerName == "" {
		cfg.ServerName = host
	}
	if policy == TLSOpportunistic {
		cfg.InsecureSkipVerify = true
		if cfg.MinVersion == 0 {
			// Clear text is the alternative: old TLS is still better.
			cfg.MinVersion = tls.VersionTLS10
		}
	}
	return cfg
}

// tlsState describes a finished handshake. When the handshake itself did
// not verify the chain (opportunistic, or InsecureSkipVerify), it verifies
// it here against cfg.RootCAs, only to record the result.
func tlsState(cs tls.ConnectionState, cfg *tls.Config) TLSState {
	st := TLSState{
		Encrypted:   true,
		Version:     cs.Version,
		CipherSuite: cs.CipherSuite,
		ServerName:  cfg.ServerName,
	}
	if len(cs.VerifiedChains) > 0 {
		st.Verified = true
		return st
	}
	if len(cs.PeerCertificates) == 0 {
		st.VerifyError = "no certificate"
		return st
	}
	opts := x509.VerifyOptions{
		Roots:         cfg.RootCAs,
		DNSName:       cfg.ServerName,
		Intermediates: x509.NewCertPool(),
	}
	for _, c := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(c)
	}
	if _, err := cs.PeerCertificates[0].Verify(opts); err != nil {
		st.VerifyError = err.Error()
		return st
	}
	st.Verified = true
	return st
}
