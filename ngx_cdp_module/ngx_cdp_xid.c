
/*
 * ngx_cdp: identity on Redis Cluster, the sagas (ngx_cdp_xid.h).
 *
 * A saga is a malloc'd struct in the worker's list of running ones; the
 * key and state of its step are a block of their own (and the next
 * step's a second one while a WAIT is in flight), freed when it ends.
 * Its steps:
 *
 *   sent      FCALL cdp_xid to the master of the step's key (routed and
 *             redirected by ngx_cdp_redis.c);
 *   replied   the counts added; "" as the next key: done; else, when
 *             that master has replicas, WAIT 1 100 on its connection,
 *             then the next step, at once or after the delay the store
 *             asked for (the saga's timer);
 *   failed    no reply (the connection lost, the node not ready) or a
 *             "not now" error (TRYAGAIN, CLUSTERDOWN, LOADING, BUSY, OOM,
 *             READONLY, MASTERDOWN, no library): the same step again a
 *             second later, at most NGX_CDP_XID_RETRIES times; another
 *             error, too many retries or too many steps: abandoned,
 *             logged (the key and the error, never the state: it holds
 *             identifiers and traits) at most once a second.
 *
 * Worker 0 on a cluster sweeps: every second it visits the shards in
 * turn with cdp_xid "sweep" on the shard's event stream, whose reply
 * names a saga to run (one the store found left half done) or nothing;
 * such a saga is run to its end by the same steps, then the shard is
 * swept again (at most NGX_CDP_XID_SWEEP_SHARD sagas a shard a round).
 * A sweep that fails moves on to the next shard: the next round comes
 * back to it.  One sweep at a time.
 *
 * Timers are cancelable: a worker that exits does not wait for a saga's
 * delay or retry, and what is still running then is abandoned (counted;
 * the sweeper finishes what a saga journaled in the store).
 */


#include "ngx_http_cdp_module.h"
#include "ngx_cdp_http.h"
#include "ngx_cdp_redis.h"
#include "ngx_cdp_shard.h"
#include "ngx_cdp_xid.h"


#define NGX_CDP_XID_MAX           1000      /* sagas running, a worker */
#define NGX_CDP_XID_STEPS         200       /* steps of a saga, at most */
#define NGX_CDP_XID_RETRIES       10        /* of a step */
#define NGX_CDP_XID_RETRY_DELAY   1000      /* ms */
#define NGX_CDP_XID_DELAY_MAX     60000     /* ms: the store's, at most */
#define NGX_CDP_XID_SWEEP_EVERY   1000      /* ms between rounds */
#define NGX_CDP_XID_SWEEP_NEXT    1         /* ms to the next shard */
#define NGX_CDP_XID_SWEEP_SHARD   100       /* sagas of a shard a round */
#define NGX_CDP_XID_WAIT_TIMEOUT  "100"     /* ms */

/* how a saga ends */
#define NGX_CDP_XID_DONE          0
#define NGX_CDP_XID_ABANDONED     1


typedef struct ngx_cdp_xid_saga_s  ngx_cdp_xid_saga_t;


/* a step's key and state: the bytes follow the struct */
typedef struct {
    ngx_str_t                  key;
    ngx_str_t                  state;
} ngx_cdp_xid_step_t;


struct ngx_cdp_xid_saga_s {
    ngx_queue_t                queue;       /* running */
    ngx_cdp_redis_call_t       call;
    ngx_event_t                ev;          /* the step, later */
    ngx_cdp_xid_step_t        *step;        /* to send, or sent */
    ngx_cdp_xid_step_t        *next;        /* named, while WAIT */
    ngx_msec_t                 delay;       /* before next */
    ngx_uint_t                 steps;       /* that named another */
    ngx_uint_t                 retries;     /* of step */
    unsigned                   sweep:1;     /* the sweeper's */
    unsigned                   counted:1;   /* a saga running (a sweep
                                               once it names a step) */
};


typedef struct {
    ngx_log_t                 *log;
    ngx_str_t                  argv1;       /* cdp_ingest's ARGV[1] */
    ngx_str_t                  prefix;      /* "<prefix>:" */
    ngx_str_t                 *streams;     /* the sweeper's keys */
    ngx_uint_t                 nstreams;

    ngx_queue_t                sagas;
    ngx_uint_t                 running;     /* counted ones */

    ngx_event_t                sweep_ev;
    ngx_cdp_xid_saga_t        *sweep;       /* the sweeper's, or NULL */
    ngx_uint_t                 shard;       /* it visits */
    ngx_uint_t                 swept;       /* sagas of it, this round */

    time_t                     warned;
    unsigned                   exiting:1;
} ngx_cdp_xid_t;


static ngx_cdp_xid_saga_t *ngx_cdp_xid_new(ngx_cdp_xid_t *x,
    ngx_str_t *key, ngx_str_t *state);
static ngx_cdp_xid_step_t *ngx_cdp_xid_step(ngx_cdp_xid_t *x, u_char *key,
    size_t klen, u_char *state, size_t slen);
static void ngx_cdp_xid_send(ngx_cdp_xid_saga_t *s);
static void ngx_cdp_xid_replied(ngx_cdp_redis_call_t *call, void *data);
static void ngx_cdp_xid_waited(ngx_cdp_redis_call_t *call, void *data);
static void ngx_cdp_xid_advance(ngx_cdp_xid_saga_t *s);
static ngx_uint_t ngx_cdp_xid_retryable(redisReply *reply);
static void ngx_cdp_xid_retry(ngx_cdp_xid_saga_t *s, const char *why);
static void ngx_cdp_xid_abandon(ngx_cdp_xid_saga_t *s, u_char *why,
    size_t len);
static void ngx_cdp_xid_end(ngx_cdp_xid_saga_t *s, ngx_uint_t how);
static void ngx_cdp_xid_warn(ngx_cdp_xid_t *x, const char *what,
    ngx_str_t *key, u_char *why, size_t len);
static void ngx_cdp_xid_step_handler(ngx_event_t *ev);
static void ngx_cdp_xid_sweep_handler(ngx_event_t *ev);
static void ngx_cdp_xid_swept(ngx_cdp_xid_t *x, ngx_uint_t more);


static ngx_cdp_xid_t  *ngx_cdp_xid;

static ngx_str_t  ngx_cdp_xid_sweep_state = ngx_string("sweep");


ngx_int_t
ngx_cdp_xid_init_process(ngx_cycle_t *cycle, ngx_http_cdp_main_conf_t *mcf,
    ngx_str_t *argv1, ngx_str_t *streams)
{
    ngx_cdp_xid_t  *x;

    x = ngx_pcalloc(cycle->pool, sizeof(ngx_cdp_xid_t));
    if (x == NULL) {
        return NGX_ERROR;
    }

    x->log = cycle->log;
    x->argv1 = *argv1;
    x->streams = streams;
    x->nstreams = mcf->redis.shards;

    x->prefix.len = mcf->prefix.len + 1;
    x->prefix.data = ngx_pnalloc(cycle->pool, x->prefix.len);
    if (x->prefix.data == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(x->prefix.data, "%V:", &mcf->prefix);

    ngx_queue_init(&x->sagas);

    x->sweep_ev.handler = ngx_cdp_xid_sweep_handler;
    x->sweep_ev.data = x;
    x->sweep_ev.log = cycle->log;
    x->sweep_ev.cancelable = 1;

    ngx_cdp_xid = x;

    /* the sweeper: once, on a cluster (a single Redis has no sagas) */

    if (mcf->redis.seeds && ngx_worker == 0 && x->nstreams) {
        ngx_add_timer(&x->sweep_ev, NGX_CDP_XID_SWEEP_EVERY);
    }

    return NGX_OK;
}


void
ngx_cdp_xid_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t           n;
    ngx_queue_t         *q;
    ngx_cdp_xid_t       *x;
    ngx_cdp_xid_saga_t  *s;

    x = ngx_cdp_xid;
    if (x == NULL) {
        return;
    }

    x->exiting = 1;

    if (x->sweep_ev.timer_set) {
        ngx_del_timer(&x->sweep_ev);
    }

    /* the transport is gone: no handler of theirs is called any more */

    n = 0;

    while (!ngx_queue_empty(&x->sagas)) {
        q = ngx_queue_head(&x->sagas);
        s = ngx_queue_data(q, ngx_cdp_xid_saga_t, queue);

        n += s->counted;

        ngx_cdp_xid_end(s, NGX_CDP_XID_ABANDONED);
    }

    if (n) {
        ngx_log_error(NGX_LOG_NOTICE, x->log, 0,
                      "cdp: %ui identity sagas abandoned at exit "
                      "(cdp_identity_sagas_total{result=\"abandoned\"})",
                      n);
    }

    ngx_cdp_xid = NULL;
}


ngx_int_t
ngx_cdp_xid_start(ngx_str_t *key, ngx_str_t *state)
{
    ngx_cdp_xid_t       *x;
    ngx_cdp_xid_saga_t  *s;

    x = ngx_cdp_xid;

    if (x == NULL) {
        ngx_cdp_count(NGX_CDP_C_SAGAS_ABANDONED, 1);
        return NGX_DECLINED;
    }

    if (x->running >= NGX_CDP_XID_MAX) {
        ngx_cdp_count(NGX_CDP_C_SAGAS_ABANDONED, 1);
        ngx_cdp_xid_warn(x, "saga", key,
                         (u_char *) "too many running in this worker",
                         sizeof("too many running in this worker") - 1);
        return NGX_DECLINED;
    }

    s = ngx_cdp_xid_new(x, key, state);
    if (s == NULL) {
        ngx_cdp_count(NGX_CDP_C_SAGAS_ABANDONED, 1);
        ngx_cdp_xid_warn(x, "saga", key, (u_char *) "out of memory",
                         sizeof("out of memory") - 1);
        return NGX_DECLINED;
    }

    s->counted = 1;
    x->running++;
    ngx_cdp_count(NGX_CDP_C_SAGAS_RUNNING, 1);

    ngx_cdp_xid_send(s);

    return NGX_OK;
}


static ngx_cdp_xid_saga_t *
ngx_cdp_xid_new(ngx_cdp_xid_t *x, ngx_str_t *key, ngx_str_t *state)
{
    ngx_cdp_xid_saga_t  *s;

    s = ngx_calloc(sizeof(ngx_cdp_xid_saga_t), x->log);
    if (s == NULL) {
        return NULL;
    }

    s->step = ngx_cdp_xid_step(x, key->data, key->len, state->data,
                               state->len);
    if (s->step == NULL) {
        ngx_free(s);
        return NULL;
    }

    s->call.data = s;

    s->ev.handler = ngx_cdp_xid_step_handler;
    s->ev.data = s;
    s->ev.log = x->log;
    s->ev.cancelable = 1;

    ngx_queue_insert_tail(&x->sagas, &s->queue);

    return s;
}


static ngx_cdp_xid_step_t *
ngx_cdp_xid_step(ngx_cdp_xid_t *x, u_char *key, size_t klen, u_char *state,
    size_t slen)
{
    ngx_cdp_xid_step_t  *st;

    st = ngx_alloc(sizeof(ngx_cdp_xid_step_t) + klen + slen, x->log);
    if (st == NULL) {
        return NULL;
    }

    st->key.data = (u_char *) (st + 1);
    st->key.len = klen;
    st->state.data = ngx_cpymem(st->key.data, key, klen);
    st->state.len = slen;

    ngx_memcpy(st->state.data, state, slen);

    return st;
}


/* FCALL cdp_xid 1 <key> <argv1> <prefix>: <state> */

static void
ngx_cdp_xid_send(ngx_cdp_xid_saga_t *s)
{
    size_t          lens[7];
    const char     *argv[7];
    ngx_cdp_xid_t  *x;

    x = ngx_cdp_xid;

    argv[0] = "FCALL";
    lens[0] = sizeof("FCALL") - 1;
    argv[1] = "cdp_xid";
    lens[1] = sizeof("cdp_xid") - 1;
    argv[2] = "1";
    lens[2] = 1;
    argv[3] = (const char *) s->step->key.data;
    lens[3] = s->step->key.len;
    argv[4] = (const char *) x->argv1.data;
    lens[4] = x->argv1.len;
    argv[5] = (const char *) x->prefix.data;
    lens[5] = x->prefix.len;
    argv[6] = (const char *) s->step->state.data;
    lens[6] = s->step->state.len;

    s->call.handler = ngx_cdp_xid_replied;

    if (ngx_cdp_redis_call(&s->call, 7, argv, lens) != NGX_OK) {
        ngx_cdp_xid_retry(s, "redis is not ready");
    }

    /* else s may be gone already: its handler may have been called */
}


/*
 * {next key, next state, delay ms, merges, switches, refused, erased}:
 * the counts added, then done ("" as the next key), or the next step.
 */

static void
ngx_cdp_xid_replied(ngx_cdp_redis_call_t *call, void *data)
{
    ngx_cdp_xid_saga_t  *s = call->data;
    redisReply          *reply = data;

    size_t               i;
    size_t               lens[3];
    const char          *argv[3];
    ngx_uint_t           slot;
    redisReply         **e;
    ngx_cdp_xid_t       *x;
    ngx_cdp_xid_step_t  *next;

    static ngx_uint_t  counters[] = { NGX_CDP_C_MERGES,
                                      NGX_CDP_C_SHARED_DEVICE,
                                      NGX_CDP_C_IDENT_REFUSED,
                                      NGX_CDP_C_DROP_ERASED };

    x = ngx_cdp_xid;

    if (reply == NULL) {
        ngx_cdp_xid_retry(s, "connection lost");
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        if (ngx_cdp_xid_retryable(reply)) {
            if (ngx_strstr(reply->str, "Function not found")) {
                /* FUNCTION FLUSH, or a node without its library yet */
                ngx_cdp_redis_load_library();
            }

            ngx_cdp_xid_retry(s, reply->str);
            return;
        }

        ngx_cdp_xid_abandon(s, (u_char *) reply->str, reply->len);
        return;
    }

    e = reply->element;

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 7
        || (e[0]->type != REDIS_REPLY_STRING && e[0]->type != REDIS_REPLY_NIL))
    {
        ngx_cdp_xid_abandon(s, (u_char *) "unexpected reply to cdp_xid",
                            sizeof("unexpected reply to cdp_xid") - 1);
        return;
    }

    for (i = 0; i < 4; i++) {
        if (e[3 + i]->type == REDIS_REPLY_INTEGER && e[3 + i]->integer > 0) {
            ngx_cdp_count(counters[i], (ngx_atomic_int_t) e[3 + i]->integer);
        }
    }

    if (e[0]->type == REDIS_REPLY_NIL || e[0]->len == 0) {
        ngx_cdp_xid_end(s, NGX_CDP_XID_DONE);
        return;
    }

    if (e[1]->type != REDIS_REPLY_STRING) {
        ngx_cdp_xid_abandon(s, (u_char *) "unexpected reply to cdp_xid",
                            sizeof("unexpected reply to cdp_xid") - 1);
        return;
    }

    if (++s->steps >= NGX_CDP_XID_STEPS) {
        ngx_cdp_xid_abandon(s, (u_char *) "more than 200 steps",
                            sizeof("more than 200 steps") - 1);
        return;
    }

    next = ngx_cdp_xid_step(x, (u_char *) e[0]->str, e[0]->len,
                            (u_char *) e[1]->str, e[1]->len);
    if (next == NULL) {
        ngx_cdp_xid_abandon(s, (u_char *) "out of memory",
                            sizeof("out of memory") - 1);
        return;
    }

    if (!s->counted) {
        /* a sweep that found work: a saga from now on */
        s->counted = 1;
        x->running++;
        ngx_cdp_count(NGX_CDP_C_SAGAS_RUNNING, 1);
    }

    s->next = next;
    s->delay = 0;

    if (e[2]->type == REDIS_REPLY_INTEGER && e[2]->integer > 0) {
        s->delay = (ngx_msec_t) ngx_min(e[2]->integer,
                                        NGX_CDP_XID_DELAY_MAX);
    }

    /*
     * what this step wrote reaches a replica before the next step, in
     * another slot, relies on it: a failover would lose it otherwise
     */

    slot = ngx_cdp_key_slot(s->step->key.data, s->step->key.len);

    if (ngx_cdp_redis_replicas_slot(slot) == 0) {
        ngx_cdp_xid_advance(s);
        return;
    }

    argv[0] = "WAIT";
    lens[0] = sizeof("WAIT") - 1;
    argv[1] = "1";
    lens[1] = 1;
    argv[2] = NGX_CDP_XID_WAIT_TIMEOUT;
    lens[2] = sizeof(NGX_CDP_XID_WAIT_TIMEOUT) - 1;

    s->call.handler = ngx_cdp_xid_waited;

    if (ngx_cdp_redis_call_slot(&s->call, slot, 3, argv, lens) != NGX_OK) {
        /* the step again, to whoever has the slot by then */
        ngx_cdp_xid_retry(s, "redis is not ready");
    }
}


static void
ngx_cdp_xid_waited(ngx_cdp_redis_call_t *call, void *data)
{
    ngx_cdp_xid_saga_t  *s = call->data;
    redisReply          *reply = data;

    if (reply == NULL) {
        /* applied, perhaps not replicated: the step again */
        ngx_cdp_xid_retry(s, "connection lost");
        return;
    }

    if (reply->type != REDIS_REPLY_INTEGER || reply->integer < 1) {
        ngx_cdp_count(NGX_CDP_C_UNREPLICATED, 1);
    }

    ngx_cdp_xid_advance(s);
}


/* the next step becomes the step: sent at once or after its delay */

static void
ngx_cdp_xid_advance(ngx_cdp_xid_saga_t *s)
{
    ngx_free(s->step);

    s->step = s->next;
    s->next = NULL;
    s->retries = 0;

    if (s->delay) {
        ngx_add_timer(&s->ev, s->delay);
        return;
    }

    ngx_cdp_xid_send(s);
}


/* "not now" errors: nothing was done, the step may be sent again */

static ngx_uint_t
ngx_cdp_xid_retryable(redisReply *reply)
{
    size_t      n;
    ngx_uint_t  i;

    static ngx_str_t  now[] = {
        ngx_string("TRYAGAIN"), ngx_string("CLUSTERDOWN"),
        ngx_string("LOADING"), ngx_string("BUSY"), ngx_string("OOM"),
        ngx_string("READONLY"), ngx_string("MASTERDOWN")
    };

    for (i = 0; i < sizeof(now) / sizeof(now[0]); i++) {
        n = now[i].len;

        if (reply->len >= n
            && ngx_strncmp(reply->str, now[i].data, n) == 0
            && (reply->len == n || reply->str[n] == ' '))
        {
            return 1;
        }
    }

    return ngx_strstr(reply->str, "Function not found") != NULL;
}


/*
 * The same step a second later, or abandoned after too many tries.  A
 * sweep that has not named a step yet is not retried: the next shard,
 * and this one again the next round.
 */

static void
ngx_cdp_xid_retry(ngx_cdp_xid_saga_t *s, const char *why)
{
    if (s->next) {
        ngx_free(s->next);
        s->next = NULL;
    }

    if (s->sweep && !s->counted) {
        /* not logged: an outage is logged by the transport */
        ngx_cdp_xid_end(s, NGX_CDP_XID_ABANDONED);
        return;
    }

    if (++s->retries > NGX_CDP_XID_RETRIES) {
        ngx_cdp_xid_abandon(s, (u_char *) why, ngx_strlen(why));
        return;
    }

    ngx_add_timer(&s->ev, NGX_CDP_XID_RETRY_DELAY);
}


static void
ngx_cdp_xid_abandon(ngx_cdp_xid_saga_t *s, u_char *why, size_t len)
{
    ngx_cdp_xid_warn(ngx_cdp_xid,
                     (s->sweep && !s->counted) ? "sweep" : "saga",
                     &s->step->key, why, len);

    ngx_cdp_xid_end(s, NGX_CDP_XID_ABANDONED);
}


static void
ngx_cdp_xid_end(ngx_cdp_xid_saga_t *s, ngx_uint_t how)
{
    ngx_uint_t      sweep, counted;
    ngx_cdp_xid_t  *x;

    x = ngx_cdp_xid;

    ngx_queue_remove(&s->queue);

    if (s->ev.timer_set) {
        ngx_del_timer(&s->ev);
    }

    sweep = s->sweep;
    counted = s->counted;

    if (counted) {
        x->running--;
        ngx_cdp_count(NGX_CDP_C_SAGAS_RUNNING, (ngx_atomic_int_t) -1);
        ngx_cdp_count(how == NGX_CDP_XID_ABANDONED
                      ? NGX_CDP_C_SAGAS_ABANDONED
                      : sweep ? NGX_CDP_C_SAGAS_SWEPT : NGX_CDP_C_SAGAS_DONE,
                      1);
    }

    ngx_free(s->next);
    ngx_free(s->step);
    ngx_free(s);

    if (sweep) {
        x->sweep = NULL;

        /* a saga done: the shard again; nothing, a failure: the next */
        ngx_cdp_xid_swept(x, counted && how == NGX_CDP_XID_DONE);
    }
}


/* the key, never the state (identifiers, traits); once a second */

static void
ngx_cdp_xid_warn(ngx_cdp_xid_t *x, const char *what, ngx_str_t *key,
    u_char *why, size_t len)
{
    if (x == NULL || x->exiting || x->warned == ngx_time()) {
        return;
    }

    x->warned = ngx_time();

    ngx_log_error(NGX_LOG_WARN, x->log, 0,
                  "cdp: identity %s of \"%V\" abandoned: %*s "
                  "(cdp_identity_sagas_total{result=\"abandoned\"})",
                  what, key, len, why);
}


static void
ngx_cdp_xid_step_handler(ngx_event_t *ev)
{
    ngx_cdp_xid_send(ev->data);
}


/* the sweeper: the shard at hand, or the first of a new round */

static void
ngx_cdp_xid_sweep_handler(ngx_event_t *ev)
{
    ngx_cdp_xid_t       *x = ev->data;

    ngx_cdp_xid_saga_t  *s;

    if (ngx_exiting || ngx_terminate || ngx_quit || x->sweep) {
        return;
    }

    if (x->shard >= x->nstreams) {
        x->shard = 0;
        x->swept = 0;
    }

    if (x->running >= NGX_CDP_XID_MAX) {
        ngx_add_timer(ev, NGX_CDP_XID_SWEEP_EVERY);
        return;
    }

    s = ngx_cdp_xid_new(x, &x->streams[x->shard], &ngx_cdp_xid_sweep_state);
    if (s == NULL) {
        ngx_add_timer(ev, NGX_CDP_XID_SWEEP_EVERY);
        return;
    }

    s->sweep = 1;
    x->sweep = s;

    ngx_cdp_xid_send(s);
}


static void
ngx_cdp_xid_swept(ngx_cdp_xid_t *x, ngx_uint_t more)
{
    if (x->exiting || ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    if (!more || ++x->swept >= NGX_CDP_XID_SWEEP_SHARD) {
        x->shard++;
        x->swept = 0;
    }

    ngx_add_timer(&x->sweep_ev, x->shard < x->nstreams
                                ? NGX_CDP_XID_SWEEP_NEXT
                                : NGX_CDP_XID_SWEEP_EVERY);
}
