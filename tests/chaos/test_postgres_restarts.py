"""R11: PostgreSQL restarts mid-push. The stack runs on a PostgreSQL server of its own (bench.stack.OwnPostgres:
initdb in a temporary folder, run as the postgres user), which is stopped (`pg_ctl stop -m fast`, ending every
session) while a bulk push is running and started again. The dashboard says the database is not answering meanwhile;
afterwards the pooled connections are replaced (a rested one is pinged before use, one dropped a moment before
fails once as a disconnect and the pool starts afresh: extensions.ping_when_rested), the jobs that died are
re-driven by the relay, and everything converges with no PTI user created twice.
"""

from __future__ import annotations

import time

import pytest

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

DOWN_S = 10.0
WRITE_LATENCY_MS = 40
CONVERGE_S = 180.0


def test_postgresql_restarted_mid_push_and_everything_converges(start_stack):
    stack = start_stack(chaos_config(sites=2, units=170, rented=150, workers=3, database="own-postgres"))
    stack.pti_faults(latency_ms=WRITE_LATENCY_MS, operations=sorted(WRITES))
    stack.sg_config(deliver=False)  # no echoes of our own write-backs: one forked no-op job each (see conftest)
    page = stack.dashboard("manager")
    stack.push_all("chaos-bulk")
    wait_for(lambda: progress(stack)[0] >= 40, "40 accounts pushed", 120)
    done, total = progress(stack)
    assert done < total, "the push had finished before PostgreSQL stopped"

    stack.postgres.stop("fast")
    stopped = time.monotonic()
    try:
        status, html, took = fetch(page, "/")
        assert status == 503, f"the overview answered {status} while the database was down"
        assert "The database is not answering" in html
        assert took < PAGE_BOUND_S, f"the overview took {took:.1f} s while the database was down"
        time.sleep(max(0.0, DOWN_S - (time.monotonic() - stopped)))
    finally:
        stack.postgres.start()
    restarted = time.monotonic()

    status, html, _ = fetch(page, "/")
    assert status == 200, f"the overview still answers {status} after PostgreSQL came back"
    result = wait_converged(stack, restarted, CONVERGE_S)
    assert_converged(stack)
    assert_no_user_created_twice(stack)
    print(f"\nPostgreSQL down {restarted - stopped:.0f} s with {total - done} of {total} accounts owed; converged "
          f"{result.seconds:.1f} s after it was back; longest an owed account waited with no live job: "
          f"{result.longest_unheld_s:.1f} s")
