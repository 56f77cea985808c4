"""The sandbox's certificate names every address it serves on: a kept
certificate that lacks one is issued again, so clients on other hosts
(network namespaces reaching it over a bridge) verify it as they would a
real provider's."""
from __future__ import annotations

import requests
from flask import Flask

from crm_enrich.sandbox.common import ServedApp, ensure_certificates

OTHER_ADDRESS = "127.0.0.2"  # loopback too, but not a name the default certificate holds


def test_a_kept_certificate_without_the_address_is_issued_again(tmp_path):
    ensure_certificates(tmp_path)  # as an earlier run on 127.0.0.1 left it
    certs = ensure_certificates(tmp_path, extra_host=OTHER_ADDRESS)
    app = Flask("cert-test")
    app.add_url_rule("/", view_func=lambda: "ok")
    served = ServedApp(app, certs, host=OTHER_ADDRESS).start()
    try:
        assert requests.get(served.url, verify=str(certs.ca_pem), timeout=10).text == "ok"
    finally:
        served.stop()


def test_a_certificate_that_names_the_address_is_kept(tmp_path):
    first = ensure_certificates(tmp_path, extra_host=OTHER_ADDRESS).cert_pem.read_bytes()
    assert ensure_certificates(tmp_path, extra_host=OTHER_ADDRESS).cert_pem.read_bytes() == first
    assert ensure_certificates(tmp_path).cert_pem.read_bytes() == first
