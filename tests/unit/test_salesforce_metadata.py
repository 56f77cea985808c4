"""The Salesforce DX project in salesforce/ is the one source of truth for the
org's side: the default field map, the README's field table, the permission
set, the Outbound Messages, the Flows and the sandbox's describe must all
agree with it."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from defusedxml import ElementTree

from crm_enrich.field_map import FITS, SOURCES, load_field_map
from crm_enrich.flow.record import AUDIT_FIELDS, IDENTITY_FIELDS
from crm_enrich.sandbox import org_metadata
from crm_enrich.sandbox.salesforce import DEFAULT_OM_FIELDS, SCHEMA

ROOT = Path(__file__).resolve().parents[2]
OBJECTS = ("Contact", "Lead", "Account")
NS = org_metadata.NS
# How the README's field table names each metadata type.
README_TYPE = {"Text": "Text({length})", "LongTextArea": "Long Text Area({length})", "Url": "URL",
               "Picklist": "Picklist", "DateTime": "Date/Time", "Currency": "Currency", "Number": "Number",
               "Date": "Date"}


def readme_field_table() -> dict[tuple[str, str], str]:
    """(object, field) -> type cell of the README's custom-field table."""
    text = (ROOT / "README.md").read_text()
    header = text.index("| object | field | type |")
    rows: dict[tuple[str, str], str] = {}
    for line in text[header:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        objects, field, kind = (cell.strip() for cell in line.strip("|").split("|", 2))
        for obj in objects.split(","):
            rows[(obj.strip(), field.strip("`"))] = kind
    return rows


def metadata_fields() -> dict[tuple[str, str], org_metadata.CustomField]:
    return {(f.object, f.name): f for obj in OBJECTS for f in org_metadata.custom_fields(obj)}


def parse(path: Path):
    return ElementTree.parse(path).getroot()


def test_every_mapped_custom_field_is_deployed_with_a_type_that_holds_its_value():
    fields = metadata_fields()
    field_map = load_field_map()
    mapped = 0
    for obj in OBJECTS:
        for rule in field_map.rules_for(obj):
            if not rule.field.endswith("__c"):
                continue
            mapped += 1
            assert (obj, rule.field) in fields, f"{obj}.{rule.field} is mapped but not in salesforce/"
            assert fields[(obj, rule.field)].describe_type in FITS[SOURCES[rule.source]], f"{obj}.{rule.field}"
    assert mapped == 17


def commented_out_mappings() -> str:
    """The default map's commented-out mappings (the signals, the email type), uncommented."""
    text = (ROOT / "crm_enrich" / "default_field_map.toml").read_text()
    return "\n".join(line.removeprefix("# ") if re.match(r"^# \w+ = \{ from = ", line) else line
                     for line in text.splitlines())


def test_commented_out_mappings_are_deployed_and_fit_once_uncommented(tmp_path):
    # Off by default (not loaded), but an admin who uncomments them finds
    # the fields deployed by salesforce/ and listed in the README.
    path = tmp_path / "map.toml"
    path.write_text(commented_out_mappings())
    default, uncommented = load_field_map(), load_field_map(path)
    added = [(obj, r) for obj in OBJECTS for r in uncommented.rules_for(obj) if r not in default.rules_for(obj)]
    assert sorted(r.field for _, r in added) == ["Email_Type__c", "Email_Type__c", "Latest_Job_Titles__c",
                                                 "Latest_News_At__c", "Latest_News__c", "Open_Job_Posts__c"]
    fields, table = metadata_fields(), readme_field_table()
    for obj, rule in added:
        assert rule.source.startswith("signals.") or rule.source == "email.type"
        assert (obj, rule.field) in fields and (obj, rule.field) in table
        assert fields[(obj, rule.field)].describe_type in FITS[SOURCES[rule.source]], f"{obj}.{rule.field}"


def test_readme_table_lists_exactly_the_deployed_fields_with_their_types():
    table = readme_field_table()
    fields = metadata_fields()
    assert set(table) == set(fields)
    for key, field in fields.items():
        label = README_TYPE[field.type].format(length=field.length)
        assert table[key].startswith(label), f"{key}: README says {table[key]!r}, the metadata {label!r}"
    status = fields[("Contact", "Email_Verification_Status__c")]
    assert status.restricted and status.picklist_values == ("valid", "invalid", "risky", "catch_all", "unknown")


def test_sandbox_describe_is_built_from_the_metadata():
    for (obj, name), field in metadata_fields().items():
        spec = SCHEMA[obj][name]
        assert (spec.type, spec.length, spec.custom) == (field.describe_type, field.describe_length, True)
    custom_in_sandbox = {(obj, name) for obj in OBJECTS for name in SCHEMA[obj] if name.endswith("__c")}
    assert custom_in_sandbox == set(metadata_fields())
    assert SCHEMA["Account"]["Technologies__c"].type == "textarea"


def test_permission_set_grants_edit_on_every_mapped_field_and_the_object_access():
    ps = parse(org_metadata.SOURCE_DIR / "permissionsets" / "CRM_Enrich_Integration.permissionset-meta.xml")
    editable = {p.findtext("md:field", namespaces=NS) for p in ps.iterfind("md:fieldPermissions", NS)
                if p.findtext("md:editable", namespaces=NS) == "true"}
    field_map = load_field_map()
    wanted = {f"{obj}.{rule.field}" for obj in OBJECTS for rule in field_map.rules_for(obj)}
    wanted |= {f"{obj}.{name}" for obj, name in metadata_fields()}
    assert wanted <= editable, sorted(wanted - editable)
    access = {o.findtext("md:object", namespaces=NS): o for o in ps.iterfind("md:objectPermissions", NS)}
    for obj in OBJECTS:
        perms = {child.tag.split("}")[1]: child.text for child in access[obj]}
        assert perms["allowRead"] == perms["allowEdit"] == perms["viewAllRecords"] == "true"
        assert perms["allowDelete"] == perms["modifyAllRecords"] == "false"
    user = {u.findtext("md:name", namespaces=NS) for u in ps.iterfind("md:userPermissions", NS)
            if u.findtext("md:enabled", namespaces=NS) == "true"}
    assert {"ApiEnabled", "ViewSetup"} <= user


@pytest.mark.parametrize("obj", OBJECTS)
def test_outbound_message_sends_what_we_read_and_a_flow_sends_it_on_create(obj):
    om = org_metadata.outbound_messages()[obj]
    # Outbound Messages carry the object's own fields only (no Account.Name):
    # what a job reads of the record itself, the default field map's fields
    # included, so that a declaration of them skips the read.
    expected = {"Id", *(f for f in IDENTITY_FIELDS[obj] if "." not in f), *AUDIT_FIELDS,
                *load_field_map().target_fields(obj)}
    assert sorted(om.fields) == sorted(expected)
    assert set(om.fields) <= set(SCHEMA[obj])   # the sandbox org has them all, and sends them
    assert DEFAULT_OM_FIELDS[obj] == list(om.fields)  # what the sandbox org sends
    assert om.endpoint_url == "https://YOUR-HOST/salesforce/outbound-message/YOUR_OUTBOUND_TOKEN"
    assert not om.include_session_id

    flows = [parse(p) for p in (org_metadata.SOURCE_DIR / "flows").glob("*.flow-meta.xml")]
    mine = [f for f in flows if f.findtext("md:start/md:object", namespaces=NS) == obj]
    assert len(mine) == 1
    flow = mine[0]
    start = flow.find("md:start", NS)
    assert start.findtext("md:triggerType", namespaces=NS) == "RecordAfterSave"
    assert start.findtext("md:recordTriggerType", namespaces=NS) == "Create"
    assert flow.findtext("md:processType", namespaces=NS) == "AutoLaunchedFlow"
    assert flow.findtext("md:status", namespaces=NS) == "Active"
    action = flow.find("md:actionCalls", NS)
    assert action.findtext("md:actionType", namespaces=NS) == "outboundMessage"
    assert action.findtext("md:actionName", namespaces=NS) == f"{obj}.{om.name}"
    assert start.findtext("md:connector/md:targetReference", namespaces=NS) == action.findtext("md:name",
                                                                                               namespaces=NS)


def test_every_placeholder_is_replaced_at_deploy_from_the_environment():
    project = json.loads((org_metadata.PROJECT_DIR / "sfdx-project.json").read_text())
    replaced = {r["stringToReplace"] for r in project["replacements"]}
    placeholders = set()
    for path in (org_metadata.SOURCE_DIR / "workflows").glob("*.xml"):
        placeholders |= set(re.findall(r"https://YOUR-HOST|YOUR_[A-Z_]+", path.read_text()))
    assert placeholders == replaced == {"https://YOUR-HOST", "YOUR_OUTBOUND_TOKEN", "YOUR_INTEGRATION_USERNAME"}
    assert all(not r.get("allowUnsetEnvVariable") for r in project["replacements"])


def test_every_metadata_file_is_well_formed_xml():
    files = sorted(org_metadata.PROJECT_DIR.rglob("*-meta.xml"))
    assert len(files) == len(metadata_fields()) + 1 + 3 + 3   # fields, the permission set, flows, workflows
    for path in files:
        assert parse(path).tag.startswith("{http://soap.sforce.com/2006/04/metadata}"), path
