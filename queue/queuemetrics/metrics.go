// Package queuemetrics exports what an outbound queue does as Prometheus
// metrics.
//
// A [Metrics] is both a queue.Observer (pass it as Config.Observer, or in a
// queue.Observers list) and a prometheus.Collector (register it):
//
//	m := queuemetrics.New(store, nil)
//	prometheus.MustRegister(m)
//	q, err := queue.New(queue.Config{Store: store, Deliverer: d, Observer: m})
//
// The metrics, all prefixed with the namespace ("outbound" by default):
//
//	queue_recipients{state}              gauge: recipients in the store by state (queued, deferred, held)
//	attempts_total                       counter: delivery attempts (one transaction with one destination)
//	attempts_in_flight                   gauge: attempts running now, so connections in use
//	attempt_duration_seconds             histogram: how long an attempt took
//	destination_unavailable_total        counter: attempts after which a destination was put in backoff
//	recipient_results_total{class,reason} counter: per-recipient results of attempts; class is
//	                                     delivered, temporary, permanent or expired, reason is the
//	                                     delivery/reason class of the reply (greylist, mailbox_full …)
//	deliveries_total                     counter: recipients delivered
//	delivery_latency_seconds             histogram: from enqueue to delivery, per recipient
//	notifications_total{action}          counter: DSNs queued, by action (failed, delayed)
//	possible_duplicates_total            counter: attempts lost after the final dot (RFC 1047)
//
// Queue depth is read from the store when scraped, at most once per
// Options.RefreshInterval. A store that implements [StateCounter] answers
// from an index; otherwise the store is listed page by page, which costs
// time in proportion to the queue.
package queuemetrics

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outboundmail/outbound/backoff"
	"github.com/outboundmail/outbound/delivery"
	"github.com/outboundmail/outbound/delivery/reason"
	"github.com/outboundmail/outbound/queue"
)

// StateCounter is implemented by stores that can count waiting recipients
// by state cheaply. Metrics uses it when the store has it.
type StateCounter interface {
	CountByState(ctx context.Context) (map[queue.RecipientState]int, error)
}

// Options configure [New]. The zero value (or nil) is ready to use.
type Options struct {
	// Namespace prefixes every metric name; "" means "outbound".
	Namespace string
	// RefreshInterval is how long a queue depth reading is reused; 0 means
	// one minute.
	RefreshInterval time.Duration
	// ScrapeTimeout bounds reading the queue depth; 0 means 10 seconds.
	ScrapeTimeout time.Duration
	// Clock is the time source of the refresh; nil means backoff.System{}.
	Clock backoff.Clock
}

// Metrics collects a queue's metrics. It is safe for concurrent use.
type Metrics struct {
	store   queue.Store
	refresh time.Duration
	timeout time.Duration
	clock   backoff.Clock

	mu       sync.Mutex
	depth    map[queue.RecipientState]int
	depthAt  time.Time
	depthErr error

	depthDesc     *prometheus.Desc
	attempts      prometheus.Counter
	inFlight      prometheus.Gauge
	attemptTime   prometheus.Histogram
	unavailable   prometheus.Counter
	results       *prometheus.CounterVec
	deliveries    prometheus.Counter
	latency       prometheus.Histogram
	notifications *prometheus.CounterVec
	duplicates    prometheus.Counter
}

var (
	_ queue.Observer       = (*Metrics)(nil)
	_ prometheus.Collector = (*Metrics)(nil)
)

// New returns the metrics of the queue that uses store. store may be nil;
// then queue depth is not exported.
func New(store queue.Store, opts *Options) *Metrics {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Namespace == "" {
		o.Namespace = "outbound"
	}
	if o.RefreshInterval <= 0 {
		o.RefreshInterval = time.Minute
	}
	if o.ScrapeTimeout <= 0 {
		o.ScrapeTimeout = 10 * time.Second
	}
	if o.Clock == nil {
		o.Clock = backoff.System{}
	}
	ns := o.Namespace
	// Attempts take from milliseconds (reused connection) to the 10-minute
	// end-of-data timeout; deliveries from seconds to the 5-day lifetime.
	attemptBuckets := prometheus.ExponentialBuckets(0.01, 4, 10)
	latencyBuckets := []float64{1, 10, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 86400, 2 * 86400, 5 * 86400}
	return &Metrics{
		store:   store,
		refresh: o.RefreshInterval,
		timeout: o.ScrapeTimeout,
		clock:   o.Clock,
		depthDesc: prometheus.NewDesc(ns+"_queue_recipients",
			"Recipients in the queue by state (queued, deferred, held).", []string{"state"}, nil),
		attempts: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "attempts_total",
			Help: "Delivery attempts: one SMTP transaction for the recipients of one message at one destination."}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "attempts_in_flight",
			Help: "Delivery attempts running now (connections in use)."}),
		attemptTime: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "attempt_duration_seconds",
			Help: "How long a delivery attempt took.", Buckets: attemptBuckets}),
		unavailable: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "destination_unavailable_total",
			Help: "Attempts after which their destination was judged unavailable and put in backoff."}),
		results: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "recipient_results_total",
			Help: "Per-recipient results of attempts, by class and by the reason the reply gives."}, []string{"class", "reason"}),
		deliveries: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "deliveries_total",
			Help: "Recipients delivered."}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "delivery_latency_seconds",
			Help: "Time from enqueue to delivery, per recipient.", Buckets: latencyBuckets}),
		notifications: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "notifications_total",
			Help: "Delivery status notifications queued, by action."}, []string{"action"}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "possible_duplicates_total",
			Help: "Recipients whose connection was lost after the final dot: the server may have the message twice."}),
	}
}

// Observe records one queue event.
func (m *Metrics) Observe(e queue.Event) {
	switch e.Kind {
	case queue.EventAttemptStarted:
		m.inFlight.Inc()
	case queue.EventAttemptFinished:
		m.inFlight.Dec()
		m.attempts.Inc()
		m.attemptTime.Observe(e.Duration.Seconds())
		if e.DestinationUnavailable {
			m.unavailable.Inc()
		}
	case queue.EventDelivered:
		m.result("delivered", e.Result)
		m.deliveries.Inc()
		m.latency.Observe(e.Time.Sub(e.Arrived).Seconds())
	case queue.EventDeferred:
		m.result("temporary", e.Result)
	case queue.EventBounced:
		m.result("permanent", e.Result)
		if e.DSN != "" {
			m.notifications.WithLabelValues("failed").Inc()
		}
	case queue.EventExpired:
		m.result("expired", e.Result)
		if e.DSN != "" {
			m.notifications.WithLabelValues("failed").Inc()
		}
	case queue.EventDelayWarning:
		m.notifications.WithLabelValues("delayed").Inc()
	case queue.EventPossibleDuplicate:
		m.duplicates.Inc()
	}
}

// result counts one recipient result, labelled with the reply's reason.
func (m *Metrics) result(class string, o *queue.Outcome) {
	why := "none"
	switch {
	case o == nil:
	case o.Reply.Code != 0:
		if c := reason.Classify(o.Reply).Class; c != "" {
			why = string(c)
		}
	case o.Class != delivery.Delivered && o.Error != "":
		why = "no_reply" // a connection or local error
	}
	m.results.WithLabelValues(class, why).Inc()
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	if m.store != nil {
		ch <- m.depthDesc
	}
	m.attempts.Describe(ch)
	m.inFlight.Describe(ch)
	m.attemptTime.Describe(ch)
	m.unavailable.Describe(ch)
	m.results.Describe(ch)
	m.deliveries.Describe(ch)
	m.latency.Describe(ch)
	m.notifications.Describe(ch)
	m.duplicates.Describe(ch)
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	if m.store != nil {
		depth, err := m.queueDepth()
		if err != nil {
			ch <- prometheus.NewInvalidMetric(m.depthDesc, err)
		} else {
			for _, st := range []queue.RecipientState{queue.Queued, queue.Deferred, queue.Held} {
				ch <- prometheus.MustNewConstMetric(m.depthDesc, prometheus.GaugeValue, float64(depth[st]), st.String())
			}
		}
	}
	m.attempts.Collect(ch)
	m.inFlight.Collect(ch)
	m.attemptTime.Collect(ch)
	m.unavailable.Collect(ch)
	m.results.Collect(ch)
	m.deliveries.Collect(ch)
	m.latency.Collect(ch)
	m.notifications.Collect(ch)
	m.duplicates.Collect(ch)
}

// listPage is how many messages one List call reads when counting.
const listPage = 1000

// queueDepth returns the recipients per state, cached for the refresh
// interval.
func (m *Metrics) queueDepth() (map[queue.RecipientState]int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.clock.Now()
	if !m.depthAt.IsZero() && now.Sub(m.depthAt) < m.refresh {
		return m.depth, m.depthErr
	}
	ctx, cancel := context.WithTimeout(context.Background(), m.timeout)
	defer cancel()
	m.depth, m.depthErr = count(ctx, m.store)
	m.depthAt = now
	return m.depth, m.depthErr
}

// count counts waiting recipients by state.
func count(ctx context.Context, s queue.Store) (map[queue.RecipientState]int, error) {
	if c, ok := s.(StateCounter); ok {
		return c.CountByState(ctx)
	}
	n := map[queue.RecipientState]int{}
	p := queue.ListParams{States: []queue.RecipientState{queue.Queued, queue.Deferred, queue.Held}, Limit: listPage}
	for {
		ms, err := s.List(ctx, p)
		if err != nil {
			return nil, err
		}
		for _, msg := range ms {
			for _, r := range msg.Recipients {
				if !r.State.Final() {
					n[r.State]++
				}
			}
		}
		if len(ms) < listPage {
			return n, nil
		}
		p.AfterID = ms[len(ms)-1].ID
	}
}
