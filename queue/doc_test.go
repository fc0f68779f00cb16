package queue_test

import (
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/outboundmail/outbound/backoff"
)

// The default schedule printed in the package documentation is the one
// backoff computes.
func TestDoc_DefaultTimeline(t *testing.T) {
	src, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	steps := (backoff.Schedule{}).Timeline()
	found := regexp.MustCompile(`#(\d+) \+(\S+)`).FindAllStringSubmatch(string(src), -1)
	if len(found) < 10 {
		t.Fatalf("found %d timeline steps in doc.go", len(found))
	}
	for _, f := range found {
		n, _ := strconv.Atoi(f[1])
		if n < 1 || n > len(steps) || steps[n-1].String() != "#"+f[1]+" +"+f[2] {
			t.Errorf("doc.go says #%s +%s; the default schedule has %v", f[1], f[2], steps[min(max(n, 1), len(steps))-1])
		}
	}
	if last := found[len(found)-1]; last[1] != strconv.Itoa(len(steps)) {
		t.Errorf("doc.go ends the timeline at #%s; the default schedule has %d attempts", last[1], len(steps))
	}
	if !strings.Contains(string(src), "after 5 days") {
		t.Error("doc.go does not state the lifetime")
	}
}
