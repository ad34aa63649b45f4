"""cdp_status as Prometheus reads it (ngx_cdp_status.c, ngx_cdp_dest.c),
and the Grafana dashboard of contrib/grafana/ngx_cdp.json.

What is asserted, on the live endpoint of the real nginx with destinations
and segments configured (so the per-destination families are there too):
`promtool check metrics` (Debian's prometheus package) passes with nothing
to say; every family has one # HELP and one # TYPE line before its
samples, and its samples are together; counters, and only they, end in
_total.  The dashboard uses the data source variable ${DS_PROMETHEUS},
its PromQL parses (promtool check rules), and every cdp_ metric it names
is one the module exports, rated only when it is a counter.
"""

import json
import os
import re
import shutil
import subprocess

import pytest

import cdp_harness as h


DASHBOARD = os.path.join(h.MAIN, 'contrib', 'grafana', 'ngx_cdp.json')

HTTP_EXTRA = """
    cdp_destination seg purpose=analytics uri=/_dest/seg flush=50ms;
    cdp_destination js purpose=analytics uri=/_dest/js format=json
                    flush=50ms;
    cdp_destination warehouse purpose=marketing;
    cdp_segment loyal 'count("Order Completed") >= 3';
    cdp_segment recent 'seen_within(7d)';
"""

HELP_RE = re.compile(r'^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$')
TYPE_RE = re.compile(r'^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) '
                     r'(counter|gauge|histogram|summary|untyped)$')
SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$')

# what the dashboard must show (the list)
DASHBOARD_NEEDS = {
    'cdp_events_accepted_total', 'cdp_events_stored_total',
    'cdp_events_dropped_total', 'cdp_queue_events', 'cdp_spool_bytes',
    'cdp_spool_files', 'cdp_spool_events_total', 'cdp_filtered_total',
    'cdp_captured_total', 'cdp_redirects_total',
    'cdp_destination_delivered_total', 'cdp_destination_retried_total',
    'cdp_destination_dead_lettered_total', 'cdp_destination_stream_length',
    'cdp_destination_pending', 'cdp_segment_due_evaluated_total',
    'cdp_segment_due_pending', 'cdp_segment_tick_events_total',
    'cdp_segment_backfill_profiles', 'cdp_segment_backfill_done',
    'cdp_redis_connects_total', 'cdp_redis_disconnects_total',
    'cdp_api_duplicates_total', 'cdp_api_unavailable_total',
    'cdp_admin_requests_total', 'cdp_admin_denied_total'}


def promtool():
    path = shutil.which('promtool')
    if path is None:
        pytest.fail('promtool is missing: make deps-test (Debian package '
                    'prometheus)', pytrace=False)
    return path


@pytest.fixture
def ngx(nginx_factory, redis_server, sink):
    n = nginx_factory(
        redis_server, http_extra=HTTP_EXTRA,
        locations=(h.DEFAULT_LOCATIONS
                   + h.DEST_LOCATION.replace('@SINKPORT@', str(sink.port))))
    # something to count: a page view, delivered to the two HTTP ones
    assert h.Browser(n).view().status == 200
    assert h.wait_until(lambda: len(sink.events('/seg')) >= 1
                        and len(sink.events('/js')) >= 1, 10.0)
    return n


def body_of(ngx):
    r = h.one_request(ngx.port, 'GET', '/status')
    assert r.status == 200, r
    return r.body.decode()


def families(text):
    """{family: {'help', 'type', 'samples': [(name+labels, value)]}} of
    Prometheus text, asserting its shape: HELP and TYPE once each, before
    the samples, the samples of a family together."""
    fams = {}
    order = []          # family of each block, in the order they appear
    for line in text.splitlines():
        assert line and line == line.strip(), 'line %r' % line
        if line.startswith('#'):
            m = HELP_RE.match(line) or TYPE_RE.match(line)
            assert m, 'comment line %r' % line
            name = m.group(1)
            what = 'help' if line.startswith('# HELP') else 'type'
            f = fams.setdefault(name, {'samples': []})
            assert what not in f, 'second # %s of %s' % (what.upper(), name)
            assert not f['samples'], '# %s of %s after its samples' % (
                what.upper(), name)
            f[what] = m.group(2)
        else:
            m = SAMPLE_RE.match(line)
            assert m, 'sample line %r' % line
            name = m.group(1)
            f = fams.get(name)
            assert f and 'help' in f and 'type' in f, (
                '%s without # HELP and # TYPE before it' % name)
            float(m.group(3))
            f['samples'].append((name + (m.group(2) or ''), m.group(3)))
        if not order or order[-1] != name:
            assert name not in order, (
                'the samples of %s are not together' % name)
            order.append(name)
    return fams


def test_promtool_check_metrics(ngx):
    text = body_of(ngx)
    p = subprocess.run([promtool(), 'check', 'metrics'], input=text.encode(),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=30)
    out = p.stdout.decode()
    assert p.returncode == 0 and not out.strip(), (
        'promtool check metrics: exit %d\n%s' % (p.returncode, out))


def test_promtool_check_metrics_without_destinations(cdp):
    p = subprocess.run([promtool(), 'check', 'metrics'],
                       input=body_of(cdp).encode(), stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=30)
    assert p.returncode == 0 and not p.stdout.strip(), p.stdout.decode()
    assert 'cdp_destination_' not in body_of(cdp)


def test_every_family_has_help_type_and_its_samples_together(ngx):
    text = body_of(ngx)
    fams = families(text)

    for name, f in fams.items():
        assert f['help'], '%s: empty # HELP' % name
        assert f['samples'], '%s: no samples' % name
        assert f['type'] in ('counter', 'gauge'), (name, f['type'])
        assert (f['type'] == 'counter') == name.endswith('_total'), (
            '%s is a %s' % (name, f['type']))
        keys = [k for k, _ in f['samples']]
        assert len(keys) == len(set(keys)), 'repeated samples: %r' % keys

    # the same samples the tests' own parser reads
    samples = {k: v for f in fams.values() for k, v in f['samples']}
    assert set(samples) == set(h.parse_status(text))

    # the families spread over the enum, and the destinations' families
    dropped = fams['cdp_events_dropped_total']['samples']
    assert ({k for k, _ in dropped}
            >= {'cdp_events_dropped_total{reason="%s"}' % r
                for r in h.DROP_REASONS + ('spool_full', 'spool_error',
                                           'unconfirmed')})
    for d in ('seg', 'js', 'warehouse'):
        assert ('cdp_destination_filtered_total{destination="%s",'
                'reason="erased"}' % d) in samples
        assert ('cdp_destination_seconds_since_success'
                '{destination="%s"}' % d) in samples
    assert samples['cdp_destination_seconds_since_success'
                   '{destination="warehouse"}'] == '-1'
    assert int(samples['cdp_destination_delivered_total'
                       '{destination="seg"}']) >= 1
    for g in ('cdp_queue_events', 'cdp_spool_bytes', 'cdp_spool_files',
              'cdp_segment_due_pending', 'cdp_segment_backfill_profiles',
              'cdp_segment_backfill_done', 'cdp_destination_in_flight',
              'cdp_destination_stream_length', 'cdp_destination_pending',
              'cdp_destination_seconds_since_success'):
        assert fams[g]['type'] == 'gauge', g


# --------------------------------------------------------------------------
# the Grafana dashboard

def dashboard():
    with open(DASHBOARD) as f:
        return json.load(f)


def all_panels(panels):
    for p in panels:
        yield p
        yield from all_panels(p.get('panels', []))


def exprs(dash):
    return [t['expr'] for p in all_panels(dash['panels'])
            for t in p.get('targets', []) if t.get('expr')]


def variable_queries(dash):
    out = []
    for v in dash['templating']['list']:
        if v['type'] != 'query':
            continue
        q = v['query']
        out.append(q['query'] if isinstance(q, dict) else q)
    return out


def metric_names(expr):
    # cdp_ identifiers outside strings ({reason="..."} values are not
    # metric names)
    return set(re.findall(r'(?<![A-Za-z0-9_:])(cdp_[A-Za-z0-9_:]*)',
                          re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)))


def test_dashboard_uses_the_data_source_variable():
    dash = dashboard()
    ds = [v for v in dash['templating']['list']
          if v['name'] == 'DS_PROMETHEUS']
    assert len(ds) == 1 and ds[0]['type'] == 'datasource' \
        and ds[0]['query'] == 'prometheus', ds
    ids = []
    for p in all_panels(dash['panels']):
        ids.append(p['id'])
        if p['type'] == 'row':
            continue
        assert p['datasource'] == {'type': 'prometheus',
                                   'uid': '${DS_PROMETHEUS}'}, p['title']
        assert p['targets'], p['title']
        for t in p['targets']:
            assert t['datasource'] == p['datasource'], p['title']
    assert len(ids) == len(set(ids)), 'repeated panel ids'
    for v in dash['templating']['list']:
        if v['type'] == 'query':
            assert v['datasource']['uid'] == '${DS_PROMETHEUS}', v['name']


def test_dashboard_promql_parses(workdir):
    """Each expr, its Grafana variables replaced by values, is a recording
    rule for promtool check rules, which parses PromQL."""
    subst = [('$__rate_interval', '5m'), ('$__range', '6h'),
             ('$__interval', '1m'), ('$instance', '.*'),
             ('$destination', '.*')]
    lines = ['groups:', '  - name: ngx_cdp_dashboard', '    rules:']
    for i, e in enumerate(exprs(dashboard())):
        for k, v in subst:
            e = e.replace(k, v)
        assert '$' not in e, 'unknown variable in %r' % e
        lines += ['      - record: dashboard_expr_%d' % i,
                  '        expr: %s' % json.dumps(e)]
    path = os.path.join(workdir, 'dashboard-rules.yml')
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    p = subprocess.run([promtool(), 'check', 'rules', path],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=30)
    assert p.returncode == 0, p.stdout.decode()


def test_dashboard_names_only_exported_metrics(ngx):
    fams = families(body_of(ngx))
    dash = dashboard()
    used = set()
    for e in exprs(dash) + variable_queries(dash):
        names = metric_names(e)
        assert names, 'no cdp_ metric in %r' % e
        unknown = names - set(fams)
        assert not unknown, 'not exported: %s in %r' % (sorted(unknown), e)
        used |= names
        # rate() and increase() only of counters
        for m in re.finditer(r'\b(?:rate|irate|increase)\(\s*(cdp_\w+)', e):
            assert fams[m.group(1)]['type'] == 'counter', (m.group(1), e)
    missing = DASHBOARD_NEEDS - used
    assert not missing, 'the dashboard does not show %s' % sorted(missing)
