
/*
 * ngx_cdp: the spool, where a worker keeps the batches Redis cannot
 * take now.
 *
 *     cdp_spool PATH [max_size=SIZE];
 *
 * Each worker appends to a file of its own, PATH/<pid>-<ms>.spool, one
 * frame per batch (ngx_cdp_resp.h: length-prefixed, CRC-32C), with one
 * buffered write() per batch, as nginx writes its access log; nothing
 * waits for Redis.  The worker holds an flock() on its file while it
 * lives.  Replay: ngx_cdp_ingest.c takes the frames one by one while
 * Redis has room: first those of a file that no live process holds (left
 * by a restart, a crash, a reload or a binary upgrade), adopted by the
 * one worker that gets its lock, then the worker's own.  A replayed file is
 * truncated (its own) or deleted (adopted).
 *
 * Damage (a torn tail after a power loss or a disk full, garbage): the
 * frames before it are replayed, the file is renamed *.bad, with the
 * replayed part zeroed, and logged.
 */


#ifndef _NGX_CDP_SPOOL_H_INCLUDED_
#define _NGX_CDP_SPOOL_H_INCLUDED_


#include "ngx_http_cdp_module.h"


/* how a batch is stored: the header of the file it comes from */
typedef struct {
    ngx_str_t                  writer;      /* "<host>:<pid>:<ms>" */
    ngx_str_t                  stream;      /* <prefix>:events */
    ngx_str_t                  once;        /* <prefix>:once:<writer>: */
    ngx_str_t                  argv1;       /* cdp_ingest's ARGV[1] */
    ngx_uint_t                 nargs;       /* per event: 4 or 5 */
} ngx_cdp_ingest_conf_t;


typedef struct {
    ngx_cdp_ingest_conf_t     *conf;
    uint64_t                   seq;
    ngx_uint_t                 nevents;
    ngx_str_t                  keys;        /* nevents bulk strings */
    ngx_str_t                  args;        /* nevents * nargs of them */
} ngx_cdp_spool_batch_t;


char *ngx_cdp_spool_conf(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);

/* conf: the worker's own, for its file's header; kept */
ngx_int_t ngx_cdp_spool_init_process(ngx_cycle_t *cycle,
    ngx_http_cdp_main_conf_t *mcf, ngx_cdp_ingest_conf_t *conf);
void ngx_cdp_spool_exit_process(ngx_cycle_t *cycle);

/*
 * Appends a batch to the worker's file.  NGX_DECLINED: the spool is full
 * or the disk failed: the events are dropped and counted.
 */
ngx_int_t ngx_cdp_spool_write(uint64_t seq, ngx_uint_t nevents,
    u_char *keys, size_t keys_len, u_char *args, size_t args_len);

/*
 * Replay.  ngx_cdp_spool_next(): the next batch to send, b valid until
 * the next call; NGX_DECLINED: nothing now (empty, or waiting for the
 * batches in flight of a file that ends).  Replies come in order:
 * ngx_cdp_spool_acked() for the oldest batch in flight once Redis has
 * it, ngx_cdp_spool_rewind() when the batches in flight must be sent
 * again (the connection was lost, Redis refused for now).
 */
ngx_int_t ngx_cdp_spool_next(ngx_cdp_spool_batch_t *b);
void ngx_cdp_spool_acked(void);
void ngx_cdp_spool_rewind(void);

/* looks for files to adopt and keeps the gauges (every second) */
void ngx_cdp_spool_scan(void);


#endif /* _NGX_CDP_SPOOL_H_INCLUDED_ */
