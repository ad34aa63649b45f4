#!/bin/bash
# make bench-capture (make bench runs it after spool.sh): what
# `cdp_capture on;` costs a proxied HTML page, and what the bot check
# costs the pixel. One nginx with the module (1 worker, no GeoIP,
# `cdp_consent_default all;`, so that every tracked request is one event),
# a private redis-server on a unix socket, and an "app": an nginx without
# the module (1 worker) whose every GET is answered 200 with an HTML page
# of PAGE_BYTES (`return`, default_type text/html), all on this machine.
#
# 1. Page views: two locations of the same server proxy to the app through
#    the same upstream (keepalive): "capture" (`cdp_capture on;`: each
#    response records a page event and carries the cookie) and "plain"
#    (the same proxy_pass, nothing else). Each round runs wrk on both, in
#    alternate order, for new visitors (no cookie: every captured page
#    mints an id, a new browser in Redis), then for returning ones (each
#    request carries a cookie picked at random from COOKIE_POOL ones minted
#    by the capture location before the rounds, via cookies.lua; "plain"
#    gets the same cookies, so wrk and the proxy carry the same header).
# 2. The bot check: the pixel (new visitors, PIXEL_PATH) with a browser
#    User-Agent in "bot check" (the built-in patterns, as by default) and
#    in "cdp_bot off" (the same pixel without any bot check), and, for
#    reference, "bot UA": the pixel with a crawler's User-Agent (BOT_UA:
#    answered, filtered, only counted). The three in rotating order.
#
# Every request but bot UA's carries the same browser User-Agent
# (BENCH_UA, wrk.sh): without one the module takes the visitor for a bot.
# After each run, before the next starts, Redis works off what it left (the
# streams stop growing, the worker's queue is empty).
#
#   ROUNDS         rounds, each 7 runs (default 3)
#   BENCH_SECONDS  seconds per wrk run (default 4)
#   CONNECTIONS    wrk connections (default 50)
#   COOKIE_POOL    cookies minted for the returning visitors (default 2000)
#   PAGE_BYTES     the app's page size in bytes (default 2048)
#   BOT_UA         the crawler's User-Agent (default Googlebot's)
#   PIXEL_PATH     the pixel request (default: a page view,
#                  /p.gif?url=https%3A%2F%2Fshop.example%2Fpricing)
#   KEEP_BENCH_DIR set: keep the temp dir (configs, logs)
#
# About 2 minutes with the defaults (21 runs of 4 s and 3 warm-ups of 2 s,
# each followed by Redis settling).
#
# How to read it. The machine is small and shared: compare side by side,
# by the medians and ratios, not a lone figure. CPU us/req is the CPU time
# (user + system, /proc) per request answered of the module's nginx
# worker, of the app's worker and of redis-server (until it settled), and
# wrk's; "idle" the share of the machine left idle during wrk. The
# capture's cost is the nginx worker's CPU per request against plain's
# (the app's work is the same for both); the bot check's, the pixel's
# nginx CPU per hit against cdp_bot off's: a fraction of a microsecond,
# within the noise of one run, so read the medians.
#
# Requests answered are nginx's count (stub_status, read around each run:
# it sees the replies wrk leaves in flight when it stops), stored the
# streams' entries-added (summed over the SHARDS event streams,
# capture:events:{<tag>}, 16 as by default: store/README.md, "Shards"), as
# deltas over the run. Exits 1 when a run of capture, bot check or cdp_bot
# off (or the minting of the pool) stored a number of events other than
# the requests answered, or the capture counter
# (cdp_captured_total) says so; when plain or bot UA stored any event, or
# bot UA's hits were not all counted as filtered bots; when the returning
# capture runs kept no cookie; when an event was dropped; 2 when the bench
# could not run. The module's error.log lines of level error and above are
# shown at the end (they do not change the exit status).

set -u

TOP=$(cd "$(dirname "$0")/../.." && pwd)
NGINX_BIN=${NGINX_BIN:-/usr/sbin/nginx}
MODULE=$TOP/build/objs/ngx_http_cdp_module.so
SECONDS_PER_RUN=${BENCH_SECONDS:-4}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNECTIONS:-50}
POOL=${COOKIE_POOL:-2000}
PAGE_BYTES=${PAGE_BYTES:-2048}
BOT_UA=${BOT_UA:-"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"}
PIXEL_PATH=${PIXEL_PATH:-"/p.gif?url=https%3A%2F%2Fshop.example%2Fpricing"}
STREAM_MAXLEN=1000000
WARMUP=2
PREFIX=capture
SHARDS=16
COOKIES_LUA=$TOP/tests/bench/cookies.lua
. "$TOP/tests/bench/cpu.sh"
. "$TOP/tests/bench/wrk.sh"
BENCH_NAME=bench-capture
. "$TOP/tests/bench/lib.sh"

check_tools deps-test
[ -f "$COOKIES_LUA" ] || die "no wrk script at $COOKIES_LUA"
case $SECONDS_PER_RUN$ROUNDS$CONNS$POOL$PAGE_BYTES in
    *[!0-9]*) die "BENCH_SECONDS, ROUNDS, CONNECTIONS, COOKIE_POOL and PAGE_BYTES must be integers" ;;
esac
[ "$ROUNDS" -ge 1 ] && [ "$SECONDS_PER_RUN" -ge 1 ] && [ "$POOL" -ge 1 ] \
    && [ "$PAGE_BYTES" -ge 64 ] || die "ROUNDS, BENCH_SECONDS, COOKIE_POOL >= 1, PAGE_BYTES >= 64"
case $PIXEL_PATH in /p.gif*) ;; *) die "PIXEL_PATH begins with /p.gif" ;; esac
case $BOT_UA in *\"*|*\\*) die "BOT_UA may not hold a quote or a backslash" ;; esac

TMP=$(mktemp -d /tmp/ngx_cdp_capture.XXXXXX) || die "mktemp failed"
redis_pid= cdp_pid= app_pid=

cleanup() {
    trap '' INT TERM
    stop_nginx "$cdp_pid"
    stop_nginx "$app_pid"
    stop_redis "$redis_pid" -s "$TMP/redis.sock"
    remove_tmp
}
set_traps

# two free loopback ports, chosen by the kernel
read -r PORT APP_PORT < <(free_ports 2)
[ -n "${APP_PORT:-}" ] || die "could not find free ports"
BASE=http://127.0.0.1:$PORT

# --- Redis -------------------------------------------------------------------

rcli() { redis-cli -s "$TMP/redis.sock" "$@"; }
redis_launch "$TMP" --port 0 --appendonly no
redis_pid=$!
redis_ready "$redis_pid" 100 -s "$TMP/redis.sock" \
    || { cat "$TMP/redis.log" >&2; die "Redis did not start"; }

# --- the app and nginx ---------------------------------------------------------

(umask 077 && openssl rand -hex 32 > "$TMP/secret")

# the page: PAGE_BYTES of HTML (no quote, $, backslash or brace in it)
PAGE=$(awk -v n="$PAGE_BYTES" 'BEGIN {
    head = "<!doctype html><html><head><meta charset=utf-8><title>Pricing</title></head><body><h1>Pricing</h1><p>"
    tail = "</p></body></html>"
    s = head
    w = "plans for every team with support and updates included "
    while (length(s) + length(tail) < n) s = s w
    s = substr(s, 1, n - length(tail))
    printf "%s%s", s, tail }')

# the app: a plain nginx, every GET answered with the page
nginx_conf "$TMP/app" "" "    keepalive_requests    1000000;

    server {
        listen 127.0.0.1:$APP_PORT;

        location / {
            default_type text/html;
            return 200 '$PAGE';
        }

        location = /nginx_status {
            stub_status;
        }
    }"

nginx_conf "$TMP/cdp" "$MODULE" "
    cdp_redis         unix:$TMP/redis.sock prefix=$PREFIX shards=$SHARDS;
    cdp_secret_file   $TMP/secret;
    cdp_stream_maxlen $STREAM_MAXLEN;
    cdp_consent_default all;

    # the page requests not answered 200: those wrk leaves in flight when
    # it stops, which nginx ends with 499 once it sees the connection
    # closed, before the app's answer (no page, nothing captured); logged,
    # one line each, by both page locations
    map \$status \$not_200 {
        200     0;
        default 1;
    }
    log_format not_200 '\$status \$request_uri';

    upstream app {
        server 127.0.0.1:$APP_PORT;
        keepalive 64;
        keepalive_requests 1000000;
    }

    server {
        listen 127.0.0.1:$PORT;

        proxy_http_version 1.1;
        proxy_set_header Connection \"\";

        # the app's pages, each one a page view
        location /capture/ {
            cdp_capture on;
            proxy_pass http://app;
            access_log $TMP/cdp/logs/not_200.log not_200 if=\$not_200;
        }

        # the same proxy, nothing captured
        location /plain/ {
            proxy_pass http://app;
            access_log $TMP/cdp/logs/not_200.log not_200 if=\$not_200;
        }

        location = /p.gif {
            cdp_pixel;
        }

        location = /p-nobot.gif {
            cdp_pixel;
            cdp_bot off;
        }

        location = /status {
            cdp_status;
        }

        # nginx's own request counter: how many requests nginx answered,
        # including the ones still in flight when wrk stops counting
        location = /nginx_status {
            stub_status;
        }
    }"

nginx_start "$TMP/app" "http://127.0.0.1:$APP_PORT/nginx_status" app_pid app_worker app
nginx_start "$TMP/cdp" "$BASE/nginx_status" cdp_pid worker_pid cdp

status() { curl -s "$BASE/status"; }
# nginx's total request count (stub_status "requests"); reading it is itself
# a request, counted in the figure it returns
ngx_requests() { stub_requests "$BASE"; }
stream_added() { streams_added "$PREFIX" "$SHARDS" -s "$TMP/redis.sock"; }
minus() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "n/a" || b == "n/a") print "n/a"; else printf "%+.1f", a - b }'; }
C_BOT='cdp_filtered_total{reason="bot"}'
C_CAPTURED=cdp_captured_total
C_NEW='cdp_cookies_total{result="new"}'
C_KEPT='cdp_cookies_total{result="kept"}'

# settle: until the streams stop growing and the worker's queue is empty
# (at most 60 s)
settle() {
    local last=-1 same=0 i=0 n q
    while :; do
        n=$(stream_added)
        q=$(counter cdp_queue_events "$(status)")
        if [ "$n" = "$last" ] && [ "$q" = 0 ]; then
            same=$((same + 1))
            [ "$same" -ge 2 ] && return 0
        else
            same=0
        fi
        last=$n
        i=$((i + 1))
        [ "$i" -ge 300 ] && { echo "  not settled after 60 s: entries-added $n, queue $q"; return 1; }
        sleep 0.2
    done
}

FAILS=()
fail() { FAILS+=("$*"); echo "  FAIL: $*"; }

# --- sanity ----------------------------------------------------------------------

# hdr UA PATH: the response's headers (body discarded), CRs removed
hdr() { curl -s -A "$1" -o "$TMP/body" -D - "$BASE$2" | tr -d '\r'; }

h=$(hdr "$BENCH_UA" /capture/pricing)
printf '%s' "$h" | grep -q '^HTTP/1.1 200' || die "/capture/: not 200: $h"
printf '%s' "$h" | grep -qi '^content-type: text/html' || die "/capture/: not text/html: $h"
printf '%s' "$h" | grep -qi '^set-cookie: cdp_aid=' || die "/capture/: no cdp_aid cookie: $h"
[ "$(wc -c < "$TMP/body")" = "$PAGE_BYTES" ] \
    || die "/capture/: a body of $(wc -c < "$TMP/body") bytes, not the app's $PAGE_BYTES"
h=$(hdr "$BENCH_UA" /plain/pricing)
printf '%s' "$h" | grep -q '^HTTP/1.1 200' || die "/plain/: not 200: $h"
printf '%s' "$h" | grep -qi '^set-cookie:' && die "/plain/: a cookie: $h"
cmp -s "$TMP/body" <(printf '%s' "$PAGE") || die "/plain/: not the app's page"
for u in /p.gif /p-nobot.gif; do
    h=$(hdr "$BENCH_UA" "$u")
    printf '%s' "$h" | grep -q '^HTTP/1.1 200' || die "$u: not 200: $h"
    printf '%s' "$h" | grep -qi '^set-cookie: cdp_aid=' || die "$u: no cdp_aid cookie: $h"
done
# a bot: the GIF and the page, no cookie
for u in "$PIXEL_PATH" /capture/pricing; do
    h=$(hdr "$BOT_UA" "$u")
    printf '%s' "$h" | grep -q '^HTTP/1.1 200' || die "$u with a bot's User-Agent: not 200: $h"
    printf '%s' "$h" | grep -qi '^set-cookie:' && die "$u with a bot's User-Agent: a cookie: $h"
done
# 3 events: the captured page, the two pixels
settle >/dev/null
st=$(status)
[ "$(stream_added)" = 3 ] && [ "$(counter "$C_CAPTURED" "$st")" = 1 ] \
    && [ "$(counter "$C_BOT" "$st")" = 2 ] || {
    printf '%s\n' "$st" | grep -E 'captured|filtered|accepted|stored|dropped' >&2
    cat "$TMP/cdp/logs/error.log" >&2
    die "the sanity requests stored $(stream_added) events, not 3 (a captured page, two pixels; two bot requests filtered)"; }

# --- runs ------------------------------------------------------------------------

# keyed NAME_ROUND: cap_new_1, plain_ret_2, px_1, pxnb_3, pxbot_2 ...
declare -A RPS P99 NGX APP RDS WRK IDLE HITS ADDED CAPT BOTS KEPT NEWC ABORT WRKN
bad_total=0
# the lines of not_200.log: page requests not answered 200
not_200() { wc -l < "$TMP/cdp/logs/not_200.log" 2>/dev/null || echo 0; }

# run KEY PATH SECONDS UA [POOL]: one wrk run (with a pool, each request
# carries one of its cookies), then Redis settles; what nginx answered
# (its request count, less those not answered 200) against what was stored
run() {
    local k=$1 script=() args=() st0 st1 e0 e1 b a l0 l1 c0 w0 p0 r0 i0 t0 i1 t1 \
          n req rps p99 bad err
    [ -n "${5:-}" ] && { script=(-s "$COOKIES_LUA"); args=(-- "$5"); }
    st0=$(status) e0=$(stream_added)
    l0=$(not_200)
    b=$(ngx_requests)
    read -r i0 t0 < <(idle_ticks)
    c0=$(child_ticks) w0=$(ticks "$worker_pid") p0=$(ticks "$app_worker") r0=$(ticks "$redis_pid")
    wrk -t1 -c"$CONNS" -d"$3"s --latency -H "User-Agent: $4" "${script[@]}" \
        "$BASE$2" "${args[@]}" > "$TMP/$k.txt" 2>&1 \
        || { cat "$TMP/$k.txt" >&2; die "wrk failed on $2"; }
    c0=$(($(child_ticks) - c0))
    read -r i1 t1 < <(idle_ticks)
    sleep 0.2    # let the worker finish the last requests wrk left behind
    a=$(ngx_requests)
    l1=$(not_200)
    n=$((a - b - 1))    # minus the reading of "after" itself
    NGX[$k]=$(us_per "$(($(ticks "$worker_pid") - w0))" "$n")
    APP[$k]=$(us_per "$(($(ticks "$app_worker") - p0))" "$n")
    WRK[$k]=$(us_per "$c0" "$n")
    IDLE[$k]=$(pct "$((i1 - i0))" "$((t1 - t0))")
    settle || fail "$k: Redis did not settle"
    RDS[$k]=$(us_per "$(($(ticks "$redis_pid") - r0))" "$n")
    st1=$(status) e1=$(stream_added)
    ABORT[$k]=$((l1 - l0))
    n=$((n - ABORT[$k]))
    HITS[$k]=$n
    ADDED[$k]=$((e1 - e0))
    CAPT[$k]=$(($(counter "$C_CAPTURED" "$st1") - $(counter "$C_CAPTURED" "$st0")))
    BOTS[$k]=$(($(counter "$C_BOT" "$st1") - $(counter "$C_BOT" "$st0")))
    KEPT[$k]=$(($(counter "$C_KEPT" "$st1") - $(counter "$C_KEPT" "$st0")))
    NEWC[$k]=$(($(counter "$C_NEW" "$st1") - $(counter "$C_NEW" "$st0")))
    read -r req rps p99 bad err < <(wrk_parse "$TMP/$k.txt")
    RPS[$k]=$rps P99[$k]=$p99 WRKN[$k]=$req
    bad_total=$((bad_total + bad + err))
    printf '  %-8s %-12s %9s req/s  p99 %7s ms  %7d answered  %7d stored  CPU us/req: nginx %5s app %4s redis %4s wrk %4s; idle %s%%' \
        "$(round_of "$k")" "$(label "${k%_*}")" "$rps" "$p99" "$n" "${ADDED[$k]}" \
        "${NGX[$k]}" "${APP[$k]}" "${RDS[$k]}" "${WRK[$k]}" "${IDLE[$k]}"
    [ "${ABORT[$k]}" -gt 0 ] && printf '  (%d not answered 200)' "${ABORT[$k]}"
    [ "$bad" -gt 0 ] || [ "$err" -gt 0 ] && printf '  (non-2xx %d, socket errors %d)' "$bad" "$err"
    printf '\n'
    check "$k"
}

round_of() { [ "${1##*_}" = 0 ] && echo warm-up || echo "round ${1##*_}"; }

label() {
    case $1 in
        cap_new) echo "capture new" ;;   plain_new) echo "plain new" ;;
        cap_ret) echo "capture ret." ;;  plain_ret) echo "plain ret." ;;
        px) echo "bot check" ;;          pxnb) echo "cdp_bot off" ;;
        pxbot) echo "bot UA" ;;
    esac
}

# check KEY: what the run of KEY should have stored
check() {
    local k=$1 n=${HITS[$1]}
    case ${k%_*} in
        cap_new|cap_ret)
            [ "${ADDED[$k]}" = "$n" ] \
                || fail "$k: stored ${ADDED[$k]} events for $n captured pages answered"
            [ "${CAPT[$k]}" = "$n" ] \
                || fail "$k: cdp_captured_total grew by ${CAPT[$k]} for $n pages answered" ;;
        px|pxnb)
            [ "${ADDED[$k]}" = "$n" ] \
                || fail "$k: stored ${ADDED[$k]} events for $n pixel hits answered" ;;
        plain_new|plain_ret)
            [ "${ADDED[$k]}" = 0 ] && [ "${CAPT[$k]}" = 0 ] \
                || fail "$k: the location without cdp_capture stored ${ADDED[$k]} events (captured ${CAPT[$k]})" ;;
        pxbot)
            [ "${ADDED[$k]}" = 0 ] \
                || fail "$k: stored ${ADDED[$k]} events of $n bot hits"
            [ "${BOTS[$k]}" = "$n" ] \
                || fail "$k: cdp_filtered_total{reason=\"bot\"} grew by ${BOTS[$k]} for $n bot hits" ;;
    esac
    case ${k%_*} in
        cap_new|cap_ret|px|pxnb)
            [ "${WRKN[$k]}" -le "${ADDED[$k]}" ] \
                || fail "$k: wrk counted ${WRKN[$k]} answered, more than the ${ADDED[$k]} stored" ;;
    esac
    case ${k%_*} in
        cap_ret)
            [ "${KEPT[$k]}" -gt 0 ] \
                || fail "$k: no cookie kept (new ${NEWC[$k]}): the pool is not valid" ;;
    esac
}

echo "ngx_cdp bench-capture: wrk -t1 -c$CONNS -d${SECONDS_PER_RUN}s --latency, $ROUNDS rounds x 7 runs," \
     "${WARMUP}s warm-ups; nginx 1 worker, app 1 worker ($PAGE_BYTES-byte page), Redis on a unix socket"

# the returning visitors' cookies, minted by the capture location (POOL
# requests in one curl, ?n=1..POOL), each a captured page: stored too
echo "minting $POOL cookies at /capture/ for the returning visitors..."
e0=$(stream_added)
b=$(ngx_requests)
curl -s -A "$BENCH_UA" -o /dev/null -D - "$BASE/capture/pricing?n=[1-$POOL]" \
    | tr -d '\r' | sed -n 's/^[Ss]et-[Cc]ookie: *\(cdp_aid=[^;]*\).*/\1/p' > "$TMP/pool.txt"
a=$(ngx_requests)
n=$(sort -u "$TMP/pool.txt" | wc -l)
[ "$n" = "$POOL" ] || die "minting: $n distinct cdp_aid cookies, not $POOL"
[ $((a - b - 1)) = "$POOL" ] || die "nginx answered $((a - b - 1)) requests while minting $POOL"
settle || fail "minting: Redis did not settle"
mint_added=$(($(stream_added) - e0))
[ "$mint_added" = "$POOL" ] || fail "minting: stored $mint_added events for $POOL captured pages"

echo "warm-up..."
run cap_new_0 /capture/pricing "$WARMUP" "$BENCH_UA"
run plain_new_0 /plain/pricing "$WARMUP" "$BENCH_UA"
run px_0 "$PIXEL_PATH" "$WARMUP" "$BENCH_UA"

PX_NOBOT=${PIXEL_PATH/\/p.gif/\/p-nobot.gif}
for r in $(seq 1 "$ROUNDS"); do
    # alternate which goes first, so neither always runs on a warmer box
    if [ $((r % 2)) = 1 ]; then order="cap plain"; else order="plain cap"; fi
    for s in new ret; do
        for x in $order; do
            pool=
            [ "$s" = ret ] && pool=$TMP/pool.txt
            run "${x}_${s}_$r" "/${x/cap/capture}/pricing" "$SECONDS_PER_RUN" "$BENCH_UA" $pool
        done
    done
    case $((r % 3)) in
        1) order="px pxnb pxbot" ;;
        2) order="pxnb pxbot px" ;;
        0) order="pxbot px pxnb" ;;
    esac
    for x in $order; do
        case $x in
            px)    run "px_$r" "$PIXEL_PATH" "$SECONDS_PER_RUN" "$BENCH_UA" ;;
            pxnb)  run "pxnb_$r" "$PX_NOBOT" "$SECONDS_PER_RUN" "$BENCH_UA" ;;
            pxbot) run "pxbot_$r" "$PIXEL_PATH" "$SECONDS_PER_RUN" "$BOT_UA" ;;
        esac
    done
done

# --- summary -----------------------------------------------------------------------

# med NAME ARRAY (lib.sh): the median of ARRAY over the rounds
# rmed A B ARRAY: the median over the rounds of ARRAY[A_r] / ARRAY[B_r]
# (each round's pair ran one after the other: the machine's drift between
# rounds cancels out)
rmed() {
    local -n m=$3
    local r v=()
    for r in $(seq 1 "$ROUNDS"); do v+=("$(ratio "${m[${1}_$r]}" "${m[${2}_$r]}")"); done
    median "${v[@]}"
}
# sum NAME ARRAY: over the rounds
sum() {
    local -n m=$2
    local r s=0
    for r in $(seq 1 "$ROUNDS"); do s=$((s + ${m[${1}_$r]})); done
    echo "$s"
}
row4() { printf '%-28s %10s %10s %8s   %10s %10s %8s\n' "$@"; }
row3() { printf '%-28s %12s %12s %8s   %12s\n' "$@"; }
kv() { printf '%-58s %12s%s\n' "$1" "$2" "${3:-}"; }

st=$(status)
echo
echo "=== ngx_cdp bench-capture: $ROUNDS rounds x ${SECONDS_PER_RUN}s, wrk -t1 -c$CONNS, nginx 1 worker, $(nproc) CPUs ==="
echo "1. a proxied HTML page ($PAGE_BYTES bytes), cdp_capture on (capture) vs the same proxy without (plain)"
printf '%-28s %30s   %30s\n' "" "new visitors (no cookie)" "returning (1 of $POOL cookies)"
row4 "" capture plain ratio capture plain ratio
for r in $(seq 1 "$ROUNDS"); do
    row4 "round $r req/s" "${RPS[cap_new_$r]}" "${RPS[plain_new_$r]}" \
        "$(ratio "${RPS[cap_new_$r]}" "${RPS[plain_new_$r]}")" \
        "${RPS[cap_ret_$r]}" "${RPS[plain_ret_$r]}" \
        "$(ratio "${RPS[cap_ret_$r]}" "${RPS[plain_ret_$r]}")"
done
for a in RPS:"median req/s" P99:"median p99 latency (ms)" NGX:"med. CPU us/req nginx" \
         APP:"med. CPU us/req app" RDS:"med. CPU us/req redis" WRK:"med. CPU us/req wrk" \
         IDLE:"med. idle CPU (%)"; do
    v=${a%%:*}
    cn=$(med cap_new "$v") pn=$(med plain_new "$v") cr=$(med cap_ret "$v") pr=$(med plain_ret "$v")
    case $v in
        RPS|P99|NGX) row4 "${a#*:}" "$cn" "$pn" "$(ratio "$cn" "$pn")" "$cr" "$pr" "$(ratio "$cr" "$pr")" ;;
        *) row4 "${a#*:}" "$cn" "$pn" "" "$cr" "$pr" "" ;;
    esac
done
row4 "median of round ratios: req/s" "" "" "$(rmed cap_new plain_new RPS)" \
    "" "" "$(rmed cap_ret plain_ret RPS)"
row4 "  CPU us/req nginx" "" "" "$(rmed cap_new plain_new NGX)" \
    "" "" "$(rmed cap_ret plain_ret NGX)"
row4 "nginx us/req capture-plain" "$(minus "$(med cap_new NGX)" "$(med plain_new NGX)")" "" "" \
    "$(minus "$(med cap_ret NGX)" "$(med plain_ret NGX)")" "" ""
row4 "answered 200 (all rounds)" "$(sum cap_new HITS)" "$(sum plain_new HITS)" "" \
    "$(sum cap_ret HITS)" "$(sum plain_ret HITS)" ""
row4 "not answered 200 (499)" "$(sum cap_new ABORT)" "$(sum plain_new ABORT)" "" \
    "$(sum cap_ret ABORT)" "$(sum plain_ret ABORT)" ""
row4 "stored (entries-added)" "$(sum cap_new ADDED)" "$(sum plain_new ADDED)" "" \
    "$(sum cap_ret ADDED)" "$(sum plain_ret ADDED)" ""
row4 "cdp_captured_total" "$(sum cap_new CAPT)" "$(sum plain_new CAPT)" "" \
    "$(sum cap_ret CAPT)" "$(sum plain_ret CAPT)" ""
row4 "cookies new | kept" "$(sum cap_new NEWC) | $(sum cap_new KEPT)" "" "" \
    "$(sum cap_ret NEWC) | $(sum cap_ret KEPT)" "" ""
echo
echo "2. the bot check: the pixel (new visitors) with a browser User-Agent, built-in patterns"
echo "   (bot check) vs cdp_bot off; a crawler's User-Agent for reference (bot UA: filtered)"
row3 "" "bot check" "cdp_bot off" ratio "bot UA"
for r in $(seq 1 "$ROUNDS"); do
    row3 "round $r req/s" "${RPS[px_$r]}" "${RPS[pxnb_$r]}" \
        "$(ratio "${RPS[px_$r]}" "${RPS[pxnb_$r]}")" "${RPS[pxbot_$r]}"
    row3 "round $r CPU us/hit nginx" "${NGX[px_$r]}" "${NGX[pxnb_$r]}" \
        "$(ratio "${NGX[px_$r]}" "${NGX[pxnb_$r]}")" "${NGX[pxbot_$r]}"
done
for a in RPS:"median req/s" P99:"median p99 latency (ms)" NGX:"med. CPU us/hit nginx" \
         RDS:"med. CPU us/hit redis" WRK:"med. CPU us/hit wrk" IDLE:"med. idle CPU (%)"; do
    v=${a%%:*}
    x=$(med px "$v") y=$(med pxnb "$v") z=$(med pxbot "$v")
    case $v in
        RPS|P99|NGX) row3 "${a#*:}" "$x" "$y" "$(ratio "$x" "$y")" "$z" ;;
        *) row3 "${a#*:}" "$x" "$y" "" "$z" ;;
    esac
done
row3 "median of round ratios: req/s" "" "" "$(rmed px pxnb RPS)" ""
row3 "  CPU us/hit nginx" "" "" "$(rmed px pxnb NGX)" ""
row3 "nginx us/hit vs cdp_bot off" "$(minus "$(med px NGX)" "$(med pxnb NGX)")" "" "" \
    "$(minus "$(med pxbot NGX)" "$(med pxnb NGX)")"
row3 "answered (all rounds)" "$(sum px HITS)" "$(sum pxnb HITS)" "" "$(sum pxbot HITS)"
row3 "stored (entries-added)" "$(sum px ADDED)" "$(sum pxnb ADDED)" "" "$(sum pxbot ADDED)"
row3 "filtered as bots" "$(sum px BOTS)" "$(sum pxnb BOTS)" "" "$(sum pxbot BOTS)"
echo
drops=$(printf '%s\n' "$st" | awk '/^cdp_events_dropped_total/ && $2 > 0 { printf " %s=%s", $1, $2 }')
c_dropped=$(counter cdp_events_dropped_total "$st")
kv "minting the pool: captured pages answered, stored" "$POOL" ", $mint_added"
kv "/status accepted, stored" "$(counter cdp_events_accepted_total "$st")" \
    ", $(counter cdp_events_stored_total "$st")"
kv "/status captured, filtered as bots" "$(counter "$C_CAPTURED" "$st")" ", $(counter "$C_BOT" "$st")"
kv "/status dropped" "$c_dropped" "$drops"
kv "events appended to $PREFIX:events:{*} (entries-added)" "$(stream_added)"
[ "$c_dropped" = 0 ] || fail "$c_dropped events dropped:$drops"
[ "$bad_total" -gt 0 ] && echo "note: $bad_total non-2xx responses or socket errors in the wrk runs"

errs=$(grep -E '\[(emerg|alert|crit|error)\]' "$TMP/cdp/logs/error.log" 2>/dev/null)
if [ -n "$errs" ]; then
    echo "error.log of the module's nginx: $(printf '%s\n' "$errs" | wc -l) lines of level error or above, e.g.:"
    printf '%s\n' "$errs" | head -5 | sed 's/^/    /'
fi

if [ "${#FAILS[@]}" -gt 0 ]; then
    echo "FAIL: ${#FAILS[@]} check(s) failed:"
    printf '  %s\n' "${FAILS[@]}"
    exit 1
fi
echo "OK: every captured page and pixel hit answered was stored, once" \
     "($(($(sum cap_new HITS) + $(sum cap_ret HITS))) pages," \
     "$(($(sum px HITS) + $(sum pxnb HITS))) pixel hits in the rounds, $POOL pages minting);" \
     "plain stored nothing; the bot UA's $(sum pxbot HITS) hits were filtered, not stored"
