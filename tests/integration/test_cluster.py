"""cdp_redis_cluster: the transport on a Redis Cluster (ngx_cdp_redis.c),
against real redis-server clusters of the harness (cdp_harness.RedisCluster):
the directive's checks, discovery and the libraries on every master, a
command routed by its key to each master, a MOVED and an ASK followed, a
failover followed.

No pixel hits here: an ingest batch spans slots until the key layout is
sharded.  The commands that travel are single-key ones: the profile view
of a `cdp_profile on` location (FCALL_RO cdp_profile_view 1 <profile key>)
and the suppression sync (SSCAN of the suppressed set)."""

import base64
import hashlib
import hmac
import re
import secrets
import time

import pytest

import cdp_harness as h
import cdp_shard


# a cdp_profile location, proxied to an echo of what it learned
ECHO = """
    server {
        listen 127.0.0.1:@EPORT@;
        location / {
            return 200 "segments=[$http_x_segments] profile=[$http_x_profile]";
        }
    }"""

APP = """\
location /app {
            cdp_profile on;
            proxy_set_header X-Segments $cdp_segments;
            proxy_set_header X-Profile $cdp_profile_id;
            proxy_pass http://127.0.0.1:@EPORT@;
        }
        location = /status { cdp_status; }"""

VIEW_RE = re.compile(r'^segments=\[([^\]]*)\] profile=\[([^\]]*)\]$')


def start(nginx_factory, cluster, workers=1, **kw):
    eport = h.free_port()
    return nginx_factory(cluster, workers=workers,
                         http_extra=ECHO.replace('@EPORT@', str(eport)),
                         locations=APP.replace('@EPORT@', str(eport)), **kw)


def aid_cookie(ngx, aid):
    """A cdp_aid cookie for aid, signed as the module signs it
    (ngx_cdp_crypto.c), so that no pixel hit is needed."""
    key = hmac.new(ngx.keys[0].encode(), b'ngx_cdp anonymous id cookie v1',
                   hashlib.sha256).digest()
    tag = hmac.new(key, b'aid:' + aid.encode(), hashlib.sha256).digest()
    return aid + '.' + base64.urlsafe_b64encode(tag[:12]).rstrip(
        b'=').decode()


def view(ngx, aid):
    """(segments, profile id) the cdp_profile location learned."""
    r = h.one_request(ngx.port, 'GET', '/app/x',
                      headers={'Cookie': 'cdp_aid=' + aid_cookie(ngx, aid)})
    assert r.status == 200, r
    m = VIEW_RE.match(r.body.decode())
    assert m, r.body
    return m.group(1), m.group(2)


def wait_view(ngx, aid, want, timeout=10.0):
    last = [None]

    def ok():
        last[0] = view(ngx, aid)
        return last[0] == want
    assert h.wait_until(ok, timeout, 0.05), (
        'view of %s is %r, not %r, after %.0f s\n%s' % (
            aid, last[0], want, timeout, ngx.log_tail()))


def slot_of(ngx, aid):
    return cdp_shard.key_slot(ngx.skey('profile', aid))


def aids_by_master(c, ngx):
    """{master port: an anonymous id whose profile key that master has}."""
    owner, out = {}, {}
    masters = set(c.masters())
    for _ in range(500):
        aid = secrets.token_hex(16)
        s = slot_of(ngx, aid)
        if s not in owner:
            owner[s] = c.master_of_slot(s)
        out.setdefault(owner[s], aid)
        if set(out) == masters:
            return out
    raise AssertionError('no profile key on some master: %r' % out)


def put_profile(c, ngx, aid, segments):
    cl = c.client()
    try:
        cl.hset(ngx.skey('profile', aid),
                mapping={'events': '1', 'segments': segments})
    finally:
        cl.close()


def counter(ngx, name):
    return ngx.status().c(name)


MOVED = 'cdp_redis_redirects_total{kind="moved"}'
ASK = 'cdp_redis_redirects_total{kind="ask"}'
REFRESHES = 'cdp_redis_map_refreshes_total'


# --------------------------------------------------------------------------
# the directive

CONF_ERRORS = [
    ('cdp_redis 127.0.0.1:6379;\n    cdp_redis_cluster 127.0.0.1:7000;',
     '"cdp_redis_cluster" directive cannot be used with cdp_redis'),
    ('cdp_redis_cluster 127.0.0.1:7000;\n    cdp_redis 127.0.0.1:6379;',
     '"cdp_redis" directive cannot be used with cdp_redis_cluster'),
    ('cdp_redis_cluster 127.0.0.1:7000;\n'
     '    cdp_redis_cluster 127.0.0.1:7001;',
     '"cdp_redis_cluster" directive is duplicate'),
    ('cdp_redis_cluster 127.0.0.1:notaport;',
     'invalid port in cdp_redis_cluster seed "127.0.0.1:notaport"'),
    ('cdp_redis_cluster 127.0.0.1;',
     'cdp_redis_cluster seed "127.0.0.1" has no port'),
    ('cdp_redis_cluster unix:/tmp/redis.sock;',
     'cdp_redis_cluster seed "unix:/tmp/redis.sock" is a unix socket'),
    ('cdp_redis_cluster no-such-host.invalid:7000;',
     'cdp_redis_cluster seed "no-such-host.invalid:7000"'),
    ('cdp_redis_cluster prefix=x;',
     'cdp_redis_cluster needs at least one host:port seed'),
    ('cdp_redis_cluster 127.0.0.1:7000 db=1;',
     'cdp_redis_cluster takes no "db=1": Redis Cluster has only database 0'),
    ('cdp_redis_cluster 127.0.0.1:7000 bogus=1;',
     'unknown cdp_redis_cluster parameter "bogus=1"'),
    ('cdp_redis_cluster 127.0.0.1:7000 timeout=0;',
     'invalid cdp_redis_cluster parameter "timeout=0"'),
    ('cdp_redis 127.0.0.1:6379 db=16;',
     'invalid cdp_redis parameter "db=16"'),
]

for _d in ('cdp_redis 127.0.0.1:6379', 'cdp_redis_cluster 127.0.0.1:7000'):
    _name = _d.split()[0]
    for _v in ('0', '1025', 'x', '-1', ''):
        CONF_ERRORS.append((
            '%s shards=%s;' % (_d, _v),
            'invalid %s parameter "shards=%s": shards is a number from 1 '
            'to 1024' % (_name, _v)))
    for _p in ('a{b', 'a}b', '{x}'):
        # quoted: nginx's own parser takes a bare { or } as a block
        CONF_ERRORS.append((
            '%s "prefix=%s";' % (_d, _p),
            'invalid %s parameter "prefix=%s": a prefix may not contain '
            '"{" or "}", they would change the hash tags of the keys'
            % (_name, _p)))


@pytest.fixture
def plain(nginx_factory):
    """An nginx that is never started: for nginx -t."""
    return nginx_factory(None, start=False)


@pytest.mark.parametrize('redis_line,message', CONF_ERRORS)
def test_config_errors(plain, redis_line, message):
    rc, out, _ = plain.test_config(redis=redis_line)
    assert rc != 0 and '[emerg]' in out and message in out, out


@pytest.mark.parametrize('redis_line', [
    'cdp_redis_cluster 127.0.0.1:7000 127.0.0.1:7001 localhost:7002 '
    'password=s3cret prefix=shop shards=64 timeout=1s;',
    'cdp_redis_cluster 127.0.0.1:7000 shards=1;',
    'cdp_redis_cluster [::1]:7000 shards=1024;',
    'cdp_redis 127.0.0.1:6379 db=2 prefix=shop shards=32;',
])
def test_config_accepted(plain, redis_line):
    rc, out, _ = plain.test_config(redis=redis_line)
    assert rc == 0 and 'test is successful' in out, out
    assert '[warn]' not in out, out


def test_no_redis_warning_names_both(plain):
    rc, out, _ = plain.test_config(redis='')
    assert rc == 0, out
    assert re.search(r'\[warn\].*cdp_pixel without cdp_redis or '
                     r'cdp_redis_cluster', out), out


# --------------------------------------------------------------------------
# discovery, libraries, routing

def test_discovery_loads_the_libraries_on_every_master(redis_cluster,
                                                        nginx_factory):
    c = redis_cluster
    masters = c.masters()
    assert len(masters) == 3
    for p in masters:
        c.node_client(p).function_flush()

    # the last seed first: the map is the same from any node
    ngx = start(nginx_factory, c, workers=2,
                redis_line='cdp_redis_cluster %s prefix=t%s;' % (
                    ' '.join('127.0.0.1:%d' % p for p in reversed(masters)),
                    secrets.token_hex(4)))

    def libraries(p):
        # RESP2: each library a flat list of names and values
        return {dict(zip(lib[::2], lib[1::2]))['library_name']
                for lib in c.node_client(p).function_list()}

    def loaded():
        return all(libraries(p) >= {'cdp_v1', 'cdp_admin_v1'}
                   for p in masters)
    assert h.wait_until(loaded, 10.0), (
        {p: libraries(p) for p in masters}, ngx.log_tail())

    # every worker: a connection to each master, one map read at least
    assert h.wait_until(lambda: counter(ngx, 'cdp_redis_connects_total')
                        == 2 * len(masters), 5.0), ngx.status()
    st = ngx.status()
    assert st.c('cdp_redis_connect_failures_total') == 0, st
    assert st.c('cdp_redis_disconnects_total') == 0, st
    assert st.c(REFRESHES) >= 2, st
    assert st.c(MOVED) == 0 and st.c(ASK) == 0, st

    log = ngx.log_tail(20000)
    maps = re.findall(r'cdp: redis cluster map from 127\.0\.0\.1:(\d+): '
                      r'3 masters, 0 slots without a node', log)
    assert len(maps) == 2 and int(maps[0]) == masters[-1], log
    for p in masters:
        for lib in ('store library cdp_v1', 'admin library cdp_admin_v1'):
            assert re.search(r'cdp: loaded the %s revision \S+ into redis '
                             r'127\.0\.0\.1:%d\n' % (lib, p), log), log


def test_profile_view_routed_to_each_master(redis_cluster, nginx_factory):
    c = redis_cluster
    ngx = start(nginx_factory, c)
    by_master = aids_by_master(c, ngx)
    for port, aid in by_master.items():
        put_profile(c, ngx, aid, 'on%d' % port)
    for port, aid in by_master.items():
        assert view(ngx, aid) == ('on%d' % port, aid)
    # a browser without a profile: nothing, from its master too
    assert view(ngx, secrets.token_hex(16)) == ('', '')
    st = ngx.status()
    assert st.c(MOVED) == 0 and st.c(ASK) == 0, st


def test_suppression_sync_reads_the_set_on_its_master(redis_cluster,
                                                      nginx_factory):
    """Worker 0's SSCAN of <prefix>:suppressed:{<shard 0>} reaches the
    master of that key's slot: the erased browser's profile is not read."""
    c = redis_cluster
    ngx = start(nginx_factory, c, start=False)
    kept, erased = secrets.token_hex(16), secrets.token_hex(16)
    put_profile(c, ngx, kept, 'k')
    put_profile(c, ngx, erased, 'e')
    cl = c.client()
    try:
        cl.sadd(ngx.shard_keys('suppressed')[0], 'anonymous_id:'
                + hashlib.sha1(('anonymous_id:' + erased).encode())
                .hexdigest())
    finally:
        cl.close()
    ngx.start()
    wait_view(ngx, kept, ('k', kept))
    wait_view(ngx, erased, ('', ''))


def test_moved_followed_then_the_map_is_read_again(redis_cluster,
                                                    nginx_factory):
    c = redis_cluster
    ngx = start(nginx_factory, c)
    aid = secrets.token_hex(16)
    put_profile(c, ngx, aid, 'moving')
    assert view(ngx, aid) == ('moving', aid)

    s = slot_of(ngx, aid)
    src = c.master_of_slot(s)
    dst = [p for p in c.masters() if p != src][0]
    # the map is read every 5 s: the slot moves just after a reading, so
    # that the worker's map still says src at the next view
    r0 = ngx.status().c(REFRESHES)
    assert h.wait_until(lambda: ngx.status().c(REFRESHES) > r0, 8.0, 0.01)
    assert c.migrate_slot(s, src, dst) >= 1
    assert c.master_of_slot(s) == dst

    before = ngx.status()
    # the worker's map still says src: a MOVED to dst, followed
    assert view(ngx, aid) == ('moving', aid)
    d = ngx.status().delta(before)
    assert d.c(MOVED) == 1 and d.c(ASK) == 0, d

    # and the map read again soon after: no MOVED any more
    assert h.wait_until(lambda: ngx.status().delta(before).c(REFRESHES)
                        >= 1, 5.0), ngx.status()
    mid = ngx.status()
    for _ in range(3):
        assert view(ngx, aid) == ('moving', aid)
    assert ngx.status().delta(mid).c(MOVED) == 0
    assert re.search(r'cdp: redis cluster map changed: 1 slots moved',
                     ngx.log_tail()), ngx.log_tail()


def test_ask_followed_while_a_slot_migrates(redis_cluster, nginx_factory):
    """The slot half-migrated by hand: MIGRATING on its master, IMPORTING
    on the other, the key already moved.  The master answers ASK; ASKING
    and the command go to the other one, every time (the map does not
    change)."""
    c = redis_cluster
    ngx = start(nginx_factory, c)
    aid = secrets.token_hex(16)
    put_profile(c, ngx, aid, 'asked')
    assert view(ngx, aid) == ('asked', aid)

    s = slot_of(ngx, aid)
    src = c.master_of_slot(s)
    dst = [p for p in c.masters() if p != src][0]
    others = [p for p in c.masters() if p not in (src, dst)]
    nsrc, ndst = c.node_client(src), c.node_client(dst)
    try:
        ndst.execute_command('CLUSTER', 'SETSLOT', s, 'IMPORTING',
                             c.node(src).node_id)
        nsrc.execute_command('CLUSTER', 'SETSLOT', s, 'MIGRATING',
                             c.node(dst).node_id)
        keys = nsrc.execute_command('CLUSTER', 'GETKEYSINSLOT', s, 1000)
        assert ngx.skey('profile', aid) in keys
        nsrc.execute_command('MIGRATE', '127.0.0.1', dst, '', 0, 5000,
                             'KEYS', *keys)
        with pytest.raises(Exception, match='^ASK %d 127.0.0.1:%d' % (s,
                                                                      dst)):
            nsrc.hgetall(ngx.skey('profile', aid))

        # just after a reading of the map (every 5 s): none in the views
        r0 = ngx.status().c(REFRESHES)
        assert h.wait_until(lambda: ngx.status().c(REFRESHES) > r0, 8.0,
                            0.01)
        before = ngx.status()
        assert view(ngx, aid) == ('asked', aid)
        assert view(ngx, aid) == ('asked', aid)
        d = ngx.status().delta(before)
        assert d.c(ASK) == 2 and d.c(MOVED) == 0, d
        assert d.c(REFRESHES) == 0, d
    finally:
        for p in [dst, src] + others:
            c.node_client(p).execute_command('CLUSTER', 'SETSLOT', s, 'NODE',
                                             c.node(dst).node_id)
        nsrc.close()
        ndst.close()
        c.wait_ok()

    # finished: src answers MOVED now, followed
    before = ngx.status()
    assert view(ngx, aid) == ('asked', aid)
    assert ngx.status().delta(before).c(MOVED) == 1


# --------------------------------------------------------------------------
# failover

def test_failover_followed(redis_cluster_replicas, nginx_factory):
    c = redis_cluster_replicas
    ngx = start(nginx_factory, c, workers=2)
    aid = secrets.token_hex(16)
    key = ngx.skey('profile', aid)
    s = slot_of(ngx, aid)
    dead = c.master_of_slot(s)
    heir = c.replicas(of=dead)
    assert len(heir) == 1, heir
    heir = heir[0]

    # replication is asynchronous: the profile (and the libraries nginx
    # loaded) on the replica before the crash, or the failover loses them
    # (WAIT counts the acknowledgements of this connection's writes)
    mc = c.node_client(dead)
    try:
        mc.hset(key, mapping={'events': '1', 'segments': 'survivor'})
        assert mc.execute_command('WAIT', 1, 5000) == 1
    finally:
        mc.close()
    assert view(ngx, aid) == ('survivor', aid)
    rc = c.node_client(heir)
    try:
        rc.execute_command('READONLY')
        assert rc.hget(key, 'segments') == 'survivor'
        assert {dict(zip(lib[::2], lib[1::2]))['library_name']
                for lib in rc.function_list()} >= {'cdp_v1', 'cdp_admin_v1'}
    finally:
        rc.close()

    c.kill(dead)
    t0 = time.monotonic()
    assert c.wait_failover(dead) and c.master_of_slot(s) == heir
    # the map read again from a live master moved the slots to the heir
    wait_view(ngx, aid, ('survivor', aid), timeout=10.0)
    took = time.monotonic() - t0

    log = ngx.log_tail(50000)
    name = '127.0.0.1:%d' % dead
    lines = [l for l in log.splitlines() if name in l
             and re.search(r'\[(error|crit|alert|emerg)\]', l)]
    # one line per worker (each had its connection to the dead master)
    pids = [re.search(r' (\d+)#\d+: ', l).group(1) for l in lines]
    assert len(lines) == 2 and len(set(pids)) == 2, (took, lines)
    assert all('cdp: redis %s unavailable' % name in l for l in lines)
    assert re.search(r'cdp: redis cluster map changed: \d+ slots moved',
                     log), log

    # the dead master comes back as a replica: nothing goes to it
    c.restart(dead)
    assert dead in c.replicas(of=heir)
    rc = c.node_client(dead)
    try:
        rc.config_resetstat()
        for _ in range(5):
            assert view(ngx, aid) == ('survivor', aid)
        stats = rc.info('commandstats')
    finally:
        rc.close()
    assert not [k for k in stats if k.startswith('cmdstat_fcall')], stats
