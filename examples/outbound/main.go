package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/outboundmail/outbound/queue"
)

// Exit statuses, from sendmail's sysexits.h so that programs that call
// sendmail understand them: 75 means "queue it and try again later".
const (
	exitOK          = 0
	exitFailure     = 1  // a command failed (message not found, …)
	exitUsage       = 64 // EX_USAGE: bad flags or arguments
	exitDataErr     = 65 // EX_DATAERR: the message was refused, nothing was queued
	exitNoInput     = 66 // EX_NOINPUT: no message on standard input
	exitUnavailable = 69 // EX_UNAVAILABLE: the demo's server could not start
	exitTempFail    = 75 // EX_TEMPFAIL: the queue could not be opened or written
	exitConfig      = 78 // EX_CONFIG: flags or environment make no sense together
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	a := &app{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}
	code := a.main(ctx, filepath.Base(os.Args[0]), os.Args[1:])
	stop()
	os.Exit(code)
}

// usageError is a command-line mistake: the message is printed with a hint
// and the exit status is exitUsage.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// exitError carries a specific exit status with its message.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// command is one subcommand: its own flags are added to fs next to the
// global ones, and run is called with the remaining arguments.
type command struct {
	name  string
	args  string // synopsis of the arguments after the flags
	short string
	flags func(fs *flag.FlagSet) func(ctx context.Context, a *app, args []string) error
}

func commands() []command {
	return []command{
		{"send", "[-f sender] [-t] [-i] [--queue-only] [rcpt ...]", "queue a message read from stdin (sendmail compatible), then try it once", sendFlags},
		{"run", "[--once | --drain]", "deliver the queue until SIGINT/SIGTERM", runFlags},
		{"queue", "[--json]", "list the queue (like mailq)", queueFlags},
		{"show", "ID", "show one message: envelope, recipients' state, content", showFlags},
		{"hold", "ID ...", "freeze messages until release", adminFlags("hold")},
		{"release", "ID ...", "return held messages to the queue, due now", adminFlags("release")},
		{"delete", "ID ...", "remove messages without notifying their senders", adminFlags("delete")},
		{"retry", "ID ... | --all", "make messages due now (operator override of the backoff)", retryFlags},
		{"schedule", "", "print the retry timeline of the current settings", scheduleFlags},
		{"demo", "", "self-contained demonstration on loopback, no setup", demoFlags},
	}
}

// main runs the program as invoked under name with args and returns the
// exit status.
func (a *app) main(ctx context.Context, name string, args []string) int {
	a.g = defaultGlobals(a.getenv)
	a.defaultLogLevel = "warn"
	err := a.dispatch(ctx, name, args)
	return a.exitCode(err)
}

func (a *app) exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	fmt.Fprintf(a.stderr, "outbound: %v\n", err)
	var ue *usageError
	var ee *exitError
	var be *StoreBusyError
	var ime *queue.InvalidMessageError
	switch {
	case errors.As(err, &ue):
		fmt.Fprintln(a.stderr, "run 'outbound help' for usage")
		return exitUsage
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, &ime):
		return exitDataErr
	case errors.As(err, &be):
		return exitTempFail
	}
	return exitFailure
}

func (a *app) dispatch(ctx context.Context, name string, args []string) error {
	// Invoked through a link named sendmail or mailq, behave as them.
	switch strings.TrimSuffix(name, ".exe") {
	case "sendmail":
		return a.runCommand(ctx, findCommand("send"), args, true)
	case "mailq":
		return a.runCommand(ctx, findCommand("queue"), args, true)
	}
	fs := flag.NewFlagSet("outbound", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	a.g.register(fs)
	if err := applyEnv(fs, a.getenv); err != nil {
		return &exitError{code: exitConfig, err: err}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			a.usage(fs)
			return err
		}
		return usagef("%v", err)
	}
	if fs.NArg() == 0 {
		a.usage(fs)
		return usagef("no command")
	}
	name, rest := fs.Arg(0), fs.Args()[1:]
	if name == "help" {
		if len(rest) > 0 && findCommand(rest[0]).name != "" {
			return a.runCommand(ctx, findCommand(rest[0]), []string{"-h"}, false)
		}
		fs.SetOutput(a.stdout)
		a.usage(fs)
		return nil
	}
	c := findCommand(name)
	if c.name == "" {
		return usagef("unknown command %q", name)
	}
	return a.runCommand(ctx, c, rest, false)
}

func findCommand(name string) command {
	for _, c := range commands() {
		if c.name == name {
			return c
		}
	}
	return command{}
}

// runCommand parses the command's flags (its own and the global ones, so
// that both `outbound --relay x send` and `outbound send --relay x` work)
// and runs it. withEnv applies the environment first, for the sendmail and
// mailq entry points that skip dispatch's global parse.
func (a *app) runCommand(ctx context.Context, c command, args []string, withEnv bool) error {
	fs := flag.NewFlagSet("outbound "+c.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	a.g.register(fs)
	if withEnv {
		if err := applyEnv(fs, a.getenv); err != nil {
			return &exitError{code: exitConfig, err: err}
		}
	}
	run := c.flags(fs)
	if c.name == "send" {
		args = sendmailArgs(args)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(a.stdout)
			fmt.Fprintf(a.stdout, "usage: outbound %s %s\n\n%s.\n\nflags:\n", c.name, c.args, c.short)
			fs.PrintDefaults()
			return err
		}
		return usagef("%s: %v", c.name, err)
	}
	return run(ctx, a, fs.Args())
}

func (a *app) usage(fs *flag.FlagSet) {
	w := a.stderr
	if fs.Output() == a.stdout {
		w = a.stdout
	}
	fmt.Fprint(w, "usage: outbound [global flags] command [flags] [arguments]\n\ncommands:\n")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.short)
	}
	fmt.Fprintf(w, "\nglobal flags (each also from $%sNAME, e.g. --min-backoff from %s):\n", envPrefix, envName("min-backoff"))
	fs.SetOutput(w)
	fs.PrintDefaults()
	fmt.Fprintln(w, "\nrun 'outbound help COMMAND' for a command's flags.")
}
