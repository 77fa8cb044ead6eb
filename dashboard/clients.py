"""Building the clients of the two systems we talk to, from the app's settings: Storeganise's, and each site's PTI
client with its credentials (decrypted only here, only when needed). Jobs, commands and the engine use this one place.
"""

from __future__ import annotations

import logging

from flask import current_app

from .crypto import CredentialError, PtiCredentials, unseal
from .extensions import db
from .models import ProductSetting, Site
from .pti import PtiClient, PtiClientRegistry, PtiConnection
from .storeganise import StoreganiseClient

TRANSPORT_EXTENSION = "storeganise_transport"  # tests put an httpx transport (e.g. the simulator's WSGI app) here
PTI_CLIENTS_EXTENSION = "pti_clients"

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
    """The site's PTI client in this process (one pool and token per site), with the configured time-outs."""
    app = current_app._get_current_object()
    registry = app.extensions.get(PTI_CLIENTS_EXTENSION)
    if registry is None:
        registry = app.extensions[PTI_CLIENTS_EXTENSION] = PtiClientRegistry(
            connect_timeout=app.config["PTI_CONNECT_TIMEOUT_S"], read_timeout=app.config["PTI_READ_TIMEOUT_S"],
            deadline=app.config["PTI_CALL_DEADLINE_S"])
    return registry.get(str(site.id), connection)
