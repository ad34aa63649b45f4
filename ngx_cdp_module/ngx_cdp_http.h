
/*
 * ngx_cdp: what every request-facing feature shares (ngx_cdp_http.c):
 * the counters in shared memory, the request's context, answering (with
 * the one JSON error body of the API, the admin API and the consent
 * endpoint), header, cookie and body lookups, a configuration file's
 * contents.
 */


#ifndef _NGX_CDP_HTTP_H_INCLUDED_
#define _NGX_CDP_HTTP_H_INCLUDED_


#include "ngx_http_cdp_module.h"


/* counters kept in shared memory, summed over workers: ngx_cdp_status.c */
typedef enum {
    NGX_CDP_C_ACCEPTED = 0,
    NGX_CDP_C_STORED,
    NGX_CDP_C_DROP_MALFORMED,
    NGX_CDP_C_DROP_TOO_LARGE,
    NGX_CDP_C_DROP_QUEUE_FULL,
    NGX_CDP_C_DROP_REDIS_DOWN,
    NGX_CDP_C_DROP_REDIS_ERROR,
    NGX_CDP_C_COOKIE_NEW,
    NGX_CDP_C_COOKIE_KEPT,
    NGX_CDP_C_COOKIE_FORGED,
    NGX_CDP_C_COOKIE_MALFORMED,
    NGX_CDP_C_REDIS_CONNECTS,
    NGX_CDP_C_REDIS_CONNECT_FAILURES,
    NGX_CDP_C_REDIS_DISCONNECTS,
    NGX_CDP_C_REDIS_BATCHES,
    NGX_CDP_C_REDIS_MOVED,
    NGX_CDP_C_REDIS_ASK,
    NGX_CDP_C_REDIS_MAP_REFRESHES,
    NGX_CDP_C_QUEUE_EVENTS,
    NGX_CDP_C_AGGREGATED,
    NGX_CDP_C_IDENTIFY_ACCEPTED,
    NGX_CDP_C_IDENTIFY_INVALID,
    NGX_CDP_C_IDENTIFY_BLOCKED,
    NGX_CDP_C_IDENTIFY_NO_CONSENT,
    NGX_CDP_C_IDSIG_UNSIGNED,
    NGX_CDP_C_IDSIG_BAD,
    NGX_CDP_C_IDSIG_EXPIRED,
    NGX_CDP_C_MERGES,
    NGX_CDP_C_SHARED_DEVICE,
    NGX_CDP_C_IDENT_REFUSED,
    NGX_CDP_C_DROP_ERASED,
    NGX_CDP_C_API_DUPLICATES,
    NGX_CDP_C_API_REJECTED,
    NGX_CDP_C_API_UNAVAILABLE,
    NGX_CDP_C_SUPPRESSED_HITS,
    NGX_CDP_C_ADMIN_REQUESTS,
    NGX_CDP_C_ADMIN_DENIED,
    NGX_CDP_C_SEG_EVALUATED,
    NGX_CDP_C_SEG_DUE,
    NGX_CDP_C_SEG_EVENTS,
    NGX_CDP_C_SEG_BACKFILLED,
    NGX_CDP_C_SEG_BACKFILL_DONE,
    NGX_CDP_C_SPOOLED,
    NGX_CDP_C_REPLAYED,
    NGX_CDP_C_RESENT,
    NGX_CDP_C_ALREADY_APPLIED,
    NGX_CDP_C_SPOOL_BYTES,
    NGX_CDP_C_SPOOL_FILES,
    NGX_CDP_C_SPOOL_SET_ASIDE,
    NGX_CDP_C_DROP_SPOOL_FULL,
    NGX_CDP_C_DROP_SPOOL_ERROR,
    NGX_CDP_C_DROP_UNCONFIRMED,
    NGX_CDP_C_UNREPLICATED,
    NGX_CDP_C_FILTER_BOT,
    NGX_CDP_C_FILTER_PREFETCH,
    NGX_CDP_C_FILTER_MAIL_PROXY,
    NGX_CDP_C_CAPTURED,
    NGX_CDP_C_REDIRECTS,
    NGX_CDP_C_REDIRECT_REFUSED,
    NGX_CDP_C_EMAIL_OPENED,
    NGX_CDP_C_FORWARDED,
    NGX_CDP_C_SAGAS_DONE,
    NGX_CDP_C_SAGAS_SWEPT,
    NGX_CDP_C_SAGAS_ABANDONED,
    NGX_CDP_C_SAGAS_RUNNING,
    NGX_CDP_C_ADMIN_SAGAS_DONE,
    NGX_CDP_C_ADMIN_SAGAS_SWEPT,
    NGX_CDP_C_ADMIN_SAGAS_ERROR,
    NGX_CDP_C_ADMIN_SAGAS_ABANDONED,
    NGX_CDP_C_ADMIN_SAGAS_RUNNING,
    NGX_CDP_NCOUNTERS
} ngx_cdp_counter_e;

extern ngx_atomic_t  *ngx_cdp_counters;

#define ngx_cdp_count(i, n)                                                   \
    do {                                                                      \
        if (ngx_cdp_counters) {                                               \
            (void) ngx_atomic_fetch_add(&ngx_cdp_counters[i], n);             \
        }                                                                     \
    } while (0)


ngx_http_cdp_ctx_t *ngx_http_cdp_get_ctx(ngx_http_request_t *r);
ngx_int_t ngx_cdp_send(ngx_http_request_t *r, ngx_uint_t status,
    const char *type, u_char *body, size_t len);
ngx_int_t ngx_cdp_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *code, const char *message, const char *field);
ngx_int_t ngx_cdp_add_header(ngx_http_request_t *r, const char *key,
    const char *value);
ngx_int_t ngx_cdp_read_conf_file(ngx_conf_t *cf, ngx_str_t *directive,
    ngx_str_t *name, size_t max, u_char **buf, size_t *size);
ngx_int_t ngx_cdp_cookie_find(ngx_http_request_t *r, ngx_str_t *name,
    ngx_str_t *value);
ngx_table_elt_t *ngx_cdp_request_header(ngx_http_request_t *r,
    const char *name, size_t len);
ngx_int_t ngx_cdp_read_body(ngx_http_request_t *r, ngx_str_t *body,
    size_t max);
u_char *ngx_cdp_uri_tail(ngx_http_request_t *r, size_t *len);


/*
 * A request that waits for a callback (the API's batch, the admin API's
 * FCALL) without blocking: the timer of its timeout, and a pool cleanup
 * that detaches the callback when the request goes away.  The callback's
 * own struct outlives the request; *detach is its pointer back to the
 * waiting one, set to NULL when the request gives up, so that a late
 * answer finds nobody.  The owner: ngx_cdp_wait_start() once the callback
 * is armed; the callback calls ngx_cdp_wait_answered(); the timer's
 * handler ngx_cdp_wait_abandon() before it answers the request itself.
 */

typedef struct {
    ngx_event_t                timer;
    void                     **detach;      /* NULL once answered */
} ngx_cdp_wait_t;

ngx_int_t ngx_cdp_wait_start(ngx_http_request_t *r, ngx_cdp_wait_t *wt,
    void **detach, ngx_msec_t timeout, ngx_event_handler_pt handler,
    void *data);
void ngx_cdp_wait_answered(ngx_cdp_wait_t *wt);
void ngx_cdp_wait_abandon(ngx_cdp_wait_t *wt);


#endif /* _NGX_CDP_HTTP_H_INCLUDED_ */
