"""AlexNet, the network VGG answers, in the four frameworks: the book's trace, one count, the same numbers.

The same contract as VGG's, from the same plan machinery: a second network that fits without touching the
first. The numerical checks are those of test_weights.py (logits, gradients, one real SGD step, files).
"""

import itertools
import json

import numpy as np
import pytest
from adapters import forward, loss_and_gradients
from helpers import random_weights, release_memory, run_in_process, run_main, run_vgg

from common.arch import make_alexnet_config
from common.backends import BACKENDS
from common.errors import ConfigError, WeightsError
from common.spec import spec
from common.weights import MODEL_SUFFIXES, xavier_init

# The book prints this trace for AlexNet on one 1x224x224 image (every layer of its nn.Sequential).
BOOK_TRACE = [
    ("conv1", (1, 96, 54, 54)),
    ("relu1", (1, 96, 54, 54)),
    ("pool1", (1, 96, 26, 26)),
    ("conv2", (1, 256, 26, 26)),
    ("relu2", (1, 256, 26, 26)),
    ("pool2", (1, 256, 12, 12)),
    ("conv3", (1, 384, 12, 12)),
    ("relu3", (1, 384, 12, 12)),
    ("conv4", (1, 384, 12, 12)),
    ("relu4", (1, 384, 12, 12)),
    ("conv5", (1, 256, 12, 12)),
    ("relu5", (1, 256, 12, 12)),
    ("pool5", (1, 256, 5, 5)),
    ("flatten", (1, 6400)),
    ("fc6", (1, 4096)),
    ("relu6", (1, 4096)),
    ("dropout6", (1, 4096)),
    ("fc7", (1, 4096)),
    ("relu7", (1, 4096)),
    ("dropout7", (1, 4096)),
    ("fc8", (1, 10)),
]
# 1x11x11x96+96, 96x5x5x256+256, 256x3x3x384+384, 384x3x3x384+384, 384x3x3x256+256, 6400x4096+4096,
# 4096x4096+4096, 4096x10+10
BOOK_PARAMS = 46_764_746


@pytest.fixture(scope="module")
def book_nets(backends):
    return {n: b.alexnet() for n, b in backends.items()}


def test_the_books_trace_and_count_in_every_backend(backends, book_nets):
    s = spec(make_alexnet_config())
    assert s.trace() == BOOK_TRACE and s.params == BOOK_PARAMS
    for n, b in backends.items():
        assert b.layer_shapes(book_nets[n], 224) == BOOK_TRACE, n
        assert b.count_params(book_nets[n]) == BOOK_PARAMS, n
        assert [k for k, _ in b.named_parameters(book_nets[n])] == list(s.param_shapes()), n


@pytest.mark.parametrize(
    "kwargs",
    [dict(input_size=65), dict(input_size=96, in_channels=3, num_classes=1000)],
    ids=["65px-the-smallest", "96px-3ch-1000cls"],
)
def test_other_sizes_follow_the_spec(backends, kwargs):
    for n, b in backends.items():
        net = b.alexnet(**kwargs)
        s = spec(net.config)
        assert b.layer_shapes(net, net.config.input_size, net.config.in_channels) == s.trace(), n
        assert b.count_params(net) == s.params, n


def test_too_small_an_input_says_the_minimum(backends):
    for b in backends.values():
        with pytest.raises(ConfigError, match=r"input_size 64 is too small for AlexNet.*input_size=65"):
            b.alexnet(input_size=64)


@pytest.mark.parametrize("src, dst", list(itertools.permutations(BACKENDS, 2)))
def test_logits_agree_after_transfer(backends, book_nets, src, dst):
    weights = random_weights(book_nets[src].config, seed=11)
    backends[src].import_weights(book_nets[src], weights)
    x = np.random.default_rng(12).random((2, 1, 224, 224), dtype=np.float32)
    moved = backends[dst].import_weights(book_nets[dst], backends[src].export_weights(book_nets[src]))
    a, b = forward(backends[src], book_nets[src], x), forward(backends[dst], moved, x)
    assert np.abs(a).max() > 1e-2
    assert np.abs(a - b).max() <= 1e-4, f"{src}->{dst}: max abs diff {np.abs(a - b).max():.2e}"


def test_loss_and_gradients_agree(backends):
    # Dropout off so the four compute one function. A ReLU makes a gradient comparison depend on the input:
    # where a pre-activation lies within fp32 rounding of zero, a framework may put it on the other side and
    # drop (or keep) its gradient. Measured at 96 px, batch 8: Keras' conv4 gradient is 1.5e-3 off a float64
    # reference while its gradient at relu4's output is within 3e-7 — one pre-activation of 49,152 (|v| = 3e-8)
    # flipped sign; on this 224 px batch such flips put Keras' conv1 gradient 4.4e-3 off PyTorch's, the other
    # layers within 2e-6. So the bound is 1e-2 of each gradient's norm: above a flip or two, and far below what
    # a real error gives (a transposed kernel, a mis-permuted fc6 or a wrong padding: O(1)).
    # Memory: each framework's network and gradients (190 MB each) are dropped before the next is built; only
    # PyTorch's gradients, the reference, are kept.
    config = dict(dropout=0.0)
    rng = np.random.default_rng(13)
    x, y = rng.random((4, 1, 224, 224), dtype=np.float32), rng.integers(0, 10, 4)
    weights = random_weights(make_alexnet_config(**config), seed=14)

    def loss_and_gradients_of(n):
        b = backends[n]
        result = loss_and_gradients(b, b.import_weights(b.alexnet(**config), weights), x, y)
        release_memory()  # the network, cyclic garbage in Keras and Gluon
        return result

    ref_loss, ref_grads = loss_and_gradients_of("torch")
    assert sorted(ref_grads) == sorted(spec(make_alexnet_config(**config)).param_shapes())
    for n in backends:
        loss, grads = (ref_loss, ref_grads) if n == "torch" else loss_and_gradients_of(n)
        assert loss == pytest.approx(ref_loss, rel=1e-5), n
        for key, g in ref_grads.items():
            err = np.linalg.norm(grads[key] - g) / max(np.linalg.norm(g), 1e-12)
            assert err <= 1e-2, f"{n} gradient of {key}: relative error {err:.2e}"
        del loss, grads


def test_one_sgd_step_on_real_data_leaves_the_same_weights(backends):
    config = dict(input_size=65, dropout=0.0)
    after, start = {}, None
    for n, b in backends.items():
        net = b.alexnet(**config)
        start = start or random_weights(net.config, seed=15)
        b.import_weights(net, start)
        train_iter, test_iter = b.load_data_fashion_mnist(64, resize=65, seed=1, train_limit=64, test_limit=64)
        history = b.train(net, train_iter, test_iter, 1, lr=0.01, verbose=False)
        assert np.isfinite(history.last.loss) and len(history.epochs) == 1
        after[n] = b.export_weights(net)
    for n, w in after.items():
        for key, ref in after["torch"].items():
            step, ref_step = w[key] - start[key], ref - start[key]
            err = np.linalg.norm(step - ref_step) / np.linalg.norm(ref_step)
            assert err <= 1e-4, f"{n}: step of {key} differs from PyTorch's by {err:.2e} (relative)"


def test_model_files_rebuild_alexnet_in_every_framework(backends, tmp_path):
    net = backends["torch"].alexnet(input_size=65)
    weights = random_weights(net.config, seed=16)
    backends["torch"].save_weights(backends["torch"].import_weights(net, weights), tmp_path / "a.npz")
    for n, b in backends.items():
        moved = b.load_weights(b.alexnet(input_size=65), tmp_path / "a.npz")
        suffix = MODEL_SUFFIXES[n]
        b.save_model(moved, tmp_path / f"model{suffix}")
        loaded = b.load_model(tmp_path / f"model{suffix}")
        assert loaded.config == net.config, n
        for key, array in b.export_weights(loaded).items():
            np.testing.assert_array_equal(array, weights[key], err_msg=f"{n}: {key}")


def test_alexnet_weights_are_refused_by_a_vgg_and_back(backends, tmp_path):
    b = backends["torch"]
    b.save_weights(b.alexnet(input_size=65), tmp_path / "alexnet.npz")
    with pytest.raises(WeightsError, match=r"holds weights for alexnet, 1x65x65 in.*but this network is vgg11"):
        b.load_weights(b.vgg(ratio=8, input_size=32, fc_hidden=64), tmp_path / "alexnet.npz")
    with pytest.raises(WeightsError, match="parameter conv1.weight .* is missing"):
        b.import_weights(b.alexnet(input_size=65), xavier_init(b.vgg(ratio=8, input_size=32, fc_hidden=64).config))


def test_summary_agrees_across_the_backends_and_the_spec(backends, capsys):
    out = run_main(capsys, "summary", "--arch", "alexnet", "--backends", "all")
    total = next(line for line in out.splitlines() if line.startswith("total"))
    assert total.count(f"{BOOK_PARAMS:,}") == 1 + len(BACKENDS)
    assert f"all {len(BACKENDS)} backend(s) agree with the spec" in out
    assert "(1, 256, 5, 5)" in out and "fc8" in out


def test_vgg_options_are_refused_for_alexnet(capsys):
    done = run_in_process(capsys, "summary", "--arch", "alexnet", "--ratio", "4", "--batch-norm")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == (
        "error: --ratio, --batch-norm change VGG only; AlexNet is the book's network as written: leave them out"
    )


def test_compare_trains_alexnet_in_every_framework_with_the_books_lr(backends, tmp_path, capsys):
    done = run_vgg(
        "compare",
        "--arch",
        "alexnet",
        "--resize",
        "65",
        "--epochs",
        "1",
        "--train-limit",
        "128",
        "--test-limit",
        "64",
        "--out",
        str(tmp_path),
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    runs = json.loads((tmp_path / "results.json").read_text())["runs"]
    assert [r["backend"] for r in runs] == list(BACKENDS)
    for r in runs:
        assert (
            r["lr"] == 0.01
            and r["config"]["arch"] == "alexnet"
            and r["params"] == spec(make_alexnet_config(input_size=65)).params
        )
        assert np.isfinite(r["history"]["epochs"][0]["loss"])
    assert (tmp_path / "report.md").read_text().startswith(f"# AlexNet on Fashion-MNIST in {len(BACKENDS)} frameworks")
    # the trained PyTorch model moves to Keras and keeps its accuracy there (in this process: the frameworks are
    # loaded already)
    run_main(capsys, "convert", tmp_path / "torch" / "model.pt", tmp_path / "a.weights.h5", "--to", "tf")
    accs = [
        run_main(capsys, "evaluate", path, "--test-limit", "128").split("test acc ")[1].split()[0]
        for path in (tmp_path / "torch" / "model.pt", tmp_path / "a.weights.h5")
    ]
    assert accs[0] == accs[1]
