
/*
 * Unit tests of ngx_cdp_resp.c, with the same tiny harness as
 * test_codec.c: the RESP encoder and scanner, CRC-32C, and spool frames.
 *
 * Every CHECK counts as one test; the last line is "N passed, N failed"
 * and the exit status is non-zero when anything failed.  Inputs are
 * copied to their exact size and outputs written to exact-size buffers
 * followed by a canary, so overreads and overruns show up under valgrind
 * and `make sanitize`.  Frames that must be refused for their body are
 * built here byte by byte, with their checksum, so that only the body is
 * wrong.
 */


#include <stdint.h>

#include "ngx_cdp_resp.h"
#include "unit.h"


/* room after a frame in the bit flip test: a grown len may still fit */
#define PAD         (128 * 1024)

/* a frame built here: head and body */
#define FRAME_MAX   512


typedef struct {
    u_char          b[FRAME_MAX];
    size_t          len;
} ngx_cdp_tframe_t;


/* little-endian writers of the tests' own */

static void
ngx_cdp_le32(u_char *p, uint32_t v)
{
    int  i;

    for (i = 0; i < 4; i++) {
        p[i] = (u_char) (v >> (8 * i));
    }
}


static void
ngx_cdp_le64(u_char *p, uint64_t v)
{
    int  i;

    for (i = 0; i < 8; i++) {
        p[i] = (u_char) (v >> (8 * i));
    }
}


static uint32_t
ngx_cdp_rd32(const u_char *p)
{
    return (uint32_t) p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16
           | (uint32_t) p[3] << 24;
}


/* a frame of this body: magic, len, CRC-32C of the body, body */

static void
ngx_cdp_wrap(ngx_cdp_tframe_t *t, const u_char *body, size_t len)
{
    memcpy(t->b, "CDPF", 4);
    ngx_cdp_le32(t->b + 4, (uint32_t) len);
    ngx_cdp_le32(t->b + 8, ngx_cdp_crc32c(0, body, len));
    t->len = 12 + len;

    if (len) {
        memcpy(t->b + 12, body, len);
    }
}


/* the 20 fixed bytes of a 'B' body, reserved bytes given */

static size_t
ngx_cdp_batch_fixed(u_char *b, u_char r1, u_char r2, u_char r3,
    uint32_t nevents, uint64_t seq, uint32_t keys_len)
{
    b[0] = 'B';
    b[1] = r1;
    b[2] = r2;
    b[3] = r3;
    ngx_cdp_le32(b + 4, nevents);
    ngx_cdp_le64(b + 8, seq);
    ngx_cdp_le32(b + 16, keys_len);

    return 20;
}


/* a 'B' frame with these keys and args, built by hand */

static void
ngx_cdp_batch_by_hand(ngx_cdp_tframe_t *t, uint32_t nevents,
    const char *keys, const char *args)
{
    size_t  n, klen, alen;
    u_char  body[FRAME_MAX];

    klen = strlen(keys);
    alen = strlen(args);

    n = ngx_cdp_batch_fixed(body, 0, 0, 0, nevents, 7, (uint32_t) klen);
    memcpy(body + n, keys, klen);
    memcpy(body + n + klen, args, alen);

    ngx_cdp_wrap(t, body, n + klen + alen);
}


/* the frame on an exact-size copy */

static int
ngx_cdp_next(const u_char *p, size_t len, uint32_t nargs, ngx_cdp_frame_t *f)
{
    int      rc;
    u_char  *b;

    b = ngx_cdp_dup(p, len);
    rc = ngx_cdp_frame_next(b, len, nargs, f);
    free(b);

    /* f's strings pointed into b */
    f->writer.data = NULL;
    f->stream.data = NULL;
    f->once.data = NULL;
    f->argv1.data = NULL;
    f->keys.data = NULL;
    f->args.data = NULL;

    return rc;
}


static int
ngx_cdp_printable(const char *s)
{
    size_t  i;

    if (s == NULL || s[0] == '\0') {
        return 0;
    }

    for (i = 0; s[i]; i++) {
        if (s[i] < 0x20 || s[i] > 0x7e || i > 80) {
            return 0;
        }
    }

    return 1;
}


/* refused, with a short printable reason */

static int
ngx_cdp_bad(const u_char *p, size_t len, uint32_t nargs)
{
    int              rc;
    ngx_cdp_frame_t  f;

    rc = ngx_cdp_next(p, len, nargs, &f);

    if (rc != NGX_CDP_FRAME_BAD || !ngx_cdp_printable(f.error)) {
        printf("  not BAD: rc %d, error %s\n", rc,
               f.error ? f.error : "(null)");
        return 0;
    }

    return 1;
}


static int
ngx_cdp_more(const u_char *p, size_t len, uint32_t nargs)
{
    int              rc;
    ngx_cdp_frame_t  f;

    rc = ngx_cdp_next(p, len, nargs, &f);

    if (rc != NGX_CDP_FRAME_MORE || f.error != NULL) {
        printf("  not MORE at %zu: rc %d, error %s\n", len, rc,
               f.error ? f.error : "(null)");
        return 0;
    }

    return 1;
}


static int
ngx_cdp_scan(const u_char *p, size_t len, uint64_t n)
{
    int      rc;
    u_char  *b;

    b = ngx_cdp_dup(p, len);
    rc = ngx_cdp_resp_scan_bulks(b, len, n);
    free(b);

    return rc;
}

#define BAD(lit, nargs)     CHECK(ngx_cdp_bad(L(lit), nargs))
#define MORE(lit, nargs)    CHECK(ngx_cdp_more(L(lit), nargs))
#define SCANS(lit, n)       CHECK(ngx_cdp_scan(L(lit), n) == 0)
#define REFUSED(lit, n)     CHECK(ngx_cdp_scan(L(lit), n) == -1)


/* the sample batch: 2 events, 3 args each */

static const char  sample_keys[] = "$2\r\nk1\r\n$5\r\nkey:2\r\n";
static const char  sample_args[] =
    "$1\r\na\r\n$0\r\n\r\n$4\r\n\r\n\0\xff\r\n"
    "$11\r\n{\"e\":\"x\r\n\"}\r\n$1\r\n$\r\n$3\r\n*1\r\r\n";

#define SAMPLE_NEVENTS  2
#define SAMPLE_NARGS    3
#define SAMPLE_SEQ      0x0102030405060708ULL


/* the sample batch through ngx_cdp_frame_batch(); returns its size */

static size_t
ngx_cdp_sample_batch(u_char *out, uint64_t seq)
{
    u_char  *p;
    size_t   klen, alen;

    klen = sizeof(sample_keys) - 1;
    alen = sizeof(sample_args) - 1;

    p = out + NGX_CDP_FRAME_HEAD + NGX_CDP_FRAME_BATCH_FIXED;
    memcpy(p, sample_keys, klen);
    memcpy(p + klen, sample_args, alen);

    ngx_cdp_frame_batch(out, SAMPLE_NEVENTS, seq, p, klen, p + klen, alen);

    return NGX_CDP_FRAME_HEAD + NGX_CDP_FRAME_BATCH_FIXED + klen + alen;
}


static const ngx_cdp_frame_str_t  sample_writer = {
    (const u_char *) "edge-1:4242", 11
};
static const ngx_cdp_frame_str_t  sample_stream = {
    (const u_char *) "cdp:events", 10
};
static const ngx_cdp_frame_str_t  sample_once = {
    (const u_char *) "cdp:batch:", 10
};
static const ngx_cdp_frame_str_t  sample_argv1 = {
    (const u_char *) "v1\0x", 4
};


static size_t
ngx_cdp_sample_header(u_char *out)
{
    u_char  *end;

    end = ngx_cdp_frame_header(out, SAMPLE_NARGS, &sample_writer,
                               &sample_stream, &sample_once, &sample_argv1);

    return (size_t) (end - out);
}


static int
ngx_cdp_str_eq(ngx_cdp_frame_str_t s, const ngx_cdp_frame_str_t *want)
{
    return s.len == want->len && memcmp(s.data, want->data, s.len) == 0;
}


/* RESP encoding */

static void
test_bulk(void)
{
    u_char  *b, *end, *src;
    size_t   size;

    size = ngx_cdp_resp_bulk_size(3);
    b = ngx_cdp_buf(size);
    end = ngx_cdp_resp_bulk(b, (const u_char *) "abc", 3);
    CHECK(end == b + 9 && memcmp(b, "$3\r\nabc\r\n", 9) == 0);
    CHECK(ngx_cdp_canary_ok(b, size));
    free(b);

    /* empty, without a buffer */
    size = ngx_cdp_resp_bulk_size(0);
    b = ngx_cdp_buf(size);
    end = ngx_cdp_resp_bulk(b, NULL, 0);
    CHECK(end == b + 6 && memcmp(b, "$0\r\n\r\n", 6) == 0);
    CHECK(ngx_cdp_canary_ok(b, size));
    free(b);

    /* binary data goes as it is */
    size = ngx_cdp_resp_bulk_size(6);
    b = ngx_cdp_buf(size);
    end = ngx_cdp_resp_bulk(b, (const u_char *) "a\r\n\0$\xff", 6);
    CHECK(end == b + 12 && memcmp(b, "$6\r\na\r\n\0$\xff\r\n", 12) == 0);
    CHECK(ngx_cdp_canary_ok(b, size));
    free(b);

    /* multi-digit lengths, powers of ten among them */
    src = ngx_cdp_buf(12345);
    memset(src, 'x', 12345);

    size = ngx_cdp_resp_bulk_size(12345);
    b = ngx_cdp_buf(size);
    end = ngx_cdp_resp_bulk(b, src, 12345);
    CHECK(end == b + 1 + 5 + 2 + 12345 + 2);
    CHECK(memcmp(b, "$12345\r\n", 8) == 0
          && memcmp(b + 8, src, 12345) == 0
          && memcmp(end - 2, "\r\n", 2) == 0);
    CHECK(ngx_cdp_canary_ok(b, size));
    CHECK(ngx_cdp_resp_scan_bulks(b, (size_t) (end - b), 1) == 0);
    free(b);

    size = ngx_cdp_resp_bulk_size(10) + ngx_cdp_resp_bulk_size(100)
           + ngx_cdp_resp_bulk_size(9);
    b = ngx_cdp_buf(size);
    end = ngx_cdp_resp_bulk(b, src, 10);
    CHECK(end == b + 17 && memcmp(b, "$10\r\nxxxxxxxxxx\r\n", 17) == 0);
    end = ngx_cdp_resp_bulk(end, src, 100);
    CHECK(end == b + 17 + 108 && memcmp(b + 17, "$100\r\nx", 7) == 0);
    end = ngx_cdp_resp_bulk(end, src, 9);
    CHECK(end == b + 17 + 108 + 15
          && memcmp(b + 125, "$9\r\nxxxxxxxxx\r\n", 15) == 0);
    CHECK(ngx_cdp_canary_ok(b, size));

    /* what it writes, the scanner takes */
    CHECK(ngx_cdp_resp_scan_bulks(b, (size_t) (end - b), 3) == 0);
    free(b);
    free(src);
}


static void
test_array(void)
{
    u_char  *b, *end;

    b = ngx_cdp_buf(NGX_CDP_RESP_ARRAY_SIZE);

    end = ngx_cdp_resp_array(b, 0);
    CHECK(end == b + 4 && memcmp(b, "*0\r\n", 4) == 0);

    end = ngx_cdp_resp_array(b, 7);
    CHECK(end == b + 4 && memcmp(b, "*7\r\n", 4) == 0);

    end = ngx_cdp_resp_array(b, 1000000007);
    CHECK(end == b + 13 && memcmp(b, "*1000000007\r\n", 13) == 0);

    /* the longest fills NGX_CDP_RESP_ARRAY_SIZE exactly */
    end = ngx_cdp_resp_array(b, UINT64_MAX);
    CHECK(end == b + NGX_CDP_RESP_ARRAY_SIZE
          && memcmp(b, "*18446744073709551615\r\n", 23) == 0);
    CHECK(ngx_cdp_canary_ok(b, NGX_CDP_RESP_ARRAY_SIZE));

    free(b);
}


/* a whole command, as the worker builds it */

static void
test_command(void)
{
    u_char        *b, *p;
    size_t         size;
    static char    want[] = "*5\r\n$5\r\nFCALL\r\n$10\r\ncdp_ingest\r\n"
                            "$1\r\n1\r\n$10\r\ncdp:events\r\n$2\r\nv1\r\n";

    size = NGX_CDP_RESP_ARRAY_SIZE + ngx_cdp_resp_bulk_size(5)
           + 2 * ngx_cdp_resp_bulk_size(10) + ngx_cdp_resp_bulk_size(1)
           + ngx_cdp_resp_bulk_size(2);
    b = ngx_cdp_buf(size);

    p = ngx_cdp_resp_array(b, 5);
    p = ngx_cdp_resp_bulk(p, (const u_char *) "FCALL", 5);
    p = ngx_cdp_resp_bulk(p, (const u_char *) "cdp_ingest", 10);
    p = ngx_cdp_resp_bulk(p, (const u_char *) "1", 1);
    p = ngx_cdp_resp_bulk(p, (const u_char *) "cdp:events", 10);
    p = ngx_cdp_resp_bulk(p, (const u_char *) "v1", 2);

    CHECK((size_t) (p - b) == sizeof(want) - 1
          && memcmp(b, want, sizeof(want) - 1) == 0);
    CHECK(ngx_cdp_canary_ok(b, size));

    /* after the array head, exactly 5 bulk strings */
    CHECK(ngx_cdp_resp_scan_bulks(b + 4, (size_t) (p - b) - 4, 5) == 0);

    free(b);
}


/* the strict scanner */

static void
test_scan_accepts(void)
{
    SCANS("", 0);
    SCANS("$0\r\n\r\n", 1);
    SCANS("$3\r\nabc\r\n", 1);
    SCANS("$3\r\nabc\r\n$0\r\n\r\n", 2);
    SCANS("$10\r\n0123456789\r\n", 1);
    SCANS("$5\r\na\r\nbc\r\n", 1);
    SCANS("$6\r\n$0\r\n\r\n\r\n", 1);
    SCANS("$2\r\n\r\n\r\n$1\r\n\0\r\n$1\r\n\xff\r\n", 3);

    CHECK(ngx_cdp_resp_scan_bulks(NULL, 0, 0) == 0);
    CHECK(ngx_cdp_resp_scan_bulks(NULL, 0, 1) == -1);
    CHECK(ngx_cdp_scan((const u_char *) sample_keys, sizeof(sample_keys) - 1,
                       SAMPLE_NEVENTS) == 0);
    CHECK(ngx_cdp_scan((const u_char *) sample_args, sizeof(sample_args) - 1,
                       SAMPLE_NEVENTS * SAMPLE_NARGS) == 0);
}


static void
test_scan_refuses(void)
{
    size_t  i, len;

    /* the count */
    REFUSED("", 1);
    REFUSED("$0\r\n\r\n", 0);
    REFUSED("$0\r\n\r\n", 2);
    REFUSED("$3\r\nabc\r\n$0\r\n\r\n", 1);
    REFUSED("$3\r\nabc\r\n$0\r\n\r\n", 3);
    REFUSED("$0\r\n\r\n", UINT64_MAX);
    REFUSED("$0\r\n\r\n", (uint64_t) 1 << 32);

    /* the length: digits only, no sign, no leading zero */
    REFUSED("$03\r\nabc\r\n", 1);
    REFUSED("$00\r\n\r\n", 1);
    REFUSED("$000000000000000000000000000001\r\na\r\n", 1);
    REFUSED("$-1\r\n", 1);
    REFUSED("$-0\r\n\r\n", 1);
    REFUSED("$+3\r\nabc\r\n", 1);
    REFUSED("$ 3\r\nabc\r\n", 1);
    REFUSED("$3 \r\nabc\r\n", 1);
    REFUSED("$\r\n\r\n", 1);
    REFUSED("$\r\n", 1);
    REFUSED("$", 1);
    REFUSED("$3", 1);
    REFUSED("$3\r", 1);
    REFUSED("$0x3\r\nabc\r\n", 1);
    REFUSED("$3a\r\nabc\r\n", 1);

    /* too long, and numbers past 64 bits */
    REFUSED("$536870913\r\n", 1);
    REFUSED("$536870912\r\nabc\r\n", 1);
    REFUSED("$18446744073709551616\r\n\r\n", 1);
    REFUSED("$18446744073709551621\r\nabcde\r\n", 1);
    REFUSED("$99999999999999999999999999999999999999999\r\nab\r\n", 1);

    /* the separators */
    REFUSED("$3\nabc\r\n", 1);
    REFUSED("$3\rabc\r\n", 1);
    REFUSED("$3\n\rabc\r\n", 1);
    REFUSED("$3\r\nabc\n", 1);
    REFUSED("$3\r\nabc\r", 1);
    REFUSED("$3\r\nabc\n\r", 1);
    REFUSED("$3\r\nabc", 1);
    REFUSED("$3\r\nabcde", 1);

    /* the data: short, long */
    REFUSED("$3\r\nab", 1);
    REFUSED("$3\r\nab\r\n", 1);
    REFUSED("$3\r\nabcd\r\n", 1);
    REFUSED("$3\r\nabc\r\n$3\r\nab\r\n", 2);

    /* trailing bytes */
    REFUSED("$3\r\nabc\r\nX", 1);
    REFUSED("$3\r\nabc\r\n\r\n", 1);
    REFUSED("$3\r\nabc\r\n\0", 1);
    REFUSED("$3\r\nabc\r\n$", 1);

    /* other RESP types are not arguments */
    REFUSED("*1\r\n$3\r\nabc\r\n", 1);
    REFUSED("+OK\r\n", 1);
    REFUSED(":1\r\n", 1);
    REFUSED("-ERR x\r\n", 1);
    REFUSED("$-1\r\n", 1);
    REFUSED("abc", 1);

    /* every cut of a valid run is refused */
    len = sizeof(sample_args) - 1;

    for (i = 0; i < len; i++) {
        if (ngx_cdp_scan((const u_char *) sample_args, i,
                         SAMPLE_NEVENTS * SAMPLE_NARGS)
            != -1)
        {
            printf("  sample args cut at %zu scan\n", i);
            CHECK(0);
        }
    }

    CHECK(1);
}


/* CRC-32C */

static void
test_crc32c(void)
{
    size_t    i, j;
    u_char    b[64];
    uint32_t  crc, whole;

    CHECK(ngx_cdp_crc32c(0, (const u_char *) "123456789", 9) == 0xe3069283);
    CHECK(ngx_cdp_crc32c(0, NULL, 0) == 0);
    CHECK(ngx_cdp_crc32c(0x12345678, NULL, 0) == 0x12345678);
    CHECK(ngx_cdp_crc32c(0, (const u_char *) "a", 1) == 0xc1d04330);

    /* RFC 3720, B.4 */
    memset(b, 0, 32);
    CHECK(ngx_cdp_crc32c(0, b, 32) == 0x8a9136aa);
    memset(b, 0xff, 32);
    CHECK(ngx_cdp_crc32c(0, b, 32) == 0x62a8ab43);

    for (i = 0; i < 32; i++) {
        b[i] = (u_char) i;
    }

    CHECK(ngx_cdp_crc32c(0, b, 32) == 0x46dd794e);

    for (i = 0; i < 32; i++) {
        b[i] = (u_char) (31 - i);
    }

    CHECK(ngx_cdp_crc32c(0, b, 32) == 0x113fdb5c);

    /* chaining: any split, in two and in three */
    for (i = 0; i < sizeof(b); i++) {
        b[i] = (u_char) (i * 37 + 11);
    }

    whole = ngx_cdp_crc32c(0, b, sizeof(b));

    for (i = 0; i <= sizeof(b); i++) {
        crc = ngx_cdp_crc32c(ngx_cdp_crc32c(0, b, i), b + i, sizeof(b) - i);
        CHECK(crc == whole);
    }

    for (i = 0; i <= sizeof(b); i += 7) {
        for (j = i; j <= sizeof(b); j += 5) {
            crc = ngx_cdp_crc32c(0, b, i);
            crc = ngx_cdp_crc32c(crc, b + i, j - i);
            crc = ngx_cdp_crc32c(crc, b + j, sizeof(b) - j);
            CHECK(crc == whole);
        }
    }

    CHECK(ngx_cdp_crc32c(ngx_cdp_crc32c(0, (const u_char *) "1234", 4),
                         (const u_char *) "56789", 5)
          == 0xe3069283);
}


/* frames */

static void
test_header_frame(void)
{
    u_char                *b, *end;
    size_t                 size;
    ngx_cdp_frame_t        f;
    ngx_cdp_frame_str_t    e;
    static const u_char    small[] =
        "H\x01\0\0\x02\0\0\0"
        "\x01\0\0\0w" "\x01\0\0\0s" "\x01\0\0\0o" "\x01\0\0\0a";
    ngx_cdp_frame_str_t    w = { (const u_char *) "w", 1 };
    ngx_cdp_frame_str_t    s = { (const u_char *) "s", 1 };
    ngx_cdp_frame_str_t    o = { (const u_char *) "o", 1 };
    ngx_cdp_frame_str_t    a = { (const u_char *) "a", 1 };

    /* byte for byte */
    size = ngx_cdp_frame_header_size(&w, &s, &o, &a);
    CHECK(size == 12 + sizeof(small) - 1);

    b = ngx_cdp_buf(size);
    end = ngx_cdp_frame_header(b, 2, &w, &s, &o, &a);
    CHECK(end == b + size);
    CHECK(ngx_cdp_canary_ok(b, size));
    CHECK(memcmp(b, "CDPF\x1c\0\0\0", 8) == 0);
    CHECK(ngx_cdp_rd32(b + 8) == ngx_cdp_crc32c(0, small, sizeof(small) - 1));
    CHECK(memcmp(b + 12, small, sizeof(small) - 1) == 0);

    CHECK(ngx_cdp_frame_next(b, size, 0, &f) == NGX_CDP_FRAME_OK);
    CHECK(f.type == NGX_CDP_FRAME_HEADER && f.size == size
          && f.version == 1 && f.nargs == 2 && f.error == NULL);
    CHECK(f.writer.data == b + 24 && f.writer.len == 1);
    CHECK(f.argv1.data == b + 39 && f.argv1.len == 1);
    free(b);

    /* the sample, read back; nargs does not matter to a header */
    size = ngx_cdp_frame_header_size(&sample_writer, &sample_stream,
                                     &sample_once, &sample_argv1);
    b = ngx_cdp_buf(size);
    CHECK(ngx_cdp_sample_header(b) == size);
    CHECK(ngx_cdp_canary_ok(b, size));

    CHECK(ngx_cdp_frame_next(b, size, 99, &f) == NGX_CDP_FRAME_OK);
    CHECK(f.type == 'H' && f.size == size && f.version == 1
          && f.nargs == SAMPLE_NARGS);
    CHECK(ngx_cdp_str_eq(f.writer, &sample_writer));
    CHECK(ngx_cdp_str_eq(f.stream, &sample_stream));
    CHECK(ngx_cdp_str_eq(f.once, &sample_once));
    CHECK(ngx_cdp_str_eq(f.argv1, &sample_argv1));
    CHECK(f.writer.data >= b && f.argv1.data + f.argv1.len == b + size);
    CHECK(f.nevents == 0 && f.keys.data == NULL && f.args.data == NULL);
    free(b);

    /* all strings empty */
    e.data = NULL;
    e.len = 0;
    size = ngx_cdp_frame_header_size(&e, &e, &e, &e);
    CHECK(size == 12 + 8 + 16);

    b = ngx_cdp_buf(size);
    end = ngx_cdp_frame_header(b, UINT32_MAX, &e, &e, &e, &e);
    CHECK(end == b + size && ngx_cdp_canary_ok(b, size));
    CHECK(ngx_cdp_frame_next(b, size, 0, &f) == NGX_CDP_FRAME_OK);
    CHECK(f.size == size && f.nargs == UINT32_MAX && f.writer.len == 0
          && f.stream.len == 0 && f.once.len == 0 && f.argv1.len == 0);
    free(b);
}


static void
test_batch_frame(void)
{
    u_char           *b;
    size_t            size, klen, alen;
    uint32_t          nargs;
    ngx_cdp_frame_t   f;
    u_char            head[NGX_CDP_FRAME_HEAD + NGX_CDP_FRAME_BATCH_FIXED
                           + CANARY_LEN];

    klen = sizeof(sample_keys) - 1;
    alen = sizeof(sample_args) - 1;

    /* the head alone: exactly 32 bytes */
    memset(head, FILL, sizeof(head));
    memcpy(head + 32, CANARY, CANARY_LEN);
    ngx_cdp_frame_batch(head, SAMPLE_NEVENTS, SAMPLE_SEQ,
                        (const u_char *) sample_keys, klen,
                        (const u_char *) sample_args, alen);
    CHECK(ngx_cdp_canary_ok(head, 32));
    CHECK(memcmp(head, "CDPF", 4) == 0);
    CHECK(ngx_cdp_rd32(head + 4) == 20 + klen + alen);
    CHECK(memcmp(head + 12, "B\0\0\0\x02\0\0\0"
                 "\x08\x07\x06\x05\x04\x03\x02\x01", 16) == 0);
    CHECK(ngx_cdp_rd32(head + 28) == klen);

    /* its CRC is that of the body in one piece */
    b = ngx_cdp_buf(32 + klen + alen);
    size = ngx_cdp_sample_batch(b, SAMPLE_SEQ);
    CHECK(size == 32 + klen + alen);
    CHECK(ngx_cdp_canary_ok(b, size));
    CHECK(memcmp(b, head, 32) == 0);
    CHECK(ngx_cdp_rd32(b + 8) == ngx_cdp_crc32c(0, b + 12, size - 12));

    CHECK(ngx_cdp_frame_next(b, size, SAMPLE_NARGS, &f) == NGX_CDP_FRAME_OK);
    CHECK(f.type == NGX_CDP_FRAME_BATCH && f.size == size && f.error == NULL);
    CHECK(f.nevents == SAMPLE_NEVENTS && f.seq == SAMPLE_SEQ);
    CHECK(f.keys.data == b + 32 && f.keys.len == klen);
    CHECK(f.args.data == b + 32 + klen && f.args.len == alen);
    CHECK(f.writer.data == NULL && f.nargs == 0);

    /* the same bytes are not a batch of another width */
    for (nargs = 0; nargs < 8; nargs++) {
        if (nargs != SAMPLE_NARGS) {
            CHECK(ngx_cdp_bad(b, size, nargs));
        }
    }

    CHECK(ngx_cdp_bad(b, size, UINT32_MAX));
    free(b);

    /* no args at all is a batch of width 0 */
    b = ngx_cdp_buf(32 + klen);
    ngx_cdp_frame_batch(b, SAMPLE_NEVENTS, 0, (const u_char *) sample_keys,
                        klen, NULL, 0);
    memcpy(b + 32, sample_keys, klen);
    CHECK(ngx_cdp_frame_next(b, 32 + klen, 0, &f) == NGX_CDP_FRAME_OK);
    CHECK(f.size == 32 + klen && f.seq == 0 && f.args.len == 0);
    CHECK(ngx_cdp_bad(b, 32 + klen, 1));
    free(b);

    /* the largest sequence number */
    b = ngx_cdp_buf(32 + klen + alen);
    size = ngx_cdp_sample_batch(b, UINT64_MAX);
    CHECK(ngx_cdp_frame_next(b, size, SAMPLE_NARGS, &f) == NGX_CDP_FRAME_OK);
    CHECK(f.seq == UINT64_MAX);
    free(b);
}


/* a torn tail is MORE, whatever the cut */

static void
test_truncated(void)
{
    size_t  i, size;
    u_char  b[FRAME_MAX];

    size = ngx_cdp_sample_batch(b, SAMPLE_SEQ);

    for (i = 0; i < size; i++) {
        CHECK(ngx_cdp_more(b, i, SAMPLE_NARGS));
    }

    size = ngx_cdp_sample_header(b);

    for (i = 0; i < size; i++) {
        CHECK(ngx_cdp_more(b, i, 0));
    }

    MORE("", 1);
    MORE("C", 1);
    MORE("CD", 1);
    MORE("CDP", 1);
    MORE("CDPF", 1);
    MORE("CDPF\xff\xff\xff\x0f\0\0\0", 1);

    /* a head whose length is fine, short of its body */
    MORE("CDPF\x00\x00\x00\x10\0\0\0\0", 1);
    MORE("CDPF\x01\0\0\0\0\0\0\0", 1);
}


/*
 * Any one byte changed, the frame is refused: by its magic, its checksum,
 * or its length, unless a changed length now claims more bytes than
 * there are, which is a torn tail (MORE).
 */

static int
ngx_cdp_flip_ok(const u_char *frame, size_t size, size_t avail,
    uint32_t nargs, size_t i, u_char mask)
{
    int              rc, want;
    u_char          *b;
    uint32_t         len;
    ngx_cdp_frame_t  f;

    b = ngx_cdp_buf(avail);
    memset(b, 0, avail);
    memcpy(b, frame, size);
    b[i] ^= mask;

    len = ngx_cdp_rd32(b + 4);
    want = (len <= NGX_CDP_FRAME_MAX && len > avail - 12)
           ? NGX_CDP_FRAME_MORE : NGX_CDP_FRAME_BAD;

    rc = ngx_cdp_frame_next(b, avail, nargs, &f);
    free(b);

    if (rc != want
        || (rc == NGX_CDP_FRAME_BAD && !ngx_cdp_printable(f.error))
        || (rc == NGX_CDP_FRAME_MORE && (i < 4 || i > 7)))
    {
        printf("  byte %zu ^ 0x%02x of %zu (%zu there): rc %d, want %d\n",
               i, mask, size, avail, rc, want);
        return 0;
    }

    return 1;
}


static void
test_flips(void)
{
    int            ok;
    size_t         i, k, size;
    u_char         frame[FRAME_MAX];
    static u_char  masks[] = { 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40,
                               0x80, 0xff };

    /* the frame alone; then with room for a len grown up to 2^17 */

    size = ngx_cdp_sample_batch(frame, SAMPLE_SEQ);
    ok = 1;

    for (i = 0; i < size; i++) {
        for (k = 0; k < sizeof(masks); k++) {
            ok &= ngx_cdp_flip_ok(frame, size, size, SAMPLE_NARGS, i,
                                  masks[k]);
            ok &= ngx_cdp_flip_ok(frame, size, size + PAD, SAMPLE_NARGS, i,
                                  masks[k]);
        }
    }

    CHECK(ok);

    size = ngx_cdp_sample_header(frame);
    ok = 1;

    for (i = 0; i < size; i++) {
        for (k = 0; k < sizeof(masks); k++) {
            ok &= ngx_cdp_flip_ok(frame, size, size, 0, i, masks[k]);
            ok &= ngx_cdp_flip_ok(frame, size, size + PAD, 0, i, masks[k]);
        }
    }

    CHECK(ok);
}


/* frames back to back, as in a spool file */

static void
test_sequence(void)
{
    int              rc;
    u_char          *b, *p;
    size_t           hsize, bsize, total, left;
    ngx_cdp_frame_t  f;
    u_char           tmp[FRAME_MAX];

    hsize = ngx_cdp_sample_header(tmp);
    bsize = ngx_cdp_sample_batch(tmp, 1);

    /* header, batch 1, batch 2, half of batch 3 */
    total = hsize + 2 * bsize + bsize / 2;
    b = ngx_cdp_buf(total);

    p = b + ngx_cdp_sample_header(b);
    p += ngx_cdp_sample_batch(p, 1);
    p += ngx_cdp_sample_batch(p, 2);
    ngx_cdp_sample_batch(tmp, 3);
    memcpy(p, tmp, bsize / 2);
    CHECK(ngx_cdp_canary_ok(b, total));

    p = b;
    left = total;

    rc = ngx_cdp_frame_next(p, left, 0, &f);
    CHECK(rc == NGX_CDP_FRAME_OK && f.type == 'H' && f.size == hsize);
    CHECK(f.nargs == SAMPLE_NARGS);
    p += f.size;
    left -= f.size;

    rc = ngx_cdp_frame_next(p, left, SAMPLE_NARGS, &f);
    CHECK(rc == NGX_CDP_FRAME_OK && f.type == 'B' && f.size == bsize
          && f.seq == 1);
    CHECK(f.args.data + f.args.len == p + bsize);
    p += f.size;
    left -= f.size;

    rc = ngx_cdp_frame_next(p, left, SAMPLE_NARGS, &f);
    CHECK(rc == NGX_CDP_FRAME_OK && f.type == 'B' && f.size == bsize
          && f.seq == 2);
    p += f.size;
    left -= f.size;

    CHECK(left == bsize / 2);
    rc = ngx_cdp_frame_next(p, left, SAMPLE_NARGS, &f);
    CHECK(rc == NGX_CDP_FRAME_MORE);

    /* what follows a frame is not read: its own size only */
    p = b + hsize;
    rc = ngx_cdp_frame_next(p, bsize, SAMPLE_NARGS, &f);
    CHECK(rc == NGX_CDP_FRAME_OK && f.size == bsize);

    /* garbage after a frame is the next frame's problem */
    memcpy(b + hsize + bsize, "XXXX", 4);
    rc = ngx_cdp_frame_next(b + hsize, total - hsize, SAMPLE_NARGS, &f);
    CHECK(rc == NGX_CDP_FRAME_OK && f.size == bsize);
    CHECK(ngx_cdp_bad(b + hsize + bsize, total - hsize - bsize,
                      SAMPLE_NARGS));

    free(b);
}


/* heads, checksums and types */

static void
test_bad_head(void)
{
    u_char            h[12];
    ngx_cdp_frame_t   f;
    ngx_cdp_tframe_t  t;

    BAD("X", 1);
    BAD("CX", 1);
    BAD("CDPX", 1);
    BAD("cdpf", 1);
    BAD("CDPG\x01\0\0\0\0\0\0\0B", 1);
    BAD("\0\0\0\0\0\0\0\0\0\0\0\0", 1);

    /* too long, decided from the head alone */
    memcpy(h, "CDPF", 4);
    ngx_cdp_le32(h + 4, NGX_CDP_FRAME_MAX + 1);
    ngx_cdp_le32(h + 8, 0);
    CHECK(ngx_cdp_bad(h, 12, 1));
    ngx_cdp_le32(h + 4, UINT32_MAX);
    CHECK(ngx_cdp_bad(h, 12, 1));
    ngx_cdp_le32(h + 4, NGX_CDP_FRAME_MAX);
    CHECK(ngx_cdp_more(h, 12, 1));

    /* an empty body has a valid CRC (0) and no type */
    ngx_cdp_wrap(&t, NULL, 0);
    CHECK(ngx_cdp_rd32(t.b + 8) == 0);
    CHECK(ngx_cdp_bad(t.b, t.len, 1));

    /* unknown types */
    ngx_cdp_wrap(&t, (const u_char *) "X", 1);
    CHECK(ngx_cdp_bad(t.b, t.len, 1));
    ngx_cdp_wrap(&t, (const u_char *) "h\x01\0\0\0\0\0\0", 8);
    CHECK(ngx_cdp_bad(t.b, t.len, 1));
    ngx_cdp_wrap(&t, (const u_char *) "b", 1);
    CHECK(ngx_cdp_bad(t.b, t.len, 1));

    /* a wrong checksum */
    ngx_cdp_batch_by_hand(&t, 1, "$1\r\nk\r\n", "$1\r\na\r\n");
    CHECK(ngx_cdp_frame_next(t.b, t.len, 1, &f) == NGX_CDP_FRAME_OK);
    t.b[8] ^= 1;
    CHECK(ngx_cdp_bad(t.b, t.len, 1));
}


static void
test_bad_header(void)
{
    ngx_cdp_frame_t   f;
    ngx_cdp_tframe_t  t;

#define HDR(lit)                                                              \
    ngx_cdp_wrap(&t, (const u_char *) (lit), sizeof(lit) - 1)

    /* the good one, then each of its faults */
    HDR("H\x01\0\0\x03\0\0\0" "\x01\0\0\0w" "\0\0\0\0" "\0\0\0\0"
        "\x02\0\0\0v1");
    CHECK(ngx_cdp_frame_next(t.b, t.len, 0, &f) == NGX_CDP_FRAME_OK);
    CHECK(f.nargs == 3 && f.writer.len == 1 && f.argv1.len == 2);

    HDR("H\x00\0\0\x03\0\0\0" "\x01\0\0\0w" "\0\0\0\0" "\0\0\0\0"
        "\x02\0\0\0v1");
    CHECK(ngx_cdp_bad(t.b, t.len, 0));
    HDR("H\x02\0\0\x03\0\0\0" "\x01\0\0\0w" "\0\0\0\0" "\0\0\0\0"
        "\x02\0\0\0v1");
    CHECK(ngx_cdp_bad(t.b, t.len, 0));
    HDR("H\x01\x01\0\x03\0\0\0" "\x01\0\0\0w" "\0\0\0\0" "\0\0\0\0"
        "\x02\0\0\0v1");
    CHECK(ngx_cdp_bad(t.b, t.len, 0));
    HDR("H\x01\0\x80\x03\0\0\0" "\x01\0\0\0w" "\0\0\0\0" "\0\0\0\0"
        "\x02\0\0\0v1");
    CHECK(ngx_cdp_bad(t.b, t.len, 0));

    /* a trailing byte; a string missing; one cut; one too long */
    HDR("H\x01\0\0\x03\0\0\0" "\x01\0\0\0w" "\0\0\0\0" "\0\0\0\0"
        "\x02\0\0\0v1" "\0");
    CHECK(ngx_cdp_bad(t.b, t.len, 0));
    HDR("H\x01\0\0\x03\0\0\0" "\x01\0\0\0w" "\0\0\0\0" "\0\0\0\0");
    CHECK(ngx_cdp_bad(t.b, t.len, 0));
    HDR("H\x01\0\0\x03\0\0\0" "\x01\0\0\0w" "\0\0\0\0" "\0\0\0\0"
        "\x02\0\0");
    CHECK(ngx_cdp_bad(t.b, t.len, 0));
    HDR("H\x01\0\0\x03\0\0\0" "\x01\0\0\0w" "\0\0\0\0" "\0\0\0\0"
        "\x03\0\0\0v1");
    CHECK(ngx_cdp_bad(t.b, t.len, 0));
    HDR("H\x01\0\0\x03\0\0\0" "\xff\xff\xff\xff" "w" "\0\0\0\0" "\0\0\0\0"
        "\x02\0\0\0v1");
    CHECK(ngx_cdp_bad(t.b, t.len, 0));
    HDR("H\x01\0\0\x03\0\0\0" "\x00\0\0\0w" "\0\0\0\0" "\0\0\0\0"
        "\x02\0\0\0v1");
    CHECK(ngx_cdp_bad(t.b, t.len, 0));

    /* shorter than its fixed part */
    HDR("H\x01\0\0\x03\0\0");
    CHECK(ngx_cdp_bad(t.b, t.len, 0));
    HDR("H");
    CHECK(ngx_cdp_bad(t.b, t.len, 0));

#undef HDR
}


static void
test_bad_batch(void)
{
    size_t            n;
    u_char            body[FRAME_MAX];
    ngx_cdp_frame_t   f;
    ngx_cdp_tframe_t  t;

    /* the good one */
    ngx_cdp_batch_by_hand(&t, 2, "$1\r\nk\r\n$2\r\nk2\r\n",
                          "$1\r\na\r\n$0\r\n\r\n$1\r\nb\r\n$1\r\nc\r\n");
    CHECK(ngx_cdp_frame_next(t.b, t.len, 2, &f) == NGX_CDP_FRAME_OK);
    CHECK(f.seq == 7 && f.nevents == 2);

    /* reserved bytes */
    n = ngx_cdp_batch_fixed(body, 1, 0, 0, 1, 0, 7);
    memcpy(body + n, "$1\r\nk\r\n$1\r\na\r\n", 14);
    ngx_cdp_wrap(&t, body, n + 14);
    CHECK(ngx_cdp_bad(t.b, t.len, 1));
    body[1] = 0;
    body[2] = 0x20;
    ngx_cdp_wrap(&t, body, n + 14);
    CHECK(ngx_cdp_bad(t.b, t.len, 1));
    body[2] = 0;
    body[3] = 0xff;
    ngx_cdp_wrap(&t, body, n + 14);
    CHECK(ngx_cdp_bad(t.b, t.len, 1));
    body[3] = 0;
    ngx_cdp_wrap(&t, body, n + 14);
    CHECK(ngx_cdp_frame_next(t.b, t.len, 1, &f) == NGX_CDP_FRAME_OK);

    /* shorter than its fixed part */
    ngx_cdp_wrap(&t, body, 19);
    CHECK(ngx_cdp_bad(t.b, t.len, 1));
    ngx_cdp_wrap(&t, body, 1);
    CHECK(ngx_cdp_bad(t.b, t.len, 1));

    /* no events, even with nothing else to check */
    ngx_cdp_batch_by_hand(&t, 0, "", "");
    CHECK(ngx_cdp_bad(t.b, t.len, 0));
    CHECK(ngx_cdp_bad(t.b, t.len, 3));

    /* keys_len past the body, or beyond any size */
    n = ngx_cdp_batch_fixed(body, 0, 0, 0, 1, 0, 15);
    memcpy(body + n, "$1\r\nk\r\n$1\r\na\r\n", 14);
    ngx_cdp_wrap(&t, body, n + 14);
    CHECK(ngx_cdp_bad(t.b, t.len, 0));
    ngx_cdp_le32(body + 16, UINT32_MAX);
    ngx_cdp_wrap(&t, body, n + 14);
    CHECK(ngx_cdp_bad(t.b, t.len, 0));

    /* keys_len cutting between keys and args at the wrong place */
    ngx_cdp_le32(body + 16, 8);
    ngx_cdp_wrap(&t, body, n + 14);
    CHECK(ngx_cdp_bad(t.b, t.len, 1));
    ngx_cdp_le32(body + 16, 6);
    ngx_cdp_wrap(&t, body, n + 14);
    CHECK(ngx_cdp_bad(t.b, t.len, 1));

    /* both bulk strings in the keys: a key too many, no args */
    ngx_cdp_le32(body + 16, 14);
    ngx_cdp_wrap(&t, body, n + 14);
    CHECK(ngx_cdp_bad(t.b, t.len, 1));
    ngx_cdp_le32(body + 16, 7);
    ngx_cdp_wrap(&t, body, n + 14);
    CHECK(ngx_cdp_frame_next(t.b, t.len, 1, &f) == NGX_CDP_FRAME_OK);

    /* the keys: fewer, more, not bulk strings */
    ngx_cdp_batch_by_hand(&t, 2, "$1\r\nk\r\n", "$1\r\na\r\n$1\r\nb\r\n");
    CHECK(ngx_cdp_bad(t.b, t.len, 1));
    ngx_cdp_batch_by_hand(&t, 1, "$1\r\nk\r\n$1\r\nk\r\n", "$1\r\na\r\n");
    CHECK(ngx_cdp_bad(t.b, t.len, 1));
    ngx_cdp_batch_by_hand(&t, 1, "*1\r\n$1\r\nk\r\n", "$1\r\na\r\n");
    CHECK(ngx_cdp_bad(t.b, t.len, 1));
    ngx_cdp_batch_by_hand(&t, 1, "$01\r\nk\r\n", "$1\r\na\r\n");
    CHECK(ngx_cdp_bad(t.b, t.len, 1));

    /* the args: fewer, more, malformed, a command smuggled in */
    ngx_cdp_batch_by_hand(&t, 2, "$1\r\nk\r\n$1\r\nl\r\n",
                          "$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n");
    CHECK(ngx_cdp_bad(t.b, t.len, 2));
    CHECK(ngx_cdp_bad(t.b, t.len, 1));
    ngx_cdp_batch_by_hand(&t, 1, "$1\r\nk\r\n", "$1\r\na\r\n$-1\r\n");
    CHECK(ngx_cdp_bad(t.b, t.len, 2));
    ngx_cdp_batch_by_hand(&t, 1, "$1\r\nk\r\n", "$1\r\na\r\n$2\r\nb\r\n");
    CHECK(ngx_cdp_bad(t.b, t.len, 2));
    ngx_cdp_batch_by_hand(&t, 1, "$1\r\nk\r\n",
                          "$1\r\na\r\n*1\r\n$8\r\nFLUSHALL\r\n");
    CHECK(ngx_cdp_bad(t.b, t.len, 1));
    ngx_cdp_batch_by_hand(&t, 1, "$1\r\nk\r\n", "$1\r\na\r\n\r\n");
    CHECK(ngx_cdp_bad(t.b, t.len, 1));

    /* counts whose product is past 32 bits, refused without a scan */
    ngx_cdp_batch_by_hand(&t, UINT32_MAX, "$1\r\nk\r\n", "$1\r\na\r\n");
    CHECK(ngx_cdp_bad(t.b, t.len, UINT32_MAX));
    CHECK(ngx_cdp_bad(t.b, t.len, 0));
    ngx_cdp_batch_by_hand(&t, 1, "$1\r\nk\r\n", "$1\r\na\r\n");
    CHECK(ngx_cdp_bad(t.b, t.len, UINT32_MAX));
    CHECK(ngx_cdp_bad(t.b, t.len, 0x80000001));
}


/* the growable buffer: data kept across growth and compaction */

static void
test_buf(void)
{
    size_t              i;
    ngx_cdp_resp_buf_t  b = { NULL, NULL, NULL, NULL };

    CHECK(ngx_cdp_resp_reserve(&b, 10) == 0);
    CHECK(b.start != NULL && b.pos == b.start && b.last == b.start);
    CHECK((size_t) (b.end - b.start) >= 16384);

    for (i = 0; i < 16000; i++) {
        *b.last++ = (u_char) i;
    }

    /* consumed at the front: room is made by moving the rest down */
    b.pos += 15000;
    CHECK(ngx_cdp_resp_reserve(&b, 10000) == 0);
    CHECK(b.pos == b.start && b.last - b.pos == 1000);
    CHECK(b.pos[0] == (u_char) 15000 && b.pos[999] == (u_char) 15999);

    /* no room: a larger buffer, the data copied */
    CHECK(ngx_cdp_resp_reserve(&b, 100000) == 0);
    CHECK((size_t) (b.end - b.last) >= 100000 && b.last - b.pos == 1000);
    CHECK(b.pos[0] == (u_char) 15000 && b.pos[999] == (u_char) 15999);

    ngx_cdp_resp_free(&b);
    CHECK(b.start == NULL && b.pos == NULL && b.last == NULL);
}


int
main(void)
{
    test_buf();
    test_bulk();
    test_array();
    test_command();
    test_scan_accepts();
    test_scan_refuses();
    test_crc32c();
    test_header_frame();
    test_batch_frame();
    test_truncated();
    test_flips();
    test_sequence();
    test_bad_head();
    test_bad_header();
    test_bad_batch();

    return ngx_cdp_summary();
}
