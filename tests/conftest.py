"""Fixtures shared by the test folders."""
from __future__ import annotations

import functools

import pytest
import requests

from crm_enrich.sandbox.clearout import ClearoutSimConfig, create_clearout_app
from crm_enrich.sandbox.clodura import CloduraSimConfig, create_clodura_app
from crm_enrich.sandbox.common import ServedApp, ensure_certificates


@pytest.fixture(scope="module")
def provider_sims(tmp_path_factory):
    """(the Clearout simulator, the Clodura simulator, a session trusting
    both) served over real HTTPS sockets in the test process, for the tests
    that drive the provider clients against them."""
    certs = ensure_certificates(tmp_path_factory.mktemp("certs"))
    clearout = ServedApp(create_clearout_app(ClearoutSimConfig(rate_limit_per_minute=1000)), certs).start()
    clodura = ServedApp(create_clodura_app(CloduraSimConfig()), certs).start()
    session = requests.Session()
    session.request = functools.partial(session.request, verify=str(certs.ca_pem))  # type: ignore[method-assign]
    yield clearout, clodura, session
    clearout.stop()
    clodura.stop()
