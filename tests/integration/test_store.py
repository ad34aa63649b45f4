"""store/cdp.lua called directly in a real Redis: the cases nginx cannot
produce on demand, such as two workers' batches reaching Redis out of
order.  Keys are sharded (store/README.md, "Shards"): the prefix is "s",
the shards the default 16."""

import json
import os
import subprocess

import pytest
import redis

import cdp_harness as h
import cdp_shard


LUA = os.path.join(h.MAIN, 'store', 'cdp.lua')
N = cdp_shard.SHARDS_DEFAULT


@pytest.fixture
def store(redis_server):
    c = redis_server.client()
    with open(LUA) as f:
        c.function_load(f.read().replace('@REV@', 'test'), replace=True)
    yield c
    c.close()


def tag(id_, n=N):
    """The hash tag of an id's shard, with its braces."""
    return '{%s}' % cdp_shard.shard_tag(cdp_shard.shard_of(id_, n), n)


def skey(kind, id_, n=N):
    """s:<kind>:{<tag>}:<id> (profile, ids, timeline, timeline_old), or
    for kind "idx:<type>" s:idx:{<tag of h>}:<type>:<h>."""
    if kind.startswith('idx:'):
        return 's:idx:%s:%s:%s' % (tag(id_, n), kind[4:], id_)
    return 's:%s:%s:%s' % (kind, tag(id_, n), id_)


def stream(id_, n=N):
    """The event stream of the id's shard."""
    return 's:events:' + tag(id_, n)


def streams(n=N):
    return ['s:events:{%s}' % cdp_shard.shard_tag(i, n) for i in range(n)]


def stream_ids(c, k):
    return [i for i, _ in c.xrange(k, '-', '+')]


def all_merges(c, n=N):
    """The merge logs of every shard: (shard's key, fields)."""
    return [(k, f) for i in range(n)
            for k in ['s:merges:{%s}' % cdp_shard.shard_tag(i, n)]
            for _id, f in c.xrange(k, '-', '+')]


def ingest(c, events, maxlen=1000000, timeline_max=None):
    """events: (aid, ts, kind[, geo]); returns cdp_ingest's reply.  KEYS[1]
    is the stream of the first event's shard: on a standalone Redis one
    call carries the events of every shard, each event's key deciding its
    stream."""
    keys = [stream(events[0][0])] + [skey('profile', e[0]) for e in events]
    args = [str(maxlen) if timeline_max is None
            else '%d 1 5 5 %d 86400' % (maxlen, timeline_max)]
    for e in events:
        aid, ts, kind = e[:3]
        geo = e[3] if len(e) > 3 else ''
        args += [str(ts), kind, geo,
                 json.dumps({'anonymousId': aid, 'ts': ts})]
    return c.fcall('cdp_ingest', len(keys), *keys, *args)


AID = 'a' * 32


def test_new_then_returning(store):
    assert ingest(store, [(AID, 1000, 'page:new')])[0] == 1
    assert ingest(store, [(AID, 2000, 'track'), (AID, 3000, 'page')])[0] == 2
    b = store.hgetall(skey('profile', AID))
    first = b.pop('first_event')
    assert b == {'events': '3', 'page_views': '2', 'first_seen': '1000',
                 'last_seen': '3000'}, b
    # the timeline: the first event on the record, the others newest first
    ids = stream_ids(store, stream(AID))
    assert first == ids[0]
    assert store.lrange(skey('timeline', AID), 0, -1) == ids[:0:-1]
    # all in the browser's shard's stream
    assert store.xlen(stream(AID)) == 3
    assert sum(store.xlen(k) for k in streams()) == 3


def test_returning_batch_arrives_before_the_minting_one(store):
    # worker B's batch (the second hit, with the cookie) lands first
    assert ingest(store, [(AID, 2000, 'page')])[0] == 1
    assert ingest(store, [(AID, 1000, 'page:new')])[0] == 1
    b = store.hgetall(skey('profile', AID))
    assert b['events'] == '2' and b['page_views'] == '2', b
    assert b['first_seen'] == '1000' and b['last_seen'] == '2000', b


def test_track_new_has_no_page_view(store):
    ingest(store, [(AID, 1000, 'track:new')])
    b = store.hgetall(skey('profile', AID))
    assert b['events'] == '1' and b['page_views'] == '0', b


def test_unknown_browser_without_new_is_created(store):
    # a record erased or expired meanwhile: counted from scratch
    ingest(store, [(AID, 5000, 'track')])
    b = store.hgetall(skey('profile', AID))
    first = b.pop('first_event')
    assert b == {'events': '1', 'page_views': '0', 'first_seen': '5000',
                 'last_seen': '5000'}, b
    # its only event is on the record, no timeline list yet
    assert stream_ids(store, stream(AID)) == [first]
    assert not store.exists(skey('timeline', AID))


def test_bad_argument_count_writes_nothing(store):
    with pytest.raises(redis.ResponseError, match='cdp_ingest'):
        store.fcall('cdp_ingest', 2, stream(AID), skey('profile', AID),
                    '100', '1000', 'page')
    assert store.exists(stream(AID), skey('profile', AID)) == 0


@pytest.mark.parametrize('first', [
    's:events',                 # the unsharded stream of old
    's:events:',
    's:events:{}',
    's:profile:%s:%s' % (tag(AID), AID)])
def test_keys1_not_a_shards_stream_writes_nothing(store, first):
    with pytest.raises(redis.ResponseError, match='cdp_ingest'):
        store.fcall('cdp_ingest', 2, first, skey('profile', AID),
                    '100', '1000', 'page:new', '',
                    json.dumps({'anonymousId': AID}))
    assert store.keys('*') == []


def once_ingest(c, once, bit, events):
    """cdp_ingest with a batch id: KEYS[2] the bitmap, ARGV[2] the bit."""
    keys = [stream(events[0][0]), once] + [skey('profile', e[0])
                                           for e in events]
    args = ['1000000', str(bit)]
    for aid, ts, kind in events:
        args += [str(ts), kind, '', json.dumps({'anonymousId': aid})]
    return c.fcall('cdp_ingest', len(keys), *keys, *args)


def test_a_batch_applied_twice_is_counted_once(store):
    """A batch sent again (its reply was lost, or replayed from nginx's
    spool) is skipped: nothing stored, nothing counted twice."""
    once = 's:once:%s:host:1:2:0' % tag(AID)
    batch = [(AID, 1000, 'page:new'), (AID, 2000, 'track')]
    assert once_ingest(store, once, 7, batch)[0] == 2
    assert once_ingest(store, once, 7, batch) == 'APPLIED'
    assert store.hget(skey('profile', AID), 'events') == '2'
    assert store.xlen(stream(AID)) == 2
    assert sum(store.xlen(k) for k in streams()) == 2
    # another batch id of the same worker is a new batch
    assert once_ingest(store, once, 8, [(AID, 3000, 'page')])[0] == 1
    assert store.hget(skey('profile', AID), 'events') == '3'
    # remembered a week
    assert 6 * 86400 < store.ttl(once) <= 7 * 86400
    assert store.getbit(once, 7) == 1 and store.getbit(once, 9) == 0


@pytest.mark.parametrize('once, bit', [
    ('s:once:%s:w:0' % tag(AID), '-1'),
    ('s:once:%s:w:0' % tag(AID), '1048576'),
    ('s:once:%s:w:0' % tag(AID), 'x'),
    (skey('profile', 'x'), '1')])
def test_a_malformed_batch_id_writes_nothing(store, once, bit):
    with pytest.raises(redis.ResponseError, match='malformed batch id'):
        store.fcall('cdp_ingest', 3, stream(AID), once, skey('profile', AID),
                    '100', bit, '1000', 'page', '', '{}')
    assert store.exists(stream(AID), skey('profile', AID), once) == 0


def ids_of_shard(shard, count):
    """count browser ids of one shard."""
    out, i = [], 0
    while len(out) < count:
        aid = '%032x' % i
        if cdp_shard.shard_of(aid, N) == shard:
            out.append(aid)
        i += 1
    return out


def test_stream_is_trimmed_and_added_counts_all(store):
    # two shards' browsers in each call: KEYS[1] is the first one's
    # stream, the other stream is trimmed too
    a, b = ids_of_shard(3, 500), ids_of_shard(11, 500)
    for i in range(20):
        ingest(store, [(aid, 1000 + j, 'page:new')
                       for j, aid in enumerate(
                           x for pair in zip(a[i * 25:(i + 1) * 25],
                                             b[i * 25:(i + 1) * 25])
                           for x in pair)], maxlen=100)
    for aid in (a[0], b[0]):
        k = stream(aid)
        info = store.xinfo_stream(k)
        assert info['entries-added'] == 500, (k, info)
        # MAXLEN ~ trims whole nodes (100 entries each by default)
        assert 100 <= store.xlen(k) <= 300, (k, store.xlen(k))
    assert sum(store.exists(k) for k in streams()) == 2


def test_geo_fields_on_the_record(store):
    ingest(store, [(AID, 1000, 'page:new', 'DE\tBE\tBerlin')])
    b = store.hgetall(skey('profile', AID))
    assert (b['country'], b['region'], b['city']) == ('DE', 'BE', 'Berlin')
    # the latest known place wins; unknown parts leave the old ones
    ingest(store, [(AID, 2000, 'page', 'AT\t\tVienna')])
    b = store.hgetall(skey('profile', AID))
    assert (b['country'], b['region'], b['city']) == ('AT', 'BE', 'Vienna')
    # unknown (no geo): nothing changes
    ingest(store, [(AID, 3000, 'track', '')])
    b = store.hgetall(skey('profile', AID))
    assert b['country'] == 'AT' and b['events'] == '3', b


def test_new_browser_record_in_one_write(store):
    """Each shape of attrs a minted browser's hit can carry: consent only
    (the usual pixel hit), geo and consent, a campaign.  The three browsers
    are in three shards (15, 14, 1), in one call: each event goes to its
    own browser's shard's stream, not KEYS[1]'s."""
    one, two, three = '1' * 32, '2' * 32, '3' * 32
    assert len({tag(one), tag(two), tag(three)}) == 3
    touch = '\t'.join(['news', 'email', 'spring', '', '', 'https://a.example/'])
    ingest(store, [(one, 1000, 'page:new', '\t\t\tanalytics'),
                   (two, 1001, 'track:new', 'DE\t\tBerlin\tanalytics'),
                   (three, 1002, 'page:new', '\t\t\t\t' + touch)])
    ids = []
    for aid in (one, two, three):
        got = store.xrange(stream(aid), '-', '+')
        assert len(got) == 1, (aid, got)
        assert json.loads(got[0][1]['event'])['anonymousId'] == aid
        ids.append(got[0][0])
    assert sum(store.xlen(k) for k in streams()) == 3
    b = store.hgetall(skey('profile', one))
    assert b == {'events': '1', 'page_views': '1', 'first_seen': '1000',
                 'last_seen': '1000', 'first_event': ids[0],
                 'consent': 'analytics'}, b
    b = store.hgetall(skey('profile', two))
    assert b == {'events': '1', 'page_views': '0', 'first_seen': '1001',
                 'last_seen': '1001', 'first_event': ids[1],
                 'country': 'DE', 'city': 'Berlin',
                 'consent': 'analytics'}, b
    b = store.hgetall(skey('profile', three))
    assert (b['first_event'], b['first_utm_source'], b['last_utm_campaign'],
            b['first_referrer'], b['first_touch_at']) \
        == (ids[2], 'news', 'spring', 'https://a.example/', '1002'), b
    assert not store.exists(skey('timeline', one))
    # nothing but the three records and their streams
    assert sorted(store.keys('*')) == sorted(
        [skey('profile', a) for a in (one, two, three)]
        + [stream(a) for a in (one, two, three)])


def touch(source, at=''):
    """attrs of a hit with a campaign (utm_source source)."""
    return '\t\t\t\t' + '\t'.join([source, 'email', '', '', '', at])


def touches(b):
    return (b.get('first_utm_source'), b.get('first_touch_at'),
            b.get('last_utm_source'), b.get('last_touch_at'))


def test_touches_follow_the_hits_times_not_their_arrival(store):
    # the browser's third hit (another worker's batch) lands first, then
    # the minting one, then the second
    ingest(store, [(AID, 3000, 'page', touch('ads'))])
    ingest(store, [(AID, 1000, 'page:new', touch('news'))])
    b = store.hgetall(skey('profile', AID))
    assert touches(b) == ('news', '1000', 'ads', '3000'), b
    ingest(store, [(AID, 2000, 'page', touch('mail'))])
    b = store.hgetall(skey('profile', AID))
    assert touches(b) == ('news', '1000', 'ads', '3000'), b
    # in order, each later touch is the last one
    ingest(store, [(AID, 4000, 'track', touch('social'))])
    b = store.hgetall(skey('profile', AID))
    assert touches(b) == ('news', '1000', 'social', '4000'), b
    assert b['first_seen'] == '1000' and b['last_seen'] == '4000', b
    assert b['events'] == '4', b


def test_merge_takes_the_first_touch_by_its_time(store):
    # browser 1 is seen first but touched last; browser 2 is seen later,
    # touched at once: the person's first touch is browser 2's
    one, two = '1' * 32, '2' * 32
    ingest(store, [(one, 1000, 'page:new')])
    ingest(store, [(two, 2000, 'page:new', touch('early'))])
    ingest(store, [(one, 5000, 'page', touch('late'))])
    for aid, ts in ((one, 6000), (two, 6001)):
        c = identify(store, aid, ts, 'u1', 'h1')
        assert c[0] == 1, c
    pid = store.get(skey('idx:user_id', 'h1'))
    assert pid, store.keys('s:*')
    b = store.hgetall(skey('profile', pid))
    m = all_merges(store)
    assert len(m) == 2, m
    # each in the log of the survivor's shard
    assert all(k == 's:merges:' + tag(f['to']) for k, f in m), m
    assert b['events'] == '3', b        # identifies are not counted
    assert touches(b) == ('early', '2000', 'late', '5000'), b


def identify(c, aid, ts, uid, uidh, n=N):
    """One identify of the browser aid (user_id uid, its hash uidh)."""
    hdr = '1000000' if n == N else '1000000 1 5 5 10000 86400 64800000 %d' % n
    return c.fcall('cdp_ingest', 2, stream(aid, n), skey('profile', aid, n),
                   hdr, str(ts), 'identify', '',
                   '%s\t%s\t\t\t\t{"type":"identify","anonymousId":"%s"}'
                   % (uid, uidh, aid))


def person_events(c, pid, n=N):
    """The stream ids of a person: its own first_event and timeline and
    those of the profiles its ids set names (a merge leaves them there),
    each looked up in its own shard's stream: {(stream, id): event} (ids
    of two streams may be equal)."""
    out = {}
    ps = [pid] + [m.split(':', 1)[1]
                  for m in c.smembers(skey('ids', pid, n))
                  if m.split(':', 1)[0] in ('anonymous_id', 'profile_id')]
    for p in ps:
        ids = c.lrange(skey('timeline', p, n), 0, -1)
        fe = c.hget(skey('profile', p, n), 'first_event')
        ids += [fe] if fe else []
        for i in ids:
            got = c.xrange(stream(p, n), i, i)
            assert got, ('not in the stream of its shard', p, i)
            out[(stream(p, n), i)] = json.loads(got[0][1]['event'])
    return out


def test_a_merge_leaves_the_absorbed_events_in_their_shard(store):
    """The absorbed profile becomes a link that keeps its timeline and
    first_event (its events stay in its shard's stream); the person's
    events are the union over the profiles its ids set names."""
    one, two = '1' * 32, '2' * 32         # shards 15 and 14
    ingest(store, [(one, 1000, 'page:new'), (one, 1100, 'page'),
                   (one, 1200, 'track')])
    ingest(store, [(two, 2000, 'page:new'), (two, 2100, 'track')])
    before = {a: (stream_ids(store, stream(a)),
                  store.lrange(skey('timeline', a), 0, -1),
                  store.hget(skey('profile', a), 'first_event'))
              for a in (one, two)}
    assert [len(before[a][0]) for a in (one, two)] == [3, 2]
    assert identify(store, one, 3000, 'u1', 'h1')[0] == 1
    assert identify(store, two, 3001, 'u1', 'h1')[0] == 1
    pid = store.get(skey('idx:user_id', 'h1'))
    assert pid and pid not in (one, two), pid
    p = store.hgetall(skey('profile', pid))
    assert 'merged_into' not in p and p['events'] == '5', p
    assert store.smembers(skey('ids', pid)) >= {
        'anonymous_id:' + one, 'anonymous_id:' + two, 'user_id:h1'}
    for a in (one, two):
        link = store.hgetall(skey('profile', a))
        assert link['merged_into'] == pid, link
        # the link keeps its first_event and its timeline
        assert link.get('first_event') == before[a][2], (a, link)
        assert store.lrange(skey('timeline', a), 0, -1) == before[a][1]
        assert not store.exists(skey('ids', a))
        # its events did not move out of its shard's stream
        assert stream_ids(store, stream(a))[:len(before[a][0])] \
            == before[a][0]
    # the person's events: the five page/track ones, the two identifies
    ev = person_events(store, pid)
    got = sorted((e.get('type', ''), e.get('ts', 0)) for e in ev.values())
    assert got == [('', 1000), ('', 1100), ('', 1200), ('', 2000),
                   ('', 2100), ('identify', 0), ('identify', 0)], got
    # the identifies were counted on the person: in its shard's stream
    for (k, i), e in ev.items():
        if e.get('type') == 'identify':
            assert k == stream(pid), (k, i)
    assert sum(store.xlen(k) for k in streams()) == 7


def test_the_shards_of_argv1_name_the_derived_keys(store):
    """With 4 shards (ARGV[1]'s 8th field), the keys the store derives
    (the identifier's index, the person's profile, its ids) carry the tags
    of 4 shards, not of the default 16."""
    aid = '1' * 32
    c = identify(store, aid, 1000, 'u4', 'h4', n=4)
    assert c[0] == 1, c
    pid = store.get(skey('idx:user_id', 'h4', 4))
    assert pid, store.keys('*')
    assert store.hget(skey('profile', pid, 4), 'user_id') == 'u4'
    assert 'user_id:h4' in store.smembers(skey('ids', pid, 4))
    assert store.hget(skey('profile', aid, 4), 'merged_into') == pid
    tags4 = {'{%s}' % cdp_shard.shard_tag(i, 4) for i in range(4)}
    for k in store.keys('s:*'):
        assert '{' not in k or k[k.index('{'):k.index('}') + 1] in tags4, k


def test_timeline_archive_keeps_what_the_stream_has(store):
    """A timeline of 10 ids drops the older ones into timeline_old, oldest
    first; ids whose events the stream has trimmed leave its head."""
    ingest(store, [(AID, 1000, 'page:new')], timeline_max=10)
    for n in range(4):
        ingest(store, [(AID, 2000 + 100 * n + k, 'page') for k in range(50)],
               timeline_max=10)
    ids = stream_ids(store, stream(AID))
    assert len(ids) == 201
    tl = store.lrange(skey('timeline', AID), 0, -1)
    old = store.lrange(skey('timeline_old', AID), 0, -1)
    assert 10 <= len(tl) <= 10 + 16
    # every id but the first event's (on the record) is in one of them,
    # the timeline newest first, the archive oldest first
    assert tl == ids[:0:-1][:len(tl)]
    assert old == ids[1:len(old) + 1]
    assert len(tl) + len(old) == 200

    # the stream loses its oldest 150 entries; the next trim of the
    # timeline cuts the archive's head down to what the stream still has
    store.xtrim(stream(AID), maxlen=51, approximate=False)
    first = store.xrange(stream(AID), '-', '+', count=1)[0][0]
    ingest(store, [(AID, 3000 + k, 'page') for k in range(30)],
           timeline_max=10)
    old = store.lrange(skey('timeline_old', AID), 0, -1)
    ms = lambda i: tuple(int(x) for x in i.split('-'))  # noqa: E731
    assert old and ms(old[0]) >= ms(first), (old[:3], first)
    assert old == sorted(old, key=ms)


# the shard helpers' Lua, its N, then its calls: NSH and TAG_OF set for
# each N as a library sets them for each call; per N the tags of the shards
# asked for, and shard_of and tag of every id (ARGV[2...], binary-safe)
SHARD_CHECK_LUA = r"""
local r = {}
for _, q in ipairs(cjson.decode(ARGV[1])) do
    NSH, TAG_OF = q[1], {}
    local tags, ofs, ids = {}, {}, {}
    for j, i in ipairs(q[2]) do
        tags[j] = shard_tag(i)
    end
    for j = 2, #ARGV do
        ofs[j - 1] = shard_of(ARGV[j])
        ids[j - 1] = tag(ARGV[j])
    end
    r[#r + 1] = {tags, ofs, ids}
end
return r
"""


def test_the_shard_blocks_are_store_shard_lua(redis_server):
    """The shard helpers are one text, store/shard.lua, that store/wire.sh
    generates into a block of each library: every block checked in is the
    one store/wire.sh makes afresh ("run store/wire.sh --update" when this
    fails), the same in the three libraries, and its Lua, run in Redis,
    gives the tags and shards cdp_shard.py gives (nginx's, the C ones)."""
    wire = os.path.join(h.MAIN, 'store', 'wire.sh')

    def run(*args):
        return subprocess.run(['sh', wire] + list(args), check=True,
                              stdout=subprocess.PIPE).stdout.decode()

    block = run('--shard')
    assert block.startswith('-- shard:begin') and block.endswith(
        '\n-- shard:end\n')
    for name in ('cdp.lua', 'admin.lua', 'migrate.lua'):
        path = os.path.join(h.MAIN, 'store', name)
        with open(path) as f:
            text = f.read()
        assert run('--lua', path) == text, \
            'store/%s is not current: run store/wire.sh --update' % name
        assert text.count('\n-- shard:begin') == 1 and block in text, name

    ids = ['', 'a' * 32, '0123456789abcdef0123456789abcdef', 'Jöhn',
           'jane@example.com', '{0.13}', 'x' * 300,
           '9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08',
           b'\xff\x00\x80 bytes']
    queries = [[1, [0]], [16, list(range(16))], [48, list(range(48))],
               [1024, [0, 1, 2, 511, 512, 1000, 1023]], [16, [0, 15]]]
    c = redis_server.client()
    got = c.eval('local WIRE_SHARDS = 16\n' + block + SHARD_CHECK_LUA, 0,
                 json.dumps(queries), *ids)
    c.close()
    assert len(got) == len(queries)
    for (n, shards), (tags, ofs, id_tags) in zip(queries, got):
        assert tags == ['{%s}' % cdp_shard.shard_tag(i, n) for i in shards], n
        assert ofs == [cdp_shard.shard_of(x, n) for x in ids], n
        assert id_tags == [tag(x, n) for x in ids], n
