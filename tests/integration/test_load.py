"""Concurrency: 2,000 hits from 50 keepalive connections at once are all
stored, exactly once each (README: batching; docs/directives.md:
cdp_events_stored_total)."""

import concurrent.futures
import socket
import threading

import cdp_harness as h


HITS = 2000
WORKERS = 50


def test_2000_concurrent_hits_all_stored(cdp):
    st0 = cdp.status()
    start = threading.Barrier(WORKERS)

    def run(w):
        c = cdp.client()
        bad = []
        try:
            start.wait(10)
            for i in range(w, HITS, WORKERS):
                r = cdp.hit('title=load&p.n=%d&e=load' % i, client=c)
                if not h.is_gif(r):
                    bad.append((i, r))
        finally:
            c.close()
        return bad

    with concurrent.futures.ThreadPoolExecutor(WORKERS) as ex:
        bad = [b for f in [ex.submit(run, w) for w in range(WORKERS)]
               for b in f.result()]
    assert not bad, 'bad answers: %r' % bad[:5]

    n = cdp.wait_xlen(HITS, 20)
    d = cdp.status().delta(st0)
    assert n == HITS, 'XLEN %d of %d; counters %r' % (
        n, HITS, {k: v for k, v in d.items() if v})

    st = h.wait_until(lambda: (lambda s: s.delta(st0).stored >= HITS and s)(
        cdp.status()), 10)
    d = (st or cdp.status()).delta(st0)
    assert d.stored == HITS, 'stored_total +%d, want %d' % (d.stored, HITS)
    assert d.accepted == HITS, d
    assert d.dropped() == 0, {k: v for k, v in d.items() if v}
    assert d.cookies('new') == HITS, d
    assert (st or cdp.status()).queue == 0

    evs = cdp.events()
    assert len(evs) == HITS
    ns = sorted(int(e['properties']['n']) for e in evs)
    assert ns == list(range(HITS)), 'events lost or stored twice'
    assert len({e['messageId'] for e in evs}) == HITS, 'messageId not unique'
    assert len({e['anonymousId'] for e in evs}) == HITS, (
        'minted ids collide')
    # hits that arrive together go out together
    assert d.c('cdp_redis_batches_total') < HITS, d


def test_batches_respect_batch_size(redis_server, nginx_factory):
    """100 pipelined hits on one connection (one worker): cdp_batch_size 10
    caps each FCALL at 10 events, and hits that arrive together share one."""
    ngx = nginx_factory(redis_server, workers=1,
                        http_extra='cdp_batch_size 10;')
    st0 = ngx.status()
    reqs = b''.join(b'GET /p.gif?title=b%d HTTP/1.1\r\nHost: t\r\n'
                    b'User-Agent: %s\r\n%s\r\n' % (
        i, h.BROWSER_UA.encode(),
        b'Connection: close\r\n' if i == 99 else b'') for i in range(100))
    with socket.create_connection(('127.0.0.1', ngx.port), timeout=10) as s:
        s.sendall(reqs)
        data = b''
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
    assert data.count(b'HTTP/1.1 200 OK') == 100
    assert ngx.wait_xlen(100) == 100
    st = h.wait_until(lambda: (lambda s: s.delta(st0).stored >= 100 and s)(
        ngx.status()), 5)
    d = (st or ngx.status()).delta(st0)
    assert d.stored == 100, d
    batches = d.c('cdp_redis_batches_total')
    assert 10 <= batches < 100, (
        '%d batches for 100 pipelined hits with cdp_batch_size 10' % batches)
