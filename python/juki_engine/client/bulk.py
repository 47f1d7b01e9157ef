"""Mutual-TLS channels (agencies and municipalities alike) and the bulk job client.

A bulk job (e.g. the pension status check, 年金受給権者の現況確認) streams claims to the server as
Arrow IPC messages of 1–4 MiB and reads the results as one Arrow IPC stream cut into messages, one
record batch per claims message, so neither side ever holds the whole job; grpc's flow control
keeps the reader from running ahead of the server.
"""

from __future__ import annotations

import io
import queue
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pyarrow as pa

from juki_engine import files
from juki_engine._core import InvalidInput
from juki_engine._proto import registry_pb2 as pb
from juki_engine._proto import registry_pb2_grpc as pb_grpc
from juki_engine.names import LEVELS
from juki_engine.service.wire import KEY_KINDS, MATCH_LEVEL_NAMES, MESSAGE_OPTIONS, write_ipc

# Claims per message are sized to this many bytes (the server accepts up to MAX_MESSAGE_BYTES).
MESSAGE_TARGET_BYTES = 2 << 20
# Claimed texts that repeat across a job (the nation has ~2,000 family and ~44,000 given names).
# Parquet stores them dictionary-encoded: read as dictionaries and decoded by Arrow, they cost
# the client less than Parquet's own decoding (reading 4 M national claims: 128 -> 94 ns a
# record). They are sent decoded: the server compares a message's strings in order, where a
# dictionary's keys would send each row to a random entry (+45-50 ns a record of the server's
# verify, BENCHMARKS.md).
DICTIONARY_CLAIMS = (
    "family_name",
    "family_name_kana",
    "given_name",
    "given_name_kana",
    "municipality_code",
)


@dataclass(frozen=True, slots=True)
class AgencyTLS:
    """A caller's (an agency's or a municipality's) client certificate and key, and the CA that
    signed the server's."""

    cert: Path
    key: Path
    ca: Path

    @classmethod
    def from_cert(
        cls, cert: str | Path, key: str | Path | None = None, ca: str | Path | None = None
    ) -> AgencyTLS:
        """Defaults as `juki certs` lays them out: `<name>.key` beside `<name>.pem`, and `ca.pem`
        in the certificate directory's parent (or the directory itself)."""
        cert = Path(cert)
        key = Path(key) if key else cert.with_suffix(".key")
        if ca is None:
            candidates = [cert.parent.parent / "ca.pem", cert.parent / "ca.pem"]
            ca = next((c for c in candidates if c.exists()), candidates[0])
        tls = cls(cert, key, Path(ca))
        missing = [str(p) for p in (tls.cert, tls.key, tls.ca) if not p.exists()]
        if missing:
            raise InvalidInput(f"agency credentials: missing {', '.join(missing)}")
        return tls

    def channel(self, address: str) -> grpc.Channel:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self.ca.read_bytes(),
            private_key=self.key.read_bytes(),
            certificate_chain=self.cert.read_bytes(),
        )
        return grpc.secure_channel(
            address,
            credentials,
            options=MESSAGE_OPTIONS,
        )


def request_context(affair: str, operator: str, request_id: str | None = None) -> pb.RequestContext:
    return pb.RequestContext(
        affair=affair, operator_id=operator, request_id=request_id or str(uuid.uuid4())
    )


def claim_batches(path: str | Path, batch_size: int) -> tuple[int, Iterator[pa.RecordBatch]]:
    """Stream a claims file, Parquet or CSV: (its row count if known, else -1; its record
    batches). Identifier columns of a CSV stay strings (leading zeros matter)."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        convert = pacsv.ConvertOptions(
            column_types={
                "my_number": pa.string(),
                "resident_code": pa.string(),
                "municipality_code": pa.string(),
            }
        )
        return -1, iter(pacsv.open_csv(path, convert_options=convert))
    if suffix in (".parquet", ".pq"):
        # Mapped, the column chunks are read in place rather than copied into freshly allocated
        # (and freshly zeroed) buffers: 110.6 -> 99.7 ns a record of national claims
        # (BENCHMARKS.md).
        names = pq.read_schema(path, memory_map=True).names
        parquet = pq.ParquetFile(
            path,
            memory_map=True,
            read_dictionary=[name for name in DICTIONARY_CLAIMS if name in names],
        )
        batches = parquet.iter_batches(batch_size=batch_size)
        return parquet.metadata.num_rows, (_decoded(batch) for batch in batches)
    raise InvalidInput(f"input {path}: expected a .parquet or .csv file")


def _decoded(batch: pa.RecordBatch) -> pa.RecordBatch:
    """`batch` with its dictionary columns decoded to their values."""
    if not any(pa.types.is_dictionary(t) for t in batch.schema.types):
        return batch
    return pa.RecordBatch.from_arrays(
        [
            column.dictionary_decode() if pa.types.is_dictionary(column.type) else column
            for column in batch.columns
        ],
        names=batch.schema.names,
    )


def split_messages(
    batches: Iterable[pa.RecordBatch], target_bytes: int = MESSAGE_TARGET_BYTES
) -> Iterator[pa.RecordBatch]:
    """Re-cut record batches so that each is about `target_bytes` of Arrow data."""
    for batch in batches:
        if batch.num_rows == 0:
            continue
        per_row = max(batch.nbytes / batch.num_rows, 1.0)
        rows = max(int(target_bytes / per_row), 1)
        for start in range(0, batch.num_rows, rows):
            yield batch.slice(start, rows)


@dataclass
class BulkJob:
    """One bulk verification job over a channel; iterate `run` for (claims, results) pairs."""

    channel: grpc.Channel
    context: pb.RequestContext
    by: str
    retrieve: Sequence[str] = ()
    match: str = "exact"
    """How closely claimed names must agree (docs/matching.md); the affair must allow it."""
    sent_rows: int = field(default=0, init=False)

    def run(
        self, batches: Iterable[pa.RecordBatch], timeout: float | None = None
    ) -> Iterator[tuple[pa.RecordBatch, pa.Table]]:
        """Stream the claims; yield each claims message with its results, in input order."""
        if self.by not in KEY_KINDS:
            raise InvalidInput(f"key '{self.by}': expected my_number or resident_code")
        if self.match not in MATCH_LEVEL_NAMES:
            raise InvalidInput(f"match '{self.match}': expected one of {', '.join(LEVELS)}")
        in_flight: deque[pa.RecordBatch] = deque()
        lock = threading.Lock()

        def requests() -> Iterator[pb.VerifyStreamRequest]:
            yield pb.VerifyStreamRequest(
                header=pb.VerifyStreamHeader(
                    context=self.context,
                    key=KEY_KINDS[self.by],
                    retrieve_fields=self.retrieve,
                    match_level=MATCH_LEVEL_NAMES[self.match],
                )
            )
            for message in split_messages(batches):
                with lock:
                    in_flight.append(message)
                    self.sent_rows += message.num_rows
                yield pb.VerifyStreamRequest(claims=write_ipc(pa.Table.from_batches([message])))

        stub = pb_grpc.BulkVerificationServiceStub(self.channel)
        responses = stub.VerifyStream(requests(), timeout=timeout)
        try:
            parts = _ResultParts(responses)
            if not parts.started():
                return  # an empty job
            # The results are one IPC stream across the responses: one record batch per message.
            for batch in pa.ipc.open_stream(parts):
                with lock:
                    claims = in_flight.popleft()
                yield claims, pa.Table.from_batches([batch])
        finally:
            # A caller that stops reading ends the call now, not when it is garbage-collected
            # (a no-op once the call has finished).
            responses.cancel()


class _ResultParts(io.RawIOBase):
    """The bytes of a job's result stream, read from the responses as the reader needs them."""

    def __init__(self, responses: Iterator[pb.VerifyStreamResponse]) -> None:
        self._responses = responses
        self._part = memoryview(b"")

    def readable(self) -> bool:
        return True

    def started(self) -> bool:
        """Whether any result arrived (reads the first response)."""
        return self._fill()

    def _fill(self) -> bool:
        while not self._part:
            response = next(self._responses, None)
            if response is None:
                return False
            self._part = memoryview(response.results)
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._fill():
            return 0
        n = min(len(buffer), len(self._part))
        buffer[:n] = self._part[:n]
        self._part = self._part[n:]
        return n


# Rows per Parquet row group in a job's output: results arrive ~50k rows a message, and a row
# group per message would make the file slow to write and to read.
ROW_GROUP_ROWS = 1 << 20


def run_to_file(
    job: BulkJob,
    batches: Iterable[pa.RecordBatch],
    out: str | Path,
    on_progress: Callable[[int], None] | None = None,
) -> JobSummary:
    """Run a bulk job and write `<key>` plus the results to `out`, in the format its extension
    names (`juki_engine.files`: Parquet, CSV, Arrow IPC).

    A writer thread encodes the file (pyarrow releases the GIL) while this thread keeps the
    stream moving; the queue between them is bounded, so memory stays bounded too.
    """
    files.output_format(out)  # an unknown extension is refused before the job starts
    summary = JobSummary()
    tables: queue.Queue[pa.Table | None] = queue.Queue(maxsize=8)
    failure: list[BaseException] = []
    writer = threading.Thread(
        target=_write_results,
        args=(tables, out, job.by, failure),
        name="juki-parquet",
        daemon=True,
    )
    writer.start()
    try:
        for claims, results in job.run(batches):
            if failure:
                break
            # The input key leads each row; a retrieved copy of it would only repeat it.
            if job.by in results.column_names:
                results = results.drop_columns([job.by])
            tables.put(results.add_column(0, job.by, claims.column(job.by)))
            summary.add(results)
            if on_progress is not None:
                on_progress(summary.records)
    finally:
        tables.put(None)
        writer.join()
    if failure:
        raise failure[0]
    return summary


def _write_results(
    tables: queue.Queue[pa.Table | None], out: str | Path, key: str, failure: list[BaseException]
) -> None:
    """Write the queued tables to `out` until None: Parquet in row groups of ROW_GROUP_ROWS
    with the job-tuned writer, any other format as it comes."""
    parquet = files.output_format(out) == "Parquet"
    writer: Any = None
    buffered: list[pa.Table] = []
    rows = 0
    unique = _UniqueDictionaries()
    try:
        while True:
            table = tables.get()
            if table is not None and not parquet:
                if writer is None:
                    writer = files.TableWriter(out, table.schema)
                writer.write(table)
            elif table is not None:
                buffered.append(unique.apply(table))
                rows += table.num_rows
            if buffered and (table is None or rows >= ROW_GROUP_ROWS):
                group = pa.concat_tables(buffered)
                if writer is None:
                    writer = _parquet_writer(out, group.schema, key)
                writer.write_table(group, row_group_size=ROW_GROUP_ROWS)
                buffered, rows = [], 0
            if table is None:
                break
    except BaseException as e:  # handed to the job's thread, which raises it
        failure.append(e)
        while tables.get() is not None:  # let the producer finish
            pass
    finally:
        if writer is not None:
            writer.close()


class _UniqueDictionaries:
    """Re-key dictionary columns onto dictionaries without repeated values.

    The registry's town dictionary repeats names (本町 in many municipalities), and Parquet
    writes a dictionary with repeats as plain strings, decoding every row. A job's results share
    one dictionary per column (sent once per stream), so the unique values and the old-to-new
    key map are computed once per column and each batch costs one integer take.
    """

    def __init__(self) -> None:
        self._maps: dict[str, tuple[pa.Array, pa.Array, pa.Array]] = {}

    def apply(self, table: pa.Table) -> pa.Table:
        import pyarrow.compute as pc

        for i, f in enumerate(table.schema):
            if not pa.types.is_dictionary(f.type):
                continue
            chunks = []
            for chunk in table.column(i).chunks:
                known = self._maps.get(f.name)
                if known is None or not known[0].equals(chunk.dictionary):
                    values = pc.unique(chunk.dictionary)
                    keys = pc.index_in(chunk.dictionary, value_set=values).cast(f.type.index_type)
                    known = self._maps[f.name] = (chunk.dictionary, values, keys)
                _, values, keys = known
                if len(values) == len(chunk.dictionary):
                    chunks.append(chunk)  # no repeats: nothing to re-key
                else:
                    chunks.append(pa.DictionaryArray.from_arrays(keys.take(chunk.indices), values))
            table = table.set_column(i, f, pa.chunked_array(chunks, f.type))
        return table


# Retrieved text (names, towns, blocks) arrives dictionary-encoded against the registry's own
# dictionaries, the nation's towns 1.6 MiB of them: a dictionary page this large keeps them
# dictionary-encoded in Parquet rather than falling back to plain strings at the default 1 MiB.
DICTIONARY_PAGE_BYTES = 64 << 20


def _parquet_writer(out: str | Path, schema: pa.Schema, key: str) -> Any:
    """A Parquet writer for job results: only the registry's dictionary columns are dictionary
    encoded (a unique key column is not worth hashing), and min/max statistics are kept for the
    other columns only (over a 100 k-entry dictionary they cost more than the column itself).
    Together they cut the writer's CPU per record by a third on a national job. The key column,
    unique digits that Snappy shrinks by a third, is written uncompressed: 67–75 → 23–32 ns of
    CPU a record, for ~5 more bytes a record on disk (BENCHMARKS.md)."""
    import pyarrow.parquet as pq

    dictionary = [f.name for f in schema if pa.types.is_dictionary(f.type)]
    return pq.ParquetWriter(
        out,
        schema,
        use_dictionary=dictionary,
        dictionary_pagesize_limit=DICTIONARY_PAGE_BYTES,
        write_statistics=[f.name for f in schema if f.name not in dictionary],
        compression={f.name: "none" if f.name == key else "snappy" for f in schema},
    )


@dataclass
class JobSummary:
    """Counts over a job's (or a lookup's) results in the outcomes' one vocabulary
    (docs/outcomes.md): `found`, `not_found` (a valid key no resident holds) and `invalid_key`
    (a key that is not a valid identifier, its reason in the `error` column); then statuses and
    mismatches per claimed field."""

    records: int = 0
    found: int = 0
    invalid_key: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    mismatches: dict[str, int] = field(default_factory=dict)

    def add(self, results: pa.Table) -> None:
        import pyarrow.compute as pc

        self.records += results.num_rows
        self.found += pc.sum(results["found"]).as_py() or 0
        self.invalid_key += results.num_rows - results["error"].null_count
        if "status" in results.column_names:
            # Count the dictionary's keys, not its decoded strings (a string per record).
            status = results["status"].combine_chunks()
            names = status.dictionary.to_pylist()
            for entry in pc.value_counts(status.indices).to_pylist():
                if entry["values"] is not None:
                    key = names[entry["values"]]
                    self.statuses[key] = self.statuses.get(key, 0) + entry["counts"]
        for name in results.column_names:
            if name.endswith("_match"):
                field_name = name.removesuffix("_match")
                wrong = pc.sum(pc.invert(results[name])).as_py() or 0
                self.mismatches[field_name] = self.mismatches.get(field_name, 0) + wrong

    @property
    def not_found(self) -> int:
        return self.records - self.found - self.invalid_key

    def line(self) -> str:
        """The counts on one line, in the vocabulary's words."""
        text = (
            f"{self.found:,} found, {self.not_found:,} not_found, {self.invalid_key:,} invalid_key"
        )
        if self.invalid_key:
            text += " (each invalid_key's reason is in the error column)"
        return text
