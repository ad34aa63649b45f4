
/*
 * ngx_cdp: cdp_profile: the browser's profile and segments, $cdp_segments
 * (ngx_cdp_profile.c).
 */


#ifndef _NGX_CDP_PROFILE_H_INCLUDED_
#define _NGX_CDP_PROFILE_H_INCLUDED_


#include "ngx_http_cdp_module.h"


ngx_int_t ngx_cdp_profile_handler(ngx_http_request_t *r);
ngx_int_t ngx_cdp_variable_segments(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);


#endif /* _NGX_CDP_PROFILE_H_INCLUDED_ */
