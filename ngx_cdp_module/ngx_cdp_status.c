
/*
 * ngx_cdp: counters, in shared memory, shown by cdp_status in Prometheus
 * text format.
 */


#include "ngx_http_cdp_module.h"
#include "ngx_cdp_http.h"
#include "ngx_cdp_status.h"
#include "ngx_cdp_dest.h"



/*
 * The metric families of cdp_status, in the order they are shown: each
 * once, with its HELP and TYPE lines, then all its samples together.
 */
typedef enum {
    NGX_CDP_M_ACCEPTED = 0,
    NGX_CDP_M_STORED,
    NGX_CDP_M_DROPPED,
    NGX_CDP_M_AGGREGATED,
    NGX_CDP_M_RESENT,
    NGX_CDP_M_ALREADY_APPLIED,
    NGX_CDP_M_FORWARDED,
    NGX_CDP_M_QUEUE,
    NGX_CDP_M_COOKIES,
    NGX_CDP_M_REDIS_CONNECTS,
    NGX_CDP_M_REDIS_CONNECT_FAILURES,
    NGX_CDP_M_REDIS_DISCONNECTS,
    NGX_CDP_M_REDIS_BATCHES,
    NGX_CDP_M_REDIS_REDIRECTS,
    NGX_CDP_M_REDIS_MAP_REFRESHES,
    NGX_CDP_M_REDIS_UNREPLICATED,
    NGX_CDP_M_IDENTIFY,
    NGX_CDP_M_PIXEL_IDENTITY,
    NGX_CDP_M_MERGES,
    NGX_CDP_M_SHARED_DEVICE,
    NGX_CDP_M_IDENT_REFUSED,
    NGX_CDP_M_SAGAS,
    NGX_CDP_M_SAGAS_RUNNING,
    NGX_CDP_M_API_DUPLICATES,
    NGX_CDP_M_API_REJECTED,
    NGX_CDP_M_API_UNAVAILABLE,
    NGX_CDP_M_SUPPRESSED_HITS,
    NGX_CDP_M_ADMIN_REQUESTS,
    NGX_CDP_M_ADMIN_DENIED,
    NGX_CDP_M_ADMIN_SAGAS,
    NGX_CDP_M_ADMIN_SAGAS_RUNNING,
    NGX_CDP_M_SEG_EVALUATED,
    NGX_CDP_M_SEG_DUE,
    NGX_CDP_M_SEG_EVENTS,
    NGX_CDP_M_SEG_BACKFILLED,
    NGX_CDP_M_SEG_BACKFILL_DONE,
    NGX_CDP_M_SPOOL_EVENTS,
    NGX_CDP_M_SPOOL_BYTES,
    NGX_CDP_M_SPOOL_FILES,
    NGX_CDP_M_SPOOL_SET_ASIDE,
    NGX_CDP_M_FILTERED,
    NGX_CDP_M_CAPTURED,
    NGX_CDP_M_REDIRECTS,
    NGX_CDP_M_EMAIL_OPENED,
    NGX_CDP_NMETRICS
} ngx_cdp_metric_e;


typedef struct {
    ngx_str_t                  name;
    ngx_str_t                  type;
    ngx_str_t                  help;    /* no backslash, no newline */
} ngx_cdp_metric_t;


typedef struct {
    ngx_uint_t                 metric;  /* NGX_CDP_M_* */
    ngx_str_t                  labels;
} ngx_cdp_sample_t;


#define ngx_cdp_counter(name, help)                                           \
    { ngx_string(name), ngx_string("counter"), ngx_string(help) }
#define ngx_cdp_gauge(name, help)                                             \
    { ngx_string(name), ngx_string("gauge"), ngx_string(help) }


/* indexed by ngx_cdp_metric_e */
static ngx_cdp_metric_t  ngx_cdp_metrics[] = {
    ngx_cdp_counter("cdp_events_accepted_total",
                    "Events queued for Redis."),
    ngx_cdp_counter("cdp_events_stored_total",
                    "Events acknowledged by Redis."),
    ngx_cdp_counter("cdp_events_dropped_total",
                    "Events dropped, by reason."),
    ngx_cdp_counter("cdp_events_aggregated_total",
                    "Hits without analytics consent, counted in the day's"
                    " aggregate only."),
    ngx_cdp_counter("cdp_events_resent_total",
                    "Events of batches sent again after a lost connection"
                    " or a busy store."),
    ngx_cdp_counter("cdp_events_already_applied_total",
                    "Events of batches the store had applied before (a lost"
                    " reply): skipped."),
    ngx_cdp_counter("cdp_events_forwarded_total",
                    "Events the store handed back to be queued again for"
                    " the shard of the person they belong to (Redis"
                    " Cluster)."),
    ngx_cdp_gauge("cdp_queue_events",
                  "Events waiting in the workers' queues."),
    ngx_cdp_counter("cdp_cookies_total",
                    "Visitor cookies read or set, by result."),
    ngx_cdp_counter("cdp_redis_connects_total",
                    "Connections to Redis established."),
    ngx_cdp_counter("cdp_redis_connect_failures_total",
                    "Connections to Redis that failed."),
    ngx_cdp_counter("cdp_redis_disconnects_total",
                    "Connections to Redis lost."),
    ngx_cdp_counter("cdp_redis_batches_total",
                    "Batches of events sent to Redis."),
    ngx_cdp_counter("cdp_redis_redirects_total",
                    "Commands a Redis Cluster node redirected to another"
                    " (MOVED or ASK), by kind."),
    ngx_cdp_counter("cdp_redis_map_refreshes_total",
                    "Redis Cluster slot maps read (CLUSTER SLOTS)."),
    ngx_cdp_counter("cdp_redis_unreplicated_batches_total",
                    "Batches a Redis Cluster master applied that no"
                    " replica acknowledged in time (WAIT)."),
    ngx_cdp_counter("cdp_identify_total",
                    "Identities queued and identifiers left out, by"
                    " result."),
    ngx_cdp_counter("cdp_pixel_identity_total",
                    "Pixel hits whose uid or email did not identify, by"
                    " result."),
    ngx_cdp_counter("cdp_merges_total",
                    "Profiles merged into another."),
    ngx_cdp_counter("cdp_shared_device_switches_total",
                    "Browsers moved to another user."),
    ngx_cdp_counter("cdp_identifiers_refused_total",
                    "Identifiers and merges refused by cdp_identity_limits."),
    ngx_cdp_counter("cdp_identity_sagas_total",
                    "Identities resolved on Redis Cluster by a chain of"
                    " single-slot calls, by result."),
    ngx_cdp_gauge("cdp_identity_sagas_running",
                  "Identity sagas running in the workers."),
    ngx_cdp_counter("cdp_api_duplicates_total",
                    "API messages dropped by the store: messageId seen."),
    ngx_cdp_counter("cdp_api_requests_rejected_total",
                    "API requests refused with 400, 401 or 413."),
    ngx_cdp_counter("cdp_api_unavailable_total",
                    "API requests answered 503."),
    ngx_cdp_counter("cdp_suppressed_hits_total",
                    "Pixel hits of erased browsers: nothing stored."),
    ngx_cdp_counter("cdp_admin_requests_total",
                    "Admin API requests."),
    ngx_cdp_counter("cdp_admin_denied_total",
                    "Admin API requests refused with 401 or 403."),
    ngx_cdp_counter("cdp_admin_sagas_total",
                    "Erasures, exports and profile reads on Redis Cluster"
                    " by a chain of single-slot calls, by result."),
    ngx_cdp_gauge("cdp_admin_sagas_running",
                  "Admin sagas running in the workers."),
    ngx_cdp_counter("cdp_segment_due_evaluated_total",
                    "Profiles evaluated again as their segment rules"
                    " flipped with time."),
    ngx_cdp_gauge("cdp_segment_due_pending",
                  "Profiles due for evaluation left after the last tick."),
    ngx_cdp_counter("cdp_segment_tick_events_total",
                    "Segment Entered and Exited events of the time-based"
                    " evaluation and the backfill."),
    ngx_cdp_gauge("cdp_segment_backfill_profiles",
                  "Profiles evaluated by the current segments' backfill."),
    ngx_cdp_gauge("cdp_segment_backfill_done",
                  "1 once the current segments' backfill is done."),
    ngx_cdp_counter("cdp_spool_events_total",
                    "Events written to the spool, and replayed from it and"
                    " stored."),
    ngx_cdp_gauge("cdp_spool_bytes",
                  "Bytes in the spool files."),
    ngx_cdp_gauge("cdp_spool_files",
                  "Spool files."),
    ngx_cdp_counter("cdp_spool_set_aside_total",
                    "Damaged spool files set aside."),
    ngx_cdp_counter("cdp_filtered_total",
                    "Requests not tracked, by reason."),
    ngx_cdp_counter("cdp_captured_total",
                    "Page views of cdp_capture."),
    ngx_cdp_counter("cdp_redirects_total",
                    "Requests of cdp_redirect, by result."),
    ngx_cdp_counter("cdp_email_opened_total",
                    "Signed pixels fetched by a mail proxy: Email Opened"
                    " queued.")
};


#define ngx_cdp_sample(metric, labels)                                        \
    { NGX_CDP_M_ ## metric, ngx_string(labels) }


/* indexed by ngx_cdp_counter_e: the family and labels of each counter */
static ngx_cdp_sample_t  ngx_cdp_samples[] = {
    ngx_cdp_sample(ACCEPTED, ""),
    ngx_cdp_sample(STORED, ""),
    ngx_cdp_sample(DROPPED, "{reason=\"malformed\"}"),
    ngx_cdp_sample(DROPPED, "{reason=\"too_large\"}"),
    ngx_cdp_sample(DROPPED, "{reason=\"queue_full\"}"),
    ngx_cdp_sample(DROPPED, "{reason=\"redis_down\"}"),
    ngx_cdp_sample(DROPPED, "{reason=\"redis_error\"}"),
    ngx_cdp_sample(COOKIES, "{result=\"new\"}"),
    ngx_cdp_sample(COOKIES, "{result=\"kept\"}"),
    ngx_cdp_sample(COOKIES, "{result=\"forged\"}"),
    ngx_cdp_sample(COOKIES, "{result=\"malformed\"}"),
    ngx_cdp_sample(REDIS_CONNECTS, ""),
    ngx_cdp_sample(REDIS_CONNECT_FAILURES, ""),
    ngx_cdp_sample(REDIS_DISCONNECTS, ""),
    ngx_cdp_sample(REDIS_BATCHES, ""),
    ngx_cdp_sample(REDIS_REDIRECTS, "{kind=\"moved\"}"),
    ngx_cdp_sample(REDIS_REDIRECTS, "{kind=\"ask\"}"),
    ngx_cdp_sample(REDIS_MAP_REFRESHES, ""),
    ngx_cdp_sample(QUEUE, ""),
    ngx_cdp_sample(AGGREGATED, ""),
    ngx_cdp_sample(IDENTIFY, "{result=\"accepted\"}"),
    ngx_cdp_sample(IDENTIFY, "{result=\"invalid\"}"),
    ngx_cdp_sample(IDENTIFY, "{result=\"blocked\"}"),
    ngx_cdp_sample(IDENTIFY, "{result=\"no_consent\"}"),
    ngx_cdp_sample(PIXEL_IDENTITY, "{result=\"unsigned\"}"),
    ngx_cdp_sample(PIXEL_IDENTITY, "{result=\"bad_signature\"}"),
    ngx_cdp_sample(PIXEL_IDENTITY, "{result=\"expired\"}"),
    ngx_cdp_sample(MERGES, ""),
    ngx_cdp_sample(SHARED_DEVICE, ""),
    ngx_cdp_sample(IDENT_REFUSED, ""),
    ngx_cdp_sample(DROPPED, "{reason=\"erased\"}"),
    ngx_cdp_sample(API_DUPLICATES, ""),
    ngx_cdp_sample(API_REJECTED, ""),
    ngx_cdp_sample(API_UNAVAILABLE, ""),
    ngx_cdp_sample(SUPPRESSED_HITS, ""),
    ngx_cdp_sample(ADMIN_REQUESTS, ""),
    ngx_cdp_sample(ADMIN_DENIED, ""),
    ngx_cdp_sample(SEG_EVALUATED, ""),
    ngx_cdp_sample(SEG_DUE, ""),
    ngx_cdp_sample(SEG_EVENTS, ""),
    ngx_cdp_sample(SEG_BACKFILLED, ""),
    ngx_cdp_sample(SEG_BACKFILL_DONE, ""),
    ngx_cdp_sample(SPOOL_EVENTS, "{op=\"spooled\"}"),
    ngx_cdp_sample(SPOOL_EVENTS, "{op=\"replayed\"}"),
    ngx_cdp_sample(RESENT, ""),
    ngx_cdp_sample(ALREADY_APPLIED, ""),
    ngx_cdp_sample(SPOOL_BYTES, ""),
    ngx_cdp_sample(SPOOL_FILES, ""),
    ngx_cdp_sample(SPOOL_SET_ASIDE, ""),
    ngx_cdp_sample(DROPPED, "{reason=\"spool_full\"}"),
    ngx_cdp_sample(DROPPED, "{reason=\"spool_error\"}"),
    ngx_cdp_sample(DROPPED, "{reason=\"unconfirmed\"}"),
    ngx_cdp_sample(REDIS_UNREPLICATED, ""),
    ngx_cdp_sample(FILTERED, "{reason=\"bot\"}"),
    ngx_cdp_sample(FILTERED, "{reason=\"prefetch\"}"),
    ngx_cdp_sample(FILTERED, "{reason=\"mail_proxy\"}"),
    ngx_cdp_sample(CAPTURED, ""),
    ngx_cdp_sample(REDIRECTS, "{result=\"redirected\"}"),
    ngx_cdp_sample(REDIRECTS, "{result=\"refused\"}"),
    ngx_cdp_sample(EMAIL_OPENED, ""),
    ngx_cdp_sample(FORWARDED, ""),
    ngx_cdp_sample(SAGAS, "{result=\"done\"}"),
    ngx_cdp_sample(SAGAS, "{result=\"swept\"}"),
    ngx_cdp_sample(SAGAS, "{result=\"abandoned\"}"),
    ngx_cdp_sample(SAGAS_RUNNING, ""),
    ngx_cdp_sample(ADMIN_SAGAS, "{result=\"done\"}"),
    ngx_cdp_sample(ADMIN_SAGAS, "{result=\"swept\"}"),
    ngx_cdp_sample(ADMIN_SAGAS, "{result=\"error\"}"),
    ngx_cdp_sample(ADMIN_SAGAS, "{result=\"abandoned\"}"),
    ngx_cdp_sample(ADMIN_SAGAS_RUNNING, "")
};


/* a counter added to ngx_cdp_counter_e needs its row above: or no build */
typedef char ngx_cdp_samples_check[
    sizeof(ngx_cdp_samples) / sizeof(ngx_cdp_sample_t) == NGX_CDP_NCOUNTERS
    ? 1 : -1];
typedef char ngx_cdp_metrics_check[
    sizeof(ngx_cdp_metrics) / sizeof(ngx_cdp_metric_t) == NGX_CDP_NMETRICS
    ? 1 : -1];


ngx_int_t
ngx_cdp_status_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_slab_pool_t  *shpool;

    if (data) {
        /* a reload: keep counting where the old cycle was */
        shm_zone->data = data;
        ngx_cdp_counters = data;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    ngx_cdp_counters = ngx_slab_calloc(shpool,
                                       NGX_CDP_NCOUNTERS
                                       * sizeof(ngx_atomic_t));
    if (ngx_cdp_counters == NULL) {
        return NGX_ERROR;
    }

    shm_zone->data = (void *) ngx_cdp_counters;

    return NGX_OK;
}


ngx_int_t
ngx_cdp_status_handler(ngx_http_request_t *r)
{
    size_t                     len;
    ngx_buf_t                 *b;
    ngx_uint_t                 i, m;
    ngx_cdp_metric_t          *mt;
    ngx_http_cdp_main_conf_t  *mcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    len = 0;

    for (m = 0; m < NGX_CDP_NMETRICS; m++) {
        mt = &ngx_cdp_metrics[m];
        len += sizeof("# HELP  \n# TYPE  \n") - 1 + 2 * mt->name.len
               + mt->help.len + mt->type.len;
    }

    for (i = 0; i < NGX_CDP_NCOUNTERS; i++) {
        len += ngx_cdp_metrics[ngx_cdp_samples[i].metric].name.len
               + ngx_cdp_samples[i].labels.len + 1 + NGX_ATOMIC_T_LEN + 1;
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_cdp_module);
    len += ngx_cdp_dest_status_len(mcf);

    b = ngx_create_temp_buf(r->pool, len);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* by family, whatever the order of the counters */

    for (m = 0; m < NGX_CDP_NMETRICS; m++) {
        mt = &ngx_cdp_metrics[m];

        b->last = ngx_sprintf(b->last, "# HELP %V %V\n# TYPE %V %V\n",
                              &mt->name, &mt->help, &mt->name, &mt->type);

        for (i = 0; i < NGX_CDP_NCOUNTERS; i++) {
            if (ngx_cdp_samples[i].metric != m) {
                continue;
            }

            b->last = ngx_sprintf(b->last, "%V%V %uA\n", &mt->name,
                                  &ngx_cdp_samples[i].labels,
                                  ngx_cdp_counters ? ngx_cdp_counters[i] : 0);
        }
    }

    b->last = ngx_cdp_dest_status(mcf, b->last);

    return ngx_cdp_send(r, NGX_HTTP_OK,
                        "text/plain; version=0.0.4; charset=utf-8",
                        b->pos, b->last - b->pos);
}
