"""Settings from the environment (12-factor), validated once at start-up.

A missing or invalid setting stops the process with one message naming it.
Nothing defaults to the sandbox: the demo and the tests set every URL
explicitly, so a real deployment cannot talk to a simulator by accident.
"""
from __future__ import annotations

import base64
import binascii
import ipaddress
import sys
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, HttpUrl, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Clodura's documented per-key limits (docs/clodura.md#rate-limits), as
# (requests, window seconds).
CLODURA_PLAN_LIMITS: dict[str, list[tuple[int, int]]] = {
    **{
        plan: [(10, 1), (100, 60), (2000, 86400)]
        for plan in ("max", "payg", "professional", "enterprise", "prospect_pro", "prospect")
    },
    "starter": [(1, 1), (10, 60), (600, 86400)],
    "basic": [(1, 1), (10, 60), (600, 86400)],
    "lifetime": [(1, 1), (10, 60), (300, 86400)],
    "free": [(1, 1), (10, 60), (300, 86400)],
}

# The provider usage policy allows caching Clodura data for at most a day.
PROVIDER_DATA_MAX_TTL_S = 86_400

_UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


def parse_rate_limits(text: str) -> list[tuple[int, int]]:
    """'10/second;100/minute;2000/day' -> [(10, 1), (100, 60), (2000, 86400)];
    a window may also be given in seconds: '30/40s' -> [(30, 40)]."""
    limits = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        count, _, unit = part.partition("/")
        window = _UNIT_SECONDS.get(unit) or (int(unit[:-1]) if unit.endswith("s") and unit[:-1].isdigit() else 0)
        if window < 1 or not count.strip().isdigit() or int(count) < 1:
            raise ValueError(f"'{part}' is not of the form N/second|minute|hour|day or N/<seconds>s")
        limits.append((int(count), window))
    if not limits:
        raise ValueError("no limits given")
    return limits


# The optional components of Clodura's Organisation Enrich (docs/clodura.md#organisation-enrich).
ORG_COMPONENTS = frozenset({"technographics", "funding", "acquisitions"})


def parse_org_components(text: str) -> frozenset[str]:
    """'technographics, funding' -> that set; 'none' or '' -> no component."""
    names = {part.strip().lower() for part in text.split(",")} - {""}
    if names == {"none"}:
        return frozenset()
    unknown = names - ORG_COMPONENTS
    if unknown:
        raise ValueError(f"unknown component {', '.join(sorted(unknown))}; "
                         f"use {', '.join(sorted(ORG_COMPONENTS))} or none")
    return frozenset(names)


# Clodura's company news categories (docs/clodura.md#company-news).
NEWS_CATEGORIES = ("Acquisition", "Announcements", "Bankruptcy", "Expansion", "IPO", "Investment", "Issue",
                   "Launch", "Layoff", "Partnership", "Patent", "Funding")


def parse_news_categories(text: str) -> list[str]:
    """'funding, launch' -> ['Funding', 'Launch'] (Clodura's spelling)."""
    known = {c.lower(): c for c in NEWS_CATEGORIES}
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n.lower() not in known]
    if unknown or not names:
        raise ValueError(f"unknown news category {', '.join(unknown) or '(none given)'}; "
                         f"use some of {', '.join(NEWS_CATEGORIES)}")
    return list(dict.fromkeys(known[n.lower()] for n in names))


# The waterfall's steps (crm_enrich/flow/waterfall.py), in their default order.
WATERFALL_STEPS = ("clearout_email", "clearout_linkedin", "clodura_search")


def parse_waterfall_steps(text: str) -> tuple[str, ...]:
    """'clearout_email, clodura_search' -> those steps in that order; 'none' or '' -> ()."""
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    if names == ["none"]:
        return ()
    unknown = [name for name in names if name not in WATERFALL_STEPS]
    if unknown:
        raise ValueError(f"unknown step {', '.join(unknown)}; use {', '.join(WATERFALL_STEPS)} or none")
    return tuple(dict.fromkeys(names))


def parse_host_ports(text: str) -> list[tuple[str, int]]:
    """'s1:26379, s2:26379' -> [('s1', 26379), ('s2', 26379)]."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        host, _, port = part.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"'{part}' is not host:port")
        out.append((host.strip("[]"), int(port)))
    if not out:
        raise ValueError("no host:port given")
    return out


# The objects whose Outbound Messages the endpoint takes.
OUTBOUND_OBJECTS = ("Contact", "Lead", "Account")


@lru_cache(maxsize=4)   # read on every Outbound Message
def parse_outbound_fields(text: str) -> dict[str, frozenset[str]]:
    """'Contact: Id, FirstName, Email; Account: Id, Name' -> {'Contact':
    {'Id', 'FirstName', 'Email'}, 'Account': {'Id', 'Name'}}: per object,
    the fields its Outbound Message sends."""
    declared: dict[str, frozenset[str]] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, colon, fields = part.partition(":")
        known = {o.lower(): o for o in OUTBOUND_OBJECTS}.get(name.strip().lower())
        names = frozenset(f.strip() for f in fields.split(",") if f.strip())
        if not colon or known is None:
            raise ValueError(f"'{part}' is not of the form Object: Field, Field (Object one of "
                             f"{', '.join(OUTBOUND_OBJECTS)})")
        if known in declared:
            raise ValueError(f"{known} is declared twice")
        bad = sorted(f for f in names if not f.replace("_", "").isalnum())
        if bad or not names:
            raise ValueError(f"{known}: {', '.join(bad) or 'no field'} is not a field name")
        declared[known] = names
    if not declared:
        raise ValueError("no object declared")
    return declared


def parse_topics(text: str) -> list[str]:
    """'/data/ContactChangeEvent, /data/LeadChangeEvent' -> those topics."""
    topics = list(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    bad = [t for t in topics if not (t.startswith(("/data/", "/event/")) and len(t) > 7)]
    if bad or not topics:
        raise ValueError(f"{', '.join(bad) or 'no topic given'}: a topic looks like /data/ContactChangeEvent")
    return topics


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> list[IPNetwork]:
    """'13.108.0.0/14, 2a01:111::/32' -> those networks."""
    networks = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(f"'{part}' is not a network (CIDR)") from None
    if not networks:
        raise ValueError("no network given")
    return networks


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

    # One Redis (REDIS_URL), or a Sentinel-managed master and its replicas:
    # REDIS_SENTINELS (host:port, comma-separated) and REDIS_MASTER_NAME,
    # with the master's password in REDIS_PASSWORD and the Sentinels' own
    # in REDIS_SENTINEL_PASSWORD.
    redis_url: str | None = Field(default=None, pattern=r"^(redis|rediss|unix)://")
    redis_sentinels: str | None = None
    redis_master_name: str = Field(default="crm-enrich", min_length=1)
    redis_password: str | None = None
    redis_sentinel_password: str | None = None
    redis_db: int = Field(default=0, ge=0, le=15)
    # Before an inbound message is acknowledged: with Sentinel, this many
    # replicas must confirm its writes (WAIT; 0: don't wait); without, the
    # server's AOF fsync (WAITAOF, where the server has it; REDIS_ACK_FSYNC
    # false: don't wait). Not confirmed
    # within REDIS_ACK_TIMEOUT_MS: the answer is 503 and the sender retries.
    redis_ack_replicas: int = Field(default=1, ge=0, le=10)
    redis_ack_fsync: bool = True
    redis_ack_timeout_ms: int = Field(default=1000, ge=10, le=30_000)
    # At start-up every process refuses a Redis without AOF persistence or
    # with a maxmemory-policy other than noeviction, unless this is true.
    redis_risk_accepted: bool = False
    public_base_url: HttpUrl

    clodura_api_key: str = Field(min_length=1)
    clodura_base_url: HttpUrl = HttpUrl("https://api.clodura.ai")
    clodura_plan: str = "max"
    clodura_rate_limits: str | None = None

    clearout_api_token: str | None = None
    clearout_base_url: HttpUrl = HttpUrl("https://api.clearout.io/v2")
    # Who verifies emails: Clodura, Clearout, or Clodura and then Clearout
    # for what Clodura calls risky or catch-all.
    verify_provider: Literal["clodura", "clearout", "clodura_then_clearout"] = "clodura"
    # Ask Clearout's email finder when Clodura reveals no email.
    clearout_finder: bool = False
    # Clearout's instant verify waits this long for a verdict, then answers
    # 524 and the job retries later (Clearout's own default is 130 s).
    clearout_verify_timeout_ms: int = Field(default=30_000, ge=1_000, le=180_000)
    # Clearout bulk lists: a run (re-run, backfill, re-verification,
    # refresh) selecting more records than this sends the Clearout
    # verifications (and, with CLEAROUT_FINDER, the finder searches) of its
    # jobs as one bulk list instead of one instant call each (0: never). A
    # list takes addresses until every job of the run has come to it, or
    # for at most CLEAROUT_BULK_COLLECT_S; its progress is asked every
    # CLEAROUT_BULK_POLL_S; a list not done CLEAROUT_BULK_GIVE_UP_S after
    # its upload is cancelled and its jobs verified one by one. Together
    # they stay well inside the 24 h a job may keep its data.
    clearout_bulk_threshold: int = Field(default=1000, ge=0)
    clearout_bulk_collect_s: float = Field(default=1800, ge=1, le=6 * 3600)
    clearout_bulk_poll_s: float = Field(default=60, ge=0.5, le=3600)
    clearout_bulk_give_up_s: float = Field(default=6 * 3600, ge=10, le=12 * 3600)

    salesforce_login_url: HttpUrl
    salesforce_client_id: str = Field(min_length=1)
    salesforce_client_secret: str | None = None
    salesforce_username: str | None = None
    salesforce_private_key_file: Path | None = None
    salesforce_api_version: str = Field(default="59.0", pattern=r"^\d+\.\d$")
    salesforce_org_id: str = Field(pattern=r"^00D[a-zA-Z0-9]{12}([a-zA-Z0-9]{3})?$")
    salesforce_webhook_secret: str = Field(min_length=16)
    # The secret last part of the Outbound Message endpoint's URL
    # (/salesforce/outbound-message/<token>): Salesforce cannot sign its
    # messages, so knowing this URL is what proves the sender.
    salesforce_outbound_token: str = Field(min_length=32, pattern=r"^[A-Za-z0-9_-]+$")
    # Optional: the source networks (CIDRs, comma-separated) Outbound
    # Messages may come from, e.g. Salesforce's published ranges.
    salesforce_allowed_networks: str | None = None
    # Optional: per object, the fields the org's Outbound Message sends
    # ("Contact: Id, FirstName, ...; Lead: ...; Account: ..."), exactly its
    # field list. A message from the authenticated endpoint then stands for
    # a read of its record (a declared field it leaves out is null), when
    # the declaration covers every field the job would read; else, and for
    # objects not declared, the job reads the record as without it.
    salesforce_outbound_fields: str | None = None
    # How old a notification of an Account (or a read of it) may be and
    # still give its Contacts' jobs the Account's fields instead of a read
    # (0: never).
    salesforce_outbound_account_max_age_s: float = Field(default=30, ge=0, le=3600)
    # The way records come in: Outbound Messages to our endpoint (the
    # default), or Change Data Capture events we subscribe to over the
    # Pub/Sub API (the `events:` process; no inbound endpoint needed).
    salesforce_ingest: Literal["outbound_message", "cdc"] = "outbound_message"
    # The Pub/Sub API's host:port, its change event topics (comma-separated),
    # and, unset, the system's CAs to trust its certificate (a file: those
    # CAs instead, e.g. the sandbox's).
    salesforce_pubsub_url: str = Field(default="api.pubsub.salesforce.com:7443", pattern=r"^[^\s/:]+:\d{1,5}$")
    salesforce_pubsub_ca_file: Path | None = None
    salesforce_cdc_topics: str = "/data/ContactChangeEvent,/data/LeadChangeEvent,/data/AccountChangeEvent"
    # Also take UPDATEs that change a field we read to find the person or
    # company (by default only CREATEs make jobs).
    salesforce_cdc_updates: bool = False
    # Events asked for at a time, per topic: the next ask waits until these
    # are queued (Salesforce allows at most 100).
    salesforce_cdc_batch_size: int = Field(default=100, ge=1, le=100)
    # Reconnection after a broken stream: waits doubling from 1 s up to this.
    salesforce_cdc_retry_max_s: float = Field(default=30, ge=1, le=600)
    # How many proxies in front of the web app set X-Forwarded-For (0: none;
    # the client address is then the socket's).
    trusted_proxy_hops: int = Field(default=0, ge=0, le=5)

    admin_token: str = Field(min_length=16)
    secret_key: str = Field(min_length=16)

    field_map: Path | None = None
    # A mapped field the org lacks, or the integration user cannot update,
    # is left out with a warning; true: the worker refuses to start instead.
    field_map_strict: bool = False
    # Clodura's asynchronous results (reveals, 202 verifications) arrive by
    # callback. Without one after VERIFY_POLL_AFTER_S the sweeper asks the
    # provider's polling endpoints (undocumented, hence the switch); after
    # VERIFY_GIVE_UP_AFTER_S the step ends as "unknown" / "no email".
    verify_poll_after_s: int = Field(default=300, ge=1)
    verify_give_up_after_s: int = Field(default=3600, ge=1)
    clodura_polling: bool = True
    # standard checks by default; deep ones (0.1 credits) for catch-all
    # domains, or always, or never.
    clodura_deep_verification: Literal["never", "catch_all", "always"] = "catch_all"
    # Phones cost 10-20 credits each: revealed only when this is on and the
    # field map has a blank field for them.
    reveal_phone: bool = False
    reveal_phone_via_partners: bool = False
    # The waterfall for people Clodura's enrich does not match: the steps to
    # try, in order, comma-separated (unset or "none": off). clearout_email
    # (reverse lookup by the record's email: 4 Clearout credits a person, 2
    # a role address), clearout_linkedin (by its LinkedIn profile, the
    # same), clodura_search (people search by name and company, 1 credit).
    waterfall_steps: str | None = None
    # Fields mapped from email.type (business / free / role / disposable)
    # take the flags a verdict carries; with this on, Clearout's
    # single-attribute checks answer when the verdict carries none, at
    # CLEAROUT_ATTRIBUTE_CHECK_CREDITS each (unset: the price table's 1).
    email_type_checks: bool = False
    clearout_attribute_check_credits: float | None = Field(default=None, ge=0)
    writeback_max_delay_s: float = Field(default=2.0, gt=0, le=60)
    # The write flush reads a record again before writing, so that a value a
    # person typed meanwhile survives, unless the job read the record less
    # than this many seconds ago (then the plan is fresh, and the second
    # read would only double the Salesforce calls of a trickle). Waits for a
    # reveal or a 202 verdict take longer and always get the second read.
    writeback_reread_after_s: float = Field(default=30.0, ge=0, le=3600)
    # A pause in arrivals this long (or a flush's duration, if longer) ends
    # a burst: the batch waiting for more is sent.
    batch_quiet_s: float = Field(default=0.25, gt=0, le=10)
    # A burst's batch (a message's reads, a read batch's writes) waits for
    # its named batch mates still on their way, this long at most. A burst
    # slower than WRITEBACK_REREAD_AFTER_S pays the second read, one query
    # per object a batch: still far fewer calls than small batches would.
    batch_burst_max_s: float = Field(default=60.0, gt=0, le=600)
    # How long a batch flusher may hold its lease; a flusher that died is
    # replaced after this. Longer than any one Salesforce call may take.
    batch_lease_s: float = Field(default=300, ge=5, le=3600)
    # Share of the org's daily API allocation above which only new records'
    # work may call Salesforce, and above which nothing may.
    salesforce_bulk_share: float = Field(default=0.80, gt=0, le=1)
    salesforce_stop_share: float = Field(default=0.95, gt=0, le=1)
    salesforce_usage_recheck_s: float = Field(default=60, ge=1, le=3600)
    # A re-run or backfill selecting more records than this is read through
    # a Bulk API 2.0 query job (Salesforce's guidance: above ~2,000 records),
    # in sets of this many records, one task per set.
    salesforce_bulk_query_threshold: int = Field(default=2000, ge=0)
    salesforce_bulk_query_page_size: int = Field(default=5000, ge=1, le=50_000)
    # 0 turns the response cache off; it can never be set above 24 h.
    provider_cache_ttl_s: int = Field(default=PROVIDER_DATA_MAX_TTL_S, ge=0, le=PROVIDER_DATA_MAX_TTL_S)
    clodura_daily_credit_budget: float | None = Field(default=None, gt=0)
    # Optional parts of Organisation Enrich we may pay for (+1 credit each),
    # comma-separated, or "none". Unset: all three. Even an allowed one is
    # only asked for when the field map uses its data.
    clodura_org_components: str | None = None
    # A domain for a company name: Clearout's public company autocomplete
    # (free, no token needed) gives a Lead with a Company and no Website, or
    # an Account without a Website, its domain; only the best suggestion,
    # and only when it is at least this confident (0-100).
    company_domain_lookup: bool = True
    company_domain_min_confidence: int = Field(default=80, ge=0, le=100)
    # Account signals, asked for only when the field map uses them: Clodura
    # company news in these categories (comma-separated).
    clodura_news_categories: str = "Funding,Acquisition,Expansion,Launch"
    # "shared": one limiter in Redis for every worker (default). "per_worker":
    # Celery's own rate_limit per worker, which overshoots with several
    # workers; only for comparison (bench/quota.py).
    clodura_limiter: Literal["shared", "per_worker"] = "shared"
    # Scheduled re-verification of emails whose verdict is older than
    # REVERIFY_AFTER_DAYS (unset: off). Every REVERIFY_INTERVAL_S one run
    # selects, oldest verdict first, at most REVERIFY_MAX_PER_RUN records and
    # no more than REVERIFY_BUDGET_SHARE of the daily credit budget pays for,
    # so the rest of the budget stays for new records.
    reverify_after_days: int | None = Field(default=None, ge=1, le=3650)
    reverify_max_per_run: int = Field(default=500, ge=1, le=50_000)
    reverify_interval_s: float = Field(default=86_400, ge=1, le=7 * 86_400)
    reverify_budget_share: float = Field(default=0.5, gt=0, le=1)
    # The change log (what each write changed and why, never the value):
    # kept this many days, at most this many entries a day and per record.
    change_log_days: int = Field(default=90, ge=1, le=400)
    change_log_max_per_day: int = Field(default=200_000, ge=100, le=10_000_000)
    change_log_per_record: int = Field(default=100, ge=1, le=10_000)
    # A dry run reads at most this many of its records to price them; the
    # rest are priced at the worst case.
    estimate_read_max: int = Field(default=2000, ge=0, le=50_000)
    # Scheduled refresh: records whose Enriched_At__c is older than
    # REFRESH_AFTER_DAYS (unset: off; 90 is usual) are enriched again, oldest
    # first, at most REFRESH_MAX_PER_RUN a run every REFRESH_INTERVAL_S, within
    # REFRESH_BUDGET_SHARE of the daily credit budget.
    refresh_after_days: int | None = Field(default=None, ge=1, le=3650)
    refresh_max_per_run: int = Field(default=200, ge=1, le=50_000)
    refresh_interval_s: float = Field(default=86_400, ge=1, le=7 * 86_400)
    refresh_budget_share: float = Field(default=0.3, gt=0, le=1)
    sweep_interval_s: float = Field(default=30, ge=0.5, le=3600)
    # Reconciliation: every RECONCILE_INTERVAL_S (0: off) records created in
    # the last RECONCILE_LOOKBACK_DAYS that we never enriched are queued.
    reconcile_interval_s: float = Field(default=3600, ge=0, le=7 * 86_400)
    reconcile_lookback_days: int = Field(default=2, ge=1, le=30)
    # Redis (the broker) hands an unacknowledged message back after this
    # long, so no task may count down more than half of it: longer waits are
    # parked in Redis with a due time the sweeper acts on.
    visibility_timeout_s: int = Field(default=300, ge=4, le=86_400)
    # A passing error is retried (backoff, then parked) until this long after
    # the job first met it; then the job fails with its reason.
    retry_deadline_s: float = Field(default=6 * 3600, ge=1)
    # A job not final, not parked and untouched this long (while the task
    # queues are empty) is queued again, at most STUCK_MAX_REVIVALS times.
    stuck_after_s: float = Field(default=600, ge=1)
    stuck_max_revivals: int = Field(default=3, ge=1)
    # A provider that failed BREAKER_FAILURES times in a row (5xx, timeouts)
    # gets no calls for BREAKER_OPEN_S; then one probe call at a time.
    breaker_failures: int = Field(default=5, ge=1)
    breaker_open_s: float = Field(default=60, ge=1, le=3600)
    credits_check_interval_s: float = Field(default=300, ge=0.5, le=86400)

    # Where a process keeps its own files (beat's schedule): one directory
    # per deployment, so two deployments on one host never share them.
    data_dir: Path = Path("data")
    beat_schedule_path: Path | None = None

    max_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("clodura_plan")
    @classmethod
    def _known_plan(cls, value: str) -> str:
        plan = value.strip().lower().replace(" ", "_").replace("-", "_")
        plan = {"free_forever": "free", "default": "free", "pay_as_you_go": "payg"}.get(plan, plan)
        if plan not in CLODURA_PLAN_LIMITS:
            raise ValueError(f"unknown plan; one of {', '.join(sorted(CLODURA_PLAN_LIMITS))}")
        return plan

    @field_validator("salesforce_webhook_secret")
    @classmethod
    def _webhook_secret_shape(cls, value: str) -> str:
        # Standard Webhooks secrets are "whsec_" + base64 of the key bytes.
        if not value.startswith("whsec_"):
            raise ValueError("must be a Standard Webhooks secret: whsec_ followed by base64")
        try:
            key = base64.b64decode(value[6:] + "==", validate=False)
        except binascii.Error:
            raise ValueError("the part after whsec_ is not base64") from None
        if len(key) < 24:
            raise ValueError("the key must be at least 24 bytes")
        return value

    @field_validator("salesforce_allowed_networks")
    @classmethod
    def _valid_networks(cls, value: str | None) -> str | None:
        if value:
            parse_networks(value)
        return value

    @field_validator("salesforce_outbound_fields")
    @classmethod
    def _valid_outbound_fields(cls, value: str | None) -> str | None:
        if value:
            parse_outbound_fields(value)
        return value or None

    @field_validator("salesforce_cdc_topics")
    @classmethod
    def _valid_topics(cls, value: str) -> str:
        parse_topics(value)
        return value

    @field_validator("clodura_org_components")
    @classmethod
    def _known_components(cls, value: str | None) -> str | None:
        if value is not None:
            parse_org_components(value)
        return value

    @field_validator("clodura_news_categories")
    @classmethod
    def _known_news_categories(cls, value: str) -> str:
        parse_news_categories(value)
        return value

    @field_validator("clodura_rate_limits")
    @classmethod
    def _valid_limits(cls, value: str | None) -> str | None:
        if value:
            parse_rate_limits(value)
        return value

    @field_validator("redis_url", "redis_sentinels", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: str | None) -> str | None:
        # Compose sets both variables; the one not in use is empty.
        return value or None

    @field_validator("redis_sentinels")
    @classmethod
    def _valid_sentinels(cls, value: str | None) -> str | None:
        if value:
            parse_host_ports(value)
        return value or None

    @model_validator(mode="after")
    def _one_redis(self) -> Settings:
        if not (self.redis_url or self.redis_sentinels):
            raise ValueError("setting REDIS_URL is missing (or, for Redis Sentinel, set REDIS_SENTINELS "
                             "and REDIS_MASTER_NAME)")
        if self.redis_url and self.redis_sentinels:
            raise ValueError("settings REDIS_URL and REDIS_SENTINELS are both set: one Redis or Sentinel, not both")
        return self

    @model_validator(mode="after")
    def _clearout_token_when_used(self) -> Settings:
        if (self.verify_provider != "clodura" or self.clearout_finder) and not self.clearout_api_token:
            raise ValueError("CLEAROUT_API_TOKEN is required when VERIFY_PROVIDER uses Clearout "
                             "or CLEAROUT_FINDER is on")
        return self

    @field_validator("waterfall_steps")
    @classmethod
    def _known_waterfall_steps(cls, value: str | None) -> str | None:
        if value is not None:
            parse_waterfall_steps(value)
        return value

    @model_validator(mode="after")
    def _clearout_token_for_lookups(self) -> Settings:
        uses_clearout = any(step.startswith("clearout_") for step in self.waterfall) or self.email_type_checks
        if uses_clearout and not self.clearout_api_token:
            raise ValueError("CLEAROUT_API_TOKEN is required when WATERFALL_STEPS names a Clearout step "
                             "or EMAIL_TYPE_CHECKS is on")
        return self

    @model_validator(mode="after")
    def _stuck_after_outlasts_countdowns(self) -> Settings:
        if self.stuck_after_s <= self.max_countdown_s:
            raise ValueError("STUCK_AFTER_S must be longer than half of VISIBILITY_TIMEOUT_S "
                             "(the longest a task may wait in the broker)")
        return self

    @model_validator(mode="after")
    def _one_salesforce_auth(self) -> Settings:
        jwt = self.salesforce_username and self.salesforce_private_key_file
        if not (self.salesforce_client_secret or jwt):
            raise ValueError(
                "set SALESFORCE_CLIENT_SECRET (client credentials) or "
                "SALESFORCE_USERNAME + SALESFORCE_PRIVATE_KEY_FILE (JWT bearer)"
            )
        if self.salesforce_private_key_file and not self.salesforce_private_key_file.is_file():
            raise ValueError(f"SALESFORCE_PRIVATE_KEY_FILE {self.salesforce_private_key_file} is not a file")
        return self

    @property
    def callback_token_max_age_s(self) -> int:
        # Long enough for Clodura's last redelivery after our give-up time.
        return self.verify_give_up_after_s + 900

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        return parse_host_ports(self.redis_sentinels) if self.redis_sentinels else []

    @property
    def max_countdown_s(self) -> float:
        """The longest a task may be delayed in the broker."""
        return self.visibility_timeout_s / 2

    @property
    def clodura_limits(self) -> list[tuple[int, int]]:
        if self.clodura_rate_limits:
            return parse_rate_limits(self.clodura_rate_limits)
        return CLODURA_PLAN_LIMITS[self.clodura_plan]

    @property
    def waterfall(self) -> tuple[str, ...]:
        """The waterfall's steps in the order they are tried (empty: off)."""
        return parse_waterfall_steps(self.waterfall_steps) if self.waterfall_steps else ()

    @property
    def org_components_allowed(self) -> frozenset[str]:
        if self.clodura_org_components is None:
            return ORG_COMPONENTS
        return parse_org_components(self.clodura_org_components)

    @property
    def news_categories(self) -> list[str]:
        return parse_news_categories(self.clodura_news_categories)

    @property
    def beat_schedule_file(self) -> Path:
        """BEAT_SCHEDULE_PATH, or celerybeat-schedule in DATA_DIR."""
        return self.beat_schedule_path or self.data_dir / "celerybeat-schedule"

    @property
    def allowed_networks(self) -> list[IPNetwork] | None:
        """None: any source address."""
        return parse_networks(self.salesforce_allowed_networks) if self.salesforce_allowed_networks else None

    @property
    def outbound_fields(self) -> dict[str, frozenset[str]]:
        """Per object, the fields its Outbound Message is declared to send (empty: none declared)."""
        return parse_outbound_fields(self.salesforce_outbound_fields) if self.salesforce_outbound_fields else {}

    @property
    def cdc_topics(self) -> list[str]:
        return parse_topics(self.salesforce_cdc_topics)

    @property
    def org_id_15(self) -> str:
        return self.salesforce_org_id[:15]


class SettingsError(SystemExit):
    """Raised at start-up with one line per bad setting."""


def describe_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        name = "_".join(str(p) for p in err["loc"]).upper()
        if not name:  # a rule over several settings says itself what is wrong
            lines.append(f"crm-enrich: {err['msg'].removeprefix('Value error, ')}")
            continue
        problem = "is missing" if err["type"] == "missing" else f"is invalid: {err['msg']}"
        lines.append(f"crm-enrich: setting {name} {problem}")
    return "\n".join(lines)


def load_settings(**overrides) -> Settings:
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(describe_errors(exc)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()


def exit_on_bad_settings() -> Settings:
    """For process start-up: the message goes to stderr and the process exits.
    Status 3 is gunicorn's "worker failed to boot", which stops the server
    instead of respawning workers that can never start."""
    try:
        return get_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr, flush=True)
        raise SystemExit(3) from None
