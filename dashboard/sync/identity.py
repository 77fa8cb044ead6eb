"""Which PTI user is this customer's (behaviour 1): decided from PTI's answers to three lookups.

The adapter looks the customer up in PTI by the stored pti_user_id, by e-mail and by the stored access code,
then asks `resolve`. A user carrying another customer's marker is never this customer's. A user without a marker
is this customer's only when found by e-mail (an existing PTI user the product adopts and marks).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from dashboard.sync.model import PtiUser


class Outcome(StrEnum):
    FOUND = "found"  # `user` is the customer's PTI user
    CREATE = "create"  # PTI has no user for the customer yet
    CODE_TAKEN = "code_taken"  # the stored code belongs to someone else: choose and store a new one, then go on
    DUPLICATE = "duplicate_pti_users"  # two PTI users match the customer: stop, staff must merge them


@dataclass(frozen=True)
class Identity:
    outcome: Outcome
    user: PtiUser | None = None  # the customer's user for FOUND, and for CODE_TAKEN when one was found
    others: tuple[PtiUser, ...] = ()  # for DUPLICATE: the users to merge; for CODE_TAKEN: the code's holder

    @property
    def reason(self) -> str | None:
        """The `errors.CATALOGUE` key to report, when the outcome is one."""
        return {Outcome.DUPLICATE: "duplicate_pti_users", Outcome.CODE_TAKEN: "duplicate_access_code"}.get(
            self.outcome)


def resolve(customer_id: str, by_id: PtiUser | None, by_email: PtiUser | None,
            by_code: PtiUser | None) -> Identity:
    """Decide the customer's PTI user from the users found by stored id, by e-mail and by stored access code.

    - A user carrying another customer's marker never counts as this customer's (a stale stored id, a shared
      e-mail); if it holds the stored code, the code is taken.
    - The stored id, when it still points at a usable user, wins over the e-mail lookup; another user with our
      marker found beside it is a duplicate.
    - Without a stored id: a user found by e-mail and another found by code that could be the customer's (our
      marker, or no marker) disagree: duplicate (behaviour 1). A user found only by code is the customer's only
      when it carries our marker (a create that timed out after PTI applied it); an unmarked one is a stranger
      who holds the code.
    """

    def ours(user: PtiUser | None) -> bool:
        return user is not None and user.marker == customer_id

    def foreign(user: PtiUser | None) -> bool:
        return user is not None and user.marker not in (None, customer_id)

    if foreign(by_id):
        by_id = None
    if foreign(by_email):
        by_email = None

    if by_id is not None:
        twins = _distinct([u for u in (by_email, by_code) if ours(u) and u.id != by_id.id])
        if twins:
            return Identity(Outcome.DUPLICATE, None, (by_id, *twins))
        return _with_code(by_id, by_code)

    if by_email is not None:
        if by_code is not None and by_code.id != by_email.id and not foreign(by_code):
            return Identity(Outcome.DUPLICATE, None, (by_email, by_code))
        return _with_code(by_email, by_code)

    if ours(by_code):
        return Identity(Outcome.FOUND, by_code)
    if by_code is not None:
        return Identity(Outcome.CODE_TAKEN, None, (by_code,))
    return Identity(Outcome.CREATE)


def _with_code(user: PtiUser, by_code: PtiUser | None) -> Identity:
    """`user` is the customer's; the stored code is usable unless another user holds it."""
    if by_code is not None and by_code.id != user.id:
        return Identity(Outcome.CODE_TAKEN, user, (by_code,))
    return Identity(Outcome.FOUND, user)


def _distinct(users: list[PtiUser]) -> tuple[PtiUser, ...]:
    return tuple({u.id: u for u in users}.values())
