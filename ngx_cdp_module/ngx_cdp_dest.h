
/*
 * ngx_cdp: destinations, the events that leave the edge.
 *
 *   cdp_destination NAME purpose=P [types=T,...] [events="E","F"]
 *                   [uri=/location] [format=segment|ga4|json]
 *                   [batch=N] [flush=TIME] [maxlen=N];
 *
 * The gate (ngx_cdp_dest.c and store/cdp.lua): each event that nginx
 * queues for Redis carries a route, the destinations whose types= and
 * events= it matches and the consent it was given under; cdp_ingest, in
 * the same call that stores the event, appends it to the out-stream
 * <prefix>:out:<NAME> of every such destination whose purpose the
 * consent holds, unless the person is erased.
 *
 * Delivery (ngx_cdp_deliver.c): with uri=, every worker reads the
 * out-stream through the consumer group "cdp" and POSTs batches to that
 * nginx location, acknowledging entries only after a 2xx.
 */


#ifndef _NGX_CDP_DEST_H_INCLUDED_
#define _NGX_CDP_DEST_H_INCLUDED_


#include "ngx_http_cdp_module.h"


#define NGX_CDP_DEST_MAX           32
#define NGX_CDP_DEST_NAME_MAX      64

#define NGX_CDP_FORMAT_SEGMENT     0
#define NGX_CDP_FORMAT_GA4         1
#define NGX_CDP_FORMAT_JSON        2

/* event types, the bits of types= */
#define NGX_CDP_TYPE_PAGE          0x01
#define NGX_CDP_TYPE_TRACK         0x02
#define NGX_CDP_TYPE_IDENTIFY      0x04
#define NGX_CDP_TYPE_SCREEN        0x08
#define NGX_CDP_TYPE_GROUP         0x10
#define NGX_CDP_TYPE_ALIAS         0x20
#define NGX_CDP_TYPE_ALL           0x3f

/* a route: consent, default, one byte a destination */
#define NGX_CDP_ROUTE_LEN          (2 + NGX_CDP_DEST_MAX)

/* what an event tells cdp_ingest besides itself: its route, ";", a fact */
#define NGX_CDP_EXTRA_LEN          (NGX_CDP_ROUTE_LEN + 1 + NGX_INT_T_LEN)

/* the consent of an event is not known at the edge: the store decides */
#define NGX_CDP_CONSENT_UNKNOWN    -1


/* per destination counters, in shared memory (cdp_status) */
typedef enum {
    NGX_CDP_DC_QUEUED = 0,
    NGX_CDP_DC_FILTERED_CONSENT,
    NGX_CDP_DC_FILTERED_ERASED,
    NGX_CDP_DC_FILTERED_TYPE,
    NGX_CDP_DC_DELIVERED,
    NGX_CDP_DC_RETRIED,
    NGX_CDP_DC_DEAD,
    NGX_CDP_DC_NOTICES,
    NGX_CDP_DC_REQUESTS,
    NGX_CDP_DC_IN_FLIGHT,           /* gauges from here on */
    NGX_CDP_DC_LENGTH,
    NGX_CDP_DC_PENDING,
    NGX_CDP_DC_LAST_SUCCESS,        /* seconds since the epoch */
    NGX_CDP_DC_N
} ngx_cdp_dest_counter_e;


typedef struct {
    ngx_str_t                  name;
    ngx_uint_t                 index;
    ngx_uint_t                 purpose;     /* one NGX_CDP_CONSENT_* bit */
    ngx_uint_t                 types;       /* NGX_CDP_TYPE_* */
    ngx_array_t               *events;      /* ngx_str_t; NULL: any */
    ngx_str_t                  uri;         /* empty: no HTTP delivery */
    ngx_uint_t                 format;
    ngx_uint_t                 batch;
    ngx_msec_t                 flush;
    ngx_uint_t                 maxlen;

    ngx_http_conf_ctx_t       *ctx;         /* the server of uri= */

    ngx_atomic_t              *counters;    /* NGX_CDP_DC_N, shared */
} ngx_cdp_dest_t;


#define ngx_cdp_dest_count(d, i, n)                                           \
    do {                                                                      \
        if ((d)->counters) {                                                  \
            (void) ngx_atomic_fetch_add(&(d)->counters[i], n);                \
        }                                                                     \
    } while (0)


char *ngx_cdp_dest_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
char *ngx_cdp_dest_init_main_conf(ngx_conf_t *cf,
    ngx_http_cdp_main_conf_t *mcf);
ngx_int_t ngx_cdp_dest_init(ngx_conf_t *cf, ngx_http_cdp_main_conf_t *mcf);

/*
 * The route of an event of type (NGX_CDP_TYPE_*) and, for a track, its
 * name, under purposes (or NGX_CDP_CONSENT_UNKNOWN, with the default
 * dflt): written to buf (NGX_CDP_ROUTE_LEN bytes), its length returned;
 * 0 when no destination takes the event (counted as filtered by type).
 */
size_t ngx_cdp_dest_route(ngx_http_cdp_main_conf_t *mcf, ngx_uint_t type,
    u_char *name, size_t len, int purposes, int dflt, u_char *buf);

/* cdp_ingest's reply past its own counts: per destination counts */
void ngx_cdp_dest_ingested(ngx_http_cdp_main_conf_t *mcf, void *reply,
    size_t first);

ngx_cdp_dest_t *ngx_cdp_dest_find(ngx_http_cdp_main_conf_t *mcf,
    u_char *name, size_t len);

/* cdp_status: the destinations' lines */
size_t ngx_cdp_dest_status_len(ngx_http_cdp_main_conf_t *mcf);
u_char *ngx_cdp_dest_status(ngx_http_cdp_main_conf_t *mcf, u_char *p);

/* ngx_cdp_deliver.c */
ngx_int_t ngx_cdp_deliver_init_process(ngx_cycle_t *cycle,
    ngx_http_cdp_main_conf_t *mcf);
void ngx_cdp_deliver_exit_process(ngx_cycle_t *cycle);


#endif /* _NGX_CDP_DEST_H_INCLUDED_ */
