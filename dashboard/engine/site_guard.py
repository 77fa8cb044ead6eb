"""Per-site protection for PTI, kept in Redis because RQ forks a process per job (reliability.md).

- Concurrency limit: at most `limit` PTI calls in flight per site across every worker (a lease semaphore).
- Retry-After: after a 429 no call goes to that site until the pause expires.
- Circuit breaker: after `threshold` consecutive retryable failures the site is paused for `cooldown` seconds;
  the first call after the pause is the trial: a success closes the breaker, a failure opens it again.
One site's outage therefore fails fast for that site only and never ties up the workers other sites need.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import redis

from ..config import DEFAULT_PTI_SITE_CONCURRENCY
from ..pti import PtiRetryableError

T = TypeVar("T")

BREAKER_THRESHOLD = 10  # consecutive retryable failures that open it (a 20% fault storm seldom makes 10)
BREAKER_COOLDOWN_S = 15.0
LEASE_S = 60  # a crashed holder's slot frees itself after this long
SLOT_WAIT_S = 30.0  # how long a call waits for a free slot before giving up (retryable)

_ACQUIRE = """
local key, now, lease, limit, token = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
if redis.call('ZCARD', key) < limit then
  redis.call('ZADD', key, now + lease, token)
  redis.call('EXPIRE', key, math.ceil(lease) + 1)
  return 1
end
return 0
"""


@dataclass
class SiteGuard:
    conn: redis.Redis
    site_id: int
    limit: int = DEFAULT_PTI_SITE_CONCURRENCY
    threshold: int = BREAKER_THRESHOLD
    cooldown: float = BREAKER_COOLDOWN_S

    @property
    def _prefix(self) -> str:
        return f"pti-sync:site:{self.site_id}"

    def paused_for(self) -> tuple[str, float] | None:
        """("pti_rate_limited" | "circuit_open", seconds left) while calls to the site must wait."""
        pipe = self.conn.pipeline()
        pipe.pttl(f"{self._prefix}:retry-after")
        pipe.pttl(f"{self._prefix}:breaker-open")
        rate, breaker = pipe.execute()
        if rate and rate > 0:
            return "pti_rate_limited", rate / 1000
        if breaker and breaker > 0:
            return "circuit_open", breaker / 1000
        return None

    def breaker_open(self) -> bool:
        return bool(self.conn.exists(f"{self._prefix}:breaker-open"))

    @contextmanager
    def _slot(self, operation: str):
        token = uuid.uuid4().hex
        key = f"{self._prefix}:slots"
        deadline = time.monotonic() + SLOT_WAIT_S
        delay = 0.002
        while not self.conn.eval(_ACQUIRE, 1, key, time.time(), LEASE_S, self.limit, token):
            if time.monotonic() > deadline:
                raise PtiRetryableError("pti_unreachable", operation=operation, retry_after=1.0)
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        try:
            yield
        finally:
            self.conn.zrem(key, token)

    def call(self, operation: str, fn: Callable[..., T], *args, **kwargs) -> T:
        """Run one PTI call under the site's limit, pause and breaker; record its outcome for the breaker."""
        paused = self.paused_for()
        if paused:
            reason, left = paused
            raise PtiRetryableError(reason, operation=operation, retry_after=left)
        with self._slot(operation):
            try:
                result = fn(*args, **kwargs)
            except PtiRetryableError as exc:
                self._failed(exc)
                raise
        self.conn.delete(f"{self._prefix}:failures")
        return result

    def _failed(self, exc: PtiRetryableError) -> None:
        if exc.reason == "pti_rate_limited" and exc.retry_after:
            self.conn.set(f"{self._prefix}:retry-after", 1, px=max(1, int(exc.retry_after * 1000)))
            return
        failures = self.conn.incr(f"{self._prefix}:failures")
        self.conn.expire(f"{self._prefix}:failures", int(self.cooldown * 4) + 1)
        if failures >= self.threshold:
            pipe = self.conn.pipeline()
            pipe.set(f"{self._prefix}:breaker-open", 1, px=int(self.cooldown * 1000))
            # Half-open after the pause: one more failure opens the breaker again, one success closes it.
            pipe.set(f"{self._prefix}:failures", self.threshold - 1, ex=int(self.cooldown * 4) + 1)
            pipe.execute()
