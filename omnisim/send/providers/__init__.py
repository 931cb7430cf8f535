"""Channel providers of the production sender: email over SMTP, SMS and push over a JSON
HTTP webhook, a JSON-lines file sink for dry runs; each behind a rate limit, retries with
full-jitter backoff and a circuit breaker, with failover to the channel's next provider.

The worker calls ``ProviderSet.deliver(OutboundMessage) -> DeliveryResult``; the format of
the YAML file is described in ``docs/providers.md``.
"""

from omnisim.send.providers.base import (
    Attempt, DeliveryResult, MemorySentKeys, OutboundMessage, Provider, ProviderConfigError,
    RateStore, SentKeys,
)
from omnisim.send.providers.core import ProviderSet
from omnisim.send.providers.filesink import FileSink
from omnisim.send.providers.resilience import CircuitBreaker, Resilience, SharedTokenBucket, TokenBucket
from omnisim.send.providers.smtp import IDEMPOTENCY_HEADER, SmtpProvider
from omnisim.send.providers.webhook import BodyTemplate, WebhookProvider

__all__ = [
    "ProviderSet", "OutboundMessage", "DeliveryResult", "SentKeys", "MemorySentKeys",
    "ProviderConfigError", "Provider", "Attempt", "Resilience", "CircuitBreaker", "TokenBucket",
    "SharedTokenBucket", "RateStore",
    "SmtpProvider", "WebhookProvider", "BodyTemplate", "FileSink", "IDEMPOTENCY_HEADER",
]
