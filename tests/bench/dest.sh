#!/bin/bash
# make bench-dest: what destinations cost the pixel, and whether their
# delivery keeps up with ingest. Three nginx (1 worker each) and one private
# redis-server, all on this machine:
#
#   none   nginx with the module, prefix dest0, no cdp_destination
#   two    nginx with the module, prefix dest2, two destinations:
#            cdp_destination a purpose=analytics uri=/_dest/a
#                            batch=100 flush=100ms;           (segment)
#            cdp_destination b purpose=analytics uri=/_dest/b
#                            format=json batch=100 flush=100ms;
#          (format=json: one POST per event; DEST_B_FORMAT=segment makes
#          b a Segment batch of up to 100 events a POST, like a)
#   sink   nginx WITHOUT the module, the destinations' receiver: every
#          POST is answered 200 {"success":true} (`return`, which discards
#          the body); "two" reaches it through `location /_dest/ {
#          internal; proxy_pass http://sink; }`, an upstream with keepalive
#
# Both cdp nginx share the Redis (unix socket), the module, the secret and
# the configuration but for the destinations: `cdp_consent_default all;`,
# no GeoIP, the module's cdp_queue_size, so every hit stores one event,
# which both destinations of "two" get. Each round runs wrk on the
# new-visitor pixel (GET /p.gif?url=..., no cookie: each hit a new browser;
# a browser User-Agent, BENCH_UA of wrk.sh: without one a hit is a bot's,
# answered but not stored)
# against "none" and against "two", in alternate order. After each run,
# before the next starts, what it left is worked off (the event streams
# stop growing, the worker's queue is empty and, for "two", both
# destinations' out-streams are empty), so that a run's backlog never slows
# the next. The store has SHARDS (16, the module's default) of each
# stream, PREFIX:events:{<tag>}, PREFIX:out:{<tag>}:NAME, ...
# (store/README.md, "Shards"): each figure of a stream below is summed over
# the shards.
#
#   ROUNDS         rounds, each one run per cdp nginx (default 3)
#   BENCH_SECONDS  seconds per wrk run (default 10)
#   CONNECTIONS    wrk connections (default 50)
#   DEST_B_FORMAT  format= of destination b: json (default) or segment
#   DRAIN_LIMIT    seconds a run's backlog may take to drain (default 120)
#   STREAM_MAXLEN  cdp_stream_maxlen (default 1000000, the module's, a
#                  shard's stream)
#   QUEUE_SIZE     cdp_queue_size of both cdp nginx (default: the module's,
#                  10000; events beyond it are dropped while Redis lags)
#   PIXEL_PATH     the pixel request (default: a page view without
#                  campaign parameters, /p.gif?url=https%3A%2F%2Fshop.example%2Fpricing)
#
# How to read it. The machine is small and shared (2 CPUs for wrk, the cdp
# nginx, Redis and, for "two", the sink): compare "two" with "none" side by
# side, round by round and by medians and ratios two/none, not a lone
# figure. Each run's line: req/s and p99 (wrk), the hits nginx answered
# (stub_status), CPU time (user + system, /proc) per hit of the cdp
# nginx's worker, of redis-server and of the sink's worker: the first
# figure during the wrk run (what limits req/s), "all" until the run's
# backlog drained (everything the hits cost, delivery included: Redis's
# XREADGROUP and cdp_dest_done, the worker's rendering and POSTs); the
# machine's idle and steal (CPU time the hypervisor gave to others) shares
# during wrk; "queue max", the largest cdp_queue_events read once a second
# during the run (events the worker holds for Redis: how far Redis lags;
# at cdp_queue_size it drops, shown as DROPPED: then that run's per-hit
# figures count hits that cost Redis nothing). The issue's target: Redis CPU per hit with two destinations at
# most 15% above none (the "all" medians; informational, never an exit
# status). "two" polls its empty out-streams every 100 ms during "none"'s
# runs too (a few Redis calls a second).
# Delivery, for each run of "two": events stored (XINFO STREAM
# dest2:events:{<tag>} entries-added) and delivered per destination
# (cdp_destination_delivered_total of its /status), per second of the run
# and as delivered/stored (1.000 keeps up; the rest is the backlog when
# wrk stops); the backlog (XLEN dest2:out:{<tag>}:NAME) 0.2 s after wrk's
# end, the seconds it took from then to drain to 0 and its rate then; the
# POSTs (cdp_destination_requests_total, and the sink's own count).
#
# Exits 1 when, at the end, an event "two" stored was not delivered to
# both destinations (cdp_destination_delivered_total of a and of b !=
# events stored), an event was dropped (cdp_events_dropped_total, either
# nginx) or dead-lettered (cdp_destination_dead_lettered_total, or entries
# in dest2:dead:{<tag>}:NAME), a backlog did not drain within DRAIN_LIMIT,
# or Redis did not store every pixel hit nginx answered; 2 when the bench
# could not run. The three error logs are shown at the end when they hold
# anything of level warn or above, and a worker that exited is named
# (neither changes the exit status).

set -u

TOP=$(cd "$(dirname "$0")/../.." && pwd)
NGINX_BIN=${NGINX_BIN:-/usr/sbin/nginx}
MODULE=$TOP/build/objs/ngx_http_cdp_module.so
SECONDS_PER_RUN=${BENCH_SECONDS:-10}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNECTIONS:-50}
STREAM_MAXLEN=${STREAM_MAXLEN:-1000000}
DRAIN_LIMIT=${DRAIN_LIMIT:-120}
B_FORMAT=${DEST_B_FORMAT:-json}
WARMUP=2
SHARDS=16
PIXEL_PATH=${PIXEL_PATH:-"/p.gif?url=https%3A%2F%2Fshop.example%2Fpricing"}
QUEUE_SIZE=${QUEUE_SIZE:-}
. "$TOP/tests/bench/cpu.sh"
. "$TOP/tests/bench/wrk.sh"
BENCH_NAME=bench-dest
. "$TOP/tests/bench/lib.sh"

check_tools deps-test
case $SECONDS_PER_RUN$ROUNDS$CONNS$STREAM_MAXLEN$DRAIN_LIMIT$QUEUE_SIZE in
    *[!0-9]*) die "BENCH_SECONDS, ROUNDS, CONNECTIONS, STREAM_MAXLEN, DRAIN_LIMIT and QUEUE_SIZE must be integers" ;;
esac
[ "$ROUNDS" -ge 1 ] && [ "$SECONDS_PER_RUN" -ge 1 ] && [ "$DRAIN_LIMIT" -ge 1 ] \
    || die "ROUNDS, BENCH_SECONDS, DRAIN_LIMIT >= 1"
case $B_FORMAT in
    json|segment) ;;
    *) die "DEST_B_FORMAT is json or segment" ;;
esac

TMP=$(mktemp -d /tmp/ngx_cdp_dest.XXXXXX) || die "mktemp failed"
redis_pid=
declare -A PORT MASTER WORKER PFX

cleanup() {
    trap '' INT TERM
    local x
    for x in none two sink; do stop_nginx "${MASTER[$x]:-}"; done
    stop_redis "$redis_pid" -s "$TMP/redis.sock"
    remove_tmp
}
set_traps

# three free loopback ports, chosen by the kernel
read -r PORT[none] PORT[two] PORT[sink] < <(free_ports 3)
[ -n "${PORT[sink]:-}" ] || die "could not find free ports"
PFX[none]=dest0
PFX[two]=dest2

# --- Redis -----------------------------------------------------------------

rcli() { redis-cli -s "$TMP/redis.sock" "$@"; }

redis_launch "$TMP" --port 0 --appendonly no
redis_pid=$!
redis_ready "$redis_pid" 100 -s "$TMP/redis.sock" \
    || { cat "$TMP/redis.log" >&2; die "Redis did not start"; }

# --- nginx -----------------------------------------------------------------

(umask 077 && openssl rand -hex 32 > "$TMP/secret")

# conf NAME MODULE HTTP_LINES SERVER_LINES: nginx.conf of instance NAME
# (its own prefix directory $TMP/NAME; MODULE empty: without the module)
conf() {
    nginx_conf "$TMP/$1" "$2" "$3
    server {
        listen 127.0.0.1:${PORT[$1]};
$4
        # nginx's own request counter: the hits it answered, including the
        # ones still in flight when wrk stops counting
        location = /nginx_status {
            stub_status;
        }
    }"
}

# the cdp nginx: DESTINATIONS are its cdp_destination lines (none or two)
cdp_conf() {
    conf "$1" "$MODULE" "
    cdp_redis         unix:$TMP/redis.sock prefix=${PFX[$1]} shards=$SHARDS;
    cdp_secret_file   $TMP/secret;
    cdp_stream_maxlen $STREAM_MAXLEN;
    cdp_consent_default all;
    ${QUEUE_SIZE:+cdp_queue_size $QUEUE_SIZE;}
$2
    upstream sink {
        server 127.0.0.1:${PORT[sink]};
        keepalive 16;
    }
" "
        location = /p.gif {
            cdp_pixel;
        }

        location = /status {
            cdp_status;
        }

        # the destinations' deliveries, to the sink
        location /_dest/ {
            internal;
            proxy_pass http://sink;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }
"
}

cdp_conf none ""
cdp_conf two "
    cdp_destination a purpose=analytics uri=/_dest/a batch=100 flush=100ms;
    cdp_destination b purpose=analytics uri=/_dest/b format=$B_FORMAT batch=100 flush=100ms;"
# the sink: return reads and discards a request's body before answering
conf sink "" "
    client_body_buffer_size 1m;
    client_max_body_size 64m;
    default_type application/json;
" "
        location / {
            return 200 '{\"success\":true}';
        }
"

# start NAME: the nginx of instance NAME, MASTER[NAME] and WORKER[NAME]
start() {
    nginx_start "$TMP/$1" "http://127.0.0.1:${PORT[$1]}/nginx_status" \
        "MASTER[$1]" "WORKER[$1]" "$1"
}
start sink
start none
start two

base() { printf 'http://127.0.0.1:%s' "${PORT[$1]}"; }
status() { curl -s "$(base "$1")/status"; }
# nginx's total request count (stub_status "requests"); reading it is itself
# a request, counted in the figure it returns
ngx_requests() { stub_requests "$(base "$1")"; }
dcounter() { counter "cdp_destination_$1{destination=\"$2\"}" "$3"; }
# stream_added PREFIX: the events ever appended to its shards' streams
stream_added() { streams_added "$1" "$SHARDS" -s "$TMP/redis.sock"; }
# xlen KIND NAME: the entries of destination NAME's out-streams (KIND out)
# or dead-letter streams (dead) of "two", all shards'
xlen() { cdp_keys "${PFX[two]}" "$SHARDS" "$1" "$2" | sum_xlen -s "$TMP/redis.sock"; }
# steal_ticks: "STEAL TOTAL" of every CPU so far (steal: time the
# hypervisor ran something else while this machine wanted the CPU)
steal_ticks() {
    awk '$1 == "cpu" { t = 0; for (i = 2; i <= NF; i++) t += $i;
                       print $9 + 0, t; exit }' /proc/stat
}

# sanity: the sink answers a POST with a body, twice on one connection
head -c 200000 /dev/zero | tr '\0' x > "$TMP/body"
out=$(curl -s -H 'Content-Type: application/json' --data-binary @"$TMP/body" \
      "$(base sink)/_dest/a" --next -s -H 'Content-Type: application/json' \
      --data-binary @"$TMP/body" "$(base sink)/_dest/b")
[ "$out" = '{"success":true}{"success":true}' ] || die "the sink answers a POST with: $out"

# sanity: both pixels answer a GIF and a cookie; each hit is stored
for x in none two; do
    h=$(curl -s -A "$BENCH_UA" -o /dev/null -D - "$(base "$x")$PIXEL_PATH")
    printf '%s' "$h" | grep -q '^HTTP/1.1 200' || die "$x: /p.gif not 200: $h"
    printf '%s' "$h" | grep -qi '^set-cookie:' || die "$x: /p.gif: no Set-Cookie: $h"
done
declare -A ANSWERED
ANSWERED[none]=1 ANSWERED[two]=1

# sanity: the hit of "two" reaches the sink through both destinations
i=0
while :; do
    st=$(status two)
    [ "$(dcounter delivered_total a "$st")" = 1 ] \
        && [ "$(dcounter delivered_total b "$st")" = 1 ] && break
    [ "$i" -lt 100 ] || { printf '%s\n' "$st" | grep destination >&2
                          cat "$TMP/two/logs/error.log" >&2
                          die "the first event of \"two\" was not delivered in 10 s"; }
    sleep 0.1; i=$((i + 1))
done
[ -z "$(status none | grep '^cdp_destination_')" ] \
    || die "\"none\" reports destinations in /status"

# --- runs ---------------------------------------------------------------------

per_s() {
    awk -v n="$1" -v s="$2" 'BEGIN { if (s > 0) printf "%.0f", n / s; else print "n/a" }'
}

# drain NAME T_START: waits (at most DRAIN_LIMIT s) until what the last run
# of NAME left is worked off: its event streams stop growing, the worker's
# queue is empty and, for "two", both out-streams are empty; sets DRAIN_A
# and DRAIN_B (seconds from T_START until out:a, out:b were empty, for
# good), DRAINED (yes/no)
drain() {
    local last=-1 same=0 n q la lb t st
    DRAIN_A= DRAIN_B= DRAINED=no
    while :; do
        t=$(now)
        n=$(stream_added "${PFX[$1]}")
        st=$(status "$1")
        q=$(counter cdp_queue_events "$st")
        la=0 lb=0
        if [ "$1" = two ]; then
            la=$(xlen out a) lb=$(xlen out b)
            [ "$la" = 0 ] && [ -z "$DRAIN_A" ] && DRAIN_A=$(elapsed "$2" "$t")
            [ "$lb" = 0 ] && [ -z "$DRAIN_B" ] && DRAIN_B=$(elapsed "$2" "$t")
            # an out-stream that empties again after growing
            [ "$la" != 0 ] && DRAIN_A=
            [ "$lb" != 0 ] && DRAIN_B=
        fi
        if [ "$n" = "$last" ] && [ "$q" = 0 ] && [ "$la" = 0 ] && [ "$lb" = 0 ]; then
            same=$((same + 1))
            [ "$same" -ge 3 ] && { DRAINED=yes; break; }
        else
            same=0
        fi
        last=$n
        if [ "$(awk -v a="$2" -v b="$t" -v l="$DRAIN_LIMIT" 'BEGIN { print (b - a > l) }')" = 1 ]; then
            echo "  $1: not drained after ${DRAIN_LIMIT}s: entries-added $n, queue $q, out:a $la, out:b $lb"
            break
        fi
        sleep 0.1
    done
}

# keyed NAME_ROUND (none_2, two_1, ...)
declare -A RPS P99 REQS NGX_W NGX_A RDS_W RDS_A SNK_A IDLE STEAL HITS QMAX DROPPED
# keyed ROUND (the runs of "two")
declare -A STORED_W STORED_ALL DELIV_A DELIV_B REQ_A REQ_B SINK_REQ \
    BACKLOG_A BACKLOG_B DRAINS_A DRAINS_B RUN_S
DRAIN_FAILED=0
bad_total=0

# run NAME ROUND SECONDS: one wrk run on the pixel of NAME, then its drain
run() {
    local x=$1 k=$1_$2 b a w0 w1 w2 r0 r1 r2 s0 s1 s2 i0 i1 it0 it1 sl0 sl1 slt0 slt1 t0 t1 \
          st0 st1 st2 e0 e1 e2 sk0 sk1 n req rps p99 bad err secs \
          samples qmax
    st0=$(status "$x") e0=$(stream_added "${PFX[$x]}")
    [ "$x" = two ] && sk0=$(ngx_requests sink)
    b=$(ngx_requests "$x")
    read -r i0 it0 < <(idle_ticks)
    read -r sl0 slt0 < <(steal_ticks)
    w0=$(ticks "${WORKER[$x]}") r0=$(ticks "$redis_pid") s0=$(ticks "${WORKER[sink]}")
    t0=$(now)
    # the worker's queue for Redis once a second (each reading a request)
    wrk_queue "$x" "$(base "$x")" "$3" "$TMP/$k.txt"
    samples=$SAMPLES qmax=$QMAX
    read -r i1 it1 < <(idle_ticks)
    read -r sl1 slt1 < <(steal_ticks)
    IDLE[$k]=$(pct "$((i1 - i0))" "$((it1 - it0))")
    STEAL[$k]=$(pct "$((sl1 - sl0))" "$((slt1 - slt0))")
    sleep 0.2    # let the worker finish the last requests wrk left behind
    a=$(ngx_requests "$x")
    w1=$(ticks "${WORKER[$x]}") r1=$(ticks "$redis_pid") s1=$(ticks "${WORKER[sink]}")
    st1=$(status "$x") e1=$(stream_added "${PFX[$x]}")
    t1=$(now)
    if [ "$x" = two ]; then
        BACKLOG_A[$2]=$(xlen out a) BACKLOG_B[$2]=$(xlen out b)
    fi
    drain "$x" "$t1"
    [ "$DRAINED" = yes ] || DRAIN_FAILED=1
    w2=$(ticks "${WORKER[$x]}") r2=$(ticks "$redis_pid") s2=$(ticks "${WORKER[sink]}")
    st2=$(status "$x") e2=$(stream_added "${PFX[$x]}")

    # minus the readings of /status and of "after" itself
    n=$((a - b - samples - 1))
    HITS[$k]=$n
    ANSWERED[$x]=$((ANSWERED[$x] + n))
    QMAX[$k]=$qmax
    DROPPED[$k]=$(($(counter cdp_events_dropped_total "$st2") - $(counter cdp_events_dropped_total "$st0")))
    NGX_W[$k]=$(us_per "$((w1 - w0))" "$n") NGX_A[$k]=$(us_per "$((w2 - w0))" "$n")
    RDS_W[$k]=$(us_per "$((r1 - r0))" "$n") RDS_A[$k]=$(us_per "$((r2 - r0))" "$n")
    SNK_A[$k]=$(us_per "$((s2 - s0))" "$n")
    read -r req rps p99 bad err < <(wrk_parse "$TMP/$k.txt")
    RPS[$k]=$rps P99[$k]=$p99 REQS[$k]=$req
    bad_total=$((bad_total + bad + err))
    if [ "$2" = 0 ]; then
        [ "${DROPPED[$k]}" = 0 ] || echo "  warm-up $x: ${DROPPED[$k]} events dropped"
        return
    fi
    printf '  round %d  %-4s %9s req/s  p99 %7s ms  %7d hits  CPU us/hit: nginx %5s (all %5s)  redis %5s (all %5s)  sink %5s  idle %s%% steal %s%%  queue max %s' \
        "$2" "$x" "$rps" "$p99" "$n" "${NGX_W[$k]}" "${NGX_A[$k]}" \
        "${RDS_W[$k]}" "${RDS_A[$k]}" "${SNK_A[$k]}" "${IDLE[$k]}" "${STEAL[$k]}" "$qmax"
    [ "${DROPPED[$k]}" = 0 ] || printf '  DROPPED %d' "${DROPPED[$k]}"
    [ "$bad" -gt 0 ] || [ "$err" -gt 0 ] && printf '  (non-2xx %d, socket errors %d)' "$bad" "$err"
    printf '\n'
    if [ "$x" = two ]; then
        secs=$(elapsed "$t0" "$t1")
        RUN_S[$2]=$secs
        STORED_W[$2]=$((e1 - e0)) STORED_ALL[$2]=$((e2 - e0))
        DELIV_A[$2]=$(($(dcounter delivered_total a "$st1") - $(dcounter delivered_total a "$st0")))
        DELIV_B[$2]=$(($(dcounter delivered_total b "$st1") - $(dcounter delivered_total b "$st0")))
        REQ_A[$2]=$(($(dcounter requests_total a "$st2") - $(dcounter requests_total a "$st0")))
        REQ_B[$2]=$(($(dcounter requests_total b "$st2") - $(dcounter requests_total b "$st0")))
        sk1=$(ngx_requests sink)
        SINK_REQ[$2]=$((sk1 - sk0 - 1))
        DRAINS_A[$2]=${DRAIN_A:-"> $DRAIN_LIMIT"} DRAINS_B[$2]=${DRAIN_B:-"> $DRAIN_LIMIT"}
        printf '           delivery in %ss: stored %d (%s/s); a %d (%s/s, ratio %s), b %d (%s/s, ratio %s); backlog a %d, b %d, drained in %ss, %ss\n' \
            "$secs" "${STORED_W[$2]}" "$(per_s "${STORED_W[$2]}" "$secs")" \
            "${DELIV_A[$2]}" "$(per_s "${DELIV_A[$2]}" "$secs")" "$(ratio "${DELIV_A[$2]}" "${STORED_W[$2]}")" \
            "${DELIV_B[$2]}" "$(per_s "${DELIV_B[$2]}" "$secs")" "$(ratio "${DELIV_B[$2]}" "${STORED_W[$2]}")" \
            "${BACKLOG_A[$2]}" "${BACKLOG_B[$2]}" "${DRAINS_A[$2]}" "${DRAINS_B[$2]}"
    fi
}

echo "ngx_cdp bench-dest: wrk -t1 -c$CONNS -d${SECONDS_PER_RUN}s on the new-visitor pixel," \
     "$ROUNDS rounds x 2 runs, ${WARMUP}s warm-up each;" \
     "3 nginx of 1 worker (none, two, sink), Redis on a unix socket, $(nproc) CPUs"
echo "destinations of \"two\": a (segment) and b ($B_FORMAT), batch=100 flush=100ms, to the sink"
echo "warm-up..."
run none 0 "$WARMUP"
run two 0 "$WARMUP"
for r in $(seq 1 "$ROUNDS"); do
    # alternate which goes first, so neither always runs on a warmer box
    if [ $((r % 2)) = 1 ]; then order="none two"; else order="two none"; fi
    for x in $order; do
        run "$x" "$r" "$SECONDS_PER_RUN"
    done
done

# --- the report ----------------------------------------------------------------

# med NAME ARRAY (lib.sh): the median of ARRAY over the rounds of NAME
medr() {    # medr ARRAY: the median of ARRAY, keyed by round
    local -n arr=$1
    local r v=()
    for r in $(seq 1 "$ROUNDS"); do v+=("${arr[$r]}"); done
    median "${v[@]}"
}
row() { printf '%-34s %12s %12s %12s\n' "$@"; }
kv() { printf '%-58s %12s%s\n' "$1" "$2" "${3:-}"; }

echo
echo "=== ngx_cdp bench-dest: the pixel (new visitors) with two destinations vs none:" \
     "$ROUNDS rounds x ${SECONDS_PER_RUN}s, wrk -t1 -c$CONNS, 1 worker each, $(nproc) CPUs ==="
echo "    two = a (segment) + b ($B_FORMAT), batch=100 flush=100ms, to a sink nginx (keepalive)"
row "" "none" "two" "two/none"
for r in $(seq 1 "$ROUNDS"); do
    row "round $r req/s" "${RPS[none_$r]}" "${RPS[two_$r]}" "$(ratio "${RPS[two_$r]}" "${RPS[none_$r]}")"
done
for a in RPS:"median req/s" P99:"median p99 latency (ms)" \
         NGX_W:"med. CPU us/hit nginx (wrk)" NGX_A:"med. CPU us/hit nginx (all)" \
         RDS_W:"med. CPU us/hit redis (wrk)" RDS_A:"med. CPU us/hit redis (all)" \
         SNK_A:"med. CPU us/hit sink (all)" IDLE:"med. idle CPU during wrk (%)" \
         STEAL:"med. steal during wrk (%)"; do
    m0=$(med none "${a%%:*}") m2=$(med two "${a%%:*}")
    case ${a%%:*} in
        RPS|NGX_*|RDS_*) row "${a#*:}" "$m0" "$m2" "$(ratio "$m2" "$m0")" ;;
        *) row "${a#*:}" "$m0" "$m2" "" ;;
    esac
done
sum_dropped() {
    local r t=0
    for r in $(seq 1 "$ROUNDS"); do t=$((t + DROPPED[${1}_$r])); done
    echo "$t"
}
row "events dropped, all rounds" "$(sum_dropped none)" "$(sum_dropped two)" ""
rds0=$(med none RDS_A) rds2=$(med two RDS_A)
rds_ratio=$(ratio "$rds2" "$rds0")
verdict=$(awk -v r="$rds_ratio" 'BEGIN { if (r == "n/a") print "n/a"; else if (r <= 1.15) print "PASS"; else print "OVER TARGET" }')
rds_pct=$(awk -v r="$rds_ratio" 'BEGIN { if (r == "n/a") print "n/a"; else printf "%+.1f%%", (r - 1) * 100 }')
echo
echo "target: Redis CPU per hit with two destinations at most 15% above none (all, medians):"
echo "        $rds2 us vs $rds0 us = x$rds_ratio ($rds_pct): $verdict (informational)"

echo
echo "=== delivery of \"two\": during each wrk run, then the backlog's drain (events/s) ==="
printf '%-8s %9s %9s %8s %9s %8s %13s %11s %13s %8s %8s %9s\n' "" "stored/s" \
    "a deliv/s" "a/stored" "b deliv/s" "b/stored" "backlog a|b" "drain a|b s" \
    "drain/s a|b" "a POSTs" "b POSTs" "sink POSTs"
drain_rate() {
    awk -v n="$1" -v s="$2" 'BEGIN { if (s + 0 > 0) printf "%.0f", n / s; else print "n/a" }'
}
for r in $(seq 1 "$ROUNDS"); do
    printf '%-8s %9s %9s %8s %9s %8s %13s %11s %13s %8s %8s %9s\n' "round $r" \
        "$(per_s "${STORED_W[$r]}" "${RUN_S[$r]}")" \
        "$(per_s "${DELIV_A[$r]}" "${RUN_S[$r]}")" "$(ratio "${DELIV_A[$r]}" "${STORED_W[$r]}")" \
        "$(per_s "${DELIV_B[$r]}" "${RUN_S[$r]}")" "$(ratio "${DELIV_B[$r]}" "${STORED_W[$r]}")" \
        "${BACKLOG_A[$r]}|${BACKLOG_B[$r]}" "${DRAINS_A[$r]}|${DRAINS_B[$r]}" \
        "$(drain_rate "${BACKLOG_A[$r]}" "${DRAINS_A[$r]}")|$(drain_rate "${BACKLOG_B[$r]}" "${DRAINS_B[$r]}")" \
        "${REQ_A[$r]}" "${REQ_B[$r]}" "${SINK_REQ[$r]}"
done
echo "(stored and delivered from wrk's start to 0.2 s after its end; a/stored, b/stored: 1.000 keeps up;"
echo " backlog: XLEN ${PFX[two]}:out:{*}:NAME then; drain: seconds from then until it was 0, and the rate;"
echo " POSTs: cdp_destination_requests_total and the sink's requests, wrk's start to the drain's end)"

# --- correctness ---------------------------------------------------------------

# the counters may trail the out-stream's emptying by one Redis reply
st=$(status two)
stored_two=$(stream_added "${PFX[two]}")
for i in $(seq 50); do
    [ "$(dcounter delivered_total a "$st")" = "$stored_two" ] \
        && [ "$(dcounter delivered_total b "$st")" = "$stored_two" ] && break
    sleep 0.1
    st=$(status two)
done
st0=$(status none)
stored_none=$(stream_added "${PFX[none]}")
del_a=$(dcounter delivered_total a "$st") del_b=$(dcounter delivered_total b "$st")
q_a=$(dcounter queued_total a "$st") q_b=$(dcounter queued_total b "$st")
dead_a=$(dcounter dead_lettered_total a "$st") dead_b=$(dcounter dead_lettered_total b "$st")
retr_a=$(dcounter retried_total a "$st") retr_b=$(dcounter retried_total b "$st")
filt_a=$(dcounter filtered_total a "$st") filt_b=$(dcounter filtered_total b "$st")
reqs_a=$(dcounter requests_total a "$st") reqs_b=$(dcounter requests_total b "$st")
drop_two=$(counter cdp_events_dropped_total "$st")
drop_none=$(counter cdp_events_dropped_total "$st0")
drops=$( { printf '%s\n' "$st" | sed 's/^/two: /'; printf '%s\n' "$st0" | sed 's/^/none: /'; } \
         | awk '$2 ~ /^cdp_events_dropped_total/ && $3 > 0 { printf " %s %s=%s", $1, $2, $3 }')
xa=$(xlen out a) xb=$(xlen out b)
xda=$(xlen dead a) xdb=$(xlen dead b)
fcall=$(rcli INFO commandstats | tr -d '\r' | grep '^cmdstat_fcall:')
failed_calls=$(printf '%s' "$fcall" | sed -n 's/.*failed_calls=\([0-9]*\).*/\1/p')

echo
kv "pixel hits answered by \"none\" (nginx count, + warm-up)" "${ANSWERED[none]}"
kv "events appended to ${PFX[none]}:events:{*} (entries-added)" "$stored_none"
kv "pixel hits answered by \"two\" (nginx count, + warm-up)" "${ANSWERED[two]}"
kv "events appended to ${PFX[two]}:events:{*} (entries-added)" "$stored_two"
kv "\"two\" queued_total a | b" "$q_a | $q_b"
kv "\"two\" delivered_total a | b" "$del_a | $del_b"
kv "\"two\" requests_total a | b" "$reqs_a | $reqs_b" \
    "  ($(ratio "$del_a" "$reqs_a") | $(ratio "$del_b" "$reqs_b") events a POST)"
kv "\"two\" retried_total a | b" "$retr_a | $retr_b"
kv "\"two\" dead_lettered_total a | b" "$dead_a | $dead_b"
kv "\"two\" filtered_total a | b" "$filt_a | $filt_b"
kv "XLEN out:a | out:b, dead:a | dead:b at the end" "$xa | $xb, $xda | $xdb"
kv "cdp_events_dropped_total none | two" "$drop_none | $drop_two" "$drops"
kv "FCALL failed calls (INFO commandstats)" "${failed_calls:-0}"
kv "Redis keys (DBSIZE), used_memory" "$(rcli DBSIZE)" \
    ", $(rcli INFO memory | tr -d '\r' | sed -n 's/^used_memory_human://p')"
kv "last round: backlog a | b when wrk stopped" "${BACKLOG_A[$ROUNDS]} | ${BACKLOG_B[$ROUNDS]}"
kv "last round: seconds to drain a | b" "${DRAINS_A[$ROUNDS]} | ${DRAINS_B[$ROUNDS]}"
echo "Redis time by command over the whole bench (INFO commandstats; FCALL is both nginx's"
echo "cdp_ingest and \"two\"'s cdp_dest_done, and the commands they call are counted in it too):"
rcli INFO commandstats | tr -d '\r' | awk -F'[:,]' '/^cmdstat_/ {
        for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
        printf "%s %d %d %.2f\n", substr($1, 9), v["calls"], v["usec"], v["usec_per_call"] }' \
    | sort -k3,3nr | head -8 \
    | awk '{ printf "    %-22s %10d calls %12.1f s %10.2f us/call\n", $1, $2, $3 / 1e6, $4 }'
[ "$bad_total" -gt 0 ] && echo "note: $bad_total non-2xx responses or socket errors in the wrk runs"
[ "$q_a" != "$stored_two" ] || [ "$q_b" != "$stored_two" ] \
    && echo "note: queued_total a $q_a, b $q_b for $stored_two events stored"

# --- the error logs ------------------------------------------------------------

echo
for x in none two sink; do
    log=$TMP/$x/logs/error.log
    nerr=$(grep -cE '\[(emerg|alert|crit|error)\]|exited on signal' "$log")
    nwarn=$(grep -c '\[warn\]' "$log")
    w=$(pgrep -P "${MASTER[$x]}" | head -1)
    if [ "$nerr" = 0 ] && [ "$nwarn" = 0 ] && [ "$w" = "${WORKER[$x]}" ]; then
        echo "error.log of \"$x\": clean"
        continue
    fi
    echo "WARNING: error.log of \"$x\": $nerr emerg/alert/crit/error lines, $nwarn warnings"
    grep -E '\[(emerg|alert|crit|error|warn)\]|exited on signal' "$log" | head -20 | sed 's/^/    /'
    [ "$w" = "${WORKER[$x]}" ] \
        || echo "WARNING: the worker of \"$x\" is ${w:-gone}, not ${WORKER[$x]}: it exited and was replaced"
done

rc=0
if [ "$del_a" != "$stored_two" ] || [ "$del_b" != "$stored_two" ]; then
    echo "FAIL: \"two\" stored $stored_two events; delivered to a $del_a, to b $del_b"
    rc=1
fi
if [ "$drop_none" != 0 ] || [ "$drop_two" != 0 ]; then
    echo "FAIL: events dropped:$drops"
    rc=1
fi
if [ "$dead_a" != 0 ] || [ "$dead_b" != 0 ] || [ "$xda" != 0 ] || [ "$xdb" != 0 ]; then
    echo "FAIL: dead-lettered: a $dead_a, b $dead_b (dead:a $xda, dead:b $xdb entries)"
    rc=1
fi
if [ "$DRAIN_FAILED" != 0 ]; then
    echo "FAIL: a run's backlog did not drain within ${DRAIN_LIMIT}s"
    rc=1
fi
if [ "$stored_none" != "${ANSWERED[none]}" ] || [ "$stored_two" != "${ANSWERED[two]}" ]; then
    echo "FAIL: stored != answered: none $stored_none of ${ANSWERED[none]}," \
         "two $stored_two of ${ANSWERED[two]} (dropped: none $drop_none, two $drop_two)"
    rc=1
fi
if [ "$rc" = 0 ]; then
    echo "OK: every pixel hit answered was stored (none $stored_none, two $stored_two);" \
         "every event of \"two\" was delivered to a and to b, none dropped, none dead-lettered"
fi
exit "$rc"
