"""Tests for the trust boundary (rust/wire.rs, rust/python.rs): every array from outside is
validated before it is read, only the contract's column types are accepted, echoed client values
are bounded, IPC streams from the wire are decoded with caps, and replies disclose no dictionary
value beyond the rows they answer."""

from __future__ import annotations

import re
import struct
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from juki_engine import InternalError, InvalidInput, JukiError, Registry, ResourceExhausted, _core

ECHO = 32  # characters of a client's value an error message repeats at most


def utf8(offsets: list[int], data: bytes) -> pa.Array:
    """A utf8 array built from raw buffers, unvalidated (pyarrow checks nothing here)."""
    return pa.Array.from_buffers(
        pa.string(),
        len(offsets) - 1,
        [None, pa.py_buffer(np.array(offsets, np.int32).tobytes()), pa.py_buffer(data)],
    )


def views(data: bytes, rows: list[tuple[int, int, int]]) -> pa.Array:
    """A utf8_view array over one data buffer: per row (length, buffer index, offset), the
    prefix taken from `data` (so only what a test means to break is broken)."""
    raw = bytearray()
    for length, index, offset in rows:
        if length <= 12:
            raw += struct.pack("<I", length) + data[offset : offset + length].ljust(12, b"\0")
        else:
            prefix = data[offset : offset + 4].ljust(4, b"\0")
            raw += struct.pack("<I", length) + prefix + struct.pack("<II", index, offset)
    return pa.Array.from_buffers(
        pa.string_view(), len(rows), [None, pa.py_buffer(bytes(raw)), pa.py_buffer(data)]
    )


def bad_dictionary() -> pa.Array:
    return pa.DictionaryArray.from_arrays(
        pa.array([0, 7], pa.int32()), pa.array(["佐藤"]), safe=False
    )


# Arrays that pyarrow lets one build and that are not valid Arrow data: reading them as they are
# would read memory they do not own.
INVALID: dict[str, Any] = {
    "offsets-backwards": lambda: utf8([0, 4, 2], b"12345678"),
    "dictionary-key-out-of-range": bad_dictionary,
    "view-past-its-buffer": lambda: views(b"x" * 20, [(16, 0, 10)]),
    "view-in-a-missing-buffer": lambda: views(b"x" * 20, [(16, 3, 0)]),
}

# Strings whose layout is sound but whose bytes are not UTF-8: refused where the core keeps or
# hands back the strings as text (a registry table, claims from the wire), read as the bytes they
# are where it only compares them (claims and keys from this process).
NOT_UTF8: dict[str, Any] = {
    "non-utf8": lambda: utf8([0, 2], b"\xff\xfe"),
    "dictionary-values-non-utf8": lambda: pa.DictionaryArray.from_arrays(
        pa.array([0, 0], pa.int8()), utf8([0, 2], b"\xc3\x28"), safe=False
    ),
    "view-non-utf8": lambda: views(b"\xff" * 20, [(16, 0, 0)]),
}


@pytest.fixture(scope="module")
def key(small_rows: list[dict[str, Any]]) -> str:
    key: str = small_rows[0]["my_number"]
    return key


@pytest.mark.parametrize("make", INVALID.values(), ids=list(INVALID))
def test_invalid_keys_are_refused_before_they_are_read(small: Registry, make: Any) -> None:
    with pytest.raises(InvalidInput, match=r"^keys: invalid Arrow data: "):
        small.lookup(make())
    with pytest.raises(InvalidInput, match=r"^values: invalid Arrow data: "):
        _core.is_valid_array("my_number", make())
    with pytest.raises(InvalidInput, match=r"^bases: invalid Arrow data: "):
        _core.check_digit_array("my_number", make())


@pytest.mark.parametrize("make", NOT_UTF8.values(), ids=list(NOT_UTF8))
def test_keys_that_are_not_utf8_are_rejected_per_row(small: Registry, make: Any) -> None:
    keys = make()
    out = small.lookup(keys)
    assert out["found"].to_pylist() == [False] * len(keys)
    assert all(e.startswith(f"row {i}: ") for i, e in enumerate(out["error"].to_pylist()))
    assert _core.is_valid_array("my_number", keys).to_pylist() == [False] * len(keys)
    # check_digit_array reads its bases as text, so it validates them as text.
    with pytest.raises(InvalidInput, match=r"^bases: invalid Arrow data: .*utf-?8"):
        _core.check_digit_array("my_number", make())


@pytest.mark.parametrize("make", INVALID.values(), ids=list(INVALID))
@pytest.mark.parametrize("column", ["my_number", "family_name", "given_name_kana"])
def test_invalid_claims_are_refused_naming_the_column(
    small: Registry, key: str, make: Any, column: str
) -> None:
    bad = make()
    claims = {"my_number": pa.array([key] * len(bad)), column: bad}
    with pytest.raises(InvalidInput) as info:
        small.verify(pa.table(claims))
    assert str(info.value).startswith(f"claims column '{column}': invalid Arrow data: "), info


@pytest.mark.parametrize("make", NOT_UTF8.values(), ids=list(NOT_UTF8))
def test_claims_that_are_not_utf8_are_compared_as_bytes(
    small: Registry, key: str, make: Any
) -> None:
    names = make()
    out = small.verify(pa.table({"my_number": pa.array([key] * len(names)), "family_name": names}))
    assert out["found"].to_pylist() == [True] * len(names)
    assert out["family_name_match"].to_pylist() == [False] * len(names)
    out = small.verify(pa.table({"my_number": make()}))
    assert out["found"].to_pylist() == [False] * len(names)
    assert out["error"].null_count == 0


@pytest.mark.parametrize("make", NOT_UTF8.values(), ids=list(NOT_UTF8))
def test_claims_from_the_wire_that_are_not_utf8_are_refused(make: Any) -> None:
    with pytest.raises(InvalidInput, match=r"(?i)utf-?8"):
        read(ipc(pa.table({"family_name": make()})))


@pytest.mark.parametrize("make", [*INVALID.values(), *NOT_UTF8.values()], ids=[*INVALID, *NOT_UTF8])
def test_an_invalid_registry_table_is_refused_naming_the_column(
    small_table: pa.Table, make: Any
) -> None:
    bad = make()
    table = small_table.slice(0, len(bad))
    table = table.set_column(table.schema.get_field_index("family_name"), "family_name", bad)
    with pytest.raises(InvalidInput, match=r"^registry table column 'family_name': invalid"):
        Registry.from_arrow(table)


def test_an_invalid_column_of_a_later_batch_is_found(small: Registry, key: str) -> None:
    good = pa.record_batch({"my_number": pa.array([key]), "family_name": pa.array(["x"])})
    bad = INVALID["offsets-backwards"]()
    bad = pa.record_batch({"my_number": pa.array([key] * len(bad)), "family_name": bad})
    with pytest.raises(InvalidInput, match="claims column 'family_name': invalid Arrow data"):
        small.verify(pa.Table.from_batches([good, good, bad]))


# ----------------------------------------------------------------------------- the contract's types


@pytest.mark.parametrize(
    ("keys", "shown"),
    [
        (pa.array([1.5]), "Float64"),
        (pa.nulls(2), "Null"),
        (pa.array([b"12345678901"]), "Binary"),
        (pa.DictionaryArray.from_arrays(pa.array([0], pa.int8()), pa.array([5])), "Dictionary"),
        (pa.array([[1]]), "List"),
    ],
)
def test_keys_of_other_types_are_refused_naming_the_type(
    small: Registry, key: str, keys: pa.Array, shown: str
) -> None:
    with pytest.raises(InvalidInput, match=f"my_number keys must be strings.*not {shown}"):
        small.lookup(keys)
    with pytest.raises(InvalidInput, match=f"my_number keys must be strings.*not {shown}"):
        small.verify(pa.table({"my_number": keys}))


@pytest.mark.parametrize(
    "keys",
    [
        pa.array(["x"], pa.string()),
        pa.array(["x"], pa.large_string()),
        pa.array(["x"], pa.string_view()),
        pa.array(["x"], pa.dictionary(pa.int16(), pa.string())),
        pa.array(["x"], pa.dictionary(pa.uint8(), pa.large_string())),
        pa.DictionaryArray.from_arrays(
            pa.array([0], pa.int64()), pa.array(["x"], pa.string_view())
        ),
        *(pa.array([1], t) for t in [pa.int8(), pa.uint16(), pa.int32(), pa.uint64()]),
    ],
    ids=str,
)
def test_keys_of_the_contracts_types_are_accepted(small: Registry, keys: pa.Array) -> None:
    assert small.lookup(keys)["found"].to_pylist() == [False]
    assert small.verify(pa.table({"my_number": keys}))["found"].to_pylist() == [False]


@pytest.mark.parametrize(
    ("column", "values", "shown"),
    [
        ("family_name", pa.array([1]), "Int64"),
        ("family_name", pa.array([b"x"]), "Binary"),
        ("given_name", pa.array([1], pa.dictionary(pa.int8(), pa.int64())), "Dictionary"),
        ("municipality_code", pa.array([162019]), "Int64"),
        ("birth_date", pa.array(["2001-02-03"]), "Utf8"),
        ("birth_date", pa.array([0], pa.int32()), "Int32"),
        ("birth_date", pa.array([0], pa.timestamp("s")), "Timestamp"),
        ("sex", pa.array(["1"]), "Utf8"),
        ("sex", pa.array([1.0]), "Float64"),
    ],
)
def test_claims_of_other_types_are_refused_naming_column_and_type(
    small: Registry, key: str, column: str, values: pa.Array, shown: str
) -> None:
    with pytest.raises(InvalidInput) as info:
        small.verify(pa.table({"my_number": [key], column: values}))
    message = str(info.value)
    assert f"claims column '{column}'" in message and f"not {shown}" in message, message


@pytest.mark.parametrize("column", ["family_name", "given_name_kana", "birth_date", "sex"])
def test_a_null_typed_claim_claims_nothing(small: Registry, key: str, column: str) -> None:
    out = small.verify(pa.table({"my_number": [key], column: pa.nulls(1)}))
    assert out["found"].to_pylist() == [True]
    assert out[f"{column}_match"].to_pylist() == [None]


def test_a_client_chosen_column_name_is_echoed_bounded(small: Registry, key: str) -> None:
    name = "x" * 10_000
    with pytest.raises(InvalidInput) as info:
        small.verify(pa.table({"my_number": [key], name: ["y"]}))
    assert "x" * ECHO + "…'" in str(info.value) and len(str(info.value)) < 400


# ----------------------------------------------------------------------------- echoed values


def test_views_of_one_huge_string_echo_at_most_32_characters(small: Registry) -> None:
    huge = b"9" * (1 << 20)  # one string, viewed by every row: 1 MiB data, 1,000 rows
    keys = views(huge, [(len(huge), 0, 0)] * 1000)
    for out in (small.lookup(keys), small.verify(pa.table({"my_number": keys}))):
        errors = out["error"].to_pylist()
        assert all(e is not None and len(e) < 120 for e in errors), max(map(len, errors))
        assert f"'{'9' * ECHO}…'" in errors[0]
        assert errors[999].startswith("row 999: ")


def test_a_dictionary_of_one_huge_string_echoes_at_most_32_characters(small: Registry) -> None:
    keys = pa.DictionaryArray.from_arrays(pa.array(np.zeros(1000, np.int32)), ["é" * (1 << 20)])
    errors = small.lookup(keys)["error"].to_pylist()
    assert all(e is not None and len(e) < 120 for e in errors)
    assert f"'{'é' * ECHO}…'" in errors[0]


def test_a_short_value_is_echoed_whole(small: Registry) -> None:
    error = small.lookup(["12345"])["error"][0].as_py()
    assert error == "row 0: my_number '12345': must be exactly 12 ASCII digits, got 5 characters"


@pytest.mark.parametrize(
    "call",
    [
        lambda v: _core.validate("my_number", v),
        lambda v: _core.check_digit("my_number", v),
        lambda v: _core.is_valid(v, "1"),
    ],
    ids=["validate", "check_digit", "kind"],
)
def test_identifier_functions_echo_bounded(call: Any) -> None:
    with pytest.raises(JukiError) as info:
        call("７" * 100_000)
    assert re.search(f"７{{{ECHO}}}…", str(info.value)), str(info.value)[:200]
    assert len(str(info.value)) < 300


def test_verify_one_echoes_bounded_and_refuses_text_that_is_not_a_date(
    small: Registry, key: str
) -> None:
    with pytest.raises(InvalidInput, match=r"'birth_date'.*is not a date"):
        small.verify_one(key, "my_number", {"birth_date": "昭和" * 10_000})
    row = small.verify_one("1" * 100_000, "my_number", {})
    assert row["found"] is False and len(row["error"]) < 200


# ----------------------------------------------------------------------------- error classes


def test_new_error_classes_are_juki_errors() -> None:
    for cls in (InternalError, ResourceExhausted):
        assert issubclass(cls, JukiError) and not issubclass(cls, InvalidInput)
        assert cls.__module__ == "juki_engine._core"


# ----------------------------------------------------------------------------- IPC from the wire

MAX_ROWS = 100_000
MAX_BYTES = 16 << 20


def ipc(table: pa.Table, compression: str | None = None, chunk: int | None = None) -> bytes:
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=compression)
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table, max_chunksize=chunk)
    payload: bytes = sink.getvalue().to_pybytes()
    return payload


def read(payload: bytes, max_rows: int = MAX_ROWS, max_bytes: int = MAX_BYTES) -> pa.Table:
    return _core.read_ipc_stream(payload, max_rows, max_bytes).to_arrow()


def claims_like(rows: int) -> pa.Table:
    names = ["佐藤", "鈴木", "高橋", "ワタナベ・ジョン・アレクサンダー"]
    return pa.table(
        {
            "my_number": pa.array([f"{i:012d}" for i in range(rows)]),
            "family_name": pa.array([names[i % 4] for i in range(rows)]).dictionary_encode(),
            "given_name_kana": pa.array([names[-1 - i % 4] for i in range(rows)], pa.string_view()),
            "birth_date": pa.array(np.arange(rows, dtype=np.int32)).view(pa.date32()),
            "sex": pa.array([1 + i % 2 for i in range(rows)], pa.uint8()),
        }
    )


@pytest.mark.parametrize("compression", [None, "zstd", "lz4"])
@pytest.mark.parametrize("chunk", [None, 300])
def test_a_valid_stream_round_trips(compression: str | None, chunk: int | None) -> None:
    table = claims_like(1000)
    out = read(ipc(table, compression, chunk))
    assert out.schema == table.schema
    assert out.equals(table)


def test_an_empty_stream_has_its_schema() -> None:
    table = claims_like(0)
    out = read(ipc(table))
    assert out.num_rows == 0 and out.schema == table.schema


@pytest.mark.parametrize("chunk", [None, 100])
def test_rows_over_the_cap_are_refused_before_decoding(chunk: int | None) -> None:
    payload = ipc(claims_like(1000), chunk=chunk)
    assert read(payload, max_rows=1000).num_rows == 1000
    with pytest.raises(InvalidInput, match=r"declares 1,000 rows, at most 999$"):
        read(payload, max_rows=999)


@pytest.mark.parametrize("compression", [None, "zstd", "lz4"])
def test_decoded_bytes_over_the_cap_are_refused(compression: str | None) -> None:
    payload = ipc(pa.table({"my_number": ["123456789018"] * 10_000}), compression)
    assert read(payload, max_bytes=200_000).num_rows == 10_000
    with pytest.raises(InvalidInput, match=r"bytes decoded, at most 100,000$"):
        read(payload, max_bytes=100_000)


def test_a_compressed_buffer_declaring_a_huge_decoded_size_is_refused() -> None:
    table = pa.table({"my_number": ["12345678901"] * 1000})
    payload = bytearray(ipc(table, "zstd"))
    # Each compressed buffer starts with its decoded length (int64 LE); claim 1 TiB.
    at = payload.find((11_000).to_bytes(8, "little"))
    assert at > 0
    payload[at : at + 8] = (1 << 40).to_bytes(8, "little")
    with pytest.raises(InvalidInput) as info:
        read(bytes(payload))
    assert re.search(
        r"declares 1,099,51\d,\d{3},\d{3} bytes decoded, at most 16,777,216", str(info.value)
    )


def test_a_view_column_of_one_big_string_is_refused_by_what_it_refers_to() -> None:
    big = b"x" * (1 << 20)
    table = pa.table({"family_name": views(big, [(len(big), 0, 0)] * 100)})
    payload = ipc(table)
    assert len(payload) < 2 << 20  # one 1 MiB string on the wire, 100 MiB once viewed
    with pytest.raises(InvalidInput) as info:
        read(payload)
    message = str(info.value)
    assert message == (
        "claims column 'family_name' refers to 104,857,600 bytes of strings, at most 16,777,216"
    )
    assert read(payload, max_bytes=200 << 20).num_rows == 100


def views_of_one(value: bytes, rows: int) -> pa.Array:
    """`rows` views of one string, built from raw buffers (a Python list would materialise
    every copy)."""
    raw = np.zeros((rows, 4), np.uint32)  # length, prefix, buffer index, offset
    raw[:, 0] = len(value)
    raw[:, 1] = int.from_bytes(value[:4], "little")
    return pa.Array.from_buffers(
        pa.string_view(), rows, [None, pa.py_buffer(raw.tobytes()), pa.py_buffer(value)]
    )


# 250,000 views of one 4 MiB string: an 8 MiB message whose views refer to a terabyte, which
# the decoder would read to validate them.
TERABYTE = 250_000 * (4 << 20)


@pytest.mark.parametrize("compression", [None, "zstd", "lz4"])
def test_views_referring_to_a_terabyte_are_refused_before_decoding(
    compression: str | None,
) -> None:
    table = pa.table({"family_name": views_of_one(b"9" * (4 << 20), 250_000)})
    payload = ipc(table, compression)
    assert len(payload) < 8 << 20
    with pytest.raises(InvalidInput) as info:
        read(payload, max_rows=1 << 20)
    assert str(info.value) == (
        f"claims column 'family_name' refers to {TERABYTE:,} bytes of strings, at most 16,777,216"
    )


def test_a_dictionary_of_views_is_charged_what_its_views_refer_to() -> None:
    values = views_of_one(b"8" * 100, 300_000)  # 30 MB of strings once viewed
    keys = pa.array(np.zeros(10, np.int32))
    payload = ipc(pa.table({"family_name": pa.DictionaryArray.from_arrays(keys, values)}))
    with pytest.raises(InvalidInput, match=r"'family_name' refers to 30,000,000 bytes of strings"):
        read(payload, max_rows=1 << 20)


def test_views_are_charged_over_the_whole_stream() -> None:
    big = b"x" * (1 << 20)
    table = pa.table({"family_name": views(big, [(len(big), 0, 0)] * 10)})
    one = ipc(table)
    assert read(one).num_rows == 10  # 10 MiB of strings: within 16 MiB
    two = ipc(pa.concat_tables([table, table]))  # two batches of 10 MiB each
    with pytest.raises(InvalidInput) as info:
        read(two)
    assert str(info.value) == (
        "claims stream's view columns refer to 20,971,520 bytes of strings, at most 16,777,216"
    )


def test_a_delta_dictionary_is_refused() -> None:
    first = pa.table({"family_name": pa.array(["佐藤", "鈴木"]).dictionary_encode()})
    more = pa.DictionaryArray.from_arrays(pa.array([2], pa.int32()), ["佐藤", "鈴木", "高橋"])
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(emit_dictionary_deltas=True)
    with pa.ipc.new_stream(sink, first.schema, options=options) as writer:
        writer.write_table(first)
        writer.write_table(pa.table({"family_name": more}))
    with pytest.raises(InvalidInput, match=r"a delta dictionary batch \(not supported\)$"):
        read(sink.getvalue().to_pybytes())


def test_a_view_array_referring_to_a_terabyte_is_refused_in_process(small: Registry) -> None:
    keys = views_of_one(b"9" * (4 << 20), 250_000)
    message = f"refers to {TERABYTE:,} bytes of strings, at most 1,073,741,824$"
    with pytest.raises(InvalidInput, match=r"^keys " + message):
        small.lookup(keys)
    claims = pa.table({"my_number": keys, "family_name": keys})
    with pytest.raises(InvalidInput, match=r"^claims column 'my_number' " + message):
        small.verify(claims)
    with pytest.raises(InvalidInput, match=r"^values " + message):
        _core.is_valid_array("my_number", keys)


def test_a_decoder_panic_is_refused_without_a_report(capfd: pytest.CaptureFixture[str]) -> None:
    # A dictionary's int32 keys buffer declared 13 bytes long: arrow asserts on it.
    table = pa.table({"family_name": pa.array(["a", "b", "a"]).dictionary_encode()})
    payload = bytearray(ipc(table))
    at = payload.rfind(struct.pack("<q", 12))
    payload[at : at + 8] = struct.pack("<q", 13)
    capfd.readouterr()
    for _ in range(3):
        with pytest.raises(InvalidInput, match=r"the decoder refused it: assertion failed"):
            read(bytes(payload))
    assert "panicked" not in capfd.readouterr().err


def test_invalid_data_in_a_stream_is_refused_naming_the_column() -> None:
    for make in INVALID.values():
        payload = ipc(pa.table({"family_name": make()}))
        with pytest.raises(InvalidInput, match=r"family_name|IPC"):
            read(payload)


def test_a_dictionary_with_keys_out_of_range_is_refused() -> None:
    with pytest.raises(InvalidInput, match=r"out of bounds|invalid"):
        read(ipc(pa.table({"family_name": bad_dictionary()})))


def test_truncated_and_garbage_payloads_are_refused() -> None:
    payload = ipc(claims_like(100), "zstd")
    for cut in (0, 3, 8, 100, len(payload) // 2, len(payload) - 9):
        with pytest.raises(InvalidInput, match=r"^claims are not an Arrow IPC stream: "):
            read(payload[:cut])
    with pytest.raises(InvalidInput, match="after the end-of-stream marker"):
        read(payload + b"\0" * 8)
    with pytest.raises(InvalidInput, match="stray bytes"):
        read(payload[:-8] + b"\1")
    rng = np.random.default_rng(12)
    for _ in range(200):
        with pytest.raises(InvalidInput, match=r"^claims are not an Arrow IPC stream: "):
            read(rng.bytes(int(rng.integers(1, 4096))))


def test_a_second_schema_is_refused() -> None:
    one = ipc(claims_like(10))
    schema_only = ipc(claims_like(0))[:-8]  # the schema message, without the end marker
    with pytest.raises(InvalidInput, match="more than one schema message"):
        read(schema_only + one)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_mutated_streams_decode_or_are_refused(data: st.DataObject) -> None:
    """Flipped bytes anywhere in a valid stream (headers, lengths, bodies): the reader decodes a
    valid table or raises InvalidInput, never anything else (no panic, no crash)."""
    compression = data.draw(st.sampled_from([None, "zstd", "lz4"]))
    payload = bytearray(VALID[compression])
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(0, len(payload) - 1))
        payload[at] = data.draw(st.integers(0, 255))
    try:
        out = read(bytes(payload))
    except InvalidInput:
        return
    out.validate(full=True)


VALID = {c: ipc(claims_like(50), c, chunk=20) for c in (None, "zstd", "lz4")}


# ------------------------------------------------------------------------ per-reply dictionaries

SENTINELS = {"family_name": "番兵", "family_name_kana": "バンペイ", "address_town": "秘密町"}


@pytest.fixture(scope="module")
def sentinel_registry(small_table: pa.Table) -> tuple[Registry, pa.Table]:
    """Twelve residents; resident 5 alone holds the sentinel family name, reading and town."""
    table = small_table.slice(0, 12)
    for name, sentinel in SENTINELS.items():
        values = table[name].cast(pa.string()).to_pylist()
        values[5] = sentinel
        table = table.set_column(table.schema.get_field_index(name), name, pa.array(values))
    return Registry.from_arrow(table), table


def buffers_of(table: pa.Table) -> list[bytes]:
    """Every buffer of every column of `table`, dictionaries' included."""
    out = []
    for column in table.columns:
        for chunk in column.chunks:
            arrays = [chunk]
            if pa.types.is_dictionary(chunk.type):
                arrays.append(chunk.dictionary)
            out += [b.to_pybytes() for a in arrays for b in a.buffers() if b is not None]
    return out


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_a_reply_discloses_no_dictionary_value_beyond_its_rows(
    sentinel_registry: tuple[Registry, pa.Table], data: st.DataObject
) -> None:
    registry, table = sentinel_registry
    kind = data.draw(st.sampled_from(["my_number", "resident_code"]))
    keys = table[kind].to_pylist()
    others = [k for i, k in enumerate(keys) if i != 5]
    asked = data.draw(st.lists(st.sampled_from([*others, "123456789018", "x"]), max_size=30))
    columns = Registry.column_names()
    lookup = registry.lookup(asked, by=kind, columns=columns)
    verify = registry.verify(
        pa.table({kind: pa.array(asked, pa.string()), "family_name": pa.array(asked)}),
        by=kind,
        columns=columns,
    )
    for out in (lookup, verify):
        everything = b"".join(buffers_of(out))
        for sentinel in SENTINELS.values():
            assert sentinel.encode() not in everything, (asked, sentinel)
        # Each dictionary holds exactly the values of the rows answered, first seen first.
        for name in ("family_name", "address_town", "municipality_name"):
            chunk = out[name].combine_chunks()
            answered = [v for v in chunk.cast(pa.string()).to_pylist() if v is not None]
            assert chunk.dictionary.to_pylist() == list(dict.fromkeys(answered)), name
    # The same reply with resident 5 asked for does carry the sentinels.
    with_five = registry.lookup([*asked, keys[5]], by=kind, columns=columns)
    everything = b"".join(buffers_of(with_five))
    assert all(s.encode() in everything for s in SENTINELS.values())
    assert with_five.to_pylist()[:-1] == lookup.to_pylist()


def test_the_whole_registry_keeps_its_whole_dictionaries(
    sentinel_registry: tuple[Registry, pa.Table],
) -> None:
    registry, _ = sentinel_registry
    out = registry.to_arrow()
    assert "番兵" in out["family_name"].combine_chunks().dictionary.to_pylist()


@pytest.mark.parametrize("kind", [pa.int64(), pa.int16(), pa.uint64()])
def test_a_sex_out_of_range_is_a_claim_that_cannot_match(
    small: Registry, small_rows: list[dict[str, Any]], kind: pa.DataType
) -> None:
    row = small_rows[0]
    sexes = [row["sex"], -1, 300, 1 << 63, None]
    if pa.types.is_unsigned_integer(kind):
        sexes[1] = 256
    else:
        sexes[3] = -(1 << 15) if kind == pa.int16() else -(1 << 63)
    claims = pa.table({"my_number": [row["my_number"]] * 5, "sex": pa.array(sexes, kind)})
    out = small.verify(claims)
    assert out["found"].to_pylist() == [True] * 5
    assert out["sex_match"].to_pylist() == [True, False, False, False, None]


@pytest.mark.parametrize("at", [0, 1_500_000, 3_999_999])
def test_a_large_column_is_validated_on_every_row(small: Registry, at: int) -> None:
    """Past a few million rows the core validates a column slice by slice on all cores: a bad
    byte or offset in any slice is still refused."""
    rows = 4_000_000
    offsets = np.arange(rows + 1, dtype=np.int32)
    values = bytearray(b"1" * rows)
    values[at] = 0xFF  # not UTF-8: refused where strings are read as text
    bad_utf8 = pa.Array.from_buffers(
        pa.string(), rows, [None, pa.py_buffer(offsets.tobytes()), pa.py_buffer(bytes(values))]
    )
    with pytest.raises(InvalidInput, match="invalid Arrow data"):
        _core.check_digit_array("resident_code", bad_utf8)
    offsets[min(at + 1, rows - 1)] = rows + 100  # past the end (pyarrow checks only the last)
    bad_offsets = pa.Array.from_buffers(
        pa.string(), rows, [None, pa.py_buffer(offsets.tobytes()), pa.py_buffer(b"1" * rows)]
    )
    with pytest.raises(InvalidInput, match="invalid Arrow data"):
        small.lookup(bad_offsets, by="resident_code", columns=[])
    good = pa.Array.from_buffers(
        pa.string(),
        rows,
        [
            None,
            pa.py_buffer(np.arange(rows + 1, dtype=np.int32).tobytes()),
            pa.py_buffer(b"1" * rows),
        ],
    )
    assert not any(small.lookup(good, by="resident_code", columns=[])["found"].to_pylist())
