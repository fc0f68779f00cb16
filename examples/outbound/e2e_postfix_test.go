package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outboundmail/outbound/delivery/deliverytest"
)

// postfixMessages are the messages sent through Postfix: ordinary text,
// 8-bit UTF-8, leading dots, a 998-octet line, folded header fields, MIME.
var postfixMessages = []string{
	"From: Alice <alice@example.org>\r\nTo: bob@example.com\r\nSubject: plain\r\nDate: Mon, 02 Jan 2006 15:04:05 -0700\r\nMessage-ID: <pf-0@example.org>\r\n\r\nHello Bob.\r\n",
	"From: Alice <alice@example.org>\r\nTo: bob@example.com\r\nSubject: =?UTF-8?Q?gr=C3=BC=C3=9Fe?=\r\nDate: Mon, 02 Jan 2006 15:04:05 -0700\r\nMessage-ID: <pf-1@example.org>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße, Ünïcödé ✓\r\n",
	"From: Alice <alice@example.org>\r\nTo: bob@example.com,\r\n\tcarol@example.com\r\nSubject: dots and\r\n a folded subject\r\nDate: Mon, 02 Jan 2006 15:04:05 -0700\r\nMessage-ID: <pf-2@example.org>\r\n\r\n.\r\n..\r\n.leading\r\n" + strings.Repeat("y", 998) + "\r\n\r\n\r\nend after blank lines\r\n",
	"From: Alice <alice@example.org>\r\nTo: bob@example.com\r\nSubject: mime\r\nDate: Mon, 02 Jan 2006 15:04:05 -0700\r\nMessage-ID: <pf-3@example.org>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\npreamble\r\n--b1\r\nContent-Type: text/plain\r\n\r\npart one\r\n--b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAECAwQFBgcICQ==\r\n--b1--\r\n",
}

// testPostfixRelay sends through a real Postfix smtpd on loopback, which
// relays into smtp-sink: outbound → Postfix → smtp-sink. What arrives must
// be what was sent, byte for byte, apart from the Received: fields both
// servers add on top.
func testPostfixRelay(t *testing.T, bin func(*testing.T) string) {
	dump := sinkDumpDir(t)
	sink := deliverytest.StartSink(t, "-d", dump+"/%Y%m%d%H%M%S.")
	pfx, pfxLog := startPostfix(t, sink.Addr())
	ob := newBinary(t, bin(t), sink.Addr(), "OUTBOUND_RELAY="+pfx, "OUTBOUND_TLS=opportunistic")
	for i, m := range postfixMessages {
		code, _, errOut := ob.run(t, m, "send", "-t", "-i")
		if code != 0 || !strings.Contains(errOut, "delivered") {
			t.Fatalf("send %d: exit %d, %s", i, code, errOut)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := sink.WaitCounters(ctx, 0, len(postfixMessages)); err != nil {
		t.Fatalf("Postfix did not relay every message: %v (log: %s)", err, readFile(pfxLog))
	}
	got := make(map[string]string)
	for _, d := range readDumps(t, dump) {
		got[d.messageID] = d.content
	}
	for i, m := range postfixMessages {
		id := fmt.Sprintf("<pf-%d@example.org>", i)
		// smtp-sink writes its dumps with LF line endings.
		want := strings.ReplaceAll(m, "\r\n", "\n")
		if got[id] != want {
			t.Errorf("%s arrived through Postfix as\n%q\nwant\n%q", id, got[id], want)
		}
	}
}

// startPostfix runs a private Postfix instance (its own configuration,
// queue and log in a temporary directory) whose smtpd listens on a free
// loopback port and relays everything to relayTo. It skips the test when
// Postfix is not installed or cannot start (it needs root), and stops it
// through t.Cleanup. It returns the smtpd address and the mail log.
func startPostfix(t *testing.T, relayTo string) (addr, log string) {
	t.Helper()
	if _, err := os.Stat("/usr/sbin/postfix"); err != nil {
		t.Skip("Postfix not installed: apt-get install postfix")
	}
	if os.Geteuid() != 0 {
		t.Skip("starting a Postfix instance needs root")
	}
	dir, err := os.MkdirTemp("", "outbound-postfix-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	for _, d := range []string{"etc", "spool", "data"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command("chown", "postfix", filepath.Join(dir, "data")).CombinedOutput(); err != nil {
		t.Skipf("no postfix user: %v %s", err, out)
	}
	addr = freeLoopbackAddr(t)
	log = filepath.Join(dir, "postfix.log")
	writePostfixConfig(t, dir, addr, relayTo)
	etc := filepath.Join(dir, "etc")
	if out, err := exec.Command("postfix", "-c", etc, "start").CombinedOutput(); err != nil {
		t.Skipf("Postfix did not start: %v %s %s", err, out, readFile(log))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("postfix", "-c", etc, "stop").CombinedOutput(); err != nil {
			t.Errorf("postfix stop: %v %s", err, out)
		}
	})
	// Postfix's master daemon binds the port before it forks into the
	// background, so the port is already listening when start returns.
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatalf("Postfix smtpd not listening on %s: %v", addr, err)
	}
	c.Close()
	return addr, log
}

// writePostfixConfig writes main.cf and master.cf for a loopback-only
// relay: smtpd on addr accepts mail from 127.0.0.0/8 for any domain and
// hands it to relayTo; no local delivery, no TLS, no chroot.
func writePostfixConfig(t *testing.T, dir, addr, relayTo string) {
	host, port, _ := net.SplitHostPort(relayTo)
	main := fmt.Sprintf(`compatibility_level = 3.6
queue_directory = %[1]s/spool
data_directory = %[1]s/data
maillog_file = %[1]s/postfix.log
maillog_file_prefixes = %[1]s
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = postfix.test
mydestination =
relayhost = [%[2]s]:%[3]s
default_transport = smtp
relay_transport = relay
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks reject
smtp_tls_security_level = none
smtpd_tls_security_level = none
alias_maps =
alias_database =
local_recipient_maps =
biff = no
`, dir, host, port)
	master := addr + " inet n - n - - smtpd\n" + `pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
smtp unix - - n - - smtp
relay unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
`
	for name, text := range map[string]string{"main.cf": main, "master.cf": master} {
		if err := os.WriteFile(filepath.Join(dir, "etc", name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func freeLoopbackAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func readFile(name string) string {
	b, _ := os.ReadFile(name)
	return string(b)
}
