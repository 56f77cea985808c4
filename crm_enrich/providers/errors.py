"""How a provider call can fail, in the terms the flow acts on: retry
later, wait for the day's quota, pause for credits, or give up on the
request. Shared by the Clodura and Clearout clients."""
from __future__ import annotations


class ProviderError(Exception):
    """Base: `retryable` errors are retried with backoff by the task."""

    retryable = False

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class ProviderUnavailable(ProviderError):
    """429, 5xx, timeouts, connection errors."""

    retryable = True


class DailyQuotaExceeded(ProviderError):
    """409: no more requests until the provider's day rolls over."""


class CreditsExhausted(ProviderError):
    """402: credit-spending work pauses until credits return."""


class ProviderRejected(ProviderError):
    """400/401/403/404/422: retrying the same request cannot help."""
