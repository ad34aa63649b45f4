
/*
 * Unit tests of ngx_cdp_consent.c, with the same tiny harness as
 * test_codec.c.
 *
 * Every CHECK counts as one test; the last line is "N passed, N failed"
 * and the exit status is non-zero when anything failed.  Output buffers
 * are allocated at the documented size and followed by a canary; inputs
 * are copied to their exact size, so overruns show up under valgrind and
 * `make sanitize`.
 */


#include <limits.h>

#include "ngx_cdp_consent.h"
#include "unit.h"


#define A           NGX_CDP_CONSENT_ANALYTICS
#define M           NGX_CDP_CONSENT_MARKETING
#define P           NGX_CDP_CONSENT_PERSONALIZATION

#define S_NONE      NGX_CDP_CONSENT_SRC_NONE
#define S_COOKIE    NGX_CDP_CONSENT_SRC_COOKIE
#define S_CMP       NGX_CDP_CONSENT_SRC_CMP
#define S_GPC       NGX_CDP_CONSENT_SRC_GPC
#define S_DEFAULT   NGX_CDP_CONSENT_SRC_DEFAULT


/* the text form */

/* parse() of an exact-size copy */

static int
ngx_cdp_parse(const u_char *s, size_t len)
{
    int      rc;
    u_char  *b;

    b = ngx_cdp_dup(s, len);
    rc = ngx_cdp_consent_parse(b, len);
    free(b);

    return rc;
}


static void
test_parse_keywords(void)
{
    CHECK(ngx_cdp_parse(L("all")) == NGX_CDP_CONSENT_ALL);
    CHECK(ngx_cdp_parse(L("ALL")) == NGX_CDP_CONSENT_ALL);
    CHECK(ngx_cdp_parse(L("All")) == NGX_CDP_CONSENT_ALL);
    CHECK(ngx_cdp_parse(L("  all\t")) == NGX_CDP_CONSENT_ALL);
    CHECK(ngx_cdp_parse(L(",all,")) == NGX_CDP_CONSENT_ALL);
    CHECK(NGX_CDP_CONSENT_ALL == 7 && A == 1 && M == 2 && P == 4);

    CHECK(ngx_cdp_parse(L("none")) == 0);
    CHECK(ngx_cdp_parse(L("NONE")) == 0);
    CHECK(ngx_cdp_parse(L("nOnE")) == 0);
    CHECK(ngx_cdp_parse(L(" none ")) == 0);

    /* empty, or nothing but separators */
    CHECK(ngx_cdp_parse(L("")) == 0);
    CHECK(ngx_cdp_consent_parse(NULL, 0) == 0);
    CHECK(ngx_cdp_parse(L(" ")) == 0);
    CHECK(ngx_cdp_parse(L("   \t  ")) == 0);
    CHECK(ngx_cdp_parse(L(",")) == 0);
    CHECK(ngx_cdp_parse(L(", ,\t,")) == 0);

    /* keywords only as the whole value */
    CHECK(ngx_cdp_parse(L("all,analytics")) == -1);
    CHECK(ngx_cdp_parse(L("analytics all")) == -1);
    CHECK(ngx_cdp_parse(L("all all")) == -1);
    CHECK(ngx_cdp_parse(L("none,analytics")) == -1);
    CHECK(ngx_cdp_parse(L("none none")) == -1);
    CHECK(ngx_cdp_parse(L("all,none")) == -1);
}


static void
test_parse_lists(void)
{
    /* one name */
    CHECK(ngx_cdp_parse(L("analytics")) == A);
    CHECK(ngx_cdp_parse(L("marketing")) == M);
    CHECK(ngx_cdp_parse(L("personalization")) == P);

    /* commas, spaces, tabs and any mix of them */
    CHECK(ngx_cdp_parse(L("analytics,marketing")) == (A | M));
    CHECK(ngx_cdp_parse(L("analytics marketing")) == (A | M));
    CHECK(ngx_cdp_parse(L("analytics\tpersonalization")) == (A | P));
    CHECK(ngx_cdp_parse(L("analytics, marketing ,personalization"))
          == (A | M | P));
    CHECK(ngx_cdp_parse(L("analytics,,marketing")) == (A | M));
    CHECK(ngx_cdp_parse(L("  marketing ,\t personalization,  ")) == (M | P));
    CHECK(ngx_cdp_parse(L(",analytics")) == A);
    CHECK(ngx_cdp_parse(L("analytics,")) == A);
    CHECK(ngx_cdp_parse(L("personalization marketing analytics"))
          == NGX_CDP_CONSENT_ALL);

    /* case */
    CHECK(ngx_cdp_parse(L("Analytics,MARKETING")) == (A | M));
    CHECK(ngx_cdp_parse(L("PersonaliZation")) == P);

    /* duplicates */
    CHECK(ngx_cdp_parse(L("analytics,analytics")) == A);
    CHECK(ngx_cdp_parse(L("marketing Marketing MARKETING")) == M);
    CHECK(ngx_cdp_parse(L("analytics,marketing,analytics")) == (A | M));

    /* necessary: accepted, grants nothing */
    CHECK(ngx_cdp_parse(L("necessary")) == 0);
    CHECK(ngx_cdp_parse(L("NECESSARY")) == 0);
    CHECK(ngx_cdp_parse(L("necessary,analytics")) == A);
    CHECK(ngx_cdp_parse(L("necessary necessary marketing")) == M);
}


static void
test_parse_unknown(void)
{
    CHECK(ngx_cdp_parse(L("foo")) == -1);
    CHECK(ngx_cdp_parse(L("analytics,foo")) == -1);
    CHECK(ngx_cdp_parse(L("foo,analytics")) == -1);
    CHECK(ngx_cdp_parse(L("analytic")) == -1);
    CHECK(ngx_cdp_parse(L("analyticss")) == -1);
    CHECK(ngx_cdp_parse(L("alll")) == -1);
    CHECK(ngx_cdp_parse(L("al")) == -1);
    CHECK(ngx_cdp_parse(L("nonee")) == -1);
    CHECK(ngx_cdp_parse(L("personalisation")) == -1);
    CHECK(ngx_cdp_parse(L("1")) == -1);
    CHECK(ngx_cdp_parse(L("7")) == -1);
    CHECK(ngx_cdp_parse(L("true")) == -1);
    CHECK(ngx_cdp_parse(L("-")) == -1);

    /* other separators are not separators */
    CHECK(ngx_cdp_parse(L("analytics;marketing")) == -1);
    CHECK(ngx_cdp_parse(L("analytics|marketing")) == -1);
    CHECK(ngx_cdp_parse(L("analytics+marketing")) == -1);
    CHECK(ngx_cdp_parse(L("analytics\nmarketing")) == -1);
    CHECK(ngx_cdp_parse(L("analytics\r")) == -1);
    CHECK(ngx_cdp_parse(L("analytics=1")) == -1);

    /* NUL and non-ASCII bytes */
    CHECK(ngx_cdp_parse(L("analytics\0")) == -1);
    CHECK(ngx_cdp_parse(L("ana\0lytics")) == -1);
    CHECK(ngx_cdp_parse(L("\0")) == -1);
    CHECK(ngx_cdp_parse(L("all\0")) == -1);
    CHECK(ngx_cdp_parse(L("analytics \xc3\xa9")) == -1);
    CHECK(ngx_cdp_parse(L("\xc1nalytics")) == -1);
    CHECK(ngx_cdp_parse(L("\xe1nalytics")) == -1);

    /* len bounds the value */
    CHECK(ngx_cdp_consent_parse((const u_char *) "analytics,foo", 9) == A);
    CHECK(ngx_cdp_consent_parse((const u_char *) "allx", 3)
          == NGX_CDP_CONSENT_ALL);
}


static int
ngx_cdp_format_is(int purposes, const char *text)
{
    int      ok;
    size_t   n;
    u_char  *b;

    b = ngx_cdp_buf(NGX_CDP_CONSENT_TEXT_MAX);

    n = ngx_cdp_consent_format(b, purposes);

    ok = n == strlen(text) && memcmp(b, text, n) == 0
         && ngx_cdp_canary_ok(b, NGX_CDP_CONSENT_TEXT_MAX);

    free(b);

    return ok;
}


static void
test_format(void)
{
    int     p, ok;
    size_t  n;
    u_char  buf[NGX_CDP_CONSENT_TEXT_MAX];

    CHECK(NGX_CDP_CONSENT_TEXT_MAX
          == sizeof("analytics,marketing,personalization") - 1);

    CHECK(ngx_cdp_format_is(0, "none"));
    CHECK(ngx_cdp_format_is(A, "analytics"));
    CHECK(ngx_cdp_format_is(M, "marketing"));
    CHECK(ngx_cdp_format_is(A | M, "analytics,marketing"));
    CHECK(ngx_cdp_format_is(P, "personalization"));
    CHECK(ngx_cdp_format_is(A | P, "analytics,personalization"));
    CHECK(ngx_cdp_format_is(M | P, "marketing,personalization"));
    CHECK(ngx_cdp_format_is(A | M | P,
                            "analytics,marketing,personalization"));

    /* bits outside the purposes are ignored; negative fails closed */
    CHECK(ngx_cdp_format_is(8, "none"));
    CHECK(ngx_cdp_format_is(8 | M, "marketing"));
    CHECK(ngx_cdp_format_is(0xff, "analytics,marketing,personalization"));
    CHECK(ngx_cdp_format_is(INT_MAX, "analytics,marketing,personalization"));
    CHECK(ngx_cdp_format_is(-1, "none"));
    CHECK(ngx_cdp_format_is(-7, "none"));
    CHECK(ngx_cdp_format_is(INT_MIN, "none"));

    /* parse(format(p)) == p & ALL */
    ok = 1;

    for (p = 0; p < 64; p++) {
        n = ngx_cdp_consent_format(buf, p);

        if (ngx_cdp_parse(buf, n) != (p & NGX_CDP_CONSENT_ALL)) {
            ok = 0;
        }
    }

    CHECK(ok);
}


/* the signed cookie */

static void
ngx_cdp_test_key(ngx_cdp_hmac_key_t *k, u_char first)
{
    int     i;
    u_char  raw[NGX_CDP_KEY_LEN];

    for (i = 0; i < NGX_CDP_KEY_LEN; i++) {
        raw[i] = (u_char) (first + i);
    }

    if (!ngx_cdp_hmac_key_init(k, raw)) {
        fprintf(stderr, "ngx_cdp_hmac_key_init() failed\n");
        exit(2);
    }
}


static ngx_cdp_hmac_key_t  k1, k2;      /* bytes 0x01.., 0x40.. */

/*
 * expected values computed with Python's hmac module:
 *
 *   body = "c1.3.2025-01.1735689600"
 *   tag = hmac.new(key, b"consent:" + body, "sha256").digest()[:12]
 *   body + "." + base64.urlsafe_b64encode(tag).rstrip("=")
 */

#define C_K1      "c1.3.2025-01.1735689600.ZXHlLv7jzUsrp6t5"
#define C_K2      "c1.3.2025-01.1735689600.iEVuFxqVs_PfXLph"
#define C_ZERO    "c1.0.v1.0.3Xh0PgPYm1GPD0Uv"
#define C_DOTS    "c1.7.2024.1.1700000000.22k4obnuga0hitjC"
#define C_MAX                                                                 \
    "c1.5.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.999999999999.stLH3xhdvyDSMIfe"
#define C_MIN     "c1.1...1.694_F_jDb5og31Ai"
#define C_K2B     "c1.7.policy_v2.1767225600._D-dzzzEs3Vh7D_u"

/* the tag of "c1.7.2025-01.1735689600" with k1 */
#define TAG_P7    "Sshm_D2GnimqVABG"
/* HMAC(k1, body) without the "consent:" label */
#define TAG_BARE  "poKcAY9FTZgLXcNh"


/* encode() into an exact-size buffer gives expect */

static int
ngx_cdp_encode_is(const ngx_cdp_hmac_key_t *k, int purposes,
    const char *version, time_t issued, const char *expect)
{
    int      ok;
    size_t   n, vlen;
    u_char  *b, *v;

    vlen = strlen(version);
    v = ngx_cdp_dup((const u_char *) version, vlen);
    b = ngx_cdp_buf(NGX_CDP_CONSENT_COOKIE_MAX);

    n = ngx_cdp_consent_cookie_encode(b, purposes, v, vlen, issued, k);

    ok = n == strlen(expect) && memcmp(b, expect, n) == 0
         && ngx_cdp_canary_ok(b, NGX_CDP_CONSENT_COOKIE_MAX);

    free(v);
    free(b);

    return ok;
}


/* encode() refuses: returns 0 and leaves dst untouched */

static int
ngx_cdp_encode_refused(int purposes, const u_char *version, size_t vlen,
    time_t issued)
{
    int      ok;
    u_char  *b, *v;

    v = ngx_cdp_dup(version, vlen);
    b = ngx_cdp_buf(NGX_CDP_CONSENT_COOKIE_MAX);

    ok = ngx_cdp_consent_cookie_encode(b, purposes, v, vlen, issued, &k1) == 0
         && ngx_cdp_untouched(b, NGX_CDP_CONSENT_COOKIE_MAX);

    free(v);
    free(b);

    return ok;
}


/* decode() of an exact-size copy; out is filled with FILL first */

static int
ngx_cdp_decode(const char *value, size_t len, const ngx_cdp_hmac_key_t *keys,
    size_t nkeys, ngx_cdp_consent_cookie_t *out)
{
    int      rc;
    u_char  *b;

    b = ngx_cdp_dup((const u_char *) value, len);
    memset(out, FILL, sizeof(*out));

    rc = ngx_cdp_consent_cookie_decode(b, len, keys, nkeys, out);

    if (rc == NGX_CDP_CONSENT_VALID || rc == NGX_CDP_CONSENT_VALID_OLD) {
        /* version points into the input: check it before it is freed */
        if (out->version.data < b
            || out->version.data + out->version.len > b + len
            || memcmp(out->version.data,
                      value + (out->version.data - b), out->version.len)
               != 0)
        {
            rc = -100;
        }

        out->version.data = (const u_char *) value
                            + (out->version.data - b);
    }

    free(b);

    return rc;
}


/* decode() with keys k1, k2 */

static int
ngx_cdp_dec(const char *value)
{
    ngx_cdp_hmac_key_t        keys[2];
    ngx_cdp_consent_cookie_t  out;

    keys[0] = k1;
    keys[1] = k2;

    return ngx_cdp_decode(value, strlen(value), keys, 2, &out);
}


static int
ngx_cdp_out_untouched(const ngx_cdp_consent_cookie_t *out)
{
    size_t        i;
    const u_char  *p;

    p = (const u_char *) out;

    for (i = 0; i < sizeof(*out); i++) {
        if (p[i] != FILL) {
            return 0;
        }
    }

    return 1;
}


static int
ngx_cdp_out_is(const ngx_cdp_consent_cookie_t *out, int purposes,
    const char *version, time_t issued)
{
    return out->purposes == purposes
           && out->version.len == strlen(version)
           && memcmp(out->version.data, version, out->version.len) == 0
           && out->issued == issued;
}


static void
test_cookie_known_answers(void)
{
    void  *mac;

    CHECK(NGX_CDP_CONSENT_COOKIE_MIN == 25);
    CHECK(NGX_CDP_CONSENT_COOKIE_MAX == 67);
    CHECK(sizeof(C_MIN) - 1 == NGX_CDP_CONSENT_COOKIE_MIN);
    CHECK(sizeof(C_MAX) - 1 == NGX_CDP_CONSENT_COOKIE_MAX);

    CHECK(ngx_cdp_encode_is(&k1, A | M, "2025-01", 1735689600, C_K1));
    CHECK(ngx_cdp_encode_is(&k2, A | M, "2025-01", 1735689600, C_K2));
    CHECK(ngx_cdp_encode_is(&k1, 0, "v1", 0, C_ZERO));
    CHECK(ngx_cdp_encode_is(&k1, 7, "2024.1", 1700000000, C_DOTS));
    CHECK(ngx_cdp_encode_is(&k1, A | P, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                            NGX_CDP_CONSENT_ISSUED_MAX, C_MAX));
    CHECK(ngx_cdp_encode_is(&k1, A, ".", 1, C_MIN));
    CHECK(ngx_cdp_encode_is(&k2, 7, "policy_v2", 1767225600, C_K2B));

    /* without a prepared context (libcrypto could not make one): same */
    mac = k1.mac;
    k1.mac = NULL;
    CHECK(ngx_cdp_encode_is(&k1, A | M, "2025-01", 1735689600, C_K1));
    CHECK(ngx_cdp_dec(C_K1) == NGX_CDP_CONSENT_VALID);
    k1.mac = mac;
}


static void
test_cookie_encode_refused(void)
{
    u_char  v[NGX_CDP_CONSENT_VERSION_MAX + 1];

    memset(v, 'v', sizeof(v));

    /* version: empty, too long, a character outside [A-Za-z0-9._-] */
    CHECK(ngx_cdp_encode_refused(A, L(""), 1735689600));
    CHECK(ngx_cdp_encode_refused(A, v, NGX_CDP_CONSENT_VERSION_MAX + 1,
                                 1735689600));
    CHECK(ngx_cdp_encode_refused(A, L("2025 01"), 1735689600));
    CHECK(ngx_cdp_encode_refused(A, L("2025/01"), 1735689600));
    CHECK(ngx_cdp_encode_refused(A, L("v:1"), 1735689600));
    CHECK(ngx_cdp_encode_refused(A, L("v+1"), 1735689600));
    CHECK(ngx_cdp_encode_refused(A, L("v~1"), 1735689600));
    CHECK(ngx_cdp_encode_refused(A, L("v;1"), 1735689600));
    CHECK(ngx_cdp_encode_refused(A, L("v=1"), 1735689600));
    CHECK(ngx_cdp_encode_refused(A, L("v\0"), 1735689600));
    CHECK(ngx_cdp_encode_refused(A, L("caf\xc3\xa9"), 1735689600));
    CHECK(ngx_cdp_encode_refused(A, L("\"v1\""), 1735689600));

    /* purposes outside 0 to 7 */
    CHECK(ngx_cdp_encode_refused(-1, L("v1"), 1735689600));
    CHECK(ngx_cdp_encode_refused(8, L("v1"), 1735689600));
    CHECK(ngx_cdp_encode_refused(INT_MIN, L("v1"), 1735689600));

    /* issued: negative, or more than 12 digits */
    CHECK(ngx_cdp_encode_refused(A, L("v1"), -1));
    CHECK(ngx_cdp_encode_refused(A, L("v1"),
                                 NGX_CDP_CONSENT_ISSUED_MAX + 1));

    /* the limits themselves are fine */
    memset(v, 'v', sizeof(v));
    v[NGX_CDP_CONSENT_VERSION_MAX] = '\0';
    CHECK(ngx_cdp_encode_is(&k1, 7, (const char *) v, 0, "c1.7."
                            "vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv.0."
                            "dO2PDoKjN_FsJ7uG"));
}


static void
test_cookie_rotation(void)
{
    ngx_cdp_hmac_key_t        keys[2];
    ngx_cdp_consent_cookie_t  out;

    keys[0] = k1;
    keys[1] = k2;

    /* signed with the current key */
    CHECK(ngx_cdp_decode(C_K1, sizeof(C_K1) - 1, keys, 2, &out)
          == NGX_CDP_CONSENT_VALID);
    CHECK(ngx_cdp_out_is(&out, A | M, "2025-01", 1735689600));

    /* signed with the previous key: accepted, to be re-signed */
    CHECK(ngx_cdp_decode(C_K2, sizeof(C_K2) - 1, keys, 2, &out)
          == NGX_CDP_CONSENT_VALID_OLD);
    CHECK(ngx_cdp_out_is(&out, A | M, "2025-01", 1735689600));

    CHECK(ngx_cdp_decode(C_K2B, sizeof(C_K2B) - 1, keys, 2, &out)
          == NGX_CDP_CONSENT_VALID_OLD);
    CHECK(ngx_cdp_out_is(&out, 7, "policy_v2", 1767225600));

    /* the previous key removed: its cookies no longer verify */
    CHECK(ngx_cdp_decode(C_K2, sizeof(C_K2) - 1, keys, 1, &out)
          == NGX_CDP_CONSENT_FORGED);
    CHECK(ngx_cdp_out_untouched(&out));
    CHECK(ngx_cdp_decode(C_K1, sizeof(C_K1) - 1, keys, 1, &out)
          == NGX_CDP_CONSENT_VALID);

    /* keys in the other order */
    keys[0] = k2;
    keys[1] = k1;
    CHECK(ngx_cdp_decode(C_K1, sizeof(C_K1) - 1, keys, 2, &out)
          == NGX_CDP_CONSENT_VALID_OLD);
    CHECK(ngx_cdp_decode(C_K2, sizeof(C_K2) - 1, keys, 2, &out)
          == NGX_CDP_CONSENT_VALID);
    CHECK(ngx_cdp_decode(C_K1, sizeof(C_K1) - 1, keys, 1, &out)
          == NGX_CDP_CONSENT_FORGED);

    /* no keys at all: nothing verifies */
    CHECK(ngx_cdp_decode(C_K1, sizeof(C_K1) - 1, keys, 0, &out)
          == NGX_CDP_CONSENT_FORGED);
    CHECK(ngx_cdp_out_untouched(&out));

    /* the results are the anonymous id cookie's */
    CHECK(NGX_CDP_CONSENT_VALID == NGX_CDP_COOKIE_VALID
          && NGX_CDP_CONSENT_VALID_OLD == NGX_CDP_COOKIE_VALID_OLD
          && NGX_CDP_CONSENT_FORGED == NGX_CDP_COOKIE_FORGED
          && NGX_CDP_CONSENT_MALFORMED == NGX_CDP_COOKIE_MALFORMED);

    /* every known answer decodes to what made it */
    keys[0] = k1;
    keys[1] = k2;
    CHECK(ngx_cdp_decode(C_ZERO, sizeof(C_ZERO) - 1, keys, 2, &out)
          == NGX_CDP_CONSENT_VALID);
    CHECK(ngx_cdp_out_is(&out, 0, "v1", 0));
    CHECK(ngx_cdp_decode(C_DOTS, sizeof(C_DOTS) - 1, keys, 2, &out)
          == NGX_CDP_CONSENT_VALID);
    CHECK(ngx_cdp_out_is(&out, 7, "2024.1", 1700000000));
    CHECK(ngx_cdp_decode(C_MAX, sizeof(C_MAX) - 1, keys, 2, &out)
          == NGX_CDP_CONSENT_VALID);
    CHECK(ngx_cdp_out_is(&out, A | P, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                         NGX_CDP_CONSENT_ISSUED_MAX));
    CHECK(ngx_cdp_decode(C_MIN, sizeof(C_MIN) - 1, keys, 2, &out)
          == NGX_CDP_CONSENT_VALID);
    CHECK(ngx_cdp_out_is(&out, A, ".", 1));
}


static void
test_cookie_roundtrip(void)
{
    int                       p, i, ok, rc;
    size_t                    n, vlen, k;
    time_t                    issued;
    u_char                    value[NGX_CDP_CONSENT_COOKIE_MAX];
    u_char                    again[NGX_CDP_CONSENT_COOKIE_MAX];
    ngx_cdp_hmac_key_t        keys[2];
    ngx_cdp_consent_cookie_t  out;

    static const char  *versions[] = {
        "1", "v1", "2025-01", "2024.1", "a.b.c", "...", "-", "_",
        "0", "00", "123", "1.2.3", "Policy_2025.06-rev3",
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef"
    };

    static const time_t  times[] = {
        0, 1, 9, 10, 99, 100, 1735689600, 2147483647, 2147483648LL,
        4102444800LL, NGX_CDP_CONSENT_ISSUED_MAX
    };

    keys[0] = k1;
    keys[1] = k2;
    ok = 1;

    for (p = 0; p <= NGX_CDP_CONSENT_ALL; p++) {
        for (i = 0; i < (int) (sizeof(versions) / sizeof(versions[0])); i++) {
            for (k = 0; k < sizeof(times) / sizeof(times[0]); k++) {
                vlen = strlen(versions[i]);
                issued = times[k];

                n = ngx_cdp_consent_cookie_encode(value, p,
                                                  (const u_char *)
                                                      versions[i],
                                                  vlen, issued,
                                                  &keys[(p + i + k) & 1]);
                if (n < NGX_CDP_CONSENT_COOKIE_MIN
                    || n > NGX_CDP_CONSENT_COOKIE_MAX)
                {
                    ok = 0;
                    continue;
                }

                rc = ngx_cdp_decode((const char *) value, n, keys, 2, &out);

                if (rc != (((p + i + k) & 1) ? NGX_CDP_CONSENT_VALID_OLD
                                             : NGX_CDP_CONSENT_VALID)
                    || out.purposes != p
                    || out.version.len != vlen
                    || memcmp(out.version.data, value + 5, vlen) != 0
                    || memcmp(out.version.data, versions[i], vlen) != 0
                    || out.issued != issued)
                {
                    printf("roundtrip: %.*s\n", (int) n, value);
                    ok = 0;
                }

                /* the same bytes again with the key that verified it */
                if (ngx_cdp_consent_cookie_encode(again, p,
                                                  out.version.data, vlen,
                                                  out.issued,
                                                  &keys[rc != 0])
                    != n
                    || memcmp(again, value, n) != 0)
                {
                    ok = 0;
                }

                /* only the other key: forged */
                if (ngx_cdp_decode((const char *) value, n,
                                   &keys[!((p + i + k) & 1)], 1, &out)
                    != NGX_CDP_CONSENT_FORGED)
                {
                    ok = 0;
                }
            }
        }
    }

    CHECK(ok);
}


/* value with the byte at pos replaced by c */

static int
ngx_cdp_dec_with(const char *value, size_t pos, char c)
{
    char  v[NGX_CDP_CONSENT_COOKIE_MAX + 1];

    strcpy(v, value);
    v[pos] = c;

    return ngx_cdp_dec(v);
}


static void
test_cookie_forged(void)
{
    int     all;
    char    c;
    size_t  i, tag;

    /* C_K1 is "c1.3.2025-01.1735689600.ZXHlLv7jzUsrp6t5" */

    /* another purposes digit with the original tag */
    all = 1;

    for (c = '0'; c <= '7'; c++) {
        if (c != '3' && ngx_cdp_dec_with(C_K1, 3, c)
                        != NGX_CDP_CONSENT_FORGED)
        {
            all = 0;
        }
    }

    CHECK(all);
    CHECK(ngx_cdp_dec("c1.7.2025-01.1735689600.ZXHlLv7jzUsrp6t5")
          == NGX_CDP_CONSENT_FORGED);
    CHECK(ngx_cdp_dec("c1.7.2025-01.1735689600." TAG_P7)
          == NGX_CDP_CONSENT_VALID);

    /* another version */
    CHECK(ngx_cdp_dec("c1.3.2025-02.1735689600.ZXHlLv7jzUsrp6t5")
          == NGX_CDP_CONSENT_FORGED);
    CHECK(ngx_cdp_dec("c1.3.2025-1.1735689600.ZXHlLv7jzUsrp6t5")
          == NGX_CDP_CONSENT_FORGED);
    CHECK(ngx_cdp_dec("c1.3.2025-011.1735689600.ZXHlLv7jzUsrp6t5")
          == NGX_CDP_CONSENT_FORGED);
    CHECK(ngx_cdp_dec("c1.3.2025_01.1735689600.ZXHlLv7jzUsrp6t5")
          == NGX_CDP_CONSENT_FORGED);
    CHECK(ngx_cdp_dec("c1.3.2025-01..1735689600.ZXHlLv7jzUsrp6t5")
          == NGX_CDP_CONSENT_FORGED);

    /* another issued time */
    CHECK(ngx_cdp_dec("c1.3.2025-01.1735689601.ZXHlLv7jzUsrp6t5")
          == NGX_CDP_CONSENT_FORGED);
    CHECK(ngx_cdp_dec("c1.3.2025-01.2735689600.ZXHlLv7jzUsrp6t5")
          == NGX_CDP_CONSENT_FORGED);
    CHECK(ngx_cdp_dec("c1.3.2025-01.173568960.ZXHlLv7jzUsrp6t5")
          == NGX_CDP_CONSENT_FORGED);
    CHECK(ngx_cdp_dec("c1.3.2025-01.17356896000.ZXHlLv7jzUsrp6t5")
          == NGX_CDP_CONSENT_FORGED);
    CHECK(ngx_cdp_dec("c1.3.2025-01.0.ZXHlLv7jzUsrp6t5")
          == NGX_CDP_CONSENT_FORGED);

    /* moving a '.' between version and issued changes the signed bytes */
    CHECK(ngx_cdp_dec("c1.3.2025-01.1735689600." TAG_BARE)
          == NGX_CDP_CONSENT_FORGED);

    /* every single-character change of the tag, within the alphabet */
    all = 1;
    tag = sizeof(C_K1) - 1 - NGX_CDP_TAG_B64_LEN;

    for (i = tag; i < sizeof(C_K1) - 1; i++) {
        if (ngx_cdp_dec_with(C_K1, i, C_K1[i] == 'A' ? 'B' : 'A')
            != NGX_CDP_CONSENT_FORGED
            || ngx_cdp_dec_with(C_K1, i, C_K1[i] == '-' ? '_' : '-')
               != NGX_CDP_CONSENT_FORGED)
        {
            all = 0;
        }
    }

    CHECK(all);

    /* an all-zero tag, another cookie's tag, the bare HMAC's tag */
    CHECK(ngx_cdp_dec("c1.3.2025-01.1735689600.AAAAAAAAAAAAAAAA")
          == NGX_CDP_CONSENT_FORGED);
    CHECK(ngx_cdp_dec("c1.3.2025-01.1735689600.3Xh0PgPYm1GPD0Uv")
          == NGX_CDP_CONSENT_FORGED);
    CHECK(ngx_cdp_dec("c1.3.2025-01.1735689600." TAG_BARE)
          == NGX_CDP_CONSENT_FORGED);
}


static void
test_cookie_malformed(void)
{
    char                      v[NGX_CDP_CONSENT_COOKIE_MAX + 8];
    ngx_cdp_hmac_key_t        keys[2];
    ngx_cdp_consent_cookie_t  out;

    keys[0] = k1;
    keys[1] = k2;

    /* the known answer, and out untouched when malformed */
    CHECK(ngx_cdp_dec(C_K1) == NGX_CDP_CONSENT_VALID);
    CHECK(ngx_cdp_decode("c2.3.2025-01.1735689600.ZXHlLv7jzUsrp6t5", 40,
                         keys, 2, &out)
          == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_out_untouched(&out));

    /* empty, truncated, extended */
    CHECK(ngx_cdp_decode("", 0, keys, 2, &out) == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_consent_cookie_decode(NULL, 0, keys, 2, &out)
          == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_decode(C_K1, sizeof(C_K1) - 2, keys, 2, &out)
          == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_decode(C_MIN, sizeof(C_MIN) - 2, keys, 2, &out)
          == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_decode(C_MAX "A", sizeof(C_MAX), keys, 2, &out)
          == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_dec(C_K1 "=") == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_dec(C_K1 ".") == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_dec(" " C_K1) == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_dec(C_K1 " ") == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_dec("\"" C_K1 "\"") == NGX_CDP_CONSENT_MALFORMED);

    /* wrong prefix */
    CHECK(ngx_cdp_dec("c2.3.2025-01.1735689600.ZXHlLv7jzUsrp6t5")
          == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_dec("C1.3.2025-01.1735689600.ZXHlLv7jzUsrp6t5")
          == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_dec("c1:3.2025-01.1735689600.ZXHlLv7jzUsrp6t5")
          == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_dec("x1.3.2025-01.1735689600.ZXHlLv7jzUsrp6t5")
          == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_dec("3.2025-01.1735689600.ZXHlLv7jzUsrp6t5")
          == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_dec("c13.2025-01.1735689600.ZXHlLv7jzUsrp6t5")
          == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_dec("00112233445566778899aabbccddeeff.FrW26Keh5q_iJ6_O")
          == NGX_CDP_CONSENT_MALFORMED);

    /* missing parts */
    CHECK(ngx_cdp_dec("c1.2025-01.1735689600.ZXHlLv7jzUsrp6t5")
          == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_dec("c1..2025-01.1735689600.ZXHlLv7jzUsrp6t5")
          == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_dec("c1.3.1735689600.ZXHlLv7jzUsrp6t5")
          == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_dec("c1.3..1735689600.ZXHlLv7jzUsrp6t5")
          == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_dec("c1.3.2025-01.ZXHlLv7jzUsrp6t5")
          == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_dec("c1.3.2025-01..ZXHlLv7jzUsrp6t5")
          == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_dec("c1.3.v.ZXHlLv7jzUsrp6t5")
          == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_dec("c1.3.2025-01.1735689600")
          == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_dec("c1.3.2025-01.1735689600.")
          == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_dec("c1.3.2025-01.1735689600ZXHlLv7jzUsrp6t5")
          == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_dec("c1.3.2025-01.1735689600.ZXHlLv7jzUsrp6t5.")
          == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_dec("c1.3.ZXHlLv7jzUsrp6t5.ZXHlLv7jzUsrp6t5")
          == NGX_CDP_CONSENT_MALFORMED);

    /* the purposes digit */
    CHECK(ngx_cdp_dec_with(C_K1, 3, '8') == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_dec_with(C_K1, 3, '9') == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_dec_with(C_K1, 3, 'a') == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_dec_with(C_K1, 3, 'f') == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_dec_with(C_K1, 3, '/') == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_dec_with(C_K1, 3, '-') == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_dec_with(C_K1, 3, '.') == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_dec("c1.03.2025-01.1735689600.ZXHlLv7jzUsrp6t5")
          == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_dec("c1.13.2025-01.1735689600.ZXHlLv7jzUsrp6t5")
          == NGX_CDP_CONSENT_MALFORMED);

    /* the version: too long, or a byte outside [A-Za-z0-9._-] */
    CHECK(ngx_cdp_dec("c1.3.ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefg.1735689600."
                      "ZXHlLv7jzUsrp6t5")
          == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_dec("c1.3.ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef.1735689600."
                      "ZXHlLv7jzUsrp6t5")
          == NGX_CDP_CONSENT_FORGED);
    CHECK(ngx_cdp_dec("c1.3.ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef.1735689600."
                      "XCpdj97bp7gnYHMR")
          == NGX_CDP_CONSENT_VALID);
    CHECK(ngx_cdp_dec_with(C_K1, 9, ' ') == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_dec_with(C_K1, 9, '/') == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_dec_with(C_K1, 9, '+') == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_dec_with(C_K1, 9, ':') == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_dec_with(C_K1, 9, '=') == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_dec_with(C_K1, 9, '~') == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_dec_with(C_K1, 9, ';') == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_dec_with(C_K1, 9, '\xc3') == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_dec_with(C_K1, 9, '\x7f') == NGX_CDP_CONSENT_MALFORMED);
    memcpy(v, C_K1, sizeof(C_K1));
    v[9] = '\0';
    CHECK(ngx_cdp_decode(v, sizeof(C_K1) - 1, keys, 2, &out)
          == NGX_CDP_CONSENT_MALFORMED);

    /* issued: leading zeros */
    CHECK(ngx_cdp_dec("c1.3.2025-01.01735689600.ZXHlLv7jzUsrp6t5")
          == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_dec("c1.3.2025-01.00.ZXHlLv7jzUsrp6t5")
          == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_dec("c1.3.2025-01.000000000000.ZXHlLv7jzUsrp6t5")
          == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_dec("c1.0.v1.00.3Xh0PgPYm1GPD0Uv")
          == NGX_CDP_CONSENT_MALFORMED);

    /* issued: too many digits (13), the most is fine (12) */
    CHECK(ngx_cdp_dec("c1.3.v.1735689600000.ZXHlLv7jzUsrp6t5")
          == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_dec("c1.3.v.9999999999999.ZXHlLv7jzUsrp6t5")
          == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_dec("c1.3.v.1000000000000.ZXHlLv7jzUsrp6t5")
          == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_dec("c1.3.v.173568960000.ZXHlLv7jzUsrp6t5")
          == NGX_CDP_CONSENT_FORGED);

    /* issued: not decimal digits */
    CHECK(ngx_cdp_dec("c1.3.2025-01.17356a9600.ZXHlLv7jzUsrp6t5")
          == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_dec("c1.3.2025-01.-1735689600.ZXHlLv7jzUsrp6t5")
          == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_dec("c1.3.2025-01.+1735689600.ZXHlLv7jzUsrp6t5")
          == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_dec("c1.3.2025-01.1735689600 .ZXHlLv7jzUsrp6t5")
          == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_dec("c1.3.2025-01.0x67748580.ZXHlLv7jzUsrp6t5")
          == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_dec("c1.3.2025-01.1e9.ZXHlLv7jzUsrp6t5")
          == NGX_CDP_CONSENT_MALFORMED);

    /* the tag: 15 or 17 characters, padding, another alphabet */
    CHECK(ngx_cdp_dec("c1.3.2025-01.1735689600.ZXHlLv7jzUsrp6t")
          == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_dec("c1.3.2025-01.1735689600.ZXHlLv7jzUsrp6t5A")
          == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_dec("c1.3.2025-01.1735689600.ZXHlLv7jzUsrp6t=")
          == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_dec("c1.3.2025-01.1735689600.ZXHlLv7jzUsrp6+5")
          == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_dec("c1.3.2025-01.1735689600.ZXHlLv7jzUsrp6/5")
          == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_dec("c1.3.2025-01.1735689600.ZXHlLv7j.Usrp6t5")
          == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_dec("c1.3.2025-01.1735689600.ZXHlLv7jzUsrp6t\xc3")
          == NGX_CDP_CONSENT_MALFORMED);
    CHECK(ngx_cdp_dec("c1.3.2025-01.1735689600.ZXHlLv7j zUsrp6t")
          == NGX_CDP_CONSENT_MALFORMED);
    memcpy(v, C_K1, sizeof(C_K1));
    v[sizeof(C_K1) - 2] = '\0';
    CHECK(ngx_cdp_decode(v, sizeof(C_K1) - 1, keys, 2, &out)
          == NGX_CDP_CONSENT_MALFORMED);

    /* malformed whatever the keys */
    CHECK(ngx_cdp_decode("c1.8.2025-01.1735689600.ZXHlLv7jzUsrp6t5", 40,
                         keys, 0, &out)
          == NGX_CDP_CONSENT_MALFORMED);
}


/* the state of a request */

static int
ngx_cdp_state_is(ngx_cdp_consent_state_t st, int purposes, int source)
{
    return st.purposes == purposes && st.source == source;
}


/* the rule of ngx_cdp_consent.h, written out plainly */

static ngx_cdp_consent_state_t
ngx_cdp_ref_resolve(int cookie, int cmp, int gpc, int dflt)
{
    ngx_cdp_consent_state_t  st;

    if (cookie >= 0) {
        st.purposes = cookie & 7;
        st.source = S_COOKIE;

    } else if (cmp >= 0) {
        st.purposes = cmp & 7;
        st.source = S_CMP;

    } else if (dflt < 0) {
        st.purposes = 0;
        st.source = S_NONE;

    } else if (gpc && (dflt & M)) {
        st.purposes = dflt & 7 & ~M;
        st.source = S_GPC;

    } else {
        st.purposes = dflt & 7;
        st.source = S_DEFAULT;
    }

    return st;
}


static void
test_resolve(void)
{
    int                      c, m, g, d, ok;
    ngx_cdp_consent_state_t  st, ref;

    /* cookie beats CMP beats default */
    CHECK(ngx_cdp_state_is(ngx_cdp_consent_resolve(A, 7, 0, 7), A, S_COOKIE));
    CHECK(ngx_cdp_state_is(ngx_cdp_consent_resolve(0, 7, 0, 7), 0, S_COOKIE));
    CHECK(ngx_cdp_state_is(ngx_cdp_consent_resolve(7, 0, 0, 0), 7, S_COOKIE));
    CHECK(ngx_cdp_state_is(ngx_cdp_consent_resolve(M, -1, 0, -1), M,
                           S_COOKIE));
    CHECK(ngx_cdp_state_is(ngx_cdp_consent_resolve(-1, A | M, 0, 7), A | M,
                           S_CMP));
    CHECK(ngx_cdp_state_is(ngx_cdp_consent_resolve(-1, 0, 0, 7), 0, S_CMP));
    CHECK(ngx_cdp_state_is(ngx_cdp_consent_resolve(-1, 7, 0, 0), 7, S_CMP));
    CHECK(ngx_cdp_state_is(ngx_cdp_consent_resolve(-1, P, 0, -1), P, S_CMP));
    CHECK(ngx_cdp_state_is(ngx_cdp_consent_resolve(-1, -1, 0, A | P),
                           A | P, S_DEFAULT));
    CHECK(ngx_cdp_state_is(ngx_cdp_consent_resolve(-1, -1, 0, 0), 0,
                           S_DEFAULT));
    CHECK(ngx_cdp_state_is(ngx_cdp_consent_resolve(-1, -1, 0, 7), 7,
                           S_DEFAULT));

    /* absent everything: no consent */
    CHECK(ngx_cdp_state_is(ngx_cdp_consent_resolve(-1, -1, 0, -1), 0,
                           S_NONE));
    CHECK(ngx_cdp_state_is(ngx_cdp_consent_resolve(-1, -1, 1, -1), 0,
                           S_NONE));

    /* GPC strips marketing from the default only */
    CHECK(ngx_cdp_state_is(ngx_cdp_consent_resolve(-1, -1, 1, 7), A | P,
                           S_GPC));
    CHECK(ngx_cdp_state_is(ngx_cdp_consent_resolve(-1, -1, 1, A | M), A,
                           S_GPC));
    CHECK(ngx_cdp_state_is(ngx_cdp_consent_resolve(-1, -1, 1, M), 0, S_GPC));
    CHECK(ngx_cdp_state_is(ngx_cdp_consent_resolve(-1, -1, 1, A | P), A | P,
                           S_DEFAULT));
    CHECK(ngx_cdp_state_is(ngx_cdp_consent_resolve(-1, -1, 1, 0), 0,
                           S_DEFAULT));
    CHECK(ngx_cdp_state_is(ngx_cdp_consent_resolve(7, -1, 1, 7), 7,
                           S_COOKIE));
    CHECK(ngx_cdp_state_is(ngx_cdp_consent_resolve(M, 0, 1, 0), M,
                           S_COOKIE));
    CHECK(ngx_cdp_state_is(ngx_cdp_consent_resolve(-1, 7, 1, 7), 7, S_CMP));
    CHECK(ngx_cdp_state_is(ngx_cdp_consent_resolve(-1, M, 1, 0), M, S_CMP));

    /* any non-zero gpc counts */
    CHECK(ngx_cdp_state_is(ngx_cdp_consent_resolve(-1, -1, 2, 7), A | P,
                           S_GPC));

    /* any negative value is absent; bits outside the purposes ignored */
    CHECK(ngx_cdp_state_is(ngx_cdp_consent_resolve(-5, INT_MIN, 0, -100), 0,
                           S_NONE));
    CHECK(ngx_cdp_state_is(ngx_cdp_consent_resolve(0xff, -1, 0, -1), 7,
                           S_COOKIE));
    CHECK(ngx_cdp_state_is(ngx_cdp_consent_resolve(8, 7, 0, 7), 0,
                           S_COOKIE));
    CHECK(ngx_cdp_state_is(ngx_cdp_consent_resolve(-1, 8 | A, 0, 7), A,
                           S_CMP));
    CHECK(ngx_cdp_state_is(ngx_cdp_consent_resolve(-1, -1, 1, 0x1f), A | P,
                           S_GPC));

    /* with parse(): a CMP value that does not parse falls through */
    CHECK(ngx_cdp_state_is(
              ngx_cdp_consent_resolve(-1, ngx_cdp_parse(L("marketing")), 1,
                                      ngx_cdp_parse(L("all"))),
              M, S_CMP));
    CHECK(ngx_cdp_state_is(
              ngx_cdp_consent_resolve(-1, ngx_cdp_parse(L("tracking")), 1,
                                      ngx_cdp_parse(L("all"))),
              A | P, S_GPC));
    CHECK(ngx_cdp_state_is(
              ngx_cdp_consent_resolve(-1, ngx_cdp_parse(L("")), 0,
                                      ngx_cdp_parse(L("all"))),
              0, S_CMP));

    /* the whole table against the rule written out */
    ok = 1;

    for (c = -2; c <= 8; c++) {
        for (m = -2; m <= 8; m++) {
            for (g = 0; g <= 1; g++) {
                for (d = -2; d <= 8; d++) {
                    st = ngx_cdp_consent_resolve(c, m, g, d);
                    ref = ngx_cdp_ref_resolve(c, m, g, d);

                    if (!ngx_cdp_state_is(st, ref.purposes, ref.source)
                        || (st.source != S_COOKIE && st.source != S_CMP
                            && g && (st.purposes & M)))
                    {
                        ok = 0;
                    }
                }
            }
        }
    }

    CHECK(ok);
}


static void
test_source_name(void)
{
    CHECK(strcmp(ngx_cdp_consent_source_name(S_COOKIE), "cookie") == 0);
    CHECK(strcmp(ngx_cdp_consent_source_name(S_CMP), "cmp") == 0);
    CHECK(strcmp(ngx_cdp_consent_source_name(S_GPC), "gpc") == 0);
    CHECK(strcmp(ngx_cdp_consent_source_name(S_DEFAULT), "default") == 0);
    CHECK(strcmp(ngx_cdp_consent_source_name(S_NONE), "none") == 0);
    CHECK(strcmp(ngx_cdp_consent_source_name(-1), "unknown") == 0);
    CHECK(strcmp(ngx_cdp_consent_source_name(5), "unknown") == 0);
    CHECK(strcmp(ngx_cdp_consent_source_name(INT_MAX), "unknown") == 0);
    CHECK(strcmp(ngx_cdp_consent_source_name(INT_MIN), "unknown") == 0);

    CHECK(strcmp(ngx_cdp_consent_source_name(
                     ngx_cdp_consent_resolve(-1, -1, 1, 7).source),
                 "gpc") == 0);
    CHECK(strcmp(ngx_cdp_consent_source_name(
                     ngx_cdp_consent_resolve(-1, -1, 0, -1).source),
                 "none") == 0);
}


int
main(void)
{
    ngx_cdp_test_key(&k1, 0x01);
    ngx_cdp_test_key(&k2, 0x40);

    test_parse_keywords();
    test_parse_lists();
    test_parse_unknown();
    test_format();
    test_cookie_known_answers();
    test_cookie_encode_refused();
    test_cookie_rotation();
    test_cookie_roundtrip();
    test_cookie_forged();
    test_cookie_malformed();
    test_resolve();
    test_source_name();

    ngx_cdp_hmac_key_free(&k1);
    ngx_cdp_hmac_key_free(&k2);

    return ngx_cdp_summary();
}
