
/*
 * ngx_cdp: capture at the edge, without a pixel, and without bots.
 *
 *     cdp_capture on|off;          page views of the HTML nginx serves
 *     cdp_bot $variable | off;     the operator's word on bots
 *     cdp_redirect;                click-through redirects (/r?to=URL)
 *     cdp_redirect_hosts HOST...;  where they may go without a signature
 *
 * The gate (ngx_cdp_agent_gate()) runs before any cookie or profile, for
 * the pixel, captured pages and redirects alike: a prefetch or prerender
 * (Sec-Purpose, Purpose, X-Moz), a bot (cdp_bot, else the built-in
 * User-Agent patterns of ngx_cdp_agent.h) or a mail service's image
 * proxy is not a visit: it is counted by reason, in cdp_status and in the
 * day's aggregate hash, and tracks no one (a mail proxy fetching a signed
 * pixel records "Email Opened" on the named person: ngx_cdp_pixel.c).
 */


#ifndef _NGX_CDP_CAPTURE_H_INCLUDED_
#define _NGX_CDP_CAPTURE_H_INCLUDED_


#include "ngx_http_cdp_module.h"


#define NGX_CDP_FILTER_NONE        0
#define NGX_CDP_FILTER_BOT         1
#define NGX_CDP_FILTER_PREFETCH    2
#define NGX_CDP_FILTER_MAIL_PROXY  3


char *ngx_cdp_bot_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
char *ngx_cdp_redirect_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_cdp_redirect_hosts(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

/* the header filter of cdp_capture, before cdp_identify's */
ngx_int_t ngx_cdp_capture_init(ngx_conf_t *cf);

/* NGX_CDP_FILTER_*, once per request */
ngx_uint_t ngx_cdp_agent_gate(ngx_http_request_t *r,
    ngx_http_cdp_ctx_t *ctx);

/* counts a filtered request, in cdp_status and the day's aggregate */
void ngx_cdp_agent_filtered(ngx_http_request_t *r, ngx_http_cdp_ctx_t *ctx,
    ngx_uint_t reason);

ngx_int_t ngx_cdp_redirect_handler(ngx_http_request_t *r);


#endif /* _NGX_CDP_CAPTURE_H_INCLUDED_ */
