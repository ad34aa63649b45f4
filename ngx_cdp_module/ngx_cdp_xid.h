
/*
 * ngx_cdp: sagas on Redis Cluster (ngx_cdp_xid.c).
 *
 * On a cluster an FCALL stays in one slot, and some operations touch
 * keys of many: an identify's keys (its identifiers, the browser's
 * profile, the profiles a merge absorbs), an erasure's, export's or
 * profile read's (a person's keys in every shard, the audit), an
 * unsuppression's or a replay's (every shard's copy of the suppression
 * set or dead letters, the audit).  The store
 * does such an operation as a chain of single-slot calls, a saga, and
 * the worker drives it.  Two kinds of saga, each a function of the store
 * with fixed arguments before the state:
 *
 *   identity  FCALL cdp_xid 1 <key> <cdp_ingest's ARGV[1]> <prefix>:
 *             <state>, reply {next key, next state, ms to wait, merges,
 *             switches, refused, erased}: an identify, or an API message
 *             that needs identity (cdp_ingest hands it back, "x" in its
 *             reply's follow-ups; store/README.md, "Identity on Redis
 *             Cluster")
 *   admin     FCALL cdp_admin_x 1 <key> <prefix>|<N> <state>, reply
 *             {next key, next state, ms to wait, result}: an erasure,
 *             export, profile read, segment list, page of a segment's
 *             members, unsuppress or replay of the admin API, whose first
 *             call is on <prefix>:audit with "begin ..." (docs/privacy.md,
 *             "On Redis Cluster")
 *
 * A reply names the next call ("" when done, and the admin kind's
 * result is then the standalone function's reply).  Every step is
 * idempotent in the store, so a step whose reply is lost, or that Redis
 * refused for now, is sent again; a master with replicas is asked to
 * WAIT for one before the next step reads what this one wrote (and after
 * the last step of a saga someone waits for).  Worker 0 sweeps every
 * second (cdp_xid "sweep" on each shard's stream, cdp_admin_x "sweep" on
 * the audit) and finishes what a saga left when its worker stopped.
 */


#ifndef _NGX_CDP_XID_H_INCLUDED_
#define _NGX_CDP_XID_H_INCLUDED_


#include "ngx_http_cdp_module.h"


/* the kinds of saga */
#define NGX_CDP_XID_IDENTITY      0     /* cdp_xid */
#define NGX_CDP_XID_ADMIN         1     /* cdp_admin_x */


/*
 * argv1: cdp_ingest's ARGV[1]; streams: the shards' event streams
 * "<prefix>:events:{<tag>}" (mcf->redis.shards of them), the identity
 * sweeper's keys; both kept, not copied
 */
ngx_int_t ngx_cdp_xid_init_process(ngx_cycle_t *cycle,
    ngx_http_cdp_main_conf_t *mcf, ngx_str_t *argv1, ngx_str_t *streams);

/* after the transport's exit: the sagas still running are abandoned */
void ngx_cdp_xid_exit_process(ngx_cycle_t *cycle);

/*
 * How a saga ended, for whoever waits for it:
 *
 *   NGX_OK        done and, where the slot's master of each of its steps
 *                 has replicas, a replica has that step's writes (WAIT 1
 *                 after the last step too); result: the last reply's
 *                 result (the admin kind's), result->data NULL for nil
 *                 (and for the identity kind, which has none);
 *   NGX_DECLINED  the store answered an error that ends it (the admin
 *                 kind: "ERR cdp_erase: ...", as the standalone function
 *                 would); result: the error's text;
 *   NGX_ERROR     abandoned (a step failed too often, the worker exits,
 *                 it could not be started), or done but a replica did not
 *                 have its writes in time (counted as unreplicated):
 *                 result is then the last reply's result as for NGX_OK,
 *                 else NULL.
 *
 * result's bytes are followed by a '\0' and live until the handler
 * returns.
 */
typedef void (*ngx_cdp_xid_done_pt)(void *data, ngx_int_t rc,
    ngx_str_t *result);

/*
 * A saga of a kind whose first step is the kind's function with key (a
 * whole key, prefix and all) and, after the kind's fixed arguments,
 * args[0 .. nargs - 1] (the state; the admin kind's first call: "begin",
 * op, ...), all copied.  handler (may be NULL) is called exactly once
 * with data, maybe before this returns: NGX_DECLINED means not started
 * (100,000 waiting their turn: at most 1000 are sent at once; out of
 * memory; no runner), counted as abandoned,
 * and the handler has been called with NGX_ERROR already.
 */
ngx_int_t ngx_cdp_xid_start(ngx_uint_t kind, ngx_str_t *key, ngx_str_t *args,
    ngx_uint_t nargs, ngx_cdp_xid_done_pt handler, void *data);

/*
 * The handler of the sagas of a kind that worker 0's sweeper finishes
 * (data NULL), e.g. the admin API's, told what an erasure it finished
 * erased; NULL: none
 */
void ngx_cdp_xid_swept_handler(ngx_uint_t kind, ngx_cdp_xid_done_pt handler);


#endif /* _NGX_CDP_XID_H_INCLUDED_ */
