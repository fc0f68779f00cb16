package reason

import (
	"strings"
	"testing"
	"time"

	"github.com/outboundmail/outbound/delivery"
)

func mkReply(code int, enh delivery.EnhancedCode, text string) delivery.Reply {
	return delivery.Reply{Code: code, Enhanced: enh, Text: text}
}

// TestStatedWait covers the wait formats beyond those in the corpus, and
// numbers that must not be read as waits.
func TestStatedWait(t *testing.T) {
	tests := []struct {
		text string
		want time.Duration
	}{
		{"Greylisted, please retry in 5 minutes", 5 * time.Minute},
		{"Greylisted for 300 seconds (see http://postgrey.schweikert.ch/help/example.org.html)", 300 * time.Second},
		{"Try again after 1 hour 30 minutes", 90 * time.Minute},
		{"try again in 1h30m", 90 * time.Minute},
		{"Please wait 10 min before retrying", 10 * time.Minute},
		{"please wait for at least 45 secs", 45 * time.Second},
		{"Greylisting in action, please retry after 01:00:00", time.Hour},
		{"Message deferred for 2h", 2 * time.Hour},
		{"Sender blocked for 15 minutes due to\nexcessive volume", 15 * time.Minute},
		{"GREYLISTED, TRY AGAIN IN 90 SECONDS", 90 * time.Second},
		{"Greylisted for 60 seconds, try again in 5 minutes", 5 * time.Minute}, // the longest
		{"come back in 3 days", MaxWait},
		{"try again in 999999999 days", MaxWait},
		{"retry in 999:59:59", MaxWait},
		{"try again in 2 minutes and 30 seconds", 150 * time.Second},
		{"retry in 0 seconds", 0},
		// Not waits.
		{"Temporary System Problem.  Try again later (10).", 0},
		{"Message exceeded 50 hops, this may indicate an email loop.", 0},
		{"Message size exceeds fixed maximum message size (10485760)", 0},
		{"Greylisted, please try again in a few moments.", 0},
		{"Too many recipients received this hour", 0},
		{"please try again at 14:00", 0},
		{"Mailbox full since 5 days", 0},
		{"try again in 5 messages", 0},
		{"451 4.7.1 Greylisting in action, please come back in 00:05", 0},
	}
	for _, tt := range tests {
		r := Classify(mkReply(451, delivery.EnhancedCode{}, tt.text))
		if r.Wait != tt.want {
			t.Errorf("%q: Wait = %v, want %v", tt.text, r.Wait, tt.want)
		}
	}
}

// TestClassifyOtherReplies checks replies that are not in the corpus
// (wordings from provider documentation and common MTAs), so that the rules
// are not fitted to the corpus alone.
func TestClassifyOtherReplies(t *testing.T) {
	tests := []struct {
		code int
		enh  delivery.EnhancedCode
		text string
		want Class
	}{
		{550, delivery.EnhancedCode{5, 1, 1}, "The email account that you tried to reach does not exist. Please try\ndouble-checking the recipient's email address", UserUnknown},
		{550, delivery.EnhancedCode{5, 1, 1}, "<bob@example.org>: Recipient address rejected: User unknown in local recipient table", UserUnknown},
		{452, delivery.EnhancedCode{4, 2, 2}, "The email account that you tried to reach is over quota.", MailboxFull},
		{421, delivery.EnhancedCode{4, 7, 0}, "Too many concurrent SMTP connections from this IP address; please try again later.", RateLimit},
		{550, delivery.EnhancedCode{5, 7, 1}, "Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org", ReputationBlock},
		{550, delivery.EnhancedCode{5, 7, 606}, "Access denied, banned sending IP [192.0.2.1].", ReputationBlock},
		{554, delivery.EnhancedCode{5, 7, 1}, "<bob@example.org>: Relay access denied", PolicyPerm},
		{550, delivery.EnhancedCode{5, 7, 26}, "Unauthenticated email from example.com is not accepted due to domain's DMARC policy.", PolicyPerm},
		{550, delivery.EnhancedCode{5, 7, 350}, "Remote server returned message detected as spam", Spam},
		{451, delivery.EnhancedCode{4, 7, 1}, "Greylisting in effect, please come back later", Greylist},
		{450, delivery.EnhancedCode{4, 7, 1}, "Client host rejected: cannot find your reverse hostname, [192.0.2.1]", PolicyTemp},
		{530, delivery.EnhancedCode{5, 7, 10}, "Encryption needed", TLSRequired},
		{452, delivery.EnhancedCode{4, 3, 1}, "Insufficient system storage", ServerBusy},
		{421, delivery.EnhancedCode{4, 4, 2}, "Connection dropped due to timeout", OtherTemp},
		{554, delivery.EnhancedCode{}, "5.7.1 Message rejected as spam by Content Filtering.", Spam}, // enhanced code only in the text
		{550, delivery.EnhancedCode{}, "#5.1.1 bad address bob@example.org", UserUnknown},
		{451, delivery.EnhancedCode{4, 7, 1}, "Try again later", Greylist},
		{500, delivery.EnhancedCode{}, "", OtherPerm},
		{499, delivery.EnhancedCode{}, "", OtherTemp},
		{250, delivery.EnhancedCode{2, 0, 0}, "OK: greylisted earlier", None},
		{0, delivery.EnhancedCode{}, "connection reset by peer", None},
	}
	for _, tt := range tests {
		if got := Classify(mkReply(tt.code, tt.enh, tt.text)).Class; got != tt.want {
			t.Errorf("%d %v %q: %s, want %s", tt.code, tt.enh, tt.text, got, tt.want)
		}
	}
}

func TestRetryable(t *testing.T) {
	for code := 0; code < 700; code++ {
		r := Classify(mkReply(code, delivery.EnhancedCode{4, 7, 1}, "Greylisted, try again in 5 minutes"))
		want := code >= 400 && code <= 499
		if r.Retryable() != want || r.Permanent != (code >= 500 && code <= 599) {
			t.Fatalf("code %d: Retryable=%v Permanent=%v", code, r.Retryable(), r.Permanent)
		}
		if (r.Class == None) != (code < 400 || code > 599) {
			t.Fatalf("code %d: Class %q", code, r.Class)
		}
	}
	// A 4xx reply with a 5.X.X enhanced code is still temporary: the basic
	// code decides (RFC 5321 §4.2.1).
	if r := Classify(mkReply(450, delivery.EnhancedCode{5, 1, 1}, "User unknown")); !r.Retryable() || r.Class != UserUnknown {
		t.Errorf("450 5.1.1: %v", r)
	}
}

func TestRetryAt(t *testing.T) {
	last := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	normal := last.Add(time.Hour)
	tests := []struct {
		name   string
		r      Reason
		normal time.Time
		want   time.Time
	}{
		{"no stated wait", Reason{Class: Greylist, Code: 451}, normal, normal},
		{"stated wait, just after the window", Reason{Class: Greylist, Code: 451, Wait: 5 * time.Minute}, normal, last.Add(5*time.Minute + RetryMargin)},
		{"tiny wait: one minute at least", Reason{Class: Greylist, Code: 451, Wait: 5 * time.Second}, normal, last.Add(MinRetry)},
		{"wait beyond the schedule: the schedule", Reason{Class: RateLimit, Code: 421, Wait: 2 * time.Hour}, normal, normal},
		{"schedule sooner than a minute: a minute", Reason{Class: Greylist, Code: 451, Wait: 5 * time.Minute}, last.Add(10 * time.Second), last.Add(MinRetry)},
		{"permanent: never early", Reason{Class: RateLimit, Code: 550, Permanent: true, Wait: 5 * time.Minute}, normal, normal},
		{"no reply: never early", Reason{Wait: 5 * time.Minute}, normal, normal},
	}
	for _, tt := range tests {
		if got := tt.r.RetryAt(last, tt.normal); !got.Equal(tt.want) {
			t.Errorf("%s: RetryAt = +%v, want +%v", tt.name, got.Sub(last), tt.want.Sub(last))
		}
	}
}

func TestReasonString(t *testing.T) {
	tests := map[string]Reason{
		"greylist 451 wait=5m0s":     Classify(mkReply(451, delivery.EnhancedCode{4, 7, 1}, "Greylisted for 5 minutes")),
		"user_unknown 550 permanent": Classify(mkReply(550, delivery.EnhancedCode{5, 1, 1}, "no such user")),
		"none 250":                   Classify(mkReply(250, delivery.EnhancedCode{}, "ok")),
	}
	for want, r := range tests {
		if got := r.String(); got != want {
			t.Errorf("String() = %q, want %q", got, want)
		}
	}
}

func TestClassifyLongText(t *testing.T) {
	long := strings.Repeat("x", 1<<20) + " greylisted for 5 minutes"
	if r := Classify(mkReply(451, delivery.EnhancedCode{}, long)); r.Class != OtherTemp || r.Wait != 0 {
		t.Errorf("text past MaxText was read: %v", r)
	}
	if r := Classify(mkReply(451, delivery.EnhancedCode{}, "greylisted for 5 minutes"+strings.Repeat(" x", 1<<19))); r.Class != Greylist || r.Wait != 5*time.Minute {
		t.Errorf("long reply: %v", r)
	}
}

func BenchmarkClassify(b *testing.B) {
	corpus := loadCorpus(b)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		Classify(corpus[i%len(corpus)].reply)
	}
}
