
/*
 * ngx_cdp: the per-worker Redis client, its transport (ngx_cdp_redis.h).
 *
 * nginx owns the socket (ngx_event_connect_peer, its event loop and its
 * timers); hiredis is only the codec: redisFormatCommandArgv for the few
 * handshake commands, redisReader for every reply.  Debian's hiredis 0.14
 * async API would resolve names with a blocking getaddrinfo, close the
 * fd itself and read at most 16 KiB per wakeup, which does not fit nginx's
 * edge-triggered epoll.
 *
 * Replies come back in order; each command in flight has a pending entry
 * with its callback, which is also called, with no reply, when the
 * connection is lost.  The batches of events are ngx_cdp_ingest.c's.
 */


#include "ngx_cdp_redis.h"
#include "ngx_cdp_http.h"
#include "ngx_cdp_resp.h"

#include "ngx_cdp_store_lua.h"
#include "ngx_cdp_admin_lua.h"


#define NGX_CDP_REDIS_DOWN        0     /* waiting for the reconnect timer */
#define NGX_CDP_REDIS_CONNECTING  1     /* connect() in progress */
#define NGX_CDP_REDIS_HANDSHAKE   2     /* AUTH, SELECT, library check */
#define NGX_CDP_REDIS_READY       3

#define NGX_CDP_BACKOFF_MIN       100
#define NGX_CDP_BACKOFF_MAX       5000


typedef struct {
    ngx_cdp_redis_reply_pt     handler;
    void                      *data;
} ngx_cdp_redis_pending_t;



typedef struct {
    ngx_cdp_redis_conf_t      *conf;
    ngx_str_t                 *spool;       /* cdp_spool's path, or NULL */
    ngx_log_t                 *log;
    ngx_cdp_redis_ready_pt     ready;

    ngx_peer_connection_t      peer;
    ngx_connection_t          *connection;
    ngx_uint_t                 state;
    redisReader               *reader;

    ngx_cdp_resp_buf_t         out;         /* commands not yet written */

    ngx_cdp_redis_pending_t   *pending;     /* a ring, grown as needed */
    ngx_uint_t                 pending_size;
    ngx_uint_t                 pending_head;
    ngx_uint_t                 pending_n;

    ngx_event_t                reconnect_ev;
    ngx_msec_t                 backoff;

    ngx_uint_t                 loading;     /* a bit per library */

    unsigned                   must_close:1;
    unsigned                   reported:1;  /* the outage is logged */
} ngx_cdp_redis_t;


typedef struct {
    const char                *name;        /* for the log */
    const char                *version;     /* its version function */
    const char                *rev;         /* the revision compiled in */
    const char                *lua;
    size_t                     len;
} ngx_cdp_redis_library_t;


/* store/cdp.lua, then store/admin.lua (ngx_cdp_redis_library_*) */

static ngx_cdp_redis_library_t  ngx_cdp_redis_libraries[] = {
    { "store library cdp_v1", "cdp_version", NGX_CDP_STORE_REV,
      ngx_cdp_store_lua, sizeof(ngx_cdp_store_lua) - 1 },
    { "admin library cdp_admin_v1", "cdp_admin_version", NGX_CDP_ADMIN_REV,
      ngx_cdp_admin_lua, sizeof(ngx_cdp_admin_lua) - 1 }
};

#define NGX_CDP_REDIS_LIB_STORE   (&ngx_cdp_redis_libraries[0])
#define NGX_CDP_REDIS_LIB_ADMIN   (&ngx_cdp_redis_libraries[1])


static void ngx_cdp_redis_connect(ngx_cdp_redis_t *rd);
static void ngx_cdp_redis_handshake(ngx_cdp_redis_t *rd);
static void ngx_cdp_redis_ready(ngx_cdp_redis_t *rd);
static void ngx_cdp_redis_fail(ngx_cdp_redis_t *rd, const char *why);
static void ngx_cdp_redis_write(ngx_cdp_redis_t *rd);
static ngx_int_t ngx_cdp_redis_command(ngx_cdp_redis_t *rd, int argc,
    const char **argv, const size_t *argvlen, ngx_cdp_redis_reply_pt handler,
    void *data);
static ngx_int_t ngx_cdp_redis_push(ngx_cdp_redis_t *rd,
    ngx_cdp_redis_reply_pt handler, void *data);
static ngx_int_t ngx_cdp_redis_replies(ngx_cdp_redis_t *rd);
static void ngx_cdp_redis_check(ngx_cdp_redis_t *rd,
    ngx_cdp_redis_library_t *lib);
static void ngx_cdp_redis_next(ngx_cdp_redis_t *rd,
    ngx_cdp_redis_library_t *lib);
static void ngx_cdp_redis_load(ngx_cdp_redis_t *rd,
    ngx_cdp_redis_library_t *lib);
static void ngx_cdp_redis_call_done(redisReply *reply, void *data);

static void ngx_cdp_redis_read_handler(ngx_event_t *rev);
static void ngx_cdp_redis_write_handler(ngx_event_t *wev);
static void ngx_cdp_redis_reconnect_handler(ngx_event_t *ev);

static void ngx_cdp_redis_setup_done(redisReply *reply, void *data);
static void ngx_cdp_redis_version_done(redisReply *reply, void *data);
static void ngx_cdp_redis_load_done(redisReply *reply, void *data);



static ngx_cdp_redis_t  *ngx_cdp_redis;


ngx_int_t
ngx_cdp_redis_init_process(ngx_cycle_t *cycle, ngx_cdp_redis_conf_t *conf,
    ngx_str_t *spool, ngx_cdp_redis_ready_pt ready)
{
    ngx_cdp_redis_t  *rd;

    rd = ngx_pcalloc(cycle->pool, sizeof(ngx_cdp_redis_t));
    if (rd == NULL) {
        return NGX_ERROR;
    }

    rd->conf = conf;
    rd->spool = spool;
    rd->log = cycle->log;
    rd->ready = ready;
    rd->backoff = NGX_CDP_BACKOFF_MIN;

    /* a down Redis must not hold up a graceful shutdown */
    rd->reconnect_ev.handler = ngx_cdp_redis_reconnect_handler;
    rd->reconnect_ev.data = rd;
    rd->reconnect_ev.log = cycle->log;
    rd->reconnect_ev.cancelable = 1;

    ngx_cdp_redis = rd;

    ngx_cdp_redis_connect(rd);

    return NGX_OK;
}


void
ngx_cdp_redis_exit_process(ngx_cycle_t *cycle)
{
    ngx_cdp_redis_t  *rd;

    rd = ngx_cdp_redis;
    if (rd == NULL) {
        return;
    }

    if (rd->connection) {
        ngx_close_connection(rd->connection);
        rd->connection = NULL;
    }

    if (rd->reader) {
        redisReaderFree(rd->reader);
        rd->reader = NULL;
    }

    ngx_cdp_resp_free(&rd->out);
    ngx_free(rd->pending);

    ngx_cdp_redis = NULL;
}


ngx_uint_t
ngx_cdp_redis_is_ready(void)
{
    return ngx_cdp_redis && ngx_cdp_redis->state == NGX_CDP_REDIS_READY;
}


ngx_uint_t
ngx_cdp_redis_is_down(void)
{
    return ngx_cdp_redis == NULL || ngx_cdp_redis->state == NGX_CDP_REDIS_DOWN;
}


size_t
ngx_cdp_redis_unsent(void)
{
    if (ngx_cdp_redis == NULL) {
        return 0;
    }

    return ngx_cdp_redis->out.last - ngx_cdp_redis->out.pos;
}


u_char *
ngx_cdp_redis_buffer(size_t len)
{
    ngx_cdp_redis_t  *rd = ngx_cdp_redis;

    if (ngx_cdp_resp_reserve(&rd->out, len) != 0) {
        return NULL;
    }

    return rd->out.last;
}


/* the command ngx_cdp_redis_buffer()'s caller wrote ends at last */

ngx_int_t
ngx_cdp_redis_queue(u_char *last, ngx_cdp_redis_reply_pt handler, void *data)
{
    ngx_cdp_redis_t  *rd = ngx_cdp_redis;

    if (ngx_cdp_redis_push(rd, handler, data) != NGX_OK) {
        return NGX_ERROR;
    }

    rd->out.last = last;

    return NGX_OK;
}


void
ngx_cdp_redis_send(void)
{
    if (ngx_cdp_redis) {
        ngx_cdp_redis_write(ngx_cdp_redis);
    }
}


void
ngx_cdp_redis_load_library(void)
{
    if (ngx_cdp_redis && ngx_cdp_redis->state == NGX_CDP_REDIS_READY) {
        ngx_cdp_redis_load(ngx_cdp_redis, NGX_CDP_REDIS_LIB_STORE);
    }
}


static void
ngx_cdp_redis_connect(ngx_cdp_redis_t *rd)
{
    ngx_int_t          rc;
    ngx_connection_t  *c;

    ngx_memzero(&rd->peer, sizeof(ngx_peer_connection_t));

    rd->peer.sockaddr = rd->conf->addr->sockaddr;
    rd->peer.socklen = rd->conf->addr->socklen;
    rd->peer.name = &rd->conf->addr->name;
    rd->peer.get = ngx_event_get_peer;
    rd->peer.log = rd->log;
    rd->peer.log_error = NGX_ERROR_ERR;

    if (rd->reader) {
        redisReaderFree(rd->reader);
    }

    rd->reader = redisReaderCreate();
    if (rd->reader == NULL) {
        ngx_cdp_redis_fail(rd, "redisReaderCreate() failed");
        return;
    }

    rd->state = NGX_CDP_REDIS_CONNECTING;

    rc = ngx_event_connect_peer(&rd->peer);

    if (rc == NGX_ERROR || rc == NGX_BUSY || rc == NGX_DECLINED) {
        if (rd->peer.connection) {
            ngx_close_connection(rd->peer.connection);
            rd->peer.connection = NULL;
        }

        ngx_cdp_redis_fail(rd, "connect() failed");
        return;
    }

    c = rd->peer.connection;
    rd->connection = c;

    c->data = rd;
    c->log = rd->log;
    c->read->log = rd->log;
    c->write->log = rd->log;
    c->read->handler = ngx_cdp_redis_read_handler;
    c->write->handler = ngx_cdp_redis_write_handler;

    if (rc == NGX_AGAIN) {
        ngx_add_timer(c->write, rd->conf->timeout);
        return;
    }

    ngx_cdp_redis_handshake(rd);
}


static ngx_int_t
ngx_cdp_redis_test_connect(ngx_connection_t *c)
{
    int        err;
    socklen_t  len;

    err = 0;
    len = sizeof(int);

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, (void *) &err, &len) == -1) {
        err = ngx_socket_errno;
    }

    if (err) {
        (void) ngx_connection_error(c, err, "connect() to redis failed");
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_cdp_redis_handshake(ngx_cdp_redis_t *rd)
{
    u_char       db[NGX_INT_T_LEN];
    const char  *argv[3];
    size_t       argvlen[3];

    rd->state = NGX_CDP_REDIS_HANDSHAKE;

    if (rd->conf->password.len) {
        argv[0] = "AUTH";
        argvlen[0] = 4;
        argv[1] = (const char *) rd->conf->password.data;
        argvlen[1] = rd->conf->password.len;

        if (ngx_cdp_redis_command(rd, 2, argv, argvlen,
                                  ngx_cdp_redis_setup_done, "AUTH")
            != NGX_OK)
        {
            return;
        }
    }

    if (rd->conf->db) {
        argv[0] = "SELECT";
        argvlen[0] = 6;
        argv[1] = (const char *) db;
        argvlen[1] = ngx_sprintf(db, "%ui", rd->conf->db) - db;

        if (ngx_cdp_redis_command(rd, 2, argv, argvlen,
                                  ngx_cdp_redis_setup_done, "SELECT")
            != NGX_OK)
        {
            return;
        }
    }

    ngx_cdp_redis_check(rd, &ngx_cdp_redis_libraries[0]);

    ngx_cdp_redis_write(rd);
}


static void
ngx_cdp_redis_setup_done(redisReply *reply, void *data)
{
    ngx_cdp_redis_t  *rd = ngx_cdp_redis;

    if (reply == NULL || reply->type != REDIS_REPLY_ERROR) {
        return;
    }

    /* the reply of a failed AUTH does not contain the password */
    ngx_log_error(NGX_LOG_ERR, rd->log, 0, "cdp: redis %s failed: %s",
                  (char *) data, reply->str);

    rd->must_close = 1;
}


/*
 * The libraries of store/, compiled in, checked in order at every
 * connect: FCALL_RO of its version function; another revision, or none,
 * is loaded (FUNCTION LOAD REPLACE).  The connection is ready when the
 * last one is there.
 */

static void
ngx_cdp_redis_check(ngx_cdp_redis_t *rd, ngx_cdp_redis_library_t *lib)
{
    const char  *argv[3];
    size_t       argvlen[3];

    argv[0] = "FCALL_RO";
    argvlen[0] = sizeof("FCALL_RO") - 1;
    argv[1] = lib->version;
    argvlen[1] = ngx_strlen(lib->version);
    argv[2] = "0";
    argvlen[2] = 1;

    /* written by the caller, or by the read handler after this reply */
    (void) ngx_cdp_redis_command(rd, 3, argv, argvlen,
                                 ngx_cdp_redis_version_done, lib);
}


static void
ngx_cdp_redis_version_done(redisReply *reply, void *data)
{
    ngx_cdp_redis_library_t  *lib = data;

    ngx_cdp_redis_t  *rd = ngx_cdp_redis;

    if (reply == NULL || rd->must_close) {
        return;
    }

    if (reply->type == REDIS_REPLY_STRING
        && reply->len == ngx_strlen(lib->rev)
        && ngx_strncmp(reply->str, lib->rev, reply->len) == 0)
    {
        ngx_cdp_redis_next(rd, lib);
        return;
    }

    /* missing ("Function not found") or another revision */

    ngx_cdp_redis_load(rd, lib);
}


/* the library after lib, or ready */

static void
ngx_cdp_redis_next(ngx_cdp_redis_t *rd, ngx_cdp_redis_library_t *lib)
{
    if (rd->state != NGX_CDP_REDIS_HANDSHAKE) {
        return;
    }

    lib++;

    if (lib < ngx_cdp_redis_libraries
              + sizeof(ngx_cdp_redis_libraries)
                / sizeof(ngx_cdp_redis_library_t))
    {
        ngx_cdp_redis_check(rd, lib);
        return;
    }

    ngx_cdp_redis_ready(rd);
}


/* FUNCTION LOAD REPLACE, once at a time per library */

static void
ngx_cdp_redis_load(ngx_cdp_redis_t *rd, ngx_cdp_redis_library_t *lib)
{
    ngx_uint_t   bit;
    const char  *argv[4];
    size_t       argvlen[4];

    bit = 1 << (lib - ngx_cdp_redis_libraries);

    if (rd->loading & bit) {
        return;
    }

    argv[0] = "FUNCTION";
    argvlen[0] = 8;
    argv[1] = "LOAD";
    argvlen[1] = 4;
    argv[2] = "REPLACE";
    argvlen[2] = 7;
    argv[3] = lib->lua;
    argvlen[3] = lib->len;

    if (ngx_cdp_redis_command(rd, 4, argv, argvlen, ngx_cdp_redis_load_done,
                              lib)
        == NGX_OK)
    {
        rd->loading |= bit;
    }
}


/* the reply to FUNCTION LOAD: logged; a refusal closes the connection */

static void
ngx_cdp_redis_load_done(redisReply *reply, void *data)
{
    ngx_cdp_redis_library_t  *lib = data;

    ngx_cdp_redis_t  *rd = ngx_cdp_redis;

    if (reply == NULL) {
        return;
    }

    rd->loading &= ~(1 << (lib - ngx_cdp_redis_libraries));

    if (reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      "cdp: redis FUNCTION LOAD of the %s failed: %s",
                      lib->name, reply->str);
        rd->must_close = 1;
        return;
    }

    ngx_log_error(NGX_LOG_NOTICE, rd->log, 0,
                  "cdp: loaded the %s revision %s into redis %V",
                  lib->name, lib->rev, &rd->conf->addr_text);

    ngx_cdp_redis_next(rd, lib);
}


/*
 * One command for a caller (the admin API): sent at once, in order with
 * the batches; call->handler gets the reply (a redisReply *), or NULL
 * when the connection is lost.  NGX_DECLINED: Redis is not ready.
 */

ngx_int_t
ngx_cdp_redis_call(ngx_cdp_redis_call_t *call, int argc, const char **argv,
    const size_t *argvlen)
{
    ngx_cdp_redis_t  *rd;

    rd = ngx_cdp_redis;

    if (rd == NULL || rd->state != NGX_CDP_REDIS_READY) {
        return NGX_DECLINED;
    }

    if (ngx_cdp_redis_command(rd, argc, argv, argvlen,
                              ngx_cdp_redis_call_done, call)
        != NGX_OK)
    {
        return NGX_DECLINED;
    }

    ngx_cdp_redis_write(rd);

    return NGX_OK;
}


static void
ngx_cdp_redis_call_done(redisReply *reply, void *data)
{
    ngx_cdp_redis_call_t  *call = data;

    if (reply && reply->type == REDIS_REPLY_ERROR
        && ngx_strstr(reply->str, "Function not found"))
    {
        /* FUNCTION FLUSH meanwhile: back for the next call */
        ngx_cdp_redis_load(ngx_cdp_redis, NGX_CDP_REDIS_LIB_ADMIN);
    }

    call->handler(call, reply);
}


static void
ngx_cdp_redis_ready(ngx_cdp_redis_t *rd)
{
    rd->state = NGX_CDP_REDIS_READY;
    rd->backoff = NGX_CDP_BACKOFF_MIN;

    ngx_cdp_count(NGX_CDP_C_REDIS_CONNECTS, 1);

    if (rd->reported) {
        ngx_log_error(NGX_LOG_NOTICE, rd->log, 0,
                      "cdp: redis %V is back", &rd->conf->addr_text);
        rd->reported = 0;
    }

    rd->ready();
}


/*
 * The connection is gone or unusable: every command in flight is failed
 * (its callback called without a reply: ngx_cdp_ingest.c keeps its
 * batches) and a reconnect is scheduled.
 */

static void
ngx_cdp_redis_fail(ngx_cdp_redis_t *rd, const char *why)
{
    ngx_uint_t                was_ready;
    ngx_cdp_redis_pending_t  *p;

    was_ready = (rd->state == NGX_CDP_REDIS_READY);

    if (rd->connection) {
        ngx_close_connection(rd->connection);
        rd->connection = NULL;
        rd->peer.connection = NULL;
    }

    rd->state = NGX_CDP_REDIS_DOWN;

    if (was_ready) {
        ngx_cdp_count(NGX_CDP_C_REDIS_DISCONNECTS, 1);

    } else {
        ngx_cdp_count(NGX_CDP_C_REDIS_CONNECT_FAILURES, 1);
    }

    if (!rd->reported && !ngx_exiting && !ngx_terminate) {
        if (rd->spool) {
            ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                          "cdp: redis %V unavailable (%s), events are "
                          "spooled to %V until it is back",
                          &rd->conf->addr_text, why, rd->spool);

        } else {
            ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                          "cdp: redis %V unavailable (%s), events are "
                          "dropped until it is back (cdp_spool keeps them)",
                          &rd->conf->addr_text, why);
        }

        rd->reported = 1;
    }

    rd->out.pos = rd->out.start;
    rd->out.last = rd->out.start;

    rd->must_close = 0;
    rd->loading = 0;

    while (rd->pending_n) {
        p = &rd->pending[rd->pending_head];
        rd->pending_head = (rd->pending_head + 1) % rd->pending_size;
        rd->pending_n--;

        p->handler(NULL, p->data);
    }

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    if (!rd->reconnect_ev.timer_set) {
        ngx_add_timer(&rd->reconnect_ev, rd->backoff);
    }

    rd->backoff = ngx_min(rd->backoff * 2, NGX_CDP_BACKOFF_MAX);
}


static void
ngx_cdp_redis_reconnect_handler(ngx_event_t *ev)
{
    ngx_cdp_redis_t  *rd = ev->data;

    if (rd->state == NGX_CDP_REDIS_DOWN) {
        ngx_cdp_redis_connect(rd);
    }
}


static ngx_int_t
ngx_cdp_redis_command(ngx_cdp_redis_t *rd, int argc, const char **argv,
    const size_t *argvlen, ngx_cdp_redis_reply_pt handler, void *data)
{
    int    len;
    char  *cmd;

    len = redisFormatCommandArgv(&cmd, argc, argv, argvlen);
    if (len < 0) {
        ngx_cdp_redis_fail(rd, "redisFormatCommandArgv() failed");
        return NGX_ERROR;
    }

    if (ngx_cdp_resp_reserve(&rd->out, len) != 0
        || ngx_cdp_redis_push(rd, handler, data) != NGX_OK)
    {
        redisFreeCommand(cmd);
        ngx_cdp_redis_fail(rd, "out of memory");
        return NGX_ERROR;
    }

    rd->out.last = ngx_cpymem(rd->out.last, cmd, len);
    redisFreeCommand(cmd);

    return NGX_OK;
}


static ngx_int_t
ngx_cdp_redis_push(ngx_cdp_redis_t *rd, ngx_cdp_redis_reply_pt handler,
    void *data)
{
    ngx_uint_t                i, size;
    ngx_cdp_redis_pending_t  *p, *ring;

    if (rd->pending_n == rd->pending_size) {

        /* the ring grows: ingest bounds what it puts in flight */

        size = ngx_max(rd->pending_size * 2, 64);

        ring = ngx_alloc(size * sizeof(ngx_cdp_redis_pending_t), rd->log);
        if (ring == NULL) {
            return NGX_ERROR;
        }

        for (i = 0; i < rd->pending_n; i++) {
            ring[i] = rd->pending[(rd->pending_head + i) % rd->pending_size];
        }

        ngx_free(rd->pending);

        rd->pending = ring;
        rd->pending_size = size;
        rd->pending_head = 0;
    }

    p = &rd->pending[(rd->pending_head + rd->pending_n) % rd->pending_size];
    p->handler = handler;
    p->data = data;

    rd->pending_n++;

    return NGX_OK;
}


static void
ngx_cdp_redis_write(ngx_cdp_redis_t *rd)
{
    ssize_t            n;
    ngx_connection_t  *c;

    c = rd->connection;

    if (c == NULL || rd->state == NGX_CDP_REDIS_CONNECTING) {
        return;
    }

    while (rd->out.pos < rd->out.last) {
        n = c->send(c, rd->out.pos, rd->out.last - rd->out.pos);

        if (n > 0) {
            rd->out.pos += n;
            continue;
        }

        if (n == NGX_AGAIN) {
            break;
        }

        ngx_cdp_redis_fail(rd, "send() failed");
        return;
    }

    if (rd->out.pos == rd->out.last) {
        rd->out.pos = rd->out.start;
        rd->out.last = rd->out.start;
    }

    if (ngx_handle_write_event(c->write, 0) != NGX_OK) {
        ngx_cdp_redis_fail(rd, "write event failed");
        return;
    }

    /* replies are awaited at most "timeout"; a later one resets it */

    if (rd->pending_n && !c->read->timer_set) {
        ngx_add_timer(c->read, rd->conf->timeout);
    }
}


static void
ngx_cdp_redis_write_handler(ngx_event_t *wev)
{
    ngx_connection_t  *c;
    ngx_cdp_redis_t   *rd;

    c = wev->data;
    rd = c->data;

    if (rd->state != NGX_CDP_REDIS_CONNECTING) {
        ngx_cdp_redis_write(rd);
        return;
    }

    if (wev->timedout) {
        ngx_cdp_redis_fail(rd, "connect timed out");
        return;
    }

    if (wev->timer_set) {
        ngx_del_timer(wev);
    }

    if (ngx_cdp_redis_test_connect(c) != NGX_OK) {
        ngx_cdp_redis_fail(rd, "connect() failed");
        return;
    }

    ngx_cdp_redis_handshake(rd);
}


static void
ngx_cdp_redis_read_handler(ngx_event_t *rev)
{
    ssize_t            n;
    ngx_connection_t  *c;
    ngx_cdp_redis_t   *rd;
    static u_char      buf[65536];

    c = rev->data;
    rd = c->data;

    if (c->close) {
        /* worker_shutdown_timeout */
        ngx_cdp_redis_fail(rd, "worker is shutting down");
        return;
    }

    if (rev->timedout) {
        ngx_cdp_redis_fail(rd, "reply timed out");
        return;
    }

    if (rd->state == NGX_CDP_REDIS_CONNECTING) {
        /* the write event tells how connect() ended */
        return;
    }

    for ( ;; ) {
        n = c->recv(c, buf, sizeof(buf));

        if (n == NGX_AGAIN) {
            break;
        }

        if (n == 0) {
            ngx_cdp_redis_fail(rd, "redis closed the connection");
            return;
        }

        if (n == NGX_ERROR) {
            ngx_cdp_redis_fail(rd, "recv() failed");
            return;
        }

        if (redisReaderFeed(rd->reader, (char *) buf, n) != REDIS_OK
            || ngx_cdp_redis_replies(rd) != NGX_OK)
        {
            ngx_cdp_redis_fail(rd, "protocol error");
            return;
        }

        if (rd->connection != c) {
            /* a reply handler's write failed: c is closed already */
            return;
        }

        if (rd->must_close) {
            ngx_cdp_redis_fail(rd, "handshake failed");
            return;
        }
    }

    if (ngx_handle_read_event(rev, 0) != NGX_OK) {
        ngx_cdp_redis_fail(rd, "read event failed");
        return;
    }

    if (rev->timer_set) {
        ngx_del_timer(rev);
    }

    /* handlers may have queued commands: the library load, a flush */

    ngx_cdp_redis_write(rd);
}


static ngx_int_t
ngx_cdp_redis_replies(ngx_cdp_redis_t *rd)
{
    void                     *reply;
    ngx_cdp_redis_pending_t   p;

    for ( ;; ) {
        if (redisReaderGetReply(rd->reader, &reply) != REDIS_OK) {
            return NGX_ERROR;
        }

        if (reply == NULL) {
            return NGX_OK;
        }

        if (rd->pending_n == 0) {
            freeReplyObject(reply);
            ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                          "cdp: unexpected reply from redis");
            return NGX_ERROR;
        }

        p = rd->pending[rd->pending_head];
        rd->pending_head = (rd->pending_head + 1) % rd->pending_size;
        rd->pending_n--;

        p.handler(reply, p.data);

        freeReplyObject(reply);

        if (rd->connection == NULL) {
            /* the handler's write failed and the connection is gone */
            return NGX_OK;
        }
    }
}


