"""What reaches Redis: the Segment-spec event JSON in the shards' streams
<prefix>:events:{<tag>} and the per-browser record (docs/api.md: The
event; store/cdp.lua)."""

import datetime
import socket
import time
import urllib.parse

import pytest

import cdp_harness as h
from cdp_harness import ISO_MS_RE


UA = 'Mozilla/5.0 (X11; Linux x86_64) cdp-integration-test/1.0'
PAGE_URL = ('https://shop.example/pricing?utm_source=news&utm_medium=email'
            '&utm_campaign=spring&utm_term=shoes&utm_content=banner&x=1')
SEARCH = PAGE_URL[PAGE_URL.index('?'):]
REF = 'https://news.example/item?id=1'
TITLE = 'Prix \u2014 \u00e9t\u00e9 "q" \\ <b>'
REFERER_PAGE = 'https://shop.example/docs/start?utm_source=ref'


def q(**kw):
    return urllib.parse.urlencode(kw, quote_via=urllib.parse.quote)


def parse_iso(s):
    return datetime.datetime.strptime(s, '%Y-%m-%dT%H:%M:%S.%fZ').replace(
        tzinfo=datetime.timezone.utc)


def assert_recent_iso(s):
    assert ISO_MS_RE.match(s or ''), 'timestamp %r' % s
    dt = parse_iso(s)
    now = datetime.datetime.now(datetime.timezone.utc)
    assert abs((now - dt).total_seconds()) < 60, (s, now)


def assert_recent_ms(v):
    assert v and v.isdigit() and len(v) == 13, 'not ms: %r' % v
    assert abs(int(v) / 1000 - time.time()) < 60, v


def test_event_fields(cdp):
    t0 = time.time()
    # 1: a page view with url, ref, title, a property
    r = cdp.hit(q(url=PAGE_URL, ref=REF, title=TITLE, **{'p.plan': 'pro'}),
                headers={'User-Agent': UA,
                         'Referer': 'https://ignored.example/'})
    assert r.status == 200
    v, _ = h.cookie_of(r)
    aid = h.aid_of(r)
    assert aid, r.set_cookies()
    cookie = 'cdp_aid=' + v
    # 2: a page view without url: the page is the Referer
    cdp.hit(q(title='Docs'), cookie=cookie,
            headers={'User-Agent': UA, 'Referer': REFERER_PAGE})
    # 3: a track event
    cdp.hit('e=signup&p.plan=pro&p.cycle=yearly', cookie=cookie,
            headers={'User-Agent': UA, 'Referer': PAGE_URL})

    assert cdp.wait_xlen(3) == 3, 'events in stream: %d' % cdp.xlen()
    raw = cdp.raw_events()
    evs = cdp.events()
    # the stream's order is not the order of the hits (two workers batch
    # independently): tell the events apart by content
    by = {}
    for e in evs:
        key = e.get('type'), e.get('context', {}).get('page', {}).get('url')
        by[key] = e
    assert set(by) == {('page', PAGE_URL), ('page', REFERER_PAGE),
                       ('track', PAGE_URL)}, (
        'events (type, page url): %r' % sorted(map(str, by)))
    page, page2, track = (by['page', PAGE_URL], by['page', REFERER_PAGE],
                          by['track', PAGE_URL])

    for e in evs:
        assert e['anonymousId'] == aid, e
        assert isinstance(e.get('messageId'), str) and e['messageId'], e
        assert_recent_iso(e.get('timestamp'))
        assert_recent_iso(e.get('receivedAt'))
        ctx = e['context']
        assert ctx['userAgent'] == UA, ctx
        assert ctx['ip'] == '127.0.0.0', ctx
        assert ctx['library']['name'] == 'ngx_cdp', ctx
    assert len({e['messageId'] for e in evs}) == 3, 'messageId not unique'
    for s in raw:
        assert '127.0.0.1' not in s, 'untruncated IP in the event: %s' % s

    # page view
    assert page['type'] == 'page', page
    assert page['name'] == TITLE, page
    cp = page['context']['page']
    assert cp['url'] == PAGE_URL, cp
    assert cp['path'] == '/pricing', cp
    assert cp['search'] == SEARCH, cp
    assert cp['referrer'] == REF, cp
    assert cp['title'] == TITLE, cp
    assert page['context']['campaign'] == {
        'source': 'news', 'medium': 'email', 'name': 'spring',
        'term': 'shoes', 'content': 'banner'}, page['context']
    pp = page['properties']
    assert pp['url'] == PAGE_URL and pp['path'] == '/pricing', pp
    assert pp['search'] == SEARCH and pp['referrer'] == REF, pp
    assert pp['title'] == TITLE and pp['plan'] == 'pro', pp

    # page view from the Referer header
    assert page2['type'] == 'page', page2
    cp = page2['context']['page']
    assert cp['url'] == REFERER_PAGE, cp
    assert cp['path'] == '/docs/start', cp
    assert cp['title'] == 'Docs', cp
    assert page2['context']['campaign'].get('source') == 'ref', page2

    # track
    assert track['type'] == 'track', track
    assert track['event'] == 'signup', track
    assert track['properties'] == {'plan': 'pro', 'cycle': 'yearly'}, track

    # the browser's record
    b = cdp.browser(aid)
    assert b.get('events') == '3', b
    assert b.get('page_views') == '2', b
    assert_recent_ms(b.get('first_seen'))
    assert_recent_ms(b.get('last_seen'))
    assert int(b['first_seen']) <= int(b['last_seen']), b
    assert int(b['first_seen']) >= int(t0 * 1000) - 1000, (b, t0)


def test_event_timestamps_follow_the_hits(cdp):
    v = None
    for i in range(2):
        r = cdp.hit('title=t%d' % i, cookie=v and 'cdp_aid=' + v)
        v = v or h.cookie_of(r)[0]
        time.sleep(0.05)
    assert cdp.wait_xlen(2) == 2
    # by title: two workers' batches need not reach the stream in order
    a, b = sorted(cdp.events(), key=lambda e: e['properties']['title'])
    assert (a['properties']['title'], b['properties']['title']) \
        == ('t0', 't1'), (a, b)
    assert parse_iso(a['timestamp']) < parse_iso(b['timestamp']), (a, b)
    br = cdp.browser(a['anonymousId'])
    assert int(br['first_seen']) < int(br['last_seen']), br


def test_repeated_field_keeps_first_and_plus_is_space(cdp):
    cdp.hit('title=first+one&title=second&cb=1&utm_source=ignored')
    assert cdp.wait_xlen(1) == 1
    (e,) = cdp.events()
    assert e['context']['page']['title'] == 'first one', e


@pytest.mark.standalone        # a database other than 0
def test_prefix_and_db(redis_server, nginx_factory):
    ngx = nginx_factory(redis_server, prefix='shop', redis_params='db=3')
    ngx.db = 3
    ngx.hit('title=db3')
    assert ngx.wait_xlen(1) == 1, 'nothing in db 3 under shop:events'
    c = redis_server.client(0)
    try:
        assert c.dbsize() == 0, 'keys written to db 0: %r' % c.keys('*')
    finally:
        c.close()


def test_unix_socket(redis_factory, nginx_factory):
    rs = redis_factory(unixsocket=True)
    ngx = nginx_factory(rs, redis_line='cdp_redis unix:%s prefix=u;'
                        % rs.socket_path, prefix='u')
    ngx.hit('title=unix')
    assert ngx.wait_xlen(1) == 1, 'nothing stored over the unix socket'


def test_password(redis_factory, nginx_factory):
    rs = redis_factory(password='s3cret-pw')
    ngx = nginx_factory(rs, redis_params='password=s3cret-pw')
    ngx.hit('title=auth')
    assert ngx.wait_xlen(1) == 1, 'nothing stored with AUTH'


def test_wrong_password_stores_nothing_and_survives(redis_factory,
                                                    nginx_factory):
    rs = redis_factory(password='s3cret-pw')
    ngx = nginx_factory(rs, redis_params='password=wrong', wait_redis=False)
    st0 = ngx.status()
    for i in range(5):
        r = ngx.hit('title=x%d' % i)
        assert h.is_gif(r), r
    st = h.wait_until(lambda: (lambda s: s.delta(st0).dropped() >= 5 and s)(
        ngx.status()), 5)
    assert st, 'hits not counted as dropped: %r' % ngx.status().delta(st0)
    assert ngx.xlen() == 0
    assert ngx.alive()


def test_stream_maxlen(redis_server, nginx_factory):
    """cdp_stream_maxlen caps each shard's stream: two browsers of two
    shards, 500 hits each, interleaved (a batch carries both shards)."""
    ngx = nginx_factory(redis_server, http_extra='cdp_stream_maxlen 100;')
    c = ngx.client()
    try:
        cookies = {}
        while len(cookies) < 2:
            r = ngx.hit('title=mint', client=c)
            v, _ = h.cookie_of(r)
            aid = h.aid_of(r)
            assert v and aid, r.set_cookies()
            cookies.setdefault(ngx.stream_of(aid), v)
        for i in range(500):
            for v in cookies.values():
                assert ngx.hit('title=m%d' % i, cookie='cdp_aid=' + v,
                               client=c).status == 200
    finally:
        c.close()
    st = h.wait_until(lambda: (lambda s: s.stored >= 1002 and s)(
        ngx.status()), 15)
    assert st, 'stored %r' % ngx.status()
    rc = ngx.rc()
    try:
        for k in cookies:
            n = rc.xlen(k)
            added = rc.xinfo_stream(k)['entries-added']
            assert added >= 500, (k, added)
            # MAXLEN ~ trims whole stream nodes (100 entries by default)
            assert 100 <= n <= 300, 'XLEN %s %d with cdp_stream_maxlen 100' \
                % (k, n)
    finally:
        rc.close()


def _has_ipv6():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(('::1', 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6(), reason='no IPv6 loopback')
def test_ipv6_truncated(redis_server, nginx_factory):
    port6 = h.free_port()
    ngx = nginx_factory(redis_server, server_extra='listen [::1]:%d;' % port6)
    r = h.one_request(port6, 'GET', '/p.gif?title=v6', host='::1')
    assert h.is_gif(r), r
    assert ngx.wait_xlen(1) == 1
    (e,) = ngx.events()
    assert e['context']['ip'] == '::', e['context']
    assert '::1' not in ngx.raw_events()[0]
