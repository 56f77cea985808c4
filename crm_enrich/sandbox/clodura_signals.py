"""Clodura's company signals in the simulator: Job Posts
(docs/clodura.md#job-posts, an INFERRED endpoint) and Company News
(docs/clodura.md#company-news).

    POST /api/v1/organisation/jobpost   {organisationId | orgLinkedinUrl, postedSince?, postedUntil?,
                                         jobTitle?: [..], jobLocation?: [..], page?}
    POST /api/v1/organisation/news      {organisationId | orgLinkedinUrl, publishedSince, publishedUntil,
                                         articleTitle?, category?: [..], keywords?: [..], page? (≤ 100)}

They run behind the simulator's gate (key, rate limits, no charge on
rejection). Validation failures are 400, an unknown organisation 404, a
balance that cannot cover the charge 402. Charges: news 2 credits a request
that returns articles (however many), job posts 2 (INFERRED, mirroring
news); a request that finds nothing costs nothing (the general rule).

Every company has a deterministic stream of job posts (more for bigger
companies, some small ones none) and of news articles over the last year,
dated relative to today, so a window of "the last 30 days" always holds
something for most companies.
"""
from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

from flask import Flask, g, jsonify

from .dataset import Company, Dataset

NEWS_CATEGORIES = ("Acquisition", "Announcements", "Bankruptcy", "Expansion", "IPO", "Investment", "Issue",
                   "Launch", "Layoff", "Partnership", "Patent", "Funding")
COST_NEWS = 2
COST_JOB_POSTS = 2           # INFERRED (docs/clodura.md#credits)
JOB_POSTS_PER_PAGE = 25      # INFERRED
NEWS_PER_PAGE = 200          # documented: at most 200 articles per company per request
NEWS_MAX_PAGE = 100
_ROLES = ["Senior Data Engineer", "Account Executive", "Product Manager", "Customer Success Manager",
          "Software Engineer", "Marketing Specialist", "Financial Analyst", "DevOps Engineer",
          "Sales Development Representative", "HR Generalist", "Security Engineer", "Data Analyst",
          "Head of Partnerships", "Operations Manager", "UX Designer", "Support Specialist"]
_DEPARTMENTS = ["Engineering", "Sales", "Product", "Support", "Engineering", "Marketing", "Finance",
                "Engineering", "Sales", "HR", "Security", "Analytics", "Sales", "Operations", "Product", "Support"]
_HEADLINES = {
    "Funding": "{name} raises {amount} Series {round}",
    "Acquisition": "{name} acquires a {sector} start-up",
    "Expansion": "{name} opens a new office in {city}",
    "Launch": "{name} launches its next-generation platform",
    "Partnership": "{name} announces a partnership with a cloud provider",
    "Announcements": "{name} names a new Chief Operating Officer",
    "Investment": "{name} invests in regional {sector} firms",
    "Layoff": "{name} reduces its workforce",
    "Patent": "{name} is granted a patent",
    "IPO": "{name} files for an IPO",
    "Issue": "{name} responds to a service outage",
    "Bankruptcy": "{name} enters restructuring",
}
_CATEGORY_WEIGHTS = [6, 5, 1, 6, 1, 3, 2, 7, 2, 5, 2, 6]


def _h(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "big")


def today() -> date:
    return datetime.now(UTC).date()


def job_posts_of(company: Company, on: date) -> list[dict]:
    """The company's postings of the last 120 days, newest first."""
    rng = random.Random(_h("jobs", company.organisation_id))
    count = 0 if company.employee_count < 20 and rng.random() < 0.5 else 1 + min(40, company.employee_count // 60)
    posts = []
    for i in range(count):
        role = rng.randrange(len(_ROLES))
        posts.append({"jobTitle": _ROLES[role], "department": _DEPARTMENTS[role],
                      "jobLocation": f"{company.city}, {company.state}, {company.country}",
                      "postedOn": (on - timedelta(days=rng.randrange(120))).isoformat(),
                      "jobUrl": f"https://jobs.example.test/{company.organisation_id}/{i + 1}"})
    return sorted(posts, key=lambda p: (p["postedOn"], p["jobUrl"]), reverse=True)


def news_of(company: Company, on: date) -> list[dict]:
    """The company's articles of the last year, newest first."""
    rng = random.Random(_h("news", company.organisation_id))
    articles = []
    for i in range(rng.randrange(3, 12)):
        category = rng.choices(NEWS_CATEGORIES, weights=_CATEGORY_WEIGHTS)[0]
        title = _HEADLINES[category].format(name=company.name, amount=f"${rng.choice([5, 12, 30, 45, 80])}M",
                                            round="ABC"[rng.randrange(3)], sector=company.industry.lower(),
                                            city=company.city)
        articles.append({"articleTitle": title, "category": category,
                         "publishedAt": (on - timedelta(days=rng.randrange(365))).isoformat(),
                         "url": f"https://news.example.test/{company.organisation_id}/{i + 1}",
                         "source": "Example Wire", "summary": f"{title}."})
    return sorted(articles, key=lambda a: (a["publishedAt"], a["url"]), reverse=True)


def install_signal_routes(app: Flask, dataset: Dataset, json_body: Callable[[], dict | None],
                          refuse: Callable, error: Callable, try_charge: Callable[[float], bool]) -> None:
    """Add both endpoints to the Clodura simulator. `refuse(status, msg)`
    counts a validation refusal, `error(status, msg)` answers one,
    `try_charge(cost)` charges the caller's key (False: 402)."""

    def parse_date(body: dict, name: str, required: bool):
        """(the date or None, a refusal or None)."""
        value = body.get(name)
        if value is None:
            return None, (refuse(400, f"{name} is required (YYYY-MM-DD)") if required else None)
        try:
            if isinstance(value, str) and len(value) == 10:
                return date.fromisoformat(value), None
        except ValueError:
            pass
        return None, refuse(400, f"{name} must be a date YYYY-MM-DD")

    def window(body: dict, since_name: str, until_name: str, required: bool):
        since, problem = parse_date(body, since_name, required)
        if problem:
            return None, None, problem
        until, problem = parse_date(body, until_name, required)
        if problem:
            return None, None, problem
        if since and until and since > until:
            return None, None, refuse(400, f"{since_name} is after {until_name}")
        return since, until, None

    def strings(body: dict, name: str):
        value = body.get(name)
        if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            return refuse(400, f"{name} must be an array of strings")
        return None

    def organisation(body: dict):
        org_id, org_li = body.get("organisationId"), body.get("orgLinkedinUrl")
        for name, value in (("organisationId", org_id), ("orgLinkedinUrl", org_li)):
            if value is not None and not isinstance(value, str):
                return None, refuse(400, f"{name} must be a string")
        org_id, org_li = (org_id or "").strip(), (org_li or "").strip()
        if not org_id and not org_li:
            return None, refuse(400, "organisationId or orgLinkedinUrl is required")
        company = dataset.company(org_id) if org_id else dataset.company_by_linkedin(org_li)
        if company is None:
            g.sandbox_extra["outcome"] = "none"
            return None, error(404, "Organisation not found")
        return company, None

    def page_of(body: dict, maximum: int):
        page = body.get("page", 1)
        if isinstance(page, bool) or not isinstance(page, int) or not 1 <= page <= maximum:
            return None, refuse(400, f"page must be an integer from 1 to {maximum}")
        return page, None

    def page_and_company(body: dict, maximum: int, problem):
        """(page, company, None), or (None, None, the first refusal): the
        earlier checks' `problem`, the page's, or the organisation's. Each
        check runs only when nothing before it was refused, so a request
        counts as one refusal however much of it is wrong."""
        if problem is None:
            page, problem = page_of(body, maximum)
        else:
            page = None
        company, missing = (None, None) if problem else organisation(body)
        if problem or missing or company is None or page is None:
            return None, None, problem or missing
        return page, company, None

    def answer(company: Company, page: int, per_page: int, items: list[dict], field: str, cost: float):
        shown = items[(page - 1) * per_page: page * per_page]
        cost = cost if shown else 0
        if cost and not try_charge(cost):
            return error(402, "Insufficient credits")
        g.sandbox_extra["credits"] = cost
        g.sandbox_extra["outcome"] = field if shown else "none"
        return jsonify({"organisationId": company.organisation_id, "orgLinkedinUrl": company.linkedin_url,
                        "pagination": {"page": page, "totalRecords": len(items),
                                       "totalPages": max(1, math.ceil(len(items) / per_page))},
                        field: shown, "creditsUsed": cost})

    @app.post("/api/v1/organisation/jobpost")
    def organisation_jobpost():
        body = json_body()
        if body is None:
            return refuse(400, "Request body must be a JSON object")
        since, until, problem = window(body, "postedSince", "postedUntil", required=False)
        problem = problem or strings(body, "jobTitle") or strings(body, "jobLocation")
        page, company, problem = page_and_company(body, 500, problem)
        if problem or company is None or page is None:
            return problem
        titles = {t.strip().lower() for t in body.get("jobTitle") or []}
        places = [p.strip().lower() for p in body.get("jobLocation") or []]
        posts = [p for p in job_posts_of(company, today())
                 if (since is None or p["postedOn"] >= since.isoformat())
                 and (until is None or p["postedOn"] <= until.isoformat())
                 and (not titles or p["jobTitle"].lower() in titles)
                 and (not places or any(place in p["jobLocation"].lower() for place in places))]
        return answer(company, page, JOB_POSTS_PER_PAGE, posts, "jobPosts", COST_JOB_POSTS)

    @app.post("/api/v1/organisation/news")
    def organisation_news():
        body = json_body()
        if body is None:
            return refuse(400, "Request body must be a JSON object")
        since, until, problem = window(body, "publishedSince", "publishedUntil", required=True)
        problem = problem or strings(body, "category") or strings(body, "keywords")
        if problem is None and body.get("articleTitle") is not None and not isinstance(body["articleTitle"], str):
            problem = refuse(400, "articleTitle must be a string")
        unknown = [c for c in body.get("category") or [] if c not in NEWS_CATEGORIES] if problem is None else []
        if unknown:
            problem = refuse(400, f"unknown category {unknown[0]!r}; one of {', '.join(NEWS_CATEGORIES)}")
        page, company, problem = page_and_company(body, NEWS_MAX_PAGE, problem)
        if problem or company is None or page is None or since is None or until is None:
            return problem
        categories = set(body.get("category") or [])
        words = [k.lower() for k in body.get("keywords") or [] if k.strip()]
        title = (body.get("articleTitle") or "").strip()
        articles = [a for a in news_of(company, today())
                    if since.isoformat() <= a["publishedAt"] <= until.isoformat()
                    and (not categories or a["category"] in categories)
                    and (not title or a["articleTitle"] == title)
                    and (not words or any(w in (a["articleTitle"] + " " + a["summary"]).lower() for w in words))]
        return answer(company, page, NEWS_PER_PAGE, articles, "news", COST_NEWS)
