
/*
 * ngx_cdp: the anonymous id cookie.
 *
 * The id is 128 bits from RAND_bytes; the cookie carries it in hex with a
 * 96-bit HMAC-SHA256 tag (ngx_cdp_crypto.c), so ids can be neither forged
 * nor enumerated.  Unlike nginx's userid, nothing in it derives from the
 * server address, time, pid or a counter.
 */


#include "ngx_http_cdp_module.h"
#include "ngx_cdp_http.h"
#include "ngx_cdp_cookie.h"
#include "ngx_cdp_policy.h"

#include <openssl/rand.h>


static ngx_int_t ngx_cdp_random_id(u_char *id);


/*
 * New ids are cut from a pool of RAND_bytes() output: one call per 256
 * ids instead of one per id, as OpenSSL 3's RAND_bytes() costs more than
 * the rest of a pixel hit.  Bytes are used once and wiped; the pool is
 * refilled in the process that uses it, so forked workers never share it.
 */

static u_char     ngx_cdp_rand_pool[NGX_CDP_ID_LEN * 256];
static size_t     ngx_cdp_rand_left;
static ngx_pid_t  ngx_cdp_rand_pid;


/*
 * Looks at the request's cookie once: a valid one sets ctx->aid.  With
 * count, the outcome is counted (the pixel does; variables do not).
 */

void
ngx_cdp_cookie_read(ngx_http_request_t *r, ngx_http_cdp_ctx_t *ctx,
    ngx_uint_t count)
{
    int                        rc;
    ngx_str_t                  value;
    ngx_http_cdp_loc_conf_t   *lcf;
    ngx_http_cdp_main_conf_t  *mcf;

    if (ctx->aid_state != NGX_CDP_AID_UNKNOWN) {
        return;
    }

    ctx->aid_state = NGX_CDP_AID_NONE;

    /* without analytics consent an existing id is not used either */

    if (!(ngx_cdp_consent_eval(r, ctx)->purposes
          & NGX_CDP_CONSENT_ANALYTICS))
    {
        return;
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_cdp_module);
    lcf = ngx_http_get_module_loc_conf(r, ngx_http_cdp_module);

    if (mcf->nkeys == 0
        || ngx_cdp_cookie_find(r, &lcf->cookie->name, &value) != NGX_OK)
    {
        return;
    }

    rc = ngx_cdp_cookie_decode(value.data, value.len, mcf->cookie_keys,
                               mcf->nkeys, ctx->aid);

    switch (rc) {

    case NGX_CDP_COOKIE_VALID:
        /* the refresh can send it back as it is */
        ctx->cookie = value.data;

        /* fall through */

    case NGX_CDP_COOKIE_VALID_OLD:
        ctx->aid_state = NGX_CDP_AID_KEPT;
        if (count) {
            ngx_cdp_count(NGX_CDP_C_COOKIE_KEPT, 1);
        }
        break;

    case NGX_CDP_COOKIE_FORGED:
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "cdp: cookie \"%V\" has a bad signature, replaced",
                      &lcf->cookie->name);
        if (count) {
            ngx_cdp_count(NGX_CDP_C_COOKIE_FORGED, 1);
        }
        break;

    default: /* NGX_CDP_COOKIE_MALFORMED */
        if (count) {
            ngx_cdp_count(NGX_CDP_C_COOKIE_MALFORMED, 1);
        }
        break;
    }
}


/*
 * Gives the request an id (the cookie's or a new one) and sets the cookie
 * with its full Max-Age: a visit refreshes it.  A cookie signed with the
 * previous key is re-signed with the current one.
 */

ngx_int_t
ngx_cdp_cookie_issue(ngx_http_request_t *r, ngx_http_cdp_ctx_t *ctx)
{
    ngx_str_t                    v;
    ngx_uint_t                   i;
    ngx_http_cdp_loc_conf_t     *lcf;
    ngx_http_cdp_main_conf_t    *mcf;
    ngx_http_cdp_cookie_conf_t  *ck;
    u_char                       id[NGX_CDP_ID_LEN];
    u_char                       value[NGX_CDP_COOKIE_LEN];

    if (ctx->issued) {
        /* a captured page that also identifies: one id, one Set-Cookie */
        return NGX_OK;
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_cdp_module);
    lcf = ngx_http_get_module_loc_conf(r, ngx_http_cdp_module);
    ck = lcf->cookie;

    ngx_cdp_cookie_read(r, ctx, 1);

    if (ctx->aid_state == NGX_CDP_AID_KEPT && ctx->cookie == NULL) {
        for (i = 0; i < NGX_CDP_ID_LEN; i++) {
            id[i] = (u_char) (ngx_hextoi(&ctx->aid[2 * i], 2));
        }

    } else if (ctx->aid_state != NGX_CDP_AID_KEPT) {
        if (ngx_cdp_random_id(id) != NGX_OK) {
            ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                          "cdp: RAND_bytes() failed, no id issued");
            ctx->aid_state = NGX_CDP_AID_NONE;
            return NGX_ERROR;
        }

        (void) ngx_cdp_hex(ctx->aid, id, NGX_CDP_ID_LEN);
        ctx->aid_state = NGX_CDP_AID_NEW;
        ngx_cdp_count(NGX_CDP_C_COOKIE_NEW, 1);
    }

    if (ctx->cookie) {
        ngx_memcpy(value, ctx->cookie, NGX_CDP_COOKIE_LEN);

    } else {
        ngx_cdp_cookie_encode(value, id, &mcf->cookie_keys[0]);
    }

    v.data = value;
    v.len = NGX_CDP_COOKIE_LEN;

    if (ngx_cdp_cookie_set(r, &ck->name, &v, ck->max_age) != NGX_OK) {
        return NGX_ERROR;
    }

    ctx->issued = 1;

    ngx_explicit_memzero(id, NGX_CDP_ID_LEN);

    return NGX_OK;
}


/*
 * Set-Cookie with the attributes of cdp_cookie (path, domain, SameSite,
 * Secure, always HttpOnly): the anonymous id, the consent cookie, and
 * clearing (max_age 0, empty value).
 */

ngx_int_t
ngx_cdp_cookie_set(ngx_http_request_t *r, ngx_str_t *name, ngx_str_t *value,
    time_t max_age)
{
    u_char                      *p;
    size_t                       len;
    ngx_uint_t                   secure;
    ngx_table_elt_t             *set_cookie;
    ngx_http_cdp_loc_conf_t     *lcf;
    ngx_http_cdp_cookie_conf_t  *ck;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_cdp_module);
    ck = lcf->cookie;

    secure = (ck->secure == NGX_CDP_SECURE_ON
              || ck->samesite == NGX_CDP_SAMESITE_NONE);

#if (NGX_HTTP_SSL)
    if (ck->secure == NGX_CDP_SECURE_AUTO && r->connection->ssl) {
        secure = 1;
    }
#endif

    len = name->len + 1 + value->len
          + sizeof("; Max-Age=") - 1 + NGX_TIME_T_LEN
          + sizeof("; Path=") - 1 + ck->path.len
          + sizeof("; HttpOnly; SameSite=Strict; Secure") - 1;

    if (ck->domain.len) {
        len += sizeof("; Domain=") - 1 + ck->domain.len;
    }

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    set_cookie = ngx_list_push(&r->headers_out.headers);
    if (set_cookie == NULL) {
        return NGX_ERROR;
    }

    set_cookie->hash = 1;
    ngx_str_set(&set_cookie->key, "Set-Cookie");
    set_cookie->value.data = p;

    p = ngx_sprintf(p, "%V=%V; Max-Age=%T; Path=%V", name, value, max_age,
                    &ck->path);

    if (ck->domain.len) {
        p = ngx_sprintf(p, "; Domain=%V", &ck->domain);
    }

    p = ngx_cpymem(p, "; HttpOnly", sizeof("; HttpOnly") - 1);

    switch (ck->samesite) {
    case NGX_CDP_SAMESITE_STRICT:
        p = ngx_cpymem(p, "; SameSite=Strict", sizeof("; SameSite=Strict") - 1);
        break;
    case NGX_CDP_SAMESITE_NONE:
        p = ngx_cpymem(p, "; SameSite=None", sizeof("; SameSite=None") - 1);
        break;
    default:
        p = ngx_cpymem(p, "; SameSite=Lax", sizeof("; SameSite=Lax") - 1);
        break;
    }

    if (secure) {
        p = ngx_cpymem(p, "; Secure", sizeof("; Secure") - 1);
    }

    set_cookie->value.len = p - set_cookie->value.data;

    return NGX_OK;
}


ngx_int_t
ngx_cdp_variable_anonymous_id(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_http_cdp_ctx_t  *ctx;

    ctx = ngx_http_cdp_get_ctx(r);
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_cdp_cookie_read(r, ctx, 0);

    if (ctx->aid_state != NGX_CDP_AID_KEPT
        && ctx->aid_state != NGX_CDP_AID_NEW)
    {
        v->not_found = 1;
        return NGX_OK;
    }

    v->len = NGX_CDP_ID_HEX_LEN;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;
    v->data = ctx->aid;

    return NGX_OK;
}


static ngx_int_t
ngx_cdp_random_id(u_char *id)
{
    u_char  *p;

    if (ngx_cdp_rand_left < NGX_CDP_ID_LEN || ngx_cdp_rand_pid != ngx_pid) {
        if (RAND_bytes(ngx_cdp_rand_pool, sizeof(ngx_cdp_rand_pool)) != 1) {
            ngx_cdp_rand_left = 0;
            return NGX_ERROR;
        }

        ngx_cdp_rand_left = sizeof(ngx_cdp_rand_pool);
        ngx_cdp_rand_pid = ngx_pid;
    }

    p = ngx_cdp_rand_pool + sizeof(ngx_cdp_rand_pool) - ngx_cdp_rand_left;

    ngx_memcpy(id, p, NGX_CDP_ID_LEN);
    ngx_explicit_memzero(p, NGX_CDP_ID_LEN);

    ngx_cdp_rand_left -= NGX_CDP_ID_LEN;

    return NGX_OK;
}


