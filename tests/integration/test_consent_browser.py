"""The consent form in a real browser with JavaScript disabled (issue 5):
Debian's headless Chromium, driven by Debian's chromedriver through
selenium, loads a page whose plain <form method="post" action="/consent">
is the only way to give consent, ticks "analytics" and clicks submit.
The browser must land back on the page (303 to the form's `redirect`)
with the signed consent cookie set, the consent log must hold exactly one
entry, and the landing page's own <img src="/p.gif"> must now be tracked
(an event with context.consent.source "cookie", and a cdp_aid cookie)
where the first visit, under `cdp_consent_default none`, was only counted
in the day's aggregate.

Packages (scripts/deps.sh test): chromium, chromium-driver,
python3-selenium."""

import os
import shutil
import time

import pytest

import cdp_harness as h


CHROMIUM = os.environ.get('CHROMIUM', '/usr/lib/chromium/chromium')
CHROMEDRIVER = os.environ.get('CHROMEDRIVER', '/usr/bin/chromedriver')

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Privacy</title></head>
<body>
<noscript><p id="nojs">no js</p></noscript>
<p id="js-ran">scripts off</p>
<script>document.getElementById('js-ran').textContent = 'scripts on';</script>
<form method="post" action="/consent">
  <input type="hidden" name="redirect" value="/privacy.html?saved=1">
  <label><input type="checkbox" id="analytics" name="grant"
                value="analytics"> Analytics</label>
  <label><input type="checkbox" id="marketing" name="grant"
                value="marketing"> Marketing</label>
  <button type="submit" id="save">Save my choice</button>
</form>
<img src="/p.gif" alt="" width="1" height="1">
</body></html>
"""

FLAGS = ('--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic',
         '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync',
         '--disable-dev-shm-usage', '--blink-settings=scriptEnabled=false',
         # headless Chromium says "HeadlessChrome", which the module does
         # not track (a bot); a person's Chrome says "Chrome"
         '--user-agent=' + h.BROWSER_UA)

DEADLINE = 30.0


def agg_total(ngx):
    c = ngx.rc()
    try:
        days = {time.strftime('%Y-%m-%d', time.gmtime(time.time() + d))
                for d in (-1, 0)}
        return sum(int(v) for k in h.agg_keys(ngx, days)
                   for v in c.hgetall(k).values())
    finally:
        c.close()


def consent_log(ngx):
    """The consent log of every shard, oldest first."""
    return [e for _raw, e in h.consent_log(ngx)]


def make_driver(profile):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for f in FLAGS:
        opts.add_argument(f)
    opts.add_argument('--user-data-dir=' + profile)
    opts.add_experimental_option(
        'prefs', {'profile.managed_default_content_settings.javascript': 2})
    service = Service(executable_path=CHROMEDRIVER,
                      log_path=profile + '-chromedriver.log')
    driver = webdriver.Chrome(service=service, options=opts)
    driver.set_page_load_timeout(DEADLINE)
    return driver, service


def test_consent_form_without_javascript(redis_server, nginx_factory,
                                         workdir):
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            pytest.fail('%s missing: apt-get install chromium chromium-driver'
                        ' (make deps)' % path, pytrace=False)
    try:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait
    except ImportError:
        pytest.fail('selenium missing: apt-get install python3-selenium '
                    '(make deps)', pytrace=False)

    www = os.path.join(workdir, 'www-consent-browser')
    os.makedirs(www, exist_ok=True)
    with open(os.path.join(www, 'privacy.html'), 'w') as f:
        f.write(PAGE)

    locations = h.DEFAULT_LOCATIONS + """
        location = /consent { cdp_consent_endpoint; }
        location / {
            root %s;
            add_header Content-Security-Policy "script-src 'none'";
        }""" % www
    n = nginx_factory(redis_server, consent_line='cdp_consent_default none;',
                      locations=locations)

    profile = os.path.join(workdir, 'chromium-consent-profile')
    shutil.rmtree(profile, ignore_errors=True)
    base = 'http://127.0.0.1:%d' % n.port

    driver = service = None
    try:
        driver, service = make_driver(profile)
        wait = WebDriverWait(driver, DEADLINE, poll_frequency=0.05)

        # first visit: default none -> the pixel is only counted
        driver.get(base + '/privacy.html')
        wait.until(lambda d: d.find_element(By.ID, 'save'))
        assert h.wait_until(lambda: agg_total(n) >= 1, DEADLINE), \
            'the first page view was not aggregated'

        # JavaScript really is off: <noscript> rendered, the inline script
        # did not run
        assert driver.find_element(By.ID, 'nojs').is_displayed()
        assert driver.find_element(By.ID, 'js-ran').text == 'scripts off'

        assert driver.get_cookie('cdp_aid') is None, driver.get_cookies()
        assert driver.get_cookie('cdp_consent') is None, driver.get_cookies()
        assert n.xlen() == 0, n.events()
        assert consent_log(n) == []

        # tick analytics, click the plain submit button
        box = driver.find_element(By.ID, 'analytics')
        box.click()
        assert box.is_selected()
        assert not driver.find_element(By.ID, 'marketing').is_selected()
        driver.find_element(By.ID, 'save').click()

        # 303 back to the page, which loads again with its pixel
        wait.until(lambda d: d.current_url.endswith('/privacy.html?saved=1'))
        wait.until(lambda d: d.find_element(By.ID, 'save'))
        assert driver.current_url == base + '/privacy.html?saved=1'

        c = driver.get_cookie('cdp_consent')
        assert c is not None, driver.get_cookies()
        assert c['value'].startswith('c1.1.'), c

        # the landing page's pixel was tracked under the cookie's consent
        assert n.wait_xlen(1, DEADLINE) >= 1, 'no event after consent'
        wait.until(lambda d: d.get_cookie('cdp_aid') is not None)
        aid = driver.get_cookie('cdp_aid')
        assert h.COOKIE_VALUE_RE.match(aid['value']), aid
        assert aid.get('httpOnly') is True, aid

        events = n.events()
        assert len(events) == 1, events
        e = events[0]
        assert e['type'] == 'page', e
        assert e['context']['consent']['source'] == 'cookie', e
        assert e['context']['consent']['analytics'] is True, e
        assert e['context']['consent']['marketing'] is False, e
        assert e['context']['page']['url'] == base + '/privacy.html?saved=1'
        assert e['anonymousId'] == aid['value'].split('.')[0], (e, aid)
        # the hit is the browser's (the user agent it was told to send)
        assert e['context']['userAgent'] == h.BROWSER_UA

        # exactly one consent log entry: analytics granted, from the form
        assert h.wait_until(lambda: len(consent_log(n)) >= 1, DEADLINE)
        log = consent_log(n)
        assert len(log) == 1, log
        assert log[0]['granted'] == ['analytics'], log
        assert sorted(log[0]['denied']) == ['marketing', 'personalization']
        assert log[0]['source'] == 'form', log
    finally:
        if driver is not None:
            driver.quit()
        elif service is not None:
            service.stop()
