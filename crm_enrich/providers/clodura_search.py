"""Clodura's people search (docs/clodura.md#people-search), through the
CloduraClient's limiter, breaker and error rules. It never returns an
email or a phone."""
from __future__ import annotations

from crm_enrich.providers.clodura import CloduraClient
from crm_enrich.providers.errors import ProviderRejected

PATH = "/api/v1/search/people"


def search_people(client: CloduraClient, filters: dict, per_page: int = 1) -> dict:
    """{"people": the first page of matches, "credits": what it cost}. One
    credit per record returned, so the waterfall asks for a page of one.
    A 404 is Clodura's way of saying "no results" (free)."""
    try:
        body = client._post(PATH, {**filters, "page": 1, "perPage": per_page}).json()
    except ProviderRejected as exc:
        if exc.status == 404:
            return {"people": [], "credits": 0}
        raise
    people = body.get("people") if isinstance(body, dict) else None
    found = [p for p in people or [] if isinstance(p, dict)]
    return {"people": found, "credits": len(found)}
