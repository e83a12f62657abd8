"""Bad input to the Python API: batches of the wrong rank, layout, channels, size, dtype or labels, empty data,
values that are no numbers. Each is the project's own error (an InputError or ConfigError that says what to change),
raised before any step; a valid batch passes.

Configurations (vgg()'s arguments): test_spec.py. The command line's messages: test_cli_messages.py.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from adapters import adapter
from conftest import load_backend
from helpers import TINY

from common.errors import ConfigError, InputError

# --- a batch that does not fit the network -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_nets():
    """A tiny network per backend, built on first use; the module's tests share it."""
    return {}


@pytest.fixture
def net_and_batch(backend, tiny_nets):
    """A tiny network of ``backend`` and a valid batch for it as NumPy (NCHW, or NHWC for tf.keras)."""
    if backend.__name__ not in tiny_nets:
        tiny_nets[backend.__name__] = backend.vgg(**TINY)
    layout = backend.LAYOUT
    x = np.random.default_rng(0).random((4, 1, 32, 32), dtype=np.float32)
    x = x.transpose(0, 2, 3, 1) if layout == "NHWC" else x
    return tiny_nets[backend.__name__], x, np.array([0, 1, 2, 9]), layout


def _evaluate(backend, net, x, y, **kwargs):
    return backend.evaluate_accuracy(net, [adapter(backend).to_backend(x, y)], **kwargs)


def test_valid_batch_passes_the_checks(backend, net_and_batch):
    net, x, y, _ = net_and_batch
    assert 0 <= _evaluate(backend, net, x, y) <= 1


def test_input_of_the_wrong_rank_is_refused(backend, net_and_batch):
    net, x, y, _ = net_and_batch
    with pytest.raises(InputError, match=r"batch 1 has shape \((1, 32, 32|32, 32, 1)\) \(rank 3\).*add the batch"):
        _evaluate(backend, net, x[0], y[:1])


def test_input_with_the_wrong_channel_count_is_refused(backend, net_and_batch):
    net, x, y, layout = net_and_batch
    x3 = np.repeat(x, 3, axis=1 if layout == "NCHW" else 3)
    with pytest.raises(InputError, match=r"has 3 channel\(s\).*build the network with in_channels=3"):
        _evaluate(backend, net, x3, y)


def test_input_of_the_wrong_spatial_size_is_refused(backend, net_and_batch):
    net, _x, y, layout = net_and_batch
    big = np.zeros((4, 1, 64, 64) if layout == "NCHW" else (4, 64, 64, 1), np.float32)
    with pytest.raises(InputError, match=r"has 64x64 images .*resize them to 32x32"):
        _evaluate(backend, net, big, y)


def test_input_of_the_wrong_dtype_is_refused(backend, net_and_batch):
    net, x, y, _ = net_and_batch
    with pytest.raises(InputError, match="has dtype float64; .* in float32: convert it"):
        _evaluate(backend, net, x.astype(np.float64), y)


def test_calling_the_network_directly_checks_its_input(backend, net_and_batch):
    net, x, y, layout = net_and_batch
    wrong = {
        "has 3 channel(s)": np.repeat(x, 3, axis=1 if layout == "NCHW" else 3),
        "has shape": x[0],
        "has dtype float64": x.astype(np.float64),
    }
    for message, bad in wrong.items():
        with pytest.raises(InputError, match=re.escape(f"the input {message}")):
            net(adapter(backend).to_backend(bad, y)[0])
    assert tuple(net(adapter(backend).to_backend(x, y)[0]).shape) == (4, 10)


def test_labels_outside_the_classes_are_refused(backend, net_and_batch):
    net, x, _y, _ = net_and_batch
    with pytest.raises(InputError, match=r"has label 10, outside \[0, 10\)"):
        _evaluate(backend, net, x, np.array([0, 1, 10, 3]))
    with pytest.raises(InputError, match=r"has label -1, outside \[0, 10\)"):
        _evaluate(backend, net, x, np.array([0, -1, 2, 3]))


def test_non_finite_pixels_are_refused_unless_the_check_is_off(backend, net_and_batch):
    net, x, y, _ = net_and_batch
    x = x.copy()
    x.flat[5] = np.nan
    with pytest.raises(InputError, match="holds NaN or infinite pixel values.*check_finite=False"):
        _evaluate(backend, net, x, y)
    assert 0 <= _evaluate(backend, net, x, y, check_finite=False) <= 1


def test_bad_training_batch_is_refused_before_any_step(backend, net_and_batch):
    net, x, _y, _ = net_and_batch
    before = backend.export_weights(net)
    with pytest.raises(InputError, match=r"training batch 1 of epoch 1 has label 12"):
        backend.train(net, [adapter(backend).to_backend(x, np.array([0, 1, 12, 3]))], [], 1, verbose=False)
    after = backend.export_weights(net)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_a_batch_that_is_no_pair_and_a_block_too_deep_are_refused(backend):
    net = backend.vgg(**TINY)
    train_iter, test_iter = backend.load_data_fashion_mnist(32, resize=32, train_limit=32, test_limit=32)
    x, y = next(iter(train_iter))
    with pytest.raises(InputError, match="training batch 1 of epoch 1 is a tuple that is not an"):
        backend.train(net, [(x, y, y)], test_iter, 1, verbose=False)
    with pytest.raises(InputError, match="evaluation batch 1 is a NoneType that is not an"):
        backend.evaluate_accuracy(net, [None])
    with pytest.raises(ConfigError, match=r"num_convs must be a positive integer \(at most 256\)"):
        backend.vgg_block(300, 1, 8)


def test_labels_of_another_dtype_are_counted_in_keras_and_refused_by_name_in_gluon():
    tf, mxnet = load_backend("tf"), load_backend("mxnet")
    import mxnet as mx
    import tensorflow

    images = np.random.default_rng(0).random((4, 32, 32, 1), dtype=np.float32)
    net = tf.vgg(**TINY)
    counts = set()
    for dtype in (tensorflow.uint8, tensorflow.int32, tensorflow.int64, tensorflow.float32):
        batch = (tensorflow.constant(images), tensorflow.constant([0, 1, 2, 3], dtype=dtype))
        counts.add(tf.evaluate_accuracy(net, [batch]))
    assert len(counts) == 1  # the same count whatever the labels' dtype (Keras' loss takes them all)
    batch = (mx.nd.array(images.transpose(0, 3, 1, 2)), mx.nd.array([0, 1, 2, 3], dtype="int64"))
    with pytest.raises(InputError, match="has labels of dtype int64; give float32 class indices"):
        mxnet.evaluate_accuracy(mxnet.vgg(**TINY), [batch])


# --- layout: a batch of the other layout is named as such ----------------------------------------------------------


# How each framework's network is told to transpose a batch of the other layout.
TRANSPOSE = {
    "vgg_torch": "this looks NHWC (channels last); the PyTorch network takes NCHW: transpose it with "
    "x.permute(0, 3, 1, 2)",
    "vgg_tf": "this looks NCHW (channels first); the tf.keras network takes NHWC: transpose it with "
    "tf.transpose(x, (0, 2, 3, 1))",
    "vgg_mxnet": "this looks NHWC (channels last); the MXNet network takes NCHW: transpose it with "
    "x.transpose((0, 3, 1, 2))",
    "vgg_jax": "this looks NCHW (channels first); the JAX (Flax) network takes NHWC: transpose it with "
    "jnp.transpose(x, (0, 2, 3, 1))",
}


_NETS: dict = {}


def _tiny(backend):
    if backend.__name__ not in _NETS:
        _NETS[backend.__name__] = backend.vgg(**TINY)
    return _NETS[backend.__name__]


def _tensor(backend, x):
    """``x`` as the framework's tensor, its dtype kept."""
    return adapter(backend).to_backend(x, np.zeros(len(x), np.int64))[0]


def _other_layout(backend, dtype=np.float32):
    """A valid batch of the tiny network, but in the layout its framework does not take."""
    x = np.random.default_rng(0).random((4, 1, 32, 32)).astype(dtype)  # NCHW
    return x if backend.LAYOUT == "NHWC" else x.transpose(0, 2, 3, 1)


def test_a_batch_of_the_other_layout_is_named_with_the_way_to_transpose_it(backend):
    net = _tiny(backend)
    with pytest.raises(InputError, match=re.escape("the input has shape (4, ")) as caught:
        net(_tensor(backend, _other_layout(backend)))
    message = str(caught.value)
    assert TRANSPOSE[backend.__name__] in message
    assert "channel(s)" not in message and "in_channels" not in message  # not the wrong advice
    assert f"to get {(4, 1, 32, 32) if backend.LAYOUT == 'NCHW' else (4, 32, 32, 1)}" in message
    assert "float64" not in message


def test_a_batch_wrong_in_layout_and_dtype_is_told_both(backend):
    net = _tiny(backend)
    x = _other_layout(backend, np.float64)
    with pytest.raises(InputError) as caught:
        net(_tensor(backend, x))
    assert TRANSPOSE[backend.__name__] in str(caught.value)
    assert "float64: convert it to float32" in str(caught.value)
    _, y = adapter(backend).to_backend(x, np.array([0, 1, 2, 3], np.int64))
    with pytest.raises(InputError, match=r"evaluation batch 1 has shape .*this looks N.*float64: convert it"):
        backend.evaluate_accuracy(net, [(_tensor(backend, x), y)])


def test_a_batch_wrong_in_channels_and_dtype_is_told_both(backend):
    net = _tiny(backend)
    x = np.random.default_rng(0).random((4, 3, 32, 32) if backend.LAYOUT == "NCHW" else (4, 32, 32, 3))
    with pytest.raises(InputError, match=r"has 3 channel\(s\).*in_channels=3; it is also float64: convert it"):
        net(_tensor(backend, x))


# --- empty data, records, values -----------------------------------------------------------------------------------


def test_empty_or_used_up_data_is_an_input_error_not_a_zero(backend):
    net = backend.vgg(**TINY)
    train_iter, test_iter = backend.load_data_fashion_mnist(32, resize=32, train_limit=32, test_limit=32)
    batch = next(iter(train_iter))
    with pytest.raises(InputError, match="the evaluation data gave no batches"):
        backend.evaluate_accuracy(net, [])
    with pytest.raises(InputError, match="the training data gave no batches in epoch 1"):
        backend.train(net, [], test_iter, 1, verbose=False)
    with pytest.raises(InputError, match="test_iter must be an iterable of"):
        backend.train(net, [batch], None, 1, verbose=False)
    with pytest.raises(InputError, match="no batches in epoch 2; .*a generator is used up after one"):
        backend.train(net, (b for b in [batch]), test_iter, 2, verbose=False)


def test_from_config_takes_a_saved_record_and_refuses_what_is_no_configuration(backend):
    net = backend.vgg(**TINY)
    again = backend.from_config(net.config.to_dict())
    assert again.config == net.config and backend.count_params(again) == backend.count_params(net)
    with pytest.raises(ConfigError, match="config must be a network's configuration"):
        backend.from_config("vgg11")
    with pytest.raises(ConfigError, match="config must be a network's configuration"):
        backend.abstract_network(None)


def test_values_that_are_no_numbers_are_refused_by_the_api(backend):
    net = backend.vgg(**TINY)
    before = backend.export_weights(net)["fc3.weight"].copy()
    with pytest.raises(ConfigError, match="value must be a finite number"):
        backend.init_weights(net, "constant", value=float("nan"))
    with pytest.raises(ConfigError, match="not finite numbers"):
        backend.init_weights(net, lambda name, shape, rng: np.full(shape, np.inf))
    np.testing.assert_array_equal(backend.export_weights(net)["fc3.weight"], before)
    with pytest.raises(ConfigError, match="a GPU's index is a whole number >= 0"):
        backend.try_gpu(-1)
    with pytest.raises(ConfigError, match="seed must be a whole number"):
        backend.FixedHiddenMLP(seed=-1)
