"""The worker process: its long wait on the queues never lifts the short Redis time-out the jobs rely on."""

from __future__ import annotations

from dashboard.jobqueue import REDIS_SOCKET_TIMEOUT_S, get_redis
from jobs.worker import build_worker


def test_jobs_keep_the_apps_redis_time_out_while_the_worker_waits_long(app):
    jobs_connection = get_redis()  # what the work horses inherit and every job uses
    worker = build_worker()
    assert worker.connection.connection_pool.connection_kwargs["socket_timeout"] > 60  # RQ's wait on the queues
    assert jobs_connection.connection_pool.connection_kwargs["socket_timeout"] == REDIS_SOCKET_TIMEOUT_S
    assert get_redis() is jobs_connection
