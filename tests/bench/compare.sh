#!/bin/bash
# make bench-compare REVS="rev rev ...": the pixel of several revisions of
# the module against `userid on;` + `empty_gif;`, interleaved on this
# machine in one run, so that a ratio can be compared with an earlier
# revision's (the foundation's, say) without the host's drift between
# sessions.  Each revision is built from a git worktree and runs the same
# minimal configuration: 1 worker, a private redis-server on a unix socket,
# no GeoIP, `cdp_consent_default all;` when the revision knows it (so that
# every hit is stored in full, as before consent existed).
#
#   REVS           git revisions (default: HEAD); "tree" names the working
#                  tree, as `make build` builds it (uncommitted changes)
#   ROUNDS         rounds, each revision once a round (default 3)
#   BENCH_SECONDS  seconds per wrk run (default 8)
#   CONNECTIONS    wrk connections (default 50)
#
# Per revision and round: new visitors (no cookie), then returning ones (a
# pool of 2,000 cookies minted by that revision, sent by cookies.lua), each
# for the pixel and for userid + empty_gif; the events stored are checked
# against the pixel hits nginx answered: the XLEN of the stream bench:events
# of a revision from before the store's shards, plus those of the SHARDS
# streams bench:events:{<tag>} of a revision with them (16, the module's
# default: store/README.md, "Shards"), summed, so that any revision is
# counted alike.  Before the next run starts Redis works off what a pixel
# run left it (the streams stop growing), so one run's Redis work never
# slows the next.  Each run's CPU time per request of nginx's worker and
# of redis-server (from /proc, user + system) shows where a difference
# between revisions comes from.  Prints each run, then
# medians.  Every request to the pixel and to userid + empty_gif carries the
# same browser User-Agent (BENCH_UA of wrk.sh): revisions that filter bots
# store no hit without one; older ones ignore it.

set -u

TOP=$(cd "$(dirname "$0")/../.." && pwd)
NGINX_BIN=${NGINX_BIN:-/usr/sbin/nginx}
REVS=${REVS:-HEAD}
ROUNDS=${ROUNDS:-3}
SECONDS_PER_RUN=${BENCH_SECONDS:-8}
CONNS=${CONNECTIONS:-50}
SHARDS=16
COOKIES_LUA=$TOP/tests/bench/cookies.lua
. "$TOP/tests/bench/cpu.sh"
. "$TOP/tests/bench/wrk.sh"
BENCH_NAME=bench-compare
# die, and the streams counted (cdp_keys, sum_xlen)
. "$TOP/tests/bench/lib.sh"

for t in wrk redis-server redis-cli curl openssl git; do
    command -v "$t" >/dev/null 2>&1 || die "$t not found (make deps-test)"
done
[ -f "$TOP/scripts/cdp-key" ] || die "no $TOP/scripts/cdp-key"
case $SECONDS_PER_RUN$ROUNDS$CONNS in
    *[!0-9]*) die "BENCH_SECONDS, ROUNDS and CONNECTIONS must be integers" ;;
esac

TMP=$(mktemp -d /tmp/ngx_cdp_compare.XXXXXX) || die "mktemp failed"
redis_pid=
nginx_pid=
worker_pid=

stop() {
    [ -n "$nginx_pid" ] && kill -QUIT "$nginx_pid" 2>/dev/null \
        && wait "$nginx_pid" 2>/dev/null
    [ -n "$redis_pid" ] && kill -TERM "$redis_pid" 2>/dev/null \
        && wait "$redis_pid" 2>/dev/null
    nginx_pid= redis_pid=
}

cleanup() {
    stop
    for w in "$TMP"/wt-*; do
        [ -d "$w" ] && git -C "$TOP" worktree remove --force "$w" 2>/dev/null
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PORT=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
BASE=http://127.0.0.1:$PORT
USER_LINE=
[ "$(id -u)" = 0 ] && USER_LINE="user root;"
openssl rand -hex 32 > "$TMP/secret"

# --- build ---------------------------------------------------------------------

declare -A MOD
i=0
for rev in $REVS; do
    i=$((i + 1))
    if [ "$rev" = tree ]; then
        echo "building the working tree..."
        make -C "$TOP" build > "$TMP/build-$i.log" 2>&1 \
            || { tail -20 "$TMP/build-$i.log" >&2; die "building the working tree failed"; }
        MOD[$rev]=$TOP/build/objs/ngx_http_cdp_module.so
        continue
    fi
    sha=$(git -C "$TOP" rev-parse --short "$rev^{commit}") || die "no revision $rev"
    echo "building $rev ($sha)..."
    git -C "$TOP" worktree add --detach "$TMP/wt-$i" "$sha" >/dev/null 2>&1 \
        || die "git worktree add $sha failed"
    make -C "$TMP/wt-$i" build > "$TMP/build-$i.log" 2>&1 \
        || { tail -20 "$TMP/build-$i.log" >&2; die "building $rev failed"; }
    MOD[$rev]=$TMP/wt-$i/build/objs/ngx_http_cdp_module.so
done

# --- one revision's runs ---------------------------------------------------------

conf() {    # conf MODULE EXTRA
    cat > "$TMP/nginx.conf" <<EOF
load_module $1;
$USER_LINE
worker_processes 1;
daemon off;
pid $TMP/run/nginx.pid;
error_log $TMP/run/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    cdp_redis unix:$TMP/run/redis.sock prefix=bench;
    cdp_secret_file $TMP/secret;
    cdp_stream_maxlen 100000000;
    $2
    server {
        listen 127.0.0.1:$PORT;
        location = /p.gif { cdp_pixel; }
        location = /ug.gif {
            userid on; userid_name uid; userid_expires 400d; empty_gif;
        }
        location = /stub { stub_status; }
    }
}
EOF
}

# nginx's request count; reading it is a request, counted in what it reads
requests() { curl -s "$BASE/stub" | awk 'NR == 3 { print $3 }'; }

# rps URL [POOL]: req/s of one wrk run; a pixel run's answered hits (by
# nginx's count, which sees the replies wrk leaves in flight) go to PIXELS
rps() {
    local s=() b a
    [ -n "${2:-}" ] && s=(-s "$COOKIES_LUA")
    local wt rt
    b=$(requests) wt=$(ticks "$worker_pid") rt=$(ticks "$redis_pid")
    wrk -t1 -c"$CONNS" -d"$SECONDS_PER_RUN"s -H "User-Agent: $BENCH_UA" \
        "${s[@]}" "$1" ${2:+-- "$2"} \
        > "$TMP/wrk.txt" 2>&1 || { cat "$TMP/wrk.txt" >&2; die "wrk failed"; }
    sleep 0.2
    a=$(requests)
    # microseconds of CPU per request, nginx's worker and redis-server's
    # (Redis works through a batch after nginx has answered its hits, so
    # its share is read once the stream stops growing: see run)
    CPU_N=$(us_per "$(($(ticks "$worker_pid") - wt))" "$((a - b))")
    CPU_R0=$rt CPU_HITS=$((a - b))
    case $1 in */p.gif) PIXELS=$((PIXELS + a - b - 1)) ;; esac
    awk '/^Requests\/sec:/ { print $2 }' "$TMP/wrk.txt"
}

mint() {    # mint URL COOKIE_NAME FILE
    curl -s -A "$BENCH_UA" -o /dev/null -D - "$1?n=[1-2000]" | tr -d '\r' \
        | sed -n "s/^[Ss]et-[Cc]ookie: *\($2=[^;]*\).*/\1/p" > "$3"
    [ "$(sort -u "$3" | wc -l)" = 2000 ] || die "minting $1: not 2000 cookies"
}

# stored: the events in the streams, an old revision's bench:events and a
# sharded one's bench:events:{<tag>}, summed
stored() {
    { echo bench:events; cdp_keys bench "$SHARDS" events; } \
        | sum_xlen -s "$TMP/run/redis.sock"
}

# the events stored once the streams stop growing
settle() {
    local n=-1 m i
    for i in $(seq 100); do
        sleep 0.3
        m=$(stored)
        [ "$n" = "$m" ] && break
        n=$m
    done
    echo "$n"
}

run() {     # run REV ROUND
    local m=${MOD[$1]} extra="cdp_consent_default all;" b n i pn un pr ur
    rm -rf "$TMP/run"; mkdir -p "$TMP/run"
    redis-server --port 0 --unixsocket "$TMP/run/redis.sock" \
        --dir "$TMP/run" --save '' --appendonly no \
        --logfile "$TMP/run/redis.log" &
    redis_pid=$!
    for _ in $(seq 50); do
        redis-cli -s "$TMP/run/redis.sock" PING >/dev/null 2>&1 && break
        sleep 0.1
    done
    conf "$m" "$extra"
    "$NGINX_BIN" -t -p "$TMP/run" -c "$TMP/nginx.conf" >/dev/null 2>&1 \
        || { extra=; conf "$m" ""; }
    "$NGINX_BIN" -p "$TMP/run" -c "$TMP/nginx.conf" -e "$TMP/run/error.log" &
    nginx_pid=$!
    for _ in $(seq 50); do
        curl -s -o /dev/null "$BASE/stub" && break
        sleep 0.1
    done
    worker_pid=$(pgrep -P "$nginx_pid" | head -1)

    PIXELS=0
    b=$(requests)
    wrk -t1 -c"$CONNS" -d2s -H "User-Agent: $BENCH_UA" "$BASE/p.gif" \
        >/dev/null    # warm-up
    mint "$BASE/p.gif" cdp_aid "$TMP/run/pool_p.txt"
    PIXELS=$(($(requests) - b - 1))
    mint "$BASE/ug.gif" uid "$TMP/run/pool_u.txt"
    # rps writes to a file, not a $(...) subshell: PIXELS stays counted
    for k in pn un pr ur; do
        case $k in
            pn) rps "$BASE/p.gif" ;;
            un) rps "$BASE/ug.gif" ;;
            pr) rps "$BASE/p.gif" "$TMP/run/pool_p.txt" ;;
            ur) rps "$BASE/ug.gif" "$TMP/run/pool_u.txt" ;;
        esac > "$TMP/run/$k"
        # Redis's backlog is worked off before the next run starts
        n=$(settle)
        echo "$CPU_N $(us_per "$(($(ticks "$redis_pid") - CPU_R0))" "$CPU_HITS")" \
            > "$TMP/run/$k.cpu"
    done
    pn=$(cat "$TMP/run/pn") un=$(cat "$TMP/run/un")
    pr=$(cat "$TMP/run/pr") ur=$(cat "$TMP/run/ur")
    stop
    [ "$n" = "$PIXELS" ] || STORED_OK=no

    printf '%-10s round %d  new: pixel %9s  empty_gif %9s  ratio %s' \
        "$1" "$2" "$pn" "$un" "$(awk -v a="$pn" -v b="$un" 'BEGIN { printf "%.3f", a / b }')"
    printf '   returning: pixel %9s  empty_gif %9s  ratio %s   stored %s of %s%s\n' \
        "$pr" "$ur" "$(awk -v a="$pr" -v b="$ur" 'BEGIN { printf "%.3f", a / b }')" \
        "$n" "$PIXELS" "${extra:+ (consent all)}"
    printf '%-10s   CPU us per hit (nginx worker/redis-server): new pixel %s, empty_gif %s; returning pixel %s, empty_gif %s\n' \
        "" "$(tr ' ' / < "$TMP/run/pn.cpu")" "$(tr ' ' / < "$TMP/run/un.cpu")" \
        "$(tr ' ' / < "$TMP/run/pr.cpu")" "$(tr ' ' / < "$TMP/run/ur.cpu")"
    echo "$1 $pn $un $pr $ur $(cat "$TMP/run/pn.cpu" "$TMP/run/pr.cpu" | tr '\n' ' ')" >> "$TMP/results"
}

STORED_OK=yes
for r in $(seq 1 "$ROUNDS"); do
    for rev in $REVS; do
        run "$rev" "$r"
    done
done

echo
echo "=== medians of $ROUNDS rounds: pixel/empty_gif, wrk -t1 -c$CONNS, ${SECONDS_PER_RUN}s runs, 1 worker, no GeoIP ==="
printf '%-10s %12s %12s %12s %12s %14s %14s\n' revision "new ratio" "new pixel" \
    "ret. ratio" "ret. pixel" "new us n/r" "ret. us n/r"
for rev in $REVS; do
    awk -v rev="$rev" '
        function med(a, n,    i, j, t) {
            for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++)
                if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
            return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
        }
        $1 == rev { n++; rn[n] = $2 / $3; pn[n] = $2; rr[n] = $4 / $5; pr[n] = $4
                    # CPU us: new hits nginx, redis; returning ones
                    cnn[n] = $6; cnr[n] = $7; crn[n] = $8; crr[n] = $9 }
        END { printf "%-10s %12.3f %12.0f %12.3f %12.0f %14s %14s\n", rev,
                     med(rn, n), med(pn, n), med(rr, n), med(pr, n),
                     sprintf("%.1f/%.1f", med(cnn, n), med(cnr, n)),
                     sprintf("%.1f/%.1f", med(crn, n), med(crr, n)) }
    ' "$TMP/results"
done

if [ "$STORED_OK" != yes ]; then
    echo "bench-compare: a run stored fewer or more events than nginx answered pixel hits"
    exit 1
fi
