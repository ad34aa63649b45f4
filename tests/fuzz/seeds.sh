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
