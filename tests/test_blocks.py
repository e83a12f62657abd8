"""The chapter's hand-written blocks in every backend: MySequential, hand_vgg, FixedHiddenMLP, tied_mlp."""

import numpy as np
import pytest
from adapters import adapter, forward, parameters, set_parameters
from helpers import random_weights

from common.blocks import MLP_WIDTH, fixed_hidden_mlp, fixed_weight
from common.data import fashion_mnist_batches
from common.errors import ConfigError
from common.spec import spec

# Small networks (ratio 8, 32 px, 64-wide hidden layers): plain, batch norm, and 3 input channels with LRN.
CONFIGS = [
    dict(arch="vgg11", ratio=8, input_size=32, fc_hidden=64),
    dict(arch="vgg11", ratio=8, input_size=32, fc_hidden=64, batch_norm=True),
    dict(arch="vgg11_lrn", ratio=8, input_size=32, fc_hidden=64, in_channels=3),
]
IDS = ["plain", "bn", "lrn-c3"]
HIDDEN = 8  # tied_mlp's hidden width
SHARED = HIDDEN * HIDDEN + HIDDEN  # parameters of its shared layer


@pytest.fixture(scope="module")
def images():
    """Eight real Fashion-MNIST test images at 32x32, NCHW, one channel."""
    _, test = fashion_mnist_batches(8, resize=32, test_limit=8)
    return next(iter(test))[0]


@pytest.mark.parametrize("case", CONFIGS, ids=IDS)
def test_hand_vgg_is_the_built_in_vgg(backend, case, images):
    built = backend.vgg(**case)
    backend.import_weights(built, random_weights(built.config, seed=11))  # batch-norm statistics matter too
    hand = backend.hand_vgg(built.config)
    assert hand.config == built.config
    assert isinstance(hand, backend.MySequential)
    blocks = [layer for name, layer in adapter(backend).children(hand) if name.startswith("block")]
    assert len(blocks) == 5 and all(isinstance(block, backend.MySequential) for block in blocks)

    c = built.config.in_channels
    assert backend.layer_shapes(hand, 32, c) == backend.layer_shapes(built, 32, c) == spec(built.config).trace()
    assert backend.count_params(hand) == backend.count_params(built) == spec(built.config).params
    assert backend.named_parameters(hand) == backend.named_parameters(built)
    assert backend.summary(hand, 32, c) == backend.summary(built, 32, c)

    backend.import_weights(hand, backend.export_weights(built))
    x = np.repeat(images, c, axis=1)
    a, b = forward(backend, built, x), forward(backend, hand, x)  # evaluation mode: dropout off
    assert np.abs(a).max() > 1e-2
    assert np.abs(a - b).max() <= 1e-5, f"max abs diff {np.abs(a - b).max():.2e}"
    assert np.array_equal(forward(backend, hand, x), b)  # deterministic: dropout really is off


def test_my_sequential_runs_unnamed_children_in_order(backend):
    # the book's use: MySequential(layer, layer, ...), here the layers of the framework's own Sequential
    net = backend.tied_mlp(hidden=HIDDEN, tied=False)
    mine = backend.MySequential(*(layer for _, layer in adapter(backend).children(net)))
    x = np.random.default_rng(7).random((4, 20), dtype=np.float32)
    assert backend.count_params(mine) == backend.count_params(net)
    out, _ = adapter(backend).output_and_gradients(net, x)
    np.testing.assert_array_equal(adapter(backend).output_and_gradients(mine, x)[0], out)


def test_hand_vgg_takes_a_configuration(backend):
    with pytest.raises(ConfigError, match="hand_vgg takes a VGGConfig .* got dict"):
        backend.hand_vgg(dict(arch="vgg11"))


MLP_SEED = 3


def _mlp_inputs(seed=MLP_SEED):
    rng = np.random.default_rng(seed)
    weights = {
        "linear.weight": rng.normal(0, 0.3, (MLP_WIDTH, MLP_WIDTH)).astype(np.float32),
        "linear.bias": rng.normal(0, 0.3, MLP_WIDTH).astype(np.float32),
    }
    return weights, rng.random((2, MLP_WIDTH), dtype=np.float32)


def test_fixed_hidden_mlp_constant_is_not_a_parameter(backend):
    net = backend.FixedHiddenMLP(seed=MLP_SEED)
    # the same constant everywhere
    assert np.array_equal(adapter(backend).read(net.rand_weight), fixed_weight(MLP_SEED))
    assert fixed_weight(MLP_SEED).min() >= 0 and fixed_weight(MLP_SEED).max() < 1
    # one dense layer (used twice) is all that trains: 20 x 20 + 20, not the constant's 400 more
    assert backend.count_params(net) == MLP_WIDTH * MLP_WIDTH + MLP_WIDTH
    weights, x = _mlp_inputs()
    set_parameters(backend, net, weights)
    _, grads = adapter(backend).output_and_gradients(net, x)
    assert sorted(grads) == ["linear.bias", "linear.weight"]  # no gradient for the constant
    assert np.array_equal(adapter(backend).read(net.rand_weight), fixed_weight(MLP_SEED))


def test_fixed_hidden_mlp_agrees_across_frameworks_and_shares_its_layer(backends):
    weights, x = _mlp_inputs()
    value, expected = fixed_hidden_mlp(x, weights["linear.weight"], weights["linear.bias"], fixed_weight(MLP_SEED))
    assert 0.05 < abs(value) <= 1  # the loop ran: |X|.sum() ended at most 1
    outputs = {}
    for name, b in backends.items():
        net = b.FixedHiddenMLP(seed=MLP_SEED)
        set_parameters(b, net, weights)
        out, grads = adapter(b).output_and_gradients(net, x)
        outputs[name] = np.asarray(out).item()
        assert outputs[name] == pytest.approx(value, rel=1e-5), name
        # the gradient of the one weight is the sum over both uses of the layer (the reference adds both)
        for key, g in expected.items():
            err = np.linalg.norm(grads[key] - g) / np.linalg.norm(g)
            assert err <= 1e-5, f"{name} gradient of {key}: relative error {err:.2e}"
    for name, out in outputs.items():
        assert out == pytest.approx(outputs["torch"], rel=1e-5), name


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_tied_layer_is_one_storage(backend, tied):
    net = backend.tied_mlp(hidden=HIDDEN, tied=tied)
    uses = adapter(backend).dense_use_weights(net)  # fc1, shared, shared again (or its copy), fc2
    assert len(uses) == 4
    rng = np.random.default_rng(5)
    for source, target in ((1, 2), (2, 1)):
        new = rng.normal(size=(HIDDEN, HIDDEN)).astype(np.float32)
        adapter(backend).write(uses[source], new)  # change the weight through one use ...
        seen = adapter(backend).read(uses[target])  # ... and look through the other
        assert np.array_equal(seen, new) == tied


def test_tied_network_counts_the_shared_layer_once(backend):
    tied, untied = backend.tied_mlp(hidden=HIDDEN), backend.tied_mlp(hidden=HIDDEN, tied=False)
    assert backend.count_params(tied) == backend.count_params(untied) - SHARED
    names = ["fc1.weight", "fc1.bias", "shared.weight", "shared.bias"]
    assert list(parameters(backend, tied)) == [*names, "fc2.weight", "fc2.bias"]
    assert list(parameters(backend, untied)) == [*names, "shared2.weight", "shared2.bias", "fc2.weight", "fc2.bias"]


def test_tied_gradient_is_the_sum_of_both_uses(backend):
    tied, untied = backend.tied_mlp(hidden=HIDDEN), backend.tied_mlp(hidden=HIDDEN, tied=False)
    rng = np.random.default_rng(6)
    values = {k: rng.normal(0, 0.5, v.shape).astype(np.float32) for k, v in parameters(backend, tied).items()}
    set_parameters(backend, tied, values)
    # the untied copy: two separate layers holding the same values
    set_parameters(
        backend, untied, {**values, "shared2.weight": values["shared.weight"], "shared2.bias": values["shared.bias"]}
    )
    x = rng.random((16, 20), dtype=np.float32)
    out_tied, g_tied = adapter(backend).output_and_gradients(tied, x)
    out_untied, g_untied = adapter(backend).output_and_gradients(untied, x)
    np.testing.assert_allclose(out_tied, out_untied, rtol=1e-6)
    for part in ("weight", "bias"):
        first, second = g_untied[f"shared.{part}"], g_untied[f"shared2.{part}"]
        assert np.abs(first).max() > 1e-3 and np.abs(second).max() > 1e-3  # both uses contribute
        assert not np.allclose(first, second)  # and differently
        np.testing.assert_allclose(g_tied[f"shared.{part}"], first + second, rtol=1e-5, atol=1e-6)
    for key in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"):
        np.testing.assert_allclose(g_tied[key], g_untied[key], rtol=1e-5, atol=1e-6)


def test_tied_mlp_refuses_bad_arguments(backend):
    with pytest.raises(ConfigError, match="hidden must be a positive integer"):
        backend.tied_mlp(hidden=0)
    with pytest.raises(ConfigError, match="tied must be True or False"):
        backend.tied_mlp(tied="yes")
