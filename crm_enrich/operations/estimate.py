"""Pricing a dry run from what its selection needs, at the one price table
(crm_enrich/providers/quota.py COSTS, docs/clodura.md#credits).

Clodura charges for what it finds: enrich only on a match, a reveal only
when an address or number comes back, Organisation Enrich only for a
company we find. So a selection's cost is a range, worked out per record
from what the record already has:

- enrich (0 to 2) for a record with an identifier, unless a cached answer
  makes it free (a forced run asks again);
- without an email: a reveal (0 to 6) and, for what it reveals, a
  verification;
- with an email: a standard check (0.04, always charged when asked), or a
  deep one (0.1) on a domain already known to be catch-all; on another
  domain the deep re-check may follow (up to 0.14);
- a phone reveal (0 to 20) when allowed and a mapped phone field is blank;
- for Contacts, each distinct Account not enriched today: Organisation
  Enrich (0 to 1 + the components the map asks for), and each signal the
  Account map uses that was not asked for that Account today (job posts,
  news: 0 to 2 each, nothing when nothing is found);
- for Leads whose map uses organisation data, an Organisation Enrich (0 to
  1 + components): the person match may name the company (then it costs
  nothing more), else the Lead's Website or the domain Clearout's free
  autocomplete finds for its Company leads to one;
- a re-verification run only verifies.

`atLeast` counts only what is charged whatever Clodura finds; `atMost`
everything that could be. With WATERFALL_STEPS on, a record Clodura may
not match may also need each step it has what to ask with (0 to the
step's price: nothing is charged when nobody is found): Clodura's people
search counts in `credits`, Clearout's reverse lookups (and, with
EMAIL_TYPE_CHECKS, up to three attribute checks per address) in
`clearoutCredits`, since Clearout's credits are its own. A selection larger than ESTIMATE_READ_MAX is priced record by
record up to it, and the rest at the worst case (`atMost`) and 0
(`atLeast`), so the range still holds.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from crm_enrich import keys
from crm_enrich.field_map import is_blank
from crm_enrich.flow.account import company_dedupe_key, components_wanted
from crm_enrich.flow.email_type import CHECKS as EMAIL_TYPE_CHECKS
from crm_enrich.flow.email_type import SOURCE as EMAIL_TYPE_SOURCE
from crm_enrich.flow.email_type import check_credits as email_type_check_credits
from crm_enrich.flow.enrich import enrich_identifiers
from crm_enrich.flow.lead_company import wants_organisation
from crm_enrich.flow.reveal import REVEAL_EMAIL, reveal_identifiers, wants_phone
from crm_enrich.flow.services import Services
from crm_enrich.flow.signals import signals_wanted
from crm_enrich.flow.waterfall import STEP_PRICES
from crm_enrich.providers.cache import canonical_key
from crm_enrich.providers.quota import COSTS
from crm_enrich.salesforce.ids import PERSON_OBJECTS


@dataclass
class Line:
    """One kind of charge: how many records may need it, and their range."""
    records: int = 0
    at_least: float = 0.0
    at_most: float = 0.0

    def add(self, at_least: float, at_most: float) -> None:
        self.records += 1
        self.at_least += at_least
        self.at_most += at_most


@dataclass
class Estimate:
    records: int
    lines: dict[str, Line] = field(default_factory=dict)
    priced: int = 0

    def charge(self, step: str, at_least: float, at_most: float) -> None:
        self.lines.setdefault(step, Line()).add(at_least, at_most)

    def as_dict(self) -> dict:
        clodura = [line for step, line in self.lines.items() if not step.startswith(CLEAROUT)]
        clearout = [line for step, line in self.lines.items() if step.startswith(CLEAROUT)]
        at_least, at_most = _range(clodura)
        return {"records": self.records, "priced": self.priced,
                "credits": {"atLeast": at_least, "atMost": at_most}, "estimatedCredits": at_most,
                "clearoutCredits": dict(zip(("atLeast", "atMost"), _range(clearout), strict=True)),
                "needs": {step: {"records": line.records, "atLeast": round(line.at_least, 2),
                                 "atMost": round(line.at_most, 2)}
                          for step, line in sorted(self.lines.items())}}


# Lines priced in Clearout's credits (the price table's clearout_* entries).
CLEAROUT = "clearout_"


def _range(lines: list[Line]) -> tuple[float, float]:
    at_least = math.floor(sum(line.at_least for line in lines) * 100 + 1e-6) / 100
    at_most = math.ceil(sum(line.at_most for line in lines) * 100 - 1e-6) / 100
    return at_least, at_most


def _cached(svc: Services, force: bool, endpoint: str, request: dict) -> bool:
    return not force and bool(request) and bool(svc.store.r.exists(canonical_key(endpoint, request)))


def _verification(svc: Services, force: bool, email: str | None) -> tuple[float, float]:
    """(at least, at most) Clodura credits to verify `email` (None: an
    address a reveal may bring, whose domain we do not know yet)."""
    settings = svc.settings
    if settings.verify_provider == "clearout":
        return 0.0, 0.0
    mode = settings.clodura_deep_verification
    if email is None:
        return 0.0, COSTS["verify_deep"] if mode == "always" else (
            COSTS["verify"] + (COSTS["verify_deep"] if mode == "catch_all" else 0.0))
    domain = email.rsplit("@", 1)[-1].strip().lower()
    known_catch_all = mode == "catch_all" and bool(svc.store.r.exists(keys.catch_all_domain(domain)))
    if mode == "always" or known_catch_all:
        if _cached(svc, force, "verify", {"email": email, "deep": True}):
            return 0.0, 0.0
        return COSTS["verify_deep"], COSTS["verify_deep"]
    standard = 0.0 if _cached(svc, force, "verify", {"email": email, "deep": False}) else COSTS["verify"]
    deep = COSTS["verify_deep"] if mode == "catch_all" else 0.0
    return standard, standard + deep


def org_enrich_cost(svc: Services, object_type: str = "Account") -> float:
    """The most one Organisation Enrich costs with the components the map asks for."""
    wanted = components_wanted(svc.field_map, svc.settings.org_components_allowed, object_type)
    return min(COSTS["org_enrich"], 1.0 + len(wanted))


def price_signals(svc: Services, estimate: Estimate, account_id: str | None) -> None:
    """The Account signals the map uses, unless already asked for this Account today."""
    for kind in sorted(signals_wanted(svc.field_map)):
        asked = account_id and svc.store.r.exists(keys.signal_asked(kind, account_id[:15]))
        if not asked:
            estimate.charge(kind, 0.0, COSTS[kind])


def signals_worst_case(svc: Services) -> float:
    return sum(COSTS[kind] for kind in signals_wanted(svc.field_map))


def lead_company_cost(svc: Services, object_type: str) -> float:
    """The most a Lead's own company costs (flow/lead_company.py)."""
    return org_enrich_cost(svc, "Lead") if object_type == "Lead" and wants_organisation(svc) else 0.0


def price_person(svc: Services, estimate: Estimate, object_type: str, record: dict, force: bool,
                 verify_only: bool) -> None:
    email = None if is_blank(record.get("Email")) else str(record["Email"]).strip()
    if verify_only:
        if email:
            estimate.charge("verify", *_verification(svc, True, email))
        return
    company = record.get("Account.Name") if object_type == "Contact" else record.get("Company")
    ids = enrich_identifiers(record, company)
    if ids:
        estimate.charge("enrich", 0.0, 0.0 if _cached(svc, force, "enrich", ids) else COSTS["enrich"])
    if not _matched_today(svc, force, ids):
        price_waterfall(svc, estimate, record)
    if email:
        estimate.charge("verify", *_verification(svc, force, email))
        price_email_type(svc, estimate, object_type)
    elif ids or reveal_identifiers(record, None, with_names=True):
        price_email_type(svc, estimate, object_type)
        # Enrich may find the person (their id is enough to reveal by).
        reveal_ids = reveal_identifiers(record, None, with_names=True)
        free = _cached(svc, force, REVEAL_EMAIL, reveal_ids)
        estimate.charge("reveal_email", 0.0, 0.0 if free else COSTS["reveal_email"])
        estimate.charge("verify", *_verification(svc, force, None))
    if wants_phone(svc, object_type, record):
        estimate.charge("reveal_phone", 0.0, COSTS["reveal_phone"])
    has_company = not (is_blank(record.get("Company")) and is_blank(record.get("Website")))
    if lead_company_cost(svc, object_type) and has_company:
        estimate.charge("org_enrich", 0.0, lead_company_cost(svc, object_type))


def _matched_today(svc: Services, force: bool, ids: dict) -> bool:
    """Whether enrich's cached answer has the person (then no waterfall runs)."""
    if force or not ids:
        return False
    cached = svc.cache.get(canonical_key("enrich", ids))
    return bool(cached and (cached.value.get("person") or {}).get("personId"))


def price_waterfall(svc: Services, estimate: Estimate, record: dict) -> None:
    """Each step that is on and that the record gives something to ask with:
    0 (nobody found, or enrich matched after all) to the step's price."""
    for step in svc.settings.waterfall:
        entry, asks = STEP_PRICES[step]
        if asks(record):
            estimate.charge(entry, 0.0, COSTS[entry])


def price_email_type(svc: Services, estimate: Estimate, object_type: str) -> None:
    """Up to three attribute checks for an address whose verdict may carry no flags."""
    if svc.settings.email_type_checks and svc.settings.verify_provider != "clearout" \
            and EMAIL_TYPE_SOURCE in svc.field_map.sources_used(object_type):
        estimate.charge("clearout_attribute_check", 0.0, len(EMAIL_TYPE_CHECKS) * email_type_check_credits(svc))


def waterfall_worst_case(svc: Services, object_type: str, provider: str) -> float:
    """The most the waterfall (and the email-type checks) may cost one
    record we did not read, in `provider`'s credits."""
    entries = [STEP_PRICES[step][0] for step in svc.settings.waterfall]
    most = sum(COSTS[e] for e in entries if e.startswith(CLEAROUT) == (provider == "clearout"))
    if provider == "clearout" and svc.settings.email_type_checks \
            and EMAIL_TYPE_SOURCE in svc.field_map.sources_used(object_type):
        most += len(EMAIL_TYPE_CHECKS) * email_type_check_credits(svc)
    return most


def price_accounts(svc: Services, estimate: Estimate, account_ids: Iterable[str]) -> None:
    """Accounts of the selection's Contacts with no Account job today."""
    if not svc.field_map.rules_for("Account"):
        return
    cost = org_enrich_cost(svc)
    for account_id in sorted(set(account_ids)):
        if not svc.store.r.exists(keys.dedupe(company_dedupe_key(account_id))):
            estimate.charge("org_enrich", 0.0, cost)
            price_signals(svc, estimate, account_id)


def worst_case(svc: Services, object_type: str, verify_only: bool) -> float:
    """The most one record we did not read may cost."""
    verify = _verification(svc, True, None)[1]
    if verify_only:
        return max(verify, COSTS["verify_deep"])
    if object_type not in PERSON_OBJECTS:
        return org_enrich_cost(svc) + signals_worst_case(svc)
    most = (COSTS["enrich"] + COSTS["reveal_email"] + verify + lead_company_cost(svc, object_type)
            + waterfall_worst_case(svc, object_type, "clodura"))
    if svc.settings.reveal_phone:
        most += COSTS["reveal_phone"]
    if object_type == "Contact" and svc.field_map.rules_for("Account"):
        most += org_enrich_cost(svc) + signals_worst_case(svc)
    return most


def price_selection(svc: Services, object_type: str, kind: str, force: bool, total: int,
                    records: list[dict], looked_up: int | None = None) -> dict:
    """The estimate for `total` records of which `looked_up` (default: as
    many as were found) were read and `records` found; a selected record
    that is gone costs nothing."""
    verify_only = kind == "reverify"
    looked_up = len(records) if looked_up is None else looked_up
    estimate = Estimate(records=total, priced=looked_up)
    if object_type in PERSON_OBJECTS:
        for record in records:
            price_person(svc, estimate, object_type, record, force, verify_only)
        if object_type == "Contact" and not verify_only:
            price_accounts(svc, estimate, (str(r["AccountId"])[:15] for r in records
                                           if not is_blank(r.get("AccountId"))))
    else:
        cost = org_enrich_cost(svc)
        for record in records:
            estimate.charge("org_enrich", 0.0, cost)
            price_signals(svc, estimate, str(record.get("Id") or "") or None)
    unread = max(0, total - looked_up)
    if unread:
        most = worst_case(svc, object_type, verify_only)
        line = estimate.lines.setdefault("not_read", Line())
        line.records, line.at_most = unread, unread * most
        clearout_most = 0.0 if verify_only or object_type not in PERSON_OBJECTS else \
            waterfall_worst_case(svc, object_type, "clearout")
        if clearout_most:
            line = estimate.lines.setdefault("clearout_not_read", Line())
            line.records, line.at_most = unread, unread * clearout_most
    return estimate.as_dict()


def flattened(record: dict, prefix: str = "") -> dict:
    """A query row's relationship fields ("Account": {"Name": …}) under
    their dotted names, as the batched reads give them."""
    flat: dict = {}
    for name, value in record.items():
        if name == "attributes":
            continue
        if isinstance(value, dict):
            flat.update(flattened(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = value
    return flat
