"""The Clearout and Clodura simulators served over real HTTPS sockets in
the test process, with a session that trusts their certificates: for the
tests that drive the provider clients against them."""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path

import requests

from crm_enrich.sandbox.clearout import ClearoutSimConfig, create_clearout_app
from crm_enrich.sandbox.clodura import CloduraSimConfig, create_clodura_app
from crm_enrich.sandbox.common import ServedApp, ensure_certificates


@contextlib.contextmanager
def served_provider_sims(cert_dir: Path) -> Iterator[tuple[ServedApp, ServedApp, requests.Session]]:
    """(the Clearout simulator, the Clodura simulator, a session for both)."""
    certs = ensure_certificates(cert_dir)
    clearout = ServedApp(create_clearout_app(ClearoutSimConfig(rate_limit_per_minute=1000)), certs).start()
    clodura = ServedApp(create_clodura_app(CloduraSimConfig()), certs).start()
    session = requests.Session()
    session.request = functools.partial(session.request, verify=str(certs.ca_pem))  # type: ignore[method-assign]
    try:
        yield clearout, clodura, session
    finally:
        clearout.stop()
        clodura.stop()
