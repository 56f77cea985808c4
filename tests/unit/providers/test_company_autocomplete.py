"""Clearout's company autocomplete, the pure parts: where it lives, how its
answer is read, and which suggestion is taken."""
from crm_enrich.providers.company_autocomplete import autocomplete_url, best_suggestion, parse_suggestions


def test_the_public_endpoint_lives_beside_the_api_version():
    assert autocomplete_url("https://api.clearout.io/v2") == "https://api.clearout.io/public/companies/autocomplete"
    assert autocomplete_url("https://127.0.0.1:8443/v2/") == "https://127.0.0.1:8443/public/companies/autocomplete"
    assert autocomplete_url("https://eu.clearout.example") == "https://eu.clearout.example/public/companies/autocomplete"


def test_suggestions_are_read_best_first_and_bad_items_left_out():
    data = [{"name": "Orbital Labs Staffing", "domain": "orbitallabs-staffing.test", "confidence_score": 31},
            {"name": "Orbital Labs", "domain": " Orbital-Labs.test ", "confidence_score": "96", "logo_url": "x"},
            {"name": "No domain", "domain": "", "confidence_score": 99},
            {"name": "Odd score", "domain": "odd.test", "confidence_score": "high"},
            "not an object"]
    assert parse_suggestions(data) == [
        {"name": "Orbital Labs", "domain": "orbital-labs.test", "confidence": 96},
        {"name": "Orbital Labs Staffing", "domain": "orbitallabs-staffing.test", "confidence": 31},
        {"name": "Odd score", "domain": "odd.test", "confidence": 0}]
    assert parse_suggestions(None) == [] and parse_suggestions({"domain": "x.test"}) == []


def test_only_the_best_suggestion_is_taken_and_only_when_confident_enough():
    found = [{"name": "B", "domain": "b.test", "confidence": 79}, {"name": "A", "domain": "a.test", "confidence": 85}]
    assert best_suggestion(found, 80) == {"name": "A", "domain": "a.test", "confidence": 85}
    assert best_suggestion(found, 86) is None            # the best is not sure enough; the next is not tried
    assert best_suggestion(found, 85)["domain"] == "a.test"   # the setting is a minimum, inclusive
    assert best_suggestion([], 0) is None
