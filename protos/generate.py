"""Generate the Python gRPC stubs in `python/juki_engine/_proto` from the .proto files here.

protos/ is the only source of the wire contract; the stubs are committed and
`tests/test_protos.py` checks that regenerating them changes nothing (grpcio-tools is pinned
in pyproject.toml for that).

    python protos/generate.py          # rewrite the stubs
    python protos/generate.py --check  # exit 1 if they are stale
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

PROTOS = Path(__file__).resolve().parent
OUT = PROTOS.parent / "python" / "juki_engine" / "_proto"
PACKAGE = "juki_engine._proto"
# The package's own marker file, kept on regeneration.
INIT = '"""Generated gRPC stubs of protos/ (package juki.v1): run protos/generate.py."""\n'


def generate() -> dict[str, str]:
    """The stubs, {file name: text}, generated from every .proto under protos/."""
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "grpc_tools.protoc",
            f"-I{PROTOS}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *sources,
        ]
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed on {', '.join(sources)}")
        files = {"__init__.py": INIT}
        for path in sorted(Path(tmp).rglob("*.py*")):
            text = path.read_text()
            # protoc writes absolute imports from the proto's own package (juki.v1); the stubs
            # live flat inside juki_engine._proto instead.
            text = re.sub(r"^from juki\.v1 import ", f"from {PACKAGE} import ", text, flags=re.M)
            files[path.name] = text
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the stubs are stale")
    args = parser.parse_args(argv)
    files = generate()
    if args.check:
        stale = [
            name
            for name, text in files.items()
            if not (OUT / name).exists() or (OUT / name).read_text() != text
        ]
        extra = sorted(p.name for p in OUT.glob("*.py*") if p.name not in files)
        if stale or extra:
            print(f"stale stubs in {OUT}: {', '.join(stale + extra)}; run protos/generate.py")
            return 1
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (OUT / name).write_text(text)
    print(f"wrote {', '.join(sorted(files))} to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
