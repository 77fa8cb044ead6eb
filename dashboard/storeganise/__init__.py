"""Storeganise adapter: the Admin API client and webhook signing, verification and parsing."""

from dashboard.storeganise.client import StoreganiseClient, StoreganiseError, format_timestamp
from dashboard.storeganise.webhooks import (
    KNOWN_EVENT_TYPES,
    SIGNATURE_HEADER,
    WebhookError,
    WebhookEvent,
    compact_json,
    is_stale,
    parse_event,
    sign,
    verify,
)

__all__ = [
    "KNOWN_EVENT_TYPES",
    "SIGNATURE_HEADER",
    "StoreganiseClient",
    "StoreganiseError",
    "WebhookError",
    "WebhookEvent",
    "compact_json",
    "format_timestamp",
    "is_stale",
    "parse_event",
    "sign",
    "verify",
]
