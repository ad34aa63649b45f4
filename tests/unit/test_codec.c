
/*
 * Unit tests of the pure codecs, ngx_cdp_text.c, ngx_cdp_crypto.c,
 * ngx_cdp_query.c and ngx_cdp_stamp.c: a tiny harness, no framework.
 *
 * Every CHECK counts as one test.  Failures are printed as they happen;
 * the last line is "N passed, N failed" and the exit status is non-zero
 * when anything failed.  Buffers handed to the codec are allocated at
 * their exact size and followed by a canary, so overruns show up here and
 * under valgrind.
 */


#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include "ngx_cdp_text.h"
#include "ngx_cdp_crypto.h"
#include "ngx_cdp_query.h"
#include "ngx_cdp_stamp.h"
#include "unit.h"


#define CHECK_STR(s, lit)                                                     \
    ngx_cdp_check(ngx_cdp_str_is(s, lit, sizeof(lit) - 1), __FILE__,          \
                  __LINE__, #s " == \"" lit "\"")

#define CHECK_ABSENT(s)                                                       \
    ngx_cdp_check((s).data == NULL && (s).len == 0, __FILE__, __LINE__,       \
                  #s " is absent")


static int
ngx_cdp_str_is(ngx_cdp_str_t s, const char *lit, size_t len)
{
    return s.data != NULL && s.len == len && memcmp(s.data, lit, len) == 0;
}


static int
ngx_cdp_within(ngx_cdp_str_t s, const u_char *b, size_t len)
{
    return s.data == NULL
           || (s.data >= b && s.data + s.len <= b + len);
}


/* hex, HMAC, key derivation */

static void
test_hex(void)
{
    u_char        out[8], *end;
    const u_char  in[] = { 0x00, 0x9f, 0xa0, 0xff };

    end = ngx_cdp_hex(out, in, 4);
    CHECK(end == out + 8);
    CHECK(memcmp(out, "009fa0ff", 8) == 0);

    end = ngx_cdp_hex(out, in, 0);
    CHECK(end == out);
}


static void
ngx_cdp_key1(u_char key[NGX_CDP_KEY_LEN])
{
    int  i;

    for (i = 0; i < NGX_CDP_KEY_LEN; i++) {
        key[i] = (u_char) (i + 1);
    }
}


static void
ngx_cdp_key2(u_char key[NGX_CDP_KEY_LEN])
{
    int  i;

    for (i = 0; i < NGX_CDP_KEY_LEN; i++) {
        key[i] = (u_char) (0x40 + i);
    }
}


static int
ngx_cdp_hex_is(const u_char *b, size_t len, const char *hex)
{
    u_char  out[128];

    if (len * 2 > sizeof(out) || strlen(hex) != len * 2) {
        return 0;
    }

    ngx_cdp_hex(out, b, len);

    return memcmp(out, hex, len * 2) == 0;
}


static void
test_hmac(void)
{
    int                 i;
    void               *mac;
    u_char              key[NGX_CDP_KEY_LEN], out[32];
    ngx_cdp_hmac_key_t  k;

    /* expected values computed with Python's hmac module */

    ngx_cdp_key1(key);
    CHECK(ngx_cdp_hmac_key_init(&k, key) == 1 && k.mac != NULL);

    /* the prepared context is restarted on every call */

    for (i = 0; i < 3; i++) {
        ngx_cdp_hmac(out, &k, (const u_char *) "hello world", 11);
        CHECK(ngx_cdp_hex_is(out, 32, "887a7b614c624d02461f97d282ef7e5e"
                                      "2e0156143764416b5eb9cf87a95736a1"));

        ngx_cdp_hmac(out, &k, (const u_char *) "", 0);
        CHECK(ngx_cdp_hex_is(out, 32, "462476a897ddfdbd40d1420e08a5bcfe"
                                      "eb25c3e2ade6a0a9083b327b9ef9fca1"));
    }

    /* without a context (libcrypto failed to prepare one): same result */

    mac = k.mac;
    k.mac = NULL;
    ngx_cdp_hmac(out, &k, (const u_char *) "hello world", 11);
    CHECK(ngx_cdp_hex_is(out, 32, "887a7b614c624d02461f97d282ef7e5e"
                                  "2e0156143764416b5eb9cf87a95736a1"));
    k.mac = mac;

    ngx_cdp_hmac_key_free(&k);
    CHECK(k.mac == NULL);
}


static void
ngx_cdp_hkeys(ngx_cdp_hmac_key_t *hk, u_char keys[][NGX_CDP_KEY_LEN],
    size_t n)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        if (!ngx_cdp_hmac_key_init(&hk[i], keys[i])) {
            fprintf(stderr, "ngx_cdp_hmac_key_init() failed\n");
            exit(2);
        }
    }
}


static void
ngx_cdp_hkeys_free(ngx_cdp_hmac_key_t *hk, size_t n)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        ngx_cdp_hmac_key_free(&hk[i]);
    }
}


static void
test_derive_key(void)
{
    u_char  out[NGX_CDP_KEY_LEN], out2[NGX_CDP_KEY_LEN];

    ngx_cdp_derive_key(out, (const u_char *) "s3cret-material", 15,
                       "cdp cookie v1");
    CHECK(ngx_cdp_hex_is(out, 32, "dd133a79d39e6d5f0165996ff2c7333d"
                                  "32f249d29ee6cbc9b1cadbf7192cc954"));

    /* another label gives another key */
    ngx_cdp_derive_key(out2, (const u_char *) "s3cret-material", 15,
                       "cdp cookie v2");
    CHECK(memcmp(out, out2, NGX_CDP_KEY_LEN) != 0);
}


/* the anonymous id cookie */

static const u_char  test_id[NGX_CDP_ID_LEN] = {
    0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77,
    0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff
};

#define TEST_ID_HEX  "00112233445566778899aabbccddeeff"
#define COOKIE_K1    TEST_ID_HEX ".FrW26Keh5q_iJ6_O"
#define COOKIE_K2    TEST_ID_HEX ".zw5lghZsw6LD1uVU"


static int
ngx_cdp_decode(const char *value, size_t len, u_char keys[][NGX_CDP_KEY_LEN],
    size_t nkeys, u_char id_hex[NGX_CDP_ID_HEX_LEN])
{
    int                 rc;
    u_char             *b;
    ngx_cdp_hmac_key_t  hk[NGX_CDP_MAX_KEYS];

    ngx_cdp_hkeys(hk, keys, nkeys);

    b = ngx_cdp_dup(value, len);
    rc = ngx_cdp_cookie_decode(b, len, hk, nkeys, id_hex);
    free(b);

    ngx_cdp_hkeys_free(hk, nkeys);

    return rc;
}


static void
test_cookie_encode(void)
{
    u_char              key[1][NGX_CDP_KEY_LEN], *b;
    ngx_cdp_hmac_key_t  hk;

    CHECK(NGX_CDP_COOKIE_LEN == 49);

    b = ngx_cdp_buf(NGX_CDP_COOKIE_LEN);

    ngx_cdp_key1(key[0]);
    ngx_cdp_hkeys(&hk, key, 1);
    ngx_cdp_cookie_encode(b, test_id, &hk);
    ngx_cdp_hkeys_free(&hk, 1);
    CHECK(memcmp(b, COOKIE_K1, NGX_CDP_COOKIE_LEN) == 0);
    CHECK(ngx_cdp_canary_ok(b, NGX_CDP_COOKIE_LEN));

    ngx_cdp_key2(key[0]);
    ngx_cdp_hkeys(&hk, key, 1);
    ngx_cdp_cookie_encode(b, test_id, &hk);
    ngx_cdp_hkeys_free(&hk, 1);
    CHECK(memcmp(b, COOKIE_K2, NGX_CDP_COOKIE_LEN) == 0);
    CHECK(ngx_cdp_canary_ok(b, NGX_CDP_COOKIE_LEN));

    free(b);
}


static void
test_cookie_rotation(void)
{
    u_char  keys[NGX_CDP_MAX_KEYS][NGX_CDP_KEY_LEN];
    u_char  id_hex[NGX_CDP_ID_HEX_LEN];

    ngx_cdp_key1(keys[0]);
    ngx_cdp_key2(keys[1]);

    /* signed with the current key */
    memset(id_hex, 'X', sizeof(id_hex));
    CHECK(ngx_cdp_decode(COOKIE_K1, NGX_CDP_COOKIE_LEN, keys, 2, id_hex)
          == NGX_CDP_COOKIE_VALID);
    CHECK(memcmp(id_hex, TEST_ID_HEX, NGX_CDP_ID_HEX_LEN) == 0);

    /* signed with the previous key, still accepted (to be re-signed) */
    memset(id_hex, 'X', sizeof(id_hex));
    CHECK(ngx_cdp_decode(COOKIE_K2, NGX_CDP_COOKIE_LEN, keys, 2, id_hex)
          == NGX_CDP_COOKIE_VALID_OLD);
    CHECK(memcmp(id_hex, TEST_ID_HEX, NGX_CDP_ID_HEX_LEN) == 0);

    /* the previous key removed: its cookies no longer verify */
    memset(id_hex, 'X', sizeof(id_hex));
    CHECK(ngx_cdp_decode(COOKIE_K2, NGX_CDP_COOKIE_LEN, keys, 1, id_hex)
          == NGX_CDP_COOKIE_FORGED);
    CHECK(id_hex[0] == 'X' && id_hex[NGX_CDP_ID_HEX_LEN - 1] == 'X');

    CHECK(ngx_cdp_decode(COOKIE_K1, NGX_CDP_COOKIE_LEN, keys, 1, id_hex)
          == NGX_CDP_COOKIE_VALID);

    /* keys in the other order */
    ngx_cdp_key2(keys[0]);
    ngx_cdp_key1(keys[1]);
    CHECK(ngx_cdp_decode(COOKIE_K1, NGX_CDP_COOKIE_LEN, keys, 2, id_hex)
          == NGX_CDP_COOKIE_VALID_OLD);
    CHECK(ngx_cdp_decode(COOKIE_K2, NGX_CDP_COOKIE_LEN, keys, 2, id_hex)
          == NGX_CDP_COOKIE_VALID);
    CHECK(ngx_cdp_decode(COOKIE_K1, NGX_CDP_COOKIE_LEN, keys, 1, id_hex)
          == NGX_CDP_COOKIE_FORGED);

    /* no keys at all: nothing verifies */
    CHECK(ngx_cdp_decode(COOKIE_K1, NGX_CDP_COOKIE_LEN, keys, 0, id_hex)
          == NGX_CDP_COOKIE_FORGED);
}


static void
test_cookie_roundtrip(void)
{
    int                 i, j, ok;
    u_char              keys[NGX_CDP_MAX_KEYS][NGX_CDP_KEY_LEN];
    u_char              id[NGX_CDP_ID_LEN], hex[NGX_CDP_ID_HEX_LEN];
    u_char              id_hex[NGX_CDP_ID_HEX_LEN];
    u_char              value[NGX_CDP_COOKIE_LEN];
    ngx_cdp_hmac_key_t  hk[NGX_CDP_MAX_KEYS];

    ngx_cdp_key1(keys[0]);
    ngx_cdp_key2(keys[1]);
    ngx_cdp_hkeys(hk, keys, 2);

    ok = 1;

    for (i = 0; i < 256; i++) {
        for (j = 0; j < NGX_CDP_ID_LEN; j++) {
            id[j] = (u_char) (i * 31 + j * 7 + (i >> 3));
        }

        ngx_cdp_hex(hex, id, NGX_CDP_ID_LEN);

        ngx_cdp_cookie_encode(value, id, &hk[i & 1]);

        if (ngx_cdp_cookie_decode(value, sizeof(value), hk, 2, id_hex)
            != ((i & 1) ? NGX_CDP_COOKIE_VALID_OLD : NGX_CDP_COOKIE_VALID)
            || memcmp(id_hex, hex, NGX_CDP_ID_HEX_LEN) != 0)
        {
            ok = 0;
        }

        /* only the key that signed it, in position 0 */
        if (ngx_cdp_cookie_decode(value, sizeof(value), &hk[i & 1], 1,
                                  id_hex)
            != NGX_CDP_COOKIE_VALID)
        {
            ok = 0;
        }

        /* only the other key */
        if (ngx_cdp_cookie_decode(value, sizeof(value), &hk[!(i & 1)], 1,
                                  id_hex)
            != NGX_CDP_COOKIE_FORGED)
        {
            ok = 0;
        }
    }

    ngx_cdp_hkeys_free(hk, 2);

    CHECK(ok);
}


static void
test_cookie_forged(void)
{
    char    v[NGX_CDP_COOKIE_LEN + 1];
    u_char  keys[NGX_CDP_MAX_KEYS][NGX_CDP_KEY_LEN];
    u_char  id_hex[NGX_CDP_ID_HEX_LEN];
    size_t  i;
    int     all;

    ngx_cdp_key1(keys[0]);
    ngx_cdp_key2(keys[1]);

    /* one tag character changed, still in the alphabet */
    memcpy(v, COOKIE_K1, sizeof(v));
    v[NGX_CDP_COOKIE_LEN - 1] = 'P';
    memset(id_hex, 'X', sizeof(id_hex));
    CHECK(ngx_cdp_decode(v, NGX_CDP_COOKIE_LEN, keys, 2, id_hex)
          == NGX_CDP_COOKIE_FORGED);
    CHECK(id_hex[0] == 'X');

    /* another id with the original tag */
    memcpy(v, COOKIE_K1, sizeof(v));
    v[0] = '1';
    CHECK(ngx_cdp_decode(v, NGX_CDP_COOKIE_LEN, keys, 2, id_hex)
          == NGX_CDP_COOKIE_FORGED);

    /* the tag of key 1 moved onto the id is not a tag of key 2 */
    memcpy(v, COOKIE_K1, sizeof(v));
    CHECK(ngx_cdp_decode(v, NGX_CDP_COOKIE_LEN, keys + 1, 1, id_hex)
          == NGX_CDP_COOKIE_FORGED);

    /* an all-zero tag */
    memcpy(v, TEST_ID_HEX ".AAAAAAAAAAAAAAAA", sizeof(v));
    CHECK(ngx_cdp_decode(v, NGX_CDP_COOKIE_LEN, keys, 2, id_hex)
          == NGX_CDP_COOKIE_FORGED);

    /* every single-character change of the tag is caught */
    all = 1;

    for (i = NGX_CDP_ID_HEX_LEN + 1; i < NGX_CDP_COOKIE_LEN; i++) {
        memcpy(v, COOKIE_K1, sizeof(v));
        v[i] = (v[i] == 'A') ? 'B' : 'A';

        if (ngx_cdp_decode(v, NGX_CDP_COOKIE_LEN, keys, 2, id_hex)
            != NGX_CDP_COOKIE_FORGED)
        {
            all = 0;
        }
    }

    CHECK(all);
}


static void
test_cookie_malformed(void)
{
    char    v[NGX_CDP_COOKIE_LEN + 2];
    u_char  keys[NGX_CDP_MAX_KEYS][NGX_CDP_KEY_LEN];
    u_char  id_hex[NGX_CDP_ID_HEX_LEN];

    ngx_cdp_key1(keys[0]);
    ngx_cdp_key2(keys[1]);

    /* truncated, extended, empty */
    CHECK(ngx_cdp_decode(COOKIE_K1, NGX_CDP_COOKIE_LEN - 1, keys, 2, id_hex)
          == NGX_CDP_COOKIE_MALFORMED);
    CHECK(ngx_cdp_decode(COOKIE_K1, NGX_CDP_ID_HEX_LEN, keys, 2, id_hex)
          == NGX_CDP_COOKIE_MALFORMED);
    CHECK(ngx_cdp_decode("", 0, keys, 2, id_hex)
          == NGX_CDP_COOKIE_MALFORMED);
    memcpy(v, COOKIE_K1 "A", NGX_CDP_COOKIE_LEN + 1);
    CHECK(ngx_cdp_decode(v, NGX_CDP_COOKIE_LEN + 1, keys, 2, id_hex)
          == NGX_CDP_COOKIE_MALFORMED);

    /* base64 padding makes it longer */
    memcpy(v, COOKIE_K1 "=", NGX_CDP_COOKIE_LEN + 1);
    CHECK(ngx_cdp_decode(v, NGX_CDP_COOKIE_LEN + 1, keys, 2, id_hex)
          == NGX_CDP_COOKIE_MALFORMED);

    /* uppercase hex is not our encoding, even with a valid tag */
    memcpy(v, COOKIE_K1, NGX_CDP_COOKIE_LEN);
    v[20] = 'A';
    CHECK(ngx_cdp_decode(v, NGX_CDP_COOKIE_LEN, keys, 2, id_hex)
          == NGX_CDP_COOKIE_MALFORMED);
    memcpy(v, "00112233445566778899AABBCCDDEEFF.FrW26Keh5q_iJ6_O",
           NGX_CDP_COOKIE_LEN);
    CHECK(ngx_cdp_decode(v, NGX_CDP_COOKIE_LEN, keys, 2, id_hex)
          == NGX_CDP_COOKIE_MALFORMED);

    /* not hex */
    memcpy(v, COOKIE_K1, NGX_CDP_COOKIE_LEN);
    v[0] = 'g';
    CHECK(ngx_cdp_decode(v, NGX_CDP_COOKIE_LEN, keys, 2, id_hex)
          == NGX_CDP_COOKIE_MALFORMED);
    v[0] = ' ';
    CHECK(ngx_cdp_decode(v, NGX_CDP_COOKIE_LEN, keys, 2, id_hex)
          == NGX_CDP_COOKIE_MALFORMED);

    /* wrong separator */
    memcpy(v, COOKIE_K1, NGX_CDP_COOKIE_LEN);
    v[NGX_CDP_ID_HEX_LEN] = ':';
    CHECK(ngx_cdp_decode(v, NGX_CDP_COOKIE_LEN, keys, 2, id_hex)
          == NGX_CDP_COOKIE_MALFORMED);
    v[NGX_CDP_ID_HEX_LEN] = '-';
    CHECK(ngx_cdp_decode(v, NGX_CDP_COOKIE_LEN, keys, 2, id_hex)
          == NGX_CDP_COOKIE_MALFORMED);
    v[NGX_CDP_ID_HEX_LEN] = '\0';
    CHECK(ngx_cdp_decode(v, NGX_CDP_COOKIE_LEN, keys, 2, id_hex)
          == NGX_CDP_COOKIE_MALFORMED);

    /* standard base64 and padding characters are not base64url */
    memcpy(v, COOKIE_K1, NGX_CDP_COOKIE_LEN);
    v[NGX_CDP_COOKIE_LEN - 1] = '+';
    CHECK(ngx_cdp_decode(v, NGX_CDP_COOKIE_LEN, keys, 2, id_hex)
          == NGX_CDP_COOKIE_MALFORMED);
    v[NGX_CDP_COOKIE_LEN - 1] = '/';
    CHECK(ngx_cdp_decode(v, NGX_CDP_COOKIE_LEN, keys, 2, id_hex)
          == NGX_CDP_COOKIE_MALFORMED);
    v[NGX_CDP_COOKIE_LEN - 1] = '=';
    CHECK(ngx_cdp_decode(v, NGX_CDP_COOKIE_LEN, keys, 2, id_hex)
          == NGX_CDP_COOKIE_MALFORMED);
    memcpy(v, COOKIE_K1, NGX_CDP_COOKIE_LEN);
    v[NGX_CDP_ID_HEX_LEN + 1] = '.';
    CHECK(ngx_cdp_decode(v, NGX_CDP_COOKIE_LEN, keys, 2, id_hex)
          == NGX_CDP_COOKIE_MALFORMED);
    v[NGX_CDP_ID_HEX_LEN + 1] = '\xc3';
    CHECK(ngx_cdp_decode(v, NGX_CDP_COOKIE_LEN, keys, 2, id_hex)
          == NGX_CDP_COOKIE_MALFORMED);
}


/* UTF-8 */

static int
ngx_cdp_utf8(const char *s, size_t len)
{
    int     rc;
    u_char  *b;

    b = ngx_cdp_dup(s, len);
    rc = ngx_cdp_utf8_valid(b, len);
    free(b);

    return rc;
}

#define UTF8_VALID(lit)    CHECK(ngx_cdp_utf8(lit, sizeof(lit) - 1) == 1)
#define UTF8_INVALID(lit)  CHECK(ngx_cdp_utf8(lit, sizeof(lit) - 1) == 0)


static void
test_utf8(void)
{
    UTF8_VALID("");
    UTF8_VALID("plain ascii ~\x7f");
    UTF8_VALID("nul \0 inside");
    UTF8_VALID("\xc2\x80");                 /* U+0080 */
    UTF8_VALID("caf\xc3\xa9");              /* U+00E9 */
    UTF8_VALID("\xdf\xbf");                 /* U+07FF */
    UTF8_VALID("\xe0\xa0\x80");             /* U+0800 */
    UTF8_VALID("\xe2\x82\xac");             /* U+20AC */
    UTF8_VALID("\xed\x9f\xbf");             /* U+D7FF */
    UTF8_VALID("\xee\x80\x80");             /* U+E000 */
    UTF8_VALID("\xef\xbf\xbf");             /* U+FFFF */
    UTF8_VALID("\xf0\x90\x80\x80");         /* U+10000 */
    UTF8_VALID("\xf0\x9d\x84\x9e");         /* U+1D11E */
    UTF8_VALID("\xf4\x8f\xbf\xbf");         /* U+10FFFF */

    UTF8_INVALID("\x80");                   /* lone continuation */
    UTF8_INVALID("a\xbf");
    UTF8_INVALID("\xc0\x80");               /* overlong NUL */
    UTF8_INVALID("\xc1\xbf");               /* overlong U+007F */
    UTF8_INVALID("\xe0\x80\x80");           /* overlong */
    UTF8_INVALID("\xe0\x9f\xbf");           /* overlong U+07FF */
    UTF8_INVALID("\xf0\x80\x80\x80");       /* overlong */
    UTF8_INVALID("\xf0\x8f\xbf\xbf");       /* overlong U+FFFF */
    UTF8_INVALID("\xed\xa0\x80");           /* U+D800 */
    UTF8_INVALID("\xed\xbf\xbf");           /* U+DFFF */
    UTF8_INVALID("\xed\xa0\xbd\xed\xb2\xa9");   /* CESU-8 pair */
    UTF8_INVALID("\xf4\x90\x80\x80");       /* U+110000 */
    UTF8_INVALID("\xf5\x80\x80\x80");
    UTF8_INVALID("\xf8\x88\x80\x80\x80");   /* 5-byte form */
    UTF8_INVALID("\xfe");
    UTF8_INVALID("\xff");
    UTF8_INVALID("\xc3");                   /* truncated at the end */
    UTF8_INVALID("ok\xe2\x82");
    UTF8_INVALID("\xf0\x9d\x84");
    UTF8_INVALID("\xc3\x41");               /* bad continuation */
    UTF8_INVALID("\xe2\x28\xa1");
    UTF8_INVALID("\xf0\x9d\x84\x41");
    UTF8_INVALID("\xe2\x82\xac\xac");       /* one continuation too many */
}


/* percent-decoding */

static ssize_t
ngx_cdp_unesc(const char *s, size_t len, u_char *out, size_t out_len)
{
    u_char   *src, *dst;
    ssize_t  n;

    src = ngx_cdp_dup(s, len);
    dst = ngx_cdp_buf(len);

    n = ngx_cdp_unescape(dst, src, len);

    if (!ngx_cdp_canary_ok(dst, len)) {
        n = -2;
    }

    if (n > 0 && (size_t) n <= out_len) {
        memcpy(out, dst, n);
    }

    free(src);
    free(dst);

    return n;
}

#define UNESC_OK(in, out)                                                     \
    do {                                                                      \
        u_char  o_[64];                                                       \
        CHECK(ngx_cdp_unesc(in, sizeof(in) - 1, o_, sizeof(o_))               \
              == (ssize_t) (sizeof(out) - 1)                                  \
              && memcmp(o_, out, sizeof(out) - 1) == 0);                      \
    } while (0)

#define UNESC_BAD(in)                                                         \
    do {                                                                      \
        u_char  o_[64];                                                       \
        CHECK(ngx_cdp_unesc(in, sizeof(in) - 1, o_, sizeof(o_)) == -1);       \
    } while (0)


static void
test_unescape(void)
{
    u_char   buf[32];
    ssize_t  n;

    UNESC_OK("", "");
    UNESC_OK("abc", "abc");
    UNESC_OK("a%20b", "a b");
    UNESC_OK("a+b", "a b");
    UNESC_OK("%2b", "+");
    UNESC_OK("%2B", "+");
    UNESC_OK("%aF%Af", "\xaf\xaf");
    UNESC_OK("%e2%82%ac", "\xe2\x82\xac");
    UNESC_OK("%00", "\0");
    UNESC_OK("%2541", "%41");               /* decoded once only */
    UNESC_OK("100%25", "100%");
    UNESC_OK("a=b&c", "a=b&c");
    UNESC_OK("%7e~", "~~");

    UNESC_BAD("%");
    UNESC_BAD("%2");
    UNESC_BAD("a%");
    UNESC_BAD("ab%4");
    UNESC_BAD("%zz");
    UNESC_BAD("%g0");
    UNESC_BAD("%0g");
    UNESC_BAD("%%41");
    UNESC_BAD("%+1");
    UNESC_BAD("% 1");
    UNESC_BAD("ok%2x");

    /* the escape must be complete within len, whatever follows */
    memcpy(buf, "a%41", 4);
    CHECK(ngx_cdp_unescape(buf + 8, buf, 3) == -1);
    CHECK(ngx_cdp_unescape(buf + 8, buf, 2) == -1);
    CHECK(ngx_cdp_unescape(buf + 8, buf, 4) == 2 && buf[9] == 'A');

    /* in place */
    memcpy(buf, "x%41+%42y", 9);
    n = ngx_cdp_unescape(buf, buf, 9);
    CHECK(n == 5 && memcmp(buf, "xA By", 5) == 0);

    /* the URI form: '+' stays, escapes as above */
    memcpy(buf, "x%41+%42y", 9);
    n = ngx_cdp_unescape_uri(buf, buf, 9);
    CHECK(n == 5 && memcmp(buf, "xA+By", 5) == 0);
    memcpy(buf, "+44%2020+%2B", 12);
    n = ngx_cdp_unescape_uri(buf, buf, 12);
    CHECK(n == 8 && memcmp(buf, "+44 20++", 8) == 0);
    CHECK(ngx_cdp_unescape_uri(buf, (const u_char *) "a+%4", 4) == -1);
    CHECK(ngx_cdp_unescape_uri(buf, (const u_char *) "", 0) == 0);
}


/* query walking */

static void
test_query_next(void)
{
    const char    *q;
    const u_char  *pos, *end;
    ngx_cdp_kv_t   kv;

    q = "a=1&&b=2&c&=v&d=x=y&";
    pos = (const u_char *) q;
    end = pos + strlen(q);

    CHECK(ngx_cdp_query_next(&pos, end, &kv) == 1);
    CHECK(kv.key_len == 1 && kv.key[0] == 'a'
          && kv.val_len == 1 && kv.val[0] == '1');

    CHECK(ngx_cdp_query_next(&pos, end, &kv) == 1);
    CHECK(kv.key_len == 1 && kv.key[0] == 'b'
          && kv.val_len == 1 && kv.val[0] == '2');

    /* no '=': empty value */
    CHECK(ngx_cdp_query_next(&pos, end, &kv) == 1);
    CHECK(kv.key_len == 1 && kv.key[0] == 'c' && kv.val_len == 0);

    /* empty key */
    CHECK(ngx_cdp_query_next(&pos, end, &kv) == 1);
    CHECK(kv.key_len == 0 && kv.val_len == 1 && kv.val[0] == 'v');

    /* only the first '=' splits */
    CHECK(ngx_cdp_query_next(&pos, end, &kv) == 1);
    CHECK(kv.key_len == 1 && kv.key[0] == 'd'
          && kv.val_len == 3 && memcmp(kv.val, "x=y", 3) == 0);

    /* the trailing '&' ends it */
    CHECK(ngx_cdp_query_next(&pos, end, &kv) == 0);
    CHECK(ngx_cdp_query_next(&pos, end, &kv) == 0);

    q = "&&&";
    pos = (const u_char *) q;
    end = pos + 3;
    CHECK(ngx_cdp_query_next(&pos, end, &kv) == 0);

    pos = (const u_char *) q;
    CHECK(ngx_cdp_query_next(&pos, pos, &kv) == 0);

    q = "&k=";
    pos = (const u_char *) q;
    end = pos + 3;
    CHECK(ngx_cdp_query_next(&pos, end, &kv) == 1);
    CHECK(kv.key_len == 1 && kv.key[0] == 'k' && kv.val_len == 0);
    CHECK(ngx_cdp_query_next(&pos, end, &kv) == 0);
}


/* the pixel's query */

static ngx_cdp_hit_t  hit;
static u_char        *hit_query;
static u_char        *hit_scratch;
static size_t         hit_len;


static void
ngx_cdp_hit_free(void)
{
    free(hit_query);
    free(hit_scratch);
    hit_query = NULL;
    hit_scratch = NULL;
}


/* parses into the global hit; scratch stays alive until the next call */

static int
ngx_cdp_hit_n(const char *q, size_t len)
{
    int     rc;
    size_t  i;

    ngx_cdp_hit_free();

    hit_len = len;
    hit_query = ngx_cdp_dup(q, len);
    hit_scratch = ngx_cdp_buf(len);

    rc = ngx_cdp_hit_parse(hit_query, len, &hit, hit_scratch);

    /* whatever the result: scratch stays within its len bytes */
    CHECK(ngx_cdp_canary_ok(hit_scratch, len));

    if (rc == NGX_CDP_HIT_OK) {
        int  in = 1;

        in &= ngx_cdp_within(hit.event, hit_scratch, len);
        in &= ngx_cdp_within(hit.url, hit_scratch, len);
        in &= ngx_cdp_within(hit.ref, hit_scratch, len);
        in &= ngx_cdp_within(hit.title, hit_scratch, len);
        in &= ngx_cdp_within(hit.uid, hit_scratch, len);
        in &= ngx_cdp_within(hit.email, hit_scratch, len);
        in &= ngx_cdp_within(hit.exp, hit_scratch, len);
        in &= ngx_cdp_within(hit.sig, hit_scratch, len);

        for (i = 0; i < hit.nprops; i++) {
            in &= ngx_cdp_within(hit.props[i].name, hit_scratch, len);
            in &= ngx_cdp_within(hit.props[i].value, hit_scratch, len);
        }

        CHECK(in);
    }

    return rc;
}


static int
ngx_cdp_hit(const char *q)
{
    return ngx_cdp_hit_n(q, strlen(q));
}


/* "key=" followed by n copies of unit */

static char *
ngx_cdp_rep(const char *key, const char *unit, size_t n)
{
    char    *s, *p;
    size_t  klen, ulen, i;

    klen = strlen(key);
    ulen = strlen(unit);

    s = malloc(klen + 1 + ulen * n + 1);
    if (s == NULL) {
        perror("malloc");
        exit(2);
    }

    p = s;
    memcpy(p, key, klen);
    p += klen;
    *p++ = '=';

    for (i = 0; i < n; i++) {
        memcpy(p, unit, ulen);
        p += ulen;
    }

    *p = '\0';

    return s;
}


static int
ngx_cdp_hit_rep(const char *key, const char *unit, size_t n)
{
    int   rc;
    char  *q;

    q = ngx_cdp_rep(key, unit, n);
    rc = ngx_cdp_hit(q);
    free(q);

    return rc;
}


static void
test_hit_defaults(void)
{
    CHECK(ngx_cdp_hit("") == NGX_CDP_HIT_OK);
    CHECK_ABSENT(hit.event);
    CHECK_ABSENT(hit.url);
    CHECK_ABSENT(hit.ref);
    CHECK_ABSENT(hit.title);
    CHECK(hit.nprops == 0);

    /* absent after a previous parse filled everything */
    CHECK(ngx_cdp_hit("e=a&url=b&ref=c&title=d&p.x=1") == NGX_CDP_HIT_OK);
    CHECK(ngx_cdp_hit("_=1700000000&&") == NGX_CDP_HIT_OK);
    CHECK_ABSENT(hit.event);
    CHECK_ABSENT(hit.url);
    CHECK_ABSENT(hit.ref);
    CHECK_ABSENT(hit.title);
    CHECK(hit.nprops == 0);

    /* an empty query needs no scratch */
    CHECK(ngx_cdp_hit_parse((const u_char *) "", 0, &hit, NULL)
          == NGX_CDP_HIT_OK);
}


static void
test_hit_fields(void)
{
    CHECK(ngx_cdp_hit("e=signup") == NGX_CDP_HIT_OK);
    CHECK_STR(hit.event, "signup");
    CHECK_ABSENT(hit.url);

    CHECK(ngx_cdp_hit("url=https%3A%2F%2Fshop.example%2Fp%3Fa%3D1%26b%3D2")
          == NGX_CDP_HIT_OK);
    CHECK_STR(hit.url, "https://shop.example/p?a=1&b=2");
    CHECK_ABSENT(hit.event);

    CHECK(ngx_cdp_hit("ref=https://search.example/?q=x") == NGX_CDP_HIT_OK);
    CHECK_STR(hit.ref, "https://search.example/?q=x");

    CHECK(ngx_cdp_hit("title=Hello+World%21") == NGX_CDP_HIT_OK);
    CHECK_STR(hit.title, "Hello World!");

    CHECK(ngx_cdp_hit("title=Caf%C3%A9+%E2%82%AC") == NGX_CDP_HIT_OK);
    CHECK_STR(hit.title, "Caf\xc3\xa9 \xe2\x82\xac");

    /* raw UTF-8 is accepted too */
    CHECK(ngx_cdp_hit("title=caf\xc3\xa9") == NGX_CDP_HIT_OK);
    CHECK_STR(hit.title, "caf\xc3\xa9");

    /* all at once, in any order, with a cache buster */
    CHECK(ngx_cdp_hit("_=17&title=Pricing&p.plan=pro&e=click"
                      "&url=%2Fpricing&ref=r") == NGX_CDP_HIT_OK);
    CHECK_STR(hit.event, "click");
    CHECK_STR(hit.url, "/pricing");
    CHECK_STR(hit.ref, "r");
    CHECK_STR(hit.title, "Pricing");
    CHECK(hit.nprops == 1);
    CHECK_STR(hit.props[0].name, "plan");
    CHECK_STR(hit.props[0].value, "pro");

    /* present but empty: data set, length 0 */
    CHECK(ngx_cdp_hit("e=&title") == NGX_CDP_HIT_OK);
    CHECK(hit.event.data != NULL && hit.event.len == 0);
    CHECK(hit.title.data != NULL && hit.title.len == 0);
    CHECK_ABSENT(hit.url);

    /* keys are compared decoded */
    CHECK(ngx_cdp_hit("%65=x&ur%6C=y&p%2Eq=z") == NGX_CDP_HIT_OK);
    CHECK_STR(hit.event, "x");
    CHECK_STR(hit.url, "y");
    CHECK(hit.nprops == 1);
    CHECK_STR(hit.props[0].name, "q");

    /* NUL nowhere (the API refuses \u0000 too), other controls in values */
    CHECK(ngx_cdp_hit("title=a%00b") == NGX_CDP_HIT_MALFORMED);
    CHECK(ngx_cdp_hit("title=a%0Ab") == NGX_CDP_HIT_OK);
    CHECK(hit.title.len == 3 && hit.title.data[1] == '\n');

    /* an event's name has no control character at all */
    CHECK(ngx_cdp_hit("e=a%0Ab") == NGX_CDP_HIT_MALFORMED);
    CHECK(ngx_cdp_hit("e=a%0Db") == NGX_CDP_HIT_MALFORMED);
    CHECK(ngx_cdp_hit("e=a%09b") == NGX_CDP_HIT_MALFORMED);
    CHECK(ngx_cdp_hit("e=a%7Fb") == NGX_CDP_HIT_MALFORMED);
    CHECK(ngx_cdp_hit("e=a%00b") == NGX_CDP_HIT_MALFORMED);
    CHECK(ngx_cdp_hit("e=a%20b%C3%A9") == NGX_CDP_HIT_OK);
    CHECK_STR(hit.event, "a b\xc3\xa9");
}


static void
test_hit_props(void)
{
    CHECK(ngx_cdp_hit("p.plan=pro&p.seats=3&p.a.b-c_D9=x+y") == NGX_CDP_HIT_OK);
    CHECK(hit.nprops == 3);
    CHECK_STR(hit.props[0].name, "plan");
    CHECK_STR(hit.props[0].value, "pro");
    CHECK_STR(hit.props[1].name, "seats");
    CHECK_STR(hit.props[1].value, "3");
    CHECK_STR(hit.props[2].name, "a.b-c_D9");
    CHECK_STR(hit.props[2].value, "x y");

    CHECK(ngx_cdp_hit("p.empty=&p.none") == NGX_CDP_HIT_OK);
    CHECK(hit.nprops == 2);
    CHECK(hit.props[0].value.data != NULL && hit.props[0].value.len == 0);
    CHECK(hit.props[1].value.data != NULL && hit.props[1].value.len == 0);

    /* names are case-sensitive: not a repeat */
    CHECK(ngx_cdp_hit("p.a=1&p.A=2") == NGX_CDP_HIT_OK);
    CHECK(hit.nprops == 2);

    /* bad names */
    CHECK(ngx_cdp_hit("p.=1") == NGX_CDP_HIT_MALFORMED);
    CHECK(ngx_cdp_hit("p.") == NGX_CDP_HIT_MALFORMED);
    CHECK(ngx_cdp_hit("p.a+b=1") == NGX_CDP_HIT_MALFORMED);
    CHECK(ngx_cdp_hit("p.a%20b=1") == NGX_CDP_HIT_MALFORMED);
    CHECK(ngx_cdp_hit("p.a/b=1") == NGX_CDP_HIT_MALFORMED);
    CHECK(ngx_cdp_hit("p.caf%C3%A9=1") == NGX_CDP_HIT_MALFORMED);
    CHECK(ngx_cdp_hit("p.a%00=1") == NGX_CDP_HIT_MALFORMED);
    CHECK(ngx_cdp_hit("p.a:b=1") == NGX_CDP_HIT_MALFORMED);

    /* not properties at all */
    CHECK(ngx_cdp_hit("p=1&P.a=2&pp.a=3&.a=4&p_a=5") == NGX_CDP_HIT_OK);
    CHECK(hit.nprops == 0);
}


static void
test_hit_limits(void)
{
    char    q[64], *s;
    size_t  i, n;
    int     rc;

    /* each field exactly at its limit, then one byte over */

    CHECK(ngx_cdp_hit_rep("e", "a", NGX_CDP_MAX_EVENT_NAME)
          == NGX_CDP_HIT_OK);
    CHECK(hit.event.len == NGX_CDP_MAX_EVENT_NAME);
    CHECK(ngx_cdp_hit_rep("e", "a", NGX_CDP_MAX_EVENT_NAME + 1)
          == NGX_CDP_HIT_TOO_LARGE);

    CHECK(ngx_cdp_hit_rep("url", "u", NGX_CDP_MAX_URL) == NGX_CDP_HIT_OK);
    CHECK(hit.url.len == NGX_CDP_MAX_URL);
    CHECK(ngx_cdp_hit_rep("url", "u", NGX_CDP_MAX_URL + 1)
          == NGX_CDP_HIT_TOO_LARGE);

    CHECK(ngx_cdp_hit_rep("ref", "r", NGX_CDP_MAX_URL) == NGX_CDP_HIT_OK);
    CHECK(hit.ref.len == NGX_CDP_MAX_URL);
    CHECK(ngx_cdp_hit_rep("ref", "r", NGX_CDP_MAX_URL + 1)
          == NGX_CDP_HIT_TOO_LARGE);

    CHECK(ngx_cdp_hit_rep("title", "t", NGX_CDP_MAX_TITLE)
          == NGX_CDP_HIT_OK);
    CHECK(hit.title.len == NGX_CDP_MAX_TITLE);
    CHECK(ngx_cdp_hit_rep("title", "t", NGX_CDP_MAX_TITLE + 1)
          == NGX_CDP_HIT_TOO_LARGE);

    CHECK(ngx_cdp_hit_rep("p.v", "v", NGX_CDP_MAX_PROP_VALUE)
          == NGX_CDP_HIT_OK);
    CHECK(hit.nprops == 1 && hit.props[0].value.len == NGX_CDP_MAX_PROP_VALUE);
    CHECK(ngx_cdp_hit_rep("p.v", "v", NGX_CDP_MAX_PROP_VALUE + 1)
          == NGX_CDP_HIT_TOO_LARGE);

    /* limits apply to the decoded bytes, not to the escaped text */

    CHECK(ngx_cdp_hit_rep("e", "%41", NGX_CDP_MAX_EVENT_NAME)
          == NGX_CDP_HIT_OK);
    CHECK(hit.event.len == NGX_CDP_MAX_EVENT_NAME && hit.event.data[0] == 'A');
    CHECK(ngx_cdp_hit_rep("e", "%41", NGX_CDP_MAX_EVENT_NAME + 1)
          == NGX_CDP_HIT_TOO_LARGE);

    /* and count bytes, not characters: 2-byte and 3-byte UTF-8 */

    CHECK(ngx_cdp_hit_rep("title", "%C3%A9", NGX_CDP_MAX_TITLE / 2)
          == NGX_CDP_HIT_OK);
    CHECK(hit.title.len == NGX_CDP_MAX_TITLE);
    CHECK(ngx_cdp_hit_rep("title", "%E2%82%AC", NGX_CDP_MAX_TITLE / 3 + 1)
          == NGX_CDP_HIT_TOO_LARGE);                     /* 513 bytes */

    /* property names: 64 characters, then 65 */

    s = malloc(2 + NGX_CDP_MAX_PROP_NAME + 1 + 3);

    memcpy(s, "p.", 2);
    memset(s + 2, 'n', NGX_CDP_MAX_PROP_NAME);
    memcpy(s + 2 + NGX_CDP_MAX_PROP_NAME, "=1", 3);
    CHECK(ngx_cdp_hit(s) == NGX_CDP_HIT_OK);
    CHECK(hit.nprops == 1
          && hit.props[0].name.len == NGX_CDP_MAX_PROP_NAME);

    memset(s + 2, 'n', NGX_CDP_MAX_PROP_NAME + 1);
    memcpy(s + 2 + NGX_CDP_MAX_PROP_NAME + 1, "=1", 3);
    CHECK(ngx_cdp_hit(s) == NGX_CDP_HIT_TOO_LARGE);
    free(s);

    /* 25 properties, then 26 */

    s = malloc(NGX_CDP_MAX_PROPS * 16 + 32);

    for (n = NGX_CDP_MAX_PROPS; n <= NGX_CDP_MAX_PROPS + 1; n++) {
        s[0] = '\0';

        for (i = 0; i < n; i++) {
            snprintf(q, sizeof(q), "%sp.k%zu=%zu", i ? "&" : "", i, i);
            strcat(s, q);
        }

        rc = ngx_cdp_hit(s);

        if (n == NGX_CDP_MAX_PROPS) {
            CHECK(rc == NGX_CDP_HIT_OK);
            CHECK(hit.nprops == NGX_CDP_MAX_PROPS);
            CHECK_STR(hit.props[24].name, "k24");
            CHECK_STR(hit.props[24].value, "24");

        } else {
            CHECK(rc == NGX_CDP_HIT_TOO_LARGE);
        }
    }

    /* a 26th that repeats a name is a repeat first */
    *strstr(s, "&p.k25=") = '\0';
    strcat(s, "&p.k0=x");
    CHECK(ngx_cdp_hit(s) == NGX_CDP_HIT_MALFORMED);

    free(s);

    /* the whole query: 8192 bytes, then 8193 (in an ignored field) */

    s = malloc(NGX_CDP_MAX_QUERY + 2);
    memcpy(s, "x=", 2);
    memset(s + 2, 'z', NGX_CDP_MAX_QUERY - 2);
    s[NGX_CDP_MAX_QUERY] = '\0';
    CHECK(ngx_cdp_hit(s) == NGX_CDP_HIT_OK);
    s[NGX_CDP_MAX_QUERY] = 'z';
    s[NGX_CDP_MAX_QUERY + 1] = '\0';
    CHECK(ngx_cdp_hit(s) == NGX_CDP_HIT_TOO_LARGE);

    /* even when every field in it would be fine */
    memcpy(s, "e=a&", 4);
    CHECK(ngx_cdp_hit(s) == NGX_CDP_HIT_TOO_LARGE);
    CHECK_ABSENT(hit.event);
    free(s);

    /* all fields at their limits together */
    s = malloc(NGX_CDP_MAX_QUERY + 1);
    n = (size_t) snprintf(s, NGX_CDP_MAX_QUERY + 1, "e=%0*d&url=%0*d"
                          "&ref=%0*d&title=%0*d",
                          NGX_CDP_MAX_EVENT_NAME, 0, NGX_CDP_MAX_URL, 0,
                          NGX_CDP_MAX_URL, 0, NGX_CDP_MAX_TITLE, 0);
    CHECK(n < NGX_CDP_MAX_QUERY);
    CHECK(ngx_cdp_hit(s) == NGX_CDP_HIT_OK);
    CHECK(hit.event.len == NGX_CDP_MAX_EVENT_NAME
          && hit.url.len == NGX_CDP_MAX_URL
          && hit.ref.len == NGX_CDP_MAX_URL
          && hit.title.len == NGX_CDP_MAX_TITLE);
    free(s);
}


static void
test_hit_duplicates(void)
{
    /* a repeated field keeps its first value */
    CHECK(ngx_cdp_hit("e=first&e=second") == NGX_CDP_HIT_OK);
    CHECK_STR(hit.event, "first");

    CHECK(ngx_cdp_hit("url=a&ref=b&url=c&ref=d&title=t&title=u")
          == NGX_CDP_HIT_OK);
    CHECK_STR(hit.url, "a");
    CHECK_STR(hit.ref, "b");
    CHECK_STR(hit.title, "t");

    /* an empty first value still wins */
    CHECK(ngx_cdp_hit("e=&e=later") == NGX_CDP_HIT_OK);
    CHECK(hit.event.data != NULL && hit.event.len == 0);

    /* the dropped repeat is still checked */
    CHECK(ngx_cdp_hit("e=ok&e=%zz") == NGX_CDP_HIT_MALFORMED);
    CHECK(ngx_cdp_hit("e=ok&e=%ff") == NGX_CDP_HIT_MALFORMED);

    /* a repeated property is malformed, spelled alike or not */
    CHECK(ngx_cdp_hit("p.a=1&p.a=1") == NGX_CDP_HIT_MALFORMED);
    CHECK(ngx_cdp_hit("p.a=1&p.b=2&p.a=3") == NGX_CDP_HIT_MALFORMED);
    CHECK(ngx_cdp_hit("p.a=1&p.%61=2") == NGX_CDP_HIT_MALFORMED);
}


static void
test_hit_unknown(void)
{
    CHECK(ngx_cdp_hit("_=1&cb=2&E=3&Url=4&event=5&name=6&ee=7")
          == NGX_CDP_HIT_OK);
    CHECK_ABSENT(hit.event);
    CHECK_ABSENT(hit.url);
    CHECK(hit.nprops == 0);

    /* an unknown key's value is not looked at */
    CHECK(ngx_cdp_hit("cb=%zz&x=%&y=%ff&e=ok") == NGX_CDP_HIT_OK);
    CHECK_STR(hit.event, "ok");

    /* but a key itself must decode */
    CHECK(ngx_cdp_hit("c%zz=1&e=ok") == NGX_CDP_HIT_MALFORMED);
    CHECK(ngx_cdp_hit("e=ok&%=1") == NGX_CDP_HIT_MALFORMED);

    /* the caller strips the '?' */
    CHECK(ngx_cdp_hit("?e=x") == NGX_CDP_HIT_OK);
    CHECK_ABSENT(hit.event);
}


static void
test_hit_bad(void)
{
    /* bad escapes in each known field */
    CHECK(ngx_cdp_hit("e=%zz") == NGX_CDP_HIT_MALFORMED);
    CHECK(ngx_cdp_hit("url=%") == NGX_CDP_HIT_MALFORMED);
    CHECK(ngx_cdp_hit("ref=a%2") == NGX_CDP_HIT_MALFORMED);
    CHECK(ngx_cdp_hit("title=%g1") == NGX_CDP_HIT_MALFORMED);
    CHECK(ngx_cdp_hit("p.a=%") == NGX_CDP_HIT_MALFORMED);
    CHECK(ngx_cdp_hit("p.a%=1") == NGX_CDP_HIT_MALFORMED);

    /* invalid UTF-8, escaped or raw, in each known field */
    CHECK(ngx_cdp_hit("e=%ff") == NGX_CDP_HIT_MALFORMED);
    CHECK(ngx_cdp_hit("url=%c0%80") == NGX_CDP_HIT_MALFORMED);
    CHECK(ngx_cdp_hit("ref=%ed%a0%80") == NGX_CDP_HIT_MALFORMED);
    CHECK(ngx_cdp_hit("title=%e2%82") == NGX_CDP_HIT_MALFORMED);
    CHECK(ngx_cdp_hit("title=\xe2\x82") == NGX_CDP_HIT_MALFORMED);
    CHECK(ngx_cdp_hit("p.a=%f4%90%80%80") == NGX_CDP_HIT_MALFORMED);
    CHECK(ngx_cdp_hit("p.a=\x80") == NGX_CDP_HIT_MALFORMED);

    /* a bad field after good ones still spoils the hit */
    CHECK(ngx_cdp_hit("e=a&url=b&p.x=1&title=%") == NGX_CDP_HIT_MALFORMED);
}


static void
test_hit_example(void)
{
    CHECK(ngx_cdp_hit("e=signup&p.plan=pro&url=https%3A%2F%2Fshop.example"
                      "%2Fpricing%3Futm_source%3Dnews&title=Pricing"
                      "&_=1700000000") == NGX_CDP_HIT_OK);
    CHECK_STR(hit.event, "signup");
    CHECK_STR(hit.url, "https://shop.example/pricing?utm_source=news");
    CHECK_STR(hit.title, "Pricing");
    CHECK_ABSENT(hit.ref);
    CHECK(hit.nprops == 1);
    CHECK_STR(hit.props[0].name, "plan");
    CHECK_STR(hit.props[0].value, "pro");
}


/* the signed identity of e-mail campaigns: uid, email, exp, sig */

#define HIT_SIG  "03cddf5617a16f3b0b02b7923f23f4a4" \
                 "4da34f09a1d084e6879853cfc2e6dece"

#define CHECK_NO_IDENTITY()                                                   \
    do {                                                                      \
        CHECK_ABSENT(hit.uid);                                                \
        CHECK_ABSENT(hit.email);                                              \
        CHECK_ABSENT(hit.exp);                                                \
        CHECK_ABSENT(hit.sig);                                                \
        CHECK(hit.ident_bad == 0);                                            \
    } while (0)


/* query with a "key=" of n copies of unit in place of the first "@" */

static int
ngx_cdp_hit_with(const char *query, const char *key, const char *unit,
    size_t n)
{
    int          rc;
    char        *rep, *q;
    const char  *at;
    size_t       len;

    at = strchr(query, '@');
    rep = ngx_cdp_rep(key, unit, n);
    len = strlen(query) + strlen(rep);

    q = malloc(len);
    if (q == NULL) {
        perror("malloc");
        exit(2);
    }

    snprintf(q, len, "%.*s%s%s", (int) (at - query), query, rep, at + 1);

    rc = ngx_cdp_hit(q);

    free(q);
    free(rep);

    return rc;
}


static void
test_hit_identity(void)
{
    /* absent by default, and after a parse that had them */
    CHECK(ngx_cdp_hit("e=open") == NGX_CDP_HIT_OK);
    CHECK_NO_IDENTITY();

    /* percent-decoded like any field: UTF-8, '+', '%40' */
    CHECK(ngx_cdp_hit("uid=u+42%2F%C3%BC&email=J%C3%B6rg%40b%C3%BCcher.de"
                      "&exp=1798761600&sig=" HIT_SIG) == NGX_CDP_HIT_OK);
    CHECK_STR(hit.uid, "u 42/\xc3\xbc");
    CHECK_STR(hit.email, "J\xc3\xb6rg@b\xc3\xbc" "cher.de");
    CHECK_STR(hit.exp, "1798761600");
    CHECK_STR(hit.sig, HIT_SIG);
    CHECK(hit.ident_bad == 0);

    CHECK(ngx_cdp_hit("_=1") == NGX_CDP_HIT_OK);
    CHECK_NO_IDENTITY();

    /* keys decoded, case-sensitive; a NUL spoils the identity only */
    CHECK(ngx_cdp_hit("%75id=a&%65mail=b%00c&UID=x&Email=y&EXP=1&SIG=2")
          == NGX_CDP_HIT_OK);
    CHECK_STR(hit.uid, "a");
    CHECK_ABSENT(hit.email);
    CHECK_ABSENT(hit.exp);
    CHECK_ABSENT(hit.sig);
    CHECK(hit.ident_bad == 1);

    CHECK(ngx_cdp_hit("uid=caf\xc3\xa9") == NGX_CDP_HIT_OK);
    CHECK_STR(hit.uid, "caf\xc3\xa9");

    /* present but empty */
    CHECK(ngx_cdp_hit("uid=&email&exp=&sig=") == NGX_CDP_HIT_OK);
    CHECK(hit.uid.data != NULL && hit.uid.len == 0);
    CHECK(hit.email.data != NULL && hit.email.len == 0);
    CHECK(hit.exp.data != NULL && hit.exp.len == 0);
    CHECK(hit.sig.data != NULL && hit.sig.len == 0);
    CHECK(hit.ident_bad == 0);

    /* with every other field, which keep their values */
    CHECK(ngx_cdp_hit("e=open&uid=u-1&url=%2Fnews&email=a%40b.example"
                      "&ref=r&exp=1798761600&title=T&sig=" HIT_SIG
                      "&p.c=spring") == NGX_CDP_HIT_OK);
    CHECK_STR(hit.event, "open");
    CHECK_STR(hit.url, "/news");
    CHECK_STR(hit.ref, "r");
    CHECK_STR(hit.title, "T");
    CHECK(hit.nprops == 1);
    CHECK_STR(hit.props[0].name, "c");
    CHECK_STR(hit.props[0].value, "spring");
    CHECK_STR(hit.uid, "u-1");
    CHECK_STR(hit.email, "a@b.example");
    CHECK_STR(hit.exp, "1798761600");
    CHECK_STR(hit.sig, HIT_SIG);
    CHECK(hit.ident_bad == 0);

    /* p.uid is a property, not the identity */
    CHECK(ngx_cdp_hit("p.uid=u-1&p.email=x") == NGX_CDP_HIT_OK);
    CHECK(hit.nprops == 2);
    CHECK_NO_IDENTITY();
}


static void
test_hit_identity_bad(void)
{
    /* each at its limit, then one byte over: ident_bad, the hit is OK */

    CHECK(ngx_cdp_hit_rep("uid", "u", NGX_CDP_MAX_UID) == NGX_CDP_HIT_OK);
    CHECK(hit.uid.len == NGX_CDP_MAX_UID && hit.ident_bad == 0);
    CHECK(ngx_cdp_hit_rep("uid", "u", NGX_CDP_MAX_UID + 1)
          == NGX_CDP_HIT_OK);
    CHECK_ABSENT(hit.uid);
    CHECK(hit.ident_bad == 1);

    /* decoded bytes count */
    CHECK(ngx_cdp_hit_rep("uid", "%C3%A9", NGX_CDP_MAX_UID / 2)
          == NGX_CDP_HIT_OK);
    CHECK(hit.uid.len == NGX_CDP_MAX_UID && hit.ident_bad == 0);
    CHECK(ngx_cdp_hit_rep("uid", "%E2%82%AC", NGX_CDP_MAX_UID / 3 + 1)
          == NGX_CDP_HIT_OK);
    CHECK(hit.ident_bad == 1);

    CHECK(ngx_cdp_hit_rep("email", "e", NGX_CDP_MAX_HIT_EMAIL)
          == NGX_CDP_HIT_OK);
    CHECK(hit.email.len == NGX_CDP_MAX_HIT_EMAIL && hit.ident_bad == 0);
    CHECK(ngx_cdp_hit_rep("email", "e", NGX_CDP_MAX_HIT_EMAIL + 1)
          == NGX_CDP_HIT_OK);
    CHECK_ABSENT(hit.email);
    CHECK(hit.ident_bad == 1);

    CHECK(ngx_cdp_hit_rep("exp", "1", NGX_CDP_MAX_EXP) == NGX_CDP_HIT_OK);
    CHECK(hit.exp.len == NGX_CDP_MAX_EXP && hit.ident_bad == 0);
    CHECK(ngx_cdp_hit_rep("exp", "1", NGX_CDP_MAX_EXP + 1)
          == NGX_CDP_HIT_OK);
    CHECK_ABSENT(hit.exp);
    CHECK(hit.ident_bad == 1);

    CHECK(ngx_cdp_hit_rep("sig", "a", NGX_CDP_SIG_HEX_LEN)
          == NGX_CDP_HIT_OK);
    CHECK(hit.sig.len == NGX_CDP_SIG_HEX_LEN && hit.ident_bad == 0);
    CHECK(ngx_cdp_hit_rep("sig", "a", NGX_CDP_SIG_HEX_LEN + 1)
          == NGX_CDP_HIT_OK);
    CHECK_ABSENT(hit.sig);
    CHECK(hit.ident_bad == 1);

    /* a too-long uid leaves the other fields alone */
    CHECK(ngx_cdp_hit_with("e=open&url=%2Fnews&@&email=a%40b.example"
                           "&exp=1798761600&sig=" HIT_SIG "&title=T&p.a=1",
                           "uid", "u", NGX_CDP_MAX_UID + 1)
          == NGX_CDP_HIT_OK);
    CHECK(hit.ident_bad == 1);
    CHECK_ABSENT(hit.uid);
    CHECK_STR(hit.event, "open");
    CHECK_STR(hit.url, "/news");
    CHECK_STR(hit.title, "T");
    CHECK(hit.nprops == 1);
    CHECK_STR(hit.props[0].value, "1");
    CHECK_STR(hit.email, "a@b.example");
    CHECK_STR(hit.exp, "1798761600");
    CHECK_STR(hit.sig, HIT_SIG);

    /* an e-mail that does not decode: bad escapes, invalid UTF-8 */
    CHECK(ngx_cdp_hit("e=open&email=%zz&uid=u-1&p.a=1") == NGX_CDP_HIT_OK);
    CHECK(hit.ident_bad == 1);
    CHECK_ABSENT(hit.email);
    CHECK_STR(hit.uid, "u-1");
    CHECK_STR(hit.event, "open");
    CHECK(hit.nprops == 1);

    CHECK(ngx_cdp_hit("email=a%") == NGX_CDP_HIT_OK);
    CHECK(hit.ident_bad == 1 && hit.email.data == NULL);
    CHECK(ngx_cdp_hit("email=%ff%40b.example") == NGX_CDP_HIT_OK);
    CHECK(hit.ident_bad == 1 && hit.email.data == NULL);
    CHECK(ngx_cdp_hit("email=\xc3@b.example") == NGX_CDP_HIT_OK);
    CHECK(hit.ident_bad == 1 && hit.email.data == NULL);
    CHECK(ngx_cdp_hit("uid=%ed%a0%80") == NGX_CDP_HIT_OK);     /* surrogate */
    CHECK(hit.ident_bad == 1 && hit.uid.data == NULL);
    CHECK(ngx_cdp_hit("exp=%g1&sig=%") == NGX_CDP_HIT_OK);
    CHECK(hit.ident_bad == 1);
    CHECK_ABSENT(hit.exp);
    CHECK_ABSENT(hit.sig);

    /* a repeated identity field: which one was signed?  The first stays */
    CHECK(ngx_cdp_hit("uid=a&uid=b&email=c") == NGX_CDP_HIT_OK);
    CHECK(hit.ident_bad == 1);
    CHECK_STR(hit.uid, "a");
    CHECK_STR(hit.email, "c");

    CHECK(ngx_cdp_hit("uid=a&uid=a") == NGX_CDP_HIT_OK);
    CHECK(hit.ident_bad == 1);
    CHECK(ngx_cdp_hit("uid=&uid=") == NGX_CDP_HIT_OK);
    CHECK(hit.ident_bad == 1);
    CHECK(ngx_cdp_hit("uid=a&%75id=a") == NGX_CDP_HIT_OK);
    CHECK(hit.ident_bad == 1);
    CHECK(ngx_cdp_hit("email=a&email=b") == NGX_CDP_HIT_OK);
    CHECK(hit.ident_bad == 1);
    CHECK(ngx_cdp_hit("exp=1&exp=1") == NGX_CDP_HIT_OK);
    CHECK(hit.ident_bad == 1);
    CHECK(ngx_cdp_hit("sig=a&sig=a") == NGX_CDP_HIT_OK);
    CHECK(hit.ident_bad == 1);
    CHECK(ngx_cdp_hit("uid=a&uid=%zz") == NGX_CDP_HIT_OK);
    CHECK(hit.ident_bad == 1);
    CHECK_STR(hit.uid, "a");

    /* reset by the next parse */
    CHECK(ngx_cdp_hit("uid=a") == NGX_CDP_HIT_OK);
    CHECK(hit.ident_bad == 0);

    /* a bad identity does not hide a malformed or too large hit */
    CHECK(ngx_cdp_hit("uid=%zz&e=%zz") == NGX_CDP_HIT_MALFORMED);
    CHECK(ngx_cdp_hit("email=%ff&p.a=1&p.a=2") == NGX_CDP_HIT_MALFORMED);
    CHECK(ngx_cdp_hit_with("uid=%zz&@", "e", "a",
                           NGX_CDP_MAX_EVENT_NAME + 1)
          == NGX_CDP_HIT_TOO_LARGE);
}


/* page URLs */

static ngx_cdp_url_t   url;
static u_char         *url_buf;
static u_char         *url_scratch;


static void
ngx_cdp_url_free(void)
{
    free(url_buf);
    free(url_scratch);
    url_buf = NULL;
    url_scratch = NULL;
}


static void
ngx_cdp_url(const char *s)
{
    size_t  len;
    int     in;

    ngx_cdp_url_free();

    len = strlen(s);
    url_buf = ngx_cdp_dup(s, len);
    url_scratch = ngx_cdp_buf(len);

    ngx_cdp_url_parse(url_buf, len, &url, url_scratch);

    CHECK(ngx_cdp_canary_ok(url_scratch, len));

    /* path and search point into the URL (or "/"), the rest to scratch */
    in = url.path.data != NULL && url.path.len > 0
         && url.path.data[0] == '/'
         && (ngx_cdp_within(url.path, url_buf, len) || url.path.len == 1)
         && url.search.data != NULL
         && (url.search.len == 0
             || ngx_cdp_within(url.search, url_buf, len))
         && ngx_cdp_within(url.source, url_scratch, len)
         && ngx_cdp_within(url.medium, url_scratch, len)
         && ngx_cdp_within(url.name, url_scratch, len)
         && ngx_cdp_within(url.term, url_scratch, len)
         && ngx_cdp_within(url.content, url_scratch, len);
    CHECK(in);
}


static void
test_url_parts(void)
{
    ngx_cdp_url("https://shop.example/pricing?utm_source=news#top");
    CHECK_STR(url.path, "/pricing");
    CHECK_STR(url.search, "utm_source=news");
    CHECK_STR(url.source, "news");

    ngx_cdp_url("https://shop.example");
    CHECK_STR(url.path, "/");
    CHECK(url.search.data != NULL && url.search.len == 0);
    CHECK_ABSENT(url.source);

    ngx_cdp_url("https://shop.example/");
    CHECK_STR(url.path, "/");
    CHECK(url.path.data == url_buf + 20);

    ngx_cdp_url("https://shop.example?x=1");
    CHECK_STR(url.path, "/");
    CHECK_STR(url.search, "x=1");

    ngx_cdp_url("https://shop.example#a?utm_source=x");
    CHECK_STR(url.path, "/");
    CHECK(url.search.len == 0);
    CHECK_ABSENT(url.source);

    ngx_cdp_url("https://h/a/b#frag/x?y=1");
    CHECK_STR(url.path, "/a/b");
    CHECK(url.search.len == 0);

    ngx_cdp_url("https://h/p?#");
    CHECK_STR(url.path, "/p");
    CHECK(url.search.data != NULL && url.search.len == 0);

    ngx_cdp_url("https://user:pw@h.example:8443/a%20b?q=%20");
    CHECK_STR(url.path, "/a%20b");              /* the path stays raw */
    CHECK_STR(url.search, "q=%20");

    ngx_cdp_url("/a/b?c=d&e");
    CHECK_STR(url.path, "/a/b");
    CHECK_STR(url.search, "c=d&e");

    ngx_cdp_url("/");
    CHECK_STR(url.path, "/");
    CHECK(url.path.data == url_buf);

    ngx_cdp_url("//cdn.example/x?y");
    CHECK_STR(url.path, "/x");
    CHECK_STR(url.search, "y");

    ngx_cdp_url("shop.example/a?b");
    CHECK_STR(url.path, "/a");
    CHECK_STR(url.search, "b");

    ngx_cdp_url("mailto:someone@example.com");
    CHECK_STR(url.path, "/");

    ngx_cdp_url("?utm_medium=m");
    CHECK_STR(url.path, "/");
    CHECK_STR(url.search, "utm_medium=m");
    CHECK_STR(url.medium, "m");

    ngx_cdp_url("");
    CHECK_STR(url.path, "/");
    CHECK(url.search.len == 0);

    ngx_cdp_url("http://a/b?c?d");
    CHECK_STR(url.search, "c?d");
}


static void
test_url_utm(void)
{
    ngx_cdp_url("https://h/a?utm_source=a%20b&utm_medium=email"
                "&utm_campaign=spring+sale&utm_term=caf%C3%A9"
                "&utm_content=logo&x=1#utm_source=no");
    CHECK_STR(url.source, "a b");
    CHECK_STR(url.medium, "email");
    CHECK_STR(url.name, "spring sale");
    CHECK_STR(url.term, "caf\xc3\xa9");
    CHECK_STR(url.content, "logo");

    /* first occurrence wins */
    ngx_cdp_url("/?utm_source=a&utm_source=b");
    CHECK_STR(url.source, "a");

    /* a bad value is left out, the others are kept */
    ngx_cdp_url("/?utm_source=%zz&utm_medium=x&utm_term=%ff"
                "&utm_content=%e2%82");
    CHECK_ABSENT(url.source);
    CHECK_STR(url.medium, "x");
    CHECK_ABSENT(url.term);
    CHECK_ABSENT(url.content);

    /* ... and a bad first occurrence is not replaced by a later one */
    ngx_cdp_url("/?utm_source=%&utm_source=b");
    CHECK_ABSENT(url.source);

    /* present but empty */
    ngx_cdp_url("/?utm_source=&utm_medium");
    CHECK(url.source.data != NULL && url.source.len == 0);
    CHECK(url.medium.data != NULL && url.medium.len == 0);

    /* keys decode; near misses do not count */
    ngx_cdp_url("/?utm%5Fsource=s&UTM_MEDIUM=m&utm_campaignx=c"
                "&utm_=t&utm_ter=t&%zz=1&utmXcampaign=c&utm-term=t");
    CHECK_STR(url.source, "s");
    CHECK_ABSENT(url.medium);
    CHECK_ABSENT(url.name);
    CHECK_ABSENT(url.term);

    /* no utm_* at all */
    ngx_cdp_url("https://h/?a=1&b=2");
    CHECK_ABSENT(url.source);
    CHECK_ABSENT(url.medium);
    CHECK_ABSENT(url.name);
    CHECK_ABSENT(url.term);
    CHECK_ABSENT(url.content);
}


/* JSON strings */

static int
ngx_cdp_json_is(const char *in, size_t len, const char *out, size_t out_len)
{
    int     ok;
    u_char  *src, *dst, *end;

    src = ngx_cdp_dup(in, len);
    dst = ngx_cdp_buf(NGX_CDP_JSON_STR_MAX(len));

    end = ngx_cdp_json_str(dst, src, len);

    ok = (size_t) (end - dst) == out_len
         && memcmp(dst, out, out_len) == 0
         && ngx_cdp_canary_ok(dst, NGX_CDP_JSON_STR_MAX(len));

    if (!ok) {
        printf("  json_str gave: %.*s\n", (int) (end - dst), dst);
    }

    free(src);
    free(dst);

    return ok;
}

#define JSON_IS(in, out)                                                      \
    CHECK(ngx_cdp_json_is(in, sizeof(in) - 1, out, sizeof(out) - 1))


static void
test_json_str(void)
{
    u_char  *end, buf[8];
    char    all[32], expect[32 * 6 + 2 + 1];
    int     i;
    size_t  n;

    JSON_IS("", "\"\"");
    JSON_IS("abc", "\"abc\"");
    JSON_IS("a\"b\\c", "\"a\\\"b\\\\c\"");
    JSON_IS("\n\r\t\b\f", "\"\\n\\r\\t\\b\\f\"");
    JSON_IS("\x01", "\"\\u0001\"");
    JSON_IS("\x1f", "\"\\u001f\"");
    JSON_IS("\0", "\"\\u0000\"");
    JSON_IS("\x0b", "\"\\u000b\"");
    JSON_IS("\x7f /<>&'", "\"\x7f /<>&'\"");

    /* valid UTF-8 is copied */
    JSON_IS("caf\xc3\xa9 \xe2\x82\xac \xf0\x9d\x84\x9e",
            "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9d\x84\x9e\"");
    JSON_IS("\xef\xbf\xbf\xf4\x8f\xbf\xbf",
            "\"\xef\xbf\xbf\xf4\x8f\xbf\xbf\"");
    JSON_IS("\xe2\x80\xa7\xe2\x80\xaa", "\"\xe2\x80\xa7\xe2\x80\xaa\"");

    /* line and paragraph separators */
    JSON_IS("a\xe2\x80\xa8z\xe2\x80\xa9", "\"a\\u2028z\\u2029\"");

    /* each invalid byte becomes U+FFFD */
    JSON_IS("\xff", "\"\xef\xbf\xbd\"");
    JSON_IS("a\xffz", "\"a\xef\xbf\xbdz\"");
    JSON_IS("\xc0\x80", "\"\xef\xbf\xbd\xef\xbf\xbd\"");
    JSON_IS("\xe2\x82", "\"\xef\xbf\xbd\xef\xbf\xbd\"");
    JSON_IS("\xe2\x82z", "\"\xef\xbf\xbd\xef\xbf\xbdz\"");
    JSON_IS("\xed\xa0\x80",
            "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"");
    JSON_IS("\xc3\"", "\"\xef\xbf\xbd\\\"\"");
    JSON_IS("\x80\xe2\x82\xac", "\"\xef\xbf\xbd\xe2\x82\xac\"");

    /* the worst case fills NGX_CDP_JSON_STR_MAX exactly */
    for (i = 0; i < 32; i++) {
        all[i] = (char) (i == 10 || i == 13 || i == 9 || i == 8 || i == 12
                         ? 1 : i);
    }

    n = 0;
    expect[n++] = '"';

    for (i = 0; i < 32; i++) {
        n += (size_t) snprintf(expect + n, 7, "\\u%04x", (unsigned) all[i]);
    }

    expect[n++] = '"';
    CHECK(n == NGX_CDP_JSON_STR_MAX(32));
    CHECK(ngx_cdp_json_is(all, 32, expect, n));

    /* no input, no pointer needed */
    end = ngx_cdp_json_str(buf, NULL, 0);
    CHECK(end == buf + 2 && buf[0] == '"' && buf[1] == '"');
}


/* client addresses */

static int
ngx_cdp_ip_is(int family, const char *text, const char *expect)
{
    u_char  addr[16], *dst;
    size_t  n;
    int     ok;

    if (inet_pton(family, text, addr) != 1) {
        printf("  bad test address %s\n", text);
        return 0;
    }

    dst = ngx_cdp_buf(NGX_CDP_IP_TEXT_MAX);

    n = ngx_cdp_ip_truncate(family, addr, dst);

    ok = n == strlen(expect)
         && memcmp(dst, expect, n) == 0
         && ngx_cdp_canary_ok(dst, NGX_CDP_IP_TEXT_MAX);

    if (!ok) {
        printf("  ip_truncate(%s) gave: %.*s\n", text, (int) n, dst);
    }

    free(dst);

    return ok;
}


static void
test_ip_truncate(void)
{
    u_char  addr[16], dst[NGX_CDP_IP_TEXT_MAX];

    CHECK(ngx_cdp_ip_is(AF_INET, "203.0.113.77", "203.0.113.0"));
    CHECK(ngx_cdp_ip_is(AF_INET, "255.255.255.255", "255.255.255.0"));
    CHECK(ngx_cdp_ip_is(AF_INET, "10.0.0.0", "10.0.0.0"));
    CHECK(ngx_cdp_ip_is(AF_INET, "127.0.0.1", "127.0.0.0"));

    CHECK(ngx_cdp_ip_is(AF_INET6, "2001:db8:1:2:3:4:5:6", "2001:db8:1::"));
    CHECK(ngx_cdp_ip_is(AF_INET6, "2001:db8:abcd:ffff::1",
                        "2001:db8:abcd::"));
    CHECK(ngx_cdp_ip_is(AF_INET6, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                        "ffff:ffff:ffff::"));
    CHECK(ngx_cdp_ip_is(AF_INET6, "fe80::1", "fe80::"));
    CHECK(ngx_cdp_ip_is(AF_INET6, "::1", "::"));
    CHECK(ngx_cdp_ip_is(AF_INET6, "2001:db8::", "2001:db8::"));

    /* v4-mapped: the IPv4 rule, printed as IPv4 */
    CHECK(ngx_cdp_ip_is(AF_INET6, "::ffff:203.0.113.77", "203.0.113.0"));
    CHECK(ngx_cdp_ip_is(AF_INET6, "::ffff:1.2.3.4", "1.2.3.0"));

    /* almost mapped is plain IPv6 */
    CHECK(ngx_cdp_ip_is(AF_INET6, "::fffe:1.2.3.4", "::"));
    CHECK(ngx_cdp_ip_is(AF_INET6, "1::ffff:1.2.3.4", "1::"));

    /* other families */
    memset(addr, 0, sizeof(addr));
    CHECK(ngx_cdp_ip_truncate(AF_UNIX, addr, dst) == 0);
    CHECK(ngx_cdp_ip_truncate(0, addr, dst) == 0);
}


/* timestamps */

static int
ngx_cdp_iso_is(time_t sec, unsigned msec, const char *expect)
{
    u_char  *dst, *end;
    int     ok;

    dst = ngx_cdp_buf(NGX_CDP_ISO8601_LEN);

    end = ngx_cdp_iso8601(dst, sec, msec);

    ok = end == dst + NGX_CDP_ISO8601_LEN
         && strlen(expect) == NGX_CDP_ISO8601_LEN
         && memcmp(dst, expect, NGX_CDP_ISO8601_LEN) == 0
         && ngx_cdp_canary_ok(dst, NGX_CDP_ISO8601_LEN);

    if (!ok) {
        printf("  iso8601(%lld, %u) gave: %.*s\n", (long long) sec, msec,
               (int) NGX_CDP_ISO8601_LEN, dst);
    }

    free(dst);

    return ok;
}


static void
test_iso8601(void)
{
    CHECK(ngx_cdp_iso_is(0, 0, "1970-01-01T00:00:00.000Z"));
    CHECK(ngx_cdp_iso_is(1795408851, 123, "2026-11-23T04:40:51.123Z"));
    CHECK(ngx_cdp_iso_is(1700000000, 7, "2023-11-14T22:13:20.007Z"));
    CHECK(ngx_cdp_iso_is(1700000000, 50, "2023-11-14T22:13:20.050Z"));
    CHECK(ngx_cdp_iso_is(951782400, 999, "2000-02-29T00:00:00.999Z"));
    CHECK(ngx_cdp_iso_is(951782399, 0, "2000-02-28T23:59:59.000Z"));

    /* out of range milliseconds are clamped, never spill over */
    CHECK(ngx_cdp_iso_is(0, 1000, "1970-01-01T00:00:00.999Z"));
}


/* nginx hands over NULL data with a zero length (no query, no header) */

static void
test_null_empty(void)
{
    u_char         out[NGX_CDP_JSON_STR_MAX(0)], keys[1][NGX_CDP_KEY_LEN];
    ngx_cdp_hmac_key_t  hk[1];
    u_char         id_hex[NGX_CDP_ID_HEX_LEN];
    const u_char  *pos;
    ngx_cdp_kv_t   kv;
    ngx_cdp_hit_t  h;
    ngx_cdp_url_t  u;

    CHECK(ngx_cdp_utf8_valid(NULL, 0) == 1);
    CHECK(ngx_cdp_unescape(out, NULL, 0) == 0);

    pos = NULL;
    CHECK(ngx_cdp_query_next(&pos, NULL, &kv) == 0);

    CHECK(ngx_cdp_hit_parse(NULL, 0, &h, NULL) == NGX_CDP_HIT_OK);
    CHECK(h.event.data == NULL && h.url.data == NULL && h.nprops == 0);

    ngx_cdp_url_parse(NULL, 0, &u, NULL);
    CHECK_STR(u.path, "/");
    CHECK(u.search.data != NULL && u.search.len == 0);
    CHECK_ABSENT(u.source);

    CHECK(ngx_cdp_json_str(out, NULL, 0) == out + 2
          && out[0] == '"' && out[1] == '"');

    memset(keys, 0, sizeof(keys));
    ngx_cdp_hkeys(hk, keys, 1);
    CHECK(ngx_cdp_cookie_decode(NULL, 0, hk, 1, id_hex)
          == NGX_CDP_COOKIE_MALFORMED);
    ngx_cdp_hkeys_free(hk, 1);
}


/* cdp_redirect's targets: what a browser would read as another site */

static void
test_target_check(void)
{
    size_t          i;
    ngx_cdp_str_t   host;
    u_char          big[NGX_CDP_MAX_URL + 2];

    static const struct {
        const char  *url;
        const char  *host;
    } good[] = {
        { "https://wa.me/4915112345678", "wa.me" },
        { "http://shop.example", "shop.example" },
        { "HTTPS://Shop.Example:8443/a?b=c#d", "Shop.Example" },
        { "https://a.partner.example?x=1", "a.partner.example" },
        { "https://x-y.example#top", "x-y.example" },
        { "https://1.2.3.4:80/", "1.2.3.4" }
    };

    static const char  *bad[] = {
        "", "javascript:alert(1)", "JavaScript://x.example/%0aalert(1)",
        "data:text/html,x", "//evil.example", "/local", "ftp://x.example/",
        "https://", "https:///path", "https://wa.me@evil.example/",
        "https://user:pw@x.example", "https:\\\\evil.example",
        "https://evil.example\\@wa.me", "https://x.example/a b",
        "https://x.example/\r\nSet-Cookie:x", "https://x.ex\tample",
        "https://x.example/\"", "https://x.example/<script>",
        "https://.x.example", "https://-x.example", "https://x_y.example",
        "https://x.example:", "https://x.example:123456",
        "https://x.example:8a", "https://x.example\x7f",
        "https://x.example/\xc3\xa9", "http:/x.example", "https:x.example"
    };

    for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        host.data = NULL;
        CHECK(ngx_cdp_target_check((const u_char *) good[i].url,
                                   strlen(good[i].url), &host) == 0);
        CHECK(host.data != NULL && host.len == strlen(good[i].host)
              && memcmp(host.data, good[i].host, host.len) == 0);
    }

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK(ngx_cdp_target_check((const u_char *) bad[i], strlen(bad[i]),
                                   &host) == -1);
    }

    /* at most NGX_CDP_MAX_URL bytes */
    memcpy(big, "https://x.example/", 18);
    memset(big + 18, 'a', sizeof(big) - 18);
    CHECK(ngx_cdp_target_check(big, NGX_CDP_MAX_URL, &host) == 0);
    CHECK(ngx_cdp_target_check(big, NGX_CDP_MAX_URL + 1, &host) == -1);
}


int
main(void)
{
    test_target_check();
    test_hex();
    test_hmac();
    test_derive_key();
    test_cookie_encode();
    test_cookie_rotation();
    test_cookie_roundtrip();
    test_cookie_forged();
    test_cookie_malformed();
    test_utf8();
    test_unescape();
    test_query_next();
    test_hit_defaults();
    test_hit_fields();
    test_hit_props();
    test_hit_limits();
    test_hit_duplicates();
    test_hit_unknown();
    test_hit_bad();
    test_hit_example();
    test_hit_identity();
    test_hit_identity_bad();
    test_url_parts();
    test_url_utm();
    test_json_str();
    test_ip_truncate();
    test_iso8601();
    test_null_empty();

    ngx_cdp_hit_free();
    ngx_cdp_url_free();

    return ngx_cdp_summary();
}
