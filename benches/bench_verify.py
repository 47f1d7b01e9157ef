"""Lookup/verify benchmark: juki against DuckDB, Polars and the random-gather limit, one process.

The implementation lives in `juki_engine.bench` so that `juki bench` runs the same code; see
benches/README.md for the options and BENCHMARKS.md for recorded results.
"""

import sys

from juki_engine.bench import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
