
/*
 * ngx_cdp: the request's consent state (cookie, CMP, GPC, default),
 * $cdp_consent (ngx_cdp_policy.c).
 */


#ifndef _NGX_CDP_POLICY_H_INCLUDED_
#define _NGX_CDP_POLICY_H_INCLUDED_


#include "ngx_http_cdp_module.h"


ngx_cdp_consent_state_t *ngx_cdp_consent_eval(ngx_http_request_t *r,
    ngx_http_cdp_ctx_t *ctx);
int ngx_cdp_consent_default(ngx_http_request_t *r);
ngx_int_t ngx_cdp_variable_consent(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);


#endif /* _NGX_CDP_POLICY_H_INCLUDED_ */
