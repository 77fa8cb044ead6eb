"""PTI's lists of access levels and time zones per site: read from PTI, kept on the site, checked before a push.

A customer's access level and zone must be ones PTI has at the site ("24 Hours" typed into a number field, or a
level deleted in PTI, would otherwise fail at PTI or, worse, give the wrong hours). The lists are read before the
site's first push and refreshed by the drift sweep; a value PTI does not list parks the account before any PTI
write, naming the values PTI has.
"""

from __future__ import annotations

from collections.abc import Callable

from ..models import Site, utcnow
from ..pti import PtiClient
from ..sync import DesiredAccess


def known(site: Site) -> bool:
    return site.pti_access_levels is not None and site.pti_time_zones is not None


def store(site: Site, levels, zones) -> None:
    """Keep PTI's lists on the site (in the caller's transaction)."""
    site.pti_access_levels = [{"id": item.id, "name": item.name} for item in levels]
    site.pti_time_zones = [{"id": item.id, "name": item.name} for item in zones]
    site.pti_lists_read_at = utcnow()


def read(site: Site, call: Callable, client: PtiClient) -> None:
    """Read both lists through `call` (the site guard's caller) and keep them."""
    store(site, call("list_access_levels", client.list_access_levels),
          call("list_time_zones", client.list_time_zones))


def describe(items: list[dict]) -> str:
    return ", ".join(f"{item['id']} ({item['name']})" for item in items) or "none"


def check(site: Site, desired: DesiredAccess, level_override: int | None,
          zone_override: int | None) -> tuple[str, str] | None:
    """(reason, detail) when the customer's access level or zone is not one PTI lists at the site, else None."""
    if desired.user is None or not known(site):
        return None
    checks = (
        (desired.user.access_level, site.pti_access_levels, level_override, "access level",
         "access_level_unknown", "site_access_level_unknown"),
        (desired.user.time_zone, site.pti_time_zones, zone_override, "time zone", "zone_unknown",
         "site_zone_unknown"),
    )
    for value, items, override, noun, own_reason, site_reason in checks:
        if value is not None and value not in {item["id"] for item in items}:
            whose = "The customer's own" if override is not None else f"{site.title}'s"
            return (own_reason if override is not None else site_reason,
                    f"{whose} {noun} is {value}; PTI at {site.pti_site_code or site.code} has {describe(items)}.")
    return None


def choices(sites: list[Site]) -> tuple[list[tuple[int, str]], list[tuple[int, str]]] | None:
    """The access levels and zones every one of these sites lists (for the override form), or None while any
    site's lists are unknown."""
    if not sites or not all(known(s) for s in sites):
        return None

    def common(lists: list[list[dict]]) -> list[tuple[int, str]]:
        ids = set.intersection(*({item["id"] for item in items} for items in lists))
        return [(item["id"], item["name"]) for item in lists[0] if item["id"] in ids]

    return common([s.pti_access_levels for s in sites]), common([s.pti_time_zones for s in sites])
