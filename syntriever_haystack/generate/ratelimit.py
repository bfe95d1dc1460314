"""Async sliding-window limiter for requests per minute and tokens per minute."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable


class RateLimiter:
    """Admit a request only while the last ``window_s`` seconds stay under both budgets.

    :param requests_per_minute: At most this many requests start per window (``None``: unlimited).
    :param tokens_per_minute: At most this many (estimated, then actual) tokens per window (``None``: unlimited).
    :param window_s: Window length; 60 s matches how providers meter.
    """

    def __init__(
        self,
        *,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rpm = requests_per_minute
        self.tpm = tokens_per_minute
        self.window_s = window_s
        self._clock = clock
        self._events: deque[list[float]] = deque()  # [start time, tokens]
        self._lock = asyncio.Lock()

    @property
    def enabled(self) -> bool:
        return self.rpm is not None or self.tpm is not None

    def _expire(self, now: float) -> None:
        while self._events and self._events[0][0] <= now - self.window_s:
            self._events.popleft()

    def _wait_time(self, tokens: float, now: float) -> float:
        self._expire(now)
        wait = 0.0
        if self.rpm is not None and len(self._events) >= self.rpm:
            index = int(len(self._events) - self.rpm)
            wait = max(wait, self._events[index][0] + self.window_s - now)
        if self.tpm is not None:
            # a single request larger than the budget is admitted alone rather than never
            budget = max(self.tpm - tokens, 0.0)
            used = sum(e[1] for e in self._events)
            if used > budget:
                excess = used - budget
                for start, spent in self._events:
                    excess -= spent
                    if excess <= 0:
                        wait = max(wait, start + self.window_s - now)
                        break
        return wait

    async def acquire(self, tokens: float = 0.0) -> list[float]:
        """Wait for room, then record a request of ``tokens``; returns a handle for :meth:`settle`."""
        if not self.enabled:
            return [self._clock(), tokens]
        async with self._lock:
            while True:
                now = self._clock()
                wait = self._wait_time(tokens, now)
                if wait <= 0:
                    event = [now, float(tokens)]
                    self._events.append(event)
                    return event
                await asyncio.sleep(min(wait, self.window_s) + 0.001)

    def settle(self, handle: list[float], actual_tokens: float) -> None:
        """Replace a request's estimated token count with the count the server reported."""
        handle[1] = float(actual_tokens)
