
/*
 * ngx_cdp_format.c, the destination bodies.  The input is split at '\n':
 * the first line is Segment's sentAt (NULL when empty, cut at a NUL), the
 * others (at most FUZZ_EVENTS, the last one keeping any further '\n') are
 * stored events.  Every function sees every event, each an exact-size
 * copy; jansson, read independently here, is the oracle.
 *
 * - ngx_cdp_fmt_info() says -1 exactly for events that are not a JSON
 *   object (or have a NUL byte), and then nothing else; otherwise the type
 *   and ids that the event's JSON says.
 * - ngx_cdp_fmt_segment() has exactly the length the events it keeps and
 *   the escaped sentAt make; when they are all JSON objects the body is
 *   a JSON object whose batch holds them, equal, in order, and whose
 *   sentAt is the caller's.
 * - ngx_cdp_fmt_ga4() gives the same bytes twice; NULL with len 0 exactly
 *   when no event renders or none has an id; else a JSON object within
 *   GA4's limits: names valid and not reserved, at most 25 events, params
 *   and user properties, values cut, engagement_time_msec last; client_id
 *   and user_id what the events say; track names what a reference
 *   implementation of the rules makes of them; timestamp_micros what
 *   ngx_cdp_segment_time() makes of the first rendered event's times.
 */


#include "fuzz.h"
#include "ngx_cdp_format.h"
#include "ngx_cdp_segment.h"

#include <jansson.h>


#define FUZZ_EVENTS    32
#define FUZZ_ID_LEN    (NGX_CDP_FMT_ID_MAX + 1)


typedef struct {
    json_t        *json;            /* the object, or NULL: malformed */
    int            type;
    char           anon[FUZZ_ID_LEN];
    char           user[FUZZ_ID_LEN];
} fuzz_event_t;


static const char  *fuzz_reserved_events[] = {
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

static const char  *fuzz_reserved_users[] = {
    "first_open_time", "first_visit_time", "last_deep_link_referrer",
    "user_id", "first_open_after_install", NULL
};

static const char  *fuzz_personal_users[] = {
    "email", "phone", "name", "first_name", "last_name", "firstname",
    "lastname", "username", "birthday", "address", NULL
};


static int
fuzz_in(const char *s, const char **list)
{
    size_t  i;

    for (i = 0; list[i]; i++) {
        if (strcmp(s, list[i]) == 0) {
            return 1;
        }
    }

    return 0;
}


static int
fuzz_reserved_prefix(const char *s)
{
    return strncmp(s, "firebase_", 9) == 0 || strncmp(s, "google_", 7) == 0
           || strncmp(s, "ga_", 3) == 0;
}


static int
fuzz_same_str(json_t *v, const char *s)
{
    return json_is_string(v) && s != NULL
           && json_string_length(v) == strlen(s)
           && strcmp(json_string_value(v), s) == 0;
}


/* the oracle's reading of an event */

static void
fuzz_id(json_t *v, char *dst)
{
    dst[0] = '\0';

    if (json_is_integer(v)) {
        snprintf(dst, FUZZ_ID_LEN, "%lld", (long long) json_integer_value(v));

    } else if (json_is_string(v) && json_string_length(v) > 0
               && json_string_length(v) <= NGX_CDP_FMT_ID_MAX)
    {
        memcpy(dst, json_string_value(v), json_string_length(v) + 1);
    }
}


static void
fuzz_read(const u_char *p, size_t len, fuzz_event_t *e)
{
    size_t       i;
    json_t      *v;
    const char  *types[] = { "track", "identify", "page", "screen",
                             "group", "alias" };

    e->json = NULL;
    e->type = NGX_CDP_FMT_UNKNOWN;
    e->anon[0] = '\0';
    e->user[0] = '\0';

    if (len == 0 || memchr(p, '\0', len) != NULL) {
        return;
    }

    e->json = json_loadb((const char *) p, len, JSON_REJECT_DUPLICATES,
                         NULL);

    if (!json_is_object(e->json)) {
        json_decref(e->json);
        e->json = NULL;
        return;
    }

    v = json_object_get(e->json, "type");

    for (i = 0; i < 6 && json_is_string(v); i++) {
        if (strcmp(json_string_value(v), types[i]) == 0
            && strlen(types[i]) == json_string_length(v))
        {
            e->type = (int) i;
        }
    }

    fuzz_id(json_object_get(e->json, "anonymousId"), e->anon);
    fuzz_id(json_object_get(e->json, "userId"), e->user);
}


static int
fuzz_renders(const fuzz_event_t *e)
{
    return e->json != NULL && e->type != NGX_CDP_FMT_UNKNOWN
           && e->type != NGX_CDP_FMT_ALIAS;
}


/*
 * The naming rules of ngx_cdp_format.h, another way: the whole string
 * first, then trimmed, prefixed and cut.  dst has len + 3 bytes at
 * least.  kind: 0 event, 1 param, 2 user property.
 */

static size_t
fuzz_ref_name(const char *s, size_t len, int kind, char *dst)
{
    int            run;
    size_t         i, n, start, max;
    unsigned char  c;

    max = kind == 2 ? 24 : 40;
    n = 0;
    run = 0;

    for (i = 0; i < len; i++) {
        c = (unsigned char) s[i];
        c = (c >= 'A' && c <= 'Z') ? c + 32 : c;

        if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_') {
            dst[n++] = c;
            run = 0;

        } else if (!run) {
            dst[n++] = '_';
            run = 1;
        }
    }

    for (start = 0; start < n && dst[start] == '_'; start++) { /* void */ }
    while (n > start && dst[n - 1] == '_') {
        n--;
    }

    memmove(dst, dst + start, n - start);
    n -= start;

    if (n == 0) {
        if (kind == 0) {
            strcpy(dst, "e_event");
            return 7;
        }

        dst[0] = '\0';
        return 0;
    }

    for (i = 0; i < 2; i++) {
        dst[n] = '\0';

        if (i == 0 ? (dst[0] >= 'a' && dst[0] <= 'z')
                   : !(fuzz_reserved_prefix(dst)
                       || (kind == 0 && fuzz_in(dst, fuzz_reserved_events))
                       || (kind == 2 && fuzz_in(dst, fuzz_reserved_users))))
        {
            if (i == 0 && n > max) {
                n = max;
                while (dst[n - 1] == '_') {
                    n--;
                }
            }

            continue;
        }

        memmove(dst + 2, dst, n);
        dst[0] = kind == 0 ? 'e' : 'p';
        dst[1] = '_';
        n += 2;

        if (n > max) {
            n = max;
        }

        while (dst[n - 1] == '_') {
            n--;
        }
    }

    dst[n] = '\0';

    return n;
}


/* a GA4 name: a letter, then a-z 0-9 _, not ending in '_', at most max */

static int
fuzz_valid_name(const char *s, size_t max)
{
    size_t  i, n;

    n = strlen(s);

    if (n == 0 || n > max || s[0] < 'a' || s[0] > 'z' || s[n - 1] == '_'
        || fuzz_reserved_prefix(s))
    {
        return 0;
    }

    for (i = 0; i < n; i++) {
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9')
              || s[i] == '_'))
        {
            return 0;
        }
    }

    return 1;
}


static size_t
fuzz_chars(json_t *v)
{
    size_t       i, n, chars;
    const char  *s;

    s = json_string_value(v);
    n = json_string_length(v);

    for (i = 0, chars = 0; i < n; i++) {
        chars += ((unsigned char) s[i] & 0xc0) != 0x80;
    }

    return chars;
}


/* the event's time, ms, as ngx_cdp_segment_time() reads it; 0: none */

static int
fuzz_time(json_t *msg, int64_t *ms)
{
    size_t       i;
    json_t      *v;
    const char  *keys[] = { "timestamp", "originalTimestamp", "receivedAt" };

    for (i = 0; i < 3; i++) {
        v = json_object_get(msg, keys[i]);

        if (json_is_string(v)
            && ngx_cdp_segment_time((const u_char *) json_string_value(v),
                                    json_string_length(v), ms))
        {
            return *ms >= 0;
        }
    }

    return 0;
}


static int
fuzz_braced(const ngx_cdp_fmt_str_t *s)
{
    size_t       a, b;
    const char  *ws;

    ws = " \t\r\n";

    for (a = 0; a < s->len && s->data[a] && strchr(ws, s->data[a]); a++) {
        /* void */
    }

    for (b = s->len; b > a && s->data[b - 1] && strchr(ws, s->data[b - 1]);
         b--)
    {
        /* void */
    }

    return b - a >= 2 && s->data[a] == '{' && s->data[b - 1] == '}';
}


static void
fuzz_check_segment(const ngx_cdp_fmt_str_t *s, const fuzz_event_t *e,
    size_t n, const char *sent_at)
{
    int      valid;
    char    *body;
    size_t   i, k, len, want;
    json_t  *j, *batch, *v;

    want = 10 + 1 + 1;
    valid = 1;
    k = 0;

    for (i = 0; i < n; i++) {
        /* every event that is an object is kept */
        FUZZ_CHECK(e[i].json == NULL || fuzz_braced(&s[i]));

        if (fuzz_braced(&s[i])) {
            want += s[i].len + (k ? 1 : 0);
            valid = valid && e[i].json != NULL;
            k++;
        }
    }

    if (sent_at) {
        want += 10 + 2;

        for (i = 0; sent_at[i]; i++) {
            want += (sent_at[i] == '"' || sent_at[i] == '\\') ? 2
                    : ((unsigned char) sent_at[i] < 0x20) ? 6 : 1;
        }
    }

    body = ngx_cdp_fmt_segment(s, n, sent_at, &len);

    FUZZ_CHECK(body != NULL);
    FUZZ_CHECK(len == want && body[len] == '\0');
    FUZZ_CHECK(memcmp(body, "{\"batch\":[", 10) == 0 && body[len - 1] == '}');

    if (valid) {
        j = json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL);
        FUZZ_CHECK(json_is_object(j));

        batch = json_object_get(j, "batch");
        FUZZ_CHECK(json_is_array(batch) && json_array_size(batch) == k);

        for (i = 0, k = 0; i < n; i++) {
            if (fuzz_braced(&s[i])) {
                FUZZ_CHECK(json_equal(json_array_get(batch, k++),
                                      e[i].json));
            }
        }

        v = json_object_get(j, "sentAt");

        if (sent_at == NULL) {
            FUZZ_CHECK(v == NULL && json_object_size(j) == 1);

        } else {
            FUZZ_CHECK(json_is_string(v)
                       && json_string_length(v) == strlen(sent_at));

            for (i = 0; sent_at[i]; i++) {
                FUZZ_CHECK(json_string_value(v)[i]
                           == ((unsigned char) sent_at[i] >= 0x80
                               ? '?' : sent_at[i]));
            }
        }

        json_decref(j);
    }

    ngx_cdp_fmt_free(body);
}


static void
fuzz_check_params(json_t *params)
{
    json_t      *v;
    const char  *key, *last;
    size_t       max;

    FUZZ_CHECK(json_is_object(params));
    FUZZ_CHECK(json_object_size(params) >= 1
               && json_object_size(params) <= NGX_CDP_FMT_GA4_MAX_PARAMS);

    last = NULL;

    json_object_foreach(params, key, v) {
        FUZZ_CHECK(fuzz_valid_name(key, NGX_CDP_FMT_GA4_NAME_MAX));
        FUZZ_CHECK(strcmp(key, "email") != 0 && strcmp(key, "phone") != 0);
        FUZZ_CHECK(json_is_string(v) || json_is_integer(v)
                   || json_is_real(v));

        max = strcmp(key, "page_location") == 0 ? 1000
              : strcmp(key, "page_referrer") == 0 ? 420
              : strcmp(key, "page_title") == 0 ? 300 : 100;

        FUZZ_CHECK(!json_is_string(v) || fuzz_chars(v) <= max);

        last = key;
    }

    FUZZ_CHECK(last != NULL && strcmp(last, "engagement_time_msec") == 0);
    FUZZ_CHECK(json_integer_value(json_object_get(params,
                                                  "engagement_time_msec"))
               == 1);
}


static void
fuzz_check_ga4(const ngx_cdp_fmt_str_t *s, const fuzz_event_t *e, size_t n)
{
    int           renders, has_time, t0_ok;
    char         *body, *again, name[8192];
    size_t        i, k, len, len2, nrender, idx[NGX_CDP_FMT_GA4_MAX_EVENTS];
    json_t       *j, *events, *ev, *v, *up, *pv;
    int64_t       t0, t, us, us0;
    const char   *client, *user, *key, *ename;

    body = ngx_cdp_fmt_ga4(s, n, &len);
    again = ngx_cdp_fmt_ga4(s, n, &len2);

    FUZZ_CHECK(len == len2);
    FUZZ_CHECK((body == NULL) == (again == NULL));
    FUZZ_CHECK(body == NULL || memcmp(body, again, len + 1) == 0);
    ngx_cdp_fmt_free(again);

    /* what the events say */

    client = NULL;
    user = NULL;
    nrender = 0;

    for (i = 0; i < n; i++) {
        if (e[i].json == NULL) {
            continue;
        }

        if (client == NULL && e[i].anon[0]) {
            client = e[i].anon;
        }

        if (e[i].user[0]) {
            user = e[i].user;
        }

        if (fuzz_renders(&e[i]) && nrender < NGX_CDP_FMT_GA4_MAX_EVENTS) {
            idx[nrender++] = i;
        }
    }

    for (i = 0; client == NULL && i < n; i++) {
        if (e[i].json && e[i].user[0]) {
            client = e[i].user;
        }
    }

    renders = nrender > 0 && client != NULL;

    if (!renders) {
        FUZZ_CHECK(body == NULL && len == 0);
        return;
    }

    FUZZ_CHECK(body != NULL && strlen(body) == len);

    j = json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL);
    FUZZ_CHECK(json_is_object(j));

    json_object_foreach(j, key, v) {
        FUZZ_CHECK(strcmp(key, "client_id") == 0
                   || strcmp(key, "user_id") == 0
                   || strcmp(key, "timestamp_micros") == 0
                   || strcmp(key, "user_properties") == 0
                   || strcmp(key, "events") == 0);
    }

    FUZZ_CHECK(fuzz_same_str(json_object_get(j, "client_id"), client));
    v = json_object_get(j, "user_id");
    FUZZ_CHECK(user == NULL ? v == NULL : fuzz_same_str(v, user));

    /* the request's time is the first rendered event's */

    has_time = fuzz_time(e[idx[0]].json, &t0);
    t0_ok = has_time;
    v = json_object_get(j, "timestamp_micros");
    us0 = -1;

    FUZZ_CHECK((v != NULL) == has_time);

    if (v) {
        FUZZ_CHECK(json_is_integer(v));
        us0 = json_integer_value(v);
        FUZZ_CHECK(us0 >= 0 && us0 / 1000 == t0);
    }

    /* events */

    events = json_object_get(j, "events");
    FUZZ_CHECK(json_is_array(events) && json_array_size(events) == nrender);

    for (k = 0; k < nrender; k++) {
        ev = json_array_get(events, k);
        FUZZ_CHECK(json_is_object(ev));

        json_object_foreach(ev, key, v) {
            FUZZ_CHECK(strcmp(key, "name") == 0 || strcmp(key, "params") == 0
                       || strcmp(key, "timestamp_micros") == 0);
        }

        v = json_object_get(ev, "name");
        FUZZ_CHECK(json_is_string(v));
        ename = json_string_value(v);
        FUZZ_CHECK(fuzz_valid_name(ename, NGX_CDP_FMT_GA4_NAME_MAX));
        FUZZ_CHECK(!fuzz_in(ename, fuzz_reserved_events));

        switch (e[idx[k]].type) {

        case NGX_CDP_FMT_PAGE:
            FUZZ_CHECK(strcmp(ename, "page_view") == 0);
            break;

        case NGX_CDP_FMT_SCREEN:
            FUZZ_CHECK(strcmp(ename, "screen_view") == 0);
            break;

        case NGX_CDP_FMT_IDENTIFY:
            FUZZ_CHECK(strcmp(ename, "login") == 0);
            break;

        case NGX_CDP_FMT_GROUP:
            FUZZ_CHECK(strcmp(ename, "join_group") == 0);
            break;

        default:
            v = json_object_get(e[idx[k]].json, "event");

            if (json_is_string(v) && json_string_length(v) < 8000) {
                fuzz_ref_name(json_string_value(v), json_string_length(v), 0,
                              name);
                FUZZ_CHECK(strcmp(ename, name) == 0);

            } else if (!json_is_string(v)) {
                FUZZ_CHECK(strcmp(ename, "e_event") == 0);
            }
        }

        fuzz_check_params(json_object_get(ev, "params"));

        /* its own time: only when it differs */

        v = json_object_get(ev, "timestamp_micros");
        has_time = fuzz_time(e[idx[k]].json, &t);

        if (v) {
            FUZZ_CHECK(k > 0 && has_time && json_is_integer(v));
            us = json_integer_value(v);
            FUZZ_CHECK(us >= 0 && us / 1000 == t && us != us0);

        } else {
            FUZZ_CHECK(!has_time || (t0_ok && t == t0));
        }
    }

    /* user properties */

    up = json_object_get(j, "user_properties");

    if (up) {
        FUZZ_CHECK(json_is_object(up) && json_object_size(up) >= 1
                   && json_object_size(up)
                      <= NGX_CDP_FMT_GA4_MAX_USER_PROPS);

        json_object_foreach(up, key, v) {
            FUZZ_CHECK(fuzz_valid_name(key, NGX_CDP_FMT_GA4_USER_PROP_MAX));
            FUZZ_CHECK(!fuzz_in(key, fuzz_reserved_users)
                       && !fuzz_in(key, fuzz_personal_users));
            FUZZ_CHECK(json_is_object(v) && json_object_size(v) == 1);

            pv = json_object_get(v, "value");
            FUZZ_CHECK(json_is_integer(pv) || json_is_real(pv)
                       || (json_is_string(pv)
                           && fuzz_chars(pv)
                              <= NGX_CDP_FMT_GA4_USER_VALUE_MAX));
        }
    }

    json_decref(j);
    ngx_cdp_fmt_free(body);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int                 rc;
    char               *sent_at;
    size_t              i, n, start, end, nl, off[FUZZ_EVENTS];
    u_char             *copy[FUZZ_EVENTS];
    fuzz_event_t        e[FUZZ_EVENTS];
    ngx_cdp_fmt_str_t   s[FUZZ_EVENTS];
    ngx_cdp_fmt_info_t  info;
    const uint8_t      *p;

    FUZZ_CHECK(NGX_CDP_FMT_TRACK == NGX_CDP_SEGMENT_TRACK
               && NGX_CDP_FMT_IDENTIFY == NGX_CDP_SEGMENT_IDENTIFY
               && NGX_CDP_FMT_PAGE == NGX_CDP_SEGMENT_PAGE
               && NGX_CDP_FMT_SCREEN == NGX_CDP_SEGMENT_SCREEN
               && NGX_CDP_FMT_GROUP == NGX_CDP_SEGMENT_GROUP
               && NGX_CDP_FMT_ALIAS == NGX_CDP_SEGMENT_ALIAS);

    /* the first line: sentAt */

    p = memchr(data, '\n', size);
    nl = p ? (size_t) (p - data) : size;

    sent_at = NULL;

    if (nl) {
        sent_at = malloc(nl + 1);
        FUZZ_CHECK(sent_at != NULL);
        memcpy(sent_at, data, nl);
        sent_at[nl] = '\0';
    }

    /* the events */

    n = 0;
    start = nl + 1;

    while (start <= size && p != NULL && n < FUZZ_EVENTS) {
        p = (n == FUZZ_EVENTS - 1) ? NULL
                                   : memchr(data + start, '\n', size - start);
        end = p ? (size_t) (p - data) : size;

        off[n] = start;
        copy[n] = fuzz_dup(data + start, end - start);
        s[n].data = (const char *) copy[n];
        s[n].len = end - start;

        fuzz_read(copy[n], s[n].len, &e[n]);

        n++;
        start = end + 1;
    }

    /* info */

    for (i = 0; i < n; i++) {
        memset(&info, 0x5a, sizeof(info));
        rc = ngx_cdp_fmt_info(s[i].data, s[i].len, &info);

        FUZZ_CHECK(rc == (e[i].json ? 0 : -1));
        FUZZ_CHECK(info.type == e[i].type);
        FUZZ_CHECK(strcmp(info.anonymous_id, e[i].anon) == 0);
        FUZZ_CHECK(strcmp(info.user_id, e[i].user) == 0);
    }

    fuzz_check_segment(s, e, n, sent_at);
    fuzz_check_ga4(s, e, n);

    for (i = 0; i < n; i++) {
        FUZZ_CHECK(s[i].len == 0
                   || memcmp(copy[i], data + off[i], s[i].len) == 0);
        json_decref(e[i].json);
        free(copy[i]);
    }

    free(sent_at);

    return 0;
}
