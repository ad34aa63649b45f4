#!/bin/sh
# Loads the ngx_cdp Redis Functions libraries (store/cdp.lua, library cdp_v1,
# and store/admin.lua, library cdp_admin_v1)
# into a Redis by hand.  The module does this by itself when it connects and
# finds the library missing or older; this script is for operators who want
# to load it ahead of time, or into another Redis.
#
# Usage: store/load.sh [redis-cli arguments...]
#   store/load.sh                              # 127.0.0.1:6379
#   store/load.sh -p 6380
#   store/load.sh -s /path/to/redis.sock -n 2
#   store/load.sh -h redis.internal -a secret
#
# @REV@ is replaced with the same revision embed.sh compiles into the module
# (the cksum of cdp.lua, its blocks generated), so the module sees this
# library as current.
# In the source tree, the libraries' generated blocks (the wire constants,
# the shard helpers) are made afresh with store/wire.sh, as embed.sh makes
# them; an installed copy (no wire.sh beside it) loads the files as they
# are, whose blocks the tests keep current.
set -e
dir=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp "${TMPDIR:-/tmp}/cdp-load.XXXXXX")
trap 'rm -f "$tmp"' EXIT
command -v redis-cli >/dev/null 2>&1 || {
    echo "load.sh: redis-cli not found (apt-get install redis-tools)" >&2
    exit 1
}
# both libraries: cdp_v1 (ingest) and cdp_admin_v1 (erasure, export)
for lib in cdp:cdp_v1 admin:cdp_admin_v1; do
    src=$dir/${lib%%:*}.lua
    name=${lib#*:}
    [ -r "$src" ] || { echo "load.sh: cannot read $src" >&2; exit 1; }
    if [ -r "$dir/wire.sh" ]; then
        sh "$dir/wire.sh" --lua "$src" > "$tmp"
    else
        cp "$src" "$tmp"
    fi
    rev=$(cksum < "$tmp" | cut -d' ' -f1)
    out=$(sed -e "s/@REV@/$rev/" "$tmp" | redis-cli "$@" -x FUNCTION LOAD REPLACE) \
        || { echo "load.sh: redis-cli failed${out:+: $out}" >&2; exit 1; }
    case $out in
        "$name") echo "loaded library $name revision $rev" ;;
        *) echo "load.sh: FUNCTION LOAD of $name failed: $out" >&2; exit 1 ;;
    esac
done
