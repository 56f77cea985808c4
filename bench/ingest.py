"""Outbound Message ingest: the receiver against a bare Flask app that only
answers the ACK, both under the Procfile's gunicorn command line, with wrk
(Debian's `wrk` package) posting messages of 100 unique notifications over
16 connections. Workers are not started: only Redis and the web app run
(the sandbox's simulators sit idle in this process for the settings).

    apt-get install wrk
    .venv/bin/python bench/ingest.py [--seconds 10] [--connections 16] [--per-message 100] [--repeat 1]
                                     [--fsync always|everysec] [--declared]

Redis fsyncs its AOF on every write by default here, as the test stack does
(so a SIGKILL test loses nothing); `--fsync everysec` is docker/compose.yaml's
setting, which a production deployment is likelier to run.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import requests

from crm_enrich.dev.devstack import Stack, declared_outbound_fields, free_port, wait_for
from crm_enrich.keys import METRICS_COUNTERS
from crm_enrich.queues import URGENT_QUEUE

ROOT = Path(__file__).resolve().parent.parent
LUA = Path(__file__).with_name("ingest.lua")
BIN = Path(sys.executable).parent


def procfile_web(port: int, app: str) -> list[str]:
    """The Procfile's web command, its ${VAR:-default}s at their defaults
    (or the environment's), bound to loopback, serving `app`."""
    line = next(x for x in (ROOT / "Procfile").read_text().splitlines() if x.startswith("web:"))
    line = re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: os.environ.get(m.group(1), m.group(2)), line[4:])
    args = shlex.split(line)
    args[0] = str(BIN / args[0])
    args[args.index("--bind") + 1] = f"127.0.0.1:{port}"
    args[-1] = app
    return args


def envelope_parts(org_id: str, out: Path) -> None:
    """head / one notification (ids as placeholders) / tail, as the sandbox's org sends them."""
    ns = 'xmlns:sf="urn:sobject.enterprise.soap.sforce.com"'
    (out / "head.xml").write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        '<soapenv:Body><notifications xmlns="http://soap.sforce.com/2005/09/outbound">'
        f"<OrganizationId>{org_id}</OrganizationId><ActionId>04k5g000000AbCdAAE</ActionId>"
        '<SessionId xsi:nil="true"/>'
        f"<EnterpriseUrl>https://acme.my.salesforce.com/services/Soap/c/59.0/{org_id[:15]}</EnterpriseUrl>"
        f"<PartnerUrl>https://acme.my.salesforce.com/services/Soap/u/59.0/{org_id[:15]}</PartnerUrl>")
    (out / "item.xml").write_text(
        "<Notification><Id>NOTIFICATIONID</Id>"
        f'<sObject xsi:type="sf:Contact" {ns}><sf:Id>RECORDID</sf:Id><sf:FirstName>Ada</sf:FirstName>'
        "<sf:LastName>Lovelace</sf:LastName><sf:Email>ada.lovelace@example.com</sf:Email>"
        "<sf:AccountId>0015g00000AbCdEAAZ</sf:AccountId><sf:Title>Analyst</sf:Title>"
        "<sf:CreatedDate>2026-11-21T09:00:00.000Z</sf:CreatedDate></sObject></Notification>")
    (out / "tail.xml").write_text("</notifications></soapenv:Body></soapenv:Envelope>")


def wrk(url: str, parts: Path, seconds: float, connections: int, per_message: int, token: str) -> dict:
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{round(seconds)}s", "--timeout", "10s", "-s", str(LUA),
           f"{url}/salesforce/outbound-message/{token}", "--", str(parts), str(per_message)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    raw = json.loads(next(x for x in out.splitlines() if x.startswith("WRK_RESULT "))[len("WRK_RESULT "):])
    errors = {k: raw[k] for k in ("connect", "read", "write", "status", "timeout") if raw[k]}
    return {"rate": raw["requests"] / (raw["duration_us"] / 1e6), "requests": raw["requests"],
            "p50_ms": raw["p50_us"] / 1000, "p99_ms": raw["p99_us"] / 1000, "max_ms": raw["max_us"] / 1000,
            "errors": sum(errors.values()), "error_kinds": errors}


def probe(url: str, parts: Path, per_message: int, r, token: str) -> dict:
    """One message on a quiet receiver: the task messages it publishes and
    the Redis commands it costs (each pipeline counts all its commands)."""
    item = (parts / "item.xml").read_text()
    tag = os.urandom(5).hex()
    body = ((parts / "head.xml").read_text()
            + "".join(item.replace("NOTIFICATIONID", f"04lp{tag}{i:03d}AA").replace("RECORDID", f"003p{tag}{i:03d}AA")
                      for i in range(per_message))
            + (parts / "tail.xml").read_text()).encode()
    last = [-1]

    def quiet() -> bool:  # the load's last requests have been handled
        now = r.info("stats")["total_commands_processed"]
        still, last[0] = now == last[0] + 1, now
        return still

    wait_for(quiet, 60, "the receiver to go quiet", interval=1.0)
    tasks, commands = r.llen(URGENT_QUEUE), r.info("stats")["total_commands_processed"]
    resp = requests.post(f"{url}/salesforce/outbound-message/{token}", data=body, timeout=30,
                         headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'})
    resp.raise_for_status()
    return {"task_messages": r.llen(URGENT_QUEUE) - tasks,
            "redis_commands": r.info("stats")["total_commands_processed"] - commands - 2}


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of a process and its children (gunicorn's
    master and workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for p in [pid, *map(int, children)]:
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def redis_cpu_s(r) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def serve(stack: Stack, app: str, name: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = open(stack.log_dir / f"{name}.log", "ab")  # noqa: SIM115  (the process keeps it)
    proc = subprocess.Popen(procfile_web(port, app) + ["--pythonpath", str(Path(__file__).parent)],
                            env=stack.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: requests.get(f"{url}/healthz", timeout=1).status_code in (200, 404), 30, name)
    return proc, url


def stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--per-message", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=1, help="measure each app this many times, alternating")
    parser.add_argument("--declared", action="store_true",
                        help="declare the org's Outbound Message fields (SALESFORCE_OUTBOUND_FIELDS): the receiver "
                             "keeps each notification's values for its job, which then needs no read")
    parser.add_argument("--fsync", choices=("always", "everysec"), default="always",
                        help="Redis appendfsync: the test stack's (always) or docker/compose.yaml's (everysec)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install wrk")
    runs: dict[str, list[dict]] = {"receiver": [], "bare ACK app": []}
    with tempfile.TemporaryDirectory() as tmp:
        # Redis and the (idle) sandbox; no worker, no beat.
        stack = Stack(Path(tmp), redis_config={"appendfsync": args.fsync},
                      extra_env=declared_outbound_fields() if args.declared else None)
        try:
            parts = Path(tmp) / "envelope"
            parts.mkdir()
            envelope_parts(stack.sandbox.info["salesforce_org_id"], parts)
            r = stack.redis_client()
            for _ in range(args.repeat):
                for name, app in (("receiver", "web:create_app()"), ("bare ACK app", "ack_app:create_app()")):
                    proc, url = serve(stack, app, name.replace(" ", "_"))
                    try:
                        wrk(url, parts, 2, args.connections, args.per_message, stack.outbound_token)  # warm-up
                        web_cpu, valkey_cpu = cpu_s(proc.pid), redis_cpu_s(r)
                        result = wrk(url, parts, args.seconds, args.connections, args.per_message, stack.outbound_token)
                        # CPU a message, which the other work on a shared machine
                        # changes far less than the rate.
                        result["web_cpu_ms"] = (cpu_s(proc.pid) - web_cpu) * 1000 / max(1, result["requests"])
                        result["valkey_cpu_ms"] = (redis_cpu_s(r) - valkey_cpu) * 1000 / max(1, result["requests"])
                        if name == "receiver":
                            result |= probe(url, parts, args.per_message, r, stack.outbound_token)
                        runs[name].append(result)
                        print(f"{name}: {json.dumps(result)}", flush=True)
                    finally:
                        stop(proc)
            # No worker runs: the records wait in the intake tasks' messages.
            received = sum(float(v) for k, v in r.hgetall(METRICS_COUNTERS).items()
                           if k.startswith("records_forwarded|"))
            memory = r.info("memory")["used_memory"]
        finally:
            stack.stop()

    def spread(name: str, key: str, fmt: str = "{:.0f}") -> str:
        values = [run[key] for run in runs[name]]
        text = fmt.format(sum(values) / len(values))
        return text + (f" ({fmt.format(min(values))}–{fmt.format(max(values))})" if len(values) > 1 else "")

    rx, bare = runs["receiver"], runs["bare ACK app"]
    mean = lambda rs, k: sum(r[k] for r in rs) / len(rs)  # noqa: E731
    print(f"Outbound Message ingest: {args.per_message} unique notifications a message, {args.connections} "
          f"connections, {args.seconds:.0f} s a run, {args.repeat} run(s) each, gunicorn as in the Procfile, "
          f"no workers, Redis appendfsync {args.fsync}"
          + (", fields declared (values kept for the jobs)" if args.declared else ""))
    print(f"  {'':30}{'receiver':>22}{'bare ACK app':>22}")
    for label, key, fmt in (("messages/s", "rate", "{:.0f}"), ("p50 latency, ms", "p50_ms", "{:.0f}"),
                            ("p99 latency, ms", "p99_ms", "{:.0f}"), ("errors", "errors", "{:.0f}"),
                            ("web CPU a message, ms", "web_cpu_ms", "{:.2f}"),
                            ("Valkey CPU a message, ms", "valkey_cpu_ms", "{:.2f}")):
        print(f"  {label:30}{spread('receiver', key, fmt):>22}{spread('bare ACK app', key, fmt):>22}")
    print(f"  notifications/s (receiver): {mean(rx, 'rate') * args.per_message:,.0f}; "
          f"receiver / bare: {mean(rx, 'rate') / mean(bare, 'rate'):.1%}")
    print(f"  one {args.per_message}-notification message on a quiet receiver: {rx[-1]['task_messages']} task "
          f"message(s) published, {rx[-1]['redis_commands']} Redis commands")
    print(f"  records acknowledged and forwarded to the intake task: {received:,.0f}; "
          f"Redis memory at the end: {memory / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
