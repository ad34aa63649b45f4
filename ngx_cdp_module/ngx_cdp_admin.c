
/*
 * ngx_cdp: the admin API, for marketers and privacy officers.
 *
 *   GET  .../profiles?email=...     the profile as JSON        marketer
 *   POST .../erase      {ids}       erase a person, receipt    privacy
 *   GET  .../export?user_id=...     everything held on them    privacy
 *   POST .../unsuppress {ids}       lift a suppression         privacy
 *   GET  .../audit?since=MS         the audit trail            privacy
 *
 * (admin may do everything, privacy may read profiles too; every read
 * of a profile is audited, as erasures and exports are.)  Bearer
 * tokens are checked against cdp_admin_tokens, a file of "ROLE SHA256HEX"
 * lines: only hashes are kept, compared in constant time, and a token is
 * never logged.  Identifiers are normalised and hashed here
 * (ngx_cdp_identify_check()); Redis sees the same names as in its keys.
 * The work is done by the library cdp_admin_v1 (store/admin.lua), one
 * call per request, without blocking the worker.
 *
 * On Redis Cluster a call stays in one slot: erase, export, profiles,
 * segments, segment, unsuppress and replay are each a saga of
 * cdp_admin_x calls (ngx_cdp_xid.h) that ends with what the standalone
 * function answers (the same answers here; a page of members as NDJSON
 * or CSV comes as its cursor, a newline and the text); the audit is one
 * call sent to the node of the audit's slot, the only keys it touches.
 * An erasure whose request gave up (timeout, client gone) goes on; one
 * whose worker stopped is finished by worker 0's sweep.  An unsuppress
 * or a replay whose request gave up goes on too, and one whose worker
 * stopped is left half done (the store has no journal of them: some
 * shards still suppress the person, some dead letters still wait), for
 * the client's retry to complete.
 */


#include "ngx_http_cdp_module.h"
#include "ngx_cdp_http.h"
#include "ngx_cdp_identify.h"
#include "ngx_cdp_api.h"
#include "ngx_cdp_suppress.h"
#include "ngx_cdp_admin.h"
#include "ngx_cdp_redis.h"
#include "ngx_cdp_dest.h"
#include "ngx_cdp_audience.h"
#include "ngx_cdp_shard.h"
#include "ngx_cdp_xid.h"

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "ngx_cdp_ident.h"


#define NGX_CDP_ROLE_MARKETER    1
#define NGX_CDP_ROLE_PRIVACY     2
#define NGX_CDP_ROLE_ADMIN       4

#define NGX_CDP_ADMIN_MAX_IDS    100
#define NGX_CDP_ADMIN_BODY_MAX   65536
#define NGX_CDP_ADMIN_RECENT     "20"


typedef struct {
    ngx_uint_t                 role;
    u_char                     hash[32];
} ngx_cdp_admin_token_t;


#define NGX_CDP_ADMIN_PROFILES    0
#define NGX_CDP_ADMIN_ERASE       1
#define NGX_CDP_ADMIN_EXPORT      2
#define NGX_CDP_ADMIN_UNSUPPRESS  3
#define NGX_CDP_ADMIN_AUDIT       4
#define NGX_CDP_ADMIN_DESTINATIONS  5
#define NGX_CDP_ADMIN_REPLAY      6
#define NGX_CDP_ADMIN_SEGMENTS    7
#define NGX_CDP_ADMIN_SEGMENT     8

/* how an operation runs on Redis Cluster */
#define NGX_CDP_ADMIN_C_LOCAL     0         /* no call */
#define NGX_CDP_ADMIN_C_SAGA      1         /* cdp_admin_x, a saga */
#define NGX_CDP_ADMIN_C_AUDIT     2         /* in the audit's slot */

/* identifier types, as ngx_cdp_admin_types[] names them */
#define NGX_CDP_ID_USER_ID        0
#define NGX_CDP_ID_EMAIL          1
#define NGX_CDP_ID_PHONE          2
#define NGX_CDP_ID_ANONYMOUS_ID   3
#define NGX_CDP_ID_PROFILE_ID     4


typedef struct {
    ngx_uint_t                 id;          /* NGX_CDP_ADMIN_* */
    const char                *name;        /* the URI tail */
    ngx_uint_t                 method;
    ngx_uint_t                 roles;
    const char                *function;    /* of cdp_admin_v1 */
    ngx_uint_t                 write;       /* FCALL, not FCALL_RO */
    ngx_uint_t                 cluster;     /* NGX_CDP_ADMIN_C_* */
    const char                *saga;        /* cdp_admin_x's op */
} ngx_cdp_admin_op_t;


/* a call outlives its request when the answer comes late */
typedef struct {
    ngx_cdp_redis_call_t       call;
    ngx_uint_t                 erase;
} ngx_cdp_admin_call_t;


/* so does a saga (Redis Cluster) */
typedef struct {
    void                      *actx;        /* NULL: the request gave up */
    ngx_uint_t                 erase;
} ngx_cdp_admin_saga_t;


/* a page of a segment's members */
#define NGX_CDP_ADMIN_JSON        0
#define NGX_CDP_ADMIN_NDJSON      1
#define NGX_CDP_ADMIN_CSV         2


typedef struct {
    ngx_http_request_t        *request;
    ngx_cdp_admin_op_t        *op;
    ngx_uint_t                 role;
    ngx_uint_t                 format;      /* NGX_CDP_ADMIN_JSON... */
    ngx_array_t               *ids;         /* ngx_str_t "type:value" */
    ngx_array_t               *unsuppress;  /* ngx_str_t aidh */
    ngx_cdp_wait_t             wait;        /* for the call's answer */
} ngx_cdp_admin_ctx_t;


static ngx_cdp_admin_op_t  ngx_cdp_admin_ops[] = {
    /* a read is audited: cdp_read writes the audit entry */
    { NGX_CDP_ADMIN_PROFILES, "profiles", NGX_HTTP_GET|NGX_HTTP_POST,
      NGX_CDP_ROLE_MARKETER|NGX_CDP_ROLE_PRIVACY|NGX_CDP_ROLE_ADMIN,
      "cdp_read", 1, NGX_CDP_ADMIN_C_SAGA, "read" },
    { NGX_CDP_ADMIN_ERASE, "erase", NGX_HTTP_POST,
      NGX_CDP_ROLE_PRIVACY|NGX_CDP_ROLE_ADMIN,
      "cdp_erase", 1, NGX_CDP_ADMIN_C_SAGA, "erase" },
    { NGX_CDP_ADMIN_EXPORT, "export", NGX_HTTP_GET|NGX_HTTP_POST,
      NGX_CDP_ROLE_PRIVACY|NGX_CDP_ROLE_ADMIN,
      "cdp_export", 1, NGX_CDP_ADMIN_C_SAGA, "export" },
    /* every shard's copy of the suppression set: a call a shard */
    { NGX_CDP_ADMIN_UNSUPPRESS, "unsuppress", NGX_HTTP_POST,
      NGX_CDP_ROLE_PRIVACY|NGX_CDP_ROLE_ADMIN,
      "cdp_unsuppress", 1, NGX_CDP_ADMIN_C_SAGA, "unsuppress" },
    /* <prefix>:audit only */
    { NGX_CDP_ADMIN_AUDIT, "audit", NGX_HTTP_GET,
      NGX_CDP_ROLE_PRIVACY|NGX_CDP_ROLE_ADMIN,
      "cdp_audit", 0, NGX_CDP_ADMIN_C_AUDIT, NULL },
    /* from this nginx's counters: no call */
    { NGX_CDP_ADMIN_DESTINATIONS, "destinations", NGX_HTTP_GET,
      NGX_CDP_ROLE_ADMIN, NULL, 0, NGX_CDP_ADMIN_C_LOCAL, NULL },
    /* every shard's dead letters: a call a shard */
    { NGX_CDP_ADMIN_REPLAY, "replay", NGX_HTTP_POST,
      NGX_CDP_ROLE_ADMIN, "cdp_replay", 1, NGX_CDP_ADMIN_C_SAGA, "replay" },
    /*
     * audited: written with FCALL; a segment's members are in a set a
     * shard: on a cluster a call a shard, a saga
     */
    { NGX_CDP_ADMIN_SEGMENTS, "segments", NGX_HTTP_GET,
      NGX_CDP_ROLE_MARKETER|NGX_CDP_ROLE_ADMIN, "cdp_segments", 1,
      NGX_CDP_ADMIN_C_SAGA, "segments" },
    { NGX_CDP_ADMIN_SEGMENT, "segment", NGX_HTTP_GET,
      NGX_CDP_ROLE_MARKETER|NGX_CDP_ROLE_ADMIN, "cdp_segment_members", 1,
      NGX_CDP_ADMIN_C_SAGA, "members" },
    { 0, NULL, 0, 0, NULL, 0, 0, NULL }
};


static const char  *ngx_cdp_admin_types[] = {
    "user_id", "email", "phone", "anonymous_id", "profile_id", NULL
};


static ngx_int_t ngx_cdp_admin_handler(ngx_http_request_t *r);
static ngx_uint_t ngx_cdp_admin_auth(ngx_http_request_t *r);
static void ngx_cdp_admin_body(ngx_http_request_t *r);
static ngx_int_t ngx_cdp_admin_start(ngx_http_request_t *r,
    ngx_cdp_admin_ctx_t *actx);
static ngx_int_t ngx_cdp_admin_query_ids(ngx_http_request_t *r,
    ngx_cdp_admin_ctx_t *actx, const char **bad);
static ngx_int_t ngx_cdp_admin_body_ids(ngx_http_request_t *r,
    ngx_cdp_admin_ctx_t *actx, const char **bad);
static ngx_int_t ngx_cdp_admin_add_id(ngx_http_request_t *r,
    ngx_cdp_admin_ctx_t *actx, ngx_uint_t t, u_char *v, size_t len);
static ngx_int_t ngx_cdp_admin_saga(ngx_http_request_t *r,
    ngx_cdp_admin_ctx_t *actx, ngx_http_cdp_main_conf_t *mcf,
    ngx_http_cdp_loc_conf_t *lcf);
static ngx_int_t ngx_cdp_admin_receipt(u_char *receipt);
static const char *ngx_cdp_admin_role(ngx_cdp_admin_ctx_t *actx);
static size_t ngx_cdp_admin_now(u_char *now);
static void ngx_cdp_admin_done(ngx_cdp_redis_call_t *call, void *reply);
static void ngx_cdp_admin_saga_done(void *data, ngx_int_t rc,
    ngx_str_t *result);
static void ngx_cdp_admin_swept(void *data, ngx_int_t rc, ngx_str_t *result);
static void ngx_cdp_admin_answer(ngx_cdp_admin_ctx_t *actx, int type,
    u_char *str, size_t len);
static void ngx_cdp_admin_erased(u_char *receipt, size_t len);
static void ngx_cdp_admin_timeout(ngx_event_t *ev);
static ngx_int_t ngx_cdp_admin_destinations(ngx_http_request_t *r,
    ngx_http_cdp_main_conf_t *mcf);
static ngx_int_t ngx_cdp_admin_replay_name(ngx_http_request_t *r,
    ngx_cdp_admin_ctx_t *actx, ngx_http_cdp_main_conf_t *mcf);
static const char *ngx_cdp_admin_segment_args(ngx_http_request_t *r,
    ngx_cdp_admin_ctx_t *actx, ngx_http_cdp_main_conf_t *mcf);
static ngx_int_t ngx_cdp_admin_push(ngx_cdp_admin_ctx_t *actx,
    u_char *data, size_t len);
static ngx_int_t ngx_cdp_admin_cursor(u_char *p, size_t len,
    ngx_uint_t shards);
static ngx_int_t ngx_cdp_admin_page(ngx_cdp_admin_ctx_t *actx,
    u_char *cursor, size_t clen, u_char *text, size_t len);
static ngx_int_t ngx_cdp_admin_error(ngx_http_request_t *r,
    ngx_uint_t status, const char *code, const char *message,
    const char *field);


/* cdp_admin_tokens PATH: lines "ROLE SHA256HEX", "#" comments */

char *
ngx_cdp_admin_tokens(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_cdp_main_conf_t *mcf = conf;

    u_char                 *p, *end, *line, *last, *sp;
    char                   *rv;
    size_t                  size;
    ssize_t                 n;
    ngx_str_t              *value, name, role, hex;
    ngx_uint_t              lineno, i;
    ngx_cdp_admin_token_t  *t;

    if (mcf->admin_tokens) {
        return "is duplicate";
    }

    value = cf->args->elts;
    name = value[1];

    if (ngx_conf_full_name(cf->cycle, &name, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    /* a line a token: a megabyte is thousands of them */

    if (ngx_cdp_read_conf_file(cf, &cmd->name, &name, 1024 * 1024, &p, &size)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    rv = NGX_CONF_ERROR;

    mcf->admin_tokens = ngx_array_create(cf->pool, 4,
                                         sizeof(ngx_cdp_admin_token_t));
    if (mcf->admin_tokens == NULL) {
        goto done;
    }

    end = p + size;
    lineno = 0;

    for (line = p; line < end; line = last + 1) {

        lineno++;

        last = ngx_strlchr(line, end, '\n');
        if (last == NULL) {
            last = end;
        }

        while (line < last && (*line == ' ' || *line == '\t')) {
            line++;
        }

        n = last - line;

        while (n && (line[n - 1] == '\r' || line[n - 1] == ' '
                     || line[n - 1] == '\t'))
        {
            n--;
        }

        if (n == 0 || line[0] == '#') {
            continue;
        }

        sp = ngx_strlchr(line, line + n, ' ');
        if (sp == NULL) {
            sp = ngx_strlchr(line, line + n, '\t');
        }

        if (sp == NULL) {
            goto invalid;
        }

        role.data = line;
        role.len = sp - line;

        hex.data = sp;
        hex.len = line + n - sp;

        while (hex.len && (hex.data[0] == ' ' || hex.data[0] == '\t')) {
            hex.data++;
            hex.len--;
        }

        t = ngx_array_push(mcf->admin_tokens);
        if (t == NULL) {
            goto done;
        }

        if (role.len == 8 && ngx_strncmp(role.data, "marketer", 8) == 0) {
            t->role = NGX_CDP_ROLE_MARKETER;

        } else if (role.len == 7 && ngx_strncmp(role.data, "privacy", 7) == 0)
        {
            t->role = NGX_CDP_ROLE_PRIVACY;

        } else if (role.len == 5 && ngx_strncmp(role.data, "admin", 5) == 0) {
            t->role = NGX_CDP_ROLE_ADMIN;

        } else {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "unknown role \"%V\" in line %ui of "
                               "cdp_admin_tokens \"%V\": marketer, privacy "
                               "or admin", &role, lineno, &name);
            goto done;
        }

        if (hex.len != 64) {
            goto invalid;
        }

        for (i = 0; i < 32; i++) {
            n = ngx_hextoi(&hex.data[2 * i], 2);
            if (n == NGX_ERROR) {
                goto invalid;
            }

            t->hash[i] = (u_char) n;
        }
    }

    if (mcf->admin_tokens->nelts == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "cdp_admin_tokens \"%V\" holds no token",
                           &name);
        goto done;
    }

    rv = NGX_CONF_OK;
    goto done;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "line %ui of cdp_admin_tokens \"%V\" is not "
                       "\"ROLE SHA256HEX\" (the SHA-256 of the token, 64 hex "
                       "digits: printf %%s TOKEN | sha256sum)",
                       lineno, &name);

done:

    return rv;
}


char *
ngx_cdp_admin_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_cdp_loc_conf_t *lcf = conf;

    ngx_http_core_loc_conf_t  *clcf;

    /* its tokens and secret are checked at merge: in any order */

    if (lcf->admin) {
        return "is duplicate";
    }

    lcf->admin = 1;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_cdp_admin_handler;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_cdp_admin_handler(ngx_http_request_t *r)
{
    u_char               *tail;
    size_t                len;
    ngx_int_t             rc;
    ngx_uint_t            role;
    ngx_cdp_admin_op_t   *op;
    ngx_cdp_admin_ctx_t  *actx;
    ngx_http_cdp_ctx_t   *ctx;

    ngx_cdp_count(NGX_CDP_C_ADMIN_REQUESTS, 1);

    tail = ngx_cdp_uri_tail(r, &len);

    for (op = ngx_cdp_admin_ops; op->name; op++) {
        if (len == ngx_strlen(op->name)
            && ngx_strncmp(tail, op->name, len) == 0)
        {
            break;
        }
    }

    role = ngx_cdp_admin_auth(r);

    if (role == 0 || op->name == NULL || !(r->method & op->method)
        || !(op->roles & role))
    {
        if (role == 0) {
            /*
             * for fail2ban and the like: the client's address, never the
             * token's bytes, nor the request line (its query may name a
             * person): the cycle's log, not the request's
             */
            ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                          "cdp: admin request from %V refused: %s bearer "
                          "token", &r->connection->addr_text,
                          r->headers_in.authorization ? "no valid" : "no");

            ngx_cdp_count(NGX_CDP_C_ADMIN_DENIED, 1);
            return ngx_cdp_admin_error(r, NGX_HTTP_UNAUTHORIZED,
                                       "unauthorized",
                                       "a valid bearer token is required",
                                       NULL);
        }

        if (op->name == NULL) {
            return ngx_cdp_admin_error(r, NGX_HTTP_NOT_FOUND,
                                       "unknown_endpoint",
                                       "use profiles, erase, export, "
                                       "unsuppress, audit, destinations, "
                                       "replay, segments or segment",
                                       NULL);
        }

        if (!(r->method & op->method)) {
            return ngx_cdp_admin_error(r, NGX_HTTP_NOT_ALLOWED,
                                       "method_not_allowed",
                                       op->method == NGX_HTTP_GET
                                       ? "this endpoint takes GET"
                                       : op->method == NGX_HTTP_POST
                                       ? "this endpoint takes POST"
                                       : "this endpoint takes GET or POST "
                                         "(POST keeps identifiers out of "
                                         "access logs)", NULL);
        }

        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "cdp: admin request from %V refused: the token's "
                      "role may not use \"%s\"", &r->connection->addr_text,
                      op->name);

        ngx_cdp_count(NGX_CDP_C_ADMIN_DENIED, 1);

        return ngx_cdp_admin_error(r, NGX_HTTP_FORBIDDEN, "forbidden",
                                   "the token's role may not do this", NULL);
    }

    actx = ngx_pcalloc(r->pool, sizeof(ngx_cdp_admin_ctx_t));
    if (actx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    actx->request = r;
    actx->op = op;
    actx->role = role;

    actx->ids = ngx_array_create(r->pool, 4, sizeof(ngx_str_t));
    actx->unsuppress = ngx_array_create(r->pool, 2, sizeof(ngx_str_t));
    if (actx->ids == NULL || actx->unsuppress == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx = ngx_http_cdp_get_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->api = actx;

    if (r->method == NGX_HTTP_GET) {
        return ngx_cdp_admin_start(r, actx);
    }

    if (r->headers_in.content_length_n > NGX_CDP_ADMIN_BODY_MAX) {
        return ngx_cdp_admin_error(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                   "body_too_large",
                                   "the body may have 65536 bytes", NULL);
    }

    r->request_body_in_single_buf = 1;

    rc = ngx_http_read_client_request_body(r, ngx_cdp_admin_body);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


/* the role of the request's bearer token, 0 when none is valid */

static ngx_uint_t
ngx_cdp_admin_auth(ngx_http_request_t *r)
{
    u_char                     *tok;
    size_t                      len;
    ngx_uint_t                  i, role;
    unsigned int                n;
    ngx_table_elt_t            *h;
    ngx_cdp_admin_token_t      *t;
    ngx_http_cdp_main_conf_t   *mcf;
    u_char                      md[EVP_MAX_MD_SIZE];

    h = r->headers_in.authorization;

    if (h == NULL || h->value.len <= 7
        || ngx_strncasecmp(h->value.data, (u_char *) "Bearer ", 7) != 0)
    {
        return 0;
    }

    tok = h->value.data + 7;
    len = h->value.len - 7;

    while (len && *tok == ' ') {
        tok++;
        len--;
    }

    if (len == 0 || len > 1024) {
        return 0;
    }

    n = 0;

    if (EVP_Digest(tok, len, md, &n, EVP_sha256(), NULL) != 1 || n != 32) {
        return 0;
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_cdp_module);

    role = 0;
    t = mcf->admin_tokens->elts;

    /* every line is compared: the time does not tell which matched */

    for (i = 0; i < mcf->admin_tokens->nelts; i++) {
        if (CRYPTO_memcmp(md, t[i].hash, 32) == 0) {
            role |= t[i].role;
        }
    }

    if (role & NGX_CDP_ROLE_ADMIN) {
        role |= NGX_CDP_ROLE_MARKETER|NGX_CDP_ROLE_PRIVACY;
    }

    return role;
}


static void
ngx_cdp_admin_body(ngx_http_request_t *r)
{
    ngx_cdp_admin_ctx_t  *actx;

    actx = ngx_http_cdp_get_ctx(r)->api;

    ngx_http_finalize_request(r, ngx_cdp_admin_start(r, actx));
}


/* identifiers, then one call of cdp_admin_v1 */

static ngx_int_t
ngx_cdp_admin_start(ngx_http_request_t *r, ngx_cdp_admin_ctx_t *actx)
{
    int                        argc;
    u_char                    *p, *pfx;
    size_t                     len;
    ngx_int_t                  rc;
    ngx_str_t                 *id;
    ngx_uint_t                 i;
    const char               **argv, *bad;
    size_t                    *argvlen;
    ngx_cdp_redis_call_t      *call;
    ngx_cdp_admin_call_t      *acall;
    ngx_http_cdp_loc_conf_t   *lcf;
    ngx_http_cdp_main_conf_t  *mcf;
    u_char                     receipt[2 + 16];
    u_char                     now[NGX_INT64_LEN], since[NGX_INT64_LEN];
    size_t                     now_len, since_len;
    ngx_str_t                  arg;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_cdp_module);
    lcf = ngx_http_get_module_loc_conf(r, ngx_http_cdp_module);

    bad = NULL;
    since_len = 0;

    if (actx->op->id == NGX_CDP_ADMIN_DESTINATIONS) {
        return ngx_cdp_admin_destinations(r, mcf);
    }

    if (actx->op->id == NGX_CDP_ADMIN_SEGMENTS
        || actx->op->id == NGX_CDP_ADMIN_SEGMENT)
    {
        bad = ngx_cdp_admin_segment_args(r, actx, mcf);

        if (bad == (const char *) NGX_CONF_ERROR) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (bad && ngx_strcmp(bad, "name") == 0
            && ngx_http_arg(r, (u_char *) "name", 4, &arg) == NGX_OK)
        {
            return ngx_cdp_admin_error(r, NGX_HTTP_NOT_FOUND,
                                       "unknown_segment",
                                       "no cdp_segment of this name",
                                       "name");
        }

        if (bad) {
            return ngx_cdp_admin_error(r, NGX_HTTP_BAD_REQUEST,
                                       "invalid_field",
                                       "name (a cdp_segment), cursor "
                                       "(0, or the one a page gave), "
                                       "count (1 to 1000), format (json, "
                                       "ndjson or csv), fields (a comma "
                                       "list)", bad);
        }

    } else if (actx->op->id == NGX_CDP_ADMIN_REPLAY) {
        rc = ngx_cdp_admin_replay_name(r, actx, mcf);

        if (rc == NGX_ERROR) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (rc == NGX_DECLINED) {
            return ngx_cdp_admin_error(r, NGX_HTTP_BAD_REQUEST,
                                       "missing_field",
                                       "name the destination: "
                                       "{\"destination\":\"NAME\"}",
                                       "destination");
        }

        if (rc == NGX_ABORT) {
            return ngx_cdp_admin_error(r, NGX_HTTP_NOT_FOUND,
                                       "unknown_destination",
                                       "no cdp_destination of this name",
                                       "destination");
        }

    } else if (actx->op->id == NGX_CDP_ADMIN_AUDIT) {
        since_len = 1;
        since[0] = '0';

        if (ngx_http_arg(r, (u_char *) "since", 5, &arg) == NGX_OK) {
            if (arg.len == 0 || arg.len > 16
                || ngx_atoi(arg.data, arg.len) == NGX_ERROR)
            {
                return ngx_cdp_admin_error(r, NGX_HTTP_BAD_REQUEST,
                                           "invalid_field",
                                           "since is a time in milliseconds "
                                           "since the epoch", "since");
            }

            since_len = arg.len;
            ngx_memcpy(since, arg.data, arg.len);
        }

    } else {
        rc = (r->method == NGX_HTTP_GET)
             ? ngx_cdp_admin_query_ids(r, actx, &bad)
             : ngx_cdp_admin_body_ids(r, actx, &bad);

        if (rc == NGX_ERROR) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (rc == NGX_DECLINED) {
            return ngx_cdp_admin_error(r, NGX_HTTP_BAD_REQUEST,
                                       "invalid_field",
                                       "this identifier is not valid",
                                       bad);
        }

        if (actx->ids->nelts == 0) {
            return ngx_cdp_admin_error(r, NGX_HTTP_BAD_REQUEST,
                                       "missing_field",
                                       "name the person by user_id, email, "
                                       "phone, anonymous_id or profile_id",
                                       NULL);
        }

        if (actx->ids->nelts > NGX_CDP_ADMIN_MAX_IDS) {
            return ngx_cdp_admin_error(r, NGX_HTTP_BAD_REQUEST,
                                       "too_many_identifiers",
                                       "at most 100 identifiers a request",
                                       NULL);
        }
    }

    if (mcf->redis.seeds && actx->op->cluster == NGX_CDP_ADMIN_C_SAGA) {
        return ngx_cdp_admin_saga(r, actx, mcf, lcf);
    }

    /* FCALL[_RO] function 0 prefix ... */

    argv = ngx_palloc(r->pool, (8 + actx->ids->nelts) * sizeof(char *));
    argvlen = ngx_palloc(r->pool, (8 + actx->ids->nelts) * sizeof(size_t));
    acall = ngx_alloc(sizeof(ngx_cdp_admin_call_t), r->connection->log);

    if (argv == NULL || argvlen == NULL || acall == NULL) {
        if (acall) {
            ngx_free(acall);
        }

        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    acall->erase = (actx->op->id == NGX_CDP_ADMIN_ERASE);
    call = &acall->call;

    argc = 0;
    argv[argc] = actx->op->write ? "FCALL" : "FCALL_RO";
    argvlen[argc] = ngx_strlen(argv[argc]);
    argc++;
    argv[argc] = actx->op->function;
    argvlen[argc++] = ngx_strlen(actx->op->function);
    argv[argc] = "0";
    argvlen[argc++] = 1;

    /* "<prefix>|<shards>": the library names every shard's keys */

    pfx = ngx_pnalloc(r->pool, mcf->prefix.len + 1 + NGX_INT_T_LEN);
    if (pfx == NULL) {
        ngx_free(acall);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    argv[argc] = (const char *) pfx;
    argvlen[argc++] = ngx_sprintf(pfx, "%V|%ui", &mcf->prefix,
                                  mcf->redis.shards)
                      - pfx;

    now_len = ngx_cdp_admin_now(now);

    if (actx->op->write) {
        if (ngx_cdp_admin_receipt(receipt) != NGX_OK) {
            ngx_free(acall);
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        argv[argc] = (const char *) receipt;
        argvlen[argc++] = sizeof(receipt);
        argv[argc] = ngx_cdp_admin_role(actx);
        argvlen[argc] = ngx_strlen(argv[argc]);
        argc++;
        argv[argc] = (const char *) now;
        argvlen[argc++] = now_len;
    }

    id = actx->ids->elts;

    if (actx->op->id == NGX_CDP_ADMIN_PROFILES) {
        argv[argc] = (const char *) id[0].data;
        argvlen[argc++] = id[0].len;
        argv[argc] = NGX_CDP_ADMIN_RECENT;
        argvlen[argc++] = sizeof(NGX_CDP_ADMIN_RECENT) - 1;

    } else if (actx->op->id == NGX_CDP_ADMIN_AUDIT) {
        argv[argc] = (const char *) since;
        argvlen[argc++] = since_len;
        argv[argc] = "1000";
        argvlen[argc++] = 4;

    } else {
        for (i = 0; i < actx->ids->nelts; i++) {
            argv[argc] = (const char *) id[i].data;
            argvlen[argc++] = id[i].len;
        }
    }

    call->handler = ngx_cdp_admin_done;
    call->data = actx;

    if (ngx_cdp_wait_start(r, &actx->wait, &call->data, lcf->api_timeout,
                           ngx_cdp_admin_timeout, actx)
        != NGX_OK)
    {
        ngx_free(acall);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the answer comes with the reply (at once on a lost connection) */

    r->main->count++;

    if (mcf->redis.seeds) {
        /*
         * numkeys 0 goes to any master: this one touches the audit only
         * (Redis lets a function reach undeclared keys its node owns), so
         * the node of the audit's slot
         */
        p = ngx_pnalloc(r->pool, mcf->prefix.len + sizeof(":audit") - 1);
        if (p == NULL) {
            rc = NGX_ERROR;

        } else {
            len = ngx_sprintf(p, "%V:audit", &mcf->prefix) - p;
            rc = ngx_cdp_redis_call_slot(call, ngx_cdp_key_slot(p, len),
                                         argc, argv, argvlen);
        }

    } else {
        rc = ngx_cdp_redis_call(call, argc, argv, argvlen);
    }

    if (rc != NGX_OK) {
        ngx_cdp_wait_answered(&actx->wait);
        r->main->count--;
        ngx_free(acall);

        return ngx_cdp_admin_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                   "unavailable",
                                   "the store is unavailable, retry later",
                                   NULL);
    }

    return NGX_DONE;
}


/*
 * A page of a segment's members as NDJSON or CSV, its cursor (for the next
 * page) in a header, the text as the body; both copied.
 */

static ngx_int_t
ngx_cdp_admin_page(ngx_cdp_admin_ctx_t *actx, u_char *cursor, size_t clen,
    u_char *text, size_t len)
{
    u_char              *body, *c;
    ngx_http_request_t  *r;

    r = actx->request;

    body = ngx_pnalloc(r->pool, len + 1);
    c = ngx_pnalloc(r->pool, clen + 1);
    if (body == NULL || c == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_memcpy(body, text, len);
    ngx_cpystrn(c, cursor, clen + 1);

    if (ngx_cdp_add_header(r, "X-CDP-Cursor", (char *) c) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_cdp_send(r, NGX_HTTP_OK,
                        (actx->format == NGX_CDP_ADMIN_CSV)
                        ? "text/csv; charset=utf-8" : "application/x-ndjson",
                        body, len);
}


/*
 * GET destinations: each destination with this nginx's figures (those of
 * cdp_status), as JSON.
 */

static ngx_int_t
ngx_cdp_admin_destinations(ngx_http_request_t *r,
    ngx_http_cdp_main_conf_t *mcf)
{
    u_char             *body, *p;
    size_t              len;
    ngx_uint_t          i, k, n;
    ngx_cdp_dest_t     *d;
    ngx_atomic_uint_t   c[NGX_CDP_DC_N];

    static const char  *purposes[] = { "", "analytics", "marketing", "",
                                       "personalization" };
    static const char  *formats[] = { "segment", "ga4", "json" };

    len = 2;
    d = mcf->destinations ? mcf->destinations->elts : NULL;
    k = mcf->destinations ? mcf->destinations->nelts : 0;

    for (i = 0; i < k; i++) {
        len += 512 + d[i].name.len + d[i].uri.len + NGX_CDP_DC_N
                                                    * NGX_ATOMIC_T_LEN;
    }

    body = ngx_pnalloc(r->pool, len);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = body;
    *p++ = '[';

    for (i = 0; i < k; i++) {
        for (n = 0; n < NGX_CDP_DC_N; n++) {
            c[n] = d[i].counters ? d[i].counters[n] : 0;
        }

        p = ngx_sprintf(p, "%s{\"name\":\"%V\",\"purpose\":\"%s\","
                        "\"format\":\"%s\",\"uri\":\"%V\","
                        "\"queued\":%uA,\"delivered\":%uA,"
                        "\"retried\":%uA,\"dead_lettered\":%uA,"
                        "\"deletion_notices\":%uA,"
                        "\"filtered\":{\"consent\":%uA,\"erased\":%uA,"
                        "\"type\":%uA},\"in_flight\":%uA,"
                        "\"stream_length\":%uA,\"pending\":%uA,",
                        i ? "," : "", &d[i].name,
                        purposes[d[i].purpose & 7],
                        formats[d[i].format], &d[i].uri,
                        c[NGX_CDP_DC_QUEUED], c[NGX_CDP_DC_DELIVERED],
                        c[NGX_CDP_DC_RETRIED], c[NGX_CDP_DC_DEAD],
                        c[NGX_CDP_DC_NOTICES],
                        c[NGX_CDP_DC_FILTERED_CONSENT],
                        c[NGX_CDP_DC_FILTERED_ERASED],
                        c[NGX_CDP_DC_FILTERED_TYPE],
                        c[NGX_CDP_DC_IN_FLIGHT], c[NGX_CDP_DC_LENGTH],
                        c[NGX_CDP_DC_PENDING]);

        if (c[NGX_CDP_DC_LAST_SUCCESS]) {
            p = ngx_sprintf(p, "\"seconds_since_success\":%T}",
                            ngx_time() - (time_t) c[NGX_CDP_DC_LAST_SUCCESS]);

        } else {
            p = ngx_sprintf(p, "\"seconds_since_success\":null}");
        }
    }

    *p++ = ']';

    return ngx_cdp_send(r, NGX_HTTP_OK, "application/json", body, p - body);
}


/*
 * POST replay {"destination":"NAME"}: NAME as the call's one argument.
 * NGX_DECLINED: no name; NGX_ABORT: no such destination.
 */

static ngx_int_t
ngx_cdp_admin_replay_name(ngx_http_request_t *r, ngx_cdp_admin_ctx_t *actx,
    ngx_http_cdp_main_conf_t *mcf)
{
    json_t        *obj, *v;
    ngx_int_t      rc;
    ngx_str_t      body, *name;
    json_error_t   err;

    rc = ngx_cdp_read_body(r, &body, NGX_CDP_ADMIN_BODY_MAX);
    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    obj = (rc == NGX_OK && body.len)
          ? json_loadb((const char *) body.data, body.len,
                       JSON_REJECT_DUPLICATES, &err)
          : NULL;

    v = (obj && json_is_object(obj)) ? json_object_get(obj, "destination")
                                     : NULL;

    if (v == NULL || !json_is_string(v)) {
        if (obj) {
            json_decref(obj);
        }

        return NGX_DECLINED;
    }

    if (ngx_cdp_dest_find(mcf, (u_char *) json_string_value(v),
                          json_string_length(v))
        == NULL)
    {
        json_decref(obj);
        return NGX_ABORT;
    }

    name = ngx_array_push(actx->ids);
    if (name == NULL) {
        json_decref(obj);
        return NGX_ERROR;
    }

    name->len = json_string_length(v);
    name->data = ngx_pnalloc(r->pool, name->len);
    if (name->data == NULL) {
        json_decref(obj);
        return NGX_ERROR;
    }

    ngx_memcpy(name->data, json_string_value(v), name->len);
    json_decref(obj);

    return NGX_OK;
}


static ngx_int_t
ngx_cdp_admin_push(ngx_cdp_admin_ctx_t *actx, u_char *data, size_t len)
{
    ngx_str_t  *v;

    v = ngx_array_push(actx->ids);
    if (v == NULL) {
        return NGX_ERROR;
    }

    v->data = data;
    v->len = len;

    return NGX_OK;
}


/*
 * The call's arguments of GET segments (every segment: name, rule) and
 * GET segment?name=&cursor=&count=&format=&fields= (name, cursor, count,
 * format, fields...), as its "identifiers".  Returns NULL, the name of a
 * bad argument, or NGX_CONF_ERROR (out of memory).
 */

static const char *
ngx_cdp_admin_segment_args(ngx_http_request_t *r, ngx_cdp_admin_ctx_t *actx,
    ngx_http_cdp_main_conf_t *mcf)
{
    u_char              *p, *q, *last, *dst;
    ngx_int_t            n;
    ngx_str_t            arg;
    ngx_uint_t           i;
    ngx_cdp_audience_t  *a;

    a = mcf->segments ? mcf->segments->elts : NULL;

    if (actx->op->id == NGX_CDP_ADMIN_SEGMENTS) {
        for (i = 0; a && i < mcf->segments->nelts; i++) {
            if (ngx_cdp_admin_push(actx, a[i].name.data, a[i].name.len)
                != NGX_OK
                || ngx_cdp_admin_push(actx, a[i].source.data,
                                      a[i].source.len)
                   != NGX_OK)
            {
                return (const char *) NGX_CONF_ERROR;
            }
        }

        return NULL;
    }

    if (ngx_http_arg(r, (u_char *) "name", 4, &arg) != NGX_OK) {
        return "name";
    }

    for (i = 0; a && i < mcf->segments->nelts; i++) {
        if (a[i].name.len == arg.len
            && ngx_strncmp(a[i].name.data, arg.data, arg.len) == 0)
        {
            break;
        }
    }

    if (a == NULL || i == mcf->segments->nelts) {
        return "name";
    }

    if (ngx_cdp_admin_push(actx, a[i].name.data, a[i].name.len) != NGX_OK) {
        return (const char *) NGX_CONF_ERROR;
    }

    if (ngx_http_arg(r, (u_char *) "cursor", 6, &arg) != NGX_OK) {
        ngx_str_set(&arg, "0");
    }

    if (ngx_cdp_admin_cursor(arg.data, arg.len, mcf->redis.shards)
        != NGX_OK)
    {
        return "cursor";
    }

    if (ngx_cdp_admin_push(actx, arg.data, arg.len) != NGX_OK) {
        return (const char *) NGX_CONF_ERROR;
    }

    if (ngx_http_arg(r, (u_char *) "count", 5, &arg) != NGX_OK) {
        ngx_str_set(&arg, "100");
    }

    n = ngx_atoi(arg.data, arg.len);
    if (n < 1 || n > 1000) {
        return "count";
    }

    if (ngx_cdp_admin_push(actx, arg.data, arg.len) != NGX_OK) {
        return (const char *) NGX_CONF_ERROR;
    }

    if (ngx_http_arg(r, (u_char *) "format", 6, &arg) != NGX_OK) {
        ngx_str_set(&arg, "json");
    }

    if (arg.len == 4 && ngx_strncmp(arg.data, "json", 4) == 0) {
        actx->format = NGX_CDP_ADMIN_JSON;

    } else if (arg.len == 6 && ngx_strncmp(arg.data, "ndjson", 6) == 0) {
        actx->format = NGX_CDP_ADMIN_NDJSON;

    } else if (arg.len == 3 && ngx_strncmp(arg.data, "csv", 3) == 0) {
        actx->format = NGX_CDP_ADMIN_CSV;

    } else {
        return "format";
    }

    if (ngx_cdp_admin_push(actx, arg.data, arg.len) != NGX_OK) {
        return (const char *) NGX_CONF_ERROR;
    }

    if (ngx_http_arg(r, (u_char *) "fields", 6, &arg) != NGX_OK) {
        return NULL;
    }

    /* a comma list, %XX-decoded: "ev.count:Order%20Completed" */

    dst = ngx_pnalloc(r->pool, arg.len);
    if (dst == NULL) {
        return (const char *) NGX_CONF_ERROR;
    }

    p = dst;
    q = arg.data;
    ngx_unescape_uri(&p, &q, arg.len, 0);
    last = p;

    for (p = dst; p < last; p = q + 1) {
        q = ngx_strlchr(p, last, ',');
        if (q == NULL) {
            q = last;
        }

        if (q == p || q - p > 256 || actx->ids->nelts >= 4 + 64) {
            return "fields";
        }

        if (ngx_cdp_admin_push(actx, p, q - p) != NGX_OK) {
            return (const char *) NGX_CONF_ERROR;
        }
    }

    return NULL;
}


/*
 * A page's cursor as the store makes it (store/admin.lua, parse_cursor):
 * "0", or "<shard>.<SSCAN cursor>", decimal without leading zeros, the
 * shard below the shards, the cursor below 2^64.
 */

static ngx_int_t
ngx_cdp_admin_cursor(u_char *p, size_t len, ngx_uint_t shards)
{
    u_char      *dot, *end;
    ngx_int_t    shard;

    if (len == 1 && p[0] == '0') {
        return NGX_OK;
    }

    end = p + len;
    dot = ngx_strlchr(p, end, '.');

    if (dot == NULL || dot == p || dot - p > 4 || (p[0] == '0' && dot - p > 1)
        || end - (dot + 1) == 0 || end - (dot + 1) > 20
        || (dot[1] == '0' && end - (dot + 1) > 1))
    {
        return NGX_ERROR;
    }

    shard = ngx_atoi(p, dot - p);

    if (shard == NGX_ERROR || (ngx_uint_t) shard >= shards) {
        return NGX_ERROR;
    }

    for (p = dot + 1; p < end; p++) {
        if (*p < '0' || *p > '9') {
            return NGX_ERROR;
        }
    }

    /* 20 digits: at most 2^64 - 1 */

    if (end - (dot + 1) == 20
        && ngx_strncmp(dot + 1, "18446744073709551615", 20) > 0)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* GET ?email=...&user_id=...: every identifier argument */

static ngx_int_t
ngx_cdp_admin_query_ids(ngx_http_request_t *r, ngx_cdp_admin_ctx_t *actx,
    const char **bad)
{
    u_char      *p, *q, *end, *dst;
    size_t       klen;
    ssize_t      n;
    ngx_int_t    rc;
    ngx_uint_t   t;

    p = r->args.data;
    end = r->args.data + r->args.len;

    while (p < end) {
        q = ngx_strlchr(p, end, '&');
        if (q == NULL) {
            q = end;
        }

        klen = 0;

        while (p + klen < q && p[klen] != '=') {
            klen++;
        }

        for (t = 0; ngx_cdp_admin_types[t]; t++) {
            if (klen == ngx_strlen(ngx_cdp_admin_types[t])
                && ngx_strncmp(p, ngx_cdp_admin_types[t], klen) == 0
                && p + klen < q)
            {
                break;
            }
        }

        if (ngx_cdp_admin_types[t]) {
            dst = ngx_pnalloc(r->pool, q - (p + klen + 1) + 1);
            if (dst == NULL) {
                return NGX_ERROR;
            }

            /* '+' is a '+': "?phone=+44..." and "jane+news@..." */
            n = ngx_cdp_unescape_uri(dst, p + klen + 1,
                                     q - (p + klen + 1));

            rc = (n < 0) ? NGX_DECLINED
                         : ngx_cdp_admin_add_id(r, actx, t,
                                                dst, (size_t) n);

            if (rc != NGX_OK) {
                *bad = ngx_cdp_admin_types[t];
                return rc;
            }
        }

        p = q + 1;
    }

    return NGX_OK;
}


/* POST {"email": "..." | [...], "user_id": ..., ...} */

static ngx_int_t
ngx_cdp_admin_body_ids(ngx_http_request_t *r, ngx_cdp_admin_ctx_t *actx,
    const char **bad)
{
    size_t         i;
    json_t        *obj, *v, *item;
    ngx_int_t      rc;
    ngx_str_t      body;
    ngx_uint_t     t;
    json_error_t   err;

    rc = ngx_cdp_read_body(r, &body, NGX_CDP_ADMIN_BODY_MAX);

    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    if (rc == NGX_DECLINED || body.len == 0) {
        *bad = "body";
        return NGX_DECLINED;
    }

    obj = json_loadb((const char *) body.data, body.len,
                     JSON_REJECT_DUPLICATES, &err);

    if (obj == NULL || !json_is_object(obj)) {
        if (obj) {
            json_decref(obj);
        }

        *bad = "body";
        return NGX_DECLINED;
    }

    rc = NGX_OK;

    for (t = 0; ngx_cdp_admin_types[t] && rc == NGX_OK; t++) {
        v = json_object_get(obj, ngx_cdp_admin_types[t]);

        if (v == NULL || json_is_null(v)) {
            continue;
        }

        if (json_is_string(v)) {
            rc = ngx_cdp_admin_add_id(r, actx, t,
                                      (u_char *) json_string_value(v),
                                      json_string_length(v));

        } else if (json_is_array(v)) {
            json_array_foreach(v, i, item) {
                if (!json_is_string(item)) {
                    rc = NGX_DECLINED;
                    break;
                }

                rc = ngx_cdp_admin_add_id(r, actx, t,
                                          (u_char *) json_string_value(item),
                                          json_string_length(item));
                if (rc != NGX_OK) {
                    break;
                }
            }

        } else {
            rc = NGX_DECLINED;
        }

        if (rc != NGX_OK) {
            *bad = ngx_cdp_admin_types[t];
        }
    }

    json_decref(obj);

    return rc;
}


/*
 * One identifier as Redis names it: "user_id:<h>", "email:<h>",
 * "phone:<h>" (normalised, hashed), "anonymous_id:<aid>",
 * "profile_id:<pid>".  The raw value goes no further.
 */

static ngx_int_t
ngx_cdp_admin_add_id(ngx_http_request_t *r, ngx_cdp_admin_ctx_t *actx,
    ngx_uint_t t, u_char *v, size_t len)
{
    u_char              *p, *hash;
    size_t               i, n, tlen;
    ngx_str_t           *id, *aidh;
    ngx_cdp_ids_t        ids;
    ngx_cdp_identity_t   identity;
    u_char               aid[NGX_CDP_ID_HEX_LEN];

    if (len == 0 || len > NGX_CDP_IDENT_VALUE_MAX
        || memchr(v, '\0', len) != NULL)
    {
        return NGX_DECLINED;
    }

    ngx_memzero(&identity, sizeof(ngx_cdp_identity_t));

    switch (t) {

    case NGX_CDP_ID_PROFILE_ID:

        /* internal ids: never suppressed, so never unsuppressed */

        if (actx->op->id == NGX_CDP_ADMIN_UNSUPPRESS || len > 64) {
            return NGX_DECLINED;
        }

        for (i = 0; i < len; i++) {
            if (!((v[i] >= '0' && v[i] <= '9')
                  || (v[i] >= 'a' && v[i] <= 'z')))
            {
                return NGX_DECLINED;
            }
        }

        hash = v;
        n = len;
        break;

    case NGX_CDP_ID_ANONYMOUS_ID:

        /* the cookie's id, or an API anonymousId */

        p = ngx_pnalloc(r->pool, len + 1);
        if (p == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(p, v, len);
        p[len] = '\0';

        ngx_cdp_api_anonymous_id(r, (const char *) p, aid, &n);

        if (n != NGX_CDP_ID_HEX_LEN) {
            return NGX_DECLINED;
        }

        hash = aid;

        if (actx->op->id == NGX_CDP_ADMIN_UNSUPPRESS) {
            aidh = ngx_array_push(actx->unsuppress);
            if (aidh == NULL) {
                return NGX_ERROR;
            }

            aidh->data = ngx_pnalloc(r->pool, NGX_CDP_AIDH_LEN);
            if (aidh->data == NULL || !ngx_cdp_aid_hash(aidh->data, aid)) {
                return NGX_ERROR;
            }

            aidh->len = NGX_CDP_AIDH_LEN;
        }

        break;

    default: /* user_id, email, phone: normalised and hashed */

        if (t == NGX_CDP_ID_USER_ID) {
            identity.user_id.data = v;
            identity.user_id.len = len;

        } else if (t == NGX_CDP_ID_EMAIL) {
            identity.email.data = v;
            identity.email.len = len;

        } else {
            identity.phone.data = v;
            identity.phone.len = len;
        }

        if (ngx_cdp_identify_check(r, &identity, &ids) != NGX_OK) {
            return NGX_ERROR;
        }

        hash = (t == NGX_CDP_ID_USER_ID) ? (ids.user_id.len ? ids.uidh : NULL)
               : (t == NGX_CDP_ID_EMAIL) ? (ids.email.len ? ids.eh : NULL)
               : (ids.phone.len ? ids.ph : NULL);

        if (hash == NULL) {
            return NGX_DECLINED;
        }

        n = NGX_CDP_IDENT_HASH_LEN;
        break;
    }

    id = ngx_array_push(actx->ids);
    if (id == NULL) {
        return NGX_ERROR;
    }

    tlen = ngx_strlen(ngx_cdp_admin_types[t]);

    id->len = tlen + 1 + n;
    id->data = ngx_pnalloc(r->pool, id->len);
    if (id->data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(id->data, ngx_cdp_admin_types[t], tlen);
    *p++ = ':';
    ngx_memcpy(p, hash, n);

    return NGX_OK;
}


/*
 * Redis Cluster: erase, export, profiles, segments, segment, unsuppress
 * and replay as a saga of cdp_admin_x, FCALL cdp_admin_x 1 <prefix>:audit
 * <prefix>|<N> begin <op> <receipt> <role> <now_ms> <recent>
 * <identifier>... (the standalone function's arguments; profiles: the
 * first identifier, as cdp_read; segments and segment: the segments'
 * arguments, and replay: the destination's name, as their
 * "identifiers"), whose end answers the request as the standalone
 * function's reply would.
 */

static ngx_int_t
ngx_cdp_admin_saga(ngx_http_request_t *r, ngx_cdp_admin_ctx_t *actx,
    ngx_http_cdp_main_conf_t *mcf, ngx_http_cdp_loc_conf_t *lcf)
{
    u_char                *p;
    ngx_str_t              key, *args, *id;
    ngx_uint_t             i, n, nargs;
    ngx_cdp_admin_saga_t  *w;

    n = (actx->op->id == NGX_CDP_ADMIN_PROFILES) ? 1 : actx->ids->nelts;
    nargs = 6 + n;

    args = ngx_palloc(r->pool, nargs * sizeof(ngx_str_t));
    key.data = ngx_pnalloc(r->pool, mcf->prefix.len + sizeof(":audit") - 1);
    p = ngx_pnalloc(r->pool, 2 + 16 + NGX_INT64_LEN);

    if (args == NULL || key.data == NULL || p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    key.len = ngx_sprintf(key.data, "%V:audit", &mcf->prefix) - key.data;

    ngx_str_set(&args[0], "begin");
    args[1].data = (u_char *) actx->op->saga;
    args[1].len = ngx_strlen(actx->op->saga);

    if (ngx_cdp_admin_receipt(p) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    args[2].data = p;
    args[2].len = 2 + 16;
    args[3].data = (u_char *) ngx_cdp_admin_role(actx);
    args[3].len = ngx_strlen((char *) args[3].data);
    args[4].data = p + 2 + 16;
    args[4].len = ngx_cdp_admin_now(args[4].data);

    if (actx->op->id == NGX_CDP_ADMIN_PROFILES) {
        ngx_str_set(&args[5], NGX_CDP_ADMIN_RECENT);

    } else {
        ngx_str_set(&args[5], "0");
    }

    id = actx->ids->elts;

    for (i = 0; i < n; i++) {
        args[6 + i] = id[i];
    }

    w = ngx_alloc(sizeof(ngx_cdp_admin_saga_t), r->connection->log);
    if (w == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    w->actx = actx;
    w->erase = (actx->op->id == NGX_CDP_ADMIN_ERASE);

    if (ngx_cdp_wait_start(r, &actx->wait, &w->actx, lcf->api_timeout,
                           ngx_cdp_admin_timeout, actx)
        != NGX_OK)
    {
        ngx_free(w);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /*
     * the answer comes at the saga's end, at once when it cannot start
     * (ngx_cdp_admin_saga_done() has answered 503 then)
     */

    r->main->count++;

    (void) ngx_cdp_xid_start(NGX_CDP_XID_ADMIN, &key, args, nargs,
                             ngx_cdp_admin_saga_done, w);

    return NGX_DONE;
}


/* a receipt id: "r-" and 16 hex digits of randomness */

static ngx_int_t
ngx_cdp_admin_receipt(u_char *receipt)
{
    u_char  rnd[8];

    if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
        return NGX_ERROR;
    }

    (void) ngx_cdp_hex(ngx_cpymem(receipt, "r-", 2), rnd, sizeof(rnd));

    return NGX_OK;
}


static const char *
ngx_cdp_admin_role(ngx_cdp_admin_ctx_t *actx)
{
    return (actx->role & NGX_CDP_ROLE_ADMIN) ? "admin"
           : (actx->role & NGX_CDP_ROLE_PRIVACY) ? "privacy"
                                                 : "marketer";
}


/* the time in ms since the epoch, as digits (NGX_INT64_LEN at most) */

static size_t
ngx_cdp_admin_now(u_char *now)
{
    ngx_time_t  *tp;

    tp = ngx_timeofday();

    return ngx_sprintf(now, "%uL", (uint64_t) tp->sec * 1000 + tp->msec)
           - now;
}


static void
ngx_cdp_admin_done(ngx_cdp_redis_call_t *call, void *data)
{
    redisReply  *reply = data;

    ngx_http_request_t    *r;
    ngx_cdp_admin_ctx_t   *actx;
    ngx_cdp_admin_call_t  *acall;

    acall = (ngx_cdp_admin_call_t *) call;
    actx = call->data;

    /*
     * the edge refuses the erased browsers' cookies from now on, even when
     * the request timed out or went away meanwhile
     */

    if (acall->erase && reply && reply->type == REDIS_REPLY_STRING) {
        ngx_cdp_admin_erased((u_char *) reply->str, reply->len);
    }

    ngx_free(acall);

    if (actx == NULL) {
        /* answered already (timeout), or the request went away */
        return;
    }

    ngx_cdp_wait_answered(&actx->wait);
    r = actx->request;

    if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 2
        && actx->op->id == NGX_CDP_ADMIN_SEGMENT
        && reply->element[0]->type == REDIS_REPLY_STRING
        && reply->element[1]->type == REDIS_REPLY_STRING)
    {
        /* ndjson or csv: the next page's cursor in a header */
        ngx_http_finalize_request(r,
            ngx_cdp_admin_page(actx, (u_char *) reply->element[0]->str,
                               reply->element[0]->len,
                               (u_char *) reply->element[1]->str,
                               reply->element[1]->len));
        return;
    }

    if (reply == NULL) {
        ngx_cdp_admin_answer(actx, 0, NULL, 0);
        return;
    }

    ngx_cdp_admin_answer(actx, reply->type, (u_char *) reply->str,
                         reply->len);
}


/*
 * A saga has ended (Redis Cluster): its result is the standalone
 * function's reply, its error the standalone function's error; abandoned,
 * it is a reply that did not come.
 */

static void
ngx_cdp_admin_saga_done(void *data, ngx_int_t rc, ngx_str_t *result)
{
    ngx_cdp_admin_saga_t  *w = data;

    u_char               *p;
    ngx_uint_t            erase;
    ngx_cdp_admin_ctx_t  *actx;

    actx = w->actx;
    erase = w->erase;

    ngx_free(w);

    /* as above: even when the request is gone, even unreplicated */

    if (erase && rc != NGX_DECLINED && result && result->data) {
        ngx_cdp_admin_erased(result->data, result->len);
    }

    if (actx == NULL) {
        if (rc == NGX_DECLINED) {
            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                          "cdp: admin saga failed after its request gave "
                          "up: %V", result);
        }

        return;
    }

    ngx_cdp_wait_answered(&actx->wait);

    if (rc == NGX_OK && result->data
        && actx->op->id == NGX_CDP_ADMIN_SEGMENT
        && actx->format != NGX_CDP_ADMIN_JSON)
    {
        /* ndjson or csv: "<cursor>\n<text>" */
        p = ngx_strlchr(result->data, result->data + result->len, '\n');

        if (p == NULL) {
            ngx_cdp_admin_answer(actx, 0, NULL, 0);
            return;
        }

        ngx_http_finalize_request(actx->request,
            ngx_cdp_admin_page(actx, result->data, p - result->data, p + 1,
                               result->data + result->len - (p + 1)));
        return;
    }

    if (rc == NGX_OK) {
        ngx_cdp_admin_answer(actx, result->data ? REDIS_REPLY_STRING
                                                : REDIS_REPLY_NIL,
                             result->data, result->len);
        return;
    }

    if (rc == NGX_DECLINED && result && result->data) {
        ngx_cdp_admin_answer(actx, REDIS_REPLY_ERROR, result->data,
                             result->len);
        return;
    }

    ngx_cdp_admin_answer(actx, 0, NULL, 0);
}


/* an erasure that worker 0's sweep finished: the edge, the log */

static void
ngx_cdp_admin_swept(void *data, ngx_int_t rc, ngx_str_t *result)
{
    u_char  *p, *q, *end;

    if (rc == NGX_DECLINED || result == NULL || result->data == NULL) {
        return;
    }

    ngx_cdp_admin_erased(result->data, result->len);

    /* the receipt: no personal data */

    p = result->data;
    end = p + result->len;

    if (result->len > sizeof("{\"receipt\":\"") - 1
        && ngx_strncmp(p, "{\"receipt\":\"", sizeof("{\"receipt\":\"") - 1)
           == 0)
    {
        p += sizeof("{\"receipt\":\"") - 1;
        q = ngx_strlchr(p, end, '"');

        if (q) {
            ngx_log_error(NGX_LOG_NOTICE, ngx_cycle->log, 0,
                          "cdp: erasure %*s finished by the sweep "
                          "(cdp_admin_sagas_total{result=\"swept\"})",
                          (size_t) (q - p), p);
        }
    }
}


void
ngx_cdp_admin_init_process(ngx_cycle_t *cycle)
{
    ngx_cdp_xid_swept_handler(NGX_CDP_XID_ADMIN, ngx_cdp_admin_swept);
}


/*
 * The answer to the request from the store's reply: type
 * REDIS_REPLY_STRING, _NIL or _ERROR (str then ends with a '\0'), or 0:
 * no reply (the connection lost, a saga abandoned).
 */

static void
ngx_cdp_admin_answer(ngx_cdp_admin_ctx_t *actx, int type, u_char *str,
    size_t len)
{
    u_char              *body;
    ngx_int_t            rc;
    ngx_uint_t           i;
    ngx_str_t           *aidh;
    ngx_http_request_t  *r;

    r = actx->request;

    if (type == REDIS_REPLY_ERROR
        && ngx_strncmp(str, "ERR cdp_", 8) == 0)
    {
        /* the library refused the arguments: the caller's to fix */
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "cdp: admin %s refused: %s", actx->op->function, str);

        rc = ngx_cdp_admin_error(r, NGX_HTTP_BAD_REQUEST, "invalid_request",
                                 "the store refused these identifiers",
                                 NULL);
        ngx_http_finalize_request(r, rc);
        return;
    }

    if (type == 0 || type == REDIS_REPLY_ERROR) {
        if (type) {
            /* messages name positions, never values (store/admin.lua) */
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "cdp: admin %s failed: %s", actx->op->function,
                          str);
        }

        rc = ngx_cdp_admin_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                 "unavailable",
                                 "the store failed, retry later", NULL);
        ngx_http_finalize_request(r, rc);
        return;
    }

    if (type == REDIS_REPLY_NIL) {
        rc = ngx_cdp_admin_error(r, NGX_HTTP_NOT_FOUND, "not_found",
                                 "no profile for this identifier", NULL);
        ngx_http_finalize_request(r, rc);
        return;
    }

    if (type != REDIS_REPLY_STRING) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    body = ngx_pnalloc(r->pool, len);
    if (body == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ngx_memcpy(body, str, len);

    if (actx->op->id == NGX_CDP_ADMIN_UNSUPPRESS) {
        aidh = actx->unsuppress->elts;

        for (i = 0; i < actx->unsuppress->nelts; i++) {
            ngx_cdp_suppress_update(aidh[i].data, aidh[i].len, 0);
        }
    }

    rc = ngx_cdp_send(r, NGX_HTTP_OK, "application/json", body, len);

    ngx_http_finalize_request(r, rc);
}


/* the "anonymous_ids" of an erase receipt into the edge's set */

static void
ngx_cdp_admin_erased(u_char *receipt, size_t len)
{
    u_char  *p, *q, *end;

    end = receipt + len;

    p = ngx_strnstr(receipt, "\"anonymous_ids\":[", len);
    if (p == NULL) {
        return;
    }

    p += sizeof("\"anonymous_ids\":[") - 1;

    while (p < end && *p == '"') {
        q = ngx_strlchr(p + 1, end, '"');
        if (q == NULL) {
            break;
        }

        ngx_cdp_suppress_update(p + 1, q - p - 1, 1);

        p = q + 1;

        if (p < end && *p == ',') {
            p++;
        }
    }
}


static void
ngx_cdp_admin_timeout(ngx_event_t *ev)
{
    ngx_cdp_admin_ctx_t  *actx;
    ngx_http_request_t   *r;

    actx = ev->data;
    r = actx->request;

    ngx_cdp_wait_abandon(&actx->wait);

    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  "cdp: no answer from redis within cdp_api_timeout");

    ngx_http_finalize_request(r,
        ngx_cdp_admin_error(r, NGX_HTTP_SERVICE_UNAVAILABLE, "unavailable",
                            "no answer from the store in time; an erasure "
                            "may still complete: check the audit", NULL));
}


static ngx_int_t
ngx_cdp_admin_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *code, const char *message, const char *field)
{
    if ((status == NGX_HTTP_SERVICE_UNAVAILABLE
         && ngx_cdp_add_header(r, "Retry-After", "5") != NGX_OK)
        || (status == NGX_HTTP_UNAUTHORIZED
            && ngx_cdp_add_header(r, "WWW-Authenticate",
                                  "Bearer realm=\"ngx_cdp admin\"")
               != NGX_OK))
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_cdp_error(r, status, code, message, field);
}
