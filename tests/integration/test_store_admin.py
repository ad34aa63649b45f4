"""store/admin.lua (library cdp_admin_v1) called directly in a real Redis:
resolution, profile, erasure, export, suppression, audit and the segments'
views, on profiles built by hand in the layout of spec/identity.md, sharded
(store/README.md, "Shards"): the prefix is "t", the shards the default 16
unless a test says "t|<N>"."""

import csv
import hashlib
import hmac
import io
import itertools
import json
import os
import re
import secrets
import time

import pytest
import redis

import cdp_harness as h
from cdp_shard import SHARDS_DEFAULT, shard_of, shard_tag


LUA = os.path.join(h.MAIN, 'store', 'admin.lua')
STORE_LUA = os.path.join(h.MAIN, 'store', 'cdp.lua')
P = 't'                         # the key prefix of these tests
N = SHARDS_DEFAULT              # its shards
KEY = secrets.token_bytes(32)   # the identity key (HMAC) of these tests
T0 = 1700000000000              # ms

# the standalone functions (numkeys 0, every shard's keys in one call):
# a standalone Redis only; test_admin_cluster.py compares them with
# cdp_admin_x on a cluster
pytestmark = pytest.mark.standalone


@pytest.fixture
def admin(redis_server):
    c = redis_server.client()
    with open(LUA) as f:
        assert c.function_load(f.read().replace('@REV@', 'test-rev'),
                               replace=True) == 'cdp_admin_v1'
    yield c
    c.close()


@pytest.fixture
def both(admin):
    """admin.lua and the store's own library cdp_v1 (store/cdp.lua)."""
    with open(STORE_LUA) as f:
        assert admin.function_load(f.read().replace('@REV@', 'test'),
                                   replace=True) == 'cdp_v1'
    return admin


def hid(t, v):
    return hmac.new(KEY, ('%s:%s' % (t, v)).encode(), 'sha256').hexdigest()


def aidh(aid):
    return hashlib.sha1(('anonymous_id:' + aid).encode()).hexdigest()


def new_aid(avoid=()):
    """A random anonymous id, in none of the shards of the ids avoid."""
    shards = {shard_of(x) for x in avoid}
    while True:
        aid = secrets.token_hex(16)
        if shard_of(aid) not in shards:
            return aid


def k(*parts):
    """A key that is not sharded: audit, seq:profile, browser:<aid>..."""
    return ':'.join((P,) + parts)


def tag(x, n=N):
    """The hash tag of the shard of a profile id (or h), with braces."""
    return '{%s}' % shard_tag(shard_of(x, n), n)


def kk(kind, x, n=N, prefix=P):
    """<prefix>:<kind>:{<tag(x)>}:<x>: profile, ids, timeline,
    timeline_old."""
    return '%s:%s:%s:%s' % (prefix, kind, tag(x, n), x)


def xk(t, hv, n=N):
    """<prefix>:idx:{<tag(h)>}:<type>:<h>."""
    return '%s:idx:%s:%s:%s' % (P, tag(hv, n), t, hv)


def sk(x, n=N):
    """The event stream of x's shard: where x's timeline ids are."""
    return '%s:events:%s' % (P, tag(x, n))


def shard_key(kind, i, n=N, prefix=P):
    """<prefix>:<kind>:{<tag_i>}: events, merges, consent_log,
    suppressed."""
    return '%s:%s:{%s}' % (prefix, kind, shard_tag(i, n))


def shard_keys(kind, n=N, prefix=P):
    return [shard_key(kind, i, n, prefix) for i in range(n)]


SUPS = shard_keys('suppressed')     # the copies of the suppression set
EXEMPT = SUPS + [k('audit')]        # where hashed identifiers may stay


def by_time(entries):
    """(stream key, id) pairs oldest first, as the library orders them
    (by id, then by stream key for the same id in two shards)."""
    def key(e):
        ms, seq = e[1].split('-')
        return int(ms), int(seq), e[0]
    return sorted(entries, key=key)


# --------------------------------------------------------------------------
# building people in the documented layout

class Person:
    """What was stored about one person, to find every trace later."""

    def __init__(self, pid):
        self.pid = pid
        self.pids = [pid]           # the live pid, then former pids
        self.aids = []
        self.hashed = {}            # type -> h
        self.raw = []               # raw values (user_id, email, phone)
        self.keys = set()
        self.events = []            # (stream key, id), oldest first
        self.merge_ids = []         # (merges key, id)
        self.consent_ids = []       # (consent_log key, id)

    @property
    def event_ids(self):
        return [i for _, i in self.events]

    def tokens(self):
        """Every value that must be gone after erasure, with aidh values
        (allowed in the suppression set and the audit only)."""
        return (self.pids + self.aids + list(self.hashed.values())
                + self.raw, [aidh(a) for a in self.aids])

    def identifiers(self):
        out = ['%s:%s' % (t, v) for t, v in self.hashed.items()]
        out += ['anonymous_id:' + a for a in self.aids]
        return out


def add_events(c, person, n, aids, user_id=None, node=None):
    """n events of the person appended to the event stream of the shard of
    node (their pid by default), and node's timeline (newest first)."""
    node = node or person.pid
    stream = sk(node)
    pipe = c.pipeline(transaction=False)
    for i in range(n):
        ev = {'type': 'track', 'event': 'Viewed %d' % i,
              'anonymousId': aids[i % len(aids)],
              'messageId': 'm-%s-%d' % (secrets.token_hex(4), i),
              'timestamp': T0 + i, 'properties': {'n': i, 'big': 2 ** 53,
                                                  'empty': []}}
        if user_id:
            ev['userId'] = user_id
        pipe.xadd(stream, {'event': json.dumps(ev)})
    ids = pipe.execute()
    person.events += [(stream, i) for i in ids]
    tl = kk('timeline', node)
    for i in range(0, len(ids), 1000):
        c.lpush(tl, *ids[i:i + 1000])
    person.keys.add(tl)
    return ids


# nginx writes each consent choice to a shard's log in turn
_consent_turn = itertools.count()


def consent(c, person, aid, at):
    entry = {'aid': aidh(aid), 'granted': ['analytics'],
             'denied': ['marketing'], 'source': 'form', 'version': '1',
             'timestamp': at}
    key = shard_key('consent_log', next(_consent_turn) % N)
    person.consent_ids.append(
        (key, c.xadd(key, {'entry': json.dumps(entry)})))


def merge(c, person, frm, to, reason, typ, ident, at):
    """A merge-log entry, in the survivor's shard."""
    key = '%s:merges:%s' % (P, tag(to))
    person.merge_ids.append((key, c.xadd(key, {
        'from': frm, 'to': to, 'reason': reason, 'type': typ, 'id': ident,
        'at': str(at)})))


def make_known(c, pid, name, n_events=5, n_aids=2, former=(), chain=False):
    """A known profile: user_id, email, phone, n_aids browsers linked,
    former pids merged in (links; chain=True makes them a chain
    former[-1] -> ... -> former[0] -> pid), events, merges, consent."""
    p = Person(pid)
    user_id = 'user-' + name
    email = name + '@example.com'
    phone = '+4930%07d' % (abs(hash(name)) % 10 ** 7)
    p.raw = [user_id, email, phone]
    p.hashed = {'user_id': hid('user_id', user_id),
                'email': hid('email', email), 'phone': hid('phone', phone)}
    p.aids = [new_aid() for _ in range(n_aids)]
    ts = T0 + 1000

    ids = []
    for t, hv in p.hashed.items():
        c.set(xk(t, hv), pid)
        p.keys.add(xk(t, hv))
        ids.append('%s:%s' % (t, hv))
    for a in p.aids:
        c.hset(kk('profile', a), mapping={'merged_into': pid, 'at': ts})
        p.keys.add(kk('profile', a))
        ids.append('anonymous_id:' + a)
        merge(c, p, a, pid, 'identify', 'user_id', p.hashed['user_id'], ts)
        consent(c, p, a, ts)
    prev = pid
    for f in former:
        target = prev if chain else pid
        c.hset(kk('profile', f), mapping={'merged_into': target, 'at': ts})
        p.keys.add(kk('profile', f))
        ids.append('profile_id:' + f)
        merge(c, p, f, target, 'identify', 'email', p.hashed['email'], ts)
        p.pids.append(f)
        prev = f
    c.sadd(kk('ids', pid), *ids)
    p.keys.add(kk('ids', pid))

    if n_events:
        add_events(c, p, n_events, p.aids or [new_aid()], user_id)
    c.hset(kk('profile', pid), mapping={
        'events': n_events, 'page_views': 0, 'first_seen': T0,
        'last_seen': T0 + n_events, 'user_id': user_id,
        'trait.email': email, 'trait.phone': phone,
        'trait.name': name.title(), 'consent': 'analytics',
        'country': 'DE', 'traits_at': ts})
    p.keys.add(kk('profile', pid))
    return p


def make_anonymous(c, n_events=3, avoid=()):
    aid = new_aid(avoid)
    p = Person(aid)
    p.aids = [aid]
    add_events(c, p, n_events, [aid])
    c.hset(kk('profile', aid), mapping={
        'events': n_events, 'page_views': n_events, 'first_seen': T0,
        'last_seen': T0 + n_events, 'consent': 'analytics'})
    p.keys.add(kk('profile', aid))
    consent(c, p, aid, T0)
    return p


# --------------------------------------------------------------------------
# reading everything back

def snapshot(c):
    """Every key with its content; streams as {entry id: fields}."""
    out = {}
    for key in c.scan_iter(count=1000):
        t = c.type(key)
        if t == 'string':
            out[key] = c.get(key)
        elif t == 'hash':
            out[key] = c.hgetall(key)
        elif t == 'set':
            out[key] = sorted(c.smembers(key))
        elif t == 'list':
            out[key] = c.lrange(key, 0, -1)
        elif t == 'stream':
            out[key] = {i: f for i, f in c.xrange(key)}
        else:
            out[key] = ('?', t)
    return out


def token_re(tokens):
    return re.compile('(?<![0-9A-Za-z])(%s)(?![0-9A-Za-z])'
                      % '|'.join(re.escape(t) for t in tokens))


def traces(snap, person):
    """Where the person still appears: key names and contents, aidh values
    allowed in the suppression set and the audit only (raw values never)."""
    plain, hashed = person.tokens()
    anywhere = token_re(plain)
    outside = token_re(plain + hashed)
    found = []
    for key, content in snap.items():
        text = json.dumps(content)
        if key in EXEMPT:
            rx = anywhere
            # a hash h in the suppression set/audit is expected, by design
            # (and the pids asked for, internal ids that name nobody once
            # erased)
            text = re.sub(r'(user_id|email|phone):[0-9a-f]{64}'
                          r'|profile_id:p[0-9]+', '', text)
        else:
            rx = outside
        if outside.search(key):
            found.append(('key', key))
        m = rx.search(text)
        if m:
            found.append((key, m.group(0)))
    return found


def expected_after(before, *people):
    """The snapshot once the people are erased: their keys and stream
    entries gone, everything else unchanged (suppressed/audit apart)."""
    gone = set()
    drops = {}          # stream key -> the entry ids that go
    for p in people:
        gone |= p.keys
        for key, i in p.events + p.merge_ids + p.consent_ids:
            drops.setdefault(key, set()).add(i)
    out = {}
    for key, content in before.items():
        if key in gone or key in EXEMPT:
            continue
        drop = drops.get(key)
        if drop is not None:
            # (a stream XDEL empties stays, empty)
            content = {i: f for i, f in content.items() if i not in drop}
        out[key] = content
    return out


def without(snap, *keys):
    return {key: v for key, v in snap.items() if key not in keys}


def erase(c, *ids, receipt='r-1', role='privacy', now=T0 + 5000):
    return json.loads(c.fcall('cdp_erase', 0, P, receipt, role, str(now),
                              *ids))


def export(c, *ids, receipt='x-1', role='privacy', now=T0 + 5000):
    return json.loads(c.fcall('cdp_export', 0, P, receipt, role, str(now),
                              *ids))


def audit_entries(c):
    return [f for _, f in c.xrange(k('audit'))]


def suppressed_copies(c, n=N, prefix=P):
    """The copies of the suppression set, which must all be equal."""
    copies = [c.smembers(key) for key in shard_keys('suppressed', n, prefix)]
    assert all(s == copies[0] for s in copies), copies
    return copies[0]


def check_erased(c, before, person, *others):
    after = snapshot(c)
    assert traces(after, person) == []
    assert without(after, *EXEMPT) == expected_after(before, person)
    for o in others:
        assert traces(after, o) != [] or not o.keys
    sup = suppressed_copies(c)
    for t, hv in person.hashed.items():
        assert '%s:%s' % (t, hv) in sup
    for a in person.aids:
        assert 'anonymous_id:' + aidh(a) in sup
    return after


@pytest.fixture
def world(admin):
    """Two known people (alice with 7 events, 2 browsers, bob untouched
    by every test) and an anonymous browser, their events interleaved:
    alice (p101) and bob (p201) share shard 7's stream, the anonymous
    browser is in another shard."""
    alice = make_known(admin, 'p101', 'alice', n_events=7)
    bob = make_known(admin, 'p201', 'bob', n_events=4, n_aids=1)
    anon = make_anonymous(admin, avoid=['p101'])    # another shard
    add_events(admin, alice, 2, alice.aids, 'user-alice')
    admin.set(k('seq', 'profile'), '201')
    admin.hset(shard_key('agg', 3) + ':2023-11-14', 'page|DE', 3)
    return admin, alice, bob, anon


# --------------------------------------------------------------------------
# version, flags, resolution, profile

def test_version_and_flags(admin):
    assert admin.fcall_ro('cdp_admin_version', 0) == 'test-rev'
    for fn in ('cdp_resolve', 'cdp_profile', 'cdp_audit', 'cdp_suppressed'):
        with pytest.raises(redis.ResponseError, match='cdp_'):
            admin.fcall_ro(fn, 0)       # runs read-only, fails on its args
    for fn in ('cdp_read', 'cdp_erase', 'cdp_export', 'cdp_unsuppress'):
        with pytest.raises(redis.ResponseError, match='write flag'):
            admin.fcall_ro(fn, 0, P, 'r', 'privacy', '1', 'profile_id:p1')


def test_resolve(world):
    c, alice, bob, anon = world
    r = lambda ident: c.fcall_ro('cdp_resolve', 0, P, ident)  # noqa: E731
    for t, hv in alice.hashed.items():
        assert r('%s:%s' % (t, hv)) == 'p101'
    for a in alice.aids:
        assert r('anonymous_id:' + a) == 'p101'
    assert r('profile_id:p101') == 'p101'
    assert r('email:' + bob.hashed['email']) == 'p201'
    assert r('anonymous_id:' + anon.pid) == anon.pid
    assert r('profile_id:' + anon.pid) == anon.pid
    assert r('email:' + hid('email', 'nobody@example.com')) is None
    assert r('anonymous_id:' + new_aid()) is None
    assert r('profile_id:p999') is None


def test_resolve_follows_a_chain_of_links(admin):
    make_known(admin, 'p1', 'carol', former=['p2', 'p3', 'p4'], chain=True)
    for pid in ('p1', 'p2', 'p3', 'p4'):
        assert admin.fcall_ro('cdp_resolve', 0, P, 'profile_id:' + pid) == \
            'p1'
    # the idx names a former pid (not yet re-pointed): followed too
    admin.set(xk('email', 'e' * 64), 'p4')
    assert admin.fcall_ro('cdp_resolve', 0, P, 'email:' + 'e' * 64) == 'p1'


def test_resolve_detects_a_cycle(admin):
    admin.hset(kk('profile', 'p7'), mapping={'merged_into': 'p8', 'at': 1})
    admin.hset(kk('profile', 'p8'), mapping={'merged_into': 'p7', 'at': 1})
    admin.set(xk('email', 'a' * 64), 'p7')
    for ident in ('profile_id:p7', 'email:' + 'a' * 64):
        with pytest.raises(redis.ResponseError,
                           match=r'^cdp_resolve: more than 64 links'):
            admin.fcall_ro('cdp_resolve', 0, P, ident)
    # 64 hops is fine, 65 is not
    for i in range(1, 65):
        admin.hset(kk('profile', 'p%d' % (1000 + i)),
                   mapping={'merged_into': 'p%d' % (1000 + i + 1)})
    admin.hset(kk('profile', 'p1065'), 'events', 1)
    assert admin.fcall_ro('cdp_resolve', 0, P, 'profile_id:p1001') == 'p1065'
    admin.hset(kk('profile', 'p1000'), mapping={'merged_into': 'p1001'})
    with pytest.raises(redis.ResponseError, match='more than 64 links'):
        admin.fcall_ro('cdp_resolve', 0, P, 'profile_id:p1000')


def test_profile(world):
    c, alice, bob, anon = world
    doc = json.loads(c.fcall_ro('cdp_profile', 0, P,
                                'anonymous_id:' + alice.aids[1], '5'))
    assert doc['profile_id'] == 'p101'
    assert doc['fields'] == c.hgetall(kk('profile', 'p101'))
    assert doc['identifiers'] == sorted(alice.identifiers())
    newest = list(reversed(alice.event_ids))
    assert [e['id'] for e in doc['recent_events']] == newest[:5]
    first = json.loads(c.xrange(sk('p101'), newest[0], newest[0])[0][1]
                       ['event'])
    assert doc['recent_events'][0]['event'] == first
    # stored JSON kept as it is: big integers and empty arrays
    assert first['properties']['big'] == 2 ** 53
    assert first['properties']['empty'] == []

    # events no longer in the stream are skipped
    c.xdel(sk('p101'), newest[1], newest[3])
    doc = json.loads(c.fcall_ro('cdp_profile', 0, P, 'profile_id:p101', '3'))
    assert [e['id'] for e in doc['recent_events']] == \
        [newest[0], newest[2], newest[4]]
    doc = json.loads(c.fcall_ro('cdp_profile', 0, P, 'profile_id:p101',
                                '1000'))
    assert len(doc['recent_events']) == 7
    doc = json.loads(c.fcall_ro('cdp_profile', 0, P, 'profile_id:p101', '0'))
    assert doc['recent_events'] == []

    doc = json.loads(c.fcall_ro('cdp_profile', 0, P,
                                'anonymous_id:' + anon.pid, '10'))
    assert doc['profile_id'] == anon.pid
    assert doc['identifiers'] == ['anonymous_id:' + anon.pid]
    assert len(doc['recent_events']) == 3
    assert c.fcall_ro('cdp_profile', 0, P, 'profile_id:p999', '3') is None
    with pytest.raises(redis.ResponseError, match='cdp_profile: bad recent'):
        c.fcall_ro('cdp_profile', 0, P, 'profile_id:p101', '1001')


def test_profile_recent_events_of_every_node(world):
    """A merge leaves the absorbed profile's events in its shard: the
    recent events are the newest of all the person's nodes, merged."""
    c, alice, bob, anon = world
    # a browser linked to alice, in another shard
    link = new_aid(avoid=['p101', anon.pid])     # an empty stream
    c.hset(kk('profile', link), mapping={'merged_into': 'p101', 'at': 1})
    c.sadd(kk('ids', 'p101'), 'anonymous_id:' + link)
    # the link's first_event (older than anything) and timeline, in its
    # own shard's stream
    first = c.xadd(sk(link), {'event': json.dumps({'n': 'first'})},
                   id='1-1')
    alice.events.insert(0, (sk(link), first))
    c.hset(kk('profile', link), 'first_event', first)
    newer = add_events(c, alice, 2, [link], node=link)
    newest = list(reversed(alice.event_ids))
    assert newest[:2] == list(reversed(newer))

    doc = json.loads(c.fcall_ro('cdp_profile', 0, P, 'profile_id:p101', '5'))
    assert [e['id'] for e in doc['recent_events']] == newest[:5]
    doc = json.loads(c.fcall_ro('cdp_profile', 0, P,
                                'anonymous_id:' + link, '1000'))
    assert [e['id'] for e in doc['recent_events']] == newest
    assert doc['recent_events'][-1]['event'] == {'n': 'first'}
    # an id of the link's shard is not looked up in the live profile's
    c.xdel(sk(link), newer[1])
    doc = json.loads(c.fcall_ro('cdp_profile', 0, P, 'profile_id:p101', '2'))
    assert [e['id'] for e in doc['recent_events']] == [newer[0], newest[2]]


def test_read_is_cdp_profile_audited(world):
    c, alice, bob, anon = world
    ident = 'anonymous_id:' + alice.aids[1]
    doc = json.loads(c.fcall('cdp_read', 0, P, 'r-1', 'marketer', '1700',
                             ident, '5'))
    assert doc.pop('receipt') == 'r-1'
    assert doc == json.loads(c.fcall_ro('cdp_profile', 0, P, ident, '5'))
    assert c.fcall('cdp_read', 0, P, 'r-2', 'privacy', '1701',
                   'profile_id:p999', '3') is None
    entries = [f for _, f in c.xrange(k('audit'))]
    assert [(e['op'], e['receipt'], e['role'], e['profiles'], e['events'],
             e['identifiers'], e['at']) for e in entries] == [
        ('read', 'r-1', 'marketer', '1', '5',
         str(len(doc['identifiers'])), '1700'),
        ('read', 'r-2', 'privacy', '0', '0', '0', '1701')], entries
    # the browser's id only as its hash
    assert alice.aids[1] not in entries[0]['ids'], entries[0]

    # a bad call writes nothing
    for args in (('r-3', 'marketer', '1702', ident, '1001'),
                 ('r-3', 'marketer', '1702', ident),
                 ('r-3', 'marketer', '1702', ident, ident, '5'),
                 ('r 3', 'marketer', '1702', ident, '5'),
                 ('r-3', 'marketer', 'now', ident, '5'),
                 ('r-3', 'marketer', '1702', 'email:raw@example.com', '5')):
        with pytest.raises(redis.ResponseError, match='cdp_read: '):
            c.fcall('cdp_read', 0, P, *args)
    assert c.xlen(k('audit')) == 2


# --------------------------------------------------------------------------
# erasure

@pytest.mark.parametrize('by', ['email', 'user_id', 'phone', 'aid',
                                'profile_id'])
def test_erase_known_person(world, by):
    c, alice, bob, anon = world
    before = snapshot(c)
    ident = {'email': 'email:' + alice.hashed['email'],
             'user_id': 'user_id:' + alice.hashed['user_id'],
             'phone': 'phone:' + alice.hashed['phone'],
             'aid': 'anonymous_id:' + alice.aids[1],
             'profile_id': 'profile_id:p101'}[by]
    t = time.monotonic()
    r = erase(c, ident)
    took = time.monotonic() - t
    assert r['receipt'] == 'r-1'
    assert r['profiles'] == 1
    assert r['identifiers'] == 5
    assert r['events'] == 9
    assert r['merges'] == 2 and r['consent_log'] == 2
    assert r['suppressed'] == 5
    assert 0 <= r['took_us'] <= took * 1e6 + 1000
    check_erased(c, before, alice, bob, anon)
    assert c.fcall_ro('cdp_resolve', 0, P, ident) is None
    # bob and the anonymous browser are intact (check_erased compared every
    # key), and still resolve
    assert c.fcall_ro('cdp_resolve', 0, P,
                      'email:' + bob.hashed['email']) == 'p201'

    # a second erasure finds nothing and changes nothing but the audit
    again = snapshot(c)
    r = erase(c, ident, receipt='r-2')
    assert (r['profiles'], r['events']) == (0, 0)
    assert without(snapshot(c), k('audit')) == without(again, k('audit'))


def test_erase_anonymous_profile(world):
    c, alice, bob, anon = world
    before = snapshot(c)
    r = erase(c, 'anonymous_id:' + anon.pid)
    assert (r['profiles'], r['identifiers'], r['events'],
            r['consent_log'], r['suppressed']) == (1, 1, 3, 1, 1)
    check_erased(c, before, anon, alice, bob)


def test_erase_person_who_absorbed_merges(admin):
    # p1 <- p2 <- p3 <- p4 (a chain of links) plus p5 -> p1 directly
    carol = make_known(admin, 'p1', 'carol', n_events=6,
                       former=['p2', 'p3', 'p4'], chain=True)
    admin.hset(kk('profile', 'p5'), mapping={'merged_into': 'p1', 'at': 1})
    admin.sadd(kk('ids', 'p1'), 'profile_id:p5')
    carol.keys.add(kk('profile', 'p5'))
    carol.pids.append('p5')
    merge(admin, carol, 'p5', 'p1', 'alias', 'user_id',
          carol.hashed['user_id'], 1)
    # a merge leaves the absorbed profile's events in its shard: p3 kept
    # its timeline (events:{<tag(p3)>}), p2 its first_event on its link
    add_events(admin, carol, 2, carol.aids, node='p3')
    admin.rpush(kk('timeline', 'p3'), carol.event_ids[0])   # not in p3's
    p2_first = add_events(admin, carol, 1, carol.aids, node='p2')[0]
    admin.delete(kk('timeline', 'p2'))
    admin.hset(kk('profile', 'p2'), 'first_event', p2_first)
    carol.keys.discard(kk('timeline', 'p2'))
    assert len({sk(x) for x in ('p1', 'p2', 'p3')}) == 3
    # a leftover a merge should have deleted
    admin.sadd(kk('ids', 'p3'), 'email:' + carol.hashed['email'])
    carol.keys |= {kk('ids', 'p3'), kk('timeline', 'p3')}
    dave = make_known(admin, 'p9', 'dave', former=['p8'])
    before = snapshot(admin)

    r = erase(admin, 'profile_id:p4')
    assert r['profiles'] == 1 and r['events'] == 6 + 2 + 1
    assert r['identifiers'] == 9       # 3 hashed, 2 aids, 4 former pids
    check_erased(admin, before, carol, dave)
    for pid in ('p1', 'p2', 'p3', 'p4', 'p5'):
        assert admin.exists(kk('profile', pid), kk('ids', pid),
                            kk('timeline', pid)) == 0
    assert admin.fcall_ro('cdp_resolve', 0, P, 'profile_id:p8') == 'p9'


def test_erase_several_people_at_once(world):
    c, alice, bob, anon = world
    before = snapshot(c)
    r = erase(c, 'email:' + alice.hashed['email'],
              'anonymous_id:' + anon.pid, 'profile_id:p101',
              'user_id:' + alice.hashed['user_id'])
    assert r['profiles'] == 2 and r['events'] == 12
    after = snapshot(c)
    assert traces(after, alice) == [] and traces(after, anon) == []
    assert without(after, *EXEMPT) == expected_after(before, alice, anon)


def test_erase_unknown_people_still_suppresses(world):
    c, alice, bob, anon = world
    aid = new_aid()
    # a browser we hold no profile of, with a consent choice on record
    stranger = Person(aid)
    stranger.aids = [aid]
    consent(c, stranger, aid, T0)
    he = hid('email', 'stranger@example.com')
    hp = hid('phone', '+15550100')
    before = snapshot(c)
    r = erase(c, 'email:' + he, 'phone:' + hp, 'anonymous_id:' + aid,
              'profile_id:p555')
    assert (r['profiles'], r['identifiers'], r['events'],
            r['consent_log'], r['suppressed']) == (0, 0, 0, 1, 3)
    assert suppressed_copies(c) == {
        'email:' + he, 'phone:' + hp, 'anonymous_id:' + aidh(aid)}
    assert without(snapshot(c), *EXEMPT) == expected_after(before, stranger)


def test_erase_removes_dangling_idx_and_links(admin):
    # an idx naming a profile that is gone, a link to nowhere
    admin.set(xk('email', 'b' * 64), 'p42')
    aid = new_aid()
    admin.hset(kk('profile', aid), mapping={'merged_into': 'p43', 'at': 1})
    r = erase(admin, 'email:' + 'b' * 64, 'anonymous_id:' + aid)
    assert r['profiles'] == 0 and r['suppressed'] == 2
    assert sorted(admin.keys('*')) == sorted(EXEMPT)


def test_erase_removes_legacy_browser_records(world):
    # the per-browser records of the layout before identity profiles
    c, alice, bob, anon = world
    lone = new_aid()
    for a in (alice.aids[0], lone, bob.aids[0]):
        c.hset(k('browser', a), mapping={'events': 1, 'first_seen': T0})
    erase(c, 'email:' + alice.hashed['email'], 'anonymous_id:' + lone)
    assert c.exists(k('browser', alice.aids[0]), k('browser', lone)) == 0
    assert c.exists(k('browser', bob.aids[0])) == 1


def test_erase_audit_entry(world):
    c, alice, bob, anon = world
    erase(c, 'email:' + alice.hashed['email'],
          'anonymous_id:' + alice.aids[0], 'profile_id:' + anon.pid,
          receipt='rcpt-7', role='dpo', now=T0 + 77)
    (entry,) = audit_entries(c)
    assert set(entry) == {'receipt', 'op', 'role', 'ids', 'profiles',
                          'identifiers', 'events', 'at', 'took_us'}
    assert entry['receipt'] == 'rcpt-7' and entry['op'] == 'erase'
    assert entry['role'] == 'dpo' and entry['at'] == str(T0 + 77)
    assert entry['ids'].split(',') == [
        'email:' + alice.hashed['email'],
        'anonymous_id:' + aidh(alice.aids[0]),
        'profile_id:' + aidh(anon.pid)]
    assert (entry['profiles'], entry['identifiers'], entry['events']) == \
        ('2', '6', '12')
    assert int(entry['took_us']) >= 0
    # no raw personal data in the audit, ever
    text = json.dumps(c.xrange(k('audit')))
    for raw in alice.aids + [anon.pid] + alice.raw:
        assert raw not in text

    got = json.loads(c.fcall_ro('cdp_audit', 0, P, '0', '10'))
    assert len(got) == 1 and got[0]['receipt'] == 'rcpt-7'
    assert got[0]['ids'] == entry['ids'].split(',')
    assert got[0]['events'] == 12 and got[0]['at'] == T0 + 77
    assert got[0]['id'] == c.xrange(k('audit'))[0][0]


def test_audit_since_and_count(admin):
    for i in range(5):
        erase(admin, 'profile_id:p%d' % i, receipt='r%d' % i)
    ids = [i for i, _ in admin.xrange(k('audit'))]
    got = json.loads(admin.fcall_ro('cdp_audit', 0, P, '0', '3'))
    assert [g['receipt'] for g in got] == ['r0', 'r1', 'r2']
    since = ids[-1].split('-')[0]
    got = json.loads(admin.fcall_ro('cdp_audit', 0, P, since, '1000'))
    assert got and got[-1]['receipt'] == 'r4'
    assert admin.fcall_ro('cdp_audit', 0, P, '99999999999999', '5') == '[]'
    for bad in (('x', '5'), ('0', '0'), ('0', '1001'), ('0', '-1')):
        with pytest.raises(redis.ResponseError, match='^cdp_audit: bad'):
            admin.fcall_ro('cdp_audit', 0, P, *bad)


# --------------------------------------------------------------------------
# export

def test_export(world):
    c, alice, bob, anon = world
    before = snapshot(c)
    doc = export(c, 'phone:' + alice.hashed['phone'],
                 'anonymous_id:' + alice.aids[0],
                 'email:' + hid('email', 'nobody@example.com'),
                 receipt='x-9')
    assert doc['receipt'] == 'x-9'
    (p,) = doc['profiles']
    assert p['profile_id'] == 'p101'
    assert p['fields'] == c.hgetall(kk('profile', 'p101'))
    assert p['identifiers'] == sorted(alice.identifiers())
    # every event, oldest first, as stored
    assert [e['id'] for e in p['events']] == alice.event_ids
    stream = dict(c.xrange(sk('p101')))
    for e in p['events']:
        assert e['event'] == json.loads(stream[e['id']]['event'])
    # the merges (of the survivor's shard) and the consent choices (of
    # every shard), oldest first
    merges = {(key, i): f for key in shard_keys('merges')
              for i, f in c.xrange(key)}
    assert p['merges'] == [merges[e] for e in by_time(alice.merge_ids)]
    assert [e['id'] for e in p['consent_log']] == \
        [i for _, i in by_time(alice.consent_ids)]
    assert len({key for key, _ in alice.consent_ids}) == 2
    assert {e['entry']['aid'] for e in p['consent_log']} == \
        {aidh(a) for a in alice.aids}

    # it wrote its audit entry and nothing else
    assert without(snapshot(c), k('audit')) == before
    (entry,) = audit_entries(c)
    assert (entry['op'], entry['receipt'], entry['profiles'],
            entry['identifiers'], entry['events']) == \
        ('export', 'x-9', '1', '5', '9')
    assert alice.aids[0] not in json.dumps(entry)

    # events trimmed from the stream are left out; unknown: no profile
    c.xdel(sk('p101'), alice.event_ids[0])
    doc = export(c, 'profile_id:p101', 'anonymous_id:' + anon.pid)
    assert [len(p['events']) for p in doc['profiles']] == [8, 3]
    assert doc['profiles'][1]['merges'] == []
    assert export(c, 'profile_id:p999') == {'receipt': 'x-1',
                                            'profiles': []}


# --------------------------------------------------------------------------
# suppression

def test_suppressed_and_unsuppress(world):
    c, alice, bob, anon = world
    erase(c, 'email:' + alice.hashed['email'])
    q = ['email:' + alice.hashed['email'], 'anonymous_id:' + alice.aids[1],
         'user_id:' + bob.hashed['user_id'], 'anonymous_id:' + anon.pid,
         'phone:' + alice.hashed['phone']]
    assert c.fcall_ro('cdp_suppressed', 0, P, *q) == [1, 1, 0, 0, 1]

    r = json.loads(c.fcall('cdp_unsuppress', 0, P, 'u-1', 'privacy',
                           str(T0), 'anonymous_id:' + alice.aids[1],
                           'email:' + alice.hashed['email'],
                           'user_id:' + bob.hashed['user_id']))
    assert r == {'receipt': 'u-1', 'removed': 2}
    assert c.fcall_ro('cdp_suppressed', 0, P, *q) == [0, 0, 0, 0, 1]
    entry = audit_entries(c)[-1]
    assert (entry['op'], entry['identifiers']) == ('unsuppress', '2')
    assert entry['ids'].split(',')[0] == 'anonymous_id:' + aidh(alice.aids[1])
    assert alice.aids[1] not in json.dumps(entry)

    with pytest.raises(redis.ResponseError, match='identifier 1: unknown'):
        c.fcall_ro('cdp_suppressed', 0, P, 'profile_id:p1')
    with pytest.raises(redis.ResponseError, match='identifier 1: unknown'):
        c.fcall('cdp_unsuppress', 0, P, 'u', 'privacy', '1', 'profile_id:p1')


def test_suppression_copies_of_4_shards(admin):
    """"t|4": a store of 4 shards, each with its copy of the suppression
    set; cdp_suppressed reads shard 0's, erase and unsuppress write all."""
    n, pfx = 4, P + '|4'
    hv, aid = hid('email', 'four@example.com'), new_aid()
    # a person of the 4-shard layout: p1 with an email, a browser linked
    e1 = admin.xadd('%s:events:%s' % (P, tag('p1', n)), {'event': '{}'})
    e2 = admin.xadd('%s:events:%s' % (P, tag(aid, n)), {'event': '{}'})
    admin.hset(kk('profile', 'p1', n), mapping={'events': 2,
                                                'first_event': e1})
    admin.sadd(kk('ids', 'p1', n), 'email:' + hv, 'anonymous_id:' + aid)
    admin.set(xk('email', hv, n), 'p1')
    admin.hset(kk('profile', aid, n), mapping={'merged_into': 'p1', 'at': 1,
                                               'first_event': e2})
    assert admin.fcall_ro('cdp_resolve', 0, pfx, 'email:' + hv) == 'p1'
    assert admin.fcall_ro('cdp_resolve', 0, P, 'email:' + hv) is None

    r = json.loads(admin.fcall('cdp_erase', 0, pfx, 'r-4', 'privacy', '1',
                               'email:' + hv))
    assert (r['profiles'], r['identifiers'], r['events'],
            r['suppressed']) == (1, 2, 2, 2)
    want = {'email:' + hv, 'anonymous_id:' + aidh(aid)}
    assert suppressed_copies(admin, n) == want
    copies = shard_keys('suppressed', n)
    assert set(admin.keys('*')) == set(
        copies + [k('audit')] + ['%s:events:%s' % (P, tag(x, n))
                                 for x in ('p1', aid)])
    q = ['email:' + hv, 'anonymous_id:' + aid, 'phone:' + 'c' * 64]
    assert admin.fcall_ro('cdp_suppressed', 0, pfx, *q) == [1, 1, 0]
    # 16 shards: other keys, nothing suppressed there
    assert admin.fcall_ro('cdp_suppressed', 0, P, *q) == [0, 0, 0]

    # reads are shard 0's copy
    admin.srem(copies[0], 'email:' + hv)
    assert admin.fcall_ro('cdp_suppressed', 0, pfx, *q) == [0, 1, 0]
    # unsuppress: from every copy, counting those that were in any
    r = json.loads(admin.fcall('cdp_unsuppress', 0, pfx, 'u-4', 'privacy',
                               '2', *q))
    assert r == {'receipt': 'u-4', 'removed': 2}
    assert suppressed_copies(admin, n) == set()
    assert admin.fcall_ro('cdp_suppressed', 0, pfx, *q) == [0, 0, 0]
    assert [e['op'] for e in audit_entries(admin)] == ['erase', 'unsuppress']


def test_prefix_with_shards(world):
    c, alice, bob, anon = world
    ident = 'email:' + alice.hashed['email']
    # "t" is "t|16"
    assert c.fcall_ro('cdp_resolve', 0, P + '|16', ident) == 'p101'
    assert c.fcall_ro('cdp_profile', 0, P + '|16', ident, '3') == \
        c.fcall_ro('cdp_profile', 0, P, ident, '3')
    # the last "|" followed by digits ends the prefix
    assert c.fcall_ro('cdp_resolve', 0, P + '|8', ident) is None
    for fn, args in (('cdp_resolve', [ident]),
                     ('cdp_profile', [ident, '3']),
                     ('cdp_suppressed', [ident]),
                     ('cdp_audit', ['0', '10'])):
        for bad in (P + '|0', P + '|1025', P + '|00000', '|4', 'a b|4'):
            with pytest.raises(redis.ResponseError, match='^' + fn + ': '):
                c.fcall_ro(fn, 0, bad, *args)
    assert json.loads(c.fcall_ro('cdp_audit', 0, P + '|1024', '0', '10')) \
        == []


# --------------------------------------------------------------------------
# bad calls write nothing

H = 'c' * 64
A = 'd' * 32
BAD = [
    ([], 'want ARGV'),
    ([P, 'r', 'privacy', '1'], 'want ARGV'),
    (['', 'r', 'privacy', '1', 'email:' + H], 'bad prefix'),
    ([P, '', 'privacy', '1', 'email:' + H], 'bad receipt'),
    ([P, 'r x', 'privacy', '1', 'email:' + H], 'bad receipt'),
    ([P, 'r' * 129, 'privacy', '1', 'email:' + H], 'bad receipt'),
    ([P, 'r', '', '1', 'email:' + H], 'bad role'),
    ([P, 'r', 'privacy', 'now', 'email:' + H], 'bad now_ms'),
    ([P, 'r', 'privacy', '-1', 'email:' + H], 'bad now_ms'),
    ([P, 'r', 'privacy', '1', 'email:' + H, 'fax:' + H],
     'identifier 2: unknown type'),
    ([P, 'r', 'privacy', '1', 'alice@example.com'],
     'identifier 1: unknown type'),
    ([P, 'r', 'privacy', '1', 'email:' + H.upper()],
     'identifier 1: email value is not 64 lowercase hex'),
    ([P, 'r', 'privacy', '1', 'user_id:alice'], 'user_id value is not'),
    ([P, 'r', 'privacy', '1', 'anonymous_id:' + A + '0'],
     'anonymous_id value is not'),
    ([P, 'r', 'privacy', '1', 'profile_id:q1'], 'profile_id value is not'),
    ([P, 'r', 'privacy', '1', 'profile_id:p1:x'], 'profile_id value is not'),
    ([P, 'r', 'privacy', '1'] + ['email:%064x' % i for i in range(101)],
     'at most 100 identifiers'),
    ([P + '|0', 'r', 'privacy', '1', 'email:' + H], 'bad prefix'),
    ([P + '|1025', 'r', 'privacy', '1', 'email:' + H], 'bad prefix'),
    (['|16', 'r', 'privacy', '1', 'email:' + H], 'bad prefix'),
    (['t x|16', 'r', 'privacy', '1', 'email:' + H], 'bad prefix'),
]


@pytest.mark.parametrize('fn', ['cdp_erase', 'cdp_export',
                                'cdp_unsuppress'])
@pytest.mark.parametrize('args,msg', BAD)
def test_bad_arguments_write_nothing(world, fn, args, msg):
    c = world[0]
    before = snapshot(c)
    with pytest.raises(redis.ResponseError) as e:
        c.fcall(fn, 0, *args)
    if fn == 'cdp_unsuppress' and 'profile_id' in msg:
        msg = 'unknown type'
    assert str(e.value).startswith(fn + ': '), e.value
    assert msg in str(e.value)
    assert H not in str(e.value) and 'alice' not in str(e.value)
    assert snapshot(c) == before


def test_keys_are_refused(world):
    c = world[0]
    with pytest.raises(redis.ResponseError, match='cdp_erase: want 0 keys'):
        c.fcall('cdp_erase', 1, sk('p101'), P, 'r', 'privacy', '1',
                'profile_id:p101')


def test_cycle_and_wrong_types_write_nothing(world):
    c, alice, bob, anon = world
    c.hset(kk('profile', 'p7'), mapping={'merged_into': 'p8', 'at': 1})
    c.hset(kk('profile', 'p8'), mapping={'merged_into': 'p7', 'at': 1})
    before = snapshot(c)
    with pytest.raises(redis.ResponseError,
                       match='^cdp_erase: more than 64 links'):
        erase(c, 'email:' + alice.hashed['email'], 'profile_id:p8')
    with pytest.raises(redis.ResponseError,
                       match='^cdp_export: more than 64 links'):
        export(c, 'profile_id:p7')
    c.hset(kk('profile', 'p6'), mapping={'merged_into': 'x:y', 'at': 1})
    with pytest.raises(redis.ResponseError, match='malformed merged_into'):
        erase(c, 'email:' + alice.hashed['email'], 'profile_id:p6')
    c.delete(kk('profile', 'p6'))
    assert snapshot(c) == before

    # any shard's copy of the suppression set
    c.set(SUPS[5], 'oops')
    before = snapshot(c)
    with pytest.raises(redis.ResponseError,
                       match=re.escape(SUPS[5] + ' is a string, not a set')):
        erase(c, 'email:' + alice.hashed['email'])
    with pytest.raises(redis.ResponseError,
                       match=re.escape(SUPS[5] + ' is a string, not a set')):
        c.fcall('cdp_unsuppress', 0, P, 'u', 'privacy', '1',
                'email:' + alice.hashed['email'])
    assert snapshot(c) == before
    c.delete(SUPS[5])
    # any shard's merge log, consent log or event stream
    for key in (shard_key('merges', 9), shard_key('consent_log', 15),
                shard_key('events', 0)):
        c.set(key, 'oops')
        before = snapshot(c)
        for fn in (erase, export):
            with pytest.raises(redis.ResponseError,
                               match=re.escape(key + ' is a string')):
                fn(c, 'profile_id:p201')
        assert snapshot(c) == before
        c.delete(key)
    # a person whose ids set is of the wrong type: refused while reading
    c.delete(kk('ids', 'p201'))
    c.set(kk('ids', 'p201'), 'oops')
    before = snapshot(c)
    with pytest.raises(redis.ResponseError):
        erase(c, 'email:' + alice.hashed['email'],
              'email:' + bob.hashed['email'])
    assert snapshot(c) == before


def test_malformed_timeline_ids_are_skipped(world):
    c, alice, bob, anon = world
    c.rpush(kk('timeline', 'p101'), 'junk', '99999999999999999999-0', '')
    r = erase(c, 'profile_id:p101')
    assert r['events'] == 9
    assert traces(snapshot(c), alice) == []


# --------------------------------------------------------------------------
# performance

def test_erase_10000_events_among_110000(admin):
    """A person with 10,000 events spread over a stream of 110,000 (the
    stream of their shard, shared with ten other people)."""
    pids = [p for p in ('p%d' % i for i in range(1, 1000))
            if shard_of(p) == shard_of('p1')][:11]
    big = make_known(admin, pids[0], 'heavy', n_events=0)
    others = [make_known(admin, pid, 'other%d' % i, n_events=0)
              for i, pid in enumerate(pids[1:])]
    stream = sk(big.pid)
    pipe = admin.pipeline(transaction=False)
    n_big, n_other = 10000, 100000
    for i in range(n_big + n_other):
        if i % 11 == 5:
            who, aid = big, big.aids[i % 2]
        else:
            who = others[i % 10]
            aid = who.aids[i % 2]
        pipe.xadd(stream, {'event': json.dumps({
            'type': 'track', 'event': 'Clicked', 'anonymousId': aid,
            'messageId': 'm-%d' % i, 'properties': {'i': i}})})
        if len(pipe) == 5000:
            for rid, w in zip(pipe.execute(), range(i - 4999, i + 1)):
                (big if w % 11 == 5 else others[w % 10]).events.append(
                    (stream, rid))
    assert len(pipe) == 0
    assert len(big.event_ids) == n_big
    assert admin.xlen(stream) == n_big + n_other
    for p in [big] + others:
        for j in range(0, len(p.event_ids), 1000):
            admin.lpush(kk('timeline', p.pid), *p.event_ids[j:j + 1000])
        p.keys.add(kk('timeline', p.pid))

    t = time.monotonic()
    doc = export(admin, 'email:' + big.hashed['email'])
    took = time.monotonic() - t
    print('\nexport of 10,000 events among 110,000: %.1f ms, %d bytes'
          % (took * 1000, len(json.dumps(doc))))
    assert [e['id'] for e in doc['profiles'][0]['events']] == big.event_ids
    assert took < 2.0

    t = time.monotonic()
    r = erase(admin, 'email:' + big.hashed['email'])
    took = time.monotonic() - t
    print('erase of 10,000 events among 110,000: %.1f ms (FCALL round trip),'
          ' took_us %d' % (took * 1000, r['took_us']))
    assert r['events'] == n_big
    assert admin.xlen(stream) == n_other
    assert took < 1.0
    left = {f['event'] for _, f in admin.xrange(stream)}
    assert not any(big.aids[0] in e or big.aids[1] in e for e in left)
    assert admin.llen(kk('timeline', others[0].pid)) == n_other // 10


# --------------------------------------------------------------------------
# a person across shards, built by the store itself (store/cdp.lua)

def ingest(c, aid, kind, payload, ts):
    """One event through cdp_ingest: KEYS[1] the stream of the browser's
    shard, KEYS[2] its profile key; 16 shards (ARGV[1] has no count)."""
    time.sleep(0.003)       # each call's stream ids a later millisecond
    return c.fcall('cdp_ingest', 2, sk(aid), kk('profile', aid),
                   '1000000', str(ts), kind, '', payload)


def event(aid, n, typ='track', user_id=None):
    ev = {'type': typ, 'event': 'Step %d' % n, 'anonymousId': aid, 'n': n}
    if user_id:
        ev['userId'] = user_id
    return json.dumps(ev)


def identify(uid, uidh, eh, ev):
    return '\t'.join([uid, uidh, eh, '', '{"plan":"pro"}', ev])


def test_person_across_shards_export_and_erase(both):
    """Browsers A, B, C and profiles pY (C's email), pX (A's user id) in
    five shards; B's login with both merges pY and B into pX.  A merge
    leaves the absorbed profile's events in its shard: the export still
    has every event of the person, in time order, and the erasure leaves
    no key of theirs in any shard and all 16 suppression copies hold
    their identifiers."""
    c = both
    a = new_aid()
    b = new_aid(avoid=[a])
    cc = new_aid(avoid=[a, b])
    # the next two profiles, pY then pX, in two more shards
    seq = next(i for i in range(1000)
               if len({shard_of(x) for x in (a, b, cc, 'p%d' % (i + 1),
                                             'p%d' % (i + 2))}) == 5)
    c.set(k('seq', 'profile'), seq)
    py, px = 'p%d' % (seq + 1), 'p%d' % (seq + 2)
    # a bystander in pX's shard
    d = next(x for x in iter(new_aid, None) if shard_of(x) == shard_of(px))

    uid, email = 'user-zoe', 'zoe@example.com'
    uh, eh = hid('user_id', uid), hid('email', email)
    ts = iter(range(T0, T0 + 1000))
    steps = [
        (a, 'page:new', event(a, 0, 'page')),
        (a, 'track', event(a, 1)),
        (b, 'page:new', event(b, 2, 'page')),
        (d, 'page:new', event(d, -1, 'page')),
        (b, 'page', event(b, 3, 'page')),
        (cc, 'page:new', event(cc, 4, 'page')),
        (cc, 'identify', identify('', '', eh, event(cc, 5, 'identify'))),
        (a, 'identify', identify(uid, uh, '',
                                 event(a, 6, 'identify', uid))),
        (a, 'track', event(a, 7, 'track', uid)),
        (d, 'track', event(d, -2)),
        (b, 'identify', identify(uid, uh, eh,
                                 event(b, 8, 'identify', uid))),
        (b, 'page', event(b, 9, 'page')),
        (cc, 'track', event(cc, 10)),
    ]
    for aid, kind, payload in steps:
        assert ingest(c, aid, kind, payload, next(ts))[0] == 1
    # nginx's consent log: a shard each in turn
    zoe = Person(px)
    zoe.pids = [px, py]
    zoe.aids = [a, b, cc]
    zoe.hashed = {'user_id': uh, 'email': eh}
    zoe.raw = [uid, email]
    for aid in (a, b, cc, d):
        consent(c, zoe if aid != d else Person(d), aid, T0)

    assert c.fcall_ro('cdp_resolve', 0, P, 'anonymous_id:' + cc) == px
    assert c.hget(kk('profile', py), 'merged_into') == px
    # the absorbed profiles kept their timelines in their shards
    assert c.exists(kk('timeline', py), kk('timeline', a)) == 2
    where = {}
    for key in shard_keys('events'):
        for i, f in c.xrange(key):
            ev = json.loads(f['event'])
            if ev.get('n', -1) >= 0:
                where[ev['n']] = (key, i)
    assert sorted(where) == list(range(11))
    assert len({key for key, _ in where.values()}) >= 4

    doc = export(c, 'email:' + eh)
    (p,) = doc['profiles']
    assert p['profile_id'] == px
    assert [e['event']['n'] for e in p['events']] == list(range(11))
    assert [e['id'] for e in p['events']] == [where[n][1] for n in range(11)]
    assert sorted(p['identifiers']) == sorted(
        ['user_id:' + uh, 'email:' + eh, 'profile_id:' + py]
        + ['anonymous_id:' + x for x in (a, b, cc)])
    assert len(p['merges']) == 4 and len(p['consent_log']) == 3
    assert [(m['from'], m['to']) for m in p['merges']] == \
        [(cc, py), (a, px), (py, px), (b, px)]

    r = erase(c, 'anonymous_id:' + cc)
    assert (r['profiles'], r['events'], r['merges'], r['consent_log']) == \
        (1, 11, 4, 3)
    after = snapshot(c)
    assert traces(after, zoe) == []
    # nothing of theirs in any shard: the bystander's keys and events,
    # the stream keys, the sequence and the audit are what is left
    streams = set(shard_keys('events') + shard_keys('merges')
                  + shard_keys('consent_log'))
    assert {key for key in after if key not in EXEMPT + list(streams)} == \
        {kk('profile', d), kk('timeline', d), k('seq', 'profile')}
    assert [json.loads(f['event'])['n'] for key in shard_keys('events')
            for _, f in c.xrange(key)] == [-1, -2]
    assert sum(c.xlen(key) for key in shard_keys('merges')) == 0
    assert sum(c.xlen(key) for key in shard_keys('consent_log')) == 1
    want = {'user_id:' + uh, 'email:' + eh} | \
        {'anonymous_id:' + aidh(x) for x in (a, b, cc)}
    assert suppressed_copies(c) == want
    assert c.fcall_ro('cdp_suppressed', 0, P, 'anonymous_id:' + a,
                      'email:' + eh, 'anonymous_id:' + d) == [1, 1, 0]
    # the store drops their browsers' events, each in its own shard
    for x in (a, b, cc):
        assert ingest(c, x, 'track', event(x, 99), next(ts))[:2] == [0, 1]
    assert c.exists(*[kk('profile', x) for x in (a, b, cc)]) == 0


# --------------------------------------------------------------------------
# destinations: one out-stream and one dead-letter stream a shard
# (<prefix>:out:{<tag>}:<name>, <prefix>:dead:{<tag>}:<name>), an entry in
# the shard of the profile it is counted on; what each was sent about a
# profile in <prefix>:sent:{<tag>}:<pid>, of the profile's shard; an
# out-stream entry id is an event id of one shard only

def ok(name, x):
    """The out-stream of destination name in the shard of x."""
    return '%s:out:%s:%s' % (P, tag(x), name)


def dk(name, x):
    """The dead-letter stream of destination name in the shard of x."""
    return '%s:dead:%s:%s' % (P, tag(x), name)


def test_erase_leaves_another_shards_entry_with_the_same_id(world):
    """The same stream id in two shards' streams, and so in two shards'
    out-streams: the entry in the other shard is the other person's, and
    stays; in the person's shard, only what is theirs goes."""
    c, alice, bob, anon = world
    assert sk(anon.pid) != sk('p101')
    name = 'crm'
    c.hset(k('destinations'), name, '1')
    out, dead = ok(name, 'p101'), dk(name, 'p101')
    out_n, dead_n = ok(name, anon.pid), dk(name, anon.pid)
    assert out != out_n
    time.sleep(0.002)
    shared = add_events(c, alice, 1, alice.aids)[0]    # after anon's
    anon_ev = json.dumps({'type': 'track', 'anonymousId': anon.pid})
    c.xadd(sk(anon.pid), {'event': anon_ev}, id=shared)
    alice_ev = c.xrange(sk('p101'), shared, shared)[0][1]['event']
    # each event forwarded to its shard's out-stream under its own id:
    # the same id in both
    c.xadd(out_n, {'event': anon_ev, 'p': anon.pid}, id=shared)
    c.xadd(out, {'event': alice_ev, 'p': 'p101'}, id=shared)
    # alice's, under a new id (a replayed dead letter), and bob's (his
    # events are in alice's shard too)
    mine = c.xadd(out, {'event': alice_ev, 'p': 'p101'})
    bob_ev = c.xrange(sk('p201'), bob.event_ids[0],
                      bob.event_ids[0])[0][1]['event']
    bobs = c.xadd(out, {'event': bob_ev, 'p': 'p201'})
    # dead letters: naming no profile, alice's event (hers) and anon's
    # under the same id (not hers) in her shard, and anon's in its own;
    # naming p101 (hers)
    c.xadd(dead, {'id': shared, 'status': '500', 'event': alice_ev})
    d2 = c.xadd(dead, {'id': shared, 'status': '500', 'event': anon_ev})
    d3 = c.xadd(dead_n, {'id': shared, 'status': '500', 'event': anon_ev,
                         'p': anon.pid})
    c.xadd(dead, {'id': alice.event_ids[0], 'status': '500',
                  'event': anon_ev, 'p': 'p101'})

    r = erase(c, 'profile_id:p101')
    assert r['destination_entries'] == 4
    assert r['deletion_notices'] == 0       # nothing was sent about her
    assert [i for i, _ in c.xrange(out_n)] == [shared]
    assert c.xrange(out_n)[0][1]['p'] == anon.pid
    assert [i for i, _ in c.xrange(out)] == [bobs]
    assert mine not in [i for i, _ in c.xrange(out)]
    assert [i for i, _ in c.xrange(dead)] == [d2]
    assert [i for i, _ in c.xrange(dead_n)] == [d3]
    # no other shard's stream was made
    assert sorted(c.keys('%s:out:*' % P)) == sorted({out, out_n})
    assert sorted(c.keys('%s:dead:*' % P)) == sorted({dead, dead_n})


def test_erase_reads_sent_in_each_nodes_shard_and_notifies_in_the_persons(
        world):
    """What a destination was sent is recorded in the shard of the profile
    it was counted on (a browser's profile before its merge, in another
    shard than the person's): the erasure reads every node's, queues one
    notice a destination in the out-stream of the person's shard, naming
    what each was sent, deletes those sets and leaves the others'."""
    c, alice, bob, anon = world
    for name in ('crm', 'mail'):
        c.hset(k('destinations'), name, '1')
    a0 = alice.aids[0]
    # alice's browser a0 was sent before its merge into p101, in a0's shard
    sent_a0 = '%s:sent:%s:%s' % (P, tag(a0), a0)
    sent_p = '%s:sent:%s:p101' % (P, tag('p101'))
    sent_anon = '%s:sent:%s:%s' % (P, tag(anon.pid), anon.pid)
    sent_bob = '%s:sent:%s:p201' % (P, tag('p201'))
    c.sadd(sent_a0, 'crm\ta:' + a0)
    c.sadd(sent_p, 'crm\tu:user-alice', 'crm\ta:' + alice.aids[1],
           'mail\tu:user-alice')
    c.sadd(sent_anon, 'crm\ta:' + anon.pid)
    c.sadd(sent_bob, 'crm\tu:user-bob')
    # a stream of the person's shard that was there, and one another
    # shard's that must stay as it is
    c.xadd(ok('crm', anon.pid), {'event': '{}', 'p': anon.pid})

    r = erase(c, 'user_id:' + alice.hashed['user_id'], receipt='r-sent')
    assert r['deletion_notices'] == 2, r
    assert not c.exists(sent_a0, sent_p)
    assert c.exists(sent_anon, sent_bob) == 2
    notices = {}
    for key in c.keys('%s:out:*' % P):
        for _i, f in c.xrange(key):
            if 'delete' in f:
                assert key == ok(key.rsplit(':', 1)[1], 'p101'), key
                assert f['p'] == ''
                notices[key.rsplit(':', 1)[1]] = json.loads(f['delete'])
    assert set(notices) == {'crm', 'mail'}
    assert notices['crm']['receipt'] == 'r-sent'
    assert notices['crm']['userIds'] == ['user-alice']
    assert sorted(notices['crm']['anonymousIds']) == sorted(alice.aids)
    assert notices['mail']['userIds'] == ['user-alice']
    assert notices['mail']['anonymousIds'] == []
    assert len(c.xrange(ok('crm', anon.pid))) == 1


def test_replay_moves_each_shards_dead_letters_to_its_out_stream(admin):
    """cdp_replay: every shard's dead letters back into the out-stream of
    the same shard (their profiles are there), oldest first, audited."""
    c = admin
    name = 'crm'
    c.hset(k('destinations'), name, '1')
    x, y = 'p101', new_aid(avoid=['p101'])
    assert tag(x) != tag(y)
    for i, who in enumerate((x, y, x)):
        c.xadd(dk(name, who), {'id': '1-%d' % i, 'status': '400',
                               'response': 'no', 'at': str(T0),
                               'event': '{"n":%d}' % i, 'p': who})
    # another destination's dead letters stay
    other = c.xadd(dk('mail', y), {'id': '1-9', 'status': '400',
                                   'event': '{}', 'p': y})
    r = json.loads(c.fcall('cdp_replay', 0, P, 'r-rp', 'admin', str(T0),
                           name))
    assert r == {'receipt': 'r-rp', 'destination': name, 'replayed': 3}
    assert [f for _i, f in c.xrange(ok(name, x))] == [
        {'event': '{"n":0}', 'p': x}, {'event': '{"n":2}', 'p': x}]
    assert [f for _i, f in c.xrange(ok(name, y))] == [
        {'event': '{"n":1}', 'p': y}]
    assert c.xlen(dk(name, x)) == 0 and c.xlen(dk(name, y)) == 0
    assert [i for i, _f in c.xrange(dk('mail', y))] == [other]
    assert sorted(c.keys('%s:out:*' % P)) == sorted({ok(name, x),
                                                     ok(name, y)})
    (a,) = audit_entries(c)
    assert a['op'] == 'replay' and a['events'] == '3'
    assert a['ids'] == 'destination:' + name


@pytest.mark.parametrize('args', [
    [P, 'r', 'admin', str(T0)],
    [P, 'r', 'admin', str(T0), 'crm', 'mail'],
    [P, 'r', 'admin', str(T0), 'c r m'],
    [P, 'r', 'admin', str(T0), 'c' * 65],
    [P, 'r,x', 'admin', str(T0), 'crm'],
    [P, 'r', 'ad\nmin', str(T0), 'crm'],
    [P, 'r', 'admin', 'now', 'crm'],
    [P + '|0', 'r', 'admin', str(T0), 'crm'],
])
def test_replay_bad_arguments_write_nothing(admin, args):
    """cdp_replay checks its receipt and role as the audited functions do
    (they go into the audit entry), and the destination's name as nginx
    allows it: a bad call moves nothing, audits nothing."""
    c = admin
    c.xadd(dk('crm', 'p101'), {'id': '1-1', 'event': '{}', 'p': 'p101'})
    before = snapshot(c)
    with pytest.raises(redis.ResponseError) as e:
        c.fcall('cdp_replay', 0, *args)
    assert str(e.value) == ('cdp_replay: want 0 keys, ARGV prefix, receipt, '
                            'role, now_ms, destination'), e.value
    assert snapshot(c) == before
    # the same call made right moves it
    assert json.loads(c.fcall('cdp_replay', 0, P, 'r', 'admin', str(T0),
                              'crm'))['replayed'] == 1


# --------------------------------------------------------------------------
# segments: a set a shard, <prefix>:segment:{<tag>}:<NAME> (store/README.md,
# "Segments"), read by cdp_segments and cdp_segment_members, left by an
# erased person

SEG_FIELDS = ['user_id', 'trait.plan', 'nope']
CURSOR_RE = re.compile(r'^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$')


def seg_key(name, x, n=N, prefix=P):
    """<prefix>:segment:{<tag(x)>}:<name>: segment name's members of the
    shard of x."""
    return '%s:segment:%s:%s' % (prefix, tag(x, n), name)


def due_key(x, n=N, prefix=P):
    """<prefix>:segments:due:{<tag(x)>}: the segments' clock of x's
    shard."""
    return '%s:segments:due:%s' % (prefix, tag(x, n))


def add_members(c, name, pids, n=N, prefix=P):
    """Profiles in segment name, each in its shard's set; their fields
    (some with a comma, quotes and a newline: CSV's quoting).  Returns
    {pid: the fields of SEG_FIELDS they have}."""
    want = {}
    for i, pid in enumerate(pids):
        f = {'user_id': 'u-' + pid}
        if i % 3 == 0:
            f['trait.plan'] = 'gold, "vip"\nline 2'
        c.hset(kk('profile', pid, n, prefix), mapping=dict(
            f, segments=name, events=1))
        c.sadd(seg_key(name, pid, n, prefix), pid)
        want[pid] = f
    return want


def parse_page(fmt, reply):
    """(cursor, [(pid, {field: value})...]) of a page of members: the
    standalone function's reply (json text, or [cursor, text]) or a saga's
    result (json text, or "<cursor>\\n<text>")."""
    if fmt == 'json':
        doc = json.loads(reply)
        return doc['cursor'], [(m['profile_id'], m['fields'])
                               for m in doc['members']]
    if isinstance(reply, list):
        cursor, text = reply
    else:
        cursor, text = reply.split('\n', 1)
    if fmt == 'ndjson':
        assert text == '' or text.endswith('\n'), text
        return cursor, [(m['profile_id'], m['fields'])
                        for m in map(json.loads, text.splitlines())]
    rows = list(csv.reader(io.StringIO(text, newline='')))
    assert rows[0] == ['profile_id'] + SEG_FIELDS, rows
    return cursor, [(r[0], {f: v for f, v in zip(SEG_FIELDS, r[1:]) if v})
                    for r in rows[1:]]


def walk_pages(fetch, fmt, limit=500):
    """Every page from cursor "0" until a page answers the cursor "0":
    [(cursor answered, rows)...].  fetch(cursor) is the page's reply."""
    cursor, pages = '0', []
    for _ in range(limit):
        cursor, rows = parse_page(fmt, fetch(cursor))
        pages.append((cursor, rows))
        if cursor == '0':
            return pages
        assert CURSOR_RE.match(cursor), cursor
    raise AssertionError('more than %d pages' % limit)


def check_pages(pages, want, n=N):
    """Every member exactly once, with its fields; the shards in order
    (a page's members are in shards at or after the previous page's)."""
    rows = [r for _, page in pages for r in page]
    pids = [pid for pid, _ in rows]
    assert len(pids) == len(set(pids)), pids
    assert dict(rows) == want
    last = 0
    for cursor, page in pages:
        shards = [shard_of(pid, n) for pid, _ in page]
        assert all(s >= last for s in shards), (last, shards)
        last = max(shards + [last])
        if cursor != '0':
            # the cursor goes on in the page's last shard, or after it
            assert int(cursor.split('.')[0]) >= last, (cursor, shards)


def members_page(c, name, cursor, count, fmt, prefix=P, role='marketer'):
    return c.fcall('cdp_segment_members', 0, prefix, 'r-m', role, str(T0),
                   name, cursor, str(count), fmt, *SEG_FIELDS)


def test_segments_sum_every_shards_set(admin):
    c = admin
    pids = ['p%d' % i for i in range(1000, 1040)]
    add_members(c, 'loyal', pids)
    add_members(c, 'vip', pids[:5])
    assert len({shard_of(p) for p in pids}) >= 10
    # the unsharded name of earlier versions counts no more
    c.sadd(k('segment', 'loyal'), 'p1', 'p2')
    r = c.fcall('cdp_segments', 0, P, 'r-s', 'marketer', str(T0),
                'loyal', 'events >= 1', 'vip', 'trait("plan") == "x"',
                'empty', 'events >= 1000')
    assert json.loads(r) == [
        {'name': 'loyal', 'rule': 'events >= 1', 'members': 40},
        {'name': 'vip', 'rule': 'trait("plan") == "x"', 'members': 5},
        {'name': 'empty', 'rule': 'events >= 1000', 'members': 0}]
    (a,) = audit_entries(c)
    assert (a['op'], a['ids'], a['role'], a['receipt'], a['profiles']) == \
        ('segments', 'segment:*', 'marketer', 'r-s', '0')
    # with 4 shards, the 4 shards' sets of that layout
    add_members(c, 'loyal', pids[:9], n=4)
    r = c.fcall('cdp_segments', 0, P + '|4', 'r-s', 'marketer', str(T0),
                'loyal', 'events >= 1')
    assert json.loads(r)[0]['members'] == 9
    with pytest.raises(redis.ResponseError, match='bad segment name at 7'):
        c.fcall('cdp_segments', 0, P, 'r-s', 'marketer', str(T0),
                'loyal', 'x', 'no{pe}', 'x')
    assert len(audit_entries(c)) == 2


@pytest.mark.parametrize('fmt', ['json', 'ndjson', 'csv'])
@pytest.mark.parametrize('count', [1, 7, 1000])
def test_segment_members_pages_walk_the_shards(admin, fmt, count):
    """A page goes on from shard to shard until it has count members; the
    cursor "<shard>.<SSCAN cursor>" followed to "0" gives every member
    once, with the fields asked for."""
    c = admin
    pids = ['p%d' % i for i in range(2000, 2040)]
    want = add_members(c, 'loyal', pids)
    add_members(c, 'other', ['p9'])
    pages = walk_pages(lambda cur: members_page(c, 'loyal', cur, count,
                                                fmt), fmt)
    check_pages(pages, want)
    if count == 1000:
        assert len(pages) == 1
    else:
        assert len(pages) >= 40 // (count + 2)
    if count == 7:
        # a page spans shards
        assert any(len({shard_of(p) for p, _ in page}) > 1
                   for _, page in pages), pages
    reads = [a for a in audit_entries(c) if a['op'] == 'segment_read']
    assert len(reads) == len(pages)
    assert [int(a['profiles']) for a in reads] == [len(p) for _, p in pages]
    assert {a['ids'] for a in reads} == {'segment:loyal'}


def test_segment_members_cursor_is_checked(admin):
    """A cursor is "0" or "<shard>.<cursor>" of this number of shards, in
    decimal without leading zeros (the earlier SSCAN cursor alone is
    refused); refused, nothing is audited."""
    c = admin
    pfx = P + '|4'
    want = add_members(c, 'loyal', ['p%d' % i for i in range(30)], n=4)
    for bad in ('4.0', '01.0', '1.01', '1.', '.5', '1234', '-1.0', '1.-1',
                '1.2.3', ' 1.0', '1.18446744073709551616', '10000.0', 'x',
                '', '00'):
        with pytest.raises(redis.ResponseError,
                           match='bad name, cursor, count or format'):
            members_page(c, 'loyal', bad, 10, 'json', prefix=pfx)
    for bad in ('0', '1001', '1.5', '-1', '0x10'):
        with pytest.raises(redis.ResponseError,
                           match='bad name, cursor, count or format'):
            members_page(c, 'loyal', '0', bad, 'json', prefix=pfx)
    assert audit_entries(c) == []
    # a walk from shard 3 on: shard 3's members only
    cursor, rows = parse_page('json', members_page(c, 'loyal', '3.0', 1000,
                                                   'json', prefix=pfx))
    assert cursor == '0'
    assert dict(rows) == {p: f for p, f in want.items()
                          if shard_of(p, 4) == 3}
    assert rows


def test_erase_leaves_each_shards_segment_sets_and_clock(world):
    """The erased person's live pid leaves the sets its field "segments"
    names, in the pid's shard; every node of theirs leaves the due times
    of its own shard; bob (the same shard as alice) stays."""
    c, alice, bob, _anon = world
    assert tag(alice.pid) == tag(bob.pid)
    c.hset(kk('profile', alice.pid), 'segments', 'loyal,vip')
    c.sadd(seg_key('loyal', alice.pid), alice.pid, bob.pid)
    c.sadd(seg_key('vip', alice.pid), alice.pid)
    nodes = [alice.pid] + alice.aids
    assert len({tag(x) for x in nodes}) > 1
    for x in nodes + [bob.pid]:
        c.zadd(due_key(x), {x: T0 + 1000})
    erase(c, 'email:' + alice.hashed['email'])
    assert c.smembers(seg_key('loyal', alice.pid)) == {bob.pid}
    assert not c.exists(seg_key('vip', alice.pid))
    for x in nodes:
        assert c.zscore(due_key(x), x) is None, x
    assert c.zscore(due_key(bob.pid), bob.pid) == T0 + 1000


def test_erase_checks_the_segment_keys_types_first(world):
    c, alice, _bob, _anon = world
    c.hset(kk('profile', alice.pid), 'segments', 'loyal')
    c.set(seg_key('loyal', alice.pid), 'not a set')
    before = snapshot(c)
    with pytest.raises(redis.ResponseError, match='is a string, not a set'):
        erase(c, 'email:' + alice.hashed['email'])
    assert snapshot(c) == before
    c.delete(seg_key('loyal', alice.pid))
    c.set(due_key(alice.aids[0]), 'x')
    before = snapshot(c)
    with pytest.raises(redis.ResponseError, match='is a string, not a zset'):
        erase(c, 'email:' + alice.hashed['email'])
    assert snapshot(c) == before
