#!/usr/bin/python3
"""make bench-redis: Redis's instructions per pixel event, counted.

wrk's req/s on a small shared machine moves by 2x within a run; the cost of
the store in Redis does not have to be guessed from it.  This script:

1. captures what nginx really sends, twice: without segments and with the
   10 segments of SEGMENTS below (cdp_segment), each time a redis-server
   and nginx with the built module (1 worker, consent default all, no
   GeoIP), `redis-cli MONITOR` recording while the pixel is hit: 2,000
   minted browsers (the pool), then new visitors, then returning ones (each
   hit with a cookie of the pool), the phases told apart by ECHO markers.
   Every hit, the minting's too, carries a browser User-Agent (BROWSER_UA:
   without one the module files it as a bot's and stores nothing; a
   capture with any hit filtered, cdp_filtered_total, stops the script).
   Both captures send the same hits, in the same order (a wrk script with
   a fixed sequence: MIX=mixed, the default, is 79% page views and 21%
   track events, 10% of all "Order Completed" with p.revenue; MIX=pages is
   bare page views only, the hits of this script before segments);
2. replays those FCALL cdp_ingest commands into a second redis-server run
   under callgrind, counting instructions only while a phase's FCALLs run
   (callgrind_control -i on/off), after the ones before it have run
   uncounted; the configuration with segments counts as many events as the
   one without (the FCALLs whose events first reach that number);
3. prints instructions per event and per FCALL for each phase, for each
   store given (default: store/cdp.lua of the tree; STORE_REVS="REV ..."
   replays the same capture into store/cdp.lua of those git revisions, and
   "tree" names the working tree's, so a Lua change is compared on
   identical input: STORE_REVS="HEAD tree"; a store without segments shows
   n/a for them), then 10 segments against none side by side with the
   ratio and the issue's target (at most +20%, informational), and where
   the instructions go: each Redis command's calls (INFO commandstats) and
   inclusive instructions (callgrind_annotate) per event (BREAKDOWN=1:
   also the store's segment work part by part, the capture with segments
   replayed into copies of store/cdp.lua with parts cut off: ABLATIONS);
4. the segments' clock: a dataset of TICK_PROFILES profiles (default
   100000; 1000000 takes about 1 GB in Redis and 2 minutes more), made
   directly in Redis in the shape cdp_ingest writes them, 1% of them due
   (in its shard's <prefix>:segments:due:{<tag>} with a time in the past,
   each one a rule flip away: leaving recent or new_today, entering lapsed
   or abandoned), the rest due in the future.  One `FCALL
   cdp_segments_tick ... 1000` (the ARGV[1] nginx sent in the capture) is
   timed on a plain redis-server (INFO commandstats usec, latencystats,
   SLOWLOG, the client's wall time) until nothing is due, then counted
   under callgrind on the same data (its RDB), with an idle tick (nothing
   due).

The capture with segments and the tick's dataset are checked against a
reference evaluation of the 10 rules (in Lua, RULES_LUA): each profile's
`segments` field, the sets <prefix>:segment:{<tag>}:<NAME> (a profile in
its shard's; a segment's members: the sum over the shards' sets) and, for
the clock, one segment event per due profile.  A mismatch is printed, not
fatal.

Counts are exact for one capture; two captures differ by the batch sizes
nginx happened to make (a few hundred instructions an event).

The store's keys are sharded (store/README.md, "Shards"; SHARDS of them,
16 as by default): a capture waits on every shard's event stream, and the
profiles and timelines made and checked here are named with the hash tag
of their shard (tests/integration/cdp_shard.py computes the tags), and so
are the segments' sets and due sets: one a shard (store/README.md,
"Segments"); the clock's tick is called on shard 0's stream and due set,
and takes every shard's on this standalone Redis.

Environment: SECONDS_PER_PHASE (wrk seconds, default 1), REPLAY_FCALLS
(FCALLs counted a phase, default 150), STORE_REVS, MIX (mixed or pages),
TICK_PROFILES (default 100000; 0 skips the clock), TICK_CALLGRIND (1, the
default: also count the tick under callgrind; 0: usec only), BREAKDOWN
(1: the ablations, about 4 replays more), KEEP_BENCH_DIR.
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
sys.path.insert(0, os.path.join(TOP, 'tests', 'integration'))
import cdp_shard  # noqa: E402  (the shards' hash tags)

MODULE = os.path.join(TOP, 'build', 'objs', 'ngx_http_cdp_module.so')
SECONDS = int(os.environ.get('SECONDS_PER_PHASE', '1'))
REPLAY = int(os.environ.get('REPLAY_FCALLS', '150'))
MIX = os.environ.get('MIX') or 'mixed'
TICK_PROFILES = int(os.environ.get('TICK_PROFILES') or '100000')
TICK_CALLGRIND = os.environ.get('TICK_CALLGRIND', '1') != '0'
TICK_LIMIT = 1000
POOL = 2000
PREFIX = 'cost'
SHARDS = 16                   # cdp_redis shards=, the module's default
# the shards' tags, without braces, in order ("0.13 1.10 ..."): for the
# Lua scripts below (their keys)
TAGS = ' '.join(cdp_shard.shard_tag(i, SHARDS) for i in range(SHARDS))
# every shard's event stream
STREAMS = ['%s:events:{%s}' % (PREFIX, t) for t in TAGS.split()]
# every shard's due set of the segments' clock
DUES = ['%s:segments:due:{%s}' % (PREFIX, t) for t in TAGS.split()]
PHASES = ('mint', 'new', 'returning')
MARK = 'cdp-cost:'
TARGET = 1.20                 # the issue: at most +20% with 10 segments
# a browser's (as tests/bench/wrk.sh's BENCH_UA): a hit without a
# User-Agent, or with curl's, is a bot's: answered, not stored
BROWSER_UA = ('Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 '
              '(KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36')

# Realistic marketer rules; RULES_LUA below evaluates the same ones (keep
# them in step).
SEGMENTS = [
    ('loyal', 'count("Order Completed") >= 3'),
    ('big_spender', 'sum("Order Completed", revenue) >= 500'),
    ('lapsed', 'seen_before(30d) and events >= 1'),
    ('recent', 'seen_within(7d)'),
    ('pro_dach', 'trait.plan == "pro" and country in (DE, AT)'),
    ('abandoned', 'last("Checkout Started") before(2d) and '
                  'last("Order Completed") < last("Checkout Started")'),
    ('marketable', 'consent has marketing'),
    ('engaged', 'page_views >= 5'),
    ('signed_up', 'count("Signed Up") >= 1'),
    ('new_today', 'first_seen within(1d)'),
]
CONFIGS = (('none', []), ('10 seg', SEGMENTS))


def die(msg):
    sys.stderr.write('bench-redis: %s\n' % msg)
    sys.exit(2)


class ReplayError(Exception):
    pass


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
                p.wait(120)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def stop_all(self):
        for p in reversed(self.procs):
            self.stop(p)


def redis_server(procs, tmp, port, name, wrapper=(), extra=(), timeout=120):
    log = os.path.join(tmp, name + '.log')
    p = procs.start(list(wrapper) + [
        'redis-server', '--bind', '127.0.0.1', '--port', str(port),
        '--dir', tmp, '--save', '', '--appendonly', 'no',
        '--logfile', log] + list(extra))
    c = redis.Redis(port=port, decode_responses=False)
    wait_for(c.ping, timeout, name + ' to answer PING')
    return p, c


# --- the rules, for checks and the clock's dataset ----------------------------

# The 10 rules of SEGMENTS as plain Lua on a profile's fields F at time now
# (ms): evaluate() gives the segments (in SEGMENTS' order, as the store
# writes the "segments" field) and the next time one may flip (the store's
# due time), as store/cdp.lua's prog_eval() and ngx_cdp_rule.h define it.
RULES_LUA = r"""
local DAY = 86400000
local function n(F, k) return tonumber(F[k]) or 0 end
local function before(t, d, now) return t <= 0 or now >= t + d end
local function within(t, d, now) return t > 0 and now < t + d end
local RULES = {
  {'loyal', function(F, now) return n(F, 'ev.count:Order Completed') >= 3 end},
  {'big_spender', function(F, now)
      return n(F, 'ev.sum:revenue:Order Completed') >= 500 end},
  {'lapsed', function(F, now)
      return before(n(F, 'last_seen'), 30 * DAY, now) and n(F, 'events') >= 1
  end},
  {'recent', function(F, now) return within(n(F, 'last_seen'), 7 * DAY, now) end},
  {'pro_dach', function(F, now)
      return F['trait.plan'] == 'pro' and (F.country == 'DE' or F.country == 'AT')
  end},
  {'abandoned', function(F, now)
      local cs = n(F, 'ev.last:Checkout Started')
      return before(cs, 2 * DAY, now) and n(F, 'ev.last:Order Completed') < cs
  end},
  {'marketable', function(F, now)
      return F.consent ~= nil and string.find(',' .. F.consent .. ',',
                                              ',marketing,', 1, true) ~= nil
  end},
  {'engaged', function(F, now) return n(F, 'page_views') >= 5 end},
  {'signed_up', function(F, now) return n(F, 'ev.count:Signed Up') >= 1 end},
  {'new_today', function(F, now) return within(n(F, 'first_seen'), DAY, now) end},
}
local FLIPS = {{'last_seen', 30 * DAY}, {'last_seen', 7 * DAY},
               {'ev.last:Checkout Started', 2 * DAY}, {'first_seen', DAY}}
local function evaluate(F, now)
  local list, due = {}, nil
  for _, r in ipairs(RULES) do
    if r[2](F, now) then list[#list + 1] = r[1] end
  end
  for _, x in ipairs(FLIPS) do
    local t = n(F, x[1])
    if t > 0 and t + x[2] > now and (due == nil or t + x[2] < due) then
      due = t + x[2]
    end
  end
  return list, due
end
local function hash_table(flat)
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return t
end
local function clock()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# sharded(P, TAGS): a function (kind, pid) -> the key of a profile id's
# kind (profile, timeline) in the store's sharded layout,
# <P><kind>:{<tag>}:<pid>, the tag that of the shard CRC16(pid) mod N
# (Redis Cluster's CRC16), N the number of TAGS (TAGS above: the shards'
# tags, which it checks), as store/cdp.lua names them: with the store's
# own shard helpers, the block store/wire.sh --shard makes of
# store/shard.lua (NSH, TAG_OF, tag())
def _shard_block():
    return subprocess.run(
        ['sh', os.path.join(TOP, 'store', 'wire.sh'), '--shard'],
        check=True, stdout=subprocess.PIPE, universal_newlines=True).stdout


SHARD_LUA = 'local WIRE_SHARDS = %d\n' % SHARDS + _shard_block() + r"""
local function sharded(P, tags)
  local want = {}
  for x in string.gmatch(tags, '%S+') do want[#want + 1] = '{' .. x .. '}' end
  NSH, TAG_OF = #want, {}
  for i = 0, NSH - 1 do
    if shard_tag(i) ~= want[i + 1] then
      error('shard ' .. i .. ': ' .. shard_tag(i) .. ', not ' .. want[i + 1])
    end
  end
  return function(kind, pid)
    return P .. kind .. ':' .. tag(pid) .. ':' .. pid
  end
end
-- (after sharded()) the segments' keys, as store/cdp.lua names them: a
-- segment's set of pid's shard, <P>segment:{<tag>}:<NAME>, and that
-- shard's due set, <P>segments:due:{<tag>}; every shard's set of a
-- segment (NAME) or every due set (NAME nil)
local function seg_key(P, pid, name)
  return P .. 'segment:' .. tag(pid) .. ':' .. name
end
local function due_key(P, pid)
  return P .. 'segments:due:' .. tag(pid)
end
local function every_shard(P, name)
  local keys = {}
  for i = 0, NSH - 1 do
    keys[#keys + 1] = name and P .. 'segment:' .. shard_tag(i) .. ':' .. name
                      or P .. 'segments:due:' .. shard_tag(i)
  end
  return keys
end
"""

# The profiles (ARGV[2] = "scan": every <prefix>:profile:*, else the
# members of the set ARGV[2]; ARGV[3]: the shards' tags) against the
# reference: {checked, "segments" field wrong, set membership (the sets
# of the profile's shard) unlike the field, examples, per segment "NAME
# SCARD expected" (SCARD: summed over the segment's shards' sets), the keys
# of the unsharded layout there are}.
CHECK_LUA = RULES_LUA + SHARD_LUA + r"""
local P, from = ARGV[1], ARGV[2]
local key = sharded(P, ARGV[3])
local now = clock()
local checked, bad_field, bad_set, examples, expect = 0, 0, 0, {}, {}
for _, r in ipairs(RULES) do expect[r[1]] = 0 end
local function check(pid)
  local F = hash_table(redis.call('HGETALL', key('profile', pid)))
  if not F.events or F.merged_into then return end
  checked = checked + 1
  local list = evaluate(F, now)
  for _, name in ipairs(list) do expect[name] = expect[name] + 1 end
  local want, have = table.concat(list, ','), F.segments or ''
  local sets = {}
  for _, r in ipairs(RULES) do
    if redis.call('SISMEMBER', seg_key(P, pid, r[1]), pid) == 1 then
      sets[#sets + 1] = r[1]
    end
  end
  local inset = table.concat(sets, ',')
  if want ~= have then bad_field = bad_field + 1 end
  if inset ~= have then bad_set = bad_set + 1 end
  if (want ~= have or inset ~= have) and #examples < 5 then
    examples[#examples + 1] = pid .. ': segments="' .. have .. '" expected="'
        .. want .. '" sets="' .. inset .. '" events=' .. tostring(F.events)
        .. ' page_views=' .. tostring(F.page_views) .. ' first_seen='
        .. tostring(F.first_seen) .. ' last_seen=' .. tostring(F.last_seen)
        .. ' now=' .. now
  end
end
if from == 'scan' then
  local cursor, plen = '0', #P + #'profile:'
  repeat
    local r = redis.call('SCAN', cursor, 'MATCH', P .. 'profile:*',
                         'COUNT', 1000)
    cursor = r[1]
    for _, k in ipairs(r[2]) do
      -- <P>profile:{<tag>}:<pid>: the pid's key again, so a key in the
      -- wrong shard is not found
      check(string.match(string.sub(k, plen + 1), '^{[^{}]*}:(.*)$') or k)
    end
  until cursor == '0'
else
  for _, pid in ipairs(redis.call('SMEMBERS', from)) do check(pid) end
end
-- a segment's members: the sum over its shards' sets
local counts = {}
for _, r in ipairs(RULES) do
  local card = 0
  for _, k in ipairs(every_shard(P, r[1])) do
    card = card + redis.call('SCARD', k)
  end
  counts[#counts + 1] = r[1] .. ' ' .. card .. ' ' .. expect[r[1]]
end
-- keys of the unsharded layout (<P>segment:<NAME>, <P>segments:due): none
local stray = {}
for _, r in ipairs(RULES) do
  if redis.call('EXISTS', P .. 'segment:' .. r[1]) == 1 then
    stray[#stray + 1] = P .. 'segment:' .. r[1]
  end
end
if redis.call('EXISTS', P .. 'segments:due') == 1 then
  stray[#stray + 1] = P .. 'segments:due'
end
return {checked, bad_field, bad_set, examples, counts, stray}
"""


def store_check(c, prefix, what):
    """Prints what CHECK_LUA finds; returns True when all agree."""
    checked, bad_field, bad_set, examples, counts, stray = c.eval(
        CHECK_LUA, 0, prefix, what, TAGS)
    ok = bad_field == 0 and bad_set == 0 and not stray
    counts = [x.decode().split(' ') for x in counts]
    scan = what == 'scan'
    if scan:
        ok = ok and all(a == b for _, a, b in counts)
    print('    %d profiles: "segments" field unlike the rules: %d, sets '
          'unlike the field: %d%s' % (
              checked, bad_field, bad_set, '' if ok else '   <-- MISMATCH'))
    if scan:
        print('    members (SCARD/expected): ' + ', '.join(
            '%s %s/%s' % tuple(x) for x in counts))
    for e in examples:
        print('      e.g. ' + e.decode())
    if stray:
        print('    keys of the unsharded layout: %s   <-- MISMATCH' %
              ', '.join(k.decode() for k in stray))
    return ok


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
    cdp_redis 127.0.0.1:{rport} prefix={prefix} shards={shards};
    cdp_secret_file {tmp}/secret;
    cdp_stream_maxlen 100000000;
    cdp_consent_default all;
{segments}
    server {{
        listen 127.0.0.1:{hport};
        location = /p.gif {{ cdp_pixel; }}
        location = /status {{ cdp_status; }}
    }}
}}
"""


def hit_paths():
    """The pixel hits, a cycle of 100 (MIX=mixed): 79 page views (bare, as
    before segments), 5 "Product Added", 5 "Checkout Started", 10 "Order
    Completed" with p.revenue (ten amounts) and 1 "Signed Up"."""
    if MIX == 'pages':
        return ['/p.gif']
    if MIX != 'mixed':
        die('MIX is mixed or pages, not %r' % MIX)
    revenue = ['19.90', '59.90', '124.50', '249.00', '89.00', '34.99',
               '310.00', '72.40', '45.00', '180.00']
    out, r = [], 0
    for j in range(100):
        pos = j % 20
        if j == 7:
            out.append('/p.gif?e=Signed%20Up&p.method=email')
        elif pos < 16:
            out.append('/p.gif')
        elif pos == 16:
            out.append('/p.gif?e=Product%%20Added&p.sku=SKU-%d' % (1000 + j))
        elif pos == 17:
            out.append('/p.gif?e=Checkout%20Started')
        else:
            out.append('/p.gif?e=Order%%20Completed&p.revenue=%s'
                       '&p.currency=EUR' % revenue[r % len(revenue)])
            r += 1
    return out


# wrk's one thread calls request() in order: the same sequence of hits in
# every capture; returning visitors' cookies from a fixed seed
HITS_LUA = """\
local paths = {%s}
local ua = "%s"
local pool, n, k = {}, 0, 0

function init(args)
    if args[1] then
        for line in io.lines(args[1]) do
            line = line:gsub("%%s+$", "")
            if line ~= "" then
                n = n + 1
                pool[n] = line
            end
        end
    end
    math.randomseed(4242)
end

function request()
    k = k + 1
    local path = paths[(k - 1) %% #paths + 1]
    if n > 0 then
        return wrk.format(nil, path, { ["User-Agent"] = ua,
                                       ["Cookie"] = pool[math.random(n)] })
    end
    return wrk.format(nil, path, { ["User-Agent"] = ua })
end
"""


def status_counter(hport, name):
    """The sum of the samples of counter name in /status, or -1 (none,
    or nginx not answering yet)."""
    p = subprocess.run(['curl', '-s', 'http://127.0.0.1:%d/status' % hport],
                       stdout=subprocess.PIPE)
    if p.returncode != 0:
        return -1
    out = p.stdout.decode()
    m = re.findall(r'^%s(?:\{[^}]*\})? (\d+)' % re.escape(name), out, re.M)
    return sum(int(x) for x in m) if m else -1


def queued(hport):
    return status_counter(hport, 'cdp_queue_events')


def stored(c):
    """The events in the shards' streams."""
    p = c.pipeline(transaction=False)
    for k in STREAMS:
        p.xlen(k)
    return sum(p.execute())


def settle(c, hport):
    """Until the worker's queue is empty and the streams stop growing."""
    last, same = -1, 0
    for _ in range(600):
        n = stored(c)
        if n == last and queued(hport) == 0:
            same += 1
            if same >= 3:
                return
        else:
            same = 0
        last = n
        time.sleep(0.1)
    die('the stream did not stop growing')


def capture(procs, top, key, segments):
    """The MONITOR file of one configuration, and whether its store check
    passed (None: nothing to check)."""
    tmp = os.path.join(top, 'capture-' + key)
    os.mkdir(tmp)
    rport, hport = free_port(), free_port()
    rp, c = redis_server(procs, tmp, rport, 'capture-redis')
    with open(os.path.join(tmp, 'secret'), 'w') as f:
        f.write(os.urandom(32).hex())
    hits = os.path.join(tmp, 'hits.lua')
    with open(hits, 'w') as f:
        f.write(HITS_LUA % (', '.join('"%s"' % p for p in hit_paths()),
                            BROWSER_UA))
    conf = os.path.join(tmp, 'nginx.conf')
    with open(conf, 'w') as f:
        f.write(NGINX_CONF.format(
            module=MODULE, tmp=tmp, rport=rport, hport=hport,
            prefix=PREFIX, shards=SHARDS,
            user='user root;' if os.getuid() == 0 else '',
            segments=''.join("    cdp_segment %s '%s';\n" % s
                             for s in segments)))
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
        ['curl', '-s', '-A', BROWSER_UA, '-o', '/dev/null', '-D', '-',
         base + '/p.gif?n=[1-%d]' % POOL],
        stdout=subprocess.PIPE, check=True).stdout.decode()
    cookies = re.findall(r'^set-cookie: *(cdp_aid=[^;]*)', hdrs, re.M | re.I)
    if len(set(cookies)) != POOL:
        die('minted %d cookies, not %d' % (len(set(cookies)), POOL))
    with open(pool, 'w') as f:
        f.write('\n'.join(cookies) + '\n')
    settle(c, hport)

    for phase, extra in (('new', []), ('returning', [pool])):
        c.echo(MARK + phase)
        args = ['wrk', '-t1', '-c50', '-d%ds' % SECONDS, '-s', hits,
                base + '/p.gif']
        if extra:
            args += ['--'] + extra
        subprocess.run(args, stdout=subprocess.DEVNULL, check=True)
        settle(c, hport)
    # every hit tracked: none filtered as a bot's (no counter: a module
    # from before the filter)
    filtered = status_counter(hport, 'cdp_filtered_total')
    if filtered > 0:
        die('capture (%s): %d hits filtered (cdp_filtered_total): not '
            'tracked, the capture would not count them' % (key, filtered))
    if segments:
        # at least one tick of the clock in the capture, for its ARGV[1]
        time.sleep(1.2)
    c.echo(MARK + 'end')
    wait_for(lambda: (MARK + 'end').encode() in open(mon_path, 'rb').read()
             [-4096:], 10, 'the end of the capture')
    procs.stop(mon)
    procs.stop(ngx, signal.SIGQUIT)
    ok = None
    if segments:
        print('  store check of the capture (%s), every profile against '
              'the rules:' % key)
        ok = store_check(c, PREFIX + ':', 'scan')
    errors = [l for l in open(os.path.join(tmp, 'error.log'))
              if '[error]' in l or '[crit]' in l or '[alert]' in l]
    if errors:
        print('  error.log of the capture (%s): %d errors, e.g. %s'
              % (key, len(errors), errors[0].strip()))
        ok = False
    procs.stop(rp)
    mon_out.close()
    return mon_path, ok


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
    """{phase: [FCALL args, ...]} in the order they were sent, and the
    last FCALL cdp_segments_tick (or None)."""
    out, cur, tick = {p: [] for p in PHASES}, None, None
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
            elif cmd == b'FCALL' and a[1] == b'cdp_segments_tick':
                tick = a
    for p in PHASES:
        if not out[p]:
            die('no FCALL cdp_ingest captured in phase ' + p)
    return out, tick


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
    """The events of one FCALL cdp_ingest: its keys but the stream and,
    when the batch carries a batch id, KEYS[2], its writer's bitmap
    (<prefix>:once:...)."""
    n = int(fcall[2]) - 1
    if n >= 1 and fcall[4].startswith(PREFIX.encode() + b':once:'):
        n -= 1
    return n


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
                raise ReplayError('cdp_ingest failed on the replay: %s' % r)
            if r[0] != events(a):
                raise ReplayError('cdp_ingest stored %d of %d events on the '
                                  'replay: %r' % (r[0], events(a), r))


def instructions(outfile):
    """Ir of a callgrind dump (its "totals:"; "summary:" is 0 after a
    zeroing)."""
    with open(outfile) as f:
        for line in f:
            if line.startswith('totals:'):
                return int(line.split()[1])
    die('no totals in ' + outfile)


def functions(outfile):
    """{function: inclusive Ir} of a callgrind dump (callgrind_annotate);
    redis-server is stripped, but its commands are in its dynamic symbols
    (xaddCommand...); Lua's own functions are not."""
    out = subprocess.run(
        ['callgrind_annotate', '--inclusive=yes', '--threshold=100',
         '--show-percs=no', '--auto=no', outfile],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout.decode(
            errors='replace')
    res = {}
    for line in out.splitlines():
        m = re.match(r'^\s*([\d,]+)\s+(?:\([^)]*\)\s+)?\S*?:(\S+)', line)
        if m:
            name = m.group(2)
            res[name] = res.get(name, 0) + int(m.group(1).replace(',', ''))
    return res


# callgrind_control says what it sends on both outputs; a failure is its
# exit status
QUIET = {'stdout': subprocess.DEVNULL, 'stderr': subprocess.DEVNULL,
         'check': True}


def counted(rp, tmp, name, label, work):
    """Runs work() with callgrind counting; returns the dump's path."""
    ctl = ['callgrind_control']
    subprocess.run(ctl + ['-z', str(rp.pid)], **QUIET)
    subprocess.run(ctl + ['-i', 'on', str(rp.pid)], **QUIET)
    work()
    subprocess.run(ctl + ['-i', 'off', str(rp.pid)], **QUIET)
    for f in os.listdir(tmp):
        if f.startswith(name + '.callgrind'):
            os.unlink(os.path.join(tmp, f))
    subprocess.run(ctl + ['-d', str(rp.pid)], **QUIET)
    dumps = sorted(f for f in os.listdir(tmp)
                   if f.startswith(name + '.callgrind'))
    if not dumps:
        die('callgrind wrote no dump')
    kept = os.path.join(tmp, '%s-%s.out' % (name, label))
    os.rename(os.path.join(tmp, dumps[-1]), kept)
    return kept


def cmdstats(c):
    """{command: calls} of INFO commandstats."""
    res = {}
    for k, v in c.info('commandstats').items():
        res[k[len('cmdstat_'):]] = v['calls']
    return res


def measure(procs, tmp, caught, rev, key, want=None, src=None):
    """{phase: (Ir, events, FCALLs, {command: calls}, {function: Ir})}, or
    None when this store cannot replay the capture.  want: {phase: events}
    to count (the FCALLs whose events first reach it), else REPLAY
    FCALLs."""
    port = free_port()
    name = 'replay-%s-%s' % ((rev or 'tree').replace('/', '_'),
                             key.replace(' ', ''))
    out = os.path.join(tmp, name + '.callgrind')
    rp, c = redis_server(procs, tmp, port, name, wrapper=[
        'valgrind', '--quiet', '--tool=callgrind', '--instr-atstart=no',
        '--callgrind-out-file=' + out])
    c.function_load(src or store_lua(rev), replace=True)
    res = {}
    try:
        for phase in PHASES:
            fcalls = caught[phase]
            if phase == 'mint':
                replay(c, fcalls)               # the pool's profiles
                continue
            k = REPLAY
            if want:
                k, n = 0, 0
                while k < len(fcalls) and n < want[phase]:
                    n += events(fcalls[k])
                    k += 1
            part = fcalls[:k]
            n = sum(events(a) for a in part)
            c.config_resetstat()
            dump = counted(rp, tmp, name, phase, lambda: replay(c, part))
            res[phase] = (instructions(dump), n, len(part), cmdstats(c),
                          functions(dump))
            replay(c, fcalls[k:])               # the rest, uncounted
    except ReplayError as e:
        print('  %s, %s: %s' % (rev or 'tree', key, e))
        res = None
    c.close()
    procs.stop(rp)
    return res


def attribution(ir, n, calls, fn):
    """[(label, calls/event or None, Ir/event)] of one counted phase: each
    Redis command (its function, inclusive, named by INFO commandstats),
    then what surrounds them."""
    rows, cmds = [], 0
    for cmd, k in calls.items():
        f = fn.get(cmd + 'Command')
        if cmd == 'fcall' or f is None:
            continue
        rows.append((cmd.upper(), k / n, f / n))
        cmds += f
    rows.sort(key=lambda r: -r[2])
    fcall = fn.get('fcallCommand', 0)
    sc = fn.get('scriptCall', 0)
    pr = fn.get('parseReply', 0)
    rows += [('Redis commands, sum', None, cmds / n),
             ('redis.call: ACL, propagation...', None, (sc - cmds) / n),
             ('redis.call: reply to Lua', None, pr / n),
             ('Lua: VM, strings, tables, GC,', None, (fcall - sc - pr) / n),
             ('     cjson, sha1hex, arguments', None, None),
             ('outside FCALL (network, RESP)', None, (ir - fcall) / n),
             ('total', None, ir / n)]
    return rows


def where(results, rev):
    """Per event, each Redis command's calls and inclusive instructions,
    and what surrounds them, the configurations side by side."""
    a, b = results.get((rev, 'none')), results.get((rev, '10 seg'))
    if not a or not b:
        return
    for phase in ('new', 'returning'):
        ra = attribution(*a[phase][:2], *a[phase][3:])
        rb = attribution(*b[phase][:2], *b[phase][3:])
        da, db = {r[0]: r for r in ra}, {r[0]: r for r in rb}
        cmds = [r[0] for r in rb if r[1] is not None]
        cmds += [r[0] for r in ra if r[1] is not None and r[0] not in db]
        rest = [r[0] for r in rb if r[1] is None]
        print()
        print('where the instructions go, %s visitors, per event (calls: INFO'
              ' commandstats; Ir: callgrind, inclusive):' % phase)
        print('  %-32s %17s   %17s %9s' % ('', 'none', '10 segments', ''))
        print('  %-32s %6s %10s   %6s %10s %9s' % (
            '', 'calls', 'Ir', 'calls', 'Ir', 'delta'))
        for label in cmds + rest:
            x = da.get(label, (label, 0, 0))
            y = db.get(label, (label, 0, 0))
            if y[2] is None:
                print('  %s' % label)
                continue
            if label in cmds and max(x[2], y[2]) < 200:
                continue
            print('  %-32s %6s %10.0f   %6s %10.0f %+9.0f' % (
                label, '' if x[1] is None else '%.2f' % x[1], x[2],
                '' if y[1] is None else '%.2f' % y[1], y[2], y[2] - x[2]))


# What the store's segments work costs, part by part: the capture with
# segments replayed into copies of the tree's store/cdp.lua with a part cut
# off (a "return" put in): (label, [(regex, what to put after its match)]).
# A pattern the store no longer has skips its row.
ABLATIONS = [
    ('arguments only: no facts, no evaluation',
     [(r'\nlocal function segments_update\([^)]*\)\n', '    do return end\n'),
      (r'\nlocal function fact\([^)]*\)\n', '    do return end\n')]),
    ('+ facts (ev.count:..., ev.sum:...)',
     [(r'\nlocal function segments_update\([^)]*\)\n', '    do return end\n')]),
    ('+ HGETALL of the profile, its table',
     [(r"\n( *)local F = hash_table\(call\('HGETALL', pk\)\)\n",
       '    if F then return end\n')]),
    ('+ the rules evaluated, SADD/SREM, ZADD due',
     [(r'\nlocal function segment_event\([^)]*\)\n', '    do return end\n')]),
]


def ablate(src, cuts):
    for rx, put in cuts:
        m = re.search(rx, src)
        if not m:
            return None
        src = src[:m.end()] + put + src[m.end():]
    return src


def breakdown(procs, tmp, caught, results):
    a, b = results.get((None, 'none')), results.get((None, '10 seg'))
    if not a or not b:
        return
    want = {p: b[p][1] for p in ('new', 'returning')}
    print()
    print('where the segments\' instructions go in the store (BREAKDOWN=1): '
          'the capture with segments replayed into store/cdp.lua with parts '
          'cut off, per event:')
    print('  %-44s %9s %9s   %9s %9s' % ('', 'new', 'delta', 'returning',
                                         'delta'))
    prev = [a[p][0] / a[p][1] for p in ('new', 'returning')]
    print('  %-44s %9.0f %9s   %9.0f %9s' % (
        'no segments (the capture without)', prev[0], '', prev[1], ''))
    src = store_lua(None)
    for k, (label, cuts) in enumerate(
            ABLATIONS + [('+ segment events (= 10 segments)', None)]):
        if cuts is None:
            res = b
        else:
            v = ablate(src, cuts)
            res = v and measure(procs, tmp, caught, None,
                                'cut%d' % k, want, src=v)
        if not res:
            print('  %-44s n/a (the store changed)' % label)
            continue
        cur = [res[p][0] / res[p][1] for p in ('new', 'returning')]
        print('  %-44s %9.0f %+9.0f   %9.0f %+9.0f' % (
            label, cur[0], cur[0] - prev[0], cur[1], cur[1] - prev[1]))
        prev = cur


# --- 4. the segments' clock ------------------------------------------------------

# ARGV: prefix, first index, count, T (ms, now), 1 in how many is due, the
# shards' tags.
# Profiles in the shape cdp_ingest writes them (pixel hits, some with a
# campaign touch, facts of the events the rules name), their "segments"
# field and sets as the rules give them at T, their due time as the store
# computes it (the next flip after T, kept at least 2 hours ahead).  A due
# profile (one in ARGV[5]) is one rule flip in the past (1 s to 10 min
# ago), its state that of just before the flip: it leaves recent (last
# seen 7 days ago), leaves new_today (first seen a day ago), enters lapsed
# (last seen 30 days ago) or enters abandoned (a checkout 2 days ago, no
# order since); it has a timeline, and is in the set cdp-bench:due.
GEN_LUA = RULES_LUA + SHARD_LUA + r"""
local P, i0, cnt, T, every = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]),
                             tonumber(ARGV[4]), tonumber(ARGV[5])
local key = sharded(P, ARGV[6])
local H, MIN = 3600000, 60000
local MARGIN = 2 * H
local due_n, odd = 0, 0
local FULL, ANALYTICS = 'analytics,marketing,personalization', 'analytics'
for i = i0, i0 + cnt - 1 do
  local pid = string.sub(redis.sha1hex('cdp-bench-profile:' .. i), 1, 32)
  local R = {}
  for _, s in ipairs({'r:', 's:'}) do
    local h = redis.sha1hex(s .. i)
    for j = 0, 9 do
      R[#R + 1] = tonumber(string.sub(h, j * 4 + 1, j * 4 + 4), 16) / 65536
    end
  end
  local isdue = (i % every == 0)
  local kind = isdue and (math.floor(i / every) % 4) or -1
  local Dt = T - 1000 - math.floor(R[20] * 10 * MIN)
  local fs, ls, lcs
  if kind == 0 then                                   -- leaves recent
    ls = Dt - 7 * DAY; fs = ls - math.floor(R[1] * 30 * DAY)
  elseif kind == 1 then                               -- leaves new_today
    fs = Dt - DAY; ls = fs + math.floor(R[2] * (DAY - H))
  elseif kind == 2 then                               -- enters lapsed
    ls = Dt - 30 * DAY; fs = ls - math.floor(R[1] * 60 * DAY)
  elseif kind == 3 then                               -- enters abandoned
    lcs = Dt - 2 * DAY; fs = lcs - H - math.floor(R[1] * 20 * DAY)
    ls = lcs + math.floor(R[2] * DAY)
  else
    fs = T - math.floor(R[1] * 90 * DAY)
    ls = T - math.floor(R[2] * math.min(30 * DAY - 6 * H, T - fs))
  end
  local events = 1 + math.floor(R[3] * 40)
  local F = {events = tostring(events),
             page_views = tostring(math.max(1, math.floor(events * (0.6 + 0.4 * R[4])))),
             first_seen = tostring(fs), last_seen = tostring(ls),
             first_event = fs .. '-0',
             consent = (R[11] < 0.8) and FULL or ANALYTICS}
  if R[12] < 0.3 then
    F.first_touch_at = tostring(fs); F.last_touch_at = tostring(fs)
    for _, w in ipairs({'first', 'last'}) do
      F[w .. '_utm_source'] = 'newsletter'; F[w .. '_utm_medium'] = 'email'
      F[w .. '_utm_campaign'] = 'spring'; F[w .. '_utm_term'] = ''
      F[w .. '_utm_content'] = ''; F[w .. '_referrer'] = 'https://mail.example/'
    end
  end
  local oc = (R[5] < 0.25) and (1 + math.floor(R[6] * 6)) or 0
  local cs = (oc > 0 or R[7] < 0.15 or kind == 3) and (oc + 1) or 0
  local foc, loc
  local top = lcs and (lcs - H) or ls
  if oc > 0 then
    foc = fs + math.floor(R[8] * (top - fs) * 0.5)
    loc = foc + math.floor(R[9] * (top - foc))
    F['ev.count:Order Completed'] = tostring(oc)
    F['ev.first:Order Completed'] = tostring(foc)
    F['ev.last:Order Completed'] = tostring(loc)
    F['ev.sum:revenue:Order Completed'] =
        string.format('%.2f', oc * (19.9 + R[10] * 160))
  end
  if cs > 0 then
    if not lcs then
      -- a checkout after the last order (abandoned) or just before it
      lcs = (R[13] < 0.3 or not loc) and (loc or fs) + math.floor(R[14] * (ls - (loc or fs)))
            or loc - MIN
    end
    F['ev.count:Checkout Started'] = tostring(cs)
    F['ev.first:Checkout Started'] = tostring(math.min(foc or lcs, lcs) - MIN)
    F['ev.last:Checkout Started'] = tostring(lcs)
  end
  if R[15] < 0.1 then
    F['ev.count:Signed Up'] = '1'
    F['ev.first:Signed Up'] = tostring(fs); F['ev.last:Signed Up'] = tostring(fs)
  end
  local list, due
  if isdue then
    list, due = evaluate(F, Dt - 1)
    if due ~= Dt then odd = odd + 1 end
  else
    for _ = 1, 4 do
      list, due = evaluate(F, T)
      if not due or due > T + MARGIN then break end
      for _, x in ipairs(FLIPS) do                    -- flips too soon: back
        local t = n(F, x[1])
        if t > 0 and t + x[2] > T and t + x[2] <= T + MARGIN then
          F[x[1]] = tostring(t - MARGIN)
        end
      end
      if n(F, 'first_seen') > n(F, 'last_seen') then F.first_seen = F.last_seen end
    end
  end
  local flat = {}
  for k, v in pairs(F) do flat[#flat + 1] = k; flat[#flat + 1] = v end
  if #list > 0 then
    flat[#flat + 1] = 'segments'; flat[#flat + 1] = table.concat(list, ',')
  end
  redis.call('HSET', key('profile', pid), unpack(flat))
  for _, name in ipairs(list) do
    redis.call('SADD', seg_key(P, pid, name), pid)
  end
  if due then redis.call('ZADD', due_key(P, pid), due, pid) end
  if isdue then
    due_n = due_n + 1
    redis.call('SADD', 'cdp-bench:due', pid)
    local ids = {}
    for k = math.min(events, 50), 1, -1 do ids[#ids + 1] = (fs + k) .. '-0' end
    redis.call('RPUSH', key('timeline', pid), unpack(ids))
  end
end
return {cnt, due_n, odd}
"""


def tick_call(c, argv1):
    """As nginx calls it: on shard 0's stream and due set (on a standalone
    Redis one call takes every shard's due set)."""
    return c.execute_command('FCALL', 'cdp_segments_tick', 2, STREAMS[0],
                             DUES[0], argv1, TICK_LIMIT)


def zcount_due(c, lo, hi):
    """ZCOUNT summed over the shards' due sets."""
    return sum(c.zcount(k, lo, hi) for k in DUES)


def clock(procs, tmp, argv1, nprof):
    print()
    print('the segments\' clock: %d profiles, %d due (1%%), cdp_segments_tick'
          ' with the limit %d' % (nprof, nprof // 100, TICK_LIMIT))
    port = free_port()
    rp, c = redis_server(procs, tmp, port, 'tick-redis',
                         extra=['--dbfilename', 'tick.rdb'])
    c.function_load(store_lua(None), replace=True)
    t0 = time.time()
    T = int(time.time() * 1000)
    made = due = odd = 0
    step = 20000
    for i in range(0, nprof, step):
        r = c.eval(GEN_LUA, 0, PREFIX + ':', i, min(step, nprof - i), T, 100,
                   TAGS)
        made, due, odd = made + r[0], due + r[1], odd + r[2]
    mem = c.info('memory')
    print('  made in %.1fs: %d profiles, %d due (ZCOUNT past: %d, future: %d)'
          ', used_memory %s, %d keys' % (
              time.time() - t0, made, due,
              zcount_due(c, '-inf', T),
              zcount_due(c, '(%d' % T, '+inf'),
              mem['used_memory_human'], c.dbsize()))
    if odd:
        print('  (%d due profiles with another flip near theirs)' % odd)
    if TICK_CALLGRIND:
        t0 = time.time()
        c.save()
        print('  saved (for the callgrind run) in %.1fs' % (time.time() - t0))

    # plain redis-server: microseconds
    c.config_resetstat()
    c.slowlog_reset()
    walls, replies = [], []
    while True:
        t0 = time.perf_counter()
        r = tick_call(c, argv1)
        walls.append(time.perf_counter() - t0)
        replies.append(r)
        if r[0] == 0 or r[1] == 0 or len(replies) > nprof // TICK_LIMIT + 10:
            break
    st = c.info('commandstats').get('cmdstat_fcall', {})
    lat = c.info('latencystats').get('latency_percentiles_usec_fcall', '?')
    if isinstance(lat, dict):
        lat = ','.join('%s=%s' % kv for kv in lat.items())
    slow = [e['duration'] for e in c.slowlog_get(128)
            if e['command'].startswith(b'FCALL cdp_segments_tick')]
    t0 = time.perf_counter()
    idle = tick_call(c, argv1)
    idle_wall = time.perf_counter() - t0
    evaluated = sum(r[0] for r in replies)
    seg_events = sum(r[2] for r in replies)
    print('  plain redis-server (usec: INFO commandstats, latencystats, '
          'SLOWLOG; wall: the client\'s round trip):')
    print('    %d calls drained the %d due: %d profiles evaluated, %d segment'
          ' events (expected one per due profile: %d)%s' % (
              len(replies), due, evaluated, seg_events, due,
              '' if seg_events == due and evaluated == due
              else '   <-- MISMATCH'))
    print('    replies (evaluated/still due/segment events), wall ms:')
    for k in range(0, len(replies), 5):
        print('      ' + '   '.join('%d/%d/%d %.1f' % (tuple(r) + (1000 * w,))
                                    for r, w in zip(replies[k:k + 5],
                                                    walls[k:k + 5])))
    print('    FCALL: %d calls, %.0f usec per call (%.1f usec per profile '
          'evaluated); latency percentiles (usec) %s; SLOWLOG (> 10 ms): %d '
          'entries, the longest %d usec' % (
              st.get('calls', 0), st.get('usec_per_call', 0),
              st.get('usec', 0) / max(evaluated, 1),
              lat,
              len(slow), max(slow or [0])))
    print('    an idle tick (nothing due, every second): %.2f ms wall, reply '
          '%s' % (1000 * idle_wall, idle))
    print('  store check of the due profiles after the drain:')
    store_check(c, PREFIX + ':', 'cdp-bench:due')
    c.close()
    procs.stop(rp)
    if not TICK_CALLGRIND:
        return

    # the same data under callgrind: instructions of one tick
    t0 = time.time()
    name = 'tick-cg'
    out = os.path.join(tmp, name + '.callgrind')
    rp, c = redis_server(procs, tmp, port, name, wrapper=[
        'valgrind', '--quiet', '--tool=callgrind', '--instr-atstart=no',
        '--callgrind-out-file=' + out],
        extra=['--dbfilename', 'tick.rdb'], timeout=1800)
    wait_for(lambda: c.info('persistence')['loading'] == 0, 1800,
             'the RDB under callgrind')
    print('  under callgrind (RDB loaded in %.0fs):' % (time.time() - t0))
    got = []
    c.config_resetstat()
    dump = counted(rp, tmp, name, 'first',
                   lambda: got.append(tick_call(c, argv1)))
    ir, k = instructions(dump), max(got[0][0], 1)
    print('    first call: reply %s; %d instructions, %.0f per profile '
          'evaluated, of which:' % ('/'.join(str(x) for x in got[0]), ir,
                                    ir / k))
    for label, calls, x in attribution(ir, k, cmdstats(c), functions(dump)):
        if x is None:
            print('      %s' % label)
        elif calls is None or x >= 200:
            print('      %-32s %6s %10.0f' % (
                label, '' if calls is None else '%.2f' % calls, x))
    calls = 1
    r = got[0]
    while r[1] > 0 and r[0] > 0 and calls < nprof // TICK_LIMIT + 10:
        r = tick_call(c, argv1)
        calls += 1
    got = []
    dump = counted(rp, tmp, name, 'idle',
                   lambda: got.append(tick_call(c, argv1)))
    # the FCALL alone: the counted second also runs serverCron
    print('    %d calls drained them; an idle tick (reply %s): %d '
          'instructions (FCALL, inclusive)' % (
              calls, '/'.join(str(x) for x in got[0]),
              functions(dump).get('fcallCommand', 0)))
    c.close()
    procs.stop(rp)


def main():
    for tool in ('nginx', 'redis-server', 'redis-cli', 'wrk', 'curl',
                 'valgrind', 'callgrind_control', 'callgrind_annotate'):
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
        paths = hit_paths()
        tracks = [p for p in paths if 'e=' in p]
        print('capturing the FCALLs nginx sends, without segments and with '
              '10 (pool of %d, then %ds of new and %ds of returning '
              'visitors; hits: %d%% page views, %d%% tracks, %d%% "Order '
              'Completed")...' % (
                  POOL, SECONDS, SECONDS,
                  100 * (len(paths) - len(tracks)) // len(paths),
                  100 * len(tracks) // len(paths),
                  100 * sum('Order' in p for p in paths) // len(paths)))
        caught, tick = {}, None
        for key, segs in CONFIGS:
            mon, ok = capture(procs, tmp, key.replace(' ', ''), segs)
            caught[key], t = phases(mon)
            tick = tick or t
            for p in PHASES:
                print('  %-7s %-9s %5d FCALLs, %7d events' % (
                    key, p, len(caught[key][p]),
                    sum(events(a) for a in caught[key][p])))
        print('replaying %d FCALLs a phase (without segments; with them, as'
              ' many events) into redis-server under callgrind...' % REPLAY)
        results = {}
        for rev in revs:
            want = None
            for key, _ in CONFIGS:
                res = measure(procs, tmp, caught[key], rev, key, want)
                results[(rev, key)] = res
                if res and want is None:
                    want = {p: res[p][1] for p in ('new', 'returning')}
        print()
        print('%-14s %-7s %-10s %8s %8s %14s %12s' % (
            'store', 'config', 'visitors', 'FCALLs', 'events', 'instr/event',
            'instr/FCALL'))
        for rev in revs:
            for key, _ in CONFIGS:
                res = results[(rev, key)]
                for phase in ('new', 'returning'):
                    if not res:
                        print('%-14s %-7s %-10s %8s' % (rev or 'tree', key,
                                                        phase, 'n/a'))
                        continue
                    ir, n, calls = res[phase][:3]
                    print('%-14s %-7s %-10s %8d %8d %14.0f %12.0f' % (
                        rev or 'tree', key, phase, calls, n, ir / n,
                        ir / calls))
        print()
        print('10 segments vs none, instructions per event (target: at most '
              '+%.0f%%, informational):' % (100 * (TARGET - 1)))
        print('%-14s %-10s %12s %12s %8s  %s' % (
            'store', 'visitors', 'none', '10 segments', 'ratio', 'target'))
        for rev in revs:
            a, b = results[(rev, 'none')], results[(rev, '10 seg')]
            for phase in ('new', 'returning'):
                if not a or not b:
                    print('%-14s %-10s %12s' % (rev or 'tree', phase, 'n/a'))
                    continue
                x = a[phase][0] / a[phase][1]
                y = b[phase][0] / b[phase][1]
                print('%-14s %-10s %12.0f %12.0f %7.2fx  %s%s' % (
                    rev or 'tree', phase, x, y, y / x,
                    'met (%+.0f%%)' % (100 * (y / x - 1)) if y / x <= TARGET
                    else 'EXCEEDED (%+.0f%%, target +%.0f%%)' % (
                        100 * (y / x - 1), 100 * (TARGET - 1)),
                    '' if 'cdp_segments_tick' in store_lua(rev) else
                    '; this store has no segments: it ignores them'))
        where(results, revs[-1])
        if os.environ.get('BREAKDOWN') == '1' and None in revs:
            breakdown(procs, tmp, caught['10 seg'], results)

        if TICK_PROFILES > 0:
            if not tick:
                print('no FCALL cdp_segments_tick in the capture: its ARGV[1]'
                      ' is that of cdp_ingest')
                first = caught['10 seg']['new'][0]
                argv1 = first[3 + int(first[2])]
            else:
                argv1 = tick[5]
            clock(procs, tmp, argv1, TICK_PROFILES)
    finally:
        procs.stop_all()
        if os.environ.get('KEEP_BENCH_DIR'):
            print('files kept in ' + tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    main()
