#!/bin/bash
# make run: starts Redis and nginx with the ngx_cdp module on the demo site
# at http://127.0.0.1:8080/, both in the foreground of this script, until
# Ctrl-C (or SIGTERM), which stops nginx gracefully (QUIT, so the workers
# flush their last events), then Redis (SHUTDOWN, so its AOF is synced).
#
# Everything lives under var/ in the project:
#   var/cdp.secret            the cookie signing key (made once, mode 600)
#   var/admin.tokens          the admin API's tokens as nginx reads them:
#                             "ROLE SHA256HEX" lines (made once)
#   var/admin.tokens.plain    the demo's tokens themselves, "ROLE TOKEN"
#                             (mode 600; a real site keeps only the hashes)
#   var/redis/                Redis data (appendonly), redis.sock, redis.log
#   var/nginx/nginx.conf      generated from demo/nginx.conf.in
#   var/nginx/logs/           access.log (with $cdp_anonymous_id), error.log
#   var/nginx/temp/           nginx's temporary files
#   var/nginx/spool/          cdp_spool: events waiting for Redis
#
# HTTP_PORT (default 8080) and REDIS_PORT (default 6380, so a system Redis
# on 6379 is never touched) can be set in the environment.

set -u

TOP=$(cd "$(dirname "$0")/.." && pwd)
HTTP_ADDR=127.0.0.1
HTTP_PORT=${HTTP_PORT:-8080}
DEST_PORT=${DEST_PORT:-$((HTTP_PORT + 1))}     # the demo destination
REDIS_PORT=${REDIS_PORT:-6380}
NGINX_BIN=${NGINX_BIN:-/usr/sbin/nginx}
MODULE=$TOP/build/objs/ngx_http_cdp_module.so
TEMPLATE=$TOP/demo/nginx.conf.in

VAR=$TOP/var
REDIS_DIR=$VAR/redis
REDIS_SOCK=$REDIS_DIR/redis.sock
NGX_PREFIX=$VAR/nginx
NGX_CONF=$NGX_PREFIX/nginx.conf
SECRET=$VAR/cdp.secret
TOKENS=$VAR/admin.tokens
TOKENS_PLAIN=$VAR/admin.tokens.plain
WRITE_KEY=demo-write-key        # as in demo/nginx.conf.in

redis_pid=
nginx_pid=

say() { printf '%s\n' "$*"; }
die() { printf 'make run: %s\n' "$*" >&2; exit 1; }

# is something accepting connections on 127.0.0.1:$1?
port_busy() {
    if command -v ss >/dev/null 2>&1; then
        [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ] && return 0
    fi
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

# wait_up NAME PID LOG CHECK: until CHECK succeeds (10 s at most); exits
# with the end of LOG when NAME's process PID died or never got ready
wait_up() {
    local i=0
    until "$4"; do
        if ! alive "$2" || [ "$i" -ge 100 ]; then
            say "make run: $1 did not start; end of $3:" >&2
            tail -n 20 "$3" >&2
            exit 1
        fi
        sleep 0.1
        i=$((i + 1))
    done
}

# wait until pid $1 is gone, at most $2 tenths of a second
wait_gone() {
    local i=0
    while alive "$1" && [ "$i" -lt "$2" ]; do
        sleep 0.1
        i=$((i + 1))
    done
    ! alive "$1"
}

stop_nginx() {
    alive "$nginx_pid" || return 0
    say "stopping nginx (pid $nginx_pid, graceful)..."
    kill -QUIT "$nginx_pid" 2>/dev/null
    if ! wait_gone "$nginx_pid" 150; then
        say "nginx still running after 15 s: TERM"
        kill -TERM "$nginx_pid" 2>/dev/null
        wait_gone "$nginx_pid" 50 || kill -KILL "$nginx_pid" 2>/dev/null
    fi
    wait "$nginx_pid" 2>/dev/null
    nginx_pid=
}

stop_redis() {
    alive "$redis_pid" || return 0
    say "stopping Redis (pid $redis_pid, SHUTDOWN)..."
    redis-cli -s "$REDIS_SOCK" SHUTDOWN >/dev/null 2>&1 \
        || redis-cli -h 127.0.0.1 -p "$REDIS_PORT" SHUTDOWN >/dev/null 2>&1 \
        || kill -TERM "$redis_pid" 2>/dev/null
    if ! wait_gone "$redis_pid" 150; then
        say "Redis still running after 15 s: KILL"
        kill -KILL "$redis_pid" 2>/dev/null
    fi
    wait "$redis_pid" 2>/dev/null
    redis_pid=
}

# nginx first: its workers send their last batches to Redis on the way out
cleanup() {
    trap '' INT TERM
    stop_nginx
    stop_redis
}

on_signal() {
    say ""
    cleanup
    say "stopped. Data kept in $VAR (make clean removes it)."
    exit 0
}

trap on_signal INT TERM
trap cleanup EXIT

# --- checks ------------------------------------------------------------

[ -x "$NGINX_BIN" ] || die "no nginx at $NGINX_BIN (apt-get install nginx)"
command -v redis-server >/dev/null 2>&1 \
    || die "redis-server not found (apt-get install redis-server)"
command -v redis-cli >/dev/null 2>&1 \
    || die "redis-cli not found (apt-get install redis-tools)"
command -v openssl >/dev/null 2>&1 || die "openssl not found (apt-get install openssl)"
command -v sha256sum >/dev/null 2>&1 || die "sha256sum not found (apt-get install coreutils)"
[ -f "$MODULE" ] || die "the module is not built: $MODULE (run: make build)"
[ -f "$TEMPLATE" ] || die "missing $TEMPLATE"

busy=0
if port_busy "$HTTP_PORT"; then
    say "make run: port $HTTP_PORT is already in use on 127.0.0.1:" \
        "the demo site needs it (stop what listens there, or an earlier make run)" >&2
    busy=1
fi
if port_busy "$REDIS_PORT"; then
    say "make run: port $REDIS_PORT is already in use on 127.0.0.1:" \
        "the demo Redis needs it (stop what listens there, or an earlier make run)" >&2
    busy=1
fi
[ "$busy" = 0 ] || exit 1

# --- var/ ----------------------------------------------------------------

mkdir -p "$REDIS_DIR" "$NGX_PREFIX/logs" "$NGX_PREFIX/temp" \
    || die "cannot create $VAR"

if [ ! -s "$SECRET" ]; then
    (umask 077 && openssl rand -hex 32 > "$SECRET") \
        || die "cannot write $SECRET"
    say "made a new cookie signing key in $SECRET"
fi
chmod 600 "$SECRET"

# the admin API's tokens: one random token per role; nginx reads only
# their SHA-256 (var/admin.tokens), the tokens themselves stay in
# var/admin.tokens.plain so that this script can print them
make_tokens() {
    local role token
    (
        umask 077
        : > "$TOKENS_PLAIN.tmp" && : > "$TOKENS.tmp" || exit 1
        echo "# ngx_cdp admin tokens (cdp_admin_tokens): ROLE SHA256HEX" \
            >> "$TOKENS.tmp"
        for role in marketer privacy admin; do
            token=$(openssl rand -hex 32) || exit 1
            printf '%s %s\n' "$role" "$token" >> "$TOKENS_PLAIN.tmp"
            printf '%s %s\n' "$role" \
                "$(printf %s "$token" | sha256sum | cut -d' ' -f1)" \
                >> "$TOKENS.tmp"
        done
        mv "$TOKENS_PLAIN.tmp" "$TOKENS_PLAIN" && mv "$TOKENS.tmp" "$TOKENS"
    )
}

if [ ! -s "$TOKENS" ]; then
    make_tokens || die "cannot write $TOKENS"
    say "made new admin API tokens in $TOKENS (hashes) and $TOKENS_PLAIN"
fi
[ -f "$TOKENS_PLAIN" ] && chmod 600 "$TOKENS_PLAIN"

# the token of a role, from var/admin.tokens.plain (empty when unknown)
token_of() {
    [ -r "$TOKENS_PLAIN" ] || return 0
    awk -v r="$1" '$1 == r { print $2; exit }' "$TOKENS_PLAIN"
}

# escape a value for the replacement side of sed s|...|...|
sed_esc() { printf '%s' "$1" | sed -e 's/[\\|&]/\\&/g'; }

user_line=
[ "$(id -u)" = 0 ] && user_line="user root;"

# a unix socket path is limited to 107 bytes: fall back to TCP beyond
if [ "${#REDIS_SOCK}" -lt 100 ]; then
    redis_addr="unix:$REDIS_SOCK"
else
    redis_addr="127.0.0.1:$REDIS_PORT"
fi

sed -e "s|@MODULE@|$(sed_esc "$MODULE")|g" \
    -e "s|@USER_LINE@|$user_line|g" \
    -e "s|@PREFIX@|$(sed_esc "$NGX_PREFIX")|g" \
    -e "s|@DEMO@|$(sed_esc "$TOP/demo")|g" \
    -e "s|@SECRET@|$(sed_esc "$SECRET")|g" \
    -e "s|@ADMIN_TOKENS@|$(sed_esc "$TOKENS")|g" \
    -e "s|@REDIS@|$(sed_esc "$redis_addr")|g" \
    -e "s|@LISTEN@|$HTTP_ADDR:$HTTP_PORT|g" \
    -e "s|@DEST_PORT@|$DEST_PORT|g" \
    "$TEMPLATE" > "$NGX_CONF.tmp" && mv "$NGX_CONF.tmp" "$NGX_CONF" \
    || die "cannot write $NGX_CONF"

NGX_ARGS=(-p "$NGX_PREFIX/" -c "$NGX_CONF" -e "$NGX_PREFIX/logs/error.log")

if ! out=$("$NGINX_BIN" "${NGX_ARGS[@]}" -t -q 2>&1); then
    printf '%s\n' "$out" >&2
    die "nginx rejects $NGX_CONF (see above)"
fi

# --- Redis ---------------------------------------------------------------

# setsid: Ctrl-C reaches this script only, which then stops both servers
# in order (nginx gracefully first, then Redis).
setsid redis-server \
    --bind 127.0.0.1 --port "$REDIS_PORT" \
    --unixsocket "$REDIS_SOCK" --unixsocketperm 700 \
    --dir "$REDIS_DIR" --appendonly yes --save '' \
    --daemonize no --logfile "$REDIS_DIR/redis.log" \
    --protected-mode yes </dev/null &
redis_pid=$!

redis_up() { redis-cli -s "$REDIS_SOCK" PING 2>/dev/null | grep -q PONG; }
wait_up Redis "$redis_pid" "$REDIS_DIR/redis.log" redis_up

# --- nginx ---------------------------------------------------------------

setsid "$NGINX_BIN" "${NGX_ARGS[@]}" </dev/null &
nginx_pid=$!

nginx_up() { (exec 3<>"/dev/tcp/$HTTP_ADDR/$HTTP_PORT") 2>/dev/null; }
wait_up nginx "$nginx_pid" "$NGX_PREFIX/logs/error.log" nginx_up

url="http://$HTTP_ADDR:$HTTP_PORT"
rc="redis-cli -p $REDIS_PORT"
t_marketer=$(token_of marketer)
t_privacy=$(token_of privacy)
t_admin=$(token_of admin)
if [ -n "$t_privacy" ]; then
    tokens="  marketer    $t_marketer
  privacy     $t_privacy
  admin       $t_admin"
else
    tokens="  (your own: $TOKENS holds only their hashes; delete it for new
   demo tokens)"
    t_privacy='<token>'
fi
cat <<EOF

ngx_cdp demo is running (nginx pid $nginx_pid, Redis pid $redis_pid)

  demo site   $url/
  status      $url/cdp/status   (curl -s $url/cdp/status)

The stored events, with redis-cli (Redis on 127.0.0.1:$REDIS_PORT); the
keys carry their shard's tag, scripts/cdp-key names them:

  the event streams     scripts/cdp-key events
  how many events       for s in \$(scripts/cdp-key events); do $rc XLEN "\$s"; done
  a shard's 5 newest    $rc XREVRANGE 'cdp:events:{0.13}' + - COUNT 5
  the browsers seen     $rc --scan --pattern 'cdp:profile:*'
  one browser           $rc HGETALL "\$(scripts/cdp-key profile <id>)"
                        (events, page_views, first_seen, last_seen in ms)

  <id> is the part of the browser's cdp_aid cookie before the '.'; the
  access log shows it too, as aid=...

The server-side API (Segment's HTTP API; write key $WRITE_KEY):

  curl -u $WRITE_KEY: -H 'Content-Type: application/json' \\
       -d '{"userId":"u-1","event":"Signed Up"}' $url/v1/track

The demo destination (docs/directives.md, "Destinations"): the Segment batches
that left for it, a line each, and its figures:

  tail -f $NGX_PREFIX/logs/destination.log
  curl -s $url/cdp/status | grep destination

The admin API (docs/privacy.md, "For privacy officers"), with these tokens:

$tokens

  curl -H "Authorization: Bearer $t_privacy" \\
       '$url/admin/profiles?user_id=u-1'

Files: $NGX_CONF
       $NGX_PREFIX/logs/access.log and error.log
       $REDIS_DIR/ (appendonly data, redis.log)
Key layout: store/README.md

Press Ctrl-C to stop nginx and Redis.
EOF

# Sleep until Ctrl-C, or until one of the two exits by itself.
while :; do
    who=
    wait -n -p who "$nginx_pid" "$redis_pid"
    st=$?
    if [ "$who" = "$nginx_pid" ]; then
        nginx_pid=
        say "make run: nginx exited (status $st); end of its error.log:" >&2
        tail -n 20 "$NGX_PREFIX/logs/error.log" >&2
        exit 1
    fi
    if [ "$who" = "$redis_pid" ]; then
        redis_pid=
        say "make run: Redis exited (status $st); end of redis.log:" >&2
        tail -n 20 "$REDIS_DIR/redis.log" >&2
        exit 1
    fi
done
