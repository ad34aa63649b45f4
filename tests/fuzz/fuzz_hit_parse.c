
/*
 * ngx_cdp_hit_parse(): no crash, no access outside the query and its
 * scratch, and a successful parse agrees with a naive re-reading of the
 * query (first value of each field, every property, all limits, UTF-8).
 */


#include "fuzz.h"
#include "ngx_cdp_query.h"


static int
fuzz_key_is(const u_char *k, ssize_t n, const char *name)
{
    return (size_t) n == strlen(name) && memcmp(k, name, n) == 0;
}


static void
fuzz_check_field(ngx_cdp_str_t f, const u_char *scratch, size_t len,
    size_t max)
{
    FUZZ_CHECK(fuzz_within(f, scratch, len));

    if (f.data == NULL) {
        FUZZ_CHECK(f.len == 0);
        return;
    }

    FUZZ_CHECK(f.len <= max);
    FUZZ_CHECK(ngx_cdp_utf8_valid(f.data, f.len));
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int             rc, seen[4];
    size_t          i, j, np, idx;
    u_char          *q, *scratch, *key, *val;
    ssize_t         kn, vn;
    const u_char    *pos;
    ngx_cdp_kv_t    kv;
    ngx_cdp_str_t   *fields[4];
    ngx_cdp_hit_t   hit;
    ngx_cdp_prop_t  *p;

    q = fuzz_dup(data, size);
    scratch = malloc(size ? size : 1);
    FUZZ_CHECK(scratch != NULL);

    rc = ngx_cdp_hit_parse(q, size, &hit, scratch);

    FUZZ_CHECK(rc == NGX_CDP_HIT_OK || rc == NGX_CDP_HIT_MALFORMED
               || rc == NGX_CDP_HIT_TOO_LARGE);

    if (size > NGX_CDP_MAX_QUERY) {
        FUZZ_CHECK(rc == NGX_CDP_HIT_TOO_LARGE);
    }

    if (rc != NGX_CDP_HIT_OK) {
        goto done;
    }

    fuzz_check_field(hit.event, scratch, size, NGX_CDP_MAX_EVENT_NAME);
    fuzz_check_field(hit.url, scratch, size, NGX_CDP_MAX_URL);
    fuzz_check_field(hit.ref, scratch, size, NGX_CDP_MAX_URL);
    fuzz_check_field(hit.title, scratch, size, NGX_CDP_MAX_TITLE);

    FUZZ_CHECK(hit.nprops <= NGX_CDP_MAX_PROPS);

    for (i = 0; i < hit.nprops; i++) {
        p = &hit.props[i];

        fuzz_check_field(p->name, scratch, size, NGX_CDP_MAX_PROP_NAME);
        fuzz_check_field(p->value, scratch, size, NGX_CDP_MAX_PROP_VALUE);
        FUZZ_CHECK(p->name.data != NULL && p->name.len > 0);
        FUZZ_CHECK(p->value.data != NULL);

        for (j = 0; j < p->name.len; j++) {
            FUZZ_CHECK(strchr("abcdefghijklmnopqrstuvwxyz"
                              "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-",
                              p->name.data[j]) != NULL
                       && p->name.data[j] != '\0');
        }

        for (j = 0; j < i; j++) {
            FUZZ_CHECK(!fuzz_str_eq(hit.props[j].name, p->name.data,
                                    p->name.len));
        }
    }

    /*
     * Read the query again, naively, with separate buffers: every value
     * kept must be what its key's first occurrence decodes to, so nothing
     * was overwritten in scratch by a later segment.
     */

    key = malloc(size ? size : 1);
    val = malloc(size ? size : 1);
    FUZZ_CHECK(key != NULL && val != NULL);

    fields[0] = &hit.event;
    fields[1] = &hit.url;
    fields[2] = &hit.ref;
    fields[3] = &hit.title;
    memset(seen, 0, sizeof(seen));

    np = 0;
    pos = q;

    while (ngx_cdp_query_next(&pos, q + size, &kv)) {
        kn = ngx_cdp_unescape(key, kv.key, kv.key_len);
        FUZZ_CHECK(kn >= 0);

        if (fuzz_key_is(key, kn, "e")) {
            idx = 0;

        } else if (fuzz_key_is(key, kn, "url")) {
            idx = 1;

        } else if (fuzz_key_is(key, kn, "ref")) {
            idx = 2;

        } else if (fuzz_key_is(key, kn, "title")) {
            idx = 3;

        } else if (kn >= 2 && key[0] == 'p' && key[1] == '.') {
            idx = 4;

        } else {
            continue;
        }

        vn = ngx_cdp_unescape(val, kv.val, kv.val_len);
        FUZZ_CHECK(vn >= 0);

        if (idx < 4) {
            if (!seen[idx]) {
                seen[idx] = 1;
                FUZZ_CHECK(fuzz_str_eq(*fields[idx], val, vn));
            }

            continue;
        }

        FUZZ_CHECK(np < hit.nprops);
        FUZZ_CHECK(fuzz_str_eq(hit.props[np].name, key + 2, kn - 2));
        FUZZ_CHECK(fuzz_str_eq(hit.props[np].value, val, vn));
        np++;
    }

    FUZZ_CHECK(np == hit.nprops);

    for (idx = 0; idx < 4; idx++) {
        if (!seen[idx]) {
            FUZZ_CHECK(fields[idx]->data == NULL);
        }
    }

    free(key);
    free(val);

done:

    free(q);
    free(scratch);

    return 0;
}
