"""``compile``: PyTorch's step and evaluation through torch.compile, compiled once per shape class and counted,
training the weights eager runs train; tf.keras maps it to XLA, MXNet Gluon takes it (hybridized already)."""

from __future__ import annotations

import importlib
import json
import statistics

import numpy as np
import pytest
from conftest import load_backend
from helpers import TINY, TINY_CLI, one_line, run_main

from common import report
from common.history import History
from common.weights import xavier_init

# 300 training examples in batches of 128 (two full ones and a tail of 44), 200 test examples (128 and 72)
LIMITS = dict(train_limit=300, test_limit=200)
LIMITS_CLI = ["--train-limit", "300", "--test-limit", "200", "--batch-size", "128"]


def _fresh_compiler():
    """Forget every graph torch.compile built in this process, so that a run counts its own."""
    importlib.import_module("torch")._dynamo.reset()


def _run(backend, epochs, compile, batch_norm=True, dropout=0.5):
    net = backend.vgg(**TINY, batch_norm=batch_norm, dropout=dropout)
    backend.import_weights(net, xavier_init(net.config, 0))
    train_iter, test_iter = backend.load_data_fashion_mnist(128, resize=32, **LIMITS)
    history = backend.train(net, train_iter, test_iter, epochs, device="cpu", verbose=False, compile=compile)
    return net, backend.export_weights(net), history, test_iter


def _live(name: str) -> bool:
    """A weight training really moves: not a batch-norm running statistic, not a convolution's bias before batch
    norm (its gradient is zero but for rounding, so that its value is rounding noise in every run)."""
    return "running" not in name and not (".conv" in name and name.endswith(".bias"))


def _distance(a: dict, b: dict) -> float:
    """The relative L2 distance of two sets of weights (over the weights training moves)."""
    names = [n for n in a if _live(n)]
    gap = sum(float(np.sum((a[n] - b[n]) ** 2)) for n in names)
    return float(np.sqrt(gap / sum(float(np.sum(a[n] ** 2)) for n in names)))


def test_compiled_training_gives_the_weights_eager_runs_give_each_other(torch_backend):
    torch = importlib.import_module("torch")
    _, eager, eager_history, _ = _run(torch_backend, 2, compile=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1 if threads > 1 else 2)  # another eager run: the same math, summed in another order
    try:
        _, other, other_history, _ = _run(torch_backend, 2, compile=False)
    finally:
        torch.set_num_threads(threads)
    _fresh_compiler()
    net, compiled, history, test_iter = _run(torch_backend, 2, compile=True)
    spread = _distance(eager, other)
    # eager runs differ by rounding, which batch norm amplifies in a short run (measured 0.033 apart; compiled 0.036)
    assert 0 < spread < 0.2, spread
    assert _distance(eager, compiled) <= 3 * spread, (_distance(eager, compiled), spread)
    # the losses too: measured 0.001 and 0.077 apart per epoch (compiled), against 0.002 and 0.074 (eager runs)
    for e, o, c in zip(eager_history.epochs, other_history.epochs, history.epochs, strict=True):
        assert abs(c.loss - e.loss) <= 3 * abs(o.loss - e.loss) + 0.01, (e.loss, o.loss, c.loss)
    # one graph per shape class over both epochs: training (128), its tail (44: Inductor's CPU code guards its
    # sums of more than 4,096 numbers, so that a batch under 65 compiles apart) and evaluation (128 and 72)
    assert history.compiles == 3 and eager_history.compiles == 0
    assert 0 < history.compile_seconds < history.wall_seconds
    assert History.from_dict(json.loads(json.dumps(history.to_dict()))).compiles == 3
    assert torch_backend.evaluate_accuracy(net, test_iter, compile=True) == pytest.approx(history.last.test_acc)


@pytest.mark.parametrize("name", ["tf", "mxnet"])
def test_the_other_backends_take_compile_and_train_the_same(name):
    """tf.keras runs the step through XLA (``jit_compile``), MXNet Gluon its hybridized graph as before; neither
    counts compilations. Without batch norm and dropout the runs agree to rounding (measured 2e-9 apart in
    Keras; XLA draws Keras' dropout masks from a generator of its own, which moves the weights 1e-3)."""
    backend = load_backend(name)
    _, eager, _, _ = _run(backend, 1, compile=False, batch_norm=False, dropout=0.0)
    net, compiled, history, test_iter = _run(backend, 1, compile=True, batch_norm=False, dropout=0.0)
    assert _distance(eager, compiled) < 1e-6
    assert history.compiles == 0 and history.compile_seconds == 0
    assert backend.evaluate_accuracy(net, test_iter, compile=True) == pytest.approx(history.last.test_acc)


def test_vgg_train_and_evaluate_take_compile_and_record_the_count(torch_backend, tmp_path, capsys):
    _fresh_compiler()
    out = tmp_path / "run"
    run_main(capsys, "train", "--backend", "torch", *TINY_CLI, "--batch-norm", "--epochs", "3", *LIMITS_CLI,
             "--compile", "--out", out)  # fmt: skip
    record = json.loads((out / "history.json").read_text())
    assert record["compile"] is True and record["history"]["compiles"] == 3  # three epochs: no more graphs
    said = run_main(capsys, "evaluate", out / "weights.npz", "--backend", "torch", "--test-limit", "200", "--compile")
    assert f"test acc {record['history']['epochs'][-1]['test_acc']:.4f}" in said
    # vgg compare's report of the run: the median epoch's speed, the count, the wall time of every epoch
    epochs = record["history"]["epochs"]
    headers, (row,) = report.compare_rows([record])
    assert row[headers.index("median epoch examples/s")] == statistics.median(e["examples_per_sec"] for e in epochs)
    assert row[headers.index("compiles")] == 3
    walls = report.wall_times(epochs)
    assert walls == [e["wall_seconds"] for e in epochs] and walls == sorted(walls)
    assert walls[-1] == pytest.approx(record["wall_seconds"])
    assert sum(e["seconds"] for e in epochs) < walls[-1]  # the wall time counts the evaluations too
    paths = report.write_compare_report(tmp_path, [record])
    assert "| epoch | loss | train acc | test acc | examples/s | seconds | wall s |" in paths["markdown"].read_text()
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compile_with_workers_is_one_line(capsys):
    line = one_line(capsys, ["train", "--backend", "torch", *TINY_CLI, "--compile", "--workers", "2"])
    assert "--compile" in line and "--workers" in line


def test_vgg_bench_shows_the_compilations(torch_backend, tmp_path, capsys):
    _fresh_compiler()
    quick = ["--resize", "32", "--ratio", "8", "--batch-size", "16", "--steps", "1", "--repeats", "1"]
    out = run_main(capsys, "bench", "--backends", "torch", *quick, "--compile", "--json", tmp_path / "b.json")
    (run,) = json.loads((tmp_path / "b.json").read_text())["runs"]
    assert run["compile"] is True and run["compiles"] == 2  # the training step's graph and inference's
    assert 0 < run["compile_seconds"] < run["seconds_project"]
    assert f"2 in {run['compile_seconds']:.0f} s" in out
