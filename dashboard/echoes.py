"""Our own writes to Storeganise come back as webhooks: recognised at the receiver and acknowledged without a job.

Every value we PUT is stored in the mirror (and committed) first, so handling its `unitRental.updated` or
`user.updated` echo would re-read the record, find it equal and ask for nothing: a forked job and two Storeganise
reads for nothing, one per write-back, which during a bulk push is most of the webhook traffic. So just before a PUT
the writer says which keys it is sending (`expect`); a delivery of that record whose `changedKeys` are all among
them is the echo (`is_echo`): it is recorded as "echo" and one write's expectation is used up, so only one delivery
per write is taken for an echo. Two writes of one record in quick succession (an overdue flip's PUT, then the
push's write-back) expect two echoes: the keys of both stand until the second comes back, so neither is taken for a
person's edit. Anything else (a key we did not send, a record we did not write, Redis not answering)
takes the normal path. The webhook carries no values, so a person's edit of one of the same fields that reaches us
before our own echo is taken for it; the echo itself then goes the normal path and re-reads the record, which
carries that person's change. (A guess about Storeganise's timing; docs/storeganise.md.)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import redis

from .jobqueue import get_redis

log = logging.getLogger(__name__)

# A hash: one field per changed key we sent (e.g. "customFields.pti_synced"), and WRITES, the echoes still to come.
ECHO_KEY = "pti-sync:echo:{entity}:{record}"
WRITES = "#writes"
ECHO_TTL_S = 60  # an echo arrives within seconds; after this an unused expectation is forgotten

# All of the delivery's changed keys are expected for the record: use one write's expectation up and say so.
_MATCH = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for i, key in ipairs(ARGV) do
  if redis.call('HEXISTS', KEYS[1], key) == 0 then return 0 end
end
if redis.call('HINCRBY', KEYS[1], '#writes', -1) <= 0 then redis.call('DEL', KEYS[1]) end
return 1
"""
# One write fewer to expect (its PUT failed, or changed nothing): no echo comes for it.
_WITHDRAW = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HINCRBY', KEYS[1], '#writes', -1) <= 0 then redis.call('DEL', KEYS[1]) end
return 1
"""


def expect(entity: str, record_id: str, custom_fields: Iterable[str]) -> None:
    """Before PUTting these custom fields of the record (entity "unitRental" or "user")."""
    keys = [f"customFields.{code}" for code in custom_fields]
    if not keys:
        return
    key = ECHO_KEY.format(entity=entity, record=record_id)
    try:
        pipe = get_redis().pipeline()
        pipe.hset(key, mapping=dict.fromkeys(keys, 1))
        pipe.hincrby(key, WRITES, 1)
        pipe.expire(key, ECHO_TTL_S)
        pipe.execute()
    except redis.RedisError:
        pass  # the echo takes the normal path: a job that finds nothing changed


def withdraw(entity: str, record_id: str) -> None:
    """The PUT failed, or changed nothing: no echo comes for it (the other writes' echoes are still expected)."""
    try:
        get_redis().eval(_WITHDRAW, 1, ECHO_KEY.format(entity=entity, record=record_id))
    except redis.RedisError:
        pass


def is_echo(entity: str, record_id: str, changed_keys: Iterable[str]) -> bool:
    """True when this delivery is the echo of our own write (one Redis round trip); the expectation is used up."""
    keys = list(changed_keys)
    if not keys or not record_id:
        return False
    try:
        return bool(get_redis().eval(_MATCH, 1, ECHO_KEY.format(entity=entity, record=record_id), *keys))
    except redis.RedisError as exc:
        log.info("could not check whether a delivery is our echo (%s): handling it", exc.__class__.__name__)
        return False
