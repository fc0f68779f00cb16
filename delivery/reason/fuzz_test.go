package reason

import (
	"slices"
	"testing"
	"time"

	"github.com/outboundmail/outbound/delivery"
)

// FuzzClassify feeds arbitrary replies to Classify. It must not panic; the
// wait is within [0, MaxWait]; a 5xx is never retryable and every 4xx is;
// the class is None exactly for codes outside 4xx/5xx and otherwise one of
// Classes; RetryAt never moves a retry before lastAttempt+MinRetry nor after
// the later of normal and that bound.
func FuzzClassify(f *testing.F) {
	f.Add(451, 4, 7, 1, "Greylisting in action, please come back in 00:30:00")
	f.Add(550, 5, 1, 1, "User unknown")
	f.Add(421, 0, 0, 0, "Try again in 999999999 days, 1h30m and 2 secs")
	f.Add(554, 5, 7, 1, "#5.7.1 spam\n554-5.7.1 more")
	classes := Classes()
	last := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, code, e1, e2, e3 int, text string) {
		r := Classify(delivery.Reply{Code: code, Enhanced: delivery.EnhancedCode{e1, e2, e3}, Text: text})
		if r.Wait < 0 || r.Wait > MaxWait {
			t.Fatalf("Wait = %v", r.Wait)
		}
		is4, is5 := code >= 400 && code <= 499, code >= 500 && code <= 599
		if r.Retryable() != is4 || r.Permanent != is5 {
			t.Fatalf("code %d: Retryable=%v Permanent=%v", code, r.Retryable(), r.Permanent)
		}
		if (r.Class == None) == (is4 || is5) || (r.Class != None && !slices.Contains(classes, r.Class)) {
			t.Fatalf("code %d: Class %q", code, r.Class)
		}
		for _, normal := range []time.Time{last.Add(time.Hour), last.Add(10 * time.Second), last.Add(-time.Hour)} {
			at := r.RetryAt(last, normal)
			if at.Equal(normal) {
				continue
			}
			if at.Before(last.Add(MinRetry)) || at.After(normal) && !at.Equal(last.Add(MinRetry)) {
				t.Fatalf("RetryAt(+%v) = +%v for %v", normal.Sub(last), at.Sub(last), r)
			}
		}
		if again := Classify(delivery.Reply{Code: code, Enhanced: delivery.EnhancedCode{e1, e2, e3}, Text: text}); again != r {
			t.Fatalf("not deterministic: %v then %v", r, again)
		}
	})
}
