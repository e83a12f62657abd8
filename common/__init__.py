"""The framework-free core: the spec, the data, the training skeleton, file formats, and the `vgg` command."""

import os
import sys


def main() -> int:
    """The `vgg` command (:func:`common.cli.main`); Ctrl-C while its modules load is one line too, and a reader
    of its output that goes away (`vgg summary | head -3`) ends it quietly, as it ends a Unix tool."""
    try:
        from .cli import main as command
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return quiet_pipe(command)


def quiet_pipe(command) -> int:
    """``command()``'s exit status; where the reader of its output goes away, 141 without a traceback."""
    try:
        return command()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the flush at exit must not fail again
        return 141  # 128 + SIGPIPE: what the shell reports of a tool the signal ended
