
/*
 * ngx_cdp_resp.c, spool frames and the bulk string scanner:
 *
 * - ngx_cdp_frame_next() walks arbitrary bytes as a spool file, frame
 *   after frame while they are OK, and never reads past them (an
 *   exact-size copy).
 * - OK: at least a head and a type byte, within the input; its strings
 *   within the frame; a 'B' frame's keys and args are nevents and
 *   nevents * nargs bulk strings by the reference scanner below.  The
 *   parsed fields, written again by ngx_cdp_frame_header() or
 *   ngx_cdp_frame_batch(), give the same bytes: the parser takes exactly
 *   what the writers write.  One byte short, the frame is MORE.
 * - MORE: shorter than a head and a prefix of the magic, or a head whose
 *   body is not all there.  BAD: a short printable reason.
 * - ngx_cdp_resp_scan_bulks() agrees with the reference scanner on the
 *   input as a run of bulk strings, and ngx_cdp_resp_bulk() writes each
 *   of them again byte for byte; ngx_cdp_resp_array() writes what printf
 *   does, for a count made of the input's first bytes.
 *
 * The first byte is not a frame: nargs is 1 + its low 7 bits % 6, and
 * its top bit makes the harness write the right CRC-32C into each head
 * before the parser sees it.  Mutated bytes hardly ever carry a valid
 * checksum: without this, the bodies' parsers would barely be reached.
 */


#include <inttypes.h>

#include "fuzz.h"
#include "ngx_cdp_resp.h"


#define FUZZ_ERROR_MAX  80


static uint32_t
fuzz_le32(const u_char *p)
{
    return (uint32_t) p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16
           | (uint32_t) p[3] << 24;
}


static int
fuzz_frame_within(ngx_cdp_frame_str_t s, const u_char *b, size_t len)
{
    return s.data != NULL && s.data >= b && s.len <= len
           && (size_t) (s.data - b) <= len - s.len;
}


/*
 * The reference: how many bulk strings in canonical form start [p, p +
 * len), and where they end.  Canonical: the header is exactly what
 * printf("$%zu\r\n") gives for the data that follows.  Each is written
 * again by ngx_cdp_resp_bulk(), which must give the same bytes.
 */

static uint64_t
fuzz_bulks(const u_char *p, size_t len, size_t *used)
{
    int       hlen;
    char      head[32];
    u_char   *b, *end;
    size_t    i, j, n, digits;
    uint64_t  count;

    count = 0;
    i = 0;

    for ( ;; ) {
        *used = i;

        if (i == len || p[i] != '$') {
            return count;
        }

        for (j = i + 1; j < len && p[j] >= '0' && p[j] <= '9'; j++) {
            /* void */
        }

        digits = j - i - 1;

        /* 10 digits are already over NGX_CDP_RESP_BULK_MAX */
        if (digits == 0 || digits > 10) {
            return count;
        }

        for (n = 0, j = i + 1; j < i + 1 + digits; j++) {
            n = n * 10 + (size_t) (p[j] - '0');
        }

        if (n > NGX_CDP_RESP_BULK_MAX) {
            return count;
        }

        hlen = snprintf(head, sizeof(head), "$%zu\r\n", n);

        if ((size_t) hlen > len - i || memcmp(p + i, head, hlen) != 0) {
            return count;
        }

        j = i + (size_t) hlen;

        if (len - j < n + 2 || p[j + n] != '\r' || p[j + n + 1] != '\n') {
            return count;
        }

        b = malloc(ngx_cdp_resp_bulk_size(n));
        FUZZ_CHECK(b != NULL);

        end = ngx_cdp_resp_bulk(b, p + j, n);
        FUZZ_CHECK((size_t) (end - b) == (size_t) hlen + n + 2
                   && (size_t) (end - b) <= ngx_cdp_resp_bulk_size(n));
        FUZZ_CHECK(memcmp(b, p + i, (size_t) (end - b)) == 0);
        free(b);

        i = j + n + 2;
        count++;
    }
}


static void
fuzz_scan(const u_char *p, size_t len)
{
    int       alen;
    char      want[NGX_CDP_RESP_ARRAY_SIZE + 1];
    u_char   *end, arr[NGX_CDP_RESP_ARRAY_SIZE];
    size_t    i, used;
    uint64_t  n;

    for (n = 0, i = 0; i < len && i < 8; i++) {
        n |= (uint64_t) p[i] << (8 * i);
    }

    alen = snprintf(want, sizeof(want), "*%" PRIu64 "\r\n", n);
    end = ngx_cdp_resp_array(arr, n);
    FUZZ_CHECK(end - arr == alen && memcmp(arr, want, (size_t) alen) == 0);

    n = fuzz_bulks(p, len, &used);

    FUZZ_CHECK(ngx_cdp_resp_scan_bulks(p, used, n) == 0);
    FUZZ_CHECK(ngx_cdp_resp_scan_bulks(p, used, n + 1) == -1);
    FUZZ_CHECK(n == 0 || ngx_cdp_resp_scan_bulks(p, used, n - 1) == -1);
    FUZZ_CHECK(ngx_cdp_resp_scan_bulks(p, len, n) == (used == len ? 0 : -1));

    /* what stopped the reference stops the scanner */
    FUZZ_CHECK(ngx_cdp_resp_scan_bulks(p, len, n + 1) == -1);
}


static void
fuzz_fix_crc(u_char *p, size_t len)
{
    uint32_t  blen, crc;

    if (len < NGX_CDP_FRAME_HEAD || memcmp(p, "CDPF", 4) != 0) {
        return;
    }

    blen = fuzz_le32(p + 4);

    if (blen > NGX_CDP_FRAME_MAX || blen > len - NGX_CDP_FRAME_HEAD) {
        return;
    }

    crc = ngx_cdp_crc32c(0, p + NGX_CDP_FRAME_HEAD, blen);

    p[8] = (u_char) crc;
    p[9] = (u_char) (crc >> 8);
    p[10] = (u_char) (crc >> 16);
    p[11] = (u_char) (crc >> 24);
}


static void
fuzz_header(const u_char *p, const ngx_cdp_frame_t *f)
{
    size_t   size;
    u_char  *b, *end;

    FUZZ_CHECK(f->version == NGX_CDP_FRAME_VERSION);
    FUZZ_CHECK(fuzz_frame_within(f->writer, p, f->size)
               && fuzz_frame_within(f->stream, p, f->size)
               && fuzz_frame_within(f->once, p, f->size)
               && fuzz_frame_within(f->argv1, p, f->size));
    FUZZ_CHECK(f->nevents == 0 && f->keys.data == NULL
               && f->args.data == NULL);

    size = ngx_cdp_frame_header_size(&f->writer, &f->stream, &f->once,
                                     &f->argv1);
    FUZZ_CHECK(size == f->size);

    b = fuzz_dup(p, size);
    memset(b, 0xee, size);

    end = ngx_cdp_frame_header(b, f->nargs, &f->writer, &f->stream, &f->once,
                               &f->argv1);
    FUZZ_CHECK(end == b + size);
    FUZZ_CHECK(memcmp(b, p, size) == 0);

    free(b);
}


static void
fuzz_batch(const u_char *p, uint32_t nargs, const ngx_cdp_frame_t *f)
{
    size_t    used;
    u_char    head[NGX_CDP_FRAME_HEAD + NGX_CDP_FRAME_BATCH_FIXED];
    uint64_t  n;

    FUZZ_CHECK(f->nevents >= 1);
    FUZZ_CHECK(f->writer.data == NULL && f->argv1.data == NULL);

    /* keys then args fill the frame after the fixed bytes */
    FUZZ_CHECK(f->keys.data == p + sizeof(head));
    FUZZ_CHECK(f->args.data == f->keys.data + f->keys.len);
    FUZZ_CHECK(f->args.data + f->args.len == p + f->size);

    n = fuzz_bulks(f->keys.data, f->keys.len, &used);
    FUZZ_CHECK(n == f->nevents && used == f->keys.len);

    n = fuzz_bulks(f->args.data, f->args.len, &used);
    FUZZ_CHECK(n == (uint64_t) f->nevents * nargs && used == f->args.len);

    memset(head, 0xee, sizeof(head));
    ngx_cdp_frame_batch(head, f->nevents, f->seq, f->keys.data, f->keys.len,
                        f->args.data, f->args.len);
    FUZZ_CHECK(memcmp(head, p, sizeof(head)) == 0);
}


static void
fuzz_ok(const u_char *p, size_t len, uint32_t nargs,
    const ngx_cdp_frame_t *f)
{
    int              rc;
    u_char          *b;
    ngx_cdp_frame_t  g;

    FUZZ_CHECK(f->error == NULL);
    FUZZ_CHECK(f->size > NGX_CDP_FRAME_HEAD && f->size <= len);
    FUZZ_CHECK(f->size - NGX_CDP_FRAME_HEAD <= NGX_CDP_FRAME_MAX);
    FUZZ_CHECK(f->size - NGX_CDP_FRAME_HEAD == fuzz_le32(p + 4));
    FUZZ_CHECK(f->type == p[NGX_CDP_FRAME_HEAD]);

    if (f->type == NGX_CDP_FRAME_HEADER) {
        fuzz_header(p, f);

    } else {
        FUZZ_CHECK(f->type == NGX_CDP_FRAME_BATCH);
        fuzz_batch(p, nargs, f);
    }

    /* the frame alone, then one byte short of it */

    b = fuzz_dup(p, f->size);

    rc = ngx_cdp_frame_next(b, f->size, nargs, &g);
    FUZZ_CHECK(rc == NGX_CDP_FRAME_OK && g.size == f->size);

    rc = ngx_cdp_frame_next(b, f->size - 1, nargs, &g);
    FUZZ_CHECK(rc == NGX_CDP_FRAME_MORE && g.error == NULL);

    free(b);
}


static void
fuzz_more(const u_char *p, size_t len, const ngx_cdp_frame_t *f)
{
    uint32_t  blen;

    FUZZ_CHECK(f->error == NULL);

    if (len < NGX_CDP_FRAME_HEAD) {
        FUZZ_CHECK(memcmp(p, "CDPF", len < 4 ? len : 4) == 0);
        return;
    }

    blen = fuzz_le32(p + 4);

    FUZZ_CHECK(memcmp(p, "CDPF", 4) == 0);
    FUZZ_CHECK(blen <= NGX_CDP_FRAME_MAX
               && blen > len - NGX_CDP_FRAME_HEAD);
}


static void
fuzz_bad(const ngx_cdp_frame_t *f, int fix)
{
    size_t  i, n;

    FUZZ_CHECK(f->error != NULL);

    n = strlen(f->error);
    FUZZ_CHECK(n > 0 && n <= FUZZ_ERROR_MAX);

    for (i = 0; i < n; i++) {
        FUZZ_CHECK(f->error[i] >= 0x20 && f->error[i] < 0x7f);
    }

    FUZZ_CHECK(!fix || strcmp(f->error, "bad checksum") != 0);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int              rc, fix;
    u_char          *in;
    size_t           pos, len;
    uint32_t         nargs;
    ngx_cdp_frame_t  f;

    if (size == 0) {
        return 0;
    }

    nargs = 1 + (data[0] & 0x7f) % 6;
    fix = (data[0] & 0x80) != 0;

    in = fuzz_dup(data + 1, size - 1);
    len = size - 1;

    fuzz_scan(in, len);

    for (pos = 0; /* void */; pos += f.size) {
        if (fix) {
            fuzz_fix_crc(in + pos, len - pos);
        }

        memset(&f, 0xee, sizeof(ngx_cdp_frame_t));

        rc = ngx_cdp_frame_next(in + pos, len - pos, nargs, &f);

        if (rc == NGX_CDP_FRAME_OK) {
            fuzz_ok(in + pos, len - pos, nargs, &f);
            continue;
        }

        if (rc == NGX_CDP_FRAME_MORE) {
            fuzz_more(in + pos, len - pos, &f);
            break;
        }

        FUZZ_CHECK(rc == NGX_CDP_FRAME_BAD);
        fuzz_bad(&f, fix);
        break;
    }

    free(in);

    return 0;
}
