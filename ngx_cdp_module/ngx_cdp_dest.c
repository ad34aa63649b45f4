
/*
 * ngx_cdp: destinations: the cdp_destination directive, the route of an
 * event (which destinations may take it, and under which consent), and
 * their counters in shared memory.  The gate itself runs in Redis
 * (cdp_ingest), in the call that stores the event; delivery is
 * ngx_cdp_deliver.c's.
 */


#include "ngx_cdp_dest.h"

#include <hiredis/hiredis.h>


typedef struct {
    u_char                     name[NGX_CDP_DEST_NAME_MAX + 1];
    ngx_atomic_t               counters[NGX_CDP_DC_N];
} ngx_cdp_dest_slot_t;


static char *ngx_cdp_dest_list(ngx_conf_t *cf, ngx_cdp_dest_t *d,
    ngx_str_t *value);
static ngx_int_t ngx_cdp_dest_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static size_t ngx_cdp_dest_match(ngx_http_location_tree_node_t *node,
    u_char *uri, size_t len);
static ngx_uint_t ngx_cdp_dest_takes(ngx_cdp_dest_t *d, const char *name);


static ngx_str_t  ngx_cdp_dest_zone_name = ngx_string("cdp_destinations");

static ngx_str_t  ngx_cdp_dest_formats[] = {
    ngx_string("segment"),
    ngx_string("ga4"),
    ngx_string("json")
};

static struct {
    ngx_str_t                  name;
    ngx_uint_t                 bit;
} ngx_cdp_dest_types[] = {
    { ngx_string("page"), NGX_CDP_TYPE_PAGE },
    { ngx_string("track"), NGX_CDP_TYPE_TRACK },
    { ngx_string("identify"), NGX_CDP_TYPE_IDENTIFY },
    { ngx_string("screen"), NGX_CDP_TYPE_SCREEN },
    { ngx_string("group"), NGX_CDP_TYPE_GROUP },
    { ngx_string("alias"), NGX_CDP_TYPE_ALIAS },
    { ngx_null_string, 0 }
};

/* cdp_status: the families of the counters, in the order they are shown */
typedef enum {
    NGX_CDP_DM_QUEUED = 0,
    NGX_CDP_DM_FILTERED,
    NGX_CDP_DM_DELIVERED,
    NGX_CDP_DM_RETRIED,
    NGX_CDP_DM_DEAD,
    NGX_CDP_DM_NOTICES,
    NGX_CDP_DM_REQUESTS,
    NGX_CDP_DM_IN_FLIGHT,
    NGX_CDP_DM_LENGTH,
    NGX_CDP_DM_PENDING,
    NGX_CDP_DM_LAST_SUCCESS,
    NGX_CDP_DM_N
} ngx_cdp_dest_metric_e;

static struct {
    ngx_str_t                  name;
    ngx_str_t                  type;
    ngx_str_t                  help;        /* no backslash, no newline */
} ngx_cdp_dest_metrics[] = {
    { ngx_string("cdp_destination_queued_total"), ngx_string("counter"),
      ngx_string("Events queued for the destination.") },
    { ngx_string("cdp_destination_filtered_total"), ngx_string("counter"),
      ngx_string("Events the destination did not get, by reason.") },
    { ngx_string("cdp_destination_delivered_total"), ngx_string("counter"),
      ngx_string("Events delivered to the destination.") },
    { ngx_string("cdp_destination_retried_total"), ngx_string("counter"),
      ngx_string("Events to be sent again after a failed delivery.") },
    { ngx_string("cdp_destination_dead_lettered_total"),
      ngx_string("counter"),
      ngx_string("Events refused by the destination: dead-lettered.") },
    { ngx_string("cdp_destination_deletion_notices_total"),
      ngx_string("counter"),
      ngx_string("Deletion notices delivered to the destination.") },
    { ngx_string("cdp_destination_requests_total"), ngx_string("counter"),
      ngx_string("HTTP requests made to the destination.") },
    { ngx_string("cdp_destination_in_flight"), ngx_string("gauge"),
      ngx_string("HTTP requests to the destination in flight.") },
    { ngx_string("cdp_destination_stream_length"), ngx_string("gauge"),
      ngx_string("Entries in the destination's out-stream.") },
    { ngx_string("cdp_destination_pending"), ngx_string("gauge"),
      ngx_string("Entries read from the out-stream, not acknowledged.") },
    { ngx_string("cdp_destination_seconds_since_success"),
      ngx_string("gauge"),
      ngx_string("Seconds since the last successful delivery; -1: none"
                 " yet.") }
};

/* indexed by ngx_cdp_dest_counter_e: the family, the labels past the name */
static struct {
    ngx_uint_t                 metric;      /* NGX_CDP_DM_* */
    ngx_str_t                  labels;
} ngx_cdp_dest_samples[] = {
    { NGX_CDP_DM_QUEUED, ngx_string("") },
    { NGX_CDP_DM_FILTERED, ngx_string(",reason=\"consent\"") },
    { NGX_CDP_DM_FILTERED, ngx_string(",reason=\"erased\"") },
    { NGX_CDP_DM_FILTERED, ngx_string(",reason=\"type\"") },
    { NGX_CDP_DM_DELIVERED, ngx_string("") },
    { NGX_CDP_DM_RETRIED, ngx_string("") },
    { NGX_CDP_DM_DEAD, ngx_string("") },
    { NGX_CDP_DM_NOTICES, ngx_string("") },
    { NGX_CDP_DM_REQUESTS, ngx_string("") },
    { NGX_CDP_DM_IN_FLIGHT, ngx_string("") },
    { NGX_CDP_DM_LENGTH, ngx_string("") },
    { NGX_CDP_DM_PENDING, ngx_string("") },
    { NGX_CDP_DM_LAST_SUCCESS, ngx_string("") }
};

/* a counter added to ngx_cdp_dest_counter_e needs its row: or no build */
typedef char ngx_cdp_dest_samples_check[
    sizeof(ngx_cdp_dest_samples) / sizeof(ngx_cdp_dest_samples[0])
    == NGX_CDP_DC_N ? 1 : -1];
typedef char ngx_cdp_dest_metrics_check[
    sizeof(ngx_cdp_dest_metrics) / sizeof(ngx_cdp_dest_metrics[0])
    == NGX_CDP_DM_N ? 1 : -1];


/*
 * cdp_destination NAME purpose=P [types=T,...] [events="E","F"]
 *     [uri=/location] [format=segment|ga4|json] [batch=N] [flush=TIME]
 *     [maxlen=N];
 *
 * nginx splits events="Order Completed","Signed Up" at its spaces: the
 * parts are joined again (one space each) until the quotes balance.
 */

char *
ngx_cdp_dest_directive(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_cdp_main_conf_t *mcf = conf;

    u_char          *p, *q;
    size_t           len;
    ngx_int_t        n;
    ngx_str_t       *value, v, ev;
    ngx_uint_t       i, j, k, quotes, have_purpose;
    ngx_cdp_dest_t  *d;

    value = cf->args->elts;

    if (value[1].len == 0 || value[1].len > NGX_CDP_DEST_NAME_MAX) {
        return "needs a name of 1 to 64 characters";
    }

    for (i = 0; i < value[1].len; i++) {
        if (!(isalnum(value[1].data[i]) || value[1].data[i] == '_'
              || value[1].data[i] == '-'))
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid destination name \"%V\": letters, "
                               "digits, \"_\" and \"-\" only", &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    if (mcf->destinations == NULL) {
        mcf->destinations = ngx_array_create(cf->pool, 4,
                                             sizeof(ngx_cdp_dest_t));
        if (mcf->destinations == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    if (ngx_cdp_dest_find(mcf, value[1].data, value[1].len)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "duplicate destination \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    if (mcf->destinations->nelts == NGX_CDP_DEST_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "too many destinations: at most %d",
                           NGX_CDP_DEST_MAX);
        return NGX_CONF_ERROR;
    }

    d = ngx_array_push(mcf->destinations);
    if (d == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(d, sizeof(ngx_cdp_dest_t));

    d->name = value[1];
    d->index = mcf->destinations->nelts - 1;
    d->types = NGX_CDP_TYPE_ALL;
    d->format = NGX_CDP_FORMAT_SEGMENT;
    d->batch = 100;
    d->flush = 1000;
    d->maxlen = 1000000;

    have_purpose = 0;

    for (i = 2; i < cf->args->nelts; i++) {
        v = value[i];

        if (v.len > 7 && ngx_strncmp(v.data, "events=", 7) == 0) {

            /* rejoin what nginx split at spaces inside the quotes */

            quotes = 0;
            len = 0;

            for (j = i; j < cf->args->nelts; j++) {
                for (k = 0; k < value[j].len; k++) {
                    quotes += (value[j].data[k] == '"');
                }

                len += value[j].len + 1;

                if (quotes % 2 == 0) {
                    break;
                }
            }

            if (j == cf->args->nelts) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "destination \"%V\": unbalanced quotes "
                                   "in \"%V\"", &d->name, &v);
                return NGX_CONF_ERROR;
            }

            p = ngx_pnalloc(cf->pool, len);
            if (p == NULL) {
                return NGX_CONF_ERROR;
            }

            ev.data = p;

            for (k = i; k <= j; k++) {
                if (k > i) {
                    *p++ = ' ';
                }

                p = ngx_cpymem(p, value[k].data, value[k].len);
            }

            ev.len = p - ev.data;
            i = j;

            ev.data += 7;
            ev.len -= 7;

            if (ngx_cdp_dest_list(cf, d, &ev) != NGX_CONF_OK) {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (v.len > 8 && ngx_strncmp(v.data, "purpose=", 8) == 0) {
            n = ngx_cdp_consent_parse(v.data + 8, v.len - 8);

            if (n != NGX_CDP_CONSENT_ANALYTICS
                && n != NGX_CDP_CONSENT_MARKETING
                && n != NGX_CDP_CONSENT_PERSONALIZATION)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "destination \"%V\": invalid \"%V\", "
                                   "one of analytics, marketing or "
                                   "personalization", &d->name, &v);
                return NGX_CONF_ERROR;
            }

            d->purpose = n;
            have_purpose = 1;
            continue;
        }

        if (v.len > 6 && ngx_strncmp(v.data, "types=", 6) == 0) {
            d->types = 0;
            p = v.data + 6;

            while (p < v.data + v.len) {
                q = ngx_strlchr(p, v.data + v.len, ',');
                if (q == NULL) {
                    q = v.data + v.len;
                }

                for (k = 0; ngx_cdp_dest_types[k].name.len; k++) {
                    if ((size_t) (q - p) == ngx_cdp_dest_types[k].name.len
                        && ngx_strncmp(p, ngx_cdp_dest_types[k].name.data,
                                       q - p) == 0)
                    {
                        d->types |= ngx_cdp_dest_types[k].bit;
                        break;
                    }
                }

                if (ngx_cdp_dest_types[k].name.len == 0) {
                    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                       "destination \"%V\": unknown type "
                                       "\"%*s\" in \"%V\": page, track, "
                                       "identify, screen, group, alias",
                                       &d->name, q - p, p, &v);
                    return NGX_CONF_ERROR;
                }

                p = q + 1;
            }

            if (d->types == 0) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "destination \"%V\": empty \"%V\"",
                                   &d->name, &v);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (v.len > 4 && ngx_strncmp(v.data, "uri=", 4) == 0) {
            d->uri.data = v.data + 4;
            d->uri.len = v.len - 4;

            if (d->uri.data[0] != '/') {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "destination \"%V\": \"%V\" must name a "
                                   "location, starting with \"/\"",
                                   &d->name, &v);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (v.len > 7 && ngx_strncmp(v.data, "format=", 7) == 0) {
            for (k = 0; k < sizeof(ngx_cdp_dest_formats) / sizeof(ngx_str_t);
                 k++)
            {
                if (v.len - 7 == ngx_cdp_dest_formats[k].len
                    && ngx_strncmp(v.data + 7, ngx_cdp_dest_formats[k].data,
                                   v.len - 7) == 0)
                {
                    break;
                }
            }

            if (k == sizeof(ngx_cdp_dest_formats) / sizeof(ngx_str_t)) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "destination \"%V\": invalid \"%V\", "
                                   "one of segment, ga4 or json",
                                   &d->name, &v);
                return NGX_CONF_ERROR;
            }

            d->format = k;
            continue;
        }

        if (v.len > 6 && ngx_strncmp(v.data, "batch=", 6) == 0) {
            n = ngx_atoi(v.data + 6, v.len - 6);

            if (n < 1 || n > 1000) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "destination \"%V\": invalid \"%V\", "
                                   "1 to 1000", &d->name, &v);
                return NGX_CONF_ERROR;
            }

            d->batch = n;
            continue;
        }

        if (v.len > 6 && ngx_strncmp(v.data, "flush=", 6) == 0) {
            v.data += 6;
            v.len -= 6;
            n = ngx_parse_time(&v, 0);

            if (n == NGX_ERROR || n < 10 || n > 3600000) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "destination \"%V\": invalid "
                                   "\"flush=%V\", 10ms to 1h",
                                   &d->name, &v);
                return NGX_CONF_ERROR;
            }

            d->flush = n;
            continue;
        }

        if (v.len > 7 && ngx_strncmp(v.data, "maxlen=", 7) == 0) {
            n = ngx_atoi(v.data + 7, v.len - 7);

            if (n < 1000) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "destination \"%V\": invalid \"%V\", "
                                   "at least 1000", &d->name, &v);
                return NGX_CONF_ERROR;
            }

            d->maxlen = n;
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "destination \"%V\": unknown parameter \"%V\"",
                           &d->name, &v);
        return NGX_CONF_ERROR;
    }

    if (!have_purpose) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "destination \"%V\" needs purpose=analytics, "
                           "marketing or personalization: events leave "
                           "only for a purpose the person consented to",
                           &d->name);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* "Order Completed","Signed Up" or Order Completed,Signed Up */

static char *
ngx_cdp_dest_list(ngx_conf_t *cf, ngx_cdp_dest_t *d, ngx_str_t *value)
{
    u_char     *p, *last, *start;
    ngx_str_t  *name;

    d->events = ngx_array_create(cf->pool, 4, sizeof(ngx_str_t));
    if (d->events == NULL) {
        return NGX_CONF_ERROR;
    }

    p = value->data;
    last = p + value->len;

    while (p < last) {
        name = ngx_array_push(d->events);
        if (name == NULL) {
            return NGX_CONF_ERROR;
        }

        if (*p == '"') {
            start = ++p;

            while (p < last && *p != '"') {
                p++;
            }

            if (p == last) {
                goto invalid;
            }

            name->data = start;
            name->len = p - start;
            p++;

            if (p < last && *p++ != ',') {
                goto invalid;
            }

        } else {
            start = p;

            while (p < last && *p != ',') {
                if (*p == '"') {
                    goto invalid;
                }

                p++;
            }

            name->data = start;
            name->len = p - start;

            if (p < last) {
                p++;
            }
        }

        if (name->len == 0) {
            goto invalid;
        }
    }

    if (d->events->nelts == 0) {
        goto invalid;
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "destination \"%V\": invalid events=%V, a list of "
                       "names: events=\"Order Completed\",\"Signed Up\"",
                       &d->name, value);
    return NGX_CONF_ERROR;
}


ngx_cdp_dest_t *
ngx_cdp_dest_find(ngx_http_cdp_main_conf_t *mcf, u_char *name, size_t len)
{
    ngx_uint_t       i;
    ngx_cdp_dest_t  *d;

    if (mcf->destinations == NULL) {
        return NULL;
    }

    d = mcf->destinations->elts;

    for (i = 0; i < mcf->destinations->nelts; i++) {
        if (d[i].name.len == len && ngx_strncmp(d[i].name.data, name, len)
                                    == 0)
        {
            return &d[i];
        }
    }

    return NULL;
}


/* does the destination take track events of this name? 1 or 0 */

static ngx_uint_t
ngx_cdp_dest_takes(ngx_cdp_dest_t *d, const char *name)
{
    size_t      len;
    ngx_str_t  *e;
    ngx_uint_t  i;

    if (!(d->types & NGX_CDP_TYPE_TRACK)) {
        return 0;
    }

    if (d->events == NULL) {
        return 1;
    }

    len = ngx_strlen(name);
    e = d->events->elts;

    for (i = 0; i < d->events->nelts; i++) {
        if (e[i].len == len && ngx_strncmp(e[i].data, name, len) == 0) {
            return 1;
        }
    }

    return 0;
}


/*
 * Once the http block is read (the prefix is known whatever the order of
 * the directives): the keys, and what cdp_ingest is told of the
 * destinations in ARGV[1]: "NAME PURPOSE MAXLEN TAKES,..." with PURPOSE
 * the consent bit and TAKES whether it takes "Segment Entered" (1) and
 * "Segment Exited" (2), the events the store makes itself.
 */

char *
ngx_cdp_dest_init_main_conf(ngx_conf_t *cf, ngx_http_cdp_main_conf_t *mcf)
{
    u_char          *p;
    size_t           len;
    ngx_uint_t       i;
    ngx_cdp_dest_t  *d;

    if (mcf->destinations == NULL) {
        return NGX_CONF_OK;
    }

    d = mcf->destinations->elts;
    len = 1;

    for (i = 0; i < mcf->destinations->nelts; i++) {
        len += d[i].name.len + 4 + 2 * NGX_INT_T_LEN + 2;
    }

    p = ngx_pnalloc(cf->pool, len);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    mcf->dest_spec.data = p;

    for (i = 0; i < mcf->destinations->nelts; i++) {
        p = ngx_sprintf(p, "%s%V %ui %ui %ui", i ? "," : "", &d[i].name,
                        d[i].purpose, d[i].maxlen,
                        ngx_cdp_dest_takes(&d[i], "Segment Entered")
                        | (ngx_cdp_dest_takes(&d[i], "Segment Exited") << 1));
    }

    mcf->dest_spec.len = p - mcf->dest_spec.data;

    return NGX_CONF_OK;
}


/*
 * postconfiguration: the counters' zone, and for each uri= the server
 * whose locations it names: the server{} with the longest prefix or exact
 * location matching it ("location /" alone does not count: a typo must not
 * deliver into a site's catch-all).  Regular expression locations are not
 * looked at.
 */

ngx_int_t
ngx_cdp_dest_init(ngx_conf_t *cf, ngx_http_cdp_main_conf_t *mcf)
{
    size_t                      n, best;
    ngx_uint_t                  i, s;
    ngx_cdp_dest_t             *d;
    ngx_shm_zone_t             *zone;
    ngx_http_core_srv_conf_t  **cscfp;
    ngx_http_core_loc_conf_t   *clcf;
    ngx_http_core_main_conf_t  *cmcf;

    if (mcf->destinations == NULL) {
        return NGX_OK;
    }

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);
    cscfp = cmcf->servers.elts;
    d = mcf->destinations->elts;

    for (i = 0; i < mcf->destinations->nelts; i++) {
        if (d[i].uri.len == 0) {
            continue;
        }

        best = 1;

        for (s = 0; s < cmcf->servers.nelts; s++) {
            clcf = cscfp[s]->ctx->loc_conf[ngx_http_core_module.ctx_index];

            n = ngx_cdp_dest_match(clcf->static_locations, d[i].uri.data,
                                   d[i].uri.len);
            if (n > best) {
                best = n;
                d[i].ctx = cscfp[s]->ctx;
            }
        }

        if (d[i].ctx == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "destination \"%V\": uri=%V is in no "
                               "location of any server{}: add one, e.g. "
                               "\"location %V { internal; proxy_pass "
                               "https://...; }\"", &d[i].name, &d[i].uri,
                               &d[i].uri);
            return NGX_ERROR;
        }
    }

    zone = ngx_shared_memory_add(cf, &ngx_cdp_dest_zone_name,
                                 8 * ngx_pagesize, &ngx_http_cdp_module);
    if (zone == NULL) {
        return NGX_ERROR;
    }

    zone->init = ngx_cdp_dest_init_zone;
    zone->data = mcf;

    return NGX_OK;
}


/*
 * How much of uri the prefix and exact locations of a server's tree match
 * (the walk of nginx's own find_static_location).
 */

static size_t
ngx_cdp_dest_match(ngx_http_location_tree_node_t *node, u_char *uri,
    size_t len)
{
    size_t     n, matched, best;
    ngx_int_t  rc;

    matched = 0;
    best = 0;

    while (node) {
        n = ngx_min(len, (size_t) node->len);
        rc = ngx_filename_cmp(uri, node->name, n);

        if (rc != 0) {
            node = (rc < 0) ? node->left : node->right;
            continue;
        }

        if (len > (size_t) node->len) {
            if (node->inclusive) {
                matched += node->len;
                best = matched;
                node = node->tree;
                uri += n;
                len -= n;
                continue;
            }

            node = node->right;
            continue;
        }

        if (len == (size_t) node->len) {
            return matched + node->len;
        }

        node = node->left;
    }

    return best;
}


/*
 * The counters of a destination keep their slot across reloads (by
 * name); the slots of destinations no longer configured are freed.
 */

static ngx_int_t
ngx_cdp_dest_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_cdp_main_conf_t  *omcf = data;

    ngx_uint_t                 i, j, used[NGX_CDP_DEST_MAX];
    ngx_cdp_dest_t            *d;
    ngx_slab_pool_t           *shpool;
    ngx_cdp_dest_slot_t       *slots;
    ngx_http_cdp_main_conf_t  *mcf;

    mcf = shm_zone->data;
    shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (omcf) {
        slots = omcf->dest_slots;

    } else if (shm_zone->shm.exists) {
        slots = shpool->data;

    } else {
        slots = ngx_slab_calloc(shpool,
                                NGX_CDP_DEST_MAX
                                * sizeof(ngx_cdp_dest_slot_t));
        if (slots == NULL) {
            return NGX_ERROR;
        }

        shpool->data = slots;
    }

    mcf->dest_slots = slots;

    d = mcf->destinations->elts;
    ngx_memzero(used, sizeof(used));

    for (i = 0; i < mcf->destinations->nelts; i++) {
        for (j = 0; j < NGX_CDP_DEST_MAX; j++) {
            if (ngx_strlen(slots[j].name) == d[i].name.len
                && ngx_strncmp(slots[j].name, d[i].name.data, d[i].name.len)
                   == 0)
            {
                d[i].counters = slots[j].counters;
                used[j] = 1;
                break;
            }
        }
    }

    for (j = 0; j < NGX_CDP_DEST_MAX; j++) {
        if (!used[j]) {
            ngx_memzero(&slots[j], sizeof(ngx_cdp_dest_slot_t));
        }
    }

    for (i = 0; i < mcf->destinations->nelts; i++) {
        if (d[i].counters) {
            continue;
        }

        for (j = 0; j < NGX_CDP_DEST_MAX; j++) {
            if (!used[j]) {
                ngx_memcpy(slots[j].name, d[i].name.data, d[i].name.len);
                d[i].counters = slots[j].counters;
                used[j] = 1;
                break;
            }
        }
    }

    return NGX_OK;
}


/*
 * The route of an event: "C D R1 R2 ..." as bytes, C the consent ('0' +
 * the purposes' bits, or '?': the store takes the consent last recorded
 * on the person's profile, else D, the default), then '1' for each
 * destination whose types= and events= take the event, '0' for the
 * others.
 */

size_t
ngx_cdp_dest_route(ngx_http_cdp_main_conf_t *mcf, ngx_uint_t type,
    u_char *name, size_t len, int purposes, int dflt, u_char *buf)
{
    u_char          *p;
    ngx_str_t       *e;
    ngx_uint_t       i, j, any;
    ngx_cdp_dest_t  *d;

    if (mcf->destinations == NULL) {
        return 0;
    }

    p = buf;
    *p++ = (purposes == NGX_CDP_CONSENT_UNKNOWN) ? '?'
                                                 : '0' + (purposes & 7);
    *p++ = '0' + ((dflt < 0 ? 0 : dflt) & 7);

    d = mcf->destinations->elts;
    any = 0;

    for (i = 0; i < mcf->destinations->nelts; i++) {
        *p = '0';

        if (!(d[i].types & type)) {
            ngx_cdp_dest_count(&d[i], NGX_CDP_DC_FILTERED_TYPE, 1);
            p++;
            continue;
        }

        if (d[i].events && type == NGX_CDP_TYPE_TRACK) {
            e = d[i].events->elts;

            for (j = 0; j < d[i].events->nelts; j++) {
                if (e[j].len == len && ngx_strncmp(e[j].data, name, len)
                                       == 0)
                {
                    break;
                }
            }

            if (j == d[i].events->nelts) {
                ngx_cdp_dest_count(&d[i], NGX_CDP_DC_FILTERED_TYPE, 1);
                p++;
                continue;
            }
        }

        *p++ = '1';
        any = 1;
    }

    return any ? (size_t) (p - buf) : 0;
}


/*
 * cdp_ingest's reply past its own counts, from element first: for each
 * destination {queued, filtered for consent, filtered as erased}.
 */

void
ngx_cdp_dest_ingested(ngx_http_cdp_main_conf_t *mcf, void *reply,
    size_t first)
{
    size_t           e, k;
    ngx_uint_t       i;
    redisReply      *r, *v;
    ngx_cdp_dest_t  *d;

    static ngx_uint_t  counter[] = { NGX_CDP_DC_QUEUED,
                                     NGX_CDP_DC_FILTERED_CONSENT,
                                     NGX_CDP_DC_FILTERED_ERASED };

    r = reply;

    if (mcf->destinations == NULL) {
        return;
    }

    d = mcf->destinations->elts;

    for (i = 0; i < mcf->destinations->nelts; i++) {
        for (k = 0; k < 3; k++) {
            e = first + 3 * i + k;

            if (e >= r->elements) {
                return;
            }

            v = r->element[e];

            if (v->type == REDIS_REPLY_INTEGER && v->integer > 0) {
                ngx_cdp_dest_count(&d[i], counter[k], v->integer);
            }
        }
    }
}


size_t
ngx_cdp_dest_status_len(ngx_http_cdp_main_conf_t *mcf)
{
    size_t           len;
    ngx_uint_t       i, k, m;
    ngx_cdp_dest_t  *d;

    if (mcf->destinations == NULL || mcf->destinations->nelts == 0) {
        return 0;
    }

    d = mcf->destinations->elts;
    len = 0;

    for (m = 0; m < NGX_CDP_DM_N; m++) {
        len += sizeof("# HELP  \n# TYPE  \n") - 1
               + 2 * ngx_cdp_dest_metrics[m].name.len
               + ngx_cdp_dest_metrics[m].help.len
               + ngx_cdp_dest_metrics[m].type.len;
    }

    for (i = 0; i < mcf->destinations->nelts; i++) {
        for (k = 0; k < NGX_CDP_DC_N; k++) {
            m = ngx_cdp_dest_samples[k].metric;
            len += ngx_cdp_dest_metrics[m].name.len
                   + sizeof("{destination=\"\"} \n") - 1 + d[i].name.len
                   + ngx_cdp_dest_samples[k].labels.len + NGX_ATOMIC_T_LEN;
        }
    }

    return len;
}


/*
 * Family by family (each once, with its HELP and TYPE), and in a family
 * destination by destination, so that a family's samples stay together.
 */

u_char *
ngx_cdp_dest_status(ngx_http_cdp_main_conf_t *mcf, u_char *p)
{
    ngx_str_t       *name;
    ngx_uint_t       i, k, m;
    ngx_atomic_t     v;
    ngx_cdp_dest_t  *d;

    if (mcf->destinations == NULL || mcf->destinations->nelts == 0) {
        return p;
    }

    d = mcf->destinations->elts;

    for (m = 0; m < NGX_CDP_DM_N; m++) {
        name = &ngx_cdp_dest_metrics[m].name;

        p = ngx_sprintf(p, "# HELP %V %V\n# TYPE %V %V\n",
                        name, &ngx_cdp_dest_metrics[m].help,
                        name, &ngx_cdp_dest_metrics[m].type);

        for (i = 0; i < mcf->destinations->nelts; i++) {
            for (k = 0; k < NGX_CDP_DC_N; k++) {
                if (ngx_cdp_dest_samples[k].metric != m) {
                    continue;
                }

                v = d[i].counters ? d[i].counters[k] : 0;

                p = ngx_sprintf(p, "%V{destination=\"%V\"%V}", name,
                                &d[i].name, &ngx_cdp_dest_samples[k].labels);

                if (k == NGX_CDP_DC_LAST_SUCCESS) {
                    /* seconds since the last success; -1: none yet */
                    p = v ? ngx_sprintf(p, " %T\n", ngx_time() - (time_t) v)
                          : ngx_sprintf(p, " -1\n");
                    continue;
                }

                p = ngx_sprintf(p, " %uA\n", v);
            }
        }
    }

    return p;
}
