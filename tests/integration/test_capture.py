"""Edge capture, the gate before it, click-through redirects (issue 17;
docs/directives.md: cdp_capture, cdp_bot, cdp_redirect,
cdp_redirect_hosts).

A real origin (h.Upstream, a threaded http.server on loopback) serves
HTML, CSS, JSON, a 404, a 301 and a login page that names its user in
X-CDP-* headers; nginx proxies to it with `cdp_capture on` at the server
level, so the pages themselves are the page views, with no pixel.  Also:
Debian's headless Chromium with JavaScript off, the bot / prefetch / mail
proxy gate and its counters, "Email Opened" of a mail service's image
proxy fetching a signed pixel, and /r?to= redirects (allowed hosts,
signed targets, what is refused).
"""

import os
import shutil
import socket
import subprocess
import time
import urllib.parse

import pytest

import cdp_harness as h


CHROMIUM = os.environ.get('CHROMIUM', '/usr/lib/chromium/chromium')
SIGN_URL = os.path.join(h.MAIN, 'scripts', 'cdp-sign-url')

HOST = 'shop.example'

UA_CURL = 'curl/8.0'
UA_GOOGLEBOT = ('Mozilla/5.0 (compatible; Googlebot/2.1; '
                '+http://www.google.com/bot.html)')
UA_HEADLESS = ('Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 '
               '(KHTML, like Gecko) HeadlessChrome/120.0.0.0 Safari/537.36')
# what Gmail's image proxy sends
UA_GMAIL = ('Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 '
            '(via ggpht.com GoogleImageProxy)')
UA_YAHOO = 'YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html'
# a monitor the built-in list does not know: only the site's map names it
UA_OURMONITOR = 'OurMonitor/2.0 (+https://status.shop.example/about)'


# --------------------------------------------------------------------------
# the origin

def page(title, body=''):
    """An HTML page linking the three pages, with a script that would mark
    the page if JavaScript ran."""
    return ("""<!doctype html>
<html><head><meta charset="utf-8"><title>%s</title>
<link rel="stylesheet" href="/style.css"></head>
<body><p id="js">static</p>
<nav><a href="/page1.html">one</a> <a href="/page2.html">two</a>
<a href="/page3.html">three</a></nav>%s
<script>document.getElementById('js').textContent = 'JS-RAN';</script>
</body></html>
""" % (title, body)).encode()


HTML = 'text/html; charset=utf-8'

LOGIN_UID = 'u-capture-1'
LOGIN_EMAIL = 'Cap.Reader@Shop.example'


def site(method, target, headers):
    path = urllib.parse.urlsplit(target).path
    # the locations /mapped/, /nofilter/, /nc/ proxy to the same pages
    for pre in ('/mapped', '/nofilter', '/nc'):
        if path.startswith(pre + '/'):
            path = path[len(pre):]
    if path.endswith('.css'):
        return 200, {'Content-Type': 'text/css'}, b'body { color: #333 }\n'
    if path.endswith('.json'):
        return 200, {'Content-Type': 'application/json'}, b'{"ok":true}\n'
    if path == '/missing.html':
        return 404, {'Content-Type': HTML}, page('Not found')
    if path == '/moved.html':
        return (301, {'Content-Type': HTML, 'Location': '/page1.html'},
                page('Moved'))
    if path == '/login.html':
        return (200, {'Content-Type': HTML, 'X-CDP-User-Id': LOGIN_UID,
                      'X-CDP-Email': LOGIN_EMAIL}, page('Welcome back'))
    if path == '/pixel.html':
        return (200, {'Content-Type': HTML},
                page('With pixel', '<img src="/p.gif" alt="">'))
    if path == '/doc.xhtml':
        return (200, {'Content-Type': 'application/xhtml+xml'},
                b'<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/'
                b'xhtml"><head><title>x</title></head><body/></html>')
    if path == '/' or path.endswith('.html'):
        return 200, {'Content-Type': HTML}, page('Page ' + path)
    return 404, {'Content-Type': 'text/plain'}, b'no such thing\n'


@pytest.fixture
def upstream():
    u = h.Upstream(site).start()
    yield u
    u.stop()


SITE_HTTP = """cdp_redirect_hosts wa.me shop.example *.partner.example;
    map $http_user_agent $site_bot {
        default        "";
        ~*ourmonitor   1;
        ~*curl         0;
    }"""

SITE_LOCATIONS = """\
location = /status     { cdp_status; }
        location = /p.gif      { cdp_pixel; }
        location = /nocap.gif  { cdp_pixel; cdp_capture off; }
        location = /r          { cdp_redirect; }
        location = /r-nc       { cdp_redirect; cdp_consent_default none; }
        location = /login.html { cdp_identify on;
                                 proxy_pass http://127.0.0.1:@UPORT@; }
        location /nc/          { cdp_consent_default none;
                                 proxy_pass http://127.0.0.1:@UPORT@; }
        location /mapped/      { cdp_bot $site_bot;
                                 proxy_pass http://127.0.0.1:@UPORT@; }
        location /nofilter/    { cdp_bot off;
                                 proxy_pass http://127.0.0.1:@UPORT@; }
        location /             { proxy_pass http://127.0.0.1:@UPORT@; }"""


def start_site(nginx_factory, redis, upstream, **kw):
    """cdp_capture on for the whole server: the pixel's location too."""
    return nginx_factory(
        redis, http_extra=SITE_HTTP, server_extra='cdp_capture on;',
        locations=SITE_LOCATIONS.replace('@UPORT@', str(upstream.port)),
        **kw)


@pytest.fixture
def ngx(nginx_factory, redis_server, upstream):
    return start_site(nginx_factory, redis_server, upstream)


# --------------------------------------------------------------------------
# helpers

def get(ngx, target, ua=None, headers=None, cookie=None, method='GET',
        body=None, host=HOST):
    hd = {'Host': host}
    if ua is not None:
        hd['User-Agent'] = ua
    if cookie:
        hd['Cookie'] = 'cdp_aid=' + cookie
    hd.update(headers or {})
    return h.one_request(ngx.port, method, target, headers=hd, body=body)


def raw_get_without_ua(port, target, host=HOST):
    """A GET with no User-Agent header at all (the harness's client always
    sends one); returns (status, [Set-Cookie values], body)."""
    with socket.create_connection(('127.0.0.1', port), timeout=5) as s:
        s.sendall(('GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n'
                   % (target, host)).encode())
        data = b''
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b'\r\n\r\n')
    lines = head.decode('latin-1').split('\r\n')
    status = int(lines[0].split()[1])
    cookies = [l.split(':', 1)[1].strip() for l in lines[1:]
               if l.lower().startswith('set-cookie:')]
    return status, cookies, body


def cookie_value(r):
    """The valid cdp_aid value of the response's one Set-Cookie."""
    scs = [c for c in r.set_cookies() if h.parse_set_cookie(c)[0] == 'cdp_aid']
    assert len(scs) == 1, 'want one Set-Cookie cdp_aid: %r' % (
        r.set_cookies(),)
    v = h.parse_set_cookie(scs[0])[1]
    assert h.COOKIE_VALUE_RE.match(v), v
    return v


def settle(ngx):
    st = ngx.wait_settled()
    assert st.queue == 0, st
    return st


def utc_days():
    return {time.strftime('%Y-%m-%d', time.gmtime())}


def agg(ngx, days):
    """{field: int} of the day's aggregate hash (both days across
    midnight)."""
    return h.agg(ngx, days | utc_days())


def wait_agg(ngx, days, want, timeout=10.0):
    last = [{}]

    def f():
        last[0] = agg(ngx, days)
        return all(last[0].get(k, 0) >= v for k, v in want.items())
    h.wait_until(f, timeout, 0.02)
    return last[0]


def keys(ngx, pattern='*'):
    """Keys under the prefix, without the store's batch ids (once:*)."""
    c = ngx.rc()
    try:
        return sorted(k for k in c.scan_iter(match='%s:%s' % (ngx.prefix,
                                                              pattern))
                      if not k.startswith(ngx.prefix + ':once:'))
    finally:
        c.close()


def profile_keys(ngx):
    return keys(ngx, 'profile:*')


def anon_profile_keys(ngx):
    """profile:{<tag>}:<32 hex digits>: browsers (anonymous ids), not
    persons."""
    out = []
    for k in profile_keys(ngx):
        kind, x = h.parse_key(ngx, k)
        if len(x) == 32 and all(ch in '0123456789abcdef' for ch in x):
            out.append(k)
    return out


def timeline_and_first(ngx, pid):
    """(stream, id) of the events on the profile's timeline (its oldest
    event may be kept in the field first_event), in its shard's stream."""
    return sorted(h.profile_events(ngx, pid))


def stream_ids(ngx):
    """(stream, id) of every shard's events, oldest first."""
    return [(k, i) for k, i, _f in ngx.entries()]


def sign_url(secret_file, base, **fields):
    p = subprocess.run(['/bin/sh', SIGN_URL, secret_file, base]
                       + ['%s=%s' % kv for kv in fields.items()],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=30)
    assert p.returncode == 0, p.stderr.decode()
    out = p.stdout.decode()
    assert out.endswith('\n') and out.count('\n') == 1, out
    return out[:-1]


def page_events(ngx):
    return [e for e in ngx.events() if e['type'] == 'page']


# --------------------------------------------------------------------------
# 1. a proxied HTML page, no pixel

def test_proxied_html_page_is_one_page_view(ngx, upstream):
    st0 = ngx.status()
    r = get(ngx, '/page1.html?utm_source=news&utm_campaign=spring&x=1',
            headers={'Referer': 'https://www.google.com/search?q=shoes'})
    assert r.status == 200, r
    assert r.header('Content-Type') == HTML, r
    assert b'<title>Page /page1.html</title>' in r.body
    v = cookie_value(r)
    attrs = h.cookie_of(r)[1]
    assert attrs.get('max-age') == str(h.MAX_AGE_400D), attrs
    assert attrs.get('httponly') is True and attrs.get('path') == '/', attrs
    aid = v.split('.')[0]
    # the origin saw the request (and the page came from it)
    assert upstream.paths('GET') == [
        '/page1.html?utm_source=news&utm_campaign=spring&x=1']

    st = settle(ngx)
    ev = ngx.events()
    assert len(ev) == 1, ev
    e = ev[0]
    assert e['type'] == 'page' and e['anonymousId'] == aid, e
    url = 'http://shop.example/page1.html?utm_source=news&utm_campaign=spring&x=1'
    assert e['context']['page']['url'] == url, e
    assert e['context']['page']['path'] == '/page1.html', e
    assert e['context']['page']['referrer'] == \
        'https://www.google.com/search?q=shoes', e
    assert e['context']['page']['title'] == '', e
    assert e['properties']['url'] == url, e
    assert e['context']['campaign'] == {'source': 'news',
                                        'name': 'spring'}, e
    assert e['context']['userAgent'] == h.BROWSER_UA, e
    d = st.delta(st0)
    assert d.c('cdp_captured_total') == 1, d
    assert d.cookies('new') == 1, d
    b = ngx.browser(aid)
    assert b.get('events') == '1' and b.get('page_views') == '1', b

    # the browser comes back with its cookie: same id, second view
    r = get(ngx, '/page2.html', cookie=v,
            headers={'Referer': 'http://shop.example/page1.html'})
    assert r.status == 200 and cookie_value(r).split('.')[0] == aid, r
    settle(ngx)
    ev = ngx.events()
    assert len(ev) == 2 and ev[1]['anonymousId'] == aid, ev
    assert ev[1]['context']['page']['url'] == 'http://shop.example/page2.html'
    assert ev[1]['context']['page']['referrer'] == \
        'http://shop.example/page1.html'
    assert ngx.browser(aid).get('page_views') == '2'
    assert ngx.status().delta(st0).c('cdp_captured_total') == 2


def test_captured_url_keeps_the_host_header_port(ngx):
    """url is scheme://Host + URI: a Host with a port keeps it (a site on
    :8080 is another origin than on :80)."""
    r = get(ngx, '/page1.html?a=1', host='shop.example:8080')
    assert r.status == 200, r
    aid = cookie_value(r).split('.')[0]
    assert ngx.wait_xlen(1) == 1
    e = ngx.events()[0]
    assert e['anonymousId'] == aid
    assert e['context']['page']['url'] == \
        'http://shop.example:8080/page1.html?a=1', e['context']['page']


# --------------------------------------------------------------------------
# 2. what is not a page view

def test_not_pages_not_recorded(ngx, upstream):
    st0 = ngx.status()
    days = utc_days()

    # not HTML, not 200, not GET
    r = get(ngx, '/style.css')
    assert r.status == 200 and r.header('Content-Type') == 'text/css', r
    assert r.set_cookies() == [], r.set_cookies()
    r = get(ngx, '/api/cart.json')
    assert r.status == 200, r
    assert r.header('Content-Type') == 'application/json', r
    assert r.set_cookies() == [], r.set_cookies()
    r = get(ngx, '/missing.html')
    assert r.status == 404 and b'Not found' in r.body, r
    assert r.set_cookies() == [], r.set_cookies()
    r = get(ngx, '/moved.html')
    assert r.status == 301 and r.header('Location', '').endswith(
        '/page1.html'), r
    assert r.set_cookies() == [], r.set_cookies()
    r = get(ngx, '/page1.html', method='POST', body=b'q=1',
            headers={'Content-Type': 'application/x-www-form-urlencoded'})
    assert r.status == 200 and b'Page /page1.html' in r.body, r
    assert r.set_cookies() == [], r.set_cookies()
    r = get(ngx, '/page1.html', method='HEAD')
    assert r.status == 200 and r.header('Content-Type') == HTML, r
    assert r.set_cookies() == [], r.set_cookies()
    assert sorted(upstream.paths('POST') + upstream.paths('HEAD')) == [
        '/page1.html', '/page1.html']

    # prefetches: the page, no cookie
    for hd in ({'Sec-Purpose': 'prefetch'}, {'Purpose': 'prefetch'},
               {'X-Moz': 'prefetch'}):
        r = get(ngx, '/page2.html', headers=hd)
        assert r.status == 200 and b'Page /page2.html' in r.body, (hd, r)
        assert r.set_cookies() == [], (hd, r.set_cookies())

    # bots: the page, no cookie
    for ua in (UA_CURL, UA_GOOGLEBOT, UA_HEADLESS, ''):
        r = get(ngx, '/page3.html', ua=ua)
        assert r.status == 200 and b'Page /page3.html' in r.body, (ua, r)
        assert r.set_cookies() == [], (ua, r.set_cookies())
    status, cookies, body = raw_get_without_ua(ngx.port, '/page3.html')
    assert status == 200 and b'Page /page3.html' in body, status
    assert cookies == [], cookies

    a = wait_agg(ngx, days, {'filtered:bot|--': 5,
                             'filtered:prefetch|--': 3})
    assert a == {'filtered:bot|--': 5, 'filtered:prefetch|--': 3}, a
    st = settle(ngx)
    d = st.delta(st0)
    assert d.c('cdp_filtered_total{reason="bot"}') == 5, d
    assert d.c('cdp_filtered_total{reason="prefetch"}') == 3, d
    assert d.c('cdp_filtered_total{reason="mail_proxy"}') == 0, d
    assert d.c('cdp_captured_total') == 0, d
    assert d.cookies('new') == 0, d
    assert ngx.xlen() == 0, ngx.raw_events()
    assert profile_keys(ngx) == [], profile_keys(ngx)

    # the same location captures a page (and an XHTML one) from a browser
    r1 = get(ngx, '/page1.html')
    r2 = get(ngx, '/doc.xhtml')
    aids = {cookie_value(r1).split('.')[0], cookie_value(r2).split('.')[0]}
    st = settle(ngx)
    assert st.delta(st0).c('cdp_captured_total') == 2
    ev = ngx.events()
    assert sorted(e['context']['page']['path'] for e in ev) == [
        '/doc.xhtml', '/page1.html'], ev
    assert {e['anonymousId'] for e in ev} == aids


def test_without_consent_a_captured_page_is_only_counted(ngx):
    days = utc_days()
    st0 = ngx.status()
    r = get(ngx, '/nc/page1.html')
    assert r.status == 200 and b'Page /page1.html' in r.body, r
    assert r.set_cookies() == [], r.set_cookies()
    a = wait_agg(ngx, days, {'page|--': 1})
    assert a == {'page|--': 1}, a
    st = settle(ngx)
    d = st.delta(st0)
    assert d.c('cdp_events_aggregated_total') == 1, d
    assert d.c('cdp_captured_total') == 0, d
    assert ngx.xlen() == 0, ngx.raw_events()
    assert profile_keys(ngx) == []


def test_pixel_behind_the_same_gate(ngx):
    """The pixel asks first too: bots and prefetches get the GIF, no
    cookie, nothing stored, not even an e= event."""
    days = utc_days()
    st0 = ngx.status()
    for ua, hd in ((UA_CURL, {}), (UA_HEADLESS, {}),
                   (None, {'Sec-Purpose': 'prefetch;prerender'})):
        for q in ('', '?e=Signup'):
            r = get(ngx, '/nocap.gif' + q, ua=ua, headers=hd)
            assert h.is_gif(r), r
            assert r.set_cookies() == [], (ua, hd, r.set_cookies())
    a = wait_agg(ngx, days, {'filtered:bot|--': 4,
                             'filtered:prefetch|--': 2})
    assert a == {'filtered:bot|--': 4, 'filtered:prefetch|--': 2}, a
    st = settle(ngx)
    d = st.delta(st0)
    assert d.c('cdp_filtered_total{reason="bot"}') == 4, d
    assert d.c('cdp_filtered_total{reason="prefetch"}') == 2, d
    assert ngx.xlen() == 0, ngx.raw_events()
    assert profile_keys(ngx) == []


# --------------------------------------------------------------------------
# 3. a captured login page

def test_captured_login_page_is_view_then_identify(ngx):
    st0 = ngx.status()
    r = get(ngx, '/login.html')
    assert r.status == 200 and b'Welcome back' in r.body, r
    for name in r.msg.keys():
        assert not name.lower().startswith('x-cdp-'), r
    aid = cookie_value(r).split('.')[0]
    st = settle(ngx)

    ev = ngx.events()
    assert [e['type'] for e in ev] == ['page', 'identify'], ev
    assert {e['anonymousId'] for e in ev} == {aid}, ev
    assert ev[0]['context']['page']['url'] == 'http://shop.example/login.html'
    assert ev[1]['userId'] == LOGIN_UID, ev[1]
    d = st.delta(st0)
    assert d.c('cdp_captured_total') == 1, d
    assert d.c('cdp_identify_total{result="accepted"}') == 1, d
    assert d.cookies('new') == 1, d

    pid = h.idx(ngx, 'user_id', LOGIN_UID)
    assert pid and pid.startswith('p'), pid
    assert h.idx(ngx, 'email', LOGIN_EMAIL.lower()) == pid
    assert h.resolve(ngx, aid) == pid
    p = h.profile(ngx, pid)
    assert p['user_id'] == LOGIN_UID, p
    assert p['page_views'] == '1', p
    assert 'anonymous_id:' + aid in h.members(ngx, pid)

    # the next page of that browser counts on the person
    r = get(ngx, '/page2.html', cookie=cookie_value(r))
    assert r.status == 200, r
    settle(ngx)
    assert h.profile(ngx, pid)['page_views'] == '2'
    h.check_graph(ngx)


# --------------------------------------------------------------------------
# 4. a real browser, JavaScript off

def chromium(url, profile, ua=None):
    args = [CHROMIUM, '--headless=new', '--no-sandbox', '--disable-gpu',
            '--disable-quic', '--no-first-run',
            '--disable-background-networking', '--disable-component-update',
            '--disable-sync', '--user-data-dir=' + profile]
    if ua:
        args.append('--user-agent=' + ua)
    p = subprocess.run(args + ['--dump-dom', url], stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL, timeout=60)
    assert p.returncode == 0, 'chromium exited %d' % p.returncode
    return p.stdout.decode('utf-8', 'replace')


def js_off_profile(path):
    """A Chromium profile whose content settings block JavaScript (what a
    user who turned it off has; --blink-settings does not reach the
    renderer of the new headless mode)."""
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(os.path.join(path, 'Default'))
    with open(os.path.join(path, 'Default', 'Preferences'), 'w') as f:
        f.write('{"profile":{"default_content_setting_values":'
                '{"javascript":2}}}')
    return path


def test_chromium_without_javascript(ngx, workdir):
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail('%s missing: apt-get install chromium (make deps)'
                    % CHROMIUM, pytrace=False)
    st0 = ngx.status()
    prof = js_off_profile(os.path.join(workdir, 'chromium-capture-%d'
                                       % ngx.port))
    base = 'http://127.0.0.1:%d' % ngx.port
    urls = [base + '/page1.html?utm_source=mail', base + '/page2.html',
            base + '/page3.html']
    for n, url in enumerate(urls, 1):
        dom = chromium(url, prof, ua=h.BROWSER_UA)
        assert 'Page /page%d.html' % n in dom, dom[:500]
        # JavaScript did not run
        assert 'id="js">static<' in dom and 'JS-RAN</p>' not in dom, dom
        assert ngx.wait_xlen(n) >= n, ngx.xlen()
    st = settle(ngx)

    ev = ngx.events()
    assert [e['type'] for e in ev] == ['page'] * 3, ev
    assert [e['context']['page']['path'] for e in ev] == [
        '/page1.html', '/page2.html', '/page3.html'], ev
    aid = ev[0]['anonymousId']
    assert len(aid) == 32 and {e['anonymousId'] for e in ev} == {aid}, ev
    assert all(e['context']['userAgent'] == h.BROWSER_UA for e in ev), ev
    assert ev[0]['context']['campaign'] == {'source': 'mail'}, ev[0]
    b = ngx.browser(aid)
    assert b.get('events') == '3' and b.get('page_views') == '3', b
    d = st.delta(st0)
    assert d.c('cdp_captured_total') == 3, d
    assert d.cookies('new') == 1 and d.cookies('kept') == 2, d
    assert d.c('cdp_filtered_total{reason="bot"}') == 0, d

    # headless Chromium as it is (HeadlessChrome in its User-Agent): a bot
    st1 = ngx.status()
    days = utc_days()
    prof2 = js_off_profile(prof + '-headless')
    dom = chromium(base + '/page1.html?headless=1', prof2)
    assert 'Page /page1.html' in dom, dom[:500]
    a = wait_agg(ngx, days, {'filtered:bot|--': 1})
    assert a.get('filtered:bot|--') == 1, a
    st = settle(ngx)
    d = st.delta(st1)
    assert d.c('cdp_filtered_total{reason="bot"}') == 1, d
    assert d.c('cdp_captured_total') == 0, d
    assert d.cookies('new') == 0, d
    assert ngx.xlen() == 3, ngx.events()[3:]
    assert anon_profile_keys(ngx) == [h.key(ngx, 'profile', aid)]

    # the URLs the browser asked for: with the Host header's port
    assert [e['context']['page']['url'] for e in ev] == urls, [
        e['context']['page']['url'] for e in ev]


# --------------------------------------------------------------------------
# 5. cdp_bot: the site's own list

def test_cdp_bot_map_extends_and_overrides(ngx):
    st0 = ngx.status()
    days = utc_days()

    def hit(path, ua, **kw):
        r = get(ngx, path, ua=ua, **kw)
        assert r.status == 200 and b'Page /page1.html' in r.body, (path, r)
        return r

    # the built-in list alone (location /): OurMonitor is not known, curl
    # is a bot
    assert cookie_value(hit('/page1.html', UA_OURMONITOR))
    assert hit('/page1.html', UA_CURL).set_cookies() == []
    # with the map: OurMonitor is a bot, curl is not, Googlebot is still
    # the list's bot ("" leaves it to the list)
    assert hit('/mapped/page1.html', UA_OURMONITOR).set_cookies() == []
    assert cookie_value(hit('/mapped/page1.html', UA_CURL))
    assert hit('/mapped/page1.html', UA_GOOGLEBOT).set_cookies() == []
    assert cookie_value(hit('/mapped/page1.html', h.BROWSER_UA))
    # cdp_bot off: no bot filtering, prefetches are still no visits
    assert cookie_value(hit('/nofilter/page1.html', UA_CURL))
    assert cookie_value(hit('/nofilter/page1.html', ''))
    assert hit('/nofilter/page1.html', h.BROWSER_UA,
               headers={'Sec-Purpose': 'prefetch'}).set_cookies() == []

    a = wait_agg(ngx, days, {'filtered:bot|--': 3,
                             'filtered:prefetch|--': 1})
    assert a == {'filtered:bot|--': 3, 'filtered:prefetch|--': 1}, a
    st = settle(ngx)
    d = st.delta(st0)
    assert d.c('cdp_filtered_total{reason="bot"}') == 3, d
    assert d.c('cdp_filtered_total{reason="prefetch"}') == 1, d
    assert d.c('cdp_captured_total') == 5, d
    got = sorted((e['context']['page']['path'],
                  e['context'].get('userAgent', ''))
                 for e in ngx.events())
    assert got == sorted([
        ('/page1.html', UA_OURMONITOR),
        ('/mapped/page1.html', UA_CURL),
        ('/mapped/page1.html', h.BROWSER_UA),
        ('/nofilter/page1.html', UA_CURL),
        ('/nofilter/page1.html', ''),
    ]), got


# --------------------------------------------------------------------------
# 6. a captured page that also embeds the pixel

def test_captured_page_with_pixel_counted_once(ngx):
    st0 = ngx.status()
    r = get(ngx, '/pixel.html')
    assert r.status == 200 and b'<img src="/p.gif"' in r.body, r
    v = cookie_value(r)
    aid = v.split('.')[0]
    settle(ngx)
    # the browser loads the embedded pixel, with the page as Referer: the
    # pixel's location has cdp_capture on (from the server): no second view
    r = get(ngx, '/p.gif', cookie=v,
            headers={'Referer': 'http://shop.example/pixel.html'})
    assert h.is_gif(r), r
    assert cookie_value(r).split('.')[0] == aid
    # its e= events still count
    r = get(ngx, '/p.gif?e=Signup&p.plan=pro', cookie=v,
            headers={'Referer': 'http://shop.example/pixel.html'})
    assert h.is_gif(r), r
    settle(ngx)
    # a pixel where cdp_capture is off records page views (the control)
    r = get(ngx, '/nocap.gif?title=ctl', cookie=v,
            headers={'Referer': 'http://shop.example/elsewhere.html'})
    assert h.is_gif(r), r
    st = settle(ngx)

    ev = ngx.events()
    assert [(e['type'], e.get('event')) for e in ev] == [
        ('page', None), ('track', 'Signup'), ('page', None)], ev
    assert {e['anonymousId'] for e in ev} == {aid}
    assert ev[0]['context']['page']['url'] == 'http://shop.example/pixel.html'
    assert ev[0]['context']['page']['title'] == ''
    assert ev[1]['properties'] == {'plan': 'pro'}, ev[1]
    assert ev[2]['context']['page']['title'] == 'ctl', ev[2]
    d = st.delta(st0)
    assert d.c('cdp_captured_total') == 1, d
    assert d.dropped() == 0, d
    b = ngx.browser(aid)
    assert b.get('page_views') == '2' and b.get('events') == '3', b


# --------------------------------------------------------------------------
# 7. a mail service's image proxy

def test_mail_proxy_signed_pixel_is_email_opened(cdp):
    secret_file = cdp.secret_path
    days = utc_days()

    # the reader's browser was identified before (a signed pixel in a
    # browser): the person's profile exists
    r = cdp.hit(urllib.parse.urlsplit(sign_url(
        secret_file, '/p.gif?title=landing', uid='u-mail-1')).query)
    browser_aid = h.aid_of(r)
    assert browser_aid, r.set_cookies()
    settle(cdp)
    pid = h.idx(cdp, 'user_id', 'u-mail-1')
    assert pid and h.resolve(cdp, browser_aid) == pid
    assert h.profile(cdp, pid)['events'] == '1'
    keys0 = set(keys(cdp))
    st0 = cdp.status()
    n0 = cdp.xlen()

    # Gmail's proxy fetches the campaign's signed pixel
    url = sign_url(secret_file, '/p.gif?e=email_open&p.campaign=spring',
                   uid='u-mail-1', ttl=3600)
    r = cdp.hit(urllib.parse.urlsplit(url).query,
                headers={'User-Agent': UA_GMAIL})
    assert h.is_gif(r), r
    assert r.set_cookies() == [], r.set_cookies()
    st = settle(cdp)
    d = st.delta(st0)
    assert d.c('cdp_email_opened_total') == 1, d
    assert d.cookies('new') == 0 and d.cookies('kept') == 0, d

    assert cdp.xlen() == n0 + 1
    e = cdp.events()[-1]
    assert e['type'] == 'track' and e['event'] == 'Email Opened', e
    assert e['userId'] == 'u-mail-1', e
    assert 'anonymousId' not in e, e
    assert e['properties'] == {'campaign': 'spring'}, e
    p = h.profile(cdp, pid)
    assert p['events'] == '2', p
    assert stream_ids(cdp)[-1] in timeline_and_first(cdp, pid)
    # no anonymous profile, no new key but the aggregate's
    assert anon_profile_keys(cdp) == [h.key(cdp, 'profile', browser_aid)]
    new = set(keys(cdp)) - keys0
    # (an event stream the open passed through on its way to the person's
    # shard may be left, empty)
    rc = cdp.rc()
    try:
        new = {k for k in new if not (k in cdp.streams and rc.xlen(k) == 0)}
    finally:
        rc.close()
    assert new <= set(h.agg_keys(cdp, days | utc_days())), new
    assert stream_ids(cdp)[-1][0] == cdp.stream_of(pid)

    # an address alone names a person the store does not know yet: made
    url = sign_url(secret_file, '/p.gif?p.campaign=summer',
                   email='Second.Reader@Shop.example', ttl=3600)
    r = cdp.hit(urllib.parse.urlsplit(url).query,
                headers={'User-Agent': UA_GMAIL})
    assert h.is_gif(r) and r.set_cookies() == [], r
    settle(cdp)
    pid2 = h.idx(cdp, 'email', 'second.reader@shop.example')
    assert pid2 and pid2 != pid, pid2
    assert h.profile(cdp, pid2)['events'] == '1'
    # found again by its address (as the list spells it), Yahoo's proxy
    url = sign_url(secret_file, '/p.gif?p.campaign=autumn',
                   email='second.reader@shop.example', ttl=3600)
    r = cdp.hit(urllib.parse.urlsplit(url).query,
                headers={'User-Agent': UA_YAHOO})
    assert h.is_gif(r) and r.set_cookies() == [], r
    st = settle(cdp)
    assert h.idx(cdp, 'email', 'second.reader@shop.example') == pid2
    p2 = h.profile(cdp, pid2)
    assert p2['events'] == '2', p2
    ev = cdp.events()[-2:]
    assert [x['event'] for x in ev] == ['Email Opened'] * 2, ev
    assert [x['properties'] for x in ev] == [{'campaign': 'summer'},
                                             {'campaign': 'autumn'}], ev
    assert not any('userId' in x or 'anonymousId' in x for x in ev), ev
    assert all('second.reader' not in x.lower()
               for x in cdp.raw_events()), cdp.raw_events()[-2:]
    assert sorted(stream_ids(cdp)[-2:]) == [
        i for i in timeline_and_first(cdp, pid2)]
    assert st.delta(st0).c('cdp_email_opened_total') == 3
    assert anon_profile_keys(cdp) == [h.key(cdp, 'profile', browser_aid)]
    h.check_graph(cdp)


def test_mail_proxy_unsigned_stores_nothing(cdp):
    days = utc_days()
    st0 = cdp.status()
    exp, sig = h.pixel_sig(cdp.keys[0], uid='u-mail-2')
    for q in ('e=email_open&p.campaign=spring',
              'e=email_open&uid=u-mail-2',                      # unsigned
              'e=email_open&uid=u-mail-3&exp=%d&sig=%s' % (exp, sig)):  # bad
        r = cdp.hit(q, headers={'User-Agent': UA_GMAIL})
        assert h.is_gif(r), r
        assert r.set_cookies() == [], (q, r.set_cookies())
    a = wait_agg(cdp, days, {'filtered:mail_proxy|--': 3})
    assert a == {'filtered:mail_proxy|--': 3}, a
    st = settle(cdp)
    d = st.delta(st0)
    assert d.c('cdp_filtered_total{reason="mail_proxy"}') == 3, d
    assert d.c('cdp_email_opened_total') == 0, d
    assert d.cookies('new') == 0, d
    assert cdp.xlen() == 0, cdp.raw_events()
    # nothing under the prefix but the day's aggregate hash
    ks = keys(cdp)
    assert ks and set(ks) <= set(h.agg_keys(cdp, days | utc_days())), ks


def test_mail_proxy_open_finds_the_person_by_email_with_a_user_id(cdp):
    """docs/directives.md (cdp_bot): the open is stored on the named
    person's profile, "found or created by user id or e-mail".  A person the store knows by address
    (an earlier address-only campaign) opens a campaign whose pixel is
    signed with a user id and that address: found by the address."""
    url = sign_url(cdp.secret_path, '/p.gif?p.campaign=one',
                   email='nine@shop.example', ttl=3600)
    r = cdp.hit(urllib.parse.urlsplit(url).query,
                headers={'User-Agent': UA_GMAIL})
    assert h.is_gif(r) and r.set_cookies() == [], r
    settle(cdp)
    pid = h.idx(cdp, 'email', 'nine@shop.example')
    assert pid and h.profile(cdp, pid)['events'] == '1', keys(cdp)

    url = sign_url(cdp.secret_path, '/p.gif?p.campaign=two',
                   uid='u-mail-9', email='nine@shop.example', ttl=3600)
    r = cdp.hit(urllib.parse.urlsplit(url).query,
                headers={'User-Agent': UA_GMAIL})
    assert h.is_gif(r) and r.set_cookies() == [], r
    st = settle(cdp)
    assert st.c('cdp_email_opened_total') == 2, st
    e = cdp.events()[-1]
    assert e['event'] == 'Email Opened' and e['userId'] == 'u-mail-9', e
    by_uid = h.idx(cdp, 'user_id', 'u-mail-9')
    assert h.profile(cdp, pid)['events'] == '2' and by_uid == pid, (
        'the open signed with u-mail-9 and nine@shop.example did not land '
        'on %s, the profile of nine@shop.example (%r), but on %s (%r); '
        'keys %r' % (pid, h.profile(cdp, pid), by_uid,
                     by_uid and h.profile(cdp, by_uid), keys(cdp)))
    h.check_graph(cdp)


# --------------------------------------------------------------------------
# 8. click-through redirects

def redirect(ngx, to, extra='', ua=None, cookie=None, path='/r'):
    q = 'to=' + urllib.parse.quote(to, safe='')
    return get(ngx, path + '?' + q + extra, ua=ua, cookie=cookie)


def assert_refused(r):
    assert r.status == 400, r
    assert r.header('Content-Type', '').startswith('text/html'), r
    assert b'<html' in r.body.lower() and len(r.body) < 2048, r.body
    assert r.header('Location') is None, r
    assert r.set_cookies() == [], r.set_cookies()


def test_redirects(ngx):
    st0 = ngx.status()
    secret = ngx.secret_path

    # an allowed host: 302 to exactly the target, cookie, event
    to = 'https://wa.me/4915112345678?text=Hello%20there&x=a+b'
    r = redirect(ngx, to)
    assert r.status == 302, r
    assert r.header('Location') == to, r
    assert r.body == b'' or b'<html' in r.body.lower(), r
    aid = cookie_value(r).split('.')[0]
    # the exact host and a subdomain of *.partner.example
    r = redirect(ngx, 'http://shop.example/sale')
    assert r.status == 302 and r.header('Location') == \
        'http://shop.example/sale', r
    to2 = 'https://deals.partner.example:8443/offer?id=7'
    r = redirect(ngx, to2)
    assert r.status == 302 and r.header('Location') == to2, r
    # a signed target on a host not in the list
    to3 = 'https://other.example/landing?ref=mail&id=42'
    signed = sign_url(secret, '/r', to=to3)
    q = urllib.parse.urlsplit(signed).query
    assert 'tsig=' in q, signed
    r = get(ngx, '/r?' + q)
    assert r.status == 302 and r.header('Location') == to3, r
    settle(ngx)
    n_ok = 4

    # refused: 400 and a short page, nothing recorded
    for bad in [
            'https://evil.example/',
            'https://partner.example/',      # *. is below it only
            'https://evilpartner.example/',
            'javascript:alert(1)',
            '//evil.example',
            'https://wa.me@evil.example/',
            'https://evil.example\\.partner.example/',
            'https://wa.me\\@evil.example/',
            'ftp://wa.me/file',
            'https://wa.me/x\r\nSet-Cookie: a=1',  # CRLF
            '',
            to3.replace('42', '43')]:
        extra = ''
        if bad.startswith('https://other.example'):
            extra = '&' + q.split('&', 1)[1]          # to3's tsig
            assert extra.startswith('&tsig='), extra
        r = redirect(ngx, bad, extra=extra)
        assert_refused(r)
    # a wrong tsig
    r = get(ngx, '/r?to=' + urllib.parse.quote(to3, safe='') + '&tsig='
            + '0' * 64)
    assert_refused(r)
    # no to= at all
    assert_refused(get(ngx, '/r?e=x'))
    n_refused = 14

    # e= and p.* go into the event; the browser's cookie is kept
    seen = h.cookie_of(get(ngx, '/page1.html'))[0]
    settle(ngx)
    r = redirect(ngx, 'https://wa.me/4915112345678',
                 extra='&e=WhatsApp%20Clicked&p.campaign=spring&p.pos=top',
                 cookie=seen)
    assert r.status == 302, r
    aid2 = cookie_value(r).split('.')[0]
    n_ok += 1
    st = settle(ngx)
    d = st.delta(st0)
    assert d.c('cdp_redirects_total{result="redirected"}') == n_ok, d
    assert d.c('cdp_redirects_total{result="refused"}') == n_refused, d

    # (two workers: the stream's order is not the requests')
    ev = sorted((e for e in ngx.events() if e['type'] == 'track'),
                key=lambda e: e['properties']['url'])
    assert [(e['event'], e['properties']) for e in ev] == [
        ('Link Clicked', {'url': 'http://shop.example/sale',
                          'host': 'shop.example'}),
        ('Link Clicked', {'url': to2, 'host': 'deals.partner.example'}),
        ('Link Clicked', {'url': to3, 'host': 'other.example'}),
        ('WhatsApp Clicked', {'campaign': 'spring', 'pos': 'top',
                              'url': 'https://wa.me/4915112345678',
                              'host': 'wa.me'}),
        ('Link Clicked', {'url': to, 'host': 'wa.me'}),
    ], ev
    assert ev[4]['anonymousId'] == aid
    # the click is the same browser's as the page view before it
    pv = page_events(ngx)
    assert len(pv) == 1 and pv[0]['anonymousId'] == aid2 == \
        ev[3]['anonymousId'], (pv, ev[3])
    assert ngx.browser(aid2).get('events') == '2'


def test_redirect_without_consent_and_by_bots(ngx):
    days = utc_days()
    st0 = ngx.status()
    to = 'https://wa.me/4915112345678'

    # no analytics consent: redirected, no cookie, the aggregate counts it
    r = redirect(ngx, to, path='/r-nc')
    assert r.status == 302 and r.header('Location') == to, r
    assert r.set_cookies() == [], r.set_cookies()
    r = redirect(ngx, to, path='/r-nc', extra='&e=WhatsApp%20Clicked')
    assert r.status == 302 and r.set_cookies() == [], r
    # and a refused one is still refused
    assert_refused(redirect(ngx, 'https://evil.example/', path='/r-nc'))

    # bots: redirected, not tracked
    for ua in (UA_CURL, UA_GOOGLEBOT, ''):
        r = redirect(ngx, to, ua=ua)
        assert r.status == 302 and r.header('Location') == to, (ua, r)
        assert r.set_cookies() == [], (ua, r.set_cookies())
    # a prefetch of the link: neither
    r = get(ngx, '/r?to=' + urllib.parse.quote(to, safe=''),
            headers={'Sec-Purpose': 'prefetch'})
    assert r.status == 302 and r.set_cookies() == [], r

    want = {'Link Clicked|--': 1, 'WhatsApp Clicked|--': 1,
            'filtered:bot|--': 3, 'filtered:prefetch|--': 1}
    a = wait_agg(ngx, days, want)
    assert a == want, a
    st = settle(ngx)
    d = st.delta(st0)
    assert d.c('cdp_redirects_total{result="redirected"}') == 6, d
    assert d.c('cdp_redirects_total{result="refused"}') == 1, d
    assert d.c('cdp_filtered_total{reason="bot"}') == 3, d
    assert d.c('cdp_events_aggregated_total') == 2 + 4, d
    assert d.cookies('new') == 0, d
    assert ngx.xlen() == 0, ngx.raw_events()
    assert profile_keys(ngx) == []


# --------------------------------------------------------------------------
# 9. configuration errors

REDIS_LINE = 'cdp_redis 127.0.0.1:6379 prefix=t;'

BAD = [
    ('redirect-hosts-url', dict(http_extra='cdp_redirect_hosts wa.me '
                                           'https://shop.example;'),
     'cdp_redirect_hosts', ['invalid host', 'https://shop.example']),
    ('redirect-hosts-slash', dict(http_extra='cdp_redirect_hosts '
                                             'shop.example/path;'),
     'cdp_redirect_hosts', ['invalid host', 'shop.example/path']),
    ('redirect-hosts-star-only', dict(http_extra='cdp_redirect_hosts *.;'),
     'cdp_redirect_hosts', ['invalid host']),
    ('redirect-hosts-userinfo', dict(http_extra='cdp_redirect_hosts '
                                                'wa.me@evil.example;'),
     'cdp_redirect_hosts', ['invalid host', 'wa.me@evil.example']),
    ('bot-duplicate', dict(http_extra='cdp_bot $http_x_bot;\n'
                                      '    cdp_bot $http_x_other;'),
     'cdp_bot', ['duplicate']),
    ('bot-empty', dict(http_extra='cdp_bot "";'),
     'cdp_bot', ['needs a value', 'empty', 'value']),
    ('capture-maybe', dict(server_extra='cdp_capture maybe;'),
     'cdp_capture', ['maybe', '"on" or "off"']),
    ('redirect-args', dict(server_extra='location = /r { cdp_redirect x; }'),
     'cdp_redirect', ['invalid number of arguments']),
    ('redirect-in-server', dict(server_extra='cdp_redirect;'),
     'cdp_redirect', ['not allowed']),
]


@pytest.fixture
def conf_ngx(nginx_factory):
    return nginx_factory(None, start=False, redis_line=REDIS_LINE)


@pytest.mark.parametrize('case', BAD, ids=[c[0] for c in BAD])
def test_bad_config_rejected(conf_ngx, case):
    cid, parts, directive, tokens = case
    rc, out, text = conf_ngx.test_config(**parts)
    assert rc != 0, '%s: nginx -t accepted it:\n%s' % (cid, out)
    assert '[emerg]' in out, out
    low = out.lower()
    assert any(t.lower() in low for t in tokens), (
        '%s: the message does not name the problem (one of %r):\n%s'
        % (cid, tokens, out))
    assert directive in out, ('%s: %s not named:\n%s'
                              % (cid, directive, out))


def test_good_config_passes(conf_ngx):
    rc, out, _ = conf_ngx.test_config(
        http_extra=('cdp_capture on; cdp_redirect_hosts wa.me shop.example '
                    '*.partner.example Sub-Domain.Example.COM;\n'
                    '    map $http_user_agent $b { default ""; ~*mon 1; }\n'
                    '    cdp_bot $b;'),
        server_extra=('cdp_capture off; cdp_bot off;\n'
                      '        location = /r { cdp_redirect; '
                      'cdp_redirect_hosts wa.me; cdp_bot $b; '
                      'cdp_capture on; }'))
    assert rc == 0, out
    assert 'test is successful' in out, out
