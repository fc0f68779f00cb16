package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/outboundmail/outbound/backoff"
)

// envPrefix starts the environment variable of every global flag:
// --min-backoff is also OUTBOUND_MIN_BACKOFF.
const envPrefix = "OUTBOUND_"

// Environment variables that are not flags: the relay password never appears
// on a command line, where other users could read it (ps, /proc).
const (
	envPassword     = "OUTBOUND_AUTH_PASSWORD"
	envPasswordFile = "OUTBOUND_AUTH_PASSWORD_FILE"
)

// globals holds the settings every command shares.
type globals struct {
	Spool        string        // embedded store directory
	Store        string        // "postgres://…" selects the PostgreSQL store
	StoreSchema  string        // PostgreSQL schema; "" means the store's default
	Relay        string        // smarthost host:port; "" means MX delivery
	AuthUser     string        // AUTH user for the relay
	TLS          string        // disabled, opportunistic, required; "" means the library default
	HELO         string        // EHLO name and the name in notifications
	Resolver     string        // DNS server host:port; "" means the system's
	MXPort       int           // port of MX hosts
	MinBackoff   time.Duration // backoff.Schedule fields
	MaxBackoff   time.Duration
	MaxLifetime  time.Duration
	DelayWarning time.Duration
	LeaseFor     time.Duration // 0 means max(30m, MinBackoff)
	StartupRamp  time.Duration
	Concurrency  int
	LogLevel     string
	LogFormat    string
}

// defaultGlobals returns the defaults, with the spool in the user's state
// directory as getenv sees it.
func defaultGlobals(getenv func(string) string) globals {
	return globals{
		Spool:        defaultSpool(getenv),
		MXPort:       25,
		MinBackoff:   backoff.DefaultMinBackoff,
		MaxBackoff:   backoff.DefaultMaxBackoff,
		MaxLifetime:  backoff.DefaultMaxLifetime,
		DelayWarning: backoff.DefaultDelayWarning,
		StartupRamp:  30 * time.Second,
		Concurrency:  16,
		LogLevel:     "",
		LogFormat:    "text",
	}
}

// defaultSpool is a per-user directory for queue state: $XDG_STATE_HOME
// (default ~/.local/state) on Unix systems, the user configuration directory
// elsewhere. Not the cache directory: cleaners may empty it, and a queue is
// mail that has not been delivered yet.
func defaultSpool(getenv func(string) string) string {
	if d := getenv("XDG_STATE_HOME"); filepath.IsAbs(d) {
		return filepath.Join(d, "outbound", "spool")
	}
	switch runtime.GOOS {
	case "windows", "darwin", "ios", "plan9":
		if d, err := os.UserConfigDir(); err == nil {
			return filepath.Join(d, "outbound", "spool")
		}
	default:
		if h := getenv("HOME"); h != "" {
			return filepath.Join(h, ".local", "state", "outbound", "spool")
		}
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("outbound-%d", os.Getuid()), "spool")
}

// register adds the global flags to fs, bound to g.
func (g *globals) register(fs *flag.FlagSet) {
	fs.StringVar(&g.Spool, "spool", g.Spool, "embedded queue `directory`")
	fs.StringVar(&g.Store, "store", g.Store, "PostgreSQL store `URL` (postgres://…) instead of the spool")
	fs.StringVar(&g.StoreSchema, "store-schema", g.StoreSchema, "PostgreSQL `schema` holding the queue (default \"outbound\"); several queues can share a database")
	fs.StringVar(&g.Relay, "relay", g.Relay, "send everything through this smarthost `host:port` instead of MX delivery")
	fs.StringVar(&g.AuthUser, "auth-user", g.AuthUser, "SMTP AUTH `user` for the relay; password from $"+envPassword+" or the file named by $"+envPasswordFile)
	fs.StringVar(&g.TLS, "tls", g.TLS, "STARTTLS `policy`: disabled, opportunistic or required (default: opportunistic for MX, required for a relay)")
	fs.StringVar(&g.HELO, "helo", g.HELO, "`name` sent with EHLO and used in notifications (default: the host name)")
	fs.StringVar(&g.Resolver, "resolver", g.Resolver, "DNS server `host:port` for MX lookups (default: the system's)")
	fs.IntVar(&g.MXPort, "mx-port", g.MXPort, "TCP `port` of MX hosts")
	durationFlag(fs, &g.MinBackoff, "min-backoff", g.MinBackoff, "first retry `delay` after a temporary failure")
	durationFlag(fs, &g.MaxBackoff, "max-backoff", g.MaxBackoff, "longest `delay` between retries")
	durationFlag(fs, &g.MaxLifetime, "max-lifetime", g.MaxLifetime, "give up and bounce after this `age`")
	durationFlag(fs, &g.DelayWarning, "delay-warning", g.DelayWarning, "tell the sender about a delay at this `age` (negative: never)")
	durationFlag(fs, &g.LeaseFor, "lease-for", g.LeaseFor, "how long one attempt may hold its messages: the `wait` after a crash mid-attempt (default: max(30m, min-backoff))")
	durationFlag(fs, &g.StartupRamp, "startup-ramp", g.StartupRamp, "grow parallel attempts from 1 to --concurrency over this `period` after start (negative: no ramp)")
	fs.IntVar(&g.Concurrency, "concurrency", g.Concurrency, "maximum delivery attempts in flight")
	fs.StringVar(&g.LogLevel, "log-level", g.LogLevel, "`level`: debug, info, warn or error (default: info for run, warn otherwise)")
	fs.StringVar(&g.LogFormat, "log-format", g.LogFormat, "`format` of log lines on stderr: text or json")
}

// durationValue is a flag.Value for Go durations that also accepts days,
// the unit queue lifetimes are thought in: "5d", "4d12h", "-1h".
type durationValue time.Duration

func durationFlag(fs *flag.FlagSet, p *time.Duration, name string, value time.Duration, usage string) {
	*p = value
	fs.Var((*durationValue)(p), name, usage)
}

func (d *durationValue) String() string { return fmtOffset(time.Duration(*d)) }

func (d *durationValue) Set(s string) error {
	v, err := parseDuration(s)
	if err != nil {
		return err
	}
	*d = durationValue(v)
	return nil
}

// parseDuration parses Go duration syntax with an optional leading count
// of days.
func parseDuration(s string) (time.Duration, error) {
	orig := s
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	if s == "" {
		return 0, fmt.Errorf("invalid duration %q: want e.g. 90s, 20m, 4h or 5d", orig)
	}
	var days time.Duration
	if i := strings.IndexByte(s, 'd'); i > 0 {
		n, err := strconv.ParseUint(s[:i], 10, 16)
		if err != nil {
			return 0, fmt.Errorf("invalid duration %q: want e.g. 90s, 20m, 4h or 5d", orig)
		}
		days = time.Duration(n) * 24 * time.Hour
		s = s[i+1:]
	}
	var rest time.Duration
	if s != "" {
		var err error
		if rest, err = time.ParseDuration(s); err != nil || rest < 0 {
			return 0, fmt.Errorf("invalid duration %q: want e.g. 90s, 20m, 4h or 5d", orig)
		}
	}
	d := days + rest
	if neg {
		d = -d
	}
	return d, nil
}

// EnvError reports an environment variable whose value a flag refuses.
type EnvError struct {
	Name  string
	Value string
	Err   error
}

// Error returns e.g. `OUTBOUND_MIN_BACKOFF="soon": time: invalid duration`.
func (e *EnvError) Error() string {
	return fmt.Sprintf("%s=%q: %v", e.Name, e.Value, e.Err)
}

// Unwrap returns the flag's error.
func (e *EnvError) Unwrap() error { return e.Err }

// envName is the environment variable of the flag name: "min-backoff" →
// "OUTBOUND_MIN_BACKOFF".
func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// applyEnv sets every flag of fs that has an environment variable from it,
// so that a flag given on the command line (parsed afterwards) wins.
func applyEnv(fs *flag.FlagSet, getenv func(string) string) error {
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		name := envName(f.Name)
		v := getenv(name)
		if v == "" {
			return
		}
		if err := f.Value.Set(v); err != nil {
			errs = append(errs, &EnvError{Name: name, Value: v, Err: err})
		}
	})
	return errors.Join(errs...)
}

// password returns the relay password from the environment or from the
// file it names. A file wins over a variable only when the variable is
// empty; a file's trailing newline is not part of the password.
func password(getenv func(string) string) (string, error) {
	if p := getenv(envPassword); p != "" {
		return p, nil
	}
	name := getenv(envPasswordFile)
	if name == "" {
		return "", fmt.Errorf("--auth-user needs a password: set %s, or %s to a file holding it", envPassword, envPasswordFile)
	}
	b, err := os.ReadFile(name)
	if err != nil {
		return "", fmt.Errorf("%s: %w", envPasswordFile, err)
	}
	p := strings.TrimRight(string(b), "\r\n")
	if p == "" {
		return "", fmt.Errorf("%s: %s is empty", envPasswordFile, name)
	}
	return p, nil
}
