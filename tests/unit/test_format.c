
/*
 * Unit tests of ngx_cdp_format.c, with the same tiny harness as
 * test_codec.c.
 *
 * Every CHECK counts as one test; the last line is "N passed, N failed"
 * and the exit status is non-zero when anything failed.  Events are
 * copied to their exact size (no NUL after them, a canary), bodies are
 * compared byte for byte where the whole body is short enough to write
 * down, else read back with jansson; every GA4 body is rendered twice and
 * must come out the same.  Bodies are freed, so leaks show up under
 * valgrind and `make sanitize`.
 */


#include <stdarg.h>

#include <jansson.h>

#include "ngx_cdp_format.h"
#include "unit.h"


#define MAX_EVENTS  40

/* 2026-11-23T04:40:51.123Z */
#define T0          "2026-11-23T04:40:51.123Z"
#define T0_US       "1795408851123000"

#define PIXEL_PAGE                                                            \
    "{\"type\":\"page\",\"name\":\"Pricing\",\"messageId\":\"px-8f3a-42\","   \
    "\"anonymousId\":\"5f0c9d1e-77aa-4d2b-9a1e-3b1c0d9e8fe1\","               \
    "\"timestamp\":\"" T0 "\",\"receivedAt\":\"" T0 "\","                     \
    "\"properties\":{"                                                        \
    "\"url\":\"https://shop.example/pricing?utm_source=news\","               \
    "\"path\":\"/pricing\",\"search\":\"?utm_source=news\","                  \
    "\"referrer\":\"https://ref.example/\",\"title\":\"Pricing\","            \
    "\"plan\":\"pro\"},"                                                      \
    "\"context\":{\"page\":{\"url\":\"https://shop.example/ctx\","            \
    "\"path\":\"/pricing\",\"search\":\"?utm_source=news\","                  \
    "\"referrer\":\"https://ctx.example/\",\"title\":\"Ctx\"},"               \
    "\"campaign\":{\"source\":\"news\"},\"location\":{\"country\":\"DE\"},"   \
    "\"consent\":{\"analytics\":true,\"marketing\":false,"                    \
    "\"personalization\":false,\"source\":\"gpc\"},"                          \
    "\"userAgent\":\"Mozilla/5.0\",\"ip\":\"203.0.113.0\","                   \
    "\"library\":{\"name\":\"ngx_cdp\",\"version\":\"0.1.0\"}}}"


static char    *body;
static size_t   body_len;
static json_t  *doc;


/* helpers */

/* a printf'd event, in a static buffer of its own per slot */

static const char *
ev(int slot, const char *fmt, ...)
{
    va_list      args;
    static char  buf[4][8192];

    va_start(args, fmt);
    vsnprintf(buf[slot], sizeof(buf[slot]), fmt, args);
    va_end(args);

    return buf[slot];
}


static void
reset(void)
{
    ngx_cdp_fmt_free(body);
    json_decref(doc);

    body = NULL;
    body_len = 0;
    doc = NULL;
}


/*
 * The GA4 body of n events, each an exact-size copy; the events must
 * come back unchanged, a body must be NUL-terminated at *len, a JSON
 * object, and the same when rendered again.  Sets body, body_len and
 * doc; returns doc (NULL when there is no body).
 */

static json_t *
ga4(const char **events, size_t n)
{
    int                ok;
    char              *again;
    size_t             i, len, again_len;
    u_char            *copy[MAX_EVENTS];
    ngx_cdp_fmt_str_t  s[MAX_EVENTS];

    reset();

    for (i = 0; i < n; i++) {
        len = strlen(events[i]);
        copy[i] = ngx_cdp_dup(events[i], len);
        s[i].data = (const char *) copy[i];
        s[i].len = len;
    }

    body_len = 0x5a5a;
    body = ngx_cdp_fmt_ga4(s, n, &body_len);

    again_len = 0x5a5a;
    again = ngx_cdp_fmt_ga4(s, n, &again_len);

    ok = 1;

    for (i = 0; i < n; i++) {
        if (memcmp(copy[i], events[i], s[i].len) != 0
            || !ngx_cdp_canary_ok(copy[i], s[i].len))
        {
            printf("  event %zu changed\n", i);
            ok = 0;
        }

        free(copy[i]);
    }

    if (body == NULL) {
        ok = ok && again == NULL && again_len == body_len;
        CHECK(ok);
        return NULL;
    }

    ok = ok && again != NULL && again_len == body_len
         && memcmp(again, body, body_len + 1) == 0
         && strlen(body) == body_len;

    ngx_cdp_fmt_free(again);

    doc = json_loadb(body, body_len, JSON_REJECT_DUPLICATES, NULL);

    if (!json_is_object(doc)) {
        printf("  not a JSON object: %s\n", body);
        ok = 0;
    }

    CHECK(ok);

    return doc;
}


static json_t *
ga4_1(const char *e)
{
    return ga4(&e, 1);
}


/* exactly this body */

static int
body_is(const char *want)
{
    if (body == NULL || strcmp(body, want) != 0) {
        printf("  got:  %s\n  want: %s\n", body ? body : "(null)", want);
        return 0;
    }

    return body_len == strlen(want);
}


/* the value at a dotted path; numbers index arrays */

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

        if (json_is_array(j)) {
            j = json_array_get(j, strtoul(key, NULL, 10));

        } else {
            j = json_object_get(j, key);
        }

        if (dot == NULL) {
            return j;
        }

        path = dot + 1;
    }

    return NULL;
}


static int
str_at(const char *path, const char *want)
{
    json_t  *v;

    v = at(doc, path);

    if (!json_is_string(v) || strcmp(json_string_value(v), want) != 0) {
        printf("  %s: %s, want \"%s\"\n", path,
               json_is_string(v) ? json_string_value(v) : "(no string)",
               want);
        return 0;
    }

    return 1;
}


static int
int_at(const char *path, long long want)
{
    json_t  *v;

    v = at(doc, path);

    if (!json_is_integer(v) || json_integer_value(v) != want) {
        printf("  %s: %lld, want %lld\n", path,
               json_is_integer(v) ? json_integer_value(v) : -1LL, want);
        return 0;
    }

    return 1;
}


static int
none_at(const char *path)
{
    return at(doc, path) == NULL;
}


static size_t
size_at(const char *path)
{
    json_t  *v;

    v = at(doc, path);

    return json_is_array(v) ? json_array_size(v) : json_object_size(v);
}


/* the GA4 name of a track event whose "event" is the JSON text event */

static const char *
track_name(const char *event)
{
    const char  *e;

    e = ev(0, "{\"type\":\"track\",\"anonymousId\":\"a\",\"event\":%s}",
           event);

    if (ga4_1(e) == NULL || !json_is_string(at(doc, "events.0.name"))) {
        return "(none)";
    }

    return json_string_value(at(doc, "events.0.name"));
}


static int
name_is(const char *event, const char *want)
{
    const char  *got;

    got = track_name(event);

    if (strcmp(got, want) != 0) {
        printf("  %s: \"%s\", want \"%s\"\n", event, got, want);
        return 0;
    }

    return 1;
}


/* a string of n copies of s */

static const char *
rep(int slot, const char *s, size_t n)
{
    size_t       i, len;
    static char  buf[4][4096];

    len = strlen(s);
    buf[slot][0] = '\0';

    for (i = 0; i < n && (i + 1) * len < sizeof(buf[slot]); i++) {
        memcpy(buf[slot] + i * len, s, len + 1);
    }

    return buf[slot];
}


/* info */

static int
info_of(const char *json, size_t len, ngx_cdp_fmt_info_t *info)
{
    int      rc;
    u_char  *copy;

    copy = ngx_cdp_dup(json, len);

    /* what a previous call left must not matter */
    memset(info, 0x5a, sizeof(*info));

    rc = ngx_cdp_fmt_info((const char *) copy, len, info);

    if (memcmp(copy, json, len) != 0 || !ngx_cdp_canary_ok(copy, len)) {
        printf("  event changed\n");
        rc = -2;
    }

    free(copy);

    return rc;
}


static int
info_is(const char *json, int rc, int type, const char *anon,
    const char *user)
{
    int                 got;
    ngx_cdp_fmt_info_t  info;

    got = info_of(json, strlen(json), &info);

    if (got != rc || info.type != type
        || strcmp(info.anonymous_id, anon) != 0
        || strcmp(info.user_id, user) != 0)
    {
        printf("  %.60s: %d %d \"%s\" \"%s\"\n", json, got, info.type,
               info.anonymous_id, info.user_id);
        return 0;
    }

    return 1;
}


static void
test_info(void)
{
    char                buf[512];
    ngx_cdp_fmt_info_t  info;

    CHECK(NGX_CDP_FMT_TRACK == 0 && NGX_CDP_FMT_IDENTIFY == 1
          && NGX_CDP_FMT_PAGE == 2 && NGX_CDP_FMT_SCREEN == 3
          && NGX_CDP_FMT_GROUP == 4 && NGX_CDP_FMT_ALIAS == 5
          && NGX_CDP_FMT_UNKNOWN < 0);

    CHECK(info_is(PIXEL_PAGE, 0, NGX_CDP_FMT_PAGE,
                  "5f0c9d1e-77aa-4d2b-9a1e-3b1c0d9e8fe1", ""));
    CHECK(info_is("{\"type\":\"track\",\"event\":\"Order Completed\","
                  "\"anonymousId\":\"a-1\",\"userId\":\"u-1\","
                  "\"properties\":{\"revenue\":42.5,\"currency\":\"EUR\"}}",
                  0, NGX_CDP_FMT_TRACK, "a-1", "u-1"));
    CHECK(info_is("{\"type\":\"identify\",\"userId\":\"u-2002\","
                  "\"anonymousId\":\"a-2\",\"traits\":{\"plan\":\"team\"}}",
                  0, NGX_CDP_FMT_IDENTIFY, "a-2", "u-2002"));
    CHECK(info_is("{\"type\":\"screen\",\"userId\":\"u\"}", 0,
                  NGX_CDP_FMT_SCREEN, "", "u"));
    CHECK(info_is("{\"type\":\"group\",\"userId\":\"u\",\"groupId\":\"g\"}",
                  0, NGX_CDP_FMT_GROUP, "", "u"));
    CHECK(info_is("{\"type\":\"alias\",\"userId\":\"u\","
                  "\"previousId\":\"a\"}", 0, NGX_CDP_FMT_ALIAS, "", "u"));

    /* an API message: integer ids as their decimal strings */
    CHECK(info_is("{\"type\":\"track\",\"userId\":42,\"event\":\"e\"}", 0,
                  NGX_CDP_FMT_TRACK, "", "42"));
    CHECK(info_is("{\"type\":\"track\",\"userId\":-9223372036854775808,"
                  "\"anonymousId\":9223372036854775807}", 0,
                  NGX_CDP_FMT_TRACK, "9223372036854775807",
                  "-9223372036854775808"));
    CHECK(info_is("{\"userId\":0,\"anonymousId\":0}", 0,
                  NGX_CDP_FMT_UNKNOWN, "0", "0"));

    /* missing, null, empty, other types */
    CHECK(info_is("{\"type\":\"page\"}", 0, NGX_CDP_FMT_PAGE, "", ""));
    CHECK(info_is("{}", 0, NGX_CDP_FMT_UNKNOWN, "", ""));
    CHECK(info_is("{\"type\":\"page\",\"userId\":null,\"anonymousId\":\"\"}",
                  0, NGX_CDP_FMT_PAGE, "", ""));
    CHECK(info_is("{\"type\":\"page\",\"userId\":1.5,\"anonymousId\":true}",
                  0, NGX_CDP_FMT_PAGE, "", ""));
    CHECK(info_is("{\"type\":\"page\",\"userId\":[\"u\"],"
                  "\"anonymousId\":{\"a\":1}}", 0, NGX_CDP_FMT_PAGE, "", ""));

    /* types: exactly */
    CHECK(info_is("{\"type\":\"Track\",\"userId\":\"u\"}", 0,
                  NGX_CDP_FMT_UNKNOWN, "", "u"));
    CHECK(info_is("{\"type\":\"batch\",\"userId\":\"u\"}", 0,
                  NGX_CDP_FMT_UNKNOWN, "", "u"));
    CHECK(info_is("{\"type\":\"trac\"}", 0, NGX_CDP_FMT_UNKNOWN, "", ""));
    CHECK(info_is("{\"type\":\"tracks\"}", 0, NGX_CDP_FMT_UNKNOWN, "", ""));
    CHECK(info_is("{\"type\":1}", 0, NGX_CDP_FMT_UNKNOWN, "", ""));

    /* ids up to NGX_CDP_FMT_ID_MAX bytes */
    snprintf(buf, sizeof(buf), "{\"type\":\"page\",\"userId\":\"%s\","
             "\"anonymousId\":\"%s\"}", rep(0, "u", NGX_CDP_FMT_ID_MAX),
             rep(1, "a", NGX_CDP_FMT_ID_MAX + 1));
    CHECK(info_is(buf, 0, NGX_CDP_FMT_PAGE, "",
                  rep(0, "u", NGX_CDP_FMT_ID_MAX)));

    /* 100 two-byte characters are 200 bytes: kept */
    snprintf(buf, sizeof(buf), "{\"userId\":\"%s\"}",
             rep(0, "\xc3\xa9", 100));
    CHECK(info_is(buf, 0, NGX_CDP_FMT_UNKNOWN, "", rep(0, "\xc3\xa9", 100)));

    /* escapes are decoded */
    CHECK(info_is("{\"userId\":\"a\\\"b\\u00e9\"}", 0, NGX_CDP_FMT_UNKNOWN,
                  "", "a\"b\xc3\xa9"));

    /* malformed: -1, and nothing in info */
    CHECK(info_is("", -1, NGX_CDP_FMT_UNKNOWN, "", ""));
    CHECK(info_is("[{\"type\":\"page\"}]", -1, NGX_CDP_FMT_UNKNOWN, "", ""));
    CHECK(info_is("42", -1, NGX_CDP_FMT_UNKNOWN, "", ""));
    CHECK(info_is("\"page\"", -1, NGX_CDP_FMT_UNKNOWN, "", ""));
    CHECK(info_is("null", -1, NGX_CDP_FMT_UNKNOWN, "", ""));
    CHECK(info_is("{\"type\":\"page\"", -1, NGX_CDP_FMT_UNKNOWN, "", ""));
    CHECK(info_is("{\"type\":\"page\"}x", -1, NGX_CDP_FMT_UNKNOWN, "", ""));
    CHECK(info_is("{\"type\":\"page\",\"type\":\"track\"}", -1,
                  NGX_CDP_FMT_UNKNOWN, "", ""));
    CHECK(info_is("{\"userId\":\"\xff\"}", -1, NGX_CDP_FMT_UNKNOWN, "", ""));
    CHECK(info_is("{\"userId\":\"a\\u0000b\"}", -1, NGX_CDP_FMT_UNKNOWN,
                  "", ""));
    CHECK(info_is("{\"userId\":18446744073709551616}", -1,
                  NGX_CDP_FMT_UNKNOWN, "", ""));

    /* a raw NUL: not the end of the event */
    CHECK(info_of("{\"userId\":\"u\"}\0{", 17, &info) == -1
          && info.type == NGX_CDP_FMT_UNKNOWN && info.user_id[0] == '\0');
    CHECK(info_of("{\"userId\":\"u\"}  ", 16, &info) == 0
          && strcmp(info.user_id, "u") == 0);

    CHECK(ngx_cdp_fmt_info(NULL, 0, &info) == -1
          && info.type == NGX_CDP_FMT_UNKNOWN
          && info.anonymous_id[0] == '\0' && info.user_id[0] == '\0');
}


/* Segment */

static int
segment_is(const char **events, size_t n, const char *sent_at,
    const char *want)
{
    int                ok;
    char              *b;
    size_t             i, len;
    json_t            *j;
    u_char            *copy[MAX_EVENTS];
    ngx_cdp_fmt_str_t  s[MAX_EVENTS];

    for (i = 0; i < n; i++) {
        s[i].len = strlen(events[i]);
        copy[i] = ngx_cdp_dup(events[i], s[i].len);
        s[i].data = (const char *) copy[i];
    }

    len = 0x5a5a;
    b = ngx_cdp_fmt_segment(s, n, sent_at, &len);

    ok = b != NULL && len == strlen(want) && strcmp(b, want) == 0;

    if (!ok) {
        printf("  got:  %s\n  want: %s\n", b ? b : "(null)", want);
    }

    /* what it says is JSON (when the events are) */
    j = b ? json_loadb(b, len, JSON_REJECT_DUPLICATES, NULL) : NULL;
    ok = ok && json_is_object(j);
    json_decref(j);

    for (i = 0; i < n; i++) {
        ok = ok && ngx_cdp_canary_ok(copy[i], s[i].len);
        free(copy[i]);
    }

    ngx_cdp_fmt_free(b);

    return ok;
}


static void
test_segment(void)
{
    const char  *two[] = {
        "{\"type\":\"page\",\"anonymousId\":\"a\",\"name\":\"P\"}",
        "{\"type\":\"track\",\"userId\":\"u\",\"event\":\"E\","
        "\"properties\":{\"x\":[1,{\"y\":\"\\u00e9\\n\"}]}}"
    };
    const char  *bad[] = {
        "", "{\"a\":1}", "[1]", "{", "}", "{\"b\":2}", " \t{}\r\n", "  ",
        "{]"
    };

    CHECK(segment_is(two, 2, T0,
                     "{\"batch\":["
                     "{\"type\":\"page\",\"anonymousId\":\"a\",\"name\":\"P\"},"
                     "{\"type\":\"track\",\"userId\":\"u\",\"event\":\"E\","
                     "\"properties\":{\"x\":[1,{\"y\":\"\\u00e9\\n\"}]}}"
                     "],\"sentAt\":\"" T0 "\"}"));

    CHECK(segment_is(two, 1, T0,
                     "{\"batch\":[{\"type\":\"page\",\"anonymousId\":\"a\","
                     "\"name\":\"P\"}],\"sentAt\":\"" T0 "\"}"));

    CHECK(segment_is(two, 0, T0, "{\"batch\":[],\"sentAt\":\"" T0 "\"}"));
    CHECK(segment_is(NULL, 0, NULL, "{\"batch\":[]}"));
    CHECK(segment_is(two + 1, 1, NULL,
                     "{\"batch\":[{\"type\":\"track\",\"userId\":\"u\","
                     "\"event\":\"E\",\"properties\":{\"x\":[1,{\"y\":"
                     "\"\\u00e9\\n\"}]}}]}"));

    /*
     * entries that cannot be objects are left out, not the array's
     * syntax; white space around an object is JSON's, kept
     */
    CHECK(segment_is(bad, 8, "t",
                     "{\"batch\":[{\"a\":1},{\"b\":2}, \t{}\r\n],"
                     "\"sentAt\":\"t\"}"));
    CHECK(segment_is(bad, 1, "t", "{\"batch\":[],\"sentAt\":\"t\"}"));

    /* sentAt escaped: no quote, backslash or control character breaks it */
    CHECK(segment_is(NULL, 0, "a\"b\\c\x01\x1f\x7f\xc3\xa9Z",
                     "{\"batch\":[],\"sentAt\":"
                     "\"a\\\"b\\\\c\\u0001\\u001f\x7f??Z\"}"));
    CHECK(segment_is(NULL, 0, "", "{\"batch\":[],\"sentAt\":\"\"}"));
}


/* GA4 */

static void
test_ga4_page(void)
{
    const char  *e;

    /* the pixel's page view, whole */
    CHECK(ga4_1(PIXEL_PAGE) != NULL);
    CHECK(body_is("{\"client_id\":\"5f0c9d1e-77aa-4d2b-9a1e-3b1c0d9e8fe1\","
                  "\"timestamp_micros\":" T0_US ","
                  "\"events\":[{\"name\":\"page_view\",\"params\":{"
                  "\"page_location\":"
                  "\"https://shop.example/pricing?utm_source=news\","
                  "\"page_referrer\":\"https://ref.example/\","
                  "\"page_title\":\"Pricing\","
                  "\"path\":\"/pricing\",\"search\":\"?utm_source=news\","
                  "\"plan\":\"pro\",\"engagement_time_msec\":1}}]}"));
    CHECK(str_at("client_id", "5f0c9d1e-77aa-4d2b-9a1e-3b1c0d9e8fe1"));
    CHECK(int_at("timestamp_micros", 1795408851123000LL));
    CHECK(str_at("events.0.params.page_location",
                 "https://shop.example/pricing?utm_source=news"));
    CHECK(str_at("events.0.params.page_referrer", "https://ref.example/"));
    CHECK(str_at("events.0.params.page_title", "Pricing"));
    CHECK(int_at("events.0.params.engagement_time_msec", 1));
    CHECK(none_at("user_id") && none_at("user_properties"));

    /* from context.page, the title from the name */
    e = "{\"type\":\"page\",\"anonymousId\":\"a\",\"name\":\"Home\","
        "\"properties\":{\"url\":\"\",\"referrer\":7,\"x\":1},"
        "\"context\":{\"page\":{\"url\":\"https://a.example/\","
        "\"referrer\":\"https://r.example/\",\"title\":\"\"}}}";
    CHECK(ga4_1(e) != NULL);
    CHECK(body_is("{\"client_id\":\"a\",\"events\":[{\"name\":\"page_view\","
                  "\"params\":{\"page_location\":\"https://a.example/\","
                  "\"page_referrer\":\"https://r.example/\","
                  "\"page_title\":\"Home\",\"x\":1,"
                  "\"engagement_time_msec\":1}}]}"));

    /* nothing to say: no page_* params at all */
    CHECK(ga4_1("{\"type\":\"page\",\"anonymousId\":\"a\",\"context\":"
                "{\"page\":[1]}}") != NULL);
    CHECK(body_is("{\"client_id\":\"a\",\"events\":[{\"name\":\"page_view\","
                  "\"params\":{\"engagement_time_msec\":1}}]}"));

    /* GA4's own limits for these three */
    e = ev(0, "{\"type\":\"page\",\"anonymousId\":\"a\",\"properties\":{"
           "\"url\":\"https://x/%s\",\"referrer\":\"%s\",\"title\":\"%s\"}}",
           rep(1, "p", 1200), rep(2, "r", 500), rep(3, "\xc3\xa9", 400));
    CHECK(ga4_1(e) != NULL);
    CHECK(json_string_length(at(doc, "events.0.params.page_location"))
          == NGX_CDP_FMT_GA4_LOCATION_MAX);
    CHECK(json_string_length(at(doc, "events.0.params.page_referrer"))
          == NGX_CDP_FMT_GA4_REFERRER_MAX);
    CHECK(str_at("events.0.params.page_title", rep(0, "\xc3\xa9", 300)));

    /* screen */
    CHECK(ga4_1("{\"type\":\"screen\",\"userId\":\"u\",\"name\":\"Home\","
                "\"properties\":{\"tab\":\"a\"}}") != NULL);
    CHECK(body_is("{\"client_id\":\"u\",\"user_id\":\"u\",\"events\":[{"
                  "\"name\":\"screen_view\",\"params\":{\"screen_name\":"
                  "\"Home\",\"tab\":\"a\",\"engagement_time_msec\":1}}]}"));
}


static void
test_ga4_names(void)
{
    char  buf[128];

    CHECK(name_is("\"Order Completed\"", "order_completed"));
    CHECK(name_is("\"123 go!\"", "e_123_go"));
    CHECK(name_is("\"first_visit\"", "e_first_visit"));
    CHECK(name_is("\"First Visit\"", "e_first_visit"));
    CHECK(name_is("\"Session Start\"", "e_session_start"));
    CHECK(name_is("\"error\"", "e_error"));
    CHECK(name_is("\"errors\"", "errors"));
    CHECK(name_is("\"firebase_anything\"", "e_firebase_anything"));
    CHECK(name_is("\"Google Thing\"", "e_google_thing"));
    CHECK(name_is("\"ga_x\"", "e_ga_x"));
    CHECK(name_is("\"gax\"", "gax"));
    CHECK(name_is("\"page_view\"", "page_view"));
    CHECK(name_is("\"Order  -  Completed!!\"", "order_completed"));
    CHECK(name_is("\"__private__\"", "private"));
    CHECK(name_is("\"a_ b\"", "a__b"));
    CHECK(name_is("\"\xc3\x9c" "ber Cool\"", "ber_cool"));
    CHECK(name_is("\"_1\"", "e_1"));
    CHECK(name_is("\"\"", "e_event"));
    CHECK(name_is("\"!!!\"", "e_event"));
    CHECK(name_is("42", "e_event"));
    CHECK(name_is("null", "e_event"));

    /* 60 characters: cut to 40 */
    CHECK(name_is("\"Abcdefghij Abcdefghij Abcdefghij Abcdefghij "
                  "Abcdefghij Abcde\"",
                  "abcdefghij_abcdefghij_abcdefghij_abcdefg"));
    CHECK(strlen(track_name("\"Abcdefghij Abcdefghij Abcdefghij Abcdefghij "
                            "Abcdefghij Abcde\"")) == 40);

    /* a cut at a '_' drops it */
    snprintf(buf, sizeof(buf), "\"%s b\"", rep(0, "a", 39));
    CHECK(name_is(buf, rep(1, "a", 39)));

    /* a prefix, then the cut */
    snprintf(buf, sizeof(buf), "\"%s\"", rep(0, "1", 45));
    snprintf(buf + 64, 64, "e_%s", rep(1, "1", 38));
    CHECK(name_is(buf, buf + 64));

    snprintf(buf, sizeof(buf), "\"firebase_%s\"", rep(0, "x", 40));
    snprintf(buf + 64, 64, "e_firebase_%s", rep(1, "x", 29));
    CHECK(name_is(buf, buf + 64));

    /* the event name of the other types */
    CHECK(ga4_1("{\"type\":\"identify\",\"userId\":\"u\"}") != NULL);
    CHECK(str_at("events.0.name", "login"));
}


static void
test_ga4_params(void)
{
    size_t       i;
    char        *p;
    const char  *e;
    static char  buf[4096];

    /* names made valid; scalars only; booleans as numbers */
    e = "{\"type\":\"track\",\"anonymousId\":\"a\",\"event\":\"E\","
        "\"properties\":{\"Plan Type\":\"pro\",\"plan type\":\"dup\","
        "\"1st\":1,\"google_id\":\"g\",\"ga_x\":2,\"firebase_y\":3,"
        "\"!!!\":4,\"email\":\"a@b.example\",\"Phone\":\"+1\","
        "\"__under\":5,\"obj\":{\"a\":1},\"arr\":[1],\"nul\":null,"
        "\"yes\":true,\"no\":false,\"r\":1.5,\"neg\":-7,"
        "\"engagement_time_msec\":99,"
        "\"Abcdefghij Abcdefghij Abcdefghij Abcdefghij Abcdefghij\":6,"
        "\"first_visit\":7}}";
    CHECK(ga4_1(e) != NULL);
    CHECK(body_is("{\"client_id\":\"a\",\"events\":[{\"name\":\"e\","
                  "\"params\":{\"plan_type\":\"pro\",\"p_1st\":1,"
                  "\"p_google_id\":\"g\",\"p_ga_x\":2,\"p_firebase_y\":3,"
                  "\"under\":5,\"yes\":1,\"no\":0,\"r\":1.5,\"neg\":-7,"
                  "\"abcdefghij_abcdefghij_abcdefghij_abcdefg\":6,"
                  "\"first_visit\":7,\"engagement_time_msec\":1}}]}"));

    /* 30 properties: 24 of them and engagement_time_msec */
    p = buf;
    p += sprintf(p, "{\"type\":\"track\",\"anonymousId\":\"a\","
                 "\"event\":\"E\",\"properties\":{");

    for (i = 0; i < 30; i++) {
        p += sprintf(p, "%s\"p%zu\":%zu", i ? "," : "", i, i);
    }

    sprintf(p, "}}");

    CHECK(ga4_1(buf) != NULL);
    CHECK(size_at("events.0.params") == NGX_CDP_FMT_GA4_MAX_PARAMS);
    CHECK(int_at("events.0.params.p0", 0));
    CHECK(int_at("events.0.params.p23", 23));
    CHECK(none_at("events.0.params.p24"));
    CHECK(int_at("events.0.params.engagement_time_msec", 1));

    /* a page's page_* params count too */
    p = buf;
    p += sprintf(p, "{\"type\":\"page\",\"anonymousId\":\"a\","
                 "\"properties\":{\"url\":\"u\",\"title\":\"t\"");

    for (i = 0; i < 30; i++) {
        p += sprintf(p, ",\"p%zu\":%zu", i, i);
    }

    sprintf(p, ",\"referrer\":\"r\"}}");

    CHECK(ga4_1(buf) != NULL);
    CHECK(size_at("events.0.params") == NGX_CDP_FMT_GA4_MAX_PARAMS);
    CHECK(str_at("events.0.params.page_referrer", "r"));
    CHECK(int_at("events.0.params.p20", 20));
    CHECK(none_at("events.0.params.p21"));

    /* string values: 100 characters, never half of one */
    e = ev(0, "{\"type\":\"track\",\"anonymousId\":\"a\",\"event\":\"E\","
           "\"properties\":{\"two\":\"%s\xc3\xa9\xc3\xa9\","
           "\"three\":\"%s\",\"four\":\"%s\",\"ok\":\"%s\"}}",
           rep(0, "a", 99), rep(1, "\xe2\x82\xac", 150),
           rep(2, "\xf0\x9f\x98\x80", 101), rep(3, "b", 100));
    CHECK(ga4_1(e) != NULL);

    snprintf(buf, sizeof(buf), "%s\xc3\xa9", rep(0, "a", 99));
    CHECK(str_at("events.0.params.two", buf));
    CHECK(str_at("events.0.params.three", rep(0, "\xe2\x82\xac", 100)));
    CHECK(str_at("events.0.params.four", rep(0, "\xf0\x9f\x98\x80", 100)));
    CHECK(str_at("events.0.params.ok", rep(0, "b", 100)));

    /* escapes in, escapes out */
    CHECK(ga4_1("{\"type\":\"track\",\"anonymousId\":\"a\\\"\",\"event\":"
                "\"E\",\"properties\":{\"q\":\"x\\\"y\\\\z\\n\\u0001\"}}")
          != NULL);
    CHECK(body_is("{\"client_id\":\"a\\\"\",\"events\":[{\"name\":\"e\","
                  "\"params\":{\"q\":\"x\\\"y\\\\z\\n\\u0001\","
                  "\"engagement_time_msec\":1}}]}"));
}


static void
test_ga4_identify(void)
{
    size_t       i;
    char        *p;
    const char  *e[3];
    static char  buf[4096];

    e[0] = "{\"type\":\"identify\",\"userId\":\"u-2002\","
           "\"anonymousId\":\"a-9\",\"timestamp\":\"" T0 "\","
           "\"traits\":{\"plan\":\"team\",\"seats\":3,\"vip\":true,"
           "\"trial\":false,\"score\":0.5,\"name\":\"Ann\","
           "\"First Name\":\"Ann\",\"email\":\"x\",\"first_visit_time\":1,"
           "\"Customer Tier Of The Account\":\"gold\","
           "\"long\":\"abcdefghijklmnopqrstuvwxyz0123456789ABCDEF\","
           "\"nested\":{\"a\":1},\"none\":null,\"Plan\":\"dup\"}}";

    CHECK(ga4_1(e[0]) != NULL);
    CHECK(body_is("{\"client_id\":\"a-9\",\"user_id\":\"u-2002\","
                  "\"timestamp_micros\":" T0_US ","
                  "\"user_properties\":{\"plan\":{\"value\":\"team\"},"
                  "\"seats\":{\"value\":3},\"vip\":{\"value\":1},"
                  "\"trial\":{\"value\":0},\"score\":{\"value\":0.5},"
                  "\"p_first_visit_time\":{\"value\":1},"
                  "\"customer_tier_of_the_acc\":{\"value\":\"gold\"},"
                  "\"long\":{\"value\":"
                  "\"abcdefghijklmnopqrstuvwxyz0123456789\"}},"
                  "\"events\":[{\"name\":\"login\",\"params\":{"
                  "\"method\":\"ngx_cdp\",\"engagement_time_msec\":1}}]}"));

    /* a later identify's value replaces, in its place */
    e[1] = "{\"type\":\"identify\",\"anonymousId\":\"a-9\","
           "\"timestamp\":\"" T0 "\","
           "\"traits\":{\"new\":\"n\",\"seats\":5,\"plan\":\"enterprise\"}}";
    e[2] = "{\"type\":\"identify\",\"anonymousId\":\"a-9\","
           "\"timestamp\":\"" T0 "\",\"traits\":[1]}";

    CHECK(ga4(e, 3) != NULL);
    CHECK(str_at("user_id", "u-2002"));
    CHECK(str_at("user_properties.plan.value", "enterprise"));
    CHECK(int_at("user_properties.seats.value", 5));
    CHECK(str_at("user_properties.new.value", "n"));
    CHECK(size_at("user_properties") == 9);
    CHECK(size_at("events") == 3);
    CHECK(body != NULL
          && strstr(body, "{\"plan\":{\"value\":\"enterprise\"},"
                          "\"seats\":{\"value\":5},") != NULL
          && strstr(body, "\"value\":\"abcdefghijklmnopqrstuvwxyz0123456789"
                          "\"},\"new\":{") != NULL);

    /* at most 25 */
    p = buf;
    p += sprintf(p, "{\"type\":\"identify\",\"userId\":\"u\",\"traits\":{");

    for (i = 0; i < 30; i++) {
        p += sprintf(p, "%s\"t%zu\":%zu", i ? "," : "", i, i);
    }

    sprintf(p, "}}");

    e[0] = buf;
    e[1] = "{\"type\":\"identify\",\"userId\":\"u\",\"traits\":{"
           "\"t3\":\"three\",\"z\":1}}";

    CHECK(ga4(e, 2) != NULL);
    CHECK(size_at("user_properties") == NGX_CDP_FMT_GA4_MAX_USER_PROPS);
    CHECK(int_at("user_properties.t24.value", 24));
    CHECK(none_at("user_properties.t25") && none_at("user_properties.z"));
    CHECK(str_at("user_properties.t3.value", "three"));

    /* no traits: no user_properties */
    CHECK(ga4_1("{\"type\":\"identify\",\"userId\":\"u\",\"traits\":"
                "{\"email\":\"e\",\"o\":{}}}") != NULL);
    CHECK(none_at("user_properties") && str_at("events.0.name", "login"));
}


static void
test_ga4_group_alias(void)
{
    const char  *e[4];

    CHECK(ga4_1("{\"type\":\"group\",\"userId\":\"u-1\",\"groupId\":"
                "\"acme\",\"traits\":{\"plan\":\"x\"}}") != NULL);
    CHECK(body_is("{\"client_id\":\"u-1\",\"user_id\":\"u-1\",\"events\":[{"
                  "\"name\":\"join_group\",\"params\":{\"group_id\":\"acme\","
                  "\"engagement_time_msec\":1}}]}"));

    CHECK(ga4_1("{\"type\":\"group\",\"anonymousId\":\"a\","
                "\"groupId\":42}") != NULL);
    CHECK(str_at("events.0.params.group_id", "42"));

    CHECK(ga4_1("{\"type\":\"group\",\"anonymousId\":\"a\"}") != NULL);
    CHECK(str_at("events.0.name", "join_group")
          && none_at("events.0.params.group_id"));

    /* nothing to send: len 0 */
    e[0] = "{\"type\":\"alias\",\"userId\":\"u\",\"previousId\":\"a\"}";
    e[1] = "{\"type\":\"alias\",\"userId\":\"v\",\"previousId\":\"u\"}";
    e[2] = "[{\"type\":\"page\",\"anonymousId\":\"a\"}]";
    e[3] = "{\"type\":\"delete\",\"anonymousId\":\"a\"}";

    CHECK(ga4(e, 2) == NULL && body == NULL && body_len == 0);
    CHECK(ga4(e, 4) == NULL && body == NULL && body_len == 0);
    CHECK(ga4(e + 2, 1) == NULL && body == NULL && body_len == 0);
    CHECK(ga4(e, 0) == NULL && body == NULL && body_len == 0);

    /* no id at all */
    CHECK(ga4_1("{\"type\":\"page\",\"name\":\"P\"}") == NULL
          && body_len == 0);

    /* an alias among others: skipped, its userId taken */
    e[0] = "{\"type\":\"page\",\"anonymousId\":\"a\"}";
    e[1] = "{\"type\":\"alias\",\"userId\":\"u-9\",\"previousId\":\"a\"}";
    e[2] = "not json";

    CHECK(ga4(e, 3) != NULL);
    CHECK(body_is("{\"client_id\":\"a\",\"user_id\":\"u-9\",\"events\":[{"
                  "\"name\":\"page_view\",\"params\":{"
                  "\"engagement_time_msec\":1}}]}"));
}


static void
test_ga4_ids(void)
{
    const char  *e[3];

    /* client_id: the first anonymousId; user_id: the last userId */
    e[0] = "{\"type\":\"page\",\"anonymousId\":\"a1\"}";
    e[1] = "{\"type\":\"track\",\"event\":\"x\",\"anonymousId\":\"a1\","
           "\"userId\":\"u-1\"}";
    e[2] = "{\"type\":\"identify\",\"anonymousId\":\"a1\",\"userId\":\"u-2\"}";

    CHECK(ga4(e, 3) != NULL);
    CHECK(str_at("client_id", "a1") && str_at("user_id", "u-2"));
    CHECK(size_at("events") == 3);

    CHECK(ga4(e, 1) != NULL);
    CHECK(str_at("client_id", "a1") && none_at("user_id"));

    /* no anonymousId anywhere: the first userId, integers too */
    e[0] = "{\"type\":\"track\",\"event\":\"x\",\"userId\":7}";
    e[1] = "{\"type\":\"track\",\"event\":\"y\",\"userId\":\"u-8\"}";

    CHECK(ga4(e, 2) != NULL);
    CHECK(str_at("client_id", "7") && str_at("user_id", "u-8"));

    /* an anonymousId after a userId still wins */
    e[0] = "{\"type\":\"track\",\"event\":\"x\",\"userId\":\"u\"}";
    e[1] = "{\"type\":\"track\",\"event\":\"y\",\"anonymousId\":\"a\"}";

    CHECK(ga4(e, 2) != NULL);
    CHECK(str_at("client_id", "a") && str_at("user_id", "u"));

    /* an id too long is none */
    e[0] = ev(0, "{\"type\":\"page\",\"anonymousId\":\"%s\","
              "\"userId\":\"u\"}", rep(0, "a", NGX_CDP_FMT_ID_MAX + 1));

    CHECK(ga4(e, 1) != NULL);
    CHECK(str_at("client_id", "u"));
}


static void
test_ga4_time(void)
{
    size_t       i;
    const char  *e[NGX_CDP_FMT_GA4_MAX_EVENTS + 5];

    /* an event at another time has its own */
    e[0] = "{\"type\":\"page\",\"anonymousId\":\"a\",\"timestamp\":\"" T0
           "\"}";
    e[1] = "{\"type\":\"track\",\"event\":\"x\",\"anonymousId\":\"a\","
           "\"timestamp\":\"2026-11-23T04:40:51.123Z\"}";
    e[2] = "{\"type\":\"track\",\"event\":\"y\",\"anonymousId\":\"a\","
           "\"timestamp\":\"2026-11-23T05:40:52.5+01:00\"}";

    CHECK(ga4(e, 3) != NULL);
    CHECK(int_at("timestamp_micros", 1795408851123000LL));
    CHECK(none_at("events.0.timestamp_micros"));
    CHECK(none_at("events.1.timestamp_micros"));
    CHECK(int_at("events.2.timestamp_micros", 1795408852500000LL));
    CHECK(body != NULL
          && strstr(body, "\"engagement_time_msec\":1},"
                          "\"timestamp_micros\":1795408852500000}]}")
             != NULL);

    /* the first event that renders sets it; else receivedAt */
    e[0] = "{\"type\":\"alias\",\"userId\":\"u\",\"previousId\":\"a\","
           "\"timestamp\":\"2000-01-01T00:00:00Z\"}";
    e[1] = "{\"type\":\"page\",\"anonymousId\":\"a\",\"timestamp\":\"bad\","
           "\"receivedAt\":\"1970-01-01T00:00:00.000001Z\"}";

    CHECK(ga4(e, 2) != NULL);
    CHECK(int_at("timestamp_micros", 1));

    /* then originalTimestamp, and fraction digits past the sixth cut */
    CHECK(ga4_1("{\"type\":\"page\",\"anonymousId\":\"a\","
                "\"timestamp\":null,\"receivedAt\":\"" T0 "\","
                "\"originalTimestamp\":\"2026-11-23t04:40:51.123456789z\"}")
          != NULL);
    CHECK(int_at("timestamp_micros", 1795408851123456LL));

    /* a leap second is the next second; leap days */
    CHECK(ga4_1("{\"type\":\"page\",\"anonymousId\":\"a\","
                "\"timestamp\":\"2016-12-31T23:59:60Z\"}") != NULL);
    CHECK(int_at("timestamp_micros", 1483228800000000LL));
    CHECK(ga4_1("{\"type\":\"page\",\"anonymousId\":\"a\","
                "\"timestamp\":\"2024-02-29T00:00:00-23:59\"}") != NULL);
    CHECK(int_at("timestamp_micros", 1709251140000000LL));

    /* none that parses, or before 1970: none */
    CHECK(ga4_1("{\"type\":\"page\",\"anonymousId\":\"a\","
                "\"timestamp\":\"2023-02-29T00:00:00Z\","
                "\"receivedAt\":\"2026-11-23T04:40:51\"}") != NULL);
    CHECK(none_at("timestamp_micros"));
    CHECK(ga4_1("{\"type\":\"page\",\"anonymousId\":\"a\","
                "\"timestamp\":\"1969-12-31T23:59:59.999Z\","
                "\"receivedAt\":\"" T0 "\"}") != NULL);
    CHECK(none_at("timestamp_micros"));
    CHECK(ga4_1("{\"type\":\"page\",\"anonymousId\":\"a\","
                "\"timestamp\":1795408851}") != NULL);
    CHECK(none_at("timestamp_micros"));

    /* without a first time, the others have their own */
    e[0] = "{\"type\":\"page\",\"anonymousId\":\"a\"}";
    e[1] = "{\"type\":\"page\",\"anonymousId\":\"a\","
           "\"timestamp\":\"" T0 "\"}";

    CHECK(ga4(e, 2) != NULL);
    CHECK(none_at("timestamp_micros"));
    CHECK(int_at("events.1.timestamp_micros", 1795408851123000LL));

    /* 25 events at most */
    for (i = 0; i < NGX_CDP_FMT_GA4_MAX_EVENTS + 5; i++) {
        e[i] = "{\"type\":\"track\",\"event\":\"x\",\"anonymousId\":\"a\"}";
    }

    e[NGX_CDP_FMT_GA4_MAX_EVENTS + 4] =
        "{\"type\":\"track\",\"event\":\"x\",\"userId\":\"late\"}";

    CHECK(ga4(e, NGX_CDP_FMT_GA4_MAX_EVENTS + 5) != NULL);
    CHECK(size_at("events") == NGX_CDP_FMT_GA4_MAX_EVENTS);
    CHECK(str_at("user_id", "late"));
}


/*
 * Memory running out anywhere in jansson: NULL with len 1, or the whole
 * body, or (jansson's parser reports some failed allocations as syntax
 * errors) a body without that event; never a leak.  ngx_cdp_fmt_info()
 * says -1.  Only the test sets jansson's allocator.
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
    int                 fails, oks, other, misread, rc;
    long                n;
    char               *b, *full;
    size_t              i, len, full_len;
    ngx_cdp_fmt_info_t  info;
    ngx_cdp_fmt_str_t   s[4];

    static const char  *e[] = {
        PIXEL_PAGE,
        "{\"type\":\"identify\",\"userId\":\"u\",\"anonymousId\":\"a\","
        "\"traits\":{\"plan\":\"team\",\"seats\":3,\"x\":\"y\"},"
        "\"timestamp\":\"2026-11-23T04:40:52Z\"}",
        "{\"type\":\"track\",\"event\":\"Order Completed\","
        "\"anonymousId\":\"a\",\"properties\":{\"revenue\":42.5,"
        "\"currency\":\"EUR\",\"long\":\"" "\xc3\xa9\xc3\xa9\xc3\xa9" "\"}}",
        "{\"type\":\"group\",\"userId\":\"u\",\"groupId\":42}"
    };

    for (i = 0; i < 4; i++) {
        s[i].data = e[i];
        s[i].len = strlen(e[i]);
    }

    full = ngx_cdp_fmt_ga4(s, 4, &full_len);
    CHECK(full != NULL);

    if (full == NULL) {
        return;
    }

    fails = 0;
    oks = 0;
    other = 0;
    misread = 0;

    for (n = 0; n < 10000; n++) {
        oom_left = n;
        json_set_alloc_funcs(oom_malloc, free);

        len = 0x5a5a;
        b = ngx_cdp_fmt_ga4(s, 4, &len);

        json_set_alloc_funcs(malloc, free);

        if (b == NULL && len == 1) {
            fails++;

        } else if (b != NULL && len == full_len
                   && memcmp(b, full, len + 1) == 0)
        {
            oks++;
            ngx_cdp_fmt_free(b);
            break;

        } else if ((b != NULL && strlen(b) == len) || (b == NULL && len == 0))
        {
            misread++;

        } else {
            printf("  after %ld allocations: %s %zu\n", n, b ? b : "-", len);
            other++;
        }

        ngx_cdp_fmt_free(b);
    }

    CHECK(oks == 1);
    CHECK(fails > 20);
    CHECK(other == 0);

    ngx_cdp_fmt_free(full);

    /* info */

    fails = 0;
    oks = 0;

    for (n = 0; n < 10000; n++) {
        oom_left = n;
        json_set_alloc_funcs(oom_malloc, free);

        rc = ngx_cdp_fmt_info(s[0].data, s[0].len, &info);

        json_set_alloc_funcs(malloc, free);

        if (rc == 0) {
            oks = info.type == NGX_CDP_FMT_PAGE
                  && strcmp(info.anonymous_id,
                            "5f0c9d1e-77aa-4d2b-9a1e-3b1c0d9e8fe1") == 0;
            break;
        }

        if (rc == -1 && info.type == NGX_CDP_FMT_UNKNOWN
            && info.anonymous_id[0] == '\0')
        {
            fails++;
        }
    }

    CHECK(oks == 1 && fails == n);
}


int
main(void)
{
    test_info();
    test_segment();
    test_ga4_page();
    test_ga4_names();
    test_ga4_params();
    test_ga4_identify();
    test_ga4_group_alias();
    test_ga4_ids();
    test_ga4_time();
    test_oom();

    reset();

    return ngx_cdp_summary();
}
