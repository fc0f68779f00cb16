package backoff

import (
	"testing"
	"time"
)

// FuzzScheduleNext checks the invariants of Next for any configuration and
// state: it never panics; when it schedules an attempt, that attempt is no
// sooner than MinBackoff after the last one and no later than the expiry;
// it expires exactly when the last attempt was at, after or within
// MinBackoff of the expiry; the interval never shrinks as attempts grow.
func FuzzScheduleNext(f *testing.F) {
	f.Add(int64(0), int64(0), 0.0, 0.0, int64(0), 1, int64(0), uint64(0))
	f.Add(int64(time.Minute), int64(4*time.Hour), 1.5, 0.2, int64(96*time.Hour), 7, int64(3*time.Hour), uint64(42))
	f.Add(int64(time.Hour), int64(time.Minute), 1.0, -1.0, int64(2*time.Hour), 2, int64(90*time.Minute), uint64(7))
	f.Fuzz(func(t *testing.T, minB, maxB int64, mult, jitter float64, life int64, attempts int, sinceArrival int64, seed uint64) {
		s := Schedule{MinBackoff: time.Duration(minB), MaxBackoff: time.Duration(maxB), Multiplier: mult,
			Jitter: jitter, MaxLifetime: time.Duration(life)}
		st := State{Attempts: attempts, Arrived: t0, LastAttempt: t0.Add(time.Duration(sinceArrival)), Seed: seed}
		c := s.effective()
		_ = s.Validate()
		_ = s.Interval(attempts)
		at, ok := s.Next(st)
		exp := s.Expiry(st.Arrived)
		if !ok {
			if !at.Equal(exp) {
				t.Fatalf("expired Next returned %v, want the expiry %v", at, exp)
			}
			if st.LastAttempt.Before(exp) && exp.Sub(st.LastAttempt) >= c.min {
				t.Fatalf("expired although the last attempt %v is %v before the expiry %v (MinBackoff %v)",
					st.LastAttempt, exp.Sub(st.LastAttempt), exp, c.min)
			}
			return
		}
		if at.After(exp) {
			t.Fatalf("next attempt %v after the expiry %v", at, exp)
		}
		if at.Sub(st.LastAttempt) < c.min {
			t.Fatalf("next attempt %v only %v after the last, MinBackoff %v", at, at.Sub(st.LastAttempt), c.min)
		}
		if !at.Equal(exp) {
			iv := s.Interval(attempts)
			if d := at.Sub(st.LastAttempt); d < iv || float64(d) > float64(iv)*(1+c.jitter) {
				t.Fatalf("delay %v outside [%v, %v×]", d, iv, 1+c.jitter)
			}
		}
		n := max(attempts, 1)
		if n >= 1<<40 {
			return // n+1 must not overflow
		}
		if s.Interval(n+1) < s.Interval(n) {
			t.Fatalf("Interval(%d) = %v < Interval(%d) = %v", n+1, s.Interval(n+1), n, s.Interval(n))
		}
		st.Attempts = n + 1
		if later, ok := s.Next(st); !ok || later.Before(st.LastAttempt.Add(s.Interval(n))) && !later.Equal(exp) {
			t.Fatalf("Next with one more attempt = %v, %v; before the un-jittered previous %v", later, ok, st.LastAttempt.Add(s.Interval(n)))
		}
	})
}
