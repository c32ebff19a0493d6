"""Sliding-window attempt counting for the login limiter: pure, the caller passes the time."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field


@dataclass
class SlidingWindow:
    """At most ``limit`` attempts per key within ``window`` seconds. Keys are bounded in number: when
    ``max_keys`` is reached the oldest keys are forgotten (an attacker cannot grow memory without bound)."""

    limit: int
    window: float
    max_keys: int = 100_000
    _hits: dict[str, deque[float]] = field(default_factory=dict)

    def retry_after(self, key: str, now: float) -> float:
        """0 when an attempt for ``key`` is allowed now, else the seconds until it is."""
        hits = self._hits.get(key)
        if not hits:
            return 0.0
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if len(hits) < self.limit:
            return 0.0
        return hits[0] + self.window - now

    def forget(self, key: str) -> None:
        self._hits.pop(key, None)

    def hit(self, key: str, now: float) -> None:
        hits = self._hits.get(key)
        if hits is None:
            if len(self._hits) >= self.max_keys:
                for old in list(self._hits)[: max(1, self.max_keys // 10)]:
                    del self._hits[old]
            hits = self._hits[key] = deque()
        hits.append(now)
        while len(hits) > self.limit:
            hits.popleft()


@dataclass
class LoginLimiter:
    """Login attempts per account and per client address (each in its own window)."""

    per_account: SlidingWindow
    per_address: SlidingWindow

    def retry_after(self, username: str, address: str | None, now: float) -> int:
        """Whole seconds to wait (0: go ahead); both limits apply."""
        wait = self.per_account.retry_after(username.lower(), now)
        if address:
            wait = max(wait, self.per_address.retry_after(address, now))
        return math.ceil(wait) if wait > 0 else 0

    def hit(self, username: str, address: str | None, now: float) -> None:
        self.per_account.hit(username.lower(), now)
        if address:
            self.per_address.hit(address, now)
