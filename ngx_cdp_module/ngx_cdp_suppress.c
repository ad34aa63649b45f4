
/*
 * ngx_cdp: suppression at the edge.
 *
 * The browsers of erased people, by the name of their anonymous id
 * (ngx_cdp_aid_hash(), 20 bytes here), in shared memory: every worker
 * sees an erasure as soon as the admin API made it, so the very next hit
 * with the old cookie clears it and stores nothing.  The store checks
 * suppression too, in the call that writes (events queued before the
 * erasure cannot bring the person back); this set is what lets nginx
 * refuse the cookie at once.
 *
 * The set follows Redis's <prefix>:suppressed: one worker reads it with
 * SSCAN when it connects and every NGX_CDP_SUPPRESS_SYNC ms, adding what
 * another nginx erased and dropping what was unsuppressed (entries not
 * seen in a complete pass and older than it are removed).
 */


#include "ngx_http_cdp_module.h"
#include "ngx_cdp_http.h"
#include "ngx_cdp_cookie.h"
#include "ngx_cdp_suppress.h"
#include "ngx_cdp_redis.h"
#include "ngx_cdp_ingest.h"

#include "ngx_cdp_ident.h"


#define NGX_CDP_SUPPRESS_SYNC    30000
#define NGX_CDP_DIGEST_LEN       (NGX_CDP_AIDH_LEN / 2)


typedef struct {
    ngx_rbtree_node_t          node;        /* key: the first 4 bytes */
    ngx_uint_t                 pass;        /* last pass that saw it */
    u_char                     digest[NGX_CDP_DIGEST_LEN];
} ngx_cdp_suppress_node_t;


typedef struct {
    ngx_rbtree_t               rbtree;
    ngx_rbtree_node_t          sentinel;
    ngx_uint_t                 pass;        /* the current sync pass */
    ngx_uint_t                 count;
    ngx_uint_t                 full;        /* the warning was logged */
} ngx_cdp_suppress_sh_t;


typedef struct {
    ngx_cdp_suppress_sh_t     *sh;
    ngx_slab_pool_t           *shpool;
} ngx_cdp_suppress_t;


static ngx_int_t ngx_cdp_suppress_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static void ngx_cdp_suppress_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static ngx_cdp_suppress_node_t *ngx_cdp_suppress_lookup(
    ngx_cdp_suppress_t *sp, const u_char *digest);
static ngx_int_t ngx_cdp_suppress_hex(u_char *digest, const u_char *hex,
    size_t len);
static void ngx_cdp_suppress_put(ngx_cdp_suppress_t *sp,
    const u_char *digest, ngx_uint_t pass);
static void ngx_cdp_suppress_sync(ngx_event_t *ev);
static void ngx_cdp_suppress_scan_done(ngx_cdp_redis_call_t *call,
    void *reply);
static void ngx_cdp_suppress_scan(ngx_str_t *cursor);


static ngx_str_t  ngx_cdp_suppress_zone_name = ngx_string("ngx_cdp_suppressed");

static ngx_cdp_suppress_t    *ngx_cdp_suppress;

/* the sync of the worker that does it */
static ngx_event_t            ngx_cdp_suppress_ev;
static ngx_cdp_redis_call_t   ngx_cdp_suppress_call;
static ngx_uint_t             ngx_cdp_suppress_busy;
static ngx_str_t              ngx_cdp_suppress_key;
static ngx_uint_t             ngx_cdp_suppress_pass;


ngx_int_t
ngx_cdp_suppress_add_zone(ngx_conf_t *cf, size_t size)
{
    ngx_shm_zone_t      *zone;
    ngx_cdp_suppress_t  *sp;

    sp = ngx_pcalloc(cf->pool, sizeof(ngx_cdp_suppress_t));
    if (sp == NULL) {
        return NGX_ERROR;
    }

    zone = ngx_shared_memory_add(cf, &ngx_cdp_suppress_zone_name, size,
                                 &ngx_http_cdp_module);
    if (zone == NULL) {
        return NGX_ERROR;
    }

    zone->init = ngx_cdp_suppress_init_zone;
    zone->data = sp;

    return NGX_OK;
}


static ngx_int_t
ngx_cdp_suppress_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_cdp_suppress_t  *osp = data;

    ngx_cdp_suppress_t  *sp;

    sp = shm_zone->data;
    sp->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    ngx_cdp_suppress = sp;

    if (osp) {
        /* a reload: the set stays */
        sp->sh = osp->sh;
        return NGX_OK;
    }

    if (shm_zone->shm.exists) {
        sp->sh = sp->shpool->data;
        return NGX_OK;
    }

    sp->sh = ngx_slab_calloc(sp->shpool, sizeof(ngx_cdp_suppress_sh_t));
    if (sp->sh == NULL) {
        return NGX_ERROR;
    }

    sp->shpool->data = sp->sh;

    ngx_rbtree_init(&sp->sh->rbtree, &sp->sh->sentinel,
                    ngx_cdp_suppress_insert_value);

    sp->shpool->log_nomem = 0;

    return NGX_OK;
}


static void
ngx_cdp_suppress_insert_value(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t        **p;
    ngx_cdp_suppress_node_t   *n, *t;

    for ( ;; ) {

        if (node->key < temp->key) {
            p = &temp->left;

        } else if (node->key > temp->key) {
            p = &temp->right;

        } else {
            n = (ngx_cdp_suppress_node_t *) node;
            t = (ngx_cdp_suppress_node_t *) temp;

            p = (ngx_memcmp(n->digest, t->digest, NGX_CDP_DIGEST_LEN) < 0)
                ? &temp->left : &temp->right;
        }

        if (*p == sentinel) {
            break;
        }

        temp = *p;
    }

    *p = node;
    node->parent = temp;
    node->left = sentinel;
    node->right = sentinel;
    ngx_rbt_red(node);
}


static ngx_cdp_suppress_node_t *
ngx_cdp_suppress_lookup(ngx_cdp_suppress_t *sp, const u_char *digest)
{
    ngx_int_t                 rc;
    ngx_rbtree_key_t          key;
    ngx_rbtree_node_t        *node, *sentinel;
    ngx_cdp_suppress_node_t  *n;

    key = ((ngx_rbtree_key_t) digest[0] << 24) | (digest[1] << 16)
          | (digest[2] << 8) | digest[3];

    node = sp->sh->rbtree.root;
    sentinel = sp->sh->rbtree.sentinel;

    while (node != sentinel) {

        if (key < node->key) {
            node = node->left;
            continue;
        }

        if (key > node->key) {
            node = node->right;
            continue;
        }

        n = (ngx_cdp_suppress_node_t *) node;

        rc = ngx_memcmp(digest, n->digest, NGX_CDP_DIGEST_LEN);

        if (rc == 0) {
            return n;
        }

        node = (rc < 0) ? node->left : node->right;
    }

    return NULL;
}


/* 1 when the browser aid (32 hex) belongs to an erased person */

ngx_int_t
ngx_cdp_suppress_has(const u_char *aid)
{
    ngx_int_t                 found;
    ngx_cdp_suppress_t       *sp;
    u_char                    hex[NGX_CDP_AIDH_LEN];
    u_char                    digest[NGX_CDP_DIGEST_LEN];

    sp = ngx_cdp_suppress;

    if (sp == NULL || sp->sh->count == 0) {
        return 0;
    }

    if (!ngx_cdp_aid_hash(hex, aid)
        || ngx_cdp_suppress_hex(digest, hex, NGX_CDP_AIDH_LEN) != NGX_OK)
    {
        return 0;
    }

    ngx_shmtx_lock(&sp->shpool->mutex);
    found = (ngx_cdp_suppress_lookup(sp, digest) != NULL);
    ngx_shmtx_unlock(&sp->shpool->mutex);

    return found;
}


/* the name of a browser (40 hex, from Redis) joins or leaves the set */

void
ngx_cdp_suppress_update(const u_char *aidh, size_t len, ngx_uint_t add)
{
    ngx_cdp_suppress_t       *sp;
    ngx_cdp_suppress_node_t  *n;
    u_char                    digest[NGX_CDP_DIGEST_LEN];

    sp = ngx_cdp_suppress;

    if (sp == NULL || ngx_cdp_suppress_hex(digest, aidh, len) != NGX_OK) {
        return;
    }

    ngx_shmtx_lock(&sp->shpool->mutex);

    if (add) {
        ngx_cdp_suppress_put(sp, digest, sp->sh->pass);

    } else {
        n = ngx_cdp_suppress_lookup(sp, digest);

        if (n) {
            ngx_rbtree_delete(&sp->sh->rbtree, &n->node);
            ngx_slab_free_locked(sp->shpool, n);
            sp->sh->count--;
            sp->sh->full = 0;
        }
    }

    ngx_shmtx_unlock(&sp->shpool->mutex);
}


/* with the mutex held */

static void
ngx_cdp_suppress_put(ngx_cdp_suppress_t *sp, const u_char *digest,
    ngx_uint_t pass)
{
    ngx_cdp_suppress_node_t  *n;

    n = ngx_cdp_suppress_lookup(sp, digest);

    if (n) {
        n->pass = pass;
        return;
    }

    n = ngx_slab_alloc_locked(sp->shpool, sizeof(ngx_cdp_suppress_node_t));

    if (n == NULL) {
        /* full: the store still drops their events, cookies stay */
        if (!sp->sh->full) {
            ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                          "cdp: the suppression zone is full (%ui browsers),"
                          " more erased browsers keep their cookies: raise "
                          "cdp_suppression_size", sp->sh->count);
            sp->sh->full = 1;
        }

        return;
    }

    ngx_memcpy(n->digest, digest, NGX_CDP_DIGEST_LEN);
    n->node.key = ((ngx_rbtree_key_t) digest[0] << 24) | (digest[1] << 16)
                  | (digest[2] << 8) | digest[3];
    n->pass = pass;

    ngx_rbtree_insert(&sp->sh->rbtree, &n->node);
    sp->sh->count++;
}


static ngx_int_t
ngx_cdp_suppress_hex(u_char *digest, const u_char *hex, size_t len)
{
    size_t     i;
    ngx_int_t  v;

    if (len != NGX_CDP_AIDH_LEN) {
        return NGX_ERROR;
    }

    for (i = 0; i < NGX_CDP_DIGEST_LEN; i++) {
        v = ngx_hextoi((u_char *) &hex[2 * i], 2);
        if (v == NGX_ERROR) {
            return NGX_ERROR;
        }

        digest[i] = (u_char) v;
    }

    return NGX_OK;
}


/*
 * The sync: worker 0 reads <prefix>:suppressed with SSCAN (1000 members a
 * call, one call in flight), from init_process and every
 * NGX_CDP_SUPPRESS_SYNC ms.
 */

ngx_int_t
ngx_cdp_suppress_init_process(ngx_cycle_t *cycle,
    ngx_http_cdp_main_conf_t *mcf)
{
    if (ngx_worker != 0 || ngx_cdp_suppress == NULL) {
        return NGX_OK;
    }

    /* every shard has a copy of the set: shard 0's */

    if (ngx_cdp_ingest_key(cycle->pool, mcf, "suppressed", NULL, 0, 0,
                           &ngx_cdp_suppress_key)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_cdp_suppress_ev.handler = ngx_cdp_suppress_sync;
    ngx_cdp_suppress_ev.log = cycle->log;
    ngx_cdp_suppress_ev.cancelable = 1;

    ngx_cdp_suppress_call.handler = ngx_cdp_suppress_scan_done;

    /* soon after the connection is up */
    ngx_add_timer(&ngx_cdp_suppress_ev, 200);

    return NGX_OK;
}


static void
ngx_cdp_suppress_sync(ngx_event_t *ev)
{
    ngx_str_t  zero = ngx_string("0");

    if (ngx_exiting || ngx_quit || ngx_terminate) {
        return;
    }

    if (!ngx_cdp_suppress_busy) {
        ngx_shmtx_lock(&ngx_cdp_suppress->shpool->mutex);
        ngx_cdp_suppress_pass = ++ngx_cdp_suppress->sh->pass;
        ngx_shmtx_unlock(&ngx_cdp_suppress->shpool->mutex);

        ngx_cdp_suppress_scan(&zero);
    }

    /* Redis not ready yet: soon again */
    ngx_add_timer(ev, ngx_cdp_suppress_busy ? NGX_CDP_SUPPRESS_SYNC : 1000);
}


static void
ngx_cdp_suppress_scan(ngx_str_t *cursor)
{
    const char  *argv[7];
    size_t       argvlen[7];

    argv[0] = "SSCAN";
    argvlen[0] = 5;
    argv[1] = (const char *) ngx_cdp_suppress_key.data;
    argvlen[1] = ngx_cdp_suppress_key.len;
    argv[2] = (const char *) cursor->data;
    argvlen[2] = cursor->len;
    argv[3] = "MATCH";
    argvlen[3] = 5;
    argv[4] = "anonymous_id:*";
    argvlen[4] = 14;
    argv[5] = "COUNT";
    argvlen[5] = 5;
    argv[6] = "1000";
    argvlen[6] = 4;

    ngx_cdp_suppress_busy = (ngx_cdp_redis_call(&ngx_cdp_suppress_call, 7,
                                                argv, argvlen)
                             == NGX_OK);
}


static void
ngx_cdp_suppress_scan_done(ngx_cdp_redis_call_t *call, void *data)
{
    redisReply  *reply = data;

    size_t                    i;
    ngx_str_t                 cursor;
    redisReply               *members, *m;
    ngx_cdp_suppress_t       *sp;
    ngx_rbtree_node_t        *node, *next, *sentinel;
    ngx_cdp_suppress_node_t  *n;
    u_char                    digest[NGX_CDP_DIGEST_LEN];

    ngx_cdp_suppress_busy = 0;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements != 2
        || reply->element[0]->type != REDIS_REPLY_STRING
        || reply->element[1]->type != REDIS_REPLY_ARRAY)
    {
        return;
    }

    sp = ngx_cdp_suppress;
    members = reply->element[1];

    ngx_shmtx_lock(&sp->shpool->mutex);

    for (i = 0; i < members->elements; i++) {
        m = members->element[i];

        if (m->type == REDIS_REPLY_STRING
            && m->len == sizeof("anonymous_id:") - 1 + NGX_CDP_AIDH_LEN
            && ngx_cdp_suppress_hex(digest,
                                    (u_char *) m->str
                                    + sizeof("anonymous_id:") - 1,
                                    NGX_CDP_AIDH_LEN)
               == NGX_OK)
        {
            ngx_cdp_suppress_put(sp, digest, ngx_cdp_suppress_pass);
        }
    }

    cursor.data = (u_char *) reply->element[0]->str;
    cursor.len = reply->element[0]->len;

    if (cursor.len == 1 && cursor.data[0] == '0') {

        /* a complete pass: what it did not see was unsuppressed */

        sentinel = sp->sh->rbtree.sentinel;
        node = sp->sh->rbtree.root;

        node = (node == sentinel) ? NULL : ngx_rbtree_min(node, sentinel);

        for ( /* void */ ; node; node = next) {
            next = ngx_rbtree_next(&sp->sh->rbtree, node);
            n = (ngx_cdp_suppress_node_t *) node;

            if (n->pass < ngx_cdp_suppress_pass) {
                ngx_rbtree_delete(&sp->sh->rbtree, node);
                ngx_slab_free_locked(sp->shpool, n);
                sp->sh->count--;
            }
        }

        ngx_shmtx_unlock(&sp->shpool->mutex);
        return;
    }

    ngx_shmtx_unlock(&sp->shpool->mutex);

    /* the cursor is in the reply, which is freed after this returns */
    ngx_cdp_suppress_scan(&cursor);
}


/*
 * 1 when the browser's cookie names an erased person: the cookie is
 * cleared in this response, and the hit is counted (the pixel, an
 * identifying response).
 */

ngx_int_t
ngx_cdp_suppress_cookie(ngx_http_request_t *r, ngx_http_cdp_ctx_t *ctx)
{
    ngx_str_t                 empty;
    ngx_http_cdp_loc_conf_t  *lcf;

    ngx_cdp_cookie_read(r, ctx, 1);

    if (ctx->aid_state != NGX_CDP_AID_KEPT
        || !ngx_cdp_suppress_has(ctx->aid))
    {
        return 0;
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_cdp_module);

    ngx_str_null(&empty);
    (void) ngx_cdp_cookie_set(r, &lcf->cookie->name, &empty, 0);

    /* $cdp_anonymous_id is empty from now on */
    ctx->aid_state = NGX_CDP_AID_NONE;

    ngx_cdp_count(NGX_CDP_C_SUPPRESSED_HITS, 1);

    return 1;
}
