"""Checkpoints and resume: a run killed mid-epoch resumes to the weights of an uninterrupted one, bit for bit, in
every framework; a resume that asks for another network, backend, recipe or precision is refused before any
work; a diverging run keeps its last good checkpoint.

Damaged and altered checkpoint files: test_files.py. Interrupting a run: test_interruption.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import load_backend
from helpers import (
    ONE_THREAD,
    SHALLOW_CLI,
    SHORT_RUN,
    TINY,
    killed_and_resumed,
    one_epoch_run,
    one_line,
    rewrite_meta,
    saved_weights,
    untrained_checkpoint,
)

from common.arch import make_config
from common.backends import BACKENDS
from common.checkpoint import FILE_NAME, load_checkpoint, read_checkpoint_meta
from common.cli import main
from common.errors import ConfigError, TrainingDiverged, WeightsError
from common.weights import META_KEY, xavier_init


def _history(out):
    return json.loads((out / "history.json").read_text())["history"]["epochs"]


# --- a run killed mid-epoch resumes to exactly the weights of an uninterrupted one ---------------------------------


def test_torch_run_killed_mid_epoch_resumes_to_the_same_weights_bit_for_bit(tmp_path, capsys):
    load_backend("torch")
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the uninterrupted run, in this process, computes as the one-thread `vgg` commands do
    try:
        whole, cut, saved, done = killed_and_resumed(tmp_path, "torch", SHORT_RUN, env=ONE_THREAD, capsys=capsys)
    finally:
        torch.set_num_threads(threads)
    assert 1 <= saved < 4  # the last complete epoch, readable
    assert "resuming from" in done.stdout
    a, b = saved_weights(whole / "weights.npz"), saved_weights(cut / "weights.npz")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert [e["epoch"] for e in _history(cut)] == [1, 2, 3, 4]


# A run that learns, with batch norm (its running statistics are in the checkpoint too): two conv blocks (8 and 16
# channels), 32 px, a 64-wide classifier, four seeded epochs of 16 steps (test accuracy 0.2 to 0.7). Small, so
# that the compiles and graphs of JAX and Keras take little of a test (the first epoch in each process), yet every
# kind of tensor a checkpoint holds is there. The last three epochs are what the killed run still has to train when
# it is killed (0.15 s into its second): 0.9 to 1.4 s on a 2-core VM (2026-12-07; VGG-11 at ratio 8, this test's
# network before, took Keras 0.8 s), so it cannot finish first.
LEARNING_RUN = [
    *SHALLOW_CLI,
    *("--resize", "32", "--fc-hidden", "64", "--batch-norm"),
    *("--epochs", "4", "--train-limit", "2048", "--test-limit", "256", "--seed", "3"),
]


@pytest.mark.parametrize("name", [name for name in BACKENDS if name != "torch"])  # torch: its own test above
def test_runs_killed_mid_epoch_resume_bit_for_bit(tmp_path, name, capsys):
    load_backend(name)
    # the uninterrupted run and the resumed one in this process, the killed one a `vgg` command: all with the
    # thread count of this one (the PyTorch test above resumes in a `vgg` command of its own)
    whole, cut, saved, _ = killed_and_resumed(tmp_path, name, LEARNING_RUN, capsys=capsys, resume_here=True)
    assert saved < 4
    a, b = saved_weights(whole / "weights.npz"), saved_weights(cut / "weights.npz")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    runs = [json.loads((out / "history.json").read_text())["history"]["epochs"] for out in (whole, cut)]
    assert [e["epoch"] for e in runs[1]] == [1, 2, 3, 4]  # each epoch exactly once
    assert load_checkpoint(cut).state["data_epoch"] == 4  # the stream is where 4 epochs leave it
    assert [e["test_acc"] for e in runs[0]] == [e["test_acc"] for e in runs[1]]
    assert len({e["test_acc"] for e in runs[0]}) > 1  # it learned: the weights compared are not a fixed point


# --- resume from the command line ----------------------------------------------------------------------------------


def test_the_command_that_started_a_run_resumes_it(tmp_path, capsys):
    load_backend("torch")
    run = tmp_path / "run"
    custom = ["--arch", "1,16;1,16;1,32;1,32;1,32", "--resize", "32", "--fc-hidden", "32", "--batch-size", "64"]
    command = ["train", "--backend", "torch", *custom, "--train-limit", "128", "--test-limit", "20000", "--out", run]
    assert main([*map(str, command), "--epochs", "1"]) == 0  # widths stored divided by the ratio; 10,000 tested
    first = json.loads((run / "history.json").read_text())
    assert main([*map(str, command), "--epochs", "2", "--resume"]) == 0, capsys.readouterr().err
    history = json.loads((run / "history.json").read_text())
    assert len(history["history"]["epochs"]) == 2 and history["test_examples"] == 10_000
    assert history["wall_seconds"] > first["wall_seconds"] > 0  # a resumed run's time adds up its parts
    assert main([*map(str, command), "--epochs", "2", "--resume"]) == 0  # finished: its files written again
    assert json.loads((run / "history.json").read_text())["wall_seconds"] == history["wall_seconds"]
    err = one_line(capsys, [*command, "--epochs", "3", "--resume", "--ratio", "2"])
    assert "--ratio 2 --resize 32 --fc-hidden 32 build --arch 1,8;1,8;1,16;1,16;1,16 --resize 32" in err
    assert "not the run saved in" in err and "(--arch 1,4;1,4;1,8;1,8;1,8 --resize 32 --fc-hidden 32" in err


def test_resume_without_a_checkpoint_says_where_it_looked(tmp_path, capsys):
    rc = main(["train", "--backend", "torch", "--out", str(tmp_path), "--resume"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and f"no checkpoint at {tmp_path / FILE_NAME}" in err


def test_resume_asking_for_fewer_epochs_than_trained_says_so_before_any_work(tmp_path, capsys):
    run, _ = one_epoch_run(tmp_path, capsys)
    err = one_line(capsys, ["train", "--backend", "torch", "--out", run, "--resume", "--epochs", "0"])
    assert "--epochs 0: the run saved in" in err and "give --epochs 1 or more" in err


def test_resume_with_another_configuration_is_refused(tmp_path, capsys):
    untrained_checkpoint(tmp_path / FILE_NAME)
    rc = main(["train", "--backend", "torch", "--out", str(tmp_path), "--resume", "--ratio", "4"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert "--ratio 4 differs from the run saved in" in err and "leave the option out" in err


def test_resume_with_another_backend_is_refused(tmp_path, capsys):
    untrained_checkpoint(tmp_path / FILE_NAME, backend="mxnet")
    rc = main(["train", "--backend", "torch", "--out", str(tmp_path), "--resume"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "resume it with --backend mxnet" in err


def test_resume_keeps_the_saved_precision(tmp_path, capsys):
    path = untrained_checkpoint(tmp_path / FILE_NAME)
    recipe = read_checkpoint_meta(path)["recipe"]
    assert recipe["precision"] == "fp32"
    rewrite_meta(path, recipe={**recipe, "precision": "bf16"})
    rc = main(["train", "--backend", "torch", "--out", str(tmp_path), "--resume", "--precision", "fp32"])
    err = capsys.readouterr().err
    assert rc == 2 and "--precision fp32 differs from the run saved in" in err and "(bf16)" in err
    with pytest.raises(ConfigError, match="was trained with precision 'bf16' but this run asks for 'fp32'"):
        load_checkpoint(path, "torch", make_config(**TINY), recipe)
    # a checkpoint written before the recipe recorded the precision was trained in fp32
    rewrite_meta(path, recipe={k: v for k, v in recipe.items() if k != "precision"})
    assert load_checkpoint(path, "torch", make_config(**TINY), recipe).epoch == 1
    with pytest.raises(ConfigError, match="was trained with precision 'fp32' but this run asks for 'bf16'"):
        load_checkpoint(path, "torch", make_config(**TINY), {**recipe, "precision": "bf16"})


def test_checkpoint_of_another_configuration_is_refused_before_any_tensor(tmp_path, monkeypatch):
    path = untrained_checkpoint(tmp_path / FILE_NAME, config=make_config(**{**TINY, "ratio": 4}))
    reads = []
    original = np.lib.npyio.NpzFile.__getitem__
    monkeypatch.setattr(np.lib.npyio.NpzFile, "__getitem__", lambda z, k: reads.append(k) or original(z, k))
    with pytest.raises(WeightsError, match="they differ in blocks"):
        load_checkpoint(path, "torch", make_config(**TINY))
    assert reads == [META_KEY]


# --- checkpoints and resume through the API ------------------------------------------------------------------------


class _Poisoned:
    """A training stream whose epoch ``bad_epoch`` holds an infinite pixel."""

    def __init__(self, data_iter, bad_epoch):
        self.data_iter, self.batches, self.bad_epoch, self.epoch = data_iter, data_iter.batches, bad_epoch, 0

    def __len__(self):
        return len(self.data_iter)

    def __iter__(self):
        self.epoch += 1
        for x, y in self.data_iter:
            if self.epoch == self.bad_epoch:
                x = x.clone()
                x[0, 0, 0, 0] = float("inf")
            yield x, y


@pytest.fixture
def torch_one_thread():
    load_backend("torch")
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_backend("torch")
    torch.set_num_threads(threads)


def _tiny_torch_run(b):
    """A tiny network and data streams of 256 training and 128 test examples."""
    net = b.vgg(**TINY)
    b.import_weights(net, xavier_init(net.config, 0))
    train_iter, test_iter = b.load_data_fashion_mnist(128, resize=32, train_limit=256, test_limit=128)
    return net, train_iter, test_iter


def test_diverging_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, torch_one_thread):
    b = torch_one_thread
    net, train_iter, test_iter = _tiny_torch_run(b)
    with pytest.raises(
        TrainingDiverged, match=r"the loss became nan at epoch 2, step 1 \(lr 0.05\).*lr=0\.005.*batch_norm=True"
    ):
        b.train(net, _Poisoned(train_iter, 2), test_iter, 3, checkpoint=tmp_path, verbose=False, check_finite=False)
    kept = load_checkpoint(tmp_path, "torch", net.config)
    assert kept.epoch == 1 and all(np.isfinite(w).all() for w in kept.weights.values())


def test_resume_with_another_recipe_is_refused_by_the_api(tmp_path, torch_one_thread):
    b = torch_one_thread
    path = untrained_checkpoint(tmp_path / FILE_NAME)
    net, train_iter, test_iter = _tiny_torch_run(b)
    with pytest.raises(ConfigError, match="was trained with lr 0.05 but this run asks for 0.1"):
        b.train(net, train_iter, test_iter, 2, lr=0.1, resume_from=path, verbose=False)
    with pytest.raises(WeightsError, match="this network has dropout 0.2"):
        b.train(b.vgg(**TINY, dropout=0.2), train_iter, test_iter, 2, resume_from=path, verbose=False)


def test_a_run_resumed_on_another_device_says_where_each_epoch_ran(tmp_path, torch_one_thread):
    import torch

    b = torch_one_thread
    net, train_iter, test_iter = _tiny_torch_run(b)
    first = torch.device("cpu", 0)  # another device's name on this machine ("cpu:0"), as a GPU's would be
    b.train(net, train_iter, test_iter, 1, device=first, checkpoint=tmp_path, verbose=False)
    history = b.train(
        net, train_iter, test_iter, 2, device="cpu", checkpoint=tmp_path, resume_from=tmp_path, verbose=False
    )
    assert history.device == "cpu:0 then cpu from epoch 2" and len(history.epochs) == 2
    history = b.train(net, train_iter, test_iter, 3, device="cpu", resume_from=tmp_path, verbose=False)
    assert history.device == "cpu:0 then cpu from epoch 2" and len(history.epochs) == 3
