
/*
 * ngx_cdp: bytes as text (see ngx_cdp_text.h).
 *
 * Everything here works on caller-owned buffers and never allocates, so
 * the same code runs in the nginx worker, the unit tests and the fuzzers.
 */


#include "ngx_cdp_text.h"

#include <stdint.h>


static size_t ngx_cdp_utf8_seq(const u_char *p, const u_char *end);
static int ngx_cdp_hex_value(u_char c);
static ssize_t ngx_cdp_unescape_any(u_char *dst, const u_char *src,
    size_t len, int plus);


static const u_char  ngx_cdp_hex_digits[] = "0123456789abcdef";


/* hex */

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


/* percent-decoding */

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
