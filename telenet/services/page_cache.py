"""Worklist pages held by the process between the changes that alter them.

Readers refresh their center's queue far more often than it changes: every refresh of a reading room's
screens read and built the same page. A page built once is served again until one of these comes first:

- an event is committed by this process (``Hub.notify_committed``: before the command that caused it answers,
  so whoever changed a request sees the change on the next page), or read by the live channel from another
  hub process (its broker's poll);
- ``TTL_S`` (2 s) passes: the bound for what changes a page without an event of its own (a patient's name
  corrected by an ADT message);
- the hub's clock enters the next ``BUCKET_S`` (6 s): the page's waiting and SLA minutes are shown to 0.1
  minute, which is 6 s.

A page read while a change was committed is not kept (the generation moved while it was read). The scope
check and the audit row of every request are the worklist's own, cached page or not."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from datetime import datetime
from typing import Any

TTL_S = 2.0
BUCKET_S = 6
MAX_PAGES = 4096


class Page(dict[str, Any]):
    """A page as built: each reader gets a copy of its keys (its lists are shared, never changed), and its JSON
    text is encoded once and shared by every copy (encoding 50 rows was a third of a page read's time)."""

    __slots__ = ("_encoded",)

    def __init__(self, values: dict[str, Any], encoded: list[bytes] | None = None) -> None:
        super().__init__(values)
        self._encoded: list[bytes] = encoded if encoded is not None else []

    def for_reader(self) -> Page:
        return Page(self, self._encoded)

    def encoded(self, dumps: Callable[[Any], str]) -> bytes:
        if not self._encoded:
            self._encoded.append(dumps(self).encode())
        return self._encoded[0]


class PageCache:
    """The pages of one hub process, by (clock step, center, limit, offset); see the module docstring."""

    def __init__(self, *, ttl_s: float = TTL_S, max_pages: int = MAX_PAGES) -> None:
        self.ttl_s = ttl_s
        self.max_pages = max_pages
        self._pages: dict[Hashable, tuple[float, int, Any]] = {}
        self.generation = 0
        # Pages served from memory and pages built (for /metrics and the tests).
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(now: datetime, *parts: Hashable) -> tuple[Hashable, ...]:
        return (int(now.timestamp()) // BUCKET_S, *parts)

    def get(self, key: Hashable) -> Any | None:
        found = self._pages.get(key)
        if found is not None and found[1] == self.generation and time.monotonic() - found[0] < self.ttl_s:
            self.hits += 1
            return found[2]
        self.misses += 1
        return None

    def put(self, key: Hashable, generation: int, page: Any) -> None:
        """Keep ``page``, read from the database at ``generation``, unless something changed since."""
        if generation != self.generation:
            return
        if len(self._pages) >= self.max_pages:
            self._pages.clear()
        self._pages[key] = (time.monotonic(), generation, page)

    def clear(self) -> None:
        self.generation += 1
        self._pages.clear()
