"""The exit statuses of the ``vgg`` command and its workers, named once."""

FAILED = 1  # a refused input or a failed run, said in one line
USAGE = 2  # a command line argparse refuses, or a working folder that was deleted
INTERRUPTED = 130  # Ctrl-C or SIGTERM: 128 + SIGINT, as the shell reports


PIPE_GONE = 141  # the exit status where the reader of the output went away: 128 + SIGPIPE, as the shell reports


# The exit status of a worker started by launch() that lost its peers (WorkerLost): not an error of its own, so
# the parent names the worker that stopped or stalled (2 is an error of the project's own, which worker 0 printed).
LOST = 3
