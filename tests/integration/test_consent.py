"""Consent (issue 5): the state of a request from our signed consent cookie,
the site's CMP (`cdp_consent`), Global Privacy Control and
`cdp_consent_default`, failing closed; what a hit without analytics
consent may still do (the GIF, one aggregate count) and what it may not
(a cookie, an event, a per-person key); `context.consent` of events, the
`consent` field of the browser's record, `$cdp_consent`.

The consent cookie is computed here, independently of the module:

    key = HMAC-SHA256(secret line, "ngx_cdp consent cookie v1")
    body = "c1.<P>.<version>.<issued>"
    cookie = body + "." + base64url(HMAC-SHA256(key, "consent:" + body)[:12])

The harness's default configuration has `cdp_consent_default all;`; these
tests set their own consent lines through consent_line ('' = nothing).
"""

import base64
import hashlib
import hmac
import time

import pytest

import cdp_harness as h


ALL = 'analytics,marketing,personalization'

CONSENT_LOCATIONS = """\
location = /p.gif {
            cdp_pixel;
            add_header X-Consent $cdp_consent always;
        }
        location = /p204 {
            cdp_pixel 204;
            add_header X-Consent $cdp_consent always;
        }
        location = /consent { return 200 "[$cdp_consent]"; }
        location = /status { cdp_status; }"""

CMP = 'cdp_consent $http_x_cmp;'

# geo (see test_geo.py for the database written by geo_db.pl)
DE_IP = '198.51.100.7'
US_IP = '203.0.113.9'
REALIP = """set_real_ip_from 127.0.0.1;
        real_ip_header X-Forwarded-For;"""
OPT_IN_DE = """map $cdp_country $dflt {
        DE      none;
        default all;
    }
    cdp_consent_default $dflt;"""


consent_key = h.consent_key
consent_cookie = h.consent_cookie


def test_consent_cookie_reference_vector():
    # the unit tests' vector (tests/unit/test_consent.c, C_K1: raw key
    # bytes 0x01..0x20): the computation above is the module's format
    key = bytes(range(1, 33))
    body = b'c1.3.2025-01.1735689600'
    tag = hmac.new(key, b'consent:' + body, hashlib.sha256).digest()[:12]
    assert body + b'.' + base64.urlsafe_b64encode(tag).rstrip(b'=') == \
        b'c1.3.2025-01.1735689600.ZXHlLv7jzUsrp6t5'


def consent(analytics, marketing, personalization, source):
    return {'analytics': analytics, 'marketing': marketing,
            'personalization': personalization, 'source': source}


# --------------------------------------------------------------------------
# helpers

def start(nginx_factory, redis, consent_line, **kw):
    kw.setdefault('locations', CONSENT_LOCATIONS)
    return nginx_factory(redis, consent_line=consent_line, **kw)


def utc_day():
    return time.strftime('%Y-%m-%d', time.gmtime())


class Day:
    """The UTC day(s) a test's hits can fall on (two across midnight)."""

    def __init__(self):
        self.days = {utc_day()}

    def close(self):
        self.days.add(utc_day())
        return self


def agg(ngx, day):
    """{field: int} of today's aggregate hash(es), summed over the days
    and the shards."""
    return h.agg(ngx, day.close().days)


def wait_agg(ngx, day, want, timeout=10.0):
    """Waits until the aggregate hash has at least the counts of want;
    returns the last one seen."""
    last = [{}]

    def f():
        last[0] = agg(ngx, day)
        return all(last[0].get(k, 0) >= v for k, v in want.items())
    h.wait_until(f, timeout, 0.02)
    return last[0]


def keys(ngx, pattern='*'):
    """The keys under the prefix but the batch ids the store remembers
    (<prefix>:once:{<tag>}:<worker>:<n>, bitmaps of nobody's data)."""
    c = ngx.rc()
    try:
        return sorted(k for k in c.scan_iter(match='%s:%s' % (ngx.prefix,
                                                              pattern))
                      if not k.startswith(ngx.prefix + ':once:'))
    finally:
        c.close()


def browser_keys(ngx):
    return keys(ngx, 'profile:*')


def settle(ngx):
    st = ngx.wait_settled()
    assert st.queue == 0, st
    return st


def assert_untracked(r):
    """The answer to a hit without analytics consent: the GIF, no cookie."""
    assert h.is_gif(r), r
    assert r.set_cookies() == [], 'Set-Cookie without consent: %r' % (
        r.set_cookies(),)
    assert r.header('X-Consent') is not None, r
    assert 'analytics' not in r.header('X-Consent'), r


def assert_tracked(r):
    assert h.is_gif(r), r
    aid = h.aid_of(r)
    assert aid, 'no valid cdp_aid Set-Cookie: %r' % (r.set_cookies(),)
    return aid


def one_event(ngx, n=1):
    assert ngx.wait_xlen(n) == n, ngx.xlen()
    return ngx.events()[n - 1]


def by_title(events):
    out = {}
    for e in events:
        t = e.get('name') or e.get('properties', {}).get('title')
        assert t not in out, 'two events titled %r' % t
        out[t] = e
    return out


def access_aids(ngx, marker):
    """aid= of the access log lines whose request contains marker."""
    out = []
    for line in ngx.read(ngx.access_log).splitlines():
        if marker in line and ' aid=' in line:
            out.append(line.rsplit(' aid=', 1)[1].strip())
    return out


# --------------------------------------------------------------------------
# nothing configured: no consent at all

def test_nothing_configured_fails_closed(redis_server, nginx_factory):
    ngx = start(nginx_factory, redis_server, '')
    day = Day()
    st0 = ngx.status()

    r = ngx.hit('title=closed')
    assert_untracked(r)
    assert r.header('X-Consent') == 'none', r
    r = ngx.hit('e=signup&p.plan=pro')
    assert_untracked(r)
    r = ngx.hit('title=closed204', path='/p204')
    assert r.status == 204 and r.body == b'', r
    assert r.set_cookies() == [], r.set_cookies()
    assert r.header('X-Consent') == 'none', r

    a = wait_agg(ngx, day, {'page|--': 2, 'signup|--': 1})
    assert a == {'page|--': 2, 'signup|--': 1}, a
    settle(ngx)
    d = ngx.status().delta(st0)
    assert d.c('cdp_events_aggregated_total') == 3, d
    assert d.cookies('new') == 0 and d.cookies('kept') == 0, d

    assert ngx.xlen() == 0, ngx.raw_events()
    assert browser_keys(ngx) == [], browser_keys(ngx)
    # nothing else under the prefix than the day's aggregate hash
    ks = keys(ngx)
    assert ks and set(ks) <= set(h.agg_keys(ngx, day.days)), ks



def agg_ttls(ngx, day):
    """The TTLs of the aggregate hashes (every shard's) that exist."""
    c = ngx.rc()
    try:
        return [c.ttl(k) for k in h.agg_keys(ngx, day.close().days)
                if c.exists(k)]
    finally:
        c.close()


@pytest.mark.parametrize('retention,seconds', [
    (None, 25 * 30 * 86400),        # the default: 25 months of 30 days
    ('2d', 2 * 86400),
])
def test_aggregate_hash_expires(redis_server, nginx_factory, retention,
                                seconds):
    extra = ('cdp_aggregate_retention %s;' % retention) if retention else ''
    ngx = start(nginx_factory, redis_server, '', http_extra=extra)
    day = Day()

    assert_untracked(ngx.hit('title=counted'))
    assert wait_agg(ngx, day, {'page|--': 1}) == {'page|--': 1}

    ttls = agg_ttls(ngx, day)
    assert ttls and all(seconds - 60 < t <= seconds for t in ttls), ttls


def test_aggregate_spread_over_the_shards(redis_server, nginx_factory):
    """The counts belong to nobody: each worker sends its hits to the
    shards' hashes in turn (store/README.md, "Shards"), so 20 hits from two
    workers fill at least 10 shards' hashes, and the sum is every hit."""
    ngx = start(nginx_factory, redis_server, '')
    day = Day()
    for i in range(20):
        assert_untracked(ngx.hit('title=spread%d' % i))
    assert wait_agg(ngx, day, {'page|--': 20}) == {'page|--': 20}
    c = ngx.rc()
    try:
        used = [k for k in h.agg_keys(ngx, day.close().days) if c.exists(k)]
    finally:
        c.close()
    assert len(used) >= 10, used
    assert set(keys(ngx, 'agg:*')) == set(used)


# --------------------------------------------------------------------------
# the default

def test_default_all_tracked(redis_server, nginx_factory):
    ngx = start(nginx_factory, redis_server, 'cdp_consent_default all;')
    day = Day()
    st0 = ngx.status()
    r = ngx.hit('title=dflt')
    aid = assert_tracked(r)
    assert r.header('X-Consent') == ALL, r

    e = one_event(ngx)
    assert e['anonymousId'] == aid, e
    assert e['context'].get('consent') == consent(True, True, True,
                                                  'default'), e['context']
    b = ngx.browser(aid)
    assert b.get('consent') == ALL, b
    assert b.get('events') == '1', b

    settle(ngx)
    assert ngx.status().delta(st0).c('cdp_events_aggregated_total') == 0
    assert agg(ngx, day) == {}, agg(ngx, day)


def test_harness_default_stack_tracks(cdp):
    # the harness's default configuration (cdp_consent_default all;)
    r = cdp.hit('title=stack', headers={})
    aid = assert_tracked(r)
    e = one_event(cdp)
    assert e['context'].get('consent') == consent(True, True, True,
                                                  'default'), e['context']
    assert cdp.browser(aid).get('consent') == ALL


def test_default_at_location_level(redis_server, nginx_factory):
    locs = CONSENT_LOCATIONS + """
        location = /p-optin.gif {
            cdp_pixel;
            cdp_consent_default none;
            add_header X-Consent $cdp_consent always;
        }"""
    ngx = start(nginx_factory, redis_server, 'cdp_consent_default all;',
                locations=locs)
    day = Day()
    r = ngx.hit('title=optin', path='/p-optin.gif')
    assert_untracked(r)
    assert r.header('X-Consent') == 'none', r
    r = ngx.hit('title=http-level')
    assert_tracked(r)
    assert r.header('X-Consent') == ALL, r
    a = wait_agg(ngx, day, {'page|--': 1})
    assert a == {'page|--': 1}, a
    settle(ngx)
    assert ngx.xlen() == 1, ngx.raw_events()
    assert set(by_title(ngx.events())) == {'http-level'}


# --------------------------------------------------------------------------
# Global Privacy Control

def test_gpc_removes_marketing_from_default(redis_server, nginx_factory):
    ngx = start(nginx_factory, redis_server, 'cdp_consent_default all;')
    r = ngx.hit('title=gpc', headers={'Sec-GPC': '1'})
    aid = assert_tracked(r)
    assert r.header('X-Consent') == 'analytics,personalization', r
    e = one_event(ngx)
    assert e['context'].get('consent') == consent(True, False, True,
                                                  'gpc'), e['context']
    assert ngx.browser(aid).get('consent') == 'analytics,personalization'


@pytest.mark.parametrize('value', ['0', 'true', '11', 'yes'])
def test_gpc_other_values_not_applied(redis_server, nginx_factory, value):
    # (nginx trims trailing whitespace of header values: "1 " would be "1")
    ngx = start(nginx_factory, redis_server, 'cdp_consent_default all;')
    r = ngx.hit('title=gpc-' + value, headers={'Sec-GPC': value})
    assert_tracked(r)
    assert r.header('X-Consent') == ALL, (value, r)
    e = one_event(ngx)
    assert e['context'].get('consent') == consent(True, True, True,
                                                  'default'), e['context']


def test_gpc_on_default_without_marketing(redis_server, nginx_factory):
    # nothing to remove: the default as configured
    ngx = start(nginx_factory, redis_server,
                'cdp_consent_default analytics;')
    r = ngx.hit('title=gpc-a', headers={'Sec-GPC': '1'})
    assert_tracked(r)
    assert r.header('X-Consent') == 'analytics', r
    e = one_event(ngx)
    assert e['context'].get('consent') == consent(True, False, False,
                                                  'default'), e['context']


# --------------------------------------------------------------------------
# the CMP (cdp_consent)

def test_cmp_analytics_beats_default_none(redis_server, nginx_factory):
    ngx = start(nginx_factory, redis_server,
                CMP + '\n    cdp_consent_default none;')
    r = ngx.hit('title=cmp-a', headers={'X-CMP': 'analytics'})
    aid = assert_tracked(r)
    assert r.header('X-Consent') == 'analytics', r
    e = one_event(ngx)
    assert e['context'].get('consent') == consent(True, False, False,
                                                  'cmp'), e['context']
    assert ngx.browser(aid).get('consent') == 'analytics'


def test_cmp_list_formats(redis_server, nginx_factory):
    ngx = start(nginx_factory, redis_server,
                CMP + '\n    cdp_consent_default none;')
    want = {
        'list': ('Analytics, personalization,necessary',
                 'analytics,personalization'),
        'all': ('all', ALL),
    }
    for title, (cmp, text) in want.items():
        r = ngx.hit('title=' + title, headers={'X-CMP': cmp})
        assert_tracked(r)
        assert r.header('X-Consent') == text, (cmp, r)
    assert ngx.wait_xlen(2) == 2
    ev = by_title(ngx.events())
    assert ev['list']['context'].get('consent') == consent(
        True, False, True, 'cmp'), ev['list']['context']
    assert ev['all']['context'].get('consent') == consent(
        True, True, True, 'cmp'), ev['all']['context']


def test_cmp_none_beats_default_all(redis_server, nginx_factory):
    ngx = start(nginx_factory, redis_server,
                CMP + '\n    cdp_consent_default all;')
    day = Day()
    r = ngx.hit('title=cmp-none', headers={'X-CMP': 'none'})
    assert_untracked(r)
    assert r.header('X-Consent') == 'none', r
    # a CMP that grants only marketing: still no analytics
    r = ngx.hit('e=buy', headers={'X-CMP': 'marketing'})
    assert_untracked(r)
    assert r.header('X-Consent') == 'marketing', r
    a = wait_agg(ngx, day, {'page|--': 1, 'buy|--': 1})
    assert a == {'page|--': 1, 'buy|--': 1}, a
    settle(ngx)
    assert ngx.xlen() == 0, ngx.raw_events()
    assert browser_keys(ngx) == []


def test_gpc_does_not_override_cmp(redis_server, nginx_factory):
    ngx = start(nginx_factory, redis_server,
                CMP + '\n    cdp_consent_default none;')
    r = ngx.hit('title=cmp-gpc', headers={'X-CMP': 'all', 'Sec-GPC': '1'})
    assert_tracked(r)
    assert r.header('X-Consent') == ALL, r
    e = one_event(ngx)
    assert e['context'].get('consent') == consent(True, True, True,
                                                  'cmp'), e['context']


@pytest.mark.parametrize('value', ['bogus', 'none,analytics', 'analytics;x',
                                   '', None],
                         ids=['unknown-name', 'none-in-list', 'bad-sep',
                              'empty', 'absent'])
def test_cmp_unparseable_falls_back_to_default(redis_server, nginx_factory,
                                               value):
    ngx = start(nginx_factory, redis_server,
                CMP + '\n    cdp_consent_default all;')
    hdr = {} if value is None else {'X-CMP': value}
    r = ngx.hit('title=fallback', headers=hdr)
    assert_tracked(r)
    assert r.header('X-Consent') == ALL, (value, r)
    e = one_event(ngx)
    assert e['context'].get('consent') == consent(True, True, True,
                                                  'default'), e['context']


def test_cmp_unparseable_with_default_none_not_tracked(redis_server,
                                                      nginx_factory):
    # an unknown CMP format is not read as some consent
    ngx = start(nginx_factory, redis_server,
                CMP + '\n    cdp_consent_default none;')
    day = Day()
    r = ngx.hit('title=bogus', headers={'X-CMP': 'yes-to-everything'})
    assert_untracked(r)
    assert r.header('X-Consent') == 'none', r
    assert wait_agg(ngx, day, {'page|--': 1}) == {'page|--': 1}
    settle(ngx)
    assert ngx.xlen() == 0


def test_cmp_through_map_of_cookie(redis_server, nginx_factory):
    # the usual wiring: the CMP's own cookie, mapped
    http = """map $cookie_cmp $cmp_state {
        granted     all;
        stats       analytics;
        denied      none;
        default     "";
    }"""
    ngx = start(nginx_factory, redis_server,
                'cdp_consent $cmp_state;\n    cdp_consent_default none;',
                http_extra=http)
    day = Day()
    r = ngx.hit('title=stats', cookie='cmp=stats')
    assert_tracked(r)
    assert r.header('X-Consent') == 'analytics', r
    r = ngx.hit('title=denied', cookie='cmp=denied')
    assert_untracked(r)
    r = ngx.hit('title=nocmp')
    assert_untracked(r)
    assert wait_agg(ngx, day, {'page|--': 2}) == {'page|--': 2}
    assert ngx.wait_xlen(1) == 1
    settle(ngx)
    ev = by_title(ngx.events())
    assert set(ev) == {'stats'}, sorted(ev)
    assert ev['stats']['context'].get('consent') == consent(
        True, False, False, 'cmp')


# --------------------------------------------------------------------------
# an opt-in region (geo DB, client address through realip)

def test_opt_in_region(redis_server, nginx_factory, geo_dbs):
    ngx = start(nginx_factory, redis_server,
                'cdp_geoip_db %s;\n    %s' % (geo_dbs['main'], OPT_IN_DE),
                server_extra=REALIP)
    day = Day()
    st0 = ngx.status()

    r = ngx.hit('title=de', headers={'X-Forwarded-For': DE_IP})
    assert_untracked(r)
    assert r.header('X-Consent') == 'none', r
    r = ngx.hit('e=signup', headers={'X-Forwarded-For': DE_IP})
    assert_untracked(r)
    a = wait_agg(ngx, day, {'page|DE': 1, 'signup|DE': 1})
    assert a == {'page|DE': 1, 'signup|DE': 1}, a
    settle(ngx)
    assert ngx.xlen() == 0, ngx.raw_events()
    assert browser_keys(ngx) == [], browser_keys(ngx)

    r = ngx.hit('title=us', headers={'X-Forwarded-For': US_IP})
    aid = assert_tracked(r)
    assert r.header('X-Consent') == ALL, r
    e = one_event(ngx)
    assert e['anonymousId'] == aid
    assert e['context'].get('location', {}).get('country') == 'US', e
    assert e['context'].get('consent') == consent(True, True, True,
                                                  'default'), e['context']
    settle(ngx)

    # the only per-person keys are the US browser's (its profile and
    # timeline); the DE hits left counts
    assert browser_keys(ngx) == [h.key(ngx, 'profile', aid)]
    assert agg(ngx, day) == {'page|DE': 1, 'signup|DE': 1}, agg(ngx, day)
    others = [k for k in keys(ngx) if k != ngx.stream_of(aid)
              and k not in h.agg_keys(ngx, day.days)
              and not k.endswith(':' + aid)]
    assert others == [], others
    raw = '\n'.join(ngx.raw_events())
    assert '198.51.100' not in raw, raw
    d = ngx.status().delta(st0)
    assert d.c('cdp_events_aggregated_total') == 2, d
    assert d.cookies('new') == 1, d


# --------------------------------------------------------------------------
# our signed consent cookie

def test_consent_cookie_beats_cmp_and_default(redis_server, nginx_factory):
    ngx = start(nginx_factory, redis_server,
                CMP + '\n    cdp_consent_default none;')
    c = consent_cookie(ngx.keys[0], 1)
    r = ngx.hit('title=cookie', cookie='cdp_consent=' + c,
                headers={'X-CMP': 'none'})
    aid = assert_tracked(r)
    assert r.header('X-Consent') == 'analytics', r
    e = one_event(ngx)
    assert e['context'].get('consent') == consent(True, False, False,
                                                  'cookie'), e['context']
    assert ngx.browser(aid).get('consent') == 'analytics'


def test_consent_cookie_denial_beats_cmp_all(redis_server, nginx_factory):
    ngx = start(nginx_factory, redis_server,
                CMP + '\n    cdp_consent_default all;')
    day = Day()
    c = consent_cookie(ngx.keys[0], 0)
    r = ngx.hit('title=deny', cookie='theme=dark; cdp_consent=' + c,
                headers={'X-CMP': 'all'})
    assert_untracked(r)
    assert r.header('X-Consent') == 'none', r
    assert wait_agg(ngx, day, {'page|--': 1}) == {'page|--': 1}
    settle(ngx)
    assert ngx.xlen() == 0 and browser_keys(ngx) == []


def test_gpc_does_not_override_consent_cookie(redis_server, nginx_factory):
    ngx = start(nginx_factory, redis_server, 'cdp_consent_default all;')
    c = consent_cookie(ngx.keys[0], 3)      # analytics + marketing
    r = ngx.hit('title=cookie-gpc', cookie='cdp_consent=' + c,
                headers={'Sec-GPC': '1'})
    assert_tracked(r)
    assert r.header('X-Consent') == 'analytics,marketing', r
    e = one_event(ngx)
    assert e['context'].get('consent') == consent(True, True, False,
                                                  'cookie'), e['context']


def test_consent_cookie_signed_with_second_key(redis_server, nginx_factory):
    # every line of the secret file verifies; the first one signs
    old = h.new_key()
    ngx = start(nginx_factory, redis_server,
                CMP + '\n    cdp_consent_default none;',
                keys=[h.new_key(), old])
    c = consent_cookie(old, 1)
    r = ngx.hit('title=old-key', cookie='cdp_consent=' + c,
                headers={'X-CMP': 'none'})
    assert_tracked(r)
    assert r.header('X-Consent') == 'analytics', r
    e = one_event(ngx)
    assert e['context'].get('consent', {}).get('source') == 'cookie', e


def _flip(s, i):
    return s[:i] + ('A' if s[i] != 'A' else 'B') + s[i + 1:]


def _tampered(kind, key):
    good = consent_cookie(key, 1)
    body, tag = good.rsplit('.', 1)
    if kind == 'tag-char':
        return body + '.' + _flip(tag, 5)
    if kind == 'tag-last-char':
        return body + '.' + _flip(tag, len(tag) - 1)
    if kind == 'purposes':
        return 'c1.7' + good[4:]
    if kind == 'issued':
        c1, p, v, issued = body.split('.')
        return '.'.join([c1, p, v, str(int(issued) + 1), tag])
    if kind == 'other-secret':
        return consent_cookie(h.new_key(), 1)
    if kind == 'uppercase':
        return 'C' + good[1:]
    if kind == 'short-tag':
        return good[:-1]
    raise ValueError(kind)


TAMPERED = ['tag-char', 'tag-last-char', 'purposes', 'issued',
            'other-secret', 'uppercase', 'short-tag']


@pytest.mark.parametrize('kind', TAMPERED)
def test_tampered_consent_cookie_ignored(redis_server, nginx_factory, kind):
    ngx = start(nginx_factory, redis_server,
                CMP + '\n    cdp_consent_default all;')
    day = Day()
    bad = 'cdp_consent=' + _tampered(kind, ngx.keys[0])

    # the CMP says none: a forged "analytics" does not override it
    r = ngx.hit('title=forged-cmp', cookie=bad, headers={'X-CMP': 'none'})
    assert_untracked(r)
    assert r.header('X-Consent') == 'none', (kind, r)
    assert wait_agg(ngx, day, {'page|--': 1}) == {'page|--': 1}

    # no CMP: the default decides (a forged "analytics only" would have
    # turned marketing and personalization off, with source cookie)
    r = ngx.hit('title=forged-dflt', cookie=bad)
    assert_tracked(r)
    assert r.header('X-Consent') == ALL, (kind, r)
    e = one_event(ngx)
    assert e['context'].get('consent') == consent(True, True, True,
                                                  'default'), e['context']

    # control: the untampered cookie on the same instance is honoured
    good = 'cdp_consent=' + consent_cookie(ngx.keys[0], 1)
    r = ngx.hit('title=genuine', cookie=good, headers={'X-CMP': 'none'})
    assert_tracked(r)
    assert r.header('X-Consent') == 'analytics', r
    e = one_event(ngx, 2)
    assert e['context'].get('consent') == consent(True, False, False,
                                                  'cookie'), e['context']
    settle(ngx)
    assert agg(ngx, day) == {'page|--': 1}, agg(ngx, day)


# --------------------------------------------------------------------------
# an existing anonymous id without consent

def test_existing_aid_cookie_not_used_without_consent(redis_server,
                                                      nginx_factory):
    # two instances with the same key and prefix: one tracks and mints the
    # cookie, the other has no consent configured
    a = start(nginx_factory, redis_server, 'cdp_consent_default all;')
    r = a.hit('title=minted')
    aid = assert_tracked(r)
    value = h.cookie_of(r)[0]
    assert a.wait_xlen(1) == 1
    settle(a)
    rec = a.browser(aid)
    assert rec.get('events') == '1', rec

    b = start(nginx_factory, redis_server, '', prefix=a.prefix,
              keys=a.keys)
    day = Day()
    st0 = b.status()
    r = b.hit('title=nocons', cookie='cdp_aid=' + value)
    assert_untracked(r)
    assert r.header('X-Consent') == 'none', r
    assert wait_agg(b, day, {'page|--': 1}) == {'page|--': 1}
    settle(b)
    d = b.status().delta(st0)
    assert d.cookies('kept') == 0, d
    assert d.cookies('new') == 0, d
    assert d.c('cdp_events_aggregated_total') == 1, d

    assert b.xlen() == 1, b.raw_events()            # a's event only
    assert b.browser(aid) == rec, (b.browser(aid), rec)
    assert browser_keys(b) == [h.key(b, 'profile', aid)]

    logged = h.wait_until(lambda: access_aids(b, 'title=nocons'), 3)
    assert logged in (['-'], ['']), \
        'access log aid=%r without consent (cookie id %s)' % (logged, aid)
    assert aid not in b.read(b.access_log)

    # and the same cookie on the tracking instance is still kept
    st0 = a.status()
    r = a.hit('title=again', cookie='cdp_aid=' + value)
    assert h.aid_of(r) == aid, r.set_cookies()
    assert a.status().delta(st0).cookies('kept') == 1


# --------------------------------------------------------------------------
# $cdp_consent and the browser record

def test_consent_variable_outside_pixel(redis_server, nginx_factory):
    ngx = start(nginx_factory, redis_server,
                CMP + '\n    cdp_consent_default all;')
    for hdrs, want in (({}, ALL),
                       ({'Sec-GPC': '1'}, 'analytics,personalization'),
                       ({'X-CMP': 'personalization,analytics'},
                        'analytics,personalization'),
                       ({'X-CMP': 'none'}, 'none')):
        r = h.one_request(ngx.port, 'GET', '/consent', headers=hdrs)
        assert r.status == 200, r
        assert r.body.decode() == '[%s]' % want, (hdrs, r.body)


def test_browser_record_follows_current_consent(redis_server, nginx_factory):
    ngx = start(nginx_factory, redis_server,
                CMP + '\n    cdp_consent_default all;')
    r = ngx.hit('title=c1')
    aid = assert_tracked(r)
    cookie = 'cdp_aid=' + h.cookie_of(r)[0]
    assert ngx.wait_xlen(1) == 1
    assert ngx.browser(aid).get('consent') == ALL

    ngx.hit('title=c2', cookie=cookie, headers={'Sec-GPC': '1'})
    assert ngx.wait_xlen(2) == 2
    b = ngx.browser(aid)
    assert b.get('consent') == 'analytics,personalization', b
    assert b.get('events') == '2', b

    ngx.hit('title=c3', cookie=cookie, headers={'X-CMP': 'analytics'})
    assert ngx.wait_xlen(3) == 3
    b = ngx.browser(aid)
    assert b.get('consent') == 'analytics', b

    # withdrawn through the CMP: the record is left as it was
    day = Day()
    r = ngx.hit('title=c4', cookie=cookie, headers={'X-CMP': 'none'})
    assert_untracked(r)
    assert wait_agg(ngx, day, {'page|--': 1}) == {'page|--': 1}
    settle(ngx)
    assert ngx.xlen() == 3
    assert ngx.browser(aid) == b, ngx.browser(aid)
