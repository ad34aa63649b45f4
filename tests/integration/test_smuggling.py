"""Request smuggling through an early answer: every handler of the module
(cdp_pixel, cdp_status, cdp_api, cdp_admin, cdp_consent_endpoint) must read
or discard the request body on every path that answers before reading it.
A body left on a keep-alive connection is parsed by nginx as the next
request, so a body that is itself an HTTP request is served: smuggled past
whatever sits in front of nginx.

Plain sockets here, never an HTTP library (which would hide the problem):
for every handler and every early answer it has (wrong method, wrong
content type, cross-site, unknown endpoint, auth refused, body too large,
malformed body; a GET with a body), one connection carries

  1. the request, its body holding a complete request for /smuggled;
  2. once its answer is read, a second real request (GET /status, or
     GET /p.gif after the status handler's own cases) with
     "Connection: close".

What is asserted: the responses read off the connection are exactly

  * [early answer, second answer] with the body sent with Content-Length
    (mode "length") or chunked (mode "chunked"): nginx keeps the
    connection alive after discarding the body;
  * [early answer] and then the connection closed, with a malformed
    chunked body (mode "bad-chunked"): nginx cannot tell where such a body
    ends, so it legitimately closes instead of discarding, and the second
    request is never answered.  Paths that read the body before answering
    get nginx's own 400 for the bad chunk here instead of their answer.

never a response for the smuggled request (a 404 for GET /smuggled, a 405
for the chunk framing's "FA /smuggled" below, a 400 for body bytes taken
as a request line), and nginx's access log has no line with /smuggled.
The early answer is the handler's own also with a malformed chunked body,
as nginx's own 405 is (ngx_http_special_response_handler(): the discard
fails, the answer goes out, the connection is closed), not nginx's 400
for the body.

The bodies are made so that a body left unread is served as /smuggled:

  * with Content-Length, the body is CRLFs (which nginx skips before a
    request line) then "GET /smuggled HTTP/1.1 ...";
  * chunked, the first chunk's size line is "FA /smuggled HTTP/1.1" (size
    0xFA with a chunk extension, valid chunked framing nginx accepts) and
    its data are header lines, so the chunk framing itself is a request
    line; the case's body, with "GET /smuggled ..." in it, follows in
    further chunks;
  * bad-chunked: the same first chunk, then "GET /smuggled ..." where the
    next chunk-size line should be.

The cases that read the body before answering (malformed JSON, a refused
write key of the API, chunked bodies over a limit) are controls: they do
not depend on a discard.
"""

import base64
import hashlib
import os
import re
import secrets
import socket
import time

import pytest

import cdp_harness as h


WRITE_KEY = 'wk-smuggle-' + secrets.token_hex(6)
TOKENS = {
    'marketer': 'mkt-' + secrets.token_urlsafe(24),
    'privacy': 'prv-' + secrets.token_urlsafe(24),
}

LOCATIONS = """\
location = /p.gif   { cdp_pixel; }
        location = /status  { cdp_status; }
        location = /consent { cdp_consent_endpoint; }
        location /admin/    { cdp_admin; }
        location /v1/       { cdp_api; cdp_write_key @WRITE_KEY@; }"""

SMUGGLED = b'GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n'
FORM = 'application/x-www-form-urlencoded'
JSON = 'application/json'

# the limits of the handlers (ngx_cdp_segment.h, ngx_cdp_admin.c,
# ngx_cdp_endpoint.c)
API_BODY_MAX = 32768
ADMIN_BODY_MAX = 65536
FORM_MAX = 4096

IO_TIMEOUT = 5.0        # for any one response, and for the whole reading


def padded(size):
    """A body of `size` bytes: CRLFs (and an LF), then the smuggled
    request at the end (nginx skips CRs and LFs before a request line: a
    body left unread is served as /smuggled)."""
    n = size - len(SMUGGLED)
    assert n >= 0, size
    return b'\r\n' * (n // 2) + b'\n' * (n % 2) + SMUGGLED


def bearer(role):
    return 'Bearer ' + TOKENS[role]


def basic(key):
    return 'Basic ' + base64.b64encode(key.encode() + b':').decode()


# --------------------------------------------------------------------------
# the cases

class Case:
    """One early answer of one handler.

    status          the answer, body sent with Content-Length
    chunked_status  the answer, body sent chunked (default: status)
    early           answered before the body is read when it is chunked
                    (else the body is read first: with a malformed chunked
                    body, nginx answers 400 itself)
    code            the JSON "error" of the module's answer, when it has one
    """

    def __init__(self, handler, name, method, target, status, body=SMUGGLED,
                 headers=(), chunked_status=None, early=True, code=None,
                 ctype=None):
        self.handler, self.name = handler, name
        self.method, self.target = method, target
        self.status, self.body = status, body
        self.headers = list(headers)
        if ctype:
            self.headers.append(('Content-Type', ctype))
        self.chunked_status = (chunked_status if chunked_status is not None
                               else status)
        self.early = early
        self.code = code

    @property
    def id(self):
        return '%s-%s' % (self.handler, self.name)

    def expected(self, mode):
        if mode == 'length':
            return self.status
        if mode == 'chunked':
            return self.chunked_status
        return self.chunked_status if self.early else 400


CASES = [
    # the pixel: nginx answers the 405 (ngx_http_special_response_handler)
    Case('pixel', 'post-405', 'POST', '/p.gif', 405, ctype=FORM),
    Case('pixel', 'get-with-body-200', 'GET', '/p.gif?e=pv', 200),

    Case('status', 'post-405', 'POST', '/status', 405, ctype=FORM),
    Case('status', 'get-with-body-200', 'GET', '/status', 200),

    # the server API
    Case('api', 'get-405', 'GET', '/v1/track', 405, ctype=JSON,
         code='method_not_allowed'),
    Case('api', 'unknown-endpoint-404', 'POST', '/v1/nope', 404, ctype=JSON,
         code='unknown_endpoint'),
    # refused by its Content-Length before reading; chunked, the body is
    # read first and refused after
    Case('api', 'too-large-413', 'POST', '/v1/track', 413,
         body=padded(40000), ctype=JSON, early=False,
         code='body_too_large'),
    # the API reads the body before it checks a key (Basic auth or writeKey)
    Case('api', 'bad-write-key-401', 'POST', '/v1/track', 401, ctype=JSON,
         headers=[('Authorization', basic('wk-wrong-' + secrets.token_hex(4)))],
         early=False, code='unauthorized'),
    Case('api', 'malformed-json-400', 'POST', '/v1/track', 400, ctype=JSON,
         early=False, code='invalid_json'),

    # the admin API
    Case('admin', 'no-token-401', 'POST', '/admin/erase', 401, ctype=JSON,
         code='unauthorized'),
    Case('admin', 'marketer-erase-403', 'POST', '/admin/erase', 403,
         ctype=JSON, headers=[('Authorization', bearer('marketer'))],
         code='forbidden'),
    Case('admin', 'unknown-endpoint-404', 'POST', '/admin/nope', 404,
         ctype=JSON, headers=[('Authorization', bearer('privacy'))],
         code='unknown_endpoint'),
    Case('admin', 'put-405', 'PUT', '/admin/erase', 405, ctype=JSON,
         headers=[('Authorization', bearer('privacy'))],
         code='method_not_allowed'),
    # chunked, a body over 64 KB is read, then refused as an invalid body
    Case('admin', 'too-large-413', 'POST', '/admin/erase', 413,
         body=padded(70000), ctype=JSON,
         headers=[('Authorization', bearer('privacy'))],
         chunked_status=400, early=False),
    Case('admin', 'malformed-json-400', 'POST', '/admin/erase', 400,
         ctype=JSON, headers=[('Authorization', bearer('privacy'))],
         early=False, code='invalid_field'),
    # a GET is answered without reading a body: a 400 of its query, and an
    # answer that comes later, from Redis
    Case('admin', 'get-missing-field-400', 'GET', '/admin/profiles', 400,
         headers=[('Authorization', bearer('privacy'))],
         code='missing_field'),
    Case('admin', 'get-audit-with-body-200', 'GET', '/admin/audit?since=0',
         200, headers=[('Authorization', bearer('privacy'))]),

    # the consent endpoint: nginx answers the 405
    Case('consent', 'put-405', 'PUT', '/consent', 405, ctype=FORM),
    Case('consent', 'cross-site-origin-403', 'POST', '/consent', 403,
         ctype=FORM, headers=[('Origin', 'https://evil.example')]),
    Case('consent', 'cross-site-fetch-403', 'POST', '/consent', 403,
         ctype=FORM, headers=[('Sec-Fetch-Site', 'cross-site')]),
    Case('consent', 'text-plain-415', 'POST', '/consent', 415,
         ctype='text/plain'),
    Case('consent', 'too-large-413', 'POST', '/consent', 413,
         body=padded(5000), ctype=FORM, early=False),
    # read, then refused: an unknown purpose
    Case('consent', 'unknown-purpose-400', 'POST', '/consent', 400,
         body=SMUGGLED + b'&grant=nope', ctype=FORM, early=False),
    Case('consent', 'get-with-body-200', 'GET', '/consent', 200),
]

MODES = ('length', 'chunked', 'bad-chunked')


# --------------------------------------------------------------------------
# requests, as bytes

def first_chunk():
    """A chunk of 0xFA bytes whose size line is "FA /smuggled HTTP/1.1"
    (a chunk extension) and whose data are header lines: valid framing
    that, left unread, is a request for /smuggled."""
    size = 0xFA
    head = b'Host: x\r\nX-Pad: '
    data = head + b'p' * (size - len(head) - 2) + b'\r\n'
    assert len(data) == size
    return b'FA /smuggled HTTP/1.1\r\n' + data + b'\r\n'


def chunk(data):
    return b'%x\r\n' % len(data) + data + b'\r\n'


def chunked(body, piece=8192):
    """The body in chunks after first_chunk(); the last 4096 bytes (where
    padded() puts the smuggled request) in one chunk."""
    out = [first_chunk()]
    cut = max(0, len(body) - 4096)
    for i in range(0, cut, piece):
        out.append(chunk(body[i:min(i + piece, cut)]))
    out.append(chunk(body[cut:]))
    out.append(b'0\r\n\r\n')
    return b''.join(out)


def bad_chunked():
    """first_chunk(), then a request where a chunk-size line should be."""
    return first_chunk() + SMUGGLED


def request(port, case, mode):
    lines = ['%s %s HTTP/1.1' % (case.method, case.target),
             'Host: 127.0.0.1:%d' % port]
    lines += ['%s: %s' % hv for hv in case.headers]
    if mode == 'length':
        body = case.body
        lines.append('Content-Length: %d' % len(body))
    else:
        body = chunked(case.body) if mode == 'chunked' else bad_chunked()
        lines.append('Transfer-Encoding: chunked')
    # no Connection header: HTTP/1.1 keeps the connection alive
    return ('\r\n'.join(lines) + '\r\n\r\n').encode() + body


def second_request(port, target):
    return ('GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n'
            '\r\n' % (target, port)).encode()


# --------------------------------------------------------------------------
# responses, off the socket

class Response:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def header(self, name, default=''):
        return self.headers.get(name.lower(), default)

    def __repr__(self):
        return '<%d %s %r>' % (self.status, self.header('content-type'),
                               self.body[:80])


class Closed(Exception):
    """The connection ended (EOF, reset) or was quiet past the deadline
    before a whole response came."""


class RawConnection:
    """A socket and a reader of HTTP/1.1 responses: status line, headers,
    a body by Content-Length or chunked (or to the end of the
    connection)."""

    def __init__(self, port):
        self.sock = socket.create_connection(('127.0.0.1', port),
                                             timeout=IO_TIMEOUT)
        self.buf = b''
        self.eof = False

    def close(self):
        self.sock.close()

    def send(self, data):
        """sendall(); False when the server closed the connection."""
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def shutdown_write(self):
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _fill(self, deadline):
        """One recv() within the deadline; False at EOF, reset, timeout."""
        if self.eof:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return False
        except OSError:
            data = b''
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _until(self, sep, deadline):
        while sep not in self.buf:
            if not self._fill(deadline):
                raise Closed('no %r: %r' % (sep, self.buf[:200]))
        i = self.buf.index(sep)
        out, self.buf = self.buf[:i], self.buf[i + len(sep):]
        return out

    def _take(self, n, deadline):
        while len(self.buf) < n:
            if not self._fill(deadline):
                raise Closed('%d of %d body bytes' % (len(self.buf), n))
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_response(self, timeout=IO_TIMEOUT):
        """The next response; None when the connection ends (or stays
        quiet for `timeout`) before one starts."""
        deadline = time.monotonic() + timeout
        while not self.buf:
            if not self._fill(deadline):
                return None
        head = self._until(b'\r\n\r\n', deadline).decode('latin-1')
        lines = head.split('\r\n')
        m = re.match(r'^HTTP/1\.[01] (\d{3})', lines[0])
        assert m, 'not a status line: %r' % lines[0]
        status = int(m.group(1))
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(':')
            headers[k.strip().lower()] = v.strip()
        if status in (204, 304) or 100 <= status < 200:
            body = b''
        elif 'chunked' in headers.get('transfer-encoding', '').lower():
            parts = []
            while True:
                size = int(self._until(b'\r\n', deadline).split(b';')[0], 16)
                if size == 0:
                    # trailers, up to the empty line
                    while self._until(b'\r\n', deadline):
                        pass
                    break
                parts.append(self._take(size, deadline))
                self._take(2, deadline)
            body = b''.join(parts)
        elif 'content-length' in headers:
            body = self._take(int(headers['content-length']), deadline)
        else:
            while self._fill(deadline):
                pass
            body, self.buf = self.buf, b''
        return Response(status, headers, body)


def exchange(port, first, second):
    """Sends `first`, reads its answer, sends `second` and reads every
    further response until the connection ends.  Returns (responses,
    closed): closed when the server ended the connection (rather than the
    reading running out of time)."""
    conn = RawConnection(port)
    try:
        responses = []
        conn.send(first)
        try:
            r = conn.read_response()
        except Closed as e:
            raise AssertionError('the first answer cut short: %s' % e)
        if r is not None:
            responses.append(r)
            # the server closing the connection here is no error: the
            # second request then gets no answer
            if conn.send(second):
                conn.shutdown_write()
            deadline = time.monotonic() + IO_TIMEOUT
            while True:
                try:
                    r = conn.read_response(max(0.0,
                                               deadline - time.monotonic()))
                except Closed as e:
                    raise AssertionError(
                        'a response cut short: %s (so far: %r)'
                        % (e, responses))
                if r is None:
                    break
                responses.append(r)
        return responses, conn.eof
    finally:
        conn.close()


# --------------------------------------------------------------------------
# the stack: every handler in one server

def write_tokens(path):
    with open(path, 'w') as f:
        for role, tok in TOKENS.items():
            f.write('%s %s\n' % (role,
                                 hashlib.sha256(tok.encode()).hexdigest()))


@pytest.fixture
def ngx(nginx_factory, redis_server, workdir):
    tokens = os.path.join(workdir, 'tokens-%s' % secrets.token_hex(4))
    write_tokens(tokens)
    return nginx_factory(
        redis_server,
        http_extra='cdp_admin_tokens %s;' % tokens,
        locations=LOCATIONS.replace('@WRITE_KEY@', WRITE_KEY))


def check_second(case, r):
    """The second request's answer: /status's counters or the pixel's
    GIF."""
    assert r.status == 200, r
    if case.handler == 'status':
        assert r.header('content-type') == 'image/gif', r
        assert len(r.body) == h.GIF_LEN and r.body.startswith(b'GIF89a'), r
    else:
        assert r.header('content-type').startswith('text/plain'), r
        assert b'cdp_events_accepted_total' in r.body, r


def check_first(case, mode, r):
    want = case.expected(mode)
    assert r.status == want, 'first answer %r, want %d' % (r, want)
    # the module's own answer (not nginx's 400 for a malformed body read)
    if case.code and r.status == case.status and (
            mode != 'bad-chunked' or case.early):
        assert r.header('content-type').startswith('application/json'), r
        assert b'"error":"%s"' % case.code.encode() in r.body, r


@pytest.mark.parametrize('mode', MODES)
@pytest.mark.parametrize('case', CASES, ids=[c.id for c in CASES])
def test_early_answer_does_not_smuggle_the_body(ngx, case, mode):
    """Exactly the early answer and the second request's answer (or, for
    a malformed chunked body, the early answer and the connection closed);
    nothing for /smuggled, on the wire or in the access log."""
    second = '/p.gif?e=second' if case.handler == 'status' else '/status'
    responses, closed = exchange(ngx.port, request(ngx.port, case, mode),
                                 second_request(ngx.port, second))

    log = [l for l in h.Nginx.read(ngx.access_log).splitlines()
           if '/smuggled' in l]
    want_n = 1 if mode == 'bad-chunked' else 2
    assert len(responses) == want_n and not log, (
        '%s, %s body: want %d responses (%d then %s), got %d: %r; '
        'access log lines with /smuggled: %r' % (
            case.id, mode, want_n, case.expected(mode),
            'the connection closed' if want_n == 1 else '200 for ' + second,
            len(responses), responses, log))

    check_first(case, mode, responses[0])
    if mode == 'bad-chunked':
        # nginx cannot tell where the body ends: it closes the connection
        assert closed, 'connection left open after a malformed body'
    else:
        check_second(case, responses[1])
        assert closed, 'no close after "Connection: close"'
