"""Blocks written by hand in Flax: the book's "Layers and Modules" and "Parameter Management", beside VGG."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from common.arch import VGGConfig, net_plan
from common.blocks import MLP_WIDTH, SECOND_USE, check_config, fixed_weight, tied_plan
from common.weights import xavier_init

from .model import _KEYS, Model, Net, _layer, abstract_variables, initialise, run
from .weights import import_weights


class Sequential(nn.Module):
    """The book's hand-made ``Sequential`` as a Flax module: its layers run in order, each under its name.

    The same layer object given twice is one layer used twice: its parameters are shared.
    """

    layers: tuple
    names: tuple

    @nn.compact
    def __call__(self, x, training=False, trace=False):
        outputs, made = [], {}
        for name, layer in zip(self.names, self.layers, strict=True):
            if isinstance(layer, nn.Module):  # bound here, under its name (Flax would call it layers_<i>)
                if id(layer) not in made:
                    made[id(layer)] = layer.clone(parent=self, name=name)
                layer = made[id(layer)]
            x = run(layer, x, training)
            outputs.append(x)
        return outputs if trace else x


class MySequential(Model):
    """The book's hand-made ``Sequential`` ("Layers and Modules"): layers kept in a list, run in order.

    A layer is a network of this package (a :class:`Model`, its variables kept), a Flax module or a function;
    each is named by its ``name`` (a Flax module's own), else by its position. Layers without variables are
    initialised on the first call, sized by its input.
    """

    def __init__(self, *layers: Any, name: str | None = None) -> None:
        names, modules = [], []
        variables: dict[str, dict[str, Any]] = {}
        for i, layer in enumerate(layers):
            named = getattr(layer, "name", None)
            key = named if isinstance(named, str) else str(i)
            if isinstance(layer, Model):
                for collection, values in layer.variables.items():
                    variables.setdefault(collection, {})[key] = values
                layer = layer.module
            names.append(key)
            modules.append(layer)
        super().__init__(Sequential(tuple(modules), tuple(names)), variables, name=name)


def children(net) -> list:
    """(name, layer) of each layer of a :class:`MySequential`: a network with its share of the variables, or a
    function."""
    out = []
    for name, layer in zip(net.module.names, net.module.layers, strict=True):
        if isinstance(layer, nn.Module):
            variables = {c: v[name] for c, v in net.variables.items() if name in v}
            child = MySequential.__new__(MySequential) if isinstance(layer, Sequential) else Model.__new__(Model)
            Model.__init__(child, layer, variables, name=name)
            layer = child
        out.append((name, layer))
    return out


def _named(p):
    return _layer(p, training=None)


def hand_vgg(config: VGGConfig) -> Net:
    """The network ``vgg()`` builds for ``config``, written with :class:`MySequential` ("Networks Using Blocks")."""
    config = check_config(config)
    net = MySequential(
        *(
            MySequential(*(_named(q) for q in p), name=name) if isinstance(p, list) else _named(p)
            for name, p in net_plan(config)
        ),
        name="vgg",
    )
    net.variables, net.config = dict(abstract_variables(net.module, config)), config
    return import_weights(net, xavier_init(config, next(_KEYS)))  # as vgg() draws its weights


class _FixedHiddenMLP(nn.Module):
    seed: int = 0

    @nn.compact
    def __call__(self, X, training=False):
        # A constant: a variable of its own collection, saved with the network but not among its parameters.
        rand_weight = self.variable("constants", "rand_weight", lambda: jnp.asarray(fixed_weight(self.seed))).value
        linear = nn.Dense(MLP_WIDTH, name="linear")
        X = linear(X)
        X = nn.relu(X @ rand_weight + 1)
        X = linear(X)  # the same layer again: both uses share its parameters
        # the book's `while X.abs().sum() > 1: X /= 2`, as the one scale it comes to (a traced value has no
        # Python truth value; halving is exact, so the scale is the same)
        scale = jax.lax.while_loop(
            lambda s: jnp.abs(jax.lax.stop_gradient(X) * s).sum() > 1, lambda s: s / 2, jnp.ones((), X.dtype)
        )
        return (X * scale).sum()


class FixedHiddenMLP(Model):
    """The book's block with a constant weight, one layer used twice and Python control flow ("Layers and Modules")."""

    def __init__(self, seed: int = 0) -> None:
        fixed_weight(seed)  # the seed is checked before anything is built
        module = _FixedHiddenMLP(seed)
        super().__init__(module, initialise(module, 1, MLP_WIDTH))

    @property
    def rand_weight(self):
        return self.variables["constants"]["rand_weight"]


def tied_mlp(in_features: int = 20, hidden: int = 8, out_features: int = 1, tied: bool = True) -> Net:
    """The book's MLP whose layer ``shared`` is used twice ("Parameter Management"); ``tied=False``: two copies."""
    layers: dict[str, Any] = {}
    plan = tied_plan(in_features, hidden, out_features, tied)
    for p in plan:
        layers[p.name] = layers["shared"] if tied and p.name == SECOND_USE else _named(p)  # the same layer twice
    net = MySequential(*layers.values(), name="tied_mlp")
    net.variables = dict(initialise(net.module, 1, in_features))
    return net
