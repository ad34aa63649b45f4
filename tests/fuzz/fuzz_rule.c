
/*
 * ngx_cdp_rule.c:
 *
 * - ngx_cdp_rule_compile() never crashes nor leaks, and leaves its input
 *   alone.  A failure has a position within the rule and a message of
 *   printable ASCII, and an empty rule.
 * - What compiles is well-formed: the reference evaluator of
 *   tests/unit/rule_eval.h (strict: it refuses any deviation from the
 *   format) runs it to exactly one boolean, on an empty profile and on one
 *   with a value for everything the program reads, and the ops it meets
 *   are what rule->flags says; a due time is in the future, and only
 *   with NGX_CDP_RULE_TIME.
 * - rule->events is exactly the facts the program uses: each event once,
 *   each fact and sum property used, nothing missing.
 * - The program decompiles to a rule (with the fewest parentheses) that
 *   compiles to the same bytes, so the form carries the whole rule and
 *   the compiler is deterministic.
 */


#include "fuzz.h"
#include "ngx_cdp_rule.h"
#include "../unit/rule_eval.h"


#define FUZZ_NOW     1764000000000.0
#define FUZZ_KEYS    64

/* precedence of a decompiled piece: what it may stand in without () */
#define FUZZ_OR      1
#define FUZZ_AND     2
#define FUZZ_NOT     3
#define FUZZ_VALUE   4


typedef struct {
    char          *p;
    size_t         len;
    size_t         cap;
} fuzz_buf_t;

typedef struct {
    fuzz_buf_t     text;
    int            prec;
} fuzz_expr_t;

/* a profile with a value for each thing the program reads */

typedef struct {
    const char    *kv[2 * FUZZ_KEYS + 1];
    char          *keys[FUZZ_KEYS];
    size_t         n;
} fuzz_prof_t;


static const char  *fuzz_values[] = {
    "0", "1", "3", "500", "-1.5", "abc", "1763900000000", "1764100000000",
    "1e3", "DE", "pro", "", "analytics,marketing", "marketing", "3.0",
    "1763999999999"
};


static void
fuzz_put(fuzz_buf_t *b, const void *s, size_t n)
{
    if (b->cap - b->len < n + 1) {
        b->cap = 2 * (b->len + n + 1);
        b->p = realloc(b->p, b->cap);
        FUZZ_CHECK(b->p != NULL);
    }

    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}


static void
fuzz_puts(fuzz_buf_t *b, const char *s)
{
    fuzz_put(b, s, strlen(s));
}


/* a rule string literal */

static void
fuzz_quoted(fuzz_buf_t *b, const u_char *s, size_t n)
{
    size_t  i;

    fuzz_puts(b, "\"");

    for (i = 0; i < n; i++) {
        if (s[i] == '"' || s[i] == '\\') {
            fuzz_puts(b, "\\");
        }

        fuzz_put(b, &s[i], 1);
    }

    fuzz_puts(b, "\"");
}


/* e, wrapped in () when its precedence is below prec */

static void
fuzz_sub(fuzz_buf_t *b, fuzz_expr_t *e, int prec)
{
    if (e->prec < prec) {
        fuzz_puts(b, "(");
    }

    fuzz_put(b, e->text.p, e->text.len);

    if (e->prec < prec) {
        fuzz_puts(b, ")");
    }

    free(e->text.p);
}


/* the program was accepted by the evaluator: only the shapes remain */

static size_t
fuzz_int(const u_char *code, size_t *i, u_char term)
{
    size_t  v;

    for (v = 0; code[*i] != term; (*i)++) {
        v = v * 10 + (code[*i] - '0');
    }

    (*i)++;

    return v;
}


static void
fuzz_str(const u_char *code, size_t *i, const u_char **s, size_t *n)
{
    *n = fuzz_int(code, i, ':');
    *s = code + *i;
    *i += *n;
}


static void
fuzz_prof_add(fuzz_prof_t *prof, const char *kind, const u_char *a,
    size_t alen, const u_char *b, size_t blen, const uint8_t *data,
    size_t size)
{
    size_t      n;
    fuzz_buf_t  key;

    if (prof->n == FUZZ_KEYS || memchr(a, '\0', alen)
        || (b && memchr(b, '\0', blen)))
    {
        return;
    }

    memset(&key, 0, sizeof(fuzz_buf_t));

    if (kind[0]) {
        fuzz_puts(&key, kind);
        fuzz_puts(&key, "|");
    }

    fuzz_put(&key, a, alen);

    if (b) {
        fuzz_puts(&key, "|");
        fuzz_put(&key, b, blen);
    }

    n = prof->n;
    prof->keys[n] = key.p;
    prof->kv[2 * n] = key.p;
    prof->kv[2 * n + 1] = fuzz_values[(size ? data[(n * 7) % size] : n)
                                      % (sizeof(fuzz_values)
                                         / sizeof(fuzz_values[0]))];
    prof->kv[2 * n + 2] = NULL;
    prof->n++;
}


/* the event's index in rule->events, checking the fact is listed */

static size_t
fuzz_fact(ngx_cdp_rule_t *rule, unsigned *used, unsigned char *sums_used,
    u_char op, const u_char *e, size_t elen, const u_char *p, size_t plen)
{
    size_t                 i, k, base;
    unsigned               fact;
    ngx_cdp_rule_event_t  *ev;

    ev = NULL;

    fact = op == 'c' ? NGX_CDP_RULE_COUNT
           : op == 'f' ? NGX_CDP_RULE_FIRST
           : op == 'l' ? NGX_CDP_RULE_LAST : NGX_CDP_RULE_SUM;

    base = 0;

    for (i = 0; i < rule->nevents; i++) {
        ev = &rule->events[i];

        if (ev->name.len == elen && memcmp(ev->name.data, e, elen) == 0) {
            break;
        }

        base += ev->nsums;
    }

    FUZZ_CHECK(i < rule->nevents);
    FUZZ_CHECK(ev->facts & fact);
    used[i] |= fact;

    if (fact == NGX_CDP_RULE_SUM) {
        for (k = 0; k < ev->nsums; k++) {
            if (ev->sums[k].len == plen
                && memcmp(ev->sums[k].data, p, plen) == 0)
            {
                break;
            }
        }

        FUZZ_CHECK(k < ev->nsums);
        sums_used[base + k] = 1;
    }

    return i;
}


/*
 * Walks a well-formed program: writes the rule it is into out, the keys
 * it reads into prof, and checks its facts against rule->events.
 */

static void
fuzz_decompile(ngx_cdp_rule_t *rule, fuzz_buf_t *out, fuzz_prof_t *prof,
    const uint8_t *data, size_t size)
{
    int             prec;
    u_char          op, unit;
    size_t          i, j, n, n2, sp, nsums, v;
    unsigned       *used;
    fuzz_buf_t      t;
    fuzz_expr_t    *st, *e, a, b;
    const u_char   *code, *s, *s2;
    unsigned char  *sums_used;
    char            num[48];

    static const char  *cmp[] = { "==", "!=", "<", "<=", ">", ">=" };
    static const char  *cmp_code[] = { "eq", "ne", "lt", "le", "gt", "ge" };

    code = rule->code;

    st = calloc(rule->len + 1, sizeof(fuzz_expr_t));
    used = calloc(rule->nevents + 1, sizeof(unsigned));

    for (nsums = 0, j = 0; j < rule->nevents; j++) {
        nsums += rule->events[j].nsums;
    }

    sums_used = calloc(nsums + 1, 1);
    FUZZ_CHECK(st != NULL && used != NULL && sums_used != NULL);

    sp = 0;
    i = 3;

    while (i < rule->len) {
        op = code[i++];

        /* the slot a push fills */
        e = &st[sp];
        memset(e, 0, sizeof(fuzz_expr_t));
        e->prec = FUZZ_VALUE;

        switch (op) {

        case '#':
            for (j = i; code[j] != ';'; j++) { /* void */ }
            fuzz_put(&e->text, code + i, j - i);
            i = j + 1;
            sp++;
            break;

        case '$':
            fuzz_str(code, &i, &s, &n);
            fuzz_quoted(&e->text, s, n);
            sp++;
            break;

        case 'n':
        case 's':
            fuzz_str(code, &i, &s, &n);
            fuzz_put(&e->text, s, n);
            fuzz_prof_add(prof, "", s, n, NULL, 0, data, size);
            sp++;
            break;

        case 'c':
        case 'f':
        case 'l':
        case 'u':
            fuzz_str(code, &i, &s, &n);
            s2 = NULL;
            n2 = 0;

            if (op == 'u') {
                fuzz_str(code, &i, &s2, &n2);
            }

            fuzz_fact(rule, used, sums_used, op, s, n, s2, n2);

            fuzz_puts(&e->text, op == 'c' ? "count(" : op == 'f' ? "first("
                                : op == 'l' ? "last(" : "sum(");
            fuzz_quoted(&e->text, s, n);

            if (op == 'u') {
                fuzz_puts(&e->text, ", ");
                fuzz_quoted(&e->text, s2, n2);
            }

            fuzz_puts(&e->text, ")");
            fuzz_prof_add(prof, op == 'c' ? "count" : op == 'f' ? "first"
                                : op == 'l' ? "last" : "sum",
                          s, n, s2, n2, data, size);
            sp++;
            break;

        case 'H':
            fuzz_str(code, &i, &s, &n);
            FUZZ_CHECK(rule->flags & NGX_CDP_RULE_CONSENT);
            FUZZ_CHECK(rule->consent & (s[0] == 'a'
                                        ? NGX_CDP_CONSENT_ANALYTICS
                                        : s[0] == 'm'
                                        ? NGX_CDP_CONSENT_MARKETING
                                        : NGX_CDP_CONSENT_PERSONALIZATION));
            fuzz_puts(&e->text, "consent has ");
            fuzz_put(&e->text, s, n);
            e->prec = FUZZ_NOT;
            fuzz_prof_add(prof, "", (const u_char *) "consent", 7, NULL, 0,
                          data, size);
            sp++;
            break;

        case 'N':
        case 'S':
            for (j = 0; j < 6; j++) {
                if (memcmp(code + i, cmp_code[j], 2) == 0) {
                    break;
                }
            }

            i += 2;
            a = st[sp - 2];
            b = st[sp - 1];
            memset(&t, 0, sizeof(fuzz_buf_t));

            fuzz_sub(&t, &a, FUZZ_VALUE);
            fuzz_puts(&t, " ");
            fuzz_puts(&t, cmp[j]);
            fuzz_puts(&t, " ");
            fuzz_sub(&t, &b, FUZZ_VALUE);

            sp--;
            st[sp - 1].text = t;
            st[sp - 1].prec = FUZZ_NOT;
            break;

        case 'I':
            n = fuzz_int(code, &i, ';');
            memset(&t, 0, sizeof(fuzz_buf_t));

            fuzz_sub(&t, &st[sp - n - 1], FUZZ_VALUE);
            fuzz_puts(&t, " in (");

            for (j = sp - n; j < sp; j++) {
                if (j > sp - n) {
                    fuzz_puts(&t, ", ");
                }

                fuzz_sub(&t, &st[j], FUZZ_VALUE);
            }

            fuzz_puts(&t, ")");

            sp -= n;
            st[sp - 1].text = t;
            st[sp - 1].prec = FUZZ_NOT;
            break;

        case 'B':
        case 'W':
            v = fuzz_int(code, &i, ';');
            FUZZ_CHECK(v % 1000 == 0 && (rule->flags & NGX_CDP_RULE_TIME));
            v /= 1000;

            /* the largest unit, so the text stays short */
            if (v % 86400 == 0) {
                v /= 86400;
                unit = 'd';

            } else if (v % 3600 == 0) {
                v /= 3600;
                unit = 'h';

            } else if (v % 60 == 0) {
                v /= 60;
                unit = 'm';

            } else {
                unit = 's';
            }

            snprintf(num, sizeof(num), "(%zu%c)", v, unit);
            memset(&t, 0, sizeof(fuzz_buf_t));
            e = &st[sp - 1];

            /* the shorthand, one token less */

            if (e->text.len == 9 && memcmp(e->text.p, "last_seen", 9) == 0) {
                free(e->text.p);
                fuzz_puts(&t, op == 'B' ? "seen_before" : "seen_within");

            } else {
                fuzz_sub(&t, e, FUZZ_VALUE);
                fuzz_puts(&t, op == 'B' ? " before" : " within");
            }

            fuzz_puts(&t, num);
            e->text = t;
            e->prec = FUZZ_NOT;
            break;

        case '&':
        case '|':
            prec = (op == '&') ? FUZZ_AND : FUZZ_OR;
            a = st[sp - 2];
            b = st[sp - 1];
            memset(&t, 0, sizeof(fuzz_buf_t));

            /*
             * Left-associative: a right operand of the same level was in
             * parentheses, a left one need not be.
             */
            fuzz_sub(&t, &a, prec);
            fuzz_puts(&t, op == '&' ? " and " : " or ");
            fuzz_sub(&t, &b, prec + 1);

            sp--;
            st[sp - 1].text = t;
            st[sp - 1].prec = prec;
            break;

        default: /* '!' */
            a = st[sp - 1];
            memset(&t, 0, sizeof(fuzz_buf_t));

            fuzz_puts(&t, "not ");
            fuzz_sub(&t, &a, FUZZ_NOT);

            st[sp - 1].text = t;
            st[sp - 1].prec = FUZZ_NOT;
        }
    }

    FUZZ_CHECK(sp == 1);
    *out = st[0].text;

    /* every listed fact is used */

    for (j = 0; j < rule->nevents; j++) {
        FUZZ_CHECK(used[j] == rule->events[j].facts);
        FUZZ_CHECK(((rule->events[j].facts & NGX_CDP_RULE_SUM) != 0)
                   == (rule->events[j].nsums != 0));
    }

    for (j = 0; j < nsums; j++) {
        FUZZ_CHECK(sums_used[j]);
    }

    free(sums_used);
    free(used);
    free(st);
}


static void
fuzz_compiled(ngx_cdp_rule_t *rule, const uint8_t *data, size_t size)
{
    int                   r;
    size_t                i, j;
    fuzz_buf_t            text;
    fuzz_prof_t           prof;
    ngx_cdp_rule_t        again;
    ngx_cdp_rule_error_t  err;
    ngx_cdp_eval_info_t   info;

    FUZZ_CHECK(rule->code != NULL && rule->len >= 4
               && memcmp(rule->code, "v1;", 3) == 0);
    FUZZ_CHECK((rule->nevents == 0) == (rule->events == NULL));
    FUZZ_CHECK((rule->consent & ~NGX_CDP_CONSENT_ALL) == 0
               && ((rule->consent != 0)
                   == ((rule->flags & NGX_CDP_RULE_CONSENT) != 0)));

    /* each event once, each of its properties once */

    for (i = 0; i < rule->nevents; i++) {
        for (j = 0; j < i; j++) {
            FUZZ_CHECK(rule->events[i].name.len != rule->events[j].name.len
                       || memcmp(rule->events[i].name.data,
                                 rule->events[j].name.data,
                                 rule->events[i].name.len) != 0);
        }

        for (j = 1; j < rule->events[i].nsums; j++) {
            FUZZ_CHECK(rule->events[i].sums[j].len
                       != rule->events[i].sums[0].len
                       || memcmp(rule->events[i].sums[j].data,
                                 rule->events[i].sums[0].data,
                                 rule->events[i].sums[0].len) != 0);
        }
    }

    /* well-formed, on an empty profile */

    r = ngx_cdp_eval(rule->code, rule->len, NULL, FUZZ_NOW, &info);
    FUZZ_CHECK(r == 0 || r == 1);
    FUZZ_CHECK(info.flags == rule->flags);
    FUZZ_CHECK(info.due == -1);

    /* and on one with a value for everything it reads */

    memset(&prof, 0, sizeof(fuzz_prof_t));
    memset(&text, 0, sizeof(fuzz_buf_t));

    fuzz_decompile(rule, &text, &prof, data, size);

    r = ngx_cdp_eval(rule->code, rule->len, prof.kv, FUZZ_NOW, &info);
    FUZZ_CHECK(r == 0 || r == 1);
    FUZZ_CHECK(info.due == -1 || info.due > FUZZ_NOW);
    FUZZ_CHECK(info.due == -1 || (rule->flags & NGX_CDP_RULE_TIME));

    for (i = 0; i < prof.n; i++) {
        free(prof.keys[i]);
    }

    /*
     * The decompiled rule compiles to the same program, unless the
     * spaces and units it adds take it over a length limit.
     */

    if (ngx_cdp_rule_compile((u_char *) text.p, text.len, &again, &err)
        != 0)
    {
        if (strcmp(err.msg, "more than 1024 tokens") != 0
            && strncmp(err.msg, "rule longer than", 16) != 0)
        {
            fprintf(stderr, "decompiled: %s\nat %zu: %s\n", text.p, err.pos,
                    err.msg);
            FUZZ_CHECK(0);
        }

    } else {
        if (again.len != rule->len
            || memcmp(again.code, rule->code, rule->len) != 0)
        {
            fprintf(stderr, "decompiled: %s\n%.*s\n%.*s\n", text.p,
                    (int) rule->len, rule->code, (int) again.len,
                    again.code);
            FUZZ_CHECK(0);
        }

        FUZZ_CHECK(again.flags == rule->flags
                   && again.consent == rule->consent
                   && again.nevents == rule->nevents);

        ngx_cdp_rule_free(&again);
    }

    free(text.p);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t                i, n;
    u_char               *in;
    ngx_cdp_rule_t        rule;
    ngx_cdp_rule_error_t  err;

    in = fuzz_dup(data, size);
    memset(&err, 0xee, sizeof(err));

    if (ngx_cdp_rule_compile(in, size, &rule, &err) == 0) {
        FUZZ_CHECK(memcmp(in, data, size) == 0);
        FUZZ_CHECK(size <= NGX_CDP_RULE_LEN_MAX);

        fuzz_compiled(&rule, data, size);

        ngx_cdp_rule_free(&rule);
        FUZZ_CHECK(rule.code == NULL && rule.events == NULL);

        free(in);
        return 0;
    }

    FUZZ_CHECK(memcmp(in, data, size) == 0);
    FUZZ_CHECK(rule.code == NULL && rule.len == 0 && rule.events == NULL
               && rule.nevents == 0 && rule.flags == 0 && rule.consent == 0);

    /* a position in the rule (the limit, for one too long) */
    FUZZ_CHECK(size > NGX_CDP_RULE_LEN_MAX ? err.pos == NGX_CDP_RULE_LEN_MAX
                                           : err.pos <= size);

    /* a message, printable, with a bounded piece of the input */
    n = strnlen(err.msg, NGX_CDP_RULE_ERR_MAX);
    FUZZ_CHECK(n > 0 && n < NGX_CDP_RULE_ERR_MAX);
    FUZZ_CHECK(n <= 4 * NGX_CDP_RULE_ECHO_MAX + 90);

    for (i = 0; i < n; i++) {
        FUZZ_CHECK(err.msg[i] >= 0x20 && err.msg[i] < 0x7f);
    }

    free(in);

    return 0;
}
