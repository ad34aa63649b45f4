"""Hit limits and malformed hits (docs/directives.md: cdp_pixel query
fields).  A bad hit still gets the GIF; its event is not stored and is
counted as dropped (malformed or too_large).  Hits at the limits are
stored."""

import json

import pytest

import cdp_harness as h


@pytest.fixture(scope='module')
def stack(workdir, module_path):
    """One nginx + Redis for all cases of this file (run in order)."""
    rs = h.RedisServer(workdir).start()
    ngx = h.Nginx(workdir, rs)
    try:
        ngx.start()
        yield ngx
    finally:
        problems = ngx.finish()
        rs.stop()
    if problems:
        pytest.fail('\n'.join(problems), pytrace=False)


def props(n, prefix='p.k'):
    return '&'.join('%s%d=v' % (prefix, i) for i in range(n))


def pad_query(total, head='title=pad'):
    """A query string of exactly total bytes (an ignored field pads it)."""
    q = head + '&cb='
    return q + 'x' * (total - len(q))


U = '%C3%A9'            # 'é', 2 bytes in UTF-8
LONG_URL = 'https%3A%2F%2Fx.example%2F'           # 'https://x.example/', 18
MALFORMED = [
    ('bad-escape', 'title=%zz'),
    ('truncated-escape', 'title=abc%2'),
    ('invalid-utf8', 'title=%ff'),
    ('overlong-utf8', 'title=%c0%af'),
    ('utf8-surrogate', 'title=%ed%a0%80'),
    ('truncated-utf8', 'title=%c3'),
    ('invalid-utf8-in-url', 'url=https%3A%2F%2Fx.example%2F%ff'),
    ('invalid-utf8-in-property', 'p.a=%fe'),
    ('invalid-utf8-in-event', 'e=%80'),
    ('repeated-property', 'p.a=1&p.a=2'),
    ('bad-property-name', 'p.a$b=1'),
]
TOO_LARGE = [
    ('title-513', 'title=' + 'a' * 513),
    ('title-513-bytes-utf8', 'title=a' + U * 256),
    ('props-26', props(26)),
    ('event-name-129', 'e=' + 'e' * 129),
    ('url-2049', 'url=' + LONG_URL + 'a' * (2049 - 18)),
    ('ref-2049', 'ref=' + LONG_URL + 'a' * (2049 - 18)),
    ('property-name-65', 'p.' + 'n' * 65 + '=v'),
    ('property-value-513', 'p.a=' + 'v' * 513),
    ('query-8193', pad_query(8193)),
]
# (id, query, check of the stored event)
ACCEPTED = [
    ('title-512', 'title=' + 'a' * 512,
     lambda e: e['context']['page']['title'] == 'a' * 512),
    ('title-512-bytes-utf8', 'title=' + U * 256,
     lambda e: e['context']['page']['title'] == '\u00e9' * 256),
    ('props-25', props(25),
     lambda e: len([k for k in e['properties'] if k.startswith('k')]) == 25),
    ('event-name-128', 'e=' + 'e' * 128,
     lambda e: e['type'] == 'track' and e['event'] == 'e' * 128),
    ('url-2048', 'url=' + LONG_URL + 'a' * (2048 - 18),
     lambda e: len(e['context']['page']['url']) == 2048),
    ('property-name-64', 'e=x&p.' + 'n' * 64 + '=v',
     lambda e: e['properties'] == {'n' * 64: 'v'}),
    ('property-value-512', 'e=x&p.a=' + 'v' * 512,
     lambda e: e['properties'] == {'a': 'v' * 512}),
    ('property-name-chars', 'e=x&p.A-z_0.9=v',
     lambda e: e['properties'] == {'A-z_0.9': 'v'}),
    ('query-8192', pad_query(8192),
     lambda e: e['context']['page']['title'] == 'pad'),
    ('utf8-4-bytes', 'title=%F0%9F%98%80',
     lambda e: e['context']['page']['title'] == '\U0001F600'),
    ('empty-query', '', lambda e: e['type'] == 'page'),
]


def _case_queries_sane():
    assert len(pad_query(8193)) == 8193 and len(pad_query(8192)) == 8192


_case_queries_sane()


@pytest.mark.parametrize('reason,case', [('malformed', c) for c in MALFORMED]
                         + [('too_large', c) for c in TOO_LARGE],
                         ids=[c[0] for c in MALFORMED + TOO_LARGE])
def test_bad_hit_gets_gif_and_is_dropped(stack, reason, case):
    cid, query = case
    st0 = stack.status()
    n0 = stack.xlen()
    r = stack.hit(query)
    assert h.is_gif(r), r
    assert r.header('Content-Type') == 'image/gif', r
    st = h.wait_until(lambda: (lambda s: s.delta(st0).dropped(reason) >= 1
                               and s)(stack.status()), 3)
    d = (st or stack.status()).delta(st0)
    assert d.dropped(reason) == 1, (
        '%s: dropped{%s} +%d; deltas %r' % (
            cid, reason, d.dropped(reason),
            {k: v for k, v in d.items() if v}))
    assert d.dropped() == 1, {k: v for k, v in d.items() if v}
    assert d.accepted == 0, 'a dropped hit was queued: %r' % d
    stack.wait_settled()
    assert stack.xlen() == n0, '%s: the bad hit was stored' % cid


@pytest.mark.parametrize('case', ACCEPTED, ids=[c[0] for c in ACCEPTED])
def test_hit_at_limit_is_stored(stack, case):
    cid, query, check = case
    st0 = stack.status()
    n0 = stack.xlen()
    before = {(k, i) for k, i, _f in stack.entries()}
    r = stack.hit(query if query else None)
    assert h.is_gif(r), r
    n = stack.wait_xlen(n0 + 1, 5)
    d = stack.status().delta(st0)
    assert n == n0 + 1, '%s: not stored (XLEN %d -> %d); deltas %r' % (
        cid, n0, n, {k: v for k, v in d.items() if v})
    assert d.dropped() == 0, d
    # the new event, in whichever shard's stream
    (fields,) = [f for k, i, f in stack.entries() if (k, i) not in before]
    e = json.loads(fields['event'])
    assert check(e), '%s: stored event %r' % (cid, e)
