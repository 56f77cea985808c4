"""/metrics reports what every process did, from Redis; the dashboard and
the alert rules in docker/ query only what it exports, and promtool accepts
a live scrape."""
import json
import re
import subprocess
from pathlib import Path

import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from crm_enrich import keys
from crm_enrich.providers.quota import Quota
from crm_enrich.sandbox.dataset import build_dataset
from web.metrics import HELP, RedisStateCollector, spending_families

ROOT = Path(__file__).resolve().parents[2]


def scrape(stack) -> dict:
    text = requests.get(f"{stack.web_url}/metrics", timeout=5).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def total(samples, name, **labels) -> float:
    return sum(v for (n, ls), v in samples.items()
               if n == name and all(dict(ls).get(k) == str(v2) for k, v2 in labels.items()))


def test_counters_follow_a_record_through(stack, control, job_for):
    before = scrape(stack)
    p = [p for p in build_dataset().people if p.known and p.email_verdict == "Deliverable"][500]
    (rid,) = control.create_records("Contact", [{"FirstName": p.first_name, "LastName": p.last_name,
                                                 "Email": p.email}])
    assert job_for("Contact", rid).state == "done"
    after = scrape(stack)

    def grew(name, by=1, **labels):
        return total(after, name, **labels) - total(before, name, **labels) >= by

    assert grew("crm_enrich_records_received_total", source="outbound_message")
    assert grew("crm_enrich_jobs_finished_total", state="done")
    assert grew("crm_enrich_provider_calls_total", endpoint="/api/v1/cleanup/enrich", status=200)
    assert grew("crm_enrich_provider_calls_total", endpoint="/api/v1/verify/email", status=200)
    assert grew("crm_enrich_provider_credits_total", by=2)
    assert grew("crm_enrich_salesforce_api_calls_total", by=2)       # one read, one write
    assert grew("crm_enrich_job_to_writeback_seconds_count")
    assert total(after, "crm_enrich_celery_queue_depth", queue="bulk") >= 0


def live_text(stack) -> str:
    return requests.get(f"{stack.web_url}/metrics", timeout=5).text


def run_one_record(control, job_for) -> None:
    p = [p for p in build_dataset().people if p.known and p.email_verdict == "Deliverable"][501]
    (rid,) = control.create_records("Contact", [{"FirstName": p.first_name, "LastName": p.last_name,
                                                 "Email": p.email}])
    assert job_for("Contact", rid).state == "done"


def test_spending_paused_budget_and_heartbeat_gauges(stack):
    r = stack.redis_client()
    samples = scrape(stack)
    assert 0 <= samples[("crm_enrich_worker_heartbeat_age_seconds", ())] < keys.WORKER_HEARTBEAT_TTL_S
    assert {reason: samples[("crm_enrich_spending_paused", (("reason", reason),))]
            for reason in ("quota", "credits", "budget")} == {"quota": 0, "credits": 0, "budget": 0}
    assert samples[("crm_enrich_clodura_credits_spent_today", ())] == Quota(r).spent_today()
    assert not [k for k in samples if k[0] == "crm_enrich_clodura_daily_credit_budget"]  # no budget set

    Quota(r).credits_exhausted()   # what a 402 does
    try:
        assert scrape(stack)[("crm_enrich_spending_paused", (("reason", "credits"),))] == 1
    finally:
        r.delete(keys.CREDITS_PAUSED)
    assert scrape(stack)[("crm_enrich_spending_paused", (("reason", "credits"),))] == 0

    # With CLODURA_DAILY_CREDIT_BUDGET set, the budget is exported beside the spend.
    budget = {f.name: f.samples for f in spending_families(r, 12.5)}
    assert [s.value for s in budget["crm_enrich_clodura_daily_credit_budget"]] == [12.5]


def test_live_scrape_passes_promtool_check_metrics(stack, control, job_for):
    run_one_record(control, job_for)
    text = live_text(stack)
    assert "crm_enrich_job_to_writeback_seconds_bucket" in text and "crm_enrich_spending_paused" in text
    checked = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True,
                             timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr


# PromQL words that are not metric names.
PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "rate", "increase", "deriv", "delta", "histogram_quantile",
    "min_over_time", "max_over_time", "absent", "and", "or", "unless", "by", "without", "on", "ignoring",
    "group_left", "group_right", "bool", "offset",
}
PROMETHEUS_OWN = {"up"}  # written by Prometheus itself for every target


def metric_names(expr: str) -> set[str]:
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)                       # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)                                # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)                               # ranges
    expr = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", "", expr)  # grouping labels
    names = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", expr))
    return names - PROMQL_WORDS


def exported_names(stack, store) -> set[str]:
    """Every sample name a live scrape shows, and every family /metrics can
    show (some appear only once their first event happened)."""
    names = {s.name for f in text_string_to_metric_families(live_text(stack)) for s in f.samples}
    names |= {f.name for f in RedisStateCollector(store, daily_credit_budget=1.0).collect()}
    for base in HELP:
        names |= {f"crm_enrich_{base}{suffix}" for suffix in ("_total", "_bucket", "_sum", "_count")}
    return names


def test_dashboard_and_alerts_name_only_metrics_we_export(stack, store):
    dashboard = json.loads((ROOT / "docker/grafana/crm-enrich.json").read_text())
    panel_exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    rules = yaml.safe_load((ROOT / "docker/prometheus/alerts.yml").read_text())
    rule_exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    assert len(panel_exprs) >= 15 and len(rule_exprs) >= 6
    exported = exported_names(stack, store) | PROMETHEUS_OWN
    used = set()
    for expr in panel_exprs + rule_exprs:
        names = metric_names(expr)
        assert names, expr
        assert names <= exported, f"{expr}: {sorted(names - exported)} not exported"
        used |= names
    # The dashboard covers what the issue asks for.
    for wanted in ("crm_enrich_records_received_total", "crm_enrich_jobs", "crm_enrich_celery_queue_depth",
                   "crm_enrich_provider_calls_total", "crm_enrich_provider_credits_total",
                   "crm_enrich_salesforce_api_used", "crm_enrich_job_to_writeback_seconds_bucket"):
        assert wanted in used
    for rule in (r for group in rules["groups"] for r in group["rules"]):
        assert rule["annotations"]["runbook"].strip(), rule["alert"]
