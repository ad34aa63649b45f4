"""Audiences (cdp_segment, cdp_profile_event; ngx_cdp_audience.c,
ngx_cdp_rule.c, store/cdp.lua's facts) through the real nginx and a real
Redis: rules are compiled and checked by nginx -t, and the per-event facts
they need (count, first, last, sums) are kept on the profile in the call
that stores the event, from pixel and API track events alike, and
survive identity merges."""

import base64
import json
import secrets

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
