"""What every simulator shares: a request log, fault switches, the control
API under /_sandbox, and serving over HTTPS with a locally generated CA.

Tests and benchmarks drive the simulators only through HTTP (the control API),
so they exercise the same sockets and TLS as production code.
"""
from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import trustme
from cryptography import x509
from flask import Blueprint, Flask, Response, g, jsonify, request
from werkzeug.serving import make_server


@dataclass
class FaultRule:
    """One switch: requests whose path starts with `path` (and whose method
    matches, if given) are delayed by `delay` seconds and, if `status` is
    set, answered with that status and body instead of the real handler.
    `times` counts down; -1 means until cleared. `for_s`, if set, ends the
    rule that many seconds after it was added (an outage of known length)."""

    path: str = "/"
    method: str | None = None
    status: int | None = None
    body: object = None
    headers: dict = field(default_factory=dict)
    delay: float = 0.0
    times: int = 1
    for_s: float = 0.0
    added_at: float = field(default_factory=time.time)

    def matches(self, method: str, path: str) -> bool:
        return (
            self.times != 0
            and (not self.for_s or time.time() < self.added_at + self.for_s)
            and path.startswith(self.path)
            and (self.method is None or self.method.upper() == method)
        )


class SandboxRecorder:
    """Request log and fault book of one simulator (thread-safe)."""

    def __init__(self, service: str):
        self.service = service
        self.lock = threading.Lock()
        self.log: list[dict] = []
        self.faults: list[FaultRule] = []
        self._seq = itertools.count(1)

    def take_fault(self, method: str, path: str) -> FaultRule | None:
        with self.lock:
            for rule in self.faults:
                if rule.matches(method, path):
                    if rule.times > 0:
                        rule.times -= 1
                    return rule
        return None

    def record(self, entry: dict) -> None:
        with self.lock:
            entry["seq"] = next(self._seq)
            self.log.append(entry)

    def reset(self) -> None:
        with self.lock:
            self.log.clear()
            self.faults.clear()


def install_recorder(app: Flask, recorder: SandboxRecorder) -> None:
    """Log every request (but control calls) and apply fault switches.

    Handlers may add facts to a log entry through `g.sandbox_extra`
    (for example credits charged)."""

    @app.before_request
    def _apply_faults():
        g.sandbox_extra = {}
        g.sandbox_fault = False
        if request.path.startswith("/_sandbox"):
            return None
        rule = recorder.take_fault(request.method, request.path)
        if rule is None:
            return None
        if rule.delay:
            time.sleep(rule.delay)
        if rule.status is None:
            return None
        g.sandbox_fault = True
        if isinstance(rule.body, (dict, list)):
            resp = jsonify(rule.body)
            resp.status_code = rule.status
        else:
            resp = Response(rule.body or "", status=rule.status)
        resp.headers.update(rule.headers)
        return resp

    @app.after_request
    def _log(resp):
        if not request.path.startswith("/_sandbox"):
            recorder.record(
                {
                    "t": time.time(),
                    "service": recorder.service,
                    "method": request.method,
                    "path": request.path,
                    "status": resp.status_code,
                    # Which host asked (tests of several worker hosts tell them apart).
                    "client": request.remote_addr,
                    "fault": g.get("sandbox_fault", False),
                    **g.get("sandbox_extra", {}),
                }
            )
        return resp

    app.register_blueprint(control_blueprint(recorder))


def control_blueprint(recorder: SandboxRecorder) -> Blueprint:
    bp = Blueprint(f"sandbox_control_{recorder.service}", __name__)

    @bp.get("/_sandbox/log")
    def get_log():
        since = request.args.get("since", 0, type=int)
        with recorder.lock:
            entries = [e for e in recorder.log if e["seq"] > since]
        return jsonify(entries)

    @bp.delete("/_sandbox/log")
    def clear_log():
        with recorder.lock:
            recorder.log.clear()
        return "", 204

    @bp.post("/_sandbox/faults")
    def add_fault():
        spec = request.get_json(force=True)
        rules = spec if isinstance(spec, list) else [spec]
        with recorder.lock:
            recorder.faults.extend(FaultRule(**r) for r in rules)
        return "", 204

    @bp.delete("/_sandbox/faults")
    def clear_faults():
        with recorder.lock:
            recorder.faults.clear()
        return "", 204

    return bp


@dataclass
class Certificates:
    ca_pem: Path
    cert_pem: Path
    key_pem: Path


def ensure_certificates(state_dir: Path, extra_host: str | None = None) -> Certificates:
    """A local CA and a server certificate for 127.0.0.1 / localhost (and
    `extra_host`, an address the simulators serve on besides).

    Clients trust the CA through REQUESTS_CA_BUNDLE, exactly as they would
    trust a corporate CA in production; certificate checks stay on."""
    state_dir.mkdir(parents=True, exist_ok=True)
    certs = Certificates(
        state_dir / "sandbox-ca.pem",
        state_dir / "sandbox-cert.pem",
        state_dir / "sandbox-key.pem",
    )
    hosts = ["127.0.0.1", "localhost", "::1", *([extra_host] if extra_host not in (None, "127.0.0.1") else [])]
    if not all(p.exists() for p in (certs.ca_pem, certs.cert_pem, certs.key_pem)) \
            or not set(hosts) <= _names_in(certs.cert_pem):
        ca = trustme.CA(organization_name="crm-enrich sandbox")
        server = ca.issue_cert(*hosts)
        ca.cert_pem.write_to_path(str(certs.ca_pem))
        server.private_key_pem.write_to_path(str(certs.key_pem))
        server.cert_chain_pems[0].write_to_path(str(certs.cert_pem))
        for extra in server.cert_chain_pems[1:]:
            extra.write_to_path(str(certs.cert_pem), append=True)
    return certs


def _names_in(cert_pem: Path) -> set[str]:
    """The host names and addresses a kept certificate is valid for."""
    cert = x509.load_pem_x509_certificate(cert_pem.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {*names.get_values_for_type(x509.DNSName), *map(str, names.get_values_for_type(x509.IPAddress))}


class ServedApp:
    """A Flask app served over HTTPS on a background thread."""

    def __init__(self, app: Flask, certs: Certificates, host: str = "127.0.0.1", port: int = 0):
        self.server = make_server(
            host,
            port,
            app,
            threaded=True,
            ssl_context=(str(certs.cert_pem), str(certs.key_pem)),
        )
        self.host = host
        self.port = self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def start(self) -> ServedApp:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
