"""The framework-free core: the spec, the data, the training skeleton, file formats, and the `vgg` command."""

import sys


def main() -> int:
    """The `vgg` command (:func:`common.cli.main`); Ctrl-C while its modules load is one line too."""
    try:
        from .cli import main as command
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return command()
