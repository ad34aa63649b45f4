
/*
 * ngx_cdp: shards and Redis Cluster slots (see ngx_cdp_shard.h).
 *
 * Everything here must give what Redis computes: ngx_cdp_key_slot() is
 * keyHashSlot() of Redis's cluster.c, so that the slot a key is sent for
 * is the slot the node checks.  The same CRC16 is mirrored in the tests
 * (tests/integration/cdp_shard.py) and in Lua for the store, whose
 * results must stay identical: a change here is a change of where every
 * profile lives.
 *
 * The redirection parser reads an error reply of a cluster node, which
 * is a network input: every byte is checked against what is left, and
 * the numbers are bounded at every digit, so that no input can make it
 * read past the text or wrap a value.
 */


#include "ngx_cdp_shard.h"

#include <string.h>


/* k of a tag "<i>.<k>" has at most this many digits: k < 10^6 */
#define NGX_CDP_SHARD_K_DIGITS   6

/* a host as Redis writes it, and as a resolver takes it */
#define NGX_CDP_REDIRECT_HOST_MAX  255


static uint16_t ngx_cdp_crc16_update(uint16_t crc, const u_char *p,
    size_t len);
static const u_char *ngx_cdp_redirect_number(const u_char *p,
    const u_char *end, unsigned max, unsigned *value);


/*
 * CRC16-CCITT as Redis Cluster uses it (XMODEM): polynomial 0x1021, not
 * reflected, initial value 0, no final xor.  table[i] is the CRC of the
 * byte i; it is Redis's crc16tab.
 */

static const uint16_t  ngx_cdp_crc16_table[256] = {
    0x0000, 0x1021, 0x2042, 0x3063, 0x4084, 0x50a5, 0x60c6, 0x70e7,
    0x8108, 0x9129, 0xa14a, 0xb16b, 0xc18c, 0xd1ad, 0xe1ce, 0xf1ef,
    0x1231, 0x0210, 0x3273, 0x2252, 0x52b5, 0x4294, 0x72f7, 0x62d6,
    0x9339, 0x8318, 0xb37b, 0xa35a, 0xd3bd, 0xc39c, 0xf3ff, 0xe3de,
    0x2462, 0x3443, 0x0420, 0x1401, 0x64e6, 0x74c7, 0x44a4, 0x5485,
    0xa56a, 0xb54b, 0x8528, 0x9509, 0xe5ee, 0xf5cf, 0xc5ac, 0xd58d,
    0x3653, 0x2672, 0x1611, 0x0630, 0x76d7, 0x66f6, 0x5695, 0x46b4,
    0xb75b, 0xa77a, 0x9719, 0x8738, 0xf7df, 0xe7fe, 0xd79d, 0xc7bc,
    0x48c4, 0x58e5, 0x6886, 0x78a7, 0x0840, 0x1861, 0x2802, 0x3823,
    0xc9cc, 0xd9ed, 0xe98e, 0xf9af, 0x8948, 0x9969, 0xa90a, 0xb92b,
    0x5af5, 0x4ad4, 0x7ab7, 0x6a96, 0x1a71, 0x0a50, 0x3a33, 0x2a12,
    0xdbfd, 0xcbdc, 0xfbbf, 0xeb9e, 0x9b79, 0x8b58, 0xbb3b, 0xab1a,
    0x6ca6, 0x7c87, 0x4ce4, 0x5cc5, 0x2c22, 0x3c03, 0x0c60, 0x1c41,
    0xedae, 0xfd8f, 0xcdec, 0xddcd, 0xad2a, 0xbd0b, 0x8d68, 0x9d49,
    0x7e97, 0x6eb6, 0x5ed5, 0x4ef4, 0x3e13, 0x2e32, 0x1e51, 0x0e70,
    0xff9f, 0xefbe, 0xdfdd, 0xcffc, 0xbf1b, 0xaf3a, 0x9f59, 0x8f78,
    0x9188, 0x81a9, 0xb1ca, 0xa1eb, 0xd10c, 0xc12d, 0xf14e, 0xe16f,
    0x1080, 0x00a1, 0x30c2, 0x20e3, 0x5004, 0x4025, 0x7046, 0x6067,
    0x83b9, 0x9398, 0xa3fb, 0xb3da, 0xc33d, 0xd31c, 0xe37f, 0xf35e,
    0x02b1, 0x1290, 0x22f3, 0x32d2, 0x4235, 0x5214, 0x6277, 0x7256,
    0xb5ea, 0xa5cb, 0x95a8, 0x8589, 0xf56e, 0xe54f, 0xd52c, 0xc50d,
    0x34e2, 0x24c3, 0x14a0, 0x0481, 0x7466, 0x6447, 0x5424, 0x4405,
    0xa7db, 0xb7fa, 0x8799, 0x97b8, 0xe75f, 0xf77e, 0xc71d, 0xd73c,
    0x26d3, 0x36f2, 0x0691, 0x16b0, 0x6657, 0x7676, 0x4615, 0x5634,
    0xd94c, 0xc96d, 0xf90e, 0xe92f, 0x99c8, 0x89e9, 0xb98a, 0xa9ab,
    0x5844, 0x4865, 0x7806, 0x6827, 0x18c0, 0x08e1, 0x3882, 0x28a3,
    0xcb7d, 0xdb5c, 0xeb3f, 0xfb1e, 0x8bf9, 0x9bd8, 0xabbb, 0xbb9a,
    0x4a75, 0x5a54, 0x6a37, 0x7a16, 0x0af1, 0x1ad0, 0x2ab3, 0x3a92,
    0xfd2e, 0xed0f, 0xdd6c, 0xcd4d, 0xbdaa, 0xad8b, 0x9de8, 0x8dc9,
    0x7c26, 0x6c07, 0x5c64, 0x4c45, 0x3ca2, 0x2c83, 0x1ce0, 0x0cc1,
    0xef1f, 0xff3e, 0xcf5d, 0xdf7c, 0xaf9b, 0xbfba, 0x8fd9, 0x9ff8,
    0x6e17, 0x7e36, 0x4e55, 0x5e74, 0x2e93, 0x3eb2, 0x0ed1, 0x1ef0
};


/* CRC16 */

/* no final xor: the CRC of a prefix is the state to go on from */

static uint16_t
ngx_cdp_crc16_update(uint16_t crc, const u_char *p, size_t len)
{
    while (len--) {
        crc = (uint16_t) (crc << 8)
              ^ ngx_cdp_crc16_table[((crc >> 8) ^ *p++) & 0xff];
    }

    return crc;
}


uint16_t
ngx_cdp_crc16(const u_char *p, size_t len)
{
    return ngx_cdp_crc16_update(0, p, len);
}


/* slots */

unsigned
ngx_cdp_key_slot(const u_char *key, size_t len)
{
    const u_char  *open, *close;

    /*
     * Redis's rule, to the byte: the first '{', then the first '}' after
     * it; an empty tag ("{}") or none at all means the whole key.  Only
     * the first '{' counts: "foo{{bar}}zap" hashes "{bar", and
     * "foo{}{bar}" the whole key.
     */

    open = len ? memchr(key, '{', len) : NULL;

    if (open != NULL) {
        open++;
        close = memchr(open, '}', (size_t) (key + len - open));

        if (close != NULL && close != open) {
            key = open;
            len = (size_t) (close - open);
        }
    }

    return ngx_cdp_crc16(key, len) & (NGX_CDP_SLOTS - 1);
}


/* shards */

size_t
ngx_cdp_shard_tag(unsigned i, unsigned n, u_char *buf)
{
    u_char    *p, *k, *d, tmp[10];
    size_t     klen;
    unsigned   lo, hi, slot, v;
    uint16_t   crc;

    if (n == 0 || n > NGX_CDP_SHARDS_MAX || i >= n) {
        return 0;
    }

    lo = i * NGX_CDP_SLOTS / n;
    hi = (i + 1) * NGX_CDP_SLOTS / n;

    /* "<i>." */

    d = tmp + sizeof(tmp);
    v = i;

    do {
        *--d = (u_char) ('0' + v % 10);
        v /= 10;
    } while (v);

    p = buf;

    while (d < tmp + sizeof(tmp)) {
        *p++ = *d++;
    }

    *p++ = '.';

    /* the tag has no braces: its slot is that of its CRC16 */
    crc = ngx_cdp_crc16_update(0, buf, (size_t) (p - buf));

    /*
     * k = 0, 1, 2, ... written in place, a decimal counter: each try
     * costs the CRC of k's few digits.  The run is 16384 / n >= 16 slots
     * wide, so about n tries find one; below 10^6 there is always one
     * for i < n <= NGX_CDP_SHARDS_MAX (tests/unit/test_shard.c tries
     * every i of every n), so the bound is never reached.
     */

    k = p;
    *k = '0';
    klen = 1;

    for ( ;; ) {
        slot = ngx_cdp_crc16_update(crc, k, klen) & (NGX_CDP_SLOTS - 1);

        if (slot >= lo && slot < hi) {
            return (size_t) (k - buf) + klen;
        }

        /* k + 1: trailing nines become zeros, the digit before goes up */

        for (d = k + klen; d != k && d[-1] == '9'; d--) {
            d[-1] = '0';
        }

        if (d != k) {
            d[-1]++;
            continue;
        }

        /* 9...9 became 0...0: one more digit, 10...0 */

        if (klen == NGX_CDP_SHARD_K_DIGITS) {
            return 0;
        }

        *k = '1';
        k[klen++] = '0';
    }
}


unsigned
ngx_cdp_shard_of(const u_char *pid, size_t len, unsigned n)
{
    /* the whole id, braces and all: a profile id is not a key */
    return n > 1 ? ngx_cdp_crc16(pid, len) % n : 0;
}


/* redirections */

/*
 * A decimal number of at most max at p: digits only, no sign, no leading
 * zero (Redis writes them with "%d").  The end of its digits, or NULL.
 */

static const u_char *
ngx_cdp_redirect_number(const u_char *p, const u_char *end, unsigned max,
    unsigned *value)
{
    unsigned  n;

    if (p == end || *p < '0' || *p > '9') {
        return NULL;
    }

    if (*p == '0') {
        p++;

        if (p != end && *p >= '0' && *p <= '9') {
            return NULL;
        }

        *value = 0;
        return p;
    }

    for (n = 0; p != end && *p >= '0' && *p <= '9'; p++) {
        n = n * 10 + (unsigned) (*p - '0');

        /* checked at every digit, so a long run cannot wrap n */
        if (n > max) {
            return NULL;
        }
    }

    *value = n;

    return p;
}


int
ngx_cdp_redirect_parse(const u_char *s, size_t len, ngx_cdp_redirect_t *r)
{
    unsigned       kind, slot, port;
    const u_char  *p, *end, *host, *colon;

    if (len > 6 && memcmp(s, "MOVED ", 6) == 0) {
        kind = NGX_CDP_REDIRECT_MOVED;
        p = s + 6;

    } else if (len > 4 && memcmp(s, "ASK ", 4) == 0) {
        kind = NGX_CDP_REDIRECT_ASK;
        p = s + 4;

    } else {
        return -1;
    }

    /* s is not NULL here: an empty reply may come without a buffer */
    end = s + len;

    p = ngx_cdp_redirect_number(p, end, NGX_CDP_SLOTS - 1, &slot);

    if (p == NULL || p == end || *p != ' ') {
        return -1;
    }

    host = ++p;
    colon = NULL;

    /*
     * The rest is "<host>:<port>", printable ASCII without spaces.  The
     * port follows the last ':', so that an IPv6 address, which Redis
     * writes without brackets ("::1:6380"), is the host.
     */

    for ( /* void */ ; p != end; p++) {
        if (*p <= ' ' || *p >= 0x7f) {
            return -1;
        }

        if (*p == ':') {
            colon = p;
        }
    }

    if (colon == NULL || colon == host
        || colon - host > NGX_CDP_REDIRECT_HOST_MAX)
    {
        return -1;
    }

    p = ngx_cdp_redirect_number(colon + 1, end, 65535, &port);

    if (p != end || port == 0) {
        return -1;
    }

    r->kind = kind;
    r->slot = slot;
    r->host = host;
    r->host_len = (size_t) (colon - host);
    r->port = port;

    return 0;
}
