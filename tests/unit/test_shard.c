
/*
 * Unit tests of ngx_cdp_shard.c, with the same tiny harness as
 * test_codec.c: CRC16, key slots, shard tags, the shard of a profile id,
 * and the MOVED/ASK redirections of a cluster node.
 *
 * Every CHECK counts as one test; the last line is "N passed, N failed"
 * and the exit status is non-zero when anything failed.  Inputs are
 * copied to their exact size and tags written to exact-size buffers
 * followed by a canary, so overreads and overruns show up under valgrind
 * and `make sanitize`.
 *
 * The expected slots are Redis's own, the tags and shards of a few ids
 * are hard-coded: a change of either moves every profile to another
 * shard, which must be a decision, not an accident.  The same values are
 * expected from tests/integration/cdp_shard.py and the store's Lua.
 */


#include <stdint.h>

#include "ngx_cdp_shard.h"
#include "unit.h"


#define IDS         100000
#define ID_SHARDS   16


typedef struct {
    const u_char   *key;
    size_t          len;
    unsigned        slot;
} ngx_cdp_tslot_t;


/* CRC16-CCITT (XMODEM) a bit at a time: the reference of the table */

static uint16_t
ngx_cdp_crc16_bits(const u_char *p, size_t len)
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


/* xorshift64*: the same "random" bytes on every run */

static uint64_t  rnd_state = 0x9e3779b97f4a7c15ULL;

static uint64_t
ngx_cdp_rnd(void)
{
    rnd_state ^= rnd_state >> 12;
    rnd_state ^= rnd_state << 25;
    rnd_state ^= rnd_state >> 27;

    return rnd_state * 0x2545f4914f6cdd1dULL;
}


static unsigned
ngx_cdp_slot_of(const u_char *key, size_t len)
{
    unsigned  slot;
    u_char   *b;

    b = ngx_cdp_dup(key, len);
    slot = ngx_cdp_key_slot(b, len);
    free(b);

    return slot;
}


static unsigned
ngx_cdp_shard_of_copy(const char *pid, unsigned n)
{
    size_t    len;
    u_char   *b;
    unsigned  shard;

    len = strlen(pid);
    b = ngx_cdp_dup(pid, len);
    shard = ngx_cdp_shard_of(b, len, n);
    free(b);

    return shard;
}


static void
test_crc16(void)
{
    size_t   i, len;
    u_char   b[300];
    u_char  *c;
    int      ok;

    /* Redis's own test vector (src/crc16.c) */
    CHECK(ngx_cdp_crc16(L("123456789")) == 0x31c3);
    CHECK(ngx_cdp_crc16(NULL, 0) == 0);
    CHECK(ngx_cdp_crc16(L("\0")) == 0);
    CHECK(ngx_cdp_crc16(L("A")) == 0x58e5);

    /* the table against the bitwise reference, every length up to 300 */
    for (i = 0; i < sizeof(b); i++) {
        b[i] = (u_char) ngx_cdp_rnd();
    }

    ok = 1;

    for (len = 0; len <= sizeof(b); len++) {
        c = ngx_cdp_dup(b, len);

        if (ngx_cdp_crc16(c, len) != ngx_cdp_crc16_bits(b, len)) {
            printf("  crc16 of %zu random bytes\n", len);
            ok = 0;
        }

        free(c);
    }

    CHECK(ok);

    for (i = 0; i < 256; i++) {
        b[0] = (u_char) i;

        if (ngx_cdp_crc16(b, 1) != ngx_cdp_crc16_bits(b, 1)) {
            printf("  crc16 of byte %zu\n", i);
            ok = 0;
        }
    }

    CHECK(ok);
}


static void
test_key_slot(void)
{
    size_t            i;
    u_char            x[300], y[1006];
    ngx_cdp_tslot_t  *t;

    /* from CLUSTER KEYSLOT of Redis 7.0 (7.0.15, cluster-enabled yes) */
    static ngx_cdp_tslot_t  slots[] = {
        { L("123456789"), 12739 },
        { L(""), 0 },
        { L("user1000"), 3443 },
        { L("{user1000}.following"), 3443 },
        { L("{user1000}.followers"), 3443 },
        { L("foo{}{bar}"), 8363 },           /* empty tag: the whole key */
        { L("foo{{bar}}zap"), 4015 },        /* the tag is "{bar" */
        { L("{bar"), 4015 },
        { L("foo{bar}{zap}"), 5061 },        /* the first tag only */
        { L("bar"), 5061 },
        { L("foo"), 12182 },
        { L("{}"), 15257 },
        { L("{"), 4092 },
        { L("}"), 12090 },
        { L("}{a}"), 15495 },                /* a '}' before the '{' */
        { L("a"), 15495 },
        { L("{a}{b}"), 15495 },
        { L("a{b"), 13340 },                 /* never closed */
        { L("{{}}"), 4092 },                 /* the tag is "{" */
        { L("a}b{c}"), 7365 },
        { L("{cdp:3.17}:events"), 8751 },
        { L("\0\377{\1\2}\177"), 4979 },     /* binary, NUL included */
        { L("\1\2"), 4979 },
        { L("\377\376\375\0"), 5741 },
        { L("{\0}"), 0 },
        { L("cdp:p:5f0c9d1e0a1b2c3d4e5f60718293a4b5"), 8575 },
    };

    for (i = 0; i < sizeof(slots) / sizeof(slots[0]); i++) {
        t = &slots[i];

        if (ngx_cdp_slot_of(t->key, t->len) != t->slot) {
            printf("  slot of key %zu: %u, not %u\n", i,
                   ngx_cdp_slot_of(t->key, t->len), t->slot);
            CHECK(0);
            continue;
        }

        CHECK(1);
    }

    /* long keys: 300 'x'; '{', 1000 'y', "}tail" (same Redis) */
    memset(x, 'x', sizeof(x));
    CHECK(ngx_cdp_slot_of(x, sizeof(x)) == 11216);

    y[0] = '{';
    memset(y + 1, 'y', 1000);
    memcpy(y + 1001, "}tail", 5);
    CHECK(ngx_cdp_slot_of(y, sizeof(y)) == 13565);
    CHECK(ngx_cdp_slot_of(y, sizeof(y)) == ngx_cdp_slot_of(y + 1, 1000));

    CHECK(ngx_cdp_key_slot(NULL, 0) == 0);

    /* every slot is the key's CRC16, or its tag's, & 16383 */
    CHECK(ngx_cdp_slot_of(L("123456789")) == (0x31c3 & 16383));
    CHECK(ngx_cdp_slot_of(L("x{123456789}y")) == (0x31c3 & 16383));
}


/* "<i>.<k>": i in decimal, '.', k in decimal without a leading zero */

static int
ngx_cdp_tag_form(const u_char *p, size_t len, unsigned i, unsigned *k)
{
    char    head[16];
    size_t  j, hlen;

    hlen = (size_t) snprintf(head, sizeof(head), "%u.", i);

    if (len <= hlen || memcmp(p, head, hlen) != 0) {
        return 0;
    }

    if (p[hlen] == '0' && len > hlen + 1) {
        return 0;
    }

    *k = 0;

    for (j = hlen; j < len; j++) {
        if (p[j] < '0' || p[j] > '9') {
            return 0;
        }

        *k = *k * 10 + (unsigned) (p[j] - '0');
    }

    return 1;
}


static int
ngx_cdp_tag_cmp(const void *a, const void *b)
{
    return strcmp(a, b);
}


/* the smallest k by snprintf(), tried for the n where that is quick */

static unsigned
ngx_cdp_tag_k(unsigned i, unsigned n)
{
    int       len;
    char      t[32];
    unsigned  k, slot;

    for (k = 0; ; k++) {
        len = snprintf(t, sizeof(t), "%u.%u", i, k);
        slot = ngx_cdp_crc16((u_char *) t, (size_t) len) & 16383;

        if (slot >= i * 16384 / n && slot < (i + 1) * 16384 / n) {
            return k;
        }
    }
}


static void
test_shard_tags(void)
{
    char      (*all)[NGX_CDP_SHARD_TAG_LEN + 1];
    char        key[NGX_CDP_SHARD_TAG_LEN + 16];
    size_t      len, longest;
    u_char     *b;
    unsigned    n, i, k, lo, hi, slot, bad, minimal;

    static const char  *tags16[16] = {
        "0.13", "1.10", "2.3", "3.0", "4.63", "5.60", "6.43", "7.40",
        "8.20", "9.23", "10.40", "11.43", "12.1", "13.2", "14.23", "15.20"
    };

    /* the default: a change of algorithm shows here first */
    b = ngx_cdp_buf(NGX_CDP_SHARD_TAG_LEN);

    for (i = 0; i < 16; i++) {
        memset(b, FILL, NGX_CDP_SHARD_TAG_LEN);
        len = ngx_cdp_shard_tag(i, 16, b);

        if (len != strlen(tags16[i]) || memcmp(b, tags16[i], len) != 0) {
            printf("  tag %u of 16: \"%.*s\", not \"%s\"\n", i,
                   (int) len, b, tags16[i]);
            CHECK(0);
            continue;
        }

        CHECK(1);
    }

    /* a few more, found the same way */
    len = ngx_cdp_shard_tag(0, 1, b);
    CHECK(len == 3 && memcmp(b, "0.0", 3) == 0);
    len = ngx_cdp_shard_tag(1, 2, b);
    CHECK(len == 3 && memcmp(b, "1.0", 3) == 0);
    len = ngx_cdp_shard_tag(6, 48, b);
    CHECK(len == 5 && memcmp(b, "6.145", 5) == 0);
    len = ngx_cdp_shard_tag(47, 48, b);
    CHECK(len == 5 && memcmp(b, "47.73", 5) == 0);
    len = ngx_cdp_shard_tag(1023, 1024, b);
    CHECK(len == 8 && memcmp(b, "1023.945", 8) == 0);

    /* out of range: nothing written */
    memset(b, FILL, NGX_CDP_SHARD_TAG_LEN);
    CHECK(ngx_cdp_shard_tag(0, 0, b) == 0);
    CHECK(ngx_cdp_shard_tag(16, 16, b) == 0);
    CHECK(ngx_cdp_shard_tag(17, 16, b) == 0);
    CHECK(ngx_cdp_shard_tag(0, NGX_CDP_SHARDS_MAX + 1, b) == 0);
    CHECK(ngx_cdp_untouched(b, NGX_CDP_SHARD_TAG_LEN));

    /*
     * Every i of every n: a tag is always found (this is the proof the
     * search's bound relies on), of the form "<i>.<k>", shorter than
     * NGX_CDP_SHARD_TAG_LEN, nothing written after it, its slot in the
     * i-th n-th of the slot space (alone and as a key's hash tag), and
     * the tags of one n pairwise distinct.  k is the smallest one where
     * the reference below is quick.
     */

    all = malloc(NGX_CDP_SHARDS_MAX * sizeof(*all));
    if (all == NULL) {
        perror("malloc");
        exit(2);
    }

    bad = 0;
    minimal = 0;
    longest = 0;

    for (n = 1; n <= NGX_CDP_SHARDS_MAX; n++) {
        for (i = 0; i < n; i++) {
            memset(b, FILL, NGX_CDP_SHARD_TAG_LEN);
            len = ngx_cdp_shard_tag(i, n, b);

            lo = i * NGX_CDP_SLOTS / n;
            hi = (i + 1) * NGX_CDP_SLOTS / n;

            if (len == 0 || len >= NGX_CDP_SHARD_TAG_LEN
                || !ngx_cdp_untouched(b + len, NGX_CDP_SHARD_TAG_LEN - len)
                || !ngx_cdp_tag_form(b, len, i, &k))
            {
                if (bad++ < 10) {
                    printf("  tag %u of %u: length %zu\n", i, n, len);
                }

                (void) snprintf(all[i], sizeof(all[i]), "bad %u", i);
                continue;
            }

            longest = len > longest ? len : longest;
            slot = ngx_cdp_slot_of(b, len);

            (void) snprintf(key, sizeof(key), "cdp:{%.*s}:e", (int) len,
                            (char *) b);

            if (slot < lo || slot >= hi
                || ngx_cdp_slot_of((u_char *) key, strlen(key)) != slot)
            {
                if (bad++ < 10) {
                    printf("  tag %u of %u: \"%.*s\" in slot %u, not in"
                           " [%u, %u)\n", i, n, (int) len, b, slot, lo, hi);
                }

                (void) snprintf(all[i], sizeof(all[i]), "bad %u", i);
                continue;
            }

            if ((n <= 100 || n > 1020) && ngx_cdp_tag_k(i, n) != k) {
                if (minimal++ < 10) {
                    printf("  tag %u of %u: k %u, not %u\n", i, n, k,
                           ngx_cdp_tag_k(i, n));
                }
            }

            memcpy(all[i], b, len);
            all[i][len] = '\0';
        }

        qsort(all, n, sizeof(*all), ngx_cdp_tag_cmp);

        for (i = 1; i < n; i++) {
            if (strcmp(all[i - 1], all[i]) == 0) {
                if (bad++ < 10) {
                    printf("  tags of %u: \"%s\" twice\n", n, all[i]);
                }
            }
        }
    }

    CHECK(bad == 0);
    CHECK(minimal == 0);

    /* "1023.dddd" at most: far below the room the API promises */
    CHECK(longest <= 9);

    free(all);
    free(b);
}


static void
test_shard_of(void)
{
    char       id[33];
    size_t     j;
    u_char    *c;
    unsigned   i, n, shard, count[ID_SHARDS], bad;

    static const char  hex[] = "0123456789abcdef";

    /* hard-coded: a change moves profiles between shards */
    CHECK(ngx_cdp_shard_of_copy("p1", 16) == 11);
    CHECK(ngx_cdp_shard_of_copy("p2", 16) == 8);
    CHECK(ngx_cdp_shard_of_copy("p42", 16) == 8);
    CHECK(ngx_cdp_shard_of_copy("p1000000", 16) == 8);
    CHECK(ngx_cdp_shard_of_copy("5f0c9d1e0a1b2c3d4e5f60718293a4b5", 16)
          == 7);
    CHECK(ngx_cdp_shard_of_copy("a", 16) == 7);
    CHECK(ngx_cdp_shard_of_copy("x", 16) == 15);
    CHECK(ngx_cdp_shard_of_copy("p1", 48) == 11);
    CHECK(ngx_cdp_shard_of_copy("p2", 48) == 24);
    CHECK(ngx_cdp_shard_of_copy("p42", 48) == 40);
    CHECK(ngx_cdp_shard_of_copy("p1", 1024) == 555);
    CHECK(ngx_cdp_shard_of_copy("5f0c9d1e0a1b2c3d4e5f60718293a4b5", 1024)
          == 343);
    CHECK(ngx_cdp_shard_of_copy("", 16) == 0);
    CHECK(ngx_cdp_shard_of(NULL, 0, 16) == 0);

    /* the whole id is hashed: braces are not a hash tag here */
    CHECK(ngx_cdp_shard_of_copy("{a}b", 16) == 0);
    CHECK(ngx_cdp_shard_of_copy("{a}b", 1024) == 720);
    CHECK(ngx_cdp_shard_of_copy("{a}b", 1024)
          == ngx_cdp_crc16(L("{a}b")) % 1024);
    CHECK(ngx_cdp_shard_of_copy("{a}b", 1024)
          != ngx_cdp_shard_of_copy("a", 1024));

    /* one shard, or none asked: shard 0 */
    CHECK(ngx_cdp_shard_of_copy("p1", 1) == 0);
    CHECK(ngx_cdp_shard_of_copy("p1", 0) == 0);

    /*
     * 100000 random 32-hex ids (what the cookie's ids are) over 16
     * shards: each within 5% of 6250.
     */

    memset(count, 0, sizeof(count));
    bad = 0;

    for (i = 0; i < IDS; i++) {
        for (j = 0; j < 32; j++) {
            id[j] = hex[ngx_cdp_rnd() >> 60];
        }

        id[32] = '\0';
        shard = ngx_cdp_shard_of((u_char *) id, 32, ID_SHARDS);

        if (shard >= ID_SHARDS
            || shard != ngx_cdp_crc16((u_char *) id, 32) % ID_SHARDS)
        {
            bad++;
            continue;
        }

        count[shard]++;
    }

    CHECK(bad == 0);

    for (n = 0; n < ID_SHARDS; n++) {
        if (count[n] * 100 < IDS / ID_SHARDS * 95
            || count[n] * 100 > IDS / ID_SHARDS * 105)
        {
            printf("  shard %u: %u ids of %u\n", n, count[n], IDS);
            CHECK(0);
            continue;
        }

        CHECK(1);
    }

    /* every n: a shard below n */
    bad = 0;
    c = ngx_cdp_dup("5f0c9d1e0a1b2c3d4e5f60718293a4b5", 32);

    for (n = 1; n <= NGX_CDP_SHARDS_MAX; n++) {
        if (ngx_cdp_shard_of(c, 32, n) >= n) {
            bad++;
        }
    }

    free(c);
    CHECK(bad == 0);
}


/* redirections */

static int
ngx_cdp_redirect(const u_char *s, size_t len, unsigned kind, unsigned slot,
    const char *host, unsigned port)
{
    int                  rc, ok;
    u_char              *b;
    size_t               hlen;
    ngx_cdp_redirect_t   r;

    b = ngx_cdp_dup(s, len);
    memset(&r, 0, sizeof(r));

    rc = ngx_cdp_redirect_parse(b, len, &r);
    hlen = strlen(host);

    ok = rc == 0 && r.kind == kind && r.slot == slot && r.port == port
         && r.host_len == hlen && r.host >= b && r.host + hlen <= b + len
         && memcmp(r.host, host, hlen) == 0;

    if (!ok) {
        printf("  \"%.*s\": rc %d, kind %u, slot %u, host \"%.*s\","
               " port %u\n", (int) len, s, rc, r.kind, r.slot,
               rc == 0 ? (int) r.host_len : 0,
               rc == 0 ? (const char *) r.host : "", r.port);
    }

    free(b);

    return ok;
}


/* refused, and *r left as it was */

static int
ngx_cdp_no_redirect(const u_char *s, size_t len)
{
    int                  rc;
    u_char              *b;
    ngx_cdp_redirect_t   r, was;

    b = ngx_cdp_dup(s, len);
    memset(&r, 0x5a, sizeof(r));
    was = r;

    rc = ngx_cdp_redirect_parse(b, len, &r);
    free(b);

    if (rc != -1 || memcmp(&r, &was, sizeof(r)) != 0) {
        printf("  \"%.*s\" (%zu bytes): rc %d\n", (int) len, s, len, rc);
        return 0;
    }

    return 1;
}


#define MOVED(s, sl, h, p)                                                    \
    CHECK(ngx_cdp_redirect(L(s), NGX_CDP_REDIRECT_MOVED, sl, h, p))
#define ASK(s, sl, h, p)                                                      \
    CHECK(ngx_cdp_redirect(L(s), NGX_CDP_REDIRECT_ASK, sl, h, p))
#define REFUSED(s)  CHECK(ngx_cdp_no_redirect(L(s)))


static void
test_redirect_good(void)
{
    MOVED("MOVED 3999 127.0.0.1:6381", 3999, "127.0.0.1", 6381);
    ASK("ASK 3999 127.0.0.1:6381", 3999, "127.0.0.1", 6381);
    MOVED("MOVED 0 h:1", 0, "h", 1);
    MOVED("MOVED 16383 h:65535", 16383, "h", 65535);
    ASK("ASK 12182 10.0.0.7:7000", 12182, "10.0.0.7", 7000);

    /* IPv6 as Redis writes it: the port after the last ':' */
    MOVED("MOVED 12182 ::1:6380", 12182, "::1", 6380);
    ASK("ASK 1 fe80::1%eth0:7000", 1, "fe80::1%eth0", 7000);
    MOVED("MOVED 2 2001:db8::42:30001", 2, "2001:db8::42", 30001);

    /* a hostname (cluster-preferred-endpoint-type hostname) */
    MOVED("MOVED 5 redis-0.redis.default.svc.cluster.local:6379", 5,
          "redis-0.redis.default.svc.cluster.local", 6379);

    /* the "?" Redis writes for a node without a hostname: a host here */
    MOVED("MOVED 5 ?:6379", 5, "?", 6379);
}


static void
test_redirect_bad(void)
{
    int                  ok;
    char                 host[256];
    size_t               i, len, colon;
    u_char               s[300];
    unsigned             c;
    ngx_cdp_redirect_t   r;

    /* an empty reply may come without a buffer */
    CHECK(ngx_cdp_redirect_parse(NULL, 0, &r) == -1);

    REFUSED("");
    REFUSED("MOVED");
    REFUSED("MOVED ");
    REFUSED("MOVED 3999");
    REFUSED("MOVED 3999 ");
    REFUSED("MOVED 3999 127.0.0.1");
    REFUSED("MOVED 3999 127.0.0.1:");
    REFUSED("ASK");
    REFUSED("ASK ");
    REFUSED("ASK 1");

    /* the keyword: exact, one space after it */
    REFUSED("ASKING 1 h:1");
    REFUSED("MOVEDX 1 h:1");
    REFUSED("moved 1 h:1");
    REFUSED("Ask 1 h:1");
    REFUSED("-MOVED 1 h:1");
    REFUSED(" MOVED 1 h:1");
    REFUSED("MOVED  1 h:1");
    REFUSED("MOVED\t1 h:1");
    REFUSED("ERR unknown command");

    /* the slot */
    REFUSED("MOVED 16384 h:1");
    REFUSED("MOVED 65536 h:1");
    REFUSED("MOVED 4294967297 h:1");
    REFUSED("MOVED 99999999999999999999999 h:1");
    REFUSED("MOVED -1 h:1");
    REFUSED("MOVED +1 h:1");
    REFUSED("MOVED 01 h:1");
    REFUSED("MOVED 00 h:1");
    REFUSED("MOVED a h:1");
    REFUSED("MOVED 1a h:1");
    REFUSED("MOVED 0x1 h:1");
    REFUSED("MOVED 1  h:1");
    REFUSED("MOVED  h:1");

    /* the port */
    REFUSED("MOVED 1 h:0");
    REFUSED("MOVED 1 h:00");
    REFUSED("MOVED 1 h:65536");
    REFUSED("MOVED 1 h:4294967297");
    REFUSED("MOVED 1 h:99999999999999999999999");
    REFUSED("MOVED 1 h:06379");
    REFUSED("MOVED 1 h:+1");
    REFUSED("MOVED 1 h:-1");
    REFUSED("MOVED 1 h:abc");
    REFUSED("MOVED 1 h:12a");
    REFUSED("MOVED 1 h:1:");
    REFUSED("MOVED 1 ::1:");

    /* the host: one without a colon, empty, overlong */
    REFUSED("MOVED 1 h");
    REFUSED("MOVED 1 6379");
    REFUSED("MOVED 1 :6379");
    REFUSED("MOVED 1 :");

    /* anything after the port */
    REFUSED("MOVED 1 h:1 ");
    REFUSED("MOVED 1 h:1 2");
    REFUSED("MOVED 1 h:1\r\n");
    REFUSED("MOVED 1 h:1\n");
    REFUSED("MOVED 1 h:1\0");

    /* spaces, control bytes and non-ASCII bytes anywhere */
    REFUSED("MOVED 1 h x:1");
    REFUSED("MOVED 1 h\tx:1");
    REFUSED("MOVED 1 h\0x:1");
    REFUSED("MOVED 1 h\177:1");
    REFUSED("MOVED 1 caf\303\251:1");
    REFUSED("MOVED 1\0 h:1");
    REFUSED("MOVED\0 1 h:1");
    REFUSED("MOVED 1 \r\nh:1");

    /* the host's length: 255 bytes is the most */
    memcpy(s, "MOVED 1 ", 8);
    memset(s + 8, 'h', 256);
    memcpy(s + 8 + 256, ":1", 2);
    CHECK(ngx_cdp_no_redirect(s, 8 + 256 + 2));

    memcpy(s, "ASK 1 ", 6);
    memset(s + 6, 'h', 255);
    memcpy(s + 6 + 255, ":1", 2);
    memset(host, 'h', 255);
    host[255] = '\0';
    CHECK(ngx_cdp_redirect(s, 6 + 255 + 2, NGX_CDP_REDIRECT_ASK, 1, host, 1));

    /* every byte < 0x21 or > 0x7e anywhere in the host, refused */
    len = sizeof("MOVED 3999 127.0.0.1:6381") - 1;
    ok = 1;

    for (i = 11; i < len; i++) {
        for (c = 0; c < 256; c++) {
            if (c > ' ' && c < 0x7f) {
                continue;
            }

            memcpy(s, "MOVED 3999 127.0.0.1:6381", len);
            s[i] = (u_char) c;

            if (!ngx_cdp_no_redirect(s, len)) {
                ok = 0;
            }
        }
    }

    CHECK(ok);

    /*
     * Every cut: refused up to the first digit of the port, then a
     * shorter port ("...:638") that is still a redirection.
     */

    memcpy(s, "MOVED 3999 127.0.0.1:6381", len);
    colon = len - 5;
    ok = 1;

    for (i = 0; i < len; i++) {
        if (i <= colon + 1) {
            ok &= ngx_cdp_no_redirect(s, i);
            continue;
        }

        ok &= ngx_cdp_redirect(s, i, NGX_CDP_REDIRECT_MOVED, 3999,
                               "127.0.0.1",
                               i == colon + 2 ? 6 : i == colon + 3 ? 63 : 638);
    }

    CHECK(ok);
}


int
main(void)
{
    test_crc16();
    test_key_slot();
    test_shard_tags();
    test_shard_of();
    test_redirect_good();
    test_redirect_bad();

    return ngx_cdp_summary();
}
