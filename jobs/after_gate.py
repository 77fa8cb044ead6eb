"""What a delivery's job owes Storeganise after its gate, finished by a thread of the worker process.

A payment's or a lockout's job pushes to PTI and then writes the push's results back to Storeganise
(`jobs/events.py`). The customer waits only for the first half: once PTI holds the change, the write-back (a PUT a
rental and its bookkeeping, 0.08-0.16 s) would keep the urgent process from the next payment while that one waits
in Redis. So a worker process hands its write-backs to one thread of its own and takes the next job at once.

Nothing owed is only in this thread's memory: the push's results are owed in the database (`write_back_owed`, set in
the push's own transaction) until Storeganise accepted them, so a process killed with write-backs still waiting here
leaves them to the relay, as a killed job's. One thread a process keeps a process's write-backs in the order of its
jobs; across processes a rental's older value is never PUT after a newer one (`writeback.Fresh`). When the thread
falls behind (Storeganise slow or refusing), a job past `WAITING_AT_MOST` write-backs writes its own, as before,
so the lag stays bounded. On a warm shutdown the worker waits for what is handed over (`stop`).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable

from flask import Flask, current_app

from dashboard.extensions import db

log = logging.getLogger(__name__)

AFTER_GATE_EXTENSION = "pti_sync_after_gate"
WAITING_AT_MOST = 32  # write-backs handed over and not finished yet; past it a job writes its own
STOP_WAIT_S = 20.0  # on a warm shutdown; what is not written by then is still owed in the database

Task = Callable[[], None]


class AfterGate:
    """One thread finishing the write-backs a worker process's jobs hand over, each in an app context (and so a
    database session) of its own."""

    def __init__(self, app: Flask, waiting_at_most: int = WAITING_AT_MOST) -> None:
        self.app = app
        self.tasks: queue.Queue[Task | None] = queue.Queue(maxsize=waiting_at_most)
        self.pid = os.getpid()
        self.thread = threading.Thread(target=self._run, name="after-gate", daemon=True)
        self.thread.start()

    def hand_over(self, task: Task) -> bool:
        """Queue `task` for the thread; False (the caller runs it itself) when the thread is behind or gone."""
        if os.getpid() != self.pid or not self.thread.is_alive():
            return False
        try:
            self.tasks.put_nowait(task)
        except queue.Full:
            return False
        return True

    def wait(self) -> None:
        """Until every task handed over so far is finished (a test, a burst worker's end)."""
        self.tasks.join()

    def stop(self, timeout_s: float = STOP_WAIT_S) -> bool:
        """Finish what is handed over and end the thread; False when it did not finish within `timeout_s`."""
        try:
            self.tasks.put(None, timeout=timeout_s)
        except queue.Full:
            return False
        self.thread.join(timeout_s)
        return not self.thread.is_alive()

    def _run(self) -> None:
        while (task := self.tasks.get()) is not None:
            try:
                with self.app.app_context():
                    try:
                        task()
                    finally:
                        db.session.remove()
            except Exception:  # noqa: BLE001 - what it did not write is owed in the database: the relay retries it
                log.exception("a write-back after the gate failed; what it did not write stays owed")
            finally:
                self.tasks.task_done()
        self.tasks.task_done()


def start_after_gate() -> AfterGate:
    """In a worker process: the thread its jobs hand their write-backs to (`hand_over` finds it)."""
    runner = AfterGate(current_app._get_current_object())
    current_app.extensions[AFTER_GATE_EXTENSION] = runner
    return runner


def stop_after_gate() -> None:
    runner = current_app.extensions.pop(AFTER_GATE_EXTENSION, None)
    if runner is not None and not runner.stop():
        log.warning("the write-backs handed over after the gate did not finish in %.0f s: the relay writes the rest",
                    STOP_WAIT_S)


def hand_over(task: Task) -> bool:
    """Run `task` on this process's after-gate thread when it has one and room for it; False: run it yourself."""
    runner: AfterGate | None = current_app.extensions.get(AFTER_GATE_EXTENSION)
    return runner is not None and runner.hand_over(task)
