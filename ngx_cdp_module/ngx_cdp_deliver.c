
/*
 * ngx_cdp: HTTP delivery of the destinations' out-streams.
 *
 * Every worker delivers every destination that has uri=: a deliverer per
 * shard reads the shard's out-stream <prefix>:out:{<tag>}:<NAME> through
 * the consumer group "cdp" (as
 * consumer "<hostname>:<worker number>", the same name after a reload or
 * a restart, so that a new worker takes over its predecessor's pending
 * entries at once), renders a batch in the destination's format and
 * POSTs it to the uri, an nginx location: TLS, keepalive, timeouts, auth
 * headers and upstream failover are the location's proxy_* directives.
 *
 * A POST is an nginx subrequest of a request of our own, made without a
 * client: a connection with no socket (fd -1), whose send_chain keeps the
 * first bytes of the answer and drops the rest, and a main request that
 * never answers anything.  The subrequest runs the location's phases and
 * its content handler (proxy_pass) as for any request.  Its end calls
 * ngx_cdp_deliver_done() (the status), then wakes the main request
 * (ngx_cdp_deliver_finished()), which is freed with its pool.
 *
 * At least once: entries are acknowledged (XACK, then XDEL) only after a
 * 2xx, in the same call that moves refused ones (a 4xx but 408 and 429)
 * to the shard's dead-letter stream <prefix>:dead:{<tag>}:<NAME>.  No
 * answer, a 5xx, 408
 * or 429 leaves the batch pending: it is fetched again from Redis
 * (XCLAIM, which skips what an erasure deleted meanwhile) after a backoff
 * that doubles from 500 ms to 30 s, with jitter.  Entries pending for
 * another consumer for 5 minutes (a host gone, fewer workers) are taken
 * over (XAUTOCLAIM).  One batch a destination and shard a worker is in
 * hand at a time, its bodies (one Segment batch, a GA4 request a client,
 * a json POST an event) up to 8 in flight at once over the shards (at
 * least one a shard): a slow or dead destination holds those requests and
 * a batch a shard, and never a client's request, which shares nothing
 * with it.
 */


#include "ngx_cdp_dest.h"
#include "ngx_cdp_http.h"
#include "ngx_cdp_format.h"
#include "ngx_cdp_redis.h"
#include "ngx_cdp_ingest.h"
#include "ngx_cdp_stamp.h"


#define NGX_CDP_DELIVER_GROUP         "cdp"
#define NGX_CDP_DELIVER_BACKOFF_MIN   500
#define NGX_CDP_DELIVER_BACKOFF_MAX   30000
#define NGX_CDP_DELIVER_CLAIM_IDLE    "300000"     /* ms */
#define NGX_CDP_DELIVER_CLAIM_EVERY   30           /* s */
#define NGX_CDP_DELIVER_STATS_EVERY   2            /* s */
#define NGX_CDP_DELIVER_HEAD          256
#define NGX_CDP_DELIVER_DEAD_MAXLEN   "10000"
#define NGX_CDP_DELIVER_RETRY_REDIS   1000

/* one argument of a command being built into argv[] and lens[] */
#define ngx_cdp_arg(s, l)  argv[n] = (const char *) (s); lens[n++] = (l)

/* requests of one destination in flight at once, a worker (over its
 * shards; at least one a shard) */
#define NGX_CDP_DELIVER_PARALLEL      8

/* where a worker is with its destination's stream */
#define NGX_CDP_DELIVER_NEW           0     /* the group may not exist */
#define NGX_CDP_DELIVER_OWN           1     /* reading its own pending */
#define NGX_CDP_DELIVER_LIVE          2     /* reading new entries */

/* what a read asked for */
#define NGX_CDP_READ_OWN              0
#define NGX_CDP_READ_NEW              1
#define NGX_CDP_READ_CLAIM            2
#define NGX_CDP_READ_RETRY            3

#define NGX_CDP_ENTRY_PENDING         0
#define NGX_CDP_ENTRY_ACK             1
#define NGX_CDP_ENTRY_DEAD            2
#define NGX_CDP_ENTRY_RETRY           3


typedef struct {
    ngx_str_t                  id;
    ngx_str_t                  pid;
    ngx_str_t                  json;        /* the event, or the notice */
    ngx_str_t                  sent;        /* "a:<aid>\tu:<uid>" */
    ngx_str_t                  client;      /* GA4: aid, else "u:<uid>" */
    ngx_uint_t                 state;
    ngx_uint_t                 status;      /* dead: the HTTP status */
    ngx_str_t                  head;        /* dead: the answer's bytes */
    unsigned                   notice:1;
} ngx_cdp_entry_t;


typedef struct {
    ngx_str_t                  body;
    ngx_uint_t                *entries;     /* indexes */
    ngx_uint_t                 n;
} ngx_cdp_body_t;


typedef struct ngx_cdp_deliver_s  ngx_cdp_deliver_t;


/* one request in flight: its connection without a socket, reused */
typedef struct {
    ngx_connection_t           conn;        /* first: see send_chain */
    ngx_event_t                rev;
    ngx_event_t                wev;
    ngx_log_t                  clog;
    ngx_http_log_ctx_t         lctx;
    struct sockaddr_in         sin;
    ngx_event_t                next;        /* after the request */

    ngx_cdp_deliver_t         *d;
    ngx_http_request_t        *request;     /* in flight */
    ngx_uint_t                 used;        /* until its result is taken */
    ngx_uint_t                 body;
    ngx_int_t                  status;
    u_char                     head[NGX_CDP_DELIVER_HEAD];
    size_t                     head_len;
} ngx_cdp_deliver_req_t;


struct ngx_cdp_deliver_s {
    ngx_cdp_deliver_req_t      req[NGX_CDP_DELIVER_PARALLEL];

    ngx_cdp_dest_t            *dest;
    ngx_http_cdp_main_conf_t  *mcf;
    ngx_log_t                 *log;
    ngx_str_t                  consumer;
    ngx_str_t                  prefix;      /* "<prefix>:" */
    ngx_str_t                  out_key;     /* <prefix>:out:{<tag>}:<name> */
    ngx_str_t                  dead_key;    /* <prefix>:dead:{<tag>}:<name> */
    ngx_uint_t                 parallel;    /* requests at once */
    ngx_uint_t                 length;      /* the shard's, for the sums */
    ngx_uint_t                 pending;

    ngx_event_t                timer;
    ngx_cdp_redis_call_t       call;
    ngx_cdp_redis_call_t       reg;         /* <prefix>:destinations */
    ngx_cdp_redis_call_t       groups;      /* XINFO GROUPS */
    ngx_cdp_redis_call_t       xlen;
    ngx_uint_t                 busy;        /* a call or requests */
    ngx_uint_t                 stage;
    ngx_uint_t                 read;        /* NGX_CDP_READ_* in flight */
    ngx_msec_t                 backoff;
    time_t                     claimed;
    time_t                     stats_at;
    ngx_uint_t                 retry;       /* entries wait for a retry */

    ngx_pool_t                *pool;        /* the batch in hand */
    ngx_cdp_entry_t           *entries;
    ngx_uint_t                 nentries;
    ngx_cdp_body_t            *bodies;
    ngx_uint_t                 nbodies;
    ngx_uint_t                 body;        /* the next one to send */
    ngx_uint_t                 inflight;
    ngx_uint_t                 failed;      /* a body waits for a retry */
    ngx_uint_t                 full;
};


static ngx_int_t ngx_cdp_deliver_make(ngx_cycle_t *cycle,
    ngx_http_cdp_main_conf_t *mcf, ngx_cdp_dest_t *dest, ngx_uint_t shard);
static void ngx_cdp_deliver_timer(ngx_event_t *ev);
static void ngx_cdp_deliver_next(ngx_event_t *ev);
static void ngx_cdp_deliver_schedule(ngx_cdp_deliver_t *d, ngx_msec_t t);
static void ngx_cdp_deliver_poll(ngx_cdp_deliver_t *d);
static ngx_int_t ngx_cdp_deliver_command(ngx_cdp_deliver_t *d,
    ngx_cdp_redis_call_pt handler, ngx_uint_t argc, const char **argv,
    size_t *lens);
static void ngx_cdp_deliver_group_done(ngx_cdp_redis_call_t *call,
    void *reply);
static void ngx_cdp_deliver_read_done(ngx_cdp_redis_call_t *call,
    void *reply);
static ngx_int_t ngx_cdp_deliver_entries(ngx_cdp_deliver_t *d,
    redisReply *list);
static ngx_int_t ngx_cdp_deliver_render(ngx_cdp_deliver_t *d);
static ngx_int_t ngx_cdp_deliver_add_body(ngx_cdp_deliver_t *d,
    char *body, size_t len, ngx_uint_t *entries, ngx_uint_t n);
static void ngx_cdp_deliver_send(ngx_cdp_deliver_t *d);
static ngx_int_t ngx_cdp_deliver_request(ngx_cdp_deliver_req_t *q,
    ngx_str_t *body);
static ngx_int_t ngx_cdp_deliver_done(ngx_http_request_t *r, void *data,
    ngx_int_t rc);
static void ngx_cdp_deliver_finished(ngx_http_request_t *r);
static void ngx_cdp_deliver_result(ngx_cdp_deliver_req_t *q);
static void ngx_cdp_deliver_finish(ngx_cdp_deliver_t *d);
static void ngx_cdp_deliver_acked(ngx_cdp_redis_call_t *call, void *reply);
static void ngx_cdp_deliver_after(ngx_cdp_deliver_t *d);
static void ngx_cdp_deliver_stats(ngx_cdp_deliver_t *d);
static void ngx_cdp_deliver_stats_done(ngx_cdp_redis_call_t *call,
    void *reply);
static void ngx_cdp_deliver_sums(ngx_cdp_deliver_t *d);
static void ngx_cdp_deliver_ignore(ngx_cdp_redis_call_t *call, void *reply);
static ngx_chain_t *ngx_cdp_deliver_send_chain(ngx_connection_t *c,
    ngx_chain_t *in, off_t limit);
static ssize_t ngx_cdp_deliver_send_bytes(ngx_connection_t *c, u_char *buf,
    size_t size);
static u_char *ngx_cdp_deliver_log_error(ngx_log_t *log, u_char *buf,
    size_t len);


static ngx_array_t  *ngx_cdp_deliverers;     /* ngx_cdp_deliver_t * */


ngx_int_t
ngx_cdp_deliver_init_process(ngx_cycle_t *cycle,
    ngx_http_cdp_main_conf_t *mcf)
{
    ngx_uint_t       i, shard;
    ngx_cdp_dest_t  *dest;

    if (mcf->destinations == NULL) {
        return NGX_OK;
    }

    ngx_cdp_deliverers = ngx_array_create(cycle->pool, 4,
                                          sizeof(ngx_cdp_deliver_t *));
    if (ngx_cdp_deliverers == NULL) {
        return NGX_ERROR;
    }

    dest = mcf->destinations->elts;

    /* a deliverer per destination and shard: each reads its shard's stream */

    for (i = 0; i < mcf->destinations->nelts; i++) {
        if (dest[i].uri.len == 0) {
            continue;
        }

        for (shard = 0; shard < mcf->redis.shards; shard++) {
            if (ngx_cdp_deliver_make(cycle, mcf, &dest[i], shard) != NGX_OK)
            {
                return NGX_ERROR;
            }
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_cdp_deliver_make(ngx_cycle_t *cycle, ngx_http_cdp_main_conf_t *mcf,
    ngx_cdp_dest_t *dest, ngx_uint_t shard)
{
    u_char              *p;
    ngx_str_t            base;
    ngx_uint_t           k;
    ngx_cdp_deliver_t   *d, **dp;

    d = ngx_pcalloc(cycle->pool, sizeof(ngx_cdp_deliver_t));
    dp = ngx_array_push(ngx_cdp_deliverers);
    if (d == NULL || dp == NULL) {
        return NGX_ERROR;
    }

    *dp = d;

    d->dest = dest;
    d->mcf = mcf;
    d->log = cycle->log;
    d->backoff = NGX_CDP_DELIVER_BACKOFF_MIN;

    /*
     * a destination's requests at once, a worker: NGX_CDP_DELIVER_PARALLEL
     * shared by its shards' deliverers, at least one each
     */

    d->parallel = ngx_max(1, NGX_CDP_DELIVER_PARALLEL / mcf->redis.shards);

    /* "<prefix>:out:{<tag>}:<name>" and "<prefix>:dead:{<tag>}:<name>" */

    if (ngx_cdp_ingest_key(cycle->pool, mcf, "out", NULL, 0, shard, &base)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    p = ngx_pnalloc(cycle->pool, 2 * (base.len + 2 + dest->name.len));
    if (p == NULL) {
        return NGX_ERROR;
    }

    d->out_key.data = p;
    p = ngx_sprintf(p, "%V:%V", &base, &dest->name);
    d->out_key.len = p - d->out_key.data;

    d->dead_key.data = p;
    p = ngx_sprintf(p, "%V:dead%*s", &mcf->prefix,
                    d->out_key.len - mcf->prefix.len - 4,
                    d->out_key.data + mcf->prefix.len + 4);
    d->dead_key.len = p - d->dead_key.data;

    /* "<hostname>:<worker>": stable across reloads and restarts */

    p = ngx_pnalloc(cycle->pool, cycle->hostname.len + 1 + NGX_INT_T_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    d->consumer.data = p;
    d->consumer.len = ngx_sprintf(p, "%V:%ui", &cycle->hostname,
                                  (ngx_uint_t) ngx_worker)
                      - p;

    d->prefix.len = mcf->prefix.len + 1;
    d->prefix.data = ngx_pnalloc(cycle->pool, d->prefix.len);
    if (d->prefix.data == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(d->prefix.data, "%V:", &mcf->prefix);

    d->call.data = d;
    d->reg.data = d;
    d->reg.handler = ngx_cdp_deliver_ignore;
    d->groups.data = d;
    d->groups.handler = ngx_cdp_deliver_stats_done;
    d->xlen.data = d;
    d->xlen.handler = ngx_cdp_deliver_stats_done;

    d->timer.handler = ngx_cdp_deliver_timer;
    d->timer.data = d;
    d->timer.log = cycle->log;
    d->timer.cancelable = 1;

    for (k = 0; k < NGX_CDP_DELIVER_PARALLEL; k++) {
        d->req[k].d = d;
        d->req[k].next.handler = ngx_cdp_deliver_next;
        d->req[k].next.data = &d->req[k];
        d->req[k].next.log = cycle->log;
        d->req[k].sin.sin_family = AF_INET;
        d->req[k].sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    }

    /* the first poll waits for the Redis connection a little */
    ngx_cdp_deliver_schedule(d, 100 + ngx_random() % 100);

    return NGX_OK;
}


void
ngx_cdp_deliver_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t          i;
    ngx_cdp_deliver_t **dp;

    if (ngx_cdp_deliverers == NULL) {
        return;
    }

    dp = ngx_cdp_deliverers->elts;

    for (i = 0; i < ngx_cdp_deliverers->nelts; i++) {
        if (dp[i]->pool) {
            ngx_destroy_pool(dp[i]->pool);
            dp[i]->pool = NULL;
        }
    }

    ngx_cdp_deliverers = NULL;
}


static void
ngx_cdp_deliver_schedule(ngx_cdp_deliver_t *d, ngx_msec_t t)
{
    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    ngx_add_timer(&d->timer, t);
}


static void
ngx_cdp_deliver_timer(ngx_event_t *ev)
{
    ngx_cdp_deliver_t  *d = ev->data;

    if (d->busy) {
        return;
    }

    ngx_cdp_deliver_poll(d);
}


/* the next step, out of the request's own call chain */

static void
ngx_cdp_deliver_next(ngx_event_t *ev)
{
    ngx_cdp_deliver_result(ev->data);
}


static ngx_int_t
ngx_cdp_deliver_command(ngx_cdp_deliver_t *d, ngx_cdp_redis_call_pt handler,
    ngx_uint_t argc, const char **argv, size_t *lens)
{
    d->call.handler = handler;

    if (ngx_cdp_redis_call(&d->call, argc, argv, lens) != NGX_OK) {
        /* Redis is away: the next try in a second */
        ngx_cdp_deliver_schedule(d, NGX_CDP_DELIVER_RETRY_REDIS);
        return NGX_DECLINED;
    }

    d->busy = 1;

    return NGX_OK;
}


/* what to read next, see the stages above */

static void
ngx_cdp_deliver_poll(ngx_cdp_deliver_t *d)
{
    u_char           count[NGX_INT_T_LEN];
    size_t           count_len;
    ngx_uint_t       i, n;
    const char      *argv[8 + 1000];
    size_t           lens[8 + 1000];
    ngx_cdp_dest_t  *dest;

    dest = d->dest;

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    if (ngx_time() - d->stats_at >= NGX_CDP_DELIVER_STATS_EVERY) {
        ngx_cdp_deliver_stats(d);
    }

    n = 0;

    if (d->stage == NGX_CDP_DELIVER_NEW) {
        /* from the stream's start: entries queued before any delivery */
        ngx_cdp_arg("XGROUP", 6);
        ngx_cdp_arg("CREATE", 6);
        ngx_cdp_arg(d->out_key.data, d->out_key.len);
        ngx_cdp_arg(NGX_CDP_DELIVER_GROUP, sizeof(NGX_CDP_DELIVER_GROUP) - 1);
        ngx_cdp_arg("0", 1);
        ngx_cdp_arg("MKSTREAM", 8);

        (void) ngx_cdp_deliver_command(d, ngx_cdp_deliver_group_done, n,
                                       argv, lens);
        return;
    }

    count_len = ngx_sprintf(count, "%ui", dest->batch) - count;
    n = 0;

    if (d->retry && d->pool) {
        /* the same entries again, less those an erasure took */

        ngx_cdp_arg("XCLAIM", 6);
        ngx_cdp_arg(d->out_key.data, d->out_key.len);
        ngx_cdp_arg(NGX_CDP_DELIVER_GROUP, sizeof(NGX_CDP_DELIVER_GROUP) - 1);
        ngx_cdp_arg(d->consumer.data, d->consumer.len);
        ngx_cdp_arg("0", 1);

        for (i = 0; i < d->nentries && n < 8 + 1000; i++) {
            if (d->entries[i].state == NGX_CDP_ENTRY_RETRY) {
                ngx_cdp_arg(d->entries[i].id.data, d->entries[i].id.len);
            }
        }

        d->read = NGX_CDP_READ_RETRY;

    } else if (d->stage == NGX_CDP_DELIVER_LIVE
               && ngx_time() - d->claimed >= NGX_CDP_DELIVER_CLAIM_EVERY)
    {
        d->claimed = ngx_time();

        ngx_cdp_arg("XAUTOCLAIM", 10);
        ngx_cdp_arg(d->out_key.data, d->out_key.len);
        ngx_cdp_arg(NGX_CDP_DELIVER_GROUP, sizeof(NGX_CDP_DELIVER_GROUP) - 1);
        ngx_cdp_arg(d->consumer.data, d->consumer.len);
        ngx_cdp_arg(NGX_CDP_DELIVER_CLAIM_IDLE,
                    sizeof(NGX_CDP_DELIVER_CLAIM_IDLE) - 1);
        ngx_cdp_arg("0-0", 3);
        ngx_cdp_arg("COUNT", 5);
        ngx_cdp_arg(count, count_len);

        d->read = NGX_CDP_READ_CLAIM;

    } else {
        ngx_cdp_arg("XREADGROUP", 10);
        ngx_cdp_arg("GROUP", 5);
        ngx_cdp_arg(NGX_CDP_DELIVER_GROUP, sizeof(NGX_CDP_DELIVER_GROUP) - 1);
        ngx_cdp_arg(d->consumer.data, d->consumer.len);
        ngx_cdp_arg("COUNT", 5);
        ngx_cdp_arg(count, count_len);
        ngx_cdp_arg("STREAMS", 7);
        ngx_cdp_arg(d->out_key.data, d->out_key.len);

        if (d->stage == NGX_CDP_DELIVER_OWN) {
            /* what this consumer had read and not acknowledged */
            ngx_cdp_arg("0", 1);
            d->read = NGX_CDP_READ_OWN;

        } else {
            ngx_cdp_arg(">", 1);
            d->read = NGX_CDP_READ_NEW;
        }
    }

    (void) ngx_cdp_deliver_command(d, ngx_cdp_deliver_read_done, n, argv,
                                   lens);
}


static void
ngx_cdp_deliver_group_done(ngx_cdp_redis_call_t *call, void *data)
{
    ngx_cdp_deliver_t  *d = call->data;
    redisReply         *reply = data;

    const char         *argv[4];
    size_t              lens[4];
    u_char              conf[NGX_CDP_DEST_NAME_MAX + 128];

    d->busy = 0;

    if (reply == NULL
        || (reply->type == REDIS_REPLY_ERROR
            && ngx_strstr(reply->str, "BUSYGROUP") == NULL))
    {
        if (reply) {
            ngx_log_error(NGX_LOG_ERR, d->log, 0,
                          "cdp: destination \"%V\": XGROUP CREATE failed: %s",
                          &d->dest->name, reply->str);
        }

        ngx_cdp_deliver_schedule(d, NGX_CDP_DELIVER_RETRY_REDIS);
        return;
    }

    /*
     * <prefix>:destinations lists the destinations for an erasure (their
     * out-streams) and for anyone reading the store
     */

    argv[0] = "HSET";
    lens[0] = 4;
    argv[1] = (const char *) conf;
    lens[1] = ngx_sprintf(conf, "%Vdestinations", &d->prefix) - conf;
    argv[2] = (const char *) d->dest->name.data;
    lens[2] = d->dest->name.len;
    argv[3] = (const char *) conf + lens[1];
    lens[3] = ngx_sprintf(conf + lens[1], "%ui", d->dest->purpose)
              - (conf + lens[1]);

    (void) ngx_cdp_redis_call(&d->reg, 4, argv, lens);

    d->stage = NGX_CDP_DELIVER_OWN;

    ngx_cdp_deliver_poll(d);
}


static void
ngx_cdp_deliver_read_done(ngx_cdp_redis_call_t *call, void *data)
{
    ngx_cdp_deliver_t  *d = call->data;
    redisReply         *reply = data;

    redisReply  *list;
    ngx_uint_t   read;

    d->busy = 0;
    read = d->read;

    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        if (reply && ngx_strstr(reply->str, "NOGROUP")) {
            /* the stream or its group was deleted: made again */
            d->stage = NGX_CDP_DELIVER_NEW;

        } else if (reply) {
            ngx_log_error(NGX_LOG_ERR, d->log, 0,
                          "cdp: destination \"%V\": reading %V failed: %s",
                          &d->dest->name, &d->out_key, reply->str);
        } else {
            /* a lost connection: what was read is pending, read again */
            d->stage = NGX_CDP_DELIVER_NEW;
        }

        ngx_cdp_deliver_schedule(d, NGX_CDP_DELIVER_RETRY_REDIS);
        return;
    }

    /*
     * XREADGROUP: nil, or [[key, [entry...]]]; XCLAIM: [entry...];
     * XAUTOCLAIM: [cursor, [entry...], [deleted ids]]
     */

    list = NULL;

    if (read == NGX_CDP_READ_RETRY) {
        list = reply;

    } else if (read == NGX_CDP_READ_CLAIM) {
        if (reply->type == REDIS_REPLY_ARRAY && reply->elements >= 2) {
            list = reply->element[1];
        }

    } else if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 1
               && reply->element[0]->type == REDIS_REPLY_ARRAY
               && reply->element[0]->elements == 2)
    {
        list = reply->element[0]->element[1];
    }

    if (d->pool) {
        /* the batch of the retry is read again: the old one goes */
        ngx_destroy_pool(d->pool);
        d->pool = NULL;
    }

    d->retry = 0;
    d->nentries = 0;

    if (list && list->type == REDIS_REPLY_ARRAY && list->elements) {
        if (ngx_cdp_deliver_entries(d, list) != NGX_OK) {
            ngx_cdp_deliver_schedule(d, NGX_CDP_DELIVER_RETRY_REDIS);
            return;
        }
    }

    d->full = (list && list->type == REDIS_REPLY_ARRAY
               && list->elements >= d->dest->batch);

    if (d->nentries == 0) {
        if (read == NGX_CDP_READ_OWN) {
            /* nothing pending of its own: on to new entries */
            d->stage = NGX_CDP_DELIVER_LIVE;
            ngx_cdp_deliver_poll(d);
            return;
        }

        if (read == NGX_CDP_READ_CLAIM || read == NGX_CDP_READ_RETRY) {
            ngx_cdp_deliver_poll(d);
            return;
        }

        ngx_cdp_deliver_schedule(d, d->dest->flush);
        return;
    }

    if (read == NGX_CDP_READ_OWN && !d->full) {
        d->stage = NGX_CDP_DELIVER_LIVE;
    }

    if (ngx_cdp_deliver_render(d) != NGX_OK) {
        ngx_destroy_pool(d->pool);
        d->pool = NULL;
        d->nentries = 0;
        ngx_cdp_deliver_schedule(d, NGX_CDP_DELIVER_RETRY_REDIS);
        return;
    }

    d->body = 0;
    d->inflight = 0;
    d->failed = 0;
    ngx_cdp_deliver_send(d);
}


/*
 * The entries of a reply, copied into a pool of the batch: [id, [field,
 * value, ...]] each, or [id, nil] for an entry deleted since it was read
 * (an erasure): acknowledged with nothing sent.
 */

static ngx_int_t
ngx_cdp_deliver_entries(ngx_cdp_deliver_t *d, redisReply *list)
{
    size_t            i, k;
    redisReply       *e, *f, *name, *value;
    ngx_str_t        *to;
    ngx_cdp_entry_t  *en;

    d->pool = ngx_create_pool(16384, d->log);
    if (d->pool == NULL) {
        return NGX_ERROR;
    }

    d->entries = ngx_pcalloc(d->pool, list->elements * sizeof(ngx_cdp_entry_t));
    if (d->entries == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < list->elements; i++) {
        e = list->element[i];

        if (e->type != REDIS_REPLY_ARRAY || e->elements != 2
            || e->element[0]->type != REDIS_REPLY_STRING)
        {
            continue;
        }

        en = &d->entries[d->nentries++];

        en->id.len = e->element[0]->len;
        en->id.data = ngx_pnalloc(d->pool, en->id.len);
        if (en->id.data == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(en->id.data, e->element[0]->str, en->id.len);

        f = e->element[1];

        if (f->type != REDIS_REPLY_ARRAY) {
            /* deleted meanwhile */
            en->state = NGX_CDP_ENTRY_ACK;
            continue;
        }

        for (k = 0; k + 1 < f->elements; k += 2) {
            name = f->element[k];
            value = f->element[k + 1];

            if (name->type != REDIS_REPLY_STRING
                || value->type != REDIS_REPLY_STRING)
            {
                continue;
            }

            to = NULL;

            if (name->len == 5 && ngx_strncmp(name->str, "event", 5) == 0) {
                to = &en->json;

            } else if (name->len == 6
                       && ngx_strncmp(name->str, "delete", 6) == 0)
            {
                to = &en->json;
                en->notice = 1;

            } else if (name->len == 1 && name->str[0] == 'p') {
                to = &en->pid;
            }

            if (to == NULL) {
                continue;
            }

            to->len = value->len;
            to->data = ngx_pnalloc(d->pool, value->len + 1);
            if (to->data == NULL) {
                return NGX_ERROR;
            }

            ngx_memcpy(to->data, value->str, value->len);
            to->data[value->len] = '\0';
        }

        if (en->json.len == 0) {
            /* nothing to send: an entry of no use, dropped */
            en->state = NGX_CDP_ENTRY_ACK;
        }
    }

    return NGX_OK;
}


/*
 * The bodies of the batch, by format: a deletion notice is a body of its
 * own; events are one Segment batch, one GA4 request a client (at most
 * 25 events), or one POST each (json).
 */

static ngx_int_t
ngx_cdp_deliver_render(ngx_cdp_deliver_t *d)
{
    u_char              *p;
    char                *body;
    size_t               len;
    ngx_uint_t           i, j, n, *idx;
    ngx_cdp_entry_t     *en;
    u_char              *taken;
    ngx_cdp_fmt_str_t   *ev;
    ngx_cdp_fmt_info_t   info;
    u_char               sent_at[NGX_CDP_ISO8601_LEN + 1];

    d->bodies = ngx_pcalloc(d->pool, (d->nentries + 1)
                                     * sizeof(ngx_cdp_body_t));
    idx = ngx_palloc(d->pool, d->nentries * sizeof(ngx_uint_t));
    ev = ngx_palloc(d->pool, d->nentries * sizeof(ngx_cdp_fmt_str_t));
    taken = ngx_palloc(d->pool, d->nentries);

    if (d->bodies == NULL || idx == NULL || ev == NULL || taken == NULL) {
        return NGX_ERROR;
    }

    d->nbodies = 0;

    /* what each event tells of its person, for the sent record */

    for (i = 0; i < d->nentries; i++) {
        en = &d->entries[i];

        if (en->state != NGX_CDP_ENTRY_PENDING) {
            continue;
        }

        if (en->notice) {
            if (ngx_cdp_deliver_add_body(d, (char *) en->json.data,
                                         en->json.len, &i, 1)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

            continue;
        }

        if (ngx_cdp_fmt_info((char *) en->json.data, en->json.len, &info)
            != 0)
        {
            en->state = NGX_CDP_ENTRY_DEAD;
            en->status = 0;
            ngx_str_set(&en->head, "the stored event is not a JSON object");
            continue;
        }

        len = ngx_strlen(info.anonymous_id) + ngx_strlen(info.user_id);

        p = ngx_pnalloc(d->pool, len + 6);
        if (p == NULL) {
            return NGX_ERROR;
        }

        en->sent.data = p;

        if (info.anonymous_id[0]) {
            p = ngx_sprintf(p, "a:%s", info.anonymous_id);
        }

        if (info.user_id[0]) {
            p = ngx_sprintf(p, "%su:%s", p == en->sent.data ? "" : "\t",
                            info.user_id);
        }

        en->sent.len = p - en->sent.data;

        /* "a:<aid>" or "u:<uid>", the first part of sent */
        en->client.data = en->sent.data;
        en->client.len = en->sent.len;

        p = ngx_strlchr(en->sent.data, en->sent.data + en->sent.len, '\t');
        if (p) {
            en->client.len = p - en->sent.data;
        }
    }

    switch (d->dest->format) {

    case NGX_CDP_FORMAT_JSON:

        for (i = 0; i < d->nentries; i++) {
            en = &d->entries[i];

            if (en->state != NGX_CDP_ENTRY_PENDING || en->notice) {
                continue;
            }

            if (ngx_cdp_deliver_add_body(d, (char *) en->json.data,
                                         en->json.len, &i, 1)
                != NGX_OK)
            {
                return NGX_ERROR;
            }
        }

        break;

    case NGX_CDP_FORMAT_GA4:

        /* one request a client, at most 25 events each */

        for (i = 0; i < d->nentries; i++) {
            taken[i] = 0;
        }

        for (i = 0; i < d->nentries; i++) {
            en = &d->entries[i];

            if (en->state != NGX_CDP_ENTRY_PENDING || en->notice || taken[i])
            {
                continue;
            }

            n = 0;

            for (j = i; j < d->nentries
                        && n < NGX_CDP_FMT_GA4_MAX_EVENTS; j++)
            {
                if (d->entries[j].state != NGX_CDP_ENTRY_PENDING
                    || d->entries[j].notice || taken[j]
                    || d->entries[j].client.len != en->client.len
                    || ngx_strncmp(d->entries[j].client.data,
                                   en->client.data, en->client.len)
                       != 0)
                {
                    continue;
                }

                taken[j] = 1;
                ev[n].data = (char *) d->entries[j].json.data;
                ev[n].len = d->entries[j].json.len;
                idx[n++] = j;
            }

            body = ngx_cdp_fmt_ga4(ev, n, &len);

            if (body == NULL && len == 1) {
                return NGX_ERROR;
            }

            if (body == NULL) {
                /* nothing GA4 takes (an alias): done with */
                for (j = 0; j < n; j++) {
                    d->entries[idx[j]].state = NGX_CDP_ENTRY_ACK;
                }

                continue;
            }

            if (ngx_cdp_deliver_add_body(d, body, len, idx, n) != NGX_OK) {
                ngx_cdp_fmt_free(body);
                return NGX_ERROR;
            }

            ngx_cdp_fmt_free(body);
        }

        break;

    default: /* NGX_CDP_FORMAT_SEGMENT */

        n = 0;

        for (i = 0; i < d->nentries; i++) {
            en = &d->entries[i];

            if (en->state != NGX_CDP_ENTRY_PENDING || en->notice) {
                continue;
            }

            ev[n].data = (char *) en->json.data;
            ev[n].len = en->json.len;
            idx[n++] = i;
        }

        if (n == 0) {
            break;
        }

        *ngx_cdp_iso8601(sent_at, ngx_cached_time->sec,
                         ngx_cached_time->msec) = '\0';

        body = ngx_cdp_fmt_segment(ev, n, (char *) sent_at, &len);
        if (body == NULL) {
            return NGX_ERROR;
        }

        if (ngx_cdp_deliver_add_body(d, body, len, idx, n) != NGX_OK) {
            ngx_cdp_fmt_free(body);
            return NGX_ERROR;
        }

        ngx_cdp_fmt_free(body);

        break;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_cdp_deliver_add_body(ngx_cdp_deliver_t *d, char *body, size_t len,
    ngx_uint_t *entries, ngx_uint_t n)
{
    ngx_cdp_body_t  *b;

    b = &d->bodies[d->nbodies];

    b->body.data = ngx_pnalloc(d->pool, len);
    b->entries = ngx_palloc(d->pool, n * sizeof(ngx_uint_t));

    if (b->body.data == NULL || b->entries == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(b->body.data, body, len);
    b->body.len = len;
    ngx_memcpy(b->entries, entries, n * sizeof(ngx_uint_t));
    b->n = n;

    d->nbodies++;

    return NGX_OK;
}


/*
 * The next bodies of the batch, up to d->parallel at once; the batch's
 * end once none is in flight.
 */

static void
ngx_cdp_deliver_send(ngx_cdp_deliver_t *d)
{
    ngx_uint_t              k;
    ngx_cdp_deliver_req_t  *q;

    while (d->body < d->nbodies && d->inflight < d->parallel
           && !d->failed && !ngx_exiting && !ngx_terminate)
    {
        /* (at exit, a new worker delivers the rest: it is still pending) */

        for (k = 0; d->req[k].used; k++) { /* void */ }

        q = &d->req[k];
        q->body = d->body;

        if (ngx_cdp_deliver_request(q, &d->bodies[d->body].body) != NGX_OK) {
            /* no request could be made: as if no answer came */
            d->failed = 1;
            break;
        }

        q->used = 1;

        d->body++;
        d->inflight++;
    }

    if (d->inflight) {
        d->busy = 1;
        return;
    }

    ngx_cdp_deliver_finish(d);
}


/*
 * A request without a client: see the top of this file.  The connection
 * and its events are d's, reused; the request and everything it
 * allocates live in a pool of its own, freed by ngx_http_free_request().
 */

static ngx_int_t
ngx_cdp_deliver_request(ngx_cdp_deliver_req_t *q, ngx_str_t *body)
{
    ngx_buf_t                    *b;
    ngx_pool_t                   *pool;
    ngx_chain_t                  *cl;
    ngx_table_elt_t              *h;
    ngx_connection_t             *c;
    ngx_http_request_t           *r, *sr;
    ngx_http_conf_ctx_t          *ctx;
    ngx_http_request_body_t      *rb;
    ngx_http_core_main_conf_t    *cmcf;
    ngx_cdp_deliver_t            *d;
    ngx_http_post_subrequest_t   *ps;

    d = q->d;

    pool = ngx_create_pool(4096, &q->clog);
    if (pool == NULL) {
        return NGX_ERROR;
    }

    c = &q->conn;

    ngx_memzero(c, sizeof(ngx_connection_t));
    ngx_memzero(&q->rev, sizeof(ngx_event_t));
    ngx_memzero(&q->wev, sizeof(ngx_event_t));

    q->clog = *d->log;
    q->clog.handler = ngx_cdp_deliver_log_error;
    q->clog.data = &q->lctx;
    q->clog.action = NULL;
    pool->log = &q->clog;

    c->fd = (ngx_socket_t) -1;
    c->pool = pool;
    c->log = &q->clog;
    c->log_error = NGX_ERROR_INFO;
    c->number = ngx_atomic_fetch_add(ngx_connection_counter, 1);
    c->requests = 1;

    c->read = &q->rev;
    c->write = &q->wev;
    q->rev.data = c;
    q->wev.data = c;
    q->rev.log = &q->clog;
    q->wev.log = &q->clog;

    /*
     * It is in no event loop, and pretends to be: "active" keeps the
     * upstream from adding it to epoll, a ready write event lets the
     * answer through, and there is never anything to read.
     */
    q->rev.active = 1;
    q->wev.active = 1;
    q->wev.ready = 1;
    q->wev.write = 1;

    c->tcp_nodelay = NGX_TCP_NODELAY_DISABLED;
    c->send_chain = ngx_cdp_deliver_send_chain;
    c->send = ngx_cdp_deliver_send_bytes;

    c->sockaddr = (struct sockaddr *) &q->sin;
    c->socklen = sizeof(struct sockaddr_in);
    c->local_sockaddr = (struct sockaddr *) &q->sin;
    c->local_socklen = sizeof(struct sockaddr_in);
    ngx_str_set(&c->addr_text, "127.0.0.1");

    r = ngx_pcalloc(pool, sizeof(ngx_http_request_t));
    if (r == NULL) {
        goto failed;
    }

    ctx = d->dest->ctx;

    r->signature = NGX_HTTP_MODULE;
    r->connection = c;
    r->pool = pool;
    r->main_conf = ctx->main_conf;
    r->srv_conf = ctx->srv_conf;
    r->loc_conf = ctx->loc_conf;
    r->main = r;
    r->count = 1;
    r->logged = 1;
    r->http_state = NGX_HTTP_PROCESS_REQUEST_STATE;
    r->uri_changes = NGX_HTTP_MAX_URI_CHANGES + 1;
    r->subrequests = NGX_HTTP_MAX_SUBREQUESTS + 1;
    r->headers_in.keep_alive_n = -1;
    r->start_sec = ngx_cached_time->sec;
    r->start_msec = ngx_cached_time->msec;

    r->method = NGX_HTTP_POST;
    ngx_str_set(&r->method_name, "POST");
    r->http_version = NGX_HTTP_VERSION_11;
    ngx_str_set(&r->http_protocol, "HTTP/1.1");
    r->uri = d->dest->uri;
    r->unparsed_uri = d->dest->uri;

    r->request_line.len = sizeof("POST  HTTP/1.1") - 1 + d->dest->uri.len;
    r->request_line.data = ngx_pnalloc(pool, r->request_line.len);
    if (r->request_line.data == NULL) {
        goto failed;
    }

    ngx_sprintf(r->request_line.data, "POST %V HTTP/1.1", &d->dest->uri);

    r->ctx = ngx_pcalloc(pool, sizeof(void *) * ngx_http_max_module);
    if (r->ctx == NULL) {
        goto failed;
    }

    ngx_http_set_ctx(r, q, ngx_http_cdp_module);

    cmcf = ngx_http_get_module_main_conf(r, ngx_http_core_module);

    r->variables = ngx_pcalloc(pool, cmcf->variables.nelts
                                     * sizeof(ngx_http_variable_value_t));
    if (r->variables == NULL) {
        goto failed;
    }

    if (ngx_list_init(&r->headers_out.headers, pool, 2,
                      sizeof(ngx_table_elt_t))
        != NGX_OK
        || ngx_list_init(&r->headers_out.trailers, pool, 2,
                         sizeof(ngx_table_elt_t))
           != NGX_OK
        || ngx_list_init(&r->headers_in.headers, pool, 4,
                         sizeof(ngx_table_elt_t))
           != NGX_OK)
    {
        goto failed;
    }

    /* what the location passes on (proxy_pass_request_headers) */

    h = ngx_list_push(&r->headers_in.headers);
    if (h == NULL) {
        goto failed;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Content-Type");
    ngx_str_set(&h->value, "application/json");
    h->lowcase_key = (u_char *) "content-type";
    r->headers_in.content_type = h;

    h = ngx_list_push(&r->headers_in.headers);
    if (h == NULL) {
        goto failed;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "User-Agent");
    ngx_str_set(&h->value, "ngx_cdp/" NGX_CDP_VERSION);
    h->lowcase_key = (u_char *) "user-agent";
    r->headers_in.user_agent = h;

    r->headers_in.content_length_n = body->len;

    rb = ngx_pcalloc(pool, sizeof(ngx_http_request_body_t));
    b = ngx_calloc_buf(pool);
    cl = ngx_alloc_chain_link(pool);

    if (rb == NULL || b == NULL || cl == NULL) {
        goto failed;
    }

    b->pos = body->data;
    b->last = body->data + body->len;
    b->start = b->pos;
    b->end = b->last;
    b->memory = 1;
    b->last_buf = 1;
    b->last_in_chain = 1;

    cl->buf = b;
    cl->next = NULL;

    rb->bufs = cl;
    rb->rest = 0;
    r->request_body = rb;

    r->read_event_handler = ngx_http_block_reading;
    r->write_event_handler = ngx_cdp_deliver_finished;

    q->lctx.connection = c;
    q->lctx.request = r;
    q->lctx.current_request = r;

    c->data = r;

    ps = ngx_palloc(pool, sizeof(ngx_http_post_subrequest_t));
    if (ps == NULL) {
        goto failed;
    }

    ps->handler = ngx_cdp_deliver_done;
    ps->data = q;

    q->status = -1;
    q->head_len = 0;

    if (ngx_http_subrequest(r, &d->dest->uri, NULL, &sr, ps, 0) != NGX_OK) {
        goto failed;
    }

    sr->method = NGX_HTTP_POST;
    ngx_str_set(&sr->method_name, "POST");

    q->request = r;

    ngx_cdp_dest_count(d->dest, NGX_CDP_DC_IN_FLIGHT, 1);
    ngx_cdp_dest_count(d->dest, NGX_CDP_DC_REQUESTS, 1);

    ngx_http_run_posted_requests(c);

    return NGX_OK;

failed:

    q->lctx.request = NULL;
    q->lctx.current_request = NULL;
    ngx_destroy_pool(pool);

    ngx_log_error(NGX_LOG_ERR, d->log, 0,
                  "cdp: destination \"%V\": no request could be made",
                  &d->dest->name);

    return NGX_ERROR;
}


/*
 * The subrequest's end (post_subrequest): its status.  An answer of the
 * destination is NGX_OK with the status in headers_out; nginx's own
 * refusal (a 502 when the upstream is down, a 504 on its timeout, a 404
 * of the location) comes as rc.  The error page nginx would make of the
 * latter is of no use here: NGX_OK ends the subrequest at once, and the
 * main request is woken.
 */

static ngx_int_t
ngx_cdp_deliver_done(ngx_http_request_t *r, void *data, ngx_int_t rc)
{
    ngx_cdp_deliver_req_t  *q = data;

    if (q->status == -1) {
        if (rc == NGX_OK) {
            q->status = r->headers_out.status;

        } else if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
            q->status = rc;

        } else {
            /* NGX_ERROR and friends: no answer */
            q->status = 0;
        }
    }

    return NGX_OK;
}


/* the main request, woken by its subrequest's end */

static void
ngx_cdp_deliver_finished(ngx_http_request_t *r)
{
    size_t                  n;
    ngx_buf_t              *b;
    ngx_chain_t            *cl;
    ngx_cdp_deliver_req_t  *q;

    q = ngx_http_get_module_ctx(r, ngx_http_cdp_module);

    if (r->count > 1) {
        /* not yet done with (a subrequest still runs) */
        return;
    }

    /* what the write filter held back (postpone_output) */

    for (cl = r->out; cl; cl = cl->next) {
        b = cl->buf;

        if (!ngx_buf_in_memory(b) || b->in_file) {
            continue;
        }

        n = ngx_min((size_t) (b->last - b->pos),
                    NGX_CDP_DELIVER_HEAD - q->head_len);
        q->head_len += (ngx_cpymem(q->head + q->head_len, b->pos, n)
                        - (q->head + q->head_len));
    }

    q->request = NULL;
    ngx_cdp_dest_count(q->d->dest, NGX_CDP_DC_IN_FLIGHT,
                       (ngx_atomic_int_t) -1);

    ngx_http_free_request(r, 0);

    q->lctx.request = NULL;
    q->lctx.current_request = NULL;

    /* on, once nginx is out of this request's calls */
    ngx_post_event(&q->next, &ngx_posted_events);
}


/* a body's answer: acknowledged, dead, or the batch waits for a retry */

static void
ngx_cdp_deliver_result(ngx_cdp_deliver_req_t *q)
{
    ngx_int_t           status;
    ngx_uint_t          i, k, state;
    ngx_cdp_body_t     *b;
    ngx_cdp_deliver_t  *d;

    d = q->d;
    d->inflight--;
    q->used = 0;

    b = &d->bodies[q->body];
    status = q->status;

    if (status >= 200 && status < 300) {
        state = NGX_CDP_ENTRY_ACK;
        d->backoff = NGX_CDP_DELIVER_BACKOFF_MIN;

        if (d->dest->counters) {
            d->dest->counters[NGX_CDP_DC_LAST_SUCCESS] = ngx_time();
        }

    } else if (status <= 0 || status >= 500 || status == 408
               || status == 429)
    {
        /* this body and those not sent yet wait for a retry */
        state = NGX_CDP_ENTRY_RETRY;
        d->failed = 1;

        if (status > 0) {
            ngx_log_error(NGX_LOG_WARN, d->log, 0,
                          "cdp: destination \"%V\" answered %i, %ui "
                          "events are retried in %M ms",
                          &d->dest->name, status, b->n, d->backoff);

        } else {
            ngx_log_error(NGX_LOG_WARN, d->log, 0,
                          "cdp: destination \"%V\" did not answer, %ui "
                          "events are retried in %M ms",
                          &d->dest->name, b->n, d->backoff);
        }

    } else {
        state = NGX_CDP_ENTRY_DEAD;

        ngx_log_error(NGX_LOG_ERR, d->log, 0,
                      "cdp: destination \"%V\" refused %ui events with %i: "
                      "moved to %V", &d->dest->name, b->n, status,
                      &d->dead_key);
    }

    for (i = 0; i < b->n; i++) {
        k = b->entries[i];
        d->entries[k].state = state;

        if (state == NGX_CDP_ENTRY_DEAD) {
            d->entries[k].status = status;
            d->entries[k].head.data = ngx_pnalloc(d->pool, q->head_len);

            if (d->entries[k].head.data) {
                ngx_memcpy(d->entries[k].head.data, q->head, q->head_len);
                d->entries[k].head.len = q->head_len;
            }
        }
    }

    ngx_cdp_deliver_send(d);
}


/*
 * The batch is done with for now: one call acknowledges what was
 * delivered and moves what was refused; what waits for a retry stays
 * pending.
 */

static void
ngx_cdp_deliver_finish(ngx_cdp_deliver_t *d)
{
    u_char           *p, *now;
    size_t           *lens;
    ngx_uint_t        i, n, nack, nretry;
    const char      **argv;
    ngx_cdp_entry_t  *en;
    u_char            count[NGX_INT_T_LEN];

    d->busy = 0;

    nack = 0;
    nretry = 0;

    for (i = 0; i < d->nentries; i++) {
        switch (d->entries[i].state) {
        case NGX_CDP_ENTRY_ACK:
            nack++;
            break;
        case NGX_CDP_ENTRY_RETRY:
        case NGX_CDP_ENTRY_PENDING:
            d->entries[i].state = NGX_CDP_ENTRY_RETRY;
            nretry++;
            break;
        default:
            break;
        }
    }

    d->retry = (nretry > 0);

    if (nretry) {
        ngx_cdp_dest_count(d->dest, NGX_CDP_DC_RETRIED, nretry);
    }

    if (nretry == d->nentries) {
        ngx_cdp_deliver_after(d);
        return;
    }

    argv = ngx_palloc(d->pool, (12 + 3 * d->nentries) * sizeof(char *));
    lens = ngx_palloc(d->pool, (12 + 3 * d->nentries) * sizeof(size_t));
    p = ngx_pnalloc(d->pool, NGX_INT64_LEN + 4 * d->nentries);

    if (argv == NULL || lens == NULL || p == NULL) {
        d->retry = 0;
        d->stage = NGX_CDP_DELIVER_NEW;
        ngx_cdp_deliver_after(d);
        return;
    }

    n = 0;
    ngx_cdp_arg("FCALL", 5);
    ngx_cdp_arg("cdp_dest_done", sizeof("cdp_dest_done") - 1);
    ngx_cdp_arg("2", 1);
    ngx_cdp_arg(d->out_key.data, d->out_key.len);
    ngx_cdp_arg(d->dead_key.data, d->dead_key.len);
    ngx_cdp_arg(NGX_CDP_DELIVER_GROUP, sizeof(NGX_CDP_DELIVER_GROUP) - 1);
    ngx_cdp_arg(d->prefix.data, d->prefix.len);
    ngx_cdp_arg(d->dest->name.data, d->dest->name.len);

    now = p;
    p = ngx_sprintf(p, "%uL", (uint64_t) ngx_cached_time->sec * 1000
                              + ngx_cached_time->msec);
    ngx_cdp_arg(now, p - now);
    ngx_cdp_arg(NGX_CDP_DELIVER_DEAD_MAXLEN,
                sizeof(NGX_CDP_DELIVER_DEAD_MAXLEN) - 1);

    ngx_cdp_arg(count, ngx_sprintf(count, "%ui", nack) - count);

    for (i = 0; i < d->nentries; i++) {
        en = &d->entries[i];

        if (en->state == NGX_CDP_ENTRY_ACK) {
            ngx_cdp_arg(en->id.data, en->id.len);
            ngx_cdp_arg(en->pid.data ? en->pid.data : (u_char *) "",
                        en->pid.len);
            ngx_cdp_arg(en->sent.data ? en->sent.data : (u_char *) "",
                        en->sent.len);
        }
    }

    for (i = 0; i < d->nentries; i++) {
        en = &d->entries[i];

        if (en->state == NGX_CDP_ENTRY_DEAD) {
            ngx_cdp_arg(en->id.data, en->id.len);

            en->status = ngx_min((ngx_uint_t) en->status, 999);
            ngx_cdp_arg(p, ngx_sprintf(p, "%ui", en->status) - p);
            p += 4;

            ngx_cdp_arg(en->head.data ? en->head.data : (u_char *) "",
                        en->head.len);
        }
    }

    d->call.handler = ngx_cdp_deliver_acked;

    if (ngx_cdp_redis_call(&d->call, n, argv, lens) != NGX_OK) {
        /* Redis is away: the batch stays pending, read again */
        d->retry = 0;
        d->stage = NGX_CDP_DELIVER_NEW;
        ngx_cdp_deliver_after(d);
        return;
    }

    d->busy = 1;
}


static void
ngx_cdp_deliver_acked(ngx_cdp_redis_call_t *call, void *data)
{
    ngx_cdp_deliver_t  *d = call->data;
    redisReply         *reply = data;

    ngx_uint_t        i, delivered, dead, notices;
    ngx_cdp_entry_t  *en;

    d->busy = 0;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
        if (reply && reply->type == REDIS_REPLY_ERROR) {
            ngx_log_error(NGX_LOG_ERR, d->log, 0,
                          "cdp: destination \"%V\": cdp_dest_done failed: "
                          "%s", &d->dest->name, reply->str);
        }

        /*
         * the outcome is unknown: the entries are pending still and are
         * read again (a 2xx'd one may go out twice: at least once)
         */
        d->retry = 0;
        d->stage = NGX_CDP_DELIVER_NEW;
        ngx_cdp_deliver_after(d);
        return;
    }

    delivered = 0;
    dead = 0;
    notices = 0;

    for (i = 0; i < d->nentries; i++) {
        en = &d->entries[i];

        if (en->state == NGX_CDP_ENTRY_ACK && en->json.len) {
            if (en->notice) {
                notices++;

            } else {
                delivered++;
            }

        } else if (en->state == NGX_CDP_ENTRY_DEAD) {
            dead++;
        }
    }

    ngx_cdp_dest_count(d->dest, NGX_CDP_DC_DELIVERED, delivered);
    ngx_cdp_dest_count(d->dest, NGX_CDP_DC_NOTICES, notices);
    ngx_cdp_dest_count(d->dest, NGX_CDP_DC_DEAD, dead);

    ngx_cdp_deliver_after(d);
}


/* what comes after a batch: a retry, the next batch at once, or a rest */

static void
ngx_cdp_deliver_after(ngx_cdp_deliver_t *d)
{
    if (d->retry) {
        /* the pool stays: its entries' ids are claimed again */
        ngx_cdp_deliver_schedule(d, d->backoff / 2
                                    + ngx_random() % (d->backoff / 2 + 1));
        d->backoff = ngx_min(d->backoff * 2, NGX_CDP_DELIVER_BACKOFF_MAX);
        return;
    }

    if (d->pool) {
        ngx_destroy_pool(d->pool);
        d->pool = NULL;
    }

    d->nentries = 0;

    if (d->stage != NGX_CDP_DELIVER_LIVE || d->full) {
        ngx_cdp_deliver_schedule(d, 1);
        return;
    }

    ngx_cdp_deliver_schedule(d, d->dest->flush);
}


/* the stream's length and pending entries, for cdp_status, now and then */

static void
ngx_cdp_deliver_stats(ngx_cdp_deliver_t *d)
{
    const char  *argv[3];
    size_t       lens[3];

    d->stats_at = ngx_time();

    argv[0] = "XINFO";
    lens[0] = 5;
    argv[1] = "GROUPS";
    lens[1] = 6;
    argv[2] = (const char *) d->out_key.data;
    lens[2] = d->out_key.len;

    (void) ngx_cdp_redis_call(&d->groups, 3, argv, lens);

    argv[0] = "XLEN";
    lens[0] = 4;
    argv[1] = (const char *) d->out_key.data;
    lens[1] = d->out_key.len;

    (void) ngx_cdp_redis_call(&d->xlen, 2, argv, lens);
}


static void
ngx_cdp_deliver_stats_done(ngx_cdp_redis_call_t *call, void *data)
{
    ngx_cdp_deliver_t  *d = call->data;
    redisReply         *reply = data;

    size_t           i, k;
    redisReply      *g;
    ngx_atomic_t    *counters;

    counters = d->dest->counters;

    if (reply == NULL || counters == NULL) {
        return;
    }

    if (call == &d->xlen) {
        if (reply->type == REDIS_REPLY_INTEGER) {
            d->length = reply->integer;
            ngx_cdp_deliver_sums(d);
        }

        return;
    }

    if (reply->type != REDIS_REPLY_ARRAY) {
        return;
    }

    /* XINFO GROUPS: [[name, "cdp", consumers, N, pending, N, ...], ...] */

    for (i = 0; i < reply->elements; i++) {
        g = reply->element[i];

        if (g->type != REDIS_REPLY_ARRAY || g->elements < 6
            || g->element[1]->type != REDIS_REPLY_STRING
            || ngx_strcmp(g->element[1]->str, NGX_CDP_DELIVER_GROUP) != 0)
        {
            continue;
        }

        for (k = 0; k + 1 < g->elements; k += 2) {
            if (g->element[k]->type == REDIS_REPLY_STRING
                && ngx_strcmp(g->element[k]->str, "pending") == 0
                && g->element[k + 1]->type == REDIS_REPLY_INTEGER)
            {
                d->pending = g->element[k + 1]->integer;
                ngx_cdp_deliver_sums(d);
            }
        }
    }
}


/* the gauges of a destination: the sums over its shards' streams */

static void
ngx_cdp_deliver_sums(ngx_cdp_deliver_t *d)
{
    ngx_uint_t           i, length, pending;
    ngx_cdp_deliver_t  **dp;

    length = 0;
    pending = 0;
    dp = ngx_cdp_deliverers->elts;

    for (i = 0; i < ngx_cdp_deliverers->nelts; i++) {
        if (dp[i]->dest == d->dest) {
            length += dp[i]->length;
            pending += dp[i]->pending;
        }
    }

    d->dest->counters[NGX_CDP_DC_LENGTH] = length;
    d->dest->counters[NGX_CDP_DC_PENDING] = pending;
}


static void
ngx_cdp_deliver_ignore(ngx_cdp_redis_call_t *call, void *reply)
{
}


/*
 * The fake connection's "socket": the answer's first bytes are kept (a
 * dead letter shows them), everything counts as sent at once.
 */

static ngx_chain_t *
ngx_cdp_deliver_send_chain(ngx_connection_t *c, ngx_chain_t *in,
    off_t limit)
{
    size_t                  n;
    ngx_buf_t              *b;
    ngx_chain_t            *cl;
    ngx_cdp_deliver_req_t  *q;

    q = (ngx_cdp_deliver_req_t *) ((u_char *) c
                                   - offsetof(ngx_cdp_deliver_req_t, conn));

    for (cl = in; cl; cl = cl->next) {
        b = cl->buf;

        if (ngx_buf_special(b)) {
            continue;
        }

        if (b->in_file) {
            c->sent += b->file_last - b->file_pos;
            b->file_pos = b->file_last;
        }

        if (ngx_buf_in_memory(b)) {
            n = ngx_min((size_t) (b->last - b->pos),
                        NGX_CDP_DELIVER_HEAD - q->head_len);
            ngx_memcpy(q->head + q->head_len, b->pos, n);
            q->head_len += n;

            c->sent += b->last - b->pos;
            b->pos = b->last;
        }
    }

    return NULL;
}


static ssize_t
ngx_cdp_deliver_send_bytes(ngx_connection_t *c, u_char *buf, size_t size)
{
    return size;
}


/* ", destination: NAME, upstream: ..." after what nginx logs */

static u_char *
ngx_cdp_deliver_log_error(ngx_log_t *log, u_char *buf, size_t len)
{
    u_char                 *p;
    ngx_http_request_t     *sr;
    ngx_http_log_ctx_t     *ctx;
    ngx_cdp_deliver_req_t  *q;

    ctx = log->data;
    q = (ngx_cdp_deliver_req_t *) ((u_char *) ctx
                                   - offsetof(ngx_cdp_deliver_req_t, lctx));
    p = buf;

    if (log->action) {
        p = ngx_snprintf(p, len, " while %s", log->action);
        len -= p - buf;
        buf = p;
    }

    p = ngx_snprintf(p, len, ", destination: \"%V\"", &q->d->dest->name);
    len -= p - buf;
    buf = p;

    sr = ctx->current_request;

    if (sr && sr->upstream && sr->upstream->peer.name) {
        p = ngx_snprintf(p, len, ", upstream: \"%V\"",
                         sr->upstream->peer.name);
    }

    return p;
}
