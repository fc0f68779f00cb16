package delivery_test

import (
	"runtime"
	"strings"
	"testing"

	"github.com/outboundmail/outbound/delivery"
	"github.com/outboundmail/outbound/delivery/deliverytest"
)

// Postfix's smtp-sink is an independent SMTP implementation; these tests
// skip when it is not installed.

func TestSink_Delivery(t *testing.T) {
	sink := deliverytest.StartSink(t)
	d, _, _ := testDeliverer(t, sink.Addr())
	for range 3 {
		rep := deliver(t, d, "example.com", message(testBody, "a@example.com", "b@example.com"))
		checkResults(t, rep, want{D, delivery.StageEndData, 250}, want{D, delivery.StageEndData, 250})
	}
	d.Close()
	if err := sink.WaitCounters(testCtx(t), 1, 3); err != nil {
		t.Fatal(err)
	}
	if sessions, msgs := sink.Counters(); sessions != 1 || msgs != 3 {
		t.Errorf("smtp-sink counted %d sessions, %d messages; want 1, 3", sessions, msgs)
	}
}

// TestSink_LargeMessage: a 50 MB message is streamed, never held: the
// process allocates a small fraction of it during the attempt.
func TestSink_LargeMessage(t *testing.T) {
	sink := deliverytest.StartSink(t)
	d, _, _ := testDeliverer(t, sink.Addr())
	size := int64(50 << 20)
	if raceEnabled {
		size = 8 << 20 // the race detector makes every octet slow
	}
	msg := message("", "a@example.com")
	msg.Body, msg.Size = &lazyBody{n: size}, size
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	rep := deliver(t, d, "example.com", msg)
	runtime.ReadMemStats(&after)
	checkResults(t, rep, want{D, delivery.StageEndData, 250})
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("allocated %d bytes for a %d-byte message", alloc, size)
	if alloc > uint64(size/10) {
		t.Errorf("allocated %d bytes for a %d-byte message", alloc, size)
	}
}

func TestSink_Failures(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want want
		dup  bool
		down bool
	}{
		{"451 RCPT", []string{"-r", "RCPT", "-b", "451 4.7.1 Try again later"}, want{T, delivery.StageRCPT, 451}, false, false},
		{"550 RCPT", []string{"-f", "RCPT", "-B", "550 5.1.1 No such user"}, want{P, delivery.StageRCPT, 550}, false, false},
		{"554 end of data", []string{"-f", ".", "-B", "554 5.7.1 Rejected"}, want{P, delivery.StageEndData, 554}, false, false},
		{"421 at connect", []string{"-Q", "CONNECT"}, want{T, delivery.StageGreeting, 421}, false, true},
		{"421 at MAIL", []string{"-Q", "MAIL"}, want{T, delivery.StageMAIL, 421}, false, true},
		{"drop at DATA", []string{"-q", "DATA"}, want{T, delivery.StageDATA, 0}, false, false},
		{"drop after the dot", []string{"-q", "."}, want{T, delivery.StageEndData, 0}, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sink := deliverytest.StartSink(t, tt.args...)
			d, _, _ := testDeliverer(t, sink.Addr())
			rep := deliver(t, d, "example.com", message(testBody, "a@example.com"))
			checkResults(t, rep, tt.want)
			r := rep.Results[0]
			if r.PossibleDuplicate != tt.dup || rep.DestinationUnavailable != tt.down {
				t.Errorf("PossibleDuplicate %v, DestinationUnavailable %v; want %v, %v",
					r.PossibleDuplicate, rep.DestinationUnavailable, tt.dup, tt.down)
			}
			if tt.want.code == 0 && r.Err == nil {
				t.Error("no error for a dropped connection")
			}
		})
	}
}

// benchBody is a 2 KB message, as in PEERS.md's smtp-source figures.
var benchBody = "From: sender@example.org\r\nTo: a@example.com\r\nSubject: bench\r\n\r\n" +
	strings.Repeat(strings.Repeat("x", 76)+"\r\n", 26)

// BenchmarkDeliver measures messages per second over reused connections on
// loopback, one recipient each: to Postfix's smtp-sink and to a go-smtp
// server, from one goroutine and from several.
func BenchmarkDeliver(b *testing.B) {
	b.Run("smtp-sink", func(b *testing.B) {
		benchDeliver(b, deliverytest.StartSink(b).Addr(), false)
	})
	b.Run("smtp-sink/parallel", func(b *testing.B) {
		benchDeliver(b, deliverytest.StartSink(b).Addr(), true)
	})
	b.Run("go-smtp", func(b *testing.B) {
		benchDeliver(b, deliverytest.NewServer(b, nil).Addr, false)
	})
	b.Run("go-smtp/parallel", func(b *testing.B) {
		benchDeliver(b, deliverytest.NewServer(b, nil).Addr, true)
	})
}

func benchDeliver(b *testing.B, addr string, parallel bool) {
	d := &delivery.Deliverer{
		Hostname:               "client.example.org",
		Relay:                  addr,
		TLS:                    delivery.TLSDisabled,
		MaxConnsPerDestination: 4,
		MaxIdlePerDestination:  4,
		MaxMessagesPerConn:     1 << 30,
	}
	defer d.Close()
	dest := d.Destination("a@example.com")
	one := func() {
		msg := &delivery.Message{
			From:       "sender@example.org",
			Recipients: []delivery.Recipient{{Address: "a@example.com"}},
			Body:       strings.NewReader(benchBody),
			Size:       int64(len(benchBody)),
		}
		rep, err := d.Deliver(b.Context(), dest, msg)
		if err != nil || rep.Results[0].Class != delivery.Delivered {
			b.Fatalf("Deliver: %v %+v", err, rep)
		}
	}
	b.SetBytes(int64(len(benchBody)))
	b.ReportAllocs()
	if parallel {
		b.SetParallelism(2) // 2 × GOMAXPROCS goroutines share MaxConnsPerDestination
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				one()
			}
		})
	} else {
		for b.Loop() {
			one()
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
}
