"""Behaviour 1's lookup rule: which PTI user is this customer's, from lookups by stored id, e-mail and code."""

from __future__ import annotations

import pytest

from dashboard.sync import Decision, Outcome, PtiUser, resolve
from tests.sync.factories import CUSTOMER_ID


def user(uid: str, marker: str | None = CUSTOMER_ID) -> PtiUser:
    return PtiUser(uid, f"{uid}@example.com", None, None, None, marker=marker)


OURS, OURS_TOO = user("u-ours"), user("u-ours-2")
UNMARKED, UNMARKED_TOO = user("u-plain", None), user("u-plain-2", None)
BOBS = user("u-bob", "cus-bob")


def found(*users: PtiUser | None) -> list[PtiUser]:
    return [u for u in users if u is not None]


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
    pytest.param(None, UNMARKED, None, Outcome.FOREIGN, None, id="a stranger found by e-mail is not adopted"),
    pytest.param(None, UNMARKED, UNMARKED, Outcome.FOREIGN, None, id="a stranger by e-mail and code"),
    pytest.param(None, UNMARKED, UNMARKED_TOO, Outcome.FOREIGN, None, id="strangers by e-mail and by code"),
    pytest.param(None, UNMARKED, OURS, Outcome.FOUND, OURS, id="ours by code wins over a stranger by e-mail"),
    pytest.param(None, OURS, OURS_TOO, Outcome.DUPLICATE, None, id="ours by e-mail and another of ours by code"),
    pytest.param(None, UNMARKED, BOBS, Outcome.FOREIGN, None, id="stranger by e-mail, code another customer's"),
    pytest.param(None, BOBS, None, Outcome.CREATE, None, id="e-mail match is another customer's"),
    pytest.param(None, None, OURS, Outcome.FOUND, OURS, id="create applied then timed out: found by code"),
    pytest.param(None, None, UNMARKED, Outcome.FOREIGN, None, id="stored code held by a stranger"),
    pytest.param(None, None, BOBS, Outcome.CODE_TAKEN, None, id="code held by another customer"),
])
def test_lookup_rule_decides_the_customers_pti_user(by_id, by_email, by_code, outcome, chosen):
    identity = resolve(CUSTOMER_ID, by_id, found(by_email), by_code)
    assert (identity.outcome, identity.user) == (outcome, chosen)


def test_every_stranger_matching_the_email_is_a_conflict_for_staff():
    identity = resolve(CUSTOMER_ID, None, [UNMARKED, UNMARKED_TOO], None)
    assert (identity.outcome, identity.user, identity.others) == (Outcome.FOREIGN, None, (UNMARKED, UNMARKED_TOO))
    assert identity.reason == "foreign_pti_user"


def test_a_stranger_alone_matching_the_email_is_never_taken_over():
    identity = resolve(CUSTOMER_ID, None, [UNMARKED], None)
    assert (identity.outcome, identity.user, identity.others) == (Outcome.FOREIGN, None, (UNMARKED,))


def test_our_user_among_several_email_matches_is_the_customers_and_strangers_beside_it_are_ignored():
    identity = resolve(CUSTOMER_ID, None, [UNMARKED, OURS, BOBS, UNMARKED_TOO], None)
    assert (identity.outcome, identity.user) == (Outcome.FOUND, OURS)


def test_two_of_ours_among_the_email_matches_are_duplicates_to_merge():
    identity = resolve(CUSTOMER_ID, None, [OURS, UNMARKED, OURS_TOO], None)
    assert (identity.outcome, identity.others) == (Outcome.DUPLICATE, (OURS, OURS_TOO))
    assert identity.reason == "duplicate_pti_users"


def test_a_stranger_holding_the_stored_code_is_a_conflict_named_with_the_email_matches():
    identity = resolve(CUSTOMER_ID, None, [UNMARKED], UNMARKED_TOO)
    assert (identity.outcome, identity.others) == (Outcome.FOREIGN, (UNMARKED, UNMARKED_TOO))


def test_a_stranger_holding_a_code_pti_sync_drew_itself_only_takes_the_code():
    identity = resolve(CUSTOMER_ID, None, [], UNMARKED, code_chosen_here=True)
    assert (identity.outcome, identity.user, identity.others) == (Outcome.CODE_TAKEN, None, (UNMARKED,))


def test_the_stranger_staff_chose_to_adopt_is_the_customers():
    identity = resolve(CUSTOMER_ID, None, [UNMARKED, UNMARKED_TOO], None, decision=Decision(adopt=UNMARKED_TOO))
    assert (identity.outcome, identity.user) == (Outcome.FOUND, UNMARKED_TOO)


def test_an_adopted_user_that_meanwhile_became_another_customers_is_not_adopted():
    identity = resolve(CUSTOMER_ID, None, [UNMARKED], None, decision=Decision(adopt=BOBS))
    assert (identity.outcome, identity.others) == (Outcome.FOREIGN, (UNMARKED,))


def test_a_separate_user_ignores_the_strangers_matching_the_email():
    identity = resolve(CUSTOMER_ID, None, [UNMARKED, UNMARKED_TOO], None, decision=Decision(separate=True))
    assert identity.outcome is Outcome.CREATE


def test_a_separate_user_still_needs_a_code_no_stranger_holds():
    identity = resolve(CUSTOMER_ID, None, [UNMARKED], UNMARKED_TOO, decision=Decision(separate=True))
    assert (identity.outcome, identity.others) == (Outcome.CODE_TAKEN, (UNMARKED_TOO,))


def test_a_taken_code_names_its_holder_so_the_adapter_can_choose_another():
    identity = resolve(CUSTOMER_ID, OURS, [], BOBS)
    assert identity.reason == "duplicate_access_code"
    assert identity.others == (BOBS,)


def test_a_found_or_new_user_reports_no_problem():
    assert resolve(CUSTOMER_ID, OURS, [], None).reason is None
    assert resolve(CUSTOMER_ID, None, [], None).reason is None
