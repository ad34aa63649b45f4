"""Audiences (cdp_segment, cdp_profile_event; ngx_cdp_audience.c,
ngx_cdp_rule.c, store/cdp.lua's facts) through the real nginx and a real
Redis: rules are compiled and checked by nginx -t, and the per-event facts
they need (count, first, last, sums) are kept on the profile in the call
that stores the event, from pixel and API track events alike, and
survive identity merges."""

import base64
import hashlib
import json
import os
import secrets
import subprocess
import time

import pytest

import cdp_harness as h


WRITE_KEY = 'wk-aud-' + secrets.token_hex(6)

SEGMENTS = """
    cdp_segment loyal 'count("Order Completed") >= 3';
    cdp_segment big_spender 'sum("Order Completed", revenue) >= 500';
    cdp_segment abandoned
        'last("Checkout Started") before(2d) and last("Order Completed") < last("Checkout Started")';
    cdp_profile_event "Signed Up";
"""

LOCATIONS = """\
location = /p.gif   { cdp_pixel; }
        location = /status  { cdp_status; }
        location /login     { cdp_identify on;
                              proxy_pass http://127.0.0.1:@BPORT@; }
        location /v1/       { cdp_api; cdp_write_key %s; }""" % WRITE_KEY


@pytest.fixture
def ngx(nginx_factory, redis_server):
    bport = h.free_port()
    return nginx_factory(
        redis_server,
        http_extra=h.IDENTIFY_BACKEND.replace('@BPORT@', str(bport))
        + SEGMENTS,
        locations=LOCATIONS.replace('@BPORT@', str(bport)))


def api_track(ngx, body):
    r = h.one_request(
        ngx.port, 'POST', '/v1/track',
        headers={'Content-Type': 'application/json',
                 'Authorization': 'Basic ' + base64.b64encode(
                     (WRITE_KEY + ':').encode()).decode()},
        body=json.dumps(body).encode())
    assert r.status == 200, r.body


def test_facts_from_pixel_and_api(ngx):
    b = h.Browser(ngx)
    b.view('e=Order%20Completed&p.revenue=20')
    ngx.wait_settled()
    b.view('e=Order%20Completed&p.revenue=abc')   # not a number: not summed
    b.view('e=Cart%20Viewed')                     # no rule counts it
    b.view('e=Signed%20Up')                       # cdp_profile_event
    ngx.wait_settled()
    api_track(ngx, {'anonymousId': b.aid, 'event': 'Order Completed',
                    'properties': {'revenue': 15.5}, 'messageId': 'o-3'})
    ngx.wait_settled()

    p = h.profile(ngx, b.aid)
    assert p['ev.count:Order Completed'] == '3', p
    assert float(p['ev.sum:revenue:Order Completed']) == 35.5, p
    assert int(p['ev.first:Order Completed']) <= \
        int(p['ev.last:Order Completed'])
    assert p['ev.count:Signed Up'] == '1'
    assert not [f for f in p if 'Cart Viewed' in f], p
    # facts only for the names some rule or cdp_profile_event uses
    assert not [f for f in p if f.startswith('ev.') and 'Checkout' in f]


def test_facts_add_up_when_profiles_merge(ngx):
    a, b = h.Browser(ngx), h.Browser(ngx)
    for _ in range(2):
        a.view('e=Order%20Completed&p.revenue=100')
    b.view('e=Order%20Completed&p.revenue=250')
    ngx.wait_settled()
    first_a = int(h.profile(ngx, a.aid)['ev.first:Order Completed'])
    last_b = int(h.profile(ngx, b.aid)['ev.last:Order Completed'])

    a.login(uid='u-aud-1')
    ngx.wait_settled()
    b.login(uid='u-aud-1')
    ngx.wait_settled()

    pid = h.idx(ngx, 'user_id', 'u-aud-1')
    p = h.profile(ngx, pid)
    assert p['ev.count:Order Completed'] == '3', p
    assert float(p['ev.sum:revenue:Order Completed']) == 450, p
    assert int(p['ev.first:Order Completed']) == min(first_a, last_b)
    assert int(p['ev.last:Order Completed']) == max(first_a, last_b)


@pytest.mark.parametrize('rule,pos,msg', [
    ('count("Order Completed") >= ', 28, ''),
    ('trate.plan == "pro"', 0, 'unknown field "trate'),
    ('seen_before(3w)', 12, 'bad duration'),
    ('events before(2d)', 7, '"before" needs a time'),
])
def test_a_bad_rule_fails_nginx_t_with_its_position(nginx_factory,
                                                    redis_server, rule,
                                                    pos, msg):
    ngx = nginx_factory(redis_server, start=False)
    rc, out, _ = ngx.test_config(
        http_extra="cdp_segment my_rule '%s';" % rule)
    assert rc != 0
    assert 'cdp_segment "my_rule": rule at position %d: %s' % (pos, msg) \
        in out, out


def test_directive_errors(nginx_factory, redis_server):
    ngx = nginx_factory(redis_server, start=False)
    rc, out, _ = ngx.test_config(
        http_extra="cdp_segment a 'events >= 1';\n"
                   "    cdp_segment a 'events >= 2';")
    assert rc != 0 and 'duplicate segment "a"' in out, out
    rc, out, _ = ngx.test_config(
        http_extra='cdp_profile_event "Paid" total=amount;')
    assert rc != 0 and 'invalid parameter "total=amount"' in out, out
    rc, out, _ = ngx.test_config(
        http_extra="cdp_segment ok 'consent has marketing and "
                   "seen_within(7d)';\n"
                   '    cdp_profile_event "Paid" sum=amount sum=tax;')
    assert rc == 0, out


# --------------------------------------------------------------------------
# membership (durations of seconds: the time-based rules flip in the test)

MEMBERSHIP = """
    cdp_segment loyal 'count("Order Completed") >= 3';
    cdp_segment big_spender 'sum("Order Completed", revenue) >= 500';
    cdp_segment dormant 'seen_before(3s) and events >= 1';
    cdp_segment recent 'seen_within(3s)';
    cdp_segment pro 'trait.plan == "pro"';
    cdp_segment abandoned
        'last("Checkout Started") before(3s) and last("Order Completed") < last("Checkout Started")';
    cdp_segment marketable 'consent has marketing';
    cdp_destination trig purpose=analytics events="Segment Entered"
                    uri=/_dest/trig flush=50ms;
"""

SEGMENT_NAMES = ('loyal', 'big_spender', 'dormant', 'recent', 'pro',
                 'abandoned', 'marketable')


PRIVACY_TOKEN = 'prv-' + secrets.token_urlsafe(24)
MARKETER_TOKEN = 'mkt-' + secrets.token_urlsafe(24)


@pytest.fixture
def seg(nginx_factory, redis_server, sink, workdir):
    bport = h.free_port()
    tokens = os.path.join(workdir, 'tokens-%s' % secrets.token_hex(4))
    with open(tokens, 'w') as f:
        f.write('privacy %s\nmarketer %s\n'
                % (hashlib.sha256(PRIVACY_TOKEN.encode()).hexdigest(),
                   hashlib.sha256(MARKETER_TOKEN.encode()).hexdigest()))
    return nginx_factory(
        redis_server,
        http_extra=h.IDENTIFY_BACKEND.replace('@BPORT@', str(bport))
        + MEMBERSHIP + '    cdp_admin_tokens %s;' % tokens,
        locations=LOCATIONS.replace('@BPORT@', str(bport))
        + '\n        location /admin/ { cdp_admin; }'
        + h.DEST_LOCATION.replace('@SINKPORT@', str(sink.port)))


def members(ngx, name):
    # one set a shard: <prefix>:segment:{<tag>}:<name> (store/README.md)
    rc, out = ngx.rc(), set()
    for k in ngx.shard_keys('segment', name):
        out |= rc.smembers(k)
    return out


def shard_members(ngx, name):
    # {member: the shard key it is in}, and every member once
    rc, out = ngx.rc(), {}
    for k in ngx.shard_keys('segment', name):
        for m in rc.smembers(k):
            assert m not in out, (m, k, out[m])
            out[m] = k
    return out


def segment_events(ngx, pid=None):
    out = []
    for e in ngx.events():
        if e.get('event') in ('Segment Entered', 'Segment Exited') \
                and (pid is None or e.get('anonymousId') == pid
                     or pid.startswith('p')):
            out.append((e['event'], e['properties']['segment']))
    return out


def test_loyal_and_big_spender_enter_with_the_event_that_makes_them(seg,
                                                                    sink):
    b = h.Browser(seg)
    for i in range(2):
        b.view('e=Order%20Completed&p.revenue=200')
        seg.wait_settled()
    assert b.aid not in members(seg, 'loyal')
    assert b.aid not in members(seg, 'big_spender')

    b.view('e=Order%20Completed&p.revenue=150')
    seg.wait_settled()
    assert b.aid in members(seg, 'loyal')
    assert b.aid in members(seg, 'big_spender')
    assert set(h.profile(seg, b.aid)['segments'].split(',')) >= \
        {'loyal', 'big_spender'}
    ev = segment_events(seg, b.aid)
    assert ev.count(('Segment Entered', 'loyal')) == 1, ev
    assert ev.count(('Segment Entered', 'big_spender')) == 1, ev

    # cdp-key names the sets: the member is in its shard's
    out = subprocess.run(
        [os.path.join(h.MAIN, 'scripts', 'cdp-key'), '--prefix', seg.prefix,
         '--shards', str(seg.shards), 'segment', 'loyal'],
        capture_output=True, text=True, timeout=30, check=True).stdout
    assert out.split() == seg.shard_keys('segment', 'loyal')
    assert shard_members(seg, 'loyal')[b.aid] == \
        '%s:segment:%s:loyal' % (seg.prefix, seg.tag_of(b.aid))

    # a fourth order changes nothing: no second entry
    b.view('e=Order%20Completed&p.revenue=1')
    seg.wait_settled()
    assert segment_events(seg, b.aid).count(('Segment Entered', 'loyal')) \
        == 1

    # the trigger destination gets each entry once
    assert h.wait_until(lambda: len([
        e for e in sink.events('/trig')
        if e.get('anonymousId') == b.aid
        and e['properties']['segment'] == 'loyal']) == 1, 20), \
        sink.events('/trig')
    for e in sink.events('/trig'):
        assert e['event'] == 'Segment Entered'


def test_recent_turns_dormant_on_time_without_an_event(seg):
    b = h.Browser(seg)
    b.view()
    seg.wait_settled()
    assert b.aid in members(seg, 'recent')
    assert b.aid not in members(seg, 'dormant')
    t0 = time.monotonic()
    assert h.wait_until(lambda: b.aid in members(seg, 'dormant')
                        and b.aid not in members(seg, 'recent'), 15), \
        (members(seg, 'recent'), members(seg, 'dormant'))
    # 3 s after the hit, within about a second (the tick)
    assert time.monotonic() - t0 < 3 + 5
    ev = segment_events(seg, b.aid)
    assert ('Segment Exited', 'recent') in ev
    assert ('Segment Entered', 'dormant') in ev
    assert seg.status().c('cdp_segment_due_evaluated_total') >= 1


def test_abandoned_checkout(seg):
    gone, bought = h.Browser(seg), h.Browser(seg)
    gone.view('e=Checkout%20Started')
    bought.view('e=Checkout%20Started')
    seg.wait_settled()
    bought.view('e=Order%20Completed&p.revenue=10')
    seg.wait_settled()
    assert gone.aid not in members(seg, 'abandoned')
    assert h.wait_until(lambda: gone.aid in members(seg, 'abandoned'), 15)
    assert bought.aid not in members(seg, 'abandoned')
    # the order, late: out again at once
    gone.view('e=Order%20Completed&p.revenue=10')
    seg.wait_settled()
    assert gone.aid not in members(seg, 'abandoned')


def test_traits_and_consent(seg):
    gpc, plain = h.Browser(seg), h.Browser(seg)
    gpc._keep(h.one_request(seg.port, 'GET', '/p.gif',
                            headers={'Sec-GPC': '1'}))
    plain.view()
    seg.wait_settled()
    assert plain.aid in members(seg, 'marketable')
    assert gpc.aid not in members(seg, 'marketable')

    plain.login(uid='u-pro-1', traits='{"plan":"pro"}')
    seg.wait_settled()
    pid = h.idx(seg, 'user_id', 'u-pro-1')
    assert pid in members(seg, 'pro')


def test_a_merge_and_an_erasure_keep_memberships_exact(seg, workdir):
    b = h.Browser(seg)
    for _ in range(3):
        b.view('e=Order%20Completed&p.revenue=1')
        seg.wait_settled()
    assert b.aid in members(seg, 'loyal')

    b.login(uid='u-seg-1')
    seg.wait_settled()
    pid = h.idx(seg, 'user_id', 'u-seg-1')
    # the browser's profile was merged away: the person is the member,
    # in the set of the person's shard
    assert b.aid not in members(seg, 'loyal')
    assert shard_members(seg, 'loyal')[pid] == \
        '%s:segment:%s:loyal' % (seg.prefix, seg.tag_of(pid))
    for name in ('recent', 'marketable'):
        assert b.aid not in members(seg, name)
        assert pid in members(seg, name)

    r = h.one_request(seg.port, 'POST', '/admin/erase',
                      headers={'Authorization': 'Bearer ' + PRIVACY_TOKEN,
                               'Content-Type': 'application/json'},
                      body=b'{"user_id":"u-seg-1"}')
    assert r.status == 200, r.body
    rc = seg.rc()
    for name in SEGMENT_NAMES:
        for key in seg.shard_keys('segment', name):
            assert pid not in rc.smembers(key), key
            assert b.aid not in rc.smembers(key), key
    for key in seg.shard_keys('segments:due'):
        due = rc.zrange(key, 0, -1)
        assert pid not in due and b.aid not in due, key


def test_admin_segment_api(seg):
    b, c = h.Browser(seg), h.Browser(seg)
    for _ in range(3):
        b.view('e=Order%20Completed&p.revenue=100')
        seg.wait_settled()
    c.view()
    seg.wait_settled()

    def get(tail, token=MARKETER_TOKEN):
        return h.one_request(seg.port, 'GET', '/admin/' + tail,
                             headers={'Authorization': 'Bearer ' + token})

    r = get('segments')
    assert r.status == 200, r.body
    by = {x['name']: x for x in json.loads(r.body)}
    assert by['loyal']['rule'] == 'count("Order Completed") >= 3'
    assert by['loyal']['members'] == 1
    assert by['recent']['members'] == 2

    r = get('segment?name=loyal&fields=ev.count:Order%20Completed,'
            'segments,nope')
    assert r.status == 200, r.body
    doc = json.loads(r.body)
    assert doc['segment'] == 'loyal' and doc['cursor'] == '0'
    (m,) = doc['members']
    assert m['profile_id'] == b.aid
    assert m['fields']['ev.count:Order Completed'] == '3'
    assert 'loyal' in m['fields']['segments'].split(',')
    assert 'nope' not in m['fields']

    r = get('segment?name=recent&format=csv&fields=events')
    assert r.status == 200 and r.header('X-CDP-Cursor') == '0', r
    assert r.header('Content-Type').startswith('text/csv')
    lines = r.body.decode().split('\r\n')
    assert lines[0] == 'profile_id,events'
    assert sorted(lines[1:-1]) == sorted(['%s,3' % b.aid, '%s,1' % c.aid])

    r = get('segment?name=recent&format=ndjson&count=1')
    assert r.status == 200
    assert r.header('Content-Type') == 'application/x-ndjson'
    seen = [json.loads(x)['profile_id'] for x in r.body.decode().split()]
    cursor = r.header('X-CDP-Cursor')
    while cursor != '0':
        # "<shard>.<SSCAN cursor>": the shards' sets in turn
        shard, dot, n = cursor.partition('.')
        assert shard.isdigit() and dot and n.isdigit(), cursor
        r = get('segment?name=recent&format=ndjson&count=1&cursor=' + cursor)
        seen += [json.loads(x)['profile_id'] for x in r.body.decode().split()]
        cursor = r.header('X-CDP-Cursor')
    assert sorted(seen) == sorted([b.aid, c.aid])      # each once
    r = get('segment?name=recent&cursor=123')          # not a cursor now
    assert r.status == 400 and json.loads(r.body)['field'] == 'cursor'

    r = get('segment?name=nope')
    assert r.status == 404 and json.loads(r.body)['error'] == \
        'unknown_segment'
    r = get('segment?name=loyal&count=5000')
    assert r.status == 400 and json.loads(r.body)['field'] == 'count'
    assert get('segments', token=PRIVACY_TOKEN).status == 403

    audit = seg.rc().xrange('%s:audit' % seg.prefix)
    ops = [f['op'] for _, f in audit]
    assert 'segments' in ops and 'segment_read' in ops
    reads = [f for _, f in audit if f['op'] == 'segment_read']
    assert reads[0]['ids'] == 'segment:loyal' and reads[0]['role'] == \
        'marketer'


def test_a_rule_added_by_reload_is_backfilled(nginx_factory, redis_server):
    bport = h.free_port()
    backend = h.IDENTIFY_BACKEND.replace('@BPORT@', str(bport))
    ngx = nginx_factory(
        redis_server,
        http_extra=backend + '    cdp_profile_event "Order Completed";',
        locations=LOCATIONS.replace('@BPORT@', str(bport)))
    x, y = h.Browser(ngx), h.Browser(ngx)
    for _ in range(3):
        x.view('e=Order%20Completed')
        ngx.wait_settled()
    y.view('e=Order%20Completed')
    ngx.wait_settled()
    assert members(ngx, 'loyal') == set()

    ngx.write_conf(http_extra=backend
                   + '    cdp_profile_event "Order Completed";\n'
                   + "    cdp_segment loyal 'count(\"Order Completed\") "
                   + ">= 3';")
    ngx.reload()
    assert h.wait_until(lambda: ngx.status().c('cdp_segment_backfill_done')
                        == 1, 15), ngx.status()
    assert members(ngx, 'loyal') == {x.aid}
    assert ngx.status().c('cdp_segment_backfill_profiles') >= 2
    ev = segment_events(ngx, x.aid)
    assert ev.count(('Segment Entered', 'loyal')) == 1, ev


def test_the_backfill_repairs_sets_that_lag_their_fields(nginx_factory,
                                                         redis_server):
    """A store whose sets lag the profiles' "segments" field (upgraded
    from the unsharded sets without the migration, or one that kept a
    member its field no longer names): the backfill of the next start
    makes the sets agree with the fields, without an event."""
    bport = h.free_port()
    backend = h.IDENTIFY_BACKEND.replace('@BPORT@', str(bport))
    conf = dict(http_extra=backend + '    cdp_profile_event "Order Completed";'
                '\n    cdp_segment loyal \'count("Order Completed") >= 2\';',
                locations=LOCATIONS.replace('@BPORT@', str(bport)))
    ngx = nginx_factory(redis_server, **conf)
    x, y = h.Browser(ngx), h.Browser(ngx)
    for _ in range(2):
        x.view('e=Order%20Completed')
        ngx.wait_settled()
    y.view()
    ngx.wait_settled()
    assert h.wait_until(lambda: ngx.status().c('cdp_segment_backfill_done')
                        == 1, 15), ngx.status()
    assert members(ngx, 'loyal') == {x.aid}
    entered = segment_events(ngx, x.aid).count(('Segment Entered', 'loyal'))
    assert entered == 1

    # x's membership lost from its set, y in a set its field does not name
    rc = ngx.rc()
    assert rc.srem('%s:segment:%s:loyal' % (ngx.prefix, ngx.tag_of(x.aid)),
                   x.aid) == 1
    rc.sadd('%s:segment:%s:loyal' % (ngx.prefix, ngx.tag_of(y.aid)), y.aid)
    for k in ngx.shard_keys('segments:backfill'):
        rc.delete(k)
    assert members(ngx, 'loyal') == {y.aid}

    ngx.reload()
    assert h.wait_until(lambda: members(ngx, 'loyal') == {x.aid}, 15), \
        members(ngx, 'loyal')
    assert h.wait_until(lambda: ngx.status().c('cdp_segment_backfill_done')
                        == 1, 15), ngx.status()
    assert segment_events(ngx, x.aid).count(
        ('Segment Entered', 'loyal')) == entered
    assert ('Segment Exited', 'loyal') not in segment_events(ngx, y.aid)


def test_segments_reach_the_upstream_with_personalization_consent(
        nginx_factory, redis_server):
    bport, eport = h.free_port(), h.free_port()
    echo = """
    server {
        listen 127.0.0.1:%d;
        location / {
            return 200 "segments=[$http_x_segments] profile=[$http_x_profile]";
        }
    }
""" % eport
    app = """
        location /app {
            cdp_profile on;
            proxy_set_header X-Segments $cdp_segments;
            proxy_set_header X-Profile $cdp_profile_id;
            proxy_pass http://127.0.0.1:%d;
        }
        location /plain {
            cdp_profile on;
            cdp_consent_default analytics;
            proxy_set_header X-Segments $cdp_segments;
            proxy_set_header X-Profile $cdp_profile_id;
            proxy_pass http://127.0.0.1:%d;
        }""" % (eport, eport)
    ngx = nginx_factory(
        redis_server,
        http_extra=h.IDENTIFY_BACKEND.replace('@BPORT@', str(bport)) + echo
        + MEMBERSHIP.replace(
            'cdp_destination trig purpose=analytics events="Segment Entered"'
            '\n                    uri=/_dest/trig flush=50ms;', ''),
        locations=LOCATIONS.replace('@BPORT@', str(bport)) + app)
    b = h.Browser(ngx)
    for _ in range(3):
        b.view('e=Order%20Completed')
        ngx.wait_settled()

    r = h.one_request(ngx.port, 'GET', '/app/page',
                      headers={'Cookie': 'cdp_aid=' + b.cookie})
    assert r.status == 200, r
    body = r.body.decode()
    segs = body.split('segments=[')[1].split(']')[0].split(',')
    assert 'loyal' in segs and 'recent' in segs, body
    assert 'profile=[%s]' % b.aid in body

    # no personalization consent: nothing read, nothing passed
    r = h.one_request(ngx.port, 'GET', '/plain/page',
                      headers={'Cookie': 'cdp_aid=' + b.cookie})
    assert r.body == b'segments=[] profile=[]', r.body
    # no cookie: the same
    r = h.one_request(ngx.port, 'GET', '/app/page')
    assert r.body == b'segments=[] profile=[]', r.body

    # Redis away: the request goes on without, after the timeout
    redis_server.pause()
    try:
        r = h.one_request(ngx.port, 'GET', '/app/page',
                          headers={'Cookie': 'cdp_aid=' + b.cookie})
        assert r.status == 200 and r.body == b'segments=[] profile=[]'
        assert r.elapsed < 2.0
    finally:
        redis_server.resume()


def test_trait_and_country_rule(nginx_factory, redis_server, geo_dbs):
    """trait.plan == "pro" and country in (DE, AT): the geo of the hits
    (the test database: 198.51.100.0/24 is DE, 203.0.113.0/24 US)."""
    bport = h.free_port()
    ngx = nginx_factory(
        redis_server,
        http_extra=h.IDENTIFY_BACKEND.replace('@BPORT@', str(bport))
        + '    cdp_geoip_db %s;\n' % geo_dbs['main']
        + "    cdp_segment dach_pro "
        + "'trait.plan == \"pro\" and country in (DE, AT)';",
        server_extra='set_real_ip_from 127.0.0.1;\n'
                     '        real_ip_header X-Forwarded-For;',
        locations=LOCATIONS.replace('@BPORT@', str(bport)))

    def view(b, ip):
        b._keep(ngx.hit('url=https://shop.example/',
                        cookie='cdp_aid=' + b.cookie if b.cookie else None,
                        headers={'X-Forwarded-For': ip}))

    de, us = h.Browser(ngx), h.Browser(ngx)
    view(de, '198.51.100.7')
    view(us, '203.0.113.7')
    ngx.wait_settled()
    de.login(uid='u-de', traits='{"plan":"pro"}')
    us.login(uid='u-us', traits='{"plan":"pro"}')
    ngx.wait_settled()
    pde, pus = h.idx(ngx, 'user_id', 'u-de'), h.idx(ngx, 'user_id', 'u-us')
    assert h.profile(ngx, pde)['country'] == 'DE'
    assert members(ngx, 'dach_pro') == {pde}, (pde, pus)

    # a downgrade takes the person out, with its event
    de.login(uid='u-de', traits='{"plan":"free"}')
    ngx.wait_settled()
    assert members(ngx, 'dach_pro') == set()
    assert ('Segment Exited', 'dach_pro') in segment_events(ngx, pde)
