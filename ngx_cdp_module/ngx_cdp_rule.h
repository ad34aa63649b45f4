
/*
 * ngx_cdp: the rule language of segments, parser and compiler.
 *
 * A segment is defined in nginx.conf as
 *
 *     cdp_segment NAME 'RULE';
 *
 * nginx compiles each RULE once, when it reads its configuration, into
 * the compact postfix program specified below; the store (a Redis Lua
 * function) runs that program on a profile without parsing anything.
 *
 * No nginx types, like ngx_cdp_text.h: the unit tests (tests/unit) and
 * the fuzz target (tests/fuzz) link ngx_cdp_rule.c alone.  Unlike most
 * pure files this one allocates, with malloc(): everything a compiled
 * rule holds is released by ngx_cdp_rule_free().
 *
 *
 * THE LANGUAGE
 *
 *     rule        = or
 *     or          = and { "or" and }
 *     and         = unary { "and" unary }
 *     unary       = "not" unary | "(" or ")" | atom
 *     atom        = value cmp value
 *                 | value "in" "(" item { "," item } ")"
 *                 | value "before" "(" DURATION ")"
 *                 | value "within" "(" DURATION ")"
 *                 | "seen_before" "(" DURATION ")"
 *                 | "seen_within" "(" DURATION ")"
 *                 | "consent" "has" PURPOSE
 *     cmp         = "==" | "!=" | "<" | "<=" | ">" | ">="
 *     item        = STRING | NUMBER | IDENT
 *     value       = NUMBER | STRING
 *                 | "count" "(" EVENT ")"
 *                 | "sum" "(" EVENT "," PROPERTY ")"
 *                 | "first" "(" EVENT ")" | "last" "(" EVENT ")"
 *                 | "events" | "page_views"
 *                 | "first_seen" | "last_seen"
 *                 | "country" | "region" | "city"
 *                 | "trait." NAME
 *
 * so "not" binds tighter than "and", and "and" tighter than "or"; a
 * comparison is one atom ("not events > 1" is "not (events > 1)").
 * Keywords and names are lowercase and case-sensitive.  Space, tab, CR
 * and LF separate tokens.
 *
 *   STRING    '"' ... '"'; inside, \" is '"' and \\ is '\', any other
 *             backslash is an error; any other byte stands for itself
 *   NUMBER    -?[0-9]+(\.[0-9]+)?, at most NGX_CDP_RULE_NUMBER_MAX bytes
 *   DURATION  [0-9]+ then s, m, h or d: seconds, minutes, hours, days;
 *             more than 0 and at most NGX_CDP_RULE_DURATION_MAX ms
 *   IDENT     [A-Za-z_][A-Za-z0-9_.]*: an item IDENT like DE is the
 *             string "DE"
 *   EVENT     a STRING of 1 to NGX_CDP_RULE_NAME_MAX bytes
 *   PROPERTY  an IDENT or a STRING of 1 to NGX_CDP_RULE_NAME_MAX bytes
 *   NAME      [A-Za-z0-9_]{1,64} (NGX_CDP_RULE_TRAIT_MAX)
 *   PURPOSE   analytics, marketing or personalization
 *
 * Types, checked at compile time:
 *
 *   number    count(), sum(), events, page_views, NUMBER literals
 *   time      first(), last(), first_seen, last_seen: ms since the
 *             epoch; a fact that does not exist is "never", 0
 *   string    country, region, city, STRING literals
 *   trait     trait.NAME: compared as the type of the other side
 *
 *   - a comparison needs two numeric sides (number or time, mixed
 *     freely), or two strings; a trait takes the other side's type, and
 *     two traits compare as strings with == and != and as numbers with
 *     the others.  Strings only have == and !=.
 *   - "in" needs a number (its items: NUMBERs), a string (items: STRINGs
 *     and IDENTs) or a trait (any items, each compared as its own type).
 *   - before() and within() need a time; seen_before(D) is
 *     "last_seen before(D)", seen_within(D) "last_seen within(D)".
 *   - "t before(D)": t is at least D ago (now >= t + D), or never;
 *     "t within(D)": less than D ago (now < t + D), never is false.  They
 *     are each other's negation.
 *
 * Limits: NGX_CDP_RULE_LEN_MAX bytes of rule, NGX_CDP_RULE_TOKENS_MAX
 * tokens, NGX_CDP_RULE_DEPTH_MAX nested "(" and "not".
 *
 *
 * THE API
 *
 * ngx_cdp_rule_compile() compiles src (len bytes; src may be NULL when
 * len is 0) into rule and returns 0, or returns -1 with err->pos, the
 * 0-based byte offset of the error in src, and err->msg, a short English
 * message, NUL-terminated, of printable ASCII only (at most
 * NGX_CDP_RULE_ECHO_MAX bytes of the input are quoted in it, escaped), for
 *
 *     cdp_segment "NAME": RULE at position N: MSG
 *
 * e.g. 'unknown field "trate"', 'bad duration "3w": a number and s, m, h
 * or d', '"before" needs a time, got a number', '")" expected'.  Running
 * out of memory is an error too ("out of memory", at position 0).  On
 * error rule is zeroed, and ngx_cdp_rule_free() of it does nothing.
 *
 * src is the directive's argument as nginx hands it over, after nginx's
 * own unescaping (ngx_conf_read_token(): \", \' and \\ lose their
 * backslash, \t, \r and \n become the bytes), and positions count in it:
 * a rule string with an escaped quote is written "a\\\"b" inside a
 * quoted nginx.conf argument.
 *
 * ngx_cdp_rule_free() releases what a compiled rule holds and zeroes it;
 * it may be called again.
 *
 *
 * WHAT THE STORE KEEPS FOR A RULE
 *
 * rule->events lists, in order of first use, each event name that
 * count(), sum(), first() or last() use, once, with the facts used
 * (NGX_CDP_RULE_COUNT, _FIRST, _LAST, _SUM) and, for sum(), the property
 * names, each once, in order of first use.  Names point into rule->code
 * (they are the bytes of the program's strings).  The store keeps these
 * per-event facts only for the names some rule uses, so that what a
 * profile holds stays bounded:
 *
 *   count     the number of events of that name
 *   first     the time (ms) of the first one, by event time
 *   last      the time (ms) of the latest one, by event time
 *   sum P     the sum of property P over them, for the events whose P is
 *             a number
 *
 * rule->flags says what else the program reads: NGX_CDP_RULE_TRAITS
 * (trait.* fields), NGX_CDP_RULE_GEO (country, region, city),
 * NGX_CDP_RULE_CONSENT (the consent field; rule->consent holds the
 * NGX_CDP_CONSENT_* bits tested), NGX_CDP_RULE_TIME (before() or within():
 * the result can change without an event, see "due" below).
 *
 *
 * THE COMPILED FORM (format 1)
 *
 * rule->code, rule->len bytes: printable ASCII except inside strings,
 * which are length-prefixed and may hold any byte; safe as one Redis
 * argument.  It is "v1;" then ops in postfix order, run left to right on
 * a stack; at the end exactly one boolean is left: the rule's result.
 *
 *   <num>   a number in decimal ASCII, -?[0-9]+(\.[0-9]+)?, then ';':
 *           tonumber() of the text before ';'
 *   <str>   a length in decimal ASCII (no leading zero; "0" for empty),
 *           ':', then exactly that many bytes, any byte
 *   <op>    two bytes: eq ne lt le gt ge (==, !=, <, <=, >, >=)
 *
 * Values on the stack: numbers, strings, nil (absent) and booleans.
 * "a" is the value pushed first (the left side), "b" the top.
 *
 *   bytes          pops       pushes
 *   v1;            -          -        format 1; only as the first 3 bytes
 *   #<num>         -          number   a number literal
 *   $<str>         -          string   a string literal
 *   n<str>         -          number   the profile field named <str>
 *                                      (events, page_views, first_seen,
 *                                      last_seen), converted with NUM()
 *                                      below; absent or not a number: 0
 *   s<str>         -          string   the profile field named <str>
 *                                      (country, region, city,
 *                                      trait.NAME), as stored; absent:
 *                                      nil
 *   c<str>         -          number   count of events named <str>; 0
 *   u<str><str>    -          number   sum of property (2nd) over events
 *                                      named (1st); 0 when none
 *   f<str>         -          number   time of the first event named
 *                                      <str>; never: 0
 *   l<str>         -          number   time of the latest one; never: 0
 *   H<str>         -          boolean  the profile's consent field (a
 *                                      ',' list, e.g. "analytics,
 *                                      marketing") has the purpose <str>
 *                                      as one of its items; absent: false
 *   N<op>          a b        boolean  numeric a <op> b: each side that is
 *                                      a string becomes NUM(side); when
 *                                      either side is nil (or NUM() gives
 *                                      nil) the result is false, whatever
 *                                      the op, != too
 *   S<op>          a b        boolean  string equality, <op> eq or ne
 *                                      only, byte by byte; when either
 *                                      side is nil: eq false, ne true
 *   I<num>         value,     boolean  <num> (an integer, 1 or more) is
 *                  <num>               the number of items, pushed after
 *                  items               the value by # and $ ops: true
 *                                      when the value equals one item.  A
 *                                      number item: as N eq; a string
 *                                      item: the value is a string with
 *                                      the same bytes; a nil value: false
 *   B<num>         t          boolean  before: D = <num> ms (an integer);
 *                                      t <= 0 (never): true; else
 *                                      now >= t + D
 *   W<num>         t          boolean  within: t <= 0: false; else
 *                                      now < t + D
 *   &              a b        boolean  a and b
 *   |              a b        boolean  a or b
 *   !              a          boolean  not a
 *
 * NUM(s), for the text of a field or trait: the number when the whole of
 * s is -?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?, else nil ("19.99", "3",
 * "-1e3" are numbers; "", " 3", "0x10", "inf", "true" are not).  In Lua
 * 5.1 (whose tonumber() alone accepts more):
 *
 *     local function NUM(s)
 *         local _, e = s:find("^%-?%d+")
 *         if not e then return nil end
 *         local _, f = s:find("^%.%d+", e + 1)
 *         if f then e = f end
 *         _, f = s:find("^[eE][-+]?%d+", e + 1)
 *         if f then e = f end
 *         if e ~= #s then return nil end
 *         return tonumber(s)
 *     end
 *
 * Strings are compared byte by byte (Lua's == is; "<" on strings is never
 * needed).  Every op is run (there is no short-circuit), so that "due" sees
 * every atom.
 *
 * Due: the next time the result may change without an event, for the
 * store's sorted set of due times.  For each B or W whose t > 0, t + D is
 * when it flips; the evaluator returns the least t + D that is still in
 * the future (t + D > now) over all of them, or none.  Rules without
 * NGX_CDP_RULE_TIME never have one.
 *
 * Durations are at most NGX_CDP_RULE_DURATION_MAX (2^53 - 1) ms, so that
 * they are exact in Lua's numbers.  A reader that meets anything else (an
 * unknown op, a format other than "v1;", a stack that does not end with
 * one boolean) must refuse the program rather than guess.
 *
 * Operands, as the compiler emits them: N gets numbers, strings (from s)
 * and nil; S gets strings and nil, never numbers; I's value is a number,
 * a string or nil; B and W get numbers (from n, f, l); &, | and ! get
 * booleans.  A reader may refuse anything else as malformed.
 *
 * Examples (the unit tests check these bytes):
 *
 *   count("Order Completed") >= 3
 *       v1;c15:Order Completed#3;Nge
 *   sum("Order Completed", revenue) >= 500
 *       v1;u15:Order Completed7:revenue#500;Nge
 *   seen_before(30d) and events >= 1
 *       v1;n9:last_seenB2592000000;n6:events#1;Nge&
 *   seen_within(7d)
 *       v1;n9:last_seenW604800000;
 *   trait.plan == "pro" and country in (DE, AT)
 *       v1;s10:trait.plan$3:proSeqs7:country$2:DE$2:ATI2;&
 *   last("Checkout Started") before(2d)
 *   and last("Order Completed") < last("Checkout Started")
 *       v1;l16:Checkout StartedB172800000;l15:Order Completed
 *       l16:Checkout StartedNlt&                  (one line, no space)
 *   consent has marketing
 *       v1;H9:marketing
 *   not (events > 1 or country != "DE")
 *       v1;n6:events#1;Ngts7:country$2:DESne|!
 */


#ifndef _NGX_CDP_RULE_H_INCLUDED_
#define _NGX_CDP_RULE_H_INCLUDED_


#include "ngx_cdp_consent.h"


#define NGX_CDP_RULE_LEN_MAX       4096
#define NGX_CDP_RULE_TOKENS_MAX    1024
#define NGX_CDP_RULE_DEPTH_MAX     32
#define NGX_CDP_RULE_NAME_MAX      200    /* event and property names */
#define NGX_CDP_RULE_TRAIT_MAX     64
#define NGX_CDP_RULE_NUMBER_MAX    32
#define NGX_CDP_RULE_DURATION_MAX  9007199254740991LL  /* 2^53 - 1 ms */

#define NGX_CDP_RULE_ECHO_MAX      40     /* input bytes quoted in a msg */
#define NGX_CDP_RULE_ERR_MAX       256

/* rule->flags */
#define NGX_CDP_RULE_TRAITS        0x01
#define NGX_CDP_RULE_GEO           0x02
#define NGX_CDP_RULE_CONSENT       0x04
#define NGX_CDP_RULE_TIME          0x08

/* ngx_cdp_rule_event_t.facts */
#define NGX_CDP_RULE_COUNT         0x01
#define NGX_CDP_RULE_FIRST         0x02
#define NGX_CDP_RULE_LAST          0x04
#define NGX_CDP_RULE_SUM           0x08


typedef struct {
    ngx_cdp_str_t          name;        /* into code */
    unsigned               facts;       /* NGX_CDP_RULE_COUNT ... */
    ngx_cdp_str_t         *sums;        /* sum() property names, into code */
    size_t                 nsums;
} ngx_cdp_rule_event_t;

typedef struct {
    u_char                *code;        /* the compiled form, malloc()ed */
    size_t                 len;
    ngx_cdp_rule_event_t  *events;
    size_t                 nevents;
    unsigned               flags;       /* NGX_CDP_RULE_TRAITS ... */
    int                    consent;     /* NGX_CDP_CONSENT_* bits tested */
} ngx_cdp_rule_t;

typedef struct {
    size_t                 pos;
    char                   msg[NGX_CDP_RULE_ERR_MAX];
} ngx_cdp_rule_error_t;


int ngx_cdp_rule_compile(const u_char *src, size_t len, ngx_cdp_rule_t *rule,
    ngx_cdp_rule_error_t *err);
void ngx_cdp_rule_free(ngx_cdp_rule_t *rule);


#endif /* _NGX_CDP_RULE_H_INCLUDED_ */
