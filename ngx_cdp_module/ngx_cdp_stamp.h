
/*
 * ngx_cdp: what a record is stamped with.
 *
 * When (an ISO-8601 UTC time with milliseconds) and from where (the client
 * address, truncated).
 *
 * Nothing here uses nginx types or allocates: callers pass buffers.
 * The unit tests (tests/unit) link ngx_cdp_stamp.c alone.
 */


#ifndef _NGX_CDP_STAMP_H_INCLUDED_
#define _NGX_CDP_STAMP_H_INCLUDED_


#include <sys/types.h>
#include <stddef.h>
#include <time.h>


/*
 * Truncated client address as text: IPv4 to /24 ("203.0.113.0"), IPv6 to
 * /48 ("2001:db8:1::").  family is AF_INET (addr 4 bytes) or AF_INET6
 * (16 bytes; a v4-mapped address is treated as IPv4).  dst needs
 * NGX_CDP_IP_TEXT_MAX bytes; returns the length written (0 for another
 * family).
 */
#define NGX_CDP_IP_TEXT_MAX      46

size_t ngx_cdp_ip_truncate(int family, const u_char *addr, u_char *dst);


/* "2026-11-23T04:40:51.123Z": writes NGX_CDP_ISO8601_LEN bytes */
#define NGX_CDP_ISO8601_LEN      24

u_char *ngx_cdp_iso8601(u_char *dst, time_t sec, unsigned msec);


#endif /* _NGX_CDP_STAMP_H_INCLUDED_ */
