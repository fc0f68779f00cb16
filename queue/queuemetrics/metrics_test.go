package queuemetrics_test

import (
	"context"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/outboundmail/outbound/delivery"
	"github.com/outboundmail/outbound/delivery/rfc5321"
	"github.com/outboundmail/outbound/queue"
	"github.com/outboundmail/outbound/queue/embedded"
	"github.com/outboundmail/outbound/queue/queuemetrics"
)

// replies is a Deliverer that answers every RCPT at a domain with a fixed
// reply: 250 delivers, 4xx defers, 5xx bounces.
type replies map[string]delivery.Reply

func (r replies) Destination(rcpt string) string { return rfc5321.Domain(rcpt) }

func (r replies) Deliver(ctx context.Context, dest string, m *delivery.Message) (*delivery.Report, error) {
	rep := &delivery.Report{Destination: dest}
	reply, ok := r[dest]
	if !ok {
		rep.DestinationUnavailable = true
		rep.DestinationReply = delivery.Reply{Code: 421, Text: "busy"}
		reply = rep.DestinationReply
	}
	class := map[int]delivery.Class{2: delivery.Delivered, 4: delivery.Temporary, 5: delivery.Permanent}[reply.Code/100]
	for _, rc := range m.Recipients {
		rep.Results = append(rep.Results, delivery.Result{Recipient: rc.Address, Class: class, Reply: reply, Stage: delivery.StageRCPT})
	}
	return rep, nil
}

func TestMetrics(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store, err := embedded.Open(t.TempDir(), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer store.Close()
		m := queuemetrics.New(store, nil)
		reg := prometheus.NewPedanticRegistry()
		reg.MustRegister(m)
		q, err := queue.New(queue.Config{Store: store, Observer: m, Hostname: "mta.test", Deliverer: replies{
			"ok.test":   {Code: 250, Text: "ok"},
			"grey.test": {Code: 450, Enhanced: delivery.EnhancedCode{4, 2, 0}, Text: "greylisted, try again in 5 minutes"},
			"gone.test": {Code: 550, Enhanced: delivery.EnhancedCode{5, 1, 1}, Text: "no such user"},
			"app.test":  {Code: 250, Text: "ok"},
		}})
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		for _, to := range []string{"a@ok.test", "b@grey.test", "c@gone.test", "d@down.test"} {
			if _, err := q.Enqueue(ctx, queue.Envelope{From: "app@app.test", To: []string{to}}, strings.NewReader("Subject: x\r\n\r\n")); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(time.Second)
		if _, err := q.RunOnce(ctx); err != nil {
			t.Fatal(err)
		}
		// grey.test and down.test wait; ok.test, gone.test and the bounce
		// to app.test are done.
		if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP outbound_attempts_total Delivery attempts: one SMTP transaction for the recipients of one message at one destination.
# TYPE outbound_attempts_total counter
outbound_attempts_total 5
# HELP outbound_attempts_in_flight Delivery attempts running now (connections in use).
# TYPE outbound_attempts_in_flight gauge
outbound_attempts_in_flight 0
# HELP outbound_deliveries_total Recipients delivered.
# TYPE outbound_deliveries_total counter
outbound_deliveries_total 2
# HELP outbound_destination_unavailable_total Attempts after which their destination was judged unavailable and put in backoff.
# TYPE outbound_destination_unavailable_total counter
outbound_destination_unavailable_total 1
# HELP outbound_notifications_total Delivery status notifications queued, by action.
# TYPE outbound_notifications_total counter
outbound_notifications_total{action="failed"} 1
# HELP outbound_queue_recipients Recipients in the queue by state (queued, deferred, held).
# TYPE outbound_queue_recipients gauge
outbound_queue_recipients{state="deferred"} 2
outbound_queue_recipients{state="held"} 0
outbound_queue_recipients{state="queued"} 0
# HELP outbound_recipient_results_total Per-recipient results of attempts, by class and by the reason the reply gives.
# TYPE outbound_recipient_results_total counter
outbound_recipient_results_total{class="delivered",reason="none"} 2
outbound_recipient_results_total{class="permanent",reason="user_unknown"} 1
outbound_recipient_results_total{class="temporary",reason="greylist"} 1
outbound_recipient_results_total{class="temporary",reason="server_busy"} 1
`), "outbound_attempts_total", "outbound_attempts_in_flight", "outbound_deliveries_total", "outbound_destination_unavailable_total",
			"outbound_notifications_total", "outbound_queue_recipients", "outbound_recipient_results_total"); err != nil {
			t.Fatal(err)
		}
		if n := testutil.CollectAndCount(m, "outbound_delivery_latency_seconds", "outbound_attempt_duration_seconds"); n != 2 {
			t.Fatalf("%d histograms, want 2", n)
		}
	})
}
