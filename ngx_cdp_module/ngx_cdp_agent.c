
/*
 * ngx_cdp: who is asking (see ngx_cdp_agent.h).
 *
 * A User-Agent is classified on every pixel hit, so the search is made
 * once for all the patterns, not once per pattern:
 *
 * - Only the first NGX_CDP_AGENT_SCAN (512) bytes of the header are looked
 *   at, and a pattern counts only when it lies entirely within them.  Real
 *   User-Agents, in-app browsers' included, are 100 to 450 bytes; a
 *   crawler that pushes its name past 512 bytes wants not to be found and
 *   could as well leave it out; and whatever a client sends, a hit costs
 *   at most the same.
 *
 * - Patterns are indexed by their first two bytes: every byte that begins
 *   a pattern or comes second in one gets a small code, the same for both
 *   cases of a letter, and a table of 64 * 64 chains holds the patterns
 *   that begin with each pair of codes.  The header is read in place, a
 *   pair of bytes at each position: most pairs have no chain, and in a
 *   chain the third byte sets most patterns aside before they are
 *   compared whole, ASCII case-insensitively.  The index is made from the
 *   lists at the first call: it is the same whoever makes it, and nginx
 *   calls this from a worker's one thread.  The unit tests print what a
 *   call costs.
 *
 * - A mail proxy's pattern anywhere wins.  Otherwise the bot pattern that
 *   begins first in the header, and of those the longest ("googlebot",
 *   not "bot"), is the one reported.
 *
 * - False positives are handled one by one, not by a rule on what may
 *   surround a pattern.  The generic words "bot", "crawler", "crawl" and
 *   "spider" catch the crawlers nobody listed; most of them call
 *   themselves "SomethingBot", so "bot" has to match inside a word, even
 *   after a letter, and a few real devices and browsers carry a pattern
 *   inside a word of their own: the phone brand CUBOT ("CUBOT_X30"), a
 *   carrier in Facebook's in-app browser ("FBCR/OrangeBotswana"), the
 *   HTC Ruby phone.  Such words are listed in ngx_cdp_agent_browser_words,
 *   and a bot pattern that begins inside an occurrence of one of them is
 *   no match there (another occurrence, or another pattern, may still be;
 *   the word must lie within the bytes looked at).  A browser word must be
 *   one that no crawler's name contains.
 */


#include "ngx_cdp_agent.h"

#include <stdint.h>
#include <string.h>


/* the lists' lengths, their NULLs aside */
#define NGX_CDP_AGENT_NBOT                                                    \
    (sizeof(ngx_cdp_agent_bot_patterns)                                       \
     / sizeof(ngx_cdp_agent_bot_patterns[0]) - 1)
#define NGX_CDP_AGENT_NMAIL                                                   \
    (sizeof(ngx_cdp_agent_mail_patterns)                                      \
     / sizeof(ngx_cdp_agent_mail_patterns[0]) - 1)
#define NGX_CDP_AGENT_NALL   (NGX_CDP_AGENT_NBOT + NGX_CDP_AGENT_NMAIL)

/* byte codes have 6 bits; 0 is for bytes no pattern has first or second */
#define NGX_CDP_AGENT_CODES  64


static void ngx_cdp_agent_index(void);
static int ngx_cdp_agent_in_word(const u_char *ua, size_t n, size_t i);
static int ngx_cdp_agent_eq(const u_char *p, const char *s, size_t n);
static u_char ngx_cdp_agent_lower(u_char c);
static int ngx_cdp_agent_tchar(u_char c);
static int ngx_cdp_agent_token(const u_char *p, size_t len);


/*
 * The bots: whatever fetches a page or a pixel without a person behind
 * it, or with a person who is only previewing a link: crawlers and link
 * previews, monitors, libraries and tools, headless browsers, scanners.
 * Each entry is a lowercase substring that no real browser's User-Agent
 * contains (tests/unit/test_agent.c checks that against real ones).  Apps
 * whose in-app browser names the app are named here only by their
 * crawler's own token: "facebookexternalhit", never "fban" or "fbav".
 */

const char  *ngx_cdp_agent_bot_patterns[] = {

    /*
     * search engines; all of Yandex's robots link yandex.com/bots, while
     * "yandex" alone could take Yandex's own apps; "sogou" alone would
     * take the Sogou browser, and "naver" the Naver app
     */
    "googlebot", "adsbot-google", "mediapartners-google", "apis-google",
    "feedfetcher-google", "google-inspectiontool", "storebot-google",
    "googleother", "google-read-aloud", "google-site-verification",
    "duplexweb-google", "google favicon", "googleproducer",
    "google-cloudvertexbot",
    "bingbot", "bingpreview", "msnbot", "adidxbot",
    "yandex.com/bots", "yandexbot", "yandeximages", "yandexmetrika",
    "baiduspider", "duckduckbot", "duckassistbot", "slurp", "applebot",
    "petalbot", "sogou web spider", "seznambot", "yeti/", "qwantify",
    "qwantbot", "mojeekbot", "coccocbot", "exabot", "mail.ru_bot",
    "yisouspider", "360spider",

    /*
     * link previews of social networks and messengers; their in-app
     * browsers (FBAN/FBAV, Instagram, Line, KAKAOTALK, Snapchat) are people
     */
    "facebookexternalhit", "facebookcatalog", "facebookbot",
    "meta-externalagent", "meta-externalfetcher", "twitterbot",
    "linkedinbot", "slackbot", "slack-imgproxy", "discordbot",
    "telegrambot", "whatsapp/", "skypeuripreview", "pinterestbot",
    "pinterest/0.", "redditbot", "embedly", "vkshare", "iframely",
    "kakaotalk-scrap", "flipboardproxy", "bitlybot", "snap url preview",
    "quora link preview", "xing-contenttabreceiver",

    /* SEO, archive and AI crawlers, and the AI assistants' fetchers */
    "ahrefsbot", "ahrefssiteaudit", "semrushbot", "siteauditbot",
    "mj12bot", "dotbot", "rogerbot", "screaming frog", "ia_archiver",
    "archive.org_bot", "heritrix", "ccbot", "gptbot", "chatgpt-user",
    "oai-searchbot", "claudebot", "claude-web", "claude-user",
    "claude-searchbot", "anthropic-ai", "perplexitybot", "perplexity-user",
    "mistralai-user", "bytespider", "amazonbot", "dataforseobot", "blexbot",
    "serpstatbot", "seekportbot", "megaindex", "barkrowler", "diffbot",
    "youbot", "cohere-ai", "timpibot", "imagesiftbot", "omgili",
    "magpie-crawler", "turnitinbot", "sistrix", "netcraft", "linkdexbot",
    "seokicks", "ai2bot", "w3c_validator", "w3c-checklink",

    /* uptime monitors, synthetic checks, load balancers' health checks */
    "uptimerobot", "pingdom", "statuscake", "site24x7", "newrelicpinger",
    "datadog", "better uptime", "freshping", "uptime-kuma", "checkly",
    "nagios", "check_http", "zabbix", "monitis", "updown.io",
    "ruxitsynthetic", "catchpoint", "elastic-heartbeat",
    "blackbox exporter", "kube-probe", "elb-healthchecker", "googlehc/",
    "googlestackdrivermonitoring", "consul health check", "hetrixtools",

    /*
     * HTTP libraries and command-line clients, by their default
     * User-Agents; "got (" is got's "got (https://github.com/...)", as
     * "got" alone is in too many words; Ruby's Net::HTTP says "Ruby";
     * Java's own client says "Java/17.0.2", while the browsers of old
     * phones say "Java/HWJa/1.0" or "Java/SEMC-Java/2.0"
     */
    "curl/", "wget/", "python-requests", "python-urllib", "python-httpx",
    "aiohttp", "go-http-client", "go-resty", "java/1", "java/2",
    "java-http-client", "google-http-java-client", "okhttp",
    "apache-httpclient", "apache-httpasyncclient", "jakarta",
    "appengine-google", "libwww-perl", "lwp::", "php/", "guzzlehttp",
    "node-fetch", "undici", "axios/", "got (", "ruby", "faraday",
    "http.rb/", "httpie", "postmanruntime", "insomnia", "powershell",
    "winhttp", "restsharp", "dart:io", "deno/", "scrapy", "httpclient",
    "libcurl", "wget2/", "httrack",

    /* headless and automated browsers, page speed and prerender services */
    "headlesschrome", "phantomjs", "slimerjs", "puppeteer", "playwright",
    "selenium", "webdriver", "cypress/", "chrome-lighthouse", "lighthouse",
    "gtmetrix", "pagespeed", "page speed insights", "prerender",
    "rendertron",

    /* security scanners and internet-wide surveys */
    "nmap", "masscan", "zgrab", "censysinspect", "nuclei", "nikto",
    "sqlmap", "wpscan", "dirbuster", "gobuster", "wfuzz",
    "fuzz faster u fool", "expanse", "internet-measurement",

    /* generic words, for the unlisted; see ngx_cdp_agent_browser_words */
    "bot", "crawler", "crawl", "spider",

    NULL
};


/*
 * The image proxies of mail services: they fetch a message's images, the
 * pixel among them, when their user opens it, from the service's own
 * addresses.  Only proxies that name themselves: Gmail's ("... (via
 * ggpht.com GoogleImageProxy)") and Yahoo Mail's ("YahooMailProxy; ...").
 * Apple's Mail Privacy Protection sends a bare "Mozilla/5.0" and cannot
 * be told by its User-Agent; gateways that scan links and attachments
 * before delivery (Mimecast, Proofpoint...) are not opens at all.
 */

const char  *ngx_cdp_agent_mail_patterns[] = {
    "googleimageproxy",
    "yahoomailproxy",
    NULL
};


/*
 * Words of real devices and browsers, lowercase, in which a bot pattern
 * begins: a bot pattern that begins inside one of them does not count.
 */

const char  *ngx_cdp_agent_browser_words[] = {
    "cubot",            /* the phone brand: "CUBOT_X30", "CUBOT P40" */
    "botswana",         /* carriers, in "FBCR/OrangeBotswana" */
    "robotics",         /* "3COM U.S. Robotics", an old IE's OEM token */
    "htc ruby",         /* the phone, "HTC Ruby Build/..." */
    "rubyuix",          /* a ROM of that phone, "Build/RubyUIX" */
    "firephp/",         /* a Firefox extension, "FirePHP/0.4" */
    "huaweijava/",      /* old phones' Java: "HuaweiJava/1.0", */
    "semc-java/",       /* "Java/SEMC-Java/2.0" */
    NULL
};


/* the index; see the comment at the top */

static int          ngx_cdp_agent_ready;
static u_char       ngx_cdp_agent_code[256];
static int16_t      ngx_cdp_agent_head[NGX_CDP_AGENT_CODES
                                       * NGX_CDP_AGENT_CODES];
static int16_t      ngx_cdp_agent_next[NGX_CDP_AGENT_NALL];
static size_t       ngx_cdp_agent_len[NGX_CDP_AGENT_NALL];
static const char  *ngx_cdp_agent_pat[NGX_CDP_AGENT_NALL];


static void
ngx_cdp_agent_index(void)
{
    u_char       c;
    size_t       i, k, codes;
    int16_t     *link;
    const char  *p;

    for (k = 0; k < NGX_CDP_AGENT_NALL; k++) {
        ngx_cdp_agent_pat[k] = (k < NGX_CDP_AGENT_NBOT)
                               ? ngx_cdp_agent_bot_patterns[k]
                               : ngx_cdp_agent_mail_patterns[
                                     k - NGX_CDP_AGENT_NBOT];
        ngx_cdp_agent_len[k] = strlen(ngx_cdp_agent_pat[k]);
    }

    /*
     * Codes for the first two bytes of the patterns.  Past 63 distinct
     * bytes, the rest share the last code: their chains get patterns
     * of another pair too, which the comparison of whole patterns sorts
     * out.
     */

    memset(ngx_cdp_agent_code, 0, sizeof(ngx_cdp_agent_code));
    codes = 0;

    for (k = 0; k < NGX_CDP_AGENT_NALL; k++) {
        for (i = 0; i < 2 && i < ngx_cdp_agent_len[k]; i++) {
            c = (u_char) ngx_cdp_agent_pat[k][i];

            if (ngx_cdp_agent_code[c] == 0) {
                ngx_cdp_agent_code[c] = (u_char)
                    (codes < NGX_CDP_AGENT_CODES - 1 ? ++codes : codes);

                /* the header is not lower-cased: its upper case too */
                if (c >= 'a' && c <= 'z') {
                    ngx_cdp_agent_code[c & ~0x20] = ngx_cdp_agent_code[c];
                }
            }
        }
    }

    for (i = 0; i < NGX_CDP_AGENT_CODES * NGX_CDP_AGENT_CODES; i++) {
        ngx_cdp_agent_head[i] = -1;
    }

    /*
     * In a chain, the mail proxies' patterns come first, then the bots'
     * from the longest down: the first bot pattern that matches is the
     * longest, and once a bot is found, a chain is walked only up to its
     * first bot pattern.  The bots' patterns are indexed first, so each
     * mail pattern goes in front of them.  A pattern of one byte has no
     * pair and is left out: the unit tests refuse one.
     */

    for (k = 0; k < NGX_CDP_AGENT_NALL; k++) {
        p = ngx_cdp_agent_pat[k];

        if (ngx_cdp_agent_len[k] < 2) {
            continue;
        }

        link = &ngx_cdp_agent_head[ngx_cdp_agent_code[(u_char) p[0]]
                                   * NGX_CDP_AGENT_CODES
                                   + ngx_cdp_agent_code[(u_char) p[1]]];

        while (*link >= 0
               && (k >= NGX_CDP_AGENT_NBOT
                   ? (size_t) *link >= NGX_CDP_AGENT_NBOT
                   : ngx_cdp_agent_len[*link] >= ngx_cdp_agent_len[k]))
        {
            link = &ngx_cdp_agent_next[*link];
        }

        ngx_cdp_agent_next[k] = *link;
        *link = (int16_t) k;
    }

    ngx_cdp_agent_ready = 1;
}


int
ngx_cdp_agent_classify(const u_char *ua, size_t len, const char **pattern)
{
    int16_t      k;
    size_t       i, n, m;
    unsigned     prev, cur;
    const char  *bot;

    if (pattern) {
        *pattern = NULL;
    }

    if (ua == NULL || len == 0) {
        if (pattern) {
            /* the empty pattern, which the empty header contains */
            *pattern = "";
        }

        return NGX_CDP_AGENT_BOT;
    }

    if (!ngx_cdp_agent_ready) {
        ngx_cdp_agent_index();
    }

    n = (len < NGX_CDP_AGENT_SCAN) ? len : NGX_CDP_AGENT_SCAN;
    bot = NULL;
    prev = ngx_cdp_agent_code[ua[0]];

    for (i = 0; i + 1 < n; i++) {
        cur = ngx_cdp_agent_code[ua[i + 1]];
        k = ngx_cdp_agent_head[prev * NGX_CDP_AGENT_CODES + cur];
        prev = cur;

        for ( /* void */ ; k >= 0; k = ngx_cdp_agent_next[k]) {

            /* once a bot is found, only a mail proxy can change the class */
            if (bot && (size_t) k < NGX_CDP_AGENT_NBOT) {
                break;
            }

            m = ngx_cdp_agent_len[k];

            /* the third byte first: it sets most patterns of a chain apart */
            if (m > n - i
                || (m > 2 && ngx_cdp_agent_lower(ua[i + 2])
                             != (u_char) ngx_cdp_agent_pat[k][2])
                || !ngx_cdp_agent_eq(ua + i, ngx_cdp_agent_pat[k], m))
            {
                continue;
            }

            if ((size_t) k >= NGX_CDP_AGENT_NBOT) {
                if (pattern) {
                    *pattern = ngx_cdp_agent_pat[k];
                }

                return NGX_CDP_AGENT_MAIL_PROXY;
            }

            if (!ngx_cdp_agent_in_word(ua, n, i)) {
                bot = ngx_cdp_agent_pat[k];
                break;
            }
        }
    }

    if (bot == NULL) {
        return NGX_CDP_AGENT_BROWSER;
    }

    if (pattern) {
        *pattern = bot;
    }

    return NGX_CDP_AGENT_BOT;
}


/* does ua[i] lie inside an occurrence of a browser word in ua[0, n)? */

static int
ngx_cdp_agent_in_word(const u_char *ua, size_t n, size_t i)
{
    size_t        o, w;
    const char  **word;

    for (word = ngx_cdp_agent_browser_words; *word; word++) {
        w = strlen(*word);

        for (o = 0; o < w && o <= i; o++) {
            if (w <= n - (i - o) && ngx_cdp_agent_eq(ua + i - o, *word, w)) {
                return 1;
            }
        }
    }

    return 0;
}


/* the n bytes at p are s, a lowercase string, but for ASCII case */

static int
ngx_cdp_agent_eq(const u_char *p, const char *s, size_t n)
{
    size_t  i;

    for (i = 0; i < n; i++) {
        if (ngx_cdp_agent_lower(p[i]) != (u_char) s[i]) {
            return 0;
        }
    }

    return 1;
}


static u_char
ngx_cdp_agent_lower(u_char c)
{
    return (c >= 'A' && c <= 'Z') ? (u_char) (c | 0x20) : c;
}


/* prefetch */

int
ngx_cdp_agent_prefetch(const u_char *sec_purpose, size_t sec_len,
    const u_char *purpose, size_t purpose_len, const u_char *x_moz,
    size_t x_moz_len)
{
    if (sec_purpose && ngx_cdp_agent_token(sec_purpose, sec_len)) {
        return 1;
    }

    if (purpose && ngx_cdp_agent_token(purpose, purpose_len)) {
        return 1;
    }

    if (x_moz == NULL) {
        return 0;
    }

    /* nginx strips the value already; a caller's copy may not be */

    while (x_moz_len && (*x_moz == ' ' || *x_moz == '\t')) {
        x_moz++;
        x_moz_len--;
    }

    while (x_moz_len
           && (x_moz[x_moz_len - 1] == ' ' || x_moz[x_moz_len - 1] == '\t'))
    {
        x_moz_len--;
    }

    return x_moz_len == 8 && ngx_cdp_agent_eq(x_moz, "prefetch", 8);
}


/*
 * Token characters: RFC 9110's tchar, and ':' and '/' which structured
 * fields (RFC 8941) allow in tokens too.  Anything else separates tokens,
 * so "prefetch;prerender" holds two, and "noprefetch" or "x-prefetch"
 * none of ours.
 */

static int
ngx_cdp_agent_tchar(u_char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
        || (c >= '0' && c <= '9'))
    {
        return 1;
    }

    return c != '\0' && strchr("!#$%&'*+-.^_`|~:/", c) != NULL;
}


/* does the value hold the token "prefetch" or "prerender"? */

static int
ngx_cdp_agent_token(const u_char *p, size_t len)
{
    size_t  i, start, n;

    i = 0;

    while (i < len) {
        while (i < len && !ngx_cdp_agent_tchar(p[i])) {
            i++;
        }

        start = i;

        while (i < len && ngx_cdp_agent_tchar(p[i])) {
            i++;
        }

        n = i - start;

        if ((n == 8 && ngx_cdp_agent_eq(p + start, "prefetch", 8))
            || (n == 9 && ngx_cdp_agent_eq(p + start, "prerender", 9)))
        {
            return 1;
        }
    }

    return 0;
}
