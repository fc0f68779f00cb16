package delivery_test

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"os"
	"strings"
	"testing"

	"github.com/outboundmail/outbound/delivery"
)

// BenchmarkReadClassify reads each reply line of the real-reply corpus off
// the wire (ReadReply, with the default limits) and classifies it at the
// RCPT and end-of-data stages: the per-recipient work after every reply.
func BenchmarkReadClassify(b *testing.B) {
	f, err := os.Open("reason/testdata/smtp-replies.tsv")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	cr := csv.NewReader(f)
	cr.Comma = '\t'
	rows, err := cr.ReadAll()
	if err != nil {
		b.Fatal(err)
	}
	var replies [][]byte
	for _, row := range rows[1:] { // after the header
		// Multi-line replies are stored with their lines joined by " | ".
		wire := []byte(strings.ReplaceAll(row[2], " | ", "\r\n") + "\r\n")
		if _, err := delivery.ReadReply(bufio.NewReader(bytes.NewReader(wire)), delivery.ReplyLimits{}); err != nil {
			continue // a reply the corpus keeps cut short
		}
		replies = append(replies, wire)
	}
	if len(replies) < 100 {
		b.Fatalf("corpus has %d replies", len(replies))
	}
	var (
		rd      bytes.Reader
		br      = bufio.NewReader(&rd)
		classes [4]int
	)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		rd.Reset(replies[i%len(replies)])
		br.Reset(&rd)
		r, err := delivery.ReadReply(br, delivery.ReplyLimits{})
		if err != nil {
			b.Fatal(err)
		}
		classes[delivery.Classify(delivery.StageRCPT, r)]++
		classes[delivery.Classify(delivery.StageEndData, r)]++
	}
	b.StopTimer()
	if classes[delivery.Permanent] == 0 || classes[delivery.Temporary] == 0 {
		b.Fatalf("classes %v: the corpus has both temporary and permanent replies", classes)
	}
}
