
/*
 * ngx_cdp: the spool (ngx_cdp_spool.h).
 *
 * A file: one 'H' frame (the writer, the stream, the batch-id keys and
 * cdp_ingest's ARGV[1] its batches are stored with), then 'B' frames.
 * Offsets in a file being replayed: head <= acked <= sent <= size, the
 * frames in [acked, sent) in flight.
 *
 * The worker's own file is created as "<name>.tmp", locked, given its
 * header, then renamed to "<name>.spool": a scanner never sees a file
 * that is not whole and locked.  Adoption: a scanner that gets the lock
 * of a *.spool file (and finds it still linked) is its only reader.
 */


#include "ngx_http_cdp_module.h"
#include "ngx_cdp_http.h"
#include "ngx_cdp_resp.h"
#include "ngx_cdp_spool.h"

#include <dirent.h>
#include <sys/file.h>
#include <sys/uio.h>

#if (NGX_LINUX)
#include <linux/falloc.h>
#endif


#define NGX_CDP_SPOOL_READ        (1024 * 1024)
#define NGX_CDP_SPOOL_INFLIGHT    8
#define NGX_CDP_SPOOL_MIN         (64 * 1024)


typedef struct {
    ngx_fd_t                   fd;
    ngx_str_t                  name;        /* the full path, with '\0' */
    off_t                      head;        /* the header frame's size */
    off_t                      acked;
    off_t                      sent;
    off_t                      size;
    off_t                      damaged;     /* where, when damage is met */
    const char                *why;
    ngx_cdp_ingest_conf_t      conf;
    u_char                    *mem;         /* conf's strings, adopted */
    unsigned                   own:1;
    unsigned                   bad:1;
} ngx_cdp_spool_file_t;


typedef struct {
    ngx_http_cdp_main_conf_t  *mcf;
    ngx_log_t                 *log;

    ngx_cdp_spool_file_t       own;
    ngx_cdp_spool_file_t       adopted;
    ngx_cdp_spool_file_t      *cur;         /* of the frames in flight */

    off_t                      ends[NGX_CDP_SPOOL_INFLIGHT];
    ngx_uint_t                 first;
    ngx_uint_t                 nin;         /* frames in flight */

    u_char                    *buf;         /* of cur, from buf_off */
    size_t                     buf_size;
    size_t                     buf_len;
    off_t                      buf_off;
    ngx_cdp_spool_file_t      *buf_file;

    ngx_uint_t                 nfiles;      /* own files opened */

    unsigned                   full:1;      /* logged, until a replay */
    unsigned                   failed:1;
} ngx_cdp_spool_t;


static ngx_int_t ngx_cdp_spool_create(ngx_cdp_spool_t *sp);
static ngx_int_t ngx_cdp_spool_adopt(ngx_cdp_spool_t *sp, u_char *name,
    size_t len);
static ngx_int_t ngx_cdp_spool_read(ngx_cdp_spool_t *sp,
    ngx_cdp_spool_file_t *f, size_t need);
static void ngx_cdp_spool_settle(ngx_cdp_spool_t *sp,
    ngx_cdp_spool_file_t *f);
static void ngx_cdp_spool_set_aside(ngx_cdp_spool_t *sp,
    ngx_cdp_spool_file_t *f);
static void ngx_cdp_spool_close(ngx_cdp_spool_t *sp,
    ngx_cdp_spool_file_t *f, ngx_uint_t remove);
static void ngx_cdp_spool_drop(ngx_cdp_spool_t *sp, ngx_uint_t counter,
    ngx_uint_t n, ngx_err_t err, const char *what);


static ngx_cdp_spool_t  *ngx_cdp_spool;


/* cdp_spool PATH [max_size=SIZE] */

char *
ngx_cdp_spool_conf(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_cdp_main_conf_t *mcf = conf;

    off_t        size;
    ngx_str_t   *value, s;
    ngx_uint_t   i;
    ngx_path_t  *path;

    if (mcf->spool) {
        return "is duplicate";
    }

    value = cf->args->elts;

    path = ngx_pcalloc(cf->pool, sizeof(ngx_path_t));
    if (path == NULL) {
        return NGX_CONF_ERROR;
    }

    path->name = value[1];

    while (path->name.len > 1 && path->name.data[path->name.len - 1] == '/') {
        path->name.len--;
    }

    if (path->name.len == 0) {
        return "needs a directory";
    }

    if (ngx_conf_full_name(cf->cycle, &path->name, 0) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    path->conf_file = cf->conf_file->file.name.data;
    path->line = cf->conf_file->line;

    mcf->spool_max = 1024 * 1024 * 1024;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "max_size=", 9) == 0) {
            s.data = value[i].data + 9;
            s.len = value[i].len - 9;

            size = ngx_parse_offset(&s);

            if (size == NGX_ERROR || size < NGX_CDP_SPOOL_MIN) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "invalid cdp_spool max_size \"%V\": a "
                                   "size of at least 64k, like 512m or 4g",
                                   &s);
                return NGX_CONF_ERROR;
            }

            mcf->spool_max = size;
            continue;
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "unknown cdp_spool parameter \"%V\"", &value[i]);
        return NGX_CONF_ERROR;
    }

    /* nginx creates it at start, owned by the workers' user */

    if (ngx_add_path(cf, &path) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    mcf->spool = path;

    return NGX_CONF_OK;
}


ngx_int_t
ngx_cdp_spool_init_process(ngx_cycle_t *cycle, ngx_http_cdp_main_conf_t *mcf,
    ngx_cdp_ingest_conf_t *conf)
{
    ngx_cdp_spool_t  *sp;

    sp = ngx_pcalloc(cycle->pool, sizeof(ngx_cdp_spool_t));
    if (sp == NULL) {
        return NGX_ERROR;
    }

    sp->mcf = mcf;
    sp->log = cycle->log;
    sp->own.fd = NGX_INVALID_FILE;
    sp->own.own = 1;
    sp->own.conf = *conf;
    sp->adopted.fd = NGX_INVALID_FILE;

    ngx_cdp_spool = sp;

    /* what a previous nginx left is taken at once */
    ngx_cdp_spool_scan();

    return NGX_OK;
}


void
ngx_cdp_spool_exit_process(ngx_cycle_t *cycle)
{
    ngx_cdp_spool_t  *sp;

    sp = ngx_cdp_spool;
    if (sp == NULL) {
        return;
    }

    /* what is not replayed stays, for the next worker to adopt */

    if (sp->own.fd != NGX_INVALID_FILE) {
        ngx_cdp_spool_close(sp, &sp->own, sp->own.acked == sp->own.size);
    }

    if (sp->adopted.fd != NGX_INVALID_FILE) {
        ngx_cdp_spool_close(sp, &sp->adopted, 0);
    }

    ngx_free(sp->buf);

    ngx_cdp_spool = NULL;
}


ngx_int_t
ngx_cdp_spool_write(uint64_t seq, ngx_uint_t nevents, u_char *keys,
    size_t keys_len, u_char *args, size_t args_len)
{
    size_t            size;
    ssize_t           n;
    ngx_err_t         err;
    struct iovec      iov[3];
    ngx_cdp_spool_t  *sp;
    u_char            head[NGX_CDP_FRAME_HEAD + NGX_CDP_FRAME_BATCH_FIXED];

    sp = ngx_cdp_spool;
    if (sp == NULL) {
        ngx_cdp_count(NGX_CDP_C_DROP_REDIS_DOWN, nevents);
        return NGX_DECLINED;
    }

    size = sizeof(head) + keys_len + args_len;

    if (ngx_cdp_counters
        && (off_t) (ngx_cdp_counters[NGX_CDP_C_SPOOL_BYTES] + size)
           > sp->mcf->spool_max)
    {
        if (!sp->full) {
            ngx_log_error(NGX_LOG_ERR, sp->log, 0,
                          "cdp: spool %V is full (max_size=%O): events are "
                          "dropped until redis takes the spooled ones; "
                          "look at why redis is away, or raise max_size "
                          "if the disk has room",
                          &sp->mcf->spool->name, sp->mcf->spool_max);
            sp->full = 1;
        }

        ngx_cdp_count(NGX_CDP_C_DROP_SPOOL_FULL, nevents);
        return NGX_DECLINED;
    }

    if (sp->own.fd == NGX_INVALID_FILE && ngx_cdp_spool_create(sp) != NGX_OK)
    {
        ngx_cdp_spool_drop(sp, NGX_CDP_C_DROP_SPOOL_ERROR, nevents, 0, NULL);
        return NGX_DECLINED;
    }

    ngx_cdp_frame_batch(head, (uint32_t) nevents, seq, keys, keys_len,
                        args, args_len);

    iov[0].iov_base = head;
    iov[0].iov_len = sizeof(head);
    iov[1].iov_base = keys;
    iov[1].iov_len = keys_len;
    iov[2].iov_base = args;
    iov[2].iov_len = args_len;

    n = writev(sp->own.fd, iov, 3);

    if (n != (ssize_t) size) {
        err = (n == -1) ? ngx_errno : NGX_ENOSPC;

        /* no torn frame left behind: the file ends at the last whole one */

        if (n > 0 && ftruncate(sp->own.fd, sp->own.size) == -1) {
            ngx_log_error(NGX_LOG_ALERT, sp->log, ngx_errno,
                          "cdp: ftruncate(\"%s\") failed",
                          sp->own.name.data);
        }

        ngx_cdp_spool_drop(sp, NGX_CDP_C_DROP_SPOOL_ERROR, nevents, err,
                           "writev");
        return NGX_DECLINED;
    }

    sp->own.size += size;
    sp->failed = 0;

    ngx_cdp_count(NGX_CDP_C_SPOOL_BYTES, size);
    ngx_cdp_count(NGX_CDP_C_SPOOLED, nevents);

    return NGX_OK;
}


static void
ngx_cdp_spool_drop(ngx_cdp_spool_t *sp, ngx_uint_t counter, ngx_uint_t n,
    ngx_err_t err, const char *what)
{
    if (what && !sp->failed) {
        ngx_log_error(NGX_LOG_ERR, sp->log, err,
                      "cdp: %s() to the spool file \"%s\" failed: events "
                      "are dropped until the disk takes them again",
                      what, sp->own.name.data);
        sp->failed = 1;
    }

    ngx_cdp_count(counter, n);
}


/* the worker's own file: "<pid>-<ms>-<n>.tmp", locked, header, renamed */

static ngx_int_t
ngx_cdp_spool_create(ngx_cdp_spool_t *sp)
{
    u_char                *p, *tmp;
    size_t                 len;
    ngx_fd_t               fd;
    ngx_str_t             *dir;
    ngx_time_t            *tp;
    ngx_cdp_frame_str_t    w, s, o, a;
    ngx_cdp_spool_file_t  *f;

    f = &sp->own;
    dir = &sp->mcf->spool->name;
    tp = ngx_timeofday();

    len = dir->len + 1 + 3 * NGX_INT64_LEN + sizeof("--.spool");

    if (f->name.data == NULL) {
        f->name.data = ngx_alloc(len, sp->log);
        tmp = ngx_alloc(len, sp->log);

        if (f->name.data == NULL || tmp == NULL) {
            ngx_free(tmp);
            return NGX_ERROR;
        }

    } else {
        tmp = ngx_alloc(len, sp->log);
        if (tmp == NULL) {
            return NGX_ERROR;
        }
    }

    p = ngx_sprintf(f->name.data, "%V/%P-%uL-%ui.spool%Z", dir, ngx_pid,
                    (uint64_t) tp->sec * 1000 + tp->msec, sp->nfiles++);
    f->name.len = p - 1 - f->name.data;

    ngx_sprintf(tmp, "%*s.tmp%Z", f->name.len - 6, f->name.data);

    fd = ngx_open_file(tmp, NGX_FILE_RDWR|O_APPEND,
                       NGX_FILE_CREATE_OR_OPEN|O_EXCL, 0600);

    if (fd == NGX_INVALID_FILE) {
        ngx_cdp_spool_drop(sp, 0, 0, ngx_errno, "open");
        ngx_free(tmp);
        return NGX_ERROR;
    }

    if (flock(fd, LOCK_EX|LOCK_NB) == -1) {
        ngx_cdp_spool_drop(sp, 0, 0, ngx_errno, "flock");
        goto failed;
    }

    w.data = f->conf.writer.data;
    w.len = f->conf.writer.len;
    s.data = f->conf.stream.data;
    s.len = f->conf.stream.len;
    o.data = f->conf.once.data;
    o.len = f->conf.once.len;
    a.data = f->conf.argv1.data;
    a.len = f->conf.argv1.len;

    len = ngx_cdp_frame_header_size(&w, &s, &o, &a);

    p = ngx_alloc(len, sp->log);
    if (p == NULL) {
        goto failed;
    }

    (void) ngx_cdp_frame_header(p, (uint32_t) f->conf.nargs, &w, &s, &o, &a);

    if (ngx_write_fd(fd, p, len) != (ssize_t) len) {
        ngx_free(p);
        ngx_cdp_spool_drop(sp, 0, 0, ngx_errno, "write");
        goto failed;
    }

    ngx_free(p);

    if (ngx_rename_file(tmp, f->name.data) == NGX_FILE_ERROR) {
        ngx_cdp_spool_drop(sp, 0, 0, ngx_errno, "rename");
        goto failed;
    }

    ngx_free(tmp);

    f->fd = fd;
    f->head = len;
    f->acked = len;
    f->sent = len;
    f->size = len;
    f->bad = 0;

    ngx_cdp_count(NGX_CDP_C_SPOOL_BYTES, len);

    return NGX_OK;

failed:

    (void) ngx_delete_file(tmp);
    (void) ngx_close_file(fd);
    ngx_free(tmp);

    return NGX_ERROR;
}


/*
 * Every second: files that no live process holds are adopted (one at a
 * time), and the gauges are set from what is on disk.
 */

void
ngx_cdp_spool_scan(void)
{
    DIR              *dir;
    size_t            len;
    off_t             bytes;
    ngx_uint_t        files;
    struct stat       st;
    struct dirent    *de;
    ngx_cdp_spool_t  *sp;
    u_char            path[NGX_MAX_PATH];

    sp = ngx_cdp_spool;
    if (sp == NULL) {
        return;
    }

    dir = opendir((char *) sp->mcf->spool->name.data);
    if (dir == NULL) {
        ngx_log_error(NGX_LOG_ERR, sp->log, ngx_errno,
                      "cdp: opendir(\"%V\") of the spool failed",
                      &sp->mcf->spool->name);
        return;
    }

    bytes = 0;
    files = 0;

    while ((de = readdir(dir)) != NULL) {
        len = ngx_strlen(de->d_name);

        if (len <= 6 || ngx_strcmp(de->d_name + len - 6, ".spool") != 0
            || sp->mcf->spool->name.len + 1 + len >= NGX_MAX_PATH)
        {
            continue;
        }

        ngx_sprintf(path, "%V/%s%Z", &sp->mcf->spool->name, de->d_name);

        if (sp->adopted.fd == NGX_INVALID_FILE
            && (sp->own.fd == NGX_INVALID_FILE
                || ngx_strcmp(path, sp->own.name.data) != 0))
        {
            (void) ngx_cdp_spool_adopt(sp, path,
                                       sp->mcf->spool->name.len + 1 + len);
        }

        if (stat((char *) path, &st) == 0) {
            bytes += st.st_size;
            files++;
        }
    }

    closedir(dir);

    if (ngx_cdp_counters) {
        ngx_cdp_counters[NGX_CDP_C_SPOOL_BYTES] = bytes;
        ngx_cdp_counters[NGX_CDP_C_SPOOL_FILES] = files;
    }
}


static ngx_int_t
ngx_cdp_spool_adopt(ngx_cdp_spool_t *sp, u_char *name, size_t len)
{
    u_char                *p;
    ngx_fd_t               fd;
    ngx_int_t              rc;
    struct stat            st;
    ngx_cdp_frame_t        fr;
    ngx_cdp_spool_file_t  *f;

    fd = ngx_open_file(name, NGX_FILE_RDWR, NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        /* gone meanwhile */
        return NGX_DECLINED;
    }

    if (flock(fd, LOCK_EX|LOCK_NB) == -1) {
        /* its writer lives, or another worker has it */
        (void) ngx_close_file(fd);
        return NGX_DECLINED;
    }

    if (fstat(fd, &st) == -1 || st.st_nlink == 0) {
        /* replayed and deleted by another worker after we opened it */
        (void) ngx_close_file(fd);
        return NGX_DECLINED;
    }

    f = &sp->adopted;

    f->fd = fd;
    f->name.data = ngx_alloc(len + 1, sp->log);
    if (f->name.data == NULL) {
        f->fd = NGX_INVALID_FILE;
        (void) ngx_close_file(fd);
        return NGX_ERROR;
    }

    ngx_memcpy(f->name.data, name, len + 1);
    f->name.len = len;
    f->size = st.st_size;
    f->head = 0;
    f->acked = 0;
    f->sent = 0;
    f->bad = 0;
    f->mem = NULL;

    /* the header: how its batches are stored */

    rc = ngx_cdp_spool_read(sp, f, NGX_CDP_FRAME_HEAD);
    if (rc == NGX_OK) {
        rc = ngx_cdp_frame_next(sp->buf, sp->buf_len, 0, &fr);

        if (rc == NGX_CDP_FRAME_MORE && (off_t) sp->buf_len < f->size) {
            rc = ngx_cdp_spool_read(sp, f, NGX_CDP_FRAME_HEAD
                                    + (sp->buf[4] | sp->buf[5] << 8
                                       | sp->buf[6] << 16
                                       | (uint32_t) sp->buf[7] << 24));
            if (rc == NGX_OK) {
                rc = ngx_cdp_frame_next(sp->buf, sp->buf_len, 0, &fr);
            }
        }

        if (rc == NGX_CDP_FRAME_OK && fr.type != NGX_CDP_FRAME_HEADER) {
            fr.error = "no header";
            rc = NGX_CDP_FRAME_BAD;
        }

    } else {
        fr.error = "read failed";
        rc = NGX_CDP_FRAME_BAD;
    }

    if (rc != NGX_CDP_FRAME_OK) {
        f->why = (rc == NGX_CDP_FRAME_MORE) ? "torn header" : fr.error;
        f->damaged = 0;
        ngx_cdp_spool_set_aside(sp, f);
        return NGX_DECLINED;
    }

    f->mem = ngx_alloc(fr.writer.len + fr.stream.len + fr.once.len
                       + fr.argv1.len + 1, sp->log);
    if (f->mem == NULL) {
        ngx_cdp_spool_close(sp, f, 0);
        return NGX_ERROR;
    }

    p = f->mem;
    f->conf.writer.data = p;
    f->conf.writer.len = fr.writer.len;
    p = ngx_cpymem(p, fr.writer.data, fr.writer.len);
    f->conf.stream.data = p;
    f->conf.stream.len = fr.stream.len;
    p = ngx_cpymem(p, fr.stream.data, fr.stream.len);
    f->conf.once.data = p;
    f->conf.once.len = fr.once.len;
    p = ngx_cpymem(p, fr.once.data, fr.once.len);
    f->conf.argv1.data = p;
    f->conf.argv1.len = fr.argv1.len;
    (void) ngx_cpymem(p, fr.argv1.data, fr.argv1.len);
    f->conf.nargs = fr.nargs;

    f->head = fr.size;
    f->acked = fr.size;
    f->sent = fr.size;

    ngx_log_error(NGX_LOG_NOTICE, sp->log, 0,
                  "cdp: replaying the spool file \"%V\" (%O bytes) left "
                  "by %V", &f->name, f->size, &f->conf.writer);

    return NGX_OK;
}


/* [f->sent, f->sent + need) into the buffer, need at least 12 */

static ngx_int_t
ngx_cdp_spool_read(ngx_cdp_spool_t *sp, ngx_cdp_spool_file_t *f, size_t need)
{
    u_char   *p;
    size_t    size;
    ssize_t   n;

    if (sp->buf_file == f && f->sent >= sp->buf_off
        && f->sent + (off_t) need <= sp->buf_off + (off_t) sp->buf_len)
    {
        return NGX_OK;
    }

    size = ngx_max(need, NGX_CDP_SPOOL_READ);

    if (size > sp->buf_size) {
        p = ngx_alloc(size, sp->log);
        if (p == NULL) {
            return NGX_ERROR;
        }

        ngx_free(sp->buf);
        sp->buf = p;
        sp->buf_size = size;
    }

    sp->buf_file = f;
    sp->buf_off = f->sent;
    sp->buf_len = 0;

    n = pread(f->fd, sp->buf, ngx_min((off_t) size, f->size - f->sent),
              f->sent);

    if (n == -1) {
        ngx_log_error(NGX_LOG_ERR, sp->log, ngx_errno,
                      "cdp: pread(\"%V\") of the spool failed", &f->name);
        sp->buf_file = NULL;
        return NGX_ERROR;
    }

    sp->buf_len = n;

    return NGX_OK;
}


ngx_int_t
ngx_cdp_spool_next(ngx_cdp_spool_batch_t *b)
{
    size_t                 avail;
    uint32_t               len;
    ngx_int_t              rc;
    ngx_cdp_frame_t        fr;
    ngx_cdp_spool_t       *sp;
    ngx_cdp_spool_file_t  *f;

    sp = ngx_cdp_spool;
    if (sp == NULL || sp->nin == NGX_CDP_SPOOL_INFLIGHT) {
        return NGX_DECLINED;
    }

    /* an adopted file first: older than what this worker spools now */

    if (sp->nin) {
        f = sp->cur;

    } else if (sp->adopted.fd != NGX_INVALID_FILE) {
        f = &sp->adopted;

    } else if (sp->own.fd != NGX_INVALID_FILE) {
        f = &sp->own;

    } else {
        return NGX_DECLINED;
    }

    if (f->bad || f->sent >= f->size) {
        return NGX_DECLINED;
    }

    if (ngx_cdp_spool_read(sp, f, NGX_CDP_FRAME_HEAD) != NGX_OK) {
        return NGX_DECLINED;
    }

    avail = sp->buf_len - (size_t) (f->sent - sp->buf_off);

    rc = ngx_cdp_frame_next(sp->buf + (f->sent - sp->buf_off), avail,
                            (uint32_t) f->conf.nargs, &fr);

    if (rc == NGX_CDP_FRAME_MORE && (off_t) avail < f->size - f->sent
        && avail >= NGX_CDP_FRAME_HEAD)
    {
        /* the frame goes past the buffer: read it whole */

        len = sp->buf[f->sent - sp->buf_off + 4]
              | sp->buf[f->sent - sp->buf_off + 5] << 8
              | sp->buf[f->sent - sp->buf_off + 6] << 16
              | (uint32_t) sp->buf[f->sent - sp->buf_off + 7] << 24;

        if (ngx_cdp_spool_read(sp, f, NGX_CDP_FRAME_HEAD + (size_t) len)
            != NGX_OK)
        {
            return NGX_DECLINED;
        }

        avail = sp->buf_len - (size_t) (f->sent - sp->buf_off);

        rc = ngx_cdp_frame_next(sp->buf + (f->sent - sp->buf_off), avail,
                                (uint32_t) f->conf.nargs, &fr);
    }

    if (rc == NGX_CDP_FRAME_OK && fr.type != NGX_CDP_FRAME_BATCH) {
        fr.error = "a header in the middle";
        rc = NGX_CDP_FRAME_BAD;
    }

    if (rc != NGX_CDP_FRAME_OK) {
        f->bad = 1;
        f->damaged = f->sent;
        f->why = (rc == NGX_CDP_FRAME_MORE) ? "torn frame at the end"
                                            : fr.error;
        ngx_cdp_spool_settle(sp, f);
        return NGX_DECLINED;
    }

    b->conf = &f->conf;
    b->seq = fr.seq;
    b->nevents = fr.nevents;
    b->keys.data = (u_char *) fr.keys.data;
    b->keys.len = fr.keys.len;
    b->args.data = (u_char *) fr.args.data;
    b->args.len = fr.args.len;

    f->sent += fr.size;

    sp->cur = f;
    sp->ends[(sp->first + sp->nin) % NGX_CDP_SPOOL_INFLIGHT] = f->sent;
    sp->nin++;

    return NGX_OK;
}


void
ngx_cdp_spool_acked(void)
{
    ngx_cdp_spool_t       *sp;
    ngx_cdp_spool_file_t  *f;

    sp = ngx_cdp_spool;
    if (sp == NULL || sp->nin == 0) {
        return;
    }

    f = sp->cur;
    f->acked = sp->ends[sp->first];

    /* Redis takes spooled batches: a "full" episode is over */
    sp->full = 0;

    sp->first = (sp->first + 1) % NGX_CDP_SPOOL_INFLIGHT;
    sp->nin--;

    ngx_cdp_spool_settle(sp, f);
}


void
ngx_cdp_spool_rewind(void)
{
    ngx_cdp_spool_t  *sp;

    sp = ngx_cdp_spool;
    if (sp == NULL || sp->nin == 0) {
        return;
    }

    sp->cur->sent = sp->cur->acked;
    sp->nin = 0;
    sp->first = 0;
}


/* nothing in flight: a file replayed to its end or its damage is done */

static void
ngx_cdp_spool_settle(ngx_cdp_spool_t *sp, ngx_cdp_spool_file_t *f)
{
    if (sp->nin) {
        return;
    }

    if (f->bad) {
        ngx_cdp_spool_set_aside(sp, f);
        return;
    }

    if (f->acked < f->size) {
        return;
    }

    /* replayed: deleted (a new own file is created when needed) */

    ngx_cdp_spool_close(sp, f, 1);
}


/*
 * Damage at f->damaged: what was before it is replayed (and zeroed, to
 * give its room back), the file becomes "<name>.bad".
 */

static void
ngx_cdp_spool_set_aside(ngx_cdp_spool_t *sp, ngx_cdp_spool_file_t *f)
{
    u_char  *bad;

    ngx_log_error(NGX_LOG_ERR, sp->log, 0,
                  "cdp: the spool file \"%V\" is damaged at byte %O of %O "
                  "(%s): the batches before it are replayed, the rest is "
                  "set aside as \"%V.bad\"",
                  &f->name, f->damaged, f->size, f->why, &f->name);

    ngx_cdp_count(NGX_CDP_C_SPOOL_SET_ASIDE, 1);

#if (NGX_LINUX && defined FALLOC_FL_PUNCH_HOLE)
    if (f->damaged > 0) {
        (void) fallocate(f->fd, FALLOC_FL_PUNCH_HOLE|FALLOC_FL_KEEP_SIZE, 0,
                         f->damaged);
    }
#endif

    bad = ngx_alloc(f->name.len + sizeof(".bad"), sp->log);

    if (bad) {
        ngx_sprintf(bad, "%V.bad%Z", &f->name);

        if (ngx_rename_file(f->name.data, bad) == NGX_FILE_ERROR) {
            ngx_log_error(NGX_LOG_ERR, sp->log, ngx_errno,
                          "cdp: rename(\"%V\", \"%s\") failed", &f->name,
                          bad);
        }

        ngx_free(bad);
    }

    ngx_cdp_spool_close(sp, f, 0);
}


static void
ngx_cdp_spool_close(ngx_cdp_spool_t *sp, ngx_cdp_spool_file_t *f,
    ngx_uint_t remove)
{
    if (remove && ngx_delete_file(f->name.data) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_ERR, sp->log, ngx_errno,
                      "cdp: unlink(\"%V\") of a replayed spool file failed",
                      &f->name);
    }

    if (ngx_close_file(f->fd) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_ALERT, sp->log, ngx_errno,
                      "cdp: close(\"%V\") failed", &f->name);
    }

    if (remove && ngx_cdp_counters) {
        (void) ngx_atomic_fetch_add(&ngx_cdp_counters[NGX_CDP_C_SPOOL_BYTES],
                                    -f->size);
    }

    f->fd = NGX_INVALID_FILE;
    f->head = 0;
    f->acked = 0;
    f->sent = 0;
    f->size = 0;
    f->bad = 0;

    if (sp->buf_file == f) {
        sp->buf_file = NULL;
    }

    if (!f->own) {
        ngx_free(f->name.data);
        ngx_free(f->mem);
        f->name.data = NULL;
        f->mem = NULL;
    }
}

