"""The README as a newcomer runs it: every command it shows parses, every file it links is in
the repository, and its sample numbers are residents the demo registry really holds."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from juki_engine import Registry
from juki_engine.cli import build_parser
from juki_engine.synthetic import TOYAMA

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def shell_commands() -> list[str]:
    """The commands of the README's `sh` blocks, continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", README, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                commands.append(line)
    return commands


def test_every_juki_command_runs_from_the_venv_and_parses() -> None:
    commands = [c for c in shell_commands() if "juki " in c]
    assert len(commands) >= 10
    for command in commands:
        argv = shlex.split(command)
        assert argv[0] == ".venv/bin/juki", command
        build_parser().parse_args(argv[1:])  # exits (fails the test) on an unknown option


def test_links_and_paths_stay_inside_the_repository() -> None:
    assert "../" not in README
    for target in re.findall(r"\]\(([^)#]+)\)", README):
        assert (ROOT / target).exists(), target
    for path in re.findall(r"`((?:docs|protos|benches|python)/[\w./-]+)`", README):
        assert (ROOT / path).exists(), path


def test_the_sample_numbers_are_residents_of_the_demo_registry() -> None:
    sample = re.search(r"# (\d{12}) is a My Number .*?: (\S+) (\S+),\n# born (\S+)\.", README)
    assert sample is not None
    number, family, given, born = sample.groups()
    codes = set(re.findall(r"--subject (\d{11})\b", README))
    numbers = set(re.findall(r"--subject (\d{12})\b", README))
    demo = Registry.generate(prefecture=TOYAMA)  # what `juki demo` generates (seed 0)
    row = demo.lookup(
        [number], columns=["resident_code", "family_name", "given_name", "birth_date"]
    )
    assert row["found"].to_pylist() == [True]
    assert row["family_name"][0].as_py() == family and row["given_name"][0].as_py() == given
    assert row["birth_date"][0].as_py().isoformat() == born
    assert codes == {row["resident_code"][0].as_py()} and numbers == {number}


@pytest.mark.parametrize("page", sorted(p.name for p in (ROOT / "docs").glob("*.md")))
def test_docs_are_linked_from_the_readme(page: str) -> None:
    assert f"{page}" in README
