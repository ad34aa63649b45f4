
/*
 * Shared bits of the libFuzzer targets of the pure files.
 */


#ifndef _NGX_CDP_FUZZ_H_INCLUDED_
#define _NGX_CDP_FUZZ_H_INCLUDED_


#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>

#include "ngx_cdp_text.h"


/* abort() makes libFuzzer save the input as a crash artifact */

#define FUZZ_CHECK(cond)                                                      \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__,           \
                    __LINE__, #cond);                                         \
            abort();                                                          \
        }                                                                     \
    } while (0)


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


/* a copy at its exact size, so that AddressSanitizer sees any overread */

static inline u_char *
fuzz_dup(const uint8_t *data, size_t size)
{
    u_char  *p;

    p = malloc(size ? size : 1);
    FUZZ_CHECK(p != NULL);

    if (size) {
        memcpy(p, data, size);
    }

    return p;
}


static inline int
fuzz_within(ngx_cdp_str_t s, const u_char *b, size_t len)
{
    if (s.data == NULL) {
        return 1;
    }

    return s.data >= b && s.len <= len
           && (size_t) (s.data - b) <= len - s.len;
}


static inline int
fuzz_str_eq(ngx_cdp_str_t s, const u_char *p, size_t len)
{
    return s.data != NULL && s.len == len
           && (len == 0 || memcmp(s.data, p, len) == 0);
}


#endif /* _NGX_CDP_FUZZ_H_INCLUDED_ */
