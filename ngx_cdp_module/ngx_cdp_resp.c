
/*
 * ngx_cdp: RESP and spool frames (see ngx_cdp_resp.h).
 *
 * Frame integers are stored and read a byte at a time: a spool file may
 * be read on another host than the one that wrote it, and a frame inside
 * a read buffer has no alignment to rely on.  Every parser here checks a
 * length against what is left before it looks at the bytes, so that a
 * torn or hostile spool file can neither make it read past the buffer
 * nor overflow a size.
 */


#include "ngx_cdp_resp.h"

#include <stdlib.h>
#include <string.h>


/* 'H' body before its strings: type, version, reserved, nargs */
#define NGX_CDP_FRAME_HEADER_FIXED  8

/* the shortest bulk string: "$0\r\n\r\n" */
#define NGX_CDP_RESP_BULK_MIN       6


static u_char *ngx_cdp_resp_uint(u_char *p, uint64_t n);
static const u_char *ngx_cdp_resp_scan_bulk(const u_char *p,
    const u_char *end);
static void ngx_cdp_put_u32(u_char *p, uint32_t v);
static void ngx_cdp_put_u64(u_char *p, uint64_t v);
static uint32_t ngx_cdp_get_u32(const u_char *p);
static uint64_t ngx_cdp_get_u64(const u_char *p);
static u_char *ngx_cdp_frame_put_str(u_char *p,
    const ngx_cdp_frame_str_t *s);
static int ngx_cdp_frame_get_str(const u_char **pos, const u_char *end,
    ngx_cdp_frame_str_t *s);
static int ngx_cdp_frame_parse_header(const u_char *body, size_t len,
    ngx_cdp_frame_t *f);
static int ngx_cdp_frame_parse_batch(const u_char *body, size_t len,
    uint32_t nargs, ngx_cdp_frame_t *f);


static const u_char  ngx_cdp_frame_magic[4] = { 'C', 'D', 'P', 'F' };

/* CRC-32C, reflected polynomial 0x82f63b78: table[i] is the CRC of byte i */

static const uint32_t  ngx_cdp_crc32c_table[256] = {
    0x00000000, 0xf26b8303, 0xe13b70f7, 0x1350f3f4,
    0xc79a971f, 0x35f1141c, 0x26a1e7e8, 0xd4ca64eb,
    0x8ad958cf, 0x78b2dbcc, 0x6be22838, 0x9989ab3b,
    0x4d43cfd0, 0xbf284cd3, 0xac78bf27, 0x5e133c24,
    0x105ec76f, 0xe235446c, 0xf165b798, 0x030e349b,
    0xd7c45070, 0x25afd373, 0x36ff2087, 0xc494a384,
    0x9a879fa0, 0x68ec1ca3, 0x7bbcef57, 0x89d76c54,
    0x5d1d08bf, 0xaf768bbc, 0xbc267848, 0x4e4dfb4b,
    0x20bd8ede, 0xd2d60ddd, 0xc186fe29, 0x33ed7d2a,
    0xe72719c1, 0x154c9ac2, 0x061c6936, 0xf477ea35,
    0xaa64d611, 0x580f5512, 0x4b5fa6e6, 0xb93425e5,
    0x6dfe410e, 0x9f95c20d, 0x8cc531f9, 0x7eaeb2fa,
    0x30e349b1, 0xc288cab2, 0xd1d83946, 0x23b3ba45,
    0xf779deae, 0x05125dad, 0x1642ae59, 0xe4292d5a,
    0xba3a117e, 0x4851927d, 0x5b016189, 0xa96ae28a,
    0x7da08661, 0x8fcb0562, 0x9c9bf696, 0x6ef07595,
    0x417b1dbc, 0xb3109ebf, 0xa0406d4b, 0x522bee48,
    0x86e18aa3, 0x748a09a0, 0x67dafa54, 0x95b17957,
    0xcba24573, 0x39c9c670, 0x2a993584, 0xd8f2b687,
    0x0c38d26c, 0xfe53516f, 0xed03a29b, 0x1f682198,
    0x5125dad3, 0xa34e59d0, 0xb01eaa24, 0x42752927,
    0x96bf4dcc, 0x64d4cecf, 0x77843d3b, 0x85efbe38,
    0xdbfc821c, 0x2997011f, 0x3ac7f2eb, 0xc8ac71e8,
    0x1c661503, 0xee0d9600, 0xfd5d65f4, 0x0f36e6f7,
    0x61c69362, 0x93ad1061, 0x80fde395, 0x72966096,
    0xa65c047d, 0x5437877e, 0x4767748a, 0xb50cf789,
    0xeb1fcbad, 0x197448ae, 0x0a24bb5a, 0xf84f3859,
    0x2c855cb2, 0xdeeedfb1, 0xcdbe2c45, 0x3fd5af46,
    0x7198540d, 0x83f3d70e, 0x90a324fa, 0x62c8a7f9,
    0xb602c312, 0x44694011, 0x5739b3e5, 0xa55230e6,
    0xfb410cc2, 0x092a8fc1, 0x1a7a7c35, 0xe811ff36,
    0x3cdb9bdd, 0xceb018de, 0xdde0eb2a, 0x2f8b6829,
    0x82f63b78, 0x709db87b, 0x63cd4b8f, 0x91a6c88c,
    0x456cac67, 0xb7072f64, 0xa457dc90, 0x563c5f93,
    0x082f63b7, 0xfa44e0b4, 0xe9141340, 0x1b7f9043,
    0xcfb5f4a8, 0x3dde77ab, 0x2e8e845f, 0xdce5075c,
    0x92a8fc17, 0x60c37f14, 0x73938ce0, 0x81f80fe3,
    0x55326b08, 0xa759e80b, 0xb4091bff, 0x466298fc,
    0x1871a4d8, 0xea1a27db, 0xf94ad42f, 0x0b21572c,
    0xdfeb33c7, 0x2d80b0c4, 0x3ed04330, 0xccbbc033,
    0xa24bb5a6, 0x502036a5, 0x4370c551, 0xb11b4652,
    0x65d122b9, 0x97baa1ba, 0x84ea524e, 0x7681d14d,
    0x2892ed69, 0xdaf96e6a, 0xc9a99d9e, 0x3bc21e9d,
    0xef087a76, 0x1d63f975, 0x0e330a81, 0xfc588982,
    0xb21572c9, 0x407ef1ca, 0x532e023e, 0xa145813d,
    0x758fe5d6, 0x87e466d5, 0x94b49521, 0x66df1622,
    0x38cc2a06, 0xcaa7a905, 0xd9f75af1, 0x2b9cd9f2,
    0xff56bd19, 0x0d3d3e1a, 0x1e6dcdee, 0xec064eed,
    0xc38d26c4, 0x31e6a5c7, 0x22b65633, 0xd0ddd530,
    0x0417b1db, 0xf67c32d8, 0xe52cc12c, 0x1747422f,
    0x49547e0b, 0xbb3ffd08, 0xa86f0efc, 0x5a048dff,
    0x8ecee914, 0x7ca56a17, 0x6ff599e3, 0x9d9e1ae0,
    0xd3d3e1ab, 0x21b862a8, 0x32e8915c, 0xc083125f,
    0x144976b4, 0xe622f5b7, 0xf5720643, 0x07198540,
    0x590ab964, 0xab613a67, 0xb831c993, 0x4a5a4a90,
    0x9e902e7b, 0x6cfbad78, 0x7fab5e8c, 0x8dc0dd8f,
    0xe330a81a, 0x115b2b19, 0x020bd8ed, 0xf0605bee,
    0x24aa3f05, 0xd6c1bc06, 0xc5914ff2, 0x37faccf1,
    0x69e9f0d5, 0x9b8273d6, 0x88d28022, 0x7ab90321,
    0xae7367ca, 0x5c18e4c9, 0x4f48173d, 0xbd23943e,
    0xf36e6f75, 0x0105ec76, 0x12551f82, 0xe03e9c81,
    0x34f4f86a, 0xc69f7b69, 0xd5cf889d, 0x27a40b9e,
    0x79b737ba, 0x8bdcb4b9, 0x988c474d, 0x6ae7c44e,
    0xbe2da0a5, 0x4c4623a6, 0x5f16d052, 0xad7d5351
};


/* RESP */

static u_char *
ngx_cdp_resp_uint(u_char *p, uint64_t n)
{
    u_char  *t, tmp[20];
    size_t   len;

    t = tmp + sizeof(tmp);

    do {
        *--t = (u_char) ('0' + n % 10);
        n /= 10;
    } while (n);

    len = (size_t) (tmp + sizeof(tmp) - t);
    memcpy(p, t, len);

    return p + len;
}


u_char *
ngx_cdp_resp_bulk(u_char *p, const u_char *data, size_t len)
{
    *p++ = '$';
    p = ngx_cdp_resp_uint(p, len);
    *p++ = '\r';
    *p++ = '\n';

    /* an empty argument may come without a buffer */
    if (len) {
        memcpy(p, data, len);
        p += len;
    }

    *p++ = '\r';
    *p++ = '\n';

    return p;
}


u_char *
ngx_cdp_resp_array(u_char *p, uint64_t n)
{
    *p++ = '*';
    p = ngx_cdp_resp_uint(p, n);
    *p++ = '\r';
    *p++ = '\n';

    return p;
}


/* the end of the one bulk string at p, or NULL */

static const u_char *
ngx_cdp_resp_scan_bulk(const u_char *p, const u_char *end)
{
    size_t  n;

    if (p == end || *p != '$') {
        return NULL;
    }

    p++;

    if (p == end || *p < '0' || *p > '9') {
        return NULL;
    }

    if (*p == '0') {
        /* the one digit "0": a digit after it is a leading zero */
        n = 0;
        p++;

    } else {
        for (n = 0; p != end && *p >= '0' && *p <= '9'; p++) {
            n = n * 10 + (size_t) (*p - '0');

            /* checked at every digit, so a long run cannot wrap n */
            if (n > NGX_CDP_RESP_BULK_MAX) {
                return NULL;
            }
        }
    }

    if (end - p < 2 || p[0] != '\r' || p[1] != '\n') {
        return NULL;
    }

    p += 2;

    /* n is at most NGX_CDP_RESP_BULK_MAX: n + 2 cannot wrap */
    if ((size_t) (end - p) < n + 2) {
        return NULL;
    }

    p += n;

    if (p[0] != '\r' || p[1] != '\n') {
        return NULL;
    }

    return p + 2;
}


int
ngx_cdp_resp_scan_bulks(const u_char *p, size_t len, uint64_t n)
{
    const u_char  *end;

    /*
     * Each bulk string takes at least 6 bytes: a count that cannot fit
     * fails at once, not after a scan (a hostile count may be 2^64 - 1).
     */
    if (n > len / NGX_CDP_RESP_BULK_MIN) {
        return -1;
    }

    /* n is 0 too: p, which may be NULL, is not to be offset */
    if (len == 0) {
        return 0;
    }

    end = p + len;

    while (n--) {
        p = ngx_cdp_resp_scan_bulk(p, end);
        if (p == NULL) {
            return -1;
        }
    }

    return p == end ? 0 : -1;
}


/* CRC-32C */

uint32_t
ngx_cdp_crc32c(uint32_t crc, const u_char *p, size_t len)
{
    /*
     * The register starts at ~0 and the result is inverted: undoing the
     * inversion of a previous result here is what makes chaining work,
     * with 0 as the value before any byte.
     */
    crc = ~crc;

    while (len--) {
        crc = ngx_cdp_crc32c_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    }

    return ~crc;
}


/* spool frames */

static void
ngx_cdp_put_u32(u_char *p, uint32_t v)
{
    p[0] = (u_char) v;
    p[1] = (u_char) (v >> 8);
    p[2] = (u_char) (v >> 16);
    p[3] = (u_char) (v >> 24);
}


static void
ngx_cdp_put_u64(u_char *p, uint64_t v)
{
    ngx_cdp_put_u32(p, (uint32_t) v);
    ngx_cdp_put_u32(p + 4, (uint32_t) (v >> 32));
}


static uint32_t
ngx_cdp_get_u32(const u_char *p)
{
    return (uint32_t) p[0]
           | (uint32_t) p[1] << 8
           | (uint32_t) p[2] << 16
           | (uint32_t) p[3] << 24;
}


static uint64_t
ngx_cdp_get_u64(const u_char *p)
{
    return (uint64_t) ngx_cdp_get_u32(p)
           | (uint64_t) ngx_cdp_get_u32(p + 4) << 32;
}


void
ngx_cdp_frame_batch(u_char *head, uint32_t nevents, uint64_t seq,
    const u_char *keys, size_t keys_len, const u_char *args,
    size_t args_len)
{
    u_char    *body;
    uint32_t   crc;

    body = head + NGX_CDP_FRAME_HEAD;

    body[0] = NGX_CDP_FRAME_BATCH;
    body[1] = 0;
    body[2] = 0;
    body[3] = 0;
    ngx_cdp_put_u32(body + 4, nevents);
    ngx_cdp_put_u64(body + 8, seq);
    ngx_cdp_put_u32(body + 16, (uint32_t) keys_len);

    /* the three pieces are not contiguous here: the CRC is chained */
    crc = ngx_cdp_crc32c(0, body, NGX_CDP_FRAME_BATCH_FIXED);
    crc = ngx_cdp_crc32c(crc, keys, keys_len);
    crc = ngx_cdp_crc32c(crc, args, args_len);

    memcpy(head, ngx_cdp_frame_magic, sizeof(ngx_cdp_frame_magic));
    ngx_cdp_put_u32(head + 4, (uint32_t) (NGX_CDP_FRAME_BATCH_FIXED
                                          + keys_len + args_len));
    ngx_cdp_put_u32(head + 8, crc);
}


static u_char *
ngx_cdp_frame_put_str(u_char *p, const ngx_cdp_frame_str_t *s)
{
    ngx_cdp_put_u32(p, (uint32_t) s->len);
    p += 4;

    if (s->len) {
        memcpy(p, s->data, s->len);
        p += s->len;
    }

    return p;
}


size_t
ngx_cdp_frame_header_size(const ngx_cdp_frame_str_t *writer,
    const ngx_cdp_frame_str_t *stream, const ngx_cdp_frame_str_t *once,
    const ngx_cdp_frame_str_t *argv1)
{
    return NGX_CDP_FRAME_HEAD + NGX_CDP_FRAME_HEADER_FIXED + 4 * 4
           + writer->len + stream->len + once->len + argv1->len;
}


u_char *
ngx_cdp_frame_header(u_char *p, uint32_t nargs,
    const ngx_cdp_frame_str_t *writer, const ngx_cdp_frame_str_t *stream,
    const ngx_cdp_frame_str_t *once, const ngx_cdp_frame_str_t *argv1)
{
    u_char  *body, *end;

    body = p + NGX_CDP_FRAME_HEAD;

    body[0] = NGX_CDP_FRAME_HEADER;
    body[1] = NGX_CDP_FRAME_VERSION;
    body[2] = 0;
    body[3] = 0;
    ngx_cdp_put_u32(body + 4, nargs);

    end = body + NGX_CDP_FRAME_HEADER_FIXED;
    end = ngx_cdp_frame_put_str(end, writer);
    end = ngx_cdp_frame_put_str(end, stream);
    end = ngx_cdp_frame_put_str(end, once);
    end = ngx_cdp_frame_put_str(end, argv1);

    memcpy(p, ngx_cdp_frame_magic, sizeof(ngx_cdp_frame_magic));
    ngx_cdp_put_u32(p + 4, (uint32_t) (end - body));
    ngx_cdp_put_u32(p + 8, ngx_cdp_crc32c(0, body, (size_t) (end - body)));

    return end;
}


int
ngx_cdp_frame_next(const u_char *p, size_t len, uint32_t nargs,
    ngx_cdp_frame_t *f)
{
    int            rc;
    size_t         n;
    uint32_t       blen;
    const u_char  *body;

    memset(f, 0, sizeof(ngx_cdp_frame_t));

    /* a head cut short is still the beginning of a frame if its magic is */

    n = len < sizeof(ngx_cdp_frame_magic) ? len : sizeof(ngx_cdp_frame_magic);

    if (n && memcmp(p, ngx_cdp_frame_magic, n) != 0) {
        f->error = "bad magic";
        return NGX_CDP_FRAME_BAD;
    }

    if (len < NGX_CDP_FRAME_HEAD) {
        return NGX_CDP_FRAME_MORE;
    }

    blen = ngx_cdp_get_u32(p + 4);

    if (blen > NGX_CDP_FRAME_MAX) {
        f->error = "frame too long";
        return NGX_CDP_FRAME_BAD;
    }

    if (len - NGX_CDP_FRAME_HEAD < blen) {
        return NGX_CDP_FRAME_MORE;
    }

    body = p + NGX_CDP_FRAME_HEAD;

    if (ngx_cdp_crc32c(0, body, blen) != ngx_cdp_get_u32(p + 8)) {
        f->error = "bad checksum";
        return NGX_CDP_FRAME_BAD;
    }

    if (blen == 0) {
        f->error = "empty frame";
        return NGX_CDP_FRAME_BAD;
    }

    switch (body[0]) {

    case NGX_CDP_FRAME_HEADER:
        rc = ngx_cdp_frame_parse_header(body, blen, f);
        break;

    case NGX_CDP_FRAME_BATCH:
        rc = ngx_cdp_frame_parse_batch(body, blen, nargs, f);
        break;

    default:
        f->error = "unknown frame type";
        return NGX_CDP_FRAME_BAD;
    }

    if (rc != NGX_CDP_FRAME_OK) {
        return rc;
    }

    f->type = body[0];
    f->size = NGX_CDP_FRAME_HEAD + (size_t) blen;

    return NGX_CDP_FRAME_OK;
}


static int
ngx_cdp_frame_get_str(const u_char **pos, const u_char *end,
    ngx_cdp_frame_str_t *s)
{
    uint32_t       n;
    const u_char  *p;

    p = *pos;

    if (end - p < 4) {
        return -1;
    }

    n = ngx_cdp_get_u32(p);
    p += 4;

    if ((size_t) (end - p) < n) {
        return -1;
    }

    s->data = p;
    s->len = n;
    *pos = p + n;

    return 0;
}


static int
ngx_cdp_frame_parse_header(const u_char *body, size_t len,
    ngx_cdp_frame_t *f)
{
    const u_char  *pos, *end;

    if (len < NGX_CDP_FRAME_HEADER_FIXED) {
        f->error = "header frame too short";
        return NGX_CDP_FRAME_BAD;
    }

    if (body[1] != NGX_CDP_FRAME_VERSION) {
        f->error = "unknown header version";
        return NGX_CDP_FRAME_BAD;
    }

    if (body[2] != 0 || body[3] != 0) {
        f->error = "header reserved bytes not zero";
        return NGX_CDP_FRAME_BAD;
    }

    f->version = body[1];
    f->nargs = ngx_cdp_get_u32(body + 4);

    pos = body + NGX_CDP_FRAME_HEADER_FIXED;
    end = body + len;

    if (ngx_cdp_frame_get_str(&pos, end, &f->writer) != 0
        || ngx_cdp_frame_get_str(&pos, end, &f->stream) != 0
        || ngx_cdp_frame_get_str(&pos, end, &f->once) != 0
        || ngx_cdp_frame_get_str(&pos, end, &f->argv1) != 0)
    {
        f->error = "header string overruns the frame";
        return NGX_CDP_FRAME_BAD;
    }

    /* a frame must be exactly what its writer wrote, nothing unknown */
    if (pos != end) {
        f->error = "trailing bytes in header frame";
        return NGX_CDP_FRAME_BAD;
    }

    return NGX_CDP_FRAME_OK;
}


static int
ngx_cdp_frame_parse_batch(const u_char *body, size_t len, uint32_t nargs,
    ngx_cdp_frame_t *f)
{
    size_t    rest;
    uint32_t  keys_len;

    if (len < NGX_CDP_FRAME_BATCH_FIXED) {
        f->error = "batch frame too short";
        return NGX_CDP_FRAME_BAD;
    }

    if (body[1] != 0 || body[2] != 0 || body[3] != 0) {
        f->error = "batch reserved bytes not zero";
        return NGX_CDP_FRAME_BAD;
    }

    f->nevents = ngx_cdp_get_u32(body + 4);
    f->seq = ngx_cdp_get_u64(body + 8);
    keys_len = ngx_cdp_get_u32(body + 16);

    if (f->nevents == 0) {
        f->error = "batch without events";
        return NGX_CDP_FRAME_BAD;
    }

    rest = len - NGX_CDP_FRAME_BATCH_FIXED;

    if (keys_len > rest) {
        f->error = "batch keys overrun the frame";
        return NGX_CDP_FRAME_BAD;
    }

    f->keys.data = body + NGX_CDP_FRAME_BATCH_FIXED;
    f->keys.len = keys_len;
    f->args.data = f->keys.data + keys_len;
    f->args.len = rest - keys_len;

    /*
     * These bytes go to Redis as they are: anything but the expected
     * arguments could desynchronise the connection or smuggle a command.
     * nevents * nargs is at most (2^32 - 1)^2: it fits in 64 bits.
     */

    if (ngx_cdp_resp_scan_bulks(f->keys.data, f->keys.len, f->nevents) != 0)
    {
        f->error = "batch keys are not nevents bulk strings";
        return NGX_CDP_FRAME_BAD;
    }

    if (ngx_cdp_resp_scan_bulks(f->args.data, f->args.len,
                                (uint64_t) f->nevents * nargs)
        != 0)
    {
        f->error = "batch args are not nevents * nargs bulk strings";
        return NGX_CDP_FRAME_BAD;
    }

    return NGX_CDP_FRAME_OK;
}


int
ngx_cdp_resp_reserve(ngx_cdp_resp_buf_t *b, size_t n)
{
    u_char  *p;
    size_t   used, size;

    if ((size_t) (b->end - b->last) >= n) {
        return 0;
    }

    used = b->last - b->pos;

    if (b->pos != b->start && (size_t) (b->end - b->start) >= used + n) {
        memmove(b->start, b->pos, used);
        b->pos = b->start;
        b->last = b->start + used;
        return 0;
    }

    size = (size_t) (b->end - b->start) * 2;

    if (size < used + n) {
        size = used + n;
    }

    if (size < 16384) {
        size = 16384;
    }

    p = malloc(size);
    if (p == NULL) {
        return -1;
    }

    if (used) {
        memcpy(p, b->pos, used);
    }

    free(b->start);

    b->start = p;
    b->pos = p;
    b->last = p + used;
    b->end = p + size;

    return 0;
}


void
ngx_cdp_resp_free(ngx_cdp_resp_buf_t *b)
{
    free(b->start);

    b->start = NULL;
    b->pos = NULL;
    b->last = NULL;
    b->end = NULL;
}
