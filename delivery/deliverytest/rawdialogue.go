package deliverytest

import (
	"io"
	"strings"

	"github.com/emersion/go-smtp"
)

// Greet sends the usual greeting, "220 localhost ESMTP deliverytest".
func (c *RawConn) Greet() error {
	return c.Reply("220 localhost ESMTP deliverytest")
}

// HandleEHLO expects an EHLO and answers it with a 250 reply listing exts
// (for example "PIPELINING", "8BITMIME", "SIZE 1000", "STARTTLS") and
// nothing else. It reports a failure like [RawConn.Expect].
func (c *RawConn) HandleEHLO(exts ...string) bool {
	c.tb.Helper()
	line, ok := c.Expect("EHLO ")
	if !ok {
		return false
	}
	c.helo = strings.TrimSpace(line[len("EHLO "):])
	return c.Reply(ehloReply(exts)...) == nil
}

func ehloReply(exts []string) []string {
	lines := []string{"localhost"}
	lines = append(lines, exts...)
	for i := range lines {
		sep := "-"
		if i == len(lines)-1 {
			sep = " "
		}
		lines[i] = "250" + sep + lines[i]
	}
	return lines
}

// Serve answers the rest of the session as a plain accepting server would
// and records each message it receives for [RawServer.Messages]. It answers
// EHLO with exts, HELO, MAIL, RCPT, RSET and NOOP with 250, DATA with 354 and
// then 250 after the dot, QUIT with 221, and anything else with 502; enhanced
// status codes are added when exts contains "ENHANCEDSTATUSCODES". Unless
// exts contains "PIPELINING", a client that sends anything before the reply
// to its previous command is reported with tb.Errorf (RFC 2920 §3.1); the
// check cannot see every such client, but never blames one that waits. It returns
// when the client quits or the connection ends, with the error that ended
// it, nil after QUIT.
//
// A handler typically scripts the odd part first and then calls Serve:
//
//	c.Reply("220-first line", "220 second line") // a multi-line greeting
//	c.Serve("8BITMIME")
func (c *RawConn) Serve(exts ...string) error {
	c.tb.Helper()
	enh := func(code, text string) string { return code + " " + text }
	pipelining := false
	for _, e := range exts {
		switch strings.ToUpper(e) {
		case "ENHANCEDSTATUSCODES":
			enh = func(code, text string) string {
				return code + " " + code[:1] + ".0.0 " + text
			}
		case "PIPELINING":
			pipelining = true
		}
	}
	var m *Received
	for {
		line, err := c.ReadLine()
		if err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
		if !pipelining {
			c.checkNotPipelined(line)
		}
		verb, arg, _ := strings.Cut(line, " ")
		switch strings.ToUpper(verb) {
		case "EHLO":
			c.helo = arg
			m = nil
			err = c.Reply(ehloReply(exts)...)
		case "HELO":
			c.helo = arg
			m = nil
			err = c.Reply("250 localhost")
		case "MAIL":
			m = &Received{Session: c.n, Helo: c.helo, TLS: c.TLS(), From: path(arg)}
			err = c.Reply(enh("250", "sender ok"))
		case "RCPT":
			if m == nil {
				err = c.Reply(enh("503", "need MAIL first"))
				break
			}
			m.To = append(m.To, path(arg))
			m.RcptOptions = append(m.RcptOptions, smtp.RcptOptions{})
			err = c.Reply(enh("250", "recipient ok"))
		case "DATA":
			if m == nil || len(m.To) == 0 {
				err = c.Reply(enh("503", "need RCPT first"))
				break
			}
			if err = c.Reply("354 go ahead"); err != nil {
				break
			}
			if m.Data, err = c.ReadData(); err != nil {
				break
			}
			if !pipelining {
				c.checkNotPipelined("the message data")
			}
			msg := *m
			m = nil
			c.s.update(func() { c.s.messages = append(c.s.messages, msg) })
			err = c.Reply(enh("250", "queued"))
		case "RSET":
			m = nil
			err = c.Reply(enh("250", "ok"))
		case "NOOP":
			err = c.Reply(enh("250", "ok"))
		case "QUIT":
			c.Reply(enh("221", "bye"))
			return c.Close()
		default:
			err = c.Reply(enh("502", "command not implemented"))
		}
		if err != nil {
			return err
		}
	}
}

// path returns the address inside the first <...> of a MAIL or RCPT
// argument, or "" when there is none.
func path(arg string) string {
	_, rest, ok := strings.Cut(arg, "<")
	if !ok {
		return ""
	}
	addr, _, _ := strings.Cut(rest, ">")
	return addr
}

// checkNotPipelined reports a client that sent more bytes after what was
// read last, before getting the reply to it.
func (c *RawConn) checkNotPipelined(what string) {
	c.tb.Helper()
	if n := c.r.Buffered(); n > 0 {
		c.tb.Errorf("deliverytest: session %d: client sent %d bytes after %q without waiting for the reply, and PIPELINING was not offered", c.n, n, what)
	}
}
