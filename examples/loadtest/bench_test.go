package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/outboundmail/outbound/delivery/deliverytest"
)

// Benchmarks of the library's paths that the package benchmarks do not
// cover: Queue.Enqueue as an application calls it (address checks, body
// canonicalisation and spooling, then the durable store write; the store
// packages measure Store.Enqueue alone), and the whole queue with the real
// delivery engine and a real SMTP server (queue's BenchmarkRunOnce uses a
// simulated network). For benchstat:
//
//	go test -run='^$' -bench=. -benchtime=5000x -count=6 ./examples/loadtest > new.txt
//	benchstat old.txt new.txt
//
// Each reports msg/s; BenchmarkEndToEnd also the p50 and p99 latency from
// Enqueue to the server's acceptance.

func benchConfig(b *testing.B, store string, producers int) *sendConfig {
	return &sendConfig{store: store, pg: "postgres://postgres@127.0.0.1:5432/test?pool_max_conns=16&sslmode=disable",
		n: b.N, size: 2048, producers: producers, workers: 32, conns: 16, perConn: 1000, timeout: 10 * time.Minute}
}

// benchEnv opens a fresh store of kind store, relaying to addr.
func benchEnv(b *testing.B, c *sendConfig, addr, phase string) *phaseEnv {
	b.Helper()
	c.addr = addr
	var pg *pgServer
	if c.store == "postgres" {
		ctx, cancel := context.WithTimeout(b.Context(), 5*time.Second)
		defer cancel()
		var err error
		if pg, err = findPostgres(ctx, c.pg); err != nil {
			b.Skipf("PostgreSQL not available: %v", err)
		}
		b.Cleanup(pg.close)
	}
	e, err := newPhaseEnv(b.Context(), c, b.TempDir(), pg, phase)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(e.close)
	return e
}

// BenchmarkEnqueue measures Queue.Enqueue of 2 KB messages, nothing
// delivering, from 1 and 16 goroutines.
func BenchmarkEnqueue(b *testing.B) {
	body := makeBody(2048)
	for _, store := range []string{"embedded", "postgres"} {
		for _, producers := range []int{1, 16} {
			b.Run(fmt.Sprintf("store=%s/producers=%d", store, producers), func(b *testing.B) {
				e := benchEnv(b, benchConfig(b, store, producers), "127.0.0.1:1", "enqueue")
				b.SetBytes(int64(len(body)))
				b.ResetTimer()
				if _, err := e.enqueueAll(b.Context(), body); err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
			})
		}
	}
}

// BenchmarkDrain measures Run delivering b.N queued messages to smtp-sink
// over reused connections: claim, SMTP transaction, durable finish.
func BenchmarkDrain(b *testing.B) {
	sink := deliverytest.StartSink(b)
	body := makeBody(2048)
	for _, store := range []string{"embedded", "postgres"} {
		b.Run("store="+store, func(b *testing.B) {
			e := benchEnv(b, benchConfig(b, store, 16), sink.Addr(), "drain")
			if _, err := e.enqueueAll(b.Context(), body); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			if _, err := e.runUntilDone(b.Context(), nil); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
		})
	}
}

// BenchmarkEndToEnd measures 16 goroutines enqueueing b.N messages while
// Run delivers them to smtp-sink, until the last is delivered.
func BenchmarkEndToEnd(b *testing.B) {
	sink := deliverytest.StartSink(b)
	body := makeBody(2048)
	for _, store := range []string{"embedded", "postgres"} {
		b.Run("store="+store, func(b *testing.B) {
			e := benchEnv(b, benchConfig(b, store, 16), sink.Addr(), "e2e")
			b.ResetTimer()
			if _, err := e.runUntilDone(b.Context(), func(ctx context.Context) error {
				_, err := e.enqueueAll(ctx, body)
				return err
			}); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
			b.ReportMetric(float64(e.obs.lat.percentile(50).Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(e.obs.lat.percentile(99).Microseconds())/1000, "p99-ms")
		})
	}
}
