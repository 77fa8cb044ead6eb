"""Building the clients of the two systems we talk to, from the app's settings: Storeganise's, and each site's PTI
client with its credentials (decrypted only here, only when needed). Jobs, commands and the engine use this one place.
"""

from __future__ import annotations

import json
import logging

import redis
from flask import current_app

from .crypto import CredentialError, PtiCredentials, seal_bytes, unseal, unseal_bytes
from .extensions import db
from .jobqueue import get_redis
from .models import ProductSetting, Site
from .pti import PtiClient, PtiClientRegistry, PtiConnection
from .storeganise import StoreganiseClient

TRANSPORT_EXTENSION = "storeganise_transport"  # tests put an httpx transport (e.g. the simulator's WSGI app) here
PTI_CLIENTS_EXTENSION = "pti_clients"
STOREGANISE_CLIENT_EXTENSION = "storeganise_client"  # (its settings, the client): kept_storeganise_client

log = logging.getLogger(__name__)


ADDON_SETTING = "storeganise_addon_id"


class StoreganiseNotConfigured(RuntimeError):
    """STOREGANISE_API_URL or STOREGANISE_API_KEY is missing."""


def storeganise_client(**options) -> StoreganiseClient:
    config = current_app.config
    url, key = config.get("STOREGANISE_API_URL"), config.get("STOREGANISE_API_KEY")
    if not url or not key:
        raise StoreganiseNotConfigured("Storeganise is not configured: set STOREGANISE_API_URL and "
                                       "STOREGANISE_API_KEY (see README, Configuration).")
    options.setdefault("deadline", config["STOREGANISE_CALL_DEADLINE_S"])
    return StoreganiseClient(url, api_key=key, transport=current_app.extensions.get(TRANSPORT_EXTENSION), **options)


def kept_storeganise_client() -> StoreganiseClient:
    """The Storeganise client this process keeps between the jobs it runs warm (a delivery's, a write-back's): its
    connection to Storeganise stays open from one job to the next, where a client of each job's own connected, and
    in production negotiated TLS, before its first call (a delivery's first call is its re-read of the rental,
    before the lock or unlock). Built again when a setting it was built with changes; a forked work horse drops its
    parent's (`jobs.worker`). The process's write-back thread (`jobs.after_gate`) writes with the client of the job
    that handed it the write-back (httpx's client is safe to share between threads; ours keeps no state between
    calls). Jobs of a whole site, and the threads of their batches, use `storeganise_client()`."""
    config, extensions = current_app.config, current_app.extensions
    settings = (config.get("STOREGANISE_API_URL"), config.get("STOREGANISE_API_KEY"),
                config["STOREGANISE_CALL_DEADLINE_S"], id(extensions.get(TRANSPORT_EXTENSION)))
    kept = extensions.get(STOREGANISE_CLIENT_EXTENSION)
    if kept is not None and kept[0] == settings:
        return kept[1]
    client = storeganise_client()
    close_storeganise_client(current_app)
    extensions[STOREGANISE_CLIENT_EXTENSION] = (settings, client)
    return client


def close_storeganise_client(app) -> None:
    """Close the Storeganise client the app's process kept (an app that ends before its process)."""
    kept = app.extensions.pop(STOREGANISE_CLIENT_EXTENSION, None)
    if kept is not None:
        kept[1].close()


def addon_id() -> str | None:
    """The PTI add-on's id in Storeganise: STOREGANISE_ADDON_ID, else the one webhook bodies carry (remembered)."""
    configured = current_app.config.get("STOREGANISE_ADDON_ID")
    if configured:
        return configured
    learned = db.session.get(ProductSetting, ADDON_SETTING)
    return learned.value if learned is not None else None


def remember_addon_id(value: str) -> None:
    """Keep the add-on id a webhook carried (in the caller's transaction), when it is new."""
    learned = db.session.get(ProductSetting, ADDON_SETTING)
    if learned is None:
        db.session.add(ProductSetting(name=ADDON_SETTING, value=value))
    elif learned.value != value:
        learned.value = value


def site_credentials(site: Site) -> PtiCredentials | None:
    """The site's PTI credentials, or None when it has none or they cannot be read (logged: see `connection_problem`
    for the reason to show)."""
    if not site.pti_credentials:
        return None
    try:
        return unseal(current_app.config["ENCRYPTION_KEYS"], site.sg_id, site.pti_credentials)
    except CredentialError as exc:  # the message names the cause (wrong key, another site's), never a secret
        log.error("PTI credentials of site %s cannot be read: %s. Add the key they were sealed with to "
                  "ENCRYPTION_KEYS (then `flask keys rotate`), or enter the site's PTI credentials again",
                  site.code, exc)
        return None


def connection_problem(site: Site) -> str:
    """Why `pti_connection` has nothing for the site: its stored credentials cannot be decrypted
    (credentials_unreadable), or a setting is missing (site_not_configured)."""
    if site.pti_credentials and site.pti_base_url and site.pti_site_code:
        try:
            unseal(current_app.config["ENCRYPTION_KEYS"], site.sg_id, site.pti_credentials)
        except CredentialError:
            return "credentials_unreadable"
    return "site_not_configured"


def pti_connection(site: Site) -> PtiConnection | None:
    """The site's PTI settings, or None while any of them is missing."""
    creds = site_credentials(site)
    if creds is None or not site.pti_base_url or not site.pti_site_code:
        return None
    return PtiConnection(site.pti_base_url, site.pti_site_code, creds.site_key, creds.username, creds.password,
                         label=site.code)


def close_pti_clients(app) -> None:
    """Close the app's PTI clients and their pools (an app that ends before its process)."""
    registry = app.extensions.pop(PTI_CLIENTS_EXTENSION, None)
    if registry is not None:
        registry.close_all()


def pti_client(site: Site, connection: PtiConnection) -> PtiClient:
    """The site's PTI client in this process (one pool per site, and one session token per site shared by every
    process unless PTI_SHARED_SESSIONS is off), with the configured time-outs."""
    app = current_app._get_current_object()
    registry = app.extensions.get(PTI_CLIENTS_EXTENSION)
    if registry is None:
        sessions = None
        if app.config["PTI_SHARED_SESSIONS"]:
            conn, keys = get_redis(), app.config["ENCRYPTION_KEYS"]

            def sessions(key: str, connection: PtiConnection) -> SharedPtiSession:
                return SharedPtiSession(conn, key, connection, keys)

        registry = app.extensions[PTI_CLIENTS_EXTENSION] = PtiClientRegistry(
            sessions, connect_timeout=app.config["PTI_CONNECT_TIMEOUT_S"],
            read_timeout=app.config["PTI_READ_TIMEOUT_S"], deadline=app.config["PTI_CALL_DEADLINE_S"])
    return registry.get(str(site.id), connection)


class SharedPtiSession:
    """A site's PTI session token in Redis, shared by the site's clients in every process (the PTI client's
    `SessionStore`). Without it each process logged in to each site on its first call there: a worker's first
    payment at a site paid a login before its unlock, and every bulk batch's forked work horse logged in again.

    The token is a credential: it is kept sealed with ENCRYPTION_KEYS, with the fingerprint of the settings it was
    opened with (a token opened before a password or user change is not taken), under the site's id, for as long as
    it stays usable (Redis expires it then). Only a saving: a Redis that cannot answer, or a value the keys cannot
    open, means "log in yourself", as before."""

    def __init__(self, conn: redis.Redis, site_key: str, connection: PtiConnection, keys: str) -> None:
        self.conn, self.keys = conn, keys
        self.key = f"pti-sync:pti-session:{site_key}"
        self.fingerprint = connection.fingerprint

    def get(self) -> tuple[str, float] | None:
        try:
            with self.conn.pipeline(transaction=False) as pipe:
                pipe.get(self.key)
                pipe.pttl(self.key)
                sealed, left_ms = pipe.execute()
            token = self._token_of(sealed) if sealed is not None and left_ms and left_ms > 0 else None
            return (token, left_ms / 1000) if token is not None else None
        except redis.RedisError as exc:
            log.info("no shared PTI session (%s): this process logs in", exc.__class__.__name__)
            return None

    def put(self, token: str, usable_s: float) -> None:
        try:
            sealed = seal_bytes(self.keys, json.dumps({"fingerprint": self.fingerprint, "token": token}).encode())
            self.conn.set(self.key, sealed, px=max(1, int(usable_s * 1000)))
        except (redis.RedisError, CredentialError) as exc:
            log.info("the PTI session could not be shared (%s)", exc.__class__.__name__)

    def drop(self, token: str) -> None:
        """Forget the shared token if it is still `token`, or cannot be read as this site's (WATCH: a token another
        process put since is kept)."""
        try:
            with self.conn.pipeline() as pipe:
                pipe.watch(self.key)
                sealed = pipe.get(self.key)
                if sealed is None or self._token_of(sealed) not in (token, None):
                    return
                pipe.multi()
                pipe.delete(self.key)
                pipe.execute()
        except redis.WatchError:
            pass  # replaced meanwhile by a new session: that one stays
        except redis.RedisError as exc:
            log.info("the refused PTI session could not be forgotten (%s): it lapses", exc.__class__.__name__)

    def _token_of(self, sealed: bytes) -> str | None:
        """The token in a shared value when it was opened with this site's current settings; None when it was not,
        or the value cannot be opened or read (a rotated key, another version's shape)."""
        try:
            value = json.loads(unseal_bytes(self.keys, sealed))
        except (CredentialError, ValueError) as exc:
            log.info("a shared PTI session cannot be read (%s): not taken", exc.__class__.__name__)
            return None
        if not isinstance(value, dict) or value.get("fingerprint") != self.fingerprint:
            return None
        token = value.get("token")
        return token if isinstance(token, str) and token else None
