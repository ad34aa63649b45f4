
/*
 * ngx_cdp_shard.c, a cluster node's redirections and key slots:
 *
 * - ngx_cdp_redirect_parse() takes arbitrary bytes as an error reply's
 *   text (an exact-size copy, so that AddressSanitizer sees any
 *   overread).  On success: MOVED or ASK, slot < 16384, port 1..65535, a
 *   host of 1..255 bytes inside the input, and the input is exactly
 *   "<kind> <slot> <host>:<port>" written again with printf: the parser
 *   takes only what Redis writes.  It agrees both ways with the reference
 *   below, which splits the text first and checks the parts after.
 * - ngx_cdp_crc16() agrees with a CRC computed a bit at a time, and
 *   ngx_cdp_key_slot() with Redis's keyHashSlot() loops written over it.
 * - ngx_cdp_shard_of() of the input, n from its first two bytes, is below
 *   n and its CRC16 modulo n; ngx_cdp_shard_tag() of an i and n from its
 *   first bytes gives "<i>.<k>" in the i-th n-th of the slot space.
 */


#include "fuzz.h"
#include "ngx_cdp_shard.h"


static uint16_t
fuzz_crc16(const u_char *p, size_t len)
{
    int       b;
    uint16_t  crc;

    crc = 0;

    while (len--) {
        crc ^= (uint16_t) (*p++ << 8);

        for (b = 0; b < 8; b++) {
            crc = (crc & 0x8000) ? (uint16_t) ((crc << 1) ^ 0x1021)
                                 : (uint16_t) (crc << 1);
        }
    }

    return crc;
}


/* keyHashSlot() of Redis's cluster.c, as it is written there */

static unsigned
fuzz_key_slot(const u_char *key, size_t keylen)
{
    size_t  s, e;

    for (s = 0; s < keylen; s++) {
        if (key[s] == '{') {
            break;
        }
    }

    if (s == keylen) {
        return fuzz_crc16(key, keylen) & 0x3fff;
    }

    for (e = s + 1; e < keylen; e++) {
        if (key[e] == '}') {
            break;
        }
    }

    if (e == keylen || e == s + 1) {
        return fuzz_crc16(key, keylen) & 0x3fff;
    }

    return fuzz_crc16(key + s + 1, e - s - 1) & 0x3fff;
}


/* a number as Redis writes it with "%d", of at most max: 0 and *v */

static int
fuzz_number(const u_char *p, size_t len, unsigned long max, unsigned *v)
{
    char           buf[8], *end;
    size_t         i;
    unsigned long  n;

    if (len == 0 || len > 5 || (p[0] == '0' && len > 1)) {
        return -1;
    }

    for (i = 0; i < len; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return -1;
        }
    }

    memcpy(buf, p, len);
    buf[len] = '\0';
    n = strtoul(buf, &end, 10);

    if (*end != '\0' || n > max) {
        return -1;
    }

    *v = (unsigned) n;

    return 0;
}


/* the reference: split at the spaces and the last ':', then check */

static int
fuzz_redirect_ref(const u_char *s, size_t len, ngx_cdp_redirect_t *r)
{
    size_t         i, klen;
    const u_char  *rest, *sp, *colon, *end;

    if (len >= 6 && memcmp(s, "MOVED ", 6) == 0) {
        r->kind = NGX_CDP_REDIRECT_MOVED;
        klen = 6;

    } else if (len >= 4 && memcmp(s, "ASK ", 4) == 0) {
        r->kind = NGX_CDP_REDIRECT_ASK;
        klen = 4;

    } else {
        return -1;
    }

    rest = s + klen;
    end = s + len;

    sp = memchr(rest, ' ', (size_t) (end - rest));
    if (sp == NULL) {
        return -1;
    }

    if (fuzz_number(rest, (size_t) (sp - rest), 16383, &r->slot) != 0) {
        return -1;
    }

    colon = NULL;

    for (i = (size_t) (sp + 1 - s); i < len; i++) {
        if (s[i] < 0x21 || s[i] > 0x7e) {
            return -1;
        }

        if (s[i] == ':') {
            colon = s + i;
        }
    }

    if (colon == NULL) {
        return -1;
    }

    r->host = sp + 1;
    r->host_len = (size_t) (colon - r->host);

    if (r->host_len == 0 || r->host_len > 255) {
        return -1;
    }

    if (fuzz_number(colon + 1, (size_t) (end - colon - 1), 65535, &r->port)
        != 0
        || r->port == 0)
    {
        return -1;
    }

    return 0;
}


static void
fuzz_redirect(const uint8_t *data, size_t size)
{
    int                  rc, ref, n;
    char                *again;
    u_char              *p;
    size_t               room;
    ngx_cdp_redirect_t   r, e;

    p = fuzz_dup(data, size);
    memset(&r, 0x5a, sizeof(r));
    memset(&e, 0, sizeof(e));

    rc = ngx_cdp_redirect_parse(p, size, &r);
    ref = fuzz_redirect_ref(p, size, &e);

    FUZZ_CHECK(rc == 0 || rc == -1);
    FUZZ_CHECK(rc == ref);

    if (rc == 0) {
        FUZZ_CHECK(r.kind == NGX_CDP_REDIRECT_MOVED
                   || r.kind == NGX_CDP_REDIRECT_ASK);
        FUZZ_CHECK(r.slot < NGX_CDP_SLOTS);
        FUZZ_CHECK(r.port >= 1 && r.port <= 65535);
        FUZZ_CHECK(r.host_len >= 1 && r.host_len <= 255);
        FUZZ_CHECK(r.host >= p && r.host_len <= size
                   && (size_t) (r.host - p) <= size - r.host_len);

        FUZZ_CHECK(r.kind == e.kind && r.slot == e.slot && r.host == e.host
                   && r.host_len == e.host_len && r.port == e.port);

        /* written again, the same bytes */
        room = size + 1;
        again = malloc(room);
        FUZZ_CHECK(again != NULL);

        n = snprintf(again, room, "%s %u %.*s:%u",
                     r.kind == NGX_CDP_REDIRECT_MOVED ? "MOVED" : "ASK",
                     r.slot, (int) r.host_len, (const char *) r.host,
                     r.port);

        FUZZ_CHECK(n >= 0 && (size_t) n == size
                   && memcmp(again, p, size) == 0);
        free(again);

    } else {
        /* refused: *r as it was */
        memset(&e, 0x5a, sizeof(e));
        FUZZ_CHECK(memcmp(&r, &e, sizeof(r)) == 0);
    }

    free(p);
}


static void
fuzz_slots(const uint8_t *data, size_t size)
{
    u_char    *p, tag[NGX_CDP_SHARD_TAG_LEN], head[16];
    size_t     len, hlen, j;
    unsigned   i, n, slot;

    p = fuzz_dup(data, size);

    FUZZ_CHECK(ngx_cdp_crc16(p, size) == fuzz_crc16(p, size));

    slot = ngx_cdp_key_slot(p, size);
    FUZZ_CHECK(slot < NGX_CDP_SLOTS);
    FUZZ_CHECK(slot == fuzz_key_slot(p, size));

    if (size < 2) {
        free(p);
        return;
    }

    n = 1 + ((unsigned) data[0] | (unsigned) data[1] << 8)
            % NGX_CDP_SHARDS_MAX;

    /* the whole id, braces and all */
    FUZZ_CHECK(ngx_cdp_shard_of(p, size, n) < n);
    FUZZ_CHECK(ngx_cdp_shard_of(p, size, n) == fuzz_crc16(p, size) % n);

    if (size >= 4) {
        i = ((unsigned) data[2] | (unsigned) data[3] << 8) % n;
        len = ngx_cdp_shard_tag(i, n, tag);

        hlen = (size_t) snprintf((char *) head, sizeof(head), "%u.", i);
        FUZZ_CHECK(len > hlen && len < NGX_CDP_SHARD_TAG_LEN);
        FUZZ_CHECK(memcmp(tag, head, hlen) == 0);
        FUZZ_CHECK(tag[hlen] != '0' || len == hlen + 1);

        for (j = hlen; j < len; j++) {
            FUZZ_CHECK(tag[j] >= '0' && tag[j] <= '9');
        }

        slot = fuzz_crc16(tag, len) & 0x3fff;
        FUZZ_CHECK(slot >= i * NGX_CDP_SLOTS / n
                   && slot < (i + 1) * NGX_CDP_SLOTS / n);
    }

    free(p);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_redirect(data, size);
    fuzz_slots(data, size);

    return 0;
}
