#!/usr/bin/env bash
# compare.sh: outbound's queue side by side with a loopback Postfix and with
# the raw SMTP ceiling, on this machine, all relaying into one Postfix
# smtp-sink. Run from the repository root, as root (smtp-sink -u nobody, and
# a private Postfix instance):
#
#   examples/loadtest/compare.sh            # 3 rounds of 10,000 × 2 KB
#   N=2000 ROUNDS=1 examples/loadtest/compare.sh   # a quick check
#
# Each round runs, one after the other (never two at once):
#   ceiling     smtp-source -d (reused sessions) straight into smtp-sink
#   outbound    loadtest send -store embedded: enqueue alone, drain, e2e
#   postfix     smtp-source into a private Postfix (own config, queue and
#               port; chroot off) relaying to smtp-sink; timed until
#               smtp-sink has counted N messages (smtp-sink -M N)
#   outbound    loadtest send -store postgres (PostgreSQL at $PG)
#   postfix     pure enqueue: the same Postfix with every message put on
#               hold at DATA, so nothing is delivered; timed by smtp-source
# and prints the median of each figure over the rounds, and the ratios.
#
# Settings (environment): N, SIZE (payload octets, smtp-source -l), ROUNDS,
# SESSIONS (smtp-source sessions = outbound producers), WORKERS and CONNS
# (outbound; CONNS defaults to 20, Postfix's default_destination_concurrency_limit,
# so both send over as many connections to the sink), PORT (smtp-sink; Postfix listens on PORT+1), PG, STORES
# ("embedded postgres"), KEEP=1 keeps the work directory, PROFILE=1 adds
# one untimed end-to-end run per store under the CPU profiler, prints its
# top entries and keeps the work directory (with the .pprof files).
set -euo pipefail

N=${N:-10000}
SIZE=${SIZE:-2048}
ROUNDS=${ROUNDS:-3}
SESSIONS=${SESSIONS:-16}
WORKERS=${WORKERS:-40}
CONNS=${CONNS:-20}
PORT=${PORT:-26500}
PFX_PORT=$((PORT + 1))
PG=${PG:-postgres://postgres@127.0.0.1:5432/test?pool_max_conns=16&sslmode=disable}
STORES=${STORES:-embedded postgres}
STEP_TIMEOUT=${STEP_TIMEOUT:-300} # seconds, for any one step
FROM=a@example.org
TO=b@example.com

cd "$(dirname "$0")/../.."
WORK=$(mktemp -d /tmp/loadtest-compare.XXXXXX)
chmod 755 "$WORK" # Postfix daemons (user postfix) reach their queue and data directories through it
VALUES=$WORK/values
SINK_PID=
TREE_PID=
PFX_DIR=

log() { printf '%s %s\n' "$(date +%T)" "$*" >&2; }

cleanup() {
	set +e
	[ -n "$TREE_PID" ] && kill "$TREE_PID" 2>/dev/null && wait "$TREE_PID" 2>/dev/null
	[ -n "$PFX_DIR" ] && postfix -c "$PFX_DIR/etc" stop >/dev/null 2>&1
	[ -n "$SINK_PID" ] && kill "$SINK_PID" 2>/dev/null && wait "$SINK_PID" 2>/dev/null
	if [ -n "${KEEP:-}" ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for cmd in smtp-sink smtp-source postfix postconf ss; do
	command -v "$cmd" >/dev/null || { echo "compare.sh: $cmd not found (apt-get install postfix)" >&2; exit 1; }
done
for p in "$PORT" "$PFX_PORT"; do
	if [ -n "$(ss -ltnH "sport = :$p")" ]; then echo "compare.sh: port $p is in use; set PORT" >&2; exit 1; fi
done
SINK_USER=()
[ "$(id -u)" = 0 ] && SINK_USER=(-u nobody)

go build -o "$WORK/loadtest" ./examples/loadtest
LT=$WORK/loadtest

now() { date +%s%N; }
# per_s COUNT START_NS END_NS
per_s() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN { printf "%.1f", n / ((b - a) / 1e9) }'; }
# record KEY VALUE: one measurement of one round
record() { echo "$1 $2" >>"$VALUES"; }
# field KEY < RESULT line
field() { tr ' ' '\n' | sed -n "s/^$1=//p"; }
median() {
	grep "^$1 " "$VALUES" 2>/dev/null | awk '{print $2}' | sort -g |
		awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
# percentile P < numbers, one a line (nearest rank)
percentile() { sort -g | awk -v p="$1" '{ v[NR] = $1 } END { r = int(p / 100 * NR + 0.999999); if (r < 1) r = 1; print v[r] }'; }

wait_listen() { # PORT
	for _ in $(seq 200); do
		[ -n "$(ss -ltnH "sport = :$1")" ] && return 0
		sleep 0.05
	done
	echo "compare.sh: nothing listens on $1" >&2
	return 1
}

start_sink() { # [smtp-sink flags]
	smtp-sink "${SINK_USER[@]}" "$@" "127.0.0.1:$PORT" 1024 >/dev/null &
	SINK_PID=$!
	wait_listen "$PORT"
}

stop_sink() {
	kill "$SINK_PID" 2>/dev/null || true
	wait "$SINK_PID" 2>/dev/null || true
	SINK_PID=
}

# wait_sink: wait until smtp-sink -M N exits (it has counted N messages).
wait_sink() {
	local deadline=$(($(date +%s) + STEP_TIMEOUT))
	while kill -0 "$SINK_PID" 2>/dev/null; do
		if [ "$(date +%s)" -gt "$deadline" ]; then
			echo "compare.sh: smtp-sink did not count $N messages in ${STEP_TIMEOUT}s" >&2
			return 1
		fi
		sleep 0.02
	done
	wait "$SINK_PID" 2>/dev/null || true
	SINK_PID=
}

source_to() { # PORT: inject N messages with smtp-source over reused sessions
	timeout "$STEP_TIMEOUT" smtp-source -m "$N" -s "$SESSIONS" -l "$SIZE" -d -f "$FROM" -t "$TO" "127.0.0.1:$1"
}

# pfx_start MODE: a private Postfix instance (relay | hold) on PFX_PORT.
pfx_start() {
	PFX_DIR=$WORK/postfix-$1
	rm -rf "$PFX_DIR"
	mkdir -p "$PFX_DIR/etc" "$PFX_DIR/queue" "$PFX_DIR/data"
	chown postfix "$PFX_DIR/data" 2>/dev/null || true
	cat >"$PFX_DIR/etc/main.cf" <<-EOF
		compatibility_level = 3.6
		queue_directory = $PFX_DIR/queue
		data_directory = $PFX_DIR/data
		maillog_file = $PFX_DIR/postfix.log
		maillog_file_prefixes = $PFX_DIR
		syslog_name = postfix-loadtest
		myhostname = postfix-loadtest.localdomain
		inet_interfaces = 127.0.0.1
		inet_protocols = ipv4
		mydestination =
		mynetworks = 127.0.0.0/8
		smtpd_relay_restrictions = permit_mynetworks reject
		relayhost = [127.0.0.1]:$PORT
		default_transport = smtp
		relay_transport = relay
		alias_maps =
		alias_database =
		local_recipient_maps =
		biff = no
	EOF
	if [ "$1" = hold ]; then
		# Pure enqueue: cleanup writes each message to the hold queue (the same
		# fsynced queue file as incoming), so the queue manager never sees it.
		echo "smtpd_data_restrictions = check_client_access static:HOLD" >>"$PFX_DIR/etc/main.cf"
	fi
	awk -v port="$PFX_PORT" '/^smtp +inet/ { print "127.0.0.1:" port " inet n - n - - smtpd"; next } { print }' \
		/etc/postfix/master.cf >"$PFX_DIR/etc/master.cf"
	postconf -c "$PFX_DIR/etc" -F '*/*/chroot = n'
	postfix -c "$PFX_DIR/etc" start >/dev/null 2>&1 || { tail "$PFX_DIR/postfix.log" >&2; return 1; }
	wait_listen "$PFX_PORT"
	"$LT" tree -pid "$(tr -d ' ' <"$PFX_DIR/queue/pid/master.pid")" >"$PFX_DIR/tree" &
	TREE_PID=$!
}

pfx_stop() { # MODE: stop the tree sampler and Postfix, record CPU and memory
	kill "$TREE_PID"
	wait "$TREE_PID" || true
	TREE_PID=
	local r
	r=$(grep '^RESULT' "$PFX_DIR/tree")
	record "postfix-$1.cpu_s" "$(field tree_cpu_s <<<"$r")"
	record "postfix-$1.mem_mb" "$(field tree_peak_pss_mb <<<"$r")"
	postfix -c "$PFX_DIR/etc" stop >/dev/null 2>&1
	PFX_DIR=
}

run_ceiling() {
	start_sink
	local t0 t1
	t0=$(now)
	source_to "$PORT"
	t1=$(now)
	stop_sink
	record ceiling.rate "$(per_s "$N" "$t0" "$t1")"
	log "ceiling: $(per_s "$N" "$t0" "$t1") msg/s"
}

run_postfix_e2e() {
	pfx_start relay
	start_sink -M "$N"
	local t0 t1 t2
	t0=$(now)
	source_to "$PFX_PORT"
	t1=$(now)
	wait_sink
	t2=$(now)
	local sent
	sent=$(grep -c 'status=sent' "$PFX_DIR/postfix.log" || true)
	grep 'status=sent' "$PFX_DIR/postfix.log" | sed -n 's/.* delay=\([0-9.]*\),.*/\1/p' >"$WORK/pfx-delays"
	record postfix.e2e "$(per_s "$N" "$t0" "$t2")"
	record postfix.inject "$(per_s "$N" "$t0" "$t1")"
	record postfix.p50_ms "$(percentile 50 <"$WORK/pfx-delays" | awk '{print $1 * 1000}')"
	record postfix.p99_ms "$(percentile 99 <"$WORK/pfx-delays" | awk '{print $1 * 1000}')"
	pfx_stop relay
	log "postfix end to end: $(per_s "$N" "$t0" "$t2") msg/s (smtp-source finished at $(per_s "$N" "$t0" "$t1") msg/s; $sent sent)"
}

run_postfix_enqueue() {
	pfx_start hold
	local t0 t1 held
	t0=$(now)
	source_to "$PFX_PORT"
	t1=$(now)
	held=$(find "$PFX_DIR/queue/hold" -type f | wc -l)
	[ "$held" -eq "$N" ] || { echo "compare.sh: $held of $N messages on hold" >&2; return 1; }
	record postfix.enqueue "$(per_s "$N" "$t0" "$t1")"
	# Queue → relay alone: release the held messages (to the deferred queue)
	# and have the queue manager scan it now.
	start_sink -M "$N"
	local t2 t3
	t2=$(now)
	postsuper -c "$PFX_DIR/etc" -H ALL 2>/dev/null
	postqueue -c "$PFX_DIR/etc" -f
	wait_sink
	t3=$(now)
	record postfix.drain "$(per_s "$N" "$t2" "$t3")"
	pfx_stop hold
	log "postfix enqueue: $(per_s "$N" "$t0" "$t1") msg/s, then queue → relay $(per_s "$N" "$t2" "$t3") msg/s"
}

run_outbound() { # STORE
	start_sink
	local out=$WORK/outbound-$1-$round.txt
	timeout "$((3 * STEP_TIMEOUT))" "$LT" send -addr "127.0.0.1:$PORT" -store "$1" -pg "$PG" -n "$N" -size "$SIZE" \
		-producers "$SESSIONS" -workers "$WORKERS" -conns "$CONNS" >"$out"
	stop_sink
	local enq drain e2e
	enq=$(grep 'phase=enqueue' "$out")
	drain=$(grep 'phase=drain' "$out")
	e2e=$(grep 'phase=e2e' "$out")
	record "$1.enqueue" "$(field enqueue_per_s <<<"$enq")"
	record "$1.drain" "$(field delivered_per_s <<<"$drain")"
	record "$1.e2e" "$(field delivered_per_s <<<"$e2e")"
	record "$1.p50_ms" "$(field p50_ms <<<"$e2e")"
	record "$1.p99_ms" "$(field p99_ms <<<"$e2e")"
	record "$1.cpu_s" "$(field cpu_s <<<"$e2e")"
	record "$1.mem_mb" "$(field peak_rss_mb <<<"$e2e")"
	record "$1.anon_mb" "$(field peak_anon_mb <<<"$e2e")"
	local pgcpu
	pgcpu=$(field pg_cpu_s <<<"$e2e")
	[ -n "$pgcpu" ] && record "$1.pg_cpu_s" "$pgcpu"
	log "outbound $1: enqueue $(field enqueue_per_s <<<"$enq"), drain $(field delivered_per_s <<<"$drain"), end to end $(field delivered_per_s <<<"$e2e") msg/s"
}

log "work directory $WORK; load: $(cut -d' ' -f1-3 /proc/loadavg)"
LOAD_BEFORE=$(cut -d' ' -f1 /proc/loadavg)
for round in $(seq "$ROUNDS"); do
	log "round $round of $ROUNDS"
	run_ceiling
	for s in $STORES; do
		run_outbound "$s"
		if [ "$s" = embedded ]; then run_postfix_e2e; fi
	done
	case " $STORES " in *" embedded "*) ;; *) run_postfix_e2e ;; esac
	run_postfix_enqueue
done
LOAD_AFTER=$(cut -d' ' -f1 /proc/loadavg)

if [ -n "${PROFILE:-}" ]; then
	# One more end-to-end run per store, untimed, under the CPU profiler.
	PROFILES=()
	for s in $STORES; do
		start_sink
		"$LT" send -addr "127.0.0.1:$PORT" -store "$s" -pg "$PG" -n "$N" -size "$SIZE" -producers "$SESSIONS" \
			-workers "$WORKERS" -conns "$CONNS" -phases e2e -cpuprofile "$WORK/e2e-$s.pprof" >/dev/null
		stop_sink
		PROFILES+=("$s")
	done
	KEEP=1
fi

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.1f×", a / b }'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.0f%%", 100 * a / b }'; }
# cpu_ms TOTAL_S [EXTRA_S]: CPU milliseconds per message
cpu_ms() { awk -v a="$1" -v b="${2:-0}" -v n="$N" 'BEGIN { if (a == "-") print "-"; else { if (b == "-") b = 0; printf "%.2f", (a + b) * 1000 / n } }'; }

ceiling=$(median ceiling.rate)
pfx_e2e=$(median postfix.e2e)
pfx_enq=$(median postfix.enqueue)
cols=
sep=
for s in $STORES; do cols="$cols outbound ($s) |"; sep="$sep ---: |"; done
echo
echo "$N messages of $SIZE octets (+ header), $SESSIONS producers / smtp-source sessions, median of $ROUNDS rounds;"
echo "$(nproc) CPUs, $(uname -r), load average $LOAD_BEFORE before, $LOAD_AFTER after."
echo
echo "| |$cols Postfix 3.7 |"
echo "|---|$sep ---: |"
row() { # LABEL KEY-SUFFIX POSTFIX-VALUE
	local line="| $1 |"
	for s in $STORES; do line="$line $(median "$s.$2") |"; done
	echo "$line $3 |"
}
row "durable enqueue, msg/s" enqueue "$pfx_enq"
row "end to end (enqueue while delivering), msg/s" e2e "$pfx_e2e"
row "queue → relay (drain), msg/s" drain "$(median postfix.drain)"
row "latency enqueue → delivered p50, ms" p50_ms "$(median postfix.p50_ms)"
row "latency enqueue → delivered p99, ms" p99_ms "$(median postfix.p99_ms)"
line="| CPU per message (end to end), ms |"
for s in $STORES; do line="$line $(cpu_ms "$(median "$s.cpu_s")" "$(median "$s.pg_cpu_s")") |"; done
echo "$line $(cpu_ms "$(median postfix-relay.cpu_s)") |"
line="| peak memory (end to end), MB |"
for s in $STORES; do line="$line $(median "$s.mem_mb") ($(median "$s.anon_mb") anon) |"; done
echo "$line $(median postfix-relay.mem_mb) |"
echo
echo "Ceiling, smtp-source -d → smtp-sink, no queue: $ceiling msg/s."
for s in $STORES; do
	echo "outbound ($s): end to end $(ratio "$(median "$s.e2e")" "$pfx_e2e") Postfix," \
		"enqueue $(ratio "$(median "$s.enqueue")" "$pfx_enq") Postfix," \
		"end to end $(pct "$(median "$s.e2e")" "$ceiling") of the ceiling."
done
echo
echo "Memory: outbound is one process: peak RSS, with in brackets its peak anonymous memory (the rest is the"
echo "database file mapped by bbolt, reclaimable page cache); Postfix is the sum of its processes' PSS at the peak."
echo "CPU: outbound's process (plus the PostgreSQL server's, for postgres); Postfix's processes; never smtp-source/smtp-sink."
if [ -n "${PROFILE:-}" ]; then
	for s in "${PROFILES[@]}"; do
		echo
		echo "CPU profile of an end-to-end run, $s store ($WORK/e2e-$s.pprof), by cumulative time:"
		go tool pprof -top -cum -nodecount=25 "$LT" "$WORK/e2e-$s.pprof" 2>/dev/null | sed -n '/flat%/,$p'
	done
fi
