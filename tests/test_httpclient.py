"""What the PTI and Storeganise clients share: one TLS context per process, not one built per client."""

from __future__ import annotations

from dashboard.httpclient import tls_context
from dashboard.pti.client import PtiClient
from dashboard.storeganise import StoreganiseClient


def _context(client):
    return client._http._transport._pool._ssl_context


def test_every_client_verifies_with_the_one_tls_context_of_the_process():
    with StoreganiseClient("https://sg.example/api/v1/admin", api_key="k") as first, \
            StoreganiseClient("https://sg.example/api/v1/admin", api_key="k") as second, \
            PtiClient("https://pti.example", site_code="S", site_key="k", username="u", password="p") as pti:
        assert _context(first) is _context(second) is _context(pti) is tls_context()
    assert tls_context().verify_mode.name == "CERT_REQUIRED" and tls_context().check_hostname
