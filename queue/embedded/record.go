package embedded

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"time"

	"github.com/outboundmail/outbound/delivery"
	"github.com/outboundmail/outbound/queue"
)

// Records are encoded by hand: a version byte, the fields as uvarint/varint
// numbers and length-prefixed strings, and a CRC-32C of everything before it.
// bbolt checksums only its meta pages, so the trailer is what detects a
// damaged data page or a record written by a bug; a record that fails any
// check is reported as corrupt, never half-read.

const (
	msgVersion  = 1
	destVersion = 1
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// bodyKind says where a message body lives.
type bodyKind uint8

const (
	bodyInline bodyKind = iota // in the ibody bucket, keyed by message ID
	bodyFile                   // in a file under bodies/, named by msgRecord.file
)

// msgRecord is the stored form of a message: the queue.Message plus where
// its body is, the body checksum, and the current lease of each recipient.
type msgRecord struct {
	msg     queue.Message
	kind    bodyKind
	file    string  // body file name when kind == bodyFile
	bodyCRC uint32  // CRC-32C of the body
	tokens  []int64 // per recipient: the token of its current lease, 0 when none
}

// destRecord is the stored form of a destination: its status, and the time
// under which it is filed in the ddue index (see index.go).
type destRecord struct {
	st     queue.DestinationStatus // Name is not stored: it is the key
	hasDue bool
	due    int64 // ddue time, nanoseconds; meaningful when hasDue
}

// errCorrupt is wrapped by every decoding error.
var errCorrupt = errors.New("corrupt record")

func corruptf(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errCorrupt}, a...)...)
}

type encoder struct{ b []byte }

func (e *encoder) byte(v byte)      { e.b = append(e.b, v) }
func (e *encoder) uint(v uint64)    { e.b = binary.AppendUvarint(e.b, v) }
func (e *encoder) int(v int64)      { e.b = binary.AppendVarint(e.b, v) }
func (e *encoder) str(s string)     { e.uint(uint64(len(s))); e.b = append(e.b, s...) }
func (e *encoder) bool2(a, b bool)  { e.byte(b2i(a) | b2i(b)<<1) }
func (e *encoder) time(t time.Time) { e.int(t.Unix()); e.uint(uint64(t.Nanosecond())) }

func (e *encoder) finish() []byte {
	return binary.BigEndian.AppendUint32(e.b, crc32.Checksum(e.b, castagnoli))
}

func b2i(v bool) byte {
	if v {
		return 1
	}
	return 0
}

func (e *encoder) outcome(o *queue.Outcome) {
	e.int(int64(o.Class))
	e.int(int64(o.Reply.Code))
	for _, n := range o.Reply.Enhanced {
		e.int(int64(n))
	}
	e.str(o.Reply.Text)
	e.str(string(o.Stage))
	e.str(o.Host)
	e.str(o.Error)
	e.time(o.At)
}

func encodeMsg(r *msgRecord) []byte {
	m := &r.msg
	e := &encoder{b: make([]byte, 0, 128+64*len(m.Recipients))}
	e.byte(msgVersion)
	e.str(string(m.ID))
	e.str(m.From)
	e.time(m.Arrived)
	e.uint(uint64(m.Size))
	e.str(m.IdempotencyKey)
	e.bool2(m.EightBit, m.RequireTLS)
	e.str(m.Return)
	e.str(m.EnvelopeID)
	e.byte(byte(r.kind))
	e.str(r.file)
	e.b = binary.BigEndian.AppendUint32(e.b, r.bodyCRC)
	e.uint(uint64(len(m.Recipients)))
	for i := range m.Recipients {
		rc := &m.Recipients[i]
		e.str(rc.Address)
		e.str(rc.Destination)
		if rc.Notify == nil {
			e.uint(0)
		} else {
			e.uint(uint64(len(rc.Notify)) + 1)
			for _, n := range rc.Notify {
				e.str(n)
			}
		}
		e.str(rc.ORCPT)
		e.byte(byte(rc.State))
		e.uint(uint64(rc.Attempts))
		e.time(rc.NextAttempt)
		e.time(rc.LastAttempt)
		e.byte(b2i(rc.DelayWarned) | b2i(rc.PossibleDuplicate)<<1 | b2i(rc.LastResult != nil)<<2)
		if rc.LastResult != nil {
			e.outcome(rc.LastResult)
		}
		e.uint(uint64(r.tokens[i]))
	}
	return e.finish()
}

func encodeDest(d *destRecord) []byte {
	e := &encoder{b: make([]byte, 0, 64)}
	e.byte(destVersion)
	e.time(d.st.NextAllowed)
	e.uint(uint64(d.st.ConsecutiveFailures))
	e.time(d.st.FirstFailure)
	e.time(d.st.LastFailure)
	e.bool2(d.st.LastResult != nil, d.hasDue)
	if d.st.LastResult != nil {
		e.outcome(d.st.LastResult)
	}
	e.int(d.due)
	return e.finish()
}

// decoder reads what encoder wrote. The first error sticks; later reads
// return zero values, so decode functions check d.err once at the end.
type decoder struct {
	b   []byte
	err error
}

// newDecoder checks the version and the CRC trailer.
func newDecoder(b []byte, version byte, what string) *decoder {
	if len(b) < 5 {
		return &decoder{err: corruptf("%s record of %d octets", what, len(b))}
	}
	body, sum := b[:len(b)-4], binary.BigEndian.Uint32(b[len(b)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return &decoder{err: corruptf("%s record checksum mismatch", what)}
	}
	if body[0] != version {
		return &decoder{err: corruptf("%s record version %d, want %d", what, body[0], version)}
	}
	return &decoder{b: body[1:]}
}

func (d *decoder) fail(format string, a ...any) {
	if d.err == nil {
		d.err = corruptf(format, a...)
	}
	d.b = nil
}

func (d *decoder) byte() byte {
	if len(d.b) < 1 {
		d.fail("truncated")
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad uvarint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) int() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// small reads an unsigned number that must fit an int and not exceed max.
func (d *decoder) small(max uint64) int {
	v := d.uint()
	if v > max {
		d.fail("number %d out of range", v)
		return 0
	}
	return int(v)
}

// smallInt reads a signed number that must fit an int32.
func (d *decoder) smallInt() int {
	v := d.int()
	if v < math.MinInt32 || v > math.MaxInt32 {
		d.fail("number %d out of range", v)
		return 0
	}
	return int(v)
}

func (d *decoder) str() string {
	n := d.uint()
	if n > uint64(len(d.b)) {
		d.fail("string of %d octets with %d left", n, len(d.b))
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *decoder) bool2() (bool, bool) {
	v := d.byte()
	if v > 3 {
		d.fail("flags %#x", v)
	}
	return v&1 != 0, v&2 != 0
}

func (d *decoder) u32() uint32 {
	if len(d.b) < 4 {
		d.fail("truncated")
		return 0
	}
	v := binary.BigEndian.Uint32(d.b)
	d.b = d.b[4:]
	return v
}

func (d *decoder) time() time.Time {
	sec := d.int()
	nsec := d.uint()
	if nsec >= 1e9 {
		d.fail("nanoseconds %d", nsec)
		return time.Time{}
	}
	return time.Unix(sec, int64(nsec)).UTC()
}

func (d *decoder) outcome() *queue.Outcome {
	o := &queue.Outcome{}
	o.Class = delivery.Class(d.smallInt())
	o.Reply.Code = d.smallInt()
	for i := range o.Reply.Enhanced {
		o.Reply.Enhanced[i] = d.smallInt()
	}
	o.Reply.Text = d.str()
	o.Stage = delivery.Stage(d.str())
	o.Host = d.str()
	o.Error = d.str()
	o.At = d.time()
	return o
}

func (d *decoder) end() error {
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d trailing octets", len(d.b))
	}
	return d.err
}

func decodeMsg(b []byte) (*msgRecord, error) {
	d := newDecoder(b, msgVersion, "message")
	r := &msgRecord{}
	m := &r.msg
	m.ID = queue.ID(d.str())
	m.From = d.str()
	m.Arrived = d.time()
	m.Size = int64(d.small(math.MaxInt64))
	m.IdempotencyKey = d.str()
	m.EightBit, m.RequireTLS = d.bool2()
	m.Return = d.str()
	m.EnvelopeID = d.str()
	r.kind = bodyKind(d.byte())
	if r.kind > bodyFile {
		d.fail("body kind %d", r.kind)
	}
	r.file = d.str()
	r.bodyCRC = d.u32()
	// Every recipient takes at least 12 octets, which bounds the allocation
	// a corrupt count can cause.
	n := d.small(uint64(len(d.b)) / 12)
	if d.err == nil {
		m.Recipients = make([]queue.Recipient, n)
		r.tokens = make([]int64, n)
	}
	for i := 0; i < n && d.err == nil; i++ {
		rc := &m.Recipients[i]
		rc.Address = d.str()
		rc.Destination = d.str()
		if k := d.small(uint64(len(d.b)) + 1); k > 0 {
			rc.Notify = make([]string, k-1)
			for j := range rc.Notify {
				rc.Notify[j] = d.str()
			}
		}
		rc.ORCPT = d.str()
		rc.State = queue.RecipientState(d.byte())
		if rc.State > queue.Held {
			d.fail("recipient state %d", rc.State)
		}
		rc.Attempts = d.small(math.MaxInt32)
		rc.NextAttempt = d.time()
		rc.LastAttempt = d.time()
		flags := d.byte()
		if flags > 7 {
			d.fail("recipient flags %#x", flags)
		}
		rc.DelayWarned, rc.PossibleDuplicate = flags&1 != 0, flags&2 != 0
		if flags&4 != 0 {
			rc.LastResult = d.outcome()
		}
		r.tokens[i] = int64(d.small(math.MaxInt64))
	}
	if err := d.end(); err != nil {
		return nil, err
	}
	return r, nil
}

func decodeDest(b []byte) (*destRecord, error) {
	d := newDecoder(b, destVersion, "destination")
	r := &destRecord{}
	r.st.NextAllowed = d.time()
	r.st.ConsecutiveFailures = d.small(math.MaxInt32)
	r.st.FirstFailure = d.time()
	r.st.LastFailure = d.time()
	var hasResult bool
	hasResult, r.hasDue = d.bool2()
	if hasResult {
		r.st.LastResult = d.outcome()
	}
	r.due = d.int()
	if err := d.end(); err != nil {
		return nil, err
	}
	return r, nil
}
