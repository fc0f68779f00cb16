package delivery_test

import (
	"bufio"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/outboundmail/outbound/delivery"
)

func TestReadReply(t *testing.T) {
	e := func(a, b, c int) delivery.EnhancedCode { return delivery.EnhancedCode{a, b, c} }
	tests := []struct {
		in   string
		want delivery.Reply
	}{
		{"250 ok\r\n", delivery.Reply{Code: 250, Text: "ok"}},
		{"250\r\n", delivery.Reply{Code: 250}},
		{"250 \r\n", delivery.Reply{Code: 250}},
		{"220 bare LF\n", delivery.Reply{Code: 220, Text: "bare LF"}},
		{"250-mx.example.com\r\n250-PIPELINING\r\n250 8BITMIME\r\n", delivery.Reply{Code: 250, Text: "mx.example.com\nPIPELINING\n8BITMIME"}},
		{"550-5.1.1 one\r\n550-5.1.1 two\r\n550 5.1.1 three\r\n", delivery.Reply{Code: 550, Enhanced: e(5, 1, 1), Text: "one\ntwo\nthree"}},
		{"452-Too many\r\n452 4.5.3 recipients\r\n", delivery.Reply{Code: 452, Enhanced: e(4, 5, 3), Text: "Too many\nrecipients"}},
		{"550 5.1.10 null MX\r\n", delivery.Reply{Code: 550, Enhanced: e(5, 1, 10), Text: "null MX"}},
		{"451 4.7.500 Server busy\r\n", delivery.Reply{Code: 451, Enhanced: e(4, 7, 500), Text: "Server busy"}},
		{"250 2.0.0\r\n", delivery.Reply{Code: 250, Enhanced: e(2, 0, 0)}},
		{"450 5.1.1 wrong class\r\n", delivery.Reply{Code: 450, Text: "5.1.1 wrong class"}},
		{"550 5.1.1x not a code\r\n", delivery.Reply{Code: 550, Text: "5.1.1x not a code"}},
		{"550 3.1.1 bad class\r\n", delivery.Reply{Code: 550, Text: "3.1.1 bad class"}},
		{"550 nul\x00 esc\x1b bad\xff utf8\r\n", delivery.Reply{Code: 550, Text: "nul? esc? bad\uFFFD utf8"}},
		{"250 ok\r\n250 next reply, unread\r\n", delivery.Reply{Code: 250, Text: "ok"}},
	}
	for _, tt := range tests {
		got, err := delivery.ReadReply(bufio.NewReader(strings.NewReader(tt.in)), delivery.ReplyLimits{})
		if err != nil || got != tt.want {
			t.Errorf("ReadReply(%q) = %#v, %v; want %#v", tt.in, got, err, tt.want)
		}
	}
}

func TestReadReply_Errors(t *testing.T) {
	lim := delivery.ReplyLimits{MaxLineBytes: 40, MaxLines: 3, MaxBytes: 100}
	tests := []struct {
		in    string
		proto bool  // a *ProtocolError
		is    error // or this
	}{
		{"25O ok\r\n", true, nil},
		{"2500 ok\r\n", true, nil},
		{"099 ok\r\n", true, nil},
		{"600 ok\r\n", true, nil},
		{"150 ok\r\n", true, nil},
		{"\r\n", true, nil},
		{"25\r\n", true, nil},
		{"250x\r\n", true, nil},
		{"HTTP/1.1 400 Bad Request\r\n", true, nil},
		{"250-ok\r\n550 no\r\n", true, nil},
		{"250-" + strings.Repeat("x", 40) + "\r\n", true, nil},
		{"250-a\r\n250-b\r\n250-c\r\n250 d\r\n", true, nil},
		{strings.Repeat("250-"+strings.Repeat("x", 30)+"\r\n", 3) + "250 x\r\n", true, nil},
		{strings.Repeat("y", 1<<20), true, nil},
		{"", false, io.EOF},
		{"250-more to come\r\n", false, io.ErrUnexpectedEOF},
		{"250 no line end", false, io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		_, err := delivery.ReadReply(bufio.NewReaderSize(strings.NewReader(tt.in), 16), lim)
		var pe *delivery.ProtocolError
		if tt.proto && !errors.As(err, &pe) || !tt.proto && !errors.Is(err, tt.is) {
			t.Errorf("ReadReply(%.40q) error = %v", tt.in, err)
		}
	}
}

func TestClassify(t *testing.T) {
	r := func(code int) delivery.Reply { return delivery.Reply{Code: code} }
	tests := []struct {
		stage delivery.Stage
		reply delivery.Reply
		want  delivery.Class
	}{
		{delivery.StageEndData, r(250), D},
		{delivery.StageRCPT, r(250), T}, // not an outcome yet
		{delivery.StageRCPT, r(251), T},
		{delivery.StageDATA, r(354), T},
		{delivery.StageEndData, r(451), T},
		{delivery.StageEndData, r(554), P},
		{delivery.StageMAIL, r(550), P},
		{delivery.StageMAIL, r(421), T},
		{delivery.StageRCPT, r(550), P},
		{delivery.StageRCPT, r(553), P},
		{delivery.StageRCPT, r(552), T}, // RFC 5321 §4.5.3.1.10
		{delivery.StageRCPT, r(452), T},
		{delivery.StageRCPT, delivery.Reply{Code: 450, Enhanced: delivery.EnhancedCode{5, 1, 1}}, T}, // the code decides
		{delivery.StageRCPT, delivery.Reply{Code: 550, Enhanced: delivery.EnhancedCode{4, 2, 2}}, P},
		{delivery.StageDATA, r(554), P},
		{delivery.StageBody, r(554), P},
		{delivery.StageGreeting, r(554), T}, // the host's problem, next MX
		{delivery.StageEHLO, r(550), T},
		{delivery.StageSTARTTLS, r(502), T}, // mox#365
		{delivery.StageAUTH, r(535), T},
		{delivery.StageConnect, r(0), T},
		{delivery.StageResolve, r(556), P}, // null MX
		{delivery.StageResolve, r(451), T},
		{delivery.StageMAIL, r(0), T},
		{delivery.StageMAIL, r(699), T},
		{delivery.Stage("unknown"), r(550), T},
	}
	for _, tt := range tests {
		if got := delivery.Classify(tt.stage, tt.reply); got != tt.want {
			t.Errorf("Classify(%s, %v) = %s, want %s", tt.stage, tt.reply, got, tt.want)
		}
	}
}
