package main

import (
	"strings"
)

// sendmailArgs rewrites sendmail-style arguments into the form the flag
// package parses: sendmail accepts a value glued to its letter
// ("-fcron@example.org", as PHP's mail() passes it; "-FCronDaemon", as cron
// does), queue-run intervals ("-q15m"), and option letters this program
// has no use for ("-oem", "-B8BITMIME", "-v"). Arguments after the first
// non-flag or "--" are recipients and stay as they are.
func sendmailArgs(args []string) []string {
	out := make([]string, 0, len(args)+2)
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" || !strings.HasPrefix(a, "-") || strings.HasPrefix(a, "--") || len(a) < 2 {
			return append(out, args[i:]...)
		}
		letter, rest := a[1], a[2:]
		switch {
		case strings.ContainsRune("fFrNRVB", rune(letter)) && rest != "":
			// -fsender → -f sender
			out = append(out, a[:2], rest)
		case letter == 'q':
			out = append(out, "-q") // -q15m, -qRsite: one run, now
		case letter == 'o' && (rest == "i" || rest == "dq" || rest == "di" || rest == "db"):
			out = append(out, a)
		case letter == 'o', letter == 'O', letter == 'A', letter == 'e', a == "-v", a == "-m", a == "-n", a == "-U":
			// Error modes (-oem), queue options, -Ac/-Am, verbose: no
			// equivalent here, harmless to ignore.
		case letter == 'h' && rest == "" && i+1 < len(args) && isDigits(args[i+1]):
			i++ // -h hopcount: its value too; a bare -h asks for help
		default:
			out = append(out, a)
		}
	}
	return out
}

// dsnNotify turns sendmail's -N value ("failure,delay", "never") into the
// queue's NOTIFY list; "" leaves NOTIFY unset.
func dsnNotify(v string) []string {
	if v == "" {
		return nil
	}
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.ToUpper(strings.TrimSpace(s)); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func isDigits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}
