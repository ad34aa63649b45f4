
/*
 * ngx_cdp: geo (libmaxminddb).
 *
 * The database is opened when the configuration is read (so nginx -t
 * checks it, and a reload reopens it) and memory-mapped: a lookup is a
 * walk of mapped pages, no I/O.  The lookup uses the full client address
 * as nginx sees it (realip applies); only the truncated address is ever
 * stored (ngx_cdp_event.c).
 */


#include "ngx_http_cdp_module.h"
#include "ngx_cdp_http.h"
#include "ngx_cdp_geo.h"

#include <maxminddb.h>


static void ngx_cdp_geo_cleanup(void *data);
static void ngx_cdp_geo_string(MMDB_entry_s *entry, ngx_str_t *out,
    const char *const *path);


static const char *const  ngx_cdp_geo_country[] = {
    "country", "iso_code", NULL
};

static const char *const  ngx_cdp_geo_region[] = {
    "subdivisions", "0", "iso_code", NULL
};

static const char *const  ngx_cdp_geo_city[] = {
    "city", "names", "en", NULL
};


char *
ngx_cdp_geo_open(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_cdp_main_conf_t *mcf = conf;

    int                  rc;
    ngx_str_t           *value, path;
    ngx_pool_cleanup_t  *cln;

    if (mcf->geo) {
        return "is duplicate";
    }

    value = cf->args->elts;
    path = value[1];

    if (ngx_conf_full_name(cf->cycle, &path, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    mcf->geo = ngx_pcalloc(cf->pool, sizeof(MMDB_s));
    if (mcf->geo == NULL) {
        return NGX_CONF_ERROR;
    }

    /* path.data is null-terminated by ngx_conf_full_name() */

    rc = MMDB_open((char *) path.data, MMDB_MODE_MMAP, mcf->geo);

    if (rc != MMDB_SUCCESS) {
        if (rc == MMDB_FILE_OPEN_ERROR || rc == MMDB_IO_ERROR) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                               "cdp_geoip_db \"%V\": %s", &path,
                               MMDB_strerror(rc));

        } else {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "cdp_geoip_db \"%V\" is not a MaxMind DB: %s",
                               &path, MMDB_strerror(rc));
        }

        return NGX_CONF_ERROR;
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        MMDB_close(mcf->geo);
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_cdp_geo_cleanup;
    cln->data = mcf->geo;

    return NGX_CONF_OK;
}


static void
ngx_cdp_geo_cleanup(void *data)
{
    MMDB_close(data);
}


/* looks the client up once per request; the strings point into the map */

void
ngx_cdp_geo_lookup(ngx_http_request_t *r, ngx_http_cdp_ctx_t *ctx)
{
    int                        mmdb_error;
    MMDB_lookup_result_s       res;
    ngx_http_cdp_main_conf_t  *mcf;

    if (ctx->geo_done) {
        return;
    }

    ctx->geo_done = 1;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_cdp_module);

    if (mcf->geo == NULL) {
        return;
    }

    switch (r->connection->sockaddr->sa_family) {
    case AF_INET:
#if (NGX_HAVE_INET6)
    case AF_INET6:
#endif
        break;
    default:
        return;
    }

    res = MMDB_lookup_sockaddr(mcf->geo, r->connection->sockaddr,
                               &mmdb_error);

    if (mmdb_error != MMDB_SUCCESS || !res.found_entry) {
        return;
    }

    ngx_cdp_geo_string(&res.entry, &ctx->country, ngx_cdp_geo_country);
    ngx_cdp_geo_string(&res.entry, &ctx->region, ngx_cdp_geo_region);
    ngx_cdp_geo_string(&res.entry, &ctx->city, ngx_cdp_geo_city);
}


static void
ngx_cdp_geo_string(MMDB_entry_s *entry, ngx_str_t *out,
    const char *const *path)
{
    MMDB_entry_data_s  data;

    if (MMDB_aget_value(entry, &data, path) != MMDB_SUCCESS
        || !data.has_data
        || data.type != MMDB_DATA_TYPE_UTF8_STRING
        || data.data_size == 0)
    {
        return;
    }

    out->data = (u_char *) data.utf8_string;
    out->len = data.data_size;
}


ngx_int_t
ngx_cdp_variable_geo(ngx_http_request_t *r, ngx_http_variable_value_t *v,
    uintptr_t data)
{
    ngx_str_t           *s;
    ngx_http_cdp_ctx_t  *ctx;

    ctx = ngx_http_cdp_get_ctx(r);
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_cdp_geo_lookup(r, ctx);

    s = (ngx_str_t *) ((u_char *) ctx + data);

    if (s->len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    v->len = s->len;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;
    v->data = s->data;

    return NGX_OK;
}
