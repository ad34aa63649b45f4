
/*
 * ngx_cdp: the event of a hit (ngx_cdp_hit.h), shared by the pixel,
 * edge capture and click redirects.
 */


#include "ngx_http_cdp_module.h"
#include "ngx_cdp_http.h"
#include "ngx_cdp_geo.h"
#include "ngx_cdp_policy.h"
#include "ngx_cdp_event.h"
#include "ngx_cdp_identify.h"
#include "ngx_cdp_cookie.h"
#include "ngx_cdp_suppress.h"
#include "ngx_cdp_hit.h"
#include "ngx_cdp_ingest.h"
#include "ngx_cdp_dest.h"
#include "ngx_cdp_audience.h"

#include "ngx_cdp_ident.h"


/* the hit of the request's query string; NGX_DECLINED: counted */

ngx_int_t
ngx_cdp_hit_parse_args(ngx_http_request_t *r, ngx_cdp_hit_t *hit)
{
    int      rc;
    u_char  *scratch;

    if (r->args.len > NGX_CDP_MAX_QUERY) {
        ngx_cdp_count(NGX_CDP_C_DROP_TOO_LARGE, 1);
        return NGX_DECLINED;
    }

    scratch = ngx_pnalloc(r->pool, r->args.len + 1);
    if (scratch == NULL) {
        ngx_cdp_count(NGX_CDP_C_DROP_MALFORMED, 1);
        return NGX_DECLINED;
    }

    rc = ngx_cdp_hit_parse(r->args.data, r->args.len, hit, scratch);

    if (rc != NGX_CDP_HIT_OK) {
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                       "cdp: pixel hit dropped: %d", rc);

        ngx_cdp_count(rc == NGX_CDP_HIT_TOO_LARGE ? NGX_CDP_C_DROP_TOO_LARGE
                                                  : NGX_CDP_C_DROP_MALFORMED,
                      1);
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/*
 * A captured page's or a click's hit under the pixel's rules: without
 * analytics consent only its aggregate; an erased person's browser loses
 * its cookie and nothing is kept; else the browser's id (minted and set
 * when new) and its event.  NGX_OK: recorded for the browser.
 */

ngx_int_t
ngx_cdp_hit_track(ngx_http_request_t *r, ngx_http_cdp_ctx_t *ctx,
    ngx_cdp_hit_t *hit)
{
    if (!(ngx_cdp_consent_eval(r, ctx)->purposes
          & NGX_CDP_CONSENT_ANALYTICS))
    {
        ngx_cdp_hit_record(r, ctx, hit, 0);
        return NGX_DECLINED;
    }

    if (ngx_cdp_suppress_cookie(r, ctx)
        || ngx_cdp_cookie_issue(r, ctx) != NGX_OK)
    {
        return NGX_DECLINED;
    }

    ngx_cdp_hit_record(r, ctx, hit, 1);

    return NGX_OK;
}


/*
 * A hit (of the pixel, a captured page, a click redirect) becomes an
 * event of the browser ctx->aid (person), or only a count in the day's
 * aggregate; a signed identity on it identifies the browser.
 */

void
ngx_cdp_hit_record(ngx_http_request_t *r, ngx_http_cdp_ctx_t *ctx,
    ngx_cdp_hit_t *hit, ngx_uint_t person)
{
    ngx_str_t                  json, attrs, key, route, name;
    ngx_uint_t                 kind;
    ngx_http_cdp_main_conf_t  *mcf;
    ngx_uint_t                 fact;
    u_char                     rbuf[NGX_CDP_EXTRA_LEN];

    if (!person) {
        if (hit->event.data) {
            name.data = (u_char *) hit->event.data;
            name.len = hit->event.len;

        } else {
            ngx_str_set(&name, "page");
        }

        if (ngx_cdp_aggregate(r, ctx, &name) != NGX_OK) {
            ngx_cdp_count(NGX_CDP_C_DROP_MALFORMED, 1);
        }

        return;
    }

    if (ngx_cdp_profile_key(r, ctx->aid, NGX_CDP_ID_HEX_LEN, &key) != NGX_OK
        || ngx_cdp_event_from_hit(r, ctx, hit, &json) != NGX_OK
        || ngx_cdp_event_attrs(r, ctx, &attrs) != NGX_OK)
    {
        ngx_cdp_count(NGX_CDP_C_DROP_MALFORMED, 1);
        return;
    }

    kind = hit->event.data ? NGX_CDP_EVENT_TRACK : NGX_CDP_EVENT_PAGE;

    if (ctx->aid_state == NGX_CDP_AID_NEW) {
        kind |= NGX_CDP_EVENT_NEW;
    }

    /* the request's consent decides where the event may go */

    mcf = ngx_http_get_module_main_conf(r, ngx_http_cdp_module);

    route.data = rbuf;
    route.len = ngx_cdp_dest_route(mcf, hit->event.data ? NGX_CDP_TYPE_TRACK
                                                        : NGX_CDP_TYPE_PAGE,
                                   (u_char *) hit->event.data,
                                   hit->event.len,
                                   ngx_cdp_consent_eval(r, ctx)->purposes, 0,
                                   rbuf);

    /* a track event whose name a segment rule counts: its fact's number */

    fact = ngx_cdp_audience_fact(mcf, hit->event.data, hit->event.len);

    if (fact) {
        route.len = ngx_sprintf(rbuf + route.len, ";%ui", fact) - rbuf;
    }

    (void) ngx_cdp_ingest_enqueue(&key, kind, &attrs, &json, &route);

    ngx_cdp_hit_identity(r, ctx, hit);
}


/*
 * No person, only a count: the field "<name>|<country>" of the day's
 * hash <prefix>:agg:<YYYY-MM-DD> (UTC), name "page" for a page view, an
 * event's name, or "filtered:<reason>"; "--" for an unknown country.
 */

ngx_int_t
ngx_cdp_aggregate(ngx_http_request_t *r, ngx_http_cdp_ctx_t *ctx,
    ngx_str_t *name)
{
    u_char      *p;
    ngx_tm_t     tm;
    ngx_str_t    key, field, none;
    ngx_time_t  *tp;

    ngx_cdp_geo_lookup(r, ctx);

    tp = ngx_timeofday();
    ngx_gmtime(tp->sec, &tm);

    key.data = ngx_pnalloc(r->pool, sizeof("agg:YYYY-MM-DD") - 1);
    if (key.data == NULL) {
        return NGX_ERROR;
    }

    key.len = ngx_sprintf(key.data, "agg:%4d-%02d-%02d", tm.ngx_tm_year,
                          tm.ngx_tm_mon, tm.ngx_tm_mday)
              - key.data;

    field.len = name->len + 1 + ngx_max(ctx->country.len, 2);
    field.data = ngx_pnalloc(r->pool, field.len);
    if (field.data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(field.data, name->data, name->len);

    *p++ = '|';

    p = ctx->country.len
        ? ngx_cpymem(p, ctx->country.data, ctx->country.len)
        : ngx_cpymem(p, "--", 2);

    field.len = p - field.data;

    none.data = (u_char *) "";
    none.len = 0;

    if (ngx_cdp_ingest_enqueue(&key, NGX_CDP_EVENT_AGGREGATE, &none, &field,
                               NULL)
        == NGX_OK)
    {
        ngx_cdp_count(NGX_CDP_C_AGGREGATED, 1);
    }

    return NGX_OK;
}


/*
 * uid and email on a pixel URL (e-mail campaigns) identify the browser
 * only when signed (ngx_cdp_idsig_check()); otherwise they are ignored and
 * counted, and the hit stays anonymous.
 */

void
ngx_cdp_hit_identity(ngx_http_request_t *r, ngx_http_cdp_ctx_t *ctx,
    ngx_cdp_hit_t *hit)
{
    ngx_cdp_identity_t  id;

    if (ngx_cdp_hit_signed(r, hit) != NGX_OK) {
        return;
    }

    ngx_memzero(&id, sizeof(ngx_cdp_identity_t));

    id.user_id.data = (u_char *) hit->uid.data;
    id.user_id.len = hit->uid.len;
    id.email.data = (u_char *) hit->email.data;
    id.email.len = hit->email.len;

    (void) ngx_cdp_identify(r, ctx, &id);
}


/* NGX_OK: the hit's uid and email carry a valid signature */

ngx_int_t
ngx_cdp_hit_signed(ngx_http_request_t *r, ngx_cdp_hit_t *hit)
{
    ngx_http_cdp_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_cdp_module);

    switch (ngx_cdp_idsig_check(hit, mcf->pixel_keys, mcf->nkeys,
                                ngx_time()))
    {
    case NGX_CDP_IDSIG_OK:
        return NGX_OK;

    case NGX_CDP_IDSIG_NONE:
        return NGX_DECLINED;

    case NGX_CDP_IDSIG_UNSIGNED:
        ngx_cdp_count(NGX_CDP_C_IDSIG_UNSIGNED, 1);
        return NGX_DECLINED;

    case NGX_CDP_IDSIG_EXPIRED:
        ngx_cdp_count(NGX_CDP_C_IDSIG_EXPIRED, 1);
        return NGX_DECLINED;

    default: /* NGX_CDP_IDSIG_BAD */
        ngx_cdp_count(NGX_CDP_C_IDSIG_BAD, 1);
        return NGX_DECLINED;
    }
}
