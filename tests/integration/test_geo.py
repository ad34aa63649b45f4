"""Geo (issue 5): `cdp_geoip_db`, the lookup on the client address as nginx
sees it (realip), `context.location` of events, the geo fields of the
browser's record, `$cdp_country` / `$cdp_region` / `$cdp_city` in map, logs
and headers, `cdp_store_ip`.

The database is the one geo_db.pl writes (fixture geo_dbs):
  198.51.100.0/24   DE / BE / Berlin        (alt variant: AT / 9 / Vienna)
  203.0.113.0/24    US / CA / San Francisco
  2001:db8:1::/48   FR / IDF / Paris
  192.0.2.0/24      not in the database
The client address is given by X-Forwarded-For, trusted from 127.0.0.1.
"""

import os
import re
import shutil
import subprocess
import tempfile

import pytest

import cdp_harness as h


DE_IP, DE_NET = '198.51.100.7', '198.51.100.0'
US_IP, US_NET = '203.0.113.9', '203.0.113.0'
FR_IP, FR_NET = '2001:db8:1:2:3:4:5:6', '2001:db8:1::'
UNKNOWN_IP, UNKNOWN_NET = '192.0.2.77', '192.0.2.0'

DE = {'country': 'DE', 'region': 'BE', 'city': 'Berlin'}
US = {'country': 'US', 'region': 'CA', 'city': 'San Francisco'}
FR = {'country': 'FR', 'region': 'IDF', 'city': 'Paris'}
AT = {'country': 'AT', 'region': '9', 'city': 'Vienna'}

REALIP = """set_real_ip_from 127.0.0.1;
        real_ip_header X-Forwarded-For;"""

# map, log_format: http level; the geo DB line is prepended when wanted
GEO_HTTP = """map $cdp_country $geo_group {
        DE      eu;
        US      us;
        default other;
    }
    log_format geo 'geo $remote_addr title=$arg_title '
                   '[$cdp_country|$cdp_region|$cdp_city] group=$geo_group';"""

GEO_LOCATIONS = """\
location = /p.gif {
            cdp_pixel;
            add_header X-Geo-Group $geo_group always;
            add_header X-Geo "[$cdp_country|$cdp_region|$cdp_city]" always;
            access_log @DIR@/geo.log geo;
        }
        location = /p-noip.gif {
            cdp_pixel;
            cdp_store_ip off;
        }
        location = /geo {
            return 200 "[$cdp_country|$cdp_region|$cdp_city] $geo_group";
        }
        location = /status { cdp_status; }"""


def geo_nginx(nginx_factory, redis, db, **kw):
    """nginx with the geo locations, realip from 127.0.0.1 and, when db is
    not None, `cdp_geoip_db db;`."""
    http = ('cdp_geoip_db %s;\n    ' % db if db else '') + GEO_HTTP
    return nginx_factory(redis, http_extra=http + kw.pop('http_extra', ''),
                         server_extra=REALIP + kw.pop('server_extra', ''),
                         locations=GEO_LOCATIONS, **kw)


def xff(ip):
    return {'X-Forwarded-For': ip}


def by_title(events):
    """{title: event}; every hit of these tests has its own title."""
    out = {}
    for e in events:
        t = e.get('name') or e.get('properties', {}).get('title')
        assert t not in out, 'two events titled %r' % t
        out[t] = e
    return out


def geo_log(ngx):
    """{title: '[country|region|city] group=...'} of the geo access log."""
    out = {}
    for line in h.Nginx.read(os.path.join(ngx.dir, 'geo.log')).splitlines():
        if not line.startswith('geo '):
            continue
        _, addr, title, rest = line.split(' ', 3)
        out[title[len('title='):]] = (addr, rest)
    return out


def wait_log(ngx, titles):
    return h.wait_until(lambda: set(titles) <= set(geo_log(ngx))
                        and geo_log(ngx), 5.0)


# --------------------------------------------------------------------------
# the database itself (so that a failure below is the module's)

def test_test_database_lookups(geo_dbs):
    def look(db, ip, *path):
        p = subprocess.run(['mmdblookup', '--file', db, '--ip', ip] +
                           list(path), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=30)
        return p.stdout.decode()

    db = geo_dbs['main']
    assert '"DE"' in look(db, DE_IP, 'country', 'iso_code')
    assert '"BE"' in look(db, DE_IP, 'subdivisions', '0', 'iso_code')
    assert '"Berlin"' in look(db, DE_IP, 'city', 'names', 'en')
    assert '"San Francisco"' in look(db, US_IP, 'city', 'names', 'en')
    assert '"IDF"' in look(db, FR_IP, 'subdivisions', '0', 'iso_code')
    assert '"DE"' in look(db, '::ffff:' + DE_IP, 'country', 'iso_code')
    assert 'Could not find' in look(db, UNKNOWN_IP)
    assert '"Vienna"' in look(geo_dbs['alt'], DE_IP, 'city', 'names', 'en')
    assert '"US"' in look(geo_dbs['alt'], US_IP, 'country', 'iso_code')


# --------------------------------------------------------------------------
# events, stored IP

def test_event_location_and_truncated_ip(redis_server, nginx_factory,
                                         geo_dbs):
    ngx = geo_nginx(nginx_factory, redis_server, geo_dbs['main'])
    for title, ip in (('de', DE_IP), ('us', US_IP), ('fr', FR_IP),
                      ('unknown', UNKNOWN_IP)):
        r = ngx.hit('title=' + title, headers=xff(ip))
        assert h.is_gif(r), r
    assert ngx.wait_xlen(4) == 4, ngx.xlen()
    ev = by_title(ngx.events())
    assert set(ev) == {'de', 'us', 'fr', 'unknown'}, sorted(ev)

    for title, loc, net in (('de', DE, DE_NET), ('us', US, US_NET),
                            ('fr', FR, FR_NET)):
        ctx = ev[title]['context']
        assert ctx.get('location') == loc, (title, ctx)
        assert ctx.get('ip') == net, (title, ctx)

    ctx = ev['unknown']['context']
    assert 'location' not in ctx, ctx
    assert ctx.get('ip') == UNKNOWN_NET, ctx

    raw = '\n'.join(ngx.raw_events())
    for full in (DE_IP, US_IP, UNKNOWN_IP, '2001:db8:1:2', '127.0.0.1'):
        assert full not in raw, 'address %s in an event:\n%s' % (full, raw)


def test_store_ip_off(redis_server, nginx_factory, geo_dbs):
    ngx = geo_nginx(nginx_factory, redis_server, geo_dbs['main'])
    assert h.is_gif(ngx.hit('title=off-de', path='/p-noip.gif',
                            headers=xff(DE_IP)))
    assert h.is_gif(ngx.hit('title=off-fr', path='/p-noip.gif',
                            headers=xff(FR_IP)))
    assert h.is_gif(ngx.hit('title=on-de', headers=xff(DE_IP)))
    assert ngx.wait_xlen(3) == 3, ngx.xlen()
    ev = by_title(ngx.events())
    for t, loc in (('off-de', DE), ('off-fr', FR)):
        ctx = ev[t]['context']
        assert 'ip' not in ctx, (t, ctx)
        assert ctx.get('location') == loc, (t, ctx)
    # the default, in the same server: truncated
    assert ev['on-de']['context'].get('ip') == DE_NET, ev['on-de']
    for t in ('off-de', 'off-fr'):
        raw = [s for s in ngx.raw_events() if t in s]
        assert raw and '198.51.100' not in raw[0] \
            and '2001:db8' not in raw[0], raw


def test_store_ip_off_at_http_level(redis_server, nginx_factory, geo_dbs):
    ngx = geo_nginx(nginx_factory, redis_server, geo_dbs['main'],
                    http_extra='\n    cdp_store_ip off;')
    assert h.is_gif(ngx.hit('title=h', headers=xff(US_IP)))
    assert ngx.wait_xlen(1) == 1
    (e,) = ngx.events()
    assert 'ip' not in e['context'], e['context']
    assert e['context'].get('location') == US, e['context']


# --------------------------------------------------------------------------
# the browser's record

def test_browser_record_geo_fields(redis_server, nginx_factory, geo_dbs):
    ngx = geo_nginx(nginx_factory, redis_server, geo_dbs['main'])

    r = ngx.hit('title=b1', headers=xff(DE_IP))
    aid = h.aid_of(r)
    assert aid, r.set_cookies()
    cookie = 'cdp_aid=' + h.cookie_of(r)[0]
    assert ngx.wait_xlen(1) == 1
    b = ngx.browser(aid)
    assert {k: b.get(k) for k in DE} == DE, b

    # the latest known place wins
    ngx.hit('title=b2', cookie=cookie, headers=xff(US_IP))
    assert ngx.wait_xlen(2) == 2
    b = ngx.browser(aid)
    assert {k: b.get(k) for k in US} == US, b

    # an unknown address keeps the last known one
    ngx.hit('title=b3', cookie=cookie, headers=xff(UNKNOWN_IP))
    assert ngx.wait_xlen(3) == 3
    b = ngx.browser(aid)
    assert {k: b.get(k) for k in US} == US, b
    assert b.get('events') == '3', b

    ngx.hit('title=b4', cookie=cookie, headers=xff(FR_IP))
    assert ngx.wait_xlen(4) == 4
    b = ngx.browser(aid)
    assert {k: b.get(k) for k in FR} == FR, b

    # a browser only ever seen from an unknown range has no geo fields
    r = ngx.hit('title=b5', headers=xff(UNKNOWN_IP))
    aid2 = h.aid_of(r)
    assert aid2 and aid2 != aid
    assert ngx.wait_xlen(5) == 5
    b2 = ngx.browser(aid2)
    assert b2.get('events') == '1', b2
    for k in ('country', 'region', 'city'):
        assert k not in b2, b2


# --------------------------------------------------------------------------
# variables: map, add_header, log_format, return

def test_variables_in_map_header_log(redis_server, nginx_factory, geo_dbs):
    ngx = geo_nginx(nginx_factory, redis_server, geo_dbs['main'])
    want = {
        'de': (DE_IP, 'eu', '[DE|BE|Berlin]'),
        'us': (US_IP, 'us', '[US|CA|San Francisco]'),
        'fr': (FR_IP, 'other', '[FR|IDF|Paris]'),
        'unknown': (UNKNOWN_IP, 'other', '[||]'),
    }
    for title, (ip, group, geo) in want.items():
        r = ngx.hit('title=' + title, headers=xff(ip))
        assert h.is_gif(r), r
        assert r.header('X-Geo-Group') == group, (title, r)
        assert r.header('X-Geo') == geo, (title, r)
        # any location, not only the pixel's
        r = h.one_request(ngx.port, 'GET', '/geo', headers=xff(ip))
        assert r.status == 200, r
        assert r.body.decode() == '%s %s' % (geo, group), (title, r.body)

    log = wait_log(ngx, want)
    assert log, 'geo.log: %r' % h.Nginx.read(os.path.join(ngx.dir,
                                                           'geo.log'))
    for title, (ip, group, geo) in want.items():
        addr, rest = log[title]
        assert addr == ip, (title, log[title])     # realip applied
        ok = ['%s group=%s' % (geo, group)]
        if title == 'unknown':
            # nginx logs a not-found variable as "-", an empty one as ""
            ok.append('[-|-|-] group=other')
        assert rest in ok, (title, log[title])


def test_without_db_variables_empty_no_location(redis_server, nginx_factory):
    ngx = geo_nginx(nginx_factory, redis_server, None)
    r = ngx.hit('title=nodb', headers=xff(DE_IP))
    assert h.is_gif(r), r
    assert r.header('X-Geo') == '[||]', r
    assert r.header('X-Geo-Group') == 'other', r
    r = h.one_request(ngx.port, 'GET', '/geo', headers=xff(DE_IP))
    assert r.body.decode() == '[||] other', r.body

    aid = None
    r = ngx.hit('title=nodb2', headers=xff(US_IP))
    aid = h.aid_of(r)
    assert ngx.wait_xlen(2) == 2
    for e in ngx.events():
        assert 'location' not in e['context'], e['context']
    ev = by_title(ngx.events())
    assert ev['nodb']['context'].get('ip') == DE_NET, ev['nodb']
    b = ngx.browser(aid)
    assert b.get('events') == '1', b
    for k in ('country', 'region', 'city'):
        assert k not in b, b

    log = wait_log(ngx, ['nodb', 'nodb2'])
    assert log, 'geo.log: %r' % h.Nginx.read(os.path.join(ngx.dir,
                                                           'geo.log'))
    for t in ('nodb', 'nodb2'):
        assert log[t][1] in ('[||] group=other', '[-|-|-] group=other'), \
            log[t]


# --------------------------------------------------------------------------
# configuration

@pytest.fixture
def conf_ngx(nginx_factory):
    """An instance that is never started: only its `nginx -t`."""
    return nginx_factory(None, start=False,
                         redis_line='cdp_redis 127.0.0.1:6379;')


def test_config_with_db_passes(conf_ngx, geo_dbs):
    rc, out, _ = conf_ngx.test_config(
        http_extra='cdp_geoip_db %s;\n    %s\n    cdp_store_ip truncated;'
                   % (geo_dbs['main'], GEO_HTTP),
        server_extra=REALIP + '\n        location /x { cdp_pixel; '
                              'cdp_store_ip off; }')
    assert rc == 0, out
    assert 'test is successful' in out, out
    assert '[emerg]' not in out and '[alert]' not in out, out


def _bad_files(workdir):
    d = os.path.join(workdir, 'geo-bad')
    os.makedirs(d, exist_ok=True)
    junk = os.path.join(d, 'not-a-maxmind.mmdb')
    with open(junk, 'w') as f:
        f.write('this is not a MaxMind DB\n' * 100)
    empty = os.path.join(d, 'empty.mmdb')
    open(empty, 'w').close()
    return {'missing': os.path.join(d, 'missing.mmdb'), 'junk': junk,
            'empty': empty}


@pytest.mark.parametrize('which', ['missing', 'junk', 'empty'])
def test_bad_db_fails_nginx_t(conf_ngx, workdir, which):
    path = _bad_files(workdir)[which]
    rc, out, _ = conf_ngx.test_config(http_extra='cdp_geoip_db %s;' % path)
    assert rc != 0, 'nginx -t accepted %s:\n%s' % (which, out)
    assert '[emerg]' in out, out
    assert path in out, 'the message does not name %s:\n%s' % (path, out)


@pytest.mark.parametrize('parts,tokens', [
    (dict(http_extra='cdp_store_ip maybe;'), ['maybe', 'invalid']),
    (dict(server_extra='location /x { cdp_geoip_db /x.mmdb; }'),
     ['not allowed']),
], ids=['store-ip-bad-value', 'geoip-db-in-location'])
def test_bad_geo_directives(conf_ngx, parts, tokens):
    rc, out, _ = conf_ngx.test_config(**parts)
    assert rc != 0, out
    assert '[emerg]' in out, out
    assert any(t in out for t in tokens), out


# --------------------------------------------------------------------------
# reload

def test_reload_reopens_db(redis_server, nginx_factory, geo_dbs, workdir):
    db = os.path.join(tempfile.mkdtemp(dir=workdir), 'city.mmdb')
    shutil.copyfile(geo_dbs['main'], db)
    ngx = geo_nginx(nginx_factory, redis_server, db)

    r = ngx.hit('title=before', headers=xff(DE_IP))
    assert r.header('X-Geo') == '[DE|BE|Berlin]', r
    assert r.header('X-Geo-Group') == 'eu', r

    # a new file at the same path (copied next to it, renamed over it, as
    # a database update does: the running workers keep their mapping)
    tmp = db + '.new'
    shutil.copyfile(geo_dbs['alt'], tmp)
    os.replace(tmp, db)
    # not before the reload
    r = ngx.hit('title=between', headers=xff(DE_IP))
    assert r.header('X-Geo') == '[DE|BE|Berlin]', r

    ngx.reload()
    r = ngx.hit('title=after', headers=xff(DE_IP))
    assert r.header('X-Geo') == '[AT|9|Vienna]', r
    assert r.header('X-Geo-Group') == 'other', r
    r = ngx.hit('title=after-us', headers=xff(US_IP))
    assert r.header('X-Geo') == '[US|CA|San Francisco]', r

    assert ngx.wait_xlen(4) == 4, ngx.xlen()
    ev = by_title(ngx.events())
    assert ev['before']['context'].get('location') == DE, ev['before']
    assert ev['between']['context'].get('location') == DE, ev['between']
    assert ev['after']['context'].get('location') == AT, ev['after']
    assert ev['after-us']['context'].get('location') == US, ev['after-us']


def test_reload_with_broken_db_keeps_running(redis_server, nginx_factory,
                                             geo_dbs, workdir):
    db = os.path.join(tempfile.mkdtemp(dir=workdir), 'city.mmdb')
    shutil.copyfile(geo_dbs['main'], db)
    ngx = geo_nginx(nginx_factory, redis_server, db)
    assert ngx.hit('title=a', headers=xff(DE_IP)).header('X-Geo') == \
        '[DE|BE|Berlin]'

    # a broken file: the new configuration is refused ([emerg] in the
    # log, expected here), the old workers go on with the old database
    ngx.expected_log_re = r'\[emerg\].*' + re.escape(db)
    tmp = db + '.new'
    with open(tmp, 'w') as f:
        f.write('garbage\n')
    os.replace(tmp, db)
    old = set(ngx.worker_pids())
    subprocess.run(ngx.nginx_args() + ['-s', 'reload'], timeout=30,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert h.wait_until(lambda: db in ngx.log_tail(), 5.0), ngx.log_tail()
    assert ngx.alive()
    assert set(ngx.worker_pids()) == old
    r = ngx.hit('title=b', headers=xff(DE_IP))
    assert h.is_gif(r), r
    assert r.header('X-Geo') == '[DE|BE|Berlin]', r

    # repaired: the reload goes through
    shutil.copyfile(geo_dbs['alt'], tmp)
    os.replace(tmp, db)
    ngx.reload()
    assert ngx.hit('title=c', headers=xff(DE_IP)).header('X-Geo') == \
        '[AT|9|Vienna]'
