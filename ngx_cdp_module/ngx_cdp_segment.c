
/*
 * ngx_cdp: the Segment-compatible HTTP Tracking API (see
 * ngx_cdp_segment.h).
 *
 * Two passes over the messages: the first only reads the parsed tree and
 * stops at the first error, so a bad message late in a batch costs no
 * allocation; the second changes the tree into what is stored and copies
 * each message's strings into one block of its own.  Memory running out
 * in the second pass is the only error left there.
 */


#include "ngx_cdp_segment.h"
#include "ngx_cdp_consent.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>


#define NGX_CDP_SEGMENT_LOAD_FLAGS  (JSON_REJECT_DUPLICATES | JSON_DECODE_ANY)

/* what the second pass may add to a message, on top of the merged parts */
#define NGX_CDP_SEGMENT_SLACK       128

#define NGX_CDP_SEGMENT_INT_LEN     24      /* "-9223372036854775808" */


/*
 * Where a stored copy is written before its block is allocated: grown as
 * needed and kept (a worker parses one request at a time).
 */
static char    *ngx_cdp_segment_scratch;
static size_t   ngx_cdp_segment_scratch_size;


/*
 * jansson's memory during a parse.  A batch's tree is thousands of small
 * blocks (about twelve times the body's size), all dropped at the end of
 * the parse: they are cut from an arena, and dropped by rewinding it,
 * which skips json_decref's walk and the frees (with the mallocs, a third
 * of the cost of an API request).  The arena is a list of chunks: the
 * first is kept between parses, the others (a large batch) are freed at
 * its end.  jansson's allocator is process-wide: this one is malloc and
 * free outside a parse, so another user of jansson in the process is not
 * affected; it is installed only over jansson's own (another module's
 * allocator is left alone, and then so is the arena).  Sanitizer builds
 * keep jansson's allocator, so that they see every block.
 */

#define NGX_CDP_SEGMENT_CHUNK       (512 * 1024)
#define NGX_CDP_SEGMENT_CHUNKS_MAX  32          /* then malloc() */

#if defined(__SANITIZE_ADDRESS__)
#define NGX_CDP_SEGMENT_NO_ARENA    1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(memory_sanitizer)
#define NGX_CDP_SEGMENT_NO_ARENA    1
#endif
#endif

typedef struct ngx_cdp_segment_chunk_s  ngx_cdp_segment_chunk_t;

struct ngx_cdp_segment_chunk_s {
    ngx_cdp_segment_chunk_t  *next;
    char                     *end;
    /* the blocks follow, at malloc's alignment */
};

#define NGX_CDP_SEGMENT_CHUNK_HEAD                                            \
    ((sizeof(ngx_cdp_segment_chunk_t) + 15) & ~(size_t) 15)

typedef struct {
    ngx_cdp_segment_chunk_t  *first;
    ngx_cdp_segment_chunk_t  *last;     /* where blocks are cut */
    char                     *pos;
    unsigned int              chunks;
    int                       active;
    int                       spilled;  /* a block came from malloc() */
} ngx_cdp_segment_arena_t;

static ngx_cdp_segment_arena_t  ngx_cdp_segment_arena;


typedef struct {
    json_t        *context;             /* a batch's, or NULL */
    json_t        *integrations;
    json_t        *sent_at;
    json_t        *received_at;
} ngx_cdp_segment_batch_t;


static int ngx_cdp_segment_fail(ngx_cdp_segment_error_t *err, int status,
    const char *code, long index, const char *field, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 6, 7)))
#endif
    ;
static int ngx_cdp_segment_json_error(ngx_cdp_segment_error_t *err,
    const u_char *body, size_t len, const json_error_t *jerr);
static int ngx_cdp_segment_nul(ngx_cdp_segment_error_t *err,
    const u_char *body, const u_char *nul);
static json_t *ngx_cdp_segment_get(json_t *obj, const char *key);
static int ngx_cdp_segment_name_clean(const u_char *p, size_t len);
static int ngx_cdp_segment_consent(json_t *ctx);
static int ngx_cdp_segment_id(json_t *v);
static int ngx_cdp_segment_item_type(json_t *msg, long index,
    ngx_cdp_segment_error_t *err);
static int ngx_cdp_segment_check(json_t *msg, int type, long index,
    ngx_cdp_segment_error_t *err);
static int ngx_cdp_segment_check_time(json_t *obj, const char *key,
    long index, ngx_cdp_segment_error_t *err);
static int ngx_cdp_segment_digits(const u_char *p, size_t n, int *v);
static int64_t ngx_cdp_segment_days(int y, int m, int d);
static size_t ngx_cdp_segment_dumpb(const json_t *json, char *buf,
    size_t size);
static void ngx_cdp_segment_dump(const json_t *json, char *buf, size_t size,
    size_t *len);
static int ngx_cdp_segment_int(char *num, json_int_t v);
static void ngx_cdp_segment_dump_str(const char *s, size_t n, char *buf,
    size_t size, size_t *len);
static int ngx_cdp_segment_id_to_string(json_t *msg, const char *key);
static int ngx_cdp_segment_merge(json_t *msg, const char *key,
    json_t *from);
static int ngx_cdp_segment_strip(json_t *obj, const char *key);
static int ngx_cdp_segment_build(json_t *msg, int type,
    const ngx_cdp_segment_batch_t *b, ngx_cdp_segment_msg_t *out);
static const char *ngx_cdp_segment_str(json_t *obj, const char *key);
static char *ngx_cdp_segment_copy(char **p, const char *s);
#ifndef NGX_CDP_SEGMENT_NO_ARENA
static ngx_cdp_segment_chunk_t *ngx_cdp_segment_chunk(size_t need);
static void *ngx_cdp_segment_alloc(size_t size);
static void ngx_cdp_segment_release(void *p);
#endif
static int ngx_cdp_segment_arena_begin(void);
static int ngx_cdp_segment_arena_end(void);
static void ngx_cdp_segment_arena_drop(void);


static const char  *ngx_cdp_segment_names[] = {
    "track", "identify", "page", "screen", "group", "alias", "batch"
};

#define NGX_CDP_SEGMENT_NTYPES                                                \
    (sizeof(ngx_cdp_segment_names) / sizeof(ngx_cdp_segment_names[0]))


int
ngx_cdp_segment_endpoint(const u_char *name, size_t len)
{
    size_t  i;

    for (i = 0; i < NGX_CDP_SEGMENT_NTYPES; i++) {
        if (len == strlen(ngx_cdp_segment_names[i])
            && memcmp(name, ngx_cdp_segment_names[i], len) == 0)
        {
            return (int) i;
        }
    }

    if (len == 6 && memcmp(name, "import", 6) == 0) {
        return NGX_CDP_SEGMENT_BATCH;
    }

    return -1;
}


const char *
ngx_cdp_segment_type_name(int type)
{
    if (type < 0 || (size_t) type >= NGX_CDP_SEGMENT_NTYPES) {
        return "unknown";
    }

    return ngx_cdp_segment_names[type];
}


/* time */

static int
ngx_cdp_segment_digits(const u_char *p, size_t n, int *v)
{
    size_t  i;

    *v = 0;

    for (i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return 0;
        }

        *v = *v * 10 + (p[i] - '0');
    }

    return 1;
}


/* days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant) */

static int64_t
ngx_cdp_segment_days(int y, int m, int d)
{
    int64_t  era, yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;

    return era * 146097 + doe - 719468;
}


int
ngx_cdp_segment_time_us(const u_char *p, size_t len, int64_t *us)
{
    int          year, month, day, hour, min, sec, oh, om, mdays, frac;
    size_t       i, nfrac;
    int64_t      t, off;
    static const int  days_in[] = {
        31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31
    };

    /* "YYYY-MM-DDThh:mm:ssZ" is the shortest */

    if (len < 20) {
        return 0;
    }

    if (!ngx_cdp_segment_digits(p, 4, &year) || p[4] != '-'
        || !ngx_cdp_segment_digits(p + 5, 2, &month) || p[7] != '-'
        || !ngx_cdp_segment_digits(p + 8, 2, &day)
        || (p[10] != 'T' && p[10] != 't')
        || !ngx_cdp_segment_digits(p + 11, 2, &hour) || p[13] != ':'
        || !ngx_cdp_segment_digits(p + 14, 2, &min) || p[16] != ':'
        || !ngx_cdp_segment_digits(p + 17, 2, &sec))
    {
        return 0;
    }

    if (month < 1 || month > 12 || hour > 23 || min > 59 || sec > 60) {
        return 0;
    }

    mdays = days_in[month - 1];

    if (month == 2
        && ((year % 4 == 0 && year % 100 != 0) || year % 400 == 0))
    {
        mdays = 29;
    }

    if (day < 1 || day > mdays) {
        return 0;
    }

    i = 19;
    frac = 0;

    if (p[i] == '.') {
        i++;

        for (nfrac = 0; i < len && p[i] >= '0' && p[i] <= '9'; nfrac++) {
            if (nfrac < 6) {
                frac = frac * 10 + (p[i] - '0');
            }

            i++;
        }

        if (nfrac == 0 || nfrac > 9) {
            return 0;
        }

        for ( /* void */ ; nfrac < 6; nfrac++) {
            frac *= 10;
        }
    }

    if (i == len) {
        return 0;
    }

    if (p[i] == 'Z' || p[i] == 'z') {
        if (i + 1 != len) {
            return 0;
        }

        off = 0;

    } else if (p[i] == '+' || p[i] == '-') {
        if (len - i != 6
            || !ngx_cdp_segment_digits(p + i + 1, 2, &oh) || p[i + 3] != ':'
            || !ngx_cdp_segment_digits(p + i + 4, 2, &om)
            || oh > 23 || om > 59)
        {
            return 0;
        }

        off = (int64_t) oh * 3600 + om * 60;

        if (p[i] == '-') {
            off = -off;
        }

    } else {
        return 0;
    }

    t = ngx_cdp_segment_days(year, month, day) * 86400
        + (int64_t) hour * 3600 + min * 60 + sec - off;

    *us = t * 1000000 + frac;

    return 1;
}


int
ngx_cdp_segment_time(const u_char *p, size_t len, int64_t *ms)
{
    int64_t  us;

    if (!ngx_cdp_segment_time_us(p, len, &us)) {
        return 0;
    }

    /* the fraction's first three digits, also before 1970: a floor */
    *ms = (us >= 0) ? us / 1000 : -((-us + 999) / 1000);

    return 1;
}


/* errors */

static int
ngx_cdp_segment_fail(ngx_cdp_segment_error_t *err, int status,
    const char *code, long index, const char *field, const char *fmt, ...)
{
    va_list  args;

    err->status = status;
    err->code = code;
    err->index = index;
    err->position = -1;
    err->line = -1;
    err->column = -1;

    if (index >= 0) {
        snprintf(err->field, sizeof(err->field), "batch[%ld]%s%s", index,
                 field[0] ? "." : "", field);

    } else {
        snprintf(err->field, sizeof(err->field), "%s", field);
    }

    va_start(args, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, args);
    va_end(args);

    return status;
}


static int
ngx_cdp_segment_json_error(ngx_cdp_segment_error_t *err, const u_char *body,
    size_t len, const json_error_t *jerr)
{
    long  pos;

    pos = jerr->position;

    if (json_error_code(jerr) == json_error_invalid_utf8
        && pos >= 0 && (size_t) pos < len)
    {
        /* jansson's column counts the characters before the bad byte */

        ngx_cdp_segment_fail(err, 400, "invalid_utf8", -1, "",
                             "invalid UTF-8 at byte %ld (line %d, "
                             "column %d): byte 0x%02x starts no valid "
                             "sequence", pos, jerr->line, jerr->column + 1,
                             body[pos]);
        err->column = jerr->column + 1;

    } else if (json_error_code(jerr) == json_error_null_character) {
        ngx_cdp_segment_fail(err, 400, "invalid_json", -1, "",
                             "invalid JSON: \\u0000 (NUL) in a string is "
                             "not allowed (line %d, column %d, byte %ld)",
                             jerr->line, jerr->column, pos);
        err->column = jerr->column;

    } else {
        ngx_cdp_segment_fail(err, 400, "invalid_json", -1, "",
                             "invalid JSON: %s (line %d, column %d, "
                             "byte %ld)", jerr->text, jerr->line,
                             jerr->column, pos);
        err->column = jerr->column;
    }

    err->position = pos;
    err->line = jerr->line;

    return 400;
}


/*
 * jansson takes a raw NUL outside a string for the end of the input
 * ("{\"a\":1\0}" loads), so the body is searched for one first
 */

static int
ngx_cdp_segment_nul(ngx_cdp_segment_error_t *err, const u_char *body,
    const u_char *nul)
{
    long           line, column;
    const u_char  *p;

    line = 1;
    column = 0;

    for (p = body; p <= nul; p++) {
        if (p < nul && *p == '\n') {
            line++;
            column = 0;

        } else if ((*p & 0xc0) != 0x80) {
            column++;
        }
    }

    ngx_cdp_segment_fail(err, 400, "invalid_json", -1, "",
                         "invalid JSON: NUL byte at byte %ld (line %ld, "
                         "column %ld)", (long) (nul - body), line, column);

    err->position = nul - body;
    err->line = line;
    err->column = column;

    return 400;
}


size_t
ngx_cdp_segment_error_json(u_char *dst, const ngx_cdp_segment_error_t *err)
{
    int          n;
    char         num[4 * 24 + 48];
    u_char      *p;
    const char  *code;

    static const char  head[] = "{\"success\":false,\"error\":";

    code = err->code ? err->code : "internal";

    p = dst;
    memcpy(p, head, sizeof(head) - 1);
    p += sizeof(head) - 1;
    p = ngx_cdp_json_str(p, (const u_char *) code, strlen(code));

    memcpy(p, ",\"message\":", 11);
    p += 11;
    p = ngx_cdp_json_str(p, (const u_char *) err->message,
                         strnlen(err->message, sizeof(err->message)));

    if (err->field[0]) {
        memcpy(p, ",\"field\":", 9);
        p += 9;
        p = ngx_cdp_json_str(p, (const u_char *) err->field,
                             strnlen(err->field, sizeof(err->field)));
    }

    if (err->index >= 0) {
        n = snprintf(num, sizeof(num), ",\"index\":%ld", err->index);
        memcpy(p, num, n);
        p += n;
    }

    if (err->position >= 0) {
        n = snprintf(num, sizeof(num),
                     ",\"position\":%ld,\"line\":%ld,\"column\":%ld",
                     err->position, err->line, err->column);
        memcpy(p, num, n);
        p += n;
    }

    *p++ = '}';

    return p - dst;
}


/* validation: the first pass, reading only */

/* context.consent.categoryPreferences: see ngx_cdp_segment_msg_t */

static int
ngx_cdp_segment_consent(json_t *ctx)
{
    int          bits;
    size_t       i;
    json_t      *prefs, *v;
    const char  *key;

    static const struct {
        const char  *name;
        int          bit;
    } names[] = {
        { "analytics", NGX_CDP_CONSENT_ANALYTICS },
        { "marketing", NGX_CDP_CONSENT_MARKETING },
        { "advertising", NGX_CDP_CONSENT_MARKETING },
        { "personalization", NGX_CDP_CONSENT_PERSONALIZATION },
        { "personalisation", NGX_CDP_CONSENT_PERSONALIZATION },
        { "functional", NGX_CDP_CONSENT_PERSONALIZATION }
    };

    if (ctx == NULL || !json_is_object(ctx)) {
        return -1;
    }

    prefs = ngx_cdp_segment_get(ctx, "consent");
    prefs = (prefs && json_is_object(prefs))
            ? ngx_cdp_segment_get(prefs, "categoryPreferences") : NULL;

    if (prefs == NULL || !json_is_object(prefs)) {
        return -1;
    }

    bits = 0;

    json_object_foreach(prefs, key, v) {
        if (!json_is_true(v)) {
            continue;
        }

        for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
            if (strcasecmp(key, names[i].name) == 0) {
                bits |= names[i].bit;
            }
        }
    }

    return bits;
}


/*
 * One rule at both doors (the pixel's e= too, ngx_cdp_query.c): an event's
 * or a property's name has no control character (U+0000 to U+001F,
 * U+007F); values may have any but NUL.
 */

static int
ngx_cdp_segment_name_clean(const u_char *p, size_t len)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        if (p[i] < 0x20 || p[i] == 0x7f) {
            return 0;
        }
    }

    return 1;
}


/* the value of key, NULL when absent or null */

static json_t *
ngx_cdp_segment_get(json_t *obj, const char *key)
{
    json_t  *v;

    v = json_object_get(obj, key);

    if (v == NULL || json_is_null(v)) {
        return NULL;
    }

    return v;
}


/* 1: a non-empty string or an integer; 0: absent, null or ""; -1: other */

static int
ngx_cdp_segment_id(json_t *v)
{
    if (v == NULL || json_is_null(v)) {
        return 0;
    }

    if (json_is_integer(v)) {
        return 1;
    }

    if (!json_is_string(v)) {
        return -1;
    }

    return json_string_length(v) ? 1 : 0;
}


static int
ngx_cdp_segment_item_type(json_t *msg, long index,
    ngx_cdp_segment_error_t *err)
{
    int          type;
    json_t      *v;
    const char  *s;

    v = ngx_cdp_segment_get(msg, "type");

    if (v == NULL) {
        ngx_cdp_segment_fail(err, 400, "missing_field", index, "type",
                             "a batch message needs a type");
        return -1;
    }

    if (!json_is_string(v)) {
        ngx_cdp_segment_fail(err, 400, "invalid_field", index, "type",
                             "type must be a string");
        return -1;
    }

    s = json_string_value(v);
    type = ngx_cdp_segment_endpoint((const u_char *) s,
                                    json_string_length(v));

    if (type < 0 || type == NGX_CDP_SEGMENT_BATCH) {
        ngx_cdp_segment_fail(err, 400, "unknown_type", index, "type",
                             "unknown type \"%.40s\": a batch message is "
                             "one of track, identify, page, screen, group, "
                             "alias", s);
        return -1;
    }

    return type;
}


static int
ngx_cdp_segment_check_time(json_t *obj, const char *key, long index,
    ngx_cdp_segment_error_t *err)
{
    json_t   *v;
    int64_t   ms;

    v = ngx_cdp_segment_get(obj, key);

    if (v == NULL) {
        return 0;
    }

    if (!json_is_string(v)
        || !ngx_cdp_segment_time((const u_char *) json_string_value(v),
                                 json_string_length(v), &ms))
    {
        return ngx_cdp_segment_fail(err, 400, "invalid_field", index, key,
                                    "%s must be an ISO-8601 date-time "
                                    "string with a time zone, e.g. "
                                    "2026-11-23T07:30:00.000Z", key);
    }

    return 0;
}


static int
ngx_cdp_segment_check(json_t *msg, int type, long index,
    ngx_cdp_segment_error_t *err)
{
    int          uid, aid, rc;
    size_t       i;
    json_t      *v, *pv;
    const char  *name, *key;

    static const char  *ids[] = { "userId", "anonymousId", "previousId",
                                  "groupId" };
    static const char  *objects[] = { "properties", "traits", "context",
                                      "integrations" };
    static const char  *times[] = { "timestamp", "originalTimestamp",
                                    "sentAt" };

    name = ngx_cdp_segment_type_name(type);

    for (i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        if (ngx_cdp_segment_id(json_object_get(msg, ids[i])) < 0) {
            return ngx_cdp_segment_fail(err, 400, "invalid_field", index,
                                        ids[i], "%s must be a string or "
                                        "an integer", ids[i]);
        }
    }

    uid = ngx_cdp_segment_id(json_object_get(msg, "userId"));
    aid = ngx_cdp_segment_id(json_object_get(msg, "anonymousId"));

    switch (type) {

    case NGX_CDP_SEGMENT_ALIAS:
        if (uid == 0) {
            return ngx_cdp_segment_fail(err, 400, "missing_field", index,
                                        "userId", "alias needs a non-empty "
                                        "userId");
        }

        if (ngx_cdp_segment_id(json_object_get(msg, "previousId")) == 0) {
            return ngx_cdp_segment_fail(err, 400, "missing_field", index,
                                        "previousId", "alias needs a "
                                        "non-empty previousId");
        }

        break;

    default:
        if (uid == 0 && aid == 0) {
            return ngx_cdp_segment_fail(err, 400, "missing_field", index,
                                        "userId", "%s needs a non-empty "
                                        "userId or anonymousId", name);
        }
    }

    switch (type) {

    case NGX_CDP_SEGMENT_TRACK:
        v = ngx_cdp_segment_get(msg, "event");

        if (v == NULL
            || (json_is_string(v) && json_string_length(v) == 0))
        {
            return ngx_cdp_segment_fail(err, 400, "missing_field", index,
                                        "event", "track needs a non-empty "
                                        "string event");
        }

        if (!json_is_string(v)) {
            return ngx_cdp_segment_fail(err, 400, "invalid_field", index,
                                        "event", "event must be a "
                                        "non-empty string");
        }

        /* the pixel's rule too: no control character in a name */

        if (!ngx_cdp_segment_name_clean((const u_char *) json_string_value(v),
                                        json_string_length(v)))
        {
            return ngx_cdp_segment_fail(err, 400, "invalid_field", index,
                                        "event", "event may not contain "
                                        "control characters");
        }

        break;

    case NGX_CDP_SEGMENT_GROUP:
        if (ngx_cdp_segment_id(json_object_get(msg, "groupId")) == 0) {
            return ngx_cdp_segment_fail(err, 400, "missing_field", index,
                                        "groupId", "group needs a "
                                        "non-empty groupId");
        }

        break;

    case NGX_CDP_SEGMENT_PAGE:
    case NGX_CDP_SEGMENT_SCREEN:
        v = ngx_cdp_segment_get(msg, "name");

        if (v != NULL && !json_is_string(v)) {
            return ngx_cdp_segment_fail(err, 400, "invalid_field", index,
                                        "name", "name must be a string");
        }

        break;

    default:
        break;
    }

    /* and none in a property's name */

    v = ngx_cdp_segment_get(msg, "properties");

    if (v != NULL && json_is_object(v)) {
        json_object_foreach(v, key, pv) {
            if (!ngx_cdp_segment_name_clean((const u_char *) key,
                                            strlen(key)))
            {
                return ngx_cdp_segment_fail(err, 400, "invalid_field", index,
                                            "properties", "a property's "
                                            "name may not contain control "
                                            "characters");
            }
        }
    }

    for (i = 0; i < sizeof(objects) / sizeof(objects[0]); i++) {
        v = ngx_cdp_segment_get(msg, objects[i]);

        if (v != NULL && !json_is_object(v)) {
            return ngx_cdp_segment_fail(err, 400, "invalid_field", index,
                                        objects[i], "%s must be an object",
                                        objects[i]);
        }
    }

    for (i = 0; i < sizeof(times) / sizeof(times[0]); i++) {
        rc = ngx_cdp_segment_check_time(msg, times[i], index, err);
        if (rc) {
            return rc;
        }
    }

    v = ngx_cdp_segment_get(msg, "messageId");

    if (v != NULL
        && (!json_is_string(v) || json_string_length(v) == 0
            || json_string_length(v) > NGX_CDP_SEGMENT_MESSAGE_ID_MAX))
    {
        return ngx_cdp_segment_fail(err, 400, "invalid_field", index,
                                    "messageId", "messageId must be a "
                                    "non-empty string of at most %d bytes",
                                    NGX_CDP_SEGMENT_MESSAGE_ID_MAX);
    }

    return 0;
}


/* building: the second pass */

static int
ngx_cdp_segment_id_to_string(json_t *msg, const char *key)
{
    char    buf[NGX_CDP_SEGMENT_INT_LEN];
    json_t  *v;

    v = json_object_get(msg, key);

    if (v == NULL || !json_is_integer(v)) {
        return 0;
    }

    snprintf(buf, sizeof(buf), "%" JSON_INTEGER_FORMAT, json_integer_value(v));

    return json_object_set_new(msg, key, json_string(buf));
}


/*
 * a batch's context or integrations into the message's own (created when
 * absent or null); its keys win.  Values are shared, not copied: see
 * ngx_cdp_segment_strip().
 */

static int
ngx_cdp_segment_merge(json_t *msg, const char *key, json_t *from)
{
    json_t  *own;

    if (from == NULL) {
        return 0;
    }

    own = ngx_cdp_segment_get(msg, key);

    if (own == NULL) {
        own = json_object();

        if (json_object_set_new(msg, key, own) != 0) {
            return -1;
        }
    }

    return json_object_update_missing(own, from);
}


/*
 * Removes "email" and "phone" from the object obj[key].  That object may
 * be shared with other messages of the batch (merged from its context),
 * so a shallow copy without them replaces it.
 */

static int
ngx_cdp_segment_strip(json_t *obj, const char *key)
{
    json_t  *v, *copy;

    if (obj == NULL) {
        return 0;
    }

    v = json_object_get(obj, key);

    if (v == NULL || !json_is_object(v)
        || (json_object_get(v, "email") == NULL
            && json_object_get(v, "phone") == NULL))
    {
        return 0;
    }

    copy = json_copy(v);

    if (copy == NULL) {
        return -1;
    }

    json_object_del(copy, "email");
    json_object_del(copy, "phone");

    return json_object_set_new(obj, key, copy);
}


/* a string field, NULL when absent, not a string or "" */

static const char *
ngx_cdp_segment_str(json_t *obj, const char *key)
{
    json_t  *v;

    v = json_object_get(obj, key);

    if (v == NULL || !json_is_string(v) || json_string_length(v) == 0) {
        return NULL;
    }

    return json_string_value(v);
}


static char *
ngx_cdp_segment_copy(char **p, const char *s)
{
    char    *d;
    size_t   n;

    if (s == NULL) {
        return NULL;
    }

    n = strlen(s) + 1;
    d = *p;
    memcpy(d, s, n);
    *p += n;

    return d;
}


static int
ngx_cdp_segment_build(json_t *msg, int type, const ngx_cdp_segment_batch_t *b,
    ngx_cdp_segment_msg_t *out)
{
    int          rc, i;
    char         phone_buf[NGX_CDP_SEGMENT_INT_LEN];
    char        *p, *q;
    size_t       size, json_len, traits_len;
    json_t      *v, *traits, *ctx, *ctraits, *email, *phone;
    int64_t      ms;
    const char  *s[6], *email_s, *phone_s;

    static const char  *keys[] = { "userId", "anonymousId", "previousId",
                                   "groupId", "event", "messageId" };

    rc = -1;
    traits = NULL;
    email = NULL;
    phone = NULL;

    if (ngx_cdp_segment_id_to_string(msg, "userId") != 0
        || ngx_cdp_segment_id_to_string(msg, "anonymousId") != 0
        || ngx_cdp_segment_id_to_string(msg, "previousId") != 0
        || ngx_cdp_segment_id_to_string(msg, "groupId") != 0)
    {
        goto done;
    }

    if (json_object_set_new(msg, "type",
                            json_string(ngx_cdp_segment_type_name(type)))
        != 0)
    {
        goto done;
    }

    json_object_del(msg, "writeKey");

    /* b's context, integrations and sentAt are NULL outside a batch */

    if (ngx_cdp_segment_merge(msg, "context", b->context) != 0
        || ngx_cdp_segment_merge(msg, "integrations", b->integrations) != 0)
    {
        goto done;
    }

    if (b->sent_at != NULL && ngx_cdp_segment_get(msg, "sentAt") == NULL
        && json_object_set(msg, "sentAt", b->sent_at) != 0)
    {
        goto done;
    }

    if (json_object_set(msg, "receivedAt", b->received_at) != 0) {
        goto done;
    }

    /* what identify tells about the person, before it is stripped */

    ctx = ngx_cdp_segment_get(msg, "context");
    ctraits = ctx ? ngx_cdp_segment_get(ctx, "traits") : NULL;

    out->consent = ngx_cdp_segment_consent(ctx);

    if (type == NGX_CDP_SEGMENT_IDENTIFY) {
        v = ngx_cdp_segment_get(msg, "traits");

        if (v != NULL) {
            /* shallow: the values it shares are not changed below */
            traits = json_copy(v);
            if (traits == NULL) {
                goto done;
            }

            email = ngx_cdp_segment_get(v, "email");
            phone = ngx_cdp_segment_get(v, "phone");
        }

        if (ctraits != NULL && json_is_object(ctraits)) {
            if (email == NULL) {
                email = ngx_cdp_segment_get(ctraits, "email");
            }

            if (phone == NULL) {
                phone = ngx_cdp_segment_get(ctraits, "phone");
            }
        }

        if (email != NULL && !json_is_string(email)) {
            email = NULL;
        }

        if (phone != NULL && !json_is_string(phone)
            && !json_is_integer(phone))
        {
            phone = NULL;
        }

        /* kept alive while their parents lose them */
        json_incref(email);
        json_incref(phone);

        if (ngx_cdp_segment_strip(msg, "traits") != 0) {
            goto done;
        }
    }

    if (ngx_cdp_segment_strip(ctx, "traits") != 0) {
        goto done;
    }

    /* sizes, then one block; the message is dumped once, aside */

    json_len = ngx_cdp_segment_dumpb(msg, ngx_cdp_segment_scratch,
                                     ngx_cdp_segment_scratch_size);

    if (json_len > ngx_cdp_segment_scratch_size) {
        q = realloc(ngx_cdp_segment_scratch, 2 * json_len);
        if (q == NULL) {
            goto done;
        }

        ngx_cdp_segment_scratch = q;
        ngx_cdp_segment_scratch_size = 2 * json_len;

        (void) ngx_cdp_segment_dumpb(msg, ngx_cdp_segment_scratch,
                                     ngx_cdp_segment_scratch_size);
    }

    if (json_len == 0) {
        goto done;
    }

    traits_len = 0;

    if (traits != NULL) {
        traits_len = ngx_cdp_segment_dumpb(traits, NULL, 0);
        if (traits_len == 0) {
            goto done;
        }
    }

    email_s = email ? json_string_value(email) : NULL;
    phone_s = NULL;

    if (phone != NULL && json_is_integer(phone)) {
        snprintf(phone_buf, sizeof(phone_buf), "%" JSON_INTEGER_FORMAT,
                 json_integer_value(phone));
        phone_s = phone_buf;

    } else if (phone != NULL) {
        phone_s = json_string_value(phone);
    }

    size = json_len + 1 + (traits ? traits_len + 1 : 0);

    for (i = 0; i < 6; i++) {
        s[i] = ngx_cdp_segment_str(msg, keys[i]);
        size += s[i] ? strlen(s[i]) + 1 : 0;
    }

    size += email_s ? strlen(email_s) + 1 : 0;
    size += phone_s ? strlen(phone_s) + 1 : 0;

    p = malloc(size);
    if (p == NULL) {
        goto done;
    }

    out->mem = p;
    out->type = type;

    out->json = p;
    out->json_len = json_len;

    memcpy(p, ngx_cdp_segment_scratch, json_len);

    p[json_len] = '\0';
    p += json_len + 1;

    if (traits != NULL) {
        out->traits = p;
        out->traits_len = traits_len;

        if (ngx_cdp_segment_dumpb(traits, p, traits_len)
            != traits_len)
        {
            goto done;
        }

        p[traits_len] = '\0';
        p += traits_len + 1;
    }

    out->user_id = ngx_cdp_segment_copy(&p, s[0]);
    out->anonymous_id = ngx_cdp_segment_copy(&p, s[1]);
    out->previous_id = ngx_cdp_segment_copy(&p, s[2]);
    out->group_id = ngx_cdp_segment_copy(&p, s[3]);
    out->event = ngx_cdp_segment_copy(&p, s[4]);
    out->message_id = ngx_cdp_segment_copy(&p, s[5]);
    out->email = ngx_cdp_segment_copy(&p, email_s);
    out->phone = ngx_cdp_segment_copy(&p, phone_s);

    /* checked in the first pass */

    out->time_ms = 0;
    v = ngx_cdp_segment_get(msg, "timestamp");

    if (v == NULL) {
        v = ngx_cdp_segment_get(msg, "originalTimestamp");
    }

    if (v != NULL
        && ngx_cdp_segment_time((const u_char *) json_string_value(v),
                                json_string_length(v), &ms))
    {
        out->time_ms = ms;
    }

    rc = 0;

done:

    json_decref(traits);
    json_decref(email);
    json_decref(phone);

    return rc;
}


#ifndef NGX_CDP_SEGMENT_NO_ARENA

static ngx_cdp_segment_chunk_t *
ngx_cdp_segment_chunk(size_t need)
{
    size_t                    size;
    ngx_cdp_segment_chunk_t  *c;

    size = NGX_CDP_SEGMENT_CHUNK_HEAD + need;
    if (size < NGX_CDP_SEGMENT_CHUNK) {
        size = NGX_CDP_SEGMENT_CHUNK;
    }

    c = malloc(size);
    if (c == NULL) {
        return NULL;
    }

    c->next = NULL;
    c->end = (char *) c + size;

    return c;
}


static void *
ngx_cdp_segment_alloc(size_t size)
{
    char                     *p;
    size_t                    need;
    ngx_cdp_segment_chunk_t  *c;
    ngx_cdp_segment_arena_t  *a;

    a = &ngx_cdp_segment_arena;

    if (!a->active) {
        return malloc(size);
    }

    /* 16: malloc's alignment, enough for every jansson struct */
    need = (size + 15) & ~(size_t) 15;

    if (need < size || need > SIZE_MAX - NGX_CDP_SEGMENT_CHUNK_HEAD) {
        return NULL;
    }

    if ((size_t) (a->last->end - a->pos) < need) {
        c = NULL;

        if (a->chunks < NGX_CDP_SEGMENT_CHUNKS_MAX) {
            c = ngx_cdp_segment_chunk(need);
        }

        if (c == NULL) {
            a->spilled = 1;
            return malloc(size);
        }

        a->last->next = c;
        a->last = c;
        a->pos = (char *) c + NGX_CDP_SEGMENT_CHUNK_HEAD;
        a->chunks++;
    }

    p = a->pos;
    a->pos += need;

    return p;
}


static void
ngx_cdp_segment_release(void *p)
{
    uintptr_t                 u;
    ngx_cdp_segment_chunk_t  *c;

    u = (uintptr_t) p;

    for (c = ngx_cdp_segment_arena.first; c != NULL; c = c->next) {
        if (u >= (uintptr_t) c && u < (uintptr_t) c->end) {
            /* the arena's: rewound at the end of the parse */
            return;
        }
    }

    free(p);
}

#endif


/* 1 when jansson allocates from the arena until arena_end() */

static int
ngx_cdp_segment_arena_begin(void)
{
#ifdef NGX_CDP_SEGMENT_NO_ARENA

    return 0;

#else

    json_free_t               f;
    json_malloc_t             m;
    ngx_cdp_segment_arena_t  *a;

    a = &ngx_cdp_segment_arena;

    json_get_alloc_funcs(&m, &f);

    if (m != ngx_cdp_segment_alloc || f != ngx_cdp_segment_release) {
        if (m != malloc || f != free) {
            return 0;
        }

        json_set_alloc_funcs(ngx_cdp_segment_alloc, ngx_cdp_segment_release);
    }

    if (a->first == NULL) {
        a->first = ngx_cdp_segment_chunk(0);
        if (a->first == NULL) {
            return 0;
        }
    }

    a->last = a->first;
    a->pos = (char *) a->first + NGX_CDP_SEGMENT_CHUNK_HEAD;
    a->chunks = 1;
    a->spilled = 0;
    a->active = 1;

    return 1;

#endif
}


/*
 * Ends the arena's parse: 1 when every block of the parse came from the
 * arena, so that the tree may be dropped without json_decref().  Else the
 * caller walks the tree with json_decref() (which frees what came from
 * malloc) and then calls ngx_cdp_segment_arena_drop().
 */

static int
ngx_cdp_segment_arena_end(void)
{
    ngx_cdp_segment_arena_t  *a;

    a = &ngx_cdp_segment_arena;

    if (!a->active) {
        return 0;
    }

    a->active = 0;

    if (a->spilled) {
        return 0;
    }

    ngx_cdp_segment_arena_drop();

    return 1;
}


/* frees the chunks but the first, kept for the next parse */

static void
ngx_cdp_segment_arena_drop(void)
{
    ngx_cdp_segment_chunk_t  *c, *next;

    if (ngx_cdp_segment_arena.first == NULL) {
        return;
    }

    for (c = ngx_cdp_segment_arena.first->next; c != NULL; c = next) {
        next = c->next;
        free(c);
    }

    ngx_cdp_segment_arena.first->next = NULL;
}


void
ngx_cdp_segment_free(ngx_cdp_segment_t *res)
{
    size_t  i;

    if (res->msgs != NULL) {
        for (i = 0; i < res->nmsgs; i++) {
            free(res->msgs[i].mem);
        }

        free(res->msgs);
    }

    free((char *) res->write_key);

    res->write_key = NULL;
    res->msgs = NULL;
    res->nmsgs = 0;
}


int
ngx_cdp_segment_parse(int type, const u_char *body, size_t len,
    const u_char *received_at, size_t received_at_len, ngx_cdp_segment_t *res,
    ngx_cdp_segment_error_t *err)
{
    int                       t, *types, arena;
    char                     *wk;
    long                      i;
    size_t                    n, max, size, extra, total;
    json_t                   *root, *items, *v, *msg;
    const char               *name;
    const u_char             *nul;
    json_error_t              jerr;
    ngx_cdp_segment_batch_t   b;

    memset(res, 0, sizeof(ngx_cdp_segment_t));
    memset(err, 0, sizeof(ngx_cdp_segment_error_t));
    memset(&b, 0, sizeof(ngx_cdp_segment_batch_t));
    err->index = -1;
    err->position = -1;
    err->line = -1;
    err->column = -1;

    if (type < 0 || type > NGX_CDP_SEGMENT_BATCH) {
        return ngx_cdp_segment_fail(err, 400, "unknown_type", -1, "",
                                    "unknown endpoint");
    }

    if (body == NULL) {
        body = (const u_char *) "";
        len = 0;
    }

    name = ngx_cdp_segment_type_name(type);
    max = type == NGX_CDP_SEGMENT_BATCH ? NGX_CDP_SEGMENT_BATCH_BODY_MAX
                                        : NGX_CDP_SEGMENT_BODY_MAX;

    if (len > max) {
        return ngx_cdp_segment_fail(err, 413, "body_too_large", -1, "",
                                    "a %s body may have at most %zu bytes, "
                                    "this one has %zu", name, max, len);
    }

    nul = memchr(body, '\0', len);
    if (nul != NULL) {
        return ngx_cdp_segment_nul(err, body, nul);
    }

    /* the error code is in the text's last byte, set only with a text */
    memset(&jerr, 0, sizeof(json_error_t));

    arena = ngx_cdp_segment_arena_begin();

    root = json_loadb((const char *) body, len, NGX_CDP_SEGMENT_LOAD_FLAGS,
                      &jerr);
    if (root == NULL) {
        if (arena && !ngx_cdp_segment_arena_end()) {
            ngx_cdp_segment_arena_drop();
        }

        /*
         * jansson fails some allocations without saying why (no text, no
         * line), or as out of memory; a few others (a string's) read as a
         * syntax error, and are reported as one
         */

        if (jerr.text[0] == '\0' || jerr.line < 0
            || json_error_code(&jerr) == json_error_out_of_memory)
        {
            return ngx_cdp_segment_fail(err, 500, "out_of_memory", -1, "",
                                        "out of memory");
        }

        return ngx_cdp_segment_json_error(err, body, len, &jerr);
    }

    types = NULL;

    if (!json_is_object(root)) {
        ngx_cdp_segment_fail(err, 400, "not_an_object", -1, "",
                             "the body must be a JSON object");
        goto done;
    }

    v = ngx_cdp_segment_get(root, "writeKey");

    if (v != NULL && !json_is_string(v)) {
        ngx_cdp_segment_fail(err, 400, "invalid_field", -1, "writeKey",
                             "writeKey must be a string");
        goto done;
    }

    if (type == NGX_CDP_SEGMENT_BATCH) {
        items = ngx_cdp_segment_get(root, "batch");

        if (items == NULL) {
            ngx_cdp_segment_fail(err, 400, "missing_field", -1, "batch",
                                 "a batch body needs a \"batch\" array");
            goto done;
        }

        if (!json_is_array(items)) {
            ngx_cdp_segment_fail(err, 400, "invalid_field", -1, "batch",
                                 "batch must be an array");
            goto done;
        }

        n = json_array_size(items);

        if (n > NGX_CDP_SEGMENT_BATCH_MAX) {
            ngx_cdp_segment_fail(err, 400, "too_many_messages", -1, "batch",
                                 "a batch may have at most %d messages, "
                                 "this one has %zu",
                                 NGX_CDP_SEGMENT_BATCH_MAX, n);
            goto done;
        }

        b.context = ngx_cdp_segment_get(root, "context");
        b.integrations = ngx_cdp_segment_get(root, "integrations");

        if (b.context != NULL && !json_is_object(b.context)) {
            ngx_cdp_segment_fail(err, 400, "invalid_field", -1, "context",
                                 "context must be an object");
            goto done;
        }

        if (b.integrations != NULL && !json_is_object(b.integrations)) {
            ngx_cdp_segment_fail(err, 400, "invalid_field", -1,
                                 "integrations",
                                 "integrations must be an object");
            goto done;
        }

        if (ngx_cdp_segment_check_time(root, "sentAt", -1, err)) {
            goto done;
        }

        b.sent_at = ngx_cdp_segment_get(root, "sentAt");

    } else {
        items = NULL;
        n = 1;
    }

    /* the first pass: everything is checked before anything is built */

    types = malloc(n ? n * sizeof(int) : 1);
    if (types == NULL) {
        goto nomem;
    }

    extra = NGX_CDP_SEGMENT_SLACK + received_at_len;

    if (b.context != NULL) {
        extra += ngx_cdp_segment_dumpb(b.context, NULL, 0);
    }

    if (b.integrations != NULL) {
        extra += ngx_cdp_segment_dumpb(b.integrations, NULL, 0);
    }

    if (b.sent_at != NULL) {
        extra += json_string_length(b.sent_at);
    }

    total = 0;

    for (i = 0; i < (long) n; i++) {

        if (items == NULL) {
            if (ngx_cdp_segment_check(root, type, -1, err)) {
                goto done;
            }

            types[i] = type;
            continue;
        }

        msg = json_array_get(items, i);

        if (!json_is_object(msg)) {
            ngx_cdp_segment_fail(err, 400, "not_an_object", i, "",
                                 "a batch message must be an object");
            goto done;
        }

        size = ngx_cdp_segment_dumpb(msg, NULL, 0);

        if (size > NGX_CDP_SEGMENT_MESSAGE_MAX) {
            ngx_cdp_segment_fail(err, 413, "message_too_large", i, "",
                                 "batch message %ld has %zu bytes, more "
                                 "than the %d allowed", i, size,
                                 NGX_CDP_SEGMENT_MESSAGE_MAX);
            goto done;
        }

        total += size + extra;

        if (total > NGX_CDP_SEGMENT_STORED_MAX) {
            ngx_cdp_segment_fail(err, 413, "batch_too_large", i, "",
                                 "the batch would store more than %d bytes "
                                 "once its context and integrations are "
                                 "merged into each message",
                                 NGX_CDP_SEGMENT_STORED_MAX);
            goto done;
        }

        t = ngx_cdp_segment_item_type(msg, i, err);
        if (t < 0) {
            goto done;
        }

        if (ngx_cdp_segment_check(msg, t, i, err)) {
            goto done;
        }

        types[i] = t;
    }

    /* the second pass */

    b.received_at = json_stringn((const char *) received_at,
                                 received_at_len);
    if (b.received_at == NULL) {
        goto nomem;
    }

    v = ngx_cdp_segment_get(root, "writeKey");

    if (v != NULL) {
        size = json_string_length(v) + 1;

        wk = malloc(size);
        if (wk == NULL) {
            goto nomem;
        }

        memcpy(wk, json_string_value(v), size);
        res->write_key = wk;
    }

    res->msgs = calloc(n ? n : 1, sizeof(ngx_cdp_segment_msg_t));
    if (res->msgs == NULL) {
        goto nomem;
    }

    for (i = 0; i < (long) n; i++) {
        msg = items ? json_array_get(items, i) : root;

        /* counted first, so that free() sees a partly built message */
        res->nmsgs++;

        if (ngx_cdp_segment_build(msg, types[i], &b, &res->msgs[i]) != 0) {
            goto nomem;
        }
    }

    goto done;

nomem:

    ngx_cdp_segment_fail(err, 500, "out_of_memory", -1, "", "out of memory");

done:

    /* err->status is 0 unless something failed */

    if (err->status != 0) {
        ngx_cdp_segment_free(res);
    }

    /*
     * the tree from the arena is dropped with it: json_decref() then would
     * only walk it; what spilled out of the arena is freed by the walk
     */

    if (!arena || !ngx_cdp_segment_arena_end()) {
        json_decref(b.received_at);
        json_decref(root);

        if (arena) {
            ngx_cdp_segment_arena_drop();
        }
    }

    free(types);

    return err->status;
}


/*
 * json_dumpb(json, buf, size, JSON_COMPACT), byte for byte, at a fraction
 * of its cost: jansson guards every object and array of a dump against
 * cycles with a hash table keyed by the printed address, which made
 * dumping a stored copy cost more than parsing the whole request.  A tree
 * parsed from a body has no cycles.  Writes at most size bytes of buf
 * (buf may be NULL with size 0) and returns the length of the whole text.
 */

static size_t
ngx_cdp_segment_dumpb(const json_t *json, char *buf, size_t size)
{
    size_t  len;

    len = 0;
    ngx_cdp_segment_dump(json, buf, size, &len);

    return len;
}


#define ngx_cdp_segment_put(buf, size, len, s, n)                             \
    do {                                                                      \
        if (*(len) + (n) <= (size)) {                                         \
            memcpy((buf) + *(len), (s), (n));                                 \
        }                                                                     \
        *(len) += (n);                                                        \
    } while (0)


static void
ngx_cdp_segment_dump(const json_t *json, char *buf, size_t size, size_t *len)
{
    int          n;
    char        *e, *d, *z;
    size_t       i;
    json_t      *v;
    const char  *key;
    char         num[64];

    switch (json_typeof(json)) {

    case JSON_OBJECT:
        ngx_cdp_segment_put(buf, size, len, "{", 1);
        i = 0;

        json_object_foreach((json_t *) json, key, v) {
            if (i++) {
                ngx_cdp_segment_put(buf, size, len, ",", 1);
            }

            ngx_cdp_segment_dump_str(key, strlen(key), buf, size, len);
            ngx_cdp_segment_put(buf, size, len, ":", 1);
            ngx_cdp_segment_dump(v, buf, size, len);
        }

        ngx_cdp_segment_put(buf, size, len, "}", 1);
        return;

    case JSON_ARRAY:
        ngx_cdp_segment_put(buf, size, len, "[", 1);

        for (i = 0; i < json_array_size(json); i++) {
            if (i) {
                ngx_cdp_segment_put(buf, size, len, ",", 1);
            }

            ngx_cdp_segment_dump(json_array_get(json, i), buf, size, len);
        }

        ngx_cdp_segment_put(buf, size, len, "]", 1);
        return;

    case JSON_STRING:
        ngx_cdp_segment_dump_str(json_string_value(json),
                                 json_string_length(json), buf, size, len);
        return;

    case JSON_INTEGER:
        n = ngx_cdp_segment_int(num, json_integer_value(json));
        ngx_cdp_segment_put(buf, size, len, num, (size_t) n);
        return;

    case JSON_REAL:
        /*
         * as jansson: 17 significant digits, ".0" when it reads as an
         * int, an exponent without '+' and leading zeros ("1e300", "1e-8")
         */
        n = snprintf(num, sizeof(num) - 2, "%.17g", json_real_value(json));

        e = strchr(num, 'e');

        if (e == NULL) {
            if (strchr(num, '.') == NULL) {
                num[n++] = '.';
                num[n++] = '0';
            }

        } else {
            d = e + 1;

            if (*d == '-') {
                d++;
            }

            z = d;

            while (*z == '+' || (*z == '0' && z[1] != '\0')) {
                z++;
            }

            if (e[1] == '+') {
                d = e + 1;
            }

            memmove(d, z, strlen(z) + 1);
            n = (int) strlen(num);
        }

        ngx_cdp_segment_put(buf, size, len, num, (size_t) n);
        return;

    case JSON_TRUE:
        ngx_cdp_segment_put(buf, size, len, "true", 4);
        return;

    case JSON_FALSE:
        ngx_cdp_segment_put(buf, size, len, "false", 5);
        return;

    default: /* JSON_NULL */
        ngx_cdp_segment_put(buf, size, len, "null", 4);
        return;
    }
}


/*
 * A JSON integer as jansson prints it ("%" JSON_INTEGER_FORMAT), without
 * snprintf(): its text into num (at least NGX_CDP_SEGMENT_INT_LEN bytes),
 * its length returned.
 */

static int
ngx_cdp_segment_int(char *num, json_int_t v)
{
    int                 n, i;
    char                rev[NGX_CDP_SEGMENT_INT_LEN];
    unsigned long long  u;

    /* the magnitude in unsigned arithmetic: -INT64_MIN overflows */
    u = v < 0 ? 0ULL - (unsigned long long) v : (unsigned long long) v;

    i = 0;

    do {
        rev[i++] = (char) ('0' + u % 10);
        u /= 10;
    } while (u);

    n = 0;

    if (v < 0) {
        num[n++] = '-';
    }

    while (i) {
        num[n++] = rev[--i];
    }

    return n;
}


/*
 * jansson's escaping without JSON_ENSURE_ASCII: '"', '\\', controls.  The
 * bytes that need none (all but those 34) are looked up in a table, and
 * copied in runs.
 */

static const unsigned char  ngx_cdp_segment_plain[256] = {
    /* 0x00 - 0x1f: controls */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    /* 0x20 - 0x2f: '"' is 0x22 */
    1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    /* 0x40 - 0x5f: '\\' is 0x5c */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    /* 0x80 - 0xff: UTF-8 bytes */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1
};


static void
ngx_cdp_segment_dump_str(const char *s, size_t n, char *buf, size_t size,
    size_t *len)
{
    size_t          i, start;
    const char     *e;
    unsigned char   c;
    char            seq[8];

    ngx_cdp_segment_put(buf, size, len, "\"", 1);

    start = 0;

    for (i = 0; i < n; i++) {
        c = (unsigned char) s[i];

        if (ngx_cdp_segment_plain[c]) {
            continue;
        }

        ngx_cdp_segment_put(buf, size, len, s + start, i - start);
        start = i + 1;

        switch (c) {
        case '"':  e = "\\\""; break;
        case '\\': e = "\\\\"; break;
        case '\b': e = "\\b"; break;
        case '\f': e = "\\f"; break;
        case '\n': e = "\\n"; break;
        case '\r': e = "\\r"; break;
        case '\t': e = "\\t"; break;
        default:
            snprintf(seq, sizeof(seq), "\\u%04X", (unsigned int) c);
            e = seq;
            break;
        }

        ngx_cdp_segment_put(buf, size, len, e, strlen(e));
    }

    ngx_cdp_segment_put(buf, size, len, s + start, n - start);
    ngx_cdp_segment_put(buf, size, len, "\"", 1);
}
