"""
Harness of the integration tests: a real redis-server and the real nginx
binary with the built module, both on free loopback ports under a temporary
directory.  No mocks.

Environment overrides: CDP_MODULE (path of ngx_http_cdp_module.so),
NGINX_BIN (default /usr/sbin/nginx), REDIS_SERVER (default redis-server),
REDIS_CLI (default redis-cli: builds and reshards the test Redis Clusters),
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

import cdp_shard


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
# Redis Cluster: several redis-server processes on loopback, made into a
# cluster by `redis-cli --cluster create` (the tests of cdp_redis_cluster)

REDIS_CLI = os.environ.get('REDIS_CLI', 'redis-cli')
CLUSTER_SLOTS = 16384


def parse_cluster_nodes(text):
    """CLUSTER NODES -> [{'id', 'port', 'flags' (set), 'master_id' (None
    for a master), 'epoch', 'link', 'ranges' ((first, last), ...),
    'migrating' {slot: node id}, 'importing' {slot: node id}}]."""
    out = []
    for line in text.splitlines():
        f = line.split()
        if len(f) < 8:
            continue
        addr = f[1].split('@', 1)[0]
        port = addr.rpartition(':')[2]
        ranges, migrating, importing = [], {}, {}
        for s in f[8:]:
            if s.startswith('['):
                m = re.match(r'^\[(\d+)-([<>])-([0-9a-f]+)\]$', s)
                if m:
                    (migrating if m.group(2) == '>' else importing)[
                        int(m.group(1))] = m.group(3)
                continue
            a, _, b = s.partition('-')
            ranges.append((int(a), int(b or a)))
        out.append({'id': f[0], 'port': int(port) if port.isdigit() else 0,
                    'flags': set(f[2].split(',')),
                    'master_id': None if f[3] == '-' else f[3],
                    'epoch': int(f[6]), 'link': f[7],
                    'ranges': tuple(sorted(ranges)),
                    'migrating': migrating, 'importing': importing})
    return out


def count_slots(ranges):
    return sum(b - a + 1 for a, b in ranges)


def in_ranges(slot, ranges):
    return any(a <= slot <= b for a, b in ranges)


class RedisClusterNode(RedisServer):
    """One redis-server of a RedisCluster: a RedisServer with the cluster
    options.  Its nodes.conf is in its dir, so start() after kill() brings
    it back into the cluster with the same node id.  The cluster bus gets
    a port of its own (cluster-port, Redis 7): port + 10000 would often be
    above 65535 for the ports the kernel hands out."""

    def __init__(self, base_dir, node_timeout, password=None,
                 appendonly=False, extra_args=()):
        self.bus_port = free_port()
        a = ['--cluster-enabled', 'yes',
             '--cluster-config-file', 'nodes.conf',
             '--cluster-node-timeout', str(node_timeout),
             '--cluster-port', str(self.bus_port),
             # a replica's first sync now, not after the default 5 s of
             # waiting for more replicas (diskless sync)
             '--repl-diskless-sync-delay', '0']
        if password:
            a += ['--masterauth', password]
        super().__init__(base_dir, password=password, appendonly=appendonly,
                         extra_args=a + list(extra_args))
        self.node_id = None

    @property
    def process(self):
        return self.proc

    @property
    def addr(self):
        return '127.0.0.1:%d' % self.port

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n=1500):
        try:
            with open(self.logfile, 'rb') as f:
                return f.read().decode('utf-8', 'replace')[-n:]
        except OSError:
            return ''

    def __repr__(self):
        return '<RedisClusterNode %d %s %s>' % (
            self.port, (self.node_id or '?')[:8],
            'alive' if self.alive() else 'down')


class RedisCluster:
    """A Redis Cluster of masters * (1 + replicas) redis-server processes on
    loopback ports, each in a directory of its own under base_dir.

        c = RedisCluster(base_dir, masters=3, replicas=1).start()
        c.client().set('k', 'v'); c.master_of_slot(c.slot('k'))
        c.kill(port); c.wait_failover(port); c.restart(port)
        c.reshard(100, a, b); c.migrate_slot(slot, a, b)
        c.stop()

    Every method that changes the cluster returns once it is settled again
    (wait_ok): every live node says cluster_state:ok with all 16384 slots
    served, all live nodes agree on the slot map, no slot is open
    (migrating/importing), no live node is flagged failing, no slot belongs
    to a dead node, and every replica has master_link_status:up."""

    def __init__(self, base_dir, masters=3, replicas=0, password=None,
                 appendonly=False, node_timeout=1500, extra_args=()):
        self.dir = tempfile.mkdtemp(prefix='rcluster-', dir=base_dir)
        self.n_masters, self.n_replicas = masters, replicas
        self.password = password
        self.node_timeout = node_timeout
        self.nodes = [RedisClusterNode(self.dir, node_timeout,
                                       password=password,
                                       appendonly=appendonly,
                                       extra_args=extra_args)
                      for _ in range(masters * (1 + replicas))]
        # seconds taken: 'start' (processes), 'create' (redis-cli), 'settle'
        # (until wait_ok), then 'failover', 'restart', 'reshard', 'migrate'
        # of the last such call
        self.timings = {}
        self._lost = {}         # port of a killed master -> its slot ranges
        self._bg = []           # background redis-cli processes
        self._conns = {}        # port -> redis.Redis for polling
        self._n_log = 0

    @property
    def ports(self):
        return [n.port for n in self.nodes]

    def node(self, port):
        for n in self.nodes:
            if n.port == port:
                return n
        raise KeyError('no node on port %r' % (port,))

    def live_nodes(self):
        return [n for n in self.nodes if n.alive()]

    # -- process -----------------------------------------------------------

    def start(self, timeout=30.0):
        t0 = time.monotonic()
        try:
            for n in self.nodes:
                n.start()
                n.node_id = self._cmd(n.port, 'CLUSTER', 'MYID')
            t1 = time.monotonic()
            self.timings['start'] = t1 - t0
            out = self._cli(['--cluster', 'create']
                            + [n.addr for n in self.nodes]
                            + ['--cluster-replicas', str(self.n_replicas),
                               '--cluster-yes'], timeout)
            t2 = time.monotonic()
            self.timings['create'] = t2 - t1
            self.wait_ok(timeout, what='after --cluster create:\n' + out)
            self.timings['settle'] = time.monotonic() - t2
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        for p in self._bg:
            if p.poll() is None:
                p.kill()
                p.wait(5)
        for c in self._conns.values():
            c.close()
        self._conns.clear()
        for n in self.nodes:
            n.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def kill(self, port):
        """SIGKILL one node, as a crash.  The slots it served (when a
        master) are remembered for wait_failover()."""
        n = self.node(port)
        me = self._myself(port)
        if me and 'master' in me['flags']:
            self._lost[port] = me['ranges']
        self._drop_conn(port)
        n.kill()

    def restart(self, port, timeout=20.0):
        """Starts a killed node again: same port, dir, nodes.conf, so it
        rejoins (a master that was failed over comes back as a replica of
        its successor).  Returns once the cluster is settled."""
        t0 = time.monotonic()
        self._drop_conn(port)
        self.node(port).start()
        self.wait_ok(timeout, what='after restarting %d' % port)
        self.timings['restart'] = time.monotonic() - t0
        return self.node(port)

    def pause(self):
        """SIGSTOP every live node: a store that does not answer, as
        RedisServer.pause() (the tests of a single Redis run on a cluster
        too).  resume() within node_timeout, or the nodes flag each other
        as failing."""
        for n in self.live_nodes():
            n.pause()

    def resume(self):
        for n in self.live_nodes():
            n.resume()

    def wait_failover(self, dead_port, timeout=15.0):
        """Waits until the slots of the killed master dead_port are served
        by live masters and the live nodes are settled (wait_ok).  Returns
        the ports that now serve them."""
        t0 = time.monotonic()
        assert not self.node(dead_port).alive(), '%d is not dead' % dead_port
        lost = self._lost.get(dead_port, ())
        self.wait_ok(timeout, what='failover of %d (slots %s)' % (
            dead_port, list(lost)))
        self.timings['failover'] = time.monotonic() - t0
        heirs = set()
        for a, b in lost:
            heirs.add(self.master_of_slot(a))
            heirs.add(self.master_of_slot(b))
        return sorted(heirs)

    # -- clients -----------------------------------------------------------

    def flush(self):
        """FLUSHALL on every master (the libraries stay)."""
        for p in self.masters():
            self._cmd(p, 'FLUSHALL')

    def client(self, **kw):
        """A cluster client (follows MOVED/ASK), seeded with the first live
        node."""
        import redis.cluster
        args = dict(host='127.0.0.1', port=self.live_nodes()[0].port,
                    decode_responses=True, password=self.password,
                    socket_timeout=5, socket_connect_timeout=2)
        args.update(kw)
        return redis.cluster.RedisCluster(**args)

    def node_client(self, port, **kw):
        """A plain client of one node (gets MOVED for others' slots)."""
        args = dict(host='127.0.0.1', port=port, decode_responses=True,
                    password=self.password, socket_timeout=5,
                    socket_connect_timeout=2)
        args.update(kw)
        return redis.Redis(**args)

    def _conn(self, port):
        c = self._conns.get(port)
        if c is None:
            c = self._conns[port] = self.node_client(port, socket_timeout=2)
        return c

    def _drop_conn(self, port):
        c = self._conns.pop(port, None)
        if c is not None:
            c.close()

    def _cmd(self, port, *args):
        """A command to one node; raises redis errors."""
        return self._conn(port).execute_command(*args)

    def _try(self, port, *args):
        """A command to one node; None when it does not answer."""
        try:
            return self._cmd(port, *args)
        except redis.RedisError:
            self._drop_conn(port)
            return None

    def _cli(self, args, timeout):
        """redis-cli with the cluster's password; its output, or
        RuntimeError with the output and the nodes' log tails."""
        cmd = [REDIS_CLI]
        if self.password:
            cmd += ['-a', self.password, '--no-auth-warning']
        p = subprocess.run(cmd + args, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=timeout)
        out = p.stdout.decode('utf-8', 'replace')
        if p.returncode != 0 or '[ERR]' in out:
            raise RuntimeError('%s failed (exit %d):\n%s\n%s' % (
                ' '.join(cmd[:1] + args), p.returncode, out[-3000:],
                self.logs()))
        return out

    def logs(self, n=800):
        """The tails of the nodes' logs, for failure messages."""
        return '\n'.join('--- %r %s\n%s' % (x, x.logfile, x.log_tail(n))
                         for x in self.nodes)

    # -- state -------------------------------------------------------------

    def view(self, port):
        """CLUSTER NODES of one node, parsed (parse_cluster_nodes); None
        when it does not answer."""
        text = self._try(port, 'CLUSTER', 'NODES')
        return parse_cluster_nodes(text) if text is not None else None

    def _myself(self, port):
        for e in self.view(port) or ():
            if 'myself' in e['flags']:
                return e
        return None

    def info(self, port):
        """CLUSTER INFO of one node as a dict of strings (None: no
        answer)."""
        text = self._try(port, 'CLUSTER', 'INFO')
        if text is None:
            return None
        return dict(l.split(':', 1) for l in text.splitlines() if ':' in l)

    def _roles(self):
        """[(port, myself entry)] of the live nodes that answer."""
        out = []
        for n in self.live_nodes():
            me = self._myself(n.port)
            if me is not None:
                out.append((n.port, me))
        return out

    def masters(self):
        """Ports of the live nodes that are masters now (as they say)."""
        return [p for p, me in self._roles() if 'master' in me['flags']]

    def replicas(self, of=None):
        """Ports of the live replicas (of the master on port `of`)."""
        mid = self.node(of).node_id if of is not None else None
        return [p for p, me in self._roles() if 'slave' in me['flags']
                and (mid is None or me['master_id'] == mid)]

    def slot_counts(self):
        """{port: number of slots} of the live masters."""
        return {p: count_slots(me['ranges']) for p, me in self._roles()
                if 'master' in me['flags']}

    def master_of_slot(self, slot):
        """Port of the live master serving slot (when two claim it, the
        one with the higher config epoch, as the cluster decides); None if
        no live master has it."""
        claims = [(me['epoch'], p) for p, me in self._roles()
                  if 'master' in me['flags'] and in_ranges(slot, me['ranges'])]
        return max(claims)[1] if claims else None

    def slot(self, key):
        """CLUSTER KEYSLOT key, asked of a live node."""
        for n in self.live_nodes():
            v = self._try(n.port, 'CLUSTER', 'KEYSLOT', key)
            if v is not None:
                return int(v)
        raise RuntimeError('no live node answers CLUSTER KEYSLOT')

    def seeds_text(self):
        """'127.0.0.1:P1 127.0.0.1:P2 ...': the masters' addresses, for
        cdp_redis_cluster."""
        return ' '.join('127.0.0.1:%d' % p for p in self.masters())

    def problems(self):
        """What keeps the cluster from being settled (wait_ok); [] when
        it is."""
        live = self.live_nodes()
        if not live:
            return ['no live node']
        live_ids = {n.node_id for n in live}
        dead_ids = {n.node_id for n in self.nodes if not n.alive()}
        probs, maps = [], {}
        for n in live:
            info, view = self.info(n.port), self.view(n.port)
            if info is None or view is None:
                probs.append('%d does not answer' % n.port)
                continue
            if info.get('cluster_state') != 'ok':
                probs.append('%d: cluster_state:%s' % (
                    n.port, info.get('cluster_state')))
            for k in ('cluster_slots_assigned', 'cluster_slots_ok'):
                if info.get(k) != str(CLUSTER_SLOTS):
                    probs.append('%d: %s:%s' % (n.port, k, info.get(k)))
            seen = {e['id'] for e in view}
            if live_ids - seen:
                probs.append('%d does not know %d live nodes' % (
                    n.port, len(live_ids - seen)))
            for e in view:
                bad = e['flags'] & {'fail', 'fail?', 'handshake', 'noaddr'}
                if e['id'] in live_ids and bad:
                    probs.append('%d sees %d as %s' % (
                        n.port, e['port'], ','.join(sorted(bad))))
                if e['id'] in dead_ids and e['ranges']:
                    probs.append('%d: slots of the dead %d not failed over'
                                 % (n.port, e['port']))
                if e['migrating'] or e['importing']:
                    probs.append('%d: open slots on %d: %s %s' % (
                        n.port, e['port'], e['migrating'], e['importing']))
                if 'myself' in e['flags'] and 'slave' in e['flags']:
                    r = self._try(n.port, 'INFO', 'replication')
                    link = (r or {}).get('master_link_status')
                    if link != 'up':
                        probs.append('replica %d: master_link_status:%s'
                                     % (n.port, link))
            maps[n.port] = tuple(sorted((e['id'], e['ranges'])
                                        for e in view if e['ranges']))
        if len(set(maps.values())) > 1:
            probs.append('the nodes do not agree on the slot map')
        return probs

    def wait_ok(self, timeout=15.0, what=''):
        """Waits (bounded) until problems() is empty; AssertionError with
        the problems and the logs' tails otherwise."""
        last = [None]

        def ok():
            last[0] = self.problems()
            return not last[0]
        if not wait_until(ok, timeout, 0.05):
            raise AssertionError(
                'Redis Cluster not settled within %.0f s%s: %s\n%s' % (
                    timeout, ' (%s)' % what if what else '',
                    '; '.join(last[0][:12]), self.logs()))

    # -- moving slots ------------------------------------------------------

    def _reshard_args(self, n_slots, from_port, to_port, pipeline):
        return ['--cluster', 'reshard', '127.0.0.1:%d' % from_port,
                '--cluster-from', self.node(from_port).node_id,
                '--cluster-to', self.node(to_port).node_id,
                '--cluster-slots', str(n_slots),
                '--cluster-pipeline', str(pipeline), '--cluster-yes']

    def reshard(self, n_slots, from_port, to_port, timeout=60.0,
                pipeline=10):
        """redis-cli --cluster reshard of n_slots from one master to
        another, then wait_ok.  Returns redis-cli's output."""
        t0 = time.monotonic()
        out = self._cli(self._reshard_args(n_slots, from_port, to_port,
                                           pipeline), timeout)
        self.wait_ok(timeout, what='after reshard:\n' + out[-1500:])
        self.timings['reshard'] = time.monotonic() - t0
        return out

    def reshard_background(self, n_slots, from_port, to_port, pipeline=10):
        """The same reshard, started and not waited for (resharding under
        load): the Popen, with .log_path (redis-cli's output).  Finish
        with wait_reshard(p)."""
        self._n_log += 1
        path = os.path.join(self.dir, 'reshard-%d.log' % self._n_log)
        cmd = [REDIS_CLI]
        if self.password:
            cmd += ['-a', self.password, '--no-auth-warning']
        with open(path, 'wb') as log:
            p = subprocess.Popen(
                cmd + self._reshard_args(n_slots, from_port, to_port,
                                         pipeline),
                stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT)
        p.log_path = path
        self._bg.append(p)
        return p

    def wait_reshard(self, p, timeout=60.0):
        """Waits for a reshard_background() to end well, then wait_ok.
        Returns redis-cli's output."""
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
        with open(p.log_path, 'rb') as f:
            out = f.read().decode('utf-8', 'replace')
        if p.returncode != 0 or '[ERR]' in out:
            raise RuntimeError('background reshard failed (exit %s):\n%s\n%s'
                               % (p.returncode, out[-3000:], self.logs()))
        self.wait_ok(timeout, what='after reshard:\n' + out[-1500:])
        return out

    def migrate_slot(self, slot, from_port, to_port, batch=100,
                     timeout=15.0):
        """Moves one slot by hand, as the Redis Cluster specification
        describes: SETSLOT IMPORTING on the target, MIGRATING on the
        source, MIGRATE of its keys batch by batch (GETKEYSINSLOT), then
        SETSLOT NODE on the target, the source and the other masters; then
        wait_ok.  Returns the number of keys moved."""
        t0 = time.monotonic()
        src, dst = self.node(from_port), self.node(to_port)
        others = [p for p in self.masters() if p not in (from_port, to_port)]
        self._cmd(to_port, 'CLUSTER', 'SETSLOT', slot, 'IMPORTING',
                  src.node_id)
        self._cmd(from_port, 'CLUSTER', 'SETSLOT', slot, 'MIGRATING',
                  dst.node_id)
        raw = self.node_client(from_port, decode_responses=False)
        moved = 0
        try:
            while True:
                keys = raw.execute_command('CLUSTER', 'GETKEYSINSLOT', slot,
                                           batch)
                if not keys:
                    break
                args = ['MIGRATE', '127.0.0.1', to_port, '', 0, 5000]
                if self.password:
                    args += ['AUTH', self.password]
                raw.execute_command(*(args + ['KEYS'] + list(keys)))
                moved += len(keys)
        finally:
            raw.close()
        for p in [to_port, from_port] + others:
            self._cmd(p, 'CLUSTER', 'SETSLOT', slot, 'NODE', dst.node_id)
        self.wait_ok(timeout, what='after migrating slot %d' % slot)
        self.timings['migrate'] = time.monotonic() - t0
        return moved


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
        # the store's shards (cdp_redis ... shards=N)
        m = re.search(r'\bshards=(\d+)', (redis_line or '') + ' '
                      + redis_params)
        self.shards = int(m.group(1)) if m else cdp_shard.SHARDS_DEFAULT
        self.keys = list(keys) if keys else [new_key()]
        self.secret_path = os.path.join(self.dir, 'cdp.secret')
        self.write_secret(self.keys)
        if redis_line is None and isinstance(redis, RedisCluster):
            # a Redis Cluster: its masters as seeds, its password
            redis_line = 'cdp_redis_cluster %s prefix=%s%s%s;' % (
                redis.seeds_text(), self.prefix,
                ' password=' + redis.password if redis.password else '',
                ' ' + redis_params if redis_params else '')
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
            # (on a cluster, to every master)
            cluster = isinstance(self.redis, RedisCluster)
            n = self.workers * (len(self.redis.masters()) if cluster else 1)
            wait_until(lambda: self.status().c(
                'cdp_redis_connects_total') >= n, 5.0 if cluster else 3.0,
                0.02)
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
        if isinstance(self.redis, RedisCluster):
            return self.redis.client()      # a cluster has db 0 only
        return self.redis.client(self.db)

    # the sharded key layout (store/README.md, "Shards")

    def tag(self, shard):
        return '{%s}' % cdp_shard.shard_tag(shard, self.shards)

    def tag_of(self, id_):
        return self.tag(cdp_shard.shard_of(id_, self.shards))

    def skey(self, kind, id_):
        """<prefix>:<kind>:{<tag>}:<id> of the id's shard (profile, ids,
        timeline, timeline_old), or for idx, kind 'idx:<type>' and id h."""
        if kind.startswith('idx:'):
            return '%s:idx:%s:%s:%s' % (self.prefix, self.tag_of(id_),
                                        kind[4:], id_)
        return '%s:%s:%s:%s' % (self.prefix, kind, self.tag_of(id_), id_)

    def shard_keys(self, kind, rest=None):
        """<prefix>:<kind>:{<tag>}[:<rest>] of every shard."""
        return ['%s:%s:%s%s' % (self.prefix, kind, self.tag(i),
                                ':' + rest if rest else '')
                for i in range(self.shards)]

    # a destination's streams, one a shard: an entry is in the shard of
    # the profile it is counted on (that of its event's stream)

    def out_keys(self, name):
        """<prefix>:out:{<tag>}:<name> of every shard."""
        return self.shard_keys('out', name)

    def out_key(self, name, pid):
        """The out-stream of destination name in the shard of pid."""
        return '%s:out:%s:%s' % (self.prefix, self.tag_of(pid), name)

    def dead_keys(self, name):
        """<prefix>:dead:{<tag>}:<name> of every shard."""
        return self.shard_keys('dead', name)

    def dead_key(self, name, pid):
        return '%s:dead:%s:%s' % (self.prefix, self.tag_of(pid), name)

    def sent_key(self, pid):
        """<prefix>:sent:{<tag>}:<pid>: what destinations were sent about
        the profile, in its shard."""
        return self.skey('sent', pid)

    def stream_entries(self, keys):
        """(key, id, fields) of the streams keys, stream by stream."""
        c = self.rc()
        try:
            return [(k, i, f) for k in keys for i, f in c.xrange(k)]
        finally:
            c.close()

    def out_entries(self, name):
        """(key, id, fields) of every shard's out-stream of name."""
        return self.stream_entries(self.out_keys(name))

    def dead_entries(self, name):
        return self.stream_entries(self.dead_keys(name))

    def streams_len(self, keys):
        """The sum of the XLENs of the streams keys (0 for a missing one)."""
        c = self.rc()
        try:
            return sum(c.xlen(k) for k in keys)
        finally:
            c.close()

    def out_len(self, name):
        return self.streams_len(self.out_keys(name))

    def dead_len(self, name):
        return self.streams_len(self.dead_keys(name))

    @property
    def streams(self):
        return self.shard_keys('events')

    def stream_of(self, pid):
        """The event stream of the profile's shard."""
        return '%s:events:%s' % (self.prefix, self.tag_of(pid))

    def xlen(self):
        c = self.rc()
        try:
            return sum(c.xlen(k) for k in self.streams)
        except redis.RedisError:
            return -1
        finally:
            c.close()

    def entries(self):
        """(stream, id, fields) of every shard's stream, oldest first (by
        id: events of one millisecond in two shards have no order)."""
        c = self.rc()
        try:
            out = []
            for k in self.streams:
                out += [(k, i, f) for i, f in c.xrange(k, '-', '+')]
        finally:
            c.close()
        out.sort(key=lambda e: tuple(int(x) for x in e[1].split('-')))
        return out

    def events(self):
        """Parsed events of the streams, oldest first."""
        return [json.loads(f['event']) for _k, _i, f in self.entries()]

    def raw_events(self):
        return [f['event'] for _k, _i, f in self.entries()]

    def browser(self, aid):
        c = self.rc()
        try:
            return c.hgetall(self.skey('profile', aid))
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
        """Waits until every accepted event is acknowledged or dropped, the
        queues are empty and no saga runs; returns the last Status."""
        last = [Status()]

        def f():
            st = self.status()
            last[0] = st
            # every accepted event is stored, dropped after acceptance,
            # or a duplicate the store recognised
            # and on a cluster, every identify's saga is done
            return (st and st.queue == 0
                    and st.c('cdp_identity_sagas_running') == 0
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

SHARDED = ('profile', 'ids', 'timeline', 'timeline_old')

def key(ngx, *parts):
    """A store key: those of a profile id or an identifier carry its
    shard's tag (store/README.md, "Shards")."""
    if len(parts) == 2 and parts[0] in SHARDED:
        return ngx.skey(parts[0], parts[1])
    if len(parts) == 3 and parts[0] == 'idx':
        return ngx.skey('idx:' + parts[1], parts[2])
    return ':'.join((ngx.prefix,) + parts)

def parse_key(ngx, k):
    """(kind, rest) of a sharded key "<prefix>:<kind>:{<tag>}:<rest>", or
    None."""
    m = re.match(re.escape(ngx.prefix) + r':([a-z_]+):\{[^{}]*\}:(.*)$', k)
    return (m.group(1), m.group(2)) if m else None

def idx(ngx, type_, value):
    c = ngx.rc()
    try:
        return c.get(key(ngx, 'idx', type_,
                         ident_hash(ngx.keys[0], type_, value)))
    finally:
        c.close()

def resolve(ngx, x, c=None):
    """The live profile x's links lead to (c: a client to use, else one of
    its own: a cluster client costs a slot map and a connection a node)."""
    own = c is None
    if own:
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
        if own:
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
    """The merge log of every shard, oldest first."""
    c = ngx.rc()
    try:
        out = []
        for k in ngx.shard_keys('merges'):
            out += c.xrange(k, '-', '+')
    finally:
        c.close()
    out.sort(key=lambda e: tuple(int(x) for x in e[0].split('-')))
    return [f for _id, f in out]

def stream_id(i):
    """A stream id as a tuple that compares like the id."""
    return tuple(int(x) for x in i.split('-'))

def shard_entries(ngx, kind):
    """(stream, id, fields) of every shard's <prefix>:<kind>:{<tag>}
    stream (events, merges, consent_log), oldest first: by id, then (the
    same id in two shards) by stream key, as store/admin.lua orders
    them."""
    c = ngx.rc()
    try:
        out = []
        for k in ngx.shard_keys(kind):
            out += [(k, i, f) for i, f in c.xrange(k, '-', '+')]
    finally:
        c.close()
    out.sort(key=lambda e: (stream_id(e[1]), e[0]))
    return out

def consent_log(ngx):
    """[(raw entry, parsed)] of the consent log of every shard, oldest
    first."""
    return [(f['entry'], json.loads(f['entry']))
            for _k, _i, f in shard_entries(ngx, 'consent_log')]

def consent_log_len(ngx):
    c = ngx.rc()
    try:
        return sum(c.xlen(k) for k in ngx.shard_keys('consent_log'))
    finally:
        c.close()

def agg_keys(ngx, days):
    """Every shard's aggregate hash of each day (YYYY-MM-DD)."""
    return [k for d in sorted(days) for k in ngx.shard_keys('agg', d)]

def agg(ngx, days):
    """{field: int}: the aggregate hashes of the days (YYYY-MM-DD), summed
    over the shards."""
    out = {}
    c = ngx.rc()
    try:
        for k in agg_keys(ngx, days):
            for f, v in c.hgetall(k).items():
                out[f] = out.get(f, 0) + int(v)
    finally:
        c.close()
    return out

def profile_events(ngx, pid):
    """[(stream, id)] of one profile's own events: its first_event, its
    timeline and timeline_old, all ids of its shard's stream."""
    c = ngx.rc()
    try:
        ids = c.lrange(key(ngx, 'timeline', pid), 0, -1)
        ids += c.lrange(key(ngx, 'timeline_old', pid), 0, -1)
        fe = c.hget(key(ngx, 'profile', pid), 'first_event')
    finally:
        c.close()
    k = ngx.stream_of(pid)
    return [(k, i) for i in ids + ([fe] if fe else [])]

def person_events(ngx, pid):
    """{(stream, id): event} of a person: its own events and those of
    every profile its ids set names (anonymous_id:, profile_id:), which a
    merge leaves in their shards; each must be in its stream."""
    c = ngx.rc()
    try:
        ps = [pid] + [m.split(':', 1)[1]
                      for m in c.smembers(key(ngx, 'ids', pid))
                      if m.split(':', 1)[0] in ('anonymous_id', 'profile_id')]
        out = {}
        for p in ps:
            for k, i in profile_events(ngx, p):
                got = c.xrange(k, i, i)
                assert got, ('not in its shard\'s stream', p, k, i)
                out[(k, i)] = json.loads(got[0][1]['event'])
        return out
    finally:
        c.close()

def check_events(ngx):
    """Every event of the streams is on exactly one profile (its
    first_event, timeline or timeline_old), in that profile's shard's
    stream, and reachable from the live profile it leads to: that profile
    itself, or one its ids set names (a merge leaves the absorbed
    profile's events where they are).  Returns {live pid: {(stream, id)}}
    of the events of every profile that has any."""
    entries = {(k, i) for k, i, _f in ngx.entries()}
    c = ngx.rc()
    try:
        pids = [pk[1] for pk in map(lambda k: parse_key(ngx, k),
                                    c.scan_iter(match=ngx.prefix
                                                + ':profile:*', count=1000))
                if pk and pk[0] == 'profile']
        names = {}
        for k in c.scan_iter(match=ngx.prefix + ':ids:*', count=1000):
            pk = parse_key(ngx, k)
            if pk and pk[0] == 'ids':
                names[pk[1]] = {m.split(':', 1)[1] for m in c.smembers(k)
                                if m.split(':', 1)[0] in ('anonymous_id',
                                                          'profile_id')}
    finally:
        c.close()
    owner, out = {}, {}
    for pid in pids:
        own = profile_events(ngx, pid)
        if not own:
            continue
        live = resolve(ngx, pid)
        assert live == pid or pid in names.get(live, ()), (
            'events of a profile its person does not name', pid, live)
        for e in own:
            assert e in entries, ('not in its shard\'s stream', pid, e)
            assert e not in owner, ('on two profiles', e, owner[e], pid)
            owner[e] = pid
            out.setdefault(live, set()).add(e)
    assert set(owner) == entries, ('events on no profile',
                                   sorted(entries - set(owner))[:10])
    return out

def check_graph(ngx):
    """The identity graph is consistent: every identifier maps to exactly
    one live profile, which lists it; every known profile has one; links
    lead to live profiles.  Returns {pid: members} of known profiles."""
    c = ngx.rc()
    try:
        keys = list(c.scan_iter(match=ngx.prefix + ':*', count=1000))
        known = {}
        for k in keys:
            pk = parse_key(ngx, k)
            if pk and pk[0] == 'ids':
                known[pk[1]] = c.smembers(k)
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
                    assert resolve(ngx, v, c) == pid, (m, pid)
        for k in keys:
            pk = parse_key(ngx, k)
            if pk and pk[0] == 'idx':
                t, v = pk[1].split(':', 1)
                assert k == key(ngx, 'idx', t, v), ('idx in the wrong '
                                                    'shard', k)
                pid = c.get(k)
                assert pid in known and '%s:%s' % (t, v) in known[pid], (
                    'idx without its profile', k, pid,
                    c.hgetall(key(ngx, 'profile', pid)),
                    [p for p, ms in known.items()
                     if '%s:%s' % (t, v) in ms])
            elif pk and pk[0] == 'profile':
                assert k == key(ngx, 'profile', pk[1]), ('profile in the '
                                                         'wrong shard', k)
                assert resolve(ngx, pk[1], c) is not None, ('dangling link',
                                                            k)
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
