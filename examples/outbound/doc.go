// Command outbound is a small mail transfer agent for outgoing mail built on
// the outbound library: it queues messages durably, delivers them over SMTP
// (directly to MX hosts, or through a smarthost), retries temporary
// failures on a schedule and tells senders about permanent ones. It also
// serves as a drop-in sendmail for programs that send mail that way.
//
// Try it first, with nothing to set up:
//
//	go run ./examples/outbound demo
//
// The demo starts an SMTP server on loopback that greylists every first
// attempt and knows no "nobody@example.net", queues a few messages in a
// temporary spool, and runs the queue on a clock ten times faster than
// real time (the queue never retries sooner than a minute after a
// temporary failure; the demo keeps that rule and speeds up the clock
// instead). It shows the progress, the failure notice (DSN) the bounce
// produced, and a summary.
//
// # Usage
//
//	outbound [global flags] command [flags] [arguments]
//
//	send [-f sender] [-t] [-i|-oi] [--queue-only] [rcpt ...]
//	    Read a message from stdin, queue it, print its ID, and try it once
//	    (unless --queue-only; other queued mail waits for run). -t adds the To, Cc and Bcc addresses to the
//	    recipients; Bcc fields are always removed. Without -i, a line
//	    holding a single "." ends the input. Date, Message-ID and From are
//	    added when missing. Exit status 0 means queued; anything else means
//	    nothing was queued.
//	run [--once | --drain]
//	    Deliver the queue until SIGINT or SIGTERM (attempts in flight are
//	    allowed to finish), for one pass (--once), or until the queue is
//	    empty (--drain). One log line per recipient outcome on stderr.
//	queue [--json]
//	    List the queue like mailq: ID, size, age, sender, and per recipient
//	    its state, attempts, last reply and next attempt. --json prints one
//	    array of {id, sender, size, arrived, recipients: [{address, state,
//	    attempts, next_attempt, last_attempt, last_reply}]}.
//	show [--json] ID
//	    One message: envelope, recipients' state, then its content.
//	hold ID..., release ID..., delete ID..., retry ID... | --all
//	    Freeze messages, return them to the queue, remove them without a
//	    notice, or make them due now (the operator's override of the backoff).
//	schedule
//	    The retry timeline of the current settings; warns about settings
//	    that break RFC 5321's advice, such as giving up before 4 days.
//	demo [--speed N]
//	    The demonstration above.
//
// Invoked through a link named sendmail, outbound behaves as "outbound
// send" (and accepts sendmail's -bp to list the queue, -q to run it once,
// -odq to queue only, -F, -r, the DSN options -N, -R and -V, values glued
// to their letter as in "-fcron@example.org", and ignores -oem, -B, -v);
// named mailq, it behaves as "outbound queue".
//
// # Settings
//
// Global flags may come before or after the command, and each is also read
// from the environment: OUTBOUND_ and the flag's name in capitals with
// underscores (--min-backoff 20m is OUTBOUND_MIN_BACKOFF=20m). Durations are
// Go durations with an optional number of days in front ("90s", "4h",
// "5d", "4d12h"). A flag wins over the environment.
//
//	--spool DIR          the embedded queue (default $XDG_STATE_HOME/outbound/spool,
//	                     else ~/.local/state/outbound/spool)
//	--store URL          a PostgreSQL queue (postgres://…) shared by many processes
//	--relay HOST:PORT    send through this smarthost instead of MX delivery
//	--auth-user USER     SMTP AUTH to the relay; the password comes from
//	                     $OUTBOUND_AUTH_PASSWORD or the file named by
//	                     $OUTBOUND_AUTH_PASSWORD_FILE, never from a flag
//	--tls POLICY         disabled, opportunistic or required (default:
//	                     opportunistic for MX hosts, required for a relay)
//	--helo NAME          EHLO name and the host name in notifications
//	--resolver HOST:PORT DNS server for MX lookups; --mx-port N: port of MX hosts
//	--min-backoff, --max-backoff, --max-lifetime, --delay-warning
//	                     the retry schedule (5m, 1h, 5d, 4h)
//	--lease-for, --startup-ramp, --concurrency
//	                     crash wait, restart ramp, attempts in flight
//	--log-level, --log-format
//	                     debug|info|warn|error, text|json
//
// # One spool, several processes
//
// The embedded spool can be open in one process at a time. While "outbound
// run" holds it, the other commands reach the running queue through a
// control socket in the spool directory (control.sock, HTTP on a Unix
// socket, reachable only by the spool's owner): send hands the message to
// the running queue, which attempts it at once. A PostgreSQL store has no
// such limit.
//
// # Exit status
//
// As sendmail's sysexits: 0 success; 64 usage; 65 message refused (nothing
// queued); 66 no message on stdin; 69 the demo could not start; 75 the queue
// could not be opened or written (try again later); 78 invalid settings;
// 1 any other failure (such as an unknown message ID).
package main
