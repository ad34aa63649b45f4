#!/bin/bash
# make bench-spool (make bench runs it after bench.sh): what `cdp_spool`
# costs the pixel while Redis keeps up, and what it saves when Redis does
# not. Four nginx (1 worker each, the new-visitor pixel with a browser
# User-Agent, BENCH_UA of wrk.sh, no GeoIP, `cdp_consent_default all;`,
# so that every hit is one event) and three private redis-server, all on
# this machine, on unix sockets:
#
#   1. Redis healthy (appendonly no): "plain" and "spool", two nginx on
#      the same Redis (prefixes spool0, spool1) whose configurations differ
#      only by `cdp_spool DIR;` (the module's cdp_queue_size), wrk on each
#      in turn, alternating which goes first, ROUNDS rounds. The spool is
#      never written while Redis keeps up (each run shows its op="spooled"),
#      so the expectation is no measurable cost: read the ratios
#      spool/plain of the worker's CPU per hit and of req/s, round by round
#      and as medians. "queue max": the largest cdp_queue_events read once
#      a second during the run, how far Redis lagged (a shared 2-CPU box
#      lets it fall behind now and then). After each run, before the next,
#      Redis works off what it left (the stream stops growing, the queue
#      is empty), and the run's hits nginx answered (stub_status, read
#      around the run) are compared with the events it stored (/status
#      cdp_events_stored_total and XINFO STREAM entries-added, both as
#      deltas over the run).
#   2. Overload: "over", an nginx with `cdp_spool` and `cdp_queue_size
#      OVER_QUEUE;` (2000) on a Redis with `appendonly yes` and
#      `appendfsync always` (OVER_FSYNC): every write of Redis waits for
#      an fsync(), which makes Redis, not nginx, the bottleneck. An
#      unthrottled wrk for BENCH_SECONDS drives the events in flight over
#      cdp_queue_size: the batches beyond it go to the spool. Once a second
#      during the run: the queue (cdp_queue_events), the spool's bytes, the
#      events spooled, replayed and stored so far. Then, bounded by
#      DRAIN_LIMIT, the wait (polling every 0.25 s) until the spool has
#      drained: the queue is empty, the stream holds every hit answered
#      (entries-added), and cdp_spool_bytes is 0 or, sooner (that gauge is
#      refreshed once a second), replayed == spooled; or the stream stopped
#      growing short of that for 3 s. Shown: the drain's seconds, counted
#      from 0.2 s after wrk's end, and the replay rate (events replayed
#      after wrk's end / those seconds; all replayed / those seconds).
#   3. Crash (CRASH=on, the default): the same overload on "crash", an
#      nginx of its own, whose Redis (appendonly yes, the same fsync) gets
#      `kill -9` at a third of the run and is started again 3 s later on
#      the same AOF: the batches in flight then are sent again (resent;
#      those Redis had applied are skipped: already_applied), the hits of
#      the outage are spooled, and replayed once Redis has loaded its AOF
#      and nginx has connected again (its reconnect backoff, 100 ms doubling
#      to 5 s, is seen as the interval between two /status readings where
#      cdp_redis_connects_total grew; the replay rate from then is shown).
#
#   ROUNDS            rounds of part 1, each one run per nginx (default 3)
#   BENCH_SECONDS     seconds per wrk run, all parts (default 10)
#   CONNECTIONS       wrk connections, all parts (default 50)
#   OVER_QUEUE        cdp_queue_size of parts 2 and 3 (default 2000)
#   OVER_FSYNC        appendfsync of parts 2 and 3: always (default) or
#                     everysec (then Redis may keep up: nothing spooled)
#   CRASH             on (default) or off: part 3
#   DRAIN_LIMIT       seconds a drain may take (default 120)
#   STREAM_MAXLEN     cdp_stream_maxlen (default 1000000, the module's, a
#                     shard's stream); entries-added counts what trimming
#                     removed too
#   PIXEL_PATH        the pixel request (default: a page view,
#                     /p.gif?url=https%3A%2F%2Fshop.example%2Fpricing)
#   KEEP_BENCH_DIR    set: keep the temp dir (configs, logs, spools, AOFs)
#
# Each nginx's store has SHARDS (16, the module's default) event streams,
# PREFIX:events:{<tag>} (store/README.md, "Shards"): "the stream" below is
# all of them, its entries-added and XLEN summed over the shards.
#
# About 2 minutes with the defaults (part 1: 6 runs of 10 s and 2 warm-ups
# of 2 s, each followed by Redis settling; parts 2 and 3: 10 s each plus
# their drains, a few seconds each).
#
# Exits 1 when, in part 1, a run's stored events (counter or entries-added)
# differ from its hits answered, but for the events "plain" dropped as
# queue_full (what it does without a spool when Redis falls cdp_queue_size
# events behind: a WARNING, that run's Redis was not healthy), or an event
# was dropped for another reason; in parts 2 and 3, after the drain, the
# events in the stream (entries-added) differ from the hits answered, the
# spool did not drain within DRAIN_LIMIT, or Redis holds more events than
# the stored counter says were stored plus those it skipped as applied;
# in part 2, the stored counter differs from the hits answered; in parts 2
# and 3, any event was dropped (cdp_events_dropped_total, any reason); or a
# worker exited on a signal. 2 when the bench could not run. On a failure
# of parts 2 and 3 the counters before and after, the module's error.log
# lines (cdp:) and the spool directory are shown.

set -u

TOP=$(cd "$(dirname "$0")/../.." && pwd)
NGINX_BIN=${NGINX_BIN:-/usr/sbin/nginx}
MODULE=$TOP/build/objs/ngx_http_cdp_module.so
SECONDS_PER_RUN=${BENCH_SECONDS:-10}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNECTIONS:-50}
OVER_QUEUE=${OVER_QUEUE:-2000}
OVER_FSYNC=${OVER_FSYNC:-always}
CRASH=${CRASH:-on}
DRAIN_LIMIT=${DRAIN_LIMIT:-120}
STREAM_MAXLEN=${STREAM_MAXLEN:-1000000}
PIXEL_PATH=${PIXEL_PATH:-"/p.gif?url=https%3A%2F%2Fshop.example%2Fpricing"}
WARMUP=2
SHARDS=16
. "$TOP/tests/bench/cpu.sh"
. "$TOP/tests/bench/wrk.sh"
BENCH_NAME=bench-spool
. "$TOP/tests/bench/lib.sh"

check_tools deps-test
case $SECONDS_PER_RUN$ROUNDS$CONNS$OVER_QUEUE$DRAIN_LIMIT$STREAM_MAXLEN in
    *[!0-9]*) die "BENCH_SECONDS, ROUNDS, CONNECTIONS, OVER_QUEUE, DRAIN_LIMIT and STREAM_MAXLEN must be integers" ;;
esac
[ "$ROUNDS" -ge 1 ] && [ "$SECONDS_PER_RUN" -ge 1 ] && [ "$DRAIN_LIMIT" -ge 1 ] \
    && [ "$OVER_QUEUE" -ge 1 ] || die "ROUNDS, BENCH_SECONDS, DRAIN_LIMIT, OVER_QUEUE >= 1"
case $OVER_FSYNC in always|everysec) ;; *) die "OVER_FSYNC is always or everysec" ;; esac
case $CRASH in on|off) ;; *) die "CRASH is on or off" ;; esac

TMP=$(mktemp -d /tmp/ngx_cdp_spool.XXXXXX) || die "mktemp failed"
# nginx instances: their port, master, worker, prefix, Redis
declare -A PORT MASTER WORKER PFX RED
# Redis instances (fast, over, crash): their pid
declare -A RPID
NGINXES="plain spool over"
[ "$CRASH" = on ] && NGINXES="$NGINXES crash"

cleanup() {
    trap '' INT TERM
    local x
    for x in $NGINXES; do stop_nginx "${MASTER[$x]:-}"; done
    for x in fast over crash; do
        stop_redis "${RPID[$x]:-}" -s "$TMP/redis-$x/redis.sock"
    done
    remove_tmp
}
set_traps

# four free loopback ports, chosen by the kernel
read -r PORT[plain] PORT[spool] PORT[over] PORT[crash] < <(free_ports 4)
[ -n "${PORT[crash]:-}" ] || die "could not find free ports"
PFX[plain]=spool0 PFX[spool]=spool1 PFX[over]=spool2 PFX[crash]=spool3
RED[plain]=fast RED[spool]=fast RED[over]=over RED[crash]=crash

# --- Redis -----------------------------------------------------------------

rcli() { local r=$1; shift; redis-cli -s "$TMP/redis-$r/redis.sock" "$@"; }

# start_redis NAME [nowait]: the redis-server NAME in $TMP/redis-NAME
# (again on the same AOF after a kill); waits for its PONG unless nowait
start_redis() {
    local persist=(--appendonly no)
    [ "$1" = fast ] || persist=(--appendonly yes --appendfsync "$OVER_FSYNC")
    mkdir -p "$TMP/redis-$1"
    redis_launch "$TMP/redis-$1" --port 0 "${persist[@]}"
    RPID[$1]=$!
    [ "${2:-}" = nowait ] || wait_redis "$1" 100 || {
        cat "$TMP/redis-$1/redis.log" >&2; die "Redis \"$1\" did not start"; }
}

# wait_redis NAME TENTHS: until Redis NAME answers PONG (not LOADING)
wait_redis() { redis_ready "${RPID[$1]}" "$2" -s "$TMP/redis-$1/redis.sock"; }

start_redis fast
start_redis over
[ "$CRASH" = on ] && start_redis crash

# --- nginx -----------------------------------------------------------------

(umask 077 && openssl rand -hex 32 > "$TMP/secret")

# conf NAME HTTP_LINES: nginx.conf of instance NAME (its own prefix
# directory $TMP/NAME); all alike but for HTTP_LINES
conf() {
    nginx_conf "$TMP/$1" "$MODULE" "
    cdp_redis         unix:$TMP/redis-${RED[$1]}/redis.sock prefix=${PFX[$1]} shards=$SHARDS;
    cdp_secret_file   $TMP/secret;
    cdp_stream_maxlen $STREAM_MAXLEN;
    cdp_consent_default all;
$2
    server {
        listen 127.0.0.1:${PORT[$1]};

        location = /p.gif {
            cdp_pixel;
        }

        location = /status {
            cdp_status;
        }

        # nginx's own request counter: the hits it answered, including the
        # ones still in flight when wrk stops counting
        location = /nginx_status {
            stub_status;
        }
    }"
}

# the spool directory of each instance that has one (nginx creates it)
SPOOL_DIR_spool=$TMP/spool/spool
SPOOL_DIR_over=$TMP/over/spool
SPOOL_DIR_crash=$TMP/crash/spool
spool_dir() { local v=SPOOL_DIR_$1; printf '%s' "${!v:-}"; }
# spool_ls NAME: "N file(s), B bytes" of the spool directory of NAME
spool_ls() {
    find "$(spool_dir "$1")" -type f -printf '%s\n' 2>/dev/null \
        | awk '{ s += $1 } END { printf "%d file(s), %d bytes", NR, s }'
}

conf plain ""
conf spool "    cdp_spool $(spool_dir spool);"
conf over "    cdp_queue_size $OVER_QUEUE;
    cdp_spool $(spool_dir over);"
[ "$CRASH" = on ] && conf crash "    cdp_queue_size $OVER_QUEUE;
    cdp_spool $(spool_dir crash);"

# start NAME: the nginx of instance NAME, MASTER[NAME] and WORKER[NAME]
start() {
    nginx_start "$TMP/$1" "http://127.0.0.1:${PORT[$1]}/nginx_status" \
        "MASTER[$1]" "WORKER[$1]" "$1"
}
for x in $NGINXES; do start "$x"; done

base() { printf 'http://127.0.0.1:%s' "${PORT[$1]}"; }
status() { curl -s "$(base "$1")/status"; }
# nginx's total request count (stub_status "requests"); reading it is itself
# a request, counted in the figure it returns
ngx_requests() { stub_requests "$(base "$1")"; }
C_SPOOLED='cdp_spool_events_total{op="spooled"}'
C_REPLAYED='cdp_spool_events_total{op="replayed"}'
# stream_added NAME, stream_len NAME: the events ever appended to the
# shards' streams of nginx NAME, the events they hold
stream_added() { streams_added "${PFX[$1]}" "$SHARDS" -s "$TMP/redis-${RED[$1]}/redis.sock"; }
stream_len() { streams_len "${PFX[$1]}" "$SHARDS" -s "$TMP/redis-${RED[$1]}/redis.sock"; }
later() { awk -v a="$1" -v b="$2" -v l="$3" 'BEGIN { print (b - a > l) ? 1 : 0 }'; }
per_s() {
    awk -v n="$1" -v s="$2" 'BEGIN { if (s + 0 > 0) printf "%.0f", n / s; else print "n/a" }'
}
mb() { awk -v b="$1" 'BEGIN { printf "%.1f MB", b / 1048576 }'; }
# the nonzero cdp_events_dropped_total samples of status text $1
drops_of() {
    printf '%s\n' "$1" | awk '/^cdp_events_dropped_total/ && $2 > 0 {
        sub(/^cdp_events_dropped_total\{reason="/, "", $1); sub(/"\}$/, "", $1)
        printf " %s=%s", $1, $2 }'
}

# sanity: each pixel answers a GIF and a cookie; each hit is stored
declare -A ANSWERED
for x in $NGINXES; do
    h=$(curl -s -A "$BENCH_UA" -o /dev/null -D - "$(base "$x")$PIXEL_PATH")
    printf '%s' "$h" | grep -q '^HTTP/1.1 200' || die "$x: /p.gif not 200: $h"
    printf '%s' "$h" | grep -qi '^set-cookie:' || die "$x: /p.gif: no Set-Cookie: $h"
    ANSWERED[$x]=1
done
for x in $NGINXES; do
    i=0
    until [ "$(stream_added "$x")" = 1 ]; do
        [ "$i" -lt 100 ] || { cat "$TMP/$x/logs/error.log" >&2
                              die "the first hit of \"$x\" was not stored in 10 s"; }
        sleep 0.1; i=$((i + 1))
    done
done

FAILS=() WARNS=()
fail() { FAILS+=("$*"); echo "  FAIL: $*"; }

# --- 1. Redis healthy: spool vs no spool ------------------------------------

# settle NAME: waits (at most DRAIN_LIMIT s) until what the last run of
# NAME left is worked off: its stream stops growing, its queue is empty,
# its spool is empty
settle() {
    local last=-1 same=0 n q sb st t0
    t0=$(now)
    while :; do
        n=$(stream_added "$1")
        st=$(status "$1")
        q=$(counter cdp_queue_events "$st") sb=$(counter cdp_spool_bytes "$st")
        if [ "$n" = "$last" ] && [ "$q" = 0 ] && [ "$sb" = 0 ]; then
            same=$((same + 1))
            [ "$same" -ge 3 ] && return 0
        else
            same=0
        fi
        last=$n
        [ "$(later "$t0" "$(now)" "$DRAIN_LIMIT")" = 1 ] && {
            echo "  $1: not settled after ${DRAIN_LIMIT}s: entries-added $n, queue $q, spool bytes $sb"
            return 1; }
        sleep 0.2
    done
}

# keyed NAME_ROUND (plain_2, spool_1, ...)
declare -A RPS P99 NGX RDS IDLE HITS STOREDC ADDED SPOOLED DROPPED QMAX
bad_total=0

# run NAME ROUND SECONDS: one wrk run on the pixel of NAME (part 1), then
# its settling; the hits answered against the events stored
run() {
    local x=$1 k=$1_$2 b a w0 w1 r0 r1 i0 it0 i1 it1 st0 st1 e0 e1 n \
          req rps p99 bad err qmax samples qf lbl="round $2"
    [ "$2" = 0 ] && lbl=warm-up
    st0=$(status "$x") e0=$(stream_added "$x")
    b=$(ngx_requests "$x")
    read -r i0 it0 < <(idle_ticks)
    w0=$(ticks "${WORKER[$x]}") r0=$(ticks "${RPID[fast]}")
    # the worker's queue for Redis once a second (each reading a request)
    wrk_queue "$x" "$(base "$x")" "$3" "$TMP/$k.txt"
    samples=$SAMPLES qmax=$QMAX
    read -r i1 it1 < <(idle_ticks)
    sleep 0.2    # let the worker finish the last requests wrk left behind
    a=$(ngx_requests "$x")
    w1=$(ticks "${WORKER[$x]}") r1=$(ticks "${RPID[fast]}")
    settle "$x" || fail "part 1, $x $lbl: Redis did not settle"
    st1=$(status "$x") e1=$(stream_added "$x")

    n=$((a - b - 1 - samples))    # minus the readings of /status and "after"
    HITS[$k]=$n
    QMAX[$k]=$qmax
    ANSWERED[$x]=$((ANSWERED[$x] + n))
    STOREDC[$k]=$(($(counter cdp_events_stored_total "$st1") - $(counter cdp_events_stored_total "$st0")))
    ADDED[$k]=$((e1 - e0))
    SPOOLED[$k]=$(($(counter "$C_SPOOLED" "$st1") - $(counter "$C_SPOOLED" "$st0")))
    DROPPED[$k]=$(($(counter cdp_events_dropped_total "$st1") - $(counter cdp_events_dropped_total "$st0")))
    NGX[$k]=$(us_per "$((w1 - w0))" "$n") RDS[$k]=$(us_per "$((r1 - r0))" "$n")
    IDLE[$k]=$(pct "$((i1 - i0))" "$((it1 - it0))")
    read -r req rps p99 bad err < <(wrk_parse "$TMP/$k.txt")
    RPS[$k]=$rps P99[$k]=$p99
    bad_total=$((bad_total + bad + err))
    if [ "$2" = 0 ]; then
        printf '  warm-up %-5s %7d hits, stored %d (counter %d), spooled %d, dropped %d\n' \
            "$x" "$n" "${ADDED[$k]}" "${STOREDC[$k]}" "${SPOOLED[$k]}" "${DROPPED[$k]}"
    else
        printf '  round %d  %-5s %9s req/s  p99 %7s ms  %7d hits  CPU us/hit: nginx %5s  redis %5s  idle %2s%%  queue max %5d  stored %d (counter %d), spooled %d' \
            "$2" "$x" "$rps" "$p99" "$n" "${NGX[$k]}" "${RDS[$k]}" "${IDLE[$k]}" \
            "$qmax" "${ADDED[$k]}" "${STOREDC[$k]}" "${SPOOLED[$k]}"
        [ "${DROPPED[$k]}" = 0 ] || printf '  DROPPED %d:%s' "${DROPPED[$k]}" "$(drops_of "$st1")"
        [ "$bad" -gt 0 ] || [ "$err" -gt 0 ] && printf '  (non-2xx %d, socket errors %d)' "$bad" "$err"
        printf '\n'
    fi
    # without a spool, the events beyond cdp_queue_size while Redis lags
    # are dropped (queue_full): the module's documented behaviour, and a
    # run where Redis did not keep up (a warning); anything else fails
    qf=$(($(counter 'cdp_events_dropped_total{reason="queue_full"}' "$st1") \
          - $(counter 'cdp_events_dropped_total{reason="queue_full"}' "$st0")))
    [ "$x" = plain ] || qf=0
    if [ "$n" != $((ADDED[$k] + qf)) ] || [ "${ADDED[$k]}" != "${STOREDC[$k]}" ]; then
        fail "part 1, $x $lbl: $n hits answered, ${ADDED[$k]} events added to" \
             "the stream, stored counter +${STOREDC[$k]}, dropped ${DROPPED[$k]}"
    fi
    if [ "${DROPPED[$k]}" != "$qf" ]; then
        fail "part 1, $x $lbl: ${DROPPED[$k]} events dropped (now:$(drops_of "$st1"))"
    elif [ "$qf" != 0 ]; then
        WARNS+=("part 1, plain $lbl: Redis fell cdp_queue_size (10000) events behind (queue max $qmax at a 1-s sample, idle CPU ${IDLE[$k]}%): $qf events dropped (queue_full), as without a spool they are; stored = answered - dropped")
        echo "  WARNING: ${WARNS[-1]}"
    fi
}

T_START=$(now)
echo "ngx_cdp bench-spool: $(nproc) CPUs; nginx 1 worker each, Redis on unix sockets," \
     "the new-visitor pixel, wrk -t1 -c$CONNS -d${SECONDS_PER_RUN}s"
echo
echo "--- 1. Redis healthy (appendonly no): plain (no cdp_spool) vs spool (cdp_spool)," \
     "$ROUNDS rounds, ${WARMUP}s warm-up each ---"
run plain 0 "$WARMUP"
run spool 0 "$WARMUP"
for r in $(seq 1 "$ROUNDS"); do
    # alternate which goes first, so neither always runs on a warmer box
    if [ $((r % 2)) = 1 ]; then order="plain spool"; else order="spool plain"; fi
    for x in $order; do
        run "$x" "$r" "$SECONDS_PER_RUN"
    done
done
SPOOL1_LS=$(spool_ls spool)
FAST_MEM=$(rcli fast INFO memory | tr -d '\r' | sed -n 's/^used_memory_human://p')

# --- 2. and 3. overload --------------------------------------------------------

# keyed NAME (over, crash)
declare -A O_RPS O_P99 O_HITS O_STORED_W O_STOREDC_W O_SPOOLED_W O_REPLAYED_W \
    O_QMAX O_SBMAX O_DRAIN_S O_DRAINED O_NGX O_RDS O_ST0 O_ST1 O_ST2 O_KILL \
    O_RESTART O_LOADED O_AOF O_RECONNECT O_RATE_RC

# seen_reconnect: after a status reading $st at time $1, in overload():
# the first reading where nginx connected to Redis again after the restart
# sets rc_t and rc_rep from the reading before it (when it had not yet)
seen_reconnect() {
    if [ -n "$restarted" ] && [ -z "$rc_t" ] \
       && [ "$(counter cdp_redis_connects_total "$st")" -gt "$conn0" ]; then
        rc_t=$prev_t rc_t2=$1 rc_rep=$prev_rep
    fi
    prev_t=$1 prev_rep=$(counter "$C_REPLAYED" "$st")
}

# overload NAME: part 2 (over) or 3 (crash, Redis killed at a third of the
# run, started again 3 s later); then the drain
overload() {
    local x=$1 r=${RED[$1]} b a w0 w1 r0 r1 t0 t1 t st st0 st1 e e1 q sb \
          samples=0 sec=0 wpid kill_at=-1 killed= restarted= up= last=-1 same=0 \
          conn0 rc_t= rc_t2= rc_rep= prev_t prev_rep \
          next_print=5 n req rps p99 bad err tk
    [ "$x" = crash ] && kill_at=$(( SECONDS_PER_RUN / 3 ))
    [ "$kill_at" = 0 ] && kill_at=1
    st0=$(status "$x")
    O_ST0[$x]=$st0
    conn0=$(counter cdp_redis_connects_total "$st0")
    prev_t=$(now) prev_rep=$(counter "$C_REPLAYED" "$st0")
    b=$(ngx_requests "$x")
    w0=$(ticks "${WORKER[$x]}") r0=$(ticks "${RPID[$r]}")
    t0=$(now)
    wrk -t1 -c"$CONNS" -d"$SECONDS_PER_RUN"s --latency -H "User-Agent: $BENCH_UA" \
        "$(base "$x")$PIXEL_PATH" \
        > "$TMP/$x.txt" 2>&1 &
    wpid=$!
    printf '  %5s %8s %10s %9s %9s %9s %9s  %s\n' "t (s)" "queue" "spool" "spooled" \
        "replayed" "stored" "connects" "Redis"
    # once a second: the queue, the spool, what was spooled, replayed and
    # stored (each reading is a request, counted); the kill and restart
    while sleep 1 && alive "$wpid"; do
        sec=$((sec + 1))
        if [ "$sec" = "$kill_at" ]; then
            { kill -KILL "${RPID[$r]}"; wait "${RPID[$r]}"; } 2>/dev/null
            killed=$(now)
            O_KILL[$x]=$(elapsed "$t0" "$killed")
        elif [ -n "$killed" ] && [ -z "$restarted" ] && [ "$sec" = $((kill_at + 3)) ]; then
            start_redis "$r" nowait
            restarted=$(now)
            O_RESTART[$x]=$(elapsed "$t0" "$restarted")
        fi
        st=$(status "$x")
        seen_reconnect "$(now)"
        samples=$((samples + 1))
        q=$(counter cdp_queue_events "$st") sb=$(counter cdp_spool_bytes "$st")
        [ "$q" -gt "${O_QMAX[$x]:-0}" ] && O_QMAX[$x]=$q
        [ "$sb" -gt "${O_SBMAX[$x]:-0}" ] && O_SBMAX[$x]=$sb
        if [ "$sec" = "$kill_at" ]; then tk="kill -9"
        elif [ -n "$killed" ] && [ -z "$restarted" ]; then tk="down"
        elif [ -n "$restarted" ] && [ -z "$up" ]; then
            if rcli "$r" PING 2>/dev/null | grep -q PONG; then up=1 tk="up"
            else tk="starting"; fi
        else tk="up"; fi
        printf '  %5d %8d %10s %9d %9d %9d %9d  %s\n' "$sec" "$q" "$(mb "$sb")" \
            "$(counter "$C_SPOOLED" "$st")" "$(counter "$C_REPLAYED" "$st")" \
            "$(counter cdp_events_stored_total "$st")" \
            "$(counter cdp_redis_connects_total "$st")" "$tk"
    done
    wait "$wpid" || { cat "$TMP/$x.txt" >&2; die "wrk failed on $x"; }
    sleep 0.2    # let the worker finish the last requests wrk left behind
    a=$(ngx_requests "$x")
    t1=$(now)
    w1=$(ticks "${WORKER[$x]}")
    [ "$x" = over ] && r1=$(ticks "${RPID[$r]}")
    st1=$(status "$x") e1=$(stream_added "$x")
    O_ST1[$x]=$st1
    n=$((a - b - 1 - samples))    # minus the readings of /status and "after"
    O_HITS[$x]=$n
    ANSWERED[$x]=$((ANSWERED[$x] + n))
    read -r req rps p99 bad err < <(wrk_parse "$TMP/$x.txt")
    O_RPS[$x]=$rps O_P99[$x]=$p99
    bad_total=$((bad_total + bad + err))
    O_STORED_W[$x]=$e1
    rcli "$r" PING 2>/dev/null | grep -q PONG || O_STORED_W[$x]="n/a (Redis down)"
    O_STOREDC_W[$x]=$(counter cdp_events_stored_total "$st1")
    O_SPOOLED_W[$x]=$(counter "$C_SPOOLED" "$st1")
    O_REPLAYED_W[$x]=$(counter "$C_REPLAYED" "$st1")
    O_NGX[$x]=$(us_per "$((w1 - w0))" "$n")
    printf '  wrk ended: %d hits answered (%s req/s, p99 %s ms); stored %s, spooled %d, replayed %d so far\n' \
        "$n" "$rps" "$p99" "${O_STORED_W[$x]}" "${O_SPOOLED_W[$x]}" "${O_REPLAYED_W[$x]}"
    [ "$bad" -gt 0 ] || [ "$err" -gt 0 ] \
        && echo "  (non-2xx $bad, socket errors $err)"

    if [ -n "$killed" ] && [ -z "$restarted" ]; then
        # wrk was shorter than the outage
        sleep "$(awk -v k="$killed" -v t="$(now)" 'BEGIN { d = 3 - (t - k); print (d > 0 ? d : 0) }')"
        start_redis "$r" nowait
        restarted=$(now)
        O_RESTART[$x]=$(elapsed "$t0" "$restarted")
    fi
    if [ -n "$restarted" ]; then
        wait_redis "$r" 600 || { cat "$TMP/redis-$r/redis.log" >&2; die "Redis \"$r\" did not start again"; }
        # its own figure: "DB loaded from append only file: 0.123 seconds"
        O_LOADED[$x]=$(sed -n 's/.*DB loaded from append only file: \([0-9.]*\) seconds.*/\1/p' \
                       "$TMP/redis-$r/redis.log" | tail -1)
        echo "  Redis restarted at ${O_RESTART[$x]}s of the run, loaded its AOF in ${O_LOADED[$x]:-?}s (its log)"
    fi

    # the drain: until the spool and the queue are empty and the stream
    # holds every hit answered, or they stopped growing short of that
    O_DRAINED[$x]=no
    while :; do
        t=$(now)
        st=$(status "$x") e=$(stream_added "$x")
        seen_reconnect "$t"
        q=$(counter cdp_queue_events "$st") sb=$(counter cdp_spool_bytes "$st")
        # cdp_spool_bytes is refreshed once a second: replayed == spooled
        # tells sooner
        if [ "$q" = 0 ] && [ "$e" = "${ANSWERED[$x]}" ] && { [ "$sb" = 0 ] \
               || [ "$(counter "$C_REPLAYED" "$st")" = "$(counter "$C_SPOOLED" "$st")" ]; }; then
            O_DRAINED[$x]=yes
            break
        elif [ "$q" = 0 ] && [ "$sb" = 0 ] && [ "$e" = "$last" ]; then
            same=$((same + 1))
            # 3 s without progress (the gauges are refreshed every second)
            [ "$same" -ge 12 ] && { O_DRAINED[$x]=stalled; break; }
        else
            same=0
        fi
        last=$e
        if [ "$(later "$t1" "$t" "$next_print")" = 1 ]; then
            printf '  drain +%ss: queue %d, spool %s, replayed %d, stored %d of %d\n' \
                "$(elapsed "$t1" "$t")" "$q" "$(mb "$sb")" "$(counter "$C_REPLAYED" "$st")" \
                "$e" "${ANSWERED[$x]}"
            next_print=$((next_print + 5))
        fi
        [ "$(later "$t1" "$t" "$DRAIN_LIMIT")" = 1 ] && break
        sleep 0.25
    done
    O_DRAIN_S[$x]=$(elapsed "$t1" "$t")
    if [ -n "$rc_t" ]; then
        # from the last reading before nginx was seen connected again
        O_RECONNECT[$x]="$(elapsed "$restarted" "$rc_t")-$(elapsed "$restarted" "$rc_t2")"
        O_RATE_RC[$x]=$(per_s "$(($(counter "$C_REPLAYED" "$st") - rc_rep))" "$(elapsed "$rc_t" "$t")")
        O_RATE_RC[$x]="${O_RATE_RC[$x]}  ($(($(counter "$C_REPLAYED" "$st") - rc_rep)) in $(elapsed "$rc_t" "$t")s)"
    fi
    [ "$x" = over ] && O_RDS[$x]=$(us_per "$(($(ticks "${RPID[$r]}") - r0))" "$n")
    # the counters may trail the stream by one reply, the spool's gauges
    # by a second
    for i in $(seq 30); do
        st=$(status "$x")
        [ "$(counter cdp_events_stored_total "$st")" -ge "$e" ] \
            && [ "$(counter cdp_spool_bytes "$st")" = 0 ] \
            && [ "$(counter cdp_spool_files "$st")" = 0 ] && break
        sleep 0.1
    done
    O_ST2[$x]=$st
    echo "  drain: ${O_DRAINED[$x]} after ${O_DRAIN_S[$x]}s (stored $e of ${ANSWERED[$x]})"
    O_AOF[$x]=$(du -sb "$TMP/redis-$r/appendonlydir" 2>/dev/null | cut -f1)
}

echo
echo "--- 2. overload: Redis appendonly yes, appendfsync $OVER_FSYNC;" \
     "cdp_queue_size $OVER_QUEUE, cdp_spool; wrk unthrottled ---"
overload over
if [ "$CRASH" = on ]; then
    echo
    echo "--- 3. overload and crash: the same, Redis kill -9 at a third of the run," \
         "started again 3 s later on its AOF ---"
    overload crash
fi

# --- the report ----------------------------------------------------------------

# med NAME ARRAY (lib.sh): the median of ARRAY over the rounds of NAME
row() { printf '%-34s %12s %12s %12s\n' "$@"; }
kv() { printf '%-58s %14s%s\n' "$1" "$2" "${3:-}"; }

echo
echo "=== ngx_cdp bench-spool: $(nproc) CPUs, wrk -t1 -c$CONNS, nginx 1 worker each," \
     "$(elapsed "$T_START" "$(now)")s ==="
echo
echo "1. Redis healthy: the pixel with cdp_spool vs without, $ROUNDS rounds x ${SECONDS_PER_RUN}s"
row "" "no spool" "spool" "spool/no"
for r in $(seq 1 "$ROUNDS"); do
    row "round $r req/s" "${RPS[plain_$r]}" "${RPS[spool_$r]}" \
        "$(ratio "${RPS[spool_$r]}" "${RPS[plain_$r]}")"
    row "round $r CPU us/hit nginx" "${NGX[plain_$r]}" "${NGX[spool_$r]}" \
        "$(ratio "${NGX[spool_$r]}" "${NGX[plain_$r]}")"
done
for a in RPS:"median req/s" P99:"median p99 latency (ms)" \
         NGX:"med. CPU us/hit nginx worker" RDS:"med. CPU us/hit redis" \
         IDLE:"med. idle CPU during wrk (%)" QMAX:"med. queue max (cdp_queue_events)"; do
    m0=$(med plain "${a%%:*}") m1=$(med spool "${a%%:*}")
    case ${a%%:*} in
        RPS|NGX|RDS) row "${a#*:}" "$m0" "$m1" "$(ratio "$m1" "$m0")" ;;
        *) row "${a#*:}" "$m0" "$m1" "" ;;
    esac
done
sum_of() {    # sum_of NAME ARRAY: over the warm-up and the rounds
    local -n arr=$2
    local r t=0
    for r in $(seq 0 "$ROUNDS"); do t=$((t + arr[${1}_$r])); done
    echo "$t"
}
row "hits answered (warm-up + rounds)" "$(sum_of plain HITS)" "$(sum_of spool HITS)" ""
row "events added to the stream" "$(sum_of plain ADDED)" "$(sum_of spool ADDED)" ""
row "events stored (counter)" "$(sum_of plain STOREDC)" "$(sum_of spool STOREDC)" ""
row "events spooled" "-" "$(sum_of spool SPOOLED)" ""
row "events dropped" "$(sum_of plain DROPPED)" "$(sum_of spool DROPPED)" ""
echo "(each run: answered (stub_status) = stored, as deltas over the run, both nginx;"
echo " the spool directory of \"spool\" at the end: $SPOOL1_LS; Redis used_memory $FAST_MEM)"

# the overload reports: keyed NAME (over, crash)
report_overload() {
    local x=$1 st0=${O_ST0[$1]} st1=${O_ST1[$1]} st=${O_ST2[$1]} e added stored \
          spooled replayed resent applied drops d0 replay_after
    e=$(stream_added "$x")
    stored=$(counter cdp_events_stored_total "$st")
    spooled=$(counter "$C_SPOOLED" "$st")
    replayed=$(counter "$C_REPLAYED" "$st")
    resent=$(counter cdp_events_resent_total "$st")
    applied=$(counter cdp_events_already_applied_total "$st")
    drops=$(drops_of "$st")
    d0=$(counter cdp_events_dropped_total "$st")
    replay_after=$((replayed - O_REPLAYED_W[$x]))
    kv "req/s, p99 latency (ms) (wrk)" "${O_RPS[$x]}" ", ${O_P99[$x]}"
    kv "CPU us/hit nginx worker during wrk" "${O_NGX[$x]}"
    [ "$x" = over ] && kv "CPU us/hit redis, wrk + drain" "${O_RDS[$x]}"
    kv "max queue (cdp_queue_events, once a second)" "${O_QMAX[$x]:-0}" \
        "  (cdp_queue_size $OVER_QUEUE)"
    kv "max spool size (cdp_spool_bytes, once a second)" "$(mb "${O_SBMAX[$x]:-0}")"
    if [ "$x" = crash ]; then
        kv "Redis kill -9, started again, at (s of the run)" \
            "${O_KILL[$x]:-?}, ${O_RESTART[$x]:-?}"
        kv "Redis AOF load time after the restart (s, its log)" "${O_LOADED[$x]:-?}"
        kv "nginx connected again, s after the restart" "${O_RECONNECT[$x]:-?}" \
            "  (reconnect backoff: 100 ms doubling to 5 s)"
        kv "replay rate from then until drained (events/s)" "${O_RATE_RC[$x]:-?}"
        kv "redis disconnects, connect failures (counters)" \
            "$(counter cdp_redis_disconnects_total "$st")" \
            ", $(counter cdp_redis_connect_failures_total "$st")"
    fi
    kv "hits answered (stub_status, + 1 sanity hit)" "${ANSWERED[$x]}"
    kv "when wrk stopped: events in the stream (entries-added)" "${O_STORED_W[$x]}" \
        "  (stored counter ${O_STOREDC_W[$x]})"
    kv "when wrk stopped: events spooled, replayed" "${O_SPOOLED_W[$x]}" \
        ", ${O_REPLAYED_W[$x]}"
    kv "drain: from 0.2 s after wrk's end until done (s)" "${O_DRAIN_S[$x]}" \
        "  (${O_DRAINED[$x]})"
    kv "replay rate: replayed after wrk / drain s (events/s)" \
        "$(per_s "$replay_after" "${O_DRAIN_S[$x]}")" "  ($replay_after replayed after wrk)"
    kv "replay rate: all replayed / drain s (events/s)" "$(per_s "$replayed" "${O_DRAIN_S[$x]}")"
    kv "after the drain: events in the stream (entries-added)" "$e" \
        "  (XLEN $(stream_len "$x"))"
    kv "after the drain: stored (counter)" "$stored"
    kv "after the drain: spooled, replayed" "$spooled" ", $replayed"
    kv "after the drain: resent, already_applied" "$resent" ", $applied"
    kv "after the drain: spool bytes, files (gauges)" \
        "$(counter cdp_spool_bytes "$st")" ", $(counter cdp_spool_files "$st")"
    kv "after the drain: spool set aside (*.bad)" "$(counter cdp_spool_set_aside_total "$st")"
    kv "dropped (cdp_events_dropped_total)" "$d0" "$drops"
    kv "AOF size (appendonlydir)" "$(mb "${O_AOF[$x]:-0}")"
    kv "the spool directory at the end" "$(spool_ls "$x")"

    local f=0
    if [ "$e" != "${ANSWERED[$x]}" ]; then
        fail "$2: $e events in the stream for ${ANSWERED[$x]} hits answered" \
             "(drain: ${O_DRAINED[$x]} after ${O_DRAIN_S[$x]}s)"
        f=1
    fi
    if [ "${O_DRAINED[$x]}" != yes ]; then
        fail "$2: the spool did not drain within ${DRAIN_LIMIT}s (${O_DRAINED[$x]})"
        f=1
    fi
    if [ "$x" = over ] && [ "$stored" != "${ANSWERED[$x]}" ]; then
        fail "$2: stored counter $stored for ${ANSWERED[$x]} hits answered"
        f=1
    fi
    if [ "${O_DRAINED[$x]}" = yes ] \
       && { [ "$e" -gt $((stored + applied)) ] || [ "$stored" -gt "$e" ]; }; then
        fail "$2: $e events in the stream, stored counter $stored, already applied $applied"
        f=1
    fi
    if [ "$d0" != 0 ]; then
        fail "$2: $d0 events dropped:$drops"
        f=1
    fi
    if [ "$f" = 1 ]; then
        echo "  counters at wrk's start / at its end / after the drain:"
        paste <(printf '%s\n' "$st0") <(printf '%s\n' "$st1" | awk '{ print $2 }') \
              <(printf '%s\n' "$st" | awk '{ print $2 }') \
            | grep -E '^cdp_(events|spool|queue|redis)' | awk '{ printf "    %-52s %10s %10s %10s\n", $1, $2, $3, $4 }'
        echo "  spool directory $(spool_dir "$x"):"
        ls -la "$(spool_dir "$x")" 2>&1 | sed 's/^/    /'
        echo "  error.log, cdp: lines (last 30):"
        grep 'cdp:' "$TMP/$x/logs/error.log" | tail -30 | sed 's/^/    /'
    fi
}

echo
echo "2. overload: Redis appendonly yes, appendfsync $OVER_FSYNC; cdp_queue_size $OVER_QUEUE;" \
     "wrk unthrottled ${SECONDS_PER_RUN}s"
report_overload over "part 2"
if [ "$CRASH" = on ]; then
    echo
    echo "3. overload and crash: Redis kill -9 at a third of the run, started again 3 s later"
    report_overload crash "part 3"
fi

# --- the error logs ------------------------------------------------------------

echo
for x in $NGINXES; do
    error_log_report "$x" "$TMP/$x/logs/error.log" "${MASTER[$x]}" "${WORKER[$x]}" \
        || fail "the worker of \"$x\" exited on a signal"
done
[ "$bad_total" -gt 0 ] && echo "note: $bad_total non-2xx responses or socket errors in the wrk runs"
[ "$(sum_of spool SPOOLED)" != 0 ] \
    && echo "note: part 1's \"spool\" spooled events while Redis was healthy: its CPU figures include spool writes"
[ "${O_SPOOLED_W[over]:-0}" = 0 ] \
    && echo "note: part 2 spooled nothing: Redis kept up (OVER_QUEUE=$OVER_QUEUE, appendfsync $OVER_FSYNC)"

echo
if [ "${#WARNS[@]}" != 0 ]; then
    echo "WARNING:"
    printf '  %s\n' "${WARNS[@]}"
fi
if [ "${#FAILS[@]}" = 0 ]; then
    if [ "${#WARNS[@]}" = 0 ]; then p1="each run of both nginx"
    else p1="each run of \"spool\"; of \"plain\" but its queue_full drops"; fi
    echo "OK: every pixel hit answered was stored, once (part 1: $p1;" \
         "part 2: ${ANSWERED[over]} hits, ${O_SPOOLED_W[over]:-0} of them through the spool$(
         [ "$CRASH" = on ] && printf '; part 3: %s hits across a kill -9 of Redis' "${ANSWERED[crash]}"))"
    exit 0
fi
echo "FAIL:"
printf '  %s\n' "${FAILS[@]}"
exit 1
