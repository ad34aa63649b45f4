"""store/admin.lua (library cdp_admin_v1) called directly in a real Redis:
resolution, profile, erasure, export, suppression and audit, on profiles
built by hand in the layout of spec/identity.md."""

import hashlib
import hmac
import json
import os
import re
import secrets
import time

import pytest
import redis

import cdp_harness as h


LUA = os.path.join(h.MAIN, 'store', 'admin.lua')
P = 't'                         # the key prefix of these tests
KEY = secrets.token_bytes(32)   # the identity key (HMAC) of these tests
T0 = 1700000000000              # ms


@pytest.fixture
def admin(redis_server):
    c = redis_server.client()
    with open(LUA) as f:
        assert c.function_load(f.read().replace('@REV@', 'test-rev'),
                               replace=True) == 'cdp_admin_v1'
    yield c
    c.close()


def hid(t, v):
    return hmac.new(KEY, ('%s:%s' % (t, v)).encode(), 'sha256').hexdigest()


def aidh(aid):
    return hashlib.sha1(('anonymous_id:' + aid).encode()).hexdigest()


def new_aid():
    return secrets.token_hex(16)


def k(*parts):
    return ':'.join((P,) + parts)


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
        self.event_ids = []         # oldest first
        self.merge_ids = []
        self.consent_ids = []

    def tokens(self):
        """Every value that must be gone after erasure, with aidh values
        (allowed in the suppression set and the audit only)."""
        return (self.pids + self.aids + list(self.hashed.values())
                + self.raw, [aidh(a) for a in self.aids])

    def identifiers(self):
        out = ['%s:%s' % (t, v) for t, v in self.hashed.items()]
        out += ['anonymous_id:' + a for a in self.aids]
        return out


def add_events(c, person, n, aids, user_id=None, every=None):
    """n events of the person appended to the event stream (and their
    timeline, newest first)."""
    pipe = c.pipeline(transaction=False)
    for i in range(n):
        ev = {'type': 'track', 'event': 'Viewed %d' % i,
              'anonymousId': aids[i % len(aids)],
              'messageId': 'm-%s-%d' % (secrets.token_hex(4), i),
              'timestamp': T0 + i, 'properties': {'n': i, 'big': 2 ** 53,
                                                  'empty': []}}
        if user_id:
            ev['userId'] = user_id
        pipe.xadd(k('events'), {'event': json.dumps(ev)})
    ids = pipe.execute()
    person.event_ids += ids
    tl = k('timeline', person.pid)
    for i in range(0, len(ids), 1000):
        c.lpush(tl, *ids[i:i + 1000])
    person.keys.add(tl)
    return ids


def consent(c, person, aid, at):
    entry = {'aid': aidh(aid), 'granted': ['analytics'],
             'denied': ['marketing'], 'source': 'form', 'version': '1',
             'timestamp': at}
    person.consent_ids.append(
        c.xadd(k('consent_log'), {'entry': json.dumps(entry)}))


def merge(c, person, frm, to, reason, typ, ident, at):
    person.merge_ids.append(c.xadd(k('merges'), {
        'from': frm, 'to': to, 'reason': reason, 'type': typ, 'id': ident,
        'at': str(at)}))


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
        c.set(k('idx', t, hv), pid)
        p.keys.add(k('idx', t, hv))
        ids.append('%s:%s' % (t, hv))
    for a in p.aids:
        c.hset(k('profile', a), mapping={'merged_into': pid, 'at': ts})
        p.keys.add(k('profile', a))
        ids.append('anonymous_id:' + a)
        merge(c, p, a, pid, 'identify', 'user_id', p.hashed['user_id'], ts)
        consent(c, p, a, ts)
    prev = pid
    for f in former:
        target = prev if chain else pid
        c.hset(k('profile', f), mapping={'merged_into': target, 'at': ts})
        p.keys.add(k('profile', f))
        ids.append('profile_id:' + f)
        merge(c, p, f, target, 'identify', 'email', p.hashed['email'], ts)
        p.pids.append(f)
        prev = f
    c.sadd(k('ids', pid), *ids)
    p.keys.add(k('ids', pid))

    if n_events:
        add_events(c, p, n_events, p.aids or [new_aid()], user_id)
    c.hset(k('profile', pid), mapping={
        'events': n_events, 'page_views': 0, 'first_seen': T0,
        'last_seen': T0 + n_events, 'user_id': user_id,
        'trait.email': email, 'trait.phone': phone,
        'trait.name': name.title(), 'consent': 'analytics',
        'country': 'DE', 'traits_at': ts})
    p.keys.add(k('profile', pid))
    return p


def make_anonymous(c, n_events=3):
    aid = new_aid()
    p = Person(aid)
    p.aids = [aid]
    add_events(c, p, n_events, [aid])
    c.hset(k('profile', aid), mapping={
        'events': n_events, 'page_views': n_events, 'first_seen': T0,
        'last_seen': T0 + n_events, 'consent': 'analytics'})
    p.keys.add(k('profile', aid))
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
        if key in (k('suppressed'), k('audit')):
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
    ev, mg, cs = set(), set(), set()
    for p in people:
        gone |= p.keys
        ev |= set(p.event_ids)
        mg |= set(p.merge_ids)
        cs |= set(p.consent_ids)
    out = {}
    for key, content in before.items():
        if key in gone or key in (k('suppressed'), k('audit')):
            continue
        drop = {k('events'): ev, k('merges'): mg,
                k('consent_log'): cs}.get(key)
        if drop is not None:
            content = {i: f for i, f in content.items() if i not in drop}
            if not content:
                continue
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


def check_erased(c, before, person, *others):
    after = snapshot(c)
    assert traces(after, person) == []
    assert without(after, k('suppressed'), k('audit')) == \
        expected_after(before, person)
    for o in others:
        assert traces(after, o) != [] or not o.keys
    sup = c.smembers(k('suppressed'))
    for t, hv in person.hashed.items():
        assert '%s:%s' % (t, hv) in sup
    for a in person.aids:
        assert 'anonymous_id:' + aidh(a) in sup
    return after


@pytest.fixture
def world(admin):
    """Two known people (alice with 7 events, 2 browsers, bob untouched
    by every test) and an anonymous browser, their streams interleaved."""
    alice = make_known(admin, 'p101', 'alice', n_events=7)
    bob = make_known(admin, 'p201', 'bob', n_events=4, n_aids=1)
    anon = make_anonymous(admin)
    add_events(admin, alice, 2, alice.aids, 'user-alice')
    admin.set(k('seq', 'profile'), '201')
    admin.hset(k('agg', '2023-11-14'), 'page|DE', 3)
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
    admin.set(k('idx', 'email', 'e' * 64), 'p4')
    assert admin.fcall_ro('cdp_resolve', 0, P, 'email:' + 'e' * 64) == 'p1'


def test_resolve_detects_a_cycle(admin):
    admin.hset(k('profile', 'p7'), mapping={'merged_into': 'p8', 'at': 1})
    admin.hset(k('profile', 'p8'), mapping={'merged_into': 'p7', 'at': 1})
    admin.set(k('idx', 'email', 'a' * 64), 'p7')
    for ident in ('profile_id:p7', 'email:' + 'a' * 64):
        with pytest.raises(redis.ResponseError,
                           match=r'^cdp_resolve: more than 64 links'):
            admin.fcall_ro('cdp_resolve', 0, P, ident)
    # 64 hops is fine, 65 is not
    for i in range(1, 65):
        admin.hset(k('profile', 'p%d' % (1000 + i)),
                   mapping={'merged_into': 'p%d' % (1000 + i + 1)})
    admin.hset(k('profile', 'p1065'), 'events', 1)
    assert admin.fcall_ro('cdp_resolve', 0, P, 'profile_id:p1001') == 'p1065'
    admin.hset(k('profile', 'p1000'), mapping={'merged_into': 'p1001'})
    with pytest.raises(redis.ResponseError, match='more than 64 links'):
        admin.fcall_ro('cdp_resolve', 0, P, 'profile_id:p1000')


def test_profile(world):
    c, alice, bob, anon = world
    doc = json.loads(c.fcall_ro('cdp_profile', 0, P,
                                'anonymous_id:' + alice.aids[1], '5'))
    assert doc['profile_id'] == 'p101'
    assert doc['fields'] == c.hgetall(k('profile', 'p101'))
    assert doc['identifiers'] == sorted(alice.identifiers())
    newest = list(reversed(alice.event_ids))
    assert [e['id'] for e in doc['recent_events']] == newest[:5]
    first = json.loads(c.xrange(k('events'), newest[0], newest[0])[0][1]
                       ['event'])
    assert doc['recent_events'][0]['event'] == first
    # stored JSON kept as it is: big integers and empty arrays
    assert first['properties']['big'] == 2 ** 53
    assert first['properties']['empty'] == []

    # events no longer in the stream are skipped
    c.xdel(k('events'), newest[1], newest[3])
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
    admin.hset(k('profile', 'p5'), mapping={'merged_into': 'p1', 'at': 1})
    admin.sadd(k('ids', 'p1'), 'profile_id:p5')
    carol.keys.add(k('profile', 'p5'))
    carol.pids.append('p5')
    merge(admin, carol, 'p5', 'p1', 'alias', 'user_id',
          carol.hashed['user_id'], 1)
    # leftovers of former pids the merges should have deleted
    admin.sadd(k('ids', 'p3'), 'email:' + carol.hashed['email'])
    admin.rpush(k('timeline', 'p3'), carol.event_ids[0])
    carol.keys |= {k('ids', 'p3'), k('timeline', 'p3')}
    dave = make_known(admin, 'p9', 'dave', former=['p8'])
    before = snapshot(admin)

    r = erase(admin, 'profile_id:p4')
    assert r['profiles'] == 1 and r['events'] == 6
    assert r['identifiers'] == 9       # 3 hashed, 2 aids, 4 former pids
    check_erased(admin, before, carol, dave)
    for pid in ('p1', 'p2', 'p3', 'p4', 'p5'):
        assert admin.exists(k('profile', pid), k('ids', pid),
                            k('timeline', pid)) == 0
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
    assert without(after, k('suppressed'), k('audit')) == \
        expected_after(before, alice, anon)


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
    assert c.smembers(k('suppressed')) == {
        'email:' + he, 'phone:' + hp, 'anonymous_id:' + aidh(aid)}
    assert without(snapshot(c), k('suppressed'), k('audit')) == \
        expected_after(before, stranger)


def test_erase_removes_dangling_idx_and_links(admin):
    # an idx naming a profile that is gone, a link to nowhere
    admin.set(k('idx', 'email', 'b' * 64), 'p42')
    aid = new_aid()
    admin.hset(k('profile', aid), mapping={'merged_into': 'p43', 'at': 1})
    r = erase(admin, 'email:' + 'b' * 64, 'anonymous_id:' + aid)
    assert r['profiles'] == 0 and r['suppressed'] == 2
    assert sorted(admin.keys('*')) == [k('audit'), k('suppressed')]


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
    assert p['fields'] == c.hgetall(k('profile', 'p101'))
    assert p['identifiers'] == sorted(alice.identifiers())
    # every event, oldest first, as stored
    assert [e['id'] for e in p['events']] == alice.event_ids
    stream = dict(c.xrange(k('events')))
    for e in p['events']:
        assert e['event'] == json.loads(stream[e['id']]['event'])
    merges = dict(c.xrange(k('merges')))
    assert p['merges'] == [merges[i] for i in alice.merge_ids]
    assert [e['id'] for e in p['consent_log']] == alice.consent_ids
    assert p['consent_log'][0]['entry']['aid'] == aidh(alice.aids[0])

    # it wrote its audit entry and nothing else
    assert without(snapshot(c), k('audit')) == before
    (entry,) = audit_entries(c)
    assert (entry['op'], entry['receipt'], entry['profiles'],
            entry['identifiers'], entry['events']) == \
        ('export', 'x-9', '1', '5', '9')
    assert alice.aids[0] not in json.dumps(entry)

    # events trimmed from the stream are left out; unknown: no profile
    c.xdel(k('events'), alice.event_ids[0])
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
        c.fcall('cdp_erase', 1, k('events'), P, 'r', 'privacy', '1',
                'profile_id:p101')


def test_cycle_and_wrong_types_write_nothing(world):
    c, alice, bob, anon = world
    c.hset(k('profile', 'p7'), mapping={'merged_into': 'p8', 'at': 1})
    c.hset(k('profile', 'p8'), mapping={'merged_into': 'p7', 'at': 1})
    before = snapshot(c)
    with pytest.raises(redis.ResponseError,
                       match='^cdp_erase: more than 64 links'):
        erase(c, 'email:' + alice.hashed['email'], 'profile_id:p8')
    with pytest.raises(redis.ResponseError,
                       match='^cdp_export: more than 64 links'):
        export(c, 'profile_id:p7')
    c.hset(k('profile', 'p6'), mapping={'merged_into': 'x:y', 'at': 1})
    with pytest.raises(redis.ResponseError, match='malformed merged_into'):
        erase(c, 'email:' + alice.hashed['email'], 'profile_id:p6')
    c.delete(k('profile', 'p6'))
    assert snapshot(c) == before

    c.set(k('suppressed'), 'oops')
    before = snapshot(c)
    with pytest.raises(redis.ResponseError,
                       match='t:suppressed is a string, not a set'):
        erase(c, 'email:' + alice.hashed['email'])
    # a person whose ids set is of the wrong type: refused while reading
    c.delete(k('suppressed'))
    c.delete(k('ids', 'p201'))
    c.set(k('ids', 'p201'), 'oops')
    before = snapshot(c)
    with pytest.raises(redis.ResponseError):
        erase(c, 'email:' + alice.hashed['email'],
              'email:' + bob.hashed['email'])
    assert snapshot(c) == before


def test_malformed_timeline_ids_are_skipped(world):
    c, alice, bob, anon = world
    c.rpush(k('timeline', 'p101'), 'junk', '99999999999999999999-0', '')
    r = erase(c, 'profile_id:p101')
    assert r['events'] == 9
    assert traces(snapshot(c), alice) == []


# --------------------------------------------------------------------------
# performance

def test_erase_10000_events_among_110000(admin):
    """A person with 10,000 events spread over a stream of 110,000."""
    big = make_known(admin, 'p1', 'heavy', n_events=0)
    others = [make_known(admin, 'p%d' % (100 + i), 'other%d' % i,
                         n_events=0) for i in range(10)]
    pipe = admin.pipeline(transaction=False)
    n_big, n_other = 10000, 100000
    for i in range(n_big + n_other):
        if i % 11 == 5:
            who, aid = big, big.aids[i % 2]
        else:
            who = others[i % 10]
            aid = who.aids[i % 2]
        pipe.xadd(k('events'), {'event': json.dumps({
            'type': 'track', 'event': 'Clicked', 'anonymousId': aid,
            'messageId': 'm-%d' % i, 'properties': {'i': i}})})
        if len(pipe) == 5000:
            for rid, w in zip(pipe.execute(), range(i - 4999, i + 1)):
                (big if w % 11 == 5 else others[w % 10]).event_ids.append(rid)
    assert len(pipe) == 0
    assert len(big.event_ids) == n_big
    assert admin.xlen(k('events')) == n_big + n_other
    for p in [big] + others:
        for j in range(0, len(p.event_ids), 1000):
            admin.lpush(k('timeline', p.pid), *p.event_ids[j:j + 1000])
        p.keys.add(k('timeline', p.pid))

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
    assert admin.xlen(k('events')) == n_other
    assert took < 1.0
    left = {f['event'] for _, f in admin.xrange(k('events'))}
    assert not any(big.aids[0] in e or big.aids[1] in e for e in left)
    assert admin.llen(k('timeline', 'p100')) == n_other // 10
