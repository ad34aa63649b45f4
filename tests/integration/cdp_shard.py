"""
Shards and Redis Cluster slots, as ngx_cdp_module/ngx_cdp_shard.c computes
them, for the integration tests: which tag a shard has, which shard a
profile id is in, which slot a key is in.

Every result must be the C one (tests/unit/test_shard.c hard-codes the
same values: the tags of 16 shards, shard_of of a few ids), and key_slot()
what CLUSTER KEYSLOT answers.  Strings are hashed as their UTF-8 bytes.
"""

SLOTS = 16384
SHARDS_MAX = 1024
SHARDS_DEFAULT = 16


def _table():
    t = []
    for i in range(256):
        c = i << 8
        for _ in range(8):
            c = ((c << 1) ^ 0x1021) if c & 0x8000 else (c << 1)
            c &= 0xffff
        t.append(c)
    return t


# CRC16-CCITT (XMODEM), Redis's crc16tab
_CRC16 = _table()

_tags = {}


def _bytes(s):
    return s.encode() if isinstance(s, str) else bytes(s)


def crc16(b):
    crc = 0
    for c in _bytes(b):
        crc = ((crc << 8) & 0xffff) ^ _CRC16[((crc >> 8) ^ c) & 0xff]
    return crc


def key_slot(key):
    """The slot of a key: Redis's keyHashSlot()."""
    key = _bytes(key)
    s = key.find(b'{')
    if s >= 0:
        e = key.find(b'}', s + 1)
        if e > s + 1:
            key = key[s + 1:e]
    return crc16(key) & (SLOTS - 1)


def shard_tag(i, n):
    """Shard i's tag of n, without braces: "<i>.<k>", k the smallest whose
    slot is in [i * 16384 // n, (i + 1) * 16384 // n)."""
    if not 0 <= i < n <= SHARDS_MAX:
        raise ValueError('shard %r of %r' % (i, n))
    tag = _tags.get((i, n))
    if tag is None:
        lo, hi = i * SLOTS // n, (i + 1) * SLOTS // n
        k = 0
        while True:
            tag = '%d.%d' % (i, k)
            if lo <= crc16(tag) & (SLOTS - 1) < hi:
                break
            k += 1
        _tags[(i, n)] = tag
    return tag


def shard_of(pid, n=SHARDS_DEFAULT):
    """The shard of a profile id: CRC16 of the whole id, modulo n."""
    if n < 1:
        raise ValueError('%r shards' % n)
    return crc16(pid) % n
