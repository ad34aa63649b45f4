
/*
 * ngx_cdp_agent.c, User-Agent classes and prefetch headers:
 *
 * - ngx_cdp_agent_classify() takes arbitrary bytes as a User-Agent (an
 *   exact-size copy, so that AddressSanitizer sees any overread) and
 *   returns a class in {BROWSER, BOT, MAIL_PROXY}, with a pattern iff the
 *   class is not BROWSER, that pattern occurring ASCII
 *   case-insensitively in the first NGX_CDP_AGENT_SCAN bytes.  Both agree
 *   with the naive reference below, made from the same lists: a mail
 *   pattern anywhere wins, else the bot pattern that begins first, the
 *   longest there, unless it begins inside a browser word.
 * - The same bytes cut at NGX_CDP_AGENT_SCAN, or with their ASCII letters
 *   all lower or all upper case, are classified the same.
 * - ngx_cdp_agent_prefetch() takes the input split at its first two '\n'
 *   as Sec-Purpose, Purpose and X-Moz (a missing part is no header), and
 *   agrees with the reference below, which looks for the tokens the other
 *   way round: at each occurrence, whether token characters surround it.
 */


#include <ctype.h>

#include "fuzz.h"
#include "ngx_cdp_agent.h"


static u_char
fuzz_lower(u_char c)
{
    return (c >= 'A' && c <= 'Z') ? (u_char) (c + ('a' - 'A')) : c;
}


/* the string s at p[i] and before p[len], ASCII case aside */

static int
fuzz_at(const u_char *p, size_t len, size_t i, const char *s)
{
    size_t  j;

    for (j = 0; s[j]; j++) {
        if (i + j >= len || fuzz_lower(p[i + j]) != (u_char) s[j]) {
            return 0;
        }
    }

    return 1;
}


static int
fuzz_in_word(const u_char *p, size_t n, size_t i)
{
    size_t        s, w;
    const char  **word;

    for (word = ngx_cdp_agent_browser_words; *word; word++) {
        w = strlen(*word);

        for (s = (i >= w) ? i - w + 1 : 0; s <= i; s++) {
            if (fuzz_at(p, n, s, *word)) {
                return 1;
            }
        }
    }

    return 0;
}


static int
fuzz_classify(const u_char *p, size_t len, const char **pattern)
{
    u_char        c;
    size_t        i, n, best;
    const char  **q;

    *pattern = NULL;

    if (len == 0) {
        *pattern = "";
        return NGX_CDP_AGENT_BOT;
    }

    n = len < NGX_CDP_AGENT_SCAN ? len : NGX_CDP_AGENT_SCAN;

    for (i = 0; i < n; i++) {
        for (q = ngx_cdp_agent_mail_patterns; *q; q++) {
            if (fuzz_at(p, n, i, *q)) {
                *pattern = *q;
                return NGX_CDP_AGENT_MAIL_PROXY;
            }
        }
    }

    for (i = 0; i < n; i++) {
        best = 0;
        c = fuzz_lower(p[i]);

        for (q = ngx_cdp_agent_bot_patterns; *q; q++) {
            /* the first byte here only makes the reference faster */
            if ((u_char) (*q)[0] == c && fuzz_at(p, n, i, *q)
                && strlen(*q) > best)
            {
                *pattern = *q;
                best = strlen(*q);
            }
        }

        if (*pattern == NULL) {
            continue;
        }

        if (!fuzz_in_word(p, n, i)) {
            return NGX_CDP_AGENT_BOT;
        }

        *pattern = NULL;
    }

    return NGX_CDP_AGENT_BROWSER;
}


static int
fuzz_tchar(u_char c)
{
    return c < 0x80
           && (isalnum(c) || (c != '\0' && strchr("!#$%&'*+-.^_`|~:/", c)));
}


static int
fuzz_token(const u_char *p, size_t len)
{
    size_t        i, m;
    const char  **t, *tokens[] = { "prefetch", "prerender", NULL };

    for (t = tokens; *t; t++) {
        m = strlen(*t);

        for (i = 0; i < len; i++) {
            if (fuzz_at(p, len, i, *t)
                && (i == 0 || !fuzz_tchar(p[i - 1]))
                && (i + m == len || !fuzz_tchar(p[i + m])))
            {
                return 1;
            }
        }
    }

    return 0;
}


static int
fuzz_x_moz(const u_char *p, size_t len)
{
    size_t  i, j;

    for (i = 0; i < len && (p[i] == ' ' || p[i] == '\t'); i++) {
        /* void */
    }

    for (j = len; j > i && (p[j - 1] == ' ' || p[j - 1] == '\t'); j--) {
        /* void */
    }

    return j - i == 8 && fuzz_at(p, j, i, "prefetch");
}


static void
fuzz_same(const u_char *p, size_t len, int rc, const char *pattern)
{
    int          rc2;
    const char  *p2;

    rc2 = ngx_cdp_agent_classify(p, len, &p2);
    FUZZ_CHECK(rc2 == rc && p2 == pattern);
}


static void
fuzz_agent(const u_char *data, size_t size)
{
    int          rc, want;
    size_t       i, n;
    u_char      *in, *c;
    const char  *pattern, *ref;

    in = fuzz_dup(data, size);

    pattern = "unset";
    rc = ngx_cdp_agent_classify(size ? in : NULL, size, &pattern);

    FUZZ_CHECK(rc == NGX_CDP_AGENT_BROWSER || rc == NGX_CDP_AGENT_BOT
               || rc == NGX_CDP_AGENT_MAIL_PROXY);
    FUZZ_CHECK((pattern != NULL) == (rc != NGX_CDP_AGENT_BROWSER));

    /* the pattern is there, within the bytes looked at */
    if (pattern && pattern[0]) {
        n = size < NGX_CDP_AGENT_SCAN ? size : NGX_CDP_AGENT_SCAN;

        for (i = 0; i < n && !fuzz_at(in, n, i, pattern); i++) {
            /* void */
        }

        FUZZ_CHECK(i < n);
    }

    FUZZ_CHECK(pattern == NULL || pattern[0] != '\0' || size == 0);

    /* the same class and the same entry of the lists, or both "" */
    want = fuzz_classify(in, size, &ref);
    FUZZ_CHECK(rc == want);
    FUZZ_CHECK(pattern == ref || (size == 0 && strcmp(pattern, ref) == 0));

    /* an empty header, with or without a buffer; no pattern wanted */
    if (size == 0) {
        fuzz_same(in, 0, rc, pattern);
        FUZZ_CHECK(ngx_cdp_agent_classify(NULL, 0, NULL) == rc);
        free(in);
        return;
    }

    FUZZ_CHECK(ngx_cdp_agent_classify(in, size, NULL) == rc);

    /* only the first NGX_CDP_AGENT_SCAN bytes count */
    if (size > NGX_CDP_AGENT_SCAN) {
        c = fuzz_dup(data, NGX_CDP_AGENT_SCAN);
        fuzz_same(c, NGX_CDP_AGENT_SCAN, rc, pattern);
        free(c);
    }

    /* ASCII case does not count */

    c = fuzz_dup(data, size);

    for (i = 0; i < size; i++) {
        c[i] = fuzz_lower(c[i]);
    }

    fuzz_same(c, size, rc, pattern);

    for (i = 0; i < size; i++) {
        c[i] = (c[i] >= 'a' && c[i] <= 'z') ? (u_char) (c[i] - 0x20) : c[i];
    }

    fuzz_same(c, size, rc, pattern);

    free(c);
    free(in);
}


static void
fuzz_prefetch(const u_char *data, size_t size)
{
    int            rc, want;
    size_t         i, k, start, len[3];
    u_char        *part[3];
    const u_char  *nl;

    start = 0;

    for (k = 0; k < 3; k++) {
        part[k] = NULL;
        len[k] = 0;

        if (start > size) {
            continue;
        }

        nl = (k < 2) ? memchr(data + start, '\n', size - start) : NULL;
        len[k] = (nl ? (size_t) (nl - data) : size) - start;
        part[k] = fuzz_dup(data + start, len[k]);
        start += len[k] + 1;
    }

    rc = ngx_cdp_agent_prefetch(part[0], len[0], part[1], len[1], part[2],
                                len[2]);

    want = (part[0] && fuzz_token(part[0], len[0]))
           || (part[1] && fuzz_token(part[1], len[1]))
           || (part[2] && fuzz_x_moz(part[2], len[2]));

    FUZZ_CHECK(rc == want);

    /* each header alone */

    FUZZ_CHECK(ngx_cdp_agent_prefetch(part[0], len[0], NULL, 0, NULL, 0)
               == (part[0] && fuzz_token(part[0], len[0])));
    FUZZ_CHECK(ngx_cdp_agent_prefetch(NULL, 0, part[1], len[1], NULL, 0)
               == (part[1] && fuzz_token(part[1], len[1])));
    FUZZ_CHECK(ngx_cdp_agent_prefetch(NULL, 0, NULL, 0, part[2], len[2])
               == (part[2] && fuzz_x_moz(part[2], len[2])));

    for (i = 0; i < 3; i++) {
        free(part[i]);
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_agent(data, size);
    fuzz_prefetch(data, size);

    return 0;
}
