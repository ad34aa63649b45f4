
/*
 * ngx_cdp: cdp_pixel, and the event of a hit (pixel, captured page, click)
 * (ngx_cdp_pixel.c).
 */


#ifndef _NGX_CDP_PIXEL_H_INCLUDED_
#define _NGX_CDP_PIXEL_H_INCLUDED_


#include "ngx_http_cdp_module.h"


ngx_int_t ngx_cdp_pixel_handler(ngx_http_request_t *r);


#endif /* _NGX_CDP_PIXEL_H_INCLUDED_ */
