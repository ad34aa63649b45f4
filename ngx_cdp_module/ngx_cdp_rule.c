
/*
 * ngx_cdp: the rule language of segments (see ngx_cdp_rule.h).
 *
 * A recursive descent parser that writes the postfix program as it goes:
 * each operator is emitted after its operands, so no syntax tree is
 * built.  Types are checked as the operands come back, and an operator's
 * form (numeric or string comparison) is chosen only then.
 */


#include "ngx_cdp_rule.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


#define NGX_CDP_RULE_T_END      0
#define NGX_CDP_RULE_T_IDENT    1
#define NGX_CDP_RULE_T_WORD     2       /* a number or a duration */
#define NGX_CDP_RULE_T_STRING   3
#define NGX_CDP_RULE_T_LPAREN   4
#define NGX_CDP_RULE_T_RPAREN   5
#define NGX_CDP_RULE_T_COMMA    6
#define NGX_CDP_RULE_T_CMP      7

#define NGX_CDP_RULE_V_NUMBER   1
#define NGX_CDP_RULE_V_TIME     2
#define NGX_CDP_RULE_V_STRING   3
#define NGX_CDP_RULE_V_TRAIT    4

/* a fact atom takes at least 4 tokens: count ( "E" ) */
#define NGX_CDP_RULE_REFS_MAX   (NGX_CDP_RULE_TOKENS_MAX / 4 + 1)

/* room for a quoted, escaped, truncated piece of the input */
#define NGX_CDP_RULE_QUOTE_MAX  (4 * NGX_CDP_RULE_ECHO_MAX + 8)


typedef struct {
    int                    type;
    int                    op;          /* T_CMP: index in ops[] */
    size_t                 pos;         /* offset in the rule */
    size_t                 len;         /* bytes in the rule */
    size_t                 slen;        /* T_STRING: decoded length */
} ngx_cdp_rule_tok_t;

/* a use of an event fact, by offsets into the program */

typedef struct {
    unsigned               fact;        /* NGX_CDP_RULE_COUNT ... */
    size_t                 name;
    size_t                 name_len;
    size_t                 prop;
    size_t                 prop_len;
} ngx_cdp_rule_ref_t;

typedef struct {
    const u_char          *src;
    size_t                 len;
    size_t                 pos;         /* where the lexer goes on */
    ngx_cdp_rule_tok_t     tok;         /* the current token */
    size_t                 ntokens;

    u_char                *out;
    size_t                 olen;
    size_t                 ocap;

    ngx_cdp_rule_ref_t     refs[NGX_CDP_RULE_REFS_MAX];
    size_t                 nrefs;

    unsigned               flags;
    int                    consent;

    ngx_cdp_rule_error_t  *err;
} ngx_cdp_rule_parser_t;

typedef struct {
    const char            *name;
    const char            *code;        /* the op's two bytes */
    int                    order;       /* <, <=, >, >= */
} ngx_cdp_rule_op_t;

typedef struct {
    const char            *name;
    char                   op;          /* 'n' or 's' */
    int                    type;
    unsigned               flag;
} ngx_cdp_rule_field_t;

typedef struct {
    const char            *name;
    char                   op;
    int                    type;
    unsigned               fact;
} ngx_cdp_rule_func_t;


static void ngx_cdp_rule_fail(ngx_cdp_rule_parser_t *p, size_t pos,
    const char *fmt, ...);
static void ngx_cdp_rule_quote(char *dst, const u_char *s, size_t n);
static void ngx_cdp_rule_got(ngx_cdp_rule_parser_t *p, char *dst);
static int ngx_cdp_rule_next(ngx_cdp_rule_parser_t *p);
static int ngx_cdp_rule_lex_string(ngx_cdp_rule_parser_t *p);
static int ngx_cdp_rule_is(ngx_cdp_rule_parser_t *p, const char *word);
static int ngx_cdp_rule_keyword(ngx_cdp_rule_parser_t *p);
static int ngx_cdp_rule_emit(ngx_cdp_rule_parser_t *p, const void *data,
    size_t n);
static int ngx_cdp_rule_emit_len(ngx_cdp_rule_parser_t *p, size_t n);
static int ngx_cdp_rule_emit_int(ngx_cdp_rule_parser_t *p, char op,
    int64_t v);
static int ngx_cdp_rule_emit_string(ngx_cdp_rule_parser_t *p, char op,
    size_t *off, size_t *n);
static int ngx_cdp_rule_expect(ngx_cdp_rule_parser_t *p, int type,
    const char *what);
static int ngx_cdp_rule_or(ngx_cdp_rule_parser_t *p, unsigned depth);
static int ngx_cdp_rule_and(ngx_cdp_rule_parser_t *p, unsigned depth);
static int ngx_cdp_rule_unary(ngx_cdp_rule_parser_t *p, unsigned depth);
static int ngx_cdp_rule_atom(ngx_cdp_rule_parser_t *p);
static int ngx_cdp_rule_compare(ngx_cdp_rule_parser_t *p, int left);
static int ngx_cdp_rule_in(ngx_cdp_rule_parser_t *p, int type);
static int ngx_cdp_rule_value(ngx_cdp_rule_parser_t *p, int *type,
    const char *what);
static int ngx_cdp_rule_number(ngx_cdp_rule_parser_t *p);
static int ngx_cdp_rule_fact(ngx_cdp_rule_parser_t *p,
    const ngx_cdp_rule_func_t *f);
static int ngx_cdp_rule_name(ngx_cdp_rule_parser_t *p, const char *what,
    size_t *off, size_t *n);
static int ngx_cdp_rule_trait(ngx_cdp_rule_parser_t *p);
static int ngx_cdp_rule_unknown(ngx_cdp_rule_parser_t *p);
static int ngx_cdp_rule_duration(ngx_cdp_rule_parser_t *p, char op);
static int ngx_cdp_rule_events(ngx_cdp_rule_parser_t *p,
    ngx_cdp_rule_t *rule);


static const ngx_cdp_rule_op_t  ngx_cdp_rule_ops[] = {
    { "==", "eq", 0 },
    { "!=", "ne", 0 },
    { "<",  "lt", 1 },
    { "<=", "le", 1 },
    { ">",  "gt", 1 },
    { ">=", "ge", 1 }
};

#define NGX_CDP_RULE_EQ  0
#define NGX_CDP_RULE_NE  1
#define NGX_CDP_RULE_LT  2
#define NGX_CDP_RULE_LE  3
#define NGX_CDP_RULE_GT  4
#define NGX_CDP_RULE_GE  5

static const ngx_cdp_rule_field_t  ngx_cdp_rule_fields[] = {
    { "events", 'n', NGX_CDP_RULE_V_NUMBER, 0 },
    { "page_views", 'n', NGX_CDP_RULE_V_NUMBER, 0 },
    { "first_seen", 'n', NGX_CDP_RULE_V_TIME, 0 },
    { "last_seen", 'n', NGX_CDP_RULE_V_TIME, 0 },
    { "country", 's', NGX_CDP_RULE_V_STRING, NGX_CDP_RULE_GEO },
    { "region", 's', NGX_CDP_RULE_V_STRING, NGX_CDP_RULE_GEO },
    { "city", 's', NGX_CDP_RULE_V_STRING, NGX_CDP_RULE_GEO },
    { NULL, 0, 0, 0 }
};

static const ngx_cdp_rule_func_t  ngx_cdp_rule_funcs[] = {
    { "count", 'c', NGX_CDP_RULE_V_NUMBER, NGX_CDP_RULE_COUNT },
    { "sum", 'u', NGX_CDP_RULE_V_NUMBER, NGX_CDP_RULE_SUM },
    { "first", 'f', NGX_CDP_RULE_V_TIME, NGX_CDP_RULE_FIRST },
    { "last", 'l', NGX_CDP_RULE_V_TIME, NGX_CDP_RULE_LAST },
    { NULL, 0, 0, 0 }
};

static const struct {
    const char  *name;
    int          bit;
} ngx_cdp_rule_purposes[] = {
    { "analytics", NGX_CDP_CONSENT_ANALYTICS },
    { "marketing", NGX_CDP_CONSENT_MARKETING },
    { "personalization", NGX_CDP_CONSENT_PERSONALIZATION },
    { NULL, 0 }
};

/* words that are never a value, nor an unknown field */
static const char  *ngx_cdp_rule_keywords[] = {
    "and", "or", "not", "in", "has", "before", "within", "consent",
    "seen_before", "seen_within", NULL
};

static const char  *ngx_cdp_rule_types[] = {
    "", "a number", "a time", "a string", "a trait"
};

static const u_char  ngx_cdp_rule_header[] = "v1;";
static const u_char  ngx_cdp_rule_last_seen[] = "last_seen";


/* errors */

static void
ngx_cdp_rule_fail(ngx_cdp_rule_parser_t *p, size_t pos, const char *fmt, ...)
{
    va_list  args;

    if (p->err->msg[0] != '\0') {
        /* the first error is the one that counts */
        return;
    }

    p->err->pos = pos;

    va_start(args, fmt);
    vsnprintf(p->err->msg, NGX_CDP_RULE_ERR_MAX, fmt, args);
    va_end(args);
}


/*
 * At most NGX_CDP_RULE_ECHO_MAX bytes of the input, in double quotes,
 * as printable ASCII: the message goes to error_log and to a terminal.
 * dst needs NGX_CDP_RULE_QUOTE_MAX bytes.
 */

static void
ngx_cdp_rule_quote(char *dst, const u_char *s, size_t n)
{
    size_t   i;
    u_char   c;
    char    *d;

    static const char  hex[] = "0123456789abcdef";

    d = dst;
    *d++ = '"';

    for (i = 0; i < n && i < NGX_CDP_RULE_ECHO_MAX; i++) {
        c = s[i];

        if (c == '"' || c == '\\') {
            *d++ = '\\';
            *d++ = (char) c;

        } else if (c >= 0x20 && c < 0x7f) {
            *d++ = (char) c;

        } else {
            *d++ = '\\';
            *d++ = 'x';
            *d++ = hex[c >> 4];
            *d++ = hex[c & 0x0f];
        }
    }

    if (n > NGX_CDP_RULE_ECHO_MAX) {
        memcpy(d, "...", 3);
        d += 3;
    }

    *d++ = '"';
    *d = '\0';
}


/* the current token, for "X expected, got Y" */

static void
ngx_cdp_rule_got(ngx_cdp_rule_parser_t *p, char *dst)
{
    switch (p->tok.type) {

    case NGX_CDP_RULE_T_END:
        strcpy(dst, "the end");
        break;

    case NGX_CDP_RULE_T_STRING:
        strcpy(dst, "a string");
        break;

    default:
        ngx_cdp_rule_quote(dst, p->src + p->tok.pos, p->tok.len);
    }
}


/* the lexer */

static int
ngx_cdp_rule_ident_char(u_char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
           || (c >= '0' && c <= '9') || c == '_' || c == '.';
}


static int
ngx_cdp_rule_next(ngx_cdp_rule_parser_t *p)
{
    size_t               i;
    u_char               c, c2;
    const u_char        *s;
    ngx_cdp_rule_tok_t  *t;
    char                 q[NGX_CDP_RULE_QUOTE_MAX];

    s = p->src;
    i = p->pos;
    t = &p->tok;

    while (i < p->len
           && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n'))
    {
        i++;
    }

    t->pos = i;
    t->len = 0;

    if (i == p->len) {
        t->type = NGX_CDP_RULE_T_END;
        p->pos = i;
        return 0;
    }

    if (++p->ntokens > NGX_CDP_RULE_TOKENS_MAX) {
        ngx_cdp_rule_fail(p, i, "more than %d tokens",
                          NGX_CDP_RULE_TOKENS_MAX);
        return -1;
    }

    c = s[i];
    c2 = (i + 1 < p->len) ? s[i + 1] : '\0';

    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_') {
        t->type = NGX_CDP_RULE_T_IDENT;

    } else if ((c >= '0' && c <= '9')
               || (c == '-' && c2 >= '0' && c2 <= '9'))
    {
        t->type = NGX_CDP_RULE_T_WORD;

        if (c == '-') {
            i++;
        }

    } else if (c == '"') {
        return ngx_cdp_rule_lex_string(p);

    } else {
        t->len = 1;

        switch (c) {

        case '(':
            t->type = NGX_CDP_RULE_T_LPAREN;
            break;

        case ')':
            t->type = NGX_CDP_RULE_T_RPAREN;
            break;

        case ',':
            t->type = NGX_CDP_RULE_T_COMMA;
            break;

        case '=':
            if (c2 != '=') {
                ngx_cdp_rule_fail(p, i,
                                  "\"=\" is not an operator, use \"==\"");
                return -1;
            }

            t->type = NGX_CDP_RULE_T_CMP;
            t->op = NGX_CDP_RULE_EQ;
            t->len = 2;
            break;

        case '!':
            if (c2 != '=') {
                ngx_cdp_rule_fail(p, i, "unexpected character \"!\"");
                return -1;
            }

            t->type = NGX_CDP_RULE_T_CMP;
            t->op = NGX_CDP_RULE_NE;
            t->len = 2;
            break;

        case '<':
        case '>':
            t->type = NGX_CDP_RULE_T_CMP;

            if (c2 == '=') {
                t->op = (c == '<') ? NGX_CDP_RULE_LE : NGX_CDP_RULE_GE;
                t->len = 2;

            } else {
                t->op = (c == '<') ? NGX_CDP_RULE_LT : NGX_CDP_RULE_GT;
            }

            break;

        default:
            ngx_cdp_rule_quote(q, s + i, 1);
            ngx_cdp_rule_fail(p, i, "unexpected character %s", q);
            return -1;
        }

        p->pos = i + t->len;
        return 0;
    }

    /* an identifier or a word: the same characters follow */

    i++;

    while (i < p->len && ngx_cdp_rule_ident_char(s[i])) {
        i++;
    }

    t->len = i - t->pos;
    p->pos = i;

    return 0;
}


static int
ngx_cdp_rule_lex_string(ngx_cdp_rule_parser_t *p)
{
    size_t               i, n;
    const u_char        *s;
    ngx_cdp_rule_tok_t  *t;

    s = p->src;
    t = &p->tok;
    n = 0;

    for (i = t->pos + 1; i < p->len; i++) {

        if (s[i] == '"') {
            t->type = NGX_CDP_RULE_T_STRING;
            t->len = i + 1 - t->pos;
            t->slen = n;
            p->pos = i + 1;
            return 0;
        }

        if (s[i] == '\\') {
            if (i + 1 == p->len) {
                break;
            }

            if (s[i + 1] != '"' && s[i + 1] != '\\') {
                ngx_cdp_rule_fail(p, i, "bad escape: only \\\" and \\\\ "
                                  "in a string");
                return -1;
            }

            i++;
        }

        n++;
    }

    ngx_cdp_rule_fail(p, t->pos, "unterminated string");

    return -1;
}


static int
ngx_cdp_rule_is(ngx_cdp_rule_parser_t *p, const char *word)
{
    return p->tok.type == NGX_CDP_RULE_T_IDENT
           && p->tok.len == strlen(word)
           && memcmp(p->src + p->tok.pos, word, p->tok.len) == 0;
}


static int
ngx_cdp_rule_keyword(ngx_cdp_rule_parser_t *p)
{
    size_t  i;

    for (i = 0; ngx_cdp_rule_keywords[i]; i++) {
        if (ngx_cdp_rule_is(p, ngx_cdp_rule_keywords[i])) {
            return 1;
        }
    }

    return 0;
}


/* the program */

static int
ngx_cdp_rule_emit(ngx_cdp_rule_parser_t *p, const void *data, size_t n)
{
    size_t   cap;
    u_char  *out;

    if (n > p->ocap - p->olen) {
        cap = p->ocap ? p->ocap : 256;

        while (n > cap - p->olen) {
            cap *= 2;
        }

        out = realloc(p->out, cap);
        if (out == NULL) {
            ngx_cdp_rule_fail(p, 0, "out of memory");
            return -1;
        }

        p->out = out;
        p->ocap = cap;
    }

    if (n) {
        memcpy(p->out + p->olen, data, n);
        p->olen += n;
    }

    return 0;
}


/* "<n>:", a string's length prefix */

static int
ngx_cdp_rule_emit_len(ngx_cdp_rule_parser_t *p, size_t n)
{
    char  buf[32];

    return ngx_cdp_rule_emit(p, buf,
                             snprintf(buf, sizeof(buf), "%zu:", n));
}


/* op, then an integer and ';' */

static int
ngx_cdp_rule_emit_int(ngx_cdp_rule_parser_t *p, char op, int64_t v)
{
    char  buf[32];

    return ngx_cdp_rule_emit(p, buf,
                             snprintf(buf, sizeof(buf), "%c%lld;", op,
                                      (long long) v));
}


/*
 * op (unless 0), then the current string token, unescaped, with its
 * length prefix; *off and *n (when off is not NULL) say where its bytes
 * are in the program.
 */

static int
ngx_cdp_rule_emit_string(ngx_cdp_rule_parser_t *p, char op, size_t *off,
    size_t *n)
{
    size_t         i, end;
    const u_char  *s;

    if (op && ngx_cdp_rule_emit(p, &op, 1) != 0) {
        return -1;
    }

    if (ngx_cdp_rule_emit_len(p, p->tok.slen) != 0) {
        return -1;
    }

    if (off) {
        *off = p->olen;
        *n = p->tok.slen;
    }

    s = p->src;
    end = p->tok.pos + p->tok.len - 1;

    for (i = p->tok.pos + 1; i < end; i++) {
        if (s[i] == '\\') {
            i++;
        }

        if (ngx_cdp_rule_emit(p, &s[i], 1) != 0) {
            return -1;
        }
    }

    return 0;
}


static int
ngx_cdp_rule_expect(ngx_cdp_rule_parser_t *p, int type, const char *what)
{
    if (p->tok.type != type) {
        ngx_cdp_rule_fail(p, p->tok.pos, "%s expected", what);
        return -1;
    }

    return ngx_cdp_rule_next(p);
}


/* the grammar */

static int
ngx_cdp_rule_or(ngx_cdp_rule_parser_t *p, unsigned depth)
{
    if (ngx_cdp_rule_and(p, depth) != 0) {
        return -1;
    }

    while (ngx_cdp_rule_is(p, "or")) {
        if (ngx_cdp_rule_next(p) != 0
            || ngx_cdp_rule_and(p, depth) != 0
            || ngx_cdp_rule_emit(p, "|", 1) != 0)
        {
            return -1;
        }
    }

    return 0;
}


static int
ngx_cdp_rule_and(ngx_cdp_rule_parser_t *p, unsigned depth)
{
    if (ngx_cdp_rule_unary(p, depth) != 0) {
        return -1;
    }

    while (ngx_cdp_rule_is(p, "and")) {
        if (ngx_cdp_rule_next(p) != 0
            || ngx_cdp_rule_unary(p, depth) != 0
            || ngx_cdp_rule_emit(p, "&", 1) != 0)
        {
            return -1;
        }
    }

    return 0;
}


static int
ngx_cdp_rule_unary(ngx_cdp_rule_parser_t *p, unsigned depth)
{
    int  not;

    not = ngx_cdp_rule_is(p, "not");

    if (!not && p->tok.type != NGX_CDP_RULE_T_LPAREN) {
        return ngx_cdp_rule_atom(p);
    }

    /* the recursion is bounded here, and the evaluator's stack with it */

    if (depth >= NGX_CDP_RULE_DEPTH_MAX) {
        ngx_cdp_rule_fail(p, p->tok.pos, "nested deeper than %d",
                          NGX_CDP_RULE_DEPTH_MAX);
        return -1;
    }

    if (ngx_cdp_rule_next(p) != 0) {
        return -1;
    }

    if (not) {
        if (ngx_cdp_rule_unary(p, depth + 1) != 0) {
            return -1;
        }

        return ngx_cdp_rule_emit(p, "!", 1);
    }

    if (ngx_cdp_rule_or(p, depth + 1) != 0) {
        return -1;
    }

    return ngx_cdp_rule_expect(p, NGX_CDP_RULE_T_RPAREN, "\")\"");
}


static int
ngx_cdp_rule_atom(ngx_cdp_rule_parser_t *p)
{
    int     type, i;
    size_t  pos;
    char    q[NGX_CDP_RULE_QUOTE_MAX];

    if (ngx_cdp_rule_is(p, "consent")) {
        if (ngx_cdp_rule_next(p) != 0) {
            return -1;
        }

        if (!ngx_cdp_rule_is(p, "has")) {
            ngx_cdp_rule_fail(p, p->tok.pos, "\"has\" expected");
            return -1;
        }

        if (ngx_cdp_rule_next(p) != 0) {
            return -1;
        }

        for (i = 0; ngx_cdp_rule_purposes[i].name; i++) {
            if (ngx_cdp_rule_is(p, ngx_cdp_rule_purposes[i].name)) {
                break;
            }
        }

        if (ngx_cdp_rule_purposes[i].name == NULL) {
            if (p->tok.type != NGX_CDP_RULE_T_IDENT) {
                ngx_cdp_rule_fail(p, p->tok.pos, "a purpose is expected: "
                                  "analytics, marketing or personalization");
                return -1;
            }

            ngx_cdp_rule_quote(q, p->src + p->tok.pos, p->tok.len);
            ngx_cdp_rule_fail(p, p->tok.pos, "unknown purpose %s: "
                              "analytics, marketing or personalization", q);
            return -1;
        }

        p->flags |= NGX_CDP_RULE_CONSENT;
        p->consent |= ngx_cdp_rule_purposes[i].bit;

        if (ngx_cdp_rule_emit(p, "H", 1) != 0
            || ngx_cdp_rule_emit_len(p, p->tok.len) != 0
            || ngx_cdp_rule_emit(p, p->src + p->tok.pos, p->tok.len) != 0)
        {
            return -1;
        }

        return ngx_cdp_rule_next(p);
    }

    if (ngx_cdp_rule_is(p, "seen_before") || ngx_cdp_rule_is(p, "seen_within"))
    {
        /* the shorthand of "last_seen before(D)" and "within(D)" */

        if (ngx_cdp_rule_emit(p, "n", 1) != 0
            || ngx_cdp_rule_emit_len(p, sizeof(ngx_cdp_rule_last_seen) - 1)
               != 0
            || ngx_cdp_rule_emit(p, ngx_cdp_rule_last_seen,
                                 sizeof(ngx_cdp_rule_last_seen) - 1)
               != 0)
        {
            return -1;
        }

        return ngx_cdp_rule_duration(p, p->src[p->tok.pos + 5] == 'b'
                                        ? 'B' : 'W');
    }

    if (ngx_cdp_rule_value(p, &type, "a condition") != 0) {
        return -1;
    }

    if (p->tok.type == NGX_CDP_RULE_T_CMP) {
        return ngx_cdp_rule_compare(p, type);
    }

    if (ngx_cdp_rule_is(p, "in")) {
        return ngx_cdp_rule_in(p, type);
    }

    if (ngx_cdp_rule_is(p, "before") || ngx_cdp_rule_is(p, "within")) {
        pos = p->tok.pos;

        if (type != NGX_CDP_RULE_V_TIME) {
            ngx_cdp_rule_fail(p, pos, "\"%s\" needs a time, got %s",
                              p->src[pos] == 'b' ? "before" : "within",
                              ngx_cdp_rule_types[type]);
            return -1;
        }

        return ngx_cdp_rule_duration(p, p->src[pos] == 'b' ? 'B' : 'W');
    }

    ngx_cdp_rule_fail(p, p->tok.pos, "a comparison is expected");

    return -1;
}


/*
 * value <op> value.  A trait takes the type of the other side; two
 * traits are strings to == and !=, numbers to the others.
 */

static int
ngx_cdp_rule_compare(ngx_cdp_rule_parser_t *p, int left)
{
    int                       right, numeric, a, b;
    size_t                    pos;
    const ngx_cdp_rule_op_t  *op;
    char                      buf[4];

    op = &ngx_cdp_rule_ops[p->tok.op];
    pos = p->tok.pos;

    if (ngx_cdp_rule_next(p) != 0
        || ngx_cdp_rule_value(p, &right, "a value") != 0)
    {
        return -1;
    }

    a = (left == NGX_CDP_RULE_V_TIME) ? NGX_CDP_RULE_V_NUMBER : left;
    b = (right == NGX_CDP_RULE_V_TIME) ? NGX_CDP_RULE_V_NUMBER : right;

    if (a == NGX_CDP_RULE_V_TRAIT) {
        a = (b == NGX_CDP_RULE_V_TRAIT)
            ? (op->order ? NGX_CDP_RULE_V_NUMBER : NGX_CDP_RULE_V_STRING)
            : b;
    }

    if (b == NGX_CDP_RULE_V_TRAIT) {
        b = a;
    }

    if (a != b) {
        ngx_cdp_rule_fail(p, pos, "cannot compare %s with %s",
                          ngx_cdp_rule_types[left],
                          ngx_cdp_rule_types[right]);
        return -1;
    }

    numeric = (a == NGX_CDP_RULE_V_NUMBER);

    if (!numeric && op->order) {
        ngx_cdp_rule_fail(p, pos, "\"%s\" needs numbers or times, "
                          "not strings", op->name);
        return -1;
    }

    buf[0] = numeric ? 'N' : 'S';
    buf[1] = op->code[0];
    buf[2] = op->code[1];

    return ngx_cdp_rule_emit(p, buf, 3);
}


/* value in (item, ...) */

static int
ngx_cdp_rule_in(ngx_cdp_rule_parser_t *p, int type)
{
    int64_t  n;
    int      number;

    if (type == NGX_CDP_RULE_V_TIME) {
        ngx_cdp_rule_fail(p, p->tok.pos,
                          "\"in\" needs a string or a number, got a time");
        return -1;
    }

    if (ngx_cdp_rule_next(p) != 0
        || ngx_cdp_rule_expect(p, NGX_CDP_RULE_T_LPAREN, "\"(\"") != 0)
    {
        return -1;
    }

    n = 0;

    for ( ;; ) {
        if (p->tok.type != NGX_CDP_RULE_T_WORD
            && p->tok.type != NGX_CDP_RULE_T_STRING
            && p->tok.type != NGX_CDP_RULE_T_IDENT)
        {
            ngx_cdp_rule_fail(p, p->tok.pos,
                              "a string or a number is expected");
            return -1;
        }

        number = (p->tok.type == NGX_CDP_RULE_T_WORD);

        if (type == NGX_CDP_RULE_V_NUMBER && !number) {
            ngx_cdp_rule_fail(p, p->tok.pos,
                              "a number is expected, got a string");
            return -1;
        }

        if (type == NGX_CDP_RULE_V_STRING && number) {
            ngx_cdp_rule_fail(p, p->tok.pos,
                              "a string is expected, got a number");
            return -1;
        }

        if (number) {
            if (ngx_cdp_rule_number(p) != 0) {
                return -1;
            }

        } else if (p->tok.type == NGX_CDP_RULE_T_STRING) {
            if (ngx_cdp_rule_emit_string(p, '$', NULL, NULL) != 0) {
                return -1;
            }

        } else {
            /* a bare word is the string it spells */

            if (ngx_cdp_rule_emit(p, "$", 1) != 0
                || ngx_cdp_rule_emit_len(p, p->tok.len) != 0
                || ngx_cdp_rule_emit(p, p->src + p->tok.pos, p->tok.len)
                   != 0)
            {
                return -1;
            }
        }

        n++;

        if (ngx_cdp_rule_next(p) != 0) {
            return -1;
        }

        if (p->tok.type != NGX_CDP_RULE_T_COMMA) {
            break;
        }

        if (ngx_cdp_rule_next(p) != 0) {
            return -1;
        }
    }

    if (ngx_cdp_rule_expect(p, NGX_CDP_RULE_T_RPAREN, "\")\"") != 0) {
        return -1;
    }

    return ngx_cdp_rule_emit_int(p, 'I', n);
}


static int
ngx_cdp_rule_value(ngx_cdp_rule_parser_t *p, int *type, const char *what)
{
    size_t                       i;
    const ngx_cdp_rule_field_t  *f;
    char                         q[NGX_CDP_RULE_QUOTE_MAX];

    switch (p->tok.type) {

    case NGX_CDP_RULE_T_WORD:
        *type = NGX_CDP_RULE_V_NUMBER;

        if (ngx_cdp_rule_number(p) != 0) {
            return -1;
        }

        return ngx_cdp_rule_next(p);

    case NGX_CDP_RULE_T_STRING:
        *type = NGX_CDP_RULE_V_STRING;

        if (ngx_cdp_rule_emit_string(p, '$', NULL, NULL) != 0) {
            return -1;
        }

        return ngx_cdp_rule_next(p);

    case NGX_CDP_RULE_T_IDENT:
        if (!ngx_cdp_rule_keyword(p)) {
            break;
        }

        /* fall through */

    default:
        ngx_cdp_rule_got(p, q);
        ngx_cdp_rule_fail(p, p->tok.pos, "%s is expected, got %s", what, q);
        return -1;
    }

    for (i = 0; ngx_cdp_rule_funcs[i].name; i++) {
        if (ngx_cdp_rule_is(p, ngx_cdp_rule_funcs[i].name)) {
            *type = ngx_cdp_rule_funcs[i].type;
            return ngx_cdp_rule_fact(p, &ngx_cdp_rule_funcs[i]);
        }
    }

    for (f = ngx_cdp_rule_fields; f->name; f++) {
        if (ngx_cdp_rule_is(p, f->name)) {
            *type = f->type;
            p->flags |= f->flag;

            if (ngx_cdp_rule_emit(p, &f->op, 1) != 0
                || ngx_cdp_rule_emit_len(p, p->tok.len) != 0
                || ngx_cdp_rule_emit(p, p->src + p->tok.pos, p->tok.len)
                   != 0)
            {
                return -1;
            }

            return ngx_cdp_rule_next(p);
        }
    }

    if (p->tok.len >= 5 && memcmp(p->src + p->tok.pos, "trait", 5) == 0
        && (p->tok.len == 5 || p->src[p->tok.pos + 5] == '.'))
    {
        *type = NGX_CDP_RULE_V_TRAIT;
        return ngx_cdp_rule_trait(p);
    }

    return ngx_cdp_rule_unknown(p);
}


/* the current word as a number literal: -?[0-9]+(\.[0-9]+)? */

static int
ngx_cdp_rule_number(ngx_cdp_rule_parser_t *p)
{
    size_t         i, n, digits;
    const u_char  *s;
    char           q[NGX_CDP_RULE_QUOTE_MAX];

    s = p->src + p->tok.pos;
    n = p->tok.len;
    i = (s[0] == '-');

    for (digits = 0; i < n && s[i] >= '0' && s[i] <= '9'; i++) {
        digits++;
    }

    if (digits && i < n && s[i] == '.') {
        i++;

        for (digits = 0; i < n && s[i] >= '0' && s[i] <= '9'; i++) {
            digits++;
        }
    }

    if (digits == 0 || i != n) {
        ngx_cdp_rule_quote(q, s, n);
        ngx_cdp_rule_fail(p, p->tok.pos, "bad number %s", q);
        return -1;
    }

    if (n > NGX_CDP_RULE_NUMBER_MAX) {
        ngx_cdp_rule_fail(p, p->tok.pos, "number longer than %d bytes",
                          NGX_CDP_RULE_NUMBER_MAX);
        return -1;
    }

    if (ngx_cdp_rule_emit(p, "#", 1) != 0
        || ngx_cdp_rule_emit(p, s, n) != 0)
    {
        return -1;
    }

    return ngx_cdp_rule_emit(p, ";", 1);
}


/* count("E"), sum("E", P), first("E"), last("E") */

static int
ngx_cdp_rule_fact(ngx_cdp_rule_parser_t *p, const ngx_cdp_rule_func_t *f)
{
    ngx_cdp_rule_ref_t  *ref;

    if (ngx_cdp_rule_next(p) != 0
        || ngx_cdp_rule_expect(p, NGX_CDP_RULE_T_LPAREN, "\"(\"") != 0
        || ngx_cdp_rule_emit(p, &f->op, 1) != 0)
    {
        return -1;
    }

    /* the token limit keeps nrefs below NGX_CDP_RULE_REFS_MAX */

    ref = &p->refs[p->nrefs];
    ref->fact = f->fact;
    ref->prop = 0;
    ref->prop_len = 0;

    if (p->tok.type != NGX_CDP_RULE_T_STRING) {
        ngx_cdp_rule_fail(p, p->tok.pos, "an event name in quotes is "
                          "expected");
        return -1;
    }

    if (ngx_cdp_rule_name(p, "event", &ref->name, &ref->name_len) != 0) {
        return -1;
    }

    if (f->fact == NGX_CDP_RULE_SUM) {
        if (ngx_cdp_rule_expect(p, NGX_CDP_RULE_T_COMMA, "\",\"") != 0) {
            return -1;
        }

        if (p->tok.type == NGX_CDP_RULE_T_IDENT) {
            if (ngx_cdp_rule_emit_len(p, p->tok.len) != 0) {
                return -1;
            }

            ref->prop = p->olen;
            ref->prop_len = p->tok.len;

            if (ngx_cdp_rule_emit(p, p->src + p->tok.pos, p->tok.len) != 0
                || ngx_cdp_rule_next(p) != 0)
            {
                return -1;
            }

        } else if (p->tok.type == NGX_CDP_RULE_T_STRING) {
            if (ngx_cdp_rule_name(p, "property", &ref->prop, &ref->prop_len)
                != 0)
            {
                return -1;
            }

        } else {
            ngx_cdp_rule_fail(p, p->tok.pos, "a property name is expected");
            return -1;
        }
    }

    p->nrefs++;

    return ngx_cdp_rule_expect(p, NGX_CDP_RULE_T_RPAREN, "\")\"");
}


/* the current string token as an event or property name */

static int
ngx_cdp_rule_name(ngx_cdp_rule_parser_t *p, const char *what, size_t *off,
    size_t *n)
{
    if (p->tok.slen == 0) {
        ngx_cdp_rule_fail(p, p->tok.pos, "empty %s name", what);
        return -1;
    }

    if (p->tok.slen > NGX_CDP_RULE_NAME_MAX) {
        ngx_cdp_rule_fail(p, p->tok.pos, "%s name longer than %d bytes",
                          what, NGX_CDP_RULE_NAME_MAX);
        return -1;
    }

    if (ngx_cdp_rule_emit_string(p, 0, off, n) != 0) {
        return -1;
    }

    return ngx_cdp_rule_next(p);
}


static int
ngx_cdp_rule_trait(ngx_cdp_rule_parser_t *p)
{
    size_t         i, n;
    const u_char  *s;
    char           q[NGX_CDP_RULE_QUOTE_MAX];

    s = p->src + p->tok.pos;
    n = p->tok.len;

    for (i = 6; i < n; i++) {
        if (s[i] == '.') {
            break;
        }
    }

    if (n <= 6 || i != n || n - 6 > NGX_CDP_RULE_TRAIT_MAX) {
        ngx_cdp_rule_quote(q, s, n);
        ngx_cdp_rule_fail(p, p->tok.pos, "bad trait name %s: 1 to %d of "
                          "A-Z, a-z, 0-9 and _", q, NGX_CDP_RULE_TRAIT_MAX);
        return -1;
    }

    p->flags |= NGX_CDP_RULE_TRAITS;

    if (ngx_cdp_rule_emit(p, "s", 1) != 0
        || ngx_cdp_rule_emit_len(p, n) != 0
        || ngx_cdp_rule_emit(p, s, n) != 0)
    {
        return -1;
    }

    return ngx_cdp_rule_next(p);
}


/* a name we do not know: a function when "(" follows */

static int
ngx_cdp_rule_unknown(ngx_cdp_rule_parser_t *p)
{
    size_t  i;
    char    q[NGX_CDP_RULE_QUOTE_MAX];

    ngx_cdp_rule_quote(q, p->src + p->tok.pos, p->tok.len);

    for (i = p->pos; i < p->len; i++) {
        if (p->src[i] != ' ' && p->src[i] != '\t' && p->src[i] != '\r'
            && p->src[i] != '\n')
        {
            break;
        }
    }

    ngx_cdp_rule_fail(p, p->tok.pos, "unknown %s %s",
                      (i < p->len && p->src[i] == '(') ? "function" : "field",
                      q);

    return -1;
}


/*
 * The current token is before, within, seen_before or seen_within: then
 * "(" DURATION ")", emitted as op, the milliseconds and ';'.
 */

static int
ngx_cdp_rule_duration(ngx_cdp_rule_parser_t *p, char op)
{
    int64_t        v, unit;
    size_t         i, n;
    const u_char  *s;
    char           q[NGX_CDP_RULE_QUOTE_MAX];

    if (ngx_cdp_rule_next(p) != 0
        || ngx_cdp_rule_expect(p, NGX_CDP_RULE_T_LPAREN, "\"(\"") != 0)
    {
        return -1;
    }

    s = p->src + p->tok.pos;
    n = p->tok.len;

    if (p->tok.type != NGX_CDP_RULE_T_WORD) {
        ngx_cdp_rule_got(p, q);
        ngx_cdp_rule_fail(p, p->tok.pos, "a duration is expected, got %s",
                          q);
        return -1;
    }

    switch (s[n - 1]) {
    case 's':
        unit = 1000;
        break;
    case 'm':
        unit = 60 * 1000;
        break;
    case 'h':
        unit = 60 * 60 * 1000;
        break;
    case 'd':
        unit = 24 * 60 * 60 * 1000;
        break;
    default:
        unit = 0;
    }

    for (i = 0; i < n - 1; i++) {
        if (s[i] < '0' || s[i] > '9') {
            break;
        }
    }

    ngx_cdp_rule_quote(q, s, n);

    if (unit == 0 || n < 2 || i != n - 1) {
        ngx_cdp_rule_fail(p, p->tok.pos, "bad duration %s: a number and "
                          "s, m, h or d", q);
        return -1;
    }

    v = 0;

    for (i = 0; i < n - 1; i++) {
        if (v > (NGX_CDP_RULE_DURATION_MAX - (s[i] - '0')) / 10) {
            goto too_long;
        }

        v = v * 10 + (s[i] - '0');
    }

    if (v > NGX_CDP_RULE_DURATION_MAX / unit) {
        goto too_long;
    }

    if (v == 0) {
        ngx_cdp_rule_fail(p, p->tok.pos, "duration %s is not more than 0",
                          q);
        return -1;
    }

    p->flags |= NGX_CDP_RULE_TIME;

    if (ngx_cdp_rule_emit_int(p, op, v * unit) != 0
        || ngx_cdp_rule_next(p) != 0)
    {
        return -1;
    }

    return ngx_cdp_rule_expect(p, NGX_CDP_RULE_T_RPAREN, "\")\"");

too_long:

    ngx_cdp_rule_fail(p, p->tok.pos, "duration %s is too long", q);

    return -1;
}


/* rule->events from the refs: each name once, each property once */

static int
ngx_cdp_rule_same(const u_char *code, size_t a, size_t alen, size_t b,
    size_t blen)
{
    return alen == blen && memcmp(code + a, code + b, alen) == 0;
}


static int
ngx_cdp_rule_events(ngx_cdp_rule_parser_t *p, ngx_cdp_rule_t *rule)
{
    size_t                 i, j, k, nevents, nsums;
    u_char                *block;
    ngx_cdp_str_t         *sums;
    ngx_cdp_rule_ref_t    *r, *q;
    ngx_cdp_rule_event_t  *ev;
    size_t                 first[NGX_CDP_RULE_REFS_MAX];

    /* first[]: the ref that names each event first */

    nevents = 0;
    nsums = 0;

    for (i = 0; i < p->nrefs; i++) {
        r = &p->refs[i];

        for (j = 0; j < nevents; j++) {
            q = &p->refs[first[j]];

            if (ngx_cdp_rule_same(p->out, r->name, r->name_len, q->name,
                                  q->name_len))
            {
                break;
            }
        }

        if (j == nevents) {
            first[nevents++] = i;
        }

        if (r->fact != NGX_CDP_RULE_SUM) {
            continue;
        }

        for (k = 0; k < i; k++) {
            q = &p->refs[k];

            if (q->fact == NGX_CDP_RULE_SUM
                && ngx_cdp_rule_same(p->out, r->name, r->name_len, q->name,
                                     q->name_len)
                && ngx_cdp_rule_same(p->out, r->prop, r->prop_len, q->prop,
                                     q->prop_len))
            {
                break;
            }
        }

        if (k == i) {
            nsums++;
        }
    }

    if (nevents == 0) {
        return 0;
    }

    block = malloc(nevents * sizeof(ngx_cdp_rule_event_t)
                   + nsums * sizeof(ngx_cdp_str_t));
    if (block == NULL) {
        ngx_cdp_rule_fail(p, 0, "out of memory");
        return -1;
    }

    ev = (ngx_cdp_rule_event_t *) block;
    sums = (ngx_cdp_str_t *) (block + nevents * sizeof(ngx_cdp_rule_event_t));

    /* each event's properties together, in order of first use */

    for (j = 0; j < nevents; j++) {
        q = &p->refs[first[j]];

        ev[j].name.data = p->out + q->name;
        ev[j].name.len = q->name_len;
        ev[j].facts = 0;
        ev[j].sums = sums;
        ev[j].nsums = 0;

        for (i = first[j]; i < p->nrefs; i++) {
            r = &p->refs[i];

            if (!ngx_cdp_rule_same(p->out, r->name, r->name_len, q->name,
                                   q->name_len))
            {
                continue;
            }

            ev[j].facts |= r->fact;

            if (r->fact != NGX_CDP_RULE_SUM) {
                continue;
            }

            for (k = 0; k < ev[j].nsums; k++) {
                if (ev[j].sums[k].len == r->prop_len
                    && memcmp(ev[j].sums[k].data, p->out + r->prop,
                              r->prop_len) == 0)
                {
                    break;
                }
            }

            if (k == ev[j].nsums) {
                sums->data = p->out + r->prop;
                sums->len = r->prop_len;
                sums++;
                ev[j].nsums++;
            }
        }

        if (ev[j].nsums == 0) {
            ev[j].sums = NULL;
        }
    }

    rule->events = ev;
    rule->nevents = nevents;

    return 0;
}


int
ngx_cdp_rule_compile(const u_char *src, size_t len, ngx_cdp_rule_t *rule,
    ngx_cdp_rule_error_t *err)
{
    u_char                 *out;
    ngx_cdp_rule_error_t    dummy;
    ngx_cdp_rule_parser_t  *p;
    char                    q[NGX_CDP_RULE_QUOTE_MAX];

    memset(rule, 0, sizeof(ngx_cdp_rule_t));

    if (err == NULL) {
        err = &dummy;
    }

    err->pos = 0;
    err->msg[0] = '\0';

    if (len > NGX_CDP_RULE_LEN_MAX) {
        err->pos = NGX_CDP_RULE_LEN_MAX;
        snprintf(err->msg, NGX_CDP_RULE_ERR_MAX, "rule longer than %d bytes",
                 NGX_CDP_RULE_LEN_MAX);
        return -1;
    }

    /* some 10 KB with its refs: on the heap, and zeroed */

    p = calloc(1, sizeof(ngx_cdp_rule_parser_t));
    if (p == NULL) {
        snprintf(err->msg, NGX_CDP_RULE_ERR_MAX, "out of memory");
        return -1;
    }

    p->src = src;
    p->len = len;
    p->err = err;

    if (ngx_cdp_rule_emit(p, ngx_cdp_rule_header,
                          sizeof(ngx_cdp_rule_header) - 1)
        != 0
        || ngx_cdp_rule_next(p) != 0)
    {
        goto failed;
    }

    if (p->tok.type == NGX_CDP_RULE_T_END) {
        ngx_cdp_rule_fail(p, p->tok.pos, "empty rule");
        goto failed;
    }

    if (ngx_cdp_rule_or(p, 0) != 0) {
        goto failed;
    }

    if (p->tok.type != NGX_CDP_RULE_T_END) {
        ngx_cdp_rule_got(p, q);
        ngx_cdp_rule_fail(p, p->tok.pos, "\"and\" or \"or\" expected, got %s",
                          q);
        goto failed;
    }

    /* the exact size, before anything points into it */

    out = realloc(p->out, p->olen);
    if (out != NULL) {
        p->out = out;
    }

    if (ngx_cdp_rule_events(p, rule) != 0) {
        goto failed;
    }

    rule->code = p->out;
    rule->len = p->olen;
    rule->flags = p->flags;
    rule->consent = p->consent;

    free(p);

    return 0;

failed:

    free(p->out);
    free(p);

    memset(rule, 0, sizeof(ngx_cdp_rule_t));

    if (err->msg[0] == '\0') {
        /* not reached: every failure says why */
        snprintf(err->msg, NGX_CDP_RULE_ERR_MAX, "bad rule");
    }

    return -1;
}


void
ngx_cdp_rule_free(ngx_cdp_rule_t *rule)
{
    free(rule->code);
    free(rule->events);

    memset(rule, 0, sizeof(ngx_cdp_rule_t));
}
