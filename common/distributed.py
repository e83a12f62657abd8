"""Data-parallel training on each framework's own engine: who is a worker, what it trains on, how N start here.

The engines are the frameworks' (PyTorch ``torch.distributed`` with ``DistributedDataParallel``, TensorFlow's
``MultiWorkerMirroredStrategy``, MXNet's ``dist_sync`` kvstore, ``jax.distributed`` with one ``jax.jit`` step over
a global mesh); this module only

- says whether this process is one worker of a run and which (:func:`worker_env`), from the variables each
  engine reads itself (``RANK``/``WORLD_SIZE``, ``TF_CONFIG``, ``DMLC_ROLE``; JAX's ``JAX_COORDINATOR_ADDRESS``
  beside ``VGG_JAX_NUM_PROCESSES``/``VGG_JAX_PROCESS_ID``, which JAX takes as arguments), so ``torchrun`` and
  hand-set variables on many machines work unchanged;
- shards the seeded global batch (:func:`shard`): worker ``r`` of ``N`` takes its own contiguous slice, so the
  N workers together see the one-process batch and, with the loss taken as the mean over the global batch,
  compute the one-process gradient;
- starts N local processes with those variables on free ports of 127.0.0.1 and watches them
  (:func:`launch`): one that dies stops the others at once, with one message naming it, and all of them end
  when the parent does (:func:`die_with_parent`, also what ``vgg compare`` gives its children);
- models the cost of scale (:func:`scaling_table`): compute from ``common.spec``'s MACs, communication of a
  ring all-reduce of the gradients.

It never imports a framework.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .arch import MAX_INT
from .backends import BACKENDS
from .checkpoint import read_checkpoint_meta
from .errors import ConfigError, InputError, VGGError, arg
from .exits import FAILED, LOST, PIPE_GONE, REFUSED
from .processes import (
    Process,
    child_env,
    collective_timeout,
    describe_exit,
    die_with_parent,
    python_module,
    run_processes,
    stop,
)
from .spec import available_memory, format_bytes, memory_needed, spec

HOST = "127.0.0.1"  # every local run binds and connects here only
# The engine each backend's DistributedTrainer drives, and the synchronized batch norm it offers (None: none).
ENGINES = {
    "torch": "torch.distributed (DistributedDataParallel; gloo on CPUs, nccl on GPUs)",
    "tf": "tf.distribute.MultiWorkerMirroredStrategy",
    "mxnet": "MXNet's dist_sync kvstore (ps-lite: scheduler, server, workers)",
    "jax": "jax.distributed (one jax.jit step over a global mesh, the batch sharded by process; gloo on CPUs)",
}
# What each engine does with the workers' gradients: DDP averages them, Keras' strategy and the kvstore sum them,
# and so does the all-reduce XLA puts in JAX's step (each worker's part of the gradient of the global-batch loss).
COMBINES = {"torch": "mean", "tf": "sum", "mxnet": "sum", "jax": "sum"}
SYNC_BN = {
    "torch": "torch.nn.SyncBatchNorm (GPUs only)",
    "tf": "keras.layers.BatchNormalization(synchronized=True)",
    "mxnet": None,
    "jax": "always: the step's batch axis is sharded over the mesh, so its statistics are the global batch's",
}
# Seconds a worker waits in one collective (or for its peers to start) before it gives up: the bound for a
# multi-machine run, where no local parent watches the processes. Locally the parent stops them sooner.
LAUNCHED = "VGG_LAUNCHED"


# Set by launch() in every worker: the file where a worker that leaves its error to be reported
# (:func:`quiet_error`) puts its line, for the launcher to print where that worker's error stopped the run.
ERROR_NOTE = "VGG_ERROR_NOTE"


def leave_note(message: str) -> None:
    """Keep a quiet worker's error line for its launcher (nothing where no launcher asked for it)."""
    note = os.environ.get(ERROR_NOTE)
    if note:
        with contextlib.suppress(OSError):
            Path(note).write_text(message)


# Set in the process that runs a user's code for `vgg conform` (:func:`run_user_code`): the file it writes once
# its command has ended by itself, so that an exit forced by that code (os._exit) is told from the command's own.
USER_CODE = "VGG_USER_CODE"


def user_code_ended() -> None:
    """Mark, for :func:`run_user_code`, that this command ended by itself (nothing where it runs unwatched)."""
    done = os.environ.get(USER_CODE)
    if done:
        with contextlib.suppress(OSError):
            Path(done).write_text("ended")


def run_user_code(argv: Sequence[str], timeout: float, what: str) -> int:
    """``python -m common.cli ARGV``, a command that runs a user's code, in a process of its own with ``timeout``
    seconds to finish; its output passes through, and its exit status is returned.

    The process has its own session, so a Ctrl-C at the terminal reaches only this one (which stops it): any
    KeyboardInterrupt in it is the user's code's. Past ``timeout``, or where that code ends the process itself
    (``os._exit``, a crash), one line says so (an InputError), naming ``what`` ran.
    """
    # the user's modules are found as in this process (its path, the working folder first, as `python -m` has it)
    path = os.pathsep.join([os.getcwd(), *(p for p in sys.path if p and Path(p).is_dir())])
    with tempfile.TemporaryDirectory(prefix="vgg-user-code-") as folder:
        done = Path(folder) / "ended"
        proc = subprocess.Popen(
            python_module("common.cli", *argv),
            env={**child_env(**{USER_CODE: str(done)}), "PYTHONPATH": path},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )
        try:
            out, err = proc.communicate(timeout=timeout if timeout < 1e9 else None)
            sys.stdout.write(out)  # what it said, through this process's streams
            sys.stderr.write(err)
            code = proc.returncode
        except subprocess.TimeoutExpired:
            stop([proc], grace=2.0)
            raise InputError(
                f"{what} did not finish within {timeout:g} s ({arg('timeout')}): its code (the factory, or the "
                f"network's forward) may never return; give it more time with {arg('timeout')} if it is only slow"
            ) from None
        finally:
            stop([proc], grace=2.0)  # a Ctrl-C here stops it too
        ended = done.is_file()
    if ended:
        return code
    raise InputError(
        f"{what}: its code ended the process ({describe_exit(code)}) before the check finished, as os._exit or a "
        f"crash in the factory or the network's forward does; it must return the network and let it run"
    )


def quiet_error(error: Exception, environ=None) -> bool:
    """Whether a worker started by :func:`launch` leaves ``error`` to be reported by another process."""
    index = (os.environ if environ is None else environ).get(LAUNCHED)
    return index is not None and (index != "0" or isinstance(error, WorkerLost))


def error_status(error: Exception, environ=None) -> int:
    """The exit status of a command that met the project's own ``error``: 2, or :data:`LOST` for a worker started
    by :func:`launch` that lost its peers."""
    launched = (os.environ if environ is None else environ).get(LAUNCHED) is not None
    return LOST if launched and isinstance(error, WorkerLost) else REFUSED


class WorkerLost(VGGError, RuntimeError):
    """Another worker of the run stopped: a collective failed or timed out."""


class Watchdog:
    """Ends this worker where one wait on the others runs past :func:`collective_timeout`: for an engine whose
    collectives never time out (MXNet's ps-lite blocks for good on a stalled peer).

    One daemon thread looks at the deadline that :meth:`waiting` sets around each wait. Past it, the worker leaves
    at once with :data:`LOST`, which its launcher reads as a lost peer and answers by naming the workers still in
    the wait; a worker started by hand says so itself (exit 2). Nothing is half-written by leaving then: files are
    written between steps, atomically.
    """

    def __init__(self, timeout: float | None = None):
        self.timeout = collective_timeout() if timeout is None else timeout
        self.deadline: float | None = None
        threading.Thread(target=self._watch, name="vgg-watchdog", daemon=True).start()

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """``with watchdog.waiting():`` around code that waits on the other workers."""
        self.deadline = time.monotonic() + self.timeout
        try:
            yield
        finally:
            self.deadline = None

    def _watch(self) -> None:
        while True:
            time.sleep(min(1.0, self.timeout / 4))
            deadline = self.deadline
            if deadline is not None and time.monotonic() > deadline:
                launched = os.environ.get(LAUNCHED) is not None
                if not launched:
                    print(
                        f"error: another worker of the run stopped or stalled: a step waited {self.timeout:g} s for "
                        f"it (VGG_DIST_TIMEOUT); this one stops too",
                        file=sys.stderr,
                    )
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(LOST if launched else 2)


@dataclass(frozen=True)
class Worker:
    """This process's place in a run: ``rank`` of ``size`` (None where the engine assigns it when it starts), and
    ``local``, its GPU on this machine (``LOCAL_RANK`` under torchrun)."""

    rank: int | None
    size: int
    local: int = 0


def worker_env(backend: str, environ=None) -> Worker | None:
    """This process's place in a distributed run, read from the engine's own variables; None outside one.

    PyTorch: ``WORLD_SIZE`` > 1 (``RANK``); TensorFlow: ``TF_CONFIG`` naming more than one worker; MXNet:
    ``DMLC_ROLE=worker`` (its rank is assigned by the scheduler, known once the kvstore is made); JAX:
    ``VGG_JAX_NUM_PROCESSES`` > 1 (``VGG_JAX_PROCESS_ID``, and JAX's own ``JAX_COORDINATOR_ADDRESS``: what
    ``jax.distributed.initialize`` takes as ``num_processes``, ``process_id`` and ``coordinator_address``).
    """
    env = os.environ if environ is None else environ
    if backend not in ENGINES and backend in BACKENDS:  # no engine: always one process (check_workers says so)
        return None
    if backend == "torch":
        size = env_count(env, "WORLD_SIZE", "1", 1)
        if size == 1:
            return None
        rank = _rank(env_count(env, "RANK", "0", 0), size, "RANK")
        local = env_count(env, "LOCAL_RANK", "0", 0)
        missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not env.get(name)]
        if missing:
            raise ConfigError(
                f"WORLD_SIZE={size} in the environment describes a distributed run, but {' and '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} not set; set them as torchrun does, or unset WORLD_SIZE "
                f"outside a distributed run"
            )
        if env_count(env, "MASTER_PORT", "0", 1) > 65535:
            raise ConfigError(f"MASTER_PORT={env['MASTER_PORT']!r} in the environment is no port; give 1..65535")
        return Worker(rank, size, local)
    if backend == "tf":
        if not env.get("TF_CONFIG"):
            return None
        try:
            config = json.loads(env["TF_CONFIG"])
            size = len(config.get("cluster", {}).get("worker", []))
            index = config["task"]["index"] if size > 1 else 0
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise ConfigError(
                f"TF_CONFIG in the environment is not TensorFlow's cluster description ({type(e).__name__}: {e}); "
                f'give {{"cluster": {{"worker": [...]}}, "task": {{"type": "worker", "index": N}}}}, or unset it '
                f"outside a distributed run"
            ) from None
        if type(index) is not int:
            raise ConfigError(f"TF_CONFIG's task index is {index!r}; give a whole number")
        return Worker(_rank(index, size, "TF_CONFIG's task index"), size) if size > 1 else None
    if backend == "mxnet":
        if env.get("DMLC_ROLE") != "worker":
            return None
        return Worker(None, env_count(env, "DMLC_NUM_WORKER", "1", 1))
    if backend == "jax":
        size = env_count(env, "VGG_JAX_NUM_PROCESSES", "1", 1)
        if size == 1:
            return None
        missing = [name for name in ("JAX_COORDINATOR_ADDRESS", "VGG_JAX_PROCESS_ID") if not env.get(name)]
        if missing:
            raise ConfigError(
                f"VGG_JAX_NUM_PROCESSES={size} in the environment describes a distributed run, but "
                f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set; set "
                f"JAX_COORDINATOR_ADDRESS=HOST:PORT (process 0's) and VGG_JAX_PROCESS_ID (0..{size - 1}) in each "
                f"process, or unset VGG_JAX_NUM_PROCESSES outside a distributed run"
            )
        coordinator_port(env["JAX_COORDINATOR_ADDRESS"])
        return Worker(_rank(env_count(env, "VGG_JAX_PROCESS_ID", "0", 0), size, "VGG_JAX_PROCESS_ID"), size)
    raise ConfigError(f"unknown backend {backend!r}")


def coordinator_port(address: str) -> int:
    """The port of ``JAX_COORDINATOR_ADDRESS`` (``HOST:PORT``), or a ConfigError saying what to give."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ConfigError(
            f"JAX_COORDINATOR_ADDRESS={address!r} in the environment is no HOST:PORT (a port of 1..65535); give "
            f"process 0's address and a free port, or unset VGG_JAX_NUM_PROCESSES outside a distributed run"
        )
    return int(port)


def env_count(env, name: str, default: str, least: int) -> int:
    """The whole number in the engine's variable ``name`` (at least ``least``), or a ConfigError naming it."""
    text = env.get(name, default)
    try:
        value = int(text)
    except ValueError:
        value = least - 1
    if not least <= value <= MAX_INT:
        raise ConfigError(
            f"{name}={text!r} in the environment is no whole number of at least {least}; set it as the engine "
            f"reads it, or unset it outside a distributed run"
        )
    return value


def _rank(rank: int, size: int, name: str) -> int:
    """``rank`` if it is one of ``size`` workers', else a ConfigError naming the variable it came from."""
    if not 0 <= rank < size:
        raise ConfigError(f"{name} {rank} is not one of {size} workers' (0..{size - 1}); give each worker its own")
    return rank


def shard(batch: int, rank: int, size: int) -> slice:
    """Worker ``rank``'s contiguous slice of a global batch of ``batch`` examples split over ``size`` workers.

    The slices are in rank order and differ in length by at most one (the first ``batch % size`` take one
    more); a batch smaller than ``size`` leaves the last workers an empty slice.
    """
    base, extra = divmod(batch, size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


def loss_scale(size: int, batch: int, backend: str) -> float:
    """What a worker of ``backend`` multiplies its summed loss by so that the applied gradient is the global-batch
    mean: the one scaling rule of every backend's data-parallel step.

    DDP averages the workers' gradients (divides by ``size``): the scale is ``size / batch``. Keras 3's optimizer
    under MultiWorkerMirroredStrategy and MXNet's kvstore sum them: ``1 / batch``. Either way the combined
    gradient is that of the sum over the global batch divided by ``batch``, the one-process mean.
    """
    if backend not in COMBINES:
        raise ConfigError(f"unknown backend {backend!r}")
    return (size if COMBINES[backend] == "mean" else 1) / batch


def restored_digest(arrays: dict) -> int:
    """A number naming the random-generator state a checkpoint restored (rank 0's, the only one saved).

    A worker of rank above 0 seeds its own dropout stream from the run's seed, its rank and this digest after a
    resume, so that it does not draw rank 0's masks for its own slice.
    """
    crc = 0
    for name in sorted(arrays):
        crc = zlib.crc32(np.ascontiguousarray(arrays[name]).tobytes(), zlib.crc32(name.encode(), crc))
    return crc


def check_workers(workers: int, batch_size: int, backend: str, examples: int | None = None) -> None:
    """Refuse a worker count the run cannot use, before any process starts.

    ``examples``: the training examples of the run; the last batch of an epoch holds ``examples % batch_size``
    of them, and every worker needs one of those too (a worker with an empty slice fails in one engine, waits
    for good in another): fewer than ``workers`` is refused, in every backend alike.
    """
    if backend not in ENGINES:
        raise ConfigError(
            f"{arg('workers', workers)}: the {backend} backend has no distributed engine here; "
            f"use {arg('workers', 1)} or one of {', '.join(ENGINES)}"
        )
    if workers > batch_size:
        raise ConfigError(
            f"{arg('workers', workers)} is more than the global batch of {batch_size} examples "
            f"({arg('batch_size')}): every worker needs a slice of each batch; use at most {batch_size} workers "
            f"or a larger {arg('batch_size')}"
        )
    last = examples % batch_size if examples else 0
    if examples and 0 < last < workers:
        fits = [n for n in (examples - last, examples - last + workers) if n > 0]
        raise ConfigError(
            f"{arg('workers', workers)}: the last batch of each epoch holds {last} example(s) ({examples} training "
            f"examples in batches of {batch_size}), fewer than the workers, which each need a slice of it; give "
            f"{' or '.join(arg('train_limit', n) for n in fits)}, another {arg('batch_size')}, or fewer workers"
        )


def check_machine(workers: int, config, batch_size: int, insist: bool = False) -> None:
    """Refuse more local workers than this machine holds, before any starts: one CPU each, and the memory each
    needs to train its slice of a batch (:func:`common.spec.memory_needed`, against ``MemAvailable``); the line
    names the most that fit. ``insist`` (the command's oversubscribe) starts them anyway."""
    if insist or workers == 1:
        return
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    each = memory_needed(config, -(-batch_size // workers))
    free = available_memory()
    fits = min(cpus, free // each if free is not None else cpus)
    if workers > fits:
        memory = f" and {format_bytes(free)} of free memory ({format_bytes(each)} a worker at least)" if free else ""
        raise ConfigError(
            f"{arg('workers', workers)}: this machine has {cpus} CPU(s){memory}, room for at most {max(fits, 1)} "
            f"worker(s); give {arg('workers', max(fits, 1))}, or add {arg('oversubscribe', True)} to start "
            f"{workers} anyway"
        )


def check_port(port: int) -> None:
    """Refuse a port of 127.0.0.1 that something already listens on (or that cannot be bound)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError as e:
            raise ConfigError(
                f"port {port} on {HOST} is in use ({e.strerror}); give another {arg('port')}, or leave it out "
                f"to have free ones picked"
            ) from None


def free_ports(n: int, first: int | None = None) -> list[int]:
    """``n`` ports of 127.0.0.1: ``first``, ``first + 1``, ... (each checked free), or ``n`` free ones picked now."""
    if first is not None:
        if not 0 < first <= 65536 - n:
            raise ConfigError(
                f"{arg('port', first)}: the run needs ports {first}..{first + n - 1}; give one in 1..{65536 - n}"
            )
        ports = list(range(first, first + n))
        for port in ports:
            check_port(port)
        return ports
    sockets = []
    try:
        for _ in range(n):  # held open together, so the n ports differ
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def threads_per_worker(workers: int) -> int:
    """CPU threads for each of ``workers`` local workers: the CPUs shared out, at least one."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cpus // workers)


def plan(backend: str, argv: Sequence[str], workers: int, port: int | None = None) -> list[Process]:
    """The processes of a local ``workers``-worker run of ``python -m common.cli ARGV``, with each engine's variables.

    PyTorch: ``MASTER_ADDR``/``MASTER_PORT``/``RANK``/``WORLD_SIZE`` (what ``torchrun`` sets: ``env://``);
    TensorFlow: one ``TF_CONFIG`` per worker; MXNet: ``DMLC_*`` for a scheduler, one server and the workers
    (the scheduler and server are MXNet itself: importing it with ``DMLC_ROLE`` set runs their loop); JAX:
    ``JAX_COORDINATOR_ADDRESS`` and ``JAX_COORDINATOR_BIND_ADDRESS`` (JAX's own; worker 0 runs the coordinator,
    bound to 127.0.0.1 only) with ``VGG_JAX_NUM_PROCESSES`` and ``VGG_JAX_PROCESS_ID``.
    """
    threads = str(threads_per_worker(workers))
    base = child_env(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, PYTHONUNBUFFERED="1")
    command = python_module("common.cli", *argv)
    if backend == "torch":
        (master,) = free_ports(1, port)
        common = {
            "MASTER_ADDR": HOST,
            "MASTER_PORT": str(master),
            "WORLD_SIZE": str(workers),
            "LOCAL_WORLD_SIZE": str(workers),
            "GLOO_SOCKET_IFNAME": "lo",
        }
        return [
            Process("worker", r, command, {**base, **common, "RANK": str(r), "LOCAL_RANK": str(r), LAUNCHED: str(r)})
            for r in range(workers)
        ]
    if backend == "tf":
        hosts = [f"{HOST}:{p}" for p in free_ports(workers, port)]
        tf_threads = {"TF_NUM_INTRAOP_THREADS": threads, "TF_NUM_INTEROP_THREADS": "1"}
        return [
            Process(
                "worker",
                r,
                command,
                {
                    **base,
                    **tf_threads,
                    "TF_CPP_MIN_LOG_LEVEL": "3",  # a lost peer is named by the parent, not by TensorFlow's log
                    LAUNCHED: str(r),
                    "TF_CONFIG": json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": r}}),
                },
            )
            for r in range(workers)
        ]
    if backend == "mxnet":
        (root,) = free_ports(1, port)
        dmlc = {
            "DMLC_PS_ROOT_URI": HOST,
            "DMLC_PS_ROOT_PORT": str(root),
            "DMLC_NODE_HOST": HOST,
            "DMLC_NUM_SERVER": "1",
            "DMLC_NUM_WORKER": str(workers),
            "PS_VERBOSE": "0",
        }
        serve = [sys.executable, "-c", "import vgg_mxnet"]  # MXNet runs the role's loop on import, then exits
        one = {**base, **dmlc, "OMP_NUM_THREADS": "1", "MXNET_OMP_MAX_THREADS": "1"}
        return [
            Process("scheduler", 0, serve, {**one, "DMLC_ROLE": "scheduler"}),
            Process("server", 0, serve, {**one, "DMLC_ROLE": "server"}),
            *(
                Process("worker", r, command, {**base, **dmlc, "DMLC_ROLE": "worker", LAUNCHED: str(r)})
                for r in range(workers)
            ),
        ]
    if backend == "jax":
        (coordinator,) = free_ports(1, port)
        address = f"{HOST}:{coordinator}"
        run = {"JAX_COORDINATOR_ADDRESS": address, "JAX_COORDINATOR_BIND_ADDRESS": address}
        run |= {"VGG_JAX_NUM_PROCESSES": str(workers), "TF_CPP_MIN_LOG_LEVEL": "3"}  # XLA's log, as TensorFlow's
        return [
            Process("worker", r, command, {**base, **run, "VGG_JAX_PROCESS_ID": str(r), LAUNCHED: str(r)})
            for r in range(workers)
        ]
    raise ConfigError(f"unknown backend {backend!r}")


def launch(
    backend: str,
    argv: Sequence[str],
    workers: int,
    port: int | None = None,
    checkpoint: Path | None = None,
    resume_hint: str = "",
) -> int:
    """Run ``python -m common.cli ARGV`` as ``workers`` local workers of ``backend``'s engine; the exit status.

    Rank 0 prints the progress and the history and writes the files; the others are quiet. A process that
    dies stops the rest, and one line names it (or, where workers gave up on a collective, the workers that
    stopped answering), the last epoch saved in ``checkpoint`` and how to go on.
    """
    processes = plan(backend, argv, workers, port)
    with tempfile.TemporaryDirectory(prefix="vgg-workers-") as notes:
        for proc in processes:
            if proc.role == "worker":
                proc.env[ERROR_NOTE] = str(Path(notes) / str(proc.index))
        failure = run_processes(processes)
        note = Path(notes) / str(failure.process.index) if failure is not None else None
        said = note.read_text().strip() if note is not None and note.is_file() else ""
    if failure is None:
        return 0
    if failure.process.role == "worker" and failure.process.index == 0 and failure.code in (2, PIPE_GONE):
        # an error of the project's own, which worker 0 printed (every worker met the same); or the reader of
        # worker 0's output went away (`| head`): the run ends quietly, as one process does
        return failure.code
    if failure.process.role == "worker" and failure.code == REFUSED and said:  # its own error, left unsaid
        print(f"error: worker {failure.process.index} of {workers}: {said}", file=sys.stderr, flush=True)
        return REFUSED
    print(
        f"error: {failure.describe(workers)}; the other processes were stopped. {saved(checkpoint, resume_hint)}",
        file=sys.stderr,
        flush=True,
    )
    return FAILED


def saved(checkpoint: Path | None, resume_hint: str = "") -> str:
    """What a stopped run kept: the last saved epoch and how to continue, or that nothing was saved."""
    if checkpoint is None:
        return "Nothing was saved (a run given a folder to save in saves every epoch)."
    if not checkpoint.is_file():
        return "Nothing was saved (no epoch finished)."

    meta = read_checkpoint_meta(checkpoint)
    return f"The last saved epoch is {meta['epoch']} of {meta['recipe']['num_epochs']}, in {checkpoint}" + (
        f"; continue with: {resume_hint}" if resume_hint else ""
    )


# --- the cost of scale --------------------------------------------------------------------------------------

# Link bandwidths of the model, bytes per second: Ethernet, InfiniBand/RoCE-class, NVLink-class (~400 GB/s).
BANDWIDTHS = {"10 Gb/s": 10e9 / 8, "100 Gb/s": 100e9 / 8, "NVLink ~400 GB/s": 400e9}
WORKER_COUNTS = (1, 2, 4, 8, 16, 32, 64)


def gradient_bytes(params: int) -> int:
    """Bytes of one float32 gradient of ``params`` parameters: what an all-reduce moves per step."""
    return 4 * params


def allreduce_seconds(params: int, workers: int, bandwidth: float) -> float:
    """Seconds a ring all-reduce of the gradients takes: each worker sends and receives 2(N-1)/N of them."""
    return 2 * (workers - 1) / workers * gradient_bytes(params) / bandwidth


@dataclass(frozen=True)
class Scaling:
    """One point of the model: seconds of compute and of communication per step, and what they make."""

    workers: int
    compute: float
    communication: float

    @property
    def step(self) -> float:
        return self.compute + self.communication  # no overlap of the two: the model's bound from below

    @property
    def speedup(self) -> float:
        return self.compute * self.workers / self.step

    @property
    def efficiency(self) -> float:
        """Speedup over one worker divided by the workers: 1 is perfect scaling."""
        return self.speedup / self.workers


def predict(config, batch: int, workers: int, flops_per_s: float, bandwidth: float, per_worker=False) -> Scaling:
    """Step time of ``workers`` data-parallel workers on ``config``, from ``common.spec``'s FLOPs and the ring.

    Compute: the training FLOPs (6 x MACs per example) of each worker's examples at ``flops_per_s``: the
    global ``batch`` split ``workers`` ways (the project's ``--batch-size``), or ``batch`` each with
    ``per_worker``. Communication: :func:`allreduce_seconds` at ``bandwidth`` bytes/s.
    """

    s = spec(config)
    examples = batch if per_worker else batch / workers
    return Scaling(workers, examples * s.train_flops / flops_per_s, allreduce_seconds(s.params, workers, bandwidth))


def scaling_rows(config, batch: int, flops_per_s: float, per_worker=False, counts=WORKER_COUNTS) -> list[list]:
    """Rows ``[workers, efficiency at each of BANDWIDTHS]`` of the model's table."""
    return [
        [n, *(f"{predict(config, batch, n, flops_per_s, bw, per_worker).efficiency:.0%}" for bw in BANDWIDTHS.values())]
        for n in counts
    ]
