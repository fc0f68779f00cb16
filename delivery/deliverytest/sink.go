package deliverytest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Sink is a running Postfix smtp-sink(1) process listening on 127.0.0.1.
// Its methods are safe for concurrent use.
type Sink struct {
	addr   string
	tb     testing.TB
	cmd    *exec.Cmd
	exited chan struct{} // closed when the process has been reaped

	notifier // guards the fields below
	closed   bool
	sess     int // smtp-sink's "sess" counter: sessions ended, the probe included
	mesg     int
}

// sinkPath is where Debian's postfix package installs smtp-sink, which is
// outside an ordinary user's PATH.
const sinkPath = "/usr/sbin/smtp-sink"

// counterRE matches one update of smtp-sink's -c counters.
var counterRE = regexp.MustCompile(`sess=(\d+) quit=(\d+) mesg=(\d+)`)

// StartSink runs smtp-sink on 127.0.0.1 with a free port, passing args
// before the address, e.g. "-r", "RCPT", "-b", "451 4.7.1 Try again later".
// It adds -c (counters, read by [Sink.Counters]) and, when running as root,
// "-u nobody", which smtp-sink requires then. It skips the test when
// smtp-sink is not installed, fails it when smtp-sink exits or never accepts
// a connection, and kills the process through tb.Cleanup.
//
// Before returning it makes one probe session (reads the greeting, sends
// QUIT) to know the server is up; [Sink.Counters] leaves that session out,
// but smtp-sink's own -n limit counts it.
func StartSink(tb testing.TB, args ...string) *Sink {
	tb.Helper()
	bin, err := exec.LookPath("smtp-sink")
	if err != nil {
		bin = sinkPath
		if _, err := os.Stat(bin); err != nil {
			tb.Skip("smtp-sink not installed: apt-get install postfix")
		}
	}
	// The port is found by binding and releasing it, so another process may
	// take it before smtp-sink binds; retry a few times when that happens.
	var lastErr error
	for range 3 {
		s, err := startSink(tb, bin, args)
		if err == nil {
			return s
		}
		lastErr = err
	}
	tb.Fatalf("deliverytest: %v", lastErr)
	return nil
}

func startSink(tb testing.TB, bin string, args []string) (*Sink, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	s := &Sink{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), tb: tb, exited: make(chan struct{})}
	var argv []string
	if os.Geteuid() == 0 {
		argv = append(argv, "-u", "nobody")
	}
	argv = append(argv, "-c")
	argv = append(argv, args...)
	argv = append(argv, s.addr, "64")
	s.cmd = exec.Command(bin, argv...)
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	var stderr bytes.Buffer
	s.cmd.Stderr = &stderr
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		s.readCounters(stdout)
	}()
	go func() {
		<-readDone // Wait must not run before the pipe has been read to its end
		s.cmd.Wait()
		close(s.exited)
	}()
	if err := s.probe(); err != nil {
		s.kill()
		return nil, fmt.Errorf("smtp-sink %s: %w; stderr: %s", strings.Join(argv, " "), err, strings.TrimSpace(stderr.String()))
	}
	tb.Cleanup(s.Close)
	return s, nil
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// probe dials until smtp-sink accepts, with growing pauses bounded in total,
// runs one session to its end, and waits for smtp-sink to count it, so that
// later counter values are exact.
func (s *Sink) probe() error {
	var conn net.Conn
	pause := time.Millisecond
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for conn == nil {
		var err error
		if conn, err = net.Dial("tcp", s.addr); err == nil {
			break
		}
		t := time.NewTimer(pause)
		select {
		case <-s.exited:
			t.Stop()
			return errors.New("exited before accepting connections")
		case <-deadline.C:
			t.Stop()
			return fmt.Errorf("not accepting connections after 10s: %w", err)
		case <-t.C:
		}
		pause = min(2*pause, 100*time.Millisecond)
	}
	// Whatever the greeting (it may be scripted to fail), say QUIT and read
	// to the end; smtp-sink then counts the session.
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(conn, "QUIT\r\n")
	io.Copy(io.Discard, conn)
	conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := s.wait(ctx, "the probe session to be counted", func() bool { return s.sess >= 1 || s.closed })
	if err == nil && s.rawSessions() < 1 {
		err = errors.New("exited after the probe session")
	}
	return err
}

// readCounters parses smtp-sink's output, in which -c updates are separated
// by "\r" and -v lines (if asked for) by "\n".
func (s *Sink) readCounters(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Split(func(data []byte, atEOF bool) (int, []byte, error) {
		if i := bytes.IndexAny(data, "\r\n"); i >= 0 {
			return i + 1, data[:i], nil
		}
		if atEOF && len(data) > 0 {
			return len(data), data, nil
		}
		return 0, nil, nil
	})
	for sc.Scan() {
		m := counterRE.FindSubmatch(sc.Bytes())
		if m == nil {
			continue
		}
		sess, _ := strconv.Atoi(string(m[1]))
		mesg, _ := strconv.Atoi(string(m[3]))
		s.update(func() { s.sess, s.mesg = sess, mesg })
	}
	io.Copy(io.Discard, r)
	s.update(func() { s.closed = true })
}

// Addr returns the address to dial, "127.0.0.1:port".
func (s *Sink) Addr() string { return s.addr }

// Counters returns smtp-sink's counters without the probe session: the
// number of sessions that have ended (by QUIT or disconnection) and of
// messages, where smtp-sink counts every final dot, rejected ones too.
// smtp-sink updates them only when a session ends, a QUIT is executed or a
// final dot is received, so wait for values with [Sink.WaitCounters].
func (s *Sink) Counters() (sessions, messages int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sess - 1, s.mesg
}

// WaitCounters waits until [Sink.Counters] reports at least the given
// sessions and messages, or returns ctx's error. It also returns an error if
// smtp-sink exits first.
func (s *Sink) WaitCounters(ctx context.Context, sessions, messages int) error {
	err := s.wait(ctx, fmt.Sprintf("%d sessions and %d messages", sessions, messages), func() bool {
		return (s.sess-1 >= sessions && s.mesg >= messages) || s.closed
	})
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sess-1 < sessions || s.mesg < messages {
		return fmt.Errorf("deliverytest: smtp-sink exited with %d sessions and %d messages", s.sess-1, s.mesg)
	}
	return nil
}

// Close kills smtp-sink and waits for it to exit. It may be called more than
// once.
func (s *Sink) Close() { s.kill() }

func (s *Sink) kill() {
	s.cmd.Process.Kill() // an error means it has exited already
	<-s.exited
}

func (s *Sink) rawSessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sess
}
