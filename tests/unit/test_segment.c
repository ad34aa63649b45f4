
/*
 * Unit tests of ngx_cdp_segment.c, with the same tiny harness as
 * test_codec.c.
 *
 * Every CHECK counts as one test; the last line is "N passed, N failed"
 * and the exit status is non-zero when anything failed.  Bodies are copied
 * to their exact size (no NUL after them), error bodies are written into
 * buffers of exactly NGX_CDP_SEGMENT_ERROR_JSON_MAX bytes followed by a
 * canary, and results are freed, so overruns and leaks show up under
 * valgrind and `make sanitize`.  Stored copies are read back with jansson.
 */


#define _DEFAULT_SOURCE             /* timegm() */

#include <time.h>

#include <jansson.h>

#include "ngx_cdp_segment.h"
#include "ngx_cdp_consent.h"
#include "unit.h"


#define TRACK     NGX_CDP_SEGMENT_TRACK
#define IDENTIFY  NGX_CDP_SEGMENT_IDENTIFY
#define PAGE      NGX_CDP_SEGMENT_PAGE
#define SCREEN    NGX_CDP_SEGMENT_SCREEN
#define GROUP     NGX_CDP_SEGMENT_GROUP
#define ALIAS     NGX_CDP_SEGMENT_ALIAS
#define BATCH     NGX_CDP_SEGMENT_BATCH

#define RECEIVED  "2026-11-23T07:30:00.123Z"

/* body literals */
#define B(s)      (const u_char *) (s), sizeof(s) - 1


static ngx_cdp_segment_t        res;
static ngx_cdp_segment_error_t  err;


/* helpers */

static int
parse(int type, const u_char *body, size_t len)
{
    int      rc;
    u_char  *copy;

    copy = ngx_cdp_dup(body, len);

    /* what a previous call left must not matter */
    memset(&err, 0x5a, sizeof(err));

    rc = ngx_cdp_segment_parse(type, copy, len, (const u_char *) RECEIVED,
                               sizeof(RECEIVED) - 1, &res, &err);

    if (memcmp(copy, body, len) != 0 || !ngx_cdp_canary_ok(copy, len)) {
        printf("body changed by the parser\n");
        rc = -2;
    }

    free(copy);

    return rc;
}


/* accepted: res holds n messages */

static int
ok(int type, const u_char *body, size_t len, size_t n)
{
    int  rc;

    rc = parse(type, body, len);

    if (rc != 0 || err.status != 0) {
        printf("  expected success, got %d %s: %s [%s]\n", rc,
               err.code ? err.code : "-", err.message, err.field);
        ngx_cdp_segment_free(&res);
        return 0;
    }

    if (res.nmsgs != n) {
        printf("  expected %zu messages, got %zu\n", n, res.nmsgs);
        ngx_cdp_segment_free(&res);
        return 0;
    }

    return 1;
}


/*
 * refused with exactly this status, code, field and index, with nothing
 * in res, and an error body that is valid JSON saying the same
 */

static int
bad(int type, const u_char *body, size_t len, int status, const char *code,
    const char *field, long index)
{
    int      rc, good;
    size_t   n;
    u_char  *out;
    json_t  *j;

    rc = parse(type, body, len);

    good = rc == status && err.status == status && err.code != NULL
           && strcmp(err.code, code) == 0 && strcmp(err.field, field) == 0
           && err.index == index && err.message[0] != '\0'
           && res.nmsgs == 0 && res.msgs == NULL && res.write_key == NULL;

    if (!good) {
        printf("  expected %d %s [%s] %ld, got %d %s [%s] %ld: %s\n",
               status, code, field, index, rc, err.code ? err.code : "-",
               err.field, err.index, err.message);
        ngx_cdp_segment_free(&res);
        return 0;
    }

    out = ngx_cdp_buf(NGX_CDP_SEGMENT_ERROR_JSON_MAX);
    n = ngx_cdp_segment_error_json(out, &err);

    j = json_loadb((const char *) out, n, JSON_REJECT_DUPLICATES, NULL);

    good = n <= NGX_CDP_SEGMENT_ERROR_JSON_MAX
           && ngx_cdp_canary_ok(out, NGX_CDP_SEGMENT_ERROR_JSON_MAX)
           && j != NULL
           && json_is_false(json_object_get(j, "success"))
           && strcmp(json_string_value(json_object_get(j, "error")), code)
              == 0
           && (field[0] == '\0'
               ? json_object_get(j, "field") == NULL
               : strcmp(json_string_value(json_object_get(j, "field")),
                        field) == 0)
           && (index < 0
               ? json_object_get(j, "index") == NULL
               : json_integer_value(json_object_get(j, "index")) == index)
           && (err.position < 0
               ? json_object_get(j, "position") == NULL
               : json_integer_value(json_object_get(j, "position"))
                 == err.position);

    if (!good) {
        printf("  bad error body: %.*s\n", (int) n, out);
    }

    json_decref(j);
    free(out);

    return good;
}


/* message i's stored copy, parsed back (the caller decrefs) */

static json_t *
stored(size_t i)
{
    json_t  *j;

    if (i >= res.nmsgs || res.msgs[i].json == NULL
        || strlen(res.msgs[i].json) != res.msgs[i].json_len)
    {
        return NULL;
    }

    j = json_loadb(res.msgs[i].json, res.msgs[i].json_len,
                   JSON_REJECT_DUPLICATES, NULL);

    return json_is_object(j) ? j : NULL;
}


/* the value at a dotted path, NULL when any part is absent */

static json_t *
at(json_t *j, const char *path)
{
    char         key[64];
    size_t       n;
    const char  *dot;

    while (j != NULL) {
        dot = strchr(path, '.');
        n = dot ? (size_t) (dot - path) : strlen(path);

        if (n >= sizeof(key)) {
            return NULL;
        }

        memcpy(key, path, n);
        key[n] = '\0';

        j = json_object_get(j, key);

        if (dot == NULL) {
            return j;
        }

        path = dot + 1;
    }

    return NULL;
}


static int
str_at(json_t *j, const char *path, const char *want)
{
    json_t  *v;

    v = at(j, path);

    return v != NULL && json_is_string(v)
           && strcmp(json_string_value(v), want) == 0;
}


static int
eq(const char *s, const char *want)
{
    if (s == NULL || want == NULL) {
        return s == want;
    }

    return strcmp(s, want) == 0;
}


/* the error body for the current err, as a NUL-terminated string */

static const char *
error_body(void)
{
    size_t         n;
    static u_char  out[NGX_CDP_SEGMENT_ERROR_JSON_MAX + 1];

    n = ngx_cdp_segment_error_json(out, &err);
    out[n] = '\0';

    return (const char *) out;
}


/* a malloc'ed body: head, then pad filling bytes, then tail, len in all */

static u_char *
padded(const char *head, const char *tail, size_t len)
{
    size_t   h, t;
    u_char  *b;

    h = strlen(head);
    t = strlen(tail);

    b = ngx_cdp_buf(len);
    memcpy(b, head, h);
    memset(b + h, 'x', len - h - t);
    memcpy(b + len - t, tail, t);

    return b;
}


/* endpoints and types */

static void
test_endpoints(void)
{
    CHECK(ngx_cdp_segment_endpoint(L("track")) == TRACK);
    CHECK(ngx_cdp_segment_endpoint(L("identify")) == IDENTIFY);
    CHECK(ngx_cdp_segment_endpoint(L("page")) == PAGE);
    CHECK(ngx_cdp_segment_endpoint(L("screen")) == SCREEN);
    CHECK(ngx_cdp_segment_endpoint(L("group")) == GROUP);
    CHECK(ngx_cdp_segment_endpoint(L("alias")) == ALIAS);
    CHECK(ngx_cdp_segment_endpoint(L("batch")) == BATCH);
    CHECK(ngx_cdp_segment_endpoint(L("import")) == BATCH);

    CHECK(ngx_cdp_segment_endpoint(L("")) == -1);
    CHECK(ngx_cdp_segment_endpoint(L("Track")) == -1);
    CHECK(ngx_cdp_segment_endpoint(L("tracks")) == -1);
    CHECK(ngx_cdp_segment_endpoint(L("trac")) == -1);
    CHECK(ngx_cdp_segment_endpoint(L("track/")) == -1);
    CHECK(ngx_cdp_segment_endpoint(L("/track")) == -1);
    CHECK(ngx_cdp_segment_endpoint(L("impor")) == -1);
    CHECK(ngx_cdp_segment_endpoint(L("track\0")) == -1);

    CHECK(strcmp(ngx_cdp_segment_type_name(TRACK), "track") == 0);
    CHECK(strcmp(ngx_cdp_segment_type_name(ALIAS), "alias") == 0);
    CHECK(strcmp(ngx_cdp_segment_type_name(BATCH), "batch") == 0);
    CHECK(strcmp(ngx_cdp_segment_type_name(-1), "unknown") == 0);
    CHECK(strcmp(ngx_cdp_segment_type_name(7), "unknown") == 0);

    /* an endpoint that is no type at all */
    CHECK(bad(-1, B("{}"), 400, "unknown_type", "", -1));
    CHECK(bad(7, B("{}"), 400, "unknown_type", "", -1));
}


/* time */

static int
time_is(const char *s, int64_t want)
{
    u_char   *p;
    int64_t   ms;
    int       rc;
    size_t    len;

    len = strlen(s);
    p = ngx_cdp_dup(s, len);
    ms = 0x7eadbeef;

    rc = ngx_cdp_segment_time(p, len, &ms);

    free(p);

    if (rc != 1 || ms != want) {
        printf("  %s: %d %lld, want %lld\n", s, rc, (long long) ms,
               (long long) want);
        return 0;
    }

    return 1;
}


static int
time_bad(const char *s)
{
    u_char   *p;
    int64_t   ms;
    int       rc;
    size_t    len;

    len = strlen(s);
    p = ngx_cdp_dup(s, len);
    ms = 0x7eadbeef;

    rc = ngx_cdp_segment_time(p, len, &ms);

    free(p);

    return rc == 0 && ms == 0x7eadbeef;
}


static void
test_time(void)
{
    int        i;
    char       buf[64];
    time_t     t;
    struct tm  tm;

    /* 2026-11-23T07:30:00Z */
    CHECK(time_is("2026-11-23T07:30:00Z", 1795419000000LL));
    CHECK(time_is("2026-11-23T07:30:00.000Z", 1795419000000LL));
    CHECK(time_is("2026-11-23T07:30:00.123Z", 1795419000123LL));
    CHECK(time_is("2026-11-23t07:30:00.123z", 1795419000123LL));
    CHECK(time_is("2026-11-23T07:30:00.1Z", 1795419000100LL));
    CHECK(time_is("2026-11-23T07:30:00.12Z", 1795419000120LL));
    CHECK(time_is("2026-11-23T07:30:00.123456Z", 1795419000123LL));
    CHECK(time_is("2026-11-23T07:30:00.999999999Z", 1795419000999LL));
    CHECK(time_is("2026-11-23T08:30:00+01:00", 1795419000000LL));
    CHECK(time_is("2026-11-23T02:00:00.5-05:30", 1795419000500LL));
    CHECK(time_is("2026-11-23T07:30:00.000+00:00", 1795419000000LL));
    CHECK(time_is("2026-11-23T07:30:00-00:00", 1795419000000LL));
    CHECK(time_is("2026-11-24T07:29:00+23:59", 1795419000000LL));

    CHECK(time_is("1970-01-01T00:00:00Z", 0));
    CHECK(time_is("1970-01-01T00:00:00.001Z", 1));
    CHECK(time_is("1969-12-31T23:59:59.999Z", -1));
    CHECK(time_is("1970-01-01T01:00:00+01:00", 0));
    CHECK(time_is("0000-01-01T00:00:00Z", -62167219200000LL));
    CHECK(time_is("9999-12-31T23:59:59.999Z", 253402300799999LL));
    CHECK(time_is("2000-02-29T00:00:00Z", 951782400000LL));
    CHECK(time_is("2024-02-29T12:00:00Z", 1709208000000LL));
    /* a leap second is the next second */
    CHECK(time_is("2016-12-31T23:59:60Z", 1483228800000LL));

    CHECK(time_bad(""));
    CHECK(time_bad("2026-11-23"));
    CHECK(time_bad("2026-11-23T07:30:00"));             /* no zone */
    CHECK(time_bad("2026-11-23T07:30:00.123"));
    CHECK(time_bad("2026-11-23 07:30:00Z"));
    CHECK(time_bad("2026-11-23T07:30Z"));
    CHECK(time_bad("2026-11-23T07:30:00.Z"));
    CHECK(time_bad("2026-11-23T07:30:00.1234567890Z"));  /* 10 digits */
    CHECK(time_bad("2026-11-23T07:30:00+0100"));
    CHECK(time_bad("2026-11-23T07:30:00+01"));
    CHECK(time_bad("2026-11-23T07:30:00+01:00:00"));
    CHECK(time_bad("2026-11-23T07:30:00+24:00"));
    CHECK(time_bad("2026-11-23T07:30:00+01:60"));
    CHECK(time_bad("2026-11-23T07:30:00ZZ"));
    CHECK(time_bad("2026-11-23T07:30:00Z "));
    CHECK(time_bad(" 2026-11-23T07:30:00Z"));
    CHECK(time_bad("2026-13-01T00:00:00Z"));
    CHECK(time_bad("2026-00-01T00:00:00Z"));
    CHECK(time_bad("2026-11-00T00:00:00Z"));
    CHECK(time_bad("2026-11-31T00:00:00Z"));
    CHECK(time_bad("2023-02-29T00:00:00Z"));
    CHECK(time_bad("1900-02-29T00:00:00Z"));
    CHECK(time_bad("2026-11-23T24:00:00Z"));
    CHECK(time_bad("2026-11-23T07:60:00Z"));
    CHECK(time_bad("2026-11-23T07:30:61Z"));
    CHECK(time_bad("+2026-11-23T07:30:00Z"));
    CHECK(time_bad("20261123T073000Z"));
    CHECK(time_bad("2026-1a-23T07:30:00Z"));
    CHECK(time_bad("2026-11-23T07:30:00.12a3Z"));
    CHECK(time_bad("1795419000000"));

    /* against the C library, one day apart over four centuries */

    for (i = 0; i < 146097; i += 37) {
        t = (time_t) (i - 73048) * 86400 + (i % 86400);
        gmtime_r(&t, &tm);
        snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                 tm.tm_min, tm.tm_sec, i % 1000);

        if (!time_is(buf, (int64_t) timegm(&tm) * 1000 + i % 1000)) {
            CHECK(0);
            break;
        }
    }

    CHECK(i >= 146097);
}


/* the JSON itself */

static void
test_json_errors(void)
{
    const char  *s;

    CHECK(bad(TRACK, B(""), 400, "invalid_json", "", -1));
    CHECK(err.position == 0);

    CHECK(bad(TRACK, B("{\"userId\":\"u\",\"event\":}"), 400,
              "invalid_json", "", -1));
    CHECK(err.position == 23 && err.line == 1 && err.column == 23);
    CHECK(strstr(err.message, "invalid JSON") != NULL);

    /* line and column */
    CHECK(bad(TRACK, B("{\n\"a\":x}"), 400, "invalid_json", "", -1));
    CHECK(err.position == 7 && err.line == 2 && err.column == 5);
    s = error_body();
    CHECK(strcmp(s, "{\"success\":false,\"error\":\"invalid_json\","
                    "\"message\":\"invalid JSON: invalid token near 'x' "
                    "(line 2, column 5, byte 7)\",\"position\":7,"
                    "\"line\":2,\"column\":5}") == 0);

    CHECK(bad(TRACK, B("{\"userId\":\"u\",\"event\":\"e\"} x"), 400,
              "invalid_json", "", -1));
    CHECK(err.position == 28);
    CHECK(bad(TRACK, B("{\"userId\":\"u\",\"event\":\"e\""), 400,
              "invalid_json", "", -1));
    CHECK(bad(TRACK, B("{'userId':'u'}"), 400, "invalid_json", "", -1));
    CHECK(bad(TRACK, B("{\"userId\":\"u\",}"), 400, "invalid_json", "", -1));
    CHECK(bad(TRACK, B("{\"a\":\"\\x\"}"), 400, "invalid_json", "", -1));
    CHECK(bad(TRACK, B("{\"a\":\"\\ud800\"}"), 400, "invalid_json", "",
              -1));
    CHECK(bad(TRACK, B("{\"a\":\"tab\there\"}"), 400, "invalid_json", "",
              -1));
    CHECK(bad(TRACK, B("{\"a\":99999999999999999999}"), 400,
              "invalid_json", "", -1));
    CHECK(bad(TRACK, B("{\"a\":1e999}"), 400, "invalid_json", "", -1));
    CHECK(bad(TRACK, B("{\"a\":NaN}"), 400, "invalid_json", "", -1));

    /* duplicate keys, at any depth */
    CHECK(bad(TRACK, B("{\"userId\":\"u\",\"userId\":\"v\",\"event\":\"e\"}"),
              400, "invalid_json", "", -1));
    CHECK(strstr(err.message, "duplicate") != NULL);
    CHECK(err.position == 22);
    CHECK(bad(TRACK, B("{\"userId\":\"u\",\"event\":\"e\",\"properties\":"
                       "{\"a\":1,\"b\":{\"c\":1,\"c\":2}}}"),
              400, "invalid_json", "", -1));

    /* \u0000 in a string, raw NUL bytes anywhere */
    CHECK(bad(TRACK, B("{\"userId\":\"u\\u0000\",\"event\":\"e\"}"), 400,
              "invalid_json", "", -1));
    CHECK(strstr(err.message, "\\u0000") != NULL && err.position == 19);
    CHECK(bad(TRACK, B("{\"userId\":\"u\",\"event\":\"e\"}\0"), 400,
              "invalid_json", "", -1));
    CHECK(err.position == 26 && err.line == 1 && err.column == 27);
    CHECK(bad(TRACK, B("{\"userId\":\"u\",\"event\":\"e\",\"x\":1\0}"), 400,
              "invalid_json", "", -1));
    CHECK(err.position == 31);
    CHECK(bad(TRACK, B("{\"userId\":\"u\xc3\xa9\",\n\"e\0\":1}"), 400,
              "invalid_json", "", -1));
    CHECK(err.position == 19 && err.line == 2 && err.column == 3);
    CHECK(strstr(err.message, "NUL") != NULL);
    CHECK(bad(TRACK, B("\0"), 400, "invalid_json", "", -1));
    CHECK(err.position == 0 && err.line == 1 && err.column == 1);

    /* not an object */
    CHECK(bad(TRACK, B("[]"), 400, "not_an_object", "", -1));
    CHECK(bad(TRACK, B("[{\"userId\":\"u\",\"event\":\"e\"}]"), 400,
              "not_an_object", "", -1));
    CHECK(bad(TRACK, B("\"track\""), 400, "not_an_object", "", -1));
    CHECK(bad(TRACK, B("42"), 400, "not_an_object", "", -1));
    CHECK(bad(TRACK, B("null"), 400, "not_an_object", "", -1));
    CHECK(bad(BATCH, B("[]"), 400, "not_an_object", "", -1));
    CHECK(err.position == -1 && err.line == -1 && err.column == -1);

    /* whitespace around the object is fine */
    CHECK(ok(TRACK, B(" \r\n\t{\"userId\":\"u\",\"event\":\"e\"}\n "), 1));
    ngx_cdp_segment_free(&res);

    /* a NULL body of 0 bytes */
    CHECK(ngx_cdp_segment_parse(TRACK, NULL, 0, (const u_char *) RECEIVED,
                                sizeof(RECEIVED) - 1, &res, &err)
          == 400);
    CHECK(strcmp(err.code, "invalid_json") == 0 && res.msgs == NULL);
}


static void
test_utf8(void)
{
    /* valid UTF-8 is kept byte for byte */
    CHECK(ok(TRACK, B("{\"userId\":\"\xc3\xa9\xe2\x82\xac\xf0\x9d\x84\x9e\","
                      "\"event\":\"caf\xc3\xa9\"}"), 1));
    CHECK(eq(res.msgs[0].user_id, "\xc3\xa9\xe2\x82\xac\xf0\x9d\x84\x9e"));
    CHECK(eq(res.msgs[0].event, "caf\xc3\xa9"));
    CHECK(strstr(res.msgs[0].json, "\"event\":\"caf\xc3\xa9\"") != NULL);
    ngx_cdp_segment_free(&res);

    /* escapes decode to UTF-8 */
    CHECK(ok(TRACK, B("{\"userId\":\"\\u00e9\\ud834\\udd1e\",\"event\":\"e\"}"),
             1));
    CHECK(eq(res.msgs[0].user_id, "\xc3\xa9\xf0\x9d\x84\x9e"));
    ngx_cdp_segment_free(&res);

    /* a lone byte */
    CHECK(bad(TRACK, B("{\"userId\":\"\xff\",\"event\":\"e\"}"), 400,
              "invalid_utf8", "", -1));
    CHECK(strncmp(err.message, "invalid UTF-8", 13) == 0);
    CHECK(err.position == 11 && err.line == 1 && err.column == 12);
    CHECK(strstr(err.message, "byte 11") != NULL
          && strstr(err.message, "0xff") != NULL);
    CHECK(strcmp(error_body(),
                 "{\"success\":false,\"error\":\"invalid_utf8\",\"message\":"
                 "\"invalid UTF-8 at byte 11 (line 1, column 12): byte 0xff "
                 "starts no valid sequence\",\"position\":11,\"line\":1,"
                 "\"column\":12}") == 0);

    /* after multi-byte characters: the column counts characters */
    CHECK(bad(TRACK, B("{\"userId\":\"\xc3\xa9\xc3\xa9\xc3\",\"event\":\"e\"}"),
              400, "invalid_utf8", "", -1));
    CHECK(err.position == 15 && err.column == 14);

    /* overlong, surrogate, above U+10FFFF, truncated, stray continuation */
    CHECK(bad(TRACK, B("{\"userId\":\"\xc0\x80\",\"event\":\"e\"}"), 400,
              "invalid_utf8", "", -1));
    CHECK(err.position == 11);
    CHECK(bad(TRACK, B("{\"userId\":\"\xe0\x80\xaf\",\"event\":\"e\"}"), 400,
              "invalid_utf8", "", -1));
    CHECK(bad(TRACK, B("{\"userId\":\"\xed\xa0\x80\",\"event\":\"e\"}"), 400,
              "invalid_utf8", "", -1));
    CHECK(bad(TRACK, B("{\"userId\":\"\xf4\x90\x80\x80\",\"event\":\"e\"}"),
              400, "invalid_utf8", "", -1));
    CHECK(bad(TRACK, B("{\"userId\":\"\xe2\x82\",\"event\":\"e\"}"), 400,
              "invalid_utf8", "", -1));
    CHECK(bad(TRACK, B("{\"userId\":\"\x80\",\"event\":\"e\"}"), 400,
              "invalid_utf8", "", -1));

    /* in a key, outside strings, on a later line */
    CHECK(bad(TRACK, B("{\"userId\":\"u\",\"event\":\"e\",\"\xfe\":1}"), 400,
              "invalid_utf8", "", -1));
    CHECK(err.position == 27);
    CHECK(bad(TRACK, B("{\"userId\":\"u\",\n\"event\":\"e\"\xc3}"), 400,
              "invalid_utf8", "", -1));
    CHECK(err.position == 26 && err.line == 2 && err.column == 12);
    CHECK(bad(TRACK, B("\xef\xbb\xbf{\"userId\":\"u\",\"event\":\"e\"}"), 400,
              "invalid_json", "", -1));       /* a BOM is no JSON either */
    CHECK(bad(BATCH, B("{\"batch\":[{\"type\":\"track\",\"userId\":\"u\","
                       "\"event\":\"\xf8\x88\x80\x80\x80\"}]}"),
              400, "invalid_utf8", "", -1));
}


/* limits, at the boundary and one over */

static void
test_limits(void)
{
    int          rc;
    char        *p;
    size_t       i, len, n;
    u_char      *b;
    static char  big[NGX_CDP_SEGMENT_BATCH_BODY_MAX + 2];
    static const char  msg[] =
        "{\"type\":\"track\",\"userId\":\"u\",\"event\":\"e\"}";

    /* a track body of exactly 32768 bytes, and one more */

    b = padded("{\"userId\":\"u\",\"event\":\"e\",\"properties\":{\"p\":\"",
               "\"}}", NGX_CDP_SEGMENT_BODY_MAX);
    CHECK(ok(TRACK, b, NGX_CDP_SEGMENT_BODY_MAX, 1));
    CHECK(res.msgs[0].json_len > NGX_CDP_SEGMENT_BODY_MAX);
    ngx_cdp_segment_free(&res);
    free(b);

    b = padded("{\"userId\":\"u\",\"event\":\"e\",\"properties\":{\"p\":\"",
               "\"}}", NGX_CDP_SEGMENT_BODY_MAX + 1);
    CHECK(bad(TRACK, b, NGX_CDP_SEGMENT_BODY_MAX + 1, 413, "body_too_large",
              "", -1));
    CHECK(strstr(err.message, "32768") != NULL
          && strstr(err.message, "32769") != NULL);
    free(b);

    /* the size is checked first: even invalid JSON gets 413 */
    b = padded("{", "", NGX_CDP_SEGMENT_BODY_MAX + 1);
    CHECK(bad(IDENTIFY, b, NGX_CDP_SEGMENT_BODY_MAX + 1, 413,
              "body_too_large", "", -1));
    free(b);

    /* a batch body of exactly 512000 bytes, and one more */

    b = padded("{\"batch\":[{\"type\":\"track\",\"userId\":\"u\","
               "\"event\":\"e\"}],\"pad\":\"", "\"}",
               NGX_CDP_SEGMENT_BATCH_BODY_MAX);
    CHECK(ok(BATCH, b, NGX_CDP_SEGMENT_BATCH_BODY_MAX, 1));
    ngx_cdp_segment_free(&res);
    free(b);

    b = padded("{\"batch\":[{\"type\":\"track\",\"userId\":\"u\","
               "\"event\":\"e\"}],\"pad\":\"", "\"}",
               NGX_CDP_SEGMENT_BATCH_BODY_MAX + 1);
    CHECK(bad(BATCH, b, NGX_CDP_SEGMENT_BATCH_BODY_MAX + 1, 413,
              "body_too_large", "", -1));
    free(b);

    /* a batch endpoint body may exceed 32768 */
    b = padded("{\"batch\":[],\"pad\":\"", "\"}", 40000);
    CHECK(ok(BATCH, b, 40000, 0));
    ngx_cdp_segment_free(&res);
    CHECK(ok(NGX_CDP_SEGMENT_BATCH, b, 40000, 0));
    ngx_cdp_segment_free(&res);
    free(b);

    /* 2500 messages, and 2501 */

    for (n = 2500; n <= 2501; n++) {
        p = big;
        p += sprintf(p, "{\"batch\":[");

        for (i = 0; i < n; i++) {
            p += sprintf(p, "%s%s", i ? "," : "", msg);
        }

        p += sprintf(p, "]}");
        len = p - big;

        if (n == 2500) {
            CHECK(ok(BATCH, (u_char *) big, len, 2500));
            CHECK(res.msgs[2499].type == TRACK
                  && eq(res.msgs[2499].event, "e"));
            ngx_cdp_segment_free(&res);

        } else {
            CHECK(bad(BATCH, (u_char *) big, len, 400, "too_many_messages",
                      "batch", -1));
            CHECK(strstr(err.message, "2501") != NULL);
        }
    }

    /*
     * one batch message of exactly 32768 bytes compact, and one of 32769:
     * 413 naming its index; sizes are those of the compact form, so
     * spaces around it do not count
     */

    for (n = NGX_CDP_SEGMENT_MESSAGE_MAX; n <= NGX_CDP_SEGMENT_MESSAGE_MAX + 1;
         n++)
    {
        p = big;
        p += sprintf(p, "{\"batch\":[ %s , ", msg);
        len = sprintf(p, "{\"type\":\"track\",\"userId\":\"u\",\"event\":\"e\","
                         "\"properties\":{\"p\":\"");
        memset(p + len, 'y', n - len - 3);
        p += n - 3;
        p += sprintf(p, "\"}} ,  %s ]}", msg);
        len = p - big;

        rc = n == NGX_CDP_SEGMENT_MESSAGE_MAX
             ? ok(BATCH, (u_char *) big, len, 3)
             : bad(BATCH, (u_char *) big, len, 413, "message_too_large",
                   "batch[1]", 1);
        CHECK(rc);

        if (n == NGX_CDP_SEGMENT_MESSAGE_MAX) {
            CHECK(strstr(res.msgs[1].json, "yyyy\"}") != NULL);
            ngx_cdp_segment_free(&res);

        } else {
            CHECK(strstr(err.message, "32769") != NULL);
            CHECK(strcmp(error_body(),
                         "{\"success\":false,\"error\":\"message_too_large\","
                         "\"message\":\"batch message 1 has 32769 bytes, "
                         "more than the 32768 allowed\",\"field\":"
                         "\"batch[1]\",\"index\":1}") == 0);
        }
    }

    /*
     * a small batch cannot make a large result: a 100000-byte top-level
     * context merged into 50 messages would store 5 MB
     */

    p = big;
    p += sprintf(p, "{\"context\":{\"pad\":\"");
    memset(p, 'z', 100000);
    p += 100000;
    p += sprintf(p, "\"},\"batch\":[");

    for (i = 0; i < 50; i++) {
        p += sprintf(p, "%s%s", i ? "," : "", msg);
    }

    p += sprintf(p, "]}");
    len = p - big;

    CHECK(bad(BATCH, (u_char *) big, len, 413, "batch_too_large", "batch[41]",
              41));

    /* 30 of them fit, each with the whole context */

    p = big + len - 2 - 20 * (sizeof(msg) - 1 + 1);
    p += sprintf(p, "]}");
    len = p - big;

    CHECK(ok(BATCH, (u_char *) big, len, 30));
    CHECK(res.msgs[29].json_len > 100000
          && strstr(res.msgs[29].json, "zzzz\"") != NULL);
    ngx_cdp_segment_free(&res);
}


/* messages: what each type needs */

static void
test_ids(void)
{
    /* a userId or an anonymousId */
    CHECK(bad(TRACK, B("{\"event\":\"e\"}"), 400, "missing_field", "userId",
              -1));
    CHECK(strcmp(err.message, "track needs a non-empty userId or "
                              "anonymousId") == 0);
    CHECK(bad(TRACK, B("{\"event\":\"e\",\"userId\":\"\","
                       "\"anonymousId\":\"\"}"),
              400, "missing_field", "userId", -1));
    CHECK(bad(TRACK, B("{\"event\":\"e\",\"userId\":null,"
                       "\"anonymousId\":null}"),
              400, "missing_field", "userId", -1));
    CHECK(bad(IDENTIFY, B("{\"traits\":{}}"), 400, "missing_field", "userId",
              -1));
    CHECK(strcmp(err.message, "identify needs a non-empty userId or "
                              "anonymousId") == 0);
    CHECK(bad(PAGE, B("{}"), 400, "missing_field", "userId", -1));
    CHECK(bad(SCREEN, B("{}"), 400, "missing_field", "userId", -1));
    CHECK(bad(GROUP, B("{\"groupId\":\"g\"}"), 400, "missing_field",
              "userId", -1));

    /* either one is enough; "" and null count as absent */
    CHECK(ok(TRACK, B("{\"anonymousId\":\"a\",\"event\":\"e\"}"), 1));
    CHECK(res.msgs[0].user_id == NULL && eq(res.msgs[0].anonymous_id, "a"));
    ngx_cdp_segment_free(&res);
    CHECK(ok(TRACK, B("{\"userId\":\"\",\"anonymousId\":\"a\","
                      "\"event\":\"e\"}"), 1));
    CHECK(res.msgs[0].user_id == NULL && eq(res.msgs[0].anonymous_id, "a"));
    ngx_cdp_segment_free(&res);
    CHECK(ok(TRACK, B("{\"userId\":\"u\",\"anonymousId\":null,"
                      "\"event\":\"e\"}"), 1));
    CHECK(eq(res.msgs[0].user_id, "u") && res.msgs[0].anonymous_id == NULL);
    ngx_cdp_segment_free(&res);

    /* integers become their strings, in the stored copy too */
    CHECK(ok(TRACK, B("{\"userId\":12345,\"anonymousId\":-7,\"event\":\"e\"}"),
             1));
    CHECK(eq(res.msgs[0].user_id, "12345")
          && eq(res.msgs[0].anonymous_id, "-7"));
    CHECK(strstr(res.msgs[0].json, "\"userId\":\"12345\"") != NULL
          && strstr(res.msgs[0].json, "\"anonymousId\":\"-7\"") != NULL);
    ngx_cdp_segment_free(&res);
    CHECK(ok(TRACK, B("{\"userId\":0,\"event\":\"e\"}"), 1));
    CHECK(eq(res.msgs[0].user_id, "0"));
    ngx_cdp_segment_free(&res);
    CHECK(ok(TRACK, B("{\"userId\":9223372036854775807,\"event\":\"e\"}"),
             1));
    CHECK(eq(res.msgs[0].user_id, "9223372036854775807"));
    ngx_cdp_segment_free(&res);

    /* the pixel's rule: no control character in a name, NUL nowhere */
    CHECK(bad(TRACK, B("{\"userId\":\"u\",\"event\":\"a\\nb\"}"), 400,
              "invalid_field", "event", -1));
    CHECK(bad(TRACK, B("{\"userId\":\"u\",\"event\":\"a\\u007fb\"}"),
              400, "invalid_field", "event", -1));
    CHECK(bad(TRACK, B("{\"userId\":\"u\",\"event\":\"e\","
                       "\"properties\":{\"a\\tb\":1}}"), 400,
              "invalid_field", "properties", -1));
    CHECK(ok(TRACK, B("{\"userId\":\"u\",\"event\":\"e\","
                      "\"properties\":{\"ab\":\"x\\ny\"}}"), 1));
    ngx_cdp_segment_free(&res);

    /* other types are refused */
    CHECK(bad(TRACK, B("{\"userId\":1.5,\"event\":\"e\"}"), 400,
              "invalid_field", "userId", -1));
    CHECK(strcmp(err.message, "userId must be a string or an integer") == 0);
    CHECK(bad(TRACK, B("{\"userId\":1.0,\"event\":\"e\"}"), 400,
              "invalid_field", "userId", -1));
    CHECK(bad(TRACK, B("{\"userId\":true,\"event\":\"e\"}"), 400,
              "invalid_field", "userId", -1));
    CHECK(bad(TRACK, B("{\"userId\":[\"u\"],\"event\":\"e\"}"), 400,
              "invalid_field", "userId", -1));
    CHECK(bad(TRACK, B("{\"userId\":{},\"event\":\"e\"}"), 400,
              "invalid_field", "userId", -1));
    /* even next to a good one */
    CHECK(bad(TRACK, B("{\"userId\":\"u\",\"anonymousId\":false,"
                       "\"event\":\"e\"}"),
              400, "invalid_field", "anonymousId", -1));
    CHECK(bad(TRACK, B("{\"userId\":\"u\",\"groupId\":[],\"event\":\"e\"}"),
              400, "invalid_field", "groupId", -1));
    CHECK(bad(TRACK, B("{\"userId\":\"u\",\"previousId\":{},\"event\":\"e\"}"),
              400, "invalid_field", "previousId", -1));
}


static void
test_types(void)
{
    /* track: a non-empty string event */
    CHECK(bad(TRACK, B("{\"userId\":\"u\"}"), 400, "missing_field", "event",
              -1));
    CHECK(strcmp(err.message, "track needs a non-empty string event") == 0);
    CHECK(bad(TRACK, B("{\"userId\":\"u\",\"event\":\"\"}"), 400,
              "missing_field", "event", -1));
    CHECK(bad(TRACK, B("{\"userId\":\"u\",\"event\":null}"), 400,
              "missing_field", "event", -1));
    CHECK(bad(TRACK, B("{\"userId\":\"u\",\"event\":42}"), 400,
              "invalid_field", "event", -1));
    CHECK(bad(TRACK, B("{\"userId\":\"u\",\"event\":{\"name\":\"e\"}}"), 400,
              "invalid_field", "event", -1));
    CHECK(ok(TRACK, B("{\"userId\":\"u\",\"event\":\" \"}"), 1));
    CHECK(eq(res.msgs[0].event, " "));
    ngx_cdp_segment_free(&res);

    /* the other types need no event, and get none */
    CHECK(ok(IDENTIFY, B("{\"userId\":\"u\",\"event\":\"e\"}"), 1));
    CHECK(res.msgs[0].event != NULL);
    ngx_cdp_segment_free(&res);

    /* alias: userId and previousId, no anonymousId needed */
    CHECK(ok(ALIAS, B("{\"userId\":\"u\",\"previousId\":\"a\"}"), 1));
    CHECK(res.msgs[0].type == ALIAS && eq(res.msgs[0].user_id, "u")
          && eq(res.msgs[0].previous_id, "a")
          && res.msgs[0].anonymous_id == NULL);
    ngx_cdp_segment_free(&res);
    CHECK(ok(ALIAS, B("{\"userId\":1,\"previousId\":2}"), 1));
    CHECK(eq(res.msgs[0].user_id, "1") && eq(res.msgs[0].previous_id, "2"));
    CHECK(strstr(res.msgs[0].json, "\"previousId\":\"2\"") != NULL);
    ngx_cdp_segment_free(&res);
    CHECK(bad(ALIAS, B("{\"anonymousId\":\"a\",\"previousId\":\"p\"}"), 400,
              "missing_field", "userId", -1));
    CHECK(strcmp(err.message, "alias needs a non-empty userId") == 0);
    CHECK(bad(ALIAS, B("{\"userId\":\"u\"}"), 400, "missing_field",
              "previousId", -1));
    CHECK(bad(ALIAS, B("{\"userId\":\"u\",\"previousId\":\"\"}"), 400,
              "missing_field", "previousId", -1));
    CHECK(bad(ALIAS, B("{\"userId\":\"u\",\"previousId\":1.5}"), 400,
              "invalid_field", "previousId", -1));

    /* group: groupId, a string or a number */
    CHECK(ok(GROUP, B("{\"userId\":\"u\",\"groupId\":\"g\","
                      "\"traits\":{\"name\":\"Acme\"}}"), 1));
    CHECK(eq(res.msgs[0].group_id, "g") && res.msgs[0].traits == NULL
          && res.msgs[0].email == NULL);
    ngx_cdp_segment_free(&res);
    CHECK(ok(GROUP, B("{\"anonymousId\":\"a\",\"groupId\":42}"), 1));
    CHECK(eq(res.msgs[0].group_id, "42"));
    ngx_cdp_segment_free(&res);
    CHECK(bad(GROUP, B("{\"userId\":\"u\"}"), 400, "missing_field", "groupId",
              -1));
    CHECK(strcmp(err.message, "group needs a non-empty groupId") == 0);
    CHECK(bad(GROUP, B("{\"userId\":\"u\",\"groupId\":\"\"}"), 400,
              "missing_field", "groupId", -1));
    CHECK(bad(GROUP, B("{\"userId\":\"u\",\"groupId\":true}"), 400,
              "invalid_field", "groupId", -1));

    /* page, screen: name a string when present */
    CHECK(ok(PAGE, B("{\"userId\":\"u\",\"name\":\"Pricing\"}"), 1));
    CHECK(res.msgs[0].type == PAGE);
    ngx_cdp_segment_free(&res);
    CHECK(ok(PAGE, B("{\"userId\":\"u\"}"), 1));
    ngx_cdp_segment_free(&res);
    CHECK(ok(SCREEN, B("{\"userId\":\"u\",\"name\":null}"), 1));
    CHECK(res.msgs[0].type == SCREEN);
    ngx_cdp_segment_free(&res);
    CHECK(bad(PAGE, B("{\"userId\":\"u\",\"name\":1}"), 400, "invalid_field",
              "name", -1));
    CHECK(bad(SCREEN, B("{\"userId\":\"u\",\"name\":[]}"), 400,
              "invalid_field", "name", -1));
}


static void
test_fields(void)
{
    /* objects */
    CHECK(bad(TRACK, B("{\"userId\":\"u\",\"event\":\"e\",\"properties\":[]}"),
              400, "invalid_field", "properties", -1));
    CHECK(strcmp(err.message, "properties must be an object") == 0);
    CHECK(bad(IDENTIFY, B("{\"userId\":\"u\",\"traits\":\"x\"}"), 400,
              "invalid_field", "traits", -1));
    CHECK(bad(PAGE, B("{\"userId\":\"u\",\"context\":1}"), 400,
              "invalid_field", "context", -1));
    CHECK(bad(ALIAS, B("{\"userId\":\"u\",\"previousId\":\"p\","
                       "\"integrations\":true}"),
              400, "invalid_field", "integrations", -1));
    CHECK(ok(TRACK, B("{\"userId\":\"u\",\"event\":\"e\",\"properties\":null,"
                      "\"context\":{},\"integrations\":{\"All\":false}}"), 1));
    ngx_cdp_segment_free(&res);

    /* times */
    CHECK(bad(TRACK, B("{\"userId\":\"u\",\"event\":\"e\","
                       "\"timestamp\":\"yesterday\"}"),
              400, "invalid_field", "timestamp", -1));
    CHECK(strstr(err.message, "timestamp must be an ISO-8601") != NULL);
    CHECK(bad(TRACK, B("{\"userId\":\"u\",\"event\":\"e\","
                       "\"timestamp\":1795419000000}"),
              400, "invalid_field", "timestamp", -1));
    CHECK(bad(TRACK, B("{\"userId\":\"u\",\"event\":\"e\","
                       "\"originalTimestamp\":\"2026-11-23T07:30:00\"}"),
              400, "invalid_field", "originalTimestamp", -1));
    CHECK(bad(TRACK, B("{\"userId\":\"u\",\"event\":\"e\","
                       "\"sentAt\":\"2026-02-30T07:30:00Z\"}"),
              400, "invalid_field", "sentAt", -1));
    CHECK(ok(TRACK, B("{\"userId\":\"u\",\"event\":\"e\",\"timestamp\":null,"
                      "\"sentAt\":\"2026-11-23T07:30:00+01:00\"}"), 1));
    CHECK(res.msgs[0].time_ms == 0);
    ngx_cdp_segment_free(&res);

    /* messageId: 1 to 100 bytes */
    CHECK(bad(TRACK, B("{\"userId\":\"u\",\"event\":\"e\",\"messageId\":\"\"}"),
              400, "invalid_field", "messageId", -1));
    CHECK(strcmp(err.message, "messageId must be a non-empty string of at "
                              "most 100 bytes") == 0);
    CHECK(bad(TRACK, B("{\"userId\":\"u\",\"event\":\"e\",\"messageId\":7}"),
              400, "invalid_field", "messageId", -1));
    CHECK(ok(TRACK, B("{\"userId\":\"u\",\"event\":\"e\",\"messageId\":\""
                      "0123456789012345678901234567890123456789"
                      "0123456789012345678901234567890123456789"
                      "01234567890123456789\"}"), 1));
    CHECK(res.msgs[0].message_id != NULL
          && strlen(res.msgs[0].message_id) == 100);
    ngx_cdp_segment_free(&res);
    CHECK(bad(TRACK, B("{\"userId\":\"u\",\"event\":\"e\",\"messageId\":\""
                       "0123456789012345678901234567890123456789"
                       "0123456789012345678901234567890123456789"
                       "012345678901234567890\"}"),
              400, "invalid_field", "messageId", -1));
    /* 100 bytes, 50 characters */
    CHECK(ok(TRACK, B("{\"userId\":\"u\",\"event\":\"e\",\"messageId\":\""
                      "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
                      "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
                      "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
                      "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
                      "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
                      "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
                      "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
                      "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
                      "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
                      "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\"}"), 1));
    ngx_cdp_segment_free(&res);

    /* writeKey: a string, exposed, never stored */
    CHECK(ok(TRACK, B("{\"writeKey\":\"wk1\",\"userId\":\"u\","
                      "\"event\":\"e\"}"), 1));
    CHECK(eq(res.write_key, "wk1"));
    CHECK(strstr(res.msgs[0].json, "writeKey") == NULL
          && strstr(res.msgs[0].json, "wk1") == NULL);
    ngx_cdp_segment_free(&res);
    CHECK(res.write_key == NULL && res.msgs == NULL && res.nmsgs == 0);
    /* freeing twice is harmless */
    ngx_cdp_segment_free(&res);

    CHECK(ok(TRACK, B("{\"writeKey\":\"\",\"userId\":\"u\",\"event\":\"e\"}"),
             1));
    CHECK(eq(res.write_key, ""));
    ngx_cdp_segment_free(&res);
    CHECK(ok(TRACK, B("{\"writeKey\":null,\"userId\":\"u\",\"event\":\"e\"}"),
             1));
    CHECK(res.write_key == NULL);
    ngx_cdp_segment_free(&res);
    CHECK(bad(TRACK, B("{\"writeKey\":1,\"userId\":\"u\",\"event\":\"e\"}"),
              400, "invalid_field", "writeKey", -1));
    CHECK(bad(BATCH, B("{\"writeKey\":[\"k\"],\"batch\":[]}"), 400,
              "invalid_field", "writeKey", -1));

    /* other fields are the sender's business */
    CHECK(ok(TRACK, B("{\"userId\":\"u\",\"event\":\"e\",\"version\":2,"
                      "\"channel\":\"server\",\"x\":[1,{\"y\":null}]}"), 1));
    CHECK(strstr(res.msgs[0].json, "\"x\":[1,{\"y\":null}]") != NULL);
    ngx_cdp_segment_free(&res);
}


/* batches */

static void
test_batch(void)
{
    const char  *s;

    CHECK(bad(BATCH, B("{}"), 400, "missing_field", "batch", -1));
    CHECK(bad(BATCH, B("{\"batch\":null}"), 400, "missing_field", "batch",
              -1));
    CHECK(bad(BATCH, B("{\"batch\":{}}"), 400, "invalid_field", "batch", -1));
    CHECK(bad(BATCH, B("{\"batch\":\"[]\"}"), 400, "invalid_field", "batch",
              -1));

    /* empty: nothing to store, not an error */
    CHECK(ok(BATCH, B("{\"batch\":[],\"writeKey\":\"k\"}"), 0));
    CHECK(eq(res.write_key, "k"));
    ngx_cdp_segment_free(&res);

    /* top-level fields */
    CHECK(bad(BATCH, B("{\"batch\":[],\"context\":[]}"), 400,
              "invalid_field", "context", -1));
    CHECK(bad(BATCH, B("{\"batch\":[],\"integrations\":\"all\"}"), 400,
              "invalid_field", "integrations", -1));
    CHECK(bad(BATCH, B("{\"batch\":[],\"sentAt\":\"now\"}"), 400,
              "invalid_field", "sentAt", -1));

    /* items */
    CHECK(bad(BATCH, B("{\"batch\":[{\"type\":\"track\",\"userId\":\"u\","
                       "\"event\":\"e\"},{\"type\":\"page\",\"userId\":\"u\"},"
                       "42]}"),
              400, "not_an_object", "batch[2]", 2));
    CHECK(bad(BATCH, B("{\"batch\":[null]}"), 400, "not_an_object",
              "batch[0]", 0));
    CHECK(bad(BATCH, B("{\"batch\":[{\"userId\":\"u\",\"event\":\"e\"}]}"),
              400, "missing_field", "batch[0].type", 0));
    CHECK(bad(BATCH, B("{\"batch\":[{\"type\":1,\"userId\":\"u\"}]}"), 400,
              "invalid_field", "batch[0].type", 0));
    CHECK(bad(BATCH, B("{\"batch\":[{\"type\":\"batch\",\"batch\":[]}]}"),
              400, "unknown_type", "batch[0].type", 0));
    CHECK(bad(BATCH, B("{\"batch\":[{\"type\":\"import\"}]}"), 400,
              "unknown_type", "batch[0].type", 0));
    CHECK(bad(BATCH, B("{\"batch\":[{\"type\":\"Track\",\"userId\":\"u\","
                       "\"event\":\"e\"}]}"),
              400, "unknown_type", "batch[0].type", 0));
    CHECK(strncmp(err.message, "unknown type \"Track\"", 20) == 0);

    /* the first error wins, with its index and the field's path */
    CHECK(bad(BATCH, B("{\"batch\":["
                       "{\"type\":\"track\",\"userId\":\"u\",\"event\":\"a\"},"
                       "{\"type\":\"identify\",\"userId\":\"u\"},"
                       "{\"type\":\"page\",\"anonymousId\":\"a\"},"
                       "{\"type\":\"track\",\"userId\":\"u\"},"
                       "{\"type\":\"alias\",\"userId\":\"u\"}]}"),
              400, "missing_field", "batch[3].event", 3));
    s = error_body();
    CHECK(strcmp(s, "{\"success\":false,\"error\":\"missing_field\","
                    "\"message\":\"track needs a non-empty string event\","
                    "\"field\":\"batch[3].event\",\"index\":3}") == 0);
    CHECK(bad(BATCH, B("{\"batch\":["
                       "{\"type\":\"track\",\"userId\":\"u\",\"event\":\"a\"},"
                       "{\"type\":\"alias\",\"userId\":\"u\"},"
                       "{\"type\":\"track\",\"userId\":\"u\"}]}"),
              400, "missing_field", "batch[1].previousId", 1));
    CHECK(bad(BATCH, B("{\"batch\":["
                       "{\"type\":\"group\",\"userId\":\"u\",\"groupId\":1},"
                       "{\"type\":\"track\",\"userId\":\"u\",\"event\":\"e\","
                       "\"context\":{\"traits\":[]},\"properties\":7}]}"),
              400, "invalid_field", "batch[1].properties", 1));
    CHECK(bad(BATCH, B("{\"batch\":["
                       "{\"type\":\"track\",\"userId\":\"u\",\"event\":\"e\","
                       "\"timestamp\":\"2026-11-23\"}]}"),
              400, "invalid_field", "batch[0].timestamp", 0));

    /* every type, in order */
    CHECK(ok(BATCH, B("{\"writeKey\":\"wk\",\"batch\":["
                      "{\"type\":\"identify\",\"userId\":\"u\"},"
                      "{\"type\":\"track\",\"userId\":\"u\",\"event\":\"e\"},"
                      "{\"type\":\"page\",\"userId\":\"u\"},"
                      "{\"type\":\"screen\",\"userId\":\"u\"},"
                      "{\"type\":\"group\",\"userId\":\"u\",\"groupId\":\"g\"},"
                      "{\"type\":\"alias\",\"userId\":\"u\","
                      "\"previousId\":\"p\",\"writeKey\":\"other\"}]}"), 6));
    CHECK(res.msgs[0].type == IDENTIFY && res.msgs[1].type == TRACK
          && res.msgs[2].type == PAGE && res.msgs[3].type == SCREEN
          && res.msgs[4].type == GROUP && res.msgs[5].type == ALIAS);
    CHECK(eq(res.write_key, "wk"));
    CHECK(strstr(res.msgs[5].json, "writeKey") == NULL
          && strstr(res.msgs[5].json, "other") == NULL);
    CHECK(strcmp(res.msgs[1].json,
                 "{\"type\":\"track\",\"userId\":\"u\",\"event\":\"e\","
                 "\"receivedAt\":\"" RECEIVED "\"}") == 0);
    ngx_cdp_segment_free(&res);
}


/* what is stored */

static void
test_stored(void)
{
    json_t  *j;

    /* the endpoint's type: added last, or overwriting the body's */

    CHECK(ok(TRACK, B("{\"userId\":\"u\",\"event\":\"e\"}"), 1));
    CHECK(strcmp(res.msgs[0].json,
                 "{\"userId\":\"u\",\"event\":\"e\",\"type\":\"track\","
                 "\"receivedAt\":\"" RECEIVED "\"}") == 0);
    CHECK(res.msgs[0].json_len == strlen(res.msgs[0].json));
    ngx_cdp_segment_free(&res);

    CHECK(ok(PAGE, B("{\"type\":\"identify\",\"userId\":\"u\","
                     "\"traits\":{\"email\":\"a@b.c\"}}"), 1));
    CHECK(res.msgs[0].type == PAGE && res.msgs[0].email == NULL
          && res.msgs[0].traits == NULL);
    CHECK(strncmp(res.msgs[0].json, "{\"type\":\"page\",", 15) == 0);
    /* a page's traits are not an identify's */
    CHECK(strstr(res.msgs[0].json, "a@b.c") != NULL);
    ngx_cdp_segment_free(&res);

    /* receivedAt is ours; context kept as sent, library and ip included */

    CHECK(ok(TRACK, B("{\"userId\":\"u\",\"event\":\"e\","
                      "\"receivedAt\":\"1999-01-01T00:00:00Z\","
                      "\"context\":{\"ip\":\"203.0.113.9\",\"library\":"
                      "{\"name\":\"analytics-python\",\"version\":\"2.3\"}},"
                      "\"price\":19.99,\"n\":1.0,\"big\":1e300}"), 1));
    j = stored(0);
    CHECK(j != NULL);
    CHECK(str_at(j, "receivedAt", RECEIVED));
    CHECK(str_at(j, "context.ip", "203.0.113.9"));
    CHECK(str_at(j, "context.library.name", "analytics-python"));
    CHECK(str_at(j, "context.library.version", "2.3"));
    /* reals: the same double, 17 digits */
    CHECK(json_real_value(at(j, "price")) == 19.99
          && json_real_value(at(j, "n")) == 1.0
          && json_real_value(at(j, "big")) == 1e300);
    json_decref(j);
    ngx_cdp_segment_free(&res);

    /* no context.ip is added */
    CHECK(ok(TRACK, B("{\"userId\":\"u\",\"event\":\"e\","
                      "\"context\":{\"library\":{\"name\":\"x\"}}}"), 1));
    CHECK(strstr(res.msgs[0].json, "\"ip\"") == NULL);
    ngx_cdp_segment_free(&res);

    /* identify: email and phone extracted, and gone from the stored copy */

    CHECK(ok(IDENTIFY, B("{\"userId\":\"u\",\"traits\":{\"name\":\"Ann\","
                         "\"email\":\"Ann@Example.com\","
                         "\"phone\":\"+44 20 7946 0958\",\"plan\":\"pro\"},"
                         "\"context\":{\"traits\":{\"email\":\"c@d.e\","
                         "\"phone\":\"123\",\"x\":1}}}"), 1));
    CHECK(eq(res.msgs[0].email, "Ann@Example.com"));
    CHECK(eq(res.msgs[0].phone, "+44 20 7946 0958"));
    CHECK(eq(res.msgs[0].traits,
             "{\"name\":\"Ann\",\"email\":\"Ann@Example.com\","
             "\"phone\":\"+44 20 7946 0958\",\"plan\":\"pro\"}"));
    CHECK(res.msgs[0].traits_len == strlen(res.msgs[0].traits));
    CHECK(strcmp(res.msgs[0].json,
                 "{\"userId\":\"u\",\"traits\":{\"name\":\"Ann\","
                 "\"plan\":\"pro\"},\"context\":{\"traits\":{\"x\":1}},"
                 "\"type\":\"identify\",\"receivedAt\":\"" RECEIVED "\"}")
          == 0);
    CHECK(strstr(res.msgs[0].json, "@") == NULL
          && strstr(res.msgs[0].json, "7946") == NULL);
    ngx_cdp_segment_free(&res);

    /* else from context.traits */
    CHECK(ok(IDENTIFY, B("{\"userId\":\"u\",\"traits\":{\"phone\":4420794609},"
                         "\"context\":{\"traits\":{\"email\":\"c@d.e\"}}}"),
             1));
    CHECK(eq(res.msgs[0].email, "c@d.e")
          && eq(res.msgs[0].phone, "4420794609"));
    CHECK(eq(res.msgs[0].traits, "{\"phone\":4420794609}"));
    CHECK(strcmp(res.msgs[0].json,
                 "{\"userId\":\"u\",\"traits\":{},\"context\":{\"traits\":{}},"
                 "\"type\":\"identify\",\"receivedAt\":\"" RECEIVED "\"}")
          == 0);
    ngx_cdp_segment_free(&res);

    /* other JSON types: not extracted, removed all the same */
    CHECK(ok(IDENTIFY, B("{\"userId\":\"u\",\"traits\":{\"email\":[\"a@b.c\"],"
                         "\"phone\":{\"home\":\"1\"},\"age\":3}}"), 1));
    CHECK(res.msgs[0].email == NULL && res.msgs[0].phone == NULL);
    CHECK(eq(res.msgs[0].traits, "{\"email\":[\"a@b.c\"],\"phone\":"
                                 "{\"home\":\"1\"},\"age\":3}"));
    CHECK(strstr(res.msgs[0].json, "a@b.c") == NULL
          && strstr(res.msgs[0].json, "home") == NULL
          && strstr(res.msgs[0].json, "\"age\":3") != NULL);
    ngx_cdp_segment_free(&res);

    CHECK(ok(IDENTIFY, B("{\"userId\":\"u\",\"traits\":{\"email\":null,"
                         "\"phone\":1.5}}"), 1));
    CHECK(res.msgs[0].email == NULL && res.msgs[0].phone == NULL);
    CHECK(strstr(res.msgs[0].json, "\"traits\":{}") != NULL);
    ngx_cdp_segment_free(&res);

    /* no traits at all */
    CHECK(ok(IDENTIFY, B("{\"anonymousId\":\"a\"}"), 1));
    CHECK(res.msgs[0].traits == NULL && res.msgs[0].email == NULL
          && res.msgs[0].phone == NULL && res.msgs[0].traits_len == 0);
    ngx_cdp_segment_free(&res);
    CHECK(ok(IDENTIFY, B("{\"anonymousId\":\"a\",\"traits\":{}}"), 1));
    CHECK(eq(res.msgs[0].traits, "{}") && res.msgs[0].email == NULL);
    ngx_cdp_segment_free(&res);

    /* other types: nothing extracted, context.traits stripped */
    CHECK(ok(TRACK, B("{\"userId\":\"u\",\"event\":\"e\",\"context\":"
                      "{\"traits\":{\"email\":\"a@b.c\",\"phone\":\"1\","
                      "\"name\":\"Ann\"}},\"properties\":"
                      "{\"email\":\"kept@b.c\"}}"), 1));
    CHECK(res.msgs[0].email == NULL && res.msgs[0].phone == NULL
          && res.msgs[0].traits == NULL);
    j = stored(0);
    CHECK(j != NULL && at(j, "context.traits.email") == NULL
          && at(j, "context.traits.phone") == NULL
          && str_at(j, "context.traits.name", "Ann")
          && str_at(j, "properties.email", "kept@b.c"));
    json_decref(j);
    ngx_cdp_segment_free(&res);

    /* the event time */
    CHECK(ok(TRACK, B("{\"userId\":\"u\",\"event\":\"e\","
                      "\"timestamp\":\"2026-11-23T07:30:00.5Z\","
                      "\"originalTimestamp\":\"2020-01-01T00:00:00Z\"}"), 1));
    CHECK(res.msgs[0].time_ms == 1795419000500LL);
    ngx_cdp_segment_free(&res);
    CHECK(ok(TRACK, B("{\"userId\":\"u\",\"event\":\"e\",\"timestamp\":null,"
                      "\"originalTimestamp\":\"2026-11-23T08:30:00+01:00\"}"),
             1));
    CHECK(res.msgs[0].time_ms == 1795419000000LL);
    ngx_cdp_segment_free(&res);
    CHECK(ok(TRACK, B("{\"userId\":\"u\",\"event\":\"e\","
                      "\"sentAt\":\"2026-11-23T07:30:00Z\"}"), 1));
    CHECK(res.msgs[0].time_ms == 0);
    ngx_cdp_segment_free(&res);

    /* extracted fields */
    CHECK(ok(TRACK, B("{\"userId\":\"u1\",\"anonymousId\":\"a1\","
                      "\"event\":\"Signed Up\",\"messageId\":\"m-1\","
                      "\"groupId\":\"g\",\"previousId\":\"p\"}"), 1));
    CHECK(eq(res.msgs[0].user_id, "u1") && eq(res.msgs[0].anonymous_id, "a1")
          && eq(res.msgs[0].event, "Signed Up")
          && eq(res.msgs[0].message_id, "m-1")
          && eq(res.msgs[0].group_id, "g")
          && eq(res.msgs[0].previous_id, "p"));
    ngx_cdp_segment_free(&res);
}


static void
test_batch_merge(void)
{
    json_t  *j;

    CHECK(ok(BATCH, B("{\"batch\":["
                      "{\"type\":\"track\",\"userId\":\"u\",\"event\":\"e\"},"
                      "{\"type\":\"identify\",\"userId\":\"u\","
                      "\"context\":{\"ip\":\"198.51.100.1\",\"locale\":\"fr\"},"
                      "\"integrations\":{\"All\":true},"
                      "\"sentAt\":\"2026-11-23T07:00:00Z\"},"
                      "{\"type\":\"identify\",\"userId\":\"v\","
                      "\"context\":null,\"traits\":{\"email\":\"t@u.v\"}}],"
                      "\"context\":{\"locale\":\"en\",\"library\":{\"name\":"
                      "\"batchlib\"},\"traits\":{\"email\":\"b@c.d\","
                      "\"phone\":\"555\",\"name\":\"B\"}},"
                      "\"integrations\":{\"All\":false,\"Mixpanel\":true},"
                      "\"sentAt\":\"2026-11-23T07:30:00Z\"}"), 3));

    /* 0: gets everything from the top */
    j = stored(0);
    CHECK(j != NULL);
    CHECK(str_at(j, "context.locale", "en")
          && str_at(j, "context.library.name", "batchlib")
          && str_at(j, "context.traits.name", "B")
          && at(j, "context.traits.email") == NULL
          && at(j, "context.traits.phone") == NULL
          && json_is_false(at(j, "integrations.All"))
          && json_is_true(at(j, "integrations.Mixpanel"))
          && str_at(j, "sentAt", "2026-11-23T07:30:00Z")
          && str_at(j, "receivedAt", RECEIVED));
    json_decref(j);
    CHECK(res.msgs[0].email == NULL);

    /* 1: its own keys win */
    j = stored(1);
    CHECK(j != NULL);
    CHECK(str_at(j, "context.locale", "fr")
          && str_at(j, "context.ip", "198.51.100.1")
          && str_at(j, "context.library.name", "batchlib")
          && json_is_true(at(j, "integrations.All"))
          && json_is_true(at(j, "integrations.Mixpanel"))
          && str_at(j, "sentAt", "2026-11-23T07:00:00Z"));
    json_decref(j);

    /* identify, from the merged context.traits */
    CHECK(eq(res.msgs[1].email, "b@c.d") && eq(res.msgs[1].phone, "555")
          && res.msgs[1].traits == NULL);

    /* 2: its traits first; the shared context.traits stripped for all */
    CHECK(eq(res.msgs[2].email, "t@u.v") && eq(res.msgs[2].phone, "555"));
    j = stored(2);
    CHECK(j != NULL && str_at(j, "context.locale", "en")
          && at(j, "traits.email") == NULL
          && at(j, "context.traits.email") == NULL
          && str_at(j, "context.traits.name", "B"));
    json_decref(j);

    CHECK(strstr(res.msgs[0].json, "b@c.d") == NULL
          && strstr(res.msgs[1].json, "b@c.d") == NULL
          && strstr(res.msgs[2].json, "b@c.d") == NULL
          && strstr(res.msgs[2].json, "t@u.v") == NULL);
    ngx_cdp_segment_free(&res);

    /* a message's own context.traits replaces the batch's whole */
    CHECK(ok(BATCH, B("{\"context\":{\"traits\":{\"a\":1}},\"batch\":["
                      "{\"type\":\"track\",\"userId\":\"u\",\"event\":\"e\","
                      "\"context\":{\"traits\":{\"b\":2}}}]}"), 1));
    CHECK(strstr(res.msgs[0].json, "\"context\":{\"traits\":{\"b\":2}}")
          != NULL);
    ngx_cdp_segment_free(&res);
}


/* what @segment/analytics-node 2.2.1 sends, byte for byte */

static void
test_sdk_body(void)
{
    json_t  *j;

    static const char  body[] =
        "{\"batch\":[{\"timestamp\":\"2026-11-23T07:14:58.379Z\","
        "\"integrations\":{},\"type\":\"identify\",\"userId\":\"u1\","
        "\"traits\":{\"email\":\"Ann@Example.com\","
        "\"phone\":\"+44 20 7946 0958\",\"name\":\"Ann\"},"
        "\"context\":{\"library\":{\"name\":\"@segment/analytics-node\","
        "\"version\":\"2.2.1\"}},"
        "\"messageId\":\"node-next-1795418098379-c3d895b0-2e94-48d9-a323-"
        "11b1816ce255\",\"_metadata\":{\"nodeVersion\":\"v20.20.2\","
        "\"jsRuntime\":\"node\"}},{\"timestamp\":\"2026-11-23T07:14:58.379Z\","
        "\"integrations\":{},\"event\":\"Signed Up\",\"type\":\"track\","
        "\"properties\":{\"plan\":\"pro\",\"price\":19.99},"
        "\"context\":{\"library\":{\"name\":\"@segment/analytics-node\","
        "\"version\":\"2.2.1\"}},\"userId\":\"u1\","
        "\"messageId\":\"node-next-1795418098379-95b02e94-a8d9-4323-91b1-"
        "816ce25587b2\",\"_metadata\":{\"nodeVersion\":\"v20.20.2\","
        "\"jsRuntime\":\"node\"}},{\"timestamp\":\"2026-11-23T07:14:58.380Z\","
        "\"integrations\":{},\"type\":\"page\",\"properties\":"
        "{\"url\":\"https://x.example/p\",\"category\":\"Docs\"},"
        "\"category\":\"Docs\",\"name\":\"Pricing\","
        "\"context\":{\"library\":{\"name\":\"@segment/analytics-node\","
        "\"version\":\"2.2.1\"}},\"anonymousId\":\"a1\","
        "\"messageId\":\"node-next-1795418098380-2e94a8d9-6323-41b1-816c-"
        "e25587b29062\",\"_metadata\":{\"nodeVersion\":\"v20.20.2\","
        "\"jsRuntime\":\"node\"}},{\"timestamp\":\"2026-11-23T07:14:58.380Z\","
        "\"integrations\":{},\"type\":\"screen\",\"properties\":{},"
        "\"name\":\"Home\",\"context\":{\"library\":"
        "{\"name\":\"@segment/analytics-node\",\"version\":\"2.2.1\"}},"
        "\"userId\":\"u1\",\"messageId\":\"node-next-1795418098380-a8d96323-"
        "11b1-416c-a255-87b290623a6e\",\"_metadata\":"
        "{\"nodeVersion\":\"v20.20.2\",\"jsRuntime\":\"node\"}},"
        "{\"timestamp\":\"2026-11-23T07:14:58.380Z\",\"integrations\":{},"
        "\"type\":\"group\",\"traits\":{\"name\":\"Acme\"},\"groupId\":\"g1\","
        "\"context\":{\"library\":{\"name\":\"@segment/analytics-node\","
        "\"version\":\"2.2.1\"}},\"userId\":\"u1\","
        "\"messageId\":\"node-next-1795418098380-632311b1-816c-4255-87b2-"
        "90623a6e0211\",\"_metadata\":{\"nodeVersion\":\"v20.20.2\","
        "\"jsRuntime\":\"node\"}},{\"timestamp\":\"2026-11-23T07:14:58.380Z\","
        "\"integrations\":{},\"userId\":\"u1\",\"type\":\"alias\","
        "\"previousId\":\"a1\",\"context\":{\"library\":"
        "{\"name\":\"@segment/analytics-node\",\"version\":\"2.2.1\"}},"
        "\"messageId\":\"node-next-1795418098380-11b1816c-e255-47b2-9062-"
        "3a6e0211386c\",\"_metadata\":{\"nodeVersion\":\"v20.20.2\","
        "\"jsRuntime\":\"node\"}}],\"writeKey\":\"KEY123\","
        "\"sentAt\":\"2026-11-23T07:14:58.384Z\"}";

    CHECK(sizeof(body) - 1 == 2174);    /* the request's Content-Length */

    CHECK(ok(BATCH, B(body), 6));
    CHECK(eq(res.write_key, "KEY123"));

    CHECK(res.msgs[0].type == IDENTIFY && eq(res.msgs[0].user_id, "u1")
          && eq(res.msgs[0].email, "Ann@Example.com")
          && eq(res.msgs[0].phone, "+44 20 7946 0958")
          && eq(res.msgs[0].traits, "{\"email\":\"Ann@Example.com\","
                                    "\"phone\":\"+44 20 7946 0958\","
                                    "\"name\":\"Ann\"}")
          && eq(res.msgs[0].message_id, "node-next-1795418098379-c3d895b0-"
                                        "2e94-48d9-a323-11b1816ce255")
          && res.msgs[0].time_ms == 1795418098379LL);
    CHECK(res.msgs[1].type == TRACK && eq(res.msgs[1].event, "Signed Up")
          && res.msgs[1].email == NULL);
    CHECK(res.msgs[2].type == PAGE && res.msgs[2].user_id == NULL
          && eq(res.msgs[2].anonymous_id, "a1")
          && res.msgs[2].time_ms == 1795418098380LL);
    CHECK(res.msgs[3].type == SCREEN);
    CHECK(res.msgs[4].type == GROUP && eq(res.msgs[4].group_id, "g1")
          && res.msgs[4].traits == NULL);
    CHECK(res.msgs[5].type == ALIAS && eq(res.msgs[5].previous_id, "a1"));

    j = stored(0);
    CHECK(j != NULL && str_at(j, "type", "identify")
          && at(j, "traits.email") == NULL && at(j, "traits.phone") == NULL
          && str_at(j, "traits.name", "Ann")
          && str_at(j, "context.library.name", "@segment/analytics-node")
          && str_at(j, "context.library.version", "2.2.1")
          && str_at(j, "_metadata.jsRuntime", "node")
          && str_at(j, "sentAt", "2026-11-23T07:14:58.384Z")
          && str_at(j, "receivedAt", RECEIVED)
          && at(j, "writeKey") == NULL && at(j, "context.ip") == NULL);
    json_decref(j);

    /* the stored track, as it is */
    CHECK(strcmp(res.msgs[1].json,
                 "{\"timestamp\":\"2026-11-23T07:14:58.379Z\","
                 "\"integrations\":{},\"event\":\"Signed Up\","
                 "\"type\":\"track\",\"properties\":{\"plan\":\"pro\","
                 "\"price\":19.989999999999998},\"context\":{\"library\":"
                 "{\"name\":\"@segment/analytics-node\",\"version\":\"2.2.1\"}"
                 "},\"userId\":\"u1\",\"messageId\":\"node-next-1795418098379-"
                 "95b02e94-a8d9-4323-91b1-816ce25587b2\",\"_metadata\":"
                 "{\"nodeVersion\":\"v20.20.2\",\"jsRuntime\":\"node\"},"
                 "\"sentAt\":\"2026-11-23T07:14:58.384Z\","
                 "\"receivedAt\":\"" RECEIVED "\"}") == 0);
    j = stored(1);
    CHECK(j != NULL && json_real_value(at(j, "properties.price")) == 19.99);
    json_decref(j);

    ngx_cdp_segment_free(&res);

    /* the same as /v1/import */
    CHECK(ok(ngx_cdp_segment_endpoint(L("import")), B(body), 6));
    ngx_cdp_segment_free(&res);
}


/* the error body */

static void
test_error_json(void)
{
    size_t                   n;
    u_char                  *out;
    json_t                  *j;
    ngx_cdp_segment_error_t  e;

    /* quotes, control characters and bad UTF-8 of the body, escaped */

    CHECK(bad(BATCH, B("{\"batch\":[{\"type\":\"a\\\"b\\\\c\\n\\u0001"
                       "\xc3\"}]}"),
              400, "invalid_utf8", "", -1));

    CHECK(bad(BATCH, B("{\"batch\":[{\"type\":\"a\\\"b\\\\c\\n\\u0001"
                       "\\u00e9\"}]}"),
              400, "unknown_type", "batch[0].type", 0));
    CHECK(strstr(error_body(),
                 "\"message\":\"unknown type \\\"a\\\"b\\\\c\\n\\u0001"
                 "\xc3\xa9\\\": a batch message") != NULL);

    /* a type cut in the middle of a character: U+FFFD, still JSON */
    CHECK(bad(BATCH, B("{\"batch\":[{\"type\":\"0123456789012345678901234567"
                       "89012345678\xe2\x82\xac\"}]}"),
              400, "unknown_type", "batch[0].type", 0));
    CHECK(strstr(error_body(), "012345678\xef\xbf\xbd\\\": a batch")
          != NULL);

    /* jansson's "near '...'" quotes the body too */
    CHECK(bad(TRACK, B("{\"userId\":\"u\",\"event\":\"e\"\"\\\"\x01\"}"), 400,
              "invalid_json", "", -1));

    /* the largest possible: every field full of bytes to escape */

    memset(&e, 0, sizeof(e));
    e.status = 400;
    e.code = "missing_field";
    memset(e.message, 0x01, sizeof(e.message) - 1);
    memset(e.field, 0x1f, sizeof(e.field) - 1);
    e.index = 9223372036854775807L;
    e.position = 9223372036854775807L;
    e.line = 9223372036854775807L;
    e.column = 9223372036854775807L;

    out = ngx_cdp_buf(NGX_CDP_SEGMENT_ERROR_JSON_MAX);
    n = ngx_cdp_segment_error_json(out, &e);
    CHECK(n <= NGX_CDP_SEGMENT_ERROR_JSON_MAX
          && ngx_cdp_canary_ok(out, NGX_CDP_SEGMENT_ERROR_JSON_MAX));
    j = json_loadb((const char *) out, n, 0, NULL);
    CHECK(j != NULL
          && strlen(json_string_value(json_object_get(j, "message")))
             == sizeof(e.message) - 1);
    json_decref(j);

    /* with no code (never set by the parser) */
    e.code = NULL;
    e.message[0] = '\0';
    e.field[0] = '\0';
    e.index = -1;
    e.position = -1;
    n = ngx_cdp_segment_error_json(out, &e);
    CHECK(n == sizeof("{\"success\":false,\"error\":\"internal\","
                      "\"message\":\"\"}") - 1
          && memcmp(out, "{\"success\":false,\"error\":\"internal\","
                         "\"message\":\"\"}", n) == 0);
    free(out);
}



/*
 * jansson's blocks come from an arena during a parse (see
 * ngx_cdp_segment.c): the largest batch spills out of the first arena and
 * fits the grown one, with the same result each time; a jansson value
 * made outside a parse lives on through parses and is freed as usual.
 */

static void
test_arena(void)
{
    int      i, rc, same;
    char    *body, *p, *first0, *firstn;
    size_t   len;
    json_t  *outside;

    body = malloc(NGX_CDP_SEGMENT_BATCH_BODY_MAX);
    if (body == NULL) {
        CHECK(0);
        return;
    }

    outside = json_pack("{s:s, s:[i, i]}", "kept", "across parses", "n", 1, 2);
    CHECK(outside != NULL);

    p = body;
    p += sprintf(p, "{\"batch\":[");

    for (i = 0; i < NGX_CDP_SEGMENT_BATCH_MAX; i++) {
        p += sprintf(p, "%s{\"type\":\"track\",\"userId\":\"u-%d\","
                     "\"event\":\"Order Completed\",\"properties\":"
                     "{\"order\":%d,\"sku\":[\"a\",\"b\"],"
                     "\"note\":\"the arena holds all of this tree\"},"
                     "\"messageId\":\"m-%d\"}", i ? "," : "", i, i, i);
    }

    p += sprintf(p, "]}");
    len = p - body;
    CHECK(len > 400 * 1024 && len <= NGX_CDP_SEGMENT_BATCH_BODY_MAX);

    first0 = NULL;
    firstn = NULL;
    same = 1;

    for (i = 0; i < 4; i++) {
        rc = parse(BATCH, (const u_char *) body, len);
        CHECK(rc == 0);
        if (rc != 0) {
            break;
        }

        CHECK(res.nmsgs == NGX_CDP_SEGMENT_BATCH_MAX);

        if (first0 == NULL) {
            first0 = strdup(res.msgs[0].json);
            firstn = strdup(res.msgs[res.nmsgs - 1].json);

        } else if (strcmp(first0, res.msgs[0].json) != 0
                   || strcmp(firstn, res.msgs[res.nmsgs - 1].json) != 0)
        {
            same = 0;
        }

        ngx_cdp_segment_free(&res);
    }

    CHECK(same);
    CHECK(firstn != NULL && strstr(firstn, "\"userId\":\"u-2499\"") != NULL);

    CHECK(outside != NULL
          && strcmp(json_string_value(json_object_get(outside, "kept")),
                    "across parses") == 0
          && json_array_size(json_object_get(outside, "n")) == 2);
    json_decref(outside);

    free(first0);
    free(firstn);
    free(body);
}


/*
 * Memory running out anywhere in jansson: 500 out_of_memory, nothing in
 * res, nothing leaked; except that jansson's parser reports a string it
 * could not allocate as a syntax error (so a 400).  Only the test sets
 * jansson's allocator; the parser never does.
 */

static long  oom_left;


static void *
oom_malloc(size_t size)
{
    if (oom_left-- <= 0) {
        return NULL;
    }

    return malloc(size);
}


static void
test_oom(void)
{
    int          rc, fails, oks, other, misread;
    long         n;
    const char  *s;

    static const char  body[] =
        "{\"writeKey\":\"k\",\"context\":{\"traits\":{\"email\":\"b@c.d\","
        "\"phone\":1},\"locale\":\"en\"},\"integrations\":{\"All\":true},"
        "\"sentAt\":\"2026-11-23T07:30:00Z\",\"batch\":["
        "{\"type\":\"identify\",\"userId\":7,\"traits\":{\"email\":\"a@b.c\","
        "\"phone\":\"+1 555\",\"x\":[1,2.5,null]},\"timestamp\":"
        "\"2026-11-23T07:30:00Z\"},"
        "{\"type\":\"track\",\"anonymousId\":\"a\",\"event\":\"e\","
        "\"context\":{\"traits\":{\"email\":\"c@d.e\"}}},"
        "{\"type\":\"group\",\"userId\":\"u\",\"groupId\":3}]}";

    fails = 0;
    oks = 0;
    other = 0;
    misread = 0;

    for (n = 0; n < 10000; n++) {
        oom_left = n;
        json_set_alloc_funcs(oom_malloc, free);

        rc = ngx_cdp_segment_parse(BATCH, (const u_char *) body,
                                   sizeof(body) - 1,
                                   (const u_char *) RECEIVED,
                                   sizeof(RECEIVED) - 1, &res, &err);

        json_set_alloc_funcs(malloc, free);

        if (rc == 0) {
            oks++;
            if (res.nmsgs != 3 || !eq(res.msgs[0].email, "a@b.c")) {
                other++;
            }

            ngx_cdp_segment_free(&res);
            break;
        }

        s = err.code;

        if (rc == 500 && s != NULL && strcmp(s, "out_of_memory") == 0
            && res.msgs == NULL && res.write_key == NULL)
        {
            fails++;

        } else if (rc == 400 && s != NULL && strcmp(s, "invalid_json") == 0
                   && err.position > 0 && res.msgs == NULL)
        {
            /* a string jansson could not allocate reads as bad syntax */
            misread++;

        } else {
            printf("  after %ld allocations: %d %s %s\n", n, rc,
                   s ? s : "-", err.message);
            other++;
        }
    }

    CHECK(oks == 1);
    CHECK(fails > 20);
    CHECK(other == 0);
}


/*
 * The stored copy is written by the module's own dumper: byte for byte
 * what jansson's json_dumps(JSON_COMPACT) makes of the same tree, over
 * every escape, control characters, DEL, UTF-8, the integer extremes and
 * reals.
 */

static void
test_dump_as_jansson(void)
{
    char         *again;
    json_t       *tree;
    json_error_t  jerr;

    static const char  body[] =
        "{\"type\":\"track\",\"userId\":\"u-\\\"q\\\"\",\"event\":\"e\","
        "\"properties\":{"
        "\"esc\":\"\\\" \\\\ \\/ \\b \\f \\n \\r \\t\","
        "\"ctl\":\"x\\u0001\\u001f\\u007f\","
        "\"utf8\":\"J\\u00f6rg \xe2\x82\xac \xf0\x9f\x98\x80 \\ud83d\\ude00\","
        "\"max\":9223372036854775807,\"min\":-9223372036854775808,"
        "\"zero\":0,\"neg\":-1,\"ten\":10,"
        "\"reals\":[0.5,-1.25,1e300,3.0,1E-7,0.1,1.5e100,-2e-5,1e-300,-0.0,12345678.9],"
        "\"lit\":[true,false,null,[],{}],"
        "\"\\\"key\\\\\":\"\"}}";

    CHECK(ok(TRACK, B(body), 1));

    if (res.nmsgs != 1) {
        return;
    }

    tree = json_loadb(res.msgs[0].json, res.msgs[0].json_len,
                      JSON_ALLOW_NUL, &jerr);
    CHECK(tree != NULL);

    if (tree == NULL) {
        ngx_cdp_segment_free(&res);
        return;
    }

    again = json_dumps(tree, JSON_COMPACT);
    if (again != NULL && strcmp(again, res.msgs[0].json) != 0) {
        printf("  ours:    %s\n  jansson: %s\n", res.msgs[0].json, again);
    }

    CHECK(again != NULL
          && strlen(again) == res.msgs[0].json_len
          && memcmp(again, res.msgs[0].json, res.msgs[0].json_len) == 0);

    /* and what was sent is there */
    CHECK(strstr(res.msgs[0].json,
                 "\"max\":9223372036854775807,"
                 "\"min\":-9223372036854775808,\"zero\":0,\"neg\":-1,"
                 "\"ten\":10") != NULL);
    CHECK(strstr(res.msgs[0].json,
                 "\"esc\":\"\\\" \\\\ / \\b \\f \\n \\r \\t\"") != NULL);
    CHECK(strstr(res.msgs[0].json,
                 "\"ctl\":\"x\\u0001\\u001F\x7f\"") != NULL);

    free(again);
    json_decref(tree);
    ngx_cdp_segment_free(&res);
}


/* context.consent.categoryPreferences: the message's own consent */

static void
test_consent(void)
{
    CHECK(ok(TRACK, B("{\"userId\":\"u\",\"event\":\"e\"}"), 1));
    CHECK(res.msgs[0].consent == -1);
    ngx_cdp_segment_free(&res);

    CHECK(ok(TRACK, B("{\"userId\":\"u\",\"event\":\"e\",\"context\":"
                      "{\"consent\":{\"categoryPreferences\":"
                      "{\"Analytics\":true,\"Marketing\":false,"
                      "\"Functional\":true,\"Other\":true}}}}"), 1));
    CHECK(res.msgs[0].consent == (NGX_CDP_CONSENT_ANALYTICS
                                  | NGX_CDP_CONSENT_PERSONALIZATION));
    ngx_cdp_segment_free(&res);

    /* only true grants; an empty object denies everything */
    CHECK(ok(TRACK, B("{\"userId\":\"u\",\"event\":\"e\",\"context\":"
                      "{\"consent\":{\"categoryPreferences\":"
                      "{\"advertising\":1,\"analytics\":\"yes\"}}}}"), 1));
    CHECK(res.msgs[0].consent == 0);
    ngx_cdp_segment_free(&res);

    CHECK(ok(TRACK, B("{\"userId\":\"u\",\"event\":\"e\",\"context\":"
                      "{\"consent\":{\"categoryPreferences\":{}}}}"), 1));
    CHECK(res.msgs[0].consent == 0);
    ngx_cdp_segment_free(&res);

    /* not an object: absent */
    CHECK(ok(TRACK, B("{\"userId\":\"u\",\"event\":\"e\",\"context\":"
                      "{\"consent\":{\"categoryPreferences\":[1]}}}"), 1));
    CHECK(res.msgs[0].consent == -1);
    ngx_cdp_segment_free(&res);

    /* a batch's context is merged in: its consent applies */
    CHECK(ok(BATCH, B("{\"batch\":[{\"type\":\"track\",\"userId\":\"u\","
                      "\"event\":\"e\"},{\"type\":\"track\","
                      "\"userId\":\"v\",\"event\":\"e\",\"context\":"
                      "{\"consent\":{\"categoryPreferences\":"
                      "{\"marketing\":true}}}}],\"context\":{\"consent\":"
                      "{\"categoryPreferences\":{\"analytics\":true}}}}"),
             2));
    CHECK(res.msgs[0].consent == NGX_CDP_CONSENT_ANALYTICS);
    CHECK(res.msgs[1].consent == NGX_CDP_CONSENT_MARKETING);
    ngx_cdp_segment_free(&res);
}


int
main(void)
{
    test_endpoints();
    test_time();
    test_json_errors();
    test_utf8();
    test_limits();
    test_ids();
    test_types();
    test_fields();
    test_batch();
    test_stored();
    test_consent();
    test_batch_merge();
    test_sdk_body();
    test_error_json();
    test_arena();
    test_dump_as_jansson();
    test_oom();

    return ngx_cdp_summary();
}
