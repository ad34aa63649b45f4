#!/bin/sh
# Migrates a standalone Redis from the unsharded key layout of ngx_cdp
# (versions before shards: <prefix>:events, <prefix>:profile:<pid>, ...)
# to the sharded one: loads store/migrate.lua (library cdp_migrate_v1,
# which nginx never loads) and calls its cdp_migrate_step until it answers
# done, printing where it is.  store/README.md, "Upgrading from the
# unsharded layout", says when to run it (nginx stopped) and what it does.
#
# Usage: store/migrate.sh [--prefix P] [--shards N] [--step K] [--again]
#                         [redis-cli arguments...]
# (its options may come anywhere; the others go to redis-cli)
#   store/migrate.sh -p 6380
#   store/migrate.sh --prefix cdp --shards 16 -s /run/redis/redis.sock -n 2
#
#   --prefix P   the key prefix (cdp_redis ... prefix=, default cdp)
#   --shards N   the shards of the nginx that will use the store
#                (cdp_redis ... shards=, default 16)
#   --step K     keys a call visits, or stream entries (events, merges,
#                destinations' out-streams...) or segment members a call
#                moves (default 1000: a call of some milliseconds)
#   --again      after a migration that is done, one more pass (for keys an
#                old nginx wrote after it)
#
# It can be stopped at any time (Ctrl-C, kill, a lost connection) and run
# again: it goes on where it was (the hash <prefix>:migration), and once
# done, running it again changes nothing.
#
# Exit status: 0 done; 1 an error (a reply of Redis, redis-cli failing);
# 2 done, but some keys or entries could not be moved (their new name was
# taken: see the summary and SMEMBERS <prefix>:migration:conflicts).
set -e
dir=$(cd "$(dirname "$0")" && pwd)
prefix=cdp
shards=16
step=1000
again=

die() { echo "migrate.sh: $*" >&2; exit 1; }

# our options, anywhere; everything else is redis-cli's, in its order
n=$#
need() { [ "$n" -ge 1 ] || die "$1 needs a value"; }
while [ "$n" -gt 0 ]; do
    a=$1; shift; n=$((n - 1))
    case $a in
        --prefix) need "$a"; prefix=$1; shift; n=$((n - 1)) ;;
        --prefix=*) prefix=${a#--prefix=} ;;
        --shards) need "$a"; shards=$1; shift; n=$((n - 1)) ;;
        --shards=*) shards=${a#--shards=} ;;
        --step) need "$a"; step=$1; shift; n=$((n - 1)) ;;
        --step=*) step=${a#--step=} ;;
        --again) again=again ;;
        --help)
            sed -n '2,/^set -e$/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
            exit 0 ;;
        *) set -- "$@" "$a" ;;
    esac
done
case $shards in ''|*[!0-9]*) die "--shards: not a number: $shards" ;; esac
case $step in ''|*[!0-9]*) die "--step: not a number: $step" ;; esac

command -v redis-cli >/dev/null 2>&1 \
    || die "redis-cli not found (apt-get install redis-tools)"

src=$dir/migrate.lua
[ -r "$src" ] || die "cannot read $src"
# its shard helpers made afresh from store/shard.lua in the source tree
# (store/wire.sh, as store/load.sh does); an installed copy has no wire.sh
# and loads the file as it is, whose block the tests keep current
lib=$(mktemp "${TMPDIR:-/tmp}/cdp-migrate.XXXXXX")
trap 'rm -f "$lib"' EXIT
if [ -r "$dir/wire.sh" ]; then
    sh "$dir/wire.sh" --lua "$src" > "$lib" || die "store/wire.sh failed"
else
    cp "$src" "$lib"
fi
rev=$(cksum < "$lib" | cut -d' ' -f1)
out=$(sed -e "s/@REV@/$rev/" "$lib" | redis-cli "$@" -x FUNCTION LOAD REPLACE) \
    || die "redis-cli failed${out:+: $out}"
case $out in
    cdp_migrate_v1) echo "loaded library cdp_migrate_v1 revision $rev" ;;
    *) die "FUNCTION LOAD of cdp_migrate_v1 failed: $out" ;;
esac
rm -f "$lib"

# one call: sets fin, phase and counts, or exits
call() {
    out=$(redis-cli "$@" FCALL cdp_migrate_step 0 "$prefix|$shards" \
              "$step" $again) || die "redis-cli failed${out:+: $out}"
    # the reply: done (0 or 1), the phase, the counts (three lines)
    fin='' phase='' counts=''
    { read -r fin; read -r phase; read -r counts; } <<EOF || :
$out
EOF
    case $fin in
        0|1) ;;
        *) die "$(printf '%s\n' "$out" | head -n 5)" ;;
    esac
    again=
}

last=
shown=
started=$(date +%s)
while :; do
    call "$@"
    now=$(date +%s)
    # a line when the phase changes, else one a second
    if [ "$phase" != "$shown" ] || [ "$now" != "$last" ]; then
        echo "phase $phase: $counts"
        shown=$phase
        last=$now
    fi
    [ "$fin" = 1 ] && break
done

echo "done in $(( $(date +%s) - started )) s: $counts"
conflicts=$(printf '%s\n' "$counts" | sed -n 's/.* conflicts=\([0-9]*\).*/\1/p')
left=$(printf '%s\n' "$counts" | sed -n 's/.* left=\([0-9]*\).*/\1/p')
if [ "${conflicts:-0}" != 0 ] || [ "${left:-0}" != 0 ]; then
    echo "migrate.sh: $conflicts keys kept their old name (the new one was" \
         "taken: SMEMBERS $prefix:migration:conflicts names them) and" \
         "$left stream entries stayed in the old streams (their shard's" \
         "stream had newer ones): was a new nginx running?" >&2
    exit 2
fi
