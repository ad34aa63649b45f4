
/*
 * ngx_cdp: sagas on Redis Cluster (ngx_cdp_xid.h).
 *
 * One runner for every kind of saga: a kind (ngx_cdp_xid_kinds[]) names
 * the store's function, the fixed arguments between the step's key and
 * its state, the size of a step's reply, what a step's reply counts (the
 * identity kind's merges...), the element of the last reply that is the
 * saga's result (the admin kind's JSON), whether an error of the store
 * ends the saga as its answer (the admin kind's "ERR cdp_erase: ...")
 * and its counters.  A saga is a malloc'd struct in the worker's list of
 * running ones; the key and arguments of its step are a block of their
 * own (and the next step's a second one while a WAIT is in flight),
 * freed when it ends.  Its steps:
 *
 *   sent      FCALL <function> 1 <key> <fixed...> <state...> to the
 *             master of the step's key (routed and redirected by
 *             ngx_cdp_redis.c);
 *   replied   the counts added; "" as the next key: done (the result
 *             kept); else, when that master has replicas, WAIT 1 100 on
 *             its connection, then the next step, at once or after the
 *             delay the store asked for (the saga's timer);
 *   last      a saga with a handler (an API or admin request waits for
 *             it): WAIT 1 100 after the last step too, when that master
 *             has replicas, then the handler: NGX_OK, or NGX_ERROR when
 *             this or an earlier step's WAIT answered no replica, or the
 *             connection was lost before the last one answered (counted
 *             as unreplicated: the request is answered 503 and sent
 *             again by the client);
 *   refused   an error of the store that is the saga's answer (a kind
 *             whose errors are answers, once the saga runs): the handler
 *             gets its text (NGX_DECLINED), counted as "error";
 *   failed    no reply (the connection lost, the node not ready) or a
 *             "not now" error (TRYAGAIN, CLUSTERDOWN, LOADING, BUSY, OOM,
 *             READONLY, MASTERDOWN, no library): the same step again a
 *             second later, at most NGX_CDP_XID_RETRIES times; another
 *             error, too many retries or too many steps: abandoned,
 *             logged (the key and the error, never the state: it holds
 *             identifiers and traits) at most once a second.
 *
 * Worker 0 on a cluster sweeps: every second it visits its targets in
 * turn, each shard's event stream with cdp_xid "sweep", then the audit
 * with cdp_admin_x "sweep"; a sweep's reply names a saga to run (one the
 * store found left half done, or an erasure whose driver stopped) or
 * nothing; such a saga is run to its end by the same steps (its end told
 * to the kind's swept handler), then the target is swept again (at most
 * the kind's sweep_max sagas a target a round).  A sweep that fails
 * moves on to the next target: the next round comes back to it.  One
 * sweep at a time.
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


#define NGX_CDP_XID_MAX           1000      /* sagas sent, a worker */
#define NGX_CDP_XID_WAITING_MAX   100000    /* more waiting their turn */
#define NGX_CDP_XID_STEPS         200       /* steps of a saga, at most */
#define NGX_CDP_XID_RETRIES       10        /* of a step */
#define NGX_CDP_XID_RETRY_DELAY   1000      /* ms */
#define NGX_CDP_XID_DELAY_MAX     60000     /* ms: the store's, at most */
#define NGX_CDP_XID_SWEEP_EVERY   1000      /* ms between rounds */
#define NGX_CDP_XID_SWEEP_NEXT    1         /* ms to the next target */
#define NGX_CDP_XID_WAIT_TIMEOUT  "100"     /* ms */
#define NGX_CDP_XID_FIXED         2         /* a kind's fixed ARGV */
#define NGX_CDP_XID_NARGS         160       /* a step's state ARGV: GET
                                               segments' first, 6 + 2 x 64 */

/* how a saga ends */
#define NGX_CDP_XID_DONE          0
#define NGX_CDP_XID_ABANDONED     1
#define NGX_CDP_XID_REFUSED       2


typedef struct ngx_cdp_xid_saga_s  ngx_cdp_xid_saga_t;


typedef struct {
    const char                *name;        /* "identity": the log's */
    const char                *metric;      /* its sagas' counter */
    ngx_str_t                  function;
    ngx_uint_t                 nfixed;
    ngx_str_t                  fixed[NGX_CDP_XID_FIXED];  /* init_process */
    size_t                     elements;    /* of a step's reply, least */
    ngx_int_t                  result;      /* its element, or -1 */
    void                     (*counts)(redisReply **e);
    ngx_uint_t                 sweep_max;   /* sagas a target a round */
    ngx_uint_t                 answers;     /* a store error: the answer */
    ngx_uint_t                 c_running;
    ngx_uint_t                 c_done;
    ngx_uint_t                 c_swept;
    ngx_uint_t                 c_abandoned;
    ngx_uint_t                 c_refused;
    ngx_cdp_xid_done_pt        swept;       /* what the sweeper finished */
} ngx_cdp_xid_kind_t;


/* a step's key and state: the strings, then the bytes, follow the struct */
typedef struct {
    ngx_str_t                  key;
    ngx_str_t                 *args;
    ngx_uint_t                 nargs;
} ngx_cdp_xid_step_t;


struct ngx_cdp_xid_saga_s {
    ngx_queue_t                queue;       /* running */
    ngx_cdp_redis_call_t       call;
    ngx_event_t                ev;          /* the step, later */
    ngx_cdp_xid_kind_t        *kind;
    ngx_cdp_xid_step_t        *step;        /* to send, or sent */
    ngx_cdp_xid_step_t        *next;        /* named, while WAIT */
    ngx_str_t                  result;      /* the last reply's (malloc'd,
                                               '\0' after), or an error's */
    ngx_msec_t                 delay;       /* before next */
    ngx_uint_t                 steps;       /* that named another */
    ngx_uint_t                 retries;     /* of step */
    ngx_cdp_xid_done_pt        handler;     /* called once, or NULL */
    void                      *data;
    unsigned                   sweep:1;     /* the sweeper's */
    unsigned                   counted:1;   /* a saga running (a sweep
                                               once it names a step) */
    unsigned                   unreplicated:1;  /* a WAIT answered 0 */
    unsigned                   ended:1;     /* the last step replied */
    unsigned                   waiting:1;   /* not sent yet: in waiting */
    ngx_queue_t                wait;
};


/* what the sweeper visits: a key with its kind's "sweep" */
typedef struct {
    ngx_cdp_xid_kind_t        *kind;
    ngx_str_t                  key;
} ngx_cdp_xid_target_t;


typedef struct {
    ngx_log_t                 *log;

    ngx_queue_t                sagas;
    ngx_uint_t                 running;     /* counted ones */
    ngx_uint_t                 active;      /* sent, at most XID_MAX */
    ngx_queue_t                waiting;     /* the others, oldest first */
    ngx_uint_t                 nwaiting;

    ngx_event_t                sweep_ev;
    ngx_cdp_xid_saga_t        *sweep;       /* the sweeper's, or NULL */
    ngx_cdp_xid_target_t      *targets;
    ngx_uint_t                 ntargets;
    ngx_uint_t                 target;      /* it visits */
    ngx_uint_t                 swept;       /* sagas of it, this round */

    time_t                     warned;
    unsigned                   exiting:1;
} ngx_cdp_xid_t;


static void ngx_cdp_xid_identity_counts(redisReply **e);
static ngx_cdp_xid_saga_t *ngx_cdp_xid_new(ngx_cdp_xid_t *x,
    ngx_cdp_xid_kind_t *k, ngx_str_t *key, ngx_str_t *args,
    ngx_uint_t nargs);
static ngx_cdp_xid_step_t *ngx_cdp_xid_step(ngx_cdp_xid_t *x, u_char *key,
    size_t klen, ngx_str_t *args, ngx_uint_t nargs);
static void ngx_cdp_xid_send(ngx_cdp_xid_saga_t *s);
static void ngx_cdp_xid_replied(ngx_cdp_redis_call_t *call, void *data);
static ngx_int_t ngx_cdp_xid_keep(ngx_cdp_xid_saga_t *s, redisReply *r);
static void ngx_cdp_xid_waited(ngx_cdp_redis_call_t *call, void *data);
static void ngx_cdp_xid_last(ngx_cdp_xid_saga_t *s);
static void ngx_cdp_xid_last_waited(ngx_cdp_redis_call_t *call,
    void *data);
static ngx_int_t ngx_cdp_xid_wait(ngx_cdp_xid_saga_t *s, ngx_uint_t slot,
    ngx_cdp_redis_call_pt handler);
static void ngx_cdp_xid_advance(ngx_cdp_xid_saga_t *s);
static ngx_uint_t ngx_cdp_xid_retryable(redisReply *reply);
static void ngx_cdp_xid_retry(ngx_cdp_xid_saga_t *s, const char *why);
static void ngx_cdp_xid_abandon(ngx_cdp_xid_saga_t *s, u_char *why,
    size_t len);
static void ngx_cdp_xid_end(ngx_cdp_xid_saga_t *s, ngx_uint_t how);
static void ngx_cdp_xid_warn(ngx_cdp_xid_t *x, ngx_cdp_xid_kind_t *k,
    const char *what, ngx_str_t *key, const char *how, u_char *why,
    size_t len);
static void ngx_cdp_xid_step_handler(ngx_event_t *ev);
static void ngx_cdp_xid_sweep_handler(ngx_event_t *ev);
static void ngx_cdp_xid_swept(ngx_cdp_xid_t *x, ngx_uint_t more);


static ngx_cdp_xid_t  *ngx_cdp_xid;


/* indexed by NGX_CDP_XID_*; the fixed arguments set by init_process */
static ngx_cdp_xid_kind_t  ngx_cdp_xid_kinds[] = {

    /* cdp_xid <key> <argv1> <prefix>: <state>: {next key, next state,
       delay, merges, switches, refused, erased, duplicates} */
    { "identity", "cdp_identity_sagas_total", ngx_string("cdp_xid"), 2,
      { ngx_null_string, ngx_null_string }, 8, -1,
      ngx_cdp_xid_identity_counts, 100, 0,
      NGX_CDP_C_SAGAS_RUNNING, NGX_CDP_C_SAGAS_DONE, NGX_CDP_C_SAGAS_SWEPT,
      NGX_CDP_C_SAGAS_ABANDONED, NGX_CDP_C_SAGAS_ABANDONED, NULL },

    /* cdp_admin_x <key> <prefix>|<N> <state...>: {next key, next state,
       delay, result}; an erasure resumed by a sweep is some 3N + 3 calls:
       10 a round */
    { "admin", "cdp_admin_sagas_total", ngx_string("cdp_admin_x"), 1,
      { ngx_null_string, ngx_null_string }, 4, 3, NULL, 10, 1,
      NGX_CDP_C_ADMIN_SAGAS_RUNNING, NGX_CDP_C_ADMIN_SAGAS_DONE,
      NGX_CDP_C_ADMIN_SAGAS_SWEPT, NGX_CDP_C_ADMIN_SAGAS_ABANDONED,
      NGX_CDP_C_ADMIN_SAGAS_ERROR, NULL }
};

#define NGX_CDP_XID_KINDS                                                     \
    (sizeof(ngx_cdp_xid_kinds) / sizeof(ngx_cdp_xid_kinds[0]))


static ngx_str_t  ngx_cdp_xid_sweep_state = ngx_string("sweep");


ngx_int_t
ngx_cdp_xid_init_process(ngx_cycle_t *cycle, ngx_http_cdp_main_conf_t *mcf,
    ngx_str_t *argv1, ngx_str_t *streams)
{
    u_char                *p;
    ngx_uint_t             i, n;
    ngx_cdp_xid_t         *x;
    ngx_cdp_xid_kind_t    *k;
    ngx_cdp_xid_target_t  *t;

    x = ngx_pcalloc(cycle->pool, sizeof(ngx_cdp_xid_t));
    if (x == NULL) {
        return NGX_ERROR;
    }

    x->log = cycle->log;

    /* the kinds' fixed arguments: argv1 and "<prefix>:"; "<prefix>|<N>" */

    k = &ngx_cdp_xid_kinds[NGX_CDP_XID_IDENTITY];
    k->fixed[0] = *argv1;

    p = ngx_pnalloc(cycle->pool, mcf->prefix.len + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    k->fixed[1].data = p;
    k->fixed[1].len = ngx_sprintf(p, "%V:", &mcf->prefix) - p;

    k = &ngx_cdp_xid_kinds[NGX_CDP_XID_ADMIN];

    p = ngx_pnalloc(cycle->pool, mcf->prefix.len + 1 + NGX_INT_T_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    k->fixed[0].data = p;
    k->fixed[0].len = ngx_sprintf(p, "%V|%ui", &mcf->prefix,
                                  mcf->redis.shards)
                      - p;

    ngx_queue_init(&x->sagas);
    ngx_queue_init(&x->waiting);

    x->sweep_ev.handler = ngx_cdp_xid_sweep_handler;
    x->sweep_ev.data = x;
    x->sweep_ev.log = cycle->log;
    x->sweep_ev.cancelable = 1;

    ngx_cdp_xid = x;

    /*
     * the sweeper: once, on a cluster (a single Redis has no sagas); its
     * targets: every shard's event stream, then the audit
     */

    n = mcf->redis.shards;

    if (!mcf->redis.seeds || ngx_worker != 0 || n == 0) {
        return NGX_OK;
    }

    x->targets = ngx_pcalloc(cycle->pool,
                             (n + 1) * sizeof(ngx_cdp_xid_target_t));
    if (x->targets == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < n; i++) {
        t = &x->targets[i];
        t->kind = &ngx_cdp_xid_kinds[NGX_CDP_XID_IDENTITY];
        t->key = streams[i];
    }

    t = &x->targets[n];
    t->kind = &ngx_cdp_xid_kinds[NGX_CDP_XID_ADMIN];
    t->key.data = ngx_pnalloc(cycle->pool, mcf->prefix.len
                                           + sizeof(":audit") - 1);
    if (t->key.data == NULL) {
        return NGX_ERROR;
    }

    t->key.len = ngx_sprintf(t->key.data, "%V:audit", &mcf->prefix)
                 - t->key.data;

    x->ntargets = n + 1;

    ngx_add_timer(&x->sweep_ev, NGX_CDP_XID_SWEEP_EVERY);

    return NGX_OK;
}


void
ngx_cdp_xid_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t           i, n[NGX_CDP_XID_KINDS];
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

    ngx_memzero(n, sizeof(n));

    while (!ngx_queue_empty(&x->sagas)) {
        q = ngx_queue_head(&x->sagas);
        s = ngx_queue_data(q, ngx_cdp_xid_saga_t, queue);

        n[s->kind - ngx_cdp_xid_kinds] += s->counted;

        ngx_cdp_xid_end(s, NGX_CDP_XID_ABANDONED);
    }

    for (i = 0; i < NGX_CDP_XID_KINDS; i++) {
        if (n[i]) {
            ngx_log_error(NGX_LOG_NOTICE, x->log, 0,
                          "cdp: %ui %s sagas abandoned at exit "
                          "(%s{result=\"abandoned\"})",
                          n[i], ngx_cdp_xid_kinds[i].name,
                          ngx_cdp_xid_kinds[i].metric);
        }
    }

    ngx_cdp_xid = NULL;
}


ngx_int_t
ngx_cdp_xid_start(ngx_uint_t kind, ngx_str_t *key, ngx_str_t *args,
    ngx_uint_t nargs, ngx_cdp_xid_done_pt handler, void *data)
{
    ngx_cdp_xid_t       *x;
    ngx_cdp_xid_saga_t  *s;
    ngx_cdp_xid_kind_t  *k;

    x = ngx_cdp_xid;
    k = &ngx_cdp_xid_kinds[kind];

    if (x == NULL) {
        goto declined;
    }

    if (nargs == 0 || nargs > NGX_CDP_XID_NARGS) {
        ngx_cdp_xid_warn(x, k, "saga", key, "abandoned",
                         (u_char *) "too many arguments",
                         sizeof("too many arguments") - 1);
        goto declined;
    }

    if (x->nwaiting >= NGX_CDP_XID_WAITING_MAX) {
        ngx_cdp_xid_warn(x, k, "saga", key, "abandoned",
                         (u_char *) "too many waiting in this worker",
                         sizeof("too many waiting in this worker") - 1);
        goto declined;
    }

    s = ngx_cdp_xid_new(x, k, key, args, nargs);
    if (s == NULL) {
        ngx_cdp_xid_warn(x, k, "saga", key, "abandoned",
                         (u_char *) "out of memory",
                         sizeof("out of memory") - 1);
        goto declined;
    }

    s->handler = handler;
    s->data = data;
    s->counted = 1;
    x->running++;
    ngx_cdp_count(k->c_running, 1);

    /*
     * at most NGX_CDP_XID_MAX sent at once (a server API batch of 2500
     * messages that name people is 2500 sagas): the others wait their
     * turn, running all the same for the gauge and their requests
     */

    if (x->active >= NGX_CDP_XID_MAX) {
        s->waiting = 1;
        ngx_queue_insert_tail(&x->waiting, &s->wait);
        x->nwaiting++;
        return NGX_OK;
    }

    x->active++;
    ngx_cdp_xid_send(s);

    return NGX_OK;

declined:

    ngx_cdp_count(k->c_abandoned, 1);

    if (handler) {
        handler(data, NGX_ERROR, NULL);
    }

    return NGX_DECLINED;
}


void
ngx_cdp_xid_swept_handler(ngx_uint_t kind, ngx_cdp_xid_done_pt handler)
{
    ngx_cdp_xid_kinds[kind].swept = handler;
}


/*
 * cdp_xid's counts: merges, switches, refused, erased, and api messages
 * a client sent again while their first saga ran (stored once)
 */

static void
ngx_cdp_xid_identity_counts(redisReply **e)
{
    ngx_uint_t  i;

    static ngx_uint_t  counters[] = { NGX_CDP_C_MERGES,
                                      NGX_CDP_C_SHARED_DEVICE,
                                      NGX_CDP_C_IDENT_REFUSED,
                                      NGX_CDP_C_DROP_ERASED,
                                      NGX_CDP_C_API_DUPLICATES };

    for (i = 0; i < 5; i++) {
        if (e[3 + i]->type == REDIS_REPLY_INTEGER && e[3 + i]->integer > 0) {
            ngx_cdp_count(counters[i], (ngx_atomic_int_t) e[3 + i]->integer);
        }
    }
}


static ngx_cdp_xid_saga_t *
ngx_cdp_xid_new(ngx_cdp_xid_t *x, ngx_cdp_xid_kind_t *k, ngx_str_t *key,
    ngx_str_t *args, ngx_uint_t nargs)
{
    ngx_cdp_xid_saga_t  *s;

    s = ngx_calloc(sizeof(ngx_cdp_xid_saga_t), x->log);
    if (s == NULL) {
        return NULL;
    }

    s->step = ngx_cdp_xid_step(x, key->data, key->len, args, nargs);
    if (s->step == NULL) {
        ngx_free(s);
        return NULL;
    }

    s->kind = k;
    s->call.data = s;

    s->ev.handler = ngx_cdp_xid_step_handler;
    s->ev.data = s;
    s->ev.log = x->log;
    s->ev.cancelable = 1;

    ngx_queue_insert_tail(&x->sagas, &s->queue);

    return s;
}


static ngx_cdp_xid_step_t *
ngx_cdp_xid_step(ngx_cdp_xid_t *x, u_char *key, size_t klen, ngx_str_t *args,
    ngx_uint_t nargs)
{
    u_char              *p;
    size_t               size;
    ngx_uint_t           i;
    ngx_cdp_xid_step_t  *st;

    size = sizeof(ngx_cdp_xid_step_t) + nargs * sizeof(ngx_str_t) + klen;

    for (i = 0; i < nargs; i++) {
        size += args[i].len;
    }

    st = ngx_alloc(size, x->log);
    if (st == NULL) {
        return NULL;
    }

    st->args = (ngx_str_t *) (st + 1);
    st->nargs = nargs;

    p = (u_char *) (st->args + nargs);

    st->key.data = p;
    st->key.len = klen;
    p = ngx_cpymem(p, key, klen);

    for (i = 0; i < nargs; i++) {
        st->args[i].data = p;
        st->args[i].len = args[i].len;
        p = ngx_cpymem(p, args[i].data, args[i].len);
    }

    return st;
}


/* FCALL <function> 1 <key> <fixed...> <state...> */

static void
ngx_cdp_xid_send(ngx_cdp_xid_saga_t *s)
{
    int                  argc;
    ngx_uint_t           i;
    ngx_cdp_xid_kind_t  *k;
    size_t               lens[4 + NGX_CDP_XID_FIXED + NGX_CDP_XID_NARGS];
    const char          *argv[4 + NGX_CDP_XID_FIXED + NGX_CDP_XID_NARGS];

    k = s->kind;

    argv[0] = "FCALL";
    lens[0] = sizeof("FCALL") - 1;
    argv[1] = (const char *) k->function.data;
    lens[1] = k->function.len;
    argv[2] = "1";
    lens[2] = 1;
    argv[3] = (const char *) s->step->key.data;
    lens[3] = s->step->key.len;

    argc = 4;

    for (i = 0; i < k->nfixed; i++) {
        argv[argc] = (const char *) k->fixed[i].data;
        lens[argc++] = k->fixed[i].len;
    }

    for (i = 0; i < s->step->nargs; i++) {
        argv[argc] = (const char *) s->step->args[i].data;
        lens[argc++] = s->step->args[i].len;
    }

    s->call.handler = ngx_cdp_xid_replied;

    if (ngx_cdp_redis_call(&s->call, argc, argv, lens) != NGX_OK) {
        ngx_cdp_xid_retry(s, "redis is not ready");
    }

    /* else s may be gone already: its handler may have been called */
}


/*
 * {next key, next state, delay ms, the kind's elements}: the counts
 * added, then done ("" as the next key: the result kept), or the next
 * step.
 */

static void
ngx_cdp_xid_replied(ngx_cdp_redis_call_t *call, void *data)
{
    ngx_cdp_xid_saga_t  *s = call->data;
    redisReply          *reply = data;

    ngx_str_t            state;
    ngx_uint_t           slot;
    redisReply         **e;
    ngx_cdp_xid_t       *x;
    ngx_cdp_xid_kind_t  *k;
    ngx_cdp_xid_step_t  *next;

    x = ngx_cdp_xid;
    k = s->kind;

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

        if (k->answers && s->counted) {
            /* the saga's answer (a sweep's, before it names a saga: not) */
            if (ngx_cdp_xid_keep(s, reply) != NGX_OK) {
                ngx_cdp_xid_abandon(s, (u_char *) "out of memory",
                                    sizeof("out of memory") - 1);
                return;
            }

            if (s->handler == NULL) {
                /* nobody to tell (a sweep's): the log */
                ngx_cdp_xid_warn(x, k, "saga", &s->step->key, "failed",
                                 (u_char *) reply->str, reply->len);
            }

            ngx_cdp_xid_end(s, NGX_CDP_XID_REFUSED);
            return;
        }

        ngx_cdp_xid_abandon(s, (u_char *) reply->str, reply->len);
        return;
    }

    e = reply->element;

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < k->elements
        || (e[0]->type != REDIS_REPLY_STRING && e[0]->type != REDIS_REPLY_NIL))
    {
        ngx_cdp_xid_abandon(s, (u_char *) "unexpected reply",
                            sizeof("unexpected reply") - 1);
        return;
    }

    if (k->counts) {
        k->counts(e);
    }

    if (e[0]->type == REDIS_REPLY_NIL || e[0]->len == 0) {
        if (k->result >= 0 && ngx_cdp_xid_keep(s, e[k->result]) != NGX_OK) {
            ngx_cdp_xid_abandon(s, (u_char *) "unexpected reply",
                                sizeof("unexpected reply") - 1);
            return;
        }

        s->ended = 1;
        ngx_cdp_xid_last(s);
        return;
    }

    if (e[1]->type != REDIS_REPLY_STRING) {
        ngx_cdp_xid_abandon(s, (u_char *) "unexpected reply",
                            sizeof("unexpected reply") - 1);
        return;
    }

    if (++s->steps >= NGX_CDP_XID_STEPS) {
        ngx_cdp_xid_abandon(s, (u_char *) "more than 200 steps",
                            sizeof("more than 200 steps") - 1);
        return;
    }

    state.data = (u_char *) e[1]->str;
    state.len = e[1]->len;

    next = ngx_cdp_xid_step(x, (u_char *) e[0]->str, e[0]->len, &state, 1);
    if (next == NULL) {
        ngx_cdp_xid_abandon(s, (u_char *) "out of memory",
                            sizeof("out of memory") - 1);
        return;
    }

    if (!s->counted) {
        /* a sweep that found work: a saga from now on */
        s->counted = 1;
        x->running++;
        ngx_cdp_count(k->c_running, 1);
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

    if (ngx_cdp_xid_wait(s, slot, ngx_cdp_xid_waited) != NGX_OK) {
        /* the step again, to whoever has the slot by then */
        ngx_cdp_xid_retry(s, "redis is not ready");
    }
}


/*
 * The saga's result: a bulk string (or an error's text) copied, '\0'
 * after; nil: none.  NGX_ERROR: out of memory, or not a string.
 */

static ngx_int_t
ngx_cdp_xid_keep(ngx_cdp_xid_saga_t *s, redisReply *r)
{
    ngx_free(s->result.data);
    ngx_str_null(&s->result);

    if (r->type == REDIS_REPLY_NIL) {
        return NGX_OK;
    }

    if (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_ERROR) {
        return NGX_ERROR;
    }

    s->result.data = ngx_alloc(r->len + 1, ngx_cdp_xid->log);
    if (s->result.data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(s->result.data, r->str, r->len);
    s->result.data[r->len] = '\0';
    s->result.len = r->len;

    return NGX_OK;
}


/* WAIT 1 100 on the connection to the slot's master */

static ngx_int_t
ngx_cdp_xid_wait(ngx_cdp_xid_saga_t *s, ngx_uint_t slot,
    ngx_cdp_redis_call_pt handler)
{
    size_t       lens[3];
    const char  *argv[3];

    argv[0] = "WAIT";
    lens[0] = sizeof("WAIT") - 1;
    argv[1] = "1";
    lens[1] = 1;
    argv[2] = NGX_CDP_XID_WAIT_TIMEOUT;
    lens[2] = sizeof(NGX_CDP_XID_WAIT_TIMEOUT) - 1;

    s->call.handler = handler;

    return ngx_cdp_redis_call_slot(&s->call, slot, 3, argv, lens);
}


/*
 * The last step replied: done.  Someone waits for the saga: its writes
 * reach a replica first, where the step's master has one.  A WAIT that
 * fails (no replica in time, the connection lost) is an error for the
 * waiter, whose client sends the request again; the step is not.
 */

static void
ngx_cdp_xid_last(ngx_cdp_xid_saga_t *s)
{
    ngx_uint_t  slot;

    if (s->handler == NULL) {
        ngx_cdp_xid_end(s, NGX_CDP_XID_DONE);
        return;
    }

    slot = ngx_cdp_key_slot(s->step->key.data, s->step->key.len);

    if (ngx_cdp_redis_replicas_slot(slot) == 0) {
        ngx_cdp_xid_end(s, NGX_CDP_XID_DONE);
        return;
    }

    if (ngx_cdp_xid_wait(s, slot, ngx_cdp_xid_last_waited) != NGX_OK) {
        ngx_cdp_count(NGX_CDP_C_UNREPLICATED, 1);
        s->unreplicated = 1;
        ngx_cdp_xid_end(s, NGX_CDP_XID_DONE);
    }

    /* else s may be gone already: its handler may have been called */
}


static void
ngx_cdp_xid_last_waited(ngx_cdp_redis_call_t *call, void *data)
{
    ngx_cdp_xid_saga_t  *s = call->data;
    redisReply          *reply = data;

    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER
        || reply->integer < 1)
    {
        ngx_cdp_count(NGX_CDP_C_UNREPLICATED, 1);
        s->unreplicated = 1;
    }

    ngx_cdp_xid_end(s, NGX_CDP_XID_DONE);
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
        /* the saga goes on; its waiter, if any, is told it failed */
        ngx_cdp_count(NGX_CDP_C_UNREPLICATED, 1);
        s->unreplicated = 1;
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
 * sweep that has not named a step yet is not retried: the next target,
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
    ngx_cdp_xid_warn(ngx_cdp_xid, s->kind,
                     (s->sweep && !s->counted) ? "sweep" : "saga",
                     &s->step->key, "abandoned", why, len);

    ngx_cdp_xid_end(s, NGX_CDP_XID_ABANDONED);
}


static void
ngx_cdp_xid_end(ngx_cdp_xid_saga_t *s, ngx_uint_t how)
{
    void                 *data;
    ngx_int_t             rc;
    ngx_str_t             result, *res;
    ngx_uint_t            sweep, counted;
    ngx_queue_t          *q;
    ngx_cdp_xid_t        *x;
    ngx_cdp_xid_saga_t   *w;
    ngx_cdp_xid_kind_t   *k;
    ngx_cdp_xid_done_pt   handler;

    x = ngx_cdp_xid;
    k = s->kind;

    ngx_queue_remove(&s->queue);

    if (s->ev.timer_set) {
        ngx_del_timer(&s->ev);
    }

    if (s->waiting) {
        ngx_queue_remove(&s->wait);
        x->nwaiting--;

    } else if (s->counted && !s->sweep) {
        x->active--;
    }

    sweep = s->sweep;
    counted = s->counted;
    handler = s->handler;
    data = s->data;

    if (handler == NULL && sweep && counted) {
        /* a saga the sweeper finished, or gave up */
        handler = k->swept;
    }

    result = s->result;

    switch (how) {

    case NGX_CDP_XID_DONE:
        rc = s->unreplicated ? NGX_ERROR : NGX_OK;
        res = &result;
        break;

    case NGX_CDP_XID_REFUSED:
        rc = NGX_DECLINED;
        res = &result;
        break;

    default: /* NGX_CDP_XID_ABANDONED */
        rc = NGX_ERROR;
        res = s->ended ? &result : NULL;
    }

    if (counted) {
        x->running--;
        ngx_cdp_count(k->c_running, (ngx_atomic_int_t) -1);
        ngx_cdp_count(how == NGX_CDP_XID_ABANDONED ? k->c_abandoned
                      : how == NGX_CDP_XID_REFUSED ? k->c_refused
                      : sweep ? k->c_swept : k->c_done,
                      1);
    }

    ngx_free(s->next);
    ngx_free(s->step);
    ngx_free(s);

    /* s is gone: the handler may answer a request, start a saga */

    if (handler) {
        handler(data, rc, res);
    }

    ngx_free(result.data);

    /* a place for the oldest waiting saga (none at exit) */

    while (!x->exiting && x->active < NGX_CDP_XID_MAX
           && !ngx_queue_empty(&x->waiting))
    {
        q = ngx_queue_head(&x->waiting);
        ngx_queue_remove(q);
        x->nwaiting--;

        w = ngx_queue_data(q, ngx_cdp_xid_saga_t, wait);
        w->waiting = 0;
        x->active++;

        ngx_cdp_xid_send(w);
    }

    if (sweep) {
        x->sweep = NULL;

        /* a saga done: the target again; nothing, a failure: the next */
        ngx_cdp_xid_swept(x, counted && how == NGX_CDP_XID_DONE);
    }
}


/*
 * The key, never the state (identifiers, traits); once a second.  how:
 * "abandoned", or "failed" (an error of the store that nobody waits for)
 */

static void
ngx_cdp_xid_warn(ngx_cdp_xid_t *x, ngx_cdp_xid_kind_t *k, const char *what,
    ngx_str_t *key, const char *how, u_char *why, size_t len)
{
    if (x == NULL || x->exiting || x->warned == ngx_time()) {
        return;
    }

    x->warned = ngx_time();

    ngx_log_error(NGX_LOG_WARN, x->log, 0,
                  "cdp: %s %s of \"%V\" %s: %*s (%s{result=\"%s\"})",
                  k->name, what, key, how, len, why, k->metric,
                  how[0] == 'f' ? "error" : "abandoned");
}


static void
ngx_cdp_xid_step_handler(ngx_event_t *ev)
{
    ngx_cdp_xid_send(ev->data);
}


/* the sweeper: the target at hand, or the first of a new round */

static void
ngx_cdp_xid_sweep_handler(ngx_event_t *ev)
{
    ngx_cdp_xid_t         *x = ev->data;

    ngx_cdp_xid_saga_t    *s;
    ngx_cdp_xid_target_t  *t;

    if (ngx_exiting || ngx_terminate || ngx_quit || x->sweep) {
        return;
    }

    if (x->target >= x->ntargets) {
        x->target = 0;
        x->swept = 0;
    }

    if (x->running >= NGX_CDP_XID_MAX) {
        ngx_add_timer(ev, NGX_CDP_XID_SWEEP_EVERY);
        return;
    }

    t = &x->targets[x->target];

    s = ngx_cdp_xid_new(x, t->kind, &t->key, &ngx_cdp_xid_sweep_state, 1);
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

    if (!more || ++x->swept >= x->targets[x->target].kind->sweep_max) {
        x->target++;
        x->swept = 0;
    }

    ngx_add_timer(&x->sweep_ev, x->target < x->ntargets
                                ? NGX_CDP_XID_SWEEP_NEXT
                                : NGX_CDP_XID_SWEEP_EVERY);
}
