"""R5 in a bulk push: an RQ worker is SIGKILLed (with its work horse) while it runs one of a site push's batches
(`reconcile_batch` on the bulk queue), with several sites pushing at once. The batch's heartbeat stops, the relay
takes its accounts over within two relay periods, and every site converges with no PTI user created twice.
(tests/engine/test_recovery.py covers a single reconcile killed mid-job and Redis restarted empty, for one site.)
"""

from __future__ import annotations

import time

import pytest
from rq import Worker
from sqlalchemy import select

from dashboard.extensions import db
from dashboard.jobqueue import RECONCILE_BATCH, get_redis
from dashboard.models import PtiAccount, Site
from sim.pti import WRITES
from tests.chaos.conftest import (
    assert_converged,
    assert_no_user_created_twice,
    chaos_config,
    fetch,
    progress,
    wait_converged,
    wait_for,
)

pytestmark = pytest.mark.chaos

WRITE_LATENCY_MS = 60  # PTI writes are slow enough that a batch is still running when it is killed
CONVERGE_S = 240.0


def running_batch(stack) -> tuple[str, str] | None:
    """(stack process name, job id) of a worker running a site push's batch that has pushed some accounts."""
    by_pid = {proc.popen.pid: proc.name for proc in stack.procs if proc.name.startswith("worker")}
    for worker in Worker.all(connection=get_redis()):
        job = worker.get_current_job()
        if job is not None and job.func_name == RECONCILE_BATCH and worker.pid in by_pid:
            return by_pid[worker.pid], job.id
    return None


def test_a_worker_killed_inside_a_bulk_batch_is_taken_over_by_the_relay(start_stack):
    stack = start_stack(chaos_config(sites=3, units=130, rented=120, workers=3))
    stack.pti_faults(latency_ms=WRITE_LATENCY_MS, operations=sorted(WRITES))
    stack.sg_config(deliver=False)  # no echoes of our own write-backs: one forked no-op job each (see conftest)
    page = stack.dashboard("manager")
    stack.push_all("chaos-bulk")

    wait_for(lambda: progress(stack)[0] >= 30, "30 accounts pushed", 120)
    name, job_id = wait_for(lambda: running_batch(stack), "a worker running a bulk batch", 60)
    stack.kill(name)
    killed = time.monotonic()
    stack.respawn(name)  # as a supervisor (systemd, the Procfile's runner) restarts it
    done, total = progress(stack)
    assert done < total, "the push had finished before the kill"

    # The dashboard shows the push is not done: the sites are catching up, with rentals pending.
    status, html, _ = fetch(page, "/")
    assert status == 200 and "Catching up" in html

    result = wait_converged(stack, killed, CONVERGE_S)
    assert_converged(stack)
    assert_no_user_created_twice(stack)
    db.session.rollback()
    assert len(db.session.scalars(select(Site)).all()) == 3
    assert stack.count(PtiAccount) == total
    print(f"\nkilled batch {job_id} with {total - done} accounts owed; converged {result.seconds:.1f} s after the "
          f"kill; longest an owed account waited with no live job: {result.longest_unheld_s:.1f} s")
