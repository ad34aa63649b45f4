"""Redis failures never slow the pixel, and storage recovers by itself; the
Redis Functions library is loaded on connect (README: the path of one hit;
docs/directives.md: cdp_redis; store/cdp.lua)."""

import os
import subprocess
import time

import cdp_harness as h


FAST = 0.050            # a pixel answer while Redis is down or hung


def keep_hitting_until_stored(ngx, n0, timeout=15.0, tag='again'):
    """Sends a hit every 0.2 s until XLEN exceeds n0; returns the XLEN."""
    deadline = time.monotonic() + timeout
    i = 0
    while time.monotonic() < deadline:
        i += 1
        r = ngx.hit('title=%s%d' % (tag, i))
        assert h.is_gif(r), r
        n = ngx.xlen()
        if n > n0:
            return n
        time.sleep(0.2)
    return ngx.xlen()


def timed_hits(ngx, client, n, tag):
    times = []
    for i in range(n):
        r = ngx.hit('title=%s%d' % (tag, i), client=client)
        assert h.is_gif(r), r
        assert h.cookie_of(r)[0], 'no cookie while Redis is unavailable'
        times.append(r.elapsed)
    return times


# -- 8. Redis down ---------------------------------------------------------

def test_redis_down_pixel_still_fast_then_recovers(cdp):
    rs = cdp.redis
    cdp.hit('title=before')
    assert cdp.wait_xlen(1) == 1
    cdp.wait_settled()
    workers = cdp.worker_pids()
    c = cdp.client()
    cdp.hit('title=warm', client=c)
    assert cdp.wait_xlen(2) == 2
    st0 = cdp.wait_settled()

    rs.stop()
    try:
        times = timed_hits(cdp, c, 20, 'down')
        assert max(times) < FAST, (
            'pixel answers while Redis is down (s): %r' % times)

        def dropped():
            s = cdp.status()
            return (s.delta(st0).dropped('redis_down')
                    + s.delta(st0).dropped('redis_error')) >= 20 and s
        st = h.wait_until(dropped, 5)
        d = (st or cdp.status()).delta(st0)
        assert d.dropped('redis_down') + d.dropped('redis_error') == 20, (
            'hits while Redis is down: dropped{redis_down} +%d, '
            'dropped{redis_error} +%d, want 20 in all; deltas %r' % (
                d.dropped('redis_down'), d.dropped('redis_error'),
                {k: v for k, v in d.items() if v}))
        assert d.stored == 0, d
        assert cdp.alive() and cdp.worker_pids() == workers, (
            'nginx workers changed while Redis was down: %r -> %r'
            % (workers, cdp.worker_pids()))
        # the workers keep trying (backoff from 100 ms) and count failures
        assert h.wait_until(lambda: cdp.status().delta(st0).c(
            'cdp_redis_connect_failures_total') >= 1, 3), (
            'no failed reconnect counted within 3 s: %r' % cdp.status())
    finally:
        c.close()
        rs.start()

    # a fresh Redis (empty, no library) on the same port
    n = keep_hitting_until_stored(cdp, 0, 15)
    assert n >= 1, ('no hit stored within 15 s of Redis coming back; '
                    'counters %r' % {k: v for k, v in
                                     cdp.status().delta(st0).items() if v})
    d = cdp.status().delta(st0)
    assert d.c('cdp_redis_disconnects_total') >= 1, d
    assert cdp.worker_pids() == workers
    events = cdp.events()
    assert all(e['context']['page']['title'].startswith('again')
               for e in events), 'hits of the down period stored: %r' % [
                   e['context']['page']['title'] for e in events]


def test_redis_hung_pixel_still_fast_then_recovers(redis_server,
                                                   nginx_factory):
    """A Redis that accepts but never answers (SIGSTOP): the module's
    timeout closes the connection; the pixel never waits."""
    rs = redis_server
    ngx = nginx_factory(rs, redis_params='timeout=300ms')
    ngx.hit('title=before')
    assert ngx.wait_xlen(1) == 1
    st0 = ngx.wait_settled()
    workers = ngx.worker_pids()
    c = ngx.client()
    ngx.hit('title=warm', client=c)
    assert ngx.wait_xlen(2) == 2
    rs.pause()
    try:
        times = []
        for k in range(4):
            times += timed_hits(ngx, c, 5, 'hung%d-' % k)
            time.sleep(0.1)
        assert max(times) < FAST, (
            'pixel answers while Redis hangs (s): %r' % times)

        def timed_out():
            d = ngx.status().delta(st0)
            return (d.c('cdp_redis_disconnects_total') >= 1
                    and d.dropped() >= 1) and d
        d = h.wait_until(timed_out, 5)
        assert d, ('no disconnect/drop after the 300ms timeout: %r'
                   % {k: v for k, v in ngx.status().delta(st0).items() if v})
        assert ngx.alive() and ngx.worker_pids() == workers
    finally:
        c.close()
        rs.resume()
    n0 = ngx.xlen()
    n = keep_hitting_until_stored(ngx, n0, 15)
    assert n > n0, 'nothing stored within 15 s of Redis resuming'


# -- 11. the Redis Functions library -----------------------------------------

STORE_LUA = os.path.join(h.MAIN, 'store', 'cdp.lua')


def store_rev():
    with open(STORE_LUA, 'rb') as f:
        out = subprocess.run(['cksum'], stdin=f, stdout=subprocess.PIPE,
                             check=True).stdout.decode()
    return out.split()[0]


def library(c):
    """Function names of the library cdp_v1 (empty when absent)."""
    libs = c.execute_command('FUNCTION', 'LIST', 'LIBRARYNAME', 'cdp_v1')
    names = set()

    def walk(x):
        if isinstance(x, (list, tuple)):
            for i, y in enumerate(x):
                if y == 'name' and i + 1 < len(x):
                    names.add(x[i + 1])
                walk(y)
        elif isinstance(x, dict):
            for k, v in x.items():
                if k == 'name':
                    names.add(v)
                walk(v)
    for lib in libs:
        walk(lib)
    return names


def test_library_loaded_into_fresh_redis(redis_server, nginx_factory):
    c = redis_server.client()
    try:
        assert c.execute_command('FUNCTION', 'LIST') == [], 'Redis not fresh'
        ngx = nginx_factory(redis_server)
        ngx.hit('title=lib')
        assert ngx.wait_xlen(1) == 1, 'first hit not stored'
        names = library(c)
        assert {'cdp_ingest', 'cdp_version'} <= names, (
            'FUNCTION LIST LIBRARYNAME cdp_v1: %r' % names)
        assert c.execute_command('FCALL_RO', 'cdp_version', 0) == store_rev(), (
            'loaded library is not the revision of store/cdp.lua')

        # the library disappears under the running nginx
        c.execute_command('FUNCTION', 'FLUSH')
        assert not library(c)
        n = keep_hitting_until_stored(ngx, 1, 10, 'flushed')
        assert n > 1, ('nothing stored within 10 s of FUNCTION FLUSH; '
                       'counters %r' % ngx.status())
        assert {'cdp_ingest', 'cdp_version'} <= library(c)
    finally:
        c.close()


def test_older_library_replaced(redis_server, nginx_factory):
    c = redis_server.client()
    try:
        with open(STORE_LUA) as f:
            old = f.read().replace('@REV@', '0')
        c.execute_command('FUNCTION', 'LOAD', old)
        assert c.execute_command('FCALL_RO', 'cdp_version', 0) == '0'
        ngx = nginx_factory(redis_server)
        ngx.hit('title=upgrade')
        assert ngx.wait_xlen(1) == 1
        assert c.execute_command('FCALL_RO', 'cdp_version', 0) == store_rev(), (
            'the older library was not replaced on connect')
    finally:
        c.close()


def test_queue_full_when_redis_does_not_answer(redis_server, nginx_factory):
    """cdp_queue_size bounds the events a worker holds unacknowledged; past
    it, hits are answered and dropped as queue_full.  The held ones are
    stored once Redis answers."""
    rs = redis_server
    ngx = nginx_factory(rs, workers=1, redis_params='timeout=10s',
                        http_extra='cdp_queue_size 5; cdp_batch_size 5;')
    ngx.hit('title=before')
    assert ngx.wait_xlen(1) == 1
    st0 = ngx.wait_settled()
    c = ngx.client()
    rs.pause()
    try:
        times = timed_hits(ngx, c, 20, 'held')
        assert max(times) < FAST, times
        st = ngx.status()
        d = st.delta(st0)
        assert d.dropped('queue_full') == 15, (
            '20 hits, queue of 5, Redis silent: dropped{queue_full} +%d, '
            'want 15; deltas %r' % (d.dropped('queue_full'),
                                    {k: v for k, v in d.items() if v}))
        assert st.queue == 5, 'cdp_queue_events %d, want 5' % st.queue
    finally:
        c.close()
        rs.resume()
    n = ngx.wait_xlen(6, 5)
    assert n == 6, 'the 5 held events were not stored after Redis resumed'
    st = h.wait_until(lambda: (lambda s: s.delta(st0).stored >= 5 and s)(
        ngx.status()), 5)
    assert st and st.delta(st0).stored == 5 and st.queue == 0, (
        ngx.status().delta(st0))
    # docs/directives.md (cdp_status): accepted is "queued for Redis",
    # so not the ones dropped as queue_full
    assert d.accepted == 5, (
        'cdp_events_accepted_total +%d, want 5 (15 of the 20 were '
        'dropped as queue_full, never queued); deltas %r' % (
            d.accepted, {k: v for k, v in d.items() if v}))
