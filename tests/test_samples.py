"""Tests for sample job inputs drawn from a registry: pension claims (juki_engine.samples)."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from juki_engine import Registry
from juki_engine.samples import PENSION_BIRTH_LIMIT, pension_claims

COLUMNS = ["resident_code", "family_name", "given_name", "birth_date"]
MATCHES = ["family_name_match", "given_name_match", "birth_date_match"]


def count(values: pa.Array | pa.ChunkedArray) -> int:
    """How many entries are true (nulls not counted)."""
    return int(pc.sum(pc.fill_null(values, False)).as_py() or 0)


def with_birth_dates(table: pa.Table, born: list[dt.date]) -> pa.Table:
    i = table.schema.get_field_index("birth_date")
    field = table.schema.field(i)
    return table.set_column(i, field, pa.array(born, field.type))


def test_pension_age_is_65_at_the_reference_date() -> None:
    assert PENSION_BIRTH_LIMIT == dt.date(1961, 1, 1)


@pytest.mark.parametrize("n", [1, 500, 20_000, 30_000])
def test_claims_have_the_job_columns(small: Registry, n: int) -> None:
    claims = pension_claims(small, n, seed=3)
    assert claims.num_rows == n
    assert claims.column_names == COLUMNS
    assert claims.schema.field("resident_code").type == pa.string()
    assert claims.schema.field("family_name").type == pa.string()
    assert claims.schema.field("given_name").type == pa.string()
    assert claims.schema.field("birth_date").type == pa.date32()
    assert all(column.null_count == 0 for column in claims.columns)


def test_no_claims(small: Registry) -> None:
    claims = pension_claims(small, 0)
    assert claims.num_rows == 0
    assert claims.column_names == COLUMNS


def test_every_claimant_is_of_pension_age(small: Registry) -> None:
    claims = pension_claims(small, 20_000, seed=1)
    born = claims["birth_date"].to_pylist()
    assert max(born) < PENSION_BIRTH_LIMIT
    # The registry holds younger people too: the claims were chosen among pensioners.
    assert max(small.to_arrow(["birth_date"])["birth_date"].to_pylist()) >= PENSION_BIRTH_LIMIT


def test_claims_are_deterministic_for_a_seed(small: Registry) -> None:
    first = pension_claims(small, 2_000, seed=11)
    assert pension_claims(small, 2_000, seed=11).equals(first)
    assert not pension_claims(small, 2_000, seed=12).equals(first)
    assert pension_claims(small, 2_000).equals(pension_claims(small, 2_000, seed=0))


def test_faithful_claims_all_verify(small: Registry) -> None:
    claims = pension_claims(small, 5_000, seed=5, wrong_name_fraction=0, bad_code_fraction=0)
    result = small.verify(claims, by="resident_code")
    assert result.num_rows == claims.num_rows
    assert result["found"].to_pylist() == [True] * claims.num_rows
    assert result["error"].null_count == claims.num_rows
    for column in MATCHES:
        assert result[column].to_pylist() == [True] * claims.num_rows, column


def test_faithful_claims_are_the_registrys_records(small: Registry) -> None:
    claims = pension_claims(small, 300, seed=2, wrong_name_fraction=0, bad_code_fraction=0)
    found = small.lookup(claims["resident_code"], by="resident_code", columns=COLUMNS[1:])
    for column in COLUMNS[1:]:
        assert found[column].to_pylist() == claims[column].to_pylist(), column


def test_mistyped_codes_fail_the_check_digit(small: Registry) -> None:
    claims = pension_claims(small, 2_000, seed=4, bad_code_fraction=1)
    faithful = pension_claims(small, 2_000, seed=4, bad_code_fraction=0)
    result = small.verify(claims, by="resident_code")
    assert result["error"].null_count == 0
    assert all("wrong check digit" in e for e in result["error"].to_pylist())
    assert not any(result["found"].to_pylist())
    # Only the last digit was changed, by one (9 wraps to 0).
    for bad, good in zip(
        claims["resident_code"].to_pylist(), faithful["resident_code"].to_pylist(), strict=True
    ):
        assert len(bad) == len(good) == 11
        assert bad[:-1] == good[:-1]
        assert int(bad[-1]) == (int(good[-1]) + 1) % 10


def test_default_fractions_give_some_out_of_date_names(small: Registry) -> None:
    n = 20_000
    result = small.verify(pension_claims(small, n, seed=9), by="resident_code")
    found = count(result["found"])
    wrong_codes = n - found
    assert result["error"].null_count == found
    # 0.1% of codes are mistyped: expected 20.
    assert 0 < wrong_codes < 100
    # 2% of family names are another pensioner's, some of which happen to be the same name.
    wrong_names = count(pc.invert(result["family_name_match"]))
    assert 0.005 * n < wrong_names < 0.05 * n
    # Only family names are changed.
    assert count(result["given_name_match"]) == found
    assert count(result["birth_date_match"]) == found


def test_a_registry_without_pensioners_is_refused(small: Registry) -> None:
    young = with_birth_dates(small.to_arrow().slice(0, 5), [dt.date(2000, 1, 1)] * 5)
    registry = Registry.from_arrow(young)
    assert len(registry) == 5
    with pytest.raises(ValueError, match="no one of pension age"):
        pension_claims(registry, 3)


def test_claims_are_drawn_from_the_pensioners_only(small: Registry) -> None:
    table = small.to_arrow()
    pensioner = pc.less(table["birth_date"], pa.scalar(PENSION_BIRTH_LIMIT))
    old = table.filter(pensioner).slice(0, 3)
    young = table.filter(pc.invert(pensioner)).slice(0, 2)
    # 1961-01-01 itself is not of pension age.
    born = [*old["birth_date"].to_pylist(), PENSION_BIRTH_LIMIT, dt.date(2000, 1, 1)]
    mixed = with_birth_dates(pa.concat_tables([old, young]), born)
    registry = Registry.from_arrow(mixed)
    # More claims than pensioners: each pensioner is drawn again.
    claims = pension_claims(registry, 50, seed=1, wrong_name_fraction=0, bad_code_fraction=0)
    assert claims.num_rows == 50
    assert set(claims["resident_code"].to_pylist()) <= set(old["resident_code"].to_pylist())
    assert count(registry.verify(claims, by="resident_code")["birth_date_match"]) == 50
