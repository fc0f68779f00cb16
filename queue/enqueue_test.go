package queue_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/outboundmail/outbound/delivery"
	"github.com/outboundmail/outbound/delivery/rfc5321"
	"github.com/outboundmail/outbound/queue"
)

func newEnqueueQueue(t testing.TB) (*queue.Queue, queue.Store) {
	s := openStore(t, spoolDir(t, true))
	return newQueue(t, queue.Config{Store: s, Deliverer: newSimNet(nil)}), s
}

func readBody(t testing.TB, s queue.Store, id queue.ID) []byte {
	t.Helper()
	rc, err := s.OpenBody(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestEnqueue_StoresCheckedMessage(t *testing.T) {
	q, s := newEnqueueQueue(t)
	env := queue.Envelope{
		From:       "app@app.test",
		To:         []string{"Bob@Example.COM", "bob@example.com", "Bob@example.com", "carol@other.test"},
		Notify:     []string{"failure", "DELAY"},
		Recipients: []delivery.Recipient{{Address: "dave@example.com", ORCPT: "rfc822;dave@old.example"}},
		Return:     "hdrs",
		EnvelopeID: "QQ314159",
	}
	// A bare LF becomes CR LF, a stray CR a space (rfc5321.Reader, as
	// Postfix does): no smuggled end of data (CVE-2023-51764).
	id, err := q.Enqueue(context.Background(), env, strings.NewReader("Subject: x\n\nline one\rline two\r\n.\n"))
	if err != nil {
		t.Fatal(err)
	}
	m := get(t, s, id)
	var got []string
	for _, r := range m.Recipients {
		got = append(got, r.Address+" "+r.Destination+" "+strings.Join(r.Notify, ",")+" "+r.ORCPT+" "+r.State.String())
		if !r.NextAttempt.Equal(m.Arrived) {
			t.Errorf("%s: NextAttempt %v, want the arrival %v (due at once)", r.Address, r.NextAttempt, m.Arrived)
		}
	}
	want := []string{
		// The local part is case-sensitive (RFC 5321 §2.4), the domain not.
		"Bob@Example.COM example.com FAILURE,DELAY  queued",
		"bob@example.com example.com FAILURE,DELAY  queued",
		"carol@other.test other.test FAILURE,DELAY  queued",
		"dave@example.com example.com  rfc822;dave@old.example queued",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("recipients:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if m.Return != "HDRS" || m.EnvelopeID != "QQ314159" || m.From != "app@app.test" || m.EightBit {
		t.Fatalf("message %+v", m)
	}
	body := readBody(t, s, id)
	if want := "Subject: x\r\n\r\nline one line two\r\n.\r\n"; string(body) != want || m.Size != int64(len(want)) {
		t.Fatalf("stored body %q (size %d), want %q", body, m.Size, want)
	}
}

func TestEnqueue_Refusals(t *testing.T) {
	ok := "Subject: x\r\n\r\nhi\r\n"
	received := func(n int) string {
		return strings.Repeat("Received: from a by b; Sat, 1 Jan 2000 00:00:00 +0000\r\n", n) + ok
	}
	for _, tc := range []struct {
		name  string
		env   queue.Envelope
		body  string
		field string
		cause any // a pointer to the error type errors.As must find, or an error for errors.Is
	}{
		{"SMTPInjectionInFrom", queue.Envelope{From: "a@b.example>\r\nRCPT TO:<evil@z.example", To: []string{"x@y.example"}}, ok, "From", new(*rfc5321.AddressError)},
		{"ParameterInRecipient", queue.Envelope{From: "a@b.example", To: []string{"x@y.example> NOTIFY=NEVER"}}, ok, "To[0]", new(*rfc5321.AddressError)},
		{"LongLocalPart", queue.Envelope{From: "a@b.example", To: []string{strings.Repeat("l", 65) + "@y.example"}}, ok, "To[0]", new(*rfc5321.AddressError)},
		{"NoRecipients", queue.Envelope{From: "a@b.example"}, ok, "To", nil},
		{"NotifyNeverAndFailure", queue.Envelope{From: "a@b.example", To: []string{"x@y.example"}, Notify: []string{"NEVER", "FAILURE"}}, ok, "To[0].Notify", nil},
		{"NotifyUnknown", queue.Envelope{From: "a@b.example", To: []string{"x@y.example"}, Notify: []string{"SOMETIMES"}}, ok, "To[0].Notify", nil},
		{"ORCPTWithSpace", queue.Envelope{From: "a@b.example", Recipients: []delivery.Recipient{{Address: "x@y.example", ORCPT: "rfc822;x@y NOTIFY=NEVER"}}}, ok, "To[0].ORCPT", nil},
		{"ORCPTWithoutType", queue.Envelope{From: "a@b.example", Recipients: []delivery.Recipient{{Address: "x@y.example", ORCPT: "x@y.example"}}}, ok, "To[0].ORCPT", nil},
		{"EnvelopeIDWithCRLF", queue.Envelope{From: "a@b.example", To: []string{"x@y.example"}, EnvelopeID: "id\r\nRSET"}, ok, "EnvelopeID", nil},
		{"LongEnvelopeID", queue.Envelope{From: "a@b.example", To: []string{"x@y.example"}, EnvelopeID: strings.Repeat("e", 101)}, ok, "EnvelopeID", nil},
		{"BadReturn", queue.Envelope{From: "a@b.example", To: []string{"x@y.example"}, Return: "ALL"}, ok, "Return", nil},
		{"NUL", queue.Envelope{From: "a@b.example", To: []string{"x@y.example"}}, "Subject: x\r\n\r\na\x00b\r\n", "Body", rfc5321.ErrNUL},
		{"LongLine", queue.Envelope{From: "a@b.example", To: []string{"x@y.example"}}, "Subject: x\r\n\r\n" + strings.Repeat("x", 999) + "\r\n", "Body", rfc5321.ErrLineTooLong},
		{"MailLoop", queue.Envelope{From: "a@b.example", To: []string{"x@y.example"}}, received(101), "Body", queue.ErrMailLoop},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q, s := newEnqueueQueue(t)
			_, err := q.Enqueue(context.Background(), tc.env, strings.NewReader(tc.body))
			var ie *queue.InvalidMessageError
			if !errors.As(err, &ie) || ie.Field != tc.field {
				t.Fatalf("Enqueue: %v, want an *InvalidMessageError for %s", err, tc.field)
			}
			switch c := tc.cause.(type) {
			case error:
				if !errors.Is(err, c) {
					t.Fatalf("Enqueue: %v, want it to wrap %v", err, c)
				}
			case nil:
			default:
				if !errors.As(err, c) {
					t.Fatalf("Enqueue: %v, want it to wrap a %T", err, c)
				}
			}
			if n := len(all(t, s)); n != 0 {
				t.Fatalf("%d messages stored after a refusal", n)
			}
		})
	}
	t.Run("HundredReceivedIsFine", func(t *testing.T) {
		q, _ := newEnqueueQueue(t)
		if _, err := q.Enqueue(context.Background(), queue.Envelope{From: "a@b.example", To: []string{"x@y.example"}}, strings.NewReader(received(100))); err != nil {
			t.Fatal(err)
		}
	})
}

// Large bodies are spooled to a temporary file while they are checked; the
// file is removed, and EightBit is known before the store records the
// message.
func TestEnqueue_LargeBody(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	q, s := newEnqueueQueue(t)
	line := strings.Repeat("abcdefghij", 99) + "\n"
	body := "Subject: big\n\n" + strings.Repeat(line, 2000) + "caf\xc3\xa9\n"
	id, err := q.Enqueue(context.Background(), queue.Envelope{From: "a@b.example", To: []string{"x@y.example"}}, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	m := get(t, s, id)
	want := strings.ReplaceAll(body, "\n", "\r\n")
	if !m.EightBit || m.Size != int64(len(want)) {
		t.Fatalf("EightBit %t, Size %d; want true, %d", m.EightBit, m.Size, len(want))
	}
	if got := readBody(t, s, id); !bytes.Equal(got, []byte(want)) {
		t.Fatal("stored body differs")
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Fatalf("temporary files left behind: %v", left)
	}

	small := newQueue(t, queue.Config{Store: s, Deliverer: newSimNet(nil), MaxMessageSize: 1 << 20})
	_, err = small.Enqueue(context.Background(), queue.Envelope{From: "a@b.example", To: []string{"x@y.example"}},
		strings.NewReader(strings.Repeat(line, 2000)))
	if !errors.Is(err, queue.ErrMessageTooLarge) {
		t.Fatalf("2 MB body with a 1 MiB limit: %v, want ErrMessageTooLarge", err)
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 || len(all(t, s)) != 1 {
		t.Fatalf("refusal left %v and %d messages", left, len(all(t, s)))
	}
}

func TestEnqueue_ReadErrorStoresNothing(t *testing.T) {
	q, s := newEnqueueQueue(t)
	boom := errors.New("client went away")
	r := io.MultiReader(strings.NewReader(strings.Repeat("x\r\n", 200000)), iotest.ErrReader(boom))
	if _, err := q.Enqueue(context.Background(), queue.Envelope{From: "a@b.example", To: []string{"x@y.example"}}, r); !errors.Is(err, boom) {
		t.Fatalf("Enqueue: %v, want the reader's error", err)
	}
	if n := len(all(t, s)); n != 0 {
		t.Fatalf("%d messages stored", n)
	}
}

func TestEnqueue_Idempotent(t *testing.T) {
	q, s := newEnqueueQueue(t)
	env := queue.Envelope{From: "a@b.example", To: []string{"x@y.example"}, IdempotencyKey: "order-42"}
	id1, err := q.Enqueue(context.Background(), env, strings.NewReader("Subject: 1\r\n\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	id2, err := q.Enqueue(context.Background(), env, strings.NewReader("Subject: 2\r\n\r\n"))
	if err != nil || id2 != id1 || len(all(t, s)) != 1 {
		t.Fatalf("second Enqueue with the same key: %q, %v; want %q and one message", id2, err, id1)
	}
}

func TestEnqueue_AfterClose(t *testing.T) {
	q, _ := newEnqueueQueue(t)
	q.Close()
	if _, err := q.Enqueue(context.Background(), queue.Envelope{From: "a@b.example", To: []string{"x@y.example"}}, strings.NewReader("")); !errors.Is(err, queue.ErrClosed) {
		t.Fatalf("Enqueue after Close: %v", err)
	}
}

// FuzzEnqueue feeds hostile envelopes and bodies to Enqueue. Whatever it
// accepts is stored canonical: CR LF line endings only, no NUL, no line over
// 998 octets, equal to what rfc5321.Reader makes of the input; whatever it
// refuses is an *InvalidMessageError with nothing stored.
func FuzzEnqueue(f *testing.F) {
	f.Add("a@b.example", "x@y.example", "", "Subject: x\r\n\r\nhi\r\n")
	f.Add("", "x@y.example", "NEVER", "\n.\n\r.\r\r\n")
	f.Add("a@b.example> NOTIFY=NEVER", "x@y.example", "", "Subject: x\n\nhi")
	f.Add("a@b.example", "\"quoted local\"@[127.0.0.1]", "FAILURE,DELAY", "Received: x\r\nreceived:y\r\n\r\nReceived: z\r\n")
	q, s := newEnqueueQueue(f)
	f.Fuzz(func(t *testing.T, from, to, notify, body string) {
		env := queue.Envelope{From: from, To: strings.Split(to, ",")}
		if notify != "" {
			env.Notify = strings.Split(notify, ",")
		}
		id, err := q.Enqueue(context.Background(), env, strings.NewReader(body))
		if err != nil {
			var ie *queue.InvalidMessageError
			if !errors.As(err, &ie) {
				t.Fatalf("Enqueue: %v is not an *InvalidMessageError", err)
			}
			return
		}
		want, err := io.ReadAll(rfc5321.NewReader(strings.NewReader(body)))
		if err != nil {
			t.Fatalf("accepted a body rfc5321.Reader refuses: %v", err)
		}
		got := readBody(t, s, id)
		if !bytes.Equal(got, want) {
			t.Fatalf("stored %q, want %q", got, want)
		}
		for i, line := range bytes.Split(got, []byte("\r\n")) {
			if bytes.ContainsAny(line, "\r\n\x00") || len(line) > 998 {
				t.Fatalf("stored line %d is not canonical: %q", i, line)
			}
		}
		if err := s.Delete(context.Background(), id); err != nil {
			t.Fatal(err)
		}
	})
}

// lenReader reports a Len that has nothing to do with what it holds, as a
// careless wrapper might: Enqueue may size buffers from Len, never trust it.
type lenReader struct {
	io.Reader
	n int
}

func (r lenReader) Len() int { return r.n }

// TestEnqueue_ReaderKindsStoreTheSameBody enqueues bodies around the
// in-memory spool limit (256 KiB), canonical or with bare LFs and no final
// line ending (which canonicalisation makes longer), through readers that
// tell their length, that lie about it and that tell nothing. Each stores
// exactly what rfc5321.Reader makes of the input.
func TestEnqueue_ReaderKindsStoreTheSameBody(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir())
	q, s := newEnqueueQueue(t)
	env := queue.Envelope{From: "a@b.example", To: []string{"x@y.example"}}
	const spool = 256 << 10
	readers := map[string]func([]byte) io.Reader{
		"bytes.Reader":   func(b []byte) io.Reader { return bytes.NewReader(b) },
		"bytes.Buffer":   func(b []byte) io.Reader { return bytes.NewBuffer(b) },
		"strings.Reader": func(b []byte) io.Reader { return strings.NewReader(string(b)) },
		"one octet":      func(b []byte) io.Reader { return iotest.OneByteReader(bytes.NewReader(b)) },
		"Len too small":  func(b []byte) io.Reader { return lenReader{bytes.NewReader(b), 1} },
		"Len too large":  func(b []byte) io.Reader { return lenReader{bytes.NewReader(b), 10 * len(b)} },
		"Len negative":   func(b []byte) io.Reader { return lenReader{bytes.NewReader(b), -1} },
	}
	for _, size := range []int{0, 1, 2 << 10, spool - 1, spool, spool + 1} {
		for _, lf := range []bool{false, true} {
			var body []byte
			if lf { // bare LFs and an unterminated last line
				body = bytes.Repeat([]byte("0123456789\n"), size/11+1)[:size]
			} else {
				body = bytes.Repeat([]byte("01234567\r\n"), size/10+1)[:size]
				if size >= 2 {
					body = append(body[:size-2:size-2], '\r', '\n')
				}
			}
			want, err := io.ReadAll(rfc5321.NewReader(bytes.NewReader(body)))
			if err != nil {
				t.Fatal(err)
			}
			for name, newReader := range readers {
				id, err := q.Enqueue(context.Background(), env, newReader(body))
				if err != nil {
					t.Fatalf("size %d, bare LF %t, %s: %v", size, lf, name, err)
				}
				if got := readBody(t, s, id); !bytes.Equal(got, want) {
					t.Fatalf("size %d, bare LF %t, %s: stored %d octets, want %d (differ)", size, lf, name, len(got), len(want))
				}
				if m := get(t, s, id); m.Size != int64(len(want)) {
					t.Fatalf("size %d, bare LF %t, %s: Size %d, want %d", size, lf, name, m.Size, len(want))
				}
				if err := s.Delete(context.Background(), id); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
}

// TestEnqueue_RefusalThenGoodBody checks that nothing of a refused body (its
// error, its partly read input) carries over to the next Enqueue, which
// reuses the body checker.
func TestEnqueue_RefusalThenGoodBody(t *testing.T) {
	q, s := newEnqueueQueue(t)
	env := queue.Envelope{From: "a@b.example", To: []string{"x@y.example"}}
	for i := range 3 {
		_, err := q.Enqueue(context.Background(), env, strings.NewReader("Subject: bad\n\nN\x00L\n"))
		var de *rfc5321.DataError
		if !errors.As(err, &de) {
			t.Fatalf("round %d: body with NUL: %v, want a *rfc5321.DataError", i, err)
		}
		loop := strings.Repeat("Received: x\n", queue.MaxReceivedHeaders+1) + "\n"
		if _, err := q.Enqueue(context.Background(), env, strings.NewReader(loop)); !errors.Is(err, queue.ErrMailLoop) {
			t.Fatalf("round %d: looping body: %v, want ErrMailLoop", i, err)
		}
		body := "Received: y\nSubject: good\n\nhi\n"
		id, err := q.Enqueue(context.Background(), env, strings.NewReader(body))
		if err != nil {
			t.Fatalf("round %d: good body after refusals: %v", i, err)
		}
		if got, want := string(readBody(t, s, id)), strings.ReplaceAll(body, "\n", "\r\n"); got != want {
			t.Fatalf("round %d: stored %q, want %q", i, got, want)
		}
	}
}
