"""Webhook acknowledgement: how fast the product answers Storeganise's signed webhooks under a steady load.

20,000 signed deliveries (unique ids, mostly of types the product enqueues) at a steady 300/s against the product
served by gunicorn as in production (Procfile: 4 sync workers, access log on), on a fresh PostgreSQL database when
one answers (else SQLite) and a Redis of its own; no RQ worker drains the queues, so only the receiver is measured.
The same load then goes to a bare endpoint served by the same gunicorn (a WSGI function that answers 200 at once),
to separate the receiver's own cost from the server's and this machine's.

Target: p99 ≤ 10 ms and p99 ≤ 2 × the bare endpoint's p99; ratio = max(p99 / 10, bare_ratio / 2) (≤ 1 passes).
Environment: BENCH_WEBHOOKS [20000], BENCH_RATE per second [300], BENCH_WEB_WORKERS [4], BENCH_DATABASE=sqlite.
"""

from __future__ import annotations

import http.client
import random
import threading
import time
import urllib.parse
import uuid

from bench.stack import WEBHOOK_PATH, Stack, StackConfig, env_float, env_int, percentile, report, say, signed_webhook
from dashboard import create_app
from dashboard.models import WebhookDelivery
from dashboard.storeganise import SIGNATURE_HEADER

ENTRY_POINT = "bench.webhook_ack:served_app()"  # what gunicorn serves: this module's served_app
BARE_PATH = "/_bench/bare"
API_URL = "https://bench.storeganise.com/api/v1/admin"
TARGET_P99_MS = 10.0
TARGET_BARE_FACTOR = 2.0
SENDERS = 16  # client threads; at 300/s and a few ms per request only a handful are ever busy
WARMUP = 300  # requests sent before each measured run
REQUEST_TIMEOUT_S = 10.0
SCHEDULE_LEAD_S = 0.2  # the first request leaves this long after the call, once every sender thread has started
# Types and weights: mostly what the product enqueues (overdue ones to the urgent queue), some it ignores.
EVENT_MIX = [
    ("unitRental.updated", 40), ("unitRental.markOverdue", 15), ("unitRental.unmarkOverdue", 10),
    ("job.unit_moveIn.completed", 10), ("job.unit_moveOut.completed", 8), ("user.updated", 7),
    ("invoice.updated", 10),
]
IGNORED = {"invoice.updated"}  # recorded, not enqueued


def served_app():
    """gunicorn entry point: the product, plus the bare endpoint on the same server and workers."""
    product = create_app()

    def app(environ, start_response):
        if environ.get("PATH_INFO") == BARE_PATH:
            start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
            return [b"ok"]
        return product(environ, start_response)

    return app


def config(web_workers: int) -> StackConfig:
    """Only the database, Redis and gunicorn as in production (Procfile: access log on): no RQ worker drains the
    queues, no simulator, no business."""
    return StackConfig(web_app=ENTRY_POINT, web_workers=web_workers, access_log=True, workers=0, urgent_workers=0,
                       business=False, pti=False, storeganise=False)


def bodies(count: int, seed: int = 4) -> list[tuple[bytes, str, str]]:
    """(body, signature, type) for `count` deliveries with unique ids, signed as Storeganise signs them."""
    rng = random.Random(seed)
    types = rng.choices([t for t, _ in EVENT_MIX], weights=[w for _, w in EVENT_MIX], k=count)
    out = []
    for event_type in types:
        data = {"unitRentalId": uuid.uuid4().hex[:24]}
        if event_type == "unitRental.updated":
            data["changedKeys"] = ["customFields.pti_synced"]
        out.append((*signed_webhook(event_type, data, API_URL), event_type))
    return out


def steady_load(url: str, requests: list[tuple[bytes, str] | None], rate: float) -> tuple[list[float], int]:
    """Send `requests` (body and signature, or None for a GET) at a fixed schedule of `rate` per second.

    Returns the latencies (ms, from connecting to the complete answer) and how many answers were not 200. Bounded:
    every thread stops when the list is used up. The client is the standard library's: httpx costs several times
    more CPU per request, which on a small machine would be measured as the server's latency.
    """
    parts = urllib.parse.urlsplit(url)
    latencies: list[float] = []
    failures = 0
    lock = threading.Lock()
    cursor = iter(range(len(requests)))
    start = time.perf_counter() + SCHEDULE_LEAD_S

    def send(item: tuple[bytes, str] | None) -> int:
        # A new connection per request, as gunicorn's sync workers close each one; http.client sends headers and
        # body in one segment, so Nagle's algorithm never waits for a delayed ACK.
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=REQUEST_TIMEOUT_S)
        try:
            if item is None:
                conn.request("GET", parts.path)
            else:
                conn.request("POST", parts.path, body=item[0],
                             headers={"Content-Type": "application/json", SIGNATURE_HEADER: item[1]})
            response = conn.getresponse()
            response.read()
            return response.status
        finally:
            conn.close()

    def sender() -> None:
        nonlocal failures
        while True:
            with lock:
                index = next(cursor, None)
            if index is None:
                return
            delay = start + index / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            sent = time.perf_counter()
            try:
                status = send(requests[index])
            except OSError:
                status = 0
            elapsed = (time.perf_counter() - sent) * 1000
            with lock:
                latencies.append(elapsed)
                failures += status != 200

    threads = [threading.Thread(target=sender, name=f"sender-{i}") for i in range(SENDERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, failures


def main() -> str:
    count = env_int("BENCH_WEBHOOKS", 20_000)
    rate = env_float("BENCH_RATE", 300)
    web_workers = env_int("BENCH_WEB_WORKERS", 4)
    deliveries = bodies(WARMUP + count)
    known = sum(t not in IGNORED for *_, t in deliveries)
    with Stack(config(web_workers)) as stack:
        say(f"webhook_ack: {count} webhooks at {rate:.0f}/s, gunicorn {web_workers} workers, {stack.database}")
        bare_url, hook_url = stack.web_url + BARE_PATH, stack.web_url + WEBHOOK_PATH
        steady_load(bare_url, [None] * WARMUP, rate)
        bare, bare_failures = steady_load(bare_url, [None] * count, rate)
        signed = [(body, signature) for body, signature, _ in deliveries]
        steady_load(hook_url, signed[:WARMUP], rate)
        hooks, failures = steady_load(hook_url, signed[WARMUP:], rate)
        recorded, queued = stack.count(WebhookDelivery), sum(stack.queue_depths().values())
    say(f"bare: {len(bare)} requests, {bare_failures} not 200; webhooks: {len(hooks)} requests, {failures} not 200; "
        f"{recorded} deliveries recorded, {queued} jobs enqueued (expected {len(deliveries)} and {known})")
    if failures or bare_failures or recorded != len(deliveries) or queued != known:
        say("webhook_ack: some deliveries were refused or lost")
    p99, p50, bare_p99 = percentile(hooks, 99), percentile(hooks, 50), percentile(bare, 99)
    bare_ratio = p99 / bare_p99
    ratio = max(p99 / TARGET_P99_MS, bare_ratio / TARGET_BARE_FACTOR)
    return report("webhook_ack", p99_ms=f"{p99:.2f}", p50_ms=f"{p50:.2f}", bare_p99_ms=f"{bare_p99:.2f}",
                  bare_ratio=f"{bare_ratio:.2f}", ratio=f"{ratio:.2f}")


if __name__ == "__main__":
    main()
