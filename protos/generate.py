"""Generate the Python gRPC stubs in `python/juki_engine/_proto` from the .proto files here.

protos/ is the only source of the wire contract; the stubs are committed and
`tests/test_protos.py` checks that regenerating them changes nothing (grpcio-tools is pinned
in pyproject.toml for that).

    python protos/generate.py            # rewrite the stubs
    python protos/generate.py --check    # exit 1 if they are stale
    python protos/generate.py --release  # record the contract as released (protos/README.md)
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from grpc_tools import protoc

PROTOS = Path(__file__).resolve().parent
OUT = PROTOS.parent / "python" / "juki_engine" / "_proto"
PACKAGE = "juki_engine._proto"
# The contract as last released: `buf breaking` checks every change against it.
RELEASED = PROTOS / "released" / "juki.v1.json"
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


def buf() -> str:
    """The Buf CLI that the dev extras install (package buf-bin) beside this interpreter."""
    path = Path(sysconfig.get_path("scripts")) / "buf"
    if not path.exists():
        raise SystemExit(f"{path} is missing: install the dev extras (pip install -e '.[dev]')")
    return str(path)


def release() -> None:
    """Record the contract as it stands as the released one (a Buf image, as indented JSON so
    that a change to it reads as a diff)."""
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "image.json"
        subprocess.run(
            [buf(), "build", str(PROTOS), "--exclude-source-info", "-o", str(image)], check=True
        )
        text = json.dumps(json.loads(image.read_text()), indent=1, ensure_ascii=False) + "\n"
    RELEASED.parent.mkdir(exist_ok=True)
    RELEASED.write_text(text)
    print(f"recorded the released contract in {RELEASED}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the stubs are stale")
    parser.add_argument(
        "--release", action="store_true", help="record the contract as released (for buf breaking)"
    )
    args = parser.parse_args(argv)
    if args.release:
        release()
        return 0
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
