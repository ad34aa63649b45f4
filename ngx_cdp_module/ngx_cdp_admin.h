
/*
 * ngx_cdp: cdp_admin, cdp_admin_tokens: the admin API (ngx_cdp_admin.c).
 */


#ifndef _NGX_CDP_ADMIN_H_INCLUDED_
#define _NGX_CDP_ADMIN_H_INCLUDED_


#include "ngx_http_cdp_module.h"


char *ngx_cdp_admin_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_cdp_admin_tokens(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);

/* Redis Cluster: what worker 0's sweep finishes of an erasure, told */
void ngx_cdp_admin_init_process(ngx_cycle_t *cycle);


#endif /* _NGX_CDP_ADMIN_H_INCLUDED_ */
