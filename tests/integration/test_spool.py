"""The local spool (issue 16): with `cdp_spool PATH [max_size=SIZE];` no
answered hit is lost when Redis goes away, and none is stored twice.

Each worker appends the batches it cannot send to its own PATH/*.spool
file (while Redis is down, when its in-flight queue is over cdp_queue_size,
at exit with unsent batches) and replays them once Redis is back; a file an
exited, crashed or previous nginx left is adopted by one worker, replayed,
then deleted.  Batches in flight when a connection is lost are resent from
memory, and every batch carries an id the store remembers: a batch Redis
applied but whose reply was lost is skipped when it comes again.

The tests are black-box: real nginx (2 workers where it matters), real
redis-server with appendonly yes / appendfsync always (what Redis
acknowledged survives its kill -9), real signals.  A load of "browsers"
(threads, each with its own keep-alive connection and cookie jar) sends
pixel hits, each with a unique marker (p.m, which lands in the stored
event's properties.m), and records which got the GIF.  Then, with bounded
polling: every answered marker is in the shards' streams
(<prefix>:events:{<tag>}) exactly once, and each browser's profile counts
exactly its stored events.
"""

import collections
import glob
import http.client
import json
import os
import random
import re
import select
import socket
import threading
import time

import pytest
import redis

import cdp_harness as h


# /status series of the spool
SPOOLED = 'cdp_spool_events_total{op="spooled"}'
REPLAYED = 'cdp_spool_events_total{op="replayed"}'
RESENT = 'cdp_events_resent_total'
ALREADY_APPLIED = 'cdp_events_already_applied_total'
SPOOL_BYTES = 'cdp_spool_bytes'
SPOOL_FILES = 'cdp_spool_files'
SET_ASIDE = 'cdp_spool_set_aside_total'
SPOOL_DROP_REASONS = ('spool_full', 'spool_error', 'unconfirmed')

# stricter than the harness: nothing of the spool is worth a [crit] either
PROBLEM_RE = re.compile(r'\[alert\]|\[emerg\]|\[crit\]|exited on signal')

# the level of the module's own lines about the spool
LOG_LEVEL_RE = re.compile(r'\[(notice|warn|error)\]')

BATCH = 16                      # cdp_batch_size where a loss is bounded
WAIT = 30.0                     # bound of every wait for Redis to catch up
PAD = 'x' * 500                 # a property value: bigger events


def all_dropped(st):
    """Every dropped event, the spool's reasons included."""
    return st.dropped() + sum(st.dropped(r) for r in SPOOL_DROP_REASONS)


def nonzero(st):
    return {k: v for k, v in sorted(st.items()) if v}


def cdp_log_lines(ngx, n=25):
    """The last n error.log lines of the module (for failure messages)."""
    lines = [l for l in ngx.read(ngx.error_log).splitlines() if 'cdp' in l]
    return '\n'.join(lines[-n:])


def log_problems(ngx):
    return [l for l in ngx.read(ngx.error_log).splitlines()
            if PROBLEM_RE.search(l)]


# --------------------------------------------------------------------------
# nginx with a spool

def spool_nginx(nginx_factory, rs, *, max_size=None, workers=2,
                http_extra='', start=True, wait_redis=True, **kw):
    """An nginx whose http block has `cdp_spool <dir>/spool [max_size=..]`
    (the directory does not exist before: nginx creates it), with Redis's
    reply timeout at 500ms.  ngx.spool_dir is the PATH."""
    if 'redis_line' not in kw:
        kw.setdefault('redis_params', 'timeout=500ms')
    ngx = nginx_factory(rs, start=False, workers=workers, **kw)
    ngx.spool_dir = os.path.join(ngx.dir, 'spool')
    ngx.parts['HTTP_EXTRA'] = 'cdp_spool %s%s;\n    %s' % (
        ngx.spool_dir, ' max_size=' + max_size if max_size else '',
        http_extra)
    ngx.problem_re = PROBLEM_RE
    if start:
        ngx.start(wait_redis=wait_redis)
    return ngx


def spool_files(ngx):
    """{path: size} of the PATH/*.spool files."""
    out = {}
    for p in glob.glob(os.path.join(ngx.spool_dir, '*.spool')):
        try:
            out[p] = os.path.getsize(p)
        except OSError:
            pass
    return out


def wait_status(ngx, pred, timeout=10.0):
    """Polls /status until pred(status) holds; returns that Status, or
    None (the last one is in the failure message of the caller)."""
    got = h.wait_until(lambda: (lambda s: pred(s) and s)(ngx.status()),
                       timeout, 0.05)
    return got or None


def wait_spooled(ngx, timeout=5.0):
    """Until the spool holds something: cdp_spool_bytes > 0 and a .spool
    file with bytes in PATH."""
    ok = h.wait_until(lambda: ngx.status().c(SPOOL_BYTES) > 0
                      and any(spool_files(ngx).values()), timeout, 0.05)
    assert ok, ('nothing spooled while Redis is down: cdp_spool_bytes %d, '
                'files %r; counters %r\n%s' % (
                    ngx.status().c(SPOOL_BYTES), spool_files(ngx),
                    nonzero(ngx.status()), cdp_log_lines(ngx)))


def assert_outage_line(ngx):
    """error.log says where the events go while Redis is away, at
    notice/warn/error level."""
    pat = re.compile(r'cdp: redis .* unavailable \(.*\), events are spooled '
                     r'to ' + re.escape(ngx.spool_dir) + r' until it is back')
    lines = [l for l in ngx.read(ngx.error_log).splitlines()
             if pat.search(l)]
    assert lines, ('no "cdp: redis ... unavailable (...), events are spooled '
                   'to %s until it is back" line:\n%s'
                   % (ngx.spool_dir, cdp_log_lines(ngx)))
    assert all(LOG_LEVEL_RE.search(l) for l in lines), lines


# --------------------------------------------------------------------------
# The load: browsers with a keep-alive connection and a cookie jar each

class LoadBrowser:
    """One browser: its own keep-alive connection and cookie, hits with a
    unique marker each.  A hit that got the GIF is `answered`; one whose
    answer never came (connection error) is `unknown` (it may or may not
    have been stored, never twice); another answer is `bad`."""

    def __init__(self, load, idx):
        self.load, self.idx = load, idx
        self.client = h.Client(load.ngx.port, timeout=5.0)
        self.cookie = None
        self.seq = 0
        self.answered = []              # (marker, phase)
        self.unknown = []
        self.bad = []
        self.errors = []

    @property
    def aid(self):
        return self.cookie.split('.')[0] if self.cookie else None

    def hit(self):
        load = self.load
        self.seq += 1
        marker = '%s.%d.%d' % (load.tag, self.idx, self.seq)
        target = '/p.gif?title=spool&p.m=%s%s' % (marker, load.extra)
        headers = {'Cookie': 'cdp_aid=' + self.cookie} if self.cookie else {}
        try:
            # no retry: a hit that may have reached nginx is never sent
            # again under the same marker
            r = self.client.request('GET', target, headers=headers,
                                    retry=False)
        except (OSError, http.client.HTTPException) as e:
            self.client.close()
            self.unknown.append(marker)
            self.errors.append(repr(e))
            time.sleep(0.02)
            return False
        if not h.is_gif(r):
            self.bad.append((marker, r.status, r.body[:200]))
            return False
        v, attrs = h.cookie_of(r)
        if v and attrs.get('max-age') != '0':
            self.cookie = v
        self.answered.append((marker, load.phase))
        return True

    def run(self, count, interval):
        n = 0
        while not self.load.stopping.is_set() and (count is None
                                                   or n < count):
            self.hit()
            n += 1
            if interval:
                time.sleep(interval)


class Load:
    """n browsers on one nginx, a thread each while they send.  Markers are
    <tag>.<browser>.<seq>; every hit is recorded under the current phase
    (a label the test sets)."""

    def __init__(self, ngx, n=12, tag='m', pad=0):
        self.ngx, self.tag = ngx, tag
        self.extra = ''.join('&p.pad%d=%s' % (i, PAD) for i in range(pad))
        self.phase = 'warmup'
        self.stopping = threading.Event()
        self.browsers = [LoadBrowser(self, i) for i in range(n)]
        self.threads = []

    def warmup(self):
        """One hit per browser, in turn (each gets its cookie), and waits
        until they are stored."""
        for b in self.browsers:
            assert b.hit(), ('warmup hit of browser %d: bad %r errors %r'
                             % (b.idx, b.bad, b.errors))
            assert b.cookie, 'no cookie for browser %d' % b.idx
        n = self.ngx.wait_xlen(len(self.browsers), WAIT)
        assert n >= len(self.browsers), (
            'warmup: %d of %d hits stored (Redis up); counters %r\n%s' % (
                n, len(self.browsers), nonzero(self.ngx.status()),
                cdp_log_lines(self.ngx)))

    def start(self, interval=0.02, count=None, phase=None):
        """Every browser sends hits (count each, or until stop())."""
        assert not self.threads, 'already sending'
        if phase:
            self.phase = phase
        self.stopping.clear()
        self.threads = [threading.Thread(target=b.run, args=(count, interval),
                                         daemon=True) for b in self.browsers]
        for t in self.threads:
            t.start()

    def stop(self, timeout=30.0):
        """Stops and joins the browsers; their records are kept."""
        self.stopping.set()
        self.join(timeout)

    def join(self, timeout):
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.1, deadline - time.monotonic()))
        alive = sum(1 for t in self.threads if t.is_alive())
        self.threads = []
        assert not alive, '%d browsers still sending after %.0f s' % (
            alive, timeout)

    def run(self, count, interval=0.0, phase=None):
        """count hits per browser, all browsers at once; returns when all
        are answered (or failed)."""
        self.start(interval, count, phase)
        self.join(60)

    def close(self):
        """Closes the keep-alive connections (after nginx restarted)."""
        for b in self.browsers:
            b.client.close()

    def answered(self, phase=None):
        """{marker: browser index} of the hits answered (in phase)."""
        return {m: b.idx for b in self.browsers for m, p in list(b.answered)
                if phase is None or p == phase}

    def n_answered(self):
        return sum(len(b.answered) for b in self.browsers)

    @property
    def unknown(self):
        return {m for b in self.browsers for m in list(b.unknown)}

    @property
    def bad(self):
        return [x for b in self.browsers for x in list(b.bad)]

    @property
    def errors(self):
        return [x for b in self.browsers for x in list(b.errors)]


# --------------------------------------------------------------------------
# What is in Redis

Stored = collections.namedtuple('Stored', 'marks aids ids')


def stored(ngx, tag):
    """What the shards' streams hold of this load's markers: marks
    (Counter of marker -> times), aids (Counter of anonymousId -> events),
    ids (anonymousId -> (stream, entry id)); None while Redis cannot be
    read."""
    try:
        entries = ngx.entries()
    except redis.RedisError:
        return None
    got = Stored(collections.Counter(), collections.Counter(),
                 collections.defaultdict(list))
    for k, sid, fields in entries:
        e = json.loads(fields['event'])
        m = (e.get('properties') or {}).get('m')
        if isinstance(m, str) and m.startswith(tag + '.'):
            aid = e.get('anonymousId')
            got.marks[m] += 1
            got.aids[aid] += 1
            got.ids[aid].append((k, sid))
    return got


def timeline(ngx, aid):
    """(stream, id) of the browser's timeline: ids of its shard's
    stream."""
    c = ngx.rc()
    try:
        k = ngx.stream_of(aid)
        return [(k, i) for i in c.lrange(h.key(ngx, 'timeline', aid), 0, -1)]
    finally:
        c.close()


def wait_stored(ngx, load, dropped=None, timeout=WAIT, quiet=3.0):
    """Polls the stream until every answered marker is in it.  Gives up
    early when the stream has not grown for `quiet` seconds and the missing
    markers are no more than the events nginx counted as dropped (dropped():
    a number; those never come).  Returns stored()."""
    last = {'xlen': None, 'since': time.monotonic(), 'got': None}

    def done():
        n = ngx.xlen()
        now = time.monotonic()
        if n != last['xlen'] or last['got'] is None:
            last['xlen'], last['since'] = n, now
            last['got'] = stored(ngx, load.tag)
        if last['got'] is None:
            return False
        missing = set(load.answered()) - set(last['got'].marks)
        if not missing:
            return True
        if dropped is not None and now - last['since'] >= quiet:
            return len(missing) <= dropped()
        return False
    h.wait_until(done, timeout, 0.2)
    got = stored(ngx, load.tag)
    assert got is not None, 'Redis cannot be read'
    return got


def assert_exactly_once(ngx, load, got, allow_missing=0):
    """Every answered marker is in the stream exactly once (allow_missing
    of them may be absent), no marker is there twice, nothing is there that
    no hit asked for, and each browser's profile counts exactly its events
    in the stream: its answered hits (and those of its unanswered ones that
    were stored), and its timeline lists each of them once."""
    marks, aids = got.marks, got.aids
    answered = load.answered()
    unknown = load.unknown
    twice = {m: c for m, c in marks.items() if c > 1}
    missing = sorted(set(answered) - set(marks))
    strangers = sorted(set(marks) - set(answered) - unknown)
    st = ngx.status()
    why = ('%d hits answered (%d unanswered, %d of those stored), %d '
           'markers in the stream; counters %r\n%s' % (
               len(answered), len(unknown), len(unknown & set(marks)),
               len(marks), nonzero(st), cdp_log_lines(ngx)))
    assert not twice, ('%d events stored more than once, e.g. %r; %s' % (
        len(twice), sorted(twice.items())[:5], why))
    assert len(missing) <= allow_missing, (
        '%d answered hits not stored (lost; at most %d allowed), e.g. %r; '
        '%s' % (len(missing), allow_missing, missing[:5], why))
    assert not strangers, ('events nobody sent: %r; %s' % (strangers[:5],
                                                           why))
    for b in load.browsers:
        p = ngx.browser(b.aid)
        mine = aids.get(b.aid, 0)
        ans = len(b.answered)
        ev = int(p.get('events', 0))
        assert ev == mine, (
            'browser %d (%s): profile events %d, but %d of its events in '
            'the stream (%d answered, %d unanswered)' % (
                b.idx, b.aid, ev, mine, ans, len(b.unknown)))
        # the first event's id is the profile's first_event, the others
        # are on its timeline (README: the path of one hit), all in the
        # stream of the browser's shard
        tl = timeline(ngx, b.aid) + ([(ngx.stream_of(b.aid),
                                       p['first_event'])]
                                     if p.get('first_event') else [])
        assert len(tl) == len(set(tl)) and set(tl) == set(got.ids[b.aid]), (
            'browser %d (%s): first_event and timeline hold %d ids (%d '
            'distinct), for %d events in the stream' % (
                b.idx, b.aid, len(tl), len(set(tl)), mine))
        if not allow_missing:
            assert ans <= mine <= ans + len(b.unknown), (
                'browser %d: %d events stored for %d answered hits (%d '
                'unanswered)' % (b.idx, mine, ans, len(b.unknown)))


def assert_no_bad_answers(load):
    assert not load.bad, ('%d hits not answered with the GIF, e.g. %r'
                          % (len(load.bad), load.bad[:3]))


# --------------------------------------------------------------------------
# 0. Nothing to spool while Redis is fine

def test_spool_dir_created_and_idle_while_redis_is_up(redis_factory,
                                                      nginx_factory):
    """nginx creates PATH; while Redis answers nothing is spooled, every
    hit is stored once, and the spool gauges stay at 0."""
    rs = redis_factory(appendonly=True)
    ngx = spool_nginx(nginx_factory, rs)
    assert os.path.isdir(ngx.spool_dir), (
        'cdp_spool did not create %s' % ngx.spool_dir)
    load = Load(ngx, 8, 'idle')
    load.warmup()
    st0 = ngx.status()
    load.run(20, phase='up')
    assert_no_bad_answers(load)
    got = wait_stored(ngx, load, lambda: all_dropped(ngx.status().delta(st0)))
    assert_exactly_once(ngx, load, got)
    st = ngx.status()
    d = st.delta(st0)
    assert d.c(SPOOLED) == 0 and d.c(REPLAYED) == 0, nonzero(d)
    assert st.c(SPOOL_BYTES) == 0, nonzero(st)
    for series in (SPOOLED, REPLAYED, RESENT, ALREADY_APPLIED, SPOOL_BYTES,
                   SPOOL_FILES, SET_ASIDE):
        assert series in st, '/status has no %s:\n%r' % (series, nonzero(st))
    assert all_dropped(d) == 0, nonzero(d)


# --------------------------------------------------------------------------
# 1, 2. Redis goes away under load: kill -9, DEBUG SLEEP, CLIENT PAUSE

def _kill9(rs):
    rs.kill()
    time.sleep(3)                       # the outage
    rs.start()


def _debug_sleep(rs):
    c = rs.client()                     # socket_timeout 5 s > 3 s
    try:
        c.execute_command('DEBUG', 'SLEEP', '3')
    finally:
        c.close()


def _client_pause(rs):
    c = rs.client()
    try:
        assert c.execute_command('CLIENT', 'PAUSE', '3000', 'WRITE')
    finally:
        c.close()
    time.sleep(3)                       # the outage


OUTAGES = {'kill9': _kill9, 'debug_sleep': _debug_sleep,
           'client_pause': _client_pause}


@pytest.mark.parametrize('outage', sorted(OUTAGES))
def test_outage_under_load_every_hit_stored_once(redis_factory,
                                                 nginx_factory, outage):
    """12 browsers send hits continuously; Redis goes away for 3 s (kill -9
    and a restart on the same port and AOF; DEBUG SLEEP 3 with nginx's
    timeout=500ms; CLIENT PAUSE 3000 WRITE), then the hits go on 1.5 s.
    Every answered hit ends up stored exactly once, browsers' profiles
    count each once, events were spooled and nothing was dropped."""
    rs = redis_factory(appendonly=True,
                       extra_args=['--enable-debug-command', 'local'])
    ngx = spool_nginx(nginx_factory, rs, http_extra='cdp_queue_size 256;')
    load = Load(ngx, 12, 'o')
    load.warmup()
    st0 = ngx.status()
    load.start(interval=0.02, phase='load')
    try:
        assert h.wait_until(lambda: load.n_answered() >= 12 + 200, 10), (
            'the load does not flow: %d answered' % load.n_answered())
        OUTAGES[outage](rs)
        time.sleep(1.5)                 # hits after Redis is back
    finally:
        load.stop()
    assert_no_bad_answers(load)
    assert not load.unknown, ('hits without an answer: %d, e.g. %r'
                              % (len(load.unknown), load.errors[:3]))
    got = wait_stored(ngx, load, lambda: all_dropped(ngx.status().delta(st0)))
    assert_exactly_once(ngx, load, got)
    d = ngx.status().delta(st0)
    assert d.c(SPOOLED) > 0, (
        'a 3 s outage (%s) under load and nothing spooled: %r'
        % (outage, nonzero(d)))
    assert all_dropped(d) == 0, ('events dropped: %r' % nonzero(d))
    assert d.dropped('redis_down') == 0, nonzero(d)
    assert wait_status(ngx, lambda s: s.c(SPOOL_BYTES) == 0), (
        'the spool did not drain: %r' % nonzero(ngx.status()))
    if outage == 'kill9':
        assert_outage_line(ngx)


# --------------------------------------------------------------------------
# 3. Spooled, nginx stopped gracefully, started again: replayed once

def test_spool_survives_graceful_stop_and_is_replayed_once(redis_factory,
                                                           nginx_factory):
    """Redis stopped; hits answered and spooled (files in PATH,
    cdp_spool_bytes > 0); nginx QUIT; Redis started; nginx started again on
    the same PATH: every hit is stored once, the files are gone."""
    rs = redis_factory(appendonly=True)
    ngx = spool_nginx(nginx_factory, rs)
    load = Load(ngx, 10, 'g')
    load.warmup()
    rs.stop()
    load.run(20, phase='down')
    assert_no_bad_answers(load)
    assert not load.unknown, load.errors[:3]
    wait_spooled(ngx)
    # a gauge: it may follow the files with a delay
    assert wait_status(ngx, lambda s: s.c(SPOOL_FILES) >= 1), (
        'cdp_spool_files: %r' % nonzero(ngx.status()))
    st_before = ngx.status()
    assert_outage_line(ngx)

    ngx.stop()
    assert not ngx.problems, ngx.problems
    left = spool_files(ngx)
    assert left and any(left.values()), (
        'no spool file left in %s after a graceful stop: %r'
        % (ngx.spool_dir, os.listdir(ngx.spool_dir)))

    rs.start()
    load.close()
    ngx.start()
    got = wait_stored(ngx, load, lambda: all_dropped(st_before))
    assert_exactly_once(ngx, load, got)
    gone = h.wait_until(lambda: not (set(spool_files(ngx)) & set(left))
                        and ngx.status().c(SPOOL_BYTES) == 0, 10)
    assert gone, ('spool files of the first nginx still there after the '
                  'replay: %r (before: %r); counters %r' % (
                      spool_files(ngx), left, nonzero(ngx.status())))
    st = ngx.status()
    assert st.c(REPLAYED) >= len(load.answered('down')), (
        'replayed %d, %d hits were spooled' % (st.c(REPLAYED),
                                              len(load.answered('down'))))
    assert all_dropped(st) == 0, nonzero(st)


# --------------------------------------------------------------------------
# 4. A lost reply: Redis applied the batch, nginx never heard

def resp_value(buf, pos):
    """One RESP value at buf[pos:]: (value, end), or None when it is not
    all there yet.  ValueError when the bytes are not RESP."""
    nl = buf.find(b'\r\n', pos)
    if nl < 0:
        return None
    t, line, after = buf[pos:pos + 1], bytes(buf[pos + 1:nl]), nl + 2
    if t in (b'+', b'-', b':', b'_', b',', b'#', b'('):
        return line, after
    if t in (b'$', b'=', b'!'):
        n = int(line)
        if n < 0:
            return b'', after
        if len(buf) < after + n + 2:
            return None
        return bytes(buf[after:after + n]), after + n + 2
    if t in (b'*', b'~', b'>', b'%', b'|'):
        n = int(line)
        if n < 0:
            return [], after
        n *= 2 if t in (b'%', b'|') else 1
        items, p = [], after
        for _ in range(n):
            r = resp_value(buf, p)
            if r is None:
                return None
            items.append(r[0])
            p = r[1]
        if t == b'|':                   # attributes: the value follows
            return resp_value(buf, p)
        return items, p
    raise ValueError('not RESP at %d: %r' % (pos, bytes(buf[pos:pos + 16])))


def is_ingest(cmd):
    return (isinstance(cmd, list) and len(cmd) >= 2
            and isinstance(cmd[0], bytes) and cmd[0].upper() == b'FCALL'
            and isinstance(cmd[1], bytes) and b'cdp_ingest' in cmd[1])


class LostReplyProxy:
    """A TCP proxy to Redis.  Armed, it lets the next FCALL cdp_ingest
    through, waits until Redis has answered everything it was sent up to
    then (so the batch is applied), and closes both sockets without
    forwarding those replies: nginx loses the reply of a batch Redis
    applied.  One shot; `fired` tells it happened."""

    def __init__(self, target_port):
        self.target = target_port
        self.port = h.free_port()
        self.armed = threading.Event()
        self.fired = threading.Event()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.socks = []

    def start(self):
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(('127.0.0.1', self.port))
        self.ls.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self):
        self.stopping.set()
        try:
            self.ls.close()
        except OSError:
            pass
        with self.lock:
            for s in self.socks:
                try:
                    s.close()
                except OSError:
                    pass

    def _accept(self):
        while not self.stopping.is_set():
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            threading.Thread(target=self._pipe, args=(c,),
                             daemon=True).start()

    def _take_trigger(self):
        with self.lock:
            if self.armed.is_set():
                self.armed.clear()
                return True
        return False

    def _pipe(self, c):
        try:
            s = socket.create_connection(('127.0.0.1', self.target), 2)
        except OSError:
            c.close()
            return
        with self.lock:
            self.socks += [c, s]
        cbuf, cpos, ncmds = bytearray(), 0, 0
        rbuf, rpos, nreps = bytearray(), 0, 0
        doomed = None           # index of the command whose reply is lost
        raw = False             # not RESP: plain forwarding
        try:
            while not self.stopping.is_set():
                r, _, _ = select.select([c, s], [], [], 0.5)
                if c in r:
                    data = c.recv(65536)
                    if not data:
                        break
                    s.sendall(data)
                    if not raw:
                        cbuf += data
                        try:
                            while True:
                                v = resp_value(cbuf, cpos)
                                if v is None:
                                    break
                                cmd, cpos = v
                                if (doomed is None and is_ingest(cmd)
                                        and self._take_trigger()):
                                    doomed = ncmds
                                ncmds += 1
                        except ValueError:
                            raw = True
                            c.sendall(bytes(rbuf[rpos:]))
                        if cpos == len(cbuf):
                            cbuf, cpos = bytearray(), 0
                if s in r:
                    data = s.recv(65536)
                    if not data:
                        break
                    if raw:
                        c.sendall(data)
                        continue
                    rbuf += data
                    try:
                        while True:
                            v = resp_value(rbuf, rpos)
                            if v is None:
                                break
                            start, rpos = rpos, v[1]
                            if doomed is None or nreps < doomed:
                                c.sendall(bytes(rbuf[start:rpos]))
                            nreps += 1
                    except ValueError:
                        raw = True
                        c.sendall(bytes(rbuf[rpos:]))
                        continue
                    if rpos == len(rbuf):
                        rbuf, rpos = bytearray(), 0
                    # Redis has answered all it was sent, the batch among
                    # them: it is applied; its reply never gets to nginx
                    if (doomed is not None and nreps > doomed
                            and nreps == ncmds and not cbuf):
                        self.fired.set()
                        break
        except OSError:
            pass
        finally:
            for x in (c, s):
                try:
                    x.close()
                except OSError:
                    pass


@pytest.fixture
def lost_reply_proxy(redis_factory):
    """A LostReplyProxy to a Redis with appendonly (torn down after nginx,
    which is made later)."""
    rs = redis_factory(appendonly=True)
    p = LostReplyProxy(rs.port).start()
    p.redis = rs
    yield p
    p.stop()


def test_lost_reply_batch_not_applied_twice(lost_reply_proxy, nginx_factory):
    """nginx talks to Redis through a proxy that, once armed, drops the
    reply of one applied FCALL cdp_ingest and closes the connection.  After
    the reconnect, the batch is resent, the store recognises it
    (cdp_events_already_applied_total > 0): every hit stored once, profile
    counters right, nothing dropped."""
    proxy, rs = lost_reply_proxy, lost_reply_proxy.redis
    prefix = 't' + os.urandom(4).hex()
    ngx = spool_nginx(nginx_factory, rs, prefix=prefix,
                      redis_line='cdp_redis 127.0.0.1:%d prefix=%s '
                                 'timeout=500ms;' % (proxy.port, prefix))
    load = Load(ngx, 10, 'lr')
    load.warmup()
    st0 = ngx.status()
    proxy.armed.set()
    load.start(interval=0.02, phase='lost')
    try:
        fired = h.wait_until(proxy.fired.is_set, 10)
        n = load.n_answered()
        # hits while the worker reconnects, and after
        h.wait_until(lambda: load.n_answered() >= n + 300, 5)
    finally:
        load.stop()
    assert fired, ('the proxy never saw an FCALL cdp_ingest to swallow the '
                   'reply of (armed: %s)' % proxy.armed.is_set())
    assert_no_bad_answers(load)
    assert not load.unknown, load.errors[:3]
    got = wait_stored(ngx, load, lambda: all_dropped(ngx.status().delta(st0)))
    assert_exactly_once(ngx, load, got)
    d = ngx.status().delta(st0)
    assert d.c(ALREADY_APPLIED) > 0, (
        'a batch Redis applied but whose reply was lost: '
        'cdp_events_already_applied_total +0; counters %r' % nonzero(d))
    assert d.c(RESENT) > 0, (
        'the batch in flight when the connection was lost was not resent '
        'from memory: %r' % nonzero(d))
    assert all_dropped(d) == 0, nonzero(d)


# --------------------------------------------------------------------------
# 5. A damaged spool

def test_damaged_spool_set_aside_whole_frames_replayed(redis_factory,
                                                       nginx_factory):
    """A real spool (Redis down, hits, nginx QUIT); then one .spool file is
    cut a few bytes short (inside its last frame) and PATH/garbage.spool is
    random bytes.  With Redis and nginx back: the whole frames are
    replayed, each hit at most once, at most the cut frame's hits (<= one
    batch) missing; both files are logged as set aside and renamed .bad;
    no alert/crit/emerg/crash; nginx still answers and stores; a restart
    replays nothing again."""
    rs = redis_factory(appendonly=True)
    ngx = spool_nginx(nginx_factory, rs,
                      http_extra='cdp_batch_size %d;' % BATCH)
    load = Load(ngx, 8, 'dmg')
    load.warmup()
    rs.stop()
    load.run(25, interval=0.002, phase='down')
    assert_no_bad_answers(load)
    wait_spooled(ngx)
    ngx.stop()
    assert not ngx.problems, ngx.problems
    files = spool_files(ngx)
    assert files, 'no spool file in %s' % ngx.spool_dir
    cut, size = max(files.items(), key=lambda kv: kv[1])
    os.truncate(cut, size - 5)
    garbage = os.path.join(ngx.spool_dir, 'garbage.spool')
    with open(garbage, 'wb') as f:
        f.write(random.Random(16).randbytes(4096))
    damaged = [cut, garbage]

    rs.start()
    load.close()
    ngx.start()

    def bad_files():
        names = os.listdir(ngx.spool_dir)
        return {p: [n for n in names if n.endswith('.bad') and (
            n.startswith(os.path.basename(p) + '.')
            or n == os.path.basename(p)[:-len('.spool')] + '.bad')]
            for p in damaged}
    set_aside = h.wait_until(
        lambda: all(bad_files().values())
        and not (set(spool_files(ngx)) & set(damaged)), 15)
    assert set_aside, ('damaged files not set aside as .bad: %r; spool dir '
                       '%r\n%s' % (bad_files(), os.listdir(ngx.spool_dir),
                                   cdp_log_lines(ngx)))
    got = wait_stored(ngx, load, lambda: BATCH, quiet=1.5)
    assert_exactly_once(ngx, load, got, allow_missing=BATCH)

    lines = [l for l in ngx.read(ngx.error_log).splitlines()
             if 'spool' in l and 'set aside' in l]
    for p in damaged:
        assert any(os.path.basename(p) in l for l in lines), (
            'no "set aside" line for %s:\n%s' % (p, '\n'.join(lines)
                                                 or cdp_log_lines(ngx)))
    assert all(LOG_LEVEL_RE.search(l) for l in lines), lines
    assert ngx.status().c(SET_ASIDE) >= 2, nonzero(ngx.status())
    assert not log_problems(ngx), log_problems(ngx)
    assert ngx.alive()

    # nginx still answers and stores
    load.run(2, phase='after')
    assert_no_bad_answers(load)
    got = wait_stored(ngx, load, lambda: BATCH, quiet=1.5)
    assert set(load.answered('after')) <= set(got.marks), (
        'hits after the damaged spool not stored: %r' % nonzero(ngx.status()))

    # what was replayed is not replayed again, .bad files are left alone
    ngx.stop()
    assert not ngx.problems, ngx.problems
    load.close()
    ngx.start()
    assert all(bad_files().values()), bad_files()
    load.run(1, phase='restart')
    got = wait_stored(ngx, load, lambda: BATCH, quiet=1.5)
    again = h.wait_until(
        lambda: ngx.status().c(REPLAYED) > 0
        or any(c > 1 for c in (stored(ngx, load.tag) or got).marks.values()),
        2.0)
    assert not again, ('after a restart, spooled hits came again: '
                       'replayed %d; counters %r' % (
                           ngx.status().c(REPLAYED), nonzero(ngx.status())))
    assert_exactly_once(ngx, load, stored(ngx, load.tag),
                        allow_missing=BATCH)
    assert not log_problems(ngx), log_problems(ngx)


# --------------------------------------------------------------------------
# 6. The spool is full

def full_lines(ngx):
    return [l for l in ngx.read(ngx.error_log).splitlines()
            if 'spool' in l and 'is full' in l]


def test_spool_full_drops_counted_logged_once_then_recovers(redis_factory,
                                                            nginx_factory):
    """max_size=64k, one worker, Redis down, ~1 MB of hits: every hit is
    answered with the GIF; what does not fit is dropped as spool_full; the
    "is full" line is logged once for the episode; the spool stays within
    max_size.  Redis back: the spool drains, each spooled hit stored once,
    stored + dropped = answered; new hits are stored again."""
    rs = redis_factory(appendonly=True)
    ngx = spool_nginx(nginx_factory, rs, workers=1, max_size='64k')
    load = Load(ngx, 8, 'full', pad=5)
    load.warmup()
    st0 = ngx.status()
    rs.stop()
    load.run(40, phase='down')
    assert_no_bad_answers(load)
    assert not load.unknown, load.errors[:3]
    st = wait_status(ngx, lambda s: s.delta(st0).dropped('spool_full') > 0,
                     5)
    assert st, ('~1 MB of hits into a 64k spool: dropped{spool_full} +0; '
                'counters %r' % nonzero(ngx.status().delta(st0)))
    assert h.wait_until(lambda: full_lines(ngx), 5), (
        'no "spool ... is full" line:\n%s' % cdp_log_lines(ngx))
    assert st.c(SPOOL_BYTES) <= 64 * 1024, nonzero(st)
    assert sum(spool_files(ngx).values()) <= 64 * 1024 + 4096, (
        spool_files(ngx))
    # more hits into the full spool: still one line for the episode
    load.run(10, phase='down')
    assert_no_bad_answers(load)
    lines = full_lines(ngx)
    assert len(lines) == 1, ('"is full" logged %d times in one episode:\n%s'
                             % (len(lines), '\n'.join(lines[:5])))
    assert all(LOG_LEVEL_RE.search(l) for l in lines), lines

    rs.start()
    st = wait_status(ngx, lambda s: s.c(SPOOL_BYTES) == 0
                     and s.delta(st0).c(REPLAYED) > 0, WAIT)
    assert st, ('the spool did not drain once Redis was back: %r'
                % nonzero(ngx.status()))
    got = wait_stored(ngx, load,
                      lambda: all_dropped(ngx.status().delta(st0)))
    d = ngx.status().delta(st0)
    # none twice; profiles and timelines count what the stream has
    assert_exactly_once(ngx, load, got, allow_missing=len(load.answered()))
    down = load.answered('down')
    stored_down = len(set(down) & set(got.marks))
    assert stored_down > 0, 'nothing of the spool stored: %r' % nonzero(d)
    assert stored_down + all_dropped(d) == len(down), (
        '%d hits answered while Redis was down: %d stored + %d dropped; '
        'counters %r' % (len(down), stored_down, all_dropped(d),
                         nonzero(d)))
    assert d.dropped('spool_full') == all_dropped(d), nonzero(d)

    # recovery: new hits are stored again, once
    load.run(5, phase='after')
    assert_no_bad_answers(load)
    got = wait_stored(ngx, load, lambda: all_dropped(ngx.status().delta(st0)))
    after = load.answered('after')
    assert all(got.marks.get(m) == 1 for m in after), (
        'after the recovery: %d of %d hits stored; counters %r' % (
            sum(1 for m in after if m in got.marks), len(after),
            nonzero(ngx.status().delta(st0))))


# --------------------------------------------------------------------------
# 7. Reload and binary upgrade while the spool holds batches

def test_reload_while_spooled_every_hit_stored_once(redis_factory,
                                                    nginx_factory):
    """Redis down, hits flowing and spooled; `nginx -s reload` (the old
    workers leave their spool, the new ones take it over); Redis back:
    every answered hit stored once."""
    rs = redis_factory(appendonly=True)
    ngx = spool_nginx(nginx_factory, rs)
    load = Load(ngx, 10, 'rl')
    load.warmup()
    st0 = ngx.status()
    rs.stop()
    load.start(interval=0.02, phase='down')
    try:
        wait_spooled(ngx)
        old = ngx.reload(wait=True)
        assert not (set(ngx.worker_pids()) & old)
        n = load.n_answered()
        assert h.wait_until(lambda: load.n_answered() >= n + 100, 5), (
            'the new workers do not answer')
    finally:
        load.stop()
    assert_no_bad_answers(load)
    assert ngx.status().c(SPOOL_BYTES) > 0, nonzero(ngx.status())
    rs.start()
    got = wait_stored(ngx, load, lambda: all_dropped(ngx.status().delta(st0)))
    assert_exactly_once(ngx, load, got)
    assert wait_status(ngx, lambda s: s.c(SPOOL_BYTES) == 0), (
        nonzero(ngx.status()))
    d = ngx.status().delta(st0)
    assert d.c(REPLAYED) > 0 and all_dropped(d) == 0, nonzero(d)


def test_binary_upgrade_while_spooled_replayed_once(redis_factory,
                                                    nginx_factory):
    """Redis down, hits spooled; a binary upgrade (USR2 to the master, the
    new master up with its workers and nginx.pid.oldbin there, QUIT to the
    old master) while hits flow; Redis back: every answered hit stored
    once, the new workers replayed what the old ones left."""
    rs = redis_factory(appendonly=True)
    ngx = spool_nginx(nginx_factory, rs, daemon=True)
    load = Load(ngx, 10, 'up')
    load.warmup()
    rs.stop()
    load.start(interval=0.02, phase='down')
    try:
        wait_spooled(ngx)
        old = ngx.upgrade()
        assert ngx.proc.pid != old and len(ngx.worker_pids()) == 2
        n = load.n_answered()
        assert h.wait_until(lambda: load.n_answered() >= n + 100, 5), (
            'the new workers do not answer')
    finally:
        load.stop()
    assert_no_bad_answers(load)
    left = spool_files(ngx)
    assert any(left.values()), 'the spool is empty before Redis is back'
    rs.start()
    got = wait_stored(ngx, load, lambda: 0)
    assert_exactly_once(ngx, load, got)
    st = wait_status(ngx, lambda s: s.c(SPOOL_BYTES) == 0
                     and s.c(REPLAYED) > 0)
    assert st, ('the new nginx did not replay the spool: %r'
                % nonzero(ngx.status()))
    assert all_dropped(st) == 0, nonzero(st)


# --------------------------------------------------------------------------
# 8. Configuration

@pytest.fixture
def conf_ngx(nginx_factory):
    """An instance that is never started: only its `nginx -t`."""
    return nginx_factory(None, start=False,
                         redis_line='cdp_redis 127.0.0.1:6379 prefix=t;')


def _line_of(text, needle):
    n = None
    for i, line in enumerate(text.splitlines(), 1):
        if needle in line:
            n = i
    return n


# (id, conf parts, the bad line's text, any-of tokens naming the problem)
BAD = [
    ('max-size-abc', dict(http_extra='cdp_spool @DIR@/spool max_size=abc;'),
     'max_size=abc', ['abc']),
    ('max-size-0', dict(http_extra='cdp_spool @DIR@/spool max_size=0;'),
     'max_size=0', ['max_size=0', '"0"', 'max_size']),
    ('max-size-empty', dict(http_extra='cdp_spool @DIR@/spool max_size=;'),
     'max_size=', ['max_size']),
    ('unknown-param', dict(http_extra='cdp_spool @DIR@/spool colour=blue;'),
     'colour=blue', ['colour']),
    ('duplicate', dict(http_extra='cdp_spool @DIR@/spool;\n'
                                  '    cdp_spool @DIR@/spool2;'),
     'spool2', ['duplicate']),
    ('in-server', dict(server_extra='cdp_spool @DIR@/spool;'),
     'cdp_spool', ['not allowed']),
    ('no-path', dict(http_extra='cdp_spool;'),
     'cdp_spool;', ['number of arguments', 'invalid', 'path']),
]


@pytest.mark.parametrize('case', BAD, ids=[c[0] for c in BAD])
def test_bad_cdp_spool_rejected(conf_ngx, case):
    """`nginx -t` refuses a bad cdp_spool with an [emerg] that names the
    problem and blames the directive (its name or its line)."""
    cid, parts, needle, tokens = case
    parts = {k: v.replace('@DIR@', conf_ngx.dir) for k, v in parts.items()}
    rc, out, text = conf_ngx.test_config(**parts)
    assert rc != 0, '%s: nginx -t accepted it:\n%s' % (cid, out)
    assert 'unknown directive' not in out, (
        '%s: cdp_spool is not a directive of this build:\n%s' % (cid, out))
    assert '[emerg]' in out, out
    low = re.sub(r'nginx\.conf:\d+', 'nginx.conf', out).lower()
    assert any(t.lower() in low for t in tokens), (
        '%s: the message does not name the problem (want one of %r):\n%s'
        % (cid, tokens, out))
    where = ['cdp_spool']
    line = _line_of(text, needle)
    if line:
        where.append('nginx.conf:%d' % line)
    assert any(w in out for w in where), (
        '%s: the message names neither of %r:\n%s' % (cid, where, out))


GOOD = [
    ('default', 'cdp_spool @DIR@/spool;'),
    ('64k', 'cdp_spool @DIR@/spool max_size=64k;'),
    ('1g', 'cdp_spool @DIR@/spool max_size=1g;'),
    ('512m', 'cdp_spool @DIR@/spool max_size=512m;'),
]


@pytest.mark.parametrize('case', GOOD, ids=[c[0] for c in GOOD])
def test_good_cdp_spool_passes(conf_ngx, case):
    cid, line = case
    rc, out, _ = conf_ngx.test_config(
        http_extra=line.replace('@DIR@', conf_ngx.dir))
    assert rc == 0, '%s: nginx -t failed:\n%s' % (cid, out)
    assert 'test is successful' in out, out
    assert '[emerg]' not in out and '[alert]' not in out, out
