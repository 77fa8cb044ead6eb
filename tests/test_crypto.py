"""PTI credentials at rest: encrypted, bound to their site, rotatable, never shown."""

import pytest
from cryptography.fernet import Fernet

from dashboard.crypto import CredentialError, PtiCredentials, rotate, seal, seal_bytes, unseal, unseal_bytes

KEY_A = Fernet.generate_key().decode()
KEY_B = Fernet.generate_key().decode()
CREDS = PtiCredentials("site-key-1", "operator", "pa55word")


def test_sealed_credentials_read_back_for_their_site():
    token = seal(KEY_A, "site-1", CREDS)
    assert "pa55word" not in token and "operator" not in token
    assert unseal(KEY_A, "site-1", token) == CREDS


def test_credentials_copied_to_another_site_are_refused():
    token = seal(KEY_A, "site-1", CREDS)
    with pytest.raises(CredentialError, match="another site"):
        unseal(KEY_A, "site-2", token)


def test_rotation_moves_credentials_to_the_new_key():
    token = seal(KEY_A, "site-1", CREDS)
    rotated = rotate(f"{KEY_B},{KEY_A}", token)
    assert unseal(KEY_B, "site-1", rotated) == CREDS
    with pytest.raises(CredentialError, match="cannot be decrypted"):
        unseal(KEY_A, "site-1", rotated)


def test_credentials_never_show_in_repr():
    assert "pa55word" not in repr(CREDS) and "pa55word" not in str(CREDS)


def test_a_malformed_key_is_a_clear_error():
    with pytest.raises(CredentialError, match="not a valid Fernet key"):
        seal("not-a-key", "site-1", CREDS)


def test_a_sealed_listing_opens_with_any_configured_key_and_not_without_one():
    """What the product keeps in Redis for a while (a site's PTI listing, with its access codes) is sealed the same
    way: readable with the keys in ENCRYPTION_KEYS, during a rotation too, and with no other."""
    sealed = seal_bytes(KEY_A, b'{"access_code": 482913}')
    assert b"482913" not in sealed
    assert unseal_bytes(f"{KEY_B},{KEY_A}", sealed) == b'{"access_code": 482913}'
    with pytest.raises(CredentialError, match="cannot be decrypted"):
        unseal_bytes(KEY_B, sealed)
