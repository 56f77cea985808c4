"""A small client for the sandbox's control API (/_sandbox/...), used by the
demo, the tests and the benchmarks."""
from __future__ import annotations

import functools

import requests


class SandboxControl:
    def __init__(self, info: dict):
        self.info = info
        self.http = requests.Session()
        # Passed on every call: REQUESTS_CA_BUNDLE in the environment would
        # otherwise win over Session.verify.
        self.http.request = functools.partial(self.http.request, verify=info["ca_bundle"])
        self.sf = info["salesforce_url"]
        self.clodura = info["clodura_url"]

    def _ok(self, resp: requests.Response):
        resp.raise_for_status()
        return resp.json() if resp.content else None

    # Salesforce org
    def create_records(self, object_type: str, records: list[dict], fire_outbound: bool = True) -> list[str]:
        body = {"object": object_type, "records": records, "fire_outbound": fire_outbound}
        return self._ok(self.http.post(f"{self.sf}/_sandbox/salesforce/records", json=body))["ids"]

    def record(self, object_type: str, record_id: str) -> dict:
        return self._ok(self.http.get(f"{self.sf}/_sandbox/salesforce/records/{object_type}/{record_id}"))

    def salesforce_usage(self) -> dict:
        return self._ok(self.http.get(f"{self.sf}/_sandbox/salesforce/usage"))

    def outbound_log(self) -> dict:
        return self._ok(self.http.get(f"{self.sf}/_sandbox/salesforce/outbound"))

    def salesforce_config(self, **changes) -> None:
        self._ok(self.http.post(f"{self.sf}/_sandbox/salesforce/config", json=changes))

    # Clodura
    def clodura_usage(self, key: str | None = None) -> dict:
        usage = self._ok(self.http.get(f"{self.clodura}/_sandbox/clodura/usage"))
        return usage[key or self.info["clodura_api_key"]]

    def clodura_webhooks(self) -> dict:
        return self._ok(self.http.get(f"{self.clodura}/_sandbox/clodura/webhooks"))

    def clodura_webhook_fault(self, mode: str, times: int = 1, late_s: float = 0) -> None:
        self._ok(self.http.post(f"{self.clodura}/_sandbox/clodura/webhook-faults",
                                json={"mode": mode, "times": times, "late_s": late_s}))

    def clear_clodura_webhook_faults(self) -> None:
        self._ok(self.http.delete(f"{self.clodura}/_sandbox/clodura/webhook-faults"))

    # both
    def log(self, service: str, since: int = 0) -> list[dict]:
        base = self.sf if service == "salesforce" else self.clodura
        return self._ok(self.http.get(f"{base}/_sandbox/log", params={"since": since}))

    def add_fault(self, service: str, **rule) -> None:
        base = self.sf if service == "salesforce" else self.clodura
        self._ok(self.http.post(f"{base}/_sandbox/faults", json=rule))

    def clear_faults(self, service: str) -> None:
        base = self.sf if service == "salesforce" else self.clodura
        self._ok(self.http.delete(f"{base}/_sandbox/faults"))
