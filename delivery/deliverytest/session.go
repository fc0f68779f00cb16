package deliverytest

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// session is one go-smtp session: from the first EHLO of a connection (or
// the first after STARTTLS) to its end.
type session struct {
	s        *Server
	conn     *smtp.Conn
	n        int
	helo     string
	tls      bool
	authUser string

	from     string
	mailOpts smtp.MailOptions
	to       []string
	rcptOpts []smtp.RcptOptions
}

var _ smtp.AuthSession = (*session)(nil)

func (s *Server) newSession(c *smtp.Conn) (smtp.Session, error) {
	sess := &session{s: s, conn: c, helo: c.Hostname()}
	nc := c.Conn()
	if tc, ok := nc.(*tls.Conn); ok {
		sess.tls = true
		nc = tc.NetConn()
	}
	if cc, ok := nc.(*countedConn); ok {
		sess.n = cc.n
	}
	if h := s.script.Hello; h != nil {
		if err := sess.answer(h(sess.helo)); err != nil {
			return nil, err
		}
	}
	return sess, nil
}

// answer applies the connection-level effects of a hook's error: ErrDrop
// closes the connection silently, a 421 is written and then the connection is
// closed. go-smtp's own reply, written afterwards, goes nowhere.
func (sess *session) answer(err error) error {
	var se *smtp.SMTPError
	switch {
	case err == nil:
	case errors.Is(err, ErrDrop):
		sess.conn.Conn().Close()
	case errors.As(err, &se) && se.Code == 421:
		reply := formatReply(se)
		if w := sess.s.script.Debug; w != nil {
			io.WriteString(w, reply)
		}
		io.WriteString(sess.conn.Conn(), reply)
		sess.conn.Conn().Close()
	}
	return err
}

// formatReply formats se as go-smtp would (server conn.go writeResponse):
// one line per "\n" in the message, the enhanced code on the last line only.
func formatReply(se *smtp.SMTPError) string {
	lines := strings.Split(se.Message, "\n")
	var b strings.Builder
	for _, l := range lines[:len(lines)-1] {
		fmt.Fprintf(&b, "%d-%s\r\n", se.Code, l)
	}
	enh := se.EnhancedCode
	if enh == smtp.EnhancedCodeNotSet {
		enh = smtp.EnhancedCode{se.Code / 100, 0, 0}
	}
	last := lines[len(lines)-1]
	if enh == smtp.NoEnhancedCode {
		fmt.Fprintf(&b, "%d %s\r\n", se.Code, last)
	} else {
		fmt.Fprintf(&b, "%d %d.%d.%d %s\r\n", se.Code, enh[0], enh[1], enh[2], last)
	}
	return b.String()
}

// code returns the reply code go-smtp sends for a hook's result.
func code(err error, generic int) int {
	var se *smtp.SMTPError
	switch {
	case err == nil:
		return 250
	case errors.Is(err, ErrDrop):
		return 0
	case errors.As(err, &se):
		return se.Code
	}
	return generic
}

func (sess *session) record(verb, arg string, err error, generic int) {
	sess.s.update(func() {
		sess.s.commands = append(sess.s.commands, Command{Session: sess.n, Verb: verb, Arg: arg, Code: code(err, generic)})
	})
}

func (sess *session) Mail(from string, opts *smtp.MailOptions) error {
	var err error
	if h := sess.s.script.Mail; h != nil {
		err = h(from, opts)
	}
	sess.record("MAIL", from, err, 451)
	if err == nil {
		sess.from = from
		if opts != nil {
			sess.mailOpts = *opts
		}
	}
	return sess.answer(err)
}

func (sess *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	err := sess.greylist(to)
	if h := sess.s.script.Rcpt; err == nil && h != nil {
		err = h(to, opts)
	}
	sess.record("RCPT", to, err, 451)
	if err == nil {
		sess.to = append(sess.to, to)
		var o smtp.RcptOptions
		if opts != nil {
			o = *opts
		}
		sess.rcptOpts = append(sess.rcptOpts, o)
	}
	return sess.answer(err)
}

// greylist returns a 450 for the first Script.Greylist RCPTs of a
// (sender, recipient) pair.
func (sess *session) greylist(to string) error {
	n := sess.s.script.Greylist
	if n <= 0 {
		return nil
	}
	var seen int
	sess.s.update(func() {
		k := [2]string{sess.from, to}
		seen = sess.s.grey[k]
		sess.s.grey[k] = seen + 1
	})
	if seen < n {
		return &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 2, 0}, Message: "Greylisted, try again later"}
	}
	return nil
}

func (sess *session) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		// Too large (552) or connection lost; go-smtp answers.
		return err
	}
	if h := sess.s.script.Data; h != nil {
		err = h(sess.from, append([]string(nil), sess.to...), data)
	}
	sess.record("DATA", "", err, 554)
	if err == nil {
		m := Received{
			Session:     sess.n,
			Helo:        sess.helo,
			TLS:         sess.tls,
			AuthUser:    sess.authUser,
			From:        sess.from,
			MailOptions: sess.mailOpts,
			To:          slices.Clone(sess.to),
			RcptOptions: slices.Clone(sess.rcptOpts),
			Data:        data,
		}
		sess.s.update(func() { sess.s.messages = append(sess.s.messages, m) })
	}
	return sess.answer(err)
}

func (sess *session) Reset() {
	sess.from, sess.mailOpts, sess.to, sess.rcptOpts = "", smtp.MailOptions{}, nil, nil
}

func (sess *session) Logout() error { return nil }

func (sess *session) AuthMechanisms() []string {
	if sess.s.script.AuthUser == "" {
		return nil
	}
	return []string{sasl.Plain}
}

func (sess *session) Auth(mech string) (sasl.Server, error) {
	if mech != sasl.Plain || sess.s.script.AuthUser == "" {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	return sasl.NewPlainServer(func(identity, user, pass string) error {
		sc := sess.s.script
		if user != sc.AuthUser || pass != sc.AuthPassword || (identity != "" && identity != user) {
			return smtp.ErrAuthFailed
		}
		sess.authUser = user
		return nil
	}), nil
}
