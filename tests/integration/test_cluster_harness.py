"""The harness's Redis Cluster (cdp_harness.RedisCluster) checked against
itself, before cdp_redis_cluster relies on it: slots covered, keys where
CLUSTER KEYSLOT says, a failover and a rejoin, redis-cli resharding (also
under writes), a slot moved by hand with its keys, a password.  No nginx:
these tests need no module."""

import time

import pytest
import redis
import redis.cluster

import cdp_harness as h


def ranges_of(c, port):
    for e in c.view(port):
        if 'myself' in e['flags']:
            return e['ranges']
    raise AssertionError('%d has no myself line' % port)


def moved_from(c, port, key):
    """The MOVED error a node that does not serve key answers with."""
    with pytest.raises(redis.exceptions.ResponseError) as e:
        c.node_client(port).get(key)
    return str(e.value)


def test_three_masters_cover_all_slots(redis_cluster):
    c = redis_cluster
    assert len(c.ports) == 3 and len(set(c.ports)) == 3
    masters = c.masters()
    assert sorted(masters) == sorted(c.ports)
    assert c.replicas() == []
    # every slot exactly once, over the three masters
    ranges = sorted(r for p in masters for r in ranges_of(c, p))
    nxt = 0
    for a, b in ranges:
        assert a == nxt, 'slots %d..%d uncovered or doubled' % (nxt, a)
        nxt = b + 1
    assert nxt == h.CLUSTER_SLOTS
    counts = c.slot_counts()
    assert sum(counts.values()) == h.CLUSTER_SLOTS
    assert all(n >= 5000 for n in counts.values()), counts
    for p in c.ports:
        info = c.info(p)
        assert info['cluster_state'] == 'ok', (p, info)
        assert info['cluster_slots_ok'] == '16384', (p, info)
        assert info['cluster_known_nodes'] == '3', (p, info)
    assert c.seeds_text() == ' '.join('127.0.0.1:%d' % p for p in masters)
    # node ids, processes, directories of their own
    assert len({n.node_id for n in c.nodes}) == 3
    assert all(len(n.node_id) == 40 for n in c.nodes)
    assert all(n.process.poll() is None for n in c.nodes)
    assert len({n.dir for n in c.nodes}) == 3
    assert c.problems() == []


def test_a_key_lives_on_the_master_of_its_slot(redis_cluster):
    c = redis_cluster
    cl = c.client()
    try:
        seen = set()
        for i in range(60):
            k = 'place:%d' % i
            cl.set(k, 'v%d' % i)
            assert cl.get(k) == 'v%d' % i
            s = c.slot(k)
            # CLUSTER KEYSLOT and the client's own CRC16 agree
            assert s == cl.keyslot(k)
            owner = c.master_of_slot(s)
            seen.add(owner)
            assert c.node_client(owner).get(k) == 'v%d' % i
            for other in set(c.masters()) - {owner}:
                assert moved_from(c, other, k) == \
                    'MOVED %d 127.0.0.1:%d' % (s, owner)
        assert seen == set(c.masters()), 'keys on %s only' % seen
        # a hash tag puts keys in one slot
        assert c.slot('{u1}:a') == c.slot('{u1}:b') == c.slot('u1')
    finally:
        cl.close()


def test_nginx_gets_the_cluster_line_and_client(redis_cluster, workdir):
    c = redis_cluster
    ngx = h.Nginx(workdir, c, prefix='tcl')
    assert ngx.parts['REDIS'] == \
        'cdp_redis_cluster %s prefix=tcl;' % c.seeds_text()
    assert 'cdp_redis_cluster 127.0.0.1:' in ngx.render()
    rc = ngx.rc()
    try:
        assert isinstance(rc, redis.cluster.RedisCluster)
        rc.xadd(ngx.streams[0], {'event': '{}'})
        assert ngx.xlen() == 1
    finally:
        rc.close()
    ngx = h.Nginx(workdir, c, prefix='tcl2', redis_params='shards=4')
    assert ngx.parts['REDIS'] == \
        'cdp_redis_cluster %s prefix=tcl2 shards=4;' % c.seeds_text()


def test_reshard_moves_100_slots_and_keys_follow(redis_cluster):
    c = redis_cluster
    a, b, z = c.masters()
    cl = c.client()
    try:
        keys = ['rs:%d' % i for i in range(300)]
        for k in keys:
            cl.set(k, k)
    finally:
        cl.close()
    before = c.slot_counts()
    out = c.reshard(100, a, b)
    after = c.slot_counts()
    assert after[a] == before[a] - 100, (before, after, out[-500:])
    assert after[b] == before[b] + 100, (before, after)
    assert after[z] == before[z]
    assert c.problems() == []
    cl = c.client()
    try:
        for k in keys:
            assert cl.get(k) == k
            owner = c.master_of_slot(c.slot(k))
            assert c.node_client(owner).get(k) == k
    finally:
        cl.close()


def test_reshard_in_the_background_under_writes(redis_cluster):
    c = redis_cluster
    a, b, z = c.masters()
    before = c.slot_counts()
    cl = c.client()
    try:
        p = c.reshard_background(300, z, a, pipeline=5)
        written, deadline = [], time.monotonic() + 30
        # writes until redis-cli is done: redirections (MOVED, ASK) on
        # the way are the client's business
        while p.poll() is None and time.monotonic() < deadline:
            k = 'bg:%d' % len(written)
            cl.set(k, k)
            written.append(k)
        c.wait_reshard(p)
        after = c.slot_counts()
        assert after[z] == before[z] - 300 and after[a] == before[a] + 300
        assert after[b] == before[b]
        assert written, 'no write while resharding'
        for k in written:
            assert cl.get(k) == k, k
    finally:
        cl.close()


def test_migrate_slot_moves_one_slot_with_its_keys(redis_cluster):
    c = redis_cluster
    s = c.slot('{mig}')
    src = c.master_of_slot(s)
    dst = [p for p in c.masters() if p != src][0]
    cl = c.client()
    try:
        # more keys than one GETKEYSINSLOT batch (100)
        keys = ['{mig}:%d' % i for i in range(250)]
        for k in keys:
            cl.set(k, k)
        before = c.slot_counts()
        assert c.migrate_slot(s, src, dst) == 250
        after = c.slot_counts()
        assert after[src] == before[src] - 1
        assert after[dst] == before[dst] + 1
        assert c.master_of_slot(s) == dst
        # every node says so, the keys moved
        for p in c.ports:
            owners = [e['port'] for e in c.view(p)
                      if h.in_ranges(s, e['ranges'])]
            assert owners == [dst], (p, owners)
        d, o = c.node_client(dst), c.node_client(src)
        assert d.execute_command('CLUSTER', 'COUNTKEYSINSLOT', s) == 250
        assert o.execute_command('CLUSTER', 'COUNTKEYSINSLOT', s) == 0
        assert moved_from(c, src, keys[0]) == \
            'MOVED %d 127.0.0.1:%d' % (s, dst)
        # the client follows the MOVED
        assert [cl.get(k) for k in keys] == keys
        # a slot with no key moves too
        empty = next(x for a, b in ranges_of(c, dst)
                     for x in range(a, b + 1)
                     if not d.execute_command('CLUSTER', 'COUNTKEYSINSLOT',
                                              x))
        assert c.migrate_slot(empty, dst, src) == 0
        assert c.master_of_slot(empty) == src
    finally:
        cl.close()


def test_failover_then_restart_rejoins_as_replica(redis_cluster_replicas):
    c = redis_cluster_replicas
    assert len(c.ports) == 6
    assert len(c.masters()) == 3 and len(c.replicas()) == 3
    for m in c.masters():
        assert len(c.replicas(of=m)) == 1, (m, c.replicas(of=m))
    key = '{fo}:k'
    s = c.slot(key)
    m = c.master_of_slot(s)
    [r] = c.replicas(of=m)
    n_slots = c.slot_counts()[m]
    # written on the master's own connection, so that WAIT (which counts
    # the replicas that have this connection's writes) covers it
    nm = c.node_client(m)
    try:
        nm.set(key, 'before')
        assert nm.wait(1, 2000) == 1, 'the replica did not ack'
    finally:
        nm.close()

    c.kill(m)
    assert not c.node(m).alive()
    assert c.wait_failover(m, timeout=15) == [r]
    assert c.master_of_slot(s) == r
    assert m not in c.masters() + c.replicas()
    assert sorted(c.masters() + c.replicas()) == sorted(set(c.ports) - {m})
    assert c.slot_counts()[r] == n_slots
    assert c.replicas(of=r) == []
    assert c.problems() == []
    cl = c.client()
    try:
        # what the replica had, and writes to the lost slots again
        assert cl.get(key) == 'before'
        cl.set(key, 'after')
        assert c.node_client(r).get(key) == 'after'
        lost = [k for k in ('fo:%d' % i for i in range(200))
                if c.master_of_slot(c.slot(k)) == r]
        assert lost
        for k in lost:
            cl.set(k, k)
    finally:
        cl.close()

    c.restart(m)
    assert c.node(m).alive()
    assert c.replicas(of=r) == [m]
    assert r in c.masters() and m not in c.masters()
    assert len(c.masters()) == 3 and len(c.replicas()) == 3
    info = c.node_client(m).info('replication')
    assert info['role'] == 'slave' and info['master_port'] == r, info
    assert info['master_link_status'] == 'up'
    # the rejoined node has the data written while it was down
    nc = c.node_client(m, single_connection_client=True)
    try:
        nc.execute_command('READONLY')
        assert h.wait_until(lambda: nc.get(lost[-1]) == lost[-1], 5.0)
        assert nc.get(key) == 'after'
    finally:
        nc.close()
    assert c.problems() == []


def test_password_cluster(workdir):
    with h.RedisCluster(workdir, masters=3, password='cl-pw').start() as c:
        with pytest.raises(redis.exceptions.AuthenticationError):
            c.node_client(c.ports[0], password=None).ping()
        cl = c.client()
        try:
            keys = ['{pw}:%d' % i for i in range(5)]
            for k in keys:
                cl.set(k, k)
            ngx = h.Nginx(workdir, c, prefix='tpw')
            assert ngx.parts['REDIS'] == (
                'cdp_redis_cluster %s prefix=tpw password=cl-pw;'
                % c.seeds_text())
            # MIGRATE ... AUTH, and redis-cli -a
            s = c.slot(keys[0])
            src = c.master_of_slot(s)
            dst = [p for p in c.masters() if p != src][0]
            assert c.migrate_slot(s, src, dst) == 5
            assert c.node_client(dst).get(keys[0]) == keys[0]
            before = c.slot_counts()
            c.reshard(10, dst, src)
            assert c.slot_counts()[src] == before[src] + 10
            assert [cl.get(k) for k in keys] == keys
        finally:
            cl.close()
    assert not any(n.alive() for n in c.nodes)
