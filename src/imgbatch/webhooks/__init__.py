"""Signed, retried, recorded webhooks to the operator's and the uploaders' receivers.

Holds: `rules` (pure: event bodies, outcomes, the retry schedule, receiver pauses), `signing`
(pure: Standard Webhooks signatures), `receiver_secrets` (which secret signs a delivery: the
operator's, an API key's, an open upload's), `receivers` (receivers paused as a whole),
`reads` (read models and redelivery) and `deliveries` (delivery rows and the sending loop
every worker runs).
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
from .receiver_secrets import KeySecret, key_secret, rotate_key_secret
from .rules import (
    Outcome,
    completion_event,
    outcome_from_error,
    outcome_from_response,
    parse_retry_after,
    retry_delay,
)
from .signing import InvalidSecret, Signer, new_secret, signer_for, webhook_headers

__all__ = [
    "InvalidSecret",
    "KeySecret",
    "Outcome",
    "Signer",
    "claim_due",
    "completion_event",
    "create_completion_delivery",
    "deliver_due",
    "key_secret",
    "list_deliveries",
    "new_event_id",
    "new_secret",
    "outcome_from_error",
    "outcome_from_response",
    "parse_retry_after",
    "record_outcome",
    "redeliver",
    "retry_delay",
    "rotate_key_secret",
    "run_delivery_loop",
    "signer_for",
    "webhook_headers",
    "webhook_summary",
]
