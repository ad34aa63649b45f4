
/*
 * ngx_cdp: cdp_status: the counters in Prometheus text format
 * (ngx_cdp_status.c).
 */


#ifndef _NGX_CDP_STATUS_H_INCLUDED_
#define _NGX_CDP_STATUS_H_INCLUDED_


#include "ngx_http_cdp_module.h"


ngx_int_t ngx_cdp_status_handler(ngx_http_request_t *r);
ngx_int_t ngx_cdp_status_init_zone(ngx_shm_zone_t *shm_zone, void *data);


#endif /* _NGX_CDP_STATUS_H_INCLUDED_ */
