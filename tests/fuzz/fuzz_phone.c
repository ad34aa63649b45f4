
/*
 * ngx_cdp_phone_normalize().  The first input byte picks a default
 * country code (valid or not), the rest is the number.  Checked: the same
 * verdict and output as a plain reference implementation of the contract
 * in ngx_cdp_ident.h; dst, allocated at exactly the documented
 * min(NGX_CDP_PHONE_MAX, len + 1 + cc_len) bytes, is untouched on failure;
 * a result is '+' and 8 to 15 digits, the first not 0, ends with the
 * input's digits, and normalises to itself with any country code; dst ==
 * src gives the same.
 */


#include "fuzz.h"
#include "ngx_cdp_ident.h"


#define FILL  0xee


static const char  *ccs[] = {
    "", "1", "44", "39", "378", "353", "49", "7",
    "0", "044", "4a", "+44", "1234", "999"
};

#define NCCS  (sizeof(ccs) / sizeof(ccs[0]))


static int
ref_digit(u_char c)
{
    return c >= '0' && c <= '9';
}


/* the input's digits, "(0)" groups left out; -1 for a refused character */

static ssize_t
ref_digits(u_char *d, const u_char *p, size_t len, int *plus)
{
    size_t  i, s, e, n;

    s = 0;
    e = len;

    while (s < e && memchr(" \t\n\v\f\r", p[s], 6) != NULL && p[s] != 0) {
        s++;
    }

    while (e > s && memchr(" \t\n\v\f\r", p[e - 1], 6) != NULL
           && p[e - 1] != 0)
    {
        e--;
    }

    *plus = (s < e && p[s] == '+');

    if (*plus) {
        s++;
    }

    n = 0;

    for (i = s; i < e; i++) {
        if (ref_digit(p[i])) {
            d[n++] = p[i];

        } else if (p[i] == '(' && i + 2 < e && p[i + 1] == '0'
                   && p[i + 2] == ')')
        {
            i += 2;

        } else if (p[i] == 0 || memchr(" -./()", p[i], 6) == NULL) {
            return -1;
        }
    }

    return n;
}


static ssize_t
ref_phone(u_char *out, const u_char *p, size_t len, const char *cc)
{
    int      plus, cc_ok;
    size_t   i, cc_len, nd;
    u_char   *d, *digits;
    ssize_t  n;

    digits = malloc(len ? len : 1);
    FUZZ_CHECK(digits != NULL);

    n = ref_digits(digits, p, len, &plus);

    if (n < 0) {
        free(digits);
        return -1;
    }

    d = digits;
    nd = n;
    cc_len = strlen(cc);

    if (!plus && nd >= 2 && d[0] == '0' && d[1] == '0') {
        plus = 1;
        d += 2;
        nd -= 2;
    }

    out[0] = '+';

    if (plus) {
        if (nd > 15) {
            free(digits);
            return -1;
        }

        memcpy(out + 1, d, nd);
        n = 1 + nd;

    } else {
        cc_ok = cc_len >= 1 && cc_len <= 3 && cc[0] != '0';

        for (i = 0; i < cc_len; i++) {
            cc_ok = cc_ok && ref_digit((u_char) cc[i]);
        }

        if (!cc_ok) {
            free(digits);
            return -1;
        }

        if (nd && d[0] == '0' && strcmp(cc, "39") != 0
            && strcmp(cc, "378") != 0)
        {
            d++;
            nd--;

        } else if (strcmp(cc, "1") == 0 && nd == 11 && d[0] == '1') {
            d++;
            nd--;
        }

        if (nd == 0 || cc_len + nd > 15) {
            free(digits);
            return -1;
        }

        memcpy(out + 1, cc, cc_len);
        memcpy(out + 1 + cc_len, d, nd);
        n = 1 + cc_len + nd;
    }

    free(digits);

    if (n < 9 || out[1] == '0') {
        return -1;
    }

    return n;
}


static int
ends_with(const u_char *a, size_t alen, const u_char *b, size_t blen)
{
    return blen <= alen && memcmp(a + alen - blen, b, blen) == 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int           plus;
    size_t        i, len, cc_len, dsize, k;
    u_char        *in, *dst, *inplace, *digits;
    u_char        ref[NGX_CDP_PHONE_MAX], again[NGX_CDP_PHONE_MAX];
    ssize_t       n, r, m, nd;
    const char    *cc;

    if (size == 0) {
        return 0;
    }

    cc = ccs[data[0] % NCCS];
    cc_len = strlen(cc);

    data++;
    len = size - 1;

    dsize = len + 1 + cc_len;

    if (dsize > NGX_CDP_PHONE_MAX) {
        dsize = NGX_CDP_PHONE_MAX;
    }

    in = fuzz_dup(data, len);
    dst = malloc(dsize);
    FUZZ_CHECK(dst != NULL);

    memset(dst, FILL, dsize);

    n = ngx_cdp_phone_normalize(dst, in, len, (const u_char *) cc, cc_len);
    r = ref_phone(ref, data, len, cc);

    FUZZ_CHECK(n == r);
    FUZZ_CHECK(memcmp(in, data, len) == 0);

    if (n < 0) {
        for (i = 0; i < dsize; i++) {
            FUZZ_CHECK(dst[i] == FILL);
        }

        goto inplace;
    }

    FUZZ_CHECK(memcmp(dst, ref, n) == 0);
    FUZZ_CHECK(n >= 1 + NGX_CDP_PHONE_MIN_DIGITS && n <= NGX_CDP_PHONE_MAX);
    FUZZ_CHECK((size_t) n <= len + 1 + cc_len);
    FUZZ_CHECK(dst[0] == '+' && dst[1] != '0');

    for (i = 1; i < (size_t) n; i++) {
        FUZZ_CHECK(dst[i] >= '0' && dst[i] <= '9');
    }

    /* idempotent, with this country code and with none */

    m = ngx_cdp_phone_normalize(again, dst, n, (const u_char *) cc, cc_len);
    FUZZ_CHECK(m == n && memcmp(again, dst, n) == 0);

    m = ngx_cdp_phone_normalize(again, dst, n, NULL, 0);
    FUZZ_CHECK(m == n && memcmp(again, dst, n) == 0);

    /*
     * the result is the input's digits after dropping k <= 2 leading ones
     * ("00", a trunk '0' or '1'), with the country code before them when
     * the number was national
     */

    digits = malloc(len ? len : 1);
    FUZZ_CHECK(digits != NULL);

    nd = ref_digits(digits, data, len, &plus);
    FUZZ_CHECK(nd >= 0);

    if (plus) {
        FUZZ_CHECK((size_t) n == (size_t) nd + 1
                   && memcmp(dst + 1, digits, nd) == 0);

    } else {
        for (k = 0; k <= 2 && k <= (size_t) nd; k++) {
            if (ends_with(dst + 1, n - 1, digits + k, nd - k)
                && ((size_t) n - 1 == nd - k
                    || ((size_t) n - 1 == cc_len + nd - k
                        && memcmp(dst + 1, cc, cc_len) == 0)))
            {
                break;
            }
        }

        FUZZ_CHECK(k <= 2 && k <= (size_t) nd);
    }

    free(digits);

inplace:

    /* dst == src, in a buffer with room for the result */

    inplace = malloc(len > NGX_CDP_PHONE_MAX ? len : NGX_CDP_PHONE_MAX);
    FUZZ_CHECK(inplace != NULL);

    if (len) {
        memcpy(inplace, data, len);
    }

    m = ngx_cdp_phone_normalize(inplace, inplace, len, (const u_char *) cc,
                                cc_len);
    FUZZ_CHECK(m == n);

    if (n >= 0) {
        FUZZ_CHECK(memcmp(inplace, dst, n) == 0);
    }

    free(inplace);
    free(in);
    free(dst);

    return 0;
}
