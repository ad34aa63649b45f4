"""store/migrate.sh and store/migrate.lua (library cdp_migrate_v1): a
standalone Redis written by the unsharded versions moved to the sharded
key layout (store/README.md, "Upgrading from the unsharded layout").

The old data is made by the old libraries themselves: store/cdp.lua and
store/admin.lua of commit 2ac356d (the last unsharded one), loaded into a
fresh redis-server and called directly (cdp_ingest for browsers' hits,
identifies that merge browsers and known profiles, API messages, the
aggregates, the consent log and a batch id; cdp_erase for the suppression
set and a deletion notice; two destinations, one of them delivered through
the group cdp as nginx did it, with cdp_dest_done).  Then the current
libraries are loaded (store/load.sh), migrate.sh runs, and the result is
checked key by key, event by event, against what the old admin library
exported, and by an nginx of this tree."""

import base64
import hashlib
import hmac
import json
import os
import re
import signal
import subprocess
import time

import pytest
import redis

import cdp_harness as h
import cdp_shard

OLD = '2ac356d'                 # the last commit of the unsharded layout
P = 'tmig'                      # the key prefix of these tests
N = cdp_shard.SHARDS_DEFAULT
SECRET = h.new_key()            # the nginx secret (identity and cookies)
TL_MAX = 10                     # timeline cap of the old ingest calls
MIGRATE = os.path.join(h.MAIN, 'store', 'migrate.sh')
LOAD = os.path.join(h.MAIN, 'store', 'load.sh')

# the kinds of key the migration renames (their old names: no '{', but
# sent:{<pid>})
MOVED = ('profile', 'ids', 'timeline', 'timeline_old', 'idx', 'agg',
         'msgids', 'once', 'out', 'dead', 'segment')
OLD_NAME_RE = re.compile(r'^%s:(?:(?:%s):[^{]|(?:events|merges|consent_log'
                         r'|suppressed|segments:due|segments:backfill)$'
                         r'|sent:\{[^{}]*\}$)'
                         % (P, '|'.join(MOVED)))
# what keeps its name
UNCHANGED_RE = re.compile(r'^%s:(audit|seq:profile|destinations'
                          r'|browser:.*)$' % P)
# the old segment sets (build_old): their names
SEGMENTS = ('vip', 'eu', 'big')
SEGMENT_RE = re.compile(r'^%s:segment:([^{]+)$' % P)
# the old nginx's destinations: crm (analytics, delivered by nginx through
# the group cdp) and wh (marketing, read by nobody, and no longer in
# <prefix>:destinations); "gone" is listed, with no stream
DESTS = 'crm 1 100000 0,wh 2 100000 0'
GROUP = 'cdp'


def git_show(path):
    try:
        return subprocess.check_output(
            ['git', '-C', h.MAIN, 'show', '%s:%s' % (OLD, path)],
            stderr=subprocess.STDOUT).decode()
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip('the old libraries need git and commit %s: %s' % (OLD, e))


def k(*parts):
    return ':'.join((P,) + parts)


def tag(i):
    return '{%s}' % cdp_shard.shard_tag(i, N)


def tag_of(x):
    return tag(cdp_shard.shard_of(x, N))


def new_name(kind, x, rest=None):
    """The sharded name of an old key's kind and id (a pid, or for idx
    the type and h)."""
    if kind == 'idx':
        t, hv = x
        return '%s:idx:%s:%s:%s' % (P, tag_of(hv), t, hv)
    return '%s:%s:%s:%s' % (P, kind, tag_of(x), x)


def ihash(t, v):
    return h.ident_hash(SECRET, t, v)


def aidh(aid):
    return hashlib.sha1(('anonymous_id:' + aid).encode()).hexdigest()


def aid_cookie(aid, key=SECRET):
    """A cdp_aid cookie for aid, signed as the module signs it
    (ngx_cdp_crypto.c; tests/integration/test_cluster.py does the same)."""
    mac = hmac.new(key.encode(), b'ngx_cdp anonymous id cookie v1',
                   hashlib.sha256).digest()
    t = hmac.new(mac, b'aid:' + aid.encode(), hashlib.sha256).digest()
    return aid + '.' + base64.urlsafe_b64encode(t[:12]).rstrip(b'=').decode()


def raw_client(r):
    return redis.Redis(host='127.0.0.1', port=r.port, socket_timeout=30)


# --------------------------------------------------------------------------
# the old layout, written by the old libraries

class Old:
    """A store of the unsharded layout, made through 2ac356d's cdp_ingest
    and cdp_erase.  Remembers the browsers and people it made."""

    def __init__(self, c, dests=None):
        self.c = c
        self.ts = int(time.time() * 1000) - 3600 * 1000
        self.n = 0
        self.dests = dests      # ARGV[1]'s destinations, or None
        self.routed = 0

    def route(self, kind):
        """The fifth argument of an event with destinations: its consent
        (all purposes, but every fourth event analytics only) and every
        destination taking it; agg and log events go nowhere."""
        if kind.split(':')[0] in ('agg', 'log'):
            return ''
        self.routed += 1
        return ('1' if self.routed % 4 == 0 else '7') + '7' \
            + '1' * len(self.dests.split(','))

    def tick(self):
        self.ts += 7
        return self.ts

    def ingest(self, items, once=None):
        """items: (key, kind, attrs, payload); once: (bitmap key, bit)."""
        keys = [k('events')] + [i[0] for i in items]
        args = ['1000000 1 5 5 %d 86400' % TL_MAX]
        if self.dests:
            args[0] += '|%s|0:0:' % self.dests
        if once:
            keys.insert(1, once[0])
            args.append(str(once[1]))
        for key, kind, attrs, payload in items:
            args += [str(self.tick()), kind, attrs, payload]
            if self.dests:
                args.append(self.route(kind))
        return self.c.fcall('cdp_ingest', len(keys), *keys, *args)

    def deliver(self, name, consumer, count, ok=None, refused=0):
        """nginx's deliverer of destination name, as the old version did
        it: XREADGROUP of count new entries in the group cdp, then
        cdp_dest_done with the first ok delivered (a 2xx: acknowledged,
        the person's sent:{<pid>} set written), the next refused ones
        dead-lettered (a 400), the rest left pending.  Returns the ids
        read."""
        out, dead = k('out', name), k('dead', name)
        got = self.c.xreadgroup(GROUP, consumer, {out: '>'}, count=count)
        entries = got[0][1] if got else []
        ok = len(entries) if ok is None else ok
        args = [GROUP, P + ':', name, str(self.tick()), '10000', str(ok)]
        for id_, f in entries[:ok]:
            ev = json.loads(f.get('event', '{}'))
            idents = (['a:' + ev['anonymousId']] if ev.get('anonymousId')
                      else []) + (['u:' + ev['userId']] if ev.get('userId')
                                  else [])
            args += [id_, f.get('p', ''), '\t'.join(idents)]
        for id_, _f in entries[ok:ok + refused]:
            args += [id_, '400', '{"error":"bad event"}']
        r = self.c.fcall('cdp_dest_done', 2, out, dead, *args)
        assert r == [ok, refused], r
        return [e[0] for e in entries]

    def event(self, type_, aid, **kw):
        self.n += 1
        ev = {'type': type_, 'messageId': 'm-%d' % self.n,
              'anonymousId': aid, 'timestamp': self.ts,
              'properties': {'n': self.n}}
        ev.update(kw)
        return json.dumps(ev, separators=(',', ':'))

    def hits(self, aid, n, new=True, once=None):
        items = []
        for i in range(n):
            kind = 'track' if i % 3 == 2 else 'page'
            if i == 0 and new:
                kind += ':new'
            items.append((k('profile', aid), kind, '',
                          self.event(kind.split(':')[0], aid)))
        r = self.ingest(items, once)
        if once is None:
            assert r[0] == n, r
        return r

    def identify(self, aid, uid='', email='', phone=''):
        uidh = ihash('user_id', uid) if uid else ''
        eh = ihash('email', email) if email else ''
        ph = ihash('phone', phone) if phone else ''
        ev = self.event('identify', aid, userId=uid or None, traits={})
        r = self.ingest([(k('profile', aid), 'identify', '',
                          '\t'.join([uid, uidh, eh, ph, '{}', ev]))])
        assert r[0] == 1, r
        return r

    def api(self, aid, type_, mid, uid='', email='', **kw):
        """A server API message (its attrs as nginx sends them)."""
        uidh = ihash('user_id', uid) if uid else ''
        eh = ihash('email', email) if email else ''
        attrs = (hashlib.md5(mid.encode()).hexdigest()
                 + (uidh or '-' * 64) + type_[0]
                 + '\t'.join([uid, uidh, eh, '', '', '', '{}']))
        ev = dict(type=type_, messageId=mid, **kw)
        if aid:
            ev['anonymousId'] = aid
        if uid:
            ev['userId'] = uid
        return self.ingest([(k('profile', aid), 'api', attrs,
                             json.dumps(ev, separators=(',', ':')))])

    def agg(self, day, field):
        return self.ingest([(k('agg', day), 'agg', '', field)])

    def consent(self, aid):
        entry = {'aid': aidh(aid), 'granted': ['analytics'],
                 'denied': ['marketing'], 'source': 'banner',
                 'version': '1', 'timestamp': self.ts}
        return self.ingest([(k('consent_log'), 'log', '',
                             json.dumps(entry))])

    def admin(self, fn, *ids):
        return self.c.fcall(fn, 0, P, 'r-%s-%d' % (fn, self.tick()),
                            'privacy', str(self.ts), *ids)


class _Any:
    def __eq__(self, other):
        return True

    def __repr__(self):
        return 'ANY'


ANY = _Any()


def idk(id_):
    """A stream id as a tuple that sorts like it."""
    return tuple(int(x) for x in id_.split('-'))


def id_before(id_):
    ms, seq = idk(id_)
    return '%d-%d' % ((ms, seq - 1) if seq else (ms - 1, 2 ** 64 - 1))


def aid_of(name):
    return hashlib.md5(name.encode()).hexdigest()


# who is who in the data set (build_old)
ANON = [aid_of('anon-%d' % i) for i in range(6)]
LONG = aid_of('long')                   # 60 hits: a trimmed timeline
D1, D2 = aid_of('d1'), aid_of('d2')     # person u-1's browsers
C = aid_of('c')                         # jane's browser (e-mail only)
F = aid_of('f')                         # identified by an API identify
Z = aid_of('z')                         # erased
DAY = time.strftime('%Y-%m-%d', time.gmtime())

# the old export's requests: one a person
PEOPLE = [['user_id:' + ihash('user_id', 'u-1')],
          ['email:' + ihash('email', 'jane@example.com')],
          ['anonymous_id:' + ANON[0]], ['anonymous_id:' + ANON[3]],
          ['anonymous_id:' + LONG], ['anonymous_id:' + F],
          ['email:' + ihash('email', 'f@example.com')],
          ['user_id:' + ihash('user_id', 'u-1'), 'anonymous_id:' + ANON[1]]]


def build_old(c):
    """The old data set: browsers, people, merges, API messages, the
    aggregates, the consent log, a batch id, an erasure.  Returns Old."""
    c.function_load(git_show('store/cdp.lua').replace('@REV@', 'old'),
                    replace=True)
    c.function_load(git_show('store/admin.lua').replace('@REV@', 'old'),
                    replace=True)
    # the destinations an old nginx registered (it had wh once)
    c.hset(k('destinations'), mapping={'crm': '1', 'gone': '4'})
    c.xgroup_create(k('out', 'crm'), GROUP, id='0', mkstream=True)
    o = Old(c, DESTS)
    for i, aid in enumerate(ANON):
        o.hits(aid, 1 + i % 4)
    o.hits(LONG, 60)
    assert c.exists(k('timeline_old', LONG))

    # u-1: two browsers merged into p<N> by the user id
    o.hits(D1, 3)
    o.identify(D1, uid='u-1')
    o.hits(D2, 2)
    o.identify(D2, uid='u-1')
    o.hits(D1, 35, new=False)           # p<N>'s timeline is trimmed too
    # jane: a known profile by her e-mail address alone, whose timeline
    # the merge of her browser trimmed (timeline_old:p<M>, which stays
    # under p<M> when p<M> merges below)
    o.hits(C, 30)
    o.identify(C, email='jane@example.com')
    jane = c.get(k('idx', 'email', ihash('email', 'jane@example.com')))
    assert c.exists(k('timeline_old', jane))
    # the two known profiles merge: u-1 is jane
    r = o.identify(D1, uid='u-1', email='jane@example.com')
    assert r[2] == 1, r                 # one merge
    o.hits(C, 2, new=False)

    # API messages: a track of u-1 without a browser, one on nobody, an
    # identify that links a browser, a duplicate
    assert o.api('', 'track', 'order-1', uid='u-1', event='Order')[0] == 1
    assert o.api('', 'track', 'nobody-1', event='Ping')[0] == 1
    o.hits(F, 2)
    assert o.api(F, 'identify', 'ident-f', email='f@example.com')[0] == 1
    r = o.api('', 'track', 'order-1', uid='u-1', event='Order')
    assert r[0] == 0 and r[6] == 1, r   # the duplicate

    # the day's aggregates, the consent log, a batch id
    o.agg(DAY, 'page|DE')
    o.agg(DAY, 'page|DE')
    o.agg(DAY, 'filtered:bot|--')
    o.consent(D1)
    o.consent(ANON[0])
    o.hits(ANON[4], 2, new=False, once=(k('once', 'host:1:1700000000000', '0'),
                                        5))

    # crm's deliverer: 8 entries delivered, 2 refused (dead letters), 20
    # read and not acknowledged (pending)
    assert len(o.deliver('crm', 'host:1', 30, ok=8, refused=2)) == 30
    # (the old erasure deletes the ids of the person's events from the
    # dead letters too, whose own ids are times: not the same ms)
    time.sleep(0.01)

    # an erased person: their identifiers in the suppression set; crm was
    # sent their events (everything after the pending ones is delivered):
    # a deletion notice, with an empty p
    o.hits(Z, 3)
    o.identify(Z, uid='zed')
    assert len(o.deliver('crm', 'host:2', 100000)) > 20
    assert c.exists(k('sent:{%s}' % Z))
    o.admin('cdp_erase', 'user_id:' + ihash('user_id', 'zed'))
    assert c.scard(k('suppressed')) >= 2
    assert not c.exists(k('sent:{%s}' % Z))
    assert [f for _, f in c.xrange(k('out', 'crm')) if 'delete' in f] \
        == [{'delete': ANY, 'p': ''}]
    o.hits(ANON[1], 2, new=False)       # unread
    assert c.xpending(k('out', 'crm'), GROUP)['pending'] == 20
    assert c.xlen(k('dead', 'crm')) == 2

    # segments (written by hand: the old library's need nginx's compiled
    # rules): the known profiles (one of them a link since u-1 and jane
    # merged), browsers (C and D2 links to a person's), and a set of many
    # (more than a step of the tests' small steps), spread over the
    # shards; the time-based rules' due set; a backfill under way
    people = [c.get(k('idx', 'user_id', ihash('user_id', 'u-1'))), jane]
    assert len(set(people)) == 2 and any(
        c.hget(k('profile', p), 'merged_into') for p in people), people
    c.sadd(k('segment', 'vip'), *people)
    c.sadd(k('segment', 'eu'), *ANON[:4], LONG, C, D2)
    c.sadd(k('segment', 'big'), *ANON, *(aid_of('seg-%d' % i)
                                        for i in range(300)))
    c.zadd(k('segments', 'due'), {x: o.ts + 1000 * i for i, x in
                                  enumerate([D2, LONG] + ANON + [
                                      aid_of('seg-%d' % i)
                                      for i in range(0, 300, 5)])})
    c.hset(k('segments:backfill'), mapping={'version': 'v', 'cursor': '77',
                                            'scanned': '3', 'done': '0'})
    # keys whose names do not change
    c.hset(k('browser', ANON[5]), mapping={'events': '9'})
    return o


def old_segments(c):
    """The old segment sets {name: members} and due set {pid: score},
    without the links (a merged profile's id: dropped), and the links."""
    sets = {m.group(1): c.smembers(key) for key in keys_of(c)
            for m in [SEGMENT_RE.match(key)] if m}
    due = dict(c.zrange(k('segments', 'due'), 0, -1, withscores=True))
    every = set(due).union(*sets.values())
    links = {x for x in every if c.hget(k('profile', x), 'merged_into')}
    return ({name: v - links for name, v in sets.items()},
            {x: v for x, v in due.items() if x not in links}, links)


def new_segments(c, names):
    """The sharded segment sets and due sets, checked to hold each
    member in its own shard's only: ({name: members}, {pid: score})."""
    sets = {}
    for name in names:
        sets[name] = set()
        for i in range(N):
            got = c.smembers(k('segment', tag(i), name))
            assert {cdp_shard.shard_of(x, N) for x in got} <= {i}, (name, i)
            assert not got & sets[name]
            sets[name] |= got
    due = {}
    for i in range(N):
        for x, v in c.zrange(k('segments', 'due', tag(i)), 0, -1,
                             withscores=True):
            assert cdp_shard.shard_of(x, N) == i and x not in due, (x, i)
            due[x] = v
    return sets, due


def content(c, key):
    t = c.type(key)
    if t == 'string':
        return t, c.get(key)
    if t == 'hash':
        return t, c.hgetall(key)
    if t == 'list':
        return t, c.lrange(key, 0, -1)
    if t == 'set':
        return t, sorted(c.smembers(key))
    if t == 'zset':
        return t, c.zrange(key, 0, -1, withscores=True)
    if t == 'stream':
        return t, c.xrange(key, '-', '+')
    return t, None


def keys_of(c):
    return sorted(c.scan_iter(match=P + ':*', count=1000))


def canonical(r, volatile=True):
    """Every key of the prefix: type, content, whether it has a TTL (raw
    bytes: the batch bitmaps are binary).  Without volatile, the
    migration's own counters of calls and times are left out."""
    c = raw_client(r)
    try:
        out = {}
        for key in sorted(c.scan_iter(match=P.encode() + b':*',
                                      count=1000)):
            t = c.type(key).decode()
            if t == 'string':
                v = c.get(key)
            elif t == 'hash':
                v = sorted(c.hgetall(key).items())
                if key == k('migration').encode() and not volatile:
                    v = [(f, x) for f, x in v if f not in (
                        b'steps', b'scanned', b'started_ms',
                        b'finished_ms', b'run_id')]
            elif t == 'list':
                v = c.lrange(key, 0, -1)
            elif t == 'set':
                v = sorted(c.smembers(key))
            elif t == 'zset':
                v = c.zrange(key, 0, -1, withscores=True)
            elif t == 'stream':
                v = (c.xrange(key, '-', '+'),
                     sorted((g['name'], g['last-delivered-id'])
                            for g in c.xinfo_groups(key)))
            else:
                v = t
            out[key.decode('latin-1')] = (t, v, c.pttl(key) > 0)
        return out
    finally:
        c.close()


def snapshot(r):
    c = raw_client(r)
    try:
        return [(key, c.dump(key), c.pttl(key))
                for key in c.scan_iter(count=1000)]
    finally:
        c.close()


def restore(r, snap):
    c = raw_client(r)
    try:
        c.flushdb()
        for key, data, pttl in snap:
            c.restore(key, max(pttl, 0), data)
    finally:
        c.close()


def load_current(r):
    p = subprocess.run([LOAD, '-p', str(r.port)], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=60)
    assert p.returncode == 0, p.stdout.decode()


def migrate(r, *args, timeout=300):
    """store/migrate.sh --prefix P ARGS -p PORT: (rc, stdout, stderr)."""
    p = subprocess.run([MIGRATE, '--prefix', P] + list(args)
                       + ['-p', str(r.port)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def step(c, n=1000, *extra):
    return c.fcall('cdp_migrate_step', 0, '%s|%d' % (P, N), str(n), *extra)


def export(c, ids, prefix):
    """The admin library's cdp_export of one person: its profiles."""
    out = json.loads(c.fcall('cdp_export', 0, prefix, 'r-export', 'privacy',
                             str(int(time.time() * 1000)), *ids))
    for p in out['profiles']:
        p['identifiers'] = sorted(p['identifiers'])
    return out['profiles']


def old_state(c):
    """What the old layout holds: {key: (type, content)}, and where every
    stream id listed by a profile belongs: {id: pid}."""
    state = {key: content(c, key) for key in keys_of(c)}
    owner = {}
    for key, (t, v) in state.items():
        m = re.match(r'^%s:(profile|timeline|timeline_old):(.*)$' % P, key)
        if not m:
            continue
        kind, pid = m.groups()
        ids = ([v['first_event']] if kind == 'profile'
               and 'first_event' in v else [] if kind == 'profile' else v)
        for i in ids:
            assert owner.get(i, pid) == pid, (i, owner[i], pid)
            owner[i] = pid
    return state, owner


@pytest.fixture
def old(redis_server):
    c = redis_server.client()
    o = build_old(c)
    yield o
    c.close()


# --------------------------------------------------------------------------

def test_migration_moves_every_key_and_event(redis_server, old):
    c = old.c
    # the old library's exports (they add to the audit stream: first)
    exports = [export(c, ids, P) for ids in PEOPLE]
    assert all(exports) and any(len(p[0]['events']) > 40 for p in exports)
    before, owner = old_state(c)
    old_stream = dict(c.xrange(k('events'), '-', '+'))
    assert len(old_stream) > 100
    orphans = set(old_stream) - set(owner)
    assert orphans, 'the API message on nobody is on no timeline'
    old_merges = c.xrange(k('merges'), '-', '+')
    old_consent = c.xrange(k('consent_log'), '-', '+')
    msgids = [key for key in before if key.startswith(k('msgids') + ':')]
    assert len(msgids) == 1 and c.ttl(msgids[0]) > 0, msgids
    agg_ttl = c.ttl(k('agg', DAY))
    assert agg_ttl > 0
    once = [key for key in before if key.startswith(k('once') + ':')]
    assert once
    # the destinations' streams: crm's and wh's out-streams, with entries
    # on nobody (p empty: an API message on nobody, the deletion notice),
    # crm's group with pending entries and its dead letters; what crm was
    # sent, by profile
    old_out = {name: c.xrange(k('out', name)) for name in ('crm', 'wh')}
    assert all(len(v) > 50 for v in old_out.values()), old_out
    assert any(f['p'] == '' and 'event' in f for _, f in old_out['crm'])
    pending = [x['message_id'] for x in
               c.xpending_range(k('out', 'crm'), GROUP, '-', '+', 1000)]
    assert len(pending) == 20
    old_dead = c.xrange(k('dead', 'crm'))
    assert len(old_dead) == 2 and old_dead[0][1]['status'] == '400'
    sent = {m.group(1): v for key, v in before.items()
            for m in [re.match(r'^%s:sent:\{([^{}]+)\}$' % P, key)] if m}
    assert len(sent) > 4 and any(pid.startswith('p') for pid in sent), sent
    seg_sets, seg_due, seg_links = old_segments(c)
    assert set(seg_sets) == set(SEGMENTS) and len(seg_sets['big']) > 300
    # C and D2 (browsers linked to their person) in eu, D2 in the due set,
    # the person's merged profile in vip
    assert len(seg_links) == 3 and {C, D2} < seg_links, seg_links
    assert len(seg_due) > 60

    load_current(redis_server)
    rc, out, err = migrate(redis_server)
    assert rc == 0, (out, err)
    assert 'phase done' in out and re.search(r'^done in \d+ s: ', out, re.M)
    assert 'phase out: ' in out and 'phase dead: ' in out, out

    after = keys_of(c)
    # no old name is left, but of the kinds that keep theirs
    assert [key for key in after if OLD_NAME_RE.match(key)] == []
    for key in after:
        assert ('{' in key or UNCHANGED_RE.match(key)
                or key == k('migration')), key
    assert not c.exists(k('migration', 'where'), k('migration', 'conflicts'))

    # every profile, ids, timeline, timeline_old and idx key: its content
    # under its new name
    for key, (t, v) in before.items():
        m = re.match(r'^%s:(profile|ids|timeline|timeline_old):(.*)$' % P,
                     key)
        if m:
            assert content(c, new_name(m.group(1), m.group(2))) == (t, v), key
            continue
        m = re.match(r'^%s:idx:([a-z_]+):(.*)$' % P, key)
        if m:
            assert content(c, new_name('idx', m.groups())) == (t, v), key
            continue
        if UNCHANGED_RE.match(key):
            assert content(c, key) == (t, v), key

    # every event once, with its id, in the stream of the shard of the
    # profile that lists it (shard 0: listed by nobody)
    where = {}
    for i in range(N):
        for id_, f in c.xrange(k('events', tag(i)), '-', '+'):
            assert id_ not in where, id_
            where[id_] = i
            assert f == old_stream[id_], id_
    assert set(where) == set(old_stream)
    for id_ in old_stream:
        want = cdp_shard.shard_of(owner[id_], N) if id_ in owner else 0
        assert where[id_] == want, (id_, owner.get(id_))
    assert len(set(where.values())) > 4         # spread over the shards

    # merges in the survivor's shard, the consent log in shard 0
    merges = []
    for i in range(N):
        for id_, f in c.xrange(k('merges', tag(i)), '-', '+'):
            assert cdp_shard.shard_of(f['to'], N) == i, f
            merges.append((id_, f))
    assert sorted(merges, key=lambda m: [int(x) for x in m[0].split('-')]) \
        == old_merges
    assert c.xrange(k('consent_log', tag(0)), '-', '+') == old_consent

    # the aggregates in shard 0 with their TTL; the messageIds and the
    # suppression set in every shard
    assert content(c, k('agg', tag(0), DAY)) == before[k('agg', DAY)]
    assert agg_ttl - 60 < c.ttl(k('agg', tag(0), DAY)) <= agg_ttl
    period = msgids[0].rsplit(':', 1)[1]
    for i in range(N):
        assert content(c, k('msgids', tag(i), period)) == before[msgids[0]]
        assert c.ttl(k('msgids', tag(i), period)) > 0
        assert content(c, k('suppressed', tag(i))) \
            == before[k('suppressed')]
    # every out-stream entry and dead letter in the stream of the shard of
    # its profile (p; shard 0 when empty), with its id; the deletion notice
    # in shard 0
    for kind, name, old_entries in (('out', 'crm', old_out['crm']),
                                    ('out', 'wh', old_out['wh']),
                                    ('dead', 'crm', old_dead)):
        got = {}
        for i in range(N):
            for id_, f in c.xrange(k(kind, tag(i), name)):
                assert i == (cdp_shard.shard_of(f['p'], N) if f['p']
                             else 0), (kind, name, id_, f)
                assert id_ not in got
                got[id_] = f
        assert got == dict(old_entries), (kind, name)
        assert not c.exists(k(kind, name))
    assert len({cdp_shard.shard_of(f['p'], N) for _, f in old_out['crm']
                if f['p']}) > 4                 # spread over the shards
    assert [f for _, f in c.xrange(k('out', tag(0), 'crm'))
            if 'delete' in f] == [{'delete': ANY, 'p': ''}]
    # crm's group on each shard's stream, just before the oldest entry it
    # had pending: nginx's deliverers read every pending entry again (and
    # those after it); wh had no group
    oldest = min(pending, key=idk)
    again = set()
    for i in range(N):
        assert [(g['name'], g['last-delivered-id'])
                for g in c.xinfo_groups(k('out', tag(i), 'crm'))] \
            == [(GROUP, id_before(oldest))]
        assert c.xinfo_groups(k('out', tag(i), 'wh')) == [] \
            if c.exists(k('out', tag(i), 'wh')) else True
        for _key, entries in c.xreadgroup(
                GROUP, 'host:1', {k('out', tag(i), 'crm'): '>'}):
            again.update(id_ for id_, _f in entries)
    assert set(pending) <= again
    assert again == {id_ for id_, _f in old_out['crm']
                     if idk(id_) >= idk(oldest)}
    # what each destination was sent about a profile, in its shard
    for pid, v in sent.items():
        assert content(c, k('sent', tag_of(pid), pid)) == v, pid
    # every segment member in its shard's set, but the links; the due
    # set's with their times; the old sets, the due set, the backfill
    # under way (it starts over, under its new name) gone
    assert new_segments(c, SEGMENTS) == (seg_sets, seg_due)
    assert len({cdp_shard.shard_of(x, N)
                for x in seg_sets['big']}) == N         # every shard's
    assert not c.exists(*(k('segment', name) for name in SEGMENTS),
                        k('segments', 'due'), k('segments:backfill'),
                        k('migration', 'segments'))

    st = c.hgetall(k('migration'))
    assert st['phase'] == 'done' and st['shards'] == str(N), st
    assert int(st['events']) == len(old_stream), st
    assert int(st['orphans']) == len(orphans), st
    assert int(st['merges']) == len(old_merges), st
    assert int(st['once']) == len(once), st
    assert int(st['out']) == sum(map(len, old_out.values())), st
    assert int(st['dead']) == len(old_dead), st
    assert int(st['sent']) == len(sent), st
    assert st['groups'] == '1', st
    assert int(st['segment']) == sum(map(len, seg_sets.values())), st
    assert int(st['due']) == len(seg_due), st
    assert st['segment_links'] == '4', st
    assert st['conflicts'] == '0' and st['left'] == '0', st
    assert not c.exists(k('migration', 'destinations'))

    # the current admin library exports what the old one did, event by
    # event in the same order, and the same merges and consent entries
    for ids, was in zip(PEOPLE, exports):
        assert export(c, ids, '%s|%d' % (P, N)) == was, ids


def test_interrupted_migration_ends_as_an_uninterrupted_one(redis_server,
                                                            old):
    c = old.c
    load_current(redis_server)
    snap = snapshot(redis_server)
    rc, out, err = migrate(redis_server)
    assert rc == 0, (out, err)
    whole = canonical(redis_server, volatile=False)
    assert k('events', tag(0)) in whole

    # again, killed in its keys phase (step 1: a call per key)
    restore(redis_server, snap)
    p = subprocess.Popen([MIGRATE, '--prefix', P, '--step', '1', '-p',
                          str(redis_server.port)], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert h.wait_until(lambda: int(c.hget(k('migration'), 'steps')
                                        or 0) >= 20, 30)
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)
    st = c.hgetall(k('migration'))
    assert st['phase'] in ('keys', 'events'), st
    assert c.exists(k('events'))

    # by hand, with other steps, into the events phase and part of it
    while c.hget(k('migration'), 'phase') == 'keys':
        r = step(c, 7)
        assert r[0] == 0, r
    for _ in range(3):
        r = step(c, 5)
        assert r[1] == 'events', r
    assert int(c.hget(k('migration'), 'events')) >= 15
    assert c.xlen(k('events')) > 0

    # on into the out phase, and part of crm's out-stream (the first name)
    while c.hget(k('migration'), 'phase') != 'out':
        r = step(c, 50)
        assert r[0] == 0, r
    for _ in range(3):
        r = step(c, 7)
        assert r[1] == 'out', r
    st = c.hgetall(k('migration'))
    assert st['name'] == 'crm' and st['cursor'] and int(st['out']) >= 21, st
    assert c.xlen(k('out', 'crm')) > 0 and c.exists(k('out', 'wh'))

    # on into the segments phase: a call moves at most its step of members
    # (of one set or more), the old sets shrink as the new ones fill
    while c.hget(k('migration'), 'phase') != 'segments':
        r = step(c, 50)
        assert r[0] == 0, r
    old_total = sum(c.scard(k('segment', name)) for name in SEGMENTS)
    moved = 0
    for _ in range(4):
        r = step(c, 25)
        assert r[1] == 'segments', r
        st = c.hgetall(k('migration'))
        now = sum(int(st[x]) for x in ('segment', 'due', 'segment_links'))
        assert 0 < now - moved <= 25, (now, moved)
        moved = now
    left = sum(c.scard(k('segment', name)) for name in SEGMENTS)
    assert left == old_total - moved > 0, (left, old_total, moved)
    assert c.exists(k('segment', 'big'), k('segments', 'due'))
    assert sum(c.scard(k('segment', tag(i), name)) for i in range(N)
               for name in SEGMENTS) == int(st['segment']) > 0

    # killed in it (step 1: a call per member)
    p = subprocess.Popen([MIGRATE, '--prefix', P, '--step', '1', '-p',
                          str(redis_server.port)], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert h.wait_until(lambda: int(c.hget(k('migration'), 'segment'))
                            >= int(st['segment']) + 10, 30)
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)
    assert c.hget(k('migration'), 'phase') == 'segments'
    assert c.exists(k('segment', 'big'), k('segments', 'due'))

    # then to the end
    rc, out, err = migrate(redis_server, '--step', '50')
    assert rc == 0, (out, err)
    assert canonical(redis_server, volatile=False) == whole

    # once done, a run changes nothing at all
    done = canonical(redis_server)
    rc, out, err = migrate(redis_server)
    assert rc == 0, (out, err)
    assert canonical(redis_server) == done
    assert step(c)[0:2] == [1, 'done']
    assert canonical(redis_server) == done

    # --again: another pass that finds nothing to move
    rc, out, err = migrate(redis_server, '--again')
    assert rc == 0, (out, err)
    st = c.hgetall(k('migration'))
    assert st['pass'] == '2' and st['phase'] == 'done', st
    again = canonical(redis_server, volatile=False)
    for key, v in whole.items():
        if key != k('migration'):
            assert again[key] == v, key
    assert set(again) == set(whole)


def test_nginx_serves_the_migrated_profiles(redis_server, old,
                                            nginx_factory, sink):
    c = old.c
    # what crm's group had read and not acknowledged (by messageId), the
    # deletion notice queued after it
    out_crm = dict(c.xrange(k('out', 'crm')))
    unacked = {json.loads(out_crm[x['message_id']]['event'])['messageId']
               for x in c.xpending_range(k('out', 'crm'), GROUP, '-', '+',
                                         1000)}
    assert len(unacked) == 20
    load_current(redis_server)
    rc, out, err = migrate(redis_server)
    assert rc == 0, (out, err)
    pid = c.get(new_name('idx', ('user_id', ihash('user_id', 'u-1'))))
    assert pid and pid.startswith('p'), pid
    person = new_name('profile', pid)
    anon = new_name('profile', ANON[2])
    before = {key: int(c.hget(key, 'events')) for key in (person, anon)}
    assert c.hget(new_name('profile', D2), 'merged_into') == pid

    n = nginx_factory(
        redis_server, prefix=P, keys=[SECRET],
        http_extra='cdp_destination crm purpose=analytics uri=/_dest/crm '
                   'flush=50ms;\n    ',
        locations=h.DEFAULT_LOCATIONS
        + h.DEST_LOCATION.replace('@SINKPORT@', str(sink.port)))
    # a browser of the person (linked to their profile), and an
    # anonymous browser, come back
    for aid in (D2, ANON[2]):
        r = n.hit('title=Back', cookie='cdp_aid=' + aid_cookie(aid))
        assert r.status == 200, r
        assert not r.set_cookies() or aid in r.set_cookies()[0], \
            r.set_cookies()
    assert h.wait_until(lambda: int(c.hget(person, 'events'))
                        == before[person] + 1
                        and int(c.hget(anon, 'events'))
                        == before[anon] + 1, 10), (
        c.hgetall(person), c.hgetall(anon), n.status())
    # each new event in the stream of its profile's shard, at the head of
    # its timeline, next to the migrated ones
    for p, aid in ((pid, D2), (ANON[2], ANON[2])):
        head = c.lindex(new_name('timeline', p), 0)
        e = c.xrange(k('events', tag_of(p)), head, head)
        assert e and json.loads(e[0][1]['event'])['anonymousId'] == aid, e
    assert c.xlen(k('events', tag_of(pid))) > 40
    assert not c.exists(k('events'), k('profile', D2), k('profile', pid))

    # crm's deliverers, one a shard, deliver what the old ones had not
    # acknowledged, and the deletion notice, then acknowledge all
    assert h.wait_until(lambda: unacked <= {e.get('messageId') for e in
                                            sink.events('/crm')}, 20), (
        len(sink.events('/crm')), n.status())
    assert h.wait_until(lambda: len(sink.notices('/crm')) == 1, 10)
    assert h.wait_until(lambda: sum(
        c.xpending(k('out', tag(i), 'crm'), GROUP)['pending']
        for i in range(N)) == 0, 10)


def test_a_taken_new_name_is_a_conflict(redis_server):
    """A key whose new name a new version wrote already keeps its old
    name, an event or out-stream entry older than its shard's stream stays
    in the old one (a dead letter gets a new id): counted, named, exit
    status 2, the rest moved.  Once resolved by hand, --again moves
    them."""
    c = redis_server.client()
    a = aid_of('x')
    b = next(x for x in (aid_of('y%d' % i) for i in range(100))
             if cdp_shard.shard_of(x, N) != 0)
    c.hset(k('profile', a), mapping={'events': '1', 'page_views': '1'})
    c.hset(new_name('profile', a), mapping={'events': '5'})
    # b's event is older than what b's shard's stream gave already
    c.xadd(k('events'), {'event': '{"b":1}'}, id='5-0')
    c.hset(k('profile', b), mapping={'events': '1', 'first_event': '5-0'})
    c.xadd(k('events', tag_of(b)), {'event': '{"new":1}'}, id='9-0')
    c.xdel(k('events', tag_of(b)), '9-0')       # its last id stays 9-0
    # so is its out-stream entry (and its dead letter) for crm; what crm
    # was sent about a is in a's shard already
    for kind in ('out', 'dead'):
        c.xadd(k(kind, 'crm'), {'event': '{"b":1}', 'p': b}, id='5-0')
        c.xadd(k(kind, tag_of(b), 'crm'), {'event': '{"new":1}', 'p': b},
               id='9-0')
        c.xdel(k(kind, tag_of(b), 'crm'), '9-0')
    c.sadd(k('sent:{%s}' % a), 'crm\ta:' + a)
    c.sadd(k('sent', tag_of(a), a), 'crm\ta:new')
    rc, out, err = migrate(redis_server)
    assert rc == 2, (out, err)
    assert 'conflicts=2' in out and 'left=2' in out, out
    assert k('migration:conflicts') in err
    assert c.smembers(k('migration', 'conflicts')) == {k('profile', a),
                                                       k('sent:{%s}' % a)}
    assert c.hgetall(k('profile', a)) == {'events': '1', 'page_views': '1'}
    assert c.hgetall(new_name('profile', a)) == {'events': '5'}
    assert c.smembers(k('sent', tag_of(a), a)) == {'crm\ta:new'}
    assert c.hgetall(new_name('profile', b))['first_event'] == '5-0'
    assert c.xlen(k('events')) == 1 and c.xlen(k('events', tag_of(b))) == 0
    assert c.xlen(k('out', 'crm')) == 1 \
        and c.xlen(k('out', tag_of(b), 'crm')) == 0
    dead = c.xrange(k('dead', tag_of(b), 'crm'))
    assert len(dead) == 1 and idk(dead[0][0]) > (9, 0), dead
    assert dead[0][1] == {'event': '{"b":1}', 'p': b}
    assert not c.exists(k('dead', 'crm'))
    # the index stays for the entry left
    assert c.hget(k('migration', 'where'), '5-0') \
        == str(cdp_shard.shard_of(b, N))

    # resolved by hand: the new profile goes (say, it was a test), the
    # shard's stream too; another pass moves what is left
    c.delete(new_name('profile', a), k('events', tag_of(b)),
             k('sent', tag_of(a), a), k('out', tag_of(b), 'crm'))
    rc, out, err = migrate(redis_server, '--again')
    assert rc == 0, (out, err)
    assert 'conflicts=0' in out and 'left=0' in out, out
    assert c.hgetall(new_name('profile', a)) == {'events': '1',
                                                 'page_views': '1'}
    assert c.xrange(k('events', tag_of(b))) == [('5-0', {'event': '{"b":1}'})]
    assert c.xrange(k('out', tag_of(b), 'crm')) \
        == [('5-0', {'event': '{"b":1}', 'p': b})]
    assert c.smembers(k('sent', tag_of(a), a)) == {'crm\ta:' + a}
    assert not c.exists(k('events'), k('profile', a), k('out', 'crm'),
                        k('sent:{%s}' % a), k('migration', 'where'),
                        k('migration', 'conflicts'),
                        k('migration', 'destinations'))
    c.close()


def test_a_redis_restart_mid_scan_starts_the_scan_over(redis_factory):
    """SCAN's cursor means nothing to another redis-server process (its
    hash seed is new): after a restart the keys phase starts over, and the
    migration still moves everything."""
    r = redis_factory(appendonly=True)
    c = r.client()
    build_old(c)
    before, _owner = old_state(c)
    load_current(r)
    with open(os.path.join(h.MAIN, 'store', 'migrate.lua')) as f:
        c.function_load(f.read().replace('@REV@', 'test'), replace=True)
    for _ in range(10):
        step(c, 3)
    st = c.hgetall(k('migration'))
    assert st['phase'] == 'keys' and st['cursor'] != '0', st
    c.close()
    r.stop()
    r.start()
    c = r.client()
    assert c.hget(k('migration'), 'cursor') == st['cursor']
    assert c.info('server')['run_id'] != st['run_id']
    step(c, 3)
    assert c.hget(k('migration'), 'run_id') == c.info('server')['run_id']
    rc, out, err = migrate(r)
    assert rc == 0, (out, err)
    assert [key for key in keys_of(c) if OLD_NAME_RE.match(key)] == []
    for key, (t, v) in before.items():
        m = re.match(r'^%s:(profile|ids|timeline|timeline_old):(.*)$' % P,
                     key)
        if m:
            assert content(c, new_name(m.group(1), m.group(2))) == (t, v), key
    assert int(c.hget(k('migration'), 'events')) > 100
    c.close()


def test_segments_join_the_new_sets(redis_server):
    """Old segment members go into the sharded sets a new version wrote
    already (a union), a due time into the new due set keeps the earlier
    of the two; a new name of another type is a conflict (the old set
    stays whole); links are dropped; every backfill state, old or new, is
    deleted.  --again moves what is resolved, and a set an old nginx wrote
    after the migration."""
    c = redis_server.client()
    ids = [aid_of('s%d' % i) for i in range(200)]
    a = ids[0]
    b = next(x for x in ids if cdp_shard.shard_of(x, N)
             != cdp_shard.shard_of(a, N))
    x = next(x for x in ids[1:] if cdp_shard.shard_of(x, N)
             == cdp_shard.shard_of(a, N))
    link = aid_of('link')
    c.hset(k('profile', link), mapping={'merged_into': 'p9'})
    c.sadd(k('segment', 's1'), a, b, link)
    c.sadd(k('segment', tag_of(a), 's1'), x)
    c.zadd(k('segments', 'due'), {a: 100, b: 500, link: 50})
    c.zadd(k('segments', 'due', tag_of(a)), {a: 300})
    c.zadd(k('segments', 'due', tag_of(b)), {b: 200})
    c.set(k('segment', 's2'), 'not a set')
    c.sadd(k('segment', 's3'), *ids)
    c.set(k('segment', tag_of(b), 's3'), 'not a set')
    c.hset(k('segments:backfill'), mapping={'cursor': '5', 'done': '0'})
    c.hset(k('segments', 'backfill', tag(0)), mapping={'done': '1'})

    rc, out, err = migrate(redis_server, '--step', '10')
    assert rc == 2, (out, err)
    assert 'conflicts=2' in out and 'segment=2 due=2 segment_links=2' in out
    assert c.smembers(k('migration', 'conflicts')) == {k('segment', 's2'),
                                                       k('segment', 's3')}
    assert c.smembers(k('segment', tag_of(a), 's1')) == {a, x}
    assert c.smembers(k('segment', tag_of(b), 's1')) == {b}
    assert c.zrange(k('segments', 'due', tag_of(a)), 0, -1,
                    withscores=True) == [(a, 100)]
    assert c.zrange(k('segments', 'due', tag_of(b)), 0, -1,
                    withscores=True) == [(b, 200)]
    assert not c.exists(k('segment', tag_of(link), 's1'),
                        k('segments', 'due', tag_of(link)))
    assert c.smembers(k('segment', 's3')) == set(ids)
    assert c.get(k('segment', 's2')) == 'not a set'
    assert not c.exists(k('segment', 's1'), k('segments', 'due'),
                        k('segments:backfill'),
                        k('segments', 'backfill', tag(0)),
                        k('migration', 'segments'))

    # resolved by hand; an old nginx wrote a segment meanwhile
    c.delete(k('segment', tag_of(b), 's3'), k('segment', 's2'))
    c.sadd(k('segment', 's4'), *ids[:50])
    rc, out, err = migrate(redis_server, '--step', '10', '--again')
    assert rc == 0, (out, err)
    assert 'conflicts=0' in out, out
    for name, want in (('s3', ids), ('s4', ids[:50])):
        got = {i: c.smembers(k('segment', tag(i), name)) for i in range(N)}
        assert set().union(*got.values()) == set(want), name
        for i, v in got.items():
            assert {cdp_shard.shard_of(y, N) for y in v} <= {i}, (name, i)
        assert not c.exists(k('segment', name))
    st = c.hgetall(k('migration'))
    # at most 10 members a call: 250 of them in more than 25
    assert st['segment'] == str(2 + 200 + 50), st
    assert int(st['steps']) > 25, st
    c.close()


def test_consumer_groups_of_the_old_stream(redis_server):
    """A reader's consumer group of <prefix>:events is created on every
    shard's stream: where it was, or before the oldest entry it has not
    acknowledged."""
    c = redis_server.client()
    for i in range(1, 6):
        c.xadd(k('events'), {'event': '{}'}, id='%d-0' % i)
    c.xgroup_create(k('events'), 'done', id='3-0')
    c.xgroup_create(k('events'), 'pending', id='0')
    c.xreadgroup('pending', 'w1', {k('events'): '>'}, count=4)
    c.xack(k('events'), 'pending', '1-0')       # 2-0 .. 4-0 pending
    rc, out, err = migrate(redis_server)
    assert rc == 0, (out, err)
    assert 'groups=2' in out, out
    for i in range(N):
        groups = {g['name']: g['last-delivered-id']
                  for g in c.xinfo_groups(k('events', tag(i)))}
        assert groups == {'done': '3-0',
                          'pending': '1-18446744073709551615'}, groups
    assert c.xlen(k('events', tag(0))) == 5 and not c.exists(k('events'))
    c.close()


def test_bad_arguments(redis_server):
    c = redis_server.client()
    rc, out, err = migrate(redis_server, '--shards', '2000')
    assert rc == 1 and 'bad prefix' in err, (out, err)
    rc, out, err = migrate(redis_server, '--step', 'x')
    assert rc == 1 and '--step' in err, (out, err)
    # a migration started with 16 shards goes on with 16 only
    c.hset(k('profile', aid_of('x')), 'events', '1')
    assert step(c, 1)[0] == 0
    rc, out, err = migrate(redis_server, '--shards', '8')
    assert rc == 1 and 'started with 16 shards, not 8' in err, (out, err)
    # an old stream that is not one stops it, saying so
    c.set(k('events'), 'x')
    rc, out, err = migrate(redis_server)
    assert rc == 1 and 'not a stream' in err, (out, err)
    c.delete(k('events'))
    rc, out, err = migrate(redis_server)
    assert rc == 0, (out, err)
    c.close()


@pytest.mark.skipif(not os.environ.get('CDP_MIGRATE_BENCH'),
                    reason='a measurement: CDP_MIGRATE_BENCH=1')
def test_migration_time(redis_server):
    """CDP_MIGRATE_BENCH=PROFILES (1 means 10000): that many browsers, 10
    hits each, a tenth of them identified into people of 2 browsers, with
    the old library; then the migration's time (printed, with -s).  With
    CDP_MIGRATE_BENCH_DESTS=D, D destinations take every event (the
    out-streams hold D times the events)."""
    n = int(os.environ['CDP_MIGRATE_BENCH'])
    n = 10000 if n == 1 else n
    nd = int(os.environ.get('CDP_MIGRATE_BENCH_DESTS') or 0)
    c = redis_server.client()
    c.function_load(git_show('store/cdp.lua').replace('@REV@', 'old'),
                    replace=True)
    o = Old(c, ','.join('d%d 1 100000000 0' % d for d in range(nd))
            or None)          # purpose analytics: every event goes
    t0 = time.monotonic()
    aids = [aid_of('bench-%d' % i) for i in range(n)]
    for j in range(0, n, 10):
        items = []
        for aid in aids[j:j + 10]:
            for i in range(10):
                kind = 'page:new' if i == 0 else 'page'
                items.append((k('profile', aid), kind, '',
                              o.event('page', aid)))
        o.ingest(items)
    for j in range(0, n // 10, 2):
        o.identify(aids[j], uid='bench-user-%d' % j)
        o.identify(aids[j + 1], uid='bench-user-%d' % j)
    made = time.monotonic() - t0
    xlen, dbsize = c.xlen(k('events')), c.dbsize()
    outs = [c.xlen(k('out', 'd%d' % d)) for d in range(nd)]
    assert outs == [xlen] * nd, outs
    mem = c.info('memory')['used_memory']
    load_current(redis_server)
    c.config_set('latency-tracking-info-percentiles', '50 99 100')
    c.config_resetstat()
    t0 = time.monotonic()
    rc, out, err = migrate(redis_server, timeout=3600)
    took = time.monotonic() - t0
    assert rc == 0, (out, err)
    fcall = c.info('commandstats')['cmdstat_fcall']
    print('\n%d profiles, %d events, %d destinations, %d keys (%d MB) '
          'made in %.1f s; migrated in %.1f s (%.1f s in Redis, %d calls '
          'of at most %.0f ms); memory after %d MB\n%s'
          % (n, xlen, nd, dbsize, mem >> 20, made, took,
             fcall['usec'] / 1e6, fcall['calls'],
             c.info('latencystats').get('latency_percentiles_usec_fcall',
                                        {}).get('p100', 0) / 1e3,
             c.info('memory')['used_memory'] >> 20, out.splitlines()[-1]))
    assert sum(c.xlen(k('events', tag(i))) for i in range(N)) == xlen
    for d in range(nd):
        assert sum(c.xlen(k('out', tag(i), 'd%d' % d))
                   for i in range(N)) == xlen
    c.close()
