"""Where the CLI looks when it is not told (the demo's files, the server's address), and the
options every client command shares."""

from __future__ import annotations

import argparse
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
DEFAULT_METRICS = "127.0.0.1:9464"
"""`juki serve`'s Prometheus endpoint (9464: the OpenMetrics exporters' customary port)."""


def add_client_options(p: argparse.ArgumentParser) -> None:
    """How a client proves who it is to a server: the agency's certificate and key, the CA."""
    p.add_argument("--cert", help="the agency's client certificate (PEM)")
    p.add_argument("--key", help="its private key (default: the certificate's name with .key)")
    p.add_argument("--ca", help="the CA of the server's certificate (default: ca.pem nearby)")
