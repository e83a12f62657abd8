"""Training on the real data: the book's recipe beats chance in every backend, and runs are reproducible."""

import importlib

import numpy as np
import pytest
from conftest import load_backend

from common.backends import BACKENDS
from common.errors import ConfigError, TrainingDiverged
from common.weights import xavier_init

SMALL = dict(arch="vgg11", ratio=4, input_size=32, batch_norm=True, fc_hidden=512)
# The short runs: an eighth of the channels learns as well as a quarter in two epochs of 6,000 images (test
# accuracy 0.78-0.79 in the four backends, measured 2026-12-07; 0.70-0.80 at a quarter), in about half the time.
LEARNS = dict(SMALL, ratio=8)


def _short_run(backend, seed=0, epochs=2, verbose=False, train_limit=6000):
    net = backend.vgg(**LEARNS)
    backend.import_weights(net, xavier_init(net.config, seed))
    train_iter, test_iter = backend.load_data_fashion_mnist(
        128, resize=32, seed=seed, train_limit=train_limit, test_limit=2000
    )
    return net, backend.train(net, train_iter, test_iter, epochs, seed=seed, verbose=verbose), test_iter


def test_short_training_clearly_beats_chance(backend):
    net, history, test_iter = _short_run(backend)
    losses = [e.loss for e in history.epochs]
    assert losses[1] < losses[0] < 2.3  # chance is ln 10 = 2.30
    assert history.last.test_acc > 0.6, history.to_dict()  # measured 0.78-0.79 here; chance is 0.1
    assert backend.evaluate_accuracy(net, test_iter) == pytest.approx(history.last.test_acc)
    assert all(e.examples_per_sec > 0 and e.seconds > 0 for e in history.epochs)


def test_training_prints_the_books_line(backend, capsys):
    net = backend.vgg(**SMALL)
    train_iter, test_iter = backend.load_data_fashion_mnist(256, resize=32, train_limit=512, test_limit=256)
    backend.train(net, train_iter, test_iter, 1)
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith(f"[{backend.__name__[4:]}] epoch 1, loss ") and "test acc" in line
    assert line.endswith("examples/sec")


def test_torch_same_seed_same_losses():
    backend = load_backend("torch")
    # the same 8 steps twice: whether they repeat does not depend on how many there are
    _, first, _ = _short_run(backend, seed=5, epochs=1, train_limit=1024)
    _, second, _ = _short_run(backend, seed=5, epochs=1, train_limit=1024)
    assert first.epochs[0].loss == second.epochs[0].loss
    assert first.epochs[0].train_acc == second.epochs[0].train_acc


def test_bad_recipe_is_refused_before_training(backend):
    net = backend.vgg(**SMALL)
    train_iter, test_iter = backend.load_data_fashion_mnist(128, resize=32, train_limit=256, test_limit=128)
    for kwargs, message in [
        (dict(num_epochs=-1), "num_epochs must be a whole number"),
        (dict(num_epochs=1, lr=0), "lr must be a positive number"),
        (dict(num_epochs=1, optimizer="rmsprop"), "unknown optimizer 'rmsprop'"),
    ]:
        with pytest.raises(ConfigError, match=message):
            backend.train(net, train_iter, test_iter, **kwargs)


def test_diverging_loss_stops_with_a_message(backend):
    net = backend.vgg(arch="vgg11", ratio=8, input_size=32, fc_hidden=64)
    weights = xavier_init(net.config, 0)
    weights["fc3.bias"][:] = np.where(np.arange(10) % 2, 3e38, -3e38)  # finite, but a label's loss is 6e38: inf
    backend.import_weights(net, weights)
    train_iter, test_iter = backend.load_data_fashion_mnist(128, resize=32, train_limit=512, test_limit=128)
    with pytest.raises(TrainingDiverged, match=r"the loss became (nan|inf) at epoch 1, step 1 \(lr 0.05\)"):
        backend.train(net, train_iter, test_iter, 1, verbose=False)


@pytest.mark.parametrize("name", list(BACKENDS))
def test_bf16_training_learns_like_fp32_and_trains_the_given_network(name, monkeypatch):
    backend = load_backend(name)
    if name == "mxnet":  # Gluon's bf16 itself, also on a CPU where train() would fall back to fp32
        monkeypatch.setattr(importlib.import_module("vgg_mxnet.train"), "BF16_SLOWER_ON", ())
    losses, weights = {}, {}
    for precision in ("fp32", "bf16"):
        net = backend.vgg(arch="vgg11", ratio=8, input_size=32, batch_norm=True, fc_hidden=128)
        backend.import_weights(net, xavier_init(net.config, 0))
        train_iter, test_iter = backend.load_data_fashion_mnist(128, resize=32, train_limit=2048, test_limit=1024)
        history = backend.train(net, train_iter, test_iter, 2, verbose=False, precision=precision)
        losses[precision] = [e.loss for e in history.epochs]
        weights[precision] = backend.export_weights(net)  # the network passed in was trained
        assert np.isfinite(losses[precision]).all() and losses[precision][1] < min(losses[precision][0], 2.1)
        assert history.last.test_acc > 0.3, history.to_dict()  # chance is 0.1 (ln 10 = 2.30 for the loss)
    # bfloat16 really computed (not the same numbers) yet follows the float32 run closely
    assert losses["bf16"] != losses["fp32"]
    np.testing.assert_allclose(losses["bf16"], losses["fp32"], atol=0.08)
    assert all(w.dtype == np.float32 for w in weights["bf16"].values())
    if name == "tf":
        import keras

        assert keras.config.dtype_policy().name == "float32"  # the global policy is restored


def test_unknown_precision_is_refused_before_training(backend):
    net = backend.vgg(**SMALL)
    train_iter, test_iter = backend.load_data_fashion_mnist(128, resize=32, train_limit=256, test_limit=128)
    with pytest.raises(ConfigError, match="unknown precision 'fp16'; choose from fp32, bf16"):
        backend.train(net, train_iter, test_iter, 1, precision="fp16")


def test_gluon_bf16_falls_back_to_fp32_with_one_line_where_it_is_slower(monkeypatch, capsys):
    """On a CPU with AMX, Gluon's bf16 trains slower than its fp32: train() runs fp32 and says so, once."""
    backend = load_backend("mxnet")
    gluon_train = importlib.import_module("vgg_mxnet.train")  # the module (the package's `train` is the function)

    def run(precision):
        net = backend.vgg(arch="vgg11", ratio=16, input_size=32, batch_norm=True, fc_hidden=64)
        backend.import_weights(net, xavier_init(net.config, 0))
        train_iter, test_iter = backend.load_data_fashion_mnist(64, resize=32, train_limit=256, test_limit=64)
        history = backend.train(net, train_iter, test_iter, 1, verbose=False, precision=precision)
        return [e.loss for e in history.epochs], backend.export_weights(net)

    fp32 = run("fp32")
    monkeypatch.setattr(gluon_train, "cpu_features", lambda: {"flags": ["amx_bf16", "amx_tile", "avx512_bf16"]})
    capsys.readouterr()
    fallback = run("bf16")
    err = capsys.readouterr().err
    assert err.count("note: MXNet Gluon's bf16 trains slower than its fp32 on this CPU (amx_bf16") == 1, err
    assert err.strip().endswith("training in fp32") and len(err.strip().splitlines()) == 1
    assert fallback[0] == fp32[0]  # the fp32 run, number for number
    assert all(np.array_equal(fallback[1][k], fp32[1][k]) for k in fp32[1])
    assert gluon_train.run_precision("bf16", "cpu", flags=["avx512_bf16"]) == "bf16"  # no AMX: bf16 stays
    assert gluon_train.run_precision("fp32", "cpu", flags=["amx_bf16"]) == "fp32"
    capsys.readouterr()
    assert gluon_train.run_precision("bf16", "cpu", flags=["amx_bf16"], quiet=True) == "fp32"  # a rank above 0
    assert capsys.readouterr().err == ""
