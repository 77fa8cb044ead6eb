"""What our two HTTP clients (PTI's and Storeganise's) share: reading Retry-After, and closing their connection pool."""

from __future__ import annotations

import email.utils
import math
import time
from datetime import UTC

import httpx


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date (a date without a zone is GMT, as
    HTTP dates are). None when absent or unreadable; never negative. Each client applies its own default and cap."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    return None if math.isnan(seconds) else max(0.0, seconds)


class PooledClient:
    """A client holding one httpx connection pool (`_http`): close it, or use the client as a context manager."""

    _http: httpx.Client

    def close(self) -> None:
        self._http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
