
/*
 * ngx_cdp_url_parse(): any bytes are a URL; path and search are slices of
 * it (or "/"), and each utm_* value is what its first occurrence decodes
 * to, when that is valid UTF-8.
 *
 * ngx_cdp_target_check() on the same bytes: what it accepts is an http or
 * https URL without spaces, controls, backslashes or userinfo, its host
 * right after the scheme.
 */


#include "fuzz.h"
#include "ngx_cdp_query.h"

#include <ctype.h>


static const char  *fuzz_utm[] = {
    "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content"
};


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int             seen[5];
    size_t          i;
    u_char          *url, *scratch, *key, *val;
    ssize_t         kn, vn;
    const u_char    *pos;
    ngx_cdp_kv_t    kv;
    ngx_cdp_url_t   u;
    ngx_cdp_str_t   *fields[5];
    ngx_cdp_str_t   host;
    size_t          off;

    url = fuzz_dup(data, size);
    scratch = malloc(size ? size : 1);
    FUZZ_CHECK(scratch != NULL);

    ngx_cdp_url_parse(url, size, &u, scratch);

    /* path: "/" or a slice of the URL starting at '/', without ? or # */

    FUZZ_CHECK(u.path.data != NULL && u.path.len > 0);
    FUZZ_CHECK(u.path.data[0] == '/');
    FUZZ_CHECK(u.path.len == 1 || fuzz_within(u.path, url, size));

    if (fuzz_within(u.path, url, size) && size > 0) {
        FUZZ_CHECK(memchr(u.path.data, '?', u.path.len) == NULL);
        FUZZ_CHECK(memchr(u.path.data, '#', u.path.len) == NULL);
    }

    /* search: a slice right after a '?', up to '#' */

    FUZZ_CHECK(u.search.data != NULL);

    if (u.search.len > 0) {
        FUZZ_CHECK(fuzz_within(u.search, url, size));
        FUZZ_CHECK(u.search.data > url && u.search.data[-1] == '?');
        FUZZ_CHECK(memchr(u.search.data, '#', u.search.len) == NULL);
        FUZZ_CHECK(memchr(url, '#', u.search.data - url) == NULL);
    }

    fields[0] = &u.source;
    fields[1] = &u.medium;
    fields[2] = &u.name;
    fields[3] = &u.term;
    fields[4] = &u.content;

    for (i = 0; i < 5; i++) {
        FUZZ_CHECK(fuzz_within(*fields[i], scratch, size));

        if (fields[i]->data) {
            FUZZ_CHECK(ngx_cdp_utf8_valid(fields[i]->data, fields[i]->len));
        }
    }

    /* the campaign again, naively */

    key = malloc(size ? size : 1);
    val = malloc(size ? size : 1);
    FUZZ_CHECK(key != NULL && val != NULL);

    memset(seen, 0, sizeof(seen));
    pos = u.search.data;

    while (ngx_cdp_query_next(&pos, u.search.data + u.search.len, &kv)) {
        kn = ngx_cdp_unescape(key, kv.key, kv.key_len);

        if (kn < 0) {
            continue;
        }

        for (i = 0; i < 5; i++) {
            if ((size_t) kn == strlen(fuzz_utm[i])
                && memcmp(key, fuzz_utm[i], kn) == 0)
            {
                break;
            }
        }

        if (i == 5 || seen[i]) {
            continue;
        }

        seen[i] = 1;

        vn = ngx_cdp_unescape(val, kv.val, kv.val_len);

        if (vn < 0 || !ngx_cdp_utf8_valid(val, vn)) {
            FUZZ_CHECK(fields[i]->data == NULL);

        } else {
            FUZZ_CHECK(fuzz_str_eq(*fields[i], val, vn));
        }
    }

    for (i = 0; i < 5; i++) {
        if (!seen[i]) {
            FUZZ_CHECK(fields[i]->data == NULL && fields[i]->len == 0);
        }
    }

    /* cdp_redirect's check: what it accepts is http(s)://host... */

    if (ngx_cdp_target_check(url, size, &host) == 0) {
        off = (size >= 8 && (url[4] | 0x20) == 's') ? 8 : 7;

        FUZZ_CHECK(size <= NGX_CDP_MAX_URL && size > off);
        FUZZ_CHECK(host.data == url + off && host.len > 0);

        for (i = 0; i < size; i++) {
            FUZZ_CHECK(url[i] > 0x20 && url[i] < 0x7f && url[i] != '\\'
                       && url[i] != '"' && url[i] != '<' && url[i] != '>');
        }

        for (i = 0; i < host.len; i++) {
            FUZZ_CHECK(isalnum(host.data[i]) || host.data[i] == '.'
                       || host.data[i] == '-');
        }

        for (i = off; i < size && url[i] != '/' && url[i] != '?'
                      && url[i] != '#'; i++)
        {
            FUZZ_CHECK(url[i] != '@');
        }
    }

    free(key);
    free(val);
    free(url);
    free(scratch);

    return 0;
}
