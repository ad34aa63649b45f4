# What bench.sh, dest.sh, spool.sh and capture.sh share: their private
# redis-server and nginx, started, waited for and stopped, readings of
# them, and the store's sharded streams counted (compare.sh sources it for
# those and die). Sourced, not run; after cpu.sh and wrk.sh. A script
# sets, before it sources this: BENCH_NAME (its name in messages: bench,
# bench-dest, ...), and, before it calls these, TOP (the checkout),
# NGINX_BIN, MODULE and TMP (its temp dir) and its own cleanup function.
#
#   die MESSAGE           "BENCH_NAME: MESSAGE" on stderr, exit 2
#   check_tools TARGET    wrk, redis-server, redis-cli, curl, openssl (else
#                         "make TARGET"), scripts/cdp-key, NGINX_BIN and the
#                         built MODULE
#   set_traps             cleanup on exit; on INT or TERM "interrupted", 130
#   free_ports N          N free loopback ports, on one line
#   alive PID             whether PID (may be empty) is running
#   wait_gone PID TENTHS  until PID is gone, TENTHS tenths of a second at most
#   stop_nginx PID        nginx's master: QUIT, KILL after 10 s, reaped
#   stop_redis PID CLI_ARG...  SHUTDOWN NOSAVE (redis-cli CLI_ARG...), TERM
#                         if it does not answer, KILL after 10 s, reaped
#   remove_tmp            TMP removed (kept and named with KEEP_BENCH_DIR)
#   redis_launch DIR [ARG...]  redis-server on DIR/redis.sock, in the background
#   redis_ready PID TENTHS CLI_ARG...  until it answers PING with PONG
#   nginx_conf DIR MODULE HTTP_LINES  DIR/nginx.conf: the skeleton of every
#                         bench nginx (1 worker, its files in DIR), HTTP_LINES
#                         in its http block
#   nginx_start DIR URL MASTER WORKER [NAME]  nginx of DIR/nginx.conf, until
#                         URL answers; its pids into the variables MASTER, WORKER
#   wrk_queue NAME BASE SECONDS OUT  wrk on BASE's pixel, the worker's
#                         queue read once a second: SAMPLES, QMAX
#   stub_requests BASE    nginx's request count, from BASE/nginx_status
#   counter METRIC TEXT   the sum of METRIC's samples in a /status TEXT
#   entries_added         entries-added of the XINFO STREAM replies on
#                         stdin, summed
#   ratio A B             A / B, 3 decimals (n/a when B is 0)
#   med NAME ARRAY        the median of ARRAY[NAME_1] .. ARRAY[NAME_ROUNDS]
#   now                   the time, in seconds with nanoseconds
#   elapsed T0 T1         T1 - T0, in seconds, 1 decimal
#   error_log_report NAME LOG MASTER WORKER  an nginx's error.log summed up
#                         (1: a worker exited on a signal)
#   cdp_keys PREFIX SHARDS KIND [ARG]  the key names of scripts/cdp-key
#                         --prefix PREFIX --shards SHARDS KIND [ARG], one a
#                         line (events, out NAME: every shard's); asked
#                         once, then kept in TMP
#   sum_xlen CLI_ARG...   the XLEN of the streams named on stdin, summed
#                         (one redis-cli CLI_ARG... for all: -p PORT, -s SOCKET)
#   sum_added CLI_ARG...  their entries-added (XINFO STREAM), summed
#   streams_len PREFIX SHARDS CLI_ARG...  sum_xlen of every shard's event
#                         stream, <PREFIX>:events:{<tag>}
#   streams_added PREFIX SHARDS CLI_ARG...  sum_added of them (an event
#                         moved to a profile of another shard, an identified
#                         browser's, counts in both)

die() { printf '%s: %s\n' "$BENCH_NAME" "$*" >&2; exit 2; }

# check_tools TARGET: the tools of every bench (missing: "make TARGET"
# installs them), scripts/cdp-key, the nginx binary and the module
check_tools() {
    local t
    for t in wrk redis-server redis-cli curl openssl; do
        command -v "$t" >/dev/null 2>&1 || die "$t not found (make $1)"
    done
    [ -f "$TOP/scripts/cdp-key" ] || die "no $TOP/scripts/cdp-key"
    [ -x "$NGINX_BIN" ] || die "no nginx at $NGINX_BIN"
    [ -f "$MODULE" ] || die "the module is not built: $MODULE (make build)"
}

# set_traps: the script's cleanup when it exits, however it exits; INT and
# TERM end it with 130
set_traps() {
    trap cleanup EXIT
    trap 'echo; echo "$BENCH_NAME: interrupted"; exit 130' INT TERM
}

# free_ports N: N free loopback ports, chosen by the kernel
free_ports() {
    /usr/bin/python3 - "$1" <<'EOF'
import socket
import sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(*(s.getsockname()[1] for s in socks))
EOF
}

alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

wait_gone() {
    local i=0
    while alive "$1" && [ "$i" -lt "$2" ]; do sleep 0.1; i=$((i + 1)); done
    ! alive "$1"
}

# --- cleanup -------------------------------------------------------------------

# stop_nginx PID: the nginx whose master is PID (nothing when it is empty or
# gone)
stop_nginx() {
    if alive "$1"; then
        kill -QUIT "$1" 2>/dev/null
        wait_gone "$1" 100 || kill -KILL "$1" 2>/dev/null
        wait "$1" 2>/dev/null
    fi
}

# stop_redis PID CLI_ARG...: the redis-server PID, which redis-cli CLI_ARG...
# reaches (-p PORT, -s SOCKET)
stop_redis() {
    local p=$1
    shift
    if alive "$p"; then
        redis-cli "$@" SHUTDOWN NOSAVE >/dev/null 2>&1 \
            || kill -TERM "$p" 2>/dev/null
        wait_gone "$p" 100 || kill -KILL "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    fi
}

remove_tmp() {
    if [ -n "${KEEP_BENCH_DIR:-}" ]; then
        echo "bench files kept in $TMP"
    else
        rm -rf "$TMP"
    fi
}

# --- Redis ---------------------------------------------------------------------

# redis_launch DIR [ARG...]: a redis-server in its own session, in the
# background (its pid in $!), on the unix socket DIR/redis.sock (mode 700),
# its files and its log (redis.log) in DIR, no RDB snapshot; ARG: more of
# its options (--port, --appendonly, ...)
redis_launch() {
    local dir=$1
    shift
    setsid redis-server --dir "$dir" \
        --unixsocket "$dir/redis.sock" --unixsocketperm 700 \
        --save '' --daemonize no \
        --logfile "$dir/redis.log" "$@" </dev/null &
}

# redis_ready PID TENTHS CLI_ARG...: waits until the redis-server PID answers
# redis-cli CLI_ARG... PING with PONG (not LOADING); 1 when it exited or
# did not within TENTHS tenths of a second
redis_ready() {
    local p=$1 n=$2 i=0
    shift 2
    until redis-cli "$@" PING 2>/dev/null | grep -q PONG; do
        alive "$p" && [ "$i" -lt "$n" ] || return 1
        sleep 0.1; i=$((i + 1))
    done
}

# --- nginx ---------------------------------------------------------------------

# nginx_conf DIR MODULE HTTP_LINES: DIR/nginx.conf (DIR: the instance's
# prefix directory, its pid, error.log and temp files in it), 1 worker, in
# the foreground; MODULE: the module to load, or empty (a plain nginx);
# HTTP_LINES: its http block after the temp paths (its servers ...)
nginx_conf() {
    local user_line=
    [ "$(id -u)" = 0 ] && user_line="user root;"
    mkdir -p "$1/logs" "$1/temp"
    {
        [ -n "$2" ] && echo "load_module $2;"
        cat <<EOF
$user_line
daemon off;
master_process on;
worker_processes 1;
pid $1/logs/nginx.pid;
error_log $1/logs/error.log warn;

events {
    worker_connections 4096;
}

http {
    access_log off;
    client_body_temp_path $1/temp/client_body;
    proxy_temp_path       $1/temp/proxy;
    fastcgi_temp_path     $1/temp/fastcgi;
    uwsgi_temp_path       $1/temp/uwsgi;
    scgi_temp_path        $1/temp/scgi;
$3
}
EOF
    } > "$1/nginx.conf"
}

# nginx_start DIR URL MASTER WORKER [NAME]: the nginx of DIR/nginx.conf
# (prefix DIR/), once `nginx -t` accepts it; waits (10 s at most) until URL
# answers. MASTER, WORKER: the variables (or array elements: "PID[two]")
# that get the pids of its master (as soon as it runs, for cleanup) and of
# its worker. Dies when it cannot, naming the instance NAME (without NAME:
# the bench's only nginx)
nginx_start() {
    local args=(-p "$1/" -c "$1/nginx.conf" -e "$1/logs/error.log") out i=0 m w
    out=$("$NGINX_BIN" "${args[@]}" -t -q 2>&1) || {
        printf '%s\n' "$out" >&2
        [ -n "${5:-}" ] && die "nginx rejects the configuration of \"$5\""
        die "nginx rejects the bench configuration"; }
    setsid "$NGINX_BIN" "${args[@]}" </dev/null &
    m=$!
    printf -v "$3" '%s' "$m"
    until curl -s -o /dev/null "$2" 2>/dev/null; do
        alive "$m" && [ "$i" -lt 100 ] \
            || { cat "$1/logs/error.log" >&2; die "nginx${5:+ \"$5\"} did not start"; }
        sleep 0.1; i=$((i + 1))
    done
    w=$(pgrep -P "$m" | head -1)
    printf -v "$4" '%s' "$w"
    if [ -z "$w" ]; then
        [ -n "${5:-}" ] && die "no worker process of nginx \"$5\""
        die "no nginx worker process"
    fi
}

# wrk_queue NAME BASE SECONDS OUT: wrk on BASE$PIXEL_PATH (nginx NAME's
# pixel, BENCH_UA, CONNS connections) for SECONDS, its output in OUT; dies
# when it fails. Meanwhile the worker's queue for Redis (cdp_queue_events
# of BASE/status) once a second: how far Redis is behind the hits. SAMPLES:
# how many readings (each one a request, counted by nginx), QMAX: the
# largest
wrk_queue() {
    local wpid q
    SAMPLES=0 QMAX=0
    wrk -t1 -c"$CONNS" -d"$3"s --latency -H "User-Agent: $BENCH_UA" \
        "$2$PIXEL_PATH" \
        > "$4" 2>&1 &
    wpid=$!
    while sleep 1 && alive "$wpid"; do
        q=$(counter cdp_queue_events "$(curl -s "$2/status")")
        SAMPLES=$((SAMPLES + 1))
        [ "$q" -gt "$QMAX" ] && QMAX=$q
    done
    wait "$wpid" || { cat "$4" >&2; die "wrk failed on $1"; }
}

# --- readings ------------------------------------------------------------------

# stub_requests BASE: nginx's total request count (stub_status "requests"
# of BASE/nginx_status); reading it is itself a request, counted in the
# figure it returns
stub_requests() { curl -s "$1/nginx_status" | awk 'NR == 3 { print $3 }'; }

counter() {
    # sum of every sample of metric $1 in status text $2
    printf '%s\n' "$2" | awk -v m="$1" '
        $1 == m || index($1, m "{") == 1 { s += $2 } END { printf "%d\n", s }'
}

# entries_added: of the XINFO STREAM replies on stdin (each a field name,
# then its value, a line each), summed; 0 without one (no stream yet)
entries_added() {
    awk 'prev == "entries-added" { s += $0 }
         { prev = $0 }
         END { printf "%d\n", s }'
}

ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "n/a" }'
}

# med NAME ARRAY: the median of ARRAY (RPS, P99, ...) over the rounds of
# NAME, keyed NAME_ROUND
med() {
    local -n arr=$2
    local r v=()
    for r in $(seq 1 "$ROUNDS"); do v+=("${arr[${1}_$r]}"); done
    median "${v[@]}"
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# --- the store's keys ----------------------------------------------------------

# cdp_keys PREFIX SHARDS KIND [ARG]: the names scripts/cdp-key prints (the
# store's sharded layout: store/README.md, "Shards"), one a line; the first
# call asks it, the others read its answer from TMP
cdp_keys() {
    local f="$TMP/keys.$1.$2.$3${4:+.$4}"
    local t="$f.$BASHPID"
    if [ ! -s "$f" ]; then
        /usr/bin/python3 "$TOP/scripts/cdp-key" --prefix "$1" --shards "$2" \
            "$3" ${4:+"$4"} > "$t" && mv "$t" "$f" \
            || die "scripts/cdp-key --prefix $1 --shards $2 $3 ${4:-} failed"
    fi
    cat "$f"
}

# sum_xlen CLI_ARG...: the XLEN of each stream named on stdin (0 when it
# does not exist), summed
sum_xlen() {
    sed 's/^/XLEN /' | redis-cli "$@" 2>/dev/null \
        | awk '/^[0-9]+$/ { s += $1 } END { printf "%d\n", s }'
}

# sum_added CLI_ARG...: the entries-added of each stream named on stdin
# (what was ever appended to it, trimmed or deleted since or not; 0 when
# it does not exist), summed
sum_added() {
    sed 's/^/XINFO STREAM /' | redis-cli "$@" 2>/dev/null | entries_added
}

# streams_len PREFIX SHARDS CLI_ARG...: the events the shards' streams hold
streams_len() {
    local p=$1 n=$2
    shift 2
    cdp_keys "$p" "$n" events | sum_xlen "$@"
}

# streams_added PREFIX SHARDS CLI_ARG...: the events ever appended to the
# shards' streams
streams_added() {
    local p=$1 n=$2
    shift 2
    cdp_keys "$p" "$n" events | sum_added "$@"
}

# error_log_report NAME LOG MASTER WORKER: "error.log of NAME: clean", or
# its count of errors and warnings with the first 6 and last 4 such lines,
# and a warning when MASTER's worker is no longer WORKER; returns 1 when a
# worker exited on a signal (the caller fails)
error_log_report() {
    local name=$1 log=$2 nerr nwarn w
    nerr=$(grep -cE '\[(emerg|alert|crit|error)\]|exited on signal' "$log")
    nwarn=$(grep -c '\[warn\]' "$log")
    w=$(pgrep -P "$3" | head -1)
    if [ "$nerr" = 0 ] && [ "$nwarn" = 0 ] && [ "$w" = "$4" ]; then
        echo "error.log of \"$name\": clean"
        return 0
    fi
    echo "error.log of \"$name\": $nerr emerg/alert/crit/error lines," \
         "$nwarn warnings (first 6 and last 4):"
    grep -E '\[(emerg|alert|crit|error|warn)\]|exited on signal' "$log" \
        | awk '{ l[NR] = $0 } END { for (i = 1; i <= NR; i++)
                   if (i <= 6 || i > NR - 4) print l[i];
                   else if (i == 7) printf "... (%d more)\n", NR - 10 }' \
        | cut -c1-300 | sed 's/^/    /'
    grep -q 'exited on signal' "$log" && return 1
    [ "$w" != "$4" ] && echo "WARNING: the worker of \"$name\" is ${w:-gone}, not $4"
    return 0
}
