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
                            clearout_port=args.clearout_port)
    print(f"Clodura simulator:    {sandbox.clodura.url}")
    print(f"Salesforce simulator: {sandbox.salesforce.url}")
    print(f"Clearout simulator:   {sandbox.info['clearout_url']}")
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

    return run_demo(records=args.records, workers=args.workers, timeout_s=args.timeout)


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

def _admin_call(args, method: str, path: str, body: dict | None = None):
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


def _status(args) -> int:
    if args.job:
        path = f"/admin/jobs/{args.job}"
    elif args.run:
        path = f"/admin/runs/{args.run}"
    elif args.record:
        obj, _, rid = args.record.partition("/")
        path = f"/admin/records/{obj}/{rid}"
    else:
        from urllib.parse import urljoin

        import requests

        try:
            resp = requests.get(urljoin(args.url, "/readyz"), timeout=10)
        except requests.RequestException as exc:
            print(f"crm-enrich: cannot reach {args.url}: {type(exc).__name__}", file=sys.stderr)
            return 1
        print(resp.text.strip())
        return _exit_code(resp.status_code)
    status, _ = _admin_call(args, "GET", path)
    return _exit_code(status)


def _failed(args) -> int:
    if args.replay or args.jobs:
        body = {"jobIds": [j.strip() for j in args.jobs.split(",") if j.strip()]} if args.jobs else {"all": True}
        status, _ = _admin_call(args, "POST", "/admin/failed/replay", body)
    else:
        status, _ = _admin_call(args, "GET", "/admin/failed")
    return _exit_code(status)


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
    demo.set_defaults(func=_demo)

    sandbox = sub.add_parser("sandbox", help="run the Clodura and Salesforce simulators")
    sandbox.add_argument("--state-dir", default=str(Path(tempfile.gettempdir()) / "crm-enrich-sandbox"))
    sandbox.add_argument("--listener-url", default=None,
                         help="where the simulated org sends Outbound Messages: "
                              "http://<web>/salesforce/outbound-message/<SALESFORCE_OUTBOUND_TOKEN>")
    sandbox.add_argument("--clodura-port", type=int, default=8443)
    sandbox.add_argument("--salesforce-port", type=int, default=8444)
    sandbox.add_argument("--clearout-port", type=int, default=8445)
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
    _add_url(status)
    status.set_defaults(func=_status)

    failed = sub.add_parser("failed", help="list dead letters, or replay them")
    failed.add_argument("--replay", action="store_true", help="replay every failed job not replayed yet")
    failed.add_argument("--jobs", help="replay only these comma-separated job ids")
    _add_url(failed)
    failed.set_defaults(func=_failed)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
