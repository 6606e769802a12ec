"""Signed, retried, recorded webhooks to the operator's and the uploaders' receivers.

Holds: `rules` (pure: event bodies, outcomes, the retry schedule), `signing` (pure: Standard
Webhooks signatures), `reads` (read models and redelivery) and `deliveries` (delivery rows and
the sending loop every worker runs).
May import: the ledger, `imgbatch.metrics`, `imgbatch.context`, the pure core. Never the jobs,
reports, intake or the ways in.
"""

from __future__ import annotations

from .deliveries import (
    claim_due,
    create_completion_delivery,
    deliver_due,
    new_event_id,
    record_outcome,
    run_delivery_loop,
)
from .reads import list_deliveries, redeliver, webhook_summary
from .rules import (
    Outcome,
    completion_event,
    outcome_from_error,
    outcome_from_response,
    parse_retry_after,
    retry_delay,
)
from .signing import InvalidSecret, Signer, signer_for, webhook_headers

__all__ = [
    "InvalidSecret",
    "Outcome",
    "Signer",
    "claim_due",
    "completion_event",
    "create_completion_delivery",
    "deliver_due",
    "list_deliveries",
    "new_event_id",
    "outcome_from_error",
    "outcome_from_response",
    "parse_retry_after",
    "record_outcome",
    "redeliver",
    "retry_delay",
    "run_delivery_loop",
    "signer_for",
    "webhook_headers",
    "webhook_summary",
]
