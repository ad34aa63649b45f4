
/*
 * ngx_cdp: the anonymous id cookie: read, verify, mint, set;
 * $cdp_anonymous_id (ngx_cdp_cookie.c).
 */


#ifndef _NGX_CDP_COOKIE_H_INCLUDED_
#define _NGX_CDP_COOKIE_H_INCLUDED_


#include "ngx_http_cdp_module.h"


void ngx_cdp_cookie_read(ngx_http_request_t *r, ngx_http_cdp_ctx_t *ctx,
    ngx_uint_t count);
ngx_int_t ngx_cdp_cookie_issue(ngx_http_request_t *r,
    ngx_http_cdp_ctx_t *ctx);
ngx_int_t ngx_cdp_cookie_set(ngx_http_request_t *r, ngx_str_t *name,
    ngx_str_t *value, time_t max_age);
ngx_int_t ngx_cdp_variable_anonymous_id(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);


#endif /* _NGX_CDP_COOKIE_H_INCLUDED_ */
