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
                            clodura_port=args.clodura_port, salesforce_port=args.salesforce_port)
    print(f"Clodura simulator:    {sandbox.clodura.url}")
    print(f"Salesforce simulator: {sandbox.salesforce.url}")
    print(f"CA bundle (REQUESTS_CA_BUNDLE): {sandbox.certs.ca_pem}")
    print(f"Everything in {state_dir / 'sandbox.json'}; Ctrl-C stops.")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    sandbox.stop()
    return 0


def _demo(args) -> int:
    from crm_enrich.demo import run_demo

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
                         help="where the simulated org sends Outbound Messages")
    sandbox.add_argument("--clodura-port", type=int, default=8443)
    sandbox.add_argument("--salesforce-port", type=int, default=8444)
    sandbox.set_defaults(func=_sandbox)

    check = sub.add_parser("check-settings", help="validate the environment and exit")
    check.set_defaults(func=_check_settings)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
