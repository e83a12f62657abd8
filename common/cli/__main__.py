"""``python -m common.cli``: the ``vgg`` command, as the workers of ``--workers`` and ``vgg compare`` run it."""

import os
import sys
import traceback

from ..distributed import LAUNCHED
from ..exits import FAILED, LOST, quiet_pipe
from .program import main

try:
    status = quiet_pipe(main)
except BaseException:
    if os.environ.get(LAUNCHED) is None:
        raise
    traceback.print_exc()  # a worker: said here, then left at once (below), never stuck in a framework's teardown
    status = FAILED
if (status != 0 and os.environ.get(LAUNCHED) is not None) or status == LOST:
    # a worker that stopped, or lost its peers: the engine's threads, still in a collective, may abort() the
    # interpreter's exit (PyTorch's gloo does) or wait in it for good (MXNet's ps-lite); leave at once
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
sys.exit(status)
