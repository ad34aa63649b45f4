
/*
 * ngx_cdp: query strings and the URLs they come in.
 *
 * The "k=v&k=v" walk, the pixel's hit (its fields, properties and signed
 * identity, with their limits), the parts of a page URL with its utm_*
 * campaign, and the check of a click redirect's target.
 *
 * Nothing here uses nginx types or allocates: callers pass buffers.
 * The unit tests (tests/unit) and the fuzz targets (tests/fuzz) link
 * ngx_cdp_query.c with ngx_cdp_text.c.
 */


#ifndef _NGX_CDP_QUERY_H_INCLUDED_
#define _NGX_CDP_QUERY_H_INCLUDED_


#include "ngx_cdp_text.h"


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


#endif /* _NGX_CDP_QUERY_H_INCLUDED_ */
