
/*
 * ngx_cdp_email_normalize() against a plain reference implementation of
 * the contract in ngx_cdp_ident.h: same verdict, same output.  The output
 * fits len bytes (dst is allocated at exactly that size), is untouched on
 * failure, is lower-case valid UTF-8 with one '@', normalises to itself,
 * and normalising in place gives the same.  The same input also goes
 * through ngx_cdp_ident_blocked(), compared with its own reference, and an
 * accepted address through ngx_cdp_ident_hash().
 */


#include "fuzz.h"
#include "ngx_cdp_ident.h"

#include <openssl/rand.h>


#define FILL  0xee


static int
ref_space(u_char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f'
           || c == '\r';
}


static u_char
ref_lower(u_char c)
{
    return (c >= 'A' && c <= 'Z') ? (u_char) (c + ('a' - 'A')) : c;
}


static void
ref_trim(const u_char *in, size_t len, size_t *s, size_t *e)
{
    *s = 0;
    *e = len;

    while (*s < *e && ref_space(in[*s])) {
        (*s)++;
    }

    while (*e > *s && ref_space(in[*e - 1])) {
        (*e)--;
    }
}


static ssize_t
ref_email(u_char *out, const u_char *in, size_t len)
{
    size_t        s, e, n, i, at, ats, dots;
    const u_char  *p, *dom;
    size_t        dlen;

    ref_trim(in, len, &s, &e);

    p = in + s;
    n = e - s;

    if (n == 0 || n > 254 || !ngx_cdp_utf8_valid(p, n)) {
        return -1;
    }

    ats = 0;
    at = 0;

    for (i = 0; i < n; i++) {
        if (p[i] < 0x21 || p[i] == 0x7f) {
            return -1;
        }

        if (p[i] != 0 && memchr("<>()[],;:\"\\", p[i], 11) != NULL) {
            return -1;
        }

        if (p[i] == 0xc2 && i + 1 < n && p[i + 1] >= 0x80
            && p[i + 1] <= 0x9f)
        {
            return -1;
        }

        if (p[i] == '@') {
            ats++;
            at = i;
        }
    }

    if (ats != 1 || at < 1 || at > 64) {
        return -1;
    }

    dom = p + at + 1;
    dlen = n - at - 1;

    if (dlen < 3 || dom[0] == '.' || dom[dlen - 1] == '.') {
        return -1;
    }

    dots = 0;

    for (i = 0; i < dlen; i++) {
        if (dom[i] == '.') {
            dots++;

            if (dom[i + 1] == '.') {
                return -1;
            }
        }
    }

    if (dots == 0) {
        return -1;
    }

    for (i = 0; i < n; i++) {
        out[i] = ref_lower(p[i]);
    }

    return n;
}


static int
ref_eq_ci(const u_char *a, size_t alen, const char *b)
{
    size_t  i;

    if (alen != strlen(b)) {
        return 0;
    }

    for (i = 0; i < alen; i++) {
        if (ref_lower(a[i]) != ref_lower((u_char) b[i])) {
            return 0;
        }
    }

    return 1;
}


static int
ref_blocked(const u_char *in, size_t len)
{
    size_t  s, e, i;

    static const char  *junk[] = {
        "null", "undefined", "anonymous", "guest", "none", "nan", "0", "-1",
        "test@example.com", "x"
    };

    ref_trim(in, len, &s, &e);

    for (i = s; i < e; i++) {
        if (in[i] != '0' && in[i] != '-') {
            break;
        }
    }

    if (i == e) {
        return 1;
    }

    for (i = 0; i < sizeof(junk) / sizeof(junk[0]); i++) {
        if (ref_eq_ci(in + s, e - s, junk[i])) {
            return 1;
        }
    }

    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t               i, ats, size1;
    u_char               *in, *dst, *ref, *again, *inplace;
    u_char               hash[NGX_CDP_IDENT_HASH_LEN];
    ssize_t              n, r, m;
    ngx_cdp_str_t        extra[2];

    static int                 init;
    static ngx_cdp_hmac_key_t  key;

    if (!init) {
        u_char  raw[NGX_CDP_KEY_LEN];

        FUZZ_CHECK(RAND_bytes(raw, sizeof(raw)) == 1);
        FUZZ_CHECK(ngx_cdp_hmac_key_init(&key, raw) == 1);
        init = 1;
    }

    size1 = size ? size : 1;

    in = fuzz_dup(data, size);
    dst = malloc(size1);
    ref = malloc(size1);
    inplace = fuzz_dup(data, size);
    FUZZ_CHECK(dst != NULL && ref != NULL);

    memset(dst, FILL, size1);

    n = ngx_cdp_email_normalize(dst, in, size);
    r = ref_email(ref, data, size);

    FUZZ_CHECK(n == r);
    FUZZ_CHECK(memcmp(in, data, size) == 0);

    if (n < 0) {
        for (i = 0; i < size1; i++) {
            FUZZ_CHECK(dst[i] == FILL);
        }

    } else {
        FUZZ_CHECK((size_t) n <= size && n <= NGX_CDP_EMAIL_MAX);
        FUZZ_CHECK(memcmp(dst, ref, n) == 0);
        FUZZ_CHECK(ngx_cdp_utf8_valid(dst, n));

        ats = 0;

        for (i = 0; i < (size_t) n; i++) {
            FUZZ_CHECK(!(dst[i] >= 'A' && dst[i] <= 'Z'));
            FUZZ_CHECK(dst[i] > ' ' && dst[i] != 0x7f);
            ats += (dst[i] == '@');
        }

        FUZZ_CHECK(ats == 1);

        /* idempotent, into a buffer of exactly the result's size */

        again = malloc(n);
        FUZZ_CHECK(again != NULL);

        m = ngx_cdp_email_normalize(again, dst, n);
        FUZZ_CHECK(m == n && memcmp(again, dst, n) == 0);

        free(again);

        FUZZ_CHECK(ngx_cdp_ident_hash(hash, &key, "email", dst, n) == 1);

        for (i = 0; i < NGX_CDP_IDENT_HASH_LEN; i++) {
            FUZZ_CHECK((hash[i] >= '0' && hash[i] <= '9')
                       || (hash[i] >= 'a' && hash[i] <= 'f'));
        }
    }

    /* in place */

    m = ngx_cdp_email_normalize(inplace, inplace, size);
    FUZZ_CHECK(m == n);

    if (n >= 0) {
        FUZZ_CHECK(memcmp(inplace, dst, n) == 0);
    }

    /* blocked values, with an extra list that needs trimming */

    extra[0].data = (const u_char *) " Test@Example.COM\t";
    extra[0].len = 18;
    extra[1].data = (const u_char *) "X";
    extra[1].len = 1;

    FUZZ_CHECK(ngx_cdp_ident_blocked(in, size, extra, 2)
               == ref_blocked(data, size));

    free(in);
    free(dst);
    free(ref);
    free(inplace);

    return 0;
}
