"""The simulated org's Pub/Sub API: a gRPC server (TLS from the sandbox CA)
that streams a Change Data Capture event for every record the org creates
or changes, built from docs/salesforce.md ("Change Data Capture over the
Pub/Sub API").

`EventBus` keeps the events (replay ids: 8-byte big-endian counters, one
sequence for all topics) for `retention_s`; `PubSubService` answers
Subscribe with flow control, GetSchema and GetTopic. Tests steer it through
the Salesforce simulator's control API under /_sandbox/pubsub (see
`control_blueprint`): retention and keepalive, gap/overflow faults, the log
of Subscribe and Fetch calls.
"""
from __future__ import annotations

import base64
import bisect
import hashlib
import io
import itertools
import json
import threading
import time
import uuid
from concurrent import futures
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import NoReturn

import fastavro
import grpc
from flask import Blueprint, jsonify, request

from crm_enrich.salesforce.pubsub import pubsub_api_pb2 as pb
from crm_enrich.salesforce.pubsub import pubsub_api_pb2_grpc as pb_grpc
from crm_enrich.salesforce.pubsub.schemas import PERSON_NAME_PARTS, change_event_schema, field_bitmaps

from .common import Certificates
from .salesforce import SCHEMA, SalesforceOrgState

# Salesforce caps a FetchRequest's num_requested at 100 (documented).
MAX_NUM_REQUESTED = 100
# Pub/Sub API error codes, sent in the trailer `error-code` (documented:
# the replay id one; Inferred: the others' exact strings).
REPLAY_ID_CORRUPTED = "sfdc.platform.eventbus.grpc.subscription.fetch.replayid.corrupted"
AUTH_ERROR = "sfdc.platform.eventbus.grpc.service.auth.error"
TOPIC_NOT_FOUND = "sfdc.platform.eventbus.grpc.topic.not.found"
SCHEMA_NOT_FOUND = "sfdc.platform.eventbus.grpc.schema.not.found"
GAP_MODES = {"gap", "overflow"}


def topic_of(entity: str) -> str:
    return f"/data/{entity}ChangeEvent"


def replay_id(position: int) -> bytes:
    return position.to_bytes(8, "big")


@dataclass
class PubSubSimConfig:
    retention_s: float = 72 * 3600  # Salesforce keeps change events 72 hours
    keepalive_s: float = 270.0  # Inferred: the documented upper bound between keepalives


@dataclass
class StoredEvent:
    position: int
    entity: str
    schema_id: str
    payload: bytes
    header: dict
    t: float = field(default_factory=time.time)


@dataclass
class Subscription:
    """One open Subscribe stream: how many events the client still awaits."""

    pending: int = 0
    ended: bool = False


class EventBus:
    """The org's change events, by topic, and the switches tests steer."""

    def __init__(self, org: SalesforceOrgState, config: PubSubSimConfig | None = None):
        self.org = org
        self.config = config or PubSubSimConfig()
        self.cond = threading.Condition()
        self.events: list[StoredEvent] = []
        self.position = 0  # the newest event's position, over all topics
        self.purged_through = 0  # positions up to here are gone (retention)
        self.faults: dict = {"mode": None, "times": 0}
        self.log: list[dict] = []
        self.delivered = 0
        self._seq = itertools.count(1)
        self._commit_numbers = itertools.count(1)
        self.schemas = {entity: change_event_schema(entity, [(f.name, f.type) for f in fields.values()
                                                             if f.name != "Id"])
                        for entity, fields in SCHEMA.items()}
        self.schema_ids = {entity: _schema_id(schema) for entity, schema in self.schemas.items()}
        self.parsed = {entity: fastavro.parse_schema(schema) for entity, schema in self.schemas.items()}
        org.change_listeners.append(self.record_changed)

    # ---- publishing ------------------------------------------------------

    def record_changed(self, entity: str, change: str, record: dict, names: list[str], user: str,
                       origin: str) -> None:
        """The org's change listener: one change event per change."""
        schema = self.schemas[entity]
        with self.cond:
            gap = self._take_fault()
            if gap:
                change = "GAP_OVERFLOW" if gap == "overflow" else f"GAP_{change}"
            body = {} if gap else _avro_values(schema, record, names)
            changed = [] if gap or change == "CREATE" else names
            nulled = [] if gap or change == "CREATE" else [n for n in names if record.get(n) is None]
            header = {
                "entityName": entity, "recordIds": [record["Id"]], "changeType": change, "changeOrigin": origin,
                "transactionKey": uuid.uuid4().hex, "sequenceNumber": 1,
                "commitTimestamp": int(time.time() * 1000), "commitNumber": next(self._commit_numbers),
                "commitUser": user, "nulledFields": field_bitmaps(nulled, schema), "diffFields": [],
                "changedFields": field_bitmaps(changed, schema),
            }
            buf = io.BytesIO()
            fastavro.schemaless_writer(buf, self.parsed[entity], {"ChangeEventHeader": header, **body})
            self.position += 1
            self.events.append(StoredEvent(self.position, entity, self.schema_ids[entity], buf.getvalue(), header))
            self.cond.notify_all()

    def _take_fault(self) -> str | None:
        if self.faults["times"] == 0 or self.faults["mode"] is None:
            return None
        if self.faults["times"] > 0:
            self.faults["times"] -= 1
        return self.faults["mode"]

    # ---- reading (callers hold self.cond) ---------------------------------

    def _purge(self) -> None:
        horizon = time.time() - self.config.retention_s
        while self.events and self.events[0].t < horizon:
            self.purged_through = self.events.pop(0).position

    def start_after(self, preset: int, given: bytes) -> int | None:
        """The position a subscription starts after; None: `given` is
        unknown or older than the retention (events after it are gone)."""
        self._purge()
        if preset == pb.EARLIEST:
            return self.purged_through
        if preset == pb.CUSTOM:
            if len(given) != 8:
                return None
            position = int.from_bytes(given, "big")
            return position if self.purged_through <= position <= self.position else None
        return self.position

    def after(self, entity: str, position: int, limit: int) -> list[StoredEvent]:
        """Up to `limit` events of `entity` after `position`, oldest first."""
        self._purge()
        out: list[StoredEvent] = []
        start = bisect.bisect_right(self.events, position, key=lambda e: e.position)
        for event in itertools.islice(self.events, start, None):
            if len(out) == limit:
                break
            if event.entity == entity:
                out.append(event)
        return out

    def record(self, entry: dict) -> None:
        with self.cond:
            self.log.append({"seq": next(self._seq), "t": time.time(), **entry})

    def reset(self) -> None:
        """Forget events, faults and the log; every replay id given so far
        becomes older than the retention."""
        with self.cond:
            self.events.clear()
            self.purged_through = self.position
            self.faults = {"mode": None, "times": 0}
            self.log.clear()
            self.delivered = 0


def _schema_id(schema: dict) -> str:
    digest = hashlib.sha256(json.dumps(schema, sort_keys=True).encode()).digest()
    return base64.urlsafe_b64encode(digest[:16]).decode().rstrip("=")


def _avro_value(value):
    if isinstance(value, datetime):
        return int(value.astimezone(UTC).timestamp() * 1000)
    if isinstance(value, str) and len(value) == 10 and value[4] == "-" and value[7] == "-":
        try:  # a date field (the org keeps them as ISO strings)
            return (date.fromisoformat(value) - date(1970, 1, 1)).days
        except ValueError:
            return value
    return value


def _avro_values(schema: dict, record: dict, names: list[str]) -> dict:
    """The event body: the `names` fields' values (a CREATE names every
    non-null field), person names nested in the compound Name."""
    out: dict = {}
    wanted = set(names)
    for f in schema["fields"][1:]:
        if isinstance(f["type"][1], dict):  # the compound Name
            parts = {p["name"]: _avro_value(record.get(p["name"])) for p in f["type"][1]["fields"]}
            out[f["name"]] = parts if wanted & set(PERSON_NAME_PARTS) else None
        elif f["name"] in wanted:
            value = _avro_value(record.get(f["name"]))
            out[f["name"]] = float(value) if f["type"][1] == "double" and value is not None else value
    return out


class PubSubService(pb_grpc.PubSubServicer):
    """eventbus.v1.PubSub over the bus; every call must carry the org's
    credentials as metadata (accesstoken, instanceurl, tenantid)."""

    def __init__(self, bus: EventBus, instance_url: str):
        self.bus = bus
        self.instance_url = instance_url

    def _fail(self, context, code: grpc.StatusCode, error_code: str, message: str) -> NoReturn:
        rpc_id = str(uuid.uuid4())
        context.set_trailing_metadata((("error-code", error_code), ("rpc-id", rpc_id)))
        context.abort(code, f"{message} rpcId: {rpc_id}")
        raise AssertionError("context.abort raises")

    def _authorize(self, context, rpc: str) -> None:
        meta = dict(context.invocation_metadata())
        org = self.bus.org
        ok = (org.token_valid(meta.get("accesstoken", ""))
              and meta.get("instanceurl", "").rstrip("/") in (self.instance_url, org.config.instance_url)
              and meta.get("tenantid") == org.config.org_id)
        if not ok:
            self.bus.record({"rpc": rpc, "refused": "credentials"})
            self._fail(context, grpc.StatusCode.UNAUTHENTICATED, AUTH_ERROR, "Authentication failed")

    def _entity(self, context, topic: str) -> str:
        for entity in self.bus.schemas:
            if topic_of(entity) == topic:
                return entity
        return self._fail(context, grpc.StatusCode.NOT_FOUND, TOPIC_NOT_FOUND, f"Topic not found: {topic}")

    def GetTopic(self, request, context):
        self._authorize(context, "GetTopic")
        self.bus.record({"rpc": "GetTopic", "topic": request.topic_name})
        entity = self._entity(context, request.topic_name)
        return pb.TopicInfo(topic_name=request.topic_name, tenant_guid=self.bus.org.config.org_id,
                            can_publish=False, can_subscribe=True, schema_id=self.bus.schema_ids[entity],
                            rpc_id=str(uuid.uuid4()))

    def GetSchema(self, request, context):
        self._authorize(context, "GetSchema")
        self.bus.record({"rpc": "GetSchema", "schema_id": request.schema_id})
        for entity, schema_id in self.bus.schema_ids.items():
            if schema_id == request.schema_id:
                return pb.SchemaInfo(schema_json=json.dumps(self.bus.schemas[entity]), schema_id=schema_id,
                                     rpc_id=str(uuid.uuid4()))
        return self._fail(context, grpc.StatusCode.NOT_FOUND, SCHEMA_NOT_FOUND,
                          f"Schema not found: {request.schema_id}")

    def Subscribe(self, request_iterator, context):
        self._authorize(context, "Subscribe")
        first = next(request_iterator, None)
        if first is None:
            return
        entity = self._entity(context, first.topic_name)
        bus = self.bus
        with bus.cond:
            position = bus.start_after(first.replay_preset, first.replay_id)
        bus.record({"rpc": "Subscribe", "topic": first.topic_name, "replay_preset": pb.ReplayPreset.Name(
            first.replay_preset), "num_requested": first.num_requested, "accepted": position is not None})
        if position is None:
            self._fail(context, grpc.StatusCode.INVALID_ARGUMENT, REPLAY_ID_CORRUPTED,
                       "The Replay ID validation failed.")
        sub = Subscription(pending=_requested(first))

        def wake():
            with bus.cond:
                sub.ended = True
                bus.cond.notify_all()

        def read_requests():
            # A client that stops sending requests may still read what it
            # asked for: only the end of the call (`wake`) ends the stream.
            try:
                for fetch in request_iterator:
                    bus.record({"rpc": "Fetch", "topic": first.topic_name, "num_requested": fetch.num_requested})
                    with bus.cond:
                        sub.pending += _requested(fetch)
                        bus.cond.notify_all()
                bus.record({"rpc": "Fetch", "topic": first.topic_name, "requests_ended": True})
            except grpc.RpcError:
                pass  # the client went away: the call's end wakes the stream

        context.add_callback(wake)
        threading.Thread(target=read_requests, daemon=True, name="pubsub-fetch-reader").start()
        while True:
            with bus.cond:
                deadline = time.monotonic() + bus.config.keepalive_s
                while True:
                    if sub.ended:
                        return
                    batch = bus.after(entity, position, min(sub.pending, MAX_NUM_REQUESTED))
                    if batch or (sub.pending and time.monotonic() >= deadline):
                        break
                    bus.cond.wait(max(0.0, deadline - time.monotonic()) if sub.pending else None)
                # A keepalive moves on to the newest event: none since is of this topic.
                position = batch[-1].position if batch else max(position, bus.position)
                sub.pending -= len(batch)
                bus.delivered += len(batch)
                pending = sub.pending
            bus.record({"rpc": "FetchResponse", "topic": first.topic_name, "events": len(batch),
                        "pending_num_requested": pending})
            yield pb.FetchResponse(
                events=[pb.ConsumerEvent(replay_id=replay_id(e.position),
                                         event=pb.ProducerEvent(id=str(uuid.uuid5(uuid.NAMESPACE_OID,
                                                                                  str(e.position))),
                                                                schema_id=e.schema_id, payload=e.payload))
                        for e in batch],
                latest_replay_id=replay_id(position), rpc_id=str(uuid.uuid4()), pending_num_requested=pending)


def _requested(fetch) -> int:
    return max(0, min(fetch.num_requested, MAX_NUM_REQUESTED))


class PubSubServer:
    """The gRPC server on its own port (TLS with the sandbox's certificate)."""

    def __init__(self, bus: EventBus, instance_url: str, certs: Certificates, host: str = "127.0.0.1",
                 port: int = 0):
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="pubsub"))
        pb_grpc.add_PubSubServicer_to_server(PubSubService(bus, instance_url), self.server)
        credentials = grpc.ssl_server_credentials([(certs.key_pem.read_bytes(), certs.cert_pem.read_bytes())])
        self.host = host
        self.port = self.server.add_secure_port(f"{host}:{port}", credentials)

    @property
    def url(self) -> str:
        """host:port, as gRPC targets are written."""
        return f"{self.host}:{self.port}"

    def start(self) -> PubSubServer:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop(grace=0)


def control_blueprint(bus: EventBus) -> Blueprint:
    """/_sandbox/pubsub/...: served by the Salesforce simulator, whose org
    the events come from."""
    bp = Blueprint("sandbox_pubsub", __name__)
    P = "/_sandbox/pubsub"

    @bp.route(f"{P}/config", methods=["GET", "POST"])
    def config_route():
        with bus.cond:
            if request.method == "POST":
                body = request.get_json(force=True) or {}
                unknown = sorted(set(body) - {"retention_s", "keepalive_s"})
                if unknown:
                    return jsonify({"error": f"unknown config fields: {unknown}"}), 400
                for k, v in body.items():
                    setattr(bus.config, k, float(v))
                bus.cond.notify_all()
            return jsonify({"retention_s": bus.config.retention_s, "keepalive_s": bus.config.keepalive_s})

    @bp.route(f"{P}/faults", methods=["POST", "DELETE"])
    def faults():
        """The next `times` events (-1: until cleared) are gap events, or
        GAP_OVERFLOW ones: ids only, no field values."""
        with bus.cond:
            if request.method == "DELETE":
                bus.faults = {"mode": None, "times": 0}
                return "", 204
            body = request.get_json(force=True) or {}
            if body.get("mode") not in GAP_MODES:
                return jsonify({"error": f"mode must be one of {sorted(GAP_MODES)}"}), 400
            bus.faults = {"mode": body["mode"], "times": int(body.get("times", 1))}
            return jsonify(bus.faults)

    @bp.get(f"{P}/log")
    def get_log():
        since = request.args.get("since", 0, type=int)
        with bus.cond:
            return jsonify([e for e in bus.log if e["seq"] > since])

    @bp.get(f"{P}/events")
    def events():
        """The retained events' headers and replay ids (hex), oldest first."""
        with bus.cond:
            bus._purge()
            return jsonify({"events": [{"replay_id": replay_id(e.position).hex(), "topic": topic_of(e.entity),
                                        "header": e.header} for e in bus.events],
                            "delivered": bus.delivered})

    @bp.post(f"{P}/reset")
    def reset():
        bus.reset()
        return "", 204

    return bp
