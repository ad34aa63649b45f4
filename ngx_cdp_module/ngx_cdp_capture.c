
/*
 * ngx_cdp: edge capture and the gate before it (ngx_cdp_capture.h).
 *
 * cdp_capture is a response header filter: when the main request's GET
 * is answered 200 with an HTML type, that response records one page view
 * (the url from the request, the referrer from Referer, no title) and
 * carries the browser's cookie, under the pixel's rules of consent and
 * erasure.  It runs before cdp_identify's filter, so a login page gives
 * one page view, then one identify, under one id.
 */


#include "ngx_http_cdp_module.h"
#include "ngx_cdp_http.h"
#include "ngx_cdp_hit.h"
#include "ngx_cdp_capture.h"
#include "ngx_cdp_agent.h"


static ngx_int_t ngx_cdp_capture_header_filter(ngx_http_request_t *r);
static ngx_uint_t ngx_cdp_capture_html(ngx_http_request_t *r);
static ngx_int_t ngx_cdp_capture_url(ngx_http_request_t *r, ngx_str_t *url);
static ngx_uint_t ngx_cdp_agent_prefetch_of(ngx_http_request_t *r);


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;


/* indexed by NGX_CDP_FILTER_*: the aggregate's name and the counter */

static ngx_str_t  ngx_cdp_filter_names[] = {
    ngx_null_string,
    ngx_string("filtered:bot"),
    ngx_string("filtered:prefetch"),
    ngx_string("filtered:mail_proxy")
};

static ngx_uint_t  ngx_cdp_filter_counters[] = {
    0,
    NGX_CDP_C_FILTER_BOT,
    NGX_CDP_C_FILTER_PREFETCH,
    NGX_CDP_C_FILTER_MAIL_PROXY
};


/*
 * cdp_bot $variable | off: a value other than "" and "0" is a bot, "0"
 * is not (whatever the built-in patterns say), "" leaves it to them;
 * off: no bot filtering at all (prefetches are still not visits).
 */

char *
ngx_cdp_bot_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_cdp_loc_conf_t *lcf = conf;

    ngx_str_t                         *value;
    ngx_http_compile_complex_value_t   ccv;

    if (lcf->bots != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len == 3 && ngx_strncmp(value[1].data, "off", 3) == 0) {
        lcf->bots = 0;
        lcf->bot = NULL;
        return NGX_CONF_OK;
    }

    if (value[1].len == 0) {
        return "needs a value, like $bot from a map on $http_user_agent";
    }

    lcf->bot = ngx_palloc(cf->pool, sizeof(ngx_http_complex_value_t));
    if (lcf->bot == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

    ccv.cf = cf;
    ccv.value = &value[1];
    ccv.complex_value = lcf->bot;

    if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    lcf->bots = 1;

    return NGX_CONF_OK;
}


ngx_int_t
ngx_cdp_capture_init(ngx_conf_t *cf)
{
    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_cdp_capture_header_filter;

    return NGX_OK;
}


ngx_uint_t
ngx_cdp_agent_gate(ngx_http_request_t *r, ngx_http_cdp_ctx_t *ctx)
{
    int                       rc;
    ngx_str_t                 v;
    ngx_table_elt_t          *ua;
    ngx_http_cdp_loc_conf_t  *lcf;

    if (ctx->agent_done) {
        return ctx->agent;
    }

    ctx->agent_done = 1;
    ctx->agent = NGX_CDP_FILTER_NONE;

    if (ngx_cdp_agent_prefetch_of(r)) {
        ctx->agent = NGX_CDP_FILTER_PREFETCH;
        return ctx->agent;
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_cdp_module);

    if (lcf->bots == 0) {
        return ctx->agent;
    }

    if (lcf->bot) {
        if (ngx_http_complex_value(r, lcf->bot, &v) != NGX_OK) {
            /* no verdict: the built-in patterns decide */
            v.len = 0;
        }

        if (v.len == 1 && v.data[0] == '0') {
            return ctx->agent;
        }

        if (v.len) {
            ctx->agent = NGX_CDP_FILTER_BOT;
            return ctx->agent;
        }
    }

    ua = r->headers_in.user_agent;

    rc = ua ? ngx_cdp_agent_classify(ua->value.data, ua->value.len, NULL)
            : ngx_cdp_agent_classify(NULL, 0, NULL);

    if (rc == NGX_CDP_AGENT_BOT) {
        ctx->agent = NGX_CDP_FILTER_BOT;

    } else if (rc == NGX_CDP_AGENT_MAIL_PROXY) {
        ctx->agent = NGX_CDP_FILTER_MAIL_PROXY;
    }

    return ctx->agent;
}


/* Sec-Purpose, Purpose, X-Moz: headers nginx keeps no pointer to */

static ngx_uint_t
ngx_cdp_agent_prefetch_of(ngx_http_request_t *r)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h, *sec, *purpose, *moz;

    sec = NULL;
    purpose = NULL;
    moz = NULL;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        switch (h[i].key.len) {

        case sizeof("Sec-Purpose") - 1:
            if (ngx_strncasecmp(h[i].key.data, (u_char *) "Sec-Purpose",
                                sizeof("Sec-Purpose") - 1)
                == 0)
            {
                sec = &h[i];
            }
            break;

        case sizeof("Purpose") - 1:
            if (ngx_strncasecmp(h[i].key.data, (u_char *) "Purpose",
                                sizeof("Purpose") - 1)
                == 0)
            {
                purpose = &h[i];
            }
            break;

        case sizeof("X-Moz") - 1:
            if (ngx_strncasecmp(h[i].key.data, (u_char *) "X-Moz",
                                sizeof("X-Moz") - 1)
                == 0)
            {
                moz = &h[i];
            }
            break;
        }
    }

    if (sec == NULL && purpose == NULL && moz == NULL) {
        return 0;
    }

    return ngx_cdp_agent_prefetch(sec ? sec->value.data : NULL,
                                  sec ? sec->value.len : 0,
                                  purpose ? purpose->value.data : NULL,
                                  purpose ? purpose->value.len : 0,
                                  moz ? moz->value.data : NULL,
                                  moz ? moz->value.len : 0);
}


void
ngx_cdp_agent_filtered(ngx_http_request_t *r, ngx_http_cdp_ctx_t *ctx,
    ngx_uint_t reason)
{
    if (reason == NGX_CDP_FILTER_NONE
        || reason >= sizeof(ngx_cdp_filter_counters) / sizeof(ngx_uint_t))
    {
        return;
    }

    ngx_cdp_count(ngx_cdp_filter_counters[reason], 1);

    (void) ngx_cdp_aggregate(r, ctx, &ngx_cdp_filter_names[reason]);
}


static ngx_int_t
ngx_cdp_capture_header_filter(ngx_http_request_t *r)
{
    ngx_str_t                 url;
    ngx_uint_t                agent;
    ngx_cdp_hit_t             hit;
    ngx_table_elt_t          *ref;
    ngx_http_cdp_ctx_t       *ctx;
    ngx_http_cdp_loc_conf_t  *lcf;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_cdp_module);

    if (!lcf->capture || r != r->main || r->method != NGX_HTTP_GET
        || r->headers_out.status != NGX_HTTP_OK
        || !ngx_cdp_capture_html(r))
    {
        return ngx_http_next_header_filter(r);
    }

    ctx = ngx_http_cdp_get_ctx(r);
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    agent = ngx_cdp_agent_gate(r, ctx);

    if (agent != NGX_CDP_FILTER_NONE) {
        ngx_cdp_agent_filtered(r, ctx, agent);
        return ngx_http_next_header_filter(r);
    }

    if (ngx_cdp_capture_url(r, &url) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_memzero(&hit, sizeof(ngx_cdp_hit_t));

    hit.url.data = url.data;
    hit.url.len = url.len;

    ref = r->headers_in.referer;

    if (ref) {
        hit.ref.data = ref->value.data;
        hit.ref.len = ngx_min(ref->value.len, NGX_CDP_MAX_URL);
    }

    if (ngx_cdp_hit_track(r, ctx, &hit) == NGX_OK) {
        ngx_cdp_count(NGX_CDP_C_CAPTURED, 1);
    }

    return ngx_http_next_header_filter(r);
}


/* text/html or application/xhtml+xml, with or without parameters */

static ngx_uint_t
ngx_cdp_capture_html(ngx_http_request_t *r)
{
    size_t       n;
    ngx_str_t   *t;
    ngx_uint_t   i;

    static ngx_str_t  types[] = {
        ngx_string("text/html"),
        ngx_string("application/xhtml+xml")
    };

    t = &r->headers_out.content_type;

    for (i = 0; i < sizeof(types) / sizeof(ngx_str_t); i++) {
        n = types[i].len;

        if (t->len >= n
            && ngx_strncasecmp(t->data, types[i].data, n) == 0
            && (t->len == n || t->data[n] == ';' || t->data[n] == ' '))
        {
            return 1;
        }
    }

    return 0;
}


/* scheme://host/uri?args, as the browser asked for it */

static ngx_int_t
ngx_cdp_capture_url(ngx_http_request_t *r, ngx_str_t *url)
{
    u_char                    *p;
    ngx_str_t                  host, scheme;
    ngx_http_core_srv_conf_t  *cscf;

#if (NGX_HTTP_SSL)
    if (r->connection->ssl) {
        ngx_str_set(&scheme, "https://");

    } else
#endif
    {
        ngx_str_set(&scheme, "http://");
    }

    /* the Host header as sent, with its port (nginx checked it) */

    if (r->headers_in.host) {
        host = r->headers_in.host->value;

    } else {
        host = r->headers_in.server;
    }

    if (host.len == 0) {
        cscf = ngx_http_get_module_srv_conf(r, ngx_http_core_module);
        host = cscf->server_name;
    }

    url->len = ngx_min(scheme.len + host.len + r->unparsed_uri.len,
                       NGX_CDP_MAX_URL);

    url->data = ngx_pnalloc(r->pool, scheme.len + host.len
                                     + r->unparsed_uri.len);
    if (url->data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(url->data, scheme.data, scheme.len);
    p = ngx_cpymem(p, host.data, host.len);
    (void) ngx_cpymem(p, r->unparsed_uri.data, r->unparsed_uri.len);

    return NGX_OK;
}
