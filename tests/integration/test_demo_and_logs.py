"""The README's demo command, and the logs it leaves behind."""
import re
import subprocess
import sys
from pathlib import Path

from crm_enrich.sandbox.dataset import demo_contacts
from tests.integration.helpers import UNMASKED_EMAIL

ROOT = Path(__file__).resolve().parents[2]
PLAIN_PROGRESS_EVERY_S = 5


def test_demo_exits_zero_with_every_record_written_back():
    result = subprocess.run(
        [str(Path(sys.executable).parent / "crm-enrich"), "demo", "--records", "20", "--timeout", "240"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "written back       20" in result.stdout
    assert "not final          0" in result.stdout
    assert "OK: every record reached a final state" in result.stdout
    # The summary counts what the jobs found (their outcome outlives their values).
    assert re.search(r"enriched +[1-9]\d* \(matched by Clodura\)", result.stdout), result.stdout
    assert re.search(r"verified +20 \(email verdict written: .*valid", result.stdout), result.stdout
    assert re.search(r"emails revealed +[1-9]", result.stdout), result.stdout
    # One record's change log: fields written, each with its rule, source and provider.
    log = result.stdout.split("Change log of Contact", 1)[1].split("Summary", 1)[0]
    assert re.search(r"Enriched_At__c\s+always\s+meta\.enriched_at\s+crm-enrich\s+was blank", log), log

    # Redirected, the log is short and plain: no colour codes or carriage
    # returns, a progress line at most every few seconds, one table row per
    # kind of record the demo is about.
    out = result.stdout
    assert "\x1b[" not in out and "\r" not in out
    elapsed = float(re.search(r"records +20 in ([\d.]+)s", out)[1])
    progress = re.findall(r"^  \d+/43 jobs final", out, re.M)   # 20 Contacts, their 20 Accounts, 3 Leads
    assert 1 <= len(progress) <= elapsed / PLAIN_PROGRESS_EVERY_S + 2, out
    assert len(out.splitlines()) < 52, out
    table = out[out.index("Before → after"):out.index("Summary")]
    for kind in ("email revealed", "invalid address", "catch-all, settled by callback",
                 "found by the waterfall"):
        assert kind in table, table
    # The waterfall's find: nobody at Clodura, a title written from Clearout's reverse lookup.
    assert re.search(r"found by the waterfall +\S+@\S+ +- → \S", table), table
    assert re.search(r"more found by the waterfall \(\d+ by clearout_email\)", out), out
    assert re.search(r"email revealed +- → \S+@", table), table          # the revealed address, written back
    assert re.search(r"invalid address .* - → invalid", table), table
    assert re.search(r"catch-all, settled by callback .* - → catch_all", table), table
    # A domain found for a Lead: Website (and what the domain brought) before → after.
    leads = out[out.index("A domain found for a Lead"):out.index("Change log of")]
    assert len(re.findall(r", Inc\. +- → https://\S+ +- → \S+@\S+ +- → \d+ +done", leads)) == 3, leads
    assert re.search(r"Leads +3 of 3 got their domain from Clearout's autocomplete", out), out


def test_the_demo_installs_no_system_package():
    """./demo.sh runs bootstrap.sh and the demo; only the test command
    (test.sh, through scripts/test_tools.sh) installs Chromium and promtool."""
    for script in ("demo.sh", "scripts/bootstrap.sh"):
        text = (ROOT / script).read_text()
        assert "apt-get" not in text and "chromium" not in text and "test_tools" not in text, script
    assert "scripts/test_tools.sh" in (ROOT / "test.sh").read_text()
    assert "apt-get install" in (ROOT / "scripts/test_tools.sh").read_text()


def test_no_email_or_phone_from_the_data_reaches_the_logs(stack, control, job_for):
    contacts = demo_contacts(12, seed=99)
    fields = [{k: v for k, v in c.items() if not k.startswith("_")} for c in contacts]
    ids = control.create_records("Contact", fields)
    for rid in ids:
        job_for("Contact", rid)
    logs = "\n".join(p.read_text() for p in stack.log_dir.glob("*.log"))
    assert "job.done" in logs  # the logs are really there
    for contact in contacts:
        if contact.get("Email"):
            assert contact["Email"] not in logs
    hits = [h for h in UNMASKED_EMAIL.findall(logs) if not h.endswith("@127.0.0.1")]  # celery node names
    assert hits == []
