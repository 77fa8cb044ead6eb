"""Behaviour 1's lookup rule: which PTI user is this customer's, from lookups by stored id, e-mail and code."""

from __future__ import annotations

import pytest

from dashboard.sync import Outcome, PtiUser, resolve
from tests.sync.factories import CUSTOMER_ID


def user(uid: str, marker: str | None = CUSTOMER_ID) -> PtiUser:
    return PtiUser(uid, f"{uid}@example.com", None, None, None, marker=marker)


OURS, OURS_TOO = user("u-ours"), user("u-ours-2")
UNMARKED, UNMARKED_TOO = user("u-plain", None), user("u-plain-2", None)
BOBS = user("u-bob", "cus-bob")


@pytest.mark.parametrize(("by_id", "by_email", "by_code", "outcome", "chosen"), [
    pytest.param(None, None, None, Outcome.CREATE, None, id="nothing found: create"),
    pytest.param(OURS, OURS, OURS, Outcome.FOUND, OURS, id="all three agree"),
    pytest.param(OURS, None, None, Outcome.FOUND, OURS, id="stored id only"),
    pytest.param(OURS, UNMARKED, None, Outcome.FOUND, OURS, id="stored id wins over an unmarked e-mail match"),
    pytest.param(OURS, OURS_TOO, None, Outcome.DUPLICATE, None, id="stored id and another of ours by e-mail"),
    pytest.param(OURS, None, OURS_TOO, Outcome.DUPLICATE, None, id="stored id and another of ours by code"),
    pytest.param(OURS, None, UNMARKED, Outcome.CODE_TAKEN, OURS, id="stored id, code held by a stranger"),
    pytest.param(OURS, None, BOBS, Outcome.CODE_TAKEN, OURS, id="stored id, code held by another customer"),
    pytest.param(BOBS, None, None, Outcome.CREATE, None, id="stale stored id now another customer's"),
    pytest.param(None, UNMARKED, None, Outcome.FOUND, UNMARKED, id="existing pti user found by e-mail"),
    pytest.param(None, UNMARKED, UNMARKED, Outcome.FOUND, UNMARKED, id="e-mail and code agree"),
    pytest.param(None, UNMARKED, UNMARKED_TOO, Outcome.DUPLICATE, None, id="e-mail and code disagree"),
    pytest.param(None, UNMARKED, OURS, Outcome.DUPLICATE, None, id="e-mail and our marked user disagree"),
    pytest.param(None, UNMARKED, BOBS, Outcome.CODE_TAKEN, UNMARKED, id="e-mail match, code another customer's"),
    pytest.param(None, BOBS, None, Outcome.CREATE, None, id="e-mail match is another customer's"),
    pytest.param(None, None, OURS, Outcome.FOUND, OURS, id="create applied then timed out: found by code"),
    pytest.param(None, None, UNMARKED, Outcome.CODE_TAKEN, None, id="code held by a stranger"),
    pytest.param(None, None, BOBS, Outcome.CODE_TAKEN, None, id="code held by another customer"),
])
def test_lookup_rule_decides_the_customers_pti_user(by_id, by_email, by_code, outcome, chosen):
    identity = resolve(CUSTOMER_ID, by_id, by_email, by_code)
    assert (identity.outcome, identity.user) == (outcome, chosen)


def test_duplicate_users_are_reported_as_merge_them_with_both_users():
    identity = resolve(CUSTOMER_ID, None, UNMARKED, UNMARKED_TOO)
    assert identity.reason == "duplicate_pti_users"
    assert identity.others == (UNMARKED, UNMARKED_TOO)


def test_a_taken_code_names_its_holder_so_the_adapter_can_choose_another():
    identity = resolve(CUSTOMER_ID, OURS, None, BOBS)
    assert identity.reason == "duplicate_access_code"
    assert identity.others == (BOBS,)


def test_a_found_or_new_user_reports_no_problem():
    assert resolve(CUSTOMER_ID, OURS, None, None).reason is None
    assert resolve(CUSTOMER_ID, None, None, None).reason is None
