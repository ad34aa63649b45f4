
/*
 * ngx_cdp: ingest, the batches of events a worker sends to the store
 * (ngx_cdp_ingest.h).
 *
 * Shards (ngx_cdp_shard.h): every event's key carries the hash tag of its
 * shard ("profile:{<tag>}:<aid>", the browser's; "agg:{<tag>}:<day>" and
 * "consent_log:{<tag>}" of a shard taken in turn).  On Redis Cluster a
 * batch holds the events of one shard, so that its FCALL stays in one
 * slot; a standalone Redis takes every shard's events in one batch.
 *
 * A batch's way: the current batch of its shard (keys and args, RESP bulk
 * strings) becomes an ngx_cdp_batch_t when flushed, with the next
 * sequence number of the worker.  Then one of:
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
#include "ngx_cdp_shard.h"
#include "ngx_cdp_wire.h"
#include "ngx_cdp_spool.h"
#include "ngx_cdp_xid.h"
#include "ngx_cdp_ingest.h"


#define NGX_CDP_FLUSH_DELAY       1
#define NGX_CDP_PUMP_INTERVAL     1000
#define NGX_CDP_RETRY_DELAY       1000
#define NGX_CDP_REPLAY_INFLIGHT   2
#define NGX_CDP_WAIT_TIMEOUT      "100"     /* ms, three digits */
#define NGX_CDP_NOWAIT_TIME       1000      /* no WAIT after one timed out */

/* bytes a worker may hold for Redis, whatever cdp_queue_size says */
#define NGX_CDP_MAX_BUFFERED      (64 * 1024 * 1024)



typedef struct ngx_cdp_batch_s  ngx_cdp_batch_t;


/*
 * The API's waiters of one flush: woken when all its batches are done,
 * and the sagas their replies started (on a cluster)
 */
typedef struct {
    ngx_cdp_ingest_waiter_t   *waiters;
    ngx_uint_t                 pending;     /* batches and sagas not done,
                                               and holds */
    ngx_int_t                  rc;
} ngx_cdp_ingest_group_t;


struct ngx_cdp_batch_s {
    ngx_cdp_batch_t           *next;        /* the retry list */
    ngx_queue_t                queue;       /* in flight */
    ngx_cdp_ingest_group_t    *group;       /* the API's: never retried */
    ngx_uint_t                 slot;
    ngx_uint_t                 shard;
    uint64_t                   seq;
    ngx_uint_t                 nevents;
    size_t                     keys_len;
    size_t                     args_len;
    redisReply                *follow;      /* held until a replica has it;
                                               an API batch's holds its
                                               group too */
    unsigned                   tried:1;     /* sent at least once */
    u_char                     data[1];     /* keys, then args */
};



/* the current batch of a shard (of every shard on a standalone Redis) */
typedef struct {
    ngx_cdp_resp_buf_t         keys;        /* KEYS */
    ngx_cdp_resp_buf_t         args;        /* ARGV */
    ngx_uint_t                 batch;       /* events */
    ngx_uint_t                 shard;       /* of its first event */
} ngx_cdp_ingest_cur_t;


typedef struct {
    ngx_http_cdp_main_conf_t  *mcf;
    ngx_log_t                 *log;

    ngx_cdp_ingest_conf_t      conf;        /* this worker's batches */

    ngx_uint_t                 shards;
    ngx_str_t                 *tags;        /* a shard's "{<i>.<k>}" */
    ngx_uint_t                *slots;       /* a shard's slot */
    ngx_str_t                 *streams;     /* a shard's event stream */
    ngx_msec_t                *nowait;      /* no WAIT before, a shard */
    ngx_uint_t                 turn;        /* the shard of the next agg */

    ngx_cdp_ingest_cur_t      *cur;         /* a shard's, or one */
    ngx_uint_t                 ncur;
    ngx_uint_t                 batch;       /* events in the current ones */
    ngx_cdp_ingest_waiter_t   *waiters;     /* of the current batches */
    ngx_uint_t                 hold;        /* no flush while filling */
    uint64_t                   seq;         /* the next batch's */

    ngx_uint_t                 queued;      /* events not acknowledged */
    ngx_uint_t                 inflight;    /* events sent, no reply yet */

    ngx_queue_t                sent;        /* in flight */
    ngx_cdp_batch_t           *retry;       /* to send again */
    ngx_cdp_batch_t          **retry_last;

    ngx_uint_t                 replaying;   /* spool frames in flight */
    ngx_uint_t                 replay_stale;  /* replies to disregard */
    ngx_msec_t                 not_before;  /* Redis refused for now */
    ngx_uint_t                 warned_follow;

    ngx_event_t                flush_ev;
    ngx_event_t                pump_ev;
} ngx_cdp_ingest_t;


static void ngx_cdp_ingest_ready(void);
static ngx_int_t ngx_cdp_ingest_append(ngx_cdp_ingest_t *ig, ngx_str_t *key,
    ngx_uint_t kind, ngx_str_t *attrs, ngx_str_t *payload, ngx_str_t *route,
    ngx_uint_t counter);
static redisReply *ngx_cdp_ingest_detach(redisReply *reply);
static void ngx_cdp_ingest_follow_reply(ngx_cdp_ingest_t *ig,
    redisReply *reply);
static void ngx_cdp_ingest_free(ngx_cdp_batch_t *b);
static void ngx_cdp_ingest_take_held(ngx_cdp_ingest_t *ig);
static void ngx_cdp_ingest_follow(ngx_cdp_ingest_t *ig, redisReply *f,
    ngx_cdp_ingest_group_t *group);
static void ngx_cdp_ingest_flush(ngx_cdp_ingest_t *ig);
static void ngx_cdp_ingest_flush_one(ngx_cdp_ingest_t *ig,
    ngx_cdp_ingest_cur_t *cur, ngx_cdp_ingest_group_t *group);
static void ngx_cdp_ingest_reset(ngx_cdp_ingest_cur_t *cur);
static void ngx_cdp_ingest_group_done(ngx_cdp_ingest_group_t *group,
    ngx_int_t rc);
static void ngx_cdp_ingest_saga_done(void *data, ngx_int_t rc,
    ngx_str_t *result);
static ngx_int_t ngx_cdp_ingest_tag(u_char *keys, size_t len, ngx_str_t *tag);
static void ngx_cdp_ingest_pump(ngx_cdp_ingest_t *ig);
static ngx_int_t ngx_cdp_ingest_send(ngx_cdp_ingest_t *ig,
    ngx_cdp_batch_t *b);
static ngx_int_t ngx_cdp_ingest_fcall(ngx_cdp_ingest_conf_t *conf,
    uint64_t seq, ngx_uint_t n, u_char *keys, size_t keys_len, u_char *args,
    size_t args_len, ngx_cdp_redis_reply_pt handler, void *data);
static void ngx_cdp_ingest_batch_done(redisReply *reply, void *data);
static void ngx_cdp_ingest_replay_done(redisReply *reply, void *data);
static ngx_int_t ngx_cdp_ingest_replicate(ngx_cdp_ingest_t *ig,
    ngx_cdp_batch_t *b);
static void ngx_cdp_ingest_wait_done(redisReply *reply, void *data);
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
    ngx_uint_t            i;
    ngx_time_t           *tp;
    ngx_cdp_ingest_t     *ig;
    ngx_cdp_wire_conf_t   wc;

    ig = ngx_pcalloc(cycle->pool, sizeof(ngx_cdp_ingest_t));
    if (ig == NULL) {
        return NGX_ERROR;
    }

    ig->mcf = mcf;
    ig->log = cycle->log;
    ngx_queue_init(&ig->sent);
    ig->retry_last = &ig->retry;

    /* the shards' tags and slots; a current batch per shard on a cluster */

    ig->shards = mcf->redis.shards;
    ig->tags = ngx_pcalloc(cycle->pool, ig->shards * sizeof(ngx_str_t));
    ig->slots = ngx_pcalloc(cycle->pool, ig->shards * sizeof(ngx_uint_t));
    ig->streams = ngx_pcalloc(cycle->pool, ig->shards * sizeof(ngx_str_t));
    ig->nowait = ngx_pcalloc(cycle->pool, ig->shards * sizeof(ngx_msec_t));
    if (ig->tags == NULL || ig->slots == NULL || ig->streams == NULL
        || ig->nowait == NULL)
    {
        return NGX_ERROR;
    }

    for (i = 0; i < ig->shards; i++) {
        p = ngx_pnalloc(cycle->pool, NGX_CDP_SHARD_TAG_LEN + 2);
        if (p == NULL) {
            return NGX_ERROR;
        }

        ig->tags[i].data = p;
        *p++ = '{';
        p += ngx_cdp_shard_tag(i, ig->shards, p);
        *p++ = '}';
        ig->tags[i].len = p - ig->tags[i].data;

        ig->slots[i] = ngx_cdp_key_slot(ig->tags[i].data, ig->tags[i].len);

        ig->streams[i].data = ngx_pnalloc(cycle->pool, mcf->prefix.len
                                          + sizeof(":events:") - 1
                                          + ig->tags[i].len);
        if (ig->streams[i].data == NULL) {
            return NGX_ERROR;
        }

        ig->streams[i].len = ngx_sprintf(ig->streams[i].data, "%V:events:%V",
                                         &mcf->prefix, &ig->tags[i])
                             - ig->streams[i].data;
    }

    ig->ncur = mcf->redis.seeds ? ig->shards : 1;
    ig->cur = ngx_pcalloc(cycle->pool,
                          ig->ncur * sizeof(ngx_cdp_ingest_cur_t));
    if (ig->cur == NULL) {
        return NGX_ERROR;
    }

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
     * dedup aggregate_retention shards cluster" (ngx_cdp_wire.h), then
     * with destinations, facts or segments
     * "|<destinations>|<len>:<facts><len>:<segments>" and an extra
     * argument an event (its route and its fact)
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
    wc.shards = mcf->redis.shards;
    wc.cluster = mcf->redis.seeds ? 1 : 0;

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

    /* identity on a cluster: the sagas the replies hand back */

    if (ngx_cdp_xid_init_process(cycle, mcf, &ig->conf.argv1, ig->streams)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

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
    ngx_queue_t       *q;
    ngx_cdp_batch_t   *b, *next, *lists[2], **last;
    ngx_cdp_ingest_t  *ig;

    ig = ngx_cdp_ingest;
    if (ig == NULL) {
        return;
    }

    ig->hold = 0;

    /*
     * the follow-ups held for a WAIT that will not be read: taken now,
     * their forwards spooled with the current batches (a batch replayed
     * from the spool is "APPLIED", and hands nothing back then)
     */

    ngx_cdp_ingest_take_held(ig);

    ngx_cdp_ingest_flush(ig);

    /* in flight, oldest first, then those to retry */

    lists[0] = NULL;
    last = &lists[0];

    while (!ngx_queue_empty(&ig->sent)) {
        q = ngx_queue_head(&ig->sent);
        ngx_queue_remove(q);
        b = ngx_queue_data(q, ngx_cdp_batch_t, queue);
        b->next = NULL;
        *last = b;
        last = &b->next;
    }

    lists[1] = ig->retry;
    ig->retry = NULL;

    lost = 0;

    for (i = 0; i < 2; i++) {
        for (b = lists[i]; b; b = next) {
            next = b->next;

            if (b->group == NULL && ig->mcf->spool) {
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
            ngx_cdp_ingest_free(b);
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

    /* after the transport: no reply of a saga comes any more */
    ngx_cdp_xid_exit_process(cycle);

    for (i = 0; i < ig->ncur; i++) {
        ngx_cdp_resp_free(&ig->cur[i].keys);
        ngx_cdp_resp_free(&ig->cur[i].args);
    }

    ngx_cdp_ingest = NULL;
}


ngx_int_t
ngx_cdp_ingest_enqueue(ngx_str_t *key, ngx_uint_t kind, ngx_str_t *attrs,
    ngx_str_t *payload, ngx_str_t *route)
{
    ngx_cdp_ingest_t  *ig;

    ig = ngx_cdp_ingest;

    if (ig == NULL) {
        ngx_cdp_count(NGX_CDP_C_DROP_REDIS_DOWN, 1);
        return NGX_DECLINED;
    }

    return ngx_cdp_ingest_append(ig, key, kind, attrs, payload, route,
                                 NGX_CDP_C_ACCEPTED);
}


/*
 * An event into the current batch of its shard; counter: accepted, or
 * forwarded for an event the store handed back (accepted once already).
 */

static ngx_int_t
ngx_cdp_ingest_append(ngx_cdp_ingest_t *ig, ngx_str_t *key, ngx_uint_t kind,
    ngx_str_t *attrs, ngx_str_t *payload, ngx_str_t *route,
    ngx_uint_t counter)
{
    size_t                 klen, head;
    u_char                *p, *colon;
    ngx_str_t             *tag;
    ngx_uint_t             shard;
    ngx_time_t            *tp;
    ngx_cdp_ingest_cur_t  *cur;
    u_char                 ts[NGX_INT64_LEN];

    /*
     * the shard: a browser's ("profile:<aid>" becomes
     * "profile:{<tag>}:<aid>"), else the next in turn ("agg:<day>"
     * becomes "agg:{<tag>}:<day>", "consent_log" "consent_log:{<tag>}")
     */

    colon = ngx_strlchr(key->data, key->data + key->len, ':');
    head = colon ? (size_t) (colon - key->data) : key->len;

    if (head == sizeof("profile") - 1
        && ngx_strncmp(key->data, "profile", head) == 0)
    {
        shard = ngx_cdp_shard_of(key->data + head + 1, key->len - head - 1,
                                 ig->shards);

    } else {
        shard = ig->turn++ % ig->shards;
    }

    tag = &ig->tags[shard];

    if (ig->mcf->spool == NULL
        && ngx_cdp_redis_is_down_slot(ig->slots[shard]))
    {
        ngx_cdp_count(NGX_CDP_C_DROP_REDIS_DOWN, 1);
        return NGX_DECLINED;
    }

    cur = &ig->cur[ig->ncur > 1 ? shard : 0];

    klen = ig->mcf->prefix.len + 1 + key->len + 1 + tag->len;

    if (ig->mcf->spool == NULL
        && (ig->queued >= ig->mcf->queue_size
            || ngx_cdp_redis_unsent()
               + (size_t) (cur->keys.last - cur->keys.pos)
               + (size_t) (cur->args.last - cur->args.pos)
               + payload->len > NGX_CDP_MAX_BUFFERED))
    {
        ngx_cdp_count(NGX_CDP_C_DROP_QUEUE_FULL, 1);
        return NGX_DECLINED;
    }

    tp = ngx_timeofday();
    p = ngx_sprintf(ts, "%uL", (uint64_t) tp->sec * 1000 + tp->msec);

    if (ngx_cdp_resp_reserve(&cur->keys, ngx_cdp_resp_bulk_size(klen)) != 0
        || ngx_cdp_resp_reserve(&cur->args,
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

    if (colon) {
        cur->keys.last = ngx_sprintf(cur->keys.last,
                                     "$%uz\r\n%V:%*s:%V%*s\r\n", klen,
                                     &ig->mcf->prefix, head, key->data, tag,
                                     key->len - head, colon);

    } else {
        cur->keys.last = ngx_sprintf(cur->keys.last, "$%uz\r\n%V:%V:%V\r\n",
                                     klen, &ig->mcf->prefix, key, tag);
    }

    cur->args.last = ngx_cdp_resp_bulk(cur->args.last, ts, p - ts);
    cur->args.last = ngx_cdp_resp_bulk(cur->args.last,
                                       ngx_cdp_event_kinds[kind].data,
                                       ngx_cdp_event_kinds[kind].len);
    cur->args.last = ngx_cdp_resp_bulk(cur->args.last, attrs->data,
                                       attrs->len);
    cur->args.last = ngx_cdp_resp_bulk(cur->args.last, payload->data,
                                       payload->len);

    if (ig->conf.nargs == 5) {
        if (route) {
            cur->args.last = ngx_cdp_resp_bulk(cur->args.last, route->data,
                                               route->len);

        } else {
            cur->args.last = ngx_cdp_resp_bulk(cur->args.last,
                                               (u_char *) "", 0);
        }
    }

    if (cur->batch++ == 0) {
        cur->shard = shard;
    }

    ig->batch++;
    ig->queued++;
    ngx_cdp_count(counter, 1);
    ngx_cdp_count(NGX_CDP_C_QUEUE_EVENTS, 1);

    if (ig->hold) {
        return NGX_OK;
    }

    if (cur->batch >= ig->mcf->batch_size) {
        ig->batch -= cur->batch;
        ngx_cdp_ingest_flush_one(ig, cur, NULL);

        if (ig->batch == 0 && ig->flush_ev.timer_set) {
            ngx_del_timer(&ig->flush_ev);
        }

    } else if (!ig->flush_ev.timer_set) {
        ngx_add_timer(&ig->flush_ev, NGX_CDP_FLUSH_DELAY);
    }

    return NGX_OK;
}


/* cdp_ingest's ARGV[1]; the event stream of a shard, for other calls */

void
ngx_cdp_ingest_argv1(ngx_str_t *argv1, ngx_str_t *stream, ngx_uint_t shard)
{
    ngx_cdp_ingest_t  *ig = ngx_cdp_ingest;

    *argv1 = ig->conf.argv1;
    *stream = ig->streams[shard % ig->shards];
}


/*
 * A key of the sharded layout (store/README.md): "<prefix>:<kind>:{<tag>}"
 * of shard, or with an id "<prefix>:<kind>:{<tag>}:<id>" of the id's shard
 * (a profile id's, an identifier hash's).
 */

ngx_int_t
ngx_cdp_ingest_key(ngx_pool_t *pool, ngx_http_cdp_main_conf_t *mcf,
    const char *kind, u_char *id, size_t len, ngx_uint_t shard,
    ngx_str_t *key)
{
    size_t   klen;
    u_char  *p;

    if (id) {
        shard = ngx_cdp_shard_of(id, len, mcf->redis.shards);
    }

    klen = mcf->prefix.len + 1 + ngx_strlen(kind) + 2
           + NGX_CDP_SHARD_TAG_LEN + 2 + (id ? 1 + len : 0);

    key->data = ngx_pnalloc(pool, klen);
    if (key->data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_sprintf(key->data, "%V:%s:{", &mcf->prefix, kind);
    p += ngx_cdp_shard_tag(shard % mcf->redis.shards, mcf->redis.shards, p);
    *p++ = '}';

    if (id) {
        *p++ = ':';
        p = ngx_cpymem(p, id, len);
    }

    key->len = p - key->data;

    return NGX_OK;
}


ngx_int_t
ngx_cdp_ingest_reserve(ngx_uint_t n, size_t size)
{
    ngx_cdp_ingest_t  *ig;

    ig = ngx_cdp_ingest;

    if (ig == NULL || !ngx_cdp_redis_is_ready()
        || ngx_current_msec < ig->not_before
        || ig->queued + n > ig->mcf->queue_size
        || ngx_cdp_redis_unsent() + size > NGX_CDP_MAX_BUFFERED)
    {
        return NGX_DECLINED;
    }

    /* the API's events are batches of their own: never spooled */

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
 * w waits for the batches that hold the events just enqueued (one per
 * shard on a cluster) and the sagas their replies start (a cluster's
 * identity): its handler is called once, with NGX_OK when Redis
 * acknowledged them all (and, on masters with replicas, a replica has
 * them), with NGX_ERROR when one failed or its connection was lost.  The
 * batches are flushed at once.  w stays the caller's until then; its
 * data may be set to NULL meanwhile (the request went away) and is not
 * looked at here.
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


/* the current batches become batches of their own, sent, spooled or kept */

static void
ngx_cdp_ingest_flush(ngx_cdp_ingest_t *ig)
{
    ngx_uint_t               i;
    ngx_cdp_ingest_group_t  *group;

    if (ig->batch == 0 || ig->hold) {
        return;
    }

    if (ig->flush_ev.timer_set) {
        ngx_del_timer(&ig->flush_ev);
    }

    group = NULL;

    if (ig->waiters) {
        group = ngx_alloc(sizeof(ngx_cdp_ingest_group_t), ig->log);
        if (group == NULL) {
            for (i = 0; i < ig->ncur; i++) {
                ngx_cdp_count(NGX_CDP_C_DROP_QUEUE_FULL, ig->cur[i].batch);
                ngx_cdp_ingest_dequeued(ig, ig->cur[i].batch);
                ngx_cdp_ingest_reset(&ig->cur[i]);
            }

            ngx_cdp_ingest_wake(ig->waiters, NGX_ERROR);
            ig->waiters = NULL;
            ig->batch = 0;
            return;
        }

        /* one for this loop: no batch's end frees it before the last */

        group->waiters = ig->waiters;
        group->pending = 1;
        group->rc = NGX_OK;

        ig->waiters = NULL;
    }

    for (i = 0; i < ig->ncur; i++) {
        if (ig->cur[i].batch) {
            ngx_cdp_ingest_flush_one(ig, &ig->cur[i], group);
        }
    }

    ig->batch = 0;

    if (group) {
        ngx_cdp_ingest_group_done(group, NGX_OK);
    }
}


static void
ngx_cdp_ingest_flush_one(ngx_cdp_ingest_t *ig, ngx_cdp_ingest_cur_t *cur,
    ngx_cdp_ingest_group_t *group)
{
    size_t            keys, args;
    ngx_uint_t        ready, slot;
    ngx_cdp_batch_t  *b;

    keys = cur->keys.last - cur->keys.pos;
    args = cur->args.last - cur->args.pos;
    slot = ig->slots[cur->shard];

    b = ngx_alloc(sizeof(ngx_cdp_batch_t) + keys + args, ig->log);
    if (b == NULL) {
        ngx_cdp_count(NGX_CDP_C_DROP_QUEUE_FULL, cur->batch);
        ngx_cdp_ingest_dequeued(ig, cur->batch);

        if (group) {
            group->rc = NGX_ERROR;
        }

        goto reset;
    }

    b->next = NULL;
    b->group = group;
    b->follow = NULL;
    b->slot = slot;
    b->shard = cur->shard;
    b->seq = ig->seq++;
    b->nevents = cur->batch;
    b->keys_len = keys;
    b->args_len = args;
    b->tried = 0;

    ngx_memcpy(b->data, cur->keys.pos, keys);
    ngx_memcpy(b->data + keys, cur->args.pos, args);

    if (group) {
        group->pending++;

        /*
         * ngx_cdp_ingest_reserve() saw Redis ready (every master, on a
         * cluster); out of memory, or the map changed meanwhile: dropped
         */
        if (ngx_cdp_ingest_send(ig, b) != NGX_OK) {
            ngx_cdp_count(NGX_CDP_C_DROP_REDIS_DOWN, b->nevents);
            ngx_cdp_ingest_done(ig, b, NGX_ERROR);
        }

        goto reset;
    }

    ready = ngx_cdp_redis_is_ready_slot(slot)
            && ngx_current_msec >= ig->not_before;

    if (ready
        && (ig->mcf->spool == NULL
            || (ig->inflight + b->nevents <= ig->mcf->queue_size
                && ngx_cdp_redis_unsent_slot(slot) < NGX_CDP_MAX_BUFFERED))
        && ngx_cdp_ingest_send(ig, b) == NGX_OK)
    {
        goto reset;
    }

    /*
     * kept in memory while the connection is being made, and without a
     * spool (ngx_cdp_ingest_enqueue() bounds the queue then)
     */

    if (ig->mcf->spool
        && (ready || ngx_cdp_redis_is_down_slot(slot)
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

    ngx_cdp_ingest_reset(cur);
}


static void
ngx_cdp_ingest_reset(ngx_cdp_ingest_cur_t *cur)
{
    cur->keys.pos = cur->keys.start;
    cur->keys.last = cur->keys.start;
    cur->args.pos = cur->args.start;
    cur->args.last = cur->args.start;
    cur->batch = 0;
}


/*
 * While Redis is ready and has room: the batches to retry, then the
 * spool's.  Never while nginx is exiting: what remains is spooled.
 */

static void
ngx_cdp_ingest_pump(ngx_cdp_ingest_t *ig)
{
    ngx_int_t               rc;
    ngx_uint_t              sent;
    ngx_cdp_batch_t        *b, *list;
    ngx_cdp_spool_batch_t   sb;

    if (ngx_current_msec < ig->not_before || ngx_exiting) {
        return;
    }

    sent = 0;

    /* those whose master is ready; the others wait, in order */

    list = ig->retry;
    ig->retry = NULL;
    ig->retry_last = &ig->retry;

    while (list) {
        b = list;
        list = b->next;
        b->next = NULL;

        if (ig->inflight >= ig->mcf->queue_size
            || !ngx_cdp_redis_is_ready_slot(b->slot)
            || ngx_cdp_ingest_send(ig, b) != NGX_OK)
        {
            ngx_cdp_ingest_keep(ig, b);
            continue;
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

        rc = ngx_cdp_ingest_fcall(sb.conf, sb.seq, sb.nevents, sb.keys.data,
                                  sb.keys.len, sb.args.data, sb.args.len,
                                  ngx_cdp_ingest_replay_done,
                                  (void *) (uintptr_t) sb.nevents);

        if (rc == NGX_ABORT) {
            /* written before the keys had shards: store/README, Upgrading */
            ngx_log_error(NGX_LOG_ERR, ig->log, 0,
                          "cdp: a spooled batch of %ui events has keys "
                          "without a shard (written by an older ngx_cdp): "
                          "dropped", sb.nevents);
            ngx_cdp_count(NGX_CDP_C_DROP_REDIS_ERROR, sb.nevents);
            ngx_cdp_spool_acked();
            continue;
        }

        if (rc != NGX_OK) {
            /* its master is not ready, or out of memory */
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

    ngx_queue_insert_tail(&ig->sent, &b->queue);

    b->tried = 1;

    ig->inflight += b->nevents;

    ngx_cdp_count(NGX_CDP_C_REDIS_BATCHES, 1);

    ngx_cdp_redis_send();

    return NGX_OK;
}


/*
 * The hash tag of a batch's keys, from its first key (RESP bulk strings:
 * "$<len>\r\n<prefix>:<kind>:{<tag>}...\r\n"), with its braces.
 */

static ngx_int_t
ngx_cdp_ingest_tag(u_char *keys, size_t len, ngx_str_t *tag)
{
    u_char  *p, *last, *open, *close;

    last = keys + len;

    p = ngx_strlchr(keys, last, '\n');
    if (p == NULL) {
        return NGX_ERROR;
    }

    last = ngx_strlchr(p, last, '\r');
    if (last == NULL) {
        return NGX_ERROR;
    }

    open = ngx_strlchr(p, last, '{');
    close = open ? ngx_strlchr(open, last, '}') : NULL;

    if (close == NULL || close == open + 1) {
        return NGX_ERROR;
    }

    tag->data = open;
    tag->len = close + 1 - open;

    return NGX_OK;
}


/*
 * FCALL cdp_ingest numkeys stream once key... argv1 bit (args)...: the
 * stream "<prefix>:events:{<tag>}" and the once key
 * "<prefix>:once:{<tag>}:<writer>:<seq / 2^20>" of the batch's shard (the
 * tag of its first key), the batch id the bit "seq mod 2^20".  Sent to
 * the master of the shard's slot: NGX_DECLINED when it is not ready,
 * NGX_ABORT when the keys have no shard (a spool of an older version).
 */

static ngx_int_t
ngx_cdp_ingest_fcall(ngx_cdp_ingest_conf_t *conf, uint64_t seq, ngx_uint_t n,
    u_char *keys, size_t keys_len, u_char *args, size_t args_len,
    ngx_cdp_redis_reply_pt handler, void *data)
{
    size_t      len, blen, plen;
    u_char     *p, num[NGX_INT64_LEN], block[NGX_INT64_LEN];
    ngx_str_t   tag;
    ngx_uint_t  slot;

    if (ngx_cdp_ingest_tag(keys, keys_len, &tag) != NGX_OK) {
        return NGX_ABORT;
    }

    /* "<prefix>:once:" of conf->once, "<prefix>:once:<writer>:" */

    if (conf->stream.len < sizeof(":events") - 1) {
        return NGX_ABORT;
    }

    plen = conf->stream.len - (sizeof(":events") - 1)
           + sizeof(":once:") - 1;

    if (conf->once.len < plen) {
        return NGX_ABORT;
    }

    slot = ngx_cdp_key_slot(tag.data, tag.len);

    if (!ngx_cdp_redis_is_ready_slot(slot)) {
        return NGX_DECLINED;
    }

    blen = ngx_sprintf(block, "%uL", seq >> NGX_CDP_WIRE_ONCE_SHIFT) - block;

    len = NGX_CDP_RESP_ARRAY_SIZE
          + ngx_cdp_resp_bulk_size(sizeof("FCALL") - 1)
          + ngx_cdp_resp_bulk_size(sizeof("cdp_ingest") - 1)
          + ngx_cdp_resp_bulk_size(NGX_INT64_LEN)
          + ngx_cdp_resp_bulk_size(conf->stream.len + 1 + tag.len)
          + ngx_cdp_resp_bulk_size(conf->once.len + tag.len + 1 + blen)
          + keys_len
          + ngx_cdp_resp_bulk_size(conf->argv1.len)
          + ngx_cdp_resp_bulk_size(NGX_INT64_LEN)
          + args_len;

    p = ngx_cdp_redis_buffer_slot(slot, len);
    if (p == NULL) {
        return NGX_DECLINED;
    }

    p = ngx_cdp_resp_array(p, 3 + (2 + n) + (2 + conf->nargs * n));
    p = ngx_cdp_resp_bulk(p, (u_char *) "FCALL", sizeof("FCALL") - 1);
    p = ngx_cdp_resp_bulk(p, (u_char *) "cdp_ingest",
                          sizeof("cdp_ingest") - 1);
    p = ngx_cdp_resp_bulk(p, num, ngx_sprintf(num, "%ui", 2 + n) - num);
    p = ngx_sprintf(p, "$%uz\r\n%V:%V\r\n", conf->stream.len + 1 + tag.len,
                    &conf->stream, &tag);
    p = ngx_sprintf(p, "$%uz\r\n%*s%V:%*s%*s\r\n",
                    conf->once.len + tag.len + 1 + blen,
                    plen, conf->once.data, &tag,
                    conf->once.len - plen, conf->once.data + plen,
                    blen, block);
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
    ngx_cdp_batch_t         *b = data;
    ngx_cdp_ingest_t        *ig = ngx_cdp_ingest;

    ngx_int_t                rc;
    redisReply              *follow;
    ngx_cdp_ingest_group_t  *group;

    /* replies come in order per master, not across them */

    ngx_queue_remove(&b->queue);

    b->next = NULL;
    ig->inflight -= b->nevents;

    if (reply == NULL) {
        /* the connection is lost: the batch may or may not be stored */
        if (b->group) {
            ngx_cdp_count(NGX_CDP_C_DROP_UNCONFIRMED, b->nevents);
            ngx_cdp_ingest_done(ig, b, NGX_ERROR);

        } else {
            ngx_cdp_ingest_keep(ig, b);
        }

        return;
    }

    rc = ngx_cdp_ingest_counts(ig, reply, b->nevents);

    if (rc != NGX_ERROR) {

        /*
         * the API's group is held until the follow-ups are taken: the
         * batch's end (now, or when a replica has it) must not wake the
         * waiters and free the group before the sagas of its messages
         * are added to it
         */

        group = b->group;

        if (group) {
            group->pending++;
        }

        /*
         * What the store hands back: this reply's, or, when it says the
         * batch was applied before ("APPLIED": sent again after its WAIT
         * was lost), those of that application, held since
         */

        if (rc == NGX_OK) {
            follow = ngx_cdp_ingest_detach(reply);

            if (b->follow) {
                freeReplyObject(b->follow);
            }

            b->follow = follow;
        }

        if (ngx_cdp_ingest_replicate(ig, b) == NGX_OK) {
            /*
             * kept (and spooled at exit) until a replica has it, and so
             * are its follow-ups: taken then, so that a batch applied
             * again by a replica promoted meanwhile (which never saw it)
             * does not forward its events or start its sagas twice
             */
            ngx_queue_insert_tail(&ig->sent, &b->queue);

            if (b->follow) {
                /* its group is released when they are taken */
                group = NULL;
            }

            follow = NULL;

            /* b may be done (and freed) by this, if the write fails */
            ngx_cdp_redis_send();

        } else {
            follow = b->follow;
            b->follow = NULL;
            ngx_cdp_ingest_done(ig, b, NGX_OK);
        }

        /*
         * the batch is settled (b is not looked at again): what the
         * store handed back may be queued, flushed and sent now
         */

        if (follow) {
            ngx_cdp_ingest_follow(ig, follow, group);
            freeReplyObject(follow);
        }

        if (group) {
            ngx_cdp_ingest_group_done(group, NGX_OK);
        }

    } else if (ngx_cdp_ingest_retryable(ig, reply) && b->group == NULL) {
        ngx_cdp_ingest_keep(ig, b);

    } else {
        ngx_cdp_count(NGX_CDP_C_DROP_REDIS_ERROR, b->nevents);
        ngx_cdp_ingest_done(ig, b, NGX_ERROR);
    }

    ngx_cdp_ingest_pump(ig);
}


/*
 * A master with replicas: the batch it applied is done once a replica has
 * it too (WAIT 1, on the connection that wrote it), so that a failover to
 * a replica that never saw it does not lose it: until then the batch is
 * kept, and sent again (to the new master) if the connection is lost;
 * the store applies it once.  A replica that does not answer within
 * NGX_CDP_WAIT_TIMEOUT: the batch is done (counted as unreplicated), the
 * API's batches fail (503, the client retries), and the shard's batches
 * do not wait for NGX_CDP_NOWAIT_TIME (a WAIT holds every later reply of
 * the connection).  Batches replayed from the spool do not wait.
 */

static ngx_int_t
ngx_cdp_ingest_replicate(ngx_cdp_ingest_t *ig, ngx_cdp_batch_t *b)
{
    u_char  *p;

    static u_char  wait[] = "*3\r\n$4\r\nWAIT\r\n$1\r\n1\r\n$3\r\n"
                            NGX_CDP_WAIT_TIMEOUT "\r\n";

    if (ngx_cdp_redis_replicas_slot(b->slot) == 0
        || !ngx_cdp_redis_is_ready_slot(b->slot))
    {
        return NGX_DECLINED;
    }

    /*
     * a WAIT holds the connection's later replies: after one that timed
     * out (a replica stopped or lagging), the shard's batches do not wait
     * for a while (counted as unreplicated); the API's always do
     */

    if (b->group == NULL && ngx_current_msec < ig->nowait[b->shard]) {
        ngx_cdp_count(NGX_CDP_C_UNREPLICATED, 1);
        return NGX_DECLINED;
    }

    p = ngx_cdp_redis_buffer_slot(b->slot, sizeof(wait) - 1);
    if (p == NULL) {
        return NGX_DECLINED;
    }

    p = ngx_cpymem(p, wait, sizeof(wait) - 1);

    if (ngx_cdp_redis_queue(p, ngx_cdp_ingest_wait_done, b) != NGX_OK) {
        return NGX_DECLINED;
    }

    /*
     * not sent here: a write that fails calls the handlers of what is
     * pending at once, ngx_cdp_ingest_wait_done() with it, which needs
     * the batch in ig->sent first (the caller sends)
     */

    return NGX_OK;
}


static void
ngx_cdp_ingest_wait_done(redisReply *reply, void *data)
{
    ngx_cdp_batch_t   *b = data;
    ngx_cdp_ingest_t  *ig = ngx_cdp_ingest;

    ngx_int_t                rc;
    redisReply              *follow;
    ngx_cdp_ingest_group_t  *group;

    ngx_queue_remove(&b->queue);

    if (reply == NULL && b->group == NULL) {
        /*
         * applied, perhaps not replicated: again, to whoever has the
         * slot (its follow-ups held: the store answers "APPLIED" if it
         * has the batch, or applies it and hands back its own)
         */
        ngx_cdp_ingest_keep(ig, b);
        return;
    }

    if (reply == NULL) {
        /* the API's: 503, the client sends it again */
        ngx_cdp_count(NGX_CDP_C_DROP_UNCONFIRMED, b->nevents);
        rc = NGX_ERROR;

    } else if (reply->type == REDIS_REPLY_INTEGER && reply->integer >= 1) {
        rc = NGX_OK;

    } else {
        ngx_cdp_count(NGX_CDP_C_UNREPLICATED, 1);
        ig->nowait[b->shard] = ngx_current_msec + NGX_CDP_NOWAIT_TIME;
        rc = b->group ? NGX_ERROR : NGX_OK;
    }

    /*
     * the follow-ups of a batch done: taken (an API batch that failed
     * leaves them: its client sends its messages again); the group that
     * waits for them is held until they are
     */

    follow = b->follow;
    group = follow ? b->group : NULL;
    b->follow = NULL;

    ngx_cdp_ingest_done(ig, b, rc);

    if (follow) {
        if (rc == NGX_OK) {
            ngx_cdp_ingest_follow(ig, follow, group);
        }

        freeReplyObject(follow);
    }

    if (group) {
        ngx_cdp_ingest_group_done(group, rc);
    }
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
        /*
         * sent before a rewind: sent again, and skipped if stored, as
         * it is when this reply counts it ("APPLIED" then, without
         * follow-ups): what it hands back is taken from this one
         */
        ig->replay_stale--;

        if (ngx_cdp_ingest_counts(ig, reply, n) == NGX_OK) {
            ngx_cdp_ingest_follow_reply(ig, reply);
        }

        return;
    }

    rc = ngx_cdp_ingest_counts(ig, reply, n);

    if (rc != NGX_ERROR) {
        ngx_cdp_spool_acked();

        if (rc == NGX_OK) {
            ngx_cdp_count(NGX_CDP_C_REPLAYED, n);
            ngx_cdp_ingest_follow_reply(ig, reply);
        }

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
 * malformed, duplicates, <destinations>... [, follow-ups]} added to the
 * counters (the follow-ups are ngx_cdp_ingest_follow()'s), or "APPLIED"
 * (NGX_DECLINED: the batch of n events was stored before, its reply was
 * lost).  NGX_ERROR: an error reply.
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
 * What a cdp_ingest on Redis Cluster hands back (store/cdp.lua, FOLLOW):
 * its reply's last element, after the counts, an array of groups of bulk
 * strings:
 *
 *   "f" key kind attrs payload extra   an event of a person in another
 *                                      shard: queued again with the key
 *                                      of that person's profile
 *                                      ("profile:<pid>"), kind "page" or
 *                                      "track", extra its route;fact
 *   "x" key state                      an identify, or a server API
 *                                      message that needs identity: a
 *                                      saga whose first step is cdp_xid
 *                                      on key (whole, prefix and all)
 *                                      with state
 *
 * f is that element, detached from its reply (ngx_cdp_ingest_detach()):
 * on a master with replicas it is held with its batch until a replica
 * has the batch (ngx_cdp_ingest_wait_done()), and taken from the reply
 * of the batch's application that a replica has (a batch sent again
 * after a lost WAIT is "APPLIED", or applied anew by a promoted replica
 * that never saw it: its own follow-ups then, the held ones dropped).
 * Called once the batch is settled: a forwarded
 * event may flush a batch, whose sending may fail a connection and call
 * the handlers of the batches in flight.  group: the API's batch's
 * (NULL for others, and spool replays: the API's batches are never
 * spooled), held by the caller; each saga counts in it until it ends,
 * so that its request is answered once its messages are stored.  (The
 * store never forwards an API message: an "f" is a pixel's event, sent
 * on without a waiter.)
 */

static redisReply *
ngx_cdp_ingest_detach(redisReply *reply)
{
    redisReply  *f;

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 8) {
        return NULL;
    }

    f = reply->element[reply->elements - 1];

    if (f == NULL || f->type != REDIS_REPLY_ARRAY || f->elements == 0) {
        return NULL;
    }

    /* the reply is freed without it (freeReplyObject() skips a NULL) */
    reply->element[reply->elements - 1] = NULL;

    return f;
}


/* a spool replay's: taken at once (its batches do not wait for WAIT) */

static void
ngx_cdp_ingest_follow_reply(ngx_cdp_ingest_t *ig, redisReply *reply)
{
    redisReply  *f;

    f = ngx_cdp_ingest_detach(reply);

    if (f) {
        ngx_cdp_ingest_follow(ig, f, NULL);
        freeReplyObject(f);
    }
}


static void
ngx_cdp_ingest_follow(ngx_cdp_ingest_t *ig, redisReply *f,
    ngx_cdp_ingest_group_t *group)
{
    size_t       i, k, n;
    ngx_str_t    v[6];
    ngx_uint_t   kind;
    redisReply  *e;

    for (i = 0; i < f->elements; i += n) {
        e = f->element[i];
        n = 0;

        if (e->type == REDIS_REPLY_STRING && e->len == 1) {
            n = (e->str[0] == 'f') ? 6 : (e->str[0] == 'x') ? 3 : 0;
        }

        if (n == 0 || i + n > f->elements) {
            goto malformed;
        }

        for (k = 0; k < n; k++) {
            e = f->element[i + k];

            if (e->type != REDIS_REPLY_STRING) {
                goto malformed;
            }

            v[k].data = (u_char *) e->str;
            v[k].len = e->len;
        }

        if (v[1].len == 0) {
            goto malformed;
        }

        if (n == 3) {
            if (group == NULL) {
                (void) ngx_cdp_xid_start(NGX_CDP_XID_IDENTITY, &v[1], &v[2],
                                         1, NULL, NULL);
                continue;
            }

            /* ngx_cdp_ingest_saga_done() is called once, maybe now */
            group->pending++;
            (void) ngx_cdp_xid_start(NGX_CDP_XID_IDENTITY, &v[1], &v[2], 1,
                                     ngx_cdp_ingest_saga_done, group);
            continue;
        }

        if (v[2].len == sizeof("page") - 1
            && ngx_strncmp(v[2].data, "page", v[2].len) == 0)
        {
            kind = NGX_CDP_EVENT_PAGE;

        } else if (v[2].len == sizeof("track") - 1
                   && ngx_strncmp(v[2].data, "track", v[2].len) == 0)
        {
            kind = NGX_CDP_EVENT_TRACK;

        } else {
            ngx_cdp_count(NGX_CDP_C_DROP_MALFORMED, 1);
            continue;
        }

        /* an empty route is written as such with nargs 5 (enqueue) */

        (void) ngx_cdp_ingest_append(ig, &v[1], kind, &v[3], &v[4],
                                     v[5].len ? &v[5] : NULL,
                                     NGX_CDP_C_FORWARDED);
    }

    return;

malformed:

    if (!ig->warned_follow) {
        ngx_log_error(NGX_LOG_ERR, ig->log, 0,
                      "cdp: cdp_ingest's follow-ups are malformed at "
                      "element %uz: the rest of them is ignored", i);
        ig->warned_follow = 1;
    }
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

    if (b->group) {
        ngx_cdp_ingest_group_done(b->group, rc);
    }

    ngx_cdp_ingest_free(b);
}


static void
ngx_cdp_ingest_take_held(ngx_cdp_ingest_t *ig)
{
    ngx_uint_t        i, n;
    ngx_queue_t      *q;
    redisReply      **held;
    ngx_cdp_batch_t  *b;

    /*
     * collected first: taking them may send, and fail, batches.  An API
     * batch's are left (freed with it): its request fails, and its client
     * sends the messages again
     */

    n = 0;

    for (q = ngx_queue_head(&ig->sent);
         q != ngx_queue_sentinel(&ig->sent);
         q = ngx_queue_next(q))
    {
        b = ngx_queue_data(q, ngx_cdp_batch_t, queue);
        n += (b->follow != NULL && b->group == NULL);
    }

    for (b = ig->retry; b; b = b->next) {
        n += (b->follow != NULL);
    }

    if (n == 0) {
        return;
    }

    held = ngx_alloc(n * sizeof(redisReply *), ig->log);
    if (held == NULL) {
        return;
    }

    i = 0;

    for (q = ngx_queue_head(&ig->sent);
         q != ngx_queue_sentinel(&ig->sent);
         q = ngx_queue_next(q))
    {
        b = ngx_queue_data(q, ngx_cdp_batch_t, queue);

        if (b->follow && b->group == NULL) {
            held[i++] = b->follow;
            b->follow = NULL;
        }
    }

    for (b = ig->retry; b; b = b->next) {
        if (b->follow) {
            held[i++] = b->follow;
            b->follow = NULL;
        }
    }

    for (i = 0; i < n; i++) {
        ngx_cdp_ingest_follow(ig, held[i], NULL);
        freeReplyObject(held[i]);
    }

    ngx_free(held);
}


static void
ngx_cdp_ingest_free(ngx_cdp_batch_t *b)
{
    if (b->follow) {
        freeReplyObject(b->follow);
    }

    ngx_free(b);
}


/* one batch or saga of a group is done: the last wakes its waiters */

static void
ngx_cdp_ingest_group_done(ngx_cdp_ingest_group_t *group, ngx_int_t rc)
{
    if (rc != NGX_OK) {
        group->rc = rc;
    }

    if (--group->pending == 0) {
        ngx_cdp_ingest_wake(group->waiters, group->rc);
        ngx_free(group);
    }
}


/* a saga an API batch's reply started has ended (ngx_cdp_xid.h) */

static void
ngx_cdp_ingest_saga_done(void *data, ngx_int_t rc, ngx_str_t *result)
{
    ngx_cdp_ingest_group_done(data, rc);
}


static void
ngx_cdp_ingest_dequeued(ngx_cdp_ingest_t *ig, ngx_uint_t n)
{
    ig->queued -= n;
    ngx_cdp_count(NGX_CDP_C_QUEUE_EVENTS, (ngx_atomic_int_t) -n);
}
