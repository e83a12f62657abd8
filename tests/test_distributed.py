"""Data parallel on each framework's own engine: N workers compute the one-process run of the global batch.

Every process binds and connects to 127.0.0.1 only, on ports picked free; every subprocess has a timeout
and its whole process group is killed in a ``finally``. Networks are small (VGG-11 at ratio 16, 32 px,
fc_hidden 64) and runs a few steps long, one CPU thread per worker.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import json
import os
import signal
import socket
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
from conftest import load_backend
from helpers import SHALLOW_CLI, TINY_CLI, kill_group, one_line, run_in_process, run_vgg, start_vgg

from common import distributed
from common.arch import MAX_INT, config_from_dict
from common.checkpoint import read_checkpoint_meta
from common.distributed import HOST, check_port, free_ports, plan, shard, worker_env
from common.errors import ConfigError
from common.processes import Process, run_processes
from common.recipe import Recipe
from common.report import compare_rows
from common.weights import load_npz, xavier_init

# The small run every engine test trains: 5 SGD steps of a 64-example global batch on real Fashion-MNIST.
SMALL = (
    "--arch vgg11 --ratio 16 --fc-hidden 64 --resize 32 --dropout 0 --batch-size 64 --train-limit 300 "
    "--test-limit 128 --lr 0.1"
).split()


# One OpenMP and MKL thread per process (a distributed run sets its workers' own counts).
THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# Every run in a process group of its own, killed whole at its end: no worker outlives the test.
GROUP = dict(env=THREADS, own_group=True)


# --- the framework-free parts ---------------------------------------------------------------------------


@pytest.mark.parametrize("batch, size", [(64, 2), (65, 2), (44, 3), (7, 7), (3, 5), (128, 64)])
def test_shards_are_contiguous_in_rank_order_and_cover_the_global_batch(batch, size):
    parts = [shard(batch, r, size) for r in range(size)]
    assert np.array_equal(np.concatenate([np.arange(batch)[p] for p in parts]), np.arange(batch))
    lengths = [p.stop - p.start for p in parts]
    assert max(lengths) - min(lengths) <= 1 and lengths == sorted(lengths, reverse=True)


# How each engine combines the workers' gradients: DDP averages them, Keras 3's optimizer under
# MultiWorkerMirroredStrategy all-reduces their sum, MXNet's kvstore servers sum them, and so does the all-reduce
# XLA puts in JAX's step.
COMBINES = {"torch": np.mean, "tf": np.sum, "mxnet": np.sum, "jax": np.sum}


@pytest.mark.parametrize("backend", list(COMBINES))
def test_the_scaled_worker_losses_combine_to_the_global_mean(backend):
    """The one scaling rule every backend's data-parallel step uses: what its engine makes of the scaled
    losses is the global batch's mean."""
    losses = np.random.default_rng(0).random(65)  # per-example losses of one global batch
    size = 3
    per_worker = [losses[shard(65, r, size)].sum() * distributed.loss_scale(size, 65, backend) for r in range(size)]
    assert np.isclose(COMBINES[backend](per_worker), losses.mean(), rtol=1e-12)
    with pytest.raises(ConfigError, match="unknown backend"):
        distributed.loss_scale(size, 65, "caffe")


MASTER = {"MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"}  # torchrun sets them beside WORLD_SIZE
JAX_3 = {"VGG_JAX_NUM_PROCESSES": "3", "VGG_JAX_PROCESS_ID": "2", "JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"}


def _tf(workers, **task):
    return {"TF_CONFIG": json.dumps({"cluster": {"worker": [f"h{n}:1" for n in range(workers)]}, "task": task})}


@pytest.mark.parametrize(
    ("backend", "variables", "worker"),
    [
        ("torch", {}, None),
        ("torch", {"WORLD_SIZE": "1"}, None),
        ("torch", {"WORLD_SIZE": "4", "RANK": "3", **MASTER}, distributed.Worker(3, 4)),
        ("torch", {"WORLD_SIZE": "2", **MASTER}, distributed.Worker(0, 2, 0)),  # RANK and LOCAL_RANK default to 0
        ("torch", {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", **MASTER}, distributed.Worker(1, 2, 1)),
        ("torch", {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", **MASTER}, distributed.Worker(0, 2, 0)),
        ("torch", {"WORLD_SIZE": "2", **MASTER, "MASTER_PORT": "1"}, distributed.Worker(0, 2)),
        ("torch", {"WORLD_SIZE": "2", **MASTER, "MASTER_PORT": "65535"}, distributed.Worker(0, 2)),
        (
            "torch",
            {"WORLD_SIZE": str(MAX_INT), "RANK": str(MAX_INT - 1), **MASTER},
            distributed.Worker(MAX_INT - 1, MAX_INT),
        ),
        ("tf", {}, None),
        ("tf", {"TF_CONFIG": "{}"}, None),  # no cluster, no workers: one process
        ("tf", {"TF_CONFIG": '{"cluster": {}}'}, None),
        ("tf", _tf(1), None),  # one worker needs no task
        ("tf", _tf(2, type="worker", index=1), distributed.Worker(1, 2)),
        ("tf", _tf(2, type="worker", index=0), distributed.Worker(0, 2)),
        ("mxnet", {"DMLC_ROLE": "server", "DMLC_NUM_WORKER": "2"}, None),
        ("mxnet", {"DMLC_ROLE": "worker", "DMLC_NUM_WORKER": "2"}, distributed.Worker(None, 2)),
        ("mxnet", {"DMLC_ROLE": "worker"}, distributed.Worker(None, 1)),  # DMLC_NUM_WORKER defaults to 1
        ("mxnet", {"DMLC_ROLE": "worker", "DMLC_NUM_WORKER": "1"}, distributed.Worker(None, 1)),
        ("jax", {}, None),
        ("jax", {"VGG_JAX_NUM_PROCESSES": "1"}, None),
        ("jax", JAX_3, distributed.Worker(2, 3)),
        ("jax", {**JAX_3, "VGG_JAX_PROCESS_ID": "0"}, distributed.Worker(0, 3)),
        ("jax", {**JAX_3, "JAX_COORDINATOR_ADDRESS": "10.0.0.1:1"}, distributed.Worker(2, 3)),
        ("jax", {**JAX_3, "JAX_COORDINATOR_ADDRESS": "10.0.0.1:65535"}, distributed.Worker(2, 3)),
    ],
)
def test_the_place_of_a_worker_comes_from_each_engines_own_variables(backend, variables, worker):
    """Down to each variable's bounds: the least counts and ranks, ports 1 and 65535, one TensorFlow worker."""
    assert worker_env(backend, variables) == worker


@pytest.mark.parametrize(
    ("backend", "variables", "says"),
    [
        ("torch", {"WORLD_SIZE": "0"}, "WORLD_SIZE='0' in the environment is no whole number of at least 1; "),
        ("torch", {"WORLD_SIZE": str(MAX_INT + 1)}, f"WORLD_SIZE='{MAX_INT + 1}' in the environment is no whole"),
        ("torch", {"WORLD_SIZE": "2", "RANK": "-1"}, "RANK='-1' in the environment is no whole number of at least 0"),
        ("torch", {"WORLD_SIZE": "2", "RANK": "2"}, "RANK 2 is not one of 2 workers' (0..1); give each worker its"),
        ("torch", {"WORLD_SIZE": "2", "LOCAL_RANK": "-1"}, "LOCAL_RANK='-1' in the environment is no whole number"),
        (
            "torch",
            {"WORLD_SIZE": "2", "MASTER_ADDR": "10.0.0.1"},
            "WORLD_SIZE=2 in the environment describes a distributed run, but MASTER_PORT is not set; set them",
        ),
        ("torch", {"WORLD_SIZE": "2", "MASTER_PORT": "29500"}, "but MASTER_ADDR is not set; set them as torchrun"),
        ("torch", {"WORLD_SIZE": "2"}, "but MASTER_ADDR and MASTER_PORT are not set; set them as torchrun does"),
        (
            "torch",
            {"WORLD_SIZE": "2", **MASTER, "MASTER_PORT": "65536"},
            "MASTER_PORT='65536' in the environment is no port; give 1..65535",
        ),
        ("torch", {"WORLD_SIZE": "2", **MASTER, "MASTER_PORT": "0"}, "MASTER_PORT='0' in the environment is no whole"),
        ("torch", {"WORLD_SIZE": "2", **MASTER, "MASTER_PORT": "http"}, "MASTER_PORT='http' in the environment is no"),
        ("tf", {"TF_CONFIG": "[]"}, "TF_CONFIG in the environment is not TensorFlow's cluster description (Attr"),
        ("tf", {"TF_CONFIG": '{"cluster": {"worker": 2}}'}, "is not TensorFlow's cluster description (TypeError"),
        ("tf", _tf(2, type="worker", index=2), "TF_CONFIG's task index 2 is not one of 2 workers' (0..1)"),
        ("tf", _tf(2, type="worker", index=-1), "TF_CONFIG's task index -1 is not one of 2 workers' (0..1)"),
        ("tf", _tf(2, type="worker", index="1"), "TF_CONFIG's task index is '1'; give a whole number"),
        ("tf", _tf(2, type="worker", index=True), "TF_CONFIG's task index is True; give a whole number"),
        ("mxnet", {"DMLC_ROLE": "worker", "DMLC_NUM_WORKER": "0"}, "DMLC_NUM_WORKER='0' in the environment is no "),
        ("jax", {"VGG_JAX_NUM_PROCESSES": "0"}, "VGG_JAX_NUM_PROCESSES='0' in the environment is no whole number of"),
        (
            "jax",
            {**JAX_3, "JAX_COORDINATOR_ADDRESS": ""},
            "VGG_JAX_NUM_PROCESSES=3 in the environment describes a distributed run, but JAX_COORDINATOR_ADDRESS is "
            "not set; set JAX_COORDINATOR_ADDRESS=HOST:PORT (process 0's) and VGG_JAX_PROCESS_ID (0..2) in each",
        ),
        ("jax", {**JAX_3, "VGG_JAX_PROCESS_ID": ""}, "distributed run, but VGG_JAX_PROCESS_ID is not set; set JAX_"),
        ("jax", {**JAX_3, "VGG_JAX_PROCESS_ID": "-1"}, "VGG_JAX_PROCESS_ID='-1' in the environment is no whole number"),
        ("jax", {**JAX_3, "VGG_JAX_PROCESS_ID": "3"}, "VGG_JAX_PROCESS_ID 3 is not one of 3 workers' (0..2)"),
        (
            "jax",
            {**JAX_3, "JAX_COORDINATOR_ADDRESS": "10.0.0.1:65536"},
            "JAX_COORDINATOR_ADDRESS='10.0.0.1:65536' in the environment is no HOST:PORT (a port of 1..65535)",
        ),
        (
            "jax",
            {**JAX_3, "JAX_COORDINATOR_ADDRESS": "10.0.0.1:0"},
            "JAX_COORDINATOR_ADDRESS='10.0.0.1:0' in the environment is no HOST:PORT",
        ),
        ("jax", {**JAX_3, "JAX_COORDINATOR_ADDRESS": ":1234"}, "JAX_COORDINATOR_ADDRESS=':1234' in the environment"),
        ("caffe", {}, "unknown backend 'caffe'"),
    ],
)
def test_the_place_of_a_worker_past_the_bounds_of_a_variable_is_refused_naming_it(backend, variables, says):
    """One line naming the variable and what to give; test_an_engines_variable_that_is_no_run_is_one_line shows
    such lines reaching the command line."""
    with pytest.raises(ConfigError) as refused:
        worker_env(backend, variables)
    assert says in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.parametrize("backend", list(distributed.ENGINES))
def test_local_processes_use_127_0_0_1_and_distinct_free_ports(backend):
    processes = plan(backend, ["train"], 3)
    workers = [p for p in processes if p.role == "worker"]
    assert [p.index for p in workers] == [0, 1, 2]
    assert all(p.env["OMP_NUM_THREADS"] == str(distributed.threads_per_worker(3)) for p in workers)
    if backend == "torch":
        assert {p.env["MASTER_ADDR"] for p in workers} == {HOST}
        assert [p.env["RANK"] for p in workers] == ["0", "1", "2"] and workers[0].env["GLOO_SOCKET_IFNAME"] == "lo"
    if backend == "tf":
        hosts = json.loads(workers[0].env["TF_CONFIG"])["cluster"]["worker"]
        assert len(set(hosts)) == 3 and all(h.startswith(f"{HOST}:") for h in hosts)
        assert [json.loads(p.env["TF_CONFIG"])["task"]["index"] for p in workers] == [0, 1, 2]
    if backend == "mxnet":
        assert [p.role for p in processes] == ["scheduler", "server", "worker", "worker", "worker"]
        assert {p.env["DMLC_PS_ROOT_URI"] for p in processes} == {HOST}
        assert {p.env["DMLC_ROLE"] for p in processes} == {"scheduler", "server", "worker"}
    if backend == "jax":  # worker 0's coordinator listens on 127.0.0.1 only (JAX's default: every address)
        (address,) = {p.env["JAX_COORDINATOR_ADDRESS"] for p in workers}
        assert address.startswith(f"{HOST}:") and {p.env["JAX_COORDINATOR_BIND_ADDRESS"] for p in workers} == {address}
        assert [p.env["VGG_JAX_PROCESS_ID"] for p in workers] == ["0", "1", "2"]
        assert {p.env["VGG_JAX_NUM_PROCESSES"] for p in workers} == {"3"}


def test_a_port_in_use_is_refused_and_free_ports_differ():
    with socket.socket() as s:
        s.bind((HOST, 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ConfigError, match=f"port {port} on 127.0.0.1 is in use"):
            check_port(port)
    ports = free_ports(8)
    assert len(set(ports)) == 8


def test_a_killed_process_stops_the_others_at_once():
    sleep = [sys.executable, "-c", "import time; time.sleep(600)"]
    suicide = [sys.executable, "-c", "import os, signal, time; time.sleep(0.5); os.kill(os.getpid(), signal.SIGKILL)"]
    processes = [Process("worker", 0, sleep, dict(os.environ)), Process("worker", 1, suicide, dict(os.environ))]
    began = time.monotonic()
    failure = run_processes(processes)
    assert time.monotonic() - began < 30
    assert failure.process.index == 1 and failure.describe(2).endswith("was killed by SIGKILL")
    assert "worker 1 of 2 (pid " in failure.describe(2)
    with pytest.raises(ProcessLookupError):  # the sleeper was stopped with it
        os.kill(failure.pid, 0)


def test_the_killed_worker_is_named_not_the_one_that_aborted_on_losing_it(tmp_path):
    """Gloo aborts (SIGABRT) a PyTorch worker whose peer was killed; when both have died by the launcher's next
    look, the line still names the one a signal from outside killed."""
    marker = tmp_path / "killed"
    killed = [
        sys.executable,
        "-c",
        f"import os, signal, time; time.sleep(0.3); open({str(marker)!r}, 'w').close(); "
        f"os.kill(os.getpid(), signal.SIGKILL)",
    ]
    aborts = [
        sys.executable,
        "-c",
        f"import os, time\nwhile not os.path.exists({str(marker)!r}): time.sleep(0.01)\ntime.sleep(0.05); os.abort()",
    ]
    processes = [Process("worker", 0, aborts, dict(os.environ)), Process("worker", 1, killed, dict(os.environ))]
    failure = run_processes(processes, poll=2.0)  # both are dead at the first look
    assert failure.describe(2).startswith("worker 1 of 2 (pid ")
    assert failure.describe(2).endswith("was killed by SIGKILL")


@pytest.mark.parametrize("stalls", [True, False])
def test_workers_that_gave_up_on_a_collective_name_the_one_still_in_it(stalls, monkeypatch):
    """Exit status LOST (WorkerLost in a launched worker) is no error of the worker's own: the parent names the
    workers still running a moment later, or says that the workers lost each other."""
    monkeypatch.setenv("VGG_DIST_TIMEOUT", "7")
    gives_up = [sys.executable, "-c", f"import sys, time; time.sleep(0.3); sys.exit({distributed.LOST})"]
    stalled = [sys.executable, "-c", "import time; time.sleep(600)"] if stalls else gives_up
    processes = [Process("worker", 0, gives_up, dict(os.environ)), Process("worker", 1, stalled, dict(os.environ))]
    began = time.monotonic()
    failure = run_processes(processes, settle=1.0)
    assert time.monotonic() - began < 30
    slow = "(VGG_DIST_TIMEOUT; raise it where a worker is only slow)"
    if stalls:
        ((index, pid),) = failure.stalled
        assert index == 1
        assert failure.describe(2) == (
            f"worker 1 of 2 (pid {pid}) stopped answering: worker 0 waited 7 s for it in a collective {slow}"
        )
        assert gone(pid)  # stopped with the others
    else:
        assert failure.stalled == () and failure.describe(2) == (
            f"the workers lost each other: worker 0 of 2 (pid {failure.pid}) gave up on a collective after 7 s {slow}"
        )


# --- the command line: errors before any worker starts ----------------------------------------------------


def test_a_port_in_use_is_one_line(tmp_path, capsys):
    with socket.socket() as s:
        s.bind((HOST, 0))
        s.listen()
        port = s.getsockname()[1]
        done = run_in_process(capsys, "train", "--backend", "torch", "--workers", "2", "--port", port, *SMALL)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert (
        done.stderr.strip() == f"error: port {port} on 127.0.0.1 is in use (Address already in use); give "
        "another --port, or leave it out to have free ones picked"
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--workers", "65"], "--workers 65 is more than the global batch of 64 examples (--batch-size)"),
        (["--sync-bn"], "--sync-bn synchronizes batch norm across workers: add --workers N (N > 1)"),
        (["--workers", "2", "--sync-bn", "--no-batch-norm"], "--sync-bn synchronizes batch norm: add --batch-norm"),
    ],
)
def test_a_worker_count_the_run_cannot_use_is_one_line(args, message, capsys):
    done = run_in_process(capsys, "train", "--backend", "torch", *SMALL, *args)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr


# --- each engine: N workers hold to the one-process run --------------------------------------------------


def weights(folder: Path) -> tuple[dict, dict]:
    arrays, meta = load_npz(folder / "weights.npz")
    return arrays, xavier_init(config_from_dict(meta["config"]), 0)


def assert_same_run(one: Path, many: Path, rtol=1e-5, dead=lambda name: False) -> None:
    """The final weights of both runs agree to ``rtol``, and so do the steps they took from the shared start.

    ``dead(name)``: a weight left out, whose gradient is zero but for rounding (a conv bias before batch norm).
    """
    (a, start), (b, _) = weights(one), weights(many)
    assert a.keys() == b.keys()
    moved = 0.0
    for name in (k for k in a if not dead(k)):
        scale = np.abs(a[name]).max() or 1.0
        assert np.abs(a[name] - b[name]).max() <= rtol * scale, f"{name}: {np.abs(a[name] - b[name]).max() / scale:.2e}"
        if name in start:  # what training changed: the same update, not just the same starting point
            step_a, step_b = a[name] - start[name], b[name] - start[name]
            assert np.abs(step_a - step_b).max() <= 1e-3 * (np.abs(step_a).max() + 1e-12), name
            moved = max(moved, np.abs(step_a).max())
    assert moved > 1e-4  # training moved the weights: the comparison above says something
    ha = json.loads((one / "history.json").read_text())["history"]["epochs"]
    hb = json.loads((many / "history.json").read_text())["history"]["epochs"]
    for ea, eb in zip(ha, hb, strict=True):  # the global batch's loss and accuracy, gathered from the workers
        assert ea["loss"] == pytest.approx(eb["loss"], rel=1e-5) and ea["train_acc"] == eb["train_acc"]
        assert ea["test_acc"] == eb["test_acc"]


def train_both(backend, tmp_path, capsys, *extra, workers=2, sync_bn=False) -> tuple[Path, Path]:
    """The same small run in one process and in ``workers`` workers (with ``--sync-bn`` there if ``sync_bn``).

    The one-process run, the reference, runs in this process (its framework is loaded already); the workers'
    run is a `vgg` command of its own, in its own process group.
    """
    out = {}
    for n in (1, workers):
        out[n] = tmp_path / f"w{n}"
        more = ["--sync-bn"] if sync_bn and n > 1 else []
        args = ["train", "--backend", backend, *SMALL, "--epochs", "1", *extra, *more, "--workers", n, "--out", out[n]]
        # Gluon's reference runs as a command too, so that its run and the workers' differ in the workers only
        here = n == 1 and backend != "mxnet"
        done = run_in_process(capsys, *args) if here else run_vgg(*args, timeout=240, **GROUP)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        if n > 1:  # rank 0 alone prints the progress and the history
            assert done.stdout.count("epoch 1, loss") == 1 and f"{n} workers" in done.stdout
    return out[1], out[workers]


def test_gluon_workers_draw_their_own_dropout_masks_each_epoch():
    """Rank 0 seeds Gluon's dropout as one process does; every other rank from (seed, epoch, rank).

    (All ranks once drew the same masks for their slices, which moved a 2-worker compare's test accuracy
    by up to 0.05: docs/distributed.md.)
    """
    load_backend("mxnet")
    import mxnet as mx

    gluon_train = importlib.import_module("vgg_mxnet.train")  # the module (the package's `train` is the function)

    def draws(cls, rank, epoch):
        trainer = object.__new__(cls)  # the epoch's seeding alone: no network, no kvstore
        trainer.recipe, trainer.rank = Recipe(3, seed=7), rank
        trainer.opt = types.SimpleNamespace(set_learning_rate=lambda lr: None)
        trainer.start_epoch(epoch, 0.05)
        return mx.nd.random.uniform(shape=(16,)).asnumpy()

    one = draws(gluon_train.Trainer, 0, 2)
    assert np.array_equal(draws(gluon_train.DistributedTrainer, 0, 2), one)
    rank1 = draws(gluon_train.DistributedTrainer, 1, 2)
    assert not np.array_equal(rank1, one) and np.array_equal(draws(gluon_train.DistributedTrainer, 1, 2), rank1)
    assert not np.array_equal(draws(gluon_train.DistributedTrainer, 1, 3), rank1)


@pytest.mark.parametrize("name", ["torch", "tf"])
def test_after_a_resume_workers_above_rank_0_draw_their_own_dropout_masks(name):
    """A checkpoint holds rank 0's dropout generators only: restored as they are, every worker would draw
    rank 0's masks for its own slice. Rank 0 takes them back; the others reseed from (seed, rank, state)."""
    backend = load_backend(name)
    module = importlib.import_module(f"vgg_{name}.train")
    net = backend.vgg(arch="vgg11", ratio=16, input_size=32, fc_hidden=64, dropout=0.5)
    trainer = object.__new__(module.DistributedTrainer)  # the restore alone: no process group
    trainer.recipe, trainer.device, trainer.net, trainer.forward = Recipe(2, seed=5), "cpu", net, net

    def restored(rank, saved):
        trainer.rank = rank
        trainer.set_rng_state(saved)
        return module.Trainer.rng_state(trainer)  # the generators dropout draws from now

    saved = module.Trainer.rng_state(trainer)
    assert all(np.array_equal(restored(0, saved)[k], saved[k]) for k in saved)  # rank 0: the saved stream
    ranks = [restored(r, saved) for r in (1, 2, 1)]
    assert all(not np.array_equal(ranks[0][k], saved[k]) for k in saved)  # its own, not rank 0's
    assert all(not np.array_equal(ranks[0][k], ranks[1][k]) for k in saved)  # and not another rank's
    assert all(np.array_equal(ranks[0][k], ranks[2][k]) for k in saved)  # the same again on the same resume


# Twenty steps: 1,280 images in global batches of 64. Measured (2026-12-07, 2-core VM, one thread per process):
# the worst tensor, weights or biases, differs by 8.9e-8 (weights) and 8.3e-7 to 1.3e-6 (biases, relative to the
# tensor's largest value) in all three backends, where 5 steps said little about drift. The bound is 1e-5 per
# tensor. (A run that sits at chance, VGG-11 at ratio 8 and lr 0.05, can differ by 1e-4 in a few units: a ReLU
# whose input is within rounding of zero decides differently in the two runs; docs/distributed.md.)
EQUIVALENCE_RUN = ["--no-batch-norm", "--train-limit", "1280"]
# JAX at seed 0 meets such an edge at step 18: a max-pool window of block4 whose two largest values print alike
# (0.00482525, float32), ordered one way in one run and the other way in the other, so the gradient flows through
# another position (block2.conv1.bias ends 3.2e-4 off). At the same parameters the whole batch's gradient and the
# sum of its two halves' are bitwise equal in every bias and within 5e-7 of a float64 gradient in every kernel;
# at seeds 1 to 3 no step of the 20 crosses an edge (worst tensor 1e-6 or less). Measured 2026-12-07, 2-core VM.
EQUIVALENCE_SEED = {"jax": ["--seed", "1"]}


@pytest.mark.parametrize("name", list(distributed.ENGINES))
def test_two_workers_make_the_one_process_run(name, tmp_path, capsys):
    load_backend(name)
    one, two = train_both(name, tmp_path, capsys, *EQUIVALENCE_RUN, *EQUIVALENCE_SEED.get(name, []))
    record = json.loads((one / "history.json").read_text())
    assert record["train_examples"] / record["batch_size"] == 20  # twenty steps
    assert_same_run(one, two)
    records = [json.loads((run / "history.json").read_text()) for run in (one, two)]
    headers, rows = compare_rows(records)  # what vgg compare's report.md shows
    assert [r["workers"] for r in records] == [row[headers.index("workers")] for row in rows] == [1, 2]


def test_tf_sync_bn_two_workers_normalize_over_the_global_batch(tmp_path, capsys, monkeypatch):
    """``synchronized=True`` on two workers computes what the same layer computes in one process.

    Keras' synchronized batch norm takes the variance in one pass, E[x^2] - E[x]^2 over the all-reduced sums,
    where the plain layer takes two, E[(x - mean)^2]: the same statistics up to rounding, yet after one step
    the batch-norm offsets of the two differ by up to 8e-3 (relative), rounding carried through different
    backward graphs (docs/distributed.md). So the one-process reference is built with the synchronized layer
    too, which outside a strategy normalizes over its own (global) batch with that same formula.
    """
    load_backend("tf")
    import keras

    class Synchronized(keras.layers.BatchNormalization):  # the reference's layer only: the workers' own
        def __init__(self, **kwargs):  # processes build theirs with --sync-bn
            super().__init__(synchronized=True, **kwargs)

    monkeypatch.setattr(keras.layers, "BatchNormalization", Synchronized)
    one, two = train_both("tf", tmp_path, capsys, "--batch-norm", "--train-limit", "64", sync_bn=True)
    assert_same_run(one, two, dead=lambda name: ".conv" in name and name.endswith(".bias"))


@pytest.mark.parametrize(
    "extra",
    [
        ["--dropout", "0.5", "--train-limit", "128"],  # two global batches of 64: 32 examples each
        ["--dropout", "0", "--train-limit", "97"],  # then 33 examples, 17 and 16: worker 1's slice is padded
    ],
)
def test_jax_workers_with_batch_norm_and_dropout_make_the_one_process_run(extra, tmp_path, capsys):
    """JAX's step is one jax.jit over the global batch: batch norm's statistics are the global batch's and dropout
    draws the global batch's masks from the one key (each worker's slice its own rows), so N workers compute the
    one-process run with both. A batch that does not split evenly is padded in the slices that are short, with
    examples of weight 0 that batch norm leaves out (dropout is off there: the padded batch's masks are drawn
    for its padded shape).

    A conv bias before batch norm has a gradient of zero but for rounding, and two workers' partial sums round
    otherwise than one sum: such a bias is rounding noise (it moves by 1e-7 to 1.2e-6, and the two runs' differ
    by up to 7 times their largest value), left out, and a running mean, which takes it in, is compared in units
    of the deviation batch norm divides by (6e-7 off; every other tensor 1.8e-6 at most, relative: measured
    2026-12-07, 2-core VM). The network is SHALLOW_CLI: what is tested is the global batch's statistics and masks.
    """
    load_backend("jax")
    one, two = train_both("jax", tmp_path, capsys, *SHALLOW_CLI, "--batch-norm", *extra)
    (a, _), (b, _) = weights(one), weights(two)
    means = [name for name in a if name.endswith(".running_mean")]
    assert means  # and the running variances are compared with the rest
    assert_same_run(one, two, dead=lambda name: (".conv" in name and name.endswith(".bias")) or name in means)
    for name in means:
        assert np.abs(a[name] - b[name]).max() <= 1e-5 * np.sqrt(a[name.replace("_mean", "_var")]).max(), name


@pytest.mark.parametrize(
    "name, message",
    [
        ("torch", "error: --sync-bn: PyTorch's SyncBatchNorm runs on GPUs only; on CPUs leave it out"),
        ("mxnet", "error: --sync-bn: MXNet Gluon has no batch norm synchronized across kvstore workers"),
    ],
)
def test_sync_bn_where_the_engine_lacks_it_is_one_line(name, message):
    load_backend(name)
    done = run_vgg(
        "train", "--backend", name, *SMALL, "--batch-norm", "--workers", "2", "--sync-bn", timeout=180, **GROUP
    )
    assert done.returncode != 0 and "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error")]
    assert len(lines) == 1 and lines[0].startswith(message), done.stderr


def children(pid: int) -> dict[int, dict[str, str]]:
    """The processes whose parent is ``pid``: pid -> environment."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                items = (proc / "environ").read_bytes().split(b"\0")
                found[int(proc.name)] = dict(i.decode().split("=", 1) for i in items if b"=" in i)
        except (OSError, IndexError, ValueError):
            continue
    return found


def kill_a_worker_and_resume(backend, tmp_path, capsys, epochs=6, limit="1280"):
    """Kill worker 1 after the first checkpoint: the run stops within 60 s naming it; --resume finishes it.

    The resumed run is one process, in this one: what is tested there is the checkpoint, not the process. The
    network is SHALLOW_CLI, the epochs 20 steps: the five left when worker 1 is killed take the two workers 1.3 s
    (PyTorch) to 5.7 s (JAX) (from 0.27 s to 1.1 s an epoch, 2026-12-07, 2-core VM), where the kill follows
    the checkpoint within a tenth of a second.
    """
    out = tmp_path / "run"
    args = ["train", "--backend", backend, *SMALL, *SHALLOW_CLI, "--no-batch-norm", "--epochs", epochs, "--out", out]
    p = start_vgg(*args, "--train-limit", limit, "--workers", 2, **GROUP)
    try:
        deadline = time.monotonic() + 240
        while not (out / "checkpoint.npz").is_file():
            assert p.poll() is None and time.monotonic() < deadline, p.communicate()
            time.sleep(0.05)
        victim = next(pid for pid, e in children(p.pid).items() if e.get(distributed.LAUNCHED) == "1")
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        _, err = p.communicate(timeout=60)
        assert time.monotonic() - killed < 60
    finally:
        kill_group(p)
    assert p.returncode != 0 and "Traceback" not in err
    saved = read_checkpoint_meta(out / "checkpoint.npz")["epoch"]
    assert 1 <= saved < epochs
    assert [line for line in err.splitlines() if line.startswith("error")] == [
        f"error: worker 1 of 2 (pid {victim}) was killed by SIGKILL; the other processes were stopped. The last "
        f"saved epoch is {saved} of {epochs}, in {out / 'checkpoint.npz'}; continue with: vgg train --backend "
        f"{backend} --out {out} --resume --workers 2"
    ]
    assert children(p.pid) == {}
    resume = ["train", "--backend", backend, "--out", out, "--resume", "--workers", 1]  # another count
    done = run_in_process(capsys, *resume)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resuming from {out / 'checkpoint.npz'} after epoch {saved} of {epochs}" in done.stdout
    history = json.loads((out / "history.json").read_text())["history"]["epochs"]
    assert [e["epoch"] for e in history] == list(range(1, epochs + 1))


@pytest.mark.parametrize("name", list(distributed.ENGINES))
def test_a_killed_worker_stops_the_run_and_resume_continues(name, tmp_path, capsys):
    load_backend(name)
    kill_a_worker_and_resume(name, tmp_path, capsys)


# A run of the smallest network that keeps its workers busy for minutes: what the tests below stop or kill. Its
# epochs are 4 steps: the first checkpoint, which a test may wait for, comes soon after the workers start.
LONG = (
    "--arch 1,8 --fc-hidden 32 --resize 32 --batch-size 64 --train-limit 256 --test-limit 128 --epochs 1000 --workers 2"
).split()


def descendants(pid: int) -> dict[int, dict[str, str]]:
    """Every process below ``pid`` (children, theirs, ...): pid -> environment."""
    found = children(pid)
    for child in list(found):
        found.update(descendants(child))
    return found


def gone(pid: int) -> bool:
    """Whether process ``pid`` has ended (a zombie that no one has reaped yet has ended)."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


def kill_left(pids) -> None:
    """SIGKILL each process of ``pids`` still running (workers sit in sessions of their own: no group reaches them)."""
    for pid in pids:
        if not gone(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def started_workers(p, deadline: float = 120) -> dict[int, dict[str, str]]:
    """Every process below the `vgg` process ``p`` once both workers of its run are running: pid -> environment."""
    until = time.monotonic() + deadline
    while True:
        assert p.poll() is None and time.monotonic() < until, p.communicate()
        tree = descendants(p.pid)
        if sum(distributed.LAUNCHED in env for env in tree.values()) == 2:
            return tree
        time.sleep(0.1)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel's parent-death signal is Linux's")
@pytest.mark.parametrize("command", ["train", "compare"])
def test_killing_the_parent_ends_every_process_it_started(command, tmp_path):
    """SIGKILL leaves no parent to stop the workers: the kernel ends them (and, for `vgg compare`, its `vgg train`
    and that run's workers), so none goes on writing a folder whose lock went with the parent."""
    load_backend("torch")
    out = tmp_path / "run"
    what = ["train", "--backend", "torch"] if command == "train" else ["compare", "--backends", "torch"]
    p = start_vgg(*what, *LONG, "--out", out, **GROUP)
    tree: dict = {}
    try:
        tree = started_workers(p)
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=10)
        deadline = time.monotonic() + 10
        while not all(gone(pid) for pid in tree) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [pid for pid in tree if not gone(pid)] == []
    finally:
        kill_group(p)
        kill_left(tree)


@pytest.mark.parametrize("name", ["torch", "mxnet", "jax"])
def test_a_stalled_worker_is_named_in_one_line(tmp_path, name):
    """A worker that stops answering (SIGSTOP) is alive, so nothing reports its death: the others give up on the
    collective after VGG_DIST_TIMEOUT seconds (MXNet's and JAX's gloo, which wait for good, through
    common.distributed.Watchdog), and the parent names the one still in it.

    VGG_DIST_TIMEOUT bounds every wait of the run, its start included (the workers meet once both have imported
    their framework): 3 s, where the two start within a fraction of a second of each other."""
    load_backend(name)
    out = tmp_path / "run"
    p = start_vgg(
        "train", "--backend", name, *LONG, "--out", out, env={**THREADS, "VGG_DIST_TIMEOUT": "3"}, own_group=True
    )
    tree: dict = {}
    try:
        tree = started_workers(p)
        deadline = time.monotonic() + 120
        while not (out / "checkpoint.npz").is_file():
            assert p.poll() is None and time.monotonic() < deadline, p.communicate()
            time.sleep(0.05)
        victim = next(pid for pid, env in tree.items() if env.get(distributed.LAUNCHED) == "1")
        os.kill(victim, signal.SIGSTOP)
        stopped = time.monotonic()
        _, err = p.communicate(timeout=60)
        assert time.monotonic() - stopped < 30  # 3 s of the timeout, 3 s for the others to give up too
    finally:
        kill_group(p)
        kill_left(tree)
    saved = read_checkpoint_meta(out / "checkpoint.npz")["epoch"]
    assert p.returncode == 1 and "Traceback" not in err
    assert err.splitlines() == [
        f"error: worker 1 of 2 (pid {victim}) stopped answering: worker 0 waited 3 s for it in a collective "
        f"(VGG_DIST_TIMEOUT; raise it where a worker is only slow); the other processes were stopped. The last "
        f"saved epoch is {saved} of 1000, in {out / 'checkpoint.npz'}; continue with: vgg train --backend {name} "
        f"--out {out} --resume --workers 2"
    ]
    assert all(gone(pid) for pid in tree)


# --- the cost of scale -------------------------------------------------------------------------------------


def test_the_ring_allreduce_moves_2_n_minus_1_over_n_of_the_gradient():
    assert distributed.allreduce_seconds(1_000_000, 1, 1e9) == 0.0  # one worker: nothing to exchange
    assert distributed.allreduce_seconds(1_000_000, 2, 1e9) == pytest.approx(4e6 / 1e9)  # 4 MB each way once
    assert distributed.allreduce_seconds(1_000_000, 64, 1e9) == pytest.approx(2 * 63 / 64 * 4e6 / 1e9)


def test_the_model_splits_the_spec_flops_and_loses_efficiency_with_more_workers():
    from common.arch import make_config
    from common.spec import spec

    vgg16 = make_config("vgg16", 3, 1000, 224)
    s = spec(vgg16)
    assert s.params == 138_357_544
    one, two = (distributed.predict(vgg16, 128, n, 1e12, 100e9 / 8) for n in (1, 2))
    assert one.compute == pytest.approx(128 * 6 * s.macs / 1e12) and one.communication == 0
    assert two.compute == pytest.approx(one.compute / 2) and two.communication == pytest.approx(4 * s.params / 12.5e9)
    effs = [distributed.predict(vgg16, 128, n, 1e12, 100e9 / 8).efficiency for n in distributed.WORKER_COUNTS]
    assert effs[0] == 1 and all(a > b for a, b in itertools.pairwise(effs))
    fast = distributed.predict(vgg16, 128, 8, 1e12, distributed.BANDWIDTHS["NVLink ~400 GB/s"]).efficiency
    assert fast > effs[3]  # a faster link scales better
    rows = distributed.scaling_rows(vgg16, 128, 1e12)
    assert [r[0] for r in rows] == list(distributed.WORKER_COUNTS) and len(rows[0]) == 1 + len(distributed.BANDWIDTHS)


def test_bench_measures_one_and_two_processes_beside_the_model():
    done = run_vgg(
        "bench",
        "--backends",
        "torch",
        "--workers",
        "2",
        "--resize",
        "32",
        "--ratio",
        "8",
        "--batch-size",
        "32",
        "--steps",
        "2",
        timeout=240,
        **GROUP,
    )
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines() if line.startswith("PyTorch")]
    assert [r[2] for r in rows] == ["1", "2"]  # processes, after the engine's name
    assert all(float(r[3]) > 0 for r in rows) and rows[0][4:6] == ["1.00x", "100%"]
    assert rows[1][6].endswith("%") and 0 < int(rows[1][6][:-1]) <= 100  # the model's efficiency for 2


def test_bench_workers_refuses_a_sweep(capsys):
    done = run_in_process(capsys, "bench", "--backends", "torch", "--workers", "2", "--sweep")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "--workers measures data-parallel training alone" in done.stderr.strip().splitlines()[-1]


# --- the environment and the devices of a distributed run ----------------------------------------------------------


def test_workers_asking_for_a_gpu_the_framework_does_not_see_are_refused(capsys):
    load_backend("tf")  # no GPU build of TensorFlow is installed here, so it sees none
    train = ["train", "--backend", "tf", *TINY_CLI, "--epochs", "1", "--train-limit", "64", "--workers", "2"]
    assert "was asked for, but TensorFlow sees 0 GPU(s)" in one_line(capsys, [*train, "--device", "cuda"])


JAX_RUN = {"VGG_JAX_NUM_PROCESSES": "2", "VGG_JAX_PROCESS_ID": "1", "JAX_COORDINATOR_ADDRESS": "127.0.0.1:1"}


@pytest.mark.parametrize(
    ("backend_name", "variables", "says"),
    [
        ("torch", {"WORLD_SIZE": "abc"}, "WORLD_SIZE='abc' in the environment is no whole number of at least 1"),
        ("torch", {"WORLD_SIZE": "2", "RANK": "5"}, "RANK 5 is not one of 2 workers' (0..1)"),
        ("torch", {"WORLD_SIZE": "2", "LOCAL_RANK": "abc"}, "LOCAL_RANK='abc' in the environment"),
        ("torch", {"WORLD_SIZE": "2"}, "but MASTER_ADDR and MASTER_PORT are not set; set them as torchrun does"),
        ("tf", {"TF_CONFIG": "{bad"}, "TF_CONFIG in the environment is not TensorFlow's cluster description"),
        ("tf", {"TF_CONFIG": '{"cluster": {"worker": ["a:1", "b:2"]}}'}, "(KeyError: 'task')"),
        ("mxnet", {"DMLC_ROLE": "worker", "DMLC_NUM_WORKER": "x"}, "DMLC_NUM_WORKER='x' in the environment"),
        ("jax", {"VGG_JAX_NUM_PROCESSES": "two"}, "VGG_JAX_NUM_PROCESSES='two' in the environment is no whole"),
        ("jax", {"VGG_JAX_NUM_PROCESSES": "2"}, "but JAX_COORDINATOR_ADDRESS and VGG_JAX_PROCESS_ID are not set"),
        ("jax", {**JAX_RUN, "VGG_JAX_PROCESS_ID": "2"}, "VGG_JAX_PROCESS_ID 2 is not one of 2 workers' (0..1)"),
        ("jax", {**JAX_RUN, "JAX_COORDINATOR_ADDRESS": "10.0.0.1"}, "JAX_COORDINATOR_ADDRESS='10.0.0.1' in the "),
    ],
)
def test_an_engines_variable_that_is_no_run_is_one_line(capsys, monkeypatch, backend_name, variables, says):
    """A stray or mistyped engine variable (a scheduler's, a shell's) had given a ValueError, KeyError or
    JSONDecodeError traceback, or a rank past the workers had waited for peers that never come."""
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert says in one_line(capsys, ["train", "--backend", backend_name, *TINY_CLI, "--epochs", "1"])
