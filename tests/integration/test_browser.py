"""A real browser: Debian's headless Chromium loads a page whose only
tracking is a bare <img src="/p.gif"> (scripts forbidden by CSP), twice in
one profile.  The pixel must record both page views, with the page URL
taken from the Referer, the campaign from its utm_*, and the same
anonymous id the second time (the cookie was kept by the browser)."""

import os
import shutil
import subprocess

import pytest

import cdp_harness as h


CHROMIUM = os.environ.get('CHROMIUM', '/usr/lib/chromium/chromium')

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Browser page</title></head>
<body><p>No JavaScript here.</p>
<img src="/p.gif" alt="" width="1" height="1"></body></html>
"""


def load(url, profile):
    # the flags the machine notes give for a closed network, as root
    p = subprocess.run(
        [CHROMIUM, '--headless=new', '--no-sandbox', '--disable-gpu',
         '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync',
         # headless Chromium says "HeadlessChrome", which the module does
         # not track (a bot); a person's Chrome says "Chrome"
         '--user-agent=' + h.BROWSER_UA,
         '--user-data-dir=' + profile, '--dump-dom', url],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=60)
    assert p.returncode == 0, 'chromium exited %d' % p.returncode
    return p.stdout.decode('utf-8', 'replace')


def test_chromium_pixel_in_img(redis_server, nginx_factory, workdir):
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail('%s missing: apt-get install chromium (make deps)'
                    % CHROMIUM, pytrace=False)

    www = os.path.join(workdir, 'www-browser')
    os.makedirs(www, exist_ok=True)
    with open(os.path.join(www, 'page.html'), 'w') as f:
        f.write(PAGE)

    locations = h.DEFAULT_LOCATIONS + """
        location / {
            root %s;
            add_header Content-Security-Policy "script-src 'none'";
        }""" % www
    n = nginx_factory(redis_server, locations=locations)

    profile = os.path.join(workdir, 'chromium-profile')
    shutil.rmtree(profile, ignore_errors=True)

    base = 'http://127.0.0.1:%d/page.html' % n.port
    first = base + '?utm_source=newsletter&utm_campaign=launch'
    second = base + '?again=1'

    assert 'No JavaScript here.' in load(first, profile)
    n.wait_xlen(1)
    load(second, profile)
    n.wait_xlen(2)

    events = n.events()
    assert len(events) == 2, events
    e1, e2 = events

    assert e1['type'] == 'page' and e2['type'] == 'page'
    assert e1['context']['page']['url'] == first
    assert e1['context']['page']['path'] == '/page.html'
    assert e1['context']['campaign'] == {'source': 'newsletter',
                                         'name': 'launch'}
    assert e2['context']['page']['url'] == second
    # the hit is the browser's (the user agent it was told to send)
    assert e1['context']['userAgent'] == h.BROWSER_UA

    # the browser kept the cookie between the two runs
    assert len(e1['anonymousId']) == 32
    assert e2['anonymousId'] == e1['anonymousId']

    b = n.browser(e1['anonymousId'])
    assert b.get('events') == '2' and b.get('page_views') == '2', b
