"""The field map: for each Salesforce field, where its value comes from and
the rule that decides whether we may write it. Pure logic."""
from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path

RULES = ("fill_blank", "tracked", "always")

# Every value a field can come from, and what kind of value it is.
SOURCES = {
    "person.id": "text", "person.title": "text", "person.department": "text",
    "person.linkedin_url": "text", "email.revealed": "text", "phone.mobile": "text",
    "verification.status": "text", "verification.detail": "text", "verification.verified_at": "datetime",
    # business / free / role / disposable (crm_enrich/flow/email_type.py)
    "email.type": "text",
    "organisation.id": "text", "organisation.industry": "text", "organisation.employee_count": "int",
    # Clodura states revenue only as a band, never turned into a number
    # (so nothing feeds AnnualRevenue).
    "organisation.revenue_band": "text",
    "organisation.website": "text", "organisation.total_funding": "number",
    # Account only: each needs a paid component of Organisation Enrich.
    "organisation.technologies": "text", "organisation.funding_rounds": "text",
    "organisation.acquisitions": "text",
    "meta.enriched_at": "datetime",
    # Account only, each asked for only when mapped (docs/clodura.md#job-posts,
    # docs/clodura.md#company-news): open roles posted in the last 30 days and
    # the three latest titles; the latest article in the chosen categories in
    # the last 90 days ("headline (url)", its url alone, its date).
    "signals.open_job_posts": "int", "signals.latest_job_titles": "text",
    "signals.latest_news": "text", "signals.latest_news_url": "text", "signals.latest_news_at": "datetime",
}
TEXT_TYPES = {"string", "textarea", "url", "email", "phone", "picklist", "multipicklist", "combobox"}
# Which Salesforce field types (describe "type") can hold each kind of value.
FITS = {
    "text": TEXT_TYPES,
    "int": {"int", "double", "currency", "percent"} | TEXT_TYPES,
    "number": {"double", "currency", "percent", "int"} | TEXT_TYPES,
    "datetime": {"datetime", "date"} | TEXT_TYPES,
}


class FieldMapError(ValueError):
    pass


@dataclass(frozen=True)
class FieldRule:
    field: str
    source: str
    rule: str


@dataclass(frozen=True)
class FieldMap:
    objects: dict[str, tuple[FieldRule, ...]]

    def rules_for(self, object_type: str) -> tuple[FieldRule, ...]:
        return self.objects.get(object_type, ())

    def target_fields(self, object_type: str) -> list[str]:
        return [r.field for r in self.rules_for(object_type)]

    def sources_used(self, object_type: str) -> set[str]:
        return {r.source for r in self.rules_for(object_type)}


def load_field_map(path: Path | None = None) -> FieldMap:
    if path is None:
        text = resources.files("crm_enrich").joinpath("default_field_map.toml").read_text()
        where = "default field map"
    else:
        text, where = Path(path).read_text(), str(path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise FieldMapError(f"{where}: {exc}") from None
    objects = {}
    for object_type, fields in raw.items():
        if not isinstance(fields, dict):
            raise FieldMapError(f"{where}: [{object_type}] must be a table of fields")
        rules = []
        for field_name, spec in fields.items():
            if not isinstance(spec, dict) or set(spec) != {"from", "rule"}:
                raise FieldMapError(f"{where}: {object_type}.{field_name} needs exactly 'from' and 'rule'")
            if spec["rule"] not in RULES:
                raise FieldMapError(f"{where}: {object_type}.{field_name}: rule must be one of {RULES}")
            if spec["from"] not in SOURCES:
                raise FieldMapError(f"{where}: {object_type}.{field_name}: unknown source {spec['from']!r}")
            rules.append(FieldRule(field_name, spec["from"], spec["rule"]))
        objects[object_type] = tuple(rules)
    return FieldMap(objects)


def is_blank(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:?\d{2})$")


def _comparable(value):
    """A date-time as the instant it names: Salesforce gives back
    "…T10:00:00.000+0000" for the "…T10:00:00.000Z" we wrote."""
    if isinstance(value, str) and _DATETIME.match(value):
        text = value.replace("Z", "+00:00")
        if text[-5] in "+-" and text[-3] != ":":
            text = text[:-2] + ":" + text[-2:]
        try:
            return datetime.fromisoformat(text).timestamp()
        except ValueError:
            return value
    return value


def value_hash(value) -> str:
    """What we remember of a value we wrote: its hash, never the value."""
    return hashlib.sha256(repr(_comparable(value)).encode()).hexdigest()[:32]


def to_salesforce(value):
    if isinstance(value, (list, tuple)):
        return "; ".join(str(v) for v in value)
    return value


def rule_allows(rule: str, existing, value, tracked_hash: str | None) -> bool:
    """Whether a field's rule lets us write `value` over `existing`;
    `tracked_hash` is the hash of the value we last wrote there. The plan
    and the write flush's second look both ask this."""
    if existing == value:
        return False
    if rule == "always":
        return True
    if rule == "fill_blank":
        return is_blank(existing)
    return is_blank(existing) or tracked_hash == value_hash(existing)


@dataclass(frozen=True)
class PlannedChange:
    """One field to write, and why: the rule, the source, and what the
    field held before (never the value): `blank`, `ours` (the value we
    wrote last time) or `overwritten` (anything else)."""
    value: object
    rule: str
    source: str
    was: str


WAS = ("blank", "ours", "overwritten")


def plan_explained(field_map: FieldMap, object_type: str, current: dict, sources: dict,
                   tracked_hashes: dict[str, str]) -> dict[str, PlannedChange]:
    """The fields to write, each with the reason: every rule applied to the
    record's current value. `tracked_hashes` holds, per field, the hash of
    the value we last wrote."""
    changes = {}
    for rule in field_map.rules_for(object_type):
        value = to_salesforce(sources.get(rule.source))
        existing = current.get(rule.field)
        if is_blank(value) or not rule_allows(rule.rule, existing, value, tracked_hashes.get(rule.field)):
            continue
        if is_blank(existing):
            was = "blank"
        elif tracked_hashes.get(rule.field) == value_hash(existing):
            was = "ours"
        else:
            was = "overwritten"
        changes[rule.field] = PlannedChange(value, rule.rule, rule.source, was)
    return changes


def plan_changes(field_map: FieldMap, object_type: str, current: dict, sources: dict,
                 tracked_hashes: dict[str, str]) -> dict:
    """The fields to write and their values (see `plan_explained`)."""
    return {name: planned.value
            for name, planned in plan_explained(field_map, object_type, current, sources, tracked_hashes).items()}


@dataclass(frozen=True)
class FieldProblem:
    """A mapped field the org cannot take, and what the operator should do.
    `field` is None when the org lacks the whole object."""
    object: str
    field: str | None
    problem: str
    fix: str

    @property
    def name(self) -> str:
        return f"{self.object}.{self.field}" if self.field else self.object

    def __str__(self) -> str:
        return f"{self.name}: {self.problem} ({self.fix})"

    def as_dict(self) -> dict[str, str | None]:
        return {"object": self.object, "field": self.field, "problem": self.problem, "fix": self.fix}

    @classmethod
    def from_dict(cls, raw: dict) -> FieldProblem:
        return cls(raw["object"], raw.get("field"), raw["problem"], raw["fix"])


def check_against_describe(field_map: FieldMap, describes: dict[str, dict | None]) -> list[FieldProblem]:
    """Mapped fields every write of which would fail, one problem each.
    `describes`: object → describe answer (None: no such object)."""
    problems = []
    for object_type, rules in field_map.objects.items():
        describe = describes.get(object_type)
        if describe is None:
            problems.append(FieldProblem(object_type, None, "the org has no such object",
                                         f"remove [{object_type}] from the field map"))
            continue
        fields = {f["name"]: f for f in describe.get("fields", [])}
        for rule in rules:
            field = fields.get(rule.field)
            if field is None:
                problems.append(FieldProblem(
                    object_type, rule.field, "no such field in the org",
                    "create it (README, the field map) and give the integration user edit access, "
                    "or remove it from the field map"))
            elif not field.get("updateable"):
                problems.append(FieldProblem(
                    object_type, rule.field, "the integration user cannot update it",
                    "grant edit access to it (field-level security, e.g. in the permission set)"))
            elif field.get("type") not in FITS[SOURCES[rule.source]]:
                problems.append(FieldProblem(
                    object_type, rule.field, f"a {field.get('type')} field cannot hold {rule.source}",
                    "change the field's type, or map it from another source"))
    return problems


def without_problems(field_map: FieldMap, problems: list[FieldProblem]) -> FieldMap:
    """The map with every mapping a problem names left out (a missing
    object loses all its mappings)."""
    gone_objects = {p.object for p in problems if p.field is None}
    gone_fields = {(p.object, p.field) for p in problems if p.field is not None}
    return FieldMap({obj: tuple(r for r in rules if (obj, r.field) not in gone_fields)
                     for obj, rules in field_map.objects.items() if obj not in gone_objects})


def fit_to_field(value, field: dict | None):
    """Convert a value to the field's type and cut text to its length."""
    if field is None or value is None:
        return value
    kind = field.get("type")
    try:
        if kind == "int":
            return int(float(value))
        if kind in ("double", "currency", "percent"):
            return float(value)
    except (TypeError, ValueError):
        return value  # Salesforce will say what is wrong, per record
    if kind == "date":
        return str(value)[:10]
    if kind in TEXT_TYPES:
        text = str(value)
        length = field.get("length") or 0
        return text[:length] if length and len(text) > length else text
    return value


def allowed_picklist_value(value, field: dict | None):
    """A restricted picklist refuses any other value, and Salesforce would
    then refuse the record's whole write: the org's own spelling of the
    value, or None when the org does not offer it."""
    if not field or not field.get("restrictedPicklist") or value is None:
        return value
    offered = {str(v["value"]).lower(): v["value"] for v in field.get("picklistValues") or [] if v.get("active", True)}
    return offered.get(str(value).lower())


def fit_changes(changes: dict, describe: dict | None) -> dict:
    """Fit every value to its field; a value a restricted picklist does not
    offer is left out (the rest of the record is still written)."""
    if not describe:
        return changes
    fields = {f["name"]: f for f in describe.get("fields", [])}
    fitted = {}
    for name, value in changes.items():
        value = allowed_picklist_value(fit_to_field(value, fields.get(name)), fields.get(name))
        if value is not None or changes[name] is None:
            fitted[name] = value
    return fitted
