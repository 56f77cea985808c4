"""The Change Data Capture subscriber, the Procfile's `events:` process
(`python -m crm_enrich.ingest.subscriber`): one Pub/Sub API Subscribe
stream per topic (SALESFORCE_CDC_TOPICS), each event's records turned into
jobs through the same intake as every other way in.

Per topic: resume where the stored replay id says (replay.py), ask for
SALESFORCE_CDC_BATCH_SIZE events, queue their jobs, store the last
replay id, and only then ask for more (flow control: never more events
in hand than one batch). A broken stream is opened again after a
backoff, from the stored id; a rejected token is replaced; an id
Salesforce refuses as too old restarts the topic from its oldest event
and triggers the reconciliation run, which finds the records of the
events that were lost. Runs only with SALESFORCE_INGEST=cdc.
"""
from __future__ import annotations

import functools
import io
import json
import queue
import signal
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import fastavro
import grpc
import redis
from celery import Celery
from kombu.exceptions import OperationalError

from crm_enrich import keys
from crm_enrich.field_map import FieldMap, load_field_map
from crm_enrich.flow.intake import QueueUnavailable, accept_records
from crm_enrich.flow.record import fields_read
from crm_enrich.jobs.store import JobStore
from crm_enrich.logs import configure_logging, log
from crm_enrich.queues import (
    BULK_QUEUE,
    PUBLISH_RETRY,
    RECONCILE,
    create_celery,
    enqueue_jobs,
    exit_on_unsafe_redis,
)
from crm_enrich.salesforce.gateway import SalesforceFailure, TokenProvider, new_http_session
from crm_enrich.salesforce.pubsub import pubsub_api_pb2 as pb
from crm_enrich.salesforce.pubsub import pubsub_api_pb2_grpc as pb_grpc
from crm_enrich.settings import Settings, exit_on_bad_settings

from . import replay
from .change_events import ChangeHeader, created_values, inbound_records, makes_jobs

HEARTBEAT_EVERY_S = 15.0
# Salesforce's error code (in the trailers) for a replay id it cannot
# serve, e.g. one older than the retention: ...fetch.replayid.corrupted.
REPLAY_ID_REFUSED = "replayid"


class Schemas:
    """Each event schema fetched once (GetSchema) and kept by its id."""

    def __init__(self) -> None:
        self._by_id: dict[str, tuple[dict, Any]] = {}
        self._lock = threading.Lock()

    def get(self, stub: pb_grpc.PubSubStub, schema_id: str, metadata: list[tuple[str, str]]) -> tuple[dict, Any]:
        """(the schema as JSON, the schema parsed for fastavro)."""
        with self._lock:
            known = self._by_id.get(schema_id)
        if known is None:
            info = stub.GetSchema(pb.SchemaRequest(schema_id=schema_id), metadata=metadata, timeout=30)
            schema = json.loads(info.schema_json)
            known = (schema, fastavro.parse_schema(schema))  # leaves `schema` as it was
            with self._lock:
                self._by_id[schema_id] = known
        return known


@dataclass
class Subscriber:
    settings: Settings
    store: JobStore
    celery: Celery
    tokens: TokenProvider
    channel: grpc.Channel
    field_map: FieldMap
    schemas: Schemas = field(default_factory=Schemas)
    stopping: threading.Event = field(default_factory=threading.Event)
    open_streams: set[str] = field(default_factory=set)
    _calls: dict[str, grpc.Future] = field(default_factory=dict)
    _kept: dict[str, list[str]] = field(default_factory=dict)

    def fields_kept(self, entity: str) -> list[str]:
        """Of a CREATE's values, those its job would read (its own fields);
        worked out once per object, not per event."""
        if entity not in self._kept:
            self._kept[entity] = [name for name in fields_read(self.field_map, entity) if "." not in name]
        return self._kept[entity]

    @functools.cached_property
    def stub(self) -> pb_grpc.PubSubStub:
        """One stub for the channel, shared by every topic's thread (gRPC
        stubs are thread-safe), not a new one per event."""
        return pb_grpc.PubSubStub(self.channel)

    def metadata(self, refresh: bool = False) -> list[tuple[str, str]]:
        token = self.tokens.get(refresh=refresh)
        return [("accesstoken", token.access_token), ("instanceurl", token.instance_url),
                ("tenantid", self.settings.salesforce_org_id)]

    def enqueue(self, job_ids: list[str], source: str) -> None:
        enqueue_jobs(self.celery, job_ids, source, retry=True, retry_policy=PUBLISH_RETRY)

    def trigger_reconcile(self) -> None:
        """As beat does: the workers select and queue what we never enriched."""
        self.celery.send_task(RECONCILE, queue=BULK_QUEUE, retry=True, retry_policy=PUBLISH_RETRY)

    # -- one topic

    def follow(self, topic: str) -> None:
        """Keep the topic's stream open until the process stops."""
        backoff, refresh, expired = 1.0, False, False
        while not self.stopping.is_set():
            try:
                if expired:
                    self.recover_expired(topic)
                    expired = False
                self.stream(topic, refresh)
                backoff, refresh = 1.0, False
            except grpc.RpcError as exc:
                if self.stopping.is_set():
                    return
                refresh, expired = refused_token(exc), replay_refused(exc)
                if expired:
                    log.error("cdc.replay_id_expired", topic=topic, detail=str(exc.details())[:200])
                    continue  # at once: waiting would not change the answer
                log.warning("cdc.stream_broken", topic=topic, code=str(exc.code()), retry_in_s=backoff,
                            new_token=refresh)
            except (QueueUnavailable, redis.RedisError, SalesforceFailure, OperationalError,
                    grpc.FutureTimeoutError) as exc:
                log.warning("cdc.stream_paused", topic=topic, error=type(exc).__name__, retry_in_s=backoff)
            except Exception:  # a bug must not end the topic's thread: the stream opens again from the stored id
                log.exception("cdc.stream_failed", topic=topic, retry_in_s=backoff)
            finally:
                self.open_streams.discard(topic)
            self.stopping.wait(backoff)
            backoff = min(backoff * 2, self.settings.salesforce_cdc_retry_max_s)

    def recover_expired(self, topic: str) -> None:
        """Events between our stored id and the oldest retained one are
        gone: the reconciliation finds the records created meanwhile that
        nothing enriched, and the topic starts again from its oldest event.
        Triggered first: if storing EARLIEST fails, the next attempt
        triggers again (harmless: it never queues a record twice)."""
        self.trigger_reconcile()
        replay.restart_from_earliest(self.store, topic)
        log.info("cdc.resubscribing_from_earliest", topic=topic, reconciliation="triggered")

    def stream(self, topic: str, refresh_token: bool) -> None:
        start = replay.resume_point(self.store.r, topic)
        batch = self.settings.salesforce_cdc_batch_size
        asks: queue.Queue[pb.FetchRequest | None] = queue.Queue()
        asks.put(pb.FetchRequest(topic_name=topic, replay_preset=pb.ReplayPreset.Value(start.preset),
                                 replay_id=start.replay_id, num_requested=batch))
        metadata = self.metadata(refresh=refresh_token)
        # Connected (TLS included) before the stream counts as open.
        grpc.channel_ready_future(self.channel).result(timeout=30)
        call = self.stub.Subscribe(_until_none(asks), metadata=metadata)
        self._calls[topic] = call
        self.open_streams.add(topic)
        self.beat()
        log.info("cdc.subscribed", topic=topic, replay_preset=start.preset, batch=batch)
        try:
            for response in call:
                self.take(topic, response, metadata)
                if response.pending_num_requested == 0:  # all we asked for has come
                    asks.put(pb.FetchRequest(topic_name=topic, num_requested=batch))
        finally:
            asks.put(None)
            call.cancel()

    def take(self, topic: str, response: pb.FetchResponse, metadata: list[tuple[str, str]]) -> None:
        """Queue the jobs of a response's events, then store its last replay id."""
        if not response.events:
            # A keepalive while events are owed to us: none exist, so the
            # stream's latest id is ours too (a quiet topic's stored id
            # would otherwise age past the retention).
            if response.pending_num_requested and response.latest_replay_id:
                replay.save_replay(self.store, topic, response.latest_replay_id, 0)
            return
        records, ignored = [], Counter[str]()
        for event in response.events:
            schema, parsed = self.schemas.get(self.stub, event.event.schema_id, metadata)
            try:
                payload = fastavro.schemaless_reader(io.BytesIO(event.event.payload), parsed)
            except Exception as exc:  # a corrupt payload never decodes: retrying it would block the topic
                log.error("cdc.undecodable", topic=topic, replay_id=event.replay_id.hex(), error=type(exc).__name__)
                continue
            header = ChangeHeader.from_payload(payload)  # type: ignore[arg-type]
            if makes_jobs(header, schema, self.settings.salesforce_cdc_updates, self.tokens.get().user_id):
                values = created_values(header, payload, schema, self.fields_kept(header.entity))  # type: ignore[arg-type]
                records += inbound_records(header, event.replay_id, values)
            else:
                ignored[header.change_type] += 1
        if records:
            accept_records(self.store, self.enqueue, records)
        replay.save_replay(self.store, topic, response.events[-1].replay_id, len(response.events))
        if ignored:  # one line a response: our own write-backs alone are an event a record
            log.info("cdc.changes_ignored", topic=topic, by_change_type=dict(ignored))

    # -- the process

    def run(self) -> None:
        topics = self.settings.cdc_topics
        threads = [threading.Thread(target=self.follow, args=(t,), name=f"cdc {t}", daemon=True) for t in topics]
        for thread in threads:
            thread.start()
        while not self.stopping.is_set():
            self.beat()
            self.stopping.wait(HEARTBEAT_EVERY_S)
        for call in list(self._calls.values()):
            call.cancel()
        for thread in threads:
            thread.join(timeout=10)

    def beat(self) -> None:
        """The sign of life doctor and /metrics read: when, where, streams open/topics."""
        try:
            self.store.r.set(keys.CDC_HEARTBEAT, f"{time.time():.3f} {socket.gethostname()} "
                                                 f"{len(self.open_streams)}/{len(self.settings.cdc_topics)}",
                             ex=keys.CDC_HEARTBEAT_TTL_S)
        except redis.RedisError as exc:
            log.warning("cdc.heartbeat_failed", error=type(exc).__name__)

    def stop(self, *_args: object) -> None:
        self.stopping.set()


def _until_none(asks: queue.Queue) -> Iterator:
    """The stream's requests, as they are put; None ends it."""
    while (ask := asks.get()) is not None:
        yield ask


def _error_code(exc: grpc.RpcError) -> str:
    trailers = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    return next((str(value) for key, value in trailers or () if key == "error-code"), "")


def refused_token(exc: grpc.RpcError) -> bool:
    return exc.code() == grpc.StatusCode.UNAUTHENTICATED


def replay_refused(exc: grpc.RpcError) -> bool:
    return REPLAY_ID_REFUSED in _error_code(exc)


def open_channel(settings: Settings) -> grpc.Channel:
    ca = settings.salesforce_pubsub_ca_file.read_bytes() if settings.salesforce_pubsub_ca_file else None
    return grpc.secure_channel(settings.salesforce_pubsub_url, grpc.ssl_channel_credentials(root_certificates=ca))


def main() -> None:
    settings = exit_on_bad_settings()
    configure_logging(settings.log_level)
    if settings.salesforce_ingest != "cdc":
        print("crm-enrich events: SALESFORCE_INGEST is not cdc (records come by Outbound Message); "
              "nothing to do, exiting", file=sys.stderr, flush=True)
        return
    exit_on_unsafe_redis(settings)
    subscriber = Subscriber(settings=settings, store=JobStore.from_settings(settings),
                            celery=create_celery(settings, "crm_enrich_events"),
                            tokens=TokenProvider(settings, new_http_session()), channel=open_channel(settings),
                            field_map=load_field_map(settings.field_map))
    signal.signal(signal.SIGTERM, subscriber.stop)
    signal.signal(signal.SIGINT, subscriber.stop)
    log.info("cdc.starting", topics=settings.cdc_topics, pubsub=settings.salesforce_pubsub_url)
    subscriber.run()
    log.info("cdc.stopped")


if __name__ == "__main__":
    main()
