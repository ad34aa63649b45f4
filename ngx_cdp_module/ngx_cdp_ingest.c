
/*
 * ngx_cdp: ingest, the batches of events a worker sends to the store
 * (ngx_cdp_ingest.h).
 *
 * A batch's way: the current batch (keys and args, RESP bulk strings)
 * becomes an ngx_cdp_batch_t when flushed, with the next sequence number
 * of the worker.  Then one of:
 *
 *   sent      one FCALL cdp_ingest written to the connection; the batch
 *             stays in memory, in the FIFO of batches in flight, until
 *             its reply;
 *   spooled   (cdp_spool) Redis is not ready, or the events in flight
 *             are over cdp_queue_size: one frame appended to the spool
 *             file, the batch freed;
 *   retried   (no spool) kept in memory until Redis is ready again.
 *
 * A batch in flight whose connection is lost, or that Redis refused for
 * now (no library yet, OOM, LOADING, BUSY), goes to the retry list and
 * is sent again once Redis is ready: the store skips it if it had applied
 * it ("APPLIED"), so nothing is counted twice.  The pump sends, when Redis
 * has room, the retry list first, then the spool's frames (at most
 * NGX_CDP_REPLAY_INFLIGHT at once, and only while the events in flight are
 * under half the queue: live traffic keeps its share).
 */


#include "ngx_http_cdp_module.h"
#include "ngx_cdp_http.h"
#include "ngx_cdp_dest.h"
#include "ngx_cdp_redis.h"
#include "ngx_cdp_resp.h"
#include "ngx_cdp_wire.h"
#include "ngx_cdp_spool.h"
#include "ngx_cdp_ingest.h"


#define NGX_CDP_FLUSH_DELAY       1
#define NGX_CDP_PUMP_INTERVAL     1000
#define NGX_CDP_RETRY_DELAY       1000
#define NGX_CDP_REPLAY_INFLIGHT   2

/* bytes a worker may hold for Redis, whatever cdp_queue_size says */
#define NGX_CDP_MAX_BUFFERED      (64 * 1024 * 1024)



typedef struct ngx_cdp_batch_s  ngx_cdp_batch_t;

struct ngx_cdp_batch_s {
    ngx_cdp_batch_t           *next;
    ngx_cdp_ingest_waiter_t   *waiters;     /* the API's: never retried */
    uint64_t                   seq;
    ngx_uint_t                 nevents;
    size_t                     keys_len;
    size_t                     args_len;
    unsigned                   tried:1;     /* sent at least once */
    u_char                     data[1];     /* keys, then args */
};



typedef struct {
    ngx_http_cdp_main_conf_t  *mcf;
    ngx_log_t                 *log;

    ngx_cdp_ingest_conf_t      conf;        /* this worker's batches */

    ngx_cdp_resp_buf_t         keys;        /* current batch: KEYS */
    ngx_cdp_resp_buf_t         args;        /* current batch: ARGV */
    ngx_uint_t                 batch;       /* events in the batch */
    ngx_cdp_ingest_waiter_t   *waiters;     /* of the current batch */
    ngx_uint_t                 hold;        /* no flush while filling */
    uint64_t                   seq;         /* the next batch's */

    ngx_uint_t                 queued;      /* events not acknowledged */
    ngx_uint_t                 inflight;    /* events sent, no reply yet */

    ngx_cdp_batch_t           *sent;        /* in flight, oldest first */
    ngx_cdp_batch_t          **sent_last;
    ngx_cdp_batch_t           *retry;       /* to send again */
    ngx_cdp_batch_t          **retry_last;

    ngx_uint_t                 replaying;   /* spool frames in flight */
    ngx_uint_t                 replay_stale;  /* replies to disregard */
    ngx_msec_t                 not_before;  /* Redis refused for now */

    ngx_event_t                flush_ev;
    ngx_event_t                pump_ev;
} ngx_cdp_ingest_t;


static void ngx_cdp_ingest_ready(void);
static void ngx_cdp_ingest_flush(ngx_cdp_ingest_t *ig);
static void ngx_cdp_ingest_pump(ngx_cdp_ingest_t *ig);
static ngx_int_t ngx_cdp_ingest_send(ngx_cdp_ingest_t *ig,
    ngx_cdp_batch_t *b);
static ngx_int_t ngx_cdp_ingest_fcall(ngx_cdp_ingest_conf_t *conf,
    uint64_t seq, ngx_uint_t n, u_char *keys, size_t keys_len, u_char *args,
    size_t args_len, ngx_cdp_redis_reply_pt handler, void *data);
static void ngx_cdp_ingest_batch_done(redisReply *reply, void *data);
static void ngx_cdp_ingest_replay_done(redisReply *reply, void *data);
static ngx_int_t ngx_cdp_ingest_counts(ngx_cdp_ingest_t *ig,
    redisReply *reply, ngx_uint_t n);
static ngx_uint_t ngx_cdp_ingest_retryable(ngx_cdp_ingest_t *ig,
    redisReply *reply);
static void ngx_cdp_ingest_keep(ngx_cdp_ingest_t *ig, ngx_cdp_batch_t *b);
static void ngx_cdp_ingest_done(ngx_cdp_ingest_t *ig, ngx_cdp_batch_t *b,
    ngx_int_t rc);
static void ngx_cdp_ingest_dequeued(ngx_cdp_ingest_t *ig, ngx_uint_t n);
static void ngx_cdp_ingest_wake(ngx_cdp_ingest_waiter_t *w, ngx_int_t rc);
static void ngx_cdp_ingest_flush_handler(ngx_event_t *ev);
static void ngx_cdp_ingest_pump_handler(ngx_event_t *ev);


static ngx_cdp_ingest_t  *ngx_cdp_ingest;

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
ngx_cdp_ingest_init_process(ngx_cycle_t *cycle, ngx_http_cdp_main_conf_t *mcf)
{
    u_char               *p;
    ngx_time_t           *tp;
    ngx_cdp_ingest_t     *ig;
    ngx_cdp_wire_conf_t   wc;

    ig = ngx_pcalloc(cycle->pool, sizeof(ngx_cdp_ingest_t));
    if (ig == NULL) {
        return NGX_ERROR;
    }

    ig->mcf = mcf;
    ig->log = cycle->log;
    ig->sent_last = &ig->sent;
    ig->retry_last = &ig->retry;

    /*
     * the worker's id, in its batch ids: unique across hosts, processes
     * and restarts (wall clock, not nginx's monotonic one)
     */

    tp = ngx_timeofday();

    ig->conf.writer.data = ngx_pnalloc(cycle->pool, cycle->hostname.len
                                       + 2 * NGX_INT64_LEN + 2);
    if (ig->conf.writer.data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_sprintf(ig->conf.writer.data, "%V:%P:%uL", &cycle->hostname,
                    ngx_pid, (uint64_t) tp->sec * 1000 + tp->msec);
    ig->conf.writer.len = p - ig->conf.writer.data;

    ig->conf.stream.len = mcf->prefix.len + sizeof(":events") - 1;
    ig->conf.stream.data = ngx_pnalloc(cycle->pool, ig->conf.stream.len);
    if (ig->conf.stream.data == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(ig->conf.stream.data, "%V:events", &mcf->prefix);

    ig->conf.once.len = mcf->prefix.len + sizeof(":once:") - 1
                        + ig->conf.writer.len + 1;
    ig->conf.once.data = ngx_pnalloc(cycle->pool, ig->conf.once.len);
    if (ig->conf.once.data == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(ig->conf.once.data, "%V:once:%V:", &mcf->prefix,
                &ig->conf.writer);

    /*
     * ARGV[1]: "maxlen limit_user_id limit_email limit_phone timeline_max
     * dedup aggregate_retention", then with destinations, facts or
     * segments "|<destinations>|<len>:<facts><len>:<segments>" and an
     * extra argument an event (its route and its fact)
     */

    ig->conf.argv1.data = ngx_pnalloc(cycle->pool,
                                      NGX_CDP_WIRE_ARGV1_MAX + 2
                                      + mcf->dest_spec.len
                                      + 2 * (NGX_SIZE_T_LEN + 1)
                                      + mcf->facts_spec.len
                                      + mcf->segments_spec.len);
    if (ig->conf.argv1.data == NULL) {
        return NGX_ERROR;
    }

    wc.maxlen = mcf->stream_maxlen;
    wc.limit_user_id = mcf->limit_user_id;
    wc.limit_email = mcf->limit_email;
    wc.limit_phone = mcf->limit_phone;
    wc.timeline_max = mcf->timeline_max;
    wc.dedup = mcf->dedup_window;
    wc.agg_retention = mcf->agg_retention;

    p = ngx_cdp_wire_argv1(ig->conf.argv1.data, &wc);

    ig->conf.nargs = 4;

    if (mcf->destinations || mcf->facts || mcf->segments) {
        p = ngx_sprintf(p, "|%V|%uz:%V%uz:%V", &mcf->dest_spec,
                        mcf->facts_spec.len, &mcf->facts_spec,
                        mcf->segments_spec.len, &mcf->segments_spec);
        ig->conf.nargs = 5;
    }

    ig->conf.argv1.len = p - ig->conf.argv1.data;

    ig->flush_ev.handler = ngx_cdp_ingest_flush_handler;
    ig->flush_ev.data = ig;
    ig->flush_ev.log = cycle->log;

    ig->pump_ev.handler = ngx_cdp_ingest_pump_handler;
    ig->pump_ev.data = ig;
    ig->pump_ev.log = cycle->log;
    ig->pump_ev.cancelable = 1;

    ngx_cdp_ingest = ig;

    if (mcf->spool) {
        if (ngx_cdp_spool_init_process(cycle, mcf, &ig->conf) != NGX_OK) {
            return NGX_ERROR;
        }

        ngx_add_timer(&ig->pump_ev, NGX_CDP_PUMP_INTERVAL);
    }

    return ngx_cdp_redis_init_process(cycle, &mcf->redis,
                                      mcf->spool ? &mcf->spool->name : NULL,
                                      ngx_cdp_ingest_ready);
}


/*
 * What is still in memory at exit goes to the spool: the batches in
 * flight (their replies will not be read; the store skips them if it had
 * applied them), those to retry, and the current one.
 */

void
ngx_cdp_ingest_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t         i, lost;
    ngx_cdp_batch_t   *b, *next, *lists[2];
    ngx_cdp_ingest_t  *ig;

    ig = ngx_cdp_ingest;
    if (ig == NULL) {
        return;
    }

    ig->hold = 0;
    ngx_cdp_ingest_flush(ig);

    lists[0] = ig->sent;
    lists[1] = ig->retry;
    ig->sent = NULL;
    ig->retry = NULL;

    lost = 0;

    for (i = 0; i < 2; i++) {
        for (b = lists[i]; b; b = next) {
            next = b->next;

            if (b->waiters == NULL && ig->mcf->spool) {
                (void) ngx_cdp_spool_write(b->seq, b->nevents, b->data,
                                           b->keys_len,
                                           b->data + b->keys_len,
                                           b->args_len);

            } else {
                /* sent but no reply: stored or not, nobody knows */
                ngx_cdp_count(b->tried ? NGX_CDP_C_DROP_UNCONFIRMED
                                       : NGX_CDP_C_DROP_REDIS_DOWN,
                              b->nevents);
                lost += b->nevents;
            }

            ngx_cdp_ingest_dequeued(ig, b->nevents);
            ngx_free(b);
        }
    }

    if (lost) {
        ngx_log_error(NGX_LOG_WARN, ig->log, 0,
                      "cdp: %ui events not acknowledged by redis at exit",
                      lost);
    }

    if (ig->mcf->spool) {
        ngx_cdp_spool_exit_process(cycle);
    }

    ngx_cdp_redis_exit_process(cycle);

    ngx_cdp_resp_free(&ig->keys);
    ngx_cdp_resp_free(&ig->args);

    ngx_cdp_ingest = NULL;
}


ngx_int_t
ngx_cdp_ingest_enqueue(ngx_str_t *key, ngx_uint_t kind, ngx_str_t *attrs,
    ngx_str_t *payload, ngx_str_t *route)
{
    size_t             klen;
    u_char            *p;
    ngx_time_t        *tp;
    ngx_cdp_ingest_t  *ig;
    u_char             ts[NGX_INT64_LEN];

    ig = ngx_cdp_ingest;

    if (ig == NULL || (ig->mcf->spool == NULL && ngx_cdp_redis_is_down()))
    {
        ngx_cdp_count(NGX_CDP_C_DROP_REDIS_DOWN, 1);
        return NGX_DECLINED;
    }

    klen = ig->mcf->prefix.len + 1 + key->len;

    if (ig->mcf->spool == NULL
        && (ig->queued >= ig->mcf->queue_size
            || ngx_cdp_redis_unsent()
               + (size_t) (ig->keys.last - ig->keys.pos)
               + (size_t) (ig->args.last - ig->args.pos)
               + payload->len > NGX_CDP_MAX_BUFFERED))
    {
        ngx_cdp_count(NGX_CDP_C_DROP_QUEUE_FULL, 1);
        return NGX_DECLINED;
    }

    tp = ngx_timeofday();
    p = ngx_sprintf(ts, "%uL", (uint64_t) tp->sec * 1000 + tp->msec);

    if (ngx_cdp_resp_reserve(&ig->keys, ngx_cdp_resp_bulk_size(klen)) != 0
        || ngx_cdp_resp_reserve(&ig->args,
                                ngx_cdp_resp_bulk_size(p - ts)
                                + ngx_cdp_resp_bulk_size(sizeof("track:new"))
                                + ngx_cdp_resp_bulk_size(attrs->len)
                                + ngx_cdp_resp_bulk_size(payload->len)
                                + ngx_cdp_resp_bulk_size(NGX_CDP_EXTRA_LEN))
           != 0)
    {
        ngx_cdp_count(NGX_CDP_C_DROP_QUEUE_FULL, 1);
        return NGX_DECLINED;
    }

    ig->keys.last = ngx_sprintf(ig->keys.last, "$%uz\r\n%V:%V\r\n",
                                klen, &ig->mcf->prefix, key);

    ig->args.last = ngx_cdp_resp_bulk(ig->args.last, ts, p - ts);
    ig->args.last = ngx_cdp_resp_bulk(ig->args.last,
                                      ngx_cdp_event_kinds[kind].data,
                                      ngx_cdp_event_kinds[kind].len);
    ig->args.last = ngx_cdp_resp_bulk(ig->args.last, attrs->data,
                                      attrs->len);
    ig->args.last = ngx_cdp_resp_bulk(ig->args.last, payload->data,
                                      payload->len);

    if (ig->conf.nargs == 5) {
        if (route) {
            ig->args.last = ngx_cdp_resp_bulk(ig->args.last, route->data,
                                              route->len);

        } else {
            ig->args.last = ngx_cdp_resp_bulk(ig->args.last,
                                              (u_char *) "", 0);
        }
    }

    ig->batch++;
    ig->queued++;
    ngx_cdp_count(NGX_CDP_C_ACCEPTED, 1);
    ngx_cdp_count(NGX_CDP_C_QUEUE_EVENTS, 1);

    if (ig->hold) {
        return NGX_OK;
    }

    if (ig->batch >= ig->mcf->batch_size) {
        ngx_cdp_ingest_flush(ig);

    } else if (!ig->flush_ev.timer_set) {
        ngx_add_timer(&ig->flush_ev, NGX_CDP_FLUSH_DELAY);
    }

    return NGX_OK;
}


void
ngx_cdp_ingest_argv1(ngx_str_t *argv1, ngx_str_t *stream)
{
    *argv1 = ngx_cdp_ingest->conf.argv1;
    *stream = ngx_cdp_ingest->conf.stream;
}


ngx_int_t
ngx_cdp_ingest_reserve(ngx_uint_t n, size_t size)
{
    ngx_cdp_ingest_t  *ig;

    ig = ngx_cdp_ingest;

    if (ig == NULL || !ngx_cdp_redis_is_ready()
        || ngx_current_msec < ig->not_before
        || ig->queued + n > ig->mcf->queue_size
        || ngx_cdp_redis_unsent()
           + (size_t) (ig->keys.last - ig->keys.pos)
           + (size_t) (ig->args.last - ig->args.pos)
           + size > NGX_CDP_MAX_BUFFERED)
    {
        return NGX_DECLINED;
    }

    /* the API's events are a batch of their own: never spooled */

    if (ig->batch) {
        ngx_cdp_ingest_flush(ig);
    }

    ig->hold = 1;

    return NGX_OK;
}


/* the caller gives up waiting: what it queued goes out as usual */

void
ngx_cdp_ingest_release(void)
{
    if (ngx_cdp_ingest) {
        ngx_cdp_ingest->hold = 0;
        ngx_cdp_ingest_flush(ngx_cdp_ingest);
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
ngx_cdp_ingest_wait(ngx_cdp_ingest_waiter_t *w)
{
    ngx_cdp_ingest_t  *ig;

    ig = ngx_cdp_ingest;
    ig->hold = 0;

    w->next = ig->waiters;
    ig->waiters = w;

    ngx_cdp_ingest_flush(ig);
}


static void
ngx_cdp_ingest_wake(ngx_cdp_ingest_waiter_t *w, ngx_int_t rc)
{
    ngx_cdp_ingest_waiter_t  *next;

    while (w) {
        next = w->next;
        w->handler(w, rc);
        w = next;
    }
}


/* Redis is ready, at connect and after every reconnect */

static void
ngx_cdp_ingest_ready(void)
{
    ngx_cdp_ingest_t  *ig = ngx_cdp_ingest;

    ig->not_before = 0;

    ngx_cdp_ingest_pump(ig);
    ngx_cdp_ingest_flush(ig);
}


static void
ngx_cdp_ingest_flush_handler(ngx_event_t *ev)
{
    ngx_cdp_ingest_flush(ev->data);
}


static void
ngx_cdp_ingest_pump_handler(ngx_event_t *ev)
{
    ngx_cdp_ingest_t  *ig = ev->data;

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    ngx_cdp_spool_scan();
    ngx_cdp_ingest_pump(ig);

    ngx_add_timer(ev, NGX_CDP_PUMP_INTERVAL);
}


/* the current batch becomes a batch of its own, sent, spooled or kept */

static void
ngx_cdp_ingest_flush(ngx_cdp_ingest_t *ig)
{
    size_t            keys, args;
    ngx_uint_t        ready;
    ngx_cdp_batch_t  *b;

    if (ig->batch == 0 || ig->hold) {
        return;
    }

    if (ig->flush_ev.timer_set) {
        ngx_del_timer(&ig->flush_ev);
    }

    keys = ig->keys.last - ig->keys.pos;
    args = ig->args.last - ig->args.pos;

    b = ngx_alloc(sizeof(ngx_cdp_batch_t) + keys + args, ig->log);
    if (b == NULL) {
        ngx_cdp_count(NGX_CDP_C_DROP_QUEUE_FULL, ig->batch);
        ngx_cdp_ingest_dequeued(ig, ig->batch);
        ngx_cdp_ingest_wake(ig->waiters, NGX_ERROR);
        goto reset;
    }

    b->next = NULL;
    b->waiters = ig->waiters;
    b->seq = ig->seq++;
    b->nevents = ig->batch;
    b->keys_len = keys;
    b->args_len = args;

    ngx_memcpy(b->data, ig->keys.pos, keys);
    ngx_memcpy(b->data + keys, ig->args.pos, args);

    if (b->waiters) {
        /* ngx_cdp_ingest_reserve() saw Redis ready */
        if (ngx_cdp_ingest_send(ig, b) != NGX_OK) {
            ngx_cdp_ingest_done(ig, b, NGX_ERROR);
        }

        goto reset;
    }

    ready = ngx_cdp_redis_is_ready() && ngx_current_msec >= ig->not_before;

    if (ready
        && (ig->mcf->spool == NULL
            || (ig->inflight + b->nevents <= ig->mcf->queue_size
                && ngx_cdp_redis_unsent() < NGX_CDP_MAX_BUFFERED))
        && ngx_cdp_ingest_send(ig, b) == NGX_OK)
    {
        goto reset;
    }

    /*
     * kept in memory while the connection is being made, and without a
     * spool (ngx_cdp_ingest_enqueue() bounds the queue then)
     */

    if (ig->mcf->spool
        && (ready || ngx_cdp_redis_is_down()
            || ngx_current_msec < ig->not_before
            || ig->queued > ig->mcf->queue_size))
    {
        (void) ngx_cdp_spool_write(b->seq, b->nevents, b->data, keys,
                                   b->data + keys, args);
        ngx_cdp_ingest_dequeued(ig, b->nevents);
        ngx_free(b);
        goto reset;
    }

    ngx_cdp_ingest_keep(ig, b);

reset:

    ig->keys.pos = ig->keys.start;
    ig->keys.last = ig->keys.start;
    ig->args.pos = ig->args.start;
    ig->args.last = ig->args.start;
    ig->batch = 0;
    ig->waiters = NULL;
}


/*
 * While Redis is ready and has room: the batches to retry, then the
 * spool's.  Never while nginx is exiting: what remains is spooled.
 */

static void
ngx_cdp_ingest_pump(ngx_cdp_ingest_t *ig)
{
    ngx_uint_t              sent;
    ngx_cdp_batch_t        *b;
    ngx_cdp_spool_batch_t   sb;

    if (!ngx_cdp_redis_is_ready() || ngx_current_msec < ig->not_before
        || ngx_exiting)
    {
        return;
    }

    sent = 0;

    while (ig->retry && ig->inflight < ig->mcf->queue_size) {
        b = ig->retry;
        ig->retry = b->next;

        if (ig->retry == NULL) {
            ig->retry_last = &ig->retry;
        }

        b->next = NULL;

        if (ngx_cdp_ingest_send(ig, b) != NGX_OK) {
            ngx_cdp_ingest_keep(ig, b);
            return;
        }

        ngx_cdp_count(NGX_CDP_C_RESENT, b->nevents);
        sent++;
    }

    if (ig->mcf->spool == NULL) {
        goto done;
    }

    while (ig->replaying < NGX_CDP_REPLAY_INFLIGHT
           && ig->inflight < ig->mcf->queue_size / 2
           && ngx_cdp_redis_unsent() < NGX_CDP_MAX_BUFFERED / 2)
    {
        if (ngx_cdp_spool_next(&sb) != NGX_OK) {
            break;
        }

        if (ngx_cdp_ingest_fcall(sb.conf, sb.seq, sb.nevents, sb.keys.data,
                                 sb.keys.len, sb.args.data, sb.args.len,
                                 ngx_cdp_ingest_replay_done,
                                 (void *) (uintptr_t) sb.nevents)
            != NGX_OK)
        {
            ngx_cdp_spool_rewind();
            break;
        }

        ig->replaying++;
        ig->inflight += sb.nevents;
        sent++;
    }

done:

    if (sent) {
        ngx_cdp_redis_send();
    }
}


static ngx_int_t
ngx_cdp_ingest_send(ngx_cdp_ingest_t *ig, ngx_cdp_batch_t *b)
{
    if (ngx_cdp_ingest_fcall(&ig->conf, b->seq, b->nevents, b->data,
                             b->keys_len, b->data + b->keys_len, b->args_len,
                             ngx_cdp_ingest_batch_done, b)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    *ig->sent_last = b;
    ig->sent_last = &b->next;

    b->tried = 1;

    ig->inflight += b->nevents;

    ngx_cdp_count(NGX_CDP_C_REDIS_BATCHES, 1);

    ngx_cdp_redis_send();

    return NGX_OK;
}


/*
 * FCALL cdp_ingest numkeys stream once key... argv1 bit (args)...: the
 * batch id is the bit "seq mod 2^20" of the key "<once><seq / 2^20>"
 */

static ngx_int_t
ngx_cdp_ingest_fcall(ngx_cdp_ingest_conf_t *conf, uint64_t seq, ngx_uint_t n,
    u_char *keys, size_t keys_len, u_char *args, size_t args_len,
    ngx_cdp_redis_reply_pt handler, void *data)
{
    size_t   len, blen;
    u_char  *p, num[NGX_INT64_LEN], block[NGX_INT64_LEN];

    blen = ngx_sprintf(block, "%uL", seq >> NGX_CDP_WIRE_ONCE_SHIFT) - block;

    len = NGX_CDP_RESP_ARRAY_SIZE
          + ngx_cdp_resp_bulk_size(sizeof("FCALL") - 1)
          + ngx_cdp_resp_bulk_size(sizeof("cdp_ingest") - 1)
          + ngx_cdp_resp_bulk_size(NGX_INT64_LEN)
          + ngx_cdp_resp_bulk_size(conf->stream.len)
          + ngx_cdp_resp_bulk_size(conf->once.len + blen)
          + keys_len
          + ngx_cdp_resp_bulk_size(conf->argv1.len)
          + ngx_cdp_resp_bulk_size(NGX_INT64_LEN)
          + args_len;

    p = ngx_cdp_redis_buffer(len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cdp_resp_array(p, 3 + (2 + n) + (2 + conf->nargs * n));
    p = ngx_cdp_resp_bulk(p, (u_char *) "FCALL", sizeof("FCALL") - 1);
    p = ngx_cdp_resp_bulk(p, (u_char *) "cdp_ingest",
                          sizeof("cdp_ingest") - 1);
    p = ngx_cdp_resp_bulk(p, num, ngx_sprintf(num, "%ui", 2 + n) - num);
    p = ngx_cdp_resp_bulk(p, conf->stream.data, conf->stream.len);
    p = ngx_sprintf(p, "$%uz\r\n%V%*s\r\n", conf->once.len + blen,
                    &conf->once, blen, block);
    p = ngx_cpymem(p, keys, keys_len);
    p = ngx_cdp_resp_bulk(p, conf->argv1.data, conf->argv1.len);
    p = ngx_cdp_resp_bulk(p, num,
                          ngx_sprintf(num, "%uL",
                                      seq & ((1 << NGX_CDP_WIRE_ONCE_SHIFT) - 1))
                          - num);
    p = ngx_cpymem(p, args, args_len);

    return ngx_cdp_redis_queue(p, handler, data);
}


static void
ngx_cdp_ingest_batch_done(redisReply *reply, void *data)
{
    ngx_cdp_batch_t   *b = data;
    ngx_cdp_ingest_t  *ig = ngx_cdp_ingest;

    /* replies come in order: b is the oldest batch in flight */

    ig->sent = b->next;
    if (ig->sent == NULL) {
        ig->sent_last = &ig->sent;
    }

    b->next = NULL;
    ig->inflight -= b->nevents;

    if (reply == NULL) {
        /* the connection is lost: the batch may or may not be stored */
        if (b->waiters) {
            ngx_cdp_count(NGX_CDP_C_DROP_UNCONFIRMED, b->nevents);
            ngx_cdp_ingest_done(ig, b, NGX_ERROR);

        } else {
            ngx_cdp_ingest_keep(ig, b);
        }

        return;
    }

    if (ngx_cdp_ingest_counts(ig, reply, b->nevents) != NGX_ERROR) {
        ngx_cdp_ingest_done(ig, b, NGX_OK);

    } else if (ngx_cdp_ingest_retryable(ig, reply) && b->waiters == NULL) {
        ngx_cdp_ingest_keep(ig, b);

    } else {
        ngx_cdp_count(NGX_CDP_C_DROP_REDIS_ERROR, b->nevents);
        ngx_cdp_ingest_done(ig, b, NGX_ERROR);
    }

    ngx_cdp_ingest_pump(ig);
}


static void
ngx_cdp_ingest_replay_done(redisReply *reply, void *data)
{
    ngx_uint_t         n = (uintptr_t) data;
    ngx_cdp_ingest_t  *ig = ngx_cdp_ingest;

    ngx_int_t          rc;

    ig->replaying--;
    ig->inflight -= n;

    if (reply == NULL) {
        ig->replay_stale = 0;
        ngx_cdp_spool_rewind();
        return;
    }

    if (ig->replay_stale) {
        /* sent before a rewind: sent again, and skipped if stored */
        ig->replay_stale--;
        (void) ngx_cdp_ingest_counts(ig, reply, n);
        return;
    }

    rc = ngx_cdp_ingest_counts(ig, reply, n);

    if (rc != NGX_ERROR) {
        if (rc == NGX_OK) {
            ngx_cdp_count(NGX_CDP_C_REPLAYED, n);
        }

        ngx_cdp_spool_acked();

    } else if (ngx_cdp_ingest_retryable(ig, reply)) {
        ig->replay_stale = ig->replaying;
        ngx_cdp_spool_rewind();

    } else {
        ngx_cdp_count(NGX_CDP_C_DROP_REDIS_ERROR, n);
        ngx_cdp_spool_acked();
    }

    ngx_cdp_ingest_pump(ig);
}


/*
 * The reply of a cdp_ingest: {stored, erased, merges, switches, refused,
 * malformed, duplicates, <destinations>...} added to the counters, or
 * "APPLIED" (NGX_DECLINED: the batch of n events was stored before,
 * its reply was lost).  NGX_ERROR: an error reply.
 */

static ngx_int_t
ngx_cdp_ingest_counts(ngx_cdp_ingest_t *ig, redisReply *reply, ngx_uint_t n)
{
    size_t      i;
    ngx_uint_t  v[7];

    if (reply->type == REDIS_REPLY_STATUS
        && ngx_strcmp(reply->str, "APPLIED") == 0)
    {
        ngx_cdp_count(NGX_CDP_C_ALREADY_APPLIED, n);
        return NGX_DECLINED;
    }

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

        ngx_cdp_dest_ingested(ig->mcf, reply, 7);

        return NGX_OK;
    }

    if (reply->type != REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, ig->log, 0,
                      "cdp: unexpected reply type %d to cdp_ingest",
                      reply->type);
        return NGX_ERROR;
    }

    /* FUNCTION FLUSH, or a Redis restarted without its data */

    if (ngx_strstr(reply->str, "Function not found")) {
        ngx_cdp_redis_load_library();
    }

    return NGX_ERROR;
}


/*
 * An error that says "not now": the function is not loaded yet, Redis is
 * out of memory, loading its data, busy or read-only (a failover).  The
 * store did nothing; the batch is sent again in a second.
 */

static ngx_uint_t
ngx_cdp_ingest_retryable(ngx_cdp_ingest_t *ig, redisReply *reply)
{
    ngx_uint_t         i;
    static const char *now[] = {
        "Function not found", "OOM ", "LOADING ", "BUSY ", "READONLY ",
        "MASTERDOWN ", "TRYAGAIN ", "CLUSTERDOWN ", "NOREPLICAS "
    };

    if (reply->type != REDIS_REPLY_ERROR) {
        return 0;
    }

    for (i = 0; i < sizeof(now) / sizeof(now[0]); i++) {
        if (ngx_strstr(reply->str, now[i])) {
            ig->not_before = ngx_current_msec + NGX_CDP_RETRY_DELAY;
            return 1;
        }
    }

    ngx_log_error(NGX_LOG_ERR, ig->log, 0, "cdp: redis cdp_ingest failed: %s",
                  reply->str);

    return 0;
}


/* to send again when Redis is ready */

static void
ngx_cdp_ingest_keep(ngx_cdp_ingest_t *ig, ngx_cdp_batch_t *b)
{
    b->next = NULL;
    *ig->retry_last = b;
    ig->retry_last = &b->next;
}


static void
ngx_cdp_ingest_done(ngx_cdp_ingest_t *ig, ngx_cdp_batch_t *b, ngx_int_t rc)
{
    ngx_cdp_ingest_dequeued(ig, b->nevents);
    ngx_cdp_ingest_wake(b->waiters, rc);
    ngx_free(b);
}


static void
ngx_cdp_ingest_dequeued(ngx_cdp_ingest_t *ig, ngx_uint_t n)
{
    ig->queued -= n;
    ngx_cdp_count(NGX_CDP_C_QUEUE_EVENTS, (ngx_atomic_int_t) -n);
}
