"""Sample job inputs drawn from a registry, for the demo, tests and benchmarks.

The pension status check (年金受給権者の現況確認): the pension service holds, per pensioner, the
resident code and the name and birth date on its own records, and asks the registry each year
whether the pensioner is alive and where they live.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from juki_engine.registry import Registry

# Pensioners: born before this date (aged 65 or more at the registry's reference date).
PENSION_BIRTH_LIMIT = dt.date(1961, 1, 1)


def pension_claims(
    registry: Registry,
    count: int,
    seed: int = 0,
    wrong_name_fraction: float = 0.02,
    bad_code_fraction: float = 0.001,
) -> pa.Table:
    """`count` pensioners (whatever their status now) by resident code, with the family name,
    given name and birth date the pension records hold. A share of family names is out of date
    (another pensioner's) and a share of codes was mistyped (last digit off by one, so the check
    digit is wrong), as in a real job's input."""
    rng = np.random.default_rng(seed)
    people = registry.to_arrow(["resident_code", "family_name", "given_name", "birth_date"])
    born = people["birth_date"].combine_chunks()
    pensioners = np.flatnonzero(
        pc.less(born, pa.scalar(PENSION_BIRTH_LIMIT)).to_numpy(zero_copy_only=False)
    )
    if len(pensioners) == 0:
        raise ValueError("the registry holds no one of pension age")
    rows = rng.choice(pensioners, size=count, replace=count > len(pensioners))
    claims = people.take(pa.array(rows))
    del people

    family = claims["family_name"].combine_chunks().cast(pa.string())
    wrong = rng.random(count) < wrong_name_fraction
    family = pc.if_else(pa.array(wrong), family.take(pa.array(rng.permutation(count))), family)

    codes = claims["resident_code"].combine_chunks().cast(pa.string())
    mistyped = rng.random(count) < bad_code_fraction
    last = pc.cast(pc.utf8_slice_codeunits(codes, -1), pa.int8())
    bumped = pc.cast(pc.if_else(pc.equal(last, 9), 0, pc.add(last, 1)), pa.string())
    retyped = pc.binary_join_element_wise(pc.utf8_slice_codeunits(codes, 0, -1), bumped, "")
    codes = pc.if_else(pa.array(mistyped), retyped, codes)
    return pa.table(
        {
            "resident_code": codes,
            "family_name": family,
            "given_name": claims["given_name"].combine_chunks().cast(pa.string()),
            "birth_date": claims["birth_date"],
        }
    )
