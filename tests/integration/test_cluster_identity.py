"""Identity through nginx on a real Redis Cluster: a login (cdp_identify)
or a signed pixel URL names the person, nginx drives the identify's saga
of one-slot calls (ngx_cdp_xid.c, cdp_xid in store/cdp.lua), and a
browser linked to a person in another shard has its later hits forwarded
there.  The store's side of the saga, step by step: test_xid.py."""

import concurrent.futures
import collections

import pytest

import cdp_harness as h
import cdp_shard
from test_identity import start, Browser, LOCATIONS
from test_spool import spool_nginx

key, idx, resolve, profile = h.key, h.idx, h.resolve, h.profile
members, merges, check_graph = h.members, h.merges, h.check_graph


def settle(ngx, timeout=20.0):
    """Every event stored and every saga done."""
    def f():
        st = ngx.wait_settled(timeout)
        return st if st.c('cdp_identity_sagas_running') == 0 else None
    return h.wait_until(f, timeout, 0.05)


def sagas(st, result):
    return st.c('cdp_identity_sagas_total{result="%s"}' % result)


def test_login_joins_the_history_across_slots(redis_cluster, nginx_factory):
    ngx = start(nginx_factory, redis_cluster)
    b = Browser(ngx)
    for _ in range(3):
        assert b.view().status == 200
    settle(ngx)
    assert b.login(uid='u-1', email='Jane@Example.com',
                   traits='{"plan":"pro"}').status == 200
    st = settle(ngx)
    assert sagas(st, 'done') >= 1 and sagas(st, 'abandoned') == 0, st

    pid = idx(ngx, 'user_id', 'u-1')
    assert pid and pid.startswith('p')
    assert idx(ngx, 'email', 'jane@example.com') == pid
    assert resolve(ngx, b.aid) == pid
    p = profile(ngx, pid)
    assert (p['events'], p['page_views'], p['user_id'], p['trait.plan'],
            p['trait.email']) == ('3', '3', 'u-1', 'pro', 'jane@example.com')
    assert 'anonymous_id:' + b.aid in members(ngx, pid)

    # later hits: counted on the person, in the person's shard
    st0 = ngx.status()
    for _ in range(2):
        assert b.view().status == 200
    st = settle(ngx)
    assert profile(ngx, pid)['events'] == '5'
    d = st.delta(st0)
    if ngx.tag_of(pid) != ngx.tag_of(b.aid):
        assert d.c('cdp_events_forwarded_total') == 2, d
    assert d.dropped() == 0
    check_graph(ngx)


def test_twenty_browsers_in_twenty_slots_log_in_at_once(redis_cluster,
                                                        nginx_factory):
    """One person logs in from 20 browsers whose profiles are in 20
    different slots, all at once (issue 19): one profile, all 20 linked,
    the counters equal to the hits."""
    ngx = start(nginx_factory, redis_cluster, workers=2,
                redis_params='shards=64')
    pool, seen = [], set()
    while len(pool) < 20:
        b = Browser(ngx)
        assert b.view().status == 200
        s = cdp_shard.shard_of(b.aid, 64)
        if s not in seen:
            seen.add(s)
            pool.append(b)
    hits = 0
    for i, b in enumerate(pool):
        for _ in range(i % 4):
            assert b.view().status == 200
        hits += 1 + i % 4
    slots = {cdp_shard.key_slot(key(ngx, 'profile', b.aid)) for b in pool}
    assert len(slots) == 20
    settle(ngx)

    with concurrent.futures.ThreadPoolExecutor(20) as ex:
        res = list(ex.map(lambda b: b.login(uid='u-20',
                                            email='twenty@example.com'),
                          pool))
    assert all(r.status == 200 for r in res)
    st = settle(ngx, timeout=30)
    assert sagas(st, 'abandoned') == 0, st

    pid = idx(ngx, 'user_id', 'u-20')
    assert pid
    assert {resolve(ngx, b.aid) for b in pool} == {pid}
    assert profile(ngx, pid)['events'] == str(hits)
    m = members(ngx, pid)
    assert {x for x in m if x.startswith('anonymous_id:')} == {
        'anonymous_id:' + b.aid for b in pool}
    known = check_graph(ngx)
    assert list(known) == [pid], known


def test_signed_pixel_and_shared_device_on_a_cluster(redis_cluster,
                                                     nginx_factory):
    """A second user on the same browser: the browser moves to them, the
    first person keeps their history (rule 3), across slots."""
    ngx = start(nginx_factory, redis_cluster)
    b = Browser(ngx)
    b.view()
    b.login(uid='u-a')
    settle(ngx)
    pa = idx(ngx, 'user_id', 'u-a')
    b.view()
    settle(ngx)
    b.login(uid='u-b')
    settle(ngx)
    pb = idx(ngx, 'user_id', 'u-b')
    assert pa and pb and pa != pb
    assert resolve(ngx, b.aid) == pb
    assert profile(ngx, pa)['events'] == '2'
    assert 'anonymous_id:' + b.aid not in members(ngx, pa)
    assert 'anonymous_id:' + b.aid in members(ngx, pb)
    assert [m['reason'] for m in merges(ngx)
            if m['reason'] == 'shared_device'] == ['shared_device']
    check_graph(ngx)


def test_logins_through_a_master_failover(redis_cluster_replicas,
                                          nginx_factory):
    """kill -9 of a master while 20 browsers log in as one person: nginx
    sends the failed steps again after the failover (and the sweeper
    finishes what was left), so the result is the one without the crash:
    one profile, every browser linked, the counters equal to the hits."""
    cl = redis_cluster_replicas
    bport = str(h.free_port())
    ngx = spool_nginx(nginx_factory, cl,
                      http_extra=h.IDENTIFY_BACKEND.replace('@BPORT@', bport),
                      locations=LOCATIONS.replace('@BPORT@', bport))
    pool = [Browser(ngx) for _ in range(20)]
    for b in pool:
        assert b.view().status == 200
    settle(ngx)

    victim = cl.masters()[0]
    with concurrent.futures.ThreadPoolExecutor(20) as ex:
        futs = [ex.submit(b.login, uid='u-fail') for b in pool]
        cl.kill(victim)
        res = [f.result() for f in futs]
    assert all(r.status == 200 for r in res)
    cl.wait_failover(victim)
    st = settle(ngx, timeout=60)
    pid = idx(ngx, 'user_id', 'u-fail')
    assert pid
    # the sweeper and the retries converge
    h.wait_until(lambda: {resolve(ngx, b.aid) for b in pool} == {pid},
                 timeout=60, interval=0.5)
    h.wait_until(lambda: profile(ngx, pid).get('events') == '20',
                 timeout=30, interval=0.5)
    known = check_graph(ngx)
    assert list(known) == [pid], known
    cl.restart(victim)


def test_profile_location_follows_the_browser_to_its_person(redis_cluster,
                                                            nginx_factory):
    """cdp_profile on a cluster: a browser linked to a person in another
    shard; cdp_profile_view stops at the shard's edge and nginx asks the
    person's shard (a second call): $cdp_profile_id is the person's."""
    from test_cluster import ECHO, APP, view
    bport, eport = str(h.free_port()), str(h.free_port())
    ngx = nginx_factory(
        redis_cluster,
        http_extra=(h.IDENTIFY_BACKEND.replace('@BPORT@', bport)
                    + ECHO.replace('@EPORT@', eport)),
        locations=(LOCATIONS.replace('@BPORT@', bport) + '\n        '
                   + APP.replace('@EPORT@', eport).replace(
                       'location = /status { cdp_status; }', '')))
    for i in range(20):
        b = Browser(ngx)
        b.view()
        b.login(uid='u-view-%d' % i)
        settle(ngx)
        pid = idx(ngx, 'user_id', 'u-view-%d' % i)
        if ngx.tag_of(pid) != ngx.tag_of(b.aid):
            break
    else:
        pytest.fail('no browser in another shard than its person')
    assert resolve(ngx, b.aid) == pid
    assert view(ngx, b.aid)[1] == pid


SEGMENTS = """
    cdp_segment loyal 'count("Order Completed") >= 3';
    cdp_segment viewer 'events >= 1';
    cdp_segment recent 'seen_within(1h)';
"""


def test_segments_follow_the_person_across_slots(redis_cluster,
                                                 nginx_factory):
    """Browsers in different slots, each with one order, log in at once
    as one person: the person (in its shard's sets) is in every segment
    the sum of their facts puts it in, entered once; no browser is left
    in a segment set or on the segments' clock."""
    ngx = start(nginx_factory, redis_cluster, http_extra=SEGMENTS,
                workers=2)
    pool = [Browser(ngx) for _ in range(8)]
    for b in pool:
        assert b.view('e=Order%20Completed&p.revenue=5').status == 200
    # (8 browsers in 16 shards: in at most 2 once in 10^5 runs)
    assert len({cdp_shard.shard_of(b.aid, ngx.shards) for b in pool}) >= 3
    settle(ngx)
    rc = ngx.rc()

    def sets(name):
        return {k: rc.smembers(k) for k in ngx.shard_keys('segment', name)}

    assert {m for ms in sets('viewer').values() for m in ms} == \
        {b.aid for b in pool}
    assert not any(sets('loyal').values())

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        res = list(ex.map(lambda b: b.login(uid='u-seg'), pool))
    assert all(r.status == 200 for r in res)
    st = settle(ngx, timeout=30)
    assert sagas(st, 'abandoned') == 0, st

    pid = idx(ngx, 'user_id', 'u-seg')
    assert {resolve(ngx, b.aid) for b in pool} == {pid}
    assert profile(ngx, pid)['ev.count:Order Completed'] == '8'
    own = ngx.tag_of(pid)
    for name in ('loyal', 'viewer', 'recent'):
        by_key = sets(name)
        assert {k: v for k, v in by_key.items() if v} == {
            '%s:segment:%s:%s' % (ngx.prefix, own, name): {pid}}, by_key
    due = {k: rc.zrange(k, 0, -1) for k in ngx.shard_keys('segments:due')}
    assert {k: v for k, v in due.items() if v} == {
        '%s:segments:due:%s' % (ngx.prefix, own): [pid]}, due
    assert set(profile(ngx, pid)['segments'].split(',')) == \
        {'loyal', 'viewer', 'recent'}

    entered = collections.Counter(
        e['properties']['segment'] for e in ngx.events()
        if e.get('event') == 'Segment Entered'
        and e.get('userId') == 'u-seg')
    assert entered['loyal'] == 1, entered
