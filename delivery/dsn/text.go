package dsn

import (
	"strings"
	"time"
)

// dateLayout is the RFC 5322 §3.3 date-time form.
const dateLayout = "Mon, 02 Jan 2006 15:04:05 -0700"

func formatDate(t time.Time) string { return t.Format(dateLayout) }

// Folding limits: RFC 5322 §2.1.1 asks for lines of at most 78 characters
// and forbids more than 998.
const (
	foldAt    = 78
	maxLine   = 998
	wrapWidth = 72 // human-readable text; leaves room for quoted-printable
)

// writeField appends "Key: value" CR LF to b, folded at spaces so lines stay
// within 78 octets where the words allow it. A word too long for one line
// (possible only in cut-down remote text) is split at 990 octets; unfolding
// then shows a space there. The value must hold no control characters.
func writeField(b *strings.Builder, key, value string) {
	b.WriteString(key)
	b.WriteString(":")
	col := len(key) + 1
	for i, w := range strings.Split(value, " ") {
		if w == "" && i > 0 {
			continue // sanitised values have single spaces; be safe anyway
		}
		if col > len(key)+1 && col+1+len(w) > foldAt {
			b.WriteString("\r\n")
			col = 0
		}
		b.WriteByte(' ')
		col++
		for col+len(w) > maxLine-8 {
			cut := maxLine - 8 - col
			b.WriteString(w[:cut])
			b.WriteString("\r\n ")
			w = w[cut:]
			col = 1
		}
		b.WriteString(w)
		col += len(w)
	}
	b.WriteString("\r\n")
}

// wrap appends text to b as lines of at most wrapWidth octets where the
// words allow, the first prefixed by first and the others by indent.
func wrap(b *strings.Builder, first, indent, text string) {
	b.WriteString(first)
	col := len(first)
	start := true
	for _, w := range strings.Fields(text) {
		if !start && col+1+len(w) > wrapWidth {
			b.WriteString("\r\n")
			b.WriteString(indent)
			col = len(indent)
			start = true
		}
		if !start {
			b.WriteByte(' ')
			col++
		}
		for col+len(w) > maxLine-8 {
			cut := maxLine - 8 - col
			b.WriteString(w[:cut])
			b.WriteString("\r\n")
			b.WriteString(indent)
			w = w[cut:]
			col = len(indent)
		}
		b.WriteString(w)
		col += len(w)
		start = false
	}
	b.WriteString("\r\n")
}

// subject returns the Subject of a report: the most serious action wins.
func subject(rcpts []Recipient) string {
	has := func(a Action) bool {
		for _, r := range rcpts {
			if r.Action == a {
				return true
			}
		}
		return false
	}
	switch {
	case has(Failed):
		return "Undelivered Mail Returned to Sender"
	case has(Delayed):
		return "Delayed Mail (still being retried)"
	case has(Relayed):
		return "Relayed Mail Delivery Report"
	}
	return "Successful Mail Delivery Report"
}

// intro says, per action, what happened and what the sender should do.
var intro = []struct {
	action Action
	text   string
}{
	{Failed, "Your message could not be delivered to the recipients below. The mail system has given up: sending the same message again will not help until the problem described below is solved."},
	{Delayed, "Your message has not been delivered yet to the recipients below. The mail system is still trying; you do not need to send it again."},
	{Delivered, "Your message was delivered to the recipients below."},
	{Relayed, "Your message was passed on for the recipients below to a system that does not report delivery, so no further report will follow."},
	{Expanded, "Your message was delivered to the recipients below and forwarded on from there."},
}

// humanText is the first, human-readable part of the report.
func humanText(n *normalised, original string) string {
	var b strings.Builder
	wrap(&b, "", "", "This is the mail system at host "+n.ReportingMTA+".")
	for _, in := range intro {
		first := true
		for _, rc := range n.rcpts {
			if rc.Action != in.action {
				continue
			}
			if first {
				b.WriteString("\r\n")
				text := in.text
				if in.action == Delayed {
					if until := lastRetry(n.rcpts); !until.IsZero() {
						text += " It will stop at " + formatDate(until) + "."
					}
				}
				wrap(&b, "", "", text)
				first = false
			}
			b.WriteString("\r\n")
			describeRecipient(&b, rc)
		}
	}
	switch original {
	case "FULL":
		b.WriteString("\r\n")
		wrap(&b, "", "", "The original message is attached.")
	case "HDRS":
		b.WriteString("\r\n")
		wrap(&b, "", "", "The header of the original message is attached.")
	}
	return b.String()
}

func describeRecipient(b *strings.Builder, rc Recipient) {
	wrap(b, "", "    ", "<"+rc.FinalRecipient+">")
	wrap(b, "    Status: ", "      ", describeStatus(rc.Status))
	if rc.RemoteMTA != "" {
		wrap(b, "    Server: ", "      ", untyped(rc.RemoteMTA))
	}
	if rc.DiagnosticCode != "" {
		wrap(b, "    It said: ", "      ", untyped(rc.DiagnosticCode))
	}
}

// untyped drops the "type;" prefix of a field for human eyes.
func untyped(v string) string {
	if _, rest, ok := strings.Cut(v, ";"); ok {
		return strings.TrimSpace(rest)
	}
	return v
}

func lastRetry(rcpts []Recipient) time.Time {
	var t time.Time
	for _, r := range rcpts {
		if r.Action == Delayed && r.WillRetryUntil.After(t) {
			t = r.WillRetryUntil
		}
	}
	return t
}

// statusText explains the common RFC 3463 subject.detail codes (and RFC
// 6531's 5.6.7, RFC 7505's 5.1.10) in plain words.
var statusText = map[string]string{
	"1.1":  "the mailbox does not exist",
	"1.2":  "the recipient's domain does not exist or accepts no mail",
	"1.3":  "the recipient address is not valid",
	"1.10": "the recipient's domain accepts no mail (null MX)",
	"2.1":  "the mailbox is disabled",
	"2.2":  "the mailbox is full",
	"2.3":  "the message is larger than the recipient accepts",
	"3.4":  "the message is too large for the receiving system",
	"4.1":  "the receiving server did not answer",
	"4.2":  "the connection to the receiving server was lost",
	"4.4":  "no route to the recipient's domain was found",
	"4.7":  "the message could not be delivered in time",
	"5.3":  "too many recipients",
	"6.3":  "the receiving server cannot take 8-bit data",
	"6.7":  "the receiving server does not accept international addresses",
	"7.0":  "refused by the receiving server's security policy",
	"7.1":  "the receiving server refused to accept it",
	"7.10": "the receiving server requires encryption",
}

// describeStatus turns "5.1.1" into "permanent failure: the mailbox does not
// exist (5.1.1)".
func describeStatus(s string) string {
	class := map[byte]string{'2': "success", '4': "temporary failure", '5': "permanent failure"}[s[0]]
	if d, ok := statusText[s[2:]]; ok {
		return class + ": " + d + " (" + s + ")"
	}
	return class + " (" + s + ")"
}
