"""The pixel's HTTP answer, its cookie, $cdp_anonymous_id and /status
(docs/directives.md: cdp_pixel, cdp_cookie, Variables, cdp_status)."""

import os
import shutil
import ssl
import struct
import subprocess

import pytest

import cdp_harness as h
from cdp_harness import COOKIE_VALUE_RE, GIF_LEN, MAX_AGE_400D


def assert_gif(r):
    assert r.status == 200, r
    assert r.header('Content-Type') == 'image/gif', r
    assert r.header('Content-Length') == str(GIF_LEN), r
    assert len(r.body) == GIF_LEN, r.body
    assert r.body.startswith(b'GIF89a'), r.body[:6]
    assert struct.unpack('<HH', r.body[6:10]) == (1, 1), 'not a 1x1 GIF'
    assert r.body.endswith(b';'), 'GIF trailer missing'


def assert_no_store(r):
    cc = r.headers_all('Cache-Control')
    assert len(cc) == 1 and 'no-store' in cc[0], cc


def assert_one_valid_cookie(r, name='cdp_aid'):
    scs = [c for c in r.set_cookies()
           if h.parse_set_cookie(c)[0] == name]
    assert len(scs) == 1, 'want one Set-Cookie %s, got %r' % (
        name, r.set_cookies())
    n, v, attrs = h.parse_set_cookie(scs[0])
    assert COOKIE_VALUE_RE.match(v), 'cookie value %r' % v
    return v, attrs


# -- 2. the answer -------------------------------------------------------

def test_pixel_get(cdp):
    r = cdp.hit()
    assert_gif(r)
    assert_no_store(r)
    assert_one_valid_cookie(r)


def test_pixel_get_with_query(cdp):
    r = cdp.hit('url=https%3A%2F%2Fshop.example%2F&title=Home&cb=123')
    assert_gif(r)
    assert_no_store(r)
    assert_one_valid_cookie(r)


def test_pixel_head(cdp):
    r = cdp.hit(method='HEAD')
    assert r.status == 200, r
    assert r.body == b''
    assert r.header('Content-Type') == 'image/gif', r
    assert r.header('Content-Length') == str(GIF_LEN), r
    assert_no_store(r)
    assert_one_valid_cookie(r)


@pytest.mark.parametrize('method', ['POST', 'PUT', 'DELETE', 'PATCH'])
def test_pixel_other_methods_405(cdp, method):
    c = cdp.client()
    try:
        r = cdp.hit(method=method, body=b'x=1&y=2', client=c,
                    headers={'Content-Type':
                             'application/x-www-form-urlencoded'})
        assert r.status == 405, r
        # the request body was dealt with: the connection still works
        r2 = cdp.hit(client=c)
        assert_gif(r2)
    finally:
        c.close()


def test_pixel_204(cdp):
    r = cdp.hit(path='/p204')
    assert r.status == 204, r
    assert r.body == b''
    assert_no_store(r)
    v, _ = assert_one_valid_cookie(r)
    aid = v.split('.')[0]
    # the hit is stored like any other
    assert cdp.wait_xlen(1) >= 1, 'the 204 hit was not stored'
    assert [e['anonymousId'] for e in cdp.events()] == [aid]


def test_pixel_without_redis(nginx_factory):
    """Without cdp_redis the module stores nothing but serves the pixel."""
    ngx = nginx_factory(None, redis_line='')
    for _ in range(3):
        r = ngx.hit('title=x')
        assert_gif(r)
        assert_one_valid_cookie(r)
    assert ngx.status().stored == 0


# -- 3. cookie attributes --------------------------------------------------

def test_cookie_default_attributes(cdp):
    r = cdp.hit()
    v, attrs = assert_one_valid_cookie(r)
    assert attrs.get('max-age') == str(MAX_AGE_400D), attrs
    assert attrs.get('path') == '/', attrs
    assert attrs.get('httponly') is True, attrs
    assert str(attrs.get('samesite')).lower() == 'lax', attrs
    assert 'secure' not in attrs, 'Secure over plain HTTP: %r' % attrs
    assert 'domain' not in attrs, attrs


def test_cookie_configured_attributes(redis_server, nginx_factory):
    ngx = nginx_factory(redis_server, cookie_line=(
        'cdp_cookie cdp_aid max_age=30d samesite=strict '
        'domain=example.test secure=on;'))
    v, attrs = assert_one_valid_cookie(ngx.hit())
    assert attrs.get('max-age') == '2592000', attrs
    assert str(attrs.get('samesite')).lower() == 'strict', attrs
    assert attrs.get('domain') == 'example.test', attrs
    assert attrs.get('secure') is True, attrs
    assert attrs.get('httponly') is True, attrs
    assert attrs.get('path') == '/', attrs


def test_cookie_samesite_none_is_always_secure(redis_server, nginx_factory):
    ngx = nginx_factory(redis_server,
                        cookie_line='cdp_cookie cdp_aid samesite=none;')
    v, attrs = assert_one_valid_cookie(ngx.hit())
    assert str(attrs.get('samesite')).lower() == 'none', attrs
    assert attrs.get('secure') is True, attrs


def test_cookie_name_path_per_location(redis_server, nginx_factory):
    """cdp_cookie in a location overrides the http one (merge)."""
    ngx = nginx_factory(redis_server, server_extra=(
        'location = /x/p.gif { cdp_pixel; '
        'cdp_cookie vid path=/x max_age=1h samesite=strict; }'))
    r = ngx.hit(path='/x/p.gif')
    assert r.status == 200, r
    v, attrs = assert_one_valid_cookie(r, 'vid')
    assert attrs.get('path') == '/x', attrs
    assert attrs.get('max-age') == '3600', attrs
    assert str(attrs.get('samesite')).lower() == 'strict', attrs
    assert not [c for c in r.set_cookies() if c.startswith('cdp_aid=')]
    # the http-level cookie is unchanged elsewhere
    v, attrs = assert_one_valid_cookie(ngx.hit())
    assert attrs.get('max-age') == str(MAX_AGE_400D), attrs


@pytest.mark.skipif(not shutil.which('openssl'), reason='no openssl CLI')
def test_cookie_secure_auto_over_https(redis_server, nginx_factory, workdir):
    """secure=auto adds Secure over HTTPS only; secure=off never."""
    d = os.path.join(workdir, 'tls-%d' % os.getpid())
    os.makedirs(d, exist_ok=True)
    crt, key = os.path.join(d, 'c.pem'), os.path.join(d, 'k.pem')
    if not os.path.exists(crt):
        subprocess.run(['openssl', 'req', '-x509', '-newkey', 'ec',
                        '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
                        '-keyout', key, '-out', crt, '-days', '2',
                        '-subj', '/CN=localhost'], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sport = h.free_port()
    ngx = nginx_factory(redis_server, http_extra=(
        'server { listen 127.0.0.1:%d ssl; ssl_certificate %s; '
        'ssl_certificate_key %s; location = /p.gif { cdp_pixel; } '
        'location = /off.gif { cdp_pixel; cdp_cookie cdp_aid secure=off; } }'
        % (sport, crt, key)))
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    r = h.one_request(sport, 'GET', '/p.gif', ssl_context=ctx)
    assert_gif(r)
    v, attrs = assert_one_valid_cookie(r)
    assert attrs.get('secure') is True, 'no Secure over HTTPS: %r' % attrs
    r = h.one_request(sport, 'GET', '/off.gif', ssl_context=ctx)
    v, attrs = assert_one_valid_cookie(r)
    assert 'secure' not in attrs, 'secure=off over HTTPS: %r' % attrs
    v, attrs = assert_one_valid_cookie(ngx.hit())
    assert 'secure' not in attrs, attrs


def test_cookie_refreshed_on_every_hit(cdp):
    v1, _ = assert_one_valid_cookie(cdp.hit())
    r = cdp.hit(cookie='cdp_aid=' + v1)
    v2, attrs = assert_one_valid_cookie(r)
    assert v2.split('.')[0] == v1.split('.')[0]
    assert attrs.get('max-age') == str(MAX_AGE_400D), attrs


# -- 10. $cdp_anonymous_id -------------------------------------------------

def _log_aids(ngx, path):
    out = []
    for line in ngx.read(ngx.access_log).splitlines():
        if (' %s' % path) in line and ' aid=' in line:
            out.append(line.rsplit(' aid=', 1)[1].strip())
    return out


def test_anonymous_id_variable_in_access_log(cdp):
    r = cdp.hit('title=log1')
    v, _ = assert_one_valid_cookie(r)
    aid = v.split('.')[0]
    got = h.wait_until(lambda: _log_aids(cdp, '/p.gif?title=log1'), 3)
    assert got == [aid], 'access log aid=%r, cookie id %s' % (got, aid)

    # a valid cookie: the variable is the cookie's id
    r = cdp.hit('title=log2', cookie='cdp_aid=' + v)
    got = h.wait_until(lambda: _log_aids(cdp, '/p.gif?title=log2'), 3)
    assert got == [aid], 'access log aid=%r, cookie id %s' % (got, aid)

    # a forged cookie: the variable is the id minted to replace it
    forged = ('0' if v[0] != '0' else '1') + v[1:]
    r = cdp.hit('title=log3', cookie='cdp_aid=' + forged)
    new = h.aid_of(r)
    assert new and new != aid
    got = h.wait_until(lambda: _log_aids(cdp, '/p.gif?title=log3'), 3)
    assert got == [new], 'access log aid=%r, new cookie id %s' % (got, new)


def test_anonymous_id_variable_in_add_header(redis_server, nginx_factory):
    ngx = nginx_factory(redis_server, server_extra=(
        'location = /h.gif { cdp_pixel; '
        'add_header X-Aid $cdp_anonymous_id always; }'))
    r = ngx.hit(path='/h.gif')
    v, _ = assert_one_valid_cookie(r)
    assert r.header('X-Aid') == v.split('.')[0], r


# -- /status ---------------------------------------------------------------

STATUS_SERIES = (
    ['cdp_events_accepted_total', 'cdp_events_stored_total']
    + ['cdp_events_dropped_total{reason="%s"}' % x for x in h.DROP_REASONS]
    + ['cdp_cookies_total{result="%s"}' % x for x in h.COOKIE_RESULTS]
    + ['cdp_redis_connects_total', 'cdp_redis_connect_failures_total',
       'cdp_redis_disconnects_total', 'cdp_redis_batches_total',
       'cdp_queue_events'])


def test_status_format(cdp):
    r = h.one_request(cdp.port, 'GET', '/status')
    assert r.status == 200, r
    assert r.header('Content-Type', '').startswith('text/plain'), r
    st = h.parse_status(r.body.decode())
    missing = [s for s in STATUS_SERIES if s not in st]
    assert not missing, 'missing series %r in:\n%s' % (missing,
                                                       r.body.decode())
    assert all(isinstance(st[s], int) and st[s] >= 0
               for s in STATUS_SERIES), st
    # each worker connected to Redis once (to each master of a cluster)
    masters = len(cdp.redis.masters()) if hasattr(cdp.redis, 'masters') \
        else 1
    assert st['cdp_redis_connects_total'] == 2 * masters, st


def test_status_counts_hits(cdp):
    st0 = cdp.status()
    aids = set()
    for i in range(5):
        aids.add(h.aid_of(cdp.hit('title=s%d' % i)))
    assert cdp.wait_xlen(5) == 5
    st = h.wait_until(lambda: (lambda s: s.stored - st0.stored >= 5 and s)(
        cdp.status()), 5)
    assert st, 'stored counter never reached 5: %r' % cdp.status()
    d = st.delta(st0)
    assert d.accepted == 5 and d.stored == 5, d
    assert d.cookies('new') == 5 and len(aids) == 5, d
    assert d.dropped() == 0, d
    assert st.queue == 0, st
    assert d.c('cdp_redis_batches_total') >= 1, d
