"""`nginx -t` accepts good configurations and rejects bad directive values
with a message that says what is wrong (docs/directives.md: Directives)."""

import os
import re

import pytest

import cdp_harness as h


SHORT_KEY = '0123456789abcdef0123456789abcde'      # 31 bytes, < 32


def _files(ngx):
    """Secret files of the bad cases, in the instance's directory."""
    d = ngx.dir
    with open(os.path.join(d, 'short.secret'), 'w') as f:
        f.write(SHORT_KEY + '\n')
    with open(os.path.join(d, 'short2.secret'), 'w') as f:
        f.write(h.new_key() + '\n' + SHORT_KEY + '\n')
    with open(os.path.join(d, 'empty.secret'), 'w') as f:
        f.write('')
    with open(os.path.join(d, 'two.secret'), 'w') as f:
        f.write(h.new_key() + '\n' + h.new_key() + '\n')
    with open(os.path.join(d, 'nonl.secret'), 'w') as f:
        f.write(h.new_key())


REDIS = 'cdp_redis 127.0.0.1:6379 prefix=t;'

# (id, conf parts, directive, text of the bad line, any-of tokens naming the
#  problem, whether the error is expected while the directive is parsed).
# Loose match: the message must name the problem (one token) and blame the
# directive (its name, or the line of the bad directive).
BAD = [
    ('redis-bad-port', dict(redis='cdp_redis 127.0.0.1:99999;'),
     'cdp_redis', 'cdp_redis 127.0.0.1:99999', ['99999', 'port'], True),
    ('redis-bad-address', dict(redis='cdp_redis 127.0.0.1:http6379;'),
     'cdp_redis', 'cdp_redis 127.0.0.1:http6379', ['http6379', 'port'], True),
    ('redis-empty-unix', dict(redis='cdp_redis unix:;'),
     'cdp_redis', 'cdp_redis unix:', ['unix', 'path'], True),
    ('redis-bad-db', dict(redis='cdp_redis 127.0.0.1:6379 db=x;'),
     'cdp_redis', 'db=x', ['db=x', '"x"', 'db'], True),
    ('redis-negative-db', dict(redis='cdp_redis 127.0.0.1:6379 db=-1;'),
     'cdp_redis', 'db=-1', ['db=-1', '"-1"', 'db'], True),
    ('redis-unknown-param',
     dict(redis='cdp_redis 127.0.0.1:6379 colour=blue;'),
     'cdp_redis', 'colour=blue', ['colour'], True),
    ('redis-bad-timeout',
     dict(redis='cdp_redis 127.0.0.1:6379 timeout=soon;'),
     'cdp_redis', 'timeout=soon', ['soon', 'timeout'], True),
    ('redis-duplicate',
     dict(redis=REDIS + '\n    cdp_redis 127.0.0.1:6380;'),
     'cdp_redis', 'cdp_redis 127.0.0.1:6380', ['duplicate'], True),
    ('redis-in-server', dict(redis=REDIS,
                             server_extra='cdp_redis 127.0.0.1:6380;'),
     'cdp_redis', 'cdp_redis 127.0.0.1:6380', ['not allowed'], True),
    ('secret-missing-file',
     dict(secret='cdp_secret_file @DIR@/nosuch.secret;'),
     'cdp_secret_file', 'cdp_secret_file', ['nosuch.secret'], False),
    ('secret-short-key', dict(secret='cdp_secret_file @DIR@/short.secret;'),
     'cdp_secret_file', 'cdp_secret_file',
     ['short', '32', 'length', 'bytes'], False),
    ('secret-short-second-key',
     dict(secret='cdp_secret_file @DIR@/short2.secret;'),
     'cdp_secret_file', 'cdp_secret_file',
     ['short', '32', 'length', 'bytes'], False),
    ('secret-empty-file', dict(secret='cdp_secret_file @DIR@/empty.secret;'),
     'cdp_secret_file', 'cdp_secret_file',
     ['empty', 'no key', 'key', 'empty.secret'], False),
    ('secret-duplicate',
     dict(secret='cdp_secret_file @DIR@/two.secret;\n'
                 '    cdp_secret_file @DIR@/two.secret;'),
     'cdp_secret_file', None, ['duplicate'], True),
    ('cookie-max-age-401d', dict(cookie='cdp_cookie cdp_aid max_age=401d;'),
     'cdp_cookie', 'max_age=401d', ['401d', '400'], True),
    ('cookie-max-age-garbage',
     dict(cookie='cdp_cookie cdp_aid max_age=forever;'),
     'cdp_cookie', 'max_age=forever', ['forever', 'max_age'], True),
    ('cookie-samesite-bogus',
     dict(cookie='cdp_cookie cdp_aid samesite=bogus;'),
     'cdp_cookie', 'samesite=bogus', ['bogus'], True),
    ('cookie-secure-maybe', dict(cookie='cdp_cookie cdp_aid secure=maybe;'),
     'cdp_cookie', 'secure=maybe', ['maybe'], True),
    ('cookie-unknown-param',
     dict(cookie='cdp_cookie cdp_aid colour=blue;'),
     'cdp_cookie', 'colour=blue', ['colour'], True),
    ('pixel-302',
     dict(locations='location = /p.gif { cdp_pixel 302; }'),
     'cdp_pixel', 'cdp_pixel 302', ['302'], True),
    ('pixel-without-secret',
     dict(secret='', locations='location = /p.gif { cdp_pixel; }'),
     'cdp_', 'cdp_pixel', ['cdp_secret_file', 'secret'], False),
    ('pixel-in-http', dict(http_extra='cdp_pixel;'),
     'cdp_pixel', 'cdp_pixel;', ['not allowed'], True),
    ('stream-maxlen-0', dict(http_extra='cdp_stream_maxlen 0;'),
     'cdp_stream_maxlen', 'cdp_stream_maxlen 0',
     ['"0"', 'invalid', 'zero', 'positive', 'at least', 'must'], True),
    ('stream-maxlen-abc', dict(http_extra='cdp_stream_maxlen abc;'),
     'cdp_stream_maxlen', 'cdp_stream_maxlen abc',
     ['abc', 'invalid'], True),
    ('stream-maxlen-in-location',
     dict(server_extra='location /x { cdp_stream_maxlen 10; }'),
     'cdp_stream_maxlen', 'cdp_stream_maxlen 10', ['not allowed'], True),
    ('batch-size-abc', dict(http_extra='cdp_batch_size abc;'),
     'cdp_batch_size', 'cdp_batch_size abc', ['abc', 'invalid'], True),
    ('queue-size-abc', dict(http_extra='cdp_queue_size abc;'),
     'cdp_queue_size', 'cdp_queue_size abc', ['abc', 'invalid'], True),
    ('aggregate-retention-12h',
     dict(http_extra='cdp_aggregate_retention 12h;'),
     'cdp_aggregate_retention', None, ['at least 1d'], False),
    ('aggregate-retention-abc',
     dict(http_extra='cdp_aggregate_retention abc;'),
     'cdp_aggregate_retention', 'cdp_aggregate_retention abc',
     ['abc', 'invalid'], True),
]


def _line_of(text, needle):
    """1-based number of the last line containing needle."""
    n = None
    for i, line in enumerate(text.splitlines(), 1):
        if needle in line:
            n = i
    return n


@pytest.fixture
def conf_ngx(nginx_factory):
    """An instance that is never started: only its `nginx -t`."""
    n = nginx_factory(None, start=False,
                      redis_line=REDIS)
    _files(n)
    return n


def _render_parts(ngx, parts):
    return {k: v.replace('@DIR@', ngx.dir) for k, v in parts.items()}


@pytest.mark.parametrize('case', BAD, ids=[c[0] for c in BAD])
def test_bad_directive_rejected(conf_ngx, case):
    cid, parts, directive, needle, tokens, check_line = case
    rc, out, text = conf_ngx.test_config(**_render_parts(conf_ngx, parts))
    assert rc != 0, '%s: nginx -t accepted it:\n%s' % (cid, out)
    assert '[emerg]' in out, out
    low = re.sub(r'nginx\.conf:\d+', 'nginx.conf', out).lower()
    # the problem is named: the bad value or a word about it
    assert any(t.lower() in low for t in tokens), (
        '%s: message does not name the problem (want one of %r):\n%s'
        % (cid, tokens, out))
    # and it is the cdp directive that is blamed: by name, or by its line
    where = [directive]
    line = _line_of(text, needle or directive)
    if line:
        where.append('nginx.conf:%d' % line)
    assert any(w in out for w in where), (
        '%s: message names neither of %r:\n%s' % (cid, where, out))
    if 'secret' in cid:
        assert SHORT_KEY not in out, 'the secret is echoed in the message'


GOOD = [
    ('default', {}),
    ('all-params', dict(
        redis='cdp_redis 127.0.0.1:6379 db=2 password=s3cret prefix=shop '
              'timeout=500ms;',
        cookie='cdp_cookie cdp_aid domain=example.test path=/ max_age=400d '
               'samesite=none secure=on;',
        http_extra='cdp_stream_maxlen 1000; cdp_batch_size 16; '
                   'cdp_queue_size 100;')),
    ('unix-socket', dict(redis='cdp_redis unix:/run/redis/redis.sock '
                               'password=s3cret;')),
    ('cookie-variants', dict(
        cookie='cdp_cookie cdp_aid max_age=30d samesite=strict secure=off;',
        server_extra='location = /p2.gif { cdp_pixel; cdp_cookie other '
                     'max_age=1h samesite=lax secure=auto; }')),
    ('two-keys', dict(secret='cdp_secret_file @DIR@/two.secret;')),
    ('key-without-newline', dict(secret='cdp_secret_file @DIR@/nonl.secret;')),
    ('no-redis', dict(redis='')),
    ('status-only', dict(redis='', secret='', cookie='',
                         locations='location = /status { cdp_status; }')),
]


@pytest.mark.parametrize('case', GOOD, ids=[c[0] for c in GOOD])
def test_good_config_passes(conf_ngx, case):
    cid, parts = case
    rc, out, _ = conf_ngx.test_config(**_render_parts(conf_ngx, parts))
    assert rc == 0, '%s: nginx -t failed:\n%s' % (cid, out)
    assert 'test is successful' in out, out
    assert '[emerg]' not in out and '[alert]' not in out, out
