"""The demo business: one deterministic data set that both simulators and the product's seed are built from.

Storeganise records are in the Admin API's own shape (docs/storeganise.md, "Shapes"): camelCase, `customFields`
holding values of the type each field was created with, a site's `title` localised (`{"en": ...}`), `created` /
`updated` timestamps (ms, Z), a user's `overdue` a timestamp or null and a rental's a flag. Custom-field codes are
the official PTI add-on's (`pti_id` on units). PTI sites list the units, access levels and time zones PTI already
has before the product touches it. Same seed, same data, every run.
"""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass, field

DEMO_SEED = 20231
DEMO_CREATED = "2023-06-01T09:00:00.000Z"
DEMO_OVERDUE_SINCE = "2023-09-01T13:00:00.000Z"  # when the nightly run marked the demo's overdue customers
UNIT_FIELD = "pti_id"  # the official PTI add-on's unit field ("PTI Unit Name"); "NONE" switches a unit off
UNIT_OFF = "NONE"

ACCESS_LEVELS = [(1, "All Hours Access"), (2, "Business Hours Access"), (3, "Office Only")]
TIME_ZONES = [(1, "24 hours"), (2, "Business hours 6am-10pm"), (3, "Weekdays 7am-7pm")]

FIRST_NAMES = [
    "Ava", "Ben", "Chloe", "Daniel", "Emma", "Finn", "Grace", "Hugo", "Isla", "Jack", "Kate", "Liam", "Maya",
    "Noah", "Olivia", "Priya", "Quinn", "Ruby", "Sam", "Tara", "Umar", "Vera", "Will", "Yara", "Zoe",
]
LAST_NAMES = [
    "Adams", "Brown", "Clarke", "Davies", "Evans", "Fischer", "Green", "Hughes", "Ito", "Jones", "Khan",
    "Lopez", "Murphy", "Nguyen", "Owens", "Patel", "Reid", "Singh", "Taylor", "Walsh",
]


@dataclass(frozen=True)
class DemoSite:
    """A site of the demo business and the PTI account behind it."""

    key: str
    code: str
    title: str
    pti_site_code: str
    pti_site_key: str
    pti_username: str
    pti_password: str  # what PTI accepts
    storeganise_password: str  # what the operator typed into Storeganise: wrong for one site on purpose
    unit_count: int
    rented_units: int
    default_access_level: int = 1
    default_zone: int = 1


DEMO_SITES = [
    DemoSite("northgate", "northgate", "Northgate Self Storage", "NG01", "ng-site-key-7c1e", "sync.northgate",
             "ng-pass-41", "ng-pass-41", 110, 62),
    DemoSite("riverside", "riverside", "Riverside Storage", "RS02", "rs-site-key-90af", "sync.riverside",
             "rs-pass-17", "rs-pass-17", 110, 58, default_zone=2),
    DemoSite("hilltop", "hilltop", "Hilltop Lockers", "HT03", "ht-site-key-3b22", "sync.hilltop",
             "ht-pass-88", "wrong-password", 100, 40),
]

# Units whose PTI Unit Name PTI rejects (space, more than 10 characters): PTI has no such unit.
REJECTED_NAMES = {"northgate": ["LOCKER 12", "NORTHGATE-XL1"], "riverside": ["RIVERSIDE-BOAT"], "hilltop": []}
# Units with no PTI Unit Name at all (parking bays): never synced.
UNMAPPED_COUNT = 3


def object_id(label: str) -> str:
    """A stable 24-hex id in the shape Storeganise uses (MongoDB ObjectId)."""
    return hashlib.sha256(label.encode()).hexdigest()[:24]


DEMO_ADDON_ID = object_id("addon:pti")  # the PTI add-on installed on the demo business


@dataclass
class DemoBusiness:
    sites: list[dict] = field(default_factory=list)
    units: list[dict] = field(default_factory=list)
    users: list[dict] = field(default_factory=list)
    unit_rentals: list[dict] = field(default_factory=list)
    # The PTI add-on's settings (`GET addons/{id}`): per-site PTI settings keyed by Storeganise site id (our guess).
    addon: dict = field(default_factory=dict)
    # PTI's side: site code -> {"site_key", "username", "password", "units", "access_levels", "time_zones"}
    pti_sites: dict[str, dict] = field(default_factory=dict)


def _unit_names(site: DemoSite) -> list[str]:
    regular = site.unit_count - UNMAPPED_COUNT - len(REJECTED_NAMES.get(site.key, ()))
    prefix = site.pti_site_code[0]
    return [f"{prefix}{floor}{n:02d}" for floor in range(1, 1000) for n in range(1, 21)][:regular]


def make_sites(count: int, units: int, rented: int, prefix: str = "load") -> list[DemoSite]:
    """`count` extra sites of `units` units with `rented` rentals each, for load tests and benchmarks."""
    return [DemoSite(f"{prefix}{i}", f"{prefix}{i}", f"Load site {i}", f"L{i:03d}", f"key-{prefix}{i}",
                     f"sync.{prefix}{i}", f"pass-{prefix}{i}", f"pass-{prefix}{i}", units, rented)
            for i in range(1, count + 1)]


SITES_ENV = "SIM_SITES"  # a load profile both simulators (and the bench's product) read: `PREFIX:COUNT:UNITS:RENTED`


def sites_from_spec(spec: str | None) -> list[DemoSite] | None:
    """`load:10:1100:1000` → make_sites(10, 1100, 1000, "load"); empty → None (the demo sites)."""
    if not spec:
        return None
    try:
        prefix, count, units, rented = spec.split(":")
        return make_sites(int(count), int(units), int(rented), prefix)
    except ValueError as exc:
        raise ValueError(f"{SITES_ENV} must look like load:10:1100:1000 (prefix:sites:units:rented), "
                         f"got {spec!r}") from exc


def sites_from_env() -> list[DemoSite] | None:
    return sites_from_spec(os.environ.get(SITES_ENV))


def build_demo_business(pti_base_url: str, sites: list[DemoSite] | None = None,
                        seed: int = DEMO_SEED) -> DemoBusiness:
    """Build the demo business (or another one of `sites`); `pti_base_url` is where the PTI simulator listens."""
    rng = random.Random(seed)
    biz = DemoBusiness()
    people = [(f, last) for last in LAST_NAMES for f in FIRST_NAMES]
    rng.shuffle(people)
    person_index = 0
    biz.addon = {"id": DEMO_ADDON_ID, "customFields": {}}

    for site in sites or DEMO_SITES:
        site_id = object_id(f"site:{site.key}")
        connection = {
            "pti_base_url": pti_base_url,
            "pti_site_code": site.pti_site_code,
            "pti_site_key": site.pti_site_key,
            "pti_username": site.pti_username,
            "pti_password": site.storeganise_password,
        }
        # Older set-ups keep the PTI credentials in site custom fields (what the product reads today); the newer
        # add-on keeps them in its own settings. The demo holds both, equal.
        biz.sites.append({
            "id": site_id,
            "code": site.code,
            "title": {"en": site.title},
            "created": DEMO_CREATED,
            "updated": DEMO_CREATED,
            "customFields": {**connection, "pti_zone": site.default_zone,
                             "pti_access_level": site.default_access_level},
        })
        biz.addon["customFields"][site_id] = dict(connection)
        names = _unit_names(site)
        biz.pti_sites[site.pti_site_code] = {
            "site_key": site.pti_site_key,
            "username": site.pti_username,
            "password": site.pti_password,
            "units": list(names),
            "access_levels": [{"id": i, "name": n} for i, n in ACCESS_LEVELS],
            "time_zones": [{"id": i, "name": n} for i, n in TIME_ZONES],
        }
        site_units = []
        for name in names:
            site_units.append(_unit(site_id, name, name))
        for name in REJECTED_NAMES.get(site.key, ()):
            site_units.append(_unit(site_id, name.replace(" ", "-"), name))
        for n in range(1, UNMAPPED_COUNT + 1):  # the last one is switched off by hand (pti_id "NONE")
            site_units.append(_unit(site_id, f"PARK{n}", UNIT_OFF if n == UNMAPPED_COUNT else None))
        biz.units.extend(site_units)

        # Rent units: rejected-name units are always rented (so their errors show), plus two parking bays: one
        # without a PTI Unit Name (unmapped) and the one switched off (disabled).
        rejected = REJECTED_NAMES.get(site.key, ())
        rentable = [u for u in site_units if u["customFields"].get(UNIT_FIELD) in rejected]
        rentable += [site_units[-UNMAPPED_COUNT], site_units[-1]]
        regular = [u for u in site_units
                   if u not in rentable and u["customFields"].get(UNIT_FIELD) not in (None, "", UNIT_OFF)]
        rentable += rng.sample(regular, site.rented_units - len(rentable))
        rng.shuffle(rentable)

        # Group rentals into customers: most rent one unit, some two or three.
        i = 0
        while i < len(rentable):
            take = rng.choices([1, 2, 3], weights=[78, 17, 5])[0]
            first, last = people[person_index % len(people)]
            person_index += 1
            user_id = object_id(f"user:{site.key}:{person_index}")
            custom: dict = {}
            if rng.random() < 0.06:
                custom["pti_access_level"] = 2
            if rng.random() < 0.05:
                custom["pti_zone"] = 3
            owner_overdue = False
            for unit in rentable[i:i + take]:
                overdue = rng.random() < 0.07
                owner_overdue = owner_overdue or overdue
                unit["state"] = "occupied"
                biz.unit_rentals.append({
                    "id": object_id(f"rental:{unit['id']}"),
                    "unitId": unit["id"],
                    "siteId": site_id,
                    "ownerId": user_id,
                    "state": "occupied",
                    "overdue": overdue,
                    "startDate": "2023-06-01",
                    "created": DEMO_CREATED,
                    "updated": DEMO_CREATED,
                    "customFields": {"pti_overlocked": overdue},
                })
            biz.users.append({
                "id": user_id,
                "email": f"{first}.{last}{person_index}@example.com".lower(),
                "firstName": first,
                "lastName": last,
                "overdue": DEMO_OVERDUE_SINCE if owner_overdue else None,
                "created": DEMO_CREATED,
                "updated": DEMO_CREATED,
                "customFields": custom,
            })
            i += take
    return biz


def _unit(site_id: str, name: str, pti_id: str | None) -> dict:
    custom = {UNIT_FIELD: pti_id} if pti_id else {}
    return {
        "id": object_id(f"unit:{site_id}:{name}"),
        "siteId": site_id,
        "name": name,
        "state": "available",
        "created": DEMO_CREATED,
        "updated": DEMO_CREATED,
        "customFields": custom,
    }
