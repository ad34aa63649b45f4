"""nginx conventions an operator relies on (issue 18): http-level
directives anywhere in the http block (after the server blocks, in an
included file), typos of literal values caught by `nginx -t`, a warning
when events would go nowhere, and the admin API's refusals in error_log
for fail2ban-style tools, without a token's bytes or a person's address."""

import hashlib
import os
import re
import subprocess

import cdp_harness as h


TOKEN = 'conventions-privacy-token-0123456789'

# every http-level directive of the module after the server block, some in
# an included file: nginx reads the whole block before it checks them
ORDER_FREE = """\
load_module @MODULE@;
daemon off;
master_process on;
worker_processes 1;
error_log @DIR@/error.log info;
pid @DIR@/nginx.pid;
@USER@
events { worker_connections 256; }
http {
    client_body_temp_path @DIR@/client_body_temp;
    proxy_temp_path       @DIR@/proxy_temp;
    fastcgi_temp_path     @DIR@/fastcgi_temp;
    uwsgi_temp_path       @DIR@/uwsgi_temp;
    scgi_temp_path        @DIR@/scgi_temp;
    access_log off;

    server {
        listen 127.0.0.1:@PORT@;
        location = /p.gif  { cdp_pixel; }
        location /admin/   { cdp_admin; }
        location = /status { cdp_status; }
        location = /consent { cdp_consent_endpoint; }
        location = /r      { cdp_redirect; }
        location /v1/      { cdp_api; cdp_write_key wk-conventions; }
    }

    include @DIR@/cdp-http.conf;
    cdp_admin_tokens @DIR@/admin.tokens;
    cdp_consent_default all;
}
"""

INCLUDED = """\
cdp_redis 127.0.0.1:@REDIS_PORT@ prefix=@PREFIX@;
cdp_secret_file @DIR@/cdp.secret;
cdp_cookie cdp_aid;
cdp_redirect_hosts wa.me;
cdp_spool @DIR@/spool;
"""


def _order_free(ngx, redis):
    d = ngx.dir
    with open(os.path.join(d, 'cdp-http.conf'), 'w') as f:
        f.write(INCLUDED.replace('@REDIS_PORT@', str(redis.port))
                .replace('@PREFIX@', ngx.prefix).replace('@DIR@', d))
    with open(os.path.join(d, 'admin.tokens'), 'w') as f:
        f.write('privacy %s\n' % hashlib.sha256(TOKEN.encode()).hexdigest())
    conf = ORDER_FREE
    for k, v in (('@MODULE@', h.MODULE), ('@DIR@', d),
                 ('@PORT@', str(ngx.port)),
                 ('@USER@', 'user root;' if os.geteuid() == 0 else '')):
        conf = conf.replace(k, v)
    with open(ngx.conf_path, 'w') as f:
        f.write(conf)
    # start() runs this conf, not the harness's template
    ngx.write_conf = lambda **parts: None


def _nginx_t(conf_path, d):
    p = subprocess.run([h.NGINX, '-t', '-p', d + '/', '-c', conf_path,
                        '-e', os.path.join(d, 'error-t.log')],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=30)
    return p.returncode, p.stdout.decode('utf-8', 'replace')


def test_http_directives_after_the_server_block_and_included(
        nginx_factory, redis_server):
    """cdp_admin_tokens, cdp_secret_file, cdp_redis... after the server
    that uses them, partly from an include: nginx -t passes, and the pixel
    and the admin API work."""
    ngx = nginx_factory(redis_server, start=False)
    _order_free(ngx, redis_server)
    rc, out = _nginx_t(ngx.conf_path, ngx.dir)
    assert rc == 0, out
    assert 'test is successful' in out, out

    ngx.start()
    try:
        r = ngx.hit('title=order-free')
        assert h.is_gif(r) and h.cookie_of(r), r
        assert ngx.wait_xlen(1) == 1
        r = ngx.client().request('GET', '/admin/audit',
                                 headers={'Authorization': 'Bearer ' + TOKEN})
        assert r.status == 200, r
    finally:
        ngx.stop()


def test_consent_typos_fail_nginx_t(nginx_factory):
    """A literal consent value is checked when nginx reads it: a typo
    fails nginx -t, naming the directive and the value; values with
    variables are read per request."""
    ngx = nginx_factory(None, start=False)
    for line, bad in (('cdp_consent_default analytic,marketing;',
                       'analytic,marketing'),
                      ('cdp_consent_default "all,none";', 'all,none'),
                      ('cdp_consent "marketting";', 'marketting')):
        rc, out, _ = ngx.test_config(consent=line)
        assert rc != 0, (line, out)
        assert 'cdp_consent' in out and bad in out, (line, out)
        assert 'analytics' in out, (line, out)   # says what would do
    for line in ('cdp_consent_default "analytics, marketing";',
                 'cdp_consent_default none;',
                 'cdp_consent_default $cookie_consent;',
                 'cdp_consent $http_x_cmp;'):
        rc, out, _ = ngx.test_config(consent=line)
        assert rc == 0, (line, out)


def test_unreadable_consent_variable_warns_once(nginx_factory, redis_server):
    """A variable's value that is no consent is ignored (the next source
    decides) and logged at warn, once a minute, not once a request."""
    ngx = nginx_factory(redis_server, workers=1,
                        consent_line='cdp_consent_default $http_x_consent;')
    for _ in range(5):
        assert h.is_gif(ngx.hit('title=x', headers={'X-Consent': 'analytic'}))
    assert h.wait_until(lambda: 'not understood' in ngx.log_tail(), 5)
    lines = [l for l in ngx.log_tail().splitlines()
             if 'consent value "analytic" not understood' in l]
    assert len(lines) == 1, lines
    assert '[warn]' in lines[0], lines


def test_no_redis_warns_at_configuration(nginx_factory):
    """cdp_pixel without cdp_redis: nginx -t passes, and says that the
    events are dropped."""
    ngx = nginx_factory(None, start=False, redis_line='')
    rc, out, _ = ngx.test_config()
    assert rc == 0, out
    assert re.search(r'\[warn\].*cdp_pixel without cdp_redis', out), out
    ngx2 = nginx_factory(None, start=False,
                         redis_line='cdp_redis 127.0.0.1:6379 prefix=t;')
    rc, out, _ = ngx2.test_config()
    assert 'without cdp_redis' not in out, out


def test_missing_secret_is_named_whatever_the_order(nginx_factory):
    """A location feature without cdp_secret_file: the message names the
    directive that needs it."""
    ngx = nginx_factory(None, start=False)
    rc, out, _ = ngx.test_config(secret='')
    assert rc != 0
    assert 'cdp_pixel requires cdp_secret_file' in out, out


def test_admin_refusals_are_logged_without_secrets(nginx_factory,
                                                  redis_server, workdir):
    """A bad token (and a role that may not) leaves one warn line with the
    client's address: never the token, nor the request's query."""
    tokens = os.path.join(workdir, 'conv.tokens')
    with open(tokens, 'w') as f:
        f.write('marketer %s\n' % hashlib.sha256(TOKEN.encode()).hexdigest())
    ngx = nginx_factory(redis_server, http_extra='cdp_admin_tokens %s;' % tokens,
                        locations=h.DEFAULT_LOCATIONS
                        + '\n        location /admin/ { cdp_admin; }')
    c = ngx.client()
    bad = 'not-the-token-4242'
    r = c.request('GET', '/admin/profiles?email=jane%40example.com',
                  headers={'Authorization': 'Bearer ' + bad})
    assert r.status == 401, r
    r = c.request('POST', '/admin/erase', body=b'email=jane@example.com',
                  headers={'Authorization': 'Bearer ' + TOKEN,
                           'Content-Type':
                               'application/x-www-form-urlencoded'})
    assert r.status == 403, r
    assert h.wait_until(lambda: ngx.log_tail().count('refused') >= 2, 5)
    log = ngx.log_tail()
    lines = [l for l in log.splitlines() if 'admin request from' in l]
    assert len(lines) == 2, lines
    assert all('[warn]' in l and '127.0.0.1' in l for l in lines), lines
    assert 'no valid bearer token' in lines[0], lines
    assert '"erase"' in lines[1], lines
    assert bad not in log and TOKEN not in log, 'a token in error_log'
    assert 'jane' not in log, 'an address in error_log'


API_LOCATIONS = h.DEFAULT_LOCATIONS + """
        location /v1/ {
            cdp_api;
            cdp_write_key wk-conventions;
            client_max_body_size 1k;
        }"""


def _raw(port, data, timeout=5):
    """The answers to raw bytes, until the server closes."""
    import socket
    s = socket.create_connection(('127.0.0.1', port), timeout=timeout)
    try:
        s.sendall(data)
        out = b''
        while True:
            try:
                b = s.recv(65536)
            except socket.timeout:
                break
            if not b:
                break
            out += b
        return out
    finally:
        s.close()


def test_api_answers_nginx_own_errors_as_json(nginx_factory, redis_server):
    """The API location gives nginx's own refusals (a body over
    client_max_body_size, a broken chunked body) in the API's JSON, not
    nginx's HTML page."""
    import json
    ngx = nginx_factory(redis_server, locations=API_LOCATIONS)
    st0 = ngx.status()

    body = b'{"userId":"u","event":"e","pad":"' + b'x' * 2000 + b'"}'
    out = _raw(ngx.port, b'POST /v1/track HTTP/1.1\r\nHost: t\r\n'
               b'Content-Type: application/json\r\nConnection: close\r\n'
               b'Content-Length: %d\r\n\r\n' % len(body) + body)
    head, _, rest = out.partition(b'\r\n\r\n')
    assert head.startswith(b'HTTP/1.1 413'), out[:300]
    assert b'application/json' in head, head
    assert json.loads(rest) == {
        'success': False, 'error': 'body_too_large',
        'message': 'the body is over client_max_body_size'}, rest

    out = _raw(ngx.port, b'POST /v1/track HTTP/1.1\r\nHost: t\r\n'
               b'Content-Type: application/json\r\nConnection: close\r\n'
               b'Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n')
    head, _, rest = out.partition(b'\r\n\r\n')
    assert head.startswith(b'HTTP/1.1 400'), out[:300]
    assert json.loads(rest)['error'] == 'bad_request', rest

    # nothing stored, each refusal counted
    d = ngx.status().delta(st0)
    assert d.c('cdp_api_requests_rejected_total') == 2, d
    assert ngx.xlen() == 0
