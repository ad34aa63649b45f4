#!/bin/bash
# make bench-cluster (make bench runs it after capture.sh): the pixel on a
# Redis Cluster of 3 masters against the same pixel on one redis-server,
# side by side in one run. Two nginx (1 worker each, the new-visitor pixel
# with a browser User-Agent, BENCH_UA of wrk.sh, no GeoIP,
# `cdp_consent_default all;`, so that every hit is one event) and four
# private redis-server, all on this machine, on loopback TCP (a cluster
# node is reached at the address it announces, never a unix socket: the
# standalone Redis is reached over TCP too, so both pay the same
# transport), all with `appendonly no` and no RDB snapshot:
#
#   single   `cdp_redis 127.0.0.1:PORT prefix=cluster shards=SHARDS;` on a
#            redis-server started as bench.sh starts it (one batch, one
#            FCALL, carries the events of every shard)
#   cluster  `cdp_redis_cluster <the 3 masters> prefix=cluster
#            shards=SHARDS;` on a Redis Cluster of 3 masters, no replicas
#            (redis-server --cluster-enabled yes, their nodes.conf in the
#            temp dir, `redis-cli --cluster create ... --cluster-replicas
#            0`: equal runs of slots), ready once every node says
#            cluster_state:ok and knows the 3 of them (nginx sends one
#            batch per shard, to the master of the shard's slot)
#
# Each round runs wrk on both, in alternate order, for BENCH_SECONDS; no
# cookie is sent, so each hit is a new browser (a random id, in any of the
# SHARDS shards). After each run, before the next starts, Redis works off
# what it left (the worker's queue is empty and its stored counter stopped
# growing, read from /status only: nothing asks Redis meanwhile).
#
#   ROUNDS         rounds, each one run per nginx (default 3)
#   BENCH_SECONDS  seconds per wrk run (default 10)
#   CONNECTIONS    wrk connections (default 50)
#   SHARDS         shards= of both (default 48: 16 per master; a multiple
#                  of 3 gives each master as many)
#   SPREAD_LIMIT   the largest spread of the events over the masters, in %,
#                  that passes (default 10)
#   STREAM_MAXLEN  cdp_stream_maxlen (default 1000000, the module's, per
#                  shard's stream); events are counted with entries-added
#   PIXEL_PATH     the pixel request (default: a page view,
#                  /p.gif?url=https%3A%2F%2Fshop.example%2Fpricing)
#   KEEP_BENCH_DIR set: keep the temp dir (configs, logs, nodes.conf)
#
# About 1.5 minutes with the defaults (6 runs of 10 s and 2 warm-ups of
# 2 s, each followed by Redis settling; the cluster's creation, ~2 s).
#
# How to read it. The machine is small and shared: the cluster's three
# masters share its CPUs with wrk and nginx, where the single Redis is one
# process; compare side by side, round by round and by the medians and
# ratios cluster/standalone. Each run's line: req/s and p99 (wrk), the hits
# nginx answered (stub_status, read around the run), the CPU time (user +
# system, /proc) of the nginx worker per hit during wrk, and of Redis per
# event stored (the single redis-server's; the sum of the 3 masters'), from
# before wrk until Redis settled, so the backlog's work is in it; the
# machine's idle share during wrk; "queue max": the largest
# cdp_queue_events read once a second (how far Redis lagged); the events
# stored (the shards' streams' entries-added, asked of the Redis that
# holds them: each master for the streams of its own slots; and the
# /status counter) and the events per batch (cdp_redis_batches_total
# against cdp_events_stored_total: a cluster sends a batch per shard, so
# smaller ones, more FCALLs for as many events). "FCALL us/event" is the
# time Redis measured inside cdp_ingest (INFO commandstats usec, summed
# over the masters): wall-clock time, so on a busy box it includes the
# time the process was preempted and may exceed the CPU time; what Redis's
# CPU per event has beyond it is the cost of each command (reading,
# parsing, replying, the event loop), which smaller batches pay more
# often. "idle Redis" (ms of CPU a second, INFO cpu, read once before the
# runs, both nginx connected and idle) is what the servers cost doing
# nothing: the cluster's nodes ping each other on their bus. With
# KEEP_BENCH_DIR, commandstats-NAME.txt holds each Redis's INFO
# commandstats at the end.
#
# Per master of the cluster: its slots, the shards whose streams it holds,
# their events (summed over every run, warm-ups and sanity hits included)
# and its CPU during the runs; the spread, (max - min) / mean of the
# events per master, passes within SPREAD_LIMIT %.
#
# Exits 1 when a run's stored events (streams or counter) differ from its
# hits answered, but for the events dropped as queue_full (what the module
# does when Redis falls cdp_queue_size events behind, 10000: a WARNING,
# that run's Redis did not keep up on a busy box), an event was dropped
# for another reason, a master answered for a stream with
# a redirection (the layout and the slots disagree), the spread of the
# events over the masters exceeds SPREAD_LIMIT %, or a worker exited on a
# signal; 2 when the bench could not run (among others: a redis-cli without
# --cluster, a redis-server older than 7.0).

set -u

TOP=$(cd "$(dirname "$0")/../.." && pwd)
NGINX_BIN=${NGINX_BIN:-/usr/sbin/nginx}
MODULE=$TOP/build/objs/ngx_http_cdp_module.so
PYTHON=/usr/bin/python3
SECONDS_PER_RUN=${BENCH_SECONDS:-10}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNECTIONS:-50}
SHARDS=${SHARDS:-48}
SPREAD_LIMIT=${SPREAD_LIMIT:-10}
STREAM_MAXLEN=${STREAM_MAXLEN:-1000000}
PIXEL_PATH=${PIXEL_PATH:-"/p.gif?url=https%3A%2F%2Fshop.example%2Fpricing"}
WARMUP=2
PREFIX=cluster
MASTERS=3
SETTLE_LIMIT=60
. "$TOP/tests/bench/cpu.sh"
. "$TOP/tests/bench/wrk.sh"
BENCH_NAME=bench-cluster
. "$TOP/tests/bench/lib.sh"

check_tools deps-test
case $SECONDS_PER_RUN$ROUNDS$CONNS$SHARDS$SPREAD_LIMIT$STREAM_MAXLEN in
    *[!0-9]*) die "BENCH_SECONDS, ROUNDS, CONNECTIONS, SHARDS, SPREAD_LIMIT and STREAM_MAXLEN must be integers" ;;
esac
[ "$ROUNDS" -ge 1 ] && [ "$SECONDS_PER_RUN" -ge 1 ] && [ "$SHARDS" -ge "$MASTERS" ] \
    && [ "$SHARDS" -le 1024 ] || die "ROUNDS, BENCH_SECONDS >= 1; SHARDS from $MASTERS to 1024"
# a cluster: redis-cli's --cluster (Redis 5 and later), Redis 7 (the
# module's cdp_redis_cluster; the bus on a port of its own, cluster-port)
redis-cli --cluster help 2>&1 | grep -q '^ *create ' \
    || die "this redis-cli has no --cluster (redis-cli of Redis 5 or later: apt-get install redis-tools)"
RV=$(redis-server --version | sed -n 's/.* v=\([0-9]*\)\..*/\1/p')
[ "${RV:-0}" -ge 7 ] \
    || die "redis-server $(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p') is older than 7.0: cdp_redis_cluster needs Redis Cluster 7"
[ -f "$TOP/scripts/cdp-key" ] || die "no $TOP/scripts/cdp-key"

TMP=$(mktemp -d /tmp/ngx_cdp_cluster.XXXXXX) || die "mktemp failed"
# nginx instances (single, cluster): their port, master, worker
declare -A PORT MASTER WORKER
# redis-server instances (single, node1 .. node3): their port, bus port, pid
declare -A RPORT BUS RPID
NODES="node1 node2 node3"
SETUPS="single cluster"

cleanup() {
    trap '' INT TERM
    local x
    for x in $SETUPS; do stop_nginx "${MASTER[$x]:-}"; done
    for x in single $NODES; do stop_redis "${RPID[$x]:-}" -p "${RPORT[$x]:-0}"; done
    remove_tmp
}
set_traps

# nine free loopback ports, chosen by the kernel: two nginx, four Redis,
# the cluster bus of each node (cluster-port: port + 10000 would often be
# above 65535 for the ports the kernel hands out)
read -r PORT[single] PORT[cluster] RPORT[single] RPORT[node1] RPORT[node2] \
    RPORT[node3] BUS[node1] BUS[node2] BUS[node3] < <(free_ports 9)
[ -n "${BUS[node3]:-}" ] || die "could not find free ports"

# --- Redis -----------------------------------------------------------------

rcli() { local r=$1; shift; redis-cli -p "${RPORT[$r]}" "$@"; }

# start_redis NAME [ARG...]: the redis-server NAME in $TMP/NAME on
# 127.0.0.1:RPORT[NAME], appendonly no; waits for its PONG
start_redis() {
    local r=$1
    shift
    mkdir -p "$TMP/$r"
    redis_launch "$TMP/$r" --bind 127.0.0.1 --port "${RPORT[$r]}" --appendonly no "$@"
    RPID[$r]=$!
    redis_ready "${RPID[$r]}" 100 -p "${RPORT[$r]}" \
        || { cat "$TMP/$r/redis.log" >&2; die "Redis \"$r\" did not start"; }
}

start_redis single
for r in $NODES; do
    start_redis "$r" --cluster-enabled yes \
        --cluster-config-file "$TMP/$r/nodes.conf" --cluster-port "${BUS[$r]}"
done

T_START=$(now)
SEEDS=
for r in $NODES; do SEEDS="$SEEDS 127.0.0.1:${RPORT[$r]}"; done
# shellcheck disable=SC2086
redis-cli --cluster create $SEEDS --cluster-replicas 0 --cluster-yes \
    > "$TMP/cluster-create.txt" 2>&1 \
    || { cat "$TMP/cluster-create.txt" >&2; die "redis-cli --cluster create failed"; }

# cluster_ok: every node says cluster_state:ok and knows the 3 of them
cluster_ok() {
    local r info
    for r in $NODES; do
        info=$(rcli "$r" CLUSTER INFO 2>/dev/null | tr -d '\r')
        printf '%s\n' "$info" | grep -qx 'cluster_state:ok' || return 1
        printf '%s\n' "$info" | grep -qx "cluster_known_nodes:$MASTERS" || return 1
        printf '%s\n' "$info" | grep -qx 'cluster_slots_ok:16384' || return 1
    done
}
i=0
until cluster_ok; do
    [ "$i" -lt 300 ] || { cat "$TMP/cluster-create.txt" >&2
        for r in $NODES; do rcli "$r" CLUSTER INFO >&2; done
        die "the cluster is not ok 30 s after its creation"; }
    sleep 0.1; i=$((i + 1))
done
CLUSTER_READY=$(elapsed "$T_START" "$(now)")

# the shards' streams, and which master holds each: the slot of each key
# (CLUSTER KEYSLOT), the slots of each master (its own line of CLUSTER
# NODES); STREAMS_<node>: the file of the streams a master holds
$PYTHON "$TOP/scripts/cdp-key" --prefix "$PREFIX" --shards "$SHARDS" events \
    > "$TMP/streams.txt" || die "scripts/cdp-key failed"
[ "$(wc -l < "$TMP/streams.txt")" = "$SHARDS" ] || die "scripts/cdp-key did not name $SHARDS streams"
sed 's/^/CLUSTER KEYSLOT /' "$TMP/streams.txt" | rcli node1 > "$TMP/slots.txt"
paste -d ' ' "$TMP/streams.txt" "$TMP/slots.txt" > "$TMP/stream-slots.txt"
declare -A SLOTS_OF NSHARDS
for r in $NODES; do
    SLOTS_OF[$r]=$(rcli "$r" CLUSTER NODES | tr -d '\r' \
        | awk '$3 ~ /myself/ { for (i = 9; i <= NF; i++) if ($i !~ /^\[/) printf "%s ", $i }')
    awk -v ranges="${SLOTS_OF[$r]}" '
        BEGIN { n = split(ranges, rg, " ") }
        { for (i = 1; i <= n; i++) {
              lo = rg[i]; hi = rg[i]
              if (index(rg[i], "-")) { split(rg[i], b, "-"); lo = b[1]; hi = b[2] }
              if ($2 + 0 >= lo + 0 && $2 + 0 <= hi + 0) { print $1; break }
          } }' "$TMP/stream-slots.txt" > "$TMP/streams-$r.txt"
    NSHARDS[$r]=$(wc -l < "$TMP/streams-$r.txt")
done
[ $((NSHARDS[node1] + NSHARDS[node2] + NSHARDS[node3])) = "$SHARDS" ] \
    || die "the masters' slots hold $((NSHARDS[node1] + NSHARDS[node2] + NSHARDS[node3])) of the $SHARDS streams"

# added_of NAME FILE: the sum of entries-added of the streams named in FILE,
# asked of Redis NAME in one pipeline; "redirected" when it answered one
# with a redirection or CLUSTERDOWN (a stream not created yet counts 0)
added_of() {
    sed 's/^/XINFO STREAM /' "$2" | rcli "$1" 2>&1 | tr -d '\r' | awk '
        /^(MOVED|ASK|CLUSTERDOWN|TRYAGAIN)/ { bad = 1 }
        prev == "entries-added" { s += $0 }
        { prev = $0 }
        END { if (bad) print "redirected"; else printf "%d\n", s }'
}

# --- nginx -----------------------------------------------------------------

(umask 077 && openssl rand -hex 32 > "$TMP/secret")

# conf NAME REDIS_LINE: nginx.conf of instance NAME (its own prefix
# directory $TMP/ngx-NAME); both alike but for REDIS_LINE
conf() {
    nginx_conf "$TMP/ngx-$1" "$MODULE" "
    $2
    cdp_secret_file   $TMP/secret;
    cdp_stream_maxlen $STREAM_MAXLEN;
    cdp_consent_default all;

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
conf single "cdp_redis 127.0.0.1:${RPORT[single]} prefix=$PREFIX shards=$SHARDS;"
conf cluster "cdp_redis_cluster$SEEDS prefix=$PREFIX shards=$SHARDS;"

for x in $SETUPS; do
    nginx_start "$TMP/ngx-$x" "http://127.0.0.1:${PORT[$x]}/nginx_status" \
        "MASTER[$x]" "WORKER[$x]" "$x"
done

base() { printf 'http://127.0.0.1:%s' "${PORT[$1]}"; }
status() { curl -s "$(base "$1")/status"; }
# nginx's total request count (stub_status "requests"); reading it is itself
# a request, counted in the figure it returns
ngx_requests() { stub_requests "$(base "$1")"; }
# the nonzero cdp_events_dropped_total samples of status text $1
drops_of() {
    printf '%s\n' "$1" | awk '/^cdp_events_dropped_total/ && $2 > 0 {
        sub(/^cdp_events_dropped_total\{reason="/, "", $1); sub(/"\}$/, "", $1)
        printf " %s=%s", $1, $2 }'
}
is_num() { case $1 in ''|*[!0-9]*) return 1 ;; esac; }

FAILS=() WARNS=()
fail() { FAILS+=("$*"); echo "  FAIL: $*"; }

# stored NAME: the events in NAME's streams, into the variables ADDED_T
# (all) and, for the cluster, ADDED_node1 .. ADDED_node3 (each master's);
# a redirection is a failure (and counts nothing)
stored() {
    local r v
    if [ "$1" = single ]; then
        v=$(added_of single "$TMP/streams.txt")
        is_num "$v" || { fail "the single Redis answered \"$v\" for its streams"; v=0; }
        ADDED_T=$v
        return
    fi
    ADDED_T=0
    for r in $NODES; do
        v=$(added_of "$r" "$TMP/streams-$r.txt")
        is_num "$v" || { fail "master $r (127.0.0.1:${RPORT[$r]}) answered \"$v\" for the streams of its slots"; v=0; }
        printf -v "ADDED_$r" '%s' "$v"
        ADDED_T=$((ADDED_T + v))
    done
}

# redis_ticks NAME: the CPU ticks of NAME's Redis so far (the cluster:
# "SUM NODE1 NODE2 NODE3")
redis_ticks() {
    local r t s=0 each=
    if [ "$1" = single ]; then ticks "${RPID[single]}"; return; fi
    for r in $NODES; do
        t=$(ticks "${RPID[$r]}")
        s=$((s + t)) each="$each $t"
    done
    echo "$s$each"
}

# fcall_stat NAME: "CALLS USEC" of FCALL (INFO commandstats), summed over
# NAME's Redis (the cluster: its masters)
fcall_stat() {
    local r rs=single
    [ "$1" = cluster ] && rs=$NODES
    for r in $rs; do rcli "$r" INFO commandstats; done | tr -d '\r' | awk -F'[:,=]' '
        $1 == "cmdstat_fcall" { for (i = 2; i < NF; i += 2) {
                                    if ($i == "calls") c += $(i + 1)
                                    if ($i == "usec") u += $(i + 1) } }
        END { printf "%d %d\n", c, u }'
}

# sanity: each pixel answers a GIF and a cookie; the hit is stored
declare -A ANSWERED
for x in $SETUPS; do
    h=$(curl -s -A "$BENCH_UA" -o /dev/null -D - "$(base "$x")$PIXEL_PATH")
    printf '%s' "$h" | grep -q '^HTTP/1.1 200' || die "$x: /p.gif not 200: $h"
    printf '%s' "$h" | grep -qi '^set-cookie:' || die "$x: /p.gif: no Set-Cookie: $h"
    ANSWERED[$x]=1
done
for x in $SETUPS; do
    i=0
    until stored "$x" >/dev/null; [ "$ADDED_T" = 1 ]; do
        [ "$i" -lt 100 ] || { cat "$TMP/ngx-$x/logs/error.log" >&2
            die "the first hit of \"$x\" was not stored in 10 s (streams: $ADDED_T)"; }
        sleep 0.1; i=$((i + 1))
    done
done

# cpu_us NAME: the CPU time of NAME's Redis so far in microseconds, as it
# counts it (INFO cpu, used_cpu_sys + used_cpu_user: finer than /proc's
# ticks, for the idle reading), summed over the cluster's masters
cpu_us() {
    local r rs=single
    [ "$1" = cluster ] && rs=$NODES
    for r in $rs; do rcli "$r" INFO cpu; done | tr -d '\r' | awk -F: '
        $1 == "used_cpu_sys" || $1 == "used_cpu_user" { s += $2 }
        END { printf "%d\n", s * 1e6 }'
}

# Redis's CPU while idle (both nginx connected), over IDLE_S seconds
IDLE_S=2
ir0=$(cpu_us single) ic0=$(cpu_us cluster)
sleep "$IDLE_S"
ir1=$(cpu_us single) ic1=$(cpu_us cluster)
IDLE_SINGLE=$(awk -v u=$((ir1 - ir0)) -v s="$IDLE_S" 'BEGIN { printf "%.2f", u / 1000 / s }')
IDLE_CLUSTER=$(awk -v u=$((ic1 - ic0)) -v s="$IDLE_S" 'BEGIN { printf "%.2f", u / 1000 / s }')

# --- the runs ------------------------------------------------------------------

# settle NAME: waits (at most SETTLE_LIMIT s) until NAME's worker has no
# event waiting for Redis and its stored counter stopped growing (from
# /status only: nothing asks Redis while its CPU is counted)
settle() {
    local last=-1 same=0 n q st t0
    t0=$(now)
    while :; do
        st=$(status "$1")
        n=$(counter cdp_events_stored_total "$st") q=$(counter cdp_queue_events "$st")
        if [ "$n" = "$last" ] && [ "$q" = 0 ]; then
            same=$((same + 1))
            [ "$same" -ge 3 ] && return 0
        else
            same=0
        fi
        last=$n
        [ "$(awk -v a="$t0" -v b="$(now)" -v l="$SETTLE_LIMIT" 'BEGIN { print (b - a > l) }')" = 1 ] && {
            echo "  $1: not settled after ${SETTLE_LIMIT}s: stored $n, queue $q"
            return 1; }
        sleep 0.2
    done
}

# keyed NAME_ROUND (single_2, cluster_1, ...); the warm-up is round 0
declare -A RPS P99 NGX RDS IDLE STOREDC ADDED DROPPED QMX BATCHES EPB \
    FCALLS FUS PERM QFULL
# per master: events and CPU ticks, summed over the cluster's runs
declare -A M_EVENTS M_TICKS
for r in $NODES; do M_TICKS[$r]=0; done
bad_total=0

# run NAME ROUND SECONDS: one wrk run on the pixel of NAME, then Redis
# settles; the hits answered against the events stored
run() {
    local x=$1 k=$1_$2 b a w0 w1 r0 r1 i0 it0 i1 it1 st0 st1 e0 f0 f1 n \
          req rps p99 bad err lbl="round $2" r j m0 m1 per='' qf
    [ "$2" = 0 ] && lbl=warm-up
    st0=$(status "$x")
    stored "$x"
    e0=$ADDED_T
    if [ "$x" = cluster ]; then
        for r in $NODES; do m0=ADDED_$r; M0[$r]=${!m0}; done
    fi
    f0=$(fcall_stat "$x")
    b=$(ngx_requests "$x")
    read -r i0 it0 < <(idle_ticks)
    w0=$(ticks "${WORKER[$x]}")
    read -r -a r0 < <(redis_ticks "$x")
    wrk_queue "$x" "$(base "$x")" "$3" "$TMP/$k.txt"
    read -r i1 it1 < <(idle_ticks)
    sleep 0.2    # let the worker finish the last requests wrk left behind
    a=$(ngx_requests "$x")
    w1=$(ticks "${WORKER[$x]}")
    settle "$x" || fail "$x $lbl: Redis did not settle"
    read -r -a r1 < <(redis_ticks "$x")
    f1=$(fcall_stat "$x")
    st1=$(status "$x")
    stored "$x"

    n=$((a - b - 1 - SAMPLES))    # minus the readings of /status and "after"
    QMX[$k]=$QMAX
    ANSWERED[$x]=$((ANSWERED[$x] + n))
    ADDED[$k]=$((ADDED_T - e0))
    STOREDC[$k]=$(($(counter cdp_events_stored_total "$st1") - $(counter cdp_events_stored_total "$st0")))
    DROPPED[$k]=$(($(counter cdp_events_dropped_total "$st1") - $(counter cdp_events_dropped_total "$st0")))
    BATCHES[$k]=$(($(counter cdp_redis_batches_total "$st1") - $(counter cdp_redis_batches_total "$st0")))
    EPB[$k]=$(awk -v e="${STOREDC[$k]}" -v b="${BATCHES[$k]}" 'BEGIN { if (b > 0) printf "%.1f", e / b; else print "n/a" }')
    FCALLS[$k]=$((${f1% *} - ${f0% *}))
    FUS[$k]=$(awk -v u=$((${f1#* } - ${f0#* })) -v e="${ADDED[$k]}" 'BEGIN { if (e > 0) printf "%.1f", u / e; else print "n/a" }')
    NGX[$k]=$(us_per "$((w1 - w0))" "$n")
    RDS[$k]=$(us_per "$((r1[0] - r0[0]))" "${ADDED[$k]}")
    IDLE[$k]=$(pct "$((i1 - i0))" "$((it1 - it0))")
    if [ "$x" = cluster ]; then
        j=1
        for r in $NODES; do
            m1=ADDED_$r
            per="$per $((${!m1} - M0[$r]))"
            M_TICKS[$r]=$((M_TICKS[$r] + r1[j] - r0[j]))
            j=$((j + 1))
        done
        PERM[$k]=${per# }
    fi
    read -r req rps p99 bad err < <(wrk_parse "$TMP/$k.txt")
    RPS[$k]=$rps P99[$k]=$p99
    bad_total=$((bad_total + bad + err))
    if [ "$2" = 0 ]; then
        printf '  warm-up  %-7s %7d hits, stored %d (counter %d), %s events/batch' \
            "$x" "$n" "${ADDED[$k]}" "${STOREDC[$k]}" "${EPB[$k]}"
    else
        printf '  round %d  %-7s %9s req/s  p99 %7s ms  %7d hits  CPU: nginx %5s us/hit, redis %5s us/event  idle %2s%%  queue max %5d  stored %d (counter %d)  %s events/batch' \
            "$2" "$x" "$rps" "$p99" "$n" "${NGX[$k]}" "${RDS[$k]}" "${IDLE[$k]}" \
            "$QMAX" "${ADDED[$k]}" "${STOREDC[$k]}" "${EPB[$k]}"
    fi
    [ "$x" = cluster ] && printf '  per master %s' "${PERM[$k]// //}"
    [ "${DROPPED[$k]}" = 0 ] || printf '  DROPPED %d:%s' "${DROPPED[$k]}" "$(drops_of "$st1")"
    [ "$bad" -gt 0 ] || [ "$err" -gt 0 ] && printf '  (non-2xx %d, socket errors %d)' "$bad" "$err"
    printf '\n'
    # the events beyond cdp_queue_size while Redis lags are dropped
    # (queue_full): the module's documented behaviour, and a run where
    # Redis did not keep up (a warning; stored = answered - dropped); any
    # other difference, or a drop for another reason, fails
    qf=$(($(counter 'cdp_events_dropped_total{reason="queue_full"}' "$st1") \
          - $(counter 'cdp_events_dropped_total{reason="queue_full"}' "$st0")))
    QFULL[$k]=$qf
    if [ "$n" != $((ADDED[$k] + qf)) ] || [ "${ADDED[$k]}" != "${STOREDC[$k]}" ]; then
        fail "$x $lbl: $n hits answered, ${ADDED[$k]} events added to the streams" \
             "($((ADDED[$k] - n)) off), stored counter +${STOREDC[$k]}, dropped ${DROPPED[$k]}"
    fi
    if [ "${DROPPED[$k]}" != "$qf" ]; then
        fail "$x $lbl: ${DROPPED[$k]} events dropped (now:$(drops_of "$st1"))"
    elif [ "$qf" != 0 ]; then
        WARNS+=("$x $lbl: Redis fell cdp_queue_size (10000) events behind (queue max $QMAX at a 1-s sample, idle CPU ${IDLE[$k]}%): $qf events dropped (queue_full); stored = answered - dropped")
        echo "  WARNING: ${WARNS[-1]}"
    fi
}
declare -A M0

echo "ngx_cdp bench-cluster: $(nproc) CPUs; nginx 1 worker each, the new-visitor pixel," \
     "wrk -t1 -c$CONNS -d${SECONDS_PER_RUN}s, shards=$SHARDS, Redis on loopback TCP, appendonly no"
echo "  single:  redis-server 127.0.0.1:${RPORT[single]}"
echo "  cluster: $MASTERS masters, no replicas:$SEEDS (cluster_state:ok ${CLUSTER_READY}s after" \
     "the start of --cluster create); shards per master:" \
     "${NSHARDS[node1]}/${NSHARDS[node2]}/${NSHARDS[node3]}"
echo
echo "--- single vs cluster, $ROUNDS rounds, ${WARMUP}s warm-up each ---"
run single 0 "$WARMUP"
run cluster 0 "$WARMUP"
for r in $(seq 1 "$ROUNDS"); do
    # alternate which goes first, so neither always runs on a warmer box
    if [ $((r % 2)) = 1 ]; then order="single cluster"; else order="cluster single"; fi
    for x in $order; do
        run "$x" "$r" "$SECONDS_PER_RUN"
    done
done

# the events of each master over the whole bench (sanity hit included)
stored cluster
# every Redis's INFO commandstats at the end (the commands cdp_ingest
# called are counted too), for a look with KEEP_BENCH_DIR
for r in single $NODES; do rcli "$r" INFO commandstats > "$TMP/commandstats-$r.txt"; done
M_SUM=0
for r in $NODES; do
    v=ADDED_$r
    M_EVENTS[$r]=${!v}
    M_SUM=$((M_SUM + ${!v}))
done
SPREAD=$(awk -v a="${M_EVENTS[node1]}" -v b="${M_EVENTS[node2]}" -v c="${M_EVENTS[node3]}" 'BEGIN {
    mx = a; mn = a
    if (b > mx) mx = b; if (c > mx) mx = c
    if (b < mn) mn = b; if (c < mn) mn = c
    m = (a + b + c) / 3
    if (m > 0) printf "%.2f", (mx - mn) * 100 / m; else print "n/a" }')

# --- the report ----------------------------------------------------------------

# mem_mb NAME: used_memory of NAME's Redis (the cluster: its masters'), MB
mem_mb() {
    local r rs=single
    [ "$1" = cluster ] && rs=$NODES
    for r in $rs; do rcli "$r" INFO memory; done | tr -d '\r' \
        | awk -F: '$1 == "used_memory" { s += $2 } END { printf "%.0f\n", s / 1048576 }'
}

row() { printf '%-40s %12s %12s %12s\n' "$@"; }
kv() { printf '%-52s %14s%s\n' "$1" "$2" "${3:-}"; }
sum_of() {    # sum_of NAME ARRAY: over the warm-up and the rounds
    local -n arr=$2
    local r t=0
    for r in $(seq 0 "$ROUNDS"); do t=$((t + arr[${1}_$r])); done
    echo "$t"
}

echo
echo "=== ngx_cdp bench-cluster: $(nproc) CPUs, wrk -t1 -c$CONNS, nginx 1 worker each," \
     "shards=$SHARDS, $(elapsed "$T_START" "$(now)")s ==="
echo
echo "the new-visitor pixel, $ROUNDS rounds x ${SECONDS_PER_RUN}s: one redis-server vs a" \
     "cluster of $MASTERS masters (redis CPU: the sum of the masters')"
row "" "standalone" "cluster" "cluster/std"
for r in $(seq 1 "$ROUNDS"); do
    row "round $r req/s" "${RPS[single_$r]}" "${RPS[cluster_$r]}" \
        "$(ratio "${RPS[cluster_$r]}" "${RPS[single_$r]}")"
    row "round $r CPU us/hit nginx" "${NGX[single_$r]}" "${NGX[cluster_$r]}" \
        "$(ratio "${NGX[cluster_$r]}" "${NGX[single_$r]}")"
    row "round $r CPU us/event redis" "${RDS[single_$r]}" "${RDS[cluster_$r]}" \
        "$(ratio "${RDS[cluster_$r]}" "${RDS[single_$r]}")"
done
for a in RPS:"median req/s" P99:"median p99 latency (ms)" \
         NGX:"med. CPU us/hit nginx worker" RDS:"med. CPU us/event redis" \
         FUS:"med. FCALL us/event (commandstats)" EPB:"med. events per batch" \
         IDLE:"med. idle CPU during wrk (%)" QMX:"med. queue max (cdp_queue_events)"; do
    m0=$(med single "${a%%:*}") m1=$(med cluster "${a%%:*}")
    case ${a%%:*} in
        RPS|P99|NGX|RDS|FUS|EPB) row "${a#*:}" "$m0" "$m1" "$(ratio "$m1" "$m0")" ;;
        *) row "${a#*:}" "$m0" "$m1" "" ;;
    esac
done
b0=$(sum_of single BATCHES) b1=$(sum_of cluster BATCHES)
c0=$(sum_of single STOREDC) c1=$(sum_of cluster STOREDC)
row "batches per event (all runs)" \
    "$(awk -v b="$b0" -v e="$c0" 'BEGIN { if (e > 0) printf "%.4f", b / e; else print "n/a" }')" \
    "$(awk -v b="$b1" -v e="$c1" 'BEGIN { if (e > 0) printf "%.4f", b / e; else print "n/a" }')" \
    "$(ratio "$(awk -v b="$b1" -v e="$c1" 'BEGIN { if (e > 0) print b / e }')" \
             "$(awk -v b="$b0" -v e="$c0" 'BEGIN { if (e > 0) print b / e }')")"
row "batches (cdp_redis_batches_total)" "$b0" "$b1" ""
row "FCALL calls (INFO commandstats)" "$(sum_of single FCALLS)" "$(sum_of cluster FCALLS)" ""
row "idle Redis CPU (ms/s, before the runs)" "$IDLE_SINGLE" "$IDLE_CLUSTER" ""
row "hits answered (sanity + warm-up + rounds)" "${ANSWERED[single]}" "${ANSWERED[cluster]}" ""
row "events stored, runs (streams)" "$(sum_of single ADDED)" "$(sum_of cluster ADDED)" ""
row "events stored, runs (counter)" "$c0" "$c1" ""
row "events dropped" "$(sum_of single DROPPED)" "$(sum_of cluster DROPPED)" ""
row "Redis used_memory at the end (MB)" "$(mem_mb single)" "$(mem_mb cluster)" ""
echo "(each run: hits answered (stub_status) = events added to the shards' streams"
echo " (entries-added) = cdp_events_stored_total, as deltas over the run, but for"
echo " the events dropped as queue_full, a warning)"

echo
echo "cluster: the events of each master (the streams of the shards in its slots," \
     "asked of it), all runs"
printf '  %-16s %-12s %6s %10s %7s %10s %12s\n' master slots shards events share \
    "CPU (s)" "us/event"
for r in $NODES; do
    printf '  %-16s %-12s %6d %10d %6s%% %10s %12s\n' "127.0.0.1:${RPORT[$r]}" \
        "${SLOTS_OF[$r]% }" "${NSHARDS[$r]}" "${M_EVENTS[$r]}" \
        "$(pct "${M_EVENTS[$r]}" "$M_SUM")" \
        "$(awk -v t="${M_TICKS[$r]}" -v hz="$HZ" 'BEGIN { printf "%.2f", t / hz }')" \
        "$(us_per "${M_TICKS[$r]}" "${M_EVENTS[$r]}")"
done
qf=$(sum_of cluster QFULL)
[ "$M_SUM" = $((ANSWERED[cluster] - qf)) ] \
    || fail "the masters hold $M_SUM events for ${ANSWERED[cluster]} hits the cluster's nginx answered ($qf dropped as queue_full)"
if [ "$SPREAD" != n/a ] && awk -v s="$SPREAD" -v l="$SPREAD_LIMIT" 'BEGIN { exit !(s <= l) }'; then
    echo "PASS: spread of the events over the masters, (max - min) / mean: $SPREAD% (within $SPREAD_LIMIT%)"
else
    echo "FAIL: spread of the events over the masters, (max - min) / mean: $SPREAD% (more than $SPREAD_LIMIT%)"
    FAILS+=("the events spread over the masters by $SPREAD%, more than $SPREAD_LIMIT%")
fi

# --- the error logs ------------------------------------------------------------

echo
for x in $SETUPS; do
    error_log_report "$x" "$TMP/ngx-$x/logs/error.log" "${MASTER[$x]}" "${WORKER[$x]}" \
        || fail "the worker of \"$x\" exited on a signal"
done
st=$(status cluster)
echo "cluster: redirects moved $(counter 'cdp_redis_redirects_total{kind="moved"}' "$st")," \
     "ask $(counter 'cdp_redis_redirects_total{kind="ask"}' "$st"); slot maps read" \
     "$(counter cdp_redis_map_refreshes_total "$st"); connects $(counter cdp_redis_connects_total "$st")"
[ "$bad_total" -gt 0 ] && echo "note: $bad_total non-2xx responses or socket errors in the wrk runs"

echo
if [ "${#WARNS[@]}" != 0 ]; then
    echo "WARNING:"
    printf '  %s\n' "${WARNS[@]}"
fi
if [ "${#FAILS[@]}" = 0 ]; then
    p1="every pixel hit answered was stored, once, on both"
    [ "${#WARNS[@]}" = 0 ] || p1="every pixel hit answered was stored, once, on both, but those dropped as queue_full"
    echo "OK: $p1 (single ${ANSWERED[single]}, cluster ${ANSWERED[cluster]} hits);" \
         "the cluster's events spread over its masters by $SPREAD%"
    exit 0
fi
echo "FAIL:"
printf '  %s\n' "${FAILS[@]}"
exit 1
