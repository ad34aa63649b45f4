
/*
 * ngx_cdp: a Customer Data Platform inside nginx.
 * Shared types of the module's files.
 */


#ifndef _NGX_HTTP_CDP_MODULE_H_INCLUDED_
#define _NGX_HTTP_CDP_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_cdp_text.h"
#include "ngx_cdp_crypto.h"
#include "ngx_cdp_query.h"
#include "ngx_cdp_consent.h"


#define NGX_CDP_VERSION            "0.1.0"

#define NGX_CDP_MAX_AGE_LIMIT      (400 * 86400)

#define NGX_CDP_SAMESITE_LAX       0
#define NGX_CDP_SAMESITE_STRICT    1
#define NGX_CDP_SAMESITE_NONE      2

#define NGX_CDP_SECURE_AUTO        0
#define NGX_CDP_SECURE_ON          1
#define NGX_CDP_SECURE_OFF         2


/*
 * cdp_redis or cdp_redis_cluster: what the transport (ngx_cdp_redis.c)
 * needs, its own type.  One of addr (a single Redis) and seeds (the
 * nodes a cluster is discovered from) is set when Redis is configured.
 */
typedef struct {
    ngx_addr_t                *addr;        /* resolved at config time */
    ngx_str_t                  addr_text;
    ngx_array_t               *seeds;       /* ngx_addr_t, resolved too */
    ngx_uint_t                 db;
    ngx_str_t                  password;
    ngx_msec_t                 timeout;
    ngx_uint_t                 shards;      /* of the key layout */
} ngx_cdp_redis_conf_t;

#define ngx_cdp_redis_configured(rcf)                                         \
    ((rcf)->addr != NULL || (rcf)->seeds != NULL)


typedef struct {
    ngx_cdp_redis_conf_t       redis;
    ngx_str_t                  prefix;      /* of every key */

    ngx_str_t                  secret_file;
    ngx_str_t                  ident_file;  /* cdp_identity_secret_file */
    ngx_uint_t                 nkeys;
    ngx_cdp_hmac_key_t         cookie_keys[NGX_CDP_MAX_KEYS];
    ngx_cdp_hmac_key_t         consent_keys[NGX_CDP_MAX_KEYS];

    ngx_uint_t                 stream_maxlen;
    ngx_uint_t                 batch_size;
    ngx_uint_t                 queue_size;

    ngx_path_t                *spool;       /* cdp_spool: ngx_cdp_spool.h */
    off_t                      spool_max;

    void                      *geo;         /* MMDB_s *, cdp_geoip_db */

    /* identity: names of identifiers in Redis, signed pixel identities */
    ngx_cdp_hmac_key_t         ident_key;
    ngx_cdp_hmac_key_t         pixel_keys[NGX_CDP_MAX_KEYS];
    ngx_cdp_hmac_key_t         redirect_keys[NGX_CDP_MAX_KEYS];
    ngx_uint_t                 limit_user_id;
    ngx_uint_t                 limit_email;
    ngx_uint_t                 limit_phone;
    ngx_uint_t                 timeline_max;
    ngx_array_t               *blocked;     /* of ngx_cdp_str_t */
    ngx_str_t                  phone_cc;

    time_t                     dedup_window;    /* API messageIds */
    time_t                     agg_retention;   /* agg:<date> hashes */
    size_t                     suppression_size;

    ngx_array_t               *admin_tokens;    /* ngx_cdp_admin_token_t */

    /* cdp_destination: ngx_cdp_dest.h */
    ngx_array_t               *destinations;    /* ngx_cdp_dest_t */
    ngx_str_t                  dest_spec;       /* cdp_ingest's ARGV[1] */
    void                      *dest_slots;      /* counters, shared */

    /* cdp_segment, cdp_profile_event: ngx_cdp_audience.h */
    ngx_array_t               *segments;        /* ngx_cdp_audience_t */
    ngx_array_t               *facts;           /* ngx_cdp_fact_t */
    ngx_str_t                  facts_spec;      /* cdp_ingest's ARGV[1] */
    ngx_str_t                  segments_spec;   /* cdp_ingest's ARGV[1] */

    ngx_shm_zone_t            *shm_zone;

    unsigned                   warned_no_redis:1;
} ngx_http_cdp_main_conf_t;


typedef struct {
    ngx_str_t                  name;
    ngx_str_t                  domain;
    ngx_str_t                  path;
    time_t                     max_age;
    ngx_uint_t                 samesite;
    ngx_uint_t                 secure;
} ngx_http_cdp_cookie_conf_t;


/* cdp_identify: the upstream response headers that carry an identity */
typedef struct {
    ngx_str_t                  user_id;
    ngx_str_t                  email;
    ngx_str_t                  phone;
    ngx_str_t                  traits;
} ngx_http_cdp_identify_conf_t;


typedef struct {
    ngx_http_cdp_cookie_conf_t *cookie;
    ngx_uint_t                  pixel;      /* 0, 200 or 204 */
    ngx_uint_t                  store_ip;   /* cdp_store_ip */

    ngx_http_complex_value_t   *consent;            /* the site's CMP */
    ngx_http_complex_value_t   *consent_default;
    ngx_str_t                   consent_cookie;
    ngx_str_t                   consent_version;
    ngx_flag_t                  consent_endpoint;

    ngx_http_cdp_identify_conf_t *identify;     /* NULL: off */

    ngx_flag_t                  api;
    ngx_array_t                *write_keys;     /* ngx_http_cdp_write_key_t */
    ngx_msec_t                  api_timeout;

    ngx_flag_t                  profile;        /* cdp_profile */
    ngx_msec_t                  profile_timeout;

    /* ngx_cdp_capture.h */
    ngx_flag_t                  capture;        /* cdp_capture */
    ngx_int_t                   bots;           /* cdp_bot off: 0 */
    ngx_http_complex_value_t   *bot;            /* cdp_bot $variable */
    ngx_flag_t                  redirect;       /* cdp_redirect */
    ngx_flag_t                  admin;          /* cdp_admin */
    ngx_array_t                *redirect_hosts; /* ngx_str_t, lowercase */
} ngx_http_cdp_loc_conf_t;


typedef struct {
    ngx_str_t                   key;
    ngx_str_t                   source;
} ngx_http_cdp_write_key_t;


#define NGX_CDP_STORE_IP_OFF       0
#define NGX_CDP_STORE_IP_TRUNCATED 1


#define NGX_CDP_AID_UNKNOWN        0        /* not looked at yet */
#define NGX_CDP_AID_NONE           1        /* no valid cookie, none minted */
#define NGX_CDP_AID_KEPT           2        /* from a valid cookie */
#define NGX_CDP_AID_NEW            3        /* minted for this request */

typedef struct {
    ngx_uint_t                 aid_state;
    u_char                     aid[NGX_CDP_ID_HEX_LEN];
    u_char                    *cookie;      /* signed with the current key */

    ngx_uint_t                 geo_done;
    ngx_str_t                  country;     /* ISO 3166-1, "DE" */
    ngx_str_t                  region;      /* ISO 3166-2 part, "BE" */
    ngx_str_t                  city;        /* English name */

    ngx_uint_t                 consent_done;
    ngx_cdp_consent_state_t    consent;

    ngx_str_t                  touch;       /* attribution, see attrs */

    unsigned                   issued:1;    /* ngx_cdp_cookie_issue() */
    unsigned                   agent_done:1;
    unsigned                   agent:2;     /* NGX_CDP_FILTER_* */

    void                      *api;         /* ngx_cdp_api.c's */

    /* cdp_profile: ngx_cdp_profile.c */
    ngx_uint_t                 profile_state;
    void                      *profile_wait;
    ngx_str_t                  profile_id;
    ngx_str_t                  segments;
} ngx_http_cdp_ctx_t;


extern ngx_module_t  ngx_http_cdp_module;


#endif /* _NGX_HTTP_CDP_MODULE_H_INCLUDED_ */
