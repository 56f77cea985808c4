import base64
from pathlib import Path

import pytest

from crm_enrich.logs import mask_text
from crm_enrich.settings import SettingsError, load_settings, parse_rate_limits

GOOD = {
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "PUBLIC_BASE_URL": "https://enrich.example.com",
    "CLODURA_API_KEY": "k",
    "SALESFORCE_LOGIN_URL": "https://acme.my.salesforce.com",
    "SALESFORCE_CLIENT_ID": "cid",
    "SALESFORCE_CLIENT_SECRET": "secret",
    "SALESFORCE_ORG_ID": "00D5g000004XyZaEAK",
    "SALESFORCE_WEBHOOK_SECRET": "whsec_" + base64.b64encode(b"k" * 32).decode(),
    "SALESFORCE_OUTBOUND_TOKEN": "t" * 43,
    "ADMIN_TOKEN": "a" * 24,
    "SECRET_KEY": "s" * 32,
}


@pytest.fixture
def env(monkeypatch):
    for key in list(GOOD) + ["CLODURA_RATE_LIMITS", "CLODURA_PLAN", "PROVIDER_CACHE_TTL_S",
                             "CLODURA_ORG_COMPONENTS", "DATA_DIR", "BEAT_SCHEDULE_PATH", "FIELD_MAP_STRICT",
                             "SALESFORCE_ALLOWED_NETWORKS", "TRUSTED_PROXY_HOPS", "SALESFORCE_OUTBOUND_FIELDS"]:
        monkeypatch.delenv(key, raising=False)
    for key, value in GOOD.items():
        monkeypatch.setenv(key, value)
    return monkeypatch


def test_good_settings_load_with_production_defaults(env):
    s = load_settings()
    assert str(s.clodura_base_url) == "https://api.clodura.ai/"
    assert s.clodura_limits == [(10, 1), (100, 60), (2000, 86400)]
    assert s.org_id_15 == "00D5g000004XyZa"
    assert s.org_components_allowed == {"technographics", "funding", "acquisitions"}
    assert s.allowed_networks is None and s.trusted_proxy_hops == 0


@pytest.mark.parametrize("name", ["REDIS_URL", "CLODURA_API_KEY", "SALESFORCE_ORG_ID", "SECRET_KEY",
                                  "SALESFORCE_OUTBOUND_TOKEN"])
def test_missing_setting_is_named(env, name):
    env.delenv(name)
    with pytest.raises(SettingsError, match=f"setting {name} is missing"):
        load_settings()


@pytest.mark.parametrize("name, value", [
    ("SALESFORCE_ORG_ID", "not-an-org"),
    ("CLODURA_PLAN", "platinum"),
    ("CLODURA_RATE_LIMITS", "10/fortnight"),
    ("SALESFORCE_WEBHOOK_SECRET", "plain-secret-without-prefix"),
    ("PROVIDER_CACHE_TTL_S", "90000"),  # over Clodura's 24 h
    ("REDIS_URL", "http://localhost"),
    ("CLODURA_ORG_COMPONENTS", "technographics,news"),
    ("SALESFORCE_OUTBOUND_TOKEN", "too-short-to-be-a-secret"),
    ("SALESFORCE_OUTBOUND_TOKEN", "x" * 40 + "/../y"),   # only URL-safe characters
    ("SALESFORCE_ALLOWED_NETWORKS", "13.108.0.0/14, not-a-network"),
    ("TRUSTED_PROXY_HOPS", "-1"),
])
def test_invalid_setting_is_named(env, name, value):
    env.setenv(name, value)
    with pytest.raises(SettingsError, match=f"setting {name} is invalid"):
        load_settings()


def test_allowed_networks_are_parsed(env):
    env.setenv("SALESFORCE_ALLOWED_NETWORKS", "13.108.0.0/14, 2a01:111::/32,10.1.2.3")
    assert [str(n) for n in load_settings().allowed_networks] == ["13.108.0.0/14", "2a01:111::/32", "10.1.2.3/32"]


def test_the_outbound_message_token_is_masked_in_paths():
    token = "Zq3" * 15
    text = mask_text(f'127.0.0.1 "POST /salesforce/outbound-message/{token} HTTP/1.1" 200')
    assert token not in text and "/salesforce/outbound-message/*** HTTP/1.1" in text
    assert mask_text("/salesforce/outbound-message/abc?x=1") == "/salesforce/outbound-message/***?x=1"


def test_salesforce_needs_one_way_to_log_in(env):
    env.delenv("SALESFORCE_CLIENT_SECRET")
    with pytest.raises(SettingsError, match="SALESFORCE_CLIENT_SECRET"):
        load_settings()


def test_beat_schedule_lives_in_the_data_dir_unless_given(env):
    assert load_settings().beat_schedule_file == Path("data/celerybeat-schedule")
    env.setenv("DATA_DIR", "/srv/crm-enrich-eu")
    assert load_settings().beat_schedule_file == Path("/srv/crm-enrich-eu/celerybeat-schedule")
    env.setenv("BEAT_SCHEDULE_PATH", "/var/lib/beat/schedule")
    assert load_settings().beat_schedule_file == Path("/var/lib/beat/schedule")
    assert load_settings().field_map_strict is False


def test_plan_and_override_pick_limits(env):
    env.setenv("CLODURA_PLAN", "Free Forever")
    assert load_settings().clodura_limits == [(1, 1), (10, 60), (300, 86400)]
    env.setenv("CLODURA_RATE_LIMITS", "20/second;300/minute")
    assert load_settings().clodura_limits == [(20, 1), (300, 60)]
    assert parse_rate_limits("5/hour") == [(5, 3600)]


def test_emails_and_phones_are_masked():
    text = mask_text("sent to dana.rivers@example.org and +1 (415) 555-0123 for 0035g00000QwErTAAB")
    assert "dana.rivers" not in text and "555-0123" not in text
    assert "d***@example.org" in text and "0035g00000QwErTAAB" in text


@pytest.mark.parametrize("text", [
    "2026-11-21T23:24:46.236Z", "job 2f62e82b3b41e0948", "0035g000001t1UUAAY", "took 1.0764400079997358s",
])
def test_ids_times_and_numbers_are_not_mistaken_for_phones(text):
    assert mask_text(text) == text


@pytest.mark.parametrize("phone", ["+14155550123", "+1 415 555 0123", "(415) 555-0123", "415-555-0123"])
def test_phone_forms_are_masked(phone):
    assert "555" not in mask_text(f"call {phone} now")


def test_a_rate_limit_window_may_be_given_in_seconds():
    assert parse_rate_limits("10/second;30/40s") == [(10, 1), (30, 40)]
    with pytest.raises(ValueError):
        parse_rate_limits("30/0s")


def test_no_countdown_outlives_half_the_visibility_timeout(env):
    env.setenv("VISIBILITY_TIMEOUT_S", "20")
    assert load_settings().max_countdown_s == 10
    env.setenv("STUCK_AFTER_S", "10")
    with pytest.raises(SettingsError, match="STUCK_AFTER_S"):
        load_settings()


def test_outbound_fields_are_declared_per_object(env):
    env.setenv("SALESFORCE_OUTBOUND_FIELDS", "contact: Id, FirstName , Email;  Account:Id,Name;")
    assert load_settings().outbound_fields == {"Contact": {"Id", "FirstName", "Email"}, "Account": {"Id", "Name"}}
    env.delenv("SALESFORCE_OUTBOUND_FIELDS")
    assert load_settings().outbound_fields == {}   # unset: every job reads


@pytest.mark.parametrize("value", ["Opportunity: Id, Name", "Contact Id, Name", "Contact: Id; Contact: Name",
                                   "Lead: Id, Account.Name", "Lead:"])
def test_a_bad_outbound_fields_declaration_is_named(env, value):
    env.setenv("SALESFORCE_OUTBOUND_FIELDS", value)
    with pytest.raises(SettingsError, match="setting SALESFORCE_OUTBOUND_FIELDS is invalid"):
        load_settings()


def test_change_data_capture_is_off_by_default_and_its_topics_are_parsed(env):
    s = load_settings()
    assert s.salesforce_ingest == "outbound_message" and not s.salesforce_cdc_updates
    assert s.salesforce_pubsub_url == "api.pubsub.salesforce.com:7443" and s.salesforce_cdc_batch_size == 100
    assert s.cdc_topics == ["/data/ContactChangeEvent", "/data/LeadChangeEvent", "/data/AccountChangeEvent"]
    env.setenv("SALESFORCE_CDC_TOPICS", " /data/ContactChangeEvent , /event/Contact_Created__e")
    assert load_settings().cdc_topics == ["/data/ContactChangeEvent", "/event/Contact_Created__e"]


@pytest.mark.parametrize("name, value", [
    ("SALESFORCE_INGEST", "cometd"),
    ("SALESFORCE_CDC_TOPICS", "ContactChangeEvent"),
    ("SALESFORCE_CDC_TOPICS", " , "),
    ("SALESFORCE_CDC_BATCH_SIZE", "101"),   # Salesforce's maximum is 100
    ("SALESFORCE_PUBSUB_URL", "https://api.pubsub.salesforce.com"),
])
def test_a_bad_change_data_capture_setting_is_named(env, name, value):
    env.setenv(name, value)
    with pytest.raises(SettingsError, match=f"setting {name} is invalid"):
        load_settings()
