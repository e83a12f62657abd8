"""The recipe as written down: the learning-rate schedule, Xavier's bounds, batch norm's constants, evaluation mode."""

import itertools
import math

import numpy as np
import pytest
from adapters import adapter
from helpers import random_weights

from common.arch import BN_EPSILON, BN_MOMENTUM, make_config
from common.data import fashion_mnist_batches
from common.errors import ConfigError
from common.recipe import MAX_INT, MAX_LR, MIN_LR, check_train_args, epoch_lr
from common.spec import spec
from common.weights import xavier_init

# --- the recipe's arguments, at their bounds ----------------------------------------------------------------------


@pytest.mark.parametrize("epochs", [0, 1, MAX_INT, np.int64(3)])
@pytest.mark.parametrize("lr", [MIN_LR, 0.05, MAX_LR, np.float32(0.001), 1])
def test_check_train_args_takes_every_value_within_the_bounds(epochs, lr):
    assert check_train_args(epochs, lr, "adam", "cosine") == (int(epochs), float(lr), "adam")


@pytest.mark.parametrize(
    "epochs, lr, optimizer, schedule, said",
    [
        (-1, 0.05, "sgd", "constant", "num_epochs must be a whole number from 0 to"),
        (MAX_INT + 1, 0.05, "sgd", "constant", "num_epochs must be a whole number from 0 to"),
        (True, 0.05, "sgd", "constant", "num_epochs must be a whole number from 0 to"),
        (2.0, 0.05, "sgd", "constant", "num_epochs must be a whole number from 0 to"),
        ("2", 0.05, "sgd", "constant", "num_epochs must be a whole number from 0 to"),
        (1, MIN_LR / 2, "sgd", "constant", "lr must be a positive number from"),
        (1, MAX_LR * 2, "sgd", "constant", "lr must be a positive number from"),
        (1, 0.0, "sgd", "constant", "lr must be a positive number from"),
        (1, True, "sgd", "constant", "lr must be a positive number from"),
        (1, "0.05", "sgd", "constant", "lr must be a positive number from"),
        (1, float("nan"), "sgd", "constant", "lr must be a positive number from"),
        (1, 0.05, "momentum", "constant", "unknown optimizer 'momentum'; choose from sgd, adam"),
        (1, 0.05, "sgd", "step", "unknown lr_schedule 'step'; choose from constant, cosine"),
    ],
)
def test_check_train_args_refuses_one_step_past_each_bound(epochs, lr, optimizer, schedule, said):
    with pytest.raises(ConfigError) as e:
        check_train_args(epochs, lr, optimizer, schedule)
    assert str(e.value).startswith(said)
    if said.startswith("num_epochs"):
        assert f"from 0 to {MAX_INT:,}, got {epochs!r}" in str(e.value)
    elif said.startswith("lr"):
        assert f"from {MIN_LR:.3g} to {MAX_LR:.3g} " in str(e.value) and f"got {lr!r}" in str(e.value)


# --- the learning rate of each epoch ----------------------------------------------------------------------

# lr * 1/2 (1 + cos(pi (e - 1) / n)) for epochs e = 1..n, here for lr = 1
COSINE = {
    1: [1.0],
    2: [1.0, 0.5],
    4: [1.0, 0.8535533905932737, 0.5, 0.14644660940672624],
    10: [
        1.0,
        0.9755282581475768,
        0.9045084971874737,
        0.7938926261462366,
        0.6545084971874737,
        0.5,
        0.3454915028125263,
        0.20610737385376343,
        0.09549150281252627,
        0.024471741852423234,
    ],
}


@pytest.mark.parametrize("n", sorted(COSINE))
def test_cosine_schedule_starts_at_lr_and_ends_above_zero(n):
    lr = 0.05
    rates = [epoch_lr(lr, "cosine", e, n) for e in range(1, n + 1)]
    assert rates == pytest.approx([lr * v for v in COSINE[n]], rel=1e-12)
    assert rates == pytest.approx([lr * 0.5 * (1 + math.cos(math.pi * (e - 1) / n)) for e in range(1, n + 1)])
    assert rates[0] == lr and rates[-1] > 0  # epoch 1 trains at lr, the last epoch still trains
    assert all(a > b for a, b in itertools.pairwise(rates))


@pytest.mark.parametrize("n", sorted(COSINE))
def test_constant_schedule_is_lr_throughout(n):
    assert [epoch_lr(0.05, "constant", e, n) for e in range(1, n + 1)] == [0.05] * n


# --- Xavier's starting weights ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(arch="vgg16_c", in_channels=3, input_size=32, fc_hidden=512, batch_norm=True),  # 3x3 and 1x1
        dict(arch="vgg11", in_channels=3, input_size=64, fc_hidden=1024),
    ],
    ids=["vgg16_c-bn", "vgg11"],
)
def test_xavier_init_follows_its_formula(kwargs):
    """Uniform in [-b, b], b = sqrt(6 / (fan_in + fan_out)): fan_in = in*kh*kw, fan_out = out*kh*kw.

    Every sample here has at least 1,728 values: its largest |w| is within 3% of b (a miss has probability
    below 1e-11) and its standard deviation within 5% of b / sqrt(3) (over four standard errors).
    """
    config = make_config(**kwargs)
    weights, shapes = xavier_init(config, seed=0), spec(config).param_shapes()
    assert list(weights) == list(shapes)
    drawn = 0
    for name, w in weights.items():
        assert w.dtype == np.float32 and w.shape == shapes[name], name
        if name.endswith(".weight") and w.ndim > 1:
            out, inp, *kernel = w.shape
            k = math.prod(kernel)  # 1 for a dense layer
            bound = math.sqrt(6 / (inp * k + out * k))
            assert w.size >= 1728
            assert np.abs(w).max() <= bound, name
            assert np.abs(w).max() >= 0.97 * bound, name
            assert w.std() == pytest.approx(bound / math.sqrt(3), rel=0.05), name
            drawn += 1
        elif name.endswith((".running_var", ".weight")):  # batch norm at identity: scale 1, variance 1
            assert np.all(w == 1), name
        else:  # biases, batch norm's shift and running mean
            assert not w.any(), name
    assert drawn == sum(len(b.kernels) for b in config.blocks) + 3


# --- batch norm's constants, read from the built layers --------------------------------------------------


def test_batch_norm_epsilon_and_momentum_are_the_canonical_ones(backend):
    # The documented canonical values (common.arch): PyTorch's and Gluon's defaults; Keras' epsilon is 1e-3 by
    # default and its momentum (0.9) weighs the old statistic, the adapter reports 1 - it.
    assert (BN_EPSILON, BN_MOMENTUM) == (1e-5, 0.1)
    net = backend.vgg(arch="vgg11", ratio=8, input_size=32, fc_hidden=64, batch_norm=True)
    found = adapter(backend).batch_norms(net)
    assert len(found) == 8  # one after each of VGG-11's convolutions
    for epsilon, momentum in found:
        assert epsilon == pytest.approx(BN_EPSILON, rel=1e-6)
        assert momentum == pytest.approx(BN_MOMENTUM, rel=1e-9)


# --- evaluation mode --------------------------------------------------------------------------------------


def test_evaluation_is_deterministic_and_leaves_batch_norm_statistics_alone(backend):
    """With dropout 0.5 and batch norm: evaluate_accuracy and the eval-mode forward pass are one function."""
    a = adapter(backend)
    net = backend.vgg(arch="vgg11", ratio=8, input_size=32, fc_hidden=64, batch_norm=True, dropout=0.5)
    weights = random_weights(net.config, seed=21)  # running statistics far from the batch's own
    backend.import_weights(net, weights)
    _, test = fashion_mnist_batches(256, resize=32, test_limit=256)
    x, y = next(iter(test))  # real images, NCHW

    logits = a.forward(net, x)
    # In training mode (dropout, batch statistics) the predictions differ: agreement below is not luck.
    assert (a.forward_train(net, x).argmax(axis=1) != logits.argmax(axis=1)).any()
    backend.import_weights(net, weights)  # the training-mode pass may have moved the running statistics

    batch = np.ascontiguousarray(x.transpose(0, 2, 3, 1) if backend.LAYOUT == "NHWC" else x)
    # every prediction of evaluate_accuracy is the eval-mode forward pass's
    assert backend.evaluate_accuracy(net, [a.to_backend(batch, logits.argmax(axis=1))]) == 1.0
    assert backend.evaluate_accuracy(net, [a.to_backend(batch, y)]) == pytest.approx((logits.argmax(1) == y).mean())
    after = backend.export_weights(net)
    for key, value in weights.items():  # running statistics included: evaluation changed nothing
        assert np.array_equal(after[key], value), key
    np.testing.assert_array_equal(a.forward(net, x), logits)  # and a second pass gives the same logits
