
/*
 * ngx_cdp: the bytes ngx_cdp writes for Redis and for its spool.
 *
 * RESP: the encoder of the commands the worker builds by hand (an
 * FCALL cdp_ingest carrying a batch), and a strict scanner that tells
 * whether a run of bytes is exactly N well-formed bulk strings, so that
 * a batch read back from a spool file can never put anything but those
 * arguments on a Redis connection.
 *
 * Spool frames: every record of a spool file is
 *
 *     "CDPF"  magic, 4 bytes
 *     len     uint32 little-endian: bytes of the body (after the head)
 *     crc     uint32 little-endian: CRC-32C (Castagnoli) of the body
 *     body    len bytes, its first byte the frame's type
 *
 * A file starts with one 'H' frame (the header: who wrote the file and
 * how its batches are stored), then 'B' frames (one batch each):
 *
 *   'H'  u8 'H', u8 version (1), u16 0, u32 nargs, then four strings,
 *        each a u32 length and its bytes: the writer's id, the event
 *        stream key, the prefix of the batch-id keys, cdp_ingest's
 *        ARGV[1]
 *   'B'  u8 'B', u8 0, u16 0, u32 nevents, u64 seq, u32 keys_len, then
 *        keys_len bytes of nevents RESP bulk strings (the events' keys)
 *        and the rest: nevents * nargs RESP bulk strings (their args)
 *
 * No nginx types; nothing allocates but the growable buffer
 * (ngx_cdp_resp_reserve(), with malloc()).  The unit tests
 * (tests/unit/test_resp.c) and the fuzz target (tests/fuzz/fuzz_frame.c)
 * link ngx_cdp_resp.c alone.
 */


#ifndef _NGX_CDP_RESP_H_INCLUDED_
#define _NGX_CDP_RESP_H_INCLUDED_


#include <sys/types.h>
#include <stddef.h>
#include <stdint.h>


/* a growable byte buffer: [pos, last) holds data, malloc()ed */
typedef struct {
    u_char         *start;
    u_char         *pos;
    u_char         *last;
    u_char         *end;
} ngx_cdp_resp_buf_t;

/* room for n more bytes at last (data moved or copied); -1: no memory */
int ngx_cdp_resp_reserve(ngx_cdp_resp_buf_t *b, size_t n);
void ngx_cdp_resp_free(ngx_cdp_resp_buf_t *b);


/* "$<len>\r\n<data>\r\n" of len data bytes takes at most this */
#define ngx_cdp_resp_bulk_size(len)     (1 + 20 + 2 + (size_t) (len) + 2)

/* "*<n>\r\n" takes at most this */
#define NGX_CDP_RESP_ARRAY_SIZE         (1 + 20 + 2)

/* writes "$<len>\r\n<data>\r\n" at p; returns the end */
u_char *ngx_cdp_resp_bulk(u_char *p, const u_char *data, size_t len);

/* writes "*<n>\r\n" at p; returns the end */
u_char *ngx_cdp_resp_array(u_char *p, uint64_t n);

/*
 * 0 when [p, p + len) is exactly n bulk strings, each "$<len>\r\n", len
 * bytes, "\r\n", with <len> decimal digits without a sign or leading
 * zeros (but "0") and at most NGX_CDP_RESP_BULK_MAX; -1 otherwise.
 */
#define NGX_CDP_RESP_BULK_MAX           (512 * 1024 * 1024)

int ngx_cdp_resp_scan_bulks(const u_char *p, size_t len, uint64_t n);


/* CRC-32C, as iSCSI and ext4 use it: crc = 0 to start, then chain */
uint32_t ngx_cdp_crc32c(uint32_t crc, const u_char *p, size_t len);


#define NGX_CDP_FRAME_HEAD              12      /* magic, len, crc */
#define NGX_CDP_FRAME_BATCH_FIXED       20      /* 'B' body before keys */
#define NGX_CDP_FRAME_MAX               (256 * 1024 * 1024)  /* a body */
#define NGX_CDP_FRAME_VERSION           1

#define NGX_CDP_FRAME_HEADER            'H'
#define NGX_CDP_FRAME_BATCH             'B'

/* ngx_cdp_frame_next() */
#define NGX_CDP_FRAME_OK                0       /* a whole, valid frame */
#define NGX_CDP_FRAME_MORE              1       /* need more bytes */
#define NGX_CDP_FRAME_BAD               2       /* not a valid frame */


typedef struct {
    const u_char   *data;
    size_t          len;
} ngx_cdp_frame_str_t;


typedef struct {
    unsigned             type;          /* 'H' or 'B' */
    size_t               size;          /* head + body: bytes to skip */

    /* 'H' */
    unsigned             version;
    uint32_t             nargs;
    ngx_cdp_frame_str_t  writer;
    ngx_cdp_frame_str_t  stream;
    ngx_cdp_frame_str_t  once;
    ngx_cdp_frame_str_t  argv1;

    /* 'B' */
    uint32_t             nevents;
    uint64_t             seq;
    ngx_cdp_frame_str_t  keys;          /* nevents bulk strings */
    ngx_cdp_frame_str_t  args;          /* nevents * nargs bulk strings */

    const char          *error;         /* NGX_CDP_FRAME_BAD: why */
} ngx_cdp_frame_t;


/*
 * The 12-byte head and the 20 fixed bytes of a 'B' frame whose keys and
 * args follow: head[NGX_CDP_FRAME_HEAD + NGX_CDP_FRAME_BATCH_FIXED] is
 * filled, and the writer writes head, keys, args (one writev).
 */
void ngx_cdp_frame_batch(u_char *head, uint32_t nevents, uint64_t seq,
    const u_char *keys, size_t keys_len, const u_char *args,
    size_t args_len);

/*
 * A whole 'H' frame at p, which has room for ngx_cdp_frame_header_size();
 * returns the end.
 */
size_t ngx_cdp_frame_header_size(const ngx_cdp_frame_str_t *writer,
    const ngx_cdp_frame_str_t *stream, const ngx_cdp_frame_str_t *once,
    const ngx_cdp_frame_str_t *argv1);
u_char *ngx_cdp_frame_header(u_char *p, uint32_t nargs,
    const ngx_cdp_frame_str_t *writer, const ngx_cdp_frame_str_t *stream,
    const ngx_cdp_frame_str_t *once, const ngx_cdp_frame_str_t *argv1);

/*
 * The frame at the start of [p, p + len).  NGX_CDP_FRAME_OK: f describes
 * it (its strings point into p), f->size bytes long.  NGX_CDP_FRAME_MORE:
 * p holds a correct beginning of a frame but not all of it (at the end
 * of a file: a torn tail).  NGX_CDP_FRAME_BAD: the bytes are not a frame
 * (bad magic, length over NGX_CDP_FRAME_MAX, checksum, a body that does
 * not parse, a 'B' whose keys are not nevents bulk strings or whose args
 * are not nevents * nargs of them); f->error says which.  A 'B' frame is
 * checked against nargs, the header's; a 'H' frame ignores it.
 */
int ngx_cdp_frame_next(const u_char *p, size_t len, uint32_t nargs,
    ngx_cdp_frame_t *f);


#endif /* _NGX_CDP_RESP_H_INCLUDED_ */
