"""Identity through the real nginx and a real Redis: a backend names the
person in its login response (X-CDP-* headers, cdp_identify), signed pixel
URLs name them in e-mail campaigns, and store/cdp.lua joins the anonymous
history to one profile per person, atomically."""

import concurrent.futures
import json
import time
import urllib.parse

import pytest

import cdp_harness as h


# The backend: a second server block of the same nginx that answers any
# request with the identity headers the test put in X-Test-* request
# headers (add_header skips empty values).  /login proxies to it.

BACKEND = h.IDENTIFY_BACKEND

LOCATIONS = """\
location = /p.gif  { cdp_pixel; }
        location = /status { cdp_status; }
        location /login    { cdp_identify on; proxy_pass http://127.0.0.1:@BPORT@; }
        location /custom   { cdp_identify on user_id=X-App-Id;
                             proxy_pass http://127.0.0.1:@BPORT@; }
        location /plain    { proxy_pass http://127.0.0.1:@BPORT@; }"""


def start(nginx_factory, redis, http_extra='', **kw):
    bport = h.free_port()
    return nginx_factory(
        redis,
        http_extra=BACKEND.replace('@BPORT@', str(bport)) + http_extra,
        locations=LOCATIONS.replace('@BPORT@', str(bport)), **kw)


@pytest.fixture
def ngx(nginx_factory, redis_server):
    return start(nginx_factory, redis_server,
                 http_extra='cdp_phone_country_code 49;\n'
                            '    cdp_identity_blocked test@example.com;')


Browser = h.Browser


# the identity graph's helpers live in the harness
key, idx, resolve, profile = h.key, h.idx, h.resolve, h.profile
members, merges, check_graph = h.members, h.merges, h.check_graph


def settle(ngx):
    st = ngx.wait_settled()
    assert st.queue == 0, st
    return st


# --------------------------------------------------------------------------

def test_login_joins_the_anonymous_history(ngx):
    b = Browser(ngx)
    for _ in range(3):
        assert b.view().status == 200
    aid = b.aid
    assert aid
    settle(ngx)
    assert profile(ngx, aid)['page_views'] == '3'

    r = b.login(uid='u-1001', email='Jane@Example.com',
                traits='{"plan":"pro","name":"Jane"}')
    assert r.status == 200 and r.body == b'welcome\n'
    for name in ('X-CDP-User-Id', 'X-CDP-Email', 'X-CDP-Phone',
                 'X-CDP-Traits'):
        assert r.header(name) is None, r
    settle(ngx)

    pid = idx(ngx, 'user_id', 'u-1001')
    assert pid and pid.startswith('p'), pid
    assert idx(ngx, 'email', 'jane@example.com') == pid
    assert resolve(ngx, aid) == pid
    p = profile(ngx, pid)
    assert p['user_id'] == 'u-1001', p
    assert p['events'] == '3' and p['page_views'] == '3', p
    assert p['trait.plan'] == 'pro' and p['trait.name'] == 'Jane', p
    assert p['trait.email'] == 'jane@example.com', p
    assert p['country'] if 'country' in p else True
    assert members(ngx, pid) == {
        'user_id:' + h.ident_hash(ngx.keys[0], 'user_id', 'u-1001'),
        'email:' + h.ident_hash(ngx.keys[0], 'email', 'jane@example.com'),
        'anonymous_id:' + aid}

    # the anonymous profile is now a link that keeps its events: the 3
    # page views, the oldest on the link, the others in its timeline
    # (newest first), all in the stream of the browser's shard
    link = profile(ngx, aid)
    assert set(link) == {'merged_into', 'at', 'first_event'}, link
    c = ngx.rc()
    tl = c.lrange(key(ngx, 'timeline', aid), 0, -1)
    views = [i for i, f in c.xrange(ngx.stream_of(aid), '-', '+')
             if json.loads(f['event'])['type'] == 'page']
    # the identify is counted on the person, in the person's shard
    ptl = c.lrange(key(ngx, 'timeline', pid), 0, -1)
    idents = [i for i, f in c.xrange(ngx.stream_of(pid), '-', '+')
              if json.loads(f['event'])['type'] == 'identify']
    c.close()
    assert len(views) == 3 and [link['first_event']] + tl[::-1] == views, (
        link, tl, views)
    assert 'first_event' not in p, p
    assert len(idents) == 1 and ptl == idents, (ptl, idents)
    assert ngx.xlen() == 4
    # the person's events: its own and those of the profiles it names
    assert sorted(h.person_events(ngx, pid)) == sorted(
        [(ngx.stream_of(aid), i) for i in views]
        + [(ngx.stream_of(pid), i) for i in idents])

    m = merges(ngx)
    assert len(m) == 1 and m[0]['from'] == aid and m[0]['to'] == pid, m
    assert m[0]['reason'] == 'identify' and m[0]['type'] == 'user_id', m

    # the identify event: userId, traits without the e-mail address
    ev = [e for e in ngx.events() if e['type'] == 'identify']
    assert len(ev) == 1 and ev[0]['userId'] == 'u-1001', ev
    assert ev[0]['anonymousId'] == aid
    assert ev[0]['traits'] == {'plan': 'pro', 'name': 'Jane'}, ev
    assert 'jane' not in ' '.join(ngx.raw_events()).lower().replace(
        '"name":"jane"', '')

    # later hits of the browser count on the person: in its shard's
    # stream, on its timeline; the link's timeline stays as it was
    b.view()
    settle(ngx)
    p = profile(ngx, pid)
    assert p['events'] == '4' and p['page_views'] == '4', p
    assert 'events' not in profile(ngx, aid)
    c = ngx.rc()
    try:
        ptl2 = c.lrange(key(ngx, 'timeline', pid), 0, -1)
        assert len(ptl2) == 2 and ptl2[1:] == ptl, (ptl2, ptl)
        (e,), = [c.xrange(ngx.stream_of(pid), ptl2[0], ptl2[0])]
        assert json.loads(e[1]['event'])['type'] == 'page', e
        assert c.lrange(key(ngx, 'timeline', aid), 0, -1) == tl
    finally:
        c.close()
    assert len(h.person_events(ngx, pid)) == 5 == ngx.xlen()
    st = ngx.status()
    assert st.c('cdp_identify_total{result="accepted"}') == 1
    assert st.c('cdp_merges_total') == 1
    check_graph(ngx)
    assert h.check_events(ngx) == {pid: set(h.person_events(ngx, pid))}


def test_a_new_browser_gets_its_cookie_in_the_login_response(ngx):
    b = Browser(ngx)
    r = b.login(uid='fresh-1')
    assert b.aid, r.set_cookies()
    settle(ngx)
    pid = idx(ngx, 'user_id', 'fresh-1')
    assert pid and resolve(ngx, b.aid) == pid
    b.view()
    settle(ngx)
    assert profile(ngx, pid)['page_views'] == '1'
    check_graph(ngx)


def test_the_same_user_on_a_second_browser_is_one_profile(ngx):
    laptop, phone = Browser(ngx), Browser(ngx)
    # each request is a connection of its own, and two workers batch on
    # their own: a login must not reach Redis before the views it joins
    # (a browser without a record is linked with no merge to log)
    laptop.view()
    settle(ngx)
    laptop.login(uid='u-7')
    phone.view()
    phone.view()
    settle(ngx)
    phone.login(uid='u-7')
    settle(ngx)
    pid = idx(ngx, 'user_id', 'u-7')
    assert resolve(ngx, laptop.aid) == pid
    assert resolve(ngx, phone.aid) == pid
    assert {'anonymous_id:' + laptop.aid,
            'anonymous_id:' + phone.aid} <= members(ngx, pid)
    p = profile(ngx, pid)
    assert p['page_views'] == '3', p
    assert len(merges(ngx)) == 2
    check_graph(ngx)
    # both browsers' views (left in their shards) and both identifies
    ev = h.person_events(ngx, pid)
    assert sorted(e['type'] for e in ev.values()) == [
        'identify', 'identify', 'page', 'page', 'page'], ev
    assert h.check_events(ngx) == {pid: set(ev)}


def test_two_users_on_one_browser_stay_two_profiles(ngx):
    b = Browser(ngx)
    b.view()
    b.view()
    settle(ngx)     # the views first: their merge into alice is logged
    b.login(uid='alice')
    settle(ngx)
    alice = idx(ngx, 'user_id', 'alice')
    assert profile(ngx, alice)['page_views'] == '2'

    b.login(uid='bob')
    settle(ngx)     # another worker may take the view: bob's login first
    b.view()
    settle(ngx)
    bob = idx(ngx, 'user_id', 'bob')
    assert bob and bob != alice
    # the browser now belongs to bob; alice's history stays with alice
    assert resolve(ngx, b.aid) == bob
    pa, pb = profile(ngx, alice), profile(ngx, bob)
    assert pa['user_id'] == 'alice' and pa['page_views'] == '2', pa
    assert pb['user_id'] == 'bob' and pb['page_views'] == '1', pb
    assert 'anonymous_id:' + b.aid not in members(ngx, alice)
    assert 'anonymous_id:' + b.aid in members(ngx, bob)
    m = merges(ngx)
    assert [x['reason'] for x in m] == ['identify', 'shared_device'], m
    assert m[1]['from'] == alice and m[1]['to'] == bob, m
    assert ngx.status().c('cdp_shared_device_switches_total') == 1

    # alice logs in again on that browser: back to alice, nothing merged
    b.login(uid='alice')
    settle(ngx)
    assert resolve(ngx, b.aid) == alice
    assert idx(ngx, 'user_id', 'bob') == bob != alice
    check_graph(ngx)


@pytest.mark.parametrize('uid', ['null', 'undefined', 'Anonymous', 'guest',
                                 'NONE', 'nan', '0', '-1', '000', '0-0'])
def test_blocked_user_ids_never_identify(ngx, uid):
    a, b = Browser(ngx), Browser(ngx)
    a.view()
    b.view()
    a.login(uid=uid)
    b.login(uid=uid)
    settle(ngx)
    c = ngx.rc()
    assert list(c.scan_iter(match=key(ngx, 'idx', '*'))) == []
    c.close()
    assert resolve(ngx, a.aid) == a.aid and resolve(ngx, b.aid) == b.aid
    assert merges(ngx) == []
    assert ngx.status().c('cdp_identify_total{result="blocked"}') == 2


def test_blocked_and_invalid_emails_and_phones(ngx):
    b = Browser(ngx)
    b.view()
    # configured (cdp_identity_blocked), case-insensitive; not an address;
    # not a phone number
    b.login(email='TEST@example.com')
    b.login(email='not-an-address')
    b.login(phone='call me')
    settle(ngx)
    c = ngx.rc()
    assert list(c.scan_iter(match=key(ngx, 'idx', '*'))) == []
    c.close()
    st = ngx.status()
    assert st.c('cdp_identify_total{result="blocked"}') == 1
    assert st.c('cdp_identify_total{result="invalid"}') == 2


def test_email_and_phone_are_normalised(ngx):
    a, b, c_ = Browser(ngx), Browser(ngx), Browser(ngx)
    a.login(email='Jane@Example.COM')
    b.login(email='jane@example.com')
    c_.login(phone='030 1234567', email='  jane@EXAMPLE.com')
    settle(ngx)
    pid = idx(ngx, 'email', 'jane@example.com')
    assert pid
    assert resolve(ngx, a.aid) == resolve(ngx, b.aid) == pid
    assert resolve(ngx, c_.aid) == pid
    # national number with cdp_phone_country_code 49
    assert idx(ngx, 'phone', '+49301234567') == pid
    assert profile(ngx, pid)['trait.phone'] == '+49301234567'
    check_graph(ngx)


def test_over_limit_identifies_do_not_merge(nginx_factory, redis_server):
    ngx = start(nginx_factory, redis_server,
                http_extra='cdp_identity_limits email=1;')
    a = Browser(ngx)
    a.login(uid='u1', email='one@shop.example')
    settle(ngx)
    pid = idx(ngx, 'user_id', 'u1')

    # a second address for u1 would break email=1: not attached
    a.login(uid='u1', email='two@shop.example')
    settle(ngx)
    assert idx(ngx, 'email', 'two@shop.example') is None
    assert ngx.status().c('cdp_identifiers_refused_total') == 1

    # another browser known by another address logs in as u1: merging
    # would give u1 two addresses, so the profiles stay apart
    b = Browser(ngx)
    b.login(email='three@shop.example')
    settle(ngx)
    other = idx(ngx, 'email', 'three@shop.example')
    b.login(uid='u1')
    settle(ngx)
    assert idx(ngx, 'email', 'three@shop.example') == other != pid
    assert resolve(ngx, b.aid) == other
    assert profile(ngx, pid)['user_id'] == 'u1'
    assert 'user_id' not in profile(ngx, other)
    # (fresh browsers: linked, nothing merged, so nothing in the log)
    assert merges(ngx) == [], merges(ngx)

    # two user ids can never be one profile (user_id=1)
    c = Browser(ngx)
    c.login(uid='u2', email='four@shop.example')
    c.login(uid='u1', email='four@shop.example')
    settle(ngx)
    assert idx(ngx, 'user_id', 'u2') != idx(ngx, 'user_id', 'u1')
    check_graph(ngx)


def test_identity_headers_never_reach_the_client(nginx_factory,
                                                 redis_server):
    # without consent too: removed, nothing stored, no cookie
    ngx = start(nginx_factory, redis_server,
                consent_line='cdp_consent_default none;')
    b = Browser(ngx)
    r = b.login(uid='u1', email='jane@example.com', phone='+4930123456',
                traits='{"a":1}')
    assert r.status == 200
    for name in r.msg.keys():
        assert not name.lower().startswith('x-cdp-'), r
    assert r.set_cookies() == []
    settle(ngx)
    c = ngx.rc()
    assert list(c.scan_iter(match=ngx.prefix + ':*')) == []
    c.close()
    assert ngx.status().c('cdp_identify_total{result="no_consent"}') == 1

    # a location without cdp_identify passes them (the site's choice)
    r = b.login(path='/plain', uid='u1')
    assert r.header('X-CDP-User-Id') == 'u1'


def test_configured_header_names(ngx):
    b = Browser(ngx)
    r = b.login(path='/custom', **{'X-Test-App-Id': 'u-custom'})
    assert r.header('X-App-Id') is None, r
    settle(ngx)
    assert resolve(ngx, b.aid) == idx(ngx, 'user_id', 'u-custom')


def test_traits_that_are_not_an_object_are_ignored(ngx):
    b = Browser(ngx)
    b.login(uid='u-traits', traits='["not", "an object"]')
    settle(ngx)
    pid = idx(ngx, 'user_id', 'u-traits')
    assert pid
    assert not [f for f in profile(ngx, pid) if f.startswith('trait.')]
    assert ngx.status().c('cdp_identify_total{result="invalid"}') == 1


def test_signed_pixel_urls(ngx):
    secret = ngx.keys[0]

    def url(b, **q):
        return b.view(urllib.parse.urlencode(
            dict({'url': 'https://shop.example/newsletter'}, **q)))

    unsigned, tampered, expired, good = (Browser(ngx) for _ in range(4))

    url(unsigned, uid='u-mail')
    exp, sig = h.pixel_sig(secret, uid='u-mail')
    url(tampered, uid='u-other', exp=exp, sig=sig)
    url(tampered, uid='u-mail', exp=exp + 1, sig=sig)
    exp_old, sig_old = h.pixel_sig(secret, uid='u-mail',
                                   exp=int(time.time()) - 10)
    url(expired, uid='u-mail', exp=exp_old, sig=sig_old)
    settle(ngx)

    # each hit is stored anonymously, nobody identified
    assert idx(ngx, 'user_id', 'u-mail') is None
    assert idx(ngx, 'user_id', 'u-other') is None
    for b in (unsigned, tampered, expired):
        assert resolve(ngx, b.aid) == b.aid
    st = ngx.status()
    assert st.c('cdp_pixel_identity_total{result="unsigned"}') == 1
    assert st.c('cdp_pixel_identity_total{result="bad_signature"}') == 2
    assert st.c('cdp_pixel_identity_total{result="expired"}') == 1
    assert len([e for e in ngx.events() if e['type'] == 'page']) == 4

    # a valid signature identifies: uid and e-mail, as signed
    exp, sig = h.pixel_sig(secret, uid='u-mail', email='Mail@Shop.example')
    url(good, uid='u-mail', email='Mail@Shop.example', exp=exp, sig=sig)
    settle(ngx)
    pid = idx(ngx, 'user_id', 'u-mail')
    assert pid and resolve(ngx, good.aid) == pid
    assert idx(ngx, 'email', 'mail@shop.example') == pid
    assert profile(ngx, pid)['page_views'] == '1'
    check_graph(ngx)


def test_first_and_last_touch(ngx):
    b = Browser(ngx)
    b.view(urllib.parse.urlencode({
        'url': 'https://shop.example/?utm_source=news&utm_medium=email'
               '&utm_campaign=spring',
        'ref': 'https://mail.example/inbox'}))
    # stored one by one: two hits in the same millisecond would tie (the
    # store orders touches by the hits' times, tested in test_store.py)
    settle(ngx)
    b.view('url=https://shop.example/pricing&ref=https://shop.example/')
    settle(ngx)
    b.view(urllib.parse.urlencode({
        'url': 'https://shop.example/?utm_source=ads&utm_campaign=summer'}))
    settle(ngx)
    p = profile(ngx, b.aid)
    assert p['first_utm_source'] == 'news', p
    assert p['first_utm_medium'] == 'email'
    assert p['first_utm_campaign'] == 'spring'
    assert p['first_referrer'] == 'https://mail.example/inbox'
    assert p['last_utm_source'] == 'ads', p
    assert p['last_utm_campaign'] == 'summer'
    assert p['last_referrer'] == ''
    assert int(p['first_touch_at']) <= int(p['last_touch_at'])

    # a merge keeps the older profile's first touch
    b.login(uid='toucher')
    settle(ngx)
    pp = profile(ngx, idx(ngx, 'user_id', 'toucher'))
    assert pp['first_utm_source'] == 'news' and pp['last_utm_source'] == 'ads'


def test_concurrent_identifies_leave_a_consistent_graph(ngx):
    """200 identifies at once over 50 people, from 100 browsers, with user
    ids, e-mail addresses and phone numbers overlapping."""
    browsers = [Browser(ngx) for _ in range(100)]
    for b in browsers:
        b.view()
    settle(ngx)

    def one(i):
        # each browser sees two people: shared devices happen too
        b = browsers[i % 100]
        person = (i * 7 + i // 100) % 50
        kw = {}
        if i % 3 != 1:
            kw['uid'] = 'user-%d' % person
        if i % 2 == 0:
            kw['email'] = 'Person%d@Example.com' % person
        if i % 5 == 0:
            kw['phone'] = '+4930%07d' % person
        if not kw:
            kw['email'] = 'person%d@example.com' % person
        return b.login(**kw).status

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        statuses = list(pool.map(one, range(200)))
    assert statuses == [200] * 200
    settle(ngx)

    known = check_graph(ngx)
    assert 1 <= len(known)
    # user_id limit 1: one profile per user id, one user id per profile
    pids = [idx(ngx, 'user_id', 'user-%d' % p) for p in range(50)]
    pids = [p for p in pids if p]
    assert len(pids) == len(set(pids)) >= 40, pids
    for pid in pids:
        assert len([m for m in known[pid] if m.startswith('user_id:')]) == 1
    # every merge and switch is logged
    st = ngx.status()
    print('merges', st.c('cdp_merges_total'), 'switches',
          st.c('cdp_shared_device_switches_total'), 'refused',
          st.c('cdp_identifiers_refused_total'), 'profiles', len(known))
    assert st.c('cdp_merges_total') > 0
    assert st.c('cdp_shared_device_switches_total') > 0
    assert len(merges(ngx)) == (st.c('cdp_merges_total')
                                + st.c('cdp_shared_device_switches_total'))

    # every event (the 100 views, the identifies) is on one profile and
    # reachable from its person, wherever the merges left it
    ev = h.check_events(ngx)
    assert sum(len(s) for s in ev.values()) == ngx.xlen() >= 300
    for pid in known:
        if pid in ev:
            assert set(h.person_events(ngx, pid)) == ev[pid], pid

    # no raw e-mail address or phone number in any key name
    c = ngx.rc()
    for k in c.scan_iter(match=ngx.prefix + ':*', count=1000):
        assert '@' not in k and 'example' not in k.lower(), k
        assert '+4930' not in k and 'user-' not in k, k
    c.close()


def test_no_identity_in_the_error_log(ngx):
    b = Browser(ngx)
    b.login(uid='u-log', email='secret.person@example.com',
            phone='+4930555111', traits='not json')
    settle(ngx)
    log = ngx.log_tail(200000)
    assert 'secret.person' not in log and '4930555111' not in log


def test_traits_alone_go_to_the_anonymous_profile(ngx):
    """Only X-CDP-Traits (or only blocked identifiers) from a browser nobody
    identified: the traits land on its anonymous profile, nothing merges,
    and the browser's and others' later hits are stored."""
    a, other = Browser(ngx), Browser(ngx)
    a.view()
    a.login(traits='{"plan":"free"}')
    a.login(uid='null', traits='{"theme":"dark"}')
    a.view()
    other.view()
    st = settle(ngx)
    p = profile(ngx, a.aid)
    assert 'merged_into' not in p, p
    assert p['trait.plan'] == 'free' and p['trait.theme'] == 'dark', p
    assert p['page_views'] == '2', p
    assert profile(ngx, other.aid)['page_views'] == '1'
    assert merges(ngx) == []
    assert st.dropped() == 0, st
    check_graph(ngx)
