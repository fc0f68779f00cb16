package reason

import (
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Stated waits. A wait is a duration ("300 seconds", "5 min", "1 hour 30
// minutes", "2h") or a clock span ("00:30:00", milter-greylist's format),
// introduced by a phrase that asks for one:
//
//	try again in …, retry in/after …, come back in …, resend after …
//	greylisted for …, deferred for …, blocked for …
//	wait …, wait for …
//
// A number without such a phrase is never a wait ("try again later (10)",
// "exceeded 50 hops", "10485760").
const (
	durUnit  = `(?:seconds?|secs?|s|minutes?|mins?|m|hours?|hrs?|h|days?|d)`
	durPart  = `\d{1,9}\s*` + durUnit
	duration = durPart + `(?:\s*(?:,|and)?\s*` + durPart + `)*\b` // \b only at the end: "1h30m"
	clock    = `\d{1,3}:[0-5]\d:[0-5]\d`
	span     = `(` + duration + `|` + clock + `)`
	qualify  = `(?:(?:at least|about|approx(?:imately)?|another|the next|roughly)\s+)?`
)

var (
	waitRE = regexp.MustCompile(
		`\b(?:try|retry|retrying|resend|come back|again|greylisted|graylisted|deferred|delayed|blocked|suspended|throttled|postponed)\b` +
			`[^0-9.;:!?]{0,24}?\b(?:in|after|for|within)\s+` + qualify + span +
			`|\bwait(?:\s+for)?\s+` + qualify + span)
	durPartRE = regexp.MustCompile(`(\d{1,9})\s*(` + durUnit + `)`)
	clockRE   = regexp.MustCompile(`^(\d{1,3}):(\d\d):(\d\d)$`)
)

// statedWait returns the longest wait the lower-cased text asks for, capped
// at MaxWait, or 0.
func statedWait(text string) time.Duration {
	if !strings.ContainsAny(text, "0123456789") {
		return 0 // every span has a digit; skip the regexp
	}
	var longest time.Duration
	for _, m := range waitRE.FindAllStringSubmatch(text, -1) {
		s := m[1]
		if s == "" {
			s = m[2]
		}
		longest = max(longest, parseSpan(s))
	}
	return longest
}

// parseSpan turns "5 minutes", "1h 30m" or "00:30:00" into a duration,
// capped at MaxWait. The inputs have at most 9 digits per number, so the
// arithmetic in seconds cannot overflow before the cap is applied.
func parseSpan(s string) time.Duration {
	var secs int64
	if m := clockRE.FindStringSubmatch(s); m != nil {
		h, _ := strconv.ParseInt(m[1], 10, 64)
		mi, _ := strconv.ParseInt(m[2], 10, 64)
		se, _ := strconv.ParseInt(m[3], 10, 64)
		secs = h*3600 + mi*60 + se
	} else {
		for _, p := range durPartRE.FindAllStringSubmatch(s, -1) {
			n, _ := strconv.ParseInt(p[1], 10, 64)
			secs += n * unitSeconds(p[2])
			if secs > int64(MaxWait/time.Second) {
				return MaxWait
			}
		}
	}
	return min(time.Duration(secs)*time.Second, MaxWait)
}

func unitSeconds(unit string) int64 {
	switch unit[0] {
	case 'm':
		return 60
	case 'h':
		return 3600
	case 'd':
		return 86400
	}
	return 1
}
