#!/bin/bash
# make bench: the cdp_pixel against nginx's own ceiling, `userid on;` +
# `empty_gif;`, on the same nginx (1 worker), with wrk on loopback and a
# private redis-server, then a count of what reached Redis.
#
#   BENCH_SECONDS  seconds per wrk run (default 10)
#   ROUNDS         rounds, each four wrk runs: pixel and empty_gif for new
#                  visitors, then for returning ones (default 3)
#   CONNECTIONS    wrk connections (default 50)
#   STREAM_MAXLEN  cdp_stream_maxlen of the bench (default 1000000, the
#                  module's default, per shard's stream); stored events
#                  are counted with XINFO STREAM entries-added, which
#                  trimming keeps, summed over the SHARDS streams
#   GEOIP          on (default): cdp_geoip_db with the test database; off
#   REDIS_VIA      how nginx reaches Redis: unix (default) or tcp
#   COOKIE_POOL    cookies minted per location for returning visitors
#                  (default 2000)
#   CEILING        on: after the report, what the store costs the pixel:
#                  the new-visitor runs again with cdp_ingest replaced by a
#                  function that stores nothing, then by one that only
#                  XADDs each event (default off; those runs store nothing
#                  that is checked)
#
# Every request to the pixel and to userid + empty_gif carries the same
# browser User-Agent (BENCH_UA, wrk.sh): without one the pixel files a hit
# as a bot's and stores nothing.
#
# Two scenarios, on the same nginx and Redis:
#   new        no cookie is sent: every request mints a new id in both
#              locations (for the pixel, a new browser record in Redis):
#              the worst case for the pixel.
#   returning  every request carries a valid cookie picked at random from a
#              pool minted before the rounds (cdp_aid= for the pixel, uid=
#              for userid), sent by tests/bench/cookies.lua in both
#              locations, so wrk's per-request cost is the same in both.
# The machine is small and shared: read the ratios and the medians, not a
# lone absolute figure. The CPU columns say where a request's time goes:
# wrk's, nginx's worker's and redis-server's CPU time per request, from
# /proc, and the share of the machine idle during the run. With two cores,
# empty_gif keeps both busy (wrk and nginx); the pixel adds Redis as a third
# process, and the scheduler keeps wrk and nginx, which wake each other, on
# one core and leaves Redis's core idle between batches (a fifth to a quarter
# of the machine, seen on a 2-core VM in 2026-11).
#
# Exits 1 when Redis did not store every pixel hit that nginx answered (its
# stub_status request counter, read around each pixel run and around the
# minting of the pixel's cookie pool: wrk's own "N requests" misses the last
# replies in flight when it stops, up to one per connection), when any
# event was dropped, when wrk counted more answered hits than Redis stored,
# or when the returning pixel runs kept no cookie (the pool was not valid).
#
# The store has SHARDS (16, the module's default) event streams,
# bench:events:{<tag>} (store/README.md, "Shards"): every count of the
# stream is summed over them. An API message with a userId is appended to
# the stream of shard 0 (it has no anonymousId), then moved to its user's
# profile's shard when that is another: entries-added counts it in both,
# so the API's stored events are the entries added less the XDELs of the
# moves (INFO commandstats).

set -u

TOP=$(cd "$(dirname "$0")/../.." && pwd)
NGINX_BIN=${NGINX_BIN:-/usr/sbin/nginx}
MODULE=$TOP/build/objs/ngx_http_cdp_module.so
SECONDS_PER_RUN=${BENCH_SECONDS:-10}
ROUNDS=${ROUNDS:-3}
# the module's default: Redis trims the stream as in production, so its
# memory stops growing; what was appended is counted by XINFO's
# entries-added, which trimming does not decrease
STREAM_MAXLEN=${STREAM_MAXLEN:-1000000}
REDIS_VIA=${REDIS_VIA:-unix}
# geo lookups on (the test database of tests/integration/geo_db.pl; the
# bench's 127.0.0.1 is not in it, so each hit pays a full lookup miss)
GEOIP=${GEOIP:-on}
CONNS=${CONNECTIONS:-50}
POOL=${COOKIE_POOL:-2000}
WARMUP=2
COOKIES_LUA=$TOP/tests/bench/cookies.lua
. "$TOP/tests/bench/cpu.sh"
. "$TOP/tests/bench/wrk.sh"
BENCH_NAME=bench
. "$TOP/tests/bench/lib.sh"
PREFIX=bench
SHARDS=16
API_KEY=bench-write-key
API_BATCH=${API_BATCH:-100}
API_CONNECTIONS=${API_CONNECTIONS:-8}
API_LUA=$TOP/tests/bench/api.lua
CEILING=${CEILING:-off}

check_tools deps
[ -f "$COOKIES_LUA" ] || die "no wrk script at $COOKIES_LUA"
case $SECONDS_PER_RUN$ROUNDS$CONNS$POOL in
    *[!0-9]*) die "BENCH_SECONDS, ROUNDS, CONNECTIONS and COOKIE_POOL must be integers" ;;
esac
[ "$ROUNDS" -ge 1 ] && [ "$SECONDS_PER_RUN" -ge 1 ] && [ "$POOL" -ge 1 ] \
    || die "ROUNDS, BENCH_SECONDS, COOKIE_POOL >= 1"

TMP=$(mktemp -d /tmp/ngx_cdp_bench.XXXXXX) || die "mktemp failed"
redis_pid=
nginx_pid=

# the events ever appended to the shards' streams
stream_added() { streams_added "$PREFIX" "$SHARDS" -p "$REDIS_PORT"; }

cleanup() {
    trap '' INT TERM
    stop_nginx "$nginx_pid"
    stop_redis "$redis_pid" -p "${REDIS_PORT:-}"
    remove_tmp
}
set_traps

# two free loopback ports, chosen by the kernel
read -r REDIS_PORT HTTP_PORT < <(free_ports 2)
[ -n "${HTTP_PORT:-}" ] || die "could not find free ports"

# nginx reaches Redis over its unix socket, as make run does: on one
# machine it costs both sides less kernel time than TCP loopback
case $REDIS_VIA in
    unix) BENCH_REDIS="unix:$TMP/redis.sock" ;;
    tcp)  BENCH_REDIS="127.0.0.1:$REDIS_PORT" ;;
    *)    die "REDIS_VIA is unix or tcp" ;;
esac

GEOIP_LINE=
if [ "$GEOIP" = on ]; then
    perl "$TOP/tests/integration/geo_db.pl" "$TMP/geo.mmdb" >/dev/null \
        || die "could not write the GeoIP test database (make deps-test)"
    GEOIP_LINE="cdp_geoip_db $TMP/geo.mmdb;"
fi

# --- Redis -----------------------------------------------------------------

redis_launch "$TMP" --bind 127.0.0.1 --port "$REDIS_PORT" --appendonly no
redis_pid=$!
redis_ready "$redis_pid" 100 -p "$REDIS_PORT" \
    || { cat "$TMP/redis.log" >&2; die "Redis did not start"; }

# --- nginx -----------------------------------------------------------------

(umask 077 && openssl rand -hex 32 > "$TMP/secret")
nginx_conf "$TMP" "$MODULE" "
    cdp_redis         $BENCH_REDIS prefix=$PREFIX shards=$SHARDS;
    cdp_secret_file   $TMP/secret;
    cdp_stream_maxlen $STREAM_MAXLEN;
    cdp_consent_default all;
    $GEOIP_LINE

    server {
        listen 127.0.0.1:$HTTP_PORT;

        location = /p.gif {
            cdp_pixel;
        }

        location = /ug.gif {
            userid         on;
            userid_name    uid;
            userid_expires 400d;
            empty_gif;
        }

        location = /status {
            cdp_status;
        }

        # the server API, with Segment's batch endpoint
        location /v1/ {
            cdp_api;
            cdp_write_key $API_KEY;
            client_body_buffer_size 1m;
        }

        # nginx's own request counter: how many pixel hits nginx answered,
        # including the ones still in flight when wrk stops counting
        location = /nginx_status {
            stub_status;
        }
    }"

BASE=http://127.0.0.1:$HTTP_PORT
nginx_start "$TMP" "$BASE/status" nginx_pid worker_pid

# sanity: both answer a GIF and a cookie
for u in /p.gif /ug.gif; do
    h=$(curl -s -A "$BENCH_UA" -o /dev/null -D - "$BASE$u")
    printf '%s' "$h" | grep -q '^HTTP/1.1 200' || die "$u: not 200: $h"
    printf '%s' "$h" | grep -qi '^set-cookie:' || die "$u: no Set-Cookie: $h"
done
# the sanity pixel hit is stored too
sanity_hits=1

# nginx's total request count (stub_status "requests"); reading it is itself
# a request, counted in the figure it returns
ngx_requests() { stub_requests "$BASE"; }

status() { curl -s "$BASE/status"; }

# --- the cookie pools: returning visitors ------------------------------------

# mint URL COOKIE_NAME FILE: POOL requests to URL in one curl (one
# keep-alive connection, ?n=1..POOL), the COOKIE_NAME=value of each
# Set-Cookie into FILE, one a line
mint() {
    curl -s -A "$BENCH_UA" -o /dev/null -D - "$1?n=[1-$POOL]" \
        | tr -d '\r' \
        | sed -n "s/^[Ss]et-[Cc]ookie: *\($2=[^;]*\).*/\1/p" > "$3"
    local n
    n=$(sort -u "$3" | wc -l)
    [ "$n" = "$POOL" ] || die "minting $1: $n distinct $2 cookies, not $POOL"
}

echo "ngx_cdp bench: wrk -t1 -c$CONNS -d${SECONDS_PER_RUN}s --latency," \
     "$ROUNDS rounds x 4 runs, ${WARMUP}s warm-up; nginx 1 worker, Redis on 127.0.0.1:$REDIS_PORT"
echo "minting $POOL cookies per location for the returning visitors..."
t0=$(date +%s.%N)
# the pixel's minting hits are answered and stored like any other: counted
# by nginx around them, like the wrk pixel runs
before=$(ngx_requests)
mint "$BASE/p.gif" cdp_aid "$TMP/pool_pixel.txt"
after=$(ngx_requests)
mint_answered=$((after - before - 1))
[ "$mint_answered" = "$POOL" ] \
    || die "nginx answered $mint_answered pixel requests while minting $POOL"
mint "$BASE/ug.gif" uid "$TMP/pool_ug.txt"
t1=$(date +%s.%N)
mint_secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
echo "minted $POOL cdp_aid + $POOL uid cookies in ${mint_secs}s"

# sanity: userid takes a pooled uid back without setting a new one (the
# pixel's kept cookies are counted by /status around its returning runs)
h=$(curl -s -A "$BENCH_UA" -o /dev/null -D - -H "Cookie: $(head -n 1 "$TMP/pool_ug.txt")" "$BASE/ug.gif")
printf '%s' "$h" | grep -q '^HTTP/1.1 200' || die "/ug.gif with a cookie: not 200: $h"
printf '%s' "$h" | grep -qi '^set-cookie:' \
    && die "/ug.gif did not accept a pooled uid cookie: $h"

# --- wrk -------------------------------------------------------------------

# wrk_run NAME URL SECONDS [POOL_FILE]: runs wrk (with a pool: each request
# carries a random cookie of it, via cookies.lua), leaves its output in
# $TMP/NAME.txt; adds the requests nginx answered during a pixel run to
# nginx_answered, and for a pixel run with cookies, the /status cookie
# counters' deltas to ret_kept, ret_new, ret_bad and its answered requests
# to ret_answered; the CPU time of the run per request answered, of wrk,
# nginx's worker and redis-server, to WRK[NAME], NGX[NAME] and RDS[NAME] (in
# us), and the share of the machine left idle to IDLE[NAME] (in %)
nginx_answered=$mint_answered
ret_answered=0 ret_kept=0 ret_new=0 ret_bad=0
wrk_run() {
    local before after st0 st1 script=() args=() c0 w0 r0 i0 t0 i1 t1 n
    [ -n "${4:-}" ] && { script=(-s "$COOKIES_LUA"); args=(-- "$4"); }
    # read /status outside the stub_status window
    [ "$2" = /p.gif ] && [ -n "${4:-}" ] && st0=$(status)
    before=$(ngx_requests)
    read -r i0 t0 < <(idle_ticks)
    c0=$(child_ticks) w0=$(ticks "$worker_pid") r0=$(ticks "$redis_pid")
    wrk -t1 -c"$CONNS" -d"$3"s --latency -H "User-Agent: $BENCH_UA" \
        "${script[@]}" "$BASE$2" "${args[@]}" \
        > "$TMP/$1.txt" 2>&1 \
        || { cat "$TMP/$1.txt" >&2; die "wrk failed on $2"; }
    c0=$(($(child_ticks) - c0))
    read -r i1 t1 < <(idle_ticks)
    sleep 0.2    # let the worker finish the last requests wrk left behind
    after=$(ngx_requests)
    # Redis is at most a batch behind nginx: its time is read here
    n=$((after - before))
    WRK[$1]=$(us_per "$c0" "$n")
    NGX[$1]=$(us_per "$(($(ticks "$worker_pid") - w0))" "$n")
    RDS[$1]=$(us_per "$(($(ticks "$redis_pid") - r0))" "$n")
    IDLE[$1]=$(pct "$((i1 - i0))" "$((t1 - t0))")
    if [ "$2" = /p.gif ]; then
        # minus the reading of "after" itself
        nginx_answered=$((nginx_answered + after - before - 1))
        if [ -n "${4:-}" ]; then
            st1=$(status)
            ret_answered=$((ret_answered + after - before - 1))
            ret_kept=$((ret_kept + $(counter 'cdp_cookies_total{result="kept"}' "$st1") \
                                 - $(counter 'cdp_cookies_total{result="kept"}' "$st0")))
            ret_new=$((ret_new + $(counter 'cdp_cookies_total{result="new"}' "$st1") \
                               - $(counter 'cdp_cookies_total{result="new"}' "$st0")))
            ret_bad=$((ret_bad \
                + $(counter 'cdp_cookies_total{result="forged"}' "$st1") \
                - $(counter 'cdp_cookies_total{result="forged"}' "$st0") \
                + $(counter 'cdp_cookies_total{result="malformed"}' "$st1") \
                - $(counter 'cdp_cookies_total{result="malformed"}' "$st0")))
        fi
    fi
}

# keyed KIND_SCENARIO_ROUND, e.g. pixel_ret_2
declare -A RPS P99 WRK NGX RDS IDLE
echo "warm-up..."
wrk_run warm_pixel /p.gif "$WARMUP"
wrk_run warm_ug /ug.gif "$WARMUP"

# pixel hits answered by wrk's count: the warm-up, the minting, the rounds
answered=$(( $(wrk_parse "$TMP/warm_pixel.txt" | cut -d' ' -f1) + POOL ))
bad_total=0
for r in $(seq 1 "$ROUNDS"); do
    # alternate which goes first, so neither always runs on a warmer box
    if [ $((r % 2)) = 1 ]; then order="pixel ug"; else order="ug pixel"; fi
    for s in new ret; do
        for k in $order; do
            if [ "$k" = pixel ]; then u=/p.gif; pool=$TMP/pool_pixel.txt
            else u=/ug.gif; pool=$TMP/pool_ug.txt; fi
            [ "$s" = new ] && pool=
            wrk_run "${k}_${s}_$r" "$u" "$SECONDS_PER_RUN" "$pool"
            read -r req rps p99 bad err < <(wrk_parse "$TMP/${k}_${s}_$r.txt")
            n=${k}_${s}_$r
            printf '  round %d  %-5s %-9s %9s req/s  p99 %8s ms  %9d requests  CPU us/req: wrk %s nginx %s redis %s; idle %s%%' \
                "$r" "$k" "$([ "$s" = new ] && echo new || echo returning)" \
                "$rps" "$p99" "$req" "${WRK[$n]}" "${NGX[$n]}" "${RDS[$n]}" "${IDLE[$n]}"
            [ "$bad" -gt 0 ] || [ "$err" -gt 0 ] && printf '  (non-2xx %d, socket errors %d)' "$bad" "$err"
            printf '\n'
            bad_total=$((bad_total + bad))
            RPS[${k}_${s}_$r]=$rps
            P99[${k}_${s}_$r]=$p99
            [ "$k" = pixel ] && answered=$((answered + req))
        done
    done
done
# --- what reached Redis ------------------------------------------------------

# waits until the stream stops growing and the worker's queue is empty
settle() {
    echo "waiting for Redis to stop growing..."
    local last=-1 same=0 i=0 n q
    while :; do
        n=$(stream_added)
        q=$(counter cdp_queue_events "$(status)")
        if [ "$n" = "$last" ] && [ "$q" = 0 ]; then
            same=$((same + 1))
            [ "$same" -ge 3 ] && break
        else
            same=0
        fi
        last=$n
        i=$((i + 1))
        [ "$i" -ge 240 ] && { echo "bench: still growing after 120 s"; break; }
        sleep 0.5
    done
}
settle

st=$(status)
stored=$(stream_added)
retained=$(streams_len "$PREFIX" "$SHARDS" -p "$REDIS_PORT")
browsers=$(redis-cli -p "$REDIS_PORT" --scan --pattern "$PREFIX:profile:*" | wc -l)
c_accepted=$(counter cdp_events_accepted_total "$st")
c_stored=$(counter cdp_events_stored_total "$st")
c_dropped=$(counter cdp_events_dropped_total "$st")
c_batches=$(counter cdp_redis_batches_total "$st")
c_new=$(counter 'cdp_cookies_total{result="new"}' "$st")
c_kept=$(counter 'cdp_cookies_total{result="kept"}' "$st")
# hits the module did not track (bots, prefetches): none, with BENCH_UA
c_filtered=$(counter cdp_filtered_total "$st")
drops=$(printf '%s\n' "$st" | awk '/^cdp_events_dropped_total/ && $2 > 0 { printf " %s=%s", $1, $2 }')

cmdstat=$(redis-cli -p "$REDIS_PORT" INFO commandstats | tr -d '\r' | grep '^cmdstat_fcall:')
fcalls=$(printf '%s' "$cmdstat" | sed -n 's/.*[:,]calls=\([0-9]*\).*/\1/p')
usec_per_call=$(printf '%s' "$cmdstat" | sed -n 's/.*usec_per_call=\([0-9.]*\).*/\1/p')
failed_calls=$(printf '%s' "$cmdstat" | sed -n 's/.*failed_calls=\([0-9]*\).*/\1/p')
: "${fcalls:=0}" "${usec_per_call:=0}" "${failed_calls:=0}"
used_memory=$(redis-cli -p "$REDIS_PORT" INFO memory | tr -d '\r' | sed -n 's/^used_memory_human://p')

answered_all=$((answered + sanity_hits))
answered_nginx=$((nginx_answered + sanity_hits))

# --- API ingest ----------------------------------------------------------------
# after the pixel figures are taken: POST /v1/batch, API_BATCH messages a
# request, each acknowledged only once Redis stored it

fcall_usec() {
    redis-cli -p "$REDIS_PORT" INFO commandstats | tr -d '\r' \
        | sed -n 's/^cmdstat_fcall:.*[:,]usec=\([0-9]*\).*/\1/p'
}
# XDEL calls (the store's, inside FCALL): an event moved to the stream of
# another shard is deleted from the first (0 before any)
xdel_calls() {
    redis-cli -p "$REDIS_PORT" INFO commandstats | tr -d '\r' \
        | awk -F'[:,=]' '$1 == "cmdstat_xdel" { n = $3 } END { printf "%d\n", n }'
}
echo "API ingest: POST /v1/batch, $API_BATCH messages a request," \
     "wrk -t1 -c$API_CONNECTIONS -d${SECONDS_PER_RUN}s..."
api_added0=$(stream_added)
api_xdel0=$(xdel_calls)
api_usec0=$(fcall_usec)
api_dup0=$(counter cdp_api_duplicates_total "$(status)")
before=$(ngx_requests)
wrk -t1 -c"$API_CONNECTIONS" -d"$SECONDS_PER_RUN"s --latency -s "$API_LUA" \
    "$BASE/v1/batch" -- "$API_KEY" "$API_BATCH" > "$TMP/api.txt" 2>&1 \
    || { cat "$TMP/api.txt" >&2; die "wrk failed on /v1/batch"; }
sleep 0.2
after=$(ngx_requests)
api_answered=$((after - before - 1))
read -r api_req api_rps api_p99 api_bad api_err < <(wrk_parse "$TMP/api.txt")
settle
# appended less moved: each move is an XDEL
api_moved=$(( $(xdel_calls) - api_xdel0 ))
api_added=$(( $(stream_added) - api_added0 - api_moved ))
api_usec=$(( $(fcall_usec) - api_usec0 ))
api_dup=$(( $(counter cdp_api_duplicates_total "$(status)") - api_dup0 ))
api_expected=$(( (api_answered - api_bad) * API_BATCH ))
api_eps=$(awk -v r="$api_rps" -v b="$API_BATCH" 'BEGIN { printf "%.0f", r * b }')
api_us_event=$(awk -v u="$api_usec" -v e="$api_added" 'BEGIN { if (e > 0) printf "%.2f", u / e; else print "n/a" }')

# med KIND_SCENARIO ARRAY (lib.sh): the median of ARRAY (RPS, P99, ...)
# over the rounds
rps_pixel_new=$(med pixel_new RPS) p99_pixel_new=$(med pixel_new P99)
rps_ug_new=$(med ug_new RPS)       p99_ug_new=$(med ug_new P99)
rps_pixel_ret=$(med pixel_ret RPS) p99_pixel_ret=$(med pixel_ret P99)
rps_ug_ret=$(med ug_ret RPS)       p99_ug_ret=$(med ug_ret P99)
ratio_new=$(ratio "$rps_pixel_new" "$rps_ug_new")
ratio_ret=$(ratio "$rps_pixel_ret" "$rps_ug_ret")
per_call=$(awk -v a="$answered_nginx" -v b="$fcalls" 'BEGIN { if (b > 0) printf "%.1f", a / b; else print "n/a" }')
per_event_us=$(awk -v u="$usec_per_call" -v e="$per_call" 'BEGIN { if (e > 0) printf "%.2f", u / e; else print "n/a" }')

echo
echo "=== ngx_cdp bench summary: $ROUNDS rounds x 4 runs x ${SECONDS_PER_RUN}s, wrk -t1 -c$CONNS, nginx 1 worker, geoip $GEOIP, consent default all ==="
# row LABEL PIXEL_NEW UG_NEW PIXEL_RET UG_RET; kv LABEL VALUE [NOTE]
row() { printf '%-24s %11s %17s   %11s %17s\n' "$@"; }
kv() { printf '%-52s %12s%s\n' "$1" "$2" "${3:-}"; }
printf '%-24s %29s   %29s\n' "" "new visitors (no cookie)" "returning (1 of $POOL cookies)"
row "" "cdp_pixel" "userid+empty_gif" "cdp_pixel" "userid+empty_gif"
for r in $(seq 1 "$ROUNDS"); do
    row "round $r req/s" "${RPS[pixel_new_$r]}" "${RPS[ug_new_$r]}" \
        "${RPS[pixel_ret_$r]}" "${RPS[ug_ret_$r]}"
done
row "median req/s" "$rps_pixel_new" "$rps_ug_new" "$rps_pixel_ret" "$rps_ug_ret"
row "median p99 latency (ms)" "$p99_pixel_new" "$p99_ug_new" "$p99_pixel_ret" "$p99_ug_ret"
printf '%-24s %11s %17s   %11s\n' "ratio pixel/empty_gif" "$ratio_new" "" "$ratio_ret"
# where the time goes: CPU microseconds per request answered (nginx's
# worker, wrk, redis-server) and the machine's idle share during the runs
for a in NGX:"med. CPU us/req nginx" WRK:"med. CPU us/req wrk" \
         RDS:"med. CPU us/req redis" IDLE:"med. idle CPU (%)"; do
    row "${a#*:}" "$(med pixel_new "${a%%:*}")" "$(med ug_new "${a%%:*}")" \
        "$(med pixel_ret "${a%%:*}")" "$(med ug_ret "${a%%:*}")"
done
echo
kv "pixel hits answered, wrk count (+warm-up, minting)" "$answered_all"
kv "pixel hits answered, nginx count" "$answered_nginx"
kv "  of which minting the cookie pool" "$mint_answered"
kv "  of which returning runs" "$ret_answered"
kv "events appended to $PREFIX:events:{*} (entries-added)" "$stored" "  ($SHARDS shards' streams)"
kv "events retained (XLEN, MAXLEN ~$STREAM_MAXLEN a shard)" "$retained"
kv "profile records ($PREFIX:profile:*)" "$browsers"
kv "/status accepted" "$c_accepted"
kv "/status stored" "$c_stored"
kv "/status dropped" "$c_dropped" "$drops"
kv "/status cookies new" "$c_new"
kv "/status cookies kept" "$c_kept"
kv "/status filtered (bot, prefetch, mail proxy)" "$c_filtered"
kv "/status cookies kept, returning pixel runs" "$ret_kept"
kv "/status cookies new, returning pixel runs" "$ret_new"
kv "/status cookies forged+malformed, returning runs" "$ret_bad"
kv "/status batches" "$c_batches"
kv "FCALL calls (INFO commandstats)" "$fcalls"
kv "FCALL failed calls" "$failed_calls"
kv "FCALL usec_per_call" "$usec_per_call"
kv "events per FCALL (answered / calls)" "$per_call"
kv "Redis usec per event" "$per_event_us"
kv "Redis used_memory" "$used_memory"
echo
kv "API: requests/s (wrk, $API_BATCH messages each)" "$api_rps"
kv "API: events/s acknowledged" "$api_eps" "  (bar of the API issue: 50000)"
kv "API: p99 latency (ms)" "$api_p99"
kv "API: requests answered (nginx count), non-2xx" "$api_answered" ", $api_bad"
kv "API: events sent in 2xx requests" "$api_expected"
kv "API: events stored in $PREFIX:events:{*}" "$api_added" \
    "  (entries-added less $api_moved moved to their user's shard)"
kv "API: duplicates (cdp_api_duplicates_total)" "$api_dup"
kv "API: Redis usec per event (FCALL usec / events)" "$api_us_event"
[ "$bad_total" -gt 0 ] && echo "note: $bad_total non-2xx responses in the wrk runs"
[ "$ret_kept" -gt 0 ] && [ "$ret_kept" != "$ret_answered" ] \
    && echo "note: returning pixel runs kept $ret_kept cookies of $ret_answered hits"

rc=0
if [ "$stored" != "$answered_nginx" ]; then
    echo "FAIL: stored $stored != answered $answered_nginx (nginx count)"
    [ "$c_filtered" -gt 0 ] && echo "  ($c_filtered hits filtered as bots or prefetches: cdp_filtered_total)"
    rc=1
fi
if [ "$stored" -lt "$answered_all" ]; then
    echo "FAIL: stored $stored < answered $answered_all (wrk count)"
    rc=1
fi
if [ "$c_dropped" != 0 ]; then
    echo "FAIL: $c_dropped events dropped:$drops"
    rc=1
fi
if [ "$api_added" != "$api_expected" ] || [ "$api_bad" != 0 ]; then
    echo "FAIL: API: $api_added events stored for $api_expected sent in" \
         "acknowledged requests ($api_bad non-2xx)"
    rc=1
fi
if [ "$ret_kept" -le 0 ]; then
    echo "FAIL: the returning pixel runs kept no cookie (new $ret_new," \
         "forged+malformed $ret_bad): the pool is not valid"
    rc=1
fi
if [ "$rc" = 0 ]; then
    echo "OK: every answered pixel hit is stored in Redis ($stored;" \
         "wrk saw $answered_all of them answered, the other" \
         "$((stored - answered_all)) were in flight when wrk stopped);" \
         "returning visitors: $ret_kept of $ret_answered pixel hits kept their cookie"
fi

# --- the store's share of the pixel's cost (CEILING=on) ------------------------
# cdp_ingest replaced, under the loaded library's revision (so the module
# keeps it), by a function that only answers, then by one that only XADDs:
# the pixel/empty_gif ratio with Redis doing no work per event, then with
# one stream entry per event and nothing else

ceiling_lua() {
    local body
    case $1 in
        noop) body="local n = #keys - 1" ;;
        xadd) body="local n = #keys - 1
  for i = 1, n do
    redis.call('XADD', keys[1], '*', 'event', args[1 + 4 * i])
  end" ;;
    esac
    printf '#!lua name=cdp_v1\n'
    printf "redis.register_function{function_name = 'cdp_version', flags = {'no-writes'},\n"
    printf "  callback = function() return '%s' end}\n" "$2"
    printf "redis.register_function{function_name = 'cdp_ingest',\n"
    printf '  callback = function(keys, args)\n  %s\n  return {n, 0, 0, 0, 0, 0, 0}\nend}\n' "$body"
}

if [ "$CEILING" = on ]; then
    rev=$(redis-cli -p "$REDIS_PORT" FCALL_RO cdp_version 0)
    echo
    echo "=== the store's share: new visitors, $ROUNDS rounds, cdp_ingest replaced ==="
    for stub in noop xadd; do
        out=$(ceiling_lua "$stub" "$rev" \
              | redis-cli -p "$REDIS_PORT" -x FUNCTION LOAD REPLACE)
        [ "$out" = cdp_v1 ] || die "loading the $stub store: $out"
        px=() ug=()
        for r in $(seq 1 "$ROUNDS"); do
            if [ $((r % 2)) = 1 ]; then order="pixel ug"; else order="ug pixel"; fi
            for k in $order; do
                if [ "$k" = pixel ]; then u=/p.gif; else u=/ug.gif; fi
                wrk_run "ceil_${stub}_${k}_$r" "$u" "$SECONDS_PER_RUN"
                read -r req rps p99 bad err < <(wrk_parse "$TMP/ceil_${stub}_${k}_$r.txt")
                if [ "$k" = pixel ]; then px+=("$rps"); else ug+=("$rps"); fi
            done
        done
        case $stub in
            noop) what="stores nothing" ;;
            xadd) what="XADD only" ;;
        esac
        printf '%-34s pixel %10s  empty_gif %10s  ratio %s  (rounds: %s)\n' \
            "cdp_ingest $what" "$(median "${px[@]}")" "$(median "${ug[@]}")" \
            "$(ratio "$(median "${px[@]}")" "$(median "${ug[@]}")")" \
            "$(for i in "${!px[@]}"; do ratio "${px[$i]}" "${ug[$i]}"; printf ' '; done)"
    done
fi

exit "$rc"
