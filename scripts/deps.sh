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
          libmaxmind-db-writer-perl mmdb-bin"
fi

missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" \
        || missing="$missing $p"
done

[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
    echo "ngx_cdp needs these Debian packages:$missing"
    echo "install them with: sudo apt-get install$missing"
    exit 1
fi

echo "installing:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq || exit 1
apt-get install -y -qq --no-install-recommends $missing || exit 1

exit 0
