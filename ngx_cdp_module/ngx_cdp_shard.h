
/*
 * ngx_cdp: shards and Redis Cluster slots (pure: no nginx types).
 *
 * Redis Cluster puts a key in one of 16384 slots: CRC16 (XMODEM) of the
 * key, or of its hash tag (what is inside the first "{...}" when that is
 * not empty), modulo 16384.  Every key that one store call touches
 * carries one shard's tag, so that each FCALL stays in one slot.
 *
 * A store has N shards (cdp_redis ... shards=N, default 16).  Shard i's
 * tag is "<i>.<k>", k the smallest number that puts the tag's slot in
 * the i-th N-th of the slot space: the shards sit at evenly spaced slots,
 * so masters that own equal runs of slots (as redis-cli --cluster create
 * and rebalance make them) own equal numbers of shards when N is a
 * multiple of their number.  A profile id's shard is the CRC16 of the
 * id modulo N: a browser's anonymous id and a known profile's p<N> alike.
 *
 * The redirections of a cluster node are parsed here too:
 *     -MOVED <slot> <ip>:<port>     -ASK <slot> <ip>:<port>
 *
 * Unit tests: tests/unit/test_shard.c; fuzz: tests/fuzz/fuzz_redirect.c.
 * The same numbers in Python for the tests: tests/integration/cdp_shard.py.
 */


#ifndef _NGX_CDP_SHARD_H_INCLUDED_
#define _NGX_CDP_SHARD_H_INCLUDED_


#include <sys/types.h>
#include <stddef.h>
#include <stdint.h>


#define NGX_CDP_SLOTS            16384
#define NGX_CDP_SHARDS_MAX       1024
#define NGX_CDP_SHARDS_DEFAULT   16

/* a tag's longest text, "<i>.<k>", without the braces */
#define NGX_CDP_SHARD_TAG_LEN    24


uint16_t ngx_cdp_crc16(const u_char *p, size_t len);

/* the slot of a key: of its hash tag when it has one */
unsigned ngx_cdp_key_slot(const u_char *key, size_t len);

/* shard i's tag of n (i < n <= NGX_CDP_SHARDS_MAX) into buf (at least
 * NGX_CDP_SHARD_TAG_LEN bytes), without braces; returns its length
 * (at most 9: "1023.dddd"), never 0 but for an i or n out of range,
 * when nothing is written */
size_t ngx_cdp_shard_tag(unsigned i, unsigned n, u_char *buf);

/* the shard of a profile id (n >= 1; 0 for n 0): CRC16 of the whole id,
 * braces and all, modulo n */
unsigned ngx_cdp_shard_of(const u_char *pid, size_t len, unsigned n);


#define NGX_CDP_REDIRECT_MOVED   1
#define NGX_CDP_REDIRECT_ASK     2

typedef struct {
    unsigned        kind;        /* NGX_CDP_REDIRECT_MOVED or _ASK */
    unsigned        slot;
    const u_char   *host;        /* into the parsed text, not terminated */
    size_t          host_len;
    unsigned        port;
} ngx_cdp_redirect_t;

/* an error reply's text (without '-' and CRLF): 0 and *r filled when it
 * is a well-formed MOVED or ASK (slot < 16384, port 1..65535, a host of
 * 1..255 bytes without spaces; an IPv6 host as Redis writes it, the
 * part before the last ':'), -1 otherwise, *r untouched.  Exactly as
 * Redis writes it: one space between the parts, numbers without sign or
 * leading zero, a host of printable ASCII, nothing after the port.  The
 * empty host of Redis 7's "MOVED 3999 :6380" (an unknown endpoint: the
 * same host, that port) is refused, as is anything else */
int ngx_cdp_redirect_parse(const u_char *s, size_t len,
    ngx_cdp_redirect_t *r);


#endif /* _NGX_CDP_SHARD_H_INCLUDED_ */
