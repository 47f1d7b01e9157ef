"""The agency-side client: job summaries."""

from __future__ import annotations

import pyarrow as pa

from juki_engine.client import JobSummary


def test_job_summary_counts_found_invalid_statuses_and_mismatches() -> None:
    statuses = pa.array(["resident", "moved_abroad", "deceased", "removed"])
    results = pa.table(
        {
            "found": [True, True, True, False, False],
            "error": [None, None, None, None, "row 4: bad check digit"],
            "status": pa.DictionaryArray.from_arrays(
                pa.array([0, 2, 0, None, None], pa.uint8()), statuses
            ),
            "family_name_match": [True, False, None, None, None],
        }
    )
    summary = JobSummary()
    summary.add(results)
    summary.add(results.slice(0, 2))
    assert (summary.records, summary.found, summary.invalid_key) == (7, 5, 1)
    assert summary.statuses == {"resident": 3, "deceased": 2}
    assert summary.mismatches == {"family_name": 2}
