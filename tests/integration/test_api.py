"""The Segment-compatible server API (cdp_api, ngx_cdp_api.c), end to end:
Segment's own node SDK and raw HTTP against the real nginx with the module,
every answer checked against what reached the real Redis (the events
stream, profiles, identity index, dedup keys).

The parser's rules and error codes are documented in
ngx_cdp_module/ngx_cdp_segment.h; the identity rules in store/cdp.lua and
spec/identity.md."""

import base64
import concurrent.futures
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
import uuid

import pytest

import cdp_harness as h


WRITE_KEY = 'wk-test-0123456789'
OTHER_KEY = 'wk-other-abcdefghij'
NODE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'node')
SEND_JS = os.path.join(NODE_DIR, 'send.js')

API_LOCATIONS = """\
location /v1/ {
            cdp_api;
            cdp_write_key %s;
            cdp_write_key %s source=backend;
            cdp_api_timeout @TIMEOUT@;
        }
        location = /status { cdp_status; }""" % (WRITE_KEY, OTHER_KEY)

HEX32_RE = re.compile(r'^[0-9a-f]{32}$')


def start_api(nginx_factory, redis, timeout='5s', dedup='1h', http_extra='',
              **kw):
    return nginx_factory(
        redis,
        locations=API_LOCATIONS.replace('@TIMEOUT@', timeout),
        http_extra=('cdp_dedup_window %s;\n    ' % dedup) + http_extra,
        **kw)


@pytest.fixture
def api(nginx_factory, redis_server):
    return start_api(nginx_factory, redis_server)


# --------------------------------------------------------------------------
# helpers

def post(ngx, endpoint, body, headers=None, client=None):
    """POST raw bytes (or a JSON-able object) to /v1/<endpoint>."""
    if not isinstance(body, (bytes, bytearray)):
        body = json.dumps(body).encode()
    hd = {'Content-Type': 'application/json'}
    hd.update(headers or {})
    target = endpoint if endpoint.startswith('/') else '/v1/' + endpoint
    if client is not None:
        return client.request('POST', target, headers=hd, body=body)
    return h.one_request(ngx.port, 'POST', target, headers=hd, body=body)


def basic(key, password=''):
    return 'Basic ' + base64.b64encode(
        ('%s:%s' % (key, password)).encode()).decode()


def body_json(r):
    assert r.header('Content-Type', '').startswith('application/json'), r
    return json.loads(r.body)


def ok(r):
    assert r.status == 200, (r, r.body)
    assert body_json(r) == {'success': True}, r.body
    return r


def error(r, status, code):
    assert r.status == status, (r, r.body)
    j = body_json(r)
    assert j['success'] is False and j['error'] == code, j
    assert isinstance(j['message'], str) and j['message'], j
    return j


def mid():
    return 'mid-' + uuid.uuid4().hex


# the identity graph's helpers live in the harness
key, idx, resolve, profile = h.key, h.idx, h.resolve, h.profile
members, merges, check_graph = h.members, h.merges, h.check_graph


def hsh(ngx, type_, value):
    return h.ident_hash(ngx.keys[0], type_, value)


def mapped_aid(ngx, anonymous_id):
    """The anonymousId as nginx names it in Redis."""
    if HEX32_RE.match(anonymous_id):
        return anonymous_id
    return hsh(ngx, 'anonymous_id', anonymous_id)[:32]


def all_keys(ngx):
    c = ngx.rc()
    try:
        return sorted(c.scan_iter(match=ngx.prefix + ':*', count=1000))
    finally:
        c.close()


def redis_dump(ngx):
    """Every key name and every string value, field and member under the
    prefix, as one text (to look for raw personal data)."""
    c = ngx.rc()
    out = []
    try:
        for k in c.scan_iter(match=ngx.prefix + ':*', count=1000):
            out.append(k)
            t = c.type(k)
            if t == 'string':
                # bytes: the batch-id bitmaps (<prefix>:once:...) are binary
                v = c.execute_command('GET', k, NEVER_DECODE=True)
                out.append(v.decode('latin-1'))
            elif t == 'hash':
                for f, v in c.hgetall(k).items():
                    out += [f, v]
            elif t == 'set':
                out += list(c.smembers(k))
            elif t == 'list':
                out += c.lrange(k, 0, -1)
            elif t == 'stream':
                for _id, f in c.xrange(k, '-', '+'):
                    for fk, fv in f.items():
                        out += [fk, fv]
    finally:
        c.close()
    return '\n'.join(out)


def events_by_mid(ngx):
    return {e.get('messageId'): e for e in ngx.events()}


def count_mid(ngx, message_id):
    return sum(1 for e in ngx.events() if e.get('messageId') == message_id)


def dedup_key(ngx, message_id):
    return key(ngx, 'msg', hashlib.md5(message_id.encode()).hexdigest())


def check_dedup_ttl(ngx, message_id, window):
    """Where the store remembers a messageId (the md5 hex of it) and for
    how long: either a key <prefix>:msg:<md5> expiring after the window,
    or a set <prefix>:msgids:{<tag>}:<period> (one per shard and
    window-long period, the current and the previous one looked at)
    expiring after two windows."""
    md5 = hashlib.md5(message_id.encode()).hexdigest()
    c = ngx.rc()
    try:
        if c.exists(dedup_key(ngx, message_id)):
            ttl = c.ttl(dedup_key(ngx, message_id))
            assert window - 100 < ttl <= window, ttl
            return
        sets = [k for k in c.scan_iter(match=key(ngx, 'msgids', '*'))
                if c.sismember(k, md5)]
        assert len(sets) == 1, ('messageId %s (md5 %s) remembered nowhere'
                                % (message_id, md5), all_keys(ngx))
        kind, period = h.parse_key(ngx, sets[0])
        assert kind == 'msgids' and period.isdigit(), sets[0]
        ttl = c.ttl(sets[0])
        assert 2 * window - 100 < ttl <= 2 * window, (sets[0], ttl)
        # the raw messageId is not a member
        assert not c.sismember(sets[0], message_id)
    finally:
        c.close()


def settle(ngx):
    st = ngx.wait_settled()
    assert st.queue == 0, st
    return st


def send_sdk(ngx, msgs, write_key=WRITE_KEY, extra=(), timeout=60):
    """Runs Segment's node SDK (send.js) against ngx; returns (exit code,
    summary dict)."""
    if not os.path.isdir(os.path.join(NODE_DIR, 'node_modules',
                                      '@segment', 'analytics-node')):
        pytest.fail('@segment/analytics-node is missing: sh scripts/deps.sh '
                    'test (npm ci in %s)' % NODE_DIR, pytrace=False)
    node = shutil.which('node')
    if node is None:
        pytest.fail('node is not installed', pytrace=False)
    p = subprocess.run(
        [node, SEND_JS, '--host', 'http://127.0.0.1:%d' % ngx.port,
         '--write-key', write_key, '--requests'] + list(extra),
        input=json.dumps(msgs).encode(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, timeout=timeout)
    out = p.stdout.decode('utf-8', 'replace').strip()
    assert p.returncode in (0, 1) and out, (
        'send.js failed (rc %d):\n%s\n%s' % (
            p.returncode, out, p.stderr.decode('utf-8', 'replace')))
    return p.returncode, json.loads(out.splitlines()[-1])


def track(uid=None, aid=None, event='Clicked', message_id=None, **extra):
    m = {'event': event}
    if uid is not None:
        m['userId'] = uid
    if aid is not None:
        m['anonymousId'] = aid
    if message_id is not None:
        m['messageId'] = message_id
    m.update(extra)
    return m


def with_key(m, k=WRITE_KEY):
    m = dict(m)
    m['writeKey'] = k
    return m


def batch(msgs, k=WRITE_KEY, **extra):
    b = {'batch': msgs, 'writeKey': k}
    b.update(extra)
    return b


# --------------------------------------------------------------------------
# 1. Segment's own SDK

def test_sdk_every_call_is_stored_and_identify_joins(api):
    n = api
    email_sent = ' Ann.Smith@Example.COM '
    msgs = [
        {'type': 'identify', 'userId': 'sdk-user-1',
         'anonymousId': 'sdk-anon-1',
         'traits': {'email': email_sent, 'plan': 'enterprise',
                    'name': 'Ann'}},
        {'type': 'track', 'userId': 'sdk-user-1', 'event': 'Order Completed',
         'properties': {'total': 42, 'currency': 'EUR'}},
        {'type': 'page', 'userId': 'sdk-user-1', 'name': 'Pricing',
         'category': 'Docs', 'properties': {'path': '/pricing'}},
        {'type': 'screen', 'userId': 'sdk-user-1', 'name': 'Home'},
        {'type': 'group', 'userId': 'sdk-user-1', 'groupId': 'org-7',
         'traits': {'name': 'ACME'}},
        {'type': 'alias', 'userId': 'sdk-user-1',
         'previousId': 'sdk-anon-2'},
    ]
    rc, out = send_sdk(n, msgs)
    assert rc == 0 and out['errors'] == [], out
    assert out['calls'] == 6 and out['requests'] >= 1, out

    sent = [m for req in out['sent'] for m in req['body']['batch']]
    assert [m['type'] for m in sent] == [m['type'] for m in msgs]
    for req in out['sent']:
        assert req['url'].endswith('/v1/batch'), req
        assert req['body']['writeKey'] == WRITE_KEY
        assert 'Authorization' not in req['headers'], req['headers']

    settle(n)
    stored = events_by_mid(n)
    assert len(stored) == 6 == n.xlen(), stored
    for m in sent:
        e = stored.get(m['messageId'])
        assert e is not None, ('not stored', m)
        assert e['type'] == m['type'], e
        assert h.ISO_MS_RE.match(e['receivedAt']), e
        assert e['timestamp'] == m['timestamp'], e
        assert 'writeKey' not in e, e
        assert e['context']['library']['name'] == '@segment/analytics-node'
        assert e['sentAt'] == out['sent'][0]['body']['sentAt'] or \
            any(e['sentAt'] == r['body']['sentAt'] for r in out['sent'])
    by_type = {e['type']: e for e in stored.values()}
    assert by_type['track']['event'] == 'Order Completed'
    assert by_type['track']['properties'] == {'total': 42, 'currency': 'EUR'}
    assert by_type['page']['name'] == 'Pricing'
    assert by_type['screen']['name'] == 'Home'
    assert by_type['group']['groupId'] == 'org-7'
    assert by_type['alias']['previousId'] == 'sdk-anon-2'
    # the stored identify has the plan, not the address
    assert by_type['identify']['traits'] == {'plan': 'enterprise',
                                             'name': 'Ann'}, by_type
    assert by_type['identify']['anonymousId'] == 'sdk-anon-1'

    # identity: one known profile holding the user id, the e-mail address,
    # the SDK's anonymousId and the alias's previousId
    pid = idx(n, 'user_id', 'sdk-user-1')
    assert pid and re.match(r'^p\d+$', pid), pid
    assert idx(n, 'email', 'ann.smith@example.com') == pid
    aid1 = mapped_aid(n, 'sdk-anon-1')
    aid2 = mapped_aid(n, 'sdk-anon-2')
    assert resolve(n, aid1) == pid
    assert resolve(n, aid2) == pid
    ms = members(n, pid)
    assert 'anonymous_id:' + aid1 in ms, ms
    assert 'anonymous_id:' + aid2 in ms, ms
    assert 'user_id:' + hsh(n, 'user_id', 'sdk-user-1') in ms, ms
    assert 'email:' + hsh(n, 'email', 'ann.smith@example.com') in ms, ms

    p = profile(n, pid)
    assert p['user_id'] == 'sdk-user-1', p
    assert p['trait.plan'] == 'enterprise', p
    assert p['trait.email'] == 'ann.smith@example.com', p
    # track, page and screen count on the person
    assert int(p.get('events', 0)) >= 3, p
    assert int(p.get('page_views', 0)) >= 2, p

    # no raw address anywhere in the stream, and no raw identifier in a key
    raw = '\n'.join(n.raw_events()).lower()
    assert 'ann.smith' not in raw and 'example.com' not in raw, raw
    for k in all_keys(n):
        kl = k.lower()
        assert 'ann.smith' not in kl and '@' not in kl, k
        assert 'sdk-user-1' not in k and 'sdk-anon' not in k, k

    st = n.status()
    assert st.c('cdp_api_requests_rejected_total') == 0, st
    assert st.c('cdp_api_duplicates_total') == 0, st


def test_sdk_wrong_write_key_is_reported_and_nothing_stored(api):
    n = api
    rc, out = send_sdk(n, [{'type': 'track', 'userId': 'u', 'event': 'E'}],
                       write_key='wk-not-configured', extra=[
                           '--max-retries', '0', '--timeout', '10000'])
    assert rc == 1, out
    assert out['errors'] and '401' in out['errors'][0]['reason'], out
    assert n.xlen() == 0
    assert n.status().c('cdp_api_requests_rejected_total') >= 1


def test_sdk_many_messages_in_several_requests(api):
    n = api
    msgs = [{'type': 'track', 'userId': 'bulk-%d' % (i % 7),
             'event': 'Tick', 'properties': {'i': i}} for i in range(60)]
    rc, out = send_sdk(n, msgs, extra=['--flush-at', '10'])
    assert rc == 0 and out['errors'] == [], out
    assert out['requests'] == 6, out
    settle(n)
    ev = n.events()
    assert sorted(e['properties']['i'] for e in ev) == list(range(60))
    sent = {m['messageId'] for r in out['sent'] for m in r['body']['batch']}
    assert {e['messageId'] for e in ev} == sent


# --------------------------------------------------------------------------
# 2. errors, over raw HTTP

def test_write_key_missing_wrong_basic_and_body(api):
    n = api
    msg = track('auth-user', message_id=mid())

    before = n.status()
    r = post(n, 'track', msg)
    error(r, 401, 'unauthorized')
    assert r.header('WWW-Authenticate', '').startswith('Basic'), r
    assert n.xlen() == 0

    secret_wrong = 'wk-WRONG-' + uuid.uuid4().hex
    error(post(n, 'track', with_key(msg, secret_wrong)), 401, 'unauthorized')
    error(post(n, 'track', msg, headers={
        'Authorization': basic(secret_wrong)}), 401, 'unauthorized')
    # a key that is a prefix of a real one, and one with it as a prefix
    error(post(n, 'track', with_key(msg, WRITE_KEY[:-1])), 401,
          'unauthorized')
    error(post(n, 'track', with_key(msg, WRITE_KEY + 'x')), 401,
          'unauthorized')
    # the password part is not the key
    error(post(n, 'track', msg, headers={
        'Authorization': basic('', WRITE_KEY)}), 401, 'unauthorized')
    # not Basic
    error(post(n, 'track', msg, headers={
        'Authorization': 'Bearer ' + WRITE_KEY}), 401, 'unauthorized')
    assert n.xlen() == 0
    assert n.status().delta(before).c('cdp_api_requests_rejected_total') == 7

    # Basic auth: the key as the user, an empty password
    ok(post(n, 'track', msg, headers={'Authorization': basic(WRITE_KEY)}))
    # the body's writeKey, second configured key
    m2 = track('auth-user', message_id=mid())
    ok(post(n, 'track', with_key(m2, OTHER_KEY)))
    settle(n)
    ev = events_by_mid(n)
    assert set(ev) == {msg['messageId'], m2['messageId']}, ev
    for e in ev.values():
        assert 'writeKey' not in e, e
    assert OTHER_KEY not in '\n'.join(n.raw_events())

    log = h.Nginx.read(n.error_log) + h.Nginx.read(n.access_log)
    for k in (secret_wrong, WRITE_KEY, OTHER_KEY):
        assert k not in log, 'write key %s in the logs' % k


def test_bad_json_gives_400_with_position(api):
    n = api
    before = n.xlen()

    # the header's own example: jansson stops after the bad token
    j = error(post(n, 'track', b'{"a":x}'), 400, 'invalid_json')
    assert (j['position'], j['line'], j['column']) == (6, 1, 6), j
    assert 'field' not in j and 'index' not in j, j

    body = b'{"writeKey":"%s","userId":"u",\n"event":"E",}' % (
        WRITE_KEY.encode())
    j = error(post(n, 'track', body), 400, 'invalid_json')
    assert j['line'] == 2 and isinstance(j['position'], int), j
    assert 0 < j['position'] <= len(body), j

    j = error(post(n, 'track', b''), 400, 'invalid_json')
    assert (j['position'], j['line'], j['column']) == (0, 1, 0), j

    # duplicate keys are refused
    j = error(post(n, 'track', b'{"writeKey":"%s","userId":"u","event":"a",'
                   b'"event":"b"}' % WRITE_KEY.encode()), 400,
              'invalid_json')

    error(post(n, 'track', b'[1,2]'), 400, 'not_an_object')
    assert n.xlen() == before == 0


def test_invalid_utf8_gives_400_with_position(api):
    n = api
    body = (b'{"writeKey":"' + WRITE_KEY.encode()
            + b'","userId":"u","event":"caf\xc3\xa9 \xff!"}')
    pos = body.index(b'\xff')
    j = error(post(n, 'track', body), 400, 'invalid_utf8')
    assert j['position'] == pos, (j, pos)
    assert j['line'] == 1
    # columns count characters: the two-byte e-acute is one
    assert j['column'] == pos, j

    # an overlong encoding of '/' and a surrogate
    for bad in (b'\xc0\xaf', b'\xed\xa0\x80'):
        body = (b'{"writeKey":"' + WRITE_KEY.encode()
                + b'","userId":"u","event":"x' + bad + b'"}')
        j = error(post(n, 'track', body), 400, 'invalid_utf8')
        assert j['position'] == body.index(bad), (bad, j)

    # a raw NUL byte, and an escaped one
    body = (b'{"writeKey":"' + WRITE_KEY.encode()
            + b'","userId":"u","event":"E\x00"}')
    j = error(post(n, 'track', body), 400, 'invalid_json')
    assert j['position'] == body.index(b'\x00'), j
    body = (b'{"writeKey":"' + WRITE_KEY.encode()
            + b'","userId":"u","event":"E\\u0000"}')
    error(post(n, 'track', body), 400, 'invalid_json')
    assert n.xlen() == 0


@pytest.mark.parametrize('endpoint,msg,code,field', [
    ('track', {'event': 'E'}, 'missing_field', 'userId'),
    ('track', {'event': 'E', 'userId': '', 'anonymousId': None},
     'missing_field', 'userId'),
    ('identify', {'traits': {'plan': 'x'}}, 'missing_field', 'userId'),
    ('track', {'userId': 'u'}, 'missing_field', 'event'),
    ('track', {'userId': 'u', 'event': ''}, 'missing_field', 'event'),
    ('track', {'userId': 'u', 'event': 5}, 'invalid_field', 'event'),
    ('alias', {'userId': 'u'}, 'missing_field', 'previousId'),
    ('alias', {'previousId': 'a', 'anonymousId': 'a'}, 'missing_field',
     'userId'),
    ('group', {'userId': 'u'}, 'missing_field', 'groupId'),
    ('group', {'userId': 'u', 'groupId': {'x': 1}}, 'invalid_field',
     'groupId'),
    ('track', {'userId': 'u', 'event': 'E', 'properties': 'a string'},
     'invalid_field', 'properties'),
    ('identify', {'userId': 'u', 'traits': ['a']}, 'invalid_field',
     'traits'),
    ('track', {'userId': 'u', 'event': 'E', 'context': 1},
     'invalid_field', 'context'),
    ('track', {'userId': ['u'], 'event': 'E'}, 'invalid_field', 'userId'),
    ('track', {'userId': 'u', 'event': 'E', 'timestamp': 'yesterday'},
     'invalid_field', 'timestamp'),
    ('page', {'userId': 'u', 'name': 7}, 'invalid_field', 'name'),
    ('track', {'userId': 'u', 'event': 'E', 'messageId': ''},
     'invalid_field', 'messageId'),
    ('track', {'userId': 'u', 'event': 'E', 'messageId': 'm' * 101},
     'invalid_field', 'messageId'),
    ('track', {'userId': 'u', 'event': 'E', 'messageId': 5},
     'invalid_field', 'messageId'),
    ('track', {'userId': 'u', 'event': 'E',
               'timestamp': '2026-01-01T00:00:00'},
     'invalid_field', 'timestamp'),
    ('batch', {'batch': {}}, 'invalid_field', 'batch'),
    ('batch', {}, 'missing_field', 'batch'),
])
def test_invalid_message_gives_400_naming_the_field(api, endpoint, msg, code,
                                                     field):
    n = api
    j = error(post(n, endpoint, with_key(msg)), 400, code)
    assert j['field'] == field, j
    assert 'index' not in j, j
    assert n.xlen() == 0
    assert n.status().c('cdp_api_requests_rejected_total') == 1


def test_oversize_single_message_gives_413(api):
    n = api
    head = b'{"writeKey":"' + WRITE_KEY.encode() + \
        b'","userId":"u","event":"E","properties":{"pad":"'
    tail = b'"}}'
    for size, status in ((32768, 200), (32769, 413)):
        body = head + b'x' * (size - len(head) - len(tail)) + tail
        assert len(body) == size
        r = post(n, 'track', body)
        if status == 200:
            ok(r)
        else:
            error(r, 413, 'body_too_large')
    settle(n)
    assert n.xlen() == 1

    # sent chunked: no Content-Length to refuse it early
    body = head + b'y' * (40000 - len(head) - len(tail)) + tail
    r = chunked_post(n, '/v1/track', body)
    error(r, 413, 'body_too_large')
    assert n.xlen() == 1


def chunked_post(ngx, target, body, chunk=8192):
    import http.client
    c = http.client.HTTPConnection('127.0.0.1', ngx.port, timeout=10)
    try:
        c.request('POST', target,
                  body=(body[i:i + chunk] for i in range(0, len(body), chunk)),
                  headers={'Content-Type': 'application/json',
                           'Transfer-Encoding': 'chunked',
                           'Connection': 'close'},
                  encode_chunked=True)
        r = c.getresponse()
        return h.Resp(r.status, r.msg, r.read(), 0)
    finally:
        c.close()


def test_oversize_batch_body_and_message_give_413(api):
    n = api
    # a batch body of 512001 bytes made of small valid messages
    one = {'type': 'track', 'userId': 'u', 'event': 'E',
           'properties': {'pad': 'x' * 400}}
    msgs = [one] * 1200
    body = json.dumps(batch(msgs)).encode()
    assert len(body) > 512000
    error(post(n, 'batch', body), 413, 'body_too_large')
    r = chunked_post(n, '/v1/batch', body)
    error(r, 413, 'body_too_large')

    # exactly at the limit passes the size check
    pad = 512000 - len(json.dumps(batch([dict(one, properties={'pad': ''})])))
    big = dict(one, properties={'pad': 'z' * 30000})
    fill = []
    while pad > 31000:
        fill.append(big)
        pad -= len(json.dumps(big)) + 2
    last = dict(one, properties={'pad': ''})
    body = json.dumps(batch(fill + [last])).encode()
    last['properties']['pad'] = 'q' * (512000 - len(body))
    body = json.dumps(batch(fill + [last])).encode()
    assert len(body) == 512000
    ok(post(n, 'batch', body))
    settle(n)
    assert n.xlen() == len(fill) + 1

    # one message of a batch over 32768 bytes, compact
    huge = {'type': 'track', 'userId': 'u', 'event': 'E',
            'properties': {'pad': 'h' * 33000}}
    before = n.xlen()
    j = error(post(n, 'batch', batch([track('u', type='track'), huge])),
              413, 'message_too_large')
    assert j['index'] == 1 and j['field'] == 'batch[1]', j
    assert n.xlen() == before


def test_too_many_messages_gives_400(api):
    n = api
    m = {'type': 'track', 'userId': 'u', 'event': 'E'}
    before = n.status()
    error(post(n, 'batch', batch([m] * 2501)), 400, 'too_many_messages')
    assert n.xlen() == 0
    assert n.status().delta(before).c('cdp_api_requests_rejected_total') == 1
    # 2500 are fine, all stored
    ok(post(n, 'batch', batch([m] * 2500)))
    settle(n)
    assert n.xlen() == 2500


def test_batch_with_one_bad_message_stores_nothing(api):
    n = api
    ok(post(n, 'track', with_key(track('seed', message_id=mid()))))
    settle(n)
    before_len = n.xlen()
    before_keys = redis_dump(n)

    good = [dict(track('bx-%d' % i, aid='anon-bx-%d' % i,
                       message_id=mid()), type='track') for i in range(6)]
    good[0] = {'type': 'identify', 'userId': 'bx-0',
               'traits': {'email': 'bx0@example.org'}, 'messageId': mid()}
    bad = list(good)
    bad[3] = {'type': 'track', 'userId': 'bx-3', 'messageId': mid()}
    j = error(post(n, 'batch', batch(bad)), 400, 'missing_field')
    assert j['index'] == 3, j
    assert j['field'] == 'batch[3].event', j
    time.sleep(0.2)
    assert n.xlen() == before_len
    assert redis_dump(n) == before_keys    # no dedup id, no profile

    for i, variant, code, field in (
            (3, 'not an object', 'not_an_object', 'batch[3]'),
            (3, {'type': 'batch', 'userId': 'u'}, 'unknown_type',
             'batch[3].type'),
            (2, {'userId': 'u', 'event': 'E'}, 'missing_field',
             'batch[2].type'),
            (4, {'type': 'track', 'userId': 'u', 'event': 'E',
                 'properties': 's'}, 'invalid_field',
             'batch[4].properties')):
        bad = list(good)
        bad[i] = variant
        j = error(post(n, 'batch', batch(bad)), 400, code)
        assert j['index'] == i and j['field'] == field, (variant, j)
    time.sleep(0.2)
    assert n.xlen() == before_len
    assert redis_dump(n) == before_keys

    # the same batch, fixed, is stored whole (none of it was deduplicated)
    ok(post(n, 'batch', batch(good)))
    settle(n)
    assert n.xlen() == before_len + 6
    ev = events_by_mid(n)
    assert all(m['messageId'] in ev for m in good)


def test_unknown_endpoint_and_method(api):
    n = api
    error(post(n, 'nope', with_key(track('u'))), 404, 'unknown_endpoint')
    error(post(n, 'Track', with_key(track('u'))), 404, 'unknown_endpoint')
    error(post(n, 'track/', with_key(track('u'))), 404, 'unknown_endpoint')
    for method in ('GET', 'PUT', 'DELETE'):
        r = h.one_request(n.port, method, '/v1/track')
        error(r, 405, 'method_not_allowed')
    r = h.one_request(n.port, 'GET', '/v1/nope')
    assert r.status in (404, 405), r
    assert n.xlen() == 0

    # the endpoint's type wins over a "type" in the body
    m = with_key(track('u-type', message_id=mid(), type='identify'))
    ok(post(n, 'track', m))
    settle(n)
    e = events_by_mid(n)[m['messageId']]
    assert e['type'] == 'track' and e['event'] == 'Clicked', e


def test_every_endpoint_and_import_alias(api):
    n = api
    msgs = {
        'track': track('ep', message_id=mid()),
        'identify': {'userId': 'ep', 'traits': {'plan': 'p'},
                     'messageId': mid()},
        'page': {'userId': 'ep', 'name': 'Home', 'messageId': mid()},
        'screen': {'anonymousId': 'ep-anon', 'name': 'S', 'messageId': mid()},
        'group': {'userId': 'ep', 'groupId': 42, 'messageId': mid()},
        'alias': {'userId': 'ep', 'previousId': 'ep-anon',
                  'messageId': mid()},
    }
    for ep, m in msgs.items():
        ok(post(n, ep, with_key(m)))
    imp = {'type': 'track', 'userId': 'ep', 'event': 'Imported',
           'messageId': mid()}
    ok(post(n, 'import', batch([imp])))
    settle(n)
    ev = events_by_mid(n)
    for ep, m in msgs.items():
        assert ev[m['messageId']]['type'] == ep, ev[m['messageId']]
    assert ev[imp['messageId']]['event'] == 'Imported'
    # an integer id is stored as its string
    assert ev[msgs['group']['messageId']]['groupId'] == '42'


def test_batch_context_is_merged_into_messages(api):
    n = api
    m1 = {'type': 'track', 'userId': 'c', 'event': 'A', 'messageId': mid()}
    m2 = {'type': 'track', 'userId': 'c', 'event': 'B', 'messageId': mid(),
          'context': {'app': {'name': 'own'}},
          'sentAt': '2026-01-02T03:04:05.678Z'}
    ok(post(n, 'batch', batch(
        [m1, m2], context={'app': {'name': 'batch'}, 'ip': '203.0.113.9'},
        sentAt='2026-01-01T00:00:00Z')))
    settle(n)
    ev = events_by_mid(n)
    e1, e2 = ev[m1['messageId']], ev[m2['messageId']]
    assert e1['context'] == {'app': {'name': 'batch'}, 'ip': '203.0.113.9'}
    assert e2['context'] == {'app': {'name': 'own'}, 'ip': '203.0.113.9'}
    assert e1['sentAt'] == '2026-01-01T00:00:00Z'
    assert e2['sentAt'] == '2026-01-02T03:04:05.678Z'


# --------------------------------------------------------------------------
# 3. deduplication by messageId

def test_same_message_id_is_stored_once(nginx_factory, redis_server):
    n = start_api(nginx_factory, redis_server, dedup='1h')
    m = with_key(track('dd-user', message_id=mid()))

    before = n.status()
    ok(post(n, 'track', m))
    ok(post(n, 'track', m))
    # over Basic auth and through batch: still the same message
    ok(post(n, 'batch', batch([dict(m, type='track')])))
    settle(n)
    assert count_mid(n, m['messageId']) == 1
    d = n.status().delta(before)
    assert d.c('cdp_api_duplicates_total') == 2, d

    check_dedup_ttl(n, m['messageId'], 3600)

    # the duplicates did not count on the profile either
    pid = idx(n, 'user_id', 'dd-user')
    assert pid and profile(n, pid)['events'] == '1', profile(n, pid)

    # twice in one request
    m2 = {'type': 'track', 'userId': 'dd-user', 'event': 'Twice',
          'messageId': mid()}
    other = {'type': 'track', 'userId': 'dd-user', 'event': 'Other',
             'messageId': mid()}
    before = n.status()
    ok(post(n, 'batch', batch([m2, other, m2])))
    settle(n)
    assert count_mid(n, m2['messageId']) == 1
    assert count_mid(n, other['messageId']) == 1
    assert n.status().delta(before).c('cdp_api_duplicates_total') == 1
    assert profile(n, pid)['events'] == '3', profile(n, pid)

    # messages without a messageId are never deduplicated
    nomid = {'type': 'track', 'userId': 'dd-user', 'event': 'NoId'}
    ok(post(n, 'batch', batch([nomid, nomid])))
    settle(n)
    assert sum(1 for e in n.events() if e['event'] == 'NoId') == 2


def test_dedup_window_24h(nginx_factory, redis_server):
    n = start_api(nginx_factory, redis_server, dedup='24h')
    m = with_key(track('dw', message_id=mid()))
    ok(post(n, 'track', m))
    settle(n)
    check_dedup_ttl(n, m['messageId'], 86400)


def test_message_id_is_forgotten_after_the_window(nginx_factory,
                                                  redis_server):
    n = start_api(nginx_factory, redis_server, dedup='1s')
    m = with_key(track('fw', message_id=mid()))
    ok(post(n, 'track', m))
    ok(post(n, 'track', m))
    settle(n)
    assert count_mid(n, m['messageId']) == 1
    assert n.status().c('cdp_api_duplicates_total') == 1
    # at most 2 windows later (the store may keep ids for one more period)
    time.sleep(2.5)
    ok(post(n, 'track', m))
    settle(n)
    assert count_mid(n, m['messageId']) == 2
    assert n.status().c('cdp_api_duplicates_total') == 1


# --------------------------------------------------------------------------
# 4. Redis unavailable

@pytest.mark.standalone        # pauses the one Redis
def test_paused_redis_gives_503_within_the_timeout(nginx_factory,
                                                   redis_server):
    n = start_api(nginx_factory, redis_server, timeout='1s')
    ok(post(n, 'track', with_key(track('before-pause', message_id=mid()))))
    settle(n)
    assert n.xlen() == 1

    m = with_key(track('during-pause', message_id=mid()))
    redis_server.pause()
    try:
        t0 = time.monotonic()
        r = post(n, 'track', m)
        elapsed = time.monotonic() - t0
        error(r, 503, 'unavailable')
        assert r.header('Retry-After', '').isdigit(), r
        assert int(r.header('Retry-After')) > 0
        assert 0.8 < elapsed < 2.0, elapsed
        # nginx itself answers meanwhile
        assert n.status().c('cdp_api_unavailable_total') >= 1
    finally:
        redis_server.resume()

    # the sender retries: 200, and the message is there exactly once
    # (the batch written before the pause may have been stored meanwhile)
    r = h.wait_until(lambda: (lambda x: x.status == 200 and x)(
        post(n, 'track', m)), 10.0, 0.2)
    assert r and r.status == 200, r
    ok(post(n, 'track', with_key(track('after-pause', message_id=mid()))))
    settle(n)
    assert count_mid(n, m['messageId']) == 1
    assert {e['userId'] for e in n.events()} == {
        'before-pause', 'during-pause', 'after-pause'}
    assert n.alive()


@pytest.mark.standalone        # pauses the one Redis
def test_client_gone_while_waiting_for_redis(nginx_factory, redis_server):
    """The request waits for Redis (r->main->count, a timer, a waiter);
    the client closing meanwhile must neither crash the worker nor leave
    anything behind: the answer comes for nobody, later requests work."""
    import socket
    n = start_api(nginx_factory, redis_server, timeout='1s', workers=1)
    msgs = [with_key(track('gone-%d' % i, message_id=mid()))
            for i in range(4)]
    redis_server.pause()
    try:
        socks = []
        for m in msgs:
            body = json.dumps(m).encode()
            sk = socket.create_connection(('127.0.0.1', n.port))
            sk.sendall(b'POST /v1/track HTTP/1.1\r\nHost: x\r\n'
                       b'Content-Type: application/json\r\n'
                       b'Content-Length: %d\r\n\r\n' % len(body) + body)
            socks.append(sk)
        time.sleep(0.3)
        # two go before the timeout, two after it
        for sk in socks[:2]:
            sk.close()
        time.sleep(1.2)
        for sk in socks[2:]:
            sk.close()
    finally:
        redis_server.resume()
    ok(post(n, 'track', with_key(track('after-gone', message_id=mid()))))
    settle(n)
    users = sorted(e['userId'] for e in n.events())
    # the batches were written before the pause took effect on them: they
    # are stored once Redis runs again, whatever happened to the clients
    assert users == sorted(['after-gone'] + ['gone-%d' % i
                                             for i in range(4)]), users
    assert n.alive() and len(n.worker_pids()) == 1


def test_stopped_redis_gives_503_then_recovers(nginx_factory, redis_factory):
    r = redis_factory()
    n = start_api(nginx_factory, r, timeout='1s')
    ok(post(n, 'track', with_key(track('before-stop', message_id=mid()))))
    settle(n)

    r.stop()
    m = with_key(track('while-down', message_id=mid()))
    for _ in range(5):
        t0 = time.monotonic()
        resp = post(n, 'track', m)
        elapsed = time.monotonic() - t0
        error(resp, 503, 'unavailable')
        assert resp.header('Retry-After', '').isdigit(), resp
        assert elapsed < 2.0, elapsed
    assert n.status().c('cdp_api_unavailable_total') >= 5
    assert n.alive()

    # the same redis-server again on the same port, empty (no persistence):
    # the module reconnects and loads its library again
    r.start()
    resp = h.wait_until(lambda: (lambda x: x.status == 200 and x)(
        post(n, 'track', m)), 15.0, 0.2)
    assert resp and resp.status == 200, resp
    settle(n)
    ev = n.events()
    assert [e['messageId'] for e in ev] == [m['messageId']], ev
    assert idx(n, 'user_id', 'while-down')
    assert n.alive()


# --------------------------------------------------------------------------
# 5. identity through the API

def test_identity_rules(api):
    n = api

    # identify with a userId only: a known profile
    ok(post(n, 'identify', with_key({'userId': 'id-A',
                                     'traits': {'plan': 'free'}})))
    settle(n)
    pa = idx(n, 'user_id', 'id-A')
    assert pa and re.match(r'^p\d+$', pa), pa
    assert profile(n, pa)['user_id'] == 'id-A'
    assert profile(n, pa)['trait.plan'] == 'free'
    ev0 = int(profile(n, pa).get('events', 0))

    # tracks with the userId only count on it, and page views too
    for i in range(3):
        ok(post(n, 'track', with_key(track('id-A', message_id=mid()))))
    ok(post(n, 'page', with_key({'userId': 'id-A', 'name': 'Home'})))
    settle(n)
    p = profile(n, pa)
    assert int(p['events']) == ev0 + 4, p
    assert int(p['page_views']) >= 1, p
    assert idx(n, 'user_id', 'id-A') == pa       # no second profile

    # anonymous history, then identify: the history joins
    aid = mapped_aid(n, 'anon-hist')
    for i in range(2):
        ok(post(n, 'track', with_key(track(aid='anon-hist',
                                           message_id=mid()))))
    settle(n)
    assert profile(n, aid)['events'] == '2', profile(n, aid)
    ok(post(n, 'identify', with_key({'userId': 'id-B',
                                     'anonymousId': 'anon-hist'})))
    settle(n)
    pb = idx(n, 'user_id', 'id-B')
    assert pb and pb != pa, (pa, pb)
    assert resolve(n, aid) == pb
    assert int(profile(n, pb)['events']) >= 2, profile(n, pb)
    assert 'anonymous_id:' + aid in members(n, pb)
    assert any(m['from'] == aid and m['to'] == pb and m['reason'] ==
               'identify' for m in merges(n)), merges(n)
    # later anonymous events of that device count on the person
    before = int(profile(n, pb)['events'])
    ok(post(n, 'track', with_key(track(aid='anon-hist', message_id=mid()))))
    settle(n)
    assert int(profile(n, pb)['events']) == before + 1

    # a 32-hex anonymousId (the cookie's) is taken as it is
    hexaid = uuid.uuid4().hex
    ok(post(n, 'track', with_key(track(aid=hexaid, message_id=mid()))))
    settle(n)
    assert profile(n, hexaid)['events'] == '1'

    # shared device: two users on one anonymousId, two profiles
    ok(post(n, 'identify', with_key({'userId': 'id-C',
                                     'anonymousId': 'anon-shared'})))
    ok(post(n, 'identify', with_key({'userId': 'id-D',
                                     'anonymousId': 'anon-shared'})))
    settle(n)
    pc, pd = idx(n, 'user_id', 'id-C'), idx(n, 'user_id', 'id-D')
    assert pc and pd and pc != pd, (pc, pd)
    shared = mapped_aid(n, 'anon-shared')
    assert resolve(n, shared) == pd
    assert 'anonymous_id:' + shared in members(n, pd)
    assert 'anonymous_id:' + shared not in members(n, pc)
    assert profile(n, pc)['user_id'] == 'id-C'
    assert any(m['reason'] == 'shared_device' and m['from'] == pc
               and m['to'] == pd for m in merges(n)), merges(n)

    # alias: previousId an anonymousId with a history
    prev = mapped_aid(n, 'anon-alias')
    ok(post(n, 'track', with_key(track(aid='anon-alias', message_id=mid()))))
    settle(n)
    assert profile(n, prev)['events'] == '1'
    ok(post(n, 'alias', with_key({'userId': 'id-E',
                                  'previousId': 'anon-alias'})))
    settle(n)
    pe = idx(n, 'user_id', 'id-E')
    assert pe and resolve(n, prev) == pe, (pe, resolve(n, prev))
    assert int(profile(n, pe)['events']) >= 1
    assert any(m['reason'] == 'alias' and m['from'] == prev and m['to'] == pe
               for m in merges(n)), merges(n)


def test_blocked_user_ids_do_not_identify(api):
    n = api
    for uid in ('null', '0', 'undefined', ' NULL '):
        ok(post(n, 'identify', with_key({'userId': uid,
                                         'anonymousId': 'anon-blk',
                                         'traits': {'plan': 'x'}})))
        ok(post(n, 'track', with_key(track(uid, message_id=mid()))))
    settle(n)
    for uid in ('null', '0', 'undefined', 'NULL', ' NULL '):
        assert idx(n, 'user_id', uid) is None, uid
    ks = all_keys(n)
    assert not [k for k in ks if ':idx:' in k or ':ids:' in k], ks
    # the device is still only anonymous
    p = profile(n, mapped_aid(n, 'anon-blk'))
    assert 'merged_into' not in p and 'user_id' not in p, p

    # a blocked anonymousId is no device
    ok(post(n, 'track', with_key(track('real-user', aid='undefined',
                                       message_id=mid()))))
    settle(n)
    assert not profile(n, mapped_aid(n, 'undefined'))
    assert idx(n, 'user_id', 'real-user')


def test_email_like_user_id_never_in_key_names(api):
    n = api
    uid = 'Jane.Doe+shop@Example.org'
    ok(post(n, 'identify', with_key({
        'userId': uid, 'anonymousId': 'anon.jane@example.org',
        'traits': {'email': 'jane.doe@example.org',
                   'phone': '+49 30 1234567', 'plan': 'gold'}})))
    ok(post(n, 'track', with_key(track(uid, message_id=mid()))))
    ok(post(n, 'alias', with_key({'userId': uid,
                                  'previousId': 'old.jane@example.org'})))
    settle(n)
    pid = idx(n, 'user_id', uid)
    assert pid, all_keys(n)
    for k in all_keys(n):
        assert '@' not in k and 'jane' not in k.lower(), k
        assert '+49' not in k and '1234567' not in k, k
    p = profile(n, pid)
    assert p['user_id'] == uid, p
    assert p['trait.email'] == 'jane.doe@example.org', p
    assert p['trait.plan'] == 'gold', p
    assert idx(n, 'email', 'jane.doe@example.org') == pid
    # e-mail-like anonymous ids are hashed into the aid space
    assert resolve(n, mapped_aid(n, 'anon.jane@example.org')) == pid
    assert resolve(n, mapped_aid(n, 'old.jane@example.org')) == pid
    # the address and the number never reach the stream (the ids are
    # stored as sent: they are the message's own fields)
    ev = [e for e in n.events() if e['type'] == 'identify']
    assert len(ev) == 1 and ev[0]['traits'] == {'plan': 'gold'}, ev
    raw = '\n'.join(n.raw_events())
    assert 'jane.doe@example.org' not in raw.lower(), raw
    assert '1234567' not in raw, raw


def test_identify_without_identifier_stays_anonymous(api):
    """identify with an anonymousId and traits only (Segment allows it):
    the traits go to the device's profile, which stays a live anonymous
    profile (never a link to itself)."""
    n = api
    for name in ('fresh-dev', 'seen-dev'):
        aid = mapped_aid(n, name)
        if name == 'seen-dev':
            ok(post(n, 'track', with_key(track(aid=name, message_id=mid()))))
        ok(post(n, 'identify', with_key({'anonymousId': name,
                                         'traits': {'plan': 'trial'}})))
        ok(post(n, 'identify', with_key({'anonymousId': name})))
        for _ in range(2):
            ok(post(n, 'track', with_key(track(aid=name, message_id=mid()))))
        settle(n)
        p = profile(n, aid)
        assert 'merged_into' not in p, (name, p)
        assert p['trait.plan'] == 'trial', (name, p)
        assert int(p['events']) == (3 if name == 'seen-dev' else 2), (name, p)
    assert not [k for k in all_keys(n) if ':idx:' in k or ':ids:' in k]
    assert merges(n) == []


# --------------------------------------------------------------------------
# 6. concurrency

def test_concurrent_batches_all_stored(api):
    n = api
    before = n.xlen()
    batches = [[{'type': 'track', 'userId': 'cc-%d' % (j % 10),
                 'anonymousId': 'cc-anon-%d-%d' % (b, j % 5),
                 'event': 'Concurrent', 'messageId': 'cc-%d-%d' % (b, j),
                 'properties': {'b': b, 'j': j}} for j in range(100)]
               for b in range(20)]

    def send(msgs):
        return post(n, 'batch', batch(msgs))

    with concurrent.futures.ThreadPoolExecutor(20) as ex:
        rs = list(ex.map(send, batches))
    for r in rs:
        ok(r)
    # every 200 means acknowledged: no waiting needed
    assert n.xlen() - before == 2000
    ids = [e['messageId'] for e in n.events()]
    assert sorted(ids) == sorted('cc-%d-%d' % (b, j) for b in range(20)
                                 for j in range(100))
    st = settle(n)
    assert st.c('cdp_api_duplicates_total') == 0
    assert st.c('cdp_api_unavailable_total') == 0
    # each user counted once per message
    total = sum(int(profile(n, idx(n, 'user_id', 'cc-%d' % u))['events'])
                for u in range(10))
    assert total == 2000, total


def test_source_name_and_address_like_anonymous_id(api):
    """cdp_write_key ... source=NAME lands in context.source of what that
    key sent; an anonymousId holding an e-mail address is stored as the id
    it is kept under, never as the address."""
    ok(post(api, 'track', {'anonymousId': 'a-1', 'event': 'Plain',
                           'messageId': 'src-1'},
            headers={'Authorization': basic(WRITE_KEY)}))
    ok(post(api, 'track', {'anonymousId': 'a-2', 'event': 'FromBackend',
                           'context': {'ip': '203.0.113.9'},
                           'messageId': 'src-2'},
            headers={'Authorization': basic(OTHER_KEY)}))
    ok(post(api, 'track', {'anonymousId': 'Jane.Doe@Example.com',
                           'event': 'Leaky', 'messageId': 'src-3'},
            headers={'Authorization': basic(WRITE_KEY)}))
    settle(api)
    ev = {e['event']: e for e in api.events()}
    assert 'source' not in ev['Plain'].get('context', {}), ev['Plain']
    assert ev['FromBackend']['context'] == {'ip': '203.0.113.9',
                                            'source': 'backend'}, ev
    mapped = h.ident_hash(api.keys[0], 'anonymous_id',
                          'Jane.Doe@Example.com')[:32]
    assert ev['Leaky']['anonymousId'] == mapped, ev['Leaky']
    raw = '\n'.join(api.raw_events()).lower()
    assert 'jane.doe' not in raw and 'example.com' not in raw, raw
    c = api.rc()
    try:
        assert c.exists(key(api, 'profile', mapped))
    finally:
        c.close()
