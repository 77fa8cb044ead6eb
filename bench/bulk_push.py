"""Bulk push: 10 sites × 1,000 rentals marked for a push at once; how close does the product get to PTI's limit?

The physical bound is PTI's own: the calls the push made (counted by the simulator) × the simulator's latency
÷ the concurrency the product may use (sites × per-site limit). ratio = wall / (1.3 × bound): ≤ 1 passes. The wall
ends when no account is owed a push (PTI as Storeganise wants); `settled_s` when the write-backs to Storeganise and
their echoes are done too, and the workers' CPU a customer counts everything until then.

Environment (defaults in brackets): BENCH_SITES [10], BENCH_RENTALS per site [1000], BENCH_UNITS per site
[rentals + 10%], BENCH_LATENCY_MS [50], BENCH_SITE_CONCURRENCY [4], BENCH_WORKERS RQ workers [sites + 2],
BENCH_STOREGANISE [1] (write-backs go to the Storeganise simulator, as in production), BENCH_ECHO [1] (the
Storeganise simulator sends the unitRental.updated / user.updated webhooks our own write-backs cause, as
Storeganise does; 0 switches them off by hand, and the BENCH line then says echoes=off), BENCH_CRON [0],
BENCH_TIMEOUT_S [420], BENCH_PTI_SERVER [gunicorn | werkzeug], BENCH_RESYNC [1] (then the same push again, every
rental in sync: `resync_calls_per_rental` against 0.05, `resync_ratio` = that ÷ 0.05).
"""

from __future__ import annotations

import os
import time

from bench.stack import (
    Stack,
    StackConfig,
    business_config,
    calls_by_operation,
    env_flag,
    env_float,
    report,
    say,
    workers_cpu_s,
)

HEADROOM = 1.3  # the wall time may exceed PTI's bound by this factor
RESYNC_CALLS_PER_RENTAL = 0.05  # the target for a push of rentals already in sync
IDLE_TIMEOUT_S = 300.0  # the first push's write-backs and their echoes, before the second push


def config() -> tuple[StackConfig, float]:
    cfg = business_config(storeganise=env_flag("BENCH_STOREGANISE", True),
                          pti_server=os.environ.get("BENCH_PTI_SERVER", "gunicorn"))
    return cfg, env_float("BENCH_LATENCY_MS", 50)


def main() -> str:
    cfg, latency_ms = config()
    timeout_s = env_float("BENCH_TIMEOUT_S", 420)
    with Stack(cfg) as stack:
        stack.pti_faults(latency_ms=latency_ms)
        echoes = cfg.storeganise and env_flag("BENCH_ECHO", True)
        if cfg.storeganise and not echoes:
            stack.http.post(f"{stack.sg_url}/_sim/config", json={"deliver": False}).raise_for_status()
        before = stack.pti_calls()
        cpu = stack.cpu_seconds()
        started = time.monotonic()
        accounts = stack.push_all("bench-bulk")
        marked = time.monotonic() - started
        say(f"bulk push: {accounts} accounts marked in {marked:.1f} s; queues {stack.queue_depths()}")
        try:
            stack.wait_converged(timeout_s)
        except TimeoutError as exc:  # still report: the wall time is then a lower bound
            say(f"bulk push did not converge: {exc}; wall_s below is a lower bound")
        wall = time.monotonic() - started
        after = stack.pti_calls()
        owed, failed = stack.owed()
        depths = stack.queue_depths()
        # The CPU a customer counts all the push caused: its write-backs to Storeganise and their echoes too, which
        # may still run once every account is pushed.
        stack.wait_idle(IDLE_TIMEOUT_S)
        settled = time.monotonic() - started
        stack.report_cpu(cpu)
        cpu_after = stack.cpu_seconds()
        again = resync(stack, timeout_s) if env_flag("BENCH_RESYNC", True) else {}
    worker_cpu = workers_cpu_s(cpu, cpu_after)
    calls = after["total"] - before["total"]
    by_op = calls_by_operation(before, after)
    rentals = cfg.sites * cfg.rented
    concurrency = cfg.sites * cfg.site_concurrency
    bound = calls * latency_ms / 1000 / concurrency
    ratio = wall / (HEADROOM * bound) if bound else float("inf")
    say(f"bulk push: {accounts} accounts, {failed} failed, queues after convergence {depths}; write-backs and "
        f"echoes done {settled - wall:.1f} s later")
    say("PTI calls by operation: " + ", ".join(f"{op} {n}" for op, n in sorted(by_op.items()) if n))
    return report("bulk_push", wall_s=f"{wall:.1f}", settled_s=f"{settled:.1f}", bound_s=f"{bound:.1f}",
                  calls=str(calls),
                  calls_per_rental=f"{calls / rentals:.2f}",
                  worker_cpu_ms_per_customer=f"{1000 * worker_cpu / accounts:.1f}" if accounts else "nan",
                  echoes="on" if echoes else "off", ratio=f"{ratio:.2f}",
                  **({"resync_wall_s": f"{again['wall']:.1f}",
                      "resync_calls_per_rental": f"{again['calls'] / rentals:.3f}",
                      "resync_worker_cpu_ms_per_customer": f"{1000 * again['cpu'] / again['accounts']:.1f}"
                      if again["accounts"] else "nan",
                      "resync_ratio": f"{again['calls'] / rentals / RESYNC_CALLS_PER_RENTAL:.2f}"} if again else {}))


def resync(stack: Stack, timeout_s: float) -> dict[str, float]:
    """The same push again once the first one's write-backs and echoes are done: every rental is in sync now, so a
    push should cost PTI little more than reading each site (target: RESYNC_CALLS_PER_RENTAL calls a rental)."""
    stack.wait_idle(IDLE_TIMEOUT_S)
    before, cpu = stack.pti_calls(), stack.cpu_seconds()
    started = time.monotonic()
    accounts = stack.push_all("bench-resync")
    try:
        stack.wait_converged(timeout_s)
    except TimeoutError as exc:
        say(f"the push of rentals in sync did not converge: {exc}; resync_wall_s is a lower bound")
    wall = time.monotonic() - started
    after, cpu_after = stack.pti_calls(), stack.cpu_seconds()
    by_op = calls_by_operation(before, after)
    say(f"push of rentals in sync: {accounts} accounts in {wall:.1f} s; PTI calls by operation: "
        + ", ".join(f"{op} {n}" for op, n in sorted(by_op.items()) if n))
    return {"wall": wall, "calls": after["total"] - before["total"], "accounts": accounts,
            "cpu": workers_cpu_s(cpu, cpu_after)}


if __name__ == "__main__":
    main()
