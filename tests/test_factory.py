"""create_app(): configuration from the environment, and the refusal to start without production secrets."""

import pytest

from dashboard import create_app
from dashboard.config import ConfigError


def test_outside_demo_a_missing_secret_key_stops_start_up(monkeypatch, tmp_path):
    monkeypatch.delenv("SECRET_KEY", raising=False)
    monkeypatch.delenv("PTI_SYNC_DEMO", raising=False)
    monkeypatch.setenv("ENCRYPTION_KEYS", "ZGVtby1vbmx5LWtleS1kZW1vLW9ubHkta2V5LWRlbW8=")
    monkeypatch.setenv("PTI_SYNC_INSTANCE", str(tmp_path))
    with pytest.raises(ConfigError, match="SECRET_KEY must be set"):
        create_app()


def test_outside_demo_a_missing_encryption_key_stops_start_up(monkeypatch, tmp_path):
    monkeypatch.setenv("SECRET_KEY", "s3cret")
    monkeypatch.delenv("ENCRYPTION_KEYS", raising=False)
    monkeypatch.delenv("PTI_SYNC_DEMO", raising=False)
    monkeypatch.setenv("PTI_SYNC_INSTANCE", str(tmp_path))
    with pytest.raises(ConfigError, match="ENCRYPTION_KEYS must be set"):
        create_app()


def test_demo_mode_starts_on_embedded_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("PTI_SYNC_DEMO", "1")
    monkeypatch.delenv("SECRET_KEY", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("PTI_SYNC_INSTANCE", str(tmp_path))
    app = create_app()
    assert app.config["DEMO_MODE"] is True
    assert app.config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path / 'pti-sync.sqlite3'}"
    assert app.config["STOREGANISE_API_KEY"] == "demo-api-key"
    assert app.config["STOREGANISE_WEBHOOK_SECRET"] == "demo-webhook-secret"


def test_environment_overrides_database_and_redis(monkeypatch, tmp_path):
    monkeypatch.setenv("PTI_SYNC_DEMO", "1")
    monkeypatch.setenv("PTI_SYNC_INSTANCE", str(tmp_path))
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://db.example/pti")
    monkeypatch.setenv("REDIS_URL", "redis://cache.example:6380/2")
    app = create_app()
    assert app.config["SQLALCHEMY_DATABASE_URI"] == "postgresql+psycopg://db.example/pti"
    assert app.config["REDIS_URL"] == "redis://cache.example:6380/2"


def test_a_malformed_number_setting_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("PTI_SYNC_DEMO", "1")
    monkeypatch.setenv("PTI_SYNC_INSTANCE", str(tmp_path))
    monkeypatch.setenv("LOGIN_MAX_FAILURES", "five")
    with pytest.raises(ConfigError, match="LOGIN_MAX_FAILURES must be a whole number"):
        create_app()


def test_an_unknown_time_zone_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("PTI_SYNC_DEMO", "1")
    monkeypatch.setenv("PTI_SYNC_INSTANCE", str(tmp_path))
    monkeypatch.setenv("TIME_ZONE", "Europe/Atlantis")
    with pytest.raises(ConfigError, match="TIME_ZONE must be an IANA time zone"):
        create_app()
