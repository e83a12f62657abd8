"""Blocks written by hand in tf.keras: the book's "Layers and Modules" and "Parameter Management", beside VGG."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from common.arch import VGGConfig, net_plan
from common.blocks import MLP_WIDTH, SECOND_USE, check_config, fixed_weight, tied_plan

from .model import Net, _layer


class MySequential(keras.Model):
    """The book's hand-made ``Sequential`` ("Layers and Modules"): layers kept in a tracked list, run in order.

    Keras layers carry their own names (``_layer`` gives each its canonical one); ``name`` is this container's.
    """

    def __init__(self, *layers: Any, name: str | None = None) -> None:
        super().__init__(name=name)
        self.modules = list(layers)  # a list attribute is tracked: its layers' weights are the model's

    def call(self, X):
        for module in self.modules:
            X = module(X)
        return X


def hand_vgg(config: VGGConfig) -> Net:
    """The network ``vgg()`` builds for ``config``, written with :class:`MySequential` ("Networks Using Blocks")."""
    config = check_config(config)
    net = MySequential(
        *(
            MySequential(*(_layer(q) for q in p), name=name) if isinstance(p, list) else _layer(p)
            for name, p in net_plan(config)
        ),
        name="vgg",
    )
    net(keras.Input((config.input_size, config.input_size, config.in_channels)))  # builds every layer, computes nothing
    net.config = config
    return net


class FixedHiddenMLP(keras.Model):
    """The book's block with a constant weight, one layer used twice and Python control flow ("Layers and Modules")."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        # A constant: a non-trainable weight is saved with the model but is not among its trainable_weights.
        self.rand_weight = self.add_weight(
            shape=(MLP_WIDTH, MLP_WIDTH),
            name="rand_weight",
            trainable=False,
            initializer=keras.initializers.Constant(fixed_weight(seed)),
        )
        self.linear = keras.layers.Dense(MLP_WIDTH, name="linear")
        self.linear.build((None, MLP_WIDTH))

    def call(self, X):
        X = self.linear(X)
        X = tf.nn.relu(tf.matmul(X, self.rand_weight) + 1)
        X = self.linear(X)  # the same layer again: both uses share its weights
        while tf.reduce_sum(tf.math.abs(X)) > 1:
            X /= 2
        return tf.reduce_sum(X)


def tied_mlp(in_features: int = 20, hidden: int = 8, out_features: int = 1, tied: bool = True) -> Net:
    """The book's MLP whose layer ``shared`` is used twice ("Parameter Management"); ``tied=False``: two copies."""
    layers: dict[str, keras.layers.Layer] = {}
    for p in tied_plan(in_features, hidden, out_features, tied):
        layers[p.name] = layers["shared"] if tied and p.name == SECOND_USE else _layer(p)  # the same layer twice
    return keras.Sequential([keras.Input((in_features,)), *layers.values()], name="tied_mlp")
