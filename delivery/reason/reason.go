package reason

import (
	"strconv"
	"strings"
	"time"

	"github.com/outboundmail/outbound/delivery"
)

// Class names why a server refused: the classes of
// testdata/smtp-replies.tsv. Classes ending in _temp or _perm exist in both
// flavours because the reply code, not the text, decides permanence.
type Class string

// The classes. None is the Class of replies that are not failures (2xx, 3xx)
// or not replies at all (Code 0).
const (
	None              Class = ""
	Greylist          Class = "greylist"            // greylisting: try again from the same place later (RFC 6647)
	RateLimit         Class = "rate_limit"          // too many connections, messages or recipients per unit of time
	ReputationBlock   Class = "reputation_block"    // the sending IP or domain is on a block list or has a poor reputation
	MailboxFull       Class = "mailbox_full"        // over quota (RFC 3463 X.2.2)
	UserUnknown       Class = "user_unknown"        // no such mailbox, or it is disabled (X.1.1, X.1.2, X.1.3, X.1.6, X.1.10)
	DNSTemp           Class = "dns_temp"            // a temporary DNS failure on the server's side
	MessageTooBig     Class = "message_too_big"     // X.2.3, X.3.4
	TooManyRecipients Class = "too_many_recipients" // per transaction (X.5.3); not a rate
	ServerBusy        Class = "server_busy"         // load, resources, congestion (X.4.5)
	Spam              Class = "spam_perm"           // the content was judged spam or malware (5xx only)
	PolicyPerm        Class = "policy_perm"         // a policy refusal: authentication, relaying, DMARC, PTR (5xx)
	PolicyTemp        Class = "policy_temp"         // the same, or suspicious content, as a 4xx
	TLSRequired       Class = "tls_required"        // the server wants (better) TLS
	OtherTemp         Class = "other_temp"          // any other 4xx
	OtherPerm         Class = "other_perm"          // any other 5xx
)

// Classes lists every Class except None, in the order of the constants.
func Classes() []Class {
	return []Class{Greylist, RateLimit, ReputationBlock, MailboxFull, UserUnknown, DNSTemp,
		MessageTooBig, TooManyRecipients, ServerBusy, Spam, PolicyPerm, PolicyTemp,
		TLSRequired, OtherTemp, OtherPerm}
}

// Limits of what Classify reads and returns.
const (
	// MaxWait caps a server-stated wait: "try again in 3 days" is taken as
	// 24 hours. The regular schedule still applies after it.
	MaxWait = 24 * time.Hour
	// MaxText is how much of a reply's text Classify reads; real replies
	// are far shorter (RFC 5321 §4.5.3.1.5 limits a reply line to 512
	// octets).
	MaxText = 8 << 10
	// RetryMargin is added to a stated wait, so that the retry lands just
	// after the server's window rather than on its edge.
	RetryMargin = 30 * time.Second
	// MinRetry is the earliest retry RetryAt ever returns after an attempt,
	// whatever the server said: a stated "try again in 5 seconds" is no
	// reason to hammer it.
	MinRetry = time.Minute
)

// Reason is what one SMTP reply says about why an attempt failed.
type Reason struct {
	Class Class
	// Code is the reply's basic code (451, 550, …).
	Code int
	// Wait is the delay the server asked for ("try again in 5 minutes",
	// "come back in 00:30:00"), at most MaxWait; 0 when none was stated.
	Wait time.Duration
	// Permanent is set for every 5xx reply (RFC 5321 §4.2.1): retrying
	// will not help, whatever the text or the Class say.
	Permanent bool
}

// Retryable reports whether the reply allows a later attempt: a 4xx reply.
// It is false for every 5xx, 2xx, 3xx and for Code 0 (no reply), whatever
// the Class or the text, so a classification can never make a permanent
// failure retryable by accident.
//
// Classify looks at the reply only. When the stage changes the meaning of a
// 5xx (552 to RCPT means "too many recipients", RFC 5321 §4.5.3.1.10; a 5xx
// greeting concerns one host), that is the delivery engine's business; it
// decides from the stage, this package does not.
func (r Reason) Retryable() bool {
	return !r.Permanent && r.Code >= 400 && r.Code <= 499
}

// RetryAt returns when a retryable failure should be tried again, given the
// time the failed attempt started and the time the regular schedule would
// choose (normal, for example backoff.Schedule.Next).
//
// When the server stated a wait, the retry comes just after its window:
// lastAttempt + Wait + RetryMargin, but not later than normal and never
// sooner than lastAttempt + MinRetry (that bound wins if normal is earlier
// still). RFC 5321 §4.5.4.1 allows "more sophisticated and variable
// strategies" when the client can determine the reason for the failure;
// greylisting is the case that matters. Without a stated wait, or for a
// reply that is not retryable, RetryAt returns normal unchanged.
func (r Reason) RetryAt(lastAttempt, normal time.Time) time.Time {
	if !r.Retryable() || r.Wait <= 0 {
		return normal
	}
	at := lastAttempt.Add(r.Wait + RetryMargin)
	if at.After(normal) {
		at = normal
	}
	if lo := lastAttempt.Add(MinRetry); at.Before(lo) {
		at = lo
	}
	return at
}

// String formats the reason as "greylist 451 wait=5m0s" or "user_unknown
// 550 permanent".
func (r Reason) String() string {
	var b strings.Builder
	b.WriteString(string(r.Class))
	if r.Class == None {
		b.WriteString("none")
	}
	b.WriteString(" " + strconv.Itoa(r.Code))
	if r.Wait > 0 {
		b.WriteString(" wait=" + r.Wait.String())
	}
	if r.Permanent {
		b.WriteString(" permanent")
	}
	return b.String()
}

// Classify says why a server refused, from the reply alone: its code, its
// enhanced code (RFC 3463) and its text. It never fails: a reply no rule
// recognises is OtherTemp or OtherPerm (PolicyPerm for a 5xx with an X.7.X
// enhanced code, "security or policy status"), and a reply that is not a 4xx
// or 5xx has Class None.
//
// The rules, tried in order, are listed in the package documentation.
// Permanent follows the basic code only: a 4xx with a 5.X.X enhanced code is
// still temporary (RFC 5321 §4.2.1 defines the semantics by the basic code;
// RFC 3463 §2 requires the two to agree).
func Classify(r delivery.Reply) Reason {
	res := Reason{Code: r.Code, Permanent: r.Code >= 500 && r.Code <= 599}
	if r.Code < 400 || r.Code > 599 {
		return res
	}
	lower := normalize(r.Text)
	enh := r.Enhanced
	if enh.IsZero() {
		enh = leadingEnhanced(lower, r.Code/100)
	}
	res.Class, _ = classify(reply{code: r.Code, enh: enh, text: lower})
	res.Wait = statedWait(lower)
	return res
}

// normalize returns the first MaxText bytes of text, lower-cased, with runs
// of white space (line breaks included) folded to one space.
func normalize(text string) string {
	if len(text) > MaxText {
		text = text[:MaxText]
	}
	return strings.ToLower(strings.Join(strings.Fields(text), " "))
}

// leadingEnhanced parses an enhanced code at the start of text ("5.7.1 …",
// "#4.5.3 …") for replies whose Enhanced field is empty. It must have the
// reply's class.
func leadingEnhanced(text string, class int) delivery.EnhancedCode {
	m := leadingEnhancedRE.FindStringSubmatch(text)
	if m == nil {
		return delivery.EnhancedCode{}
	}
	var e delivery.EnhancedCode
	for i := range e {
		e[i], _ = strconv.Atoi(m[i+1]) // at most 3 digits: cannot fail
	}
	if e[0] != class {
		return delivery.EnhancedCode{}
	}
	return e
}
