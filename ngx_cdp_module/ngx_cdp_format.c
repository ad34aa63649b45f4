
/*
 * ngx_cdp: bodies for destinations (see ngx_cdp_format.h).
 *
 * The Segment batch is a concatenation: the stored copies are already
 * what Segment takes.  The GA4 body is built as a jansson tree and dumped
 * by jansson into a buffer of our own, so that it is malloc()'s whatever
 * allocator jansson was given (ngx_cdp_segment.c installs one).
 */


#include "ngx_cdp_format.h"
#include "ngx_cdp_segment.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>


#define NGX_CDP_FMT_LOAD_FLAGS   JSON_REJECT_DUPLICATES
#define NGX_CDP_FMT_DUMP_FLAGS   (JSON_COMPACT | JSON_PRESERVE_ORDER)

/* a name being made: the longest cut and a prefix */
#define NGX_CDP_FMT_NAME_LEN     (NGX_CDP_FMT_GA4_NAME_MAX + 8)

/* what a name is for: its prefix, its length, the names it must avoid */
#define NGX_CDP_FMT_EVENT_NAME   0
#define NGX_CDP_FMT_PARAM_NAME   1
#define NGX_CDP_FMT_USER_NAME    2

#define NGX_CDP_FMT_ENGAGEMENT   "engagement_time_msec"


typedef struct {
    char          *data;
    size_t         len;
    size_t         size;
} ngx_cdp_fmt_buf_t;


static json_t *ngx_cdp_fmt_load(const char *json, size_t len, int *oom);
static int ngx_cdp_fmt_type(json_t *msg);
static void ngx_cdp_fmt_id(json_t *v, char *dst);
static int ngx_cdp_fmt_braced(const char *p, size_t len);
static int64_t ngx_cdp_fmt_event_time(json_t *msg);
static size_t ngx_cdp_fmt_cut(const char *s, size_t len, size_t max);
static int ngx_cdp_fmt_starts(const char *s, size_t len,
    const char *prefix);
static int ngx_cdp_fmt_reserved(const char *name, size_t len, int kind);
static int ngx_cdp_fmt_personal(const char *name, int kind);
static size_t ngx_cdp_fmt_prefix(char *name, size_t len, size_t max,
    int kind);
static size_t ngx_cdp_fmt_name(const char *s, size_t len, int kind,
    char *dst);
static int ngx_cdp_fmt_value(json_t *v, size_t max, json_t **out);
static json_t *ngx_cdp_fmt_text(json_t *obj, const char *key);
static int ngx_cdp_fmt_param(json_t *params, const char *name,
    json_t *value);
static int ngx_cdp_fmt_param_str(json_t *params, const char *name,
    json_t *v, size_t max);
static int ngx_cdp_fmt_props(json_t *params, json_t *props, int type);
static int ngx_cdp_fmt_ga4_event(json_t *events, json_t *msg, int type,
    int64_t us);
static int ngx_cdp_fmt_ga4_traits(json_t *user_props, json_t *msg);
static int ngx_cdp_fmt_dump_cb(const char *buf, size_t size, void *data);
static char *ngx_cdp_fmt_dump(json_t *root, size_t *len);


static const char  *ngx_cdp_fmt_types[] = {
    "track", "identify", "page", "screen", "group", "alias"
};

#define NGX_CDP_FMT_NTYPES                                                    \
    (sizeof(ngx_cdp_fmt_types) / sizeof(ngx_cdp_fmt_types[0]))


/* event names GA4 keeps for itself (besides the prefixes below) */

static const char  *ngx_cdp_fmt_reserved_events[] = {
    "ad_activeview", "ad_click", "ad_exposure", "ad_query", "ad_reward",
    "adunit_exposure", "app_clear_data", "app_exception", "app_install",
    "app_remove", "app_store_refund", "app_update", "app_upgrade",
    "dynamic_link_app_open", "dynamic_link_app_update",
    "dynamic_link_first_open", "error", "firebase_campaign",
    "firebase_in_app_message_action", "firebase_in_app_message_dismiss",
    "firebase_in_app_message_impression", "first_open", "first_visit",
    "in_app_purchase", "notification_dismiss", "notification_foreground",
    "notification_open", "notification_receive", "notification_send",
    "os_update", "session_start", "user_engagement", NULL
};

static const char  *ngx_cdp_fmt_reserved_users[] = {
    "first_open_time", "first_visit_time", "last_deep_link_referrer",
    "user_id", "first_open_after_install", NULL
};

static const char  *ngx_cdp_fmt_reserved_prefixes[] = {
    "firebase_", "google_", "ga_", NULL
};


/*
 * Google's terms forbid sending GA4 anything that identifies a person.
 * The stream already has no e-mail address or phone number in traits
 * (ngx_cdp_segment.c, ngx_cdp_identify.c), but properties may, and traits
 * carry names.
 */

static const char  *ngx_cdp_fmt_personal_params[] = {
    "email", "phone", NULL
};

static const char  *ngx_cdp_fmt_personal_users[] = {
    "email", "phone", "name", "first_name", "last_name", "firstname",
    "lastname", "username", "birthday", "address", NULL
};


int
ngx_cdp_fmt_info(const char *json, size_t len, ngx_cdp_fmt_info_t *info)
{
    int      oom;
    json_t  *msg;

    info->type = NGX_CDP_FMT_UNKNOWN;
    info->anonymous_id[0] = '\0';
    info->user_id[0] = '\0';

    msg = ngx_cdp_fmt_load(json, len, &oom);
    if (msg == NULL) {
        return -1;
    }

    info->type = ngx_cdp_fmt_type(msg);
    ngx_cdp_fmt_id(json_object_get(msg, "anonymousId"), info->anonymous_id);
    ngx_cdp_fmt_id(json_object_get(msg, "userId"), info->user_id);

    json_decref(msg);

    return 0;
}


/*
 * jansson takes a raw NUL outside a string for the end of its input, so
 * "{}\0junk" would load: such an event is refused here first
 */

static json_t *
ngx_cdp_fmt_load(const char *json, size_t len, int *oom)
{
    json_t        *j;
    json_error_t   err;

    *oom = 0;

    if (json == NULL || len == 0 || memchr(json, '\0', len) != NULL) {
        return NULL;
    }

    /*
     * jansson keeps the error's code in text's last byte and leaves it
     * unset when some allocations fail: it then reads as "unknown"
     */
    memset(&err, 0, sizeof(err));

    j = json_loadb(json, len, NGX_CDP_FMT_LOAD_FLAGS, &err);

    if (j == NULL) {
        *oom = json_error_code(&err) == json_error_out_of_memory;
        return NULL;
    }

    if (!json_is_object(j)) {
        json_decref(j);
        return NULL;
    }

    return j;
}


static int
ngx_cdp_fmt_type(json_t *msg)
{
    size_t       i, len;
    json_t      *v;
    const char  *s;

    v = json_object_get(msg, "type");

    if (!json_is_string(v)) {
        return NGX_CDP_FMT_UNKNOWN;
    }

    s = json_string_value(v);
    len = json_string_length(v);

    for (i = 0; i < NGX_CDP_FMT_NTYPES; i++) {
        if (len == strlen(ngx_cdp_fmt_types[i])
            && memcmp(s, ngx_cdp_fmt_types[i], len) == 0)
        {
            return (int) i;
        }
    }

    return NGX_CDP_FMT_UNKNOWN;
}


/* dst has NGX_CDP_FMT_ID_MAX + 1 bytes */

static void
ngx_cdp_fmt_id(json_t *v, char *dst)
{
    size_t  n;

    dst[0] = '\0';

    if (json_is_integer(v)) {
        snprintf(dst, NGX_CDP_FMT_ID_MAX + 1, "%" JSON_INTEGER_FORMAT,
                 json_integer_value(v));
        return;
    }

    if (!json_is_string(v)) {
        return;
    }

    n = json_string_length(v);

    if (n == 0 || n > NGX_CDP_FMT_ID_MAX) {
        return;
    }

    memcpy(dst, json_string_value(v), n);
    dst[n] = '\0';
}


/* Segment */

char *
ngx_cdp_fmt_segment(const ngx_cdp_fmt_str_t *ev, size_t n,
    const char *sent_at, size_t *len)
{
    char           *body, *p;
    size_t          i, size, slen;
    unsigned char   c;
    int             first;

    static const char  head[] = "{\"batch\":[";
    static const char  sent[] = "],\"sentAt\":\"";
    static const char  hex[] = "0123456789abcdef";

    /* the head, "]}" or the sentAt's '"]}', and the NUL */
    size = sizeof(head) - 1 + 4;

    for (i = 0; i < n; i++) {
        if (!ngx_cdp_fmt_braced(ev[i].data, ev[i].len)) {
            continue;
        }

        /* with its comma */
        if (ev[i].len > SIZE_MAX / 2 - size) {
            return NULL;
        }

        size += ev[i].len + 1;
    }

    slen = sent_at ? strlen(sent_at) : 0;

    if (sent_at) {
        /* each byte 6 at most, "\u001f" */
        if (slen > (SIZE_MAX / 2 - size) / 6) {
            return NULL;
        }

        size += sizeof(sent) - 1 + 6 * slen;
    }

    body = malloc(size);
    if (body == NULL) {
        return NULL;
    }

    p = body;
    memcpy(p, head, sizeof(head) - 1);
    p += sizeof(head) - 1;

    first = 1;

    for (i = 0; i < n; i++) {
        if (!ngx_cdp_fmt_braced(ev[i].data, ev[i].len)) {
            continue;
        }

        if (!first) {
            *p++ = ',';
        }

        first = 0;

        memcpy(p, ev[i].data, ev[i].len);
        p += ev[i].len;
    }

    if (sent_at == NULL) {
        *p++ = ']';

    } else {
        memcpy(p, sent, sizeof(sent) - 1);
        p += sizeof(sent) - 1;

        /* an ISO-8601 time is ASCII: any other byte is no part of one */

        for (i = 0; i < slen; i++) {
            c = (unsigned char) sent_at[i];

            if (c == '"' || c == '\\') {
                *p++ = '\\';
                *p++ = c;

            } else if (c < 0x20) {
                *p++ = '\\';
                *p++ = 'u';
                *p++ = '0';
                *p++ = '0';
                *p++ = hex[c >> 4];
                *p++ = hex[c & 0xf];

            } else if (c >= 0x80) {
                *p++ = '?';

            } else {
                *p++ = c;
            }
        }

        *p++ = '"';
    }

    *p++ = '}';
    *p = '\0';

    *len = p - body;

    return body;
}


/*
 * Between '{' and '}', JSON white space aside: every event that
 * ngx_cdp_fmt_info() reads as an object is
 */

static int
ngx_cdp_fmt_braced(const char *p, size_t len)
{
    while (len && (p[0] == ' ' || p[0] == '\t' || p[0] == '\n'
                   || p[0] == '\r'))
    {
        p++;
        len--;
    }

    while (len && (p[len - 1] == ' ' || p[len - 1] == '\t'
                   || p[len - 1] == '\n' || p[len - 1] == '\r'))
    {
        len--;
    }

    return len >= 2 && p[0] == '{' && p[len - 1] == '}';
}


/*
 * An event's time in microseconds: the first of its times that parses;
 * -1 when none does, or when that one is before 1970 (GA4 would refuse
 * it, and it is no event of ours)
 */

static int64_t
ngx_cdp_fmt_event_time(json_t *msg)
{
    size_t    i;
    json_t   *v;
    int64_t   us;

    static const char  *keys[] = {
        "timestamp", "originalTimestamp", "receivedAt"
    };

    for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        v = json_object_get(msg, keys[i]);

        if (json_is_string(v)
            && ngx_cdp_segment_time_us((const u_char *)
                                       json_string_value(v),
                                       json_string_length(v), &us))
        {
            return us >= 0 ? us : -1;
        }
    }

    return -1;
}


/* GA4: names and values */

/* the bytes of the first max code points of valid UTF-8 */

static size_t
ngx_cdp_fmt_cut(const char *s, size_t len, size_t max)
{
    size_t  i, chars;

    chars = 0;

    for (i = 0; i < len; i++) {
        if (((unsigned char) s[i] & 0xc0) != 0x80) {
            if (chars == max) {
                return i;
            }

            chars++;
        }
    }

    return len;
}


static int
ngx_cdp_fmt_starts(const char *s, size_t len, const char *prefix)
{
    size_t  n;

    n = strlen(prefix);

    return len >= n && memcmp(s, prefix, n) == 0;
}


static int
ngx_cdp_fmt_reserved(const char *name, size_t len, int kind)
{
    size_t        i;
    const char  **list;

    for (i = 0; ngx_cdp_fmt_reserved_prefixes[i]; i++) {
        if (ngx_cdp_fmt_starts(name, len, ngx_cdp_fmt_reserved_prefixes[i])) {
            return 1;
        }
    }

    switch (kind) {

    case NGX_CDP_FMT_EVENT_NAME:
        list = ngx_cdp_fmt_reserved_events;
        break;

    case NGX_CDP_FMT_USER_NAME:
        list = ngx_cdp_fmt_reserved_users;
        break;

    default:
        return 0;
    }

    for (i = 0; list[i]; i++) {
        if (len == strlen(list[i]) && memcmp(name, list[i], len) == 0) {
            return 1;
        }
    }

    return 0;
}


static int
ngx_cdp_fmt_personal(const char *name, int kind)
{
    size_t        i;
    const char  **list;

    list = (kind == NGX_CDP_FMT_USER_NAME) ? ngx_cdp_fmt_personal_users
                                           : ngx_cdp_fmt_personal_params;

    for (i = 0; list[i]; i++) {
        if (strcmp(name, list[i]) == 0) {
            return 1;
        }
    }

    return 0;
}


/* "e_" or "p_" before name, cut to max; returns the new length */

static size_t
ngx_cdp_fmt_prefix(char *name, size_t len, size_t max, int kind)
{
    memmove(name + 2, name, len);
    name[0] = (kind == NGX_CDP_FMT_EVENT_NAME) ? 'e' : 'p';
    name[1] = '_';
    len += 2;

    if (len > max) {
        len = max;
    }

    /* a cut may end in '_'; the prefix keeps the name from emptying */

    while (name[len - 1] == '_') {
        len--;
    }

    return len;
}


/*
 * A GA4 name made of s (see ngx_cdp_format.h) into dst, which has
 * NGX_CDP_FMT_NAME_LEN bytes, NUL-terminated.  Returns its length; 0 when
 * nothing is left of a param's or a user property's name.
 */

static size_t
ngx_cdp_fmt_name(const char *s, size_t len, int kind, char *dst)
{
    int            gap;
    size_t         i, n, max;
    unsigned char  c;

    max = (kind == NGX_CDP_FMT_USER_NAME) ? NGX_CDP_FMT_GA4_USER_PROP_MAX
                                          : NGX_CDP_FMT_GA4_NAME_MAX;

    /*
     * A run of other bytes becomes one '_' when something follows it, so
     * that the runs at either end go; a leading '_' is skipped.  What is
     * past the cut is not needed.
     */

    n = 0;
    gap = 0;

    for (i = 0; i < len && n < max; i++) {
        c = (unsigned char) s[i];

        if (c >= 'A' && c <= 'Z') {
            c += 'a' - 'A';
        }

        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
        {
            gap = 1;
            continue;
        }

        if (gap && n) {
            dst[n++] = '_';

            if (n == max) {
                break;
            }
        }

        gap = 0;

        if (c == '_' && n == 0) {
            continue;
        }

        dst[n++] = c;
    }

    while (n && dst[n - 1] == '_') {
        n--;
    }

    if (n == 0) {
        if (kind != NGX_CDP_FMT_EVENT_NAME) {
            dst[0] = '\0';
            return 0;
        }

        memcpy(dst, "e_event", sizeof("e_event"));
        return sizeof("e_event") - 1;
    }

    if (dst[0] < 'a' || dst[0] > 'z') {
        n = ngx_cdp_fmt_prefix(dst, n, max, kind);
    }

    if (ngx_cdp_fmt_reserved(dst, n, kind)) {
        n = ngx_cdp_fmt_prefix(dst, n, max, kind);
    }

    dst[n] = '\0';

    return n;
}


/*
 * A param's or a user property's value made of v: 1 and *out set, 0 when
 * v is no scalar (null, object, array), -1 when memory ran out
 */

static int
ngx_cdp_fmt_value(json_t *v, size_t max, json_t **out)
{
    size_t       n, cut;
    const char  *s;

    switch (json_typeof(v)) {

    case JSON_STRING:
        s = json_string_value(v);
        n = json_string_length(v);
        cut = ngx_cdp_fmt_cut(s, n, max);

        *out = (cut == n) ? json_incref(v) : json_stringn(s, cut);
        break;

    case JSON_INTEGER:
    case JSON_REAL:
        *out = json_incref(v);
        break;

    case JSON_TRUE:
        *out = json_integer(1);
        break;

    case JSON_FALSE:
        *out = json_integer(0);
        break;

    default:
        return 0;
    }

    return *out ? 1 : -1;
}


/* obj's key when it is a non-empty string, else NULL */

static json_t *
ngx_cdp_fmt_text(json_t *obj, const char *key)
{
    json_t  *v;

    v = json_object_get(obj, key);

    if (!json_is_string(v) || json_string_length(v) == 0) {
        return NULL;
    }

    return v;
}


/*
 * Adds name: value to params, unless they are full or name is there
 * (first come first kept), keeping the last place for
 * engagement_time_msec.  Takes value over.  Returns -1 when memory ran
 * out.
 */

static int
ngx_cdp_fmt_param(json_t *params, const char *name, json_t *value)
{
    if (json_object_size(params) >= NGX_CDP_FMT_GA4_MAX_PARAMS - 1
        || json_object_get(params, name) != NULL
        || strcmp(name, NGX_CDP_FMT_ENGAGEMENT) == 0)
    {
        json_decref(value);
        return 0;
    }

    return json_object_set_new(params, name, value);
}


/* a string param from v, when v is a string; -1 when memory ran out */

static int
ngx_cdp_fmt_param_str(json_t *params, const char *name, json_t *v,
    size_t max)
{
    json_t  *value;

    if (!json_is_string(v)) {
        return 0;
    }

    if (ngx_cdp_fmt_value(v, max, &value) < 0) {
        return -1;
    }

    return ngx_cdp_fmt_param(params, name, value);
}


static int
ngx_cdp_fmt_props(json_t *params, json_t *props, int type)
{
    int          rc;
    char         name[NGX_CDP_FMT_NAME_LEN];
    json_t      *v, *value;
    const char  *key;

    if (!json_is_object(props)) {
        return 0;
    }

    json_object_foreach(props, key, v) {

        if (json_object_size(params) >= NGX_CDP_FMT_GA4_MAX_PARAMS - 1) {
            break;
        }

        /* page_location, page_referrer and page_title already */

        if (type == NGX_CDP_FMT_PAGE
            && (strcmp(key, "url") == 0 || strcmp(key, "referrer") == 0
                || strcmp(key, "title") == 0))
        {
            continue;
        }

        if (ngx_cdp_fmt_name(key, strlen(key), NGX_CDP_FMT_PARAM_NAME, name)
            == 0
            || ngx_cdp_fmt_personal(name, NGX_CDP_FMT_PARAM_NAME))
        {
            continue;
        }

        rc = ngx_cdp_fmt_value(v, NGX_CDP_FMT_GA4_VALUE_MAX, &value);

        if (rc == 0) {
            continue;
        }

        if (rc < 0 || ngx_cdp_fmt_param(params, name, value) < 0) {
            return -1;
        }
    }

    return 0;
}


/*
 * Appends the GA4 event of msg, of a type that has one, to events, with
 * its own timestamp_micros unless us is -1.  Returns -1 when memory ran
 * out.
 */

static int
ngx_cdp_fmt_ga4_event(json_t *events, json_t *msg, int type, int64_t us)
{
    int          rc;
    char         name[NGX_CDP_FMT_NAME_LEN], num[32];
    json_t      *e, *params, *props, *page, *v, *value;
    const char  *s;

    e = json_object();
    params = json_object();

    if (e == NULL || params == NULL) {
        goto failed;
    }

    props = json_object_get(msg, "properties");
    page = json_object_get(json_object_get(msg, "context"), "page");
    rc = 0;

    switch (type) {

    case NGX_CDP_FMT_PAGE:
        s = "page_view";

        v = ngx_cdp_fmt_text(props, "url");
        if (v == NULL) {
            v = ngx_cdp_fmt_text(page, "url");
        }

        rc |= ngx_cdp_fmt_param_str(params, "page_location", v,
                                    NGX_CDP_FMT_GA4_LOCATION_MAX);

        v = ngx_cdp_fmt_text(props, "referrer");
        if (v == NULL) {
            v = ngx_cdp_fmt_text(page, "referrer");
        }

        rc |= ngx_cdp_fmt_param_str(params, "page_referrer", v,
                                    NGX_CDP_FMT_GA4_REFERRER_MAX);

        v = ngx_cdp_fmt_text(props, "title");
        if (v == NULL) {
            v = ngx_cdp_fmt_text(page, "title");
        }

        if (v == NULL) {
            v = ngx_cdp_fmt_text(msg, "name");
        }

        rc |= ngx_cdp_fmt_param_str(params, "page_title", v,
                                    NGX_CDP_FMT_GA4_TITLE_MAX);

        rc |= ngx_cdp_fmt_props(params, props, type);
        break;

    case NGX_CDP_FMT_SCREEN:
        s = "screen_view";

        rc |= ngx_cdp_fmt_param_str(params, "screen_name",
                                    ngx_cdp_fmt_text(msg, "name"),
                                    NGX_CDP_FMT_GA4_VALUE_MAX);

        rc |= ngx_cdp_fmt_props(params, props, type);
        break;

    case NGX_CDP_FMT_TRACK:
        v = json_object_get(msg, "event");

        if (json_is_string(v)) {
            ngx_cdp_fmt_name(json_string_value(v), json_string_length(v),
                             NGX_CDP_FMT_EVENT_NAME, name);
        } else {
            ngx_cdp_fmt_name("", 0, NGX_CDP_FMT_EVENT_NAME, name);
        }

        s = name;

        rc |= ngx_cdp_fmt_props(params, props, type);
        break;

    case NGX_CDP_FMT_IDENTIFY:
        s = "login";

        rc |= ngx_cdp_fmt_param(params, "method", json_string("ngx_cdp"));
        break;

    default: /* NGX_CDP_FMT_GROUP */
        s = "join_group";

        v = json_object_get(msg, "groupId");

        if (json_is_integer(v)) {
            snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT,
                     json_integer_value(v));
            value = json_string(num);

            rc |= value ? ngx_cdp_fmt_param(params, "group_id", value) : -1;

        } else {
            rc |= ngx_cdp_fmt_param_str(params, "group_id",
                                        ngx_cdp_fmt_text(msg, "groupId"),
                                        NGX_CDP_FMT_GA4_VALUE_MAX);
        }

        break;
    }

    if (rc
        || json_object_set_new(params, NGX_CDP_FMT_ENGAGEMENT,
                               json_integer(1))
        || json_object_set_new(e, "name", json_string(s))
        || json_object_set(e, "params", params))
    {
        goto failed;
    }

    if (us >= 0
        && json_object_set_new(e, "timestamp_micros", json_integer(us)))
    {
        goto failed;
    }

    json_decref(params);

    return json_array_append_new(events, e);

failed:

    json_decref(params);
    json_decref(e);

    return -1;
}


/*
 * The scalar traits of an identify message into user_props: the first of
 * a name within the message, replacing another message's.  Returns -1
 * when memory ran out.
 */

static int
ngx_cdp_fmt_ga4_traits(json_t *user_props, json_t *msg)
{
    int          rc, known;
    char         name[NGX_CDP_FMT_NAME_LEN];
    char         seen[NGX_CDP_FMT_GA4_MAX_USER_PROPS][NGX_CDP_FMT_NAME_LEN];
    size_t       i, nseen;
    json_t      *traits, *v, *value, *wrap;
    const char  *key;

    traits = json_object_get(msg, "traits");

    if (!json_is_object(traits)) {
        return 0;
    }

    nseen = 0;

    json_object_foreach(traits, key, v) {

        if (ngx_cdp_fmt_name(key, strlen(key), NGX_CDP_FMT_USER_NAME, name)
            == 0
            || ngx_cdp_fmt_personal(name, NGX_CDP_FMT_USER_NAME))
        {
            continue;
        }

        for (i = 0; i < nseen; i++) {
            if (strcmp(seen[i], name) == 0) {
                break;
            }
        }

        if (i < nseen) {
            continue;
        }

        known = json_object_get(user_props, name) != NULL;

        if (!known
            && json_object_size(user_props)
               >= NGX_CDP_FMT_GA4_MAX_USER_PROPS)
        {
            continue;
        }

        rc = ngx_cdp_fmt_value(v, NGX_CDP_FMT_GA4_USER_VALUE_MAX, &value);

        if (rc == 0) {
            continue;
        }

        if (rc < 0) {
            return -1;
        }

        wrap = json_object();

        if (wrap == NULL) {
            json_decref(value);
            return -1;
        }

        /* set_new replaces a known name's value in its place */

        if (json_object_set_new(wrap, "value", value)) {
            json_decref(wrap);
            return -1;
        }

        if (json_object_set_new(user_props, name, wrap)) {
            return -1;
        }

        /* never more than fit: each is in user_props, which is capped */

        if (nseen < NGX_CDP_FMT_GA4_MAX_USER_PROPS) {
            memcpy(seen[nseen++], name, sizeof(name));
        }
    }

    return 0;
}


char *
ngx_cdp_fmt_ga4(const ngx_cdp_fmt_str_t *ev, size_t n, size_t *len)
{
    int          type, oom;
    char        *body;
    size_t       i;
    json_t      *msg, *root, *events, *user_props, *v;
    int64_t      us, first_us;
    char         anon[NGX_CDP_FMT_ID_MAX + 1], uid[NGX_CDP_FMT_ID_MAX + 1];
    char         client[NGX_CDP_FMT_ID_MAX + 1];
    char         first_user[NGX_CDP_FMT_ID_MAX + 1];
    char         user[NGX_CDP_FMT_ID_MAX + 1];

    *len = 0;

    body = NULL;
    root = NULL;
    first_us = -1;
    client[0] = '\0';
    first_user[0] = '\0';
    user[0] = '\0';

    events = json_array();
    user_props = json_object();

    if (events == NULL || user_props == NULL) {
        goto failed;
    }

    for (i = 0; i < n; i++) {
        msg = ngx_cdp_fmt_load(ev[i].data, ev[i].len, &oom);

        if (msg == NULL) {
            if (oom) {
                goto failed;
            }

            continue;
        }

        type = ngx_cdp_fmt_type(msg);

        ngx_cdp_fmt_id(json_object_get(msg, "anonymousId"), anon);
        ngx_cdp_fmt_id(json_object_get(msg, "userId"), uid);

        if (client[0] == '\0' && anon[0] != '\0') {
            memcpy(client, anon, sizeof(anon));
        }

        if (uid[0] != '\0') {
            if (first_user[0] == '\0') {
                memcpy(first_user, uid, sizeof(uid));
            }

            memcpy(user, uid, sizeof(uid));
        }

        if (type == NGX_CDP_FMT_UNKNOWN || type == NGX_CDP_FMT_ALIAS
            || json_array_size(events) >= NGX_CDP_FMT_GA4_MAX_EVENTS)
        {
            json_decref(msg);
            continue;
        }

        us = ngx_cdp_fmt_event_time(msg);

        if (json_array_size(events) == 0) {
            first_us = us;
        }

        if (ngx_cdp_fmt_ga4_event(events, msg, type,
                                  us == first_us ? -1 : us)
            || (type == NGX_CDP_FMT_IDENTIFY
                && ngx_cdp_fmt_ga4_traits(user_props, msg)))
        {
            json_decref(msg);
            goto failed;
        }

        json_decref(msg);
    }

    if (client[0] == '\0') {
        memcpy(client, first_user, sizeof(first_user));
    }

    if (json_array_size(events) == 0 || client[0] == '\0') {
        json_decref(events);
        json_decref(user_props);
        return NULL;
    }

    root = json_object();

    if (root == NULL
        || json_object_set_new(root, "client_id", json_string(client)))
    {
        goto failed;
    }

    if (user[0] != '\0'
        && json_object_set_new(root, "user_id", json_string(user)))
    {
        goto failed;
    }

    if (first_us >= 0) {
        v = json_integer(first_us);

        if (json_object_set_new(root, "timestamp_micros", v)) {
            goto failed;
        }
    }

    if (json_object_size(user_props)
        && json_object_set(root, "user_properties", user_props))
    {
        goto failed;
    }

    if (json_object_set(root, "events", events)) {
        goto failed;
    }

    body = ngx_cdp_fmt_dump(root, len);

    if (body == NULL) {
        goto failed;
    }

    json_decref(root);
    json_decref(events);
    json_decref(user_props);

    return body;

failed:

    json_decref(root);
    json_decref(events);
    json_decref(user_props);

    *len = 1;

    return NULL;
}


/* dumping, into malloc()'s memory */

static int
ngx_cdp_fmt_dump_cb(const char *buf, size_t size, void *data)
{
    char               *p;
    size_t              want;
    ngx_cdp_fmt_buf_t  *b;

    b = data;

    /* one byte kept for the NUL */

    if (size >= b->size - b->len) {
        if (size > SIZE_MAX / 4 - b->len) {
            return -1;
        }

        want = b->size ? b->size * 2 : 1024;

        if (want <= b->len + size) {
            want = b->len + size + 1;
        }

        p = realloc(b->data, want);
        if (p == NULL) {
            return -1;
        }

        b->data = p;
        b->size = want;
    }

    memcpy(b->data + b->len, buf, size);
    b->len += size;

    return 0;
}


static char *
ngx_cdp_fmt_dump(json_t *root, size_t *len)
{
    ngx_cdp_fmt_buf_t  b;

    b.data = NULL;
    b.len = 0;
    b.size = 0;

    if (json_dump_callback(root, ngx_cdp_fmt_dump_cb, &b,
                           NGX_CDP_FMT_DUMP_FLAGS)
        != 0
        || b.data == NULL)
    {
        free(b.data);
        return NULL;
    }

    b.data[b.len] = '\0';
    *len = b.len;

    return b.data;
}


void
ngx_cdp_fmt_free(char *body)
{
    free(body);
}
