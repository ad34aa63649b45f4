
/*
 * ngx_cdp: cdp_consent_endpoint: the consent form's endpoint
 * (ngx_cdp_endpoint.c).
 */


#ifndef _NGX_CDP_ENDPOINT_H_INCLUDED_
#define _NGX_CDP_ENDPOINT_H_INCLUDED_


#include "ngx_http_cdp_module.h"


ngx_int_t ngx_cdp_consent_handler(ngx_http_request_t *r);


#endif /* _NGX_CDP_ENDPOINT_H_INCLUDED_ */
