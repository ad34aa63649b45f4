#!/usr/bin/python3
"""make bench-redis: Redis's instructions per pixel event, counted.

wrk's req/s on a small shared machine moves by 2x within a run; the cost of
the store in Redis does not have to be guessed from it.  This script:

1. captures what nginx really sends: a redis-server and nginx with the
   built module (1 worker, consent default all, no GeoIP), `redis-cli
   MONITOR` recording while the pixel is hit: 2,000 minted browsers (the
   pool), then new visitors, then returning ones (each hit with a cookie of
   the pool), the phases told apart by ECHO markers;
2. replays those FCALL cdp_ingest commands into a second redis-server run
   under callgrind, counting instructions only while a phase's FCALLs run
   (callgrind_control -i on/off), after the ones before it have run
   uncounted;
3. prints instructions per event and per FCALL for each phase, for each
   store given (default: store/cdp.lua of the tree; STORE_REVS="REV ..."
   replays the same capture into store/cdp.lua of those git revisions, and
   "tree" names the working tree's, so a Lua change is compared on
   identical input: STORE_REVS="HEAD tree").

Counts are exact for one capture; two captures differ by the batch sizes
nginx happened to make (a few hundred instructions an event).

Environment: SECONDS_PER_PHASE (wrk seconds, default 1), REPLAY_FCALLS
(FCALLs counted a phase, default 150), STORE_REVS.
"""

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import redis

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
MODULE = os.path.join(TOP, 'build', 'objs', 'ngx_http_cdp_module.so')
COOKIES_LUA = os.path.join(TOP, 'tests', 'bench', 'cookies.lua')
SECONDS = int(os.environ.get('SECONDS_PER_PHASE', '1'))
REPLAY = int(os.environ.get('REPLAY_FCALLS', '150'))
POOL = 2000
PHASES = ('mint', 'new', 'returning')
MARK = 'cdp-cost:'


def die(msg):
    sys.stderr.write('bench-redis: %s\n' % msg)
    sys.exit(2)


def free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_for(f, timeout, what):
    end = time.time() + timeout
    while time.time() < end:
        try:
            if f():
                return
        except (OSError, redis.RedisError):
            pass
        time.sleep(0.05)
    die('timed out waiting for ' + what)


class Procs:
    """The processes this script started, stopped at exit."""

    def __init__(self):
        self.procs = []

    def start(self, args, **kw):
        p = subprocess.Popen(args, stdin=subprocess.DEVNULL, **kw)
        self.procs.append(p)
        return p

    def stop(self, p, sig=signal.SIGTERM):
        if p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def stop_all(self):
        for p in reversed(self.procs):
            self.stop(p)


def redis_server(procs, tmp, port, name, wrapper=()):
    log = os.path.join(tmp, name + '.log')
    p = procs.start(list(wrapper) + [
        'redis-server', '--bind', '127.0.0.1', '--port', str(port),
        '--dir', tmp, '--save', '', '--appendonly', 'no',
        '--logfile', log])
    c = redis.Redis(port=port, decode_responses=False)
    wait_for(c.ping, 120, name + ' to answer PING')
    return p, c


# --- 1. capture --------------------------------------------------------------

NGINX_CONF = """\
load_module {module};
{user}
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    cdp_redis 127.0.0.1:{rport} prefix=cost;
    cdp_secret_file {tmp}/secret;
    cdp_stream_maxlen 100000000;
    cdp_consent_default all;
    server {{
        listen 127.0.0.1:{hport};
        location = /p.gif {{ cdp_pixel; }}
        location = /status {{ cdp_status; }}
    }}
}}
"""


def queued(hport):
    out = subprocess.run(['curl', '-s', 'http://127.0.0.1:%d/status' % hport],
                         stdout=subprocess.PIPE, check=True).stdout.decode()
    m = re.search(r'^cdp_queue_events (\d+)', out, re.M)
    return int(m.group(1)) if m else -1


def settle(c, hport):
    """Until the worker's queue is empty and the stream stops growing."""
    last, same = -1, 0
    for _ in range(600):
        n = c.xlen('cost:events')
        if n == last and queued(hport) == 0:
            same += 1
            if same >= 3:
                return
        else:
            same = 0
        last = n
        time.sleep(0.1)
    die('the stream did not stop growing')


def capture(procs, tmp):
    rport, hport = free_port(), free_port()
    rp, c = redis_server(procs, tmp, rport, 'capture-redis')
    with open(os.path.join(tmp, 'secret'), 'w') as f:
        f.write(os.urandom(32).hex())
    conf = os.path.join(tmp, 'nginx.conf')
    with open(conf, 'w') as f:
        f.write(NGINX_CONF.format(
            module=MODULE, tmp=tmp, rport=rport, hport=hport,
            user='user root;' if os.getuid() == 0 else ''))
    ngx = procs.start(['nginx', '-p', tmp + '/', '-c', conf,
                       '-e', os.path.join(tmp, 'error.log')])
    base = 'http://127.0.0.1:%d' % hport
    wait_for(lambda: queued(hport) >= 0, 10, 'nginx')
    # the worker loads the library on connect
    wait_for(lambda: 'cdp_ingest' in repr(c.function_list()), 10,
             'the cdp library in Redis')

    mon_path = os.path.join(tmp, 'monitor.txt')
    mon_out = open(mon_path, 'wb')
    mon = procs.start(['redis-cli', '-p', str(rport), 'MONITOR'],
                      stdout=mon_out)
    wait_for(lambda: c.echo('ready') and os.path.getsize(mon_path) > 0, 10,
             'MONITOR')

    pool = os.path.join(tmp, 'pool.txt')
    c.echo(MARK + 'mint')
    hdrs = subprocess.run(
        ['curl', '-s', '-o', '/dev/null', '-D', '-',
         base + '/p.gif?n=[1-%d]' % POOL],
        stdout=subprocess.PIPE, check=True).stdout.decode()
    cookies = re.findall(r'^set-cookie: *(cdp_aid=[^;]*)', hdrs, re.M | re.I)
    if len(set(cookies)) != POOL:
        die('minted %d cookies, not %d' % (len(set(cookies)), POOL))
    with open(pool, 'w') as f:
        f.write('\n'.join(cookies) + '\n')
    settle(c, hport)

    for phase, extra in (('new', []),
                         ('returning', ['-s', COOKIES_LUA])):
        c.echo(MARK + phase)
        args = ['wrk', '-t1', '-c50', '-d%ds' % SECONDS] + extra \
            + [base + '/p.gif']
        if extra:
            args += ['--', pool]
        subprocess.run(args, stdout=subprocess.DEVNULL, check=True)
        settle(c, hport)
    c.echo(MARK + 'end')
    wait_for(lambda: (MARK + 'end').encode() in open(mon_path, 'rb').read()
             [-4096:], 10, 'the end of the capture')
    procs.stop(mon)
    procs.stop(ngx, signal.SIGQUIT)
    procs.stop(rp)
    mon_out.close()
    return mon_path


# MONITOR quotes each argument the way sdscatrepr does
ESCAPES = {'\\': b'\\', '"': b'"', 'n': b'\n', 'r': b'\r', 't': b'\t',
           'a': b'\a', 'b': b'\b'}


def monitor_args(line):
    """The arguments of one MONITOR line, as bytes, or None."""
    m = re.match(rb'^\d+\.\d+ \[\d+ ([^\]]*)\] ', line)
    if not m or m.group(1) == b'lua':
        return None
    s = line[m.end():].decode('latin-1')
    args, i = [], 0
    while i < len(s):
        if s[i] == ' ':
            i += 1
            continue
        if s[i] != '"':
            return None
        i += 1
        out = bytearray()
        while s[i] != '"':
            if s[i] == '\\':
                if s[i + 1] == 'x':
                    out.append(int(s[i + 2:i + 4], 16))
                    i += 4
                else:
                    out += ESCAPES[s[i + 1]]
                    i += 2
            else:
                out.append(ord(s[i]))
                i += 1
        args.append(bytes(out))
        i += 1
    return args


def phases(mon_path):
    """{phase: [FCALL args, ...]} in the order they were sent."""
    out, cur = {p: [] for p in PHASES}, None
    with open(mon_path, 'rb') as f:
        for line in f:
            a = monitor_args(line.rstrip(b'\r\n'))
            if not a:
                continue
            cmd = a[0].upper()
            if cmd == b'ECHO' and a[1].startswith(MARK.encode()):
                cur = a[1].decode()[len(MARK):]
                cur = cur if cur in out else None
            elif cmd == b'FCALL' and a[1] == b'cdp_ingest' and cur:
                out[cur].append(a)
    for p in PHASES:
        if not out[p]:
            die('no FCALL cdp_ingest captured in phase ' + p)
    return out


# --- 2. replay under callgrind ---------------------------------------------------


def store_lua(rev):
    if rev is None:
        with open(os.path.join(TOP, 'store', 'cdp.lua')) as f:
            src = f.read()
    else:
        src = subprocess.run(['git', '-C', TOP, 'show', rev + ':store/cdp.lua'],
                             stdout=subprocess.PIPE, check=True).stdout.decode()
    return src.replace('@REV@', 'cost')


def events(fcall):
    return int(fcall[2]) - 1          # numkeys - the stream


def replay(c, fcalls):
    """Sends fcalls, 20 a round trip; each must store all its events, or
    what is counted is not the store's work."""
    p = c.pipeline(transaction=False)
    for i in range(0, len(fcalls), 20):
        part = fcalls[i:i + 20]
        for a in part:
            p.execute_command(*a)
        for a, r in zip(part, p.execute(raise_on_error=False)):
            if isinstance(r, Exception):
                die('cdp_ingest failed on the replay: %s' % r)
            if r[0] != events(a):
                die('cdp_ingest stored %d of %d events on the replay: %r'
                    % (r[0], events(a), r))


def instructions(outfile):
    """Ir of a callgrind dump (its "totals:"; "summary:" is 0 after a
    zeroing)."""
    with open(outfile) as f:
        for line in f:
            if line.startswith('totals:'):
                return int(line.split()[1])
    die('no totals in ' + outfile)


# callgrind_control says what it sends on both outputs; a failure is its
# exit status
QUIET = {'stdout': subprocess.DEVNULL, 'stderr': subprocess.DEVNULL,
         'check': True}


def measure(procs, tmp, caught, rev):
    port = free_port()
    name = 'replay-%s' % (rev or 'tree').replace('/', '_')
    out = os.path.join(tmp, name + '.callgrind')
    rp, c = redis_server(procs, tmp, port, name, wrapper=[
        'valgrind', '--quiet', '--tool=callgrind', '--instr-atstart=no',
        '--callgrind-out-file=' + out])
    c.function_load(store_lua(rev), replace=True)
    ctl = ['callgrind_control']
    res = {}
    for phase in PHASES:
        fcalls = caught[phase]
        if phase == 'mint':
            replay(c, fcalls)               # the pool's profiles
            continue
        counted = fcalls[:REPLAY]
        n = sum(events(a) for a in counted)
        subprocess.run(ctl + ['-z', str(rp.pid)], **QUIET)
        subprocess.run(ctl + ['-i', 'on', str(rp.pid)], **QUIET)
        replay(c, counted)
        subprocess.run(ctl + ['-i', 'off', str(rp.pid)], **QUIET)
        for f in os.listdir(tmp):
            if f.startswith(name + '.callgrind'):
                os.unlink(os.path.join(tmp, f))
        subprocess.run(ctl + ['-d', str(rp.pid)], **QUIET)
        dumps = sorted(f for f in os.listdir(tmp)
                       if f.startswith(name + '.callgrind'))
        if not dumps:
            die('callgrind wrote no dump')
        ir = instructions(os.path.join(tmp, dumps[-1]))
        res[phase] = (ir, n, len(counted))
        replay(c, fcalls[REPLAY:])          # the rest, uncounted
    c.close()
    procs.stop(rp)
    return res


def main():
    for tool in ('nginx', 'redis-server', 'redis-cli', 'wrk', 'curl',
                 'valgrind', 'callgrind_control'):
        if not shutil.which(tool):
            die('%s not found (make deps-test; valgrind: apt-get install '
                'valgrind)' % tool)
    if not os.path.exists(MODULE):
        die('no module at %s (make build)' % MODULE)
    revs = [None if r == 'tree' else r
            for r in shlex.split(os.environ.get('STORE_REVS') or 'tree')]

    tmp = tempfile.mkdtemp(prefix='ngx_cdp_cost.')
    procs = Procs()
    try:
        print('capturing the FCALLs nginx sends (pool of %d, then %ds of new'
              ' and %ds of returning visitors)...' % (POOL, SECONDS, SECONDS))
        caught = phases(capture(procs, tmp))
        for p in PHASES:
            print('  %-9s %5d FCALLs, %7d events' % (
                p, len(caught[p]), sum(events(a) for a in caught[p])))
        print('replaying %d FCALLs a phase into redis-server under callgrind'
              '...' % REPLAY)
        print('%-14s %-10s %8s %8s %14s %12s' % (
            'store', 'visitors', 'FCALLs', 'events', 'instr/event',
            'instr/FCALL'))
        for rev in revs:
            res = measure(procs, tmp, caught, rev)
            for phase in ('new', 'returning'):
                ir, n, calls = res[phase]
                print('%-14s %-10s %8d %8d %14.0f %12.0f' % (
                    rev or 'tree', phase, calls, n, ir / n, ir / calls))
    finally:
        procs.stop_all()
        if os.environ.get('KEEP_BENCH_DIR'):
            print('files kept in ' + tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    main()
