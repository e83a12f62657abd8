"""The shared training skeleton (common.training): what fit() promises in every backend."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import sys
import weakref

import numpy as np
import pytest
from conftest import load_backend
from helpers import ONE_OMP_THREAD, TINY, TINY_CLI, run_in_process, run_python, run_vgg

from common.data import DataIter, load_fashion_mnist
from common.errors import ConfigError, InputError, TrainingDiverged
from common.host import Progress
from common.recipe import Recipe
from common.training import parse_device

# A short torch run of the TINY network.
RUN = ["--backend", "torch", *TINY_CLI, "--batch-size", "64", "--train-limit", "256", "--test-limit", "64"]


def _poisoned(data_iter):
    """The same stream with one NaN pixel in its first batch, converted by the backend as usual."""

    def convert(x, y, first=[True]):  # noqa: B006 (one flag per stream)
        if first[0]:
            x = x.copy()
            x.flat[0] = np.nan
            first[0] = False
        return data_iter.convert(x, y)

    return DataIter(data_iter.batches, convert)


def test_check_finite_false_reaches_the_evaluation(backend):
    train_iter, test_iter = backend.load_data_fashion_mnist(32, resize=32, train_limit=64, test_limit=64)
    with pytest.raises(InputError, match="evaluation batch 1 holds NaN"):
        backend.train(backend.vgg(**TINY), train_iter, _poisoned(test_iter), 1, verbose=False)
    history = backend.train(backend.vgg(**TINY), train_iter, _poisoned(test_iter), 1, verbose=False, check_finite=False)
    assert [e.epoch for e in history.epochs] == [1]
    assert history.to_dict()["data"] == train_iter.batches.origin  # which data the run used: path and checksums
    assert history.data["path"] == load_fashion_mnist().source


@pytest.mark.parametrize(
    "field, value",
    [
        ("num_epochs", -1),
        ("lr", 0.0),
        ("optimizer", "rmsprop"),
        ("lr_schedule", "step"),
        ("seed", -1),
        ("seed", 2**32),
        ("seed", 1.5),
        ("precision", "fp16"),
    ],
)
def test_recipe_refuses_a_bad_value_by_name(field, value):
    with pytest.raises(ConfigError, match=field.replace("num_", "num_")):
        Recipe(**{"num_epochs": 1, field: value})


def test_recipe_record_is_what_a_checkpoint_compares(backend):
    train_iter, test_iter = backend.load_data_fashion_mnist(16, resize=32, train_limit=48, test_limit=32)
    record = Recipe(3, lr=0.1, seed=7, lr_schedule="cosine").record(train_iter, test_iter)
    assert record == {
        "lr": 0.1,
        "lr_schedule": "cosine",
        "optimizer": "sgd",
        "batch_size": 16,
        "seed": 7,
        "num_epochs": 3,
        "train_examples": 48,
        "test_examples": 32,
        "precision": "fp32",
    }


def test_progress_prints_a_line_outside_a_terminal(capsys):
    bar = Progress(10, "[x] epoch 1", every=0.0)
    for _ in range(3):
        bar.update(examples=32, loss=0.5)
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3 and lines[0].startswith("[x] epoch 1: 1/10, ")
    assert "examples/s, loss 0.500, eta" in lines[2]


def test_progress_is_silent_when_disabled(capsys):
    bar = Progress(10, "[x]", enabled=False, every=0.0)
    bar.update(examples=1, loss=0.5)
    bar.close()
    assert capsys.readouterr().err == ""


def test_a_logged_run_shows_progress_between_epoch_lines(tmp_path):
    """Piped output (no terminal) still gets progress lines: examples done, examples/s, loss, ETA."""
    env = {**ONE_OMP_THREAD, "VGG_PROGRESS_EVERY": "0"}
    run = run_vgg("train", *RUN, "--epochs", "1", env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    progress = [line for line in run.stderr.splitlines() if line.startswith("[torch] epoch 1: ")]
    assert progress and "examples/s, loss " in progress[0] and "eta" in progress[0]
    assert "epoch 1, loss" in run.stdout


@pytest.mark.parametrize("seed", ["-1", "1180591620717411303424"])
def test_a_seed_out_of_range_is_one_line(seed, capsys):
    run = run_in_process(capsys, "train", "--backend", "torch", "--seed", seed, "--epochs", "1")
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert "seed must be a whole number from 0 to 4294967295" in run.stderr.strip().splitlines()[-1]


def test_saved_files_get_the_mode_of_any_new_file(tmp_path, backend):
    """weights, models and checkpoints are created like history.json: 0666 less the user's umask."""
    old = os.umask(0o027)
    try:
        train_iter, test_iter = backend.load_data_fashion_mnist(32, resize=32, train_limit=32, test_limit=32)
        net = backend.vgg(**TINY)
        backend.train(net, train_iter, test_iter, 1, verbose=False, checkpoint=tmp_path)
        backend.save_weights(net, tmp_path / "weights.npz")
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert modes == {"checkpoint.npz": 0o640, "weights.npz": 0o640, "plain.txt": 0o640}


def test_a_finished_run_can_be_extended_but_not_shortened(tmp_path, capsys):
    first = run_in_process(capsys, "train", *RUN, "--epochs", "1", "--out", tmp_path)
    assert first.returncode == 0, first.stderr
    shorter = run_in_process(capsys, "train", "--backend", "torch", "--out", tmp_path, "--resume", "--epochs", "0")
    assert shorter.returncode != 0 and "Traceback" not in shorter.stderr
    assert "has already trained 1 epoch(s); give --epochs 1 or more" in shorter.stderr.strip().splitlines()[-1]
    longer = run_in_process(capsys, "train", "--backend", "torch", "--out", tmp_path, "--resume", "--epochs", "2")
    assert longer.returncode == 0, longer.stderr
    assert "resuming from" in longer.stdout and "after epoch 1 of 2" in longer.stdout
    history = json.loads((tmp_path / "history.json").read_text())
    assert [e["epoch"] for e in history["history"]["epochs"]] == [1, 2]


@pytest.mark.parametrize(
    "text, parsed",
    [
        (None, ("auto", 0)),
        ("auto", ("auto", 0)),
        ("cpu", ("cpu", 0)),
        ("CUDA", ("cuda", 0)),
        ("cuda:3", ("cuda", 3)),
        ("gpu:1", ("cuda", 1)),
    ],
)
def test_device_names(text, parsed):
    assert parse_device(text) == parsed


@pytest.mark.parametrize("text", ["tpu", "cuda:x", "cpu:1", "cuda:-1", ""])
def test_an_unknown_device_is_refused(text):
    with pytest.raises(ConfigError, match="choose auto, cpu, cuda or cuda:N"):
        parse_device(text)


def test_each_backend_places_a_run_where_it_is_asked(backend):
    assert "cpu" in str(backend.get_device("cpu")).lower()
    gpus = str(backend.get_device("auto")).lower()
    if "cpu" in gpus:  # no GPU seen by this framework: asking for one is one clear error
        with pytest.raises(ConfigError, match="device cuda:0 was asked for, but .* sees 0 GPU"):
            backend.get_device("cuda")
    else:
        assert "gpu" in str(backend.get_device("cuda")).lower() or "cuda" in str(backend.get_device("cuda"))
    train_iter, test_iter = backend.load_data_fashion_mnist(32, resize=32, train_limit=32, test_limit=32)
    history = backend.train(backend.vgg(**TINY), train_iter, test_iter, 1, device="cpu", verbose=False)
    assert "cpu" in history.device.lower()


@pytest.mark.parametrize("device, message", [("tpu", "unknown device 'tpu'"), ("cuda:7", "device cuda:7 was asked")])
def test_a_device_that_cannot_be_had_is_one_line_before_any_work(tmp_path, device, message, capsys):
    run = run_in_process(capsys, "train", *RUN, "--epochs", "1", "--device", device, "--out", tmp_path / "run")
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert message in run.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "run" / "checkpoint.npz").exists()


def test_train_says_where_it_runs(tmp_path, capsys):
    run = run_in_process(capsys, "train", *RUN, "--epochs", "1", "--device", "cpu", "--out", tmp_path)
    assert run.returncode == 0, run.stderr
    assert "on cpu" in run.stdout.splitlines()[0]
    assert json.loads((tmp_path / "history.json").read_text())["history"]["device"] == "cpu"


def _poison_batch(data_iter, index, verified):
    """The same stream with NaN pixels in its batch ``index`` (0-based), marked verified or not."""
    seen = []

    def convert(x, y):
        seen.append(1)
        if len(seen) == index + 1:
            x = np.full_like(x, np.nan)
        return data_iter.convert(x, y)

    return DataIter(data_iter.batches, convert, verified=verified)


def test_the_verified_stream_is_checked_once_a_pass_any_other_batch_by_batch(backend):
    """The project's own checksummed data need no per-pixel check at every step; a user's iterator does."""
    train_iter, test_iter = backend.load_data_fashion_mnist(32, resize=32, train_limit=96, test_limit=32)
    assert train_iter.verified and test_iter.verified
    with pytest.raises(InputError, match="training batch 2 of epoch 1 holds NaN"):
        backend.train(backend.vgg(**TINY), _poison_batch(train_iter, 1, False), test_iter, 1, verbose=False)
    with pytest.raises(InputError, match="training batch 1 of epoch 1 holds NaN"):
        backend.train(backend.vgg(**TINY), _poison_batch(train_iter, 0, True), test_iter, 1, verbose=False)
    # past the first batch a verified stream is trusted: no InputError, whatever the NaN then does (PyTorch and
    # Gluon carry it into the loss, where the NaN stop acts; Keras' ReLU maps NaN to 0)
    with contextlib.suppress(TrainingDiverged):
        backend.train(backend.vgg(**TINY), _poison_batch(train_iter, 1, True), test_iter, 1, verbose=False)


def test_keras_traces_its_evaluation_once_per_network():
    """Evaluation runs every epoch: its tf.function is traced once per network, and freed with the network."""
    from vgg_tf.train import _EVALUATE as BY_SETTING

    _EVALUATE = BY_SETTING[False]  # the steps without XLA, the default (compile=False)
    before = len(_EVALUATE)  # networks of other tests may be alive

    def evaluate_twice():  # in a frame of its own: TensorFlow's tracing snapshots its caller's locals
        tf = load_backend("tf")
        net = tf.vgg(**TINY)
        _, test_iter = tf.load_data_fashion_mnist(64, resize=32, test_limit=128)
        first = tf.evaluate_accuracy(net, test_iter)
        traces = _EVALUATE[net].experimental_get_tracing_count()
        assert tf.evaluate_accuracy(net, test_iter) == first
        assert _EVALUATE[net].experimental_get_tracing_count() == traces
        return weakref.ref(net)

    gone = evaluate_twice()
    gc.collect()
    assert gone() is None and len(_EVALUATE) <= before


# released(): MiB of a freed 64 MiB array (above glibc's largest mmap threshold, 32 MiB) given back to the system
# at once, read from the resident set.
_RELEASED = """
import os
import numpy as np
from common.host import give_back_freed_memory, reuse_freed_memory

def resident():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

def released():
    a = np.ones(2**23)
    held = resident()
    del a
    return round(held - resident())
"""
LINUX = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc: the setting is Linux's")


@LINUX
@pytest.mark.parametrize("value", [None, "0"])
def test_freed_memory_is_kept_for_reuse_and_given_back_when_asked(value):
    code = "print(released(), reuse_freed_memory(), released()); a = resident(); give_back_freed_memory()"
    done = run_python(_RELEASED + code + "; print(round(a - resident()))", env={"VGG_REUSE_FREED_MEMORY": value})
    assert done.returncode == 0, done.stderr[-2000:]
    before, applied, after, given_back = done.stdout.split()
    assert int(before) >= 60  # glibc unmaps such a block when it is freed (a step's activations, every step)
    if value == "0":  # left as it is
        assert applied == "False" and int(after) >= 60
    else:
        assert applied == "True" and int(after) <= 4 and int(given_back) >= 60


@LINUX
def test_pytorch_training_on_the_cpu_keeps_freed_memory():
    load_backend("torch")
    run = f"""
import vgg_torch
net = vgg_torch.vgg(**{TINY!r})
train_iter, test_iter = vgg_torch.load_data_fashion_mnist(64, resize=32, train_limit=128, test_limit=64)
print(released())
vgg_torch.train(net, train_iter, test_iter, 1, device="cpu", verbose=False)
print(released())
"""
    done = run_python(_RELEASED + run, env={**ONE_OMP_THREAD, "VGG_REUSE_FREED_MEMORY": None})
    assert done.returncode == 0, done.stderr[-2000:]
    before, after = map(int, done.stdout.split())
    assert before >= 60 and after <= 4
