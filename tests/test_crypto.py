"""PTI credentials at rest: encrypted, bound to their site, rotatable, never shown."""

import pytest
from cryptography.fernet import Fernet

from dashboard.crypto import CredentialError, PtiCredentials, rotate, seal, unseal

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
