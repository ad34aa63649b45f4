
/*
 * ngx_cdp: audiences (cdp_segment, cdp_profile_event): the rules,
 * compiled at configuration, and the per-event facts they need.
 */


#include "ngx_cdp_audience.h"
#include "ngx_cdp_http.h"
#include "ngx_cdp_ingest.h"
#include "ngx_cdp_redis.h"


static ngx_int_t ngx_cdp_audience_add_fact(ngx_conf_t *cf,
    ngx_http_cdp_main_conf_t *mcf, const u_char *name, size_t len,
    ngx_str_t *sums, size_t nsums);
static void ngx_cdp_audience_cleanup(void *data);
static void ngx_cdp_audience_tick(ngx_event_t *ev);
static void ngx_cdp_audience_ticked(ngx_cdp_redis_call_t *call,
    void *reply);
static void ngx_cdp_audience_backfill(ngx_event_t *ev);
static void ngx_cdp_audience_backfilled(ngx_cdp_redis_call_t *call,
    void *reply);


#define NGX_CDP_TICK_EVERY    1000      /* ms */
#define NGX_CDP_TICK_LIMIT    "200"     /* profiles a tick: ~20 ms */


/*
 * The calls of worker 0 go shard by shard on Redis Cluster (each call
 * stays in its shard's slot); on a standalone Redis one call, with shard
 * 0's keys, takes every shard.
 */
static ngx_uint_t            ngx_cdp_audience_shards;

/* worker 0's clock of the time-based segments */
static ngx_event_t           ngx_cdp_tick_ev;
static ngx_cdp_redis_call_t  ngx_cdp_tick_call;
static ngx_str_t            *ngx_cdp_due_keys;     /* per shard */
static ngx_uint_t            ngx_cdp_tick_shard;
static ngx_uint_t            ngx_cdp_tick_due;     /* still due, a round */

/* worker 0's backfill of new or changed segments */
static ngx_event_t           ngx_cdp_backfill_ev;
static ngx_cdp_redis_call_t  ngx_cdp_backfill_call;
static ngx_uint_t            ngx_cdp_backfill_shard;
static ngx_uint_t            ngx_cdp_backfill_sum; /* shards done */

#define NGX_CDP_BACKFILL_COUNT  "1000"      /* keys a SCAN step */
#define NGX_CDP_BACKFILL_PAUSE  10          /* ms between steps */


/* cdp_segment NAME 'RULE'; */

char *
ngx_cdp_audience_segment(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_cdp_main_conf_t *mcf = conf;

    ngx_str_t             *value;
    ngx_uint_t             i;
    ngx_pool_cleanup_t    *cln;
    ngx_cdp_audience_t    *a;
    ngx_cdp_rule_error_t   err;

    value = cf->args->elts;

    if (value[1].len == 0 || value[1].len > 64) {
        return "needs a name of 1 to 64 characters";
    }

    for (i = 0; i < value[1].len; i++) {
        if (!(isalnum(value[1].data[i]) || value[1].data[i] == '_'
              || value[1].data[i] == '-'))
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid segment name \"%V\": letters, "
                               "digits, \"_\" and \"-\" only", &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    if (mcf->segments == NULL) {
        mcf->segments = ngx_array_create(cf->pool, 4,
                                         sizeof(ngx_cdp_audience_t));
        if (mcf->segments == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    a = mcf->segments->elts;

    for (i = 0; i < mcf->segments->nelts; i++) {
        if (a[i].name.len == value[1].len
            && ngx_strncmp(a[i].name.data, value[1].data, value[1].len) == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate segment \"%V\"", &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    if (mcf->segments->nelts == NGX_CDP_SEGMENTS_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "too many segments: at most %d",
                           NGX_CDP_SEGMENTS_MAX);
        return NGX_CONF_ERROR;
    }

    a = ngx_array_push(mcf->segments);
    if (a == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(a, sizeof(ngx_cdp_audience_t));
    a->name = value[1];
    a->source = value[2];

    if (ngx_cdp_rule_compile(value[2].data, value[2].len, &a->rule, &err)
        != 0)
    {
        mcf->segments->nelts--;

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "cdp_segment \"%V\": rule at position %uz: %s",
                           &value[1], err.pos, err.msg);
        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        ngx_cdp_rule_free(&a->rule);
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_cdp_audience_cleanup;
    cln->data = &a->rule;

    return NGX_CONF_OK;
}


static void
ngx_cdp_audience_cleanup(void *data)
{
    ngx_cdp_rule_free(data);
}


/* cdp_profile_event "NAME" [sum=PROPERTY ...]; */

char *
ngx_cdp_audience_profile_event(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_cdp_main_conf_t *mcf = conf;

    ngx_str_t   *value, sums[NGX_CDP_FACT_SUMS_MAX];
    ngx_uint_t   i, n;

    value = cf->args->elts;

    if (value[1].len == 0 || value[1].len > NGX_CDP_RULE_NAME_MAX) {
        return "needs an event name of 1 to 200 bytes";
    }

    n = 0;

    for (i = 2; i < cf->args->nelts; i++) {
        if (value[i].len < 5 || ngx_strncmp(value[i].data, "sum=", 4) != 0
            || value[i].len - 4 > NGX_CDP_RULE_NAME_MAX)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid parameter \"%V\": sum=PROPERTY",
                               &value[i]);
            return NGX_CONF_ERROR;
        }

        if (n == NGX_CDP_FACT_SUMS_MAX) {
            return "has too many sum= (at most 8)";
        }

        sums[n].data = value[i].data + 4;
        sums[n].len = value[i].len - 4;
        n++;
    }

    if (ngx_cdp_audience_add_fact(cf, mcf, value[1].data, value[1].len,
                                  sums, n)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/*
 * Once the http block is read: the facts of every rule join those of
 * cdp_profile_event, and what cdp_ingest is told of them, after ARGV[1]'s
 * destinations: "|" then, a fact each, "<len>:<name>#<k>;" and k times
 * "<len>:<property>" (any bytes, by their length).
 */

char *
ngx_cdp_audience_init_main_conf(ngx_conf_t *cf,
    ngx_http_cdp_main_conf_t *mcf)
{
    u_char              *p;
    size_t               len;
    ngx_uint_t           i, j, k;
    ngx_str_t           *s;
    ngx_cdp_fact_t      *f;
    ngx_cdp_audience_t  *a;

    if (mcf->segments) {
        a = mcf->segments->elts;

        for (i = 0; i < mcf->segments->nelts; i++) {
            for (j = 0; j < a[i].rule.nevents; j++) {
                if (ngx_cdp_audience_add_fact(cf, mcf,
                                              a[i].rule.events[j].name.data,
                                              a[i].rule.events[j].name.len,
                                              (ngx_str_t *) NULL, 0)
                    != NGX_OK)
                {
                    return NGX_CONF_ERROR;
                }

                for (k = 0; k < a[i].rule.events[j].nsums; k++) {
                    ngx_str_t  sum;

                    sum.data = (u_char *) a[i].rule.events[j].sums[k].data;
                    sum.len = a[i].rule.events[j].sums[k].len;

                    if (ngx_cdp_audience_add_fact(cf, mcf,
                                          a[i].rule.events[j].name.data,
                                          a[i].rule.events[j].name.len,
                                          &sum, 1)
                        != NGX_OK)
                    {
                        return NGX_CONF_ERROR;
                    }
                }
            }
        }
    }

    if (mcf->segments) {
        /* "<len>:<name><len>:<program>" each */

        a = mcf->segments->elts;
        len = 0;

        for (i = 0; i < mcf->segments->nelts; i++) {
            len += 2 * (NGX_SIZE_T_LEN + 1) + a[i].name.len + a[i].rule.len;
        }

        p = ngx_pnalloc(cf->pool, len);
        if (p == NULL) {
            return NGX_CONF_ERROR;
        }

        mcf->segments_spec.data = p;

        for (i = 0; i < mcf->segments->nelts; i++) {
            p = ngx_sprintf(p, "%uz:%V%uz:", a[i].name.len, &a[i].name,
                            a[i].rule.len);
            p = ngx_cpymem(p, a[i].rule.code, a[i].rule.len);
        }

        mcf->segments_spec.len = p - mcf->segments_spec.data;
    }

    if (mcf->facts == NULL) {
        return NGX_CONF_OK;
    }

    f = mcf->facts->elts;
    len = 1;

    for (i = 0; i < mcf->facts->nelts; i++) {
        len += NGX_SIZE_T_LEN + 1 + f[i].name.len + 1 + NGX_INT_T_LEN + 1;

        s = f[i].sums->elts;

        for (j = 0; j < f[i].sums->nelts; j++) {
            len += NGX_SIZE_T_LEN + 1 + s[j].len;
        }
    }

    p = ngx_pnalloc(cf->pool, len);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    mcf->facts_spec.data = p;

    for (i = 0; i < mcf->facts->nelts; i++) {
        p = ngx_sprintf(p, "%uz:%V#%ui;", f[i].name.len, &f[i].name,
                        f[i].sums->nelts);

        s = f[i].sums->elts;

        for (j = 0; j < f[i].sums->nelts; j++) {
            p = ngx_sprintf(p, "%uz:%V", s[j].len, &s[j]);
        }
    }

    mcf->facts_spec.len = p - mcf->facts_spec.data;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_cdp_audience_add_fact(ngx_conf_t *cf, ngx_http_cdp_main_conf_t *mcf,
    const u_char *name, size_t len, ngx_str_t *sums, size_t nsums)
{
    size_t           i, j;
    ngx_str_t       *s;
    ngx_cdp_fact_t  *f;

    if (mcf->facts == NULL) {
        mcf->facts = ngx_array_create(cf->pool, 4, sizeof(ngx_cdp_fact_t));
        if (mcf->facts == NULL) {
            return NGX_ERROR;
        }
    }

    f = mcf->facts->elts;

    for (i = 0; i < mcf->facts->nelts; i++) {
        if (f[i].name.len == len && ngx_memcmp(f[i].name.data, name, len)
                                    == 0)
        {
            break;
        }
    }

    if (i == mcf->facts->nelts) {
        if (i == NGX_CDP_FACTS_MAX) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "more than %d event names in cdp_segment "
                               "rules and cdp_profile_event",
                               NGX_CDP_FACTS_MAX);
            return NGX_ERROR;
        }

        f = ngx_array_push(mcf->facts);
        if (f == NULL) {
            return NGX_ERROR;
        }

        f->name.data = ngx_pnalloc(cf->pool, len);
        f->sums = ngx_array_create(cf->pool, 2, sizeof(ngx_str_t));
        if (f->name.data == NULL || f->sums == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(f->name.data, name, len);
        f->name.len = len;

    } else {
        f = &f[i];
    }

    for (j = 0; j < nsums; j++) {
        s = f->sums->elts;

        for (i = 0; i < f->sums->nelts; i++) {
            if (s[i].len == sums[j].len
                && ngx_memcmp(s[i].data, sums[j].data, sums[j].len) == 0)
            {
                break;
            }
        }

        if (i < f->sums->nelts) {
            continue;
        }

        if (f->sums->nelts == NGX_CDP_FACT_SUMS_MAX) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "more than %d summed properties of the "
                               "event \"%V\"", NGX_CDP_FACT_SUMS_MAX,
                               &f->name);
            return NGX_ERROR;
        }

        s = ngx_array_push(f->sums);
        if (s == NULL) {
            return NGX_ERROR;
        }

        s->data = ngx_pnalloc(cf->pool, sums[j].len);
        if (s->data == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(s->data, sums[j].data, sums[j].len);
        s->len = sums[j].len;
    }

    return NGX_OK;
}


ngx_uint_t
ngx_cdp_audience_fact(ngx_http_cdp_main_conf_t *mcf, const u_char *name,
    size_t len)
{
    ngx_uint_t       i;
    ngx_cdp_fact_t  *f;

    if (mcf->facts == NULL || name == NULL) {
        return 0;
    }

    f = mcf->facts->elts;

    for (i = 0; i < mcf->facts->nelts; i++) {
        if (f[i].name.len == len && ngx_memcmp(f[i].name.data, name, len)
                                    == 0)
        {
            return i + 1;
        }
    }

    return 0;
}


/*
 * Rules with before() or within() change without an event: worker 0
 * asks the store every second to evaluate again the profiles that are
 * due (cdp_segments_tick, at most 200 a call, so that Redis is never
 * held for long: about 20 ms; at once again while more are due), so that
 * a profile enters or leaves within about a second of the moment its
 * rule flips.
 */

ngx_int_t
ngx_cdp_audience_init_process(ngx_cycle_t *cycle,
    ngx_http_cdp_main_conf_t *mcf)
{
    ngx_uint_t           i, timed;
    ngx_cdp_audience_t  *a;

    if (mcf->segments == NULL || ngx_worker != 0) {
        return NGX_OK;
    }

    ngx_cdp_audience_shards = mcf->redis.seeds ? mcf->redis.shards : 1;

    /* the profiles that exist, once for each version of the segments */

    ngx_cdp_backfill_ev.handler = ngx_cdp_audience_backfill;
    ngx_cdp_backfill_ev.log = cycle->log;
    ngx_cdp_backfill_ev.cancelable = 1;
    ngx_cdp_backfill_call.handler = ngx_cdp_audience_backfilled;

    ngx_add_timer(&ngx_cdp_backfill_ev, 200);

    a = mcf->segments->elts;
    timed = 0;

    for (i = 0; i < mcf->segments->nelts; i++) {
        timed |= (a[i].rule.flags & NGX_CDP_RULE_TIME);
    }

    if (!timed) {
        return NGX_OK;
    }

    ngx_cdp_due_keys = ngx_palloc(cycle->pool,
                                  ngx_cdp_audience_shards * sizeof(ngx_str_t));
    if (ngx_cdp_due_keys == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < ngx_cdp_audience_shards; i++) {
        if (ngx_cdp_ingest_key(cycle->pool, mcf, "segments:due", NULL, 0, i,
                               &ngx_cdp_due_keys[i])
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    ngx_cdp_tick_ev.handler = ngx_cdp_audience_tick;
    ngx_cdp_tick_ev.log = cycle->log;
    ngx_cdp_tick_ev.cancelable = 1;

    ngx_cdp_tick_call.handler = ngx_cdp_audience_ticked;

    ngx_add_timer(&ngx_cdp_tick_ev, NGX_CDP_TICK_EVERY);

    return NGX_OK;
}


static void
ngx_cdp_audience_tick(ngx_event_t *ev)
{
    ngx_str_t    argv1, stream;
    const char  *argv[7];
    size_t       lens[7];

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    ngx_cdp_ingest_argv1(&argv1, &stream, ngx_cdp_tick_shard);

    argv[0] = "FCALL";
    lens[0] = 5;
    argv[1] = "cdp_segments_tick";
    lens[1] = sizeof("cdp_segments_tick") - 1;
    argv[2] = "2";
    lens[2] = 1;
    argv[3] = (const char *) stream.data;
    lens[3] = stream.len;
    argv[4] = (const char *) ngx_cdp_due_keys[ngx_cdp_tick_shard].data;
    lens[4] = ngx_cdp_due_keys[ngx_cdp_tick_shard].len;
    argv[5] = (const char *) argv1.data;
    lens[5] = argv1.len;
    argv[6] = NGX_CDP_TICK_LIMIT;
    lens[6] = sizeof(NGX_CDP_TICK_LIMIT) - 1;

    if (ngx_cdp_redis_call(&ngx_cdp_tick_call, 7, argv, lens) != NGX_OK) {
        /*
         * Redis (the shard's master) is away: the other shards go on, and
         * this one is asked again the next round
         */
        ngx_cdp_audience_ticked(&ngx_cdp_tick_call, NULL);
    }
}


/* {evaluated, still due, segment events} */

static void
ngx_cdp_audience_ticked(ngx_cdp_redis_call_t *call, void *data)
{
    redisReply  *reply = data;

    ngx_msec_t  next;

    next = NGX_CDP_TICK_EVERY;

    if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 3) {
        ngx_cdp_count(NGX_CDP_C_SEG_EVALUATED, reply->element[0]->integer);
        ngx_cdp_count(NGX_CDP_C_SEG_EVENTS, reply->element[2]->integer);
        ngx_cdp_tick_due += reply->element[1]->integer;

    } else if (reply && reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, ngx_cdp_tick_ev.log, 0,
                      "cdp: cdp_segments_tick failed: %s", reply->str);
    }

    if (++ngx_cdp_tick_shard < ngx_cdp_audience_shards) {
        /* the next shard's, at once */
        next = 1;

    } else {
        /* the round is over */
        if (ngx_cdp_counters) {
            ngx_cdp_counters[NGX_CDP_C_SEG_DUE] = ngx_cdp_tick_due;
        }

        if (ngx_cdp_tick_due > 0) {
            /* more are due than a tick takes: at once again */
            next = 1;
        }

        ngx_cdp_tick_shard = 0;
        ngx_cdp_tick_due = 0;
    }

    if (!ngx_exiting && !ngx_terminate && !ngx_quit) {
        ngx_add_timer(&ngx_cdp_tick_ev, next);
    }
}


/*
 * A reload with new or changed segments: the profiles that exist are
 * evaluated, a SCAN step of 1000 keys a call, 10 ms apart, until the
 * store says it is done for this version of the segments
 * (cdp_segments_backfill); cdp_status shows how far.
 */

static void
ngx_cdp_audience_backfill(ngx_event_t *ev)
{
    ngx_str_t    argv1, stream;
    const char  *argv[6];
    size_t       lens[6];

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    ngx_cdp_ingest_argv1(&argv1, &stream, ngx_cdp_backfill_shard);

    argv[0] = "FCALL";
    lens[0] = 5;
    argv[1] = "cdp_segments_backfill";
    lens[1] = sizeof("cdp_segments_backfill") - 1;
    argv[2] = "1";
    lens[2] = 1;
    argv[3] = (const char *) stream.data;
    lens[3] = stream.len;
    argv[4] = (const char *) argv1.data;
    lens[4] = argv1.len;
    argv[5] = NGX_CDP_BACKFILL_COUNT;
    lens[5] = sizeof(NGX_CDP_BACKFILL_COUNT) - 1;

    if (ngx_cdp_redis_call(&ngx_cdp_backfill_call, 6, argv, lens)
        != NGX_OK)
    {
        ngx_add_timer(&ngx_cdp_backfill_ev, 1000);
    }
}


/* {done, profiles evaluated, segment events} */

static void
ngx_cdp_audience_backfilled(ngx_cdp_redis_call_t *call, void *data)
{
    redisReply  *reply = data;

    ngx_uint_t   done;

    if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 3) {
        done = (reply->element[0]->integer == 1);

        if (done) {
            ngx_cdp_backfill_sum += reply->element[1]->integer;
            ngx_cdp_backfill_shard++;
        }

        done = (ngx_cdp_backfill_shard == ngx_cdp_audience_shards);

        if (ngx_cdp_counters) {
            /* the profiles of the shards done, and of the one under way */
            ngx_cdp_counters[NGX_CDP_C_SEG_BACKFILLED] =
                ngx_cdp_backfill_sum
                + (reply->element[0]->integer == 1
                   ? 0 : reply->element[1]->integer);
            ngx_cdp_counters[NGX_CDP_C_SEG_BACKFILL_DONE] = done;
        }

        ngx_cdp_count(NGX_CDP_C_SEG_EVENTS, reply->element[2]->integer);

        if (done) {
            return;
        }

    } else if (reply && reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, ngx_cdp_backfill_ev.log, 0,
                      "cdp: cdp_segments_backfill failed: %s", reply->str);
    }

    if (!ngx_exiting && !ngx_terminate && !ngx_quit) {
        ngx_add_timer(&ngx_cdp_backfill_ev,
                      reply ? NGX_CDP_BACKFILL_PAUSE : 1000);
    }
}
