
/*
 * ngx_cdp_wire.c: what nginx writes for the store reads back the same,
 * and store/cdp.lua's wire block is the one ngx_cdp_wire.h generates.
 */


#include "unit.h"
#include "ngx_cdp_wire.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>


#define W(name)  { #name, NGX_CDP_WIRE_##name }

static const struct {
    const char  *name;
    uint64_t     value;
} wire[] = {
    W(MAXLEN), W(LIMIT_USER_ID), W(LIMIT_EMAIL), W(LIMIT_PHONE),
    W(TIMELINE_MAX), W(DEDUP), W(AGG_RETENTION), W(ONCE_SHIFT),
    W(ONCE_BITS), W(ONCE_SECONDS), W(API_MID_LEN), W(API_UIDH_LEN),
    W(API_TYPE_AT), W(API_REST_AT), W(SHARDS)
};


static void
test_argv1(void)
{
    size_t               i;
    u_char               buf[NGX_CDP_WIRE_ARGV1_MAX], *end;
    ngx_cdp_wire_conf_t  c, back;

    static const ngx_cdp_wire_conf_t  cases[] = {
        { 1000000, 1, 5, 5, 10000, 86400, 64800000, 16, 0 },
        { 0, 0, 0, 0, 0, 0, 0, 0, 0 },
        { 9999999999999999999ULL, 1, 2, 3, 4, 5, 6, 7, 1 },
        { 7, 100, 100, 100, 1, 1, 1, 1024, 1 },
        { 9999999999999999999ULL, 9999999999999999999ULL,
          9999999999999999999ULL, 9999999999999999999ULL,
          9999999999999999999ULL, 9999999999999999999ULL,
          9999999999999999999ULL, 9999999999999999999ULL,
          9999999999999999999ULL }
    };

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        end = ngx_cdp_wire_argv1(buf, &cases[i]);
        CHECK((size_t) (end - buf) <= sizeof(buf));
        CHECK(ngx_cdp_wire_argv1_parse(buf, end - buf, &back) == 0);
        CHECK(memcmp(&back, &cases[i], sizeof(back)) == 0);
    }

    c = cases[0];
    end = ngx_cdp_wire_argv1(buf, &c);
    CHECK((size_t) (end - buf)
          == sizeof("1000000 1 5 5 10000 86400 64800000 16 0") - 1);
    CHECK(memcmp(buf, "1000000 1 5 5 10000 86400 64800000 16 0", end - buf)
          == 0);

    c.cluster = 1;
    end = ngx_cdp_wire_argv1(buf, &c);
    CHECK((size_t) (end - buf)
          == sizeof("1000000 1 5 5 10000 86400 64800000 16 1") - 1);
    CHECK(memcmp(buf, "1000000 1 5 5 10000 86400 64800000 16 1", end - buf)
          == 0);

    /* seven numbers: the default shards, not a cluster */
    back.cluster = 7;
    CHECK(ngx_cdp_wire_argv1_parse((u_char *) "1 2 3 4 5 6 7", 13, &back)
          == 0);
    CHECK(back.agg_retention == 7 && back.shards == NGX_CDP_WIRE_SHARDS
          && back.cluster == 0);

    /* eight: not a cluster */
    back.cluster = 7;
    CHECK(ngx_cdp_wire_argv1_parse((u_char *) "1 2 3 4 5 6 7 8", 15, &back)
          == 0);
    CHECK(back.shards == 8 && back.cluster == 0);

    /* the part from '|' on is the destinations' and the facts' */
    CHECK(ngx_cdp_wire_argv1_parse((u_char *) "1 2 3 4 5 6 7|a b", 17, &back)
          == 0);
    CHECK(back.maxlen == 1 && back.agg_retention == 7);

    /* a lone maxlen: the defaults, as the store takes it */
    CHECK(ngx_cdp_wire_argv1_parse((u_char *) "42", 2, &back) == 0);
    CHECK(back.maxlen == 42
          && back.limit_user_id == NGX_CDP_WIRE_LIMIT_USER_ID
          && back.limit_email == NGX_CDP_WIRE_LIMIT_EMAIL
          && back.limit_phone == NGX_CDP_WIRE_LIMIT_PHONE
          && back.timeline_max == NGX_CDP_WIRE_TIMELINE_MAX
          && back.dedup == NGX_CDP_WIRE_DEDUP
          && back.agg_retention == NGX_CDP_WIRE_AGG_RETENTION
          && back.shards == NGX_CDP_WIRE_SHARDS
          && back.cluster == 0);

    CHECK(ngx_cdp_wire_argv1_parse((u_char *) "", 0, &back) == -1);
    CHECK(ngx_cdp_wire_argv1_parse((u_char *) "1 2", 3, &back) == -1);
    CHECK(ngx_cdp_wire_argv1_parse((u_char *) "1 2 3 4 5 6 x", 13, &back)
          == -1);
    CHECK(ngx_cdp_wire_argv1_parse((u_char *) "1  2 3 4 5 6 7", 14, &back)
          == -1);
    CHECK(ngx_cdp_wire_argv1_parse((u_char *) "1 2 3 4 5 6 7 8", 15, &back)
          == 0 && back.shards == 8);
    CHECK(ngx_cdp_wire_argv1_parse((u_char *) "1 2 3 4 5 6 7 8 1", 17,
                                   &back)
          == 0 && back.shards == 8 && back.cluster == 1);
    CHECK(ngx_cdp_wire_argv1_parse((u_char *) "1 2 3 4 5 6 7 8 1|a b", 21,
                                   &back)
          == 0 && back.cluster == 1);
    CHECK(ngx_cdp_wire_argv1_parse((u_char *) "1 2 3 4 5 6 7 8 9 10", 20,
                                   &back)
          == -1);
    CHECK(ngx_cdp_wire_argv1_parse((u_char *) "1 2 3 4 5 6 7 8 ", 16, &back)
          == -1);
    CHECK(ngx_cdp_wire_argv1_parse((u_char *) "1 2 3 4 5 6 7 ", 14, &back)
          == -1);
    CHECK(ngx_cdp_wire_argv1_parse((u_char *) "-1", 2, &back) == -1);
}


static void
test_api_head(void)
{
    u_char         buf[NGX_CDP_WIRE_API_HEAD + 8], *end, type;
    const u_char  *mid, *uidh;

    static const u_char  m[] = "0123456789abcdef0123456789abcdef";
    static const u_char  u[] = "00112233445566778899aabbccddeeff"
                               "00112233445566778899aabbccddeeff";

    end = ngx_cdp_wire_api_head(buf, m, u, 't');
    CHECK(end - buf == NGX_CDP_WIRE_API_HEAD);
    CHECK(ngx_cdp_wire_api_parse_head(buf, end - buf, &mid, &uidh, &type)
          == 0);
    CHECK(mid == buf && uidh == buf + NGX_CDP_WIRE_API_MID_LEN);
    CHECK(memcmp(mid, m, NGX_CDP_WIRE_API_MID_LEN) == 0);
    CHECK(memcmp(uidh, u, NGX_CDP_WIRE_API_UIDH_LEN) == 0);
    CHECK(type == 't');

    /* the byte Lua reads with string.byte(h, WIRE_API_TYPE_AT) */
    CHECK(buf[NGX_CDP_WIRE_API_TYPE_AT - 1] == 't');
    CHECK(NGX_CDP_WIRE_API_REST_AT == NGX_CDP_WIRE_API_HEAD + 1);

    end = ngx_cdp_wire_api_head(buf, NULL, NULL, 'i');
    CHECK(ngx_cdp_wire_api_parse_head(buf, end - buf, &mid, &uidh, &type)
          == 0);
    CHECK(mid == NULL && uidh == NULL && type == 'i');
    CHECK(buf[0] == '-' && buf[NGX_CDP_WIRE_API_HEAD - 2] == '-');

    end = ngx_cdp_wire_api_head(buf, m, NULL, 'a');
    CHECK(ngx_cdp_wire_api_parse_head(buf, end - buf, &mid, &uidh, &type)
          == 0);
    CHECK(mid == buf && uidh == NULL && type == 'a');

    CHECK(ngx_cdp_wire_api_parse_head(buf, NGX_CDP_WIRE_API_HEAD - 1, &mid,
                                      &uidh, &type)
          == -1);

    CHECK(NGX_CDP_WIRE_ONCE_BITS == 1 << NGX_CDP_WIRE_ONCE_SHIFT);
}


/* store/cdp.lua's wire block: each constant, with its value, and no other */

static void
test_lua_block(void)
{
    char    *lua, *begin, *stop, line[128];
    long     size;
    FILE    *f;
    size_t   i, n;

    f = fopen("../../store/cdp.lua", "rb");
    CHECK(f != NULL);

    if (f == NULL) {
        return;
    }

    fseek(f, 0, SEEK_END);
    size = ftell(f);
    fseek(f, 0, SEEK_SET);

    lua = malloc(size + 1);
    CHECK(lua != NULL && fread(lua, 1, size, f) == (size_t) size);
    fclose(f);

    if (lua == NULL) {
        return;
    }

    lua[size] = '\0';

    begin = strstr(lua, "\n-- wire:begin");
    stop = begin ? strstr(begin, "\n-- wire:end") : NULL;
    CHECK(begin != NULL && stop != NULL);

    if (begin == NULL || stop == NULL) {
        free(lua);
        return;
    }

    stop[1] = '\0';         /* the last line keeps its newline */

    for (i = 0; i < sizeof(wire) / sizeof(wire[0]); i++) {
        snprintf(line, sizeof(line), "\nlocal WIRE_%s = %llu\n",
                 wire[i].name, (unsigned long long) wire[i].value);

        /* "run store/wire.sh --update" when this fails */
        CHECK(strstr(begin, line) != NULL);
    }

    for (n = 0, stop = begin; (stop = strstr(stop, "\nlocal WIRE_")); n++) {
        stop++;
    }

    CHECK(n == sizeof(wire) / sizeof(wire[0]));

    free(lua);
}


int
main(void)
{
    test_argv1();
    test_api_head();
    test_lua_block();

    return ngx_cdp_summary();
}
