"""What agencies and municipalities run against a server: mutual-TLS channels and bulk jobs
(`bulk`), change submission and move-in notices (`municipality`), subscriptions to residents'
changes (`subscriptions`)."""

from juki_engine.client.bulk import (
    AgencyTLS,
    BulkJob,
    JobSummary,
    claim_batches,
    request_context,
    run_to_file,
    split_messages,
)
from juki_engine.client.municipality import (
    acknowledge_notices,
    read_notices,
    submit_changes,
)
from juki_engine.client.subscriptions import acknowledge_changes, stream_changes, watch

__all__ = [
    "AgencyTLS",
    "BulkJob",
    "JobSummary",
    "acknowledge_changes",
    "acknowledge_notices",
    "claim_batches",
    "read_notices",
    "request_context",
    "run_to_file",
    "split_messages",
    "stream_changes",
    "submit_changes",
    "watch",
]
