"""Fuzzing the HTTP endpoints from their own OpenAPI description
(schemathesis): never a 5xx, and nothing queued by an invalid request.

Bounded: a few dozen examples per operation, well under a minute.
Positive (schema-valid) data is sent only where it cannot start work; the
endpoints that queue (events, re-runs, replays) get negative data only, and
after every such request the number of jobs and runs must be unchanged.
"""
from __future__ import annotations

import jsonschema_rs
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from crm_enrich.jobs.store import JobStore
from web.openapi import spec

MAX_EXAMPLES = 25

# Operations whose schema-valid requests would queue real work.
QUEUEING = {("POST", "/salesforce/events"), ("POST", "/admin/rerun"), ("POST", "/admin/backfill"),
            ("POST", "/admin/failed/replay")}


def created(store: JobStore) -> tuple[int, int]:
    return sum(store.counts_by_state().values()), sum(1 for _ in store.r.scan_iter("run:*", count=1000))


@pytest.fixture(scope="module")
def schema(stack):
    return schemathesis.openapi.from_url(f"{stack.web_url}/openapi.json")


def test_served_description_is_the_hand_written_one(stack):
    served = requests.get(f"{stack.web_url}/openapi.json", timeout=10).json()
    assert served == spec()
    assert served["openapi"].startswith("3.")


def test_every_route_is_described(stack):
    from crm_enrich.settings import load_settings
    from web import create_app

    app = create_app(load_settings(**{k.lower(): v for k, v in stack.env.items() if k.isupper()
                                      and k in {"REDIS_URL", "PUBLIC_BASE_URL", "CLODURA_API_KEY",
                                                "CLODURA_BASE_URL", "SALESFORCE_LOGIN_URL",
                                                "SALESFORCE_CLIENT_ID", "SALESFORCE_CLIENT_SECRET",
                                                "SALESFORCE_ORG_ID", "SALESFORCE_WEBHOOK_SECRET",
                                                "SALESFORCE_OUTBOUND_TOKEN",
                                                "ADMIN_TOKEN", "SECRET_KEY"}}))
    described = {(method.upper(), path) for path, ops in spec()["paths"].items() for method in ops}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = rule.rule.replace("<", "{").replace(">", "}")
        path = path.replace("{object_type}", "{object}")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (method, path) in described, f"{method} {path} is not in /openapi.json"


def _json_schema(node):
    """OpenAPI 3.0 schema -> JSON Schema (draft 4): `nullable` becomes a null alternative."""
    if isinstance(node, list):
        return [_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: _json_schema(v) for k, v in node.items()}
    if node.pop("nullable", False):
        return {"anyOf": [node, {"type": "null"}]}
    return node


COMPONENTS = _json_schema(spec()["components"])


def body_is_valid(case) -> bool:
    """The case's JSON body against the operation's request schema."""
    content = ((spec()["paths"][case.operation.path][case.method.lower()].get("requestBody") or {})
               .get("content", {}).get("application/json"))
    if content is None:
        return True
    if case.media_type not in (None, "application/json"):
        return False
    validator = jsonschema_rs.Draft4Validator({**_json_schema(content["schema"]), "components": COMPONENTS})
    try:
        return validator.is_valid(case.body)
    except ValueError:  # raw bytes and the like: not a JSON document at all
        return False


def fuzz_operation(stack, store, operation, mode: GenerationMode, headers: dict) -> int:
    calls = []

    @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck),
              phases=[Phase.explicit, Phase.generate])  # no shrinking: a failure must not repeat itself
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case):
        before = created(store)
        # The case's own headers win: a negative case may have broken the
        # credentials on purpose.
        case.headers = {**headers, **(case.headers or {})}
        invalid = (case.headers.get("Authorization") != headers.get("Authorization")
                   or not body_is_valid(case))
        key = (case.method.upper(), case.operation.path)
        # A negative case that came out valid would start real work: not sent.
        assume(invalid or key not in QUEUEING)
        response = case.call(base_url=stack.web_url, timeout=30)
        calls.append(response.status_code)
        assert response.status_code < 500, (
            f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}\n"
            f"{case.as_curl_command()}")
        if invalid or response.status_code >= 400:
            assert created(store) == before, f"{case.method} {case.formatted_path} queued work: {case.body!r}"

    try:
        run()
    except Unsatisfiable:
        if mode is GenerationMode.POSITIVE:
            raise
        return 0  # nothing in this operation can be made invalid (GET /healthz)
    return len(calls)


def headers_for(stack, path: str) -> dict:
    if path.startswith("/admin/") and path not in ("/admin/login", "/admin/logout") \
            and not path.startswith("/admin/login/") and path != "/admin/dashboard/replay":
        return {"Authorization": f"Bearer {stack.admin_token}"}
    if path == "/salesforce/events":
        return {"Authorization": f"Bearer {stack.webhook_secret}"}
    return {}


def test_fuzz_every_operation(stack, store, schema):
    """No 5xx anywhere; invalid requests (and every request to an endpoint
    that queues) leave the job and run counts unchanged."""
    fuzzed = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        key = (operation.method.upper(), operation.path)
        if key == ("POST", "/admin/login-link"):
            continue  # creates a login nonce by design; covered in test_admin
        modes = [GenerationMode.NEGATIVE] if key in QUEUEING else [GenerationMode.POSITIVE,
                                                                     GenerationMode.NEGATIVE]
        for mode in modes:
            fuzzed += fuzz_operation(stack, store, operation, mode, headers_for(stack, operation.path))
    assert fuzzed > 100
