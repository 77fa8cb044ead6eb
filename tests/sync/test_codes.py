"""Access codes: fresh, the right length, never taken, never guessable, and only ever shown masked."""

from __future__ import annotations

import ast
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dashboard.sync import codes
from dashboard.sync.codes import MAX_PTI_CODE, NoFreeCode, generate_code, is_trivial, mask


@pytest.mark.parametrize("code", [
    111111, 999999, 123456, 654321, 234567, 890123, 135791, 121212, 123123, 112233, 998877, 111222,
    112211, 900009, 111112, 123457, 121213, 1234, 4321, 1111, 1212, 1122, 12341234,
])
def test_trivial_codes_are_recognised(code):
    assert is_trivial(code)


@pytest.mark.parametrize("code", [839274, 472915, 5839, 70318, 3948172605])
def test_ordinary_codes_are_not_trivial(code):
    assert not is_trivial(code)


@given(st.integers(min_value=4, max_value=10), st.sets(st.integers(1000, 9999999999), max_size=50), st.integers())
def test_generated_codes_have_the_length_asked_are_free_and_never_trivial(length, taken, seed):
    code = generate_code(length, taken, random.Random(seed))
    assert len(str(code)) == length
    assert 1 <= code <= MAX_PTI_CODE
    assert code not in taken
    assert not is_trivial(code)


def test_generated_codes_default_to_six_digits_drawn_from_secrets():
    assert len(str(generate_code())) == 6


FOUR_DIGIT_CODES = range(1000, 10000)
NON_TRIVIAL_FOUR_DIGIT_CODES = [code for code in FOUR_DIGIT_CODES if not is_trivial(code)]


@settings(max_examples=25)
@given(st.integers())
def test_generation_finds_the_few_free_codes_left_in_a_nearly_full_site(seed):
    free = set(random.Random(seed).sample(NON_TRIVIAL_FOUR_DIGIT_CODES, 40))
    assert generate_code(4, set(FOUR_DIGIT_CODES) - free, random.Random(seed)) in free


def test_generation_gives_up_clearly_when_no_code_is_free():
    with pytest.raises(NoFreeCode):
        generate_code(4, FOUR_DIGIT_CODES)


@pytest.mark.parametrize("length", [3, 11])
def test_code_length_must_fit_pti(length):
    with pytest.raises(ValueError, match="length"):
        generate_code(length)


@pytest.mark.parametrize(("code", "shown"), [(482913, "•••913"), (3948172605, "•••605"), (123, "•••")])
def test_codes_are_shown_masked_to_their_last_three_digits(code, shown):
    assert mask(code) == shown


def test_the_codes_module_never_logs_or_prints():
    tree = ast.parse(Path(codes.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)
                for alias in node.names} | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    called = {node.func.id for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    assert "logging" not in imported and "print" not in called
