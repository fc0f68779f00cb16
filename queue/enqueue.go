package queue

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/outboundmail/outbound/delivery"
	"github.com/outboundmail/outbound/delivery/rfc5321"
	"github.com/outboundmail/outbound/queue/internal/spool"
)

// Envelope is what an application hands to [Queue.Enqueue] besides the body.
type Envelope struct {
	// From is the envelope sender (reverse-path), without angle brackets.
	// "" is the null sender <>, which gets no notifications (RFC 5321 §4.5.5).
	From string
	// To lists the recipients. Duplicates (same local part, domain in any
	// case) are sent once.
	To []string
	// Notify is the RFC 3461 NOTIFY parameter for every address in To: nil
	// (unset: failures and delays are reported), ["NEVER"], or some of
	// "SUCCESS", "FAILURE", "DELAY".
	Notify []string
	// Recipients lists further recipients with their own NOTIFY and ORCPT,
	// for applications that relay mail received with DSN parameters.
	Recipients []delivery.Recipient
	// Return is RFC 3461 RET: "FULL", "HDRS" or "" (unset: a failure
	// notification returns the headers only).
	Return string
	// EnvelopeID is RFC 3461 ENVID, echoed in notifications; "" means unset.
	EnvelopeID string
	// RequireTLS asks for RFC 8689 REQUIRETLS.
	RequireTLS bool
	// IdempotencyKey, if set, makes Enqueue idempotent: a second Enqueue
	// with the same key, while the first message is still queued, stores
	// nothing and returns the first ID.
	IdempotencyKey string
}

// InvalidMessageError reports an envelope or body that Enqueue refuses.
// Nothing is stored when it is returned.
type InvalidMessageError struct {
	// Field names what is wrong: "From", "To[2]", "Notify", "Return",
	// "EnvelopeID", "ORCPT", "IdempotencyKey" or "Body".
	Field string
	// Reason says what is wrong with it.
	Reason string
	// Err is the cause, when there is one: a *rfc5321.AddressError for an
	// address, a *rfc5321.DataError for a body line, ErrMessageTooLarge or
	// ErrMailLoop.
	Err error
}

// Error returns "queue: invalid message: Field: Reason".
func (e *InvalidMessageError) Error() string {
	s := "queue: invalid message: " + e.Field
	if e.Reason != "" {
		s += ": " + e.Reason
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the cause.
func (e *InvalidMessageError) Unwrap() error { return e.Err }

// Causes reported inside an [*InvalidMessageError].
var (
	// ErrMessageTooLarge: the body is larger than Config.MaxMessageSize.
	ErrMessageTooLarge = errors.New("message larger than the configured maximum")
	// ErrMailLoop: the header has more Received: fields than
	// MaxReceivedHeaders, the sign of a forwarding loop (RFC 5321 §6.3).
	ErrMailLoop = errors.New("too many Received: header fields (mail loop)")
)

// MaxReceivedHeaders is the number of Received: header fields above which
// Enqueue refuses a message as looping (RFC 5321 §6.3: "at least 100").
const MaxReceivedHeaders = 100

// Limits of RFC 3461 parameters, which go onto the wire as ESMTP parameters.
const (
	maxEnvelopeID     = 100 // RFC 3461 §4.4
	maxORCPT          = 500 // RFC 3461 §4.2
	maxIdempotencyKey = 1024
)

// Enqueue checks env and body and stores the message durably. When it
// returns nil, the message is on stable storage and will be delivered, or
// bounced to its sender, whatever happens to this process.
//
// Everything is checked before anything is written: addresses against RFC 5321 (a *rfc5321.AddressError inside), line
// endings made CRLF and lines over 998 octets or NUL refused (a
// *rfc5321.DataError inside), the size against Config.MaxMessageSize, and
// the Received: count against [MaxReceivedHeaders]. Every refusal is an
// *InvalidMessageError, and leaves nothing stored. Bodies over 256 KiB are
// spooled to a temporary file (os.TempDir) while they are checked.
func (q *Queue) Enqueue(ctx context.Context, env Envelope, body io.Reader) (ID, error) {
	if q.closed.Load() {
		return "", ErrClosed
	}
	now := q.cfg.Clock.Now()
	m, err := q.newMessage(env, now)
	if err != nil {
		return "", err
	}
	spooled, err := q.spool(body, m)
	if err != nil {
		return "", err
	}
	defer spooled.Close()
	id, err := q.cfg.Store.Enqueue(ctx, EnqueueParams{Message: m, Body: spooled.r})
	if err != nil {
		return "", fmt.Errorf("queue: enqueue: %w", err)
	}
	q.log.LogAttrs(ctx, slog.LevelInfo, "queued", slog.String("id", string(id)), slog.String("from", m.From),
		slog.Int("recipients", len(m.Recipients)), slog.Int64("size", spooled.size))
	q.poke()
	return id, nil
}

// newMessage validates env and builds the message to store.
func (q *Queue) newMessage(env Envelope, now time.Time) (*Message, error) {
	if err := rfc5321.CheckReversePath(env.From); err != nil {
		return nil, &InvalidMessageError{Field: "From", Reason: "invalid reverse-path", Err: err}
	}
	ret := strings.ToUpper(env.Return)
	if ret != "" && ret != "FULL" && ret != "HDRS" {
		return nil, &InvalidMessageError{Field: "Return", Reason: fmt.Sprintf("%q is not FULL or HDRS", env.Return)}
	}
	if reason := checkXtext(env.EnvelopeID, maxEnvelopeID); reason != "" {
		return nil, &InvalidMessageError{Field: "EnvelopeID", Reason: reason}
	}
	if len(env.IdempotencyKey) > maxIdempotencyKey {
		return nil, &InvalidMessageError{Field: "IdempotencyKey", Reason: fmt.Sprintf("longer than %d octets", maxIdempotencyKey)}
	}
	all := make([]delivery.Recipient, 0, len(env.To)+len(env.Recipients))
	for _, a := range env.To {
		all = append(all, delivery.Recipient{Address: a, Notify: env.Notify})
	}
	all = append(all, env.Recipients...)
	if len(all) == 0 {
		return nil, &InvalidMessageError{Field: "To", Reason: "no recipients"}
	}
	m := &Message{
		ID:             newID(now),
		From:           env.From,
		Arrived:        now,
		IdempotencyKey: env.IdempotencyKey,
		Return:         ret,
		EnvelopeID:     env.EnvelopeID,
		RequireTLS:     env.RequireTLS,
	}
	seen := make(map[string]bool, len(all))
	m.Recipients = make([]Recipient, 0, len(all))
	for i, r := range all {
		if err := rfc5321.CheckMailbox(r.Address); err != nil {
			return nil, &InvalidMessageError{Field: recipientField(i), Reason: "invalid recipient", Err: err}
		}
		notify, err := checkNotify(r.Notify)
		if err != nil {
			return nil, &InvalidMessageError{Field: recipientField(i) + ".Notify", Reason: err.Error()}
		}
		if reason := checkORCPT(r.ORCPT); reason != "" {
			return nil, &InvalidMessageError{Field: recipientField(i) + ".ORCPT", Reason: reason}
		}
		key := mailboxKey(r.Address)
		if seen[key] {
			continue
		}
		seen[key] = true
		dest := q.cfg.Deliverer.Destination(r.Address)
		if dest == "" {
			return nil, &InvalidMessageError{Field: recipientField(i), Reason: "the deliverer has no destination for " + r.Address}
		}
		m.Recipients = append(m.Recipients, Recipient{
			Address:     r.Address,
			Destination: dest,
			Notify:      notify,
			ORCPT:       r.ORCPT,
			State:       Queued,
			NextAttempt: now,
		})
	}
	return m, nil
}

// recipientField names recipient i in an *InvalidMessageError; built only
// for errors, as it allocates.
func recipientField(i int) string { return "To[" + strconv.Itoa(i) + "]" }

// mailboxKey identifies a mailbox for duplicate removal: the local part is
// case-sensitive (RFC 5321 §2.4), the domain is not.
func mailboxKey(addr string) string {
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return addr
	}
	if d := addr[at+1:]; strings.ToLower(d) != d {
		return addr[:at] + "@" + strings.ToLower(d)
	}
	return addr
}

// checkNotify validates an RFC 3461 §4.1 NOTIFY list and returns it in
// upper case: NEVER alone, or any of SUCCESS, FAILURE, DELAY, each once.
func checkNotify(n []string) ([]string, error) {
	if n == nil {
		return nil, nil
	}
	if len(n) == 0 {
		return nil, errors.New("empty NOTIFY list (use nil for unset)")
	}
	out := make([]string, 0, len(n))
	seen := map[string]bool{}
	for _, v := range n {
		u := strings.ToUpper(v)
		switch u {
		case "NEVER", "SUCCESS", "FAILURE", "DELAY":
		default:
			return nil, fmt.Errorf("NOTIFY value %q is not NEVER, SUCCESS, FAILURE or DELAY", v)
		}
		if seen[u] {
			return nil, fmt.Errorf("NOTIFY value %s given twice", u)
		}
		seen[u] = true
		out = append(out, u)
	}
	if seen["NEVER"] && len(out) > 1 {
		return nil, errors.New("NOTIFY=NEVER cannot be combined with other values")
	}
	return out, nil
}

// checkXtext returns why s cannot be sent as an RFC 3461 xtext parameter
// value of at most max octets, or "". Every printable ASCII character is
// allowed (the deliverer encodes "+" and "="); nothing else, so no value can
// smuggle a space, CR or LF onto the wire.
func checkXtext(s string, max int) string {
	if len(s) > max {
		return fmt.Sprintf("longer than %d octets", max)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x21 || c > 0x7e {
			return fmt.Sprintf("octet 0x%02x at %d is not printable ASCII", c, i)
		}
	}
	return ""
}

// checkORCPT checks an RFC 3461 §4.2 ORCPT value, "addr-type;address".
func checkORCPT(s string) string {
	if s == "" {
		return ""
	}
	if reason := checkXtext(s, maxORCPT); reason != "" {
		return reason
	}
	if i := strings.IndexByte(s, ';'); i <= 0 || i == len(s)-1 {
		return `not of the form "addr-type;address"`
	}
	return ""
}

// memSpool is the size up to which Enqueue keeps a canonical body in
// memory; larger bodies are spooled to a temporary file.
const memSpool = 256 << 10

// spooled is a checked, canonical body ready for the store.
type spooled struct {
	r    io.Reader // &mem, or file
	mem  bytes.Reader
	size int64
	file *os.File // nil when in memory
}

// Close removes the temporary file, if any.
func (s *spooled) Close() error {
	if s.file == nil {
		return nil
	}
	s.file.Close()
	return os.Remove(s.file.Name())
}

// checkers reuses the canonicaliser and its input buffer (allocated only
// for input that is not already canonical) from one Enqueue to the next.
var checkers = sync.Pool{New: func() any { return new(bodyReader) }}

// spool reads and checks the whole body before the store sees any of it, so
// that every refusal comes before anything is written and the message's
// EightBit is known when the store records it.
func (q *Queue) spool(body io.Reader, m *Message) (*spooled, error) {
	br := checkers.Get().(*bodyReader)
	br.reset(body, q.cfg.MaxMessageSize)
	defer func() {
		br.reset(nil, 0) // keep no reference to the caller's reader
		checkers.Put(br)
	}()
	mem, err := spool.ReadUpTo(br, make([]byte, 0, spoolSize(body)), memSpool+1)
	if err == nil && len(mem) <= memSpool {
		m.EightBit = br.r.EightBit()
		s := &spooled{size: int64(len(mem))}
		s.mem.Reset(mem)
		s.r = &s.mem
		return s, nil
	}
	var f *os.File
	if err == nil {
		if f, err = os.CreateTemp("", "outbound-enqueue-*"); err == nil {
			if _, err = f.Write(mem); err == nil {
				_, err = io.Copy(f, br)
			}
			if err == nil {
				_, err = f.Seek(0, io.SeekStart)
			}
		}
	}
	s := &spooled{r: f, size: br.r.Size(), file: f}
	if err != nil {
		if f != nil {
			s.Close()
		}
		if br.err != nil {
			return nil, br.err
		}
		return nil, fmt.Errorf("queue: enqueue: reading body: %w", err)
	}
	m.EightBit = br.r.EightBit()
	return s, nil
}

// spoolSize returns the capacity to read a canonical body into. A reader
// that knows what is left (*bytes.Reader, *bytes.Buffer, *strings.Reader)
// gets that, plus room for what canonicalisation may add (a CR before each
// bare LF, a final CR LF) and the octet that detects the end; readUpTo
// grows a buffer that proves too small.
func spoolSize(body io.Reader) int {
	n := 512
	if l, ok := body.(interface{ Len() int }); ok && l.Len() >= 0 {
		n = l.Len() + l.Len()/64 + 3
	}
	return min(n, memSpool+1)
}

// bodyReader canonicalises the body and checks it on the way: data errors,
// size and Received: count become an *InvalidMessageError (also kept in
// err).
type bodyReader struct {
	r   rfc5321.Reader
	max int64
	err *InvalidMessageError

	// Header scan state, over canonical CRLF data.
	inBody      bool // the empty line ending the header was seen
	atLineStart bool
	match       int // octets of "received:" matched at the start of the line
	received    int
}

const receivedPrefix = "received:"

// reset makes b check body, keeping the canonicaliser's buffer.
func (b *bodyReader) reset(body io.Reader, max int64) {
	*b = bodyReader{r: b.r, max: max, atLineStart: true}
	b.r.Reset(body)
}

// Read implements io.Reader.
func (b *bodyReader) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	n, err := b.r.Read(p)
	if !b.inBody {
		b.scanHeader(p[:n])
		if b.received > MaxReceivedHeaders {
			return b.fail(&InvalidMessageError{Field: "Body", Reason: fmt.Sprintf("%d Received: fields", b.received), Err: ErrMailLoop})
		}
	}
	if b.max > 0 && b.r.Size() > b.max {
		return b.fail(&InvalidMessageError{Field: "Body", Reason: fmt.Sprintf("over %d octets", b.max), Err: ErrMessageTooLarge})
	}
	if err != nil && err != io.EOF {
		var de *rfc5321.DataError
		if errors.As(err, &de) {
			return b.fail(&InvalidMessageError{Field: "Body", Reason: "not valid message data", Err: de})
		}
	}
	return n, err
}

func (b *bodyReader) fail(e *InvalidMessageError) (int, error) {
	b.err = e
	return 0, e
}

// scanHeader counts Received: fields in the header section. Continuation
// lines start with white space and so never match.
func (b *bodyReader) scanHeader(p []byte) {
	for _, c := range p {
		if b.inBody {
			return
		}
		switch {
		case c == '\n':
			b.atLineStart, b.match = true, 0
		case b.atLineStart && b.match == 0 && c == '\r':
			// An empty line (CR LF) ends the header section. The
			// Reader guarantees every CR is followed by LF.
			b.inBody = true
		case b.atLineStart && b.match < len(receivedPrefix) && lower(c) == receivedPrefix[b.match]:
			b.match++
			if b.match == len(receivedPrefix) {
				b.received++
				b.atLineStart = false
			}
		default:
			b.atLineStart = false
		}
	}
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// idEncoding is base32 with the digits first, so that IDs sort like the
// numbers they encode.
var idEncoding = base32.NewEncoding("0123456789abcdefghijklmnopqrstuv").WithPadding(base32.NoPadding)

// newID returns a new message ID: 48 bits of milliseconds since 1970, so IDs
// sort by arrival, and 72 random bits, so two queues sharing a store never
// collide. 24 characters of [0-9a-v].
func newID(now time.Time) ID {
	var b [15]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now.UnixMilli())<<16)
	_, _ = rand.Read(b[6:]) // crypto/rand.Read never fails (Go 1.24)
	var s [24]byte
	idEncoding.Encode(s[:], b[:])
	return ID(s[:])
}
