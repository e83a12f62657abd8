"""The docs say what is true: docs/usage.md documents every option of every `vgg` command, read from the argument
parser itself, so that a new command or option fails here until the page has it; the test files the docs name
exist."""

from __future__ import annotations

import argparse
import re

import pytest
from conftest import LANES
from helpers import ROOT

from common.cli import build_parser

USAGE = ROOT / "docs" / "usage.md"


def _commands() -> dict[str, argparse.ArgumentParser]:
    """Each `vgg` command's parser by name, as ``vgg --help`` lists them."""
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def _section(text: str, command: str) -> str:
    """usage.md's section on ``vgg COMMAND``: its heading, and the text to the next heading of its level or above."""
    heading = re.search(rf"^(#+) `vgg {command}\b[^\n]*$", text, re.MULTILINE)
    assert heading, f"docs/usage.md has no section headed `vgg {command} ...`"
    level = len(heading[1])
    end = re.compile(rf"^#{{1,{level}}} ", re.MULTILINE).search(text, heading.end())
    return text[heading.start() : end.start() if end else len(text)]


def _mentioned(option: str, text: str) -> bool:
    """``option`` written as itself (``--batch`` is not ``--batch-size``)."""
    return re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text) is not None


@pytest.mark.parametrize("command", list(_commands()))
def test_usage_documents_every_option_of_every_command(command):
    text = USAGE.read_text()
    section = _section(text, command)
    parser = _commands()[command]
    missing = [
        option
        for action in parser._actions
        if not isinstance(action, argparse._HelpAction)
        for option in action.option_strings
        if not _mentioned(option, section)
    ]
    positionals = [a.dest.upper() for a in parser._actions if not a.option_strings]
    missing += [name for name in positionals if not _mentioned(name, section)]
    assert not missing, f"docs/usage.md's section on `vgg {command}` does not mention {missing}"


def test_the_guard_tells_an_option_from_a_longer_one():
    assert _mentioned("--batch", "`--batch N` and `--batch-size`")
    assert not _mentioned("--batch", "`--batch-size N`, `--batch-norm`")
    page = "## `vgg a X`\nA --x\n### part\n--y\n## `vgg b`\n--z\n"
    assert _section(page, "a") == "## `vgg a X`\nA --x\n### part\n--y\n"


def test_every_test_file_the_docs_name_exists():
    named = {m for page in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")] for m in _test_files(page.read_text())}
    assert named, "the docs name no test file"
    missing = sorted(name for name in named if not (ROOT / "tests" / name).is_file())
    assert not missing, f"the docs name test files that do not exist: {missing}"


def _test_files(text: str) -> set[str]:
    return set(re.findall(r"\btest_\w+\.py\b", text))


def test_make_test_runs_every_test_file_once():
    """`make test` runs the suite in several pytest processes (the Makefile says why): every test file is in
    exactly one of them, so a file is never left out nor run twice."""
    recipe = (ROOT / "Makefile").read_text().split("\ntest:", 1)[1].split("\n\n", 1)[0]
    heavy = re.search(r"^HEAVY_TESTS := (.+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert heavy, "the Makefile names its HEAVY_TESTS"
    runs = [line.split("pytest -q", 1)[1].split() for line in recipe.splitlines() if "pytest -q" in line]
    # the first: every file but the heavy ones, in two lanes (tests/conftest.py)
    assert runs[0] == ["-n", "2", "$(addprefix", "--ignore=,$(HEAVY_TESTS))"]
    later = [name for run in runs[1:] for name in run]
    assert sorted(later) == sorted(heavy[1].split()), "each heavy file runs once, after the first process"
    files = {f"tests/{p.name}" for p in (ROOT / "tests").glob("test_*.py")}
    assert set(later) <= files
    # the first process's two lanes name every other file once, so that none falls to the end of a lane unplaced
    in_lanes = [f"tests/{module}.py" for modules in LANES.values() for module in modules]
    assert sorted(in_lanes) == sorted(files - set(later))
