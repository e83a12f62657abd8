"""Helpers shared by the test modules: the `vgg` command in a subprocess or in this process, the small networks,
runs and checkpoints several modules use, random weights, memory release."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, settings

from common.arch import make_config
from common.checkpoint import FILE_NAME, Snapshot, read_checkpoint_meta, save_checkpoint
from common.host import give_back_freed_memory
from common.recipe import Recipe
from common.training import Epoch, History
from common.weights import META_KEY, xavier_init

ROOT = Path(__file__).resolve().parents[1]
# What a `vgg` subprocess runs with: this checkout first on the path, and malloc as a user's process has it
# (the suite's own process keeps glibc's default: see conftest.py).
ENV = {
    **{k: v for k, v in os.environ.items() if k != "VGG_REUSE_FREED_MEMORY"},
    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
}
# One OpenMP thread (PyTorch's and MXNet's CPU threads) for a `vgg` subprocess.
ONE_OMP_THREAD = {"OMP_NUM_THREADS": "1"}
# For runs side by side: one thread each, quiet TensorFlow.
ONE_THREAD = {
    **ONE_OMP_THREAD,
    "TF_NUM_INTRAOP_THREADS": "1",
    "TF_NUM_INTEROP_THREADS": "1",
    "TF_CPP_MIN_LOG_LEVEL": "2",
}
# The network most tests build: VGG-11 at an eighth of the channels, on 32 px images, a 64-wide classifier.
TINY = dict(arch="vgg11", ratio=8, input_size=32, fc_hidden=64)
# The same network on the `vgg` command line.
TINY_CLI = ["--arch", "vgg11", "--ratio", "8", "--resize", "32", "--fc-hidden", "64"]
# Two conv blocks of 8 and 16 channels (laid over other options): for runs whose test is no property of VGG-11's
# depth, and whose step XLA compiles in 1 to 2 s where VGG-11's takes 2 to 5 s (2026-12-07, 2-core VM).
SHALLOW_CLI = ["--arch", "1,8;1,16", "--ratio", "1"]
# Four short epochs of it, seeded: what the runs that are interrupted and resumed train.
SHORT_RUN = [*TINY_CLI, "--epochs", "4", "--train-limit", "1024", "--test-limit", "500", "--seed", "3"]

# The book's VGG-11 (1 channel, 224 px, 10 classes): the output shape of each block and classifier layer, and
# its parameter count.
BOOK_VGG11_SHAPES = [
    (1, 64, 112, 112),
    (1, 128, 56, 56),
    (1, 256, 28, 28),
    (1, 512, 14, 14),
    (1, 512, 7, 7),
    (1, 25088),
    (1, 4096),
    (1, 4096),
    (1, 10),
]
BOOK_VGG11_PARAMS = 128_806_154

# What the property-based tests draw: 150 examples each, however long one takes.
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def vgg_command(*args) -> list[str]:
    return [sys.executable, "-m", "common.cli", *map(str, args)]


def _env(env: dict | None) -> dict:
    """ENV with ``env`` laid over it; a variable set to None is left out (as in a shell that does not set it)."""
    return {k: v for k, v in {**ENV, **(env or {})}.items() if v is not None}


def run_vgg(
    *args, env: dict | None = None, timeout: float = 900, own_group: bool = False
) -> subprocess.CompletedProcess:
    """Run `vgg ARGS` to its end in a fresh process; its exit status, stdout and stderr.

    ``own_group``: in a process group of its own, killed whole once the command ends or times out, so that no
    process it started (the workers of a distributed run) outlives the test.
    """
    if not own_group:
        return subprocess.run(
            vgg_command(*args), cwd=ROOT, env=_env(env), capture_output=True, text=True, timeout=timeout
        )
    proc = start_vgg(*args, env=env, own_group=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    finally:
        kill_group(proc)


def run_python(code: str, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run ``python -c CODE`` with this checkout on the path, in a fresh process; its exit status and output."""
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=_env(env), capture_output=True, text=True, timeout=timeout
    )


def _signals_as_from_a_terminal() -> None:
    """Ctrl-C and a closed terminal (SIGINT, SIGHUP) reach the child as they would from a terminal: a suite run in
    the background (SIGINT ignored) or under nohup (SIGHUP ignored) passes the ignored signal on otherwise, and the
    command rightly leaves an ignored SIGHUP ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def start_vgg(*args, env: dict | None = None, own_group: bool = False) -> subprocess.Popen:
    """Start `vgg ARGS` in a fresh process and return at once (stdout and stderr piped).

    Ctrl-C (SIGINT) and a closed terminal (SIGHUP) reach it as from a terminal, even when the suite itself runs in
    the background or under nohup, where a child would inherit the ignored signal. ``own_group``: in a new session
    and process group, as a terminal starts a job: ``os.killpg(proc.pid, ...)`` reaches it and every process it
    starts.
    """
    return subprocess.Popen(
        vgg_command(*args),
        cwd=ROOT,
        env=_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_signals_as_from_a_terminal,
        start_new_session=own_group,
    )


def kill_group(proc: subprocess.Popen) -> None:
    """Kill the process group of ``proc`` (started with ``own_group``) if it still runs, and reap it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def interrupt_after_first_checkpoint(out: Path, sig: int, *args, env: dict | None = None) -> tuple[int, str]:
    """Start `vgg train --out OUT ARGS`, send ``sig`` while it trains the epoch after its first checkpoint.

    The run's exit status and stderr.
    """
    proc = start_vgg("train", "--out", out, *args, env=env)
    deadline = time.monotonic() + 90
    while not (out / FILE_NAME).exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint after 90 s"
        time.sleep(0.02)
    time.sleep(0.15)  # inside the next epoch
    assert proc.poll() is None, "the run finished before it could be interrupted"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


def killed_and_resumed(
    tmp_path: Path, backend: str, run: list, env: dict | None = None, capsys=None, resume_here: bool = False
):
    """`vgg train --backend BACKEND RUN` twice: whole into tmp_path/whole, and into tmp_path/cut killed (SIGKILL)
    in the epoch after its first checkpoint, then resumed there.

    With ``capsys``, the whole run, the reference, runs in this process (the caller makes it compute as a `vgg`
    process with ``env`` does: the same thread count), and with ``resume_here`` too the resumed run (it has only
    the killed run's folder to go on: that process is gone). The two folders, the epoch the killed run had saved,
    and the resumed run (which must have exited 0).
    """
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    args = ["train", "--backend", backend, "--out", whole, *run]
    done = run_in_process(capsys, *args) if capsys else run_vgg(*args, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    rc, _ = interrupt_after_first_checkpoint(cut, signal.SIGKILL, "--backend", backend, *run, env=env)
    assert rc == -signal.SIGKILL
    saved = read_checkpoint_meta(cut)["epoch"]
    resume = ["train", "--backend", backend, "--out", cut, "--resume"]
    resumed = run_in_process(capsys, *resume) if resume_here else run_vgg(*resume, env=env, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    return whole, cut, saved, resumed


def saved_weights(path) -> dict:
    """The arrays of a saved ``.npz`` weights file by name, without its metadata entry."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files if k != META_KEY}


def run_main(capsys, *args) -> str:
    """One `vgg` command in this process (the frameworks are imported once): its output, after a zero exit."""
    from common.cli import main

    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert code == 0, out[-2000:] + err[-2000:]
    return out


def run_in_process(capsys, *args) -> subprocess.CompletedProcess:
    """One `vgg` command in this process, whatever its exit status: what :func:`run_vgg` gives, without a new
    process (and its framework imports). For tests of what a command says and returns, not of how a process
    behaves (signals, process groups, a framework's own output on file descriptor 2, imports)."""
    from common.cli import main

    try:
        code = main([str(a) for a in args])
    except SystemExit as e:  # argparse's errors: usage and message on stderr, exit 2
        code = e.code if isinstance(e.code, int) else 1
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["vgg", *map(str, args)], code, out, err)


def one_line(capsys, argv) -> str:
    """Run `vgg ARGV` in this process; assert it refused with exit 2 and one line, no traceback; the line."""
    from common.cli import main

    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def one_epoch_run(tmp_path, capsys) -> tuple[Path, list[str]]:
    """A PyTorch run of one short epoch saved in ``tmp_path/run``; the folder and the command without --out."""
    from conftest import load_backend  # (conftest imports this module)

    from common.cli import main

    load_backend("torch")
    run = tmp_path / "run"
    argv = ["train", "--backend", "torch", *TINY_CLI, "--epochs", "1", "--train-limit", "64", "--test-limit", "64"]
    assert main([*argv, "--out", str(run)]) == 0
    capsys.readouterr()
    return run, argv


def untrained_checkpoint(path, backend="torch", config=None, epoch=1, num_epochs=2):
    """A checkpoint written without training: xavier weights, no optimizer state."""
    config = config or make_config(**TINY)
    recipe = {
        **Recipe(num_epochs).record(),
        "batch_size": 128,
        "train_examples": 256,
        "test_examples": 128,
    }
    history = History(backend, "cpu", [Epoch(e, 2.0, 0.5, 0.5, 100.0, 1.0) for e in range(1, epoch + 1)])
    return save_checkpoint(path, Snapshot(backend, config, recipe, epoch, history, xavier_init(config, 0)))


def rewrite_meta(path, **changes):
    """Rewrite the metadata record of the .npz file ``path`` (a checkpoint, weights) with ``changes``."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = {**json.loads(str(arrays[META_KEY])), **changes}
    np.savez(path, **{**arrays, META_KEY: np.array(json.dumps(meta))})


def saved_small_network(tmp_path, name="m.npz", poison=False):
    """A small network saved by the project; ``poison``: then one value made NaN in the file (no save writes one)."""
    from conftest import load_backend  # (conftest imports this module)

    b = load_backend("torch")
    net = b.vgg(arch="vgg11", ratio=8, input_size=32, fc_hidden=64)
    path = b.save_weights(net, tmp_path / name) if name.endswith(".npz") else b.save_model(net, tmp_path / name)
    if poison and name.endswith(".npz"):
        with np.load(path) as z:
            arrays = dict(z)
        arrays["fc2.weight"][0, 0] = np.nan
        np.savez(path, **arrays)
    elif poison:
        import torch

        saved = torch.load(path, weights_only=True)
        saved["state_dict"]["fc2.weight"][0, 0] = np.nan
        torch.save(saved, path)
    return path


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
    give_back_freed_memory()
