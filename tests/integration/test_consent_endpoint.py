"""The consent endpoint (issue 5): `cdp_consent_endpoint;` answers GET/HEAD
with the request's consent state as JSON and takes a plain HTML form POST
(`application/x-www-form-urlencoded`: `grant` repeated, `redirect`) that
sets the signed consent cookie, clears the anonymous cookie when analytics
is not granted, answers 303 to a same-site path (or JSON when asked for
JSON), refuses cross-site POSTs (Sec-Fetch-Site, Origin) and appends each
change to the consent log, `<prefix>:consent_log:{<tag>}` of a shard
(field `entry`, a JSON object with a keyed hash of the anonymous id, never
the id).

The consent cookie is checked here independently of the module, as in
test_consent.py:

    key = HMAC-SHA256(secret line, "ngx_cdp consent cookie v1")
    body = "c1.<P>.<version>.<issued>"
    cookie = body + "." + base64url(HMAC-SHA256(key, "consent:" + body)[:12])

and anonymous id cookies are made here the same way (docs/directives.md:
cdp_secret_file; ngx_cdp_crypto.h):

    key = HMAC-SHA256(secret line, "ngx_cdp anonymous id cookie v1")
    cookie = hex id + "." + base64url(HMAC-SHA256(key, "aid:" + hex id)[:12])
"""

import base64
import calendar
import hashlib
import hmac
import json
import secrets
import socket
import time

import pytest

import cdp_harness as h


PURPOSES = ('analytics', 'marketing', 'personalization')
BITS = {'analytics': 1, 'marketing': 2, 'personalization': 4}
FORM = 'application/x-www-form-urlencoded'
MAX_AGE_CONSENT = 34560000      # 400 days
STATE_KEYS = ['analytics', 'marketing', 'personalization', 'source',
              'version']

LOCATIONS = """\
location = /p.gif {
            cdp_pixel;
            add_header X-Consent $cdp_consent always;
        }
        location = /p-all.gif {
            cdp_pixel;
            cdp_consent_default all;
        }
        location = /consent { cdp_consent_endpoint; }
        location = /consent-v {
            cdp_consent_endpoint;
            cdp_consent_version loc.v3;
        }
        location = /status { cdp_status; }"""

NONE = 'cdp_consent_default none;'
ALL = 'cdp_consent_default all;'
CMP = 'cdp_consent $http_x_cmp;'


# --------------------------------------------------------------------------
# cookies computed here

consent_key = h.consent_key
consent_cookie = h.consent_cookie


def aid_cookie(secret_line, hex_id=None):
    """(hex id, value of a cdp_aid cookie signed with this secret line)."""
    hex_id = hex_id or secrets.token_hex(16)
    key = hmac.new(secret_line.encode(), b'ngx_cdp anonymous id cookie v1',
                   hashlib.sha256).digest()
    tag = hmac.new(key, b'aid:' + hex_id.encode(), hashlib.sha256).digest()
    return hex_id, hex_id + '.' + base64.urlsafe_b64encode(
        tag[:12]).rstrip(b'=').decode()


def mask(*names):
    return sum(BITS[n] for n in names)


def state(analytics, marketing, personalization, source, version='1'):
    return {'analytics': analytics, 'marketing': marketing,
            'personalization': personalization, 'source': source,
            'version': version}


def state_of_mask(m, source='cookie', version='1'):
    return state(bool(m & 1), bool(m & 2), bool(m & 4), source, version)


# --------------------------------------------------------------------------
# helpers

def start(nginx_factory, redis, consent_line=NONE, **kw):
    kw.setdefault('locations', LOCATIONS)
    return nginx_factory(redis, consent_line=consent_line, **kw)


def get(ngx, path='/consent', method='GET', headers=None, cookie=None):
    return ngx.hit(path=path, method=method, headers=headers, cookie=cookie)


def post(ngx, body, path='/consent', headers=None, cookie=None, ctype=FORM):
    hd = {}
    if ctype is not None:
        hd['Content-Type'] = ctype
    hd.update(headers or {})
    if isinstance(body, str):
        body = body.encode()
    return ngx.hit(path=path, method='POST', body=body, headers=hd,
                   cookie=cookie)


def json_body(r):
    ct = r.header('Content-Type') or ''
    assert ct.split(';')[0].strip().lower() == 'application/json', (
        'Content-Type %r, want application/json: %r %r' % (ct, r, r.body))
    try:
        return json.loads(r.body.decode('utf-8'))
    except ValueError as e:
        raise AssertionError('body is not JSON (%s): %r' % (e, r.body))


def assert_state(r, want):
    assert r.status == 200, (r, r.body)
    d = json_body(r)
    assert d == want, d
    assert list(d) == STATE_KEYS, 'key order %r' % list(d)
    return d


def assert_no_state_change(r):
    assert r.set_cookies() == [], 'Set-Cookie on a refused request: %r' % (
        r.set_cookies(),)


def consent_set_cookie(r):
    """The one cdp_consent Set-Cookie of r: (value, attrs)."""
    found = [h.parse_set_cookie(c) for c in r.set_cookies()
             if h.parse_set_cookie(c)[0] == 'cdp_consent']
    assert len(found) == 1, 'cdp_consent Set-Cookie: %r' % (r.set_cookies(),)
    return found[0][1], found[0][2]


def check_consent_cookie(ngx, r, want_mask, t0, t1, version='1'):
    """Asserts r sets the signed consent cookie for want_mask, made now
    with the instance's first key; returns its value."""
    value, attrs = consent_set_cookie(r)
    assert attrs == {'max-age': str(MAX_AGE_CONSENT), 'path': '/',
                     'httponly': True, 'samesite': 'Lax'}, attrs
    parts = value.split('.')
    assert len(parts) >= 5 and parts[0] == 'c1', value
    p, issued = parts[1], parts[-2]
    ver = '.'.join(parts[2:-2])
    assert p == str(want_mask), 'purposes %r, want %d (%s)' % (p, want_mask,
                                                               value)
    assert ver == version, 'version %r, want %r (%s)' % (ver, version, value)
    assert issued.isdigit(), value
    assert int(t0) - 1 <= int(issued) <= int(t1) + 1, (issued, t0, t1)
    want = consent_cookie(ngx.keys[0], want_mask, version, int(issued))
    assert value == want, 'cookie %s, signed here %s' % (value, want)
    return value


def aid_cleared(r):
    """True when r clears cdp_aid: `cdp_aid=; Max-Age=0; Path=/`."""
    for c in r.set_cookies():
        n, v, attrs = h.parse_set_cookie(c)
        if n == 'cdp_aid':
            assert v == '' and attrs.get('max-age') == '0' \
                and attrs.get('path') == '/', 'cdp_aid Set-Cookie %r' % c
            return True
    return False


def assert_location(r, want):
    assert r.status == 303, (r, r.body)
    loc = r.header('Location')
    assert loc == want, 'Location %r, want %r' % (loc, want)


def log_keys(ngx):
    """The consent log's streams, one a shard."""
    return ngx.shard_keys('consent_log')


def log_len(ngx):
    return h.consent_log_len(ngx)


def log_entries(ngx):
    """[(raw entry text, parsed), ...] of the consent log of every shard,
    oldest first."""
    out = []
    for _k, _id, fields in h.shard_entries(ngx, 'consent_log'):
        assert set(fields) == {'entry'}, fields
        out.append((fields['entry'], json.loads(fields['entry'])))
    return out


def wait_log(ngx, n, timeout=10.0):
    """Waits for n entries; then makes sure no more arrive."""
    last = [None]

    def f():
        last[0] = log_len(ngx)
        return last[0] >= n
    h.wait_until(f, timeout, 0.02)
    assert last[0] == n, 'consent_log has %r entries, want %d' % (last[0], n)
    time.sleep(0.3)
    assert log_len(ngx) == n, 'consent_log grew to %d, want %d' % (
        log_len(ngx), n)
    return log_entries(ngx)


def iso_seconds(ts):
    assert h.ISO_MS_RE.match(ts or ''), 'timestamp %r' % (ts,)
    return calendar.timegm(time.strptime(ts[:19], '%Y-%m-%dT%H:%M:%S')) \
        + int(ts[20:23]) / 1000.0


def check_entry(e, granted, version='1', t0=None, t1=None):
    assert set(e) == {'aid', 'granted', 'denied', 'source', 'version',
                      'timestamp'}, sorted(e)
    assert isinstance(e['granted'], list) and isinstance(e['denied'], list), e
    assert len(set(e['granted'])) == len(e['granted']), e
    assert sorted(e['granted']) == sorted(granted), e
    assert sorted(e['denied']) == sorted(set(PURPOSES) - set(granted)), e
    assert e['source'] == 'form', e
    assert e['version'] == version, e
    t = iso_seconds(e['timestamp'])
    if t0 is not None:
        assert t0 - 2 <= t <= t1 + 2, (e['timestamp'], t0, t1)


def mint_aid(ngx):
    """A cdp_aid cookie value minted by the instance (location with
    cdp_consent_default all)."""
    r = ngx.hit('title=mint', path='/p-all.gif')
    assert h.is_gif(r), r
    v, _ = h.cookie_of(r)
    assert v and h.COOKIE_VALUE_RE.match(v), r.set_cookies()
    return v


def utc_day():
    return time.strftime('%Y-%m-%d', time.gmtime())


def agg(ngx, days):
    """The days' aggregate hashes, summed over the shards."""
    return h.agg(ngx, days | {utc_day()})


# --------------------------------------------------------------------------
# the Python side of the cookies (a reference check for the helpers)

def test_aid_cookie_helper_matches_module(redis_server, nginx_factory):
    ngx = start(nginx_factory, redis_server)
    hex_id, value = aid_cookie(ngx.keys[0])
    st0 = ngx.status()
    r = ngx.hit('title=kept', path='/p-all.gif', cookie='cdp_aid=' + value)
    assert h.aid_of(r) == hex_id, r.set_cookies()
    assert ngx.status().delta(st0).cookies('kept') == 1


# --------------------------------------------------------------------------
# GET / HEAD: the current state

def test_get_state_default_none(redis_server, nginx_factory):
    ngx = start(nginx_factory, redis_server, NONE)
    r = get(ngx)
    assert_state(r, state(False, False, False, 'default'))
    assert r.header('Cache-Control') == 'no-store', r
    assert [c for c in r.set_cookies() if c.startswith('cdp_consent=')] == []


def test_get_state_nothing_configured(redis_server, nginx_factory):
    ngx = start(nginx_factory, redis_server, '')
    r = get(ngx)
    assert_state(r, state(False, False, False, 'none'))
    assert r.header('Cache-Control') == 'no-store', r


def test_get_state_default_all_and_gpc(redis_server, nginx_factory):
    ngx = start(nginx_factory, redis_server, ALL)
    r = get(ngx)
    assert_state(r, state(True, True, True, 'default'))
    assert r.header('Cache-Control') == 'no-store', r
    r = get(ngx, headers={'Sec-GPC': '1'})
    assert_state(r, state(True, False, True, 'gpc'))


def test_get_state_cmp(redis_server, nginx_factory):
    ngx = start(nginx_factory, redis_server, CMP + '\n    ' + NONE)
    r = get(ngx, headers={'X-CMP': 'analytics,personalization'})
    assert_state(r, state(True, False, True, 'cmp'))


def test_get_state_cookie(redis_server, nginx_factory):
    ngx = start(nginx_factory, redis_server, CMP + '\n    ' + ALL)
    c = consent_cookie(ngx.keys[0], mask('analytics', 'personalization'))
    r = get(ngx, cookie='theme=dark; cdp_consent=' + c,
            headers={'X-CMP': 'none'})
    assert_state(r, state(True, False, True, 'cookie'))
    # a forged cookie is not the person's choice: the CMP decides
    bad = consent_cookie(h.new_key(), mask('analytics'))
    r = get(ngx, cookie='cdp_consent=' + bad, headers={'X-CMP': 'none'})
    assert_state(r, state(False, False, False, 'cmp'))


def test_get_version(redis_server, nginx_factory):
    ngx = start(nginx_factory, redis_server,
                ALL + '\n    cdp_consent_version 2025-01;')
    assert_state(get(ngx), state(True, True, True, 'default', '2025-01'))
    # location level beats http level
    assert_state(get(ngx, path='/consent-v'),
                 state(True, True, True, 'default', 'loc.v3'))


def test_head(redis_server, nginx_factory):
    ngx = start(nginx_factory, redis_server, ALL)
    r = get(ngx, method='HEAD')
    assert r.status == 200, r
    ct = (r.header('Content-Type') or '').split(';')[0].strip()
    assert ct == 'application/json', r
    assert r.header('Cache-Control') == 'no-store', r
    assert r.body == b'', r.body


def test_get_writes_no_log(redis_server, nginx_factory):
    ngx = start(nginx_factory, redis_server, ALL)
    for _ in range(3):
        assert get(ngx).status == 200
    get(ngx, method='HEAD')
    # a successful POST afterwards: exactly one entry
    assert post(ngx, 'grant=analytics').status == 303
    wait_log(ngx, 1)


# --------------------------------------------------------------------------
# POST: the form

def test_post_grant_redirect(redis_server, nginx_factory):
    ngx = start(nginx_factory, redis_server, NONE)
    aid = mint_aid(ngx)
    t0 = time.time()
    r = post(ngx, 'grant=analytics&grant=marketing&redirect=/page',
             cookie='cdp_aid=' + aid)
    t1 = time.time()
    assert_location(r, '/page')
    v = check_consent_cookie(ngx, r, mask('analytics', 'marketing'), t0, t1)
    assert not aid_cleared(r), r.set_cookies()
    # the browser's next GET reads the new cookie
    r = get(ngx, cookie='cdp_aid=%s; cdp_consent=%s' % (aid, v))
    assert_state(r, state(True, True, False, 'cookie'))


@pytest.mark.parametrize('body,want', [
    ('grant=all', 7),
    ('grant=personalization', 4),
    ('grant=analytics&grant=analytics', 1),
    ('grant=marketing&grant=personalization&grant=analytics', 7),
    ('redirect=/x&grant=marketing', 2),
], ids=['all', 'personalization', 'repeated', 'three', 'redirect-first'])
def test_post_grant_sets(redis_server, nginx_factory, body, want):
    ngx = start(nginx_factory, redis_server, NONE)
    t0 = time.time()
    r = post(ngx, body, cookie='cdp_aid=' + mint_aid(ngx))
    t1 = time.time()
    assert r.status == 303, (r, r.body)
    check_consent_cookie(ngx, r, want, t0, t1)
    assert aid_cleared(r) == (not want & 1), r.set_cookies()


def test_post_withdraw_clears_aid(redis_server, nginx_factory):
    ngx = start(nginx_factory, redis_server, ALL)
    aid = mint_aid(ngx)
    t0 = time.time()
    r = post(ngx, 'redirect=/bye', cookie='cdp_aid=' + aid)
    t1 = time.time()
    assert_location(r, '/bye')
    v = check_consent_cookie(ngx, r, 0, t0, t1)
    assert aid_cleared(r), r.set_cookies()
    # the choice beats the default all
    r = get(ngx, cookie='cdp_consent=' + v)
    assert_state(r, state(False, False, False, 'cookie'))


def test_post_empty_body_withdraws(redis_server, nginx_factory):
    ngx = start(nginx_factory, redis_server, ALL)
    t0 = time.time()
    r = post(ngx, b'')
    t1 = time.time()
    assert_location(r, '/')
    check_consent_cookie(ngx, r, 0, t0, t1)
    # per the interface the anonymous cookie is cleared even when the
    # request carried none
    assert aid_cleared(r), r.set_cookies()


def test_post_version(redis_server, nginx_factory):
    ngx = start(nginx_factory, redis_server,
                NONE + '\n    cdp_consent_version 2025-01;')
    t0 = time.time()
    r = post(ngx, 'grant=analytics')
    r2 = post(ngx, 'grant=analytics', path='/consent-v')
    t1 = time.time()
    check_consent_cookie(ngx, r, 1, t0, t1, version='2025-01')
    check_consent_cookie(ngx, r2, 1, t0, t1, version='loc.v3')
    entries = wait_log(ngx, 2)
    assert sorted(e['version'] for _, e in entries) == ['2025-01',
                                                        'loc.v3'], entries


def test_post_charset_parameter(redis_server, nginx_factory):
    # a media type parameter is still the form type (RFC 9110 8.3.1)
    ngx = start(nginx_factory, redis_server, NONE)
    t0 = time.time()
    r = post(ngx, 'grant=analytics&redirect=/cs',
             ctype=FORM + '; charset=UTF-8')
    t1 = time.time()
    assert_location(r, '/cs')
    check_consent_cookie(ngx, r, 1, t0, t1)


def test_post_percent_encoded_redirect(redis_server, nginx_factory):
    ngx = start(nginx_factory, redis_server, NONE)
    r = post(ngx, 'grant=analytics&redirect=%2Fshop%2Fcart%3Fx%3D1')
    assert_location(r, '/shop/cart?x=1')
    consent_set_cookie(r)


def raw_request(port, data, timeout=5.0):
    """Sends data as is on a connection of its own; returns (status,
    headers text, body) of the answer (the server closes)."""
    with socket.create_connection(('127.0.0.1', port), timeout=timeout) as s:
        s.sendall(data)
        buf = b''
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    head, _, body = buf.partition(b'\r\n\r\n')
    lines = head.decode('latin-1').split('\r\n')
    return int(lines[0].split()[1]), '\n'.join(lines[1:]), body


def test_post_chunked_body(redis_server, nginx_factory):
    # a body without Content-Length (chunked) is read like any other
    ngx = start(nginx_factory, redis_server, NONE)
    form = b'grant=analytics&redirect=/chunked'
    req = (b'POST /consent HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n'
           b'Content-Type: application/x-www-form-urlencoded\r\n'
           b'Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n'
           b'%x\r\n%s\r\n0\r\n\r\n' % (ngx.port, len(form), form))
    status, head, body = raw_request(ngx.port, req)
    assert status == 303, (status, head, body)
    assert 'cdp_consent=c1.1.' in head, head
    wait_log(ngx, 1)


# --------------------------------------------------------------------------
# redirects: same-site paths only

@pytest.mark.parametrize('redirect', [
    '//evil.example/',
    'https://evil.example/',
    'http://evil.example/page',
    '/\\evil.example',
    '%2F%2Fevil.example',
    '%2F%5Cevil.example',
    '/%0D%0ASet-Cookie:%20x=1',
    '/page%09x',
    'javascript:alert(1)',
    'page',
    '',
], ids=['scheme-relative', 'https', 'http', 'backslash', 'encoded-slashes',
        'encoded-backslash', 'crlf', 'tab', 'javascript', 'relative',
        'empty'])
def test_open_redirect_refused(redis_server, nginx_factory, redirect):
    ngx = start(nginx_factory, redis_server, NONE)
    t0 = time.time()
    r = post(ngx, 'grant=analytics&redirect=' + redirect.replace('\\', '%5C'))
    t1 = time.time()
    assert_location(r, '/')
    # the choice is still recorded
    check_consent_cookie(ngx, r, 1, t0, t1)
    assert not any(c.lower().startswith('x=') for c in r.set_cookies()), \
        r.set_cookies()


def test_open_redirect_raw_backslash(redis_server, nginx_factory):
    # the backslash sent unencoded in the body
    ngx = start(nginx_factory, redis_server, NONE)
    r = post(ngx, b'grant=analytics&redirect=/\\evil.example')
    assert_location(r, '/')


def test_redirect_ignores_host_header(redis_server, nginx_factory):
    # the Location is the path itself: never built from a Host header
    ngx = start(nginx_factory, redis_server, NONE)
    r = post(ngx, 'grant=analytics&redirect=/page',
             headers={'Host': 'evil.example'})
    assert_location(r, '/page')
    assert 'evil' not in r.header('Location'), r


def test_no_redirect_field(redis_server, nginx_factory):
    ngx = start(nginx_factory, redis_server, NONE)
    r = post(ngx, 'grant=analytics')
    assert_location(r, '/')


# --------------------------------------------------------------------------
# JSON answers

def test_post_json_answer(redis_server, nginx_factory):
    ngx = start(nginx_factory, redis_server, NONE)
    t0 = time.time()
    r = post(ngx, 'grant=analytics&redirect=/page',
             headers={'Accept': 'application/json'})
    t1 = time.time()
    assert r.status == 200, (r, r.body)
    assert r.header('Location') is None, r
    assert_state(r, state(True, False, False, 'cookie'))
    check_consent_cookie(ngx, r, 1, t0, t1)
    assert not aid_cleared(r), r.set_cookies()


def test_post_json_answer_in_accept_list(redis_server, nginx_factory):
    ngx = start(nginx_factory, redis_server, ALL + '\n    cdp_consent_version v7;')
    r = post(ngx, 'grant=all',
             headers={'Accept': 'text/html, application/json;q=0.9',
                      'Sec-GPC': '1'})
    # the person's own choice: GPC does not take marketing off it
    assert_state(r, state(True, True, True, 'cookie', 'v7'))
    r = post(ngx, '', headers={'Accept': 'application/json'})
    assert_state(r, state(False, False, False, 'cookie', 'v7'))
    assert aid_cleared(r), r.set_cookies()


def test_post_html_accept_redirects(redis_server, nginx_factory):
    ngx = start(nginx_factory, redis_server, NONE)
    r = post(ngx, 'grant=analytics&redirect=/p',
             headers={'Accept': 'text/html,application/xhtml+xml,*/*;q=0.8'})
    assert_location(r, '/p')


# --------------------------------------------------------------------------
# cross-site requests

CROSS = {'success': False, 'error': 'cross_site',
         'message': 'cross-site request refused'}


def assert_refused_cross(r):
    assert r.status == 403, (r, r.body)
    assert json_body(r) == CROSS, r.body
    assert_no_state_change(r)


@pytest.mark.parametrize('value', ['cross-site', 'bogus'])
def test_cross_site_sec_fetch_site(redis_server, nginx_factory, value):
    ngx = start(nginx_factory, redis_server, NONE)
    aid = mint_aid(ngx)
    for accept in (None, 'application/json'):
        hd = {'Sec-Fetch-Site': value}
        if accept:
            hd['Accept'] = accept
        r = post(ngx, 'grant=all&redirect=/x', headers=hd,
                 cookie='cdp_aid=' + aid)
        assert_refused_cross(r)
    # nor a withdrawal (it would clear the anonymous cookie)
    r = post(ngx, '', headers={'Sec-Fetch-Site': value},
             cookie='cdp_aid=' + aid)
    assert_refused_cross(r)
    time.sleep(0.3)
    assert log_len(ngx) == 0, log_entries(ngx)


@pytest.mark.parametrize('value', ['same-origin', 'same-site', 'none'])
def test_sec_fetch_site_allowed(redis_server, nginx_factory, value):
    ngx = start(nginx_factory, redis_server, NONE)
    t0 = time.time()
    r = post(ngx, 'grant=analytics&redirect=/ok',
             headers={'Sec-Fetch-Site': value})
    t1 = time.time()
    assert_location(r, '/ok')
    check_consent_cookie(ngx, r, 1, t0, t1)


@pytest.mark.parametrize('origin', [
    'http://evil.example',
    'https://evil.example:%(port)d',
    'http://127.0.0.1:1',
    'http://127.0.0.1',
    'http://127.0.0.1.evil.example:%(port)d',
    'null',
], ids=['other-host', 'other-host-same-port', 'other-port', 'no-port',
        'suffix', 'null'])
def test_origin_mismatch_refused(redis_server, nginx_factory, origin):
    ngx = start(nginx_factory, redis_server, NONE)
    r = post(ngx, 'grant=analytics&redirect=/x',
             headers={'Origin': origin % {'port': ngx.port}})
    assert_refused_cross(r)
    time.sleep(0.3)
    assert log_len(ngx) == 0, log_entries(ngx)


def test_origin_matching_accepted(redis_server, nginx_factory):
    ngx = start(nginx_factory, redis_server, NONE)
    t0 = time.time()
    # http.client's Host is "127.0.0.1:<port>"
    r = post(ngx, 'grant=analytics&redirect=/ok',
             headers={'Origin': 'http://127.0.0.1:%d' % ngx.port,
                      'Sec-Fetch-Site': 'same-origin'})
    t1 = time.time()
    assert_location(r, '/ok')
    check_consent_cookie(ngx, r, 1, t0, t1)
    # a named host without a port
    r = post(ngx, 'grant=marketing',
             headers={'Host': 'shop.example',
                      'Origin': 'https://shop.example'})
    assert r.status == 303, (r, r.body)
    check_consent_cookie(ngx, r, 2, t0, time.time())
    # ... and another one refused against that Host
    r = post(ngx, 'grant=marketing',
             headers={'Host': 'shop.example',
                      'Origin': 'https://evil.example'})
    assert_refused_cross(r)
    wait_log(ngx, 2)


def test_origin_and_sec_fetch_site_both_checked(redis_server, nginx_factory):
    ngx = start(nginx_factory, redis_server, NONE)
    same = 'http://127.0.0.1:%d' % ngx.port
    r = post(ngx, 'grant=analytics',
             headers={'Origin': same, 'Sec-Fetch-Site': 'cross-site'})
    assert_refused_cross(r)
    r = post(ngx, 'grant=analytics',
             headers={'Origin': 'http://evil.example',
                      'Sec-Fetch-Site': 'same-origin'})
    assert_refused_cross(r)


# --------------------------------------------------------------------------
# bad requests

@pytest.mark.parametrize('body', [
    'grant=bogus',
    'grant=analytics&grant=bogus&redirect=/x',
    'grant=analytics%2Cmarketing',
    'grant=',
], ids=['unknown', 'one-of-several', 'list-in-one-field', 'empty'])
def test_unknown_grant(redis_server, nginx_factory, body):
    ngx = start(nginx_factory, redis_server, NONE)
    for accept in (None, 'application/json'):
        r = post(ngx, body, headers={'Accept': accept} if accept else None,
                 cookie='cdp_aid=' + mint_aid(ngx))
        assert r.status == 400, (r, r.body)
        assert json_body(r) == {'success': False,
                                'error': 'unknown_purpose',
                                'message': 'unknown purpose',
                                'field': 'grant'}, r.body
        assert_no_state_change(r)
    time.sleep(0.3)
    assert log_len(ngx) == 0, log_entries(ngx)


@pytest.mark.parametrize('ctype', ['text/plain', 'application/json',
                                   'multipart/form-data; boundary=x', None],
                         ids=['text', 'json', 'multipart', 'absent'])
def test_wrong_content_type(redis_server, nginx_factory, ctype):
    ngx = start(nginx_factory, redis_server, NONE)
    r = post(ngx, 'grant=analytics&redirect=/x', ctype=ctype)
    assert r.status == 415, (r, r.body)
    d = json_body(r)
    assert isinstance(d, dict) and 'error' in d, d
    assert_no_state_change(r)
    time.sleep(0.3)
    assert log_len(ngx) == 0, log_entries(ngx)


def test_body_size_limit(redis_server, nginx_factory):
    ngx = start(nginx_factory, redis_server, NONE)
    head = 'grant=analytics&redirect=/'
    path_4096 = '/' + 'a' * (4096 - len(head))
    body = head[:-1] + path_4096
    assert len(body) == 4096
    r = post(ngx, body)
    assert_location(r, path_4096)
    consent_set_cookie(r)

    r = post(ngx, body + 'a')
    assert r.status == 413, (r, r.body)
    d = json_body(r)
    assert isinstance(d, dict) and 'error' in d, d
    assert_no_state_change(r)
    r = post(ngx, 'grant=analytics&pad=' + 'x' * 10000)
    assert r.status == 413, (r, r.body)
    assert_no_state_change(r)
    wait_log(ngx, 1)


# --------------------------------------------------------------------------
# the consent log

def test_consent_log_entries(redis_server, nginx_factory):
    ngx = start(nginx_factory, redis_server, NONE)
    aid_value = mint_aid(ngx)
    raw_aid = aid_value.split('.')[0]
    t0 = time.time()
    assert post(ngx, 'grant=analytics&grant=marketing&redirect=/a',
                cookie='cdp_aid=' + aid_value).status == 303
    # refused ones leave nothing
    assert post(ngx, 'grant=all', cookie='cdp_aid=' + aid_value,
                headers={'Sec-Fetch-Site': 'cross-site'}).status == 403
    assert post(ngx, 'grant=nope', cookie='cdp_aid=' + aid_value).status \
        == 400
    assert post(ngx, 'grant=all', ctype='text/plain').status == 415
    assert post(ngx, 'grant=all', cookie='cdp_aid=' + aid_value,
                headers={'Accept': 'application/json'}).status == 200
    assert post(ngx, '', cookie='cdp_aid=' + aid_value).status == 303
    assert post(ngx, 'grant=personalization').status == 303
    t1 = time.time()
    entries = wait_log(ngx, 4)

    # two workers batch independently: the stream's order need not be the
    # order of the posts, so entries are told apart by what they grant
    by = {frozenset(e['granted']): (raw, e) for raw, e in entries}
    assert len(by) == 4, entries
    (raw1, e1) = by[frozenset(['analytics', 'marketing'])]
    (raw2, e2) = by[frozenset(PURPOSES)]
    (raw3, e3) = by[frozenset()]
    (raw4, e4) = by[frozenset(['personalization'])]
    check_entry(e1, ['analytics', 'marketing'], t0=t0, t1=t1)
    check_entry(e2, list(PURPOSES), t0=t0, t1=t1)
    check_entry(e3, [], t0=t0, t1=t1)
    check_entry(e4, ['personalization'], t0=t0, t1=t1)
    times = [iso_seconds(e['timestamp']) for e in (e1, e2, e3, e4)]
    assert times == sorted(times), times

    for raw, e in ((raw1, e1), (raw2, e2), (raw3, e3)):
        assert isinstance(e['aid'], str) and len(e['aid']) == 40 \
            and all(c in '0123456789abcdef' for c in e['aid']), e
        assert e['aid'] != raw_aid, e
        assert raw_aid not in raw and raw_aid.upper() not in raw.upper(), raw
        assert aid_value not in raw, raw
    # one browser, one hash
    assert e1['aid'] == e2['aid'] == e3['aid'], entries
    # without a cdp_aid cookie: null
    assert e4['aid'] is None, e4
    # the name erasure and the suppression list use: SHA1 of
    # "anonymous_id:" and the id (store/admin.lua's aidh)
    assert e1['aid'] == hashlib.sha1(
        ('anonymous_id:' + raw_aid).encode()).hexdigest(), e1
    # not a plain digest of the id
    plain = {hashlib.md5(raw_aid.encode()).hexdigest(),
             hashlib.sha1(raw_aid.encode()).hexdigest()[:32],
             hashlib.sha256(raw_aid.encode()).hexdigest()[:32],
             hashlib.sha256(raw_aid.encode()).hexdigest()[-32:],
             hashlib.md5(bytes.fromhex(raw_aid)).hexdigest(),
             hashlib.sha256(bytes.fromhex(raw_aid)).hexdigest()[:32]}
    assert e1['aid'] not in plain, e1


def test_consent_log_aid_null_for_invalid_cookie(redis_server, nginx_factory):
    ngx = start(nginx_factory, redis_server, NONE)
    hex_id, forged = aid_cookie(h.new_key())           # another key
    assert post(ngx, 'grant=analytics',
                cookie='cdp_aid=' + forged).status == 303
    assert post(ngx, 'grant=analytics',
                cookie='cdp_aid=' + hex_id).status == 303  # no tag
    assert post(ngx, 'grant=analytics',
                cookie='cdp_aid=garbage').status == 303
    entries = wait_log(ngx, 3)
    for raw, e in entries:
        assert e['aid'] is None, e
        assert hex_id not in raw, raw


def test_consent_log_aid_hash_per_id(redis_server, nginx_factory):
    # two instances, same Redis, different keys and prefixes: the same id
    # has the same name in both logs (erasure finds it from the id alone,
    # whatever the secret, and a key rotation does not rename it); two ids
    # differ
    a = start(nginx_factory, redis_server, NONE)
    b = start(nginx_factory, redis_server, NONE)
    hex_id = secrets.token_hex(16)
    other = secrets.token_hex(16)
    _, va = aid_cookie(a.keys[0], hex_id)
    _, va2 = aid_cookie(a.keys[0], other)
    _, vb = aid_cookie(b.keys[0], hex_id)
    assert post(a, 'grant=analytics', cookie='cdp_aid=' + va).status == 303
    assert post(a, 'grant=analytics', cookie='cdp_aid=' + va2).status == 303
    assert post(b, 'grant=analytics', cookie='cdp_aid=' + vb).status == 303
    (ra1, ea1), (ra2, ea2) = wait_log(a, 2)
    ((rb1, eb1),) = wait_log(b, 1)
    for e in (ea1, ea2, eb1):
        assert isinstance(e['aid'], str) and len(e['aid']) == 40, e
    # two workers batch on their own: a's log need not be in post order
    aid = hashlib.sha1(('anonymous_id:' + hex_id).encode()).hexdigest()
    aid2 = hashlib.sha1(('anonymous_id:' + other).encode()).hexdigest()
    assert sorted([ea1['aid'], ea2['aid']]) == sorted([aid, aid2]), (ea1, ea2)
    assert eb1['aid'] == aid, eb1
    for raw in (ra1, ra2, rb1):
        assert hex_id not in raw and other not in raw, raw


def test_consent_log_spread_over_the_shards(redis_server, nginx_factory):
    """The log belongs to nobody: each worker sends its entries to the
    shards in turn (store/README.md, "Shards"), so 20 entries from two
    workers fill at least 10 shards' logs, and every one is kept."""
    ngx = start(nginx_factory, redis_server, NONE)
    for i in range(20):
        assert post(ngx, 'grant=analytics').status == 303
    entries = wait_log(ngx, 20)
    assert all(e['granted'] == ['analytics'] for _r, e in entries), entries
    used = {k for k, _i, _f in h.shard_entries(ngx, 'consent_log')}
    assert used <= set(log_keys(ngx)) and len(used) >= 10, used


def test_consent_log_stores_nothing_per_person(redis_server, nginx_factory):
    ngx = start(nginx_factory, redis_server, NONE)
    _, value = aid_cookie(ngx.keys[0])
    assert post(ngx, 'grant=all', cookie='cdp_aid=' + value).status == 303
    wait_log(ngx, 1)
    c = ngx.rc()
    try:
        # but the batch ids the store remembers (bitmaps of nobody's data)
        ks = sorted(k for k in c.scan_iter(match=ngx.prefix + ':*')
                    if not k.startswith(ngx.prefix + ':once:'))
    finally:
        c.close()
    assert len(ks) == 1 and ks[0] in log_keys(ngx), ks


# --------------------------------------------------------------------------
# the cookie drives the pixel

def test_granted_cookie_tracks_pixel(redis_server, nginx_factory):
    ngx = start(nginx_factory, redis_server, NONE)
    days = {utc_day()}
    # before: default none, aggregated only
    r = ngx.hit('title=before')
    assert h.is_gif(r) and r.set_cookies() == [], r
    r = post(ngx, 'grant=analytics&redirect=/page')
    assert_location(r, '/page')
    v, _ = consent_set_cookie(r)

    r = ngx.hit('title=after', cookie='cdp_consent=' + v)
    assert h.is_gif(r), r
    aid = h.aid_of(r)
    assert aid, 'not tracked after granting analytics: %r' % (
        r.set_cookies(),)
    assert r.header('X-Consent') == 'analytics', r
    assert ngx.wait_xlen(1) == 1, ngx.xlen()
    e = ngx.events()[0]
    assert e['anonymousId'] == aid, e
    assert e['context'].get('consent') == {
        'analytics': True, 'marketing': False, 'personalization': False,
        'source': 'cookie'}, e['context']
    assert ngx.browser(aid).get('consent') == 'analytics'
    ngx.wait_settled()
    assert agg(ngx, days) == {'page|--': 1}, agg(ngx, days)


def test_withdrawn_cookie_aggregates_pixel(redis_server, nginx_factory):
    # with cdp_consent_default all: the withdrawal beats the default
    ngx = start(nginx_factory, redis_server, ALL)
    days = {utc_day()}
    r = ngx.hit('title=tracked')
    aid = h.aid_of(r)
    assert aid, r.set_cookies()
    aid_value = h.cookie_of(r)[0]
    assert ngx.wait_xlen(1) == 1
    ngx.wait_settled()
    rec = ngx.browser(aid)

    r = post(ngx, 'redirect=/bye', cookie='cdp_aid=' + aid_value)
    assert_location(r, '/bye')
    assert aid_cleared(r), r.set_cookies()
    v, _ = consent_set_cookie(r)

    st0 = ngx.status()
    # the browser still sends the old cdp_aid if it ignored the clearing
    r = ngx.hit('title=withdrawn', cookie='cdp_aid=%s; cdp_consent=%s'
                % (aid_value, v))
    assert h.is_gif(r), r
    assert r.set_cookies() == [], r.set_cookies()
    assert r.header('X-Consent') == 'none', r
    r = ngx.hit('title=withdrawn2', cookie='cdp_consent=' + v)
    assert h.is_gif(r) and r.set_cookies() == [], r

    def counted():
        a = agg(ngx, days)
        return a.get('page|--', 0) >= 2 and a
    a = h.wait_until(counted, 10)
    assert a == {'page|--': 2}, agg(ngx, days)
    ngx.wait_settled()
    assert ngx.xlen() == 1, ngx.raw_events()
    assert ngx.browser(aid) == rec, ngx.browser(aid)
    assert ngx.status().delta(st0).c('cdp_events_aggregated_total') == 2


# --------------------------------------------------------------------------
# configuration

@pytest.mark.parametrize('version,ok', [
    ('2025-01_a.B', True),
    ('v' * 32, True),
    ('v' * 33, False),
    ('"bad/version"', False),
    ('"two words"', False),
    ('""', False),
], ids=['good', 'max-len', 'too-long', 'slash', 'space', 'empty'])
def test_version_config(redis_server, nginx_factory, version, ok):
    ngx = start(nginx_factory, redis_server, start=False)
    rc, out, _ = ngx.test_config(
        consent=NONE + '\n    cdp_consent_version %s;' % version)
    if ok:
        assert rc == 0, out
    else:
        assert rc != 0, 'nginx -t accepted cdp_consent_version %s' % version
        assert 'cdp_consent_version' in out, out
