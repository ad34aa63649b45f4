
/*
 * ngx_cdp: audiences, the marketers' segments (not to be confused with
 * Segment, the API of ngx_cdp_segment.c).
 *
 *   cdp_segment NAME 'RULE';
 *   cdp_profile_event "EVENT NAME" [sum=PROPERTY ...];
 *
 * Every rule is compiled once, at configuration (ngx_cdp_rule.c), and
 * nginx -t names a rule's error and its position.  The event names that
 * rules (and cdp_profile_event) use are the facts the store keeps on each
 * profile: the count of such events, the time of the first and the last
 * one, and the sums of the properties asked for.  A track event of such
 * a name carries the fact's number to cdp_ingest, which updates the
 * profile in the call that stores the event.
 */


#ifndef _NGX_CDP_AUDIENCE_H_INCLUDED_
#define _NGX_CDP_AUDIENCE_H_INCLUDED_


#include "ngx_http_cdp_module.h"
#include "ngx_cdp_rule.h"


#define NGX_CDP_SEGMENTS_MAX       64
#define NGX_CDP_FACTS_MAX          64      /* event names with facts */
#define NGX_CDP_FACT_SUMS_MAX      8       /* summed properties a name */


typedef struct {
    ngx_str_t                  name;
    ngx_str_t                  source;     /* the rule as written */
    ngx_cdp_rule_t             rule;
} ngx_cdp_audience_t;


typedef struct {
    ngx_str_t                  name;       /* the event's name */
    ngx_array_t               *sums;       /* ngx_str_t property names */
} ngx_cdp_fact_t;


char *ngx_cdp_audience_segment(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_cdp_audience_profile_event(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_cdp_audience_init_main_conf(ngx_conf_t *cf,
    ngx_http_cdp_main_conf_t *mcf);

/*
 * The fact kept for a track event of this name: its 1-based number in
 * cdp_ingest's list, or 0 when no rule asks for one.
 */
ngx_uint_t ngx_cdp_audience_fact(ngx_http_cdp_main_conf_t *mcf,
    const u_char *name, size_t len);

ngx_int_t ngx_cdp_audience_init_process(ngx_cycle_t *cycle,
    ngx_http_cdp_main_conf_t *mcf);


#endif /* _NGX_CDP_AUDIENCE_H_INCLUDED_ */
