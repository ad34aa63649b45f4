
/*
 * ngx_cdp: keys, HMAC-SHA256 and what is signed with it.
 *
 * Purpose-bound keys derived from cdp_secret_file, HMAC-SHA256 with a key
 * prepared once, 96-bit tags as base64url text, and the anonymous id
 * cookie they sign.
 *
 * Nothing here uses nginx types or allocates: callers pass buffers.
 * The unit tests (tests/unit) and the fuzz targets (tests/fuzz) link
 * ngx_cdp_crypto.c with ngx_cdp_text.c and libcrypto.
 */


#ifndef _NGX_CDP_CRYPTO_H_INCLUDED_
#define _NGX_CDP_CRYPTO_H_INCLUDED_


#include <sys/types.h>
#include <stddef.h>


#define NGX_CDP_KEY_LEN          32     /* derived HMAC-SHA256 key */
#define NGX_CDP_MAX_KEYS         2      /* current + previous (rotation) */

#define NGX_CDP_ID_LEN           16     /* 128 random bits */
#define NGX_CDP_ID_HEX_LEN       32
#define NGX_CDP_TAG_LEN          12     /* HMAC-SHA256 truncated to 96 bits */
#define NGX_CDP_TAG_B64_LEN      16     /* base64url, no padding */

/* cookie value: 32 lowercase hex digits, '.', 16 base64url characters */
#define NGX_CDP_COOKIE_LEN                                                    \
    (NGX_CDP_ID_HEX_LEN + 1 + NGX_CDP_TAG_B64_LEN)

#define NGX_CDP_COOKIE_VALID     0      /* signed with keys[0] */
#define NGX_CDP_COOKIE_MALFORMED 1      /* wrong length or alphabet */
#define NGX_CDP_COOKIE_FORGED    2      /* well-formed, tag does not verify */
#define NGX_CDP_COOKIE_VALID_OLD 3      /* signed with a later key */


/* derive a purpose-bound key: HMAC-SHA256(secret, label) */
void ngx_cdp_derive_key(u_char out[NGX_CDP_KEY_LEN], const u_char *secret,
    size_t secret_len, const char *label);

/*
 * A key prepared once for HMAC-SHA256.  OpenSSL 3's one-shot HMAC() looks
 * the algorithm up by name on every call, which cost more than the rest of
 * a pixel hit; a keyed EVP_MAC_CTX is only re-initialised.  init() returns
 * 1, or 0 when libcrypto fails (the key then still works, slowly); free()
 * releases the context.
 */
typedef struct {
    u_char         raw[NGX_CDP_KEY_LEN];
    void          *mac;                 /* EVP_MAC_CTX * */
} ngx_cdp_hmac_key_t;

int ngx_cdp_hmac_key_init(ngx_cdp_hmac_key_t *key,
    const u_char raw[NGX_CDP_KEY_LEN]);
void ngx_cdp_hmac_key_free(ngx_cdp_hmac_key_t *key);

/* HMAC-SHA256 */
void ngx_cdp_hmac(u_char out[32], const ngx_cdp_hmac_key_t *key,
    const u_char *msg, size_t len);

/*
 * A 96-bit tag as text: 16 base64url characters, no padding (12 bytes are
 * four whole groups).  decode() returns 0 on a character outside the
 * alphabet, 1 otherwise.
 */
void ngx_cdp_tag_encode(u_char dst[NGX_CDP_TAG_B64_LEN],
    const u_char tag[NGX_CDP_TAG_LEN]);
int ngx_cdp_tag_decode(u_char tag[NGX_CDP_TAG_LEN],
    const u_char src[NGX_CDP_TAG_B64_LEN]);

/*
 * Anonymous id cookie.  encode() writes NGX_CDP_COOKIE_LEN bytes: the hex
 * id, '.', and the tag of HMAC(key, "aid:" hex id).  decode() accepts a
 * tag made with any of the nkeys keys (compared with CRYPTO_memcmp) and
 * writes the hex id into id_hex on success: VALID for keys[0], the key
 * that signs, VALID_OLD for another one (the caller re-signs).
 */
void ngx_cdp_cookie_encode(u_char *dst, const u_char id[NGX_CDP_ID_LEN],
    const ngx_cdp_hmac_key_t *key);
int ngx_cdp_cookie_decode(const u_char *src, size_t len,
    const ngx_cdp_hmac_key_t *keys, size_t nkeys,
    u_char id_hex[NGX_CDP_ID_HEX_LEN]);


#endif /* _NGX_CDP_CRYPTO_H_INCLUDED_ */
