
/*
 * ngx_cdp_segment_parse(), the Segment-compatible API's parser.  The first
 * byte picks the endpoint (byte % 7: 'p' track, 'q' identify, 'r' page,
 * 's' screen, 't' group, 'u' alias, 'v' batch), the rest is the body.
 *
 * - It never crashes or leaks, answers 0, 400 or 413 (500 only when
 *   memory runs out, which libFuzzer turns into a crash of its own), and
 *   the same twice.
 * - An error leaves nothing in the result; its fields are in range and
 *   its body, written into a buffer of exactly the documented size, is a
 *   JSON object naming the same code, index and position.
 * - 413 body_too_large exactly when the body is over its limit; a body
 *   with a NUL byte or invalid UTF-8 is never accepted.
 * - Every stored copy is a JSON object with the message's type, the
 *   caller's receivedAt, no writeKey, no email or phone in identify's
 *   traits nor in any context.traits; the extracted fields are what the
 *   stored copy says (ids as strings), the event time is its timestamp's
 *   (else originalTimestamp's).
 * - Storing is idempotent: a stored copy sent again to its own endpoint
 *   is accepted and stored byte for byte the same.
 */


#include "fuzz.h"
#include "ngx_cdp_segment.h"

#include <jansson.h>


#define RECEIVED  "2026-11-23T07:30:00.123Z"


static void fuzz_check_error(int rc, int type, size_t len,
    const ngx_cdp_segment_t *res, const ngx_cdp_segment_error_t *err);
static void fuzz_check_msg(const ngx_cdp_segment_msg_t *m);
static int fuzz_parse(int type, const u_char *body, size_t len,
    ngx_cdp_segment_t *res, ngx_cdp_segment_error_t *err);
static int fuzz_same(const char *a, const char *b);


static int
fuzz_parse(int type, const u_char *body, size_t len, ngx_cdp_segment_t *res,
    ngx_cdp_segment_error_t *err)
{
    return ngx_cdp_segment_parse(type, body, len, (const u_char *) RECEIVED,
                                 sizeof(RECEIVED) - 1, res, err);
}


static int
fuzz_same(const char *a, const char *b)
{
    if (a == NULL || b == NULL) {
        return a == b;
    }

    return strcmp(a, b) == 0;
}


static void
fuzz_check_error(int rc, int type, size_t len, const ngx_cdp_segment_t *res,
    const ngx_cdp_segment_error_t *err)
{
    size_t   n, max;
    u_char  *out;
    json_t  *j, *v;

    FUZZ_CHECK(rc == 400 || rc == 413);
    FUZZ_CHECK(err->status == rc);
    FUZZ_CHECK(res->nmsgs == 0 && res->msgs == NULL
               && res->write_key == NULL);

    FUZZ_CHECK(err->code != NULL);
    FUZZ_CHECK(memchr(err->message, '\0', sizeof(err->message)) != NULL
               && err->message[0] != '\0');
    FUZZ_CHECK(memchr(err->field, '\0', sizeof(err->field)) != NULL);

    FUZZ_CHECK(err->index >= -1 && err->index < NGX_CDP_SEGMENT_BATCH_MAX);
    FUZZ_CHECK(err->index == -1 || type == NGX_CDP_SEGMENT_BATCH);
    FUZZ_CHECK(err->index == -1 || strncmp(err->field, "batch[", 6) == 0);

    FUZZ_CHECK(err->position >= -1 && err->position <= (long) len);

    if (err->position >= 0) {
        FUZZ_CHECK(strcmp(err->code, "invalid_json") == 0
                   || strcmp(err->code, "invalid_utf8") == 0);
        FUZZ_CHECK(err->line >= 1);

    } else {
        FUZZ_CHECK(err->line == -1 && err->column == -1);
    }

    max = type == NGX_CDP_SEGMENT_BATCH ? NGX_CDP_SEGMENT_BATCH_BODY_MAX
                                        : NGX_CDP_SEGMENT_BODY_MAX;
    FUZZ_CHECK((strcmp(err->code, "body_too_large") == 0) == (len > max));

    if (rc == 413) {
        FUZZ_CHECK(strcmp(err->code, "body_too_large") == 0
                   || strcmp(err->code, "message_too_large") == 0
                   || strcmp(err->code, "batch_too_large") == 0);
    }

    /* the error body */

    out = malloc(NGX_CDP_SEGMENT_ERROR_JSON_MAX);
    FUZZ_CHECK(out != NULL);

    n = ngx_cdp_segment_error_json(out, err);
    FUZZ_CHECK(n > 0 && n <= NGX_CDP_SEGMENT_ERROR_JSON_MAX);

    j = json_loadb((const char *) out, n, JSON_REJECT_DUPLICATES, NULL);
    FUZZ_CHECK(json_is_object(j));
    FUZZ_CHECK(json_is_false(json_object_get(j, "success")));
    FUZZ_CHECK(fuzz_same(json_string_value(json_object_get(j, "error")),
                         err->code));
    FUZZ_CHECK(json_is_string(json_object_get(j, "message")));

    v = json_object_get(j, "index");
    FUZZ_CHECK(err->index < 0 ? v == NULL
                              : json_integer_value(v) == err->index);

    v = json_object_get(j, "position");
    FUZZ_CHECK(err->position < 0 ? v == NULL
                                 : json_integer_value(v) == err->position);

    v = json_object_get(j, "field");
    FUZZ_CHECK(err->field[0] == '\0'
               ? v == NULL : fuzz_same(json_string_value(v), err->field));

    json_decref(j);
    free(out);
}


/* a string field of the stored copy, as the result extracts it */

static const char *
fuzz_str(json_t *j, const char *key)
{
    json_t  *v;

    v = json_object_get(j, key);

    if (!json_is_string(v) || json_string_length(v) == 0) {
        return NULL;
    }

    return json_string_value(v);
}


static void
fuzz_check_msg(const ngx_cdp_segment_msg_t *m)
{
    char        *dump;
    size_t       i;
    json_t      *j, *v, *t;
    int64_t      ms;
    const char  *ids[] = { "userId", "anonymousId", "previousId",
                           "groupId" };

    FUZZ_CHECK(m->type >= NGX_CDP_SEGMENT_TRACK
               && m->type <= NGX_CDP_SEGMENT_ALIAS);
    FUZZ_CHECK(m->json != NULL && strlen(m->json) == m->json_len);

    j = json_loadb(m->json, m->json_len, JSON_REJECT_DUPLICATES, NULL);
    FUZZ_CHECK(json_is_object(j));

    /* the module's dumper writes what jansson's compact dump would */
    dump = json_dumps(j, JSON_COMPACT);
    FUZZ_CHECK(dump != NULL && strcmp(dump, m->json) == 0);
    free(dump);

    FUZZ_CHECK(fuzz_same(json_string_value(json_object_get(j, "type")),
                         ngx_cdp_segment_type_name(m->type)));
    FUZZ_CHECK(fuzz_same(json_string_value(json_object_get(j, "receivedAt")),
                         RECEIVED));
    FUZZ_CHECK(json_object_get(j, "writeKey") == NULL);

    /* ids are strings now, and what the result says */

    for (i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        v = json_object_get(j, ids[i]);
        FUZZ_CHECK(v == NULL || json_is_null(v) || json_is_string(v));
    }

    FUZZ_CHECK(fuzz_same(m->user_id, fuzz_str(j, "userId")));
    FUZZ_CHECK(fuzz_same(m->anonymous_id, fuzz_str(j, "anonymousId")));
    FUZZ_CHECK(fuzz_same(m->previous_id, fuzz_str(j, "previousId")));
    FUZZ_CHECK(fuzz_same(m->group_id, fuzz_str(j, "groupId")));
    FUZZ_CHECK(fuzz_same(m->event, fuzz_str(j, "event")));
    FUZZ_CHECK(fuzz_same(m->message_id, fuzz_str(j, "messageId")));

    switch (m->type) {

    case NGX_CDP_SEGMENT_ALIAS:
        FUZZ_CHECK(m->user_id != NULL && m->previous_id != NULL);
        break;

    case NGX_CDP_SEGMENT_TRACK:
        FUZZ_CHECK(m->event != NULL);
        /* fall through */

    default:
        FUZZ_CHECK(m->user_id != NULL || m->anonymous_id != NULL);
    }

    FUZZ_CHECK(m->type != NGX_CDP_SEGMENT_GROUP || m->group_id != NULL);
    FUZZ_CHECK(m->message_id == NULL
               || strlen(m->message_id) <= NGX_CDP_SEGMENT_MESSAGE_ID_MAX);

    /* no address or number left, extracted for identify only */

    t = json_object_get(json_object_get(j, "context"), "traits");
    FUZZ_CHECK(json_object_get(t, "email") == NULL
               && json_object_get(t, "phone") == NULL);

    if (m->type == NGX_CDP_SEGMENT_IDENTIFY) {
        t = json_object_get(j, "traits");
        FUZZ_CHECK(json_object_get(t, "email") == NULL
                   && json_object_get(t, "phone") == NULL);
        FUZZ_CHECK(m->traits == NULL
                   || (strlen(m->traits) == m->traits_len
                       && m->traits[0] == '{'));

        if (m->traits != NULL) {
            v = json_loadb(m->traits, m->traits_len, 0, NULL);
            FUZZ_CHECK(json_is_object(v));
            json_decref(v);
        }

    } else {
        FUZZ_CHECK(m->email == NULL && m->phone == NULL
                   && m->traits == NULL);
    }

    /* the event time */

    v = json_object_get(j, "timestamp");

    if (v == NULL || json_is_null(v)) {
        v = json_object_get(j, "originalTimestamp");
    }

    if (v == NULL || json_is_null(v)) {
        FUZZ_CHECK(m->time_ms == 0);

    } else {
        FUZZ_CHECK(json_is_string(v));
        FUZZ_CHECK(ngx_cdp_segment_time((const u_char *) json_string_value(v),
                                        json_string_length(v), &ms));
        FUZZ_CHECK(m->time_ms == ms);
    }

    json_decref(j);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int                      type, rc, rc2;
    size_t                   i, len;
    u_char                  *body, *again;
    ngx_cdp_segment_t        res, res2;
    ngx_cdp_segment_error_t  err, err2;

    if (size == 0) {
        return 0;
    }

    type = data[0] % 7;
    len = size - 1;
    body = fuzz_dup(data + 1, len);

    rc = fuzz_parse(type, body, len, &res, &err);
    FUZZ_CHECK(memcmp(body, data + 1, len) == 0);

    /* the same again */

    rc2 = fuzz_parse(type, body, len, &res2, &err2);
    FUZZ_CHECK(rc == rc2 && res.nmsgs == res2.nmsgs
               && fuzz_same(res.write_key, res2.write_key));

    for (i = 0; i < res.nmsgs; i++) {
        FUZZ_CHECK(fuzz_same(res.msgs[i].json, res2.msgs[i].json));
    }

    ngx_cdp_segment_free(&res2);

    if (rc != 0) {
        FUZZ_CHECK(err.code != NULL && err2.code != NULL
                   && strcmp(err.code, err2.code) == 0
                   && strcmp(err.message, err2.message) == 0
                   && err.index == err2.index
                   && err.position == err2.position);

        fuzz_check_error(rc, type, len, &res, &err);

        ngx_cdp_segment_free(&res);
        free(body);
        return 0;
    }

    FUZZ_CHECK(err.status == 0);
    FUZZ_CHECK(memchr(body, '\0', len) == NULL);
    FUZZ_CHECK(ngx_cdp_utf8_valid(body, len));
    FUZZ_CHECK(type == NGX_CDP_SEGMENT_BATCH || res.nmsgs == 1);
    FUZZ_CHECK(res.nmsgs <= NGX_CDP_SEGMENT_BATCH_MAX);
    FUZZ_CHECK(res.nmsgs == 0 || res.msgs != NULL);

    for (i = 0; i < res.nmsgs; i++) {
        fuzz_check_msg(&res.msgs[i]);

        FUZZ_CHECK(type == NGX_CDP_SEGMENT_BATCH
                   || res.msgs[i].type == type);

        /* idempotent: the stored copy stores as itself */

        if (res.msgs[i].json_len > NGX_CDP_SEGMENT_BODY_MAX) {
            continue;
        }

        again = fuzz_dup((const uint8_t *) res.msgs[i].json,
                         res.msgs[i].json_len);

        rc2 = fuzz_parse(res.msgs[i].type, again, res.msgs[i].json_len,
                         &res2, &err2);

        if (rc2 != 0) {
            fprintf(stderr, "stored copy refused: %s %s [%s]\n%s\n",
                    err2.code, err2.message, err2.field, res.msgs[i].json);
        }

        FUZZ_CHECK(rc2 == 0 && res2.nmsgs == 1);
        FUZZ_CHECK(strcmp(res2.msgs[0].json, res.msgs[i].json) == 0);
        FUZZ_CHECK(res2.msgs[0].time_ms == res.msgs[i].time_ms);

        ngx_cdp_segment_free(&res2);
        free(again);
    }

    ngx_cdp_segment_free(&res);
    free(body);

    return 0;
}
