
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
    NGX_CDP_C_FILTER_BOT,
    NGX_CDP_C_FILTER_PREFETCH,
    NGX_CDP_C_FILTER_MAIL_PROXY,
    NGX_CDP_C_CAPTURED,
    NGX_CDP_C_REDIRECTS,
    NGX_CDP_C_REDIRECT_REFUSED,
    NGX_CDP_C_EMAIL_OPENED,
    NGX_CDP_NCOUNTERS
} ngx_cdp_counter_e;

extern ngx_atomic_t  *ngx_cdp_counters;

#define ngx_cdp_count(i, n)                                                   \
    do {                                                                      \
        if (ngx_cdp_counters) {                                               \
            (void) ngx_atomic_fetch_add(&ngx_cdp_counters[i], n);             \
        }                                                                     \
    } while (0)


typedef struct {
    ngx_addr_t                *addr;        /* resolved at config time */
    ngx_str_t                  addr_text;
    ngx_uint_t                 db;
    ngx_str_t                  password;
    ngx_str_t                  prefix;
    ngx_msec_t                 timeout;

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


extern ngx_module_t  ngx_http_cdp_module;


ngx_http_cdp_ctx_t *ngx_http_cdp_get_ctx(ngx_http_request_t *r);
ngx_int_t ngx_cdp_send(ngx_http_request_t *r, ngx_uint_t status,
    const char *type, u_char *body, size_t len);
ngx_int_t ngx_cdp_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *code, const char *message, const char *field);
ngx_int_t ngx_cdp_add_header(ngx_http_request_t *r, const char *key,
    const char *value);
ngx_int_t ngx_cdp_read_conf_file(ngx_conf_t *cf, ngx_str_t *directive,
    ngx_str_t *name, size_t max, u_char **buf, size_t *size);

/* ngx_cdp_cookie.c */
ngx_int_t ngx_cdp_cookie_find(ngx_http_request_t *r, ngx_str_t *name,
    ngx_str_t *value);
void ngx_cdp_cookie_read(ngx_http_request_t *r, ngx_http_cdp_ctx_t *ctx,
    ngx_uint_t count);
ngx_int_t ngx_cdp_cookie_issue(ngx_http_request_t *r,
    ngx_http_cdp_ctx_t *ctx);
ngx_int_t ngx_cdp_cookie_set(ngx_http_request_t *r, ngx_str_t *name,
    ngx_str_t *value, time_t max_age);
ngx_int_t ngx_cdp_variable_anonymous_id(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);

/* ngx_cdp_geo.c */
char *ngx_cdp_geo_open(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
void ngx_cdp_geo_lookup(ngx_http_request_t *r, ngx_http_cdp_ctx_t *ctx);
ngx_int_t ngx_cdp_variable_geo(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);

/* ngx_cdp_policy.c */
ngx_cdp_consent_state_t *ngx_cdp_consent_eval(ngx_http_request_t *r,
    ngx_http_cdp_ctx_t *ctx);
int ngx_cdp_consent_default(ngx_http_request_t *r);
ngx_int_t ngx_cdp_variable_consent(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
ngx_table_elt_t *ngx_cdp_request_header(ngx_http_request_t *r,
    const char *name, size_t len);

/* ngx_cdp_endpoint.c */
ngx_int_t ngx_cdp_consent_handler(ngx_http_request_t *r);

/* ngx_cdp_event.c */
ngx_int_t ngx_cdp_event_from_hit(ngx_http_request_t *r,
    ngx_http_cdp_ctx_t *ctx, ngx_cdp_hit_t *hit, ngx_str_t *json);
ngx_int_t ngx_cdp_event_attrs(ngx_http_request_t *r,
    ngx_http_cdp_ctx_t *ctx, ngx_str_t *attrs);

ngx_int_t ngx_cdp_event_identify(ngx_http_request_t *r,
    ngx_http_cdp_ctx_t *ctx, ngx_str_t *user_id, ngx_str_t *traits,
    ngx_str_t *json);

/* ngx_cdp_identify.c */
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

/* ngx_cdp_api.c */
char *ngx_cdp_api_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
char *ngx_cdp_write_key_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_cdp_api_handler(ngx_http_request_t *r);
ngx_int_t ngx_cdp_read_body(ngx_http_request_t *r, ngx_str_t *body,
    size_t max);

/* ngx_cdp_suppress.c */
ngx_int_t ngx_cdp_suppress_add_zone(ngx_conf_t *cf, size_t size);
ngx_int_t ngx_cdp_suppress_init_process(ngx_cycle_t *cycle,
    ngx_http_cdp_main_conf_t *mcf);
ngx_int_t ngx_cdp_suppress_has(const u_char *aid);
void ngx_cdp_suppress_update(const u_char *aidh, size_t len, ngx_uint_t add);
ngx_int_t ngx_cdp_suppress_cookie(ngx_http_request_t *r,
    ngx_http_cdp_ctx_t *ctx);

/* ngx_cdp_admin.c */
char *ngx_cdp_admin_directive(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_cdp_admin_tokens(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
void ngx_cdp_api_anonymous_id(ngx_http_request_t *r, const char *v,
    u_char *aid, size_t *len);

/* ngx_cdp_pixel.c */
ngx_int_t ngx_cdp_pixel_handler(ngx_http_request_t *r);
void ngx_cdp_hit_record(ngx_http_request_t *r, ngx_http_cdp_ctx_t *ctx,
    ngx_cdp_hit_t *hit, ngx_uint_t person);
ngx_int_t ngx_cdp_aggregate(ngx_http_request_t *r, ngx_http_cdp_ctx_t *ctx,
    ngx_str_t *name);

/* ngx_cdp_profile.c */
ngx_int_t ngx_cdp_profile_handler(ngx_http_request_t *r);
ngx_int_t ngx_cdp_variable_segments(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);

/* ngx_cdp_status.c */
ngx_int_t ngx_cdp_status_handler(ngx_http_request_t *r);
ngx_int_t ngx_cdp_status_init_zone(ngx_shm_zone_t *shm_zone, void *data);

#endif /* _NGX_HTTP_CDP_MODULE_H_INCLUDED_ */
