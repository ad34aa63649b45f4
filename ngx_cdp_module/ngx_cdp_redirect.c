
/*
 * ngx_cdp: click-through redirects (ngx_cdp_capture.h).
 *
 *     GET /r?to=URL[&e=NAME&p.NAME=VALUE...][&uid=..&email=..&exp=..&sig=..]
 *           [&tsig=HEX]
 *
 * records a track event ("Link Clicked" unless e= names another, with the
 * target's url and host in its properties) and answers 302 to URL, under
 * the pixel's rules: the gate (bots are redirected, not tracked), consent
 * (without analytics only the day's aggregate counts it), erasure, the
 * cookie, a signed identity.  Never an open redirect: URL must be an http
 * or https URL on a host of cdp_redirect_hosts, or carry tsig, the HMAC
 * of URL under the secret (scripts/cdp-sign-url to=URL); anything else is
 * a 400 with a short page, and counted.
 */


#include "ngx_http_cdp_module.h"
#include "ngx_cdp_http.h"
#include "ngx_cdp_hit.h"
#include "ngx_cdp_capture.h"

#include <openssl/crypto.h>


#define NGX_CDP_REDIRECT_SIG_LEN   32       /* HMAC-SHA256 */

static ngx_int_t ngx_cdp_redirect_allowed(ngx_http_request_t *r,
    u_char *to, size_t len, ngx_cdp_str_t *host);
static ngx_int_t ngx_cdp_redirect_refuse(ngx_http_request_t *r,
    const char *why);
static void ngx_cdp_redirect_event(ngx_http_request_t *r,
    ngx_http_cdp_ctx_t *ctx, ngx_str_t *to, ngx_cdp_str_t *host);


static u_char  ngx_cdp_redirect_page[] =
    "<!DOCTYPE html>\n"
    "<html lang=\"en\"><head><meta charset=\"utf-8\">"
    "<title>Link not allowed</title></head>\n"
    "<body><h1>Link not allowed</h1>\n"
    "<p>This link does not lead to an address this site sends its "
    "visitors to.</p></body></html>\n";


char *
ngx_cdp_redirect_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_cdp_loc_conf_t *lcf = conf;

    ngx_http_core_loc_conf_t  *clcf;

    if (lcf->redirect) {
        return "is duplicate";
    }

    lcf->redirect = 1;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_cdp_redirect_handler;

    return NGX_CONF_OK;
}


/* cdp_redirect_hosts wa.me shop.example *.partner.example; */

char *
ngx_cdp_redirect_hosts(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_cdp_loc_conf_t *lcf = conf;

    u_char      *p;
    size_t       start;
    ngx_str_t   *value, *host;
    ngx_uint_t   i, j;

    if (lcf->redirect_hosts != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    lcf->redirect_hosts = ngx_array_create(cf->pool, cf->args->nelts - 1,
                                           sizeof(ngx_str_t));
    if (lcf->redirect_hosts == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {
        p = value[i].data;
        start = (value[i].len > 2 && p[0] == '*' && p[1] == '.') ? 2 : 0;

        if (value[i].len == start || p[start] == '.' || p[start] == '-') {
            goto invalid;
        }

        for (j = start; j < value[i].len; j++) {
            if (!((p[j] >= 'a' && p[j] <= 'z') || (p[j] >= 'A' && p[j] <= 'Z')
                  || (p[j] >= '0' && p[j] <= '9') || p[j] == '.'
                  || p[j] == '-'))
            {
                goto invalid;
            }
        }

        host = ngx_array_push(lcf->redirect_hosts);
        if (host == NULL) {
            return NGX_CONF_ERROR;
        }

        host->len = value[i].len;
        host->data = ngx_pnalloc(cf->pool, host->len);
        if (host->data == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_strlow(host->data, p, host->len);
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid host \"%V\" in cdp_redirect_hosts: a host "
                       "name like wa.me, or *.example.com for its "
                       "subdomains", &value[i]);

    return NGX_CONF_ERROR;
}


ngx_int_t
ngx_cdp_redirect_handler(ngx_http_request_t *r)
{
    ssize_t              n;
    ngx_str_t            raw, to;
    ngx_uint_t           agent;
    ngx_cdp_str_t        host;
    ngx_table_elt_t     *h;
    ngx_http_cdp_ctx_t  *ctx;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    if (ngx_http_arg(r, (u_char *) "to", 2, &raw) != NGX_OK || raw.len == 0) {
        return ngx_cdp_redirect_refuse(r, "no to=");
    }

    if (raw.len > 3 * NGX_CDP_MAX_URL) {
        return ngx_cdp_redirect_refuse(r, "a target too long");
    }

    to.data = ngx_pnalloc(r->pool, raw.len);
    if (to.data == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* '+' stays '+': a URL's query may well have one */

    n = ngx_cdp_unescape_uri(to.data, raw.data, raw.len);

    if (n <= 0) {
        return ngx_cdp_redirect_refuse(r, "a bad escape in to=");
    }

    to.len = n;

    if (ngx_cdp_target_check(to.data, to.len, &host) != 0) {
        return ngx_cdp_redirect_refuse(r, "not an http or https URL");
    }

    if (ngx_cdp_redirect_allowed(r, to.data, to.len, &host) != NGX_OK) {
        return ngx_cdp_redirect_refuse(r, "a host not allowed, unsigned");
    }

    ctx = ngx_http_cdp_get_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the visitor goes on whatever is recorded */

    agent = ngx_cdp_agent_gate(r, ctx);

    if (agent != NGX_CDP_FILTER_NONE) {
        ngx_cdp_agent_filtered(r, ctx, agent);

    } else if (r->method == NGX_HTTP_GET) {
        /* a HEAD is a link checker's, not a click */
        ngx_cdp_redirect_event(r, ctx, &to, &host);
    }

    ngx_cdp_count(NGX_CDP_C_REDIRECTS, 1);

    ngx_http_clear_location(r);

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Location");
    h->value = to;
#if (nginx_version >= 1023000)
    h->next = NULL;
#endif

    r->headers_out.location = h;

    return ngx_cdp_send(r, NGX_HTTP_MOVED_TEMPORARILY, NULL, NULL, 0);
}


/*
 * A host of cdp_redirect_hosts ("*.x" is any name under x, not x), or a
 * valid tsig: the HMAC-SHA256 of the decoded target under the secret's
 * "ngx_cdp redirect target v1" key, any line of cdp_secret_file
 */

static ngx_int_t
ngx_cdp_redirect_allowed(ngx_http_request_t *r, u_char *to, size_t len,
    ngx_cdp_str_t *host)
{
    u_char                    *d;
    ngx_str_t                  tsig, *hosts;
    ngx_uint_t                 i, k;
    ngx_http_cdp_loc_conf_t   *lcf;
    ngx_http_cdp_main_conf_t  *mcf;
    u_char                     mac[NGX_CDP_REDIRECT_SIG_LEN];
    u_char                     want[NGX_CDP_REDIRECT_SIG_LEN];

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_cdp_module);

    if (lcf->redirect_hosts) {
        hosts = lcf->redirect_hosts->elts;

        for (i = 0; i < lcf->redirect_hosts->nelts; i++) {
            d = hosts[i].data;

            if (hosts[i].len > 2 && d[0] == '*' && d[1] == '.') {
                if (host->len > hosts[i].len - 1
                    && ngx_strncasecmp((u_char *) host->data + host->len
                                       - (hosts[i].len - 1),
                                       d + 1, hosts[i].len - 1)
                       == 0)
                {
                    return NGX_OK;
                }

                continue;
            }

            if (host->len == hosts[i].len
                && ngx_strncasecmp((u_char *) host->data, d, host->len) == 0)
            {
                return NGX_OK;
            }
        }
    }

    if (ngx_http_arg(r, (u_char *) "tsig", 4, &tsig) != NGX_OK
        || tsig.len != 2 * NGX_CDP_REDIRECT_SIG_LEN)
    {
        return NGX_DECLINED;
    }

    for (i = 0; i < NGX_CDP_REDIRECT_SIG_LEN; i++) {
        k = ngx_hextoi(&tsig.data[2 * i], 2);

        if (k == (ngx_uint_t) NGX_ERROR) {
            return NGX_DECLINED;
        }

        want[i] = (u_char) k;
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_cdp_module);

    for (k = 0; k < mcf->nkeys; k++) {
        ngx_cdp_hmac(mac, &mcf->redirect_keys[k], to, len);

        if (CRYPTO_memcmp(mac, want, NGX_CDP_REDIRECT_SIG_LEN) == 0) {
            return NGX_OK;
        }
    }

    return NGX_DECLINED;
}


static ngx_int_t
ngx_cdp_redirect_refuse(ngx_http_request_t *r, const char *why)
{
    ngx_cdp_count(NGX_CDP_C_REDIRECT_REFUSED, 1);

    /* the target itself is not logged: it may carry an address */
    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "cdp: redirect refused: %s", why);

    return ngx_cdp_send(r, NGX_HTTP_BAD_REQUEST, "text/html; charset=utf-8",
                        ngx_cdp_redirect_page,
                        sizeof(ngx_cdp_redirect_page) - 1);
}


/* "Link Clicked" (or e=), url and host added to the hit's properties */

static void
ngx_cdp_redirect_event(ngx_http_request_t *r, ngx_http_cdp_ctx_t *ctx,
    ngx_str_t *to, ngx_cdp_str_t *host)
{
    ngx_uint_t       i, has_url, has_host;
    ngx_cdp_hit_t    hit;
    ngx_cdp_prop_t  *pr;

    /* the click counts, without what could not be read */

    if (ngx_cdp_hit_parse_args(r, &hit) != NGX_OK) {
        ngx_memzero(&hit, sizeof(ngx_cdp_hit_t));
    }

    if (hit.event.data == NULL) {
        hit.event.data = (u_char *) "Link Clicked";
        hit.event.len = sizeof("Link Clicked") - 1;
    }

    has_url = 0;
    has_host = 0;

    for (i = 0; i < hit.nprops; i++) {
        pr = &hit.props[i];

        if (pr->name.len == 3 && ngx_strncmp(pr->name.data, "url", 3) == 0) {
            has_url = 1;

        } else if (pr->name.len == 4
                   && ngx_strncmp(pr->name.data, "host", 4) == 0)
        {
            has_host = 1;
        }
    }

    if (!has_url && hit.nprops < NGX_CDP_MAX_PROPS) {
        pr = &hit.props[hit.nprops++];
        pr->name.data = (u_char *) "url";
        pr->name.len = 3;
        pr->value.data = to->data;
        pr->value.len = to->len;
    }

    if (!has_host && hit.nprops < NGX_CDP_MAX_PROPS) {
        pr = &hit.props[hit.nprops++];
        pr->name.data = (u_char *) "host";
        pr->name.len = 4;
        pr->value = *host;
    }

    (void) ngx_cdp_hit_track(r, ctx, &hit);
}
