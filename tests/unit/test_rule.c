
/*
 * Unit tests of ngx_cdp_rule.c, with the same tiny harness as
 * test_codec.c, and of the compiled form through the reference evaluator
 * of rule_eval.h (the specification of ngx_cdp_rule.h run as code).
 *
 * Every CHECK counts as one test; the last line is "N passed, N failed"
 * and the exit status is non-zero when anything failed.  Rules are
 * copied to their exact size, so overreads show up under valgrind and
 * `make sanitize`.
 */


#include "ngx_cdp_rule.h"
#include "unit.h"
#include "rule_eval.h"


#define S       1000.0
#define DAY     (86400 * S)
#define NOW     1764000000000.0         /* 2025-11-24T16:00:00Z */

/* a profile value of a time, n days before NOW */
#define AGO(n)  ngx_cdp_ago(n)


static char  ngx_cdp_times[64][32];
static int   ngx_cdp_ntimes;


static const char *
ngx_cdp_ago(double days)
{
    char  *b;

    b = ngx_cdp_times[ngx_cdp_ntimes++ % 64];
    snprintf(b, 32, "%.0f", NOW - days * DAY);

    return b;
}


/* compile an exact-size copy */

static int
ngx_cdp_compile(const u_char *src, size_t len, ngx_cdp_rule_t *rule,
    ngx_cdp_rule_error_t *err)
{
    int      rc;
    u_char  *b;

    b = ngx_cdp_dup(src, len);
    rc = ngx_cdp_rule_compile(b, len, rule, err);
    free(b);

    return rc;
}


/* compiles to exactly code (a C string), which the evaluator accepts */

static int
ngx_cdp_compiles_to(const u_char *src, size_t len, const char *code)
{
    int                   ok;
    ngx_cdp_rule_t        rule;
    ngx_cdp_rule_error_t  err;

    if (ngx_cdp_compile(src, len, &rule, &err) != 0) {
        printf("  %.*s: at %zu: %s\n", (int) len, src, err.pos, err.msg);
        return 0;
    }

    ok = rule.len == strlen(code) && memcmp(rule.code, code, rule.len) == 0
         && ngx_cdp_eval(rule.code, rule.len, NULL, NOW, NULL) >= 0;

    if (!ok) {
        printf("  %.*s:\n    got  %.*s\n    want %s\n", (int) len, src,
               (int) rule.len, rule.code, code);
    }

    ngx_cdp_rule_free(&rule);

    return ok;
}

#define COMPILES(src, code)                                                   \
    CHECK(ngx_cdp_compiles_to(L(src), code))


/* fails at pos with exactly msg, and leaves the rule empty */

static int
ngx_cdp_fails_with(const u_char *src, size_t len, size_t pos,
    const char *msg)
{
    int                   ok;
    ngx_cdp_rule_t        rule;
    ngx_cdp_rule_error_t  err;

    memset(&rule, FILL, sizeof(rule));
    memset(&err, FILL, sizeof(err));

    if (ngx_cdp_compile(src, len, &rule, &err) == 0) {
        printf("  %.*s: compiles to %.*s\n", (int) len, src, (int) rule.len,
               rule.code);
        ngx_cdp_rule_free(&rule);
        return 0;
    }

    ok = err.pos == pos && strcmp(err.msg, msg) == 0
         && rule.code == NULL && rule.len == 0 && rule.events == NULL
         && rule.nevents == 0 && rule.flags == 0 && rule.consent == 0;

    if (!ok) {
        printf("  %.*s:\n    got  %zu: %s\n    want %zu: %s\n",
               (int) (len > 80 ? 80 : len), src, err.pos, err.msg, pos, msg);
    }

    ngx_cdp_rule_free(&rule);

    return ok;
}

#define FAILS(src, pos, msg)                                                  \
    CHECK(ngx_cdp_fails_with(L(src), pos, msg))


/* the rule's result on prof at NOW; -2 when it does not compile */

static int
ngx_cdp_run(const char *src, const char *const *prof, double *due)
{
    int                   r;
    ngx_cdp_rule_t        rule;
    ngx_cdp_rule_error_t  err;
    ngx_cdp_eval_info_t   info;

    if (ngx_cdp_compile((const u_char *) src, strlen(src), &rule, &err)
        != 0)
    {
        printf("  %s: at %zu: %s\n", src, err.pos, err.msg);
        return -2;
    }

    r = ngx_cdp_eval(rule.code, rule.len, prof, NOW, &info);

    /* the program reads exactly what the flags say */
    if (info.flags != rule.flags) {
        r = -3;
    }

    if (due) {
        *due = info.due;
    }

    ngx_cdp_rule_free(&rule);

    return r;
}

#define IS(src, expect, ...)                                                  \
    do {                                                                      \
        const char *const  prof_[] = { __VA_ARGS__, NULL };                   \
        CHECK(ngx_cdp_run(src, prof_, NULL) == (expect));                     \
    } while (0)

#define DUE(src, when, ...)                                                   \
    do {                                                                      \
        double             due_;                                              \
        const char *const  prof_[] = { __VA_ARGS__, NULL };                   \
        CHECK(ngx_cdp_run(src, prof_, &due_) >= 0 && due_ == (when));         \
    } while (0)

#define NONE    -1.0


static const char  loyal[] = "count(\"Order Completed\") >= 3";
static const char  big[] = "sum(\"Order Completed\", revenue) >= 500";
static const char  dormant[] = "seen_before(30d) and events >= 1";
static const char  recent[] = "seen_within(7d)";
static const char  plan_geo[] =
    "trait.plan == \"pro\" and country in (DE, AT)";
static const char  abandoned[] =
    "last(\"Checkout Started\") before(2d)"
    " and last(\"Order Completed\") < last(\"Checkout Started\")";
static const char  consent_m[] = "consent has marketing";


/* the examples of the brief, byte for byte */

static void
test_examples(void)
{
    ngx_cdp_rule_t        rule;
    ngx_cdp_rule_error_t  err;

    COMPILES("count(\"Order Completed\") >= 3",
             "v1;c15:Order Completed#3;Nge");
    COMPILES("sum(\"Order Completed\", revenue) >= 500",
             "v1;u15:Order Completed7:revenue#500;Nge");
    COMPILES("seen_before(30d) and events >= 1",
             "v1;n9:last_seenB2592000000;n6:events#1;Nge&");
    COMPILES("seen_within(7d)", "v1;n9:last_seenW604800000;");
    COMPILES("trait.plan == \"pro\" and country in (DE, AT)",
             "v1;s10:trait.plan$3:proSeqs7:country$2:DE$2:ATI2;&");
    COMPILES("last(\"Checkout Started\") before(2d)"
             " and last(\"Order Completed\") < last(\"Checkout Started\")",
             "v1;l16:Checkout StartedB172800000;"
             "l15:Order Completedl16:Checkout StartedNlt&");
    COMPILES("consent has marketing", "v1;H9:marketing");

    /* the static copies used below say the same */
    CHECK(ngx_cdp_compile((const u_char *) abandoned, strlen(abandoned),
                          &rule, &err) == 0);
    CHECK(rule.flags == NGX_CDP_RULE_TIME && rule.consent == 0);
    ngx_cdp_rule_free(&rule);

    /* flags */
    CHECK(ngx_cdp_compile((const u_char *) plan_geo, strlen(plan_geo),
                          &rule, &err) == 0);
    CHECK(rule.flags == (NGX_CDP_RULE_TRAITS | NGX_CDP_RULE_GEO)
          && rule.nevents == 0 && rule.events == NULL);
    ngx_cdp_rule_free(&rule);

    CHECK(ngx_cdp_compile((const u_char *) consent_m, strlen(consent_m),
                          &rule, &err) == 0);
    CHECK(rule.flags == NGX_CDP_RULE_CONSENT
          && rule.consent == NGX_CDP_CONSENT_MARKETING);
    ngx_cdp_rule_free(&rule);

    CHECK(ngx_cdp_compile((const u_char *) dormant, strlen(dormant),
                          &rule, &err) == 0);
    CHECK(rule.flags == NGX_CDP_RULE_TIME && rule.nevents == 0);
    ngx_cdp_rule_free(&rule);

    CHECK(ngx_cdp_compile((const u_char *) loyal, strlen(loyal), &rule,
                          &err) == 0);
    CHECK(rule.flags == 0);
    ngx_cdp_rule_free(&rule);

    /* free() twice, and of a zeroed rule, does nothing */
    ngx_cdp_rule_free(&rule);
    CHECK(rule.code == NULL && rule.events == NULL);
}


static void
test_syntax(void)
{
    /* values and fields */
    COMPILES("events > 1", "v1;n6:events#1;Ngt");
    COMPILES("page_views <= 10", "v1;n10:page_views#10;Nle");
    COMPILES("first_seen > 0", "v1;n10:first_seen#0;Ngt");
    COMPILES("last_seen != 0", "v1;n9:last_seen#0;Nne");
    COMPILES("region == \"BY\"", "v1;s6:region$2:BYSeq");
    COMPILES("city != \"Wien\"", "v1;s4:city$4:WienSne");
    COMPILES("first(\"Signed Up\") < last_seen",
             "v1;f9:Signed Upn9:last_seenNlt");
    COMPILES("sum(\"Order Completed\", \"net revenue\") > 0",
             "v1;u15:Order Completed11:net revenue#0;Ngt");
    COMPILES("sum(\"O\", items.price) > 0", "v1;u1:O11:items.price#0;Ngt");
    COMPILES("trait.2fa == \"on\"", "v1;s9:trait.2fa$2:onSeq");

    /* numbers as written: negative, decimal, leading zeros */
    COMPILES("events > -1.5", "v1;n6:events#-1.5;Ngt");
    COMPILES("events >= 007", "v1;n6:events#007;Nge");
    COMPILES("3 <= count(\"x\")", "v1;#3;c1:xNle");
    COMPILES("1 == 1", "v1;#1;#1;Neq");
    COMPILES("\"a\" != \"b\"", "v1;$1:a$1:bSne");

    /* every comparison */
    COMPILES("events == 1", "v1;n6:events#1;Neq");
    COMPILES("events != 1", "v1;n6:events#1;Nne");
    COMPILES("events < 1", "v1;n6:events#1;Nlt");
    COMPILES("events <= 1", "v1;n6:events#1;Nle");
    COMPILES("events > 1", "v1;n6:events#1;Ngt");
    COMPILES("events >= 1", "v1;n6:events#1;Nge");

    /* spacing: none, or any of space, tab, CR, LF */
    COMPILES("events>=1", "v1;n6:events#1;Nge");
    COMPILES("(events>=1)and(page_views<2)",
             "v1;n6:events#1;Ngen10:page_views#2;Nlt&");
    COMPILES("count(\"a\")>=1", "v1;c1:a#1;Nge");
    COMPILES(" \t\r\nevents\n>=\t1 \n", "v1;n6:events#1;Nge");
    COMPILES("last(\"x\")before(1s)", "v1;l1:xB1000;");
    COMPILES("last(\"x\") before ( 1s )", "v1;l1:xB1000;");
    COMPILES("country in(DE,AT)", "v1;s7:country$2:DE$2:ATI2;");

    /* durations */
    COMPILES("seen_within(1s)", "v1;n9:last_seenW1000;");
    COMPILES("seen_within(90m)", "v1;n9:last_seenW5400000;");
    COMPILES("seen_within(36h)", "v1;n9:last_seenW129600000;");
    COMPILES("seen_within(0001d)", "v1;n9:last_seenW86400000;");
    COMPILES("first_seen within(365d)", "v1;n10:first_seenW31536000000;");
    COMPILES("first(\"a\") before(1m)", "v1;f1:aB60000;");

    /* in: strings, bare words, numbers, one item */
    COMPILES("country in (\"DE\")", "v1;s7:country$2:DEI1;");
    COMPILES("city in (New_York, \"S\xc3\xa3o\")",
             "v1;s4:city$8:New_York$4:S\xc3\xa3oI2;");
    COMPILES("events in (1, 2, -3.5)", "v1;n6:events#1;#2;#-3.5;I3;");
    COMPILES("count(\"x\") in (0)", "v1;c1:x#0;I1;");
    COMPILES("country in (and, in, DE.x)",
             "v1;s7:country$3:and$2:in$4:DE.xI3;");
    COMPILES("trait.tier in (gold, 3, \"x y\")",
             "v1;s10:trait.tier$4:gold#3;$3:x yI3;");

    /* consent */
    COMPILES("consent has analytics", "v1;H9:analytics");
    COMPILES("consent has personalization", "v1;H15:personalization");
    COMPILES("not consent has marketing", "v1;H9:marketing!");
}


/* not > and > or; parentheses; left to right */

static void
test_precedence(void)
{
    COMPILES("events > 1 or events > 2 and events > 3",
             "v1;n6:events#1;Ngtn6:events#2;Ngtn6:events#3;Ngt&|");
    COMPILES("events > 1 and events > 2 or events > 3",
             "v1;n6:events#1;Ngtn6:events#2;Ngt&n6:events#3;Ngt|");
    COMPILES("(events > 1 or events > 2) and events > 3",
             "v1;n6:events#1;Ngtn6:events#2;Ngt|n6:events#3;Ngt&");
    COMPILES("events > 1 and (events > 2 or events > 3)",
             "v1;n6:events#1;Ngtn6:events#2;Ngtn6:events#3;Ngt|&");
    COMPILES("not events > 1 and events > 2",
             "v1;n6:events#1;Ngt!n6:events#2;Ngt&");
    COMPILES("not (events > 1 and events > 2)",
             "v1;n6:events#1;Ngtn6:events#2;Ngt&!");
    COMPILES("not not events > 1", "v1;n6:events#1;Ngt!!");
    COMPILES("events > 1 or not events > 2 and events > 3",
             "v1;n6:events#1;Ngtn6:events#2;Ngt!n6:events#3;Ngt&|");

    /* left-associative */
    COMPILES("events > 1 and events > 2 and events > 3",
             "v1;n6:events#1;Ngtn6:events#2;Ngt&n6:events#3;Ngt&");
    COMPILES("events > 1 or events > 2 or events > 3",
             "v1;n6:events#1;Ngtn6:events#2;Ngt|n6:events#3;Ngt|");
    COMPILES("((events > 1))", "v1;n6:events#1;Ngt");

    /* and the evaluator agrees: false or (true and false) */
    IS("events > 5 or events > 1 and events > 9", 0, "events", "3");
    IS("(events > 5 or events > 1) and events < 9", 1, "events", "3");
    IS("not events > 5 and events > 1", 1, "events", "3");
    IS("not (events > 5 or events > 1)", 0, "events", "3");
}


/* which comparison: N or S, by the types of both sides */

static void
test_types(void)
{
    /* number and time mix; a literal compares with a time */
    COMPILES("last(\"a\") < first_seen", "v1;l1:an10:first_seenNlt");
    COMPILES("count(\"a\") > last_seen", "v1;c1:an9:last_seenNgt");
    COMPILES("last_seen > 1700000000000",
             "v1;n9:last_seen#1700000000000;Ngt");

    /* a trait takes the other side's type */
    COMPILES("trait.seats >= 3", "v1;s11:trait.seats#3;Nge");
    COMPILES("trait.seats != 3", "v1;s11:trait.seats#3;Nne");
    COMPILES("3 < trait.seats", "v1;#3;s11:trait.seatsNlt");
    COMPILES("trait.at > last_seen", "v1;s8:trait.atn9:last_seenNgt");
    COMPILES("trait.plan != \"pro\"", "v1;s10:trait.plan$3:proSne");
    COMPILES("country == trait.home", "v1;s7:countrys10:trait.homeSeq");

    /* two traits: strings to == and !=, numbers to the others */
    COMPILES("trait.a == trait.b", "v1;s7:trait.as7:trait.bSeq");
    COMPILES("trait.a != trait.b", "v1;s7:trait.as7:trait.bSne");
    COMPILES("trait.a < trait.b", "v1;s7:trait.as7:trait.bNlt");
    COMPILES("trait.a >= trait.b", "v1;s7:trait.as7:trait.bNge");

    FAILS("country == 3", 8, "cannot compare a string with a number");
    FAILS("3 != city", 2, "cannot compare a number with a string");
    FAILS("first_seen == \"x\"", 11, "cannot compare a time with a string");
    FAILS("\"x\" > last(\"e\")", 4, "cannot compare a string with a time");
    FAILS("country < \"x\"", 8, "\"<\" needs numbers or times, not strings");
    FAILS("\"a\" >= \"b\"", 4, "\">=\" needs numbers or times, not strings");
    FAILS("trait.plan <= \"pro\"", 11,
          "\"<=\" needs numbers or times, not strings");
    FAILS("region > trait.x", 7, "\">\" needs numbers or times, not strings");

    FAILS("events before(2d)", 7, "\"before\" needs a time, got a number");
    FAILS("count(\"x\") within(2d)", 11,
          "\"within\" needs a time, got a number");
    FAILS("country before(2d)", 8, "\"before\" needs a time, got a string");
    FAILS("trait.at before(2d)", 9, "\"before\" needs a time, got a trait");
    FAILS("1700000000000 before(2d)", 14,
          "\"before\" needs a time, got a number");

    FAILS("first_seen in (1)", 11,
          "\"in\" needs a string or a number, got a time");
    FAILS("events in (DE)", 11, "a number is expected, got a string");
    FAILS("events in (1, \"2\")", 14, "a number is expected, got a string");
    FAILS("country in (DE, 1)", 16, "a string is expected, got a number");
    FAILS("country in ()", 12, "a string or a number is expected");
    FAILS("country in (DE,)", 15, "a string or a number is expected");
    FAILS("country in (DE AT)", 15, "\")\" expected");
    FAILS("country in DE", 11, "\"(\" expected");
    FAILS("country in (DE", 14, "\")\" expected");
}


static void
test_errors(void)
{
    /* names */
    FAILS("trate.plan == \"pro\"", 0, "unknown field \"trate.plan\"");
    FAILS("trate == 1", 0, "unknown field \"trate\"");
    FAILS("events > 1 and Events > 1", 15, "unknown field \"Events\"");
    FAILS("foo(\"x\") > 1", 0, "unknown function \"foo\"");
    FAILS("avg (\"x\") > 1", 0, "unknown function \"avg\"");
    FAILS("traits == 1", 0, "unknown field \"traits\"");
    FAILS("trait == 1", 0,
          "bad trait name \"trait\": 1 to 64 of A-Z, a-z, 0-9 and _");
    FAILS("trait. == 1", 0,
          "bad trait name \"trait.\": 1 to 64 of A-Z, a-z, 0-9 and _");
    FAILS("trait.a.b == 1", 0,
          "bad trait name \"trait.a.b\": 1 to 64 of A-Z, a-z, 0-9 and _");
    FAILS("COUNT(\"x\") > 1", 0, "unknown function \"COUNT\"");

    /* a value alone */
    FAILS("events", 6, "a comparison is expected");
    FAILS("count(\"x\")", 10, "a comparison is expected");
    FAILS("events and events > 1", 7, "a comparison is expected");
    FAILS("(trait.vip)", 10, "a comparison is expected");
    FAILS("\"x\"", 3, "a comparison is expected");

    /* where a condition or a value should be */
    FAILS("", 0, "empty rule");
    FAILS(" \t\n", 3, "empty rule");
    FAILS("events >= 1 and", 15, "a condition is expected, got the end");
    FAILS("not", 3, "a condition is expected, got the end");
    FAILS("and events > 1", 0, "a condition is expected, got \"and\"");
    FAILS("()", 1, "a condition is expected, got \")\"");
    FAILS(", 1", 0, "a condition is expected, got \",\"");
    FAILS("events >", 8, "a value is expected, got the end");
    FAILS("events > and", 9, "a value is expected, got \"and\"");
    FAILS("events > (1)", 9, "a value is expected, got \"(\"");
    FAILS("events > consent", 9, "a value is expected, got \"consent\"");
    FAILS("events == == 1", 10, "a value is expected, got \"==\"");

    /* parentheses and trailing input */
    FAILS("(events > 1", 11, "\")\" expected");
    FAILS("(events > 1 events", 12, "\")\" expected");
    FAILS("events > 1)", 10, "\"and\" or \"or\" expected, got \")\"");
    FAILS("events > 1 events > 2", 11,
          "\"and\" or \"or\" expected, got \"events\"");
    FAILS("events > 1 > 2", 11, "\"and\" or \"or\" expected, got \">\"");
    FAILS("events > 1 \"x\"", 11,
          "\"and\" or \"or\" expected, got a string");
    FAILS("events > 1 AND events > 2", 11,
          "\"and\" or \"or\" expected, got \"AND\"");
    FAILS("events > 1 && events > 2", 11,
          "unexpected character \"&\"");

    /* functions */
    FAILS("count > 1", 6, "\"(\" expected");
    FAILS("count(x) > 1", 6, "an event name in quotes is expected");
    FAILS("count(\"\") > 1", 6, "empty event name");
    FAILS("count(\"x\" > 1", 10, "\")\" expected");
    FAILS("sum(\"x\") > 1", 7, "\",\" expected");
    FAILS("sum(\"x\", 3) > 1", 9, "a property name is expected");
    FAILS("sum(\"x\", \"\") > 1", 9, "empty property name");
    FAILS("sum(\"x\", a, b) > 1", 10, "\")\" expected");

    /* durations */
    FAILS("seen_before(3w)", 12, "bad duration \"3w\": a number and s, m, h "
          "or d");
    FAILS("seen_before(3)", 12, "bad duration \"3\": a number and s, m, h "
          "or d");
    FAILS("seen_before(1.5d)", 12, "bad duration \"1.5d\": a number and s, "
          "m, h or d");
    FAILS("seen_before(-1d)", 12, "bad duration \"-1d\": a number and s, m, "
          "h or d");
    FAILS("seen_before(3D)", 12, "bad duration \"3D\": a number and s, m, h "
          "or d");
    FAILS("seen_before(3ms)", 12, "bad duration \"3ms\": a number and s, m, "
          "h or d");
    FAILS("seen_before(d)", 12, "a duration is expected, got \"d\"");
    FAILS("seen_before()", 12, "a duration is expected, got \")\"");
    FAILS("seen_before(0d)", 12, "duration \"0d\" is not more than 0");
    FAILS("seen_before(000s)", 12, "duration \"000s\" is not more than 0");
    FAILS("seen_before 3d", 12, "\"(\" expected");
    FAILS("seen_before(3d", 14, "\")\" expected");
    FAILS("seen_before(3d 4h)", 15, "\")\" expected");
    FAILS("last(\"x\") before 2d", 17, "\"(\" expected");

    /* numbers */
    FAILS("events >= 1.", 10, "bad number \"1.\"");
    FAILS("events >= 3w", 10, "bad number \"3w\"");
    FAILS("events >= 1.2.3", 10, "bad number \"1.2.3\"");
    FAILS("events >= 1e3", 10, "bad number \"1e3\"");
    FAILS("events >= .5", 10, "unexpected character \".\"");
    FAILS("events >= - 1", 10, "unexpected character \"-\"");
    FAILS("events >= 1and events > 2", 10, "bad number \"1and\"");

    /* strings */
    FAILS("country == \"DE", 11, "unterminated string");
    FAILS("country == \"DE\\\"", 11, "unterminated string");
    FAILS("country == \"DE\\", 11, "unterminated string");
    FAILS("country == \"D\\nE\"", 13,
          "bad escape: only \\\" and \\\\ in a string");
    FAILS("country == 'DE'", 11, "unexpected character \"'\"");

    /* operators */
    FAILS("events = 1", 7, "\"=\" is not an operator, use \"==\"");
    FAILS("events ! 1", 7, "unexpected character \"!\"");
    FAILS("events <> 1", 8, "a value is expected, got \">\"");
    FAILS("events => 1", 7, "\"=\" is not an operator, use \"==\"");

    /* consent */
    FAILS("consent has foo", 12, "unknown purpose \"foo\": analytics, "
          "marketing or personalization");
    FAILS("consent has necessary", 12, "unknown purpose \"necessary\": "
          "analytics, marketing or personalization");
    FAILS("consent has Marketing", 12, "unknown purpose \"Marketing\": "
          "analytics, marketing or personalization");
    FAILS("consent has", 11, "a purpose is expected: analytics, marketing "
          "or personalization");
    FAILS("consent has \"marketing\"", 12, "a purpose is expected: "
          "analytics, marketing or personalization");
    FAILS("consent == \"x\"", 8, "\"has\" expected");
    FAILS("consent", 7, "\"has\" expected");

    /* keywords are lowercase, and not values */
    FAILS("NOT events > 1", 0, "unknown field \"NOT\"");
    FAILS("in == 1", 0, "a condition is expected, got \"in\"");
    FAILS("before == 1", 0, "a condition is expected, got \"before\"");
}


/* echoed input: at most NGX_CDP_RULE_ECHO_MAX bytes, printable, escaped */

static void
test_echo(void)
{
    FAILS("abcdefghijabcdefghijabcdefghijabcdefghij == 1", 0,
          "unknown field \"abcdefghijabcdefghijabcdefghijabcdefghij\"");
    FAILS("abcdefghijabcdefghijabcdefghijabcdefghijk == 1", 0,
          "unknown field \"abcdefghijabcdefghijabcdefghijabcdefghij...\"");
    FAILS("events > 1\x01", 10, "unexpected character \"\\x01\"");
    FAILS("events > 1 \xc3\xa9", 11, "unexpected character \"\\xc3\"");
    FAILS("events > 1 \x7f", 11, "unexpected character \"\\x7f\"");
    FAILS("events > 1\0", 10, "unexpected character \"\\x00\"");
    FAILS("events > 1 and \"x\" == \"y\" \0", 26,
          "unexpected character \"\\x00\"");
    FAILS("seen_before(1\x01)", 12, "bad duration \"1\": a number and s, m, "
          "h or d");
    FAILS("seen_before(99999999999999999999999999999999999999999999999d)",
          12, "duration \"999999999999999999999999999999999999999"
          "9...\" is too long");
}


static void
test_strings(void)
{
    ngx_cdp_rule_t        rule;
    ngx_cdp_rule_error_t  err;

    /* escapes, and any other byte as it is, NUL and newlines too */
    COMPILES("country == \"a\\\"b\\\\c\"", "v1;s7:country$5:a\"b\\cSeq");
    COMPILES("country == \"\"", "v1;s7:country$0:Seq");
    COMPILES("count(\"\\\"\") > 0", "v1;c1:\"#0;Ngt");
    COMPILES("count(\"caf\xc3\xa9\") > 0", "v1;c5:caf\xc3\xa9#0;Ngt");
    COMPILES("count(\"a\nb\") > 0", "v1;c3:a\nb#0;Ngt");
    COMPILES("count(\"a:b;c\") > 0", "v1;c5:a:b;c#0;Ngt");
    COMPILES("count(\"1:x\") > 0", "v1;c3:1:x#0;Ngt");

    /* a NUL byte in a name: the program holds it */
    CHECK(ngx_cdp_compile(L("count(\"a\0b\") > 0"), &rule, &err) == 0);
    CHECK(rule.len == sizeof("v1;c3:a\0b#0;Ngt") - 1
          && memcmp(rule.code, "v1;c3:a\0b#0;Ngt", rule.len) == 0);
    CHECK(rule.nevents == 1 && rule.events[0].name.len == 3
          && memcmp(rule.events[0].name.data, "a\0b", 3) == 0);
    CHECK(ngx_cdp_eval(rule.code, rule.len, NULL, NOW, NULL) == 0);
    ngx_cdp_rule_free(&rule);

    /* len bounds the rule */
    CHECK(ngx_cdp_compiles_to((const u_char *) "events > 1 garbage", 10,
                              "v1;n6:events#1;Ngt"));
    CHECK(ngx_cdp_fails_with((const u_char *) "events > 12", 9, 9,
                             "a value is expected, got the end"));

    /* NULL with length 0, and a NULL err */
    CHECK(ngx_cdp_rule_compile(NULL, 0, &rule, NULL) == -1);
    CHECK(rule.code == NULL);
    CHECK(ngx_cdp_rule_compile((const u_char *) "events > 1", 10, &rule,
                               NULL) == 0);
    ngx_cdp_rule_free(&rule);
}


/* repeat s n times, then tail, into a malloc()ed string */

static u_char *
ngx_cdp_repeat(const char *head, const char *s, size_t n, const char *tail,
    size_t *len)
{
    size_t   i, hl, sl, tl;
    u_char  *b, *p;

    hl = strlen(head);
    sl = strlen(s);
    tl = strlen(tail);

    *len = hl + n * sl + tl;
    b = ngx_cdp_buf(*len);
    p = b;

    memcpy(p, head, hl);
    p += hl;

    for (i = 0; i < n; i++) {
        memcpy(p, s, sl);
        p += sl;
    }

    memcpy(p, tail, tl);

    return b;
}


static int
ngx_cdp_repeat_compiles(const char *head, const char *s, size_t n,
    const char *tail)
{
    int                   rc;
    size_t                len;
    u_char               *b;
    ngx_cdp_rule_t        rule;
    ngx_cdp_rule_error_t  err;

    b = ngx_cdp_repeat(head, s, n, tail, &len);
    rc = ngx_cdp_rule_compile(b, len, &rule, &err);

    if (rc == 0) {
        rc = ngx_cdp_eval(rule.code, rule.len, NULL, NOW, NULL) >= 0 ? 0 : -2;
        ngx_cdp_rule_free(&rule);
    }

    free(b);

    return rc;
}


static int
ngx_cdp_repeat_fails(const char *head, const char *s, size_t n,
    const char *tail, size_t pos, const char *msg)
{
    int      ok;
    size_t   len;
    u_char  *b;

    b = ngx_cdp_repeat(head, s, n, tail, &len);
    ok = ngx_cdp_fails_with(b, len, pos, msg);
    free(b);

    return ok;
}


static void
test_limits(void)
{
    size_t                len;
    u_char               *b;
    ngx_cdp_rule_t        rule;
    ngx_cdp_rule_error_t  err;

    /* length: 4096 bytes (spaces count) */
    CHECK(ngx_cdp_repeat_compiles("events > 1", " ", 4086, "") == 0);
    CHECK(ngx_cdp_repeat_fails("events > 1", " ", 4087, "", 4096,
                               "rule longer than 4096 bytes"));

    /* depth: 32 nested "(" or "not", each level one of them */
    CHECK(ngx_cdp_repeat_compiles("", "(", 32, "events > 1"
                                  "))))))))))))))))))))))))))))))))") == 0);
    CHECK(ngx_cdp_repeat_fails("", "(", 33, "events > 1"
                               ")))))))))))))))))))))))))))))))))",
                               32, "nested deeper than 32"));
    CHECK(ngx_cdp_repeat_compiles("", "not ", 32, "events > 1") == 0);
    CHECK(ngx_cdp_repeat_fails("", "not ", 33, "events > 1", 128,
                               "nested deeper than 32"));
    CHECK(ngx_cdp_repeat_compiles("", "not (", 16, "events > 1"
                                  "))))))))))))))))") == 0);
    CHECK(ngx_cdp_repeat_fails("", "(not ", 16, "not events > 1"
                               "))))))))))))))))", 80,
                               "nested deeper than 32"));

    /* side by side is not nested */
    CHECK(ngx_cdp_repeat_compiles("(events > 1)", " and (events > 1)", 100,
                                  "") == 0);

    /* tokens: 1024; "events > 1 and " is 4 */
    CHECK(ngx_cdp_repeat_compiles("", "events > 1 and ", 255, "events > 1")
          == 0);
    CHECK(ngx_cdp_repeat_fails("", "events > 1 and ", 256, "events > 1",
                               15 * 256, "more than 1024 tokens"));

    /* as many facts as the tokens allow (10 tokens), each counted once */
    b = ngx_cdp_repeat("", "last(\"a\")<last(\"b\")or ", 102, "1<2", &len);
    CHECK(ngx_cdp_rule_compile(b, len, &rule, &err) == 0);
    CHECK(rule.nevents == 2 && rule.events[0].facts == NGX_CDP_RULE_LAST
          && rule.events[1].facts == NGX_CDP_RULE_LAST);
    CHECK(ngx_cdp_eval(rule.code, rule.len, NULL, NOW, NULL) == 1);
    ngx_cdp_rule_free(&rule);
    free(b);

    /* the 1025th token is the "<" of the 103rd */
    CHECK(ngx_cdp_repeat_fails("", "last(\"a\")<last(\"b\")or ", 103, "1<2",
                               22 * 102 + 9, "more than 1024 tokens"));

    /* names */
    CHECK(ngx_cdp_repeat_compiles("count(\"", "x", 200, "\") > 0") == 0);
    CHECK(ngx_cdp_repeat_fails("count(\"", "x", 201, "\") > 0", 6,
                               "event name longer than 200 bytes"));
    CHECK(ngx_cdp_repeat_compiles("count(\"", "\\\"", 200, "\") > 0") == 0);
    CHECK(ngx_cdp_repeat_compiles("sum(\"x\", \"", "y", 200, "\") > 0")
          == 0);
    CHECK(ngx_cdp_repeat_fails("sum(\"x\", \"", "y", 201, "\") > 0", 9,
                               "property name longer than 200 bytes"));
    CHECK(ngx_cdp_repeat_compiles("trait.", "t", 64, " == 1") == 0);
    CHECK(ngx_cdp_repeat_fails("trait.", "t", 65, " == 1", 0,
                               "bad trait name \"trait.tttttttttttttttttt"
                               "tttttttttttttttt...\": 1 to 64 of A-Z, "
                               "a-z, 0-9 and _"));

    /* numbers: 32 bytes */
    CHECK(ngx_cdp_repeat_compiles("events > -", "1", 31, "") == 0);
    CHECK(ngx_cdp_repeat_fails("events > -", "1", 32, "", 9,
                               "number longer than 32 bytes"));
    CHECK(ngx_cdp_repeat_compiles("events > 1.", "0", 30, "") == 0);

    /* durations: up to 2^53 - 1 ms, in any unit */
    COMPILES("seen_within(104249991d)", "v1;n9:last_seenW9007199222400000;");
    FAILS("seen_within(104249992d)", 12,
          "duration \"104249992d\" is too long");
    COMPILES("seen_within(9007199254740s)",
             "v1;n9:last_seenW9007199254740000;");
    FAILS("seen_within(9007199254741s)", 12,
          "duration \"9007199254741s\" is too long");
    COMPILES("seen_within(2501999792h)", "v1;n9:last_seenW9007199251200000;");
    FAILS("seen_within(2501999793h)", 12,
          "duration \"2501999793h\" is too long");
    FAILS("seen_within(18446744073709551617s)", 12,
          "duration \"18446744073709551617s\" is too long");
}


/* what the store must keep */

static void
test_facts(void)
{
    ngx_cdp_rule_t         rule;
    ngx_cdp_rule_error_t   err;
    ngx_cdp_rule_event_t  *ev;

    CHECK(ngx_cdp_compile(L("count(\"a\") > 1 or first(\"a\") > 0"
                            " and sum(\"b\", x) > 1 and sum(\"a\", \"y\") > 2"
                            " and sum(\"a\", y) > 0 and last(\"b\") > 0"
                            " and sum(\"b\", \"z\") > 0"
                            " and sum(\"b\", x) < 10 and count(\"a\") < 9"),
                          &rule, &err) == 0);

    ev = rule.events;

    CHECK(rule.nevents == 2);
    CHECK(ev[0].name.len == 1 && ev[0].name.data[0] == 'a');
    CHECK(ev[0].facts == (NGX_CDP_RULE_COUNT | NGX_CDP_RULE_FIRST
                          | NGX_CDP_RULE_SUM));
    CHECK(ev[0].nsums == 1 && ev[0].sums[0].len == 1
          && ev[0].sums[0].data[0] == 'y');

    CHECK(ev[1].name.len == 1 && ev[1].name.data[0] == 'b');
    CHECK(ev[1].facts == (NGX_CDP_RULE_SUM | NGX_CDP_RULE_LAST));
    CHECK(ev[1].nsums == 2 && ev[1].sums[0].data[0] == 'x'
          && ev[1].sums[1].data[0] == 'z');

    /* the names are the program's own bytes */
    CHECK(ev[0].name.data > rule.code
          && ev[0].name.data < rule.code + rule.len
          && ev[1].sums[1].data < rule.code + rule.len);
    CHECK(rule.flags == 0);

    ngx_cdp_rule_free(&rule);

    CHECK(ngx_cdp_compile(L("last(\"Checkout Started\") before(2d) and "
                            "last(\"Order Completed\") < "
                            "last(\"Checkout Started\")"), &rule, &err) == 0);
    ev = rule.events;

    CHECK(rule.nevents == 2 && rule.flags == NGX_CDP_RULE_TIME);
    CHECK(ev[0].name.len == 16
          && memcmp(ev[0].name.data, "Checkout Started", 16) == 0
          && ev[0].facts == NGX_CDP_RULE_LAST && ev[0].nsums == 0
          && ev[0].sums == NULL);
    CHECK(ev[1].name.len == 15
          && memcmp(ev[1].name.data, "Order Completed", 15) == 0
          && ev[1].facts == NGX_CDP_RULE_LAST);

    ngx_cdp_rule_free(&rule);

    /* the same property of two events is two facts; names are exact */
    CHECK(ngx_cdp_compile(L("sum(\"a\", v) > 0 or sum(\"A\", v) > 0"
                            " or sum(\"a\", \"v \") > 0"), &rule, &err) == 0);
    ev = rule.events;

    CHECK(rule.nevents == 2 && ev[0].nsums == 2 && ev[1].nsums == 1
          && ev[0].sums[1].len == 2 && ev[1].name.data[0] == 'A');

    ngx_cdp_rule_free(&rule);

    /* every flag and purpose */
    CHECK(ngx_cdp_compile(L("consent has analytics and consent has "
                            "personalization and city == trait.city and "
                            "first_seen within(1d)"), &rule, &err) == 0);
    CHECK(rule.flags == (NGX_CDP_RULE_CONSENT | NGX_CDP_RULE_GEO
                         | NGX_CDP_RULE_TRAITS | NGX_CDP_RULE_TIME)
          && rule.consent == (NGX_CDP_CONSENT_ANALYTICS
                              | NGX_CDP_CONSENT_PERSONALIZATION)
          && rule.nevents == 0);
    ngx_cdp_rule_free(&rule);
}


/* the examples, evaluated */

static void
test_eval_examples(void)
{
    /* loyal */
    IS(loyal, 1, "count|Order Completed", "3");
    IS(loyal, 0, "count|Order Completed", "2");
    IS(loyal, 1, "count|Order Completed", "30");
    IS(loyal, 0, "count|Checkout Started", "3");
    IS(loyal, 0, "events", "3");

    /* big spender */
    IS(big, 1, "sum|Order Completed|revenue", "500");
    IS(big, 1, "sum|Order Completed|revenue", "1234.5");
    IS(big, 0, "sum|Order Completed|revenue", "499.99");
    IS(big, 0, "sum|Order Completed|net", "900");
    IS(big, 0, "sum|Order Completed|revenue", "lots");

    /* dormant */
    IS(dormant, 1, "last_seen", AGO(31), "events", "5");
    IS(dormant, 0, "last_seen", AGO(29), "events", "5");
    IS(dormant, 0, "last_seen", AGO(31));
    IS(dormant, 1, "last_seen", AGO(30), "events", "1");

    /* recent */
    IS(recent, 1, "last_seen", AGO(1));
    IS(recent, 0, "last_seen", AGO(8));
    IS(recent, 0, "last_seen", AGO(7));
    IS(recent, 0, "events", "3");

    /* plan and geo */
    IS(plan_geo, 1, "trait.plan", "pro", "country", "DE");
    IS(plan_geo, 1, "trait.plan", "pro", "country", "AT");
    IS(plan_geo, 0, "trait.plan", "pro", "country", "CH");
    IS(plan_geo, 0, "trait.plan", "pro", "country", "de");
    IS(plan_geo, 0, "trait.plan", "pro");
    IS(plan_geo, 0, "trait.plan", "team", "country", "DE");
    IS(plan_geo, 0, "trait.plan", "pro ", "country", "DE");
    IS(plan_geo, 0, "country", "DE");

    /* abandoned checkout */
    IS(abandoned, 1, "last|Checkout Started", AGO(3));
    IS(abandoned, 0, "last|Checkout Started", AGO(1));
    IS(abandoned, 0, "last|Checkout Started", AGO(3),
       "last|Order Completed", AGO(2.5));
    IS(abandoned, 1, "last|Checkout Started", AGO(3),
       "last|Order Completed", AGO(10));
    IS(abandoned, 0, "last|Order Completed", AGO(10));
    IS(abandoned, 0, "events", "1");

    /* consent */
    IS(consent_m, 1, "consent", "analytics,marketing");
    IS(consent_m, 1, "consent", "marketing");
    IS(consent_m, 1, "consent", "analytics,marketing,personalization");
    IS(consent_m, 0, "consent", "analytics,personalization");
    IS(consent_m, 0, "consent", "none");
    IS(consent_m, 0, "consent", "");
    IS(consent_m, 0, "consent", "marketingx");
    IS(consent_m, 0, "consent", "analytics,market");
    IS(consent_m, 0, "events", "1");
}


/* when the result may change without an event */

static void
test_due(void)
{
    /* dormant: 30 days after last_seen, once */
    DUE(dormant, NOW + 20 * DAY, "last_seen", AGO(10), "events", "1");
    DUE(dormant, NONE, "last_seen", AGO(31), "events", "1");
    DUE(dormant, NONE, "events", "1");

    /* the due time exists whatever the other side of "and" says */
    DUE(dormant, NOW + 20 * DAY, "last_seen", AGO(10));

    /* abandoned checkout: two days after the checkout */
    DUE(abandoned, NOW + 1 * DAY, "last|Checkout Started", AGO(1));
    DUE(abandoned, NONE, "last|Checkout Started", AGO(3));
    DUE(abandoned, NONE, "last|Order Completed", AGO(1));

    /* recent: it ends */
    DUE(recent, NOW + 6 * DAY, "last_seen", AGO(1));

    /* the boundary: exactly D ago is "before", no longer "within" */
    IS("seen_before(1d)", 1, "last_seen", AGO(1));
    IS("seen_within(1d)", 0, "last_seen", AGO(1));
    DUE("seen_before(1d)", NONE, "last_seen", AGO(1));

    /* never: before anything, within nothing, no due time */
    IS("seen_before(1s)", 1, "events", "0");
    IS("seen_within(36500d)", 0, "events", "0");
    IS("first(\"x\") before(1s)", 1, "events", "0");
    DUE("first(\"x\") before(1s) or seen_within(1d)", NONE, "events", "0");

    /* a time in the future (a client's clock) */
    IS("seen_within(1d)", 1, "last_seen", AGO(-2));
    DUE("seen_within(1d)", NOW + 3 * DAY, "last_seen", AGO(-2));

    /* the least of several */
    DUE("seen_within(7d) or first_seen before(30d) or last(\"a\") "
        "within(1h)", NOW + 2 * DAY, "last_seen", AGO(5), "first_seen",
        AGO(20), "last|a", AGO(2));
    DUE("seen_within(7d) or first_seen before(30d) or last(\"a\") "
        "within(1h)", NOW + 3600 * S - 60 * S, "last_seen", AGO(5),
        "first_seen", AGO(20), "last|a", ngx_cdp_ago(60 * S / DAY));

    /* no time, no due */
    DUE(loyal, NONE, "count|Order Completed", "1");
}


/* absent and non-numeric values, traits both ways */

static void
test_eval_values(void)
{
    /* a trait compared with a number: numerically, when it is one */
    IS("trait.seats >= 3", 1, "trait.seats", "5");
    IS("trait.seats >= 3", 1, "trait.seats", "3.0");
    IS("trait.seats >= 3", 1, "trait.seats", "3e0");
    IS("trait.seats >= 3", 1, "trait.seats", "10");
    IS("trait.seats >= 3", 0, "trait.seats", "2.5");
    IS("trait.seats >= 3", 0, "trait.seats", "abc");
    IS("trait.seats >= 3", 0, "trait.seats", " 5");
    IS("trait.seats >= 3", 0, "trait.seats", "0x10");
    IS("trait.seats >= 3", 0, "trait.seats", "");
    IS("trait.seats >= 3", 0, "events", "9");

    /* absent or not a number: false, != too */
    IS("trait.seats != 3", 1, "trait.seats", "4");
    IS("trait.seats != 3", 0, "trait.seats", "3");
    IS("trait.seats != 3", 0, "trait.seats", "x");
    IS("trait.seats != 3", 0, "events", "1");
    IS("trait.seats == 3", 0, "events", "1");

    /* with a string: as strings; absent is false, but != is true */
    IS("trait.plan != \"pro\"", 1, "events", "1");
    IS("trait.plan != \"pro\"", 1, "trait.plan", "team");
    IS("trait.plan != \"pro\"", 0, "trait.plan", "pro");
    IS("trait.plan == \"pro\"", 0, "events", "1");
    IS("trait.n == \"3\"", 0, "trait.n", "3.0");
    IS("trait.plan == \"\"", 1, "trait.plan", "");
    IS("country != \"DE\"", 1, "events", "1");
    IS("country == \"DE\"", 0, "events", "1");

    /* two traits */
    IS("trait.a == trait.b", 1, "trait.a", "x", "trait.b", "x");
    IS("trait.a == trait.b", 0, "trait.a", "1", "trait.b", "1.0");
    IS("trait.a < trait.b", 1, "trait.a", "1", "trait.b", "1.5");
    IS("trait.a < trait.b", 0, "trait.a", "1");
    IS("trait.a != trait.b", 1, "trait.a", "1");

    /* in, with a trait: each item as its own type */
    IS("trait.tier in (gold, 3)", 1, "trait.tier", "gold");
    IS("trait.tier in (gold, 3)", 1, "trait.tier", "3");
    IS("trait.tier in (gold, 3)", 1, "trait.tier", "3.00");
    IS("trait.tier in (gold, 3)", 0, "trait.tier", "silver");
    IS("trait.tier in (gold, 3)", 0, "events", "1");
    IS("not trait.tier in (gold, 3)", 1, "events", "1");
    IS("events in (1, 2.5)", 1, "events", "1");
    IS("events in (1, 2.5)", 0, "events", "2");
    IS("events in (0)", 1, "page_views", "2");
    IS("country in (DE, AT)", 0, "events", "1");

    /* missing counters and facts are 0; times are "never" */
    IS("events == 0 and page_views == 0 and count(\"x\") == 0"
       " and sum(\"x\", p) == 0 and first(\"x\") == 0 and last_seen == 0",
       1, "consent", "analytics");
    IS("events == 0", 1, "events", "many");
    IS("last(\"x\") < last_seen", 1, "last_seen", AGO(1));
    IS("last(\"x\") > 0", 0, "events", "1");
    IS("last(\"x\") > 0", 1, "last|x", AGO(100));

    /* numbers */
    IS("events > -1.5", 1, "events", "0");
    IS("sum(\"o\", v) >= 0.1", 1, "sum|o|v", "0.1");
    IS("sum(\"o\", v) < -0.5", 1, "sum|o|v", "-1");
    IS("last_seen >= 1764000000000", 1, "last_seen", "1764000000000");
}


/* the reference evaluator refuses what the format does not allow */

static int
ngx_cdp_refused(const char *code)
{
    return ngx_cdp_eval((const u_char *) code, strlen(code), NULL, NOW, NULL)
           == -1;
}


static void
test_eval_refuses(void)
{
    CHECK(!ngx_cdp_refused("v1;#1;#1;Neq"));
    CHECK(ngx_cdp_refused(""));
    CHECK(ngx_cdp_refused("v1;"));
    CHECK(ngx_cdp_refused("v2;#1;#1;Neq"));
    CHECK(ngx_cdp_refused("v1;#1;"));
    CHECK(ngx_cdp_refused("v1;#1;#1;Neq#1;"));
    CHECK(ngx_cdp_refused("v1;#1;#1;NeqNeq"));
    CHECK(ngx_cdp_refused("v1;#1;#1;Nxx"));
    CHECK(ngx_cdp_refused("v1;$1:a$1:aSlt"));
    CHECK(ngx_cdp_refused("v1;#1;#1;Seq"));
    CHECK(ngx_cdp_refused("v1;#1;#1;Neq&"));
    CHECK(ngx_cdp_refused("v1;#1;!"));
    CHECK(ngx_cdp_refused("v1;n6:eventsB1;!x"));
    CHECK(ngx_cdp_refused("v1;n5:eventB1;"));
    CHECK(ngx_cdp_refused("v1;s6:eventsB1;"));
    CHECK(ngx_cdp_refused("v1;n6:eventsB0;"));
    CHECK(ngx_cdp_refused("v1;n6:eventsB01;"));
    CHECK(ngx_cdp_refused("v1;n6:eventsB1"));
    CHECK(ngx_cdp_refused("v1;s7:country$1:aI2;"));
    CHECK(ngx_cdp_refused("v1;s7:country$1:aI0;"));
    CHECK(ngx_cdp_refused("v1;s7:countrys4:cityI1;"));
    CHECK(ngx_cdp_refused("v1;s7:country$9:a"));
    CHECK(ngx_cdp_refused("v1;s07:country$1:aSeq"));
    CHECK(ngx_cdp_refused("v1;s6:trait.#1;Neq"));
    CHECK(ngx_cdp_refused("v1;c0:#1;Neq"));
    CHECK(ngx_cdp_refused("v1;H4:none"));
    CHECK(ngx_cdp_refused("v1;#1e3;#1;Neq"));
    CHECK(ngx_cdp_refused("v1;#1;#1;Neq "));
}


int
main(void)
{
    test_examples();
    test_syntax();
    test_precedence();
    test_types();
    test_errors();
    test_echo();
    test_strings();
    test_limits();
    test_facts();
    test_eval_examples();
    test_due();
    test_eval_values();
    test_eval_refuses();

    return ngx_cdp_summary();
}
