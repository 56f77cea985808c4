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
        self.http.request = functools.partial(  # type: ignore[method-assign]  # on purpose, see above
            self.http.request, verify=info["ca_bundle"])
        # A test may run one simulator alone and give only its address.
        self.sf = info.get("salesforce_url")
        self.clodura = info.get("clodura_url")
        clearout_api = info.get("clearout_url")
        self.clearout = clearout_api.removesuffix("/v2") if clearout_api else None

    def _ok(self, resp: requests.Response):
        resp.raise_for_status()
        return resp.json() if resp.content else None

    # Salesforce org
    def create_records(self, object_type: str, records: list[dict], fire_outbound: bool = True) -> list[str]:
        body = {"object": object_type, "records": records, "fire_outbound": fire_outbound}
        return self._ok(self.http.post(f"{self.sf}/_sandbox/salesforce/records", json=body))["ids"]

    def create_accounts(self, names: list[str]) -> dict[str, str]:
        """Accounts by name, created quietly (no Outbound Message): {name: id}."""
        ids = self.create_records("Account", [{"Name": name} for name in names], fire_outbound=False)
        return dict(zip(names, ids, strict=True))

    def record(self, object_type: str, record_id: str) -> dict:
        return self._ok(self.http.get(f"{self.sf}/_sandbox/salesforce/records/{object_type}/{record_id}"))

    def edit_record(self, object_type: str, record_id: str, values: dict) -> dict:
        """A person edits the record in Salesforce's UI (not through our API)."""
        return self._ok(self.http.post(f"{self.sf}/_sandbox/salesforce/records/{object_type}/{record_id}/edit",
                                       json=values))["record"]

    def delete_record(self, object_type: str, record_id: str) -> None:
        """A person deletes the record in Salesforce's UI (to the recycle bin)."""
        self._ok(self.http.post(f"{self.sf}/_sandbox/salesforce/records/{object_type}/{record_id}/delete"))

    def salesforce_usage(self) -> dict:
        return self._ok(self.http.get(f"{self.sf}/_sandbox/salesforce/usage"))

    def outbound_log(self) -> dict:
        return self._ok(self.http.get(f"{self.sf}/_sandbox/salesforce/outbound"))

    def salesforce_config(self, **changes) -> None:
        self._ok(self.http.post(f"{self.sf}/_sandbox/salesforce/config", json=changes))

    # The org's Pub/Sub API (change events; served next to the org's REST API)
    def pubsub_config(self, **changes) -> dict:
        """No changes: the effective config; else apply them (retention_s,
        keepalive_s)."""
        if not changes:
            return self._ok(self.http.get(f"{self.sf}/_sandbox/pubsub/config"))
        return self._ok(self.http.post(f"{self.sf}/_sandbox/pubsub/config", json=changes))

    def pubsub_gap_fault(self, mode: str = "gap", times: int = 1) -> dict:
        """The next `times` change events (-1: until cleared) are GAP_<change>
        events (mode "gap") or GAP_OVERFLOW ones ("overflow"): ids only."""
        return self._ok(self.http.post(f"{self.sf}/_sandbox/pubsub/faults", json={"mode": mode, "times": times}))

    def clear_pubsub_faults(self) -> None:
        self._ok(self.http.delete(f"{self.sf}/_sandbox/pubsub/faults"))

    def pubsub_log(self, since: int = 0) -> list[dict]:
        """Every call, in order, by `rpc`: Subscribe (topic, replay_preset,
        num_requested, accepted), Fetch (num_requested; requests_ended when
        the client's request side closed), FetchResponse
        (events, pending_num_requested), GetSchema (schema_id), GetTopic
        (topic); a call with bad credentials as {"rpc", "refused"}."""
        return self._ok(self.http.get(f"{self.sf}/_sandbox/pubsub/log", params={"since": since}))

    def pubsub_events(self) -> dict:
        """The retained change events (replay id in hex, topic, header) and
        how many were delivered."""
        return self._ok(self.http.get(f"{self.sf}/_sandbox/pubsub/events"))

    def pubsub_reset(self) -> None:
        """Forget the events; every replay id given so far is then expired."""
        self._ok(self.http.post(f"{self.sf}/_sandbox/pubsub/reset"))

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

    # Clearout
    def clearout_usage(self) -> dict:
        return self._ok(self.http.get(f"{self.clearout}/_sandbox/clearout/usage"))

    def clearout_config(self, **changes) -> dict:
        """No changes: the effective config; else apply them (e.g. credits,
        rate_limit_per_minute, daily_verify_limit, finder_queue_delay_s)."""
        if not changes:
            return self._ok(self.http.get(f"{self.clearout}/_sandbox/clearout/config"))
        return self._ok(self.http.post(f"{self.clearout}/_sandbox/clearout/config", json=changes))

    def clearout_slow(self, times: int = 1, kind: str = "verify") -> dict:
        """The next `times` instant verifications (or finder searches)
        outlast their timeout: 524."""
        return self._ok(self.http.post(f"{self.clearout}/_sandbox/clearout/slow",
                                       json={"times": times, "kind": kind}))

    def clearout_reset(self) -> None:
        self._ok(self.http.post(f"{self.clearout}/_sandbox/clearout/reset"))

    # every simulator
    def _base(self, service: str) -> str:
        base = {"salesforce": self.sf, "clodura": self.clodura, "clearout": self.clearout}[service]
        if base is None:
            raise ValueError(f"no {service} simulator in this sandbox info")
        return base

    def log(self, service: str, since: int = 0) -> list[dict]:
        return self._ok(self.http.get(f"{self._base(service)}/_sandbox/log", params={"since": since}))

    def add_fault(self, service: str, **rule) -> None:
        self._ok(self.http.post(f"{self._base(service)}/_sandbox/faults", json=rule))

    def clear_faults(self, service: str) -> None:
        self._ok(self.http.delete(f"{self._base(service)}/_sandbox/faults"))
