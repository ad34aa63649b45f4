
/*
 * ngx_cdp: the per-worker Redis connections (the transport).
 *
 * A node is one connection owned by nginx's event loop: connect,
 * handshake (AUTH, SELECT, the store's libraries), reconnect with
 * backoff, and an ordered pipeline of commands, each with a callback
 * that gets its reply, or NULL when the connection is lost.  A slot map
 * gives each of Redis Cluster's 16384 slots the node of its master: a
 * single Redis (cdp_redis) is one node that owns every slot; a cluster
 * (cdp_redis_cluster) is discovered from its seeds (CLUSTER SLOTS), its
 * redirections (MOVED, ASK) followed, its map read again after a MOVED
 * and every second while a master is away (a failover).
 *
 * What goes through it: the ingest batches (ngx_cdp_ingest.c), which
 * write their FCALL straight into a node's output, and single commands
 * of the admin API, delivery, segments, profiles and identity sagas
 * (ngx_cdp_redis_call(), routed by the command's first key).
 */


#ifndef _NGX_CDP_REDIS_H_INCLUDED_
#define _NGX_CDP_REDIS_H_INCLUDED_


#include "ngx_http_cdp_module.h"
#include "ngx_cdp_shard.h"

#include <hiredis/hiredis.h>


/* reply: NULL when the connection was lost; freed after the call */
typedef void (*ngx_cdp_redis_reply_pt)(redisReply *reply, void *data);


/* a node became ready (at connect and after every reconnect, any node) */
typedef void (*ngx_cdp_redis_ready_pt)(void);


/* spool: cdp_spool's path (for the log), or NULL */
ngx_int_t ngx_cdp_redis_init_process(ngx_cycle_t *cycle,
    ngx_cdp_redis_conf_t *conf, ngx_str_t *spool,
    ngx_cdp_redis_ready_pt ready);
void ngx_cdp_redis_exit_process(ngx_cycle_t *cycle);

/*
 * The node of a slot (ngx_cdp_key_slot() of a key): commands may be
 * queued (connected, the libraries loaded); not even connecting (waiting
 * for the reconnect timer, or no node has the slot); bytes queued but not
 * yet written to its socket.
 */
ngx_uint_t ngx_cdp_redis_is_ready_slot(ngx_uint_t slot);
ngx_uint_t ngx_cdp_redis_is_down_slot(ngx_uint_t slot);
size_t ngx_cdp_redis_unsent_slot(ngx_uint_t slot);

/* how many replicas the slot's master has (0: a single Redis, or none) */
ngx_uint_t ngx_cdp_redis_replicas_slot(ngx_uint_t slot);

/*
 * The whole store: every master of the map is ready (a single Redis: its
 * node); the bytes not yet written to any node.
 */
ngx_uint_t ngx_cdp_redis_is_ready(void);
size_t ngx_cdp_redis_unsent(void);

/*
 * A command built by hand: ngx_cdp_redis_buffer_slot() gives room for len
 * bytes at the end of the output of the slot's node (NULL: out of memory,
 * or no node has the slot), the caller writes the command there and hands
 * the end to ngx_cdp_redis_queue() with the callback of its reply (queued
 * on the node of the last buffer call; on a cluster the bytes between are
 * kept until the reply, to follow a redirection), then calls
 * ngx_cdp_redis_send().
 */
u_char *ngx_cdp_redis_buffer_slot(ngx_uint_t slot, size_t len);
ngx_int_t ngx_cdp_redis_queue(u_char *last, ngx_cdp_redis_reply_pt handler,
    void *data);
void ngx_cdp_redis_send(void);

/*
 * FUNCTION LOAD of the store library again (after "Function not found"):
 * on the node whose reply is being handled, else on every ready master
 */
void ngx_cdp_redis_load_library(void);


typedef struct ngx_cdp_redis_call_s  ngx_cdp_redis_call_t;

/* reply: a hiredis redisReply *, NULL when the connection was lost */
typedef void (*ngx_cdp_redis_call_pt)(ngx_cdp_redis_call_t *call,
    void *reply);

struct ngx_cdp_redis_call_s {
    ngx_cdp_redis_call_pt      handler;
    void                      *data;
};

/*
 * One command, sent at once to the node of its first key: FCALL and
 * FCALL_RO's first key (none: any ready master), the key after STREAMS
 * of XREAD and XREADGROUP, argv[2] of XINFO and XGROUP, else argv[1].
 * NGX_DECLINED: that node is not ready (the handler is not called);
 * NGX_OK: the handler is called once, with the reply or NULL (maybe
 * before this returns, when the connection fails at once).  A MOVED or
 * ASK is followed (at most 5 times, then the error is the reply);
 * TRYAGAIN and CLUSTERDOWN are replies, for the caller to retry.
 */
ngx_int_t ngx_cdp_redis_call(ngx_cdp_redis_call_t *call, int argc,
    const char **argv, const size_t *argvlen);

/* the same, sent to the node of an explicit slot */
ngx_int_t ngx_cdp_redis_call_slot(ngx_cdp_redis_call_t *call,
    ngx_uint_t slot, int argc, const char **argv, const size_t *argvlen);


#endif /* _NGX_CDP_REDIS_H_INCLUDED_ */
