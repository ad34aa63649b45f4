
/*
 * ngx_cdp: erased browsers in shared memory, kept in step with Redis
 * (ngx_cdp_suppress.c).
 */


#ifndef _NGX_CDP_SUPPRESS_H_INCLUDED_
#define _NGX_CDP_SUPPRESS_H_INCLUDED_


#include "ngx_http_cdp_module.h"


ngx_int_t ngx_cdp_suppress_add_zone(ngx_conf_t *cf, size_t size);
ngx_int_t ngx_cdp_suppress_init_process(ngx_cycle_t *cycle,
    ngx_http_cdp_main_conf_t *mcf);
ngx_int_t ngx_cdp_suppress_has(const u_char *aid);
void ngx_cdp_suppress_update(const u_char *aidh, size_t len, ngx_uint_t add);
ngx_int_t ngx_cdp_suppress_cookie(ngx_http_request_t *r,
    ngx_http_cdp_ctx_t *ctx);


#endif /* _NGX_CDP_SUPPRESS_H_INCLUDED_ */
