"""scripts/cdp-admin, the admin API's command line, run as a subprocess
against the real nginx with the module and a real Redis (the setup of
test_admin.py: bearer tokens of every role in cdp_admin_tokens, people
made by pixel hits and a login through cdp_identify).

Checked: read, export, erase (its receipt, the person gone after),
unsuppress, audit, segments; the token from a file and from the
environment, never from the command line (--token refused), never printed;
a wrong token is exit 1 with the API's 401, no server exit 3, bad usage
exit 2; --json prints the API's JSON; identifiers from stdin; the
confirmation of an erasure on a terminal; HTTPS with --insecure and
--cacert.
"""

import hashlib
import json
import os
import pty
import re
import secrets
import select
import shutil
import subprocess
import time

import pytest

import cdp_harness as h
import cdp_shard as cs


SCRIPT = os.path.join(h.MAIN, 'scripts', 'cdp-admin')

TOKENS = {
    'marketer': 'mkt-' + secrets.token_urlsafe(24),
    'privacy': 'prv-' + secrets.token_urlsafe(24),
    'admin': 'adm-' + secrets.token_urlsafe(24),
}
WRONG_TOKEN = 'nope-' + secrets.token_urlsafe(24)

LOCATIONS = """\
location = /p.gif   { cdp_pixel; }
        location = /status  { cdp_status; }
        location /login     { cdp_identify on;
                              proxy_pass http://127.0.0.1:@BPORT@; }
        location /admin/    { cdp_admin; }"""

SEGMENTS = """
    cdp_segment viewers 'events >= 1';
    cdp_segment big 'events >= 1000';
"""

RECEIPT_RE = re.compile(r'^r-[0-9a-f]{16}$')
HEX64_RE = re.compile(r'^[0-9a-f]{64}$')


def write_tokens(path):
    with open(path, 'w') as f:
        f.write('# the tests\' admin tokens: ROLE SHA256HEX\n')
        for role, tok in TOKENS.items():
            f.write('%s %s\n' % (role,
                                 hashlib.sha256(tok.encode()).hexdigest()))


def start(nginx_factory, redis, workdir, http_extra='', sink=None, **kw):
    bport = h.free_port()
    tokens = os.path.join(workdir, 'tokens-%s' % secrets.token_hex(4))
    write_tokens(tokens)
    return nginx_factory(
        redis,
        http_extra=(h.IDENTIFY_BACKEND.replace('@BPORT@', str(bport))
                    + 'cdp_phone_country_code 49;\n'
                    + '    cdp_admin_tokens %s;\n' % tokens
                    + SEGMENTS
                    + http_extra),
        locations=(LOCATIONS.replace('@BPORT@', str(bport))
                   + (h.DEST_LOCATION.replace('@SINKPORT@', str(sink.port))
                      if sink else '')), **kw)


@pytest.fixture
def ngx(nginx_factory, redis_server, workdir):
    return start(nginx_factory, redis_server, workdir)


def url_of(ngx):
    return 'http://127.0.0.1:%d/admin' % ngx.port


# --------------------------------------------------------------------------
# running the script

class Run:
    def __init__(self, rc, out, err):
        self.rc, self.out, self.err = rc, out, err

    def json(self):
        return json.loads(self.out)

    def __repr__(self):
        return '<rc %d\nstdout: %s\nstderr: %s>' % (self.rc, self.out[:3000],
                                                    self.err[:3000])


def clean_env(**kw):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith('CDP_ADMIN_')}
    env.update(kw)
    return env


def run(args, env=None, stdin=None, rc=0, timeout=60):
    """scripts/cdp-admin ARGS; stdin is not a terminal (text, or
    /dev/null).  No token of the tests ever shows in its output."""
    p = subprocess.run([SCRIPT] + list(args), env=env or clean_env(),
                       input=(stdin or '').encode(),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout)
    r = Run(p.returncode, p.stdout.decode('utf-8', 'replace'),
            p.stderr.decode('utf-8', 'replace'))
    for tok in list(TOKENS.values()) + [WRONG_TOKEN]:
        assert tok not in r.out and tok not in r.err, ('token printed', r)
    if rc is not None:
        assert r.rc == rc, r
    return r


@pytest.fixture
def tokfile(tmp_path):
    """A file of the role's token, mode 600."""
    def make(role='privacy', text=None):
        p = tmp_path / ('token-%s-%s' % (role, secrets.token_hex(3)))
        p.write_text(text if text is not None else TOKENS[role] + '\n')
        os.chmod(str(p), 0o600)
        return str(p)
    return make


@pytest.fixture
def adm(ngx, tokfile):
    """cdp-admin with --url of this nginx and a role's --token-file."""
    def call(*args, role='privacy', **kw):
        return run(['--url', url_of(ngx), '--token-file', tokfile(role)]
                   + list(args), **kw)
    return call


# --------------------------------------------------------------------------
# people

class Person:
    def __init__(self, ngx, name):
        tag = secrets.token_hex(4)
        self.ngx = ngx
        self.uid = 'usr-%s-%s' % (name, tag)
        self.email = '%s.%s@example.com' % (name, tag)
        self.phone = '+49301%s' % ''.join(
            str(secrets.randbelow(10)) for _ in range(6))
        self.browser = h.Browser(ngx)

    def build(self, views=2):
        b = self.browser
        for i in range(views):
            assert b.view('url=https://shop.example/v%d' % i).status == 200
        settle(self.ngx)
        r = b.login(uid=self.uid, email=self.email, phone=self.phone,
                    traits='{"plan":"pro"}')
        assert r.status == 200, r
        settle(self.ngx)
        self.aid = b.aid
        self.pid = h.idx(self.ngx, 'user_id', self.uid)
        assert self.pid, self.uid
        return self

    def events(self):
        """Their events in the stream (segment entries included)."""
        return [e for e in self.ngx.events()
                if e.get('anonymousId') == self.aid
                or e.get('userId') == self.uid]

    def hashed(self, type_):
        v = {'user_id': self.uid, 'email': self.email,
             'phone': self.phone}[type_]
        return '%s:%s' % (type_, h.ident_hash(self.ngx.keys[0], type_, v))


def settle(ngx):
    st = ngx.wait_settled()
    assert st.queue == 0, st


@pytest.fixture
def sam(ngx):
    return Person(ngx, 'sam').build()


# --------------------------------------------------------------------------
# read


def suppressed(ngx):
    """Every shard's copy of the suppression set."""
    c = ngx.rc()
    try:
        return [c.smembers(k) for k in ngx.shard_keys('suppressed')]
    finally:
        c.close()

def test_read_readable(ngx, adm, sam):
    r = adm('read', '--email', sam.email)
    lines = r.out.splitlines()
    assert lines[0].split() == ['profile', sam.pid], r
    assert RECEIPT_RE.match(lines[1].split()[1]), r
    # the identifiers as the API gives them: hashed, the browser's id
    for t in ('user_id', 'email', 'phone'):
        assert '  ' + sam.hashed(t) in lines, (t, r)
    assert '  anonymous_id:' + sam.aid in lines, r
    assert re.search(r'^user id +%s$' % re.escape(sam.uid), r.out, re.M), r
    assert re.search(r'^events +2 \(page views 2\)$', r.out, re.M), r
    assert re.search(r'^first seen +\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ$',
                     r.out, re.M), r
    assert re.search(r'^last seen +\d{4}-', r.out, re.M), r
    assert re.search(r'^segments +viewers$', r.out, re.M), r
    assert re.search(r'^  plan +pro$', r.out, re.M), r
    n = len(sam.events())
    assert n >= 3, n
    assert re.search(r'^recent events +%d \(newest first\)$' % n, r.out,
                     re.M), r
    assert re.search(r'^  \d{4}-\S+ \S+Z? +identify ', r.out, re.M), r
    assert re.search(r'^  .* page .*https://shop\.example/v1', r.out,
                     re.M), r
    assert r.err == '', r


@pytest.mark.parametrize('command', ['read', 'profile'])
def test_read_json_is_the_api_answer(ngx, adm, sam, command):
    by = {'--user-id': sam.uid, '--phone': sam.phone,
          '--anonymous-id': sam.aid, '--profile-id': sam.pid}
    for opt, v in by.items():
        j = adm(command, opt, v, '--json', role='marketer').json()
        assert j['profile_id'] == sam.pid, (opt, j)
        assert RECEIPT_RE.match(j['receipt']), j
        assert j['fields']['user_id'] == sam.uid, j
        assert sam.hashed('email') in j['identifiers'], j
    # --json before the command, too
    j = run(['--json', '--url', url_of(ngx), command, '--email', sam.email],
            env=clean_env(CDP_ADMIN_TOKEN=TOKENS['marketer'])).json()
    assert j['profile_id'] == sam.pid, j


def test_read_uses_post_identifiers_stay_out_of_the_access_log(ngx, adm,
                                                                sam):
    adm('read', '--email', sam.email)
    adm('export', '--email', sam.email)
    log = h.Nginx.read(ngx.access_log)
    assert '"POST /admin/profiles HTTP/1.1" 200' in log, log[-2000:]
    assert '"POST /admin/export HTTP/1.1" 200' in log, log[-2000:]
    assert sam.email not in log and 'example.com' not in log, log[-2000:]


def test_read_unknown_person_is_exit_1_with_the_404(ngx, adm):
    r = adm('read', '--email', 'nobody@example.net', rc=1)
    assert r.out == '', r
    assert r.err.strip() == ('cdp-admin: 404 not_found: no profile for this '
                             'identifier'), r
    # --json: the API's error as it is on stdout, the message on stderr
    r = adm('read', '--email', 'nobody@example.net', '--json', rc=1)
    assert r.json() == {'success': False, 'error': 'not_found',
                        'message': 'no profile for this identifier'}, r
    assert '404 not_found' in r.err, r
    # a value the API refuses: its field named
    r = adm('read', '--phone', 'not a number', rc=1)
    assert r.err.strip() == ('cdp-admin: 400 invalid_field (phone): this '
                             'identifier is not valid'), r


def test_identifier_from_stdin(ngx, adm, sam):
    j = adm('read', '--email', '-', '--json', stdin=sam.email + '\n').json()
    assert j['profile_id'] == sam.pid, j
    r = adm('read', '--email', '-', stdin='\n', rc=2)
    assert 'no value on stdin' in r.err, r
    r = adm('read', '--email', '-', stdin='a@example.com\nb@example.com\n',
            rc=2)
    assert 'one value' in r.err, r
    r = adm('erase', '--email', '-', '--user-id', '-', stdin='x\n', rc=2)
    assert 'stdin is read once' in r.err, r


# --------------------------------------------------------------------------
# export, erase, unsuppress, audit

def test_export_erase_unsuppress_audit(ngx, adm, sam, tmp_path):
    bob = Person(ngx, 'bob').build(views=1)
    t0 = int(time.time() * 1000) - 1000

    # export: the JSON to stdout as is ...
    j = adm('export', '--email', sam.email).json()
    assert [p['profile_id'] for p in j['profiles']] == [sam.pid], j
    n = len(sam.events())
    assert len(j['profiles'][0]['events']) == n, (n, j)
    # ... or to a file only its owner reads, with a summary
    out = str(tmp_path / 'export-sam.json')
    r = adm('export', '--user-id', sam.uid, '-o', out)
    assert os.stat(out).st_mode & 0o777 == 0o600
    with open(out) as f:
        exp = json.load(f)
    assert exp['profiles'][0]['profile_id'] == sam.pid, exp
    assert r.out.splitlines()[0] == ('wrote %s: 1 profile, %d events (mode '
                                     '600)' % (out, n)), r
    assert ('receipt  %s ' % exp['receipt']) in r.out, r
    assert sam.email not in r.out, r

    # erase: the receipt, the person gone, the other one left
    r = adm('erase', '--email', sam.email)
    receipt = r.out.splitlines()[0].split()[1]
    assert RECEIPT_RE.match(receipt), r
    assert re.search(r'^erased +1 profile, 4 identifiers, %d events$' % n,
                     r.out, re.M), r
    assert re.search(r'^suppressed +4 identifiers, 1 browser refused at '
                     r'the edge from now on$', r.out, re.M), r
    assert not h.idx(ngx, 'email', sam.email)
    assert not h.idx(ngx, 'user_id', sam.uid)
    assert not h.profile(ngx, sam.pid)
    assert [e for e in ngx.events() if e.get('anonymousId') == sam.aid] == []
    r = adm('read', '--email', sam.email, rc=1)
    assert '404 not_found' in r.err, r
    assert adm('read', '--email', bob.email,
               '--json').json()['profile_id'] == bob.pid

    # a second erasure finds nobody: said so; --json is the receipt
    r = adm('erase', '--user-id', sam.uid)
    assert re.search(r'^erased +nobody', r.out, re.M), r
    rec = adm('erase', '--user-id', sam.uid, '--phone', sam.phone,
              '--json').json()
    assert rec['profiles'] == 0 and RECEIPT_RE.match(rec['receipt']), rec
    assert rec['suppressed'] == 2, rec

    # the suppression set: a copy per shard, all equal
    assert len({frozenset(s) for s in suppressed(ngx)}) == 1
    assert len(suppressed(ngx)[0]) == 4, suppressed(ngx)[0]

    # unsuppress (on a cluster a saga, a call a shard: the same)
    rec = adm('unsuppress', '--email', sam.email, '--user-id', sam.uid,
              '--json').json()
    assert rec['removed'] == 2 and RECEIPT_RE.match(rec['receipt']), rec
    r = adm('unsuppress', '--anonymous-id', sam.aid, '--phone', sam.phone)
    assert re.search(r'^removed +2 entries from the suppression set$',
                     r.out, re.M), r
    r = adm('unsuppress', '--email', sam.email)
    assert re.search(r'^removed +0 entries', r.out, re.M), r
    left = suppressed(ngx)
    assert left == [set()] * ngx.shards, left

    # the audit trail: every one of them, hashed
    entries = adm('audit', '--since', str(t0), '--json').json()
    ops = [e['op'] for e in entries]
    assert ops == ['export', 'export', 'erase', 'read', 'read', 'erase',
                   'erase', 'unsuppress', 'unsuppress', 'unsuppress'], ops
    assert receipt in [e['receipt'] for e in entries if e['op'] == 'erase']
    r = adm('audit', '--since', '1h')
    lines = r.out.splitlines()
    assert lines[0].split() == ['at', 'op', 'role', 'receipt', 'profiles',
                                'identifiers', 'events', 'ids'], r
    erase_line = [ln for ln in lines if receipt in ln]
    assert len(erase_line) == 1, r
    assert re.match(r'^\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ +erase +privacy +%s '
                    r'+1 +4 +%d +email:%s\.\.\.$'
                    % (receipt, n, sam.hashed('email')[6:22]),
                    erase_line[0]), erase_line
    assert sam.email not in r.out and sam.uid not in r.out, r
    # since later: nothing
    r = adm('audit', '--since', str(int(time.time() * 1000) + 60000))
    assert r.out.startswith('no audit entries since '), r
    # the forms of --since
    for since in ('2d', '90m', '2020-01-01', '2020-01-01T00:00:00Z',
                  '2020-01-01T01:00:00+01:00', '0'):
        assert len(adm('audit', '--since', since, '--json').json()) \
            >= len(ops)
    r = adm('audit', '--since', 'yesterday', rc=2)
    assert '--since yesterday' in r.err, r
    assert len(adm('audit', '--all', '--json').json()) >= len(ops)


def test_erase_several_identifiers_and_from_stdin(ngx, adm):
    a, b = Person(ngx, 'ann').build(1), Person(ngx, 'ben').build(1)
    rec = adm('erase', '--json', '--email', '-', '--user-id', b.uid,
              stdin='%s\n%s\n' % (a.email, 'never.seen@example.org')).json()
    assert rec['profiles'] == 2, rec
    assert not h.idx(ngx, 'user_id', a.uid)
    assert not h.idx(ngx, 'user_id', b.uid)


def read_until(fd, want, timeout=10.0):
    buf = b''
    end = time.monotonic() + timeout
    while want not in buf and time.monotonic() < end:
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
    return buf


def run_on_tty(args, env, answer):
    """The script with a terminal as stdin: answers its question."""
    master, slave = pty.openpty()
    try:
        p = subprocess.Popen([SCRIPT] + args, env=env, stdin=slave,
                             stdout=subprocess.PIPE, stderr=slave)
        os.close(slave)
        slave = None
        asked = read_until(master, b'[y/N]')
        os.write(master, answer.encode() + b'\n')
        out, _ = p.communicate(timeout=30)
        rest = read_until(master, b'\n', 1.0)
        return p.returncode, asked.decode(), out.decode(), rest.decode()
    finally:
        if slave is not None:
            os.close(slave)
        os.close(master)


def test_erase_asks_on_a_terminal(ngx, sam):
    env = clean_env(CDP_ADMIN_URL=url_of(ngx),
                    CDP_ADMIN_TOKEN=TOKENS['privacy'])
    rc, asked, out, rest = run_on_tty(['erase', '--email', sam.email], env,
                                      'n')
    assert 'Erase everything held on the person named by email %s' \
        % sam.email in asked, asked
    assert rc == 2 and out == '', (rc, out, rest)
    assert 'not erased' in rest, rest
    assert h.idx(ngx, 'email', sam.email) == sam.pid

    rc, asked, out, rest = run_on_tty(['erase', '--email', sam.email], env,
                                      'y')
    assert rc == 0, (rc, out, rest)
    assert RECEIPT_RE.match(out.split()[1]), out
    assert not h.idx(ngx, 'email', sam.email)

    # --yes: no question
    b = Person(ngx, 'bea').build(1)
    master, slave = pty.openpty()
    try:
        p = subprocess.run([SCRIPT, 'erase', '--yes', '--user-id', b.uid],
                           env=env, stdin=slave, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=30)
    finally:
        os.close(slave)
        os.close(master)
    assert p.returncode == 0 and b'[y/N]' not in p.stderr, p
    assert not h.idx(ngx, 'user_id', b.uid)


# --------------------------------------------------------------------------
# the token

def test_token_from_file_and_from_environment(ngx, sam, tokfile):
    url = url_of(ngx)
    base = ['--url', url, 'read', '--email', sam.email, '--json']
    # CDP_ADMIN_TOKEN
    j = run(base, env=clean_env(CDP_ADMIN_TOKEN=TOKENS['marketer'])).json()
    assert j['profile_id'] == sam.pid
    # CDP_ADMIN_TOKEN_FILE, and CDP_ADMIN_URL
    j = run(['read', '--email', sam.email, '--json'], env=clean_env(
        CDP_ADMIN_URL=url, CDP_ADMIN_TOKEN_FILE=tokfile('marketer'))).json()
    assert j['profile_id'] == sam.pid
    # --token-file: its first non-empty line that is no comment; it wins
    # over the environment, also after the command
    f = tokfile(text='\n# the privacy officer\'s\n\n  %s  \r\nsecond\n'
                % TOKENS['privacy'])
    r = run(['read', '--email', sam.email, '--json', '--token-file', f],
            env=clean_env(CDP_ADMIN_URL=url, CDP_ADMIN_TOKEN=WRONG_TOKEN,
                          CDP_ADMIN_TOKEN_FILE='/nonexistent'))
    assert r.json()['profile_id'] == sam.pid and r.err == '', r
    # CDP_ADMIN_TOKEN wins over CDP_ADMIN_TOKEN_FILE
    r = run(base, env=clean_env(CDP_ADMIN_TOKEN=WRONG_TOKEN,
                                CDP_ADMIN_TOKEN_FILE=f), rc=1)
    assert '401 unauthorized' in r.err, r
    # a file others may read works, with a warning
    os.chmod(f, 0o644)
    r = run(['--token-file', f] + base)
    assert r.json()['profile_id'] == sam.pid
    assert 'can be read by other users (chmod 600 %s)' % f in r.err, r


def test_token_on_the_command_line_is_refused(ngx, sam):
    env = clean_env(CDP_ADMIN_URL=url_of(ngx),
                    CDP_ADMIN_TOKEN=TOKENS['privacy'])
    for args in (['--token', TOKENS['privacy'], 'read', '--email', sam.email],
                 ['read', '--email', sam.email,
                  '--token=' + TOKENS['privacy']],
                 ['read', '--tok', TOKENS['privacy'], '--email', sam.email]):
        r = run(args, env=env, rc=2)
        assert r.out == '', r
        assert r.err.startswith('cdp-admin: --token is refused: a token on '
                                'the command line is seen by every user'), r
        assert '--token-file FILE' in r.err and 'CDP_ADMIN_TOKEN' in r.err
    # after "--" it is a value, not an option (and no token is sent)
    r = run(['read', '--email', sam.email, '--', '--token'], env=env, rc=2)
    assert '--token is refused' not in r.err, r


def test_wrong_token_is_exit_1_with_the_401(ngx, sam, tokfile):
    f = tokfile(text=WRONG_TOKEN + '\n')
    r = run(['--url', url_of(ngx), '--token-file', f, 'read', '--email',
             sam.email], rc=1)
    assert r.out == '', r
    assert r.err.startswith('cdp-admin: 401 unauthorized: a valid bearer '
                            'token is required'), r
    r = run(['--url', url_of(ngx), '--token-file', f, '--json', 'audit'],
            rc=1)
    assert r.json() == {'success': False, 'error': 'unauthorized',
                        'message': 'a valid bearer token is required'}, r


def test_a_role_without_the_right_is_exit_1_with_the_403(ngx, adm, sam):
    for args in (['erase', '--email', sam.email],
                 ['export', '--email', sam.email],
                 ['unsuppress', '--email', sam.email], ['audit']):
        r = adm(*args, role='marketer', rc=1)
        assert r.err.strip() == ('cdp-admin: 403 forbidden: the token\'s '
                                 'role may not do this'), (args, r)
    assert h.idx(ngx, 'email', sam.email) == sam.pid
    r = adm('segments', role='privacy', rc=1)
    assert '403 forbidden' in r.err, r


# --------------------------------------------------------------------------
# usage and connection errors

def test_usage_errors_are_exit_2(ngx, tokfile, tmp_path):
    url = url_of(ngx)
    f = tokfile()
    cases = [
        (['--url', url, 'read', '--email', 'a@example.com'], 'no token'),
        (['--token-file', f, 'read', '--email', 'a@example.com'], 'no URL'),
        (['--url', url, '--token-file', str(tmp_path / 'none'), 'audit'],
         'cannot read the token file'),
        (['--url', url, '--token-file', tokfile(text='\n# none\n'), 'audit'],
         'holds no token'),
        (['--url', url, '--token-file', f, 'read'], 'name the person'),
        (['--url', url, '--token-file', f, 'read', '--email', 'a@x.org',
          '--user-id', 'u'], 'one identifier'),
        (['--url', url, '--token-file', f, 'unsuppress', '--profile-id',
          'p1'], 'unrecognized arguments'),
        (['--url', url, '--token-file', f, 'erase'], 'name the person'),
        (['--url', url, '--token-file', f, 'frobnicate'], 'invalid choice'),
        (['--url', 'ftp://x/admin', '--token-file', f, 'audit'],
         'want http:// or https://'),
        (['--url', url, '--token-file', f, 'segment', 'viewers', '--count',
          '0'], '--count: 1 to 1000'),
        ([], 'required'),
        (['--url', url, '--token-file', f, 'export', '--email', 'a@x.org',
          '-o', str(tmp_path / 'no' / 'such' / 'dir.json')],
         'cannot write'),
    ]
    for args, want in cases:
        r = run(args, rc=2)
        assert want in r.err, (args, r)
    # too many identifiers, before any request
    r = run(['--url', url, '--token-file', f, 'erase', '--yes']
            + ['--email=e%d@example.com' % i for i in range(101)], rc=2)
    assert 'at most 100' in r.err, r


def test_no_server_is_exit_3(tokfile):
    port = h.free_port()
    r = run(['--url', 'http://127.0.0.1:%d/admin' % port, '--token-file',
             tokfile(), 'read', '--email', 'a@example.com'], rc=3)
    assert r.err.strip() == ('cdp-admin: cannot reach 127.0.0.1:%d: '
                             'Connection refused' % port), r
    # a server that does not answer in time
    import socket
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    s.listen(1)
    try:
        r = run(['--url', 'http://127.0.0.1:%d/admin' % s.getsockname()[1],
                 '--token-file', tokfile(), '--timeout', '0.5', 'audit'],
                rc=3)
        assert 'no answer from 127.0.0.1:%d within 0.5 s' \
            % s.getsockname()[1] in r.err, r
    finally:
        s.close()


def test_not_the_admin_location_is_exit_1(ngx, adm, tokfile):
    # nginx's own 404 (no cdp_admin there): not the API's JSON
    r = run(['--url', 'http://127.0.0.1:%d/nothing' % ngx.port,
             '--token-file', tokfile(), 'audit'], rc=1)
    assert r.err.startswith('cdp-admin: 404 Not Found from '
                            'http://127.0.0.1:%d/nothing/audit (not an '
                            'answer of the admin API' % ngx.port), r


# --------------------------------------------------------------------------
# segments (marketer)

def test_segments_and_members(ngx, adm, sam):
    bob = Person(ngx, 'bob').build(views=1)
    segs = adm('segments', '--json', role='marketer').json()
    assert segs == [{'name': 'viewers', 'rule': 'events >= 1',
                     'members': 2},
                    {'name': 'big', 'rule': 'events >= 1000',
                     'members': 0}], segs
    r = adm('segments', role='marketer')
    assert r.out.splitlines() == ['name     members  rule',
                                  'viewers  2        events >= 1',
                                  'big      0        events >= 1000'], r

    r = adm('segment', 'viewers', '--fields', 'user_id,events',
            '--fields', 'trait.plan', role='marketer')
    lines = r.out.splitlines()
    assert lines[0].split() == ['profile_id', 'user_id', 'events',
                                'trait.plan'], r
    rows = sorted(ln.split() for ln in lines[1:-1])
    assert rows == sorted([[sam.pid, sam.uid, '2', 'pro'],
                           [bob.pid, bob.uid, '1', 'pro']]), r
    assert lines[-1] == '2 members', r

    j = adm('segment', 'viewers', '--json', '--fields', 'user_id',
            role='admin').json()
    assert j['segment'] == 'viewers' and j['cursor'] == '0', j
    assert sorted(m['fields']['user_id'] for m in j['members']) == sorted(
        [sam.uid, bob.uid]), j

    r = adm('segment', 'viewers', '--format', 'csv', '--fields',
            'user_id,events', role='marketer')
    rows = r.out.split('\r\n')
    assert rows[0] == 'profile_id,user_id,events' and rows[-1] == '', r
    assert sorted(rows[1:-1]) == sorted(['%s,%s,2' % (sam.pid, sam.uid),
                                         '%s,%s,1' % (bob.pid, bob.uid)]), r

    # page by page: --all gathers them, one CSV header
    r = adm('segment', 'viewers', '--format', 'csv', '--count', '1',
            '--all', '--fields', 'user_id', role='marketer')
    rows = r.out.split('\r\n')
    assert rows[0] == 'profile_id,user_id', r
    assert sorted(rows[1:-1]) == sorted(['%s,%s' % (sam.pid, sam.uid),
                                         '%s,%s' % (bob.pid, bob.uid)]), r
    r = adm('segment', 'viewers', '--format', 'ndjson', '--all',
            '--count', '1', role='marketer')
    assert sorted(json.loads(ln)['profile_id']
                  for ln in r.out.splitlines()) == sorted([sam.pid, bob.pid])

    r = adm('segment', 'nosuch', role='marketer', rc=1)
    assert r.err.strip() == ('cdp-admin: 404 unknown_segment (name): no '
                             'cdp_segment of this name'), r


def api_get(ngx, tail, role='marketer'):
    return h.one_request(ngx.port, 'GET', '/admin/' + tail,
                         headers={'Authorization': 'Bearer ' + TOKENS[role]})


def page_rows(fmt, r):
    """(cursor, [(profile id, its events)...]) of a page's answer."""
    assert r.status == 200, (r, r.body)
    if fmt == 'json':
        doc = json.loads(r.body)
        return doc['cursor'], [(m['profile_id'], m['fields'].get('events'))
                               for m in doc['members']]
    cursor = r.header('X-CDP-Cursor')
    if fmt == 'ndjson':
        assert r.header('Content-Type') == 'application/x-ndjson'
        return cursor, [(m['profile_id'], m['fields'].get('events'))
                        for m in map(json.loads, r.body.decode().split())]
    assert r.header('Content-Type').startswith('text/csv')
    lines = r.body.decode().split('\r\n')
    assert lines[0] == 'profile_id,events' and lines[-1] == '', lines
    return cursor, [tuple(ln.split(',')) for ln in lines[1:-1]]


def test_members_are_paged_over_the_shards(ngx):
    """GET segment, 2 members a page: a page goes on from shard to shard
    until it is full, its cursor "<shard>.<n>" followed to "0" gives
    every member once (json, ndjson and csv alike; on a cluster, a call a
    shard); GET segments counts every shard's set; a bad cursor is a 400
    naming it; each page audited."""
    # browsers until one of their shards has exactly one of them, and a
    # shard after it some: the page holding that one spans two shards
    aids, n = [], ngx.shards
    for _ in range(60):
        b = h.Browser(ngx)
        assert b.view().status == 200
        aids.append(b.aid)
        per = {}
        for a in aids:
            per[cs.shard_of(a, n)] = per.get(cs.shard_of(a, n), 0) + 1
        if len(aids) >= 12 and any(
                k == 1 and s < max(per) for s, k in per.items()):
            break
    else:
        pytest.fail('no shard with one browser among %d' % len(aids))
    settle(ngx)
    assert len(per) >= 4, per

    r = api_get(ngx, 'segments')
    assert r.status == 200, r.body
    assert {x['name']: x['members'] for x in json.loads(r.body)} == {
        'viewers': len(aids), 'big': 0}

    walked = 0
    for fmt in ('json', 'ndjson', 'csv'):
        cursor, pages = '0', []
        for _ in range(100):
            cursor, rows = page_rows(fmt, api_get(
                ngx, 'segment?name=viewers&count=2&fields=events&format=%s'
                '&cursor=%s' % (fmt, cursor)))
            walked += 1
            pages.append(rows)
            if cursor == '0':
                break
            assert re.match(r'^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$', cursor)
        ids = [pid for rows in pages for pid, _ in rows]
        assert sorted(ids) == sorted(aids), fmt
        assert {ev for rows in pages for _, ev in rows} == {'1'}
        # full pages but the last; one spans two shards
        assert all(len(rows) >= 2 for rows in pages[:-1]), pages
        assert any(len({cs.shard_of(pid, n) for pid, _ in rows}) > 1
                   for rows in pages), pages

    for bad in ('5', '%d.0' % n, '01.0', '1.01', '1.x', '1.', '.1', 'abc',
                '1.18446744073709551616', '-1'):
        r = api_get(ngx, 'segment?name=viewers&cursor=' + bad)
        j = json.loads(r.body)
        assert r.status == 400 and j['error'] == 'invalid_field' \
            and j['field'] == 'cursor', (bad, j)
    r = api_get(ngx, 'segment?name=viewers&cursor=%d.0' % (n - 1))
    assert r.status == 200, r.body

    audit = [f for _, f in ngx.rc().xrange('%s:audit' % ngx.prefix)]
    reads = [a for a in audit if a['op'] == 'segment_read']
    assert len(reads) == walked + 1
    assert sum(int(a['profiles']) for a in reads[:walked]) == 3 * len(aids)
    assert {a['ids'] for a in reads} == {'segment:viewers'}
    assert [a['op'] for a in audit].count('segments') == 1


# --------------------------------------------------------------------------
# destinations (admin)

def test_destinations_and_replay(nginx_factory, redis_server, workdir, sink,
                                 tokfile):
    ngx = start(nginx_factory, redis_server, workdir,
                http_extra='cdp_destination seg purpose=analytics '
                           'uri=/_dest/seg flush=50ms;\n',
                sink=sink)
    assert ngx
    base = ['--url', url_of(ngx), '--token-file', tokfile('admin')]
    ds = run(base + ['destinations', '--json']).json()
    assert [(d['name'], d['purpose'], d['format']) for d in ds] == [
        ('seg', 'analytics', 'segment')], ds
    r = run(base + ['destinations'])
    lines = r.out.splitlines()
    assert lines[0].split()[:3] == ['name', 'purpose', 'format'], r
    assert lines[1].split()[:3] == ['seg', 'analytics', 'segment'], r
    # (on a cluster a saga, a call a shard: the same)
    rec = run(base + ['replay', 'seg', '--json']).json()
    assert rec['destination'] == 'seg' and rec['replayed'] == 0, rec
    r = run(base + ['replay', 'seg'])
    assert re.search(r'^replayed +0 dead letters of seg', r.out, re.M), r
    r = run(base + ['replay', 'nope'], rc=1)
    assert r.err.strip() == ('cdp-admin: 404 unknown_destination '
                             '(destination): no cdp_destination of '
                             'this name'), r
    audit = run(['--url', url_of(ngx), '--token-file', tokfile('admin'),
                 'audit', '--json']).json()
    assert [(a['op'], a['ids'], a['events']) for a in audit] == [
        ('replay', ['destination:seg'], 0)] * 2, audit
    r = run(['--url', url_of(ngx), '--token-file', tokfile('privacy'),
             'destinations'], rc=1)
    assert '403 forbidden' in r.err, r


# --------------------------------------------------------------------------
# HTTPS

@pytest.mark.skipif(not shutil.which('openssl'), reason='no openssl CLI')
def test_https_insecure_and_cacert(nginx_factory, redis_server, workdir,
                                   tokfile, tmp_path):
    crt, key = str(tmp_path / 'c.pem'), str(tmp_path / 'k.pem')
    subprocess.run(['openssl', 'req', '-x509', '-newkey', 'ec',
                    '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
                    '-keyout', key, '-out', crt, '-days', '2',
                    '-subj', '/CN=localhost',
                    '-addext', 'subjectAltName=DNS:localhost'], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sport = h.free_port()
    ngx = start(nginx_factory, redis_server, workdir, http_extra=(
        'server { listen 127.0.0.1:%d ssl; ssl_certificate %s; '
        'ssl_certificate_key %s; location /admin/ { cdp_admin; } }'
        % (sport, crt, key)))
    assert ngx
    base = ['--token-file', tokfile(), '--json']
    url = 'https://localhost:%d/admin' % sport

    # the system's CAs do not know it
    r = run(['--url', url] + base + ['audit'], rc=3)
    assert 'cannot be verified' in r.err and '--insecure' in r.err, r
    # --insecure: a self-signed test setup
    assert run(['--url', url, '--insecure'] + base + ['audit']).json() == []
    # --cacert: trust it
    assert run(['--url', url, '--cacert', crt] + base
               + ['audit']).json() == []
    # plain HTTP to another host than this one: a warning (no answer here)
    r = run(['--url', 'http://192.0.2.1:9/admin', '--timeout', '0.3']
            + base + ['audit'], rc=3)
    assert 'is not HTTPS' in r.err, r
