"""A cache of provider answers keyed by the canonical request, so the same
person, company or address asked for twice within a day costs one call;
and in-flight coalescing, so two jobs asking at the same moment cause one
call. Entries live at most PROVIDER_CACHE_TTL_S (≤ 24 h, Clodura's limit)
from the moment the provider answered, and so do the copies jobs keep.
"""
from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from crm_enrich import keys
from crm_enrich.logs import log
from crm_enrich.queues import RELEASE_LOCK, TASK_TIME_LIMIT_S

# Held for the whole call: longer than any call can last (none outlives its
# task), so a slow answer (a Clearout verify may take minutes) is never
# asked for a second time by a job that thought the first caller gone.
COALESCE_LOCK_MS = TASK_TIME_LIMIT_S * 1000
COALESCE_WAIT_S = 2.0
COALESCE_RECHECK_S = 5.0   # a job that found the request in flight looks again this soon

# Take the in-flight marker if it is free, already ours (a redelivery of the
# same task), or left by an earlier task of the same job (ARGV[3], the
# owner's job part): a job's tasks run one at a time under its lock, so that
# task is gone (cancelled by a lost connection, killed) and no answer is
# coming from it. Without this the job's next task waited out the whole
# marker (240 s) for a request nobody was making.
_TAKE = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1]
   and (ARGV[3] == '' or string.sub(holder, 1, string.len(ARGV[3])) ~= ARGV[3]) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if holder and holder ~= ARGV[1] then return 2 end
return 1
"""


def job_owner(job_id: str, task_id: str) -> str:
    """The owner a job's task asks as: the job, then the task."""
    return f"{job_id}/{task_id}"


class AnswerPending(Exception):
    """Another job is asking the provider the same thing right now."""

    def __init__(self, endpoint: str, wait_s: float):
        super().__init__(f"{endpoint}: the same request is in flight")
        self.wait_s = wait_s


@dataclass
class Answer:
    value: Any  # the provider's answer, as JSON gives it back from the cache
    fetched_at: float
    from_cache: bool


def canonical_key(endpoint: str, request: dict) -> str:
    """Same meaning, same key: case and spacing of values do not matter."""
    norm = {k: (v.strip().lower() if isinstance(v, str) else v)
            for k, v in sorted(request.items()) if v not in (None, "")}
    digest = hashlib.sha256(json.dumps(norm, sort_keys=True).encode()).hexdigest()[:40]
    return keys.response_cache(endpoint, digest)


class ProviderCache:
    def __init__(self, client: redis.Redis, ttl_s: int):
        self.r = client
        self.ttl_s = ttl_s

    def get(self, key: str) -> Answer | None:
        raw = self.r.get(key)
        if raw is None:
            return None
        entry = json.loads(raw)
        return Answer(entry["value"], entry["fetched_at"], True)

    def put(self, endpoint: str, request: dict, value: object) -> None:
        """Cache an answer that came later (by callback); a first answer
        already cached keeps its own, earlier, expiry."""
        if self.ttl_s > 0:
            self.r.set(canonical_key(endpoint, request),
                       json.dumps({"value": value, "fetched_at": time.time()}), ex=self.ttl_s, nx=True)

    def fetch(self, endpoint: str, request: dict, call: Callable[[], object],
              keep: Callable[[Any], bool] = lambda value: True, owner: str = "",
              refresh: bool = False) -> Answer:
        """The cached answer, or call the provider once (`keep` says whether
        an answer is final enough to cache). `owner` names the caller: a
        redelivery of a task whose worker died while asking takes over, and
        so does a later task of the same job (`job_owner`)."""
        key = canonical_key(endpoint, request)
        cached = None if refresh else self.get(key)
        if cached:
            return cached
        lock = keys.response_in_flight(key)
        owner = owner or "anonymous"
        same_job = owner.split("/", 1)[0] + "/" if "/" in owner else ""
        taken = self.r.eval(_TAKE, 1, lock, owner, COALESCE_LOCK_MS, same_job)
        if taken == 2:  # a task of this job died mid-request: worth seeing in the logs
            log.info("provider.in_flight_taken_over", endpoint=endpoint, owner=owner)
        if not taken:
            deadline = time.monotonic() + COALESCE_WAIT_S
            while time.monotonic() < deadline:
                time.sleep(0.05)
                cached = self.get(key)
                if cached:
                    return cached
                if not self.r.exists(lock):
                    break  # the other caller failed; try ourselves next time
            raise AnswerPending(endpoint, min(COALESCE_RECHECK_S, max(0.5, self.r.pttl(lock) / 1000)))
        try:
            value = call()
            fetched_at = time.time()
            if self.ttl_s > 0 and keep(value):
                self.r.set(key, json.dumps({"value": value, "fetched_at": fetched_at}), ex=self.ttl_s)
            return Answer(value, fetched_at, False)
        finally:
            self.r.eval(RELEASE_LOCK, 1, lock, owner)
