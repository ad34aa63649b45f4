
/*
 * ngx_cdp_consent.c:
 *
 * - ngx_cdp_consent_cookie_decode() never crashes, and agrees with an
 *   independent check of the format; for a well-formed input the answer is
 *   exactly known: VALID when the input is what encode() makes of its
 *   fields with keys[0], VALID_OLD when it is keys[1]'s, else FORGED.  So
 *   a cookie decoded as valid re-encodes to the same bytes.
 * - A cookie signed from fields taken from the input decodes back to them,
 *   only with the key that signed it, and any one-byte change of it no
 *   longer verifies (the changed and cut-short cookies go through the
 *   oracle above too).
 * - ngx_cdp_consent_parse() agrees with a reference parser, and parse /
 *   format round trip; ngx_cdp_consent_resolve() follows its rule.
 */


#include "fuzz.h"
#include "ngx_cdp_consent.h"


#define FILL  0xee


static ngx_cdp_hmac_key_t  fuzz_keys[2];
static int                 fuzz_init;

static const char  fuzz_version_chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-";


/* the cookie format, checked another way: fields split at the dots */

typedef struct {
    int        purposes;
    size_t     vpos;
    size_t     vlen;
    long long  issued;
    size_t     tag;                     /* offset of the tag */
} fuzz_fields_t;


static int
fuzz_well_formed(const u_char *p, size_t len, fuzz_fields_t *f)
{
    size_t  i, last, prev;

    if (len < 5 || p[0] != 'c' || p[1] != '1' || p[2] != '.'
        || p[3] < '0' || p[3] > '7' || p[4] != '.')
    {
        return 0;
    }

    /* the last '.' starts the tag, the one before it starts issued */

    for (last = len; last > 4 && p[last - 1] != '.'; last--) { /* void */ }

    if (last - 1 <= 4) {
        return 0;
    }

    last--;

    for (prev = last; prev > 4 && p[prev - 1] != '.'; prev--) { /* void */ }

    if (prev - 1 <= 4) {
        return 0;
    }

    prev--;

    /* tag */
    if (len - last - 1 != 16) {
        return 0;
    }

    for (i = last + 1; i < len; i++) {
        if (p[i] == '\0'
            || strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                      "0123456789-_", p[i]) == NULL)
        {
            return 0;
        }
    }

    /* issued */
    if (last - prev - 1 < 1 || last - prev - 1 > 12) {
        return 0;
    }

    if (p[prev + 1] == '0' && last - prev - 1 > 1) {
        return 0;
    }

    f->issued = 0;

    for (i = prev + 1; i < last; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return 0;
        }

        f->issued = f->issued * 10 + (p[i] - '0');
    }

    /* version, dots allowed */
    if (prev - 5 < 1 || prev - 5 > 32) {
        return 0;
    }

    for (i = 5; i < prev; i++) {
        if (p[i] == '\0' || strchr(fuzz_version_chars, p[i]) == NULL) {
            return 0;
        }
    }

    f->purposes = p[3] - '0';
    f->vpos = 5;
    f->vlen = prev - 5;
    f->tag = last + 1;

    return 1;
}


static void
fuzz_decode_input(const uint8_t *data, size_t size)
{
    int                       rc;
    size_t                    n0, n1;
    u_char                    *in;
    u_char                    c0[NGX_CDP_CONSENT_COOKIE_MAX];
    u_char                    c1[NGX_CDP_CONSENT_COOKIE_MAX];
    fuzz_fields_t             f;
    ngx_cdp_consent_cookie_t  out;

    in = fuzz_dup(data, size);
    memset(&out, FILL, sizeof(out));

    rc = ngx_cdp_consent_cookie_decode(in, size, fuzz_keys, 2, &out);

    FUZZ_CHECK(memcmp(in, data, size) == 0);

    if (!fuzz_well_formed(in, size, &f)) {
        FUZZ_CHECK(rc == NGX_CDP_CONSENT_MALFORMED);
        FUZZ_CHECK(((u_char *) &out)[0] == FILL
                   && ((u_char *) &out)[sizeof(out) - 1] == FILL);
        free(in);
        return;
    }

    FUZZ_CHECK(size >= NGX_CDP_CONSENT_COOKIE_MIN
               && size <= NGX_CDP_CONSENT_COOKIE_MAX);

    /* what the two keys make of the same fields */

    n0 = ngx_cdp_consent_cookie_encode(c0, f.purposes, in + f.vpos, f.vlen,
                                       (time_t) f.issued, &fuzz_keys[0]);
    n1 = ngx_cdp_consent_cookie_encode(c1, f.purposes, in + f.vpos, f.vlen,
                                       (time_t) f.issued, &fuzz_keys[1]);

    /* the encoding is canonical: same signed part, only the tag differs */
    FUZZ_CHECK(n0 == size && n1 == size);
    FUZZ_CHECK(memcmp(c0, in, f.tag) == 0 && memcmp(c1, in, f.tag) == 0);

    if (memcmp(c0, in, size) == 0) {
        FUZZ_CHECK(rc == NGX_CDP_CONSENT_VALID);

    } else if (memcmp(c1, in, size) == 0) {
        FUZZ_CHECK(rc == NGX_CDP_CONSENT_VALID_OLD);

    } else {
        FUZZ_CHECK(rc == NGX_CDP_CONSENT_FORGED);
    }

    if (rc == NGX_CDP_CONSENT_VALID || rc == NGX_CDP_CONSENT_VALID_OLD) {
        FUZZ_CHECK(out.purposes == f.purposes
                   && out.version.data == in + f.vpos
                   && out.version.len == f.vlen
                   && (long long) out.issued == f.issued);

    } else {
        FUZZ_CHECK(((u_char *) &out)[0] == FILL
                   && ((u_char *) &out)[sizeof(out) - 1] == FILL);
    }

    /* the re-signed input always verifies, with the key that signed it */

    memset(&out, FILL, sizeof(out));
    FUZZ_CHECK(ngx_cdp_consent_cookie_decode(c0, n0, fuzz_keys, 2, &out)
               == NGX_CDP_CONSENT_VALID);
    FUZZ_CHECK(ngx_cdp_consent_cookie_decode(c1, n1, fuzz_keys, 2, &out)
               == NGX_CDP_CONSENT_VALID_OLD);
    FUZZ_CHECK(ngx_cdp_consent_cookie_decode(c1, n1, fuzz_keys, 1, &out)
               == NGX_CDP_CONSENT_FORGED);

    free(in);
}


/* sign fields taken from the input */

static void
fuzz_sign(const uint8_t *data, size_t size)
{
    int                       purposes, k, rc;
    size_t                    i, n, vlen, pos;
    u_char                    *dst, version[NGX_CDP_CONSENT_VERSION_MAX];
    u_char                    c;
    long long                 issued;
    ngx_cdp_consent_cookie_t  out;

    if (size < 8) {
        return;
    }

    purposes = data[0] & 7;
    k = (data[0] >> 3) & 1;
    vlen = 1 + data[1] % NGX_CDP_CONSENT_VERSION_MAX;

    issued = 0;

    for (i = 2; i < 7; i++) {
        issued = (issued << 8) | data[i];
    }

    issued %= NGX_CDP_CONSENT_ISSUED_MAX + 1;

    for (i = 0; i < vlen; i++) {
        c = data[7 + i % (size - 7)];
        version[i] = (u_char) fuzz_version_chars[c % 65];
    }

    /* exactly the documented size, so ASan sees any overrun */
    dst = malloc(NGX_CDP_CONSENT_COOKIE_MAX);
    FUZZ_CHECK(dst != NULL);

    n = ngx_cdp_consent_cookie_encode(dst, purposes, version, vlen,
                                      (time_t) issued, &fuzz_keys[k]);
    FUZZ_CHECK(n >= NGX_CDP_CONSENT_COOKIE_MIN
               && n <= NGX_CDP_CONSENT_COOKIE_MAX);

    rc = ngx_cdp_consent_cookie_decode(dst, n, fuzz_keys, 2, &out);
    FUZZ_CHECK(rc == (k == 0 ? NGX_CDP_CONSENT_VALID
                             : NGX_CDP_CONSENT_VALID_OLD));
    FUZZ_CHECK(out.purposes == purposes && out.version.len == vlen
               && out.version.data == dst + 5
               && memcmp(out.version.data, version, vlen) == 0
               && (long long) out.issued == issued);

    FUZZ_CHECK(ngx_cdp_consent_cookie_decode(dst, n, &fuzz_keys[!k], 1,
                                             &out)
               == NGX_CDP_CONSENT_FORGED);

    fuzz_decode_input(dst, n);

    /*
     * One byte changed, to a byte from the input: no longer verifies.
     * Near-valid cookies like this one (and it cut short) give the exact
     * oracle of fuzz_decode_input() plenty of well-formed inputs whatever
     * the corpus holds.
     */
    pos = data[1] % n;
    c = data[size - 1];

    if (dst[pos] != c) {
        dst[pos] = c;
        rc = ngx_cdp_consent_cookie_decode(dst, n, fuzz_keys, 2, &out);
        FUZZ_CHECK(rc == NGX_CDP_CONSENT_FORGED
                   || rc == NGX_CDP_CONSENT_MALFORMED);

        fuzz_decode_input(dst, n);
    }

    fuzz_decode_input(dst, n - data[2] % 4);

    /* out of range: refused, nothing written */
    memset(dst, FILL, NGX_CDP_CONSENT_COOKIE_MAX);
    FUZZ_CHECK(ngx_cdp_consent_cookie_encode(dst, purposes | 8, version,
                                             vlen, (time_t) issued,
                                             &fuzz_keys[k])
               == 0);
    FUZZ_CHECK(ngx_cdp_consent_cookie_encode(dst, purposes, version, vlen,
                                             (time_t) (issued
                                             + NGX_CDP_CONSENT_ISSUED_MAX
                                             + 1),
                                             &fuzz_keys[k])
               == 0);
    FUZZ_CHECK(dst[0] == FILL && dst[NGX_CDP_CONSENT_COOKIE_MAX - 1] == FILL);

    free(dst);
}


/* the text form, against a reference parser */

static int
fuzz_ref_parse(const u_char *p, size_t len)
{
    int     purposes;
    size_t  i, s, e, t;
    char    tok[16];

    static const char  *names[] = {
        "analytics", "marketing", "personalization", "necessary"
    };
    static const int  bits[] = { 1, 2, 4, 0 };

    /* split at ',', ' ', '\t'; keep the lower-cased tokens */

    purposes = 0;
    t = 0;
    i = 0;

    while (i < len) {
        while (i < len && (p[i] == ',' || p[i] == ' ' || p[i] == '\t')) {
            i++;
        }

        if (i == len) {
            break;
        }

        s = i;

        while (i < len && p[i] != ',' && p[i] != ' ' && p[i] != '\t') {
            i++;
        }

        e = i;
        t++;

        if (e - s >= sizeof(tok)) {
            return -1;
        }

        for (i = s; i < e; i++) {
            tok[i - s] = (p[i] >= 'A' && p[i] <= 'Z') ? p[i] + 32
                                                        : (char) p[i];
        }

        tok[e - s] = '\0';

        if (memchr(p + s, '\0', e - s) != NULL) {
            return -1;
        }

        if (t == 1 && (strcmp(tok, "all") == 0 || strcmp(tok, "none") == 0))
        {
            /* a keyword: only when nothing else follows */
            while (i < len
                   && (p[i] == ',' || p[i] == ' ' || p[i] == '\t'))
            {
                i++;
            }

            if (i != len) {
                return -1;
            }

            return tok[0] == 'a' ? 7 : 0;
        }

        for (s = 0; s < 4; s++) {
            if (strcmp(tok, names[s]) == 0) {
                purposes |= bits[s];
                break;
            }
        }

        if (s == 4) {
            return -1;
        }
    }

    return purposes;
}


static void
fuzz_text(const uint8_t *data, size_t size)
{
    int                      rc, again, p, d;
    size_t                   n;
    u_char                  *in, *text;
    ngx_cdp_consent_state_t  st;

    in = fuzz_dup(data, size);

    rc = ngx_cdp_consent_parse(in, size);
    FUZZ_CHECK(rc >= -1 && rc <= NGX_CDP_CONSENT_ALL);
    FUZZ_CHECK(rc == fuzz_ref_parse(in, size));

    text = malloc(NGX_CDP_CONSENT_TEXT_MAX);
    FUZZ_CHECK(text != NULL);

    n = ngx_cdp_consent_format(text, rc);
    FUZZ_CHECK(n >= 4 && n <= NGX_CDP_CONSENT_TEXT_MAX);

    again = ngx_cdp_consent_parse(text, n);
    FUZZ_CHECK(again == (rc < 0 ? 0 : rc));

    /* any int formats to something that parses to its purposes */

    p = 0;

    if (size >= sizeof(int)) {
        memcpy(&p, data, sizeof(int));
    }

    n = ngx_cdp_consent_format(text, p);
    FUZZ_CHECK(n >= 4 && n <= NGX_CDP_CONSENT_TEXT_MAX);
    FUZZ_CHECK(ngx_cdp_consent_parse(text, n)
               == (p < 0 ? 0 : (p & NGX_CDP_CONSENT_ALL)));

    /* resolve: the parsed value as CMP, over a default from the input */

    d = size ? (int) (data[size - 1] & 0x0f) - 1 : -1;

    st = ngx_cdp_consent_resolve(-1, rc, size & 1, d);
    FUZZ_CHECK(st.purposes >= 0 && st.purposes <= NGX_CDP_CONSENT_ALL);

    if (rc >= 0) {
        FUZZ_CHECK(st.source == NGX_CDP_CONSENT_SRC_CMP && st.purposes == rc);

    } else if (d < 0) {
        FUZZ_CHECK(st.source == NGX_CDP_CONSENT_SRC_NONE && st.purposes == 0);

    } else if ((size & 1) && (d & NGX_CDP_CONSENT_MARKETING)) {
        FUZZ_CHECK(st.source == NGX_CDP_CONSENT_SRC_GPC
                   && st.purposes == (d & 7 & ~NGX_CDP_CONSENT_MARKETING));

    } else {
        FUZZ_CHECK(st.source == NGX_CDP_CONSENT_SRC_DEFAULT
                   && st.purposes == (d & 7));
    }

    FUZZ_CHECK(strcmp(ngx_cdp_consent_source_name(st.source), "unknown")
               != 0);

    free(text);
    free(in);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char  raw[NGX_CDP_KEY_LEN];

    if (!fuzz_init) {
        ngx_cdp_derive_key(raw, (const u_char *) "fuzz secret 1", 13,
                           "consent");
        FUZZ_CHECK(ngx_cdp_hmac_key_init(&fuzz_keys[0], raw));
        ngx_cdp_derive_key(raw, (const u_char *) "fuzz secret 2", 13,
                           "consent");
        FUZZ_CHECK(ngx_cdp_hmac_key_init(&fuzz_keys[1], raw));
        fuzz_init = 1;
    }

    fuzz_decode_input(data, size);
    fuzz_sign(data, size);
    fuzz_text(data, size);

    return 0;
}
