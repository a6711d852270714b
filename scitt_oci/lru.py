"""A bounded, thread-safe least-recently-used map (for immutable values: tree nodes, receipts)."""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class LruCache(Generic[K, V]):
    def __init__(self, capacity: int) -> None:
        self._data: OrderedDict[K, V] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        value = self._data.get(key)  # one C call, atomic under the GIL: a miss (the usual answer) takes no lock
        if value is not None:
            with self._lock, contextlib.suppress(KeyError):  # evicted meanwhile: it was still the answer
                self._data.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self.put_many([(key, value)])

    def put_many(self, items: list[tuple[K, V]]) -> None:
        """Store each item as the most recent, under one lock; the least recent go beyond the capacity."""
        with self._lock:
            data = self._data
            for key, value in items:
                data[key] = value
                data.move_to_end(key)
            while len(data) > self._capacity:
                data.popitem(last=False)
