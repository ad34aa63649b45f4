
/*
 * ngx_cdp: pure parsers and codecs.
 *
 * Nothing here uses nginx types or allocates: callers pass buffers.
 * The unit tests (tests/unit) and the fuzz targets (tests/fuzz) link
 * ngx_cdp_codec.c alone with libcrypto.
 */


#ifndef _NGX_CDP_CODEC_H_INCLUDED_
#define _NGX_CDP_CODEC_H_INCLUDED_


#include <sys/types.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>


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

/* lowercase hex of len bytes into dst (2 * len bytes); returns dst end */
u_char *ngx_cdp_hex(u_char *dst, const u_char *src, size_t len);

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

/* 1 when [p, p + len) is well-formed UTF-8 (no overlongs, surrogates) */
int ngx_cdp_utf8_valid(const u_char *p, size_t len);

/*
 * Percent-decoding of one query component ('+' is a space).  Writes at
 * most len bytes to dst; returns the decoded length, or -1 on a bad
 * escape.  dst may equal src.
 */
ssize_t ngx_cdp_unescape(u_char *dst, const u_char *src, size_t len);

/*
 * The same, but '+' stays '+' (RFC 3986; only HTML forms make it a space):
 * for the admin API, whose values are phone numbers and e-mail addresses,
 * where a '+' is common and a space is not.
 */
ssize_t ngx_cdp_unescape_uri(u_char *dst, const u_char *src, size_t len);

/*
 * Walks "k=v&k=v" (a leading '?' is skipped by the caller).  Returns 1 and
 * fills the raw (still escaped) key and value, or 0 at the end.  Empty
 * segments ("a=1&&b=2") are skipped; a segment without '=' has an empty
 * value.
 */
typedef struct {
    const u_char  *key;
    size_t         key_len;
    const u_char  *val;
    size_t         val_len;
} ngx_cdp_kv_t;

int ngx_cdp_query_next(const u_char **pos, const u_char *end,
    ngx_cdp_kv_t *kv);


/*
 * The pixel's query string.
 *
 *   e=NAME        event name (absent: a page view)
 *   url=URL       the page (absent: the caller uses the Referer)
 *   ref=URL       the page's own referrer
 *   title=TEXT    the page title
 *   p.NAME=VALUE  custom properties
 *   uid, email, exp, sig
 *                 a signed identity (ngx_cdp_idsig_check() in
 *                 ngx_cdp_ident.h); a value that does not decode, or is
 *                 too long, sets ident_bad instead of failing the hit
 *
 * Other keys are ignored (cache busters and the like); a repeated field
 * keeps its first value; a repeated property is malformed.
 * Values are percent-decoded into scratch (at least len bytes) and must be
 * valid UTF-8.
 */
#define NGX_CDP_MAX_QUERY        8192
#define NGX_CDP_MAX_EVENT_NAME   128
#define NGX_CDP_MAX_URL          2048
#define NGX_CDP_MAX_TITLE        512
#define NGX_CDP_MAX_PROPS        25
#define NGX_CDP_MAX_PROP_NAME    64     /* [A-Za-z0-9_.-] */
#define NGX_CDP_MAX_PROP_VALUE   512
#define NGX_CDP_MAX_UID          256
#define NGX_CDP_MAX_HIT_EMAIL    320
#define NGX_CDP_MAX_EXP          20
#define NGX_CDP_SIG_HEX_LEN      64

#define NGX_CDP_HIT_OK           0
#define NGX_CDP_HIT_MALFORMED    1      /* bad escape, bad UTF-8, bad name */
#define NGX_CDP_HIT_TOO_LARGE    2      /* a limit above is exceeded */
                                        /* (a property name too)     */

typedef struct {
    const u_char  *data;
    size_t         len;
} ngx_cdp_str_t;

typedef struct {
    ngx_cdp_str_t  name;
    ngx_cdp_str_t  value;
} ngx_cdp_prop_t;

typedef struct {
    ngx_cdp_str_t  event;               /* data == NULL when absent */
    ngx_cdp_str_t  url;
    ngx_cdp_str_t  ref;
    ngx_cdp_str_t  title;
    size_t         nprops;
    ngx_cdp_prop_t props[NGX_CDP_MAX_PROPS];
    ngx_cdp_str_t  uid;                 /* data == NULL when absent */
    ngx_cdp_str_t  email;
    ngx_cdp_str_t  exp;
    ngx_cdp_str_t  sig;
    int            ident_bad;
} ngx_cdp_hit_t;

int ngx_cdp_hit_parse(const u_char *query, size_t len, ngx_cdp_hit_t *hit,
    u_char *scratch);


/*
 * Parts of a page URL: path ("/" when the URL has none), the query string
 * without '?' (may be empty) and the utm_* campaign fields, percent-decoded
 * into scratch (at least len bytes).  A utm value that does not decode to
 * valid UTF-8 is left out.  Never fails: any byte string is some URL.
 */
typedef struct {
    ngx_cdp_str_t  path;
    ngx_cdp_str_t  search;
    ngx_cdp_str_t  source;              /* utm_source */
    ngx_cdp_str_t  medium;              /* utm_medium */
    ngx_cdp_str_t  name;                /* utm_campaign */
    ngx_cdp_str_t  term;                /* utm_term */
    ngx_cdp_str_t  content;             /* utm_content */
} ngx_cdp_url_t;

void ngx_cdp_url_parse(const u_char *url, size_t len, ngx_cdp_url_t *u,
    u_char *scratch);


/*
 * A click redirect's target (cdp_redirect's to=, decoded): 0 when it is an
 * absolute http or https URL that a browser reads as the site it shows,
 * with host the lowercase-insensitive host name in it (no port); -1 for
 * anything else: another scheme (javascript:, data:...), a scheme-relative
 * "//host", no host, userinfo ("user@host": https://wa.me@evil.example),
 * a backslash (browsers read it as a slash), bytes below 0x21 or 0x7f and
 * above (spaces, controls, CR LF), '"', '<', '>', more than
 * NGX_CDP_MAX_URL bytes, a host not made of [A-Za-z0-9.-] or a bad port.
 */
int ngx_cdp_target_check(const u_char *url, size_t len, ngx_cdp_str_t *host);


/*
 * A JSON string literal with its quotes.  Control characters and '"', '\'
 * are escaped; bytes that are not valid UTF-8 become U+FFFD, so any input
 * gives valid JSON.  dst needs NGX_CDP_JSON_STR_MAX(len) bytes.
 */
#define NGX_CDP_JSON_STR_MAX(len)  (6 * (len) + 2)

u_char *ngx_cdp_json_str(u_char *dst, const u_char *src, size_t len);


/*
 * Truncated client address as text: IPv4 to /24 ("203.0.113.0"), IPv6 to
 * /48 ("2001:db8:1::").  family is AF_INET (addr 4 bytes) or AF_INET6
 * (16 bytes; a v4-mapped address is treated as IPv4).  dst needs
 * NGX_CDP_IP_TEXT_MAX bytes; returns the length written (0 for another
 * family).
 */
#define NGX_CDP_IP_TEXT_MAX      46

size_t ngx_cdp_ip_truncate(int family, const u_char *addr, u_char *dst);


/* "2026-11-23T04:40:51.123Z": writes NGX_CDP_ISO8601_LEN bytes */
#define NGX_CDP_ISO8601_LEN      24

u_char *ngx_cdp_iso8601(u_char *dst, time_t sec, unsigned msec);


#endif /* _NGX_CDP_CODEC_H_INCLUDED_ */
