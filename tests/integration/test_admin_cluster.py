"""The privacy library on Redis Cluster: cdp_admin_x (store/admin.lua), the
erase, export and read of the admin API as sagas of one-slot calls, driven
here step by step as nginx drives them, against a real Redis Cluster of 3
masters.  The data is made by the store itself (cdp_ingest and the identify
saga, test_xid.py's Store), with a person whose browsers, absorbed profile,
identifiers and events are in different shards, destinations and consent
entries; then copied key for key (DUMP/RESTORE: the same stream ids) to a
standalone Redis, where the standalone functions (cdp_erase, cdp_export,
cdp_read) run on the very same data.  The proof that the saga is the same
operation: it leaves the same keys, answers the same JSON and writes the
same audit entry; also when its driver stops after any step and the
sweeper finishes, or every step is sent twice.

The same for unsuppress and replay (cdp_unsuppress and cdp_replay: a call
a shard), also when their driver stops half way (no journal: the retry
completes them).

Then through nginx (ngx_cdp_admin.c, ngx_cdp_xid.c): the admin API on a
cluster erases a person from every shard and unsuppresses them, replays
a destination's dead letters of every shard, and an erasure survives a
master killed mid-way, and a worker killed mid-way (worker 0's sweep
finishes it)."""

import hashlib
import itertools
import json
import os
import re
import signal
import threading
import time

import pytest
import redis

import cdp_harness as h
import cdp_shard as cs
import test_admin as ta
import test_store_admin as tsa
from test_xid import H, Store, aids_in_shards

PFX = 'cdp'                 # the libraries' prefix (cdp.lua's "cdp:")
N = 16
AUDIT = PFX + ':audit'
NOW = '1700000005000'
CDP_LUA = os.path.join(h.MAIN, 'store', 'cdp.lua')
ADMIN_LUA = os.path.join(h.MAIN, 'store', 'admin.lua')


def lib(path):
    with open(path) as f:
        return f.read().replace('@REV@', 'test')


def aidh(aid):
    return hashlib.sha1(('anonymous_id:' + aid).encode()).hexdigest()


def tag(x):
    return '{%s}' % cs.shard_tag(cs.shard_of(x, N), N)


def kk(kind, x):
    return '%s:%s:%s:%s' % (PFX, kind, tag(x), x)


def shard_key(kind, i):
    return '%s:%s:{%s}' % (PFX, kind, cs.shard_tag(i, N))


def seg_key(name, x):
    """Segment name's members of x's shard."""
    return '%s:segment:%s:%s' % (PFX, tag(x), name)


def due_key(x):
    """The segments' clock of x's shard."""
    return '%s:segments:due:%s' % (PFX, tag(x))


# --------------------------------------------------------------------------
# the saga's driver, as nginx (ngx_cdp_admin.c) drives it

class Admin:
    def __init__(self, r):
        self.r = r
        self.calls = 0

    def call(self, key, *args):
        self.calls += 1
        return self.r.execute_command('FCALL', 'cdp_admin_x', 1, key, PFX,
                                      *args)

    def begin(self, op, receipt, ids, recent='0', role='privacy', now=NOW):
        return self.call(AUDIT, 'begin', op, receipt, role, now, recent,
                         *ids)

    def run(self, rep, limit=400, twice=False):
        for _ in range(limit):
            if not rep[0]:
                assert rep[1] == '' and rep[2] == 0
                return rep[3]
            assert rep[3] is None and rep[2] == 0
            if twice:
                self.call(rep[0], rep[1])
            rep = self.call(rep[0], rep[1])
        raise AssertionError('a saga of more than %d calls' % limit)

    def do(self, op, receipt, ids, recent='0', twice=False, role='privacy'):
        return self.run(self.begin(op, receipt, ids, recent, role),
                        twice=twice)

    def sweep(self):
        """The sweeper (sweep:0), until nothing is left; the erasures it
        finished."""
        n = 0
        for _ in range(20):
            rep = self.call(AUDIT, 'sweep:0')
            if not rep[0]:
                return n
            self.run(rep)
            n += 1
        raise AssertionError('the sweeper does not end')


# --------------------------------------------------------------------------
# the data: built once on the cluster, then restored for every test

def dump_all(cluster):
    out = []
    for p in cluster.masters():
        c = cluster.node_client(p, decode_responses=False)
        for key in c.scan_iter(count=1000):
            out.append((key, max(c.pttl(key), 0), c.dump(key)))
        c.close()
    return out


def restore(client, saved):
    for key, ttl, blob in saved:
        client.restore(key, ttl, blob, replace=True)


def event_ids(r, x):
    """(stream, id, event) of node x's timeline and first_event."""
    sk = '%s:events:%s' % (PFX, tag(x))
    ids = r.lrange(kk('timeline', x), 0, -1)
    first = r.hget(kk('profile', x), 'first_event')
    if first:
        ids.append(first)
    out = []
    for i in ids:
        e = r.xrange(sk, i, i)
        if e:
            out.append((sk, i, e[0][1]['event']))
    return out


class World:
    """Zoe: browsers a, b, c; a's login (user id H1) made pA, b's (e-mail
    H2) pB; c's login with both (and phone H3) merged pB into pA.  Wes: a
    person of his own (browser w, user id H9, e-mail H8).  Dan: a browser
    never identified.  A stranger: a browser of which only a consent
    choice is on record."""


# every event its own payload (a messageId), as real events have: the
# same stream id is often in two shards' streams, and an out-stream entry
# naming no profile is told apart by its event
_msg = itertools.count(1)


def hits(store, aid, n):
    rep = store.ingest(aid, [('page', '', json.dumps(
        {'type': 'page', 'messageId': 'm-%d' % next(_msg)}))
        for _ in range(n)])
    sagas, fwd = store.follow_ups(rep)
    assert not sagas
    store.forward(fwd)


def identify(store, aid, uid='', uidh='', eh='', ph='', traits='{}'):
    ev = json.dumps({'type': 'identify', 'messageId': 'm-%d' % next(_msg)})
    rep = store.ingest(aid, [('identify', '', '\t'.join(
        [uid, uidh, eh, ph, traits, ev]))])
    sagas, _ = store.follow_ups(rep)
    assert len(sagas) == 1, rep
    store.run(sagas[0])


def build(store):
    r = store.r
    wd = World()
    a, b, c, d, w, stranger = aids_in_shards(6, N, start=7)
    hits(store, a, 2)
    hits(store, b, 3)
    identify(store, a, 'u-1', H('1'), traits='{"plan":"pro"}')
    identify(store, b, '', '', H('2'), traits='{"n":1}')
    pa, pb = store.root(a), store.root(b)
    hits(store, c, 1)
    identify(store, c, 'u-1', H('1'), H('2'), H('3'))
    assert store.root(b) == store.root(c) == pa != pb
    hits(store, a, 1)
    hits(store, c, 2)
    hits(store, d, 2)
    hits(store, w, 1)
    identify(store, w, 'u-9', H('9'), H('8'))
    hits(store, w, 2)
    pw = store.root(w)
    assert not store.left()

    zoe_nodes = [pa, pb, a, b, c]
    # her keys are in many shards: the survivor, the absorbed profile,
    # each browser, each identifier
    shards = {cs.shard_of(x, N) for x in zoe_nodes + [H('1'), H('2'),
                                                     H('3')]}
    assert len(shards) >= 5, shards
    zoe_events = [e for x in zoe_nodes for e in event_ids(r, x)]
    assert len({e[0] for e in zoe_events}) >= 3
    assert len(zoe_events) >= 10
    others = [e for x in (pw, w, d) for e in event_ids(r, x)]

    # destinations: their out-streams hold events under their own ids
    # (with the profile counted on), a dead letter naming no profile, a
    # replayed entry (a new id), pending entries of nginx's group
    r.hset(PFX + ':destinations', mapping={'crm': '1', 'mail': '2'})
    node_of = {}
    for x in zoe_nodes + [pw, w, d]:
        for e in event_ids(r, x):
            node_of[e[1], e[0]] = x
    per_out = {}
    for sk, i, ev in sorted(set(zoe_events + others), key=lambda e: (
            tuple(map(int, e[1].split('-'))))):
        out = sk.replace(':events:', ':out:') + ':crm'
        per_out.setdefault(out, []).append((i, ev, node_of[i, sk]))
    for out, entries in per_out.items():
        for i, ev, x in entries:
            r.xadd(out, {'event': ev, 'p': x}, id=i)
    home = '%s:out:%s:crm' % (PFX, tag(pa))
    r.xadd(home, {'event': '{"replayed":1}', 'p': pa})
    r.xgroup_create(home, 'cdp', id='0', mkstream=True)
    r.xreadgroup('cdp', 'n1:0', {home: '>'}, count=1000)
    sk, i, ev = next(e for e in zoe_events if e[0].endswith(tag(pa)))
    r.xadd('%s:dead:%s:crm' % (PFX, tag(pa)),
           {'id': i, 'status': '500', 'response': 'no', 'event': ev})
    r.xadd('%s:dead:%s:mail' % (PFX, tag(w)),
           {'id': '1-1', 'status': '400', 'event': '{}', 'p': w})
    # what each destination was sent, in each node's shard
    r.sadd(kk('sent', a), 'crm\ta:' + a)
    r.sadd(kk('sent', pa), 'crm\tu:u-1', 'mail\tu:u-1', 'crm\ta:' + c)
    r.sadd(kk('sent', b), 'mail\ta:' + b)
    r.sadd(kk('sent', pw), 'crm\tu:u-9')
    # consent choices, a shard each in turn (as nginx writes them)
    turn = itertools.count(3)
    for x in (a, b, c, d, w, stranger, a):
        r.xadd(shard_key('consent_log', next(turn) % N), {
            'entry': json.dumps({'aid': aidh(x), 'granted': ['analytics'],
                                 'source': 'form', 'timestamp': 1})})

    # segments: Zoe in loyal and vip, Wes in loyal, each in the sets of
    # the live profile's shard; the segments' clock holds every node of
    # theirs and Dan's, each in its own shard's
    r.hset(kk('profile', pa), 'segments', 'loyal,vip')
    r.hset(kk('profile', pw), 'segments', 'loyal')
    r.sadd(seg_key('loyal', pa), pa)
    r.sadd(seg_key('vip', pa), pa)
    r.sadd(seg_key('loyal', pw), pw)
    for x in zoe_nodes + [pw, w, d]:
        r.zadd(due_key(x), {x: 1700000009000})

    wd.a, wd.b, wd.c, wd.d, wd.w, wd.stranger = a, b, c, d, w, stranger
    wd.pa, wd.pb, wd.pw = pa, pb, pw
    wd.zoe_nodes = zoe_nodes
    return wd


@pytest.fixture(scope='module')
def world(redis_cluster):
    libs = [lib(CDP_LUA), lib(ADMIN_LUA)]
    for p in redis_cluster.masters():
        c = redis_cluster.node_client(p)
        c.flushall()
        for text in libs:
            c.execute_command('FUNCTION', 'LOAD', 'REPLACE', text)
    wd = build(Store(redis_cluster))
    wd.saved = dump_all(redis_cluster)
    return wd


@pytest.fixture
def cl(redis_cluster, world):
    """The cluster with the world restored: (admin driver, cluster)."""
    redis_cluster.flush()
    c = redis_cluster.client(decode_responses=False)
    restore(c, world.saved)
    c.close()
    r = redis_cluster.client()
    yield Admin(r)
    r.close()


@pytest.fixture
def solo(redis_factory, world):
    """A standalone Redis with the same data and the privacy library."""
    s = redis_factory()
    raw = redis.Redis(host='127.0.0.1', port=s.port)
    restore(raw, world.saved)
    raw.close()
    c = s.client()
    c.function_load(lib(ADMIN_LUA), replace=True)
    yield c
    c.close()


# --------------------------------------------------------------------------
# comparing

def is_saga_key(key):
    return ':adone:' in key or ':erasing' in key


def snapshot(clients):
    """Every key (but the audit and the saga's own) with its content;
    streams as (entries, groups with their pending counts)."""
    out = {}
    for c in clients:
        for key in c.scan_iter(count=1000):
            if key == AUDIT or is_saga_key(key):
                continue
            t = c.type(key)
            if t == 'string':
                v = c.get(key)
            elif t == 'hash':
                v = c.hgetall(key)
            elif t == 'set':
                v = sorted(c.smembers(key))
            elif t == 'list':
                v = c.lrange(key, 0, -1)
            elif t == 'zset':
                v = c.zrange(key, 0, -1, withscores=True)
            elif t == 'stream':
                v = (c.xrange(key), sorted(
                    (g['name'], g['pending'])
                    for g in c.xinfo_groups(key)))
            else:
                v = ('?', t)
            out[key] = v
    return out


def new_ids(snap, before):
    """Stream entries added since before (deletion notices: XADD *) named
    'new', in order, so that two stores' snapshots compare."""
    out = {}
    for key, v in snap.items():
        if isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], list):
            old = {i for i, _ in before.get(key, ([], []))[0]}
            v = ([(i if i in old else 'new', f) for i, f in v[0]], v[1])
        out[key] = v
    return out


def cluster_snapshot(cluster):
    clients = [cluster.node_client(p) for p in cluster.masters()]
    try:
        return snapshot(clients)
    finally:
        for c in clients:
            c.close()


def audit_of(clients, receipt):
    out = []
    for c in clients:
        if c.exists(AUDIT):
            out += [f for _, f in c.xrange(AUDIT) if f['receipt'] == receipt]
    for f in out:
        f.pop('took_us')
    return out


def saga_keys(cluster):
    out = []
    for p in cluster.masters():
        c = cluster.node_client(p)
        out += [k for k in c.keys(PFX + ':*') if is_saga_key(k)]
        c.close()
    return out


JOURNAL = '%s:erasing:{%s}' % (PFX, AUDIT)


def journal(cluster):
    """The erasures' journal (one node's: the audit's slot)."""
    port = cluster.master_of_slot(cs.key_slot(JOURNAL))
    c = cluster.node_client(port)
    try:
        return c.hgetall(JOURNAL)
    finally:
        c.close()


def no_took(doc):
    d = json.loads(doc)
    d.pop('took_us', None)
    return d


def ids_of(wd, scenario):
    return {
        'zoe': ['anonymous_id:' + wd.c],
        'zoe_by_email': ['email:' + H('2')],
        'mixed': ['profile_id:' + wd.pb, 'user_id:' + H('9'),
                  'anonymous_id:' + wd.stranger, 'email:' + H('7'),
                  'profile_id:p999', 'phone:' + H('3')],
        'dan': ['anonymous_id:' + wd.d],
        'nobody': ['profile_id:p999'],
    }[scenario]


# --------------------------------------------------------------------------
# erase

def reference_erase(solo, ids, receipt='r-1'):
    before = snapshot([solo])
    doc = solo.fcall('cdp_erase', 0, PFX, receipt, 'privacy', NOW, *ids)
    return before, doc


@pytest.mark.parametrize('scenario', ['zoe', 'zoe_by_email', 'mixed', 'dan',
                                      'nobody'])
def test_erase_is_cdp_erase(cl, solo, world, redis_cluster, scenario):
    """The saga leaves the keys cdp_erase leaves on the same data (every
    key and stream entry, consumer groups' pending counts), answers the
    same JSON and writes the same audit entry."""
    ids = ids_of(world, scenario)
    before, want = reference_erase(solo, ids)
    assert cluster_snapshot(redis_cluster) == before
    got = cl.do('erase', 'r-1', ids)
    assert no_took(got) == no_took(want)
    assert json.loads(got)['took_us'] >= 0
    assert new_ids(cluster_snapshot(redis_cluster), before) == \
        new_ids(snapshot([solo]), before)
    clients = [redis_cluster.client()]
    assert audit_of(clients, 'r-1') == audit_of([solo], 'r-1')
    assert len(audit_of(clients, 'r-1')) == 1
    assert journal(redis_cluster) == {}
    # what the saga leaves besides: its records of steps done, for a day
    for key in saga_keys(redis_cluster):
        assert ':adone:' in key
        assert 0 < redis_cluster.client().ttl(key) <= 86400
    if scenario == 'zoe':
        w = json.loads(want)
        assert (w['profiles'], w['identifiers']) == (1, 7)
        assert w['events'] >= 10 and w['merges'] >= 2
        assert w['consent_log'] == 4 and w['suppressed'] == 6
        assert w['destination_entries'] > 5
        assert w['deletion_notices'] == 2


def test_erase_sent_twice_and_again(cl, solo, world, redis_cluster):
    """Every step sent twice (a lost reply): the same result; the same
    erasure again: finds nobody, as cdp_erase's second call does."""
    ids = ids_of(world, 'mixed')
    before, want = reference_erase(solo, ids)
    got = cl.do('erase', 'r-1', ids, twice=True)
    assert no_took(got) == no_took(want)
    assert new_ids(cluster_snapshot(redis_cluster), before) == \
        new_ids(snapshot([solo]), before)
    assert len(audit_of([redis_cluster.client()], 'r-1')) == 1
    _, want2 = reference_erase(solo, ids, receipt='r-2')
    got2 = cl.do('erase', 'r-2', ids)
    assert no_took(got2) == no_took(want2)
    assert json.loads(got2)['profiles'] == 0
    assert new_ids(cluster_snapshot(redis_cluster), before) == \
        new_ids(snapshot([solo]), before)


def test_suppression_is_everywhere_before_anything_is_deleted(
        cl, solo, world, redis_cluster):
    """After every call: once anything of the person is gone, every
    shard's copy of the suppression set holds all of them; when the first
    deletion step is next, every copy does and nothing is deleted yet."""
    ids = ids_of(world, 'zoe')
    before, want = reference_erase(solo, ids)
    members = set(solo.smembers(shard_key('suppressed', 0)))
    assert len(members) == 6
    copies = [shard_key('suppressed', i) for i in range(N)]
    r = redis_cluster.client()
    rep = cl.begin('erase', 'r-1', ids)
    seen_del = False
    while rep[0]:
        snap = cluster_snapshot(redis_cluster)
        rest = {k: v for k, v in snap.items() if k not in copies}
        deleted = rest != before
        full = all(set(r.smembers(k)) == members for k in copies)
        assert full or not deleted
        st = json.loads(rep[1])
        if st['st'] == 'del' and st['s'] == 0:
            seen_del = True
            assert full and not deleted
            assert journal(redis_cluster)
        rep = cl.call(rep[0], rep[1])
    assert seen_del
    assert no_took(rep[3]) == no_took(want)


def test_a_driver_stopped_after_any_step_is_finished_by_the_sweeper(
        cl, solo, world, redis_cluster):
    """nginx stops after k calls of an erasure, for every k: the sweeper
    (sweep:0 on the audit key, run to the end) finishes every erasure
    whose journal was written, with the same final state and exactly one
    audit entry for the receipt (its counts the full ones: each shard's
    step recorded its own); one stopped before its journal wrote nothing,
    and is made again."""
    ids = ids_of(world, 'mixed')
    before, want = reference_erase(solo, ids)
    final = new_ids(snapshot([solo]), before)
    want_audit = audit_of([solo], 'r-1')
    cl.calls = 0
    cl.do('erase', 'r-1', ids)
    total = cl.calls
    assert total > 2 * N + 3
    r = redis_cluster.client()
    resumed = 0
    for k in range(1, total):
        redis_cluster.flush()
        c = redis_cluster.client(decode_responses=False)
        restore(c, world.saved)
        c.close()
        rep = cl.begin('erase', 'r-1', ids)
        for _ in range(k - 1):
            rep = cl.call(rep[0], rep[1])
        assert rep[0], 'the saga ended before call %d' % k
        if journal(redis_cluster):
            assert cl.sweep() == 1
            resumed += 1
        else:
            # nothing written: the privacy officer's retry
            assert cluster_snapshot(redis_cluster) == before
            assert r.exists(AUDIT) == 0
            assert cl.sweep() == 0
            cl.do('erase', 'r-1', ids)
        assert new_ids(cluster_snapshot(redis_cluster), before) == final, \
            'stopped after call %d of %d' % (k, total)
        assert audit_of([r], 'r-1') == want_audit, k
        assert journal(redis_cluster) == {}
        assert cl.sweep() == 0
    assert resumed >= 2 * N


def test_a_resumed_erasure_meets_its_late_driver(cl, solo, world,
                                                 redis_cluster):
    """The sweeper resumes an erasure whose driver is only slow: both
    finish it, the audit entry is written once."""
    ids = ids_of(world, 'zoe')
    before, want = reference_erase(solo, ids)
    rep = cl.begin('erase', 'r-1', ids)
    while json.loads(rep[1])['st'] != 'del' or json.loads(rep[1])['s'] < 5:
        rep = cl.call(rep[0], rep[1])
    assert cl.sweep() == 1
    got = cl.run(rep)
    assert no_took(got) == no_took(want)
    assert new_ids(cluster_snapshot(redis_cluster), before) == \
        new_ids(snapshot([solo]), before)
    assert audit_of([redis_cluster.client()], 'r-1') == audit_of([solo],
                                                                 'r-1')


def seg_members(c, name):
    """Every shard's members of segment name."""
    out = set()
    for i in range(N):
        out |= c.smembers('%s:segment:{%s}:%s' % (PFX, cs.shard_tag(i, N),
                                                  name))
    return out


def test_erase_leaves_the_segments_in_each_shard(cl, solo, world,
                                                  redis_cluster):
    """Zoe leaves loyal and vip (the sets of her live profile's shard), and
    each node of hers the segments' clock of its own shard, in the
    deletion step of that shard; Wes and Dan stay: as cdp_erase."""
    r = redis_cluster.client()
    zoe = world.zoe_nodes
    assert len({tag(x) for x in zoe}) >= 4
    assert seg_members(r, 'loyal') == {world.pa, world.pw}
    assert seg_members(r, 'vip') == {world.pa}
    ids = ids_of(world, 'zoe')
    reference_erase(solo, ids)
    cl.do('erase', 'r-1', ids)
    for c in (r, solo):
        assert seg_members(c, 'loyal') == {world.pw}
        assert seg_members(c, 'vip') == set()
        for x in zoe:
            assert c.zscore(due_key(x), x) is None, x
        for x in (world.pw, world.w, world.d):
            assert c.zscore(due_key(x), x) == 1700000009000, x


def test_a_segment_key_of_another_type_stops_an_erasure_unwritten(
        cl, solo, world, redis_cluster):
    """The chk step of a shard checks its segment keys as cdp_erase checks
    them: the same error, before the journal."""
    r = redis_cluster.client()
    for c in (r, solo):
        c.delete(seg_key('vip', world.pa))
        c.set(seg_key('vip', world.pa), 'oops')
    before = cluster_snapshot(redis_cluster)
    ids = ids_of(world, 'zoe')
    want = error_of(lambda: solo.fcall('cdp_erase', 0, PFX, 'r', 'p', NOW,
                                       *ids))
    assert 'is a string, not a set' in want
    assert error_of(lambda: cl.do('erase', 'r', ids)) == want
    assert cluster_snapshot(redis_cluster) == before
    assert r.exists(AUDIT) == 0 and journal(redis_cluster) == {}


@pytest.mark.parametrize('gained', ['NEW', 'NEW2,NEW'])
@pytest.mark.parametrize('when', ['resolved', 'del'])
def test_an_erasure_leaves_the_segments_gained_on_its_way(
        cl, solo, world, redis_cluster, when, gained):
    """Zoe's live profile gains a segment after the saga read its field
    "segments" (at the resolution): an event stored before the
    suppression, the segments' clock.  The deletion step of its shard
    reads the field again: she leaves the new segment's set too, and is in
    no segment and no segments' clock at the end.  A gained name whose key
    is of another type (NEW2: a string) is left as it is, and the erasure
    still ends.  Otherwise the same as cdp_erase on the data with the set
    gained: keys, JSON and audit entry."""
    r = redis_cluster.client()
    pa = world.pa
    home = cs.shard_of(pa, N)
    other = seg_key('NEW2', pa)
    ids = ids_of(world, 'zoe')
    # the reference: cdp_erase, the segment gained before it (its string
    # key would stop it: cdp_erase checks every name it reads)
    solo.hset(kk('profile', pa), 'segments', 'loyal,vip,NEW')
    solo.sadd(seg_key('NEW', pa), pa, 'p-other')
    before, want = reference_erase(solo, ids)

    # the saga, up to the point where the segment is gained: just after
    # the resolution, or just before the deletion step of pa's shard
    rep = cl.begin('erase', 'r-1', ids)
    while True:
        assert rep[0], 'the saga ended before the segment was gained'
        st = json.loads(rep[1])
        if when == 'resolved' and st['st'] not in ('idx', 'walk'):
            assert st['st'] in ('dests', 'chk'), st['st']
            break
        if when == 'del' and st['st'] == 'del' and st['s'] == home:
            assert journal(redis_cluster)
            break
        assert st['st'] != 'del' or st['s'] < home
        rep = cl.call(rep[0], rep[1])
    assert [(p['pid'], p['segs']) for p in st['P']] == \
        [(pa, ['loyal', 'vip'])]
    assert r.sismember(seg_key('vip', pa), pa)
    assert r.hget(kk('profile', pa), 'segments') == 'loyal,vip'

    r.hset(kk('profile', pa), 'segments', 'loyal,%s,vip' % gained)
    r.sadd(seg_key('NEW', pa), pa, 'p-other')
    if 'NEW2' in gained:
        r.set(other, 'oops')
    got = cl.run(rep)

    assert no_took(got) == no_took(want)
    snap = cluster_snapshot(redis_cluster)
    if 'NEW2' in gained:
        assert snap.pop(other) == 'oops'
        assert r.ttl(other) == -1
    assert new_ids(snap, before) == new_ids(snapshot([solo]), before)
    assert audit_of([r], 'r-1') == audit_of([solo], 'r-1')
    assert len(audit_of([r], 'r-1')) == 1
    assert journal(redis_cluster) == {}
    # pa in no segment of any name, NEW's other member stays; no node of
    # Zoe's in any shard's segments' clock
    sets = [k for k in snap
            if k.startswith(PFX + ':segment:') and r.type(k) == 'set']
    assert seg_key('NEW', pa) in sets
    for k in sets:
        assert pa not in snap[k], k
    assert seg_members(r, 'NEW') == {'p-other'}
    assert seg_members(r, 'loyal') == {world.pw}
    assert seg_members(r, 'vip') == set()
    zoe = set(world.zoe_nodes)
    for i in range(N):
        key = '%s:segments:due:{%s}' % (PFX, cs.shard_tag(i, N))
        assert not zoe & set(r.zrange(key, 0, -1)), key
    for x in (world.pw, world.w, world.d):
        assert r.zscore(due_key(x), x) == 1700000009000, x


# --------------------------------------------------------------------------
# the segments' views: a call a shard

SEGS = ['loyal', 'events >= 1', 'vip', 'trait("plan") == "pro"',
        'empty', 'events >= 1000']


@pytest.fixture
def segs(cl, solo, redis_cluster):
    """40 more members of loyal over the shards, on the cluster and on the
    standalone copy alike: {pid: its fields of tsa.SEG_FIELDS} of every
    member of loyal."""
    pids = ['p%d' % i for i in range(3000, 3040)]
    r = redis_cluster.client()
    for c in (r, solo):
        tsa.add_members(c, 'loyal', pids, prefix=PFX)
    want = {}
    for pid in seg_members(solo, 'loyal'):
        vals = solo.hmget(kk('profile', pid), tsa.SEG_FIELDS)
        want[pid] = {f: v for f, v in zip(tsa.SEG_FIELDS, vals) if v}
    assert len(want) == 42
    return want


def test_segments_is_cdp_segments(cl, solo, segs, redis_cluster):
    """GET segments on a cluster: a call in the audit's slot, one a shard
    (its members of each segment), the last in the audit's slot again:
    the counts and the audit entry cdp_segments makes; sent twice,
    audited once; without segments, one call."""
    before = cluster_snapshot(redis_cluster)
    want = solo.fcall('cdp_segments', 0, PFX, 's-1', 'marketer', NOW, *SEGS)
    assert [x['members'] for x in json.loads(want)] == [42, 1, 0]
    cl.calls = 0
    assert cl.do('segments', 's-1', SEGS, role='marketer') == want
    assert cl.calls == N + 2
    assert cluster_snapshot(redis_cluster) == before
    clients = [redis_cluster.client()]
    assert audit_of(clients, 's-1') == audit_of([solo], 's-1')
    assert len(audit_of(clients, 's-1')) == 1
    assert cl.do('segments', 's-2', SEGS, twice=True,
                 role='marketer') == want
    assert len(audit_of(clients, 's-2')) == 1
    cl.calls = 0
    assert cl.do('segments', 's-3', [], role='marketer') == '[]'
    assert cl.calls == 1
    assert [a['op'] for a in audit_of(clients, 's-3')] == ['segments']


@pytest.mark.parametrize('fmt', ['json', 'ndjson', 'csv'])
@pytest.mark.parametrize('count', [1, 7, 1000])
def test_segment_members_is_cdp_segment_members(cl, solo, segs,
                                                redis_cluster, fmt, count):
    """A page of members on a cluster: from its cursor's shard on, a call
    a shard until the page is full (its members' fields read in their
    shard), between two calls in the audit's slot; followed to "0", every
    member once, as cdp_segment_members gives them on the same data; an
    audit entry a page."""
    before = cluster_snapshot(redis_cluster)
    calls = []

    def args(cursor):
        return ['loyal', cursor, str(count), fmt] + tsa.SEG_FIELDS

    def page(cursor):
        cl.calls = 0
        rep = cl.do('members', 'm-1', args(cursor), role='marketer')
        calls.append(cl.calls)
        return rep

    pages = tsa.walk_pages(page, fmt)
    tsa.check_pages(pages, segs)
    tsa.check_pages(tsa.walk_pages(lambda cursor: solo.fcall(
        'cdp_segment_members', 0, PFX, 'm-2', 'marketer', NOW,
        *args(cursor)), fmt), segs)
    # each shard visited once, but the one a page stops in (again by the
    # next page)
    assert sum(calls) <= 2 * len(pages) + N + len(pages) - 1, calls
    if count == 1000:
        assert calls == [N + 2]
    if count == 7:
        assert any(len({cs.shard_of(p, N) for p, _ in rows}) > 1
                   for _, rows in pages), pages
    assert cluster_snapshot(redis_cluster) == before
    reads = audit_of([redis_cluster.client()], 'm-1')
    assert [(a['op'], a['ids'], int(a['profiles'])) for a in reads] == [
        ('segment_read', 'segment:loyal', len(rows)) for _, rows in pages]
    # sent twice: the same page, audited once
    first = cl.do('members', 'm-3', args('0'), twice=True, role='marketer')
    assert tsa.parse_page(fmt, first)[0] == pages[0][0]
    assert len(audit_of([redis_cluster.client()], 'm-3')) == 1


def test_segment_refusals_are_the_standalone_functions(cl, solo,
                                                       redis_cluster):
    r = redis_cluster.client()
    for args in (['loyal', '16.0', '10', 'json'], ['loyal', '5', '10', 'json'],
                 ['lo yal', '0', '10', 'json'], ['loyal', '0', '0', 'json'],
                 ['loyal', '0', '10', 'xml'], ['loyal', '0', '10']):
        want = error_of(lambda: solo.fcall('cdp_segment_members', 0, PFX,
                                           'r', 'marketer', NOW, *args))
        assert want.startswith('cdp_segment_members: '), want
        assert error_of(lambda: cl.begin('members', 'r', args,
                                         role='marketer')) == want, args
    want = error_of(lambda: solo.fcall('cdp_segments', 0, PFX, 'r',
                                       'marketer', NOW, 'a b', 'x'))
    assert want == 'cdp_segments: bad segment name at 5'
    assert error_of(lambda: cl.begin('segments', 'r', ['a b', 'x'],
                                     role='marketer')) == want
    assert r.exists(AUDIT) == 0


# --------------------------------------------------------------------------
# export and read

@pytest.mark.parametrize('scenario', ['zoe', 'zoe_by_email', 'mixed', 'dan',
                                      'nobody'])
def test_export_is_cdp_export(cl, solo, world, redis_cluster, scenario):
    ids = ids_of(world, scenario)
    if scenario == 'zoe':
        ids = ids + ['anonymous_id:' + world.w, 'email:' + H('2')]
    before = cluster_snapshot(redis_cluster)
    want = solo.fcall('cdp_export', 0, PFX, 'x-1', 'privacy', NOW, *ids)
    got = cl.do('export', 'x-1', ids)
    assert got == want
    # it writes its audit entry, nothing else but its record
    assert cluster_snapshot(redis_cluster) == before
    assert audit_of([redis_cluster.client()], 'x-1') == \
        audit_of([solo], 'x-1')
    if scenario == 'zoe':
        doc = json.loads(got)
        assert [p['profile_id'] for p in doc['profiles']] == [world.pa,
                                                             world.pw]
        zoe = doc['profiles'][0]
        assert len(zoe['events']) >= 10 and len(zoe['merges']) >= 2
        assert len(zoe['consent_log']) == 4
    # sent twice: the same, audited once
    assert cl.do('export', 'x-2', ids, twice=True) == want.replace(
        '"receipt":"x-1"', '"receipt":"x-2"', 1)
    assert len(audit_of([redis_cluster.client()], 'x-2')) == 1


@pytest.mark.parametrize('ident,recent', [
    ('anonymous_id:a', '3'), ('email:' + H('2'), '1000'),
    ('profile_id:pb', '0'), ('profile_id:pb', '2'), ('anonymous_id:d', '5'),
    ('email:' + H('7'), '5'), ('profile_id:p999', '0')])
def test_read_is_cdp_read(cl, solo, world, redis_cluster, ident, recent):
    t, v = ident.split(':')
    v = {'a': world.a, 'd': world.d, 'pb': world.pb}.get(v, v)
    ident = t + ':' + v
    before = cluster_snapshot(redis_cluster)
    want = solo.fcall('cdp_read', 0, PFX, 'q-1', 'marketer', NOW, ident,
                      recent)
    got = cl.do('read', 'q-1', [ident], recent, role='marketer')
    assert got == want
    if v in (world.a, world.pb) and recent != '0':
        assert len(json.loads(got)['recent_events']) == int(recent)
    assert cluster_snapshot(redis_cluster) == before
    assert audit_of([redis_cluster.client()], 'q-1') == \
        audit_of([solo], 'q-1')
    assert len(audit_of([solo], 'q-1')) == 1
    assert cl.do('read', 'q-2', [ident], recent, twice=True,
                 role='marketer') == (
        want and want.replace('"receipt":"q-1"', '"receipt":"q-2"', 1))
    assert len(audit_of([redis_cluster.client()], 'q-2')) == 1


# --------------------------------------------------------------------------
# unsuppress and replay: a call a shard

COPIES = [shard_key('suppressed', i) for i in range(N)]
WES = 'user_id:' + H('9')           # suppressed, never asked for


def suppress_some(c, world):
    """Copies that differ (as a half-done unsuppress leaves them): Zoe's
    e-mail in every copy, her user id in shards 0 and 5 only, her browser
    a in every copy but shard 0's, Wes's user id in every copy; her phone
    in none.  The request: {members asked for (as the set holds them)}."""
    zoe_a = 'anonymous_id:' + aidh(world.a)
    for i, key in enumerate(COPIES):
        c.delete(key)
        c.sadd(key, 'email:' + H('2'), WES)
        if i in (0, 5):
            c.sadd(key, 'user_id:' + H('1'))
        if i != 0:
            c.sadd(key, zoe_a)
    return ['email:' + H('2'), 'user_id:' + H('1'),
            'anonymous_id:' + world.a, 'phone:' + H('3'), 'email:' + H('2')]


def copies_of(c):
    return [c.smembers(k) for k in COPIES]


@pytest.mark.parametrize('twice', [False, True])
def test_unsuppress_is_cdp_unsuppress(cl, solo, world, redis_cluster,
                                      twice):
    """A call in the audit's slot, one a shard (its copy of the suppression
    set), the last in the audit's slot: every copy loses the identifiers,
    the reply counts those that were in any copy, the audit entry is
    cdp_unsuppress's; every step sent twice changes nothing of that."""
    r = redis_cluster.client()
    ids = suppress_some(r, world)
    suppress_some(solo, world)
    before = cluster_snapshot(redis_cluster)
    want = solo.fcall('cdp_unsuppress', 0, PFX, 'u-1', 'privacy', NOW, *ids)
    assert json.loads(want) == {'receipt': 'u-1', 'removed': 3}
    cl.calls = 0
    assert cl.do('unsuppress', 'u-1', ids, twice=twice) == want
    assert cl.calls == (2 * N + 3 if twice else N + 2)
    assert copies_of(r) == [{WES}] * N
    snap = cluster_snapshot(redis_cluster)
    assert snap == snapshot([solo]) and snap != before
    assert audit_of([r], 'u-1') == audit_of([solo], 'u-1')
    (entry,) = audit_of([r], 'u-1')
    assert (entry['op'], entry['identifiers']) == ('unsuppress', '3')
    assert world.a not in json.dumps(entry)
    # its records: the steps of each shard and the audit's, an hour
    assert len(saga_keys(redis_cluster)) == N + 1
    for key in saga_keys(redis_cluster):
        assert 0 < r.ttl(key) <= 3600
    # again: nothing left to remove, audited all the same
    want = solo.fcall('cdp_unsuppress', 0, PFX, 'u-2', 'privacy', NOW, *ids)
    assert json.loads(want)['removed'] == 0
    assert cl.do('unsuppress', 'u-2', ids) == want
    assert audit_of([r], 'u-2') == audit_of([solo], 'u-2')


def test_unsuppress_leaves_the_copy_the_edges_read_last(cl, world,
                                                        redis_cluster):
    """Shard 0's copy (cdp_suppressed's, nginx's sync's) loses the
    identifiers in the last step of a shard: until then the edges still
    refuse the browser."""
    r = redis_cluster.client()
    ids = suppress_some(r, world)
    members = set.union(*copies_of(r)) - {WES}
    rep = cl.begin('unsuppress', 'u-1', ids)
    order = []
    while rep[0]:
        st = json.loads(rep[1])
        if st['st'] == 'uns':
            order.append(st['s'])
            assert r.smembers(COPIES[0]) & members
        rep = cl.call(rep[0], rep[1])
    assert order == list(range(N - 1, -1, -1))
    assert copies_of(r) == [{WES}] * N


def test_an_unsuppress_stopped_half_way_fails_closed(cl, solo, world,
                                                     redis_cluster):
    """The driver stops after k calls, for every k: the copies visited have
    lost the identifiers, the others (shard 0's among them until the last)
    still suppress the person; nothing is audited and the sweeper leaves
    it (no journal: not a privacy risk); the privacy officer's retry
    completes it, audited once, counting those it still found."""
    r = redis_cluster.client()
    ids = suppress_some(solo, world)
    asked = {'email:' + H('2'), 'user_id:' + H('1'),
             'anonymous_id:' + aidh(world.a), 'phone:' + H('3')}
    full = copies_of(solo)
    solo.fcall('cdp_unsuppress', 0, PFX, 'u-0', 'privacy', NOW, *ids)
    for k in range(1, N + 2):
        suppress_some(r, world)
        rep = cl.begin('unsuppress', 'u-%d' % k, ids)
        for _ in range(k - 1):
            rep = cl.call(rep[0], rep[1])
        assert rep[0], k
        done = set(range(N - k + 1, N))     # the shards visited
        left = copies_of(r)
        for i in range(N):
            assert left[i] == (full[i] - asked if i in done else full[i]), \
                (k, i)
        if k <= N:
            assert left[0] & asked
        assert audit_of([r], 'u-%d' % k) == []
        assert cl.sweep() == 0 and copies_of(r) == left
        still = len(set.union(*left) & asked)
        got = json.loads(cl.do('unsuppress', 'r-%d' % k, ids))
        assert got == {'receipt': 'r-%d' % k, 'removed': still}, k
        assert cluster_snapshot(redis_cluster) == snapshot([solo]), k
        (entry,) = audit_of([r], 'r-%d' % k)
        assert entry['identifiers'] == str(still)


def test_a_key_of_the_wrong_type_stops_them_in_its_shard(cl, solo, world,
                                                        redis_cluster):
    """A copy of the suppression set, a dead-letter stream of the wrong
    type: the error the standalone function gives (which writes nothing),
    from the step of that shard; the shards before it are done, the
    others (shard 0's copy among them) untouched, nothing audited."""
    r = redis_cluster.client()
    ids = suppress_some(r, world)
    suppress_some(solo, world)
    full = copies_of(r)
    for c in (r, solo):
        c.set(COPIES[5], 'oops')
    want = error_of(lambda: solo.fcall('cdp_unsuppress', 0, PFX, 'u', 'p',
                                       NOW, *ids))
    assert want == 'cdp_unsuppress: %s is a string, not a set' % COPIES[5]
    assert error_of(lambda: cl.do('unsuppress', 'u', ids)) == want
    left = [r.smembers(k) for k in COPIES[:5]]
    assert left == full[:5]
    assert [r.smembers(k) for k in COPIES[6:]] == [{WES}] * (N - 6)
    assert r.exists(AUDIT) == 0

    for c in (r, solo):
        dead_letters(c, world)
    dks = ['%s:dead:{%s}:crm' % (PFX, cs.shard_tag(i, N)) for i in range(N)]
    full = [i for i in range(N) if r.xlen(dks[i])]
    assert len(full) >= 3, full
    bad = full[1]
    for c in (r, solo):
        c.delete(dks[bad])
        c.set(dks[bad], 'oops')
    counts = [r.xlen(k) if i != bad else 0 for i, k in enumerate(dks)]
    assert sum(counts[:bad]) and sum(counts[bad + 1:])
    want = error_of(lambda: solo.fcall('cdp_replay', 0, PFX, 'p', 'admin',
                                       NOW, 'crm'))
    assert want == 'cdp_replay: %s is a string, not a stream' % dks[bad]
    assert error_of(lambda: cl.do('replay', 'p', ['crm'],
                                  role='admin')) == want
    assert [r.xlen(k) if i != bad else 0 for i, k in enumerate(dks)] == \
        [0] * bad + counts[bad:]
    assert r.exists(AUDIT) == 0


def dead_letters(c, world):
    """crm's dead letters over several shards (an event with its profile, a
    deletion notice, one with neither: only deleted), besides the
    world's two; under the same ids in every store."""
    ids = ('2999999999000-%d' % j for j in itertools.count())
    for i, x in enumerate([world.a, world.b, world.w, world.d, world.pw,
                           world.pa]):
        key = '%s:dead:%s:crm' % (PFX, tag(x))
        c.xadd(key, {'id': '1-%d' % i, 'status': '500', 'response': 'no',
                     'event': '{"n":%d}' % i, 'p': x}, id=next(ids))
        if i % 2:
            c.xadd(key, {'id': '2-%d' % i, 'status': '500',
                         'delete': '{"type":"delete","n":%d}' % i},
                   id=next(ids))
        if i == 3:
            c.xadd(key, {'id': '3-%d' % i, 'status': '400'}, id=next(ids))


def dead_len(c, name):
    return sum(c.xlen('%s:dead:{%s}:%s' % (PFX, cs.shard_tag(i, N), name))
               for i in range(N))


@pytest.mark.parametrize('twice', [False, True])
def test_replay_is_cdp_replay(cl, solo, world, redis_cluster, twice):
    """A call in the audit's slot, one a shard (its dead letters back into
    its out-stream), the last in the audit's slot: the same streams as
    cdp_replay leaves (new ids aside), the same reply and audit entry;
    every step sent twice moves nothing twice."""
    r = redis_cluster.client()
    for c in (r, solo):
        dead_letters(c, world)
    before = cluster_snapshot(redis_cluster)
    assert before == snapshot([solo])
    want = solo.fcall('cdp_replay', 0, PFX, 'p-1', 'admin', NOW, 'crm')
    assert json.loads(want) == {'receipt': 'p-1', 'destination': 'crm',
                                'replayed': 10}
    cl.calls = 0
    assert cl.do('replay', 'p-1', ['crm'], twice=twice, role='admin') == want
    assert cl.calls == (2 * N + 3 if twice else N + 2)
    assert dead_len(r, 'crm') == 0 and dead_len(r, 'mail') == 1
    assert new_ids(cluster_snapshot(redis_cluster), before) == \
        new_ids(snapshot([solo]), before)
    assert audit_of([r], 'p-1') == audit_of([solo], 'p-1')
    (entry,) = audit_of([r], 'p-1')
    assert (entry['op'], entry['ids'], entry['events']) == (
        'replay', 'destination:crm', '10')
    # nothing left: a call a shard all the same
    cl.calls = 0
    assert json.loads(cl.do('replay', 'p-2', ['crm'], role='admin'))[
        'replayed'] == 0
    assert cl.calls == N + 2


def test_replay_moves_10000_a_request(cl, solo, world, redis_cluster):
    """11010 dead letters of sms in shards 1, 3 and 9: the first request
    moves 10000 (shard 1's 6000, then 4000 of shard 3's, oldest first)
    and stops there (6 calls), as cdp_replay; the second the 1010 left."""
    r = redis_cluster.client()
    for c in (r, solo):
        for shard, n in ((1, 6000), (3, 5000), (9, 10)):
            p = c.pipeline(transaction=False)
            for j in range(n):
                p.xadd('%s:dead:{%s}:sms' % (PFX, cs.shard_tag(shard, N)),
                       {'id': '1-%d' % j, 'event': '{"j":%d}' % j,
                        'p': 'p%d' % shard}, id='5-%d' % (j + 1))
            p.execute()
    before = cluster_snapshot(redis_cluster)
    for receipt, moved, calls in (('p-1', 10000, 6), ('p-2', 1010, N + 2)):
        want = solo.fcall('cdp_replay', 0, PFX, receipt, 'admin', NOW, 'sms')
        assert json.loads(want)['replayed'] == moved
        cl.calls = 0
        assert cl.do('replay', receipt, ['sms'], role='admin') == want
        assert cl.calls == calls
        assert new_ids(cluster_snapshot(redis_cluster), before) == \
            new_ids(snapshot([solo]), before)
        assert audit_of([r], receipt) == audit_of([solo], receipt)
    assert dead_len(r, 'sms') == 0


def test_a_replay_stopped_half_way_is_completed_by_a_retry(
        cl, solo, world, redis_cluster):
    """The driver stops after k calls, for every k: the shards visited have
    moved their dead letters (once), the others not; nothing is audited
    and the sweeper leaves it; the retry moves the rest: together what
    one cdp_replay moves, in the same streams."""
    r = redis_cluster.client()
    dead_letters(solo, world)
    base = snapshot([solo])
    dks = ['%s:dead:{%s}:crm' % (PFX, cs.shard_tag(i, N)) for i in range(N)]
    counts = [solo.xlen(k) for k in dks]
    movable = [sum(1 for _i, f in solo.xrange(k)
                   if {'event', 'delete', 'p'} & set(f)) for k in dks]
    assert sum(counts) == 11 and sum(movable) == 10
    assert len([n for n in counts if n]) >= 4
    solo.fcall('cdp_replay', 0, PFX, 'p-0', 'admin', NOW, 'crm')
    final = new_ids(snapshot([solo]), base)
    for k in range(1, N + 2):
        redis_cluster.flush()
        c = redis_cluster.client(decode_responses=False)
        restore(c, world.saved)
        c.close()
        dead_letters(r, world)
        rep = cl.begin('replay', 'p-%d' % k, ['crm'], role='admin')
        for _ in range(k - 1):
            rep = cl.call(rep[0], rep[1])
        assert rep[0], k
        # shards 0 .. k - 2 visited
        assert [r.xlen(key) for key in dks] == [0] * (k - 1) + counts[k - 1:]
        assert audit_of([r], 'p-%d' % k) == []
        assert cl.sweep() == 0
        assert [r.xlen(key) for key in dks] == [0] * (k - 1) + counts[k - 1:]
        got = json.loads(cl.do('replay', 'q-%d' % k, ['crm'], role='admin'))
        assert got['replayed'] == sum(movable[k - 1:]), k
        assert new_ids(cluster_snapshot(redis_cluster), base) == final, k
        assert len(audit_of([r], 'q-%d' % k)) == 1


# --------------------------------------------------------------------------
# refusals

HX = 'c' * 64
BAD = [
    [PFX, 'r', 'privacy', '1'],
    ['', 'r', 'privacy', '1', 'email:' + HX],
    [PFX, '', 'privacy', '1', 'email:' + HX],
    [PFX, 'r x', 'privacy', '1', 'email:' + HX],
    [PFX, 'r' * 129, 'privacy', '1', 'email:' + HX],
    [PFX, 'r', '', '1', 'email:' + HX],
    [PFX, 'r', 'privacy', 'now', 'email:' + HX],
    [PFX, 'r', 'privacy', '1', 'email:' + HX, 'fax:' + HX],
    [PFX, 'r', 'privacy', '1', 'alice@example.com'],
    [PFX, 'r', 'privacy', '1', 'email:' + HX.upper()],
    [PFX, 'r', 'privacy', '1', 'user_id:alice'],
    [PFX, 'r', 'privacy', '1', 'anonymous_id:' + 'd' * 33],
    [PFX, 'r', 'privacy', '1', 'profile_id:q1'],
    [PFX, 'r', 'privacy', '1'] + ['email:%064x' % i for i in range(101)],
    [PFX + '|0', 'r', 'privacy', '1', 'email:' + HX],
    [PFX + '|1025', 'r', 'privacy', '1', 'email:' + HX],
    ['a b|16', 'r', 'privacy', '1', 'email:' + HX],
]

BAD_REPLAY = [
    [PFX, 'r', 'admin', '1'],
    [PFX, 'r', 'admin', '1', 'crm', 'mail'],
    [PFX, 'r', 'admin', '1', 'c r m'],
    [PFX, 'r', 'admin', '1', 'crm:x'],
    [PFX, 'r', 'admin', '1', 'c' * 65],
    [PFX, 'r x', 'admin', '1', 'crm'],
    [PFX, 'r', 'ad min', '1', 'crm'],
    [PFX, 'r', 'admin', 'now', 'crm'],
    [PFX + '|0', 'r', 'admin', '1', 'crm'],
    ['a b|16', 'r', 'admin', '1', 'crm'],
]

BAD_READ = [
    [PFX, 'r', 'privacy', '1', 'email:' + HX, '1001'],
    [PFX, 'r', 'privacy', '1', 'email:' + HX, 'x'],
    [PFX, 'r', 'privacy', '1', 'email:' + HX, 'email:' + HX, '5'],
    [PFX, 'r', 'privacy', '1', '5'],
    [PFX, 'r 3', 'privacy', '1', 'email:' + HX, '5'],
    [PFX, 'r', 'privacy', 'now', 'email:' + HX, '5'],
    [PFX, 'r', 'privacy', '1', 'email:raw@example.com', '5'],
]


def error_of(f):
    with pytest.raises(redis.ResponseError) as e:
        f()
    return str(e.value)


def test_refusals_are_the_standalone_functions(cl, solo, redis_cluster):
    before = cluster_snapshot(redis_cluster)
    n = 0
    for op, bad in (('erase', BAD), ('export', BAD), ('unsuppress', BAD),
                    ('replay', BAD_REPLAY)):
        for args in bad:
            want = error_of(lambda: solo.fcall('cdp_' + op, 0, *args))
            assert want.startswith('cdp_' + op + ': ')
            # the prefix is always ARGV[1]; a bad one names another key
            key = args[0] + ':audit' if '|' not in args[0] else AUDIT
            got = error_of(lambda: cl.r.execute_command(
                'FCALL', 'cdp_admin_x', 1, key or AUDIT, args[0], 'begin',
                op, *args[1:4], '0', *args[4:]))
            assert got == want, (op, args)
            n += 1
    for args in BAD_READ:
        want = error_of(lambda: solo.fcall('cdp_read', 0, *args))
        got = error_of(lambda: cl.r.execute_command(
            'FCALL', 'cdp_admin_x', 1, AUDIT, args[0], 'begin', 'read',
            *args[1:4], args[-1], *args[4:-1]))
        assert got == want, args
        n += 1
    assert cluster_snapshot(redis_cluster) == before
    assert n == 3 * len(BAD) + len(BAD_REPLAY) + len(BAD_READ)

    # the saga's own
    for args, msg in (
            (['begin', 'wipe', 'r', 'privacy', '1', '0', 'email:' + HX],
             'unknown op'),
            (['begin', 'erase', 'r', 'privacy', '1'], 'want ARGV'),
            (['{"st":"del"}'], 'a malformed state'),
            (['not json'], 'a malformed state')):
        assert error_of(lambda: cl.call(AUDIT, *args)).startswith(
            'cdp_admin_x: ') and msg in error_of(lambda: cl.call(AUDIT,
                                                                 *args))
    # a state sent with another slot's key
    rep = cl.begin('export', 'x', ['profile_id:p999'])
    other = next(shard_key('events', i) for i in range(N)
                 if cs.key_slot(shard_key('events', i)) !=
                 cs.key_slot(rep[0]))
    assert 'a malformed state' in error_of(lambda: cl.call(other, rep[1]))
    assert cl.call(AUDIT, 'sweep') == ['', '', 0, None]


def test_errors_found_on_the_way_write_nothing(cl, solo, world,
                                               redis_cluster):
    """A cycle of links, a shard's merge log of the wrong type: the error
    cdp_erase gives, from the step that finds it, before anything is
    written (the journal included)."""
    r = redis_cluster.client()
    for c in (r, solo):
        c.hset(kk('profile', 'p7'), mapping={'merged_into': 'p8'})
        c.hset(kk('profile', 'p8'), mapping={'merged_into': 'p7'})
    before = cluster_snapshot(redis_cluster)
    ids = ['anonymous_id:' + world.c, 'profile_id:p8']
    for op in ('erase', 'export'):
        want = error_of(lambda: solo.fcall('cdp_' + op, 0, PFX, 'r', 'p',
                                           NOW, *ids))
        assert 'more than 64 links' in want
        assert error_of(lambda: cl.do(op, 'r', ids)) == want
    assert error_of(lambda: cl.do('read', 'r', ['profile_id:p7'], '3')) == \
        error_of(lambda: solo.fcall('cdp_read', 0, PFX, 'r', 'p', NOW,
                                    'profile_id:p7', '3'))
    for c in (r, solo):
        c.delete(kk('profile', 'p7'), kk('profile', 'p8'))
        c.set(shard_key('merges', 9), 'oops')
    before = cluster_snapshot(redis_cluster)
    ids = ['anonymous_id:' + world.c]
    for op in ('erase', 'export'):
        want = error_of(lambda: solo.fcall('cdp_' + op, 0, PFX, 'r', 'p',
                                           NOW, *ids))
        assert 'is a string, not a stream' in want
        assert error_of(lambda: cl.do(op, 'r', ids)) == want
    assert cluster_snapshot(redis_cluster) == before
    assert r.exists(AUDIT) == 0 and journal(redis_cluster) == {}


# --------------------------------------------------------------------------
# the audit's one call: numkeys 0, sent to the node of the audit's slot

def test_a_numkeys_0_call_reaches_the_keys_its_node_owns(redis_cluster):
    """cdp_audit declares no key: Redis 7 lets a function touch an
    undeclared key of a slot its node owns, and refuses one of another
    node's slot; so nginx sends it to the master of <prefix>:audit's
    slot."""
    redis_cluster.flush()
    for port in redis_cluster.masters():
        c = redis_cluster.node_client(port)
        c.function_load(lib(ADMIN_LUA), replace=True)
        c.close()
    r = redis_cluster.client()
    r.xadd(AUDIT, {'receipt': 'r-a', 'op': 'erase', 'role': 'privacy',
                   'ids': 'email:' + H('1'), 'profiles': '1',
                   'identifiers': '2', 'events': '3', 'at': '5',
                   'took_us': '7'})
    owner = redis_cluster.master_of_slot(cs.key_slot(AUDIT))
    for port in redis_cluster.masters():
        c = redis_cluster.node_client(port)
        try:
            if port == owner:
                got = json.loads(c.execute_command('FCALL_RO', 'cdp_audit',
                                                   0, PFX, '0', '10'))
                assert [e['receipt'] for e in got] == ['r-a'], got
            else:
                with pytest.raises(redis.ResponseError) as e:
                    c.execute_command('FCALL_RO', 'cdp_audit', 0, PFX, '0',
                                      '10')
                assert 'non local key' in str(e.value), e.value
        finally:
            c.close()


# --------------------------------------------------------------------------
# through nginx

def nginx_on(cluster, nginx_factory, workdir, **kw):
    cluster.flush()
    return ta.start(nginx_factory, cluster, workdir, **kw)


def person_keys(cluster, ngx, p):
    """{master port: the person's keys it holds}: profiles and links with
    their ids, timelines and sent sets, identifiers' idx entries."""
    names = set()
    for x in list(p.pids) + p.aids:
        for kind in ('profile', 'ids', 'timeline', 'timeline_old'):
            names.add(h.key(ngx, kind, x))
        names.add(ngx.sent_key(x))
    for t, v in (('user_id', p.uid), ('email', p.email), ('phone', p.phone)):
        names.add(h.key(ngx, 'idx', t, ta.hsh(ngx, t, v)))
    out = {}
    for port in cluster.masters():
        c = cluster.node_client(port)
        try:
            out[port] = sorted(k for k in c.scan_iter(
                match=ngx.prefix + ':*', count=1000) if k in names)
        finally:
            c.close()
    return out


def person_events_by_node(cluster, ngx, p):
    """{master port: the person's events in the shards' streams it owns}."""
    out = {}
    for port in cluster.masters():
        c = cluster.node_client(port)
        try:
            n = 0
            for k in ngx.streams:
                if cluster.master_of_slot(cs.key_slot(k)) != port:
                    continue
                n += sum(1 for _i, f in c.xrange(k)
                         if p.owns(json.loads(f['event'])))
            out[port] = n
        finally:
            c.close()
    return out


def erase_audit(ngx, p):
    """The audit's erase entries naming the person's e-mail address."""
    e = 'email:' + ta.hsh(ngx, 'email', p.email)
    return [a for a in ta.ok_json(ta.admin(ngx, 'GET', 'audit?since=0'))
            if a['op'] == 'erase' and e in a['ids']]


def admin_sagas(st, result=None):
    if result is None:
        return st.c('cdp_admin_sagas_running')
    return st.c('cdp_admin_sagas_total{result="%s"}' % result)


def test_nginx_erases_a_person_from_every_shard(redis_cluster,
                                               nginx_factory, workdir):
    """The admin API on a 3-master cluster: profiles, export and erase of
    a person whose keys are on several masters (sagas of cdp_admin_x); after
    the erasure no master holds a key or an event of theirs, every
    shard's copy of the suppression set has them, the audit (one call in
    its slot) has one entry; the browser's later hits are refused at the
    edge and the store drops what the server API sends of them as
    erased.  unsuppress (a saga too) takes her e-mail address out of every
    shard's copy of the suppression set."""
    ngx = nginx_on(redis_cluster, nginx_factory, workdir)
    alice, bob = ta.Person(ngx, 'alice'), ta.Person(ngx, 'bob')
    pid = ta.build_merged_person(ngx, alice)
    ta.build_simple_person(ngx, bob)
    keep = ta.person_snapshot(ngx, bob)

    # (her browsers' ids are random: her keys are on two masters or three)
    where = person_keys(redis_cluster, ngx, alice)
    assert len([p for p, ks in where.items() if ks]) >= 2, where
    evs = person_events_by_node(redis_cluster, ngx, alice)
    n = sum(evs.values())
    assert n >= 10 and len([p for p, k in evs.items() if k]) >= 2, evs

    st0 = ngx.status()
    pr = ta.ok_json(ta.admin(ngx, 'GET', 'profiles?email=' + alice.email,
                             'marketer'))
    assert pr['profile_id'] == pid, pr
    assert ta.err(ta.admin(ngx, 'GET', 'profiles?email=nobody@example.org',
                           'marketer'), 404, 'not_found')
    ex = ta.ok_json(ta.admin(ngx, 'GET', 'export?user_id=' + alice.uid))
    assert len([e for p in ex['profiles'] for e in p['events']]) == n, ex
    rec = ta.erase(ngx, email=alice.email)
    assert rec['profiles'] == 1 and rec['events'] == n, rec
    assert len(rec['anonymous_ids']) == len(alice.aids), rec
    d = ngx.status().delta(st0)
    assert admin_sagas(d, 'done') == 4 and admin_sagas(d) == 0, d
    assert admin_sagas(d, 'abandoned') == admin_sagas(d, 'error') == 0, d

    # from every master: nothing of hers, her suppression in every copy
    assert person_keys(redis_cluster, ngx, alice) == {
        p: [] for p in redis_cluster.masters()}
    assert person_events_by_node(redis_cluster, ngx, alice) == {
        p: 0 for p in redis_cluster.masters()}
    ta.assert_gone(ngx, alice)
    ta.assert_suppressed(ngx, alice)
    assert [a['receipt'] for a in erase_audit(ngx, alice)] == [
        rec['receipt']]
    assert ta.person_snapshot(ngx, bob) == keep

    # her browsers: refused at the edge (the receipt's browsers)
    ta.settle(ngx)
    xlen, before = ngx.xlen(), ngx.status()
    for b in alice.browsers:
        r = ngx.hit('url=https://shop.example/back', cookie='cdp_aid='
                    + b.cookie)
        assert (h.cookie_of(r)[1] or {}).get('max-age') == '0', \
            r.set_cookies()
    d = ta.settle(ngx).delta(before)
    assert d.c('cdp_suppressed_hits_total') == len(alice.browsers), d
    # what the server API sends of her: dropped by the store, as erased
    for msg in ({'anonymousId': alice.aids[0], 'event': 'Viewed'},
                {'userId': alice.uid, 'event': 'Bought'}):
        before = ngx.status()
        ta.api_ok(ngx, 'track', dict(msg, messageId=ta.mid()))
        d = ta.settle(ngx).delta(before)
        assert d.c('cdp_events_dropped_total{reason="erased"}') == 1, d
        assert d.stored == 0, d
    assert ngx.xlen() == xlen
    ta.assert_gone(ngx, alice)

    # unsuppress: a call a shard, every copy (ta.suppressed checks them
    # all equal) loses her e-mail address, nothing else
    sup = ta.suppressed(ngx)
    mail = 'email:' + ta.hsh(ngx, 'email', alice.email)
    st0 = ngx.status()
    un = ta.ok_json(ta.admin(ngx, 'POST', 'unsuppress', 'privacy',
                             {'email': [alice.email, 'x@example.org']}))
    assert un['removed'] == 1 and un['receipt'].startswith('r-'), un
    assert ta.suppressed(ngx) == sup - {mail}
    assert admin_sagas(ngx.status().delta(st0), 'done') == 1
    (a,) = [a for a in ta.ok_json(ta.admin(ngx, 'GET', 'audit?since=0'))
            if a['op'] == 'unsuppress']
    assert (a['receipt'], a['identifiers'], a['ids'][0]) == (
        un['receipt'], 1, mail), a
    assert ta.err(ta.admin(ngx, 'POST', 'unsuppress', 'privacy',
                           {'profile_id': 'p1'}), 400, 'invalid_field')
    # replay of a destination nginx does not have: refused before the store
    ta.err(ta.admin(ngx, 'POST', 'replay', 'admin', {'destination': 'x'}),
           404, 'unknown_destination')
    # no cdp_segment here: none listed, the listing audited (a saga of
    # one call, in the audit's slot)
    st0 = ngx.status()
    assert ta.ok_json(ta.admin(ngx, 'GET', 'segments', 'marketer')) == []
    assert admin_sagas(ngx.status().delta(st0), 'done') == 1
    assert [a['op'] for a in ta.ok_json(ta.admin(
        ngx, 'GET', 'audit?since=0'))][-1] == 'segments'
    ta.check_graph(ngx)


def test_nginx_replays_the_dead_letters_of_every_shard(
        redis_cluster, nginx_factory, workdir, sink):
    """A destination refused (400) the hits of browsers in several shards,
    on several masters: POST replay (a saga, a call a shard) puts every
    shard's dead letters back into its out-stream, the destination gets
    them, the answer and the audit entry count them; again: none."""
    import test_destinations as td
    # every worker's deliverers of 16 shards may connect at once
    sink.server.socket.listen(1024)
    sink.respond = lambda req: (400, b'{"error":"no"}')
    redis_cluster.flush()
    ngx = td.start(nginx_factory, redis_cluster, workdir, sink,
                   ['seg purpose=analytics uri=/_dest/seg flush=50ms'])
    ngx.expected_log_re = re.compile(r'refused \d+ events with 400')
    names = ['Refused%d' % i for i in range(12)]
    for e in names:
        assert ngx.hit('e=' + e).status == 200
    assert h.wait_until(lambda: ngx.dead_len('seg') == 12, 30), \
        ngx.dead_entries('seg')
    assert h.wait_until(lambda: ngx.out_len('seg') == 0, 10)
    keys = {k for k, _i, _f in ngx.dead_entries('seg')}
    assert len({redis_cluster.master_of_slot(cs.key_slot(k))
                for k in keys}) >= 2, keys

    sink.respond = lambda req: (200, b'{}')
    st0 = ngx.status()
    r = td.admin(ngx, 'POST', 'replay', {'destination': 'seg'})
    assert r.status == 200, r.body
    rec = json.loads(r.body)
    assert (rec['destination'], rec['replayed']) == ('seg', 12), rec
    assert admin_sagas(ngx.status().delta(st0), 'done') == 1
    got = td.wait_events(sink, '/seg', 12)
    assert sorted(e['event'] for e in got) == sorted(names), got
    assert ngx.dead_len('seg') == 0
    assert h.wait_until(lambda: ngx.out_len('seg') == 0, 10)
    r = td.admin(ngx, 'GET', 'audit?since=0')
    assert r.status == 200, r.body
    (a,) = [a for a in json.loads(r.body) if a['op'] == 'replay']
    assert (a['receipt'], a['role'], a['ids'], a['events']) == (
        rec['receipt'], 'admin', ['destination:seg'], 12), a
    r = td.admin(ngx, 'POST', 'replay', {'destination': 'seg'})
    assert json.loads(r.body)['replayed'] == 0, r.body
    assert len(td.wait_events(sink, '/seg', 12)) == 12


def erasure_under_way(ngx, person, cluster, workers=2):
    """A person with 2000 events (an erasure that takes a while) and the
    erasure's request sent in a thread: (thread, answers)."""
    ta.build_simple_person(ngx, person, consent=False)
    for i in range(20):
        ta.api_ok(ngx, 'batch', {'batch': [
            {'type': 'track', 'userId': person.uid, 'event': 'E%d' % j,
             'messageId': ta.mid()} for j in range(100)]})
    ta.settle(ngx)
    answers = []

    def send():
        try:
            answers.append(ta.admin(ngx, 'POST', 'erase', 'privacy',
                                    {'email': person.email}))
        except Exception as e:      # a worker killed: no answer
            answers.append(e)

    t = threading.Thread(target=send)
    return t, answers


def test_erasure_survives_a_master_killed_mid_way(redis_cluster_replicas,
                                                  nginx_factory, workdir):
    """kill -9 of the master of the audit's slot (the erasure's journal,
    first and last call) while the erasure runs: the replica takes over,
    the saga's steps go on there (or worker 0's sweep resumes it from the
    journal), and the person ends fully erased from every master with
    exactly one audit entry."""
    cluster = redis_cluster_replicas
    ngx = nginx_on(cluster, nginx_factory, workdir,
                   http_extra='cdp_api_timeout 30s;\n    ')
    alice, bob = ta.Person(ngx, 'alice'), ta.Person(ngx, 'bob')
    ta.build_simple_person(ngx, bob, consent=False)
    t, answers = erasure_under_way(ngx, alice, cluster)
    victim = cluster.master_of_slot(cs.key_slot(ngx.prefix + ':audit'))
    st0 = ngx.status()

    t.start()
    assert h.wait_until(lambda: admin_sagas(ngx.status()) >= 1, 10, 0.001)
    cluster.kill(victim)
    try:
        cluster.wait_failover(victim)
        t.join(60)
        assert not t.is_alive()
        r = answers[0]
        # 200 with the receipt, or 503 (a step's WAIT lost with the
        # master): the erasure completes either way
        assert r.status in (200, 503), r
        assert h.wait_until(lambda: admin_sagas(ngx.status()) == 0
                            and journal_of(cluster, ngx) == {}, 30, 0.1), \
            (journal_of(cluster, ngx), ngx.status().delta(st0))
        entries = erase_audit(ngx, alice)
        assert len(entries) == 1, entries
        if r.status == 200:
            assert entries[0]['receipt'] == ta.jbody(r)['receipt']
        assert entries[0]['profiles'] == 1, entries
        assert entries[0]['events'] >= 2000, entries
        assert person_keys(cluster, ngx, alice) == {
            p: [] for p in cluster.masters()}
        assert person_events_by_node(cluster, ngx, alice) == {
            p: 0 for p in cluster.masters()}
        ta.assert_gone(ngx, alice)
        ta.assert_suppressed(ngx, alice, with_phone=False)
        assert ta.idx(ngx, 'user_id', bob.uid)
        d = ngx.status().delta(st0)
        assert admin_sagas(d, 'done') + admin_sagas(d, 'swept') == 1, d
    finally:
        cluster.restart(victim)


def journal_of(cluster, ngx):
    """The erasures' journal of nginx's prefix (the audit's slot)."""
    jk = '%s:erasing:{%s:audit}' % (ngx.prefix, ngx.prefix)
    c = cluster.client()
    try:
        return c.hgetall(jk)
    finally:
        c.close()


def test_a_worker_killed_mid_erasure_is_finished_by_the_sweep(
        redis_cluster, nginx_factory, workdir):
    """The worker driving an erasure is killed once its journal is
    written: the new worker 0 sweeps the audit every second and, the
    entry 10 s old, finishes the erasure from its plan, once: the person
    gone from every master, one audit entry, counted as swept, logged
    with the receipt."""
    ngx = nginx_on(redis_cluster, nginx_factory, workdir, workers=1)
    ngx.expected_log_re = re.compile(r'exited on signal 9')
    alice, bob = ta.Person(ngx, 'alice'), ta.Person(ngx, 'bob')
    ta.build_simple_person(ngx, bob, consent=False)
    jk = '%s:erasing:{%s:audit}' % (ngx.prefix, ngx.prefix)
    jc = redis_cluster.node_client(
        redis_cluster.master_of_slot(cs.key_slot(jk)))
    st0 = ngx.status()
    for attempt in range(5):
        t, answers = erasure_under_way(ngx, alice, redis_cluster)
        worker, = ngx.worker_pids()
        t.start()
        # the journal written: the worker stopped, then killed (unless
        # the erasure was done first: another person then)
        assert h.wait_until(lambda: jc.hlen(jk), 10, 0.0002), 'no journal'
        os.kill(worker, signal.SIGSTOP)
        if jc.hlen(jk):
            os.kill(worker, signal.SIGKILL)
            break
        os.kill(worker, signal.SIGCONT)
        t.join(30)
        alice = ta.Person(ngx, 'alice%d' % attempt)
    else:
        pytest.fail('every erasure ended before its worker was stopped')
    jc.close()
    t.join(30)
    assert not t.is_alive()
    # no receipt: the request's worker is gone
    assert getattr(answers[0], 'status', None) != 200, answers
    assert h.wait_until(lambda: len(ngx.worker_pids()) == 1
                        and worker not in ngx.worker_pids(), 10)
    # the entry is resumed once 10 s old: within about 12 s
    assert h.wait_until(lambda: journal_of(redis_cluster, ngx) == {}, 30,
                        0.2), journal_of(redis_cluster, ngx)
    d = ngx.status().delta(st0)
    assert admin_sagas(d, 'swept') == 1, d
    entries = erase_audit(ngx, alice)
    assert len(entries) == 1 and entries[0]['profiles'] == 1, entries
    assert entries[0]['events'] >= 2000, entries
    assert person_keys(redis_cluster, ngx, alice) == {
        p: [] for p in redis_cluster.masters()}
    assert person_events_by_node(redis_cluster, ngx, alice) == {
        p: 0 for p in redis_cluster.masters()}
    ta.assert_gone(ngx, alice)
    ta.assert_suppressed(ngx, alice, with_phone=False)
    assert ta.idx(ngx, 'user_id', bob.uid)
    log = h.Nginx.read(ngx.error_log)
    assert ('erasure %s finished by the sweep' % entries[0]['receipt']) \
        in log, log[-2000:]
    # the edge refuses her browser (the sweep's receipt, or the sync)
    b = alice.browsers[0]
    r = ngx.hit('url=https://shop.example/x', cookie='cdp_aid=' + b.cookie)
    assert (h.cookie_of(r)[1] or {}).get('max-age') == '0', r.set_cookies()
