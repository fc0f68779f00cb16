package embedded

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"reflect"
	"testing"
	"time"

	"github.com/outboundmail/outbound/delivery"
	"github.com/outboundmail/outbound/queue"
)

func sampleRecord() *msgRecord {
	res := &queue.Outcome{Class: delivery.Temporary, Reply: delivery.Reply{Code: 451, Enhanced: delivery.EnhancedCode{4, 7, 1}, Text: "later\nplease"},
		Stage: delivery.StageRCPT, Host: "mx[192.0.2.1]:25", Error: "x", At: t0.Add(-time.Minute)}
	return &msgRecord{
		msg: queue.Message{
			ID: "m01", From: "a@b.example", Arrived: t0.Add(-time.Hour), Size: 12345, IdempotencyKey: "k",
			EightBit: true, Return: "FULL", EnvelopeID: "e1", RequireTLS: true,
			Recipients: []queue.Recipient{
				{Address: "x@c.example", Destination: "c.example", Notify: []string{"FAILURE", "DELAY"}, ORCPT: "rfc822;x@c.example",
					State: queue.Deferred, Attempts: 3, NextAttempt: t0, LastAttempt: t0.Add(-time.Minute), LastResult: res,
					DelayWarned: true, PossibleDuplicate: true},
				{Address: "y@d.example", Destination: "d.example", State: queue.Queued},
				{Address: "z@d.example", Destination: "d.example", Notify: []string{}, State: queue.Held},
			},
		},
		kind: bodyFile, file: "0123456789abcdef0123456789abcdef", bodyCRC: 0xdeadbeef,
		tokens: []int64{17, 0, 0},
	}
}

func sampleDest() *destRecord {
	return &destRecord{
		st: queue.DestinationStatus{NextAllowed: t0, ConsecutiveFailures: 4, FirstFailure: t0.Add(-time.Hour), LastFailure: t0,
			LastResult: &queue.Outcome{Class: delivery.Permanent, Reply: delivery.Reply{Code: 554}, Stage: delivery.StageGreeting, At: t0}},
		hasDue: true, due: t0.UnixNano(),
	}
}

func TestRecordRoundTrip(t *testing.T) {
	r := sampleRecord()
	got, err := decodeMsg(encodeMsg(r))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, r) {
		t.Fatalf("message round trip:\n got %+v\nwant %+v", got, r)
	}
	d := sampleDest()
	gd, err := decodeDest(encodeDest(d))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(gd, d) {
		t.Fatalf("destination round trip:\n got %+v\nwant %+v", gd, d)
	}
	// Every truncation and every single-bit flip is rejected.
	b := encodeMsg(r)
	for i := range b {
		if _, err := decodeMsg(b[:i]); !errors.Is(err, errCorrupt) {
			t.Fatalf("truncated to %d octets: %v", i, err)
		}
		for bit := range 8 {
			c := bytes.Clone(b)
			c[i] ^= 1 << bit
			if _, err := decodeMsg(c); !errors.Is(err, errCorrupt) {
				t.Fatalf("bit %d of octet %d flipped: %v", bit, i, err)
			}
		}
	}
}

// withCRC appends a valid trailer, so that fuzzing reaches the field
// decoding instead of stopping at the checksum.
func withCRC(b []byte) []byte {
	return binary.BigEndian.AppendUint32(bytes.Clone(b), crc32.Checksum(b, castagnoli))
}

// FuzzDecodeMessage feeds arbitrary octets to the message decoder, raw and
// with a valid checksum: it must return a record or an error wrapping
// errCorrupt, never panic or allocate without bound, and a record it accepts
// must survive a re-encoding unchanged.
func FuzzDecodeMessage(f *testing.F) {
	f.Add(encodeMsg(sampleRecord()))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, in := range [][]byte{b, withCRC(b)} {
			r, err := decodeMsg(in)
			if err != nil {
				if !errors.Is(err, errCorrupt) {
					t.Fatalf("error %v does not wrap errCorrupt", err)
				}
				continue
			}
			again, err := decodeMsg(encodeMsg(r))
			if err != nil || !reflect.DeepEqual(again, r) {
				t.Fatalf("re-encoding changed the record: %v", err)
			}
		}
	})
}

// FuzzDecodeDestination is FuzzDecodeMessage for destination records.
func FuzzDecodeDestination(f *testing.F) {
	f.Add(encodeDest(sampleDest()))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, in := range [][]byte{b, withCRC(b)} {
			r, err := decodeDest(in)
			if err != nil {
				if !errors.Is(err, errCorrupt) {
					t.Fatalf("error %v does not wrap errCorrupt", err)
				}
				continue
			}
			again, err := decodeDest(encodeDest(r))
			if err != nil || !reflect.DeepEqual(again, r) {
				t.Fatalf("re-encoding changed the record: %v", err)
			}
		}
	})
}

func TestIndexKeys(t *testing.T) {
	times := []time.Time{{}, time.Unix(-1, 0), time.Unix(0, 0), t0, t0.Add(time.Nanosecond), time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)}
	for i := 1; i < len(times); i++ {
		a := rdueKey("d.example", nanos(times[i-1]), "m1")
		b := rdueKey("d.example", nanos(times[i]), "m1")
		if bytes.Compare(a, b) >= 0 {
			t.Fatalf("key of %s does not sort before key of %s", times[i-1], times[i])
		}
	}
	dest, tm, id, ok := parseRDue(rdueKey("d.example", nanos(t0), "m/1"))
	if !ok || dest != "d.example" || tm != t0.UnixNano() || id != "m/1" {
		t.Fatalf("parseRDue = %q %d %q %t", dest, tm, id, ok)
	}
	// No destination's prefix is a prefix of another's.
	if bytes.HasPrefix(rdueKey("ab.example", 0, "x"), destPrefix("a")) {
		t.Fatal("destPrefix is ambiguous")
	}
}
