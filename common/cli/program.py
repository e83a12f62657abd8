"""``vgg``: the parser made from the commands' modules, and the one place a command's outcome becomes its exit
status and its error one line."""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
import threading

from ..distributed import LAUNCHED, error_status, leave_note, quiet_error, user_code_ended
from ..errors import VGGError
from ..exits import INTERRUPTED, REFUSED
from ..host import LOG_EVERY, env_seconds
from ..processes import TIMEOUT
from .options import Parser, message_for
from .registry import COMMANDS, HELP, load, named


def _quiet_frameworks(verbose: bool) -> None:
    """Without ``--verbose``, TensorFlow keeps its start-up notices to itself (here and in every process started
    from here): TF_CPP_MIN_LOG_LEVEL 2 unless the user set it; with it, the user's value or everything."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose else "2")


def build_parser(only: str | None = None) -> Parser:
    """The parser of ``vgg`` and every command; with ``only``, that command's options alone (the other commands
    are still known by name and help line, but their modules are not imported: ``only=""`` imports none)."""
    parser = Parser(prog="vgg", description="VGG in PyTorch, tf.keras, MXNet Gluon and JAX, held to one analytic spec.")
    verbose_help = "show the frameworks' start-up log lines (TensorFlow's are hidden otherwise)"
    parser.add_argument("--verbose", action="store_true", help=verbose_help)
    sub = parser.add_subparsers(dest="command", required=True)

    for name in COMMANDS:
        if only is not None and name != only:
            sub.add_parser(name, help=HELP[name])
            continue
        command = load(name)
        p = sub.add_parser(name, help=HELP[name])
        command.add_arguments(p)
        p.set_defaults(func=command.run)
    for p in sub.choices.values():  # also after the command; absent there, it leaves the value before it alone
        p.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help=verbose_help)
    parser.commands = sub.choices  # each command's parser, for its errors
    return parser


def _terminated(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        os.getcwd()
    except FileNotFoundError:  # relative paths mean nothing, and libraries fail at import (oneMKL: "FATAL ERROR")
        print(
            "error: the working folder was deleted; change to a folder that exists (cd) and run it again",
            file=sys.stderr,
        )
        return REFUSED
    parser = build_parser(named(argv) or "")  # `vgg --help` and a mistyped command import no command
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # said by the command's parser, which names its own --help
        parser.commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    args.argv = argv  # what a worker started by --workers runs again
    _quiet_frameworks(args.verbose)
    # SIGTERM (`kill`, a scheduler, `timeout`) stops a command as Ctrl-C does: the files being written are
    # removed, what was saved is said, and how to go on. Not in a worker, which its launcher stops this way.
    # SIGHUP (the terminal closed) too, unless it is ignored (nohup).
    on_term = os.environ.get(LAUNCHED) is None and _main_thread()
    stops = [signal.SIGTERM] + [signal.SIGHUP] * (signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN)
    before = {sig: signal.signal(sig, _terminated) for sig in stops} if on_term else {}
    try:
        env_seconds("VGG_PROGRESS_EVERY", LOG_EVERY, zero=True)  # a bad value is one line now, not mid-run
        env_seconds("VGG_DIST_TIMEOUT", TIMEOUT)
        return args.func(args)
    except VGGError as e:
        if not quiet_error(e):
            print(f"error: {message_for(e, args.command)}", file=sys.stderr)
        else:  # a worker's own error: its launcher says it where it stopped the run
            leave_note(message_for(e, args.command))
        return error_status(e)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return INTERRUPTED
    except OSError as e:  # a name too long for the file system, met where a path is first looked at
        if e.errno != errno.ENAMETOOLONG:
            raise
        print(
            f"error: {e.filename}: a name in it is longer than the file system takes; choose a shorter one",
            file=sys.stderr,
        )
        return REFUSED
    finally:
        user_code_ended()  # not reached where a user's code ended the process (vgg conform's factory)
        for sig, handler in before.items():
            signal.signal(sig, handler)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()
