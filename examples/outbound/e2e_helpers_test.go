package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// binary is the outbound command built once for a test run, with one
// spool and environment per use.
type binary struct {
	path  string
	spool string
	env   []string
}

// builder builds the binary on first use and hands out environments for
// it; one per top-level test.
type builder struct {
	once sync.Once
	path string
	err  error
}

func (b *builder) get(t *testing.T, dir string) string {
	t.Helper()
	b.once.Do(func() {
		b.path = filepath.Join(dir, "outbound")
		out, err := exec.Command("go", "build", "-o", b.path, ".").CombinedOutput()
		if err != nil {
			b.err = errors.New(string(out))
		}
	})
	if b.err != nil {
		t.Fatalf("go build: %v", b.err)
	}
	return b.path
}

// newBinary returns the binary with a fresh spool, delivering to MX hosts
// on port sinkPort of address literals ("user@[127.0.0.1]" reaches
// 127.0.0.1:sinkPort) and failing every DNS lookup at once (no DNS server on
// 127.0.0.1:9): nothing can leave the loopback interface.
func newBinary(t *testing.T, path, sinkAddr string, extraEnv ...string) *binary {
	_, port, _ := net.SplitHostPort(sinkAddr)
	b := &binary{path: path, spool: filepath.Join(t.TempDir(), "spool")}
	b.env = append([]string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + t.TempDir(),
		"OUTBOUND_SPOOL=" + b.spool,
		"OUTBOUND_MX_PORT=" + port,
		"OUTBOUND_RESOLVER=127.0.0.1:9",
		"OUTBOUND_HELO=outbound.test",
	}, extraEnv...)
	return b
}

// cmd returns the command for args, not started.
func (b *binary) cmd(ctx context.Context, stdin string, args ...string) *exec.Cmd {
	c := exec.CommandContext(ctx, b.path, args...)
	c.Env = b.env
	c.Stdin = strings.NewReader(stdin)
	return c
}

// run runs the binary to its end and returns exit status, stdout, stderr.
func (b *binary) run(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := b.cmd(ctx, stdin, args...)
	var out, errOut bytes.Buffer
	c.Stdout, c.Stderr = &out, &errOut
	err := c.Run()
	code := 0
	if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	return code, out.String(), errOut.String()
}

// mustRun runs the binary and fails the test unless it exits 0.
func (b *binary) mustRun(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	code, out, errOut := b.run(t, stdin, args...)
	if code != 0 {
		t.Fatalf("outbound %s: exit %d\n%s", strings.Join(args, " "), code, errOut)
	}
	return out
}

// queue returns `outbound queue --json`.
func (b *binary) queue(t *testing.T) []jsonMessage {
	t.Helper()
	var msgs []jsonMessage
	out := b.mustRun(t, "", "queue", "--json")
	if err := json.Unmarshal([]byte(out), &msgs); err != nil {
		t.Fatalf("queue --json: %v\n%s", err, out)
	}
	return msgs
}

// sinkDumpDir returns a directory smtp-sink, which runs as nobody when
// started by root, can write its -d dumps into.
func sinkDumpDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "outbound-sink-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	return dir
}

// dumped is one message smtp-sink wrote with -d.
type dumped struct {
	helo      string // X-Helo-Args: which outbound process sent it
	messageID string
	content   string // the message as received, smtp-sink's own lines removed
}

// readDumps parses smtp-sink's dump files: its X- records and Received:
// field, then the message as received, then an empty line.
func readDumps(t *testing.T, dir string) []dumped {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*"))
	if err != nil {
		t.Fatal(err)
	}
	var out []dumped
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d dumped
		var content strings.Builder
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(nil, 1<<20)
		inTrace, inHeader := false, true
		for sc.Scan() {
			l := sc.Text()
			switch {
			case inHeader && strings.HasPrefix(l, "X-Helo-Args: "):
				d.helo = strings.TrimPrefix(l, "X-Helo-Args: ")
				continue
			case inHeader && (strings.HasPrefix(l, "X-Client-") || strings.HasPrefix(l, "X-Mail-Args:") || strings.HasPrefix(l, "X-Rcpt-Args:")):
				continue
			case inHeader && strings.HasPrefix(l, "Received: ") && content.Len() == 0:
				inTrace = true
				continue
			case inTrace && (strings.HasPrefix(l, "\t") || strings.HasPrefix(l, " ")):
				continue
			}
			inTrace = false
			if l == "" {
				inHeader = false
			}
			if inHeader && strings.HasPrefix(strings.ToLower(l), "message-id: ") {
				d.messageID = l[len("message-id: "):]
			}
			content.WriteString(l + "\n")
		}
		// smtp-sink ends every dump with an empty line of its own.
		d.content = strings.TrimSuffix(content.String(), "\n")
		out = append(out, d)
	}
	return out
}

// probeSink runs one SMTP session of its own with smtp-sink (greeting,
// QUIT), so that a test can wait for it to be counted: sessions end in
// order, so every earlier session has been counted too.
func probeSink(t *testing.T, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	if _, err := br.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("QUIT\r\n"))
	br.ReadString('\n')
}
