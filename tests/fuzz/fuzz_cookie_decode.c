
/*
 * ngx_cdp_cookie_decode(): the result agrees with an independent check of
 * the format; a valid cookie re-encodes to itself; and an id taken from
 * the input, signed with either key, always decodes back.
 */


#include "fuzz.h"
#include "ngx_cdp_crypto.h"


static ngx_cdp_hmac_key_t  fuzz_keys[NGX_CDP_MAX_KEYS];
static int     fuzz_init;


static int
fuzz_well_formed(const u_char *p, size_t len)
{
    size_t  i;

    if (len != NGX_CDP_COOKIE_LEN) {
        return 0;
    }

    for (i = 0; i < NGX_CDP_ID_HEX_LEN; i++) {
        if (strchr("0123456789abcdef", p[i]) == NULL || p[i] == '\0') {
            return 0;
        }
    }

    if (p[NGX_CDP_ID_HEX_LEN] != '.') {
        return 0;
    }

    for (i = NGX_CDP_ID_HEX_LEN + 1; i < len; i++) {
        if (strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                   "0123456789-_", p[i]) == NULL
            || p[i] == '\0')
        {
            return 0;
        }
    }

    return 1;
}


static int
fuzz_hex(u_char c)
{
    return c <= '9' ? c - '0' : c - 'a' + 10;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int     rc;
    size_t  k;
    u_char  *in, id_hex[NGX_CDP_ID_HEX_LEN], hex[NGX_CDP_ID_HEX_LEN];
    u_char  value[NGX_CDP_COOKIE_LEN], id[NGX_CDP_ID_LEN];
    u_char  raw[NGX_CDP_KEY_LEN];

    if (!fuzz_init) {
        ngx_cdp_derive_key(raw, (const u_char *) "fuzz secret 1", 13,
                           "cookie");
        FUZZ_CHECK(ngx_cdp_hmac_key_init(&fuzz_keys[0], raw));
        ngx_cdp_derive_key(raw, (const u_char *) "fuzz secret 2", 13,
                           "cookie");
        FUZZ_CHECK(ngx_cdp_hmac_key_init(&fuzz_keys[1], raw));
        fuzz_init = 1;
    }

    in = fuzz_dup(data, size);

    memset(id_hex, 'X', sizeof(id_hex));

    rc = ngx_cdp_cookie_decode(in, size,
                               fuzz_keys,
                               NGX_CDP_MAX_KEYS, id_hex);

    if (fuzz_well_formed(in, size)) {
        FUZZ_CHECK(rc == NGX_CDP_COOKIE_VALID
                   || rc == NGX_CDP_COOKIE_VALID_OLD
                   || rc == NGX_CDP_COOKIE_FORGED);

    } else {
        FUZZ_CHECK(rc == NGX_CDP_COOKIE_MALFORMED);
    }

    if (rc == NGX_CDP_COOKIE_VALID || rc == NGX_CDP_COOKIE_VALID_OLD) {
        FUZZ_CHECK(memcmp(id_hex, in, NGX_CDP_ID_HEX_LEN) == 0);

        for (k = 0; k < NGX_CDP_ID_LEN; k++) {
            id[k] = (u_char) (fuzz_hex(in[2 * k]) << 4
                              | fuzz_hex(in[2 * k + 1]));
        }

        /* VALID: keys[0] signed it; VALID_OLD: keys[1] did */
        ngx_cdp_cookie_encode(value, id,
                              &fuzz_keys[rc == NGX_CDP_COOKIE_VALID ? 0 : 1]);
        FUZZ_CHECK(memcmp(value, in, NGX_CDP_COOKIE_LEN) == 0);

    } else {
        FUZZ_CHECK(id_hex[0] == 'X');
    }

    /* sign the input's first bytes as an id: it must verify */

    if (size >= NGX_CDP_ID_LEN) {
        k = size > NGX_CDP_ID_LEN ? data[NGX_CDP_ID_LEN] & 1 : 0;

        ngx_cdp_cookie_encode(value, data, &fuzz_keys[k]);
        FUZZ_CHECK(fuzz_well_formed(value, NGX_CDP_COOKIE_LEN));

        rc = ngx_cdp_cookie_decode(value, NGX_CDP_COOKIE_LEN,
                                   fuzz_keys, NGX_CDP_MAX_KEYS, id_hex);
        FUZZ_CHECK(rc == (k == 0 ? NGX_CDP_COOKIE_VALID
                                 : NGX_CDP_COOKIE_VALID_OLD));

        ngx_cdp_hex(hex, data, NGX_CDP_ID_LEN);
        FUZZ_CHECK(memcmp(id_hex, hex, NGX_CDP_ID_HEX_LEN) == 0);

        /* and only with the key that signed it */
        rc = ngx_cdp_cookie_decode(value, NGX_CDP_COOKIE_LEN,
                                   &fuzz_keys[!k], 1, id_hex);
        FUZZ_CHECK(rc == NGX_CDP_COOKIE_FORGED);
    }

    free(in);

    return 0;
}
