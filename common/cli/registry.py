"""The commands of ``vgg``: each name and the module that holds it, imported only when it is needed.

A command's module has ``add_arguments(parser)`` and ``run(args) -> int`` (the exit status); its line in
``vgg --help`` is kept here, so that listing the commands imports none of them. A new command is a line in each
table.
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


# Each command's line in `vgg --help`.
HELP = {
    "summary": "layer-by-layer shapes and parameters of every backend beside the spec",
    "train": "train one backend on the real Fashion-MNIST, the book's recipe",
    "compare": "train the same VGG in every backend and write a report with plots",
    "bench": "training and inference speed per backend, beside the book's code and the peak",
    "convert": "convert a saved model between frameworks and formats, or export it to ONNX",
    "conform": "hold anyone's VGG or AlexNet port to the spec; say where it first goes wrong",
    "evaluate": "test accuracy of a saved model on the real Fashion-MNIST test set",
    "teach": "write the chapter as a static page and a notebook: every framework side by side, from the installed code",
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
