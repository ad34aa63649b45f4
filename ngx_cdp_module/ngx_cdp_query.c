
/*
 * ngx_cdp: query strings and the URLs they come in (see
 * ngx_cdp_query.h).
 *
 * Everything here works on caller-owned buffers and never allocates, so
 * the same code runs in the nginx worker, the unit tests and the fuzzers.
 */


#include "ngx_cdp_query.h"

#include <string.h>


static int ngx_cdp_prop_name_valid(const u_char *p, size_t len);
static int ngx_cdp_decode_value(u_char *dst, const ngx_cdp_kv_t *kv,
    size_t max, size_t *len);
static int ngx_cdp_utm_field(const u_char *key, size_t len);


static const u_char  ngx_cdp_root_path[] = "/";
static const u_char  ngx_cdp_empty[] = "";


/* query strings */

int
ngx_cdp_query_next(const u_char **pos, const u_char *end, ngx_cdp_kv_t *kv)
{
    const u_char  *p, *start, *eq;

    p = *pos;

    while (p < end && *p == '&') {
        p++;
    }

    if (p >= end) {
        *pos = end;
        return 0;
    }

    start = p;
    eq = NULL;

    while (p < end && *p != '&') {
        if (*p == '=' && eq == NULL) {
            eq = p;
        }

        p++;
    }

    kv->key = start;

    if (eq) {
        kv->key_len = eq - start;
        kv->val = eq + 1;
        kv->val_len = p - eq - 1;

    } else {
        kv->key_len = p - start;
        kv->val = p;
        kv->val_len = 0;
    }

    *pos = p;

    return 1;
}


static int
ngx_cdp_prop_name_valid(const u_char *p, size_t len)
{
    size_t  i;
    u_char  c;

    if (len == 0) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        c = p[i];

        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
            || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-')
        {
            continue;
        }

        return 0;
    }

    return 1;
}


/* decodes a known field's value into dst: NGX_CDP_HIT_* */

static int
ngx_cdp_decode_value(u_char *dst, const ngx_cdp_kv_t *kv, size_t max,
    size_t *len)
{
    ssize_t  n;

    n = ngx_cdp_unescape(dst, kv->val, kv->val_len);

    if (n < 0) {
        return NGX_CDP_HIT_MALFORMED;
    }

    if ((size_t) n > max) {
        return NGX_CDP_HIT_TOO_LARGE;
    }

    if (!ngx_cdp_utf8_valid(dst, n)) {
        return NGX_CDP_HIT_MALFORMED;
    }

    /* NUL nowhere, as the API (JSON's \u0000) refuses it */

    if (memchr(dst, '\0', n) != NULL) {
        return NGX_CDP_HIT_MALFORMED;
    }

    *len = n;

    return NGX_CDP_HIT_OK;
}


/* an event name: no control character at all, at either door */

static int
ngx_cdp_name_clean(const u_char *p, size_t len)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        if (p[i] < 0x20 || p[i] == 0x7f) {
            return 0;
        }
    }

    return 1;
}


/*
 * Scratch use: each segment decodes into at most as many bytes as it has,
 * and what is kept is packed from the start of scratch, so len bytes are
 * always enough.  A key is decoded at the free position and overwritten by
 * its value unless it names a property (the name is kept).
 */

int
ngx_cdp_hit_parse(const u_char *query, size_t len, ngx_cdp_hit_t *hit,
    u_char *scratch)
{
    int             rc;
    size_t          i, max, n, name_len;
    u_char          *p, *name;
    ssize_t         klen;
    const u_char    *pos, *end;
    ngx_cdp_kv_t    kv;
    ngx_cdp_str_t   *field;
    ngx_cdp_prop_t  *prop;

    memset(hit, 0, sizeof(ngx_cdp_hit_t));

    if (len > NGX_CDP_MAX_QUERY) {
        return NGX_CDP_HIT_TOO_LARGE;
    }

    if (len == 0) {
        /* nginx's r->args.data is NULL without a query */
        return NGX_CDP_HIT_OK;
    }

    pos = query;
    end = query + len;
    p = scratch;

    while (ngx_cdp_query_next(&pos, end, &kv)) {

        klen = ngx_cdp_unescape(p, kv.key, kv.key_len);

        if (klen < 0) {
            return NGX_CDP_HIT_MALFORMED;
        }

        field = NULL;
        max = 0;

        if (klen == 1 && p[0] == 'e') {
            field = &hit->event;
            max = NGX_CDP_MAX_EVENT_NAME;

        } else if (klen == 3 && memcmp(p, "url", 3) == 0) {
            field = &hit->url;
            max = NGX_CDP_MAX_URL;

        } else if (klen == 3 && memcmp(p, "ref", 3) == 0) {
            field = &hit->ref;
            max = NGX_CDP_MAX_URL;

        } else if (klen == 5 && memcmp(p, "title", 5) == 0) {
            field = &hit->title;
            max = NGX_CDP_MAX_TITLE;

        } else if ((klen == 3 && memcmp(p, "uid", 3) == 0)
                   || (klen == 5 && memcmp(p, "email", 5) == 0)
                   || (klen == 3 && memcmp(p, "exp", 3) == 0)
                   || (klen == 3 && memcmp(p, "sig", 3) == 0))
        {
            /* identity: a bad value spoils the identity, not the hit */

            if (klen == 5) {
                field = &hit->email;
                max = NGX_CDP_MAX_HIT_EMAIL;

            } else if (p[0] == 'u') {
                field = &hit->uid;
                max = NGX_CDP_MAX_UID;

            } else if (p[0] == 'e') {
                field = &hit->exp;
                max = NGX_CDP_MAX_EXP;

            } else {
                field = &hit->sig;
                max = NGX_CDP_SIG_HEX_LEN;
            }

            rc = ngx_cdp_decode_value(p, &kv, max, &n);

            if (rc != NGX_CDP_HIT_OK) {
                hit->ident_bad = 1;

            } else if (field->data == NULL) {
                field->data = p;
                field->len = n;
                p += n;

            } else {
                /* two values: which one was signed? */
                hit->ident_bad = 1;
            }

            continue;

        } else if (!(klen >= 2 && p[0] == 'p' && p[1] == '.')) {
            /* cache busters and the like */
            continue;
        }

        if (field) {
            /* a repeated field is checked like the first, then dropped */

            rc = ngx_cdp_decode_value(p, &kv, max, &n);

            if (rc != NGX_CDP_HIT_OK) {
                return rc;
            }

            if (field == &hit->event && !ngx_cdp_name_clean(p, n)) {
                return NGX_CDP_HIT_MALFORMED;
            }

            if (field->data == NULL) {
                field->data = p;
                field->len = n;
                p += n;
            }

            continue;
        }

        /* p.NAME */

        name = p + 2;
        name_len = klen - 2;

        if (name_len > NGX_CDP_MAX_PROP_NAME) {
            return NGX_CDP_HIT_TOO_LARGE;
        }

        if (!ngx_cdp_prop_name_valid(name, name_len)) {
            return NGX_CDP_HIT_MALFORMED;
        }

        for (i = 0; i < hit->nprops; i++) {
            if (hit->props[i].name.len == name_len
                && memcmp(hit->props[i].name.data, name, name_len) == 0)
            {
                return NGX_CDP_HIT_MALFORMED;
            }
        }

        if (hit->nprops == NGX_CDP_MAX_PROPS) {
            return NGX_CDP_HIT_TOO_LARGE;
        }

        p += klen;

        rc = ngx_cdp_decode_value(p, &kv, NGX_CDP_MAX_PROP_VALUE, &n);

        if (rc != NGX_CDP_HIT_OK) {
            return rc;
        }

        prop = &hit->props[hit->nprops++];

        prop->name.data = name;
        prop->name.len = name_len;
        prop->value.data = p;
        prop->value.len = n;

        p += n;
    }

    return NGX_CDP_HIT_OK;
}


/* page URLs */

/* the index of a utm_* key in ngx_cdp_url_parse()'s fields, or -1 */

static int
ngx_cdp_utm_field(const u_char *key, size_t len)
{
    if (len < 5 || memcmp(key, "utm_", 4) != 0) {
        return -1;
    }

    key += 4;
    len -= 4;

    if (len == 6 && memcmp(key, "source", 6) == 0) {
        return 0;
    }

    if (len == 6 && memcmp(key, "medium", 6) == 0) {
        return 1;
    }

    if (len == 8 && memcmp(key, "campaign", 8) == 0) {
        return 2;
    }

    if (len == 4 && memcmp(key, "term", 4) == 0) {
        return 3;
    }

    if (len == 7 && memcmp(key, "content", 7) == 0) {
        return 4;
    }

    return -1;
}


/* ASCII case-insensitive: does p start with the lowercase lit? */

static int
ngx_cdp_starts_ci(const u_char *p, size_t len, const char *lit)
{
    size_t  i, n;

    n = strlen(lit);

    if (len < n) {
        return 0;
    }

    for (i = 0; i < n; i++) {
        if ((p[i] | 0x20) != (u_char) lit[i]) {
            return 0;
        }
    }

    return 1;
}


int
ngx_cdp_target_check(const u_char *url, size_t len, ngx_cdp_str_t *host)
{
    size_t         i, n;
    const u_char  *p, *end, *h, *port;

    if (len > NGX_CDP_MAX_URL) {
        return -1;
    }

    for (i = 0; i < len; i++) {
        if (url[i] < 0x21 || url[i] >= 0x7f || url[i] == '\\'
            || url[i] == '"' || url[i] == '<' || url[i] == '>')
        {
            return -1;
        }
    }

    /* '|' 0x20 maps ':' and '/' to themselves */

    if (ngx_cdp_starts_ci(url, len, "http://")) {
        n = 7;

    } else if (ngx_cdp_starts_ci(url, len, "https://")) {
        n = 8;

    } else {
        return -1;
    }

    /* the authority: up to the path, the query or the fragment */

    h = url + n;
    end = url + len;

    for (p = h; p < end && *p != '/' && *p != '?' && *p != '#'; p++) {
        if (*p == '@') {
            return -1;
        }
    }

    port = NULL;

    for (i = 0; h + i < p; i++) {
        if (h[i] == ':') {
            port = h + i;
            break;
        }

        if (!((h[i] >= 'a' && h[i] <= 'z') || (h[i] >= 'A' && h[i] <= 'Z')
              || (h[i] >= '0' && h[i] <= '9') || h[i] == '.' || h[i] == '-'))
        {
            return -1;
        }
    }

    if (i == 0 || h[0] == '.' || h[0] == '-') {
        return -1;
    }

    if (port) {
        if (port + 1 == p || p - port > 6) {
            return -1;
        }

        for (port++; port < p; port++) {
            if (*port < '0' || *port > '9') {
                return -1;
            }
        }
    }

    host->data = h;
    host->len = i;

    return 0;
}


void
ngx_cdp_url_parse(const u_char *url, size_t len, ngx_cdp_url_t *u,
    u_char *scratch)
{
    int            i;
    u_char         *s;
    ssize_t        klen, n;
    unsigned       seen;
    const u_char   *p, *end, *start, *pos;
    ngx_cdp_kv_t   kv;
    ngx_cdp_str_t  *fields[5];

    memset(u, 0, sizeof(ngx_cdp_url_t));

    fields[0] = &u->source;
    fields[1] = &u->medium;
    fields[2] = &u->name;
    fields[3] = &u->term;
    fields[4] = &u->content;

    if (len == 0) {
        /* url may be NULL */
        url = ngx_cdp_empty;
    }

    end = url + len;

    /* skip "scheme://" or a leading "//", then the authority */

    p = url;

    while (p < end && *p != ':' && *p != '/' && *p != '?' && *p != '#') {
        p++;
    }

    if (end - p >= 3 && p[0] == ':' && p[1] == '/' && p[2] == '/') {
        p += 3;

    } else if (p == url && len >= 2 && url[0] == '/' && url[1] == '/') {
        p += 2;

    } else {
        p = url;
    }

    while (p < end && *p != '/' && *p != '?' && *p != '#') {
        p++;
    }

    if (p < end && *p == '/') {
        start = p;

        while (p < end && *p != '?' && *p != '#') {
            p++;
        }

        u->path.data = start;
        u->path.len = p - start;

    } else {
        u->path.data = ngx_cdp_root_path;
        u->path.len = 1;
    }

    u->search.data = ngx_cdp_empty;
    u->search.len = 0;

    if (p == end || *p != '?') {
        return;
    }

    start = ++p;

    while (p < end && *p != '#') {
        p++;
    }

    u->search.data = start;
    u->search.len = p - start;

    /* the campaign: the first occurrence of each utm_* decides */

    pos = start;
    end = p;
    s = scratch;
    seen = 0;

    while (ngx_cdp_query_next(&pos, end, &kv)) {

        klen = ngx_cdp_unescape(s, kv.key, kv.key_len);

        if (klen < 0) {
            continue;
        }

        i = ngx_cdp_utm_field(s, klen);

        if (i < 0 || (seen & (1u << i))) {
            continue;
        }

        seen |= 1u << i;

        n = ngx_cdp_unescape(s, kv.val, kv.val_len);

        if (n < 0 || !ngx_cdp_utf8_valid(s, n)) {
            continue;
        }

        fields[i]->data = s;
        fields[i]->len = n;

        s += n;
    }
}
