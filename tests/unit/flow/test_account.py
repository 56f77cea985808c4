"""Company enrichment's pure logic: which company, which paid components,
and what goes into which Account field."""
import pytest

from crm_enrich.field_map import fit_changes, load_field_map, plan_changes, value_hash
from crm_enrich.flow.account import (
    agrees,
    business_domain,
    component_warnings,
    components_wanted,
    domain_of,
    enrich_request,
    name_key,
    organisation_sources,
    parse_amount,
    pick_organisation,
    search_filters,
)
from crm_enrich.settings import ORG_COMPONENTS, parse_org_components

MAP = load_field_map()
NOW = "2026-11-21T10:00:01.000Z"
# An example answer of docs/clodura.md#organisation-enrich, with technographics asked for.
ORG = {
    "organisationId": "o_0b77e2", "organisationName": "Northwind Example Inc",
    "domain": "northwind-example.com", "industry": "Computer Software",
    "organisationEmployeeSize": "201 - 500", "employeeCount": 312, "revenue": "11M-100M",
    "financials": {"totalFunding": "45M", "lastFundingType": "Series B"},
    "technographics": {"technologies": ["Salesforce", "AWS"], "programmingLanguages": ["Python"]},
    "boardlineNumbers": ["+15125550100"], "creditsUsed": 2,
}
ACCOUNT_DESCRIBE = {"fields": [
    {"name": "Industry", "type": "picklist", "length": 255, "updateable": True},
    {"name": "NumberOfEmployees", "type": "int", "length": 0, "updateable": True},
    {"name": "Revenue_Band__c", "type": "string", "length": 40, "updateable": True},
    {"name": "Website", "type": "url", "length": 255, "updateable": True},
    {"name": "Technologies__c", "type": "string", "length": 4000, "updateable": True},
    {"name": "Total_Funding__c", "type": "currency", "length": 0, "updateable": True},
    {"name": "Clodura_Organisation_Id__c", "type": "string", "length": 64, "updateable": True},
    {"name": "Enriched_At__c", "type": "datetime", "length": 0, "updateable": True},
]}


def test_default_account_map_writes_the_firmographics():
    changes = fit_changes(plan_changes(MAP, "Account", {"Name": "Northwind"}, organisation_sources(ORG, NOW), {}),
                          ACCOUNT_DESCRIBE)
    assert changes == {
        "Industry": "Computer Software",
        "NumberOfEmployees": 312,
        "Revenue_Band__c": "11M-100M",
        "Website": "https://northwind-example.com",
        "Technologies__c": "Salesforce; AWS",
        "Total_Funding__c": 45_000_000.0,
        "Clodura_Organisation_Id__c": "o_0b77e2",
        "Enriched_At__c": NOW,
    }


def test_revenue_band_is_never_turned_into_annual_revenue():
    sources = organisation_sources(ORG, NOW)
    assert "organisation.annual_revenue" not in sources
    assert "AnnualRevenue" not in MAP.target_fields("Account")


def test_account_rules_keep_manual_edits_and_existing_values():
    sources = organisation_sources(ORG, NOW)
    current = {"Industry": "Aerospace", "Website": "https://www.northwind.example",
               "Technologies__c": "Salesforce; AWS; Kafka"}  # edited by hand since our write
    tracked = {"Technologies__c": value_hash("Salesforce; AWS")}
    changes = plan_changes(MAP, "Account", current, sources, tracked)
    assert "Industry" not in changes and "Website" not in changes and "Technologies__c" not in changes
    ours = {"Technologies__c": "Salesforce"}
    changes = plan_changes(MAP, "Account", ours, sources, {"Technologies__c": value_hash("Salesforce")})
    assert changes["Technologies__c"] == "Salesforce; AWS"


def test_missing_components_and_funding_leave_their_fields_alone():
    base = {k: v for k, v in ORG.items() if k != "technographics"} | {"financials": {"totalFunding": None}}
    changes = plan_changes(MAP, "Account", {}, organisation_sources(base, NOW), {})
    assert "Technologies__c" not in changes and "Total_Funding__c" not in changes
    assert changes["Industry"] == "Computer Software"


def test_funding_rounds_and_acquisitions_become_text():
    org = ORG | {"funding": [{"roundType": "Series B", "amount": "30M", "currency": "USD", "date": "2023-03-15"},
                             {"roundType": "Seed", "amount": "2M"}],
                 "acquisitions": [{"organisationName": "Tiny Sample Co", "acquiredOn": "2022-08-01"}]}
    sources = organisation_sources(org, NOW)
    assert sources["organisation.funding_rounds"] == ["Series B 30M USD (2023-03-15)", "Seed 2M"]
    assert sources["organisation.acquisitions"] == ["Tiny Sample Co"]


@pytest.mark.parametrize("text, amount", [
    ("45M", 45e6), ("1.2B", 1.2e9), ("$500K", 5e5), ("30,000,000", 3e7), (12, 12.0), ("7m", 7e6),
    ("11M-100M", None), ("undisclosed", None), (None, None), ("", None), (True, None),
])
def test_money_strings(text, amount):
    assert parse_amount(text) == amount


def test_components_follow_the_field_map_and_the_settings():
    assert components_wanted(MAP, ORG_COMPONENTS) == {"technographics"}  # nobody maps funding rounds
    assert components_wanted(MAP, parse_org_components("funding")) == set()
    assert enrich_request("o_1", frozenset({"technographics"})) == {
        "organisationId": "o_1", "includeTechnographics": True, "includeFunding": False,
        "includeAcquisitions": False}
    assert component_warnings(MAP, ORG_COMPONENTS) == []
    assert component_warnings(MAP, parse_org_components("none")) == [
        "Account.Technologies__c stays empty: CLODURA_ORG_COMPONENTS leaves out technographics"]


def test_component_setting_is_checked():
    assert parse_org_components(" Technographics , funding") == {"technographics", "funding"}
    assert parse_org_components("none") == set() == parse_org_components("")
    with pytest.raises(ValueError, match="unknown component news"):
        parse_org_components("funding,news")


@pytest.mark.parametrize("value, domain", [
    ("https://www.Northwind-Example.com/about?x=1", "northwind-example.com"),
    ("northwind-example.com", "northwind-example.com"),
    ("http://shop.northwind.co.uk:8080", "shop.northwind.co.uk"),
    ("dana@Northwind-Example.com", "northwind-example.com"),
    ("localhost", None), ("", None), (None, None), ("not a domain.com", None),
])
def test_domains(value, domain):
    assert domain_of(value) == domain


def test_free_mail_says_nothing_about_the_company():
    assert business_domain("dana@northwind-example.com") == "northwind-example.com"
    assert business_domain("dana@gmail.com") is None
    assert business_domain(None) is None


def test_company_names_compare_without_case_punctuation_or_legal_form():
    assert name_key("Northwind Example, Inc.") == name_key("northwind example") == "northwind example"
    assert name_key("Smith & Co") == name_key("smith and")  # "Co" is a legal form; & is "and"
    assert name_key("Company") == "company"  # never down to nothing
    assert name_key("Northwind Labs") != name_key("Northwind Example")


def test_an_organisation_agrees_with_the_account_by_website_email_domain_or_name():
    org = {"organisationId": "o_1", "organisationName": "Northwind Example Inc", "domain": "northwind-example.com"}
    assert agrees(org, {"Name": "Acme", "Website": "www.northwind-example.com"}, None)
    assert agrees(org, {"Name": "Acme"}, "northwind-example.com")
    assert agrees(org, {"Name": "Northwind Example"}, None)
    # A person who moved on: their new employer is not the Account's company.
    assert not agrees(org, {"Name": "Acme", "Website": "acme.example"}, "acme.example")
    # The Account's own Website outweighs where one contact has their mail.
    assert not agrees(org, {"Name": "Acme", "Website": "acme.example"}, "northwind-example.com")
    assert not agrees(org, {}, None)


def test_search_uses_the_best_identifier():
    assert search_filters({"Name": "Acme", "Website": "https://www.acme.example/"}, "mail.acme.example") == \
        {"domain": "acme.example"}
    assert search_filters({"Name": "Acme"}, "acme.example") == {"domain": "acme.example"}
    assert search_filters({"Name": " Acme Inc "}, None) == {"organisationName": "Acme Inc"}
    assert search_filters({}, None) is None


def test_search_results_must_agree_with_the_account():
    found = [{"organisationId": "o_2", "organisationName": "Acme Robotics", "domain": "acme-robotics.example"},
             {"organisationId": "o_1", "organisationName": "Acme Inc", "domain": "acme.example"}]
    assert pick_organisation(found, {"Name": "Acme"}, None)["organisationId"] == "o_1"
    assert pick_organisation(found, {"Name": "Other", "Website": "acme-robotics.example"}, None)[
        "organisationId"] == "o_2"
    assert pick_organisation(found, {"Name": "Globex"}, None) is None
