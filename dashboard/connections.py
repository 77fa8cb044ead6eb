"""A site's connections: its PTI credentials (decrypted only here, only when needed)."""

from __future__ import annotations

from flask import current_app

from .crypto import CredentialError, PtiCredentials, unseal
from .models import Site


def current_credentials(site: Site) -> PtiCredentials | None:
    """The site's PTI credentials, or None when it has none (or they cannot be read)."""
    if not site.pti_credentials:
        return None
    try:
        return unseal(current_app.config["ENCRYPTION_KEYS"], site.sg_id, site.pti_credentials)
    except CredentialError:
        return None
