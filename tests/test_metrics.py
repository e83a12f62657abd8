"""What the numbers of a run are made of: the accuracy of an evaluation, the epoch's mean loss, and a layer
whose term the tests' usual activations hide (local response normalisation)."""

from __future__ import annotations

import numpy as np
import pytest
from adapters import forward, layer_forward
from helpers import TINY

from common.arch import LRN, LayerPlan
from common.data import fashion_mnist_batches
from common.training import Meter
from common.weights import xavier_init

# --- the accuracy of an evaluation whose last batch is short ------------------------------------------------

# 101 test images in batches of 64: a last batch of 37. 101 is prime, so no count of hits over the first 64
# images gives the same fraction as a count over all 101 (unless both are zero): an evaluation that leaves the
# short batch out cannot hit the right accuracy by chance.
EXAMPLES, BATCH = 101, 64


def test_the_accuracy_counts_every_example_of_a_short_last_batch(backend):
    net = backend.vgg(**TINY, dropout=0.0)
    backend.import_weights(net, xavier_init(net.config, 3))
    _, test_iter = backend.load_data_fashion_mnist(BATCH, resize=32, seed=1, train_limit=BATCH, test_limit=EXAMPLES)
    _, canonical = fashion_mnist_batches(BATCH, 32, 1, "NCHW", None, BATCH, EXAMPLES)  # the same images, NCHW
    batches = list(canonical)
    assert [len(y) for _, y in batches] == [64, 37]
    x = np.concatenate([np.asarray(b[0], np.float32) for b in batches])
    y = np.concatenate([np.asarray(b[1]) for b in batches])
    hits = int((forward(backend, net, x).argmax(axis=1) == y).sum())  # the eval-mode forward pass, every example
    assert hits > 0
    got = backend.evaluate_accuracy(net, test_iter)
    print(f"{backend.__name__}: accuracy {got} against {hits / EXAMPLES}")
    assert got == pytest.approx(hits / EXAMPLES, abs=1e-12)


# --- the epoch's loss: a mean over examples, not over steps --------------------------------------------------


def test_the_meter_weighs_each_step_by_its_examples():
    """A full batch of 64 (loss sum 10, 5 hits) and a last batch of one (loss 1, 1 hit): 11/65 and 6/65, where
    a mean over steps would give (10/64 + 1) / 2 = 0.58 and the sums over steps 5.5."""
    meter = Meter()
    meter.add(10.0, 5.0, 64)
    meter.add(1.0, 1.0, 1)
    assert meter.n == 65
    assert meter.mean_loss == pytest.approx(11 / 65, rel=1e-12)
    assert meter.accuracy == pytest.approx(6 / 65, rel=1e-12)


# --- local response normalisation alone, across backends -----------------------------------------------------

# LRN's term alpha / size * sum(x^2) next to k = 2 (alpha 1e-4) is invisible at the activations of the tests'
# networks (a window of 11 channels instead of 5 moved their logits by 1.2e-7). Activations of a few hundred make
# it count: x^2 * 2e-5 summed over the window is of the order of k. Measured: the three backends' LRN agree to
# 1.4e-7 (relative), one with an 11-channel window is 0.18 away; the bound is 1e-5.
LRN_TOLERANCE = 1e-5


def test_the_lrn_layer_alone_agrees_across_backends(backends):
    rng = np.random.default_rng(0)
    x = (rng.random((2, 16, 6, 6)) * 400.0).astype(np.float32)  # post-ReLU activations, up to 400
    plan = LayerPlan("lrn", "lrn", 16, 16)
    outputs = {n: layer_forward(b, plan, x) for n, b in backends.items()}
    ref = outputs["torch"]
    k, alpha, beta, size = LRN.k, LRN.alpha, LRN.beta, LRN.size
    assert np.abs(ref / x - 1).max() > 0.1  # the term matters at these activations: the comparison says something
    # the definition in float64: x / (k + alpha / size * sum of x^2 over the size channels centred on x)^beta
    sq = np.pad(x.astype(np.float64) ** 2, ((0, 0), (size // 2, size // 2), (0, 0), (0, 0)))
    window = sum(sq[:, i : i + x.shape[1]] for i in range(size))
    want = x / (k + alpha / size * window) ** beta
    for n, out in outputs.items():
        err = np.abs(out - want).max() / np.abs(want).max()
        print(f"{n}: LRN off the definition by {err:.2e}")
        assert err <= LRN_TOLERANCE, f"{n}: LRN differs from its definition by {err:.2e} (relative)"
