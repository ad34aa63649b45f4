
/*
 * ngx_cdp: identity from trusted sources.
 *
 * The site's backend names the person in its response (cdp_identify: the
 * X-CDP-* headers, removed before the response leaves nginx), an e-mail
 * campaign in a signed pixel URL (ngx_cdp_pixel.c), the server API in an
 * identify call.  Each becomes one "identify" entry of the worker's
 * batch; the store function resolves and merges profiles atomically
 * (store/cdp.lua).
 *
 * Identifiers are checked and normalised here and reach Redis only as
 * keyed hashes (ngx_cdp_ident_hash()); the raw e-mail address and phone
 * number go only into the profile's traits, never into a key name, the
 * event stream or error_log.
 */


#include "ngx_http_cdp_module.h"
#include "ngx_cdp_http.h"
#include "ngx_cdp_cookie.h"
#include "ngx_cdp_policy.h"
#include "ngx_cdp_event.h"
#include "ngx_cdp_identify.h"
#include "ngx_cdp_suppress.h"
#include "ngx_cdp_ingest.h"
#include "ngx_cdp_dest.h"

#include <jansson.h>

#include "ngx_cdp_ident.h"


#define NGX_CDP_MAX_TRAITS       8192   /* bytes of X-CDP-Traits */


static ngx_int_t ngx_cdp_identify_header_filter(ngx_http_request_t *r);


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;


static ngx_http_cdp_identify_conf_t  ngx_cdp_identify_default_headers = {
    ngx_string("X-CDP-User-Id"),
    ngx_string("X-CDP-Email"),
    ngx_string("X-CDP-Phone"),
    ngx_string("X-CDP-Traits")
};


/* cdp_identify on|off [user_id=NAME] [email=NAME] [phone=NAME] [traits=NAME] */

char *
ngx_cdp_identify_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_cdp_loc_conf_t *lcf = conf;

    ngx_str_t                     *value, *name;
    ngx_uint_t                     i, j;
    ngx_http_cdp_identify_conf_t  *ic;

    if (lcf->identify != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        if (cf->args->nelts > 2) {
            return "takes no parameters after \"off\"";
        }

        lcf->identify = NULL;
        return NGX_CONF_OK;
    }

    if (ngx_strcmp(value[1].data, "on") != 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid value \"%V\" in cdp_identify, "
                           "it must be \"on\" or \"off\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    ic = ngx_palloc(cf->pool, sizeof(ngx_http_cdp_identify_conf_t));
    if (ic == NULL) {
        return NGX_CONF_ERROR;
    }

    *ic = ngx_cdp_identify_default_headers;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "user_id=", 8) == 0) {
            name = &ic->user_id;
            j = 8;

        } else if (ngx_strncmp(value[i].data, "email=", 6) == 0) {
            name = &ic->email;
            j = 6;

        } else if (ngx_strncmp(value[i].data, "phone=", 6) == 0) {
            name = &ic->phone;
            j = 6;

        } else if (ngx_strncmp(value[i].data, "traits=", 7) == 0) {
            name = &ic->traits;
            j = 7;

        } else {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "unknown cdp_identify parameter \"%V\"",
                               &value[i]);
            return NGX_CONF_ERROR;
        }

        name->data = value[i].data + j;
        name->len = value[i].len - j;

        if (name->len == 0) {
            goto invalid;
        }

        /* a header name: RFC 9110 token characters */

        for (j = 0; j < name->len; j++) {
            if (name->data[j] <= ' ' || name->data[j] >= 0x7f
                || ngx_strchr("()<>@,;:\\\"/[]?={}", name->data[j]))
            {
                goto invalid;
            }
        }
    }

    lcf->identify = ic;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid header name in cdp_identify parameter \"%V\"",
                       &value[i]);

    return NGX_CONF_ERROR;
}


/* cdp_identity_limits [user_id=N] [email=N] [phone=N] */

char *
ngx_cdp_identity_limits(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_cdp_main_conf_t *mcf = conf;

    ngx_int_t    n;
    ngx_str_t   *value;
    ngx_uint_t   i, j, *limit;

    if (mcf->limit_user_id != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    mcf->limit_user_id = 1;
    mcf->limit_email = 5;
    mcf->limit_phone = 5;

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "user_id=", 8) == 0) {
            limit = &mcf->limit_user_id;
            j = 8;

        } else if (ngx_strncmp(value[i].data, "email=", 6) == 0) {
            limit = &mcf->limit_email;
            j = 6;

        } else if (ngx_strncmp(value[i].data, "phone=", 6) == 0) {
            limit = &mcf->limit_phone;
            j = 6;

        } else {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "unknown cdp_identity_limits parameter "
                               "\"%V\"", &value[i]);
            return NGX_CONF_ERROR;
        }

        n = ngx_atoi(value[i].data + j, value[i].len - j);

        if (n == NGX_ERROR || n < 1 || n > 100) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid cdp_identity_limits parameter "
                               "\"%V\": a number from 1 to 100", &value[i]);
            return NGX_CONF_ERROR;
        }

        *limit = (ngx_uint_t) n;
    }

    return NGX_CONF_OK;
}


/* cdp_identity_blocked VALUE...: more values that never identify anyone */

char *
ngx_cdp_identity_blocked(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_cdp_main_conf_t *mcf = conf;

    ngx_str_t      *value;
    ngx_uint_t      i;
    ngx_cdp_str_t  *b;

    if (mcf->blocked == NULL) {
        mcf->blocked = ngx_array_create(cf->pool, 8, sizeof(ngx_cdp_str_t));
        if (mcf->blocked == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {
        b = ngx_array_push(mcf->blocked);
        if (b == NULL) {
            return NGX_CONF_ERROR;
        }

        b->data = value[i].data;
        b->len = value[i].len;
    }

    return NGX_CONF_OK;
}


ngx_int_t
ngx_cdp_identify_init(ngx_conf_t *cf)
{
    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_cdp_identify_header_filter;

    return NGX_OK;
}


/*
 * In a cdp_identify location: takes the identity headers out of the
 * response (whatever happens next, they never reach the client) and, with
 * analytics consent, links them to the browser's anonymous id, minting it
 * (Set-Cookie in this very response) when the browser has none.
 */

static ngx_int_t
ngx_cdp_identify_header_filter(ngx_http_request_t *r)
{
    ngx_str_t                     *slot[4], *name[4];
    ngx_uint_t                     i, j, found;
    ngx_list_part_t               *part;
    ngx_table_elt_t               *h;
    ngx_http_cdp_ctx_t            *ctx;
    ngx_cdp_identity_t             id;
    ngx_http_cdp_loc_conf_t       *lcf;
    ngx_http_cdp_identify_conf_t  *ic;

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_cdp_module);

    if (lcf->identify == NULL || r != r->main) {
        return ngx_http_next_header_filter(r);
    }

    ic = lcf->identify;

    ngx_memzero(&id, sizeof(ngx_cdp_identity_t));

    slot[0] = &id.user_id;
    slot[1] = &id.email;
    slot[2] = &id.phone;
    slot[3] = &id.traits;

    name[0] = &ic->user_id;
    name[1] = &ic->email;
    name[2] = &ic->phone;
    name[3] = &ic->traits;

    found = 0;
    part = &r->headers_out.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].hash == 0) {
            continue;
        }

        for (j = 0; j < 4; j++) {
            if (h[i].key.len == name[j]->len
                && ngx_strncasecmp(h[i].key.data, name[j]->data,
                                   name[j]->len)
                   == 0)
            {
                /* the first of repeated headers counts */
                if (slot[j]->data == NULL) {
                    *slot[j] = h[i].value;
                }

                /* a cleared hash: the header is not sent */
                h[i].hash = 0;
                found = 1;
                break;
            }
        }
    }

    if (!found) {
        return ngx_http_next_header_filter(r);
    }

    ctx = ngx_http_cdp_get_ctx(r);
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    if (!(ngx_cdp_consent_eval(r, ctx)->purposes
          & NGX_CDP_CONSENT_ANALYTICS))
    {
        ngx_cdp_count(NGX_CDP_C_IDENTIFY_NO_CONSENT, 1);
        return ngx_http_next_header_filter(r);
    }

    /* an erased person's browser: its cookie goes, nothing is linked */

    if (!ngx_cdp_suppress_cookie(r, ctx)
        && ngx_cdp_cookie_issue(r, ctx) == NGX_OK)
    {
        (void) ngx_cdp_identify(r, ctx, &id);
    }

    return ngx_http_next_header_filter(r);
}


/*
 * Checks and normalises the identifiers of an identity and names them as
 * Redis does (ngx_cdp_ident_hash()).  A bad or blocked one is left out
 * (its len is 0) and counted.
 */

ngx_int_t
ngx_cdp_identify_check(ngx_http_request_t *r, ngx_cdp_identity_t *id,
    ngx_cdp_ids_t *ids)
{
    u_char                    *p;
    size_t                     nblocked;
    ssize_t                    n;
    ngx_cdp_str_t             *blocked;
    ngx_http_cdp_main_conf_t  *mcf;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_cdp_module);

    blocked = mcf->blocked ? mcf->blocked->elts : NULL;
    nblocked = mcf->blocked ? mcf->blocked->nelts : 0;

    ngx_str_null(&ids->user_id);
    ngx_str_null(&ids->email);
    ngx_str_null(&ids->phone);

    if (id->user_id.len) {
        ids->user_id = id->user_id;

        if (ngx_cdp_identify_user_id(&ids->user_id, mcf) != NGX_OK
            || !ngx_cdp_ident_hash_user_id(ids->uidh, &mcf->ident_key,
                                           ids->user_id.data,
                                           ids->user_id.len))
        {
            ngx_str_null(&ids->user_id);
        }
    }

    if (id->email.len) {
        p = ngx_pnalloc(r->pool, id->email.len);
        if (p == NULL) {
            return NGX_ERROR;
        }

        n = ngx_cdp_email_normalize(p, id->email.data, id->email.len);

        if (n < 0) {
            ngx_cdp_count(NGX_CDP_C_IDENTIFY_INVALID, 1);

        } else if (ngx_cdp_ident_blocked(p, n, blocked, nblocked)) {
            ngx_cdp_count(NGX_CDP_C_IDENTIFY_BLOCKED, 1);

        } else if (ngx_cdp_ident_hash(ids->eh, &mcf->ident_key, "email", p,
                                      n))
        {
            ids->email.data = p;
            ids->email.len = n;
        }
    }

    if (id->phone.len) {
        p = ngx_pnalloc(r->pool, NGX_CDP_PHONE_MAX);
        if (p == NULL) {
            return NGX_ERROR;
        }

        n = (id->phone.len > 64)
            ? -1
            : ngx_cdp_phone_normalize(p, id->phone.data, id->phone.len,
                                      mcf->phone_cc.data, mcf->phone_cc.len);

        if (n < 0) {
            ngx_cdp_count(NGX_CDP_C_IDENTIFY_INVALID, 1);

        } else if (ngx_cdp_ident_blocked(p, n, blocked, nblocked)) {
            ngx_cdp_count(NGX_CDP_C_IDENTIFY_BLOCKED, 1);

        } else if (ngx_cdp_ident_hash(ids->ph, &mcf->ident_key, "phone", p,
                                      n))
        {
            ids->phone.data = p;
            ids->phone.len = n;
        }
    }

    return NGX_OK;
}


/*
 * Checks an identity, hashes its identifiers and queues one "identify"
 * for the browser ctx->aid.  A bad or blocked identifier is left out
 * (and counted); nothing is queued when nothing is left.
 */

ngx_int_t
ngx_cdp_identify(ngx_http_request_t *r, ngx_http_cdp_ctx_t *ctx,
    ngx_cdp_identity_t *id)
{
    u_char                    *p;
    ngx_str_t                  traits, profile_traits, event, key, attrs;
    ngx_str_t                  payload, route;
    ngx_cdp_ids_t              ids;
    ngx_http_cdp_main_conf_t  *mcf;
    u_char                     rbuf[NGX_CDP_EXTRA_LEN];

    if (ngx_cdp_identify_check(r, id, &ids) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_cdp_identify_traits(r, &id->traits, &ids.email, &ids.phone,
                                &profile_traits, &traits)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ids.user_id.len == 0 && ids.email.len == 0 && ids.phone.len == 0
        && traits.len == 0)
    {
        return NGX_DECLINED;
    }

    if (ngx_cdp_event_identify(r, ctx, &ids.user_id, &traits, &event)
           != NGX_OK
        || ngx_cdp_event_attrs(r, ctx, &attrs) != NGX_OK
        || ngx_cdp_profile_key(r, ctx->aid, NGX_CDP_ID_HEX_LEN, &key)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* "user_id TAB user_id h TAB email h TAB phone h TAB traits TAB event" */

    payload.data = ngx_pnalloc(r->pool, NGX_CDP_IDS_TEXT_MAX(&ids)
                                        + profile_traits.len + event.len + 2);
    if (payload.data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cdp_ids_text(payload.data, &ids);
    *p++ = '\t';
    p = ngx_cpymem(p, profile_traits.data, profile_traits.len);
    *p++ = '\t';
    p = ngx_cpymem(p, event.data, event.len);

    payload.len = p - payload.data;

    mcf = ngx_http_get_module_main_conf(r, ngx_http_cdp_module);

    route.data = rbuf;
    route.len = ngx_cdp_dest_route(mcf, NGX_CDP_TYPE_IDENTIFY, NULL, 0,
                                   ngx_cdp_consent_eval(r, ctx)->purposes, 0,
                                   rbuf);

    if (ngx_cdp_ingest_enqueue(&key, NGX_CDP_EVENT_IDENTIFY, &attrs, &payload,
                              &route)
        != NGX_OK)
    {
        return NGX_DECLINED;
    }

    ngx_cdp_count(NGX_CDP_C_IDENTIFY_ACCEPTED, 1);

    return NGX_OK;
}


/*
 * The identifiers as the store takes them: "user_id TAB user_id h TAB
 * email h TAB phone h", absent ones empty; NGX_CDP_IDS_TEXT_MAX(ids)
 * bytes at most.
 */

u_char *
ngx_cdp_ids_text(u_char *p, ngx_cdp_ids_t *ids)
{
    p = ngx_cpymem(p, ids->user_id.data, ids->user_id.len);
    *p++ = '\t';

    if (ids->user_id.len) {
        p = ngx_cpymem(p, ids->uidh, NGX_CDP_IDENT_HASH_LEN);
    }

    *p++ = '\t';

    if (ids->email.len) {
        p = ngx_cpymem(p, ids->eh, NGX_CDP_IDENT_HASH_LEN);
    }

    *p++ = '\t';

    if (ids->phone.len) {
        p = ngx_cpymem(p, ids->ph, NGX_CDP_IDENT_HASH_LEN);
    }

    return p;
}


/* "profile:<aid>", the key (after the prefix) of a browser's events */

ngx_int_t
ngx_cdp_profile_key(ngx_http_request_t *r, u_char *aid, size_t len,
    ngx_str_t *key)
{
    key->len = sizeof("profile:") - 1 + len;
    key->data = ngx_pnalloc(r->pool, key->len);
    if (key->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(ngx_cpymem(key->data, "profile:", sizeof("profile:") - 1),
               aid, len);

    return NGX_OK;
}


/*
 * A user id: trimmed, 1 to NGX_CDP_MAX_UID bytes of valid UTF-8 without
 * control characters (the store separates fields with TAB), not blocked.
 */

ngx_int_t
ngx_cdp_identify_user_id(ngx_str_t *v, ngx_http_cdp_main_conf_t *mcf)
{
    size_t   i;
    u_char  *start, *end;

    start = v->data;
    end = v->data + v->len;

    while (start < end && (*start == ' ' || *start == '\t')) {
        start++;
    }

    while (end > start && (end[-1] == ' ' || end[-1] == '\t')) {
        end--;
    }

    v->data = start;
    v->len = end - start;

    if (v->len == 0 || v->len > NGX_CDP_MAX_UID
        || !ngx_cdp_utf8_valid(v->data, v->len))
    {
        ngx_cdp_count(NGX_CDP_C_IDENTIFY_INVALID, 1);
        return NGX_DECLINED;
    }

    for (i = 0; i < v->len; i++) {
        if (v->data[i] < 0x20 || v->data[i] == 0x7f) {
            ngx_cdp_count(NGX_CDP_C_IDENTIFY_INVALID, 1);
            return NGX_DECLINED;
        }
    }

    if (ngx_cdp_ident_blocked(v->data, v->len,
                              mcf->blocked ? mcf->blocked->elts : NULL,
                              mcf->blocked ? mcf->blocked->nelts : 0))
    {
        ngx_cdp_count(NGX_CDP_C_IDENTIFY_BLOCKED, 1);
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/*
 * The traits, a JSON object: for the profile with the normalised e-mail
 * address and phone number added; for the event stream without them
 * (raw personal identifiers stay on the profile only).  Traits that are
 * not a JSON object of at most NGX_CDP_MAX_TRAITS bytes are left out.
 */

ngx_int_t
ngx_cdp_identify_traits(ngx_http_request_t *r, ngx_str_t *raw,
    ngx_str_t *email, ngx_str_t *phone, ngx_str_t *profile, ngx_str_t *event)
{
    char          *s;
    json_t        *obj, *v;
    ngx_int_t      rc;
    json_error_t   err;

    ngx_str_null(profile);
    ngx_str_null(event);

    obj = NULL;

    if (raw->len) {
        if (raw->len <= NGX_CDP_MAX_TRAITS) {
            obj = json_loadb((const char *) raw->data, raw->len,
                             JSON_REJECT_DUPLICATES, &err);
        }

        if (obj == NULL || !json_is_object(obj)) {
            ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                          "cdp: identity traits ignored: not a JSON object "
                          "of at most %d bytes", NGX_CDP_MAX_TRAITS);
            ngx_cdp_count(NGX_CDP_C_IDENTIFY_INVALID, 1);

            if (obj) {
                json_decref(obj);
            }

            obj = NULL;
        }
    }

    if (obj == NULL) {
        obj = json_object();
        if (obj == NULL) {
            return NGX_ERROR;
        }
    }

    rc = NGX_ERROR;

    (void) json_object_del(obj, "email");
    (void) json_object_del(obj, "phone");

    if (json_object_size(obj)) {
        s = json_dumps(obj, JSON_COMPACT);
        if (s == NULL) {
            goto done;
        }

        event->len = ngx_strlen(s);
        event->data = ngx_pnalloc(r->pool, event->len);

        if (event->data) {
            ngx_memcpy(event->data, s, event->len);
        }

        free(s);

        if (event->data == NULL) {
            goto done;
        }
    }

    if (email->len) {
        v = json_stringn((const char *) email->data, email->len);
        if (v == NULL || json_object_set_new(obj, "email", v) != 0) {
            goto done;
        }
    }

    if (phone->len) {
        v = json_stringn((const char *) phone->data, phone->len);
        if (v == NULL || json_object_set_new(obj, "phone", v) != 0) {
            goto done;
        }
    }

    if (json_object_size(obj)) {
        s = json_dumps(obj, JSON_COMPACT);
        if (s == NULL) {
            goto done;
        }

        profile->len = ngx_strlen(s);
        profile->data = ngx_pnalloc(r->pool, profile->len);

        if (profile->data) {
            ngx_memcpy(profile->data, s, profile->len);
        }

        free(s);

        if (profile->data == NULL) {
            goto done;
        }
    }

    rc = NGX_OK;

done:

    json_decref(obj);

    return rc;
}
