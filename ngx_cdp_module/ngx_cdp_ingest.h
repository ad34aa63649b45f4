
/*
 * ngx_cdp: ingest, the events a worker hands to the store.
 *
 * Events are appended to the current batch as RESP bulk strings, ready
 * to be sent.  A batch becomes one FCALL cdp_ingest when it holds
 * cdp_batch_size events or 1 ms after its first event: one write and one
 * round trip for many hits.
 *
 * Every batch has an id, the worker's id and a sequence number; the
 * store remembers the ids it applied (store/cdp.lua, <prefix>:once:...)
 * and skips a batch it has already applied.  So a batch whose reply was
 * lost can be sent again: batches in flight when the connection goes
 * are kept and resent after the reconnect, and with cdp_spool the
 * batches that cannot go to Redis (down, stalled, over the queue's
 * high-water mark) are written to a local spool file
 * (ngx_cdp_spool.h) and replayed from it later, exactly once.
 *
 * On Redis Cluster a reply may hand back what its slot could not do: an
 * event of a person in another shard, queued again for that shard
 * (counted as forwarded, not accepted twice), and identifies and server
 * API messages that need identity, run as sagas of single-slot calls
 * (ngx_cdp_xid.h).
 */


#ifndef _NGX_CDP_INGEST_H_INCLUDED_
#define _NGX_CDP_INGEST_H_INCLUDED_


#include "ngx_http_cdp_module.h"


#define NGX_CDP_EVENT_PAGE         0
#define NGX_CDP_EVENT_TRACK        1
#define NGX_CDP_EVENT_NEW          2        /* or-ed: the id is new */
#define NGX_CDP_EVENT_AGGREGATE    4        /* no person: a daily count */
#define NGX_CDP_EVENT_LOG          5        /* an entry of a log stream */
#define NGX_CDP_EVENT_IDENTIFY     6        /* see cdp_ingest's identify */
#define NGX_CDP_EVENT_API          7        /* a server API message */


ngx_int_t ngx_cdp_ingest_init_process(ngx_cycle_t *cycle,
    ngx_http_cdp_main_conf_t *mcf);
void ngx_cdp_ingest_exit_process(ngx_cycle_t *cycle);

/*
 * One event for the store: the key (after "<prefix>:") it updates, its
 * kind, attrs and payload, as cdp_ingest takes them.  Never waits.
 * NGX_DECLINED: dropped and counted (Redis down or the queue full, and
 * no spool).
 */
ngx_int_t ngx_cdp_ingest_enqueue(ngx_str_t *key, ngx_uint_t kind,
    ngx_str_t *attrs, ngx_str_t *payload, ngx_str_t *route);


typedef struct ngx_cdp_ingest_waiter_s  ngx_cdp_ingest_waiter_t;

typedef void (*ngx_cdp_ingest_waiter_pt)(ngx_cdp_ingest_waiter_t *w,
    ngx_int_t rc);

struct ngx_cdp_ingest_waiter_s {
    ngx_cdp_ingest_waiter_pt   handler;
    void                      *data;
    ngx_cdp_ingest_waiter_t   *next;
};

/*
 * For a request that waits for Redis (the server API): room for n events
 * of about size bytes, all in one batch of their own, so that one FCALL
 * stores them all or none.  On NGX_OK the caller enqueues them, then
 * calls ngx_cdp_ingest_wait() (or ngx_cdp_ingest_release() if it gives
 * up).  NGX_DECLINED: Redis is not ready or the queue is full.  Such a
 * batch is never spooled nor resent: its waiters are told NGX_ERROR and
 * the client retries.  On a cluster the waiters wait for the sagas the
 * batch's replies start too (its messages that need identity).
 */
ngx_int_t ngx_cdp_ingest_reserve(ngx_uint_t n, size_t size);
void ngx_cdp_ingest_release(void);
void ngx_cdp_ingest_wait(ngx_cdp_ingest_waiter_t *w);

/* cdp_ingest's ARGV[1] and a shard's event stream, for the store's
 * other calls */
void ngx_cdp_ingest_argv1(ngx_str_t *argv1, ngx_str_t *stream,
    ngx_uint_t shard);

/* "<prefix>:<kind>:{<tag>}" of shard, or "...:<id>" of id's shard (id not
 * NULL); allocated from pool */
ngx_int_t ngx_cdp_ingest_key(ngx_pool_t *pool, ngx_http_cdp_main_conf_t *mcf,
    const char *kind, u_char *id, size_t len, ngx_uint_t shard,
    ngx_str_t *key);


#endif /* _NGX_CDP_INGEST_H_INCLUDED_ */
