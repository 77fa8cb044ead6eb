"""What our two HTTP clients (PTI's and Storeganise's) share: one TLS context, reading Retry-After, one request within
an overall deadline, and closing their connection pool."""

from __future__ import annotations

import email.utils
import functools
import math
import ssl
import time
from datetime import UTC

import httpx


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The TLS context every client of this process verifies with: httpx's default (certifi's CAs, SSL_CERT_FILE and
    SSL_CERT_DIR honoured), built once. httpx builds one per client otherwise, loading the CA bundle each time: about
    a third of the CPU of a short job (RQ forks a process per job, and each job makes its own client). The worker
    builds it before forking, so its jobs inherit it."""
    return httpx.create_ssl_context()


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


class DeadlineExceeded(httpx.ReadTimeout):
    """The whole exchange took longer than the call's deadline (a server that answers slowly, byte by byte, never
    trips httpx's per-phase time-outs)."""


def request_within(http: httpx.Client, deadline_s: float, method: str, url: str, **kwargs) -> httpx.Response:
    """One request whose whole exchange, from sending to the last byte of the body, ends within `deadline_s`
    (httpx's time-outs bound each phase and each read, not the sum). Raises DeadlineExceeded, an
    httpx.TimeoutException, so callers treat it as any other time-out."""
    ends = time.monotonic() + deadline_s
    with http.stream(method, url, **kwargs) as response:
        body = bytearray()
        if time.monotonic() > ends:
            raise DeadlineExceeded(f"no answer within {deadline_s:g} s", request=response.request)
        for chunk in response.iter_bytes():  # decoded (gzip...), so the copy below carries no Content-Encoding
            body += chunk
            if time.monotonic() > ends:
                raise DeadlineExceeded(f"the answer took longer than {deadline_s:g} s", request=response.request)
    headers = httpx.Headers(response.headers)
    headers.pop("content-encoding", None)
    return httpx.Response(response.status_code, headers=headers, content=bytes(body), request=response.request,
                          extensions=response.extensions)


class PooledClient:
    """A client holding one httpx connection pool (`_http`): close it, or use the client as a context manager."""

    _http: httpx.Client

    def close(self) -> None:
        self._http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
