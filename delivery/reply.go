package delivery

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// ReplyLimits caps what one server reply may cost. RFC 5321 §4.5.3.1.5 limits
// a reply line to 512 octets, but real servers exceed it, and nothing in the
// RFC bounds the number of continuation lines: a hostile server could stream
// "250-x" forever. Every field's zero value means its default.
type ReplyLimits struct {
	MaxLineBytes int // octets per line, CR LF included; 0 means 2000 (go-smtp's own limit)
	MaxLines     int // lines per reply; 0 means 100
	MaxBytes     int // octets per reply; 0 means 64 KiB
}

func (l ReplyLimits) withDefaults() ReplyLimits {
	if l.MaxLineBytes <= 0 {
		l.MaxLineBytes = 2000
	}
	if l.MaxLines <= 0 {
		l.MaxLines = 100
	}
	if l.MaxBytes <= 0 {
		l.MaxBytes = 64 << 10
	}
	return l
}

// ReadReply reads one SMTP reply (RFC 5321 §4.2) from r: zero or more
// "ddd-text" lines and a final "ddd text" (or bare "ddd") line, all with the
// same code, whose first digit is 2 to 5. An RFC 3463 enhanced code at the
// start of a line's text is parsed and removed from every line that carries
// it (RFC 2034 §4 puts it on every line; go-smtp's server puts it only on the
// last). An enhanced code whose class differs from the reply's first digit is
// not trusted and is left in the text. Control characters and invalid UTF-8
// in the text are replaced, so the text is safe to log and to put in a DSN.
// Lines may end in CR LF or a bare LF.
//
// It returns a [*ProtocolError] for a malformed reply or one over the limits
// of lim, io.EOF if r ends before the reply starts, io.ErrUnexpectedEOF if it
// ends inside it, and any other error from r as it is.
func ReadReply(r *bufio.Reader, lim ReplyLimits) (Reply, error) {
	lim = lim.withDefaults()
	var (
		code  int
		lines []string
		total int
	)
	for {
		raw, err := readLine(r, lim.MaxLineBytes)
		if err != nil {
			if err == io.EOF && lines != nil {
				err = io.ErrUnexpectedEOF
			}
			return Reply{}, err
		}
		total += len(raw)
		if total > lim.MaxBytes {
			return Reply{}, &ProtocolError{Reason: fmt.Sprintf("reply longer than %d octets", lim.MaxBytes)}
		}
		if len(lines) == lim.MaxLines {
			return Reply{}, &ProtocolError{Reason: fmt.Sprintf("reply has more than %d lines", lim.MaxLines)}
		}
		line := strings.TrimSuffix(strings.TrimSuffix(string(raw), "\n"), "\r")
		c, last, text, perr := parseReplyLine(line)
		if perr != nil {
			return Reply{}, perr
		}
		if lines != nil && c != code {
			return Reply{}, &ProtocolError{Reason: fmt.Sprintf("continuation of a %d reply with code %d", code, c), Line: shorten(line)}
		}
		code = c
		lines = append(lines, text)
		if last {
			return makeReply(code, lines, EnhancedCode{}), nil
		}
	}
}

// readLine returns the next line including its LF, failing once it is
// longer than max octets so that a line without end cannot grow memory.
func readLine(r *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		frag, err := r.ReadSlice('\n')
		if len(line)+len(frag) > max {
			return nil, &ProtocolError{
				Reason: fmt.Sprintf("reply line longer than %d octets", max),
				Line:   shorten(string(append(line, frag...))),
			}
		}
		line = append(line, frag...)
		switch {
		case err == nil:
			return line, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case err == io.EOF && len(line) > 0:
			return nil, io.ErrUnexpectedEOF
		default:
			return nil, err
		}
	}
}

// parseReplyLine splits "250-text", "250 text" or "250" into its parts.
func parseReplyLine(line string) (code int, last bool, text string, err error) {
	if len(line) < 3 || line[0] < '2' || line[0] > '5' || !isDigit(line[1]) || !isDigit(line[2]) {
		return 0, false, "", &ProtocolError{Reason: "malformed reply code", Line: shorten(line)}
	}
	code = int(line[0]-'0')*100 + int(line[1]-'0')*10 + int(line[2]-'0')
	switch {
	case len(line) == 3:
		return code, true, "", nil
	case line[3] == ' ':
		return code, true, line[4:], nil
	case line[3] == '-':
		return code, false, line[4:], nil
	}
	return 0, false, "", &ProtocolError{Reason: "malformed reply code", Line: shorten(line)}
}

// makeReply builds a Reply from a code and its text lines. enh is an
// enhanced code already parsed by someone else (go-smtp), or zero; when zero
// (or go-smtp's {-1,-1,-1}), it is taken from the first line whose text
// starts with one. Every line starting with the chosen code loses it.
func makeReply(code int, lines []string, enh EnhancedCode) Reply {
	if enh[0] < 0 {
		enh = EnhancedCode{}
	}
	if !enh.IsZero() && enh[0] != code/100 {
		// go-smtp stripped a code of the wrong class from the first line:
		// put it back, it is text now.
		if len(lines) > 0 {
			lines[0] = strings.TrimSpace(fmt.Sprintf("%d.%d.%d %s", enh[0], enh[1], enh[2], lines[0]))
		}
		enh = EnhancedCode{}
	}
	if enh.IsZero() {
		for _, l := range lines {
			if e, _, ok := parseEnhanced(l); ok && e[0] == code/100 {
				enh = e
				break
			}
		}
	}
	for i, l := range lines {
		if !enh.IsZero() {
			if e, rest, ok := parseEnhanced(l); ok && e == enh {
				l = rest
			}
		}
		lines[i] = cleanText(l)
	}
	return Reply{Code: code, Enhanced: enh, Text: strings.Join(lines, "\n")}
}

// parseEnhanced parses an RFC 3463 code "class.subject.detail" at the start
// of s, followed by a space or the end, and returns the text after it.
func parseEnhanced(s string) (EnhancedCode, string, bool) {
	word, rest, _ := strings.Cut(s, " ")
	var e EnhancedCode
	parts := strings.Split(word, ".")
	if len(parts) != 3 {
		return e, s, false
	}
	for i, p := range parts {
		if len(p) == 0 || len(p) > 3 {
			return EnhancedCode{}, s, false
		}
		for j := 0; j < len(p); j++ {
			if !isDigit(p[j]) {
				return EnhancedCode{}, s, false
			}
			e[i] = e[i]*10 + int(p[j]-'0')
		}
	}
	if len(parts[0]) != 1 || (e[0] != 2 && e[0] != 4 && e[0] != 5) {
		return EnhancedCode{}, s, false
	}
	return e, rest, true
}

// replyFromText builds a Reply from a code and the "\n"-joined text that
// net/textproto and go-smtp produce, with go-smtp's enhanced code if any.
func replyFromText(code int, text string, enh EnhancedCode) Reply {
	return makeReply(code, strings.Split(text, "\n"), enh)
}

// cleanText replaces invalid UTF-8 and control characters (tab excepted).
func cleanText(s string) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < ' ' && c != '\t') || c == 0x7f || c >= utf8.RuneSelf {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	s = strings.ToValidUTF8(s, "\uFFFD")
	return strings.Map(func(r rune) rune {
		if (r < ' ' && r != '\t') || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return '?'
		}
		return r
	}, s)
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// shorten makes a line short and printable enough for an error message.
func shorten(s string) string {
	const max = 80
	if len(s) > max {
		s = s[:max] + "…"
	}
	return s
}
