
/*
 * ngx_cdp: identifier helpers (see ngx_cdp_ident.h).
 *
 * Like ngx_cdp_crypto.c: caller-owned buffers, no allocation, no nginx
 * types.  Normalisers check the whole input before they write anything,
 * so a refused value leaves dst as it was.
 */


#include "ngx_cdp_ident.h"

#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>


#define NGX_CDP_HMAC_LEN  32


static int ngx_cdp_ident_space(u_char c);
static void ngx_cdp_ident_trim(const u_char **p, const u_char **end);
static int ngx_cdp_ident_eq_ci(const u_char *a, size_t alen,
    const u_char *b, size_t blen);
static int ngx_cdp_email_domain_valid(const u_char *p, size_t len);
static int ngx_cdp_phone_cc_valid(const u_char *cc, size_t cc_len);
static int ngx_cdp_phone_keeps_zero(const u_char *cc, size_t cc_len);


/* not even in a dot-atom: RFC 5322 specials other than '@' and '.' */
static const u_char  ngx_cdp_email_specials[] = "<>()[],;:\"\\";

static const ngx_cdp_str_t  ngx_cdp_ident_junk[] = {
    { (const u_char *) "null", 4 },
    { (const u_char *) "undefined", 9 },
    { (const u_char *) "anonymous", 9 },
    { (const u_char *) "guest", 5 },
    { (const u_char *) "none", 4 },
    { (const u_char *) "nan", 3 },
    { (const u_char *) "0", 1 },
    { (const u_char *) "-1", 2 }
};

#define NGX_CDP_IDENT_NJUNK                                                   \
    (sizeof(ngx_cdp_ident_junk) / sizeof(ngx_cdp_ident_junk[0]))


/* helpers */

static int
ngx_cdp_ident_space(u_char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r');
}


static void
ngx_cdp_ident_trim(const u_char **p, const u_char **end)
{
    while (*p < *end && ngx_cdp_ident_space(**p)) {
        (*p)++;
    }

    while (*end > *p && ngx_cdp_ident_space((*end)[-1])) {
        (*end)--;
    }
}


static int
ngx_cdp_ident_eq_ci(const u_char *a, size_t alen, const u_char *b,
    size_t blen)
{
    size_t  i;
    u_char  ca, cb;

    if (alen != blen) {
        return 0;
    }

    for (i = 0; i < alen; i++) {
        ca = a[i];
        cb = b[i];

        if (ca >= 'A' && ca <= 'Z') {
            ca |= 0x20;
        }

        if (cb >= 'A' && cb <= 'Z') {
            cb |= 0x20;
        }

        if (ca != cb) {
            return 0;
        }
    }

    return 1;
}


/* e-mail */

static int
ngx_cdp_email_domain_valid(const u_char *p, size_t len)
{
    size_t  i;
    int     dot;

    /* labels are non-empty: no '.' first, last or twice in a row */

    if (len == 0 || p[0] == '.' || p[len - 1] == '.') {
        return 0;
    }

    dot = 0;

    for (i = 1; i < len; i++) {
        if (p[i] != '.') {
            continue;
        }

        if (p[i - 1] == '.') {
            return 0;
        }

        dot = 1;
    }

    return dot;
}


ssize_t
ngx_cdp_email_normalize(u_char *dst, const u_char *src, size_t len)
{
    size_t        i, n, at;
    u_char        c;
    const u_char  *p, *end;

    if (len == 0) {
        /* src may be NULL */
        return -1;
    }

    p = src;
    end = src + len;

    ngx_cdp_ident_trim(&p, &end);

    n = end - p;

    if (n == 0 || n > NGX_CDP_EMAIL_MAX || !ngx_cdp_utf8_valid(p, n)) {
        return -1;
    }

    at = n;

    for (i = 0; i < n; i++) {
        c = p[i];

        if (c <= ' ' || c == 0x7f
            || memchr(ngx_cdp_email_specials, c,
                      sizeof(ngx_cdp_email_specials) - 1))
        {
            return -1;
        }

        /* C1 controls, U+0080 to U+009F (the input is valid UTF-8) */

        if (c == 0xc2 && p[i + 1] < 0xa0) {
            return -1;
        }

        if (c == '@') {
            if (at != n) {
                return -1;
            }

            at = i;
        }
    }

    if (at == 0 || at == n || at > NGX_CDP_EMAIL_LOCAL_MAX) {
        return -1;
    }

    if (!ngx_cdp_email_domain_valid(p + at + 1, n - at - 1)) {
        return -1;
    }

    /* dst == src is safe: p is never before dst */

    for (i = 0; i < n; i++) {
        c = p[i];

        if (c >= 'A' && c <= 'Z') {
            c |= 0x20;
        }

        dst[i] = c;
    }

    return n;
}


/* phone */

static int
ngx_cdp_phone_cc_valid(const u_char *cc, size_t cc_len)
{
    size_t  i;

    if (cc_len == 0 || cc_len > NGX_CDP_PHONE_CC_MAX || cc[0] == '0') {
        return 0;
    }

    for (i = 0; i < cc_len; i++) {
        if (cc[i] < '0' || cc[i] > '9') {
            return 0;
        }
    }

    return 1;
}


/*
 * Italy and San Marino have no trunk prefix: the leading 0 of a landline
 * is part of the number, in E.164 too (+39 06 ...).
 */

static int
ngx_cdp_phone_keeps_zero(const u_char *cc, size_t cc_len)
{
    return (cc_len == 2 && memcmp(cc, "39", 2) == 0)
           || (cc_len == 3 && memcmp(cc, "378", 3) == 0);
}


ssize_t
ngx_cdp_phone_normalize(u_char *dst, const u_char *src, size_t len,
    const u_char *cc, size_t cc_len)
{
    int           intl;
    size_t        nd;
    u_char        c, *q, digits[NGX_CDP_PHONE_MAX_DIGITS + 2];
    u_char        e164[NGX_CDP_PHONE_MAX];
    const u_char  *p, *end, *d;

    if (len == 0) {
        /* src may be NULL */
        return -1;
    }

    p = src;
    end = src + len;

    ngx_cdp_ident_trim(&p, &end);

    if (p == end) {
        return -1;
    }

    intl = 0;

    if (*p == '+') {
        intl = 1;
        p++;
    }

    /*
     * digits has room for "00" and 15 digits: no number with more can
     * succeed ("00" is the longest prefix that is dropped)
     */

    nd = 0;

    while (p < end) {
        c = *p;

        if (c >= '0' && c <= '9') {
            if (nd == sizeof(digits)) {
                return -1;
            }

            digits[nd++] = c;
            p++;
            continue;
        }

        if (c == '(' && end - p >= 3 && p[1] == '0' && p[2] == ')') {
            /* "+44 (0)20 ...": the trunk prefix, never dialled from abroad */
            p += 3;
            continue;
        }

        switch (c) {

        case ' ':
        case '-':
        case '.':
        case '/':
        case '(':
        case ')':
            p++;
            continue;

        default:
            return -1;
        }
    }

    d = digits;

    if (!intl && nd >= 2 && d[0] == '0' && d[1] == '0') {
        intl = 1;
        d += 2;
        nd -= 2;
    }

    q = e164;
    *q++ = '+';

    if (!intl) {
        if (!ngx_cdp_phone_cc_valid(cc, cc_len)) {
            return -1;
        }

        if (nd > 0 && d[0] == '0' && !ngx_cdp_phone_keeps_zero(cc, cc_len)) {
            d++;
            nd--;

        } else if (cc_len == 1 && cc[0] == '1' && nd == 11 && d[0] == '1') {
            /* North America dials 1 before the 10 digits */
            d++;
            nd--;
        }

        if (nd == 0 || cc_len + nd > NGX_CDP_PHONE_MAX_DIGITS) {
            return -1;
        }

        memcpy(q, cc, cc_len);
        q += cc_len;

    } else if (nd > NGX_CDP_PHONE_MAX_DIGITS) {
        return -1;
    }

    memcpy(q, d, nd);
    q += nd;

    nd = q - e164 - 1;

    if (nd < NGX_CDP_PHONE_MIN_DIGITS || e164[1] == '0') {
        return -1;
    }

    memcpy(dst, e164, nd + 1);

    return nd + 1;
}


/* blocked values */

int
ngx_cdp_ident_blocked(const u_char *v, size_t len, const ngx_cdp_str_t *extra,
    size_t nextra)
{
    size_t        i, n;
    const u_char  *p, *end, *xp, *xend;

    if (len == 0) {
        /* v may be NULL */
        return 1;
    }

    p = v;
    end = v + len;

    ngx_cdp_ident_trim(&p, &end);

    n = end - p;

    if (n == 0) {
        return 1;
    }

    for (i = 0; i < n; i++) {
        if (p[i] != '0' && p[i] != '-') {
            break;
        }
    }

    if (i == n) {
        /* ^[0-]*$: "0", "000", "0-0", "--" */
        return 1;
    }

    for (i = 0; i < NGX_CDP_IDENT_NJUNK; i++) {
        if (ngx_cdp_ident_eq_ci(p, n, ngx_cdp_ident_junk[i].data,
                                ngx_cdp_ident_junk[i].len))
        {
            return 1;
        }
    }

    for (i = 0; i < nextra; i++) {
        if (extra[i].len == 0) {
            /* matches only the empty value, blocked above */
            continue;
        }

        xp = extra[i].data;
        xend = xp + extra[i].len;

        ngx_cdp_ident_trim(&xp, &xend);

        if (ngx_cdp_ident_eq_ci(p, n, xp, xend - xp)) {
            return 1;
        }
    }

    return 0;
}


/* hashed identifiers */

int
ngx_cdp_ident_hash(u_char out[NGX_CDP_IDENT_HASH_LEN],
    const ngx_cdp_hmac_key_t *key, const char *type, const u_char *v,
    size_t len)
{
    size_t  i, tlen, mlen;
    u_char  acc, mac[NGX_CDP_HMAC_LEN];
    u_char  msg[NGX_CDP_IDENT_TYPE_MAX + 1 + NGX_CDP_IDENT_VALUE_MAX];

    tlen = strlen(type);

    /* a ':' in type would make "a:b" + "c" the same message as "a" + "b:c" */

    if (tlen == 0 || tlen > NGX_CDP_IDENT_TYPE_MAX
        || memchr(type, ':', tlen) != NULL
        || len > NGX_CDP_IDENT_VALUE_MAX)
    {
        return 0;
    }

    memcpy(msg, type, tlen);
    msg[tlen] = ':';

    if (len) {
        /* v may be NULL when len is 0 */
        memcpy(msg + tlen + 1, v, len);
    }

    mlen = tlen + 1 + len;

    ngx_cdp_hmac(mac, key, msg, mlen);

    /* the raw identifier does not stay behind on the stack */
    OPENSSL_cleanse(msg, mlen);

    /*
     * ngx_cdp_hmac() zeroes its output when libcrypto fails; a real MAC of
     * 32 zero bytes has probability 2^-256
     */

    acc = 0;

    for (i = 0; i < NGX_CDP_HMAC_LEN; i++) {
        acc |= mac[i];
    }

    if (acc == 0) {
        return 0;
    }

    ngx_cdp_hex(out, mac, NGX_CDP_HMAC_LEN);

    return 1;
}


typedef struct {
    size_t  len;                        /* 0: empty */
    u_char  id[NGX_CDP_IDENT_MEMO_ID_MAX];
    u_char  h[NGX_CDP_IDENT_HASH_LEN];
} ngx_cdp_ident_memo_t;


/* two ways a set; old[set] is the way a miss replaces */
static ngx_cdp_ident_memo_t  ngx_cdp_ident_memo[NGX_CDP_IDENT_MEMO / 2][2];
static u_char                ngx_cdp_ident_memo_old[NGX_CDP_IDENT_MEMO / 2];
static u_char                ngx_cdp_ident_memo_key[NGX_CDP_KEY_LEN];
static int                   ngx_cdp_ident_memo_keyed;


int
ngx_cdp_ident_hash_user_id(u_char out[NGX_CDP_IDENT_HASH_LEN],
    const ngx_cdp_hmac_key_t *key, const u_char *v, size_t len)
{
    size_t                 i, set;
    uint32_t               fnv;
    ngx_cdp_ident_memo_t  *m;

    if (len == 0 || len > NGX_CDP_IDENT_MEMO_ID_MAX) {
        return ngx_cdp_ident_hash(out, key, "user_id", v, len);
    }

    if (!ngx_cdp_ident_memo_keyed
        || memcmp(ngx_cdp_ident_memo_key, key->raw, NGX_CDP_KEY_LEN) != 0)
    {
        memset(ngx_cdp_ident_memo, 0, sizeof(ngx_cdp_ident_memo));
        memcpy(ngx_cdp_ident_memo_key, key->raw, NGX_CDP_KEY_LEN);
        ngx_cdp_ident_memo_keyed = 1;
    }

    fnv = 2166136261u;

    for (i = 0; i < len; i++) {
        fnv = (fnv ^ v[i]) * 16777619u;
    }

    set = fnv % (NGX_CDP_IDENT_MEMO / 2);

    for (i = 0; i < 2; i++) {
        m = &ngx_cdp_ident_memo[set][i];

        if (m->len == len && memcmp(m->id, v, len) == 0) {
            memcpy(out, m->h, NGX_CDP_IDENT_HASH_LEN);
            ngx_cdp_ident_memo_old[set] = (u_char) (i ^ 1);
            return 1;
        }
    }

    if (!ngx_cdp_ident_hash(out, key, "user_id", v, len)) {
        return 0;
    }

    i = ngx_cdp_ident_memo_old[set];
    m = &ngx_cdp_ident_memo[set][i];

    memcpy(m->id, v, len);
    memcpy(m->h, out, NGX_CDP_IDENT_HASH_LEN);
    m->len = len;

    ngx_cdp_ident_memo_old[set] = (u_char) (i ^ 1);

    return 1;
}


int
ngx_cdp_idsig_check(const ngx_cdp_hit_t *hit, const ngx_cdp_hmac_key_t *keys,
    size_t nkeys, time_t now)
{
    size_t   i, len;
    u_char  *p;
    time_t   exp;
    u_char   mac[NGX_CDP_HMAC_LEN], hex[NGX_CDP_SIG_HEX_LEN];
    u_char   msg[sizeof("uid=\nemail=\nexp=") - 1 + NGX_CDP_MAX_UID
                 + NGX_CDP_MAX_HIT_EMAIL + NGX_CDP_MAX_EXP];

    if (hit->uid.data == NULL && hit->email.data == NULL) {
        return (hit->ident_bad || hit->sig.data) ? NGX_CDP_IDSIG_BAD
                                                 : NGX_CDP_IDSIG_NONE;
    }

    if (hit->ident_bad) {
        return NGX_CDP_IDSIG_BAD;
    }

    if (hit->sig.data == NULL || hit->exp.data == NULL) {
        return NGX_CDP_IDSIG_UNSIGNED;
    }

    if (hit->sig.len != NGX_CDP_SIG_HEX_LEN
        || hit->exp.len == 0 || hit->exp.len > 12)
    {
        return NGX_CDP_IDSIG_BAD;
    }

    exp = 0;

    for (i = 0; i < hit->exp.len; i++) {
        if (hit->exp.data[i] < '0' || hit->exp.data[i] > '9') {
            return NGX_CDP_IDSIG_BAD;
        }

        exp = exp * 10 + (hit->exp.data[i] - '0');
    }

    /* the canonical string: "uid=" U "\nemail=" E "\nexp=" X */

    p = msg;
    memcpy(p, "uid=", 4);
    p += 4;

    if (hit->uid.len) {
        memcpy(p, hit->uid.data, hit->uid.len);
        p += hit->uid.len;
    }

    memcpy(p, "\nemail=", 7);
    p += 7;

    if (hit->email.len) {
        memcpy(p, hit->email.data, hit->email.len);
        p += hit->email.len;
    }

    memcpy(p, "\nexp=", 5);
    p += 5;
    memcpy(p, hit->exp.data, hit->exp.len);
    p += hit->exp.len;

    len = p - msg;

    for (i = 0; i < nkeys; i++) {
        ngx_cdp_hmac(mac, &keys[i], msg, len);
        ngx_cdp_hex(hex, mac, NGX_CDP_HMAC_LEN);

        if (CRYPTO_memcmp(hex, hit->sig.data, NGX_CDP_SIG_HEX_LEN) == 0) {
            OPENSSL_cleanse(msg, len);
            return (exp <= now) ? NGX_CDP_IDSIG_EXPIRED : NGX_CDP_IDSIG_OK;
        }
    }

    OPENSSL_cleanse(msg, len);

    return NGX_CDP_IDSIG_BAD;
}


int
ngx_cdp_aid_hash(u_char out[NGX_CDP_AIDH_LEN],
    const u_char aid[NGX_CDP_ID_HEX_LEN])
{
    unsigned int  n;
    u_char        msg[sizeof("anonymous_id:") - 1 + NGX_CDP_ID_HEX_LEN];
    u_char        md[EVP_MAX_MD_SIZE];

    memcpy(msg, "anonymous_id:", sizeof("anonymous_id:") - 1);
    memcpy(msg + sizeof("anonymous_id:") - 1, aid, NGX_CDP_ID_HEX_LEN);

    n = 0;

    if (EVP_Digest(msg, sizeof(msg), md, &n, EVP_sha1(), NULL) != 1
        || n != NGX_CDP_AIDH_LEN / 2)
    {
        return 0;
    }

    ngx_cdp_hex(out, md, n);

    return 1;
}
