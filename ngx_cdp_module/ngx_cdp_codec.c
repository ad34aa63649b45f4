
/*
 * ngx_cdp: pure parsers and codecs (see ngx_cdp_codec.h).
 *
 * Everything here works on caller-owned buffers and never allocates, so
 * the same code runs in the nginx worker, the unit tests and the fuzzers.
 */


#include "ngx_cdp_codec.h"

#include <limits.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/params.h>


#define NGX_CDP_HMAC_LEN  32


static int ngx_cdp_hmac_sha256(u_char out[NGX_CDP_HMAC_LEN],
    const u_char *key, size_t key_len, const u_char *msg, size_t len);
static int ngx_cdp_hmac_keyed(u_char out[NGX_CDP_HMAC_LEN],
    const ngx_cdp_hmac_key_t *key, const u_char *msg, size_t len);
static void ngx_cdp_cookie_tag(u_char tag[NGX_CDP_HMAC_LEN],
    const u_char *hex, const ngx_cdp_hmac_key_t *key, int *ok);
static int ngx_cdp_hex_value(u_char c);
static ssize_t ngx_cdp_unescape_any(u_char *dst, const u_char *src,
    size_t len, int plus);
static int ngx_cdp_b64url_value(u_char c);
static size_t ngx_cdp_utf8_seq(const u_char *p, const u_char *end);
static int ngx_cdp_prop_name_valid(const u_char *p, size_t len);
static int ngx_cdp_decode_value(u_char *dst, const ngx_cdp_kv_t *kv,
    size_t max, size_t *len);
static int ngx_cdp_utm_field(const u_char *key, size_t len);


static const u_char  ngx_cdp_hex_digits[] = "0123456789abcdef";

static const u_char  ngx_cdp_b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static const u_char  ngx_cdp_aid_prefix[] = "aid:";

static const u_char  ngx_cdp_root_path[] = "/";
static const u_char  ngx_cdp_empty[] = "";


/* crypto */

static int
ngx_cdp_hmac_sha256(u_char out[NGX_CDP_HMAC_LEN], const u_char *key,
    size_t key_len, const u_char *msg, size_t len)
{
    unsigned int  out_len;

    if (key_len > INT_MAX) {
        return 0;
    }

    out_len = 0;

    if (HMAC(EVP_sha256(), key, (int) key_len, msg, len, out, &out_len)
        == NULL
        || out_len != NGX_CDP_HMAC_LEN)
    {
        return 0;
    }

    return 1;
}


void
ngx_cdp_derive_key(u_char out[NGX_CDP_KEY_LEN], const u_char *secret,
    size_t secret_len, const char *label)
{
    if (!ngx_cdp_hmac_sha256(out, secret, secret_len, (const u_char *) label,
                             strlen(label)))
    {
        /* cannot happen with a working libcrypto; never leave garbage */
        memset(out, 0, NGX_CDP_KEY_LEN);
    }
}


int
ngx_cdp_hmac_key_init(ngx_cdp_hmac_key_t *key,
    const u_char raw[NGX_CDP_KEY_LEN])
{
    OSSL_PARAM       params[2];
    EVP_MAC_CTX     *ctx;
    static EVP_MAC  *hmac;

    memcpy(key->raw, raw, NGX_CDP_KEY_LEN);
    key->mac = NULL;

    if (hmac == NULL) {
        hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
        if (hmac == NULL) {
            return 0;
        }
    }

    ctx = EVP_MAC_CTX_new(hmac);
    if (ctx == NULL) {
        return 0;
    }

    params[0] = OSSL_PARAM_construct_utf8_string("digest", (char *) "SHA256",
                                                 0);
    params[1] = OSSL_PARAM_construct_end();

    if (!EVP_MAC_init(ctx, key->raw, NGX_CDP_KEY_LEN, params)) {
        EVP_MAC_CTX_free(ctx);
        return 0;
    }

    key->mac = ctx;

    return 1;
}


void
ngx_cdp_hmac_key_free(ngx_cdp_hmac_key_t *key)
{
    EVP_MAC_CTX_free(key->mac);
    key->mac = NULL;
    OPENSSL_cleanse(key->raw, NGX_CDP_KEY_LEN);
}


static int
ngx_cdp_hmac_keyed(u_char out[NGX_CDP_HMAC_LEN],
    const ngx_cdp_hmac_key_t *key, const u_char *msg, size_t len)
{
    size_t  out_len;

    if (key->mac == NULL) {
        return ngx_cdp_hmac_sha256(out, key->raw, NGX_CDP_KEY_LEN, msg, len);
    }

    /* a NULL key restarts HMAC with the key already set */

    out_len = 0;

    if (!EVP_MAC_init(key->mac, NULL, 0, NULL)
        || !EVP_MAC_update(key->mac, msg, len)
        || !EVP_MAC_final(key->mac, out, &out_len, NGX_CDP_HMAC_LEN)
        || out_len != NGX_CDP_HMAC_LEN)
    {
        return 0;
    }

    return 1;
}


void
ngx_cdp_hmac(u_char out[32], const ngx_cdp_hmac_key_t *key,
    const u_char *msg, size_t len)
{
    if (!ngx_cdp_hmac_keyed(out, key, msg, len)) {
        memset(out, 0, NGX_CDP_HMAC_LEN);
    }
}


u_char *
ngx_cdp_hex(u_char *dst, const u_char *src, size_t len)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        *dst++ = ngx_cdp_hex_digits[src[i] >> 4];
        *dst++ = ngx_cdp_hex_digits[src[i] & 0x0f];
    }

    return dst;
}


/* anonymous id cookie */

static void
ngx_cdp_cookie_tag(u_char tag[NGX_CDP_HMAC_LEN], const u_char *hex,
    const ngx_cdp_hmac_key_t *key, int *ok)
{
    u_char  msg[sizeof(ngx_cdp_aid_prefix) - 1 + NGX_CDP_ID_HEX_LEN];

    memcpy(msg, ngx_cdp_aid_prefix, sizeof(ngx_cdp_aid_prefix) - 1);
    memcpy(msg + sizeof(ngx_cdp_aid_prefix) - 1, hex, NGX_CDP_ID_HEX_LEN);

    *ok = ngx_cdp_hmac_keyed(tag, key, msg, sizeof(msg));
}


void
ngx_cdp_tag_encode(u_char dst[NGX_CDP_TAG_B64_LEN],
    const u_char tag[NGX_CDP_TAG_LEN])
{
    size_t    i;
    uint32_t  v;

    for (i = 0; i < NGX_CDP_TAG_LEN; i += 3) {
        v = ((uint32_t) tag[i] << 16) | ((uint32_t) tag[i + 1] << 8)
            | tag[i + 2];

        *dst++ = ngx_cdp_b64url_alphabet[(v >> 18) & 0x3f];
        *dst++ = ngx_cdp_b64url_alphabet[(v >> 12) & 0x3f];
        *dst++ = ngx_cdp_b64url_alphabet[(v >> 6) & 0x3f];
        *dst++ = ngx_cdp_b64url_alphabet[v & 0x3f];
    }
}


int
ngx_cdp_tag_decode(u_char tag[NGX_CDP_TAG_LEN],
    const u_char src[NGX_CDP_TAG_B64_LEN])
{
    int       v;
    size_t    i, k;
    uint32_t  acc;

    for (i = 0; i < NGX_CDP_TAG_B64_LEN; i += 4) {
        acc = 0;

        for (k = 0; k < 4; k++) {
            v = ngx_cdp_b64url_value(src[i + k]);

            if (v < 0) {
                return 0;
            }

            acc = (acc << 6) | (uint32_t) v;
        }

        tag[i / 4 * 3] = (u_char) (acc >> 16);
        tag[i / 4 * 3 + 1] = (u_char) (acc >> 8);
        tag[i / 4 * 3 + 2] = (u_char) acc;
    }

    return 1;
}


static int
ngx_cdp_b64url_value(u_char c)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }

    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }

    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }

    if (c == '-') {
        return 62;
    }

    if (c == '_') {
        return 63;
    }

    return -1;
}


void
ngx_cdp_cookie_encode(u_char *dst, const u_char id[NGX_CDP_ID_LEN],
    const ngx_cdp_hmac_key_t *key)
{
    int     ok;
    u_char  tag[NGX_CDP_HMAC_LEN];

    ngx_cdp_hex(dst, id, NGX_CDP_ID_LEN);
    dst[NGX_CDP_ID_HEX_LEN] = '.';

    ngx_cdp_cookie_tag(tag, dst, key, &ok);

    if (!ok) {
        /* a zero tag is not a secret; it will simply never verify */
        memset(tag, 0, sizeof(tag));
    }

    ngx_cdp_tag_encode(dst + NGX_CDP_ID_HEX_LEN + 1, tag);
}


int
ngx_cdp_cookie_decode(const u_char *src, size_t len,
    const ngx_cdp_hmac_key_t *keys, size_t nkeys,
    u_char id_hex[NGX_CDP_ID_HEX_LEN])
{
    int     ok;
    size_t  i, k;
    u_char  c, tag[NGX_CDP_TAG_LEN], mac[NGX_CDP_HMAC_LEN];

    if (len != NGX_CDP_COOKIE_LEN) {
        return NGX_CDP_COOKIE_MALFORMED;
    }

    for (i = 0; i < NGX_CDP_ID_HEX_LEN; i++) {
        c = src[i];

        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            return NGX_CDP_COOKIE_MALFORMED;
        }
    }

    if (src[NGX_CDP_ID_HEX_LEN] != '.') {
        return NGX_CDP_COOKIE_MALFORMED;
    }

    if (!ngx_cdp_tag_decode(tag, src + NGX_CDP_ID_HEX_LEN + 1)) {
        return NGX_CDP_COOKIE_MALFORMED;
    }

    for (k = 0; k < nkeys; k++) {
        ngx_cdp_cookie_tag(mac, src, &keys[k], &ok);

        if (ok && CRYPTO_memcmp(tag, mac, NGX_CDP_TAG_LEN) == 0) {
            memcpy(id_hex, src, NGX_CDP_ID_HEX_LEN);
            return k == 0 ? NGX_CDP_COOKIE_VALID : NGX_CDP_COOKIE_VALID_OLD;
        }
    }

    return NGX_CDP_COOKIE_FORGED;
}


/* UTF-8 */

/*
 * The length of the well-formed UTF-8 sequence at p (RFC 3629: no
 * overlongs, no surrogates, nothing above U+10FFFF), or 0.
 */

static size_t
ngx_cdp_utf8_seq(const u_char *p, const u_char *end)
{
    u_char    c;
    size_t    i, n;
    uint32_t  cp;

    c = *p;

    if (c < 0x80) {
        return 1;
    }

    if (c < 0xc2) {
        /* a continuation byte, or the lead of an overlong 2-byte form */
        return 0;
    }

    if (c < 0xe0) {
        n = 2;
        cp = c & 0x1f;

    } else if (c < 0xf0) {
        n = 3;
        cp = c & 0x0f;

    } else if (c < 0xf5) {
        n = 4;
        cp = c & 0x07;

    } else {
        return 0;
    }

    if ((size_t) (end - p) < n) {
        return 0;
    }

    for (i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80) {
            return 0;
        }

        cp = (cp << 6) | (p[i] & 0x3f);
    }

    if (n == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) {
        return 0;
    }

    if (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) {
        return 0;
    }

    return n;
}


int
ngx_cdp_utf8_valid(const u_char *p, size_t len)
{
    size_t        n;
    const u_char  *end;

    if (len == 0) {
        /* p may be NULL: no arithmetic on it */
        return 1;
    }

    end = p + len;

    while (p < end) {
        if (*p < 0x80) {
            p++;
            continue;
        }

        n = ngx_cdp_utf8_seq(p, end);

        if (n == 0) {
            return 0;
        }

        p += n;
    }

    return 1;
}


/* query strings */

static int
ngx_cdp_hex_value(u_char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }

    c |= 0x20;

    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }

    return -1;
}


static ssize_t
ngx_cdp_unescape_any(u_char *dst, const u_char *src, size_t len,
    int plus)
{
    int           hi, lo;
    u_char        *d;
    const u_char  *end;

    if (len == 0) {
        return 0;
    }

    /* d never passes src, so decoding in place is safe */

    d = dst;
    end = src + len;

    while (src < end) {

        if (*src == '+' && plus) {
            *d++ = ' ';
            src++;
            continue;
        }

        if (*src != '%') {
            *d++ = *src++;
            continue;
        }

        if (end - src < 3) {
            return -1;
        }

        hi = ngx_cdp_hex_value(src[1]);
        lo = ngx_cdp_hex_value(src[2]);

        if (hi < 0 || lo < 0) {
            return -1;
        }

        *d++ = (u_char) ((hi << 4) | lo);
        src += 3;
    }

    return d - dst;
}


ssize_t
ngx_cdp_unescape(u_char *dst, const u_char *src, size_t len)
{
    return ngx_cdp_unescape_any(dst, src, len, 1);
}


ssize_t
ngx_cdp_unescape_uri(u_char *dst, const u_char *src, size_t len)
{
    return ngx_cdp_unescape_any(dst, src, len, 0);
}


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


/* JSON */

u_char *
ngx_cdp_json_str(u_char *dst, const u_char *src, size_t len)
{
    u_char        c;
    size_t        n;
    const u_char  *end;

    *dst++ = '"';

    if (len == 0) {
        /* src may be NULL */
        *dst++ = '"';
        return dst;
    }

    end = src + len;

    while (src < end) {
        c = *src;

        if (c >= 0x80) {
            n = ngx_cdp_utf8_seq(src, end);

            if (n == 0) {
                /* U+FFFD for each byte that starts no valid sequence */
                *dst++ = 0xef;
                *dst++ = 0xbf;
                *dst++ = 0xbd;
                src++;
                continue;
            }

            /*
             * U+2028 and U+2029 are valid JSON but end a line in
             * JavaScript before ES2019
             */

            if (n == 3 && c == 0xe2 && src[1] == 0x80
                && (src[2] == 0xa8 || src[2] == 0xa9))
            {
                *dst++ = '\\';
                *dst++ = 'u';
                *dst++ = '2';
                *dst++ = '0';
                *dst++ = '2';
                *dst++ = (src[2] == 0xa8) ? '8' : '9';
                src += 3;
                continue;
            }

            while (n--) {
                *dst++ = *src++;
            }

            continue;
        }

        src++;

        switch (c) {

        case '"':
        case '\\':
            *dst++ = '\\';
            *dst++ = c;
            break;

        case '\n':
            *dst++ = '\\';
            *dst++ = 'n';
            break;

        case '\r':
            *dst++ = '\\';
            *dst++ = 'r';
            break;

        case '\t':
            *dst++ = '\\';
            *dst++ = 't';
            break;

        case '\b':
            *dst++ = '\\';
            *dst++ = 'b';
            break;

        case '\f':
            *dst++ = '\\';
            *dst++ = 'f';
            break;

        default:
            if (c < 0x20) {
                *dst++ = '\\';
                *dst++ = 'u';
                *dst++ = '0';
                *dst++ = '0';
                *dst++ = ngx_cdp_hex_digits[c >> 4];
                *dst++ = ngx_cdp_hex_digits[c & 0x0f];

            } else {
                *dst++ = c;
            }
        }
    }

    *dst++ = '"';

    return dst;
}


/* client address */

size_t
ngx_cdp_ip_truncate(int family, const u_char *addr, u_char *dst)
{
    size_t   i;
    u_char  *p, buf[16];

    static const u_char  v4mapped[12] = {
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff
    };

    if (family == AF_INET6 && memcmp(addr, v4mapped, 12) == 0) {
        family = AF_INET;
        addr += 12;
    }

    switch (family) {

    case AF_INET:
        /* by hand: glibc's inet_ntop() formats IPv4 with sprintf() */
        p = dst;

        for (i = 0; i < 3; i++) {
            if (addr[i] >= 100) {
                *p++ = (u_char) ('0' + addr[i] / 100);
            }

            if (addr[i] >= 10) {
                *p++ = (u_char) ('0' + addr[i] / 10 % 10);
            }

            *p++ = (u_char) ('0' + addr[i] % 10);
            *p++ = '.';
        }

        *p++ = '0';
        *p = '\0';

        return p - dst;

    case AF_INET6:
        memcpy(buf, addr, 6);
        memset(buf + 6, 0, 10);
        break;

    default:
        return 0;
    }

    if (inet_ntop(family, buf, (char *) dst, NGX_CDP_IP_TEXT_MAX) == NULL) {
        return 0;
    }

    return strlen((char *) dst);
}


/* time */

u_char *
ngx_cdp_iso8601(u_char *dst, time_t sec, unsigned msec)
{
    int        year;
    struct tm  tm;

    if (gmtime_r(&sec, &tm) == NULL) {
        memset(&tm, 0, sizeof(struct tm));
        tm.tm_year = 70;
        tm.tm_mday = 1;
    }

    /* the format has room for years 0000 to 9999 only */

    year = tm.tm_year + 1900;

    if (year < 0) {
        year = 0;

    } else if (year > 9999) {
        year = 9999;
    }

    if (msec > 999) {
        msec = 999;
    }

    *dst++ = (u_char) ('0' + year / 1000);
    *dst++ = (u_char) ('0' + year / 100 % 10);
    *dst++ = (u_char) ('0' + year / 10 % 10);
    *dst++ = (u_char) ('0' + year % 10);
    *dst++ = '-';
    *dst++ = (u_char) ('0' + (tm.tm_mon + 1) / 10);
    *dst++ = (u_char) ('0' + (tm.tm_mon + 1) % 10);
    *dst++ = '-';
    *dst++ = (u_char) ('0' + tm.tm_mday / 10);
    *dst++ = (u_char) ('0' + tm.tm_mday % 10);
    *dst++ = 'T';
    *dst++ = (u_char) ('0' + tm.tm_hour / 10);
    *dst++ = (u_char) ('0' + tm.tm_hour % 10);
    *dst++ = ':';
    *dst++ = (u_char) ('0' + tm.tm_min / 10);
    *dst++ = (u_char) ('0' + tm.tm_min % 10);
    *dst++ = ':';
    *dst++ = (u_char) ('0' + tm.tm_sec / 10);
    *dst++ = (u_char) ('0' + tm.tm_sec % 10);
    *dst++ = '.';
    *dst++ = (u_char) ('0' + msec / 100);
    *dst++ = (u_char) ('0' + msec / 10 % 10);
    *dst++ = (u_char) ('0' + msec % 10);
    *dst++ = 'Z';

    return dst;
}
