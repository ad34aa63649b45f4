"""Identity on Redis Cluster, the store's side: the identify saga of
store/cdp.lua (cdp_xid), driven here step by step as nginx drives it
(ngx_cdp_xid.c), against a real Redis Cluster: the invariants of
store/README.md "Identity on Redis Cluster" under interleaving, replayed
steps, a stopped driver (the sweeper finishes) and a master's kill -9
between steps.  The same through nginx: test_cluster_identity.py."""

import json
import os
import random
import time

import pytest

import cdp_harness as h
import cdp_shard as cs

PRE = 'cdp:'
STORE = os.path.join(os.path.dirname(__file__), '..', '..', 'store',
                     'cdp.lua')


def argv1(shards):
    return '1000000 1 5 5 10000 86400 64800000 %d 1' % shards


class Store:
    """cdp_ingest and cdp_xid called as nginx calls them on a cluster."""

    def __init__(self, cluster, shards=16):
        self.c = cluster
        self.n = shards
        self.argv1 = argv1(shards)
        self.r = cluster.client()
        self.steps = 0

    def tag(self, pid):
        return '{%s}' % cs.shard_tag(cs.shard_of(pid, self.n), self.n)

    def key(self, kind, pid):
        return '%s%s:%s:%s' % (PRE, kind, self.tag(pid), pid)

    def idx(self, t, h_):
        return '%sidx:%s:%s:%s' % (PRE, self.tag(h_), t, h_)

    def ingest(self, aid, entries, key=None):
        """entries: (kind, attrs, payload) of one browser (or of the
        profile key `key`); returns the reply."""
        key = key or self.key('profile', aid)
        stream = PRE + 'events:' + key.split(':')[2]
        args = [self.argv1]
        for k, a, p in entries:
            args += [str(int(time.time() * 1000)), k, a, p]
        return self.r.execute_command('FCALL', 'cdp_ingest',
                                      1 + len(entries), stream,
                                      *([key] * len(entries)), *args)

    def step(self, key, state):
        self.steps += 1
        return self.r.execute_command('FCALL', 'cdp_xid', 1, key,
                                      self.argv1, PRE, state)

    def follow_ups(self, reply):
        f = reply[-1] if reply and isinstance(reply[-1], list) else []
        sagas, fwd, i = [], [], 0
        while i < len(f):
            if f[i] == 'x':
                sagas.append((f[i + 1], f[i + 2]))
                i += 3
            else:
                assert f[i] == 'f', f
                fwd.append(f[i + 1:i + 6])
                i += 6
        return sagas, fwd

    def forward(self, fwd):
        """What nginx does with a forward: the event again, keyed by the
        person's profile (its follow-ups forwarded on)."""
        for key, kind, attrs, payload, _ in fwd:
            pid = key.split(':', 1)[1]
            rep = self.ingest(None, [(kind, attrs, payload)],
                              key=self.key('profile', pid))
            self.forward(self.follow_ups(rep)[1])

    def run(self, saga, limit=400):
        key, state = saga
        for _ in range(limit):
            if not key:
                return
            rep = self.step(key, state)
            key, state = rep[0], rep[1]
        raise AssertionError('a saga of more than %d steps' % limit)

    def hits(self, aid, n):
        rep = self.ingest(aid, [page()] * n)
        sagas, fwd = self.follow_ups(rep)
        assert not sagas
        self.forward(fwd)

    def identify(self, aid, uid='', uidh='', eh='', ph='', traits='{}'):
        """The saga of one identify, not run."""
        rep = self.ingest(aid, [identify(uid, uidh, eh, ph, traits)])
        sagas, _ = self.follow_ups(rep)
        assert len(sagas) == 1, rep
        return sagas[0]

    def sweep(self):
        """The sweeper over every shard, at age 0, until nothing is left."""
        for i in range(self.n):
            key = '%sevents:{%s}' % (PRE, cs.shard_tag(i, self.n))
            for _ in range(50):
                rep = self.step(key, 'sweep:0')
                if not rep[0]:
                    break
                self.run((rep[0], rep[1]))

    def root(self, pid):
        for _ in range(64):
            v = self.r.hget(self.key('profile', pid), 'merged_into')
            if not v:
                return pid
            pid = v
        raise AssertionError('a link cycle from %s' % pid)

    def left(self):
        """Journal entries and transfer records still in the store."""
        out = []
        for p in self.c.masters():
            out += self.c.node_client(p).keys(PRE + 'xj*')
            out += self.c.node_client(p).keys(PRE + 'xfer*')
        return out

    def picture(self, aids, ids):
        """What a person looks like, with profile ids named by order of
        appearance: each browser's person, each identifier's, and each
        person's counters, user id, traits and identifiers."""
        names = {}

        def name(pid):
            if pid not in names:
                names[pid] = 'P%d' % len(names) if pid[0] == 'p' else pid
            return names[pid]

        out = {'browsers': {}, 'ids': {}, 'people': {}}
        people = set()
        for a in aids:
            r = self.root(a)
            out['browsers'][a] = name(r)
            people.add(r)
        for t, x in ids:
            v = self.r.get(self.idx(t, x))
            r = self.root(v) if v else None
            out['ids'][x[:8]] = name(r) if r else None
            if r:
                people.add(r)
        for p in sorted(people, key=name):
            f = self.r.hgetall(self.key('profile', p))
            m = sorted(self.r.smembers(self.key('ids', p)))
            out['people'][name(p)] = {
                'events': f.get('events'), 'page_views': f.get('page_views'),
                'user_id': f.get('user_id'),
                'traits': sorted(k for k in f if k.startswith('trait.')),
                'ids': [x if not x.startswith('profile_id:p') else
                        'profile_id:' + name(x.split(':', 1)[1])
                        for x in m]}
        return out

    def flush(self):
        for p in self.c.masters():
            self.c.node_client(p).flushall()


def page():
    return ('page', '', '{"type":"page"}')


def identify(uid='', uidh='', eh='', ph='', traits='{}'):
    return ('identify', '',
            '\t'.join([uid, uidh, eh, ph, traits, '{"type":"identify"}']))


def aids_in_shards(n, shards, start=1):
    """n browser ids whose profiles are in n different shards (slots)."""
    out, seen, i = [], set(), start
    while len(out) < n:
        a = '%032x' % (i * 2654435761 % (1 << 128))
        s = cs.shard_of(a, shards)
        if s not in seen:
            seen.add(s)
            out.append(a)
        i += 1
    return out


H = lambda c: c * 64          # an identifier's hash


@pytest.fixture
def store(redis_cluster):
    lua = open(STORE).read()
    for p in redis_cluster.masters():
        c = redis_cluster.node_client(p)
        c.flushall()
        c.execute_command('FUNCTION', 'LOAD', 'REPLACE', lua)
    return Store(redis_cluster)


def test_identify_links_the_browser_and_later_hits_are_forwarded(store):
    a = aids_in_shards(1, 16)[0]
    store.hits(a, 3)
    store.run(store.identify(a, 'u-1', H('a'), traits='{"plan":"pro"}'))

    pid = store.root(a)
    assert pid.startswith('p') and pid != a
    assert store.tag(pid) != store.tag(a)       # the saga crossed slots
    p = store.r.hgetall(store.key('profile', pid))
    assert (p['events'], p['page_views'], p['user_id'],
            p['trait.plan']) == ('3', '3', 'u-1', 'pro')
    assert store.r.smembers(store.key('ids', pid)) == {
        'user_id:' + H('a'), 'anonymous_id:' + a}
    assert store.r.get(store.idx('user_id', H('a'))) == pid
    # the identify event is on the person's timeline, in its shard
    assert store.r.llen(store.key('timeline', pid)) == 1
    assert store.left() == []

    # a later hit of the browser: forwarded to the person's shard
    rep = store.ingest(a, [page()])
    sagas, fwd = store.follow_ups(rep)
    assert rep[0] == 0 and fwd and fwd[0][0] == 'profile:' + pid
    store.forward(fwd)
    assert store.r.hget(store.key('profile', pid), 'events') == '4'


def test_twenty_concurrent_identifies_of_one_person(store):
    """20 browsers in 20 slots identify one new person at once, their
    steps interleaved at random: one profile, all 20 linked, the counters
    the hits' sum (issue 19)."""
    for seed in range(4):
        store.flush()
        store.__init__(store.c, shards=64)
        aids = aids_in_shards(20, 64, start=seed * 100 + 1)
        assert len({store.tag(a) for a in aids}) == 20
        for i, a in enumerate(aids):
            store.hits(a, i + 1)
        sagas = [list(store.identify(a, 'u-20', H('b'), H('c')))
                 for a in aids]
        rnd = random.Random(seed)
        while any(s[0] for s in sagas):
            s = rnd.choice([s for s in sagas if s[0]])
            rep = store.step(s[0], s[1])
            s[0], s[1] = rep[0], rep[1]

        roots = {store.root(a) for a in aids}
        assert len(roots) == 1, roots
        pid = roots.pop()
        p = store.r.hgetall(store.key('profile', pid))
        assert p['events'] == str(sum(range(1, 21)))
        assert p['page_views'] == p['events']
        assert store.r.smembers(store.key('ids', pid)) == (
            {'anonymous_id:' + a for a in aids}
            | {'user_id:' + H('b'), 'email:' + H('c')})
        assert store.r.get(store.idx('user_id', H('b'))) == pid
        assert store.r.get(store.idx('email', H('c'))) == pid
        # no other person was left behind
        for p2 in ('p%d' % i for i in range(1, 30)):
            if p2 != pid and store.r.exists(store.key('profile', p2)):
                v = store.r.hgetall(store.key('profile', p2))
                assert 'events' not in v or v['events'] == '0', (p2, v)
        assert store.left() == []


def two_people(store):
    """Browsers a (user id u, 2 hits) and b (e-mail e, 3 hits), then c
    names both: the people merge (u's profile survives)."""
    a, b, c = aids_in_shards(3, 16)
    store.hits(a, 2)
    store.hits(b, 3)
    store.run(store.identify(a, 'u-1', H('1')))
    store.run(store.identify(b, '', '', H('2')))
    store.hits(c, 1)
    return (a, b, c), [('user_id', H('1')), ('email', H('2'))]


def test_two_people_merge_across_slots(store):
    (a, b, c), ids = two_people(store)
    pa, pb = store.root(a), store.root(b)
    assert pa != pb
    store.run(store.identify(c, 'u-1', H('1'), H('2')))

    assert store.root(a) == store.root(b) == store.root(c) == pa
    p = store.r.hgetall(store.key('profile', pa))
    assert p['events'] == '6'
    assert store.r.smembers(store.key('ids', pa)) == {
        'user_id:' + H('1'), 'email:' + H('2'), 'profile_id:' + pb,
        'anonymous_id:' + a, 'anonymous_id:' + b, 'anonymous_id:' + c}
    # the absorbed profile's identifier and browser point at the survivor
    assert store.r.get(store.idx('email', H('2'))) == pa
    assert store.r.hget(store.key('profile', b), 'merged_into') == pa
    log = store.r.xrange(PRE + 'merges:' + store.tag(pa))
    assert [(e[1]['from'], e[1]['reason']) for e in log
            if e[1]['from'] == pb] == [(pb, 'identify')]
    assert store.left() == []


def test_shared_device_moves_the_browser(store):
    a, = aids_in_shards(1, 16)
    store.hits(a, 2)
    store.run(store.identify(a, 'u-1', H('1')))
    p1 = store.root(a)
    store.run(store.identify(a, 'u-2', H('2')))
    p2 = store.root(a)
    assert p2 != p1
    assert 'anonymous_id:' + a not in store.r.smembers(store.key('ids', p1))
    assert 'anonymous_id:' + a in store.r.smembers(store.key('ids', p2))
    assert store.r.hget(store.key('profile', p1), 'events') == '2'
    log = store.r.xrange(PRE + 'merges:' + store.tag(p2))
    assert [e[1]['reason'] for e in log] == ['shared_device']
    assert store.left() == []


def test_crossed_merges_converge_without_a_cycle(store):
    """p1 holds e1 and f1, p2 holds e2 and f2 (e-mails and phones); one
    identify names e1 and f2 (p1 absorbs p2), another at once e2 and f1
    (p2 absorbs p1): every interleaving ends with one person, no link
    cycle, the counters summed once."""
    for seed in range(6):
        store.flush()
        x, y, s1, s2 = aids_in_shards(4, 16, start=seed * 50 + 7)
        store.hits(x, 2)
        store.hits(y, 5)
        store.run(store.identify(x, '', '', H('e'), H('f')))
        store.run(store.identify(y, '', '', H('g'), H('k')))
        p1, p2 = store.root(x), store.root(y)
        sagas = [list(store.identify(s1, '', '', H('e'), H('k'))),
                 list(store.identify(s2, '', '', H('g'), H('f')))]
        rnd = random.Random(seed)
        while any(s[0] for s in sagas):
            s = rnd.choice([s for s in sagas if s[0]])
            rep = store.step(s[0], s[1])
            s[0], s[1] = rep[0], rep[1]
        store.sweep()
        roots = {store.root(v) for v in (x, y, s1, s2)}
        assert len(roots) == 1, (seed, roots)
        r = roots.pop()
        assert r in (p1, p2)
        assert store.r.hget(store.key('profile', r), 'events') == '7'
        assert store.left() == []


def reference(store, scenario):
    store.flush()
    aids, ids, saga = scenario(store)
    store.run(saga)
    return store.picture(aids, ids)


def scenario_merge(store):
    (a, b, c), ids = two_people(store)
    return [a, b, c], ids, store.identify(c, 'u-1', H('1'), H('2'))


def scenario_new(store):
    a, b = aids_in_shards(2, 16, start=40)
    store.hits(a, 2)
    store.run(store.identify(a, '', '', H('3')))
    store.hits(b, 4)
    return [a, b], [('user_id', H('4')), ('email', H('3'))], \
        store.identify(b, 'u-4', H('4'), H('3'), traits='{"n":1}')


@pytest.mark.parametrize('scenario', [scenario_merge, scenario_new])
def test_a_driver_stopped_at_any_step_is_finished_by_the_sweeper(store,
                                                                  scenario):
    """nginx stops (or loses the saga) after k steps: the sweeper finishes
    every saga that wrote its journal; one stopped before that left no
    half-made person, and the site's next identify makes the same.  Also
    each step sent twice (a lost reply): the same."""
    want = reference(store, scenario)
    n = store.steps
    store.steps = 0
    store.flush()
    aids, ids, saga = scenario(store)
    store.steps = 0
    store.run(saga)
    total = store.steps
    assert total >= 5

    for k in range(1, total):
        store.flush()
        aids, ids, saga = scenario(store)
        key, state = saga
        journaled = False
        for _ in range(k):
            rep = store.step(key, state)
            if json.loads(state).get('jd') == 1 or (
                    rep[1] and json.loads(rep[1]).get('fin') == 1):
                journaled = True
            key, state = rep[0], rep[1]
            if not key:
                break
        store.sweep()
        if not journaled:
            # nothing was written that a person needs: identify again
            a, kw = identify_args(scenario)
            store.run(store.identify(a, **kw))
            store.sweep()
        got = store.picture(aids, ids)
        assert got == want, 'stopped after step %d of %d' % (k, total)
        assert store.left() == []

    # every step sent twice
    store.flush()
    aids, ids, saga = scenario(store)
    key, state = saga
    while key:
        store.step(key, state)
        rep = store.step(key, state)
        key, state = rep[0], rep[1]
    assert store.picture(aids, ids) == want
    assert store.left() == []
    assert n > 0


def identify_args(scenario):
    if scenario is scenario_merge:
        return aids_in_shards(3, 16)[2], dict(uid='u-1', uidh=H('1'),
                                              eh=H('2'))
    a, b = aids_in_shards(2, 16, start=40)
    return b, dict(uid='u-4', uidh=H('4'), eh=H('3'), traits='{"n":1}')


def test_a_transfer_whose_journal_is_lost_is_applied_once(store):
    """A failover can lose the survivor's journal while the absorbed
    profile's freeze survived (its own master): the sweeper applies the
    transfer record, once, from the absorbed profile's shard; the saga's
    own apply, late, adds nothing twice."""
    (a, b, c), ids = two_people(store)
    key, state = store.identify(c, 'u-1', H('1'), H('2'))
    pa, pb = store.root(a), store.root(b)
    while key and json.loads(state)['st'] != 'apply':
        rep = store.step(key, state)
        key, state = rep[0], rep[1]
    assert key, 'no apply step'
    assert store.r.exists(store.key('xfer', pb))
    # the journal is lost; the freeze is there
    store.r.delete(store.key('xj', pa))
    store.r.zrem(PRE + 'xjs:' + store.tag(pa), pa)
    store.sweep()
    # b's 3 hits added to a's 2, once
    assert store.r.hget(store.key('profile', pa), 'events') == '5'
    assert not store.r.exists(store.key('xfer', pb))
    store.sweep()
    assert store.r.hget(store.key('profile', pa), 'events') == '5'
    # the saga goes on: b's transfer is not added again, c joins
    store.run((key, state))
    assert store.r.hget(store.key('profile', pa), 'events') == '6'
    assert store.root(c) == pa
    assert store.left() == []


def test_kill_of_a_master_between_steps(redis_cluster_replicas):
    """kill -9 of the master that holds the next step's slot, between two
    steps of a cross-slot merge: after the failover the driver sends the
    step again (as nginx does), and the result is the one without the
    crash.  Each step waits for a replica first (WAIT), as nginx does."""
    c = redis_cluster_replicas
    lua = open(STORE).read()
    for p in c.masters():
        c.node_client(p).execute_command('FUNCTION', 'LOAD', 'REPLACE', lua)
    store = Store(c)
    for p in c.masters():
        c.node_client(p).flushall()
    want = reference(store, scenario_merge)
    for p in c.masters():
        c.node_client(p).flushall()

    aids, ids, saga = scenario_merge(store)
    key, state = saga
    killed = 0
    n = 0
    while key:
        rep = store.step(key, state)
        node = c.master_of_slot(cs.key_slot(key))
        assert c.node_client(node).execute_command('WAIT', 1, 2000) >= 1
        key, state = rep[0], rep[1]
        n += 1
        if key and json.loads(state)['st'] in ('apply', 'member') \
                and killed < 2:
            port = c.master_of_slot(cs.key_slot(key))
            c.kill(port)
            c.wait_failover(port)
            c.restart(port)
            store.r = c.client()
            killed += 1
    assert killed == 2
    assert store.picture(aids, ids) == want
    assert store.left() == []


def api_attrs(t, mid='', uid='', uidh='', eh='', ph='', pu='', pa='',
              traits=''):
    """An api message's attrs (ngx_cdp_wire.h): messageId hash, user id
    hash, type letter, then the TAB-separated rest."""
    return ((mid or '-' * 32) + (uidh or '-' * 64) + t[0]
            + '\t'.join([uid, uidh, eh, ph, pu, pa, traits]))


def api(store, aid, t, **kw):
    """One api message through cdp_ingest; its saga run; the reply."""
    payload = '{"type":"%s"}' % t
    key = store.key('profile', aid)
    rep = store.ingest(None, [('api', api_attrs(t, **kw), payload)], key=key)
    sagas, fwd = store.follow_ups(rep)
    assert not fwd
    for s in sagas:
        store.run(s)
    return rep


def test_api_messages_with_a_user_id_take_a_saga(store):
    a, = aids_in_shards(1, 16, start=300)
    store.hits(a, 2)
    mid = 'a1' * 16
    rep = api(store, a, 'track', mid=mid, uid='u-1', uidh=H('1'))
    assert rep[0] == 1
    pid = store.root(a)
    assert pid.startswith('p')
    p = store.r.hgetall(store.key('profile', pid))
    assert (p['events'], p['user_id']) == ('3', 'u-1')
    # the same messageId again: a duplicate once its saga is done
    rep = api(store, a, 'track', mid=mid, uid='u-1', uidh=H('1'))
    assert rep[6] == 1 and rep[0] == 0
    api(store, a, 'page', mid='a2' * 16, uid='u-1', uidh=H('1'))
    p = store.r.hgetall(store.key('profile', pid))
    assert (p['events'], p['page_views']) == ('4', '3')
    # an anonymous message of the linked browser: a saga too (its person
    # is in another shard), counted on the person
    if store.tag(pid) != store.tag(a):
        api(store, a, 'track', mid='a3' * 16)
        assert store.r.hget(store.key('profile', pid), 'events') == '5'
    assert store.left() == []


def test_api_alias_merges_the_previous_user(store):
    # two user ids may be one person (cdp_identity_limits user_id=2)
    store.argv1 = '1000000 2 5 5 10000 86400 64800000 16 1'
    a, b = aids_in_shards(2, 16, start=400)
    store.hits(a, 2)
    store.hits(b, 3)
    store.run(store.identify(a, 'u-old', H('o')))
    store.run(store.identify(b, 'u-new', H('n')))
    po, pn = store.root(a), store.root(b)
    api(store, '', 'alias', mid='b1' * 16, uid='u-new', uidh=H('n'),
        pu=H('o'))
    assert store.root(a) == pn and store.root(po) == pn
    assert store.r.hget(store.key('profile', pn), 'events') == '5'
    log = store.r.xrange(PRE + 'merges:' + store.tag(pn))
    assert [(e[1]['from'], e[1]['reason'], e[1]['type']) for e in log
            if e[1]['reason'] == 'alias'] == [(po, 'alias', 'user_id')]
    # an alias of a never seen anonymous id: it now leads to the user
    c, = aids_in_shards(1, 16, start=500)
    api(store, '', 'alias', mid='b2' * 16, uid='u-new', uidh=H('n'), pa=c)
    assert store.root(c) == pn
    assert 'anonymous_id:' + c in store.r.smembers(store.key('ids', pn))
    assert store.left() == []


def test_an_api_message_sent_again_during_its_saga_is_stored_once(store):
    """A client's retry while the first saga still runs (its messageId is
    not a duplicate yet): two sagas, one event stored, the other counted
    as a duplicate; a message with another messageId is stored."""
    a, = aids_in_shards(1, 16, start=600)
    store.hits(a, 1)
    mid = 'c1' * 16
    attrs = api_attrs('track', mid=mid, uid='u-r', uidh=H('r'))
    key = store.key('profile', a)
    sagas = []
    for _ in range(2):
        rep = store.ingest(None, [('api', attrs, '{"type":"track"}')],
                           key=key)
        assert rep[6] == 0, rep         # not a duplicate at hand-off
        sagas += store.follow_ups(rep)[0]
    assert len(sagas) == 2
    dups = 0
    # the two driven step by step, interleaved
    (k1, s1), (k2, s2) = sagas
    for _ in range(400):
        if not k1 and not k2:
            break
        if k1:
            r = store.step(k1, s1)
            k1, s1, dups = r[0], r[1], dups + r[7]
        if k2:
            r = store.step(k2, s2)
            k2, s2, dups = r[0], r[1], dups + r[7]
    assert not k1 and not k2
    assert dups == 1
    pid = store.root(a)
    assert store.r.hget(store.key('profile', pid), 'events') == '2'
    tracks = [e for e in store.r.xrange(PRE + 'events:' + store.tag(pid))
              if '"track"' in e[1]['event']]
    assert len(tracks) == 1, tracks
    # a duplicate from now on, at hand-off
    rep = store.ingest(None, [('api', attrs, '{"type":"track"}')], key=key)
    assert rep[6] == 1 and not store.follow_ups(rep)[0]
    api(store, a, 'track', mid='c2' * 16, uid='u-r', uidh=H('r'))
    assert store.r.hget(store.key('profile', pid), 'events') == '3'
    assert store.left() == []
