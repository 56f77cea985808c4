"""The baseline for bench/ingest.py: a Flask app that reads the body and
answers the Outbound Message ACK, nothing else. Served by the same gunicorn
command line as the receiver (`ack_app:create_app()` with --pythonpath bench)."""
from __future__ import annotations

from flask import Flask, Response, request

from crm_enrich.salesforce.outbound_message import ACK


def create_app() -> Flask:
    app = Flask(__name__)

    @app.post("/salesforce/outbound-message/<token>")
    def ack(token: str) -> Response:
        request.get_data(cache=False)
        return Response(ACK, status=200, content_type="text/xml; charset=utf-8")

    return app
