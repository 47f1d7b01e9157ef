"""`python -m juki_engine.cli`: the `juki` command."""

import sys

from juki_engine.cli import main

sys.exit(main())
