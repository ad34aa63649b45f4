
/*
 * ngx_cdp: cdp_geoip_db: the request's country, region and city, geo
 * variables (ngx_cdp_geo.c).
 */


#ifndef _NGX_CDP_GEO_H_INCLUDED_
#define _NGX_CDP_GEO_H_INCLUDED_


#include "ngx_http_cdp_module.h"


char *ngx_cdp_geo_open(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
void ngx_cdp_geo_lookup(ngx_http_request_t *r, ngx_http_cdp_ctx_t *ctx);
ngx_int_t ngx_cdp_variable_geo(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);


#endif /* _NGX_CDP_GEO_H_INCLUDED_ */
