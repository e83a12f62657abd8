"""The commands of ``vgg``: each name and the module that holds it, imported only when it is needed.

A command's module has ``HELP`` (its line in ``vgg --help``), ``add_arguments(parser)`` and ``run(args) -> int``
(the exit status); a new command is one line here.
"""

from __future__ import annotations

import importlib
from types import ModuleType

COMMANDS = {
    "summary": "common.cli.summary",
    "train": "common.cli.train",
    "compare": "common.cli.compare",
    "bench": "common.cli.bench",
    "convert": "common.cli.convert",
    "conform": "common.cli.conform",
    "evaluate": "common.cli.evaluate",
    "teach": "common.teach.command",
}


def load(name: str) -> ModuleType:
    """The module of the command ``name``, imported now (with what it needs: a framework only when it runs)."""
    return importlib.import_module(COMMANDS[name])


def named(argv: list[str]) -> str | None:
    """The command ``argv`` runs, where it names one before anything else (``--verbose`` aside); else None."""
    for word in argv:
        if word == "--verbose":
            continue
        return word if word in COMMANDS else None
    return None
