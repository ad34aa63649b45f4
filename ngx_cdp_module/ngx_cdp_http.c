
/*
 * ngx_cdp: what every request-facing feature shares (ngx_cdp_http.h):
 * the request's context, answering (with the one JSON error body),
 * header, cookie and body lookups, a configuration file's contents, and
 * the counters in shared memory.  It depends on nothing of the module but
 * its types, so that features depend downward only.
 */


#include "ngx_http_cdp_module.h"
#include "ngx_cdp_http.h"


ngx_atomic_t  *ngx_cdp_counters;


ngx_http_cdp_ctx_t *
ngx_http_cdp_get_ctx(ngx_http_request_t *r)
{
    ngx_http_cdp_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_cdp_module);
    if (ctx) {
        return ctx;
    }

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_cdp_ctx_t));
    if (ctx == NULL) {
        return NULL;
    }

    ngx_http_set_ctx(r, ctx, ngx_http_cdp_module);

    return ctx;
}


/*
 * Every answer of the module's handlers (pixel, status, consent endpoint,
 * API, admin) goes through here: never cached, a body from memory (len 0:
 * headers only).
 *
 * It is also the one place that keeps an answer sent before the request
 * body was read (an early error, a body on a GET) from leaving that body
 * on the connection, where nginx would parse it as the next request (a
 * smuggled request).  The body is discarded, as nginx's own handlers do,
 * or, where that fails, the connection is closed after the answer.  Once
 * the body was read or is being discarded this is a no-op.  A handler
 * that returns a status code instead (405) gets the same from nginx's
 * ngx_http_special_response_handler().
 */

ngx_int_t
ngx_cdp_send(ngx_http_request_t *r, ngx_uint_t status, const char *type,
    u_char *body, size_t len)
{
    u_char           *p;
    ngx_int_t         rc;
    ngx_buf_t        *b;
    ngx_chain_t       out;

    if (ngx_http_discard_request_body(r) != NGX_OK) {
        r->keepalive = 0;
    }

    if (ngx_cdp_add_header(r, "Cache-Control", "no-store") != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    r->headers_out.status = status;
    r->headers_out.content_length_n = len;

    if (type) {
        r->headers_out.content_type.data = (u_char *) type;
        r->headers_out.content_type.len = ngx_strlen(type);

        /* the media type alone: a "; charset=" is already in type */
        p = (u_char *) ngx_strchr(type, ';');
        r->headers_out.content_type_len = p ? (size_t) (p - (u_char *) type)
                                            : r->headers_out.content_type.len;
        r->headers_out.content_type_lowcase = NULL;
    }

    if (len == 0 || r->method == NGX_HTTP_HEAD) {
        r->header_only = 1;
        return ngx_http_send_header(r);
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->pos = body;
    b->last = body + len;
    b->memory = 1;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    return ngx_http_output_filter(r, &out);
}


/*
 * The error body of every JSON door (the server API, the admin API, the
 * consent endpoint): {"success":false,"error":CODE,"message":TEXT} and
 * "field" naming the request's part at fault, when there is one.  code,
 * message and field are constants without anything to escape.
 */

ngx_int_t
ngx_cdp_error(ngx_http_request_t *r, ngx_uint_t status, const char *code,
    const char *message, const char *field)
{
    u_char  *p, *body;
    size_t   len;

    len = sizeof("{\"success\":false,\"error\":\"\",\"message\":\"\","
                 "\"field\":\"\"}") - 1
          + ngx_strlen(code) + ngx_strlen(message)
          + (field ? ngx_strlen(field) : 0);

    body = ngx_pnalloc(r->pool, len);
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = ngx_sprintf(body, "{\"success\":false,\"error\":\"%s\","
                    "\"message\":\"%s\"", code, message);

    if (field) {
        p = ngx_sprintf(p, ",\"field\":\"%s\"", field);
    }

    *p++ = '}';

    return ngx_cdp_send(r, status, "application/json", body, p - body);
}


/* a response header of constant strings */

ngx_int_t
ngx_cdp_add_header(ngx_http_request_t *r, const char *key, const char *value)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key.data = (u_char *) key;
    h->key.len = ngx_strlen(key);
    h->value.data = (u_char *) value;
    h->value.len = ngx_strlen(value);

    return NGX_OK;
}


/*
 * The bytes of a file a directive names (secrets, tokens), at most max,
 * in cf->temp_pool: the caller zeroes what it must not leave behind.
 */

ngx_int_t
ngx_cdp_read_conf_file(ngx_conf_t *cf, ngx_str_t *directive,
    ngx_str_t *name, size_t max, u_char **buf, size_t *size)
{
    u_char           *p;
    ssize_t           n;
    ngx_int_t         rc;
    ngx_file_t        file;
    ngx_file_info_t   fi;

    ngx_memzero(&file, sizeof(ngx_file_t));
    file.name = *name;
    file.log = cf->log;

    file.fd = ngx_open_file(file.name.data, NGX_FILE_RDONLY,
                            NGX_FILE_OPEN, 0);
    if (file.fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_open_file_n " \"%V\" failed", &file.name);
        return NGX_ERROR;
    }

    rc = NGX_ERROR;

    if (ngx_fd_info(file.fd, &fi) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_fd_info_n " \"%V\" failed", &file.name);
        goto done;
    }

    if (ngx_file_size(&fi) > (off_t) max) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "%V \"%V\" is larger than %uz bytes",
                           directive, &file.name, max);
        goto done;
    }

    p = ngx_pnalloc(cf->temp_pool, (size_t) ngx_file_size(&fi) + 1);
    if (p == NULL) {
        goto done;
    }

    n = ngx_read_file(&file, p, (size_t) ngx_file_size(&fi), 0);
    if (n == NGX_ERROR) {
        ngx_explicit_memzero(p, (size_t) ngx_file_size(&fi));
        goto done;
    }

    *buf = p;
    *size = n;
    rc = NGX_OK;

done:

    if (ngx_close_file(file.fd) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_ALERT, cf->log, ngx_errno,
                      ngx_close_file_n " \"%V\" failed", &file.name);
    }

    return rc;
}


/* the first request header of that name (case-insensitive), or NULL */

ngx_table_elt_t *
ngx_cdp_request_header(ngx_http_request_t *r, const char *name, size_t len)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NULL;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == len
            && ngx_strncasecmp(h[i].key.data, (u_char *) name, len) == 0)
        {
            return &h[i];
        }
    }
}


ngx_int_t
ngx_cdp_cookie_find(ngx_http_request_t *r, ngx_str_t *name, ngx_str_t *value)
{
#if (nginx_version >= 1023000)

    if (ngx_http_parse_cookie_lines(r, r->headers_in.cookie, name, value)
        == NULL)
    {
        return NGX_DECLINED;
    }

#else

    if (ngx_http_parse_multi_header_lines(&r->headers_in.cookies, name,
                                          value)
        == NGX_DECLINED)
    {
        return NGX_DECLINED;
    }

#endif

    return NGX_OK;
}


/*
 * The body as one run of bytes: nginx keeps it in memory up to
 * client_body_buffer_size and in a temporary file beyond (then read back
 * here).  NGX_DECLINED: larger than max.
 */

ngx_int_t
ngx_cdp_read_body(ngx_http_request_t *r, ngx_str_t *body, size_t max)
{
    u_char       *p;
    off_t         len;
    ssize_t       n;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    ngx_str_null(body);

    if (r->request_body == NULL || r->request_body->bufs == NULL) {
        return NGX_OK;
    }

    len = 0;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        len += ngx_buf_size(cl->buf);
    }

    if (len > (off_t) max) {
        return NGX_DECLINED;
    }

    if (len == 0) {
        return NGX_OK;
    }

    cl = r->request_body->bufs;

    if (cl->next == NULL && !cl->buf->in_file) {
        body->data = cl->buf->pos;
        body->len = (size_t) len;
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, (size_t) len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    body->data = p;

    for ( /* void */ ; cl; cl = cl->next) {
        b = cl->buf;

        if (b->in_file) {
            n = ngx_read_file(b->file, p, (size_t) (b->file_last - b->file_pos),
                              b->file_pos);

            if (n != b->file_last - b->file_pos) {
                return NGX_ERROR;
            }

            p += n;

        } else {
            p = ngx_cpymem(p, b->pos, b->last - b->pos);
        }
    }

    body->len = p - body->data;

    return NGX_OK;
}


/* the last segment of the URI (an API endpoint, an admin operation) */

u_char *
ngx_cdp_uri_tail(ngx_http_request_t *r, size_t *len)
{
    u_char  *tail;

    tail = r->uri.data + r->uri.len;

    while (tail > r->uri.data && tail[-1] != '/') {
        tail--;
    }

    *len = r->uri.data + r->uri.len - tail;

    return tail;
}


static void
ngx_cdp_wait_cleanup(void *data)
{
    ngx_cdp_wait_abandon(data);
}


ngx_int_t
ngx_cdp_wait_start(ngx_http_request_t *r, ngx_cdp_wait_t *wt, void **detach,
    ngx_msec_t timeout, ngx_event_handler_pt handler, void *data)
{
    ngx_pool_cleanup_t  *cln;

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    cln->handler = ngx_cdp_wait_cleanup;
    cln->data = wt;

    wt->detach = detach;

    wt->timer.handler = handler;
    wt->timer.data = data;
    wt->timer.log = r->connection->log;

    ngx_add_timer(&wt->timer, timeout);

    return NGX_OK;
}


/* the callback came: nothing to detach any more */

void
ngx_cdp_wait_answered(ngx_cdp_wait_t *wt)
{
    wt->detach = NULL;

    if (wt->timer.timer_set) {
        ngx_del_timer(&wt->timer);
    }
}


/* the request gives up (its timeout, or it went away) */

void
ngx_cdp_wait_abandon(ngx_cdp_wait_t *wt)
{
    if (wt->detach) {
        *wt->detach = NULL;
        wt->detach = NULL;
    }

    if (wt->timer.timer_set) {
        ngx_del_timer(&wt->timer);
    }
}
