package embedded_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/outboundmail/outbound/queue"
	"github.com/outboundmail/outbound/queue/embedded"
)

// The crash test re-executes the test binary as a child that enqueues,
// claims and finishes mail in a loop, reporting each operation on stdout only
// after it returned. The parent kills it with SIGKILL at a random point,
// reopens the store and checks every acknowledged operation against it.

const (
	envCrashDir   = "EMBEDDED_CRASH_DIR"
	envCrashStart = "EMBEDDED_CRASH_START"
	envCrashRun   = "EMBEDDED_CRASH_RUN"
	crashLease    = 5 * time.Minute
	crashDefer    = 10 * time.Minute
)

var crashDests = []string{"d0.example", "d1.example", "d2.example", "d3.example"}

// crashSize is the body size of message id: from 0 to 48 KiB, so a third
// of the bodies are files and the rest inline.
func crashSize(id string) int {
	h := fnv.New32a()
	h.Write([]byte(id))
	return int(h.Sum32() % (48 << 10))
}

func crashBody(id string, n int) []byte {
	b := make([]byte, n)
	var seed [32]byte
	copy(seed[:], id)
	rand.NewChaCha8(seed).Read(b)
	return b
}

// TestCrashChild is the child process of TestCrash; it does nothing in a
// normal test run.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(envCrashDir)
	if dir == "" {
		t.Skip("helper process for TestCrash")
	}
	startSec, _ := strconv.ParseInt(os.Getenv(envCrashStart), 10, 64)
	run := os.Getenv(envCrashRun)
	s, err := embedded.Open(dir, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(3)
	}
	var mu sync.Mutex
	say := func(format string, a ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(os.Stdout, format+"\n", a...)
	}
	die := func(err error) {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(4)
	}
	say("open")
	var clock atomic.Int64 // seconds after start
	now := func() time.Time { return time.Unix(startSec+clock.Add(1), 0).UTC() }
	ctx := context.Background()
	var seq atomic.Int64
	for p := range 4 {
		go func() {
			for {
				id := fmt.Sprintf("r%s-%06d", run, seq.Add(1))
				m := &queue.Message{ID: queue.ID(id), From: "s@example.org", Arrived: now()}
				for i := range 2 {
					d := crashDests[(p+i)%len(crashDests)]
					m.Recipients = append(m.Recipients, queue.Recipient{Address: fmt.Sprintf("u%d@%s", i, d), Destination: d, NextAttempt: m.Arrived})
				}
				n := crashSize(id)
				if _, err := s.Enqueue(ctx, queue.EnqueueParams{Message: m, Body: bytes.NewReader(crashBody(id, n))}); err != nil {
					die(err)
				}
				say("E %s %d %s %s", id, n, m.Recipients[0].Address, m.Recipients[1].Address)
			}
		}()
	}
	for w := range 2 {
		go func() {
			rng := rand.New(rand.NewPCG(uint64(w), uint64(startSec)))
			for {
				claimed := now()
				ls, err := s.Claim(ctx, queue.ClaimParams{Now: claimed, Owner: "w", LeaseFor: crashLease, Limit: 4})
				if err != nil {
					die(err)
				}
				for _, l := range ls {
					for _, a := range l.Recipients {
						say("C %s %s %d", l.Message.ID, a, l.Until.UnixNano())
					}
				}
				for _, l := range ls {
					crashFinish(ctx, s, l, now(), rng, say, die)
				}
			}
		}()
	}
	select {} // until killed
}

func crashFinish(ctx context.Context, s *embedded.Store, l *queue.Lease, at time.Time, rng *rand.Rand, say func(string, ...any), die func(error)) {
	p := queue.FinishParams{Lease: l, Now: at}
	var acks []string
	for _, a := range l.Recipients {
		u := queue.RecipientUpdate{Address: a, State: queue.Deferred, NextAttempt: at.Add(crashDefer)}
		switch x := rng.IntN(10); {
		case x < 3:
			u.State = queue.Delivered
		case x < 4:
			u.State = queue.Failed
			id := fmt.Sprintf("n-%s-%s", l.Message.ID, a)
			n := crashSize(id)
			p.Notifications = append(p.Notifications, queue.EnqueueParams{
				Message: &queue.Message{ID: queue.ID(id), Arrived: at, Recipients: []queue.Recipient{{Address: "s@example.org", Destination: "example.org", NextAttempt: at}}},
				Body:    bytes.NewReader(crashBody(id, n)),
			})
			acks = append(acks, fmt.Sprintf("E %s %d s@example.org", id, n))
		}
		if u.State.Final() {
			say("f %s %s", l.Message.ID, a) // intent: the message may vanish from here on
		}
		acks = append(acks, fmt.Sprintf("F %s %s %d %d", l.Message.ID, a, u.State, u.NextAttempt.UnixNano()))
		p.Recipients = append(p.Recipients, u)
	}
	err := s.Finish(ctx, p)
	if errors.Is(err, queue.ErrLeaseLost) {
		return // the lease outlived the child's clock: another worker has it
	}
	if err != nil {
		die(err)
	}
	for _, a := range acks {
		say("%s", a)
	}
}

// crashState is what the parent knows from acknowledgements.
type crashState struct {
	size       map[string]int       // acknowledged messages and their body sizes
	rcpts      map[string][]string  // their recipients
	floor      map[string]time.Time // "id addr" → earliest allowed NextAttempt
	finalAck   map[string]bool      // "id addr" finished final, acknowledged
	finalMaybe map[string]bool      // "id addr" a final Finish was started
	verified   map[string]bool      // bodies found complete (bodies never change)
	lastTime   time.Time            // the child's latest clock reading seen
}

func (st *crashState) record(t *testing.T, line string) {
	f := strings.Fields(line)
	switch {
	case len(f) == 1 && f[0] == "open":
	case len(f) >= 4 && f[0] == "E":
		n, _ := strconv.Atoi(f[2])
		st.size[f[1]] = n
		st.rcpts[f[1]] = f[3:]
	case len(f) == 4 && f[0] == "C":
		ns, _ := strconv.ParseInt(f[3], 10, 64)
		st.raise(f[1]+" "+f[2], time.Unix(0, ns))
	case len(f) == 3 && f[0] == "f":
		st.finalMaybe[f[1]+" "+f[2]] = true
	case len(f) == 5 && f[0] == "F":
		state, _ := strconv.Atoi(f[3])
		ns, _ := strconv.ParseInt(f[4], 10, 64)
		if queue.RecipientState(state).Final() {
			st.finalAck[f[1]+" "+f[2]] = true
		} else {
			st.raise(f[1]+" "+f[2], time.Unix(0, ns))
		}
	default:
		t.Fatalf("child said %q", line)
	}
}

func (st *crashState) raise(key string, at time.Time) {
	if at.After(st.floor[key]) {
		st.floor[key] = at
	}
	if at.After(st.lastTime) {
		st.lastTime = at
	}
}

func TestCrash(t *testing.T) {
	kills := 50
	if testing.Short() {
		kills = 10
	}
	dir := t.TempDir()
	st := &crashState{size: map[string]int{}, rcpts: map[string][]string{}, floor: map[string]time.Time{}, finalAck: map[string]bool{}, finalMaybe: map[string]bool{}, verified: map[string]bool{}}
	rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	base := time.Date(2031, 3, 4, 0, 0, 0, 0, time.UTC)
	for run := range kills {
		start := base.Add(time.Duration(run) * 24 * time.Hour)
		killAfter := rng.IntN(400) - 20 // lines; negative: kill while the child opens the store
		crashRun(t, dir, run, start, killAfter, st)
		crashCheck(t, dir, st)
	}
	t.Logf("%d kills; %d messages acknowledged, %d recipient schedules checked", kills, len(st.size), len(st.floor))
}

func crashRun(t *testing.T, dir string, run int, start time.Time, killAfter int, st *crashState) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$")
	cmd.Env = append(os.Environ(), envCrashDir+"="+dir, envCrashStart+"="+strconv.FormatInt(start.Unix(), 10), envCrashRun+"="+strconv.Itoa(run))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if killAfter <= 0 {
		cmd.Process.Kill()
	}
	sc := bufio.NewScanner(out)
	lines := 0
	for sc.Scan() {
		st.record(t, sc.Text())
		if lines++; lines == killAfter {
			cmd.Process.Kill() // SIGKILL; lines already in the pipe are still acknowledgements
		}
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != -1 {
		t.Fatalf("run %d: child ended with %v, not by SIGKILL; stderr:\n%s", run, err, stderr.String())
	}
}

func crashCheck(t *testing.T, dir string, st *crashState) {
	t.Helper()
	s, err := embedded.Open(dir, nil)
	if err != nil {
		t.Fatalf("reopen after kill: %v", err)
	}
	defer s.Close()
	ctx := context.Background()
	ms, err := s.List(ctx, queue.ListParams{})
	if err != nil {
		t.Fatalf("List after kill: %v", err)
	}
	present := map[string]*queue.Message{}
	files := 0
	for _, m := range ms {
		present[string(m.ID)] = m
		if m.Size > 32<<10 {
			files++
		}
		// Every stored body is complete, acknowledged or not.
		if !st.verified[string(m.ID)] {
			checkBody(t, s, m.ID, crashBody(string(m.ID), int(m.Size)))
			st.verified[string(m.ID)] = true
		}
	}
	for id, n := range st.size {
		m := present[id]
		if m == nil {
			if !mayBeGone(st, id) {
				t.Fatalf("acknowledged message %s lost", id)
			}
			continue
		}
		if m.Size != int64(n) {
			t.Fatalf("message %s has size %d, acknowledged %d", id, m.Size, n)
		}
		for _, r := range m.Recipients {
			key := id + " " + r.Address
			if !r.State.Final() && r.NextAttempt.Before(st.floor[key]) {
				t.Fatalf("%s: NextAttempt %s moved before acknowledged %s", key, r.NextAttempt, st.floor[key])
			}
		}
	}
	// Open removed the orphans: exactly the file bodies remain.
	if got := countFiles(t, filepath.Join(dir, "bodies")); got != files {
		t.Fatalf("%d body files on disk, %d messages with file bodies", got, files)
	}
	// Claim honours the persisted schedule: nothing whose acknowledged
	// NextAttempt is later than now comes back.
	now := st.lastTime
	ls, err := s.Claim(ctx, queue.ClaimParams{Now: now, Owner: "checker", LeaseFor: time.Minute, Limit: 10000})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range ls {
		for _, a := range l.Recipients {
			key := string(l.Message.ID) + " " + a
			if st.floor[key].After(now) {
				t.Fatalf("%s claimed at %s, before its acknowledged NextAttempt %s", key, now, st.floor[key])
			}
			st.raise(key, l.Until)
		}
	}
}

// mayBeGone reports whether every recipient of id had a final Finish
// started, so its removal may have committed.
func mayBeGone(st *crashState, id string) bool {
	for _, a := range st.rcpts[id] {
		if !st.finalMaybe[id+" "+a] && !st.finalAck[id+" "+a] {
			return false
		}
	}
	return true
}

func checkBody(t *testing.T, s *embedded.Store, id queue.ID, want []byte) {
	t.Helper()
	rc, err := s.OpenBody(context.Background(), id)
	if err != nil {
		t.Fatalf("OpenBody(%s): %v", id, err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("reading body of %s: %v", id, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("body of %s: %d octets, differs from the %d enqueued", id, len(got), len(want))
	}
}

func countFiles(t *testing.T, dir string) int {
	n := 0
	err := filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}
