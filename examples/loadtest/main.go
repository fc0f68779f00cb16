// Command loadtest measures outbound's queue on one machine, for comparison
// with Postfix (compare.sh runs both, alternately, against the same Postfix
// smtp-sink).
//
//	loadtest send -addr 127.0.0.1:2525 [-store embedded|postgres] [-n 10000] [-size 2048]
//	loadtest scale -addr 127.0.0.1:2525 [-queued 1000000] [-due 100]
//	loadtest tree -pid PID
//
// send pushes -n messages through queue.Queue to the SMTP server at -addr
// (relayed, no TLS) in three phases, each on a fresh store: enqueue alone
// (durable Enqueue from -producers goroutines, nothing delivering), drain
// (Run delivers what enqueue queued: the queue → relay rate), and e2e
// (Run delivers while the producers enqueue: the end-to-end rate, and the
// latency from Enqueue to the server's acceptance). Each phase prints a
// line "RESULT phase=… k=v …" with its rates, p50/p99 latency, CPU seconds
// and peak RSS of this process (and the PostgreSQL server's CPU seconds with
// -store postgres).
//
// scale fills an embedded store with -queued deferred messages (from
// -producers goroutines calling Store.Enqueue, whose writes share group
// commits; about 2 minutes for a million on 2 cores), then measures, in
// fresh processes as after a restart and with the database evicted from the
// page cache, the time from exec to the first delivery, peak RSS, and the
// cost of a run (Queue.RunOnce, with the time spent in Claim and Finish)
// when -due messages are due, against the same run on a store holding only
// the due messages. -dir with -reuse keeps the seeded store for later runs.
//
// tree samples a process and its descendants (a Postfix master, say) until
// it gets SIGTERM or SIGINT, then prints their CPU seconds over the sampling
// and their peak total proportional set size (PSS).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadtest:", err)
		os.Exit(1)
	}
}

func printUsage(w io.Writer) {
	fmt.Fprint(w, `usage:
  loadtest send -addr HOST:PORT [flags]   throughput and latency through the queue
  loadtest scale -addr HOST:PORT [flags]  a million queued: memory, restart, cost of a run
  loadtest tree -pid PID                  CPU and memory of a process tree until SIGTERM
Run "loadtest COMMAND -h" for the flags.
`)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		printUsage(stderr)
		return fmt.Errorf("no command")
	}
	fs := flag.NewFlagSet("loadtest "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	switch args[0] {
	case "send":
		var c sendConfig
		c.flags(fs)
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		return runSend(ctx, &c, stdout)
	case "scale":
		var c scaleConfig
		c.flags(fs)
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		return runScale(ctx, &c, stdout, stderr)
	case scaleChildCommand:
		var c scaleConfig
		c.flags(fs)
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		return runScaleChild(ctx, &c, stdout)
	case "tree":
		pid := fs.Int("pid", 0, "root `process` of the tree")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if *pid <= 0 {
			return fmt.Errorf("-pid is required")
		}
		return runTree(ctx, *pid, stdout)
	case "-h", "-help", "--help", "help":
		printUsage(stdout)
		return nil
	default:
		printUsage(stderr)
		return fmt.Errorf("unknown command %q", args[0])
	}
}
