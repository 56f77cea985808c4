"""The `crm-enrich` command."""
from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import threading
from pathlib import Path


def _sandbox(args) -> int:
    from crm_enrich.sandbox.server import start_sandbox

    state_dir = Path(args.state_dir)
    sandbox = start_sandbox(state_dir, listener_url=args.listener_url,
                            clodura_port=args.clodura_port, salesforce_port=args.salesforce_port,
                            clearout_port=args.clearout_port, pubsub_port=args.pubsub_port)
    print(f"Clodura simulator:    {sandbox.clodura.url}")
    print(f"Salesforce simulator: {sandbox.salesforce.url}")
    print(f"Clearout simulator:   {sandbox.info['clearout_url']}")
    print(f"Pub/Sub API (gRPC):   {sandbox.pubsub.url}")
    print(f"CA bundle (REQUESTS_CA_BUNDLE): {sandbox.certs.ca_pem}")
    print(f"Everything in {state_dir / 'sandbox.json'}; Ctrl-C stops.")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    sandbox.stop()
    return 0


def _demo(args) -> int:
    from crm_enrich.dev.demo import run_demo

    return run_demo(records=args.records, workers=args.workers, timeout_s=args.timeout, ingest=args.ingest)


def _check_settings(_args) -> int:
    from crm_enrich.settings import SettingsError, load_settings

    try:
        load_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    print("settings ok")
    return 0


# --- admin commands: they talk to the running service over HTTP -------------

def _admin_call(args, method: str, path: str, body: dict | None = None, quiet: bool = False):
    """The service's answer (status, JSON body); printed as JSON unless
    `quiet` (the caller shows it its own way)."""
    import json
    import os

    import requests

    token = os.environ.get("ADMIN_TOKEN", "")
    if not token:
        print("crm-enrich: set ADMIN_TOKEN to the service's admin token", file=sys.stderr)
        raise SystemExit(2)
    try:
        resp = requests.request(method, args.url.rstrip("/") + path, json=body, timeout=60,
                                headers={"Authorization": f"Bearer {token}"})
    except requests.RequestException as exc:
        print(f"crm-enrich: cannot reach {args.url}: {type(exc).__name__}", file=sys.stderr)
        raise SystemExit(1) from None
    try:
        payload = resp.json()
    except ValueError:
        payload = {"error": resp.text[:500]}
    if not quiet:
        print(json.dumps(payload, indent=2, sort_keys=True))
    return resp.status_code, payload


def _exit_code(status: int) -> int:
    return 0 if status < 400 else 1


def _selection(args) -> dict:
    body = {"object": args.object}
    if getattr(args, "ids", None):
        body["ids"] = [i.strip() for i in args.ids.split(",") if i.strip()]
    if getattr(args, "where", None):
        body["where"] = args.where
    if args.force:
        body["force"] = True
    if args.dry_run:
        body["dryRun"] = True
    return body


def _rerun(args) -> int:
    status, _ = _admin_call(args, "POST", "/admin/rerun", _selection(args))
    return _exit_code(status)


def _backfill(args) -> int:
    status, _ = _admin_call(args, "POST", "/admin/backfill", _selection(args))
    return _exit_code(status)


def _when(t) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(t))) if t else "-"


def _show(args, status: int, payload: dict, render) -> int:
    """JSON with --json; else an error line, or `render(console, payload)`."""
    import json

    from crm_enrich.console import make_console

    if args.json:
        print(json.dumps(payload, indent=2, sort_keys=True))
    elif status >= 400:
        print(f"error ({status}): {payload.get('error', payload)}")
    else:
        render(make_console(), payload)
    return _exit_code(status)


def _render_job(console, job: dict, title: str | None = None) -> None:
    from crm_enrich.console import print_fields, print_table

    print_fields(console, title or f"Job {job['id']}", {
        "state": job["state"], "record": f"{job['object']} {job['recordId']}", "source": job["source"],
        "created": _when(job["createdAt"]), "updated": _when(job["updatedAt"]), "attempts": job["attempts"],
        "last error" if job["state"] != "skipped" else "skipped because": job["lastError"],
        "skip reason": job.get("skipReason"), "fields written": ", ".join(job["fieldsWritten"]),
        "provider calls": ", ".join(job["providerCalls"]), "credits spent": job["creditsSpent"],
        "replayed by": job["replayedBy"], "replay of": job["replayOf"]})
    if job["steps"]:
        print_table(console, "Steps", ("at", "state"),
                    [(_when(s["at"]), f"{s['state']} ({s['step']}: {s['outcome']})" if s.get("step") else s["state"])
                     for s in job["steps"]])


def _render_run(console, run: dict) -> None:
    from crm_enrich.console import print_fields

    print_fields(console, f"Run {run['runId']}", {
        "kind": run.get("kind"), "object": run.get("object"), "status": run.get("status"),
        "created": _when(run.get("createdAt")), "selected": run.get("total"), "queued": run.get("queued"),
        "finished": run.get("finished"), "jobs": ", ".join(f"{n} {s}" for s, n in sorted(run["jobs"].items())),
        **{k: run[k] for k in ("limit", "error", "estimatedCredits") if k in run}})


def _render_ready(console, ready: dict) -> None:
    from crm_enrich.console import print_table

    rows = [(k, v) for k, v in ready.items() if k != "fieldMap"]
    field_map = ready.get("fieldMap") or {}
    rows.append(("fieldMap", field_map.get("status")))
    print_table(console, "Service", ("check", "state"), rows)
    if field_map.get("leftOut"):
        print_table(console, "Mapped fields left out", ("field", "problem", "what to do"),
                    [(f["field"], f["problem"], f["fix"]) for f in field_map["leftOut"]])


def _status(args) -> int:
    if args.job:
        status, payload = _admin_call(args, "GET", f"/admin/jobs/{args.job}", quiet=True)
        return _show(args, status, payload, _render_job)
    if args.run:
        status, payload = _admin_call(args, "GET", f"/admin/runs/{args.run}", quiet=True)
        return _show(args, status, payload, _render_run)
    if args.record:
        obj, _, rid = args.record.partition("/")
        status, payload = _admin_call(args, "GET", f"/admin/records/{obj}/{rid}", quiet=True)
        return _show(args, status, payload,
                     lambda console, rec: _render_job(console, rec["lastJob"], f"{rec['object']} {rec['recordId']}"))
    from urllib.parse import urljoin

    import requests

    try:
        resp = requests.get(urljoin(args.url, "/readyz"), timeout=10)
        payload = resp.json()
    except (requests.RequestException, ValueError) as exc:
        print(f"crm-enrich: cannot reach {args.url}: {type(exc).__name__}", file=sys.stderr)
        return 1
    # /readyz answers 503 with the reason, which is worth showing as it is.
    _show(args, 200, payload, _render_ready)
    return _exit_code(resp.status_code)


def _failed(args) -> int:
    if args.replay or args.jobs:
        body = {"jobIds": [j.strip() for j in args.jobs.split(",") if j.strip()]} if args.jobs else {"all": True}
        status, payload = _admin_call(args, "POST", "/admin/failed/replay", body, quiet=True)
        return _show(args, status, payload, lambda console, r: console.print(
            f"replayed {r['replayed']} job(s), {r['skipped']} not failed or replayed already", markup=False))
    status, payload = _admin_call(args, "GET", "/admin/failed", quiet=True)

    def render(console, answer: dict) -> None:
        from crm_enrich.console import print_table

        print_table(console, f"Failed jobs: {answer['count']}", ("when", "job", "record", "error", "replayed as"),
                    [(_when(j.get("updatedAt")), j["id"], f"{j['object']} {j['recordId']}", j.get("lastError"),
                      j.get("replayedBy")) for j in answer["jobs"]])

    return _show(args, status, payload, render)


def _doctor(_args) -> int:
    from rich.markup import escape

    from crm_enrich.console import make_console
    from crm_enrich.operations.doctor import run_checks

    console = make_console()
    bad = 0
    for check in run_checks():
        mark = "[green]✓[/]" if check.ok else "[bold red]✗[/]"
        console.print(f"{mark} [bold]{escape(check.name)}[/]: {escape(check.detail)}")
        if not check.ok:
            bad += 1
            if check.fix:
                console.print(f"    [yellow]fix:[/] {escape(check.fix)}")
    console.print("[green]all checks passed[/]" if not bad else f"[bold red]{bad} check(s) failed[/]")
    return 1 if bad else 0


def _changes(args) -> int:
    """The change log of a period as CSV, to stdout or --output."""
    import os

    import requests

    token = os.environ.get("ADMIN_TOKEN", "")
    if not token:
        print("crm-enrich: set ADMIN_TOKEN to the service's admin token", file=sys.stderr)
        return 2
    params = {"since": args.since, **({"until": args.until} if args.until else {})}
    try:
        resp = requests.get(args.url.rstrip("/") + "/admin/changes.csv", params=params, timeout=300, stream=True,
                            headers={"Authorization": f"Bearer {token}"})
    except requests.RequestException as exc:
        print(f"crm-enrich: cannot reach {args.url}: {type(exc).__name__}", file=sys.stderr)
        return 1
    if resp.status_code >= 400:
        try:
            print(f"crm-enrich: {resp.json().get('error')}", file=sys.stderr)
        except ValueError:
            print(f"crm-enrich: HTTP {resp.status_code}", file=sys.stderr)
        return 1
    out = open(args.output, "w", encoding="utf-8", newline="") if args.output else sys.stdout  # noqa: SIM115
    try:
        for chunk in resp.iter_content(chunk_size=65_536, decode_unicode=True):
            out.write(chunk)
    finally:
        if args.output:
            out.close()
    return 0


def _add_url(parser) -> None:
    parser.add_argument("--url", default="http://127.0.0.1:8000",
                        help="the running service (default http://127.0.0.1:8000); token from ADMIN_TOKEN")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="crm-enrich", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the whole flow on the sandbox")
    demo.add_argument("--records", type=int, default=50, help="Contacts to create (default 50)")
    demo.add_argument("--workers", type=int, default=4, help="worker processes (default 4)")
    demo.add_argument("--timeout", type=float, default=600, help="seconds to wait at most")
    demo.add_argument("--ingest", choices=("outbound_message", "cdc"), default="outbound_message",
                      help="how the org's records come in: Outbound Messages (default) or change events "
                           "over the Pub/Sub API, followed by the events: process")
    demo.set_defaults(func=_demo)

    sandbox = sub.add_parser("sandbox", help="run the Clodura and Salesforce simulators")
    sandbox.add_argument("--state-dir", default=str(Path(tempfile.gettempdir()) / "crm-enrich-sandbox"))
    sandbox.add_argument("--listener-url", default=None,
                         help="where the simulated org sends Outbound Messages: "
                              "http://<web>/salesforce/outbound-message/<SALESFORCE_OUTBOUND_TOKEN>")
    sandbox.add_argument("--clodura-port", type=int, default=8443)
    sandbox.add_argument("--salesforce-port", type=int, default=8444)
    sandbox.add_argument("--clearout-port", type=int, default=8445)
    sandbox.add_argument("--pubsub-port", type=int, default=8446)
    sandbox.set_defaults(func=_sandbox)

    check = sub.add_parser("check-settings", help="validate the environment and exit")
    check.set_defaults(func=_check_settings)

    rerun = sub.add_parser("rerun", help="re-run records through the pipeline")
    rerun.add_argument("--object", required=True, choices=["Contact", "Lead", "Account"])
    which = rerun.add_mutually_exclusive_group(required=True)
    which.add_argument("--ids", help="comma-separated record ids")
    which.add_argument("--where", help="SOQL condition selecting the records")
    rerun.add_argument("--force", action="store_true", help="ignore the cache and the recently-enriched skip")
    rerun.add_argument("--dry-run", action="store_true", help="count and estimate credits; start nothing")
    _add_url(rerun)
    rerun.set_defaults(func=_rerun)

    backfill = sub.add_parser("backfill", help="enrich records that existed before installation")
    backfill.add_argument("--object", required=True, choices=["Contact", "Lead", "Account"])
    backfill.add_argument("--where", help="SOQL condition (default: every record)")
    backfill.add_argument("--force", action="store_true")
    backfill.add_argument("--dry-run", action="store_true")
    _add_url(backfill)
    backfill.set_defaults(func=_backfill)

    status = sub.add_parser("status", help="a job, a run, a record, or (default) the service's readiness")
    what = status.add_mutually_exclusive_group()
    what.add_argument("--job", help="job id")
    what.add_argument("--run", help="run id")
    what.add_argument("--record", help="Object/Id, e.g. Contact/003...")
    status.add_argument("--json", action="store_true", help="print the service's JSON answer")
    _add_url(status)
    status.set_defaults(func=_status)

    failed = sub.add_parser("failed", help="list dead letters, or replay them")
    failed.add_argument("--replay", action="store_true", help="replay every failed job not replayed yet")
    failed.add_argument("--jobs", help="replay only these comma-separated job ids")
    failed.add_argument("--json", action="store_true", help="print the service's JSON answer")
    _add_url(failed)
    failed.set_defaults(func=_failed)

    changes = sub.add_parser("changes", help="what was written, when and why, as CSV (no values)")
    changes.add_argument("--since", required=True, help="ISO 8601 date or date-time (UTC unless it says)")
    changes.add_argument("--until", help="ISO 8601 date or date-time (default: now)")
    changes.add_argument("--output", help="write the CSV to this file instead of stdout")
    _add_url(changes)
    changes.set_defaults(func=_changes)
    doctor = sub.add_parser("doctor", help="check this deployment end to end (settings, Redis, Salesforce, "
                                           "providers, the public URL, worker and beat); non-zero on any ✗")
    doctor.set_defaults(func=_doctor)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
