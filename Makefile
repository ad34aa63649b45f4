# ngx_cdp: build, test, run and benchmark the module.
#
#   make            build build/objs/ngx_http_cdp_module.so against Debian's
#                   nginx (nginx-dev), or NGINX_SRC=/path/to/nginx-x.y.z
#   make run        start Redis and nginx with the module on the demo site
#   make test       unit tests, then integration tests (real nginx, Redis)
#   make memcheck   the integration tests with nginx under valgrind
#   make bench      the pixel against nginx's own userid + empty_gif, then
#                   make bench-spool's runs, make bench-capture's, then
#                   make bench-cluster's
#   make bench-redis  Redis instructions per pixel event (callgrind)
#   make bench-dest   the pixel with two destinations vs none, and their
#                   delivery against ingest
#   make bench-spool  the pixel with cdp_spool vs without (Redis healthy),
#                   then Redis overloaded (appendfsync always) and killed:
#                   spooled, replayed, drain time, stored == answered
#   make bench-capture  a proxied HTML page with cdp_capture on vs the same
#                   proxy without, new and returning visitors; the pixel's
#                   bot check vs cdp_bot off, and a bot's hit (about 2 min)
#   make bench-cluster  the pixel on a Redis Cluster of 3 masters vs one
#                   redis-server (shards=48): req/s, CPU per hit and per
#                   event, events per batch, the events spread over the
#                   masters (about 1.5 min)
#   make fuzz       libFuzzer targets of the pure parsers (clang-14)
#   make deb        the Debian package libnginx-mod-http-cdp in dist/
#                   (scripts/mkdeb.sh)

SHELL      := /bin/bash
TOP        := $(abspath .)
BUILD      := $(TOP)/build
NGINX_SRC  ?= /usr/share/nginx/src
MODULE     := $(BUILD)/objs/ngx_http_cdp_module.so
NGINX_BIN  ?= /usr/sbin/nginx
PYTHON     := /usr/bin/python3

SRCS := $(wildcard ngx_cdp_module/*.c ngx_cdp_module/*.h) config \
        store/cdp.lua store/admin.lua store/shard.lua store/embed.sh \
        store/wire.sh

.PHONY: all build deps deps-test run test unit integration memcheck bench \
        bench-compare bench-redis bench-dest bench-spool bench-capture \
        bench-cluster fuzz deb clean

all: build

build: $(MODULE)

deps:
	@sh scripts/deps.sh

deps-test:
	@sh scripts/deps.sh test

# Debian's nginx-dev ships a configurable source tree with the flags its
# nginx binary was built with (conf_flags): the module is built with the
# same ones, and with the compiler and linker flags Debian builds its nginx
# and its nginx modules with (dpkg-buildflags, from dpkg-dev, which
# nginx-dev pulls in: -O2, stack protector, _FORTIFY_SOURCE, format
# checks, full RELRO), as `nginx -V` shows them. Another tree (a release
# tarball, or a git checkout with auto/configure) is configured with
# NGINX_CONFIGURE_FLAGS; to load the module into an existing nginx binary,
# use that binary's `nginx -V` flags.
NGINX_CONFIGURE_FLAGS ?= --with-compat

$(BUILD)/objs/Makefile: config
	@test -x $(NGINX_SRC)/configure -o -f $(NGINX_SRC)/auto/configure || { \
	    echo "no nginx source at $(NGINX_SRC): apt-get install nginx-dev," \
	         "or make NGINX_SRC=/path/to/nginx-x.y.z"; exit 1; }
	rm -rf $(BUILD)
	mkdir -p $(BUILD)
	cp -r $(NGINX_SRC)/. $(BUILD)/
	cd $(BUILD) && if [ -f conf_flags ]; then \
	    . ./conf_flags; \
	    export DEB_BUILD_MAINT_OPTIONS=hardening=+all; \
	    ./configure "$${NGX_CONF_FLAGS[@]}" \
	        --with-cc-opt="$$(dpkg-buildflags --get CFLAGS) $$(dpkg-buildflags --get CPPFLAGS)" \
	        --with-ld-opt="$$(dpkg-buildflags --get LDFLAGS)" \
	        --add-dynamic-module=$(TOP); \
	else \
	    if [ -f configure ]; then conf=./configure; \
	    else conf="sh auto/configure"; fi; \
	    $$conf $(NGINX_CONFIGURE_FLAGS) --add-dynamic-module=$(TOP); \
	fi

$(MODULE): $(BUILD)/objs/Makefile $(SRCS)
	sh store/embed.sh store/cdp.lua \
	    $(BUILD)/objs/addon/ngx_cdp/ngx_cdp_store_lua.h
	sh store/embed.sh store/admin.lua \
	    $(BUILD)/objs/addon/ngx_cdp/ngx_cdp_admin_lua.h admin
	$(MAKE) -C $(BUILD) -f objs/Makefile modules

run: deps build
	@bash scripts/run.sh

unit:
	$(MAKE) -C tests/unit

integration: build
	$(PYTHON) -m pytest -q tests/integration

# the tests of pixel, identity, the API, consent, erasure, export and
# segments once more, on a Redis Cluster of 3 masters
# (CDP_TEST_REDIS=cluster makes the redis_server fixture one; tests marked
# standalone are skipped there)
CLUSTER_TESTS = test_pixel.py test_events.py test_cookie.py \
    test_identity.py test_api.py test_consent.py test_consent_endpoint.py \
    test_admin.py test_cdp_admin.py test_audience.py

integration-cluster: build
	cd tests/integration && CDP_TEST_REDIS=cluster \
	    $(PYTHON) -m pytest -q $(CLUSTER_TESTS)

test: deps-test build unit integration integration-cluster

# valgrind, installed with apt-get when missing (as root), else named
NEED_VALGRIND = command -v valgrind >/dev/null || { [ "$$(id -u)" = 0 ] \
    && apt-get install -y -q valgrind >/dev/null; } \
    || { echo "make $@ needs valgrind: apt-get install valgrind"; exit 1; }

# the integration suite with every nginx (master and forked workers) under
# valgrind's memcheck; fails on any error memcheck reports (about 7 min)
memcheck: deps-test build
	@$(NEED_VALGRIND)
	rm -rf $(BUILD)/memcheck && mkdir -p $(BUILD)/memcheck
	NGINX_WRAPPER="valgrind --quiet --error-limit=no --num-callers=30 \
	    --log-file=$(BUILD)/memcheck/%p.log" \
	    $(PYTHON) -m pytest -q tests/integration
	@bad=$$(find $(BUILD)/memcheck -name '*.log' -size +0); \
	n=$$(ls $(BUILD)/memcheck | wc -l); \
	if [ -n "$$bad" ]; then echo "memcheck: errors in"; echo "$$bad"; \
	    head -40 $$bad; exit 1; fi; \
	echo "memcheck: $$n nginx processes, no error"

# bench.sh, then spool.sh (bench-spool's), capture.sh (bench-capture's),
# then cluster.sh (bench-cluster's), each also when one before it found a
# failure (exit 1), not when it could not run or was interrupted; fails
# when any did
bench: deps-test build
	@rc=0; bash tests/bench/bench.sh || rc=$$?; \
	[ "$$rc" -lt 2 ] || exit $$rc; echo; \
	bash tests/bench/spool.sh || rc=$$?; \
	[ "$$rc" -lt 2 ] || exit $$rc; echo; \
	bash tests/bench/capture.sh || rc=$$?; \
	[ "$$rc" -lt 2 ] || exit $$rc; echo; \
	bash tests/bench/cluster.sh || rc=$$?; exit $$rc

# the pixel of several revisions in one run: make bench-compare REVS="a b"
# ("tree": the working tree, uncommitted changes included)
bench-compare: deps-test
	@REVS="$(REVS)" bash tests/bench/compare.sh

# Redis instructions per pixel event, counted under callgrind on a capture
# of what nginx sends, without segments and with 10, and the segments'
# clock: make bench-redis [STORE_REVS="794cf0b HEAD"] [TICK_PROFILES=1000000]
# [BREAKDOWN=1]
bench-redis: deps-test build
	@$(NEED_VALGRIND)
	@STORE_REVS="$(STORE_REVS)" TICK_PROFILES="$(TICK_PROFILES)" \
	    BREAKDOWN="$(BREAKDOWN)" $(PYTHON) tests/bench/redis_cost.py

# the pixel with two destinations (delivered to a sink nginx) against none,
# and delivery against ingest: make bench-dest [ROUNDS=3 BENCH_SECONDS=10]
bench-dest: deps-test build
	@bash tests/bench/dest.sh

# cdp_spool: its cost with Redis healthy (spool vs none, alternated), then
# the pixel unthrottled against a Redis with appendfsync always (and
# cdp_queue_size 2000), then the same with Redis killed and restarted:
# make bench-spool [ROUNDS=3 BENCH_SECONDS=10 OVER_QUEUE=2000
# OVER_FSYNC=always CRASH=on]
bench-spool: deps-test build
	@bash tests/bench/spool.sh

# cdp_capture: a proxied HTML page with it vs the same proxy location
# without (new visitors, then returning ones), alternated, req/s and the
# worker's CPU per request, every captured page stored once; the bot check:
# the pixel vs the same with cdp_bot off, and a crawler's hit (filtered):
# make bench-capture [ROUNDS=3 BENCH_SECONDS=4 PAGE_BYTES=2048]
bench-capture: deps-test build
	@bash tests/bench/capture.sh

# Redis Cluster: the pixel (new visitors) on 3 masters (no replicas,
# redis-cli --cluster create) with cdp_redis_cluster vs one redis-server
# with cdp_redis, both shards=48, alternated: req/s, the worker's CPU per
# hit, Redis's CPU per event (the masters' summed), events per batch, and
# the events per master (spread within 10%), every hit stored once:
# make bench-cluster [ROUNDS=3 BENCH_SECONDS=10 SHARDS=48 SPREAD_LIMIT=10]
bench-cluster: deps-test build
	@bash tests/bench/cluster.sh

fuzz:
	$(MAKE) -C tests/fuzz

# the Debian package of the module built here, in the style of Debian's
# libnginx-mod-http-* (Depends: the nginx-abi of the nginx-dev tree and the
# libraries the module links): dist/libnginx-mod-http-cdp_VERSION_ARCH.deb;
# dpkg-deb only, no debhelper (scripts/mkdeb.sh, packaging/deb/)
deb: build
	@bash scripts/mkdeb.sh

clean:
	rm -rf $(BUILD) var dist
	$(MAKE) -C tests/unit clean
