package main

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// latencies collects durations from concurrent goroutines.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

// percentile returns the p-th percentile (0 < p ≤ 100) by the nearest-rank
// method, or 0 with no samples.
func (l *latencies) percentile(p float64) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return percentile(l.d, p)
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	rank := int(p/100*float64(len(s))+0.999999) - 1 // ceil(p/100·n) - 1
	return s[min(max(rank, 0), len(s)-1)]
}

// result is one line of machine-readable output: "RESULT k=v k=v …", in the
// order the fields were added, for compare.sh to pick fields from.
type result struct {
	keys []string
	vals map[string]string
}

func newResult() *result { return &result{vals: make(map[string]string)} }

func (r *result) set(k string, v any) {
	if _, ok := r.vals[k]; !ok {
		r.keys = append(r.keys, k)
	}
	var s string
	switch v := v.(type) {
	case float64:
		s = strconv.FormatFloat(v, 'f', 1, 64)
	case time.Duration:
		s = strconv.FormatFloat(v.Seconds()*1000, 'f', 2, 64) // milliseconds
	default:
		s = fmt.Sprint(v)
	}
	r.vals[k] = strings.ReplaceAll(s, " ", "_")
}

func (r *result) write(w io.Writer) {
	var b strings.Builder
	b.WriteString("RESULT")
	for _, k := range r.keys {
		b.WriteString(" " + k + "=" + r.vals[k])
	}
	fmt.Fprintln(w, b.String())
}

// rate is n per second over d.
func rate(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}
