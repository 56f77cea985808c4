"""`crm-enrich doctor`: checks a deployment end to end, from the outside,
with the same settings as its processes. Each check is a plain function
returning `Check`s; the command line only prints them.

The checks ask the real services: Redis, Salesforce's token endpoint,
describe and /limits (docs/salesforce.md#authentication,
docs/salesforce.md#describe, docs/salesforce.md#api-limits), Clodura's
balance (docs/clodura.md#balance, free), Clearout's balance
(docs/clearout.md, `getcredits`, free) and our own web app through
PUBLIC_BASE_URL. They change nothing: no record is read or written, no
credit is spent."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import redis
import requests

from crm_enrich import keys
from crm_enrich.field_map import FieldMapError, check_against_describe, load_field_map
from crm_enrich.providers.clearout import ClearoutClient
from crm_enrich.providers.clodura import CloduraClient
from crm_enrich.providers.errors import ProviderError
from crm_enrich.redis_connection import redis_client
from crm_enrich.salesforce.gateway import SalesforceFailure, SalesforceGateway
from crm_enrich.settings import Settings, SettingsError, load_settings

HTTP_TIMEOUT_S = 10
# Clodura lets spending start again once the balance covers one Enrich
# Contacts (docs/clodura.md#errors).
MIN_CLODURA_CREDITS = 2


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def _fmt_limits(limits: list[tuple[int, int]]) -> str:
    units = {1: "s", 60: "min", 3600: "h", 86400: "day"}
    return ", ".join(f"{n}/{units.get(w, f'{w}s')}" for n, w in limits)


def _age_s(value: str | bytes | None) -> float | None:
    """Seconds since a heartbeat ("<unix time> <host> ..."), None if absent."""
    text = value.decode() if isinstance(value, bytes) else value or ""
    try:
        return max(0.0, time.time() - float(text.split()[0]))
    except (ValueError, IndexError):
        return None


# -- Redis ------------------------------------------------------------------------

def check_redis(settings: Settings) -> list[Check]:
    client = redis_client(settings, socket_connect_timeout=3)
    try:
        client.ping()
        persistence = client.info("persistence")
        memory = client.info("memory")
        replication = client.info("replication") if settings.redis_sentinels else None
    except redis.RedisError as exc:
        return [Check("Redis reachable", False, f"{type(exc).__name__}: {exc}",
                      "check REDIS_URL and that Redis runs and accepts this host")]
    aof = str(persistence.get("aof_enabled")) == "1"
    policy = str(memory.get("maxmemory_policy", "?"))
    return [
        Check("Redis reachable", True, "PING answered"),
        Check("Redis persistent (AOF)", aof, "appendonly yes" if aof else "appendonly no: a restart loses queued jobs",
              "" if aof else "set appendonly yes (redis-server --appendonly yes, or CONFIG SET appendonly yes "
                             "and CONFIG REWRITE)"),
        Check("Redis maxmemory-policy", policy == "noeviction", policy,
              "" if policy == "noeviction" else "set maxmemory-policy noeviction: any other policy may drop "
                                                "queued jobs and locks when memory runs short"),
    ] + ([check_replicas(settings, replication)] if replication is not None else [])


def check_replicas(settings: Settings, replication: dict) -> Check:
    """With Sentinel, an acknowledgement waits for REDIS_ACK_REPLICAS
    replicas (WAIT): with fewer online, every Outbound Message is answered
    503 and every JSON event refused until one is back."""
    online = sum(1 for name, replica in replication.items()
                 if name.startswith("slave") and isinstance(replica, dict) and replica.get("state") == "online")
    wanted = settings.redis_ack_replicas
    detail = f"{online} online, {wanted} needed to acknowledge (master {settings.redis_master_name})"
    return Check("Redis replicas", online >= wanted, detail,
                 "" if online >= wanted else
                 "start a replica of the master (replicaof), or wait until it has caught up: until then "
                 "every Outbound Message is answered 503 (REDIS_ACK_REPLICAS sets how many are needed)")


def check_heartbeats(settings: Settings) -> list[Check]:
    client = redis_client(settings, socket_connect_timeout=3)
    try:
        worker, beat, events = client.mget(keys.WORKER_HEARTBEAT, keys.BEAT_HEARTBEAT, keys.CDC_HEARTBEAT)
    except redis.RedisError as exc:
        why = f"Redis unreachable ({type(exc).__name__})"
        return [Check("worker heartbeat", False, why, "fix Redis first"),
                Check("beat running", False, why, "fix Redis first")]
    worker_age, beat_age = _age_s(worker), _age_s(beat)
    return [
        Check("worker heartbeat", worker_age is not None,
              f"last {worker_age:.0f}s ago" if worker_age is not None
              else f"none in the last {keys.WORKER_HEARTBEAT_TTL_S}s",
              "" if worker_age is not None else "start a worker: celery -A worker.app worker (same REDIS_URL)"),
        Check("beat running", beat_age is not None,
              f"last heartbeat {beat_age:.0f}s ago" if beat_age is not None
              else f"no beat heartbeat in the last {keys.BEAT_HEARTBEAT_TTL_S}s",
              "" if beat_age is not None else "start exactly one beat: celery -A worker.app beat (same REDIS_URL)"),
    ] + ([check_subscriber(events)] if settings.salesforce_ingest == "cdc" else [])


def check_subscriber(heartbeat: str | bytes | None) -> Check:
    """SALESFORCE_INGEST=cdc: the `events:` process runs and its streams are open."""
    age = _age_s(heartbeat)
    text = heartbeat.decode() if isinstance(heartbeat, bytes) else heartbeat or ""
    streams = text.split()[-1] if age is not None else ""
    opened, _, topics = streams.partition("/")
    if age is None:
        return Check("CDC subscriber", False, f"no heartbeat in the last {keys.CDC_HEARTBEAT_TTL_S}s",
                     "start one subscriber: python -m crm_enrich.ingest.subscriber (the Procfile's events:)")
    return Check("CDC subscriber", opened == topics, f"last heartbeat {age:.0f}s ago, {streams} streams open",
                 "" if opened == topics
                 else "see its log (cdc.stream_broken): the Pub/Sub API refuses us or is unreachable")


# -- Salesforce -------------------------------------------------------------------

LOGIN_FIXES = {
    "invalid_client": "check SALESFORCE_CLIENT_ID and SALESFORCE_CLIENT_SECRET (the External Client App's "
                      "consumer key and secret)",
    "invalid_client_id": "check SALESFORCE_CLIENT_ID (the External Client App's consumer key)",
    "invalid_grant": "check the flow's run-as user (client credentials) or that the integration user is "
                     "pre-authorised and the certificate matches SALESFORCE_PRIVATE_KEY_FILE (JWT)",
    "LOGIN_UNAVAILABLE": "check SALESFORCE_LOGIN_URL (your My Domain) and that this host reaches it",
}


def check_salesforce(settings: Settings) -> list[Check]:
    gateway = SalesforceGateway(settings)
    try:
        token = gateway.tokens.get()
    except SalesforceFailure as exc:
        skipped = "not checked: OAuth failed"
        return [Check("Salesforce OAuth", False, str(exc),
                      LOGIN_FIXES.get(exc.code, "check the SALESFORCE_* settings and the External Client App")),
                Check("mapped fields", False, skipped, "fix OAuth first"),
                Check("Salesforce API allocation", False, skipped, "fix OAuth first")]
    checks = [Check("Salesforce OAuth", True, f"token for {token.instance_url}"
                    + (f", integration user {token.user_id}" if token.user_id else ""))]
    checks += check_field_map(settings, gateway)
    checks.append(check_api_allocation(settings, gateway))
    return checks


def check_field_map(settings: Settings, gateway: SalesforceGateway) -> list[Check]:
    """Every mapped field, against the org's own describe (not our cache)."""
    try:
        field_map = load_field_map(settings.field_map)
    except FieldMapError as exc:
        return [Check("mapped fields", False, str(exc), "fix the field map file (FIELD_MAP)")]
    describes: dict[str, dict | None] = {}
    try:
        for object_type in field_map.objects:
            try:
                describes[object_type] = gateway.describe(object_type)
            except SalesforceFailure as exc:
                if exc.code not in ("NOT_FOUND", "INVALID_TYPE"):
                    raise
                describes[object_type] = None
    except SalesforceFailure as exc:
        return [Check("mapped fields", False, f"describe failed: {exc}",
                      "give the integration user read access to the mapped objects")]
    problems = check_against_describe(field_map, describes)
    if not problems:
        total = sum(len(rules) for rules in field_map.objects.values())
        return [Check("mapped fields", True, f"all {total} exist and are updateable "
                      f"({', '.join(field_map.objects)})")]
    return [Check(f"mapped field {p.name}", False, p.problem, p.fix) for p in problems]


def check_api_allocation(settings: Settings, gateway: SalesforceGateway) -> Check:
    try:
        daily = gateway.daily_api_requests()
    except SalesforceFailure as exc:
        return Check("Salesforce API allocation", False, f"/limits failed: {exc}",
                     "give the integration user the API Enabled permission")
    total, left = int(daily.get("Max") or 0), int(daily.get("Remaining") or 0)
    if not total:
        return Check("Salesforce API allocation", False, "no DailyApiRequests in /limits", "")
    used_share = (total - left) / total
    ok = used_share < settings.salesforce_bulk_share
    return Check("Salesforce API allocation", ok, f"{left} of {total} requests left today ({used_share:.0%} used)",
                 "" if ok else f"above SALESFORCE_BULK_SHARE ({settings.salesforce_bulk_share:.0%}): bulk work "
                               "waits; raise the org's allocation or wait for the 24 h window")


# -- providers --------------------------------------------------------------------

def check_clodura(settings: Settings) -> list[Check]:
    client = CloduraClient(str(settings.clodura_base_url), settings.clodura_api_key)
    plan = Check("Clodura plan limits", True,
                 f"{settings.clodura_plan}: {_fmt_limits(settings.clodura_limits)}"
                 + (" (CLODURA_RATE_LIMITS)" if settings.clodura_rate_limits else " (CLODURA_PLAN)"))
    try:
        credits = client.credits()
    except ProviderError as exc:
        status = exc.status
        if status in (401, 403):
            return [Check("Clodura key", False, str(exc), "check CLODURA_API_KEY (Clodura → Settings → API)"),
                    plan]
        return [Check("Clodura key", False, str(exc), "check CLODURA_BASE_URL and that this host reaches it"), plan]
    enough = credits >= MIN_CLODURA_CREDITS
    return [Check("Clodura key", True, "valid"),
            Check("Clodura credits", enough, f"{credits:g} left",
                  "" if enough else "top up the Clodura account: spending stays paused until then"),
            plan]


def check_clearout(settings: Settings) -> list[Check]:
    if not settings.clearout_api_token:
        return [Check("Clearout", True, "not configured (VERIFY_PROVIDER=clodura, CLEAROUT_FINDER off)")]
    client = ClearoutClient(str(settings.clearout_base_url), settings.clearout_api_token)
    try:
        credits = client.credits()
    except ProviderError as exc:
        status = exc.status
        fix = ("check CLEAROUT_API_TOKEN (Clearout → Developer → API token)" if status == 401
               else "check CLEAROUT_BASE_URL and that this host reaches it")
        return [Check("Clearout token", False, str(exc), fix)]
    daily = "" if credits.daily_verify_left is None else f", {credits.daily_verify_left} verifications left today"
    return [Check("Clearout token", True, "valid"),
            Check("Clearout credits", credits.available > 0, f"{credits.available} left{daily}",
                  "" if credits.available > 0 else "top up the Clearout account: its jobs fail until then")]


# -- the web app, from outside ------------------------------------------------------

def check_public_url(settings: Settings) -> Check:
    url = str(settings.public_base_url).rstrip("/") + "/healthz"
    try:
        resp = requests.get(url, timeout=HTTP_TIMEOUT_S)
        ok = resp.status_code == 200 and resp.json().get("status") == "ok"
        detail = f"{url} answered {resp.status_code}"
    except (requests.RequestException, ValueError) as exc:
        ok, detail = False, f"{url}: {type(exc).__name__}"
    return Check("PUBLIC_BASE_URL answers /healthz", ok, detail,
                 "" if ok else "make PUBLIC_BASE_URL reach the web app (DNS, TLS, proxy): Salesforce and "
                               "Clodura's callbacks use it")


CHECKS: tuple[Callable[[Settings], Check | list[Check]], ...] = (
    check_redis, check_salesforce, check_clodura, check_clearout, check_public_url, check_heartbeats)


def run_checks(settings: Settings | None = None) -> Iterator[Check]:
    """Every check, in order, as each finishes. Bad settings stop there:
    nothing else can be checked without them."""
    if settings is None:
        try:
            settings = load_settings()
        except SettingsError as exc:
            yield Check("settings", False, str(exc).replace("crm-enrich: ", "").replace("\n", "; "),
                        "set them in the environment (README, Configuration)")
            return
    yield Check("settings", True, "every setting present and valid")
    for check in CHECKS:
        try:
            found = check(settings)
        except Exception as exc:  # a check that breaks is a failed check, not a crash
            found = Check(check.__name__.removeprefix("check_"), False, f"{type(exc).__name__}: {exc}", "")
        yield from found if isinstance(found, list) else [found]
