package delivery

// Pipelining (RFC 2920). When the EHLO reply lists PIPELINING (and
// Deliverer.NoPipelining is false), a mail transaction is sent as one
// write, "MAIL FROM, RCPT TO…, DATA", and the replies are read in order,
// each with its own timeout and ReplyLimits; then the body, the final dot
// and its reply: two round trips per message instead of 3 + recipients.
// Every reply means what it means without pipelining (see the
// classification table): a refused MAIL fails every recipient and the RCPT
// and DATA replies are read and dropped; a 452 to RCPT leaves the
// recipient for the next transaction; a 421 or a lost connection stops
// there. RFC 2920 §3.1 says the server refuses DATA when no RCPT succeeded;
// a server that answers 354 then, or after a refused MAIL, has its
// connection closed without a body or a dot. Groups are cut at
// pipelineMaxCommands commands so that neither side can block on a full
// socket buffer (§3.1, deadlock). go-smtp's client has no pipelining: the
// transaction bypasses it and talks to the wireConn directly, which is
// safe because its Client keeps no per-transaction state that matters
// outside LMTP; EHLO, RSET and QUIT still go through it, and so does every
// transaction on a server without PIPELINING.

import (
	"bufio"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
)

// pipelineMaxCommands bounds one pipelined write. Replies are about 40
// octets, so both sides' socket buffers hold those of a whole group.
const pipelineMaxCommands = 100

// canPipeline reports whether transactions on s may be pipelined.
func (a *attempt) canPipeline(s *session) bool {
	if a.d.NoPipelining {
		return false
	}
	ok, _ := s.c.Extension("PIPELINING")
	return ok
}

// transactPipelined is transact for a server that offers PIPELINING, from
// MAIL on, with the same results. ok is false when it sent nothing because
// a command cannot be built as go-smtp would build it: transact then takes
// the go-smtp path, which reports the problem as it always has.
func (a *attempt) transactPipelined(s *session, batch []int, needUTF8 bool) (next []int, stale *Error, ok bool) {
	msg, c, t := a.msg, s.c, a.t
	send, over := batch, []int(nil)
	if max := rcptMax(c); max > 0 && len(batch) > max {
		send, over = batch[:max], batch[max:]
	}
	lines := make([]string, 0, len(send)+2)
	mail, ok := mailLine(c, msg, needUTF8)
	if !ok {
		return nil, nil, false
	}
	lines = append(lines, mail)
	for _, i := range send {
		opts, _ := rcptOptions(msg.Recipients[i]) // validated earlier
		l, ok := rcptLine(c, msg.Recipients[i].Address, opts)
		if !ok {
			return nil, nil, false
		}
		lines = append(lines, l)
	}
	lines = append(lines, "DATA")

	wc := s.wc
	defer wc.SetDeadline(time.Time{})
	if wc.br == nil {
		wc.br = bufio.NewReaderSize(wc, 4096)
	}
	read := func(timeout time.Duration) (Reply, error) {
		wc.SetReadDeadline(s.deadline(timeout))
		return ReadReply(wc.br, wc.lim)
	}
	timeoutOf := func(j int) time.Duration {
		switch j {
		case 0:
			return t.Mail
		case len(lines) - 1:
			return t.Data
		}
		return t.Rcpt
	}

	var accepted, deferred []int
	// rest is every recipient of batch without an outcome yet, from the
	// one of RCPT k on, for a failure that ends the transaction.
	rest := func(k int) []int {
		idx := append(append(append([]int(nil), accepted...), deferred...), send[k:]...)
		return append(idx, over...)
	}
	for start := 0; start < len(lines); start += pipelineMaxCommands {
		end := min(len(lines), start+pipelineMaxCommands)
		if err := a.writeGroup(s, lines[start:end], timeoutOf(start)); err != nil {
			if start > 0 {
				a.failedWith(s, rest(start-1), StageRCPT, Reply{}, err)
				return nil, nil, true
			}
			if s.fromPool {
				return nil, a.staleErr(s, StageMAIL, Reply{}, err), true
			}
			a.failedWith(s, batch, StageMAIL, Reply{}, err)
			return nil, nil, true
		}
		for j := start; j < end && j < len(lines)-1; j++ { // DATA's reply: below
			r, err := read(timeoutOf(j))
			switch {
			case j == 0: // MAIL
				if s.fromPool && (err != nil || r.Code == 421) {
					return nil, a.staleErr(s, StageMAIL, r, err), true
				}
				if err == nil && r.Code == 250 {
					s.fromPool = false
					continue
				}
				a.failedWith(s, batch, StageMAIL, r, err)
				if !s.broken {
					a.drain(s, read, end-1, end == len(lines))
				}
				return nil, nil, true

			default: // RCPT
				k := j - 1
				i := send[k]
				if err == nil && r.Code/10 == 25 {
					accepted = append(accepted, i)
					continue
				}
				if err != nil || closesConnection(r) {
					a.failedWith(s, rest(k), StageRCPT, r, err)
					return nil, nil, true
				}
				if tooManyRecipients(r, len(accepted)) {
					// RFC 5321 §4.5.3.1.10: in another transaction.
					deferred = append(deferred, i)
					continue
				}
				a.failedWith(s, []int{i}, StageRCPT, r, nil)
			}
		}
	}
	next = append(deferred, over...)

	// The reply to DATA.
	r, err := read(t.Data)
	if len(accepted) == 0 {
		switch {
		case err != nil, r.Code == 354:
			// 354 with no recipient: the two sides disagree on the
			// transaction; never send a body or a dot.
			a.log.Info("smtp closing: DATA not refused with no recipient accepted", "host", s.host, "reply", r.String(), "err", err)
			s.close()
		case closesConnection(r):
			s.close()
			if r.Code == 421 {
				a.destinationDown(StageDATA, s.host, r, nil)
			}
		default:
			a.reset(s)
		}
		return next, nil, true
	}
	if err != nil || r.Code != 354 {
		a.failedWith(s, accepted, StageDATA, r, err)
		a.reset(s)
		return next, nil, true
	}

	if wc.bw == nil {
		wc.bw = bufio.NewWriterSize(wc, 4096)
	}
	dw := textproto.NewWriter(wc.bw).DotWriter()
	if !a.copyBody(s, dw, accepted) {
		return next, nil, true
	}
	wc.block = t.Block
	err = dw.Close() // the final dot, and a flush
	wc.block = 0
	if err == nil {
		r, err = read(t.EndData)
	}
	switch {
	case err != nil:
		a.endDataFailed(s, accepted, Reply{}, err)
	case r.Code != 250:
		a.endDataFailed(s, accepted, r, nil)
	default:
		a.delivered(s, accepted, r)
	}
	return next, nil, true
}

// writeGroup writes lines as one pipelined group.
func (a *attempt) writeGroup(s *session, lines []string, timeout time.Duration) error {
	b := s.wc.cmdBuf[:0]
	for _, l := range lines {
		b = append(b, l...)
		b = append(b, '\r', '\n')
	}
	s.wc.cmdBuf = b
	s.wc.SetWriteDeadline(s.deadline(timeout))
	_, err := s.wc.writeGroup(b, len(lines))
	return err
}

// drain reads and drops the replies to the commands after a refused MAIL,
// up to command last, and closes the connection if one of them is not a
// refusal as RFC 2920 §3.1 expects: after a refused MAIL, a 354 to DATA
// (withData) means the server would take a body.
func (a *attempt) drain(s *session, read func(time.Duration) (Reply, error), last int, withData bool) {
	for j := 1; j <= last; j++ {
		timeout := a.t.Rcpt
		if withData && j == last {
			timeout = a.t.Data
		}
		r, err := read(timeout)
		switch {
		case err != nil, withData && j == last && r.Code == 354:
			s.close()
			return
		case r.Code == 421:
			s.close()
			a.destinationDown(StageMAIL, s.host, r, nil)
			return
		}
	}
}

// mailLine builds MAIL FROM as go-smtp's Client.Mail would for these
// options; false where go-smtp would fail instead of sending it.
func mailLine(c *smtp.Client, msg *Message, utf8 bool) (string, bool) {
	if strings.ContainsAny(msg.From, "\r\n") {
		return "", false
	}
	has := func(ext string) bool { ok, _ := c.Extension(ext); return ok }
	var b strings.Builder
	b.Grow(64 + len(msg.From) + len(msg.EnvelopeID)*3)
	b.WriteString("MAIL FROM:<")
	b.WriteString(msg.From)
	b.WriteString(">")
	if has("8BITMIME") {
		b.WriteString(" BODY=8BITMIME")
	}
	if has("SIZE") && msg.Size != 0 {
		b.WriteString(" SIZE=")
		b.WriteString(strconv.FormatInt(msg.Size, 10))
	}
	if msg.RequireTLS {
		if !has("REQUIRETLS") {
			return "", false
		}
		b.WriteString(" REQUIRETLS")
	}
	if utf8 {
		if !has("SMTPUTF8") {
			return "", false
		}
		b.WriteString(" SMTPUTF8")
	}
	if has("DSN") {
		switch ret := strings.ToUpper(msg.Return); ret {
		case "":
		case string(smtp.DSNReturnFull), string(smtp.DSNReturnHeaders):
			b.WriteString(" RET=")
			b.WriteString(ret)
		default:
			return "", false
		}
		if msg.EnvelopeID != "" {
			if !isPrintableASCII(msg.EnvelopeID) {
				return "", false
			}
			b.WriteString(" ENVID=")
			b.WriteString(xtext(msg.EnvelopeID, false, false))
		}
	}
	return b.String(), true
}

// rcptLine builds RCPT TO as go-smtp's Client.Rcpt would for opts; false
// where go-smtp would fail instead of sending it.
func rcptLine(c *smtp.Client, to string, opts *smtp.RcptOptions) (string, bool) {
	if strings.ContainsAny(to, "\r\n") {
		return "", false
	}
	var b strings.Builder
	b.Grow(32 + len(to))
	b.WriteString("RCPT TO:<")
	b.WriteString(to)
	b.WriteString(">")
	if ok, _ := c.Extension("DSN"); ok && opts != nil {
		for k, n := range opts.Notify {
			if k == 0 {
				b.WriteString(" NOTIFY=")
			} else {
				b.WriteString(",")
			}
			b.WriteString(string(n))
		}
		if opts.OriginalRecipient != "" {
			var enc string
			switch opts.OriginalRecipientType {
			case smtp.DSNAddressTypeRFC822:
				if !isPrintableASCII(opts.OriginalRecipient) {
					return "", false
				}
				enc = xtext(opts.OriginalRecipient, false, false)
			case smtp.DSNAddressTypeUTF8:
				utf8, _ := c.Extension("SMTPUTF8")
				enc = xtext(opts.OriginalRecipient, true, utf8)
			default:
				return "", false
			}
			b.WriteString(" ORCPT=")
			b.WriteString(string(opts.OriginalRecipientType))
			b.WriteString(";")
			b.WriteString(enc)
		}
	}
	return b.String(), true
}

// xtext encodes s as go-smtp does: RFC 3461 xtext ("+HH"), or with utf8Addr
// RFC 6533 utf-8-addr-xtext ("\x{HH}"), keeping non-ASCII characters as
// they are when unitext (utf-8-addr-unitext).
func xtext(s string, utf8Addr, unitext bool) string {
	var b strings.Builder
	b.Grow(len(s))
	for _, ch := range s {
		switch {
		case ch >= '!' && ch <= '~' && ch != '+' && ch != '=':
			b.WriteRune(ch)
		case unitext && ch > 0x7f:
			b.WriteRune(ch)
		case utf8Addr:
			b.WriteString(`\x{`)
			b.WriteString(strings.ToUpper(strconv.FormatInt(int64(ch), 16)))
			b.WriteString("}")
		default:
			b.WriteString("+")
			b.WriteString(strings.ToUpper(strconv.FormatInt(int64(ch), 16)))
		}
	}
	return b.String()
}

func isPrintableASCII(s string) bool {
	for _, ch := range s {
		if ch < ' ' || ch > '~' {
			return false
		}
	}
	return true
}
