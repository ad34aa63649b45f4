"""Pixel events on a real Redis Cluster (redis-server processes in cluster
mode on loopback, built by the harness: 3 masters, and 3 masters with a
replica each for failover): nginx sends one batch per shard, so each
FCALL stays in one slot; every answered hit is stored once, in the stream
of its browser's shard on the master that owns it, through a master's
failover (with the spool) and a resharding under load."""

import collections
import hashlib
import json
import os
import re
import signal
import time
import urllib.parse

import pytest
from redis.exceptions import RedisError

import cdp_harness as h
import cdp_shard
from test_spool import (Load, wait_stored, assert_exactly_once,
                        assert_no_bad_answers, spool_nginx, nonzero,
                        all_dropped, cdp_log_lines, SPOOLED, REPLAYED,
                        ALREADY_APPLIED)
from test_identity import LOCATIONS as IDENTIFY_LOCATIONS
from test_cluster_identity import settle
from test_capture import (sign_url, UA_GMAIL, UA_YAHOO, timeline_and_first,
                          anon_profile_keys)


def per_master(cluster, ngx):
    """{master port: events in the streams of the shards it owns}."""
    out = collections.Counter()
    for k in ngx.streams:
        port = cluster.master_of_slot(cdp_shard.key_slot(k))
        c = cluster.node_client(port)
        try:
            out[port] += c.xlen(k)
        finally:
            c.close()
    return out


def assert_in_own_shard(ngx, load, got):
    """Each browser's events are in the stream of its own shard."""
    for b in load.browsers:
        streams = {k for k, _i in got.ids[b.aid]}
        assert streams <= {ngx.stream_of(b.aid)}, (
            'browser %d (%s, shard %s): events in %r' % (
                b.idx, b.aid, ngx.tag_of(b.aid), streams))


def assert_all_stored_once(ngx, load, st0):
    """Every answered hit of the load stored once, nothing dropped since
    st0."""
    assert_no_bad_answers(load)
    got = wait_stored(ngx, load, lambda: all_dropped(ngx.status().delta(st0)),
                      timeout=30)
    assert_exactly_once(ngx, load, got)
    d = ngx.status().delta(st0)
    assert all_dropped(d) == 0, 'events dropped: %r\n%s' % (
        nonzero(d), cdp_log_lines(ngx))
    return got


def test_pixel_hits_stored_once_in_their_shards(redis_cluster,
                                                nginx_factory):
    """48 browsers, 6 hits each, two workers: every hit stored once, each
    in its browser's shard, profiles counting them; the three masters
    each hold some; no command crossed slots (no redis_error drop)."""
    ngx = nginx_factory(redis_cluster, workers=2)
    load = Load(ngx, 48, 'c')
    load.warmup()
    load.run(5, phase='load')
    assert_no_bad_answers(load)
    got = wait_stored(ngx, load)
    assert_exactly_once(ngx, load, got)
    assert_in_own_shard(ngx, load, got)
    st = ngx.status()
    assert st.dropped('redis_error') == 0, nonzero(st)
    assert st.c('cdp_events_stored_total') >= 48 * 6, nonzero(st)
    counts = per_master(redis_cluster, ngx)
    assert len(counts) == 3 and all(counts.values()), counts
    assert sum(counts.values()) == 48 * 6, counts


def test_suppressed_browser_dropped_in_its_shard(redis_cluster,
                                                 nginx_factory):
    """An erased browser (its profile gone, its id in every shard's copy
    of the suppression set) is not stored again: the store reads the copy
    in the batch's own slot."""
    ngx = nginx_factory(redis_cluster)
    r = ngx.hit('title=one')
    aid = h.aid_of(r)
    assert aid and ngx.wait_xlen(1) >= 1
    c = ngx.rc()
    try:
        member = 'anonymous_id:' + hashlib.sha1(
            ('anonymous_id:' + aid).encode()).hexdigest()
        for k in ngx.shard_keys('suppressed'):
            c.sadd(k, member)
        c.delete(ngx.skey('profile', aid))
    finally:
        c.close()
    st0 = ngx.status()
    cookie = 'cdp_aid=' + h.cookie_of(r)[0]
    for i in range(3):
        ngx.hit('title=again%d' % i, cookie=cookie)
    d = h.wait_until(lambda: (lambda d: d.dropped('erased') >= 3 and d)(
        ngx.status().delta(st0)), 10)
    assert d, nonzero(ngx.status().delta(st0))
    assert ngx.xlen() == 1, ngx.events()
    assert d.dropped('redis_error') == 0, nonzero(d)


def test_shards_spread_evenly_over_three_masters(redis_cluster,
                                                 nginx_factory):
    """With shards=48 and the slots in three equal runs, each master owns
    16 shards (the tags sit at evenly spaced slots), and 600 browsers'
    events spread within 25% of even (random ids: the spread of a
    sample, not of the shards)."""
    owners = collections.Counter(
        redis_cluster.master_of_slot(cdp_shard.key_slot(
            '{%s}' % cdp_shard.shard_tag(i, 48))) for i in range(48))
    assert sorted(owners.values()) == [16, 16, 16], owners
    ngx = nginx_factory(redis_cluster, redis_params='shards=48')
    c = ngx.client()
    try:
        for i in range(600):
            assert ngx.hit('title=s%d' % i, client=c, cookie='').status \
                == 200
    finally:
        c.close()
    assert ngx.wait_xlen(600) >= 600
    counts = per_master(redis_cluster, ngx)
    assert len(counts) == 3 and sum(counts.values()) == 600, counts
    assert max(counts.values()) <= 1.25 * 200 and \
        min(counts.values()) >= 0.75 * 200, counts


def wait_calls(cl, port=None):
    """WAIT commands the masters (or the one on port) ran."""
    n = 0
    for p in [port] if port else cl.masters():
        c = cl.node_client(p)
        try:
            n += c.info('commandstats').get('cmdstat_wait', {}).get(
                'calls', 0)
        finally:
            c.close()
    return n


def test_batches_wait_for_a_replica(redis_cluster_replicas, nginx_factory):
    """On masters with replicas (the map lists them), each batch is done
    once WAIT 1 says a replica has it: with the replicas answering, none is
    unreplicated;
    with one replica stopped (SIGSTOP), the batches of its master are done
    after WAIT's 100 ms, counted as unreplicated, and stored."""
    cl = redis_cluster_replicas
    ngx = nginx_factory(cl)
    c = ngx.client()
    try:
        for i in range(30):
            assert h.is_gif(ngx.hit('title=w%d' % i, client=c, cookie=''))
        assert ngx.wait_xlen(30) >= 30
        # Redis lists a replica in CLUSTER SLOTS once it has data: the
        # workers see it at their next reading of the map (every 5 s), and
        # from then on each batch is followed by a WAIT
        n = [30]

        def waits():
            for i in range(5):
                n[0] += 1
                assert h.is_gif(ngx.hit('title=v%d' % n[0], client=c,
                                        cookie=''))
            return wait_calls(cl) >= 10
        assert h.wait_until(waits, 15, 0.2), (wait_calls(cl),
                                              nonzero(ngx.status()))
        assert ngx.wait_xlen(n[0]) >= n[0]
        assert h.wait_until(lambda: ngx.status().queue == 0, 10), \
            nonzero(ngx.status())
        # (replicas answer within WAIT's 100 ms on an idle machine; under
        # load some may not: no count of unreplicated is asserted here)
        # a master whose batches wait: the workers' map lists its replica
        # (Redis lists it once it has data, the map is read every 5 s)
        m = next((p for p in cl.masters() if cl.replicas(of=p)
                  and wait_calls(cl, p) > 0), None)
        assert m, [(p, wait_calls(cl, p)) for p in cl.masters()]
        replica = cl.node(cl.replicas(of=m)[0])
        # stopped for less than the cluster's node timeout (1 s): past it
        # the replica is marked failed and leaves CLUSTER SLOTS, and the
        # next map has no replica to wait for
        replica.pause()
        try:
            def unreplicated():
                for i in range(3):
                    n[0] += 1
                    assert h.is_gif(ngx.hit('title=x%d' % n[0], client=c,
                                            cookie=''))
                return ngx.status().c(
                    'cdp_redis_unreplicated_batches_total') > 0
            got = h.wait_until(unreplicated, 0.7, 0.02)
        finally:
            replica.resume()
        assert got, (nonzero(ngx.status()), m, replica.port,
                     cdp_log_lines(ngx))
        # the replica back: batches wait for it again (after the second
        # without WAIT that a timed-out WAIT starts)
        w0 = wait_calls(cl)

        def waits_again():
            for i in range(5):
                n[0] += 1
                assert h.is_gif(ngx.hit('title=y%d' % n[0], client=c,
                                        cookie=''))
            return wait_calls(cl) > w0 + 5
        assert h.wait_until(waits_again, 15, 0.2), (wait_calls(cl), w0)
    finally:
        c.close()
    assert ngx.wait_xlen(n[0]) >= n[0], ngx.xlen()
    st = h.wait_until(lambda: (lambda s: s.queue == 0 and s)(ngx.status()),
                      10)
    assert st and st.dropped('redis_error') == 0, nonzero(ngx.status())


def test_master_failover_under_load_every_hit_once(redis_cluster_replicas,
                                                   nginx_factory):
    """12 browsers send hits; the master of one of their shards is killed
    (-9) and its replica promoted; the hits go on.  Every answered hit is
    stored exactly once (batches of the dead master wait or are spooled,
    and are sent again to the new one; a batch the dead master had applied
    and its replica received answers APPLIED), and profiles count them
    once."""
    cl = redis_cluster_replicas
    ngx = spool_nginx(nginx_factory, cl, http_extra='cdp_queue_size 256;')
    load = Load(ngx, 12, 'f')
    load.warmup()
    victim = cl.master_of_slot(cdp_shard.key_slot(
        ngx.stream_of(load.browsers[0].aid)))
    st0 = ngx.status()
    load.start(interval=0.02, phase='load')
    try:
        assert h.wait_until(lambda: load.n_answered() >= 12 + 200, 10), (
            'the load does not flow: %d answered' % load.n_answered())
        cl.kill(victim)
        cl.wait_failover(victim, timeout=20)
        assert h.wait_until(lambda: load.n_answered() >= 12 + 600, 15)
    finally:
        load.stop()
    assert not load.unknown, load.errors[:3]
    assert_all_stored_once(ngx, load, st0)


def master_of(cl, ngx, id_):
    """Port of the live master that owns the shard of a profile id."""
    return cl.master_of_slot(cdp_shard.key_slot(ngx.stream_of(id_)))


def load_marks_of(got, warm):
    """{browser index: markers of the load (warmup ones left out) in the
    streams}."""
    out = collections.defaultdict(set)
    for m in got.marks:
        if m not in warm:
            out[int(m.split('.')[1])].add(m)
    return out


def blocked_clients(cl, port):
    c = cl.node_client(port, socket_timeout=0.5)
    try:
        return c.info('clients').get('blocked_clients', 0)
    except RedisError:
        return 0
    finally:
        c.close()


def kill_while_waiting(cl, victim, tries=20):
    """kill -9 of the master victim while batches it applied wait (WAIT 1)
    for its replica: the replica is stopped (SIGSTOP, for less than WAIT's
    100 ms and the node timeout) until the master has a blocked client,
    then the master is killed and the replica resumed.  What the master
    wrote to the replica's socket before it died reaches the replica, so
    the batches whose WAIT was lost are APPLIED there when sent again.
    Returns the blocked clients seen (0: the master was killed without a
    WAIT seen pending, after `tries` stops of 80 ms)."""
    replica = cl.node(cl.replicas(of=victim)[0])
    n = 0
    for _ in range(tries):
        replica.pause()
        try:
            n = h.wait_until(lambda: blocked_clients(cl, victim), 0.08,
                             0.002)
            if n:
                cl.kill(victim)
        finally:
            replica.resume()
        if n:
            return n
        # (none blocked: no WAIT timed out either, none was pending)
        assert h.wait_until(replica.ping, 2, 0.01)
    cl.kill(victim)
    return 0


def assert_markers_once(got, answered, unknown, d, why):
    """Every answered marker stored once across the streams, none twice,
    none that no hit asked for (unknown: hits whose answer never came),
    nothing dropped (d: the counters' delta)."""
    twice = {m: c for m, c in got.marks.items() if c > 1}
    assert not twice, ('%d events stored more than once, e.g. %r; %s' % (
        len(twice), sorted(twice.items())[:5], why))
    missing = sorted(set(answered) - set(got.marks))
    assert not missing, ('%d answered hits not stored, e.g. %r; %s' % (
        len(missing), missing[:5], why))
    strangers = sorted(set(got.marks) - set(answered) - unknown)
    assert not strangers, 'events nobody sent: %r; %s' % (strangers[:5],
                                                          why)
    assert all_dropped(d) == 0, 'events dropped: %s' % why


def assert_persons_count(ngx, load, person_of, mine, before, why):
    """Each person's profile counts its browsers' load hits (mine: the
    markers stored, by browser) once, on top of what it had before."""
    pids = sorted(before)
    want = {p: before[p] + sum(len(mine[b.idx]) for b in load.browsers
                               if person_of[b.idx] == p) for p in pids}
    have = {}

    def counted():
        have.update({p: int(h.profile(ngx, p).get('events', 0))
                     for p in pids})
        return have == want
    assert h.wait_until(counted, 10, 0.1), (
        'person events %r, want %r (before the load %r); %s' % (
            have, want, before, why))


def seed_persons(cl, ngx, masters, tag):
    """Seed browsers log in (user ids u-<tag>-<n>) until each of masters
    owns the shard of a person: {master: [(uid, pid)...]} (pids are p<N>
    of one counter: shards as they come)."""
    persons = collections.defaultdict(list)
    n_seed = 0
    while not all(persons[p] for p in masters):
        assert n_seed < 40, dict(persons)
        uid = 'u-%s-%d' % (tag, n_seed)
        n_seed += 1
        assert h.Browser(ngx).login(uid=uid).status == 200
        assert settle(ngx), nonzero(ngx.status())
        pid = h.idx(ngx, 'user_id', uid)
        assert pid, uid
        persons[master_of(cl, ngx, pid)].append((uid, pid))
    return persons


def link_browsers(cl, ngx, load, persons, order):
    """Each load browser logs in (with its cookie) as the first person
    of a master other than its own, those of order in turn: ({browser
    idx: pid}, the pids), once every browser leads to its person."""
    person_of = {}
    turn = collections.Counter()
    for b in load.browsers:
        mb = master_of(cl, ngx, b.aid)
        choices = [persons[p][0] for p in order if p != mb]
        uid, pid = choices[turn[mb] % len(choices)]
        turn[mb] += 1
        assert ngx.tag_of(pid) != ngx.tag_of(b.aid)
        hb = h.Browser(ngx)
        hb.cookie = b.cookie
        assert hb.login(uid=uid).status == 200
        assert hb.aid == b.aid, (hb.cookie, b.cookie)
        b.cookie = hb.cookie
        person_of[b.idx] = pid
    assert settle(ngx, timeout=30), nonzero(ngx.status())
    assert h.wait_until(lambda: all(
        h.resolve(ngx, b.aid) == person_of[b.idx] for b in load.browsers),
        20, 0.1), {b.idx: (b.aid, h.resolve(ngx, b.aid), person_of[b.idx])
                   for b in load.browsers}
    pids = sorted(set(person_of.values()))
    return person_of, pids


def test_master_failover_under_load_forwarded_hits_once(
        redis_cluster_replicas, nginx_factory):
    """12 browsers, each logged in (linked) to a person whose profile is on
    another master than the browser's, send hits: each is counted in the
    browser's shard's cdp_ingest, handed back and forwarded by nginx to
    the person's shard.  The master that owns the shards of several of
    the browsers (their first hop), and of one of the persons (the second
    hop of the others), is killed (-9) while batches of it wait for its
    replica (stopped for a moment: kill_while_waiting), and the replica is
    promoted; the hits go on.  A batch of the dead master is sent again
    to the promoted replica, which has it (APPLIED: the follow-ups held
    until its WAIT are taken then) or applies it anew (its own follow-ups
    are taken, the held ones dropped): every answered hit is stored
    exactly once, in its person's shard, forwarded once
    (cdp_events_forwarded_total counts each stored one once), and each
    person's profile counts its browsers' hits once."""
    cl = redis_cluster_replicas
    bport = str(h.free_port())
    ngx = spool_nginx(nginx_factory, cl,
                      http_extra=h.IDENTIFY_BACKEND.replace('@BPORT@', bport)
                      + 'cdp_queue_size 256;',
                      locations=IDENTIFY_LOCATIONS.replace('@BPORT@', bport))
    load = Load(ngx, 12, 'g')
    load.warmup()

    # the victim: a master with a replica (an earlier test of the module
    # may have left one without) owning the shards of the most browsers
    on = collections.defaultdict(list)
    for b in load.browsers:
        on[master_of(cl, ngx, b.aid)].append(b)
    victim = max((p for p in cl.masters() if cl.replicas(of=p)),
                 key=lambda p: len(on[p]))
    others = sorted(p for p in cl.masters() if p != victim)
    assert len(on[victim]) >= 2, {p: len(v) for p, v in on.items()}

    # a person on the victim and on each other master; each load browser
    # logs in as a person of another master: those of the victim's shards
    # to the others' persons (first hop on the victim), the others to the
    # victim's person or the third master's (second hop on the victim for
    # some)
    persons = seed_persons(cl, ngx, [victim] + others, 'g')
    person_of, pids = link_browsers(cl, ngx, load, persons,
                                    [victim] + others)
    assert any(master_of(cl, ngx, p) == victim for p in pids), pids
    assert any(master_of(cl, ngx, p) != victim for p in pids), pids
    before = {p: int(h.profile(ngx, p).get('events', 0)) for p in pids}
    warm = set(load.answered('warmup'))

    st0 = ngx.status()
    load.start(interval=0.02, phase='load')
    try:
        assert h.wait_until(lambda: load.n_answered() >= 12 + 200, 10), (
            'the load does not flow: %d answered' % load.n_answered())
        # the browsers' hits are forwarded before the kill already
        assert h.wait_until(lambda: ngx.status().delta(st0).c(
            'cdp_events_forwarded_total') > 0, 10), nonzero(
                ngx.status().delta(st0))
        # the victim's batches wait for its replica (the workers' map
        # lists it)
        w0 = wait_calls(cl, victim)
        assert h.wait_until(lambda: wait_calls(cl, victim) > w0 + 10, 15,
                            0.1), (wait_calls(cl, victim), w0)
        pending = kill_while_waiting(cl, victim)
        cl.wait_failover(victim, timeout=20)
        n = load.n_answered()
        assert h.wait_until(lambda: load.n_answered() >= n + 600, 20), (
            'the load does not flow after the failover: %d answered'
            % (load.n_answered() - n))
    finally:
        load.stop()

    assert_no_bad_answers(load)
    got = wait_stored(ngx, load,
                      lambda: all_dropped(ngx.status().delta(st0)),
                      timeout=30)
    answered, unknown = load.answered(), load.unknown
    st = ngx.wait_settled(20)
    d = st.delta(st0)
    why = ('%d hits answered (%d unanswered, %d of those stored), %d '
           'markers in the streams; %d WAITs pending at the kill of %d; '
           'counters since the load %r\n%s' % (
               len(answered), len(unknown), len(unknown & set(got.marks)),
               len(got.marks), pending, victim, nonzero(d),
               cdp_log_lines(ngx)))
    assert_markers_once(got, answered, unknown, d, why)

    # each load hit was forwarded: stored in its person's shard, and
    # forwarded (counted) once
    mine = load_marks_of(got, warm)
    n_load = sum(len(v) for v in mine.values())
    assert n_load >= len(answered) - len(warm)
    for b in load.browsers:
        streams = {k for k, _i in got.ids[b.aid]}
        assert streams <= {ngx.stream_of(b.aid),
                           ngx.stream_of(person_of[b.idx])}
        assert len(got.ids[b.aid]) == 1 + len(mine[b.idx]), b.idx
    on_person = collections.Counter()
    for b in load.browsers:
        for k, _i in got.ids[b.aid]:
            on_person[k == ngx.stream_of(person_of[b.idx])] += 1
    # (the warmup hits, before the logins, in the browsers' shards)
    assert on_person[True] == n_load, (on_person, n_load)
    assert d.c('cdp_events_forwarded_total') == n_load, (
        'forwarded %d, load hits stored %d; %s' % (
            d.c('cdp_events_forwarded_total'), n_load, why))

    # each person counts its browsers' hits once
    assert_persons_count(ngx, load, person_of, mine, before, '')


def test_reload_while_waits_pending_loses_no_forward(
        redis_cluster_replicas, nginx_factory):
    """24 browsers, each logged in (linked) to a person whose profile is on
    another master than the browser's, send hits: each is counted in the
    browser's shard's cdp_ingest, handed back and forwarded by nginx to
    the person's shard, the follow-ups held until the batch's WAIT 1
    returns.  nginx is reloaded (SIGHUP, as nginx -s reload) under that
    load, the replicas stopped (SIGSTOP) around the moment the old workers
    are told to quit, so that batches' WAITs are pending then (up to
    100 ms).  First plainly: an old worker waits for its replies (a
    pending one holds a timer) and exits with nothing left.  Then with
    worker_shutdown_timeout 30ms: an old worker's connections to Redis
    are closed while WAITs are pending, and it exits with those batches
    (applied, perhaps not replicated) to keep: they are spooled (replayed:
    APPLIED, which hands nothing back), and their held follow-ups are
    taken at exit: the forwards are spooled too.  Every answered hit is
    stored exactly once, in its person's shard, forwarded once, and each
    person's profile counts its browsers' hits once."""
    cl = redis_cluster_replicas
    bport = str(h.free_port())
    ngx = spool_nginx(nginx_factory, cl,
                      http_extra=h.IDENTIFY_BACKEND.replace('@BPORT@', bport)
                      + 'cdp_queue_size 256;',
                      locations=IDENTIFY_LOCATIONS.replace('@BPORT@', bport))
    load = Load(ngx, 24, 'q')
    load.warmup()
    masters = sorted(cl.masters())
    # the masters whose batches WAIT: those with a replica (an earlier
    # test of the module may have left some without), owning the shards
    # of some of the browsers (their first hop)
    waiting = [p for p in masters if cl.replicas(of=p)]
    on = collections.Counter(master_of(cl, ngx, b.aid)
                             for b in load.browsers)
    assert sum(on[p] for p in waiting) >= 2, (waiting, on)

    # a person on each master; each load browser logs in as a person of
    # another master
    persons = seed_persons(cl, ngx, masters, 'q')
    person_of, pids = link_browsers(cl, ngx, load, persons, masters)
    before = {p: int(h.profile(ngx, p).get('events', 0)) for p in pids}
    warm = set(load.answered('warmup'))
    replicas = [cl.node(cl.replicas(of=m)[0]) for m in waiting]

    def quitting(pid):
        """The worker was told to quit (nginx retitles it "worker process
        is shutting down"), or is gone."""
        try:
            with open('/proc/%d/cmdline' % pid, 'rb') as f:
                return b'shutting down' in f.read()
        except OSError:
            return True

    def reload_with_waits_pending():
        """A reload, the replicas stopped from just before the master tells
        the old workers to quit (it starts the new ones, sleeps 100 ms,
        then sends QUIT) until 50 ms after; returns what was seen."""
        # the batches of every master wait for its replica (the workers'
        # map lists them; and a shard whose WAIT timed out waits again
        # after a second)
        w0 = {m: wait_calls(cl, m) for m in waiting}
        assert h.wait_until(lambda: all(
            wait_calls(cl, m) > w0[m] + 5 for m in waiting), 15, 0.05), (
                w0, {m: wait_calls(cl, m) for m in waiting})
        s0 = ngx.status()
        a0 = load.n_answered()
        old = set(ngx.worker_pids())
        t0 = time.monotonic()
        os.kill(ngx.master_pid, signal.SIGHUP)           # nginx -s reload
        assert h.wait_until(lambda: len(
            set(ngx.worker_pids()) - old) >= ngx.workers, 5, 0.002), (
                old, ngx.worker_pids())
        time.sleep(0.06)
        for x in replicas:
            x.pause()
        seen = []
        try:
            # (stopped for less than the node timeout, 1 s)
            def pending_at_quit():
                q = sum(quitting(p) for p in old)
                n = sum(blocked_clients(cl, m) for m in waiting)
                if q and n:
                    seen.append((round(time.monotonic() - t0, 3), n))
                return q and n
            h.wait_until(pending_at_quit, 0.4, 0.002)
            time.sleep(0.05)
        finally:
            for x in replicas:
                x.resume()
        assert h.wait_until(lambda: not any(h.pid_alive(p) for p in old),
                            10, 0.005), (
            'old workers %s still running' % sorted(
                p for p in old if h.pid_alive(p)))
        t_gone = time.monotonic() - t0
        assert h.wait_until(lambda: load.n_answered() >= a0 + 100, 10), (
            'the load does not flow after the reload')
        d = ngx.status().delta(s0)
        return {'waits_pending_at_quit': seen[0] if seen else None,
                'old_gone_s': round(t_gone, 3),
                'spooled': d.c(SPOOLED),
                'replayed': d.c(REPLAYED),
                'applied': d.c(ALREADY_APPLIED),
                'unreplicated': d.c('cdp_redis_unreplicated_batches_total'),
                'disconnects': d.c('cdp_redis_disconnects_total')}

    st0 = ngx.status()
    load.start(interval=0.02, phase='load')
    plain, bounded = [], []
    try:
        assert h.wait_until(lambda: load.n_answered() >= 24 + 200, 10), (
            'the load does not flow: %d answered' % load.n_answered())
        assert h.wait_until(lambda: ngx.status().delta(st0).c(
            'cdp_events_forwarded_total') > 0, 10), nonzero(
                ngx.status().delta(st0))
        for r in range(3):
            plain.append(reload_with_waits_pending())
        # the old workers' shutdown bounded: they do not wait for the WAITs
        with open(ngx.conf_path) as f:
            conf = f.read()
        assert '\nworker_processes ' in conf, conf
        with open(ngx.conf_path, 'w') as f:
            f.write(conf.replace('\nworker_processes ',
                                 '\nworker_shutdown_timeout 30ms;\n'
                                 'worker_processes ', 1))
        ngx.reload()
        for r in range(4):
            bounded.append(reload_with_waits_pending())
    finally:
        for x in replicas:
            x.resume()
        load.stop()

    # the scenario happened: WAITs pending on the masters while old workers
    # were quitting, plainly and bounded; bounded, the old workers' exit
    # spooled batches (those to keep: their connections were closed with
    # WAITs pending) and the new workers replayed them
    rounds = 'plain reloads %r; bounded (worker_shutdown_timeout) %r' % (
        plain, bounded)
    assert any(r['waits_pending_at_quit'] for r in plain), rounds
    assert any(r['waits_pending_at_quit'] and r['spooled'] and
               r['disconnects'] for r in bounded), rounds
    assert h.wait_until(lambda: ngx.status().c('cdp_spool_bytes') == 0,
                        20, 0.1), (rounds, nonzero(ngx.status()))

    assert_no_bad_answers(load)
    got = wait_stored(ngx, load,
                      lambda: all_dropped(ngx.status().delta(st0)),
                      timeout=30)
    answered, unknown = load.answered(), load.unknown
    st = ngx.wait_settled(20)
    d = st.delta(st0)
    why = ('%d hits answered (%d unanswered, %d of those stored), %d '
           'markers in the streams; %s; counters since the load %r\n%s' % (
               len(answered), len(unknown), len(unknown & set(got.marks)),
               len(got.marks), rounds, nonzero(d), cdp_log_lines(ngx)))
    assert_markers_once(got, answered, unknown, d, why)

    # each load hit was forwarded: stored in its person's shard (none in
    # the browser's but the warmup's), and forwarded (counted) once
    mine = load_marks_of(got, warm)
    n_load = sum(len(v) for v in mine.values())
    assert n_load >= len(answered) - len(warm)
    for b in load.browsers:
        on_person = [k for k, _i in got.ids[b.aid]
                     if k == ngx.stream_of(person_of[b.idx])]
        assert len(got.ids[b.aid]) == 1 + len(mine[b.idx]), b.idx
        assert len(on_person) == len(mine[b.idx]), (
            'browser %d: %d load hits stored, %d of them in its person\'s '
            'shard; %s' % (b.idx, len(mine[b.idx]), len(on_person), why))
    assert d.c('cdp_events_forwarded_total') == n_load, (
        'forwarded %d, load hits stored %d; %s' % (
            d.c('cdp_events_forwarded_total'), n_load, why))

    # each person counts its browsers' hits once
    assert_persons_count(ngx, load, person_of, mine, before, rounds)
    print('\n' + rounds)


def test_resharding_under_load_loses_nothing(redis_cluster, nginx_factory):
    """12 browsers send hits while redis-cli --cluster reshard moves 2000
    slots (with the shards of some browsers) from one master to another:
    MOVED and ASK are followed, every answered hit is stored once."""
    cl = redis_cluster
    ngx = nginx_factory(cl, workers=2)
    load = Load(ngx, 12, 'r')
    load.warmup()
    masters = sorted(cl.masters())
    st0 = ngx.status()
    load.start(interval=0.01, phase='load')
    try:
        assert h.wait_until(lambda: load.n_answered() >= 12 + 100, 10)
        p = cl.reshard_background(2000, masters[0], masters[1])
        cl.wait_reshard(p, timeout=60)
        assert h.wait_until(lambda: load.n_answered() >= 12 + 600, 15)
    finally:
        load.stop()
    assert_all_stored_once(ngx, load, st0)


# --------------------------------------------------------------------------
# what nginx -t takes on a cluster

CLUSTER = 'cdp_redis_cluster 127.0.0.1:7000;'
AUDIENCES = [
    "cdp_segment fans 'count(\"Liked\") >= 1';",
    'cdp_profile_event Liked;',
]


@pytest.mark.parametrize('extra', AUDIENCES)
def test_audiences_accepted_on_a_cluster(nginx_factory, extra):
    """Segments and profile facts are kept in each profile's shard
    (test_audience.py runs on a cluster too): nginx -t takes them with
    cdp_redis_cluster as with cdp_redis."""
    ngx = nginx_factory(None, start=False)
    for redis in (CLUSTER, 'cdp_redis 127.0.0.1:6379;'):
        rc, out, _ = ngx.test_config(redis=redis, http_extra=extra)
        assert rc == 0 and '[emerg]' not in out, out


def test_cdp_api_accepted_on_a_cluster(nginx_factory):
    """The server API has its cross-slot protocol (its messages that need
    identity are sagas, test_cluster_api.py): nginx -t takes it."""
    ngx = nginx_factory(None, start=False)
    rc, out, _ = ngx.test_config(
        redis=CLUSTER,
        locations='location /v1 { cdp_api; cdp_write_key 0123456789ab; }')
    assert rc == 0, out


def test_cdp_admin_accepted_on_a_cluster(nginx_factory):
    """The admin API has its cross-slot protocol (erase, export and
    profiles are sagas of cdp_admin_x, test_admin_cluster.py): nginx -t
    takes it."""
    ngx = nginx_factory(None, start=False)
    tokens = os.path.join(ngx.dir, 'tokens')
    with open(tokens, 'w') as f:
        f.write('privacy %s\n' % hashlib.sha256(b'tok').hexdigest())
    rc, out, _ = ngx.test_config(
        redis=CLUSTER, http_extra='cdp_admin_tokens %s;' % tokens,
        locations='location /admin { cdp_admin; }')
    assert rc == 0, out
    assert 'cdp_admin needs' not in out, out


def test_mail_proxy_open_stored_on_the_person(redis_cluster, nginx_factory):
    """A mail proxy's fetch of a signed pixel is "Email Opened", a server
    API event without a browser, whose person is found by identifiers in
    other shards: on a cluster the store hands it back as a saga, and it
    is stored on the person's profile, in the person's shard, as on a
    single Redis (test_capture.py, test_mail_proxy_signed_pixel_is_email_
    opened): no browser profile, no cookie, the proxy's fetch counted as
    filtered."""
    ngx = nginx_factory(redis_cluster)

    # the reader's browser was identified before (a signed pixel in a
    # browser): the person's profile exists
    r = ngx.hit(urllib.parse.urlsplit(sign_url(
        ngx.secret_path, '/p.gif?title=landing', uid='u-mail-1')).query,
        cookie='')
    browser_aid = h.aid_of(r)
    assert browser_aid, r.set_cookies()
    assert settle(ngx)
    pid = h.idx(ngx, 'user_id', 'u-mail-1')
    assert pid and h.resolve(ngx, browser_aid) == pid
    assert h.profile(ngx, pid)['events'] == '1'
    st0 = ngx.status()
    n0 = ngx.xlen()

    # Gmail's proxy fetches the campaign's signed pixel
    url = sign_url(ngx.secret_path, '/p.gif?e=email_open&p.campaign=spring',
                   uid='u-mail-1', ttl=3600)
    r = ngx.hit(urllib.parse.urlsplit(url).query, cookie='',
                headers={'User-Agent': UA_GMAIL})
    assert h.is_gif(r), r.status
    assert r.set_cookies() == [], r.set_cookies()
    st = settle(ngx)
    assert st, nonzero(ngx.status())
    d = st.delta(st0)
    assert d.c('cdp_email_opened_total') == 1, nonzero(d)
    assert d.c('cdp_filtered_total{reason="mail_proxy"}') == 1, nonzero(d)
    assert d.dropped() == 0, nonzero(d)
    assert d.c('cdp_identity_sagas_total{result="abandoned"}') == 0, \
        nonzero(d)

    assert ngx.xlen() == n0 + 1, ngx.events()
    opened = [(k, i, json.loads(f['event'])) for k, i, f in ngx.entries()
              if json.loads(f['event']).get('event') == 'Email Opened']
    assert len(opened) == 1, opened
    k, i, e = opened[0]
    assert e['type'] == 'track' and e['userId'] == 'u-mail-1', e
    assert 'anonymousId' not in e, e
    assert e['properties'] == {'campaign': 'spring'}, e
    p = h.profile(ngx, pid)
    assert p['events'] == '2', p
    assert k == ngx.stream_of(pid), (k, ngx.tag_of(pid))
    assert (k, i) in timeline_and_first(ngx, pid)
    # no browser's profile but the reader's own
    assert anon_profile_keys(ngx) == [h.key(ngx, 'profile', browser_aid)]

    # an address alone names a person the store does not know yet: made;
    # found again by its address (as the list spells it), Yahoo's proxy
    for q, ua in (('p.campaign=summer', UA_GMAIL),
                  ('p.campaign=autumn', UA_YAHOO)):
        email = ('Second.Reader@Shop.example' if 'summer' in q
                 else 'second.reader@shop.example')
        url = sign_url(ngx.secret_path, '/p.gif?' + q, email=email,
                       ttl=3600)
        r = ngx.hit(urllib.parse.urlsplit(url).query, cookie='',
                    headers={'User-Agent': ua})
        assert h.is_gif(r) and r.set_cookies() == [], r
        assert settle(ngx), nonzero(ngx.status())
    pid2 = h.idx(ngx, 'email', 'second.reader@shop.example')
    assert pid2 and pid2 != pid, pid2
    p2 = h.profile(ngx, pid2)
    assert p2['events'] == '2', p2
    ev = [(k, i, json.loads(f['event'])) for k, i, f in ngx.entries()]
    ev = [x for x in ev if x[2].get('event') == 'Email Opened'
          and 'userId' not in x[2]]
    assert [x[2]['properties'] for x in ev] == [{'campaign': 'summer'},
                                                 {'campaign': 'autumn'}], ev
    assert not any('anonymousId' in x[2] for x in ev), ev
    assert sorted((k, i) for k, i, _e in ev) == timeline_and_first(ngx,
                                                                   pid2)
    assert all('second.reader' not in x.lower()
               for x in ngx.raw_events()), ngx.raw_events()[-2:]
    d = ngx.status().delta(st0)
    assert d.c('cdp_email_opened_total') == 3, nonzero(d)
    assert d.dropped() == 0, nonzero(d)
    assert anon_profile_keys(ngx) == [h.key(ngx, 'profile', browser_aid)]
    h.check_graph(ngx)


# --------------------------------------------------------------------------
# destinations: their out-streams are sharded like the event streams

def on_master(cl, key, fn):
    """fn(client) on the master that owns key's slot."""
    c = cl.node_client(cl.master_of_slot(cdp_shard.key_slot(key)))
    try:
        return fn(c)
    finally:
        c.close()


def test_destinations_deliver_every_shard_once(redis_cluster, nginx_factory,
                                               sink):
    """cdp_destination on the cluster: 40 fresh browsers (random shards)
    each send two hits.  Each event's out-stream entry is in the shard of
    its browser, on the master that owns it, under the event's id
    (warehouse: no uri=, read by hand); a destination with uri= gets every
    event exactly once (one deliverer a shard), its out-streams end empty
    (acknowledged and trimmed) and what it was sent about each browser is
    recorded in the browser's shard; one that answers 503 keeps them all
    queued, and its gauges sum the shards."""
    cl = redis_cluster
    # every deliverer may have 8 requests in flight (shards x workers x 8)
    sink.server.socket.listen(1024)
    sink.respond = lambda req: ((503, b'{}') if req['path'] == '/held'
                                else (200, b'{"success":true}'))
    ngx = nginx_factory(
        cl, workers=2,
        http_extra='cdp_destination seg purpose=analytics uri=/_dest/seg '
                   'flush=50ms;\n'
                   '    cdp_destination held purpose=analytics '
                   'uri=/_dest/held flush=50ms;\n'
                   '    cdp_destination warehouse purpose=analytics;',
        locations=h.DEFAULT_LOCATIONS
        + h.DEST_LOCATION.replace('@SINKPORT@', str(sink.port)))
    ngx.expected_log_re = re.compile(
        r'destination "held" answered 503')
    browsers = [h.Browser(ngx) for _ in range(40)]
    for i, b in enumerate(browsers):
        assert h.is_gif(b.view('title=d%d' % i))
    for i, b in enumerate(browsers):
        assert h.is_gif(b.view('e=Clicked&p.n=%d' % i))
    aids = {b.aid for b in browsers}
    assert len(aids) == 40
    assert ngx.wait_xlen(80) >= 80
    st = ngx.wait_settled()
    assert st.dropped('redis_error') == 0, nonzero(st)
    entries = ngx.entries()
    assert len(entries) == 80
    sent = {}
    for k, i, f in entries:
        ev = json.loads(f['event'])
        assert ev['anonymousId'] in aids
        sent[ev['messageId']] = (k, i, f['event'], ev['anonymousId'])
    assert len(sent) == 80
    tags = {ngx.tag_of(a) for a in aids}
    assert len(tags) > 3, tags

    # warehouse: each entry in the out-stream of its browser's shard, on
    # the master that owns it, under its event's id
    wh = []
    for key in ngx.out_keys('warehouse'):
        for i, f in on_master(cl, key, lambda c: c.xrange(key)):
            wh.append((key, i, f))
    assert len(wh) == 80, len(wh)
    seen = set()
    for key, i, f in wh:
        ev = json.loads(f['event'])
        aid = ev['anonymousId']
        assert f['p'] == aid, f
        assert key == ngx.out_key('warehouse', aid), (key, ngx.tag_of(aid))
        assert h.parse_key(ngx, key) == ('out', 'warehouse')
        sk, sid, raw, _a = sent[ev['messageId']]
        assert (sk, sid, raw) == (ngx.stream_of(aid), i, f['event']), (
            key, i, sk, sid)
        seen.add(ev['messageId'])
    assert seen == set(sent)
    masters = {cl.master_of_slot(cdp_shard.key_slot(k)) for k, _i, _f in wh}
    assert len(masters) > 1, masters

    # seg: every event once, from every shard
    assert h.wait_until(lambda: len(sink.events('/seg')) >= 80, 30), \
        len(sink.events('/seg'))
    time.sleep(0.5)
    got = [e['messageId'] for e in sink.events('/seg')]
    assert sorted(got) == sorted(sent), (len(got), len(set(got)))

    def gauges(name):
        out = {}
        for k, v in ngx.status().items():
            m = re.match(
                r'^cdp_destination_(\w+)\{destination="%s"\}$' % name, k)
            if m:
                out[m.group(1)] = v
        return out

    assert h.wait_until(lambda: gauges('seg').get('delivered_total') == 80,
                        10), gauges('seg')
    # acknowledged and trimmed on every master
    assert h.wait_until(lambda: sum(
        on_master(cl, key, lambda c: c.xlen(key))
        for key in ngx.out_keys('seg')) == 0, 10), \
        {k: on_master(cl, k, lambda c: c.xlen(k))
         for k in ngx.out_keys('seg')}
    assert sum(on_master(cl, key, lambda c: c.xpending(key, 'cdp')['pending'])
               for key in ngx.out_keys('seg')
               if on_master(cl, key, lambda c: c.exists(key))) == 0
    g = gauges('seg')
    assert g['queued_total'] == 80 and g['retried_total'] == 0, g
    assert not [k for k in ngx.dead_keys('seg') + ngx.dead_keys('held')
                if on_master(cl, k, lambda c: c.exists(k))]
    # what seg was sent about each browser: in the browser's shard
    for a in aids:
        key = ngx.sent_key(a)
        assert on_master(cl, key, lambda c: c.smembers(key)) == \
            {'seg\ta:' + a}, key

    # held: all 80 kept, pending or not, over the shards; the gauges (read
    # every 2 s) are the sums of its 16 streams
    assert sum(on_master(cl, key, lambda c: c.xlen(key))
               for key in ngx.out_keys('held')) == 80
    assert h.wait_until(lambda: gauges('held').get('stream_length') == 80
                        and gauges('held').get('pending', 0) > 0, 10), \
        gauges('held')
    assert gauges('held')['delivered_total'] == 0
    assert gauges('warehouse')['queued_total'] == 80

