
/*
 * ngx_cdp: one event: its Segment-spec JSON, its attrs, the identify event
 * (ngx_cdp_event.c).
 */


#ifndef _NGX_CDP_EVENT_H_INCLUDED_
#define _NGX_CDP_EVENT_H_INCLUDED_


#include "ngx_http_cdp_module.h"


ngx_int_t ngx_cdp_event_from_hit(ngx_http_request_t *r,
    ngx_http_cdp_ctx_t *ctx, ngx_cdp_hit_t *hit, ngx_str_t *json);
ngx_int_t ngx_cdp_event_attrs(ngx_http_request_t *r,
    ngx_http_cdp_ctx_t *ctx, ngx_str_t *attrs);
ngx_int_t ngx_cdp_event_identify(ngx_http_request_t *r,
    ngx_http_cdp_ctx_t *ctx, ngx_str_t *user_id, ngx_str_t *traits,
    ngx_str_t *json);


#endif /* _NGX_CDP_EVENT_H_INCLUDED_ */
