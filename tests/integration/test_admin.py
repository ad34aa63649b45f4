"""The admin API (cdp_admin, ngx_cdp_admin.c; store/admin.lua,
docs/privacy.md) end to end: the real nginx with the module, a real
Redis, people made the way a site makes them (pixel hits with the
browser's cookie, logins whose
responses name the person through cdp_identify headers, the Segment server
API, the consent form), then read, exported, erased and unsuppressed
through /admin/ with bearer tokens, and every answer checked against what
is (and is not) left in Redis.

What erasure must leave: nothing that names the person in any key name or
any value of any key, stream entries included (raw user id, raw e-mail
address and phone number, the browsers' anonymous ids, their keyed hashes
h, the aidh SHA1 names, the profile ids), except the hashes in
<prefix>:suppressed:{<tag>} (every shard's copy) and the hashed
identifiers in <prefix>:audit; and
after it, nothing of theirs is stored again (pixel, identify, API) until
the suppression is lifted.
"""

import base64
import concurrent.futures
import hashlib
import json
import os
import re
import secrets
import threading
import time
import urllib.parse
import uuid

import pytest

import cdp_harness as h


TOKENS = {
    'marketer': 'mkt-' + secrets.token_urlsafe(24),
    'privacy': 'prv-' + secrets.token_urlsafe(24),
    'admin': 'adm-' + secrets.token_urlsafe(24),
}
WRONG_TOKEN = 'nope-' + secrets.token_urlsafe(24)
WRITE_KEY = 'wk-admin-' + secrets.token_hex(6)

# a second server block answering the login with the identity headers the
# test put in X-Test-* request headers (as in test_identity.py)
BACKEND = h.IDENTIFY_BACKEND

LOCATIONS = """\
location = /p.gif   { cdp_pixel; }
        location = /status  { cdp_status; }
        location /login     { cdp_identify on;
                              proxy_pass http://127.0.0.1:@BPORT@; }
        location = /consent { cdp_consent_endpoint; }
        location /admin/    { cdp_admin; }
        location /v1/       { cdp_api; cdp_write_key @WRITE_KEY@; }"""

HEX32_RE = re.compile(r'^[0-9a-f]{32}$')
HEX40_RE = re.compile(r'^[0-9a-f]{40}$')
HEX64_RE = re.compile(r'^[0-9a-f]{64}$')
RECEIPT_KEYS = {'receipt', 'profiles', 'identifiers', 'events', 'merges',
                'consent_log', 'suppressed', 'anonymous_ids',
                'destination_entries', 'deletion_notices', 'took_us'}


def write_tokens(path, tokens=TOKENS):
    with open(path, 'w') as f:
        f.write('# admin tokens of the tests: ROLE SHA256HEX\n\n')
        for role, tok in tokens.items():
            f.write('%s %s\n' % (role,
                                 hashlib.sha256(tok.encode()).hexdigest()))


def start(nginx_factory, redis, workdir, http_extra='', **kw):
    bport = h.free_port()
    tokens = os.path.join(workdir, 'tokens-%s' % secrets.token_hex(4))
    write_tokens(tokens)
    return nginx_factory(
        redis,
        http_extra=(BACKEND.replace('@BPORT@', str(bport))
                    + 'cdp_phone_country_code 49;\n'
                    + '    cdp_admin_tokens %s;\n    ' % tokens
                    + http_extra),
        locations=LOCATIONS.replace('@BPORT@', str(bport))
                           .replace('@WRITE_KEY@', WRITE_KEY), **kw)


@pytest.fixture
def ngx(nginx_factory, redis_server, workdir):
    return start(nginx_factory, redis_server, workdir)


# --------------------------------------------------------------------------
# requests

def admin(ngx, method, tail, token='privacy', body=None, headers=None):
    """A request to /admin/<tail> with the bearer token of a role (or a
    token string, or None)."""
    hd = dict(headers or {})
    if token is not None:
        hd['Authorization'] = 'Bearer ' + TOKENS.get(token, token)
    if body is not None:
        if not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        hd['Content-Type'] = 'application/json'
    return h.one_request(ngx.port, method, '/admin/' + tail, headers=hd,
                         body=body)


def jbody(r):
    ct = r.header('Content-Type') or ''
    assert ct.startswith('application/json'), (r, r.body)
    return json.loads(r.body.decode('utf-8'))


def ok_json(r):
    assert r.status == 200, (r, r.body)
    return jbody(r)


def err(r, status, code=None):
    assert r.status == status, (r, r.body)
    j = jbody(r)
    assert j['success'] is False, j
    if code:
        assert j['error'] == code, j
    return j


def erase(ngx, token='privacy', **ids):
    t0 = time.monotonic()
    r = admin(ngx, 'POST', 'erase', token, ids)
    wall = time.monotonic() - t0
    rec = ok_json(r)
    assert set(rec) == RECEIPT_KEYS, rec
    assert re.match(r'^[A-Za-z0-9_.:-]{1,128}$', rec['receipt']), rec
    for aidh in rec['anonymous_ids']:
        assert HEX40_RE.match(aidh), rec
    rec['_wall'] = wall
    return rec


def api(ngx, endpoint, msg):
    hd = {'Content-Type': 'application/json',
          'Authorization': 'Basic ' + base64.b64encode(
              ('%s:' % WRITE_KEY).encode()).decode()}
    return h.one_request(ngx.port, 'POST', '/v1/' + endpoint, headers=hd,
                         body=json.dumps(msg).encode())


def api_ok(ngx, endpoint, msg):
    r = api(ngx, endpoint, msg)
    assert r.status == 200, (r, r.body)
    assert jbody(r) == {'success': True}, r.body
    return r


def mid():
    return 'mid-' + uuid.uuid4().hex


class Browser(h.Browser):
    """The harness's browser, whose aid stays the same when the cookie is
    cleared, and whose login must succeed."""

    def __init__(self, ngx):
        super().__init__(ngx)
        self.last_aid = None

    @property
    def aid(self):
        return self.cookie.split('.')[0] if self.cookie else self.last_aid

    def _keep(self, r):
        super()._keep(r)
        if self.cookie:
            self.last_aid = self.cookie.split('.')[0]
        return r

    def login(self, **kw):
        r = super().login(**kw)
        assert r.status == 200, r
        return r

    def consent(self, body='grant=analytics&grant=marketing'):
        r = self.ngx.hit(path='/consent', method='POST', body=body.encode(),
                         headers={'Content-Type':
                                  'application/x-www-form-urlencoded'},
                         cookie='cdp_aid=' + self.cookie)
        assert r.status in (200, 303), (r, r.body)
        return r


# --------------------------------------------------------------------------
# Redis

# the identity graph's helpers live in the harness
key, idx, resolve, profile = h.key, h.idx, h.resolve, h.profile
members, merges, check_graph = h.members, h.merges, h.check_graph


def hsh(ngx, type_, value):
    return h.ident_hash(ngx.keys[0], type_, value)


def aidh(aid):
    return hashlib.sha1(('anonymous_id:' + aid).encode()).hexdigest()


def rget(ngx, fn, *a):
    c = ngx.rc()
    try:
        return getattr(c, fn)(*a)
    finally:
        c.close()


SHARDED_STREAMS = ('events', 'merges', 'consent_log')


def stream(ngx, name):
    """[(id, fields)] of <prefix>:<name>, oldest first; of events, merges
    and consent_log, every shard's stream (by id, then stream key, the
    order of store/admin.lua's answers)."""
    if name in SHARDED_STREAMS:
        return [(i, f) for _k, i, f in h.shard_entries(ngx, name)]
    c = ngx.rc()
    try:
        return c.xrange(key(ngx, name), '-', '+')
    finally:
        c.close()


def events(ngx):
    return [(i, json.loads(f['event'])) for i, f in stream(ngx, 'events')]


def events_at(ngx):
    """[((stream, id), event)]: the same id may be in two shards."""
    return [((k, i), json.loads(f['event']))
            for k, i, f in h.shard_entries(ngx, 'events')]


def suppressed(ngx):
    """The suppression set: every shard's copy, all equal."""
    c = ngx.rc()
    try:
        copies = [c.smembers(k) for k in ngx.shard_keys('suppressed')]
    finally:
        c.close()
    assert all(s == copies[0] for s in copies), [len(s) for s in copies]
    return copies[0]


def suppressed_exists(ngx):
    return rget(ngx, 'exists', *ngx.shard_keys('suppressed'))


def settle(ngx):
    st = ngx.wait_settled()
    assert st.queue == 0, st
    return st


def dump(ngx):
    """Every key of the database (not only the prefix's) with everything it
    holds: {key: [(where, text), ...]}, 'where' naming the field, member or
    stream entry."""
    c = ngx.rc()
    out = {}
    try:
        for k in c.scan_iter(match='*', count=1000):
            t = c.type(k)
            items = [('name', k)]
            if t == 'string':
                # bytes: the batch-id bitmaps (<prefix>:once:...) are binary
                v = c.execute_command('GET', k, NEVER_DECODE=True)
                items.append(('value', v.decode('latin-1')))
            elif t == 'hash':
                for f, v in c.hgetall(k).items():
                    items += [('field', f), ('value ' + f, v)]
            elif t == 'set':
                items += [('member', m) for m in c.smembers(k)]
            elif t == 'zset':
                items += [('member', m) for m in c.zrange(k, 0, -1)]
            elif t == 'list':
                items += [('item', v) for v in c.lrange(k, 0, -1)]
            elif t == 'stream':
                for eid, f in c.xrange(k, '-', '+'):
                    for fk, fv in f.items():
                        items += [('%s field' % eid, fk),
                                  ('%s %s' % (eid, fk), fv)]
            elif t != 'none':
                raise AssertionError('unexpected key type %s of %s' % (t, k))
            out[k] = items
    finally:
        c.close()
    return out


# --------------------------------------------------------------------------
# people

class Person:
    """A person of the test: raw identifiers, browsers, and (once built)
    their pids as Redis knows them."""

    def __init__(self, ngx, name):
        tag = secrets.token_hex(4)
        self.ngx = ngx
        self.uid = 'usr-%s-%s' % (name, tag)
        self.email = '%s.%s@example.com' % (name, tag)
        self.phone = '+49301%s' % ''.join(
            str(secrets.randbelow(10)) for _ in range(6))
        self.browsers = []
        self.pids = set()

    def browser(self):
        b = Browser(self.ngx)
        self.browsers.append(b)
        return b

    @property
    def aids(self):
        return [b.aid for b in self.browsers]

    def hashes(self):
        n = self.ngx
        return {'user_id:' + hsh(n, 'user_id', self.uid),
                'email:' + hsh(n, 'email', self.email),
                'phone:' + hsh(n, 'phone', self.phone)}

    def learn_pids(self):
        """The pids that hold the person now: the live one and every former
        one listed in it."""
        pid = idx(self.ngx, 'user_id', self.uid) or idx(
            self.ngx, 'email', self.email)
        assert pid, 'no profile for ' + self.uid
        self.pids.add(pid)
        for m in rget(self.ngx, 'smembers', key(self.ngx, 'ids', pid)):
            if m.startswith('profile_id:'):
                self.pids.add(m.split(':', 1)[1])
        return pid

    def needles(self, with_phone=True):
        """(raw values, hashed values, pid values) that name the person."""
        n = self.ngx
        raw = {self.uid, self.email}
        hashed = {hsh(n, 'user_id', self.uid), hsh(n, 'email', self.email)}
        if with_phone:
            raw.add(self.phone)
            hashed.add(hsh(n, 'phone', self.phone))
        for a in self.aids:
            raw.add(a)
            hashed.add(aidh(a))
        return raw, hashed, set(self.pids)

    def owns(self, e):
        return (e.get('anonymousId') in self.aids
                or e.get('userId') == self.uid)


def build_merged_person(ngx, p, consent=True):
    """Three browsers browse, then log in as the same user (the first with
    the e-mail address too); a fourth browses, is identified by phone (a
    second known profile), then by the e-mail address through the server
    API, which merges that profile in.  Two consent choices are logged."""
    b1, b2, b3, b4 = (p.browser() for _ in range(4))
    for i, b in enumerate((b1, b2, b3)):
        for j in range(2 + i):
            assert b.view('url=https://shop.example/a%d-%d' % (i, j)) \
                .status == 200
    if consent:
        b1.consent()
        b3.consent('grant=analytics')
    settle(ngx)
    b1.login(uid=p.uid, email=p.email, traits='{"plan":"pro"}')
    settle(ngx)
    b2.login(uid=p.uid)
    b3.login(uid=p.uid)
    b4.view('url=https://shop.example/b4')
    b4.view('url=https://shop.example/b4-2')
    settle(ngx)
    b4.login(phone=p.phone)
    settle(ngx)
    p2 = idx(ngx, 'phone', p.phone)
    assert p2 and p2 != idx(ngx, 'user_id', p.uid), p2
    api_ok(ngx, 'identify', {'anonymousId': b4.aid, 'messageId': mid(),
                             'traits': {'email': p.email}})
    api_ok(ngx, 'track', {'userId': p.uid, 'event': 'Bought',
                          'messageId': mid()})
    b2.view('url=https://shop.example/after')
    settle(ngx)
    pid = p.learn_pids()
    p.pids.add(p2)
    assert pid != p2
    # one person holding everything
    for b in p.browsers:
        assert resolve(ngx, b.aid) == pid, (b.aid, pid)
    assert idx(ngx, 'phone', p.phone) == pid
    assert idx(ngx, 'email', p.email) == pid
    ms = rget(ngx, 'smembers', key(ngx, 'ids', pid))
    assert {'anonymous_id:' + a for a in p.aids} <= ms, ms
    assert p.hashes() <= ms, ms
    assert 'profile_id:' + p2 in ms, ms
    return pid


def build_simple_person(ngx, p, views=3, consent=True):
    b = p.browser()
    for i in range(views):
        assert b.view('url=https://shop.example/s%d' % i).status == 200
    if consent:
        b.consent()
    settle(ngx)
    b.login(uid=p.uid, email=p.email)
    # each request is a connection of its own, and two workers batch on
    # their own: the view must not reach Redis before the login
    settle(ngx)
    b.view('url=https://shop.example/logged-in')
    settle(ngx)
    return p.learn_pids()


def person_snapshot(ngx, p):
    """What must survive another person's erasure, unchanged."""
    pid = idx(ngx, 'user_id', p.uid)
    c = ngx.rc()
    try:
        return {
            'pid': pid,
            'profile': c.hgetall(key(ngx, 'profile', pid)),
            'ids': c.smembers(key(ngx, 'ids', pid)),
            'timeline': c.lrange(key(ngx, 'timeline', pid), 0, -1),
            'links': {a: resolve(ngx, a) for a in p.aids},
            'idx': {t: c.get(key(ngx, 'idx', t, hsh(ngx, t, v)))
                    for t, v in (('user_id', p.uid), ('email', p.email))},
            'events': [(i, e) for i, e in events_at(ngx) if p.owns(e)],
            # the events the person's profiles name, in their shards
            'person_events': sorted(h.person_events(ngx, pid)),
            'merges': [(i, f) for i, f in stream(ngx, 'merges')
                       if {f.get('from'), f.get('to'), f.get('id')}
                       & (set(p.aids) | {pid} | {
                           hsh(ngx, 'user_id', p.uid),
                           hsh(ngx, 'email', p.email)})],
            'consent_log': [(i, f) for i, f in stream(ngx, 'consent_log')
                            if any(aidh(a) in f['entry'] for a in p.aids)],
        }
    finally:
        c.close()


def sid(stream_id):
    """A stream id as a tuple that compares like the id."""
    ms, seq = stream_id.split('-')
    return int(ms), int(seq)


def pid_re(pid):
    return re.compile(r'(?<![0-9A-Za-z])%s(?![0-9A-Za-z])' % re.escape(pid))


def assert_no_trace(ngx, p, with_phone=True):
    """No key and no value anywhere names the person, but for their hashes
    in <prefix>:suppressed:{<tag>} (every copy) and the hashed identifiers
    (field ids) of <prefix>:audit entries."""
    raw, hashed, pids = p.needles(with_phone)
    pid_res = [pid_re(x) for x in pids]
    sup_keys = set(ngx.shard_keys('suppressed'))
    audit_key = key(ngx, 'audit')
    found = []
    for k, items in dump(ngx).items():
        for where, text in items:
            low = text.lower()
            hits = [v for v in raw if v.lower() in low]
            hits += [x.pattern for x in pid_res if x.search(text)]
            allowed = ((k in sup_keys and where == 'member')
                       or (k == audit_key and where.endswith(' ids')))
            if not allowed:
                hits += [v for v in hashed if v in low]
            if hits:
                found.append((k, where, text[:200], hits))
    assert not found, 'traces of the erased person:\n' + '\n'.join(
        map(repr, found[:30]))


def assert_gone(ngx, p):
    """Their keys, one by one (a sharper message than assert_no_trace)."""
    c = ngx.rc()
    try:
        for x in list(p.pids) + p.aids:
            for kind in ('profile', 'ids', 'timeline', 'timeline_old',
                         'browser'):
                assert not c.exists(key(ngx, kind, x)), key(ngx, kind, x)
        for t, v in (('user_id', p.uid), ('email', p.email),
                     ('phone', p.phone)):
            assert not c.exists(key(ngx, 'idx', t, hsh(ngx, t, v))), (t, v)
    finally:
        c.close()
    assert [e for _i, e in events(ngx) if p.owns(e)] == []


def assert_suppressed(ngx, p, with_phone=True):
    sup = suppressed(ngx)
    want = {'user_id:' + hsh(ngx, 'user_id', p.uid),
            'email:' + hsh(ngx, 'email', p.email)}
    if with_phone:
        want.add('phone:' + hsh(ngx, 'phone', p.phone))
    want |= {'anonymous_id:' + aidh(a) for a in p.aids}
    assert want <= sup, (want - sup, sup)
    for m in sup:
        t, v = m.split(':', 1)
        assert (t in ('user_id', 'email', 'phone') and HEX64_RE.match(v)) \
            or (t == 'anonymous_id' and HEX40_RE.match(v)), m
    return sup


def status_delta(ngx, before):
    return ngx.status().delta(before)


# --------------------------------------------------------------------------
# erasure

@pytest.mark.parametrize('by', ['email', 'user_id', 'anonymous_id'])
def test_erase_one_identifier_erases_the_person(ngx, by):
    alice, bob = Person(ngx, 'alice'), Person(ngx, 'bob')
    build_simple_person(ngx, alice)
    build_simple_person(ngx, bob)
    # a second browser of Alice's, anonymous until it logs in
    b2 = alice.browser()
    b2.view('url=https://shop.example/other-device')
    settle(ngx)
    b2.login(uid=alice.uid)
    settle(ngx)
    keep = person_snapshot(ngx, bob)
    ev_alice = [e for _i, e in events(ngx) if alice.owns(e)]
    assert len(ev_alice) >= 7, ev_alice
    pr = ok_json(admin(ngx, 'GET', 'profiles?email=' + alice.email,
                       'marketer'))
    assert pr['profile_id'] in alice.pids, pr

    ident = {'email': alice.email, 'user_id': alice.uid,
             'anonymous_id': alice.aids[1]}[by]
    rec = erase(ngx, **{by: ident})

    assert rec['profiles'] == 1, rec
    assert rec['events'] == len(ev_alice), (rec, len(ev_alice))
    # user_id, email, two browsers
    assert rec['identifiers'] == 4, rec
    assert rec['merges'] == 2, rec
    assert rec['consent_log'] == 1, rec
    assert sorted(rec['anonymous_ids']) == sorted(aidh(a)
                                                  for a in alice.aids), rec
    assert rec['suppressed'] == 4, rec

    assert_gone(ngx, alice)
    assert_suppressed(ngx, alice, with_phone=False)
    assert_no_trace(ngx, alice, with_phone=False)
    for q in ('email=' + alice.email, 'user_id=' + alice.uid,
              'anonymous_id=' + alice.aids[0]):
        err(admin(ngx, 'GET', 'profiles?' + q, 'marketer'), 404, 'not_found')
    # Bob as he was
    assert person_snapshot(ngx, bob) == keep
    pr = ok_json(admin(ngx, 'GET', 'profiles?email=' + bob.email,
                       'marketer'))
    assert pr['profile_id'] == keep['pid'], pr
    check_graph(ngx)


def test_erase_anonymous_browser(ngx):
    """A browser never identified: its own profile goes, by its id."""
    anon, bob = Person(ngx, 'anon'), Person(ngx, 'bob')
    b = anon.browser()
    for i in range(4):
        b.view('url=https://shop.example/anon%d' % i)
    build_simple_person(ngx, bob)
    settle(ngx)
    assert rget(ngx, 'hgetall', key(ngx, 'profile', b.aid))['events'] == '4'
    keep = person_snapshot(ngx, bob)
    pr = ok_json(admin(ngx, 'GET', 'profiles?anonymous_id=' + b.aid))
    assert pr['profile_id'] == b.aid, pr

    rec = erase(ngx, anonymous_id=b.aid)
    assert rec['profiles'] == 1 and rec['events'] == 4, rec
    assert rec['anonymous_ids'] == [aidh(b.aid)], rec
    assert not rget(ngx, 'exists', key(ngx, 'profile', b.aid))
    anon.pids = {b.aid}
    assert_no_trace(ngx, anon, with_phone=False)
    assert person_snapshot(ngx, bob) == keep

    # the next hit with the old cookie: cleared, nothing stored
    before, xlen = ngx.status(), ngx.xlen()
    r = ngx.hit('url=https://shop.example/back', cookie='cdp_aid=' + b.cookie)
    assert h.is_gif(r), r
    v, attrs = h.cookie_of(r)
    assert v == '' and attrs.get('max-age') == '0', r.set_cookies()
    settle(ngx)
    assert ngx.xlen() == xlen
    assert not rget(ngx, 'exists', key(ngx, 'profile', b.aid))
    assert status_delta(ngx, before).c('cdp_suppressed_hits_total') == 1


def test_erase_merged_person_leaves_no_trace(ngx):
    alice, bob = Person(ngx, 'alice'), Person(ngx, 'bob')
    build_merged_person(ngx, alice)
    build_simple_person(ngx, bob)
    check_graph(ngx)
    keep = person_snapshot(ngx, bob)
    assert keep['consent_log'] and keep['merges'], keep
    ev_alice = [e for _i, e in events(ngx) if alice.owns(e)]
    n_merges = len([1 for _i, f in stream(ngx, 'merges')
                    if {f['from'], f['to']} & (alice.pids | set(alice.aids))])
    n_consent = len([1 for _i, f in stream(ngx, 'consent_log')
                     if any(aidh(a) in f['entry'] for a in alice.aids)])
    assert n_merges == 5 and n_consent == 2, (n_merges, n_consent)
    xlen = ngx.xlen()

    rec = erase(ngx, email=alice.email)
    print('\nreceipt', rec)

    assert rec['profiles'] == 1, rec
    assert rec['events'] == len(ev_alice), (rec, len(ev_alice))
    # user_id, email, phone, 4 browsers, the absorbed profile p<N>
    assert rec['identifiers'] == 8, rec
    assert rec['merges'] == n_merges and rec['consent_log'] == n_consent, rec
    assert sorted(rec['anonymous_ids']) == sorted(aidh(a)
                                                  for a in alice.aids), rec
    assert rec['suppressed'] == 7, rec
    assert ngx.xlen() == xlen - len(ev_alice)

    assert_gone(ngx, alice)
    assert_suppressed(ngx, alice)
    assert_no_trace(ngx, alice)
    assert person_snapshot(ngx, bob) == keep
    check_graph(ngx)

    # erasing again finds nobody, and is audited too
    rec2 = erase(ngx, email=alice.email)
    assert rec2['profiles'] == 0 and rec2['events'] == 0, rec2
    assert_no_trace(ngx, alice)
    audit = ok_json(admin(ngx, 'GET', 'audit?since=0'))
    assert [a['receipt'] for a in audit if a['op'] == 'erase'] == [
        rec['receipt'], rec2['receipt']], audit


def test_after_erasure_pixel_clears_cookie_and_stores_nothing(ngx):
    alice, bob = Person(ngx, 'alice'), Person(ngx, 'bob')
    build_merged_person(ngx, alice, consent=False)
    build_simple_person(ngx, bob, consent=False)
    erase(ngx, user_id=alice.uid)
    settle(ngx)
    keep = person_snapshot(ngx, bob)
    xlen, before = ngx.xlen(), ngx.status()

    for b in alice.browsers:
        r = ngx.hit('url=https://shop.example/back',
                    cookie='theme=dark; cdp_aid=' + b.cookie)
        assert h.is_gif(r), r
        cookies = [c for c in r.set_cookies() if c.startswith('cdp_aid=')]
        assert len(cookies) == 1, r.set_cookies()
        v, attrs = h.cookie_of(r)
        assert v == '' and attrs.get('max-age') == '0', cookies
        assert attrs.get('path') == '/', cookies
    # Bob's browser is not touched
    r = ngx.hit('url=https://shop.example/bob',
                cookie='cdp_aid=' + bob.browsers[0].cookie)
    assert (h.cookie_of(r)[1] or {}).get('max-age') != '0', r.set_cookies()

    st = settle(ngx)
    d = st.delta(before)
    assert d.c('cdp_suppressed_hits_total') == 4, d
    assert d.accepted == 1 and d.stored == 1, d      # Bob's hit
    assert ngx.xlen() == xlen + 1
    assert_gone(ngx, alice)
    assert_no_trace(ngx, alice)
    after = person_snapshot(ngx, bob)
    assert int(after['profile']['events']) == \
        int(keep['profile']['events']) + 1


def test_after_erasure_api_and_identify_are_dropped(ngx):
    alice, bob = Person(ngx, 'alice'), Person(ngx, 'bob')
    build_merged_person(ngx, alice, consent=False)
    build_simple_person(ngx, bob, consent=False)
    erase(ngx, email=alice.email)
    settle(ngx)
    keep = person_snapshot(ngx, bob)
    fresh = secrets.token_hex(16)

    calls = [
        ('identify', {'anonymousId': fresh, 'messageId': mid(),
                      'traits': {'email': alice.email.upper()}}),
        ('identify', {'userId': alice.uid, 'messageId': mid(),
                      'traits': {'plan': 'back'}}),
        ('identify', {'userId': 'usr-new-' + secrets.token_hex(3),
                      'messageId': mid(),
                      'traits': {'phone': alice.phone}}),
        ('track', {'userId': alice.uid, 'event': 'Bought',
                   'messageId': mid()}),
        ('track', {'anonymousId': alice.aids[2], 'event': 'Viewed',
                   'messageId': mid()}),
        ('page', {'userId': alice.uid, 'name': 'Home', 'messageId': mid()}),
        ('batch', {'batch': [
            {'type': 'track', 'userId': alice.uid, 'event': 'B1',
             'messageId': mid()},
            {'type': 'identify', 'anonymousId': alice.aids[0],
             'messageId': mid(), 'traits': {'x': 1}}]}),
    ]
    for endpoint, msg in calls:
        xlen, before = ngx.xlen(), ngx.status()
        api_ok(ngx, endpoint, msg)
        st = settle(ngx)
        d = st.delta(before)
        n = len(msg['batch']) if endpoint == 'batch' else 1
        assert d.c('cdp_events_dropped_total{reason="erased"}') == n, (
            endpoint, msg, d)
        assert d.stored == 0, (endpoint, msg, d)
        assert ngx.xlen() == xlen, (endpoint, msg)

    # an identify by a login response (cdp_identify) is dropped too
    b = Browser(ngx)
    b.view('url=https://shop.example/newcomer')
    settle(ngx)
    xlen, before = ngx.xlen(), ngx.status()
    b.login(uid=alice.uid, email=alice.email)
    d = settle(ngx).delta(before)
    assert d.c('cdp_events_dropped_total{reason="erased"}') == 1, d
    assert ngx.xlen() == xlen
    # the newcomer's browser stays anonymous: it is nobody's erased browser
    assert rget(ngx, 'hgetall', key(ngx, 'profile', b.aid)).get(
        'merged_into') is None

    assert not rget(ngx, 'exists', key(ngx, 'profile', fresh))
    assert_gone(ngx, alice)
    assert_no_trace(ngx, alice)
    assert person_snapshot(ngx, bob) == keep
    check_graph(ngx)


def test_hits_during_erasure_do_not_bring_them_back(ngx):
    alice, bob = Person(ngx, 'alice'), Person(ngx, 'bob')
    build_merged_person(ngx, alice, consent=False)
    build_simple_person(ngx, bob, consent=False)
    # some weight, so that the erasure takes a while: 1500 more events
    for i in range(15):
        api_ok(ngx, 'batch', {'batch': [
            {'type': 'track', 'userId': alice.uid, 'event': 'E%d' % j,
             'messageId': mid()} for j in range(100)]})
    settle(ngx)
    keep = person_snapshot(ngx, bob)
    cookies = [b.cookie for b in alice.browsers]
    before = ngx.status()

    total, lock = 200, threading.Lock()
    sent = [0]
    after = [None]          # hits sent when the erasure answered
    results = []            # (monotonic time sent, cleared?)
    erase_done = threading.Event()
    erase_started = threading.Event()

    def worker(k):
        c = h.Client(ngx.port)
        try:
            while True:
                with lock:
                    if erase_done.is_set() and sent[0] >= max(
                            total, after[0] + 20):
                        return
                    sent[0] += 1
                    i = sent[0]
                    if i == 40:
                        erase_started.set()
                ck = cookies[i % len(cookies)]
                t_sent = time.monotonic()
                r = ngx.hit('url=https://shop.example/race%d' % i,
                            cookie='cdp_aid=' + ck, client=c)
                assert r.status == 200, r
                v, attrs = h.cookie_of(r)
                with lock:
                    results.append((t_sent,
                                    attrs is not None
                                    and attrs.get('max-age') == '0'))
                if i % 10 == 0:
                    # the server API too
                    api_ok(ngx, 'track', {'userId': alice.uid,
                                          'event': 'race',
                                          'messageId': mid()})
        finally:
            c.close()

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        futs = [ex.submit(worker, k) for k in range(8)]
        assert erase_started.wait(30)
        try:
            rec = erase(ngx, user_id=alice.uid)
        finally:
            with lock:
                after[0] = sent[0]
                erase_done.set()
        t_done = time.monotonic()   # the receipt is in our hands
        for f in futs:
            f.result()

    settle(ngx)
    cleared = [t for t, c in results if c]
    kept = [t for t, c in results if not c]
    print('\nhits %d: %d before the erasure took effect, %d cleared; '
          'receipt %s' % (len(results), len(kept), len(cleared), rec))
    assert len(results) >= total
    assert rec['profiles'] == 1 and rec['events'] > 1500, rec
    assert kept and cleared, (len(kept), len(cleared))
    # every hit sent after the erasure answered had its cookie cleared
    assert not [t for t in kept if t > t_done], 'a cookie kept after'
    d = ngx.status().delta(before)
    assert d.c('cdp_suppressed_hits_total') == len(cleared), d

    # nothing of theirs came back: no key, no event, no trace
    assert_gone(ngx, alice)
    at = [a for a in ok_json(admin(ngx, 'GET', 'audit?since=0'))
          if a['receipt'] == rec['receipt']][0]['id']
    late = [(i, e) for i, e in events(ngx)
            if alice.owns(e) and sid(i) > sid(at)]
    assert late == [], late[:3]
    assert not [e for _i, e in events(ngx)
                if e.get('anonymousId') in alice.aids]
    assert_no_trace(ngx, alice)
    assert person_snapshot(ngx, bob)['profile'] == keep['profile']
    check_graph(ngx)


# --------------------------------------------------------------------------
# roles, errors

def test_roles_and_tokens(ngx):
    alice = Person(ngx, 'alice')
    build_simple_person(ngx, alice, consent=False)
    q = 'profiles?email=' + alice.email
    before = ngx.status()

    # no token, a wrong token, a malformed header: 401 with the challenge
    for hd in ({}, {'Authorization': 'Bearer ' + WRONG_TOKEN},
               {'Authorization': 'Bearer'},
               {'Authorization': 'Basic ' + base64.b64encode(
                   (TOKENS['admin'] + ':').encode()).decode()},
               {'Authorization': TOKENS['admin']},
               # a hash of the file is not a token
               {'Authorization': 'Bearer ' + hashlib.sha256(
                   TOKENS['admin'].encode()).hexdigest()}):
        for method, tail in (('GET', q), ('POST', 'erase'),
                             ('GET', 'export?email=' + alice.email),
                             ('GET', 'audit?since=0')):
            r = admin(ngx, method, tail, None, headers=hd,
                      body={'email': alice.email}
                      if method == 'POST' else None)
            err(r, 401, 'unauthorized')
            assert r.header('WWW-Authenticate', '').startswith('Bearer'), r

    # the marketer reads profiles, nothing else
    pr = ok_json(admin(ngx, 'GET', q, 'marketer'))
    assert pr['profile_id'] == idx(ngx, 'user_id', alice.uid), pr
    assert pr['fields']['user_id'] == alice.uid, pr
    assert pr['fields']['trait.email'] == alice.email, pr
    assert 'email:' + hsh(ngx, 'email', alice.email) in pr['identifiers']
    assert [e['event']['type'] for e in pr['recent_events']][:2] == [
        'page', 'identify'], pr
    err(admin(ngx, 'POST', 'erase', 'marketer', {'email': alice.email}),
        403, 'forbidden')
    err(admin(ngx, 'GET', 'export?email=' + alice.email, 'marketer'), 403)
    err(admin(ngx, 'POST', 'unsuppress', 'marketer',
              {'email': alice.email}), 403)
    err(admin(ngx, 'GET', 'audit?since=0', 'marketer'), 403)
    assert idx(ngx, 'email', alice.email), 'a refused erase erased'
    assert not suppressed_exists(ngx)
    # the read is audited, with its receipt; no 403 and no 401 is
    assert [(f['op'], f['role'], f['receipt'])
            for _, f in stream(ngx, 'audit')] == [
        ('read', 'marketer', pr['receipt'])], 'a refusal was audited'

    # privacy and admin read, export and audit; "bearer" in any case
    for role in ('privacy', 'admin'):
        assert ok_json(admin(ngx, 'GET', q, role))['profile_id'] == \
            pr['profile_id']
        ex = ok_json(admin(ngx, 'GET', 'export?user_id=' + alice.uid, role))
        assert [p['profile_id'] for p in ex['profiles']] == [
            pr['profile_id']], ex
        assert isinstance(ok_json(admin(ngx, 'GET', 'audit?since=0', role)),
                          list)
    r = h.one_request(ngx.port, 'GET', '/admin/' + q, headers={
        'Authorization': 'bearer ' + TOKENS['marketer']})
    assert ok_json(r)['profile_id'] == pr['profile_id']
    d = ngx.status().delta(before)
    assert d.c('cdp_admin_denied_total') == 6 * 4 + 4, d

    # admin erases
    rec = erase(ngx, 'admin', user_id=alice.uid)
    assert rec['profiles'] == 1, rec
    audit = ok_json(admin(ngx, 'GET', 'audit?since=0', 'admin'))
    assert [(a['op'], a['role']) for a in audit] == [
        ('read', 'marketer'), ('read', 'privacy'), ('export', 'privacy'),
        ('read', 'admin'), ('export', 'admin'), ('read', 'marketer'),
        ('erase', 'admin')], audit

    # no token, valid or not, is ever written to the logs
    logs = ngx.read(ngx.error_log) + ngx.read(ngx.access_log)
    for tok in list(TOKENS.values()) + [WRONG_TOKEN]:
        assert tok not in logs, 'a token in the logs'
        assert hashlib.sha256(tok.encode()).hexdigest() not in logs


def test_errors(ngx):
    alice = Person(ngx, 'alice')
    build_simple_person(ngx, alice, consent=False)

    err(admin(ngx, 'GET', 'profiles?email=nobody.%s@example.com'
              % secrets.token_hex(3), 'marketer'), 404, 'not_found')
    err(admin(ngx, 'GET', 'profiles?user_id=nobody-%s'
              % secrets.token_hex(3)), 404, 'not_found')
    err(admin(ngx, 'GET', 'profiles?anonymous_id=' + secrets.token_hex(16)),
        404, 'not_found')
    err(admin(ngx, 'GET', 'profiles?profile_id=p999999'), 404, 'not_found')
    j = err(admin(ngx, 'GET', 'profiles?email=not-an-email', 'marketer'),
            400, 'invalid_field')
    assert j.get('field') == 'email', j
    err(admin(ngx, 'GET', 'profiles?phone=abc'), 400, 'invalid_field')
    err(admin(ngx, 'GET', 'profiles?profile_id=P1;DEL'), 400,
        'invalid_field')
    err(admin(ngx, 'GET', 'profiles'), 400, 'missing_field')
    err(admin(ngx, 'GET', 'profiles?colour=red'), 400, 'missing_field')

    err(admin(ngx, 'GET', 'erase?email=' + alice.email), 405,
        'method_not_allowed')
    err(admin(ngx, 'PUT', 'erase', body={'email': alice.email}), 405)
    err(admin(ngx, 'DELETE', 'profiles?email=' + alice.email), 405)
    err(admin(ngx, 'POST', 'audit', body={}), 405)
    err(admin(ngx, 'GET', 'delete?email=' + alice.email), 404,
        'unknown_endpoint')
    err(admin(ngx, 'GET', 'profiles/extra?email=' + alice.email), 404)

    err(admin(ngx, 'POST', 'erase', body=b'{"email":'), 400, 'invalid_field')
    err(admin(ngx, 'POST', 'erase', body=b'["x"]'), 400, 'invalid_field')
    err(admin(ngx, 'POST', 'erase', body={}), 400, 'missing_field')
    err(admin(ngx, 'POST', 'erase', body={'email': 'not-an-email'}), 400)
    err(admin(ngx, 'POST', 'erase', body={'email': [alice.email, 5]}), 400)
    err(admin(ngx, 'POST', 'erase', body={'email': [
        'u%d@example.com' % i for i in range(101)]}), 400,
        'too_many_identifiers')
    err(admin(ngx, 'GET', 'audit?since=yesterday'), 400, 'invalid_field')

    # none of these erased or suppressed anything; the four reads of
    # nobody (404) were audited, the refused requests were not
    assert idx(ngx, 'email', alice.email)
    assert not suppressed_exists(ngx)
    assert [(f['op'], f['profiles']) for _, f in stream(ngx, 'audit')] \
        == [('read', '0')] * 4
    # an identifier given in another form finds the same profile
    pr = ok_json(admin(ngx, 'GET', 'profiles?email=%20'
                       + alice.email.upper().replace('@', '%40')))
    assert pr['profile_id'] == idx(ngx, 'email', alice.email), pr


def test_profiles_and_export_by_post(ngx):
    """POST with a JSON body reads as GET does, and keeps the identifiers
    out of the request line (access logs)."""
    alice = Person(ngx, 'alice')
    pid = build_simple_person(ngx, alice, consent=False)
    pr = ok_json(admin(ngx, 'POST', 'profiles', 'marketer',
                       {'email': ' ' + alice.email.upper()}))
    assert pr['profile_id'] == pid, pr
    got = ok_json(admin(ngx, 'GET', 'profiles?user_id=' + alice.uid,
                        'marketer'))
    assert got.pop('receipt') != pr.pop('receipt')
    assert pr == got
    ex = ok_json(admin(ngx, 'POST', 'export', 'privacy',
                       {'user_id': alice.uid}))
    assert [p['profile_id'] for p in ex['profiles']] == [pid], ex
    err(admin(ngx, 'POST', 'export', 'marketer', {'user_id': alice.uid}),
        403, 'forbidden')
    err(admin(ngx, 'POST', 'profiles', 'marketer',
              {'email': 'nobody@example.com'}), 404, 'not_found')
    err(admin(ngx, 'POST', 'profiles', 'marketer', {}), 400,
        'missing_field')
    log = ngx.read(ngx.access_log)
    assert '/admin/profiles' in log and '/admin/export' in log, log
    assert alice.email not in log.lower(), 'an e-mail address in the log'
    assert alice.uid in log      # the GET above: the request line has it


# --------------------------------------------------------------------------
# export, unsuppress, audit

def test_export_holds_events_merges_and_consent(ngx):
    alice, bob = Person(ngx, 'alice'), Person(ngx, 'bob')
    pid = build_merged_person(ngx, alice)
    build_simple_person(ngx, bob)
    want_events = [(i, e) for i, e in events(ngx) if alice.owns(e)]
    values = alice.pids | set(alice.aids) | {
        v.split(':', 1)[1] for v in alice.hashes()}
    want_merges = [f for _i, f in stream(ngx, 'merges')
                   if {f.get('from'), f.get('to'), f.get('id')} & values]
    want_consent = [(i, json.loads(f['entry']))
                    for i, f in stream(ngx, 'consent_log')
                    if json.loads(f['entry'])['aid']
                    in {aidh(a) for a in alice.aids}]
    assert len(want_events) >= 15 and len(want_merges) == 5 \
        and len(want_consent) == 2, (want_events, want_merges, want_consent)
    want_at = {i for i, e in events_at(ngx) if alice.owns(e)}
    n_all = ngx.xlen()
    assert len(want_at) == len(want_events)
    # the export's events are those the person's profiles name, wherever
    # the merges left them
    assert want_at == set(h.person_events(ngx, pid))

    for q in ('email=' + alice.email, 'user_id=' + alice.uid,
              'anonymous_id=' + alice.aids[3],
              'phone=' + urllib.parse.quote(alice.phone, safe=''),
              # a "+" typed as it is stays a "+", not a space
              'phone=' + alice.phone,
              'profile_id=' + pid):
        ex = ok_json(admin(ngx, 'GET', 'export?' + q))
        assert set(ex) == {'receipt', 'profiles'}, ex
        assert len(ex["profiles"]) == 1, (q, ex)
        p = ex['profiles'][0]
        assert p['profile_id'] == pid, p
        assert p['fields']['user_id'] == alice.uid
        assert p['fields']['trait.email'] == alice.email
        assert p['fields']['trait.phone'] == alice.phone
        assert p['fields']['trait.plan'] == 'pro'
        assert set(p['identifiers']) == alice.hashes() | {
            'anonymous_id:' + a for a in alice.aids} | {
            'profile_id:' + x for x in alice.pids - {pid}}, p['identifiers']
        # every event, oldest first, as stored
        got = [(e['id'], e['event']) for e in p['events']]
        assert got == want_events, (len(got), len(want_events))
        assert p['merges'] == want_merges, p['merges']
        assert [(c['id'], c['entry']) for c in p['consent_log']] == \
            want_consent, p['consent_log']
        # Bob is not in it
        text = json.dumps(ex)
        assert bob.uid not in text and bob.email not in text
        assert bob.aids[0] not in text

    # the several identifiers of one person: one profile; two people: two
    ex = ok_json(admin(ngx, 'GET', 'export?email=%s&user_id=%s' % (
        alice.email, alice.uid)))
    assert len(ex['profiles']) == 1, ex
    ex = ok_json(admin(ngx, 'GET', 'export?email=%s&email=%s' % (
        alice.email, bob.email)))
    assert len(ex['profiles']) == 2, ex
    assert ok_json(admin(ngx, 'GET', 'export?email=nobody@example.com')) \
        ['profiles'] == []
    # export changed nothing but the audit
    assert [(i, e) for i, e in events(ngx) if alice.owns(e)] == want_events
    check_graph(ngx)

    # what the export showed is what the erasure deletes
    rec = erase(ngx, user_id=alice.uid)
    assert rec['events'] == len(want_events), rec
    assert rec['merges'] == len(want_merges), rec
    assert rec['consent_log'] == len(want_consent), rec
    left = {i for i, _e in events_at(ngx)}
    assert not left & want_at, sorted(left & want_at)[:5]
    assert len(left) == n_all - len(want_at)
    assert ok_json(admin(ngx, 'GET', 'export?user_id=' + alice.uid)) \
        ['profiles'] == []


# (on Redis Cluster unsuppress is a saga, a call a shard: the same answers)
def test_unsuppress_lets_them_come_back(ngx):
    alice, bob = Person(ngx, 'alice'), Person(ngx, 'bob')
    old_pid = build_simple_person(ngx, alice, consent=False)
    build_simple_person(ngx, bob, consent=False)
    b = alice.browsers[0]
    erase(ngx, email=alice.email)
    settle(ngx)
    # suppressed: the cookie is cleared, the login stores nothing
    r = ngx.hit('url=https://shop.example/x', cookie='cdp_aid=' + b.cookie)
    assert (h.cookie_of(r)[1] or {}).get('max-age') == '0', r.set_cookies()

    rec = ok_json(admin(ngx, 'POST', 'unsuppress', 'privacy', {
        'email': alice.email, 'user_id': alice.uid,
        'anonymous_id': b.aid}))
    assert rec['removed'] == 3, rec
    assert not (suppressed(ngx)
                & ({'anonymous_id:' + aidh(b.aid)} | alice.hashes()))

    # the pixel keeps the cookie again and stores the hit
    xlen, before = ngx.xlen(), ngx.status()
    r = ngx.hit('url=https://shop.example/back', cookie='cdp_aid=' + b.cookie)
    v, attrs = h.cookie_of(r)
    assert attrs is None or attrs.get('max-age') != '0', r.set_cookies()
    st = settle(ngx)
    assert ngx.xlen() == xlen + 1
    d = st.delta(before)
    assert d.c('cdp_suppressed_hits_total') == 0 and d.stored == 1, d
    assert rget(ngx, 'hget', key(ngx, 'profile', b.aid), 'events') == '1'

    # a new identify makes a fresh profile: new pid, idx keys back
    b.login(uid=alice.uid, email=alice.email)
    settle(ngx)
    new_pid = idx(ngx, 'user_id', alice.uid)
    assert new_pid and new_pid != old_pid, (old_pid, new_pid)
    assert idx(ngx, 'email', alice.email) == new_pid
    assert resolve(ngx, b.aid) == new_pid
    p = rget(ngx, 'hgetall', key(ngx, 'profile', new_pid))
    assert p['user_id'] == alice.uid and int(p['events']) == 1, p
    pr = ok_json(admin(ngx, 'GET', 'profiles?email=' + alice.email,
                       'marketer'))
    assert pr['profile_id'] == new_pid, pr
    # the old events are gone for good
    assert len(pr['recent_events']) == 2, pr
    check_graph(ngx)


def test_unsuppress_profile_id_is_a_bad_request(ngx):
    # profile ids are never suppressed (docs/privacy.md): a client error
    alice = Person(ngx, 'alice')
    pid = build_simple_person(ngx, alice, consent=False)
    erase(ngx, user_id=alice.uid)
    j = err(admin(ngx, 'POST', 'unsuppress', 'privacy',
                  {'profile_id': pid}), 400, 'invalid_field')
    assert j.get('field') == 'profile_id', j


def test_audit_entries(ngx):
    alice = Person(ngx, 'alice')
    build_merged_person(ngx, alice)
    t0 = int(time.time() * 1000)
    ex = ok_json(admin(ngx, 'GET', 'export?user_id=' + alice.uid, 'admin'))
    rec = erase(ngx, 'privacy', email=alice.email,
                anonymous_id=alice.aids[1])
    un = ok_json(admin(ngx, 'POST', 'unsuppress', 'privacy', {
        'anonymous_id': alice.aids[0], 'phone': alice.phone}))
    t1 = int(time.time() * 1000)

    # (on a cluster the audit is read from the node of its slot)
    audit = ok_json(admin(ngx, 'GET', 'audit?since=%d' % t0))
    want = [('export', 'admin', ex['receipt']),
            ('erase', 'privacy', rec['receipt']),
            ('unsuppress', 'privacy', un['receipt'])]
    assert [(a['op'], a['role'], a['receipt']) for a in audit] == want, \
        audit
    e_ex, e_er = audit[:2]
    assert e_ex['ids'] == ['user_id:' + hsh(ngx, 'user_id', alice.uid)]
    assert sorted(e_er['ids']) == sorted([
        'email:' + hsh(ngx, 'email', alice.email),
        'anonymous_id:' + aidh(alice.aids[1])]), e_er
    e_un = audit[2]
    assert sorted(e_un['ids']) == sorted([
        'anonymous_id:' + aidh(alice.aids[0]),
        'phone:' + hsh(ngx, 'phone', alice.phone)]), e_un
    assert e_un['identifiers'] == 2 and e_un['profiles'] == 0, e_un
    assert e_ex['profiles'] == 1 and e_ex['events'] == len(
        ex['profiles'][0]['events']), e_ex
    assert e_er['profiles'] == 1 and e_er['events'] == rec['events'], e_er
    assert e_er['identifiers'] == rec['identifiers'], e_er
    for a in audit:
        assert t0 <= a['at'] <= t1, a
        assert int(a['id'].split('-')[0]) >= t0, a
        assert isinstance(a['took_us'], int) and a['took_us'] >= 0, a

    # no raw identifier in the audit, as the API shows it or in Redis
    text = json.dumps(audit) + json.dumps(stream(ngx, 'audit'))
    for v in [alice.uid, alice.email, alice.phone] + alice.aids:
        assert v.lower() not in text.lower(), v

    # since filters by Redis's clock
    assert ok_json(admin(ngx, 'GET', 'audit?since=%d' % (t1 + 60000))) == []
    assert len(ok_json(admin(ngx, 'GET', 'audit'))) == len(want)


def test_profile_reads_are_audited(ngx):
    """Marketers read personal data (traits, e-mail address): every read
    of a profile through the admin API leaves an audit entry, with the
    reader's role, the receipt of the answer and the identifier hashed; a
    read of nobody is an entry too."""
    alice = Person(ngx, 'alice')
    build_merged_person(ngx, alice)
    t0 = int(time.time() * 1000)

    pr = ok_json(admin(ngx, 'GET', 'profiles?email=' + alice.email,
                       'marketer'))
    assert pr['receipt'].startswith('r-') and len(pr['receipt']) == 18, pr
    assert pr['fields']['trait.email'] == alice.email, pr
    by_post = ok_json(admin(ngx, 'POST', 'profiles', 'privacy',
                            {'user_id': alice.uid}))
    assert by_post['receipt'] != pr['receipt'], by_post
    assert by_post['profile_id'] == pr['profile_id'], by_post
    err(admin(ngx, 'GET', 'profiles?email=nobody@example.org', 'marketer'),
        404, 'not_found')
    t1 = int(time.time() * 1000)

    audit = ok_json(admin(ngx, 'GET', 'audit?since=%d' % t0, 'privacy'))
    reads = [a for a in audit if a['op'] == 'read']
    assert [(a['role'], a['receipt'], a['ids'], a['profiles'])
            for a in reads[:2]] == [
        ('marketer', pr['receipt'],
         ['email:' + hsh(ngx, 'email', alice.email)], 1),
        ('privacy', by_post['receipt'],
         ['user_id:' + hsh(ngx, 'user_id', alice.uid)], 1)], audit
    assert len(reads) == 3, audit
    assert reads[2]['role'] == 'marketer' and reads[2]['profiles'] == 0
    assert reads[2]['ids'] == [
        'email:' + hsh(ngx, 'email', 'nobody@example.org')], reads[2]
    assert reads[0]['events'] == len(pr['recent_events']), reads[0]
    for a in reads:
        assert t0 <= a['at'] <= t1, a

    # no raw identifier in the audit stream
    text = json.dumps(stream(ngx, 'audit'))
    for v in [alice.uid, alice.email, alice.phone, 'nobody@example.org'] \
            + alice.aids:
        assert v.lower() not in text.lower(), v


# --------------------------------------------------------------------------
# cost

def test_erase_10000_events_under_a_second(ngx):
    alice, bob = Person(ngx, 'alice'), Person(ngx, 'bob')
    build_simple_person(ngx, bob, consent=False)
    b = alice.browser()
    b.view('url=https://shop.example/heavy')
    settle(ngx)
    b.login(uid=alice.uid, email=alice.email)
    settle(ngx)
    xlen0 = ngx.xlen()

    def send(k):
        api_ok(ngx, 'batch', {'batch': [
            {'type': 'track', 'userId': alice.uid, 'event': 'E',
             'properties': {'k': k, 'j': j}, 'messageId': mid()}
            for j in range(100)]})

    t = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        list(ex.map(send, range(100)))
    st = settle(ngx)
    fill = time.monotonic() - t
    assert ngx.xlen() == xlen0 + 10000, (ngx.xlen(), st)
    mine = len([1 for _i, e in events(ngx) if alice.owns(e)])
    assert mine == 10000 + 2, mine
    keep = person_snapshot(ngx, bob)

    rec = erase(ngx, user_id=alice.uid)
    print('\n10,000 events made in %.2f s; erase: wall %.1f ms, took_us %d '
          '(%.1f ms in Redis); receipt events %d' % (
              fill, rec['_wall'] * 1000, rec['took_us'],
              rec['took_us'] / 1000.0, rec['events']))
    assert rec['events'] == 10000 + 2, rec
    assert rec['_wall'] < 1.0, rec
    assert 0 < rec['took_us'] < 1000000, rec
    assert rec['took_us'] / 1e6 <= rec['_wall'], rec
    assert ngx.xlen() == xlen0 - 2
    assert_gone(ngx, alice)
    assert_no_trace(ngx, alice, with_phone=False)
    assert person_snapshot(ngx, bob) == keep


def test_erase_and_export_past_the_timeline_cap(nginx_factory, redis_server,
                                                workdir):
    """With cdp_timeline_max 20, a person with about 200 events: the
    timelines keep 20 ids (at most 36 before a trim), the trims drop the
    rest into timeline_old, the person's and its browsers' (40 views each:
    a merge leaves them on the links, each in its shard), and export and
    erasure still reach every event the streams hold."""
    ngx = start(nginx_factory, redis_server, workdir,
                http_extra='cdp_timeline_max 20;\n    ')
    alice, bob = Person(ngx, 'alice'), Person(ngx, 'bob')
    build_simple_person(ngx, bob, consent=False)
    b1, b2 = alice.browser(), alice.browser()
    for i in range(40):
        assert b1.view('url=https://shop.example/b1-%d' % i).status == 200
        assert b2.view('url=https://shop.example/b2-%d' % i).status == 200
    settle(ngx)
    b1.login(uid=alice.uid, email=alice.email)
    settle(ngx)
    b2.login(uid=alice.uid)
    settle(ngx)
    for k in range(4):
        api_ok(ngx, 'batch', {'batch': [
            {'type': 'track', 'userId': alice.uid, 'event': 'E',
             'properties': {'k': k, 'j': j}, 'messageId': mid()}
            for j in range(30)]})
    settle(ngx)

    # (ids of two shards' streams may be equal: an event is its id and
    # its JSON)
    mine = [(i, json.dumps(e, sort_keys=True)) for i, e in events(ngx)
            if alice.owns(e)]
    assert len(mine) == 80 + 2 + 120, len(mine)
    assert len(set(mine)) == len(mine)
    pid = idx(ngx, 'user_id', alice.uid)
    assert rget(ngx, 'llen', key(ngx, 'timeline', pid)) <= 20 + 16
    assert rget(ngx, 'exists', key(ngx, 'timeline_old', pid))
    # the browsers' 40 views each stayed on their links, trimmed too
    for a in alice.aids:
        assert rget(ngx, 'llen', key(ngx, 'timeline', a)) <= 20 + 16
        assert rget(ngx, 'exists', key(ngx, 'timeline_old', a))
        assert rget(ngx, 'hget', key(ngx, 'profile', a), 'first_event')

    ex = ok_json(admin(ngx, 'GET', 'export?user_id=' + alice.uid))
    got = [(e['id'], json.dumps(e['event'], sort_keys=True))
           for p in ex['profiles'] for e in p['events']]
    assert sorted(got) == sorted(mine) and len(set(got)) == len(got), (
        len(got), len(mine))

    keep = person_snapshot(ngx, bob)
    rec = erase(ngx, email=alice.email)
    assert rec['events'] == len(mine), rec
    assert_gone(ngx, alice)
    assert_no_trace(ngx, alice, with_phone=False)
    assert person_snapshot(ngx, bob) == keep


# --------------------------------------------------------------------------
# the edge's suppression set: shared, kept across reloads, loaded by another
# nginx from Redis

def test_suppression_survives_reload_and_reaches_another_nginx(
        ngx, nginx_factory, redis_server, workdir):
    alice = Person(ngx, 'alice')
    build_simple_person(ngx, alice, consent=False)
    b = alice.browsers[0]
    erase(ngx, user_id=alice.uid)

    ngx.reload()
    r = ngx.hit('url=https://shop.example/r', cookie='cdp_aid=' + b.cookie)
    assert (h.cookie_of(r)[1] or {}).get('max-age') == '0', r.set_cookies()

    # a second nginx of the same site (same secret, prefix, Redis): it
    # reads <prefix>:suppressed when it connects
    other = start(nginx_factory, redis_server, workdir, prefix=ngx.prefix,
                  keys=ngx.keys)

    def cleared():
        r = other.hit('url=https://shop.example/o',
                      cookie='cdp_aid=' + b.cookie)
        return (h.cookie_of(r)[1] or {}).get('max-age') == '0'
    assert h.wait_until(cleared, 5.0, 0.1), 'the other nginx kept the cookie'
    settle(other)
    settle(ngx)
    assert_gone(ngx, alice)
    assert_no_trace(ngx, alice, with_phone=False)


# --------------------------------------------------------------------------
# bodies, timeouts

def test_erase_body_of_many_identifiers(ngx):
    """Up to 100 identifiers a request, the person among unknown ones (who
    are suppressed too: erasing someone never seen)."""
    alice = Person(ngx, 'alice')
    build_simple_person(ngx, alice, consent=False)
    others = ['someone-%03d' % i for i in range(99)]
    rec = erase(ngx, user_id=others + [alice.uid])
    # the 99 unknown user ids, Alice's user id, e-mail address, browser
    assert rec['profiles'] == 1 and rec['suppressed'] == 99 + 3, rec
    assert_gone(ngx, alice)
    sup = suppressed(ngx)
    assert 'user_id:' + hsh(ngx, 'user_id', others[5]) in sup
    err(admin(ngx, 'POST', 'erase', 'privacy',
              json.dumps({'user_id': others, 'pad': 'x' * 70000})), 413)


def test_erase_body_over_16k(ngx):
    """A body larger than client_body_buffer_size (16k) is written to a
    temporary file by nginx: still read, up to 65536 bytes."""
    alice = Person(ngx, 'alice')
    build_simple_person(ngx, alice, consent=False)
    # user ids of up to 256 bytes
    others = ['someone-%03d-%s' % (i, 'x' * 240) for i in range(99)]
    body = json.dumps({'user_id': others + [alice.uid]})
    assert 16384 < len(body) < 65536, len(body)
    rec = ok_json(admin(ngx, 'POST', 'erase', 'privacy', body))
    assert rec['profiles'] == 1 and rec['suppressed'] == 99 + 3, rec
    assert_gone(ngx, alice)


def test_erase_when_redis_does_not_answer(nginx_factory, redis_server,
                                          workdir):
    ngx = start(nginx_factory, redis_server, workdir,
                http_extra='cdp_api_timeout 500ms;')
    alice = Person(ngx, 'alice')
    build_simple_person(ngx, alice, consent=False)
    b = alice.browsers[0]
    t0 = int(time.time() * 1000)
    redis_server.pause()
    try:
        r = admin(ngx, 'POST', 'erase', 'privacy', {'user_id': alice.uid})
        j = err(r, 503, 'unavailable')
        assert 'audit' in j['message'], j
        assert r.elapsed < 2.0, r.elapsed
    finally:
        redis_server.resume()
    # the erasure was sent: it completes, and the audit says so
    audit = h.wait_until(lambda: [a for a in ok_json(admin(
        ngx, 'GET', 'audit?since=%d' % t0)) if a['op'] == 'erase'], 5.0)
    assert audit and audit[0]['profiles'] == 1, audit
    assert_gone(ngx, alice)
    # the store drops the browser's hits
    settle(ngx)
    xlen, before = ngx.xlen(), ngx.status()
    ngx.hit('url=https://shop.example/t', cookie='cdp_aid=' + b.cookie)
    d = settle(ngx).delta(before)
    assert ngx.xlen() == xlen
    assert d.c('cdp_events_dropped_total{reason="erased"}') \
        + d.c('cdp_suppressed_hits_total') == 1, d
    assert not rget(ngx, 'exists', key(ngx, 'profile', b.aid))


def test_erase_after_a_timeout_still_clears_cookies(nginx_factory,
                                                    redis_server, workdir):
    # the admin request gives up after 300 ms; the connection to Redis
    # waits 10 s for a reply, so it stays up while Redis is paused for 1 s
    ngx = start(nginx_factory, redis_server, workdir,
                http_extra='cdp_api_timeout 300ms;',
                redis_params='timeout=10s')
    # past the worker's first sync of the suppression set (200 ms after
    # start, or 1 s later when Redis was not ready): a sync running while
    # Redis is paused would pick the erasure up and hide the bug
    time.sleep(2.0)
    alice = Person(ngx, 'alice')
    build_simple_person(ngx, alice, consent=False)
    b = alice.browsers[0]
    t0 = int(time.time() * 1000)
    before = ngx.status()
    redis_server.pause()
    try:
        err(admin(ngx, 'POST', 'erase', 'privacy', {'user_id': alice.uid}),
            503, 'unavailable')
        time.sleep(0.7)
    finally:
        redis_server.resume()
    assert h.wait_until(lambda: ok_json(admin(
        ngx, 'GET', 'audit?since=%d' % t0)), 5.0)
    assert_gone(ngx, alice)
    assert ngx.status().delta(before).c('cdp_redis_disconnects_total') == 0
    time.sleep(0.2)
    r = ngx.hit('url=https://shop.example/t', cookie='cdp_aid=' + b.cookie)
    assert (h.cookie_of(r)[1] or {}).get('max-age') == '0', r.set_cookies()


# --------------------------------------------------------------------------
# the checks themselves

def test_trace_scan_finds_what_is_planted(ngx):
    """assert_no_trace() is what the erasure tests rest on: it must see
    every kind of trace in every kind of key, and let through only the
    hashes of the suppression set and of the audit's ids."""
    alice = Person(ngx, 'alice')
    pid = build_simple_person(ngx, alice, consent=False)
    erase(ngx, email=alice.email)
    assert_no_trace(ngx, alice, with_phone=False)
    aid = alice.aids[0]
    plants = [
        ('set', key(ngx, 'x1'), 'user_id:' + hsh(ngx, 'user_id', alice.uid)),
        ('set', key(ngx, 'x2'), 'note ' + alice.email.upper()),
        ('set', key(ngx, 'x3'), aidh(aid)),
        ('set', 'elsewhere:' + aid, '1'),
        ('set', key(ngx, 'x4'), '{"to":"%s"}' % pid),
        ('hset', key(ngx, 'x5'), {'user': alice.uid}),
        ('sadd', key(ngx, 'x6'), aid),
        ('rpush', key(ngx, 'x7'), 'a-' + hsh(ngx, 'email', alice.email)),
        ('xadd', ngx.stream_of(aid),
         {'event': '{"anonymousId":"%s"}' % aid}),
        ('xadd', ngx.shard_keys('merges')[5], {'from': pid, 'to': 'p999'}),
        ('xadd', ngx.shard_keys('consent_log')[7],
         {'entry': '{"aid":"%s"}' % aidh(aid)}),
        ('xadd', key(ngx, 'audit'), {'ids': 'x', 'receipt': aidh(aid)}),
        ('xadd', key(ngx, 'audit'), {'ids': 'user_id:' + alice.uid}),
        ('sadd', ngx.shard_keys('suppressed')[3], 'raw:' + alice.email),
        ('set', key(ngx, 'profile', 'x' + aid), '1'),
    ]
    for cmd, k, v in plants:
        c = ngx.rc()
        try:
            if cmd == 'set':
                c.set(k, v)
            elif cmd == 'hset':
                c.hset(k, mapping=v)
            elif cmd == 'sadd':
                c.sadd(k, v)
            elif cmd == 'rpush':
                c.rpush(k, v)
            else:
                eid = c.xadd(k, v)
            with pytest.raises(AssertionError):
                assert_no_trace(ngx, alice, with_phone=False)
            if cmd in ('sadd',):
                c.srem(k, v)
            elif cmd == 'xadd':
                c.xdel(k, eid)
            else:
                c.delete(k)
        finally:
            c.close()
        assert_no_trace(ngx, alice, with_phone=False)
    # a pid is matched as a word: p1 is not p10
    other = Person(ngx, 'other')
    other.pids = {'p1'}
    c = ngx.rc()
    try:
        c.set(key(ngx, 'x8'), 'p10 p21 xp1 p1x')
    finally:
        c.close()
    assert_no_trace(ngx, other, with_phone=False)


@pytest.mark.parametrize('tokens,conf_tail,want', [
    ('boss %s\n' % ('ab' * 32), '', 'unknown role "boss" in line 1'),
    ('marketer abc\n', '', 'line 1 of cdp_admin_tokens'),
    ('marketer %s\n' % ('zz' * 32), '', 'line 1 of cdp_admin_tokens'),
    ('# nothing\n\n', '', 'holds no token'),
    (None, '', 'requires cdp_admin_tokens'),
], ids=['role', 'short', 'not-hex', 'empty', 'missing'])
def test_token_file_errors(ngx, workdir, tokens, conf_tail, want):
    path = os.path.join(workdir, 'tokens-bad-%s' % secrets.token_hex(4))
    extra = ''
    if tokens is not None:
        with open(path, 'w') as f:
            f.write(tokens)
        extra = 'cdp_admin_tokens %s;' % path
    rc, out, _conf = ngx.test_config(
        http_extra=extra, locations='location /admin/ { cdp_admin; }')
    assert rc != 0, out
    assert want in out, out
    # the running instance is unaffected
    assert ok_json(admin(ngx, 'GET', 'audit?since=0')) == []
