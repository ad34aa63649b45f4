
/*
 * ngx_cdp: identifier helpers for identity resolution.
 *
 * Pure functions on caller-owned buffers, no nginx types, no allocation,
 * like ngx_cdp_crypto.h: the unit tests (tests/unit) and the fuzz targets
 * (tests/fuzz) link ngx_cdp_ident.c with ngx_cdp_crypto.c,
 * ngx_cdp_text.c and libcrypto.
 *
 * "Whitespace" below is ASCII whitespace: space, \t, \n, \v, \f, \r.
 * Case-insensitive means ASCII case only; bytes >= 0x80 compare as they
 * are.
 */


#ifndef _NGX_CDP_IDENT_H_INCLUDED_
#define _NGX_CDP_IDENT_H_INCLUDED_


#include "ngx_cdp_text.h"
#include "ngx_cdp_crypto.h"
#include "ngx_cdp_query.h"


#define NGX_CDP_EMAIL_MAX          254  /* bytes, RFC 5321 path limit */
#define NGX_CDP_EMAIL_LOCAL_MAX    64   /* bytes before the '@' */

#define NGX_CDP_PHONE_MIN_DIGITS   8
#define NGX_CDP_PHONE_MAX_DIGITS   15   /* E.164 */
#define NGX_CDP_PHONE_MAX          (1 + NGX_CDP_PHONE_MAX_DIGITS)
#define NGX_CDP_PHONE_CC_MAX       3

#define NGX_CDP_IDENT_HASH_LEN     64   /* hex of HMAC-SHA256 */
#define NGX_CDP_IDENT_VALUE_MAX    1024
#define NGX_CDP_IDENT_TYPE_MAX     16


/*
 * An e-mail address as one identifier.  Whitespace at both ends is
 * trimmed and ASCII letters are lower-cased, in the local part too (every
 * large provider treats it case-insensitively); nothing else changes: no
 * Unicode case folding, no IDN to punycode, no provider rules such as
 * Gmail's dots or "+tag" (a "+tag" address stays its own identifier).
 *
 * Accepted: valid UTF-8; exactly one '@'; a local part of 1 to
 * NGX_CDP_EMAIL_LOCAL_MAX bytes; a domain with at least one '.', no empty
 * label (not starting or ending with '.', no ".."); at most
 * NGX_CDP_EMAIL_MAX bytes in all; no whitespace, control character (C0,
 * DEL, C1) or any of  < > ( ) [ ] , ; : " \  anywhere, so quoted local
 * parts and address literals are refused.
 *
 * Writes the normalised address to dst and returns its length, at most
 * min(len, NGX_CDP_EMAIL_MAX) bytes; returns -1 and leaves dst untouched
 * when the address is refused.  dst may equal src.  Normalising a result
 * again gives the same result.
 */
ssize_t ngx_cdp_email_normalize(u_char *dst, const u_char *src, size_t len);


/*
 * A phone number in E.164: '+' and NGX_CDP_PHONE_MIN_DIGITS to
 * NGX_CDP_PHONE_MAX_DIGITS digits, the first not 0.
 *
 * Whitespace at both ends is trimmed.  Inside, the separators space, '-',
 * '.', '/', '(' and ')' are dropped, and so is a "(0)" group, the trunk
 * prefix some countries write inside international numbers
 * ("+44 (0)20 7946 0958").  Any other character, and a '+' anywhere but
 * first, refuses the number (so do letters and extensions).
 *
 * A number starting with '+' or with the digits "00" is international:
 * its digits (after "00") are the E.164 digits.  Any other number is
 * national and gets the default country code cc (1 to 3 digits, no '+',
 * not starting with 0); without a valid cc (cc_len 0) national numbers are
 * refused.  One leading trunk '0' of a national number is dropped, except
 * for Italy (39) and San Marino (378) whose numbers keep it; with cc "1"
 * (North America) an 11-digit national number starting with '1' loses that
 * '1' instead.  A national number is never searched for a country code:
 * "44 20 7946 0958" with cc 44 is +4444....
 *
 * Writes the result to dst, which needs min(NGX_CDP_PHONE_MAX,
 * len + 1 + cc_len) bytes, and returns its length; returns -1 and leaves
 * dst untouched when the number is refused.  dst may equal src (the result
 * is built aside and copied last).  Normalising a result again, with any
 * cc, gives the same result.
 */
ssize_t ngx_cdp_phone_normalize(u_char *dst, const u_char *src, size_t len,
    const u_char *cc, size_t cc_len);


/*
 * 1 when v must never identify anyone, else 0.  After trimming whitespace:
 * empty; case-insensitively one of "null", "undefined", "anonymous",
 * "guest", "none", "nan", "0", "-1"; only '0' and '-' characters ("000",
 * "0-0", "--"); or case-insensitively equal to one of the nextra values of
 * extra (each also trimmed; extra may be NULL when nextra is 0).
 *
 * Check the normalised value when there is one, so that a configured
 * "test@example.com" also blocks " Test@Example.COM".
 */
int ngx_cdp_ident_blocked(const u_char *v, size_t len,
    const ngx_cdp_str_t *extra, size_t nextra);


/*
 * The name of an identifier in Redis key names: NGX_CDP_IDENT_HASH_LEN
 * lowercase hex digits of HMAC-SHA256(key, type ":" value), e.g. type
 * "email" with a normalised address, "phone" with an E.164 number.  key is
 * a key derived for this purpose (ngx_cdp_derive_key()), so the names do
 * not change with anything but the secret.
 *
 * type is a constant of 1 to NGX_CDP_IDENT_TYPE_MAX bytes without ':', the
 * value at most NGX_CDP_IDENT_VALUE_MAX bytes (the message is built on the
 * stack).  Returns 1, or 0 without touching out when either is out of
 * bounds or libcrypto fails: a failure must not turn into one name shared
 * by every identifier.
 */
int ngx_cdp_ident_hash(u_char out[NGX_CDP_IDENT_HASH_LEN],
    const ngx_cdp_hmac_key_t *key, const char *type, const u_char *v,
    size_t len);

/*
 * ngx_cdp_ident_hash(out, key, "user_id", v, len), remembered: a backend
 * sends many events of one user, and each would cost an HMAC.  The
 * process keeps the names of the last user ids it hashed (up to
 * NGX_CDP_IDENT_MEMO_ID_MAX bytes long, in NGX_CDP_IDENT_MEMO slots, two
 * ways of a set chosen by the id's FNV-1a hash, about 560 KB); a change of
 * key forgets them all.
 * E-mail addresses and phone numbers are never remembered: their raw
 * values do not stay in memory.  Not thread-safe (an nginx worker).
 */
#define NGX_CDP_IDENT_MEMO         4096
#define NGX_CDP_IDENT_MEMO_ID_MAX  64

int ngx_cdp_ident_hash_user_id(u_char out[NGX_CDP_IDENT_HASH_LEN],
    const ngx_cdp_hmac_key_t *key, const u_char *v, size_t len);


/*
 * A pixel hit's signed identity (e-mail campaigns): the fields uid and/or
 * email count only with exp (Unix time in seconds, decimal) and sig, the
 * 64 lowercase hex digits of HMAC-SHA256(key, canonical) where canonical
 * is
 *
 *     "uid=" UID "\nemail=" EMAIL "\nexp=" EXP
 *
 * with the percent-decoded values exactly as in the URL (an absent field
 * is empty) and key is derived from a line of cdp_secret_file with the
 * label "ngx_cdp pixel identity v1" (ngx_cdp_derive_key()).  Any of the
 * nkeys keys verifies (rotation); the comparison is constant-time.
 *
 * Returns NONE (no identity fields at all), OK, UNSIGNED (identity without
 * sig or exp), EXPIRED (a valid sig, exp <= now) or BAD (a wrong sig, a
 * malformed or repeated field).
 */
#define NGX_CDP_IDSIG_NONE         0
#define NGX_CDP_IDSIG_OK           1
#define NGX_CDP_IDSIG_UNSIGNED     2
#define NGX_CDP_IDSIG_EXPIRED      3
#define NGX_CDP_IDSIG_BAD          4

int ngx_cdp_idsig_check(const ngx_cdp_hit_t *hit,
    const ngx_cdp_hmac_key_t *keys, size_t nkeys, time_t now);


/*
 * The name of an anonymous id outside its own keys (the suppression list,
 * the consent log, the audit): 40 lowercase hex digits of
 * SHA1("anonymous_id:" aid), as store/admin.lua's aidh() computes it in
 * Redis.  Unkeyed on purpose: Redis must compute it when erasing, and an
 * id of 128 random bits cannot be found back by trying ids.  Returns 1, or
 * 0 when libcrypto fails (out untouched).
 */
#define NGX_CDP_AIDH_LEN           40

int ngx_cdp_aid_hash(u_char out[NGX_CDP_AIDH_LEN],
    const u_char aid[NGX_CDP_ID_HEX_LEN]);


#endif /* _NGX_CDP_IDENT_H_INCLUDED_ */
