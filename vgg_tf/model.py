"""VGG and AlexNet in tf.keras (Keras 3): built from the plan in ``common.arch``, held to ``common.spec``.

The network computes in NHWC (what TensorFlow's CPU convolutions take); everything that leaves this
package is canonical: ``layer_shapes`` reports NCHW, and ``vgg_tf.weights`` converts layouts.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TypeAlias

import h5py
import keras
import numpy as np
import tensorflow as tf

from common.arch import (
    BN_EPSILON,
    BN_MOMENTUM,
    LRN,
    LayerPlan,
    NetConfig,
    as_config,
    block_plan,
    check_block,
    check_trace_request,
    net_plan,
)
from common.data import check_batch
from common.errors import BackendUnavailable, InputError, WeightsError, reason
from common.report import summary_table
from common.spec import network_functions, spec
from common.weights import meta_config, parse_meta

# The types of the public API, under the same names in every backend: the network and the device (a
# TensorFlow device string such as "/CPU:0").
Net: TypeAlias = keras.Model
Device: TypeAlias = str

if keras.backend.backend() != "tensorflow":
    raise BackendUnavailable(
        f"vgg_tf needs Keras on TensorFlow, but Keras runs on {keras.backend.backend()!r}; "
        f"unset KERAS_BACKEND or set it to 'tensorflow'"
    )


class LocalResponseNorm(keras.layers.Layer):
    """Local response normalisation across channels (the last axis), in the canonical convention.

    ``x / (k + alpha / size * sum(x^2 over size channels)) ** beta`` — TensorFlow's op does not divide
    ``alpha`` by the window, so it is given ``alpha / size``; its window is ``2 * depth_radius + 1``.
    """

    def __init__(self, size, alpha=1e-4, beta=0.75, k=1.0, **kwargs):
        super().__init__(**kwargs)
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def call(self, x):
        return tf.nn.local_response_normalization(
            x, depth_radius=self.size // 2, bias=self.k, alpha=self.alpha / self.size, beta=self.beta
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "size": self.size, "alpha": self.alpha, "beta": self.beta, "k": self.k}


class PaddedConv2D(keras.layers.Conv2D):
    """A convolution with explicit zero padding on every side (PyTorch's ``padding=p``).

    Keras' ``padding="same"`` equals it only at stride 1 with ``p = kernel // 2``; AlexNet's first layer
    (11x11, stride 4, padding 1) is neither, so the padding is added before a ``"valid"`` convolution.
    """

    def __init__(self, filters, kernel_size, pad, **kwargs):
        super().__init__(filters, kernel_size, padding="valid", **kwargs)
        self.pad = pad

    def call(self, x):
        p = self.pad
        return super().call(keras.ops.pad(x, ((0, 0), (p, p), (p, p), (0, 0))))

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        grow = lambda d: None if d is None else d + 2 * self.pad  # noqa: E731
        return super().compute_output_shape((n, grow(h), grow(w), c))

    def get_config(self):
        return {**super().get_config(), "pad": self.pad}


def _layer(p: LayerPlan) -> keras.layers.Layer:
    """The Keras layer for one planned layer, named as in the plan."""
    if p.kind == "conv":  # the initialisers are the recipe's (and Keras' own)
        init = {"kernel_initializer": "glorot_uniform", "bias_initializer": "zeros", "name": p.name}
        if p.stride == 1 and p.padding == p.kernel // 2 and p.kernel % 2:  # "same" is exactly this padding
            return keras.layers.Conv2D(p.out_width, p.kernel, padding="same", **init)
        return PaddedConv2D(p.out_width, p.kernel, p.padding, strides=p.stride, **init)
    if p.kind == "bn":
        return keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=1 - BN_MOMENTUM, name=p.name)
    if p.kind == "relu":
        return keras.layers.ReLU(name=p.name)
    if p.kind == "lrn":
        return LocalResponseNorm(LRN.size, alpha=LRN.alpha, beta=LRN.beta, k=LRN.k, name=p.name)
    if p.kind == "pool":
        return keras.layers.MaxPool2D(pool_size=p.kernel, strides=p.stride, name=p.name)
    if p.kind == "flatten":
        return keras.layers.Flatten(name=p.name)
    if p.kind == "linear":
        return keras.layers.Dense(
            p.out_width, kernel_initializer="glorot_uniform", bias_initializer="zeros", name=p.name
        )
    if p.kind == "dropout":
        return keras.layers.Dropout(p.rate, name=p.name)
    raise AssertionError(f"no Keras layer for {p.kind!r}")


def _block(plan: list[LayerPlan], name: str | None = None) -> keras.Sequential:
    """A built block: its weights depend only on the input channels, so any NHWC image size fits."""
    block = keras.Sequential([_layer(p) for p in plan], name=name)
    block.build((None, None, None, plan[0].in_width))
    return block


def vgg_block(num_convs: int, in_channels: int, out_channels: int, batch_norm: bool = False) -> Net:
    """The book's VGG block: ``num_convs`` 3x3 convolutions (padding 1) with ReLU, then a 2x2 max-pool."""
    return _block(block_plan(check_block(num_convs, in_channels, out_channels, batch_norm), in_channels, batch_norm))


class Network(keras.Sequential):
    """VGG or AlexNet: a built ``keras.Sequential`` of named blocks and layers that knows its configuration.

    Calling it checks the input against the configuration first (rank, channels, size, dtype; NHWC), so a
    mistake is one :class:`common.errors.InputError` that says what to change, not a shape error deep inside.
    """

    def __init__(self, config):
        super().__init__(
            [keras.Input((config.input_size, config.input_size, config.in_channels))]
            + [_block(p, name) if isinstance(p, list) else _layer(p) for name, p in net_plan(config)],
            name=config.arch,
        )
        self.config = config

    def __call__(self, x, *args, **kwargs):
        if not hasattr(x, "shape") or not hasattr(x, "dtype"):
            raise InputError(f"the input is a {type(x).__name__}; give a NumPy array or a tensor (NHWC)")
        dtype = getattr(x.dtype, "name", None) or str(x.dtype)
        check_batch(
            self.config,
            tuple(-1 if d is None else d for d in x.shape),
            dtype,
            layout="NHWC",
            where="the input",
            framework="tf",
        )
        return super().__call__(x, *args, **kwargs)

    def load_weights(self, filepath, skip_mismatch=False, **kwargs):
        """Keras' ``load_weights``, refusing a file of another network before any variable changes.

        A file of :func:`vgg_tf.save_model` carries its configuration (the ``vgg_meta`` attribute): another
        configuration is refused by name. A plain ``.weights.h5`` must hold exactly as many variables of
        each shape as this network (Keras itself would load a deeper network's file partially, without a
        word); ``skip_mismatch=True`` hands such a file to Keras unchecked.
        """
        path = Path(filepath)
        if path.is_file() and h5py.is_hdf5(path):
            try:
                with h5py.File(path, "r") as f:
                    text = f.attrs.get("vgg_meta")
                    shapes = Counter(_dataset_shapes(f))
            except Exception as e:  # h5py on damaged bytes: OSError, RuntimeError ("wrong B-tree signature"), ...
                raise WeightsError(f"{path} is not a readable HDF5 file ({reason(e)}); it is damaged") from None
            if text is not None:
                meta_config(parse_meta(text, path), path, self.config)
            # every file, its own included: an array added to a file of this configuration is refused as well,
            # and each array's shape is known here, before Keras reads (and HDF5 inflates) any of them
            if not skip_mismatch and shapes != Counter(tuple(int(d) for d in v.shape) for v in self.weights):
                raise WeightsError(
                    f"{path} holds {sum(shapes.values())} variables that do not match the "
                    f"{len(self.weights)} of this network ({self.config.describe()}); it was saved from "
                    f"another network: build that one (or pass skip_mismatch=True to load what fits)"
                )
        try:
            return super().load_weights(filepath, skip_mismatch=skip_mismatch, **kwargs)
        except ValueError as e:
            raise WeightsError(f"{path} does not fit this network ({self.config.describe()}): {reason(e)}") from None
        except (OSError, RuntimeError, KeyError) as e:  # h5py reading damaged bytes
            raise WeightsError(f"{path} is not a readable HDF5 file ({reason(e)}); it is damaged") from None


def _dataset_shapes(group: h5py.Group) -> list[tuple[int, ...]]:
    """The shape of every array in an HDF5 file (a Keras ``.weights.h5`` holds one per variable)."""
    out: list[tuple[int, ...]] = []
    group.visititems(lambda _, item: out.append(tuple(item.shape)) if isinstance(item, h5py.Dataset) else None)
    return out


def _named_layers(net: keras.Sequential, prefix: str = ""):
    """(canonical name, layer) for every layer inside ``net``, nested blocks opened: ``block1.conv1``, ..., ``fc3``."""
    for layer in net.layers:
        if isinstance(layer, keras.Model):
            yield from _named_layers(layer, f"{prefix}{layer.name}.")
        else:
            yield f"{prefix}{layer.name}", layer


def init_xavier(net: keras.Sequential) -> None:
    """The recipe's initialisation: Xavier-uniform (Glorot) conv and dense weights, zero biases.

    Keras draws these already when a layer is built (see ``_layer``); this draws them afresh, e.g. to reset.
    """
    for _, layer in _named_layers(net):
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            layer.kernel.assign(keras.initializers.GlorotUniform()(layer.kernel.shape))
            layer.bias.assign(keras.ops.zeros(layer.bias.shape))


def _build(config):
    return Network(config)  # built Xavier-initialised (see _layer): init_xavier would draw everything twice


from_config, vgg, alexnet = network_functions(_build)


def abstract_network(config: NetConfig) -> Net:
    """The network of ``config`` with its layers and parameter shapes but no parameter memory, for shapes and
    counts only (``vgg summary``): built in a Keras stateless scope that leaves its variables uninitialised."""
    with keras.StatelessScope(initialize_variables=False):
        return Network(as_config(config))


def layer_shapes(net: Net, input_size: int, in_channels: int = 1, batch: int = 1) -> list[tuple[str, tuple[int, ...]]]:
    """(top-level layer, NCHW output shape) for each block and head layer, traced without arithmetic."""
    size = check_trace_request(net.config, input_size, in_channels, batch)
    x = keras.KerasTensor((batch, size, size, in_channels))
    out = []
    for layer in net.layers:
        x = layer.compute_output_spec(x)
        shape = tuple(int(d) for d in x.shape)
        out.append((layer.name, (shape[0], shape[3], shape[1], shape[2]) if len(shape) == 4 else shape))
    return out


def count_params(net: Net) -> int:
    """Trainable parameters (batch-norm moving statistics are non-trainable weights, not counted)."""
    return sum(int(np.prod(w.shape)) for w in net.trainable_weights)


def layer_params(net: Net) -> dict[str, int]:
    """Trainable parameters of each top-level layer (a block or a head layer), by its canonical name."""
    return {layer.name: count_params(layer) for layer in net.layers}


def summary(net: Net, input_size: int, in_channels: int = 1) -> str:
    """A readable table: each layer's output shape, parameters, MACs and receptive field."""
    params = layer_params(net)
    buffers = sum(
        2 * int(layer.moving_mean.shape[0])
        for _, layer in _named_layers(net)
        if isinstance(layer, keras.layers.BatchNormalization)
    )
    return summary_table(spec(net.config), layer_shapes(net, input_size, in_channels), params, buffers, "tf.keras")
