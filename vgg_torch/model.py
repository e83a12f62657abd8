"""VGG and AlexNet in PyTorch: built from the plan in ``common.arch``, held to ``common.spec``."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, TypeAlias

import torch
from torch import nn

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

# The types of the public API, under the same names in every backend: the network and the device. The network is
# an nn.Module that carries its .config, which nn.Module's own typing (every attribute a Tensor or a Module) cannot say.
Net: TypeAlias = Any
Device: TypeAlias = torch.device


def _layer(p: LayerPlan) -> nn.Module:
    """The PyTorch layer for one planned layer."""
    if p.kind == "conv":
        return nn.Conv2d(p.in_width, p.out_width, p.kernel, stride=p.stride, padding=p.padding)
    if p.kind == "bn":
        return nn.BatchNorm2d(p.in_width, eps=BN_EPSILON, momentum=BN_MOMENTUM)
    if p.kind == "relu":
        return nn.ReLU()
    if p.kind == "lrn":
        return nn.LocalResponseNorm(LRN.size, alpha=LRN.alpha, beta=LRN.beta, k=LRN.k)
    if p.kind == "pool":
        return nn.MaxPool2d(kernel_size=p.kernel, stride=p.stride)
    if p.kind == "flatten":
        return nn.Flatten()
    if p.kind == "linear":
        return nn.Linear(p.in_width, p.out_width)
    if p.kind == "dropout":
        return nn.Dropout(p.rate)
    raise AssertionError(f"no PyTorch layer for {p.kind!r}")


def _block(plan: list[LayerPlan]) -> nn.Sequential:
    return nn.Sequential(OrderedDict((p.name, _layer(p)) for p in plan))


def vgg_block(num_convs: int, in_channels: int, out_channels: int, batch_norm: bool = False) -> Net:
    """The book's VGG block: ``num_convs`` 3x3 convolutions (padding 1) with ReLU, then a 2x2 max-pool."""
    return _block(block_plan(check_block(num_convs, in_channels, out_channels, batch_norm), in_channels, batch_norm))


class Network(nn.Sequential):
    """VGG or AlexNet: an ``nn.Sequential`` of named blocks and layers that knows its configuration.

    Calling it checks the input against the configuration first (rank, channels, size, dtype), so a
    mistake is one :class:`common.errors.InputError` that says what to change, not a shape error deep inside.
    """

    def __init__(self, config):
        super().__init__(
            OrderedDict((name, _block(p) if isinstance(p, list) else _layer(p)) for name, p in net_plan(config))
        )
        self.config = config

    def forward(self, x):
        if not torch.is_tensor(x):
            raise InputError(f"the input is a {type(x).__name__}; give a torch tensor (torch.from_numpy)")
        check_batch(self.config, x.shape, str(x.dtype).removeprefix("torch."), where="the input", framework="torch")
        return super().forward(x)


def init_xavier(net: nn.Module) -> None:
    """The recipe's initialisation: Xavier-uniform conv and dense weights, zero biases."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:  # the plan's layers all have one
                nn.init.zeros_(m.bias)


def _build(config):
    net = Network(config)
    init_xavier(net)
    return net


from_config, vgg, alexnet = network_functions(_build)


def abstract_network(config: NetConfig) -> Net:
    """The network of ``config`` with its layers and parameter shapes but no parameter memory, for shapes and
    counts only (``vgg summary``): built on PyTorch's meta device."""
    with torch.device("meta"):
        return Network(as_config(config))


def layer_shapes(net: Net, input_size: int, in_channels: int = 1, batch: int = 1) -> list[tuple[str, tuple[int, ...]]]:
    """(top-level layer, NCHW output shape) for each block and head layer, traced without arithmetic."""
    size = check_trace_request(net.config, input_size, in_channels, batch)
    x = torch.empty(batch, in_channels, size, size, device="meta")
    out = []
    with torch.no_grad():
        for name, layer in net.named_children():
            state = {k: torch.empty_like(v, device="meta") for k, v in layer.state_dict().items()}
            x = torch.func.functional_call(layer, state, (x,))
            out.append((name, tuple(x.shape)))
    return out


def count_params(net: Net) -> int:
    """Trainable parameters (batch-norm running statistics are buffers, not counted)."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def layer_params(net: Net) -> dict[str, int]:
    """Trainable parameters of each top-level layer (a block or a head layer), by its canonical name."""
    return {name: count_params(layer) for name, layer in net.named_children()}


def summary(net: Net, input_size: int, in_channels: int = 1) -> str:
    """A readable table: each layer's output shape, parameters, MACs and receptive field."""
    params = layer_params(net)
    buffers = sum(b.numel() for n, b in net.named_buffers() if n.endswith(("running_mean", "running_var")))
    return summary_table(spec(net.config), layer_shapes(net, input_size, in_channels), params, buffers, "PyTorch")
