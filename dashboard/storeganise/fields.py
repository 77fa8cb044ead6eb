"""The Storeganise custom-field codes the product reads and writes, in one place.

Custom fields are created per business, so their codes may differ from one business to the next: every code is a
setting (`STOREGANISE_FIELD_CODES`, see README), defaulting to the codes of Storeganise's official PTI add-on
(domain.md, "Fields"). docs/storeganise.md lists each code, its type and who writes it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

UNIT_SWITCHED_OFF = "NONE"  # the unit field's value that switches a unit off (Storeganise's PTI error page)

# What an empty unit field means (`PTI_EMPTY_UNIT_NAME`): the seed's rule, or Storeganise's PTI error page's.
EMPTY_UNIT_NOT_SYNCED = "not_synced"
EMPTY_UNIT_USES_UNIT_NAME = "unit_name"
EMPTY_UNIT_RULES = (EMPTY_UNIT_NOT_SYNCED, EMPTY_UNIT_USES_UNIT_NAME)


@dataclass(frozen=True)
class FieldCodes:
    # site (or the add-on's settings): PTI connection and defaults
    site_base_url: str = "pti_base_url"
    site_code: str = "pti_site_code"
    site_key: str = "pti_site_key"
    site_username: str = "pti_username"
    site_password: str = "pti_password"
    site_access_level: str = "pti_access_level"
    site_zone: str = "pti_zone"
    # unit
    unit_name: str = "pti_id"
    # user (customer): staff overrides, and our results
    user_access_level: str = "pti_access_level"
    user_zone: str = "pti_zone"
    user_access_code: str = "pti_access_code"
    user_pti_id: str = "pti_user_id"
    # unit rental: our results, and the two fields staff edit to ask for a push or a suspension
    rental_access_code: str = "pti_access_code"
    rental_pti_id: str = "pti_user_id"
    rental_synced: str = "pti_synced"
    rental_overlocked: str = "pti_overlocked"

    @classmethod
    def parse(cls, text: str | None) -> FieldCodes:
        """`name=code,name=code` overrides (e.g. `unit_name=pti_unit_name`) on top of the defaults.

        ValueError names what is wrong: an unknown name, a pair without `=`, an empty code."""
        codes = cls()
        known = {f.name for f in fields(cls)}
        for pair in filter(None, (p.strip() for p in (text or "").split(","))):
            name, sep, code = (part.strip() for part in pair.partition("="))
            if not sep or not code:
                raise ValueError(f"{pair!r} is not name=code")
            if name not in known:
                raise ValueError(f"{name!r} is not a field the product uses; known: {', '.join(sorted(known))}")
            codes = replace(codes, **{name: code})
        return codes

    def changed_key(self, code: str) -> str:
        """How a webhook's `changedKeys` names a change of this custom field."""
        return f"customFields.{code}"

    @property
    def inputs(self) -> frozenset[str]:
        """The custom fields whose change may matter to PTI (everything the product reads)."""
        return frozenset({self.site_base_url, self.site_code, self.site_key, self.site_username, self.site_password,
                          self.site_access_level, self.site_zone, self.unit_name, self.user_access_level,
                          self.user_zone, self.rental_synced, self.rental_overlocked})
