"""Clearout's bulk lists (docs/clearout.md#bulk-verify, docs/clearout.md#bulk-finder):
upload a CSV, follow its progress, fetch the result file, cancel, remove.

A list is one upload of many rows, processed by Clearout at its own pace:
a large run pays one request per list (plus its progress checks) instead
of one rate-limited request per address. Every row carries our job id in a
column of its own ("Other columns are preserved"), so the result file maps
each verdict back to its job without us keeping any address beside it.

Errors are the instant client's classes (crm_enrich/providers/clearout.py);
a busy account (too many lists running, codes 1001 / 1083) is a
ProviderUnavailable to retry later.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Literal

import requests

from crm_enrich.providers.clearout import ClearoutClient, ClearoutVerdict, clearout_verdict, email_type_of
from crm_enrich.providers.errors import ProviderRejected, ProviderUnavailable

Kind = Literal["verify", "finder"]
JOB_COLUMN = "Job Id"
E_BUSY = (1001, 1083)
E_NOT_AVAILABLE = 1029
UPLOAD_READ_TIMEOUT_S = 60
DOWNLOAD_TIMEOUT_S = 60

# Each kind's paths and column names (the two APIs differ in small ways:
# `percentile` / `percentage`, `/download/result` without a prefix).
_PATHS = {
    "verify": {"upload": "/email_verify/bulk", "progress": "/email_verify/bulk/progress_status",
               "result": "/download/result", "cancel": "/email_verify/list/cancel",
               "remove": "/email_verify/list/remove", "percent": "percentile"},
    "finder": {"upload": "/email_finder/bulk", "progress": "/email_finder/bulk/progress_status",
               "result": "/email_finder/download/result", "cancel": "/email_finder/list/cancel",
               "remove": "/email_finder/list/remove", "percent": "percentage"},
}
VERIFY_COLUMNS = ("Email", JOB_COLUMN)
FINDER_COLUMNS = ("First Name", "Last Name", "Company", "Domain", JOB_COLUMN)


class ListBusy(ProviderUnavailable):
    """Clearout runs as many lists for the account as it allows: upload later."""


@dataclass(frozen=True)
class Progress:
    # queued, running, completed, cancelled, failed; anything else Clearout
    # may say is passed on as it is (and treated as still running).
    status: str
    percent: int | None


def _csv(columns: tuple[str, ...], rows: list[dict]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


class ClearoutBulk:
    """The bulk endpoints, sent through the instant client (same token,
    limiter, breaker and error classes)."""

    def __init__(self, client: ClearoutClient):
        self.client = client

    def _call(self, method: str, path: str, **kwargs) -> dict:
        resp, body = self.client._send(method, path, "bulk", kwargs.pop("read_timeout_s", 30), **kwargs)
        error = body["error"] if isinstance(body.get("error"), dict) else {}
        if error.get("code") in E_BUSY:
            raise ListBusy(f"clearout {path}: {error.get('code')} too many lists running", resp.status_code)
        self.client._raise_for(path, resp, body)
        return body.get("data") or {}

    def upload(self, kind: Kind, name: str, rows: list[dict]) -> str:
        """Upload rows (dicts with the kind's columns) as one list; its list id."""
        columns = VERIFY_COLUMNS if kind == "verify" else FINDER_COLUMNS
        data = self._call("POST", _PATHS[kind]["upload"], read_timeout_s=UPLOAD_READ_TIMEOUT_S,
                          files={"file": (f"{name}.csv", _csv(columns, rows), "text/csv")},
                          data={"ignore_duplicate_file": "true"})
        if not data.get("list_id"):
            raise ProviderRejected(f"clearout {_PATHS[kind]['upload']}: no list_id in the answer")
        return str(data["list_id"])

    def progress(self, kind: Kind, list_id: str) -> Progress:
        data = self._call("GET", _PATHS[kind]["progress"], params={"list_id": list_id})
        percent = data.get(_PATHS[kind]["percent"])
        return Progress(str(data.get("progress_status") or "unknown").lower(),
                        int(percent) if isinstance(percent, (int, float)) else None)

    def result_rows(self, kind: Kind, list_id: str) -> list[dict]:
        """The result file's rows. The link Clearout gives is pre-signed
        and short-lived: it is fetched at once, without our token (it is
        someone else's host)."""
        url = self._call("POST", _PATHS[kind]["result"], json={"list_id": list_id}).get("url")
        if not url:
            raise ProviderRejected(f"clearout {_PATHS[kind]['result']}: no url in the answer")
        try:
            resp = requests.get(url, timeout=(5, DOWNLOAD_TIMEOUT_S))
        except requests.RequestException as exc:
            raise ProviderUnavailable(f"clearout result file: {type(exc).__name__}") from None
        if resp.status_code >= 500:
            raise ProviderUnavailable(f"clearout result file: {resp.status_code}", resp.status_code)
        if resp.status_code != 200:
            raise ProviderRejected(f"clearout result file: {resp.status_code}", resp.status_code)
        return list(csv.DictReader(io.StringIO(resp.content.decode("utf-8-sig"))))

    def cancel(self, kind: Kind, list_id: str) -> None:
        self._call("POST", _PATHS[kind]["cancel"], json={"list_id": list_id})

    def remove(self, kind: Kind, list_id: str) -> None:
        """Clearout keeps results 30 days; we drop them once we have them."""
        self._call("POST", _PATHS[kind]["remove"], json={"list_id": list_id, "ignore_result": True})


# -- reading result rows -------------------------------------------------------------

_STATUS = {"valid": "valid", "invalid": "invalid", "catch all": "catch_all", "catch_all": "catch_all",
           "unknown": "unknown"}


# The instant answer's flags, as the result file's columns name them.
_FLAG_COLUMNS = {"disposable": "Disposable", "role": "Role Account", "free": "Free Account"}


def row_verdict(row: dict) -> ClearoutVerdict:
    """A verify result row -> the same verdict an instant check gives.
    The file has labels (`Valid`, `Catch All`; `Yes`, `Risky`) and a reason,
    but no sub-status code; its account-status columns are the instant
    answer's flags, so the address's type needs no check of its own."""
    label = (row.get("Clearout Verification Status") or "").strip()
    status = _STATUS.get(label.lower(), "unknown")
    safe = (row.get("Clearout Safe to Send") or "").strip().lower() or None
    reason = (row.get("Clearout Reason") or "").strip()
    detail = "; ".join(part for part in (reason, f"safe to send: {safe}" if safe else "") if part)
    return ClearoutVerdict(verdict=clearout_verdict(status, None, safe), provider_status=status,
                           detail=f"bulk: {detail or label or status}", sub_status=None, safe_to_send=safe,
                           verified_at=(row.get("Clearout Verified At (UTC)") or "").strip() or None,
                           email_type=email_type_of({flag: row.get(f"Clearout {column} Status")
                                                     for flag, column in _FLAG_COLUMNS.items()}))


def row_cancelled(row: dict) -> bool:
    """A row Clearout never verified because its list was cancelled."""
    reason = row.get("Clearout Reason") or row.get("Clearout Finder Reason") or ""
    return "cancel" in reason.lower()


def row_found_email(row: dict) -> str | None:
    """A finder result row's address, if Clearout found one."""
    email = (row.get("Clearout Finder Email Address") or "").strip()
    found = (row.get("Clearout Finder Status") or "").strip().lower() == "found"
    return email if found and "@" in email else None
