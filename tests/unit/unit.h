
/*
 * The tiny harness shared by the unit tests: no framework.
 *
 * Every CHECK counts as one test.  Failures are printed as they happen;
 * main() ends with ngx_cdp_summary(), whose line "N passed, N failed" is
 * the binary's last, and whose value is the exit status.  Buffers handed
 * to the code under test are allocated at their exact size, filled with
 * FILL and followed by a canary, so overruns and stray writes show up here
 * and under valgrind.
 */


#ifndef _NGX_CDP_UNIT_H_INCLUDED_
#define _NGX_CDP_UNIT_H_INCLUDED_


#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>


static unsigned  passed, failed;


#define CHECK(cond)                                                           \
    ngx_cdp_check((cond) ? 1 : 0, __FILE__, __LINE__, #cond)

#define CANARY      "\xa5\x5a\xc3\x3c\x96\x69\x0f\xf0"
#define CANARY_LEN  8
#define FILL        0xee

/* string literals with their length, NUL bytes included */
#define L(s)        (const u_char *) (s), sizeof(s) - 1


static inline void
ngx_cdp_check(int ok, const char *file, int line, const char *what)
{
    if (ok) {
        passed++;
        return;
    }

    failed++;
    printf("FAIL %s:%d: %s\n", file, line, what);
}


/* a buffer of len bytes of FILL followed by a canary */

static inline u_char *
ngx_cdp_buf(size_t len)
{
    u_char  *b;

    b = malloc(len + CANARY_LEN);
    if (b == NULL) {
        perror("malloc");
        exit(2);
    }

    memset(b, FILL, len);
    memcpy(b + len, CANARY, CANARY_LEN);

    return b;
}


/* an exact-size copy, followed by a canary */

static inline u_char *
ngx_cdp_dup(const void *src, size_t len)
{
    u_char  *b;

    b = ngx_cdp_buf(len);

    if (len) {
        memcpy(b, src, len);
    }

    return b;
}


static inline int
ngx_cdp_canary_ok(const u_char *b, size_t len)
{
    return memcmp(b + len, CANARY, CANARY_LEN) == 0;
}


/* nothing was written: still FILL, canary intact */

static inline int
ngx_cdp_untouched(const u_char *b, size_t len)
{
    size_t  i;

    for (i = 0; i < len; i++) {
        if (b[i] != FILL) {
            return 0;
        }
    }

    return ngx_cdp_canary_ok(b, len);
}


static inline int
ngx_cdp_summary(void)
{
    printf("%u passed, %u failed\n", passed, failed);

    return failed ? 1 : 0;
}


#endif /* _NGX_CDP_UNIT_H_INCLUDED_ */
