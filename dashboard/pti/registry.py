"""One PTI client per site and process, so each site keeps one connection pool and one session token."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dashboard.pti.client import PtiClient, SessionStore


@dataclass(frozen=True)
class PtiConnection:
    """A site's PTI settings. Secrets are hidden from repr; `fingerprint` tells two settings apart."""

    base_url: str
    site_code: str = field(repr=False)
    site_key: str = field(repr=False)
    username: str = field(repr=False)
    password: str = field(repr=False)
    label: str | None = None

    @property
    def fingerprint(self) -> str:
        raw = "\0".join((self.base_url, self.site_code, self.site_key, self.username, self.password))
        return hashlib.sha256(raw.encode()).hexdigest()

    def client(self, **options: Any) -> PtiClient:
        return PtiClient(self.base_url, self.site_code, self.site_key, self.username, self.password,
                         label=self.label, **options)


class PtiClientRegistry:
    """Get-or-build the client of a site, so each site keeps one pool and one token per process.

    Changed settings (a new password) build a new client and close the old one. `sessions`, when given, names the
    store each new client shares its session token through (`SessionStore`), from the site's key and connection.
    """

    def __init__(self, sessions: Callable[[str, PtiConnection], SessionStore | None] | None = None,
                 **client_options: Any) -> None:
        self._sessions = sessions
        self._options = client_options
        self._lock = threading.Lock()
        self._clients: dict[str, tuple[str, PtiClient]] = {}

    def get(self, key: str, connection: PtiConnection) -> PtiClient:
        with self._lock:
            current = self._clients.get(key)
            if current and current[0] == connection.fingerprint:
                return current[1]
            store = self._sessions(key, connection) if self._sessions is not None else None
            client = connection.client(sessions=store, **self._options)
            self._clients[key] = (connection.fingerprint, client)
        if current:
            current[1].close()
        return client

    def close_all(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for _, client in clients:
            client.close()

