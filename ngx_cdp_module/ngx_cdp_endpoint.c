
/*
 * ngx_cdp: the JavaScript-free consent endpoint (cdp_consent_endpoint).
 *
 * GET answers the request's consent state as JSON.  POST takes an
 * ordinary HTML form (grant=analytics&grant=marketing&redirect=/page),
 * sets the signed consent cookie, clears the anonymous cookie when
 * analytics is withdrawn, logs the choice as proof of consent (with a
 * keyed hash of the browser's id, never the id) and answers 303 to a
 * same-site page, or JSON when asked for JSON.  Cross-site posts are
 * refused.
 */


#include "ngx_http_cdp_module.h"
#include "ngx_cdp_http.h"
#include "ngx_cdp_cookie.h"
#include "ngx_cdp_policy.h"
#include "ngx_cdp_endpoint.h"
#include "ngx_cdp_ingest.h"
#include "ngx_cdp_stamp.h"

#include "ngx_cdp_ident.h"


#define NGX_CDP_FORM_MAX  4096


static void ngx_cdp_consent_body(ngx_http_request_t *r);
static ngx_int_t ngx_cdp_consent_post(ngx_http_request_t *r);
static int ngx_cdp_consent_grant(u_char *v, ssize_t len);
static ngx_int_t ngx_cdp_consent_cross_site(ngx_http_request_t *r);
static ngx_int_t ngx_cdp_consent_log(ngx_http_request_t *r, int purposes);
static ngx_int_t ngx_cdp_consent_redirect(ngx_http_request_t *r,
    u_char *to, size_t len);
static ngx_int_t ngx_cdp_consent_state(ngx_http_request_t *r, int purposes,
    int source);


ngx_int_t
ngx_cdp_consent_handler(ngx_http_request_t *r)
{
    ngx_int_t                 rc;
    ngx_str_t                *ct;
    ngx_http_cdp_ctx_t       *ctx;
    ngx_cdp_consent_state_t  *st;

    ctx = ngx_http_cdp_get_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD)) {
        st = ngx_cdp_consent_eval(r, ctx);

        return ngx_cdp_consent_state(r, st->purposes, st->source);
    }

    if (r->method != NGX_HTTP_POST) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    if (ngx_cdp_consent_cross_site(r) != NGX_OK) {
        return ngx_cdp_error(r, NGX_HTTP_FORBIDDEN, "cross_site",
                             "cross-site request refused", NULL);
    }

    ct = r->headers_in.content_type ? &r->headers_in.content_type->value
                                    : NULL;

    if (ct == NULL
        || ct->len < sizeof("application/x-www-form-urlencoded") - 1
        || ngx_strncasecmp(ct->data,
                           (u_char *) "application/x-www-form-urlencoded",
                           sizeof("application/x-www-form-urlencoded") - 1)
           != 0)
    {
        return ngx_cdp_error(r, NGX_HTTP_UNSUPPORTED_MEDIA_TYPE,
                             "unsupported_media_type",
                             "an HTML form is expected: "
                             "application/x-www-form-urlencoded",
                             "Content-Type");
    }

    if (r->headers_in.content_length_n > NGX_CDP_FORM_MAX) {
        return ngx_cdp_error(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                             "body_too_large", "form over 4096 bytes", NULL);
    }

    rc = ngx_http_read_client_request_body(r, ngx_cdp_consent_body);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


static void
ngx_cdp_consent_body(ngx_http_request_t *r)
{
    ngx_http_finalize_request(r, ngx_cdp_consent_post(r));
}


static ngx_int_t
ngx_cdp_consent_post(ngx_http_request_t *r)
{
    int                        purposes, p;
    size_t                     len;
    u_char                    *form, *last, *redirect;
    ssize_t                    n, rlen;
    ngx_str_t                  value;
    ngx_chain_t               *cl;
    ngx_cdp_kv_t               kv;
    const u_char              *pos;
    ngx_table_elt_t           *accept;
    ngx_http_cdp_loc_conf_t   *lcf;
    ngx_http_cdp_main_conf_t  *mcf;
    u_char                     cookie[NGX_CDP_CONSENT_COOKIE_MAX];
    u_char                     name[16];

    mcf = ngx_http_get_module_main_conf(r, ngx_http_cdp_module);
    lcf = ngx_http_get_module_loc_conf(r, ngx_http_cdp_module);

    /* the form, in one piece */

    form = ngx_pnalloc(r->pool, NGX_CDP_FORM_MAX + 1);
    if (form == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    last = form;

    for (cl = r->request_body ? r->request_body->bufs : NULL;
         cl;
         cl = cl->next)
    {
        if (cl->buf->in_file) {
            return ngx_cdp_error(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                 "body_too_large", "form over 4096 bytes",
                                 NULL);
        }

        if (!ngx_buf_in_memory(cl->buf)) {
            /* the last_buf marker of an empty or chunked body */
            continue;
        }

        len = cl->buf->last - cl->buf->pos;

        if ((size_t) (last - form) + len > NGX_CDP_FORM_MAX) {
            return ngx_cdp_error(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                 "body_too_large", "form over 4096 bytes",
                                 NULL);
        }

        last = ngx_cpymem(last, cl->buf->pos, len);
    }

    /* grant=... (repeated), redirect=... */

    purposes = 0;
    redirect = NULL;
    rlen = 0;

    pos = form;

    while (ngx_cdp_query_next(&pos, last, &kv)) {

        if (kv.key_len > sizeof(name)) {
            continue;
        }

        n = ngx_cdp_unescape(name, kv.key, kv.key_len);

        if (n == 5 && ngx_strncmp(name, "grant", 5) == 0) {
            value.data = ngx_pnalloc(r->pool, kv.val_len + 1);
            if (value.data == NULL) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            /* one purpose per field, as a form's checkboxes send them */

            n = ngx_cdp_unescape(value.data, kv.val, kv.val_len);
            p = ngx_cdp_consent_grant(value.data, n);

            if (p < 0) {
                return ngx_cdp_error(r, NGX_HTTP_BAD_REQUEST,
                                     "unknown_purpose", "unknown purpose",
                                     "grant");
            }

            purposes |= p;
            continue;
        }

        if (n == 8 && ngx_strncmp(name, "redirect", 8) == 0
            && redirect == NULL)
        {
            redirect = ngx_pnalloc(r->pool, kv.val_len + 1);
            if (redirect == NULL) {
                return NGX_HTTP_INTERNAL_SERVER_ERROR;
            }

            rlen = ngx_cdp_unescape(redirect, kv.val, kv.val_len);
        }
    }

    /* the person's choice, signed */

    len = ngx_cdp_consent_cookie_encode(cookie, purposes,
                                        lcf->consent_version.data,
                                        lcf->consent_version.len, ngx_time(),
                                        &mcf->consent_keys[0]);
    if (len == 0) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    value.data = cookie;
    value.len = len;

    if (ngx_cdp_cookie_set(r, &lcf->consent_cookie, &value,
                           NGX_CDP_MAX_AGE_LIMIT)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (!(purposes & NGX_CDP_CONSENT_ANALYTICS)) {
        /* withdrawn: the browser forgets its id */
        ngx_str_set(&value, "");

        if (ngx_cdp_cookie_set(r, &lcf->cookie->name, &value, 0) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    (void) ngx_cdp_consent_log(r, purposes);

    accept = ngx_cdp_request_header(r, "Accept", sizeof("Accept") - 1);

    if (accept
        && ngx_strlcasestrn(accept->value.data,
                            accept->value.data + accept->value.len,
                            (u_char *) "application/json",
                            sizeof("application/json") - 2))
    {
        return ngx_cdp_consent_state(r, purposes, NGX_CDP_CONSENT_SRC_COOKIE);
    }

    return ngx_cdp_consent_redirect(r, redirect, rlen > 0 ? rlen : 0);
}


static int
ngx_cdp_consent_grant(u_char *v, ssize_t len)
{
    if (len == 3 && ngx_strncmp(v, "all", 3) == 0) {
        return NGX_CDP_CONSENT_ALL;
    }

    if (len == 9 && ngx_strncmp(v, "analytics", 9) == 0) {
        return NGX_CDP_CONSENT_ANALYTICS;
    }

    if (len == 9 && ngx_strncmp(v, "marketing", 9) == 0) {
        return NGX_CDP_CONSENT_MARKETING;
    }

    if (len == 15 && ngx_strncmp(v, "personalization", 15) == 0) {
        return NGX_CDP_CONSENT_PERSONALIZATION;
    }

    return -1;
}


/*
 * A browser says where a request comes from: Sec-Fetch-Site, or at least
 * Origin, which must then name this very host.
 */

static ngx_int_t
ngx_cdp_consent_cross_site(ngx_http_request_t *r)
{
    u_char           *p, *end;
    ngx_str_t        *v;
    ngx_table_elt_t  *h;

    h = ngx_cdp_request_header(r, "Sec-Fetch-Site",
                               sizeof("Sec-Fetch-Site") - 1);

    if (h) {
        v = &h->value;

        if (!((v->len == 11 && ngx_strncmp(v->data, "same-origin", 11) == 0)
              || (v->len == 9 && ngx_strncmp(v->data, "same-site", 9) == 0)
              || (v->len == 4 && ngx_strncmp(v->data, "none", 4) == 0)))
        {
            return NGX_DECLINED;
        }
    }

    h = ngx_cdp_request_header(r, "Origin", sizeof("Origin") - 1);

    if (h == NULL) {
        return NGX_OK;
    }

    /* "scheme://host[:port]" against the Host header */

    p = h->value.data;
    end = p + h->value.len;

    p = ngx_strlcasestrn(p, end, (u_char *) "://", 3 - 1);
    if (p == NULL || r->headers_in.host == NULL) {
        return NGX_DECLINED;
    }

    p += 3;

    if ((size_t) (end - p) != r->headers_in.host->value.len
        || ngx_strncasecmp(p, r->headers_in.host->value.data, end - p) != 0)
    {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_cdp_consent_log(ngx_http_request_t *r, int purposes)
{
    int                        rc;
    u_char                    *p;
    ngx_str_t                  key, entry, none, value;
    ngx_uint_t                 i;
    ngx_time_t                *tp;
    ngx_http_cdp_loc_conf_t   *lcf;
    ngx_http_cdp_main_conf_t  *mcf;
    u_char                     aid[NGX_CDP_ID_HEX_LEN];
    u_char                     ts[NGX_CDP_ISO8601_LEN];

    static const char  *names[] = { "analytics", "marketing",
                                    "personalization" };

    mcf = ngx_http_get_module_main_conf(r, ngx_http_cdp_module);
    lcf = ngx_http_get_module_loc_conf(r, ngx_http_cdp_module);

    entry.data = ngx_pnalloc(r->pool, 512 + lcf->consent_version.len);
    if (entry.data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(entry.data, "{\"aid\":", sizeof("{\"aid\":") - 1);

    /* the browser, as a hash: proof without the id itself */

    rc = NGX_CDP_COOKIE_MALFORMED;

    if (ngx_cdp_cookie_find(r, &lcf->cookie->name, &value) == NGX_OK) {
        rc = ngx_cdp_cookie_decode(value.data, value.len, mcf->cookie_keys,
                                   mcf->nkeys, aid);
    }

    if ((rc == NGX_CDP_COOKIE_VALID || rc == NGX_CDP_COOKIE_VALID_OLD)
        && ngx_cdp_aid_hash(p + 1, aid))
    {
        /* the name erasure and suppression use too (ngx_cdp_ident.h) */
        *p = '"';
        p += 1 + NGX_CDP_AIDH_LEN;
        *p++ = '"';

    } else {
        p = ngx_cpymem(p, "null", 4);
    }

    p = ngx_cpymem(p, ",\"granted\":[", sizeof(",\"granted\":[") - 1);

    for (i = 0; i < 3; i++) {
        if (purposes & (1 << i)) {
            p = ngx_sprintf(p, "%s\"%s\"", p[-1] == '[' ? "" : ",", names[i]);
        }
    }

    p = ngx_cpymem(p, "],\"denied\":[", sizeof("],\"denied\":[") - 1);

    for (i = 0; i < 3; i++) {
        if (!(purposes & (1 << i))) {
            p = ngx_sprintf(p, "%s\"%s\"", p[-1] == '[' ? "" : ",", names[i]);
        }
    }

    tp = ngx_timeofday();
    (void) ngx_cdp_iso8601(ts, tp->sec, (unsigned) tp->msec);

    /* the version is [A-Za-z0-9._-]: nothing to escape */

    p = ngx_sprintf(p, "],\"source\":\"form\",\"version\":\"%V\","
                    "\"timestamp\":\"", &lcf->consent_version);
    p = ngx_cpymem(p, ts, NGX_CDP_ISO8601_LEN);
    p = ngx_cpymem(p, "\"}", 2);

    entry.len = p - entry.data;

    ngx_str_set(&key, "consent_log");
    ngx_str_set(&none, "");

    return ngx_cdp_ingest_enqueue(&key, NGX_CDP_EVENT_LOG, &none, &entry,
                                 NULL);
}


/* 303 to a path of this site only: never an open redirect */

static ngx_int_t
ngx_cdp_consent_redirect(ngx_http_request_t *r, u_char *to, size_t len)
{
    size_t            i;
    ngx_table_elt_t  *location;

    if (to == NULL || len == 0 || to[0] != '/' || (len > 1 && to[1] == '/'))
    {
        to = (u_char *) "/";
        len = 1;
    }

    for (i = 0; i < len; i++) {
        if (to[i] == '\\' || to[i] < 0x20 || to[i] == 0x7f) {
            to = (u_char *) "/";
            len = 1;
            break;
        }
    }

    location = ngx_list_push(&r->headers_out.headers);
    if (location == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /*
     * A plain header, not r->headers_out.location: nginx would make the
     * path absolute with the request's Host header.
     */

    location->hash = 1;
    ngx_str_set(&location->key, "Location");
    location->value.data = to;
    location->value.len = len;

    return ngx_cdp_send(r, NGX_HTTP_SEE_OTHER, NULL, NULL, 0);
}


static ngx_int_t
ngx_cdp_consent_state(ngx_http_request_t *r, int purposes, int source)
{
    u_char                   *json;
    size_t                    len;
    ngx_http_cdp_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_cdp_module);

    len = 128 + lcf->consent_version.len;

    json = ngx_pnalloc(r->pool, len);
    if (json == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    len = ngx_sprintf(json, "{\"analytics\":%s,\"marketing\":%s,"
                      "\"personalization\":%s,\"source\":\"%s\","
                      "\"version\":\"%V\"}",
                      (purposes & NGX_CDP_CONSENT_ANALYTICS) ? "true"
                                                             : "false",
                      (purposes & NGX_CDP_CONSENT_MARKETING) ? "true"
                                                             : "false",
                      (purposes & NGX_CDP_CONSENT_PERSONALIZATION)
                          ? "true" : "false",
                      ngx_cdp_consent_source_name(source),
                      &lcf->consent_version)
          - json;

    return ngx_cdp_send(r, NGX_HTTP_OK, "application/json", json, len);
}
