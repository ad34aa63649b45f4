"""
Harness of the integration tests: a real redis-server and the real nginx
binary with the built module, both on free loopback ports under a temporary
directory.  No mocks.

Environment overrides: CDP_MODULE (path of ngx_http_cdp_module.so),
NGINX_BIN (default /usr/sbin/nginx), REDIS_SERVER (default redis-server),
CDP_KEEP_TMP=1 (keep the temporary directory for a post-mortem),
NGINX_WRAPPER (a command line nginx is started under, such as
"valgrind --log-file=/tmp/vg.%p.log": the workers are forked, so they run
under it too).
"""

import http.client
import http.server
import json
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import tempfile
import threading
import time

import redis


MAIN = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
MODULE = os.environ.get(
    'CDP_MODULE', os.path.join(MAIN, 'build', 'objs', 'ngx_http_cdp_module.so'))
NGINX = os.environ.get('NGINX_BIN', '/usr/sbin/nginx')
NGINX_WRAPPER = shlex.split(os.environ.get('NGINX_WRAPPER', ''))
REDIS_SERVER = os.environ.get('REDIS_SERVER', 'redis-server')

GIF_LEN = 43
MAX_AGE_400D = 400 * 86400
COOKIE_VALUE_RE = re.compile(r'^([0-9a-f]{32})\.([A-Za-z0-9_-]{16})$')
ISO_MS_RE = re.compile(r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$')

# what makes a run fail, as in nginx's own test suite
LOG_PROBLEM_RE = re.compile(r'\[alert\]|\[emerg\]|exited on signal')

DROP_REASONS = ('malformed', 'too_large', 'queue_full', 'redis_down',
                'redis_error', 'erased')
COOKIE_RESULTS = ('new', 'kept', 'forged', 'malformed')


# what the test clients send as User-Agent unless a test gives its own
BROWSER_UA = ('Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 '
              '(KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36')


def new_key():
    """A secret key line as `openssl rand -hex 32` makes it."""
    return secrets.token_hex(32)


_handed_out = set()


def free_port():
    """A loopback TCP port nobody listens on (never the same one twice)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(('127.0.0.1', 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError('no free port')


def wait_until(fn, timeout=5.0, interval=0.02):
    """Polls fn() until it returns something truthy or the deadline passes;
    returns the last value (falsy on timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


def port_open(port, host='127.0.0.1'):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def pid_alive(pid):
    try:
        with open('/proc/%d/stat' % pid) as f:
            state = f.read().rsplit(')', 1)[1].split()[0]
        return state != 'Z'
    except (OSError, IndexError):
        return False


def children(ppid):
    """Live child processes of ppid (scans /proc)."""
    out = []
    for name in os.listdir('/proc'):
        if not name.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % name) as f:
                fields = f.read().rsplit(')', 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == ppid and fields[0] != 'Z':
            out.append(int(name))
    return sorted(out)


# --------------------------------------------------------------------------
# HTTP: http.client, so that query strings go out byte for byte (requests
# would re-quote "%zz").

class Resp:
    def __init__(self, status, msg, body, elapsed):
        self.status = status
        self.msg = msg                  # http.client.HTTPMessage
        self.body = body
        self.elapsed = elapsed

    def header(self, name, default=None):
        return self.msg.get(name, default)

    def headers_all(self, name):
        return self.msg.get_all(name) or []

    def set_cookies(self):
        return self.headers_all('Set-Cookie')

    def __repr__(self):
        return '<Resp %s %r body=%d bytes>' % (
            self.status, dict(self.msg.items()), len(self.body))


class Client:
    """One HTTP/1.1 connection, kept alive (reopened when the server
    closes it)."""

    def __init__(self, port, host='127.0.0.1', timeout=5.0, ssl_context=None):
        self.host, self.port, self.timeout = host, port, timeout
        self.ssl_context = ssl_context
        self.conn = None

    def _connect(self):
        if self.ssl_context is not None:
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=self.timeout,
                context=self.ssl_context)
        return http.client.HTTPConnection(self.host, self.port,
                                          timeout=self.timeout)

    def request(self, method, target, headers=None, body=None, retry=True):
        headers = dict(headers or {})
        # a browser's, unless the test says otherwise: the module does not
        # track clients without one (bots, libraries: ngx_cdp_agent.c)
        if not any(k.lower() == 'user-agent' for k in headers):
            headers['User-Agent'] = BROWSER_UA
        for attempt in (0, 1):
            fresh = self.conn is None
            if fresh:
                self.conn = self._connect()
            t0 = time.monotonic()
            try:
                self.conn.request(method, target, body=body, headers=headers)
                r = self.conn.getresponse()
                data = r.read()
            except (ConnectionError, http.client.RemoteDisconnected,
                    http.client.BadStatusLine):
                self.close()
                # a keepalive connection the server closed meanwhile
                if attempt or fresh or not retry:
                    raise
                continue
            elapsed = time.monotonic() - t0
            if r.will_close:
                self.close()
            return Resp(r.status, r.msg, data, elapsed)

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def one_request(port, method, target, headers=None, body=None, host='127.0.0.1',
                ssl_context=None):
    """A request on a connection of its own, closed after."""
    h = dict(headers or {})
    h.setdefault('Connection', 'close')
    c = Client(port, host=host, ssl_context=ssl_context)
    try:
        return c.request(method, target, headers=h, body=body, retry=False)
    finally:
        c.close()


# --------------------------------------------------------------------------
# Parsing

def parse_set_cookie(header):
    """'n=v; A=1; Flag' -> (n, v, {'a': '1', 'flag': True}); attribute
    names lowercased."""
    parts = [p.strip() for p in header.split(';')]
    name, _, value = parts[0].partition('=')
    attrs = {}
    for p in parts[1:]:
        if not p:
            continue
        k, eq, v = p.partition('=')
        attrs[k.strip().lower()] = v.strip() if eq else True
    return name.strip(), value.strip(), attrs


def parse_status(text):
    """Prometheus text -> {'name{label="x"}': number}."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith('#'):
            continue
        m = re.match(r'^([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s+(\S+)', line)
        if not m:
            continue
        key = m.group(1) + (re.sub(r'\s+', '', m.group(2))
                            if m.group(2) else '')
        v = m.group(3)
        try:
            out[key] = int(v)
        except ValueError:
            out[key] = float(v)
    return out


class Status(dict):
    """Counters of /status with defaults of 0 for convenience."""

    def c(self, name):
        return self.get(name, 0)

    @property
    def accepted(self):
        return self.c('cdp_events_accepted_total')

    @property
    def stored(self):
        return self.c('cdp_events_stored_total')

    @property
    def queue(self):
        return self.c('cdp_queue_events')

    def dropped(self, reason=None):
        if reason is None:
            return sum(self.dropped(r) for r in DROP_REASONS)
        return self.c('cdp_events_dropped_total{reason="%s"}' % reason)

    def cookies(self, result):
        return self.c('cdp_cookies_total{result="%s"}' % result)

    def delta(self, before):
        """Counter differences since an earlier Status."""
        d = Status()
        for k in set(self) | set(before):
            d[k] = self.get(k, 0) - before.get(k, 0)
        return d


# --------------------------------------------------------------------------
# Redis

class RedisServer:
    def __init__(self, base_dir, password=None, unixsocket=False,
                 appendonly=False, extra_args=()):
        self.dir = tempfile.mkdtemp(prefix='redis-', dir=base_dir)
        self.port = free_port()
        self.password = password
        # appendonly: the data survives stop() and start() (a restart)
        self.appendonly = appendonly
        # more redis-server options, e.g. ('--enable-debug-command', 'local')
        self.extra_args = list(extra_args)
        self.socket_path = (os.path.join(self.dir, 'redis.sock')
                            if unixsocket else None)
        self.proc = None
        self.logfile = os.path.join(self.dir, 'redis.log')

    def args(self):
        a = [REDIS_SERVER, '--port', str(self.port), '--bind', '127.0.0.1',
             '--save', '', '--daemonize', 'no',
             '--dir', self.dir, '--logfile', self.logfile]
        a += (['--appendonly', 'yes', '--appendfsync', 'always']
              if self.appendonly else ['--appendonly', 'no'])
        if self.password:
            a += ['--requirepass', self.password]
        if self.socket_path:
            a += ['--unixsocket', self.socket_path, '--unixsocketperm', '777']
        return a + self.extra_args

    def client(self, db=0):
        return redis.Redis(host='127.0.0.1', port=self.port, db=db,
                           password=self.password, decode_responses=True,
                           socket_timeout=5, socket_connect_timeout=2)

    def ping(self):
        try:
            c = self.client()
            try:
                return c.ping()
            finally:
                c.close()
        except redis.RedisError:
            return False

    def start(self, timeout=10.0):
        self.proc = subprocess.Popen(self.args(), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        if not wait_until(lambda: self.proc.poll() is not None or self.ping(),
                          timeout, 0.02) or self.proc.poll() is not None:
            log = open(self.logfile).read() if os.path.exists(
                self.logfile) else ''
            self.stop()
            raise RuntimeError('redis-server did not start on port %d:\n%s'
                               % (self.port, log[-2000:]))
        return self

    def pause(self):
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self):
        os.kill(self.proc.pid, signal.SIGCONT)

    def kill(self):
        """SIGKILL, as a crash: no shutdown, no last write.  start() brings
        it back on the same port and directory (with appendonly, with what
        it acknowledged)."""
        p, self.proc = self.proc, None
        if p is None or p.poll() is not None:
            return
        p.kill()
        p.wait(10)

    def stop(self):
        p, self.proc = self.proc, None
        if p is None or p.poll() is not None:
            return
        try:
            os.kill(p.pid, signal.SIGCONT)
        except OSError:
            pass
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


# --------------------------------------------------------------------------
# nginx

CONF_TEMPLATE = """\
load_module @MODULE@;

daemon @DAEMON@;
master_process on;
worker_processes @WORKERS@;
error_log @DIR@/error.log info;
pid @DIR@/nginx.pid;
@USER@

events {
    worker_connections 4096;
}

http {
    client_body_temp_path @DIR@/client_body_temp;
    proxy_temp_path       @DIR@/proxy_temp;
    fastcgi_temp_path     @DIR@/fastcgi_temp;
    uwsgi_temp_path       @DIR@/uwsgi_temp;
    scgi_temp_path        @DIR@/scgi_temp;

    log_format cdp '$remote_addr "$request" $status aid=$cdp_anonymous_id';
    access_log @DIR@/access.log cdp;

    # room for the 8 KiB query of the pixel in the request line
    large_client_header_buffers 4 32k;

    @REDIS@
    @SECRET@
    @COOKIE@
    @CONSENT@
    @HTTP_EXTRA@

    server {
        listen 127.0.0.1:@PORT@;
        server_name localhost;

        @LOCATIONS@
        @SERVER_EXTRA@
    }
}
"""

DEFAULT_CONSENT = 'cdp_consent_default all;'

DEFAULT_LOCATIONS = """\
location = /p.gif  { cdp_pixel; }
        location = /p204   { cdp_pixel 204; }
        location = /status { cdp_status; }"""


class PidProc:
    """Popen's interface for a process that is not our child (a daemonised
    or re-executed nginx master), by its pid.  Its exit status is unknown:
    0 once it is gone."""

    def __init__(self, pid):
        self.pid = pid
        self.returncode = None

    def poll(self):
        if self.returncode is None and not pid_alive(self.pid):
            self.returncode = 0
        return self.returncode

    def wait(self, timeout=None):
        if not wait_until(lambda: self.poll() is not None,
                          1e9 if timeout is None else timeout, 0.02):
            raise subprocess.TimeoutExpired('nginx %d' % self.pid, timeout)
        return self.returncode

    def send_signal(self, sig):
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self):
        self.send_signal(signal.SIGTERM)

    def kill(self):
        self.send_signal(signal.SIGKILL)


class Nginx:
    """One nginx instance: its own prefix directory, conf, logs, port."""

    def __init__(self, base_dir, redis=None, *, prefix=None, keys=None,
                 redis_line=None, secret_line=None, cookie_line=None,
                 consent_line=None, http_extra='', server_extra='', locations=None, workers=2,
                 redis_params='', daemon=False):
        self.dir = tempfile.mkdtemp(prefix='nginx-', dir=base_dir)
        self.redis = redis
        self.port = free_port()
        self.prefix = prefix or 't' + secrets.token_hex(4)
        self.workers = workers
        # daemon on: the master is not our child (what a binary upgrade,
        # upgrade(), needs: nginx ignores USR2 while its parent is the
        # process that started it)
        self.daemon = daemon
        self.db = 0
        self.keys = list(keys) if keys else [new_key()]
        self.secret_path = os.path.join(self.dir, 'cdp.secret')
        self.write_secret(self.keys)
        if redis_line is None:
            redis_line = ('cdp_redis 127.0.0.1:%d prefix=%s%s;'
                          % (redis.port, self.prefix,
                             ' ' + redis_params if redis_params else '')
                          if redis is not None else '')
        self.parts = {
            'REDIS': redis_line,
            'SECRET': (secret_line if secret_line is not None
                       else 'cdp_secret_file %s;' % self.secret_path),
            'COOKIE': cookie_line if cookie_line is not None
            else 'cdp_cookie cdp_aid;',
            # the tests that are not about consent track everybody; ''
            # configures nothing (no consent at all, failing closed)
            'CONSENT': consent_line if consent_line is not None
            else DEFAULT_CONSENT,
            'HTTP_EXTRA': http_extra,
            'SERVER_EXTRA': server_extra,
            'LOCATIONS': locations if locations is not None
            else DEFAULT_LOCATIONS,
        }
        self.conf_path = os.path.join(self.dir, 'nginx.conf')
        self.error_log = os.path.join(self.dir, 'error.log')
        self.access_log = os.path.join(self.dir, 'access.log')
        self.proc = None
        self.started = False
        self.problems = []
        # error.log lines a test expects (a regex): not teardown problems
        self.expected_log_re = None
        # what counts as a problem in error.log (a test may be stricter)
        self.problem_re = LOG_PROBLEM_RE
        self._rc = None
        self._n_test = 0

    # -- configuration -----------------------------------------------------

    def write_secret(self, keys, path=None):
        with open(path or self.secret_path, 'w') as f:
            f.write(''.join(k + '\n' for k in keys))

    def render(self, d=None, **parts):
        d = d or self.dir
        p = dict(self.parts)
        for k, v in parts.items():
            p[k.upper()] = v
        text = CONF_TEMPLATE
        for k, v in p.items():
            text = text.replace('@%s@' % k, v)
        text = (text.replace('@MODULE@', MODULE)
                .replace('@WORKERS@', str(self.workers))
                .replace('@DAEMON@', 'on' if self.daemon else 'off')
                .replace('@USER@', 'user root;' if os.geteuid() == 0 else '')
                .replace('@PORT@', str(self.port))
                .replace('@DIR@', d))
        return text

    def normalize(self, out, *dirs):
        for d in sorted(set(dirs) | {self.dir}, key=len, reverse=True):
            out = out.replace(d, '<DIR>')
        return out.replace(MODULE, '<MODULE>')

    def test_config(self, **parts):
        """`nginx -t` on a conf rendered into a directory of its own (so its
        messages never reach the running instance's error.log).  Returns
        (rc, output with directories replaced by <DIR>, conf text)."""
        self._n_test += 1
        d = os.path.join(self.dir, 't%d' % self._n_test)
        os.makedirs(d)
        text = self.render(d, **parts)
        conf = os.path.join(d, 'nginx.conf')
        with open(conf, 'w') as f:
            f.write(text)
        p = subprocess.run([NGINX, '-t', '-p', d + '/', '-c', conf,
                            '-e', os.path.join(d, 'error.log')],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=30)
        out = p.stdout.decode('utf-8', 'replace')
        return p.returncode, self.normalize(out, d), text

    # -- process -----------------------------------------------------------

    def nginx_args(self):
        return [NGINX, '-p', self.dir + '/', '-c', self.conf_path,
                '-e', self.error_log]

    def write_conf(self, **parts):
        for k, v in parts.items():
            self.parts[k.upper()] = v
        with open(self.conf_path, 'w') as f:
            f.write(self.render())

    @property
    def pid_path(self):
        return os.path.join(self.dir, 'nginx.pid')

    def read_pid(self, path=None):
        try:
            with open(path or self.pid_path) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def start(self, timeout=10.0, wait_redis=True):
        """Starts nginx (again, after stop(): same directory, conf and
        logs)."""
        self.write_conf()
        self.out = open(os.path.join(self.dir, 'nginx.out'), 'ab')
        self._rc = None
        self.proc = subprocess.Popen(NGINX_WRAPPER + self.nginx_args(),
                                     stdin=subprocess.DEVNULL,
                                     stdout=self.out, stderr=subprocess.STDOUT)
        self.started = True
        if self.daemon:
            # the process started forks the master and exits
            launcher = self.proc
            try:
                launcher.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
            pid = launcher.returncode == 0 and wait_until(
                lambda: (lambda p: p if p and pid_alive(p) else None)(
                    self.read_pid()), timeout, 0.02)
            self.proc = PidProc(pid) if pid else launcher
        ok = wait_until(lambda: self.proc.poll() is not None
                        or port_open(self.port), timeout, 0.02)
        if not ok or self.proc.poll() is not None:
            rc = self.proc.poll()
            self.stop()
            # the test fails here; its [emerg] is not a teardown problem too
            self.started = False
            self.problems = []
            raise RuntimeError(
                'nginx did not start (exit %r):\n%s\n%s' % (
                    rc, self.read(os.path.join(self.dir, 'nginx.out')),
                    self.read(self.error_log)[-3000:]))
        if wait_redis and self.redis is not None:
            # Soft: give the workers a moment to connect (init_process), so
            # that the first hits of a test do not race the connection.
            wait_until(lambda: self.status().c(
                'cdp_redis_connects_total') >= self.workers, 3.0, 0.02)
        return self

    @property
    def master_pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def worker_pids(self):
        return children(self.proc.pid)

    def upgrade(self, timeout=10.0):
        """Binary upgrade on the fly (daemon only): USR2 to the master,
        which renames its pid file to nginx.pid.oldbin and starts a new
        master with the same binary; once the new master has its workers,
        QUIT to the old one.  Returns the old master's pid."""
        assert self.daemon, 'nginx ignores USR2 unless daemonised'
        old = self.proc.pid
        os.kill(old, signal.SIGUSR2)

        def new_master():
            if not os.path.exists(self.pid_path + '.oldbin'):
                return None
            pid = self.read_pid()
            return (pid if pid and pid != old
                    and len(children(pid)) == self.workers else None)
        new = wait_until(new_master, timeout, 0.05)
        assert new, ('USR2: no new master with %d workers within %.0f s '
                     '(oldbin %s, pid file %s)\n%s' % (
                         self.workers, timeout,
                         os.path.exists(self.pid_path + '.oldbin'),
                         self.read_pid(), self.log_tail()))
        os.kill(old, signal.SIGQUIT)
        gone = wait_until(lambda: not pid_alive(old), timeout, 0.05)
        assert gone, ('the old master %d did not exit within %.0f s of '
                      'SIGQUIT; its children: %s' % (old, timeout,
                                                     children(old)))
        self.proc = PidProc(new)
        return old

    def reload(self, wait=True, timeout=10.0):
        """nginx -s reload; with wait, until only new workers are left."""
        old = set(self.worker_pids())
        p = subprocess.run(self.nginx_args() + ['-s', 'reload'],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=30)
        assert p.returncode == 0, 'nginx -s reload: %s' % p.stdout.decode()
        if not wait:
            return old

        def done():
            now = set(self.worker_pids())
            return (not (now & old) and len(now) == self.workers) and now
        new = wait_until(done, timeout, 0.05)
        assert new, ('after reload, old workers %s still running (graceful '
                     'shutdown held up?); workers now: %s\n%s' % (
                         sorted(old & set(self.worker_pids())),
                         self.worker_pids(), self.log_tail()))
        return old

    def stop(self, timeout=5.0):
        """SIGQUIT (graceful), then SIGTERM / SIGKILL."""
        p = self.proc
        if p is None:
            return
        if p.poll() is not None:
            if self._rc is None:
                self._rc = p.returncode
                self.problems.append('nginx master exited by itself (rc %s) '
                                     'before the end of the test'
                                     % p.returncode)
            return
        p.send_signal(signal.SIGQUIT)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.problems.append(
                'nginx did not exit within %.0f s of SIGQUIT (graceful '
                'shutdown held up); workers: %s' % (timeout,
                                                    self.worker_pids()))
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        self._rc = p.returncode
        self.out.close()

    def log_problems(self):
        if not self.started:
            return []
        lines = [l for l in self.read(self.error_log).splitlines()
                 if self.problem_re.search(l)
                 and not (self.expected_log_re
                          and re.search(self.expected_log_re, l))]
        return lines

    def finish(self):
        """Stops nginx; returns the problems that fail the test."""
        self.stop()
        probs = list(self.problems)
        bad = self.log_problems()
        if bad:
            probs.append('error.log of %s has:\n  ' % self.dir
                         + '\n  '.join(bad[:20]))
        return probs

    @staticmethod
    def read(path):
        try:
            with open(path, 'rb') as f:
                return f.read().decode('utf-8', 'replace')
        except OSError:
            return ''

    def log_tail(self, n=3000):
        return self.read(self.error_log)[-n:]

    # -- HTTP --------------------------------------------------------------

    def client(self):
        return Client(self.port)

    def hit(self, query=None, path='/p.gif', cookie=None, headers=None,
            method='GET', body=None, client=None):
        """A request with exactly this query string and cookie (no cookie
        jar: tests control the Cookie header)."""
        target = path + ('?' + query if query is not None else '')
        h = dict(headers or {})
        if cookie is not None:
            h['Cookie'] = cookie
        if client is not None:
            return client.request(method, target, headers=h, body=body)
        return one_request(self.port, method, target, headers=h, body=body)

    def status(self):
        try:
            r = one_request(self.port, 'GET', '/status')
        except OSError:
            return Status()
        if r.status != 200:
            return Status()
        return Status(parse_status(r.body.decode('utf-8', 'replace')))

    # -- Redis side --------------------------------------------------------

    def rc(self):
        return self.redis.client(self.db)

    @property
    def stream(self):
        return self.prefix + ':events'

    def xlen(self):
        c = self.rc()
        try:
            return c.xlen(self.stream)
        except redis.RedisError:
            return -1
        finally:
            c.close()

    def events(self):
        """Parsed events of the stream, oldest first."""
        c = self.rc()
        try:
            entries = c.xrange(self.stream, '-', '+')
        finally:
            c.close()
        return [json.loads(fields['event']) for _id, fields in entries]

    def raw_events(self):
        c = self.rc()
        try:
            return [fields['event'] for _id, fields in
                    c.xrange(self.stream, '-', '+')]
        finally:
            c.close()

    def browser(self, aid):
        c = self.rc()
        try:
            return c.hgetall('%s:profile:%s' % (self.prefix, aid))
        finally:
            c.close()

    def wait_xlen(self, n, timeout=10.0):
        """Waits until XLEN >= n; returns the last XLEN seen."""
        last = [None]

        def f():
            last[0] = self.xlen()
            return last[0] >= n
        wait_until(f, timeout, 0.02)
        return last[0]

    def wait_settled(self, timeout=10.0):
        """Waits until every accepted event is acknowledged or dropped and
        the queues are empty; returns the last Status."""
        last = [Status()]

        def f():
            st = self.status()
            last[0] = st
            # every accepted event is stored, dropped after acceptance,
            # or a duplicate the store recognised
            return (st and st.queue == 0
                    and st.accepted <= st.stored + st.dropped('redis_down')
                    + st.dropped('redis_error') + st.dropped('queue_full')
                    + st.dropped('erased') + st.dropped('malformed')
                    + st.c('cdp_api_duplicates_total'))
        wait_until(f, timeout, 0.05)
        return last[0]


# --------------------------------------------------------------------------
# Geo: the test MaxMind DB (geo_db.pl, Debian's libmaxmind-db-writer-perl)

GEO_DB_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                             'geo_db.pl')


def build_geo_db(out, variant=None):
    """Writes the test GeoIP2-City database to out (variant 'alt': the
    198.51.100.0/24 network is AT / 9 / Vienna instead of DE / BE /
    Berlin).  Raises RuntimeError with perl's message on failure."""
    args = ['perl', GEO_DB_SCRIPT, out] + ([variant] if variant else [])
    p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=120)
    if p.returncode != 0 or not os.path.exists(out):
        raise RuntimeError('%s failed (rc %d):\n%s' % (
            ' '.join(args), p.returncode, p.stdout.decode('utf-8', 'replace')))
    return out


def cookie_of(resp, name='cdp_aid'):
    """The (value, attrs) of the response's Set-Cookie for name."""
    for h in resp.set_cookies():
        n, v, attrs = parse_set_cookie(h)
        if n == name:
            return v, attrs
    return None, None



# A backend that answers every request with the X-CDP-* headers its
# X-Test-* request headers ask for: the "login" of cdp_identify tests
# (@BPORT@ its port).
IDENTIFY_BACKEND = """
    server {
        listen 127.0.0.1:@BPORT@;
        location / {
            add_header X-CDP-User-Id $http_x_test_uid;
            add_header X-CDP-Email $http_x_test_email;
            add_header X-CDP-Phone $http_x_test_phone;
            add_header X-CDP-Traits $http_x_test_traits;
            add_header X-App-Id $http_x_test_app_id;
            return 200 "welcome\\n";
        }
    }
"""


class Browser:
    """A cookie jar of one: the cdp_aid cookie as the browser keeps it."""

    def __init__(self, ngx):
        self.ngx = ngx
        self.cookie = None

    def _keep(self, r):
        v, attrs = cookie_of(r)
        if v is not None:
            self.cookie = None if attrs.get('max-age') == '0' else v
        return r

    @property
    def aid(self):
        return self.cookie.split('.')[0] if self.cookie else None

    def view(self, query='url=https://shop.example/'):
        return self._keep(self.ngx.hit(
            query, cookie='cdp_aid=' + self.cookie if self.cookie else None))

    def login(self, path='/login', uid=None, email=None, phone=None,
              traits=None, **extra):
        """A request through IDENTIFY_BACKEND asking for these X-CDP-*
        headers (extra: more request headers)."""
        hd = dict(extra)
        for k, v in (('X-Test-Uid', uid), ('X-Test-Email', email),
                     ('X-Test-Phone', phone), ('X-Test-Traits', traits)):
            if v is not None:
                hd[k] = v
        if self.cookie:
            hd['Cookie'] = 'cdp_aid=' + self.cookie
        return self._keep(one_request(self.ngx.port, 'GET', path,
                                      headers=hd))


def aid_of(resp, name='cdp_aid'):
    v, _ = cookie_of(resp, name)
    m = COOKIE_VALUE_RE.match(v or '')
    return m.group(1) if m else None


def is_gif(resp):
    return (resp.status == 200 and len(resp.body) == GIF_LEN
            and resp.body.startswith(b'GIF89a'))


# --------------------------------------------------------------------------
# The consent cookie, signed here as the module signs it
# (docs/directives.md: cdp_consent_default; ngx_cdp_consent.h)

def consent_key(secret_line):
    import hashlib
    import hmac
    return hmac.new(secret_line.encode(), b'ngx_cdp consent cookie v1',
                    hashlib.sha256).digest()


def consent_cookie(secret_line, purposes, version='1', issued=None):
    """The value of a cdp_consent cookie signed with this secret line."""
    import base64
    import hashlib
    import hmac
    if issued is None:
        issued = int(time.time()) - 60
    body = 'c1.%d.%s.%d' % (purposes, version, issued)
    tag = hmac.new(consent_key(secret_line), b'consent:' + body.encode(),
                   hashlib.sha256).digest()[:12]
    return body + '.' + base64.urlsafe_b64encode(tag).rstrip(b'=').decode()


# --------------------------------------------------------------------------
# Identity: the names of identifiers in Redis, signed pixel identities

def _hmac(key, msg):
    import hashlib
    import hmac
    return hmac.new(key, msg, hashlib.sha256)


def ident_hash(secret_line, type_, value):
    """The <h> of idx:<type>:<h> for a normalised value."""
    key = _hmac(secret_line.encode(), b'ngx_cdp identity v1').digest()
    return _hmac(key, ('%s:%s' % (type_, value)).encode()).hexdigest()


def pixel_sig(secret_line, uid='', email='', exp=None):
    """(exp, sig) for a signed pixel identity (docs/api.md, "Signed
    pixel URLs")."""
    if exp is None:
        exp = int(time.time()) + 3600
    key = _hmac(secret_line.encode(), b'ngx_cdp pixel identity v1').digest()
    msg = 'uid=%s\nemail=%s\nexp=%d' % (uid, email, exp)
    return exp, _hmac(key, msg.encode()).hexdigest()


# --------------------------------------------------------------------------
# The identity graph in Redis (store/README.md), for the identity, API and
# admin tests

def key(ngx, *parts):
    return ':'.join((ngx.prefix,) + parts)

def idx(ngx, type_, value):
    c = ngx.rc()
    try:
        return c.get(key(ngx, 'idx', type_,
                         ident_hash(ngx.keys[0], type_, value)))
    finally:
        c.close()

def resolve(ngx, x):
    c = ngx.rc()
    try:
        for _ in range(64):
            p = c.hgetall(key(ngx, 'profile', x))
            if not p:
                return None
            if 'merged_into' not in p:
                return x
            x = p['merged_into']
    finally:
        c.close()
    raise AssertionError('link cycle at ' + x)

def profile(ngx, pid):
    c = ngx.rc()
    try:
        return c.hgetall(key(ngx, 'profile', pid))
    finally:
        c.close()

def members(ngx, pid):
    c = ngx.rc()
    try:
        return c.smembers(key(ngx, 'ids', pid))
    finally:
        c.close()

def merges(ngx):
    c = ngx.rc()
    try:
        return [f for _id, f in c.xrange(key(ngx, 'merges'), '-', '+')]
    finally:
        c.close()

def check_graph(ngx):
    """The identity graph is consistent: every identifier maps to exactly
    one live profile, which lists it; every known profile has one; links
    lead to live profiles.  Returns {pid: members} of known profiles."""
    c = ngx.rc()
    try:
        keys = list(c.scan_iter(match=ngx.prefix + ':*', count=1000))
        known = {}
        for k in keys:
            if k.startswith(key(ngx, 'ids', '')):
                pid = k[len(key(ngx, 'ids', '')):]
                known[pid] = c.smembers(k)
        owner = {}
        for pid, ms in known.items():
            p = c.hgetall(key(ngx, 'profile', pid))
            assert p and 'merged_into' not in p, (pid, p)
            assert any(m.split(':')[0] in ('user_id', 'email', 'phone')
                       for m in ms), ('a known profile without identifier',
                                      pid, ms)
            for m in ms:
                assert m not in owner, ('identifier in two profiles', m,
                                        owner.get(m), pid)
                owner[m] = pid
                t, v = m.split(':', 1)
                if t in ('user_id', 'email', 'phone'):
                    assert c.get(key(ngx, 'idx', t, v)) == pid, (m, pid)
                elif t in ('anonymous_id', 'profile_id'):
                    assert resolve(ngx, v) == pid, (m, pid)
        for k in keys:
            if k.startswith(key(ngx, 'idx', '')):
                t, v = k[len(key(ngx, 'idx', '')):].split(':', 1)
                pid = c.get(k)
                assert pid in known and '%s:%s' % (t, v) in known[pid], (
                    'idx without its profile', k, pid)
            elif k.startswith(key(ngx, 'profile', '')):
                x = k[len(key(ngx, 'profile', '')):]
                assert resolve(ngx, x) is not None, ('dangling link', k)
        return known
    finally:
        c.close()


# --------------------------------------------------------------------------
# A destination: a real HTTP server on loopback that records what it is
# sent (the delivery tests)

class Sink:
    """Records every request (path, headers, body); answers with
    self.respond(request) -> (status, body), or None to never answer
    (the connection is held until stop())."""

    def __init__(self):
        self.port = free_port()
        self.lock = threading.Lock()
        self.requests = []
        self.respond = lambda req: (200, b'{"success":true}')
        self.stopping = threading.Event()
        self.server = None

    def start(self):
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'

            def do_POST(self):
                n = int(self.headers.get('Content-Length') or 0)
                body = self.rfile.read(n)
                try:
                    doc = json.loads(body)
                except ValueError:
                    doc = None
                req = {'path': self.path, 'headers': dict(self.headers),
                       'body': body, 'json': doc, 'at': time.monotonic()}
                answer = sink.respond(req)
                req['status'] = answer[0] if answer else None
                with sink.lock:
                    sink.requests.append(req)
                if answer is None:
                    sink.stopping.wait(120)
                    self.close_connection = True
                    return
                status, out = answer
                self.send_response(status)
                self.send_header('Content-Type', 'application/json')
                self.send_header('Content-Length', str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(('127.0.0.1',
                                                       self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever,
                         daemon=True).start()
        return self

    def stop(self):
        self.stopping.set()
        if self.server:
            self.server.shutdown()
            self.server.server_close()

    def taken(self, path=None):
        """The requests answered with a 2xx (to path), in arrival order."""
        with self.lock:
            return [r for r in self.requests
                    if (path is None or r['path'] == path)
                    and r['status'] is not None
                    and 200 <= r['status'] < 300]

    def events(self, path=None):
        """The events the 2xx requests carried: a Segment batch's items, a
        json POST's body (deletion notices left out)."""
        out = []
        for r in self.taken(path):
            doc = r['json']
            if isinstance(doc, dict) and isinstance(doc.get('batch'), list):
                out += doc['batch']
            elif isinstance(doc, dict) and doc.get('type') != 'delete':
                out.append(doc)
        return out

    def notices(self, path=None):
        return [r['json'] for r in self.taken(path)
                if isinstance(r['json'], dict)
                and r['json'].get('type') == 'delete']


DEST_LOCATION = """
        location /_dest/ {
            internal;
            proxy_pass http://127.0.0.1:@SINKPORT@/;
            proxy_read_timeout 3s;
        }"""


# --------------------------------------------------------------------------
# An origin: a real HTTP server on loopback that nginx proxies to (the
# capture tests' site)

class Upstream:
    """Answers every request with route(method, path, headers) ->
    (status, {header: value}, body bytes); path with its query.  HEAD gets
    the headers of the GET without the body.  Records (method, path,
    headers, body) of every request in self.requests."""

    def __init__(self, route):
        self.port = free_port()
        self.route = route
        self.lock = threading.Lock()
        self.requests = []
        self.server = None

    def start(self):
        up = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'

            def _answer(self, head=False):
                n = int(self.headers.get('Content-Length') or 0)
                body = self.rfile.read(n) if n else b''
                with up.lock:
                    up.requests.append({'method': self.command,
                                        'path': self.path,
                                        'headers': dict(self.headers),
                                        'body': body})
                status, headers, out = up.route(self.command, self.path,
                                                self.headers)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header('Content-Length', str(len(out)))
                self.end_headers()
                if not head:
                    self.wfile.write(out)

            def do_GET(self):
                self._answer()

            def do_HEAD(self):
                self._answer(head=True)

            def do_POST(self):
                self._answer()

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(('127.0.0.1',
                                                       self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever,
                         daemon=True).start()
        return self

    def stop(self):
        if self.server:
            self.server.shutdown()
            self.server.server_close()

    def paths(self, method=None):
        with self.lock:
            return [r['path'] for r in self.requests
                    if method is None or r['method'] == method]
