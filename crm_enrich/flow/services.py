"""What the flow's functions are given to work with: built once per worker
process (worker.services) and, in unit tests, from in-memory fakes."""
from __future__ import annotations

from dataclasses import dataclass

from crm_enrich.field_map import FieldMap
from crm_enrich.jobs.store import JobStore
from crm_enrich.providers.cache import ProviderCache
from crm_enrich.providers.clearout import ClearoutClient
from crm_enrich.providers.clodura import CloduraClient
from crm_enrich.providers.company_autocomplete import CompanyAutocomplete
from crm_enrich.providers.quota import Quota
from crm_enrich.salesforce.batches import BatchServices
from crm_enrich.salesforce.schema import OrgSchema
from crm_enrich.settings import Settings


@dataclass
class Services:
    settings: Settings
    clodura: CloduraClient
    field_map: FieldMap
    batches: BatchServices
    schema: OrgSchema
    cache: ProviderCache
    quota: Quota
    clearout: ClearoutClient | None = None
    # Clearout's public company autocomplete (needs no token); None when off.
    company_autocomplete: CompanyAutocomplete | None = None

    def clearout_client(self) -> ClearoutClient:
        """Clearout, for the steps that use it: settings require its token
        whenever VERIFY_PROVIDER or CLEAROUT_FINDER does."""
        if self.clearout is None:
            raise RuntimeError("Clearout is used but not configured (CLEAROUT_API_TOKEN)")
        return self.clearout

    @property
    def store(self) -> JobStore:
        return self.batches.store
