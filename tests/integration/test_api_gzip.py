"""Compressed bodies on the Segment-compatible API (cdp_api,
ngx_cdp_api.c): Content-Encoding gzip, x-gzip and deflate are inflated, the
endpoint's limit applies to the compressed body and again to the inflated
one, and a compression bomb is a 413 without the worker's memory growing.

Real nginx with the module, real Redis; the bodies are made with Python's
gzip and zlib, and with Segment's node SDK through a gzip'ing HTTP client
(the SDK's own httpClient setting: @segment/analytics-node 2.2.1 does not
compress by itself)."""

import gzip
import http.client
import json
import os
import shutil
import subprocess
import time
import zlib

import pytest

import cdp_harness as h
from test_api import (WRITE_KEY, NODE_DIR, start_api, post, basic, ok,
                      error, batch, track, settle, events_by_mid)


BATCH_MAX = 512000
MESSAGE_MAX = 32768
MIB = 1 << 20


@pytest.fixture
def api1(nginx_factory, redis_server):
    """One worker: the one whose memory is watched."""
    return start_api(nginx_factory, redis_server, workers=1)


# --------------------------------------------------------------------------
# helpers

def gz(data, level=6):
    return gzip.compress(data, compresslevel=level)


def jbytes(obj):
    return json.dumps(obj).encode()


def gz_post(ngx, endpoint, obj_or_bytes, encoding='gzip', compress=gz,
            headers=None):
    body = obj_or_bytes if isinstance(obj_or_bytes, bytes) \
        else jbytes(obj_or_bytes)
    hd = {'Content-Encoding': encoding}
    hd.update(headers or {})
    return post(ngx, endpoint, compress(body), headers=hd)


def raw_post(ngx, target, body, header_list, timeout=30):
    """POST with the headers exactly as listed (repeated names too)."""
    c = http.client.HTTPConnection('127.0.0.1', ngx.port, timeout=timeout)
    try:
        t0 = time.monotonic()
        c.putrequest('POST', target, skip_accept_encoding=True)
        for k, v in [('Content-Type', 'application/json'),
                     ('Content-Length', str(len(body))),
                     ('User-Agent', 'ngx-cdp-test'),
                     ('Connection', 'close')] + list(header_list):
            c.putheader(k, v)
        c.endheaders(body)
        r = c.getresponse()
        data = r.read()
        return h.Resp(r.status, r.msg, data, time.monotonic() - t0)
    finally:
        c.close()


def zeros_stream(size, wbits=31, level=9):
    """A gzip member (wbits 31) or zlib stream (15) of size zero bytes,
    compressed 1 MiB at a time: never the whole of it in memory."""
    c = zlib.compressobj(level, zlib.DEFLATED, wbits)
    chunk = bytes(min(size, MIB))
    out = []
    left = size
    while left:
        n = min(left, MIB)
        out.append(c.compress(chunk[:n]))
        left -= n
    out.append(c.flush())
    return b''.join(out)


_bombs = {}


def bomb(name):
    """Compression bombs, made once: (bytes, inflated size)."""
    if name in _bombs:
        return _bombs[name]
    if name == '10m':
        # 10 MiB of zeros, one gzip member of about 10 KB
        b = (zeros_stream(10 * MIB), 10 * MIB)
    elif name == 'members':
        # 16 MiB members repeated up to just under the raw batch limit:
        # about 490 MB inflated from about 500 KB
        m = zeros_stream(16 * MIB)
        k = (BATCH_MAX - 1) // len(m)
        b = (m * k, 16 * MIB * k)
    elif name == 'deflate':
        # one zlib stream, deflate's best ratio (about 1:1030), under the
        # raw limit
        b = (zeros_stream(480 * MIB, wbits=15), 480 * MIB)
    elif name == '1g':
        # 1 GiB of zeros: 64 gzip members of 16 MiB, about 1 MB
        m = zeros_stream(16 * MIB)
        b = (m * 64, 1 << 30)
    elif name == 'json-then-zeros':
        # a valid small batch as the first member, then zeros
        first = gz(jbytes(batch([track('bomb-user')])))
        m = zeros_stream(16 * MIB)
        k = (BATCH_MAX - 1 - len(first)) // len(m)
        b = (first + m * k, None)
    else:
        raise KeyError(name)
    _bombs[name] = b
    return b


def mem(ngx):
    """VmRSS and VmHWM (its peak) in kB, summed over the workers."""
    rss = hwm = 0
    pids = ngx.worker_pids()
    assert pids, 'no worker'
    for pid in pids:
        with open('/proc/%d/status' % pid) as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    rss += int(line.split()[1])
                elif line.startswith('VmHWM:'):
                    hwm += int(line.split()[1])
    return rss, hwm


def stored_nothing(ngx, before_len=0):
    settle(ngx)
    assert ngx.xlen() == before_len


def sample_batch(prefix='gz', n=6):
    msgs = [
        {'type': 'identify', 'userId': prefix + '-user',
         'anonymousId': prefix + '-anon', 'messageId': prefix + '-m0',
         'traits': {'plan': 'pro', 'name': 'Zed'}},
        {'type': 'track', 'userId': prefix + '-user', 'event': 'Order Paid',
         'messageId': prefix + '-m1',
         'properties': {'total': 12.5, 'note': 'caf\u00e9 \u2713'}},
        {'type': 'page', 'userId': prefix + '-user', 'name': 'Home',
         'messageId': prefix + '-m2'},
        {'type': 'screen', 'userId': prefix + '-user', 'name': 'Cart',
         'messageId': prefix + '-m3'},
        {'type': 'group', 'userId': prefix + '-user', 'groupId': 'org-1',
         'messageId': prefix + '-m4'},
        {'type': 'alias', 'userId': prefix + '-user',
         'previousId': prefix + '-old', 'messageId': prefix + '-m5'},
    ]
    return msgs[:n]


def check_stored(ngx, msgs):
    settle(ngx)
    stored = events_by_mid(ngx)
    for m in msgs:
        e = stored.get(m['messageId'])
        assert e is not None, ('not stored', m, stored)
        assert e['type'] == m['type'], e
        for k in ('event', 'properties', 'name', 'groupId', 'previousId'):
            if k in m:
                assert e[k] == m[k], (k, e, m)
    return stored


# --------------------------------------------------------------------------
# 1. compressed batches are stored

def test_gzip_batch_is_stored(api1):
    n = api1
    msgs = sample_batch('gz1')
    raw = jbytes(batch(msgs))
    body = gz(raw)
    assert body[:2] == b'\x1f\x8b'
    r = post(n, 'batch', body, headers={'Content-Encoding': 'gzip'})
    ok(r)
    stored = check_stored(n, msgs)
    assert len(stored) == 6 == n.xlen()
    e = stored['gz1-m1']
    assert e['properties'] == {'total': 12.5, 'note': 'caf\u00e9 \u2713'}
    assert e['userId'] == 'gz1-user' and 'writeKey' not in e
    st = n.status()
    assert st.c('cdp_api_requests_rejected_total') == 0, st


def test_every_coding_and_endpoint(api1):
    n = api1
    cases = [
        ('gzip', gz),
        ('x-gzip', gz),
        ('deflate', zlib.compress),
        ('gzip', lambda b: gz(b, 9)),
        ('gzip', lambda b: gz(b, 0)),     # stored blocks only
    ]
    want = []
    for i, (enc, fn) in enumerate(cases):
        # a single message endpoint, key in the body
        m = dict(track('cod-%d' % i, message_id='cod-t-%d' % i),
                 writeKey=WRITE_KEY)
        ok(gz_post(n, 'track', m, enc, fn))
        want.append(dict(m, type='track'))
        # a batch, key as Basic auth
        ms = sample_batch('cod%d' % i, 3)
        ok(gz_post(n, 'batch', {'batch': ms}, enc, fn,
                   headers={'Authorization': basic(WRITE_KEY)}))
        want += ms
    # identify and /v1/import too
    m = {'userId': 'cod-id', 'traits': {'plan': 'x'},
         'messageId': 'cod-identify', 'writeKey': WRITE_KEY}
    ok(gz_post(n, 'identify', m))
    want.append(dict(m, type='identify'))
    ms = sample_batch('codimp', 2)
    ok(gz_post(n, 'import', batch(ms)))
    want += ms
    check_stored(n, want)
    assert n.xlen() == len(want)


def test_multi_member_gzip_is_one_body(api1):
    """RFC 1952: a gzip file may be several members, concatenated (what
    `cat a.gz b.gz` and some streaming compressors make)."""
    n = api1
    msgs = sample_batch('mm')
    raw = jbytes(batch(msgs))
    cut = [0, 7, len(raw) // 2, len(raw) - 3, len(raw)]
    body = b''.join(gz(raw[a:b]) for a, b in zip(cut, cut[1:]))
    body += gz(b'')                 # an empty member at the end
    assert gzip.decompress(body) == raw
    ok(post(n, 'batch', body, headers={'Content-Encoding': 'gzip'}))
    check_stored(n, msgs)


def test_empty_and_identity_codings(api1):
    n = api1
    for enc in ('identity', 'IDENTITY', '', ' ', ',', 'identity, identity'):
        ok(post(n, 'track', with_mid(track('id-user'), 'id-' + repr(enc)),
                headers={'Content-Encoding': enc}))
    settle(n)
    assert n.xlen() == 6


def with_mid(m, message_id):
    m = dict(m, messageId=message_id, writeKey=WRITE_KEY)
    return m


@pytest.mark.parametrize('value', [
    'GZIP', 'Gzip', 'gZiP', 'X-GZIP', 'X-Gzip', 'DEFLATE', ' gzip',
    'gzip ', '\tgzip\t', 'identity, gzip', 'gzip,identity',
    ' identity ,\tgzip , ', ',gzip', 'gzip,,', 'Identity,Deflate'])
def test_coding_names_any_case_and_spacing(api1, value):
    n = api1
    m = with_mid(track('case-user'), 'case-' + value)
    fn = zlib.compress if 'deflate' in value.lower() else gz
    r = raw_post(n, '/v1/track', fn(jbytes(m)),
                 [('Content-Encoding', value)])
    ok(r)
    settle(n)
    assert [e['messageId'] for e in n.events()] == [m['messageId']]


def test_coding_in_two_headers(api1):
    """Content-Encoding is a list that may come in several fields."""
    n = api1
    m = with_mid(track('two-user'), 'two-headers')
    r = raw_post(n, '/v1/track', gz(jbytes(m)),
                 [('Content-Encoding', 'identity'),
                  ('content-encoding', 'gzip')])
    ok(r)
    # gzip twice: one coding at most
    r = raw_post(n, '/v1/track', gz(gz(jbytes(m))),
                 [('Content-Encoding', 'gzip'), ('Content-Encoding', 'gzip')])
    j = error(r, 415, 'unsupported_content_encoding')
    assert j['field'] == 'Content-Encoding', j
    settle(n)
    assert n.xlen() == 1


def test_sdk_with_gzip_http_client_is_stored(api1):
    """Segment's node SDK, its batches gzip'ed by an httpClient (the SDK's
    own extension point), as RudderStack's and other SDKs send them by
    default."""
    n = api1
    if not os.path.isdir(os.path.join(NODE_DIR, 'node_modules', '@segment',
                                      'analytics-node')):
        pytest.fail('@segment/analytics-node is missing: sh scripts/deps.sh '
                    'test', pytrace=False)
    node = shutil.which('node')
    if node is None:
        pytest.fail('node is not installed', pytrace=False)
    script = r"""
const zlib = require('zlib')
const { Analytics, FetchHTTPClient } = require('@segment/analytics-node')
const sent = []
class GzipClient extends FetchHTTPClient {
  async makeRequest(o) {
    const body = zlib.gzipSync(Buffer.from(o.body))
    const headers = Object.assign({}, o.headers, {'Content-Encoding': 'gzip'})
    sent.push({plain: o.body.length, gzip: body.length, headers})
    return super.makeRequest(Object.assign({}, o, {body, headers}))
  }
}
const a = new Analytics({writeKey: process.argv[2], host: process.argv[1],
                         flushAt: 20, flushInterval: 10, maxRetries: 0,
                         httpClient: new GzipClient()})
const errors = []
a.on('error', (e) => errors.push(String(e.reason && e.reason.message
                                            || e.reason)))
for (let i = 0; i < 50; i++) {
  a.track({userId: 'sdkgz-' + (i % 5), event: 'Gz Tick',
           properties: {i, pad: 'lorem ipsum '.repeat(20)}})
}
a.identify({userId: 'sdkgz-0', traits: {plan: 'gz'}})
a.closeAndFlush({timeout: 20000}).then(() => {
  process.stdout.write(JSON.stringify({sent, errors,
                                       pending: a._pendingEvents}) + '\n')
  process.exit(errors.length ? 1 : 0)
})
"""
    p = subprocess.run(
        [node, '-e', script, 'http://127.0.0.1:%d' % n.port, WRITE_KEY],
        cwd=NODE_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        timeout=60)
    out = json.loads(p.stdout.decode().strip().splitlines()[-1])
    assert p.returncode == 0 and not out['errors'], (out, p.stderr)
    assert not out['pending'], out
    assert len(out['sent']) == 3, out
    for s in out['sent']:
        assert s['headers']['Content-Encoding'] == 'gzip'
        assert s['gzip'] * 3 < s['plain'], s
    settle(n)
    ev = n.events()
    assert len(ev) == 51, len(ev)
    assert sorted(e['properties']['i'] for e in ev if e['type'] == 'track') \
        == list(range(50))
    assert all(e['context']['library']['name'] == '@segment/analytics-node'
               for e in ev)
    assert n.status().c('cdp_api_requests_rejected_total') == 0


# --------------------------------------------------------------------------
# 2. limits: on the compressed body, and on the inflated one

def exact_batch(size):
    """A valid batch body of exactly size bytes."""
    one = {'type': 'track', 'userId': 'lim', 'event': 'E',
           'properties': {'pad': ''}}
    fill = []
    base = len(jbytes(batch([one])))
    while size - base - sum(len(jbytes(f)) + 2 for f in fill) > 31000:
        fill.append(dict(one, properties={'pad': 'z' * 30000}))
    body = jbytes(batch(fill + [one]))
    last = dict(one, properties={'pad': 'q' * (size - len(body))})
    body = jbytes(batch(fill + [last]))
    assert len(body) == size
    return body, len(fill) + 1


def exact_track(size):
    head = b'{"writeKey":"' + WRITE_KEY.encode() + \
        b'","userId":"u","event":"E","properties":{"pad":"'
    tail = b'"}}'
    return head + b'x' * (size - len(head) - len(tail)) + tail


def test_limit_applies_to_the_inflated_size(api1):
    n = api1
    body, count = exact_batch(BATCH_MAX)
    assert len(gz(body)) < 10000
    ok(post(n, 'batch', gz(body), headers={'Content-Encoding': 'gzip'}))
    settle(n)
    assert n.xlen() == count

    body, _ = exact_batch(BATCH_MAX + 1)
    j = error(post(n, 'batch', gz(body), headers={'Content-Encoding': 'gzip'}),
              413, 'body_too_large')
    assert 'inflated' in j['message'], j
    j = error(post(n, 'batch', zlib.compress(body),
                   headers={'Content-Encoding': 'deflate'}),
              413, 'body_too_large')

    ok(post(n, 'track', gz(exact_track(MESSAGE_MAX)),
            headers={'Content-Encoding': 'gzip'}))
    error(post(n, 'track', gz(exact_track(MESSAGE_MAX + 1)),
               headers={'Content-Encoding': 'gzip'}), 413, 'body_too_large')
    settle(n)
    assert n.xlen() == count + 1


def test_limit_applies_to_the_compressed_size_too(api1):
    """Stored deflate blocks make a body larger than what it inflates to:
    the raw body is checked against the same limit, with Content-Length
    before it is read, and chunked after."""
    n = api1
    body, _ = exact_batch(BATCH_MAX - 30)
    z = gz(body, 0)
    assert len(z) > BATCH_MAX
    error(post(n, 'batch', z, headers={'Content-Encoding': 'gzip'}),
          413, 'body_too_large')
    r = chunked_post_enc(n, '/v1/batch', z, 'gzip')
    error(r, 413, 'body_too_large')
    stored_nothing(n)


def chunked_post_enc(ngx, target, body, encoding, chunk=65536):
    c = http.client.HTTPConnection('127.0.0.1', ngx.port, timeout=30)
    try:
        t0 = time.monotonic()
        c.request('POST', target,
                  body=(body[i:i + chunk] for i in range(0, len(body), chunk)),
                  headers={'Content-Type': 'application/json',
                           'Content-Encoding': encoding,
                           'Transfer-Encoding': 'chunked',
                           'Connection': 'close'},
                  encode_chunked=True)
        r = c.getresponse()
        return h.Resp(r.status, r.msg, r.read(), time.monotonic() - t0)
    finally:
        c.close()


# --------------------------------------------------------------------------
# 3. compression bombs

BOMB_CASES = [
    # name, endpoint, how it is sent
    ('10m', 'batch', 'length'),
    ('10m', 'track', 'length'),
    ('members', 'batch', 'length'),
    ('members', 'batch', 'chunked'),
    ('deflate', 'batch', 'length'),
    ('json-then-zeros', 'batch', 'length'),
]


def test_compression_bombs_are_413_without_memory(api1):
    n = api1
    # from a worker that served nothing yet: VmHWM is its peak RSS, so a
    # spike freed again before the next reading still shows
    before_len = n.xlen()
    rss0, hwm0 = mem(n)
    figures = []
    for name, endpoint, how in BOMB_CASES:
        data, inflated = bomb(name)
        enc = 'deflate' if name == 'deflate' else 'gzip'
        if how == 'chunked':
            r = chunked_post_enc(n, '/v1/' + endpoint, data, enc)
        else:
            r = raw_post(n, '/v1/' + endpoint, data,
                         [('Content-Encoding', enc)])
        j = error(r, 413, 'body_too_large')
        assert 'inflated' in j['message'], (name, j)
        assert r.elapsed < 2.0, (name, r.elapsed)
        rss, hwm = mem(n)
        figures.append((name, endpoint, how, len(data), inflated,
                        round(r.elapsed * 1000, 1), rss - rss0, hwm - hwm0))
    print('\nbombs (name, endpoint, sent as, bytes, inflating to, ms, '
          'VmRSS +kB, VmHWM +kB) from VmRSS %d kB, VmHWM %d kB:'
          % (rss0, hwm0))
    for f in figures:
        print('  %s' % (f,))
    rss, hwm = mem(n)
    # the peak, not only what is left: a few MB at most, for bombs of up
    # to 520 MB (the compressed body read back from its temporary file,
    # the inflated buffer of 512001 bytes, zlib's state)
    assert hwm - hwm0 < 4096, figures
    assert rss - rss0 < 4096, figures
    stored_nothing(n, before_len)
    st = n.status()
    assert st.c('cdp_api_requests_rejected_total') == len(BOMB_CASES), st

    # for scale: an ordinary uncompressed batch at the limit, then the
    # same gzip'ed
    body = exact_batch(BATCH_MAX)[0]
    ok(post(n, 'batch', body))
    settle(n)
    rss1, hwm1 = mem(n)
    ok(post(n, 'batch', gz(body), headers={'Content-Encoding': 'gzip'}))
    settle(n)
    rss2, hwm2 = mem(n)
    print('  then a plain batch of %d bytes: VmRSS +%d kB, VmHWM +%d kB; '
          'the same gzip\'ed (%d bytes): VmRSS +%d kB, VmHWM +%d kB'
          % (len(body), rss1 - rss, hwm1 - hwm, len(gz(body)), rss2 - rss1,
             hwm2 - hwm1))


def test_gigabyte_bomb_is_refused_by_its_raw_size(api1):
    """1 GiB of zeros takes about 1 MB compressed (deflate inflates 1030
    times at most), over the raw limit: refused before it is read (with
    Content-Length) or once read (chunked: client_max_body_size, nginx's
    default 1m, or the endpoint's limit), never inflated."""
    n = api1
    data, inflated = bomb('1g')
    assert inflated == 1 << 30 and len(data) > BATCH_MAX
    rss0, hwm0 = mem(n)
    r = raw_post(n, '/v1/batch', data, [('Content-Encoding', 'gzip')])
    error(r, 413, 'body_too_large')
    r2 = chunked_post_enc(n, '/v1/batch', data, 'gzip')
    assert r2.status == 413, r2
    rss, hwm = mem(n)
    print('\n1 GiB bomb (%d bytes): %.1f ms, %.1f ms chunked; VmRSS +%d kB, '
          'VmHWM +%d kB (from %d, %d kB)' % (
              len(data), r.elapsed * 1000, r2.elapsed * 1000, rss - rss0,
              hwm - hwm0, rss0, hwm0))
    assert hwm - hwm0 < 4096 and rss - rss0 < 4096
    stored_nothing(n)


# --------------------------------------------------------------------------
# 4. corrupt streams and unknown codings

def corrupt_cases():
    good = gz(jbytes(batch(sample_batch('bad'))))
    crc = bytearray(good)
    crc[-8] ^= 0xff                         # the member's CRC-32
    size = bytearray(good)
    size[-1] ^= 0x01                        # its ISIZE
    mid = bytearray(good)
    mid[len(mid) // 2] ^= 0x55
    return [
        ('not gzip at all', 'gzip', jbytes(batch(sample_batch('bad')))),
        ('random bytes', 'gzip', os.urandom(300)),
        ('truncated', 'gzip', good[:len(good) // 2]),
        ('no trailer', 'gzip', good[:-8]),
        ('bad crc', 'gzip', bytes(crc)),
        ('bad size', 'gzip', bytes(size)),
        ('flipped byte', 'gzip', bytes(mid)),
        ('trailing garbage', 'gzip', good + b'garbage'),
        ('gzip sent as deflate', 'deflate', good),
        ('raw deflate', 'deflate',
         zlib.compress(jbytes(batch(sample_batch('bad'))))[2:-4]),
        ('deflate then more', 'deflate',
         zlib.compress(jbytes(batch(sample_batch('bad')))) + b'x'),
        ('magic only', 'gzip', b'\x1f\x8b'),
    ]


def test_corrupt_stream_gives_400(api1):
    n = api1
    for what, enc, body in corrupt_cases():
        r = post(n, 'batch', body, headers={'Content-Encoding': enc})
        j = error(r, 400, 'invalid_content_encoding')
        assert j['field'] == 'Content-Encoding', (what, j)
        assert ('gzip' if enc == 'gzip' else 'deflate') in j['message'], j
        assert 'index' not in j and 'position' not in j, j
    stored_nothing(n)
    st = n.status()
    assert st.c('cdp_api_requests_rejected_total') == len(corrupt_cases())


def test_inflated_body_is_checked_as_usual(api1):
    """After inflating, the parser's errors and positions are the inflated
    body's; the write key too."""
    n = api1
    for bad in (b'{"batch": [}', b'{"batch": [{"type": "track", \n"x": 1,'
                b' "x": 2}]}', b'{"batch": []}\xff'):
        j = error(gz_post(n, 'batch', bad), 400, 'invalid_json'
                  if b'\xff' not in bad else 'invalid_utf8')
        assert j == error(post(n, 'batch', bad), 400, j['error']), j
        assert j['position'] > 0, j
    j = error(gz_post(n, 'track', with_key_track()), 400, 'missing_field')
    assert j['field'] == 'event', j
    r = gz_post(n, 'batch', batch(sample_batch('wk'), k='wk-not-configured'))
    assert r.status == 401, r
    # an empty body is empty in any coding
    error(post(n, 'batch', b'', headers={'Content-Encoding': 'gzip'}),
          400, 'invalid_json')
    stored_nothing(n)


def with_key_track():
    return {'writeKey': WRITE_KEY, 'userId': 'u'}


@pytest.mark.parametrize('value', [
    'br', 'BR', 'zstd', 'compress', 'x-compress', 'gzip;q=1', 'gzip2',
    'gzip, br', 'br, gzip', 'gzip, deflate', 'deflate, gzip',
    'gzip, gzip', 'identity, br', '*'])
def test_unknown_or_stacked_coding_gives_415(api1, value):
    n = api1
    r = raw_post(n, '/v1/batch', gz(jbytes(batch(sample_batch('u415')))),
                 [('Content-Encoding', value)])
    j = error(r, 415, 'unsupported_content_encoding')
    assert j['field'] == 'Content-Encoding', j
    assert r.header('Accept-Encoding') == 'gzip, deflate', r
    assert 'gzip' in j['message'], j
    stored_nothing(n)
    assert n.status().c('cdp_api_requests_rejected_total') == 1


def test_415_names_the_coding_escaped(api1):
    n = api1
    r = raw_post(n, '/v1/track', b'{}',
                 [('Content-Encoding', 'b"r\\x' + 'y' * 200)])
    j = error(r, 415, 'unsupported_content_encoding')
    assert 'b"r\\x' + 'y' * 10 in j['message'], j
    assert len(j['message']) < 200, j
    # the body was never needed: the connection is still usable
    c = h.Client(n.port)
    try:
        r = post(n, 'track', b'x' * 20000, client=c,
                 headers={'Content-Encoding': 'br'})
        error(r, 415, 'unsupported_content_encoding')
        r = post(n, 'track', gz(jbytes(with_mid(track('ka'), 'ka-1'))),
                 client=c, headers={'Content-Encoding': 'gzip'})
        ok(r)
    finally:
        c.close()
    settle(n)
    assert n.xlen() == 1
