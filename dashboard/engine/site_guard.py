"""Per-site protection for PTI, kept in Redis because RQ forks a process per job (reliability.md).

- Concurrency limit: at most `limit` PTI calls in flight per site across every worker (a lease semaphore).
- Retry-After: after a 429 no call goes to that site until the pause expires.
- Circuit breaker: after `threshold` consecutive retryable failures the site is paused for `cooldown` seconds.
  Then it is half-open: one caller takes the probe token and makes the trial call while every other caller is told
  to wait (`circuit_open`, a short Retry-After). The probe's success closes the breaker and the backlog drains at
  the site's limit; its failure opens the breaker again. A probe whose caller dies frees itself after PROBE_S.
One site's outage therefore fails fast for that site only and never ties up the workers other sites need.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import redis
from rq import Queue

from ..config import DEFAULT_PTI_SITE_CONCURRENCY
from ..jobqueue import JOB_RESULT_TTL_S, RELAY, URGENT
from ..pti import PtiRetryableError

T = TypeVar("T")
log = logging.getLogger(__name__)

BREAKER_THRESHOLD = 10  # consecutive retryable failures that open it (a 20% fault storm seldom makes 10)
BREAKER_COOLDOWN_S = 15.0
LEASE_S = 60  # a crashed holder's slot frees itself after this long
SLOT_WAIT_S = 30.0  # how long a call waits for a free slot before giving up (retryable)
PROBE_S = 30.0  # a half-open site's probe token: longer than one PTI call with its time-outs
HALF_OPEN_TTL_S = 3600  # a site nobody calls for an hour starts closed again
PROBE_WAIT_S = 1.0  # the Retry-After told to the callers waiting for the probe
RECOVERED_RELAY_JOB_ID = "pti-sync-relay-site-recovered"  # one relay asked for at a time when a site comes back

# What a site's guard lets the relay send it (site_readiness).
GO, WAIT, PROBE = "go", "wait", "probe"
RECOVERED_S = 60  # after a probe got through, the relay re-drives the outage's retries at once for this long
OUTAGE_REASONS = ("pti_unreachable", "pti_server_error", "circuit_open", "pti_rate_limited")  # a site's, not a user's

# One PTI call's way in, in one round trip: admission (the Retry-After pause, the open breaker, then, half-open, the
# probe token), then a slot. Urgent calls (a payment's unlock, a lockout) go first for a slot: while one waits (it is
# in the `urgent-waiting` set), other calls do not take a slot that frees, so an unlock never queues behind a bulk
# push's calls; with none waiting, every slot serves whatever comes.
# KEYS: retry-after, breaker-open, half-open, probe, slots, urgent-waiting.
# ARGV: probe token, probe ms, probe wait ms, then _ACQUIRE's (now, lease, limit, token, urgent, urgent mark s).
# Returns {0, 0, slot} (go), {1, ms} (rate limited), {2, ms} (breaker open or another caller probes), {3, 0, slot}
# (go: this call is the probe); slot is 1 when the call holds a slot, 0 when it must wait for one (try_slot).
_ACQUIRE_BODY = """
local key, waiting = KEYS[K], KEYS[K + 1]
local now, lease, limit, token, urgent = tonumber(ARGV[A]), tonumber(ARGV[A + 1]), tonumber(ARGV[A + 2]),
  ARGV[A + 3], ARGV[A + 4]
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
redis.call('ZREMRANGEBYSCORE', waiting, '-inf', now)
local slot = 0
if urgent == '1' or redis.call('ZCARD', waiting) == 0 then
  if redis.call('ZCARD', key) < limit then
    redis.call('ZADD', key, now + lease, token)
    redis.call('EXPIRE', key, math.ceil(lease) + 1)
    redis.call('ZREM', waiting, token)
    slot = 1
  elseif urgent == '1' then
    redis.call('ZADD', waiting, now + tonumber(ARGV[A + 5]), token)
    redis.call('EXPIRE', waiting, math.ceil(tonumber(ARGV[A + 5])) + 1)
  end
end
"""
_ACQUIRE = "local K, A = 1, 1" + _ACQUIRE_BODY + "return slot"
_ENTER = """
local rate = redis.call('PTTL', KEYS[1])
if rate > 0 then return {1, rate} end
local open = redis.call('PTTL', KEYS[2])
if open > 0 then return {2, open} end
local kind = 0
if redis.call('EXISTS', KEYS[3]) == 1 then
  if not redis.call('SET', KEYS[4], ARGV[1], 'NX', 'PX', ARGV[2]) then return {2, tonumber(ARGV[3])} end
  kind = 3
end
local K, A = 5, 4""" + _ACQUIRE_BODY + "return {kind, 0, slot}"

# A call's way out, in one round trip: its slot given back and, when a call holds it no more, a signal pushed for
# the calls waiting for a slot (`_wait_for_slot` blocks on it instead of asking again and again); after an answer
# from PTI, the breaker's failure count and half-open marks cleared.
# KEYS: slots, freed, failures, half-open, probe. ARGV: token, limit, signal ms, closed (1 or 0).
_LEAVE = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('RPUSH', KEYS[2], 1)
  redis.call('LTRIM', KEYS[2], -tonumber(ARGV[2]), -1)
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
if ARGV[4] == '1' then redis.call('DEL', KEYS[3], KEYS[4], KEYS[5]) end
"""
URGENT_WAIT_MARK_S = 1.0  # an urgent caller's place in line lapses unless it asks again within this long
URGENT_POLL_CAP_S = 0.01  # an urgent call waiting for a slot asks at least this often
SLOT_SIGNAL_WAIT_S = 0.2  # a bulk call waiting for a slot blocks on the freed signal this long at most, then asks
FREED_SIGNAL_MS = 2000  # a freed signal nobody waited for lapses after this long


PTI_DOWN = "circuit_open"  # the breaker is open: calls to the site wait out its pause
PTI_PROBING = "half_open"  # the pause is over; the next call tests PTI and closes the breaker if it answers
PTI_RATE_LIMITED = "pti_rate_limited"  # PTI asked for a pause (429 Retry-After)


SITE_FLAGS = ("retry-after", "breaker-open", "half-open", "probe", "recovered")


def site_flags(conn: redis.Redis, site_ids: list[int]) -> dict[int, dict[str, bool]]:
    """Each site guard's state as it stands (the keys of SITE_FLAGS that exist), for every site in one round trip.
    Read-only; a Redis error is the caller's."""
    pipe = conn.pipeline(transaction=False)
    for site_id in site_ids:
        for flag in SITE_FLAGS:
            pipe.exists(f"pti-sync:site:{site_id}:{flag}")
    answers = pipe.execute()
    width = len(SITE_FLAGS)
    return {site_id: dict(zip(SITE_FLAGS, map(bool, answers[width * i:width * (i + 1)]), strict=True))
            for i, site_id in enumerate(site_ids)}


def outages(conn: redis.Redis, site_ids: list[int]) -> dict[int, str]:
    """For the dashboard: the sites whose PTI calls are held back now, and why (PTI_DOWN, PTI_PROBING,
    PTI_RATE_LIMITED)."""
    found = {}
    for site_id, flags in site_flags(conn, site_ids).items():
        if flags["breaker-open"]:
            found[site_id] = PTI_DOWN
        elif flags["half-open"]:
            found[site_id] = PTI_PROBING
        elif flags["retry-after"]:
            found[site_id] = PTI_RATE_LIMITED
    return found


@dataclass
class SiteGuard:
    conn: redis.Redis
    site_id: int
    limit: int = DEFAULT_PTI_SITE_CONCURRENCY
    urgent: bool = False  # the calls of a push that locks or unlocks a unit now: first for a free slot
    threshold: int = BREAKER_THRESHOLD
    cooldown: float = BREAKER_COOLDOWN_S

    @property
    def _prefix(self) -> str:
        return f"pti-sync:site:{self.site_id}"

    def paused_for(self) -> tuple[str, float] | None:
        """("pti_rate_limited" | "circuit_open", seconds left) while calls to the site must wait."""
        pipe = self.conn.pipeline()
        pipe.pttl(f"{self._prefix}:retry-after")
        pipe.pttl(f"{self._prefix}:breaker-open")
        rate, breaker = pipe.execute()
        if rate and rate > 0:
            return "pti_rate_limited", rate / 1000
        if breaker and breaker > 0:
            return "circuit_open", breaker / 1000
        return None

    def breaker_open(self) -> bool:
        return bool(self.conn.exists(f"{self._prefix}:breaker-open"))

    def try_slot(self, token: str) -> bool:
        """One more try for a slot held as `token`; an urgent caller that finds none keeps its place in line."""
        return bool(self.conn.eval(_ACQUIRE, 2, f"{self._prefix}:slots", f"{self._prefix}:urgent-waiting",
                                   time.time(), LEASE_S, self.limit, token, int(self.urgent), URGENT_WAIT_MARK_S))

    def _enter(self, operation: str, token: str) -> tuple[bool, bool]:
        """Admission and a first try for a slot, in one round trip: raises while the site must wait; else (whether
        this call is the half-open site's probe, whether it holds a slot now)."""
        keys = [f"{self._prefix}:{name}" for name in ("retry-after", "breaker-open", "half-open", "probe", "slots",
                                                      "urgent-waiting")]
        verdict = self.conn.eval(_ENTER, len(keys), *keys, uuid.uuid4().hex, int(PROBE_S * 1000),
                                 int(PROBE_WAIT_S * 1000), time.time(), LEASE_S, self.limit, token,
                                 int(self.urgent), URGENT_WAIT_MARK_S)
        kind = int(verdict[0])
        if kind in (1, 2):
            reason = "pti_rate_limited" if kind == 1 else "circuit_open"
            raise PtiRetryableError(reason, operation=operation, retry_after=int(verdict[1]) / 1000)
        return kind == 3, bool(verdict[2])

    def _wait_for_slot(self, operation: str, token: str) -> None:
        """Every slot is taken: wait for one, until SLOT_WAIT_S. A bulk call blocks on the signal a call leaving
        its slot pushes (one waiter woken a slot, the longest waiting first), asking again at least every
        SLOT_SIGNAL_WAIT_S (a crashed holder's lease lapses without a signal). An urgent call asks every few
        milliseconds instead: a signal may go to a bulk call, which cannot take the slot while the urgent one waits."""
        deadline = time.monotonic() + SLOT_WAIT_S
        delay = 0.002
        freed = f"{self._prefix}:freed"
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                if self.urgent:
                    self.conn.zrem(f"{self._prefix}:urgent-waiting", token)
                raise PtiRetryableError("pti_unreachable", operation=operation, retry_after=1.0)
            if self.urgent:
                time.sleep(min(delay, left))
                delay = min(delay * 2, URGENT_POLL_CAP_S)
            else:
                self.conn.blpop([freed], timeout=max(0.001, min(SLOT_SIGNAL_WAIT_S, left)))
            if self.try_slot(token):
                return

    def _leave(self, token: str, answered: bool) -> None:
        """Give the slot back (and wake a waiting call); `answered`: PTI answered, so the breaker's count of failures
        in a row starts again (the half-open marks go too)."""
        p = self._prefix
        self.conn.eval(_LEAVE, 5, f"{p}:slots", f"{p}:freed", f"{p}:failures", f"{p}:half-open", f"{p}:probe",
                       token, self.limit, FREED_SIGNAL_MS, int(answered))

    def call(self, operation: str, fn: Callable[..., T], *args, **kwargs) -> T:
        """Run one PTI call under the site's limit, pause and breaker; record its outcome for the breaker. Two
        Redis round trips when a slot is free: the way in and the way out."""
        token = uuid.uuid4().hex
        probe, holding = self._enter(operation, token)
        try:
            if not holding:
                self._wait_for_slot(operation, token)
            holding = True
            try:
                result = fn(*args, **kwargs)
            except PtiRetryableError as exc:
                self._failed(exc)
                raise
        except PtiRetryableError:
            if holding:
                self._leave(token, answered=False)
            if probe:  # the breaker is open again, PTI asked for a pause, or no slot was free: the next one probes
                self.conn.delete(f"{self._prefix}:probe")
            raise
        except BaseException:
            if holding:
                self._leave(token, answered=False)
            if probe:  # PTI answered (or we failed before asking): the site is up as far as the breaker knows
                self._recovered()
            raise
        self._leave(token, answered=True)
        if probe:
            self._recovered()
        return result

    def _recovered(self) -> None:
        """The probe got through: close the breaker and have the relay send the site's backlog now, not at its next
        run (the accounts that met the open breaker wait for the relay, not for a job each)."""
        self._closed()
        try:  # on the guard's own connection: a probe may run in a thread without the app's context
            self.conn.set(f"{self._prefix}:recovered", 1, ex=RECOVERED_S)
            Queue(URGENT, connection=self.conn).enqueue(RELAY, job_id=RECOVERED_RELAY_JOB_ID,
                                                        result_ttl=JOB_RESULT_TTL_S)
        except redis.RedisError as exc:  # the cron's relay comes within 15 s anyway
            log.warning("could not ask for a relay after site %s recovered (%s)", self.site_id,
                        exc.__class__.__name__)

    def _closed(self) -> None:
        pipe = self.conn.pipeline()
        pipe.delete(f"{self._prefix}:failures", f"{self._prefix}:half-open", f"{self._prefix}:probe")
        pipe.execute()

    def _failed(self, exc: PtiRetryableError) -> None:
        if exc.reason == "pti_rate_limited" and exc.retry_after:
            self.conn.set(f"{self._prefix}:retry-after", 1, px=max(1, int(exc.retry_after * 1000)))
            return
        failures = self.conn.incr(f"{self._prefix}:failures")
        self.conn.expire(f"{self._prefix}:failures", int(self.cooldown * 4) + 1)
        if failures >= self.threshold:
            pipe = self.conn.pipeline()
            pipe.set(f"{self._prefix}:breaker-open", 1, px=int(self.cooldown * 1000))
            # Half-open after the pause: one probe goes; one more failure opens the breaker again, a success closes it.
            pipe.set(f"{self._prefix}:failures", self.threshold - 1, ex=int(self.cooldown * 4) + 1)
            pipe.set(f"{self._prefix}:half-open", 1, ex=HALF_OPEN_TTL_S)
            pipe.execute()


def site_readiness(conn: redis.Redis, site_ids: list[int]) -> tuple[dict[int, str], list[int]]:
    """For the relay, per site: GO (send its owed accounts), WAIT (PTI asked for a pause, the breaker is open, or
    its half-open probe is out: send nothing) or PROBE (half-open, nobody probing: send one account); and the sites
    whose probe got through in the last RECOVERED_S (their outage's retries go now). One round trip for all."""
    states, recovered = {}, []
    for site_id, flags in site_flags(conn, site_ids).items():
        paused = flags["retry-after"] or flags["breaker-open"]
        half_open = flags["half-open"]
        states[site_id] = WAIT if paused or (half_open and flags["probe"]) else PROBE if half_open else GO
        if flags["recovered"] and states[site_id] == GO:
            recovered.append(site_id)
    return states, recovered
