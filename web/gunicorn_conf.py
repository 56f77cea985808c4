"""gunicorn settings shared by every way we run the web app (Procfile,
Dockerfile, compose, devstack): `gunicorn --config python:web.gunicorn_conf`.

gunicorn's access log prints each request's path, and the Outbound Message
endpoint's path ends in its secret (SALESFORCE_OUTBOUND_TOKEN). This logger
masks it, and any email address or phone number, in the access log and in
gunicorn's own error log, exactly as crm_enrich.logs does for ours.
"""
from __future__ import annotations

import logging
from typing import Any

from gunicorn.glogging import Logger

from crm_enrich.logs import mask_text


class _MaskRecord(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = mask_text(record.getMessage()), None
        return True


class MaskingLogger(Logger):
    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for logger in (self.error_log, self.access_log):
            logger.addFilter(_MaskRecord())

    def atoms(self, resp: Any, req: Any, environ: dict, request_time: Any) -> dict:
        return {name: mask_text(value) if isinstance(value, str) else value
                for name, value in super().atoms(resp, req, environ, request_time).items()}


logger_class = "web.gunicorn_conf.MaskingLogger"

# A gthread worker takes new connections while it has fewer than this many
# open. Kept-alive connections stay with the worker that accepted them, and
# the first worker to wake accepts a whole burst: with gunicorn's default
# (1,000) one process served 15 of 16 senders while the other sat idle.
# Twice the threads lets every worker share the load; a connection beyond
# waits in the listen backlog only until a kept-alive one closes (2 s idle).
worker_connections = 8
