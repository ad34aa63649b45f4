
/*
 * ngx_cdp: the Segment-compatible HTTP Tracking API, parsing and
 * validation (https://segment.com/docs/connections/sources/catalog/
 * libraries/server/http-api/).
 *
 * No nginx types, so the unit tests (tests/unit) and the fuzz target
 * (tests/fuzz) link ngx_cdp_segment.c with ngx_cdp_text.c and jansson.
 * Unlike the other pure files this one allocates, with malloc() (jansson
 * with its own allocator, left as it is: nothing here sets global jansson
 * state); everything a result holds is released by ngx_cdp_segment_free().
 *
 * The handler takes the endpoint from the URI tail, reads the body and
 * calls ngx_cdp_segment_parse() once.  A request is all or nothing: the
 * result holds every message of it, or none and the first error found.
 *
 *
 * Limits (Segment's):
 *
 *   a body of any endpoint but batch:  at most 32768 bytes, else 413
 *   a batch body:                      at most 512000 bytes, else 413
 *   messages in a batch:               at most 2500, else 400 (the count
 *                                      is a property of the content, not
 *                                      of its size; 413 is for sizes)
 *   one message of a batch:            its compact re-serialisation (as
 *                                      sent) at most 32768 bytes, else 413
 *                                      naming the index
 *
 * and one of ours, so that a small batch cannot make a large result: the
 * stored copies of a batch, once its top-level context and integrations
 * are merged into each message, may add up to NGX_CDP_SEGMENT_STORED_MAX
 * bytes (estimated from above, before anything is built), else 413.
 *
 *
 * JSON: parsed by jansson with JSON_REJECT_DUPLICATES.  Refused, with 400
 * and the position: a syntax error, a duplicate key, invalid UTF-8
 * (overlongs, surrogates and code points above U+10FFFF included), a raw
 * NUL byte anywhere, "\u0000" in a string, an integer outside 64 bits or
 * a real that overflows a double.  Reals are written back by jansson with
 * 17 significant digits: 19.99 is stored as 19.989999999999998, the same
 * double.  Object keys keep their order.
 *
 * The body is an object.  Any endpoint's body may carry "writeKey" (a
 * string or null), which the handler checks (Basic auth is the handler's
 * too).  Its other top-level keys are the message itself, except for batch
 * (and "import", its alias), whose body is
 *
 *   { "batch": [ message, ... ],           required, may be empty
 *     "writeKey": "...",
 *     "context": { ... },                  merged into every message's
 *     "integrations": { ... },             own, whose keys win
 *     "sentAt": "2026-11-23T07:30:00Z" }   copied to messages without one
 *
 * and each message has "type": "track", "identify", "page", "screen",
 * "group" or "alias" (not batch or import).  Outside a batch the endpoint
 * is the type, and a "type" in the body is overwritten.
 *
 *
 * A message (field names are Segment's; null counts as absent anywhere):
 *
 *   userId, anonymousId   at least one non-empty; each a string or an
 *                         integer, stored as its decimal string (Segment's
 *                         libraries send strings; a number is taken as
 *                         the id it spells).  "" counts as absent.  Alias
 *                         needs userId; its anonymousId is not needed.
 *   previousId            alias: required, non-empty string or integer
 *   groupId               group: required, non-empty string or integer
 *   event                 track: required, non-empty string
 *   name                  page, screen: a string when present
 *   properties, traits,
 *   context, integrations objects when present
 *   timestamp, originalTimestamp,
 *   sentAt                strings accepted by ngx_cdp_segment_time()
 *   messageId             a non-empty string of at most
 *                         NGX_CDP_SEGMENT_MESSAGE_ID_MAX bytes
 *
 * Other fields are kept as sent and not looked at.
 *
 *
 * What is stored of a message: the message as sent, compact, with
 *
 *   - "type" set (added last when absent, else in place);
 *   - "writeKey" removed;
 *   - "receivedAt" set to the caller's string;
 *   - integer ids replaced by their strings;
 *   - for a batch: the top-level context and integrations merged in, the
 *     message's keys winning (one level deep: a message's context.traits
 *     replaces the batch's context.traits whole), and the top-level
 *     sentAt when the message has none;
 *   - privacy: raw e-mail addresses and phone numbers never reach the
 *     event stream, so "email" and "phone" are removed from identify's
 *     "traits" and, in every message, from "context.traits" (where
 *     analytics.js-style clients copy the user's traits), whatever
 *     their JSON type;
 *   - everything else, context.library and context.ip included, as sent:
 *     the parser adds no context.ip.
 */


#ifndef _NGX_CDP_SEGMENT_H_INCLUDED_
#define _NGX_CDP_SEGMENT_H_INCLUDED_


#include "ngx_cdp_text.h"


#define NGX_CDP_SEGMENT_TRACK            0
#define NGX_CDP_SEGMENT_IDENTIFY         1
#define NGX_CDP_SEGMENT_PAGE             2
#define NGX_CDP_SEGMENT_SCREEN           3
#define NGX_CDP_SEGMENT_GROUP            4
#define NGX_CDP_SEGMENT_ALIAS            5
#define NGX_CDP_SEGMENT_BATCH            6  /* an endpoint, not a message */

#define NGX_CDP_SEGMENT_BODY_MAX         32768    /* bytes, not batch */
#define NGX_CDP_SEGMENT_BATCH_BODY_MAX   512000   /* bytes */
#define NGX_CDP_SEGMENT_BATCH_MAX        2500     /* messages */
#define NGX_CDP_SEGMENT_MESSAGE_MAX      32768    /* bytes, compact */
#define NGX_CDP_SEGMENT_STORED_MAX       4194304  /* bytes, a batch's */
#define NGX_CDP_SEGMENT_MESSAGE_ID_MAX   100      /* bytes */

#define NGX_CDP_SEGMENT_MESSAGE_LEN      320  /* error message, with NUL */
#define NGX_CDP_SEGMENT_FIELD_LEN        48   /* error field, with NUL */


/*
 * The type named by an endpoint, the URI tail: "track", "identify",
 * "page", "screen", "group", "alias", "batch" or "import" (batch), exactly
 * (case-sensitive, no slash).  Returns -1 for anything else, which the
 * handler answers with 404.
 */
int ngx_cdp_segment_endpoint(const u_char *name, size_t len);

/* "track" ... "batch"; "unknown" outside the range */
const char *ngx_cdp_segment_type_name(int type);


/*
 * A timestamp as Segment's libraries send it, RFC 3339:
 *
 *   YYYY-MM-DDThh:mm:ss[.f]Z  or  YYYY-MM-DDThh:mm:ss[.f](+|-)hh:mm
 *
 * with 1 to 9 fraction digits (milliseconds are its first three, the rest
 * is cut, not rounded), 'T' and 'Z' in either case, years 0000 to 9999,
 * days valid for their month (leap years included), hours below 24,
 * seconds up to 60 (a leap second counts as the next second), offsets up
 * to 23:59.  No offset (local time) is refused: it names no instant.
 *
 * Sets *ms to milliseconds since 1970-01-01T00:00:00Z (negative before)
 * and returns 1; returns 0 and leaves *ms alone when refused.
 */
int ngx_cdp_segment_time(const u_char *p, size_t len, int64_t *ms);

/* the same, in microseconds (the fraction's first six digits) */
int ngx_cdp_segment_time_us(const u_char *p, size_t len, int64_t *us);


/*
 * One message of a result.  Every string is NUL-terminated, owned by the
 * result and free of NUL bytes (the JSON could not carry one); a field is
 * NULL when the message has none.
 */
typedef struct {
    int            type;            /* NGX_CDP_SEGMENT_TRACK ... ALIAS */

    const char    *json;            /* the stored copy, compact JSON */
    size_t         json_len;

    const char    *user_id;         /* integers as decimal strings; */
    const char    *anonymous_id;    /* "" gives NULL */
    const char    *previous_id;     /* alias */
    const char    *group_id;        /* group */
    const char    *event;           /* track */
    const char    *message_id;

    /*
     * identify only, NULL for the other types: traits.email and
     * traits.phone, else context.traits.email and context.traits.phone,
     * as sent (not normalised); email when it is a string, phone when it
     * is a string or an integer (as its decimal string).  traits is the
     * compact JSON of identify's "traits" as sent, email and phone
     * included, NULL when it has none.  The stored copy has neither
     * address nor number.
     */
    const char    *email;
    const char    *phone;
    const char    *traits;
    size_t         traits_len;

    /*
     * timestamp, else originalTimestamp, in ms since the epoch; 0 when
     * neither is there: use receivedAt (a timestamp of exactly
     * 1970-01-01T00:00:00.000Z reads the same).  sentAt is not used to
     * correct the client's clock.
     */
    int64_t        time_ms;

    /*
     * The consent the message was sent under, from Segment's consent
     * object, context.consent.categoryPreferences: -1 when absent (or not
     * an object), else the bits (ngx_cdp_consent.h) of the categories it
     * sets to true, named (case-insensitive) analytics; marketing or
     * advertising; personalization, personalisation or functional.  Any
     * other category, and a value other than true, grants nothing.
     */
    int            consent;

    void          *mem;             /* private: the block of the above */
} ngx_cdp_segment_msg_t;


typedef struct {
    const char             *write_key;  /* the body's writeKey or NULL */
    size_t                  nmsgs;
    ngx_cdp_segment_msg_t  *msgs;       /* nmsgs, in the body's order */
} ngx_cdp_segment_t;


/*
 * What went wrong.  Status 400 or 413, or 500 when memory ran out (code
 * "out_of_memory").  code is one of (a static string):
 *
 *   invalid_json        400  syntax, duplicate key, NUL, number range
 *   invalid_utf8        400  message "invalid UTF-8 ..." with the position
 *   not_an_object       400  the body or a batch item is not an object
 *   missing_field       400  a required field is absent, null or empty
 *   invalid_field       400  a field has the wrong type or form
 *   unknown_type        400  a batch item's "type", or the endpoint
 *   too_many_messages   400  over NGX_CDP_SEGMENT_BATCH_MAX
 *   body_too_large      413
 *   message_too_large   413  one batch item over 32768 bytes
 *   batch_too_large     413  over NGX_CDP_SEGMENT_STORED_MAX stored
 *   out_of_memory       500
 *
 * message is English for people and may quote bytes of the body (a bad
 * type, jansson's "near '...'"), cut to fit: it is only ever to be written
 * out escaped, as ngx_cdp_segment_error_json() does.  field names the
 * field, with the batch prefix: "event", "batch[3].userId",
 * "batch[3]" (the item itself), "batch", "" when none.
 * index is the batch index, -1 outside a batch item.
 *
 * position, line and column are set for invalid_json and invalid_utf8
 * only, else -1.  position counts bytes from 0, line from 1, column
 * characters (UTF-8 sequences) from 1.  For invalid UTF-8 and for a raw NUL
 * byte they point at that byte.  For the other errors they are jansson's:
 * where it stopped reading, which is the end of the token its message
 * names ("{\"a\":x}" gives position 6, column 6 for the 'x' at byte 5);
 * an empty body gives position 0, line 1, column 0.
 *
 * Memory running out gives 500, but jansson's parser reports a string it
 * could not allocate as a syntax error: then it is a 400 invalid_json.
 */
typedef struct {
    int            status;
    const char    *code;
    char           message[NGX_CDP_SEGMENT_MESSAGE_LEN];
    char           field[NGX_CDP_SEGMENT_FIELD_LEN];
    long           index;
    long           position;
    long           line;
    long           column;
} ngx_cdp_segment_error_t;


/*
 * Parses and validates the body of one request to the endpoint type (from
 * ngx_cdp_segment_endpoint(), batch for import) and builds what to store.
 * received_at (not checked, copied as is: the caller's ISO-8601 time with
 * milliseconds, ngx_cdp_iso8601()) must be valid UTF-8.  body may be NULL
 * when len is 0.
 *
 * Returns 0 and fills res, to be released with ngx_cdp_segment_free(); or
 * returns the HTTP status of err, which it fills, with res emptied (its
 * free is then harmless).  res and err are the caller's.
 */
int ngx_cdp_segment_parse(int type, const u_char *body, size_t len,
    const u_char *received_at, size_t received_at_len, ngx_cdp_segment_t *res,
    ngx_cdp_segment_error_t *err);

/* releases what res holds (not res itself), and empties it */
void ngx_cdp_segment_free(ngx_cdp_segment_t *res);


/*
 * The error as the response body:
 *
 *   {"success":false,"error":CODE,"message":MESSAGE,"field":FIELD,
 *    "index":N,"position":N,"line":N,"column":N}
 *
 * without "field" when it is "", without "index" when it is -1, without
 * "position", "line" and "column" when position is -1.  Strings are
 * escaped with ngx_cdp_json_str() (bytes that are not UTF-8 become
 * U+FFFD), so the result is always valid JSON.  dst needs
 * NGX_CDP_SEGMENT_ERROR_JSON_MAX bytes; returns the length written.
 */
#define NGX_CDP_SEGMENT_ERROR_JSON_MAX                                        \
    (128 + 32 + NGX_CDP_JSON_STR_MAX(NGX_CDP_SEGMENT_MESSAGE_LEN)             \
     + NGX_CDP_JSON_STR_MAX(NGX_CDP_SEGMENT_FIELD_LEN) + 4 * 21)

size_t ngx_cdp_segment_error_json(u_char *dst,
    const ngx_cdp_segment_error_t *err);


#endif /* _NGX_CDP_SEGMENT_H_INCLUDED_ */
