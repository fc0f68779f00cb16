package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/mail"
	"os"
	"os/user"
	"strings"
	"sync"
	"time"

	"github.com/outboundmail/outbound/queue"
)

// sendOptions are the send command's own flags, in sendmail's spelling.
type sendOptions struct {
	from      string // -f, -r: envelope sender
	fullName  string // -F: accepted for compatibility, used in an added From:
	extract   bool   // -t: recipients from To, Cc, Bcc
	noDot     bool   // -i, -oi: a lone dot does not end the input
	queueOnly bool   // --queue-only, -odq: no immediate attempt
	listQueue bool   // -bp: behave as `queue`
	runOnce   bool   // -q: behave as `run --once`
	notify    string // -N: RFC 3461 NOTIFY for every recipient
	ret       string // -R: RFC 3461 RET, full or hdrs
	envid     string // -V: RFC 3461 ENVID
}

func sendFlags(fs *flag.FlagSet) func(ctx context.Context, a *app, args []string) error {
	var o sendOptions
	fs.StringVar(&o.from, "f", "", "envelope `sender` (default: the From: address, else user@host)")
	fs.StringVar(&o.from, "r", "", "same as -f (old sendmail spelling)")
	fs.StringVar(&o.fullName, "F", "", "full `name` of the sender, for an added From: field")
	fs.BoolVar(&o.extract, "t", false, "take recipients from To:, Cc: and Bcc: (and add the arguments); Bcc: is removed")
	fs.BoolVar(&o.noDot, "i", false, "a line with a single dot does not end the input")
	fs.BoolVar(&o.noDot, "oi", false, "same as -i")
	fs.BoolVar(&o.queueOnly, "queue-only", false, "queue the message without an immediate attempt")
	fs.BoolVar(&o.queueOnly, "odq", false, "same as --queue-only (sendmail's deferred mode)")
	var ignored bool
	fs.BoolVar(&ignored, "odi", false, "accepted and ignored (sendmail delivery mode)")
	fs.BoolVar(&ignored, "odb", false, "accepted and ignored (sendmail delivery mode)")
	fs.BoolVar(&ignored, "bm", false, "accepted and ignored (sendmail's default mode)")
	fs.StringVar(&o.notify, "N", "", "notifications wanted, a comma-separated `list`: never, or some of success, failure, delay")
	fs.StringVar(&o.ret, "R", "", "what a failure notice returns, `full|hdrs`")
	fs.StringVar(&o.envid, "V", "", "envelope `ID` echoed in notifications")
	var body string
	fs.StringVar(&body, "B", "", "accepted and ignored (8-bit content is detected)")
	fs.BoolVar(&o.listQueue, "bp", false, "list the queue instead (like mailq)")
	fs.BoolVar(&o.runOnce, "q", false, "run the queue once instead")
	return func(ctx context.Context, a *app, args []string) error {
		switch {
		case o.listQueue:
			return a.listQueue(ctx, false)
		case o.runOnce:
			return a.run(ctx, runOptions{once: true})
		}
		return a.send(ctx, o, args)
	}
}

// send reads a message from stdin, queues it durably, prints its ID, and
// makes one attempt unless o.queueOnly. It returns an error, and queues
// nothing, when the message is refused.
func (a *app) send(ctx context.Context, o sendOptions, rcpts []string) error {
	in := bufio.NewReaderSize(a.stdin, 64<<10)
	var src io.Reader = in
	if !o.noDot {
		src = newDotReader(in)
	}
	br := bufio.NewReaderSize(src, 64<<10)
	if _, err := br.Peek(1); err != nil {
		if errors.Is(err, io.EOF) {
			return &exitError{code: exitNoInput, err: errors.New("no message on standard input")}
		}
		return err
	}
	h, err := readHeader(br)
	if err != nil {
		return &exitError{code: exitDataErr, err: err}
	}
	if o.extract {
		more, err := h.addresses("To", "Cc", "Bcc")
		if err != nil {
			return &exitError{code: exitDataErr, err: err}
		}
		rcpts = append(rcpts, more...)
		if len(rcpts) == 0 {
			return &exitError{code: exitDataErr, err: errors.New("-t: no recipients in the To, Cc or Bcc fields")}
		}
	}
	if len(rcpts) == 0 {
		return usagef("send: no recipients (give them as arguments, or use -t)")
	}
	// Blind copies stay blind: the field never leaves this host (as
	// Postfix's cleanup does, with or without -t).
	h = h.without("Bcc")
	from, err := a.envelopeSender(o, h)
	if err != nil {
		return &exitError{code: exitDataErr, err: err}
	}
	h = a.completeHeader(h, from, o.fullName)

	var (
		mu     sync.Mutex
		id     queue.ID
		events []queue.Event
	)
	obs := queue.ObserverFunc(func(e queue.Event) {
		mu.Lock()
		defer mu.Unlock()
		if id != "" && e.Message == id {
			events = append(events, e)
		}
	})
	body := io.MultiReader(bytes.NewReader(h.bytes()), br)
	env := queue.Envelope{From: from, To: rcpts, Notify: dsnNotify(o.notify), Return: strings.ToUpper(o.ret), EnvelopeID: o.envid}
	if r := a.running(ctx); r != nil {
		// A running `outbound run` holds the spool: hand the message
		// over; it makes the attempt.
		return a.sendRemote(ctx, r, env, body)
	}
	s, err := a.open(ctx, obs)
	if err != nil {
		return tempFail(err)
	}
	defer s.Close()
	qid, err := s.q.Enqueue(ctx, env, body)
	if err != nil {
		var ime *queue.InvalidMessageError
		if errors.As(err, &ime) {
			return &exitError{code: exitDataErr, err: fmt.Errorf("message refused, nothing queued: %w", err)}
		}
		return tempFail(fmt.Errorf("message not queued: %w", err))
	}
	fmt.Fprintln(a.stdout, qid)
	if o.queueOnly {
		return nil
	}
	mu.Lock()
	id = qid
	mu.Unlock()
	// Only this message is attempted: other due mail is for `run`.
	if _, err := s.q.Attempt(ctx, qid); err != nil {
		s.log.Warn("immediate attempt failed; the message stays queued", "error", err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, e := range events {
		a.reportEvent(e)
	}
	return nil
}

// sendRemote queues the message through the running queue's socket.
func (a *app) sendRemote(ctx context.Context, r *remote, env queue.Envelope, body io.Reader) error {
	defer r.Close()
	id, err := r.Enqueue(ctx, env, body)
	if err != nil {
		var ime *queue.InvalidMessageError
		if errors.As(err, &ime) {
			return &exitError{code: exitDataErr, err: fmt.Errorf("message refused, nothing queued: %w", err)}
		}
		return tempFail(fmt.Errorf("message not queued: %w", err))
	}
	fmt.Fprintln(a.stdout, id)
	return nil
}

// reportEvent prints what the immediate attempt did for one recipient.
func (a *app) reportEvent(e queue.Event) {
	var what string
	switch e.Kind {
	case queue.EventDelivered:
		what = "delivered"
	case queue.EventDeferred:
		what = "deferred, next attempt " + e.NextAttempt.Local().Format(time.DateTime)
	case queue.EventBounced:
		what = "failed permanently"
		if e.DSN != "" {
			what += ", notification " + string(e.DSN) + " queued to the sender"
		}
	case queue.EventPossibleDuplicate:
		what = "connection lost after the message was sent: it may arrive twice"
	default:
		return
	}
	fmt.Fprintf(a.stderr, "%s: <%s> %s", e.Message, e.Recipient, what)
	if e.Result != nil {
		fmt.Fprintf(a.stderr, ": %s", outcomeText(e.Result))
	}
	fmt.Fprintln(a.stderr)
}

// envelopeSender picks the reverse-path: -f, else the single address of
// From:, else the login name at this host. "-f <>" means the null sender.
func (a *app) envelopeSender(o sendOptions, h *header) (string, error) {
	if o.from != "" {
		if o.from == "<>" {
			return "", nil
		}
		return strings.TrimSuffix(strings.TrimPrefix(o.from, "<"), ">"), nil
	}
	if f := h.get("From"); len(f) == 1 {
		if list, err := mail.ParseAddressList(f[0].value()); err == nil && len(list) == 1 {
			return list[0].Address, nil
		}
	}
	name := a.getenv("USER")
	if u, err := user.Current(); err == nil && name == "" {
		name = u.Username
	}
	if name == "" {
		return "", errors.New("no sender: use -f")
	}
	return name + "@" + a.hostname(), nil
}

func (a *app) hostname() string {
	if a.g.HELO != "" {
		return a.g.HELO
	}
	if h, err := os.Hostname(); err == nil && h != "" {
		return h
	}
	return "localhost"
}

// completeHeader adds the fields RFC 5322 §3.6 requires (Date:, From:) and
// a Message-ID: (§3.6.4 SHOULD) when the message lacks them, as sendmail
// and Postfix do for local submissions. Existing fields are never changed.
func (a *app) completeHeader(h *header, from, fullName string) *header {
	nl := "\r\n"
	if len(h.fields) > 0 && !bytes.HasSuffix(h.fields[0].raw, []byte("\r\n")) {
		nl = "\n"
	}
	added := false
	add := func(name, value string) {
		added = true
		h.fields = append(h.fields, headerField{name: name, raw: []byte(name + ": " + value + nl)})
	}
	if len(h.get("From")) == 0 && from != "" {
		add("From", (&mail.Address{Name: fullName, Address: from}).String())
	}
	if len(h.get("Date")) == 0 {
		add("Date", time.Now().Format(time.RFC1123Z))
	}
	if len(h.get("Message-ID")) == 0 {
		var b [12]byte
		_, _ = rand.Read(b[:]) // never fails (Go 1.24)
		add("Message-ID", "<"+hex.EncodeToString(b[:])+"@"+a.hostname()+">")
	}
	if added && len(h.sep) == 0 {
		// The header ended at a body line or at EOF: the fields added
		// above must still be separated from what follows.
		h.sep = []byte(nl)
	}
	return h
}

// tempFail marks errors opening or writing the queue as temporary (75), so
// that a program calling sendmail keeps the message and tries later.
func tempFail(err error) error {
	var ue *usageError
	var ee *exitError
	if errors.As(err, &ue) || errors.As(err, &ee) {
		return err
	}
	return &exitError{code: exitTempFail, err: err}
}
