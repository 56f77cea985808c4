"""Helpers more than one integration test module uses: people from the
sandbox's dataset, Contacts for them, the simulators' request log, a job's
steps, `crm-enrich doctor`'s checks, and the pattern of an address in a
log."""
from __future__ import annotations

import re
import subprocess

from crm_enrich.dev.devstack import BIN
from crm_enrich.sandbox.dataset import build_dataset

DATASET = build_dataset()
# An email address, as it must never appear in a log line.
UNMASKED_EMAIL = re.compile(r"[A-Za-z0-9._%+-]{2,}@[A-Za-z0-9-]+\.[A-Za-z0-9.-]+")


def people(kind: str, count: int, skip: int = 0):
    """Known people whose address verifies Deliverable (kind "deliverable")
    or who work at a catch-all company (kind "catch_all"), from the end of
    the dataset so other tests' cached answers are not reused."""
    companies = {c.organisation_id: c for c in DATASET.companies}
    if kind == "catch_all":
        chosen = [p for p in DATASET.people if p.known and companies[p.organisation_id].catch_all]
    else:
        chosen = [p for p in DATASET.people if p.known and p.email_verdict == "Deliverable"
                  and not companies[p.organisation_id].catch_all]
    chosen = chosen[::-1][skip:skip + count]
    return [(p, companies[p.organisation_id]) for p in chosen]


def create_contact(control, person, company, with_email: bool) -> str:
    (account_id,) = control.create_records("Account", [{"Name": company.name}], fire_outbound=False)
    fields = {"FirstName": person.first_name, "LastName": person.last_name, "AccountId": account_id}
    if with_email:
        fields["Email"] = person.email
    (contact_id,) = control.create_records("Contact", [fields])
    return contact_id


def contacts_for(control, people) -> list[str]:
    """A Contact for each person (name and email), created as a person would."""
    return control.create_records("Contact", [{"FirstName": p.first_name, "LastName": p.last_name,
                                                "Email": p.email} for p in people])


def log_mark(control, service: str) -> int:
    """The sequence number of the simulator's latest logged request (0:
    none): what a test counts calls after."""
    return max([e["seq"] for e in control.log(service)] or [0])


def calls_to(control, service: str, since: int, part: str) -> list[dict]:
    """The simulator's logged requests after `since` whose path holds `part`."""
    return [e for e in control.log(service, since=since) if part in e["path"]]


def states(job) -> list[str]:
    return [step["state"] for step in job.steps]


def doctor(env: dict) -> tuple[int, dict[str, tuple[bool, str, str]], str]:
    """Exit status, {check name: (ok, detail, fix)} and the raw output."""
    result = subprocess.run([str(BIN / "crm-enrich"), "doctor"], env=env, capture_output=True, text=True,
                            timeout=120)
    checks: dict[str, tuple[bool, str, str]] = {}
    last = None
    for line in result.stdout.splitlines():
        if line.startswith(("✓ ", "✗ ")):
            name, _, detail = line[2:].partition(": ")
            checks[name] = (line.startswith("✓"), detail, "")
            last = name
        elif line.startswith("    fix: ") and last:
            ok, detail, _ = checks[last]
            checks[last] = (ok, detail, line.removeprefix("    fix: "))
    return result.returncode, checks, result.stdout + result.stderr
