"""Which PTI user is this customer's (behaviour 1): decided from PTI's answers to the lookups, and staff's decision.

The adapter looks the customer up in PTI by the stored pti_user_id, by e-mail (every match: PTI does not keep
e-mails unique) and by the stored access code, then asks `resolve`. A user carrying our marker for the customer is
theirs; a user carrying another customer's marker never is. A user without a marker (a stranger: made by hand or by
another integration) is never taken over silently: when no user of ours is found and strangers match the customer,
staff decide on the customer's page to adopt one of them or to create a separate user.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from dashboard.sync.model import PtiUser


class Outcome(StrEnum):
    FOUND = "found"  # `user` is the customer's PTI user
    CREATE = "create"  # PTI has no user for the customer yet
    CODE_TAKEN = "code_taken"  # the stored code belongs to someone else: choose and store a new one, then go on
    DUPLICATE = "duplicate_pti_users"  # two PTI users carry our marker for the customer: stop, staff merge them
    FOREIGN = "foreign_pti_user"  # strangers match the customer and none is ours: stop, staff adopt or separate


@dataclass(frozen=True)
class Identity:
    outcome: Outcome
    user: PtiUser | None = None  # the customer's user for FOUND, and for CODE_TAKEN when one was found
    # DUPLICATE: the users to merge; CODE_TAKEN: the code's holder; FOREIGN: the strangers staff choose between
    others: tuple[PtiUser, ...] = ()

    @property
    def reason(self) -> str | None:
        """The `errors.CATALOGUE` key to report, when the outcome is one."""
        return {Outcome.DUPLICATE: "duplicate_pti_users", Outcome.CODE_TAKEN: "duplicate_access_code",
                Outcome.FOREIGN: "foreign_pti_user"}.get(self.outcome)


@dataclass(frozen=True)
class Decision:
    """What staff decided about strangers matching the customer; nothing decided by default."""

    adopt: PtiUser | None = None  # the stranger staff chose to adopt, as PTI holds it now
    separate: bool = False  # create the customer's own user; strangers matching the e-mail are someone else


def resolve(customer_id: str, by_id: PtiUser | None, by_email: Sequence[PtiUser], by_code: PtiUser | None, *,
            decision: Decision = Decision(), code_chosen_here: bool = False) -> Identity:
    """Decide the customer's PTI user from the users found by stored id, by e-mail and by stored access code.

    - A user carrying another customer's marker never counts as this customer's (a stale stored id, a shared
      e-mail); if it holds the stored code, the code is taken.
    - The stored id (or the stranger staff chose to adopt), when it points at a usable user, wins over the e-mail
      matches; another user with our marker found beside it is a duplicate.
    - Else a user with our marker found by e-mail or by code is the customer's (two of them are a duplicate);
      strangers found beside it are someone else.
    - Else strangers matching the e-mail, or holding the stored code, are a conflict for staff (FOREIGN) unless
      staff chose a separate user. A stranger holding a code PTI Sync drew itself (`code_chosen_here`, not the
      one Storeganise holds for the customer) met it by chance: the code is taken, and that is all.
    """

    def ours(user: PtiUser | None) -> bool:
        return user is not None and user.marker == customer_id

    def stranger(user: PtiUser | None) -> bool:
        return user is not None and user.marker is None

    def usable(user: PtiUser | None) -> PtiUser | None:
        return user if ours(user) or stranger(user) else None

    anchor = usable(by_id) or usable(decision.adopt)
    if anchor is not None:
        twins = _distinct(u for u in (*by_email, by_code) if ours(u) and u.id != anchor.id)
        if twins:
            return Identity(Outcome.DUPLICATE, None, (anchor, *twins))
        return _with_code(anchor, by_code)

    mine = _distinct(u for u in (*by_email, by_code) if ours(u))
    if len(mine) > 1:
        return Identity(Outcome.DUPLICATE, None, mine)
    if mine:
        return _with_code(mine[0], by_code)

    code_holder = by_code if stranger(by_code) and not code_chosen_here else None
    strangers = () if decision.separate else _distinct(u for u in (*by_email, code_holder) if stranger(u))
    if strangers:
        return Identity(Outcome.FOREIGN, None, strangers)
    if by_code is not None:
        return Identity(Outcome.CODE_TAKEN, None, (by_code,))
    return Identity(Outcome.CREATE)


def _with_code(user: PtiUser, by_code: PtiUser | None) -> Identity:
    """`user` is the customer's; the stored code is usable unless another user holds it."""
    if by_code is not None and by_code.id != user.id:
        return Identity(Outcome.CODE_TAKEN, user, (by_code,))
    return Identity(Outcome.FOUND, user)


def _distinct(users: Iterable[PtiUser | None]) -> tuple[PtiUser, ...]:
    return tuple({u.id: u for u in users if u is not None}.values())
