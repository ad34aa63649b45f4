"""Destinations (cdp_destination; ngx_cdp_dest.c, ngx_cdp_deliver.c,
store/cdp.lua's gate, store/admin.lua's erasure) end to end: the real nginx
with the module, a real Redis, and a real HTTP server on loopback as the
destination (h.Sink), reached through an nginx location with proxy_pass as
an operator would configure it.

What is asserted: events leave only for the purposes their person
consented to (pixel: the request's consent; server API: the message's
categoryPreferences, else the profile's, else the location's default),
never after an erasure (queued entries go, a deletion notice goes out),
at least once across destination errors, reloads and restarts, in the
body each format documents, and a dead destination never slows a pixel.
"""

import base64
import hashlib
import json
import os
import re
import secrets
import threading
import time

import pytest

import cdp_harness as h


WRITE_KEY = 'wk-dest-' + secrets.token_hex(6)
ADMIN_TOKEN = 'adm-' + secrets.token_urlsafe(24)
PRIVACY_TOKEN = 'prv-' + secrets.token_urlsafe(24)

LOCATIONS = """\
location = /p.gif   { cdp_pixel; }
        location = /status  { cdp_status; }
        location /login     { cdp_identify on;
                              proxy_pass http://127.0.0.1:@BPORT@; }
        location /admin/    { cdp_admin; }
        location /v1/       { cdp_api; cdp_write_key @WRITE_KEY@; }"""

ISO_RE = re.compile(r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$')


@pytest.fixture
def sink():
    """conftest's sink, but listening with a backlog that takes what every
    deliverer may send at once: a worker delivers each shard's out-stream
    on its own, up to 8 requests each (16 shards, 2 workers: 256), beyond
    socketserver's 5 (the kernel would drop the connections over it, and
    nginx time out on them)."""
    s = h.Sink().start()
    s.server.socket.listen(1024)
    yield s
    s.stop()


def start(nginx_factory, redis, workdir, sink, dests, http_extra='', **kw):
    bport = h.free_port()
    tokens = os.path.join(workdir, 'tokens-%s' % secrets.token_hex(4))
    with open(tokens, 'w') as f:
        f.write('admin %s\nprivacy %s\n' % (
            hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest(),
            hashlib.sha256(PRIVACY_TOKEN.encode()).hexdigest()))
    lines = ''.join('cdp_destination %s;\n    ' % d for d in dests)
    locations = (LOCATIONS.replace('@BPORT@', str(bport))
                 .replace('@WRITE_KEY@', WRITE_KEY)
                 + h.DEST_LOCATION.replace('@SINKPORT@', str(sink.port)))
    return nginx_factory(
        redis,
        http_extra=(h.IDENTIFY_BACKEND.replace('@BPORT@', str(bport))
                    + 'cdp_admin_tokens %s;\n    ' % tokens
                    + lines + http_extra),
        locations=locations, **kw)


def api(ngx, endpoint, body):
    return h.one_request(
        ngx.port, 'POST', '/v1/' + endpoint,
        headers={'Content-Type': 'application/json',
                 'Authorization': 'Basic ' + base64.b64encode(
                     (WRITE_KEY + ':').encode()).decode()},
        body=json.dumps(body).encode())


def admin(ngx, method, tail, body=None, token=ADMIN_TOKEN):
    hd = {'Authorization': 'Bearer ' + token}
    data = None
    if body is not None:
        hd['Content-Type'] = 'application/json'
        data = json.dumps(body).encode()
    return h.one_request(ngx.port, method, '/admin/' + tail, headers=hd,
                         body=data)


def dest_status(ngx, name):
    st = ngx.status()
    out = {}
    for k, v in st.items():
        m = re.match(r'^cdp_destination_(\w+)\{destination="%s"'
                     r'(?:,reason="(\w+)")?\}$' % re.escape(name), k)
        if m:
            out[m.group(1) + ('_' + m.group(2) if m.group(2) else '')] = v
    return out


def wait_events(sink, path, n, timeout=20.0):
    ok = h.wait_until(lambda: len(sink.events(path)) >= n, timeout)
    assert ok, (path, len(sink.events(path)), sink.requests[-3:])
    return sink.events(path)


def mids(events):
    return [e.get('messageId') for e in events]


# --------------------------------------------------------------------------
# formats

def test_each_format_gets_the_documented_body(nginx_factory, redis_server,
                                              workdir, sink):
    """A consenting visitor's page view, track and login (identify) reach
    a Segment, a json and a GA4 destination, each in its own body."""
    ngx = start(nginx_factory, redis_server, workdir, sink, [
        'seg purpose=analytics uri=/_dest/seg flush=50ms',
        'js purpose=analytics uri=/_dest/js format=json flush=50ms',
        'ga purpose=analytics uri=/_dest/ga format=ga4 flush=50ms'])
    b = h.Browser(ngx)
    assert b.view('url=https://shop.example/pricing&title=Pricing'
                  '&ref=https://news.example/').status == 200
    ngx.wait_settled()
    assert b.view('e=Order%20Completed&p.revenue=42&p.currency=EUR'
                  ).status == 200
    ngx.wait_settled()
    assert b.login(uid='u-7001', traits='{"plan":"pro"}').status == 200

    seg = wait_events(sink, '/seg', 3)
    assert sorted(e['type'] for e in seg) == ['identify', 'page', 'track']
    for r in sink.taken('/seg'):
        assert set(r['json']) == {'batch', 'sentAt'}, r['json']
        assert ISO_RE.match(r['json']['sentAt'])
        assert r['headers']['Content-Type'] == 'application/json'
        assert r['headers']['User-Agent'].startswith('ngx_cdp/')
    by_type = {e['type']: e for e in seg}
    assert by_type['page']['anonymousId'] == b.aid
    assert by_type['page']['properties']['url'] == \
        'https://shop.example/pricing'
    assert by_type['track']['event'] == 'Order Completed'
    assert by_type['track']['properties']['revenue'] == '42'
    assert by_type['identify']['userId'] == 'u-7001'
    assert by_type['identify']['traits'] == {'plan': 'pro'}

    js = wait_events(sink, '/js', 3)
    assert sorted(mids(js)) == sorted(mids(seg))
    for r in sink.taken('/js'):
        assert r['json']['type'] in ('page', 'track', 'identify')
        assert 'batch' not in r['json']

    assert h.wait_until(lambda: sum(len(r['json']['events'])
                                    for r in sink.taken('/ga')) >= 3, 20)
    names = []
    for r in sink.taken('/ga'):
        body = r['json']
        assert body['client_id'] == b.aid, body
        assert isinstance(body.get('timestamp_micros'), int)
        for ev in body['events']:
            names.append(ev['name'])
            assert ev['params']['engagement_time_msec'] == 1
            if ev['name'] == 'page_view':
                assert ev['params']['page_location'] == \
                    'https://shop.example/pricing'
                assert ev['params']['page_title'] == 'Pricing'
                assert ev['params']['page_referrer'] == \
                    'https://news.example/'
            if ev['name'] == 'order_completed':
                assert ev['params']['currency'] == 'EUR'
            if ev['name'] == 'login':
                assert body['user_id'] == 'u-7001'
                assert body['user_properties'] == {'plan': {'value': 'pro'}}
    assert sorted(names) == ['login', 'order_completed', 'page_view']

    # every delivered entry left the out-streams (of every shard)
    for name in ('seg', 'js', 'ga'):
        assert h.wait_until(lambda: ngx.out_len(name) == 0, 10), \
            ngx.out_entries(name)
        st = dest_status(ngx, name)
        assert st['queued_total'] == 3, st
        assert st['delivered_total'] == 3, st


# --------------------------------------------------------------------------
# the gate

def test_gpc_visitor_reaches_analytics_not_marketing(nginx_factory,
                                                     redis_server, workdir,
                                                     sink):
    ngx = start(nginx_factory, redis_server, workdir, sink, [
        'ana purpose=analytics uri=/_dest/ana flush=50ms',
        'mkt purpose=marketing uri=/_dest/mkt flush=50ms'])
    gpc = h.Browser(ngx)
    r = h.one_request(ngx.port, 'GET', '/p.gif?e=Signed%20Up',
                      headers={'Sec-GPC': '1'})
    gpc._keep(r)
    assert gpc.aid
    ngx.wait_settled()
    plain = h.Browser(ngx)
    assert plain.view().status == 200

    ana = wait_events(sink, '/ana', 2)
    assert {e['anonymousId'] for e in ana} == {gpc.aid, plain.aid}
    mkt = wait_events(sink, '/mkt', 1)
    assert [e['anonymousId'] for e in mkt] == [plain.aid]

    st = dest_status(ngx, 'mkt')
    assert st['filtered_total_consent'] == 1, st
    assert st['queued_total'] == 1, st
    # never queued: the marketing out-streams never held the GPC visitor
    assert ngx.out_len('mkt') == 0, ngx.out_entries('mkt')
    assert gpc.aid not in json.dumps(sink.events('/mkt'))


def test_api_message_consent(nginx_factory, redis_server, workdir, sink):
    """categoryPreferences decides; without it, the location's default."""
    ngx = start(nginx_factory, redis_server, workdir, sink, [
        'ana purpose=analytics uri=/_dest/ana flush=50ms',
        'mkt purpose=marketing uri=/_dest/mkt flush=50ms'],
        consent_line='cdp_consent_default analytics;')

    def track(uid, prefs):
        msg = {'userId': uid, 'event': 'Order Completed',
               'messageId': 'm-' + uid}
        if prefs is not None:
            msg['context'] = {'consent': {'categoryPreferences': prefs}}
        r = api(ngx, 'track', msg)
        assert r.status == 200, r.body

    track('u-deny', {'Analytics': True, 'Marketing': False})
    track('u-allow', {'analytics': True, 'advertising': True})
    track('u-default', None)

    ana = wait_events(sink, '/ana', 3)
    assert sorted(e['userId'] for e in ana) == ['u-allow', 'u-default',
                                                'u-deny']
    mkt = wait_events(sink, '/mkt', 1)
    assert [e['userId'] for e in mkt] == ['u-allow']
    assert h.wait_until(lambda: dest_status(ngx, 'mkt').get(
        'filtered_total_consent') == 2, 10), dest_status(ngx, 'mkt')


def test_api_message_takes_the_consent_recorded_on_the_profile(
        nginx_factory, redis_server, workdir, sink):
    """Without categoryPreferences, a message about a browser whose
    profile recorded a consent (here GPC: no marketing) goes where that
    consent allows, not where the location's default (all) would."""
    ngx = start(nginx_factory, redis_server, workdir, sink, [
        'ana purpose=analytics uri=/_dest/ana flush=50ms',
        'mkt purpose=marketing uri=/_dest/mkt flush=50ms'])
    gpc, plain = h.Browser(ngx), h.Browser(ngx)
    gpc._keep(h.one_request(ngx.port, 'GET', '/p.gif',
                            headers={'Sec-GPC': '1'}))
    plain.view()
    ngx.wait_settled()
    assert h.profile(ngx, gpc.aid)['consent'] == 'analytics,personalization'

    for b in (gpc, plain):
        r = api(ngx, 'track', {'anonymousId': b.aid, 'event': 'Paid',
                               'messageId': 'pay-' + b.aid})
        assert r.status == 200, r.body

    wait_events(sink, '/ana', 4)
    assert h.wait_until(lambda: [e['anonymousId'] for e in sink.events('/mkt')
                                 if e.get('event') == 'Paid'] == [plain.aid],
                        20), sink.events('/mkt')
    assert dest_status(ngx, 'mkt')['filtered_total_consent'] == 2


def test_types_and_event_names(nginx_factory, redis_server, workdir, sink):
    ngx = start(nginx_factory, redis_server, workdir, sink, [
        'orders purpose=analytics types=track '
        'events="Order Completed","Signed Up" uri=/_dest/orders flush=50ms'])
    b = h.Browser(ngx)
    for q in ('url=https://shop.example/', 'e=Order%20Completed',
              'e=Cart%20Viewed', 'e=Signed%20Up'):
        assert b.view(q).status == 200
    got = wait_events(sink, '/orders', 2)
    assert sorted(e['event'] for e in got) == ['Order Completed',
                                               'Signed Up']
    st = dest_status(ngx, 'orders')
    assert st['filtered_total_type'] == 2, st


def test_out_stream_without_uri_is_read_with_a_consumer_group(
        nginx_factory, redis_server, workdir, sink):
    """No uri=: the out-streams (one a shard) are for the operator's own
    consumers, a consumer group on each; each browser's entry is in the
    out-stream of its shard, under its event's id."""
    ngx = start(nginx_factory, redis_server, workdir, sink,
                ['wh purpose=analytics'])
    # browsers of at least two shards
    browsers = []
    while len({ngx.tag_of(b.aid) for b in browsers}) < 2:
        b = h.Browser(ngx)
        assert b.view().status == 200
        browsers.append(b)
    ngx.wait_settled()
    rc = ngx.rc()
    keys = ngx.out_keys('wh')
    assert len(keys) == ngx.shards
    for key in keys:
        rc.xgroup_create(key, 'mine', id='0', mkstream=True)
    got = rc.xreadgroup('mine', 'me', {key: '>' for key in keys},
                        count=10)
    entries = [(key, eid, f) for key, es in got for eid, f in es]
    assert len(entries) == len(browsers), entries
    by_aid = {}
    for key, eid, fields in entries:
        aid = json.loads(fields['event'])['anonymousId']
        assert fields['p'] == aid
        # in the out-stream of the browser's shard
        assert key == ngx.out_key('wh', aid), (key, aid, ngx.tag_of(aid))
        # the entry keeps the event's id in the stream of the profile's
        # shard
        (sid, ev), = rc.xrange(ngx.stream_of(aid), eid, eid)
        assert ev == {'event': fields['event']}, (ev, fields)
        by_aid[aid] = (key, eid)
    assert sorted(by_aid) == sorted(b.aid for b in browsers)
    for key, eid in by_aid.values():
        assert rc.xack(key, 'mine', eid) == 1
    # nothing else to read, nothing pending
    assert not [es for _k, es in rc.xreadgroup(
        'mine', 'me', {key: '>' for key in keys}, count=10) if es]
    assert sum(rc.xpending(key, 'mine')['pending'] for key in keys) == 0
    assert sink.requests == []


def test_out_entry_of_a_person_keeps_the_id_in_the_persons_stream(
        nginx_factory, redis_server, workdir, sink):
    """A browser linked to a person of another shard: its hit is stored
    in the person's shard's stream (store/README.md, "Shards"), and the
    out-stream entry is in the person's shard's out-stream and keeps that
    event's id, not the id it had on its way (KEYS[1] is the browser's
    shard's stream)."""
    ngx = start(nginx_factory, redis_server, workdir, sink,
                ['wh purpose=analytics'])
    b1 = h.Browser(ngx)
    b1.login(uid='u-shard-1')
    ngx.wait_settled()
    pid = h.idx(ngx, 'user_id', 'u-shard-1')
    assert pid
    # a second browser of the person, in another shard than the person's
    for _ in range(100):
        b2 = h.Browser(ngx)
        b2.view('title=probe')
        if ngx.stream_of(b2.aid) != ngx.stream_of(pid):
            break
    assert ngx.stream_of(b2.aid) != ngx.stream_of(pid)
    b2.login(uid='u-shard-1')
    ngx.wait_settled()
    assert h.resolve(ngx, b2.aid) == pid
    b2.view('title=after-login')
    ngx.wait_settled()
    rc = ngx.rc()
    mine = [(k, i, f) for k, i, f in ngx.out_entries('wh')
            if json.loads(f['event']).get('properties', {}).get('title')
            == 'after-login']
    assert len(mine) == 1, ngx.out_entries('wh')
    key, eid, fields = mine[0]
    assert fields['p'] == pid, fields
    # the person's shard's out-stream, not the browser's
    assert key == ngx.out_key('wh', pid), (key, ngx.tag_of(pid))
    assert key != ngx.out_key('wh', b2.aid)
    (sid, ev), = rc.xrange(ngx.stream_of(pid), eid, eid)
    assert ev == {'event': fields['event']}, (ev, fields)
    assert eid in rc.lrange(h.key(ngx, 'timeline', pid), 0, -1)
    # not left behind in the browser's shard's stream
    assert not [e for _i, e in rc.xrange(ngx.stream_of(b2.aid))
                if e['event'] == fields['event']]
    # every entry is in the out-stream of the shard of its profile, which
    # holds its event under the same id
    for k, i, f in ngx.out_entries('wh'):
        assert k == ngx.out_key('wh', f['p']), (k, f)
        assert [e['event'] for _i, e in rc.xrange(ngx.stream_of(f['p']),
                                                  i, i)] == [f['event']]


# --------------------------------------------------------------------------
# at least once

def test_503_then_200_delivers_every_event(nginx_factory, redis_server,
                                           workdir, sink):
    t0 = []

    def respond(req):
        if not t0:
            t0.append(time.monotonic())
        if time.monotonic() - t0[0] < 5:
            return 503, b'{"error":"busy"}'
        return 200, b'{"success":true}'

    sink.respond = respond
    ngx = start(nginx_factory, redis_server, workdir, sink,
                ['seg purpose=analytics uri=/_dest/seg batch=7 flush=50ms'])
    sent = []
    for i in range(20):
        r = ngx.hit('e=E%d' % i)
        assert r.status == 200
    ngx.wait_settled()
    assert ngx.status().stored == 20
    sent = [e['messageId'] for e in ngx.events()]

    got = wait_events(sink, '/seg', 20, timeout=60)
    assert sorted(set(mids(got))) == sorted(sent)
    # nothing twice: every batch's 2xx was seen
    assert len(mids(got)) == len(set(mids(got))), mids(got)
    assert any(r['status'] == 503 for r in sink.requests)
    st = dest_status(ngx, 'seg')
    assert st['retried_total'] >= 1 and st['delivered_total'] == 20, st
    ngx.expected_log_re = re.compile(r'answered 503')


def test_parallel_json_posts_deliver_each_event_once(nginx_factory,
                                                     redis_server, workdir,
                                                     sink):
    """format=json: one POST an event, several in flight, answered out of
    order: each event arrives once and is acknowledged once.  One shard
    (shards=1): its deliverer has the destination's 8 requests at once."""
    import random

    peak = [0, 0]
    lock = threading.Lock()

    def jitter(req):
        with lock:
            peak[0] += 1
            peak[1] = max(peak[1], peak[0])
        time.sleep(random.random() * 0.02)
        with lock:
            peak[0] -= 1
        return 200, b'{}'

    sink.respond = jitter
    ngx = start(nginx_factory, redis_server, workdir, sink,
                ['js purpose=analytics uri=/_dest/js format=json batch=50 '
                 'flush=20ms'], redis_params='shards=1')
    for i in range(150):
        assert ngx.hit('e=J%d' % i).status == 200
    ngx.wait_settled()
    sent = {e['messageId'] for e in ngx.events()}
    assert len(sent) == 150
    assert h.wait_until(lambda: len(sink.events('/js')) >= 150, 30)
    got = mids(sink.events('/js'))
    assert sorted(got) == sorted(sent), len(got)
    assert h.wait_until(lambda: dest_status(ngx, 'js')['delivered_total']
                        == 150, 10), dest_status(ngx, 'js')
    assert ngx.out_len('js') == 0, ngx.out_entries('js')
    assert dest_status(ngx, 'js')['retried_total'] == 0
    # several at once, never more than 8 a worker
    assert 2 <= peak[1] <= 8 * ngx.workers, peak


def test_a_400_is_dead_lettered_and_can_be_replayed(nginx_factory,
                                                    redis_server, workdir,
                                                    sink):
    sink.respond = lambda req: (400, b'{"error":"invalid writeKey"}')
    ngx = start(nginx_factory, redis_server, workdir, sink,
                ['seg purpose=analytics uri=/_dest/seg flush=50ms'])
    r = ngx.hit('e=Refused')
    assert r.status == 200
    aid = h.aid_of(r)
    assert aid
    rc = ngx.rc()
    assert h.wait_until(lambda: ngx.dead_len('seg') == 1, 20)
    # in the dead letters of the browser's shard, as its out entry was
    (key, _, f), = ngx.dead_entries('seg')
    assert key == ngx.dead_key('seg', aid), (key, ngx.tag_of(aid))
    assert f['status'] == '400'
    assert 'invalid writeKey' in f['response']
    assert json.loads(f['event'])['event'] == 'Refused'
    assert f['p'] == aid
    # under "id", the out entry's: the event's id in the browser's stream
    (_, ev), = rc.xrange(ngx.stream_of(aid), f['id'], f['id'])
    assert ev['event'] == f['event']
    assert h.wait_until(lambda: ngx.out_len('seg') == 0, 10), \
        ngx.out_entries('seg')
    assert dest_status(ngx, 'seg')['dead_lettered_total'] == 1
    assert not rc.exists(ngx.sent_key(aid))      # refused: not sent

    # the destination fixed: the admin replays its dead letters
    sink.respond = lambda req: (200, b'{}')
    r = admin(ngx, 'POST', 'replay', {'destination': 'seg'})
    assert r.status == 200, r.body
    assert json.loads(r.body)['replayed'] == 1
    got = wait_events(sink, '/seg', 1)
    assert got[0]['event'] == 'Refused'
    assert ngx.dead_len('seg') == 0, ngx.dead_entries('seg')
    assert h.wait_until(lambda: ngx.out_len('seg') == 0, 10), \
        ngx.out_entries('seg')
    # delivered from the out-stream of its shard: what it sent about the
    # browser is recorded in that shard
    assert h.wait_until(lambda: rc.smembers(ngx.sent_key(aid)), 10)
    assert rc.smembers(ngx.sent_key(aid)) == {'seg\ta:' + aid}

    r = admin(ngx, 'POST', 'replay', {'destination': 'nope'})
    assert r.status == 404 and json.loads(r.body)['field'] == 'destination'
    r = admin(ngx, 'POST', 'replay', {'destination': 'seg'},
              token=PRIVACY_TOKEN)
    assert r.status == 403

    r = admin(ngx, 'GET', 'destinations')
    assert r.status == 200
    (d,) = json.loads(r.body)
    assert d['name'] == 'seg' and d['purpose'] == 'analytics'
    assert d['dead_lettered'] == 1 and d['delivered'] == 1
    ngx.expected_log_re = re.compile(r'refused 1 events with 400')


def test_reload_and_restart_lose_nothing(nginx_factory, redis_server,
                                         workdir, sink):
    def slow(req):
        time.sleep(0.05)
        return 200, b'{}'

    sink.respond = slow
    ngx = start(nginx_factory, redis_server, workdir, sink,
                ['seg purpose=analytics uri=/_dest/seg batch=5 flush=20ms'])
    for i in range(40):
        assert ngx.hit('e=A%d' % i).status == 200
    ngx.reload()
    for i in range(40):
        assert ngx.hit('e=B%d' % i).status == 200
    ngx.wait_settled()
    ngx.stop()
    ngx.start()
    for i in range(40):
        assert ngx.hit('e=C%d' % i).status == 200
    ngx.wait_settled()
    sent = {e['messageId'] for e in ngx.events()}
    assert len(sent) == 120
    assert h.wait_until(lambda: set(mids(sink.events('/seg'))) >= sent, 60), \
        len(sent - set(mids(sink.events('/seg'))))


def test_a_redis_restart_loses_nothing(nginx_factory, redis_factory,
                                       workdir, sink):
    """Events queued for a destination that is down survive a restart of
    Redis (with its AOF), and are delivered once both are back."""
    redis = redis_factory(appendonly=True)
    sink.respond = lambda req: (503, b'')
    ngx = start(nginx_factory, redis, workdir, sink,
                ['seg purpose=analytics uri=/_dest/seg flush=50ms'])
    for i in range(10):
        assert ngx.hit('e=R%d' % i).status == 200
    ngx.wait_settled()
    sent = {e['messageId'] for e in ngx.events()}
    assert len(sent) == 10
    assert h.wait_until(lambda: any(r['status'] == 503
                                    for r in sink.requests), 10)

    redis.stop()
    assert h.wait_until(lambda: ngx.status().c(
        'cdp_redis_disconnects_total') >= 1, 10)
    redis.start()
    sink.respond = lambda req: (200, b'{}')
    assert h.wait_until(lambda: set(mids(sink.events('/seg'))) == sent, 60), \
        sink.events('/seg')
    assert h.wait_until(lambda: ngx.out_len('seg') == 0, 10), \
        ngx.out_entries('seg')
    ngx.expected_log_re = re.compile(r'answered 503|redis .* unavailable'
                                     r'|reading .* failed|cdp_dest_done')


# --------------------------------------------------------------------------
# erasure

def test_erasure_reaches_every_destination(nginx_factory, redis_server,
                                           workdir, sink):
    ngx = start(nginx_factory, redis_server, workdir, sink, [
        'seg purpose=analytics uri=/_dest/seg flush=50ms',
        'js purpose=analytics uri=/_dest/js format=json flush=50ms'])
    b = h.Browser(ngx)
    b.view()
    ngx.wait_settled()
    b.login(uid='u-erase-1', email='erase.me@example.com')
    wait_events(sink, '/seg', 2)
    wait_events(sink, '/js', 2)

    # the destination stops taking events: the next ones wait in the
    # out-streams when the erasure comes
    sink.respond = lambda req: (503, b'')
    b.view('e=Later')
    ngx.wait_settled()
    rc = ngx.rc()
    pid = h.resolve(ngx, b.aid)
    assert pid
    for name in ('seg', 'js'):
        assert h.wait_until(lambda: ngx.out_len(name) == 1, 10), \
            ngx.out_entries(name)
        # waiting in the out-stream of the person's shard
        (key, _i, f), = ngx.out_entries(name)
        assert key == ngx.out_key(name, pid) and f['p'] == pid, (key, f)
    # what they were sent is recorded in the shard of each profile
    sent = rc.keys('%s:sent:*' % ngx.prefix)
    assert sent
    for k in sent:
        x = h.parse_key(ngx, k)[1]
        assert k == ngx.sent_key(x), (k, ngx.tag_of(x))

    r = admin(ngx, 'POST', 'erase', {'user_id': 'u-erase-1'},
              token=PRIVACY_TOKEN)
    assert r.status == 200, r.body
    receipt = json.loads(r.body)
    erased_at = time.monotonic()
    assert receipt['deletion_notices'] == 2, receipt
    assert receipt['destination_entries'] >= 2, receipt
    for name in ('seg', 'js'):
        left = ngx.out_entries(name)
        for key, _i, f in left:
            assert 'event' not in f, (key, f)
            notice = json.loads(f['delete'])
            assert notice['receipt'] == receipt['receipt']
        # one notice, in the out-stream of the person's shard
        assert [key for key, _i, _f in left] == [ngx.out_key(name, pid)], \
            left

    sink.respond = lambda req: (200, b'{}')
    assert h.wait_until(lambda: len(sink.notices('/seg')) == 1
                        and len(sink.notices('/js')) == 1, 30)
    for path in ('/seg', '/js'):
        (n,) = sink.notices(path)
        assert n['userId'] == 'u-erase-1'
        assert n['anonymousIds'] == [b.aid]
        assert 'erase.me' not in json.dumps(n)
    # nothing about them after the receipt
    for r in sink.taken():
        if r['at'] > erased_at and r['json'].get('type') != 'delete':
            assert b.aid not in json.dumps(r['json']), r
    assert not [k for k in rc.keys('%s:sent:*' % ngx.prefix)]
    ngx.expected_log_re = re.compile(r'answered 503')


# --------------------------------------------------------------------------
# a dead destination costs the pixel nothing

def pixel_p99(ngx, n=300):
    c = h.Client(ngx.port)
    times = []
    try:
        for i in range(n):
            r = c.request('GET', '/p.gif?e=L%d' % i)
            assert r.status == 200
            times.append(r.elapsed)
    finally:
        c.close()
    times.sort()
    return times[int(len(times) * 0.99) - 1]


def test_a_dead_destination_does_not_slow_the_pixel(nginx_factory,
                                                   redis_server, workdir,
                                                   sink, redis_factory):
    sink.respond = lambda req: None        # never answers
    base = start(nginx_factory, redis_factory(), workdir, h.Sink(), [])
    dead = start(nginx_factory, redis_server, workdir, sink, [
        'a purpose=analytics uri=/_dest/a batch=1 flush=10ms',
        'b purpose=analytics uri=/_dest/b batch=1 flush=10ms'])
    pixel_p99(base, 50)
    pixel_p99(dead, 50)
    p_base = min(pixel_p99(base), pixel_p99(base))
    p_dead = min(pixel_p99(dead), pixel_p99(dead))
    # stuck: each worker's deliverer of each shard (every shard has
    # entries) holds its one request (batch=1), unanswered
    assert h.wait_until(lambda: dest_status(dead, 'a').get('in_flight')
                        == dead.workers * dead.shards, 10), \
        dest_status(dead, 'a')
    assert p_dead < 2 * p_base + 0.005, (p_base, p_dead)
    dead.expected_log_re = re.compile(r'upstream timed out|did not answer')


# --------------------------------------------------------------------------
# configuration

@pytest.mark.parametrize('line,want', [
    ('x uri=/_dest/x', 'destination "x" needs purpose='),
    ('x purpose=sales', 'invalid "purpose=sales"'),
    ('x purpose=analytics format=xml', 'invalid "format=xml"'),
    ('x purpose=analytics batch=0', 'invalid "batch=0"'),
    ('x purpose=analytics flush=5ms', 'invalid "flush=5ms"'),
    ('x purpose=analytics maxlen=10', 'invalid "maxlen=10"'),
    ('x purpose=analytics uri=dest', 'must name a location'),
    ('x purpose=analytics types=page,click', 'unknown type "click"'),
    ('x purpose=analytics events="Order Completed', 'unbalanced quotes'),
    ('x purpose=analytics colour=red', 'unknown parameter "colour=red"'),
    ('x.y purpose=analytics', 'invalid destination name "x.y"'),
])
def test_directive_errors(nginx_factory, redis_server, line, want):
    ngx = nginx_factory(redis_server, start=False)
    rc, out, _ = ngx.test_config(
        http_extra='cdp_destination %s;' % line)
    assert rc != 0 and want in out, out


def test_duplicate_and_order_free(nginx_factory, redis_server):
    ngx = nginx_factory(redis_server, start=False)
    rc, out, _ = ngx.test_config(
        http_extra='cdp_destination x purpose=analytics;\n'
                   '    cdp_destination x purpose=marketing;')
    assert rc != 0 and 'duplicate destination "x"' in out, out
    # before cdp_redis and cdp_secret_file in the http block: fine
    rc, out, _ = ngx.test_config(
        redis='', secret='',
        http_extra='cdp_destination x purpose=analytics events="A B","C";\n'
                   '    cdp_redis 127.0.0.1:%d prefix=zz;\n'
                   '    cdp_secret_file %s;' % (redis_server.port,
                                                  ngx.secret_path))
    assert rc == 0, out
