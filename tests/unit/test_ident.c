
/*
 * Unit tests of ngx_cdp_ident.c, with the same tiny harness as
 * test_codec.c.
 *
 * Every CHECK counts as one test; the last line is "N passed, N failed"
 * and the exit status is non-zero when anything failed.  Output buffers
 * are allocated at the documented size and followed by a canary; inputs
 * are copied to their exact size, so overruns show up under valgrind and
 * `make sanitize`.
 */



#include <stdarg.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "ngx_cdp_ident.h"
#include "unit.h"



/* e-mail */

/*
 * in normalises to out, into a dst of exactly len bytes; normalising out
 * again gives out; normalising in place gives out too
 */

static int
ngx_cdp_email_is(const u_char *in, size_t len, const char *out)
{
    int      ok;
    size_t   olen;
    u_char   *src, *dst, *again;
    ssize_t  n;

    olen = strlen(out);

    src = ngx_cdp_dup(in, len);
    dst = ngx_cdp_buf(len);

    n = ngx_cdp_email_normalize(dst, src, len);

    ok = n >= 0 && (size_t) n == olen && memcmp(dst, out, olen) == 0
         && ngx_cdp_canary_ok(dst, len) && memcmp(src, in, len) == 0;

    if (ok) {
        again = ngx_cdp_buf(olen);
        n = ngx_cdp_email_normalize(again, dst, olen);
        ok = n >= 0 && (size_t) n == olen && memcmp(again, out, olen) == 0
             && ngx_cdp_canary_ok(again, olen);
        free(again);
    }

    if (ok) {
        n = ngx_cdp_email_normalize(src, src, len);
        ok = n >= 0 && (size_t) n == olen && memcmp(src, out, olen) == 0
             && ngx_cdp_canary_ok(src, len);
    }

    free(src);
    free(dst);

    return ok;
}


/* refused, and dst (len bytes, at least 1) left untouched */

static int
ngx_cdp_email_bad(const u_char *in, size_t len)
{
    int      ok;
    size_t   size;
    u_char   *src, *dst;
    ssize_t  n;

    size = len ? len : 1;

    src = ngx_cdp_dup(in, len);
    dst = ngx_cdp_buf(size);

    n = ngx_cdp_email_normalize(dst, src, len);

    ok = n == -1 && ngx_cdp_untouched(dst, size);

    free(src);
    free(dst);

    return ok;
}


static void
test_email_valid(void)
{
    CHECK(ngx_cdp_email_is(L("Jane@Example.com "), "jane@example.com"));
    CHECK(ngx_cdp_email_is(L("jane@example.com"), "jane@example.com"));
    CHECK(ngx_cdp_email_is(L(" \t\r\n\v\fJANE.DOE+Tag@Mail.Example.CO.UK"
                             " \t\r\n\v\f"),
                           "jane.doe+tag@mail.example.co.uk"));
    CHECK(ngx_cdp_email_is(L("a@b.c"), "a@b.c"));
    CHECK(ngx_cdp_email_is(L("O'Brien@Example.IE"), "o'brien@example.ie"));

    /* every other atext character, and dots anywhere in the local part */
    CHECK(ngx_cdp_email_is(L("!#$%&'*+-/=?^_`{|}~@example.com"),
                           "!#$%&'*+-/=?^_`{|}~@example.com"));
    CHECK(ngx_cdp_email_is(L(".j..ane.@ex-ample.com"),
                           ".j..ane.@ex-ample.com"));

    /* "+tag" and Gmail's dots are kept: provider rules are not applied */
    CHECK(ngx_cdp_email_is(L("J.Ane+News@GMail.com"), "j.ane+news@gmail.com"));

    /* digits, hyphens, many labels */
    CHECK(ngx_cdp_email_is(L("12345@123.45.example"), "12345@123.45.example"));
}


static void
test_email_utf8(void)
{
    /* IDN in UTF-8: kept as is, only ASCII letters are lower-cased */
    CHECK(ngx_cdp_email_is(L("J\xc3\xb6rg@B\xc3\xbc" "cher.DE"),
                           "j\xc3\xb6rg@b\xc3\xbc" "cher.de"));
    CHECK(ngx_cdp_email_is(L("J\xc3\x96RG@B\xc3\x9c" "CHER.de"),
                           "j\xc3\x96rg@b\xc3\x9c" "cher.de"));

    /* CJK local part and domain, 4-byte sequences */
    CHECK(ngx_cdp_email_is(L("\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad"
                             "\x90.\xe5\xb9\xbf\xe5\x91\x8a"),
                           "\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad"
                           "\x90.\xe5\xb9\xbf\xe5\x91\x8a"));
    CHECK(ngx_cdp_email_is(L("\xf0\x9f\x98\x80@example.com"),
                           "\xf0\x9f\x98\x80@example.com"));

    /* punycode is another identifier: no IDN conversion */
    CHECK(ngx_cdp_email_is(L("JORG@XN--BCHER-KVA.DE"),
                           "jorg@xn--bcher-kva.de"));

    /* U+00A0 is not a control character (U+0080 to U+009F are) */
    CHECK(ngx_cdp_email_is(L("a\xc2\xa0" "b@example.com"),
                           "a\xc2\xa0" "b@example.com"));

    /* invalid UTF-8 */
    CHECK(ngx_cdp_email_bad(L("j\xffne@example.com")));
    CHECK(ngx_cdp_email_bad(L("jane@b\xc3(cher.de")));
    CHECK(ngx_cdp_email_bad(L("jane@example.co\xc3")));
    CHECK(ngx_cdp_email_bad(L("\xc0\xaf" "jane@example.com")));
    CHECK(ngx_cdp_email_bad(L("jane@\xed\xa0\x80.com")));
    CHECK(ngx_cdp_email_bad(L("jane@\xf4\x90\x80\x80.com")));
    CHECK(ngx_cdp_email_bad(L("\x80jane@example.com")));

    /* C1 controls: NEL, U+0080, U+009F */
    CHECK(ngx_cdp_email_bad(L("ja\xc2\x85ne@example.com")));
    CHECK(ngx_cdp_email_bad(L("jane@exa\xc2\x80mple.com")));
    CHECK(ngx_cdp_email_bad(L("jane@example.co\xc2\x9f")));
}


static void
test_email_invalid(void)
{
    CHECK(ngx_cdp_email_bad(L("")));
    CHECK(ngx_cdp_email_bad(L("   \t\r\n")));
    CHECK(ngx_cdp_email_bad(L("jane")));
    CHECK(ngx_cdp_email_bad(L("jane@")));
    CHECK(ngx_cdp_email_bad(L("@example.com")));
    CHECK(ngx_cdp_email_bad(L(" @example.com")));
    CHECK(ngx_cdp_email_bad(L("@")));

    /* exactly one '@' */
    CHECK(ngx_cdp_email_bad(L("jane@@example.com")));
    CHECK(ngx_cdp_email_bad(L("ja@ne@example.com")));
    CHECK(ngx_cdp_email_bad(L("jane@example.com@")));

    /* the domain: a dot, no empty label */
    CHECK(ngx_cdp_email_bad(L("jane@example")));
    CHECK(ngx_cdp_email_bad(L("jane@localhost")));
    CHECK(ngx_cdp_email_bad(L("jane@.example.com")));
    CHECK(ngx_cdp_email_bad(L("jane@example.com.")));
    CHECK(ngx_cdp_email_bad(L("jane@example..com")));
    CHECK(ngx_cdp_email_bad(L("jane@.")));
    CHECK(ngx_cdp_email_bad(L("jane@..")));

    /* whitespace and controls inside */
    CHECK(ngx_cdp_email_bad(L("jane doe@example.com")));
    CHECK(ngx_cdp_email_bad(L("jane@exa mple.com")));
    CHECK(ngx_cdp_email_bad(L("jane\t@example.com")));
    CHECK(ngx_cdp_email_bad(L("jane@\nexample.com")));
    CHECK(ngx_cdp_email_bad(L("jane@example.com\0")));
    CHECK(ngx_cdp_email_bad(L("ja\0ne@example.com")));
    CHECK(ngx_cdp_email_bad(L("ja\x01ne@example.com")));
    CHECK(ngx_cdp_email_bad(L("ja\x7fne@example.com")));
    CHECK(ngx_cdp_email_bad(L("ja\x1bne@example.com")));

    /* specials: display names, comments, literals, quoted local parts */
    CHECK(ngx_cdp_email_bad(L("<jane@example.com>")));
    CHECK(ngx_cdp_email_bad(L("Jane <jane@example.com>")));
    CHECK(ngx_cdp_email_bad(L("jane(work)@example.com")));
    CHECK(ngx_cdp_email_bad(L("jane@[192.0.2.1]")));
    CHECK(ngx_cdp_email_bad(L("jane,joe@example.com")));
    CHECK(ngx_cdp_email_bad(L("jane@example.com;joe@example.com")));
    CHECK(ngx_cdp_email_bad(L("mailto:jane@example.com")));
    CHECK(ngx_cdp_email_bad(L("\"jane\"@example.com")));
    CHECK(ngx_cdp_email_bad(L("\"ja@ne\"@example.com")));
    CHECK(ngx_cdp_email_bad(L("ja\\ne@example.com")));
    CHECK(ngx_cdp_email_bad(L("jane@example.com>")));
    CHECK(ngx_cdp_email_bad(L("jane@exam)ple.com")));
    CHECK(ngx_cdp_email_bad(L("jane@exam]ple.com")));
}


static void
test_email_limits(void)
{
    size_t   len;
    u_char   buf[NGX_CDP_EMAIL_MAX + 16], out[NGX_CDP_EMAIL_MAX + 16];
    ssize_t  n;

    /* a local part of 64 bytes, then 65 */

    memset(buf, 'L', 64);
    memcpy(buf + 64, "@example.com", 12);
    memset(out, 'l', 64);
    memcpy(out + 64, "@example.com", 12);
    out[76] = '\0';
    CHECK(ngx_cdp_email_is(buf, 76, (char *) out));

    memset(buf, 'l', 65);
    memcpy(buf + 65, "@example.com", 12);
    CHECK(ngx_cdp_email_bad(buf, 77));

    /* bytes, not characters: 32 times U+00E9 is 64 bytes, 33 is 66 */

    for (len = 0; len < 64; len += 2) {
        buf[len] = 0xc3;
        buf[len + 1] = 0xa9;
    }

    memcpy(buf + 64, "@example.com", 12);
    memcpy(out, buf, 76);
    out[76] = '\0';
    CHECK(ngx_cdp_email_is(buf, 76, (char *) out));

    buf[64] = 0xc3;
    buf[65] = 0xa9;
    memcpy(buf + 66, "@example.com", 12);
    CHECK(ngx_cdp_email_bad(buf, 78));

    /* 254 bytes in all (64 + '@' + 189), then 255 */

    memset(buf, 'a', 64);
    buf[64] = '@';
    memset(buf + 65, 'D', 185);
    memcpy(buf + 250, ".COM", 4);
    memcpy(out, buf, 254);
    memset(out + 65, 'd', 185);
    memcpy(out + 250, ".com", 4);
    out[254] = '\0';
    CHECK(ngx_cdp_email_is(buf, 254, (char *) out));

    /* whitespace around does not count */
    memmove(buf + 3, buf, 254);
    memcpy(buf, "  \t", 3);
    memcpy(buf + 257, " \r\n", 3);
    CHECK(ngx_cdp_email_is(buf, 260, (char *) out));

    memset(buf, 'a', 64);
    buf[64] = '@';
    memset(buf + 65, 'd', 186);
    memcpy(buf + 251, ".com", 4);
    CHECK(ngx_cdp_email_bad(buf, 255));

    /* the result fits len bytes even when dst is src */
    memcpy(buf, " Jane@Example.COM", 17);
    n = ngx_cdp_email_normalize(buf, buf, 17);
    CHECK(n == 16 && memcmp(buf, "jane@example.com", 16) == 0);

    CHECK(ngx_cdp_email_normalize(out, NULL, 0) == -1);
}


/* phone */

static int
ngx_cdp_phone_is(const u_char *in, size_t len, const char *cc,
    const char *out)
{
    int      ok;
    size_t   olen, cc_len, size;
    u_char   *src, *dst, *again;
    ssize_t  n;

    olen = strlen(out);
    cc_len = strlen(cc);

    /* the documented size: min(NGX_CDP_PHONE_MAX, len + 1 + cc_len) */

    size = len + 1 + cc_len;

    if (size > NGX_CDP_PHONE_MAX) {
        size = NGX_CDP_PHONE_MAX;
    }

    src = ngx_cdp_dup(in, len);
    dst = ngx_cdp_buf(size);

    n = ngx_cdp_phone_normalize(dst, src, len, (const u_char *) cc, cc_len);

    ok = n >= 0 && (size_t) n == olen && memcmp(dst, out, olen) == 0
         && ngx_cdp_canary_ok(dst, size) && memcmp(src, in, len) == 0;

    /* idempotent, whatever the default country code */

    if (ok) {
        again = ngx_cdp_buf(NGX_CDP_PHONE_MAX);

        n = ngx_cdp_phone_normalize(again, dst, olen, (const u_char *) cc,
                                    cc_len);
        ok = n >= 0 && (size_t) n == olen && memcmp(again, out, olen) == 0;

        n = ngx_cdp_phone_normalize(again, dst, olen, NULL, 0);
        ok = ok && n >= 0 && (size_t) n == olen
             && memcmp(again, out, olen) == 0
             && ngx_cdp_canary_ok(again, NGX_CDP_PHONE_MAX);

        free(again);
    }

    free(src);
    free(dst);

    return ok;
}


static int
ngx_cdp_phone_bad(const u_char *in, size_t len, const char *cc)
{
    int      ok;
    u_char   *src, *dst;
    ssize_t  n;

    src = ngx_cdp_dup(in, len);
    dst = ngx_cdp_buf(NGX_CDP_PHONE_MAX);

    n = ngx_cdp_phone_normalize(dst, src, len, (const u_char *) cc,
                                strlen(cc));

    ok = n == -1 && ngx_cdp_untouched(dst, NGX_CDP_PHONE_MAX);

    free(src);
    free(dst);

    return ok;
}


static void
test_phone_international(void)
{
    CHECK(ngx_cdp_phone_is(L("+44 20 7946 0958"), "", "+442079460958"));
    CHECK(ngx_cdp_phone_is(L("+44 20 7946 0958"), "1", "+442079460958"));
    CHECK(ngx_cdp_phone_is(L("+442079460958"), "", "+442079460958"));
    CHECK(ngx_cdp_phone_is(L("0044 20 7946 0958"), "", "+442079460958"));
    CHECK(ngx_cdp_phone_is(L("0044 20 7946 0958"), "33", "+442079460958"));
    CHECK(ngx_cdp_phone_is(L("(00 44) 20-7946-0958"), "", "+442079460958"));
    CHECK(ngx_cdp_phone_is(L("+1 (555) 123-4567"), "", "+15551234567"));
    CHECK(ngx_cdp_phone_is(L("+1.555.123.4567"), "44", "+15551234567"));
    CHECK(ngx_cdp_phone_is(L(" \t+33 1 23 45 67 89\r\n"), "",
                           "+33123456789"));
    CHECK(ngx_cdp_phone_is(L("+ 49 30/1234567"), "", "+49301234567"));

    /* "(0)": the trunk prefix written inside an international number */
    CHECK(ngx_cdp_phone_is(L("+44 (0)20 7946 0958"), "", "+442079460958"));
    CHECK(ngx_cdp_phone_is(L("+44(0)2079460958"), "", "+442079460958"));
    CHECK(ngx_cdp_phone_is(L("0044 (0) 20 7946 0958"), "",
                           "+442079460958"));

    /* Italy keeps its 0 in E.164 */
    CHECK(ngx_cdp_phone_is(L("+39 06 1234 5678"), "", "+390612345678"));

    /* 8 to 15 digits */
    CHECK(ngx_cdp_phone_is(L("+12345678"), "", "+12345678"));
    CHECK(ngx_cdp_phone_is(L("+123456789012345"), "", "+123456789012345"));
    CHECK(ngx_cdp_phone_is(L("00123456789012345"), "", "+123456789012345"));
    CHECK(ngx_cdp_phone_bad(L("+1234567"), ""));
    CHECK(ngx_cdp_phone_bad(L("+1234567890123456"), ""));
    CHECK(ngx_cdp_phone_bad(L("001234567890123456"), ""));
    CHECK(ngx_cdp_phone_bad(L("+1 2345 6789 0123 4567 8901 2345"), ""));
    CHECK(ngx_cdp_phone_bad(L("+44"), ""));
    CHECK(ngx_cdp_phone_bad(L("00"), "44"));

    /* the first digit is never 0 */
    CHECK(ngx_cdp_phone_bad(L("+0044 20 7946 0958"), ""));
    CHECK(ngx_cdp_phone_bad(L("+0 20 7946 0958"), ""));
    CHECK(ngx_cdp_phone_bad(L("000 44 20 7946 0958"), "44"));

    /* '+' only first */
    CHECK(ngx_cdp_phone_bad(L("+"), ""));
    CHECK(ngx_cdp_phone_bad(L("++44 20 7946 0958"), ""));
    CHECK(ngx_cdp_phone_bad(L("44+20 7946 0958"), "44"));
    CHECK(ngx_cdp_phone_bad(L("+44 20 7946 0958+"), ""));
    CHECK(ngx_cdp_phone_bad(L("(+44) 20 7946 0958"), ""));
}


static void
test_phone_national(void)
{
    CHECK(ngx_cdp_phone_is(L("020 7946 0958"), "44", "+442079460958"));
    CHECK(ngx_cdp_phone_is(L("(020) 7946-0958"), "44", "+442079460958"));
    CHECK(ngx_cdp_phone_is(L("(0)20 7946 0958"), "44", "+442079460958"));
    CHECK(ngx_cdp_phone_is(L("20 7946 0958"), "44", "+442079460958"));
    CHECK(ngx_cdp_phone_is(L("(555) 123-4567"), "1", "+15551234567"));
    CHECK(ngx_cdp_phone_is(L("555.123.4567"), "1", "+15551234567"));
    CHECK(ngx_cdp_phone_is(L("1 (555) 123-4567"), "1", "+15551234567"));
    CHECK(ngx_cdp_phone_is(L("1-555-123-4567"), "1", "+15551234567"));
    CHECK(ngx_cdp_phone_is(L("01 23 45 67 89"), "33", "+33123456789"));
    CHECK(ngx_cdp_phone_is(L("030/1234567"), "49", "+49301234567"));
    CHECK(ngx_cdp_phone_is(L("0412 345 678"), "61", "+61412345678"));
    CHECK(ngx_cdp_phone_is(L("087 123 4567"), "353", "+353871234567"));

    /* nothing left after the trunk 0 */
    CHECK(ngx_cdp_phone_bad(L("0"), "44"));
    CHECK(ngx_cdp_phone_bad(L("(0)"), "44"));

    /* Italy and San Marino keep the 0 */
    CHECK(ngx_cdp_phone_is(L("06 1234 5678"), "39", "+390612345678"));
    CHECK(ngx_cdp_phone_is(L("333 123 4567"), "39", "+393331234567"));
    CHECK(ngx_cdp_phone_is(L("0549 123456"), "378", "+3780549123456"));

    /* 15 digits with the country code, then 16 */
    CHECK(ngx_cdp_phone_is(L("01234567890123"), "44", "+441234567890123"));
    CHECK(ngx_cdp_phone_bad(L("012345678901234"), "44"));
    CHECK(ngx_cdp_phone_bad(L("1234567890123456"), "1"));

    /* too short */
    CHECK(ngx_cdp_phone_bad(L("01234"), "44"));
    CHECK(ngx_cdp_phone_bad(L("123 45"), "1"));

    /* no, or an invalid, default country code */
    CHECK(ngx_cdp_phone_bad(L("020 7946 0958"), ""));
    CHECK(ngx_cdp_phone_bad(L("(555) 123-4567"), ""));
    CHECK(ngx_cdp_phone_bad(L("020 7946 0958"), "+44"));
    CHECK(ngx_cdp_phone_bad(L("020 7946 0958"), "0"));
    CHECK(ngx_cdp_phone_bad(L("020 7946 0958"), "044"));
    CHECK(ngx_cdp_phone_bad(L("020 7946 0958"), "4444"));
    CHECK(ngx_cdp_phone_bad(L("020 7946 0958"), "4a"));
}


static void
test_phone_invalid(void)
{
    u_char   buf[32];
    ssize_t  n;

    CHECK(ngx_cdp_phone_bad(L(""), "44"));
    CHECK(ngx_cdp_phone_bad(L(" \t\r\n"), "44"));
    CHECK(ngx_cdp_phone_bad(L("()-. /"), "44"));

    /* letters, extensions, URIs */
    CHECK(ngx_cdp_phone_bad(L("+44 20 7946 095A"), ""));
    CHECK(ngx_cdp_phone_bad(L("1-800-FLOWERS"), "1"));
    CHECK(ngx_cdp_phone_bad(L("+44 20 7946 0958 ext 12"), ""));
    CHECK(ngx_cdp_phone_bad(L("+44 20 7946 0958 x12"), ""));
    CHECK(ngx_cdp_phone_bad(L("+44 20 7946 0958;ext=12"), ""));
    CHECK(ngx_cdp_phone_bad(L("tel:+442079460958"), ""));

    /* other characters */
    CHECK(ngx_cdp_phone_bad(L("+44\t20 7946 0958"), ""));
    CHECK(ngx_cdp_phone_bad(L("+44_20_7946_0958"), ""));
    CHECK(ngx_cdp_phone_bad(L("+44 20 7946 0958#"), ""));
    CHECK(ngx_cdp_phone_bad(L("*31#+442079460958"), ""));
    CHECK(ngx_cdp_phone_bad(L("+44 20 7946\0 0958"), ""));
    CHECK(ngx_cdp_phone_bad(L("+44 \xef\xbc\x92\xef\xbc\x90 7946 0958"), ""));
    CHECK(ngx_cdp_phone_bad(L("+44 20 7946 0958\xc2\xa0"), ""));

    /* dst may be src when src has room for the result */

    memcpy(buf, " (555) 123-4567", 15);
    n = ngx_cdp_phone_normalize(buf, buf, 15, (const u_char *) "1", 1);
    CHECK(n == 12 && memcmp(buf, "+15551234567", 12) == 0);

    CHECK(ngx_cdp_phone_normalize(buf, NULL, 0, (const u_char *) "1", 1)
          == -1);
}


/* blocked values */

static int
ngx_cdp_blocked(const u_char *v, size_t len, const ngx_cdp_str_t *extra,
    size_t nextra)
{
    int     rc;
    u_char  *b;

    b = ngx_cdp_dup(v, len);
    rc = ngx_cdp_ident_blocked(b, len, extra, nextra);
    free(b);

    return rc;
}


static void
test_blocked_builtin(void)
{
    /* each builtin */
    CHECK(ngx_cdp_blocked(L("null"), NULL, 0) == 1);
    CHECK(ngx_cdp_blocked(L("undefined"), NULL, 0) == 1);
    CHECK(ngx_cdp_blocked(L("anonymous"), NULL, 0) == 1);
    CHECK(ngx_cdp_blocked(L("guest"), NULL, 0) == 1);
    CHECK(ngx_cdp_blocked(L("none"), NULL, 0) == 1);
    CHECK(ngx_cdp_blocked(L("nan"), NULL, 0) == 1);
    CHECK(ngx_cdp_blocked(L("0"), NULL, 0) == 1);
    CHECK(ngx_cdp_blocked(L("-1"), NULL, 0) == 1);

    /* mixed case */
    CHECK(ngx_cdp_blocked(L("NULL"), NULL, 0) == 1);
    CHECK(ngx_cdp_blocked(L("Undefined"), NULL, 0) == 1);
    CHECK(ngx_cdp_blocked(L("AnOnYmOuS"), NULL, 0) == 1);
    CHECK(ngx_cdp_blocked(L("GUEST"), NULL, 0) == 1);
    CHECK(ngx_cdp_blocked(L("None"), NULL, 0) == 1);
    CHECK(ngx_cdp_blocked(L("NaN"), NULL, 0) == 1);

    /* whitespace */
    CHECK(ngx_cdp_blocked(L(" null "), NULL, 0) == 1);
    CHECK(ngx_cdp_blocked(L("\tGuest\r\n"), NULL, 0) == 1);
    CHECK(ngx_cdp_blocked(L("\v-1\f"), NULL, 0) == 1);

    /* empty */
    CHECK(ngx_cdp_blocked(L(""), NULL, 0) == 1);
    CHECK(ngx_cdp_blocked(L("   "), NULL, 0) == 1);
    CHECK(ngx_cdp_blocked(L(" \t\r\n\v\f"), NULL, 0) == 1);
    CHECK(ngx_cdp_ident_blocked(NULL, 0, NULL, 0) == 1);

    /* ^[0-]*$ */
    CHECK(ngx_cdp_blocked(L("000"), NULL, 0) == 1);
    CHECK(ngx_cdp_blocked(L("0-0"), NULL, 0) == 1);
    CHECK(ngx_cdp_blocked(L("--"), NULL, 0) == 1);
    CHECK(ngx_cdp_blocked(L("-"), NULL, 0) == 1);
    CHECK(ngx_cdp_blocked(L("-0"), NULL, 0) == 1);
    CHECK(ngx_cdp_blocked(L("0000-0000-0000"), NULL, 0) == 1);
    CHECK(ngx_cdp_blocked(L(" 00000000 "), NULL, 0) == 1);

    /* real values */
    CHECK(ngx_cdp_blocked(L("jane@example.com"), NULL, 0) == 0);
    CHECK(ngx_cdp_blocked(L("+442079460958"), NULL, 0) == 0);
    CHECK(ngx_cdp_blocked(L("42"), NULL, 0) == 0);
    CHECK(ngx_cdp_blocked(L("1"), NULL, 0) == 0);
    CHECK(ngx_cdp_blocked(L("-2"), NULL, 0) == 0);
    CHECK(ngx_cdp_blocked(L("10"), NULL, 0) == 0);
    CHECK(ngx_cdp_blocked(L("0-1"), NULL, 0) == 0);
    CHECK(ngx_cdp_blocked(L("00 0"), NULL, 0) == 0);
    CHECK(ngx_cdp_blocked(L("0.0"), NULL, 0) == 0);
    CHECK(ngx_cdp_blocked(L("nul"), NULL, 0) == 0);
    CHECK(ngx_cdp_blocked(L("nulll"), NULL, 0) == 0);
    CHECK(ngx_cdp_blocked(L("null1"), NULL, 0) == 0);
    CHECK(ngx_cdp_blocked(L("guest@example.com"), NULL, 0) == 0);
    CHECK(ngx_cdp_blocked(L("n ull"), NULL, 0) == 0);
    CHECK(ngx_cdp_blocked(L("null\0"), NULL, 0) == 0);
    CHECK(ngx_cdp_blocked(L("\xc2\xa0null"), NULL, 0) == 0);
}


static void
test_blocked_extra(void)
{
    ngx_cdp_str_t  extra[5];

    extra[0].data = (const u_char *) "test@example.com";
    extra[0].len = 16;
    extra[1].data = (const u_char *) " Test@Test.COM\t";
    extra[1].len = 15;
    extra[2].data = NULL;
    extra[2].len = 0;
    extra[3].data = (const u_char *) "  ";
    extra[3].len = 2;
    extra[4].data = (const u_char *) "asdf";
    extra[4].len = 4;

    CHECK(ngx_cdp_blocked(L("test@example.com"), extra, 5) == 1);
    CHECK(ngx_cdp_blocked(L(" TEST@Example.Com "), extra, 5) == 1);
    CHECK(ngx_cdp_blocked(L("test@test.com"), extra, 5) == 1);
    CHECK(ngx_cdp_blocked(L("ASDF"), extra, 5) == 1);
    CHECK(ngx_cdp_blocked(L("asdf\n"), extra, 5) == 1);

    /* the builtins still apply */
    CHECK(ngx_cdp_blocked(L("null"), extra, 5) == 1);
    CHECK(ngx_cdp_blocked(L(""), extra, 5) == 1);

    CHECK(ngx_cdp_blocked(L("asdfg"), extra, 5) == 0);
    CHECK(ngx_cdp_blocked(L("asd"), extra, 5) == 0);
    CHECK(ngx_cdp_blocked(L("test@example.co"), extra, 5) == 0);
    CHECK(ngx_cdp_blocked(L("jane@example.com"), extra, 5) == 0);

    /* nextra bounds the list */
    CHECK(ngx_cdp_blocked(L("asdf"), extra, 4) == 0);
    CHECK(ngx_cdp_blocked(L("test@example.com"), extra, 0) == 0);
}


/* hashed identifiers */

static void
ngx_cdp_test_key(ngx_cdp_hmac_key_t *k, u_char first)
{
    int     i;
    u_char  raw[NGX_CDP_KEY_LEN];

    for (i = 0; i < NGX_CDP_KEY_LEN; i++) {
        raw[i] = (u_char) (first + i);
    }

    if (!ngx_cdp_hmac_key_init(k, raw)) {
        fprintf(stderr, "ngx_cdp_hmac_key_init() failed\n");
        exit(2);
    }
}


static int
ngx_cdp_hash_is(const ngx_cdp_hmac_key_t *k, const char *type,
    const u_char *v, size_t len, const char *hex)
{
    int     ok;
    u_char  *in, *out;

    in = ngx_cdp_dup(v, len);
    out = ngx_cdp_buf(NGX_CDP_IDENT_HASH_LEN);

    ok = ngx_cdp_ident_hash(out, k, type, in, len) == 1
         && strlen(hex) == NGX_CDP_IDENT_HASH_LEN
         && memcmp(out, hex, NGX_CDP_IDENT_HASH_LEN) == 0
         && ngx_cdp_canary_ok(out, NGX_CDP_IDENT_HASH_LEN);

    free(in);
    free(out);

    return ok;
}


static int
ngx_cdp_hash_refused(const ngx_cdp_hmac_key_t *k, const char *type,
    const u_char *v, size_t len)
{
    int     ok;
    u_char  *out;

    out = ngx_cdp_buf(NGX_CDP_IDENT_HASH_LEN);

    ok = ngx_cdp_ident_hash(out, k, type, v, len) == 0
         && ngx_cdp_untouched(out, NGX_CDP_IDENT_HASH_LEN);

    free(out);

    return ok;
}


static void
test_ident_hash(void)
{
    void                *mac;
    size_t               i;
    u_char               big[NGX_CDP_IDENT_VALUE_MAX + 1];
    u_char               out[NGX_CDP_IDENT_HASH_LEN];
    u_char               norm[64];
    ssize_t              n;
    ngx_cdp_hmac_key_t   k1, k2;

    /* expected values computed with Python's hmac module */

    ngx_cdp_test_key(&k1, 0x01);
    ngx_cdp_test_key(&k2, 0x40);

    CHECK(ngx_cdp_hash_is(&k1, "email", L("jane@example.com"),
                          "4ef41975312166a83a65ba296b3ca0ed"
                          "4e553aba3413cf88a7ed2abb438cf1bf"));
    CHECK(ngx_cdp_hash_is(&k1, "phone", L("+442079460958"),
                          "ca0328283ae574dbdb10ae9cc4f5fec8"
                          "b072aa0d0a8c8f8ecee002d46ae6955a"));
    CHECK(ngx_cdp_hash_is(&k1, "phone", L("+15551234567"),
                          "349768d17683359084719f940b6e9661"
                          "f042750748214f670b0c3c3ec6abb87a"));
    CHECK(ngx_cdp_hash_is(&k1, "email", L("J\xc3\xb6rg@b\xc3\xbc" "cher.de"),
                          "b25a05acd680a5bd394344b52dbc571f"
                          "2a3bcd06d801c7720ae39d2acc040ff2"));
    CHECK(ngx_cdp_hash_is(&k1, "user_id", L("42"),
                          "bdbfb44693e7e4a3303ed546a7f8af52"
                          "63170d21fc75cd02d952d5a5059de115"));
    CHECK(ngx_cdp_hash_is(&k1, "x", L("v"),
                          "3c290f1d42519742c7e79b1ea000f5b4"
                          "3cc0a712f8f7cb77859d49e1fe73c529"));
    CHECK(ngx_cdp_hash_is(&k1, "email", L(""),
                          "089a6f6b78fbebd609c718b82c2d92f3"
                          "ba66ca77d1522ab32f7f5928a024ee9e"));

    /* another key, other names */
    CHECK(ngx_cdp_hash_is(&k2, "email", L("jane@example.com"),
                          "c029098b20a9a04eced8b4a8e430c1c4"
                          "3788799dd72f342f9bc2e0ef72e35979"));
    CHECK(ngx_cdp_hash_is(&k2, "phone", L("+442079460958"),
                          "68a9dd46476a2343400c05746e092d56"
                          "a25f4a44e9e39498ea0f90902f3ae4d4"));

    /* v may be NULL when len is 0 */
    CHECK(ngx_cdp_ident_hash(out, &k1, "email", NULL, 0) == 1
          && memcmp(out, "089a6f6b78fbebd609c718b82c2d92f3"
                         "ba66ca77d1522ab32f7f5928a024ee9e", 64) == 0);

    /* the longest type and value */
    memset(big, 'a', sizeof(big));
    CHECK(ngx_cdp_hash_is(&k1, "abcdefghijklmnop", big,
                          NGX_CDP_IDENT_VALUE_MAX,
                          "203c42f56d9f370e8bf111b9612b4ff3"
                          "679feaae04212ba26fe9ae237cf7278c"));
    CHECK(ngx_cdp_hash_is(&k1, "email", big, NGX_CDP_IDENT_VALUE_MAX,
                          "1d51fe724c6a280c9505c7bcc21eddb6"
                          "10010b406fda0be8cab6e491f3c3da68"));

    /* out of bounds: nothing written */
    CHECK(ngx_cdp_hash_refused(&k1, "email", big,
                               NGX_CDP_IDENT_VALUE_MAX + 1));
    CHECK(ngx_cdp_hash_refused(&k1, "abcdefghijklmnopq", L("v")));
    CHECK(ngx_cdp_hash_refused(&k1, "", L("v")));
    CHECK(ngx_cdp_hash_refused(&k1, "em:ail", L("v")));
    CHECK(ngx_cdp_hash_refused(&k1, "email:", L("v")));

    /* without a prepared context (libcrypto could not make one): same */
    mac = k1.mac;
    k1.mac = NULL;
    CHECK(ngx_cdp_hash_is(&k1, "email", L("jane@example.com"),
                          "4ef41975312166a83a65ba296b3ca0ed"
                          "4e553aba3413cf88a7ed2abb438cf1bf"));
    k1.mac = mac;

    /* the type separates the namespaces; lowercase hex only */
    CHECK(ngx_cdp_ident_hash(out, &k1, "phone", L("jane@example.com")) == 1
          && memcmp(out, "4ef41975312166a83a65ba296b3ca0ed", 32) != 0);

    for (i = 0; i < NGX_CDP_IDENT_HASH_LEN; i++) {
        if (!((out[i] >= '0' && out[i] <= '9')
              || (out[i] >= 'a' && out[i] <= 'f')))
        {
            break;
        }
    }

    CHECK(i == NGX_CDP_IDENT_HASH_LEN);

    /* the whole path: " Jane@Example.com " and "jane@example.com" meet */
    n = ngx_cdp_email_normalize(norm, L(" Jane@Example.com "));
    CHECK(n == 16 && ngx_cdp_ident_blocked(norm, n, NULL, 0) == 0);
    CHECK(ngx_cdp_hash_is(&k1, "email", norm, n,
                          "4ef41975312166a83a65ba296b3ca0ed"
                          "4e553aba3413cf88a7ed2abb438cf1bf"));

    n = ngx_cdp_phone_normalize(norm, L("020 7946 0958"),
                                (const u_char *) "44", 2);
    CHECK(n == 13);
    CHECK(ngx_cdp_hash_is(&k1, "phone", norm, n,
                          "ca0328283ae574dbdb10ae9cc4f5fec8"
                          "b072aa0d0a8c8f8ecee002d46ae6955a"));

    ngx_cdp_hmac_key_free(&k1);
    ngx_cdp_hmac_key_free(&k2);
}


/*
 * The remembered user id names: always what ngx_cdp_ident_hash() gives,
 * over more ids than the memo has slots, at both sides of the longest id
 * it keeps, and across a change of key.
 */

static void
test_ident_hash_user_id(void)
{
    int                  round, same;
    size_t               i, len;
    u_char               id[NGX_CDP_IDENT_MEMO_ID_MAX + 2];
    u_char               a[NGX_CDP_IDENT_HASH_LEN], b[NGX_CDP_IDENT_HASH_LEN];
    u_char               big[NGX_CDP_IDENT_VALUE_MAX + 1];
    ngx_cdp_hmac_key_t   k1, k2, k3;

    ngx_cdp_test_key(&k1, 0x01);
    ngx_cdp_test_key(&k2, 0x40);

    /* a miss, then a hit: the known name both times */
    for (round = 0; round < 2; round++) {
        CHECK(ngx_cdp_ident_hash_user_id(a, &k1, L("42")) == 1
              && memcmp(a, "bdbfb44693e7e4a3303ed546a7f8af52"
                           "63170d21fc75cd02d952d5a5059de115", 64) == 0);
    }

    /* 20,000 ids over 4,096 slots, twice: evictions and hits agree */
    same = 1;

    for (round = 0; round < 2; round++) {
        for (i = 0; i < 20000; i++) {
            len = (size_t) snprintf((char *) id, sizeof(id), "user-%zu", i);

            if (ngx_cdp_ident_hash_user_id(a, &k1, id, len) != 1
                || ngx_cdp_ident_hash(b, &k1, "user_id", id, len) != 1
                || memcmp(a, b, NGX_CDP_IDENT_HASH_LEN) != 0)
            {
                same = 0;
            }
        }
    }

    CHECK(same);

    /* the longest remembered id, and one byte more (not remembered) */
    for (len = NGX_CDP_IDENT_MEMO_ID_MAX; len <= NGX_CDP_IDENT_MEMO_ID_MAX + 1;
         len++)
    {
        memset(id, 'u', len);

        for (round = 0; round < 2; round++) {
            CHECK(ngx_cdp_ident_hash_user_id(a, &k1, id, len) == 1
                  && ngx_cdp_ident_hash(b, &k1, "user_id", id, len) == 1
                  && memcmp(a, b, NGX_CDP_IDENT_HASH_LEN) == 0);
        }
    }

    /* a prefix of a remembered id is another id */
    memset(id, 'u', NGX_CDP_IDENT_MEMO_ID_MAX);
    CHECK(ngx_cdp_ident_hash_user_id(a, &k1, id, 10) == 1
          && ngx_cdp_ident_hash(b, &k1, "user_id", id, 10) == 1
          && memcmp(a, b, NGX_CDP_IDENT_HASH_LEN) == 0);

    /* another key: its own name, not the remembered one; and back */
    CHECK(ngx_cdp_ident_hash_user_id(a, &k2, L("42")) == 1
          && ngx_cdp_ident_hash(b, &k2, "user_id", L("42")) == 1
          && memcmp(a, b, NGX_CDP_IDENT_HASH_LEN) == 0
          && memcmp(a, "bdbfb44693e7e4a3", 16) != 0);
    CHECK(ngx_cdp_ident_hash_user_id(a, &k1, L("42")) == 1
          && memcmp(a, "bdbfb44693e7e4a3303ed546a7f8af52"
                       "63170d21fc75cd02d952d5a5059de115", 64) == 0);

    /*
     * the memo is used: k3 has k1's raw key but k2's prepared context, so
     * a remembered name is k1's and a computed one k2's
     */
    ngx_cdp_test_key(&k3, 0x40);
    memcpy(k3.raw, k1.raw, NGX_CDP_KEY_LEN);

    CHECK(ngx_cdp_ident_hash_user_id(a, &k3, L("42")) == 1
          && memcmp(a, "bdbfb44693e7e4a3303ed546a7f8af52"
                       "63170d21fc75cd02d952d5a5059de115", 64) == 0);
    CHECK(ngx_cdp_ident_hash_user_id(a, &k3, L("not-seen-before")) == 1
          && ngx_cdp_ident_hash(b, &k2, "user_id", L("not-seen-before")) == 1
          && memcmp(a, b, NGX_CDP_IDENT_HASH_LEN) == 0);

    /* out of bounds: refused, nothing written */
    memset(big, 'a', sizeof(big));
    memset(a, 0x5a, sizeof(a));
    CHECK(ngx_cdp_ident_hash_user_id(a, &k1, big, sizeof(big)) == 0
          && a[0] == 0x5a && a[NGX_CDP_IDENT_HASH_LEN - 1] == 0x5a);

    ngx_cdp_hmac_key_free(&k1);
    ngx_cdp_hmac_key_free(&k2);
    ngx_cdp_hmac_key_free(&k3);
}


/*
 * Signed pixel identities: hits parsed by ngx_cdp_hit_parse() from real
 * query strings, signatures computed here independently with OpenSSL's
 * one-shot HMAC() from the secret line, as a site's backend would.
 */

#define IDSIG_LABEL    "ngx_cdp pixel identity v1"
#define IDSIG_SECRET1  "0123456789abcdef0123456789abcdef" \
                       "0123456789abcdef0123456789abcdef"
#define IDSIG_SECRET2  "previous-key-kept-for-rotation-0123456789"
#define IDSIG_EXP      "1798761600"           /* 2027-01-01T00:00:00Z */
#define IDSIG_NOW      ((time_t) 1798761600 - 3600)

static ngx_cdp_hmac_key_t  idsig_keys[2];


static void
idsig_keys_init(void)
{
    u_char  raw[NGX_CDP_KEY_LEN];

    ngx_cdp_derive_key(raw, (const u_char *) IDSIG_SECRET1,
                       sizeof(IDSIG_SECRET1) - 1, IDSIG_LABEL);

    if (!ngx_cdp_hmac_key_init(&idsig_keys[0], raw)) {
        fprintf(stderr, "ngx_cdp_hmac_key_init() failed\n");
        exit(2);
    }

    ngx_cdp_derive_key(raw, (const u_char *) IDSIG_SECRET2,
                       sizeof(IDSIG_SECRET2) - 1, IDSIG_LABEL);

    if (!ngx_cdp_hmac_key_init(&idsig_keys[1], raw)) {
        fprintf(stderr, "ngx_cdp_hmac_key_init() failed\n");
        exit(2);
    }
}


/*
 * The sig of (uid, email, exp), decoded values, for a secret line: 64
 * lowercase hex digits and a NUL into out
 */

static void
idsig_expected(char out[NGX_CDP_SIG_HEX_LEN + 1], const char *secret,
    const char *uid, const char *email, const char *exp)
{
    int           n;
    char          msg[1024];
    u_char        key[EVP_MAX_MD_SIZE], mac[EVP_MAX_MD_SIZE];
    unsigned int  i, klen, mlen;

    klen = 0;

    if (HMAC(EVP_sha256(), secret, (int) strlen(secret),
             (const u_char *) IDSIG_LABEL, sizeof(IDSIG_LABEL) - 1, key,
             &klen) == NULL
        || klen != 32)
    {
        fprintf(stderr, "HMAC() failed\n");
        exit(2);
    }

    n = snprintf(msg, sizeof(msg), "uid=%s\nemail=%s\nexp=%s", uid, email,
                 exp);

    if (n < 0 || (size_t) n >= sizeof(msg)) {
        fprintf(stderr, "idsig_expected(): message too long\n");
        exit(2);
    }

    mlen = 0;

    if (HMAC(EVP_sha256(), key, (int) klen, (const u_char *) msg, (size_t) n,
             mac, &mlen) == NULL
        || mlen != 32)
    {
        fprintf(stderr, "HMAC() failed\n");
        exit(2);
    }

    for (i = 0; i < mlen; i++) {
        snprintf(out + 2 * i, 3, "%02x", mac[i]);
    }
}


/*
 * ngx_cdp_idsig_check() of the hit that query parses to (the parse must
 * succeed: -1 otherwise), with the first nkeys keys
 */

static int
idsig_n(const char *query, size_t len, size_t nkeys, time_t now)
{
    int             rc;
    u_char         *q, *scratch;
    ngx_cdp_hit_t   hit;

    q = ngx_cdp_dup(query, len);
    scratch = ngx_cdp_buf(len ? len : 1);

    rc = ngx_cdp_hit_parse(q, len, &hit, scratch);

    if (rc == NGX_CDP_HIT_OK) {
        rc = ngx_cdp_idsig_check(&hit, idsig_keys, nkeys, now);

    } else {
        rc = -1;
    }

    if (!ngx_cdp_canary_ok(scratch, len ? len : 1)) {
        rc = -2;
    }

    free(q);
    free(scratch);

    return rc;
}


static int
idsig(const char *query, size_t nkeys, time_t now)
{
    return idsig_n(query, strlen(query), nkeys, now);
}


/* a query of printf fmt (at most 2047 bytes) */

static const char *
idsig_query(const char *fmt, ...)
{
    int            n;
    va_list        ap;
    static char    q[2048];

    va_start(ap, fmt);
    n = vsnprintf(q, sizeof(q), fmt, ap);
    va_end(ap);

    if (n < 0 || (size_t) n >= sizeof(q)) {
        fprintf(stderr, "idsig_query(): too long\n");
        exit(2);
    }

    return q;
}


static void
test_idsig_valid(void)
{
    char  sig[NGX_CDP_SIG_HEX_LEN + 1], sig2[NGX_CDP_SIG_HEX_LEN + 1];

    /* docs/api.md, "Signed pixel URLs": the worked example */

    idsig_expected(sig, IDSIG_SECRET1, "u-1001", "jane@example.com",
                   IDSIG_EXP);
    CHECK(strcmp(sig, "03cddf5617a16f3b0b02b7923f23f4a4"
                      "4da34f09a1d084e6879853cfc2e6dece") == 0);
    CHECK(idsig("uid=u-1001&email=jane%40example.com&exp=1798761600"
                "&sig=03cddf5617a16f3b0b02b7923f23f4a4"
                "4da34f09a1d084e6879853cfc2e6dece", 2, IDSIG_NOW)
          == NGX_CDP_IDSIG_OK);

    /* percent-encoded UTF-8, '+' as a space: signed as decoded */

    idsig_expected(sig, IDSIG_SECRET1, "u 42/\xc3\xbc",
                   "J\xc3\xb6rg@b\xc3\xbc" "cher.de", IDSIG_EXP);
    CHECK(idsig(idsig_query("uid=u+42%%2F%%C3%%BC"
                            "&email=J%%C3%%B6rg%%40b%%C3%%BCcher.de"
                            "&exp=" IDSIG_EXP "&sig=%s", sig),
                2, IDSIG_NOW) == NGX_CDP_IDSIG_OK);

    /* the same, fields in another order, among other fields */
    CHECK(idsig(idsig_query("e=open&sig=%s&exp=" IDSIG_EXP
                            "&email=J%%C3%%B6rg%%40b%%C3%%BCcher.de"
                            "&p.c=spring&uid=u%%2042%%2f%%c3%%bc&_=1", sig),
                2, IDSIG_NOW) == NGX_CDP_IDSIG_OK);

    /* key 1 of two, key 2 of two (rotation), key 2 alone not loaded */

    idsig_expected(sig, IDSIG_SECRET1, "u-1", "", IDSIG_EXP);
    idsig_expected(sig2, IDSIG_SECRET2, "u-1", "", IDSIG_EXP);
    CHECK(strcmp(sig, sig2) != 0);

    CHECK(idsig(idsig_query("uid=u-1&exp=" IDSIG_EXP "&sig=%s", sig),
                2, IDSIG_NOW) == NGX_CDP_IDSIG_OK);
    CHECK(idsig(idsig_query("uid=u-1&exp=" IDSIG_EXP "&sig=%s", sig),
                1, IDSIG_NOW) == NGX_CDP_IDSIG_OK);
    CHECK(idsig(idsig_query("uid=u-1&exp=" IDSIG_EXP "&sig=%s", sig2),
                2, IDSIG_NOW) == NGX_CDP_IDSIG_OK);
    CHECK(idsig(idsig_query("uid=u-1&exp=" IDSIG_EXP "&sig=%s", sig2),
                1, IDSIG_NOW) == NGX_CDP_IDSIG_BAD);
    CHECK(idsig(idsig_query("uid=u-1&exp=" IDSIG_EXP "&sig=%s", sig),
                0, IDSIG_NOW) == NGX_CDP_IDSIG_BAD);

    /* e-mail alone: the absent uid is empty in the canonical string */

    idsig_expected(sig, IDSIG_SECRET1, "", "jane@example.com", IDSIG_EXP);
    CHECK(idsig(idsig_query("email=jane%%40example.com&exp=" IDSIG_EXP
                            "&sig=%s", sig), 2, IDSIG_NOW)
          == NGX_CDP_IDSIG_OK);

    /* so "uid=" (present, empty) is the same string */
    CHECK(idsig(idsig_query("uid=&email=jane%%40example.com&exp=" IDSIG_EXP
                            "&sig=%s", sig), 2, IDSIG_NOW)
          == NGX_CDP_IDSIG_OK);

    /* the sig itself may be percent-encoded: compared decoded */
    idsig_expected(sig, IDSIG_SECRET1, "u-1", "", IDSIG_EXP);
    CHECK(idsig(idsig_query("uid=u-1&exp=" IDSIG_EXP "&sig=%%%02x%s",
                            sig[0], sig + 1), 2, IDSIG_NOW)
          == NGX_CDP_IDSIG_OK);

    /* the largest exp: 12 digits */
    idsig_expected(sig, IDSIG_SECRET1, "u-1", "", "999999999999");
    CHECK(idsig(idsig_query("uid=u-1&exp=999999999999&sig=%s", sig),
                2, IDSIG_NOW) == NGX_CDP_IDSIG_OK);

    /* leading zeros are digits */
    idsig_expected(sig, IDSIG_SECRET1, "u-1", "", "0" IDSIG_EXP);
    CHECK(idsig(idsig_query("uid=u-1&exp=0" IDSIG_EXP "&sig=%s", sig),
                2, IDSIG_NOW) == NGX_CDP_IDSIG_OK);
}


static void
test_idsig_expired(void)
{
    time_t  exp;
    char    sig[NGX_CDP_SIG_HEX_LEN + 1], sig2[NGX_CDP_SIG_HEX_LEN + 1];

    exp = (time_t) 1798761600;

    idsig_expected(sig, IDSIG_SECRET1, "u-1", "a@b.example", IDSIG_EXP);
    idsig_expected(sig2, IDSIG_SECRET2, "u-1", "a@b.example", IDSIG_EXP);

    /* valid until the second before exp */
    CHECK(idsig(idsig_query("uid=u-1&email=a%%40b.example&exp=" IDSIG_EXP
                            "&sig=%s", sig), 2, exp - 1)
          == NGX_CDP_IDSIG_OK);
    CHECK(idsig(idsig_query("uid=u-1&email=a%%40b.example&exp=" IDSIG_EXP
                            "&sig=%s", sig), 2, exp)
          == NGX_CDP_IDSIG_EXPIRED);
    CHECK(idsig(idsig_query("uid=u-1&email=a%%40b.example&exp=" IDSIG_EXP
                            "&sig=%s", sig), 2, exp + 86400)
          == NGX_CDP_IDSIG_EXPIRED);

    /* with the second key too */
    CHECK(idsig(idsig_query("uid=u-1&email=a%%40b.example&exp=" IDSIG_EXP
                            "&sig=%s", sig2), 2, exp - 1)
          == NGX_CDP_IDSIG_OK);
    CHECK(idsig(idsig_query("uid=u-1&email=a%%40b.example&exp=" IDSIG_EXP
                            "&sig=%s", sig2), 2, exp)
          == NGX_CDP_IDSIG_EXPIRED);

    /* expired is only said of a valid signature */
    CHECK(idsig(idsig_query("uid=u-2&email=a%%40b.example&exp=" IDSIG_EXP
                            "&sig=%s", sig), 2, exp)
          == NGX_CDP_IDSIG_BAD);

    /* exp 0 */
    idsig_expected(sig, IDSIG_SECRET1, "u-1", "", "0");
    CHECK(idsig(idsig_query("uid=u-1&exp=0&sig=%s", sig), 2, IDSIG_NOW)
          == NGX_CDP_IDSIG_EXPIRED);
}


/* exp is signed as given, then refused because it is not a number */

static int
idsig_exp_refused(const char *exp_decoded, const char *exp_in_url)
{
    char  sig[NGX_CDP_SIG_HEX_LEN + 1];

    idsig_expected(sig, IDSIG_SECRET1, "u-1", "", exp_decoded);

    return idsig(idsig_query("uid=u-1&exp=%s&sig=%s", exp_in_url, sig),
                 2, IDSIG_NOW) == NGX_CDP_IDSIG_BAD;
}


static void
test_idsig_malformed(void)
{
    size_t  i;
    char    sig[NGX_CDP_SIG_HEX_LEN + 1], bad[NGX_CDP_SIG_HEX_LEN + 2];
    char    *q;

    /* exp: digits only, 1 to 12 of them */
    CHECK(idsig_exp_refused("1798761600x", "1798761600x"));
    CHECK(idsig_exp_refused("-1", "-1"));
    CHECK(idsig_exp_refused("+1798761600", "%2B1798761600"));
    CHECK(idsig_exp_refused(" 1798761600", "+1798761600"));
    CHECK(idsig_exp_refused("1798761600 ", "1798761600%20"));
    CHECK(idsig_exp_refused("1.5e9", "1.5e9"));
    CHECK(idsig_exp_refused("0x6b3b3f00", "0x6b3b3f00"));
    CHECK(idsig_exp_refused("\xd9\xa1", "%D9%A1"));     /* ARABIC-INDIC 1 */
    CHECK(idsig_exp_refused("", ""));
    CHECK(idsig_exp_refused("1000000000000", "1000000000000"));  /* 13 */
    CHECK(idsig_exp_refused("000000000001798761600", "000000000001798761600"));

    idsig_expected(sig, IDSIG_SECRET1, "u-1", "", IDSIG_EXP);

    /* sig: exactly 64 lowercase hex digits */

    memcpy(bad, sig, NGX_CDP_SIG_HEX_LEN - 1);
    bad[NGX_CDP_SIG_HEX_LEN - 1] = '\0';                          /* 63 */
    CHECK(idsig(idsig_query("uid=u-1&exp=" IDSIG_EXP "&sig=%s", bad),
                2, IDSIG_NOW) == NGX_CDP_IDSIG_BAD);

    memcpy(bad, sig, NGX_CDP_SIG_HEX_LEN);
    bad[NGX_CDP_SIG_HEX_LEN] = '0';                               /* 65 */
    bad[NGX_CDP_SIG_HEX_LEN + 1] = '\0';
    CHECK(idsig(idsig_query("uid=u-1&exp=" IDSIG_EXP "&sig=%s", bad),
                2, IDSIG_NOW) == NGX_CDP_IDSIG_BAD);

    CHECK(idsig(idsig_query("uid=u-1&exp=" IDSIG_EXP "&sig="),
                2, IDSIG_NOW) == NGX_CDP_IDSIG_BAD);

    /* uppercase hex is refused: lowercase only */
    for (i = 0; i < NGX_CDP_SIG_HEX_LEN; i++) {
        bad[i] = (sig[i] >= 'a' && sig[i] <= 'f') ? sig[i] - 'a' + 'A'
                                                  : sig[i];
    }
    bad[NGX_CDP_SIG_HEX_LEN] = '\0';
    CHECK(strcmp(bad, sig) != 0);
    CHECK(idsig(idsig_query("uid=u-1&exp=" IDSIG_EXP "&sig=%s", bad),
                2, IDSIG_NOW) == NGX_CDP_IDSIG_BAD);

    /* one letter upper case is enough */
    memcpy(bad, sig, sizeof(sig));
    for (i = 0; i < NGX_CDP_SIG_HEX_LEN; i++) {
        if (bad[i] >= 'a' && bad[i] <= 'f') {
            bad[i] = bad[i] - 'a' + 'A';
            break;
        }
    }
    CHECK(idsig(idsig_query("uid=u-1&exp=" IDSIG_EXP "&sig=%s", bad),
                2, IDSIG_NOW) == NGX_CDP_IDSIG_BAD);

    /* the control: as signed */
    CHECK(idsig(idsig_query("uid=u-1&exp=" IDSIG_EXP "&sig=%s", sig),
                2, IDSIG_NOW) == NGX_CDP_IDSIG_OK);

    /* a malformed identity field (ident_bad) spoils the identity */

    q = malloc(16 + NGX_CDP_MAX_UID + 1 + 128);
    if (q == NULL) {
        perror("malloc");
        exit(2);
    }

    memcpy(q, "uid=", 4);
    memset(q + 4, 'u', NGX_CDP_MAX_UID + 1);
    snprintf(q + 4 + NGX_CDP_MAX_UID + 1, 128,
             "&email=a%%40b.example&exp=" IDSIG_EXP "&sig=%s", sig);
    CHECK(idsig(q, 2, IDSIG_NOW) == NGX_CDP_IDSIG_BAD);
    free(q);

    CHECK(idsig(idsig_query("uid=u-1&uid=u-1&exp=" IDSIG_EXP "&sig=%s",
                            sig), 2, IDSIG_NOW) == NGX_CDP_IDSIG_BAD);
    CHECK(idsig(idsig_query("uid=u-1&exp=" IDSIG_EXP "&exp=" IDSIG_EXP
                            "&sig=%s", sig), 2, IDSIG_NOW)
          == NGX_CDP_IDSIG_BAD);
    CHECK(idsig(idsig_query("uid=u-1&exp=" IDSIG_EXP "&sig=%s&sig=%s",
                            sig, sig), 2, IDSIG_NOW) == NGX_CDP_IDSIG_BAD);
    CHECK(idsig(idsig_query("uid=u-1&email=&email=&exp=" IDSIG_EXP
                            "&sig=%s", sig), 2, IDSIG_NOW)
          == NGX_CDP_IDSIG_BAD);
    CHECK(idsig(idsig_query("uid=u-1&email=%%zz&exp=" IDSIG_EXP "&sig=%s",
                            sig), 2, IDSIG_NOW) == NGX_CDP_IDSIG_BAD);
    CHECK(idsig(idsig_query("uid=u-1&email=%%ff&exp=" IDSIG_EXP "&sig=%s",
                            sig), 2, IDSIG_NOW) == NGX_CDP_IDSIG_BAD);

    /* ... with no identity left at all too */
    CHECK(idsig("uid=%zz", 2, IDSIG_NOW) == NGX_CDP_IDSIG_BAD);
    CHECK(idsig("email=%ff&e=open", 2, IDSIG_NOW) == NGX_CDP_IDSIG_BAD);
}


static void
test_idsig_tampered(void)
{
    char  sig[NGX_CDP_SIG_HEX_LEN + 1];

    idsig_expected(sig, IDSIG_SECRET1, "u-1001", "jane@example.com",
                   IDSIG_EXP);

    /* the control */
    CHECK(idsig(idsig_query("uid=u-1001&email=jane%%40example.com"
                            "&exp=" IDSIG_EXP "&sig=%s", sig),
                2, IDSIG_NOW) == NGX_CDP_IDSIG_OK);

    /* another uid, e-mail, exp; one dropped; swapped; case changed */
    CHECK(idsig(idsig_query("uid=u-1002&email=jane%%40example.com"
                            "&exp=" IDSIG_EXP "&sig=%s", sig),
                2, IDSIG_NOW) == NGX_CDP_IDSIG_BAD);
    CHECK(idsig(idsig_query("uid=u-1001&email=john%%40example.com"
                            "&exp=" IDSIG_EXP "&sig=%s", sig),
                2, IDSIG_NOW) == NGX_CDP_IDSIG_BAD);
    CHECK(idsig(idsig_query("uid=u-1001&email=Jane%%40example.com"
                            "&exp=" IDSIG_EXP "&sig=%s", sig),
                2, IDSIG_NOW) == NGX_CDP_IDSIG_BAD);
    CHECK(idsig(idsig_query("uid=u-1001&email=jane%%40example.com"
                            "&exp=1798761601&sig=%s", sig),
                2, IDSIG_NOW) == NGX_CDP_IDSIG_BAD);
    CHECK(idsig(idsig_query("uid=u-1001&email=jane%%40example.com"
                            "&exp=01798761600&sig=%s", sig),
                2, IDSIG_NOW) == NGX_CDP_IDSIG_BAD);
    CHECK(idsig(idsig_query("email=jane%%40example.com"
                            "&exp=" IDSIG_EXP "&sig=%s", sig),
                2, IDSIG_NOW) == NGX_CDP_IDSIG_BAD);
    CHECK(idsig(idsig_query("uid=u-1001"
                            "&exp=" IDSIG_EXP "&sig=%s", sig),
                2, IDSIG_NOW) == NGX_CDP_IDSIG_BAD);
    CHECK(idsig(idsig_query("uid=jane%%40example.com&email=u-1001"
                            "&exp=" IDSIG_EXP "&sig=%s", sig),
                2, IDSIG_NOW) == NGX_CDP_IDSIG_BAD);
    CHECK(idsig(idsig_query("uid=u-1001+&email=jane%%40example.com"
                            "&exp=" IDSIG_EXP "&sig=%s", sig),
                2, IDSIG_NOW) == NGX_CDP_IDSIG_BAD);

    /* a sig with one digit changed */
    sig[10] = (sig[10] == '0') ? '1' : '0';
    CHECK(idsig(idsig_query("uid=u-1001&email=jane%%40example.com"
                            "&exp=" IDSIG_EXP "&sig=%s", sig),
                2, IDSIG_NOW) == NGX_CDP_IDSIG_BAD);
}


static void
test_idsig_absent(void)
{
    char  sig[NGX_CDP_SIG_HEX_LEN + 1];

    /* no identity fields: NONE */
    CHECK(idsig("", 2, IDSIG_NOW) == NGX_CDP_IDSIG_NONE);
    CHECK(idsig("e=open&url=https%3A%2F%2Fshop.example%2F&p.c=spring",
                2, IDSIG_NOW) == NGX_CDP_IDSIG_NONE);
    CHECK(idsig("exp=" IDSIG_EXP, 2, IDSIG_NOW) == NGX_CDP_IDSIG_NONE);
    CHECK(idsig("UID=u-1&Email=x&user_id=u-2", 2, IDSIG_NOW)
          == NGX_CDP_IDSIG_NONE);
    CHECK(idsig("", 0, IDSIG_NOW) == NGX_CDP_IDSIG_NONE);

    /* an identity without sig or exp: UNSIGNED */
    idsig_expected(sig, IDSIG_SECRET1, "u-1", "", IDSIG_EXP);
    CHECK(idsig("uid=u-1", 2, IDSIG_NOW) == NGX_CDP_IDSIG_UNSIGNED);
    CHECK(idsig("email=a%40b.example", 2, IDSIG_NOW)
          == NGX_CDP_IDSIG_UNSIGNED);
    CHECK(idsig("uid=u-1&exp=" IDSIG_EXP, 2, IDSIG_NOW)
          == NGX_CDP_IDSIG_UNSIGNED);
    CHECK(idsig(idsig_query("uid=u-1&sig=%s", sig), 2, IDSIG_NOW)
          == NGX_CDP_IDSIG_UNSIGNED);
    CHECK(idsig("uid=", 2, IDSIG_NOW) == NGX_CDP_IDSIG_UNSIGNED);

    /* a sig without anything to sign: BAD */
    CHECK(idsig(idsig_query("sig=%s", sig), 2, IDSIG_NOW)
          == NGX_CDP_IDSIG_BAD);
    CHECK(idsig(idsig_query("exp=" IDSIG_EXP "&sig=%s", sig), 2, IDSIG_NOW)
          == NGX_CDP_IDSIG_BAD);
    CHECK(idsig("sig=", 2, IDSIG_NOW) == NGX_CDP_IDSIG_BAD);
}


static void
test_idsig(void)
{
    idsig_keys_init();

    test_idsig_valid();
    test_idsig_expired();
    test_idsig_malformed();
    test_idsig_tampered();
    test_idsig_absent();

    ngx_cdp_hmac_key_free(&idsig_keys[0]);
    ngx_cdp_hmac_key_free(&idsig_keys[1]);
}


/* the browser's name outside its keys: SHA1("anonymous_id:" aid) */

static void
test_aid_hash(void)
{
    u_char  out[NGX_CDP_AIDH_LEN + CANARY_LEN];

    memset(out, FILL, sizeof(out));
    memcpy(out + NGX_CDP_AIDH_LEN, CANARY, CANARY_LEN);

    /* python3: sha1(b"anonymous_id:" + b"0123456789abcdef" * 2) */
    CHECK(ngx_cdp_aid_hash(out,
                           (const u_char *) "0123456789abcdef"
                                            "0123456789abcdef") == 1);
    CHECK(memcmp(out, "772ce8c4834d6a0162f9abb489da6cda1358d96e",
                 NGX_CDP_AIDH_LEN) == 0);
    CHECK(memcmp(out + NGX_CDP_AIDH_LEN, CANARY, CANARY_LEN) == 0);

    /* another id, another name */
    CHECK(ngx_cdp_aid_hash(out,
                           (const u_char *) "0123456789abcdef"
                                            "0123456789abcdee") == 1);
    CHECK(memcmp(out, "772ce8c4834d6a0162f9abb489da6cda1358d96e",
                 NGX_CDP_AIDH_LEN) != 0);
}


int
main(void)
{
    test_email_valid();
    test_email_utf8();
    test_email_invalid();
    test_email_limits();
    test_phone_international();
    test_phone_national();
    test_phone_invalid();
    test_blocked_builtin();
    test_blocked_extra();
    test_ident_hash();
    test_ident_hash_user_id();
    test_idsig();
    test_aid_hash();

    return ngx_cdp_summary();
}
