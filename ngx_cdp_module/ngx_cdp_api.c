
/*
 * ngx_cdp: the server-side API, compatible with Segment's HTTP Tracking
 * API, so that Segment's server libraries only change their host.
 *
 * A request is all or nothing: its body is parsed and checked as a whole
 * (ngx_cdp_segment.c), then every message goes into one batch of the
 * worker's Redis queue, and the answer waits for Redis: 200 once the
 * batch is acknowledged, 503 with Retry-After when Redis is down, the
 * queue is full or the answer does not come within cdp_api_timeout.  The
 * senders retry on 503; messageIds make retries harmless (the store drops
 * a messageId it saw within cdp_dedup_window, in the same atomic call).
 * On Redis Cluster a batch per shard, and the messages that need
 * identity become sagas (ngx_cdp_xid.h): 200 once the batches and their
 * sagas are done and, on masters with replicas, a replica has their
 * writes; 503 when one failed.
 *
 * The worker never blocks: the wait is a timer and a callback.
 *
 * A body may come compressed (Content-Encoding: gzip, x-gzip or deflate,
 * as some server libraries send every batch): the endpoint's limit applies
 * to the compressed body as it arrives and again to the inflated one,
 * which is inflated into a buffer of that limit and not a byte more.
 */


#include "ngx_http_cdp_module.h"
#include "ngx_cdp_http.h"
#include "ngx_cdp_policy.h"
#include "ngx_cdp_identify.h"
#include "ngx_cdp_api.h"
#include "ngx_cdp_ingest.h"
#include "ngx_cdp_dest.h"
#include "ngx_cdp_audience.h"
#include "ngx_cdp_stamp.h"
#include "ngx_cdp_wire.h"

#include <ngx_md5.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <zlib.h>

#include "ngx_cdp_ident.h"
#include "ngx_cdp_segment.h"


#define NGX_CDP_API_RETRY_AFTER  "5"

/* the body's content coding */
#define NGX_CDP_API_IDENTITY     0
#define NGX_CDP_API_GZIP         1
#define NGX_CDP_API_DEFLATE      2

#define NGX_CDP_API_ACCEPT_ENCODING  "gzip, deflate"


typedef struct {
    ngx_http_request_t       *request;
    ngx_cdp_wait_t            wait;         /* for the batch's waiter */
    ngx_int_t                 type;
    ngx_uint_t                encoding;     /* NGX_CDP_API_GZIP, ... */
    ngx_http_cdp_write_key_t *key;          /* the sender's */
    int                       consent_default;  /* -2: not evaluated */
} ngx_cdp_api_ctx_t;


static void ngx_cdp_api_body(ngx_http_request_t *r);
static ngx_int_t ngx_cdp_api_process(ngx_http_request_t *r,
    ngx_cdp_api_ctx_t *actx);
static ngx_int_t ngx_cdp_api_encoding(ngx_http_request_t *r,
    ngx_uint_t *encoding, ngx_str_t *bad);
static ngx_int_t ngx_cdp_api_inflate(ngx_http_request_t *r,
    ngx_uint_t encoding, ngx_str_t *body, size_t max, const char **why);
static ngx_http_cdp_write_key_t *ngx_cdp_api_auth(ngx_http_request_t *r,
    const char *body_key);
static ngx_int_t ngx_cdp_api_enqueue(ngx_http_request_t *r,
    ngx_cdp_api_ctx_t *actx, ngx_cdp_segment_msg_t *m);
static ngx_int_t ngx_cdp_api_rewrite(ngx_http_request_t *r,
    ngx_cdp_api_ctx_t *actx, ngx_cdp_segment_msg_t *m, u_char *aid,
    size_t aid_len, ngx_str_t *json);
static void ngx_cdp_api_done(ngx_cdp_ingest_waiter_t *w, ngx_int_t rc);
static void ngx_cdp_api_timeout(ngx_event_t *ev);
static ngx_int_t ngx_cdp_api_nginx_error(ngx_http_request_t *r);
static ngx_int_t ngx_cdp_api_error(ngx_http_request_t *r, ngx_uint_t status,
    const char *code, const char *message);
static ngx_int_t ngx_cdp_api_fail(ngx_http_request_t *r, ngx_uint_t status,
    const char *code, const char *field, const char *fmt, ...);
static ngx_int_t ngx_cdp_api_unavailable(ngx_http_request_t *r);
static ngx_int_t ngx_cdp_api_unauthorized(ngx_http_request_t *r);


static u_char  ngx_cdp_api_ok[] = "{\"success\":true}";


char *
ngx_cdp_api_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_cdp_loc_conf_t *lcf = conf;

    ngx_uint_t                         i;
    ngx_http_err_page_t               *err;
    ngx_http_core_loc_conf_t          *clcf;
    ngx_http_compile_complex_value_t   ccv;

    static ngx_str_t   uri = ngx_string("$uri");
    static ngx_uint_t  statuses[] = {
        NGX_HTTP_BAD_REQUEST, NGX_HTTP_LENGTH_REQUIRED,
        NGX_HTTP_REQUEST_ENTITY_TOO_LARGE
    };

    if (lcf->api) {
        return "is duplicate";
    }

    lcf->api = 1;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_cdp_api_handler;

    /*
     * nginx's own answers in this location (a body over
     * client_max_body_size, a broken chunked body) come back to the
     * handler, which gives them in the API's JSON: an error_page to the
     * request's own URI, the status kept (a body timeout closes the
     * connection without an answer, as nginx does)
     */

    for (i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++) {
        if (clcf->error_pages == NULL) {
            clcf->error_pages = ngx_array_create(cf->pool, 4,
                                                 sizeof(ngx_http_err_page_t));
            if (clcf->error_pages == NULL) {
                return NGX_CONF_ERROR;
            }
        }

        err = ngx_array_push(clcf->error_pages);
        if (err == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memzero(err, sizeof(ngx_http_err_page_t));

        err->status = statuses[i];
        err->overwrite = -1;

        ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

        ccv.cf = cf;
        ccv.value = &uri;
        ccv.complex_value = &err->value;

        if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


/* cdp_write_key KEY [source=NAME] */

char *
ngx_cdp_write_key_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_cdp_loc_conf_t *lcf = conf;

    ngx_str_t                 *value;
    ngx_uint_t                 i;
    ngx_http_cdp_write_key_t  *wk;

    value = cf->args->elts;

    if (lcf->write_keys == NGX_CONF_UNSET_PTR) {
        lcf->write_keys = ngx_array_create(cf->pool, 2,
                                           sizeof(ngx_http_cdp_write_key_t));
        if (lcf->write_keys == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    /* Basic auth carries it as "key:": no ':' and printable */

    if (value[1].len < 8 || value[1].len > 256) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "cdp_write_key must be 8 to 256 characters");
        return NGX_CONF_ERROR;
    }

    for (i = 0; i < value[1].len; i++) {
        if (value[1].data[i] <= ' ' || value[1].data[i] >= 0x7f
            || value[1].data[i] == ':')
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "cdp_write_key may hold printable ASCII "
                               "characters but ':' only");
            return NGX_CONF_ERROR;
        }
    }

    wk = ngx_array_push(lcf->write_keys);
    if (wk == NULL) {
        return NGX_CONF_ERROR;
    }

    wk->key = value[1];
    ngx_str_null(&wk->source);

    if (cf->args->nelts == 3) {
        if (ngx_strncmp(value[2].data, "source=", 7) != 0
            || value[2].len == 7)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid cdp_write_key parameter \"%V\"",
                               &value[2]);
            return NGX_CONF_ERROR;
        }

        wk->source.data = value[2].data + 7;
        wk->source.len = value[2].len - 7;

        for (i = 0; i < wk->source.len; i++) {
            u_char  c = wk->source.data[i];

            if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
                  || (c >= '0' && c <= '9') || c == '.' || c == '_'
                  || c == '-')
                || wk->source.len > 64)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid cdp_write_key source \"%V\": "
                                   "1 to 64 of [A-Za-z0-9._-]", &wk->source);
                return NGX_CONF_ERROR;
            }
        }
    }

    return NGX_CONF_OK;
}


ngx_int_t
ngx_cdp_api_handler(ngx_http_request_t *r)
{
    size_t               max, len;
    u_char              *tail;
    ngx_int_t            rc, type;
    ngx_str_t            bad;
    ngx_uint_t           encoding;
    ngx_cdp_api_ctx_t   *actx;
    ngx_http_cdp_ctx_t  *ctx;

    if (r->error_page && r->err_status >= NGX_HTTP_BAD_REQUEST) {
        return ngx_cdp_api_nginx_error(r);
    }

    if (r->method != NGX_HTTP_POST) {
        return ngx_cdp_api_error(r, NGX_HTTP_NOT_ALLOWED, "method_not_allowed",
                                 "the API takes POST");
    }

    /* the endpoint: the last segment of the URI */

    tail = ngx_cdp_uri_tail(r, &len);

    type = ngx_cdp_segment_endpoint(tail, len);

    if (type < 0) {
        return ngx_cdp_api_error(r, NGX_HTTP_NOT_FOUND, "unknown_endpoint",
                                 "no such endpoint: use track, identify, "
                                 "page, screen, group, alias or batch");
    }

    /* a coding it cannot decode is refused before the body is read */

    if (ngx_cdp_api_encoding(r, &encoding, &bad) != NGX_OK) {
        ngx_cdp_count(NGX_CDP_C_API_REJECTED, 1);

        /* RFC 9110, 15.5.16: the codings that would have been accepted */

        if (ngx_cdp_add_header(r, "Accept-Encoding",
                               NGX_CDP_API_ACCEPT_ENCODING)
            != NGX_OK)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (bad.len > 64) {
            bad.len = 64;
        }

        return ngx_cdp_api_fail(r, NGX_HTTP_UNSUPPORTED_MEDIA_TYPE,
                                "unsupported_content_encoding",
                                "Content-Encoding",
                                encoding == NGX_CDP_API_IDENTITY
                                ? "unsupported content coding \"%V\": the "
                                  "API decodes gzip, x-gzip and deflate"
                                : "one content coding at most (gzip, "
                                  "x-gzip or deflate), \"%V\" comes on "
                                  "top of another", &bad);
    }

    /* the compressed body's own size: the inflated one is checked later */

    max = (type == NGX_CDP_SEGMENT_BATCH) ? NGX_CDP_SEGMENT_BATCH_BODY_MAX
                                          : NGX_CDP_SEGMENT_BODY_MAX;

    if (r->headers_in.content_length_n > (off_t) max) {
        ngx_cdp_count(NGX_CDP_C_API_REJECTED, 1);

        return ngx_cdp_api_error(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                 "body_too_large",
                                 type == NGX_CDP_SEGMENT_BATCH
                                 ? "a batch body may have 512000 bytes"
                                 : "a message body may have 32768 bytes");
    }

    actx = ngx_pcalloc(r->pool, sizeof(ngx_cdp_api_ctx_t));
    if (actx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    actx->request = r;
    actx->type = type;
    actx->encoding = encoding;
    actx->consent_default = -2;

    ctx = ngx_http_cdp_get_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->api = actx;

    r->request_body_in_single_buf = 1;

    rc = ngx_http_read_client_request_body(r, ngx_cdp_api_body);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


static void
ngx_cdp_api_body(ngx_http_request_t *r)
{
    ngx_int_t           rc;
    ngx_cdp_api_ctx_t  *actx;

    actx = ngx_http_cdp_get_ctx(r)->api;

    rc = ngx_cdp_api_process(r, actx);

    if (rc == NGX_DONE) {
        /*
         * waits for Redis: finalized by ngx_cdp_api_done() or the timer
         * (r may be gone already: a lost connection answers at once)
         */
        return;
    }

    ngx_http_finalize_request(r, rc);
}


static ngx_int_t
ngx_cdp_api_process(ngx_http_request_t *r, ngx_cdp_api_ctx_t *actx)
{
    size_t                     i, size, max;
    ngx_uint_t                 queued;
    ngx_int_t                  rc;
    ngx_str_t                  body;
    const char                *why;
    ngx_time_t                *tp;
    ngx_cdp_segment_t          res;
    ngx_cdp_ingest_waiter_t    *w;
    ngx_http_cdp_loc_conf_t   *lcf;
    ngx_cdp_segment_error_t    err;
    u_char                    *ej;
    u_char                     ts[NGX_CDP_ISO8601_LEN];

    max = (actx->type == NGX_CDP_SEGMENT_BATCH)
          ? NGX_CDP_SEGMENT_BATCH_BODY_MAX : NGX_CDP_SEGMENT_BODY_MAX;

    rc = ngx_cdp_read_body(r, &body, max);

    if (rc == NGX_DECLINED) {
        ngx_cdp_count(NGX_CDP_C_API_REJECTED, 1);
        return ngx_cdp_api_error(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                 "body_too_large",
                                 "the body is larger than the endpoint's "
                                 "limit");
    }

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* a key in Basic auth is checked before the body is looked at */

    if (r->headers_in.authorization) {
        actx->key = ngx_cdp_api_auth(r, NULL);

        if (actx->key == NULL) {
            return ngx_cdp_api_unauthorized(r);
        }
    }

    /* an empty body is empty in any coding: the parser says so */

    if (actx->encoding != NGX_CDP_API_IDENTITY && body.len) {
        rc = ngx_cdp_api_inflate(r, actx->encoding, &body, max, &why);

        if (rc == NGX_DECLINED) {
            ngx_cdp_count(NGX_CDP_C_API_REJECTED, 1);

            return ngx_cdp_api_error(r, NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
                                     "body_too_large",
                                     actx->type == NGX_CDP_SEGMENT_BATCH
                                     ? "a batch body may have 512000 bytes "
                                       "once inflated"
                                     : "a message body may have 32768 bytes "
                                       "once inflated");
        }

        if (rc == NGX_ABORT) {
            ngx_cdp_count(NGX_CDP_C_API_REJECTED, 1);

            return ngx_cdp_api_fail(r, NGX_HTTP_BAD_REQUEST,
                                    "invalid_content_encoding",
                                    "Content-Encoding",
                                    "the body is not valid %s: %s",
                                    actx->encoding == NGX_CDP_API_GZIP
                                    ? "gzip" : "deflate (zlib)", why);
        }

        if (rc != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    tp = ngx_timeofday();
    (void) ngx_cdp_iso8601(ts, tp->sec, (unsigned) tp->msec);

    ngx_memzero(&res, sizeof(ngx_cdp_segment_t));

    rc = ngx_cdp_segment_parse((int) actx->type, body.data, body.len, ts,
                               NGX_CDP_ISO8601_LEN, &res, &err);

    if (rc != 0) {
        ngx_cdp_count(NGX_CDP_C_API_REJECTED, 1);

        if (rc >= 500) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        /* the body may go out after this returns: not on the stack */

        ej = ngx_pnalloc(r->pool, NGX_CDP_SEGMENT_ERROR_JSON_MAX);
        if (ej == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        return ngx_cdp_send(r, (ngx_uint_t) rc, "application/json", ej,
                            ngx_cdp_segment_error_json(ej, &err));
    }

    /* without Basic auth: the body's writeKey */

    if (actx->key == NULL) {
        actx->key = ngx_cdp_api_auth(r, res.write_key);

        if (actx->key == NULL) {
            ngx_cdp_segment_free(&res);
            return ngx_cdp_api_unauthorized(r);
        }
    }

    size = 0;

    for (i = 0; i < res.nmsgs; i++) {
        size += res.msgs[i].json_len + res.msgs[i].traits_len + 1024;
    }

    if (res.nmsgs == 0) {
        ngx_cdp_segment_free(&res);
        return ngx_cdp_send(r, NGX_HTTP_OK, "application/json",
                            ngx_cdp_api_ok, sizeof(ngx_cdp_api_ok) - 1);
    }

    if (ngx_cdp_ingest_reserve(res.nmsgs, size) != NGX_OK) {
        ngx_cdp_segment_free(&res);
        return ngx_cdp_api_unavailable(r);
    }

    for (i = 0; i < res.nmsgs; i++) {
        if (ngx_cdp_api_enqueue(r, actx, &res.msgs[i]) != NGX_OK) {
            break;
        }
    }

    queued = (i == res.nmsgs);

    ngx_cdp_segment_free(&res);

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_cdp_module);

    w = queued ? ngx_alloc(sizeof(ngx_cdp_ingest_waiter_t),
                           r->connection->log)
               : NULL;

    if (w == NULL
        || ngx_cdp_wait_start(r, &actx->wait, &w->data, lcf->api_timeout,
                              ngx_cdp_api_timeout, actx)
           != NGX_OK)
    {
        /* what was queued goes (a retry is deduplicated); no answer waits */
        ngx_cdp_ingest_release();

        if (w) {
            ngx_free(w);
        }

        return ngx_cdp_api_unavailable(r);
    }

    w->handler = ngx_cdp_api_done;
    w->data = actx;
    w->next = NULL;

    ngx_cdp_ingest_wait(w);

    return NGX_DONE;
}


/*
 * The body's content coding, from every Content-Encoding header (each a
 * list, RFC 9110): gzip (or its old name x-gzip), deflate, or none when
 * there is none, or only "identity" or empty elements.  Names are
 * case-insensitive, spaces and tabs around them do not count.  Another
 * name is NGX_DECLINED with that name in bad and *encoding none; a second
 * coding applied on top of the first too, with *encoding the first.
 */

static ngx_int_t
ngx_cdp_api_encoding(ngx_http_request_t *r, ngx_uint_t *encoding,
    ngx_str_t *bad)
{
    u_char           *p, *last, *start, *end;
    size_t            len;
    ngx_uint_t        i, enc;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    *encoding = NGX_CDP_API_IDENTITY;
    ngx_str_null(bad);

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NGX_OK;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len != sizeof("Content-Encoding") - 1
            || ngx_strncasecmp(h[i].key.data, (u_char *) "Content-Encoding",
                               sizeof("Content-Encoding") - 1)
               != 0)
        {
            continue;
        }

        p = h[i].value.data;
        last = p + h[i].value.len;

        while (p < last) {
            start = p;
            end = ngx_strlchr(p, last, ',');

            if (end == NULL) {
                end = last;
            }

            p = (end == last) ? last : end + 1;

            while (start < end && (*start == ' ' || *start == '\t')) {
                start++;
            }

            while (end > start && (end[-1] == ' ' || end[-1] == '\t')) {
                end--;
            }

            len = end - start;

            if (len == 0
                || (len == 8
                    && ngx_strncasecmp(start, (u_char *) "identity", 8) == 0))
            {
                continue;
            }

            if ((len == 4 && ngx_strncasecmp(start, (u_char *) "gzip", 4) == 0)
                || (len == 6
                    && ngx_strncasecmp(start, (u_char *) "x-gzip", 6) == 0))
            {
                enc = NGX_CDP_API_GZIP;

            } else if (len == 7
                       && ngx_strncasecmp(start, (u_char *) "deflate", 7)
                          == 0)
            {
                enc = NGX_CDP_API_DEFLATE;

            } else {
                *encoding = NGX_CDP_API_IDENTITY;
                bad->data = start;
                bad->len = len;
                return NGX_DECLINED;
            }

            if (*encoding != NGX_CDP_API_IDENTITY) {
                bad->data = start;
                bad->len = len;
                return NGX_DECLINED;
            }

            *encoding = enc;
        }
    }
}


/*
 * Replaces body with its inflated bytes: gzip (RFC 1952, every member of
 * a multi-member body) or deflate (the zlib format of RFC 1950, as HTTP
 * defines it; raw deflate is not taken).  The output is one buffer of
 * max + 1 bytes, allocated before inflating: zlib stops once it is full,
 * so a body that would inflate past max costs that buffer and zlib's
 * state, however far it would go.  NGX_DECLINED: more than max bytes;
 * NGX_ABORT: not a valid stream, *why says how (a constant).
 */

static ngx_int_t
ngx_cdp_api_inflate(ngx_http_request_t *r, ngx_uint_t encoding,
    ngx_str_t *body, size_t max, const char **why)
{
    int         zrc;
    u_char     *out;
    size_t      len;
    z_stream    zs;
    ngx_int_t   rc;

    out = ngx_pnalloc(r->pool, max + 1);
    if (out == NULL) {
        return NGX_ERROR;
    }

    ngx_memzero(&zs, sizeof(z_stream));

    zrc = inflateInit2(&zs, encoding == NGX_CDP_API_GZIP ? 16 + MAX_WBITS
                                                         : MAX_WBITS);
    if (zrc != Z_OK) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "cdp: inflateInit2() failed: %d", zrc);
        return NGX_ERROR;
    }

    zs.next_in = body->data;
    zs.avail_in = body->len;
    zs.next_out = out;
    zs.avail_out = max + 1;

    *why = "";

    for ( ;; ) {
        zrc = inflate(&zs, Z_NO_FLUSH);

        len = zs.next_out - out;

        if (len > max) {
            rc = NGX_DECLINED;
            break;
        }

        if (zrc == Z_STREAM_END) {
            if (zs.avail_in == 0) {
                body->data = out;
                body->len = len;
                rc = NGX_OK;
                break;
            }

            if (encoding != NGX_CDP_API_GZIP) {
                *why = "data after the end of the stream";
                rc = NGX_ABORT;
                break;
            }

            /* the next gzip member: total_out starts again, len does not */

            if (inflateReset(&zs) != Z_OK) {
                rc = NGX_ERROR;
                break;
            }

            continue;
        }

        if (zrc == Z_OK && zs.avail_in) {
            continue;
        }

        if (zrc == Z_OK || zrc == Z_BUF_ERROR) {
            /* the output has room left: it is the input that ran out */
            *why = "the stream ends early";
            rc = NGX_ABORT;
            break;
        }

        if (zrc == Z_DATA_ERROR || zrc == Z_NEED_DICT) {
            *why = (zrc == Z_NEED_DICT) ? "it needs a preset dictionary"
                   : zs.msg ? zs.msg : "corrupt data";
            rc = NGX_ABORT;
            break;
        }

        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "cdp: inflate() failed: %d", zrc);
        rc = NGX_ERROR;
        break;
    }

    (void) inflateEnd(&zs);

    return rc;
}


/*
 * The write key: "Authorization: Basic base64(key:)" (Segment's libraries
 * send the key as the user and an empty password), else the body's
 * writeKey.  Compared with every configured key in constant time; the key
 * is never logged.
 */

static ngx_http_cdp_write_key_t *
ngx_cdp_api_auth(ngx_http_request_t *r, const char *body_key)
{
    u_char                    *colon;
    ngx_str_t                  key, enc, dec;
    ngx_uint_t                 i;
    ngx_table_elt_t           *h;
    ngx_http_cdp_write_key_t  *wk, *found;
    ngx_http_cdp_loc_conf_t   *lcf;

    ngx_str_null(&key);

    h = r->headers_in.authorization;

    if (h && h->value.len > 6
        && ngx_strncasecmp(h->value.data, (u_char *) "Basic ", 6) == 0)
    {
        enc.data = h->value.data + 6;
        enc.len = h->value.len - 6;

        while (enc.len && enc.data[0] == ' ') {
            enc.data++;
            enc.len--;
        }

        dec.data = ngx_pnalloc(r->pool, ngx_base64_decoded_length(enc.len));
        if (dec.data == NULL) {
            return NULL;
        }

        if (ngx_decode_base64(&dec, &enc) == NGX_OK) {
            colon = ngx_strlchr(dec.data, dec.data + dec.len, ':');

            key.data = dec.data;
            key.len = colon ? (size_t) (colon - dec.data) : dec.len;
        }

    } else if (body_key) {
        key.data = (u_char *) body_key;
        key.len = ngx_strlen(body_key);
    }

    if (key.len == 0) {
        return NULL;
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_cdp_module);

    found = NULL;
    wk = lcf->write_keys->elts;

    for (i = 0; i < lcf->write_keys->nelts; i++) {
        if (wk[i].key.len == key.len
            && CRYPTO_memcmp(wk[i].key.data, key.data, key.len) == 0)
        {
            found = &wk[i];
        }
    }

    return found;
}


/*
 * One message into the batch, as cdp_ingest's kind "api" takes it (see
 * store/cdp.lua): the key is the profile of its anonymousId, the attrs
 * the message id hash (32 hex digits, or 32 "-"), the user id h (64, or
 * 64 "-"), the type's first letter, then "user_id TAB user_id h TAB
 * email h TAB phone h TAB previousId as a user id h TAB previousId as an
 * anonymous id TAB traits"; the payload the event's JSON.
 */

static ngx_int_t
ngx_cdp_api_enqueue(ngx_http_request_t *r, ngx_cdp_api_ctx_t *actx,
    ngx_cdp_segment_msg_t *m)
{
    u_char              *p;
    size_t               aid_len, prev_aid_len;
    ngx_md5_t            md5;
    ngx_str_t            key, attrs, profile_traits, stream_traits;
    ngx_str_t            json, route;
    ngx_uint_t           type, fact;
    u_char               rbuf[NGX_CDP_EXTRA_LEN];
    ngx_cdp_ids_t        ids, prev;
    ngx_cdp_identity_t   id;
    u_char               mid[32], digest[16];
    u_char               aid[NGX_CDP_ID_HEX_LEN];
    u_char               prev_aid[NGX_CDP_ID_HEX_LEN];

    ngx_memzero(&id, sizeof(ngx_cdp_identity_t));

    if (m->user_id) {
        id.user_id.data = (u_char *) m->user_id;
        id.user_id.len = ngx_strlen(m->user_id);
    }

    if (m->email) {
        id.email.data = (u_char *) m->email;
        id.email.len = ngx_strlen(m->email);
    }

    if (m->phone) {
        id.phone.data = (u_char *) m->phone;
        id.phone.len = ngx_strlen(m->phone);
    }

    if (ngx_cdp_identify_check(r, &id, &ids) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_str_null(&profile_traits);

    if (m->type == NGX_CDP_SEGMENT_IDENTIFY) {
        id.traits.data = (u_char *) m->traits;
        id.traits.len = m->traits_len;

        if (ngx_cdp_identify_traits(r, &id.traits, &ids.email, &ids.phone,
                                    &profile_traits, &stream_traits)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    ngx_cdp_api_anonymous_id(r, m->anonymous_id, aid, &aid_len);

    /* alias: previousId may be an earlier user id or an anonymous id */

    ngx_str_null(&prev.user_id);
    prev_aid_len = 0;

    if (m->type == NGX_CDP_SEGMENT_ALIAS && m->previous_id) {
        ngx_memzero(&id, sizeof(ngx_cdp_identity_t));
        id.user_id.data = (u_char *) m->previous_id;
        id.user_id.len = ngx_strlen(m->previous_id);

        if (ngx_cdp_identify_check(r, &id, &prev) != NGX_OK) {
            return NGX_ERROR;
        }

        ngx_cdp_api_anonymous_id(r, m->previous_id, prev_aid, &prev_aid_len);
    }

    if (ngx_cdp_api_rewrite(r, actx, m, aid, aid_len, &json) != NGX_OK) {
        return NGX_ERROR;
    }

    if (m->message_id) {
        ngx_md5_init(&md5);
        ngx_md5_update(&md5, m->message_id, ngx_strlen(m->message_id));
        ngx_md5_final(digest, &md5);
        (void) ngx_cdp_hex(mid, digest, sizeof(digest));
    }

    /*
     * the fields go in attrs and the JSON alone in payload: the store
     * appends the JSON as it came, reads the head of attrs at fixed
     * offsets (messageId hash, user id h, type) and splits the rest only
     * when it needs it (store/cdp.lua, API_REST)
     */

    attrs.len = NGX_CDP_WIRE_API_HEAD + NGX_CDP_IDS_TEXT_MAX(&ids)
                + NGX_CDP_IDENT_HASH_LEN + NGX_CDP_ID_HEX_LEN
                + profile_traits.len + 3;
    attrs.data = ngx_pnalloc(r->pool, attrs.len);
    if (attrs.data == NULL) {
        return NGX_ERROR;
    }

    /* the head (ngx_cdp_wire.h): the type's first letter t, i, p, s, g, a */

    p = ngx_cdp_wire_api_head(attrs.data, m->message_id ? mid : NULL,
                              ids.user_id.len ? ids.uidh : NULL,
                              (u_char) ngx_cdp_segment_type_name(m->type)[0]);

    p = ngx_cdp_ids_text(p, &ids);
    *p++ = '\t';

    if (prev.user_id.len) {
        p = ngx_cpymem(p, prev.uidh, NGX_CDP_IDENT_HASH_LEN);
    }

    *p++ = '\t';
    p = ngx_cpymem(p, prev_aid, prev_aid_len);
    *p++ = '\t';

    if (profile_traits.len) {
        /* no traits: ngx_str_null, and memcpy() wants a pointer */
        p = ngx_cpymem(p, profile_traits.data, profile_traits.len);
    }

    attrs.len = p - attrs.data;

    if (ngx_cdp_profile_key(r, aid, aid_len, &key) != NGX_OK) {
        return NGX_ERROR;
    }

    /*
     * Where it may go: under the message's own consent
     * (context.consent.categoryPreferences), else under the consent last
     * recorded on the person's profile, else under the location's
     * cdp_consent_default: the store decides the last two.
     */

    if (actx->consent_default == -2) {
        actx->consent_default = ngx_cdp_consent_default(r);
    }

    switch (m->type) {
    case NGX_CDP_SEGMENT_TRACK:
        type = NGX_CDP_TYPE_TRACK;
        break;
    case NGX_CDP_SEGMENT_IDENTIFY:
        type = NGX_CDP_TYPE_IDENTIFY;
        break;
    case NGX_CDP_SEGMENT_PAGE:
        type = NGX_CDP_TYPE_PAGE;
        break;
    case NGX_CDP_SEGMENT_SCREEN:
        type = NGX_CDP_TYPE_SCREEN;
        break;
    case NGX_CDP_SEGMENT_GROUP:
        type = NGX_CDP_TYPE_GROUP;
        break;
    default: /* NGX_CDP_SEGMENT_ALIAS */
        type = NGX_CDP_TYPE_ALIAS;
        break;
    }

    route.data = rbuf;
    route.len = ngx_cdp_dest_route(
                    ngx_http_get_module_main_conf(r, ngx_http_cdp_module),
                    type, (u_char *) m->event,
                    m->event ? ngx_strlen(m->event) : 0,
                    m->consent < 0 ? NGX_CDP_CONSENT_UNKNOWN : m->consent,
                    actx->consent_default, rbuf);

    if (m->type == NGX_CDP_SEGMENT_TRACK) {
        fact = ngx_cdp_audience_fact(
                   ngx_http_get_module_main_conf(r, ngx_http_cdp_module),
                   (u_char *) m->event, ngx_strlen(m->event));

        if (fact) {
            route.len = ngx_sprintf(rbuf + route.len, ";%ui", fact) - rbuf;
        }
    }

    return ngx_cdp_ingest_enqueue(&key, NGX_CDP_EVENT_API, &attrs, &json,
                                 &route);
}


/*
 * The stored copy, as the parser made it, but for two things: the sender's
 * cdp_write_key source= name in context.source, and an anonymousId that
 * looks like an e-mail address (some backends put one there) replaced by
 * the id it is stored under, so that no address reaches the stream.  Both
 * are rare: the copy is parsed again only for them.
 */

static ngx_int_t
ngx_cdp_api_rewrite(ngx_http_request_t *r, ngx_cdp_api_ctx_t *actx,
    ngx_cdp_segment_msg_t *m, u_char *aid, size_t aid_len, ngx_str_t *json)
{
    char          *s;
    json_t        *obj, *ctx;
    ngx_int_t      rc;
    ngx_uint_t     source, address;
    json_error_t   err;

    json->data = (u_char *) m->json;
    json->len = m->json_len;

    source = (actx->key && actx->key->source.len);
    address = (m->anonymous_id && ngx_strchr(m->anonymous_id, '@'));

    if (!source && !address) {
        return NGX_OK;
    }

    obj = json_loadb(m->json, m->json_len, 0, &err);
    if (obj == NULL) {
        return NGX_ERROR;
    }

    rc = NGX_ERROR;

    if (address) {
        if (aid_len) {
            if (json_object_set_new(obj, "anonymousId",
                                    json_stringn((const char *) aid, aid_len))
                != 0)
            {
                goto done;
            }

        } else {
            (void) json_object_del(obj, "anonymousId");
        }
    }

    if (source) {
        ctx = json_object_get(obj, "context");

        if (!json_is_object(ctx)) {
            ctx = json_object();
            if (ctx == NULL || json_object_set_new(obj, "context", ctx) != 0)
            {
                goto done;
            }
        }

        if (json_object_set_new(ctx, "source",
                                json_stringn((const char *)
                                             actx->key->source.data,
                                             actx->key->source.len))
            != 0)
        {
            goto done;
        }
    }

    s = json_dumps(obj, JSON_COMPACT|JSON_PRESERVE_ORDER);
    if (s == NULL) {
        goto done;
    }

    json->len = ngx_strlen(s);
    json->data = ngx_pnalloc(r->pool, json->len);

    if (json->data) {
        ngx_memcpy(json->data, s, json->len);
        rc = NGX_OK;
    }

    free(s);

done:

    json_decref(obj);

    return rc;
}


/*
 * An anonymousId in the space of the cookie's ids: 32 lowercase hex digits
 * are taken as they are (the site's backend passing $cdp_anonymous_id
 * on); anything else, which may be personal, is named by the first 32 hex
 * digits of its keyed hash.  A blocked value ("null", "undefined", ...)
 * is no id: *len is 0.
 */

void
ngx_cdp_api_anonymous_id(ngx_http_request_t *r, const char *v, u_char *aid,
    size_t *len)
{
    size_t                     n, i;
    ngx_http_cdp_main_conf_t  *mcf;
    u_char                     h[NGX_CDP_IDENT_HASH_LEN];

    *len = 0;

    if (v == NULL) {
        return;
    }

    mcf = ngx_http_get_module_main_conf(r, ngx_http_cdp_module);

    n = ngx_strlen(v);

    if (n == NGX_CDP_ID_HEX_LEN) {
        for (i = 0; i < n; i++) {
            if (!((v[i] >= '0' && v[i] <= '9') || (v[i] >= 'a' && v[i] <= 'f')))
            {
                break;
            }
        }

        if (i == n) {
            ngx_memcpy(aid, v, n);
            *len = n;
            return;
        }
    }

    if (n > NGX_CDP_IDENT_VALUE_MAX
        || ngx_cdp_ident_blocked((u_char *) v, n,
                                 mcf->blocked ? mcf->blocked->elts : NULL,
                                 mcf->blocked ? mcf->blocked->nelts : 0))
    {
        return;
    }

    if (ngx_cdp_ident_hash(h, &mcf->ident_key, "anonymous_id", (u_char *) v,
                           n))
    {
        ngx_memcpy(aid, h, NGX_CDP_ID_HEX_LEN);
        *len = NGX_CDP_ID_HEX_LEN;
    }
}


static void
ngx_cdp_api_done(ngx_cdp_ingest_waiter_t *w, ngx_int_t rc)
{
    ngx_cdp_api_ctx_t   *actx;
    ngx_http_request_t  *r;

    actx = w->data;
    ngx_free(w);

    if (actx == NULL) {
        /* the request timed out or went away */
        return;
    }

    ngx_cdp_wait_answered(&actx->wait);
    r = actx->request;

    if (rc == NGX_OK) {
        rc = ngx_cdp_send(r, NGX_HTTP_OK, "application/json", ngx_cdp_api_ok,
                          sizeof(ngx_cdp_api_ok) - 1);
    } else {
        rc = ngx_cdp_api_unavailable(r);
    }

    ngx_http_finalize_request(r, rc);
}


static void
ngx_cdp_api_timeout(ngx_event_t *ev)
{
    ngx_cdp_api_ctx_t   *actx;
    ngx_http_request_t  *r;

    actx = ev->data;
    r = actx->request;

    /* the batch may still be stored: the sender's retry is a dup */
    ngx_cdp_wait_abandon(&actx->wait);

    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  "cdp: no answer from redis within cdp_api_timeout");

    ngx_http_finalize_request(r, ngx_cdp_api_unavailable(r));
}


/* an error nginx found before the handler ran, in the API's JSON */

static ngx_int_t
ngx_cdp_api_nginx_error(ngx_http_request_t *r)
{
    ngx_uint_t  status;

    status = r->err_status;

    ngx_cdp_count(NGX_CDP_C_API_REJECTED, 1);

    switch (status) {

    case NGX_HTTP_REQUEST_ENTITY_TOO_LARGE:
        return ngx_cdp_api_error(r, status, "body_too_large",
                                 "the body is over client_max_body_size");

    case NGX_HTTP_LENGTH_REQUIRED:
        return ngx_cdp_api_error(r, status, "length_required",
                                 "the body needs a Content-Length or "
                                 "chunked coding");

    default:
        return ngx_cdp_api_error(r, status, "bad_request",
                                 "the request could not be read (a broken "
                                 "body or header)");
    }
}


static ngx_int_t
ngx_cdp_api_error(ngx_http_request_t *r, ngx_uint_t status, const char *code,
    const char *message)
{
    u_char  *p, *body;
    size_t   len;

    len = sizeof("{\"success\":false,\"error\":\"\",\"message\":\"\"}") - 1
          + ngx_strlen(code) + ngx_strlen(message);

    body = ngx_pnalloc(r->pool, len);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* code and message are constants without characters to escape */

    p = ngx_sprintf(body, "{\"success\":false,\"error\":\"%s\","
                    "\"message\":\"%s\"}", code, message);

    return ngx_cdp_send(r, status, "application/json", body, p - body);
}


/*
 * An error as the parser's are written (ngx_cdp_segment_error_json()),
 * with a field and a formatted message, escaped there.
 */

static ngx_int_t
ngx_cdp_api_fail(ngx_http_request_t *r, ngx_uint_t status, const char *code,
    const char *field, const char *fmt, ...)
{
    u_char                   *p, *ej;
    va_list                   args;
    ngx_cdp_segment_error_t   err;

    ngx_memzero(&err, sizeof(ngx_cdp_segment_error_t));

    err.status = (int) status;
    err.code = code;
    err.index = -1;
    err.position = -1;
    err.line = -1;
    err.column = -1;

    va_start(args, fmt);
    p = ngx_vslprintf((u_char *) err.message,
                      (u_char *) err.message + sizeof(err.message) - 1, fmt,
                      args);
    va_end(args);

    *p = '\0';

    (void) ngx_cpystrn((u_char *) err.field, (u_char *) field,
                       sizeof(err.field));

    /* the body may go out after this returns: not on the stack */

    ej = ngx_pnalloc(r->pool, NGX_CDP_SEGMENT_ERROR_JSON_MAX);
    if (ej == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_cdp_send(r, status, "application/json", ej,
                        ngx_cdp_segment_error_json(ej, &err));
}


static ngx_int_t
ngx_cdp_api_unavailable(ngx_http_request_t *r)
{
    ngx_cdp_count(NGX_CDP_C_API_UNAVAILABLE, 1);

    if (ngx_cdp_add_header(r, "Retry-After", NGX_CDP_API_RETRY_AFTER)
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_cdp_api_error(r, NGX_HTTP_SERVICE_UNAVAILABLE, "unavailable",
                             "the event store is unavailable, retry later");
}


static ngx_int_t
ngx_cdp_api_unauthorized(ngx_http_request_t *r)
{
    ngx_cdp_count(NGX_CDP_C_API_REJECTED, 1);

    if (ngx_cdp_add_header(r, "WWW-Authenticate", "Basic realm=\"ngx_cdp\"")
        != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_cdp_api_error(r, NGX_HTTP_UNAUTHORIZED, "unauthorized",
                             "a valid write key is required, as the Basic "
                             "auth user or as writeKey");
}
