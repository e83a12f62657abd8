"""Only the command line knows its option names: the rest of the code names the Python arguments.

``common.arch``, the other framework-free modules and the backends raise errors that name arguments
(``input_size``, ``fc_hidden``, ``sync_bn``) and carry those names on the exception; ``common.cli`` turns them
into its options (``--resize``, ``--fc-hidden``, ``--sync-bn``) when it prints the one-line error. A guard reads
every module but the command line's for a raised message that writes an option itself.
"""

from __future__ import annotations

import ast
import pickle
import re
from pathlib import Path

import pytest
from helpers import ROOT, run_in_process

from common.arch import make_alexnet_config, make_any_config, make_config
from common.backends import BACKENDS, is_available
from common.cli import message_for
from common.cli.registry import COMMANDS
from common.errors import ConfigError, arg

OPTION = re.compile(r"--[A-Za-z]")


def any_backend() -> str:
    for name in BACKENDS:
        if is_available(name):
            return name
    pytest.skip("no framework is installed, and `vgg train` needs one before it checks the network")


# --- the command line names its own options ------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, option",
    [
        (["compare", "--backends", "torch", "--resize", "8"], "--resize 32 or more"),
        (["summary", "--backends", "torch", "--input-size", "8"], "--input-size 32 or more"),
        (["compare", "--arch", "alexnet", "--resize", "64"], "--resize 65"),
    ],
    ids=["compare-resize", "summary-input-size", "alexnet-resize"],
)
def test_a_too_small_input_names_the_commands_option(args, option, capsys):
    done = run_in_process(capsys, *args)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ") and "Traceback" not in done.stderr
    assert "is too small" in done.stderr and option in done.stderr


def test_train_with_too_small_a_resize_names_resize(capsys):
    done = run_in_process(capsys, "train", "--backend", any_backend(), "--resize", "8")
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: input_size 8 is too small") and "minimum is 32" in done.stderr
    assert "(--resize 32 or more)" in done.stderr


def test_train_with_a_vgg_only_option_for_alexnet_names_the_option(capsys):
    done = run_in_process(capsys, "train", "--backend", any_backend(), "--arch", "alexnet", "--fc-hidden", "512")
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: --fc-hidden changes VGG only") and "fc_hidden" not in done.stderr


def test_a_bad_fc_hidden_is_refused_by_its_option_name(capsys):
    done = run_in_process(capsys, "summary", "--backends", "torch", "--fc-hidden", "0")
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "argument --fc-hidden: must be > 0, got 0" in done.stderr


def test_suggested_values_become_options_booleans_included(capsys):
    done = run_in_process(capsys, "summary", "--backends", "torch", "--arch", "vgg11_lrn", "--batch-norm")
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "use --arch vgg11 with --batch-norm instead" in done.stderr and "batch_norm" not in done.stderr


# --- the Python API names its arguments --------------------------------------------------------------------


@pytest.mark.parametrize(
    "build, field, suggestion",
    [
        (lambda: make_config("vgg11", input_size=16), "input_size", "input_size=32"),
        (lambda: make_config(((1, 8), (1, 16)), input_size=3), "input_size", "input_size=4"),
        (lambda: make_alexnet_config(input_size=64), "input_size", "input_size=65"),
        (lambda: make_config("vgg11", ratio=128), "ratio", "ratio=64"),
        (lambda: make_config("vgg11", fc_hidden=0), "fc_hidden", "fc_hidden must be a positive integer"),
        (lambda: make_config("vgg11_lrn", batch_norm=True), "arch", "arch='vgg11' with batch_norm=True"),
        (lambda: make_any_config("alexnet", fc_hidden=512), "fc_hidden", "fc_hidden changes VGG only"),
    ],
    ids=["vgg-size", "custom-size", "alexnet-size", "ratio", "fc-hidden", "lrn-bn", "alexnet-fc-hidden"],
)
def test_the_api_names_the_argument_never_an_option(build, field, suggestion):
    with pytest.raises(ConfigError) as info:
        build()
    error = info.value
    assert error.field == field and suggestion in str(error)
    assert not OPTION.search(str(error)), str(error)


def test_every_vgg_only_argument_given_to_alexnet_is_named():
    with pytest.raises(ConfigError) as info:
        make_any_config("alexnet", ratio=4, batch_norm=False)
    assert info.value.fields == ("ratio", "batch_norm")
    assert str(info.value).startswith("ratio, batch_norm change VGG only")
    assert message_for(info.value, "bench").startswith("--ratio, --batch-norm change VGG only")


def test_one_place_spells_arguments_for_each_command():
    error = ConfigError(
        f"{arg('input_size', 32)}, {arg('batch_norm', False)}, {arg('arch', ((1, 64), (2, 128)))}, {arg('lr_schedule')}"
    )
    assert str(error) == "input_size=32, batch_norm=False, arch=((1, 64), (2, 128)), lr_schedule"
    assert message_for(error, "train") == "--resize 32, --no-batch-norm, --arch 1,64;2,128, --lr-schedule"
    assert message_for(error, "summary").startswith("--input-size 32, ")
    again = pickle.loads(pickle.dumps(error))  # as an error crosses a process boundary
    assert str(again) == str(error) and again.fields == error.fields == (
        "input_size",
        "batch_norm",
        "arch",
        "lr_schedule",
    )


# --- a guard: no module but the command line's writes an option into an error message -----------------------


def _raised_strings(path: Path) -> list[str]:
    """Every string literal written inside a ``raise`` statement of the module (f-string parts included)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Raise):
            found += [c.value for c in ast.walk(node) if isinstance(c, ast.Constant) and isinstance(c.value, str)]
    return found


def _guarded_modules() -> list[str]:
    """Every module of ``common`` (its packages' too) but the command line's (``common.cli`` and each command's
    module the registry names), and every backend's, from ROOT."""
    modules = [
        *(ROOT / "common").rglob("*.py"),
        *(p for name in BACKENDS for p in (ROOT / BACKENDS[name][0]).rglob("*.py")),
    ]
    commands = (ROOT / f"{module.replace('.', '/')}.py" for module in COMMANDS.values())  # vgg teach's lives in teach
    command_line = (ROOT / "common" / "cli.py", ROOT / "common" / "cli", *commands)
    return sorted(
        p.relative_to(ROOT).as_posix() for p in modules if not any(p == c or c in p.parents for c in command_line)
    )


# Modules whose messages still name options: they are being reworked, and should name arguments with
# common.errors.arg; strict, so that this list shrinks as they are.
STILL_NAMING_OPTIONS: set[str] = set()


@pytest.mark.parametrize(
    "module",
    [
        pytest.param(
            p,
            marks=pytest.mark.xfail(strict=True, reason="names command-line options in its messages")
            if p in STILL_NAMING_OPTIONS
            else (),
        )
        for p in _guarded_modules()
    ],
)
def test_only_the_command_line_writes_options_into_error_messages(module):
    offending = [s for s in _raised_strings(ROOT / module) if OPTION.search(s)]
    assert not offending, f"{module} raises with command-line options in the message: {offending}"


def test_the_guard_sees_options_in_raised_f_strings(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text('def f(n):\n    raise ValueError(f"too small; use --resize {n}")\n')
    assert [s for s in _raised_strings(sample) if OPTION.search(s)] == ["too small; use --resize "]
