"""Access codes (keypad PINs): drawing a fresh one, refusing guessable ones, and masking one for display.

Codes are secrets: this module never logs, prints or formats a whole code into a message.
"""

from __future__ import annotations

import secrets
from collections.abc import Container
from random import Random

DEFAULT_CODE_LENGTH = 6
MIN_CODE_LENGTH = 4
MAX_CODE_LENGTH = 10  # PTI codes are integers 1..4294967295: ten digits at most
MAX_PTI_CODE = 4_294_967_295
MIN_DISTINCT_DIGITS = 3
NEAR_TRIVIAL_MIN_LENGTH = 6  # below this, "one digit away from a pattern" would rule out most codes
MAX_DRAWS = 10_000
SHOWN_DIGITS = 3
MASK = "•••"


class NoFreeCode(Exception):
    """Every draw hit a taken or trivial code: the site's code space is (nearly) full at this length."""


def generate_code(length: int = DEFAULT_CODE_LENGTH, taken: Container[int] = (),
                  rng: Random = secrets.SystemRandom()) -> int:
    """A new access code of exactly `length` digits (no leading zero), not in `taken` and not trivial."""
    if not MIN_CODE_LENGTH <= length <= MAX_CODE_LENGTH:
        raise ValueError(f"access code length must be {MIN_CODE_LENGTH}..{MAX_CODE_LENGTH}, not {length}")
    low, high = 10 ** (length - 1), min(10**length - 1, MAX_PTI_CODE)
    for _ in range(MAX_DRAWS):
        code = rng.randint(low, high)
        if code not in taken and not is_trivial(code):
            return code
    raise NoFreeCode(f"no free {length}-digit access code found in {MAX_DRAWS} draws")


def is_trivial(code: int) -> bool:
    """True for codes a stranger would try first, and for codes one keypress away from those.

    Trivial means any of:
    - a digit run with a constant step, modulo 10: 111111, 123456, 654321, 234567, 890123, 135791;
    - a block of at most half the code's length, repeated: 121212, 123123, 12341234;
    - a stuttered run: 112233, 998877, 111222;
    - fewer than three distinct digits: 112211, 900009;
    - for codes of six digits or more, one digit away from any of the first three: 111211, 123457, 121213.
    """
    digits = str(code)
    if _is_pattern(digits) or len(set(digits)) < MIN_DISTINCT_DIGITS:
        return True
    if len(digits) < NEAR_TRIVIAL_MIN_LENGTH:
        return False
    return any(_is_pattern(digits[:i] + d + digits[i + 1:])
               for i in range(len(digits)) for d in "0123456789" if d != digits[i])


def mask(code: int) -> str:
    """The code as staff may see it in lists: its last three digits only, e.g. •••456."""
    digits = str(code)
    return MASK + digits[-SHOWN_DIGITS:] if len(digits) > SHOWN_DIGITS else MASK


def _is_pattern(digits: str) -> bool:
    return _is_run(digits) or _is_repeated_block(digits) or _is_stuttered_run(digits)


def _is_run(digits: str) -> bool:
    steps = {(int(b) - int(a)) % 10 for a, b in zip(digits, digits[1:])}
    return len(steps) <= 1


def _is_repeated_block(digits: str) -> bool:
    n = len(digits)
    return any((digits[:size] * n)[:n] == digits for size in range(1, n // 2 + 1))


def _is_stuttered_run(digits: str) -> bool:
    for times in (2, 3):
        if len(digits) % times == 0:
            run = digits[::times]
            if "".join(d * times for d in run) == digits and _is_run(run):
                return True
    return False
