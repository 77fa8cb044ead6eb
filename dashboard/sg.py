"""The product's Storeganise client, built from the app's settings (jobs and commands use this one place)."""

from __future__ import annotations

from flask import current_app

from .storeganise import StoreganiseClient

TRANSPORT_EXTENSION = "storeganise_transport"  # tests put an httpx transport (e.g. the simulator's WSGI app) here


class StoreganiseNotConfigured(RuntimeError):
    """STOREGANISE_API_URL or STOREGANISE_API_KEY is missing."""


def storeganise_client(**options) -> StoreganiseClient:
    config = current_app.config
    url, key = config.get("STOREGANISE_API_URL"), config.get("STOREGANISE_API_KEY")
    if not url or not key:
        raise StoreganiseNotConfigured("Storeganise is not configured: set STOREGANISE_API_URL and "
                                       "STOREGANISE_API_KEY (see README, Configuration).")
    return StoreganiseClient(url, api_key=key, transport=current_app.extensions.get(TRANSPORT_EXTENSION), **options)
