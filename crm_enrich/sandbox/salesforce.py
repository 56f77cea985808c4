"""A local Salesforce org simulator (REST subset, OAuth token endpoint and an
Outbound Message dispatcher), built from docs/salesforce.md.

Served with `ServedApp` over HTTPS so the real simple-salesforce client can talk
to it in `direct` mode (instance_url + session_id). Everything a test needs to
steer it lives under `/_sandbox/...` (see `_control_routes`).
"""
from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import io
import itertools
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from dataclasses import fields as dc_fields
from datetime import UTC, datetime
from typing import Any
from xml.sax.saxutils import escape

import jwt
import requests
from defusedxml import ElementTree as SafeET
from flask import Flask, Response, g, jsonify, request
from flask.json.provider import DefaultJSONProvider

from . import org_metadata
from .common import SandboxRecorder, install_recorder

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------
# IDs
# --------------------------------------------------------------------------

_SUFFIX_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_ID_RE = re.compile(r"^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$")


def id_suffix(id15: str) -> str:
    """The 3-character case-checksum suffix of a 15-character Salesforce id."""
    out = []
    for chunk in range(3):
        bits = 0
        for i, ch in enumerate(id15[chunk * 5:chunk * 5 + 5]):
            if "A" <= ch <= "Z":
                bits |= 1 << i
        out.append(_SUFFIX_ALPHABET[bits])
    return "".join(out)


def to_id18(value: str) -> str:
    """15- or 18-character id → canonical 18-character id (suffix recomputed)."""
    return value[:15] + id_suffix(value[:15])


def is_valid_id(value) -> bool:
    return isinstance(value, str) and bool(_ID_RE.match(value))


def _base62(n: int) -> str:
    s = ""
    while n:
        n, r = divmod(n, 62)
        s = _BASE62[r] + s
    return s or "0"


class IdFactory:
    """Real-shaped ids: <3-char key prefix>5g00000<5 base62 chars><suffix>."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, itertools.count] = {}

    def new(self, prefix: str) -> str:
        with self._lock:
            if prefix not in self._counters:
                self._counters[prefix] = itertools.count(62 ** 4 + secrets.randbelow(62 ** 5 - 2 * 62 ** 4))
            n = next(self._counters[prefix])
        id15 = prefix + "5g" + _base62(n).rjust(10, "0")
        return id15 + id_suffix(id15)


# --------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldSpec:
    name: str
    type: str  # string/email/phone/url/picklist/int/currency/datetime/id/reference
    length: int = 0
    updateable: bool = True
    nillable: bool = True
    custom: bool = False
    picklist_values: tuple[str, ...] = ()
    restricted: bool = False

    def describe(self) -> dict:
        return {
            "name": self.name,
            "label": self.name.removesuffix("__c").replace("_", " "),
            "type": self.type,
            "length": self.length,
            "updateable": self.updateable,
            "createable": self.updateable,
            "nillable": self.nillable,
            "custom": self.custom,
            "filterable": True,
            "sortable": True,
            "picklistValues": [{"value": v, "label": v, "active": True, "defaultValue": False}
                               for v in self.picklist_values],
            "restrictedPicklist": self.restricted,
            "referenceTo": (["User"] if self.name.endswith("ById")
                            else ["Account"] if self.name == "AccountId" else []),
        }


def _f(name, type_, length=0, updateable=True, nillable=True, picklist_values=(), restricted=False):
    return FieldSpec(name, type_, length, updateable, nillable, name.endswith("__c"), tuple(picklist_values),
                     restricted)


# The Account Industry picklist of the simulated org: restricted, and (like
# many real orgs' lists) without Clodura's "Computer Software", so a write
# of that value must leave the field out or lose the whole record.
ACCOUNT_INDUSTRIES = (
    "Apparel & Fashion", "Aviation & Aerospace", "Biotechnology", "Chemicals", "Computer & Network Security",
    "Computer Games", "Construction", "E-Learning", "Entertainment", "Financial Services",
    "Food & Beverages", "Hospital & Health Care", "Industrial Automation", "Information Technology and Services",
    "Insurance", "Law Practice", "Logistics and Supply Chain", "Management Consulting", "Marketing and Advertising",
    "Mechanical or Industrial Engineering", "Medical Devices", "Real Estate", "Renewables & Environment",
    "Research", "Retail", "Telecommunications", "Transportation/Trucking/Railroad", "Other",
)


_AUDIT = [
    _f("CreatedDate", "datetime", 0, False, False),
    _f("CreatedById", "reference", 18, False, False),
    _f("LastModifiedDate", "datetime", 0, False, False),
    _f("LastModifiedById", "reference", 18, False, False),
    _f("SystemModstamp", "datetime", 0, False, False),
]
_PERSON = [
    _f("FirstName", "string", 40),
    _f("LastName", "string", 80, nillable=False),
    _f("Email", "email", 80),
    _f("Title", "string", 128),
]
_PERSON_TAIL = [
    _f("Phone", "phone", 40),
    _f("MobilePhone", "phone", 40),
]


def _custom(object_type: str) -> list[FieldSpec]:
    """The custom fields as salesforce/ deploys them to a real org."""
    return [FieldSpec(f.name, f.describe_type, f.describe_length, custom=True, picklist_values=f.picklist_values,
                      restricted=f.restricted) for f in org_metadata.custom_fields(object_type)]


_ID_FIELD = _f("Id", "id", 18, False, False)

SCHEMA: dict[str, dict[str, FieldSpec]] = {
    "Contact": {f.name: f for f in [
        _ID_FIELD, *_PERSON, _f("Department", "string", 80), *_PERSON_TAIL,
        _f("AccountId", "reference", 18), *_custom("Contact"), *_AUDIT]},
    "Lead": {f.name: f for f in [
        _ID_FIELD, *_PERSON, *_PERSON_TAIL,
        _f("Company", "string", 255, nillable=False), _f("Website", "url", 255),
        _f("Industry", "picklist", 255), _f("NumberOfEmployees", "int"),
        _f("AnnualRevenue", "currency"), *_custom("Lead"), *_AUDIT]},
    "Account": {f.name: f for f in [
        _ID_FIELD, _f("Name", "string", 255, nillable=False), _f("Website", "url", 255),
        _f("Industry", "picklist", 255, picklist_values=ACCOUNT_INDUSTRIES, restricted=True),
        _f("NumberOfEmployees", "int"),
        _f("AnnualRevenue", "currency"), *_custom("Account"), *_AUDIT]},
}
KEY_PREFIX = {"Contact": "003", "Lead": "00Q", "Account": "001"}
REQUIRED_ON_CREATE = {"Contact": ["LastName"], "Lead": ["LastName", "Company"], "Account": ["Name"]}

# What each object's Outbound Message sends: the fields salesforce/ deploys.
DEFAULT_OM_FIELDS = {obj: list(om.fields) for obj, om in org_metadata.outbound_messages().items()}

_OBJ_BY_LOWER = {k.lower(): k for k in SCHEMA}
_FIELD_BY_LOWER = {obj: {k.lower(): k for k in spec} for obj, spec in SCHEMA.items()}
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_VERSION_RE = re.compile(r"^v\d{2}\.\d$")

SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
OM_NS = "http://soap.sforce.com/2005/09/outbound"
SF_NS = "urn:sobject.enterprise.soap.sforce.com"

INVALID_SESSION = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
LIMIT_EXCEEDED = [{"errorCode": "REQUEST_LIMIT_EXCEEDED", "message": "TotalRequests Limit exceeded."}]
NOT_FOUND = [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]


def fmt_rest_dt(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}+0000"


def fmt_soap_dt(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_dt(value: str) -> datetime:
    v = value.strip()
    if v.endswith("Z"):
        v = v[:-1] + "+00:00"
    m = re.match(r"^(.*[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)([+-]\d{2})(\d{2})$", v)
    if m:  # +0000 → +00:00
        v = f"{m.group(1)}{m.group(2)}:{m.group(3)}"
    dt = datetime.fromisoformat(v)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def _now_dt() -> datetime:
    return datetime.now(UTC)


class SfError(Exception):
    """One record-level or request-level Salesforce error."""

    def __init__(self, code: str, message: str, fields: list | None = None, http: int = 400):
        super().__init__(message)
        self.code = code
        self.message = message
        self.fields = fields or []
        self.http = http

    def rest(self) -> list:
        return [{"message": self.message, "errorCode": self.code, "fields": self.fields}]

    def save_result(self) -> dict:
        return {"statusCode": self.code, "message": self.message, "fields": self.fields}


_FAULT_HTTP = {"ENTITY_IS_DELETED": 404, "NOT_FOUND": 404, "INVALID_SESSION_ID": 401,
               "REQUEST_LIMIT_EXCEEDED": 403, "SERVER_UNAVAILABLE": 503}
_FAULT_MESSAGES = {
    "UNABLE_TO_LOCK_ROW": "unable to obtain exclusive access to this record or 1 records: {id}",
    "FIELD_CUSTOM_VALIDATION_EXCEPTION": "Validation rule failed for record {id}",
    "ENTITY_IS_DELETED": "entity is deleted",
    "DUPLICATES_DETECTED": "Use one of these records?",
}


# --------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------


@dataclass
class SalesforceSimConfig:
    org_id: str = "00D5g000004XyZaEAK"
    client_id: str = "sandbox-client-id"
    client_secret: str = "sandbox-client-secret"
    jwt_username: str = "integration@sandbox.example"
    jwt_public_key_pem: str | None = None  # path; when set, JWT assertions must verify (RS256)
    token_ttl_s: float = 7200
    api_allocation: int = 15000
    query_page_size: int = 2000
    # Bulk API 2.0 query jobs: seconds from creation to JobComplete (half of
    # it UploadComplete, half InProgress).
    bulk_query_delay_s: float = 0.5
    instance_url: str | None = None  # base for EnterpriseUrl/PartnerUrl; default: last request's host
    listener_url: str | None = None  # Outbound Message endpoint; None = dispatcher idle
    om_fields: dict[str, list[str]] = field(default_factory=lambda: {k: list(v) for k, v in DEFAULT_OM_FIELDS.items()})
    om_batch_window_s: float = 0.2
    om_retry_base_s: float = 1.0
    om_retry_cap_s: float = 60.0
    om_deadline_s: float = 86400.0
    om_timeout_s: float = 60.0
    om_send_session_id: bool = False
    om_duplicate_deliveries: bool = False
    om_api_version: str = "59.0"
    om_on_update: bool = False  # also send a notification when a record is updated (loop tests)


_CONFIG_FIELDS = {f.name for f in dc_fields(SalesforceSimConfig)}


# --------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------


@dataclass
class Notification:
    id: str
    object: str
    record_id: str
    queued_at: float
    next_attempt_at: float
    state: str = "pending"  # pending / acked / failed
    attempts: int = 0
    in_flight: bool = False
    acked_at: float | None = None
    last_error: str | None = None

    def public(self) -> dict:
        return {
            "id": self.id, "object": self.object, "record_id": self.record_id,
            "state": self.state, "attempts": self.attempts, "queued_at": self.queued_at,
            "acked_at": self.acked_at, "last_error": self.last_error,
        }


@dataclass
class QueryJob:
    """A Bulk API 2.0 query job. The query runs when the job is created (a
    snapshot); the job only reports JobComplete (or Failed) once its delay
    has passed, as a real job takes a while to process."""

    id: str
    operation: str
    object: str
    query: str
    api_version: str          # "59.0": results must be read with the same version
    created: datetime
    ready_at: float
    created_by: str
    header: list[str]
    rows: list[list[str]]
    error: str | None = None  # the job ends Failed with this errorMessage

    def state(self, now: float, delay: float) -> str:
        if now >= self.ready_at:
            return "Failed" if self.error else "JobComplete"
        return "UploadComplete" if now < self.ready_at - delay / 2 else "InProgress"

    def info(self, now: float, delay: float, full: bool) -> dict:
        """Job info as create (full=False) and get (full=True) answer it."""
        state = self.state(now, delay)
        out = {"id": self.id, "operation": self.operation, "object": self.object,
               "createdById": self.created_by, "createdDate": fmt_rest_dt(self.created),
               "systemModstamp": fmt_rest_dt(self.created), "state": state,
               "concurrencyMode": "Parallel", "contentType": "CSV", "apiVersion": float(self.api_version),
               "lineEnding": "LF", "columnDelimiter": "COMMA"}
        if full:
            done = state in ("JobComplete", "Failed")
            out.update({"jobType": "V2Query",
                        "numberRecordsProcessed": len(self.rows) if state == "JobComplete" else 0,
                        "retries": 0, "totalProcessingTime": int(delay * 1000) if done else 0})
            if state == "Failed":
                out["errorMessage"] = self.error
        return out


def _locator(offset: int) -> str:
    """Salesforce's locators look like "MTAwMDA" (base64 of "10000"); we use
    the same shape for the offset of the next set. INFERRED encoding."""
    return base64.b64encode(str(offset).encode()).decode().rstrip("=")


def _offset(locator: str) -> int | None:
    try:
        text = base64.b64decode(locator + "=" * (-len(locator) % 4), validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


class SalesforceOrgState:
    """All mutable org state, guarded by one re-entrant lock."""

    def __init__(self, config: SalesforceSimConfig):
        self.config = config
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.ids = IdFactory()
        self.integration_user_id = self.ids.new("005")
        self.human_user_id = self.ids.new("005")
        self.records: dict[str, dict[str, dict]] = {obj: {} for obj in SCHEMA}
        self.deleted: set[str] = set()
        self.writes: dict[str, list[dict]] = {}
        self.tokens: dict[str, dict] = {}
        self.tokens_issued = 0
        self.token_mode = "normal"
        self.api_used = 0
        self.record_faults: dict[str, dict] = {}
        self.cursors: dict[str, tuple[list[dict], str]] = {}
        self.query_jobs: dict[str, QueryJob] = {}
        self.base_url: str | None = None
        # outbound messages
        self.action_ids = {obj: self.ids.new("04k") for obj in SCHEMA}
        self.notifications: dict[str, Notification] = {}
        self.open_batch: dict[str, tuple[float, int]] = {}  # object -> (due, count)
        self.duplicates: list[tuple[str, list[str]]] = []
        self.deliveries: list[dict] = []
        self._dispatcher: threading.Thread | None = None
        self._stopped = False
        # Called, under the lock, for every record created or changed (the
        # Pub/Sub server's change events): (object, change, record, changed
        # field names, user id, change origin).
        self.change_listeners: list[Callable[[str, str, dict, list[str], str, str], None]] = []

    # ---- tokens ---------------------------------------------------------

    def issue_token(self, user_id: str) -> str:
        with self.lock:
            token = f"{self.config.org_id[:15]}!" + secrets.token_urlsafe(48)
            self.tokens[token] = {"user": user_id, "expires": time.time() + self.config.token_ttl_s}
            self.tokens_issued += 1
            return token

    def token_valid(self, token: str) -> bool:
        with self.lock:
            info = self.tokens.get(token)
            if info is None:
                return False
            if info["expires"] <= time.time():
                del self.tokens[token]
                return False
            return True

    # ---- records --------------------------------------------------------

    def lookup(self, obj: str, rid: str) -> tuple[str, dict | None]:
        """(canonical id, record or None); raises SfError for malformed ids."""
        if not is_valid_id(rid) or rid[:3] != KEY_PREFIX[obj]:
            raise SfError("MALFORMED_ID", f"{obj} ID: id value of incorrect type: {rid}", ["Id"])
        cid = to_id18(rid)
        return cid, self.records[obj].get(cid)

    def get_live(self, obj: str, rid: str) -> tuple[str, dict]:
        cid, rec = self.lookup(obj, rid)
        if rec is None:
            raise SfError("NOT_FOUND", "The requested resource does not exist", http=404)
        if cid in self.deleted:
            raise SfError("ENTITY_IS_DELETED", "entity is deleted", http=404)
        return cid, rec

    def convert_values(self, obj: str, values: dict, *, creating: bool, system: bool) -> dict:
        """Validate client values and return {canonical field: python value}."""
        if not isinstance(values, dict):
            raise SfError("JSON_PARSER_ERROR", "Expected a JSON object")
        schema = SCHEMA[obj]
        out = {}
        not_updateable = []
        for key, value in values.items():
            name = _FIELD_BY_LOWER[obj].get(str(key).lower())
            if name is None:
                raise SfError(
                    "INVALID_FIELD",
                    f"No such column '{key}' on entity '{obj}'. If you are attempting to use a custom field, "
                    "be sure to append the '__c' after the custom field name. Please reference your WSDL "
                    "or the describe call for the appropriate names.",
                    [str(key)],
                )
            spec = schema[name]
            if not system and not spec.updateable:
                not_updateable.append(name)
                continue
            out[name] = self._convert(obj, spec, value)
        if not_updateable:
            raise SfError(
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                f"Unable to create/update fields: {', '.join(not_updateable)}. Please check the security "
                "settings of this field and verify that it is read/write for your profile or permission set.",
                not_updateable,
            )
        for name, value in out.items():
            if value is None and not schema[name].nillable and schema[name].updateable:
                raise SfError("REQUIRED_FIELD_MISSING", f"Required fields are missing: [{name}]", [name])
        if creating:
            missing = [n for n in REQUIRED_ON_CREATE[obj] if out.get(n) in (None, "")]
            if missing:
                raise SfError("REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(missing)}]", missing)
        return out

    @staticmethod
    def _convert(obj: str, spec: FieldSpec, value):
        if value is None:
            return None
        t = spec.type
        bad = SfError(
            "JSON_PARSER_ERROR",
            f"Cannot deserialize instance of {t} from value {value!r} for field {spec.name}",
            [spec.name],
        )
        if t in ("string", "textarea", "email", "phone", "url", "picklist"):
            if not isinstance(value, str):
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    value = str(value)
                else:
                    raise bad
            if spec.length and len(value) > spec.length:
                raise SfError(
                    "STRING_TOO_LONG",
                    f"{spec.name}: data value too large: {value[:60]} (max length={spec.length})",
                    [spec.name],
                )
            if spec.restricted and value and value not in spec.picklist_values:
                raise SfError("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                              f"{spec.name}: bad value for restricted picklist field: {value}", [spec.name])
            if t == "email" and value and not _EMAIL_RE.match(value):
                raise SfError("INVALID_EMAIL_ADDRESS", f"{spec.name}: invalid email address: {value}", [spec.name])
            return value
        if t == "int":
            if isinstance(value, bool):
                raise bad
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if isinstance(value, int):
                return value
            if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
                return int(value)
            raise bad
        if t == "currency":
            if isinstance(value, bool):
                raise bad
            if isinstance(value, (int, float)):
                return value
            try:
                return float(value)
            except (TypeError, ValueError):
                raise bad from None
        if t == "datetime":
            if isinstance(value, datetime):
                return value.astimezone(UTC)
            if not isinstance(value, str):
                raise bad
            try:
                return parse_dt(value)
            except ValueError:
                raise bad from None
        if t in ("id", "reference"):
            if not is_valid_id(value):
                raise SfError("MALFORMED_ID", f"{spec.name}: id value of incorrect type: {value}", [spec.name])
            return to_id18(value)
        return value

    def _changed(self, obj: str, change: str, rec: dict, names: list[str], user: str, origin: str) -> None:
        for listener in self.change_listeners:
            listener(obj, change, dict(rec), names, user, origin)

    def create(self, obj: str, values: dict, *, human: bool, fire_outbound: bool = True, origin: str = "") -> str:
        """`origin`: the change origin its change event names (API calls only)."""
        with self.lock:
            conv = self.convert_values(obj, values, creating=True, system=human)
            conv.pop("Id", None)
            rid = self.ids.new(KEY_PREFIX[obj])
            now = _now_dt()
            user = self.human_user_id if human else self.integration_user_id
            rec: dict[str, Any] = {name: None for name in SCHEMA[obj]}
            rec.update({"Id": rid, "CreatedDate": now, "CreatedById": user, "LastModifiedDate": now,
                        "LastModifiedById": user, "SystemModstamp": now})
            rec.update(conv)  # control API may override audit fields (e.g. CreatedDate)
            self.records[obj][rid] = rec
            if fire_outbound and obj in self.config.om_fields:
                self._queue_notification(obj, rid)
            self._changed(obj, "CREATE", rec, [n for n, v in rec.items() if v is not None], user, origin)
            return rid

    def delete(self, obj: str, cid: str, user: str, origin: str = "") -> None:
        """Move the record to the recycle bin as `user` (the caller holds the lock)."""
        self.deleted.add(cid)
        self._changed(obj, "DELETE", self.records[obj][cid], [], user, origin)

    def check_record_fault(self, rid: str) -> None:
        fault = self.record_faults.get(rid)
        if not fault or fault["times"] == 0:
            return
        if fault["times"] > 0:
            fault["times"] -= 1
        code = fault["statusCode"]
        msg = fault.get("message") or _FAULT_MESSAGES.get(code, code.lower().replace("_", " ")).format(id=rid)
        raise SfError(code, msg, fault.get("fields") or [], http=fault.get("http") or _FAULT_HTTP.get(code, 400))

    def prepare_update(self, obj: str, rid: str, values: dict) -> tuple[str, dict]:
        """Validate an API update (raises SfError); returns (id, converted fields)."""
        cid, _rec = self.get_live(obj, rid)
        conv = self.convert_values(obj, values, creating=False, system=False)
        self.check_record_fault(cid)
        return cid, conv

    def apply_update(self, obj: str, cid: str, conv: dict, raw: dict, via: str, origin: str = "") -> None:
        self.edit(obj, cid, conv, self.integration_user_id, origin)
        self.writes.setdefault(cid, []).append({"t": time.time(), "fields": raw, "via": via})
        if self.config.om_on_update and obj in self.config.om_fields:
            self._queue_notification(obj, cid)

    def edit(self, obj: str, cid: str, conv: dict, user: str, origin: str = "") -> dict:
        """Apply converted values as `user` (the caller holds the lock)."""
        rec = self.records[obj][cid]
        now = _now_dt()
        rec.update(conv)
        rec.update({"LastModifiedDate": now, "LastModifiedById": user, "SystemModstamp": now})
        self._changed(obj, "UPDATE", rec, [*conv, "LastModifiedDate", "LastModifiedById"], user, origin)
        return rec

    def serialize(self, obj: str, rec: dict, names: list[str] | None = None, ver: str = "v59.0") -> dict:
        out: dict[str, Any] = {"attributes": {"type": obj, "url": f"/services/data/{ver}/sobjects/{obj}/{rec['Id']}"}}
        for name in names or list(SCHEMA[obj]):
            if "." in name:
                parent, _, parent_field = name.partition(".")
                parent_rec = self.records[parent].get(rec.get(f"{parent}Id") or "")
                if parent_rec is None or parent_rec["Id"] in self.deleted:
                    out[parent] = None
                else:
                    nested = out.get(parent) or {"attributes": {
                        "type": parent, "url": f"/services/data/{ver}/sobjects/{parent}/{parent_rec['Id']}"}}
                    nested[parent_field] = _json_value(parent_rec.get(parent_field))
                    out[parent] = nested
                continue
            out[name] = _json_value(rec.get(name))
        return out

    def select(self, query: SoqlQuery, include_deleted: bool) -> list[dict]:
        """The records a parsed query selects, ordered and limited (under the lock)."""
        rows = [r for rid, r in self.records[query.object].items()
                if (include_deleted or rid not in self.deleted) and _matches(r, query.where)]
        if query.order_by:
            key = query.order_by

            def sort_key(r):
                v = r.get(key)
                return (v is not None, _norm(v) if v is not None else 0)

            rows.sort(key=sort_key, reverse=query.descending)
        if query.limit is not None:
            rows = rows[:query.limit]
        return rows

    # ---- outbound messages ---------------------------------------------

    def _queue_notification(self, obj: str, rid: str) -> None:
        now = time.time()
        due, count = self.open_batch.get(obj, (0.0, 0))
        if due <= now or count >= 100:
            due, count = now + self.config.om_batch_window_s, 0
        self.open_batch[obj] = (due, count + 1)
        nid = self.ids.new("04l")
        self.notifications[nid] = Notification(nid, obj, rid, now, due)
        self._ensure_dispatcher()
        self.cond.notify_all()

    def _ensure_dispatcher(self) -> None:
        if self._dispatcher is None or not self._dispatcher.is_alive():
            self._stopped = False
            self._dispatcher = threading.Thread(target=self._dispatch_loop, name="sf-sim-outbound", daemon=True)
            self._dispatcher.start()

    def stop(self) -> None:
        with self.cond:
            self._stopped = True
            self.cond.notify_all()

    def _pick(self):
        """Under the lock: the next POST to make, or (None, seconds to wait)."""
        cfg = self.config
        if not cfg.listener_url:
            return None, 1.0
        if self.duplicates:
            obj, ids = self.duplicates.pop(0)
            return ("dup", obj, ids), 0
        now = time.time()
        due = []
        next_due = None
        for n in self.notifications.values():
            if n.state != "pending" or n.in_flight:
                continue
            if now - n.queued_at >= cfg.om_deadline_s:
                n.state, n.last_error = "failed", n.last_error or "deadline exceeded"
                continue
            if n.next_attempt_at <= now:
                due.append(n)
            elif next_due is None or n.next_attempt_at < next_due:
                next_due = n.next_attempt_at
        if not due:
            return None, (1.0 if next_due is None else max(0.0, min(1.0, next_due - now)))
        due.sort(key=lambda n: (n.next_attempt_at, n.queued_at))
        obj = due[0].object
        batch = [n for n in due if n.object == obj][:100]
        for n in batch:
            n.in_flight = True
        return ("send", obj, [n.id for n in batch]), 0

    def _dispatch_loop(self) -> None:
        while True:
            with self.cond:
                if self._stopped:
                    return
                job, wait = self._pick()
                if job is None:
                    self.cond.wait(timeout=wait if wait > 0 else 0.01)
                    continue
                kind, obj, ids = job
                body = self.build_envelope(obj, ids)
                url = self.config.listener_url
                assert url is not None  # _pick answers no job without a listener
                timeout = self.config.om_timeout_s
                attempt = 1 + max((self.notifications[i].attempts for i in ids), default=0)
                if kind == "dup":
                    attempt -= 1
            status, acked, error = self._post(url, body, timeout)
            with self.cond:
                self.deliveries.append({
                    "t": time.time(), "object": obj, "message_ids": ids, "attempt": attempt,
                    "status_code": status, "acked": acked, "error": error, "duplicate": kind == "dup",
                    "url": url,
                })
                if kind == "dup":
                    continue
                now = time.time()
                for nid in ids:
                    n = self.notifications.get(nid)
                    if n is None:
                        continue
                    n.in_flight = False
                    n.attempts += 1
                    if acked:
                        n.state, n.acked_at, n.last_error = "acked", now, None
                        continue
                    n.last_error = error
                    delay = min(self.config.om_retry_cap_s, self.config.om_retry_base_s * 2 ** (n.attempts - 1))
                    n.next_attempt_at = now + delay
                    if n.next_attempt_at >= n.queued_at + self.config.om_deadline_s:
                        n.state = "failed"
                if acked and self.config.om_duplicate_deliveries:
                    self.duplicates.append((obj, list(ids)))

    @staticmethod
    def _post(url: str, body: bytes, timeout: float) -> tuple[int | None, bool, str | None]:
        try:
            resp = requests.post(
                url, data=body, timeout=timeout,
                headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""',
                         "User-Agent": "Salesforce - OutboundMessage (crm-enrich sandbox)"},
            )
        except requests.RequestException as exc:
            return None, False, f"{type(exc).__name__}: {exc}"
        if resp.status_code != 200:
            return resp.status_code, False, f"HTTP {resp.status_code}"
        ok, why = parse_ack(resp.content)
        return resp.status_code, ok, why

    def build_envelope(self, obj: str, ids: list[str]) -> bytes:
        cfg = self.config
        base = (cfg.instance_url or self.base_url or "https://127.0.0.1").rstrip("/")
        org15 = cfg.org_id[:15]
        if cfg.om_send_session_id:
            session = f"<SessionId>{escape(self.issue_token(self.integration_user_id))}</SessionId>"
        else:
            session = '<SessionId xsi:nil="true"/>'
        names = list(cfg.om_fields.get(obj) or ["Id"])
        if "Id" not in names:
            names.insert(0, "Id")
        parts = [
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<soapenv:Envelope xmlns:soapenv="{SOAP_NS}" xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n'
            " <soapenv:Body>\n"
            f'  <notifications xmlns="{OM_NS}">\n'
            f"   <OrganizationId>{escape(cfg.org_id)}</OrganizationId>\n"
            f"   <ActionId>{self.action_ids[obj]}</ActionId>\n"
            f"   {session}\n"
            f"   <EnterpriseUrl>{escape(base)}/services/Soap/c/{cfg.om_api_version}/{org15}</EnterpriseUrl>\n"
            f"   <PartnerUrl>{escape(base)}/services/Soap/u/{cfg.om_api_version}/{org15}</PartnerUrl>\n"
        ]
        for nid in ids:
            n = self.notifications[nid]
            rec = self.records[obj].get(n.record_id)
            parts.append(f"   <Notification>\n    <Id>{nid}</Id>\n"
                         f'    <sObject xsi:type="sf:{obj}" xmlns:sf="{SF_NS}">\n')
            if rec is None or n.record_id in self.deleted:
                parts.append(f"     <sf:Id>{n.record_id}</sf:Id>\n")
            else:
                for name in names:
                    value = rec.get(name)
                    if value is None or name not in SCHEMA[obj]:
                        continue
                    parts.append(f"     <sf:{name}>{escape(_soap_value(value))}</sf:{name}>\n")
            parts.append("    </sObject>\n   </Notification>\n")
        parts.append("  </notifications>\n </soapenv:Body>\n</soapenv:Envelope>\n")
        return "".join(parts).encode("utf-8")

    def outbound_view(self) -> dict:
        with self.lock:
            return {
                "deliveries": [dict(d) for d in self.deliveries],
                "notifications": [n.public() for n in self.notifications.values()],
            }


def _json_value(v):
    if isinstance(v, datetime):
        return fmt_rest_dt(v)
    return v


def _soap_value(v) -> str:
    if isinstance(v, datetime):
        return fmt_soap_dt(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def parse_ack(body: bytes) -> tuple[bool, str | None]:
    """Strict check of the acknowledgement (docs/salesforce.md#acknowledgement). Returns (acked, reason if not)."""
    try:
        root = SafeET.fromstring(body)
    except Exception as exc:  # ParseError, defusedxml's DTD/entity refusals
        return False, f"ack not XML: {type(exc).__name__}"
    if root.tag != f"{{{SOAP_NS}}}Envelope":
        return False, f"ack root is {root.tag}, not soapenv:Envelope"
    body_el = root.find(f"{{{SOAP_NS}}}Body")
    if body_el is None:
        return False, "ack has no soapenv:Body"
    resp = body_el.find(f"{{{OM_NS}}}notificationsResponse")
    if resp is None:
        return False, "ack has no notificationsResponse"
    ack = resp.find(f"{{{OM_NS}}}Ack")
    if ack is None:
        return False, "notificationsResponse has no Ack"
    if (ack.text or "").strip() != "true":
        return False, f"Ack is {(ack.text or '').strip()!r}"
    return True, None


# --------------------------------------------------------------------------
# SOQL subset
# --------------------------------------------------------------------------

_TOKEN_RE = re.compile(
    r"""\s*(?:(?P<str>'(?:[^'\\]|\\.)*')|(?P<op>!=|<>|<=|>=|<|>|=|\(|\)|,)"""
    # Dates and datetimes are written without quotes: 1999-01-01,
    # 1999-01-01T23:01:01Z, 1999-01-01T23:01:01+01:00 (checked in literal()).
    r"""|(?P<date>\d{4}-\d{2}-\d{2}(?:T[0-9:.]+(?:Z|[+-]\d{2}:\d{2})?)?)(?![A-Za-z0-9_])"""
    r"""|(?P<num>-?\d+(?:\.\d+)?)(?![A-Za-z_])|(?P<word>[A-Za-z_][A-Za-z0-9_.]*))"""
)
_DATETIME_LITERAL = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})$")
_COMPARISONS = ("=", "!=", "<", "<=", ">", ">=")
_UNESCAPE = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", '"': '"', "'": "'", "\\": "\\"}


@dataclass
class SoqlQuery:
    object: str
    fields: list[str]
    where: list[tuple[str, str, list]]  # (field, op, values)
    order_by: str | None = None
    descending: bool = False
    limit: int | None = None
    count: bool = False  # SELECT COUNT() FROM ...: only totalSize, no records


def _malformed(msg: str) -> SfError:
    return SfError("MALFORMED_QUERY", msg)


def parse_soql(q: str) -> SoqlQuery:
    tokens: list[tuple[str, object]] = []
    pos = 0
    q = q.rstrip()
    while pos < len(q):
        m = _TOKEN_RE.match(q, pos)
        if not m or m.end() == pos:
            raise _malformed(f"unexpected token: '{q[pos:].strip()[:20]}'")
        pos = m.end()
        kind = m.lastgroup
        assert kind is not None  # every alternative is a named group
        text = m.group(kind)
        if kind == "str":
            text = re.sub(r"\\(.)", lambda mm: _UNESCAPE.get(mm.group(1), mm.group(1)), text[1:-1])
        tokens.append((kind, text))
    i = 0

    def peek(offset=0):
        return tokens[i + offset] if i + offset < len(tokens) else ("eof", "<EOF>")

    def take():
        nonlocal i
        tok = peek()
        i += 1
        return tok

    def kw(word) -> bool:
        k, v = peek()
        return k == "word" and str(v).upper() == word

    def expect_kw(word):
        if not kw(word):
            raise _malformed(f"unexpected token: '{peek()[1]}' (expected {word})")
        take()

    def expect_word():
        k, v = take()
        if k != "word":
            raise _malformed(f"unexpected token: '{v}'")
        return str(v)

    expect_kw("SELECT")
    count = kw("COUNT") and peek(1) == ("op", "(") and peek(2) == ("op", ")")
    if count:
        i += 3
        fields = []
    else:
        fields = [expect_word()]
        while peek() == ("op", ","):
            take()
            fields.append(expect_word())
    expect_kw("FROM")
    obj_name = expect_word()
    obj = _OBJ_BY_LOWER.get(obj_name.lower())
    if obj is None:
        raise SfError("INVALID_TYPE", f"sObject type '{obj_name}' is not supported. If you are attempting to use a "
                      "custom object, be sure to append the '__c' after the entity name.")

    def field_name(name: str) -> str:
        canon = _FIELD_BY_LOWER[obj].get(name.lower())
        if canon is None:
            raise SfError("INVALID_FIELD", f"No such column '{name}' on entity '{obj}'. If you are attempting to use "
                          "a custom field, be sure to append the '__c' after the custom field name.")
        return canon

    def select_field(name: str) -> str:
        # Parent relationship fields, e.g. Contact's "Account.Name".
        if "." in name:
            rel, _, parent_field = name.partition(".")
            ref = _FIELD_BY_LOWER[obj].get(f"{rel.lower()}id")
            parent = _OBJ_BY_LOWER.get(rel.lower())
            if ref is None or parent is None or _FIELD_BY_LOWER[parent].get(parent_field.lower()) is None:
                raise SfError("INVALID_FIELD", f"Didn't understand relationship '{rel}' in field path.")
            return f"{parent}.{_FIELD_BY_LOWER[parent][parent_field.lower()]}"
        return field_name(name)

    fields = [select_field(f) for f in fields]

    def datetime_literal(fname: str, kind: str, text: str) -> datetime:
        """A dateTime field takes only an unquoted dateTime with its zone
        (Z or an offset); a quoted value or a date alone is refused, as
        Salesforce does."""
        if kind == "date" and _DATETIME_LITERAL.match(text):
            try:
                return parse_dt(text)
            except ValueError:
                raise _malformed(f"Invalid datetime: {text}") from None
        if kind == "date" and "T" in text:
            raise _malformed(f"Invalid datetime: {text}")
        if kind in ("str", "date"):
            raise SfError("INVALID_FIELD", f"value of filter criterion for field '{fname}' must be of type "
                          "dateTime and should not be enclosed in quotes")
        raise _malformed(f"unexpected token: '{text}'")

    def literal(fname):
        k, v = take()
        is_datetime = SCHEMA[obj][fname].type == "datetime"
        if is_datetime and not (k == "word" and str(v).lower() == "null"):
            return datetime_literal(fname, k, str(v))
        if k == "str":
            value = v
        elif k == "num":
            value = float(v) if "." in str(v) else int(v)
        elif k == "word" and str(v).lower() in ("null", "true", "false"):
            value = {"null": None, "true": True, "false": False}[str(v).lower()]
        else:
            raise _malformed(f"unexpected token: '{v}'")
        if SCHEMA[obj][fname].type in ("id", "reference") and value is not None:
            if not is_valid_id(value):
                raise SfError("INVALID_QUERY_FILTER_OPERATOR", f"invalid ID field: {value}")
            value = to_id18(value)
        return value

    where = []
    if kw("WHERE"):
        take()
        while True:
            fname = field_name(expect_word())
            k, v = peek()
            if k == "op" and v in (*_COMPARISONS, "<>"):
                take()
                where.append((fname, "!=" if v == "<>" else v, [literal(fname)]))
            elif kw("IN") or (kw("NOT") and peek(1)[0] == "word" and str(peek(1)[1]).upper() == "IN"):
                op = "IN"
                if kw("NOT"):
                    take()
                    op = "NOT IN"
                take()
                if take() != ("op", "("):
                    raise _malformed("unexpected token after IN (expected '(')")
                values = [literal(fname)]
                while peek() == ("op", ","):
                    take()
                    values.append(literal(fname))
                if take() != ("op", ")"):
                    raise _malformed("unexpected token in IN list (expected ')')")
                where.append((fname, op, values))
            else:
                raise _malformed(f"unexpected token: '{v}'")
            if kw("AND"):
                take()
                continue
            break
    query = SoqlQuery(obj, fields, where, count=count)
    if kw("ORDER"):
        take()
        expect_kw("BY")
        query.order_by = field_name(expect_word())
        if kw("ASC") or kw("DESC"):
            query.descending = str(take()[1]).upper() == "DESC"
    if kw("LIMIT"):
        take()
        k, v = take()
        if k != "num" or "." in str(v) or int(v) < 0:
            raise _malformed(f"unexpected token: '{v}'")
        query.limit = int(v)
    if peek()[0] != "eof":
        raise _malformed(f"unexpected token: '{peek()[1]}'")
    return query


def _norm(v):
    if isinstance(v, str):
        return v.lower()
    return v


_ORDERING = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b,
             ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}


def _matches(rec: dict, where) -> bool:
    for fname, op, values in where:
        v = rec.get(fname)
        if op in _ORDERING:
            # A null field, or a null value, never orders before or after anything.
            x = values[0]
            try:
                if v is None or x is None or not _ORDERING[op](_norm(v), _norm(x)):
                    return False
            except TypeError:  # a value of another type than the field's
                return False
            continue
        hit = any((v is None and x is None) or (v is not None and x is not None and _norm(v) == _norm(x))
                  for x in values)
        if op in ("=", "IN") and not hit:
            return False
        if op in ("!=", "NOT IN") and hit:
            return False
    return True


# --------------------------------------------------------------------------
# App
# --------------------------------------------------------------------------


def api_origin(ver: str) -> str:
    """The changeOrigin of a REST call: the API, its version and, when the
    caller named itself in `Sforce-Call-Options: client=<name>`, that name."""
    options = dict(part.strip().partition("=")[::2]
                   for part in request.headers.get("Sforce-Call-Options", "").split(",") if "=" in part)
    client = options.get("client")
    return f"com/salesforce/api/rest/{ver.removeprefix('v')}" + (f";client={client}" if client else "")


def create_salesforce_app(config: SalesforceSimConfig | None = None) -> Flask:
    config = config or SalesforceSimConfig()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    app = Flask("crm_enrich.sandbox.salesforce")
    app.url_map.strict_slashes = False
    assert isinstance(app.json, DefaultJSONProvider)
    app.json.sort_keys = False  # keep Salesforce's field order (attributes first, SELECT order)
    recorder = SandboxRecorder("salesforce")
    install_recorder(app, recorder)
    state = SalesforceOrgState(config)
    app.extensions["salesforce_sim"] = state
    app.extensions["salesforce_recorder"] = recorder

    def sf_json(payload, status=200):
        resp = jsonify(payload)
        resp.status_code = status
        return resp

    def sf_error(err: SfError):
        return sf_json(err.rest(), err.http)

    def parse_obj(obj: str) -> str | None:
        return obj if obj in SCHEMA else _OBJ_BY_LOWER.get(obj.lower())

    # ---- auth, API counter ---------------------------------------------

    @app.before_request
    def _auth():
        g.sf_counted = False
        if request.host_url:
            state.base_url = request.host_url.rstrip("/")
        path = request.path
        if not path.startswith("/services/data/"):
            return None
        parts = path.split("/")
        if len(parts) < 5 or parts[4] == "":  # version list: /services/data/
            return None
        if not _VERSION_RE.match(parts[3]):
            return sf_json(NOT_FOUND, 404)
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        with state.lock:
            if (state.token_mode == "always_401" or scheme.lower() not in ("bearer", "oauth")
                    or not state.token_valid(token.strip())):
                return sf_json(INVALID_SESSION, 401)
            if state.api_used >= state.config.api_allocation:
                g.sf_counted = True
                return sf_json(LIMIT_EXCEEDED, 403)
            state.api_used += 1
            g.sf_counted = True
            g.sandbox_extra["api_used"] = state.api_used
        return None

    @app.after_request
    def _limit_header(resp):
        if g.get("sf_counted"):
            with state.lock:
                resp.headers["Sforce-Limit-Info"] = f"api-usage={state.api_used}/{state.config.api_allocation}"
        return resp

    # ---- OAuth ----------------------------------------------------------

    @app.post("/services/oauth2/token")
    def token():
        cfg = state.config
        grant = request.form.get("grant_type", "")
        if grant == "client_credentials":
            cid, secret = request.form.get("client_id"), request.form.get("client_secret")
            if request.authorization and request.authorization.type == "basic":
                cid, secret = request.authorization.username, request.authorization.password
            if not (cid and secret and hmac.compare_digest(cid, cfg.client_id)
                    and hmac.compare_digest(secret, cfg.client_secret)):
                return sf_json({"error": "invalid_client", "error_description": "invalid client credentials"}, 400)
        elif grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            assertion = request.form.get("assertion", "")
            try:
                if cfg.jwt_public_key_pem:
                    with open(cfg.jwt_public_key_pem, "rb") as fh:
                        key = fh.read()
                    claims = jwt.decode(assertion, key, algorithms=["RS256"],
                                        options={"verify_aud": False, "require": ["exp", "iss", "sub"]})
                else:
                    claims = jwt.decode(assertion, options={"verify_signature": False, "verify_aud": False,
                                                            "require": ["exp", "iss", "sub"]})
            except jwt.ExpiredSignatureError:
                return sf_json({"error": "invalid_grant", "error_description": "expired authorization code"}, 400)
            except jwt.PyJWTError as exc:
                return sf_json({"error": "invalid_grant", "error_description": f"invalid assertion: {exc}"}, 400)
            if claims.get("iss") != cfg.client_id:
                return sf_json({"error": "invalid_client", "error_description": "invalid client credentials"}, 400)
            if claims.get("sub") != cfg.jwt_username:
                return sf_json({"error": "invalid_grant",
                                "error_description": "user hasn't approved this consumer"}, 400)
        else:
            return sf_json({"error": "unsupported_grant_type", "error_description": "grant type not supported"}, 400)
        base = request.host_url.rstrip("/")
        access = state.issue_token(state.integration_user_id)
        issued = str(int(time.time() * 1000))
        ident = f"{base}/id/{cfg.org_id}/{state.integration_user_id}"
        sig = base64.b64encode(hmac.new(cfg.client_secret.encode(), (ident + issued).encode(),
                                        hashlib.sha256).digest()).decode()
        return sf_json({"access_token": access, "instance_url": base, "id": ident, "token_type": "Bearer",
                        "issued_at": issued, "signature": sig, "scope": "api"})

    # ---- REST -----------------------------------------------------------

    @app.get("/services/data/")
    def versions():
        return sf_json([{"label": "Spring '26", "url": f"/services/data/v{v}.0", "version": f"{v}.0"}
                        for v in range(59, 67)])

    @app.get("/services/data/<ver>/limits/")
    def limits(ver):
        with state.lock:
            alloc, used = state.config.api_allocation, state.api_used
        return sf_json({"DailyApiRequests": {"Max": alloc, "Remaining": max(0, alloc - used)},
                        "DailyBulkApiBatches": {"Max": 15000, "Remaining": 15000}})

    @app.get("/services/data/<ver>/sobjects/<obj>/describe/")
    def describe(ver, obj):
        name = parse_obj(obj)
        if name is None:
            return sf_json(NOT_FOUND, 404)
        return sf_json({"name": name, "label": name, "keyPrefix": KEY_PREFIX[name], "custom": False,
                        "createable": True, "updateable": True, "queryable": True,
                        "fields": [spec.describe() for spec in SCHEMA[name].values()]})

    @app.post("/services/data/<ver>/sobjects/<obj>/")
    def create(ver, obj):
        name = parse_obj(obj)
        if name is None:
            return sf_json(NOT_FOUND, 404)
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return sf_error(SfError("JSON_PARSER_ERROR", "Request body must be a JSON object"))
        try:
            rid = state.create(name, body, human=False, origin=api_origin(ver))
        except SfError as err:
            return sf_error(err)
        return sf_json({"id": rid, "success": True, "errors": []}, 201)

    @app.route("/services/data/<ver>/sobjects/<obj>/<rid>", methods=["GET", "PATCH", "DELETE", "POST"])
    def record(ver, obj, rid):
        name = parse_obj(obj)
        if name is None:
            return sf_json(NOT_FOUND, 404)
        method = request.method
        if method == "POST":
            method = request.args.get("_HttpMethod", "").upper()
            if method != "PATCH":
                return sf_json([{"errorCode": "METHOD_NOT_ALLOWED",
                                 "message": "HTTP Method 'POST' not allowed. Allowed are GET,PATCH,DELETE"}], 405)
        try:
            with state.lock:
                if method == "GET":
                    _cid, rec = state.get_live(name, rid)
                    names = None
                    if request.args.get("fields"):
                        names = []
                        for f in request.args["fields"].split(","):
                            canon = _FIELD_BY_LOWER[name].get(f.strip().lower())
                            if canon is None:
                                raise SfError("INVALID_FIELD", f"No such column '{f.strip()}' on entity '{name}'.")
                            names.append(canon)
                    return sf_json(state.serialize(name, rec, names, ver))
                if method == "DELETE":
                    cid, _rec = state.get_live(name, rid)
                    state.delete(name, cid, state.integration_user_id, api_origin(ver))
                    return Response(status=204)
                body = request.get_json(silent=True)
                if not isinstance(body, dict):
                    raise SfError("JSON_PARSER_ERROR", "Request body must be a JSON object")
                cid, conv = state.prepare_update(name, rid, body)
                state.apply_update(name, cid, conv, body, "sobject", api_origin(ver))
                return Response(status=204)
        except SfError as err:
            return sf_error(err)

    @app.patch("/services/data/<ver>/composite/sobjects")
    def collections_update(ver: str):
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("records"), list):
            return sf_error(SfError("JSON_PARSER_ERROR", "Expected {\"allOrNone\": bool, \"records\": [...]}"))
        records = body["records"]
        g.sandbox_extra["records"] = len(records)
        g.sandbox_extra["object"] = "+".join(sorted({str((r.get("attributes") or {}).get("type"))
                                                     for r in records if isinstance(r, dict)}))
        if len(records) > 200:
            return sf_error(SfError("EXCEEDED_ID_LIMIT",
                                    "record limit reached. cannot submit more than 200 records into this call"))
        all_or_none = bool(body.get("allOrNone", False))
        with state.lock:
            prepared: list = []
            for item in records:
                try:
                    if not isinstance(item, dict):
                        raise SfError("JSON_PARSER_ERROR", "record must be a JSON object")
                    attrs = item.get("attributes") or {}
                    type_ = attrs.get("type") if isinstance(attrs, dict) else None
                    if not type_:
                        raise SfError("INVALID_TYPE", "Must send a concrete entity type.")
                    name = parse_obj(str(type_))
                    if name is None:
                        raise SfError("INVALID_TYPE", f"sObject type '{type_}' is not supported.")
                    rid = item.get("id") or item.get("Id")
                    if not rid:
                        raise SfError("MISSING_ARGUMENT", "Id not specified in an update call", ["Id"])
                    values = {k: v for k, v in item.items() if k not in ("attributes", "id", "Id")}
                    cid, conv = state.prepare_update(name, str(rid), values)
                    prepared.append((name, cid, conv, values))
                    if not all_or_none:
                        state.apply_update(name, cid, conv, values, "collections", api_origin(ver))
                except SfError as err:
                    prepared.append(err)
            failed = any(isinstance(p, SfError) for p in prepared)
            results = []
            for p in prepared:
                if isinstance(p, SfError):
                    results.append({"success": False, "errors": [p.save_result()]})
                elif all_or_none and failed:
                    results.append({"success": False, "errors": [{
                        "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                        "message": "Record rolled back because not all records were valid and the request "
                                   "was using AllOrNone header", "fields": []}]})
                else:
                    if all_or_none:
                        state.apply_update(p[0], p[1], p[2], p[3], "collections", api_origin(ver))
                    results.append({"id": p[1], "success": True, "errors": []})
        return sf_json(results)

    def _run_query(ver: str, include_deleted: bool):
        q = request.args.get("q")
        if not q:
            return sf_error(SfError("MALFORMED_QUERY", "A query string has to be specified"))
        try:
            query = parse_soql(q)
        except SfError as err:
            return sf_error(err)
        g.sandbox_extra["object"] = query.object
        with state.lock:
            rows = state.select(query, include_deleted)
            g.sandbox_extra["records"] = len(rows)
            if query.count:
                return sf_json({"totalSize": len(rows), "done": True, "records": []})
            out = [state.serialize(query.object, r, query.fields, ver) for r in rows]
            page = state.config.query_page_size
            opts = request.headers.get("Sforce-Query-Options", "")
            m = re.search(r"batchSize=(\d+)", opts)
            if m:
                page = max(200, min(2000, int(m.group(1))))
            cursor = state.ids.new("01g")
            if len(out) > page:
                state.cursors[cursor] = (out, ver)
                if len(state.cursors) > 500:
                    state.cursors.pop(next(iter(state.cursors)))
        return sf_json(_page(out, 0, page, cursor, ver))

    def _page(rows, offset, page, cursor, ver):
        chunk = rows[offset:offset + page]
        result = {"totalSize": len(rows), "done": offset + page >= len(rows), "records": chunk}
        if not result["done"]:
            result["nextRecordsUrl"] = f"/services/data/{ver}/query/{cursor}-{offset + page}"
        return result

    @app.get("/services/data/<ver>/query/")
    def query(ver):
        return _run_query(ver, include_deleted=False)

    @app.get("/services/data/<ver>/queryAll/")
    def query_all(ver):
        return _run_query(ver, include_deleted=True)

    @app.get("/services/data/<ver>/query/<locator>")
    @app.get("/services/data/<ver>/queryAll/<locator>")
    def query_more(ver, locator):
        cursor, _, offset = locator.rpartition("-")
        with state.lock:
            entry = state.cursors.get(cursor)
            page = state.config.query_page_size
        if entry is None or not offset.isdigit():
            return sf_json([{"errorCode": "INVALID_QUERY_LOCATOR", "message": "invalid query locator"}], 400)
        rows, _v = entry
        opts = request.headers.get("Sforce-Query-Options", "")
        m = re.search(r"batchSize=(\d+)", opts)
        if m:
            page = max(200, min(2000, int(m.group(1))))
        return sf_json(_page(rows, int(offset), page, cursor, ver))

    # ---- Bulk API 2.0 query jobs ------------------------------------------
    # Shapes from Salesforce's Bulk API 2.0 guide (create / get job info /
    # get results); error bodies for bad requests are INFERRED.

    def invalid_job(message: str, status: int = 400):
        return sf_json([{"errorCode": "INVALIDJOB", "message": message}], status)

    @app.post("/services/data/<ver>/jobs/query")
    def create_query_job(ver):
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("query"), str) or not body["query"].strip():
            return invalid_job("The query job needs a query")
        operation = body.get("operation")
        if operation not in ("query", "queryAll"):
            return invalid_job(f"Invalid operation: {operation}")
        for name, allowed in (("contentType", "CSV"), ("columnDelimiter", "COMMA"), ("lineEnding", "LF")):
            if body.get(name, allowed) != allowed:  # the simulator writes only comma-separated LF CSV
                return invalid_job(f"{name} {body[name]} is not supported by the sandbox")
        header, rows, error = [], [], None
        try:
            query = parse_soql(body["query"])
            if query.count:
                # Bulk API 2.0 refuses aggregate functions such as COUNT().
                raise SfError("MALFORMED_QUERY", "Aggregate queries are not supported by Bulk API 2.0")
        except SfError as err:
            # INFERRED wording, after Bulk API 1.0's stateMessage.
            error = f"InvalidBatch : Failed to process query: {err.code}: {err.message}"
            m = re.search(r"\bFROM\s+(\w+)", body["query"], re.IGNORECASE)
            object_name = _OBJ_BY_LOWER.get(m.group(1).lower(), m.group(1)) if m else ""
        else:
            object_name = query.object
            header = list(query.fields)
        with state.lock:
            if error is None:
                for rec in state.select(query, include_deleted=operation == "queryAll"):
                    flat = state.serialize(query.object, rec, query.fields, ver)
                    rows.append([_csv_cell(flat, name) for name in query.fields])
            job = QueryJob(id=state.ids.new("750"), operation=operation, object=object_name,
                           query=body["query"], api_version=ver[1:], created=_now_dt(),
                           ready_at=time.time() + float(state.config.bulk_query_delay_s),
                           created_by=state.integration_user_id, header=header, rows=rows, error=error)
            state.query_jobs[job.id] = job
            if len(state.query_jobs) > 200:  # bound memory; real jobs are deleted after 7 days
                state.query_jobs.pop(next(iter(state.query_jobs)))
            return sf_json(job.info(time.time(), float(state.config.bulk_query_delay_s), full=False))

    def find_job(job_id: str) -> QueryJob | None:
        with state.lock:
            return state.query_jobs.get(job_id)

    @app.get("/services/data/<ver>/jobs/query/<job_id>")
    def get_query_job(ver, job_id):
        job = find_job(job_id)
        if job is None:
            return sf_json(NOT_FOUND, 404)
        return sf_json(job.info(time.time(), float(state.config.bulk_query_delay_s), full=True))

    @app.get("/services/data/<ver>/jobs/query/<job_id>/results")
    def query_job_results(ver, job_id):
        job = find_job(job_id)
        if job is None:
            return sf_json(NOT_FOUND, 404)
        if ver[1:] != job.api_version:  # documented: 409 (body INFERRED)
            return invalid_job("Use the API version the job was created with", 409)
        if job.state(time.time(), float(state.config.bulk_query_delay_s)) != "JobComplete":
            return invalid_job(f"Job {job_id} is not in JobComplete state")
        offset = _offset(request.args.get("locator", "")) if request.args.get("locator") else 0
        if offset is None or offset > len(job.rows):
            return invalid_job("Invalid locator")
        max_records = request.args.get("maxRecords", type=int) if "maxRecords" in request.args else 50_000
        if not max_records or max_records < 1:
            return invalid_job("maxRecords must be a positive integer")
        chunk = job.rows[offset:offset + max_records]
        out = io.StringIO()
        writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n")
        writer.writerow(job.header)
        writer.writerows(chunk)
        end = offset + len(chunk)
        resp = Response(out.getvalue(), status=200, content_type="text/csv; charset=UTF-8")
        resp.headers["Sforce-Locator"] = _locator(end) if end < len(job.rows) else "null"
        resp.headers["Sforce-NumberOfRecords"] = str(len(chunk))
        g.sandbox_extra["records"] = len(chunk)  # in the request log, for tests
        return resp

    _control_routes(app, state)
    return app


def _csv_cell(record: dict, name: str) -> str:
    """One value of a serialized record as a Bulk API CSV cell; a parent
    field ("Account.Name") is read through its relationship. Null is an
    empty cell (INFERRED)."""
    if "." in name:
        parent, _, parent_field = name.partition(".")
        value = (record.get(parent) or {}).get(parent_field)
    else:
        value = record.get(name)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _control_routes(app: Flask, state: SalesforceOrgState) -> None:
    P = "/_sandbox/salesforce"

    def bad(msg, status=400):
        resp = jsonify({"error": msg})
        resp.status_code = status
        return resp

    def obj_or_none(obj):
        return obj if obj in SCHEMA else _OBJ_BY_LOWER.get(str(obj).lower())

    @app.post(f"{P}/expire-sessions")
    def expire_sessions():
        with state.lock:
            n = len(state.tokens)
            state.tokens.clear()
        return jsonify({"expired": n})

    @app.post(f"{P}/token-mode")
    def token_mode():
        mode = (request.get_json(force=True) or {}).get("mode")
        if mode not in ("normal", "always_401"):
            return bad("mode must be 'normal' or 'always_401'")
        with state.lock:
            state.token_mode = mode
        return jsonify({"mode": mode})

    @app.post(f"{P}/record-faults")
    def record_faults():
        spec = request.get_json(force=True)
        specs = spec if isinstance(spec, list) else [spec]
        with state.lock:
            for s in specs:
                if not is_valid_id(s.get("id")) or not s.get("statusCode"):
                    return bad("each fault needs a valid 'id' and a 'statusCode'")
                state.record_faults[to_id18(s["id"])] = {
                    "statusCode": s["statusCode"], "message": s.get("message"),
                    "times": int(s.get("times", 1)), "fields": s.get("fields") or [], "http": s.get("http"),
                }
        return jsonify({"faults": len(state.record_faults)})

    @app.delete(f"{P}/record-faults")
    def clear_record_faults():
        with state.lock:
            state.record_faults.clear()
        return "", 204

    @app.route(f"{P}/usage", methods=["GET", "POST"])
    def usage():
        with state.lock:
            if request.method == "POST":
                body = request.get_json(force=True) or {}
                if "used" in body:
                    state.api_used = int(body["used"])
                if "allocation" in body:
                    state.config.api_allocation = int(body["allocation"])
            return jsonify({"api_used": state.api_used, "allocation": state.config.api_allocation,
                            "tokens_issued": state.tokens_issued})

    @app.route(f"{P}/config", methods=["GET", "POST"])
    def config_route():
        with state.cond:
            if request.method == "POST":
                body = request.get_json(force=True) or {}
                unknown = sorted(set(body) - _CONFIG_FIELDS)
                if unknown:
                    return bad(f"unknown config fields: {unknown}")
                for k, v in body.items():
                    setattr(state.config, k, v)
                if state.notifications or state.duplicates:
                    state._ensure_dispatcher()
                state.cond.notify_all()
            return jsonify({f: getattr(state.config, f) for f in sorted(_CONFIG_FIELDS)})

    @app.post(f"{P}/records")
    def create_records():
        body = request.get_json(force=True) or {}
        obj = obj_or_none(body.get("object", ""))
        if obj is None:
            return bad(f"unknown object {body.get('object')!r}")
        ids = []
        try:
            for values in body.get("records") or []:
                ids.append(state.create(obj, values, human=True, fire_outbound=body.get("fire_outbound", True)))
        except SfError as err:
            return jsonify({"ids": ids, "error": {"errorCode": err.code, "message": err.message}}), 400
        return jsonify({"ids": ids}), 201

    @app.get(f"{P}/records/<obj>")
    def list_records(obj):
        name = obj_or_none(obj)
        if name is None:
            return bad("unknown object", 404)
        include_deleted = request.args.get("include_deleted") in ("1", "true")
        with state.lock:
            out = [{k: _json_value(v) for k, v in r.items()} for rid, r in state.records[name].items()
                   if include_deleted or rid not in state.deleted]
        return jsonify(out)

    @app.get(f"{P}/records/<obj>/<rid>")
    def get_record(obj, rid):
        name = obj_or_none(obj)
        if name is None or not is_valid_id(rid):
            return bad("unknown object or malformed id", 404)
        with state.lock:
            cid = to_id18(rid)
            rec = state.records[name].get(cid)
            if rec is None:
                return bad("no such record", 404)
            return jsonify({"record": {k: _json_value(v) for k, v in rec.items()},
                            "writes": [dict(w) for w in state.writes.get(cid, [])],
                            "deleted": cid in state.deleted})

    @app.post(f"{P}/records/<obj>/<rid>/edit")
    def edit_record(obj, rid):
        """A person edits the record in the UI (not through our API)."""
        name = obj_or_none(obj)
        if name is None or not is_valid_id(rid):
            return bad("unknown object or malformed id", 404)
        values = request.get_json(force=True) or {}
        with state.lock:
            cid = to_id18(rid)
            rec = state.records[name].get(cid)
            if rec is None or cid in state.deleted:
                return bad("no such record", 404)
            try:
                conv = state.convert_values(name, values, creating=False, system=False)
            except SfError as err:
                return bad(err.message)
            rec = state.edit(name, cid, conv, state.human_user_id)
        return jsonify({"record": {k: _json_value(v) for k, v in rec.items()}})

    @app.post(f"{P}/records/<obj>/<rid>/delete")
    def delete_record(obj, rid):
        name = obj_or_none(obj)
        if name is None or not is_valid_id(rid):
            return bad("unknown object or malformed id", 404)
        with state.lock:
            cid = to_id18(rid)
            if cid not in state.records[name]:
                return bad("no such record", 404)
            state.delete(name, cid, state.human_user_id)
        return jsonify({"deleted": cid})

    @app.get(f"{P}/outbound")
    def outbound():
        return jsonify(state.outbound_view())

    @app.post(f"{P}/outbound/retry")
    def outbound_retry():
        """Admin 'retry now': failed or pending notifications are sent at once."""
        ids = (request.get_json(silent=True) or {}).get("ids")
        with state.cond:
            now = time.time()
            for n in state.notifications.values():
                if (ids is None or n.id in ids) and n.state in ("pending", "failed"):
                    n.state, n.next_attempt_at = "pending", now
                    if now - n.queued_at >= state.config.om_deadline_s:
                        n.queued_at = now  # an admin retry restarts the clock
            state._ensure_dispatcher()
            state.cond.notify_all()
        return jsonify(state.outbound_view())

    @app.post(f"{P}/reset")
    def reset():
        """Forget records, writes, faults, notifications and the API counter (tokens stay valid)."""
        with state.cond:
            for recs in state.records.values():
                recs.clear()
            state.deleted.clear()
            state.writes.clear()
            state.record_faults.clear()
            state.cursors.clear()
            state.query_jobs.clear()
            state.notifications.clear()
            state.duplicates.clear()
            state.deliveries.clear()
            state.open_batch.clear()
            state.api_used = 0
            state.token_mode = "normal"
        return "", 204
