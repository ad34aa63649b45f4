
/*
 * ngx_cdp: cdp_api, cdp_write_key: the Segment-compatible server API
 * (ngx_cdp_api.c).
 */


#ifndef _NGX_CDP_API_H_INCLUDED_
#define _NGX_CDP_API_H_INCLUDED_


#include "ngx_http_cdp_module.h"


char *ngx_cdp_api_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
char *ngx_cdp_write_key_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_cdp_api_handler(ngx_http_request_t *r);
void ngx_cdp_api_anonymous_id(ngx_http_request_t *r, const char *v,
    u_char *aid, size_t *len);


#endif /* _NGX_CDP_API_H_INCLUDED_ */
