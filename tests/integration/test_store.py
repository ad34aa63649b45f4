"""store/cdp.lua called directly in a real Redis: the cases nginx cannot
produce on demand, such as two workers' batches reaching Redis out of
order."""

import json
import os

import pytest
import redis

import cdp_harness as h


LUA = os.path.join(h.MAIN, 'store', 'cdp.lua')


@pytest.fixture
def store(redis_server):
    c = redis_server.client()
    with open(LUA) as f:
        c.function_load(f.read().replace('@REV@', 'test'), replace=True)
    yield c
    c.close()


def ingest(c, events, maxlen=1000000, timeline_max=None):
    """events: (aid, ts, kind[, geo]); returns cdp_ingest's reply."""
    keys = ['s:events'] + ['s:profile:' + e[0] for e in events]
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
    b = store.hgetall('s:profile:' + AID)
    first = b.pop('first_event')
    assert b == {'events': '3', 'page_views': '2', 'first_seen': '1000',
                 'last_seen': '3000'}, b
    # the timeline: the first event on the record, the others newest first
    ids = [i for i, _ in store.xrange('s:events', '-', '+')]
    assert first == ids[0]
    assert store.lrange('s:timeline:' + AID, 0, -1) == ids[:0:-1]


def test_returning_batch_arrives_before_the_minting_one(store):
    # worker B's batch (the second hit, with the cookie) lands first
    assert ingest(store, [(AID, 2000, 'page')])[0] == 1
    assert ingest(store, [(AID, 1000, 'page:new')])[0] == 1
    b = store.hgetall('s:profile:' + AID)
    assert b['events'] == '2' and b['page_views'] == '2', b
    assert b['first_seen'] == '1000' and b['last_seen'] == '2000', b


def test_track_new_has_no_page_view(store):
    ingest(store, [(AID, 1000, 'track:new')])
    b = store.hgetall('s:profile:' + AID)
    assert b['events'] == '1' and b['page_views'] == '0', b


def test_unknown_browser_without_new_is_created(store):
    # a record erased or expired meanwhile: counted from scratch
    ingest(store, [(AID, 5000, 'track')])
    b = store.hgetall('s:profile:' + AID)
    first = b.pop('first_event')
    assert b == {'events': '1', 'page_views': '0', 'first_seen': '5000',
                 'last_seen': '5000'}, b
    # its only event is on the record, no timeline list yet
    assert [i for i, _ in store.xrange('s:events', '-', '+')] == [first]
    assert not store.exists('s:timeline:' + AID)


def test_bad_argument_count_writes_nothing(store):
    with pytest.raises(redis.ResponseError, match='cdp_ingest'):
        store.fcall('cdp_ingest', 2, 's:events', 's:profile:' + AID,
                    '100', '1000', 'page')
    assert store.exists('s:events', 's:profile:' + AID) == 0


def once_ingest(c, once, bit, events):
    """cdp_ingest with a batch id: KEYS[2] the bitmap, ARGV[2] the bit."""
    keys = ['s:events', once] + ['s:profile:' + e[0] for e in events]
    args = ['1000000', str(bit)]
    for aid, ts, kind in events:
        args += [str(ts), kind, '', json.dumps({'anonymousId': aid})]
    return c.fcall('cdp_ingest', len(keys), *keys, *args)


def test_a_batch_applied_twice_is_counted_once(store):
    """A batch sent again (its reply was lost, or replayed from nginx's
    spool) is skipped: nothing stored, nothing counted twice."""
    once = 's:once:host:1:2:0'
    batch = [(AID, 1000, 'page:new'), (AID, 2000, 'track')]
    assert once_ingest(store, once, 7, batch)[0] == 2
    assert once_ingest(store, once, 7, batch) == 'APPLIED'
    assert store.hget('s:profile:' + AID, 'events') == '2'
    assert store.xlen('s:events') == 2
    # another batch id of the same worker is a new batch
    assert once_ingest(store, once, 8, [(AID, 3000, 'page')])[0] == 1
    assert store.hget('s:profile:' + AID, 'events') == '3'
    # remembered a week
    assert 6 * 86400 < store.ttl(once) <= 7 * 86400
    assert store.getbit(once, 7) == 1 and store.getbit(once, 9) == 0


@pytest.mark.parametrize('once, bit', [
    ('s:once:w:0', '-1'), ('s:once:w:0', '1048576'), ('s:once:w:0', 'x'),
    ('s:profile:x', '1')])
def test_a_malformed_batch_id_writes_nothing(store, once, bit):
    with pytest.raises(redis.ResponseError, match='malformed batch id'):
        store.fcall('cdp_ingest', 3, 's:events', once, 's:profile:' + AID,
                    '100', bit, '1000', 'page', '', '{}')
    assert store.exists('s:events', 's:profile:' + AID, once) == 0


def test_stream_is_trimmed_and_added_counts_all(store):
    for i in range(20):
        ingest(store, [('%032x' % (i * 50 + j), 1000 + j, 'page:new')
                       for j in range(50)], maxlen=100)
    info = store.xinfo_stream('s:events')
    assert info['entries-added'] == 1000, info
    # MAXLEN ~ trims whole nodes (100 entries each by default)
    assert 100 <= store.xlen('s:events') <= 300, store.xlen('s:events')


def test_geo_fields_on_the_record(store):
    ingest(store, [(AID, 1000, 'page:new', 'DE\tBE\tBerlin')])
    b = store.hgetall('s:profile:' + AID)
    assert (b['country'], b['region'], b['city']) == ('DE', 'BE', 'Berlin')
    # the latest known place wins; unknown parts leave the old ones
    ingest(store, [(AID, 2000, 'page', 'AT\t\tVienna')])
    b = store.hgetall('s:profile:' + AID)
    assert (b['country'], b['region'], b['city']) == ('AT', 'BE', 'Vienna')
    # unknown (no geo): nothing changes
    ingest(store, [(AID, 3000, 'track', '')])
    b = store.hgetall('s:profile:' + AID)
    assert b['country'] == 'AT' and b['events'] == '3', b


def test_new_browser_record_in_one_write(store):
    """Each shape of attrs a minted browser's hit can carry: consent only
    (the usual pixel hit), geo and consent, a campaign."""
    touch = '\t'.join(['news', 'email', 'spring', '', '', 'https://a.example/'])
    ingest(store, [('1' * 32, 1000, 'page:new', '\t\t\tanalytics'),
                   ('2' * 32, 1001, 'track:new', 'DE\t\tBerlin\tanalytics'),
                   ('3' * 32, 1002, 'page:new', '\t\t\t\t' + touch)])
    ids = [i for i, _ in store.xrange('s:events', '-', '+')]
    assert len(ids) == 3
    b = store.hgetall('s:profile:' + '1' * 32)
    assert b == {'events': '1', 'page_views': '1', 'first_seen': '1000',
                 'last_seen': '1000', 'first_event': ids[0],
                 'consent': 'analytics'}, b
    b = store.hgetall('s:profile:' + '2' * 32)
    assert b == {'events': '1', 'page_views': '0', 'first_seen': '1001',
                 'last_seen': '1001', 'first_event': ids[1],
                 'country': 'DE', 'city': 'Berlin',
                 'consent': 'analytics'}, b
    b = store.hgetall('s:profile:' + '3' * 32)
    assert (b['first_event'], b['first_utm_source'], b['last_utm_campaign'],
            b['first_referrer'], b['first_touch_at']) \
        == (ids[2], 'news', 'spring', 'https://a.example/', '1002'), b
    assert not store.exists('s:timeline:' + '1' * 32)


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
    b = store.hgetall('s:profile:' + AID)
    assert touches(b) == ('news', '1000', 'ads', '3000'), b
    ingest(store, [(AID, 2000, 'page', touch('mail'))])
    b = store.hgetall('s:profile:' + AID)
    assert touches(b) == ('news', '1000', 'ads', '3000'), b
    # in order, each later touch is the last one
    ingest(store, [(AID, 4000, 'track', touch('social'))])
    b = store.hgetall('s:profile:' + AID)
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
        c = store.fcall('cdp_ingest', 2, 's:events', 's:profile:' + aid,
                        '1000000', str(ts), 'identify', '',
                        'u1\th1\t\t\t\t{"type":"identify"}')
        assert c[0] == 1, c
    pid = store.get('s:idx:user_id:h1')
    assert pid, store.keys('s:*')
    b = store.hgetall('s:profile:' + pid)
    assert len(store.xrange('s:merges')) == 2
    assert b['events'] == '3', b        # identifies are not counted
    assert touches(b) == ('early', '2000', 'late', '5000'), b


def test_timeline_archive_keeps_what_the_stream_has(store):
    """A timeline of 10 ids drops the older ones into timeline_old, oldest
    first; ids whose events the stream has trimmed leave its head."""
    ingest(store, [(AID, 1000, 'page:new')], timeline_max=10)
    for n in range(4):
        ingest(store, [(AID, 2000 + 100 * n + k, 'page') for k in range(50)],
               timeline_max=10)
    ids = [i for i, _ in store.xrange('s:events', '-', '+')]
    assert len(ids) == 201
    tl = store.lrange('s:timeline:' + AID, 0, -1)
    old = store.lrange('s:timeline_old:' + AID, 0, -1)
    assert 10 <= len(tl) <= 10 + 16
    # every id but the first event's (on the record) is in one of them,
    # the timeline newest first, the archive oldest first
    assert tl == ids[:0:-1][:len(tl)]
    assert old == ids[1:len(old) + 1]
    assert len(tl) + len(old) == 200

    # the stream loses its oldest 150 entries; the next trim of the
    # timeline cuts the archive's head down to what the stream still has
    store.xtrim('s:events', maxlen=51, approximate=False)
    first = store.xrange('s:events', '-', '+', count=1)[0][0]
    ingest(store, [(AID, 3000 + k, 'page') for k in range(30)],
           timeline_max=10)
    old = store.lrange('s:timeline_old:' + AID, 0, -1)
    ms = lambda i: tuple(int(x) for x in i.split('-'))  # noqa: E731
    assert old and ms(old[0]) >= ms(first), (old[:3], first)
    assert old == sorted(old, key=ms)
