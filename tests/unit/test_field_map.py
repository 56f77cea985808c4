import pytest

from crm_enrich.field_map import FieldMapError, load_field_map, plan_changes, value_hash
from crm_enrich.flow.enrich import enrich_identifiers, field_sources
from crm_enrich.flow.verify import normalise_clodura as normalise_verdict

MAP = load_field_map()
PERSON = {"personId": "p_1", "personTitle": "VP Sales", "functional": ["Sales"],
          "linkedinUrl": "https://www.linkedin.com/in/dana-1/",
          "organisation": {"organisationId": "o_1", "industry": "Software", "domain": "acme.example"}}
VERIFIED = {"status": "valid", "verified_at": "2026-11-21T10:00:00Z"}


def sources():
    return field_sources(PERSON, VERIFIED, "2026-11-21T10:00:01.000Z")


def test_default_contact_map_fills_blanks_and_always_fields():
    changes = plan_changes(MAP, "Contact", {"Title": None, "Department": ""}, sources(), {})
    assert changes["Title"] == "VP Sales"
    assert changes["Department"] == "Sales"
    assert changes["Email_Verification_Status__c"] == "valid"
    assert changes["Email_Verified_At__c"] == "2026-11-21T10:00:00Z"
    assert changes["Clodura_Person_Id__c"] == "p_1"
    assert changes["Enriched_At__c"] == "2026-11-21T10:00:01.000Z"
    assert changes["LinkedIn_URL__c"] == "https://www.linkedin.com/in/dana-1/"
    assert "Email" not in changes and "MobilePhone" not in changes  # no reveal, no phone


def test_fill_blank_never_overwrites():
    changes = plan_changes(MAP, "Contact", {"Title": "Chief Wizard"}, sources(), {})
    assert "Title" not in changes


def test_always_overwrites():
    changes = plan_changes(MAP, "Contact", {"Email_Verification_Status__c": "invalid"}, sources(), {})
    assert changes["Email_Verification_Status__c"] == "valid"


def test_tracked_overwrites_our_own_value_but_not_a_manual_edit():
    ours = "https://www.linkedin.com/in/dana-old/"
    tracked = {"LinkedIn_URL__c": value_hash(ours)}
    assert plan_changes(MAP, "Contact", {"LinkedIn_URL__c": ours}, sources(), tracked)["LinkedIn_URL__c"] == \
        PERSON["linkedinUrl"]
    edited = "https://www.linkedin.com/in/dana-by-hand/"
    assert "LinkedIn_URL__c" not in plan_changes(MAP, "Contact", {"LinkedIn_URL__c": edited}, sources(), tracked)


def test_unchanged_values_are_not_sent():
    current = {"Email_Verification_Status__c": "valid", "Clodura_Person_Id__c": "p_1"}
    changes = plan_changes(MAP, "Contact", current, sources(), {})
    assert "Email_Verification_Status__c" not in changes and "Clodura_Person_Id__c" not in changes


def test_no_person_writes_only_verification():
    changes = plan_changes(MAP, "Contact", {}, field_sources(None, VERIFIED, "t"), {})
    assert set(changes) == {"Email_Verification_Status__c", "Email_Verified_At__c", "Enriched_At__c"}


def test_lead_map_has_no_department_and_gets_company_fields():
    changes = plan_changes(MAP, "Lead", {}, sources(), {})
    assert "Department" not in changes
    assert changes["Industry"] == "Software" and changes["Website"] == "https://acme.example"


@pytest.mark.parametrize("text, message", [
    ('[Contact]\nTitle = { from = "person.title", rule = "sometimes" }', "rule must be one of"),
    ('[Contact]\nTitle = { from = "weather.today", rule = "always" }', "unknown source"),
    ('[Contact]\nTitle = "person.title"', "needs exactly"),
    ("[Contact\n", "field_map.toml"),
])
def test_bad_map_files_name_the_problem(tmp_path, text, message):
    path = tmp_path / "field_map.toml"
    path.write_text(text)
    with pytest.raises(FieldMapError, match=message):
        load_field_map(path)


@pytest.mark.parametrize("result, verdict", [
    ("Deliverable", "valid"), ("Undeliverable", "invalid"), ("Risky (Catch-all)", "catch_all"),
    ("Risky", "risky"), ("Pending", "unknown"), (None, "unknown"),
])
def test_verdicts_are_normalised(result, verdict):
    assert normalise_verdict(result) == verdict


def test_enrich_identifiers_prefer_strong_ones_and_pair_names_with_company():
    ids = enrich_identifiers({"FirstName": "Dana", "LastName": "Rivers", "Email": "d@x.example"}, "Acme")
    assert ids == {"email": "d@x.example", "firstName": "Dana", "lastName": "Rivers", "organisationName": "Acme"}
    assert enrich_identifiers({"FirstName": "Dana", "LastName": "Rivers"}, None) == \
        {"firstName": "Dana", "lastName": "Rivers"}
    assert enrich_identifiers({"LastName": "Rivers"}, None) == {}


DESCRIBE = {"fields": [
    {"name": "Title", "type": "string", "length": 10, "updateable": True},
    {"name": "Department", "type": "string", "length": 80, "updateable": True},
    {"name": "Email", "type": "email", "length": 80, "updateable": True},
    {"name": "MobilePhone", "type": "phone", "length": 40, "updateable": True},
    {"name": "LinkedIn_URL__c", "type": "url", "length": 255, "updateable": True},
    {"name": "Email_Verification_Status__c", "type": "picklist", "length": 20, "updateable": True},
    {"name": "Email_Verified_At__c", "type": "boolean", "length": 0, "updateable": True},
    {"name": "Clodura_Person_Id__c", "type": "string", "length": 64, "updateable": False},
]}


def test_describe_check_names_every_misfit():
    from crm_enrich.field_map import check_against_describe

    problems = check_against_describe(MAP, {"Contact": DESCRIBE, "Lead": None, "Account": DESCRIBE})
    text = "\n".join(map(str, problems))
    assert "Contact.Enriched_At__c: no such field in the org" in text
    assert "Contact.Clodura_Person_Id__c: the integration user cannot update it" in text
    assert "Contact.Email_Verified_At__c: a boolean field cannot hold verification.verified_at" in text
    assert "Lead: the org has no such object" in text
    assert not any(p.name == "Contact.Title" for p in problems)


def test_the_usable_map_leaves_out_exactly_the_misfits():
    from crm_enrich.field_map import check_against_describe, without_problems

    problems = check_against_describe(MAP, {"Contact": DESCRIBE, "Lead": None, "Account": DESCRIBE})
    usable = without_problems(MAP, problems)
    misfits = {p.field for p in problems if p.object == "Contact"}
    assert {"Enriched_At__c", "Clodura_Person_Id__c", "Email_Verified_At__c"} <= misfits
    assert "Title" not in misfits
    assert set(usable.target_fields("Contact")) == set(MAP.target_fields("Contact")) - misfits
    assert "Lead" not in usable.objects and usable.rules_for("Lead") == ()
    assert check_against_describe(usable, {"Contact": DESCRIBE, "Account": DESCRIBE}) == []


def test_values_are_fitted_to_type_and_length():
    from crm_enrich.field_map import fit_changes, fit_to_field

    assert fit_changes({"Title": "Senior Vice President"}, DESCRIBE) == {"Title": "Senior Vic"}
    assert fit_to_field("312", {"type": "int"}) == 312
    assert fit_to_field(45_000_000, {"type": "currency"}) == 45_000_000.0
    assert fit_to_field("2026-11-21T10:00:00.000Z", {"type": "date"}) == "2026-11-21"
    assert fit_changes({"X": 1}, None) == {"X": 1}



def test_a_value_a_restricted_picklist_does_not_offer_is_left_out():
    from crm_enrich.field_map import fit_changes

    industry = {"name": "Industry", "type": "picklist", "length": 255, "restrictedPicklist": True,
                "picklistValues": [{"value": "Technology", "active": True}, {"value": "Retail", "active": False}]}
    describe = {"fields": [industry, {"name": "Website", "type": "url", "length": 255}]}
    assert fit_changes({"Industry": "Computer Software", "Website": "https://a.example"}, describe) == {
        "Website": "https://a.example"}
    assert fit_changes({"Industry": "technology"}, describe) == {"Industry": "Technology"}
    assert fit_changes({"Industry": "Retail"}, describe) == {}  # inactive
    industry["restrictedPicklist"] = False
    assert fit_changes({"Industry": "Computer Software"}, describe) == {"Industry": "Computer Software"}


def test_each_planned_change_says_why_and_what_the_field_held():
    from crm_enrich.field_map import plan_explained

    ours = "https://www.linkedin.com/in/old/"
    current = {"Title": None, "LinkedIn_URL__c": ours, "Email_Verification_Status__c": "hand-set"}
    planned = plan_explained(MAP, "Contact", current, sources(), {"LinkedIn_URL__c": value_hash(ours)})
    assert (planned["Title"].rule, planned["Title"].source, planned["Title"].was) == \
        ("fill_blank", "person.title", "blank")
    assert planned["LinkedIn_URL__c"].was == "ours"
    assert planned["Email_Verification_Status__c"].was == "overwritten"
    assert {name: p.value for name, p in planned.items()} == \
        plan_changes(MAP, "Contact", current, sources(), {"LinkedIn_URL__c": value_hash(ours)})


def test_a_planned_write_keeps_only_what_the_rules_still_allow_on_the_record_as_it_is_now():
    from crm_enrich.salesforce.batches import CHANGED_MEANWHILE, OTHER_EMAIL, still_wanted

    plan = {"changes": {"Email": "ada@clodura.example", "Title": "CTO", "LinkedIn_URL__c": "https://l/in/ada",
                        "Email_Verification_Status__c": "valid", "Enriched_At__c": "2026-01-01T00:00:00Z"},
            "rules": {"Email": "fill_blank", "Title": "fill_blank", "LinkedIn_URL__c": "tracked",
                      "Email_Verification_Status__c": "always", "Enriched_At__c": "always"},
            "verified_email": "ada@clodura.example", "verification_fields": ["Email_Verification_Status__c"]}
    untouched = {"Email": None, "Title": "", "LinkedIn_URL__c": None, "Email_Verification_Status__c": None,
                 "Enriched_At__c": None}
    assert still_wanted(plan, untouched, {}) == (plan["changes"], {})

    edited = {**untouched, "Email": "ada@typed.example", "Title": "Founder",
              "LinkedIn_URL__c": "https://l/in/by-hand"}
    kept, skipped = still_wanted(plan, edited, {"LinkedIn_URL__c": value_hash("https://l/in/old")})
    assert kept == {"Enriched_At__c": "2026-01-01T00:00:00Z"}
    assert skipped == {"Email": CHANGED_MEANWHILE, "Title": CHANGED_MEANWHILE, "LinkedIn_URL__c": CHANGED_MEANWHILE,
                       "Email_Verification_Status__c": OTHER_EMAIL}

    # Our own earlier value of a tracked field may still be replaced.
    ours = {**untouched, "LinkedIn_URL__c": "https://l/in/old"}
    kept, _ = still_wanted(plan, ours, {"LinkedIn_URL__c": value_hash("https://l/in/old")})
    assert kept["LinkedIn_URL__c"] == "https://l/in/ada"
