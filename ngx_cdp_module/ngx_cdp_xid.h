
/*
 * ngx_cdp: identity on Redis Cluster, the sagas (ngx_cdp_xid.c).
 *
 * On a cluster an FCALL stays in one slot, and an identify's keys are in
 * many (its identifiers, the browser's profile, the profiles a merge
 * absorbs): cdp_ingest hands it back ("x" in its reply's follow-ups), and
 * the worker drives it as a chain of single-slot calls, a saga:
 *
 *     FCALL cdp_xid 1 <key> <cdp_ingest's ARGV[1]> <prefix>: <state>
 *
 * whose reply {next key, next state, ms to wait, merges, switches,
 * refused, erased} names the next call ("" when done).  Every step is
 * idempotent in the store, so a step whose reply is lost, or that Redis
 * refused for now, is sent again; a master with replicas is asked to
 * WAIT for one before the next step reads what this one wrote.  Worker
 * 0 sweeps the shards every second (cdp_xid "sweep") and finishes what
 * a saga left when its worker stopped.  store/README.md, "Identity on
 * Redis Cluster", has the store's side.
 */


#ifndef _NGX_CDP_XID_H_INCLUDED_
#define _NGX_CDP_XID_H_INCLUDED_


#include "ngx_http_cdp_module.h"


/*
 * argv1: cdp_ingest's ARGV[1]; streams: the shards' event streams
 * "<prefix>:events:{<tag>}" (mcf->redis.shards of them), the sweeper's
 * keys; both kept, not copied
 */
ngx_int_t ngx_cdp_xid_init_process(ngx_cycle_t *cycle,
    ngx_http_cdp_main_conf_t *mcf, ngx_str_t *argv1, ngx_str_t *streams);

/* after the transport's exit: the sagas still running are abandoned */
void ngx_cdp_xid_exit_process(ngx_cycle_t *cycle);

/*
 * A saga whose first step is cdp_xid with key (a whole key, prefix and
 * all) and state, both copied.  NGX_DECLINED: not started (too many
 * running, out of memory), counted as abandoned.
 */
ngx_int_t ngx_cdp_xid_start(ngx_str_t *key, ngx_str_t *state);


#endif /* _NGX_CDP_XID_H_INCLUDED_ */
