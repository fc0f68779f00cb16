package delivery

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/textproto"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzReadReply checks ReadReply's promises on any input, and that the
// path go-smtp's client reads through (wireConn, then net/textproto)
// accepts exactly the same replies with the same code and text.
func FuzzReadReply(f *testing.F) {
	f.Add([]byte("250-mx\r\n250 8BITMIME\r\n"), uint8(3))
	f.Add([]byte("550-5.1.1 a\r\n550 5.1.1 b\r\n"), uint8(1))
	f.Add([]byte("250\r\n"), uint8(2))
	lim := ReplyLimits{MaxLineBytes: 64, MaxLines: 5, MaxBytes: 200}.withDefaults()
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8) {
		r, err := ReadReply(bufio.NewReaderSize(bytes.NewReader(data), 16), lim)
		if err == nil {
			checkReply(t, r, lim)
		} else {
			var pe *ProtocolError
			if !errors.As(err, &pe) && err != io.EOF && err != io.ErrUnexpectedEOF {
				t.Fatalf("unexpected error type %T: %v", err, err)
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return // textproto takes a last line without its line end
		}

		wc := &wireConn{Conn: &chunkConn{r: data, n: int(chunk%7) + 1}, lim: lim}
		code, msg, err2 := textproto.NewReader(bufio.NewReader(wc)).ReadResponse(0)
		if (err == nil) != (err2 == nil) {
			t.Fatalf("ReadReply: %v; wireConn+textproto: %v", err, err2)
		}
		if err == nil {
			if r2 := replyFromText(code, msg, EnhancedCode{}); r2 != r {
				t.Fatalf("ReadReply: %#v; wireConn+textproto: %#v", r, r2)
			}
		}
	})
}

func checkReply(t *testing.T, r Reply, lim ReplyLimits) {
	t.Helper()
	if r.Code < 200 || r.Code > 599 {
		t.Fatalf("code %d", r.Code)
	}
	if e := r.Enhanced; !e.IsZero() && (e[0] != r.Code/100 || e[1] < 0 || e[1] > 999 || e[2] < 0 || e[2] > 999) {
		t.Fatalf("enhanced code %v with %d", e, r.Code)
	}
	if !utf8.ValidString(r.Text) {
		t.Fatalf("invalid UTF-8 in %q", r.Text)
	}
	for _, c := range r.Text {
		if (c < ' ' && c != '\n' && c != '\t') || c == 0x7f {
			t.Fatalf("control character %q in %q", c, r.Text)
		}
	}
	if n := strings.Count(r.Text, "\n") + 1; n > lim.MaxLines {
		t.Fatalf("%d lines", n)
	}
	_ = r.String()
}

// chunkConn is a net.Conn that reads r n octets at a time.
type chunkConn struct {
	net.Conn
	r []byte
	n int
}

func (c *chunkConn) Read(p []byte) (int, error) {
	if len(c.r) == 0 {
		return 0, io.EOF
	}
	k := min(c.n, len(p), len(c.r))
	copy(p, c.r[:k])
	c.r = c.r[k:]
	return k, nil
}

// FuzzClassify checks the classification rules as invariants: only a 2xx
// to the final dot is Delivered, only a 5xx at a recipient-level stage is
// Permanent, and the enhanced code never changes the class.
func FuzzClassify(f *testing.F) {
	f.Add("RCPT", 552, 5, 2, 2)
	f.Add("end of data", 250, 2, 0, 0)
	f.Add("greeting", 554, 5, 7, 1)
	recipientLevel := map[Stage]bool{StageResolve: true, StageMAIL: true, StageRCPT: true, StageDATA: true, StageBody: true, StageEndData: true}
	f.Fuzz(func(t *testing.T, stage string, code, c, s, d int) {
		st := Stage(stage)
		r := Reply{Code: code, Enhanced: EnhancedCode{c, s, d}}
		got := Classify(st, r)
		if got != Classify(st, Reply{Code: code}) {
			t.Fatalf("enhanced code %v changed the class of %d at %s", r.Enhanced, code, st)
		}
		switch got {
		case Delivered:
			if st != StageEndData || code < 200 || code > 299 {
				t.Fatalf("%d at %s delivered", code, st)
			}
		case Permanent:
			if code < 500 || code > 599 || !recipientLevel[st] || (st == StageRCPT && code == 552) {
				t.Fatalf("%d at %s permanent", code, st)
			}
		case Temporary:
			if code >= 500 && code <= 599 && recipientLevel[st] && !(st == StageRCPT && code == 552) {
				t.Fatalf("%d at %s temporary", code, st)
			}
			if st == StageEndData && code >= 200 && code <= 299 {
				t.Fatalf("%d at %s not delivered", code, st)
			}
		default:
			t.Fatalf("class %v", got)
		}
	})
}
