"""The Salesforce DX project in `salesforce/` read back: the custom fields,
Outbound Messages and Flows a real org gets deployed, so that the simulated
org is built from the same files (one source of truth) and a test can hold
the field map and the README to them.

The files live at the repository's top level, not in the package: the
sandbox runs from an editable install (or a checkout), and finds them next
to the `crm_enrich` package.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from defusedxml import ElementTree as SafeET

NS = {"md": "http://soap.sforce.com/2006/04/metadata"}
PROJECT_DIR = Path(__file__).resolve().parents[2] / "salesforce"
SOURCE_DIR = PROJECT_DIR / "force-app" / "main" / "default"

# Metadata field type -> the describe's "type" and its length when the
# metadata names none (a URL field holds 255 characters; a picklist value 255).
DESCRIBE_TYPES: dict[str, tuple[str, int]] = {
    "Text": ("string", 0), "LongTextArea": ("textarea", 0), "Url": ("url", 255), "Picklist": ("picklist", 255),
    "DateTime": ("datetime", 0), "Date": ("date", 0), "Currency": ("currency", 0), "Number": ("double", 0),
    "Email": ("email", 80), "Phone": ("phone", 40),
}


class MetadataMissing(FileNotFoundError):
    pass


@dataclass(frozen=True)
class CustomField:
    object: str
    name: str
    type: str                 # the metadata type: Text, Url, Picklist, DateTime, LongTextArea, Currency, ...
    length: int = 0           # Text and LongTextArea only
    picklist_values: tuple[str, ...] = ()
    restricted: bool = False

    @property
    def describe_type(self) -> str:
        return DESCRIBE_TYPES[self.type][0]

    @property
    def describe_length(self) -> int:
        return self.length or DESCRIBE_TYPES[self.type][1]


@dataclass(frozen=True)
class OutboundMessage:
    object: str
    name: str
    endpoint_url: str
    fields: tuple[str, ...]
    include_session_id: bool


def source_dir() -> Path:
    if not SOURCE_DIR.is_dir():
        raise MetadataMissing(
            f"the Salesforce metadata is not at {SOURCE_DIR}: the sandbox reads the org's custom fields from the "
            "repository's salesforce/ folder, so run it from a checkout (pip install -e .)")
    return SOURCE_DIR


def _text(node, tag: str, default: str = "") -> str:
    found = node.find(f"md:{tag}", NS)
    return found.text.strip() if found is not None and found.text else default


def _custom_field(object_type: str, path: Path) -> CustomField:
    root = SafeET.parse(path).getroot()
    name = _text(root, "fullName")
    if f"{name}.field-meta.xml" != path.name:
        raise ValueError(f"{path}: fullName {name!r} does not match the file name")
    kind = _text(root, "type")
    if kind not in DESCRIBE_TYPES:
        raise ValueError(f"{path}: field type {kind!r} is not one the sandbox knows")
    values = tuple(_text(v, "fullName") for v in root.iterfind("md:valueSet/md:valueSetDefinition/md:value", NS))
    return CustomField(object=object_type, name=name, type=kind, length=int(_text(root, "length", "0")),
                       picklist_values=values, restricted=_text(root, "valueSet/md:restricted") == "true")


def custom_fields(object_type: str) -> list[CustomField]:
    """The custom fields the project deploys on one object, sorted by name."""
    folder = source_dir() / "objects" / object_type / "fields"
    return [_custom_field(object_type, p) for p in sorted(folder.glob("*.field-meta.xml"))]


def outbound_messages() -> dict[str, OutboundMessage]:
    """The Outbound Message of each object (one per workflow file)."""
    out: dict[str, OutboundMessage] = {}
    for path in sorted((source_dir() / "workflows").glob("*.workflow-meta.xml")):
        object_type = path.name.removesuffix(".workflow-meta.xml")
        for om in SafeET.parse(path).getroot().iterfind("md:outboundMessages", NS):
            out[object_type] = OutboundMessage(
                object=object_type, name=_text(om, "fullName"), endpoint_url=_text(om, "endpointUrl"),
                fields=tuple(f.text.strip() for f in om.iterfind("md:fields", NS) if f.text),
                include_session_id=_text(om, "includeSessionId") == "true")
    return out
