"""The bounded LRU map behind the receipt and node caches."""

from __future__ import annotations

from scitt_oci.lru import LruCache


def test_the_least_recently_used_entries_leave_first_whether_put_one_by_one_or_together() -> None:
    cache: LruCache[int, str] = LruCache(3)
    cache.put(1, "a")
    cache.put(2, "b")
    assert cache.get(1) == "a"  # now the most recent: 2 is the oldest
    cache.put_many([(3, "c"), (4, "d")])
    assert [cache.get(k) for k in (1, 2, 3, 4)] == ["a", None, "c", "d"]
    cache.put_many([(5, "e"), (6, "f"), (7, "g"), (5, "E")])  # more than it holds, one key twice
    assert [cache.get(k) for k in (1, 3, 4, 5, 6, 7)] == [None, None, None, "E", "f", "g"]
