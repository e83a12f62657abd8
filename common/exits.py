"""The exit statuses of the ``vgg`` command and its workers, named once, and how a failed output becomes one."""

import os
import sys

FAILED = 1  # the work failed: a backend that disagrees with the spec, a run that stopped, output not written
REFUSED = 2  # the input was refused, in one line saying what to change (argparse's refusals and the project's)
INTERRUPTED = 130  # Ctrl-C or SIGTERM: 128 + SIGINT, as the shell reports
PIPE_GONE = 141  # the exit status where the reader of the output went away: 128 + SIGPIPE, as the shell reports


# The exit status of a worker started by launch() that lost its peers (WorkerLost): not an error of its own, so
# the parent names the worker that stopped or stalled (2 is an error of the project's own, which worker 0 printed).
LOST = 3


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
        return FAILED
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
        return FAILED
    finally:
        sys.stdout = stdout


def _discard_output() -> None:
    """Point stdout at nothing, so the flush at exit does not fail again."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
