"""VGG and AlexNet in MXNet Gluon: built from the plan in ``common.arch``, held to ``common.spec``.

Every layer gets its canonical name as its Gluon prefix (the network's own prefix is empty), so
parameter ``block1_conv1_weight`` is canonical ``block1.conv1.weight``; see ``weights._params``.
"""

from __future__ import annotations

import math
from typing import TypeAlias

import mxnet as mx
import numpy as np
from mxnet.gluon import nn

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
from common.errors import InputError
from common.report import summary_table
from common.spec import network_functions, spec

# The types of the public API, under the same names in every backend: the network and the device.
Net: TypeAlias = nn.Block
Device: TypeAlias = mx.Context


class LocalResponseNorm(nn.HybridBlock):
    """Local response normalisation across channels; MXNet's ``LRN`` divides ``alpha`` by ``size`` like PyTorch."""

    def __init__(self, size, alpha=1e-4, beta=0.75, k=1.0, **kwargs):
        super().__init__(**kwargs)
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def hybrid_forward(self, F, x):
        return F.LRN(x, alpha=self.alpha, beta=self.beta, knorm=self.k, nsize=self.size)


def _layer(p: LayerPlan) -> nn.HybridBlock:
    """The Gluon layer for one planned layer, prefixed with its canonical name."""
    prefix = f"{p.name}_"
    if p.kind == "conv":
        return nn.Conv2D(
            p.out_width, p.kernel, strides=p.stride, padding=p.padding, in_channels=p.in_width, prefix=prefix
        )
    if p.kind == "bn":
        return nn.BatchNorm(momentum=1 - BN_MOMENTUM, epsilon=BN_EPSILON, in_channels=p.in_width, prefix=prefix)
    if p.kind == "relu":
        return nn.Activation("relu", prefix=prefix)
    if p.kind == "lrn":
        return LocalResponseNorm(LRN.size, alpha=LRN.alpha, beta=LRN.beta, k=LRN.k, prefix=prefix)
    if p.kind == "pool":
        return nn.MaxPool2D(pool_size=p.kernel, strides=p.stride, prefix=prefix)
    if p.kind == "flatten":
        return nn.Flatten(prefix=prefix)
    if p.kind == "linear":
        return nn.Dense(p.out_width, in_units=p.in_width, prefix=prefix)
    if p.kind == "dropout":
        return nn.Dropout(p.rate, prefix=prefix)
    raise AssertionError(f"no Gluon layer for {p.kind!r}")


def _block(plan: list[LayerPlan], prefix: str | None = None) -> nn.HybridSequential:
    block = nn.HybridSequential(prefix=prefix)
    with block.name_scope():
        block.add(*(_layer(p) for p in plan))
    return block


def _named_children(net) -> list[tuple[str, nn.HybridBlock]]:
    """(name, layer) for each top-level layer, the name read back from its prefix (Gluon keys children 0, 1, ...)."""
    return [(child.prefix[len(net.prefix) :].rstrip("_"), child) for child in net._children.values()]


def vgg_block(num_convs: int, in_channels: int, out_channels: int, batch_norm: bool = False) -> Net:
    """The book's VGG block: ``num_convs`` 3x3 convolutions (padding 1) with ReLU, then a 2x2 max-pool."""
    return _block(block_plan(check_block(num_convs, in_channels, out_channels, batch_norm), in_channels, batch_norm))


class Network(nn.HybridSequential):
    """VGG or AlexNet: a ``HybridSequential`` of named blocks and layers that knows its configuration.

    Calling it checks the input against the configuration first (rank, channels, size, dtype), so a
    mistake is one :class:`common.errors.InputError` that says what to change, not a shape error deep inside.
    """

    def __init__(self, config):
        super().__init__(prefix="")  # parameter names start at the layer: block1_conv1_weight, fc3_bias
        with self.name_scope():
            self.add(*(_block(p, f"{name}_") if isinstance(p, list) else _layer(p) for name, p in net_plan(config)))
        self.config = config

    def forward(self, x, *args):
        if isinstance(x, mx.nd.NDArray):  # a Symbol (shape inference, export) has no shape to check
            check_batch(self.config, x.shape, np.dtype(x.dtype).name, where="the input", framework="mxnet")
        elif not isinstance(x, mx.sym.Symbol):
            raise InputError(f"the input is a {type(x).__name__}; give an MXNet NDArray (mx.nd.array)")
        return super().forward(x, *args)


def init_xavier(net: nn.Block) -> None:
    """The recipe's initialisation: Xavier-uniform conv and dense weights, zero biases, batch norm at identity."""
    net.initialize(mx.init.Xavier(rnd_type="uniform", factor_type="avg", magnitude=3), force_reinit=True)


def _build(config):
    net = Network(config)
    init_xavier(net)
    return net


from_config, vgg, alexnet = network_functions(_build)


def abstract_network(config: NetConfig) -> Net:
    """The network of ``config`` with its layers and parameter shapes but no parameter memory, for shapes and
    counts only (``vgg summary``): Gluon allocates parameters when they are initialised, and these are not."""
    return Network(as_config(config))


def layer_shapes(net: Net, input_size: int, in_channels: int = 1, batch: int = 1) -> list[tuple[str, tuple[int, ...]]]:
    """(top-level layer, NCHW output shape) for each block and head layer, traced without arithmetic."""
    size = check_trace_request(net.config, input_size, in_channels, batch)
    shape = (batch, in_channels, size, size)
    out = []
    for name, layer in _named_children(net):
        _, (shape,), _ = layer(mx.sym.var("data")).infer_shape(data=shape)
        out.append((name, tuple(shape)))
    return out


def count_params(net: Net) -> int:
    """Trainable parameters (batch-norm running statistics have ``grad_req='null'``, not counted)."""
    return sum(math.prod(p.shape) for p in net.collect_params().values() if p.grad_req != "null")


def layer_params(net: Net) -> dict[str, int]:
    """Trainable parameters of each top-level layer (a block or a head layer), by its canonical name."""
    return {name: count_params(layer) for name, layer in _named_children(net)}


def summary(net: Net, input_size: int, in_channels: int = 1) -> str:
    """A readable table: each layer's output shape, parameters, MACs and receptive field."""
    params = layer_params(net)
    buffers = sum(
        math.prod(p.shape) for n, p in net.collect_params().items() if n.endswith(("running_mean", "running_var"))
    )
    return summary_table(spec(net.config), layer_shapes(net, input_size, in_channels), params, buffers, "MXNet Gluon")
