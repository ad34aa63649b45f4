
/*
 * ngx_cdp: what the edge may do with this request, decided before any
 * cookie is minted or a byte is stored.
 *
 * The consent state, strongest source first: the person's own choice in
 * our signed consent cookie; the site's CMP (cdp_consent, any nginx
 * complex value); Global Privacy Control (exactly "Sec-GPC: 1") taking
 * marketing off the default; the default (cdp_consent_default, typically a
 * map on $cdp_country).  Nothing configured means no consent: fail closed.
 * The rules themselves are pure code in ngx_cdp_consent.c.
 */


#include "ngx_http_cdp_module.h"
#include "ngx_cdp_http.h"
#include "ngx_cdp_policy.h"


/* ngx_current_msec of the last warning about a consent value */
static ngx_msec_t  ngx_cdp_consent_warned;


static int ngx_cdp_consent_value(ngx_http_request_t *r,
    ngx_http_complex_value_t *cv);
static int ngx_cdp_consent_cookie(ngx_http_request_t *r,
    ngx_http_cdp_loc_conf_t *lcf, ngx_http_cdp_main_conf_t *mcf);
static ngx_uint_t ngx_cdp_gpc(ngx_http_request_t *r);


ngx_cdp_consent_state_t *
ngx_cdp_consent_eval(ngx_http_request_t *r, ngx_http_cdp_ctx_t *ctx)
{
    int                        cookie, cmp, dflt;
    ngx_http_cdp_loc_conf_t   *lcf;
    ngx_http_cdp_main_conf_t  *mcf;

    if (ctx->consent_done) {
        return &ctx->consent;
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_cdp_module);
    lcf = ngx_http_get_module_loc_conf(r, ngx_http_cdp_module);

    cookie = ngx_cdp_consent_cookie(r, lcf, mcf);
    cmp = lcf->consent ? ngx_cdp_consent_value(r, lcf->consent) : -1;

    dflt = lcf->consent_default
           ? ngx_cdp_consent_value(r, lcf->consent_default) : -1;

    ctx->consent = ngx_cdp_consent_resolve(cookie, cmp, ngx_cdp_gpc(r), dflt);
    ctx->consent_done = 1;

    return &ctx->consent;
}


/*
 * The location's cdp_consent_default alone, for a request that speaks for
 * someone else (a backend's server API call: its own cookies and headers
 * say nothing of the person): its purposes, or 0.
 */

int
ngx_cdp_consent_default(ngx_http_request_t *r)
{
    int                       purposes;
    ngx_http_cdp_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_cdp_module);

    purposes = lcf->consent_default
               ? ngx_cdp_consent_value(r, lcf->consent_default) : -1;

    return purposes < 0 ? 0 : purposes;
}


/* a configured value: its purposes, or -1 when empty or not understood */

static int
ngx_cdp_consent_value(ngx_http_request_t *r, ngx_http_complex_value_t *cv)
{
    int        purposes;
    ngx_str_t  value;

    if (ngx_http_complex_value(r, cv, &value) != NGX_OK || value.len == 0) {
        return -1;
    }

    purposes = ngx_cdp_consent_parse(value.data, value.len);

    /*
     * a map or a CMP that says something else than purposes: worth a
     * warning, once a minute per worker (the value may come from clients)
     */

    if (purposes < 0
        && (ngx_cdp_consent_warned == 0
            || ngx_current_msec - ngx_cdp_consent_warned >= 60000))
    {
        ngx_cdp_consent_warned = ngx_current_msec ? ngx_current_msec : 1;

        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "cdp: consent value \"%V\" not understood, ignored "
                      "(\"all\", \"none\" or purposes among analytics, "
                      "marketing, personalization; logged once a minute)",
                      &value);
    }

    return purposes;
}


static int
ngx_cdp_consent_cookie(ngx_http_request_t *r, ngx_http_cdp_loc_conf_t *lcf,
    ngx_http_cdp_main_conf_t *mcf)
{
    int                       rc;
    ngx_str_t                 value;
    ngx_cdp_consent_cookie_t  cookie;

    if (mcf->nkeys == 0
        || ngx_cdp_cookie_find(r, &lcf->consent_cookie, &value) != NGX_OK)
    {
        return -1;
    }

    rc = ngx_cdp_consent_cookie_decode(value.data, value.len,
                                       mcf->consent_keys, mcf->nkeys,
                                       &cookie);

    if (rc != NGX_CDP_CONSENT_VALID && rc != NGX_CDP_CONSENT_VALID_OLD) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "cdp: consent cookie \"%V\" does not verify, ignored",
                      &lcf->consent_cookie);
        return -1;
    }

    return cookie.purposes;
}


/* only the exact header "Sec-GPC: 1" counts */

static ngx_uint_t
ngx_cdp_gpc(ngx_http_request_t *r)
{
    ngx_table_elt_t  *h;

    h = ngx_cdp_request_header(r, "Sec-GPC", sizeof("Sec-GPC") - 1);

    return h && h->value.len == 1 && h->value.data[0] == '1';
}


ngx_int_t
ngx_cdp_variable_consent(ngx_http_request_t *r, ngx_http_variable_value_t *v,
    uintptr_t data)
{
    u_char                   *p;
    ngx_http_cdp_ctx_t       *ctx;
    ngx_cdp_consent_state_t  *st;

    ctx = ngx_http_cdp_get_ctx(r);
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    st = ngx_cdp_consent_eval(r, ctx);

    p = ngx_pnalloc(r->pool, NGX_CDP_CONSENT_TEXT_MAX);
    if (p == NULL) {
        return NGX_ERROR;
    }

    v->len = ngx_cdp_consent_format(p, st->purposes);
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;
    v->data = p;

    return NGX_OK;
}
