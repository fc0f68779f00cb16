package delivery

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"

	"github.com/emersion/go-smtp"

	"github.com/outboundmail/outbound/delivery/rfc5321"
)

// attempt is the state of one Deliver call.
type attempt struct {
	d    *Deliverer
	ctx  context.Context
	dest string
	msg  *Message
	t    Timeouts
	log  *slog.Logger
	rep  *Report

	bodyRead bool // msg.Body has been (at least partly) read
}

// set records the outcome for recipient i.
func (a *attempt) set(i int, class Class, stage Stage, host string, r Reply, err error) {
	res := &a.rep.Results[i]
	res.Class, res.Stage, res.Host, res.Reply, res.Err = class, stage, host, r, nil
	res.PossibleDuplicate = false
	if err != nil {
		// A connection closed because ctx ended fails with "use of closed
		// network connection"; say why it was closed.
		if cause := context.Cause(a.ctx); cause != nil && !errors.Is(err, cause) {
			err = fmt.Errorf("%w: %w", cause, err)
		}
		res.Err = &Error{Stage: stage, Host: host, Reply: r, Err: err}
	}
}

// validate gives a permanent Result to recipients whose envelope cannot be
// sent as it is, and returns the others. Addresses are checked here, not by
// go-smtp, which lets "a@b> NOTIFY=NEVER" through as ESMTP parameters
// (DEPENDENCIES A1).
func (a *attempt) validate() []int {
	msg := a.msg
	fail := func(idx []int, stage Stage, r Reply, err error) {
		for _, i := range idx {
			a.set(i, Permanent, stage, "", r, err)
		}
	}
	all := make([]int, len(msg.Recipients))
	for i := range all {
		all[i] = i
	}
	if err := rfc5321.CheckReversePath(msg.From); err != nil {
		fail(all, StageMAIL, Reply{Code: 553, Enhanced: EnhancedCode{5, 1, 7}, Text: "invalid sender address"}, err)
		return nil
	}
	if err := checkMailParams(msg); err != nil {
		fail(all, StageMAIL, Reply{Code: 501, Enhanced: EnhancedCode{5, 5, 4}, Text: "invalid MAIL parameter"}, err)
		return nil
	}
	var pending []int
	for i, r := range msg.Recipients {
		if err := rfc5321.CheckMailbox(r.Address); err != nil {
			fail([]int{i}, StageRCPT, Reply{Code: 553, Enhanced: EnhancedCode{5, 1, 3}, Text: "invalid recipient address"}, err)
			continue
		}
		if _, err := rcptOptions(r); err != nil {
			fail([]int{i}, StageRCPT, Reply{Code: 501, Enhanced: EnhancedCode{5, 5, 4}, Text: "invalid RCPT parameter"}, err)
			continue
		}
		pending = append(pending, i)
	}
	return pending
}

// run delivers to the pending recipients: resolve, take a connection (idle
// or new), and run as many transactions as 452 replies require.
func (a *attempt) run(pending []int) {
	rt, rerr := a.d.resolve(a.ctx, a.dest)
	if rerr != nil {
		a.hostFailed(&hostFailure{stage: StageResolve, reply: rerr.reply, err: rerr.err, permanent: rerr.reply.Code/100 == 5}, pending)
		return
	}
	s, f := a.session(rt, false)
	if f != nil {
		a.hostFailed(f, pending)
		return
	}
	retried := false
	for len(pending) > 0 {
		if a.bodyRead {
			if err := a.rewind(); err != nil {
				for _, i := range pending {
					a.set(i, Temporary, StageRCPT, s.host, Reply{}, err)
				}
				break
			}
		}
		next, stale := a.transact(s, pending)
		if stale != nil {
			if !retried && a.ctx.Err() == nil {
				// A connection from the pool died before MAIL was answered:
				// the server closed it while idle. No reply to this message
				// was seen, so a fresh connection is not a retry of
				// anything the server said.
				a.log.Debug("smtp idle connection was dead, reconnecting", "host", s.host, "err", stale)
				retried = true
				a.release(s)
				if s, f = a.session(rt, true); f != nil {
					a.hostFailed(f, pending)
					return
				}
				continue
			}
			for _, i := range pending {
				a.set(i, Temporary, stale.Stage, s.host, stale.Reply, stale.Err)
			}
			break
		}
		a.rep.TLS = s.tls
		a.rep.Extensions = s.ext
		if s.broken {
			for _, i := range next {
				a.set(i, Temporary, StageRCPT, s.host, Reply{}, ErrNotAttempted)
			}
			break
		}
		pending = next
	}
	a.release(s)
}

// session takes an idle connection for the destination, or opens one.
// fresh skips the idle ones.
func (a *attempt) session(rt *route, fresh bool) (*session, *hostFailure) {
	lim := a.d.poolLimits()
	s, err := a.d.pool.get(a.ctx, a.dest, lim, !fresh)
	if err != nil {
		return nil, &hostFailure{stage: StageConnect, err: err}
	}
	if s != nil {
		s.bind(a.ctx)
		s.fromPool = true
		return s, nil
	}
	s, f := a.connect(rt)
	if f != nil {
		a.d.pool.release(a.dest)
		return nil, f
	}
	return s, nil
}

// release hands the session back to the pool, which keeps it if it is
// healthy and the limits allow.
func (a *attempt) release(s *session) {
	s.unbind()
	a.d.pool.put(s, a.d.poolLimits())
}

// hostFailed records that no transaction could start: every pending
// recipient gets the failure, and unless it is a permanent DNS answer or our
// own ctx, the destination as a whole is unavailable.
func (a *attempt) hostFailed(f *hostFailure, pending []int) {
	class := Temporary
	if f.permanent {
		class = Permanent
	}
	for _, i := range pending {
		a.set(i, class, f.stage, f.host, f.reply, f.err)
	}
	if !f.permanent && a.ctx.Err() == nil {
		a.destinationDown(f.stage, f.host, f.reply, f.err)
	}
}

func (a *attempt) destinationDown(stage Stage, host string, r Reply, err error) {
	a.rep.DestinationUnavailable = true
	a.rep.DestinationStage = stage
	a.rep.DestinationReply = r
	a.rep.DestinationErr = &Error{Stage: stage, Host: host, Reply: r, Err: err}
}

// rewind makes the body readable again for another transaction.
func (a *attempt) rewind() error {
	sk, ok := a.msg.Body.(io.Seeker)
	if !ok {
		return ErrBodyNotRewindable
	}
	if _, err := sk.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("rewinding the body: %w", err)
	}
	a.bodyRead = false
	return nil
}

// failed records an error from go-smtp for the recipients idx at stage: a
// server reply is classified; anything else (network, protocol, timeout)
// is temporary. Unless the reply leaves the session usable, the connection
// is closed; a 421 also marks the destination unavailable (RFC 5321 §3.8).
func (a *attempt) failed(s *session, idx []int, stage Stage, err error) {
	r, isReply := asReply(err)
	if isReply {
		err = nil
	}
	a.failedWith(s, idx, stage, r, err)
}

// failedWith is failed for a reply r (err nil) or an error without one.
func (a *attempt) failedWith(s *session, idx []int, stage Stage, r Reply, err error) {
	isReply := err == nil
	class := Temporary
	if isReply {
		class = Classify(stage, r)
	}
	for _, i := range idx {
		a.set(i, class, stage, s.host, r, err)
	}
	if !isReply || closesConnection(r) {
		s.close()
	}
	if r.Code == 421 {
		a.destinationDown(stage, s.host, r, nil)
	}
	args := []any{"host", s.host, "stage", stage, "recipients", len(idx), "class", class}
	if isReply {
		args = append(args, "reply", r.String())
	} else {
		args = append(args, "err", err)
	}
	a.log.Info("smtp not delivered", args...)
}

// reset ends a transaction that did not reach the final dot, so the
// connection can carry another one.
func (a *attempt) reset(s *session) {
	if s.broken {
		return
	}
	s.c.CommandTimeout = a.t.EHLO
	if err := s.c.Reset(); err != nil {
		s.close()
		return
	}
	s.needHello = true
}

// transact runs one mail transaction for batch on s and records a Result
// for every recipient of batch except those it returns in next, which a 452
// (or the server's RCPTMAX) left for another transaction. A non-nil stale
// reports a session from the pool that failed before MAIL was answered,
// and why; the recipients of batch are then not recorded.
func (a *attempt) transact(s *session, batch []int) (next []int, stale *Error) {
	msg, c, t := a.msg, s.c, a.t
	staleErr := func(stage Stage, err error) *Error {
		r, _ := asReply(err)
		if r.Code != 0 {
			err = nil
		}
		return a.staleErr(s, stage, r, err)
	}
	if s.needHello {
		c.CommandTimeout = t.EHLO
		if err := c.Hello(a.d.hostname); err != nil {
			if s.fromPool {
				return nil, staleErr(StageEHLO, err)
			}
			a.failed(s, batch, StageEHLO, err)
			s.close()
			return nil, nil
		}
		s.needHello = false
		s.ext = extensions(c)
	}
	batch = a.checkExtensions(s, batch)
	if len(batch) == 0 {
		return nil, nil
	}

	needUTF8 := rfc5321.NeedsSMTPUTF8(msg.From)
	for _, i := range batch {
		needUTF8 = needUTF8 || rfc5321.NeedsSMTPUTF8(msg.Recipients[i].Address)
	}
	if a.canPipeline(s) {
		if next, stale, ok := a.transactPipelined(s, batch, needUTF8); ok {
			return next, stale
		}
	}
	c.CommandTimeout = t.Mail
	err := c.Mail(msg.From, &smtp.MailOptions{
		Size:       msg.Size,
		UTF8:       needUTF8,
		RequireTLS: msg.RequireTLS,
		Return:     smtp.DSNReturn(strings.ToUpper(msg.Return)),
		EnvelopeID: msg.EnvelopeID,
	})
	if err != nil {
		if r, ok := asReply(err); s.fromPool && (!ok || r.Code == 421) {
			return nil, staleErr(StageMAIL, err)
		}
		a.failed(s, batch, StageMAIL, err)
		return nil, nil
	}
	s.fromPool = false

	var accepted []int
	max := rcptMax(c)
	for k, i := range batch {
		if max > 0 && k == max {
			next = batch[k:]
			break
		}
		opts, _ := rcptOptions(msg.Recipients[i]) // validated earlier
		c.CommandTimeout = t.Rcpt
		err := c.Rcpt(msg.Recipients[i].Address, opts)
		if err == nil {
			accepted = append(accepted, i)
			continue
		}
		r, ok := asReply(err)
		if !ok || closesConnection(r) {
			a.failed(s, append(accepted, batch[k:]...), StageRCPT, err)
			return nil, nil
		}
		if tooManyRecipients(r, len(accepted)) {
			// RFC 5321 §4.5.3.1.10: send the rest in another transaction.
			next = batch[k:]
			break
		}
		a.failed(s, []int{i}, StageRCPT, err)
	}
	if len(accepted) == 0 {
		a.reset(s)
		return next, nil
	}

	c.CommandTimeout = t.Data
	w, err := c.Data()
	if err != nil {
		a.failed(s, accepted, StageDATA, err)
		a.reset(s)
		return next, nil
	}
	a.sendBody(s, w, accepted)
	return next, nil
}

// staleErr closes a session from the pool that failed before MAIL was
// answered and says why, for run to retry on a fresh connection.
func (a *attempt) staleErr(s *session, stage Stage, r Reply, err error) *Error {
	s.close()
	return &Error{Stage: stage, Host: s.host, Reply: r, Err: err}
}

// sendBody streams the message and reads the reply to the final dot. It
// reports whether the session is still usable.
func (a *attempt) sendBody(s *session, w *smtp.DataCommand, accepted []int) bool {
	if !a.copyBody(s, w, accepted) {
		return false
	}
	s.c.SubmissionTimeout = a.t.EndData
	resp, err := w.CloseWithResponse()
	if err != nil {
		r, ok := asReply(err)
		if ok {
			err = nil
		}
		return a.endDataFailed(s, accepted, r, err)
	}
	a.delivered(s, accepted, replyFromText(250, resp.StatusText, EnhancedCode{}))
	return true
}

// copyBody copies the message body to w (a dot-stuffing writer on s), up
// to but not including the final dot. On failure it closes the connection,
// which aborts DATA without the dot, records the outcome for accepted and
// reports false.
func (a *attempt) copyBody(s *session, w io.Writer, accepted []int) bool {
	a.bodyRead = true
	src := &bodyReader{r: rfc5321.NewReader(a.msg.Body)}
	if ok, _ := s.c.Extension("8BITMIME"); !ok {
		src.sevenBit = true
	}
	s.wc.writeErr = nil
	s.wc.block = a.t.Block
	defer func() { s.wc.block = 0 }()

	buf, _ := a.d.bufs.Get().(*[]byte)
	if buf == nil {
		b := make([]byte, 8<<10) // the DotWriter buffers 4 KiB per write anyway
		buf = &b
	}
	_, err := io.CopyBuffer(w, src, *buf)
	a.d.bufs.Put(buf)
	if err == nil {
		return true
	}
	// Abort without the final dot: closing the connection is the only
	// way to end DATA without the server taking what it has.
	s.close()
	stage, class, r := StageBody, Temporary, Reply{}
	var de *rfc5321.DataError
	switch {
	case src.err == nil:
		// The write failed: the connection is gone.
	case errors.As(src.err, &de):
		class, r = Permanent, Reply{Code: 554, Enhanced: EnhancedCode{5, 6, 0}, Text: "message data refused: " + de.Reason}
	case errors.Is(src.err, errEightBit):
		class, r = Permanent, Reply{Code: 554, Enhanced: EnhancedCode{5, 6, 3}, Text: "8-bit content to a server without 8BITMIME"}
	default:
		err = fmt.Errorf("reading the message body: %w", err)
	}
	for _, i := range accepted {
		a.set(i, class, stage, s.host, r, err)
	}
	return false
}

// endDataFailed records a refusal r of the final dot (err nil), or err: no
// reply came. It reports whether the session is still usable.
func (a *attempt) endDataFailed(s *session, accepted []int, r Reply, err error) bool {
	if err == nil {
		a.failedWith(s, accepted, StageEndData, r, nil)
		return !s.broken
	}
	// Lost after the final dot was written, before the reply: the
	// server may have taken the message (RFC 1047, RFC 5321 §4.1.1.4).
	dup := s.wc.writeErr == nil
	a.failedWith(s, accepted, StageEndData, Reply{}, err)
	for _, i := range accepted {
		a.rep.Results[i].PossibleDuplicate = dup
	}
	return false
}

// delivered records the server's acceptance r of the final dot.
func (a *attempt) delivered(s *session, accepted []int, r Reply) {
	for _, i := range accepted {
		a.set(i, Delivered, StageEndData, s.host, r, nil)
	}
	s.transactions++
	a.log.Info("smtp delivered", "host", s.host, "recipients", len(accepted), "tls", s.tls.Encrypted)
}

// checkExtensions decides, before MAIL, what this server cannot take, and
// returns the recipients that remain. go-smtp would otherwise send 8-bit
// data to a 7-bit server, silently drop DSN parameters, and never compare
// SIZE (DEPENDENCIES A5.6–A5.8).
func (a *attempt) checkExtensions(s *session, batch []int) []int {
	msg, c := a.msg, s.c
	all := func(r Reply) []int {
		for _, i := range batch {
			a.set(i, Permanent, StageMAIL, s.host, r, nil)
		}
		return nil
	}
	if ok, _ := c.Extension("REQUIRETLS"); msg.RequireTLS && (!ok || !s.tls.Encrypted) {
		// RFC 8689 §4.2.2: no REQUIRETLS at the next hop ends the attempt.
		return all(Reply{Code: 550, Enhanced: EnhancedCode{5, 7, 30}, Text: "REQUIRETLS not supported by " + s.host})
	}
	if max, ok := c.MaxMessageSize(); ok && max > 0 && msg.Size > int64(max) {
		// RFC 1870 §6.1: the server's fixed maximum is a permanent limit.
		return all(Reply{Code: 552, Enhanced: EnhancedCode{5, 3, 4},
			Text: "message size " + strconv.FormatInt(msg.Size, 10) + " exceeds the limit " + strconv.Itoa(max) + " of " + s.host})
	}
	if ok, _ := c.Extension("8BITMIME"); msg.EightBit && !ok {
		// RFC 6152 §3: 8-bit data only to a server that offers 8BITMIME.
		return all(Reply{Code: 554, Enhanced: EnhancedCode{5, 6, 3}, Text: "8-bit content to a server without 8BITMIME"})
	}
	if ok, _ := c.Extension("SMTPUTF8"); !ok {
		// RFC 6531 §3.4: a non-ASCII address needs SMTPUTF8.
		r := Reply{Code: 553, Enhanced: EnhancedCode{5, 6, 7}, Text: "non-ASCII address and no SMTPUTF8 at " + s.host}
		if rfc5321.NeedsSMTPUTF8(msg.From) {
			return all(r)
		}
		var keep []int
		for _, i := range batch {
			if rfc5321.NeedsSMTPUTF8(msg.Recipients[i].Address) {
				a.set(i, Permanent, StageRCPT, s.host, r, nil)
			} else {
				keep = append(keep, i)
			}
		}
		batch = keep
	}
	return batch
}

// errEightBit: the body has 8-bit octets the message did not declare, and
// the server has no 8BITMIME.
var errEightBit = errors.New("8-bit octet in a message sent as 7-bit")

// bodyReader remembers why reading the body failed, to tell a local
// problem from a network one, and refuses 8-bit data for a 7-bit server.
type bodyReader struct {
	r        *rfc5321.Reader
	sevenBit bool
	err      error
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if b.sevenBit && n > 0 && b.r.EightBit() {
		err = errEightBit
	}
	if err != nil && err != io.EOF {
		b.err = err
		return 0, err
	}
	return n, err
}

// rcptOptions builds the RCPT parameters of r, checked so that go-smtp
// cannot fail on them after MAIL was sent.
func rcptOptions(r Recipient) (*smtp.RcptOptions, error) {
	opts := &smtp.RcptOptions{}
	if r.Notify != nil {
		seen := map[string]bool{}
		for _, n := range r.Notify {
			n = strings.ToUpper(n)
			switch n {
			case "NEVER", "SUCCESS", "FAILURE", "DELAY":
			default:
				return nil, fmt.Errorf("NOTIFY value %q", n)
			}
			if seen[n] {
				return nil, fmt.Errorf("NOTIFY value %q repeated", n)
			}
			seen[n] = true
			opts.Notify = append(opts.Notify, smtp.DSNNotify(n))
		}
		if len(seen) == 0 || (seen["NEVER"] && len(seen) > 1) {
			return nil, errors.New("NOTIFY must be NEVER alone or some of SUCCESS, FAILURE, DELAY")
		}
	}
	if r.ORCPT != "" {
		typ, addr, ok := strings.Cut(r.ORCPT, ";")
		if !ok || !strings.EqualFold(typ, "rfc822") || addr == "" || len(r.ORCPT) > 500 {
			return nil, fmt.Errorf("ORCPT %q is not \"rfc822;address\"", r.ORCPT)
		}
		for _, c := range addr {
			if c < ' ' || c == 0x7f {
				return nil, fmt.Errorf("ORCPT %q has a control character", r.ORCPT)
			}
		}
		opts.OriginalRecipientType = smtp.DSNAddressTypeRFC822
		if rfc5321.NeedsSMTPUTF8(addr) {
			// RFC 6533 §3.2: a non-ASCII original address is utf-8-addr.
			opts.OriginalRecipientType = smtp.DSNAddressTypeUTF8
		}
		opts.OriginalRecipient = addr
	}
	return opts, nil
}

// checkMailParams checks RET and ENVID (RFC 3461 §4.3, §4.4).
func checkMailParams(msg *Message) error {
	switch strings.ToUpper(msg.Return) {
	case "", "FULL", "HDRS":
	default:
		return fmt.Errorf("RET value %q", msg.Return)
	}
	if len(msg.EnvelopeID) > 100 {
		return errors.New("ENVID longer than 100 characters")
	}
	for _, c := range msg.EnvelopeID {
		if c < ' ' || c > '~' {
			return fmt.Errorf("ENVID %q is not printable ASCII", msg.EnvelopeID)
		}
	}
	return nil
}

// rcptMax is the server's RFC 9422 LIMITS RCPTMAX, or 0.
func rcptMax(c *smtp.Client) int {
	ok, params := c.Extension("LIMITS")
	if !ok {
		return 0
	}
	for _, p := range strings.Fields(params) {
		k, v, _ := strings.Cut(p, "=")
		if strings.EqualFold(k, "RCPTMAX") {
			if n, err := strconv.Atoi(v); err == nil && n > 0 {
				return n
			}
		}
	}
	return 0
}

// knownExtensions are the EHLO keywords reported in Report.Extensions.
const knownExtensions = "8BITMIME AUTH CHUNKING DSN ENHANCEDSTATUSCODES LIMITS PIPELINING REQUIRETLS SIZE SMTPUTF8 STARTTLS"

// extensions lists what the server offered after TLS, as go-smtp saw it
// (upper-case keywords only; see the package documentation). It must be
// called right after Hello: go-smtp's Extension sends EHLO itself when it
// thinks none was sent.
func extensions(c *smtp.Client) []string {
	var out []string
	for _, k := range strings.Fields(knownExtensions) {
		if ok, p := c.Extension(k); ok {
			if p != "" {
				k += " " + p
			}
			out = append(out, k)
		}
	}
	return out
}
