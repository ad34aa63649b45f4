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
# (the cksum of cdp.lua), so the module sees this library as current.
set -e
dir=$(cd "$(dirname "$0")" && pwd)
command -v redis-cli >/dev/null 2>&1 || {
    echo "load.sh: redis-cli not found (apt-get install redis-tools)" >&2
    exit 1
}
# both libraries: cdp_v1 (ingest) and cdp_admin_v1 (erasure, export)
for lib in cdp:cdp_v1 admin:cdp_admin_v1; do
    src=$dir/${lib%%:*}.lua
    name=${lib#*:}
    [ -r "$src" ] || { echo "load.sh: cannot read $src" >&2; exit 1; }
    rev=$(cksum < "$src" | cut -d' ' -f1)
    out=$(sed -e "s/@REV@/$rev/" "$src" | redis-cli "$@" -x FUNCTION LOAD REPLACE) \
        || { echo "load.sh: redis-cli failed${out:+: $out}" >&2; exit 1; }
    case $out in
        "$name") echo "loaded library $name revision $rev" ;;
        *) echo "load.sh: FUNCTION LOAD of $name failed: $out" >&2; exit 1 ;;
    esac
done
