"""Several machines on this one, for tests of a deployment over many hosts.

Each "host" is a Linux network namespace with one address on a bridge in
the root namespace, joined to it by a veth pair. Traffic between hosts
crosses a real link: taking a host's link down partitions it from all the
others (established connections hang, new ones time out, as with a pulled
cable), and every process on a host can be killed at once (a machine that
died). The root namespace keeps the bridge's own address, so what runs here
(the test, the sandbox) reaches every host and every host reaches it.

Making namespaces needs root and iproute2: `why_no_namespaces()` says what
is missing, so a test can skip with that reason.
"""
from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise NetworkError(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done


class NetworkError(RuntimeError):
    """An `ip` command failed; the message holds its error."""


def why_no_namespaces() -> str | None:
    """Why network namespaces, bridges and veth pairs cannot be made here
    (None: they can): tried for real, since root alone does not promise
    it (a container may lack the capability)."""
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "making network namespaces needs root"
    probe = f"crmprobe{os.getpid() % 100_000}"
    try:
        _ip("netns", "add", probe)
        try:
            _ip("link", "add", probe, "type", "veth", "peer", "name", "eth0", "netns", probe)
            _ip("link", "add", f"{probe}b", "type", "bridge")
            _ip("link", "del", f"{probe}b")
        finally:
            _ip("netns", "del", probe, check=False)  # takes the veth pair with it
    except NetworkError as exc:
        return f"cannot make network namespaces here: {exc}"
    return None


@dataclass
class Host:
    """One namespace: its name, its address on the bridge, and its end of
    the veth pair in the root namespace (down: the host is cut off)."""

    name: str
    address: str
    link: str

    def command(self, args: list[str]) -> list[str]:
        """`args` run on this host (`ip netns exec` execs them: same pid)."""
        return ["ip", "netns", "exec", self.name, *args]

    def pids(self) -> list[int]:
        """Every process running on this host (a dead one its parent has
        not reaped yet is not running)."""
        return [int(pid) for pid in _ip("netns", "pids", self.name, check=False).stdout.split()
                if not _zombie(int(pid))]


class Network:
    """A bridge with an address in a free /24 of 10.x, and hosts on it.
    Names carry this process's id, so two runs never share a bridge; a
    context manager that removes everything it made."""

    def __init__(self) -> None:
        self.tag = f"{os.getpid() % 100_000}"
        self.subnet = _free_subnet()
        self._addresses = self.subnet.hosts()
        self.gateway = str(next(self._addresses))
        self.bridge = f"crmbr{self.tag}"
        self.hosts: dict[str, Host] = {}
        _ip("link", "add", self.bridge, "type", "bridge")
        try:
            _ip("addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
        except NetworkError:
            _ip("link", "del", self.bridge, check=False)
            raise

    def add_host(self, role: str) -> Host:
        host = Host(name=f"crm-{self.tag}-{role}", address=str(next(self._addresses)),
                    link=f"crm{self.tag}h{len(self.hosts)}")  # interface names: at most 15 characters
        _ip("netns", "add", host.name)
        self.hosts[role] = host
        _ip("link", "add", host.link, "type", "veth", "peer", "name", "eth0", "netns", host.name)
        _ip("link", "set", host.link, "master", self.bridge, "up")
        _ip("-n", host.name, "addr", "add", f"{host.address}/{self.subnet.prefixlen}", "dev", "eth0")
        _ip("-n", host.name, "link", "set", "eth0", "up")
        _ip("-n", host.name, "link", "set", "lo", "up")
        return host

    def cut(self, host: Host) -> None:
        """The host's cable pulled: nothing goes in or out until `restore`."""
        _ip("link", "set", host.link, "down")

    def restore(self, host: Host) -> None:
        _ip("link", "set", host.link, "up")

    def kill(self, host: Host, sig: int = signal.SIGKILL) -> list[int]:
        """Signal every process on the host; answers their pids."""
        pids = host.pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                os.kill(pid, sig)
        return pids

    def remove(self) -> None:
        for host in self.hosts.values():
            self.kill(host)  # only what this network's hosts run: all started by its user
            _ip("netns", "del", host.name, check=False)
        self.hosts.clear()
        _ip("link", "del", self.bridge, check=False)

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # gone already
    return stat.rpartition(")")[2].split()[0] == "Z"


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 in 10.200.0.0/13 that no address of this machine is in."""
    used = [ipaddress.ip_interface(word).network
            for line in _ip("-o", "-4", "addr", "show").stdout.splitlines()
            for word in line.split()[3:4]]
    candidates = list(ipaddress.IPv4Network("10.200.0.0/13").subnets(new_prefix=24))
    random.shuffle(candidates)
    for subnet in candidates:
        if not any(subnet.overlaps(net) for net in used):
            return subnet
    raise NetworkError("no free /24 in 10.200.0.0/13")
