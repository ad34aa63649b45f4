#!/bin/sh
# Writes a few starting inputs for each fuzz target under $1 (not in the
# source tree: corpora stay out of git).

set -e

dir=$1

seed() {
    mkdir -p "$dir/$1"
    printf '%b' "$3" > "$dir/$1/$2"
}

seed fuzz_hit_parse empty ''
seed fuzz_hit_parse page 'url=https%3A%2F%2Fshop.example%2Fp%3Futm_source%3Dx&title=Pricing&_=17'
seed fuzz_hit_parse track 'e=signup&p.plan=pro&p.seats=3&ref=https://s.example/?q=a+b'
seed fuzz_hit_parse dup 'e=a&e=b&p.x=1&p.y=2&p.x=3'
seed fuzz_hit_parse utf8 'title=caf%C3%A9+%E2%82%AC&p.t=\xf0\x9d\x84\x9e'
seed fuzz_hit_parse bad 'e=%zz&title=%ff&p.a%=1'

seed fuzz_url_parse full 'https://user@shop.example:8443/a/b?utm_source=news&utm_medium=email&utm_campaign=x+y&utm_term=%C3%A9&utm_content=c#frag'
seed fuzz_url_parse rel '/p?utm%5Fsource=a&utm_source=b'
seed fuzz_url_parse proto '//cdn.example?x#y?z'
seed fuzz_url_parse bad 'https://h/?utm_source=%zz&utm_term=%ff'

seed fuzz_cookie_decode good '00112233445566778899aabbccddeeff.FrW26Keh5q_iJ6_O'
seed fuzz_cookie_decode upper '00112233445566778899AABBCCDDEEFF.FrW26Keh5q_iJ6_O'
seed fuzz_cookie_decode short '0011.AAAA'

seed fuzz_json_str ascii 'plain "quoted" \\\\ back\\nslash\\t\\001\\037'
seed fuzz_json_str utf8 'caf\xc3\xa9 \xe2\x82\xac \xf0\x9d\x84\x9e \xe2\x80\xa8\xe2\x80\xa9'
seed fuzz_json_str bad '\xff\xc0\x80\xed\xa0\x80\xe2\x82\xf4\x90\x80\x80'

# fuzz_segment: the first byte picks the endpoint (byte % 7): p track,
# q identify, r page, s screen, t group, u alias, v batch.  Octal escapes:
# dash's printf %b has no \x.
seed fuzz_segment track 'p{"userId":"u1","event":"Signed Up","properties":{"plan":"pro","price":19.99},"timestamp":"2026-11-23T07:30:00.000Z","messageId":"m-1","writeKey":"k"}'
seed fuzz_segment identify 'q{"userId":42,"traits":{"email":"Ann@Example.com","phone":"+44 20 7946 0958","name":"Ann"},"context":{"traits":{"email":"c@d.e"},"ip":"203.0.113.9","library":{"name":"x","version":"1"}}}'
seed fuzz_segment page 'r{"anonymousId":"a1","name":"Pricing","properties":{"url":"https://x.example/p"},"originalTimestamp":"2026-11-23T08:30:00.5+01:00"}'
seed fuzz_segment screen 's{"userId":"u1","name":"Home","context":null}'
seed fuzz_segment group 't{"userId":"u1","groupId":7,"traits":{"name":"Acme","email":"co@acme.example"}}'
seed fuzz_segment alias 'u{"userId":"u1","previousId":"a1"}'
seed fuzz_segment batch 'v{"batch":[{"timestamp":"2026-11-23T07:14:58.379Z","integrations":{},"type":"identify","userId":"u1","traits":{"email":"Ann@Example.com","phone":"+44 20 7946 0958","name":"Ann"},"context":{"library":{"name":"@segment/analytics-node","version":"2.2.1"}},"messageId":"node-next-1795418098379-c3d895b0-2e94-48d9-a323-11b1816ce255","_metadata":{"nodeVersion":"v20.20.2","jsRuntime":"node"}},{"timestamp":"2026-11-23T07:14:58.379Z","integrations":{},"event":"Signed Up","type":"track","properties":{"plan":"pro"},"userId":"u1","messageId":"m2"},{"type":"alias","userId":"u1","previousId":"a1"},{"type":"group","anonymousId":"a","groupId":"g"},{"type":"page","userId":"u"},{"type":"screen","userId":"u"}],"writeKey":"KEY123","sentAt":"2026-11-23T07:14:58.384Z"}'
seed fuzz_segment merge 'v{"context":{"locale":"en","traits":{"email":"b@c.d","phone":5}},"integrations":{"All":false},"sentAt":"2026-11-23T07:30:00Z","batch":[{"type":"identify","userId":"u","context":{"locale":"fr"}},{"type":"track","anonymousId":"a","event":"e","integrations":{"All":true}}]}'
seed fuzz_segment bad 'v{"batch":[{"type":"track","userId":"u"},{"type":"nope"},42]}'
seed fuzz_segment utf8 'p{"userId":"caf\0303\0251 \0342\0202\0254","event":"\0360\0235\0204\0236","properties":{"k":"\0303"}}'
seed fuzz_segment nul 'p{"userId":"u","event":"e"}\0000'

# fuzz_format: the first line is sentAt (empty: none), each further line
# one stored event
seed fuzz_format pixel '2026-11-23T07:30:00.000Z\n{"type":"page","name":"Pricing","messageId":"px-8f3a-42","anonymousId":"5f0c9d1e","timestamp":"2026-11-23T04:40:51.123Z","receivedAt":"2026-11-23T04:40:51.123Z","properties":{"url":"https://shop.example/pricing?utm_source=news","path":"/pricing","search":"?utm_source=news","referrer":"https://ref.example/","title":"Pricing","plan":"pro"},"context":{"page":{"url":"https://shop.example/pricing","title":"Pricing"},"campaign":{"source":"news"},"consent":{"analytics":true,"marketing":false},"userAgent":"Mozilla/5.0","ip":"203.0.113.0","library":{"name":"ngx_cdp","version":"0.1.0"}}}\n{"type":"track","event":"Order Completed","anonymousId":"5f0c9d1e","userId":"u-1","properties":{"revenue":42.5,"currency":"EUR","ok":true,"n":null,"o":{},"first_visit":1,"Google X":"g","email":"a@b.c"},"timestamp":"2026-11-23T04:41:00.5+01:00"}\n{"type":"identify","userId":"u-2002","anonymousId":"5f0c9d1e","traits":{"plan":"team","seats":3,"vip":false,"name":"Ann","first_visit_time":1,"Customer Tier Of The Account":"gold"},"timestamp":"2026-11-23T04:40:51.123456789Z"}'
seed fuzz_format api '2026-11-23T07:30:00Z\n{"type":"track","userId":42,"event":"123 go!","receivedAt":"2026-11-23T07:30:00.123Z"}\n{"type":"group","userId":42,"groupId":7,"traits":{"a":1}}\n{"type":"alias","userId":"u","previousId":"a"}\n{"type":"screen","userId":"42","name":"Home","properties":{"tab":"\\u00e9\\n"},"originalTimestamp":"2016-12-31t23:59:60z"}'
seed fuzz_format bad '\n\n[1]\n{"type":"page"\n{"type":"page","anonymousId":"a","type":"track"}\n{"type":"page","anonymousId":"\0377"}\n {"type":"page","anonymousId":"a"} \n{"type":"page","anonymousId":"a"}\0000\n{"type":"page","userId":1.5,"anonymousId":true}\n{"type":"delete","anonymousId":"a"}\n"x"'
seed fuzz_format sentat 'a"b\\\\c\001\037\0303\0251\n{}\n{"type":"alias","userId":"u"}'
seed fuzz_format names 'T\n{"type":"track","anonymousId":"a","event":"firebase_x"}\n{"type":"track","anonymousId":"a","event":"__Session  Start__"}\n{"type":"track","anonymousId":"a","event":"\0303\0234ber cool"}\n{"type":"track","anonymousId":"a","event":"Abcdefghij Abcdefghij Abcdefghij Abcdefghij Abcdefghij"}\n{"type":"track","anonymousId":"a","event":"1111111111111111111111111111111111111111111"}\n{"type":"track","anonymousId":"a","event":""}\n{"type":"track","anonymousId":"a","event":7}'
many='T'
i=0
while [ $i -lt 28 ]; do
    many="$many\\n{\"type\":\"track\",\"event\":\"e$i\",\"anonymousId\":\"a\",\"timestamp\":\"2026-11-23T04:40:$((i + 10)).0Z\",\"properties\":{\"p$i\":$i}}"
    i=$((i + 1))
done
seed fuzz_format many "$many"
a=''
i=0
while [ $i -lt 105 ]; do
    a="${a}\0303\0251"
    i=$((i + 1))
done
seed fuzz_format long "\\n{\"type\":\"page\",\"userId\":\"u\",\"properties\":{\"url\":\"https://x/$a$a$a$a$a$a$a$a$a$a\",\"s\":\"$a\",\"k\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\0342\0202\0254\"}}\\n{\"type\":\"identify\",\"userId\":\"u\",\"traits\":{\"Customer Tier Of The Whole Account\":\"$a\"}}"

# fuzz_rule: the segments of the brief, and one of everything
seed fuzz_rule loyal 'count("Order Completed") >= 3'
seed fuzz_rule big 'sum("Order Completed", revenue) >= 500'
seed fuzz_rule dormant 'seen_before(30d) and events >= 1'
seed fuzz_rule recent 'seen_within(7d)'
seed fuzz_rule plan_geo 'trait.plan == "pro" and country in (DE, AT)'
seed fuzz_rule abandoned 'last("Checkout Started") before(2d) and last("Order Completed") < last("Checkout Started")'
seed fuzz_rule consent 'consent has marketing'
seed fuzz_rule all 'not (consent has analytics or consent has personalization) and (first_seen within(36h) or page_views in (1, 2, -3.5)) and region != "BY" and city in (Wien, "S\0303\0243o \\"P\\\\") and sum("a", "net revenue") > -1.5 and first("a") < last("b") and trait.seats >= trait.max and trait.x in (gold, 3) or not not count("x") == 0'
seed fuzz_rule bad 'trate.plan == 1 or seen_before(3w) or events before(2d) or (count("x") or country < "x"'

# fuzz_frame: the first byte is not a frame: nargs 1 + (byte & 0x7f) % 6,
# and with 0x80 the harness writes each head's CRC (zero here).  spool:
# a header and two batches with their CRCs; torn: cut in a batch.
seed fuzz_frame spool '\0002CDPF9\0000\0000\0000+w>\0032H\0001\0000\0000\0003\0000\0000\0000\0013\0000\0000\0000edge-1:4242\0012\0000\0000\0000cdp:events\0012\0000\0000\0000cdp:batch:\0002\0000\0000\0000v1CDPF\0216\0000\0000\0000\0274\0250\0251\0340B\0000\0000\0000\0002\0000\0000\0000\0001\0000\0000\0000\0000\0000\0000\0000\0026\0000\0000\0000$5\0015\0012evt:1\0015\0012$5\0015\0012evt:2\0015\0012$16\0015\0012{\0042type\0042:\0042track\0042}\0015\0012$0\0015\0012\0015\0012$13\0015\00121764000000000\0015\0012$15\0015\0012{\0042type\0042:\0042page\0042}\0015\0012$3\0015\0012u-1\0015\0012$13\0015\00121764000000001\0015\0012CDPF;\0000\0000\0000\0337\0342\0224\0364B\0000\0000\0000\0001\0000\0000\0000\0002\0000\0000\0000\0000\0000\0000\0000\0013\0000\0000\0000$5\0015\0012evt:3\0015\0012$4\0015\0012a\0015\0012b\0015\0012$2\0015\0012\0000\0377\0015\0012$4\0015\0012$0\0015\0012\0015\0012'
seed fuzz_frame fixed '\0202CDPF9\0000\0000\0000\0000\0000\0000\0000H\0001\0000\0000\0003\0000\0000\0000\0013\0000\0000\0000edge-1:4242\0012\0000\0000\0000cdp:events\0012\0000\0000\0000cdp:batch:\0002\0000\0000\0000v1CDPF\0216\0000\0000\0000\0000\0000\0000\0000B\0000\0000\0000\0002\0000\0000\0000\0001\0000\0000\0000\0000\0000\0000\0000\0026\0000\0000\0000$5\0015\0012evt:1\0015\0012$5\0015\0012evt:2\0015\0012$16\0015\0012{\0042type\0042:\0042track\0042}\0015\0012$0\0015\0012\0015\0012$13\0015\00121764000000000\0015\0012$15\0015\0012{\0042type\0042:\0042page\0042}\0015\0012$3\0015\0012u-1\0015\0012$13\0015\00121764000000001\0015\0012CDPF;\0000\0000\0000\0000\0000\0000\0000B\0000\0000\0000\0001\0000\0000\0000\0002\0000\0000\0000\0000\0000\0000\0000\0013\0000\0000\0000$5\0015\0012evt:3\0015\0012$4\0015\0012a\0015\0012b\0015\0012$2\0015\0012\0000\0377\0015\0012$4\0015\0012$0\0015\0012\0015\0012'
seed fuzz_frame torn '\0002CDPF9\0000\0000\0000+w>\0032H\0001\0000\0000\0003\0000\0000\0000\0013\0000\0000\0000edge-1:4242\0012\0000\0000\0000cdp:events\0012\0000\0000\0000cdp:batch:\0002\0000\0000\0000v1CDPF\0216\0000\0000\0000\0274\0250\0251\0340B\0000\0000\0000\0002\0000\0000\0000\0001\0000\0000\0000\0000\0000\0000\0000\0026\0000\0000\0000$5\0015\0012evt:'
seed fuzz_frame one '\0200CDPF\0033\0000\0000\0000\0000\0000\0000\0000H\0001\0000\0000\0001\0000\0000\0000\0001\0000\0000\0000w\0001\0000\0000\0000s\0001\0000\0000\0000o\0000\0000\0000\0000CDPF\0042\0000\0000\0000\0000\0000\0000\0000B\0000\0000\0000\0001\0000\0000\0000\0007\0000\0000\0000\0000\0000\0000\0000\0007\0000\0000\0000$1\0015\0012k\0015\0012$1\0015\0012x\0015\0012'
seed fuzz_frame bulks '\0000$3\0015\0012abc\0015\0012$0\0015\0012\0015\0012$10\0015\00120123456789\0015\0012$01\0015\0012'

# fuzz_agent: the whole input is a User-Agent; split at its first two
# newlines, it is also Sec-Purpose, Purpose and X-Moz
seed fuzz_agent chrome 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36'
seed fuzz_agent googlebot 'Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.201 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)'
seed fuzz_agent gmail 'Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)'
seed fuzz_agent yahoo 'YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html'
seed fuzz_agent cubot 'Mozilla/5.0 (Linux; Android 11; CUBOT_X30 Build/RP1A.200720.011) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.82 Mobile Safari/537.36 Cubotbot'
seed fuzz_agent fban 'Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/459.0.0.36.103;FBDV/iPhone14,5;FBCR/OrangeBotswana;FBLC/en_US]'
seed fuzz_agent tools 'curl/8.5.0 HTC Ruby Java/SEMC-Java/2.0 Java/17.0.2 FirePHP/0.4 PHP/8.3'
seed fuzz_agent empty ''
seed fuzz_agent prefetch 'prefetch;prerender\nPrefetch, x\n prefetch\t'
seed fuzz_agent noprefetch 'noprefetch;x-prefetch\nprerenderer\nprefetch;prerender'
seed fuzz_agent nul 'bo\0000t\nGooglebot\0000\n\0000'
pad=''
i=0
while [ $i -lt 50 ]; do
    pad="${pad}FBAV/1.0; "
    i=$((i + 1))
done
seed fuzz_agent long "Mozilla/5.0 $pad Googlebot/2.1 GoogleImageProxy"

# fuzz_redirect: a cluster node's redirections (Redis 7.0 writes them
# so), then keys for the slots; the first four bytes also pick a shard
# count and a shard for ngx_cdp_shard_tag()
seed fuzz_redirect moved 'MOVED 3999 127.0.0.1:6381'
seed fuzz_redirect ask 'ASK 16383 10.0.0.7:65535'
seed fuzz_redirect ipv6 'MOVED 12182 ::1:6380'
seed fuzz_redirect host 'MOVED 0 redis-0.redis.default.svc.cluster.local:6379'
seed fuzz_redirect unknown 'ASK 5 ?:6379'
seed fuzz_redirect empty 'MOVED 5 :6379'
seed fuzz_redirect bad 'MOVED 16384 h:0 '
seed fuzz_redirect asking 'ASKING 1 h:1'
seed fuzz_redirect tag '{user1000}.following'
seed fuzz_redirect tags 'foo{{bar}}zap{}{x}'
seed fuzz_redirect binary '\0000\0377{\0001\0002}\0177'
