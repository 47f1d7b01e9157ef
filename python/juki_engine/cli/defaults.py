"""Where the CLI looks when it is not told: the demo's files and the server's address."""

from __future__ import annotations

import os
from pathlib import Path

DEMO_PATH = Path(os.environ.get("JUKI_DEMO_PATH", "data/demo/toyama"))
"""The demo registry's snapshot (generated there by `juki demo` / `juki serve` if missing)."""
DEMO_DIR = DEMO_PATH.parent
DEMO_CERTS = DEMO_DIR / "certs"
SERVE_AUDIT = DEMO_DIR / "audit"
"""`juki serve`'s audit trail by default."""
DEMO_AUDIT = DEMO_DIR / "demo-audit"
"""`juki demo`'s own audit trail, so that the demo runs beside a `juki serve`."""
DEFAULT_LISTEN = "127.0.0.1:50051"
