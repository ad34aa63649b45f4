
/*
 * ngx_cdp: a hit becomes an event (ngx_cdp_hit.c): the pixel's, a
 * captured page's, a click's; or only a count in the day's aggregate;
 * and a signed identity on it identifies the browser.
 */


#ifndef _NGX_CDP_HIT_H_INCLUDED_
#define _NGX_CDP_HIT_H_INCLUDED_


#include "ngx_http_cdp_module.h"


void ngx_cdp_hit_record(ngx_http_request_t *r, ngx_http_cdp_ctx_t *ctx,
    ngx_cdp_hit_t *hit, ngx_uint_t person);
ngx_int_t ngx_cdp_aggregate(ngx_http_request_t *r, ngx_http_cdp_ctx_t *ctx,
    ngx_str_t *name);
ngx_int_t ngx_cdp_hit_parse_args(ngx_http_request_t *r, ngx_cdp_hit_t *hit);
ngx_int_t ngx_cdp_hit_track(ngx_http_request_t *r, ngx_http_cdp_ctx_t *ctx,
    ngx_cdp_hit_t *hit);
void ngx_cdp_hit_identity(ngx_http_request_t *r, ngx_http_cdp_ctx_t *ctx,
    ngx_cdp_hit_t *hit);
ngx_int_t ngx_cdp_hit_signed(ngx_http_request_t *r, ngx_cdp_hit_t *hit);


#endif /* _NGX_CDP_HIT_H_INCLUDED_ */
