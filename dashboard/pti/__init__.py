"""PTI Storlogix: the client of the contract in docs/pti-contract.md, its errors and the site connection check."""

from dashboard.pti.check import SiteCheck, check_site
from dashboard.pti.client import MAX_ACCESS_CODE, MIN_ACCESS_CODE, PtiClient, is_valid_unit_name, parse_retry_after
from dashboard.pti.errors import PtiBadResponse, PtiError, PtiPermanentError, PtiRetryableError
from dashboard.pti.registry import PtiClientRegistry, PtiConnection
from dashboard.sync.model import AccessLevel, TimeZone

__all__ = [
    "AccessLevel",
    "MAX_ACCESS_CODE",
    "MIN_ACCESS_CODE",
    "PtiBadResponse",
    "PtiClient",
    "PtiClientRegistry",
    "PtiConnection",
    "PtiError",
    "PtiPermanentError",
    "PtiRetryableError",
    "SiteCheck",
    "TimeZone",
    "check_site",
    "is_valid_unit_name",
    "parse_retry_after",
]
