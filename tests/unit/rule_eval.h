
/*
 * A reference evaluator of compiled segment rules (the compiled form of
 * ngx_cdp_rule.h), for test_rule.c and tests/fuzz/fuzz_rule.c.
 *
 * It is the specification run as code, as strict as it can be: any
 * deviation from the format (an unknown op, a bad length, a field the
 * store does not have, an operand of the wrong kind, a stack that does
 * not end with one boolean) makes it refuse the program, so that the fuzz
 * target can check that everything the compiler makes is well-formed.
 *
 * The profile is a Redis hash as a list of C strings: key, value, key,
 * value, ..., NULL.  Its fields are the store's (events, last_seen,
 * country, trait.plan, consent, ...); the per-event facts, whose keys the
 * store chooses, are "count|E", "first|E", "last|E" and "sum|E|P" here.
 */


#ifndef _NGX_CDP_RULE_EVAL_H_INCLUDED_
#define _NGX_CDP_RULE_EVAL_H_INCLUDED_


#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "ngx_cdp_rule.h"


#define NGX_CDP_EVAL_NIL   0
#define NGX_CDP_EVAL_NUM   1
#define NGX_CDP_EVAL_STR   2
#define NGX_CDP_EVAL_BOOL  3

typedef struct {
    int            type;
    int            literal;             /* pushed by # or $ */
    double         num;                 /* NUM; BOOL: 0 or 1 */
    const u_char  *str;
    size_t         len;
} ngx_cdp_eval_val_t;

typedef struct {
    double         due;                 /* -1: none */
    unsigned       flags;               /* NGX_CDP_RULE_* the ops imply */
    size_t         depth;               /* the largest stack */
    size_t         ops;
} ngx_cdp_eval_info_t;


/* the value of key in the profile, or NULL */

static inline const char *
ngx_cdp_eval_get(const char *const *prof, const char *kind, const u_char *a,
    size_t alen, const u_char *b, size_t blen)
{
    size_t       klen, n;
    const char  *key;

    klen = strlen(kind);

    for ( /* void */ ; prof && prof[0]; prof += 2) {
        key = prof[0];
        n = strlen(key);

        if (kind[0] == '\0') {
            /* a plain field: a is its name */
            if (n == alen && memcmp(key, a, alen) == 0) {
                return prof[1];
            }

            continue;
        }

        /* kind|a or kind|a|b */

        if (n != klen + 1 + alen + (b ? 1 + blen : 0)
            || memcmp(key, kind, klen) != 0 || key[klen] != '|'
            || memcmp(key + klen + 1, a, alen) != 0)
        {
            continue;
        }

        if (b == NULL
            || (key[klen + 1 + alen] == '|'
                && memcmp(key + klen + 2 + alen, b, blen) == 0))
        {
            return prof[1];
        }
    }

    return NULL;
}


/*
 * NUM() of the specification: 1 and *d when the whole of s is
 * -?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?, else 0.
 */

static inline int
ngx_cdp_eval_num(const u_char *s, size_t n, double *d)
{
    size_t   i, j;
    char    *z;

    i = (n && s[0] == '-');
    j = i;

    while (i < n && s[i] >= '0' && s[i] <= '9') {
        i++;
    }

    if (i == j) {
        return 0;
    }

    if (i < n && s[i] == '.') {
        j = ++i;

        while (i < n && s[i] >= '0' && s[i] <= '9') {
            i++;
        }

        if (i == j) {
            return 0;
        }
    }

    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;

        if (i < n && (s[i] == '+' || s[i] == '-')) {
            i++;
        }

        j = i;

        while (i < n && s[i] >= '0' && s[i] <= '9') {
            i++;
        }

        if (i == j) {
            return 0;
        }
    }

    if (i != n) {
        return 0;
    }

    z = malloc(n + 1);
    if (z == NULL) {
        abort();
    }

    memcpy(z, s, n);
    z[n] = '\0';
    *d = strtod(z, NULL);
    free(z);

    return 1;
}


/* <digits> then term; no leading zero; at most 16 digits */

static inline int
ngx_cdp_eval_int(const u_char *code, size_t len, size_t *i, u_char term,
    long long *v)
{
    size_t  s;

    s = *i;
    *v = 0;

    while (*i < len && code[*i] >= '0' && code[*i] <= '9') {
        if (*i - s == 16) {
            return 0;
        }

        *v = *v * 10 + (code[*i] - '0');
        (*i)++;
    }

    if (*i == s || *i == len || code[*i] != term
        || (code[s] == '0' && *i - s > 1))
    {
        return 0;
    }

    (*i)++;

    return 1;
}


/* <len>:<bytes> */

static inline int
ngx_cdp_eval_str(const u_char *code, size_t len, size_t *i,
    const u_char **s, size_t *n)
{
    long long  v;

    if (!ngx_cdp_eval_int(code, len, i, ':', &v) || (size_t) v > len - *i) {
        return 0;
    }

    *s = code + *i;
    *n = (size_t) v;
    *i += *n;

    return 1;
}


static inline int
ngx_cdp_eval_is(const u_char *s, size_t n, const char *word)
{
    return n == strlen(word) && memcmp(s, word, n) == 0;
}


/* a value as a number, for N and I: 0 when it has none */

static inline int
ngx_cdp_eval_tonum(const ngx_cdp_eval_val_t *v, double *d)
{
    if (v->type == NGX_CDP_EVAL_NUM) {
        *d = v->num;
        return 1;
    }

    if (v->type == NGX_CDP_EVAL_STR) {
        return ngx_cdp_eval_num(v->str, v->len, d);
    }

    return 0;
}


static inline int
ngx_cdp_eval_op(const u_char *code, size_t len, size_t *i)
{
    int          k;
    static const char  *ops[] = { "eq", "ne", "lt", "le", "gt", "ge" };

    if (len - *i < 2) {
        return -1;
    }

    for (k = 0; k < 6; k++) {
        if (code[*i] == ops[k][0] && code[*i + 1] == ops[k][1]) {
            *i += 2;
            return k;
        }
    }

    return -1;
}


/*
 * Runs the program on the profile at time now (ms).  Returns 1 or 0, the
 * rule's result, or -1 when the program is malformed; info (may be NULL)
 * gets the due time and what the program read.
 */

static inline int
ngx_cdp_eval(const u_char *code, size_t len, const char *const *prof,
    double now, ngx_cdp_eval_info_t *info)
{
    int                  k, r, ok;
    u_char               op;
    size_t               i, j, n, sp, n2, m;
    double               x, y;
    long long            v;
    const char          *val;
    const u_char        *s, *s2, *c;
    ngx_cdp_eval_val_t  *st, *a, *b;
    ngx_cdp_eval_info_t  dummy;

    if (info == NULL) {
        info = &dummy;
    }

    info->due = -1;
    info->flags = 0;
    info->depth = 0;
    info->ops = 0;

    if (len < 3 || memcmp(code, "v1;", 3) != 0) {
        return -1;
    }

    /* every push takes at least one byte */
    st = malloc((len + 1) * sizeof(ngx_cdp_eval_val_t));
    if (st == NULL) {
        abort();
    }

    sp = 0;
    r = -1;
    i = 3;

#define PUSH(t, lit, d, p, l)                                                 \
    do {                                                                      \
        st[sp].type = (t); st[sp].literal = (lit); st[sp].num = (d);          \
        st[sp].str = (p); st[sp].len = (l);                                   \
        if (++sp > info->depth) { info->depth = sp; }                         \
    } while (0)

#define BAD  goto done

    while (i < len) {
        op = code[i++];
        info->ops++;

        switch (op) {

        case '#':
            for (j = i; j < len && code[j] != ';'; j++) { /* void */ }

            /* NUM() without the exponent */
            if (j == len || j - i > 32
                || memchr(code + i, 'e', j - i) || memchr(code + i, 'E', j - i)
                || !ngx_cdp_eval_num(code + i, j - i, &x))
            {
                BAD;
            }

            i = j + 1;
            PUSH(NGX_CDP_EVAL_NUM, 1, x, NULL, 0);
            break;

        case '$':
            if (!ngx_cdp_eval_str(code, len, &i, &s, &n)) {
                BAD;
            }

            PUSH(NGX_CDP_EVAL_STR, 1, 0, s, n);
            break;

        case 'n':
            if (!ngx_cdp_eval_str(code, len, &i, &s, &n)) {
                BAD;
            }

            if (!ngx_cdp_eval_is(s, n, "events")
                && !ngx_cdp_eval_is(s, n, "page_views")
                && !ngx_cdp_eval_is(s, n, "first_seen")
                && !ngx_cdp_eval_is(s, n, "last_seen"))
            {
                BAD;
            }

            val = ngx_cdp_eval_get(prof, "", s, n, NULL, 0);

            if (val == NULL
                || !ngx_cdp_eval_num((const u_char *) val, strlen(val), &x))
            {
                x = 0;
            }

            PUSH(NGX_CDP_EVAL_NUM, 0, x, NULL, 0);
            break;

        case 's':
            if (!ngx_cdp_eval_str(code, len, &i, &s, &n)) {
                BAD;
            }

            if (ngx_cdp_eval_is(s, n, "country")
                || ngx_cdp_eval_is(s, n, "region")
                || ngx_cdp_eval_is(s, n, "city"))
            {
                info->flags |= NGX_CDP_RULE_GEO;

            } else if (n > 6 && n <= 6 + 64 && memcmp(s, "trait.", 6) == 0) {
                for (j = 6; j < n; j++) {
                    if (!((s[j] >= 'a' && s[j] <= 'z')
                          || (s[j] >= 'A' && s[j] <= 'Z')
                          || (s[j] >= '0' && s[j] <= '9') || s[j] == '_'))
                    {
                        BAD;
                    }
                }

                info->flags |= NGX_CDP_RULE_TRAITS;

            } else {
                BAD;
            }

            val = ngx_cdp_eval_get(prof, "", s, n, NULL, 0);

            if (val == NULL) {
                PUSH(NGX_CDP_EVAL_NIL, 0, 0, NULL, 0);

            } else {
                PUSH(NGX_CDP_EVAL_STR, 0, 0, (const u_char *) val,
                     strlen(val));
            }

            break;

        case 'c':
        case 'f':
        case 'l':
        case 'u':
            if (!ngx_cdp_eval_str(code, len, &i, &s, &n)
                || n == 0 || n > 200)
            {
                BAD;
            }

            s2 = NULL;
            n2 = 0;

            if (op == 'u'
                && (!ngx_cdp_eval_str(code, len, &i, &s2, &n2)
                    || n2 == 0 || n2 > 200))
            {
                BAD;
            }

            val = ngx_cdp_eval_get(prof, op == 'c' ? "count"
                                         : op == 'f' ? "first"
                                         : op == 'l' ? "last" : "sum",
                                   s, n, s2, n2);

            if (val == NULL
                || !ngx_cdp_eval_num((const u_char *) val, strlen(val), &x))
            {
                x = 0;
            }

            PUSH(NGX_CDP_EVAL_NUM, 0, x, NULL, 0);
            break;

        case 'H':
            if (!ngx_cdp_eval_str(code, len, &i, &s, &n)
                || !(ngx_cdp_eval_is(s, n, "analytics")
                     || ngx_cdp_eval_is(s, n, "marketing")
                     || ngx_cdp_eval_is(s, n, "personalization")))
            {
                BAD;
            }

            info->flags |= NGX_CDP_RULE_CONSENT;

            val = ngx_cdp_eval_get(prof, "", (const u_char *) "consent", 7,
                                   NULL, 0);
            ok = 0;

            /* one of the ','-separated items, exactly */

            for (c = (const u_char *) val; c && !ok; ) {
                m = strcspn((const char *) c, ",");
                ok = (m == n && memcmp(c, s, n) == 0);
                c = c[m] ? c + m + 1 : NULL;
            }

            PUSH(NGX_CDP_EVAL_BOOL, 0, ok, NULL, 0);
            break;

        case 'N':
        case 'S':
            k = ngx_cdp_eval_op(code, len, &i);

            if (k < 0 || sp < 2 || (op == 'S' && k > 1)) {
                BAD;
            }

            b = &st[--sp];
            a = &st[--sp];

            if (a->type == NGX_CDP_EVAL_BOOL || b->type == NGX_CDP_EVAL_BOOL)
            {
                BAD;
            }

            if (op == 'N') {
                if (!ngx_cdp_eval_tonum(a, &x) || !ngx_cdp_eval_tonum(b, &y))
                {
                    ok = 0;

                } else {
                    switch (k) {
                    case 0: ok = (x == y); break;
                    case 1: ok = (x != y); break;
                    case 2: ok = (x < y); break;
                    case 3: ok = (x <= y); break;
                    case 4: ok = (x > y); break;
                    default: ok = (x >= y); break;
                    }
                }

            } else {
                if (a->type == NGX_CDP_EVAL_NUM || b->type == NGX_CDP_EVAL_NUM)
                {
                    BAD;
                }

                if (a->type == NGX_CDP_EVAL_NIL
                    || b->type == NGX_CDP_EVAL_NIL)
                {
                    ok = (k == 1);

                } else {
                    ok = (a->len == b->len
                          && (a->len == 0
                              || memcmp(a->str, b->str, a->len) == 0));
                    ok = (k == 0) ? ok : !ok;
                }
            }

            PUSH(NGX_CDP_EVAL_BOOL, 0, ok, NULL, 0);
            break;

        case 'I':
            if (!ngx_cdp_eval_int(code, len, &i, ';', &v) || v < 1
                || (size_t) v >= sp)
            {
                BAD;
            }

            a = &st[sp - v - 1];

            if (a->type == NGX_CDP_EVAL_BOOL) {
                BAD;
            }

            ok = 0;

            for (j = sp - v; j < sp; j++) {
                b = &st[j];

                if (!b->literal) {
                    BAD;
                }

                if (b->type == NGX_CDP_EVAL_NUM) {
                    if (ngx_cdp_eval_tonum(a, &x) && x == b->num) {
                        ok = 1;
                    }

                } else if (a->type == NGX_CDP_EVAL_STR && a->len == b->len
                           && (a->len == 0
                               || memcmp(a->str, b->str, a->len) == 0))
                {
                    ok = 1;
                }
            }

            sp -= v + 1;
            PUSH(NGX_CDP_EVAL_BOOL, 0, ok, NULL, 0);
            break;

        case 'B':
        case 'W':
            if (!ngx_cdp_eval_int(code, len, &i, ';', &v) || v < 1
                || v > 9007199254740991LL || sp < 1
                || st[sp - 1].type != NGX_CDP_EVAL_NUM)
            {
                BAD;
            }

            info->flags |= NGX_CDP_RULE_TIME;
            x = st[--sp].num;

            if (x <= 0) {
                ok = (op == 'B');

            } else {
                y = x + (double) v;
                ok = (op == 'B') ? (now >= y) : (now < y);

                if (y > now && (info->due < 0 || y < info->due)) {
                    info->due = y;
                }
            }

            PUSH(NGX_CDP_EVAL_BOOL, 0, ok, NULL, 0);
            break;

        case '&':
        case '|':
            if (sp < 2 || st[sp - 1].type != NGX_CDP_EVAL_BOOL
                || st[sp - 2].type != NGX_CDP_EVAL_BOOL)
            {
                BAD;
            }

            b = &st[--sp];
            a = &st[sp - 1];
            a->num = (op == '&') ? (a->num && b->num) : (a->num || b->num);
            break;

        case '!':
            if (sp < 1 || st[sp - 1].type != NGX_CDP_EVAL_BOOL) {
                BAD;
            }

            st[sp - 1].num = !st[sp - 1].num;
            break;

        default:
            BAD;
        }
    }

    if (sp == 1 && st[0].type == NGX_CDP_EVAL_BOOL) {
        r = st[0].num ? 1 : 0;
    }

done:

#undef PUSH
#undef BAD

    free(st);

    if (r < 0) {
        info->due = -1;
    }

    return r;
}


#endif /* _NGX_CDP_RULE_EVAL_H_INCLUDED_ */
