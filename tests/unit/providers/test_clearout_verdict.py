"""Clearout's status / sub-status / safe_to_send → our verdict."""
import pytest

from crm_enrich.providers.clearout import clearout_verdict, parse_verdict


@pytest.mark.parametrize("status, sub_status, safe, expected", [
    ("valid", 200, "yes", "valid"),
    ("valid", 200, "risky", "risky"),      # role or gibberish address
    ("valid", 200, "no", "risky"),         # disposable mailbox
    ("valid", 601, "unknown", "valid"),
    ("invalid", 406, "no", "invalid"),
    ("catch_all", 411, "risky", "catch_all"),
    ("unknown", 417, "unknown", "unknown"),
    ("VALID", 200, "YES", "valid"),        # case does not matter
    # Without a status we know, the sub-status decides.
    (None, 603, None, "valid"),
    ("something_new", 411, None, "catch_all"),
    ("", 407, None, "unknown"),
    (None, 604, None, "invalid"),
    (None, None, None, "unknown"),
])
def test_verdict(status, sub_status, safe, expected):
    assert clearout_verdict(status, sub_status, safe) == expected


def test_parse_verdict_reads_the_answer_and_tolerates_missing_parts():
    full = parse_verdict({"status": "invalid", "safe_to_send": "no", "verified_on": "2025-03-14T09:26:53+00:00",
                          "sub_status": {"code": 406, "desc": "Mailbox not Found"}})
    assert (full.verdict, full.provider_status, full.sub_status) == ("invalid", "invalid", 406)
    assert full.detail == "406 Mailbox not Found; safe to send: no"
    assert full.verified_at == "2025-03-14T09:26:53+00:00"
    bare = parse_verdict({})
    assert (bare.verdict, bare.provider_status, bare.detail, bare.sub_status) == ("unknown", "unknown", "unknown", None)
