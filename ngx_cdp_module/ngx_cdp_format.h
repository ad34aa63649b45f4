
/*
 * ngx_cdp: the bodies sent to destinations, rendered from stored events.
 *
 * Every event is stored as one compact Segment-spec JSON object (the
 * pixel's and the HTTP API's alike, see ngx_cdp_segment.h): "type", the
 * ids, "event" or "name", "properties" or "traits", "context",
 * "timestamp" and "receivedAt".  These functions read such objects and
 * write what a destination takes: a Segment batch, or a Google Analytics 4
 * Measurement Protocol body.  Deletion notices are not rendered here.
 *
 * No nginx types: the unit tests (tests/unit) and the fuzz target
 * (tests/fuzz) link ngx_cdp_format.c with jansson alone.  Bodies are
 * allocated with malloc(), whatever allocator jansson was given, and
 * released with ngx_cdp_fmt_free().  Nothing here keeps state between
 * calls or sets jansson's.
 *
 * Events are parsed by jansson with JSON_REJECT_DUPLICATES.  One that is
 * not a JSON object, that has a raw NUL byte, a duplicate key, invalid
 * UTF-8 or a number out of range is malformed: ngx_cdp_fmt_info() says
 * so and the GA4 renderer skips it.  Stored events are none of these;
 * the checks are there so that no input can make a bad body.
 */


#ifndef _NGX_CDP_FORMAT_H_INCLUDED_
#define _NGX_CDP_FORMAT_H_INCLUDED_


#include <stddef.h>


/* message types: the same numbers as NGX_CDP_SEGMENT_TRACK ... ALIAS */
#define NGX_CDP_FMT_UNKNOWN              -1
#define NGX_CDP_FMT_TRACK                0
#define NGX_CDP_FMT_IDENTIFY             1
#define NGX_CDP_FMT_PAGE                 2
#define NGX_CDP_FMT_SCREEN               3
#define NGX_CDP_FMT_GROUP                4
#define NGX_CDP_FMT_ALIAS                5

#define NGX_CDP_FMT_ID_MAX               200      /* bytes of an id */

/* GA4's collection limits (Measurement Protocol, standard properties) */
#define NGX_CDP_FMT_GA4_MAX_EVENTS       25       /* per request */
#define NGX_CDP_FMT_GA4_MAX_PARAMS       25       /* per event */
#define NGX_CDP_FMT_GA4_MAX_USER_PROPS   25       /* per request */
#define NGX_CDP_FMT_GA4_NAME_MAX         40       /* event, param names */
#define NGX_CDP_FMT_GA4_USER_PROP_MAX    24       /* user property names */
#define NGX_CDP_FMT_GA4_VALUE_MAX        100      /* param values */
#define NGX_CDP_FMT_GA4_USER_VALUE_MAX   36       /* user property values */
#define NGX_CDP_FMT_GA4_LOCATION_MAX     1000     /* page_location */
#define NGX_CDP_FMT_GA4_REFERRER_MAX     420      /* page_referrer */
#define NGX_CDP_FMT_GA4_TITLE_MAX        300      /* page_title */
#define NGX_CDP_FMT_GA4_BODY_MAX         130000   /* bytes, see below */


typedef struct {
    const char    *data;
    size_t         len;
} ngx_cdp_fmt_str_t;


/*
 * What a stored event is, for grouping events by destination and client.
 * The ids are NUL-terminated copies: "userId" and "anonymousId" when a
 * string of 1 to NGX_CDP_FMT_ID_MAX bytes (no NUL byte: JSON cannot carry
 * one here) or an integer (its decimal string); "" when absent, null,
 * of another JSON type, empty or longer than that.
 */
typedef struct {
    int            type;            /* NGX_CDP_FMT_TRACK ... UNKNOWN */
    char           anonymous_id[NGX_CDP_FMT_ID_MAX + 1];
    char           user_id[NGX_CDP_FMT_ID_MAX + 1];
} ngx_cdp_fmt_info_t;


/*
 * Reads one stored event.  type is from its "type" string ("track",
 * "identify", "page", "screen", "group", "alias", exactly), else
 * NGX_CDP_FMT_UNKNOWN.  Returns 0 and fills info; or returns -1, with
 * info filled as for an event of unknown type and no ids, when json is
 * malformed (see above).  Memory running out reads as malformed: jansson's
 * parser cannot always tell the two apart.  json may be NULL when len is
 * 0, and needs no NUL after it.
 */
int ngx_cdp_fmt_info(const char *json, size_t len, ngx_cdp_fmt_info_t *info);


/*
 * A Segment batch (https://segment.com/docs/connections/sources/catalog/
 * libraries/server/http-api/#batch):
 *
 *   {"batch":[EVENT,EVENT,...],"sentAt":"SENT_AT"}
 *
 * the n events copied byte for byte, in order, without parsing them: they
 * are stored copies, compact JSON objects already.  This is no
 * validation, but an event whose first and last bytes (JSON white space
 * aside) are not '{' and '}' is left out, so that a damaged entry cannot
 * break the array's syntax; every event that ngx_cdp_fmt_info() reads is
 * kept.  sent_at, the caller's ISO-8601 time, is written as a JSON
 * string, escaped (a byte above 0x7f as '?': an ISO-8601 time has none);
 * without "sentAt" when sent_at is NULL.  n may be 0, and ev[i].data NULL
 * when ev[i].len is 0.  Segment's own limits (500 KB a batch, 32 KB an
 * event) are the caller's to keep.
 *
 * Returns the body, NUL-terminated, with its length (without the NUL) in
 * *len; NULL when memory runs out.
 */
char *ngx_cdp_fmt_segment(const ngx_cdp_fmt_str_t *ev, size_t n,
    const char *sent_at, size_t *len);


/*
 * A GA4 Measurement Protocol body (developers.google.com/analytics/
 * devguides/collection/protocol/ga4/sending-events) of the n events of
 * one client, in order: the caller groups them by anonymousId, or by
 * userId when they have none, and sends at most
 * NGX_CDP_FMT_GA4_MAX_EVENTS (events rendered past that are left out).
 * ev[i].data may be NULL when ev[i].len is 0.  GA4 drops events more
 * than 72 hours old: that is the caller's to know, not the renderer's.
 *
 *   {"client_id":"...","user_id":"...","timestamp_micros":N,
 *    "user_properties":{"NAME":{"value":V},...},
 *    "events":[{"name":"...","params":{...},"timestamp_micros":N},...]}
 *
 * client_id    the first anonymousId of the events, else their first
 *              userId (ids as ngx_cdp_fmt_info() reads them)
 * user_id      the last userId of the events (aliases included); absent
 *              when none has one
 * timestamp_micros
 *              the first rendered event's time in microseconds since
 *              1970: its "timestamp", else "originalTimestamp", else
 *              "receivedAt", the first of them that is an RFC 3339 time
 *              as ngx_cdp_segment_time() takes it (fraction digits past
 *              the sixth are cut); absent when none is, or when it is
 *              before 1970.  An event whose own time differs from it has
 *              its own "timestamp_micros", which GA4 prefers.
 * user_properties
 *              the scalar "traits" of identify events; absent when none
 * events       one per event:
 *
 *   page       "page_view": page_location (properties.url, else
 *              context.page.url), page_referrer (properties.referrer,
 *              else context.page.referrer), page_title (properties.title,
 *              else context.page.title, else "name"), each when a
 *              non-empty string, cut to 1000, 420 and 300 characters
 *              (GA4's limits for these three); then the properties
 *   screen     "screen_view": screen_name ("name", when a non-empty
 *              string), then the properties
 *   track      "event" made a GA4 name (below), then the properties
 *   identify   "login" with method "ngx_cdp"
 *   group      "join_group" with group_id (the groupId, string or
 *              integer)
 *   alias, a type of no other name: no event
 *
 * and "engagement_time_msec":1 last in every event's params (GA4 shows
 * no event without it in some reports), counted in the 25 params.
 *
 * Properties: the members of "properties" that are strings, integers,
 * reals or booleans (1 and 0), first come first kept, for page except
 * url, referrer and title.  Null, objects and arrays are skipped, and
 * properties named email or phone (GA4 takes no personal data).  At most
 * NGX_CDP_FMT_GA4_MAX_PARAMS params in all; a name already used (after
 * the changes below) keeps its first value.
 *
 * Names.  An event name: lowercased; each run of bytes other than a-z,
 * 0-9 and '_' made one '_'; '_' trimmed at both ends; "e_" put before it
 * unless it starts with a letter; cut to 40 characters (and '_' trimmed
 * at the end again); "e_" put before a name GA4 reserves (first_visit,
 * session_start, ..., and any starting with "firebase_", "google_" or
 * "ga_"), cut again; "e_event" when nothing is left.  A param name: the
 * same with "p_" for "e_", and a property whose name comes out empty is
 * skipped.  A user property name: as a param's, cut to 24 characters,
 * with GA4's reserved user property names (first_open_time, user_id, ...)
 * prefixed "p_".
 *
 * Values.  Strings are cut to 100 characters (user properties: 36),
 * counted as Unicode code points, so a cut never splits one.  Integers and
 * reals as they are, true and false as 1 and 0.
 *
 * User properties: from the "traits" of every identify event, as
 * properties are taken (scalars, booleans as 1 and 0, first name kept
 * within one event), but a later identify's value replaces an earlier
 * one's; at most NGX_CDP_FMT_GA4_MAX_USER_PROPS.  Traits that name a
 * person are skipped: email, phone, name, first_name, last_name,
 * firstname, lastname, username, birthday, address (after the name
 * changes).
 *
 * The body is compact JSON, valid UTF-8, with keys in the order shown:
 * the same events give the same bytes.  It stays far below GA4's 130 kB
 * for real events, but 25 events of 25 long values of non-ASCII
 * characters can pass it: the caller compares *len with
 * NGX_CDP_FMT_GA4_BODY_MAX and sends such a group in halves.
 *
 * Returns the body, NUL-terminated, with its length in *len.  Returns
 * NULL with *len = 0 when nothing is to be sent: no event renders (all
 * are aliases, of unknown type or malformed) or none has an id.  Returns
 * NULL with *len = 1 when memory runs out (an event whose parse ran out
 * of memory may have been taken for a malformed one, as in
 * ngx_cdp_fmt_info()).
 */
char *ngx_cdp_fmt_ga4(const ngx_cdp_fmt_str_t *ev, size_t n, size_t *len);


/* releases a body of ngx_cdp_fmt_segment() or ngx_cdp_fmt_ga4(); NULL ok */
void ngx_cdp_fmt_free(char *body);


#endif /* _NGX_CDP_FORMAT_H_INCLUDED_ */
