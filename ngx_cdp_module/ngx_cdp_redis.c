
/*
 * ngx_cdp: the per-worker Redis client.
 *
 * nginx owns the socket (ngx_event_connect_peer, its event loop and its
 * timers); hiredis is only the codec: redisFormatCommandArgv for the few
 * handshake commands, redisReader for every reply.  Debian's hiredis 0.14
 * async API would resolve names with a blocking getaddrinfo, close the
 * fd itself and read at most 16 KiB per wakeup, which does not fit nginx's
 * edge-triggered epoll.
 *
 * Events are appended to the current batch as RESP bulk strings, ready to
 * be sent.  A batch becomes one FCALL cdp_ingest when it holds
 * cdp_batch_size events or 1 ms after its first event: one write and one
 * round trip for many hits.  Replies come back in order; each command in
 * flight has a pending entry with its callback, which is also called, with
 * no reply, when the connection is lost.
 */


#include "ngx_http_cdp_module.h"
#include "ngx_cdp_dest.h"

#include <hiredis/hiredis.h>

#include "ngx_cdp_store_lua.h"
#include "ngx_cdp_admin_lua.h"


#define NGX_CDP_REDIS_DOWN        0     /* waiting for the reconnect timer */
#define NGX_CDP_REDIS_CONNECTING  1     /* connect() in progress */
#define NGX_CDP_REDIS_HANDSHAKE   2     /* AUTH, SELECT, library check */
#define NGX_CDP_REDIS_READY       3

#define NGX_CDP_BACKOFF_MIN       100
#define NGX_CDP_BACKOFF_MAX       5000

#define NGX_CDP_FLUSH_DELAY       1

/* bytes a worker may hold for Redis, whatever cdp_queue_size says */
#define NGX_CDP_MAX_BUFFERED      (64 * 1024 * 1024)


typedef void (*ngx_cdp_redis_reply_pt)(redisReply *reply, void *data,
    ngx_uint_t nevents);


typedef struct {
    ngx_cdp_redis_reply_pt     handler;
    void                      *data;
    ngx_uint_t                 nevents;
} ngx_cdp_redis_pending_t;


/* a growable byte buffer: [pos, last) holds data */
typedef struct {
    u_char                    *start;
    u_char                    *pos;
    u_char                    *last;
    u_char                    *end;
} ngx_cdp_rbuf_t;


typedef struct {
    ngx_http_cdp_main_conf_t  *mcf;
    ngx_log_t                 *log;

    ngx_peer_connection_t      peer;
    ngx_connection_t          *connection;
    ngx_uint_t                 state;
    redisReader               *reader;

    ngx_cdp_rbuf_t             out;         /* commands not yet written */
    ngx_cdp_rbuf_t             keys;        /* current batch: KEYS */
    ngx_cdp_rbuf_t             args;        /* current batch: ARGV */
    ngx_uint_t                 batch;       /* events in the batch */
    ngx_uint_t                 queued;      /* events not acknowledged */
    ngx_cdp_redis_waiter_t    *waiters;     /* of the current batch */
    ngx_uint_t                 hold;        /* no flush while filling */

    ngx_cdp_redis_pending_t   *pending;     /* a ring */
    ngx_uint_t                 pending_size;
    ngx_uint_t                 pending_head;
    ngx_uint_t                 pending_n;

    ngx_event_t                flush_ev;
    ngx_event_t                reconnect_ev;
    ngx_msec_t                 backoff;

    ngx_str_t                  stream_key;
    u_char                    *maxlen;      /* ARGV[1] */
    size_t                     maxlen_len;
    ngx_uint_t                 nargs;       /* per event: 4, 5 (routes) */

    unsigned                   must_close:1;
    unsigned                   loading:1;
    unsigned                   reported:1;  /* the outage is logged */
} ngx_cdp_redis_t;


static void ngx_cdp_redis_connect(ngx_cdp_redis_t *rd);
static void ngx_cdp_redis_handshake(ngx_cdp_redis_t *rd);
static void ngx_cdp_redis_ready(ngx_cdp_redis_t *rd);
static void ngx_cdp_redis_fail(ngx_cdp_redis_t *rd, const char *why);
static void ngx_cdp_redis_send(ngx_cdp_redis_t *rd);
static void ngx_cdp_redis_flush(ngx_cdp_redis_t *rd);
static ngx_int_t ngx_cdp_redis_command(ngx_cdp_redis_t *rd, int argc,
    const char **argv, const size_t *argvlen, ngx_cdp_redis_reply_pt handler,
    void *data);
static ngx_int_t ngx_cdp_redis_push(ngx_cdp_redis_t *rd,
    ngx_cdp_redis_reply_pt handler, void *data, ngx_uint_t nevents);
static ngx_int_t ngx_cdp_redis_replies(ngx_cdp_redis_t *rd);
static void ngx_cdp_redis_load_library(ngx_cdp_redis_t *rd);
static void ngx_cdp_redis_check_admin(ngx_cdp_redis_t *rd);
static void ngx_cdp_redis_load_admin(ngx_cdp_redis_t *rd);
static ngx_int_t ngx_cdp_redis_loaded(ngx_cdp_redis_t *rd, redisReply *reply,
    const char *what, const char *rev);
static ngx_int_t ngx_cdp_redis_function_load(ngx_cdp_redis_t *rd,
    const char *lua, size_t len, ngx_cdp_redis_reply_pt handler);
static void ngx_cdp_redis_admin_version_done(redisReply *reply, void *data,
    ngx_uint_t nevents);
static void ngx_cdp_redis_admin_load_done(redisReply *reply, void *data,
    ngx_uint_t nevents);
static void ngx_cdp_redis_call_done(redisReply *reply, void *data,
    ngx_uint_t nevents);
static void ngx_cdp_redis_dequeued(ngx_cdp_redis_t *rd, ngx_uint_t n);
static void ngx_cdp_redis_wake(ngx_cdp_redis_waiter_t *w, ngx_int_t rc);

static void ngx_cdp_redis_read_handler(ngx_event_t *rev);
static void ngx_cdp_redis_write_handler(ngx_event_t *wev);
static void ngx_cdp_redis_flush_handler(ngx_event_t *ev);
static void ngx_cdp_redis_reconnect_handler(ngx_event_t *ev);

static void ngx_cdp_redis_setup_done(redisReply *reply, void *data,
    ngx_uint_t nevents);
static void ngx_cdp_redis_version_done(redisReply *reply, void *data,
    ngx_uint_t nevents);
static void ngx_cdp_redis_load_done(redisReply *reply, void *data,
    ngx_uint_t nevents);
static void ngx_cdp_redis_batch_done(redisReply *reply, void *data,
    ngx_uint_t nevents);

static ngx_int_t ngx_cdp_rbuf_reserve(ngx_cdp_rbuf_t *b, size_t n);
static void ngx_cdp_rbuf_bulk(ngx_cdp_rbuf_t *b, const u_char *data,
    size_t len);
static size_t ngx_cdp_bulk_len(size_t len);


static ngx_cdp_redis_t  *ngx_cdp_redis;

/* indexed by NGX_CDP_EVENT_*: the kind argument of cdp_ingest */
static ngx_str_t  ngx_cdp_event_kinds[] = {
    ngx_string("page"),
    ngx_string("track"),
    ngx_string("page:new"),
    ngx_string("track:new"),
    ngx_string("agg"),
    ngx_string("log"),
    ngx_string("identify"),
    ngx_string("api")
};


ngx_int_t
ngx_cdp_redis_init_process(ngx_cycle_t *cycle, ngx_http_cdp_main_conf_t *mcf)
{
    u_char           *p;
    ngx_cdp_redis_t  *rd;

    rd = ngx_pcalloc(cycle->pool, sizeof(ngx_cdp_redis_t));
    if (rd == NULL) {
        return NGX_ERROR;
    }

    rd->mcf = mcf;
    rd->log = cycle->log;
    rd->backoff = NGX_CDP_BACKOFF_MIN;

    /* every event and every handshake command may be in flight at once */
    rd->pending_size = mcf->queue_size + 8;
    rd->pending = ngx_pcalloc(cycle->pool,
                              rd->pending_size
                              * sizeof(ngx_cdp_redis_pending_t));
    if (rd->pending == NULL) {
        return NGX_ERROR;
    }

    rd->stream_key.len = mcf->prefix.len + sizeof(":events") - 1;
    rd->stream_key.data = ngx_pnalloc(cycle->pool, rd->stream_key.len);
    if (rd->stream_key.data == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(rd->stream_key.data, "%V:events", &mcf->prefix);

    /*
     * "maxlen limit_user_id limit_email limit_phone timeline_max dedup
     *  aggregate_retention"
     */
    rd->maxlen = ngx_pnalloc(cycle->pool,
                             7 * NGX_INT_T_LEN + 2 + mcf->dest_spec.len
                             + 2 * (NGX_SIZE_T_LEN + 1)
                             + mcf->facts_spec.len
                             + mcf->segments_spec.len);
    if (rd->maxlen == NULL) {
        return NGX_ERROR;
    }

    /*
     * with destinations or facts, "|NAME PURPOSE MAXLEN,...|FACTS", and an
     * extra argument an event (its route and its fact)
     */

    p = ngx_sprintf(rd->maxlen, "%ui %ui %ui %ui %ui %T %T",
                    mcf->stream_maxlen, mcf->limit_user_id,
                    mcf->limit_email, mcf->limit_phone,
                    mcf->timeline_max, mcf->dedup_window,
                    mcf->agg_retention);

    rd->nargs = 4;

    if (mcf->destinations || mcf->facts || mcf->segments) {
        /* "|<destinations>|<len>:<facts><len>:<segments>" */
        p = ngx_sprintf(p, "|%V|%uz:%V%uz:%V", &mcf->dest_spec,
                        mcf->facts_spec.len, &mcf->facts_spec,
                        mcf->segments_spec.len, &mcf->segments_spec);
        rd->nargs = 5;
    }

    rd->maxlen_len = p - rd->maxlen;

    rd->flush_ev.handler = ngx_cdp_redis_flush_handler;
    rd->flush_ev.data = rd;
    rd->flush_ev.log = cycle->log;

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

    if (rd->queued) {
        ngx_log_error(NGX_LOG_WARN, rd->log, 0,
                      "cdp: %ui events not acknowledged by redis at exit",
                      rd->queued);
        ngx_cdp_count(NGX_CDP_C_DROP_REDIS_DOWN, rd->queued);
        ngx_cdp_redis_dequeued(rd, rd->queued);
    }

    if (rd->connection) {
        ngx_close_connection(rd->connection);
        rd->connection = NULL;
    }

    if (rd->reader) {
        redisReaderFree(rd->reader);
        rd->reader = NULL;
    }

    ngx_free(rd->out.start);
    ngx_free(rd->keys.start);
    ngx_free(rd->args.start);

    ngx_cdp_redis = NULL;
}


/*
 * Hands one event to the worker's queue: the key (after "<prefix>:") it
 * updates, its kind, attrs and payload, as cdp_ingest takes them.  Never
 * waits: a down Redis or a full queue drops the event and counts it.
 */

ngx_int_t
ngx_cdp_redis_enqueue(ngx_str_t *key, ngx_uint_t kind, ngx_str_t *attrs,
    ngx_str_t *payload, ngx_str_t *route)
{
    size_t            klen;
    u_char           *p;
    ngx_time_t       *tp;
    ngx_cdp_redis_t  *rd;
    u_char            ts[NGX_INT64_LEN];

    rd = ngx_cdp_redis;

    if (rd == NULL || rd->state == NGX_CDP_REDIS_DOWN) {
        ngx_cdp_count(NGX_CDP_C_DROP_REDIS_DOWN, 1);
        return NGX_DECLINED;
    }

    klen = rd->mcf->prefix.len + 1 + key->len;

    if (rd->queued >= rd->mcf->queue_size
        || (size_t) ((rd->out.last - rd->out.pos)
                     + (rd->keys.last - rd->keys.pos)
                     + (rd->args.last - rd->args.pos))
           + payload->len > NGX_CDP_MAX_BUFFERED)
    {
        ngx_cdp_count(NGX_CDP_C_DROP_QUEUE_FULL, 1);
        return NGX_DECLINED;
    }

    tp = ngx_timeofday();
    p = ngx_sprintf(ts, "%uL", (uint64_t) tp->sec * 1000 + tp->msec);

    if (ngx_cdp_rbuf_reserve(&rd->keys, ngx_cdp_bulk_len(klen)) != NGX_OK
        || ngx_cdp_rbuf_reserve(&rd->args,
                                ngx_cdp_bulk_len(p - ts)
                                + ngx_cdp_bulk_len(sizeof("track:new") - 1)
                                + ngx_cdp_bulk_len(attrs->len)
                                + ngx_cdp_bulk_len(payload->len)
                                + ngx_cdp_bulk_len(NGX_CDP_EXTRA_LEN))
           != NGX_OK)
    {
        ngx_cdp_count(NGX_CDP_C_DROP_QUEUE_FULL, 1);
        return NGX_DECLINED;
    }

    rd->keys.last = ngx_sprintf(rd->keys.last, "$%uz\r\n%V:%V\r\n",
                                klen, &rd->mcf->prefix, key);

    ngx_cdp_rbuf_bulk(&rd->args, ts, p - ts);

    ngx_cdp_rbuf_bulk(&rd->args, ngx_cdp_event_kinds[kind].data,
                      ngx_cdp_event_kinds[kind].len);
    ngx_cdp_rbuf_bulk(&rd->args, attrs->data, attrs->len);
    ngx_cdp_rbuf_bulk(&rd->args, payload->data, payload->len);

    if (rd->nargs == 5) {
        if (route) {
            ngx_cdp_rbuf_bulk(&rd->args, route->data, route->len);

        } else {
            ngx_cdp_rbuf_bulk(&rd->args, (u_char *) "", 0);
        }
    }

    rd->batch++;
    rd->queued++;
    ngx_cdp_count(NGX_CDP_C_ACCEPTED, 1);
    ngx_cdp_count(NGX_CDP_C_QUEUE_EVENTS, 1);

    if (rd->hold) {
        return NGX_OK;
    }

    if (rd->batch >= rd->mcf->batch_size) {
        ngx_cdp_redis_flush(rd);

    } else if (!rd->flush_ev.timer_set) {
        ngx_add_timer(&rd->flush_ev, NGX_CDP_FLUSH_DELAY);
    }

    return NGX_OK;
}


/* cdp_ingest's ARGV[1] and stream, for the store's other calls */

void
ngx_cdp_redis_argv1(ngx_str_t *argv1, ngx_str_t *stream)
{
    argv1->data = ngx_cdp_redis->maxlen;
    argv1->len = ngx_cdp_redis->maxlen_len;
    *stream = ngx_cdp_redis->stream_key;
}


/*
 * For a request that waits for Redis (the server API): room for n events
 * of about size bytes, all in one batch, so that one FCALL stores them all
 * or none.  On NGX_OK the caller enqueues them, then calls
 * ngx_cdp_redis_wait() (or ngx_cdp_redis_release() if it gives up).
 * NGX_DECLINED: Redis is down or the queue is full.
 */

ngx_int_t
ngx_cdp_redis_reserve(ngx_uint_t n, size_t size)
{
    ngx_cdp_redis_t  *rd;

    rd = ngx_cdp_redis;

    if (rd == NULL || rd->state == NGX_CDP_REDIS_DOWN
        || rd->queued + n > rd->mcf->queue_size
        || (size_t) ((rd->out.last - rd->out.pos)
                     + (rd->keys.last - rd->keys.pos)
                     + (rd->args.last - rd->args.pos))
           + size > NGX_CDP_MAX_BUFFERED)
    {
        return NGX_DECLINED;
    }

    /*
     * a batch of its own when the current one would grow past the size
     * (not yet connected, the batch stays and grows past it)
     */

    if (rd->batch && rd->batch + n > rd->mcf->batch_size) {
        ngx_cdp_redis_flush(rd);
    }

    rd->hold = 1;

    return NGX_OK;
}


/* the caller gives up waiting: what it queued goes out as usual */

void
ngx_cdp_redis_release(void)
{
    if (ngx_cdp_redis) {
        ngx_cdp_redis->hold = 0;
        ngx_cdp_redis_flush(ngx_cdp_redis);
    }
}


/*
 * w waits for the batch that holds the events just enqueued: its handler
 * is called once, with NGX_OK when Redis acknowledged the batch, with
 * NGX_ERROR when it failed or the connection was lost.  The batch is
 * flushed at once.  w stays the caller's until then; its data may be set
 * to NULL meanwhile (the request went away) and is not looked at here.
 */

void
ngx_cdp_redis_wait(ngx_cdp_redis_waiter_t *w)
{
    ngx_cdp_redis_t  *rd;

    rd = ngx_cdp_redis;
    rd->hold = 0;

    w->next = rd->waiters;
    rd->waiters = w;

    ngx_cdp_redis_flush(rd);
}


static void
ngx_cdp_redis_wake(ngx_cdp_redis_waiter_t *w, ngx_int_t rc)
{
    ngx_cdp_redis_waiter_t  *next;

    while (w) {
        next = w->next;
        w->handler(w, rc);
        w = next;
    }
}


static void
ngx_cdp_redis_connect(ngx_cdp_redis_t *rd)
{
    ngx_int_t          rc;
    ngx_connection_t  *c;

    ngx_memzero(&rd->peer, sizeof(ngx_peer_connection_t));

    rd->peer.sockaddr = rd->mcf->addr->sockaddr;
    rd->peer.socklen = rd->mcf->addr->socklen;
    rd->peer.name = &rd->mcf->addr->name;
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
        ngx_add_timer(c->write, rd->mcf->timeout);
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

    if (rd->mcf->password.len) {
        argv[0] = "AUTH";
        argvlen[0] = 4;
        argv[1] = (const char *) rd->mcf->password.data;
        argvlen[1] = rd->mcf->password.len;

        if (ngx_cdp_redis_command(rd, 2, argv, argvlen,
                                  ngx_cdp_redis_setup_done, "AUTH")
            != NGX_OK)
        {
            return;
        }
    }

    if (rd->mcf->db) {
        argv[0] = "SELECT";
        argvlen[0] = 6;
        argv[1] = (const char *) db;
        argvlen[1] = ngx_sprintf(db, "%ui", rd->mcf->db) - db;

        if (ngx_cdp_redis_command(rd, 2, argv, argvlen,
                                  ngx_cdp_redis_setup_done, "SELECT")
            != NGX_OK)
        {
            return;
        }
    }

    argv[0] = "FCALL_RO";
    argvlen[0] = 8;
    argv[1] = "cdp_version";
    argvlen[1] = 11;
    argv[2] = "0";
    argvlen[2] = 1;

    if (ngx_cdp_redis_command(rd, 3, argv, argvlen,
                              ngx_cdp_redis_version_done, NULL)
        != NGX_OK)
    {
        return;
    }

    ngx_cdp_redis_send(rd);
}


static void
ngx_cdp_redis_setup_done(redisReply *reply, void *data, ngx_uint_t nevents)
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


static void
ngx_cdp_redis_version_done(redisReply *reply, void *data, ngx_uint_t nevents)
{
    ngx_cdp_redis_t  *rd = ngx_cdp_redis;

    if (reply == NULL || rd->must_close) {
        return;
    }

    if (reply->type == REDIS_REPLY_STRING
        && reply->len == sizeof(NGX_CDP_STORE_REV) - 1
        && ngx_strncmp(reply->str, NGX_CDP_STORE_REV, reply->len) == 0)
    {
        ngx_cdp_redis_check_admin(rd);
        return;
    }

    /* missing ("Function not found") or another revision */

    ngx_cdp_redis_load_library(rd);
}


static void
ngx_cdp_redis_load_library(ngx_cdp_redis_t *rd)
{
    if (rd->loading) {
        return;
    }

    if (ngx_cdp_redis_function_load(rd, ngx_cdp_store_lua,
                                    sizeof(ngx_cdp_store_lua) - 1,
                                    ngx_cdp_redis_load_done)
        == NGX_OK)
    {
        rd->loading = 1;
    }
}


/* FUNCTION LOAD REPLACE of a library of store/, compiled in */

static ngx_int_t
ngx_cdp_redis_function_load(ngx_cdp_redis_t *rd, const char *lua, size_t len,
    ngx_cdp_redis_reply_pt handler)
{
    const char  *argv[4];
    size_t       argvlen[4];

    argv[0] = "FUNCTION";
    argvlen[0] = 8;
    argv[1] = "LOAD";
    argvlen[1] = 4;
    argv[2] = "REPLACE";
    argvlen[2] = 7;
    argv[3] = lua;
    argvlen[3] = len;

    return ngx_cdp_redis_command(rd, 4, argv, argvlen, handler, NULL);
}


static void
ngx_cdp_redis_load_done(redisReply *reply, void *data, ngx_uint_t nevents)
{
    ngx_cdp_redis_t  *rd = ngx_cdp_redis;

    if (reply == NULL) {
        return;
    }

    rd->loading = 0;

    if (ngx_cdp_redis_loaded(rd, reply, "store library cdp_v1",
                             NGX_CDP_STORE_REV)
        == NGX_OK
        && rd->state == NGX_CDP_REDIS_HANDSHAKE)
    {
        ngx_cdp_redis_check_admin(rd);
    }
}


/* the reply to FUNCTION LOAD: logged; a refusal closes the connection */

static ngx_int_t
ngx_cdp_redis_loaded(ngx_cdp_redis_t *rd, redisReply *reply,
    const char *what, const char *rev)
{
    if (reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      "cdp: redis FUNCTION LOAD of the %s failed: %s",
                      what, reply->str);
        rd->must_close = 1;
        return NGX_ERROR;
    }

    ngx_log_error(NGX_LOG_NOTICE, rd->log, 0,
                  "cdp: loaded the %s revision %s into redis %V",
                  what, rev, &rd->mcf->addr_text);

    return NGX_OK;
}


/* the second library, cdp_admin_v1 (store/admin.lua), as the first */

static void
ngx_cdp_redis_check_admin(ngx_cdp_redis_t *rd)
{
    static const char   *argv[] = { "FCALL_RO", "cdp_admin_version", "0" };
    static const size_t  argvlen[] = { 8, 17, 1 };

    /* sent by the read handler, after the reply being handled */
    (void) ngx_cdp_redis_command(rd, 3, argv, argvlen,
                                 ngx_cdp_redis_admin_version_done, NULL);
}


static void
ngx_cdp_redis_admin_version_done(redisReply *reply, void *data,
    ngx_uint_t nevents)
{
    ngx_cdp_redis_t  *rd = ngx_cdp_redis;

    if (reply == NULL || rd->must_close) {
        return;
    }

    if (reply->type == REDIS_REPLY_STRING
        && reply->len == sizeof(NGX_CDP_ADMIN_REV) - 1
        && ngx_strncmp(reply->str, NGX_CDP_ADMIN_REV, reply->len) == 0)
    {
        ngx_cdp_redis_ready(rd);
        return;
    }

    ngx_cdp_redis_load_admin(rd);
}


static void
ngx_cdp_redis_load_admin(ngx_cdp_redis_t *rd)
{
    (void) ngx_cdp_redis_function_load(rd, ngx_cdp_admin_lua,
                                       sizeof(ngx_cdp_admin_lua) - 1,
                                       ngx_cdp_redis_admin_load_done);
}


static void
ngx_cdp_redis_admin_load_done(redisReply *reply, void *data,
    ngx_uint_t nevents)
{
    ngx_cdp_redis_t  *rd = ngx_cdp_redis;

    if (reply == NULL) {
        return;
    }

    if (ngx_cdp_redis_loaded(rd, reply, "admin library cdp_admin_v1",
                             NGX_CDP_ADMIN_REV)
        == NGX_OK
        && rd->state == NGX_CDP_REDIS_HANDSHAKE)
    {
        ngx_cdp_redis_ready(rd);
    }
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

    ngx_cdp_redis_send(rd);

    return NGX_OK;
}


static void
ngx_cdp_redis_call_done(redisReply *reply, void *data, ngx_uint_t nevents)
{
    ngx_cdp_redis_call_t  *call = data;

    if (reply && reply->type == REDIS_REPLY_ERROR
        && ngx_strstr(reply->str, "Function not found"))
    {
        /* FUNCTION FLUSH meanwhile: back for the next call */
        ngx_cdp_redis_load_admin(ngx_cdp_redis);
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
                      "cdp: redis %V is back", &rd->mcf->addr_text);
        rd->reported = 0;
    }

    ngx_cdp_redis_flush(rd);
}


/*
 * The connection is gone or unusable: every command in flight is failed,
 * the batch being filled is dropped (keeping events across an outage is
 * the spool's job, not yet built), and a reconnect is scheduled.
 */

static void
ngx_cdp_redis_fail(ngx_cdp_redis_t *rd, const char *why)
{
    ngx_uint_t               was_ready;
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
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      "cdp: redis %V unavailable (%s), events are dropped "
                      "until it is back", &rd->mcf->addr_text, why);
        rd->reported = 1;
    }

    rd->out.pos = rd->out.start;
    rd->out.last = rd->out.start;

    while (rd->pending_n) {
        p = &rd->pending[rd->pending_head];
        rd->pending_head = (rd->pending_head + 1) % rd->pending_size;
        rd->pending_n--;

        p->handler(NULL, p->data, p->nevents);
    }

    if (rd->batch) {
        ngx_cdp_count(NGX_CDP_C_DROP_REDIS_DOWN, rd->batch);
        ngx_cdp_redis_dequeued(rd, rd->batch);
        rd->batch = 0;
    }

    ngx_cdp_redis_wake(rd->waiters, NGX_ERROR);
    rd->waiters = NULL;

    rd->keys.pos = rd->keys.start;
    rd->keys.last = rd->keys.start;
    rd->args.pos = rd->args.start;
    rd->args.last = rd->args.start;

    if (rd->flush_ev.timer_set) {
        ngx_del_timer(&rd->flush_ev);
    }

    rd->must_close = 0;
    rd->loading = 0;

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


static void
ngx_cdp_redis_flush_handler(ngx_event_t *ev)
{
    ngx_cdp_redis_flush(ev->data);
}


/* the batch becomes one FCALL cdp_ingest, written at once */

static void
ngx_cdp_redis_flush(ngx_cdp_redis_t *rd)
{
    size_t      len, keys, args;
    ngx_uint_t  n;
    u_char      numkeys[NGX_INT_T_LEN];
    size_t      numkeys_len;

    if (rd->batch == 0 || rd->state != NGX_CDP_REDIS_READY) {
        return;
    }

    if (rd->flush_ev.timer_set) {
        ngx_del_timer(&rd->flush_ev);
    }

    n = rd->batch;
    keys = rd->keys.last - rd->keys.pos;
    args = rd->args.last - rd->args.pos;

    numkeys_len = ngx_sprintf(numkeys, "%ui", 1 + n) - numkeys;

    len = sizeof("*\r\n$5\r\nFCALL\r\n$10\r\ncdp_ingest\r\n") - 1
          + NGX_INT_T_LEN
          + ngx_cdp_bulk_len(numkeys_len)
          + ngx_cdp_bulk_len(rd->stream_key.len) + keys
          + ngx_cdp_bulk_len(rd->maxlen_len) + args;

    if (ngx_cdp_rbuf_reserve(&rd->out, len) != NGX_OK
        || ngx_cdp_redis_push(rd, ngx_cdp_redis_batch_done, rd->waiters, n)
           != NGX_OK)
    {
        ngx_cdp_redis_fail(rd, "out of memory");
        return;
    }

    /*
     * FCALL cdp_ingest numkeys stream key... "maxlen limits..."
     *       (ts kind attrs payload)...
     */

    rd->out.last = ngx_sprintf(rd->out.last,
                               "*%ui\r\n$5\r\nFCALL\r\n$10\r\ncdp_ingest\r\n",
                               3 + (1 + n) + (1 + rd->nargs * n));
    ngx_cdp_rbuf_bulk(&rd->out, numkeys, numkeys_len);
    ngx_cdp_rbuf_bulk(&rd->out, rd->stream_key.data, rd->stream_key.len);
    rd->out.last = ngx_cpymem(rd->out.last, rd->keys.pos, keys);
    ngx_cdp_rbuf_bulk(&rd->out, rd->maxlen, rd->maxlen_len);
    rd->out.last = ngx_cpymem(rd->out.last, rd->args.pos, args);

    rd->keys.pos = rd->keys.start;
    rd->keys.last = rd->keys.start;
    rd->args.pos = rd->args.start;
    rd->args.last = rd->args.start;
    rd->batch = 0;
    rd->waiters = NULL;

    ngx_cdp_count(NGX_CDP_C_REDIS_BATCHES, 1);

    ngx_cdp_redis_send(rd);
}


static void
ngx_cdp_redis_batch_done(redisReply *reply, void *data, ngx_uint_t nevents)
{
    ngx_cdp_redis_t  *rd = ngx_cdp_redis;

    size_t      i;
    ngx_uint_t  v[7];

    ngx_cdp_redis_dequeued(rd, nevents);

    if (reply == NULL) {
        ngx_cdp_count(NGX_CDP_C_DROP_REDIS_DOWN, nevents);
        ngx_cdp_redis_wake(data, NGX_ERROR);
        return;
    }

    /* {stored, erased, merges, switches, refused, malformed, duplicates} */

    if (reply->type == REDIS_REPLY_ARRAY && reply->elements >= 7) {
        for (i = 0; i < 7; i++) {
            v[i] = (reply->element[i]->type == REDIS_REPLY_INTEGER
                    && reply->element[i]->integer >= 0)
                   ? (ngx_uint_t) reply->element[i]->integer : 0;
        }

        ngx_cdp_count(NGX_CDP_C_STORED, v[0]);
        ngx_cdp_count(NGX_CDP_C_DROP_ERASED, v[1]);
        ngx_cdp_count(NGX_CDP_C_MERGES, v[2]);
        ngx_cdp_count(NGX_CDP_C_SHARED_DEVICE, v[3]);
        ngx_cdp_count(NGX_CDP_C_IDENT_REFUSED, v[4]);
        ngx_cdp_count(NGX_CDP_C_DROP_MALFORMED, v[5]);
        ngx_cdp_count(NGX_CDP_C_API_DUPLICATES, v[6]);

        ngx_cdp_dest_ingested(rd->mcf, reply, 7);

        ngx_cdp_redis_wake(data, NGX_OK);

        return;
    }

    ngx_cdp_redis_wake(data, NGX_ERROR);

    ngx_cdp_count(NGX_CDP_C_DROP_REDIS_ERROR, nevents);

    if (reply->type != REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      "cdp: unexpected reply type %d to cdp_ingest",
                      reply->type);
        return;
    }

    ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                  "cdp: redis cdp_ingest failed, %ui events dropped: %s",
                  nevents, reply->str);

    /* FUNCTION FLUSH, or a Redis restarted without its data */

    if (ngx_strstr(reply->str, "Function not found")) {
        ngx_cdp_redis_load_library(rd);
    }
}


static void
ngx_cdp_redis_dequeued(ngx_cdp_redis_t *rd, ngx_uint_t n)
{
    rd->queued -= n;
    ngx_cdp_count(NGX_CDP_C_QUEUE_EVENTS, (ngx_atomic_int_t) -n);
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

    if (ngx_cdp_rbuf_reserve(&rd->out, len) != NGX_OK
        || ngx_cdp_redis_push(rd, handler, data, 0) != NGX_OK)
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
    void *data, ngx_uint_t nevents)
{
    ngx_cdp_redis_pending_t  *p;

    if (rd->pending_n == rd->pending_size) {
        return NGX_ERROR;
    }

    p = &rd->pending[(rd->pending_head + rd->pending_n) % rd->pending_size];
    p->handler = handler;
    p->data = data;
    p->nevents = nevents;

    rd->pending_n++;

    return NGX_OK;
}


static void
ngx_cdp_redis_send(ngx_cdp_redis_t *rd)
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
        ngx_add_timer(c->read, rd->mcf->timeout);
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
        ngx_cdp_redis_send(rd);
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

    ngx_cdp_redis_send(rd);
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

        p.handler(reply, p.data, p.nevents);

        freeReplyObject(reply);

        if (rd->connection == NULL) {
            /* the handler's write failed and the connection is gone */
            return NGX_OK;
        }
    }
}


static ngx_int_t
ngx_cdp_rbuf_reserve(ngx_cdp_rbuf_t *b, size_t n)
{
    u_char  *p;
    size_t   used, size;

    if ((size_t) (b->end - b->last) >= n) {
        return NGX_OK;
    }

    used = b->last - b->pos;

    if (b->pos != b->start && (size_t) (b->end - b->start) >= used + n) {
        ngx_memmove(b->start, b->pos, used);
        b->pos = b->start;
        b->last = b->start + used;
        return NGX_OK;
    }

    size = ngx_max((size_t) (b->end - b->start) * 2, used + n);
    size = ngx_max(size, 16384);

    p = ngx_alloc(size, ngx_cycle->log);
    if (p == NULL) {
        return NGX_ERROR;
    }

    if (used) {
        ngx_memcpy(p, b->pos, used);
    }

    ngx_free(b->start);

    b->start = p;
    b->pos = p;
    b->last = p + used;
    b->end = p + size;

    return NGX_OK;
}


/* space is reserved by the caller: ngx_cdp_bulk_len() */

static void
ngx_cdp_rbuf_bulk(ngx_cdp_rbuf_t *b, const u_char *data, size_t len)
{
    u_char  *p, digits[NGX_SIZE_T_LEN];
    size_t   n;

    /* "$<len>\r\n": by hand, a few times per event (ngx_sprintf costs) */

    p = digits + NGX_SIZE_T_LEN;
    n = len;

    do {
        *--p = (u_char) ('0' + n % 10);
        n /= 10;
    } while (n);

    *b->last++ = '$';
    b->last = ngx_cpymem(b->last, p, digits + NGX_SIZE_T_LEN - p);
    *b->last++ = CR;
    *b->last++ = LF;
    b->last = ngx_cpymem(b->last, data, len);
    *b->last++ = CR;
    *b->last++ = LF;
}


static size_t
ngx_cdp_bulk_len(size_t len)
{
    return 1 + NGX_SIZE_T_LEN + 2 + len + 2;
}
