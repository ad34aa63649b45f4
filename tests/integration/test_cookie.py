"""The signed anonymous id cookie: kept when valid, replaced when forged or
malformed, key rotation through cdp_secret_file (docs/directives.md:
cdp_secret_file, cdp_cookie; cdp_cookies_total)."""

import cdp_harness as h
from cdp_harness import COOKIE_VALUE_RE


def mint(ngx):
    r = ngx.hit()
    assert r.status == 200, r
    v, _ = h.cookie_of(r)
    assert v and COOKIE_VALUE_RE.match(v), r.set_cookies()
    return v


def send(ngx, value, extra_cookies=True):
    """A hit carrying the cookie; returns (response, new cookie value,
    counter deltas)."""
    st0 = ngx.status()
    cookie = ('theme=dark; cdp_aid=%s; _ga=GA1.1.1.1' % value
              if extra_cookies else 'cdp_aid=' + value)
    r = ngx.hit(cookie=cookie)
    assert r.status == 200, r
    v, _ = h.cookie_of(r)
    assert v and COOKIE_VALUE_RE.match(v), (
        'no valid Set-Cookie after sending %r: %r' % (value, r.set_cookies()))
    return r, v, ngx.status().delta(st0)


def aid(v):
    return v.split('.')[0]


def flip_tag(v):
    i = 33
    c = 'A' if v[i] != 'A' else 'B'
    return v[:i] + c + v[i + 1:]


def flip_id(v):
    c = '0' if v[5] != '0' else '1'
    return v[:5] + c + v[6:]


def test_valid_cookie_kept(cdp):
    v = mint(cdp)
    r, v2, d = send(cdp, v)
    assert aid(v2) == aid(v), 'valid cookie %s replaced by %s' % (v, v2)
    assert d.cookies('kept') == 1, d
    assert d.cookies('new') == 0 and d.cookies('forged') == 0, d
    # alone in the header too
    r, v3, d = send(cdp, v, extra_cookies=False)
    assert aid(v3) == aid(v) and d.cookies('kept') == 1, (v3, d)


def _assert_replaced(cdp, sent, result):
    r, v2, d = send(cdp, sent)
    assert aid(v2) != aid(sent), '%s cookie %s kept' % (result, sent)
    assert d.cookies(result) == 1, (
        'sent %s cookie %r: counters %r' % (result, sent,
                                            {k: v for k, v in d.items()
                                             if 'cookies' in k}))
    assert d.cookies('kept') == 0, d
    # the replacement is a valid cookie
    r, v3, d = send(cdp, v2)
    assert aid(v3) == aid(v2) and d.cookies('kept') == 1, (v2, v3, d)
    return v2


def test_forged_tag_replaced(cdp):
    v = mint(cdp)
    forged = flip_tag(v)
    assert COOKIE_VALUE_RE.match(forged) and forged != v
    _assert_replaced(cdp, forged, 'forged')


def test_forged_id_replaced_and_never_stored(cdp):
    v = mint(cdp)
    forged = flip_id(v)
    assert COOKIE_VALUE_RE.match(forged) and forged != v
    new = _assert_replaced(cdp, forged, 'forged')
    # 1 mint + forged hit + check hit
    assert cdp.wait_xlen(3) >= 3
    ids = [e.get('anonymousId') for e in cdp.events()]
    assert aid(forged) not in ids, 'a forged id reached Redis: %r' % ids
    assert ids.count(aid(new)) == 2, ids


def test_truncated_cookie_malformed(cdp):
    v = mint(cdp)
    _assert_replaced(cdp, v[:-1], 'malformed')


def test_garbage_cookie_malformed(cdp):
    _assert_replaced(cdp, 'hello-world', 'malformed')


def test_key_rotation(redis_server, nginx_factory):
    key_a, key_b = h.new_key(), h.new_key()
    ngx = nginx_factory(redis_server, keys=[key_a])
    c_a = mint(ngx)

    # rotation: B signs, A still verifies
    ngx.write_secret([key_b, key_a])
    ngx.reload()
    r, v, d = send(ngx, c_a)
    assert aid(v) == aid(c_a), 'cookie of the previous key not kept'
    assert d.cookies('kept') == 1, d
    # the refresh re-signs it with B; a cookie of B comes back unchanged
    assert v != c_a, 'cookie of the previous key not re-signed'
    c_a_resigned = v
    c_b = mint(ngx)
    r, v, d = send(ngx, c_b)
    assert v == c_b and d.cookies('kept') == 1, (c_b, v, d)

    # the new cookie is signed with B: A alone rejects it
    ngx.write_secret([key_a])
    ngx.reload()
    r, v, d = send(ngx, c_b)
    assert aid(v) != aid(c_b) and d.cookies('forged') == 1, (
        'cookie minted after rotation verifies with the old key only: '
        'not signed with the first key', c_b, v, d)
    r, v, d = send(ngx, c_a)
    assert aid(v) == aid(c_a) and d.cookies('kept') == 1, d

    # rotation done: B alone; the old cookie is no longer accepted
    ngx.write_secret([key_b])
    ngx.reload()
    r, v, d = send(ngx, c_b)
    assert aid(v) == aid(c_b) and d.cookies('kept') == 1, d
    r, v, d = send(ngx, c_a)
    assert aid(v) != aid(c_a) and d.cookies('forged') == 1, d
    # ... but the browser that came back during the rotation kept its id
    r, v, d = send(ngx, c_a_resigned)
    assert aid(v) == aid(c_a) and d.cookies('kept') == 1, d


def test_cookie_from_other_secret_is_forged(redis_server, nginx_factory):
    """Two sites with different secrets do not accept each other's ids."""
    one = nginx_factory(redis_server)
    two = nginx_factory(redis_server)
    v = mint(one)
    r, v2, d = send(two, v)
    assert aid(v2) != aid(v) and d.cookies('forged') == 1, d
