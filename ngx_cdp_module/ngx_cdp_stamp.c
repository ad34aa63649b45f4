
/*
 * ngx_cdp: what a record is stamped with (see ngx_cdp_stamp.h).
 *
 * Everything here works on caller-owned buffers and never allocates, so
 * the same code runs in the nginx worker and the unit tests.
 */


#include "ngx_cdp_stamp.h"

#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>


/* client address */

size_t
ngx_cdp_ip_truncate(int family, const u_char *addr, u_char *dst)
{
    size_t   i;
    u_char  *p, buf[16];

    static const u_char  v4mapped[12] = {
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff
    };

    if (family == AF_INET6 && memcmp(addr, v4mapped, 12) == 0) {
        family = AF_INET;
        addr += 12;
    }

    switch (family) {

    case AF_INET:
        /* by hand: glibc's inet_ntop() formats IPv4 with sprintf() */
        p = dst;

        for (i = 0; i < 3; i++) {
            if (addr[i] >= 100) {
                *p++ = (u_char) ('0' + addr[i] / 100);
            }

            if (addr[i] >= 10) {
                *p++ = (u_char) ('0' + addr[i] / 10 % 10);
            }

            *p++ = (u_char) ('0' + addr[i] % 10);
            *p++ = '.';
        }

        *p++ = '0';
        *p = '\0';

        return p - dst;

    case AF_INET6:
        memcpy(buf, addr, 6);
        memset(buf + 6, 0, 10);
        break;

    default:
        return 0;
    }

    if (inet_ntop(family, buf, (char *) dst, NGX_CDP_IP_TEXT_MAX) == NULL) {
        return 0;
    }

    return strlen((char *) dst);
}


/* time */

u_char *
ngx_cdp_iso8601(u_char *dst, time_t sec, unsigned msec)
{
    int        year;
    struct tm  tm;

    if (gmtime_r(&sec, &tm) == NULL) {
        memset(&tm, 0, sizeof(struct tm));
        tm.tm_year = 70;
        tm.tm_mday = 1;
    }

    /* the format has room for years 0000 to 9999 only */

    year = tm.tm_year + 1900;

    if (year < 0) {
        year = 0;

    } else if (year > 9999) {
        year = 9999;
    }

    if (msec > 999) {
        msec = 999;
    }

    *dst++ = (u_char) ('0' + year / 1000);
    *dst++ = (u_char) ('0' + year / 100 % 10);
    *dst++ = (u_char) ('0' + year / 10 % 10);
    *dst++ = (u_char) ('0' + year % 10);
    *dst++ = '-';
    *dst++ = (u_char) ('0' + (tm.tm_mon + 1) / 10);
    *dst++ = (u_char) ('0' + (tm.tm_mon + 1) % 10);
    *dst++ = '-';
    *dst++ = (u_char) ('0' + tm.tm_mday / 10);
    *dst++ = (u_char) ('0' + tm.tm_mday % 10);
    *dst++ = 'T';
    *dst++ = (u_char) ('0' + tm.tm_hour / 10);
    *dst++ = (u_char) ('0' + tm.tm_hour % 10);
    *dst++ = ':';
    *dst++ = (u_char) ('0' + tm.tm_min / 10);
    *dst++ = (u_char) ('0' + tm.tm_min % 10);
    *dst++ = ':';
    *dst++ = (u_char) ('0' + tm.tm_sec / 10);
    *dst++ = (u_char) ('0' + tm.tm_sec % 10);
    *dst++ = '.';
    *dst++ = (u_char) ('0' + msec / 100);
    *dst++ = (u_char) ('0' + msec / 10 % 10);
    *dst++ = (u_char) ('0' + msec % 10);
    *dst++ = 'Z';

    return dst;
}
