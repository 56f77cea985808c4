"""Clearout's bulk lists in the simulator (docs/clearout.md#bulk-verify,
docs/clearout.md#bulk-finder), installed into the Clearout app by
crm_enrich/sandbox/clearout.py.

    POST /v2/email_verify/bulk                    multipart: file (.csv), optimize, ignore_duplicate_file
    GET  /v2/email_verify/bulk/progress_status    ?list_id= -> {progress_status, percentile}
    POST /v2/download/result                      {list_id} -> {url} (pre-signed, 300 s)
    POST /v2/email_verify/list/cancel | remove    {list_id}
    POST /v2/email_finder/bulk                    multipart: file (.csv with a name and a domain/company column)
    GET  /v2/email_finder/bulk/progress_status    ?list_id= -> {progress_status, percentage}
    POST /v2/email_finder/download/result | list/cancel | list/remove
    GET  /results/<list_id>.csv?X-Amz-...         the result file (no token: a pre-signed link)

A list is `queued` for `bulk_start_delay_s`, then `running`: rows are
processed at `bulk_rows_per_s` of real time, each charged as it is
processed (1 credit per billable verification; 4 / 2 per address found;
duplicates in a file, `unknown` verdicts, test addresses and rows not found
are free), until `completed`. Uploads beyond `bulk_concurrency` lists
queued or running per kind get the failed envelope 1001 / 1083; a file
needing more credits than are left gets 402 / 1028 with `required_credits`.
Cancelled lists keep the rows they processed; the rest come back
`Unknown` / "Request cancelled" and are free.

Switches (POST /_sandbox/clearout/config): `bulk_rows_per_s`,
`bulk_start_delay_s`, `bulk_concurrency`, `bulk_url_ttl_s`, and
`bulk_outcome` for lists uploaded from then on: "complete" (default),
"cancel" (cancelled half way, as if a person did it in Clearout's app) or
"fail" (status "failed" half way; no result file).

Inferred (the contract does not say): charging row by row, the `queued`,
`cancelled` and `failed` statuses, 1029 for a result asked before the list
is done, the credit check counting every row, and that a finder file's
columns are found by these header names. The simulator reads csv only.
"""
from __future__ import annotations

import csv
import hashlib
import hmac
import io
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from flask import Flask, Response, g, request

from . import clearout as co

RESULTS_PATH = "/results/"
UPLOAD_PATHS = frozenset({co.PREFIX + "/email_verify/bulk", co.PREFIX + "/email_finder/bulk"})
E_VERIFY_BUSY, E_FINDER_BUSY = 1001, 1083
E_NO_EMAIL_COLUMN = 1004
E_NOT_YOURS = 1008
E_LIST_CREDITS = 1028
E_NOT_AVAILABLE = 1029
E_NOT_CANCELLABLE = 1116
E_BAD_FILE = 1100

EMAIL_HEADERS = ("email", "emails", "email address", "emailaddress")
NAME_HEADERS = ("full name", "name", "first name")
DOMAIN_HEADERS = ("domain", "website", "company domain", "company", "company name")
OUTCOMES = ("complete", "cancel", "fail")
VERIFY_LABELS = {"valid": "Valid", "invalid": "Invalid", "catch_all": "Catch All", "unknown": "Unknown"}


@dataclass
class BulkConfig:
    rows_per_s: float = 50.0   # Inferred: Clearout publishes no speed
    start_delay_s: float = 1.0
    concurrency: int = 5
    url_ttl_s: float = 300.0
    outcome: str = "complete"


@dataclass
class BulkList:
    list_id: str
    kind: str                 # verify | finder
    token: str
    name: str
    rows: list[dict]          # each: the uploaded columns, "_result" (columns to add), "_cost"
    created_at: float
    outcome: str
    status: str = "queued"
    processed: int = 0
    started_at: float | None = None
    removed: bool = False
    charged: set = field(default_factory=set)


class BulkLists:
    def __init__(self, state: co.ClearoutSimState, dataset):
        self.state, self.dataset = state, dataset
        self.secret = secrets.token_bytes(16)
        self.reset()

    def reset(self) -> None:
        with self.state.lock:
            self.cfg = BulkConfig()
            self.lists: dict[str, BulkList] = {}

    def config(self) -> dict:
        return {"bulk_rows_per_s": self.cfg.rows_per_s, "bulk_start_delay_s": self.cfg.start_delay_s,
                "bulk_concurrency": self.cfg.concurrency, "bulk_url_ttl_s": self.cfg.url_ttl_s,
                "bulk_outcome": self.cfg.outcome, "bulk_lists": self.counts()}

    def configure(self, spec: dict) -> None:
        """Raises ValueError for a bad value (answered 400)."""
        with self.state.lock:
            if "bulk_rows_per_s" in spec:
                self.cfg.rows_per_s = max(0.001, float(spec["bulk_rows_per_s"]))
            if "bulk_start_delay_s" in spec:
                self.cfg.start_delay_s = max(0.0, float(spec["bulk_start_delay_s"]))
            if "bulk_concurrency" in spec:
                self.cfg.concurrency = max(1, int(spec["bulk_concurrency"]))
            if "bulk_url_ttl_s" in spec:
                self.cfg.url_ttl_s = float(spec["bulk_url_ttl_s"])
            if "bulk_outcome" in spec:
                if spec["bulk_outcome"] not in OUTCOMES:
                    raise ValueError("bulk_outcome")
                self.cfg.outcome = spec["bulk_outcome"]

    def counts(self) -> dict:
        out: dict[str, int] = {}
        for lst in self.lists.values():
            out[f"{lst.kind}_{lst.status}"] = out.get(f"{lst.kind}_{lst.status}", 0) + 1
        return out

    # -- time passes ---------------------------------------------------------------
    def advance(self, lst: BulkList) -> None:
        """Bring a list up to now: start it, process rows, charge them, end it.
        Called with the state's lock held."""
        now = self.state.clock()
        if lst.status == "queued" and now >= lst.created_at + self.cfg.start_delay_s:
            lst.status, lst.started_at = "running", lst.created_at + self.cfg.start_delay_s
        if lst.status != "running" or lst.started_at is None:
            return
        target = min(len(lst.rows), math.floor((now - lst.started_at) * self.cfg.rows_per_s))
        stop_at = len(lst.rows) if lst.outcome == "complete" else len(lst.rows) // 2
        target = min(target, stop_at)
        for row in lst.rows[lst.processed:target]:
            key = row["_key"]
            if key not in lst.charged:
                lst.charged.add(key)
                cost = min(row["_cost"], self.state.credits)
                self.state.credits -= cost
                self.state.spent += cost
        lst.processed = max(lst.processed, target)
        if lst.processed >= stop_at:
            lst.status = {"complete": "completed", "cancel": "cancelled", "fail": "failed"}[lst.outcome]

    def busy(self, kind: str) -> int:
        for lst in self.lists.values():
            self.advance(lst)
        return sum(1 for lst in self.lists.values() if lst.kind == kind and lst.status in ("queued", "running"))

    # -- rows --------------------------------------------------------------------------
    def verify_row(self, email: str) -> tuple[dict, int]:
        time_taken = 200 + co._h("verify-time", email.lower()) % 1200
        test = co.test_address_result(email, time_taken)
        data = test if test is not None else co.dataset_result(self.dataset, email, time_taken)
        cost = 0 if test is not None or data["status"] == "unknown" else co.COST_VERIFY
        yes_no = {"yes": "Yes", "no": "No", "risky": "Risky", "unknown": "Unknown"}
        return {
            "Clearout Safe to Send": yes_no.get(data["safe_to_send"], data["safe_to_send"]),
            "Clearout Verification Status": VERIFY_LABELS[data["status"]],
            "Clearout Reason": data["sub_status"]["desc"],
            "Clearout Suggested Email": data["suggested_email_address"],
            "Clearout Bounce Type": data["bounce_type"].capitalize(),
            "Clearout Disposable Status": data["disposable"].capitalize(),
            "Clearout Free Account Status": data["free"].capitalize(),
            "Clearout Role Account Status": data["role"].capitalize(),
            "Clearout Gibberish Status": data["gibberish"].capitalize(),
            "Clearout Account": data["detail_info"]["account"],
            "Clearout Domain": data["detail_info"]["domain"],
            "Clearout MX Record": data["detail_info"].get("mx_record", ""),
            "Clearout SMTP Provider": data["detail_info"].get("smtp_provider", ""),
            "Clearout Verified At (UTC)": data["verified_on"],
            "Clearout Time Taken (ms)": str(time_taken),
        }, cost

    def finder_row(self, name: str, domain: str) -> tuple[dict, int]:
        data, cost = co.finder_result(self.dataset, name, domain) if name and domain else (None, 0)
        found = data["emails"][0] if data else None
        return {
            "Clearout Finder Full Name": data["full_name"] if data else name.lower(),
            "Clearout Finder First Name": data["first_name"] if data else "",
            "Clearout Finder Last Name": data["last_name"] if data else "",
            "Clearout Finder Domain": data["domain"] if data else domain,
            "Clearout Finder Company": data["company"]["name"] if data else "",
            "Clearout Finder Email Address": found["email_address"] if found else "",
            "Clearout Finder Confidence Score": str(data["confidence_score"]) if data else "",
            "Clearout Finder Business Account": "Yes" if found else "",
            "Clearout Finder Status": "Found" if found else "Not Found",
            "Clearout Finder Reason": "" if found else "Email address not found",
            "Clearout Finder Processed At (UTC)": co._now_iso(),
        }, cost

    def unprocessed_row(self, kind: str) -> dict:
        if kind == "verify":
            return {"Clearout Verification Status": "Unknown", "Clearout Reason": "Request cancelled",
                    "Clearout Safe to Send": "Unknown"}
        return {"Clearout Finder Status": "", "Clearout Finder Reason": "Request cancelled"}

    def result_csv(self, lst: BulkList) -> bytes:
        columns = [c for c in lst.rows[0] if not c.startswith("_")] if lst.rows else []
        extra = list(lst.rows[0]["_result"]) if lst.rows else []
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns + extra, extrasaction="ignore")
        writer.writeheader()
        for i, row in enumerate(lst.rows):
            added = row["_result"] if i < lst.processed else self.unprocessed_row(lst.kind)
            writer.writerow({**{c: row[c] for c in columns}, **added})
        return out.getvalue().encode()

    def sign(self, list_id: str, expires: int) -> str:
        return hmac.new(self.secret, f"{list_id}|{expires}".encode(), hashlib.sha256).hexdigest()


def _header(fieldnames: list[str], wanted: tuple[str, ...]) -> str | None:
    by_lower = {name.strip().lower(): name for name in fieldnames}
    return next((by_lower[w] for w in wanted if w in by_lower), None)


def install(app: Flask, lists: BulkLists) -> None:
    state = lists.state

    def list_for(kind: str, list_id: str):
        """(list, None) or (None, the failed answer)."""
        lst = lists.lists.get(list_id)
        if lst is None or lst.kind != kind or lst.removed:
            return None, co.failed(200, "list is not available", E_NOT_AVAILABLE)
        if lst.token != g.clearout_token:
            return None, co.failed(200, "you may not access this list", E_NOT_YOURS)
        lists.advance(lst)
        return lst, None

    def read_file():
        """(csv rows, filename, None) or (None, None, a 400)."""
        upload = request.files.get("file")
        if upload is None:
            return None, None, co.validation_failed("file", '"file" is required', "any.required")
        filename = upload.filename or ""
        if not filename.lower().endswith((".csv", ".xlsx")):
            return None, None, co.validation_failed("file", '"file" must be one of [csv, xlsx]', "any.allowOnly")
        if filename.lower().endswith(".xlsx"):
            return None, None, co.validation_failed("file", "the sandbox reads csv files only", "any.allowOnly")
        try:
            text = upload.read().decode("utf-8-sig")
        except UnicodeDecodeError:
            return None, None, co.validation_failed("file", '"file" is not a readable csv', "any.invalid")
        reader = csv.DictReader(io.StringIO(text))
        return reader, filename, None

    def upload(kind: str):
        reader, filename, problem = read_file()
        if problem:
            return problem
        fieldnames = list(reader.fieldnames or [])
        raw_rows = list(reader)
        if kind == "verify":
            email_col = _header(fieldnames, EMAIL_HEADERS)
            if email_col is None or not raw_rows:
                return co.failed(400, "no email column found in the file", E_NO_EMAIL_COLUMN)
        else:
            name_col, domain_col = _header(fieldnames, NAME_HEADERS), _header(fieldnames, DOMAIN_HEADERS)
            if name_col is None or domain_col is None or not raw_rows:
                return co.failed(400, "the file needs a name column and a domain or company column", E_BAD_FILE)
        with state.lock:
            limit = state.config.daily_verify_limit
            daily_used = limit is not None and state.daily_verify_count >= int(limit)
            busy = lists.busy(kind) >= lists.cfg.concurrency
            credits = state.credits
            outcome = lists.cfg.outcome
        if kind == "verify" and daily_used:
            return co.failed(200, "daily verify limit reached, retry tomorrow", co.E_DAILY_LIMIT)
        if busy:
            return co.failed(200, "too many bulk jobs running; wait for one to finish",
                             E_VERIFY_BUSY if kind == "verify" else E_FINDER_BUSY)
        needed = len(raw_rows) * (co.COST_VERIFY if kind == "verify" else co.COST_FINDER)
        if credits <= 0:
            return co.out_of_credits(state)
        if credits < needed:
            state.bump("rejected_402")
            return co.failed(402, "not enough credits for this list", E_LIST_CREDITS,
                             {"required_credits": needed - credits})
        rows = []
        for raw in raw_rows:
            row = {k: (v or "") for k, v in raw.items() if k is not None}
            if kind == "verify":
                email = row[email_col].strip()
                row["_key"] = email.lower()
                row["_result"], row["_cost"] = lists.verify_row(email)
            else:
                first = row.get(_header(fieldnames, ("first name",)) or "", "")
                last = row.get(_header(fieldnames, ("last name",)) or "", "")
                name = " ".join(p for p in (first.strip(), last.strip()) if p) or row[name_col].strip()
                domain = (row.get(_header(fieldnames, ("domain", "website", "company domain")) or "", "").strip()
                          or row.get(_header(fieldnames, ("company", "company name")) or "", "").strip())
                row["_key"] = f"{name.lower()}|{domain.lower()}"
                row["_result"], row["_cost"] = lists.finder_row(" ".join(name.split()), domain)
            rows.append(row)
        list_id = secrets.token_hex(12)
        with state.lock:
            lists.lists[list_id] = BulkList(list_id, kind, g.clearout_token, filename, rows, state.clock(), outcome)
        g.sandbox_extra["rows"] = len(rows)
        return co.success({"list_id": list_id})

    def _json_object() -> dict:
        """The request's JSON body if it is an object, else nothing (a list,
        a number: no list id in it, so a clear 400)."""
        body = request.get_json(silent=True)
        return body if isinstance(body, dict) else {}

    def with_list(kind: str, params: dict, location: str, answer: Callable[[BulkList], Response]):
        """`answer(list)`, called with the state's lock held, for the list
        `params["list_id"]` names; or the 400 for a missing or empty id, or
        the failed answer for a list that is not the caller's."""
        problem = _list_id_problem(params, location)
        if problem:
            return problem
        with state.lock:
            lst, problem = list_for(kind, params["list_id"].strip())
            return problem or answer(lst)

    def progress(kind: str):
        def answer(lst: BulkList):
            done = 100 if lst.status == "completed" else math.floor(100 * lst.processed / max(1, len(lst.rows)))
            return co.success({"progress_status": lst.status,
                               "percentile" if kind == "verify" else "percentage": done})
        return with_list(kind, request.args.to_dict(), "query", answer)

    def download(kind: str):
        def answer(lst: BulkList):
            if lst.status not in ("completed", "cancelled"):
                return co.failed(200, "list is not available", E_NOT_AVAILABLE)
            expires = int(time.time() + lists.cfg.url_ttl_s)
            url = (f"{request.host_url.rstrip('/')}{RESULTS_PATH}{lst.list_id}.csv?X-Amz-Expires="
                   f"{int(lists.cfg.url_ttl_s)}&X-Amz-Date={expires}"
                   f"&X-Amz-Signature={lists.sign(lst.list_id, expires)}")
            return co.success({"url": url})
        return with_list(kind, _json_object(), "body", answer)

    def cancel(kind: str):
        def answer(lst: BulkList):
            if lst.status not in ("queued", "running"):
                return co.failed(200, "list is not in a cancellable stage", E_NOT_CANCELLABLE)
            lst.status = "cancelled"
            return co.success({"name": lst.name, "source": "upload", "created_on": co._now_iso()})
        return with_list(kind, _json_object(), "body", answer)

    def remove(kind: str):
        def answer(lst: BulkList):
            if lst.status in ("queued", "running"):
                return co.failed(200, "a list cannot be removed while it is being processed")
            lst.removed = True
            return co.success({"name": lst.name, "source": "upload", "created_on": co._now_iso()})
        return with_list(kind, _json_object(), "body", answer)

    for kind, prefix in (("verify", "/email_verify"), ("finder", "/email_finder")):
        base = co.PREFIX + prefix
        download_path = co.PREFIX + ("/download/result" if kind == "verify" else "/email_finder/download/result")
        app.add_url_rule(f"{base}/bulk", f"bulk_upload_{kind}", lambda k=kind: upload(k), methods=["POST"])
        app.add_url_rule(f"{base}/bulk/progress_status", f"bulk_progress_{kind}", lambda k=kind: progress(k))
        app.add_url_rule(download_path, f"bulk_download_{kind}", lambda k=kind: download(k), methods=["POST"])
        app.add_url_rule(f"{base}/list/cancel", f"bulk_cancel_{kind}", lambda k=kind: cancel(k), methods=["POST"])
        app.add_url_rule(f"{base}/list/remove", f"bulk_remove_{kind}", lambda k=kind: remove(k), methods=["POST"])

    @app.get(RESULTS_PATH + "<list_id>.csv")
    def result_file(list_id: str):
        try:
            expires = int(request.args.get("X-Amz-Date", ""))
        except ValueError:
            expires = 0
        signature = request.args.get("X-Amz-Signature", "")
        if not hmac.compare_digest(signature, lists.sign(list_id, expires)) or time.time() > expires:
            return Response("<Error><Code>AccessDenied</Code></Error>", status=403, mimetype="application/xml")
        with state.lock:
            lst = lists.lists.get(list_id)
            if lst is None or lst.removed:
                return Response("<Error><Code>NoSuchKey</Code></Error>", status=404, mimetype="application/xml")
            body = lists.result_csv(lst)
        return Response(body, mimetype="text/csv")


def _list_id_problem(body: dict, location: str = "body"):
    value = body.get("list_id")
    if value is None:
        return co.validation_failed("list_id", '"list_id" is required', "any.required", location)
    if not isinstance(value, str) or not value.strip():
        return co.validation_failed("list_id", '"list_id" is not allowed to be empty', "any.empty", location)
    return None
