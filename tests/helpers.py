"""Helpers shared by the test modules: the `vgg` command in a subprocess, random weights, memory release."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

from common.weights import xavier_init

ROOT = Path(__file__).resolve().parents[1]
# What a `vgg` subprocess runs with: this checkout first on the path.
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
# For two runs side by side (tests/test_reliability.py): one thread each, quiet TensorFlow.
ONE_THREAD = {
    "OMP_NUM_THREADS": "1",
    "TF_NUM_INTRAOP_THREADS": "1",
    "TF_NUM_INTEROP_THREADS": "1",
    "TF_CPP_MIN_LOG_LEVEL": "2",
}


def vgg_command(*args) -> list[str]:
    return [sys.executable, "-m", "common.cli", *map(str, args)]


def run_vgg(*args, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run `vgg ARGS` to its end in a fresh process; its exit status, stdout and stderr."""
    return subprocess.run(
        vgg_command(*args), cwd=ROOT, env={**ENV, **(env or {})}, capture_output=True, text=True, timeout=timeout
    )


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_vgg(*args, env: dict | None = None) -> subprocess.Popen:
    """Start `vgg ARGS` in a fresh process and return at once (stdout and stderr piped).

    Ctrl-C (SIGINT) reaches it as from a terminal, even when the suite itself runs in the background, where
    the shell has it ignored and a child would inherit that.
    """
    return subprocess.Popen(
        vgg_command(*args),
        cwd=ROOT,
        env={**ENV, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )


_OWN_PROCESS = "VGG_TEST_IN_ITS_OWN_PROCESS"


def in_own_process(request) -> bool:
    """For a test whose peak memory must not add to the suite's process: run it alone in a fresh pytest process.

    True inside that process (the test then does its work); in the suite's process the test is run there and
    must pass, and this returns False (nothing more to do).
    """
    node = request.node.nodeid
    if os.environ.get(_OWN_PROCESS) == node:
        return True
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", node],
        cwd=ROOT,
        env={**ENV, _OWN_PROCESS: node},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, f"{node} in its own process:\n{done.stdout[-6000:]}{done.stderr[-2000:]}"
    assert re.search(r"\b1 passed\b", done.stdout), done.stdout[-2000:]  # it ran, and was not skipped
    return False


def random_weights(config, seed=0):
    """Xavier weights plus non-trivial biases and batch-norm statistics, so every tensor matters."""
    rng = np.random.default_rng(seed + 1)
    w = xavier_init(config, seed)
    for name, array in w.items():
        if name.endswith("running_var"):
            w[name] = rng.uniform(0.5, 2.0, array.shape).astype(np.float32)
        elif name.endswith(("bias", "running_mean")) or (name.endswith("weight") and array.ndim == 1):
            w[name] = (array + rng.normal(0, 0.1, array.shape)).astype(np.float32)
    return w


_LIBC = ctypes.CDLL(ctypes.util.find_library("c")) if sys.platform.startswith("linux") else None


def resident_mib() -> int:
    """This process's resident memory now, in MiB (0 where /proc is not there)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 2**20
    except OSError:
        return 0


def release_memory() -> None:
    """Free what the tests let go of: collect cycles, let MXNet's engine finish, give free heap back to the OS."""
    gc.collect()
    if "mxnet" in sys.modules:  # MXNet frees an array only once the operations queued on it have run
        sys.modules["mxnet"].nd.waitall()
        gc.collect()
    if _LIBC is not None and hasattr(_LIBC, "malloc_trim"):
        _LIBC.malloc_trim(0)
