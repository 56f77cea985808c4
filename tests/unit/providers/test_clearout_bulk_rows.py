"""Reading Clearout's bulk result files: labels into our verdicts, cancelled
rows, finder rows; and the run a job belongs to."""
import pytest

from crm_enrich import keys
from crm_enrich.flow.clearout_lists import _answer
from crm_enrich.providers.clearout_bulk import row_cancelled, row_found_email, row_verdict


@pytest.mark.parametrize("status, safe, expected", [
    ("Valid", "Yes", "valid"),
    ("Valid", "Risky", "risky"),       # a role or gibberish address
    ("Invalid", "No", "invalid"),
    ("Catch All", "Risky", "catch_all"),
    ("Unknown", "Unknown", "unknown"),
    ("", "", "unknown"),               # a row Clearout left empty
])
def test_a_result_row_gives_the_instant_checks_verdict(status, safe, expected):
    verdict = row_verdict({"Clearout Verification Status": status, "Clearout Safe to Send": safe,
                           "Clearout Reason": "Success", "Clearout Verified At (UTC)": "2025-03-14T09:26:53Z"})
    assert verdict.verdict == expected
    assert verdict.detail.startswith("bulk: Success")


def test_cancelled_rows_and_finder_rows():
    assert row_cancelled({"Clearout Reason": "Request cancelled"})
    assert not row_cancelled({"Clearout Reason": "Mailbox not Found"})
    found = {"Clearout Finder Status": "Found", "Clearout Finder Email Address": "a@b.test"}
    assert row_found_email(found) == "a@b.test"
    assert row_found_email({"Clearout Finder Status": "Not Found", "Clearout Finder Email Address": ""}) is None


def test_a_row_is_applied_only_to_the_job_whose_address_it_carries():
    entry = {"list": "verify-1", "row": {"Email": "Ada@Acme.test"}}
    row = {"Email": "ada@acme.test", "Clearout Verification Status": "Valid", "Clearout Safe to Send": "Yes"}
    assert _answer("verify", entry, row)["verdict"]["verdict"] == "valid"
    assert _answer("verify", entry, {**row, "Email": "someone@else.test"}) is None   # falls back
    assert _answer("verify", None, row) is None                                      # not on this list
    assert _answer("verify", entry, {**row, "Clearout Reason": "Request cancelled"}) is None


def test_the_run_of_a_job_is_read_from_its_dedupe_key():
    assert keys.run_of_record_key(keys.run_record("abc123", "003000000000001AAA")) == "abc123"
    assert keys.run_of_record_key(keys.outbound_notification("04l000000000001")) is None
    assert keys.run_of_record_key(None) is None


@pytest.mark.parametrize("disposable, role, free, expected", [
    ("No", "No", "No", "business"),
    ("No", "No", "Yes", "free"),
    ("No", "Yes", "Yes", "role"),
    ("Yes", "Yes", "No", "disposable"),   # the worst flag wins, as for an instant answer
    ("", "", "", None),                   # a row without the columns says nothing
])
def test_a_result_rows_account_flags_give_the_addresss_type(disposable, role, free, expected):
    verdict = row_verdict({"Clearout Verification Status": "Valid", "Clearout Safe to Send": "Yes",
                           "Clearout Disposable Status": disposable, "Clearout Role Account Status": role,
                           "Clearout Free Account Status": free})
    assert verdict.email_type == expected
