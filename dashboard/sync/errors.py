"""The error catalogue: every problem an operator can meet, in plain words, with the fix.

One place for the words staff read on a rental page, in a Storeganise task and in docs/errors.md. Adapters
raise or record a `reason` key; pages and write-back look the words up here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    reason: str  # stable key stored in the database and journal
    message: str  # what happened, in the operators' words
    fix: str  # what an operator should do about it
    retryable: bool = False  # True: the product retries on its own before parking the item


CATALOGUE: dict[str, Problem] = {
    p.reason: p
    for p in [
        Problem("unit_unmapped", "The unit has no PTI Unit Name, so it is not synced.",
                "Set the unit's PTI Unit Name in Storeganise to the unit's name in the PTI dashboard."),
        Problem("invalid_unit_name", "PTI does not accept this unit name (PTI result -3).",
                "PTI unit names are at most 10 characters with no spaces: rename the unit in PTI or fix its "
                "PTI Unit Name in Storeganise."),
        Problem("unit_not_found", "PTI has no unit with this name (PTI result -404).",
                "The unit was renamed or deleted in PTI: make the unit's PTI Unit Name in Storeganise match the "
                "PTI dashboard."),
        Problem("user_not_found", "PTI has no user with this id or access code (PTI result -404).",
                "The PTI user was deleted in PTI. Press Resync: the product creates the user again."),
        Problem("already_vacant", "The unit was already vacant in PTI (PTI result -22).",
                "Nothing to do: this counts as success."),
        Problem("invalid_credentials", "PTI refused the site's credentials.",
                "Correct the site's PTI Site Code, Site Key, Username and Password in Storeganise (the add-on's "
                "site settings), then press Retry all for this cause on the Failures page."),
        Problem("duplicate_access_code", "PTI already has another user with this access code.",
                "Press Regenerate code for this customer, or remove the other PTI user holding the code."),
        Problem("duplicate_pti_users",
                "Two different PTI users carry PTI Sync's mark for this customer.",
                "Merge the two PTI users in the PTI dashboard (keep one, remove the other), then press Resync."),
        Problem("foreign_pti_user",
                "A PTI user with this customer's e-mail (or access code) already exists at the site, and PTI Sync "
                "did not create it, so PTI Sync changes nothing for this customer there.",
                "Compare the two on the customer's page and choose Adopt or Create a separate user."),
        Problem("unit_rented_to_other",
                "PTI has this unit rented to a user this product did not create.",
                "Check the unit in PTI: vacate it there if that user should no longer have it, then press Resync."),
        Problem("no_access_level", "The customer has no PTI access level (neither their own nor the site's).",
                "Set the site's PTI Access Level, or the customer's own, in Storeganise."),
        Problem("no_zone", "The customer has no PTI zone (neither their own nor the site's).",
                "Set the site's PTI zone, or the customer's own, in Storeganise."),
        Problem("no_access_code", "The customer has no PTI access code yet, so no PTI user can be created.",
                "Press Resync: the product chooses and stores a code before it creates the PTI user."),
        Problem("site_access_level_unknown", "The site's PTI Access Level is not one of the access levels PTI has.",
                "Set the site's PTI Access Level in Storeganise to one PTI lists (the detail names them), then press "
                "Retry all for this cause on the Failures page."),
        Problem("site_zone_unknown", "The site's PTI zone is not one of the time zones PTI has.",
                "Set the site's PTI zone in Storeganise to one PTI lists (the detail names them), then press Retry "
                "all for this cause on the Failures page."),
        Problem("access_level_unknown", "The customer's own PTI access level is not one PTI has at this site.",
                "Choose one of PTI's access levels on the customer's page (the detail names them), or clear the "
                "customer's own to use the site's."),
        Problem("zone_unknown", "The customer's own PTI zone is not one PTI has at this site.",
                "Choose one of PTI's time zones on the customer's page (the detail names them), or clear the "
                "customer's own to use the site's."),
        Problem("site_not_configured", "The site has no PTI connection settings.",
                "Fill in the site's PTI Site Code, Site Key, Username and Password."),
        Problem("credentials_unreadable",
                "The site's stored PTI credentials cannot be decrypted with the configured keys (or were sealed "
                "for another site), so nothing is pushed to it.",
                "Put the key they were encrypted with back in ENCRYPTION_KEYS (newest key first, older keys after "
                "it), restart, run `flask keys rotate`, then press Retry all for this cause on the Failures page. If "
                "that key is lost, enter the site's PTI credentials again in Storeganise (the add-on's site "
                "settings)."),
        Problem("unexpected_error",
                "The push stopped on an error the product does not expect (an answer it could not read, a "
                "database error, or a fault in the product); after repeated attempts the customer is parked.",
                "The journal names the error and where it happened. Press Resync once the cause is fixed (e.g. the "
                "database is back); if it repeats, contact support with the journal entry.", retryable=True),
        Problem("lock_lost",
                "The push lost the customer's lock (Redis did not answer, or the lock expired), so it stopped "
                "before its next PTI change.",
                "Usually passes on its own; the product retries. If it persists, check Redis (REDIS_URL, its "
                "memory and `noeviction` policy).", retryable=True),
        Problem("pti_unreachable", "PTI did not answer (time-out or connection error).",
                "Usually passes on its own; the product retries. If it persists, check the site's PTI URL.",
                retryable=True),
        Problem("pti_server_error", "PTI answered with a server error.",
                "Usually passes on its own; the product retries. If it persists, contact PTI support.",
                retryable=True),
        Problem("pti_rate_limited", "PTI asked us to slow down (429).",
                "Nothing to do: the product waits as PTI asked and retries.", retryable=True),
        Problem("circuit_open", "PTI has been failing for this site, so calls are paused for a moment.",
                "Nothing to do: the product tries again when the pause ends. Check PTI if it lasts.",
                retryable=True),
        Problem("pti_rejected", "PTI rejected the request.",
                "Read the PTI result in the journal; contact support with it if the fix is not clear."),
        Problem("pti_bad_response", "PTI answered with something the product cannot read.",
                "Check the site's PTI URL points at the Storlogix Cloud API (not a web page or a proxy), then press "
                "Resync; if it persists, contact support with the journal entry, which says which part of the "
                "answer was wrong."),
        Problem("storeganise_unreachable", "Storeganise did not answer.",
                "Usually passes on its own; the product retries.", retryable=True),
        Problem("storeganise_auth_failed", "Storeganise refused the product's API key.",
                "Check STOREGANISE_API_KEY (Storeganise: Settings > API keys) and that the key is still active."),
        Problem("storeganise_not_found", "Storeganise has no such record (it was deleted or the id is wrong).",
                "Nothing to push for a deleted record; if it should exist, check it in Storeganise."),
        Problem("storeganise_rejected", "Storeganise rejected the request.",
                "Read the message in the journal; check the custom fields' codes and types in Storeganise."),
        Problem("bad_value", "Storeganise holds a value the product cannot read, so it keeps the last value it could.",
                "Correct the value in Storeganise as the detail says (the field, what was found, what works); the "
                "product reads it again on the next edit or pull."),
        Problem("storeganise_bad_response", "Storeganise answered with something the product cannot read.",
                "Usually passes on its own; if it persists, check STOREGANISE_API_URL points at the Admin API."),
    ]
}


def problem(reason: str) -> Problem:
    """The catalogue entry for `reason`; an unknown reason still reads as a clear (generic) problem."""
    return CATALOGUE.get(reason) or Problem(reason, f"Sync problem: {reason}.",
                                            "Contact support with this reason.")
