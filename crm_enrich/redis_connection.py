"""The one place Redis clients are made, for the store and for Celery's
broker, with or without Redis Sentinel, and what "durably queued" means
before we acknowledge an inbound message.

With REDIS_SENTINELS set, every client asks the Sentinels for the current
master of REDIS_MASTER_NAME and follows it through a failover: redis-py's
`Sentinel.master_for` for our own keys (job store, limiter, locks, batch
queues, scripts: all on the master, never a replica), kombu's `sentinel://`
transport for the broker. Without it, REDIS_URL names the one server.
"""
from __future__ import annotations

import threading
from typing import Any
from urllib.parse import quote

import redis
from redis.sentinel import Sentinel

from crm_enrich.logs import log
from crm_enrich.settings import Settings


def redis_client(settings: Settings, decode_responses: bool = True, socket_timeout: float = 5,
                 socket_connect_timeout: float = 2, **kw: Any) -> redis.Redis:
    """A client of the master: REDIS_URL's server, or whichever server the
    Sentinels name as master now (asked again on every new connection, so a
    failover costs the commands in flight, which fail and are retried)."""
    options = dict(decode_responses=decode_responses, socket_timeout=socket_timeout,
                   socket_connect_timeout=socket_connect_timeout, **kw)
    if not settings.redis_sentinels:
        assert settings.redis_url  # the settings insist on one of the two
        return redis.Redis.from_url(settings.redis_url, **options)
    sentinel = Sentinel(settings.sentinels,
                        sentinel_kwargs={"password": settings.redis_sentinel_password,
                                         "socket_timeout": socket_connect_timeout,
                                         "socket_connect_timeout": socket_connect_timeout})
    return sentinel.master_for(settings.redis_master_name, password=settings.redis_password,
                               db=settings.redis_db, **options)


def broker_url(settings: Settings) -> str:
    """Celery's broker URL: REDIS_URL, or one `sentinel://` URL per Sentinel
    (kombu asks each in turn for the master). The master's password goes in
    the URLs, the Sentinels' own in the transport options."""
    if not settings.redis_sentinels:
        assert settings.redis_url
        return settings.redis_url
    auth = f":{quote(settings.redis_password, safe='')}@" if settings.redis_password else ""
    return ";".join(f"sentinel://{auth}{host}:{port}/{settings.redis_db}"
                    for host, port in settings.sentinels)


def broker_sentinel_options(settings: Settings) -> dict[str, Any]:
    """The transport options that make kombu's Sentinel transport find the master."""
    if not settings.redis_sentinels:
        return {}
    return {"master_name": settings.redis_master_name,
            "sentinel_kwargs": {"password": settings.redis_sentinel_password,
                                "socket_timeout": 2, "socket_connect_timeout": 2}}


# -- what an acknowledgement waits for -------------------------------------------------

class NotDurable(redis.RedisError):
    """Redis took the writes but could not confirm them as durable in time
    (no replica confirmed them, or the local fsync did not happen): the
    caller must not acknowledge; the sender retries, and de-duplication makes
    the retry safe."""


class AckDurability:
    """How an inbound message's writes are made durable before we answer.

    With Sentinel: `WAIT <replicas> <ms>`, so what we acknowledge is on a
    replica and survives the master's loss. Without: `WAITAOF 1 0 <ms>`
    (Redis 7.2+, Valkey 8+), so it is in the AOF on disk, when the server
    has AOF on and knows the command; otherwise nothing (said once). The
    command goes at the end of the caller's own pipeline: WAIT and WAITAOF
    wait for the writes of the connection they are sent on."""

    def __init__(self, sentinel: bool, replicas: int, timeout_ms: int, fsync: bool = True):
        self.sentinel = sentinel
        self.replicas = replicas
        self.timeout_ms = timeout_ms
        self._waitaof: bool | None = None if fsync else False  # None: unknown until the first use
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> AckDurability:
        return cls(bool(settings.redis_sentinels), settings.redis_ack_replicas, settings.redis_ack_timeout_ms,
                   settings.redis_ack_fsync)

    def _command(self, client: redis.Redis) -> tuple | None:
        if self.sentinel:
            return ("WAIT", self.replicas, self.timeout_ms) if self.replicas else None
        if self._waitaof is None:
            with self._lock:
                if self._waitaof is None:
                    self._waitaof = self._server_has_waitaof(client)
        return ("WAITAOF", 1, 0, self.timeout_ms) if self._waitaof else None

    @staticmethod
    def _server_has_waitaof(client: redis.Redis) -> bool:
        info = {**client.info("server"), **client.info("persistence")}
        version = str(info.get("redis_version", "0"))
        try:
            major, minor = (int(n) for n in version.split(".")[:2])
        except ValueError:
            major, minor = 0, 0
        if (major, minor) < (7, 2):
            log.warning("redis.waitaof_unsupported", redis_version=version,
                        note="acknowledgements follow the write, not the fsync (needs Redis 7.2+ or Valkey 8+)")
            return False
        if str(info.get("aof_enabled")) != "1":
            log.warning("redis.waitaof_unsupported", reason="appendonly is off",
                        note="acknowledgements follow the write, not the fsync")
            return False
        return True

    def execute(self, pipe: redis.client.Pipeline, client: redis.Redis) -> list:
        """Run `pipe` and wait, on its connection, until its writes (and every
        write before them) are durable; raise NotDurable if they are not in time."""
        command = self._command(client)
        if command is None:
            return pipe.execute()
        pipe.execute_command(*command)
        *results, confirmed = pipe.execute(raise_on_error=False)
        for result in results:
            if isinstance(result, Exception):
                raise result
        if isinstance(confirmed, redis.ResponseError):
            if command[0] != "WAITAOF" or "unknown command" not in str(confirmed).lower():
                raise confirmed
            # A server that reports 7.2 but refuses the command (renamed away).
            log.warning("redis.waitaof_unsupported", reason=str(confirmed))
            self._waitaof = False
            return results
        if command[0] == "WAIT" and int(confirmed) < self.replicas:
            raise NotDurable(f"{confirmed} of {self.replicas} replicas confirmed within {self.timeout_ms} ms")
        if command[0] == "WAITAOF" and int(confirmed[0]) < 1:
            raise NotDurable(f"the AOF was not fsynced within {self.timeout_ms} ms")
        return results
