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


PIPE_GONE = 141  # the exit status where the reader of the output went away: 128 + SIGPIPE, as the shell reports


class OutputError(Exception):
    """The command's output could not be written (a full disk, a failing device): not the command's fault."""


class _Output:
    """``sys.stdout`` whose write failures, but a closed pipe, are :class:`OutputError`, so they are told apart
    from the command's own ``OSError`` (a file it could not save, which it names itself)."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        return self._guarded(self._stream.write, text)

    def flush(self):
        return self._guarded(self._stream.flush)

    @staticmethod
    def _guarded(call, *args):
        try:
            return call(*args)
        except BrokenPipeError:
            raise
        except OSError as error:
            raise OutputError(error.strerror or str(error)) from None

    def __getattr__(self, name):
        return getattr(self._stream, name)


def quiet_pipe(command) -> int:
    """``command()``'s exit status; where the reader of its output goes away, 141 without a traceback, and
    where the output cannot be written (``vgg summary > /dev/full``), one line and 1."""
    stdout = sys.stdout
    if stdout is None:  # started with stdout closed (`>&-`), where print() writes nothing: refused before any work
        if sys.stderr is not None:
            print(
                "error: the output could not be written (standard output is closed); send it where it can be "
                "(> FILE, or > /dev/null to drop it)",
                file=sys.stderr,
            )
        return 1
    sys.stdout = _Output(stdout)
    try:
        try:
            status = command()
        finally:  # also under argparse's SystemExit (--help)
            sys.stdout.flush()  # what is still buffered fails here, not in the flush at exit
        return status
    except BrokenPipeError:
        _discard_output()
        return PIPE_GONE
    except OutputError as error:
        _discard_output()
        print(f"error: the output could not be written ({error}); send it where it can be", file=sys.stderr)
        return 1
    finally:
        sys.stdout = stdout


def _discard_output() -> None:
    """Point stdout at nothing, so the flush at exit does not fail again."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
