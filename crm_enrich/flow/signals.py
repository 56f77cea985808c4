"""Account signals: what a company is doing now, from Clodura's job posts
(docs/clodura.md#job-posts) and company news (docs/clodura.md#company-news).

Off unless mapped: a kind is asked for only when a mapped Account field
uses one of its sources, and at most once per Account a day (a key in
Redis that names the job that asked, so only that job's own replay may ask
again; a forced re-run the same day does not). The answers go through the
24-hour cache like every other, and the job keeps only what the fields
need (a count, three titles, one article), never the whole page.
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

from crm_enrich import keys
from crm_enrich.field_map import FieldMap
from crm_enrich.jobs.store import Job, JobMemory, Learnt
from crm_enrich.logs import log
from crm_enrich.redis_typing import text

from .services import Services

JOB_POSTS, NEWS = "job_posts", "news"   # steps (COSTS), the job's slots, the daily keys' kinds
SIGNAL_KIND = {
    "signals.open_job_posts": JOB_POSTS, "signals.latest_job_titles": JOB_POSTS,
    "signals.latest_news": NEWS, "signals.latest_news_url": NEWS, "signals.latest_news_at": NEWS,
}
JOB_POSTS_DAYS = 30     # open roles: posted in the last 30 days
NEWS_DAYS = 90          # news: published in the last 90 days
LATEST_TITLES = 3


# -- pure logic ----------------------------------------------------------------

def signals_wanted(field_map: FieldMap) -> frozenset[str]:
    """The kinds the Account map uses (none: no request is ever made)."""
    return frozenset(SIGNAL_KIND[s] for s in field_map.sources_used("Account") if s in SIGNAL_KIND)


def job_posts_request(organisation_id: str, today: date) -> dict:
    return {"organisationId": organisation_id, "postedSince": (today - timedelta(days=JOB_POSTS_DAYS)).isoformat(),
            "postedUntil": today.isoformat(), "page": 1}


def news_request(organisation_id: str, today: date, categories: list[str]) -> dict:
    return {"organisationId": organisation_id, "publishedSince": (today - timedelta(days=NEWS_DAYS)).isoformat(),
            "publishedUntil": today.isoformat(), "category": list(categories), "page": 1}


def job_post_sources(body: dict | None) -> dict:
    """The count of open roles (the whole window's, not only the first
    page's) and the three latest titles. None: Clodura does not know the
    organisation, and nothing is written."""
    if body is None:
        return {}
    posts = [p for p in body.get("jobPosts") or [] if isinstance(p, dict)]
    total = (body.get("pagination") or {}).get("totalRecords")
    count = total if isinstance(total, int) and not isinstance(total, bool) and total >= len(posts) else len(posts)
    latest = sorted(posts, key=lambda p: str(p.get("postedOn") or ""), reverse=True)
    titles = [str(p["jobTitle"]).strip() for p in latest if p.get("jobTitle")][:LATEST_TITLES]
    return {"signals.open_job_posts": count, "signals.latest_job_titles": titles or None}


def news_sources(body: dict | None) -> dict:
    """The latest article: "headline (url)", its url and its date. No
    article: nothing (the fields keep what they hold)."""
    articles = [a for a in (body or {}).get("news") or [] if isinstance(a, dict) and a.get("articleTitle")]
    if not articles:
        return {}
    latest = max(articles, key=lambda a: str(a.get("publishedAt") or ""))
    title, url = str(latest["articleTitle"]).strip(), latest.get("url") or None
    return {"signals.latest_news": f"{title} ({url})" if url else title, "signals.latest_news_url": url,
            "signals.latest_news_at": latest.get("publishedAt") or None}


READ = {JOB_POSTS: job_post_sources, NEWS: news_sources}


# -- the step --------------------------------------------------------------------

def claim_today(svc: Services, kind: str, account_id: str, job_id: str) -> bool:
    """Whether this job may ask for `kind` about the Account today: the
    first to claim it, or the claimer's own replay."""
    key = keys.signal_asked(kind, account_id[:15])
    if svc.store.r.set(key, job_id, nx=True, ex=keys.SIGNAL_ASKED_TTL_S):
        return True
    return text(svc.store.r.get(key)) == job_id


def signal_sources(svc: Services, job: Job, memory: JobMemory, organisation_id: str, runner_id: str) -> dict:
    """The field-map sources of every signal the map uses (each asked once
    per job, per Account a day)."""
    sources: dict = {}
    if not organisation_id:
        return sources
    for kind in sorted(signals_wanted(svc.field_map)):
        sources.update(memory.remembered(kind, _asker(svc, job, kind, organisation_id, runner_id)) or {})
    return sources


def _asker(svc: Services, job: Job, kind: str, organisation_id: str, runner_id: str) -> Callable[[], Learnt]:
    return lambda: _ask(svc, job, kind, organisation_id, runner_id)


def _ask(svc: Services, job: Job, kind: str, organisation_id: str, runner_id: str) -> Learnt:
    if not claim_today(svc, kind, job.record_id, job.id):
        log.info("job.signal_not_asked", job_id=job.id, record_id=job.record_id, kind=kind,
                 reason="asked for this Account today")
        return Learnt(None)
    today = datetime.now(UTC).date()
    if kind == JOB_POSTS:
        request = job_posts_request(organisation_id, today)
        call = svc.clodura.job_posts
    else:
        request = news_request(organisation_id, today, svc.settings.news_categories)
        call = svc.clodura.company_news

    def ask() -> dict:
        answer = call(request)
        return {"sources": READ[kind](answer["body"]), "credits": answer["credits"]}

    with svc.quota.spending(kind, job.id):
        answer = svc.cache.fetch(kind, request, ask, owner=runner_id, refresh=job.force)
    svc.quota.settle(kind, job.id, 0 if answer.from_cache else answer.value["credits"])
    log.info("job.signal", job_id=job.id, record_id=job.record_id, kind=kind,
             found=bool(answer.value["sources"]))
    return Learnt(answer.value["sources"], answer.fetched_at)
