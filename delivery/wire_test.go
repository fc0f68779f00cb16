package delivery_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/outboundmail/outbound/delivery"
	"github.com/outboundmail/outbound/delivery/deliverytest"
	"github.com/outboundmail/outbound/delivery/rfc5321"
)

// TestWire_DataCanonical checks the exact DATA octets: bare LF becomes
// CR LF, a stray CR never reaches the wire, lines starting with "." are
// stuffed, and there is one terminator (RELIABILITY §7 items 21–23).
// net/textproto's DotWriter alone would relay "\r.\r" untouched.
func TestWire_DataCanonical(t *testing.T) {
	wire := make(chan []byte, 1)
	srv := rawServer(t, rawScript{exts: []string{"8BITMIME"}, wire: wire})
	d, _, _ := testDeliverer(t, srv.Addr())
	body := "Subject: dots\r\n\r\n.leading dot\r\nbare LF\n.\nbare CR\r.\rCRLF then dot\r\n.\r\n..two\r\n\r\r\nno final newline"
	rep := deliver(t, d, "example.com", message(body, "a@example.com"))
	checkResults(t, rep, want{D, delivery.StageEndData, 250})
	got := <-wire
	const exp = "Subject: dots\r\n\r\n..leading dot\r\nbare LF\r\n..\r\nbare CR . CRLF then dot\r\n..\r\n...two\r\n \r\nno final newline\r\n.\r\n"
	if string(got) != exp {
		t.Errorf("wire data:\n got %q\nwant %q", got, exp)
	}
	for i, c := range got {
		if (c == '\r' && (i+1 == len(got) || got[i+1] != '\n')) || (c == '\n' && (i == 0 || got[i-1] != '\r')) {
			t.Errorf("bare %q at offset %d", c, i)
		}
	}
}

// TestWire_ReplyForms: multi-line replies with the code (and enhanced code)
// on every line, bare codes, and enhanced codes only on the last line.
func TestWire_ReplyForms(t *testing.T) {
	srv := rawServer(t, rawScript{
		exts: []string{"8BITMIME", "ENHANCEDSTATUSCODES"},
		mail: func(string) []string { return []string{"250"} }, // bare code, as smtp-sink's EHLO
		rcpt: func(n int, _ string) []string {
			switch n {
			case 1:
				return []string{"550-5.1.1 The email account that you tried to reach does not exist.",
					"550-5.1.1 Please try double-checking the recipient's address.", "550 5.1.1 https://support.example/bounce"}
			case 2:
				return []string{"451-Try", "451 4.7.1 later"}
			case 3:
				return []string{"450 5.1.1 class mismatch"}
			}
			return nil
		},
		dot: func([]byte) []string { return []string{"250-2.0.0 Ok", "250 2.0.0 queued as 1A2B"} },
	})
	d, _, _ := testDeliverer(t, srv.Addr())
	rep := deliver(t, d, "example.com", message(testBody, "a@example.com", "b@example.com", "c@example.com", "d@example.com"))
	checkResults(t, rep, want{P, delivery.StageRCPT, 550}, want{T, delivery.StageRCPT, 451},
		want{T, delivery.StageRCPT, 450}, want{D, delivery.StageEndData, 250})
	for i, w := range []delivery.Reply{
		{Code: 550, Enhanced: delivery.EnhancedCode{5, 1, 1}, Text: "The email account that you tried to reach does not exist.\nPlease try double-checking the recipient's address.\nhttps://support.example/bounce"},
		{Code: 451, Enhanced: delivery.EnhancedCode{4, 7, 1}, Text: "Try\nlater"},
		{Code: 450, Text: "5.1.1 class mismatch"},
		{Code: 250, Enhanced: delivery.EnhancedCode{2, 0, 0}, Text: "Ok\nqueued as 1A2B"},
	} {
		if got := rep.Results[i].Reply; got != w {
			t.Errorf("reply %d = %#v, want %#v", i, got, w)
		}
	}
}

// TestWire_BadReplies: malformed, mixed-code, oversized and endless
// replies are protocol errors, temporary, at any stage (RELIABILITY §7
// items 3–7), and the connection is not reused.
func TestWire_BadReplies(t *testing.T) {
	endless := func(c *deliverytest.RawConn) {
		for c.Reply("250-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx") == nil {
		}
	}
	longLine := func(c *deliverytest.RawConn) {
		c.Raw().Write(append([]byte("250 "), bytes.Repeat([]byte("y"), 1<<20)...))
		c.Block(nil)
	}
	tests := []struct {
		name    string
		handler func(c *deliverytest.RawConn)
		stage   delivery.Stage
	}{
		{"garbage greeting", func(c *deliverytest.RawConn) { c.Reply("HTTP/1.1 400 Bad Request") }, delivery.StageGreeting},
		{"endless EHLO", func(c *deliverytest.RawConn) { c.Greet(); c.Expect("EHLO"); endless(c) }, delivery.StageEHLO},
		{"long EHLO line", func(c *deliverytest.RawConn) { c.Greet(); c.Expect("EHLO"); longLine(c) }, delivery.StageEHLO},
		{"EHLO then extra reply", func(c *deliverytest.RawConn) { c.Greet(); c.Expect("EHLO"); c.Reply("250 localhost", "250 extra") }, delivery.StageEHLO},
		{"MAIL 25O", mailReply("25O ok"), delivery.StageMAIL},
		{"MAIL 2500", mailReply("2500 ok"), delivery.StageMAIL},
		{"MAIL 600", mailReply("600 ok"), delivery.StageMAIL},
		{"MAIL mixed codes", mailReply("250-ok", "550 no"), delivery.StageMAIL},
		{"MAIL extra reply", mailReply("250 ok", "250 ok"), delivery.StageRCPT}, // detected at the next command
		{"MAIL endless", func(c *deliverytest.RawConn) { c.Greet(); c.HandleEHLO(); c.HandleEHLO(); c.Expect("MAIL"); endless(c) }, delivery.StageMAIL},
		{"MAIL long line", func(c *deliverytest.RawConn) {
			c.Greet()
			c.HandleEHLO()
			c.HandleEHLO()
			c.Expect("MAIL")
			longLine(c)
		}, delivery.StageMAIL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := deliverytest.NewRawServer(t, tt.handler)
			d, _, _ := testDeliverer(t, srv.Addr())
			rep := deliver(t, d, "example.com", message(testBody, "a@example.com"))
			checkResults(t, rep, want{T, tt.stage, 0})
			var pe *delivery.ProtocolError
			if !errors.As(rep.Results[0].Err, &pe) && !strings.Contains(fmt.Sprint(rep.Results[0].Err), "response") {
				t.Errorf("err = %v, want a protocol error", rep.Results[0].Err)
			}
			deliver(t, d, "example.com", message(testBody, "a@example.com"))
			if srv.Sessions() != 2 {
				t.Errorf("sessions = %d: the connection was reused", srv.Sessions())
			}
		})
	}
}

func mailReply(lines ...string) func(c *deliverytest.RawConn) {
	return func(c *deliverytest.RawConn) {
		c.Greet()
		c.HandleEHLO()
		c.HandleEHLO()
		c.Expect("MAIL")
		c.Reply(lines...)
		c.Block(nil)
	}
}

// TestWire_Stalls: a server that stops answering is bounded by the step's
// timeout, never by a sleep in the test (RELIABILITY §7 items 1, 2, 11, 20).
func TestWire_Stalls(t *testing.T) {
	stall := func(c *deliverytest.RawConn) { c.Block(nil) }
	tests := []struct {
		name     string
		script   rawScript
		raw      func(c *deliverytest.RawConn)
		timeouts func(*delivery.Timeouts)
		stage    delivery.Stage
		dup      bool
		down     bool
		tls      delivery.TLSPolicy
	}{
		{name: "greeting", raw: stall, timeouts: func(t *delivery.Timeouts) { t.Greeting = 50 * time.Millisecond }, stage: delivery.StageGreeting, down: true},
		{name: "STARTTLS handshake", raw: func(c *deliverytest.RawConn) {
			c.Greet()
			c.HandleEHLO("STARTTLS")
			c.Expect("STARTTLS")
			c.Reply("220 go")
			c.Block(nil)
		},
			timeouts: func(t *delivery.Timeouts) { t.STARTTLS = 50 * time.Millisecond }, stage: delivery.StageSTARTTLS, down: true, tls: delivery.TLSRequired},
		{name: "MAIL", script: rawScript{mail: func(string) []string { return []string{} }},
			timeouts: func(t *delivery.Timeouts) { t.Mail = 50 * time.Millisecond }, stage: delivery.StageMAIL},
		{name: "final dot", script: rawScript{dot: func([]byte) []string { return []string{} }},
			timeouts: func(t *delivery.Timeouts) { t.EndData = 50 * time.Millisecond }, stage: delivery.StageEndData, dup: true},
		{name: "body", script: rawScript{afterData: stall},
			timeouts: func(t *delivery.Timeouts) { t.Block = 50 * time.Millisecond }, stage: delivery.StageBody},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var srv *deliverytest.RawServer
			if tt.raw != nil {
				srv = deliverytest.NewRawServer(t, tt.raw)
			} else {
				srv = rawServer(t, tt.script)
			}
			d, _, _ := testDeliverer(t, srv.Addr())
			tt.timeouts(&d.Timeouts)
			d.TLS = tt.tls
			msg := message(testBody, "a@example.com")
			if tt.stage == delivery.StageBody {
				// Far more than the socket buffers hold, and never in memory.
				msg.Body, msg.Size = &lazyBody{n: 256 << 20}, 256<<20
			}
			rep := deliver(t, d, "example.com", msg)
			checkResults(t, rep, want{T, tt.stage, 0})
			r := rep.Results[0]
			if !errors.Is(r.Err, os.ErrDeadlineExceeded) {
				t.Errorf("err = %v, want a deadline error", r.Err)
			}
			if r.PossibleDuplicate != tt.dup || rep.DestinationUnavailable != tt.down {
				t.Errorf("PossibleDuplicate %v, DestinationUnavailable %v", r.PossibleDuplicate, rep.DestinationUnavailable)
			}
		})
	}
}

// TestWire_Context: ctx reaches the socket: cancelling it while the server
// stalls ends the attempt, and its deadline bounds every step.
func TestWire_Context(t *testing.T) {
	ctx, cancel := context.WithCancel(testCtx(t))
	srv := rawServer(t, rawScript{rcpt: func(int, string) []string { cancel(); return []string{} }})
	d, _, _ := testDeliverer(t, srv.Addr())
	rep, err := d.Deliver(ctx, "example.com", message(testBody, "a@example.com"))
	if err != nil {
		t.Fatal(err)
	}
	checkResults(t, rep, want{T, delivery.StageRCPT, 0})
	if !errors.Is(rep.Results[0].Err, context.Canceled) || rep.DestinationUnavailable {
		t.Errorf("err = %v, unavailable %v", rep.Results[0].Err, rep.DestinationUnavailable)
	}

	ctx, cancel2 := context.WithTimeout(testCtx(t), 50*time.Millisecond)
	defer cancel2()
	srv = rawServer(t, rawScript{mail: func(string) []string { return []string{} }})
	d, _, _ = testDeliverer(t, srv.Addr())
	d.Timeouts = delivery.Timeouts{} // RFC defaults, minutes: the ctx must win
	rep, err = d.Deliver(ctx, "example.com", message(testBody, "a@example.com"))
	if err != nil {
		t.Fatal(err)
	}
	checkResults(t, rep, want{T, delivery.StageMAIL, 0})
	if !errors.Is(rep.Results[0].Err, os.ErrDeadlineExceeded) && !errors.Is(rep.Results[0].Err, context.DeadlineExceeded) {
		t.Errorf("err = %v", rep.Results[0].Err)
	}
}

// TestWire_Drops: a connection lost in the middle of the data is temporary;
// lost after the final dot it is also a possible duplicate (RFC 1047).
func TestWire_Drops(t *testing.T) {
	t.Run("mid-DATA", func(t *testing.T) {
		srv := rawServer(t, rawScript{afterData: func(c *deliverytest.RawConn) {
			c.Raw().Read(make([]byte, 1000))
			c.Close()
		}})
		d, _, _ := testDeliverer(t, srv.Addr())
		msg := message("", "a@example.com")
		msg.Body, msg.Size = &lazyBody{n: 64 << 20}, 64<<20
		rep := deliver(t, d, "example.com", msg)
		checkResults(t, rep, want{T, delivery.StageBody, 0})
		if rep.Results[0].PossibleDuplicate || rep.Results[0].Err == nil {
			t.Errorf("result = %+v", rep.Results[0])
		}
	})
	t.Run("after the dot", func(t *testing.T) {
		srv := rawServer(t, rawScript{afterData: func(c *deliverytest.RawConn) {
			if _, err := readWireData(c); err != nil {
				t.Error(err)
			}
		}})
		d, _, _ := testDeliverer(t, srv.Addr())
		rep := deliver(t, d, "example.com", message(testBody, "a@example.com", "b@example.com"))
		checkResults(t, rep, want{T, delivery.StageEndData, 0}, want{T, delivery.StageEndData, 0})
		if !rep.Results[0].PossibleDuplicate || !rep.Results[1].PossibleDuplicate {
			t.Errorf("PossibleDuplicate not set: %+v", rep.Results)
		}
	})
}

// TestWire_TooManyRecipients: a 452 after accepted recipients sends the
// rest in another transaction on the same connection (RFC 5321
// §4.5.3.1.10; RELIABILITY §7 item 14).
func TestWire_TooManyRecipients(t *testing.T) {
	wire := make(chan []byte, 10)
	srv := rawServer(t, rawScript{
		rcpt: func(n int, _ string) []string {
			if n > 2 {
				return []string{"452 4.5.3 Too many recipients"}
			}
			return nil
		},
		wire: wire,
	})
	d, _, _ := testDeliverer(t, srv.Addr())
	var rcpts []string
	for i := range 5 {
		rcpts = append(rcpts, fmt.Sprintf("r%d@example.com", i))
	}
	rep := deliver(t, d, "example.com", message(testBody, rcpts...))
	for i := range rcpts {
		if r := rep.Results[i]; r.Class != D {
			t.Errorf("%s: %s %q %v", r.Recipient, r.Class, r.Reply, r.Err)
		}
	}
	if len(wire) != 3 || srv.Sessions() != 1 {
		t.Errorf("%d transactions on %d sessions, want 3 on 1", len(wire), srv.Sessions())
	}
}

// TestWire_EightBit: 8-bit data goes only to a server with 8BITMIME (RFC
// 6152 §3), whether the message declares it or the reader finds it.
func TestWire_EightBit(t *testing.T) {
	wire := make(chan []byte, 1)
	srv := rawServer(t, rawScript{wire: wire})
	d, _, _ := testDeliverer(t, srv.Addr())
	msg := message("Subject: caf\xc3\xa9\r\n\r\nx\r\n", "a@example.com")
	msg.EightBit = true
	rep := deliver(t, d, "example.com", msg)
	checkResults(t, rep, want{P, delivery.StageMAIL, 554})

	msg.EightBit = false // wrongly declared: found while streaming
	msg.Body = strings.NewReader("Subject: caf\xc3\xa9\r\n\r\nx\r\n")
	rep = deliver(t, d, "example.com", msg)
	checkResults(t, rep, want{P, delivery.StageBody, 554})
	if e := rep.Results[0].Reply.Enhanced; e != (delivery.EnhancedCode{5, 6, 3}) || len(wire) != 0 {
		t.Errorf("enhanced %v; %d messages reached their final dot", e, len(wire))
	}
}

// TestWire_DataRefused: data the canonicalising reader refuses (a NUL)
// aborts DATA without the final dot: permanent for every recipient.
func TestWire_DataRefused(t *testing.T) {
	wire := make(chan []byte, 1)
	srv := rawServer(t, rawScript{exts: []string{"8BITMIME"}, wire: wire})
	d, _, _ := testDeliverer(t, srv.Addr())
	rep := deliver(t, d, "example.com", message("Subject: x\r\n\r\nnul\x00here\r\n", "a@example.com", "b@example.com"))
	checkResults(t, rep, want{P, delivery.StageBody, 554}, want{P, delivery.StageBody, 554})
	if !errors.Is(rep.Results[0].Err, rfc5321.ErrNUL) || len(wire) != 0 {
		t.Errorf("err = %v; %d messages reached their final dot", rep.Results[0].Err, len(wire))
	}
}
