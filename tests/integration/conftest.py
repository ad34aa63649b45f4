"""
Fixtures of the integration tests (see cdp_harness.py for the machinery).

  redis_server    a fresh redis-server on a free port (function scope)
  redis_factory   make more of them: redis_factory(password=..., unixsocket=True)
  redis_cluster   a Redis Cluster of 3 masters (cdp_harness.RedisCluster),
                  module scope: a test that moves slots or kills a node
                  leaves the cluster settled but changed for the next ones
  redis_cluster_replicas   the same with a replica per master (6 nodes)
  nginx_factory   nginx_factory(redis, start=True, **conf parts) -> Nginx
  cdp             the default stack: nginx (2 workers, module) + Redis
  sink            a recording HTTP server (a destination), stopped after
  geo_dbs         the test MaxMind DBs (geo_db.pl), built once per session:
                  {'main': path, 'alt': path}

At teardown nginx is stopped (SIGQUIT) and the test fails when nginx did
not exit gracefully or its error.log has [alert], [emerg] or "exited on
signal", as in nginx's own test suite.  `nginx -t` of bad configs writes to
directories of its own and is not checked.
"""

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(__file__))

import cdp_harness as h  # noqa: E402


@pytest.fixture(scope='session')
def workdir():
    d = tempfile.mkdtemp(prefix='cdp-it-', dir='/tmp')
    yield d
    if not os.environ.get('CDP_KEEP_TMP'):
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope='session')
def module_path():
    if not os.path.exists(h.MODULE):
        pytest.fail('module not built: %s is missing (make -C %s build)'
                    % (h.MODULE, h.MAIN), pytrace=False)
    return h.MODULE


@pytest.fixture
def redis_factory(workdir):
    made = []

    def make(**kw):
        r = h.RedisServer(workdir, **kw)
        made.append(r)
        return r.start()

    yield make
    for r in made:
        r.stop()


# CDP_TEST_REDIS=cluster: redis_server is a Redis Cluster of 3 masters
# (one for the session, emptied for each test), so that the tests of
# pixel, identity, API, consent and erasure run on a cluster too (make
# test-cluster; make test runs both).  A test that needs a standalone
# Redis (its own config, a kill, DEBUG, one port) is marked standalone.
CLUSTER_MODE = os.environ.get('CDP_TEST_REDIS') == 'cluster'


@pytest.fixture(scope='session')
def shared_cluster(workdir):
    c = _cluster(workdir, masters=3, replicas=0)
    yield c
    c.stop()


@pytest.fixture
def redis_server(redis_factory, request):
    if CLUSTER_MODE:
        if request.node.get_closest_marker('standalone'):
            pytest.skip('needs a standalone Redis (the standalone run has '
                        'it)')
        c = request.getfixturevalue('shared_cluster')
        c.flush()
        return c
    return redis_factory()


def _cluster(workdir, **kw):
    try:
        return h.RedisCluster(workdir, **kw).start()
    except (RuntimeError, AssertionError) as e:
        pytest.fail('Redis Cluster did not start: %s' % e, pytrace=False)


@pytest.fixture(scope='module')
def redis_cluster(workdir):
    c = _cluster(workdir, masters=3, replicas=0)
    yield c
    c.stop()


@pytest.fixture(scope='module')
def redis_cluster_replicas(workdir):
    # node timeout 1 s: a failover within about 2 s
    c = _cluster(workdir, masters=3, replicas=1, node_timeout=1000)
    yield c
    c.stop()


@pytest.fixture
def nginx_factory(workdir, module_path, redis_factory):
    # depends on redis_factory so that nginx always stops before Redis
    made = []

    def make(redis=None, start=True, wait_redis=True, **kw):
        n = h.Nginx(workdir, redis, **kw)
        made.append(n)
        if start:
            n.start(wait_redis=wait_redis)
        return n

    yield make
    problems = []
    for n in reversed(made):
        problems += n.finish()
    if problems:
        pytest.fail('\n'.join(problems), pytrace=False)


@pytest.fixture
def cdp(redis_server, nginx_factory):
    return nginx_factory(redis_server)


@pytest.fixture
def sink():
    s = h.Sink().start()
    yield s
    s.stop()


@pytest.fixture(scope='session')
def geo_dbs(workdir):
    if subprocess.run(['perl', '-MMaxMind::DB::Writer::Tree', '-e', '1'],
                      stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL).returncode != 0:
        pytest.fail('perl MaxMind::DB::Writer::Tree is missing: install '
                    'libmaxmind-db-writer-perl (scripts/deps.sh test)',
                    pytrace=False)
    d = os.path.join(workdir, 'geo')
    os.makedirs(d, exist_ok=True)
    try:
        return {'main': h.build_geo_db(os.path.join(d, 'city.mmdb')),
                'alt': h.build_geo_db(os.path.join(d, 'city-alt.mmdb'),
                                      'alt')}
    except RuntimeError as e:
        pytest.fail(str(e), pytrace=False)
