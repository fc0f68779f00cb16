package delivery_test

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/outboundmail/outbound/delivery"
	"github.com/outboundmail/outbound/delivery/deliverytest"
	"github.com/outboundmail/outbound/delivery/rfc5321"
)

const (
	D = delivery.Delivered
	T = delivery.Temporary
	P = delivery.Permanent
)

func TestDeliver_Delivered(t *testing.T) {
	srv := deliverytest.NewServer(t, nil)
	d, _, _ := testDeliverer(t, srv.Addr)
	rep := deliver(t, d, "example.com", message(testBody, "a@example.com", "B@Example.com"))
	checkResults(t, rep, want{D, delivery.StageEndData, 250}, want{D, delivery.StageEndData, 250})
	if r := rep.Results[0]; r.Reply.Enhanced != (delivery.EnhancedCode{2, 0, 0}) || r.Reply.Text != "OK: queued" ||
		r.Host != "mx1.example.com[192.0.2.1]:25" || r.Err != nil || r.PossibleDuplicate {
		t.Errorf("result 0 = %+v", r)
	}
	if rep.DestinationUnavailable || rep.TLS.Encrypted || !slices.Contains(rep.Extensions, "8BITMIME") {
		t.Errorf("report: unavailable %v, TLS %v, extensions %q", rep.DestinationUnavailable, rep.TLS, rep.Extensions)
	}
	msgs := srv.Messages()
	if len(msgs) != 1 {
		t.Fatalf("server got %d messages, want 1", len(msgs))
	}
	m := msgs[0]
	if m.Helo != "client.example.org" || m.From != "sender@example.org" ||
		!slices.Equal(m.To, []string{"a@example.com", "B@Example.com"}) || string(m.Data) != testBody {
		t.Errorf("server got helo %q from %q to %q data %q", m.Helo, m.From, m.To, m.Data)
	}
	if m.MailOptions.Size != int64(len(testBody)) {
		t.Errorf("SIZE = %d, want %d", m.MailOptions.Size, len(testBody))
	}
}

// TestDeliver_NullSender: DSNs go out with MAIL FROM:<> (RFC 5321 §4.5.5).
func TestDeliver_NullSender(t *testing.T) {
	srv := deliverytest.NewServer(t, nil)
	d, _, _ := testDeliverer(t, srv.Addr)
	msg := message(testBody, "a@example.com")
	msg.From = ""
	rep := deliver(t, d, "example.com", msg)
	checkResults(t, rep, want{D, delivery.StageEndData, 250})
	if cmds := srv.Commands(); len(cmds) == 0 || cmds[0].String() != "MAIL <> 250" {
		t.Errorf("commands = %v", cmds)
	}
}

// TestDeliver_RcptReplies: each recipient gets its own reply's class; only
// the accepted one is in the message (RELIABILITY §7 item 12, 13).
func TestDeliver_RcptReplies(t *testing.T) {
	srv := deliverytest.NewServer(t, &deliverytest.Script{
		Rcpt: func(to string, _ *smtp.RcptOptions) error {
			switch to {
			case "grey@example.com":
				return &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 2, 0}, Message: "Greylisted"}
			case "unknown@example.com":
				return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user"}
			case "full@example.com":
				return &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 2, 2}, Message: "Mailbox full"}
			}
			return nil
		},
	})
	d, _, _ := testDeliverer(t, srv.Addr)
	rep := deliver(t, d, "example.com", message(testBody,
		"grey@example.com", "ok@example.com", "unknown@example.com", "full@example.com"))
	checkResults(t, rep,
		want{T, delivery.StageRCPT, 450},
		want{D, delivery.StageEndData, 250},
		want{P, delivery.StageRCPT, 550},
		want{T, delivery.StageRCPT, 552}, // RFC 5321 §4.5.3.1.10
	)
	if got := rep.Results[2].Reply; got.Enhanced != (delivery.EnhancedCode{5, 1, 1}) || got.Text != "No such user" {
		t.Errorf("550 reply = %#v", got)
	}
	if rep.DestinationUnavailable {
		t.Error("a 4xx to one RCPT made the destination unavailable")
	}
	msgs := srv.Messages()
	if len(msgs) != 1 || !slices.Equal(msgs[0].To, []string{"ok@example.com"}) {
		t.Errorf("server messages = %+v", msgs)
	}
}

func TestDeliver_TransactionReplies(t *testing.T) {
	rej := func(code int, enh smtp.EnhancedCode) error {
		return &smtp.SMTPError{Code: code, EnhancedCode: enh, Message: "scripted"}
	}
	tests := []struct {
		name   string
		script deliverytest.Script
		want   want
		down   bool // DestinationUnavailable
	}{
		{"MAIL 550", deliverytest.Script{Mail: deliverytest.RejectMail(550, smtp.EnhancedCode{5, 7, 1}, "no")}, want{P, delivery.StageMAIL, 550}, false},
		{"MAIL 451", deliverytest.Script{Mail: deliverytest.RejectMail(451, smtp.EnhancedCode{4, 3, 0}, "later")}, want{T, delivery.StageMAIL, 451}, false},
		{"MAIL 421", deliverytest.Script{Mail: deliverytest.RejectMail(421, smtp.EnhancedCode{4, 3, 2}, "closing")}, want{T, delivery.StageMAIL, 421}, true},
		{"RCPT 421", deliverytest.Script{Rcpt: deliverytest.RejectRcpt(421, smtp.EnhancedCode{4, 4, 5}, "busy")}, want{T, delivery.StageRCPT, 421}, true},
		{"final 554", deliverytest.Script{Data: deliverytest.RejectData(554, smtp.EnhancedCode{5, 7, 1}, "spam")}, want{P, delivery.StageEndData, 554}, false},
		{"final 451", deliverytest.Script{Data: deliverytest.RejectData(451, smtp.EnhancedCode{4, 3, 0}, "later")}, want{T, delivery.StageEndData, 451}, false},
		{"final 421", deliverytest.Script{Data: func(string, []string, []byte) error { return rej(421, smtp.EnhancedCode{4, 3, 2}) }}, want{T, delivery.StageEndData, 421}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := deliverytest.NewServer(t, &tt.script)
			d, _, _ := testDeliverer(t, srv.Addr)
			rep := deliver(t, d, "example.com", message(testBody, "a@example.com", "b@example.com"))
			checkResults(t, rep, tt.want, tt.want)
			if rep.DestinationUnavailable != tt.down {
				t.Errorf("DestinationUnavailable = %v, want %v", rep.DestinationUnavailable, tt.down)
			}
			if tt.down && (rep.DestinationStage != tt.want.stage || rep.DestinationReply.Code != 421) {
				t.Errorf("destination verdict: %s %q", rep.DestinationStage, rep.DestinationReply)
			}
			// A second attempt works on the same connection, unless a 421
			// closed it.
			deliver(t, d, "example.com", message(testBody, "a@example.com"))
			wantSessions := 1
			if tt.down {
				wantSessions = 2
			}
			if got := srv.Sessions(); got != wantSessions {
				t.Errorf("sessions = %d, want %d", got, wantSessions)
			}
		})
	}
}

// TestDeliver_MultiLineReplyEnhancedCode: go-smtp's server puts the enhanced
// code on the last line only, which go-smtp's client misses (DEPENDENCIES A2).
func TestDeliver_MultiLineReplyEnhancedCode(t *testing.T) {
	srv := deliverytest.NewServer(t, &deliverytest.Script{
		Rcpt: deliverytest.RejectRcpt(451, smtp.EnhancedCode{4, 7, 1}, "line one\nline two"),
	})
	d, _, _ := testDeliverer(t, srv.Addr)
	rep := deliver(t, d, "example.com", message(testBody, "a@example.com"))
	got := rep.Results[0].Reply
	if got.Code != 451 || got.Enhanced != (delivery.EnhancedCode{4, 7, 1}) || got.Text != "line one\nline two" {
		t.Errorf("reply = %#v", got)
	}
}

// TestDeliver_RcptMax: with LIMITS RCPTMAX=2 the recipients go in several
// transactions on one connection, and the body is rewound between them.
func TestDeliver_RcptMax(t *testing.T) {
	srv := deliverytest.NewServer(t, &deliverytest.Script{MaxRecipients: 2})
	d, _, _ := testDeliverer(t, srv.Addr)
	rcpts := []string{"a@example.com", "b@example.com", "c@example.com", "d@example.com", "e@example.com"}
	rep := deliver(t, d, "example.com", message(testBody, rcpts...))
	for i := range rcpts {
		checkResults(t, &delivery.Report{Results: rep.Results[i : i+1]}, want{D, delivery.StageEndData, 250})
	}
	msgs := srv.Messages()
	var got [][]string
	for _, m := range msgs {
		got = append(got, m.To)
		if string(m.Data) != testBody {
			t.Errorf("message to %q has data %q", m.To, m.Data)
		}
	}
	if len(got) != 3 || !slices.Equal(got[0], rcpts[:2]) || !slices.Equal(got[2], rcpts[4:]) {
		t.Errorf("transactions = %q", got)
	}
	if srv.Sessions() != 1 {
		t.Errorf("sessions = %d, want 1", srv.Sessions())
	}
}

// TestDeliver_RcptMaxBodyNotRewindable: the recipients a second transaction
// would need are deferred when the body cannot be read twice.
func TestDeliver_RcptMaxBodyNotRewindable(t *testing.T) {
	srv := deliverytest.NewServer(t, &deliverytest.Script{MaxRecipients: 1})
	d, _, _ := testDeliverer(t, srv.Addr)
	msg := message(testBody, "a@example.com", "b@example.com")
	msg.Body = io.MultiReader(strings.NewReader(testBody)) // not an io.Seeker
	rep := deliver(t, d, "example.com", msg)
	checkResults(t, rep, want{D, delivery.StageEndData, 250}, want{T, delivery.StageRCPT, 0})
	if !errors.Is(rep.Results[1].Err, delivery.ErrBodyNotRewindable) {
		t.Errorf("err = %v, want ErrBodyNotRewindable", rep.Results[1].Err)
	}
}

func TestDeliver_DSNParameters(t *testing.T) {
	for _, dsn := range []bool{true, false} {
		srv := deliverytest.NewServer(t, &deliverytest.Script{EnableDSN: dsn})
		d, _, _ := testDeliverer(t, srv.Addr)
		msg := message(testBody, "a@example.com")
		msg.Return, msg.EnvelopeID = "hdrs", "env-1+x"
		msg.Recipients[0].Notify = []string{"failure", "DELAY"}
		msg.Recipients[0].ORCPT = "rfc822;orig@example.net"
		rep := deliver(t, d, "example.com", msg)
		checkResults(t, rep, want{D, delivery.StageEndData, 250})
		m := srv.Messages()[0]
		if !dsn {
			if m.MailOptions.Return != "" || m.MailOptions.EnvelopeID != "" || m.RcptOptions[0].Notify != nil ||
				slices.Contains(rep.Extensions, "DSN") {
				t.Errorf("DSN parameters sent to a server without DSN: %+v %+v", m.MailOptions, m.RcptOptions[0])
			}
			continue
		}
		ro := m.RcptOptions[0]
		if m.MailOptions.Return != smtp.DSNReturnHeaders || m.MailOptions.EnvelopeID != "env-1+x" ||
			!slices.Equal(ro.Notify, []smtp.DSNNotify{"FAILURE", "DELAY"}) ||
			ro.OriginalRecipientType != smtp.DSNAddressTypeRFC822 || ro.OriginalRecipient != "orig@example.net" ||
			!slices.Contains(rep.Extensions, "DSN") {
			t.Errorf("server got %+v %+v, extensions %q", m.MailOptions, ro, rep.Extensions)
		}
	}
}

func TestDeliver_SMTPUTF8(t *testing.T) {
	plain := deliverytest.NewServer(t, nil)
	d, _, _ := testDeliverer(t, plain.Addr)
	rep := deliver(t, d, "example.com", message(testBody, "jösé@example.com", "jose@example.com"))
	checkResults(t, rep, want{P, delivery.StageRCPT, 553}, want{D, delivery.StageEndData, 250})
	if e := rep.Results[0].Reply.Enhanced; e != (delivery.EnhancedCode{5, 6, 7}) {
		t.Errorf("enhanced = %v, want 5.6.7", e)
	}
	msg := message(testBody, "jose@example.com")
	msg.From = "sénder@example.org"
	rep = deliver(t, d, "example.com", msg)
	checkResults(t, rep, want{P, delivery.StageMAIL, 553})

	utf := deliverytest.NewServer(t, &deliverytest.Script{EnableSMTPUTF8: true})
	d, _, _ = testDeliverer(t, utf.Addr)
	rep = deliver(t, d, "example.com", message(testBody, "jösé@example.com"))
	checkResults(t, rep, want{D, delivery.StageEndData, 250})
	if m := utf.Messages()[0]; !m.MailOptions.UTF8 || m.To[0] != "jösé@example.com" {
		t.Errorf("server got UTF8=%v to %q", m.MailOptions.UTF8, m.To)
	}
}

// TestDeliver_LocalRefusals: what the server's extensions rule out is
// decided before MAIL (RFC 1870 §6.1, RFC 8689 §4.2.2).
func TestDeliver_LocalRefusals(t *testing.T) {
	tests := []struct {
		name   string
		script deliverytest.Script
		msg    func(*delivery.Message)
		enh    delivery.EnhancedCode
		code   int
	}{
		{"SIZE", deliverytest.Script{MaxMessageBytes: 100}, func(m *delivery.Message) { m.Size = 101 }, delivery.EnhancedCode{5, 3, 4}, 552},
		{"REQUIRETLS without TLS", deliverytest.Script{EnableREQUIRETLS: true}, func(m *delivery.Message) { m.RequireTLS = true }, delivery.EnhancedCode{5, 7, 30}, 550},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := deliverytest.NewServer(t, &tt.script)
			d, _, _ := testDeliverer(t, srv.Addr)
			msg := message(testBody, "a@example.com")
			tt.msg(msg)
			rep := deliver(t, d, "example.com", msg)
			checkResults(t, rep, want{P, delivery.StageMAIL, tt.code})
			if e := rep.Results[0].Reply.Enhanced; e != tt.enh {
				t.Errorf("enhanced = %v, want %v", e, tt.enh)
			}
			if cmds := srv.Commands(); len(cmds) != 0 {
				t.Errorf("server saw %v", cmds)
			}
		})
	}
}

// TestDeliver_InvalidEnvelope: bad addresses and parameters fail their
// recipient permanently before any command is sent (RELIABILITY §7 items
// 26, 27); "a@b> NOTIFY=NEVER" would otherwise inject a parameter.
func TestDeliver_InvalidEnvelope(t *testing.T) {
	srv := deliverytest.NewServer(t, nil)
	d, _, _ := testDeliverer(t, srv.Addr)
	msg := message(testBody, "a@example.com> NOTIFY=NEVER", "x@example.com\r\nRCPT TO:<evil@example.com>", "ok@example.com", "n@example.com")
	msg.Recipients[3].Notify = []string{"NEVER", "SUCCESS"}
	rep := deliver(t, d, "example.com", msg)
	checkResults(t, rep,
		want{P, delivery.StageRCPT, 553}, want{P, delivery.StageRCPT, 553},
		want{D, delivery.StageEndData, 250}, want{P, delivery.StageRCPT, 501})
	var ae *rfc5321.AddressError
	if !errors.As(rep.Results[0].Err, &ae) {
		t.Errorf("err = %v, want an *rfc5321.AddressError", rep.Results[0].Err)
	}
	if cmds := srv.Commands(); len(cmds) != 3 || cmds[1].Arg != "ok@example.com" {
		t.Errorf("server saw %v", cmds)
	}

	for _, mod := range []func(*delivery.Message){
		func(m *delivery.Message) { m.From = "bad sender@example.org" },
		func(m *delivery.Message) { m.Return = "BODY" },
		func(m *delivery.Message) { m.EnvelopeID = "two\r\nlines" },
	} {
		msg := message(testBody, "a@example.com")
		mod(msg)
		rep := deliver(t, d, "example.com", msg)
		if r := rep.Results[0]; r.Class != P || r.Stage != delivery.StageMAIL || r.Err == nil {
			t.Errorf("%+v: got %+v", msg, r)
		}
	}
	if srv.Sessions() != 1 {
		t.Errorf("sessions = %d, want 1", srv.Sessions())
	}
}

// TestDeliver_CallErrors: a malformed call, or a done ctx, is an error and
// no attempt.
func TestDeliver_CallErrors(t *testing.T) {
	srv := deliverytest.NewServer(t, nil)
	d, _, fn := testDeliverer(t, srv.Addr)
	noBody := message("", "a@example.com")
	noBody.Body = nil
	for name, msg := range map[string]*delivery.Message{
		"nil message":  nil,
		"no recipient": message(testBody),
		"nil body":     noBody,
		"other domain": message(testBody, "a@example.net"),
	} {
		if _, err := d.Deliver(testCtx(t), "example.com", msg); err == nil {
			t.Errorf("%s: no error", name)
		} else if me := (*delivery.MessageError)(nil); !errors.As(err, &me) {
			t.Errorf("%s: error %v is not a *MessageError", name, err)
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := d.Deliver(ctx, "example.com", message(testBody, "a@example.com")); !errors.Is(err, context.Canceled) {
		t.Errorf("done ctx: err = %v", err)
	}
	bad := &delivery.Deliverer{Hostname: "bad name\r\n"}
	if _, err := bad.Deliver(testCtx(t), "example.com", message(testBody, "a@example.com")); err == nil {
		t.Error("invalid Hostname: no error")
	}
	if len(fn.Dials()) != 0 {
		t.Errorf("dialled %v", fn.Dials())
	}
}

// TestDeliver_BodyNotReadWithoutRecipients: RFC 5321 §3.3: no DATA without
// an accepted recipient, and the body is not even read.
func TestDeliver_BodyNotReadWithoutRecipients(t *testing.T) {
	srv := deliverytest.NewServer(t, &deliverytest.Script{Rcpt: deliverytest.RejectRcpt(550, smtp.EnhancedCode{5, 1, 1}, "no")})
	d, _, _ := testDeliverer(t, srv.Addr)
	msg := message("", "a@example.com")
	body := &countingReader{r: strings.NewReader(testBody)}
	msg.Body = body
	rep := deliver(t, d, "example.com", msg)
	checkResults(t, rep, want{P, delivery.StageRCPT, 550})
	if body.reads != 0 {
		t.Errorf("body read %d times", body.reads)
	}
	// The connection was reset (RSET, then EHLO again) and is reused.
	rep = deliver(t, d, "example.com", message(testBody, "b@example.com"))
	checkResults(t, rep, want{P, delivery.StageRCPT, 550})
	if srv.Sessions() != 1 {
		t.Errorf("sessions = %d, want 1", srv.Sessions())
	}
}

type countingReader struct {
	r     io.Reader
	reads int
}

func (c *countingReader) Read(p []byte) (int, error) {
	c.reads++
	return c.r.Read(p)
}
