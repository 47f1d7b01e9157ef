"""Synthetic data, deterministic from a seed: the population plan behind `Registry.generate`
(`population`), the hard cases that matching must get right (`lookalikes`) and a year of
changes (`changes`)."""

from juki_engine.synthetic.changes import CHANGE_SCHEMA, generate_changes
from juki_engine.synthetic.population import *  # noqa: F403
from juki_engine.synthetic.population import __all__ as _population

__all__ = [*_population, "CHANGE_SCHEMA", "generate_changes"]
