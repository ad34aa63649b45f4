
/*
 * ngx_cdp: the wire format between nginx and the store (ngx_cdp_wire.h).
 */


#include "ngx_cdp_wire.h"

#include <string.h>


static u_char *ngx_cdp_wire_uint(u_char *p, uint64_t v);
static const u_char *ngx_cdp_wire_number(const u_char *p, const u_char *end,
    uint64_t *v);
static int ngx_cdp_wire_none(const u_char *p, size_t len);


u_char *
ngx_cdp_wire_argv1(u_char *p, const ngx_cdp_wire_conf_t *conf)
{
    p = ngx_cdp_wire_uint(p, conf->maxlen);
    *p++ = ' ';
    p = ngx_cdp_wire_uint(p, conf->limit_user_id);
    *p++ = ' ';
    p = ngx_cdp_wire_uint(p, conf->limit_email);
    *p++ = ' ';
    p = ngx_cdp_wire_uint(p, conf->limit_phone);
    *p++ = ' ';
    p = ngx_cdp_wire_uint(p, conf->timeline_max);
    *p++ = ' ';
    p = ngx_cdp_wire_uint(p, conf->dedup);
    *p++ = ' ';
    p = ngx_cdp_wire_uint(p, conf->agg_retention);
    *p++ = ' ';
    p = ngx_cdp_wire_uint(p, conf->shards);
    *p++ = ' ';

    return ngx_cdp_wire_uint(p, conf->cluster);
}


int
ngx_cdp_wire_argv1_parse(const u_char *p, size_t len,
    ngx_cdp_wire_conf_t *conf)
{
    size_t          i;
    uint64_t       *v[9];
    const u_char   *end, *bar;

    end = p + len;
    bar = memchr(p, '|', len);

    if (bar) {
        end = bar;
    }

    v[0] = &conf->maxlen;
    v[1] = &conf->limit_user_id;
    v[2] = &conf->limit_email;
    v[3] = &conf->limit_phone;
    v[4] = &conf->timeline_max;
    v[5] = &conf->dedup;
    v[6] = &conf->agg_retention;
    v[7] = &conf->shards;
    v[8] = &conf->cluster;

    p = ngx_cdp_wire_number(p, end, v[0]);
    if (p == NULL) {
        return -1;
    }

    if (p == end) {
        /* a lone maxlen: the store's defaults */
        conf->limit_user_id = NGX_CDP_WIRE_LIMIT_USER_ID;
        conf->limit_email = NGX_CDP_WIRE_LIMIT_EMAIL;
        conf->limit_phone = NGX_CDP_WIRE_LIMIT_PHONE;
        conf->timeline_max = NGX_CDP_WIRE_TIMELINE_MAX;
        conf->dedup = NGX_CDP_WIRE_DEDUP;
        conf->agg_retention = NGX_CDP_WIRE_AGG_RETENTION;
        conf->shards = NGX_CDP_WIRE_SHARDS;
        conf->cluster = 0;
        return 0;
    }

    conf->shards = NGX_CDP_WIRE_SHARDS;
    conf->cluster = 0;

    for (i = 1; i < 9; i++) {
        if (i >= 7 && p == end) {
            /* seven numbers: the default shards; eight: not a cluster */
            break;
        }

        if (p == end || *p != ' ') {
            return -1;
        }

        p = ngx_cdp_wire_number(p + 1, end, v[i]);
        if (p == NULL) {
            return -1;
        }
    }

    return (p == end) ? 0 : -1;
}


u_char *
ngx_cdp_wire_api_head(u_char *p, const u_char *mid, const u_char *uidh,
    u_char type)
{
    if (mid) {
        memcpy(p, mid, NGX_CDP_WIRE_API_MID_LEN);

    } else {
        memset(p, '-', NGX_CDP_WIRE_API_MID_LEN);
    }

    p += NGX_CDP_WIRE_API_MID_LEN;

    if (uidh) {
        memcpy(p, uidh, NGX_CDP_WIRE_API_UIDH_LEN);

    } else {
        memset(p, '-', NGX_CDP_WIRE_API_UIDH_LEN);
    }

    p += NGX_CDP_WIRE_API_UIDH_LEN;

    *p++ = type;

    return p;
}


int
ngx_cdp_wire_api_parse_head(const u_char *p, size_t len, const u_char **mid,
    const u_char **uidh, u_char *type)
{
    if (len < NGX_CDP_WIRE_API_HEAD) {
        return -1;
    }

    *mid = ngx_cdp_wire_none(p, NGX_CDP_WIRE_API_MID_LEN) ? NULL : p;
    p += NGX_CDP_WIRE_API_MID_LEN;

    *uidh = ngx_cdp_wire_none(p, NGX_CDP_WIRE_API_UIDH_LEN) ? NULL : p;
    p += NGX_CDP_WIRE_API_UIDH_LEN;

    *type = *p;

    return 0;
}


static u_char *
ngx_cdp_wire_uint(u_char *p, uint64_t v)
{
    u_char   digits[20], *d;

    d = digits + sizeof(digits);

    do {
        *--d = (u_char) ('0' + v % 10);
        v /= 10;
    } while (v);

    memcpy(p, d, digits + sizeof(digits) - d);

    return p + (digits + sizeof(digits) - d);
}


/* digits, as Lua's %d+ takes them: at least one, at most 19 */

static const u_char *
ngx_cdp_wire_number(const u_char *p, const u_char *end, uint64_t *v)
{
    size_t  n;

    *v = 0;

    for (n = 0; p < end && *p >= '0' && *p <= '9'; p++, n++) {
        if (n == 19) {
            return NULL;
        }

        *v = *v * 10 + (*p - '0');
    }

    return n ? p : NULL;
}


static int
ngx_cdp_wire_none(const u_char *p, size_t len)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        if (p[i] != '-') {
            return 0;
        }
    }

    return 1;
}
