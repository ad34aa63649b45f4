
/*
 * ngx_cdp_json_str(): the output fits NGX_CDP_JSON_STR_MAX, is one valid
 * JSON string (checked by a small strict parser here), is valid UTF-8
 * with no raw control characters, U+2028 or U+2029, and gives back the
 * input exactly when the input was valid UTF-8.
 */


#include "fuzz.h"


static int
fuzz_hex4(const u_char *p, unsigned *v)
{
    int     i;
    u_char  c;

    *v = 0;

    for (i = 0; i < 4; i++) {
        c = p[i];

        if (c >= '0' && c <= '9') {
            *v = *v << 4 | (unsigned) (c - '0');

        } else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f') {
            *v = *v << 4 | (unsigned) ((c | 0x20) - 'a' + 10);

        } else {
            return 0;
        }
    }

    return 1;
}


/* decodes the JSON string [p, end) into dst; returns its length or -1 */

static ssize_t
fuzz_json_decode(u_char *dst, const u_char *p, const u_char *end)
{
    u_char    *d, c;
    unsigned  cp;

    if (end - p < 2 || p[0] != '"' || end[-1] != '"') {
        return -1;
    }

    d = dst;
    p++;
    end--;

    while (p < end) {
        c = *p++;

        if (c < 0x20 || c == '"') {
            return -1;
        }

        if (c != '\\') {
            *d++ = c;
            continue;
        }

        if (p == end) {
            return -1;
        }

        c = *p++;

        switch (c) {
        case '"': case '\\': case '/':
            *d++ = c;
            break;
        case 'b':
            *d++ = '\b';
            break;
        case 'f':
            *d++ = '\f';
            break;
        case 'n':
            *d++ = '\n';
            break;
        case 'r':
            *d++ = '\r';
            break;
        case 't':
            *d++ = '\t';
            break;
        case 'u':
            if (end - p < 4 || !fuzz_hex4(p, &cp)) {
                return -1;
            }

            p += 4;

            /* we never emit surrogate pairs */
            if (cp >= 0xd800 && cp <= 0xdfff) {
                return -1;
            }

            if (cp < 0x80) {
                *d++ = (u_char) cp;

            } else if (cp < 0x800) {
                *d++ = (u_char) (0xc0 | cp >> 6);
                *d++ = (u_char) (0x80 | (cp & 0x3f));

            } else {
                *d++ = (u_char) (0xe0 | cp >> 12);
                *d++ = (u_char) (0x80 | ((cp >> 6) & 0x3f));
                *d++ = (u_char) (0x80 | (cp & 0x3f));
            }

            break;
        default:
            return -1;
        }
    }

    return d - dst;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t   len, i;
    u_char   *in, *out, *end, *back;
    ssize_t  n;

    in = fuzz_dup(data, size);
    out = malloc(NGX_CDP_JSON_STR_MAX(size));
    back = malloc(NGX_CDP_JSON_STR_MAX(size));
    FUZZ_CHECK(out != NULL && back != NULL);

    end = ngx_cdp_json_str(out, in, size);
    len = end - out;

    FUZZ_CHECK(end >= out + 2 && len <= NGX_CDP_JSON_STR_MAX(size));
    FUZZ_CHECK(ngx_cdp_utf8_valid(out, len));

    for (i = 0; i < len; i++) {
        FUZZ_CHECK(out[i] >= 0x20);

        if (i + 2 < len && out[i] == 0xe2 && out[i + 1] == 0x80) {
            FUZZ_CHECK(out[i + 2] != 0xa8 && out[i + 2] != 0xa9);
        }
    }

    n = fuzz_json_decode(back, out, end);
    FUZZ_CHECK(n >= 0);

    if (ngx_cdp_utf8_valid(in, size)) {
        FUZZ_CHECK((size_t) n == size && memcmp(back, in, size) == 0);

    } else {
        /* every byte that starts no valid sequence became U+FFFD */
        FUZZ_CHECK((size_t) n > size);
    }

    free(in);
    free(out);
    free(back);

    return 0;
}
