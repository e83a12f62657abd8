"""Blocks written by hand in MXNet Gluon: the book's "Layers and Modules" and "Parameter Management", beside VGG."""

from __future__ import annotations

from typing import Any

import mxnet as mx
from mxnet.gluon import nn

from common.arch import VGGConfig, net_plan
from common.blocks import MLP_WIDTH, SECOND_USE, check_config, fixed_weight, tied_plan

from .model import Net, _layer, init_xavier


class MySequential(nn.Block):
    """The book's hand-made ``Sequential`` ("Layers and Modules"): children registered in order, run in order.

    Gluon names a parameter by the prefixes of the blocks it was created in, so ``name`` (this container's) is
    its prefix, and named children are created inside ``with net.name_scope():`` and then :meth:`add` ed.
    """

    def __init__(self, *layers: Any, name: str | None = None) -> None:
        super().__init__(prefix=None if name is None else f"{name}_")
        self.add(*layers)

    def add(self, *blocks):
        for block in blocks:
            self.register_child(block)  # registered: its parameters are collected with the container's

    def forward(self, X):
        for block in self._children.values():
            X = block(X)
        return X


def hand_vgg(config: VGGConfig) -> Net:
    """The network ``vgg()`` builds for ``config``, written with :class:`MySequential` ("Networks Using Blocks")."""
    config = check_config(config)
    net = MySequential(name="vgg")
    with net.name_scope():
        for name, p in net_plan(config):
            if isinstance(p, list):
                block = MySequential(name=name)
                with block.name_scope():
                    block.add(*(_layer(q) for q in p))
                net.add(block)
            else:
                net.add(_layer(p))
    net.config = config
    init_xavier(net)
    return net


class FixedHiddenMLP(nn.Block):
    """The book's block with a constant weight, one layer used twice and Python control flow ("Layers and Modules")."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        with self.name_scope():
            # A constant: a Constant parameter is saved with the block but has grad_req 'null', so nothing trains it.
            self.rand_weight = self.params.get_constant("rand_weight", fixed_weight(seed))
            self.linear = nn.Dense(MLP_WIDTH, in_units=MLP_WIDTH, prefix="linear_")
        self.initialize()

    def forward(self, X):
        X = self.linear(X)
        X = mx.nd.relu(mx.nd.dot(X, self.rand_weight.data()) + 1)
        X = self.linear(X)  # the same block again: both uses share its parameters
        while X.abs().sum().asscalar() > 1:
            X = X / 2  # not X /= 2: autograd refuses in-place writes to an array it has recorded
        return X.sum()


def tied_mlp(in_features: int = 20, hidden: int = 8, out_features: int = 1, tied: bool = True) -> Net:
    """The book's MLP whose layer ``shared`` is used twice ("Parameter Management"); ``tied=False``: two copies."""
    net = nn.Sequential()
    layers: dict[str, nn.Dense] = {}
    with net.name_scope():
        for p in tied_plan(in_features, hidden, out_features, tied):
            layers[p.name] = (
                nn.Dense(
                    p.out_width,
                    in_units=p.in_width,
                    params=layers["shared"].params,  # the book's
                    prefix=f"{p.name}_",
                )  # sharing: a second Dense holding shared's parameters
                if tied and p.name == SECOND_USE
                else _layer(p)
            )
    net.add(*layers.values())
    net.initialize()
    return net
