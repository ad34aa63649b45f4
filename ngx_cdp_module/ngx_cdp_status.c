
/*
 * ngx_cdp: counters, in shared memory, shown by cdp_status in Prometheus
 * text format.
 */


#include "ngx_http_cdp_module.h"
#include "ngx_cdp_dest.h"


ngx_atomic_t  *ngx_cdp_counters;


static ngx_str_t  ngx_cdp_counter_names[] = {
    ngx_string("cdp_events_accepted_total"),
    ngx_string("cdp_events_stored_total"),
    ngx_string("cdp_events_dropped_total{reason=\"malformed\"}"),
    ngx_string("cdp_events_dropped_total{reason=\"too_large\"}"),
    ngx_string("cdp_events_dropped_total{reason=\"queue_full\"}"),
    ngx_string("cdp_events_dropped_total{reason=\"redis_down\"}"),
    ngx_string("cdp_events_dropped_total{reason=\"redis_error\"}"),
    ngx_string("cdp_cookies_total{result=\"new\"}"),
    ngx_string("cdp_cookies_total{result=\"kept\"}"),
    ngx_string("cdp_cookies_total{result=\"forged\"}"),
    ngx_string("cdp_cookies_total{result=\"malformed\"}"),
    ngx_string("cdp_redis_connects_total"),
    ngx_string("cdp_redis_connect_failures_total"),
    ngx_string("cdp_redis_disconnects_total"),
    ngx_string("cdp_redis_batches_total"),
    ngx_string("cdp_queue_events"),
    ngx_string("cdp_events_aggregated_total"),
    ngx_string("cdp_identify_total{result=\"accepted\"}"),
    ngx_string("cdp_identify_total{result=\"invalid\"}"),
    ngx_string("cdp_identify_total{result=\"blocked\"}"),
    ngx_string("cdp_identify_total{result=\"no_consent\"}"),
    ngx_string("cdp_pixel_identity_total{result=\"unsigned\"}"),
    ngx_string("cdp_pixel_identity_total{result=\"bad_signature\"}"),
    ngx_string("cdp_pixel_identity_total{result=\"expired\"}"),
    ngx_string("cdp_merges_total"),
    ngx_string("cdp_shared_device_switches_total"),
    ngx_string("cdp_identifiers_refused_total"),
    ngx_string("cdp_events_dropped_total{reason=\"erased\"}"),
    ngx_string("cdp_api_duplicates_total"),
    ngx_string("cdp_api_requests_rejected_total"),
    ngx_string("cdp_api_unavailable_total"),
    ngx_string("cdp_suppressed_hits_total"),
    ngx_string("cdp_admin_requests_total"),
    ngx_string("cdp_admin_denied_total"),
    ngx_string("cdp_segment_due_evaluated_total"),
    ngx_string("cdp_segment_due_pending"),
    ngx_string("cdp_segment_tick_events_total"),
    ngx_string("cdp_segment_backfill_profiles"),
    ngx_string("cdp_segment_backfill_done"),
    ngx_string("cdp_spool_events_total{op=\"spooled\"}"),
    ngx_string("cdp_spool_events_total{op=\"replayed\"}"),
    ngx_string("cdp_events_resent_total"),
    ngx_string("cdp_events_already_applied_total"),
    ngx_string("cdp_spool_bytes"),
    ngx_string("cdp_spool_files"),
    ngx_string("cdp_spool_set_aside_total"),
    ngx_string("cdp_events_dropped_total{reason=\"spool_full\"}"),
    ngx_string("cdp_events_dropped_total{reason=\"spool_error\"}"),
    ngx_string("cdp_events_dropped_total{reason=\"unconfirmed\"}"),
    ngx_string("cdp_filtered_total{reason=\"bot\"}"),
    ngx_string("cdp_filtered_total{reason=\"prefetch\"}"),
    ngx_string("cdp_filtered_total{reason=\"mail_proxy\"}"),
    ngx_string("cdp_captured_total"),
    ngx_string("cdp_redirects_total{result=\"redirected\"}"),
    ngx_string("cdp_redirects_total{result=\"refused\"}"),
    ngx_string("cdp_email_opened_total")
};


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
    ngx_uint_t                 i;
    ngx_http_cdp_main_conf_t  *mcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    len = 0;

    for (i = 0; i < NGX_CDP_NCOUNTERS; i++) {
        len += ngx_cdp_counter_names[i].len + 1 + NGX_ATOMIC_T_LEN + 1;
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_cdp_module);
    len += ngx_cdp_dest_status_len(mcf);

    b = ngx_create_temp_buf(r->pool, len);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    for (i = 0; i < NGX_CDP_NCOUNTERS; i++) {
        b->last = ngx_sprintf(b->last, "%V %uA\n", &ngx_cdp_counter_names[i],
                              ngx_cdp_counters ? ngx_cdp_counters[i] : 0);
    }

    b->last = ngx_cdp_dest_status(mcf, b->last);

    return ngx_cdp_send(r, NGX_HTTP_OK,
                        "text/plain; version=0.0.4; charset=utf-8",
                        b->pos, b->last - b->pos);
}
