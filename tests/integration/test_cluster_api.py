"""The server API (cdp_api) on a real Redis Cluster: a request is one
batch per shard, and each message that needs identity (a userId, an
identify, an alias) comes back from cdp_ingest as a saga of single-slot
calls (ngx_cdp_xid.c); the request is answered 200 once its batches and
their sagas are done (and, on masters with replicas, a replica has their
writes), 503 when one failed.  Segment's node SDK and raw HTTP, as in
test_api.py; the tests of identity run on a standalone Redis too, so that
"the same as on a single Redis" is checked, not assumed."""

import collections
import threading
import time
import uuid

import pytest

import cdp_harness as h
import cdp_shard
import test_api
from test_api import (post, ok, with_key, batch, track, mid, send_sdk,
                      mapped_aid, count_mid, check_dedup_ttl)
from test_spool import nonzero, cdp_log_lines, all_dropped
from test_cluster_ingest import wait_calls

key, idx, resolve, profile = h.key, h.idx, h.resolve, h.profile
members, merges, check_graph = h.members, h.merges, h.check_graph


@pytest.fixture(params=['standalone', 'cluster'])
def store(request):
    """A single redis-server, then the module's Redis Cluster of 3
    masters (each nginx has a prefix of its own)."""
    if request.param == 'cluster':
        return request.getfixturevalue('redis_cluster')
    return request.getfixturevalue('redis_server')


def start_api(nginx_factory, redis, **kw):
    """test_api.py's nginx, once the API answers: on a cluster a request
    waits for every master to be ready (connected, libraries checked),
    which the harness's start does not (a probe's messageId is probe-*)."""
    n = test_api.start_api(nginx_factory, redis, **kw)

    def ready():
        r = post(n, 'track', with_key(track(aid='probe-' + uuid.uuid4().hex,
                                            message_id='probe-' + mid())))
        return r.status == 200
    assert h.wait_until(ready, 10, 0.1), cdp_log_lines(n)
    return n


def settle(ngx, timeout=20.0):
    """Every accepted event stored, a duplicate or dropped (for any
    reason: an API batch whose connection was lost is "unconfirmed"),
    the queues empty and every saga done."""
    def f():
        st = ngx.status()
        return st if (st and st.queue == 0
                      and st.c('cdp_identity_sagas_running') == 0
                      and st.accepted <= st.stored + all_dropped(st)
                      + st.c('cdp_api_duplicates_total')) else None
    st = h.wait_until(f, timeout, 0.05)
    assert st, nonzero(ngx.status())
    return st


def mids(ngx):
    """{messageId: how many times it is in the shards' streams}, but
    start_api()'s probes."""
    return collections.Counter(
        e.get('messageId') for e in ngx.events()
        if not e.get('messageId', '').startswith('probe-'))


def hex_aids(n, shards, avoid=()):
    """n anonymous ids of 32 hex digits (kept as sent), each in a shard of
    its own."""
    out, seen = [], set(avoid)
    while len(out) < n:
        a = uuid.uuid4().hex
        s = cdp_shard.shard_of(a, shards)
        if s not in seen:
            seen.add(s)
            out.append(a)
    return out


def sagas(st, result):
    return st.c('cdp_identity_sagas_total{result="%s"}' % result)


# --------------------------------------------------------------------------
# (a) Segment's SDK: tracks with a userId and an anonymousId

def test_sdk_tracks_of_ten_users_stored_once(store, nginx_factory):
    """50 tracks (userId and anonymousId) of 10 users whose anonymousIds
    are in 10 shards, through Segment's node SDK without retries: every
    request 200, every message stored once, each user's profile counting
    its 5 messages, found by its user id and linked from its anonymousId."""
    n = start_api(nginx_factory, store)
    aids = hex_aids(10, n.shards)
    msgs = [{'type': 'track', 'userId': 'cu-%d' % (i % 10),
             'anonymousId': aids[i % 10], 'event': 'Tick',
             'properties': {'i': i}} for i in range(50)]
    rc, out = send_sdk(n, msgs, extra=['--flush-at', '10',
                                       '--max-retries', '0'])
    assert rc == 0 and out['errors'] == [], (out['errors'],
                                            cdp_log_lines(n))
    assert out['requests'] == 5, out['requests']
    sent = [m['messageId'] for r in out['sent'] for m in r['body']['batch']]
    assert len(set(sent)) == 50

    st = settle(n)
    got = mids(n)
    assert got == collections.Counter(sent), (
        set(sent) ^ set(got), [m for m, c in got.items() if c > 1])
    for u in range(10):
        pid = idx(n, 'user_id', 'cu-%d' % u)
        assert pid and pid.startswith('p'), (u, pid)
        p = profile(n, pid)
        assert p['events'] == '5' and p['user_id'] == 'cu-%d' % u, (u, p)
        assert resolve(n, aids[u]) == pid, (u, resolve(n, aids[u]), pid)
        assert 'anonymous_id:' + aids[u] in members(n, pid), members(n, pid)
    assert len({idx(n, 'user_id', 'cu-%d' % u) for u in range(10)}) == 10
    assert st.c('cdp_api_duplicates_total') == 0, nonzero(st)
    assert all_dropped(st) == 0, nonzero(st)
    assert sagas(st, 'abandoned') == 0, nonzero(st)
    check_graph(n)
    h.check_events(n)


# --------------------------------------------------------------------------
# (b) identify, track, alias: the rules of identity of test_api.py

def test_identify_track_alias(store, nginx_factory):
    """An anonymous history joins an identify with traits; tracks count on
    the person; an alias joins an earlier user's profile (two user ids
    allowed a person here) and an anonymousId's history."""
    n = start_api(nginx_factory, store,
                  http_extra='cdp_identity_limits user_id=2;')

    # an anonymous history, then identify with traits: it joins
    aid = mapped_aid(n, 'anon-hist')
    for i in range(2):
        ok(post(n, 'track', with_key(track(aid='anon-hist',
                                           message_id=mid()))))
    assert profile(n, aid)['events'] == '2', profile(n, aid)
    ok(post(n, 'identify', with_key({
        'userId': 'id-B', 'anonymousId': 'anon-hist',
        'traits': {'plan': 'pro', 'email': ' B.User@Example.COM '}})))
    # 200: the saga is done, no settling needed
    pb = idx(n, 'user_id', 'id-B')
    assert pb and pb.startswith('p'), pb
    assert idx(n, 'email', 'b.user@example.com') == pb
    assert resolve(n, aid) == pb
    p = profile(n, pb)
    assert (p['user_id'], p['trait.plan'], p['trait.email']) == (
        'id-B', 'pro', 'b.user@example.com'), p
    assert int(p['events']) >= 2, p
    assert 'anonymous_id:' + aid in members(n, pb)
    assert any(m['from'] == aid and m['to'] == pb and m['reason'] ==
               'identify' for m in merges(n)), merges(n)
    ev = [e for e in n.events() if e['type'] == 'identify']
    assert len(ev) == 1 and ev[0]['traits'] == {'plan': 'pro'}, ev

    # tracks: by userId alone, and of the device, count on the person
    before = int(profile(n, pb)['events'])
    ok(post(n, 'track', with_key(track('id-B', message_id=mid()))))
    ok(post(n, 'track', with_key(track(aid='anon-hist', message_id=mid()))))
    ok(post(n, 'page', with_key({'userId': 'id-B', 'name': 'Home'})))
    p = profile(n, pb)
    assert int(p['events']) == before + 3, (before, p)
    assert int(p.get('page_views', 0)) >= 1, p

    # alias: previousId an earlier user id, with a profile of its own
    ok(post(n, 'identify', with_key({'userId': 'id-old',
                                     'anonymousId': 'anon-old'})))
    ok(post(n, 'track', with_key(track('id-old', message_id=mid()))))
    pold = idx(n, 'user_id', 'id-old')
    assert pold and pold != pb, (pold, pb)
    before = int(profile(n, pb)['events'])
    old_events = int(profile(n, pold)['events'])
    ok(post(n, 'alias', with_key({'userId': 'id-B',
                                  'previousId': 'id-old'})))
    assert idx(n, 'user_id', 'id-old') == pb, idx(n, 'user_id', 'id-old')
    assert resolve(n, pold) == pb
    assert resolve(n, mapped_aid(n, 'anon-old')) == pb
    assert int(profile(n, pb)['events']) >= before + old_events, (
        before, old_events, profile(n, pb))
    assert any(m['reason'] == 'alias' and m['from'] == pold
               and m['to'] == pb for m in merges(n)), merges(n)

    # alias: previousId an anonymousId with a history
    prev = mapped_aid(n, 'anon-alias')
    ok(post(n, 'track', with_key(track(aid='anon-alias', message_id=mid()))))
    assert profile(n, prev)['events'] == '1'
    ok(post(n, 'alias', with_key({'userId': 'id-E',
                                  'previousId': 'anon-alias'})))
    pe = idx(n, 'user_id', 'id-E')
    assert pe and resolve(n, prev) == pe, (pe, resolve(n, prev))
    assert int(profile(n, pe)['events']) >= 1
    assert any(m['reason'] == 'alias' and m['from'] == prev and m['to'] == pe
               for m in merges(n)), merges(n)

    st = settle(n)
    assert all_dropped(st) == 0 and sagas(st, 'abandoned') == 0, \
        nonzero(st)
    assert st.c('cdp_api_duplicates_total') == 0, nonzero(st)
    check_graph(n)
    h.check_events(n)


# --------------------------------------------------------------------------
# (c) a messageId sent again

def test_same_message_id_is_stored_once(store, nginx_factory):
    """A message sent again after its 200 is a duplicate: with a userId
    (a saga), with an anonymousId only (stored in its batch), through
    track and batch; twice in one request, once."""
    n = start_api(nginx_factory, store)
    st0 = n.status()
    m = with_key(track('dd-user', aid='dd-anon', message_id=mid()))
    a = with_key(track(aid='dd-anon-2', message_id=mid()))
    for x in (m, a):
        ok(post(n, 'track', x))
        ok(post(n, 'track', x))
        ok(post(n, 'batch', batch([dict(x, type='track')])))
    st = settle(n)
    assert count_mid(n, m['messageId']) == 1, n.events()
    assert count_mid(n, a['messageId']) == 1, n.events()
    d = st.delta(st0)
    assert d.c('cdp_api_duplicates_total') == 4, nonzero(d)
    check_dedup_ttl(n, m['messageId'], 3600)
    pid = idx(n, 'user_id', 'dd-user')
    assert pid and profile(n, pid)['events'] == '1', profile(n, pid)
    assert profile(n, mapped_aid(n, 'dd-anon-2'))['events'] == '1'

    # twice in one request
    m2 = {'type': 'track', 'userId': 'dd-user', 'anonymousId': 'dd-anon',
          'event': 'Twice', 'messageId': mid()}
    other = {'type': 'track', 'userId': 'dd-user', 'anonymousId': 'dd-anon',
             'event': 'Other', 'messageId': mid()}
    st0 = n.status()
    ok(post(n, 'batch', batch([m2, other, m2])))
    st = settle(n)
    assert count_mid(n, m2['messageId']) == 1, n.events()
    assert count_mid(n, other['messageId']) == 1, n.events()
    assert st.delta(st0).c('cdp_api_duplicates_total') == 1, nonzero(st)
    assert profile(n, pid)['events'] == '3', profile(n, pid)
    assert all_dropped(st) == 0 and sagas(st, 'abandoned') == 0, \
        nonzero(st)


# --------------------------------------------------------------------------
# (d) a master killed under a steady load

class ApiLoad:
    """Threads posting batches of tracks in a loop (userIds: sagas;
    anonymousIds only: stored in their batch), each on its own connection,
    recording the answer of every request: its status and messageIds."""

    def __init__(self, ngx, users=8, per=4, threads=3):
        self.ngx = ngx
        self.users = users
        self.per = per
        self.threads = threads
        self.lock = threading.Lock()
        self.answers = []           # (status, [messageIds], t)
        self.errors = []            # (exception, [messageIds])
        self.stop_ev = threading.Event()
        self.workers = []

    def batch(self, t, k):
        msgs = []
        for j in range(self.per):
            u = (t * 31 + k * self.per + j) % self.users
            m = {'type': 'track', 'event': 'Load',
                 'messageId': 'ld-%d-%d-%d' % (t, k, j),
                 'properties': {'t': t, 'k': k, 'j': j}}
            if j % 4 == 3:
                m['anonymousId'] = 'ld-anon-%d' % u
            else:
                m['userId'] = 'ld-user-%d' % u
                m['anonymousId'] = 'ld-dev-%d' % u
            msgs.append(m)
        return msgs

    def run(self, t):
        k = 0
        c = h.Client(self.ngx.port, timeout=30.0)
        try:
            while not self.stop_ev.is_set():
                msgs = self.batch(t, k)
                k += 1
                ids = [m['messageId'] for m in msgs]
                try:
                    r = post(self.ngx, 'batch', batch(msgs), client=c)
                except OSError as e:
                    with self.lock:
                        self.errors.append((e, ids))
                    c.close()
                    c = h.Client(self.ngx.port, timeout=30.0)
                    continue
                with self.lock:
                    self.answers.append((r.status, ids, time.monotonic()))
                if r.status != 200:
                    time.sleep(0.05)
        finally:
            c.close()

    def start(self):
        for t in range(self.threads):
            w = threading.Thread(target=self.run, args=(t,), daemon=True)
            w.start()
            self.workers.append(w)

    def stop(self):
        self.stop_ev.set()
        for w in self.workers:
            w.join(60)
        assert not any(w.is_alive() for w in self.workers)

    def ok_since(self, t0):
        with self.lock:
            return sum(1 for s, _i, t in self.answers if s == 200 and t > t0)


def test_master_killed_under_api_load(redis_cluster_replicas, nginx_factory):
    """Three clients post batches of tracks (most with a userId: sagas)
    while the master of some of their shards is killed (-9) and its
    replica promoted.  Every request is answered 200 or 503 (none hangs
    past cdp_api_timeout), the load gets 200s again after the failover,
    and every messageId answered 200 is in the shards' streams exactly
    once (what got 503 at most once: nobody sent it again)."""
    cl = redis_cluster_replicas
    n = start_api(nginx_factory, cl, timeout='10s')
    load = ApiLoad(n)
    load.start()
    try:
        assert h.wait_until(lambda: load.ok_since(0) >= 30, 20), (
            'the load does not flow: %r' % collections.Counter(
                s for s, _i, _t in load.answers), cdp_log_lines(n))
        # batches and saga steps wait for replicas on every master (Redis
        # lists a replica once it has data, the workers read the map
        # every 5 s)
        assert h.wait_until(lambda: all(wait_calls(cl, p) > 0
                                        for p in cl.masters()), 20, 0.2), (
            [(p, wait_calls(cl, p)) for p in cl.masters()])
        victim = cl.master_of_slot(cdp_shard.key_slot(
            n.stream_of(mapped_aid(n, 'ld-dev-0'))))
        cl.kill(victim)
        t_kill = time.monotonic()
        cl.wait_failover(victim, timeout=20)
        assert h.wait_until(lambda: load.ok_since(t_kill) >= 60, 30), (
            collections.Counter(s for s, _i, t in load.answers
                                if t > t_kill), cdp_log_lines(n))
    finally:
        load.stop()
    assert not load.errors, load.errors[:3]
    statuses = collections.Counter(s for s, _i, _t in load.answers)
    assert set(statuses) <= {200, 503}, statuses
    st = settle(n, timeout=60)
    assert sagas(st, 'done') > 0, nonzero(st)

    answered = [i for s, ids, _t in load.answers if s == 200 for i in ids]
    failed = [i for s, ids, _t in load.answers if s != 200 for i in ids]
    assert len(answered) == len(set(answered))

    def stored_once():
        got = mids(n)
        return all(got[i] == 1 for i in answered) and got
    got = h.wait_until(stored_once, 30, 0.5) or mids(n)
    missing = [i for i in answered if got[i] == 0]
    twice = [i for i in answered + failed if got[i] > 1]
    assert not missing and not twice, (
        '%d of %d answered 200 missing, %d stored twice: %r %r'
        % (len(missing), len(answered), len(twice), missing[:5], twice[:5]),
        statuses, nonzero(n.status()), cdp_log_lines(n))
    assert set(got) <= set(answered) | set(failed), (
        set(got) - set(answered) - set(failed))
