// Package deliverytest provides real SMTP servers on the loopback interface
// for tests, in the manner of net/http/httptest.
//
// Three kinds of server are offered, from the most convenient to the most
// faithful to odd peers:
//
//   - [NewServer] runs github.com/emersion/go-smtp's server with a [Script]:
//     hooks that accept or return an exact *smtp.SMTPError per MAIL, RCPT and
//     end of DATA, plus switches for STARTTLS, DSN, SMTPUTF8, REQUIRETLS, SIZE,
//     recipient limits, AUTH PLAIN and greylisting. It records what it
//     accepted ([Server.Messages]) and every envelope command
//     ([Server.Commands]), and lets a test wait for them without sleeping.
//   - [NewRawServer] hands each connection to a function that writes replies
//     and reads commands line by line, for what go-smtp's server cannot do: a
//     421 or multi-line greeting, an EHLO without PIPELINING or 8BITMIME,
//     failing RSET or STARTTLS, drops in the middle of DATA or after the final
//     dot, garbage and stalls.
//   - [StartSink] runs Postfix's smtp-sink, an independent implementation,
//     and skips the test when it is not installed.
//
// Every server listens on 127.0.0.1 on a port chosen by the kernel and is shut
// down through testing.TB.Cleanup. Waiting is done on channels and contexts:
// no function in this package sleeps for a fixed time, so tests built on it
// can pass a generous context deadline as a guard against hangs and nothing
// else.
package deliverytest
