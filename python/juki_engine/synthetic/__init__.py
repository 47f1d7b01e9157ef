"""Synthetic data, deterministic from a seed: the population plan behind `Registry.generate`
(`population`) and the hard cases that matching must get right (`lookalikes`)."""

from juki_engine.synthetic.population import *  # noqa: F403
from juki_engine.synthetic.population import __all__ as _population

__all__ = list(_population)
