
/*
 * ngx_cdp: the per-worker Redis connection (the transport).
 *
 * One connection per worker, owned by nginx's event loop: connect,
 * handshake (AUTH, SELECT, the store's libraries), reconnect with
 * backoff, and an ordered pipeline of commands, each with a callback
 * that gets its reply, or NULL when the connection is lost.  What goes
 * through it: the ingest batches (ngx_cdp_ingest.c), which write their
 * FCALL straight into the output, and single commands of the admin API,
 * delivery, segments and profiles (ngx_cdp_redis_call()).
 *
 * A cluster-aware transport keeps this interface: a command per slot.
 */


#ifndef _NGX_CDP_REDIS_H_INCLUDED_
#define _NGX_CDP_REDIS_H_INCLUDED_


#include "ngx_http_cdp_module.h"

#include <hiredis/hiredis.h>


/* reply: NULL when the connection was lost; freed after the call */
typedef void (*ngx_cdp_redis_reply_pt)(redisReply *reply, void *data);


/* the connection became ready (at connect and after every reconnect) */
typedef void (*ngx_cdp_redis_ready_pt)(void);


/* spool: cdp_spool's path (for the log), or NULL */
ngx_int_t ngx_cdp_redis_init_process(ngx_cycle_t *cycle,
    ngx_cdp_redis_conf_t *conf, ngx_str_t *spool,
    ngx_cdp_redis_ready_pt ready);
void ngx_cdp_redis_exit_process(ngx_cycle_t *cycle);

/* commands may be queued: connected, the libraries loaded */
ngx_uint_t ngx_cdp_redis_is_ready(void);

/* not even connecting: waiting for the reconnect timer */
ngx_uint_t ngx_cdp_redis_is_down(void);

/* bytes queued but not yet written to the socket */
size_t ngx_cdp_redis_unsent(void);

/*
 * A command built by hand: ngx_cdp_redis_buffer() gives room for len
 * bytes at the end of the output (NULL: out of memory), the caller
 * writes the command there and hands the end to ngx_cdp_redis_queue()
 * with the callback of its reply, then calls ngx_cdp_redis_send().
 */
u_char *ngx_cdp_redis_buffer(size_t len);
ngx_int_t ngx_cdp_redis_queue(u_char *last, ngx_cdp_redis_reply_pt handler,
    void *data);
void ngx_cdp_redis_send(void);

/* FUNCTION LOAD of the store library again (after "Function not found") */
void ngx_cdp_redis_load_library(void);


typedef struct ngx_cdp_redis_call_s  ngx_cdp_redis_call_t;

/* reply: a hiredis redisReply *, NULL when the connection was lost */
typedef void (*ngx_cdp_redis_call_pt)(ngx_cdp_redis_call_t *call,
    void *reply);

struct ngx_cdp_redis_call_s {
    ngx_cdp_redis_call_pt      handler;
    void                      *data;
};

/* one command, sent at once; NGX_DECLINED: Redis is not ready */
ngx_int_t ngx_cdp_redis_call(ngx_cdp_redis_call_t *call, int argc,
    const char **argv, const size_t *argvlen);


#endif /* _NGX_CDP_REDIS_H_INCLUDED_ */
