"""In-memory stand-ins for the edges of the flow: Clodura, Clearout, the
Salesforce gateway and the task queue. Each records its calls and answers
what the real client answers (the same dicts and dataclasses), so the flow
under test cannot tell the difference. Everything that is our own code
(JobStore, ProviderCache, Quota, BatchQueue, OrgSchema, ApiGuard) is real
and runs on Redis."""
from __future__ import annotations

import copy
import itertools
from collections import defaultdict

from crm_enrich.providers.clearout import ClearoutVerdict, FinderResult
from crm_enrich.providers.clodura import VerifyAnswer
from crm_enrich.salesforce.gateway import SalesforceFailure

VERIFIED_AT = "2026-11-21T10:00:00Z"

# What /cleanup/enrich answers for a known person (docs/clodura.md#person-enrich).
PERSON = {
    "personId": "p_dana", "firstName": "Dana", "lastName": "Rivers",
    "linkedinUrl": "https://www.linkedin.com/in/dana-rivers/", "personTitle": "VP Sales",
    "functional": ["Sales"], "seniority": ["VP"],
    "organisation": {"organisationId": "o_acme", "organisationName": "Acme Inc", "domain": "acme.example",
                     "industry": "Computer Software", "employeeCount": 312},
}


class _Recorder:
    def __init__(self):
        self.calls: list[tuple[str, tuple]] = []
        self._errors: dict[str, list[Exception]] = defaultdict(list)
        self._ids = itertools.count(1)

    def fail(self, method: str, error: Exception, times: int = 1) -> None:
        """The next `times` calls of `method` raise `error`."""
        self._errors[method].extend([error] * times)

    def _call(self, method: str, *args) -> None:
        self.calls.append((method, args))
        if self._errors[method]:
            raise self._errors[method].pop(0)

    def count(self, method: str) -> int:
        return sum(1 for name, _ in self.calls if name == method)

    def args(self, method: str) -> list[tuple]:
        return [args for name, args in self.calls if name == method]


class FakeClodura(_Recorder):
    """CloduraClient's methods, with canned answers the test can change."""

    def __init__(self):
        super().__init__()
        self.person: dict | None = copy.deepcopy(PERSON)   # whom /cleanup/enrich finds
        self.verdicts: dict[str, str] = {}                 # email -> Clodura's result; else Deliverable
        self.verify_later = False                          # answer 202: the verdict comes by callback
        self.organisations: list[dict] = []                # /organisation/search's first page
        self.organisation: dict | None = None              # /organisation/enrich's answer (for its id)
        self.status_answers: dict[str, dict] = {}          # polling: provider id -> body
        self.remaining_credits = 1000.0

    def enrich_contact(self, identifiers: dict) -> dict:
        self._call("enrich_contact", dict(identifiers))
        person = copy.deepcopy(self.person)
        return {"person": person, "credits": 0 if not person else (2 if person.get("personId") else 1)}

    def search_organisations(self, filters: dict) -> dict:
        self._call("search_organisations", dict(filters))
        return {"organisations": copy.deepcopy(self.organisations), "credits": 0}

    def enrich_organisation(self, request: dict) -> dict:
        self._call("enrich_organisation", dict(request))
        org = self.organisation
        if not org or org.get("organisationId") != request["organisationId"]:
            return {"organisation": None, "credits": 0}   # the client's answer to a 404
        return {"organisation": copy.deepcopy(org),
                "credits": 1 + sum(1 for k, v in request.items() if k.startswith("include") and v)}

    def verify_email(self, email: str, deep: bool = False, webhook_url: str | None = None) -> VerifyAnswer:
        self._call("verify_email", email, deep, webhook_url)
        body = {"email": email, "deepVerification": deep, "docId": f"vrf_{next(self._ids)}"}
        if self.verify_later:
            return VerifyAnswer(True, {**body, "status": "In-progress", "result": "Pending"})
        return VerifyAnswer(False, {**body, "status": "Completed", "verifiedAt": VERIFIED_AT,
                                    "result": self.verdicts.get(email, "Deliverable")})

    def reveal_email(self, identifiers: dict, webhook_url: str) -> dict:
        self._call("reveal_email", dict(identifiers), webhook_url)
        return {"trackingId": f"trk_{next(self._ids)}", "status": "queued"}

    def reveal_phone(self, identifiers: dict, webhook_url: str, via_partners: bool) -> dict:
        self._call("reveal_phone", dict(identifiers), webhook_url, via_partners)
        return {"trackingId": f"trk_{next(self._ids)}", "status": "queued"}

    def verification_status(self, doc_id: str) -> dict:
        self._call("verification_status", doc_id)
        return self.status_answers.get(doc_id, {"docId": doc_id, "status": "In-progress", "result": "Pending"})

    def reveal_status(self, tracking_id: str) -> dict:
        self._call("reveal_status", tracking_id)
        return self.status_answers.get(tracking_id, {"trackingId": tracking_id, "status": "in_progress"})

    def credits(self) -> float:
        self._call("credits")
        return self.remaining_credits


class FakeClearout(_Recorder):
    def __init__(self):
        super().__init__()
        self.verdicts: dict[str, ClearoutVerdict] = {}
        self.found: dict[str, FinderResult] = {}          # "name|domain" -> answer

    def verify_email(self, email: str, timeout_ms: int = 30_000) -> ClearoutVerdict:
        self._call("verify_email", email, timeout_ms)
        return self.verdicts.get(email, ClearoutVerdict(
            verdict="valid", provider_status="valid", detail="200 Success; safe to send: yes", sub_status=200,
            safe_to_send="yes", verified_at="2026-11-21T10:00:05+00:00"))

    def find_email(self, name: str, domain: str, timeout_ms: int = 30_000, queue: bool = True) -> FinderResult:
        self._call("find_email", name, domain)
        return self.found.get(f"{name}|{domain}", FinderResult(status="not_found"))

    def finder_status(self, queue_id: str) -> FinderResult:
        self._call("finder_status", queue_id)
        return FinderResult(status="queued", queue_id=queue_id)


# The org's fields for the default field map (what describe answers).
FIELD_TYPES = {
    "Title": ("string", 128), "Department": ("string", 80), "Email": ("email", 80),
    "MobilePhone": ("phone", 40), "LinkedIn_URL__c": ("url", 255),
    "Email_Verification_Status__c": ("picklist", 40), "Email_Verification_Detail__c": ("string", 255),
    "Email_Verified_At__c": ("datetime", 0), "Clodura_Person_Id__c": ("string", 64),
    "Enriched_At__c": ("datetime", 0), "Industry": ("picklist", 255), "NumberOfEmployees": ("int", 0),
    "Website": ("url", 255), "Revenue_Band__c": ("string", 40), "Technologies__c": ("string", 4000),
    "Total_Funding__c": ("currency", 0), "Clodura_Organisation_Id__c": ("string", 64),
}


def salesforce_busy() -> SalesforceFailure:
    """A passing Salesforce failure, as the gateway raises it."""
    return SalesforceFailure("SERVER_UNAVAILABLE", "try again", retryable=True)


class FakeSalesforce(_Recorder):
    """SalesforceGateway: records by (object, id); a read answers the
    fields asked for (absent records are simply left out, as SOQL does),
    a write updates them and answers one SaveResult per record."""

    def __init__(self, integration_user_id: str):
        super().__init__()
        self.integration_user_id = integration_user_id
        self.records: dict[tuple[str, str], dict] = {}
        self.refuse: dict[str, dict] = {}                  # record id -> the error of its SaveResult

    def add(self, object_type: str, record_id: str, **fields) -> dict:
        record = {"Id": record_id, **fields}
        self.records[(object_type, record_id)] = record
        return record

    def read_records(self, object_type: str, ids: list[str], fields: list[str]) -> dict[str, dict]:
        self._call("read_records", object_type, list(ids), list(fields))
        return {rid: {"Id": rid, **{f: self.records[(object_type, rid)].get(f) for f in fields}}
                for rid in ids if (object_type, rid) in self.records}

    def update_collection(self, records: list[dict]) -> list[dict]:
        self._call("update_collection", copy.deepcopy(records))
        results = []
        for record in records:
            rid = record["id"]
            if rid in self.refuse:
                results.append({"id": rid, "success": False, "errors": [self.refuse[rid]]})
                continue
            fields = {k: v for k, v in record.items() if k not in ("attributes", "id")}
            self.records[(record["attributes"]["type"], rid)].update(fields)
            results.append({"id": rid, "success": True, "errors": []})
        return results

    def describe(self, object_type: str) -> dict:
        self._call("describe", object_type)
        return {"name": object_type, "fields": [
            {"name": name, "type": kind, "length": length, "updateable": True}
            for name, (kind, length) in FIELD_TYPES.items()]}

    def refresh_usage(self) -> None:
        self._call("refresh_usage")


class FakeTasks:
    """The task queue as the flow sees it: flushes scheduled, jobs resumed."""

    def __init__(self):
        self.scheduled: list[tuple[str, float]] = []
        self.resumed: list[str] = []

    def schedule(self, task: str, countdown: float) -> None:
        self.scheduled.append((task, countdown))

    def resume_job(self, job_id: str) -> None:
        self.resumed.append(job_id)
