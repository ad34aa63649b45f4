
/*
 * ngx_cdp: the per-worker Redis client, its transport (ngx_cdp_redis.h).
 *
 * nginx owns the sockets (ngx_event_connect_peer, its event loop and its
 * timers); hiredis is only the codec: redisFormatCommandArgv for the
 * commands built from arguments, redisReader for every reply.  Debian's
 * hiredis 0.14 async API would resolve names with a blocking getaddrinfo,
 * close the fd itself and read at most 16 KiB per wakeup, which does not
 * fit nginx's edge-triggered epoll.
 *
 * A node is one connection.  Its replies come back in order; each command
 * in flight has a pending entry with its callback, which is also called,
 * with no reply, when the connection is lost.  The slot map names the
 * node of each slot; a single Redis is a node that owns all of them, so
 * that one path serves both.  On a cluster:
 *
 *   - discovery: a seed is connected (the next one after a failure, with
 *     the backoff), asked CLUSTER SLOTS, and the map built from the
 *     masters of the reply: a node per master, connected, its libraries
 *     checked and loaded, as every node's are;
 *   - a command sent for a caller keeps a copy of its bytes until its
 *     reply: a MOVED points the slot at the node named and sends the copy
 *     there (after that node's handshake), and asks for the map again; an
 *     ASK sends ASKING and the copy, the map unchanged; five at most;
 *   - while a master is down or a slot has no node, the map is read again
 *     every second from a node that is up: a failover moves the slots to
 *     the promoted replica, which is connected; a node left without slots
 *     is closed once its replies are in (at once when it is down), and
 *     nothing is sent to a node that came back as a replica.
 *
 * The batches of events are ngx_cdp_ingest.c's.
 */


#include "ngx_cdp_redis.h"
#include "ngx_cdp_http.h"
#include "ngx_cdp_resp.h"

#include "ngx_cdp_store_lua.h"
#include "ngx_cdp_admin_lua.h"


#define NGX_CDP_REDIS_DOWN        0     /* waiting for the reconnect timer */
#define NGX_CDP_REDIS_CONNECTING  1     /* connect() in progress */
#define NGX_CDP_REDIS_HANDSHAKE   2     /* AUTH, SELECT, library check */
#define NGX_CDP_REDIS_READY       3

#define NGX_CDP_BACKOFF_MIN       100
#define NGX_CDP_BACKOFF_MAX       5000

#define NGX_CDP_REDIS_REDIRECTS   5     /* per command, then its error */
#define NGX_CDP_REDIS_REFRESH     1000  /* the map again, while degraded */
#define NGX_CDP_REDIS_REFRESH_IDLE  5000  /* and while all is well */
#define NGX_CDP_REDIS_SOON        10    /* the map again, after a MOVED */
#define NGX_CDP_REDIS_NODES       1024  /* nodes a worker ever knows */
#define NGX_CDP_REDIS_NLIBS       2

#define NGX_CDP_REDIS_ASKING      "*1\r\n$6\r\nASKING\r\n"


typedef struct ngx_cdp_redis_node_s  ngx_cdp_redis_node_t;
typedef struct ngx_cdp_redis_cmd_s   ngx_cdp_redis_cmd_t;


typedef struct {
    const char                *name;        /* for the log */
    const char                *version;     /* its version function */
    const char                *rev;         /* the revision compiled in */
    const char                *lua;
    size_t                     len;
} ngx_cdp_redis_library_t;


/* a caller's command kept until its reply, to be sent again elsewhere */

struct ngx_cdp_redis_cmd_s {
    ngx_cdp_redis_cmd_t       *next;        /* in a node's waiting list */
    ngx_cdp_redis_reply_pt     handler;
    void                      *data;
    ngx_uint_t                 redirects;
    size_t                     len;
    u_char                    *bytes;       /* follow the struct */
    unsigned                   asking:1;    /* after an ASK */
};


typedef struct {
    ngx_cdp_redis_reply_pt     handler;     /* NULL: ASKING's, swallowed */
    void                      *data;
    ngx_cdp_redis_cmd_t       *cmd;         /* its bytes, or NULL */
} ngx_cdp_redis_pending_t;


/* what a library check's or load's reply needs to know */
typedef struct {
    ngx_cdp_redis_node_t      *node;
    ngx_cdp_redis_library_t   *lib;
} ngx_cdp_redis_libref_t;


struct ngx_cdp_redis_node_s {
    struct sockaddr           *sockaddr;
    socklen_t                  socklen;
    ngx_str_t                  name;        /* "ip:port", for the log */

    ngx_peer_connection_t      peer;
    ngx_connection_t          *connection;
    ngx_uint_t                 state;
    redisReader               *reader;

    ngx_cdp_resp_buf_t         out;         /* commands not yet written */

    ngx_cdp_redis_pending_t   *pending;     /* a ring, grown as needed */
    ngx_uint_t                 pending_size;
    ngx_uint_t                 pending_head;
    ngx_uint_t                 pending_n;

    /* redirected here, sent once the node is ready */
    ngx_cdp_redis_cmd_t       *waiting;
    ngx_cdp_redis_cmd_t      **waiting_last;

    ngx_event_t                reconnect_ev;
    ngx_msec_t                 backoff;
    ngx_log_t                  quiet;       /* reconnects of an outage */

    ngx_uint_t                 slots;       /* it owns in the map */
    ngx_uint_t                 next_slots;  /* in the map being built */
    ngx_uint_t                 replicas;    /* the map's fewest of it */
    ngx_uint_t                 next_replicas;

    ngx_uint_t                 loading;     /* a bit per library */
    ngx_cdp_redis_libref_t     libs[NGX_CDP_REDIS_NLIBS];

    unsigned                   must_close:1;
    unsigned                   reported:1;  /* the outage is logged */
    unsigned                   up:1;        /* counted as connected */
    unsigned                   loaded:1;    /* libraries checked */
    unsigned                   listed:1;    /* in masters, while built */
};


typedef struct {
    ngx_cdp_redis_conf_t      *conf;
    ngx_str_t                 *spool;       /* cdp_spool's path, or NULL */
    ngx_log_t                 *log;
    ngx_cdp_redis_ready_pt     ready;

    ngx_cdp_redis_node_t     **nodes;       /* every node ever known */
    ngx_uint_t                 nnodes;

    ngx_cdp_redis_node_t     **map;         /* NGX_CDP_SLOTS of them */
    ngx_cdp_redis_node_t     **next_map;    /* a CLUSTER SLOTS reply's */
    ngx_uint_t                 unmapped;    /* slots without a node */
    ngx_uint_t                 patched;     /* by MOVED, since a read */

    ngx_cdp_redis_node_t     **masters;     /* by their first slot */
    ngx_uint_t                 nmasters;
    ngx_uint_t                 rr;          /* commands without a key */

    ngx_cdp_redis_node_t      *last;        /* of the last buffer call */
    size_t                     last_start;  /* its command's offset */
    ngx_cdp_redis_node_t      *current;     /* whose reply is handled */

    ngx_uint_t                 seed;        /* the one to connect next */
    ngx_cdp_redis_node_t      *refreshing;  /* asked CLUSTER SLOTS */
    ngx_event_t                refresh_ev;
    ngx_event_t                sweep_ev;
    ngx_msec_t                 backoff;     /* of the discovery */

    unsigned                   cluster:1;
    unsigned                   degraded:1;  /* the map is read every second */
    unsigned                   mapped:1;    /* a map was read */
    unsigned                   seeds_failed:1;
    unsigned                   refresh_reported:1;
} ngx_cdp_redis_t;


/* store/cdp.lua, then store/admin.lua (ngx_cdp_redis_library_*) */

static ngx_cdp_redis_library_t  ngx_cdp_redis_libraries[] = {
    { "store library cdp_v1", "cdp_version", NGX_CDP_STORE_REV,
      ngx_cdp_store_lua, sizeof(ngx_cdp_store_lua) - 1 },
    { "admin library cdp_admin_v1", "cdp_admin_version", NGX_CDP_ADMIN_REV,
      ngx_cdp_admin_lua, sizeof(ngx_cdp_admin_lua) - 1 }
};

#define NGX_CDP_REDIS_LIB_STORE   0
#define NGX_CDP_REDIS_LIB_ADMIN   1


static ngx_cdp_redis_node_t *ngx_cdp_redis_node(ngx_cdp_redis_t *rd,
    struct sockaddr *sockaddr, socklen_t socklen, ngx_str_t *name);
static ngx_cdp_redis_node_t *ngx_cdp_redis_node_at(ngx_cdp_redis_t *rd,
    const u_char *host, size_t len, ngx_uint_t port,
    ngx_cdp_redis_node_t *asked);
static ngx_uint_t ngx_cdp_redis_usable(ngx_cdp_redis_node_t *n);
static ngx_uint_t ngx_cdp_redis_wanted(ngx_cdp_redis_node_t *n);
static void ngx_cdp_redis_update(ngx_cdp_redis_t *rd,
    ngx_cdp_redis_node_t *n);
static void ngx_cdp_redis_connect(ngx_cdp_redis_node_t *n);
static void ngx_cdp_redis_handshake(ngx_cdp_redis_node_t *n);
static void ngx_cdp_redis_ready(ngx_cdp_redis_node_t *n);
static void ngx_cdp_redis_fail(ngx_cdp_redis_node_t *n, const char *why);
static void ngx_cdp_redis_close(ngx_cdp_redis_node_t *n);
static void ngx_cdp_redis_write(ngx_cdp_redis_node_t *n);
static ngx_int_t ngx_cdp_redis_command(ngx_cdp_redis_node_t *n, int argc,
    const char **argv, const size_t *argvlen, ngx_cdp_redis_reply_pt handler,
    void *data, ngx_uint_t keep);
static ngx_cdp_redis_cmd_t *ngx_cdp_redis_keep(u_char *p, size_t len,
    ngx_cdp_redis_reply_pt handler, void *data);
static ngx_int_t ngx_cdp_redis_push(ngx_cdp_redis_node_t *n,
    ngx_cdp_redis_reply_pt handler, void *data, ngx_cdp_redis_cmd_t *cmd);
static ngx_int_t ngx_cdp_redis_enqueue(ngx_cdp_redis_node_t *n,
    ngx_cdp_redis_cmd_t *cmd);
static void ngx_cdp_redis_dispatch(ngx_cdp_redis_t *rd,
    ngx_cdp_redis_node_t *n, ngx_cdp_redis_cmd_t *cmd);
static void ngx_cdp_redis_flush_waiting(ngx_cdp_redis_node_t *n);
static ngx_int_t ngx_cdp_redis_replies(ngx_cdp_redis_node_t *n,
    ngx_connection_t *c);
static ngx_int_t ngx_cdp_redis_redirect(ngx_cdp_redis_node_t *n,
    ngx_cdp_redis_cmd_t *cmd, redisReply *reply);
static void ngx_cdp_redis_check(ngx_cdp_redis_node_t *n, ngx_uint_t lib);
static void ngx_cdp_redis_next(ngx_cdp_redis_node_t *n, ngx_uint_t lib);
static void ngx_cdp_redis_load(ngx_cdp_redis_node_t *n, ngx_uint_t lib);
static ngx_int_t ngx_cdp_redis_send_to(ngx_cdp_redis_node_t *n,
    ngx_cdp_redis_call_t *call, int argc, const char **argv,
    const size_t *argvlen, ngx_uint_t keep);
static void ngx_cdp_redis_call_done(redisReply *reply, void *data);

static void ngx_cdp_redis_refresh(ngx_cdp_redis_t *rd);
static void ngx_cdp_redis_refresh_arm(ngx_cdp_redis_t *rd);
static void ngx_cdp_redis_discover(ngx_cdp_redis_t *rd);
static ngx_int_t ngx_cdp_redis_map_read(ngx_cdp_redis_t *rd,
    ngx_cdp_redis_node_t *asked, redisReply *reply);
static void ngx_cdp_redis_map_set(ngx_cdp_redis_t *rd, ngx_uint_t slot,
    ngx_cdp_redis_node_t *n);
static void ngx_cdp_redis_masters_list(ngx_cdp_redis_t *rd);
static void ngx_cdp_redis_sweep_post(ngx_cdp_redis_t *rd);

static void ngx_cdp_redis_read_handler(ngx_event_t *rev);
static void ngx_cdp_redis_write_handler(ngx_event_t *wev);
static void ngx_cdp_redis_reconnect_handler(ngx_event_t *ev);
static void ngx_cdp_redis_refresh_handler(ngx_event_t *ev);
static void ngx_cdp_redis_sweep_handler(ngx_event_t *ev);

static void ngx_cdp_redis_auth_done(redisReply *reply, void *data);
static void ngx_cdp_redis_select_done(redisReply *reply, void *data);
static void ngx_cdp_redis_hello_done(redisReply *reply, void *data);
static void ngx_cdp_redis_version_done(redisReply *reply, void *data);
static void ngx_cdp_redis_load_done(redisReply *reply, void *data);
static void ngx_cdp_redis_slots_done(redisReply *reply, void *data);



static ngx_cdp_redis_t  *ngx_cdp_redis;


ngx_int_t
ngx_cdp_redis_init_process(ngx_cycle_t *cycle, ngx_cdp_redis_conf_t *conf,
    ngx_str_t *spool, ngx_cdp_redis_ready_pt ready)
{
    ngx_uint_t             s;
    ngx_cdp_redis_t       *rd;
    ngx_cdp_redis_node_t  *n;

    rd = ngx_pcalloc(cycle->pool, sizeof(ngx_cdp_redis_t));
    if (rd == NULL) {
        return NGX_ERROR;
    }

    rd->conf = conf;
    rd->spool = spool;
    rd->log = cycle->log;
    rd->ready = ready;
    rd->cluster = (conf->seeds != NULL);
    rd->backoff = NGX_CDP_BACKOFF_MIN;

    rd->nodes = ngx_pcalloc(cycle->pool,
                            2 * NGX_CDP_REDIS_NODES * sizeof(void *));
    rd->map = ngx_pcalloc(cycle->pool, NGX_CDP_SLOTS * sizeof(void *));

    if (rd->nodes == NULL || rd->map == NULL) {
        return NGX_ERROR;
    }

    rd->masters = rd->nodes + NGX_CDP_REDIS_NODES;

    rd->refresh_ev.handler = ngx_cdp_redis_refresh_handler;
    rd->refresh_ev.data = rd;
    rd->refresh_ev.log = cycle->log;
    rd->refresh_ev.cancelable = 1;

    rd->sweep_ev.handler = ngx_cdp_redis_sweep_handler;
    rd->sweep_ev.data = rd;
    rd->sweep_ev.log = cycle->log;

    ngx_cdp_redis = rd;

    if (rd->cluster) {
        rd->next_map = ngx_pcalloc(cycle->pool,
                                   NGX_CDP_SLOTS * sizeof(void *));
        if (rd->next_map == NULL) {
            return NGX_ERROR;
        }

        rd->unmapped = NGX_CDP_SLOTS;

        ngx_cdp_redis_refresh(rd);
        ngx_cdp_redis_refresh_arm(rd);

        return NGX_OK;
    }

    /* a single Redis: one node, every slot its own, no discovery */

    n = ngx_cdp_redis_node(rd, conf->addr->sockaddr, conf->addr->socklen,
                           &conf->addr_text);
    if (n == NULL) {
        return NGX_ERROR;
    }

    for (s = 0; s < NGX_CDP_SLOTS; s++) {
        rd->map[s] = n;
    }

    n->slots = NGX_CDP_SLOTS;
    rd->masters[0] = n;
    rd->nmasters = 1;
    rd->mapped = 1;

    ngx_cdp_redis_connect(n);

    return NGX_OK;
}


void
ngx_cdp_redis_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t              i;
    ngx_cdp_redis_t        *rd;
    ngx_cdp_redis_cmd_t    *cmd;
    ngx_cdp_redis_node_t   *n;

    rd = ngx_cdp_redis;
    if (rd == NULL) {
        return;
    }

    /* what is in flight is the callers' (ingest spools its batches) */

    for (i = 0; i < rd->nnodes; i++) {
        n = rd->nodes[i];

        if (n->connection) {
            ngx_close_connection(n->connection);
            n->connection = NULL;
        }

        if (n->reader) {
            redisReaderFree(n->reader);
        }

        if (n->reconnect_ev.timer_set) {
            ngx_del_timer(&n->reconnect_ev);
        }

        while (n->pending_n) {
            ngx_free(n->pending[n->pending_head].cmd);
            n->pending_head = (n->pending_head + 1) % n->pending_size;
            n->pending_n--;
        }

        while (n->waiting) {
            cmd = n->waiting;
            n->waiting = cmd->next;
            ngx_free(cmd);
        }

        ngx_cdp_resp_free(&n->out);
        ngx_free(n->pending);
        ngx_free(n);
    }

    if (rd->refresh_ev.timer_set) {
        ngx_del_timer(&rd->refresh_ev);
    }

    if (rd->sweep_ev.posted) {
        ngx_delete_posted_event(&rd->sweep_ev);
    }

    ngx_cdp_redis = NULL;
}


/* -- the interface: state, buffers ------------------------------------ */


static ngx_cdp_redis_node_t *
ngx_cdp_redis_of(ngx_uint_t slot)
{
    if (ngx_cdp_redis == NULL || slot >= NGX_CDP_SLOTS) {
        return NULL;
    }

    return ngx_cdp_redis->map[slot];
}


ngx_uint_t
ngx_cdp_redis_is_ready_slot(ngx_uint_t slot)
{
    return ngx_cdp_redis_usable(ngx_cdp_redis_of(slot));
}


ngx_uint_t
ngx_cdp_redis_is_down_slot(ngx_uint_t slot)
{
    ngx_cdp_redis_node_t  *n;

    if (ngx_cdp_redis == NULL) {
        return 1;
    }

    n = ngx_cdp_redis_of(slot);

    if (n == NULL) {
        /* before the first map: down once every seed failed */
        return ngx_cdp_redis->mapped || ngx_cdp_redis->seeds_failed;
    }

    return n->state == NGX_CDP_REDIS_DOWN;
}


/* the replicas of the slot's master, as the last map listed them */

ngx_uint_t
ngx_cdp_redis_replicas_slot(ngx_uint_t slot)
{
    ngx_cdp_redis_node_t  *n;

    n = ngx_cdp_redis_of(slot);

    return n ? n->replicas : 0;
}


size_t
ngx_cdp_redis_unsent_slot(ngx_uint_t slot)
{
    ngx_cdp_redis_node_t  *n;

    n = ngx_cdp_redis_of(slot);

    return n ? (size_t) (n->out.last - n->out.pos) : 0;
}


ngx_uint_t
ngx_cdp_redis_is_ready(void)
{
    ngx_uint_t        i;
    ngx_cdp_redis_t  *rd;

    rd = ngx_cdp_redis;

    if (rd == NULL || rd->nmasters == 0) {
        return 0;
    }

    for (i = 0; i < rd->nmasters; i++) {
        if (!ngx_cdp_redis_usable(rd->masters[i])) {
            return 0;
        }
    }

    return 1;
}


size_t
ngx_cdp_redis_unsent(void)
{
    size_t                 len;
    ngx_uint_t             i;
    ngx_cdp_redis_node_t  *n;

    if (ngx_cdp_redis == NULL) {
        return 0;
    }

    len = 0;

    for (i = 0; i < ngx_cdp_redis->nnodes; i++) {
        n = ngx_cdp_redis->nodes[i];
        len += n->out.last - n->out.pos;
    }

    return len;
}


u_char *
ngx_cdp_redis_buffer_slot(ngx_uint_t slot, size_t len)
{
    ngx_cdp_redis_node_t  *n;

    n = ngx_cdp_redis_of(slot);

    if (n == NULL || ngx_cdp_resp_reserve(&n->out, len) != 0) {
        return NULL;
    }

    ngx_cdp_redis->last = n;
    ngx_cdp_redis->last_start = n->out.last - n->out.start;

    return n->out.last;
}


/*
 * The command the caller of ngx_cdp_redis_buffer_slot() wrote ends at
 * last; on a cluster its bytes are copied, for a redirection.
 */

ngx_int_t
ngx_cdp_redis_queue(u_char *last, ngx_cdp_redis_reply_pt handler, void *data)
{
    u_char                *start;
    ngx_cdp_redis_t       *rd;
    ngx_cdp_redis_cmd_t   *cmd;
    ngx_cdp_redis_node_t  *n;

    rd = ngx_cdp_redis;
    n = rd ? rd->last : NULL;

    if (n == NULL) {
        return NGX_ERROR;
    }

    cmd = NULL;

    if (rd->cluster) {
        start = n->out.start + rd->last_start;

        cmd = ngx_cdp_redis_keep(start, last - start, handler, data);
        if (cmd == NULL) {
            return NGX_ERROR;
        }
    }

    if (ngx_cdp_redis_push(n, handler, data, cmd) != NGX_OK) {
        ngx_free(cmd);
        return NGX_ERROR;
    }

    n->out.last = last;

    return NGX_OK;
}


void
ngx_cdp_redis_send(void)
{
    ngx_uint_t             i;
    ngx_cdp_redis_node_t  *n;

    if (ngx_cdp_redis == NULL) {
        return;
    }

    for (i = 0; i < ngx_cdp_redis->nnodes; i++) {
        n = ngx_cdp_redis->nodes[i];

        if (n->out.last != n->out.pos) {
            ngx_cdp_redis_write(n);
        }
    }
}


void
ngx_cdp_redis_load_library(void)
{
    ngx_uint_t        i;
    ngx_cdp_redis_t  *rd;

    rd = ngx_cdp_redis;
    if (rd == NULL) {
        return;
    }

    if (rd->current) {
        if (ngx_cdp_redis_usable(rd->current)) {
            ngx_cdp_redis_load(rd->current, NGX_CDP_REDIS_LIB_STORE);
        }

        return;
    }

    for (i = 0; i < rd->nmasters; i++) {
        if (ngx_cdp_redis_usable(rd->masters[i])) {
            ngx_cdp_redis_load(rd->masters[i], NGX_CDP_REDIS_LIB_STORE);
            ngx_cdp_redis_write(rd->masters[i]);
        }
    }
}


/* -- single commands -------------------------------------------------- */


/* the argument that holds a command's first key, or -1 */

static ngx_int_t
ngx_cdp_redis_key_arg(int argc, const char **argv, const size_t *argvlen)
{
    int          i;
    ngx_int_t    numkeys;
    const char  *name;
    size_t       len;

    if (argc < 2) {
        return -1;
    }

    name = argv[0];
    len = argvlen[0];

#define ngx_cdp_is(s)                                                         \
    (len == sizeof(s) - 1                                                     \
     && ngx_strncasecmp((u_char *) name, (u_char *) s, len) == 0)

    if (ngx_cdp_is("FCALL") || ngx_cdp_is("FCALL_RO")) {
        if (argc < 4) {
            return -1;
        }

        numkeys = ngx_atoi((u_char *) argv[2], argvlen[2]);

        return numkeys > 0 ? 3 : -1;
    }

    if (ngx_cdp_is("XREADGROUP") || ngx_cdp_is("XREAD")) {
        for (i = 1; i < argc - 1; i++) {
            if (argvlen[i] == sizeof("STREAMS") - 1
                && ngx_strncasecmp((u_char *) argv[i], (u_char *) "STREAMS",
                                   argvlen[i])
                   == 0)
            {
                return i + 1;
            }
        }

        return -1;
    }

    if (ngx_cdp_is("XINFO") || ngx_cdp_is("XGROUP")) {
        return argc > 2 ? 2 : -1;
    }

#undef ngx_cdp_is

    return 1;
}


/*
 * One command for a caller (the admin API, delivery, segments, profiles):
 * sent at once, in order with the batches of its node; call->handler gets
 * the reply (a redisReply *), or NULL when the connection is lost.
 * NGX_DECLINED: the node of its key is not ready.
 */

ngx_int_t
ngx_cdp_redis_call(ngx_cdp_redis_call_t *call, int argc, const char **argv,
    const size_t *argvlen)
{
    ngx_int_t              k;
    ngx_uint_t             i;
    ngx_cdp_redis_t       *rd;
    ngx_cdp_redis_node_t  *n;

    rd = ngx_cdp_redis;

    if (rd == NULL || argc < 1) {
        return NGX_DECLINED;
    }

    k = ngx_cdp_redis_key_arg(argc, argv, argvlen);

    if (k >= 0) {
        return ngx_cdp_redis_call_slot(call,
                                       ngx_cdp_key_slot((u_char *) argv[k],
                                                        argvlen[k]),
                                       argc, argv, argvlen);
    }

    /* no key: any ready master, in turn */

    for (i = 0; i < rd->nmasters; i++) {
        n = rd->masters[rd->rr++ % rd->nmasters];

        if (ngx_cdp_redis_usable(n)) {
            return ngx_cdp_redis_send_to(n, call, argc, argv, argvlen, 0);
        }
    }

    return NGX_DECLINED;
}


ngx_int_t
ngx_cdp_redis_call_slot(ngx_cdp_redis_call_t *call, ngx_uint_t slot,
    int argc, const char **argv, const size_t *argvlen)
{
    ngx_cdp_redis_node_t  *n;

    n = ngx_cdp_redis_of(slot);

    if (!ngx_cdp_redis_usable(n)) {
        return NGX_DECLINED;
    }

    return ngx_cdp_redis_send_to(n, call, argc, argv, argvlen,
                                 ngx_cdp_redis->cluster);
}


static ngx_int_t
ngx_cdp_redis_send_to(ngx_cdp_redis_node_t *n, ngx_cdp_redis_call_t *call,
    int argc, const char **argv, const size_t *argvlen, ngx_uint_t keep)
{
    if (ngx_cdp_redis_command(n, argc, argv, argvlen,
                              ngx_cdp_redis_call_done, call, keep)
        != NGX_OK)
    {
        return NGX_DECLINED;
    }

    ngx_cdp_redis_write(n);

    return NGX_OK;
}


static void
ngx_cdp_redis_call_done(redisReply *reply, void *data)
{
    ngx_cdp_redis_call_t  *call = data;

    ngx_cdp_redis_node_t  *n;

    n = ngx_cdp_redis->current;

    if (n && reply && reply->type == REDIS_REPLY_ERROR
        && ngx_strstr(reply->str, "Function not found"))
    {
        /* FUNCTION FLUSH meanwhile: back for the next call */
        ngx_cdp_redis_load(n, NGX_CDP_REDIS_LIB_ADMIN);
    }

    call->handler(call, reply);
}


/* -- nodes ------------------------------------------------------------ */


/* the node of an address: found, or made (not connected yet) */

static ngx_cdp_redis_node_t *
ngx_cdp_redis_node(ngx_cdp_redis_t *rd, struct sockaddr *sockaddr,
    socklen_t socklen, ngx_str_t *name)
{
    size_t                 len;
    ngx_uint_t             i;
    ngx_cdp_redis_node_t  *n;

    for (i = 0; i < rd->nnodes; i++) {
        n = rd->nodes[i];

        if (ngx_cmp_sockaddr(n->sockaddr, n->socklen, sockaddr, socklen, 1)
            == NGX_OK)
        {
            return n;
        }
    }

    if (rd->nnodes == NGX_CDP_REDIS_NODES) {
        ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                      "cdp: more than %d redis nodes, not one more",
                      NGX_CDP_REDIS_NODES);
        return NULL;
    }

    len = name ? name->len : NGX_SOCKADDR_STRLEN;

    n = ngx_calloc(sizeof(ngx_cdp_redis_node_t) + socklen + len, rd->log);
    if (n == NULL) {
        return NULL;
    }

    n->sockaddr = (struct sockaddr *) (n + 1);
    n->socklen = socklen;
    ngx_memcpy(n->sockaddr, sockaddr, socklen);

    n->name.data = (u_char *) n->sockaddr + socklen;

    if (name) {
        n->name.len = name->len;
        ngx_memcpy(n->name.data, name->data, name->len);

    } else {
        n->name.len = ngx_sock_ntop(sockaddr, socklen, n->name.data, len, 1);
    }

    n->waiting_last = &n->waiting;
    n->backoff = NGX_CDP_BACKOFF_MIN;

    /* an outage is logged once: not every failed reconnect of it */
    n->quiet = *rd->log;
    n->quiet.log_level = ngx_min(rd->log->log_level, NGX_LOG_CRIT);

    for (i = 0; i < NGX_CDP_REDIS_NLIBS; i++) {
        n->libs[i].node = n;
        n->libs[i].lib = &ngx_cdp_redis_libraries[i];
    }

    /* a down Redis must not hold up a graceful shutdown */
    n->reconnect_ev.handler = ngx_cdp_redis_reconnect_handler;
    n->reconnect_ev.data = n;
    n->reconnect_ev.log = rd->log;
    n->reconnect_ev.cancelable = 1;

    rd->nodes[rd->nnodes++] = n;

    return n;
}


/*
 * The node of a host and port a cluster node gave (CLUSTER SLOTS, MOVED,
 * ASK): an IP address, never a name (no resolver in a worker); none (an
 * unknown endpoint) is the address of the node that was asked.
 */

static ngx_cdp_redis_node_t *
ngx_cdp_redis_node_at(ngx_cdp_redis_t *rd, const u_char *host, size_t len,
    ngx_uint_t port, ngx_cdp_redis_node_t *asked)
{
    socklen_t       socklen;
    in_addr_t       inaddr;
    ngx_sockaddr_t  sa;

    ngx_memzero(&sa, sizeof(ngx_sockaddr_t));

    if (port == 0 || port > 65535) {
        return NULL;
    }

    if (len == 0) {
        if (asked->sockaddr->sa_family != AF_INET
#if (NGX_HAVE_INET6)
            && asked->sockaddr->sa_family != AF_INET6
#endif
           )
        {
            return NULL;
        }

        socklen = asked->socklen;
        ngx_memcpy(&sa, asked->sockaddr, socklen);

    } else {
        inaddr = ngx_inet_addr((u_char *) host, len);

        if (inaddr != INADDR_NONE) {
            sa.sockaddr_in.sin_family = AF_INET;
            sa.sockaddr_in.sin_addr.s_addr = inaddr;
            socklen = sizeof(struct sockaddr_in);

#if (NGX_HAVE_INET6)
        } else if (ngx_inet6_addr((u_char *) host, len,
                                  sa.sockaddr_in6.sin6_addr.s6_addr)
                   == NGX_OK)
        {
            sa.sockaddr_in6.sin6_family = AF_INET6;
            socklen = sizeof(struct sockaddr_in6);
#endif

        } else {
            return NULL;
        }
    }

    ngx_inet_set_port(&sa.sockaddr, (in_port_t) port);

    return ngx_cdp_redis_node(rd, &sa.sockaddr, socklen, NULL);
}


/* commands may be sent: connected, authenticated, libraries checked */

static ngx_uint_t
ngx_cdp_redis_usable(ngx_cdp_redis_node_t *n)
{
    return n && n->state == NGX_CDP_REDIS_READY && n->loaded;
}


/* a master of the map, or the target of redirected commands */

static ngx_uint_t
ngx_cdp_redis_wanted(ngx_cdp_redis_node_t *n)
{
    return n->slots || n->waiting;
}


/*
 * What a node's place in the map asks for: a wanted node is connected
 * (unless its reconnect timer runs) and gets its libraries checked; any
 * other one is closed, at once when it is down, else once its replies
 * are in (ngx_cdp_redis_sweep_handler()).
 */

static void
ngx_cdp_redis_update(ngx_cdp_redis_t *rd, ngx_cdp_redis_node_t *n)
{
    if (ngx_cdp_redis_wanted(n)) {

        switch (n->state) {

        case NGX_CDP_REDIS_DOWN:
            if (!n->reconnect_ev.timer_set && !ngx_exiting) {
                ngx_cdp_redis_connect(n);
            }

            break;

        case NGX_CDP_REDIS_READY:
            if (!n->loaded) {
                n->state = NGX_CDP_REDIS_HANDSHAKE;
                ngx_cdp_redis_check(n, 0);
                ngx_cdp_redis_write(n);
            }

            break;

        default:
            /* its handshake ends with the libraries check */
            break;
        }

        return;
    }

    if (n->state == NGX_CDP_REDIS_DOWN) {
        if (n->reconnect_ev.timer_set) {
            ngx_del_timer(&n->reconnect_ev);
        }

        return;
    }

    ngx_cdp_redis_sweep_post(rd);
}


static void
ngx_cdp_redis_connect(ngx_cdp_redis_node_t *n)
{
    ngx_int_t          rc;
    ngx_connection_t  *c;

    ngx_memzero(&n->peer, sizeof(ngx_peer_connection_t));

    n->peer.sockaddr = n->sockaddr;
    n->peer.socklen = n->socklen;
    n->peer.name = &n->name;
    n->peer.get = ngx_event_get_peer;
    n->peer.log = n->reported ? &n->quiet : ngx_cdp_redis->log;
    n->peer.log_error = NGX_ERROR_ERR;

    if (n->reader) {
        redisReaderFree(n->reader);
    }

    n->reader = redisReaderCreate();
    if (n->reader == NULL) {
        ngx_cdp_redis_fail(n, "redisReaderCreate() failed");
        return;
    }

    n->state = NGX_CDP_REDIS_CONNECTING;

    rc = ngx_event_connect_peer(&n->peer);

    if (rc == NGX_ERROR || rc == NGX_BUSY || rc == NGX_DECLINED) {
        if (n->peer.connection) {
            ngx_close_connection(n->peer.connection);
            n->peer.connection = NULL;
        }

        ngx_cdp_redis_fail(n, "connect() failed");
        return;
    }

    c = n->peer.connection;
    n->connection = c;

    c->data = n;
    c->log = n->peer.log;
    c->read->log = c->log;
    c->write->log = c->log;
    c->read->handler = ngx_cdp_redis_read_handler;
    c->write->handler = ngx_cdp_redis_write_handler;

    if (rc == NGX_AGAIN) {
        ngx_add_timer(c->write, ngx_cdp_redis->conf->timeout);
        return;
    }

    ngx_cdp_redis_handshake(n);
}


static ngx_int_t
ngx_cdp_redis_test_connect(ngx_cdp_redis_node_t *n, ngx_connection_t *c)
{
    int        err;
    u_char    *p, text[NGX_SOCKADDR_STRLEN + 64];
    socklen_t  len;

    err = 0;
    len = sizeof(int);

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, (void *) &err, &len) == -1) {
        err = ngx_socket_errno;
    }

    if (err) {
        p = ngx_snprintf(text, sizeof(text) - 1,
                         "connect() to redis %V failed", &n->name);
        *p = '\0';

        (void) ngx_connection_error(c, err, (char *) text);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/*
 * AUTH, SELECT (a single Redis's db), then the libraries of a node that
 * commands go to, or a PING for one only asked for the map (a seed).
 */

static void
ngx_cdp_redis_handshake(ngx_cdp_redis_node_t *n)
{
    u_char                *p, db[NGX_INT_T_LEN];
    const char            *argv[3];
    size_t                 argvlen[3];
    ngx_cdp_redis_conf_t  *conf;

    conf = ngx_cdp_redis->conf;

    n->state = NGX_CDP_REDIS_HANDSHAKE;
    n->loaded = 0;

    /* connected: what happens now is worth logging */
    n->connection->log = ngx_cdp_redis->log;
    n->connection->read->log = ngx_cdp_redis->log;
    n->connection->write->log = ngx_cdp_redis->log;

    if (conf->password.len) {
        argv[0] = "AUTH";
        argvlen[0] = 4;
        argv[1] = (const char *) conf->password.data;
        argvlen[1] = conf->password.len;

        if (ngx_cdp_redis_command(n, 2, argv, argvlen,
                                  ngx_cdp_redis_auth_done, n, 0)
            != NGX_OK)
        {
            return;
        }
    }

    if (conf->db) {
        p = ngx_sprintf(db, "%ui", conf->db);

        argv[0] = "SELECT";
        argvlen[0] = 6;
        argv[1] = (const char *) db;
        argvlen[1] = p - db;

        if (ngx_cdp_redis_command(n, 2, argv, argvlen,
                                  ngx_cdp_redis_select_done, n, 0)
            != NGX_OK)
        {
            return;
        }
    }

    if (ngx_cdp_redis_wanted(n)) {
        ngx_cdp_redis_check(n, 0);

    } else {
        argv[0] = "PING";
        argvlen[0] = 4;

        if (ngx_cdp_redis_command(n, 1, argv, argvlen,
                                  ngx_cdp_redis_hello_done, n, 0)
            != NGX_OK)
        {
            return;
        }
    }

    ngx_cdp_redis_write(n);
}


static void
ngx_cdp_redis_setup_failed(ngx_cdp_redis_node_t *n, const char *what,
    redisReply *reply)
{
    /* the reply of a failed AUTH does not contain the password */
    ngx_log_error(NGX_LOG_ERR, ngx_cdp_redis->log, 0,
                  "cdp: redis %V %s failed: %s", &n->name, what, reply->str);

    n->must_close = 1;
}


static void
ngx_cdp_redis_auth_done(redisReply *reply, void *data)
{
    if (reply && reply->type == REDIS_REPLY_ERROR) {
        ngx_cdp_redis_setup_failed(data, "AUTH", reply);
    }
}


static void
ngx_cdp_redis_select_done(redisReply *reply, void *data)
{
    if (reply && reply->type == REDIS_REPLY_ERROR) {
        ngx_cdp_redis_setup_failed(data, "SELECT", reply);
    }
}


static void
ngx_cdp_redis_hello_done(redisReply *reply, void *data)
{
    ngx_cdp_redis_node_t  *n = data;

    if (reply == NULL || n->must_close) {
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR) {
        ngx_cdp_redis_setup_failed(n, "PING", reply);
        return;
    }

    ngx_cdp_redis_ready(n);
}


/*
 * The libraries of store/, compiled in, checked in order at every
 * connect of a node commands go to: FCALL_RO of its version function;
 * another revision, or none, is loaded (FUNCTION LOAD REPLACE: Functions
 * are per node, so on every master).  The node is ready when the last
 * one is there.
 */

static void
ngx_cdp_redis_check(ngx_cdp_redis_node_t *n, ngx_uint_t lib)
{
    const char  *argv[3];
    size_t       argvlen[3];

    argv[0] = "FCALL_RO";
    argvlen[0] = sizeof("FCALL_RO") - 1;
    argv[1] = ngx_cdp_redis_libraries[lib].version;
    argvlen[1] = ngx_strlen(argv[1]);
    argv[2] = "0";
    argvlen[2] = 1;

    /* written by the caller, or by the read handler after this reply */
    (void) ngx_cdp_redis_command(n, 3, argv, argvlen,
                                 ngx_cdp_redis_version_done, &n->libs[lib],
                                 0);
}


static void
ngx_cdp_redis_version_done(redisReply *reply, void *data)
{
    ngx_cdp_redis_libref_t  *ref = data;

    ngx_cdp_redis_node_t     *n;
    ngx_cdp_redis_library_t  *lib;

    n = ref->node;
    lib = ref->lib;

    if (reply == NULL || n->must_close) {
        return;
    }

    if (reply->type == REDIS_REPLY_STRING
        && reply->len == ngx_strlen(lib->rev)
        && ngx_strncmp(reply->str, lib->rev, reply->len) == 0)
    {
        ngx_cdp_redis_next(n, lib - ngx_cdp_redis_libraries);
        return;
    }

    /* missing ("Function not found") or another revision */

    ngx_cdp_redis_load(n, lib - ngx_cdp_redis_libraries);
}


/* the library after lib, or ready */

static void
ngx_cdp_redis_next(ngx_cdp_redis_node_t *n, ngx_uint_t lib)
{
    if (n->state != NGX_CDP_REDIS_HANDSHAKE) {
        return;
    }

    if (++lib < NGX_CDP_REDIS_NLIBS) {
        ngx_cdp_redis_check(n, lib);
        return;
    }

    n->loaded = 1;

    ngx_cdp_redis_ready(n);
}


/* FUNCTION LOAD REPLACE, once at a time per library and node */

static void
ngx_cdp_redis_load(ngx_cdp_redis_node_t *n, ngx_uint_t lib)
{
    ngx_uint_t   bit;
    const char  *argv[4];
    size_t       argvlen[4];

    bit = 1 << lib;

    if (n->loading & bit) {
        return;
    }

    argv[0] = "FUNCTION";
    argvlen[0] = 8;
    argv[1] = "LOAD";
    argvlen[1] = 4;
    argv[2] = "REPLACE";
    argvlen[2] = 7;
    argv[3] = ngx_cdp_redis_libraries[lib].lua;
    argvlen[3] = ngx_cdp_redis_libraries[lib].len;

    if (ngx_cdp_redis_command(n, 4, argv, argvlen, ngx_cdp_redis_load_done,
                              &n->libs[lib], 0)
        == NGX_OK)
    {
        n->loading |= bit;
    }
}


/* the reply to FUNCTION LOAD: logged; a refusal closes the connection */

static void
ngx_cdp_redis_load_done(redisReply *reply, void *data)
{
    ngx_cdp_redis_libref_t  *ref = data;

    ngx_uint_t                lib;
    ngx_cdp_redis_node_t     *n;

    if (reply == NULL) {
        return;
    }

    n = ref->node;
    lib = ref->lib - ngx_cdp_redis_libraries;

    n->loading &= ~(1 << lib);

    if (reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, ngx_cdp_redis->log, 0,
                      "cdp: redis %V FUNCTION LOAD of the %s failed: %s",
                      &n->name, ref->lib->name, reply->str);
        n->must_close = 1;
        return;
    }

    ngx_log_error(NGX_LOG_NOTICE, ngx_cdp_redis->log, 0,
                  "cdp: loaded the %s revision %s into redis %V",
                  ref->lib->name, ref->lib->rev, &n->name);

    ngx_cdp_redis_next(n, lib);
}


/*
 * The handshake is over: a node commands go to has its libraries, one
 * only asked for the map is connected.  Whatever waited for the node is
 * sent, and the callers hear of it.
 */

static void
ngx_cdp_redis_ready(ngx_cdp_redis_node_t *n)
{
    ngx_cdp_redis_t  *rd;

    rd = ngx_cdp_redis;

    if (ngx_cdp_redis_wanted(n) && !n->loaded) {
        /* the map gave it slots during its handshake */
        n->state = NGX_CDP_REDIS_HANDSHAKE;
        ngx_cdp_redis_check(n, 0);
        return;
    }

    n->state = NGX_CDP_REDIS_READY;
    n->backoff = NGX_CDP_BACKOFF_MIN;

    if (!n->up) {
        n->up = 1;

        ngx_cdp_count(NGX_CDP_C_REDIS_CONNECTS, 1);

        if (n->reported) {
            ngx_log_error(NGX_LOG_NOTICE, rd->log, 0,
                          "cdp: redis %V is back", &n->name);
            n->reported = 0;
        }
    }

    if (rd->cluster && rd->refreshing == NULL
        && (!rd->mapped || (rd->refresh_ev.timer_set && rd->degraded)))
    {
        /* the first map, or one that is wanted: from this node now */
        ngx_cdp_redis_refresh(rd);
    }

    if (!n->loaded) {
        /* a seed that is no master: closed once the map is in */
        ngx_cdp_redis_sweep_post(rd);
        return;
    }

    ngx_cdp_redis_flush_waiting(n);

    if (n->connection) {
        rd->ready();
    }
}


/*
 * The connection is gone or unusable: every command in flight is failed
 * (its callback called without a reply: ngx_cdp_ingest.c keeps its
 * batches), and so is every one waiting for the node; a master is
 * reconnected after its backoff, a seed gives way to the next one.
 */

static void
ngx_cdp_redis_fail(ngx_cdp_redis_node_t *n, const char *why)
{
    ngx_cdp_redis_t          *rd;
    ngx_cdp_redis_cmd_t      *cmd;
    ngx_cdp_redis_pending_t  *p;

    rd = ngx_cdp_redis;

    if (n->connection) {
        ngx_close_connection(n->connection);
        n->connection = NULL;
        n->peer.connection = NULL;
    }

    n->state = NGX_CDP_REDIS_DOWN;
    n->loaded = 0;

    if (n->up) {
        ngx_cdp_count(NGX_CDP_C_REDIS_DISCONNECTS, 1);
        n->up = 0;

    } else {
        ngx_cdp_count(NGX_CDP_C_REDIS_CONNECT_FAILURES, 1);
    }

    if (!n->reported && !ngx_exiting && !ngx_terminate) {
        if (rd->spool) {
            ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                          "cdp: redis %V unavailable (%s), events are "
                          "spooled to %V until it is back",
                          &n->name, why, rd->spool);

        } else {
            ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                          "cdp: redis %V unavailable (%s), events are "
                          "dropped until it is back (cdp_spool keeps them)",
                          &n->name, why);
        }

        n->reported = 1;
    }

    n->out.pos = n->out.start;
    n->out.last = n->out.start;

    n->must_close = 0;
    n->loading = 0;

    while (n->pending_n) {
        p = &n->pending[n->pending_head];
        n->pending_head = (n->pending_head + 1) % n->pending_size;
        n->pending_n--;

        cmd = p->cmd;

        if (p->handler) {
            p->handler(NULL, p->data);
        }

        ngx_free(cmd);
    }

    while (n->waiting) {
        cmd = n->waiting;
        n->waiting = cmd->next;

        if (n->waiting == NULL) {
            n->waiting_last = &n->waiting;
        }

        cmd->handler(NULL, cmd->data);
        ngx_free(cmd);
    }

    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    if (n->slots) {
        if (!n->reconnect_ev.timer_set) {
            ngx_add_timer(&n->reconnect_ev, n->backoff);
        }

        n->backoff = ngx_min(n->backoff * 2, NGX_CDP_BACKOFF_MAX);

    } else if (!rd->mapped) {
        /* a seed: the next one, after the discovery's backoff */
        rd->seed++;
        rd->seeds_failed = (rd->seed >= rd->conf->seeds->nelts);
        rd->backoff = ngx_min(rd->backoff * 2, NGX_CDP_BACKOFF_MAX);
    }

    ngx_cdp_redis_refresh_arm(rd);
}


/* closed on purpose: it owns no slots and owes no replies */

static void
ngx_cdp_redis_close(ngx_cdp_redis_node_t *n)
{
    ngx_log_error(NGX_LOG_INFO, ngx_cdp_redis->log, 0,
                  "cdp: redis %V closed: no slots of the map", &n->name);

    if (n->connection) {
        ngx_close_connection(n->connection);
        n->connection = NULL;
        n->peer.connection = NULL;
    }

    if (n->reconnect_ev.timer_set) {
        ngx_del_timer(&n->reconnect_ev);
    }

    n->state = NGX_CDP_REDIS_DOWN;
    n->loaded = 0;
    n->up = 0;
    n->loading = 0;
    n->must_close = 0;
    n->backoff = NGX_CDP_BACKOFF_MIN;

    n->out.pos = n->out.start;
    n->out.last = n->out.start;

    ngx_cdp_resp_free(&n->out);
}


static void
ngx_cdp_redis_reconnect_handler(ngx_event_t *ev)
{
    ngx_cdp_redis_node_t  *n = ev->data;

    if (n->state == NGX_CDP_REDIS_DOWN && ngx_cdp_redis_wanted(n)) {
        ngx_cdp_redis_connect(n);
    }
}


static void
ngx_cdp_redis_sweep_post(ngx_cdp_redis_t *rd)
{
    if (rd->cluster && !rd->sweep_ev.posted) {
        ngx_post_event(&rd->sweep_ev, &ngx_posted_events);
    }
}


/* after the event that left nodes without slots: outside their handlers */

static void
ngx_cdp_redis_sweep_handler(ngx_event_t *ev)
{
    ngx_uint_t             i;
    ngx_cdp_redis_t       *rd;
    ngx_cdp_redis_node_t  *n;

    rd = ev->data;

    for (i = 0; i < rd->nnodes; i++) {
        n = rd->nodes[i];

        if (n->state == NGX_CDP_REDIS_DOWN || ngx_cdp_redis_wanted(n)
            || n == rd->refreshing || n->pending_n
            || (n->state != NGX_CDP_REDIS_READY && !rd->mapped))
        {
            continue;
        }

        ngx_cdp_redis_close(n);
    }
}


/* -- commands and replies --------------------------------------------- */


static ngx_cdp_redis_cmd_t *
ngx_cdp_redis_keep(u_char *p, size_t len, ngx_cdp_redis_reply_pt handler,
    void *data)
{
    ngx_cdp_redis_cmd_t  *cmd;

    cmd = ngx_alloc(sizeof(ngx_cdp_redis_cmd_t) + len, ngx_cdp_redis->log);
    if (cmd == NULL) {
        return NULL;
    }

    cmd->next = NULL;
    cmd->handler = handler;
    cmd->data = data;
    cmd->redirects = 0;
    cmd->len = len;
    cmd->bytes = (u_char *) (cmd + 1);
    cmd->asking = 0;

    ngx_memcpy(cmd->bytes, p, len);

    return cmd;
}


/* keep: a caller's command on a cluster, kept to follow a redirection */

static ngx_int_t
ngx_cdp_redis_command(ngx_cdp_redis_node_t *n, int argc, const char **argv,
    const size_t *argvlen, ngx_cdp_redis_reply_pt handler, void *data,
    ngx_uint_t keep)
{
    int                   len;
    char                 *buf;
    ngx_cdp_redis_cmd_t  *cmd;

    len = redisFormatCommandArgv(&buf, argc, argv, argvlen);
    if (len < 0) {
        ngx_cdp_redis_fail(n, "redisFormatCommandArgv() failed");
        return NGX_ERROR;
    }

    cmd = NULL;

    if (keep) {
        cmd = ngx_cdp_redis_keep((u_char *) buf, len, handler, data);
        if (cmd == NULL) {
            goto nomem;
        }
    }

    if (ngx_cdp_resp_reserve(&n->out, len) != 0
        || ngx_cdp_redis_push(n, handler, data, cmd) != NGX_OK)
    {
        ngx_free(cmd);
        goto nomem;
    }

    n->out.last = ngx_cpymem(n->out.last, buf, len);
    redisFreeCommand(buf);

    return NGX_OK;

nomem:

    redisFreeCommand(buf);
    ngx_cdp_redis_fail(n, "out of memory");

    return NGX_ERROR;
}


static ngx_int_t
ngx_cdp_redis_push(ngx_cdp_redis_node_t *n, ngx_cdp_redis_reply_pt handler,
    void *data, ngx_cdp_redis_cmd_t *cmd)
{
    ngx_uint_t                i, size;
    ngx_cdp_redis_pending_t  *p, *ring;

    if (n->pending_n == n->pending_size) {

        /* the ring grows: ingest bounds what it puts in flight */

        size = ngx_max(n->pending_size * 2, 64);

        ring = ngx_alloc(size * sizeof(ngx_cdp_redis_pending_t),
                         ngx_cdp_redis->log);
        if (ring == NULL) {
            return NGX_ERROR;
        }

        for (i = 0; i < n->pending_n; i++) {
            ring[i] = n->pending[(n->pending_head + i) % n->pending_size];
        }

        ngx_free(n->pending);

        n->pending = ring;
        n->pending_size = size;
        n->pending_head = 0;
    }

    p = &n->pending[(n->pending_head + n->pending_n) % n->pending_size];
    p->handler = handler;
    p->data = data;
    p->cmd = cmd;

    n->pending_n++;

    return NGX_OK;
}


/* a kept command onto a node's output (ASKING first after an ASK) */

static ngx_int_t
ngx_cdp_redis_enqueue(ngx_cdp_redis_node_t *n, ngx_cdp_redis_cmd_t *cmd)
{
    size_t  len;

    len = cmd->len + (cmd->asking ? sizeof(NGX_CDP_REDIS_ASKING) - 1 : 0);

    if (ngx_cdp_resp_reserve(&n->out, len) != 0) {
        return NGX_ERROR;
    }

    if (cmd->asking) {
        if (ngx_cdp_redis_push(n, NULL, NULL, NULL) != NGX_OK) {
            return NGX_ERROR;
        }

        n->out.last = ngx_cpymem(n->out.last, NGX_CDP_REDIS_ASKING,
                                 sizeof(NGX_CDP_REDIS_ASKING) - 1);
    }

    if (ngx_cdp_redis_push(n, cmd->handler, cmd->data, cmd) != NGX_OK) {
        return NGX_ERROR;
    }

    n->out.last = ngx_cpymem(n->out.last, cmd->bytes, cmd->len);

    return NGX_OK;
}


/* a redirected command: to its node now, or once that node is ready */

static void
ngx_cdp_redis_dispatch(ngx_cdp_redis_t *rd, ngx_cdp_redis_node_t *n,
    ngx_cdp_redis_cmd_t *cmd)
{
    if (ngx_cdp_redis_usable(n) && n->waiting == NULL) {

        if (ngx_cdp_redis_enqueue(n, cmd) != NGX_OK) {
            cmd->handler(NULL, cmd->data);
            ngx_free(cmd);
            ngx_cdp_redis_fail(n, "out of memory");
            return;
        }

        ngx_cdp_redis_write(n);
        return;
    }

    cmd->next = NULL;
    *n->waiting_last = cmd;
    n->waiting_last = &cmd->next;

    ngx_cdp_redis_update(rd, n);
}


static void
ngx_cdp_redis_flush_waiting(ngx_cdp_redis_node_t *n)
{
    ngx_cdp_redis_cmd_t  *cmd;

    while (n->waiting) {
        cmd = n->waiting;
        n->waiting = cmd->next;

        if (n->waiting == NULL) {
            n->waiting_last = &n->waiting;
        }

        if (ngx_cdp_redis_enqueue(n, cmd) != NGX_OK) {
            cmd->handler(NULL, cmd->data);
            ngx_free(cmd);
            ngx_cdp_redis_fail(n, "out of memory");
            return;
        }
    }

    ngx_cdp_redis_write(n);
}


static void
ngx_cdp_redis_write(ngx_cdp_redis_node_t *n)
{
    ssize_t            sent;
    ngx_connection_t  *c;

    c = n->connection;

    if (c == NULL || n->state == NGX_CDP_REDIS_CONNECTING) {
        return;
    }

    while (n->out.pos < n->out.last) {
        sent = c->send(c, n->out.pos, n->out.last - n->out.pos);

        if (sent > 0) {
            n->out.pos += sent;
            continue;
        }

        if (sent == NGX_AGAIN) {
            break;
        }

        ngx_cdp_redis_fail(n, "send() failed");
        return;
    }

    if (n->out.pos == n->out.last) {
        n->out.pos = n->out.start;
        n->out.last = n->out.start;
    }

    if (ngx_handle_write_event(c->write, 0) != NGX_OK) {
        ngx_cdp_redis_fail(n, "write event failed");
        return;
    }

    /* replies are awaited at most "timeout"; a later one resets it */

    if (n->pending_n && !c->read->timer_set) {
        ngx_add_timer(c->read, ngx_cdp_redis->conf->timeout);
    }
}


static void
ngx_cdp_redis_write_handler(ngx_event_t *wev)
{
    ngx_connection_t      *c;
    ngx_cdp_redis_node_t  *n;

    c = wev->data;
    n = c->data;

    if (n->state != NGX_CDP_REDIS_CONNECTING) {
        ngx_cdp_redis_write(n);
        return;
    }

    if (wev->timedout) {
        ngx_cdp_redis_fail(n, "connect timed out");
        return;
    }

    if (wev->timer_set) {
        ngx_del_timer(wev);
    }

    if (ngx_cdp_redis_test_connect(n, c) != NGX_OK) {
        ngx_cdp_redis_fail(n, "connect() failed");
        return;
    }

    ngx_cdp_redis_handshake(n);
}


static void
ngx_cdp_redis_read_handler(ngx_event_t *rev)
{
    ssize_t                got;
    ngx_connection_t      *c;
    ngx_cdp_redis_node_t  *n;
    static u_char          buf[65536];

    c = rev->data;
    n = c->data;

    if (c->close) {
        /* worker_shutdown_timeout */
        ngx_cdp_redis_fail(n, "worker is shutting down");
        return;
    }

    if (rev->timedout) {
        ngx_cdp_redis_fail(n, "reply timed out");
        return;
    }

    if (n->state == NGX_CDP_REDIS_CONNECTING) {
        /* the write event tells how connect() ended */
        return;
    }

    for ( ;; ) {
        got = c->recv(c, buf, sizeof(buf));

        if (got == NGX_AGAIN) {
            break;
        }

        if (got == 0) {
            ngx_cdp_redis_fail(n, "redis closed the connection");
            return;
        }

        if (got == NGX_ERROR) {
            ngx_cdp_redis_fail(n, "recv() failed");
            return;
        }

        if (redisReaderFeed(n->reader, (char *) buf, got) != REDIS_OK
            || ngx_cdp_redis_replies(n, c) != NGX_OK)
        {
            ngx_cdp_redis_fail(n, "protocol error");
            return;
        }

        if (n->connection != c) {
            /* a reply handler's write failed: c is closed already */
            return;
        }

        if (n->must_close) {
            ngx_cdp_redis_fail(n, "handshake failed");
            return;
        }
    }

    if (ngx_handle_read_event(rev, 0) != NGX_OK) {
        ngx_cdp_redis_fail(n, "read event failed");
        return;
    }

    if (rev->timer_set) {
        ngx_del_timer(rev);
    }

    /* handlers may have queued commands: the library load, a flush */

    ngx_cdp_redis_write(n);
}


static ngx_int_t
ngx_cdp_redis_replies(ngx_cdp_redis_node_t *n, ngx_connection_t *c)
{
    void                     *r;
    redisReply               *reply;
    ngx_cdp_redis_t          *rd;
    ngx_cdp_redis_node_t     *prev;
    ngx_cdp_redis_pending_t   p;

    rd = ngx_cdp_redis;

    for ( ;; ) {
        if (redisReaderGetReply(n->reader, &r) != REDIS_OK) {
            return NGX_ERROR;
        }

        if (r == NULL) {
            return NGX_OK;
        }

        reply = r;

        if (n->pending_n == 0) {
            freeReplyObject(reply);
            ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                          "cdp: unexpected reply from redis %V", &n->name);
            return NGX_ERROR;
        }

        p = n->pending[n->pending_head];
        n->pending_head = (n->pending_head + 1) % n->pending_size;
        n->pending_n--;

        if (p.handler == NULL) {
            /* ASKING's: the command after it has the answer */
            freeReplyObject(reply);
            continue;
        }

        if (p.cmd && reply->type == REDIS_REPLY_ERROR
            && ngx_cdp_redis_redirect(n, p.cmd, reply) == NGX_OK)
        {
            /* the command is another node's now */
            freeReplyObject(reply);

        } else {
            prev = rd->current;
            rd->current = n;
            p.handler(reply, p.data);
            rd->current = prev;

            freeReplyObject(reply);
            ngx_free(p.cmd);
        }

        if (n->connection != c) {
            /* the handler's write failed and the connection is gone */
            return NGX_OK;
        }

        if (n->pending_n == 0 && !ngx_cdp_redis_wanted(n)) {
            ngx_cdp_redis_sweep_post(rd);
        }
    }
}


/*
 * -MOVED <slot> <ip>:<port>: the slot is that node's; the command goes
 * there (after its handshake), and the map is read again soon.
 * -ASK <slot> <ip>:<port>: this command only goes there, after ASKING.
 * NGX_DECLINED: not a redirection, or one too many: the handler's.
 */

static ngx_int_t
ngx_cdp_redis_redirect(ngx_cdp_redis_node_t *n, ngx_cdp_redis_cmd_t *cmd,
    redisReply *reply)
{
    ngx_cdp_redis_t       *rd;
    ngx_cdp_redirect_t     r;
    ngx_cdp_redis_node_t  *to;

    rd = ngx_cdp_redis;

    if (cmd->redirects >= NGX_CDP_REDIS_REDIRECTS
        || ngx_cdp_redirect_parse((u_char *) reply->str, reply->len, &r) != 0)
    {
        return NGX_DECLINED;
    }

    to = ngx_cdp_redis_node_at(rd, r.host, r.host_len, r.port, n);
    if (to == NULL) {
        return NGX_DECLINED;
    }

    cmd->redirects++;

    if (r.kind == NGX_CDP_REDIRECT_MOVED) {
        ngx_cdp_count(NGX_CDP_C_REDIS_MOVED, 1);

        cmd->asking = 0;
        ngx_cdp_redis_map_set(rd, r.slot, to);

        if (!ngx_exiting) {
            ngx_add_timer(&rd->refresh_ev, NGX_CDP_REDIS_SOON);
        }

    } else {
        ngx_cdp_count(NGX_CDP_C_REDIS_ASK, 1);

        cmd->asking = 1;
    }

    ngx_cdp_redis_dispatch(rd, to, cmd);

    return NGX_OK;
}


/* -- the slot map ----------------------------------------------------- */


/*
 * CLUSTER SLOTS to a node that is up (a master first), else a seed is
 * connected: its handshake's end asks it.
 */

static void
ngx_cdp_redis_refresh(ngx_cdp_redis_t *rd)
{
    ngx_uint_t             i;
    const char            *argv[2];
    size_t                 argvlen[2];
    ngx_cdp_redis_node_t  *n, *ask;

    if (!rd->cluster || rd->refreshing
        || ngx_exiting || ngx_terminate || ngx_quit)
    {
        return;
    }

    ask = NULL;

    for (i = 0; i < rd->nmasters; i++) {
        n = rd->masters[(rd->rr + i) % rd->nmasters];

        if (n->state == NGX_CDP_REDIS_READY) {
            ask = n;
            break;
        }
    }

    for (i = 0; ask == NULL && i < rd->nnodes; i++) {
        if (rd->nodes[i]->state == NGX_CDP_REDIS_READY) {
            ask = rd->nodes[i];
        }
    }

    if (ask == NULL) {
        ngx_cdp_redis_discover(rd);
        return;
    }

    argv[0] = "CLUSTER";
    argvlen[0] = 7;
    argv[1] = "SLOTS";
    argvlen[1] = 5;

    if (ngx_cdp_redis_command(ask, 2, argv, argvlen,
                              ngx_cdp_redis_slots_done, ask, 0)
        == NGX_OK)
    {
        rd->refreshing = ask;
        ngx_cdp_redis_write(ask);
    }
}


/* no node is up: the seeds in turn */

static void
ngx_cdp_redis_discover(ngx_cdp_redis_t *rd)
{
    ngx_uint_t             i, nseeds;
    ngx_addr_t            *seeds, *a;
    ngx_cdp_redis_node_t  *n;

    seeds = rd->conf->seeds->elts;
    nseeds = rd->conf->seeds->nelts;

    for (i = 0; i < nseeds; i++) {
        a = &seeds[rd->seed % nseeds];

        n = ngx_cdp_redis_node(rd, a->sockaddr, a->socklen, &a->name);
        if (n == NULL) {
            return;
        }

        if (n->state != NGX_CDP_REDIS_DOWN) {
            /* connecting: its handshake will ask for the map */
            return;
        }

        if (!n->reconnect_ev.timer_set) {
            ngx_cdp_redis_connect(n);
            return;
        }

        /* a master waiting for its reconnect: another seed */
        rd->seed++;
    }
}


/*
 * While the map is not whole (no map yet, a master down, slots without a
 * node), it is read again: every second, or after the discovery's
 * backoff while no seed answers.
 */

static void
ngx_cdp_redis_refresh_arm(ngx_cdp_redis_t *rd)
{
    ngx_uint_t  i, whole;
    ngx_msec_t  after;

    if (!rd->cluster || ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    whole = rd->mapped && rd->nmasters && rd->unmapped == 0;

    for (i = 0; whole && i < rd->nmasters; i++) {
        if (rd->masters[i]->state == NGX_CDP_REDIS_DOWN) {
            whole = 0;
        }
    }

    /*
     * a whole map is read again now and then all the same: replicas are
     * listed once they have data (Redis 7 leaves out a replica at offset
     * 0), and batches wait for a replica only where the map lists one
     */

    rd->degraded = !whole;

    after = whole ? NGX_CDP_REDIS_REFRESH_IDLE
            : rd->mapped ? NGX_CDP_REDIS_REFRESH : rd->backoff;

    if (rd->refresh_ev.timer_set) {
        if ((ngx_msec_int_t) (rd->refresh_ev.timer.key - ngx_current_msec)
            <= (ngx_msec_int_t) after)
        {
            return;
        }

        /* degraded while waiting for the idle read: sooner */
        ngx_del_timer(&rd->refresh_ev);
    }

    ngx_add_timer(&rd->refresh_ev, after);
}


static void
ngx_cdp_redis_refresh_handler(ngx_event_t *ev)
{
    ngx_cdp_redis_t  *rd = ev->data;

    ngx_cdp_redis_refresh(rd);
    ngx_cdp_redis_refresh_arm(rd);
}


static void
ngx_cdp_redis_slots_done(redisReply *reply, void *data)
{
    ngx_cdp_redis_node_t  *asked = data;

    ngx_cdp_redis_t  *rd;

    rd = ngx_cdp_redis;

    if (rd->refreshing == asked) {
        rd->refreshing = NULL;
    }

    if (reply == NULL) {
        /* the node failed: ngx_cdp_redis_fail() armed the next try */
        return;
    }

    if (reply->type != REDIS_REPLY_ARRAY) {
        if (!rd->refresh_reported) {
            ngx_log_error(NGX_LOG_ERR, rd->log, 0,
                          "cdp: redis %V CLUSTER SLOTS failed: %s",
                          &asked->name,
                          reply->type == REDIS_REPLY_ERROR ? reply->str
                                                           : "not an array");
            rd->refresh_reported = 1;
        }

        if (!rd->mapped) {
            rd->seed++;
            rd->seeds_failed = (rd->seed >= rd->conf->seeds->nelts);
            rd->backoff = ngx_min(rd->backoff * 2, NGX_CDP_BACKOFF_MAX);
            ngx_cdp_redis_sweep_post(rd);
        }

        ngx_cdp_redis_refresh_arm(rd);
        return;
    }

    rd->refresh_reported = 0;

    (void) ngx_cdp_redis_map_read(rd, asked, reply);

    ngx_cdp_redis_refresh_arm(rd);
}


/*
 * A CLUSTER SLOTS reply, each entry {start, end, {ip, port, id, ...},
 * replicas...}: the masters' ranges become the map; an entry that cannot
 * be read, or whose node is not an IP address, is left out (logged).
 */

static ngx_int_t
ngx_cdp_redis_map_read(ngx_cdp_redis_t *rd, ngx_cdp_redis_node_t *asked,
    redisReply *reply)
{
    size_t                 i, hlen;
    ngx_uint_t             s, moved, unmapped, first;
    long long              start, end, port;
    redisReply            *e, *m;
    const u_char          *host;
    ngx_cdp_redis_node_t  *n, **map;

    ngx_memzero(rd->next_map, NGX_CDP_SLOTS * sizeof(void *));

    for (i = 0; i < reply->elements; i++) {
        e = reply->element[i];

        if (e->type != REDIS_REPLY_ARRAY || e->elements < 3
            || e->element[0]->type != REDIS_REPLY_INTEGER
            || e->element[1]->type != REDIS_REPLY_INTEGER
            || e->element[2]->type != REDIS_REPLY_ARRAY
            || e->element[2]->elements < 2
            || e->element[2]->element[1]->type != REDIS_REPLY_INTEGER)
        {
            ngx_log_error(NGX_LOG_WARN, rd->log, 0,
                          "cdp: redis %V CLUSTER SLOTS entry %uz skipped: "
                          "not {start, end, {ip, port, ...}}",
                          &asked->name, i);
            continue;
        }

        start = e->element[0]->integer;
        end = e->element[1]->integer;
        m = e->element[2];
        port = m->element[1]->integer;

        host = (const u_char *) "";
        hlen = 0;

        if (m->element[0]->type == REDIS_REPLY_STRING) {
            host = (const u_char *) m->element[0]->str;
            hlen = m->element[0]->len;

        } else if (m->element[0]->type != REDIS_REPLY_NIL) {
            host = (const u_char *) "?";
            hlen = 1;
        }

        n = NULL;

        if (start >= 0 && start <= end && end < NGX_CDP_SLOTS
            && port > 0 && port <= 65535)
        {
            n = ngx_cdp_redis_node_at(rd, host, hlen, (ngx_uint_t) port,
                                      asked);
        }

        if (n == NULL) {
            ngx_log_error(NGX_LOG_WARN, rd->log, 0,
                          "cdp: redis cluster node \"%*s:%L\" of slots "
                          "%L-%L skipped: not an IP address and port "
                          "(workers do not resolve names)",
                          hlen, host, port, start, end);
            continue;
        }

        for (s = (ngx_uint_t) start; s <= (ngx_uint_t) end; s++) {
            rd->next_map[s] = n;
        }

        /* the replicas that CLUSTER SLOTS lists with the range */

        if (n->next_slots == 0 || e->elements - 3 < n->next_replicas) {
            n->next_replicas = e->elements - 3;
        }

        n->next_slots += (ngx_uint_t) (end - start + 1);
    }

    /* the map changes at once; each node is then told of its part */

    /* those a MOVED gave their node already moved since the last read */
    moved = rd->patched;
    rd->patched = 0;
    unmapped = 0;

    for (i = 0; i < rd->nnodes; i++) {
        rd->nodes[i]->next_slots = 0;
    }

    for (s = 0; s < NGX_CDP_SLOTS; s++) {
        n = rd->next_map[s];

        if (n != rd->map[s]) {
            moved++;
        }

        if (n) {
            n->next_slots++;

        } else {
            unmapped++;
        }
    }

    map = rd->map;
    rd->map = rd->next_map;
    rd->next_map = map;

    for (i = 0; i < rd->nnodes; i++) {
        n = rd->nodes[i];
        n->slots = n->next_slots;
        n->next_slots = 0;
        n->replicas = n->slots ? n->next_replicas : 0;
        n->next_replicas = 0;
    }

    first = !rd->mapped;

    rd->unmapped = unmapped;
    rd->mapped = 1;
    rd->seeds_failed = 0;
    rd->backoff = NGX_CDP_BACKOFF_MIN;

    ngx_cdp_redis_masters_list(rd);

    ngx_cdp_count(NGX_CDP_C_REDIS_MAP_REFRESHES, 1);

    if (first) {
        ngx_log_error(NGX_LOG_NOTICE, rd->log, 0,
                      "cdp: redis cluster map from %V: %ui masters, "
                      "%ui slots without a node",
                      &asked->name, rd->nmasters, unmapped);

    } else if (moved) {
        ngx_log_error(NGX_LOG_NOTICE, rd->log, 0,
                      "cdp: redis cluster map changed: %ui slots moved, "
                      "%ui masters, %ui slots without a node",
                      moved, rd->nmasters, unmapped);
    }

    for (i = 0; i < rd->nnodes; i++) {
        ngx_cdp_redis_update(rd, rd->nodes[i]);
    }

    return NGX_OK;
}


/* a MOVED: one slot changes hands until the next map */

static void
ngx_cdp_redis_map_set(ngx_cdp_redis_t *rd, ngx_uint_t slot,
    ngx_cdp_redis_node_t *n)
{
    ngx_cdp_redis_node_t  *old;

    old = rd->map[slot];

    if (old == n) {
        return;
    }

    rd->map[slot] = n;
    rd->patched++;
    n->slots++;

    if (old) {
        old->slots--;

    } else {
        rd->unmapped--;
    }

    if (n->slots == 1 || (old && old->slots == 0)) {
        ngx_cdp_redis_masters_list(rd);
    }

    if (old) {
        ngx_cdp_redis_update(rd, old);
    }

    ngx_cdp_redis_update(rd, n);
}


/* the nodes that own slots, in the order of their first one */

static void
ngx_cdp_redis_masters_list(ngx_cdp_redis_t *rd)
{
    ngx_uint_t             s, i;
    ngx_cdp_redis_node_t  *n;

    rd->nmasters = 0;

    for (s = 0; s < NGX_CDP_SLOTS; s++) {
        n = rd->map[s];

        if (n && !n->listed) {
            n->listed = 1;
            rd->masters[rd->nmasters++] = n;
        }
    }

    for (i = 0; i < rd->nmasters; i++) {
        rd->masters[i]->listed = 0;
    }
}
