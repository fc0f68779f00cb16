package postgres

import (
	"reflect"
	"testing"
	"time"

	"github.com/outboundmail/outbound/delivery"
	"github.com/outboundmail/outbound/queue"
)

// FuzzDecodeOutcome feeds arbitrary stored JSON to decodeOutcome (a column
// an operator can edit): it must never panic, and whatever it accepts must
// survive another encode/decode round trip unchanged.
func FuzzDecodeOutcome(f *testing.F) {
	for _, o := range []*queue.Outcome{
		{Class: delivery.Temporary, Reply: delivery.Reply{Code: 451, Enhanced: delivery.EnhancedCode{4, 7, 1}, Text: "greylisted\nretry"},
			Stage: delivery.StageRCPT, Host: "mx.example[192.0.2.1]:25", Error: "451", At: t0},
		{Class: delivery.Delivered, Reply: delivery.Reply{Code: 250, Text: "ok"}, Stage: delivery.StageEndData, At: t0.Add(time.Nanosecond)},
		{},
	} {
		b, err := encodeOutcome(o)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := decodeOutcome(b)
		if err != nil || o == nil {
			return
		}
		again, err := encodeOutcome(o)
		if err != nil {
			t.Fatalf("decoded %q to %+v, which does not encode: %v", b, o, err)
		}
		o2, err := decodeOutcome(again)
		if err != nil {
			t.Fatalf("re-decoding %s: %v", again, err)
		}
		if !reflect.DeepEqual(o, o2) {
			t.Fatalf("round trip changed the outcome:\n%+v\n%+v", o, o2)
		}
	})
}

// TestOutcomeRoundTrip checks that every field survives storage.
func TestOutcomeRoundTrip(t *testing.T) {
	in := &queue.Outcome{
		Class: delivery.Permanent,
		Reply: delivery.Reply{Code: 550, Enhanced: delivery.EnhancedCode{5, 1, 1}, Text: "no such user\nreally"},
		Stage: delivery.StageRCPT, Host: "mx.example[192.0.2.1]:25", Error: "rejected",
		At: time.Date(2031, 1, 2, 3, 4, 5, 6, time.FixedZone("x", 3600)),
	}
	b, err := encodeOutcome(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := decodeOutcome(b)
	if err != nil {
		t.Fatal(err)
	}
	if !out.At.Equal(in.At) {
		t.Fatalf("At = %v, want %v", out.At, in.At)
	}
	out.At = in.At
	if !reflect.DeepEqual(out, in) {
		t.Fatalf("round trip: got %+v, want %+v", out, in)
	}
	if o, err := decodeOutcome(nil); o != nil || err != nil {
		t.Fatalf("decodeOutcome(NULL) = %v, %v", o, err)
	}
	if _, err := decodeOutcome([]byte(`{"enhanced":[4,7]}`)); err == nil {
		t.Fatal("a two-part enhanced code was accepted")
	}
}
