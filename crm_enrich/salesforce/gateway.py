"""Salesforce access: we obtain the OAuth token ourselves (client
credentials or JWT bearer) and hand simple-salesforce only session_id +
instance_url ("direct" mode), so a rejected token can never send it into
its re-login recursion (docs/salesforce.md#sessions). Writes go through
`restful`, which is bounded and records Sforce-Limit-Info.
"""
from __future__ import annotations

import csv
import io
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import jwt
import requests
from requests import PreparedRequest, Response
from requests.adapters import HTTPAdapter
from simple_salesforce import Salesforce, format_soql
from simple_salesforce.exceptions import SalesforceError as SimpleSalesforceError
from simple_salesforce.exceptions import SalesforceExpiredSession

from crm_enrich.settings import Settings

TIMEOUT = (5, 60)
RETRYABLE_CODES = {"UNABLE_TO_LOCK_ROW", "SERVER_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED"}
GONE_CODES = {"ENTITY_IS_DELETED", "NOT_FOUND"}


class SalesforceFailure(Exception):
    def __init__(self, code: str, message: str, retryable: bool = False):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retryable = retryable

    @property
    def record_gone(self) -> bool:
        return self.code in GONE_CODES


class _TimeoutAdapter(HTTPAdapter):
    """simple-salesforce sets no timeout of its own (issue #148)."""

    def send(self, request: PreparedRequest, stream: bool = False,
             timeout: float | tuple[float, float] | tuple[float, None] | None = None,
             verify: bool | str = True, cert: bytes | str | tuple[bytes | str, bytes | str] | None = None,
             proxies: Mapping[str, str] | None = None) -> Response:
        return super().send(request, stream=stream, timeout=TIMEOUT if timeout is None else timeout,
                            verify=verify, cert=cert, proxies=proxies)


def new_http_session() -> requests.Session:
    session = requests.Session()
    session.mount("https://", _TimeoutAdapter())
    session.mount("http://", _TimeoutAdapter())
    return session


@dataclass
class Token:
    access_token: str
    instance_url: str
    user_id: str | None = None  # the integration user, last part of the identity URL


class TokenProvider:
    def __init__(self, settings: Settings, session: requests.Session):
        self.settings = settings
        self.session = session
        self._token: Token | None = None
        self._lock = threading.Lock()

    def get(self, refresh: bool = False) -> Token:
        with self._lock:
            if self._token is None or refresh:
                self._token = self._request()
            return self._token

    def _request(self) -> Token:
        s = self.settings
        url = f"{str(s.salesforce_login_url).rstrip('/')}/services/oauth2/token"
        if s.salesforce_username and s.salesforce_private_key_file:
            assertion = jwt.encode(
                {"iss": s.salesforce_client_id, "sub": s.salesforce_username,
                 "aud": str(s.salesforce_login_url).rstrip("/"), "exp": int(time.time()) + 180},
                s.salesforce_private_key_file.read_bytes(), algorithm="RS256")
            data = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion}
            auth = None
        else:
            # Settings require the secret unless both JWT settings are given.
            assert s.salesforce_client_secret is not None
            data = {"grant_type": "client_credentials"}
            auth = (s.salesforce_client_id, s.salesforce_client_secret)
        try:
            resp = self.session.post(url, data=data, auth=auth, timeout=TIMEOUT)
        except requests.RequestException as exc:
            raise SalesforceFailure("LOGIN_UNAVAILABLE", type(exc).__name__, retryable=True) from None
        if resp.status_code >= 500:
            raise SalesforceFailure("LOGIN_UNAVAILABLE", f"HTTP {resp.status_code}", retryable=True)
        body = resp.json() if resp.headers.get("content-type", "").startswith("application/json") else {}
        if resp.status_code != 200 or "access_token" not in body:
            raise SalesforceFailure(body.get("error", "LOGIN_FAILED"),
                                    body.get("error_description", f"HTTP {resp.status_code}"))
        identity = body.get("id") or ""
        return Token(body["access_token"], body["instance_url"], identity.rstrip("/").rpartition("/")[2] or None)


def _failure_from(exc: SimpleSalesforceError) -> SalesforceFailure:
    content = exc.content
    first: dict = content[0] if isinstance(content, list) and content and isinstance(content[0], dict) else {}
    code = first.get("errorCode") or first.get("statusCode") or f"HTTP_{exc.status}"
    message = str(first.get("message", ""))[:300]
    retryable = code in RETRYABLE_CODES or (exc.status or 0) >= 500
    return SalesforceFailure(code, message, retryable)


class SalesforceGateway:
    """One per worker process (requests sessions are not shared across forks)."""

    def __init__(self, settings: Settings, session: requests.Session | None = None,
                 on_usage: Callable[[int, int], None] | None = None,
                 on_call: Callable[[], None] | None = None):
        self.settings = settings
        self.session = session or new_http_session()
        self.tokens = TokenProvider(settings, self.session)
        self.on_usage = on_usage
        self.on_call = on_call
        self.api_usage: tuple[int, int] | None = None

    @property
    def integration_user_id(self) -> str | None:
        return self.tokens.get().user_id

    def _client(self, token: Token) -> Salesforce:
        return Salesforce(instance_url=token.instance_url, session_id=token.access_token,
                          session=self.session, version=self.settings.salesforce_api_version)

    def _call(self, fn):
        """Run fn(sf). An expired session is refreshed once and the call
        retried once; a second rejection is an error, never a loop."""
        for refresh in (False, True):
            sf = self._client(self.tokens.get(refresh=refresh))
            try:
                result = fn(sf)
            except SalesforceExpiredSession:
                if refresh:
                    raise SalesforceFailure("INVALID_SESSION_ID",
                                            "token rejected again right after a refresh") from None
                continue
            except SimpleSalesforceError as exc:
                raise _failure_from(exc) from None
            except requests.RequestException as exc:
                raise SalesforceFailure("CONNECTION", type(exc).__name__, retryable=True) from None
            finally:
                if self.on_call:
                    self.on_call()
                usage = sf.api_usage.get("api-usage")
                if usage and (usage.used, usage.total) != self.api_usage:
                    self.api_usage = (usage.used, usage.total)
                    if self.on_usage:
                        self.on_usage(usage.used, usage.total)
            return result
        raise AssertionError("unreachable")

    def read_records(self, object_type: str, ids: list[str], fields: list[str]) -> dict[str, dict]:
        """One SOQL query for up to 200 ids; deleted records are simply absent.
        Relationship fields ("Account.Name") come back flattened under their
        dotted name."""
        columns = ", ".join(sorted({"Id", *fields}))
        soql = format_soql(f"SELECT {columns} FROM {object_type} WHERE Id IN {{}}", ids)
        result = self._call(lambda sf: sf.query_all(soql))
        return {rec["Id"]: _flatten(rec) for rec in result["records"]}

    def update_collection(self, records: list[dict]) -> list[dict]:
        """sObject Collections update (≤ 200 records, allOrNone false): one
        SaveResult per record, in order; a 200 answer may hold failures."""
        return self._call(lambda sf: sf.restful("composite/sobjects", method="PATCH",
                                                json={"allOrNone": False, "records": records}))

    def daily_api_requests(self) -> dict:
        """One call to /limits/: {"Max", "Remaining"} of the org's daily
        API allocation (docs/salesforce.md#api-limits)."""
        limits = self._call(lambda sf: sf.limits())
        return limits.get("DailyApiRequests") or {}

    def refresh_usage(self) -> None:
        """One call to /limits/ for a fresh count of the daily allocation."""
        daily = self.daily_api_requests()
        if self.on_usage and daily.get("Max"):
            self.on_usage(daily["Max"] - daily.get("Remaining", 0), daily["Max"])

    def describe(self, object_type: str) -> dict:
        return self._call(lambda sf: sf.restful(f"sobjects/{object_type}/describe/"))

    def query_page(self, soql: str | None = None, next_url: str | None = None) -> dict:
        """One page of a SOQL query (`soql`), or the page after it
        (`next_url`, the nextRecordsUrl of the page before)."""
        if next_url:
            return self._call(lambda sf: sf.query_more(next_url, identifier_is_url=True))
        return self._call(lambda sf: sf.query(soql))

    def count(self, soql: str) -> int:
        """The size of a `SELECT COUNT() FROM ...` selection: one call, no records."""
        return int(self._call(lambda sf: sf.query(soql)).get("totalSize", 0))

    # -- Bulk API 2.0 query jobs (docs/salesforce.md#bulk-api-2-query: above ~2,000
    # records). Each method is one call; waiting for the job is the caller's.

    def start_query_job(self, soql: str) -> str:
        """Create a query job; Salesforce runs it in the background. Answers its id."""
        job = self._call(lambda sf: sf.restful("jobs/query", method="POST",
                                               json={"operation": "query", "query": soql}))
        return job["id"]

    def query_job(self, job_id: str) -> dict:
        """The job's info: `state` (UploadComplete, InProgress, JobComplete,
        Failed, Aborted) and, when Failed, `errorMessage`."""
        return self._call(lambda sf: sf.restful(f"jobs/query/{job_id}"))

    def query_job_page(self, job_id: str, locator: str | None, max_records: int) -> tuple[list[dict], str | None]:
        """One set of a finished job's results: (rows as dicts, the locator of
        the next set or None after the last). A locator stays valid while the
        job exists, so a set can be read again."""
        params = {"maxRecords": max_records, **({"locator": locator} if locator else {})}

        def fetch(sf: Salesforce) -> requests.Response:
            # The results are CSV, which restful() cannot parse, and
            # simple-salesforce's Bulk 2.0 client drops the response headers
            # (Sforce-Limit-Info). _call_salesforce is what restful() uses:
            # it turns error statuses into exceptions and records the usage.
            return sf._call_salesforce("GET", f"{sf.bulk2_url}query/{job_id}/results", name="jobs/query",
                                       params=params, headers={"Accept": "text/csv"})

        resp = self._call(fetch)
        next_locator = resp.headers.get("Sforce-Locator")
        rows = list(csv.DictReader(io.StringIO(resp.text)))
        return rows, None if next_locator in (None, "", "null") else next_locator


def _flatten(record: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in record.items():
        if key == "attributes":
            continue
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
