package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Linux process accounting: CPU from getrusage and /proc/PID/stat, memory
// from /proc/PID/status and smaps_rollup. Everything degrades to zero on a
// system without /proc rather than failing the run.

// clockTicks is USER_HZ, the unit of the CPU fields of /proc/PID/stat. It is
// 100 on every Linux architecture Go supports.
const clockTicks = 100

// selfCPU returns the user and system CPU time this process has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// resetPeakRSS collects garbage, returns free memory to the system and
// resets VmHWM (writing 5 to clear_refs, Linux 4.0), so that a later
// peakRSS measures one phase, not the ones before it.
func resetPeakRSS() {
	runtime.GC()
	debug.FreeOSMemory()
	_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
}

// memInfo is the memory of one process, in octets.
type memInfo struct {
	Peak int64 // VmHWM: peak resident set since start or resetPeakRSS
	RSS  int64 // VmRSS now
	Anon int64 // RssAnon: heap, stacks (what the process itself holds)
	File int64 // RssFile: mapped files, such as the bbolt database (reclaimable)
}

// selfMem returns this process's memInfo.
func selfMem() memInfo { return procMem("self") }

func procMem(pid string) memInfo {
	b, err := os.ReadFile(filepath.Join("/proc", pid, "status"))
	if err != nil {
		return memInfo{}
	}
	return memInfo{
		Peak: statusField(b, "VmHWM:"),
		RSS:  statusField(b, "VmRSS:"),
		Anon: statusField(b, "RssAnon:"),
		File: statusField(b, "RssFile:"),
	}
}

// statusField returns a "NAME:   123 kB" field of /proc/PID/status in octets.
func statusField(status []byte, name string) int64 {
	for line := range strings.Lines(string(status)) {
		if rest, ok := strings.CutPrefix(line, name); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				return 0
			}
			return kb << 10
		}
	}
	return 0
}

// procStat is the part of /proc/PID/stat the tree accounting needs.
type procStat struct {
	pid, ppid int
	cpu       time.Duration // utime + stime
	childCPU  time.Duration // cutime + cstime: children it has reaped
}

// readStat parses /proc/PID/stat. The command name (field 2) is in
// parentheses and may contain spaces and parentheses: fields are counted
// from the last ')'.
func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	return parseStat(b)
}

func parseStat(b []byte) (procStat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("stat: no command name")
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(b[:bytes.IndexByte(b, '(')])))
	if err != nil {
		return procStat{}, fmt.Errorf("stat: pid: %w", err)
	}
	// After ')': state(3) ppid(4) … utime(14) stime(15) cutime(16) cstime(17).
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 15 {
		return procStat{}, fmt.Errorf("stat: %d fields", len(f))
	}
	n := make([]int64, 5)
	for k, idx := range []int{1, 11, 12, 13, 14} {
		if n[k], err = strconv.ParseInt(f[idx], 10, 64); err != nil {
			return procStat{}, fmt.Errorf("stat: field %d: %w", idx+3, err)
		}
	}
	tick := time.Second / clockTicks
	return procStat{
		pid:      pid,
		ppid:     int(n[0]),
		cpu:      time.Duration(n[1]+n[2]) * tick,
		childCPU: time.Duration(n[3]+n[4]) * tick,
	}, nil
}

// treeUsage is the resources used by a process and all its descendants.
type treeUsage struct {
	CPU   time.Duration // CPU of live processes, plus what the root reaped
	PSS   int64         // sum of proportional set sizes (shared pages split)
	Procs int
}

// sampleTree measures root and its descendants. CPU counts every live
// process's own time, plus the children's time the root has reaped (a
// master daemon such as Postfix's or PostgreSQL's reaps its workers); time of
// intermediate processes that died is lost, which is why the root should be
// the long-lived parent. With withPSS it also reads smaps_rollup, which is
// slower.
func sampleTree(root int, withPSS bool) treeUsage {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return treeUsage{}
	}
	stats := make(map[int]procStat)
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, err := readStat(pid); err == nil {
			stats[pid] = st
		}
	}
	var u treeUsage
	for pid, st := range stats {
		if !descends(stats, pid, root) {
			continue
		}
		u.Procs++
		u.CPU += st.cpu
		if pid == root {
			u.CPU += st.childCPU
		}
		if withPSS {
			u.PSS += pss(pid)
		}
	}
	return u
}

func descends(stats map[int]procStat, pid, root int) bool {
	for range 64 {
		if pid == root {
			return true
		}
		st, ok := stats[pid]
		if !ok || st.ppid <= 1 {
			return false
		}
		pid = st.ppid
	}
	return false
}

// pss returns the proportional set size of pid in octets, or 0.
func pss(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0
	}
	return statusField(b, "Pss:")
}

// mb formats octets as megabytes with one decimal.
func mb(n int64) string { return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) }

// runTree samples the tree rooted at pid until ctx ends (SIGTERM), then
// prints "RESULT tree_cpu_s=… tree_peak_pss_mb=… tree_procs=…": the CPU the
// tree used during the sampling and the largest total PSS seen.
func runTree(ctx context.Context, pid int, out io.Writer) error {
	first := sampleTree(pid, true)
	if first.Procs == 0 {
		return fmt.Errorf("no process %d", pid)
	}
	peak, procs := first.PSS, first.Procs
	last := first
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			u := sampleTree(pid, true)
			if u.Procs == 0 { // the root is gone: keep the last sample
				u = last
			}
			r := newResult()
			r.set("tree_cpu_s", fmt.Sprintf("%.2f", (u.CPU-first.CPU).Seconds()))
			r.set("tree_peak_pss_mb", mb(max(peak, u.PSS)))
			r.set("tree_procs", max(procs, u.Procs))
			r.write(out)
			return nil
		case <-t.C:
			u := sampleTree(pid, true)
			if u.Procs > 0 {
				last = u
				peak, procs = max(peak, u.PSS), max(procs, u.Procs)
			}
		}
	}
}
