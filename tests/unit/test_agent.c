
/*
 * Unit tests of ngx_cdp_agent.c, with the same tiny harness as
 * test_codec.c: User-Agent classes and prefetch headers.
 *
 * Every CHECK counts as one test; the last line is "N passed, N failed"
 * and the exit status is non-zero when anything failed.  Inputs are
 * copied to their exact size, followed by a canary, so that a read past
 * a header shows up under valgrind and `make sanitize`.
 *
 * Every entry of the built-in lists has a User-Agent of its own below,
 * taken from what the crawler, tool or proxy sends; a new entry without
 * one fails test_lists().  The real browsers' User-Agents are what those
 * browsers send, in-app browsers included: none may be taken for a bot.
 *
 * Not a test: test_bench() prints the cost of a call, in ns, for a
 * desktop Chrome and for Googlebot, above the summary line.
 */


#include <time.h>

#include "ngx_cdp_agent.h"
#include "unit.h"


#define BENCH_ROUNDS  20
#define BENCH_CALLS   10000


typedef struct {
    const char  *pattern;
    const char  *ua;
    const char  *reported;     /* the pattern reported, when not pattern */
} ngx_cdp_tagent_t;


/* desktop Chrome: the bots below are appended to it in test_lists() */
#define CHROME                                                                \
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "           \
    "(KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"

#define GOOGLEBOT                                                             \
    "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) "              \
    "AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.201 Mobile "    \
    "Safari/537.36 (compatible; Googlebot/2.1; "                              \
    "+http://www.google.com/bot.html)"


/* one User-Agent for each entry of the built-in lists */

static const ngx_cdp_tagent_t  ngx_cdp_agent_rows[] = {

    /* search engines */
    { "googlebot",
      "Mozilla/5.0 (compatible; Googlebot/2.1; "
      "+http://www.google.com/bot.html)", NULL },
    { "adsbot-google",
      "AdsBot-Google (+http://www.google.com/adsbot.html)", NULL },
    { "mediapartners-google", "Mediapartners-Google", NULL },
    { "apis-google",
      "APIs-Google (+https://developers.google.com/webmasters/"
      "APIs-Google.html)", NULL },
    { "feedfetcher-google",
      "FeedFetcher-Google; (+http://www.google.com/feedfetcher.html)",
      NULL },
    { "google-inspectiontool",
      "Mozilla/5.0 (compatible; Google-InspectionTool/1.0;)", NULL },
    { "storebot-google",
      "Mozilla/5.0 (X11; Linux x86_64; Storebot-Google/1.0) "
      "AppleWebKit/537.36 (KHTML, like Gecko) Chrome/79.0.3945.88 "
      "Safari/537.36", NULL },
    { "googleother",
      "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) "
      "AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.201 Mobile "
      "Safari/537.36 (compatible; GoogleOther)", NULL },
    { "google-read-aloud",
      "Mozilla/5.0 (Linux; Android 7.0; SM-G930V Build/NRD90M) "
      "AppleWebKit/537.36 (KHTML, like Gecko) Chrome/59.0.3071.125 Mobile "
      "Safari/537.36 (compatible; Google-Read-Aloud; "
      "+https://support.google.com/webmasters/answer/1061943)", NULL },
    { "google-site-verification",
      "Mozilla/5.0 (compatible; Google-Site-Verification/1.0)", NULL },
    { "duplexweb-google",
      "Mozilla/5.0 (Linux; Android 11; Pixel 2; DuplexWeb-Google/1.0) "
      "AppleWebKit/537.36 (KHTML, like Gecko) Chrome/86.0.4240.193 Mobile "
      "Safari/537.36", NULL },
    { "google favicon",
      "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like "
      "Gecko) Chrome/49.0.2623.75 Safari/537.36 Google Favicon", NULL },
    { "googleproducer",
      "GoogleProducer; (+https://developers.google.com/search/docs/"
      "crawling-indexing/google-producer)", NULL },
    { "google-cloudvertexbot",
      "Mozilla/5.0 (compatible; Google-CloudVertexBot; "
      "+https://cloud.google.com/enterprise-search)", NULL },
    { "bingbot",
      "Mozilla/5.0 (compatible; bingbot/2.0; "
      "+http://www.bing.com/bingbot.htm)", NULL },
    { "bingpreview",
      "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
      "(KHTML, like Gecko) Chrome/79.0.3945.88 Safari/537.36 "
      "BingPreview/1.0b", NULL },
    { "msnbot", "msnbot/2.0b (+http://search.msn.com/msnbot.htm)", NULL },
    { "adidxbot",
      "Mozilla/5.0 (compatible; adidxbot/2.0; "
      "+http://www.bing.com/bingbot.htm)", NULL },
    { "yandex.com/bots",
      "Mozilla/5.0 (compatible; YandexDirectDyn/1.0; "
      "+http://yandex.com/bots)", NULL },
    { "yandexbot",
      "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
      NULL },
    { "yandeximages",
      "Mozilla/5.0 (compatible; YandexImages/3.0; +http://yandex.com/bots)",
      NULL },
    { "yandexmetrika",
      "Mozilla/5.0 (compatible; YandexMetrika/2.0; "
      "+http://yandex.com/bots yabs01)", NULL },
    { "baiduspider",
      "Mozilla/5.0 (compatible; Baiduspider/2.0; "
      "+http://www.baidu.com/search/spider.html)", NULL },
    { "duckduckbot",
      "DuckDuckBot/1.1; (+http://duckduckgo.com/duckduckbot.html)", NULL },
    { "duckassistbot",
      "DuckAssistBot/1.2; (+http://duckduckgo.com/duckassistbot.html)",
      NULL },
    { "slurp",
      "Mozilla/5.0 (compatible; Yahoo! Slurp; "
      "http://help.yahoo.com/help/us/ysearch/slurp)", NULL },
    { "applebot",
      "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_5) AppleWebKit/605.1.15 "
      "(KHTML, like Gecko) Version/13.1.1 Safari/605.1.15 (Applebot/0.1; "
      "+http://www.apple.com/go/applebot)", NULL },
    { "petalbot",
      "Mozilla/5.0 (Linux; Android 7.0;) AppleWebKit/537.36 (KHTML, like "
      "Gecko) Mobile Safari/537.36 (compatible; PetalBot;"
      "+https://webmaster.petalsearch.com/site/petalbot)", NULL },
    { "sogou web spider",
      "Sogou web spider/4.0(+http://www.sogou.com/docs/help/"
      "webmasters.htm#07)", NULL },
    { "seznambot",
      "Mozilla/5.0 (compatible; SeznamBot/4.0; "
      "+https://o-seznam.cz/napoveda/vyhledavani/en/seznambot-crawler/)",
      NULL },
    { "yeti/", "Mozilla/5.0 (compatible; Yeti/1.1; +https://naver.me/spd)",
      NULL },
    { "qwantify",
      "Mozilla/5.0 (compatible; Qwantify/2.4w; +https://www.qwant.com/)"
      "/2.4w", NULL },
    { "qwantbot",
      "Mozilla/5.0 (compatible; Qwantbot/1.0_4193332; "
      "+https://help.qwant.com/bot/)", NULL },
    { "mojeekbot",
      "Mozilla/5.0 (compatible; MojeekBot/0.11; "
      "+https://www.mojeek.com/bot.html)", NULL },
    { "coccocbot",
      "Mozilla/5.0 (compatible; coccocbot-web/1.0; "
      "+http://help.coccoc.com/searchengine)", NULL },
    { "exabot",
      "Mozilla/5.0 (compatible; Exabot/3.0; +http://www.exabot.com/go/robot)",
      NULL },
    { "mail.ru_bot",
      "Mozilla/5.0 (compatible; Linux x86_64; Mail.RU_Bot/2.0; "
      "+https://help.mail.ru/webmaster/indexing/robots)", NULL },
    { "yisouspider",
      "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, "
      "like Gecko) Chrome/69.0.3497.81 YisouSpider/5.0 Safari/537.36",
      NULL },
    { "360spider",
      "Mozilla/5.0 (compatible; MSIE 9.0; Windows NT 6.1; Trident/5.0); "
      "360Spider", NULL },

    /* link previews */
    { "facebookexternalhit",
      "facebookexternalhit/1.1 "
      "(+http://www.facebook.com/externalhit_uatext.php)", NULL },
    { "facebookcatalog", "facebookcatalog/1.0", NULL },
    { "facebookbot",
      "Mozilla/5.0 (compatible; FacebookBot/1.0; "
      "+https://developers.facebook.com/docs/sharing/webmasters/"
      "facebookbot/)", NULL },
    { "meta-externalagent",
      "meta-externalagent/1.1 (+https://developers.facebook.com/docs/"
      "sharing/webmasters/crawler)", NULL },
    { "meta-externalfetcher",
      "meta-externalfetcher/1.1 (+https://developers.facebook.com/docs/"
      "sharing/webmasters/crawler)", NULL },
    { "twitterbot", "Twitterbot/1.0", NULL },
    { "linkedinbot",
      "LinkedInBot/1.0 (compatible; Mozilla/5.0; Apache-HttpClient "
      "+http://www.linkedin.com)", NULL },
    { "slackbot",
      "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)", NULL },
    { "slack-imgproxy", "Slack-ImgProxy (+https://api.slack.com/robots)",
      NULL },
    { "discordbot",
      "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
      NULL },
    { "telegrambot", "TelegramBot (like TwitterBot)", NULL },
    { "whatsapp/", "WhatsApp/2.23.20.0 A", NULL },
    { "skypeuripreview",
      "Mozilla/5.0 (Windows NT 6.1; WOW64) SkypeUriPreview Preview/0.5 "
      "skype-url-preview@microsoft.com", NULL },
    { "pinterestbot",
      "Mozilla/5.0 (compatible; Pinterestbot/1.0; "
      "+http://www.pinterest.com/bot.html)", NULL },
    { "pinterest/0.", "Pinterest/0.2 (+http://www.pinterest.com/)", NULL },
    { "redditbot",
      "Mozilla/5.0 (compatible; redditbot/1.0; "
      "+http://www.reddit.com/feedback)", NULL },
    { "embedly",
      "Mozilla/5.0 (compatible; Embedly/0.2; +http://support.embed.ly/)",
      NULL },
    { "vkshare", "Mozilla/5.0 (compatible; vkShare; +http://vk.com/dev/Share)",
      NULL },
    { "iframely", "Iframely/1.3.1 (+https://iframely.com/docs/about)", NULL },
    { "kakaotalk-scrap",
      "kakaotalk-scrap/1.0; +https://devtalk.kakao.com/t/scrap/33984",
      NULL },
    { "flipboardproxy",
      "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.11; rv:49.0) "
      "Gecko/20100101 Firefox/49.0 (FlipboardProxy/1.2; "
      "+http://flipboard.com/browserproxy)", NULL },
    { "bitlybot", "bitlybot/3.0 (+http://bit.ly/)", NULL },
    { "snap url preview",
      "Mozilla/5.0 (compatible; Snap URL Preview Service; bot; snapchat; "
      "https://developers.snap.com/robots)", NULL },
    { "quora link preview", "Quora Link Preview/1.0 (http://www.quora.com)",
      NULL },
    { "xing-contenttabreceiver", "XING-contenttabreceiver/2.0", NULL },

    /* SEO, archive and AI crawlers */
    { "ahrefsbot",
      "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
      NULL },
    { "ahrefssiteaudit",
      "Mozilla/5.0 (compatible; AhrefsSiteAudit/6.1; "
      "+http://ahrefs.com/robot/site-audit)", NULL },
    { "semrushbot",
      "Mozilla/5.0 (compatible; SemrushBot/7~bl; "
      "+http://www.semrush.com/bot.html)", NULL },
    { "siteauditbot",
      "Mozilla/5.0 (compatible; SiteAuditBot/0.97; "
      "+http://www.semrush.com/bot.html)", NULL },
    { "mj12bot",
      "Mozilla/5.0 (compatible; MJ12bot/v1.4.8; http://mj12bot.com/)",
      NULL },
    { "dotbot",
      "Mozilla/5.0 (compatible; DotBot/1.2; "
      "+https://opensiteexplorer.org/dotbot; help@moz.com)", NULL },
    { "rogerbot",
      "rogerbot/1.2 (https://moz.com/help/guides/moz-procedures/"
      "what-is-rogerbot, rogerbot-crawler+shiny@moz.com)", NULL },
    { "screaming frog", "Screaming Frog SEO Spider/19.0", NULL },
    { "ia_archiver",
      "ia_archiver (+http://www.alexa.com/site/help/webmasters; "
      "crawler@alexa.com)", NULL },
    { "archive.org_bot",
      "Mozilla/5.0 (compatible; archive.org_bot "
      "+http://archive.org/details/archive.org_bot)", NULL },
    { "heritrix",
      "Mozilla/5.0 (compatible; heritrix/3.4.0 "
      "+https://www.kb.se/hitta-och-bestall/om-webbarkivet)", NULL },
    { "ccbot", "CCBot/2.0 (https://commoncrawl.org/faq/)", NULL },
    { "gptbot",
      "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; "
      "GPTBot/1.2; +https://openai.com/gptbot)", NULL },
    { "chatgpt-user",
      "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko); compatible; "
      "ChatGPT-User/1.0; +https://openai.com/bot", NULL },
    { "oai-searchbot",
      "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko); compatible; "
      "OAI-SearchBot/1.0; +https://openai.com/searchbot", NULL },
    { "claudebot",
      "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; "
      "ClaudeBot/1.0; +claudebot@anthropic.com)", NULL },
    { "claude-web",
      "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; "
      "Claude-Web/1.0; +claude-web@anthropic.com)", NULL },
    { "claude-user",
      "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; "
      "Claude-User/1.0; +Claude-User@anthropic.com)", NULL },
    { "claude-searchbot",
      "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; "
      "Claude-SearchBot/1.0; +Claude-SearchBot@anthropic.com)", NULL },
    { "anthropic-ai", "anthropic-ai", NULL },
    { "perplexitybot",
      "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; "
      "PerplexityBot/1.0; +https://perplexity.ai/perplexitybot)", NULL },
    { "perplexity-user",
      "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; "
      "Perplexity-User/1.0; +https://perplexity.ai/perplexity-user)", NULL },
    { "mistralai-user",
      "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; "
      "MistralAI-User/1.0; +https://docs.mistral.ai/robots)", NULL },
    { "bytespider",
      "Mozilla/5.0 (Linux; Android 5.0) AppleWebKit/537.36 (KHTML, like "
      "Gecko) Mobile Safari/537.36 (compatible; Bytespider; "
      "spider-feedback@bytedance.com)", NULL },
    { "amazonbot",
      "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; "
      "Amazonbot/0.1; +https://developer.amazon.com/support/amazonbot) "
      "Chrome/119.0.6045.214 Safari/537.36", NULL },
    { "dataforseobot",
      "Mozilla/5.0 (compatible; DataForSeoBot/1.0; "
      "+https://dataforseo.com/dataforseo-bot)", NULL },
    { "blexbot",
      "Mozilla/5.0 (compatible; BLEXBot/1.0; +http://webmeup-crawler.com/)",
      NULL },
    { "serpstatbot",
      "serpstatbot/2.1 (advanced backlink tracking bot; "
      "https://serpstatbot.com/; abuse@serpstatbot.com)", NULL },
    { "seekportbot",
      "Mozilla/5.0 (compatible; SeekportBot; +https://bot.seekport.com)",
      NULL },
    { "megaindex",
      "Mozilla/5.0 (compatible; MegaIndex.ru/2.0; "
      "+http://megaindex.com/crawler)", NULL },
    { "barkrowler",
      "Mozilla/5.0 (compatible; Barkrowler/0.9; +https://babbar.tech/crawler)",
      NULL },
    { "diffbot",
      "Mozilla/5.0 (Windows NT 6.1; WOW64) AppleWebKit/537.36 (KHTML, like "
      "Gecko) Chrome/45.0.2454.85 Safari/537.36 (compatible; Diffbot/0.1; "
      "+http://www.diffbot.com)", NULL },
    { "youbot", "Mozilla/5.0 (compatible; YouBot (+http://www.you.com))",
      NULL },
    { "cohere-ai", "cohere-ai", NULL },
    { "timpibot", "Timpibot/0.9 (+http://www.timpi.io)", NULL },
    { "imagesiftbot", "Mozilla/5.0 (compatible; ImagesiftBot; +imagesift.com)",
      NULL },
    { "omgili", "omgili/0.5 +http://omgili.com", NULL },
    { "magpie-crawler",
      "magpie-crawler/1.1 (robots-txt-checker; +http://www.brandwatch.net)",
      NULL },
    { "turnitinbot",
      "TurnitinBot (https://turnitin.com/robot/crawlerinfo.html)", NULL },
    { "sistrix",
      "Mozilla/5.0 (compatible; SISTRIX Crawler; http://crawler.sistrix.net/)",
      NULL },
    { "netcraft",
      "Mozilla/5.0 (compatible; NetcraftSurveyAgent/1.0; "
      "+info@netcraft.com)", NULL },
    { "linkdexbot",
      "Mozilla/5.0 (compatible; linkdexbot/2.2; "
      "+http://www.linkdex.com/bots/)",
      NULL },
    { "seokicks",
      "Mozilla/5.0 (compatible; SEOkicks; "
      "+https://www.seokicks.de/robot.html)",
      NULL },
    { "ai2bot",
      "Mozilla/5.0 (compatible) AI2Bot (+https://www.allenai.org/crawler)",
      NULL },
    { "w3c_validator", "W3C_Validator/1.3 http://validator.w3.org/services",
      NULL },
    { "w3c-checklink", "W3C-checklink/4.81 libwww-perl/6.68", NULL },

    /* monitors */
    { "uptimerobot",
      "Mozilla/5.0+(compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)",
      NULL },
    { "pingdom", "Pingdom.com_bot_version_1.4_(http://www.pingdom.com/)",
      NULL },
    { "statuscake", CHROME " StatusCake", NULL },
    { "site24x7", CHROME " Site24x7", NULL },
    { "newrelicpinger", "NewRelicPinger/1.0 (1234567)", NULL },
    { "datadog", "Datadog/Synthetics", NULL },
    { "better uptime",
      "Better Uptime Bot Mozilla/5.0 (Windows NT 10.0; Win64; x64) "
      "AppleWebKit/537.36 (KHTML, like Gecko) Chrome/109.0.0.0 "
      "Safari/537.36", NULL },
    { "freshping", "FreshpingBot/1.0 (+https://freshping.io/)", NULL },
    { "uptime-kuma", "Uptime-Kuma/1.23.11", NULL },
    { "checkly", "Checkly/1.0 (https://www.checklyhq.com)", NULL },
    { "nagios", "check_http/v2.3.3 (nagios-plugins 2.3.3)", "check_http" },
    { "check_http", "check_http/v2.4.9 (monitoring-plugins 2.4.9)", NULL },
    { "zabbix", "Zabbix", NULL },
    { "monitis", "Mozilla/5.0 (compatible; Monitis.com - free monitoring)",
      NULL },
    { "updown.io", "updown.io daemon 2.11", NULL },
    { "ruxitsynthetic",
      CHROME " RuxitSynthetic/1.0 v7012345678 t1234567890", NULL },
    { "catchpoint", CHROME " Catchpoint", NULL },
    { "elastic-heartbeat",
      "Elastic-Heartbeat/8.13.2 (linux; amd64; 1b2c3d4; "
      "2024-04-08 14:16:18 +0000 UTC)", NULL },
    { "blackbox exporter", "Blackbox Exporter/0.25.0", NULL },
    { "kube-probe", "kube-probe/1.29", NULL },
    { "elb-healthchecker", "ELB-HealthChecker/2.0", NULL },
    { "googlehc/", "GoogleHC/1.0", NULL },
    { "googlestackdrivermonitoring",
      "GoogleStackdriverMonitoring-UptimeChecks"
      "(https://cloud.google.com/monitoring)", NULL },
    { "consul health check", "Consul Health Check", NULL },
    { "hetrixtools",
      "HetrixTools Uptime Monitoring Bot. "
      "https://hetrix.tools/uptime-monitoring-bot.html", NULL },

    /* libraries and command-line clients */
    { "curl/", "curl/8.5.0", NULL },
    { "wget/", "Wget/1.21.4", NULL },
    { "python-requests", "python-requests/2.31.0", NULL },
    { "python-urllib", "Python-urllib/3.11", NULL },
    { "python-httpx", "python-httpx/0.27.0", NULL },
    { "aiohttp", "Python/3.12 aiohttp/3.9.5", NULL },
    { "go-http-client", "Go-http-client/2.0", NULL },
    { "go-resty", "go-resty/2.12.0 (https://github.com/go-resty/resty)",
      NULL },
    { "java/1", "Java/17.0.10", NULL },
    { "java/2", "Java/21.0.3", NULL },
    { "java-http-client", "Java-http-client/17.0.10", NULL },
    { "google-http-java-client",
      "Google-HTTP-Java-Client/1.44.1 (gzip)", NULL },
    { "appengine-google",
      "AppEngine-Google; (+http://code.google.com/appengine; "
      "appid: s~example-app)", NULL },
    { "okhttp", "okhttp/4.12.0", NULL },
    { "apache-httpclient", "Apache-HttpClient/4.5.14 (Java/17.0.10)", NULL },
    { "apache-httpasyncclient",
      "Apache-HttpAsyncClient/4.1.5 (Java/11.0.22)", NULL },
    { "jakarta", "Jakarta Commons-HttpClient/3.1", NULL },
    { "libwww-perl", "libwww-perl/6.76", NULL },
    { "lwp::", "LWP::Simple/6.00 libwww-perl/6.05", NULL },
    { "php/", "PHP/8.2.18", NULL },
    { "guzzlehttp", "GuzzleHttp/7", NULL },
    { "node-fetch", "node-fetch/1.0 (+https://github.com/bitinn/node-fetch)",
      NULL },
    { "undici", "undici", NULL },
    { "axios/", "axios/1.6.8", NULL },
    { "got (", "got (https://github.com/sindresorhus/got)", NULL },
    { "ruby", "Ruby", NULL },
    { "faraday", "Faraday v2.9.0", NULL },
    { "http.rb/", "http.rb/5.1.1 (Mastodon/4.2.8; +https://mastodon.social/)",
      NULL },
    { "httpie", "HTTPie/3.2.2", NULL },
    { "postmanruntime", "PostmanRuntime/7.37.3", NULL },
    { "insomnia", "insomnia/2023.5.8", NULL },
    { "powershell",
      "Mozilla/5.0 (Windows NT 10.0; Microsoft Windows 10.0.22631; en-US) "
      "PowerShell/7.4.2", NULL },
    { "winhttp", "Mozilla/4.0 (compatible; Win32; WinHttp.WinHttpRequest.5)",
      NULL },
    { "restsharp", "RestSharp/110.2.0.0", NULL },
    { "dart:io", "Dart/3.3 (dart:io)", NULL },
    { "deno/", "Deno/1.43.1", NULL },
    { "scrapy", "Scrapy/2.11.1 (+https://scrapy.org)", NULL },
    { "httpclient", "Symfony HttpClient (Curl)", NULL },
    { "libcurl", "libcurl-agent/1.0", NULL },
    { "wget2/", "wget2/2.1.0", NULL },
    { "httrack", "Mozilla/4.5 (compatible; HTTrack 3.0x; Windows 98)", NULL },

    /* headless and automated browsers */
    { "headlesschrome",
      "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like "
      "Gecko) HeadlessChrome/124.0.0.0 Safari/537.36", NULL },
    { "phantomjs",
      "Mozilla/5.0 (Unknown; Linux x86_64) AppleWebKit/538.1 (KHTML, like "
      "Gecko) PhantomJS/2.1.1 Safari/538.1", NULL },
    { "slimerjs",
      "Mozilla/5.0 (X11; Linux x86_64; rv:60.0) Gecko/20100101 "
      "SlimerJS/1.0.0", NULL },
    { "puppeteer", CHROME " Puppeteer/22.6.5", NULL },
    { "playwright", CHROME " Playwright/1.43.1", NULL },
    { "selenium", "selenium/4.19.0 (python linux)", NULL },
    { "webdriver", "webdriver/8.36.1", NULL },
    { "cypress/",
      "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, "
      "like Gecko) Cypress/13.8.1 Chrome/118.0.5993.159 Electron/27.1.3 "
      "Safari/537.36", NULL },
    { "chrome-lighthouse",
      "Mozilla/5.0 (Linux; Android 11; moto g power (2022)) "
      "AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile "
      "Safari/537.36 Chrome-Lighthouse", NULL },
    { "lighthouse", CHROME " Lighthouse/11.7.1", NULL },
    { "gtmetrix",
      "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like "
      "Gecko) Chrome/112.0.0.0 Safari/537.36 GTmetrix", NULL },
    { "pagespeed", "Serf/1.3.9 mod_pagespeed/1.13.35.2-0", NULL },
    { "page speed insights",
      "Mozilla/5.0 (Windows NT 6.1; WOW64) AppleWebKit/537.36 (KHTML, like "
      "Gecko; Google Page Speed Insights) Chrome/27.0.1453 Safari/537.36",
      NULL },
    { "prerender",
      CHROME " Prerender (+https://github.com/prerender/prerender)", NULL },
    { "rendertron",
      "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, "
      "like Gecko) Chrome/72.0.3626.0 Safari/537.36 Rendertron", NULL },

    /* scanners */
    { "nmap",
      "Mozilla/5.0 (compatible; Nmap Scripting Engine; "
      "https://nmap.org/book/nse.html)", NULL },
    { "masscan", "masscan/1.3 (https://github.com/robertdavidgraham/masscan)",
      NULL },
    { "zgrab", "Mozilla/5.0 zgrab/0.x", NULL },
    { "censysinspect",
      "Mozilla/5.0 (compatible; CensysInspect/1.1; "
      "+https://about.censys.io/)", NULL },
    { "nuclei",
      "Nuclei - Open-source project (github.com/projectdiscovery/nuclei)",
      NULL },
    { "nikto",
      "Mozilla/5.00 (Nikto/2.5.0) (Evasions:None) (Test:Port Check)", NULL },
    { "sqlmap", "sqlmap/1.8#stable (https://sqlmap.org)", NULL },
    { "wpscan",
      "WPScan v3.8.25 (https://wpscan.com/wordpress-security-scanner)",
      NULL },
    { "dirbuster",
      "DirBuster-1.0-RC1 (http://www.owasp.org/index.php/"
      "Category:OWASP_DirBuster_Project)", NULL },
    { "gobuster", "gobuster/3.6", NULL },
    { "wfuzz", "Wfuzz/3.1.0", NULL },
    { "fuzz faster u fool", "Fuzz Faster U Fool v2.1.0-dev", NULL },
    { "expanse",
      "Expanse, a Palo Alto Networks company, searches across the global "
      "IPv4 space multiple times per day to identify customers' presences "
      "on the Internet. If you would like to be excluded from our scans, "
      "please send IP addresses/domains to: scaninfo@paloaltonetworks.com",
      NULL },
    { "internet-measurement",
      "Mozilla/5.0 (compatible; InternetMeasurement/1.0; "
      "+https://internet-measurement.com/)", NULL },

    /* generic words */
    { "bot",
      "Mozilla/5.0 (compatible; Linguee Bot; http://www.linguee.com/bot; "
      "bot@linguee.com)", NULL },
    { "crawler", "MyCrawler/Nutch-1.19", NULL },
    { "crawl", "Mozilla/5.0 (compatible; SiteCrawl/2.1)", NULL },
    { "spider", "Sosospider+(+http://help.soso.com/webspider.htm)", NULL },

    /* mail proxies */
    { "googleimageproxy",
      "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 "
      "(via ggpht.com GoogleImageProxy)", NULL },
    { "yahoomailproxy",
      "YahooMailProxy; https://help.yahoo.com/kb/"
      "yahoo-mail-proxy-SLN28749.html", NULL }
};


/* real browsers: desktop, mobile, in-app, old IE, TVs, consoles */

static const char  *ngx_cdp_agent_browsers[] = {
    CHROME,
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, "
    "like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like "
    "Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) "
    "AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/124.0.6367.88 "
    "Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 "
    "Firefox/125.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.4; rv:125.0) Gecko/20100101 "
    "Firefox/125.0",
    "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:125.0) Gecko/20100101 "
    "Firefox/125.0",
    "Mozilla/5.0 (Android 14; Mobile; rv:125.0) Gecko/125.0 Firefox/125.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) "
    "AppleWebKit/605.1.15 (KHTML, like Gecko) FxiOS/125.0 Mobile/15E148 "
    "Safari/605.1.15",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4.1 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) "
    "AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Mobile/15E148 "
    "Safari/604.1",
    "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1",
    CHROME " Edg/124.0.2478.80",
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like "
    "Gecko) Chrome/124.0.0.0 Mobile Safari/537.36 EdgA/124.0.2478.64",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, "
    "like Gecko) Chrome/70.0.3538.102 Safari/537.36 Edge/18.19045",
    CHROME " OPR/110.0.0.0",
    "Opera/9.80 (J2ME/MIDP; Opera Mini/9.80 (S60; SymbOS; Opera Mobi/23.348; "
    "U; en) Presto/2.5.25 Version/10.54",
    CHROME " Vivaldi/6.7.3329.21",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, "
    "like Gecko) Chrome/122.0.0.0 YaBrowser/24.4.0.0 Safari/537.36",
    CHROME " Whale/3.25.232.19",
    "Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S918B) AppleWebKit/537.36 "
    "(KHTML, like Gecko) SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile "
    "Safari/537.36",
    "Mozilla/5.0 (Linux; U; Android 10; en-US; RMX2020 "
    "Build/QP1A.190711.020) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Version/4.0 Chrome/78.0.3904.108 UCBrowser/13.4.0.1306 Mobile "
    "Safari/537.36",
    "Mozilla/5.0 (Linux; Android 13; Pixel 7 Build/TQ3A.230805.001; wv) "
    "AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 "
    "Chrome/124.0.6367.82 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 10; HarmonyOS; ELS-NX9; HMSCore "
    "6.13.0.302) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/114.0.5735.196 HuaweiBrowser/14.0.5.303 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; U; Android 13; en-gb; 2201117TG "
    "Build/TKQ1.221114.001) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Version/4.0 Chrome/112.0.5615.136 Mobile Safari/537.36 "
    "XiaoMi/MiuiBrowser/14.9.1-gn",
    "Mozilla/5.0 (Linux; Android 10; V2027) AppleWebKit/537.36 (KHTML, like "
    "Gecko) Version/4.0 Chrome/87.0.4280.141 Mobile Safari/537.36 "
    "SogouMobileBrowser/5.28.12",
    "Mozilla/5.0 (Linux; U; Android 12; zh-cn; PFDM00 Build/SP1A.210812.016) "
    "AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/89.0.4389.72 "
    "MQQBrowser/13.6 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Version/4.0 Focus/124.0 Chrome/124.0.6367.82 Mobile Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) "
    "AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 "
    "DuckDuckGo/7 Safari/605.1.15",

    /* in-app browsers: people, unlike their networks' crawlers */
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) "
    "AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 "
    "[FBAN/FBIOS;FBAV/459.0.0.36.103;FBBV/590427113;FBDV/iPhone14,5;"
    "FBMD/iPhone;FBSN/iOS;FBSV/17.4;FBSS/3;FBID/phone;FBLC/en_US;FBOP/5;"
    "FBRV/592003215]",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8 Build/AP1A.240405.002; wv) "
    "AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 "
    "Chrome/124.0.6367.82 Mobile Safari/537.36 "
    "[FB_IAB/FB4A;FBAV/460.0.0.48.109;]",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) "
    "AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 "
    "[FBAN/MessengerForiOS;FBAV/455.0.0.35.106;FBBV/587451221;"
    "FBDV/iPhone15,2;FBMD/iPhone;FBSN/iOS;FBSV/17.4;FBSS/3;FBCR/;"
    "FBID/phone;FBLC/en_US;FBOP/5]",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) "
    "AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 Instagram "
    "329.0.3.29.101 (iPhone14,5; iOS 17_4; en_US; en; scale=3.00; "
    "1170x2532; 590685426)",
    "Mozilla/5.0 (Linux; Android 13; SM-A536B Build/TP1A.220624.014; wv) "
    "AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 "
    "Chrome/124.0.6367.82 Mobile Safari/537.36 Instagram 327.0.0.33.120 "
    "Android (33/13; 450dpi; 1080x2177; samsung; SM-A536B; a53x; s5e8825; "
    "en_GB; 588107416)",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) "
    "AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 Safari "
    "Line/14.5.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) "
    "AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 "
    "musical_ly_34.1.0 JsSdk/2.0 NetType/WIFI Channel/App Store "
    "ByteLocale/en Region/US ByteFullLocale/en-US isDarkMode/0 WKWebView/1 "
    "BytedanceWebview/d8a21c6",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) "
    "AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 "
    "Snapchat/13.2.0.40 (like Safari/8617.2.4.10.8, panda)",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) "
    "AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 [Pinterest/iOS]",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, "
    "like Gecko) Chrome/124.0.6367.82 Mobile Safari/537.36 TwitterAndroid",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) "
    "AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 "
    "[LinkedInApp]/9.29.1370",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) "
    "AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 "
    "MicroMessenger/8.0.47(0x18002f2c) NetType/WIFI Language/zh_CN",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) "
    "AppleWebKit/605.1.15 (KHTML, like Gecko) GSA/312.0.624497041 "
    "Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) "
    "AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 KAKAOTALK "
    "10.6.5",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) "
    "AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 "
    "NAVER(inapp; search; 2000; 12.5.4; 14PRO)",
    "Mozilla/5.0 (Linux; Android 13; 22101316G) AppleWebKit/537.36 (KHTML, "
    "like Gecko) Version/4.0 Chrome/116.0.0.0 Mobile Safari/537.36 "
    "baiduboxapp/13.47.0.10 (Baidu; P1 13)",
    "Mozilla/5.0 (Linux; Android 14; SM-G991B Build/UP1A.231005.007; wv) "
    "AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 "
    "Chrome/124.0.6367.82 Mobile Safari/537.36 Telegram-Android/10.11.1 "
    "(Samsung SM-G991B; Android 14; SDK 34; HIGH)",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, "
    "like Gecko) discord/1.0.9147 Chrome/120.0.6099.291 Electron/28.2.10 "
    "Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Slack/4.38.121 Chrome/124.0.6367.60 "
    "Electron/30.0.0 Safari/537.36 Sonic Slack_SSB/4.38.121",

    /* mail clients that load a message's images themselves: opens */
    "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook "
    "16.0.17531; Pro)",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:115.0) Gecko/20100101 "
    "Thunderbird/115.10.1",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko)",

    /* old Internet Explorers and phones */
    "Mozilla/5.0 (Windows NT 10.0; WOW64; Trident/7.0; rv:11.0) like Gecko",
    "Mozilla/4.0 (compatible; MSIE 8.0; Windows NT 6.1; Trident/4.0; SLCC2; "
    ".NET CLR 2.0.50727; .NET CLR 3.5.30729; .NET CLR 3.0.30729; Media "
    "Center PC 6.0)",
    "Mozilla/4.0 (compatible; MSIE 6.0; Windows NT 5.1; SV1)",
    "Mozilla/5.0 (compatible; MSIE 10.0; Windows Phone 8.0; Trident/6.0; "
    "IEMobile/10.0; ARM; Touch; NOKIA; Lumia 920)",
    "Mozilla/5.0 (BlackBerry; U; BlackBerry 9900; en) AppleWebKit/534.11+ "
    "(KHTML, like Gecko) Version/7.1.0.346 Mobile Safari/534.11+",
    "Mozilla/5.0 (Linux; U; Android 4.0.3; ko-kr; LG-L160L Build/IML74K) "
    "AppleWebKit/534.30 (KHTML, like Gecko) Version/4.0 Mobile "
    "Safari/534.30",

    /* CUBOT phones: "bot" inside the brand */
    "Mozilla/5.0 (Linux; Android 11; CUBOT_X30 Build/RP1A.200720.011) "
    "AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.82 Mobile "
    "Safari/537.36",
    "Mozilla/5.0 (Linux; Android 10; CUBOT P40) AppleWebKit/537.36 (KHTML, "
    "like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 12; CUBOT KINGKONG 7) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/118.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 9; Cubot King Kong 3 Build/PPR1.180610.011;"
    " wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 "
    "Chrome/124.0.6367.82 Mobile Safari/537.36",

    /* other words of real browsers with a bot pattern in them */
    "Mozilla/5.0 (iPhone; CPU iPhone OS 16_7 like Mac OS X) "
    "AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 "
    "[FBAN/FBIOS;FBAV/440.0.0.32.106;FBBV/547812375;FBDV/iPhone12,1;"
    "FBMD/iPhone;FBSN/iOS;FBSV/16.7;FBSS/2;FBCR/OrangeBotswana;FBID/phone;"
    "FBLC/en_GB;FBOP/5]",
    "Mozilla/5.0 (Linux; Android 4.0.4; HTC Ruby Build/IMM76D) "
    "AppleWebKit/535.19 (KHTML, like Gecko) Chrome/18.0.1025.166 Mobile "
    "Safari/535.19",
    "Mozilla/5.0 (Linux; U; Android 4.0.4; en-us; HTC RubyUIX "
    "Build/RubyUIX) AppleWebKit/534.30 (KHTML, like Gecko) Version/4.0 "
    "Mobile Safari/534.30",
    "Mozilla/4.0 (compatible; MSIE 6.0; Windows NT 5.1; 3COM U.S. Robotics)",
    "Mozilla/5.0 (Windows; U; Windows NT 6.1; en-US; rv:1.9.2.13) "
    "Gecko/20101203 Firefox/3.6.13 FirePHP/0.5",
    "HuaweiU1250/B002 Browser/Obigo-Browser/Q05A MMS/Obigo-MMS/Q05A "
    "HuaweiJava/1.0 Profile/MIDP-2.0 Configuration/CLDC-1.1",
    "SonyEricssonK800i/R1KG Browser/NetFront/3.3 Profile/MIDP-2.0 "
    "Configuration/CLDC-1.1 Java/SEMC-Java/2.0",
    "Nokia6300/2.0 (05.00) Profile/MIDP-2.0 Configuration/CLDC-1.1 "
    "Java/HWJa/1.0",

    /* TVs, consoles, readers, cars, headsets */
    "Mozilla/5.0 (SMART-TV; LINUX; Tizen 6.0) AppleWebKit/537.36 (KHTML, "
    "like Gecko) 76.0.3809.146/6.0 TV Safari/537.36",
    "Mozilla/5.0 (Web0S; Linux/SmartTV) AppleWebKit/537.36 (KHTML, like "
    "Gecko) Chrome/79.0.3945.79 Safari/537.36 WebAppManager",
    "Mozilla/5.0 (Linux; Tizen 2.3) AppleWebKit/538.1 (KHTML, like Gecko)"
    "Version/2.3 TV Safari/538.1 HbbTV/1.2.1 (+DRM;Samsung;SmartTV2015;"
    "T-HKM6DEUC-1490.3;;) WebKit",
    "Mozilla/5.0 (Linux; Android 12.0; Build/STTL.240206.002) "
    "AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.225 "
    "Safari/537.36 CrKey/1.56.500000 DeviceType/AndroidTV",
    "Mozilla/5.0 (PlayStation; PlayStation 5/6.50) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/15.4 Safari/605.1.15",
    "Mozilla/5.0 (PlayStation 4 11.00) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko)",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; Xbox; Xbox One) "
    "AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 "
    "Edge/44.18363.8131",
    "Mozilla/5.0 (Nintendo Switch; WifiWebAuthApplet) AppleWebKit/606.4 "
    "(KHTML, like Gecko) NF/6.0.1.15.4 NintendoBrowser/5.1.0.20393",
    "Mozilla/5.0 (Linux; Android 9; KFTRWI) AppleWebKit/537.36 (KHTML, like "
    "Gecko) Silk/124.2.3 like Chrome/124.0.6367.219 Safari/537.36",
    "Mozilla/5.0 (X11; U; Linux armv7l like Android; en-us) "
    "AppleWebKit/531.2+ (KHTML, like Gecko) Version/5.0 Safari/533.2+ "
    "Kindle/3.0+",
    "Mozilla/5.0 (X11; GNU/Linux) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chromium/109.0.5414.119 Chrome/109.0.5414.119 Safari/537.36 "
    "Tesla/2024.8.9-1a2b3c4d5e",
    "Mozilla/5.0 (X11; Linux x86_64; Quest 3) AppleWebKit/537.36 (KHTML, "
    "like Gecko) OculusBrowser/33.0.0.5.91 SamsungBrowser/4.0 "
    "Chrome/124.0.6367.118 VR Safari/537.36",
    NULL
};


/* bots as they come, some caught by a generic word only */

static const char  *ngx_cdp_agent_bots[] = {
    GOOGLEBOT,
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; "
    "Googlebot/2.1; +http://www.google.com/bot.html) Chrome/124.0.6367.201 "
    "Safari/537.36",
    "Googlebot-Image/1.0",
    "Googlebot-Video/1.0",
    "Googlebot-News",
    "AdsBot-Google-Mobile (+http://www.google.com/mobile/adsbot.html) "
    "Mozilla/5.0 (iPhone; CPU iPhone OS 14_7_1 like Mac OS X) "
    "AppleWebKit/605.1.15 (KHTML, like Gecko) Version/14.1.2 "
    "Mobile/15E148 Safari/604.1",
    "GoogleOther-Image/1.0",
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; "
    "bingbot/2.0; +http://www.bing.com/bingbot.htm) Chrome/116.0.1938.76 "
    "Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 7_0 like Mac OS X) "
    "AppleWebKit/537.51.1 (KHTML, like Gecko) Version/7.0 Mobile/11A465 "
    "Safari/9537.53 (compatible; bingbot/2.0; "
    "+http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (compatible; YandexMobileBot/3.0; +http://yandex.com/bots)",
    "Mozilla/5.0 (compatible; YandexAccessibilityBot/3.0; "
    "+http://yandex.com/bots)",
    "Mozilla/5.0 (compatible; DuckDuckGo-Favicons-Bot/1.0; "
    "+http://duckduckgo.com)",
    "Sogou inst spider/4.0(+http://www.sogou.com/docs/help/webmasters.htm"
    "#07)",
    "Mozilla/5.0 (compatible; Qwantbot-news/1.0; "
    "+https://help.qwant.com/bot/)",
    "facebookexternalhit/1.1;line-poker/1.0",
    "Mozilla/5.0 (compatible; Pinterestbot/1.0; "
    "+http://www.pinterest.com/bot.html)",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_11_1) AppleWebKit/601.2.4 "
    "(KHTML, like Gecko) Version/9.0.1 Safari/601.2.4 facebookexternalhit/1.1 "
    "Facebot Twitterbot/1.0",
    "Mozilla/5.0 (compatible; Thinkbot/0.5.8; +In_the_test_phase,_if_the_"
    "Thinkbot_brings_you_trouble,_please_block_its_IP_address._Thank_you.)",
    "ZoominfoBot (zoominfobot at zoominfo dot com)",
    "Mozilla/5.0 (compatible; MJ12bot/v1.4.8; http://mj12bot.com/)",
    "Mozilla/5.0 (compatible; Bytespider; spider-feedback@bytedance.com) "
    "AppleWebKit/537.36 (KHTML, like Gecko) Chrome/70.0.0.0 Safari/537.36",
    "Mozilla/5.0 (compatible; GPTBot/1.1; +https://openai.com/gptbot)",
    "Mozilla/5.0 (compatible; ImagesiftBot; +imagesift.com)",
    "Mozilla/5.0 (compatible; Applebot/0.1; "
    "+http://www.apple.com/go/applebot)",
    "Mozilla/5.0 (compatible; Seekport Crawler; http://seekport.com/)",
    "Mozilla/5.0 (compatible; DataForSeoBot/1.0; "
    "+https://dataforseo.com/dataforseo-bot)",
    "Mozilla/5.0 (compatible; AwarioBot/1.0; +https://awario.com/bots.html)",
    "Mozilla/5.0 (compatible; PetalBot;"
    "+https://webmaster.petalsearch.com/site/petalbot)",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, "
    "like Gecko) Chrome/109.0.0.0 Safari/537.36 (StatusCake)",
    "Pingdom.com_bot_version_1.4_(http://www.pingdom.com/)",
    "curl/7.81.0",
    "Wget/1.20.3 (linux-gnu)",
    "python-requests/2.28.1",
    "Go-http-client/1.1",
    "okhttp/3.12.1",
    "axios/0.27.2",
    "node-fetch",
    "Ruby",
    "PostmanRuntime/7.36.1",
    "Boto3/1.34.84 md/Botocore#1.34.84 ua/2.0 os/linux#5.15 md/arch#x86_64 "
    "lang/python#3.11.8 md/pyimpl#CPython cfg/retry-mode#legacy "
    "Botocore/1.34.84",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/120.0.6099.28 Safari/537.36",
    "Mozilla/5.0 (compatible; CensysInspect/1.1; +https://about.censys.io/)",
    "Mozilla/5.0 (Linux; Android 11; CUBOT_X30) AppleWebKit/537.36 (KHTML, "
    "like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36 (compatible; "
    "Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; Cubot-Crawler/1.0)",
    NULL
};


static int
ngx_cdp_classify(const char *ua, const char **pattern)
{
    int      rc;
    size_t   len;
    u_char  *b;

    len = strlen(ua);
    b = ngx_cdp_dup(ua, len);

    rc = ngx_cdp_agent_classify(b, len, pattern);

    CHECK(ngx_cdp_canary_ok(b, len));
    free(b);

    return rc;
}


/* the User-Agent contains the pattern, ASCII case-insensitively */

static int
ngx_cdp_contains(const char *ua, const char *pattern)
{
    size_t  i, j, n, m;

    n = strlen(ua);
    m = strlen(pattern);

    for (i = 0; i + m <= n; i++) {
        for (j = 0; j < m; j++) {
            if ((ua[i + j] >= 'A' && ua[i + j] <= 'Z'
                 ? ua[i + j] | 0x20 : ua[i + j]) != pattern[j])
            {
                break;
            }
        }

        if (j == m) {
            return 1;
        }
    }

    return 0;
}


static int
ngx_cdp_lowercase(const char *s)
{
    for ( /* void */ ; *s; s++) {
        if (*s < 0x20 || *s > 0x7e || (*s >= 'A' && *s <= 'Z')) {
            return 0;
        }
    }

    return 1;
}


/* a bot pattern begins in the word, and agrees with it to its end */

static int
ngx_cdp_word_has_pattern(const char *word)
{
    size_t        o, w, m;
    const char  **p;

    w = strlen(word);

    for (p = ngx_cdp_agent_bot_patterns; *p; p++) {
        m = strlen(*p);

        for (o = 0; o < w; o++) {
            if (strncmp(word + o, *p, (w - o < m) ? w - o : m) == 0) {
                return 1;
            }
        }
    }

    return 0;
}


static const ngx_cdp_tagent_t *
ngx_cdp_row(const char *pattern)
{
    size_t  i;

    for (i = 0; i < sizeof(ngx_cdp_agent_rows) / sizeof(ngx_cdp_agent_rows[0]);
         i++)
    {
        if (strcmp(ngx_cdp_agent_rows[i].pattern, pattern) == 0) {
            return &ngx_cdp_agent_rows[i];
        }
    }

    return NULL;
}


/* the entries of one list: well-formed, unique, each with its UA */

static void
ngx_cdp_check_list(const char **list, int class, unsigned *count)
{
    int                      rc;
    char                     up[1024];
    size_t                   i, j, len;
    const char              *p, *want, **q;
    const ngx_cdp_tagent_t  *row;

    for (i = 0; list[i]; i++) {
        (*count)++;
        len = strlen(list[i]);

        /* lowercase printable ASCII, at least three bytes, no duplicate */
        CHECK(len >= 3 && len <= 64);
        CHECK(ngx_cdp_lowercase(list[i]));

        for (q = ngx_cdp_agent_bot_patterns; *q; q++) {
            CHECK(*q == list[i] || strcmp(*q, list[i]) != 0);
        }

        for (q = ngx_cdp_agent_mail_patterns; *q; q++) {
            CHECK(*q == list[i] || strcmp(*q, list[i]) != 0);
        }

        row = ngx_cdp_row(list[i]);

        if (row == NULL) {
            printf("FAIL no User-Agent for the pattern \"%s\"\n", list[i]);
            CHECK(row != NULL);
            continue;
        }

        /* its own User-Agent, which contains it */

        want = row->reported ? row->reported : list[i];

        CHECK(ngx_cdp_contains(row->ua, list[i]));
        rc = ngx_cdp_classify(row->ua, &p);
        CHECK(rc == class);
        CHECK(p != NULL && strcmp(p, want) == 0);

        if (rc != class || p == NULL || strcmp(p, want) != 0) {
            printf("  \"%s\": %d \"%s\"\n", list[i], rc, p ? p : "(null)");
        }

        /* in upper case */

        len = strlen(row->ua);
        CHECK(len < sizeof(up));

        for (j = 0; j <= len && j < sizeof(up); j++) {
            up[j] = (row->ua[j] >= 'a' && row->ua[j] <= 'z')
                    ? (char) (row->ua[j] & ~0x20) : row->ua[j];
        }

        CHECK(ngx_cdp_classify(up, &p) == class);
        CHECK(p != NULL && strcmp(p, want) == 0);

        /* alone, and after a real browser's User-Agent: itself */

        CHECK(ngx_cdp_classify(list[i], &p) == class);
        CHECK(p == list[i]);

        snprintf(up, sizeof(up), "%s %s", CHROME, list[i]);
        CHECK(ngx_cdp_classify(up, &p) == class);
        CHECK(p == list[i]);
    }
}


static void
test_lists(void)
{
    size_t    i, n;
    unsigned  nbot, nmail;

    nbot = 0;
    nmail = 0;

    ngx_cdp_check_list(ngx_cdp_agent_bot_patterns, NGX_CDP_AGENT_BOT, &nbot);
    ngx_cdp_check_list(ngx_cdp_agent_mail_patterns, NGX_CDP_AGENT_MAIL_PROXY,
                       &nmail);

    /* no row is left over from a pattern that was taken out */

    n = sizeof(ngx_cdp_agent_rows) / sizeof(ngx_cdp_agent_rows[0]);
    CHECK(n == nbot + nmail);

    for (i = 0; i < n; i++) {
        CHECK(ngx_cdp_contains(ngx_cdp_agent_rows[i].ua,
                               ngx_cdp_agent_rows[i].pattern));
    }

    /* the browser words: lowercase, each with a bot pattern in it */

    for (i = 0; ngx_cdp_agent_browser_words[i]; i++) {
        CHECK(ngx_cdp_lowercase(ngx_cdp_agent_browser_words[i]));
        CHECK(ngx_cdp_classify(ngx_cdp_agent_browser_words[i], NULL)
              == NGX_CDP_AGENT_BROWSER);
        CHECK(ngx_cdp_word_has_pattern(ngx_cdp_agent_browser_words[i]));
    }

    printf("patterns: %u bots, %u mail proxies\n", nbot, nmail);
}


static void
test_browsers(void)
{
    int          rc;
    size_t       i;
    const char  *p;

    for (i = 0; ngx_cdp_agent_browsers[i]; i++) {
        p = "unset";
        rc = ngx_cdp_classify(ngx_cdp_agent_browsers[i], &p);
        CHECK(rc == NGX_CDP_AGENT_BROWSER && p == NULL);

        if (rc != NGX_CDP_AGENT_BROWSER) {
            printf("  browser %zu taken for \"%s\": %s\n", i, p,
                   ngx_cdp_agent_browsers[i]);
        }
    }

    CHECK(i >= 40);
    printf("browsers: %zu\n", i);
}


static void
test_bots(void)
{
    int          rc;
    size_t       i;
    const char  *p;

    for (i = 0; ngx_cdp_agent_bots[i]; i++) {
        rc = ngx_cdp_classify(ngx_cdp_agent_bots[i], &p);
        CHECK(rc == NGX_CDP_AGENT_BOT);
        CHECK(p != NULL && ngx_cdp_contains(ngx_cdp_agent_bots[i], p));

        if (rc != NGX_CDP_AGENT_BOT) {
            printf("  bot %zu not found: %s\n", i, ngx_cdp_agent_bots[i]);
        }
    }

    CHECK(i >= 40);
    printf("bots: %zu\n", i);

    /* the pattern that begins first, then the longest there */

    CHECK(ngx_cdp_classify(GOOGLEBOT, &p) == NGX_CDP_AGENT_BOT);
    CHECK(p != NULL && strcmp(p, "googlebot") == 0);
    CHECK(ngx_cdp_classify("AdsBot-Google-Mobile", &p) == NGX_CDP_AGENT_BOT);
    CHECK(p != NULL && strcmp(p, "adsbot-google") == 0);
    CHECK(ngx_cdp_classify("SomeCrawler/1.0", &p) == NGX_CDP_AGENT_BOT);
    CHECK(p != NULL && strcmp(p, "crawler") == 0);
    CHECK(ngx_cdp_classify("Crawl", &p) == NGX_CDP_AGENT_BOT);
    CHECK(p != NULL && strcmp(p, "crawl") == 0);
    CHECK(ngx_cdp_classify("x curl/8 bot", &p) == NGX_CDP_AGENT_BOT);
    CHECK(p != NULL && strcmp(p, "curl/") == 0);

    /* the pattern may be the whole header, its start or its end */

    CHECK(ngx_cdp_classify("bot", &p) == NGX_CDP_AGENT_BOT);
    CHECK(ngx_cdp_classify("bot ", &p) == NGX_CDP_AGENT_BOT);
    CHECK(ngx_cdp_classify(" bot", &p) == NGX_CDP_AGENT_BOT);
    CHECK(ngx_cdp_classify("bo", &p) == NGX_CDP_AGENT_BROWSER);
    CHECK(ngx_cdp_classify("b", &p) == NGX_CDP_AGENT_BROWSER);
    CHECK(ngx_cdp_classify("got", &p) == NGX_CDP_AGENT_BROWSER);
    CHECK(ngx_cdp_classify("got(", &p) == NGX_CDP_AGENT_BROWSER);
}


/* CUBOT: "bot" inside the brand does not count, elsewhere it does */

static void
test_browser_words(void)
{
    const char  *p;

    CHECK(ngx_cdp_classify("cubot", &p) == NGX_CDP_AGENT_BROWSER);
    CHECK(p == NULL);
    CHECK(ngx_cdp_classify("CuBoT", &p) == NGX_CDP_AGENT_BROWSER);
    CHECK(ngx_cdp_classify("CUBOTCUBOT", &p) == NGX_CDP_AGENT_BROWSER);
    CHECK(ngx_cdp_classify("xcubotx", &p) == NGX_CDP_AGENT_BROWSER);

    /* the others */
    CHECK(ngx_cdp_classify("FBCR/BTC Botswana;", &p) == NGX_CDP_AGENT_BROWSER);
    CHECK(ngx_cdp_classify("Botswana bot", &p) == NGX_CDP_AGENT_BOT);
    CHECK(ngx_cdp_classify("U.S. Robotics", &p) == NGX_CDP_AGENT_BROWSER);
    CHECK(ngx_cdp_classify("Robotic", &p) == NGX_CDP_AGENT_BOT);
    CHECK(ngx_cdp_classify("HTC Ruby", &p) == NGX_CDP_AGENT_BROWSER);
    CHECK(ngx_cdp_classify("HTC_Ruby", &p) == NGX_CDP_AGENT_BOT);
    CHECK(ngx_cdp_classify("Ruby", &p) == NGX_CDP_AGENT_BOT);
    CHECK(ngx_cdp_classify("FirePHP/0.4", &p) == NGX_CDP_AGENT_BROWSER);
    CHECK(ngx_cdp_classify("PHP/8.3", &p) == NGX_CDP_AGENT_BOT);
    CHECK(ngx_cdp_classify("HuaweiJava/1.0", &p) == NGX_CDP_AGENT_BROWSER);
    CHECK(ngx_cdp_classify("Huawei Java/1.8.0", &p) == NGX_CDP_AGENT_BOT);

    /* a word cut short is no browser word */
    CHECK(ngx_cdp_classify("ubot", &p) == NGX_CDP_AGENT_BOT);
    CHECK(p != NULL && strcmp(p, "bot") == 0);
    CHECK(ngx_cdp_classify("c bot", &p) == NGX_CDP_AGENT_BOT);
    CHECK(ngx_cdp_classify("cu-bot", &p) == NGX_CDP_AGENT_BOT);

    /* another "bot" after the brand, or another pattern, still counts */
    CHECK(ngx_cdp_classify("CUBOT_X30 SomeBot/1.0", &p) == NGX_CDP_AGENT_BOT);
    CHECK(p != NULL && strcmp(p, "bot") == 0);
    CHECK(ngx_cdp_classify("cubotbot", &p) == NGX_CDP_AGENT_BOT);
    CHECK(ngx_cdp_classify("botcubot", &p) == NGX_CDP_AGENT_BOT);
    CHECK(ngx_cdp_classify("CUBOT P40 curl/8.0", &p) == NGX_CDP_AGENT_BOT);
    CHECK(p != NULL && strcmp(p, "curl/") == 0);
    CHECK(ngx_cdp_classify("Mozilla/5.0 (Linux; Android 10; CUBOT P40) "
                           "Crawler", &p)
          == NGX_CDP_AGENT_BOT);
}


static void
test_mail(void)
{
    const char  *p;

    CHECK(ngx_cdp_classify("Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko "
                           "Firefox/11.0 (via ggpht.com GoogleImageProxy)",
                           &p)
          == NGX_CDP_AGENT_MAIL_PROXY);
    CHECK(p != NULL && strcmp(p, "googleimageproxy") == 0);

    CHECK(ngx_cdp_classify("YahooMailProxy; https://help.yahoo.com/kb/"
                           "yahoo-mail-proxy-SLN28749.html", &p)
          == NGX_CDP_AGENT_MAIL_PROXY);
    CHECK(p != NULL && strcmp(p, "yahoomailproxy") == 0);

    /* a mail proxy wins over a bot pattern, before it or after it */
    CHECK(ngx_cdp_classify("Googlebot GoogleImageProxy", &p)
          == NGX_CDP_AGENT_MAIL_PROXY);
    CHECK(p != NULL && strcmp(p, "googleimageproxy") == 0);
    CHECK(ngx_cdp_classify("YAHOOMAILPROXY curl/8.0 bot", &p)
          == NGX_CDP_AGENT_MAIL_PROXY);
    CHECK(ngx_cdp_classify("curl/8.0 bot yahoomailproxy", &p)
          == NGX_CDP_AGENT_MAIL_PROXY);

    /* part of a name is not the name */
    CHECK(ngx_cdp_classify("GoogleImageProx", &p) == NGX_CDP_AGENT_BROWSER);
    CHECK(ngx_cdp_classify("Yahoo Mail Proxy", &p) == NGX_CDP_AGENT_BROWSER);
}


static void
test_empty(void)
{
    u_char       b;
    const char  *p;

    p = NULL;
    CHECK(ngx_cdp_agent_classify(NULL, 0, &p) == NGX_CDP_AGENT_BOT);
    CHECK(p != NULL && p[0] == '\0');

    p = NULL;
    b = 'x';
    CHECK(ngx_cdp_agent_classify(&b, 0, &p) == NGX_CDP_AGENT_BOT);
    CHECK(p != NULL && p[0] == '\0');

    /* pattern may be NULL, in every class */
    CHECK(ngx_cdp_agent_classify(NULL, 0, NULL) == NGX_CDP_AGENT_BOT);
    CHECK(ngx_cdp_classify("curl/8.0", NULL) == NGX_CDP_AGENT_BOT);
    CHECK(ngx_cdp_classify(CHROME, NULL) == NGX_CDP_AGENT_BROWSER);
    CHECK(ngx_cdp_classify("GoogleImageProxy", NULL)
          == NGX_CDP_AGENT_MAIL_PROXY);

    /* whitespace, a byte, a dash are no bots by pattern */
    CHECK(ngx_cdp_classify(" ", &p) == NGX_CDP_AGENT_BROWSER);
    CHECK(ngx_cdp_classify("-", &p) == NGX_CDP_AGENT_BROWSER);
    CHECK(ngx_cdp_classify("Mozilla/5.0", &p) == NGX_CDP_AGENT_BROWSER);
}


/* ASCII case only; bytes past 0x7f are never folded into letters */

static void
test_case(void)
{
    const char  *p;

    CHECK(ngx_cdp_classify("GOOGLEBOT", &p) == NGX_CDP_AGENT_BOT);
    CHECK(p != NULL && strcmp(p, "googlebot") == 0);
    CHECK(ngx_cdp_classify("gOoGlEbOt", &p) == NGX_CDP_AGENT_BOT);
    CHECK(ngx_cdp_classify("CURL/8.0", &p) == NGX_CDP_AGENT_BOT);
    CHECK(ngx_cdp_classify("GoogleIMAGEProxy", &p)
          == NGX_CDP_AGENT_MAIL_PROXY);

    /* 'B' | 0x80, 'O' | 0x80, 'T' | 0x80; and fullwidth letters */
    CHECK(ngx_cdp_classify("\xc2\xcf\xd4", &p) == NGX_CDP_AGENT_BROWSER);
    CHECK(ngx_cdp_classify("b\xcft", &p) == NGX_CDP_AGENT_BROWSER);
    CHECK(ngx_cdp_classify("\xef\xbc\xa2\xef\xbc\xaf\xef\xbc\xb4", &p)
          == NGX_CDP_AGENT_BROWSER);

    /* other bytes around a pattern, NUL included */
    CHECK(ngx_cdp_agent_classify((const u_char *) "\0bot\0", 5, &p)
          == NGX_CDP_AGENT_BOT);
    CHECK(ngx_cdp_agent_classify((const u_char *) "Mozilla\0curl/8", 14, &p)
          == NGX_CDP_AGENT_BOT);
    CHECK(ngx_cdp_agent_classify((const u_char *) "bo\0t", 4, &p)
          == NGX_CDP_AGENT_BROWSER);
    CHECK(ngx_cdp_classify("caf\xc3\xa9 \xe2\x82\xac Bot", &p)
          == NGX_CDP_AGENT_BOT);
}


/*
 * Past NGX_CDP_AGENT_SCAN bytes nothing is looked at: a pattern that
 * ends at byte 512 counts, one that begins at 512 or runs past it does
 * not.
 */

static void
test_long(void)
{
    char         ua[2048];
    size_t       pad, len;
    const char  *p;

    CHECK(NGX_CDP_AGENT_SCAN == 512);

    /* a real browser's User-Agent padded with in-app tokens */
    memset(ua, 0, sizeof(ua));
    strcpy(ua, CHROME);
    len = strlen(ua);

    while (len < 1500) {
        memcpy(ua + len, " FBAV/1.0", 9);
        len += 9;
    }

    ua[len] = '\0';
    CHECK(ngx_cdp_classify(ua, &p) == NGX_CDP_AGENT_BROWSER);

    /* "googlebot" ending at 512, at 513, beginning at 512 and at 600 */

    for (pad = 0; pad < 4; pad++) {
        memset(ua, 'x', sizeof(ua));
        len = (pad == 0) ? 503 : (pad == 1) ? 504 : (pad == 2) ? 512 : 600;
        memcpy(ua, "Mozilla/5.0 ", 12);
        memcpy(ua + len, "Googlebot/2.1", 13);
        ua[len + 13 + 100] = '\0';

        CHECK(ngx_cdp_classify(ua, &p)
              == (pad == 0 ? NGX_CDP_AGENT_BOT : NGX_CDP_AGENT_BROWSER));
    }

    /* the same header cut at 512 by the caller gives the same class */
    memset(ua, 'x', sizeof(ua));
    memcpy(ua + 503, "googlebot", 9);
    CHECK(ngx_cdp_agent_classify((const u_char *) ua, 512, &p)
          == NGX_CDP_AGENT_BOT);
    CHECK(ngx_cdp_agent_classify((const u_char *) ua, 511, &p)
          == NGX_CDP_AGENT_BROWSER);
    CHECK(ngx_cdp_agent_classify((const u_char *) ua, 2048, &p)
          == NGX_CDP_AGENT_BOT);

    /* a mail proxy past 512 is not seen either; a bot before it is */
    memset(ua, 'x', sizeof(ua));
    memcpy(ua + 10, "curl/", 5);
    memcpy(ua + 700, "GoogleImageProxy", 16);
    ua[800] = '\0';
    CHECK(ngx_cdp_classify(ua, &p) == NGX_CDP_AGENT_BOT);
    CHECK(p != NULL && strcmp(p, "curl/") == 0);

    /* CUBOT cut by byte 512: its "bot" is past it, nothing is found */
    memset(ua, 'x', sizeof(ua));
    memcpy(ua + 509, "CUBOT", 5);
    ua[600] = '\0';
    CHECK(ngx_cdp_classify(ua, &p) == NGX_CDP_AGENT_BROWSER);
    memcpy(ua + 507, "CUBOT", 5);
    CHECK(ngx_cdp_classify(ua, &p) == NGX_CDP_AGENT_BROWSER);

    /* a word that runs past byte 512 is no word: "ruby" counts */
    memset(ua, 'x', sizeof(ua));
    memcpy(ua + 505, "RubyUIX", 7);
    ua[600] = '\0';
    CHECK(ngx_cdp_classify(ua, &p) == NGX_CDP_AGENT_BROWSER);
    memcpy(ua + 506, "RubyUIX", 7);
    CHECK(ngx_cdp_classify(ua, &p) == NGX_CDP_AGENT_BOT);
    CHECK(p != NULL && strcmp(p, "ruby") == 0);
}


static int
ngx_cdp_prefetch(const char *sec, const char *purpose, const char *x_moz)
{
    int      rc;
    size_t   sl, pl, xl;
    u_char  *s, *p, *x;

    sl = sec ? strlen(sec) : 0;
    pl = purpose ? strlen(purpose) : 0;
    xl = x_moz ? strlen(x_moz) : 0;

    s = sec ? ngx_cdp_dup(sec, sl) : NULL;
    p = purpose ? ngx_cdp_dup(purpose, pl) : NULL;
    x = x_moz ? ngx_cdp_dup(x_moz, xl) : NULL;

    rc = ngx_cdp_agent_prefetch(s, sl, p, pl, x, xl);

    CHECK(s == NULL || ngx_cdp_canary_ok(s, sl));
    CHECK(p == NULL || ngx_cdp_canary_ok(p, pl));
    CHECK(x == NULL || ngx_cdp_canary_ok(x, xl));

    free(s);
    free(p);
    free(x);

    return rc;
}


static void
test_prefetch(void)
{
    size_t       i;
    const char  *yes[] = {
        "prefetch", "prerender", "prefetch;prerender", "PREFETCH",
        "Prefetch;Prerender", "prefetch;anonymous-client-ip",
        " prefetch ", "\tprefetch", "a, prefetch", "prefetch,b",
        "x;prerender", "prefetch=?1", "\"prefetch\"", "(prefetch)",
        "foo prerender bar", "noprefetch, prefetch", "\xffprefetch",
        NULL
    };
    const char  *no[] = {
        "", " ", ";", "noprefetch", "prefetchx", "x-prefetch", "prefetch-x",
        "pre-fetch", "prefetc", "refetch", "prerenderer", "preview",
        "prefetch.", "prefetch/1", "_prefetch", "prefetch:", "pre fetch",
        "preconnect", "prefetch~", NULL
    };

    /* no header at all */
    CHECK(ngx_cdp_agent_prefetch(NULL, 0, NULL, 0, NULL, 0) == 0);

    for (i = 0; yes[i]; i++) {
        CHECK(ngx_cdp_prefetch(yes[i], NULL, NULL) == 1);
        CHECK(ngx_cdp_prefetch(NULL, yes[i], NULL) == 1);

        /* as X-Moz, only "prefetch" in any case, spaces around it */
        CHECK(ngx_cdp_prefetch("", "", yes[i])
              == (i == 0 || i == 3 || i == 6 || i == 7));
    }

    for (i = 0; no[i]; i++) {
        CHECK(ngx_cdp_prefetch(no[i], NULL, NULL) == 0);
        CHECK(ngx_cdp_prefetch(NULL, no[i], NULL) == 0);
        CHECK(ngx_cdp_prefetch(NULL, NULL, no[i]) == 0);
        CHECK(ngx_cdp_prefetch(no[i], no[i], no[i]) == 0);
    }

    /* X-Moz: the whole value, case aside, spaces around it aside */
    CHECK(ngx_cdp_prefetch(NULL, NULL, "prefetch") == 1);
    CHECK(ngx_cdp_prefetch(NULL, NULL, "Prefetch") == 1);
    CHECK(ngx_cdp_prefetch(NULL, NULL, " prefetch\t") == 1);
    CHECK(ngx_cdp_prefetch(NULL, NULL, "prerender") == 0);
    CHECK(ngx_cdp_prefetch(NULL, NULL, "prefetch;prerender") == 0);
    CHECK(ngx_cdp_prefetch(NULL, NULL, "prefetch prefetch") == 0);
    CHECK(ngx_cdp_prefetch(NULL, NULL, "prefetchs") == 0);
    CHECK(ngx_cdp_prefetch(NULL, NULL, "\t \t") == 0);

    /* any one of the three is enough */
    CHECK(ngx_cdp_prefetch("none", "preview", "prefetch") == 1);
    CHECK(ngx_cdp_prefetch("none", "prefetch", "none") == 1);
    CHECK(ngx_cdp_prefetch("prefetch;prerender", "x", "x") == 1);
    CHECK(ngx_cdp_prefetch("", "", "") == 0);
    CHECK(ngx_cdp_prefetch("noprefetch", "noprefetch", "noprefetch") == 0);

    /* the lengths bound the values: what follows them is not read */
    CHECK(ngx_cdp_agent_prefetch((const u_char *) "prefetchx", 8, NULL, 0,
                                 NULL, 0)
          == 1);
    CHECK(ngx_cdp_agent_prefetch((const u_char *) "prefetch", 7, NULL, 0,
                                 NULL, 0)
          == 0);
    CHECK(ngx_cdp_agent_prefetch(NULL, 0, (const u_char *) "xprerender", 1,
                                 (const u_char *) "prefetch", 7)
          == 0);
    CHECK(ngx_cdp_agent_prefetch(NULL, 0, NULL, 0,
                                 (const u_char *) "prefetch ", 8)
          == 1);
}


/*
 * Not a test: the cost of a call, the best of BENCH_ROUNDS rounds of
 * BENCH_CALLS calls, as other processes share the machine.
 */

static double
ngx_cdp_bench_one(const char *ua)
{
    int              sink;
    double           ns, best;
    size_t           len, i, round;
    const char      *p;
    struct timespec  t0, t1;

    len = strlen(ua);
    sink = 0;
    best = 0;

    for (round = 0; round < BENCH_ROUNDS; round++) {
        clock_gettime(CLOCK_MONOTONIC, &t0);

        for (i = 0; i < BENCH_CALLS; i++) {
            sink += ngx_cdp_agent_classify((const u_char *) ua, len, &p);
        }

        clock_gettime(CLOCK_MONOTONIC, &t1);

        ns = ((double) (t1.tv_sec - t0.tv_sec) * 1e9
              + (double) (t1.tv_nsec - t0.tv_nsec)) / BENCH_CALLS;

        if (round == 0 || ns < best) {
            best = ns;
        }
    }

    /* keeps the calls; a class is 0 to 2 */
    if (sink < 0) {
        printf("%d\n", sink);
    }

    return best;
}


static void
test_bench(void)
{
    char  ua[NGX_CDP_AGENT_SCAN + 1];

    /* the longest User-Agent looked at, without a pattern */
    memset(ua, 'a', NGX_CDP_AGENT_SCAN);
    ua[NGX_CDP_AGENT_SCAN] = '\0';

    printf("bench: Chrome %.0f ns/call, Googlebot %.0f ns/call, "
           "512 bytes %.0f ns/call\n",
           ngx_cdp_bench_one(CHROME), ngx_cdp_bench_one(GOOGLEBOT),
           ngx_cdp_bench_one(ua));
}


int
main(void)
{
    test_lists();
    test_browsers();
    test_bots();
    test_browser_words();
    test_mail();
    test_empty();
    test_case();
    test_long();
    test_prefetch();
    test_bench();

    return ngx_cdp_summary();
}
