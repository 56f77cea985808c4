"""GET /openapi.json: a hand-written OpenAPI 3.0 description of every HTTP
endpoint. Request schemas follow the validation the endpoints really do
(web/events.py, crm_enrich/operations/requests.py); the fuzz test in
tests/integration/test_openapi_fuzz.py holds the two together."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from crm_enrich.field_map import WAS
from crm_enrich.jobs.changes import CSV_COLUMNS as CHANGE_COLUMNS
from crm_enrich.jobs.state import SkipReason
from crm_enrich.operations import operator_input
from crm_enrich.salesforce import ids, soql
from web import events

bp = Blueprint("openapi", __name__)

SF_ID = {"type": "string", "pattern": ids.ID_PATTERN,
         "description": "15- or 18-character Salesforce id"}
JOB_ID = {"type": "string", "pattern": "^[0-9a-f]{32}$"}
OBJECT = {"type": "string", "enum": list(ids.OBJECTS)}
SCALAR = {"nullable": True, "oneOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]}


def _json(schema_ref: str) -> dict:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}}


def _resp(description: str, schema_ref: str | None = "Error") -> dict:
    out: dict[str, Any] = {"description": description}
    if schema_ref:
        out["content"] = _json(schema_ref)
    return out


ADMIN_ERRORS = {"401": _resp("no bearer token"), "403": _resp("wrong token")}
HTML = {"text/html": {"schema": {"type": "string"}}}
RERUN_PROPS = {
    "object": OBJECT,
    "ids": {"type": "array", "minItems": 1, "maxItems": operator_input.MAX_IDS, "items": SF_ID},
    "where": {"type": "string", "minLength": 1, "maxLength": soql.MAX_WHERE_CHARS,
              "pattern": "^[^;]*$",
              "description": "a SOQL condition (what follows WHERE); no ';', and no LIMIT, ORDER, "
                             "OFFSET, GROUP, HAVING, FOR, UPDATE, VIEW, REFERENCE or WITH outside "
                             "string literals"},
    "force": {"type": "boolean", "default": False,
              "description": "ignore the cache and the recently-enriched skip"},
    "dryRun": {"type": "boolean", "default": False,
               "description": "only price the selection: the range of credits it will cost; start nothing"},
}


def spec() -> dict:
    return {
        "openapi": "3.0.3",
        "info": {"title": "crm-enrich", "version": "0.1.0",
                 "description": "Self-hosted enrichment and email verification for Salesforce."},
        "paths": {
            "/salesforce/outbound-message/{token}": {"post": {
                "summary": "Salesforce Outbound Message (SOAP); acknowledged once every notification is queued",
                "description": "The path's last part is SALESFORCE_OUTBOUND_TOKEN: a wrong or missing one is "
                               "answered 404 before the body is read.",
                "tags": ["public"],
                "parameters": [{"name": "token", "in": "path", "required": True, "schema": {"type": "string"}}],
                "requestBody": {"required": True, "content": {"text/xml": {"schema": {"type": "string"}}}},
                "responses": {
                    "200": {"description": "SOAP acknowledgement",
                            "content": {"text/xml": {"schema": {"type": "string"}}}},
                    "400": {"description": "SOAP fault: not a valid Outbound Message"},
                    "403": {"description": "SOAP fault: another organization, or a source address not allowed"},
                    "404": {"description": "unknown token"},
                    "413": {"description": "SOAP fault: message too large"},
                    "415": {"description": "SOAP fault: not text/xml or application/soap+xml"},
                    "503": {"description": "SOAP fault: could not queue, retry"},
                }}},
            "/salesforce/events": {"post": {
                "summary": "Record-creation events as JSON (Flow HTTP Callout or Apex)",
                "tags": ["public"],
                "security": [{"webhookBearer": []}, {"standardWebhooks": []}],
                "parameters": [
                    {"name": "webhook-id", "in": "header", "required": False, "schema": {"type": "string"}},
                    {"name": "webhook-timestamp", "in": "header", "required": False, "schema": {"type": "string"}},
                    {"name": "webhook-signature", "in": "header", "required": False, "schema": {"type": "string"}},
                ],
                "requestBody": {"required": True, "content": _json("Event")},
                "responses": {
                    "202": _resp("queued", "EventAccepted"),
                    "400": _resp("invalid body"), "401": _resp("missing or invalid credentials"),
                    "403": _resp("another organization"), "413": _resp("body too large"),
                    "503": _resp("could not queue, retry"),
                }}},
            "/clodura/callbacks/{token}": {"post": {
                "summary": "Clodura's asynchronous result (reveal or verification) for one job's step",
                "description": "The token in the path was made when the request was sent: it names the "
                               "job and step, is signed with SECRET_KEY and expires.",
                "tags": ["public"],
                "parameters": [{"name": "token", "in": "path", "required": True, "schema": {"type": "string"}}],
                "requestBody": {"required": True, "content": _json("CloduraResult")},
                "responses": {
                    "200": _resp("stored (or a repeat, or not final: no effect)", "CallbackAnswer"),
                    "400": _resp("invalid body"), "404": _resp("unknown, forged or expired token"),
                    "503": _resp("could not store, retry"),
                }}},
            "/healthz": {"get": {"summary": "the process is alive", "tags": ["public"],
                                 "responses": {"200": _resp("alive", "Status")}}},
            "/readyz": {"get": {"summary": "Redis reachable and a worker heartbeat fresh", "tags": ["public"],
                                "responses": {"200": _resp("ready", "Status"),
                                              "503": _resp("not ready, and why", "Status")}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "tags": ["public"],
                                 "responses": {"200": {"description": "text exposition format",
                                                       "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/openapi.json": {"get": {"summary": "this description", "tags": ["public"], "responses": {
                "200": {"description": "OpenAPI document",
                        "content": {"application/json": {"schema": {"type": "object"}}}}}}},
            "/admin/rerun": {"post": {
                "summary": "Re-run records, by ids or by SOQL condition",
                "tags": ["admin"], "security": [{"adminToken": []}],
                "requestBody": {"required": True, "content": _json("Rerun")},
                "responses": {"200": _resp("dry run: count and estimate", "Estimate"),
                              "202": _resp("run started", "RunStarted"),
                              "400": _resp("invalid request; nothing queued"), **ADMIN_ERRORS,
                              "413": _resp("body too large"), "503": _resp("could not queue, retry")}}},
            "/admin/backfill": {"post": {
                "summary": "Backfill records that existed before installation (a re-run of kind backfill; "
                           "without ids or where: every record of the object)",
                "tags": ["admin"], "security": [{"adminToken": []}],
                "requestBody": {"required": True, "content": _json("Backfill")},
                "responses": {"200": _resp("dry run: count and estimate", "Estimate"),
                              "202": _resp("run started", "RunStarted"),
                              "400": _resp("invalid request; nothing queued"), **ADMIN_ERRORS,
                              "413": _resp("body too large"), "503": _resp("could not queue, retry")}}},
            "/admin/runs/{run_id}": {"get": {
                "summary": "Progress of a re-run or backfill", "tags": ["admin"],
                "security": [{"adminToken": []}],
                "parameters": [{"name": "run_id", "in": "path", "required": True, "schema": JOB_ID}],
                "responses": {"200": _resp("the run", "Run"), **ADMIN_ERRORS, "404": _resp("no such run")}}},
            "/admin/jobs/{job_id}": {"get": {
                "summary": "A job: state, steps with times, attempts, fields written, last error",
                "tags": ["admin"], "security": [{"adminToken": []}],
                "parameters": [{"name": "job_id", "in": "path", "required": True, "schema": JOB_ID}],
                "responses": {"200": _resp("the job", "Job"), **ADMIN_ERRORS, "404": _resp("no such job")}}},
            "/admin/records/{object}/{record_id}": {"get": {
                "summary": "A record's last job and its change log", "tags": ["admin"],
                "security": [{"adminToken": []}],
                "parameters": [{"name": "object", "in": "path", "required": True, "schema": OBJECT},
                               {"name": "record_id", "in": "path", "required": True, "schema": SF_ID}],
                "responses": {"200": _resp("the record's last job and changes", "Record"),
                              "400": _resp("bad object or id"),
                              **ADMIN_ERRORS, "404": _resp("no job or change for this record")}}},
            "/admin/changes.csv": {"get": {
                "summary": "The change log of a period as CSV (no values), oldest first", "tags": ["admin"],
                "security": [{"adminToken": []}],
                "parameters": [
                    {"name": "since", "in": "query", "required": True, "schema": {"type": "string"},
                     "description": "ISO 8601 date or date-time, UTC unless it says otherwise"},
                    {"name": "until", "in": "query", "required": False, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "CSV: " + ",".join(CHANGE_COLUMNS),
                                      "content": {"text/csv": {"schema": {"type": "string"}}}},
                              "400": _resp("bad period"), **ADMIN_ERRORS}}},
            "/admin/failed": {"get": {
                "summary": "Dead letters, newest first (at most 200)", "tags": ["admin"],
                "security": [{"adminToken": []}],
                "responses": {"200": _resp("failed jobs", "FailedList"), **ADMIN_ERRORS}}},
            "/admin/failed/replay": {"post": {
                "summary": "Replay some or all dead letters as new jobs", "tags": ["admin"],
                "security": [{"adminToken": []}],
                "requestBody": {"required": True, "content": _json("Replay")},
                "responses": {"202": _resp("replayed", "ReplayResult"), "400": _resp("invalid request"),
                              **ADMIN_ERRORS, "413": _resp("body too large"),
                              "503": _resp("could not queue, retry")}}},
            "/admin/login-link": {"post": {
                "summary": "A one-time dashboard login link, valid 60 s", "tags": ["admin"],
                "security": [{"adminToken": []}],
                "responses": {"201": _resp("the link", "LoginLink"), **ADMIN_ERRORS}}},
            "/admin": {"get": {
                "summary": "The dashboard (or its login form)", "tags": ["dashboard"],
                "responses": {"200": {"description": "HTML page", "content": HTML}}}},
            "/admin/login": {"post": {
                "summary": "Log in to the dashboard with the admin token; sets the session cookie",
                "tags": ["dashboard"],
                "requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": {
                    "type": "object", "required": ["token"], "properties": {"token": {"type": "string"}}}}}},
                "responses": {"303": {"description": "logged in; to the dashboard"},
                              "403": {"description": "wrong token", "content": HTML}}}},
            "/admin/login/{nonce}": {"get": {
                "summary": "Log in with a one-time link", "tags": ["dashboard"],
                "parameters": [{"name": "nonce", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"303": {"description": "logged in; to the dashboard"},
                              "403": {"description": "expired or used link", "content": HTML}}}},
            "/admin/logout": {"post": {
                "summary": "Log out of the dashboard", "tags": ["dashboard"],
                "requestBody": {"content": {"application/x-www-form-urlencoded": {"schema": {
                    "type": "object", "properties": {"csrf": {"type": "string"}}}}}},
                "responses": {"303": {"description": "to the dashboard"}}}},
            "/admin/dashboard/records/{object}/{record_id}": {"get": {
                "summary": "A record's page: its last job and change log (session cookie)", "tags": ["dashboard"],
                "parameters": [{"name": "object", "in": "path", "required": True, "schema": {"type": "string"}},
                               {"name": "record_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "HTML page", "content": HTML},
                              "400": {"description": "not a record", "content": HTML},
                              "401": {"description": "not logged in", "content": HTML},
                              "404": {"description": "no job or change for it", "content": HTML}}}},
            "/admin/dashboard/record": {"get": {
                "summary": "The record look-up form's target: redirects to the record's page", "tags": ["dashboard"],
                "parameters": [{"name": "object", "in": "query", "schema": {"type": "string"}},
                               {"name": "id", "in": "query", "schema": {"type": "string"}}],
                "responses": {"303": {"description": "to the record's page"}}}},
            "/admin/dashboard/replay": {"post": {
                "summary": "Replay failures from the dashboard (session cookie and form CSRF token)",
                "tags": ["dashboard"],
                "requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": {
                    "type": "object", "required": ["csrf"],
                    "properties": {"csrf": {"type": "string"}, "all": {"type": "string", "enum": ["1"]},
                                   "job": {"type": "array", "items": JOB_ID}}}}}},
                "responses": {"303": {"description": "replayed; back to the dashboard"},
                              "401": {"description": "not logged in", "content": HTML},
                              "403": {"description": "missing or wrong CSRF token", "content": HTML}}}},
        },
        "components": {
            "securitySchemes": {
                "adminToken": {"type": "http", "scheme": "bearer", "description": "ADMIN_TOKEN"},
                "webhookBearer": {"type": "http", "scheme": "bearer", "description": "SALESFORCE_WEBHOOK_SECRET"},
                "standardWebhooks": {"type": "apiKey", "in": "header", "name": "webhook-signature",
                                     "description": "Standard Webhooks signature with webhook-id and "
                                                    "webhook-timestamp, signed with SALESFORCE_WEBHOOK_SECRET"},
            },
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
                "Status": {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}},
                           "additionalProperties": True},
                "Event": {"type": "object", "required": ["object", "records"], "properties": {
                    "object": {"type": "string", "enum": sorted(ids.OBJECTS)},
                    "orgId": {"type": "string"}, "eventId": {"type": "string", "minLength": 1, "maxLength": 255},
                    "records": {"type": "array", "minItems": 1, "maxItems": events.MAX_RECORDS, "items": {
                        "type": "object", "required": ["Id"],
                        "properties": {"Id": SF_ID}, "additionalProperties": SCALAR}}}},
                "EventAccepted": {"type": "object", "required": ["accepted", "duplicates"], "properties": {
                    "accepted": {"type": "integer"}, "duplicates": {"type": "integer"},
                    "jobs": {"type": "array", "items": JOB_ID}}},
                "CloduraResult": {
                    "type": "object", "description": "Clodura's result; the job's id under one of "
                                                      "trackingId, requestId, docId, id, _id",
                    "properties": {"trackingId": {"type": "string"}, "docId": {"type": "string"},
                                   "status": {"type": "string"}, "result": {"type": "string"}},
                    "additionalProperties": True},
                "CallbackAnswer": {"type": "object", "required": ["applied"], "properties": {
                    "applied": {"type": "boolean"}, "reason": {"type": "string"}}},
                "Rerun": {"type": "object", "required": ["object"], "additionalProperties": False,
                          "properties": RERUN_PROPS,
                          "oneOf": [{"required": ["ids"]}, {"required": ["where"]}]},
                "Backfill": {"type": "object", "required": ["object"], "additionalProperties": False,
                             "properties": RERUN_PROPS,
                             "not": {"required": ["ids", "where"]}},
                "Estimate": {"type": "object", "required": ["records", "estimatedCredits", "credits"], "properties": {
                    "records": {"type": "integer"},
                    "priced": {"type": "integer", "description": "records read and priced one by one"},
                    "credits": {"type": "object", "required": ["atLeast", "atMost"], "description":
                                "Clodura credits the run will cost: at least (charged whatever is found), "
                                "at most (if everything is found)",
                                "properties": {"atLeast": {"type": "number"}, "atMost": {"type": "number"}}},
                    "clearoutCredits": {"type": "object", "description":
                                        "Clearout credits (its own) the waterfall's and the email-type checks' "
                                        "steps that are on may cost: at least, at most",
                                        "properties": {"atLeast": {"type": "number"}, "atMost": {"type": "number"}}},
                    "estimatedCredits": {"type": "number", "description": "the same as credits.atMost"},
                    "needs": {"type": "object", "description": "per step: records that may need it, and their range",
                              "additionalProperties": {"type": "object", "properties": {
                                  "records": {"type": "integer"}, "atLeast": {"type": "number"},
                                  "atMost": {"type": "number"}}}},
                    "runId": JOB_ID}},
                "RunStarted": {"type": "object", "required": ["runId"], "properties": {
                    "runId": JOB_ID, "total": {"type": "integer"}, "status": {"type": "string"}}},
                "Run": {"type": "object", "required": ["runId", "status", "queued", "jobs"], "properties": {
                    "runId": JOB_ID, "object": OBJECT,
                    "kind": {"type": "string", "enum": list(operator_input.SOURCE_FOR_KIND)},
                    "limit": {"type": "integer", "description": "most records a re-verification run selects"},
                    "status": {"type": "string", "enum": ["queueing", "selecting", "counting", "queued",
                                                          "estimated", "finished", "failed"]},
                    "total": {"type": "integer", "nullable": True}, "queued": {"type": "integer"},
                    "finished": {"type": "integer"}, "force": {"type": "boolean"}, "dryRun": {"type": "boolean"},
                    "createdAt": {"type": "number", "nullable": True}, "error": {"type": "string"},
                    "jobs": {"type": "object", "additionalProperties": {"type": "integer"},
                             "description": "the run's jobs by state"},
                    "clearoutLists": {"type": "array", "description": "a large run's Clearout bulk lists",
                                      "items": {"type": "object", "properties": {
                                          "list": {"type": "string"}, "kind": {"type": "string"},
                                          "status": {"type": "string"}, "jobs": {"type": "integer"},
                                          "percent": {"type": "integer"}, "rows": {"type": "integer"},
                                          "answered": {"type": "integer"}, "fell_back": {"type": "integer"},
                                          "reason": {"type": "string"}}}}}},
                "Job": {"type": "object", "required": ["id", "state", "steps"], "properties": {
                    "id": JOB_ID, "state": {"type": "string"}, "object": OBJECT, "recordId": SF_ID,
                    "source": {"type": "string"}, "createdAt": {"type": "number"},
                    "updatedAt": {"type": "number"}, "enqueuedAt": {"type": "number", "nullable": True},
                    "attempts": {"type": "integer"}, "lastError": {"type": "string", "nullable": True},
                    "skipReason": {"type": "string", "nullable": True,
                                   "description": "why a skipped job was skipped: " + ", ".join(SkipReason)},
                    "fieldsWritten": {"type": "array", "items": {"type": "string"}},
                    "fieldsSkipped": {"type": "array", "description": "mapped fields left out of the write, and why",
                                      "items": {"type": "object", "properties": {
                                          "field": {"type": "string"}, "reason": {"type": "string"}}}},
                    "steps": {"type": "array", "items": {"type": "object", "properties": {
                        "state": {"type": "string"}, "at": {"type": "number"},
                        "step": {"type": "string", "description": "a step within the state: a waterfall "
                                 "source asked (clearout_email, clearout_linkedin, clodura_search) or "
                                 "the email-type checks"},
                        "outcome": {"type": "string", "description": "what it answered: agrees, weak, "
                                    "not_found; for the checks, the email type"}}}},
                    "providerCalls": {"type": "array", "items": {"type": "string"}},
                    "asyncSteps": {"type": "array", "items": {"type": "object", "properties": {
                        "step": {"type": "string"}, "askedAt": {"type": "number"},
                        "arrived": {"type": "boolean"}}}},
                    "creditsSpent": {"type": "number", "description": "Clodura credits this job spent"},
                    "replayedBy": {"type": "string", "nullable": True},
                    "replayOf": {"type": "string", "nullable": True}}},
                "Record": {"type": "object", "required": ["object", "recordId", "lastJob", "changes"], "properties": {
                    "object": OBJECT, "recordId": SF_ID,
                    "lastJob": {"allOf": [{"$ref": "#/components/schemas/Job"}], "nullable": True},
                    "changes": {"type": "array", "description": "newest first; never a value", "items": {
                        "type": "object", "properties": {
                            "at": {"type": "number"}, "field": {"type": "string"}, "rule": {"type": "string"},
                            "source": {"type": "string"}, "provider": {"type": "string"},
                            "was": {"type": "string", "enum": list(WAS)}, "jobId": JOB_ID}}}}},
                "FailedList": {"type": "object", "required": ["count", "jobs"], "properties": {
                    "count": {"type": "integer"}, "jobs": {"type": "array", "items": {"type": "object", "properties": {
                        "id": JOB_ID, "object": OBJECT, "recordId": SF_ID,
                        "lastError": {"type": "string", "nullable": True},
                        "updatedAt": {"type": "number", "nullable": True},
                        "replayedBy": {"type": "string", "nullable": True}}}}}},
                "Replay": {"type": "object", "additionalProperties": False, "oneOf": [
                    {"required": ["jobIds"], "properties": {"jobIds": {
                        "type": "array", "minItems": 1, "maxItems": operator_input.MAX_IDS, "items": JOB_ID}}},
                    {"required": ["all"], "properties": {"all": {"type": "boolean", "enum": [True]}}}],
                    "properties": {"jobIds": {"type": "array", "items": JOB_ID},
                                   "all": {"type": "boolean", "enum": [True]}}},
                "ReplayResult": {"type": "object", "required": ["replayed", "skipped"], "properties": {
                    "replayed": {"type": "integer"}, "skipped": {"type": "integer"},
                    "jobs": {"type": "object", "additionalProperties": JOB_ID},
                    "notFailed": {"type": "array", "items": {"type": "string"}}}},
                "LoginLink": {"type": "object", "required": ["url", "expiresIn"], "properties": {
                    "url": {"type": "string"}, "expiresIn": {"type": "integer"}}},
            },
        },
    }


@bp.get("/openapi.json")
def openapi_json():
    return jsonify(spec())
