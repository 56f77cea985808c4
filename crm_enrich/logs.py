"""Structured JSON logs, one line per event, with personal data masked.

We log ids and field names, never values; this processor is the safety net
for anything that slips through (an exception message quoting an address,
a path carrying the Outbound Message token).
"""
from __future__ import annotations

import logging
import re
import sys

import structlog

EMAIL_RE = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})")
# International numbers (+...) and North-American 3-3-4 forms; deliberately
# not "any run of digits", which would eat ids and timestamps.
PHONE_RE = re.compile(
    r"(?<![\w+])\+\d[\d ().-]{6,}\d(?!\w)"
    r"|(?<![\w-])(?:\(\d{3}\)\s?|\d{3}[-. ])\d{3}[-. ]\d{4}(?![\w-])"
)


# The Outbound Message endpoint's last path segment is its secret
# (SALESFORCE_OUTBOUND_TOKEN): a path is logged with it masked.
OUTBOUND_TOKEN_RE = re.compile(r"(/salesforce/outbound-message/)[^/?#\s\"']+")


def mask_text(text: str) -> str:
    text = OUTBOUND_TOKEN_RE.sub(r"\1***", text)
    text = EMAIL_RE.sub(r"\1***@\2", text)
    return PHONE_RE.sub(lambda m: "***" + re.sub(r"\D", "", m.group())[-2:], text)


def _mask(value):
    if isinstance(value, str):
        # Ids and names: no "@", "/", "+" or separator, so nothing to mask
        # (a message's hundred job ids were a good part of a log line's cost).
        return value if value.isalnum() else mask_text(value)
    if isinstance(value, dict):
        return {k: _mask(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_mask(v) for v in value]
    return value


def mask_personal_data(_logger, _method, event_dict):
    return {key: _mask(value) for key, value in event_dict.items()}


def configure_logging(level: str = "INFO") -> None:
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.format_exc_info,
        mask_personal_data,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.JSONRenderer(),
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


log = structlog.get_logger("crm_enrich")
