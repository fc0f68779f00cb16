package delivery_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/outboundmail/outbound/delivery"
	"github.com/outboundmail/outbound/delivery/deliverytest"
)

// pipeServer is a raw server that holds its replies to MAIL and RCPT until
// it has read the DATA that ends the group, then sends them all at once: a
// client that waits for a reply before the next command stalls there (and
// fails on its timeout). reply may script the answer to MAIL, the n-th RCPT
// (from 1), DATA and the final dot ("DOT"); "" is the plain answer, "CLOSE"
// closes the connection without one, and a 421 is sent with what is held,
// then the connection is closed.
type pipeServer struct {
	*deliverytest.RawServer
	mu     sync.Mutex
	bodies []string // what came after each 354: the data, or "ABORTED"
}

func newPipeServer(t *testing.T, reply func(session int, verb string, n int) string) *pipeServer {
	ps := &pipeServer{}
	ps.RawServer = deliverytest.NewRawServer(t, func(c *deliverytest.RawConn) {
		if c.Greet() != nil {
			return
		}
		var held []string
		n := 0
		script := func(verb string) string {
			if reply == nil {
				return ""
			}
			return reply(c.Session(), verb, n)
		}
		for {
			line, err := c.ReadLine()
			if err != nil {
				return
			}
			verb, _, _ := strings.Cut(strings.ToUpper(line), " ")
			r := ""
			switch verb {
			case "EHLO":
				c.Reply("250-localhost", "250 PIPELINING")
				continue
			case "MAIL":
				n = 0
				r = script(verb)
			case "RCPT":
				n++
				r = script(verb)
			case "DATA":
				if r = script(verb); r == "" {
					r = "354 go ahead"
				}
			case "QUIT":
				c.Reply("221 bye")
				return
			}
			if r == "CLOSE" {
				c.Close()
				return
			}
			if r == "" {
				r = "250 2.0.0 ok"
			}
			held = append(held, r)
			if strings.HasPrefix(r, "421") {
				c.Reply(held...)
				c.Close()
				return
			}
			if verb == "MAIL" || verb == "RCPT" {
				continue
			}
			if c.Reply(held...) != nil {
				return
			}
			held = nil
			if verb != "DATA" || !strings.HasPrefix(r, "354") {
				continue
			}
			data, err := c.ReadData()
			body := string(data)
			if err != nil {
				body = "ABORTED"
			}
			ps.mu.Lock()
			ps.bodies = append(ps.bodies, body)
			ps.mu.Unlock()
			if err != nil {
				return
			}
			if r = script("DOT"); r == "" {
				r = "250 2.0.0 queued"
			}
			if c.Reply(r) != nil {
				return
			}
		}
	})
	return ps
}

func (ps *pipeServer) Bodies() []string {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return append([]string(nil), ps.bodies...)
}

// writeLog records every write the client makes, to see how commands are
// grouped on the wire.
type writeLog struct {
	mu     sync.Mutex
	writes []string
}

type loggedConn struct {
	net.Conn
	log *writeLog
}

func (c loggedConn) Write(p []byte) (int, error) {
	c.log.mu.Lock()
	c.log.writes = append(c.log.writes, string(p))
	c.log.mu.Unlock()
	return c.Conn.Write(p)
}

// logWrites makes d's connections record their writes.
func logWrites(d *delivery.Deliverer) *writeLog {
	l := &writeLog{}
	dial := d.DialContext
	d.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return loggedConn{c, l}, nil
	}
	return l
}

// commandWrites returns the writes holding MAIL, RCPT or DATA commands.
func (l *writeLog) commandWrites() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, w := range l.writes {
		if strings.HasPrefix(w, "MAIL ") || strings.HasPrefix(w, "RCPT ") || w == "DATA\r\n" {
			out = append(out, w)
		}
	}
	return out
}

// TestPipeline_OneWrite: MAIL, every RCPT and DATA go in one write, all of
// it before any reply (the server answers only once it has read DATA).
func TestPipeline_OneWrite(t *testing.T) {
	srv := newPipeServer(t, nil)
	d, _, _ := testDeliverer(t, srv.Addr())
	wl := logWrites(d)
	rep := deliver(t, d, "example.com", message(testBody, "a@example.com", "b@example.com", "c@example.com"))
	checkResults(t, rep, want{D, delivery.StageEndData, 250}, want{D, delivery.StageEndData, 250}, want{D, delivery.StageEndData, 250})
	got := wl.commandWrites()
	wantW := "MAIL FROM:<sender@example.org>\r\nRCPT TO:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nRCPT TO:<c@example.com>\r\nDATA\r\n"
	if len(got) != 1 || got[0] != wantW {
		t.Errorf("command writes = %q, want one: %q", got, wantW)
	}
	if b := srv.Bodies(); len(b) != 1 || b[0] != testBody {
		t.Errorf("bodies = %q", b)
	}
}

// TestPipeline_MailRefused: a refused MAIL fails every recipient at MAIL;
// the server's refusals of RCPT and DATA are read and dropped, and the
// connection carries the next message.
func TestPipeline_MailRefused(t *testing.T) {
	var calls atomic.Int32
	srv := deliverytest.NewServer(t, &deliverytest.Script{
		Mail: func(string, *smtp.MailOptions) error {
			if calls.Add(1) == 1 {
				return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "sender refused"}
			}
			return nil
		},
	})
	d, _, _ := testDeliverer(t, srv.Addr)
	rep := deliver(t, d, "example.com", message(testBody, "a@example.com", "b@example.com"))
	checkResults(t, rep, want{P, delivery.StageMAIL, 550}, want{P, delivery.StageMAIL, 550})
	rep = deliver(t, d, "example.com", message(testBody, "a@example.com"))
	checkResults(t, rep, want{D, delivery.StageEndData, 250})
	if n := srv.Sessions(); n != 1 {
		t.Errorf("sessions = %d, want 1 (the connection reused after MAIL 550)", n)
	}
	if n := len(srv.Messages()); n != 1 {
		t.Errorf("messages = %d, want 1", n)
	}
}

// TestPipeline_MailRefusedData354: a server that answers 354 to DATA after
// refusing MAIL gets no body and no dot: the connection is closed.
func TestPipeline_MailRefusedData354(t *testing.T) {
	srv := newPipeServer(t, func(session int, verb string, n int) string {
		if session == 1 && verb == "MAIL" {
			return "550 5.7.1 sender refused"
		}
		return ""
	})
	d, _, _ := testDeliverer(t, srv.Addr())
	rep := deliver(t, d, "example.com", message(testBody, "a@example.com", "b@example.com"))
	checkResults(t, rep, want{P, delivery.StageMAIL, 550}, want{P, delivery.StageMAIL, 550})
	if err := srv.WaitHandled(testCtx(t), 1); err != nil {
		t.Fatal(err)
	}
	if b := srv.Bodies(); len(b) != 1 || b[0] != "ABORTED" {
		t.Errorf("after the 354: %q, want the connection closed without data", b)
	}
	rep = deliver(t, d, "example.com", message(testBody, "a@example.com"))
	checkResults(t, rep, want{D, delivery.StageEndData, 250})
	if n := srv.Sessions(); n != 2 {
		t.Errorf("sessions = %d, want 2 (closed after the 354)", n)
	}
}

// TestPipeline_MixedRcpt: 250s are delivered, a 550 fails its recipient,
// and every 452 after an accepted recipient goes in the next transaction,
// on the same connection.
func TestPipeline_MixedRcpt(t *testing.T) {
	var tx atomic.Int32
	srv := newPipeServer(t, func(session int, verb string, n int) string {
		switch {
		case verb == "MAIL":
			tx.Add(1)
		case verb == "RCPT" && tx.Load() == 1 && n == 2:
			return "550 5.1.1 no such user"
		case verb == "RCPT" && tx.Load() == 1 && n >= 3:
			return "452 4.5.3 too many recipients"
		}
		return ""
	})
	d, _, _ := testDeliverer(t, srv.Addr())
	wl := logWrites(d)
	rep := deliver(t, d, "example.com", message(testBody, "a@example.com", "b@example.com", "c@example.com", "d@example.com"))
	checkResults(t, rep,
		want{D, delivery.StageEndData, 250}, want{P, delivery.StageRCPT, 550},
		want{D, delivery.StageEndData, 250}, want{D, delivery.StageEndData, 250})
	if n := srv.Sessions(); n != 1 {
		t.Errorf("sessions = %d, want 1", n)
	}
	got := wl.commandWrites()
	if len(got) != 2 || !strings.Contains(got[1], "RCPT TO:<c@example.com>\r\nRCPT TO:<d@example.com>\r\nDATA\r\n") {
		t.Errorf("command writes = %q, want the two 452s together in a second group", got)
	}
	if b := srv.Bodies(); len(b) != 2 {
		t.Errorf("bodies = %d, want 2", len(b))
	}
}

// TestPipeline_NoRecipient: with every RCPT refused, DATA's refusal is
// read and no body is sent; a server that answers 354 anyway has its
// connection closed without data or a dot.
func TestPipeline_NoRecipient(t *testing.T) {
	for _, dataReply := range []string{"554 5.5.1 no valid recipients", "354 go ahead"} {
		srv := newPipeServer(t, func(session int, verb string, n int) string {
			switch verb {
			case "RCPT":
				return "550 5.1.1 no such user"
			case "DATA":
				return dataReply
			}
			return ""
		})
		d, _, _ := testDeliverer(t, srv.Addr())
		rep := deliver(t, d, "example.com", message(testBody, "a@example.com", "b@example.com"))
		checkResults(t, rep, want{P, delivery.StageRCPT, 550}, want{P, delivery.StageRCPT, 550})
		rep = deliver(t, d, "example.com", message(testBody, "a@example.com"))
		checkResults(t, rep, want{P, delivery.StageRCPT, 550})
		if dataReply[0] == '3' {
			if err := srv.WaitHandled(testCtx(t), 2); err != nil {
				t.Fatal(err)
			}
		}
		b := srv.Bodies()
		sessions := srv.Sessions()
		if dataReply[0] == '5' {
			if len(b) != 0 || sessions != 1 {
				t.Errorf("DATA %q: bodies %q, sessions %d; want none, 1", dataReply, b, sessions)
			}
		} else if len(b) != 2 || b[0] != "ABORTED" || b[1] != "ABORTED" || sessions != 2 {
			t.Errorf("DATA %q: bodies %q, sessions %d; want both aborted, 2", dataReply, b, sessions)
		}
	}
}

// TestPipeline_Rcpt421: a 421 in the middle of the group is a temporary
// failure of every recipient and of the destination, as without
// pipelining.
func TestPipeline_Rcpt421(t *testing.T) {
	srv := newPipeServer(t, func(session int, verb string, n int) string {
		if verb == "RCPT" && n == 2 {
			return "421 4.3.2 shutting down"
		}
		return ""
	})
	d, _, _ := testDeliverer(t, srv.Addr())
	rep := deliver(t, d, "example.com", message(testBody, "a@example.com", "b@example.com", "c@example.com"))
	checkResults(t, rep, want{T, delivery.StageRCPT, 421}, want{T, delivery.StageRCPT, 421}, want{T, delivery.StageRCPT, 421})
	if !rep.DestinationUnavailable || rep.DestinationStage != delivery.StageRCPT {
		t.Errorf("destination unavailable %v at %q, want true at RCPT", rep.DestinationUnavailable, rep.DestinationStage)
	}
	if len(srv.Bodies()) != 0 {
		t.Errorf("a body was sent")
	}
}

// TestPipeline_StalePooled: a pooled connection whose server closes it on
// reading MAIL is retried on a fresh connection.
func TestPipeline_StalePooled(t *testing.T) {
	var mails atomic.Int32
	srv := newPipeServer(t, func(session int, verb string, n int) string {
		if verb == "MAIL" && session == 1 && mails.Add(1) == 2 {
			return "CLOSE"
		}
		return ""
	})
	d, _, _ := testDeliverer(t, srv.Addr())
	for range 2 {
		rep := deliver(t, d, "example.com", message(testBody, "a@example.com"))
		checkResults(t, rep, want{D, delivery.StageEndData, 250})
		if rep.DestinationUnavailable {
			t.Errorf("destination unavailable")
		}
	}
	if n := srv.Sessions(); n != 2 {
		t.Errorf("sessions = %d, want 2", n)
	}
}

// TestPipeline_Off: without PIPELINING in the EHLO reply, or with
// NoPipelining, every command is a write of its own (Serve also reports a
// client that sends before a reply when PIPELINING is not offered).
func TestPipeline_Off(t *testing.T) {
	for _, off := range []bool{false, true} {
		var exts []string
		if off {
			exts = []string{"PIPELINING"}
		}
		srv := deliverytest.NewRawServer(t, func(c *deliverytest.RawConn) {
			c.Greet()
			c.Serve(exts...)
		})
		d, _, _ := testDeliverer(t, srv.Addr())
		d.NoPipelining = off
		wl := logWrites(d)
		rep := deliver(t, d, "example.com", message(testBody, "a@example.com", "b@example.com"))
		checkResults(t, rep, want{D, delivery.StageEndData, 250}, want{D, delivery.StageEndData, 250})
		got := wl.commandWrites()
		if len(got) != 4 {
			t.Errorf("NoPipelining %v: command writes %q, want 4 of one command each", off, got)
		}
		for _, w := range got {
			if strings.Count(w, "\r\n") != 1 {
				t.Errorf("NoPipelining %v: write %q holds more than one command", off, w)
			}
		}
	}
}

// TestPipeline_Sink: Postfix's smtp-sink (which offers PIPELINING) takes
// 200 messages over 4 reused connections.
func TestPipeline_Sink(t *testing.T) {
	sink := deliverytest.StartSink(t)
	d := &delivery.Deliverer{
		Hostname:               "client.example.org",
		Relay:                  sink.Addr(),
		TLS:                    delivery.TLSDisabled,
		Timeouts:               shortTimeouts(10 * time.Second),
		MaxConnsPerDestination: 4,
		MaxIdlePerDestination:  4,
		MaxMessagesPerConn:     1000,
	}
	dest := d.Destination("a@example.com")
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 50 {
				rep := deliver(t, d, dest, message(testBody, "a@example.com", "b@example.com"))
				if rep.Results[0].Class != D || rep.Results[1].Class != D {
					t.Errorf("not delivered: %+v", rep.Results)
					return
				}
			}
		})
	}
	wg.Wait()
	d.Close()
	if err := sink.WaitCounters(testCtx(t), 1, 200); err != nil {
		t.Fatal(err)
	}
	sessions, messages := sink.Counters()
	if messages != 200 || sessions > 4 {
		t.Errorf("smtp-sink: %d sessions, %d messages; want at most 4, 200", sessions, messages)
	}
}

// TestPipeline_ReplyChecks: ReplyLimits hold per reply of a group, not for
// the group, and a reply nobody asked for ends the session before the
// body.
func TestPipeline_ReplyChecks(t *testing.T) {
	srv := newPipeServer(t, func(session int, verb string, n int) string {
		switch {
		case verb == "DATA" && session == 2:
			return "354 go ahead\r\n250 2.0.0 unsolicited"
		case verb == "MAIL" || verb == "RCPT":
			return "250-first line\r\n250 2.0.0 ok"
		}
		return ""
	})
	d, _, _ := testDeliverer(t, srv.Addr())
	d.ReplyLimits = delivery.ReplyLimits{MaxLines: 2}
	rep := deliver(t, d, "example.com", message(testBody, "a@example.com", "b@example.com", "c@example.com"))
	checkResults(t, rep, want{D, delivery.StageEndData, 250}, want{D, delivery.StageEndData, 250}, want{D, delivery.StageEndData, 250})
	d.Close() // QUIT: the first session ends

	d2, _, _ := testDeliverer(t, srv.Addr())
	rep = deliver(t, d2, "example.com", message(testBody, "a@example.com"))
	// The body is still buffered when the dot is to be written.
	checkResults(t, rep, want{T, delivery.StageEndData, 0})
	if r := rep.Results[0]; !errors.Is(r.Err, delivery.ErrUnexpectedData) || r.PossibleDuplicate {
		t.Errorf("err = %v, possible duplicate %v; want ErrUnexpectedData, false", r.Err, r.PossibleDuplicate)
	}
	if err := srv.WaitHandled(testCtx(t), 2); err != nil {
		t.Fatal(err)
	}
	if b := srv.Bodies(); len(b) != 2 || b[1] != "ABORTED" {
		t.Errorf("bodies = %q, want the second aborted", b)
	}
}
