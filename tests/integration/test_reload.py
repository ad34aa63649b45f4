"""`nginx -s reload` while hits flow: every hit is answered, the new
workers store, the counters survive (they live in shared memory) and no
event disappears without being counted."""

import threading
import time

import cdp_harness as h


class Hitter(threading.Thread):
    """Sends hits continuously, each on a connection of its own (no
    keepalive race with closing workers), and records the answers."""

    def __init__(self, ngx, tag):
        super().__init__(daemon=True)
        self.ngx, self.tag = ngx, tag
        self.stop_flag = threading.Event()
        self.ok = 0
        self.bad = []

    def run(self):
        i = 0
        while not self.stop_flag.is_set():
            i += 1
            try:
                r = self.ngx.hit('title=%s%d' % (self.tag, i))
                if h.is_gif(r):
                    self.ok += 1
                else:
                    self.bad.append(r)
            except OSError as e:
                self.bad.append(e)
            time.sleep(0.002)

    def stop(self):
        self.stop_flag.set()
        self.join(10)


def _reload_twice_under_load(ngx):
    before = ngx.status()
    hitters = [Hitter(ngx, 'bg%d-' % k) for k in range(2)]
    for t in hitters:
        t.start()
    try:
        time.sleep(0.5)
        ngx.reload(wait=False)
        time.sleep(1.0)
        ngx.reload(wait=True)
        time.sleep(0.3)
    finally:
        for t in hitters:
            t.stop()
    ok = sum(t.ok for t in hitters)
    bad = [b for t in hitters for b in t.bad]
    return before, ok, bad


def test_reload_while_hits_flow(cdp):
    for i in range(10):
        cdp.hit('title=pre%d' % i)
    assert cdp.wait_xlen(10) == 10
    st_pre = cdp.wait_settled()
    assert st_pre.stored == 10, st_pre

    before, ok, bad = _reload_twice_under_load(cdp)
    assert not bad, '%d failed answers during reload, e.g. %r' % (
        len(bad), bad[:3])
    assert ok > 50, 'only %d hits sent' % ok
    assert cdp.alive()

    # counters survive the reloads
    st = cdp.status()
    assert st.stored >= before.stored and st.accepted >= before.accepted, (
        before, st)

    # hits sent after the reloads completed are stored by the new workers
    cdp.wait_settled()
    n0 = cdp.xlen()
    c = cdp.client()
    try:
        for i in range(50):
            assert h.is_gif(cdp.hit('title=post%d' % i, client=c))
    finally:
        c.close()
    n = cdp.wait_xlen(n0 + 50, 10)
    assert n >= n0 + 50, 'after reload: XLEN %d -> %d for 50 hits' % (n0, n)
    titles = [e['context']['page']['title'] for e in cdp.events()]
    assert sum(1 for t in titles if t.startswith('post')) == 50, titles[-60:]


def test_reload_accounts_for_every_hit(cdp):
    """Each answered hit is stored or counted as dropped, even the ones a
    closing worker still held at the reload."""
    before, ok, bad = _reload_twice_under_load(cdp)
    assert not bad, bad[:3]
    st = cdp.wait_settled(10)
    time.sleep(0.3)
    st = cdp.status()
    n = cdp.xlen()
    d = st.delta(before)
    assert n + d.dropped() == ok, (
        '%d hits answered, %d in the stream, %d counted as dropped: %d '
        'events lost silently at reload; deltas %r' % (
            ok, n, d.dropped(), ok - n - d.dropped(),
            {k: v for k, v in d.items() if v}))
    assert st.stored == n, (
        'stored_total %d but %d events in the stream' % (st.stored, n))
    # a graceful reload loses nothing: old workers send what they hold and
    # wait for Redis's answer before exiting; new ones queue while they
    # connect
    assert d.dropped() == 0, {k: v for k, v in d.items() if v}
