package rfc5321_test

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/outboundmail/outbound/delivery/rfc5321"
)

func ExampleCheckMailbox() {
	for _, addr := range []string{
		"user@example.com",
		"jörg@bücher.example",
		"a@b> NOTIFY=NEVER",
		"x@y>\r\nRCPT TO:<evil@z>",
	} {
		err := describe(addr)
		fmt.Println(err)
	}
	// Output:
	// ok, domain "example.com", SMTPUTF8 false
	// ok, domain "bücher.example", SMTPUTF8 true
	// rfc5321: invalid address "a@b> NOTIFY=NEVER": angle bracket '>' in address
	// rfc5321: invalid address "x@y>\r\nRCPT TO:<evil@z>": line break (CR or LF) in address
}

// describe is how an application might vet a recipient at enqueue.
func describe(addr string) string {
	var ae *rfc5321.AddressError
	if err := rfc5321.CheckMailbox(addr); errors.As(err, &ae) {
		return ae.Error()
	}
	return fmt.Sprintf("ok, domain %q, SMTPUTF8 %v", rfc5321.Domain(addr), rfc5321.NeedsSMTPUTF8(addr))
}

func ExampleReader() {
	// Unix line endings, an SMTP smuggling attempt with bare CRs, and no
	// final line ending.
	body := "Subject: hi\n\nline one\r.\rMAIL FROM:<x@y>\nend"
	r := rfc5321.NewReader(strings.NewReader(body))
	data, err := io.ReadAll(r)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%q\n", data)
	fmt.Println(r.Size(), r.EightBit())
	// Output:
	// "Subject: hi\r\n\r\nline one . MAIL FROM:<x@y>\r\nend\r\n"
	// 48 false
}

func ExampleDataError() {
	body := "ok\r\n" + strings.Repeat("x", 1200) + "\r\n"
	_, err := io.ReadAll(rfc5321.NewReader(strings.NewReader(body)))
	var de *rfc5321.DataError
	if errors.As(err, &de) {
		fmt.Println(de.Line, errors.Is(err, rfc5321.ErrLineTooLong))
		fmt.Println(err)
	}
	// Output:
	// 2 true
	// rfc5321: message data line 2 (offset 1002): line longer than 998 octets
}
