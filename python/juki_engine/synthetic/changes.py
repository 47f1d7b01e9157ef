"""Synthetic changes (異動): a realistic year of what a registry's municipalities report,
deterministic from a seed.

`generate_changes(registry, year, prefecture=None, seed=0)` draws the changes the municipalities
(市町村) of `registry` would submit in `year`, as the change table of docs/changes.md
(CHANGE_SCHEMA), in the order they would be applied: by reported date, municipality, sequence
(within a municipality's day, by reason). `juki changes generate` writes one to a file, in the
format its extension names (Parquet, CSV, Arrow), and prints the count per reason:

    juki changes generate --year 2017 --out changes.parquet            # the Toyama demo
    juki changes generate data/demo/toyama --year 2017 --seed 1 --out changes.csv
    juki changes generate nation/ --year 2017 --prefecture 富山県 --out toyama-2017.parquet

Volumes are a year's national figures (NATIONAL_VOLUMES) scaled by the residents in scope (the
registry's, or the prefecture's) over 128,066,211, rounded half up per reason. A reason falls
short only where too few residents qualify: an issuance needs an application, a return someone
abroad, a move within a municipality another address there. A move between municipalities is
two records: the former municipality's `move_out`, effective on the move's day (the 転出予定日)
and reported 0–14 days before it, with the destination's code in `moving_to`; then the new
municipality's `move_in`, effective the same day and reported 0–14 days after it, always on a
later day than the `move_out`. Both kinds of moves peak in March–April (about 30 % of the
year's moves); deaths peak in winter; the rest spread evenly over the year. Every effective
and reported date lies in the year.

Who is drawn, so that every record is one the engine can apply in this order:

- subjects are residents (status `resident`) of the scope born before the year, drawn by age
  and sex from the year's age profiles (deaths mostly the old, moves young adults, marriages
  25–39); each is the subject of at most one of death, move abroad, a move between
  municipalities, a move within one, a name change and an official correction, so nothing
  follows a death and each change is submitted by the municipality that holds the resident;
- card applications (card state none) and issuances (card state applied, or applied earlier in
  the year, 14–75 days before) come on top, never for the dead, emigrants or movers;
- returns from abroad are of residents abroad (status `moved_abroad`, since before the year)
  to their last municipality, and where too few, of the year's own emigrants after they left;
- a birth takes a parent, a resident aged 20–44: the child gets the parent's municipality,
  address, family name and its reading, and the given name (with its reading) of a resident
  under 30 of the child's sex; its identifiers are null (the engine issues them);
- a marriage (~85 % of name changes, ~95 % of them women) takes the family name and reading of
  a spouse, a resident of the municipality (one in five: of anywhere in scope); the other name
  changes take the given name (and reading) of someone of the same sex, or another recorded
  reading of the same given name;
- an official correction corrects a birth date (by up to 30 days), a reading or an address;
- addresses (move_in, move_within, returns, births, corrections) are existing (町域, 番地)
  pairs of the municipality, taken from its residents; destinations are drawn by population,
  half of them within the mover's prefecture when the scope holds several;
- the subject is named by `resident_code`, or for 10 % of records by `my_number` instead;
- sequence numbers count each municipality's records in reported order from
  `year * 10_000_000 + 1` (SEQUENCE_BASE), so the years never collide.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from juki_engine.synthetic.population import NATION_POPULATION

if TYPE_CHECKING:
    from juki_engine.registry import Registry

__all__ = [
    "CHANGE_SCHEMA",
    "MY_NUMBER_SHARE",
    "NATIONAL_VOLUMES",
    "REASON_NAMES",
    "SEQUENCE_BASE",
    "generate_changes",
    "scaled_volumes",
]

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]
Codes = npt.NDArray[Any]  # a registry column's codes or values, in the column's own type

CHANGE_SCHEMA: Final = pa.schema(
    [
        ("municipality", pa.string()),
        ("sequence", pa.int64()),
        ("reason", pa.string()),
        ("effective_date", pa.date32()),
        ("reported_date", pa.date32()),
        ("resident_code", pa.string()),
        ("my_number", pa.string()),
        ("family_name", pa.string()),
        ("family_name_kana", pa.string()),
        ("given_name", pa.string()),
        ("given_name_kana", pa.string()),
        ("birth_date", pa.date32()),
        ("sex", pa.uint8()),
        ("address_town", pa.string()),
        ("address_block", pa.string()),
        ("moving_to", pa.string()),
        ("cancels", pa.int64()),
    ]
)
"""The change table of docs/changes.md, as `generate_changes` returns it."""

NATIONAL_VOLUMES: Final[Mapping[str, int]] = MappingProxyType(
    {
        "birth": 800_000,
        "death": 1_400_000,
        "move_out": 5_700_000,  # people moving between municipalities: as many move_in
        "move_within": 4_000_000,
        "name_change": 600_000,
        "move_abroad": 100_000,
        "return_from_abroad": 80_000,
        "card_applied": 5_000_000,
        "card_issued": 4_500_000,
        "official_correction": 50_000,
    }
)
"""Changes in a year for the whole nation (128,066,211 residents), per reason."""

REASON_NAMES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "birth": "出生",
        "death": "死亡",
        "move_out": "転出",
        "move_in": "転入",
        "move_within": "転居",
        "name_change": "氏名変更",
        "move_abroad": "国外転出",
        "return_from_abroad": "国外からの転入",
        "card_applied": "個人番号カード交付申請",
        "card_issued": "個人番号カード交付",
        "official_correction": "職権修正",
    }
)
"""The reasons `generate_changes` draws, in summary order, with their 異動事由."""
_REASONS: Final = tuple(REASON_NAMES)

SEQUENCE_BASE: Final = 10_000_000
"""A municipality's sequence numbers of `year` are `year * SEQUENCE_BASE + n`, n from 1."""

MY_NUMBER_SHARE: Final = 0.10
"""The share of records naming their subject by `my_number` rather than `resident_code`."""

_MAX_AGE: Final = 110
_AGES: Final = np.arange(_MAX_AGE + 1, dtype=np.float64)
_MARRIAGE_SHARE: Final = 0.85
_MARRIAGE_WOMEN: Final = 0.95
_RETRIES: Final = 16
_NULL_DATE: Final = np.iinfo(np.int32).min
_EPOCH: Final = dt.date(1970, 1, 1)

# Month weights (January first). Moves: March–April carry about 30 % of the year's moves.
_MOVE_MONTHS: Final = (1.0, 1.0, 2.4, 1.9, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
_DEATH_MONTHS: Final = (1.25, 1.1, 1.05, 1.0, 0.95, 0.9, 0.9, 0.95, 0.9, 0.95, 1.0, 1.15)


def _bump(age: Floats, centre: float, width: float) -> Floats:
    out: Floats = np.exp(-(((age - centre) / width) ** 2))
    return out


# Relative yearly rates by age (0..110); the drawn counts follow rate × residents of that age.
_DEATH_RATE: Final[Floats] = np.minimum(
    0.0003 + 0.4 * np.exp(0.09 * (_AGES - 100)) + 0.002 * (_AGES == 0), 0.6
)
_MOVE_RATE: Final[Floats] = (
    0.015 + 0.10 * _bump(_AGES, 25, 6) + 0.03 * _bump(_AGES, 35, 10) + 0.03 * _bump(_AGES, 0, 5)
)
_MOVE_WITHIN_RATE: Final[Floats] = 0.015 + 0.06 * _bump(_AGES, 28, 8) + 0.02 * _bump(_AGES, 0, 6)
_ABROAD_RATE: Final[Floats] = 0.0003 + 0.003 * _bump(_AGES, 30, 8)
_MARRIAGE_RATE: Final[Floats] = np.select(
    [_AGES < 18, _AGES < 20, _AGES < 25, _AGES < 40, _AGES < 50],
    [0.0, 0.03, 0.3, 1.0, 0.25],
    0.05,
)
_RENAME_RATE: Final[Floats] = np.where(_AGES < 15, 0.1, 1.0)
_EVEN_RATE: Final[Floats] = np.ones_like(_AGES)


def scaled_volumes(residents: int) -> dict[str, int]:
    """NATIONAL_VOLUMES scaled to `residents` and rounded half up, per reason."""
    return {
        reason: (2 * national * residents + NATION_POPULATION) // (2 * NATION_POPULATION)
        for reason, national in NATIONAL_VOLUMES.items()
    }


def _days(date: dt.date) -> int:
    return (date - _EPOCH).days


# --------------------------------------------------------------------------- the registry


def _codes(column: pa.ChunkedArray, name: str) -> tuple[Codes, pa.Array]:
    """A dictionary column's codes (in its index type, zero-copy for one chunk) and its
    dictionary; the column's chunks share the dictionary (unified first)."""
    if column.null_count:
        raise ValueError(f"the registry's {name} column has nulls")
    if not column.num_chunks:
        return np.zeros(0, np.uint32), pa.array([], pa.string())
    codes = [c.indices.to_numpy() for c in column.chunks]
    return (codes[0] if len(codes) == 1 else np.concatenate(codes)), column.chunk(0).dictionary


def _numbers(column: pa.ChunkedArray, name: str) -> Codes:
    """A column's values (dates as days since 1970), zero-copy for one chunk."""
    if column.null_count:
        raise ValueError(f"the registry's {name} column has nulls")
    if column.type == pa.date32():
        column = pa.chunked_array([c.view(pa.int32()) for c in column.chunks], pa.int32())
    values = [c.to_numpy() for c in column.chunks] or [np.zeros(0, np.int32)]
    return values[0] if len(values) == 1 else np.concatenate(values)


class _Column:
    """A dictionary column of the registry read by value: the registry's dictionaries repeat
    values (an entry per name and reading, per town of each municipality), so its codes are
    read as those of the distinct values (`dictionary`), in first-seen order."""

    def __init__(self, codes: Codes, dictionary: pa.Array) -> None:
        self.codes = codes
        self.dictionary = pc.unique(dictionary)
        self._canonical = pc.index_in(dictionary, self.dictionary).to_numpy().astype(np.int64)

    def __getitem__(self, rows: Codes) -> Ints:
        out: Ints = self._canonical[self.codes[rows]]
        return out


def _is(codes: Codes, dictionary: pa.Array, value: str) -> Bools:
    """Per row, whether its value is `value`."""
    hits = np.flatnonzero(pc.equal(dictionary, value).to_numpy(zero_copy_only=False))
    if len(hits) == 1:
        out: Bools = codes == hits[0]
        return out
    table = np.zeros(len(dictionary), bool)
    table[hits] = True
    out = table[codes]
    return out


@dataclass
class _Residents:
    """The registry's columns as numpy codes into its dictionaries (zero-copy where they can
    be), and the pools the draws take from."""

    residents: int  # in scope, whatever their status: what the volumes scale by
    family: _Column
    family_kana: _Column
    given: _Column
    given_kana: _Column
    birth: Codes  # days since 1970
    sex: Codes
    municipality: Codes  # the municipality's rank in code order
    town: _Column
    block: _Column
    codes: list[str]  # municipality codes in code order
    prefecture_of: Ints  # per municipality rank: its prefecture's number, in code order
    pool: Ints  # rows of status resident in scope, by municipality
    pool_start: Ints  # per municipality rank: where its rows start in `pool` (and end: +1)
    eligible: Bools  # per row: in `pool` and born before the year (the subjects)
    abroad: Ints  # rows of status moved_abroad in scope, abroad since before the year
    card_none: Bools
    card_applied: Bools

    def has_residents(self, municipality: Codes) -> Bools:
        out: Bools = self.pool_start[municipality + 1] > self.pool_start[municipality]
        return out


_COLUMNS: Final = (
    "family_name",
    "family_name_kana",
    "given_name",
    "given_name_kana",
    "municipality_code",
    "prefecture",
    "address_town",
    "address_block",
    "status",
    "card_state",
)


def _read(registry: Registry, prefecture: str | None, year_start: int) -> _Residents:
    table = registry.to_arrow([*_COLUMNS, "birth_date", "sex", "status_date"])
    table = table.unify_dictionaries()
    dictionaries: dict[str, pa.Array] = {}
    codes: dict[str, Codes] = {}
    for name in _COLUMNS:
        codes[name], dictionaries[name] = _codes(table[name], name)

    def of(name: str, value: str) -> Bools:
        return _is(codes[name], dictionaries[name], value)

    residents = len(registry)
    resident = of("status", "resident")
    abroad = of("status", "moved_abroad")
    if prefecture is not None:
        in_scope = of("prefecture", prefecture)
        residents = int(np.count_nonzero(in_scope))
        if not residents:
            raise ValueError(f"the registry has no residents in {prefecture!r}")
        resident &= in_scope
        abroad &= in_scope
    # Municipalities by rank in code order, so that a prefecture's are consecutive.
    names = [str(c) for c in dictionaries["municipality_code"].to_pylist()]
    ordered = sorted(set(names))
    municipality = codes["municipality_code"]
    if names != ordered:
        rank = {c: i for i, c in enumerate(ordered)}
        municipality = np.array([rank[c] for c in names], np.uint16)[municipality]
    prefectures = {c: i for i, c in enumerate(sorted({c[:2] for c in ordered}))}
    prefecture_of = np.array([prefectures[c[:2]] for c in ordered], np.int64)

    pool = np.flatnonzero(resident)
    of_pool = municipality[pool]
    if np.any(of_pool[1:] < of_pool[:-1]):  # a generated registry is in code order already
        by_municipality = np.argsort(of_pool, kind="stable")
        pool, of_pool = pool[by_municipality], of_pool[by_municipality]
        del by_municipality
    pool_start = np.concatenate([[0], np.cumsum(np.bincount(of_pool, minlength=len(ordered)))])
    del of_pool
    birth = _numbers(table["birth_date"], "birth_date")
    abroad_rows = np.flatnonzero(abroad)
    status_date = table["status_date"].take(abroad_rows).cast(pa.int32())
    since = pc.fill_null(pc.less(status_date, year_start), True).to_numpy(zero_copy_only=False)
    return _Residents(
        residents=residents,
        family=_Column(codes["family_name"], dictionaries["family_name"]),
        family_kana=_Column(codes["family_name_kana"], dictionaries["family_name_kana"]),
        given=_Column(codes["given_name"], dictionaries["given_name"]),
        given_kana=_Column(codes["given_name_kana"], dictionaries["given_name_kana"]),
        birth=birth,
        sex=_numbers(table["sex"], "sex"),
        municipality=municipality,
        town=_Column(codes["address_town"], dictionaries["address_town"]),
        block=_Column(codes["address_block"], dictionaries["address_block"]),
        codes=ordered,
        prefecture_of=prefecture_of,
        pool=pool,
        pool_start=pool_start.astype(np.int64),
        eligible=resident & (birth < year_start),
        abroad=abroad_rows[since],
        card_none=of("card_state", "none"),
        card_applied=of("card_state", "applied"),
    )


# --------------------------------------------------------------------------- the records


class _Changes:
    """The records, one part per `add`: columns of codes into the registry's dictionaries (or
    dates, or sex) that the part gives; the rest of its columns are null."""

    COLUMNS: Final = (
        "family",
        "family_kana",
        "given",
        "given_kana",
        "birth",
        "sex",
        "town",
        "block",
        "moving_to",
    )

    def __init__(self) -> None:
        self.parts: list[tuple[str, dict[str, Codes]]] = []

    def add(
        self,
        reason: str,
        municipality: Codes,
        effective: Codes,
        reported: Codes,
        subject: Codes | None = None,
        **values: Codes,
    ) -> None:
        unknown = set(values) - set(self.COLUMNS)
        if unknown:
            raise TypeError(f"unknown change columns {sorted(unknown)}")
        if len(municipality):
            part = {"municipality": municipality, "effective": effective, "reported": reported}
            if subject is not None:
                part["subject"] = subject
            self.parts.append((reason, part | values))

    def __len__(self) -> int:
        return sum(len(part["municipality"]) for _, part in self.parts)

    def column(self, name: str, null: int, at: Ints | None = None, dtype: type = np.int32) -> Codes:
        """Column `name` of every record (`null` where a part does not give it), as `dtype`,
        in the order added, or each record placed at its position in `at`."""
        out: Codes = np.full(len(self), null, dtype)
        start = 0
        for _, part in self.parts:
            n = len(part["municipality"])
            if name in part:
                out[slice(start, start + n) if at is None else at[start : start + n]] = part[name]
            start += n
        return out

    def reasons(self, at: Ints) -> Codes:
        out = np.empty(len(self), np.int8)
        start = 0
        for reason, part in self.parts:
            n = len(part["municipality"])
            out[at[start : start + n]] = _REASONS.index(reason)
            start += n
        return out


# --------------------------------------------------------------------------- the draws


@dataclass
class _Year:
    year: int
    rng: np.random.Generator
    start: int  # 1 January, days since 1970-01-01
    days: int  # days in the year
    months: Ints  # per day of the year: its month, 0..11

    @classmethod
    def of(cls, year: int, rng: np.random.Generator) -> _Year:
        first, following = dt.date(year, 1, 1), dt.date(year + 1, 1, 1)
        dates = np.arange(np.datetime64(first, "D"), np.datetime64(following, "D"))
        months = dates.astype("datetime64[M]").astype(np.int64) % 12
        return cls(year, rng, _days(first), len(dates), months)

    @property
    def end(self) -> int:
        """31 December, days since 1970-01-01."""
        return self.start + self.days - 1

    def dates(self, n: int, months: Sequence[float] | None = None, last: int | None = None) -> Ints:
        """`n` days (since 1970) of the year up to day `last` of it, weighted by month (or
        evenly)."""
        last = self.days - 1 if last is None else last
        if months is None:
            out: Ints = self.rng.integers(self.start, self.start + last + 1, n)
            return out
        weights = np.asarray(months)[self.months[: last + 1]]
        out = self.rng.choice(last + 1, n, p=weights / weights.sum()) + self.start
        return out

    def delay(self, n: int, most: int, p: float = 0.2) -> Ints:
        """Days between an event and its report: 0..`most`, mostly a few."""
        out: Ints = np.minimum(self.rng.geometric(p, n) - 1, most)
        return out

    def clip(self, days: Ints) -> Ints:
        out: Ints = np.clip(days, self.start, self.end)
        return out


def _capped_multinomial(rng: np.random.Generator, k: int, weights: Floats, cap: Ints) -> Ints:
    """`k` draws over groups in proportion to `weights`, none above its `cap` (the excess is
    drawn again over the groups with room)."""
    out = np.zeros(len(weights), np.int64)
    left = min(k, int(cap.sum()))
    while left > 0:
        w = np.where(out < cap, weights, 0.0)
        if w.sum() <= 0:
            w = (out < cap).astype(np.float64)
        taken = np.minimum(out + rng.multinomial(left, w / w.sum()), cap)
        left -= int((taken - out).sum())
        out = taken
    return out


def _subjects(
    people: _Residents, year: _Year, demands: Sequence[tuple[int, Floats, int | None]]
) -> list[Ints]:
    """Disjoint sets of subjects among the eligible, one per demand (count, rate by age, sex or
    None for both), drawn by age and sex: each (age, sex) group gives a demand in proportion to
    the rate × its residents, never more residents than it has."""
    rng, groups = year.rng, 2 * (_MAX_AGE + 1)
    midyear = year.start + year.days // 2
    # In place: the nation's column is 128 M values. 1461 days are 4 years.
    age = np.subtract(midyear, people.birth, dtype=np.int32)
    age *= 4
    age //= 1461
    np.clip(age, 0, _MAX_AGE, out=age)
    age *= 2
    age += people.sex == 2  # parity: 0 male, 1 female
    group = age.astype(np.uint16)
    del age
    group[~people.eligible] = groups
    sizes = np.bincount(group, minlength=groups + 1)[:groups]
    room = sizes.copy()
    counts = []
    for k, rate, sex in demands:
        weights = np.repeat(rate, 2) * sizes
        if sex is not None:
            weights[2 - sex :: 2] = 0.0
        c = _capped_multinomial(rng, k, weights, room)
        room -= c
        counts.append(c)
    per_group = np.stack(counts, axis=1)
    order = np.argsort(group, kind="stable")  # a radix sort: the groups fit 16 bits
    del group
    starts = np.concatenate([[0], np.cumsum(sizes)])
    chosen: list[list[Ints]] = [[] for _ in demands]
    for g in np.flatnonzero(per_group.sum(axis=1)):
        picked = order[starts[g] + rng.choice(sizes[g], int(per_group[g].sum()), replace=False)]
        bounds = np.concatenate([[0], np.cumsum(per_group[g])])
        for t in range(len(demands)):
            chosen[t].append(picked[bounds[t] : bounds[t + 1]])
    # Shuffled: the groups were visited by age, and a reason may keep only its first ones.
    return [rng.permutation(np.concatenate(c)) if c else np.zeros(0, np.int64) for c in chosen]


def _distinct(values: Ints) -> Ints:
    """The distinct values, sorted (a sort: faster than np.unique's hash for these sizes)."""
    values = np.sort(values)
    out: Ints = values[np.concatenate([[True], values[1:] != values[:-1]])]
    return out


def _first(found: Bools, k: int) -> Ints:
    """The positions of the first `k` found: a reason draws a few spare subjects, for those
    it finds no new value for."""
    out: Ints = np.flatnonzero(found)[:k]
    return out


def _spare(k: int) -> int:
    return k + k // 20 + 3 if k else 0


class _Draw:
    """The year's draws over one registry scope; each reason adds its records to `changes`."""

    def __init__(self, people: _Residents, year: _Year) -> None:
        self.p = people
        self.y = year
        self.rng = year.rng
        self.changes = _Changes()
        self._readings: tuple[Ints, int] | None = None

    # -- where values come from ------------------------------------------------------------

    def resident_of(self, municipality: Codes) -> Ints:
        """A random resident of each municipality (which has residents)."""
        start = self.p.pool_start[municipality]
        size = self.p.pool_start[municipality + 1] - start
        out: Ints = self.p.pool[start + (self.rng.random(len(start)) * size).astype(np.int64)]
        return out

    def residents_where(self, n: int, accept: Callable[[Ints], Bools]) -> Ints:
        """`n` residents of the scope (with replacement) that `accept`; any resident where
        too few do."""
        p, rng = self.p, self.rng
        if n == 0:
            return np.zeros(0, np.int64)
        found: list[Ints] = []
        have = 0
        for _ in range(_RETRIES):
            if have >= n:
                break
            rows = p.pool[rng.integers(0, len(p.pool), 2 * (n - have) + 16)]
            rows = rows[accept(rows)]
            found.append(rows)
            have += len(rows)
        found.append(p.pool[rng.integers(0, len(p.pool), max(n - have, 0))])
        return np.concatenate(found)[:n]

    def sample(self, mask: Bools, k: int) -> Ints:
        """`k` distinct rows where `mask` (all of them where fewer), uniformly."""
        rng, size = self.rng, len(mask)
        count = int(np.count_nonzero(mask))
        if count <= k:
            return np.flatnonzero(mask)
        if count < 4 * k or count < 1_000_000:
            rows = np.flatnonzero(mask)
            return rows[rng.choice(count, k, replace=False)]
        # Rows drawn at random until k distinct fall in the mask: no pass over the mask's
        # rows; by symmetry every k of them are as likely.
        found = np.zeros(0, np.int64)
        while len(found) < k:
            draws = rng.integers(0, size, int((k - len(found)) * 1.2 * size / count) + 64)
            found = _distinct(np.concatenate([found, draws[mask[draws]]]))
        out: Ints = found[rng.choice(len(found), k, replace=False)]
        return out

    def redraw(
        self, n: int, draw: Callable[[Ints], Ints], same: Callable[[Ints, Ints], Bools]
    ) -> tuple[Ints, Bools]:
        """Rows `draw(i)` for the positions i of 0..n-1, drawn again while `same(i, rows)`
        (a few times); and whether each row finally differs."""
        everyone = np.arange(n)
        rows = draw(everyone)
        again = everyone[same(everyone, rows)]
        for _ in range(_RETRIES):
            if not len(again):
                break
            rows[again] = draw(again)
            again = again[same(again, rows[again])]
        differs = np.ones(n, bool)
        differs[again] = False
        return rows, differs

    def new_address(self, rows: Ints) -> tuple[Ints, Bools]:
        """Residents of each row's municipality living elsewhere than the row (whose address
        the row takes); and whether one was found."""
        p, municipality = self.p, self.p.municipality[rows]
        return self.redraw(
            len(rows),
            lambda i: self.resident_of(municipality[i]),
            lambda i, r: (p.town[r] == p.town[rows[i]]) & (p.block[r] == p.block[rows[i]]),
        )

    def of_sex(self, sex: Codes, accept: Callable[[Ints], Bools] | None = None) -> Ints:
        """A resident of each given sex (and that `accept`)."""
        p, out = self.p, np.empty(len(sex), np.int64)
        for s in np.unique(sex).tolist():

            def fits(rows: Ints, s: int = s) -> Bools:
                ok: Bools = p.sex[rows] == s
                return ok if accept is None else ok & accept(rows)

            mask = sex == s
            out[mask] = self.residents_where(int(mask.sum()), fits)
        return out

    def other_reading(self, rows: Ints) -> tuple[Ints, Bools]:
        """Another reading of each row's given name, as recorded for someone (among 2 M
        residents drawn); and whether there is one."""
        p, rng = self.p, self.rng
        if self._readings is None:
            sample = p.pool[rng.integers(0, len(p.pool), min(len(p.pool), 2_000_000))]
            width = len(p.given_kana.dictionary)
            known = _distinct(p.given[sample] * width + p.given_kana[sample])
            self._readings = (known, width)
        known, width = self._readings
        own = p.given[rows] * width + p.given_kana[rows]
        pairs = _distinct(np.concatenate([known, own]))
        lo = np.searchsorted(pairs, own // width * width, "left")
        hi = np.searchsorted(pairs, (own // width + 1) * width, "left")
        found = hi - lo >= 2
        # One of the others: a position among hi - lo - 1, stepping over the row's own pair.
        pick = lo + (rng.random(len(rows)) * np.maximum(hi - lo - 1, 1)).astype(np.int64)
        pick += pick >= np.searchsorted(pairs, own)
        reading = pairs[np.minimum(pick, len(pairs) - 1)] % width
        return np.where(found, reading, -1), found

    # -- the reasons -----------------------------------------------------------------------

    def births(self, n: int) -> None:
        """Children of a resident aged 20–44, named like a resident under 30 of their sex."""
        p, rng, y = self.p, self.rng, self.y
        if n == 0 or not len(p.pool):
            return
        parent = self.residents_where(
            n, lambda r: (y.start - p.birth[r] >= 20 * 365) & (y.start - p.birth[r] < 45 * 365)
        )
        sex = rng.choice(np.array([1, 2], np.int64), n, p=[0.512, 0.488])
        named = self.of_sex(sex, lambda r: y.start - p.birth[r] < 30 * 365)
        born = y.dates(n)
        self.changes.add(
            "birth",
            p.municipality[parent],
            born,
            y.clip(born + y.delay(n, 14)),
            family=p.family[parent],
            family_kana=p.family_kana[parent],
            given=p.given[named],
            given_kana=p.given_kana[named],
            birth=born,
            sex=sex,
            town=p.town[parent],
            block=p.block[parent],
        )

    def deaths(self, rows: Ints) -> None:
        died = self.y.dates(len(rows), _DEATH_MONTHS)
        reported = self.y.clip(died + self.y.delay(len(rows), 7, 0.35))
        self.changes.add("death", self.p.municipality[rows], died, reported, rows)

    def moves_abroad(self, rows: Ints) -> Ints:
        """The emigrations (reported up to 14 days before leaving); returns the days they
        leave."""
        left = self.y.dates(len(rows), _MOVE_MONTHS)
        reported = self.y.clip(left - self.y.delay(len(rows), 14))
        self.changes.add("move_abroad", self.p.municipality[rows], left, reported, rows)
        return left

    def returns(self, n: int, emigrants: Ints, left: Ints) -> None:
        """Residents abroad come back to their last municipality; the year's own emigrants
        make up the rest, back at least a day after they left."""
        p, rng, y = self.p, self.rng, self.y
        abroad = p.abroad[p.has_residents(p.municipality[p.abroad])]
        rows = abroad[rng.choice(len(abroad), min(n, len(abroad)), replace=False)]
        back = y.dates(len(rows))
        can = np.flatnonzero(left < y.end)
        more = can[rng.choice(len(can), min(n - len(rows), len(can)), replace=False)]
        after = left[more] + 1
        rows = np.concatenate([rows, emigrants[more]])
        back = np.concatenate(
            [back, after + (rng.random(len(more)) * (y.end + 1 - after)).astype(np.int64)]
        )
        home = p.municipality[rows]
        address = self.resident_of(home)
        self.changes.add(
            "return_from_abroad",
            home,
            back,
            y.clip(back + y.delay(len(rows), 14)),
            rows,
            town=p.town[address],
            block=p.block[address],
        )

    def moves(self, rows: Ints, k: int) -> None:
        """`k` of `rows` move to another municipality (its residents' address), half of them
        within their prefecture where the registry holds several."""
        p, rng, y = self.p, self.rng, self.y
        if np.count_nonzero(np.diff(p.pool_start)) < 2:
            return  # one municipality: nowhere to move to
        origin = p.municipality[rows]
        # The pool is in code order, so each prefecture's residents are one range of it.
        prefectures = np.arange(int(p.prefecture_of.max()) + 1)
        first = p.pool_start[np.searchsorted(p.prefecture_of, prefectures, "left")]
        after = p.pool_start[np.searchsorted(p.prefecture_of, prefectures, "right")]
        lo, hi = first[p.prefecture_of[origin]], after[p.prefecture_of[origin]]
        near = rng.random(len(rows)) < 0.5 if len(prefectures) > 1 else np.zeros(len(rows), bool)
        near &= hi - lo > p.pool_start[origin + 1] - p.pool_start[origin]

        def draw(i: Ints) -> Ints:
            u = rng.random(len(i))
            anywhere = (u * len(p.pool)).astype(np.int64)
            close = lo[i] + (u * (hi[i] - lo[i])).astype(np.int64)
            out: Ints = p.pool[np.where(near[i], close, anywhere)]
            return out

        target, moved_away = self.redraw(
            len(rows), draw, lambda i, r: p.municipality[r] == origin[i]
        )
        kept = _first(moved_away, k)
        rows, origin, target = rows[kept], origin[kept], target[kept]
        n = len(rows)
        moved = y.dates(n, _MOVE_MONTHS, last=y.days - 2)
        out_reported = y.clip(moved - y.delay(n, 14))
        in_reported = np.maximum(np.minimum(moved + y.delay(n, 14, 0.15), y.end), out_reported + 1)
        destination = p.municipality[target]
        self.changes.add("move_out", origin, moved, out_reported, rows, moving_to=destination)
        self.changes.add(
            "move_in",
            destination,
            moved,
            in_reported,
            rows,
            town=p.town[target],
            block=p.block[target],
        )

    def moves_within(self, rows: Ints, k: int) -> None:
        p, y = self.p, self.y
        address, found = self.new_address(rows)
        kept = _first(found, k)
        rows, address = rows[kept], address[kept]
        moved = y.dates(len(rows), _MOVE_MONTHS)
        self.changes.add(
            "move_within",
            p.municipality[rows],
            moved,
            y.clip(moved + y.delay(len(rows), 14)),
            rows,
            town=p.town[address],
            block=p.block[address],
        )

    def marriages(self, rows: Ints, k: int) -> None:
        """A new family name: the spouse's, a resident of the municipality (or, one in five,
        of anywhere in scope)."""
        p, rng = self.p, self.rng

        def spouse_of(i: Ints) -> Ints:
            near = self.resident_of(p.municipality[rows[i]])
            anywhere = p.pool[rng.integers(0, len(p.pool), len(i))]
            out: Ints = np.where(rng.random(len(i)) < 0.8, near, anywhere)
            return out

        spouse, differs = self.redraw(
            len(rows), spouse_of, lambda i, r: p.family[r] == p.family[rows[i]]
        )
        kept = _first(differs, k)
        rows, spouse = rows[kept], spouse[kept]
        day = self.y.dates(len(rows))
        self.changes.add(
            "name_change",
            p.municipality[rows],
            day,
            day,
            rows,
            family=p.family[spouse],
            family_kana=p.family_kana[spouse],
        )

    def renamings(self, rows: Ints, k: int) -> None:
        """Half a reading of the given name only (where it has another), the rest a given name
        (with its reading) of someone of the same sex."""
        p, rng = self.p, self.rng
        reading, found = self.other_reading(rows)
        by_reading = found & (rng.random(len(rows)) < 0.5)
        donor, differs = self.redraw(
            len(rows),
            lambda i: self.of_sex(p.sex[rows[i]]),
            lambda i, r: p.given[r] == p.given[rows[i]],
        )
        kept = _first(by_reading | differs, k)
        rows, reading, by_reading, donor = rows[kept], reading[kept], by_reading[kept], donor[kept]
        day = self.y.dates(len(rows))
        self.changes.add(
            "name_change",
            p.municipality[rows],
            day,
            day,
            rows,
            given=np.where(by_reading, -1, p.given[donor]),
            given_kana=np.where(by_reading, reading, p.given_kana[donor]),
        )

    def corrections(self, rows: Ints) -> None:
        """Of a birth date (by up to 30 days, still before the year), a reading or an address;
        where no other reading or address is found, of the birth date."""
        p, rng, n = self.p, self.rng, len(rows)
        kind = rng.choice(3, n, p=[0.4, 0.3, 0.3])
        reading, has_reading = self.other_reading(rows)
        address, has_address = self.new_address(rows)
        kind[(kind == 1) & ~has_reading] = 0
        kind[(kind == 2) & ~has_address] = 0
        shift = rng.integers(1, 31, n)
        later = p.birth[rows] + shift
        birth = np.where((rng.random(n) < 0.5) & (later < self.y.start), later, later - 2 * shift)
        day = self.y.dates(n)
        self.changes.add(
            "official_correction",
            p.municipality[rows],
            day,
            day,
            rows,
            birth=np.where(kind == 0, birth, _NULL_DATE),
            given_kana=np.where(kind == 1, reading, -1),
            town=np.where(kind == 2, p.town[address], -1),
            block=np.where(kind == 2, p.block[address], -1),
        )

    def cards(self, applications: int, issuances: int, excluded: Ints) -> None:
        """Applications by residents without a card; issuances to applicants of earlier years
        and to this year's once their application is 14–75 days old."""
        p, rng, y = self.p, self.rng, self.y
        free = p.eligible.copy()
        free[excluded] = False
        rows = np.sort(self.sample(free & p.card_none, applications))
        applied = y.dates(len(rows))
        self.changes.add("card_applied", p.municipality[rows], applied, applied, rows)
        waiting = np.flatnonzero(free & p.card_applied)
        del free
        ready = applied + rng.integers(14, 76, len(rows))
        fresh, ready = rows[ready <= y.end], ready[ready <= y.end]
        either = len(waiting) + len(fresh)
        pick = np.sort(rng.choice(either, min(issuances, either), replace=False))
        old, new = pick[pick < len(waiting)], pick[pick >= len(waiting)] - len(waiting)
        rows = np.concatenate([waiting[old], fresh[new]])
        issued = np.concatenate([y.dates(len(old)), ready[new]])
        self.changes.add("card_issued", p.municipality[rows], issued, issued, rows)


# --------------------------------------------------------------------------- the table


def _strings(codes: Codes, dictionary: pa.Array) -> pa.Array:
    indices = pa.array(codes.astype(np.int32, copy=False), pa.int32(), mask=codes < 0)
    return pa.DictionaryArray.from_arrays(indices, dictionary).cast(pa.string())


def _dates(days: Codes) -> pa.Array:
    return pa.array(days.astype(np.int32), pa.int32(), mask=days == _NULL_DATE).view(pa.date32())


def _identifiers(registry: Registry, name: str, subject: Codes, given: Bools) -> pa.Array:
    """The subjects' `name` where `given`, else null: one registry column at a time (the
    nation's identifiers take 2 GB a column)."""
    column = registry.to_arrow([name])[name]
    taken = column.take(pa.array(subject, mask=~given))
    return taken.combine_chunks().cast(pa.string())


def _table(registry: Registry, draw: _Draw) -> pa.Table:
    changes, people, y = draw.changes, draw.p, draw.y
    n = len(changes)
    if not n:
        return CHANGE_SCHEMA.empty_table()
    # Applied in reported order, then by municipality (each a radix sort of 16 bits: the
    # nation's 28 M records take a second); within a municipality's day, by reason.
    municipality = changes.column("municipality", 0, dtype=np.uint16)
    day = (changes.column("reported", y.start) - y.start).astype(np.uint16)
    order = np.argsort(municipality, kind="stable")
    order = order[np.argsort(day[order], kind="stable")]
    at = np.empty(n, np.int64)
    at[order] = np.arange(n)  # where each record goes
    municipality, day = municipality[order], day[order]
    del order
    # Sequence numbers count each municipality's records in that order: those of its earlier
    # days, then its own before it on the day. A cell is a (day, municipality).
    m = len(people.codes)
    cell = day.astype(np.int64) * m + municipality
    per_cell = np.bincount(cell, minlength=y.days * m)
    by_day = per_cell.reshape(y.days, m)
    earlier_days = (np.cumsum(by_day, axis=0) - by_day).ravel()
    cell_start = np.cumsum(per_cell) - per_cell
    sequence = earlier_days[cell] + (np.arange(n) - cell_start[cell]) + 1
    sequence += y.year * SEQUENCE_BASE
    del cell, day

    subject = changes.column("subject", -1, at)
    known = subject >= 0
    by_my_number = known & (y.rng.random(n) < MY_NUMBER_SHARE)
    codes = pa.array(people.codes, pa.string())
    sex = changes.column("sex", 0, at, np.uint8)
    arrays = [
        _strings(municipality, codes),
        pa.array(sequence, pa.int64()),
        _strings(changes.reasons(at), pa.array(_REASONS, pa.string())),
        _dates(changes.column("effective", _NULL_DATE, at)),
        _dates(changes.column("reported", _NULL_DATE, at)),
        _identifiers(registry, "resident_code", subject, known & ~by_my_number),
        _identifiers(registry, "my_number", subject, by_my_number),
        _strings(changes.column("family", -1, at), people.family.dictionary),
        _strings(changes.column("family_kana", -1, at), people.family_kana.dictionary),
        _strings(changes.column("given", -1, at), people.given.dictionary),
        _strings(changes.column("given_kana", -1, at), people.given_kana.dictionary),
        _dates(changes.column("birth", _NULL_DATE, at)),
        pa.array(sex, pa.uint8(), mask=sex == 0),
        _strings(changes.column("town", -1, at), people.town.dictionary),
        _strings(changes.column("block", -1, at), people.block.dictionary),
        _strings(changes.column("moving_to", -1, at), codes),
        pa.nulls(n, pa.int64()),
    ]
    return pa.Table.from_arrays(arrays, schema=CHANGE_SCHEMA)


def generate_changes(
    registry: Registry, year: int, *, prefecture: str | None = None, seed: int = 0
) -> pa.Table:
    """A realistic year of changes (異動) to `registry`: the change table of docs/changes.md
    (CHANGE_SCHEMA), ordered by (reported_date, municipality, sequence), deterministic for
    (`seed`, `year`). With `prefecture`, only its residents and municipalities take part and the
    volumes scale by its residents."""
    if isinstance(year, bool) or not isinstance(year, int) or not 1 <= year <= 9998:
        raise ValueError(f"year must be an int from 1 to 9998, got {year!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    y = _Year.of(year, np.random.default_rng([seed, year]))
    people = _read(registry, prefecture, y.start)
    volumes = scaled_volumes(people.residents)
    names = volumes["name_change"]
    married = int(names * _MARRIAGE_SHARE + 0.5)
    wives = int(married * _MARRIAGE_WOMEN + 0.5)
    deaths, abroad, movers, within, women, men, renamed, corrected = _subjects(
        people,
        y,
        [
            (volumes["death"], _DEATH_RATE, None),
            (volumes["move_abroad"], _ABROAD_RATE, None),
            (_spare(volumes["move_out"]), _MOVE_RATE, None),
            (_spare(volumes["move_within"]), _MOVE_WITHIN_RATE, None),
            (_spare(wives), _MARRIAGE_RATE, 2),
            (_spare(married - wives), _MARRIAGE_RATE, 1),
            (_spare(names - married), _RENAME_RATE, None),
            (volumes["official_correction"], _EVEN_RATE, None),
        ],
    )
    draw = _Draw(people, y)
    draw.births(volumes["birth"])
    draw.deaths(deaths)
    left = draw.moves_abroad(abroad)
    draw.returns(volumes["return_from_abroad"], abroad, left)
    draw.moves(movers, volumes["move_out"])
    draw.moves_within(within, volumes["move_within"])
    draw.marriages(women, wives)
    draw.marriages(men, married - wives)
    draw.renamings(renamed, names - married)
    draw.corrections(corrected)
    # Cards never for the dead, emigrants or movers (whose municipality changes).
    draw.cards(
        volumes["card_applied"], volumes["card_issued"], np.concatenate([deaths, abroad, movers])
    )
    return _table(registry, draw)
