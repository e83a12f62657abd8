"""``python -m common.cli``: the ``vgg`` command, as the workers of ``--workers`` and ``vgg compare`` run it."""

import os
import sys

from ..exits import LOST, quiet_pipe
from .program import main

status = quiet_pipe(main)
if status == LOST:
    # a worker that lost its peers: the engine's threads, still in the failed collective, may abort() the
    # interpreter's exit (PyTorch's gloo does), which the parent would take for a crash; leave at once
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
sys.exit(status)
