
/*
 * ngx_cdp: consent, the pure parts (see ngx_cdp_consent.h).
 *
 * Like ngx_cdp_crypto.c: caller-owned buffers, no allocation, no nginx
 * types.  The cookie decoder checks the whole format before it computes
 * anything, and writes its result only for a cookie that verifies.
 */


#include "ngx_cdp_consent.h"

#include <string.h>

#include <openssl/crypto.h>


#define NGX_CDP_HMAC_LEN  32


static int ngx_cdp_consent_sep(u_char c);
static int ngx_cdp_consent_eq_ci(const u_char *a, size_t alen,
    const char *b);
static int ngx_cdp_consent_version_valid(const u_char *v, size_t len);
static int ngx_cdp_consent_tag(u_char mac[NGX_CDP_HMAC_LEN],
    const ngx_cdp_hmac_key_t *key, const u_char *signed_part, size_t len);


typedef struct {
    const char  *name;
    size_t       len;
    int          bit;
} ngx_cdp_consent_purpose_t;

/* in the order format() writes them */

static const ngx_cdp_consent_purpose_t  ngx_cdp_consent_purposes[] = {
    { "analytics", 9, NGX_CDP_CONSENT_ANALYTICS },
    { "marketing", 9, NGX_CDP_CONSENT_MARKETING },
    { "personalization", 15, NGX_CDP_CONSENT_PERSONALIZATION },
    { "necessary", 9, 0 }
};

#define NGX_CDP_CONSENT_NPURPOSES                                             \
    (sizeof(ngx_cdp_consent_purposes) / sizeof(ngx_cdp_consent_purposes[0]))

static const u_char  ngx_cdp_consent_prefix[] = "c1.";
static const u_char  ngx_cdp_consent_label[] = "consent:";

static const char  *ngx_cdp_consent_sources[] = {
    "none",                             /* NGX_CDP_CONSENT_SRC_NONE */
    "cookie",                           /* NGX_CDP_CONSENT_SRC_COOKIE */
    "cmp",                              /* NGX_CDP_CONSENT_SRC_CMP */
    "gpc",                              /* NGX_CDP_CONSENT_SRC_GPC */
    "default"                           /* NGX_CDP_CONSENT_SRC_DEFAULT */
};


/* the text form */

static int
ngx_cdp_consent_sep(u_char c)
{
    return c == ',' || c == ' ' || c == '\t';
}


static int
ngx_cdp_consent_eq_ci(const u_char *a, size_t alen, const char *b)
{
    size_t  i;
    u_char  c;

    if (alen != strlen(b)) {
        return 0;
    }

    for (i = 0; i < alen; i++) {
        c = a[i];

        if (c >= 'A' && c <= 'Z') {
            c |= 0x20;
        }

        if (c != (u_char) b[i]) {
            return 0;
        }
    }

    return 1;
}


int
ngx_cdp_consent_parse(const u_char *s, size_t len)
{
    int           purposes;
    size_t        i;
    const u_char  *p, *end, *tok;

    if (len == 0) {
        return 0;
    }

    p = s;
    end = s + len;

    while (p < end && ngx_cdp_consent_sep(*p)) {
        p++;
    }

    while (end > p && ngx_cdp_consent_sep(end[-1])) {
        end--;
    }

    if (p == end) {
        return 0;
    }

    if (ngx_cdp_consent_eq_ci(p, end - p, "all")) {
        return NGX_CDP_CONSENT_ALL;
    }

    if (ngx_cdp_consent_eq_ci(p, end - p, "none")) {
        return 0;
    }

    purposes = 0;

    while (p < end) {
        tok = p;

        while (p < end && !ngx_cdp_consent_sep(*p)) {
            p++;
        }

        for (i = 0; i < NGX_CDP_CONSENT_NPURPOSES; i++) {
            if (ngx_cdp_consent_eq_ci(tok, p - tok,
                                      ngx_cdp_consent_purposes[i].name))
            {
                purposes |= ngx_cdp_consent_purposes[i].bit;
                break;
            }
        }

        if (i == NGX_CDP_CONSENT_NPURPOSES) {
            return -1;
        }

        while (p < end && ngx_cdp_consent_sep(*p)) {
            p++;
        }
    }

    return purposes;
}


size_t
ngx_cdp_consent_format(u_char *dst, int purposes)
{
    size_t   i;
    u_char  *p;

    p = dst;

    if (purposes > 0) {
        for (i = 0; i < NGX_CDP_CONSENT_NPURPOSES; i++) {
            if (!(purposes & ngx_cdp_consent_purposes[i].bit)) {
                continue;
            }

            if (p != dst) {
                *p++ = ',';
            }

            memcpy(p, ngx_cdp_consent_purposes[i].name,
                   ngx_cdp_consent_purposes[i].len);
            p += ngx_cdp_consent_purposes[i].len;
        }
    }

    if (p == dst) {
        memcpy(p, "none", 4);
        p += 4;
    }

    return p - dst;
}


/* the signed cookie */

static int
ngx_cdp_consent_version_valid(const u_char *v, size_t len)
{
    size_t  i;
    u_char  c;

    if (len == 0 || len > NGX_CDP_CONSENT_VERSION_MAX) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        c = v[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
              || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
        {
            return 0;
        }
    }

    return 1;
}


/*
 * HMAC(key, "consent:" signed_part).  ngx_cdp_hmac() reports a libcrypto
 * failure only by writing zeros; 32 zero bytes are taken as that failure
 * (a real MAC is all zeros with probability 2^-256), so that a failing
 * libcrypto can neither sign nor accept a tag of zeros.
 */

static int
ngx_cdp_consent_tag(u_char mac[NGX_CDP_HMAC_LEN],
    const ngx_cdp_hmac_key_t *key, const u_char *signed_part, size_t len)
{
    size_t  i;
    u_char  msg[sizeof(ngx_cdp_consent_label) - 1
                + NGX_CDP_CONSENT_COOKIE_MAX];
    u_char  any;

    if (len > NGX_CDP_CONSENT_COOKIE_MAX) {
        return 0;
    }

    memcpy(msg, ngx_cdp_consent_label, sizeof(ngx_cdp_consent_label) - 1);
    memcpy(msg + sizeof(ngx_cdp_consent_label) - 1, signed_part, len);

    ngx_cdp_hmac(mac, key, msg, sizeof(ngx_cdp_consent_label) - 1 + len);

    any = 0;

    for (i = 0; i < NGX_CDP_HMAC_LEN; i++) {
        any |= mac[i];
    }

    return any != 0;
}


size_t
ngx_cdp_consent_cookie_encode(u_char *dst, int purposes,
    const u_char *version, size_t vlen, time_t issued,
    const ngx_cdp_hmac_key_t *key)
{
    size_t      n, nd;
    u_char      buf[NGX_CDP_CONSENT_COOKIE_MAX], digits[24];
    u_char      mac[NGX_CDP_HMAC_LEN], *p;
    long long   t;

    if (purposes < 0 || purposes > NGX_CDP_CONSENT_ALL
        || !ngx_cdp_consent_version_valid(version, vlen)
        || issued < 0 || (long long) issued > NGX_CDP_CONSENT_ISSUED_MAX)
    {
        return 0;
    }

    /* built aside: dst is written only when the whole cookie is ready */

    p = buf;

    memcpy(p, ngx_cdp_consent_prefix, sizeof(ngx_cdp_consent_prefix) - 1);
    p += sizeof(ngx_cdp_consent_prefix) - 1;

    *p++ = (u_char) ('0' + purposes);
    *p++ = '.';

    memcpy(p, version, vlen);
    p += vlen;
    *p++ = '.';

    t = (long long) issued;
    nd = 0;

    do {
        digits[nd++] = (u_char) ('0' + t % 10);
        t /= 10;
    } while (t);

    while (nd) {
        *p++ = digits[--nd];
    }

    if (!ngx_cdp_consent_tag(mac, key, buf, p - buf)) {
        return 0;
    }

    *p++ = '.';

    ngx_cdp_tag_encode(p, mac);
    p += NGX_CDP_TAG_B64_LEN;

    n = p - buf;
    memcpy(dst, buf, n);

    return n;
}


int
ngx_cdp_consent_cookie_decode(const u_char *src, size_t len,
    const ngx_cdp_hmac_key_t *keys, size_t nkeys,
    ngx_cdp_consent_cookie_t *out)
{
    size_t      i, k, dot, vend;
    u_char      tag[NGX_CDP_TAG_LEN], mac[NGX_CDP_HMAC_LEN];
    long long   issued;

    if (len < NGX_CDP_CONSENT_COOKIE_MIN || len > NGX_CDP_CONSENT_COOKIE_MAX)
    {
        return NGX_CDP_CONSENT_MALFORMED;
    }

    if (memcmp(src, ngx_cdp_consent_prefix,
               sizeof(ngx_cdp_consent_prefix) - 1) != 0
        || src[3] < '0' || src[3] > '7'
        || src[4] != '.')
    {
        return NGX_CDP_CONSENT_MALFORMED;
    }

    /*
     * From the right: the tag has no '.', nor has issued, so the version
     * is whatever lies between "c1.P." and issued, dots included.
     */

    dot = len - NGX_CDP_TAG_B64_LEN - 1;

    if (src[dot] != '.') {
        return NGX_CDP_CONSENT_MALFORMED;
    }

    if (!ngx_cdp_tag_decode(tag, src + dot + 1)) {
        return NGX_CDP_CONSENT_MALFORMED;
    }

    /* issued: the digits right before the tag's '.' */

    vend = dot;

    while (vend > 5 && src[vend - 1] >= '0' && src[vend - 1] <= '9') {
        vend--;
    }

    k = dot - vend;

    if (k == 0 || k > NGX_CDP_CONSENT_ISSUED_DIGITS
        || (src[vend] == '0' && k > 1)
        || src[vend - 1] != '.')
    {
        return NGX_CDP_CONSENT_MALFORMED;
    }

    issued = 0;

    for (i = vend; i < dot; i++) {
        issued = issued * 10 + (src[i] - '0');
    }

    if ((long long) (time_t) issued != issued) {
        /* a 32-bit time_t */
        return NGX_CDP_CONSENT_MALFORMED;
    }

    /* version: from after "c1.P." to the '.' before issued */

    vend--;

    if (vend < 5 || !ngx_cdp_consent_version_valid(src + 5, vend - 5)) {
        return NGX_CDP_CONSENT_MALFORMED;
    }

    for (k = 0; k < nkeys; k++) {
        if (!ngx_cdp_consent_tag(mac, &keys[k], src, dot)) {
            continue;
        }

        if (CRYPTO_memcmp(tag, mac, NGX_CDP_TAG_LEN) == 0) {
            out->purposes = src[3] - '0';
            out->version.data = src + 5;
            out->version.len = vend - 5;
            out->issued = (time_t) issued;

            return k == 0 ? NGX_CDP_CONSENT_VALID : NGX_CDP_CONSENT_VALID_OLD;
        }
    }

    return NGX_CDP_CONSENT_FORGED;
}


/* the state of a request */

ngx_cdp_consent_state_t
ngx_cdp_consent_resolve(int cookie, int cmp, int gpc, int dflt)
{
    ngx_cdp_consent_state_t  st;

    if (cookie >= 0) {
        st.purposes = cookie & NGX_CDP_CONSENT_ALL;
        st.source = NGX_CDP_CONSENT_SRC_COOKIE;
        return st;
    }

    if (cmp >= 0) {
        st.purposes = cmp & NGX_CDP_CONSENT_ALL;
        st.source = NGX_CDP_CONSENT_SRC_CMP;
        return st;
    }

    if (dflt < 0) {
        /* with nothing configured the default is no consent */
        st.purposes = 0;
        st.source = NGX_CDP_CONSENT_SRC_NONE;
        return st;
    }

    st.purposes = dflt & NGX_CDP_CONSENT_ALL;
    st.source = NGX_CDP_CONSENT_SRC_DEFAULT;

    if (gpc && (st.purposes & NGX_CDP_CONSENT_MARKETING)) {
        st.purposes &= ~NGX_CDP_CONSENT_MARKETING;
        st.source = NGX_CDP_CONSENT_SRC_GPC;
    }

    return st;
}


const char *
ngx_cdp_consent_source_name(int source)
{
    if (source < 0
        || (size_t) source >= sizeof(ngx_cdp_consent_sources)
                              / sizeof(ngx_cdp_consent_sources[0]))
    {
        return "unknown";
    }

    return ngx_cdp_consent_sources[source];
}
