package reason

import (
	"regexp"
	"regexp/syntax"
	"strings"

	"github.com/outboundmail/outbound/delivery"
)

// reply is what the rules look at: the text is lower-cased, with runs of
// white space (line breaks included) folded to one space.
type reply struct {
	code int
	enh  delivery.EnhancedCode
	text string
}

func (r reply) temporary() bool { return r.code/100 == 4 }

// subject reports whether the enhanced code is X.subject.detail for any of
// the details given (none given: any detail).
func (r reply) subject(subject int, details ...int) bool {
	if r.enh.IsZero() || r.enh[1] != subject {
		return false
	}
	if len(details) == 0 {
		return true
	}
	for _, d := range details {
		if r.enh[2] == d {
			return true
		}
	}
	return false
}

// rule is one line of the rule table: when match holds, the reply gets temp
// (4xx) or perm (5xx); an empty class means the rule does not apply to that
// kind of reply and the next rule is tried.
type rule struct {
	name       string
	temp, perm Class
	match      func(r reply) bool
}

// cues is a list of patterns of which any may match. Each alternative is
// compiled on its own, because Go's regexp runs one large alternation through
// its slowest engine over every byte. A pattern that is a plain word or
// phrase (optionally between \b) is matched with a substring search; a
// regular expression that contains a mandatory literal is only run on texts
// that contain that literal.
type cues []cue

type cue struct {
	literal     string         // substring that must occur
	lead, trail bool           // literal must start / end at a word boundary
	re          *regexp.Regexp // nil: the literal decides alone
}

// anyOf compiles the alternatives. It is only called to initialise the
// package-level tables below, which are never modified.
func anyOf(alternatives ...string) cues {
	c := make(cues, len(alternatives))
	for i, a := range alternatives {
		c[i] = compileCue(a)
	}
	return c
}

func compileCue(pattern string) cue {
	word, lead := strings.CutPrefix(pattern, `\b`)
	word, trail := strings.CutSuffix(word, `\b`)
	if word != "" && regexp.QuoteMeta(word) == word {
		return cue{literal: word, lead: lead, trail: trail}
	}
	return cue{literal: requiredLiteral(pattern), re: regexp.MustCompile(pattern)}
}

// requiredLiteral returns the longest literal that every match of pattern
// contains, as far as a top-level concatenation shows it, or "".
func requiredLiteral(pattern string) string {
	re, err := syntax.Parse(pattern, syntax.Perl)
	if err != nil {
		return "" // regexp.MustCompile reports it
	}
	re = re.Simplify()
	subs := []*syntax.Regexp{re}
	if re.Op == syntax.OpConcat {
		subs = re.Sub
	}
	best := ""
	for _, s := range subs {
		if s.Op == syntax.OpLiteral && s.Flags&syntax.FoldCase == 0 && len(string(s.Rune)) > len(best) {
			best = string(s.Rune)
		}
	}
	return best
}

func (c cues) match(s string) bool {
	for _, cu := range c {
		if cu.match(s) {
			return true
		}
	}
	return false
}

func (cu cue) match(s string) bool {
	if cu.re != nil {
		return (cu.literal == "" || strings.Contains(s, cu.literal)) && cu.re.MatchString(s)
	}
	for from := 0; ; {
		i := strings.Index(s[from:], cu.literal)
		if i < 0 {
			return false
		}
		i += from
		end := i + len(cu.literal)
		if (!cu.lead || i == 0 || !isWordByte(s[i-1])) && (!cu.trail || end == len(s) || !isWordByte(s[end])) {
			return true
		}
		from = i + 1
	}
}

// isWordByte reports whether c is an ASCII word character, as \b sees it.
func isWordByte(c byte) bool {
	return c == '_' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

// text returns a rule matcher for cues in the text.
func text(c cues) func(reply) bool {
	return func(r reply) bool { return c.match(r.text) }
}

// The cues run on lower-cased text. ip matches an IPv4 address or the
// x.x.x.x placeholders that redacted replies carry.
const ip = `(?:\d{1,3}|x{1,3})(?:\.(?:\d{1,3}|x{1,3})){3}`

// Pattern pieces shared by several cues. Each cue is written so that it
// starts with or contains a literal word, which is what makes it fast.
const (
	tlsDemand = `(?:[^.;]|\.\d){0,60}\b(?:required|mandatory|first|not supported|upgrade)\b` // "TLS 1.0 … not supported"
	tlsMust   = `\b(?:must|requires?|required)\b[^.;]{0,60}`
	unusable  = `[^.]{0,30}\b(?:not found|unavailable|disabled|inactive|invalid|does ?n[o'’]t exist|frozen|could not be found)`
)

var (
	leadingEnhancedRE = regexp.MustCompile(`^#?([245])\.(\d{1,3})\.(\d{1,3})(?:\s|$)`)

	// Greylisting: postgrey "Greylisted", milter-greylist "Greylisting in
	// action", greylistd's Exim ACL "is not yet authorized to deliver",
	// iRedAPD "Intentional policy rejection, please try again later".
	greylistCues = anyOf(`grey ?list`, `gray ?list`, `not yet authori[sz]ed to deliver`,
		`intentional policy rejection, please try again later`)

	// TLS demanded (Gmail 5.7.29, Microsoft 4.7.66, RFC 3207 "530 Must
	// issue a STARTTLS command first"); "TLS not available" is the server's
	// own trouble and is not matched.
	tlsCues = anyOf(
		`\bstarttls\b`+tlsDemand, `\btls\b`+tlsDemand, `\bssl\b`+tlsDemand,
		tlsMust+`\bstarttls\b`, tlsMust+`\btls\b`, tlsMust+`\bssl\b`,
		`(?:was ?n[o'’]t|not) sent over (?:a )?tls`, `encryption (?:required|needed)`)

	// Provider tags with documented meanings: Yahoo TSnn/TSSnn (deferred for
	// reputation or complaints) and BLnn (block lists), postmaster.yahooinc.com
	// /error-codes; Yahoo PHnn (content); Apple iCloud CSnn, support.apple.com
	// HT204137.
	reputationTagCues = anyOf(`\[(?:tss?|bl|cs)\d{2}\]`)
	contentTagCues    = anyOf(`\[ph\d{2}\]`)

	mailboxFullCues = anyOf(`over ?quota`, `mailbox (?:is )?full`, `inbox (?:is )?full`, `user quota`, `mailbox quota`,
		`out of storage space`, `mailbox size limit`)

	tooBigCues = anyOf(`message size`, `size limit`, `size exceeds`, `too large`, `too big\b`, `ridiculously long`,
		`header[^.]{0,20}too long`, `message length`)

	dnsCues = anyOf(`domain not found`, `does not resolve`, `lookup failed`, `temporary dns`,
		`dns (?:temporary |lookup |resolution )?(?:failure|error|timeout)`, `temporary domain failure`, `name resolution`)

	// Sender authentication and identity: SPF, DKIM, DMARC (Gmail
	// 4.7.26-4.7.32, 5.7.26; Microsoft 5.7.509, 5.7.515), reverse DNS.
	authCues = anyOf(`\bspf\b`, `dkim`, `dmarc`, `unauthenticated`, `authenticat(?:e|ion)\b`, `\bptr\b`, `reverse dns`,
		`\brdns\b`, `spoof`, `from:? header`, `5322\.from`, `aligned`)

	reputationCues = anyOf(`reputation`, `block ?list`, `black ?list`, `deny ?list`, `spamhaus`, `dnsbl`, `\brbl\b`,
		`cloudmark`, `sorbs`, `spamcop`, `blocked using`, `temporarily deferred`, `complaints`, `rate of unsolicited`,
		`unsolicited (?:mail|email) originating`, `banned`, `not accepted from this ip`, `traffic not accepted`,
		`block(?:ed)? (?:for|due to) spam`, `spamming`, `sending spam`, `network not allowed`,
		`(?:ip|address|host|client|network)\]?[^.]{0,40}\bblocked\b`, `^blocked\b`, `\] blocked\b`, `\bip-based`, `\bip based`,
		`your access to[^.]{0,60}\b(?:rejected|denied|blocked)`, `too many invalid recipients`,
		`(?:mail|messages?|connections?) from \[?`+ip+`\]?[^.]{0,20}\b(?:not allowed|rejected|refused|blocked)`)

	rateCues = anyOf(`rate ?limit`, `rate-limit`, `throttl`,
		`too many (?:connections|sessions|messages|open connections|concurrent|login attempts|recent messages|mails?\b|emails?\b)`,
		`concurrent (?:connections|sessions)`, `too much (?:mail|email)`, `excessive volume`, `unusual rate`,
		`unexpected volume`, `\bat a rate`, `(?:sending|relay|message|connection|rate) limit`, `limit exceeded`,
		`exceeded (?:the )?(?:message )?(?:rate )?limit`, `frequency limit`,
		`max(?:imum)? (?:number of )?(?:messages?|connections?|recipients?) (?:per|reached)`,
		`per (?:hour|minute|day|connection)\b`, `this (?:hour|day)`, `\bdaily\b`, `slow(?:er\b| down)`, `queue quota`,
		`quota exceeded`, `too many recipients (?:from|this|received|per)`, `sent to too many recipients`)

	tooManyRcptCues = anyOf(`too many recipients`, `recipient limit`, `recipients? (?:count )?exceed`, `per transaction`,
		`multiple destination domains`)

	spamCues = anyOf(`\bspam\b`, `\bspammy\b`, `\bspamy\b`, `unsolicited`, `\bube\b`, `\buce\b`, `virus`, `malware`, `phishing`,
		`content (?:rejected|filter)`, `nature of the content`, `\bjunk\b`)

	senderCues = anyOf(`sender (?:address )?rejected`, `domain of sender`, `sender domain`, `sender address`)

	userUnknownCues = anyOf(`user unknown`, `unknown (?:user|recipient|mailbox)`, `no such (?:user|mailbox|recipient|account)`,
		`invalid (?:recipient|mailbox|address)`, `not a valid (?:recipient|mailbox|address|rfc)`, `recipient not found`,
		`recipientnotfound`,
		`\baddress\b`+unusable, `\bmailbox\b`+unusable, `\baccount\b`+unusable, `\buser\b`+unusable,
		`inactive (?:email )?(?:address|account|mailbox)`, `no longer (?:on|at|with|valid|active)`,
		`does ?n[o'’]t have an? \S+ account`, `mailbox unavailable`, `recipient address rejected: access denied`,
		`destinataire invalide`, `misspelled`)

	policyCues = anyOf(`polic(?:y|ies)`, `relay(?:ing)? (?:access )?(?:denied|not (?:allowed|permitted))`, `open relay`,
		`not permitted`, `client host rejected`, `attachment`, `rejected by (?:the )?(?:destination|recipient)`,
		`access denied`, `restricted`)

	busyCues = anyOf(`\bbusy\b`, `too much load`, `load (?:too high|average)`, `system resources`,
		`resources? (?:temporarily )?unavailable`, `insufficient (?:system )?(?:storage|resources|disk)`, `disk space`,
		`space shortage`, `out of (?:memory|disk)`, `service (?:is )?(?:currently )?(?:not available|unavailable)`,
		`temporary system problem`, `overload`, `congest`)

	tryLaterCues = anyOf(`try (?:again )?later`, `come back later`, `resend (?:it )?later`)
)

// rules is the classification table, tried in order; the first match wins.
// The order resolves overlaps: greylisting before everything ("IP
// Reputation Greylisted"), authentication before reputation and rate ("rate
// limited because it is unauthenticated"), reputation before rate ("rate
// limited due to IP reputation"), rate before too-many-recipients ("too many
// recipients this hour").
var rules = []rule{
	{"greylist", Greylist, Greylist, text(greylistCues)},
	{"tls", TLSRequired, TLSRequired, func(r reply) bool { return r.subject(7, 10, 11) || tlsCues.match(r.text) }},
	{"provider tag: reputation", ReputationBlock, ReputationBlock, text(reputationTagCues)},
	{"provider tag: content", PolicyTemp, Spam, text(contentTagCues)},
	{"mailbox full", MailboxFull, MailboxFull, func(r reply) bool { return r.subject(2, 2) || mailboxFullCues.match(r.text) }},
	{"message too big", MessageTooBig, MessageTooBig, func(r reply) bool {
		return r.subject(2, 3) || r.subject(3, 4) || tooBigCues.match(r.text)
	}},
	{"dns", DNSTemp, "", text(dnsCues)},
	{"authentication", PolicyTemp, PolicyPerm, text(authCues)},
	{"reputation", ReputationBlock, ReputationBlock, text(reputationCues)},
	{"rate", RateLimit, RateLimit, text(rateCues)},
	{"too many recipients", TooManyRecipients, TooManyRecipients, func(r reply) bool {
		return r.subject(5, 3) || tooManyRcptCues.match(r.text)
	}},
	{"spam", PolicyTemp, Spam, text(spamCues)},
	{"sender", PolicyTemp, PolicyPerm, func(r reply) bool { return r.subject(1, 7, 8) || senderCues.match(r.text) }},
	{"user unknown", UserUnknown, UserUnknown, func(r reply) bool {
		return r.subject(1, 1, 2, 3, 6, 10) || userUnknownCues.match(r.text)
	}},
	{"policy", PolicyTemp, PolicyPerm, text(policyCues)},
	// Exchange Online: 451 4.7.500-4.7.699 "Server busy. Please try again
	// later from [IP]. (ASnnn)" is its greylisting / new-IP throttling
	// (Microsoft's Exchange Online NDR reference, as cited by the corpus).
	// Codes of the range with a clearer text ("rate limited due to IP
	// reputation") match earlier rules.
	{"microsoft 4.7.5xx", Greylist, "", func(r reply) bool { return r.enh[1] == 7 && r.enh[2] >= 500 && r.enh[2] <= 699 }},
	{"server busy", ServerBusy, ServerBusy, func(r reply) bool { return r.subject(4, 5) || busyCues.match(r.text) }},
	// A bare "4.7.1 try again later" with nothing more specific is
	// greylisting's usual shape (milter-greylist answers 451 4.7.1).
	{"bare 4.7.1 try later", Greylist, "", func(r reply) bool { return r.subject(7, 1) && tryLaterCues.match(r.text) }},
	// RFC 3463 X.7.X: "security or policy status".
	{"policy enhanced code", "", PolicyPerm, func(r reply) bool { return r.subject(7) }},
}

// classify runs the rule table on a 4xx or 5xx reply and returns the class
// and the name of the rule that decided it ("" for the fallback).
func classify(r reply) (Class, string) {
	for _, rl := range rules {
		c := rl.perm
		if r.temporary() {
			c = rl.temp
		}
		if c != "" && rl.match(r) {
			return c, rl.name
		}
	}
	if r.temporary() {
		return OtherTemp, ""
	}
	return OtherPerm, ""
}
