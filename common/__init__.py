"""The framework-free core: the spec, the data, the training skeleton, file formats, and the `vgg` command."""

import sys

from .exits import INTERRUPTED, quiet_pipe

__all__ = ["main", "quiet_pipe"]


def main() -> int:
    """The `vgg` command (:func:`common.cli.main`); Ctrl-C while its modules load is one line too, and a reader
    of its output that goes away (`vgg summary | head -3`) ends it quietly, as it ends a Unix tool."""
    try:  # imported here, inside the try, so that Ctrl-C while the command's modules load is caught
        from .cli import main as command
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return INTERRUPTED
    return quiet_pipe(command)
