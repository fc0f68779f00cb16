package backoff

import (
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	cenkalti "github.com/cenkalti/backoff/v4"
	"github.com/jonboulle/clockwork"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func offsets(steps []Step) []time.Duration {
	out := make([]time.Duration, len(steps))
	for i, s := range steps {
		if s.Attempt != i+1 {
			panic("attempt numbers are not 1, 2, 3, …")
		}
		out[i] = s.Offset
	}
	return out
}

func TestTimelineDefault(t *testing.T) {
	got := offsets(Schedule{}.Timeline())
	if len(got) != 124 {
		t.Fatalf("default timeline has %d attempts, want 124", len(got))
	}
	head := []time.Duration{0, 5 * time.Minute, 15 * time.Minute, 35 * time.Minute,
		75 * time.Minute, 135 * time.Minute, 195 * time.Minute}
	for i, want := range head {
		if got[i] != want {
			t.Errorf("attempt %d at +%v, want +%v", i+1, got[i], want)
		}
	}
	// From attempt 6 (+2h15m) on, one attempt per MaxBackoff (1h) …
	for i := 6; i < len(got)-1; i++ {
		if gap := got[i] - got[i-1]; gap != time.Hour {
			t.Errorf("gap before attempt %d is %v, want 1h", i+1, gap)
		}
	}
	// … up to +119h15m, then the final attempt exactly at the 5-day expiry.
	if got[122] != 119*time.Hour+15*time.Minute || got[123] != 120*time.Hour {
		t.Errorf("last attempts at +%v, +%v; want +119h15m, +120h", got[122], got[123])
	}
}

func TestTimelineOthers(t *testing.T) {
	tests := []struct {
		name  string
		s     Schedule
		head  []time.Duration // first offsets
		tail  time.Duration   // offset of the final attempt
		count int
	}{
		{"constant 30m for 1 day", Schedule{MinBackoff: 30 * time.Minute, Multiplier: 1, MaxLifetime: 24 * time.Hour},
			[]time.Duration{0, 30 * time.Minute, time.Hour, 90 * time.Minute}, 24 * time.Hour, 49},
		{"postfix 300s..4000s", Schedule{MinBackoff: 300 * time.Second, MaxBackoff: 4000 * time.Second},
			[]time.Duration{0, 300 * time.Second, 900 * time.Second, 2100 * time.Second, 4500 * time.Second, 8500 * time.Second}, 120 * time.Hour, 112}, // 6 + (432000-8500)/4000 = 105 more + final
		{"x3 capped at 2h, 4 days", Schedule{MinBackoff: 10 * time.Minute, MaxBackoff: 2 * time.Hour, Multiplier: 3, MaxLifetime: 96 * time.Hour},
			[]time.Duration{0, 10 * time.Minute, 40 * time.Minute, 130 * time.Minute, 250 * time.Minute}, 96 * time.Hour, 51},
		{"max below min: min wins", Schedule{MinBackoff: time.Hour, MaxBackoff: time.Minute, MaxLifetime: 4 * time.Hour},
			[]time.Duration{0, time.Hour, 2 * time.Hour, 3 * time.Hour, 4 * time.Hour}, 4 * time.Hour, 5},
		{"previous attempt too close to expiry", Schedule{MinBackoff: time.Hour, Multiplier: 1, MaxLifetime: 150 * time.Minute},
			[]time.Duration{0, time.Hour, 2 * time.Hour}, 2 * time.Hour, 3},
		{"lifetime shorter than min", Schedule{MinBackoff: time.Hour, MaxLifetime: time.Minute},
			[]time.Duration{0}, 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := offsets(tt.s.Timeline())
			if len(got) != tt.count {
				t.Errorf("%d attempts, want %d", len(got), tt.count)
			}
			for i, want := range tt.head {
				if i >= len(got) || got[i] != want {
					t.Fatalf("offsets start %v, want %v", got[:min(len(got), len(tt.head))], tt.head)
				}
			}
			if got[len(got)-1] != tt.tail {
				t.Errorf("final attempt at +%v, want +%v", got[len(got)-1], tt.tail)
			}
		})
	}
}

// TestIntervalMatchesContinuousBackOff checks the replay against one
// long-lived cenkalti ExponentialBackOff, i.e. what a process that never
// restarts would compute.
func TestIntervalMatchesContinuousBackOff(t *testing.T) {
	for _, s := range []Schedule{{}, {MinBackoff: time.Minute, MaxBackoff: 4 * time.Hour, Multiplier: 1.5},
		{MinBackoff: 7 * time.Second, MaxBackoff: 1000 * time.Hour, Multiplier: 1.25}} {
		c := s.effective()
		cont := &cenkalti.ExponentialBackOff{InitialInterval: c.min, Multiplier: c.mult, MaxInterval: c.max,
			Stop: cenkalti.Stop, Clock: fixedClock{}}
		cont.Reset()
		for n := 1; n <= 300; n++ {
			if want, got := cont.NextBackOff(), s.Interval(n); got != want {
				t.Fatalf("%+v: Interval(%d) = %v, continuous backoff gives %v", s, n, got, want)
			}
		}
	}
	if got := (Schedule{}).Interval(0); got != DefaultMinBackoff {
		t.Errorf("Interval(0) = %v, want MinBackoff", got)
	}
}

func TestNextJitterBounds(t *testing.T) {
	for _, j := range []float64{0, 0.1, 0.5, 1} { // 0 means the default 0.1
		s := Schedule{Jitter: j}
		frac := s.effective().jitter
		var sum float64
		seen := map[time.Duration]bool{}
		const runs = 2000
		for i := range runs {
			n := 1 + i%12
			st := State{Attempts: n, Arrived: t0, LastAttempt: t0.Add(time.Duration(i) * time.Second), Seed: uint64(i) * 7919}
			at, ok := s.Next(st)
			if !ok {
				t.Fatalf("Next(%+v) expired", st)
			}
			iv := s.Interval(n)
			d := at.Sub(st.LastAttempt)
			if d < iv || float64(d) >= float64(iv)*(1+frac) {
				t.Fatalf("jitter %v: delay %v for interval %v is outside [1, %v)×", j, d, iv, 1+frac)
			}
			sum += float64(d-iv) / float64(iv)
			seen[d] = true
		}
		// The jitter really spreads: many distinct delays, mean near frac/2.
		if mean := sum / runs; math.Abs(mean-frac/2) > frac/10 || len(seen) < runs/2 {
			t.Errorf("jitter %v: mean extra fraction %.4f (want ≈ %.3f), %d distinct delays", j, mean, frac/2, len(seen))
		}
	}
	st := State{Attempts: 3, Arrived: t0, LastAttempt: t0, Seed: 42}
	if at, _ := (Schedule{Jitter: -1}).Next(st); at != t0.Add(20*time.Minute) {
		t.Errorf("negative Jitter: next at +%v, want +20m exactly", at.Sub(t0))
	}
	a, _ := Schedule{}.Next(st)
	b, _ := Schedule{}.Next(st)
	st.Seed++
	c, _ := Schedule{}.Next(st)
	if a != b || a == c {
		t.Errorf("jitter is not a function of (Seed, Attempts): %v %v %v", a, b, c)
	}
}

// TestRestartReplay runs the schedule under a fake clock twice: once keeping
// the State in memory, once persisting it (JSON) and rebuilding everything
// before each step, as a restarted process does. The attempt times must be
// identical.
func TestRestartReplay(t *testing.T) {
	sched := Schedule{MinBackoff: 2 * time.Minute, MaxBackoff: 3 * time.Hour, Multiplier: 1.7, Jitter: 0.3, MaxLifetime: 4 * 24 * time.Hour}
	run := func(restart bool) []time.Time {
		clk := clockwork.NewFakeClockAt(t0)
		st := State{Arrived: clk.Now(), Seed: 0xfeed}
		var times []time.Time
		for {
			st.Attempts++
			st.LastAttempt = clk.Now() // the attempt starts, and fails
			times = append(times, st.LastAttempt)
			if restart {
				buf, err := json.Marshal(st)
				if err != nil {
					t.Fatal(err)
				}
				st = State{}
				if err := json.Unmarshal(buf, &st); err != nil {
					t.Fatal(err)
				}
			}
			at, ok := sched.Next(st)
			if !ok {
				return times
			}
			if !at.After(clk.Now()) {
				t.Fatalf("attempt %d: next at %v is not after now %v", st.Attempts, at, clk.Now())
			}
			clk.Advance(at.Sub(clk.Now()))
		}
	}
	cont, restarted := run(false), run(true)
	if len(cont) != len(restarted) {
		t.Fatalf("continuous run made %d attempts, restarted run %d", len(cont), len(restarted))
	}
	for i := range cont {
		if !cont[i].Equal(restarted[i]) {
			t.Fatalf("attempt %d: continuous %v, restarted %v", i+1, cont[i], restarted[i])
		}
	}
	if last := cont[len(cont)-1]; !last.Equal(sched.Expiry(t0)) {
		t.Errorf("final attempt at %v, want the expiry %v", last, sched.Expiry(t0))
	}
}

func TestNextExpiry(t *testing.T) {
	s := Schedule{} // 5m … 1h, 5 days
	exp := s.Expiry(t0)
	if exp != t0.Add(120*time.Hour) {
		t.Fatalf("Expiry = %v", exp)
	}
	tests := []struct {
		name     string
		last     time.Time
		attempts int
		want     time.Time // zero: expired
	}{
		{"due long before expiry", t0.Add(time.Hour), 1, t0.Add(65 * time.Minute)},
		{"attempts 0 counts as 1", t0, 0, t0.Add(5 * time.Minute)},
		{"next retry would be late: final attempt at expiry", exp.Add(-30 * time.Minute), 50, exp},
		{"exactly MinBackoff before expiry", exp.Add(-5 * time.Minute), 50, exp},
		{"within MinBackoff of expiry: that was the last", exp.Add(-4 * time.Minute), 50, time.Time{}},
		{"attempt at the expiry", exp, 125, time.Time{}},
		{"attempt after the expiry", exp.Add(time.Hour), 125, time.Time{}},
		{"clock stepped back before arrival", t0.Add(-time.Hour), 1, t0.Add(-55 * time.Minute)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			at, ok := Schedule{Jitter: -1}.Next(State{Attempts: tt.attempts, Arrived: t0, LastAttempt: tt.last})
			if tt.want.IsZero() {
				if ok || !at.Equal(exp) {
					t.Errorf("Next = %v, %v; want expired (the expiry, false)", at, ok)
				}
				return
			}
			if !ok || !at.Equal(tt.want) {
				t.Errorf("Next = %v, %v; want %v, true", at, ok, tt.want)
			}
		})
	}
}

func TestDelayWarningAt(t *testing.T) {
	tests := []struct {
		s    Schedule
		want time.Duration
		ok   bool
	}{
		{Schedule{}, 4 * time.Hour, true},
		{Schedule{DelayWarning: 24 * time.Hour}, 24 * time.Hour, true},
		{Schedule{DelayWarning: -1}, 0, false},
		{Schedule{DelayWarning: 6 * time.Hour, MaxLifetime: 6 * time.Hour}, 0, false},
	}
	for _, tt := range tests {
		at, ok := tt.s.DelayWarningAt(t0)
		if ok != tt.ok || (ok && at.Sub(t0) != tt.want) {
			t.Errorf("%+v: DelayWarningAt = +%v, %v; want +%v, %v", tt.s, at.Sub(t0), ok, tt.want, tt.ok)
		}
	}
}

func TestValidate(t *testing.T) {
	if err := (Schedule{}).Validate(); err != nil {
		t.Fatalf("zero Schedule: %v", err)
	}
	if err := (Schedule{Jitter: -1, DelayWarning: -1, Multiplier: 1}).Validate(); err != nil {
		t.Fatalf("disabled jitter and warning, constant interval: %v", err)
	}
	tests := []struct {
		s      Schedule
		fields []string
	}{
		{Schedule{MinBackoff: -time.Second}, []string{"MinBackoff"}},
		{Schedule{MaxBackoff: -1}, []string{"MaxBackoff"}},
		{Schedule{Multiplier: 0.5}, []string{"Multiplier"}},
		{Schedule{Multiplier: math.NaN()}, []string{"Multiplier"}},
		{Schedule{Multiplier: math.Inf(1)}, []string{"Multiplier"}},
		{Schedule{Jitter: 1.5}, []string{"Jitter"}},
		{Schedule{Jitter: math.NaN()}, []string{"Jitter"}},
		{Schedule{MaxLifetime: -time.Hour, MinBackoff: -1, Multiplier: -2}, []string{"MinBackoff", "Multiplier", "MaxLifetime"}},
	}
	for _, tt := range tests {
		err := tt.s.Validate()
		if err == nil {
			t.Errorf("%+v: Validate = nil", tt.s)
			continue
		}
		var first *InvalidScheduleError
		if !errors.As(err, &first) || first.Field != tt.fields[0] {
			t.Errorf("%+v: errors.As gives %+v, want field %s", tt.s, first, tt.fields[0])
		}
		for _, f := range tt.fields {
			if !strings.Contains(err.Error(), "Schedule."+f+" = ") {
				t.Errorf("%+v: %q does not name %s", tt.s, err, f)
			}
		}
		// Each case sets only invalid fields, which fall back to their
		// defaults: Next behaves exactly like the zero Schedule.
		st := State{Attempts: 2, Arrived: t0, LastAttempt: t0, Seed: 1}
		at, ok := tt.s.Next(st)
		want, _ := Schedule{}.Next(st)
		if !ok || !at.Equal(want) {
			t.Errorf("%+v: Next = %v, %v; want %v like the zero Schedule", tt.s, at, ok, want)
		}
	}
}

func TestWarnings(t *testing.T) {
	if w := (Schedule{}).Warnings(); len(w) != 0 {
		t.Fatalf("zero Schedule warns: %q", w)
	}
	tests := []struct {
		s    Schedule
		want string
	}{
		{Schedule{MaxLifetime: 3 * 24 * time.Hour}, "RFC 5321 §4.5.4.1 asks for"},
		{Schedule{MinBackoff: time.Hour, MaxBackoff: 30 * time.Minute}, "MaxBackoff 30m0s is below MinBackoff 1h0m0s"},
		{Schedule{MinBackoff: 10 * time.Second}, "sooner than once a minute"},
		{Schedule{MaxBackoff: 48 * time.Hour}, "less than once a day"},
		{Schedule{MinBackoff: time.Hour, MaxLifetime: time.Hour}, "a single attempt"},
		{Schedule{DelayWarning: 6 * 24 * time.Hour}, "no delay DSN is ever sent"},
		{Schedule{Multiplier: 1.00001, MaxBackoff: 100 * time.Hour}, "stops growing"},
		{Schedule{MinBackoff: time.Minute, Multiplier: 1, MaxLifetime: 30 * 24 * time.Hour}, "Timeline is truncated"},
	}
	for _, tt := range tests {
		w := tt.s.Warnings()
		if !strings.Contains(strings.Join(w, "\n"), tt.want) {
			t.Errorf("%+v: Warnings = %q, want one containing %q", tt.s, w, tt.want)
		}
	}
}

func TestIntervalPlateau(t *testing.T) {
	s := Schedule{Multiplier: 1.00001, MaxBackoff: 100 * time.Hour}
	prev := time.Duration(0)
	for _, n := range []int{1, 2, 100, maxReplay - 1, maxReplay, maxReplay + 1, 1 << 30} {
		iv := s.Interval(n)
		if iv < prev || iv < DefaultMinBackoff || iv > 100*time.Hour {
			t.Fatalf("Interval(%d) = %v after %v", n, iv, prev)
		}
		prev = iv
	}
	if s.Interval(1<<30) != s.Interval(maxReplay) {
		t.Errorf("interval keeps changing after the replay cap")
	}
}

func TestClock(t *testing.T) {
	var _ Clock = clockwork.NewFakeClock()
	var c Clock = System{}
	before := time.Now()
	if now := c.Now(); now.Before(before) {
		t.Errorf("System.Now() = %v, before %v", now, before)
	}
	if got := <-c.After(0); got.Before(before) {
		t.Errorf("System.After(0) delivered %v", got)
	}
}

func BenchmarkScheduleNext(b *testing.B) {
	for _, n := range []int{1, 5, 100, 10000} {
		b.Run("attempts="+strconv.Itoa(n), func(b *testing.B) {
			s := Schedule{}
			st := State{Attempts: n, Arrived: t0, LastAttempt: t0.Add(time.Hour), Seed: 99}
			for b.Loop() {
				st.Seed++
				if _, ok := s.Next(st); !ok {
					b.Fatal("expired")
				}
			}
		})
	}
}
