
/*
 * ngx_cdp: directives, configuration, variables, process hooks.
 */


#include "ngx_http_cdp_module.h"
#include "ngx_cdp_http.h"
#include "ngx_cdp_wire.h"
#include "ngx_cdp_cookie.h"
#include "ngx_cdp_geo.h"
#include "ngx_cdp_policy.h"
#include "ngx_cdp_endpoint.h"
#include "ngx_cdp_identify.h"
#include "ngx_cdp_api.h"
#include "ngx_cdp_suppress.h"
#include "ngx_cdp_admin.h"
#include "ngx_cdp_pixel.h"
#include "ngx_cdp_profile.h"
#include "ngx_cdp_status.h"
#include "ngx_cdp_dest.h"
#include "ngx_cdp_audience.h"
#include "ngx_cdp_ingest.h"
#include "ngx_cdp_spool.h"
#include "ngx_cdp_capture.h"
#include "ngx_cdp_shard.h"


static ngx_int_t ngx_http_cdp_add_variables(ngx_conf_t *cf);
static ngx_int_t ngx_http_cdp_init(ngx_conf_t *cf);
static void *ngx_http_cdp_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_cdp_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_cdp_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_cdp_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_cdp_redis(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_cdp_redis_cluster(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_cdp_redis_params(ngx_conf_t *cf, ngx_command_t *cmd,
    ngx_http_cdp_main_conf_t *mcf, ngx_uint_t first);
static char *ngx_http_cdp_secret_file(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_cdp_cookie(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_cdp_pixel(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_cdp_status(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_cdp_consent_endpoint(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_cdp_positive(ngx_conf_t *cf, void *post, void *data);
static char *ngx_http_cdp_consent_slot(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_cdp_needs(ngx_conf_t *cf,
    ngx_http_cdp_loc_conf_t *conf, ngx_http_cdp_main_conf_t *mcf);
static ngx_int_t ngx_http_cdp_prepare_key(ngx_conf_t *cf,
    ngx_cdp_hmac_key_t *key, u_char *secret, size_t len, const char *label);
static void ngx_http_cdp_cleanup_key(void *data);
static ngx_int_t ngx_http_cdp_init_process(ngx_cycle_t *cycle);
static void ngx_http_cdp_exit_process(ngx_cycle_t *cycle);


static ngx_conf_post_handler_pt  ngx_http_cdp_positive_p =
    ngx_http_cdp_positive;


static ngx_conf_enum_t  ngx_http_cdp_store_ip[] = {
    { ngx_string("off"), NGX_CDP_STORE_IP_OFF },
    { ngx_string("truncated"), NGX_CDP_STORE_IP_TRUNCATED },
    { ngx_null_string, 0 }
};


/* the cmd->post of cdp_identity_secret_file: only its address matters */
static ngx_uint_t  ngx_http_cdp_ident_post;


static ngx_command_t  ngx_http_cdp_commands[] = {

    { ngx_string("cdp_redis"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_cdp_redis,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("cdp_redis_cluster"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_cdp_redis_cluster,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("cdp_secret_file"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_cdp_secret_file,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    /* post: marks the identity file for ngx_http_cdp_secret_file() */
    { ngx_string("cdp_identity_secret_file"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_cdp_secret_file,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      &ngx_http_cdp_ident_post },

    { ngx_string("cdp_geoip_db"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_cdp_geo_open,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("cdp_store_ip"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_cdp_loc_conf_t, store_ip),
      &ngx_http_cdp_store_ip },

    { ngx_string("cdp_consent"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_cdp_consent_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_cdp_loc_conf_t, consent),
      NULL },

    { ngx_string("cdp_consent_default"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_cdp_consent_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_cdp_loc_conf_t, consent_default),
      NULL },

    { ngx_string("cdp_consent_cookie"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_cdp_loc_conf_t, consent_cookie),
      NULL },

    { ngx_string("cdp_consent_version"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_cdp_loc_conf_t, consent_version),
      NULL },

    { ngx_string("cdp_consent_endpoint"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_cdp_consent_endpoint,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("cdp_stream_maxlen"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_cdp_main_conf_t, stream_maxlen),
      &ngx_http_cdp_positive_p },

    { ngx_string("cdp_batch_size"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_cdp_main_conf_t, batch_size),
      &ngx_http_cdp_positive_p },

    { ngx_string("cdp_queue_size"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_cdp_main_conf_t, queue_size),
      &ngx_http_cdp_positive_p },

    { ngx_string("cdp_capture"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_cdp_loc_conf_t, capture),
      NULL },

    { ngx_string("cdp_bot"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_cdp_bot_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("cdp_redirect"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_cdp_redirect_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("cdp_redirect_hosts"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_cdp_redirect_hosts,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("cdp_spool"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE12,
      ngx_cdp_spool_conf,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("cdp_cookie"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_cdp_cookie,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("cdp_pixel"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS|NGX_CONF_TAKE1,
      ngx_http_cdp_pixel,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("cdp_status"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_cdp_status,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("cdp_identify"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_cdp_identify_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("cdp_identity_limits"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_cdp_identity_limits,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("cdp_identity_blocked"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_cdp_identity_blocked,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("cdp_phone_country_code"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_cdp_main_conf_t, phone_cc),
      NULL },

    { ngx_string("cdp_api"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_cdp_api_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("cdp_write_key"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE12,
      ngx_cdp_write_key_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("cdp_profile"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_cdp_loc_conf_t, profile),
      NULL },

    { ngx_string("cdp_profile_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_cdp_loc_conf_t, profile_timeout),
      NULL },

    { ngx_string("cdp_api_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_cdp_loc_conf_t, api_timeout),
      NULL },

    { ngx_string("cdp_dedup_window"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_cdp_main_conf_t, dedup_window),
      NULL },

    { ngx_string("cdp_aggregate_retention"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_cdp_main_conf_t, agg_retention),
      NULL },

    { ngx_string("cdp_suppression_size"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_cdp_main_conf_t, suppression_size),
      NULL },

    { ngx_string("cdp_admin"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_cdp_admin_directive,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("cdp_admin_tokens"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_cdp_admin_tokens,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("cdp_destination"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_cdp_dest_directive,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("cdp_segment"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE2,
      ngx_cdp_audience_segment,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("cdp_profile_event"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_cdp_audience_profile_event,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("cdp_timeline_max"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_cdp_main_conf_t, timeline_max),
      &ngx_http_cdp_positive_p },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_cdp_module_ctx = {
    ngx_http_cdp_add_variables,            /* preconfiguration */
    ngx_http_cdp_init,                     /* postconfiguration */

    ngx_http_cdp_create_main_conf,         /* create main configuration */
    ngx_http_cdp_init_main_conf,           /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_cdp_create_loc_conf,          /* create location configuration */
    ngx_http_cdp_merge_loc_conf            /* merge location configuration */
};


ngx_module_t  ngx_http_cdp_module = {
    NGX_MODULE_V1,
    &ngx_http_cdp_module_ctx,              /* module context */
    ngx_http_cdp_commands,                 /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_cdp_init_process,             /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_cdp_exit_process,             /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_http_variable_t  ngx_http_cdp_vars[] = {

    { ngx_string("cdp_anonymous_id"), NULL,
      ngx_cdp_variable_anonymous_id, 0, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("cdp_consent"), NULL, ngx_cdp_variable_consent, 0, 0, 0 },

    { ngx_string("cdp_segments"), NULL, ngx_cdp_variable_segments, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("cdp_profile_id"), NULL, ngx_cdp_variable_segments, 1,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("cdp_country"), NULL, ngx_cdp_variable_geo,
      offsetof(ngx_http_cdp_ctx_t, country), 0, 0 },

    { ngx_string("cdp_region"), NULL, ngx_cdp_variable_geo,
      offsetof(ngx_http_cdp_ctx_t, region), 0, 0 },

    { ngx_string("cdp_city"), NULL, ngx_cdp_variable_geo,
      offsetof(ngx_http_cdp_ctx_t, city), 0, 0 },

      ngx_http_null_variable
};


static ngx_str_t  ngx_http_cdp_zone_name = ngx_string("ngx_cdp_counters");

static ngx_http_cdp_cookie_conf_t  ngx_http_cdp_default_cookie = {
    ngx_string("cdp_aid"),
    ngx_null_string,
    ngx_string("/"),
    NGX_CDP_MAX_AGE_LIMIT,
    NGX_CDP_SAMESITE_LAX,
    NGX_CDP_SECURE_AUTO
};


static ngx_int_t
ngx_http_cdp_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_cdp_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_cdp_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_cdp_main_conf_t   *mcf;
    ngx_http_core_main_conf_t  *cmcf;

    mcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_cdp_module);

    /*
     * The counters live in shared memory so that cdp_status sums every
     * worker and a reload keeps them (same name, size and tag).
     */

    mcf->shm_zone = ngx_shared_memory_add(cf, &ngx_http_cdp_zone_name,
                                          8 * ngx_pagesize,
                                          &ngx_http_cdp_module);
    if (mcf->shm_zone == NULL) {
        return NGX_ERROR;
    }

    mcf->shm_zone->init = ngx_cdp_status_init_zone;

    if (ngx_cdp_suppress_add_zone(cf, mcf->suppression_size) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_cdp_dest_init(cf, mcf) != NGX_OK) {
        return NGX_ERROR;
    }

    /* cdp_profile: the profile is read before access is decided */

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_PREACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_cdp_profile_handler;

    if (ngx_cdp_identify_init(cf) != NGX_OK) {
        return NGX_ERROR;
    }

    /* after cdp_identify's: a captured page's view comes before its login */

    return ngx_cdp_capture_init(cf);
}


static void *
ngx_http_cdp_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_cdp_main_conf_t  *mcf;

    mcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_cdp_main_conf_t));
    if (mcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     mcf->redis.addr = NULL;
     *     mcf->redis.seeds = NULL;
     *     mcf->redis.password = { 0, NULL };
     *     mcf->prefix = { 0, NULL };
     *     mcf->secret_file = { 0, NULL };
     *     mcf->ident_file = { 0, NULL };
     *     mcf->nkeys = 0;
     */

    mcf->redis.db = NGX_CONF_UNSET_UINT;
    mcf->redis.timeout = NGX_CONF_UNSET_MSEC;
    mcf->redis.shards = NGX_CONF_UNSET_UINT;
    mcf->stream_maxlen = NGX_CONF_UNSET_UINT;
    mcf->batch_size = NGX_CONF_UNSET_UINT;
    mcf->queue_size = NGX_CONF_UNSET_UINT;
    mcf->limit_user_id = NGX_CONF_UNSET_UINT;
    mcf->limit_email = NGX_CONF_UNSET_UINT;
    mcf->limit_phone = NGX_CONF_UNSET_UINT;
    mcf->timeline_max = NGX_CONF_UNSET_UINT;
    mcf->dedup_window = NGX_CONF_UNSET;
    mcf->agg_retention = NGX_CONF_UNSET;
    mcf->suppression_size = NGX_CONF_UNSET_SIZE;

    return mcf;
}


static char *
ngx_http_cdp_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_cdp_main_conf_t  *mcf = conf;

    ngx_conf_init_uint_value(mcf->redis.db, 0);
    ngx_conf_init_msec_value(mcf->redis.timeout, 2000);
    ngx_conf_init_uint_value(mcf->redis.shards, NGX_CDP_SHARDS_DEFAULT);
    ngx_conf_init_uint_value(mcf->stream_maxlen, NGX_CDP_WIRE_MAXLEN);
    ngx_conf_init_uint_value(mcf->batch_size, 256);
    ngx_conf_init_uint_value(mcf->queue_size, 10000);
    ngx_conf_init_uint_value(mcf->limit_user_id,
                             NGX_CDP_WIRE_LIMIT_USER_ID);
    ngx_conf_init_uint_value(mcf->limit_email, NGX_CDP_WIRE_LIMIT_EMAIL);
    ngx_conf_init_uint_value(mcf->limit_phone, NGX_CDP_WIRE_LIMIT_PHONE);
    ngx_conf_init_uint_value(mcf->timeline_max, NGX_CDP_WIRE_TIMELINE_MAX);
    ngx_conf_init_value(mcf->dedup_window, NGX_CDP_WIRE_DEDUP);
    /* 25 months of 30 days: CNIL's bound for consent-exempt audience data */
    ngx_conf_init_value(mcf->agg_retention, NGX_CDP_WIRE_AGG_RETENTION);
    ngx_conf_init_size_value(mcf->suppression_size, 4 * 1024 * 1024);

    if (mcf->suppression_size < 64 * 1024) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "cdp_suppression_size must be at least 64k");
        return NGX_CONF_ERROR;
    }

    if (mcf->agg_retention < 86400) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "cdp_aggregate_retention must be at least 1d");
        return NGX_CONF_ERROR;
    }

    if (mcf->dedup_window < 1) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "cdp_dedup_window must be at least 1s");
        return NGX_CONF_ERROR;
    }

    /* 1 to 3 digits, not starting with 0: ngx_cdp_phone_normalize() */

    if (mcf->phone_cc.len
        && (mcf->phone_cc.len > 3 || mcf->phone_cc.data[0] == '0'
            || ngx_atoi(mcf->phone_cc.data, mcf->phone_cc.len) == NGX_ERROR))
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid cdp_phone_country_code \"%V\": 1 to 3 "
                           "digits without \"+\", e.g. 49", &mcf->phone_cc);
        return NGX_CONF_ERROR;
    }

    if (mcf->prefix.data == NULL) {
        ngx_str_set(&mcf->prefix, "cdp");
    }

    if (mcf->nkeys > 1 && mcf->ident_file.data == NULL) {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "cdp_secret_file has %ui keys and no "
                           "cdp_identity_secret_file: identifiers in Redis "
                           "are named with the first key, so a new first "
                           "key renames them all (known people get new "
                           "profiles, erasure by e-mail misses the old "
                           "names); keep one key in cdp_identity_secret_file",
                           mcf->nkeys);
    }

    if (mcf->batch_size > mcf->queue_size) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "cdp_batch_size %ui is larger than "
                           "cdp_queue_size %ui",
                           mcf->batch_size, mcf->queue_size);
        return NGX_CONF_ERROR;
    }

    if (ngx_cdp_audience_init_main_conf(cf, mcf) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    return ngx_cdp_dest_init_main_conf(cf, mcf);
}


static void *
ngx_http_cdp_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_cdp_loc_conf_t  *lcf;

    lcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_cdp_loc_conf_t));
    if (lcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     lcf->cookie = NULL;
     *     lcf->pixel = 0;
     */

    lcf->store_ip = NGX_CONF_UNSET_UINT;
    lcf->consent = NGX_CONF_UNSET_PTR;
    lcf->consent_default = NGX_CONF_UNSET_PTR;
    lcf->identify = NGX_CONF_UNSET_PTR;
    lcf->write_keys = NGX_CONF_UNSET_PTR;
    lcf->api_timeout = NGX_CONF_UNSET_MSEC;
    lcf->profile = NGX_CONF_UNSET;
    lcf->profile_timeout = NGX_CONF_UNSET_MSEC;
    lcf->capture = NGX_CONF_UNSET;
    lcf->bots = NGX_CONF_UNSET;
    lcf->bot = NGX_CONF_UNSET_PTR;
    lcf->redirect_hosts = NGX_CONF_UNSET_PTR;

    return lcf;
}


static char *
ngx_http_cdp_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_cdp_loc_conf_t *prev = parent;
    ngx_http_cdp_loc_conf_t *conf = child;

    u_char                     c;
    ngx_uint_t                 i;
    ngx_http_cdp_main_conf_t  *mcf;

    if (conf->cookie == NULL) {
        conf->cookie = prev->cookie ? prev->cookie
                                    : &ngx_http_cdp_default_cookie;
    }

    ngx_conf_merge_uint_value(conf->store_ip, prev->store_ip,
                              NGX_CDP_STORE_IP_TRUNCATED);
    ngx_conf_merge_ptr_value(conf->consent, prev->consent, NULL);
    ngx_conf_merge_ptr_value(conf->consent_default, prev->consent_default,
                             NULL);
    ngx_conf_merge_ptr_value(conf->identify, prev->identify, NULL);
    ngx_conf_merge_ptr_value(conf->write_keys, prev->write_keys, NULL);
    ngx_conf_merge_msec_value(conf->api_timeout, prev->api_timeout, 5000);
    ngx_conf_merge_value(conf->profile, prev->profile, 0);
    ngx_conf_merge_msec_value(conf->profile_timeout, prev->profile_timeout,
                              50);
    ngx_conf_merge_value(conf->capture, prev->capture, 0);
    ngx_conf_merge_value(conf->bots, prev->bots, 1);
    ngx_conf_merge_ptr_value(conf->bot, prev->bot, NULL);
    ngx_conf_merge_ptr_value(conf->redirect_hosts, prev->redirect_hosts,
                             NULL);

    mcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_cdp_module);

    if (ngx_http_cdp_needs(cf, conf, mcf) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    ngx_conf_merge_str_value(conf->consent_cookie, prev->consent_cookie,
                             "cdp_consent");
    ngx_conf_merge_str_value(conf->consent_version, prev->consent_version,
                             "1");

    /* it goes into the signed consent cookie: [A-Za-z0-9._-], 1 to 32 */

    if (conf->consent_version.len == 0 || conf->consent_version.len > 32) {
        goto bad_version;
    }

    for (i = 0; i < conf->consent_version.len; i++) {
        c = conf->consent_version.data[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
              || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
        {
            goto bad_version;
        }
    }

    return NGX_CONF_OK;

bad_version:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid cdp_consent_version \"%V\": 1 to 32 of "
                       "[A-Za-z0-9._-]", &conf->consent_version);

    return NGX_CONF_ERROR;
}


/*
 * What a location's directives need from the http block, checked once it
 * is all read (so that they may stand in any order, in included files):
 * the secret for anything that sets a cookie or signs, write keys for the
 * API, tokens for the admin API; and a warning when events would go
 * nowhere (neither cdp_redis nor cdp_redis_cluster).
 */

static ngx_int_t
ngx_http_cdp_needs(ngx_conf_t *cf, ngx_http_cdp_loc_conf_t *conf,
    ngx_http_cdp_main_conf_t *mcf)
{
    const char  *what;

    if (conf->api && conf->write_keys == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "cdp_api requires at least one cdp_write_key");
        return NGX_ERROR;
    }

    if (conf->admin && mcf->admin_tokens == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "cdp_admin requires cdp_admin_tokens "
                           "in the http block");
        return NGX_ERROR;
    }

    what = conf->pixel ? "cdp_pixel"
           : conf->api ? "cdp_api"
           : conf->admin ? "cdp_admin"
           : conf->redirect ? "cdp_redirect"
           : conf->consent_endpoint ? "cdp_consent_endpoint"
           : conf->identify ? "cdp_identify"
           : conf->capture == 1 ? "cdp_capture"
           : NULL;

    if (what == NULL) {
        return NGX_OK;
    }

    if (mcf->nkeys == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "%s requires cdp_secret_file in the http block",
                           what);
        return NGX_ERROR;
    }

    if (!ngx_cdp_redis_configured(&mcf->redis) && !mcf->warned_no_redis) {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "%s without cdp_redis or cdp_redis_cluster in "
                           "the http block: its events are counted and "
                           "dropped", what);
        mcf->warned_no_redis = 1;
    }

    return NGX_OK;
}


/*
 * cdp_consent and cdp_consent_default: a value with variables is read per
 * request; a literal one must be a consent value now, so that a typo
 * ("analytic") fails nginx -t instead of denying every visitor
 */

static char *
ngx_http_cdp_consent_slot(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    char                      *rv;
    ngx_str_t                 *value;
    ngx_http_complex_value_t  *cv;

    rv = ngx_http_set_complex_value_slot(cf, cmd, conf);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    cv = *(ngx_http_complex_value_t **) ((char *) conf + cmd->offset);
    value = cf->args->elts;

    if (cv->lengths == NULL
        && ngx_cdp_consent_parse(cv->value.data, cv->value.len) < 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid %V value \"%V\": \"all\", \"none\" or "
                           "purposes among analytics, marketing and "
                           "personalization, like \"analytics,marketing\"",
                           &cmd->name, &value[1]);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* cdp_redis address [parameters]: one Redis server */

static char *
ngx_http_cdp_redis(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_cdp_main_conf_t *mcf = conf;

    ngx_str_t  *value;
    ngx_url_t   u;

    if (mcf->redis.addr) {
        return "is duplicate";
    }

    if (mcf->redis.seeds) {
        return "cannot be used with cdp_redis_cluster";
    }

    value = cf->args->elts;

    ngx_memzero(&u, sizeof(ngx_url_t));

    u.url = value[1];
    u.no_resolve = 0;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK) {
        if (u.err) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "%s in cdp_redis address \"%V\"",
                               u.err, &u.url);
        }

        return NGX_CONF_ERROR;
    }

    if (u.naddrs == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "cdp_redis address \"%V\" resolves to nothing",
                           &u.url);
        return NGX_CONF_ERROR;
    }

    if (u.family != AF_UNIX && u.no_port) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "cdp_redis address \"%V\" has no port", &u.url);
        return NGX_CONF_ERROR;
    }

    /* the first address: one connection per worker */
    mcf->redis.addr = &u.addrs[0];
    mcf->redis.addr_text = u.url;

    return ngx_http_cdp_redis_params(cf, cmd, mcf, 2);
}


/*
 * cdp_redis_cluster host:port... [parameters]: the nodes the cluster's
 * map is asked from, resolved now (the workers never resolve a name:
 * the nodes of the map come as addresses); every address a name
 * resolves to is a seed.
 */

static char *
ngx_http_cdp_redis_cluster(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_cdp_main_conf_t *mcf = conf;

    ngx_str_t   *value;
    ngx_url_t    u;
    ngx_uint_t   i, j;
    ngx_addr_t  *a;

    if (mcf->redis.seeds) {
        return "is duplicate";
    }

    if (mcf->redis.addr) {
        return "cannot be used with cdp_redis";
    }

    mcf->redis.seeds = ngx_array_create(cf->pool, 4, sizeof(ngx_addr_t));
    if (mcf->redis.seeds == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    /* the seeds, up to the first name=value parameter */

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strlchr(value[i].data, value[i].data + value[i].len, '=')) {
            break;
        }

        ngx_memzero(&u, sizeof(ngx_url_t));

        u.url = value[i];
        u.no_resolve = 0;

        if (ngx_parse_url(cf->pool, &u) != NGX_OK) {
            if (u.err) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "%s in cdp_redis_cluster seed \"%V\"",
                                   u.err, &u.url);
            }

            return NGX_CONF_ERROR;
        }

        if (u.family == AF_UNIX) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "cdp_redis_cluster seed \"%V\" is a unix "
                               "socket: cluster nodes are reached at the "
                               "host:port they announce, give one",
                               &u.url);
            return NGX_CONF_ERROR;
        }

        if (u.naddrs == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "cdp_redis_cluster seed \"%V\" resolves to "
                               "nothing", &u.url);
            return NGX_CONF_ERROR;
        }

        if (u.no_port) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "cdp_redis_cluster seed \"%V\" has no port",
                               &u.url);
            return NGX_CONF_ERROR;
        }

        for (j = 0; j < u.naddrs; j++) {
            a = ngx_array_push(mcf->redis.seeds);
            if (a == NULL) {
                return NGX_CONF_ERROR;
            }

            *a = u.addrs[j];
        }
    }

    if (mcf->redis.seeds->nelts == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "cdp_redis_cluster needs at least one "
                           "host:port seed before its parameters");
        return NGX_CONF_ERROR;
    }

    return ngx_http_cdp_redis_params(cf, cmd, mcf, i);
}


/*
 * The name=value parameters of cdp_redis and cdp_redis_cluster, from
 * the argument "first" on.
 */

static char *
ngx_http_cdp_redis_params(ngx_conf_t *cf, ngx_command_t *cmd,
    ngx_http_cdp_main_conf_t *mcf, ngx_uint_t first)
{
    ngx_int_t    n;
    ngx_str_t   *value, s;
    ngx_uint_t   i, cluster;
    ngx_msec_t   ms;

    value = cf->args->elts;
    cluster = (mcf->redis.seeds != NULL);

    for (i = first; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "db=", 3) == 0) {
            if (cluster) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "cdp_redis_cluster takes no \"%V\": "
                                   "Redis Cluster has only database 0",
                                   &value[i]);
                return NGX_CONF_ERROR;
            }

            n = ngx_atoi(value[i].data + 3, value[i].len - 3);
            if (n == NGX_ERROR || n > 15) {
                goto invalid;
            }

            mcf->redis.db = (ngx_uint_t) n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "password=", 9) == 0) {
            mcf->redis.password.data = value[i].data + 9;
            mcf->redis.password.len = value[i].len - 9;

            if (mcf->redis.password.len == 0) {
                goto invalid;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "prefix=", 7) == 0) {
            mcf->prefix.data = value[i].data + 7;
            mcf->prefix.len = value[i].len - 7;

            if (mcf->prefix.len == 0 || mcf->prefix.len > 64) {
                goto invalid;
            }

            for (n = 0; n < (ngx_int_t) mcf->prefix.len; n++) {
                if (mcf->prefix.data[n] <= ' '
                    || mcf->prefix.data[n] >= 0x7f)
                {
                    goto invalid;
                }

                if (mcf->prefix.data[n] == '{'
                    || mcf->prefix.data[n] == '}')
                {
                    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                       "invalid %V parameter \"%V\": a "
                                       "prefix may not contain \"{\" or "
                                       "\"}\", they would change the hash "
                                       "tags of the keys (their Redis "
                                       "Cluster slots)",
                                       &cmd->name, &value[i]);
                    return NGX_CONF_ERROR;
                }
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "timeout=", 8) == 0) {
            s.data = value[i].data + 8;
            s.len = value[i].len - 8;

            ms = ngx_parse_time(&s, 0);
            if (ms == (ngx_msec_t) NGX_ERROR || ms == 0) {
                goto invalid;
            }

            mcf->redis.timeout = ms;
            continue;
        }

        if (ngx_strncmp(value[i].data, "shards=", 7) == 0) {
            n = ngx_atoi(value[i].data + 7, value[i].len - 7);
            if (n == NGX_ERROR || n < 1 || n > NGX_CDP_SHARDS_MAX) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid %V parameter \"%V\": shards "
                                   "is a number from 1 to %d",
                                   &cmd->name, &value[i],
                                   NGX_CDP_SHARDS_MAX);
                return NGX_CONF_ERROR;
            }

            mcf->redis.shards = (ngx_uint_t) n;
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown %V parameter \"%V\"",
                           &cmd->name, &value[i]);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid %V parameter \"%V\"", &cmd->name, &value[i]);

    return NGX_CONF_ERROR;
}


/*
 * cdp_secret_file and cdp_identity_secret_file: key lines, each at least
 * 32 bytes.  The secret file's first line signs, every line verifies; the
 * identity file's one line names identifiers in Redis (and without it,
 * the secret file's first line does).
 */

static char *
ngx_http_cdp_secret_file(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_cdp_main_conf_t *mcf = conf;

    u_char     *p, *end, *line, *last;
    char       *rv;
    size_t      size;
    ssize_t     n;
    ngx_str_t  *value, *name;
    ngx_uint_t  ident, max, nkeys;

    ident = (cmd->post != NULL);
    name = ident ? &mcf->ident_file : &mcf->secret_file;

    if (name->data) {
        return "is duplicate";
    }

    value = cf->args->elts;
    *name = value[1];

    if (ngx_conf_full_name(cf->cycle, name, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    if (ngx_cdp_read_conf_file(cf, &cmd->name, name, 4096, &p, &size)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    rv = NGX_CONF_ERROR;
    end = p + size;
    max = ident ? 1 : NGX_CDP_MAX_KEYS;
    nkeys = 0;

    for (line = p; line < end; line = last + 1) {

        last = ngx_strlchr(line, end, '\n');
        if (last == NULL) {
            last = end;
        }

        n = last - line;

        while (n && (line[n - 1] == '\r' || line[n - 1] == ' '
                     || line[n - 1] == '\t'))
        {
            n--;
        }

        if (n == 0) {
            continue;
        }

        if (nkeys == max) {
            if (ident) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "%V \"%V\" holds more than one key: "
                                   "the identity key is not rotated",
                                   &cmd->name, name);
            } else {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "%V \"%V\" has more than %ui keys",
                                   &cmd->name, name, max);
            }

            goto done;
        }

        if (n < 32) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "key %ui in %V \"%V\" is %z bytes, at least "
                               "32 are required",
                               nkeys + 1, &cmd->name, name, n);
            goto done;
        }

        if (ident) {
            /* replaces what the secret file's first line gave */
            ngx_cdp_hmac_key_free(&mcf->ident_key);

            if (ngx_http_cdp_prepare_key(cf, &mcf->ident_key, line, n,
                                         "ngx_cdp identity v1")
                != NGX_OK)
            {
                goto done;
            }

            nkeys++;
            continue;
        }

        if (ngx_http_cdp_prepare_key(cf, &mcf->cookie_keys[nkeys], line, n,
                                     "ngx_cdp anonymous id cookie v1")
               != NGX_OK
            || ngx_http_cdp_prepare_key(cf, &mcf->consent_keys[nkeys],
                                        line, n,
                                        "ngx_cdp consent cookie v1")
               != NGX_OK
            || ngx_http_cdp_prepare_key(cf, &mcf->pixel_keys[nkeys],
                                        line, n,
                                        "ngx_cdp pixel identity v1")
               != NGX_OK
            || ngx_http_cdp_prepare_key(cf, &mcf->redirect_keys[nkeys],
                                        line, n,
                                        "ngx_cdp redirect target v1")
               != NGX_OK
            || (nkeys == 0 && mcf->ident_file.data == NULL
                && ngx_http_cdp_prepare_key(cf, &mcf->ident_key, line, n,
                                            "ngx_cdp identity v1")
                   != NGX_OK))
        {
            goto done;
        }

        nkeys++;
    }

    if (nkeys == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%V \"%V\" holds no key",
                           &cmd->name, name);
        goto done;
    }

    if (!ident) {
        mcf->nkeys = nkeys;
    }

    rv = NGX_CONF_OK;

done:

    ngx_explicit_memzero(p, size);

    return rv;
}


/* a purpose-bound key derived from a secret line, prepared for HMAC */

static ngx_int_t
ngx_http_cdp_prepare_key(ngx_conf_t *cf, ngx_cdp_hmac_key_t *key,
    u_char *secret, size_t len, const char *label)
{
    ngx_pool_cleanup_t  *cln;
    u_char               raw[NGX_CDP_KEY_LEN];

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    ngx_cdp_derive_key(raw, secret, len, label);

    if (!ngx_cdp_hmac_key_init(key, raw)) {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "cdp: cannot prepare an HMAC context, "
                           "signing will be slower");
    }

    ngx_explicit_memzero(raw, NGX_CDP_KEY_LEN);

    cln->handler = ngx_http_cdp_cleanup_key;
    cln->data = key;

    return NGX_OK;
}


static void
ngx_http_cdp_cleanup_key(void *data)
{
    ngx_cdp_hmac_key_free(data);
}


static char *
ngx_http_cdp_cookie(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_cdp_loc_conf_t *lcf = conf;

    time_t                       age;
    ngx_str_t                   *value, s;
    ngx_uint_t                   i, j;
    ngx_http_cdp_cookie_conf_t  *ck;

    if (lcf->cookie) {
        return "is duplicate";
    }

    value = cf->args->elts;

    for (j = 0; j < value[1].len; j++) {
        if (value[1].data[j] <= ' ' || value[1].data[j] >= 0x7f
            || ngx_strchr("()<>@,;:\\\"/[]?={}", value[1].data[j]))
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid cdp_cookie name \"%V\"", &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    ck = ngx_palloc(cf->pool, sizeof(ngx_http_cdp_cookie_conf_t));
    if (ck == NULL) {
        return NGX_CONF_ERROR;
    }

    *ck = ngx_http_cdp_default_cookie;
    ck->name = value[1];

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "domain=", 7) == 0) {
            ck->domain.data = value[i].data + 7;
            ck->domain.len = value[i].len - 7;

            if (ck->domain.len == 0
                || ngx_strlchr(ck->domain.data,
                               ck->domain.data + ck->domain.len, ';'))
            {
                goto invalid;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "path=", 5) == 0) {
            ck->path.data = value[i].data + 5;
            ck->path.len = value[i].len - 5;

            if (ck->path.len == 0 || ck->path.data[0] != '/'
                || ngx_strlchr(ck->path.data,
                               ck->path.data + ck->path.len, ';'))
            {
                goto invalid;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "max_age=", 8) == 0) {
            s.data = value[i].data + 8;
            s.len = value[i].len - 8;

            age = ngx_parse_time(&s, 1);
            if (age == (time_t) NGX_ERROR || age <= 0) {
                goto invalid;
            }

            if (age > NGX_CDP_MAX_AGE_LIMIT) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "cdp_cookie \"%V\" exceeds 400 days, "
                                   "the limit browsers apply", &value[i]);
                return NGX_CONF_ERROR;
            }

            ck->max_age = age;
            continue;
        }

        if (ngx_strncmp(value[i].data, "samesite=", 9) == 0) {
            s.data = value[i].data + 9;
            s.len = value[i].len - 9;

            if (s.len == 3 && ngx_strncasecmp(s.data, (u_char *) "lax", 3)
                              == 0)
            {
                ck->samesite = NGX_CDP_SAMESITE_LAX;

            } else if (s.len == 6
                       && ngx_strncasecmp(s.data, (u_char *) "strict", 6)
                          == 0)
            {
                ck->samesite = NGX_CDP_SAMESITE_STRICT;

            } else if (s.len == 4
                       && ngx_strncasecmp(s.data, (u_char *) "none", 4)
                          == 0)
            {
                ck->samesite = NGX_CDP_SAMESITE_NONE;

            } else {
                goto invalid;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "secure=", 7) == 0) {
            s.data = value[i].data + 7;
            s.len = value[i].len - 7;

            if (s.len == 4 && ngx_strncmp(s.data, "auto", 4) == 0) {
                ck->secure = NGX_CDP_SECURE_AUTO;

            } else if (s.len == 2 && ngx_strncmp(s.data, "on", 2) == 0) {
                ck->secure = NGX_CDP_SECURE_ON;

            } else if (s.len == 3 && ngx_strncmp(s.data, "off", 3) == 0) {
                ck->secure = NGX_CDP_SECURE_OFF;

            } else {
                goto invalid;
            }

            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown cdp_cookie parameter \"%V\"", &value[i]);
        return NGX_CONF_ERROR;
    }

    if (ck->samesite == NGX_CDP_SAMESITE_NONE
        && ck->secure == NGX_CDP_SECURE_OFF)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "cdp_cookie samesite=none cannot be combined "
                           "with secure=off: browsers reject such cookies");
        return NGX_CONF_ERROR;
    }

    lcf->cookie = ck;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid cdp_cookie parameter \"%V\"", &value[i]);

    return NGX_CONF_ERROR;
}


static char *
ngx_http_cdp_pixel(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_cdp_loc_conf_t *lcf = conf;

    ngx_str_t                 *value;
    ngx_http_core_loc_conf_t  *clcf;

    if (lcf->pixel) {
        return "is duplicate";
    }

    value = cf->args->elts;

    lcf->pixel = NGX_HTTP_OK;

    if (cf->args->nelts == 2) {
        if (value[1].len != 3 || ngx_strncmp(value[1].data, "204", 3) != 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid cdp_pixel status \"%V\", "
                               "only 204 may be given", &value[1]);
            return NGX_CONF_ERROR;
        }

        lcf->pixel = NGX_HTTP_NO_CONTENT;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_cdp_pixel_handler;

    return NGX_CONF_OK;
}


static char *
ngx_http_cdp_status(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_cdp_status_handler;

    return NGX_CONF_OK;
}


static char *
ngx_http_cdp_consent_endpoint(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_cdp_loc_conf_t *lcf = conf;

    ngx_http_core_loc_conf_t  *clcf;

    if (lcf->consent_endpoint) {
        return "is duplicate";
    }

    lcf->consent_endpoint = 1;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_cdp_consent_handler;

    return NGX_CONF_OK;
}


static char *
ngx_http_cdp_positive(ngx_conf_t *cf, void *post, void *data)
{
    ngx_uint_t  *np = data;

    if (*np == 0) {
        return "must be positive";
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_cdp_init_process(ngx_cycle_t *cycle)
{
    ngx_http_cdp_main_conf_t  *mcf;

    /* cache manager and loader never serve requests */

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    mcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_cdp_module);
    if (mcf == NULL || !ngx_cdp_redis_configured(&mcf->redis)) {
        return NGX_OK;
    }

    if (ngx_cdp_ingest_init_process(cycle, mcf) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_cdp_admin_init_process(cycle);

    if (ngx_cdp_deliver_init_process(cycle, mcf) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_cdp_audience_init_process(cycle, mcf) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_cdp_suppress_init_process(cycle, mcf);
}


static void
ngx_http_cdp_exit_process(ngx_cycle_t *cycle)
{
    ngx_cdp_deliver_exit_process(cycle);
    ngx_cdp_ingest_exit_process(cycle);
}
