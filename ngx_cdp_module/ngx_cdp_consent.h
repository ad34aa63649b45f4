
/*
 * ngx_cdp: consent, the pure parts.
 *
 * The purposes a request may be used for, parsed from the site's CMP
 * value or the configured default, carried in our own signed consent
 * cookie, and resolved from those sources in order of strength.
 *
 * Pure functions on caller-owned buffers, no nginx types, no allocation,
 * like ngx_cdp_crypto.h: the unit tests (tests/unit) and the fuzz targets
 * (tests/fuzz) link ngx_cdp_consent.c with ngx_cdp_crypto.c,
 * ngx_cdp_text.c and libcrypto.
 *
 * Case-insensitive means ASCII case only.
 */


#ifndef _NGX_CDP_CONSENT_H_INCLUDED_
#define _NGX_CDP_CONSENT_H_INCLUDED_


#include "ngx_cdp_text.h"
#include "ngx_cdp_crypto.h"


/*
 * Purposes, as a bitmask.  "necessary" needs no consent and has no bit.
 * The bit values are part of the cookie format (its purposes digit).
 */
#define NGX_CDP_CONSENT_ANALYTICS        0x01
#define NGX_CDP_CONSENT_MARKETING        0x02
#define NGX_CDP_CONSENT_PERSONALIZATION  0x04
#define NGX_CDP_CONSENT_ALL              0x07


/*
 * The text form of a set of purposes, as found in a CMP value, in
 * cdp_consent_default and in the consent form.
 *
 * parse(): "all" is NGX_CDP_CONSENT_ALL; "none", or a value that is empty
 * or only separators, is 0.  Anything else is a list of purpose names,
 * "analytics", "marketing", "personalization" and "necessary" (accepted
 * and ignored), separated by any run of ',', space and tab (leading and
 * trailing ones too); names are case-insensitive and may repeat.  "all"
 * and "none" are keywords only as the whole value: inside a list they are
 * unknown ("none,analytics" says two things at once).  Returns the
 * bitmask, or -1 when any name is unknown, so that a misconfigured map or
 * a CMP format we do not speak is seen rather than read as some consent;
 * the caller treats -1 as "no value" (the next source decides).  s may be
 * NULL when len is 0.
 *
 * format(): the granted purposes' names in the order above, joined with
 * ',' ("analytics,personalization"), or "none".  Bits outside
 * NGX_CDP_CONSENT_ALL are ignored; a negative value (parse()'s -1) is
 * written as "none", failing closed.  dst needs NGX_CDP_CONSENT_TEXT_MAX
 * bytes; nothing is NUL-terminated.  Returns the length written.
 * parse(format(p)) is p & NGX_CDP_CONSENT_ALL for any p >= 0.
 */
#define NGX_CDP_CONSENT_TEXT_MAX         35  /* all three names, 2 commas */

int ngx_cdp_consent_parse(const u_char *s, size_t len);
size_t ngx_cdp_consent_format(u_char *dst, int purposes);


/*
 * The signed consent cookie, the person's own explicit choice:
 *
 *     c1.<P>.<version>.<issued>.<tag>
 *
 *   c1        format version
 *   P         one digit '0' to '7': the purposes bitmask
 *   version   the site's policy version (cdp_consent_version) when the
 *             choice was made: 1 to NGX_CDP_CONSENT_VERSION_MAX characters
 *             of [A-Za-z0-9._-] (it may contain '.': the fields after it
 *             are found from the right)
 *   issued    when the choice was made, unix seconds in decimal: 1 to
 *             NGX_CDP_CONSENT_ISSUED_DIGITS digits, no leading zero
 *             unless it is "0"
 *   tag       NGX_CDP_TAG_LEN bytes of HMAC-SHA256(key, "consent:" and
 *             everything before the last '.'), base64url without padding
 *             (NGX_CDP_TAG_B64_LEN characters)
 *
 * e.g. "c1.3.2025-01.1735689600.xxxxxxxxxxxxxxxx".  The key should be
 * derived for this purpose (ngx_cdp_derive_key()), and the "consent:"
 * prefix keeps these tags apart from any other use of the same key.
 *
 * encode() writes the cookie for purposes 0 to 7 to dst, which needs
 * NGX_CDP_CONSENT_COOKIE_MAX bytes, and returns its length.  It returns 0
 * and writes nothing when the version is invalid, purposes is outside 0
 * to 7, issued is negative or has more than
 * NGX_CDP_CONSENT_ISSUED_DIGITS digits, or libcrypto fails (no cookie
 * rather than one that can never verify).
 *
 * decode() checks the whole format first (NGX_CDP_CONSENT_MALFORMED for
 * any deviation, including a wrong length, an uppercase "C1", P outside
 * '0' to '7', a leading zero in issued or a tag of another length or
 * alphabet), then verifies the tag against each of the nkeys keys with
 * CRYPTO_memcmp: NGX_CDP_CONSENT_VALID when keys[0], the key that signs,
 * made it, NGX_CDP_CONSENT_VALID_OLD for another key (the caller re-signs
 * with keys[0]), NGX_CDP_CONSENT_FORGED when none did (also with nkeys 0).
 * out is written only for the two VALID results; out->version points into
 * src.  A cookie that decodes as valid re-encodes, with the key that
 * verified it, to the same bytes.
 *
 * Whether the choice still counts (its age, an older policy version) is
 * the caller's decision: decode() only says what the cookie says.
 *
 * The results are the values of the anonymous id cookie's
 * NGX_CDP_COOKIE_* results, so one switch serves both.
 */
#define NGX_CDP_CONSENT_VERSION_MAX      32
#define NGX_CDP_CONSENT_ISSUED_DIGITS    12  /* up to year 33658 */
#define NGX_CDP_CONSENT_ISSUED_MAX       999999999999LL

/* "c1." P "." version "." issued "." tag */
#define NGX_CDP_CONSENT_COOKIE_MIN                                            \
    (3 + 1 + 1 + 1 + 1 + 1 + 1 + NGX_CDP_TAG_B64_LEN)
#define NGX_CDP_CONSENT_COOKIE_MAX                                            \
    (3 + 1 + 1 + NGX_CDP_CONSENT_VERSION_MAX + 1                              \
     + NGX_CDP_CONSENT_ISSUED_DIGITS + 1 + NGX_CDP_TAG_B64_LEN)

#define NGX_CDP_CONSENT_VALID            NGX_CDP_COOKIE_VALID
#define NGX_CDP_CONSENT_MALFORMED        NGX_CDP_COOKIE_MALFORMED
#define NGX_CDP_CONSENT_FORGED           NGX_CDP_COOKIE_FORGED
#define NGX_CDP_CONSENT_VALID_OLD        NGX_CDP_COOKIE_VALID_OLD

typedef struct {
    int            purposes;            /* 0 to NGX_CDP_CONSENT_ALL */
    ngx_cdp_str_t  version;             /* points into the cookie */
    time_t         issued;
} ngx_cdp_consent_cookie_t;

size_t ngx_cdp_consent_cookie_encode(u_char *dst, int purposes,
    const u_char *version, size_t vlen, time_t issued,
    const ngx_cdp_hmac_key_t *key);
int ngx_cdp_consent_cookie_decode(const u_char *src, size_t len,
    const ngx_cdp_hmac_key_t *keys, size_t nkeys,
    ngx_cdp_consent_cookie_t *out);


/*
 * The consent state of a request, strongest source first:
 *
 *   cookie   the person's explicit choice (a valid consent cookie)
 *   cmp      the site's CMP value (cdp_consent), when it parsed
 *   default  cdp_consent_default; without one, no consent at all
 *
 * cookie, cmp and dflt are bitmasks, or -1 (any negative value) when the
 * source is absent; pass -1 for a CMP value that did not parse.  Bits
 * outside NGX_CDP_CONSENT_ALL are ignored.  gpc is non-zero when the
 * request has exactly "Sec-GPC: 1" (the caller decides that).
 *
 * The first present source gives the purposes.  Global Privacy Control
 * only weakens the default: when the purposes come from the default (or
 * from nothing) and gpc is set, marketing is removed.  It never overrides
 * a person's own choice in the cookie nor the site's CMP, where the
 * person has already answered.
 *
 * source says where the result came from, one value per case, so that a
 * single field and ngx_cdp_consent_source_name() cover everything:
 *
 *   NGX_CDP_CONSENT_SRC_COOKIE    the consent cookie
 *   NGX_CDP_CONSENT_SRC_CMP       the CMP value
 *   NGX_CDP_CONSENT_SRC_GPC       the default, which granted marketing,
 *                                 with marketing removed by GPC
 *   NGX_CDP_CONSENT_SRC_DEFAULT   the default, as configured (GPC absent,
 *                                 or the default had no marketing to
 *                                 remove)
 *   NGX_CDP_CONSENT_SRC_NONE      no source at all: purposes 0
 *
 * GPC can only change a configured default that grants marketing, so
 * SRC_GPC always means "the default, minus marketing" and no separate
 * flag is needed; a caller that wants "did the default decide" tests
 * SRC_DEFAULT and SRC_GPC.
 *
 * ngx_cdp_consent_source_name() gives "cookie", "cmp", "gpc", "default"
 * and "none" (for $cdp_consent, events and the consent log), and
 * "unknown" for any other value.
 */
#define NGX_CDP_CONSENT_SRC_NONE         0
#define NGX_CDP_CONSENT_SRC_COOKIE       1
#define NGX_CDP_CONSENT_SRC_CMP          2
#define NGX_CDP_CONSENT_SRC_GPC          3
#define NGX_CDP_CONSENT_SRC_DEFAULT      4

typedef struct {
    int            purposes;            /* 0 to NGX_CDP_CONSENT_ALL */
    int            source;              /* NGX_CDP_CONSENT_SRC_* */
} ngx_cdp_consent_state_t;

ngx_cdp_consent_state_t ngx_cdp_consent_resolve(int cookie, int cmp,
    int gpc, int dflt);
const char *ngx_cdp_consent_source_name(int source);


#endif /* _NGX_CDP_CONSENT_H_INCLUDED_ */
