"""R11: Redis hangs mid-push. The stack's redis-server is SIGSTOPped for 30 s while a bulk push is running, then
SIGCONTinued. A hung Redis keeps its connections open and answers nothing, so only a time-out on every Redis call
ends a wait: the dashboard answers within its bound and says the job queue is not answering, the workers' jobs give
up within seconds instead of blocking (holes 2 of issue 10), and once Redis answers again everything converges
through the relay, with nothing owed held by no job for more than two relay periods.
"""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from dashboard.extensions import db
from dashboard.models import SyncAttempt, utcnow
from sim.pti import WRITES
from tests.chaos.conftest import (
    PAGE_BOUND_S,
    assert_converged,
    assert_no_user_created_twice,
    chaos_config,
    fetch,
    progress,
    wait_converged,
    wait_for,
)

pytestmark = pytest.mark.chaos

HANG_S = 30.0
WRITE_LATENCY_MS = 40
CONVERGE_S = 180.0


def test_a_redis_that_hangs_for_30_s_mid_push_costs_seconds_and_everything_converges(start_stack):
    stack = start_stack(chaos_config(sites=2, units=170, rented=150, workers=3))
    stack.pti_faults(latency_ms=WRITE_LATENCY_MS, operations=sorted(WRITES))
    stack.sg_config(deliver=False)  # no echoes of our own write-backs: one forked no-op job each (see conftest)
    page = stack.dashboard("manager")
    status, html, _ = fetch(page, "/")
    assert status == 200 and 'data-outage="redis"' not in html
    stack.push_all("chaos-bulk")
    wait_for(lambda: progress(stack)[0] >= 40, "40 accounts pushed", 120)

    stack.pause("redis")
    hung = time.monotonic()
    hung_at = utcnow()
    try:
        done, total = progress(stack)
        assert done < total, "the push had finished before Redis hung"
        # The dashboard answers within its bound and shows that the job queue is not answering.
        status, html, took = fetch(page, "/")
        assert status == 200, f"the overview answered {status} while Redis hung"
        assert 'data-outage="redis"' in html, "the overview did not show Redis not answering"
        assert took < PAGE_BOUND_S, f"the overview took {took:.1f} s while Redis hung"
        # The workers' jobs give up on Redis within its time-out: they record failed attempts in the database
        # while Redis is still hung, instead of blocking on a socket until it answers.
        wait_for(lambda: attempts_failing_on_redis(hung_at), "a job to give up on the hung Redis and say so",
                 HANG_S - (time.monotonic() - hung) - 2)
        time.sleep(max(0.0, HANG_S - (time.monotonic() - hung)))
    finally:
        stack.resume("redis")
    resumed = time.monotonic()

    status, html, _ = fetch(page, "/")
    assert status == 200 and 'data-outage="redis"' not in html
    result = wait_converged(stack, resumed, CONVERGE_S)
    assert_converged(stack)
    assert_no_user_created_twice(stack)
    print(f"\nRedis hung {resumed - hung:.0f} s with {total - done} of {total} accounts owed; converged "
          f"{result.seconds:.1f} s after it answered again; longest an owed account waited with no live job: "
          f"{result.longest_unheld_s:.1f} s")


def attempts_failing_on_redis(since) -> int:
    db.session.rollback()
    try:
        details = db.session.scalars(select(SyncAttempt.detail).where(
            SyncAttempt.started_at >= since, SyncAttempt.reason == "unexpected_error")).all()
        return sum(1 for d in details if d and ("Redis" in d or "Timeout" in d or "ConnectionError" in d))
    finally:
        db.session.rollback()
