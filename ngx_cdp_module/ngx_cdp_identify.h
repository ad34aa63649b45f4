
/*
 * ngx_cdp: identity from trusted sources: cdp_identify, limits, blocked
 * values (ngx_cdp_identify.c).
 */


#ifndef _NGX_CDP_IDENTIFY_H_INCLUDED_
#define _NGX_CDP_IDENTIFY_H_INCLUDED_


#include "ngx_http_cdp_module.h"


/* an identity from a trusted source, raw: ngx_cdp_identify() checks it */
typedef struct {
    ngx_str_t                  user_id;
    ngx_str_t                  email;
    ngx_str_t                  phone;
    ngx_str_t                  traits;      /* a JSON object, or empty */
} ngx_cdp_identity_t;


/* checked and normalised identifiers, with their names in Redis */
typedef struct {
    ngx_str_t                  user_id;     /* len 0: none */
    ngx_str_t                  email;
    ngx_str_t                  phone;
    u_char                     uidh[64];    /* NGX_CDP_IDENT_HASH_LEN */
    u_char                     eh[64];
    u_char                     ph[64];
} ngx_cdp_ids_t;

#define NGX_CDP_IDS_TEXT_MAX(ids)  ((ids)->user_id.len + 3 + 3 * 64)


char *ngx_cdp_identify_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_cdp_identity_limits(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_cdp_identity_blocked(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_cdp_identify_init(ngx_conf_t *cf);
ngx_int_t ngx_cdp_identify(ngx_http_request_t *r, ngx_http_cdp_ctx_t *ctx,
    ngx_cdp_identity_t *id);
u_char *ngx_cdp_ids_text(u_char *p, ngx_cdp_ids_t *ids);
ngx_int_t ngx_cdp_profile_key(ngx_http_request_t *r, u_char *aid, size_t len,
    ngx_str_t *key);
ngx_int_t ngx_cdp_identify_check(ngx_http_request_t *r,
    ngx_cdp_identity_t *id, ngx_cdp_ids_t *ids);
ngx_int_t ngx_cdp_identify_user_id(ngx_str_t *v,
    ngx_http_cdp_main_conf_t *mcf);
ngx_int_t ngx_cdp_identify_traits(ngx_http_request_t *r, ngx_str_t *raw,
    ngx_str_t *email, ngx_str_t *phone, ngx_str_t *profile,
    ngx_str_t *event);


#endif /* _NGX_CDP_IDENTIFY_H_INCLUDED_ */
