#!/bin/sh
# Installs the Debian packages that building and running ngx_cdp need
# (`deps.sh`), or that its tests and bench need too (`deps.sh test`), when
# some are missing.  As root it runs apt-get; otherwise it says which
# packages to install.

PKGS="build-essential nginx nginx-dev libhiredis-dev libmaxminddb-dev
      libssl-dev libjansson-dev redis-server redis-tools curl"

if [ "$1" = test ]; then
    PKGS="$PKGS wrk python3-pytest python3-redis python3-requests chromium
          chromium-driver python3-selenium
          libmaxmind-db-writer-perl mmdb-bin prometheus"
    # (prometheus for its promtool: test_metrics.py checks cdp_status)

    # node and npm for Segment's SDK (tests/integration/node); commands, not
    # packages: NodeSource's nodejs bundles npm and conflicts with Debian's
    command -v node >/dev/null && command -v npm >/dev/null \
        || PKGS="$PKGS nodejs npm"
fi

missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" \
        || missing="$missing $p"
done

# Segment's SDK as package-lock.json pins it, unless installed from that
# very lock file already (the stamp lives in the gitignored node_modules)
node_sdk() {
    [ "$1" = test ] || return 0

    dir=$(dirname "$0")/../tests/integration/node

    cmp -s "$dir/package-lock.json" "$dir/node_modules/.ngx_cdp-lock" \
        && return 0

    npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error \
        >/dev/null || exit 1
    cp "$dir/package-lock.json" "$dir/node_modules/.ngx_cdp-lock"
}

[ -z "$missing" ] && { node_sdk "$1"; exit 0; }

if [ "$(id -u)" != 0 ]; then
    echo "ngx_cdp needs these Debian packages:$missing"
    echo "install them with: sudo apt-get install$missing"
    exit 1
fi

echo "installing:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq || exit 1
apt-get install -y -qq --no-install-recommends $missing || exit 1

node_sdk "$1"

exit 0
