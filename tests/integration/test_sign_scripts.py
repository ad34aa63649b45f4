"""scripts/cdp-sign-url and scripts/cdp-id-hash against the real module: a
URL the first prints identifies the browser that loads it, and the
identifiers land in Redis exactly at the names the second prints.  Also
checked against the harness's own Python implementation (docs/api.md,
"Signed pixel URLs"), and its worked example is pinned."""

import os
import subprocess
import time
import urllib.parse

import pytest

import cdp_harness as h
import cdp_shard


SIGN_URL = os.path.join(h.MAIN, 'scripts', 'cdp-sign-url')
ID_HASH = os.path.join(h.MAIN, 'scripts', 'cdp-id-hash')

EXAMPLE_SECRET = ('0123456789abcdef0123456789abcdef'
                  '0123456789abcdef0123456789abcdef')


def run(*args, ok=True):
    """Runs a script with /bin/sh (POSIX sh: dash on Debian); returns
    (exit status, stdout, stderr)."""
    p = subprocess.run(['/bin/sh'] + list(args), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=30)
    out = p.stdout.decode('utf-8', 'replace')
    err = p.stderr.decode('utf-8', 'replace')
    if ok:
        assert p.returncode == 0, (args, out, err)
    return p.returncode, out, err


def sign_url(secret_file, base, **fields):
    _, out, _ = run(SIGN_URL, secret_file, base,
                    *('%s=%s' % kv for kv in fields.items()))
    assert out.endswith('\n') and out.count('\n') == 1, out
    return out[:-1]


def id_hash(secret_file, type_, value):
    _, out, _ = run(ID_HASH, secret_file, type_, value)
    h_ = out.strip()
    assert len(h_) == 64 and all(c in '0123456789abcdef' for c in h_), out
    return h_


def secret_file(tmp_path, text, name='secret'):
    p = tmp_path / name
    p.write_bytes(text.encode() if isinstance(text, str) else text)
    return str(p)


def query_of(url):
    return urllib.parse.urlsplit(url).query


# -- without nginx: the scripts against the harness ---------------------------

def test_readme_worked_example(tmp_path):
    f = secret_file(tmp_path, EXAMPLE_SECRET + '\n')
    url = sign_url(f, 'https://shop.example/p.gif', uid='u-1001',
                   email='jane@example.com', exp=1798761600)
    assert url == ('https://shop.example/p.gif?uid=u-1001'
                   '&email=jane%40example.com&exp=1798761600'
                   '&sig=03cddf5617a16f3b0b02b7923f23f4a4'
                   '4da34f09a1d084e6879853cfc2e6dece')
    assert h.pixel_sig(EXAMPLE_SECRET, uid='u-1001', email='jane@example.com',
                       exp=1798761600)[1] == url[-64:]
    assert id_hash(f, 'email', 'jane@example.com') == (
        'cb587dc65f5c9e67b716ee839232d2ef7a31e29047fe21e710a664eadfc324b2')
    assert id_hash(f, 'user_id', 'u-1001') == (
        '4d9f7e01728ef4360a0ec772f53b1265bde77bce2572f512b9185f3b4ab8c715')


@pytest.mark.parametrize('text', [
    EXAMPLE_SECRET,                                 # no final newline
    EXAMPLE_SECRET + '\n' + h.new_key() + '\n',     # the second is older
    '\n\n' + EXAMPLE_SECRET + '\n',                 # empty lines first
    ' \t\r\n' + EXAMPLE_SECRET + ' \t \r\n',        # trailing blanks, CRLF
])
def test_the_key_line_is_read_as_the_module_reads_it(tmp_path, text):
    f = secret_file(tmp_path, text)
    assert id_hash(f, 'email', 'jane@example.com') == h.ident_hash(
        EXAMPLE_SECRET, 'email', 'jane@example.com')
    url = sign_url(f, '/p.gif', uid='u-1', exp=1798761600)
    assert url.endswith('&sig=' + h.pixel_sig(EXAMPLE_SECRET, uid='u-1',
                                              exp=1798761600)[1])


def test_percent_encoding_of_utf8_and_reserved_bytes(tmp_path):
    key = h.new_key()
    f = secret_file(tmp_path, key + '\n')
    uid = ' a+b/\u00fc~\u20ac%&=?#\n'
    email = 'J\u00f6rg+news@B\u00fccher.example'
    url = sign_url(f, 'https://shop.example/p.gif?e=open&p.c=spring',
                   uid=uid, email=email, exp=1798761600)
    base, _, q = url.partition('?')
    assert base == 'https://shop.example/p.gif'
    # only unreserved characters stay as they are
    assert q == ('e=open&p.c=spring'
                 '&uid=' + urllib.parse.quote(uid, safe='~')
                 + '&email=' + urllib.parse.quote(email, safe='~')
                 + '&exp=1798761600&sig='
                 + h.pixel_sig(key, uid=uid, email=email, exp=1798761600)[1])
    fields = urllib.parse.parse_qs(q, keep_blank_values=True)
    assert fields['uid'] == [uid] and fields['email'] == [email]


def test_id_hash_normalises_like_the_module(tmp_path):
    key = h.new_key()
    f = secret_file(tmp_path, key + '\n')
    assert id_hash(f, 'email', ' \tJane.Doe@Example.COM \n') == h.ident_hash(
        key, 'email', 'jane.doe@example.com')
    # ASCII only is lower-cased
    assert id_hash(f, 'email', 'J\u00d6RG@B\u00dcCHER.de') == h.ident_hash(
        key, 'email', 'j\u00d6rg@b\u00dccher.de')
    assert id_hash(f, 'user_id', '  U-1001\t') == h.ident_hash(
        key, 'user_id', 'U-1001')
    assert id_hash(f, 'phone', '+4930123456') == h.ident_hash(
        key, 'phone', '+4930123456')


@pytest.mark.parametrize('args, message', [
    (('phone', '030 123456'), 'E.164'),
    (('phone', '+49 30 123456'), 'E.164'),
    (('phone', '+49301'), '8 to 15 digits'),
    (('email', 'not-an-address'), 'not an e-mail address'),
    (('email', 'a@b@example.com'), 'not an e-mail address'),
    (('user_id', 'null'), 'blocked'),
    (('user_id', '000'), 'blocked'),
    (('user_id', '  '), 'empty'),
    (('uid', 'u-1'), 'unknown TYPE'),
])
def test_id_hash_refuses_what_the_module_refuses(tmp_path, args, message):
    f = secret_file(tmp_path, h.new_key() + '\n')
    rc, out, err = run(ID_HASH, f, *args, ok=False)
    assert rc == 2 and out == '' and message in err, (rc, out, err)


@pytest.mark.parametrize('args, message', [
    ((), 'usage'),
    (('ttl=60',), 'nothing to sign'),
    (('uid=',), 'nothing to sign'),
    (('uid=a', 'uid=b'), 'twice'),
    (('uid=a', 'ttl=-1'), 'seconds'),
    (('uid=a', 'ttl=60', 'exp=1'), 'one ttl= or exp='),
    (('uid=a', 'exp=1000000000000'), '12 digits'),
    (('name=a',), 'usage'),
])
def test_sign_url_refuses_bad_arguments(tmp_path, args, message):
    f = secret_file(tmp_path, h.new_key() + '\n')
    rc, out, err = run(SIGN_URL, f, '/p.gif', *args, ok=False)
    assert rc == 2 and out == '' and message in err, (rc, out, err)


def test_short_or_missing_keys_are_refused(tmp_path):
    short = secret_file(tmp_path, 'x' * 31 + '\n', 'short')
    empty = secret_file(tmp_path, '\n \n', 'empty')
    for f, message in ((short, 'at least 32'), (empty, 'no key'),
                       (str(tmp_path / 'missing'), 'cannot read')):
        rc, _, err = run(ID_HASH, f, 'user_id', 'u-1', ok=False)
        assert rc == 2 and message in err, err
        rc, _, err = run(SIGN_URL, f, '/p.gif', 'uid=u-1', ok=False)
        assert rc == 2 and message in err, err


# -- against nginx and Redis ------------------------------------------------

def idx_key(ngx, type_, h_):
    return ngx.skey('idx:' + type_, h_)


def resolve(c, ngx, x):
    for _ in range(64):
        p = c.hgetall(ngx.skey('profile', x))
        if 'merged_into' not in p:
            return x if p else None
        x = p['merged_into']
    raise AssertionError('link cycle')


def load(ngx, url, cookie=None):
    r = ngx.hit(query_of(url), cookie=cookie)
    assert h.is_gif(r), r
    return h.aid_of(r) or (cookie or '').partition('=')[2].split('.')[0]


def test_a_signed_url_identifies_at_the_printed_hash(cdp, tmp_path):
    f = cdp.secret_path
    email = ' J\u00f6rg.Doe@Example.COM'        # as the mailing list has it
    uid = ' u 1001/\u00fc '
    url = sign_url(f, 'http://127.0.0.1:%d/p.gif?e=open&p.c=spring'
                   % cdp.port, uid=uid, email=email, ttl=3600)
    aid = load(cdp, url)
    assert aid
    st = cdp.wait_settled()
    assert st.c('cdp_identify_total{result="accepted"}') == 1, st
    assert st.c('cdp_pixel_identity_total{result="bad_signature"}') == 0

    eh = id_hash(f, 'email', email)
    uh = id_hash(f, 'user_id', uid)
    assert eh == h.ident_hash(cdp.keys[0], 'email', 'j\u00f6rg.doe@example.com')
    assert uh == h.ident_hash(cdp.keys[0], 'user_id', 'u 1001/\u00fc')

    c = cdp.rc()
    try:
        pid = c.get(idx_key(cdp, 'email', eh))
        assert pid and pid.startswith('p'), pid
        assert c.get(idx_key(cdp, 'user_id', uh)) == pid
        assert resolve(c, cdp, aid) == pid
        assert c.smembers(cdp.skey('ids', pid)) == {
            'email:' + eh, 'user_id:' + uh, 'anonymous_id:' + aid}
        p = c.hgetall(cdp.skey('profile', pid))
        assert p['user_id'] == 'u 1001/\u00fc', p
        assert p['trait.email'] == 'j\u00f6rg.doe@example.com', p
        assert p['events'] == '1', p
    finally:
        c.close()
    # the open and the identify are the person's events (a profile's
    # oldest event may be kept in its field first_event rather than in
    # the timeline list; the browser's own, on its link, in its shard)
    mine = h.person_events(cdp, pid)
    stream = [(k, i) for k, i, _f in cdp.entries()]
    assert sorted(mine) == sorted(stream), (mine, stream)
    assert len(stream) == 2, stream
    ev = cdp.events()
    assert [e['type'] for e in ev] == ['track', 'identify'], ev
    assert ev[0]['event'] == 'open' and ev[0]['properties'] == {'c': 'spring'}
    assert ev[1]['userId'] == 'u 1001/\u00fc' and ev[1]['traits'] == {}, ev


def test_rotation_ttl_and_tampering(nginx_factory, redis_server, tmp_path):
    new, old = h.new_key(), h.new_key()
    ngx = nginx_factory(redis_server, keys=[new, old])
    old_file = secret_file(tmp_path, old + '\n', 'old')
    other_file = secret_file(tmp_path, h.new_key() + '\n', 'other')
    base = 'http://127.0.0.1:%d/p.gif' % ngx.port

    # signed with the previous key (second line of cdp_secret_file)
    aid = load(ngx, sign_url(old_file, base, email='old@shop.example'))

    # expired: exp = now (ttl=0), or in the past
    load(ngx, sign_url(ngx.secret_path, base, uid='u-expired', ttl=0))
    load(ngx, sign_url(ngx.secret_path, base, uid='u-expired',
                       exp=int(time.time()) - 60))

    # a key nginx does not have; a tampered uid
    load(ngx, sign_url(other_file, base, uid='u-other'))
    url = sign_url(ngx.secret_path, base, uid='u-1', ttl=600)
    load(ngx, url.replace('uid=u-1&', 'uid=u-2&'))

    st = ngx.wait_settled()
    assert st.c('cdp_identify_total{result="accepted"}') == 1, st
    assert st.c('cdp_pixel_identity_total{result="expired"}') == 2, st
    assert st.c('cdp_pixel_identity_total{result="bad_signature"}') == 2, st
    assert st.c('cdp_pixel_identity_total{result="unsigned"}') == 0, st

    c = ngx.rc()
    try:
        # identifiers are named with the first key, whichever key signed
        pid = c.get(idx_key(ngx, 'email',
                            id_hash(ngx.secret_path, 'email',
                                    'old@shop.example')))
        assert pid and resolve(c, ngx, aid) == pid
        assert c.get(idx_key(ngx, 'email', id_hash(old_file, 'email',
                                                   'old@shop.example'))) \
            is None
        for uid in ('u-expired', 'u-other', 'u-1', 'u-2'):
            assert c.get(idx_key(ngx, 'user_id', id_hash(
                ngx.secret_path, 'user_id', uid))) is None, uid
    finally:
        c.close()


# --------------------------------------------------------------------------
# cdp-key: the names of the sharded layout

CDP_KEY = os.path.join(h.MAIN, 'scripts', 'cdp-key')


def cdp_key(*args):
    p = subprocess.run([CDP_KEY] + list(args), capture_output=True,
                       text=True, timeout=30)
    return p.returncode, p.stdout.split('\n')[:-1], p.stderr


def test_cdp_key_names_the_keys_nginx_writes(nginx_factory, redis_server):
    """With shards=4 and the instance's prefix, cdp-key names the profile
    and the stream a pixel hit was written to, every shard's stream, and
    the shard of an id as the unit tests' tables say."""
    ngx = nginx_factory(redis_server, redis_params='shards=4')
    r = ngx.hit('title=k')
    aid = h.aid_of(r)
    assert aid and ngx.wait_xlen(1) >= 1
    rc, out, err = cdp_key('--prefix', ngx.prefix, '--shards', '4',
                           'profile', aid)
    assert rc == 0 and len(out) == 1, (rc, out, err)
    c = ngx.rc()
    try:
        assert c.hget(out[0], 'events') == '1', out
        rc, streams, err = cdp_key('--prefix', ngx.prefix, '--shards', '4',
                                   'events')
        assert rc == 0 and len(streams) == 4, (streams, err)
        assert [k for k in streams if c.xlen(k)] == [ngx.stream_of(aid)]
    finally:
        c.close()
    # ngx_cdp_shard.c's tags for 16 shards (tests/unit/test_shard.c)
    rc, out, err = cdp_key('shard', 'p1')
    assert rc == 0 and out == ['11 {11.43} %d' % cdp_shard.key_slot(
        '{11.43}')], (out, err)
    rc, out, err = cdp_key('idx', 'email', 'ab' * 32)
    assert out == ['cdp:idx:%s:email:%s' % (
        '{%s}' % cdp_shard.shard_tag(cdp_shard.shard_of('ab' * 32), 16),
        'ab' * 32)], out


@pytest.mark.parametrize('args, message', [
    (['profile'], 'takes 1 argument'),
    (['nope', 'x'], 'unknown kind'),
    (['--shards', '0', 'events'], '--shards: 1 to 1024'),
    (['--prefix', 'a{b', 'events'], 'without braces'),
])
def test_cdp_key_refuses_bad_arguments(args, message):
    rc, out, err = cdp_key(*args)
    assert rc == 2 and message in err and not out, (rc, out, err)
