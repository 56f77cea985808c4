"""The field map: for each Salesforce field, where its value comes from and
the rule that decides whether we may write it. Pure logic."""
from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

RULES = ("fill_blank", "tracked", "always")

# Every value a field can come from, and what kind of value it is.
SOURCES = {
    "person.id": "text", "person.title": "text", "person.department": "text",
    "person.linkedin_url": "text", "email.revealed": "text", "phone.mobile": "text",
    "verification.status": "text", "verification.detail": "text", "verification.verified_at": "datetime",
    "organisation.id": "text", "organisation.industry": "text", "organisation.employee_count": "int",
    # Clodura states revenue only as a band, never turned into a number
    # (so nothing feeds AnnualRevenue).
    "organisation.revenue_band": "text",
    "organisation.website": "text", "organisation.total_funding": "number",
    # Account only: each needs a paid component of Organisation Enrich.
    "organisation.technologies": "text", "organisation.funding_rounds": "text",
    "organisation.acquisitions": "text",
    "meta.enriched_at": "datetime",
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


def value_hash(value) -> str:
    """What we remember of a tracked value: its hash, never the value."""
    return hashlib.sha256(repr(value).encode()).hexdigest()[:32]


def to_salesforce(value):
    if isinstance(value, (list, tuple)):
        return "; ".join(str(v) for v in value)
    return value


def rule_allows(rule: str, existing, value, tracked_hash: str | None) -> bool:
    """Whether a field's rule lets us write `value` over `existing`;
    `tracked_hash` is the hash of the value we last wrote there."""
    if existing == value:
        return False
    if rule == "always":
        return True
    if rule == "fill_blank":
        return is_blank(existing)
    return is_blank(existing) or tracked_hash == value_hash(existing)


def plan_changes(field_map: FieldMap, object_type: str, current: dict, sources: dict,
                 tracked_hashes: dict[str, str]) -> dict:
    """The fields to write: each rule applied to the record's current value.

    `tracked_hashes` holds, per field, the hash of the value we last wrote."""
    changes = {}
    for rule in field_map.rules_for(object_type):
        value = to_salesforce(sources.get(rule.source))
        if not is_blank(value) and rule_allows(rule.rule, current.get(rule.field), value,
                                               tracked_hashes.get(rule.field)):
            changes[rule.field] = value
    return changes


def check_against_describe(field_map: FieldMap, describes: dict[str, dict | None]) -> list[str]:
    """Problems that would make every write of a mapped field fail, one
    line each, naming the field. `describes`: object → describe answer."""
    problems = []
    for object_type, rules in field_map.objects.items():
        describe = describes.get(object_type)
        if describe is None:
            problems.append(f"{object_type}: the org has no such object")
            continue
        fields = {f["name"]: f for f in describe.get("fields", [])}
        for rule in rules:
            name = f"{object_type}.{rule.field}"
            field = fields.get(rule.field)
            if field is None:
                problems.append(f"{name}: no such field in the org (create it, or remove it from the field map)")
            elif not field.get("updateable"):
                problems.append(f"{name}: the integration user cannot update it")
            elif field.get("type") not in FITS[SOURCES[rule.source]]:
                problems.append(f"{name}: a {field.get('type')} field cannot hold {rule.source}")
    return problems


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
