
/*
 * ngx_cdp: one event, rendered as Segment-spec JSON.
 *
 * Every source (pixel today, the API and edge capture later) produces the
 * same document, so downstream consumers read one format.
 */


#include "ngx_http_cdp_module.h"
#include "ngx_cdp_geo.h"
#include "ngx_cdp_policy.h"
#include "ngx_cdp_event.h"
#include "ngx_cdp_identify.h"
#include "ngx_cdp_stamp.h"

#include <openssl/rand.h>


#define NGX_CDP_MAX_USER_AGENT  1024

#define ngx_cdp_lit(p, s)  ngx_cpymem(p, s, sizeof(s) - 1)


static u_char *ngx_cdp_json_member(u_char *p, const char *key,
    ngx_cdp_str_t *v, ngx_uint_t *first);
static u_char *ngx_cdp_json_member_str(u_char *p, const char *key,
    ngx_str_t *v, ngx_uint_t *first);
static u_char *ngx_cdp_json_consent(u_char *p, ngx_cdp_consent_state_t *st);
static u_char *ngx_cdp_json_client(ngx_http_request_t *r,
    ngx_http_cdp_ctx_t *ctx, u_char *p, ngx_cdp_str_t *ua, u_char *ip,
    size_t iplen);
static u_char *ngx_cdp_json_page(u_char *p, ngx_cdp_str_t *url,
    ngx_cdp_url_t *u, ngx_cdp_str_t *search, ngx_cdp_str_t *ref,
    ngx_cdp_str_t *title);
static size_t ngx_cdp_ip_text(ngx_http_request_t *r, u_char *dst);
static size_t ngx_cdp_event_client(ngx_http_request_t *r,
    ngx_http_cdp_ctx_t *ctx, ngx_cdp_str_t *ua, u_char *ip);
static ngx_int_t ngx_cdp_event_worker_tag(void);
static void ngx_cdp_event_time(u_char *ts, ngx_time_t *tp);
static void ngx_cdp_url_host(ngx_cdp_str_t *url, ngx_cdp_str_t *host);
static u_char *ngx_cdp_touch_field(u_char *p, const u_char *v, size_t len);
static ngx_int_t ngx_cdp_event_touch(ngx_http_request_t *r,
    ngx_http_cdp_ctx_t *ctx, ngx_cdp_str_t *url, ngx_cdp_url_t *u,
    ngx_cdp_str_t *ref);


/* messageId: a random tag per worker and a counter, unique and cheap */
static u_char      ngx_cdp_worker_tag[16];
static ngx_uint_t  ngx_cdp_worker_tag_set;
static uint64_t    ngx_cdp_message_seq;


/* the ISO-8601 text of nginx's cached time, made once per millisecond */

static void
ngx_cdp_event_time(u_char *ts, ngx_time_t *tp)
{
    static time_t      sec = -1;
    static ngx_msec_t  msec;
    static u_char      text[NGX_CDP_ISO8601_LEN];

    if (tp->sec != sec || tp->msec != msec) {
        (void) ngx_cdp_iso8601(text, tp->sec, (unsigned) tp->msec);
        sec = tp->sec;
        msec = tp->msec;
    }

    ngx_memcpy(ts, text, NGX_CDP_ISO8601_LEN);
}


static ngx_int_t
ngx_cdp_event_worker_tag(void)
{
    u_char  tag[8];

    if (!ngx_cdp_worker_tag_set) {
        if (RAND_bytes(tag, sizeof(tag)) != 1) {
            return NGX_ERROR;
        }

        (void) ngx_cdp_hex(ngx_cdp_worker_tag, tag, sizeof(tag));
        ngx_cdp_worker_tag_set = 1;
    }

    return NGX_OK;
}


ngx_int_t
ngx_cdp_event_from_hit(ngx_http_request_t *r, ngx_http_cdp_ctx_t *ctx,
    ngx_cdp_hit_t *hit, ngx_str_t *json)
{
    u_char                   *p, *scratch;
    size_t                    len, iplen;
    ngx_uint_t                i, first, is_page;
    ngx_time_t               *tp;
    ngx_cdp_str_t             url, ua, search, empty, *s;
    ngx_cdp_url_t             u;
    u_char                    ip[NGX_CDP_IP_TEXT_MAX];
    u_char                    ts[NGX_CDP_ISO8601_LEN];

    if (ngx_cdp_event_worker_tag() != NGX_OK) {
        return NGX_ERROR;
    }

    is_page = (hit->event.data == NULL);

    empty.data = (u_char *) "";
    empty.len = 0;

    /* without url=, the page is the one that embedded the <img> */

    url = hit->url;

    if (url.data == NULL && r->headers_in.referer) {
        url.data = r->headers_in.referer->value.data;
        url.len = ngx_min(r->headers_in.referer->value.len, NGX_CDP_MAX_URL);
    }

    if (url.data == NULL) {
        url = empty;
    }


    scratch = ngx_pnalloc(r->pool, url.len + 1);
    if (scratch == NULL) {
        return NGX_ERROR;
    }

    ngx_cdp_url_parse(url.data, url.len, &u, scratch);

    if (ngx_cdp_event_touch(r, ctx, &url, &u, &hit->ref) != NGX_OK) {
        return NGX_ERROR;
    }

    /* Segment's "search" keeps the '?' as location.search does */

    search = empty;

    if (u.search.len) {
        p = ngx_pnalloc(r->pool, u.search.len + 1);
        if (p == NULL) {
            return NGX_ERROR;
        }

        p[0] = '?';
        ngx_memcpy(&p[1], u.search.data, u.search.len);

        search.data = p;
        search.len = u.search.len + 1;
    }

    iplen = ngx_cdp_event_client(r, ctx, &ua, ip);

    /* an upper bound: every string at its worst escaping */

    len = 1024
          + 3 * NGX_CDP_JSON_STR_MAX(hit->title.len)
          + 2 * NGX_CDP_JSON_STR_MAX(url.len)
          + 2 * NGX_CDP_JSON_STR_MAX(u.path.len)
          + 2 * NGX_CDP_JSON_STR_MAX(search.len)
          + 2 * NGX_CDP_JSON_STR_MAX(hit->ref.len)
          + NGX_CDP_JSON_STR_MAX(hit->event.len)
          + NGX_CDP_JSON_STR_MAX(hit->uid.len)
          + NGX_CDP_JSON_STR_MAX(ua.len)
          + NGX_CDP_JSON_STR_MAX(u.source.len)
          + NGX_CDP_JSON_STR_MAX(u.medium.len)
          + NGX_CDP_JSON_STR_MAX(u.name.len)
          + NGX_CDP_JSON_STR_MAX(u.term.len)
          + NGX_CDP_JSON_STR_MAX(u.content.len)
          + NGX_CDP_JSON_STR_MAX(ctx->country.len)
          + NGX_CDP_JSON_STR_MAX(ctx->region.len)
          + NGX_CDP_JSON_STR_MAX(ctx->city.len);

    for (i = 0; i < hit->nprops; i++) {
        len += 2 + NGX_CDP_JSON_STR_MAX(hit->props[i].name.len)
                 + NGX_CDP_JSON_STR_MAX(hit->props[i].value.len);
    }

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    json->data = p;

    if (is_page) {
        p = ngx_cdp_lit(p, "{\"type\":\"page\"");

        if (hit->title.data) {
            p = ngx_cdp_lit(p, ",\"name\":");
            p = ngx_cdp_json_str(p, hit->title.data, hit->title.len);
        }

    } else {
        p = ngx_cdp_lit(p, "{\"type\":\"track\",\"event\":");
        p = ngx_cdp_json_str(p, hit->event.data, hit->event.len);
    }

    tp = ngx_timeofday();
    ngx_cdp_event_time(ts, tp);

    p = ngx_cdp_lit(p, ",\"messageId\":\"px-");
    p = ngx_cpymem(p, ngx_cdp_worker_tag, sizeof(ngx_cdp_worker_tag));
    p = ngx_sprintf(p, "-%uL\"", ++ngx_cdp_message_seq);

    if (ctx->aid_state == NGX_CDP_AID_KEPT
        || ctx->aid_state == NGX_CDP_AID_NEW)
    {
        p = ngx_cdp_lit(p, ",\"anonymousId\":\"");
        p = ngx_cpymem(p, ctx->aid, NGX_CDP_ID_HEX_LEN);
        *p++ = '"';

    } else if (hit->uid.data) {
        /* no browser (a mail proxy's fetch of a signed pixel): the user */
        p = ngx_cdp_lit(p, ",\"userId\":");
        p = ngx_cdp_json_str(p, hit->uid.data, hit->uid.len);
    }

    p = ngx_cdp_lit(p, ",\"timestamp\":\"");
    p = ngx_cpymem(p, ts, NGX_CDP_ISO8601_LEN);
    p = ngx_cdp_lit(p, "\",\"receivedAt\":\"");
    p = ngx_cpymem(p, ts, NGX_CDP_ISO8601_LEN);

    p = ngx_cdp_lit(p, "\",\"properties\":{");

    first = 1;

    if (is_page) {
        p = ngx_cdp_json_page(p, &url, &u, &search, &hit->ref, &hit->title);
        first = 0;
    }

    for (i = 0; i < hit->nprops; i++) {
        s = &hit->props[i].name;

        /* the standard page properties win over custom ones */

        if (is_page
            && ((s->len == 3 && ngx_strncmp(s->data, "url", 3) == 0)
                || (s->len == 4 && ngx_strncmp(s->data, "path", 4) == 0)
                || (s->len == 5 && ngx_strncmp(s->data, "title", 5) == 0)
                || (s->len == 6 && ngx_strncmp(s->data, "search", 6) == 0)
                || (s->len == 8 && ngx_strncmp(s->data, "referrer", 8) == 0)))
        {
            continue;
        }

        if (!first) {
            *p++ = ',';
        }

        first = 0;

        p = ngx_cdp_json_str(p, s->data, s->len);
        *p++ = ':';
        p = ngx_cdp_json_str(p, hit->props[i].value.data,
                             hit->props[i].value.len);
    }

    p = ngx_cdp_lit(p, "},\"context\":{\"page\":{");
    p = ngx_cdp_json_page(p, &url, &u, &search, &hit->ref, &hit->title);
    *p++ = '}';

    if (u.source.data || u.medium.data || u.name.data || u.term.data
        || u.content.data)
    {
        p = ngx_cdp_lit(p, ",\"campaign\":{");
        first = 1;
        p = ngx_cdp_json_member(p, "source", &u.source, &first);
        p = ngx_cdp_json_member(p, "medium", &u.medium, &first);
        p = ngx_cdp_json_member(p, "name", &u.name, &first);
        p = ngx_cdp_json_member(p, "term", &u.term, &first);
        p = ngx_cdp_json_member(p, "content", &u.content, &first);
        *p++ = '}';
    }

    p = ngx_cdp_json_client(r, ctx, p, &ua, ip, iplen);

    p = ngx_cdp_lit(p, ",\"library\":{\"name\":\"ngx_cdp\",\"version\":\""
                       NGX_CDP_VERSION "\"}}}");

    json->len = p - json->data;

    return NGX_OK;
}


/* "key":"value", for a present value; *first tracks the comma */

static u_char *
ngx_cdp_json_member(u_char *p, const char *key, ngx_cdp_str_t *v,
    ngx_uint_t *first)
{
    if (v->data == NULL) {
        return p;
    }

    if (!*first) {
        *p++ = ',';
    }

    *first = 0;

    *p++ = '"';
    p = ngx_cpymem(p, key, ngx_strlen(key));
    *p++ = '"';
    *p++ = ':';

    return ngx_cdp_json_str(p, v->data, v->len);
}


/*
 * What the context of a browser's event says of the client: its user
 * agent (cut at NGX_CDP_MAX_USER_AGENT), its truncated address into ip
 * (the length is returned, 0 with cdp_store_ip off) and, looked up once,
 * where it is.
 */

static size_t
ngx_cdp_event_client(ngx_http_request_t *r, ngx_http_cdp_ctx_t *ctx,
    ngx_cdp_str_t *ua, u_char *ip)
{
    ngx_http_cdp_loc_conf_t  *lcf;

    ua->data = (u_char *) "";
    ua->len = 0;

    if (r->headers_in.user_agent) {
        ua->data = r->headers_in.user_agent->value.data;
        ua->len = ngx_min(r->headers_in.user_agent->value.len,
                          NGX_CDP_MAX_USER_AGENT);
    }

    ngx_cdp_geo_lookup(r, ctx);

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_cdp_module);

    return (lcf->store_ip == NGX_CDP_STORE_IP_OFF) ? 0
                                                   : ngx_cdp_ip_text(r, ip);
}


/*
 * The members of "context" that every event of a browser has: where it
 * is (with cdp_geoip_db), its consent, its user agent and its truncated
 * address.
 */

static u_char *
ngx_cdp_json_client(ngx_http_request_t *r, ngx_http_cdp_ctx_t *ctx,
    u_char *p, ngx_cdp_str_t *ua, u_char *ip, size_t iplen)
{
    ngx_uint_t  first;

    if (ctx->country.len || ctx->region.len || ctx->city.len) {
        p = ngx_cdp_lit(p, ",\"location\":{");
        first = 1;
        p = ngx_cdp_json_member_str(p, "country", &ctx->country, &first);
        p = ngx_cdp_json_member_str(p, "region", &ctx->region, &first);
        p = ngx_cdp_json_member_str(p, "city", &ctx->city, &first);
        *p++ = '}';
    }

    p = ngx_cdp_json_consent(p, ngx_cdp_consent_eval(r, ctx));

    if (ua->len) {
        p = ngx_cdp_lit(p, ",\"userAgent\":");
        p = ngx_cdp_json_str(p, ua->data, ua->len);
    }

    if (iplen) {
        p = ngx_cdp_lit(p, ",\"ip\":\"");
        p = ngx_cpymem(p, ip, iplen);
        *p++ = '"';
    }

    return p;
}


/* ,"consent":{"analytics":true,...,"source":"default"}: 128 bytes at most */

static u_char *
ngx_cdp_json_consent(u_char *p, ngx_cdp_consent_state_t *st)
{
    const char  *source;

    /* pieces rather than ngx_sprintf(): it is in every event */

    p = ngx_cdp_lit(p, ",\"consent\":{\"analytics\":");
    p = (st->purposes & NGX_CDP_CONSENT_ANALYTICS) ? ngx_cdp_lit(p, "true")
                                                   : ngx_cdp_lit(p, "false");
    p = ngx_cdp_lit(p, ",\"marketing\":");
    p = (st->purposes & NGX_CDP_CONSENT_MARKETING) ? ngx_cdp_lit(p, "true")
                                                   : ngx_cdp_lit(p, "false");
    p = ngx_cdp_lit(p, ",\"personalization\":");
    p = (st->purposes & NGX_CDP_CONSENT_PERSONALIZATION)
        ? ngx_cdp_lit(p, "true") : ngx_cdp_lit(p, "false");
    p = ngx_cdp_lit(p, ",\"source\":\"");

    source = ngx_cdp_consent_source_name(st->source);
    p = ngx_cpymem(p, source, ngx_strlen(source));

    return ngx_cdp_lit(p, "\"}");
}


static u_char *
ngx_cdp_json_member_str(u_char *p, const char *key, ngx_str_t *v,
    ngx_uint_t *first)
{
    ngx_cdp_str_t  s;

    if (v->len == 0) {
        return p;
    }

    s.data = v->data;
    s.len = v->len;

    return ngx_cdp_json_member(p, key, &s, first);
}


/*
 * An identify event for the stream: userId (when known), the traits
 * without e-mail address and phone number (ngx_cdp_identify.c), and the
 * same context as a hit's.
 */

ngx_int_t
ngx_cdp_event_identify(ngx_http_request_t *r, ngx_http_cdp_ctx_t *ctx,
    ngx_str_t *user_id, ngx_str_t *traits, ngx_str_t *json)
{
    u_char                   *p;
    size_t                    len, iplen;
    ngx_time_t               *tp;
    ngx_cdp_str_t             ua;
    u_char                    ip[NGX_CDP_IP_TEXT_MAX];
    u_char                    ts[NGX_CDP_ISO8601_LEN];

    if (ngx_cdp_event_worker_tag() != NGX_OK) {
        return NGX_ERROR;
    }

    iplen = ngx_cdp_event_client(r, ctx, &ua, ip);

    len = 1024 + NGX_CDP_JSON_STR_MAX(user_id->len) + traits->len
          + NGX_CDP_JSON_STR_MAX(ua.len)
          + NGX_CDP_JSON_STR_MAX(ctx->country.len)
          + NGX_CDP_JSON_STR_MAX(ctx->region.len)
          + NGX_CDP_JSON_STR_MAX(ctx->city.len);

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    json->data = p;

    tp = ngx_timeofday();
    ngx_cdp_event_time(ts, tp);

    p = ngx_cdp_lit(p, "{\"type\":\"identify\",\"messageId\":\"id-");
    p = ngx_cpymem(p, ngx_cdp_worker_tag, sizeof(ngx_cdp_worker_tag));
    p = ngx_sprintf(p, "-%uL\"", ++ngx_cdp_message_seq);

    p = ngx_cdp_lit(p, ",\"anonymousId\":\"");
    p = ngx_cpymem(p, ctx->aid, NGX_CDP_ID_HEX_LEN);
    *p++ = '"';

    if (user_id->len) {
        p = ngx_cdp_lit(p, ",\"userId\":");
        p = ngx_cdp_json_str(p, user_id->data, user_id->len);
    }

    p = ngx_cdp_lit(p, ",\"traits\":");

    p = traits->len ? ngx_cpymem(p, traits->data, traits->len)
                    : ngx_cdp_lit(p, "{}");

    p = ngx_cdp_lit(p, ",\"timestamp\":\"");
    p = ngx_cpymem(p, ts, NGX_CDP_ISO8601_LEN);
    p = ngx_cdp_lit(p, "\",\"receivedAt\":\"");
    p = ngx_cpymem(p, ts, NGX_CDP_ISO8601_LEN);
    p = ngx_cdp_lit(p, "\",\"context\":{\"library\":{\"name\":\"ngx_cdp\","
                       "\"version\":\"" NGX_CDP_VERSION "\"}");

    p = ngx_cdp_json_client(r, ctx, p, &ua, ip, iplen);

    p = ngx_cdp_lit(p, "}}");

    json->len = p - json->data;

    return NGX_OK;
}


/*
 * What the browser's record keeps of this hit, as cdp_ingest takes it:
 * "country TAB region TAB city TAB consent" (the places may be empty),
 * then "TAB" and the touch of ngx_cdp_event_touch() when there is one.
 */

ngx_int_t
ngx_cdp_event_attrs(ngx_http_request_t *r, ngx_http_cdp_ctx_t *ctx,
    ngx_str_t *attrs)
{
    u_char  *p;

    ngx_cdp_geo_lookup(r, ctx);

    p = ngx_pnalloc(r->pool, ctx->country.len + ctx->region.len
                             + ctx->city.len + 3 + NGX_CDP_CONSENT_TEXT_MAX
                             + 1 + ctx->touch.len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    attrs->data = p;

    p = ngx_cpymem(p, ctx->country.data, ctx->country.len);
    *p++ = '\t';
    p = ngx_cpymem(p, ctx->region.data, ctx->region.len);
    *p++ = '\t';
    p = ngx_cpymem(p, ctx->city.data, ctx->city.len);
    *p++ = '\t';
    p += ngx_cdp_consent_format(p, ngx_cdp_consent_eval(r, ctx)->purposes);

    if (ctx->touch.len) {
        *p++ = '\t';
        p = ngx_cpymem(p, ctx->touch.data, ctx->touch.len);
    }

    attrs->len = p - attrs->data;

    return NGX_OK;
}


static u_char *
ngx_cdp_json_page(u_char *p, ngx_cdp_str_t *url, ngx_cdp_url_t *u,
    ngx_cdp_str_t *search, ngx_cdp_str_t *ref, ngx_cdp_str_t *title)
{
    p = ngx_cdp_lit(p, "\"url\":");
    p = ngx_cdp_json_str(p, url->data, url->len);
    p = ngx_cdp_lit(p, ",\"path\":");
    p = ngx_cdp_json_str(p, u->path.data, u->path.len);
    p = ngx_cdp_lit(p, ",\"search\":");
    p = ngx_cdp_json_str(p, search->data, search->len);
    p = ngx_cdp_lit(p, ",\"referrer\":");
    p = ngx_cdp_json_str(p, ref->data, ref->len);
    p = ngx_cdp_lit(p, ",\"title\":");

    return ngx_cdp_json_str(p, title->data, title->len);
}


/*
 * The client address as nginx sees it (realip applies), truncated: only
 * the /24 or /48 network is ever written anywhere.
 */

static size_t
ngx_cdp_ip_text(ngx_http_request_t *r, u_char *dst)
{
    struct sockaddr      *sa;
    struct sockaddr_in   *sin;
#if (NGX_HAVE_INET6)
    struct sockaddr_in6  *sin6;
#endif

    sa = r->connection->sockaddr;

    switch (sa->sa_family) {

    case AF_INET:
        sin = (struct sockaddr_in *) sa;
        return ngx_cdp_ip_truncate(AF_INET, (u_char *) &sin->sin_addr, dst);

#if (NGX_HAVE_INET6)
    case AF_INET6:
        sin6 = (struct sockaddr_in6 *) sa;
        return ngx_cdp_ip_truncate(AF_INET6, sin6->sin6_addr.s6_addr, dst);
#endif

    default:
        return 0;
    }
}


/* the host of an absolute URL (the caller compares it case-insensitively) */

static void
ngx_cdp_url_host(ngx_cdp_str_t *url, ngx_cdp_str_t *host)
{
    const u_char  *p, *end;

    host->data = NULL;
    host->len = 0;

    p = ngx_strlcasestrn((u_char *) url->data, (u_char *) url->data + url->len,
                         (u_char *) "://", 3 - 1);
    if (p == NULL) {
        return;
    }

    p += 3;
    end = url->data + url->len;
    host->data = p;

    while (p < end && *p != '/' && *p != '?' && *p != '#') {
        p++;
    }

    host->len = p - host->data;
}


static u_char *
ngx_cdp_touch_field(u_char *p, const u_char *v, size_t len)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        /* the store splits on TAB */
        *p++ = (v[i] < 0x20) ? ' ' : v[i];
    }

    return p;
}


/*
 * The attribution of an event that carries a campaign (utm_* on the page
 * URL) or comes from another site (a referrer on another host):
 * "source TAB medium TAB campaign TAB term TAB content TAB referrer" in
 * ctx->touch, for the profile's first and last touch.  Other events have
 * none.
 */

static ngx_int_t
ngx_cdp_event_touch(ngx_http_request_t *r, ngx_http_cdp_ctx_t *ctx,
    ngx_cdp_str_t *url, ngx_cdp_url_t *u, ngx_cdp_str_t *ref)
{
    u_char         *p;
    ngx_cdp_str_t   uh, rh, external;

    ngx_str_null(&ctx->touch);

    external.data = NULL;
    external.len = 0;

    if (ref->len) {
        ngx_cdp_url_host(url, &uh);
        ngx_cdp_url_host(ref, &rh);

        if (rh.len
            && (uh.len != rh.len
                || ngx_strncasecmp((u_char *) uh.data, (u_char *) rh.data,
                                   rh.len) != 0))
        {
            external = *ref;
        }
    }

    if (!(u->source.data || u->medium.data || u->name.data || u->term.data
          || u->content.data || external.len))
    {
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, u->source.len + u->medium.len + u->name.len
                             + u->term.len + u->content.len + external.len
                             + 5);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ctx->touch.data = p;

    p = ngx_cdp_touch_field(p, u->source.data, u->source.len);
    *p++ = '\t';
    p = ngx_cdp_touch_field(p, u->medium.data, u->medium.len);
    *p++ = '\t';
    p = ngx_cdp_touch_field(p, u->name.data, u->name.len);
    *p++ = '\t';
    p = ngx_cdp_touch_field(p, u->term.data, u->term.len);
    *p++ = '\t';
    p = ngx_cdp_touch_field(p, u->content.data, u->content.len);
    *p++ = '\t';
    p = ngx_cdp_touch_field(p, external.data, external.len);

    ctx->touch.len = p - ctx->touch.data;

    return NGX_OK;
}
