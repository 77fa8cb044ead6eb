"""The load benchmark (bench/load.py), end to end and small: the whole stack, a few operators, a few seconds.

Checks the machinery, never a timing: locust logs the operators in through the real form and they browse without
an error, every planned webhook is delivered and accepted, and every rental an overdue, payment, move-in or move-out
touched ends up at the PTI simulator as Storeganise holds it.
"""

from __future__ import annotations

import pytest

from bench.load import Settings, run

pytestmark = pytest.mark.slow


def test_a_short_load_has_no_error_and_every_effect_reaches_pti():
    result = run(Settings(users=3, rate=6, duration_s=6, sites=1, rentals=40, workers=2, web_workers=2,
                          think_min_s=0.2, think_max_s=0.5, spawn_rate=10, latency_ms=5, converge_timeout_s=180,
                          seed=3))
    assert result.errors == 0, result.failures
    assert result.sent == result.planned == 36
    assert {"login", "page", "partial", "webhook", "sim"} <= set(result.counts), result.counts
    assert result.counts["webhook"] == 36
    assert result.touched > 0
    assert result.reached == result.touched
