
/*
 * ngx_cdp: the wire format between nginx and the store (cdp_ingest in
 * store/cdp.lua), named in one place.
 *
 * The WIRE constants below are the store's too: the block of
 * store/cdp.lua between "-- wire:begin" and "-- wire:end" is generated
 * from this file by store/wire.sh (embed.sh generates it afresh into the
 * library compiled into the module, and tests/unit/test_wire.c fails when
 * the checked-in copy differs).  Each is a decimal integer.
 *
 * ARGV[1] of cdp_ingest: "maxlen limit_user_id limit_email limit_phone
 * timeline_max dedup_seconds aggregate_retention shards cluster" (then,
 * with destinations, facts or segments, "|..."), nine numbers separated
 * by one space; cluster is 1 when the store is a Redis Cluster (identity
 * then goes by chains of single-slot calls, cdp_xid), else 0.  A lone
 * number is the maxlen with the defaults for the rest, seven are read
 * with the default shards and cluster 0, eight with cluster 0.
 *
 * An api message's attrs: a head of fixed width, read at fixed offsets,
 * then TAB-separated fields:
 *
 *   [0, 32)    the messageId's MD5 in hex, or 32 '-' (never deduplicated)
 *   [32, 96)   the user id's keyed hash, or 64 '-'
 *   96         the type's first letter: t, p, s, g, i, a
 *   97-        "user_id TAB user_id h TAB email h TAB phone h TAB
 *              previousId as a user id h TAB previousId as an anonymous
 *              id TAB traits"
 *
 * (Lua counts from 1: the type is byte WIRE_API_TYPE_AT, the fields start
 * at WIRE_API_REST_AT.)
 *
 * No nginx types, no allocation: callers pass buffers.
 */


#ifndef _NGX_CDP_WIRE_H_INCLUDED_
#define _NGX_CDP_WIRE_H_INCLUDED_


#include <sys/types.h>
#include <stddef.h>
#include <stdint.h>


/* ARGV[1]'s defaults (nginx.conf's defaults too) */
#define NGX_CDP_WIRE_MAXLEN             1000000
#define NGX_CDP_WIRE_LIMIT_USER_ID      1
#define NGX_CDP_WIRE_LIMIT_EMAIL        5
#define NGX_CDP_WIRE_LIMIT_PHONE        5
#define NGX_CDP_WIRE_TIMELINE_MAX       10000
#define NGX_CDP_WIRE_DEDUP              86400
#define NGX_CDP_WIRE_AGG_RETENTION      64800000    /* 25 months of 30 days */
#define NGX_CDP_WIRE_SHARDS             16          /* NGX_CDP_SHARDS_DEFAULT */

/* batch ids: a bitmap key per 2^ONCE_SHIFT batches, kept a week */
#define NGX_CDP_WIRE_ONCE_SHIFT         20
#define NGX_CDP_WIRE_ONCE_BITS          1048576
#define NGX_CDP_WIRE_ONCE_SECONDS       604800

/* an api message's attrs */
#define NGX_CDP_WIRE_API_MID_LEN        32
#define NGX_CDP_WIRE_API_UIDH_LEN       64
#define NGX_CDP_WIRE_API_TYPE_AT        97          /* 1-based, in Lua */
#define NGX_CDP_WIRE_API_REST_AT        98
#define NGX_CDP_WIRE_API_HEAD                                                 \
    (NGX_CDP_WIRE_API_MID_LEN + NGX_CDP_WIRE_API_UIDH_LEN + 1)

/* ARGV[1]'s nine numbers written out: at most this */
#define NGX_CDP_WIRE_ARGV1_MAX          (9 * 21)


typedef struct {
    uint64_t       maxlen;
    uint64_t       limit_user_id;
    uint64_t       limit_email;
    uint64_t       limit_phone;
    uint64_t       timeline_max;
    uint64_t       dedup;
    uint64_t       agg_retention;
    uint64_t       shards;
    uint64_t       cluster;     /* 1: Redis Cluster */
} ngx_cdp_wire_conf_t;


/* ARGV[1]'s numbers at p (NGX_CDP_WIRE_ARGV1_MAX bytes); returns the end */
u_char *ngx_cdp_wire_argv1(u_char *p, const ngx_cdp_wire_conf_t *conf);

/*
 * The numbers back, as the store reads them (a lone number: the maxlen
 * with the defaults); 0, or -1 when [p, p + len) is not that.  The part
 * from '|' on is not looked at.
 */
int ngx_cdp_wire_argv1_parse(const u_char *p, size_t len,
    ngx_cdp_wire_conf_t *conf);

/*
 * An api message's head at p (NGX_CDP_WIRE_API_HEAD bytes): mid the 32
 * hex digits of its messageId's MD5 or NULL, uidh the 64 of its user id's
 * hash or NULL, type its first letter.  Returns the end.
 */
u_char *ngx_cdp_wire_api_head(u_char *p, const u_char *mid,
    const u_char *uidh, u_char type);

/* the head back: mid, uidh NULL where '-'; 0, or -1 when malformed */
int ngx_cdp_wire_api_parse_head(const u_char *p, size_t len,
    const u_char **mid, const u_char **uidh, u_char *type);


#endif /* _NGX_CDP_WIRE_H_INCLUDED_ */
