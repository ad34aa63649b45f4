
/*
 * ngx_cdp: keys, HMAC-SHA256 and what is signed with it (see
 * ngx_cdp_crypto.h).
 *
 * Everything here works on caller-owned buffers and never allocates, so
 * the same code runs in the nginx worker, the unit tests and the fuzzers.
 */


#include "ngx_cdp_crypto.h"
#include "ngx_cdp_text.h"

#include <limits.h>
#include <stdint.h>
#include <string.h>

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
static int ngx_cdp_b64url_value(u_char c);


static const u_char  ngx_cdp_b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static const u_char  ngx_cdp_aid_prefix[] = "aid:";


/* keys and HMAC */

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
