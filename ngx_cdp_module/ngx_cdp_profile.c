
/*
 * ngx_cdp: the profile in the request path (cdp_profile on).
 *
 * Before a request of such a location goes on (its preaccess phase), the
 * browser's profile id and segments are read from Redis, without
 * blocking: the request waits for the reply like an API request, at most
 * cdp_profile_timeout, then goes on with or without them.  They are the
 * variables $cdp_profile_id and $cdp_segments (proxy_set_header, map,
 * if, log_format).  Only for a browser with a valid cookie and
 * personalization consent: otherwise nothing is read and both are empty.
 */


#include "ngx_http_cdp_module.h"
#include "ngx_cdp_http.h"
#include "ngx_cdp_cookie.h"
#include "ngx_cdp_policy.h"
#include "ngx_cdp_suppress.h"
#include "ngx_cdp_profile.h"
#include "ngx_cdp_redis.h"
#include "ngx_cdp_ingest.h"


#define NGX_CDP_PROFILE_NONE      0
#define NGX_CDP_PROFILE_WAITING   1
#define NGX_CDP_PROFILE_DONE      2

/* on a cluster: the calls that follow a browser to its person's shard */
#define NGX_CDP_PROFILE_HOPS      4


/* outlives its request when the reply comes after the timeout */
typedef struct {
    ngx_cdp_redis_call_t       call;
    ngx_http_request_t        *request;     /* NULL: gone, or answered */
    ngx_pool_cleanup_t        *cln;         /* in the request's pool */
    ngx_event_t                timer;
    unsigned                   calling:1;   /* in ngx_cdp_redis_call() */
    unsigned                   answered:1;
    unsigned                   hops:3;
} ngx_cdp_profile_wait_t;


static ngx_int_t ngx_cdp_profile_call(ngx_cdp_profile_wait_t *w,
    ngx_http_request_t *r, u_char *id, size_t len);
static void ngx_cdp_profile_done(ngx_cdp_redis_call_t *call, void *reply);
static void ngx_cdp_profile_timeout(ngx_event_t *ev);
static void ngx_cdp_profile_cleanup(void *data);
static void ngx_cdp_profile_resume(ngx_http_request_t *r);


ngx_int_t
ngx_cdp_profile_handler(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t        *cln;
    ngx_http_cdp_ctx_t        *ctx;
    ngx_cdp_profile_wait_t    *w;
    ngx_http_cdp_loc_conf_t   *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_cdp_module);

    if (lcf->profile != 1 || r != r->main) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_cdp_get_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (ctx->profile_state == NGX_CDP_PROFILE_DONE) {
        return NGX_DECLINED;
    }

    if (ctx->profile_state == NGX_CDP_PROFILE_WAITING) {
        return NGX_DONE;
    }

    ctx->profile_state = NGX_CDP_PROFILE_DONE;

    if (!(ngx_cdp_consent_eval(r, ctx)->purposes
          & NGX_CDP_CONSENT_PERSONALIZATION)
        || lcf->cookie == NULL)
    {
        return NGX_DECLINED;
    }

    ngx_cdp_cookie_read(r, ctx, 0);

    if (ctx->aid_state != NGX_CDP_AID_KEPT || ngx_cdp_suppress_has(ctx->aid))
    {
        return NGX_DECLINED;
    }

    w = ngx_calloc(sizeof(ngx_cdp_profile_wait_t), r->connection->log);
    cln = ngx_pool_cleanup_add(r->pool, 0);

    if (w == NULL || cln == NULL) {
        ngx_free(w);
        return NGX_DECLINED;
    }

    w->call.handler = ngx_cdp_profile_done;
    w->call.data = w;
    w->request = r;
    w->cln = cln;
    w->calling = 1;

    if (ngx_cdp_profile_call(w, r, ctx->aid, NGX_CDP_ID_HEX_LEN) != NGX_OK) {
        /* Redis is away: the request goes on without */
        ngx_free(w);
        return NGX_DECLINED;
    }

    w->calling = 0;

    if (w->answered) {
        /* answered at once (a lost connection) */
        ngx_free(w);
        return NGX_DECLINED;
    }

    cln->handler = ngx_cdp_profile_cleanup;
    cln->data = w;

    w->timer.handler = ngx_cdp_profile_timeout;
    w->timer.data = w;
    w->timer.log = r->connection->log;
    ngx_add_timer(&w->timer, lcf->profile_timeout);

    ctx->profile_state = NGX_CDP_PROFILE_WAITING;
    ctx->profile_wait = w;

    return NGX_DONE;
}


/*
 * FCALL_RO cdp_profile_view of profile id's key (the browser's, or on a
 * cluster the person's in another shard, which the reply named)
 */

static ngx_int_t
ngx_cdp_profile_call(ngx_cdp_profile_wait_t *w, ngx_http_request_t *r,
    u_char *id, size_t len)
{
    u_char                    *shards, num[NGX_INT_T_LEN];
    size_t                     lens[6];
    ngx_str_t                  key;
    const char                *argv[6];
    ngx_http_cdp_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_cdp_module);

    if (ngx_cdp_ingest_key(r->pool, mcf, "profile", id, len, 0, &key)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    shards = ngx_sprintf(num, "%ui", mcf->redis.shards);

    argv[0] = "FCALL_RO";
    lens[0] = 8;
    argv[1] = "cdp_profile_view";
    lens[1] = sizeof("cdp_profile_view") - 1;
    argv[2] = "1";
    lens[2] = 1;
    argv[3] = (const char *) key.data;
    lens[3] = key.len;
    argv[4] = (const char *) num;
    lens[4] = shards - num;
    argv[5] = "1";                      /* one slot a call */
    lens[5] = 1;

    return ngx_cdp_redis_call(&w->call, mcf->redis.seeds ? 6 : 5, argv,
                              lens);
}


/*
 * The reply: {profile id, segments}; on a cluster {"", "", profile id}
 * when the browser's person is in another shard: asked there (the timer
 * goes on)
 */

static void
ngx_cdp_profile_done(ngx_cdp_redis_call_t *call, void *data)
{
    redisReply  *reply = data;

    ngx_http_request_t      *r;
    ngx_http_cdp_ctx_t      *ctx;
    ngx_cdp_profile_wait_t  *w;

    w = call->data;
    r = w->request;

    if (r && reply && reply->type == REDIS_REPLY_ARRAY
        && reply->elements == 3
        && reply->element[2]->type == REDIS_REPLY_STRING
        && reply->element[2]->len > 0
        && w->hops < NGX_CDP_PROFILE_HOPS)
    {
        w->hops++;

        if (ngx_cdp_profile_call(w, r, (u_char *) reply->element[2]->str,
                                 reply->element[2]->len)
            == NGX_OK)
        {
            /* its reply comes here (maybe came already: w may be gone) */
            return;
        }
    }

    if (w->timer.timer_set) {
        ngx_del_timer(&w->timer);
    }

    if (r == NULL) {
        /* the request went on (timeout) or away: nothing refers to w */
        ngx_free(w);
        return;
    }

    w->request = NULL;
    w->answered = 1;
    ctx = ngx_http_get_module_ctx(r, ngx_http_cdp_module);

    if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 2
        && reply->element[0]->type == REDIS_REPLY_STRING
        && reply->element[1]->type == REDIS_REPLY_STRING)
    {
        ctx->profile_id.data = ngx_pnalloc(r->pool, reply->element[0]->len);
        ctx->segments.data = ngx_pnalloc(r->pool, reply->element[1]->len);

        if (ctx->profile_id.data && ctx->segments.data) {
            ctx->profile_id.len = reply->element[0]->len;
            ngx_memcpy(ctx->profile_id.data, reply->element[0]->str,
                       reply->element[0]->len);
            ctx->segments.len = reply->element[1]->len;
            ngx_memcpy(ctx->segments.data, reply->element[1]->str,
                       reply->element[1]->len);
        }
    }

    ctx->profile_wait = NULL;

    if (w->calling) {
        /* within ngx_cdp_redis_call(): the handler goes on and frees w */
        return;
    }

    w->cln->handler = NULL;
    ngx_free(w);

    ngx_cdp_profile_resume(r);
}


static void
ngx_cdp_profile_timeout(ngx_event_t *ev)
{
    ngx_http_request_t      *r;
    ngx_http_cdp_ctx_t      *ctx;
    ngx_cdp_profile_wait_t  *w;

    w = ev->data;
    r = w->request;

    /* the reply, when it comes, frees w; the request forgets it */
    w->request = NULL;
    w->cln->handler = NULL;

    ctx = ngx_http_get_module_ctx(r, ngx_http_cdp_module);
    ctx->profile_wait = NULL;

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "cdp: no profile within cdp_profile_timeout, going on "
                  "without");

    ngx_cdp_profile_resume(r);
}


static void
ngx_cdp_profile_resume(ngx_http_request_t *r)
{
    ngx_connection_t    *c;
    ngx_http_cdp_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_cdp_module);
    ctx->profile_state = NGX_CDP_PROFILE_DONE;

    c = r->connection;

    r->write_event_handler = ngx_http_core_run_phases;
    ngx_http_core_run_phases(r);
    ngx_http_run_posted_requests(c);
}


/* the request is freed while it waits: the reply must not touch it */

static void
ngx_cdp_profile_cleanup(void *data)
{
    ngx_cdp_profile_wait_t  *w = data;

    /* still waiting for the reply, which frees w */

    if (w->timer.timer_set) {
        ngx_del_timer(&w->timer);
    }

    w->request = NULL;
}


ngx_int_t
ngx_cdp_variable_segments(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t           *s;
    ngx_http_cdp_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r->main, ngx_http_cdp_module);

    if (ctx == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    s = data ? &ctx->profile_id : &ctx->segments;

    v->len = s->len;
    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;
    v->data = s->data ? s->data : (u_char *) "";

    return NGX_OK;
}
