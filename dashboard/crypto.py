"""PTI credentials at rest: MultiFernet-encrypted, bound to their site, never shown back.

ENCRYPTION_KEYS is a comma-separated list of Fernet keys, newest first: the first encrypts, all decrypt,
so a key is rotated by putting the new one in front and running `flask keys rotate`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class CredentialError(RuntimeError):
    """The stored credentials cannot be read with the configured keys, or belong to another site."""


@dataclass(frozen=True)
class PtiCredentials:
    """A site's PTI login. Never shown: its repr and str are `PtiCredentials()`, whatever it holds."""

    site_key: str = field(repr=False)
    username: str = field(repr=False)
    password: str = field(repr=False)


def _fernet(keys: str) -> MultiFernet:
    parts = [k.strip() for k in keys.split(",") if k.strip()]
    if not parts:
        raise CredentialError("ENCRYPTION_KEYS is empty")
    try:
        return MultiFernet([Fernet(k) for k in parts])
    except ValueError as exc:
        raise CredentialError("ENCRYPTION_KEYS holds a key that is not a valid Fernet key") from exc


def seal(keys: str, site_sg_id: str, creds: PtiCredentials) -> str:
    """Encrypt the credentials together with the site they belong to."""
    body = json.dumps({"site": site_sg_id, "k": creds.site_key, "u": creds.username, "p": creds.password})
    return _fernet(keys).encrypt(body.encode()).decode()


def unseal(keys: str, site_sg_id: str, token: str) -> PtiCredentials:
    """Decrypt; refuse credentials sealed for another site (a copied column must not work elsewhere)."""
    try:
        data = json.loads(_fernet(keys).decrypt(token.encode()))
    except InvalidToken as exc:
        raise CredentialError("the site's PTI credentials cannot be decrypted with ENCRYPTION_KEYS") from exc
    if data.get("site") != site_sg_id:
        raise CredentialError("the stored PTI credentials belong to another site")
    return PtiCredentials(data["k"], data["u"], data["p"])


def rotate(keys: str, token: str) -> str:
    """Re-encrypt under the newest key."""
    return _fernet(keys).rotate(token.encode()).decode()


def seal_bytes(keys: str, data: bytes) -> bytes:
    """Encrypt something the product keeps outside the database for a while (a site's PTI listing in Redis: it holds
    access codes)."""
    return _fernet(keys).encrypt(data)


def unseal_bytes(keys: str, token: bytes) -> bytes:
    """Decrypt what `seal_bytes` sealed; CredentialError when the keys cannot."""
    try:
        return _fernet(keys).decrypt(token)
    except InvalidToken as exc:
        raise CredentialError("a sealed value cannot be decrypted with ENCRYPTION_KEYS") from exc
