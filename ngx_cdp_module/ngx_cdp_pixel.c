
/*
 * ngx_cdp: the pixel.
 *
 * It answers at once, whatever Redis does: the event is handed to the
 * worker's queue (ngx_cdp_ingest.c) and the GIF goes out in the same call.
 * A bad hit still gets the GIF (an error image would show in pages and
 * e-mails); its event is dropped and counted.  Bots and prefetches get
 * the GIF and are only counted (ngx_cdp_capture.c); a mail service's
 * image proxy fetching a signed pixel records "Email Opened" on the named
 * person, with no browser, no cookie.  The event of a hit itself is
 * ngx_cdp_hit.c's, shared with edge capture and click redirects.
 */


#include "ngx_http_cdp_module.h"
#include "ngx_cdp_http.h"
#include "ngx_cdp_hit.h"
#include "ngx_cdp_cookie.h"
#include "ngx_cdp_geo.h"
#include "ngx_cdp_policy.h"
#include "ngx_cdp_event.h"
#include "ngx_cdp_identify.h"
#include "ngx_cdp_suppress.h"
#include "ngx_cdp_pixel.h"
#include "ngx_cdp_ingest.h"
#include "ngx_cdp_dest.h"
#include "ngx_cdp_audience.h"
#include "ngx_cdp_capture.h"
#include "ngx_cdp_wire.h"

#include "ngx_cdp_ident.h"


static void ngx_cdp_pixel_event(ngx_http_request_t *r,
    ngx_http_cdp_ctx_t *ctx, ngx_uint_t person);
static void ngx_cdp_pixel_mail_open(ngx_http_request_t *r,
    ngx_http_cdp_ctx_t *ctx);



/* the 43-byte transparent 1x1 GIF */

static u_char  ngx_cdp_gif[] = {

    'G', 'I', 'F', '8', '9', 'a',  /* header                                 */

                                   /* logical screen descriptor              */
    0x01, 0x00,                    /* logical screen width                   */
    0x01, 0x00,                    /* logical screen height                  */
    0x80,                          /* global 1-bit color table               */
    0x01,                          /* background color #1                    */
    0x00,                          /* no aspect ratio                        */

                                   /* global color table                     */
    0x00, 0x00, 0x00,              /* #0: black                              */
    0xff, 0xff, 0xff,              /* #1: white                              */

                                   /* graphic control extension              */
    0x21,                          /* extension introducer                   */
    0xf9,                          /* graphic control label                  */
    0x04,                          /* block size                             */
    0x01,                          /* transparent color is given,            */
                                   /*     no disposal specified,             */
                                   /*     user input is not expected         */
    0x00, 0x00,                    /* delay time                             */
    0x01,                          /* transparent color #1                   */
    0x00,                          /* block terminator                       */

                                   /* image descriptor                       */
    0x2c,                          /* image separator                        */
    0x00, 0x00,                    /* image left position                    */
    0x00, 0x00,                    /* image top position                     */
    0x01, 0x00,                    /* image width                            */
    0x01, 0x00,                    /* image height                           */
    0x00,                          /* no local color table, no interlaced    */

                                   /* table based image data                 */
    0x02,                          /* LZW minimum code size,                 */
                                   /*     must be at least 2-bit             */
    0x02,                          /* block size                             */
    0x4c, 0x01,                    /* compressed bytes 01_001_100, 0000000_1 */
                                   /* 100: clear code                        */
                                   /* 001: 1                                 */
                                   /* 101: end of information code           */
    0x00,                          /* block terminator                       */

    0x3B                           /* trailer                                */
};


ngx_int_t
ngx_cdp_pixel_handler(ngx_http_request_t *r)
{
    ngx_uint_t                agent;
    ngx_http_cdp_ctx_t       *ctx;
    ngx_http_cdp_loc_conf_t  *lcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_cdp_module);

    ctx = ngx_http_cdp_get_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /*
     * Who asks, before anything else: a bot or a prefetch is counted and
     * gets no cookie; a mail proxy's fetch may name a person.  Then
     * consent: without analytics no cookie is set or refreshed and the hit
     * only counts in the day's aggregates.
     */

    agent = ngx_cdp_agent_gate(r, ctx);

    if (agent != NGX_CDP_FILTER_NONE) {
        ngx_cdp_agent_filtered(r, ctx, agent);

        if (agent == NGX_CDP_FILTER_MAIL_PROXY) {
            ngx_cdp_pixel_mail_open(r, ctx);
        }

    } else if (!(ngx_cdp_consent_eval(r, ctx)->purposes
                 & NGX_CDP_CONSENT_ANALYTICS))
    {
        ngx_cdp_pixel_event(r, ctx, 0);

    } else if (ngx_cdp_suppress_cookie(r, ctx)) {
        /* an erased person's browser: its cookie goes, nothing is kept */

    } else if (ngx_cdp_cookie_issue(r, ctx) == NGX_OK) {
        ngx_cdp_pixel_event(r, ctx, 1);

    } else {
        ngx_cdp_count(NGX_CDP_C_DROP_MALFORMED, 1);
    }

    if (lcf->pixel == NGX_HTTP_NO_CONTENT) {
        return ngx_cdp_send(r, NGX_HTTP_NO_CONTENT, NULL, NULL, 0);
    }

    return ngx_cdp_send(r, NGX_HTTP_OK, "image/gif", ngx_cdp_gif,
                        sizeof(ngx_cdp_gif));
}


/* person: the hit may be stored per person (analytics consent) */

static void
ngx_cdp_pixel_event(ngx_http_request_t *r, ngx_http_cdp_ctx_t *ctx,
    ngx_uint_t person)
{
    ngx_cdp_hit_t             hit;
    ngx_http_cdp_loc_conf_t  *lcf;

    if (ngx_cdp_hit_parse_args(r, &hit) != NGX_OK) {
        return;
    }

    /*
     * where cdp_capture is on, page views are captured from the pages
     * themselves: a pixel on such a page adds no second one
     */

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_cdp_module);

    if (lcf->capture && hit.event.data == NULL) {
        if (person) {
            ngx_cdp_hit_identity(r, ctx, &hit);
        }

        return;
    }

    ngx_cdp_hit_record(r, ctx, &hit, person);
}


/*
 * A mail service's image proxy (Gmail's GoogleImageProxy...) fetched the
 * pixel of a campaign: no browser, so no cookie and no anonymous profile;
 * a signed identity names the reader, whose profile gets "Email Opened"
 * (as a server API track without an anonymousId: store/cdp.lua finds the
 * person by user id, e-mail address or phone number).
 */

static void
ngx_cdp_pixel_mail_open(ngx_http_request_t *r, ngx_http_cdp_ctx_t *ctx)
{
    u_char                    *p;
    ngx_str_t                  json, attrs, key, route;
    ngx_uint_t                 fact;
    ngx_cdp_hit_t              hit;
    ngx_cdp_ids_t              ids;
    ngx_cdp_identity_t         id;
    ngx_http_cdp_main_conf_t  *mcf;
    u_char                     rbuf[NGX_CDP_EXTRA_LEN];

    if (ngx_cdp_hit_parse_args(r, &hit) != NGX_OK
        || ngx_cdp_hit_signed(r, &hit) != NGX_OK)
    {
        return;
    }

    ngx_memzero(&id, sizeof(ngx_cdp_identity_t));

    id.user_id.data = (u_char *) hit.uid.data;
    id.user_id.len = hit.uid.len;
    id.email.data = (u_char *) hit.email.data;
    id.email.len = hit.email.len;

    if (ngx_cdp_identify_check(r, &id, &ids) != NGX_OK
        || (ids.user_id.len == 0 && ids.email.len == 0))
    {
        return;
    }

    /* the event: the campaign's properties, the user id, no browser */

    hit.event.data = (u_char *) "Email Opened";
    hit.event.len = sizeof("Email Opened") - 1;
    hit.email.data = NULL;
    hit.email.len = 0;

    if (ids.user_id.len == 0) {
        hit.uid.data = NULL;
        hit.uid.len = 0;
    }

    key.data = (u_char *) "";
    key.len = 0;

    if (ngx_cdp_event_from_hit(r, ctx, &hit, &json) != NGX_OK
        || ngx_cdp_profile_key(r, key.data, 0, &key) != NGX_OK)
    {
        ngx_cdp_count(NGX_CDP_C_DROP_MALFORMED, 1);
        return;
    }

    /* the API's attrs (store/cdp.lua, API_REST): no messageId to dedup */

    attrs.data = ngx_pnalloc(r->pool, NGX_CDP_WIRE_API_HEAD
                                      + NGX_CDP_IDS_TEXT_MAX(&ids) + 3);
    if (attrs.data == NULL) {
        return;
    }

    p = ngx_cdp_wire_api_head(attrs.data, NULL,
                              ids.user_id.len ? ids.uidh : NULL, 't');
    p = ngx_cdp_ids_text(p, &ids);
    *p++ = '\t';
    *p++ = '\t';
    *p++ = '\t';

    attrs.len = p - attrs.data;

    /* under the person's recorded consent, else the location's default */

    mcf = ngx_http_get_module_main_conf(r, ngx_http_cdp_module);

    route.data = rbuf;
    route.len = ngx_cdp_dest_route(mcf, NGX_CDP_TYPE_TRACK,
                                   (u_char *) hit.event.data, hit.event.len,
                                   NGX_CDP_CONSENT_UNKNOWN,
                                   ngx_cdp_consent_default(r), rbuf);

    fact = ngx_cdp_audience_fact(mcf, hit.event.data, hit.event.len);

    if (fact) {
        route.len = ngx_sprintf(rbuf + route.len, ";%ui", fact) - rbuf;
    }

    if (ngx_cdp_ingest_enqueue(&key, NGX_CDP_EVENT_API, &attrs, &json,
                               &route)
        == NGX_OK)
    {
        ngx_cdp_count(NGX_CDP_C_EMAIL_OPENED, 1);
    }
}


