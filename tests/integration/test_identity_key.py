"""cdp_identity_secret_file: the key that names identifiers in Redis
(idx:<type>:<hash>) comes from a file of its own, so that rotating
cdp_secret_file (cookies, consent cookie, pixel signatures) no longer
re-keys every user id, e-mail address and phone number.  `nginx -t` checks
the file; with two or more cdp_secret_file keys and no identity file it
warns."""

import os
import re
import urllib.parse

import pytest

import cdp_harness as h


SHORT_KEY = '0123456789abcdef0123456789abcde'      # 31 bytes, < 32
IDENT = 'cdp_identity_secret_file %s;'
WARNING = 'cdp_secret_file has 2 keys and no cdp_identity_secret_file'


def _write(path, text):
    with open(path, 'w') as f:
        f.write(text)
    return path


# --------------------------------------------------------------------------
# nginx -t

REDIS = 'cdp_redis 127.0.0.1:6379 prefix=t;'


@pytest.fixture
def conf_ngx(nginx_factory):
    """An instance that is never started: only its `nginx -t`."""
    return nginx_factory(None, start=False, redis_line=REDIS)


def _with_identity(ngx, ident_lines, where, secret_path=None):
    """Conf parts putting the cdp_identity_secret_file lines before or
    after cdp_secret_file in the http block."""
    secret = 'cdp_secret_file %s;' % (secret_path or ngx.secret_path)
    ident = '\n    '.join(ident_lines)
    if where == 'before':
        return dict(secret=ident + '\n    ' + secret)
    return dict(secret=secret, http_extra=ident)


def _lines_with(out, needle):
    return [l for l in out.splitlines() if needle in l]


# (id, contents of the identity file or None for no file, number of
#  directives, the message expected, with <DIR> for the directory)
BAD = [
    ('missing-file', None, 1,
     'open() "<DIR>/id.secret" failed'),
    ('short-key', SHORT_KEY + '\n', 1,
     'key 1 in cdp_identity_secret_file "<DIR>/id.secret" is 31 bytes, '
     'at least 32 are required'),
    # trailing whitespace is not part of the key, nor counted
    ('short-key-trailing-space', '\n' + SHORT_KEY + ' \t\r\n\n', 1,
     'key 1 in cdp_identity_secret_file "<DIR>/id.secret" is 31 bytes, '
     'at least 32 are required'),
    ('two-keys', h.new_key() + '\n' + h.new_key() + '\n', 1,
     'cdp_identity_secret_file "<DIR>/id.secret" holds more than one key'),
    ('two-keys-blank-lines', '\n' + h.new_key() + '\n\n  \n'
     + h.new_key(), 1,
     'cdp_identity_secret_file "<DIR>/id.secret" holds more than one key'),
    ('empty-file', '', 1,
     'cdp_identity_secret_file "<DIR>/id.secret" holds no key'),
    ('blank-lines-only', '\n  \n\t\n\r\n', 1,
     'cdp_identity_secret_file "<DIR>/id.secret" holds no key'),
    ('duplicate', h.new_key() + '\n', 2,
     '"cdp_identity_secret_file" directive is duplicate'),
]


@pytest.mark.parametrize('where', ['after', 'before'])
@pytest.mark.parametrize('case', BAD, ids=[c[0] for c in BAD])
def test_bad_identity_file_rejected(conf_ngx, case, where):
    cid, contents, n, message = case
    path = os.path.join(conf_ngx.dir, 'id.secret')
    if contents is not None:
        _write(path, contents)
    rc, out, _ = conf_ngx.test_config(
        **_with_identity(conf_ngx, [IDENT % path] * n, where))
    assert rc != 0, '%s: nginx -t accepted it:\n%s' % (cid, out)
    lines = _lines_with(out, message)
    assert lines, '%s: no %r in:\n%s' % (cid, message, out)
    assert all('[emerg]' in l for l in lines), out
    assert 'test is successful' not in out, out
    # the key is never echoed
    for k in re.findall(r'[0-9a-f]{31,}', contents or ''):
        assert k not in out, 'the key is echoed in the message:\n' + out


# (id, keys of cdp_secret_file, identity file contents or None, where,
#  whether the warning is expected)
GOOD = [
    ('one-key-no-identity', 1, None, None, False),
    ('one-key-identity-after', 1, 'KEY\n', 'after', False),
    ('one-key-identity-before', 1, 'KEY\n', 'before', False),
    ('identity-blank-lines-trailing-space', 1, '\n\nKEY  \t\r\n\n', 'after',
     False),
    ('identity-no-newline', 1, 'KEY', 'after', False),
    ('two-keys-identity-after', 2, 'KEY\n', 'after', False),
    ('two-keys-identity-before', 2, 'KEY\n', 'before', False),
    ('two-keys-no-identity', 2, None, None, True),
]


@pytest.mark.parametrize('case', GOOD, ids=[c[0] for c in GOOD])
def test_identity_file_config_passes(conf_ngx, case):
    cid, nkeys, contents, where, warned = case
    secret = _write(os.path.join(conf_ngx.dir, 'k%d.secret' % nkeys),
                    ''.join(h.new_key() + '\n' for _ in range(nkeys)))
    if contents is None:
        parts = dict(secret='cdp_secret_file %s;' % secret)
    else:
        ident = _write(os.path.join(conf_ngx.dir, 'id.secret'),
                       contents.replace('KEY', h.new_key()))
        parts = _with_identity(conf_ngx, [IDENT % ident], where, secret)
    rc, out, _ = conf_ngx.test_config(**parts)
    assert rc == 0, '%s: nginx -t failed:\n%s' % (cid, out)
    assert 'test is successful' in out, out
    assert '[emerg]' not in out and '[alert]' not in out, out
    lines = _lines_with(out, WARNING)
    if warned:
        assert lines, '%s: no warning %r in:\n%s' % (cid, WARNING, out)
        assert all('[warn]' in l for l in lines), out
    else:
        assert not lines, '%s: unexpected warning:\n%s' % (cid, out)
        assert 'no cdp_identity_secret_file' not in out, out


# --------------------------------------------------------------------------
# Running: a backend names the person in its login response (X-CDP-*
# headers, cdp_identify), as in test_identity.py

BACKEND = h.IDENTIFY_BACKEND

LOCATIONS = """\
location = /p.gif  { cdp_pixel; }
        location = /status { cdp_status; }
        location /login    { cdp_identify on; proxy_pass http://127.0.0.1:@BPORT@; }"""


def start(nginx_factory, redis, keys, identity=None, where='after',
          identity_text=None, **kw):
    """nginx with cdp_secret_file [keys] and, with identity (a key line),
    cdp_identity_secret_file before or after it; identity_text is the
    file's text when it is not just the line."""
    bport = h.free_port()
    ngx = nginx_factory(redis, start=False, keys=keys,
                        http_extra=BACKEND.replace('@BPORT@', str(bport)),
                        locations=LOCATIONS.replace('@BPORT@', str(bport)),
                        **kw)
    ngx.identity = identity
    if identity is not None:
        path = _write(os.path.join(ngx.dir, 'cdp.identity'),
                      identity_text if identity_text is not None
                      else identity + '\n')
        parts = _with_identity(ngx, [IDENT % path], where)
        if 'http_extra' in parts:
            parts['http_extra'] = (ngx.parts['HTTP_EXTRA'] + '\n    '
                                   + parts['http_extra'])
        for k, v in parts.items():
            ngx.parts[k.upper()] = v
    return ngx.start()


def rotate(ngx, keys):
    """A new cdp_secret_file, then nginx -s reload (until only the new
    workers run)."""
    ngx.keys = list(keys)
    ngx.write_secret(ngx.keys)
    ngx.reload()


class Browser(h.Browser):
    """The harness's browser, whose login must reach the backend."""

    def login(self, **kw):
        r = super().login(**kw)
        assert r.status == 200 and r.body == b'welcome\n', r
        return r


key, resolve, members, check_graph = h.key, h.resolve, h.members, \
    h.check_graph


def settle(ngx):
    st = ngx.wait_settled()
    assert st.queue == 0, st
    return st


def idx_by(ngx, line, type_, value):
    """The profile named by idx:<type>:<hash>, the hash keyed with line."""
    c = ngx.rc()
    try:
        return c.get(key(ngx, 'idx', type_, h.ident_hash(line, type_, value)))
    finally:
        c.close()


def idx_keys(ngx):
    """{'<type>:<hash>'} of every idx key of the prefix (each in the
    shard of its hash)."""
    c = ngx.rc()
    try:
        out = set()
        for k in c.scan_iter(match=ngx.prefix + ':idx:*', count=1000):
            kind, rest = h.parse_key(ngx, k)
            t, v = rest.split(':', 1)
            assert kind == 'idx' and k == key(ngx, 'idx', t, v), k
            out.add(rest)
        return out
    finally:
        c.close()


def names(line, uid='jane', email='jane@example.com'):
    return {'user_id:' + h.ident_hash(line, 'user_id', uid),
            'email:' + h.ident_hash(line, 'email', email)}


def _jane_after_rotation(nginx_factory, redis, identity):
    """Jane logs in on browser A under cdp_secret_file [K1], the file is
    rotated to [K2, K1] (reload), A comes back with its old cookie, and
    Jane logs in on a new browser B.  Returns (ngx, K1, K2, A, B, pid
    before the rotation)."""
    k1, k2 = h.new_key(), h.new_key()
    ngx = start(nginx_factory, redis, [k1], identity=identity)
    a = Browser(ngx)
    a.view()
    a.login(uid='jane', email='Jane@Example.com')
    assert a.aid
    settle(ngx)
    pid_before = resolve(ngx, a.aid)
    assert pid_before and pid_before != a.aid, pid_before
    old_cookie, aid_a = a.cookie, a.aid

    rotate(ngx, [k2, k1])

    # A's cookie, signed with K1, is kept after the rotation (and re-signed
    # with K2 by the refresh: the new file is in use)
    st0 = ngx.status()
    r = a.view()
    assert r.status == 200, r
    d = ngx.status().delta(st0)
    assert a.aid == aid_a, (old_cookie, a.cookie)
    assert d.cookies('kept') == 1 and d.cookies('forged') == 0, d
    assert a.cookie != old_cookie, 'cookie not re-signed with the new key'

    b = Browser(ngx)
    b.view()
    b.login(uid='jane', email='Jane@Example.com')
    assert b.aid and b.aid != aid_a
    settle(ngx)
    return ngx, k1, k2, a, b, pid_before


def test_rotation_with_identity_file_keeps_one_profile(nginx_factory,
                                                       redis_server):
    ident = h.new_key()
    ngx, k1, k2, a, b, pid_before = _jane_after_rotation(
        nginx_factory, redis_server, ident)

    pid = idx_by(ngx, ident, 'email', 'jane@example.com')
    assert pid == pid_before, (pid, pid_before)
    assert idx_by(ngx, ident, 'user_id', 'jane') == pid
    assert resolve(ngx, a.aid) == pid and resolve(ngx, b.aid) == pid, (
        resolve(ngx, a.aid), resolve(ngx, b.aid))
    # the names are keyed with the identity file's line, never K1 or K2
    assert idx_keys(ngx) == names(ident), idx_keys(ngx)
    for line in (k1, k2):
        assert idx_by(ngx, line, 'email', 'jane@example.com') is None
    known = check_graph(ngx)
    assert list(known) == [pid], known
    assert {'anonymous_id:' + a.aid, 'anonymous_id:' + b.aid} | names(
        ident) <= members(ngx, pid), members(ngx, pid)
    assert 'no cdp_identity_secret_file' not in ngx.log_tail(100000)


def test_rotation_without_identity_file_gives_two_profiles(nginx_factory,
                                                           redis_server):
    """The documented behaviour without the directive (and the control
    that the test above can fail): the new first line re-keys Jane."""
    ngx, k1, k2, a, b, pid_before = _jane_after_rotation(
        nginx_factory, redis_server, None)

    p1 = idx_by(ngx, k1, 'email', 'jane@example.com')
    p2 = idx_by(ngx, k2, 'email', 'jane@example.com')
    assert p1 == pid_before, (p1, pid_before)
    assert p2 and p2 != p1, (p1, p2)
    assert resolve(ngx, a.aid) == p1 and resolve(ngx, b.aid) == p2
    assert idx_keys(ngx) == names(k1) | names(k2), idx_keys(ngx)
    assert len(check_graph(ngx)) == 2
    # the reload with two keys and no identity file warned
    assert [l for l in ngx.log_tail(100000).splitlines()
            if WARNING in l and '[warn]' in l], ngx.log_tail()


@pytest.mark.parametrize('where', ['after', 'before'])
def test_identity_file_names_identifiers_with_one_secret_key(
        nginx_factory, redis_server, where):
    secret, ident = h.new_key(), h.new_key()
    # blank lines and trailing whitespace are not part of the key
    ngx = start(nginx_factory, redis_server, [secret], identity=ident,
                where=where, identity_text='\n\n' + ident + ' \t\r\n\n')
    a = Browser(ngx)
    a.login(uid='jane', email='Jane@Example.com')
    settle(ngx)
    pid = idx_by(ngx, ident, 'email', 'jane@example.com')
    assert pid and resolve(ngx, a.aid) == pid
    assert idx_keys(ngx) == names(ident), idx_keys(ngx)
    assert idx_by(ngx, secret, 'email', 'jane@example.com') is None

    # another site on the same Redis and prefix, with a cdp_secret_file of
    # its own and the same identity file: the same names, one profile
    other = start(nginx_factory, redis_server, [h.new_key()],
                  identity=ident, where=where, prefix=ngx.prefix)
    b = Browser(other)
    b.login(uid='jane', email='Jane@Example.com')
    settle(other)
    assert resolve(ngx, b.aid) == pid, (resolve(ngx, b.aid), pid)
    assert idx_keys(ngx) == names(ident), idx_keys(ngx)
    assert list(check_graph(ngx)) == [pid]

    # signed pixel URLs still verify with the cdp_secret_file line, not
    # with the identity file's; the identity they carry is named with the
    # identity key
    def url(br, line, uid):
        exp, sig = h.pixel_sig(line, uid=uid)
        return br.view(urllib.parse.urlencode(
            {'url': 'https://shop.example/newsletter', 'uid': uid,
             'exp': exp, 'sig': sig}))

    st0 = ngx.status()
    wrong, right = Browser(ngx), Browser(ngx)
    url(wrong, ident, 'mail-1')
    url(right, secret, 'mail-2')
    settle(ngx)
    d = ngx.status().delta(st0)
    assert d.c('cdp_pixel_identity_total{result="bad_signature"}') == 1, d
    assert resolve(ngx, wrong.aid) == wrong.aid
    assert idx_by(ngx, ident, 'user_id', 'mail-1') is None
    p = idx_by(ngx, ident, 'user_id', 'mail-2')
    assert p and resolve(ngx, right.aid) == p
    assert idx_by(ngx, secret, 'user_id', 'mail-2') is None
