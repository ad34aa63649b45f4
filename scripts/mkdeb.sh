#!/bin/bash
# make deb: a Debian package of the built module, libnginx-mod-http-cdp, in
# the style of Debian's own libnginx-mod-http-* packages, without debhelper:
# a staging tree assembled here, then `dpkg-deb --root-owner-group --build`.
#
# Usage: scripts/mkdeb.sh [--outdir DIR]     (default: dist/)
#
# It packages what `make build` made (build/objs/ngx_http_cdp_module.so)
# and prints the path of the .deb. What goes where:
#
#   /usr/lib/nginx/modules/ngx_http_cdp_module.so          the module (stripped)
#   /usr/share/nginx/modules-available/mod-http-cdp.conf   load_module line
#   /etc/nginx/modules-enabled/50-mod-http-cdp.conf        symlink to it, made
#                                     by postinst, set aside by prerm on remove
#   /usr/share/ngx-cdp/store/         cdp.lua, admin.lua, load.sh, and
#                                     migrate.lua, migrate.sh (the
#                                     unsharded layout's migration)
#   /usr/bin/                         cdp-sign-url, cdp-id-hash, and cdp-admin
#                                     when scripts/cdp-admin exists
#   /usr/share/doc/libnginx-mod-http-cdp/
#                                     README.md.gz, docs/*.md.gz,
#                                     store/README.md.gz,
#                                     store/ADMIN.md.gz, copyright,
#                                     changelog.Debian.gz, examples/cdp.conf
#
# The maintainer scripts, the load_module file, the example conf and the
# copyright file are in packaging/deb/.
#
# Depends: the nginx ABI of the nginx-dev tree the module was built against
# (debian/libnginx-mod.abisubstvars of build/, such as nginx-abi-1.22.1-7,
# which Debian's nginx package Provides), and the shared libraries the
# module links, from dpkg-shlibdeps (libc6, libhiredis0.14, libjansson4,
# libmaxminddb0, libssl3, and whatever config adds). Recommends: nginx,
# openssl (cdp-sign-url, cdp-id-hash) and python3 (cdp-admin).
#
# The version: the module's own, NGX_CDP_VERSION of
# ngx_cdp_module/ngx_http_cdp_module.h (the one every event carries as
# context.library.version), with Debian revision -1: 0.1.0-1. The changelog
# entry names the git commit it was built from.
#
# Environment: DEB_VERSION (the whole Debian version, instead),
# NGINX_ABI (instead of the tree's, e.g. nginx-abi-1.22.1-7),
# DEB_MAINTAINER ("Name <address>"; default: the author of the last commit),
# DEB_BUILD_OPTIONS=nostrip (keep the debugging symbols), BUILD (the build
# directory, default build/).

set -euo pipefail

TOP=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$TOP/build}
PKG=libnginx-mod-http-cdp
MODULE=$BUILD/objs/ngx_http_cdp_module.so
DEBDIR=$TOP/packaging/deb
OUTDIR=$TOP/dist

die() { printf 'mkdeb: %s\n' "$*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case $1 in
        --outdir) [ $# -ge 2 ] || die "--outdir needs a directory"
                  OUTDIR=$2; shift 2 ;;
        --outdir=*) OUTDIR=${1#--outdir=}; shift ;;
        *) die "usage: scripts/mkdeb.sh [--outdir DIR]" ;;
    esac
done

for tool in dpkg-deb dpkg dpkg-shlibdeps gzip strip md5sum; do
    command -v "$tool" >/dev/null 2>&1 \
        || die "$tool not found (apt-get install dpkg-dev binutils)"
done

[ -f "$MODULE" ] || die "the module is not built: $MODULE (make build)"

# --- what it was built against --------------------------------------------

abi=${NGINX_ABI:-}
if [ -z "$abi" ]; then
    subst=$BUILD/debian/libnginx-mod.abisubstvars
    [ -f "$subst" ] || die "$subst is missing: the module was not built" \
        "against Debian's nginx-dev tree (/usr/share/nginx/src), so the" \
        "nginx ABI it needs is unknown (set NGINX_ABI=nginx-abi-X.Y.Z-N)"
    abi=$(sed -n 's/^nginx:abi=[[:space:]]*//p' "$subst" | head -n 1)
    [ -n "$abi" ] || die "no nginx:abi= line in $subst"
fi
case $abi in
    nginx-abi-*) ;;
    *) die "not an nginx ABI package name: $abi" ;;
esac
nginx_version=$(sed -n 's/^#define NGINX_VERSION *"\(.*\)"/\1/p' \
    "$BUILD/src/core/nginx.h" 2>/dev/null || true)

upstream=$(sed -n 's/^#define NGX_CDP_VERSION *"\(.*\)"/\1/p' \
    "$TOP/ngx_cdp_module/ngx_http_cdp_module.h")
[ -n "$upstream" ] || die "no NGX_CDP_VERSION in ngx_http_cdp_module.h"
version=${DEB_VERSION:-$upstream-1}
arch=$(dpkg --print-architecture)

# the commit, the date (reproducible: the commit's) and the maintainer
commit='' dirty='' epoch='' maint=''
if git -C "$TOP" rev-parse --git-dir >/dev/null 2>&1; then
    commit=$(git -C "$TOP" rev-parse --short HEAD 2>/dev/null || true)
    epoch=$(git -C "$TOP" log -1 --format=%ct 2>/dev/null || true)
    [ -z "$(git -C "$TOP" status --porcelain --untracked-files=no \
        2>/dev/null)" ] || dirty=" (with local changes)"
    maint=$(git -C "$TOP" log -1 --format='%an <%ae>' 2>/dev/null || true)
fi
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-${epoch:-$(date +%s)}}
maint=${DEB_MAINTAINER:-${maint:-ngx_cdp maintainers <root@localhost>}}
dist=$(. /etc/os-release 2>/dev/null; echo "${VERSION_CODENAME:-unstable}")

# --- the staging tree -----------------------------------------------------

umask 022
work=$(mktemp -d "${TMPDIR:-/tmp}/mkdeb.XXXXXX")
trap 'rm -rf "$work"' EXIT
# debian/<package>/: where dpkg-shlibdeps expects a package's files
root=$work/debian/$PKG
doc=$root/usr/share/doc/$PKG

install -d "$root/DEBIAN" "$root/usr/lib/nginx/modules" \
    "$root/usr/share/nginx/modules-available" "$root/usr/share/ngx-cdp/store" \
    "$root/usr/bin" "$doc/store" "$doc/docs" "$doc/examples"

install -m 644 "$MODULE" "$root/usr/lib/nginx/modules/"
case " ${DEB_BUILD_OPTIONS:-} " in
    *" nostrip "*) ;;
    # as dh_strip does a shared library
    *) strip --strip-unneeded --remove-section=.comment \
           --remove-section=.note \
           "$root/usr/lib/nginx/modules/ngx_http_cdp_module.so" ;;
esac
install -m 644 "$DEBDIR/mod-http-cdp.conf" \
    "$root/usr/share/nginx/modules-available/"

install -m 644 "$TOP/store/cdp.lua" "$TOP/store/admin.lua" \
    "$TOP/store/migrate.lua" "$root/usr/share/ngx-cdp/store/"
install -m 755 "$TOP/store/load.sh" "$TOP/store/migrate.sh" \
    "$root/usr/share/ngx-cdp/store/"

tools="cdp-sign-url cdp-id-hash cdp-key"
[ -f "$TOP/scripts/cdp-admin" ] && tools="$tools cdp-admin"
for t in $tools; do
    install -m 755 "$TOP/scripts/$t" "$root/usr/bin/$t"
done

# docs, compressed as dh_compress does (gzip -9n)
gz() { gzip -9n < "$1" > "$2.gz"; chmod 644 "$2.gz"; }
gz "$TOP/README.md" "$doc/README.md"
gz "$TOP/store/README.md" "$doc/store/README.md"
gz "$TOP/store/ADMIN.md" "$doc/store/ADMIN.md"
for f in "$TOP"/docs/*.md; do gz "$f" "$doc/docs/${f##*/}"; done
install -m 644 "$DEBDIR/copyright" "$doc/copyright"
install -m 644 "$DEBDIR/cdp.conf" "$doc/examples/cdp.conf"

built="ngx_cdp ${commit:+git $commit$dirty }against nginx"
built="$built${nginx_version:+ $nginx_version} ($abi)"
{
    printf '%s (%s) %s; urgency=medium\n\n' "$PKG" "$version" "$dist"
    printf 'Built from %s.\n' "$built" | fold -s -w 72 \
        | sed -e 's/ *$//' -e '1s/^/  * /' -e '2,$s/^/    /'
    printf '\n -- %s  %s\n' "$maint" \
        "$(LC_ALL=C date -u -R -d "@$SOURCE_DATE_EPOCH")"
} > "$work/changelog.Debian"
gz "$work/changelog.Debian" "$doc/changelog.Debian"

for s in postinst prerm postrm; do
    install -m 755 "$DEBDIR/$s" "$root/DEBIAN/$s"
done

# --- control ----------------------------------------------------------------

# the libraries the module links, with their versions, as Debian's
# packages get them: dpkg-shlibdeps (dpkg-dev, which the build needs
# already for dpkg-buildflags) reads the module's NEEDED entries, so a
# library added to config is a dependency without a change here
printf 'Source: ngx-cdp\n\nPackage: %s\nArchitecture: any\n' "$PKG" \
    > "$work/debian/control"
libs=$(cd "$work" && dpkg-shlibdeps -O \
    "debian/$PKG/usr/lib/nginx/modules/ngx_http_cdp_module.so" \
    | sed -n 's/^shlibs:Depends=//p') || die "dpkg-shlibdeps failed"
rm -f "$work/debian/control"
[ -n "$libs" ] || die "dpkg-shlibdeps found no library dependencies"

# the tools' interpreters and commands: cdp-sign-url and cdp-id-hash run
# openssl, cdp-admin is Python 3 (recommended, not required: the module
# needs neither)
recommends="nginx, openssl"
# "a and b", "a, b and c"
tool_list=
n=0
for t in $tools; do n=$((n + 1)); done
i=0
for t in $tools; do
    i=$((i + 1))
    if [ $i = 1 ]; then tool_list=$t
    elif [ $i = $n ]; then tool_list="$tool_list and $t"
    else tool_list="$tool_list, $t"; fi
done
case " $tools " in *" cdp-admin "*) recommends="$recommends, python3" ;; esac

# Installed-Size as dpkg-gencontrol counts it: KiB per file, rounded up,
# and 1 per directory or symlink
size=$(find "$root" -path "$root/DEBIAN" -prune -o -printf '%y %s\n' \
    | awk '$1 == "f" { n += int(($2 + 1023) / 1024); next } { n += 1 }
           END { print n }')

cat > "$root/DEBIAN/control" <<EOF
Package: $PKG
Version: $version
Architecture: $arch
Maintainer: $maint
Installed-Size: $size
Depends: $abi, $libs
Recommends: $recommends
Suggests: redis-server, redis-tools
Section: httpd
Priority: optional
Multi-Arch: foreign
Description: Customer Data Platform module for Nginx (ngx_cdp)
 ngx_cdp makes nginx a first-party Customer Data Platform: a pixel without
 JavaScript, a signed anonymous first-party cookie, a Segment-compatible API
 for server-side events, an admin API for erasure and access requests, and
 destinations that forward events only for the purposes each person
 consented to. Every hit is stored in Redis without blocking a worker.
 .
 This package contains the dynamic module, enabled through
 /etc/nginx/modules-enabled, the Redis Functions libraries it loads into
 Redis (with store/load.sh, to load them by hand), and the tools
 $tool_list. An example configuration is in
 /usr/share/doc/libnginx-mod-http-cdp/examples/cdp.conf.
EOF

(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' \
    | LC_ALL=C sort -z | xargs -0 md5sum) > "$root/DEBIAN/md5sums"
chmod 644 "$root/DEBIAN/control" "$root/DEBIAN/md5sums"

# every file dated from the commit, as dpkg-deb would clamp them
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

mkdir -p "$OUTDIR"
deb=$OUTDIR/${PKG}_${version}_$arch.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb.tmp" >/dev/null
mv "$deb.tmp" "$deb"
echo "$deb"
