"""The device-side data path and the step that does not wait for the host, checked where CI runs: on the CPU.

On a GPU, PyTorch's trainer feeds the step from the data uploaded once (``vgg_torch.data.DeviceIter``) and
reads the step's sums every ``read_every`` steps; ``scripts/gpu_check.sh`` measures it there. Here the same
code runs on the CPU device, so what it computes is checked in CI.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from conftest import load_backend
from helpers import TINY, run_in_process

from common.data import DataIter
from common.errors import TrainingDiverged
from common.recipe import Recipe
from common.training import fit
from common.weights import xavier_init


def test_the_device_stream_is_the_host_stream_batch_for_batch():
    load_backend("torch")
    import torch

    from vgg_torch.data import DeviceIter, load_data_fashion_mnist

    train_iter, _ = load_data_fashion_mnist(100, resize=64, seed=5, train_limit=450, test_limit=10)
    on_host = list(train_iter)  # epoch 0
    train_iter.batches.epoch = 0
    device = DeviceIter(train_iter.batches, "cpu")
    on_device = list(device)
    assert len(device) == len(train_iter) == 5 and train_iter.batches.epoch == 1  # one pass of the same stream
    assert [len(y) for _, y in on_device] == [100, 100, 100, 100, 50]
    for (x, y), (xd, yd) in zip(on_host, on_device, strict=True):
        assert torch.equal(y, yd) and x.shape == xd.shape == (len(y), 1, 64, 64)
        np.testing.assert_allclose(xd.numpy(), x.numpy(), rtol=0, atol=1e-6)  # the same bilinear matrices
        assert xd.is_contiguous(memory_format=torch.channels_last)
    second = list(device)  # the next pass is the next seeded epoch, as on the host
    train_iter.batches.epoch = 1
    assert all(torch.equal(yd, y) for (_, yd), (_, y) in zip(second, train_iter, strict=True))
    unresized = DeviceIter(load_data_fashion_mnist(64, train_limit=64)[0].batches, "cpu")
    assert next(iter(unresized))[0].shape == (64, 1, 28, 28)


def test_on_the_cpu_and_for_other_iterables_the_stream_is_fed_as_it_is(backend):
    train_iter, _ = backend.load_data_fashion_mnist(32, resize=32, train_limit=32, test_limit=32)
    assert backend.on_device(train_iter, backend.get_device("cpu")) is train_iter
    mine = [next(iter(train_iter))]
    assert backend.on_device(mine, backend.get_device("cpu")) is mine


def _nan_from(data_iter, index):
    """The verified stream with NaN pixels from its batch ``index`` (0-based) on: trusted, so not checked."""
    seen = []

    def convert(x, y):
        seen.append(1)
        return data_iter.convert(np.full_like(x, np.nan) if len(seen) > index else x, y)

    return DataIter(data_iter.batches, convert, verified=True)


def _trainer(read_every, net):
    from vgg_torch.train import Trainer, get_device

    trainer = Trainer(net, Recipe(2, seed=3), get_device("cpu"))
    trainer.read_every = read_every  # what the GPU path does: many steps between two host reads
    return trainer


def test_reading_the_sums_every_few_steps_changes_no_number():
    torch = load_backend("torch")
    histories = []
    for read_every in (1, 4):
        train_iter, test_iter = torch.load_data_fashion_mnist(32, resize=32, seed=3, train_limit=320, test_limit=64)
        net = torch.vgg(**TINY)
        torch.import_weights(net, xavier_init(net.config, 0))  # the same start for both
        histories.append(fit(_trainer(read_every, net), train_iter, test_iter, verbose=False))
    every, fourth = histories
    assert len(every.epochs) == len(fourth.epochs) == 2
    for a, b in zip(every.epochs, fourth.epochs, strict=True):
        assert a.loss == pytest.approx(b.loss, rel=1e-6) and a.train_acc == b.train_acc
        assert a.test_acc == b.test_acc


def test_a_loss_read_later_still_names_its_step():
    torch = load_backend("torch")
    train_iter, test_iter = torch.load_data_fashion_mnist(32, resize=32, train_limit=320, test_limit=32)
    with pytest.raises(TrainingDiverged, match=r"the loss became nan at epoch 1, step 3 \(lr 0.05\)"):
        fit(_trainer(4, torch.vgg(**TINY)), _nan_from(train_iter, 2), test_iter, verbose=False)


def test_bench_records_the_device_of_every_run(tmp_path, capsys):
    load_backend("torch")
    quick = ["--backends", "torch", "--resize", "32", "--ratio", "8", "--batch-size", "16", "--steps", "1"]
    done = run_in_process(capsys, "bench", *quick, "--repeats", "1", "--device", "cpu", "--json", tmp_path / "b.json")
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((tmp_path / "b.json").read_text())
    (run,) = summary["runs"]
    assert summary["device"] == run["device"] == "cpu" and run["name"] is None
    assert set(run["peak_gflops"]) == {"fp32", "tf32", "bf16"} and run["peak_gflops"]["tf32"] is None  # a GPU's
    assert re.search(r"^PyTorch +cpu +fp32 ", done.stdout, re.M)  # the device column
    assert "peak (best matrix product in any framework, on cpu)" in done.stdout


def test_bench_on_a_gpu_this_framework_cannot_see_is_one_line(capsys):
    load_backend("torch")
    import torch

    gpus = torch.cuda.device_count()  # one past the last GPU: none here, so plain "cuda" on a CPU machine
    done = run_in_process(capsys, "bench", "--backends", "torch", "--resize", "32", "--device", f"cuda:{gpus}")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    said = f"device cuda:{gpus} was asked for, but PyTorch sees {gpus} GPU(s)"
    assert said in done.stderr.strip().splitlines()[-1]
