"""make deb: the Debian package libnginx-mod-http-cdp (scripts/mkdeb.sh,
packaging/deb/), installed with dpkg -i on this machine's own nginx
(/usr/sbin/nginx, /etc/nginx), used, removed and purged.

The package is built from the module of `make build` into the session's
temporary directory (scripts/mkdeb.sh --outdir; make deb does the same
into dist/).  Installing it is a change to the machine: it needs root, and
the test leaves the machine as it found it (dpkg -P in a finally).  The
system nginx service is never started, stopped or reloaded by the test;
only `nginx -t` reads the system configuration (the package's postinst
asks a running nginx to reload, as Debian's module packages do).  A
separate nginx of the harness, with its own prefix and conf, loads the
installed module and takes a pixel hit.
"""

import fcntl
import fnmatch
import glob
import gzip
import os
import re
import shutil
import subprocess
import time

import pytest

import cdp_harness as h

PKG = 'libnginx-mod-http-cdp'
SO = '/usr/lib/nginx/modules/ngx_http_cdp_module.so'
AVAILABLE = '/usr/share/nginx/modules-available/mod-http-cdp.conf'
ENABLED = '/etc/nginx/modules-enabled/50-mod-http-cdp.conf'
STORE = '/usr/share/ngx-cdp/store'
DOC = '/usr/share/doc/' + PKG
EXAMPLE = DOC + '/examples/cdp.conf'
LOAD_LINE = 'load_module modules/ngx_http_cdp_module.so;'
SYSTEM_NGINX = '/usr/sbin/nginx'

# one run of this test at a time on a machine (dpkg, /etc/nginx)
LOCK = '/tmp/cdp-deb-test.lock'

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which('dpkg'),
    reason='installs a package with dpkg -i: needs root on Debian')


def run(args, timeout=120, **kw):
    p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=timeout, **kw)
    return p.returncode, p.stdout.decode('utf-8', 'replace')


def dpkg(*args):
    """dpkg ARGS, waiting (2 min at most) while apt or another dpkg holds
    its lock."""
    deadline = time.monotonic() + 120
    while True:
        rc, out = run(['dpkg'] + list(args), env=dict(
            os.environ, DEBIAN_FRONTEND='noninteractive'))
        if rc == 0 or 'lock' not in out or time.monotonic() > deadline:
            return rc, out
        time.sleep(1)


def status():
    """The package's dpkg status ('install ok installed', 'deinstall ok
    config-files', ...), '' when dpkg does not know it."""
    rc, out = run(['dpkg-query', '-W', '-f', '${Status}', PKG])
    return out.strip() if rc == 0 else ''


def system_nginx_t():
    """`nginx -t` of the system configuration: (rc, output)."""
    return run([SYSTEM_NGINX, '-t'], timeout=60)


def system_nginx_dump():
    rc, out = run([SYSTEM_NGINX, '-T'], timeout=60)
    assert rc == 0, 'nginx -T:\n' + out
    return out


def exists(path):
    return os.path.lexists(path)


def dpkg_filters():
    """dpkg's path-exclude / path-include options (slim images leave out
    /usr/share/doc), in the order dpkg reads them."""
    files = ['/etc/dpkg/dpkg.cfg'] + sorted(
        glob.glob('/etc/dpkg/dpkg.cfg.d/*'))
    out = []
    for fn in files:
        try:
            with open(fn) as f:
                for line in f:
                    m = re.match(r'^\s*(?:--)?(path-exclude|path-include)'
                                 r'[=\s]\s*(\S+)', line)
                    if m:
                        out.append((m.group(1), m.group(2)))
        except OSError:
            pass
    return out


def installed_by_dpkg(path, filters):
    """Whether dpkg installs this path of a package (the last matching
    filter decides)."""
    keep = True
    for kind, pattern in filters:
        if fnmatch.fnmatchcase(path, pattern):
            keep = kind == 'path-include'
    return keep


@pytest.fixture(scope='module')
def deb(workdir, module_path):
    """The package built from the module of make build: (path, fields)."""
    out = os.path.join(workdir, 'deb')
    rc, text = run(['bash', os.path.join(h.MAIN, 'scripts', 'mkdeb.sh'),
                    '--outdir', out], timeout=300)
    assert rc == 0, 'scripts/mkdeb.sh failed:\n' + text
    path = text.strip().splitlines()[-1]
    assert os.path.isfile(path) and path.startswith(out), text
    rc, info = run(['dpkg-deb', '-f', path])
    assert rc == 0, info
    fields = {}
    for line in info.splitlines():
        if line[:1] not in (' ', '\t') and ':' in line:
            k, _, v = line.partition(':')
            fields[k] = v.strip()
    return path, fields


def built_abi():
    with open(os.path.join(h.MAIN, 'build', 'debian',
                           'libnginx-mod.abisubstvars')) as f:
        m = re.search(r'^nginx:abi=\s*(\S+)', f.read(), re.M)
    assert m, 'no nginx:abi= in build/debian/libnginx-mod.abisubstvars'
    return m.group(1)


def depends_names(depends):
    return [d.split('(')[0].split('|')[0].strip()
            for d in depends.split(',')]


def test_deb_control_and_contents(deb):
    path, f = deb
    with open(os.path.join(h.MAIN, 'ngx_cdp_module',
                           'ngx_http_cdp_module.h')) as fh:
        version = re.search(r'#define NGX_CDP_VERSION\s+"([^"]+)"',
                            fh.read()).group(1)
    arch = run(['dpkg', '--print-architecture'])[1].strip()
    assert f['Package'] == PKG
    assert f['Version'] == version + '-1', f
    assert f['Architecture'] == arch, f
    assert os.path.basename(path) == '%s_%s-1_%s.deb' % (PKG, version, arch)
    assert f['Section'] == 'httpd' and f['Multi-Arch'] == 'foreign', f

    # the exact ABI of the nginx-dev tree, first, as Debian's modules have
    # it, then the libraries the module links (dpkg-shlibdeps)
    names = depends_names(f['Depends'])
    abi = built_abi()
    assert names[0] == abi, f['Depends']
    for lib in ('libc6', 'libhiredis0.14', 'libmaxminddb0', 'libssl3',
                'libjansson4'):
        assert lib in names, (lib, f['Depends'])
    assert re.search(r'libhiredis0\.14 \(>= [^)]+\)', f['Depends']), f
    # this machine's nginx is what the package was built for
    rc, provides = run(['dpkg-query', '-W', '-f',
                        '${Status} ${Package}: ${Provides}\n'])
    assert any(l.startswith('install ok installed')
               and re.search(r'[ ,]%s(,|$| )' % re.escape(abi), l)
               for l in provides.splitlines()), (
        'no installed package provides %s: %s' % (abi, provides))

    rc, listing = run(['dpkg-deb', '-c', path])
    assert rc == 0, listing
    files = {}
    for line in listing.splitlines():
        perm, owner, _size, _d, _t, name = line.split(None, 5)
        files[name.lstrip('.')] = (perm, owner)
    for name, perm in [
            (SO, '-rw-r--r--'), (AVAILABLE, '-rw-r--r--'),
            (STORE + '/cdp.lua', '-rw-r--r--'),
            (STORE + '/admin.lua', '-rw-r--r--'),
            (STORE + '/load.sh', '-rwxr-xr-x'),
            (STORE + '/migrate.lua', '-rw-r--r--'),
            (STORE + '/migrate.sh', '-rwxr-xr-x'),
            ('/usr/bin/cdp-sign-url', '-rwxr-xr-x'),
            ('/usr/bin/cdp-id-hash', '-rwxr-xr-x'),
            ('/usr/bin/cdp-key', '-rwxr-xr-x'),
            (DOC + '/README.md.gz', '-rw-r--r--'),
            (DOC + '/store/README.md.gz', '-rw-r--r--'),
            (DOC + '/store/ADMIN.md.gz', '-rw-r--r--'),
            (DOC + '/docs/directives.md.gz', '-rw-r--r--'),
            (DOC + '/docs/api.md.gz', '-rw-r--r--'),
            (DOC + '/docs/privacy.md.gz', '-rw-r--r--'),
            (DOC + '/copyright', '-rw-r--r--'),
            (DOC + '/changelog.Debian.gz', '-rw-r--r--'),
            (EXAMPLE, '-rw-r--r--')]:
        assert name in files, '%s not in the package:\n%s' % (name, listing)
        assert files[name] == (perm, 'root/root'), (name, files[name])
    if os.path.exists(os.path.join(h.MAIN, 'scripts', 'cdp-admin')):
        assert files.get('/usr/bin/cdp-admin') == ('-rwxr-xr-x', 'root/root')
    # the symlink is made by postinst, not shipped; nothing under /etc
    assert not [n for n in files if n.startswith('/etc')], files

    rc, ctl = run(['dpkg-deb', '-I', path])
    for script in ('postinst', 'prerm', 'postrm', 'md5sums'):
        assert re.search(r'\b%s\b' % script, ctl), ctl


@pytest.fixture
def machine_lock():
    with open(LOCK, 'a') as f:
        deadline = time.monotonic() + 600
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail('%s held for 10 min by another run' % LOCK)
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def test_deb_install_pixel_remove(deb, machine_lock, redis_server,
                                  nginx_factory, monkeypatch):
    path, fields = deb
    before = status()
    if before and 'config-files' not in before and 'not-installed' \
            not in before:
        pytest.skip('%s is installed on this machine (%s): the test would '
                    'replace and purge it' % (PKG, before))
    rc, out = system_nginx_t()
    assert rc == 0, ('the system configuration fails nginx -t before the '
                     'package is installed:\n' + out)
    assert not exists(ENABLED), ENABLED

    try:
        # -- install --------------------------------------------------------
        rc, out = dpkg('-i', path)
        assert rc == 0, 'dpkg -i:\n' + out
        assert status() == 'install ok installed', status()

        # -- the files landed -------------------------------------------------
        assert os.path.islink(ENABLED), ENABLED + ' is not a symlink'
        assert os.readlink(ENABLED) == AVAILABLE, os.readlink(ENABLED)
        with open(AVAILABLE) as f:
            assert f.read().strip() == LOAD_LINE
        with open(SO, 'rb') as f:
            assert f.read(4) == b'\x7fELF'
        for p in (STORE + '/cdp.lua', STORE + '/admin.lua',
                  STORE + '/migrate.lua'):
            assert os.path.isfile(p), p
        for p in (STORE + '/load.sh', STORE + '/migrate.sh',
                  '/usr/bin/cdp-sign-url',
                  '/usr/bin/cdp-id-hash', '/usr/bin/cdp-key'):
            assert os.access(p, os.X_OK), p
        if os.path.exists(os.path.join(h.MAIN, 'scripts', 'cdp-admin')):
            assert os.access('/usr/bin/cdp-admin', os.X_OK)
        # the docs, unless this dpkg is told to leave them out
        filters = dpkg_filters()
        docs = [p for p in (DOC + '/copyright', EXAMPLE,
                            DOC + '/README.md.gz', DOC + '/store/README.md.gz',
                            DOC + '/store/ADMIN.md.gz',
                            DOC + '/docs/privacy.md.gz',
                            DOC + '/changelog.Debian.gz')
                if installed_by_dpkg(p, filters)]
        for p in docs:
            if p.endswith('.gz'):
                with gzip.open(p, 'rt') as f:
                    assert f.read(), p
            else:
                assert os.path.isfile(p), p
        if DOC + '/changelog.Debian.gz' in docs:
            with gzip.open(DOC + '/changelog.Debian.gz', 'rt') as f:
                assert f.readline().startswith(
                    '%s (%s) ' % (PKG, fields['Version']))
        with open(os.path.join(h.MAIN, 'store', 'cdp.lua'), 'rb') as a, \
                open(STORE + '/cdp.lua', 'rb') as b:
            assert a.read() == b.read()
        # every file as the package's md5sums say
        rc, out = run(['dpkg', '--verify', PKG])
        assert rc == 0 and not out.strip(), 'dpkg --verify:\n' + out

        # the tools run from /usr/bin
        secret = os.path.join(redis_server.dir, 'tool.secret')
        with open(secret, 'w') as f:
            f.write(h.new_key() + '\n')
        rc, out = run(['/usr/bin/cdp-id-hash', secret, 'email',
                       'Jane@Example.com'])
        assert rc == 0 and re.fullmatch(r'[0-9a-f]{64}\n', out), out
        rc, out = run(['/usr/bin/cdp-sign-url', secret,
                       'https://shop.example/p.gif', 'uid=u-1'])
        assert rc == 0 and re.search(r'[?&]sig=[0-9a-f]{64}', out), out

        # -- the system nginx loads it through modules-enabled -------------
        rc, out = system_nginx_t()
        assert rc == 0, 'nginx -t with the module enabled:\n' + out
        assert LOAD_LINE in system_nginx_dump(), \
            'nginx -T does not show the modules-enabled load_module line'

        # -- a separate nginx with the installed module and the example
        #    conf: a pixel hit stored in Redis ------------------------------
        monkeypatch.setattr(h, 'MODULE', SO)
        n = nginx_factory(redis_server, start=False, redis_line='',
                          secret_line='', cookie_line='', consent_line='')
        if exists(EXAMPLE):
            with open(EXAMPLE) as f:
                example = f.read()
        else:                           # left out by a path-exclude
            rc, example = run(
                ['sh', '-c', 'dpkg-deb --fsys-tarfile "$1" | tar -xOf - "$2"',
                 'sh', path, '.' + EXAMPLE])
            assert rc == 0, example
        assert '127.0.0.1:6379' in example and '/etc/nginx/cdp.secret' \
            in example, 'the example conf changed: adapt this test'
        conf = os.path.join(n.dir, 'cdp.conf')
        with open(conf, 'w') as f:
            f.write(example.replace('127.0.0.1:6379',
                                    '127.0.0.1:%d' % redis_server.port)
                    .replace('/etc/nginx/cdp.secret', n.secret_path))
        n.prefix = 'cdp'                # the example's prefix=
        n.parts['HTTP_EXTRA'] = 'include %s;' % conf
        n.start()
        with open(n.conf_path) as f:
            assert 'load_module %s;' % SO in f.read()

        r = n.hit('title=Deb')          # a browser's User-Agent (harness)
        assert r.status == 200 and r.body.startswith(b'GIF89a'), r
        cookies = [h.parse_set_cookie(c) for c in r.set_cookies()]
        aid = [v for name, v, _a in cookies if name == 'cdp_aid']
        assert aid and h.COOKIE_VALUE_RE.match(aid[0]), r.set_cookies()
        assert n.wait_xlen(1) == 1, (n.status(), n.log_tail())
        ev = n.events()[0]
        assert ev['type'] == 'page', ev
        assert ev['anonymousId'] == aid[0].split('.')[0], ev
        assert ev['properties'].get('title') == 'Deb', ev
        assert n.browser(ev['anonymousId']), 'no profile of the browser'
        n.stop()

        # -- remove: nginx keeps working without it -------------------------
        rc, out = dpkg('-r', PKG)
        assert rc == 0, 'dpkg -r:\n' + out
        assert status() in ('', 'deinstall ok config-files'), status()
        assert not exists(ENABLED), ENABLED + ' is still there after dpkg -r'
        enabled = [p for p in glob.glob('/etc/nginx/modules-enabled/*.conf')
                   if 'cdp' in os.path.realpath(p)]
        assert not enabled, enabled
        assert not exists(SO) and not exists(AVAILABLE)
        assert not exists('/usr/bin/cdp-sign-url')
        rc, out = system_nginx_t()
        assert rc == 0, 'nginx -t after dpkg -r:\n' + out
        assert LOAD_LINE not in system_nginx_dump()

        # -- a reinstallation after a removal enables it again (Debian's
        #    50-mod-http-*.conf.removed convention) --------------------------
        rc, out = dpkg('-i', path)
        assert rc == 0, 'dpkg -i again:\n' + out
        assert os.readlink(ENABLED) == AVAILABLE
        assert not exists(ENABLED + '.removed')
        rc, out = system_nginx_t()
        assert rc == 0, 'nginx -t after the reinstallation:\n' + out

        # -- purge: nothing left ------------------------------------------------
        rc, out = dpkg('-P', PKG)
        assert rc == 0, 'dpkg -P:\n' + out
        assert status() in ('', 'unknown ok not-installed'), status()
        assert not exists(ENABLED) and not exists(ENABLED + '.removed')
        assert not exists(STORE) and not exists(DOC)
        rc, out = system_nginx_t()
        assert rc == 0, 'nginx -t after dpkg -P:\n' + out
    finally:
        # as the machine was: not installed, no link, whatever failed above
        if status():
            dpkg('-P', PKG)
        for p in (ENABLED, ENABLED + '.removed'):
            if os.path.islink(p) and not os.path.exists(
                    os.path.realpath(p)):
                os.unlink(p)
