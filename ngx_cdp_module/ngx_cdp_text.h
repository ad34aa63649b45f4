
/*
 * ngx_cdp: bytes as text.
 *
 * Byte strings, lowercase hex, UTF-8 validation, percent-decoding and
 * JSON string literals: the encodings that the other pure files
 * (ngx_cdp_crypto.h, ngx_cdp_query.h) and the module build on.
 *
 * Nothing here uses nginx types or allocates: callers pass buffers.
 * The unit tests (tests/unit) and the fuzz targets (tests/fuzz) link
 * ngx_cdp_text.c alone.
 */


#ifndef _NGX_CDP_TEXT_H_INCLUDED_
#define _NGX_CDP_TEXT_H_INCLUDED_


#include <sys/types.h>
#include <stddef.h>


/* bytes, not NUL-terminated */
typedef struct {
    const u_char  *data;
    size_t         len;
} ngx_cdp_str_t;


/* lowercase hex of len bytes into dst (2 * len bytes); returns dst end */
u_char *ngx_cdp_hex(u_char *dst, const u_char *src, size_t len);

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
 * A JSON string literal with its quotes.  Control characters and '"', '\'
 * are escaped; bytes that are not valid UTF-8 become U+FFFD, so any input
 * gives valid JSON.  dst needs NGX_CDP_JSON_STR_MAX(len) bytes.
 */
#define NGX_CDP_JSON_STR_MAX(len)  (6 * (len) + 2)

u_char *ngx_cdp_json_str(u_char *dst, const u_char *src, size_t len);


#endif /* _NGX_CDP_TEXT_H_INCLUDED_ */
