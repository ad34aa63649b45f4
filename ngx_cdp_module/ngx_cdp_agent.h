
/*
 * ngx_cdp: who is asking, from the User-Agent and the prefetch headers,
 * before any cookie or profile is made.
 *
 * A built-in list of User-Agent patterns, written for this project and
 * documented in docs/directives.md ("cdp_bot"): search engines' and
 * social networks' crawlers and link previews, SEO and archive crawlers,
 * uptime monitors, HTTP libraries and command-line clients, headless and
 * automated browsers, and the image proxies of mail services (which fetch
 * a campaign's pixel on behalf of a reader: not a browser, but the open
 * of a known person's e-mail).  Patterns match as substrings, ASCII
 * case-insensitively, anywhere in the first NGX_CDP_AGENT_SCAN bytes of
 * the header (a pattern must lie entirely within them), except where it
 * begins inside one of a few words of real devices ("bot" in the phone
 * brand CUBOT).  An empty or missing User-Agent is a bot.
 *
 * No nginx types, no allocation; the unit tests (tests/unit/test_agent.c)
 * and the fuzz target (tests/fuzz/fuzz_agent.c) link ngx_cdp_agent.c
 * alone.
 */


#ifndef _NGX_CDP_AGENT_H_INCLUDED_
#define _NGX_CDP_AGENT_H_INCLUDED_


#include <sys/types.h>
#include <stddef.h>


#define NGX_CDP_AGENT_BROWSER      0     /* track it */
#define NGX_CDP_AGENT_BOT          1     /* crawler, monitor, library... */
#define NGX_CDP_AGENT_MAIL_PROXY   2     /* a mail service's image proxy */

/* how much of a User-Agent is looked at */
#define NGX_CDP_AGENT_SCAN         512


/*
 * The class of a User-Agent header value (ua may be NULL with len 0: no
 * header).  pattern, when not NULL, gets the built-in pattern that
 * matched (a static string), for logs and tests: a mail proxy's if any,
 * else the bot pattern that begins first, the longest of those; "" for an
 * empty User-Agent, NULL for a browser.
 */
int ngx_cdp_agent_classify(const u_char *ua, size_t len,
    const char **pattern);

/*
 * 1 when a request is a prefetch or prerender, not a visit: the value of
 * Sec-Purpose or Purpose contains the token "prefetch" or "prerender"
 * (Chrome's "prefetch;prerender", Firefox's "prefetch"), or X-Moz is
 * "prefetch"; each argument may be NULL with len 0 (no header).  Tokens
 * and the X-Moz value (blanks around it aside) compare ASCII
 * case-insensitively; tokens end at anything that is not a token
 * character: "prefetch" is not in "noprefetch" nor in "x-prefetch".
 */
int ngx_cdp_agent_prefetch(const u_char *sec_purpose, size_t sec_len,
    const u_char *purpose, size_t purpose_len, const u_char *x_moz,
    size_t x_moz_len);

/* the built-in patterns, NULL-terminated, for the documentation's test */
extern const char  *ngx_cdp_agent_bot_patterns[];
extern const char  *ngx_cdp_agent_mail_patterns[];

/* real devices' words, NULL-terminated: a bot pattern begun in one fails */
extern const char  *ngx_cdp_agent_browser_words[];


#endif /* _NGX_CDP_AGENT_H_INCLUDED_ */
