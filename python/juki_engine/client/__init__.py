"""What agencies and municipalities run against a server: mutual-TLS channels and bulk jobs
(`bulk`), change submission and move-in notices (`municipality`)."""

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

__all__ = [
    "AgencyTLS",
    "BulkJob",
    "JobSummary",
    "acknowledge_notices",
    "claim_batches",
    "read_notices",
    "request_context",
    "run_to_file",
    "split_messages",
    "submit_changes",
]
