package reason

import (
	"encoding/csv"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/outboundmail/outbound/delivery"
)

// sample is one row of testdata/smtp-replies.tsv.
type sample struct {
	line   int
	reply  delivery.Reply
	wire   string        // the reply as logged; lines separated by " | "
	class  Class         // the class a person assigned
	wait   time.Duration // the stated wait a person read; 0 for none
	source string
}

// minAccuracy is the share of rows Classify must put in the class the corpus
// gives. The misses are printed by TestConfusion.
const minAccuracy = 0.96

var lineCodeRE = regexp.MustCompile(`^(\d{3})[ -]?`)

// loadCorpus reads the TSV and turns each logged reply into the Reply the
// delivery engine would hand over: code and enhanced code from their
// columns, the text without the per-line "550-5.7.1 " prefixes, lines
// joined with "\n".
func loadCorpus(t testing.TB) []sample {
	t.Helper()
	f, err := os.Open("testdata/smtp-replies.tsv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.Comma = '\t'
	r.FieldsPerRecord = 6
	rows, err := r.ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(rows[0], ","); got != "code,enhanced,text,class,retry_hint_seconds,source" {
		t.Fatalf("unexpected header %q", got)
	}
	var out []sample
	for i, row := range rows[1:] {
		code, err := strconv.Atoi(row[0])
		if err != nil {
			t.Fatalf("line %d: code %q", i+2, row[0])
		}
		s := sample{line: i + 2, wire: row[2], class: Class(row[3]), source: row[5]}
		s.reply.Code = code
		if row[1] != "" {
			for j, p := range strings.Split(row[1], ".") {
				if s.reply.Enhanced[j], err = strconv.Atoi(p); err != nil {
					t.Fatalf("line %d: enhanced %q", i+2, row[1])
				}
			}
		}
		if row[4] != "" {
			secs, err := strconv.Atoi(row[4])
			if err != nil {
				t.Fatalf("line %d: retry hint %q", i+2, row[4])
			}
			s.wait = time.Duration(secs) * time.Second
		}
		var lines []string
		for _, l := range strings.Split(row[2], " | ") {
			l = lineCodeRE.ReplaceAllString(strings.TrimSpace(l), "")
			if e := row[1]; e != "" && (l == e || strings.HasPrefix(l, e+" ")) {
				l = strings.TrimSpace(l[len(e):])
			}
			lines = append(lines, l)
		}
		s.reply.Text = strings.Join(lines, "\n")
		out = append(out, s)
	}
	if len(out) != 233 {
		t.Fatalf("corpus has %d rows, want 233", len(out))
	}
	return out
}

// TestCorpusWaits: every stated wait in the corpus is read exactly, and no
// wait is read from a reply that states none.
func TestCorpusWaits(t *testing.T) {
	stated := 0
	for _, s := range loadCorpus(t) {
		got := Classify(s.reply).Wait
		if got != s.wait {
			t.Errorf("line %d: Wait = %v, want %v: %s", s.line, got, s.wait, s.wire)
		}
		if s.wait > 0 {
			stated++
		}
	}
	if stated == 0 {
		t.Fatal("no row states a wait: the corpus did not load as expected")
	}
	t.Logf("%d stated waits read exactly", stated)
}

// TestCorpusPermanence: no 5xx reply is ever retryable, every 4xx is, and
// Permanent follows the code.
func TestCorpusPermanence(t *testing.T) {
	for _, s := range loadCorpus(t) {
		r := Classify(s.reply)
		perm := s.reply.Code >= 500
		if r.Permanent != perm || r.Retryable() == perm {
			t.Errorf("line %d: Permanent=%v Retryable=%v for %s", s.line, r.Permanent, r.Retryable(), s.wire)
		}
	}
}

// TestConfusion classifies every row, prints the confusion matrix and the
// misses, and requires minAccuracy. Run it with go test -run TestConfusion -v.
func TestConfusion(t *testing.T) {
	corpus := loadCorpus(t)
	classes := Classes()
	index := map[Class]int{}
	for i, c := range classes {
		index[c] = i
	}
	matrix := make([][]int, len(classes))
	for i := range matrix {
		matrix[i] = make([]int, len(classes))
	}
	var misses []string
	right := 0
	for _, s := range corpus {
		want, ok := index[s.class]
		if !ok {
			t.Fatalf("line %d: class %q is not a Class", s.line, s.class)
		}
		got := Classify(s.reply).Class
		matrix[want][index[got]]++
		if got == s.class {
			right++
		} else {
			misses = append(misses, fmt.Sprintf("line %d: %s, want %s: %.90s", s.line, got, s.class, s.wire))
		}
	}
	t.Logf("confusion matrix (rows: class in the corpus, columns: Classify):\n%s", formatMatrix(classes, matrix))
	t.Logf("misclassified %d of %d:\n%s", len(misses), len(corpus), strings.Join(misses, "\n"))
	acc := float64(right) / float64(len(corpus))
	t.Logf("accuracy %d/%d = %.1f%% (required %.0f%%)", right, len(corpus), 100*acc, 100*minAccuracy)
	if acc < minAccuracy {
		t.Errorf("accuracy %.3f below %.2f", acc, minAccuracy)
	}
}

func formatMatrix(classes []Class, m [][]int) string {
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 2, 0, 1, ' ', tabwriter.AlignRight)
	abbrev := map[Class]string{Greylist: "grey", RateLimit: "rate", ReputationBlock: "repu", MailboxFull: "full",
		UserUnknown: "user", DNSTemp: "dns", MessageTooBig: "big", TooManyRecipients: "rcpt", ServerBusy: "busy",
		Spam: "spam", PolicyPerm: "pol5", PolicyTemp: "pol4", TLSRequired: "tls", OtherTemp: "oth4", OtherPerm: "oth5"}
	short := func(c Class) string { return abbrev[c] }
	fmt.Fprint(w, "\t")
	for _, c := range classes {
		fmt.Fprintf(w, "%s\t", short(c))
	}
	fmt.Fprintln(w, "\ttotal\t")
	for i, c := range classes {
		fmt.Fprintf(w, "%s\t", c)
		total := 0
		for j := range classes {
			if m[i][j] == 0 {
				fmt.Fprint(w, ".\t")
			} else {
				fmt.Fprintf(w, "%d\t", m[i][j])
			}
			total += m[i][j]
		}
		fmt.Fprintf(w, "\t%d\t\n", total)
	}
	w.Flush()
	return b.String()
}

// TestRuleCoverage: every rule of the table decides at least one reply of
// the corpus, so none is dead weight. It logs how many each decides.
func TestRuleCoverage(t *testing.T) {
	hits := map[string]int{}
	for _, s := range loadCorpus(t) {
		_, name := classify(reply{code: s.reply.Code, enh: s.reply.Enhanced, text: normalize(s.reply.Text)})
		hits[name]++
	}
	var b strings.Builder
	for _, rl := range rules {
		fmt.Fprintf(&b, "%-26s %3d\n", rl.name, hits[rl.name])
		if hits[rl.name] == 0 {
			t.Errorf("rule %q decides no reply of the corpus", rl.name)
		}
	}
	fmt.Fprintf(&b, "%-26s %3d\n", "(fallback)", hits[""])
	t.Logf("replies decided per rule:\n%s", b.String())
}
