"""Blocks written by hand in PyTorch: the book's "Layers and Modules" and "Parameter Management", beside VGG."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from common.arch import VGGConfig, net_plan
from common.blocks import MLP_WIDTH, SECOND_USE, check_config, fixed_weight, tied_plan

from .model import Net, _layer, init_xavier


class MySequential(nn.Module):
    """The book's hand-made ``nn.Sequential`` ("Layers and Modules"): children registered in order, run in order.

    A child is a module or a ``(name, module)`` pair; PyTorch modules carry no name of their own, so an unnamed
    child is registered under its ``name`` (a named ``MySequential``) or, as in the book, its position.
    """

    config: VGGConfig  # the outermost one's, set by hand_vgg

    def __init__(self, *layers: Any, name: str | None = None) -> None:
        super().__init__()
        self.name = name
        for idx, layer in enumerate(layers):
            key, module = layer if isinstance(layer, tuple) else (getattr(layer, "name", None) or str(idx), layer)
            self.add_module(key, module)  # registered: its parameters are the container's, under "key."

    def forward(self, X):
        for module in self.children():
            X = module(X)
        return X


def hand_vgg(config: VGGConfig) -> Net:
    """The network ``vgg()`` builds for ``config``, written with :class:`MySequential` ("Networks Using Blocks")."""
    config = check_config(config)
    net = MySequential(
        *(
            MySequential(*((q.name, _layer(q)) for q in p), name=name) if isinstance(p, list) else (name, _layer(p))
            for name, p in net_plan(config)
        ),
        name="vgg",
    )
    net.config = config
    init_xavier(net)
    return net


class FixedHiddenMLP(nn.Module):
    """The book's block with a constant weight, one layer used twice and Python control flow ("Layers and Modules")."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        # A constant: a buffer is saved and moved with the module but is no parameter, so nothing trains it.
        self.register_buffer("rand_weight", torch.from_numpy(fixed_weight(seed)))
        self.linear = nn.Linear(MLP_WIDTH, MLP_WIDTH)

    def forward(self, X):
        X = self.linear(X)
        X = F.relu(X @ self.rand_weight + 1)
        X = self.linear(X)  # the same layer again: both uses share its parameters
        while X.abs().sum() > 1:
            X /= 2
        return X.sum()


def tied_mlp(in_features: int = 20, hidden: int = 8, out_features: int = 1, tied: bool = True) -> Net:
    """The book's MLP whose layer ``shared`` is used twice ("Parameter Management"); ``tied=False``: two copies."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for p in tied_plan(in_features, hidden, out_features, tied):
        layers[p.name] = layers["shared"] if tied and p.name == SECOND_USE else _layer(p)  # the same module twice
    return nn.Sequential(layers)
